//! Where the node keeps its tables. Without `alloc` every table has a fixed
//! capacity chosen at compile time ([`Fixed`]); with `alloc`, [`Heap`] grows
//! on demand and uses a trie and B-trees so large configurations stay fast.

use crate::allowed_ips::{FixedRoutes, RouteTable};
use crate::cookie::RateLimiter;
use crate::crypto::CryptoProvider;
use crate::keys::PublicKey;
use crate::node::{Event, PeerId};
use crate::peer::Peer;
use crate::replay::{AntiReplay, ReplayWindow2048};
use crate::time::Instant;
use core::marker::PhantomData;
use core::net::IpAddr;

/// A slot table: stable indices, reused after removal.
pub trait Slab<T> {
    fn slots(&self) -> &[Option<T>];
    fn slots_mut(&mut self) -> &mut [Option<T>];
    /// Stores `value` in a free slot; gives it back if the table is full.
    fn insert(&mut self, value: T) -> Result<usize, T>;
}

/// A fixed-capacity table had no room left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// A small key → value map.
pub trait Map<K, V> {
    fn get(&self, k: &K) -> Option<&V>;
    /// Inserts or replaces; `Err` if full.
    fn insert(&mut self, k: K, v: V) -> Result<(), Full>;
    fn remove(&mut self, k: &K) -> Option<V>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A FIFO of peers that have something to transmit.
pub trait Fifo<T> {
    fn push_back(&mut self, v: T) -> Result<(), T>;
    fn pop_front(&mut self) -> Option<T>;
    fn front(&self) -> Option<&T>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bundle of table types a [`Node`](crate::Node) uses.
pub trait Storage<C: CryptoProvider> {
    /// The receive replay window of every session (three per peer, so this
    /// is most of a peer's RAM): [`ReplayWindow8192`](crate::replay::ReplayWindow8192)
    /// on hosts, [`ReplayWindow2048`] on devices.
    type Replay: AntiReplay;
    type Peers: Slab<Peer<C, Self::Replay>> + Default;
    type Keys: Map<PublicKey, PeerId> + Default;
    type Indexes: Map<u32, PeerId> + Default;
    type Routes: RouteTable<PeerId> + Default;
    type Pending: Fifo<PeerId> + Default;
    /// Events waiting for `poll_event` (bounded; overflow is counted).
    type Events: Fifo<Event> + Default;
    /// The per-source handshake limiter (its capacity bounds memory under floods).
    type Limiter: Default + SourceLimiter;
    /// At most this many events are kept.
    const MAX_EVENTS: usize;
}

/// Fixed capacities for `no_std` without `alloc`: `PEERS` peers, `ROUTES`
/// allowed-IP entries in total, `INDEXES` live receiver indexes (up to four
/// per peer: previous, current and next session plus a pending handshake),
/// `SOURCES` addresses tracked by the handshake rate limiter, `W` the replay
/// window of each session. A device keeps 16 events and a small limiter: it
/// has few peers and little RAM.
///
/// `W` defaults to [`ReplayWindow2048`] (264 bytes per session, ~0.8 KiB
/// per peer, instead of 3 KiB with the 8192-counter host window). A replay
/// window only has to cover how far a packet can be overtaken by later ones
/// of the same session: 2048 counters is what WireGuard itself shipped with
/// (Linux went to 8192 for multi-queue, multi-core decryption at 10 Gbit/s).
/// A microcontroller link (≤ ~10 Mbit/s, ≤ ~1000 packets/s of 1420 bytes)
/// needs more than 2 s of reordering on the path before an honest packet
/// falls out of it, and the only cost of falling out is one dropped packet.
/// Pick [`ReplayWindow8192`](crate::replay::ReplayWindow8192) (or any
/// [`ReplayWindow<WORDS>`](crate::replay::ReplayWindow)) for a faster device.
#[derive(Debug)]
pub struct Fixed<
    const PEERS: usize,
    const ROUTES: usize,
    const INDEXES: usize = 64,
    const SOURCES: usize = 16,
    W = ReplayWindow2048,
>(PhantomData<W>);

impl<C: CryptoProvider, const P: usize, const R: usize, const I: usize, const L: usize, W: AntiReplay> Storage<C>
    for Fixed<P, R, I, L, W>
{
    type Replay = W;
    type Peers = heapless::Vec<Option<Peer<C, W>>, P>;
    type Keys = heapless::Vec<(PublicKey, PeerId), P>;
    type Indexes = heapless::Vec<(u32, PeerId), I>;
    type Routes = FixedRoutes<PeerId, R>;
    type Pending = heapless::Deque<PeerId, P>;
    type Events = heapless::Deque<Event, 16>;
    type Limiter = RateLimiter<L>;
    const MAX_EVENTS: usize = 16;
}

/// Admits or refuses one handshake from a source address.
pub trait SourceLimiter {
    fn allow(&mut self, now: Instant, ip: IpAddr) -> bool;
}

impl<const N: usize> SourceLimiter for RateLimiter<N> {
    fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        RateLimiter::allow(self, now, ip)
    }
}

impl<T, const N: usize> Slab<T> for heapless::Vec<Option<T>, N> {
    fn slots(&self) -> &[Option<T>] {
        self
    }
    fn slots_mut(&mut self) -> &mut [Option<T>] {
        self
    }
    fn insert(&mut self, value: T) -> Result<usize, T> {
        if let Some(i) = self.iter().position(Option::is_none) {
            if let Some(s) = self.get_mut(i) {
                *s = Some(value);
                return Ok(i);
            }
        }
        if self.is_full() {
            return Err(value);
        }
        let i = self.len();
        // There is room, so the push cannot fail.
        let _ = self.push(Some(value));
        Ok(i)
    }
}

impl<K: PartialEq, V, const N: usize> Map<K, V> for heapless::Vec<(K, V), N> {
    fn get(&self, k: &K) -> Option<&V> {
        self.iter().find(|(key, _)| key == k).map(|(_, v)| v)
    }
    fn insert(&mut self, k: K, v: V) -> Result<(), Full> {
        if let Some(slot) = self.iter_mut().find(|(key, _)| *key == k) {
            slot.1 = v;
            return Ok(());
        }
        self.push((k, v)).map_err(|_| Full)
    }
    fn remove(&mut self, k: &K) -> Option<V> {
        let i = self.iter().position(|(key, _)| key == k)?;
        Some(self.swap_remove(i).1)
    }
    fn len(&self) -> usize {
        self.as_slice().len()
    }
}

impl<T, const N: usize> Fifo<T> for heapless::Deque<T, N> {
    fn len(&self) -> usize {
        heapless::Deque::len(self)
    }
    fn push_back(&mut self, v: T) -> Result<(), T> {
        heapless::Deque::push_back(self, v)
    }
    fn pop_front(&mut self) -> Option<T> {
        heapless::Deque::pop_front(self)
    }
    fn front(&self) -> Option<&T> {
        heapless::Deque::front(self)
    }
}

#[cfg(feature = "alloc")]
pub use heap::Heap;

#[cfg(feature = "alloc")]
mod heap {
    use super::*;
    use crate::allowed_ips::TrieRoutes;
    use crate::replay::ReplayWindow8192;
    use alloc::collections::{BTreeMap, VecDeque};
    use alloc::vec::Vec;

