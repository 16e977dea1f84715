//! A host that admits peers it was not configured with (as the Nucleus does):
//! node `h` receives everything through `handle_datagram_with_admission`,
//! and every `Arrival::UnknownPeer` is refused, accepted with the right key,
//! accepted with a wrong key or a too-small buffer, or held while other
//! operations run (time passes, the key becomes a peer, `h` changes its
//! private key) and decided later. Must never panic, and:
//!
//! - an unknown initiation leaves the node unchanged until it is accepted,
//!   and refusing it (dropping it) leaves it unchanged too;
//! - `accept_initiation` fails with `KeyMismatch` exactly when the
//!   configuration names another key, with `BufferTooSmall { needed: 92 }`
//!   for a smaller buffer, with `AddPeer` when the key became a peer
//!   meanwhile (which stays as it was); on every error no peer is added;
//! - an accepted initiation adds exactly one peer with the claimed key and
//!   answers with a 92-byte response; it never succeeds after `h` changed
//!   its private key since the initiation arrived;
//! - the buffer contract of every other result (see `check_recv`).
//!
//! Three initiator nodes (each with `h` as its only peer) produce real
//! initiations and complete handshakes with what `h` answers, so admitted
//! peers go on to send data. Input layout: byte 0 sets `h`'s load threshold
//! and which initiators `h` knows from the start; then operations (first
//! byte % 8, see the match below).
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use omni_core::node::{AcceptError, Accepted, Arrival, Incoming, Received, RecvError, UnknownInitiation};
use omni_core::{Instant, NodeConfig, PeerConfig, PublicKey, StaticSecret};
use omni_core_fuzz::*;

const MAX_OPS: usize = 64;
const MAX_POOL: usize = 32;
const MAX_HELD: usize = 4;
const INITIATORS: usize = 3;
const RESPONSE_LEN: usize = 92;

/// Time steps around the handshake timers (ms).
const STEPS_MS: [u64; 8] = [0, 20, 50, 1_000, 5_000, 15_000, 120_000, 180_000];

struct Initiator {
    node: N,
    key: PublicKey,
    addr: SocketAddr,
}

/// An initiation held undecided, with the host key it arrived under.
struct Held {
    initiation: UnknownInitiation,
    host_key: Option<PublicKey>,
}

struct World {
    h: N,
    h_secret: StaticSecret,
    initiators: Vec<Initiator>,
    held: Vec<Held>,
    pool: Vec<Vec<u8>>,
    now: Instant,
}

fn initiator_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10 + i as u8], 51_820 + i as u16))
}

impl World {
    fn remember(&mut self, d: &[u8]) {
        if self.pool.len() < MAX_POOL {
            self.pool.push(d.to_vec());
        } else {
            let i = (d.len() + usize::from(d.get(4).copied().unwrap_or(0))) % MAX_POOL;
            self.pool[i] = d.to_vec();
        }
    }

    /// Gives `d` to the initiator living at `to`, if one does.
    fn to_initiator(&mut self, to: SocketAddr, d: &[u8]) {
        let now = self.now;
        if let Some(i) = self.initiators.iter_mut().find(|i| i.addr == to) {
            let mut out = vec![0u8; 2048];
            let r = i.node.handle_datagram(now, addr_b(), d, &mut out);
            check_recv(&r, out.len(), d.len());
        }
    }

    /// Drains initiator `i`'s transmits into the pool and to `h`.
    fn drain_initiator(&mut self, input: &mut Input, i: usize) {
        let now = self.now;
        let mut sent = Vec::new();
        let mut out = vec![0u8; 2048];
        while let Ok(Some(t)) = self.initiators[i].node.poll_transmit(now, &mut out) {
            sent.push(out[..t.len].to_vec());
            if sent.len() >= 16 {
                break;
            }
        }
        let from = self.initiators[i].addr;
        for d in sent {
            self.remember(&d);
            self.admit(input, from, &d, 2048);
        }
    }

    /// Drains `h`'s transmits to the initiators they are addressed to.
    fn drain_host(&mut self) {
        let now = self.now;
        let mut sent = Vec::new();
        let mut out = vec![0u8; 2048];
        while let Ok(Some(t)) = self.h.poll_transmit(now, &mut out) {
            sent.push((t.to, out[..t.len].to_vec()));
            if sent.len() >= 16 {
                break;
            }
        }
        for (to, d) in sent {
            self.remember(&d);
            self.to_initiator(to, &d);
        }
    }

