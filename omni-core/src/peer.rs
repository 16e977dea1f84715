//! Everything the node knows about one peer: its static key material, the
//! up to three live sessions, the handshake in flight, timers and counters.

use core::net::SocketAddr;

use crate::cookie::CookieState;
use crate::crypto::CryptoProvider;
use crate::noise::handshake::{InitiatorState, PeerStatic};
use crate::noise::tai64n::Tai64N;
use crate::replay::AntiReplay;
use crate::session::Session;
use crate::time::{Instant, WallTime};
use crate::timers::TimerTable;

#[cfg(feature = "alloc")]
use alloc::{collections::VecDeque, vec::Vec};

/// Which of a peer's session slots a receiver index belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Previous,
    Current,
    Next,
}

/// A part of a peer that is often absent or idle (a spare session, the
/// handshake in flight, even the current session of a quiet peer): on the
/// heap when `alloc` is on, so a peer of a large table (a Nucleus keeps one
/// per member, 100k of them) costs a pointer for each empty slot instead of
/// the whole value; inline in `no_std` tables without a heap.
pub(crate) struct Held<T>(#[cfg(feature = "alloc")] alloc::boxed::Box<T>, #[cfg(not(feature = "alloc"))] T);

impl<T> Held<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(feature = "alloc")]
        {
            Held(alloc::boxed::Box::new(value))
        }
        #[cfg(not(feature = "alloc"))]
        {
            Held(value)
        }
    }
}

impl<T> core::ops::Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> core::ops::DerefMut for Held<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: core::fmt::Debug> core::fmt::Debug for Held<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        T::fmt(self, f)
    }
}

/// `W` is the replay window of each of its sessions (chosen by the node's
/// [`Storage::Replay`](crate::storage::Storage::Replay)).
pub struct Peer<C: CryptoProvider, W: AntiReplay> {
    pub(crate) statik: PeerStatic,
    /// Cookie state; its keys are derived from `statik.public` when used.
    pub(crate) cookies: CookieState,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) persistent_keepalive: Option<u16>,
    pub(crate) timers: TimerTable,

    pub(crate) previous: Option<Held<Session<C, W>>>,
    pub(crate) current: Option<Held<Session<C, W>>>,
    /// A session we answered as responder, not yet confirmed by the
    /// initiator's first transport message.
    pub(crate) next: Option<Held<Session<C, W>>>,
    /// Our own initiation in flight. Kept apart from `next` so that when both
    /// sides initiate at once both handshakes complete instead of fighting.
    pub(crate) initiation: Option<Held<InitiatorState<C>>>,

    pub(crate) handshake_attempts: u32,
    pub(crate) last_initiation_sent: Option<Instant>,
    /// Newest TAI64N accepted from this peer (replayed initiations are older or equal).
    pub(crate) last_timestamp: Tai64N,
    pub(crate) last_initiation_received: Option<Instant>,
    pub(crate) last_handshake: Option<Instant>,
    pub(crate) last_handshake_wall: Option<WallTime>,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,

    pub(crate) want_initiation: bool,
    /// The wanted initiation is a timer retry (not subject to the 5 s spacing).
    pub(crate) initiation_is_retry: bool,
    pub(crate) want_keepalive: bool,
    pub(crate) need_another_keepalive: bool,
    pub(crate) rekey_requested: bool,
    pub(crate) in_pending: bool,
    /// Decrypted payloads from this peer are signaling (the Nucleus), not IP
    /// packets: see [`Node::set_control_peer`](crate::Node::set_control_peer).
    pub(crate) control: bool,
    #[cfg(feature = "alloc")]
    pub(crate) staged: VecDeque<Vec<u8>>,
}