    /// Growable tables (the `alloc` feature): no limit but memory, and the
    /// 8192-counter replay window.
    #[derive(Debug)]
    pub struct Heap;

    impl<C: CryptoProvider> Storage<C> for Heap {
        /// Hosts may reorder heavily (multi-queue NICs, parallel decryption):
        /// the full 8192-counter window, as Linux and wireguard-go keep.
        type Replay = ReplayWindow8192;
        type Peers = Vec<Option<Peer<C, ReplayWindow8192>>>;
        type Keys = BTreeMap<PublicKey, PeerId>;
        type Indexes = BTreeMap<u32, PeerId>;
        type Routes = TrieRoutes<PeerId>;
        type Pending = VecDeque<PeerId>;
        type Events = VecDeque<Event>;
        /// Servers see many sources: track 256 (8 KiB).
        type Limiter = RateLimiter<256>;
        const MAX_EVENTS: usize = 1024;
    }

    impl<T> Slab<T> for Vec<Option<T>> {
        fn slots(&self) -> &[Option<T>] {
            self
        }
        fn slots_mut(&mut self) -> &mut [Option<T>] {
            self
        }
        fn insert(&mut self, value: T) -> Result<usize, T> {
            if let Some(i) = self.iter().position(Option::is_none) {
                if let Some(s) = self.get_mut(i) {
                    *s = Some(value);
                    return Ok(i);
                }
            }
            self.push(Some(value));
            Ok(self.len().saturating_sub(1))
        }
    }

    impl<K: Ord, V> Map<K, V> for BTreeMap<K, V> {
        fn get(&self, k: &K) -> Option<&V> {
            BTreeMap::get(self, k)
        }
        fn insert(&mut self, k: K, v: V) -> Result<(), Full> {
            BTreeMap::insert(self, k, v);
            Ok(())
        }
        fn remove(&mut self, k: &K) -> Option<V> {
            BTreeMap::remove(self, k)
        }
        fn len(&self) -> usize {
            BTreeMap::len(self)
        }
    }

    impl<T> Fifo<T> for VecDeque<T> {
        fn len(&self) -> usize {
            VecDeque::len(self)
        }
        fn push_back(&mut self, v: T) -> Result<(), T> {
            VecDeque::push_back(self, v);
            Ok(())
        }
        fn pop_front(&mut self) -> Option<T> {
            VecDeque::pop_front(self)
        }
        fn front(&self) -> Option<&T> {
            VecDeque::front(self)
        }
    }
}