    /// Delivers `d` from `from` to `h` through the admission API.
    fn admit(&mut self, input: &mut Input, from: SocketAddr, d: &[u8], out_len: usize) {
        let now = self.now;
        let before = self.h.peer_count();
        let mut out = vec![0u8; out_len];
        let mut r = self.h.handle_datagram_with_admission(now, from, d, &mut out);
        if let Err(RecvError::BufferTooSmall { needed }) = r {
            assert!(needed > out_len, "needed {needed} with {out_len}");
            out = vec![0u8; needed];
            r = self.h.handle_datagram_with_admission(now, from, d, &mut out);
            assert!(!matches!(r, Err(RecvError::BufferTooSmall { .. })), "{r:?} after retry with {needed}");
        }
        match r {
            Ok(Arrival::UnknownPeer(u)) => {
                assert_eq!(self.h.peer_count(), before, "an unknown initiation added a peer");
                assert!(self.h.peer_by_key(&u.public_key()).is_none(), "a known key reported as unknown");
                assert_eq!(u.source(), from);
                assert_eq!(d.first(), Some(&T_INIT), "only initiations are unknown peers");
                self.decide(input, u);
            }
            Ok(Arrival::Incoming(Incoming::Received(received))) => {
                check_recv(&Ok(received), out.len(), d.len());
                if let Received::Reply { len } = received {
                    let reply = out[..len].to_vec();
                    self.remember(&reply);
                    self.to_initiator(from, &reply);
                }
            }
            Ok(Arrival::Incoming(Incoming::Control { .. })) => panic!("no control peers here"),
            Err(e) => check_recv(&Err(e), out.len(), d.len()),
        }
    }

    /// Refuses, accepts (rightly or wrongly) or holds an unknown initiation.
    fn decide(&mut self, input: &mut Input, u: UnknownInitiation) {
        let sel = input.u8();
        if sel % 4 == 3 && self.held.len() < MAX_HELD {
            let host_key = self.h.public_key();
            self.held.push(Held { initiation: u, host_key });
            return;
        }
        self.settle(input, sel, u, self.h.public_key());
    }