impl<C: CryptoProvider, W: AntiReplay> core::fmt::Debug for Peer<C, W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Peer")
            .field("public_key", &self.statik.public)
            .field("endpoint", &self.endpoint)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl<C: CryptoProvider, W: AntiReplay> Peer<C, W> {
    pub(crate) fn new(statik: PeerStatic, endpoint: Option<SocketAddr>, persistent_keepalive: Option<u16>) -> Self {
        Peer {
            statik,
            cookies: CookieState::default(),
            endpoint,
            persistent_keepalive: persistent_keepalive.filter(|&k| k > 0),
            timers: TimerTable::default(),
            previous: None,
            current: None,
            next: None,
            initiation: None,
            handshake_attempts: 0,
            last_initiation_sent: None,
            last_timestamp: Tai64N::default(),
            last_initiation_received: None,
            last_handshake: None,
            last_handshake_wall: None,
            rx_bytes: 0,
            tx_bytes: 0,
            want_initiation: false,
            initiation_is_retry: false,
            want_keepalive: false,
            need_another_keepalive: false,
            rekey_requested: false,
            in_pending: false,
            control: false,
            #[cfg(feature = "alloc")]
            staged: VecDeque::new(),
        }
    }

    pub(crate) fn session_mut(&mut self, slot: Slot) -> Option<&mut Session<C, W>> {
        match slot {
            Slot::Previous => self.previous.as_deref_mut(),
            Slot::Current => self.current.as_deref_mut(),
            Slot::Next => self.next.as_deref_mut(),
        }
    }

    pub(crate) fn slot_of(&self, local_index: u32) -> Option<Slot> {
        if self.current.as_ref().is_some_and(|s| s.local_index == local_index) {
            Some(Slot::Current)
        } else if self.previous.as_ref().is_some_and(|s| s.local_index == local_index) {
            Some(Slot::Previous)
        } else if self.next.as_ref().is_some_and(|s| s.local_index == local_index) {
            Some(Slot::Next)
        } else {
            None
        }
    }

    /// Every receiver index this peer currently owns (for index-table cleanup).
    pub(crate) fn indexes(&self) -> [Option<u32>; 4] {
        [
            self.previous.as_ref().map(|s| s.local_index),
            self.current.as_ref().map(|s| s.local_index),
            self.next.as_ref().map(|s| s.local_index),
            self.initiation.as_ref().map(|s| s.local_index),
        ]
    }

    /// Installs a session we initiated: it is confirmed, so it becomes
    /// current at once. Returns the sessions that fell out of the slots.
    pub(crate) fn install_initiator(&mut self, s: Session<C, W>) -> [Option<Held<Session<C, W>>>; 2] {
        let (new_previous, dropped_a) = match self.next.take() {
            // The unconfirmed responder session stays decryptable as `previous`.
            Some(next) => (Some(next), self.current.take()),
            None => (self.current.take(), None),
        };
        let dropped_b = core::mem::replace(&mut self.previous, new_previous);
        self.current = Some(Held::new(s));
        [dropped_a, dropped_b]
    }

    /// Installs a session we answered: unconfirmed until the initiator uses it.
    pub(crate) fn install_responder(&mut self, s: Session<C, W>) -> [Option<Held<Session<C, W>>>; 2] {
        let dropped_next = self.next.replace(Held::new(s));
        // The old previous would be shifted out by the promotion anyway.
        let dropped_prev = self.previous.take();
        [dropped_next, dropped_prev]
    }

    /// The initiator used `next`: promote it. Returns the session dropped.
    pub(crate) fn confirm_next(&mut self) -> Option<Held<Session<C, W>>> {
        let next = self.next.take()?;
        let old_current = self.current.replace(next);
        core::mem::replace(&mut self.previous, old_current)
    }

    /// A sendable session, preferring the current one.
    pub(crate) fn sendable(&mut self, now: Instant) -> Option<&mut Session<C, W>> {
        self.current.as_deref_mut().filter(|s| s.can_send(now))
    }

    pub(crate) fn has_staged(&self) -> bool {
        #[cfg(feature = "alloc")]
        {
            !self.staged.is_empty()
        }
        #[cfg(not(feature = "alloc"))]
        {
            false
        }
    }

    pub(crate) fn wants_service(&self) -> bool {
        self.want_initiation || self.want_keepalive || self.has_staged()
    }
}