    fn settle(&mut self, input: &mut Input, sel: u8, u: UnknownInitiation, arrived_under: Option<PublicKey>) {
        let now = self.now;
        let claimed = u.public_key();
        let source = u.source();
        let had = self.h.peer_by_key(&claimed);
        let before = self.h.peer_count();
        if sel % 4 == 0 || sel % 4 == 3 {
            // Refused: dropping wipes the opened state; nothing changes.
            drop(u);
            assert_eq!(self.h.peer_count(), before);
            assert_eq!(self.h.peer_by_key(&claimed), had);
            return;
        }
        let key = if sel % 4 == 1 {
            claimed
        } else {
            // Another initiator's key, or `h`'s own.
            let k = usize::from(input.u8()) % (INITIATORS + 1);
            self.initiators.get(k).map_or_else(|| public_of(&self.h_secret), |i| i.key)
        };
        let out_len = if sel & 0x80 != 0 { out_size(input.u8()) } else { 2048 };
        let mut out = vec![0u8; out_len];
        let config = PeerConfig { endpoint: Some(source), ..PeerConfig::new(key) };
        let r = self.h.accept_initiation(now, u, config, &mut out);
        match r {
            Ok(Accepted { peer, len }) => {
                assert_eq!(key, claimed, "accepted under another key");
                assert!(had.is_none() && out_len >= RESPONSE_LEN && len == RESPONSE_LEN, "{had:?} {out_len} {len}");
                assert_eq!(self.h.public_key(), arrived_under, "answered under a changed private key");
                assert_eq!(self.h.peer_count(), before + 1);
                assert_eq!(self.h.peer_by_key(&claimed), Some(peer));
                let _ = self.h.add_allowed_ip(peer, "10.9.0.0/16".parse().unwrap());
                let response = out[..len].to_vec();
                self.remember(&response);
                self.to_initiator(source, &response);
            }
            Err(e) => {
                match e {
                    AcceptError::KeyMismatch => assert_ne!(key, claimed),
                    AcceptError::Initiation(RecvError::BufferTooSmall { needed }) => {
                        assert_eq!(key, claimed);
                        assert!(out_len < RESPONSE_LEN && needed == RESPONSE_LEN, "{out_len} {needed}");
                    }
                    AcceptError::AddPeer(_) => assert!(had.is_some(), "AddPeer error for a new key"),
                    _ => assert_eq!(key, claimed),
                }
                assert_eq!(self.h.peer_count(), before, "{e:?} changed the peer count");
                assert_eq!(self.h.peer_by_key(&claimed), had, "{e:?} changed the claimed key's peer");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let setup = input.u8();
    let now = Instant::from_secs(1);
    let h_secret = secret_b();
    let ph = public_of(&h_secret);
    let mut h =
        node(h_secret.clone(), 3, NodeConfig { under_load_threshold: u32::from(setup % 4), ..NodeConfig::default() });
    let mut initiators = Vec::new();
    for i in 0..INITIATORS {
        let secret = StaticSecret::from_bytes([0x10 + i as u8; 32]);
        let key = public_of(&secret);
        let mut node = node(secret, 10 + i as u64, NodeConfig::default());
        let id = node.add_peer(now, PeerConfig { endpoint: Some(addr_b()), ..PeerConfig::new(ph) }).unwrap();
        node.add_allowed_ip(id, "0.0.0.0/0".parse().unwrap()).unwrap();
        // Bits 2..5 of the setup byte: `h` knows initiator i from the start.
        if setup & (4 << i) != 0 {
            h.add_peer(now, PeerConfig { endpoint: Some(initiator_addr(i)), ..PeerConfig::new(key) }).unwrap();
        }
        initiators.push(Initiator { node, key, addr: initiator_addr(i) });
    }
    let mut w = World { h, h_secret, initiators, held: Vec::new(), pool: Vec::new(), now };

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        let i = usize::from(op >> 3) % INITIATORS;
        let restamp_mac = op & 0x80 != 0;
        match op % 8 {
            // Initiator i starts a handshake now; its initiation reaches `h`.
            0 => {
                let now = w.now;
                let init = &mut w.initiators[i];
                let id = init.node.peer_by_key(&ph).unwrap();
                init.node.initiate_now(now, id);
                w.drain_initiator(&mut input, i);
            }
            // A pooled datagram, mutated or replayed, from a chosen source.
            1 | 2 if !w.pool.is_empty() => {
                let mut d = w.pool[usize::from(input.u8()) % w.pool.len()].clone();
                if op % 8 == 1 {
                    for _ in 0..(input.u8() % 3) + 1 {
                        let pos = usize::from(input.u16()) % d.len().max(1);
                        let x = input.u8() | 1;
                        if let Some(b) = d.get_mut(pos) {
                            *b ^= x;
                        }
                    }
                }
                if restamp_mac {
                    restamp(w.now, &ph, &mut d);
                }
                let sel = input.u8();
                let from =
                    if sel & 0x80 != 0 { initiator_addr(usize::from(sel) % INITIATORS) } else { source_addr(sel) };
                let out_len = out_size(input.u8());
                w.admit(&mut input, from, &d, out_len);
            }
            1 | 2 => {}
            // A raw datagram (made an initiation, with a valid MAC1, if asked).
            3 => {
                let len = usize::from(input.u16() % 256);
                let mut d = input.bytes(len).to_vec();
                if restamp_mac {
                    d.resize(148, 0);
                    d[..4].copy_from_slice(&[T_INIT, 0, 0, 0]);
                    restamp(w.now, &ph, &mut d);
                }
                let from = source_addr(input.u8());
                w.admit(&mut input, from, &d, 2048);
            }
            // Time passes; every node's timers fire; everyone drains.
            4 => {
                let sel = input.u8();
                w.now = w.now.saturating_add(core::time::Duration::from_millis(STEPS_MS[usize::from(sel) % 8]));
                let now = w.now;
                w.h.handle_timeout(now);
                for n in &mut w.initiators {
                    n.node.handle_timeout(now);
                }
                for k in 0..INITIATORS {
                    w.drain_initiator(&mut input, k);
                }
                w.drain_host();
                while w.h.poll_event().is_some() {}
                for n in &mut w.initiators {
                    while n.node.poll_event().is_some() {}
                }
            }
            // Decide a held initiation.
            5 if !w.held.is_empty() => {
                let k = usize::from(input.u8()) % w.held.len();
                let Held { initiation, host_key } = w.held.swap_remove(k);
                let sel = input.u8();
                w.settle(&mut input, sel, initiation, host_key);
            }
            5 => {}
            // The host's configuration changes under held initiations.
            6 => {
                let now = w.now;
                let key = w.initiators[i].key;
                match input.u8() % 4 {
                    0 => {
                        let _ =
                            w.h.add_peer(now, PeerConfig { endpoint: Some(initiator_addr(i)), ..PeerConfig::new(key) });
                    }
                    1 => {
                        if let Some(id) = w.h.peer_by_key(&key) {
                            w.h.remove_peer(id);
                        }
                    }
                    2 => {
                        // Toggle between the real identity and a throwaway one.
                        let next = if w.h.public_key() == Some(ph) {
                            StaticSecret::from_bytes([0x77; 32])
                        } else {
                            w.h_secret.clone()
                        };
                        w.h.set_private_key(Some(next));
                    }
                    _ => w.h.clear_peers(),
                }
            }
            // Initiator i sends an IP packet to `h` (queued until a session exists).
            _ => {
                let now = w.now;
                let plen = usize::from(input.u8() % 64);
                let pkt = ipv4([10, 9, 0, 1 + i as u8], [10, 9, 0, 100], input.bytes(plen));
                let mut out = vec![0u8; 2048];
                let sent = w.initiators[i].node.send_ip(now, &pkt, &mut out);
                check_send(&sent, out.len());
                if let Ok(omni_core::node::Sent::Transmit(t)) = sent {
                    let d = out[..t.len].to_vec();
                    let from = w.initiators[i].addr;
                    w.remember(&d);
                    w.admit(&mut input, from, &d, 2048);
                }
                w.drain_initiator(&mut input, i);
            }
        }
    }
});
