//! A node (or a pair of nodes) fed arbitrary and mutated datagrams from
//! arbitrary source addresses, interleaved with timers, sends and
//! configuration changes at advancing virtual times. Must never panic, and
//! must keep the buffer contract (a too-small buffer is an error naming a
//! larger size, and retrying with that size gets past it).
//!
//! Input layout: byte 0 selects the setup, the rest is a list of operations.
//!
//! Setups (byte 0 % 4):
//! 0. one node `a` whose only peer is `b` (there is no node `b`); the pool
//!    of captured datagrams starts empty, so only raw datagrams reach `a`
//!    (optionally re-stamped with a valid MAC1 so they reach the Noise code);
//! 1. two nodes that know each other, no handshake yet;
//! 2. two nodes after a real handshake and data in both directions; the pool
//!    holds the initiation, response, transport and keepalive datagrams;
//! 3. like 2 but `b` is permanently under load: the pool also holds a cookie
//!    reply and an initiation carrying MAC2.
//!
//! Operations (first byte % 8), see `Op` below. Datagrams sent or replied
//! by the nodes are added to the pool (bounded), so later operations can
//! replay or mutate them.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use omni_core::node::{Received, RecvError, SendError, Sent};
use omni_core::{Instant, NodeConfig, PeerConfig, PresharedKey, PublicKey};
use omni_core_fuzz::*;

const MAX_OPS: usize = 96;
const MAX_POOL: usize = 64;

/// Time steps around every protocol timer (ms).
const STEPS_MS: [u64; 16] =
    [0, 1, 49, 50, 1_000, 5_000, 5_333, 10_000, 15_000, 25_000, 90_000, 120_000, 125_000, 180_000, 540_000, 3_600_000];

struct World {
    a: N,
    b: Option<N>,
    ida: omni_core::PeerId,
    idb: omni_core::PeerId,
    pa: PublicKey,
    pb: PublicKey,
    now: Instant,
    pool: Vec<Vec<u8>>,
}

impl World {
    /// The node `to_b` selects, its public key, and the address it lives at
    /// (falls back to `a` when there is no `b`).
    fn target(&mut self, to_b: bool) -> (&mut N, PublicKey) {
        match (&mut self.b, to_b) {
            (Some(b), true) => (b, self.pb),
            _ => (&mut self.a, self.pa),
        }
    }

    fn remember(&mut self, d: &[u8]) {
        if self.pool.len() < MAX_POOL {
            self.pool.push(d.to_vec());
        } else {
            // Keep the oldest half (the real handshake) and rotate the rest.
            let i = MAX_POOL / 2 + (d.len() + usize::from(d.first().copied().unwrap_or(0))) % (MAX_POOL / 2);
            self.pool[i] = d.to_vec();
        }
    }

    /// Delivers `d` to the selected node from `from` with an `out_len` buffer,
    /// checking the buffer contract; replies go to the pool.
    /// `forward` > 0 sends a reply back to the other node (that many levels deep).
    fn deliver(&mut self, to_b: bool, from: SocketAddr, d: &[u8], out_len: usize, time_travel: bool, forward: u8) {
        let now = if time_travel { self.now.saturating_sub(core::time::Duration::from_secs(200)) } else { self.now };
        let (n, _) = self.target(to_b);
        let mut out = vec![0u8; out_len];
        let mut r = n.handle_datagram(now, from, d, &mut out);
        check_recv(&r, out_len, d.len());
        if let Err(RecvError::BufferTooSmall { needed }) = r {
            // Nothing was lost: the same datagram with `needed` bytes gets further.
            out = vec![0u8; needed];
            r = n.handle_datagram(now, from, d, &mut out);
            check_recv(&r, needed, d.len());
            assert!(!matches!(r, Err(RecvError::BufferTooSmall { .. })), "{r:?} after retry with {needed}");
        }
        if let Ok(Received::Reply { len }) = r {
            let reply = out[..len].to_vec();
            self.remember(&reply);
            // Send the reply back (response to an initiation, cookie reply),
            // as a host would, from the replier's address.
            if forward > 0 && self.b.is_some() {
                let from = if to_b { addr_b() } else { addr_a() };
                self.deliver(!to_b, from, &reply, 2048, false, forward - 1);
            }
        }
    }

    /// Drains `poll_transmit` of the selected node; transmits go to the pool
    /// and, if `forward`, to the other node.
    fn drain(&mut self, from_b: bool, out_len: usize, forward: bool) {
        let now = self.now;
        let mut sent = Vec::new();
        {
            let (n, _) = self.target(from_b);
            let mut out = vec![0u8; out_len];
            for _ in 0..200 {
                match n.poll_transmit(now, &mut out) {
                    Ok(Some(t)) => {
                        assert!(t.len <= out_len, "{t:?} > {out_len}");
                        sent.push(out[..t.len].to_vec());
                    }
                    Ok(None) => break,
                    Err(SendError::BufferTooSmall { needed }) => {
                        assert!(needed > out_len, "needed {needed} <= {out_len}");
                        let mut big = vec![0u8; needed];
                        match n.poll_transmit(now, &mut big) {
                            Ok(Some(t)) => sent.push(big[..t.len].to_vec()),
                            Ok(None) => break,
                            Err(SendError::BufferTooSmall { needed: n2 }) => {
                                panic!("poll_transmit wants {n2} after being given {needed}")
                            }
                            Err(_) => break,
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        for d in &sent {
            self.remember(d);
        }
        if forward && self.b.is_some() {
            let from = if from_b { addr_b() } else { addr_a() };
            for d in sent {
                self.deliver(!from_b, from, &d, 2048, false, 2);
            }
        }
    }

    fn advance(&mut self, ms: u64) {
        self.now = self.now.saturating_add(core::time::Duration::from_millis(ms));
        let now = self.now;
        self.a.handle_timeout(now);
        if let Some(b) = &mut self.b {
            b.handle_timeout(now);
        }
        while self.a.poll_event().is_some() {}
        if let Some(b) = &mut self.b {
            while b.poll_event().is_some() {}
        }
    }
}

fn mutate(input: &mut Input, d: &mut Vec<u8>, pool: &[Vec<u8>]) {
    for _ in 0..(input.u8() % 4) + 1 {
        let sel = input.u8();
        let len = d.len().max(1);
        match sel % 8 {
            // Flip bits of one byte.
            0 | 1 => {
                let pos = usize::from(input.u16()) % len;
                let x = input.u8() | 1;
                if let Some(b) = d.get_mut(pos) {
                    *b ^= x;
                }
            }
            // Truncate.
            2 => {
                let keep = usize::from(input.u16()) % (d.len() + 1);
                d.truncate(keep);
            }
            // Extend with input bytes.
            3 => {
                let n = usize::from(input.u8());
                d.extend_from_slice(input.bytes(n));
            }
            // Overwrite a u32 field (index / type) with one from another pooled message.
            4 => {
                let off = [0usize, 4, 8][usize::from(input.u8()) % 3];
                let src = pool.get(usize::from(input.u8()) % pool.len().max(1)).cloned().unwrap_or_default();
                let from = [4usize, 8][usize::from(input.u8()) % 2];
                if let (Some(dst), Some(v)) = (d.get_mut(off..off + 4), src.get(from..from + 4)) {
                    dst.copy_from_slice(v);
                }
            }
            // Set the transport counter.
            5 => {
                let c = [0u64, 1, 2, 63, 64, 2047, 2048, 8192, u64::MAX - (1 << 13), u64::MAX]
                    [usize::from(input.u8()) % 10];
                let c = c.wrapping_add(u64::from(input.u8()));
                if let Some(dst) = d.get_mut(8..16) {
                    dst.copy_from_slice(&c.to_le_bytes());
                }
            }
            // Overwrite a run of bytes with input.
            6 => {
                let pos = usize::from(input.u16()) % len;
                let n = usize::from(input.u8() % 64);
                let src = input.bytes(n);
                for (i, &v) in src.iter().enumerate() {
                    if let Some(b) = d.get_mut(pos + i) {
                        *b = v;
                    }
                }
            }
            // Splice: this message's head with another's tail.
            _ => {
                if let Some(other) = pool.get(usize::from(input.u8()) % pool.len().max(1)) {
                    let cut = usize::from(input.u16()) % (d.len().min(other.len()) + 1);
                    d.truncate(cut);
                    d.extend_from_slice(&other[cut.min(other.len())..]);
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let setup = input.u8() % 4;
    let mut w = match setup {
        0 => {
            let ka = secret_a();
            let pa = public_of(&ka);
            let pb = public_of(&secret_b());
            let now = Instant::from_secs(1);
            let mut a =
                node(ka, 2, NodeConfig { under_load_threshold: u32::from(input.u8() % 4), ..NodeConfig::default() });
            let ida = a.add_peer(now, PeerConfig { endpoint: Some(addr_b()), ..PeerConfig::new(pb) }).unwrap();
            a.add_allowed_ip(ida, "10.0.0.0/8".parse().unwrap()).unwrap();
            World { a, b: None, ida, idb: ida, pa, pb, now, pool: Vec::new() }
        }
        1 => {
            let p = pair(NodeConfig::default(), NodeConfig::default(), input.bool());
            World { a: p.a, b: Some(p.b), ida: p.ida, idb: p.idb, pa: p.pa, pb: p.pb, now: p.now, pool: Vec::new() }
        }
        2 => {
            let mut p = pair(NodeConfig::default(), NodeConfig::default(), false);
            let cap = handshake(&mut p);
            let pool = cap.datagrams.into_iter().map(|(_, d)| d).collect();
            World { a: p.a, b: Some(p.b), ida: p.ida, idb: p.idb, pa: p.pa, pb: p.pb, now: p.now, pool }
        }
        _ => {
            let (p, cap) = cookie_handshake();
            let pool = cap.datagrams.into_iter().map(|(_, d)| d).collect();
            World { a: p.a, b: Some(p.b), ida: p.ida, idb: p.idb, pa: p.pa, pb: p.pb, now: p.now, pool }
        }
    };

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        // Upper bits of the op byte: target node and flags.
        let to_b = op & 0x08 != 0;
        let restamp_mac = op & 0x10 != 0;
        let forward = op & 0x20 != 0;
        let time_travel = op & 0xc0 == 0xc0;
        match op % 8 {
            // A raw datagram from the input.
            0 => {
                let len = usize::from(input.u16() % 2048);
                let mut d = input.bytes(len).to_vec();
                let from = source_addr(input.u8());
                let out_len = out_size(input.u8());
                if restamp_mac {
                    let (_, pk) = w.target(to_b);
                    restamp(w.now, &pk, &mut d);
                }
                w.deliver(to_b, from, &d, out_len, time_travel, u8::from(forward) * 2);
            }
            // A pooled datagram, mutated.
            1 | 2 if !w.pool.is_empty() => {
                let i = usize::from(input.u8()) % w.pool.len();
                let mut d = w.pool[i].clone();
                if op % 8 == 1 {
                    mutate(&mut input, &mut d, &w.pool);
                }
                // Op 2 replays unchanged (still optionally re-stamped).
                if restamp_mac {
                    let (_, pk) = w.target(to_b);
                    restamp(w.now, &pk, &mut d);
                }
                let from = source_addr(input.u8());
                let sel = input.u8();
                let out_len =
                    if sel & 0x80 != 0 { d.len().saturating_sub(usize::from(sel & 1)) } else { out_size(sel) };
                w.deliver(to_b, from, &d, out_len, time_travel, u8::from(forward) * 2);
            }
            1 | 2 => {}
            // Let time pass; fire timers.
            3 => {
                let sel = input.u8();
                let ms =
                    if sel & 0x10 != 0 { u64::from(input.u16()) } else { STEPS_MS[usize::from(sel) % STEPS_MS.len()] };
                w.advance(ms);
                let out_len = out_size(input.u8());
                w.drain(false, out_len, forward);
                if w.b.is_some() {
                    w.drain(true, out_len, forward);
                }
            }
            // An IP packet from the TUN device.
            4 => {
                let kind = input.u8();
                let out_len = if kind & 0x80 != 0 { usize::from(input.u16()) } else { out_size(input.u8()) };
                let plen = usize::from(input.u8());
                let payload = input.bytes(plen).to_vec();
                let (src4, dst4, src6, dst6) =
                    if to_b { (IP_B, IP_A, IP6_B, IP6_A) } else { (IP_A, IP_B, IP6_A, IP6_B) };
                let pkt = match kind % 4 {
                    0 => ipv4(src4, dst4, &payload),
                    1 => ipv6(src6, dst6, &payload),
                    2 => payload.clone(),
                    _ => Vec::new(),
                };
                let now = w.now;
                let (n, _) = w.target(to_b);
                let mut out = vec![0u8; out_len];
                let r = n.send_ip(now, &pkt, &mut out);
                check_send(&r, out_len);
                if let Ok(Sent::Transmit(t)) = r {
                    let d = out[..t.len].to_vec();
                    w.remember(&d);
                    if forward && w.b.is_some() {
                        let from = if to_b { addr_b() } else { addr_a() };
                        w.deliver(!to_b, from, &d, 2048, false, 2);
                    }
                }
            }
            // Drain transmits.
            5 => {
                let out_len = out_size(input.u8());
                w.drain(to_b, out_len, forward);
            }
            // Configuration changes.
            6 => {
                let now = w.now;
                let (ida, idb) = (w.ida, w.idb);
                let id = if to_b && w.b.is_some() { idb } else { ida };
                let peer_key = if to_b && w.b.is_some() { w.pa } else { w.pb };
                let arg = input.u8();
                let (n, _) = w.target(to_b);
                match input.u8() % 10 {
                    0 => {
                        n.initiate(now, id);
                    }
                    1 => n.rebind(now),
                    2 => {
                        n.set_persistent_keepalive(
                            now,
                            id,
                            [None, Some(0), Some(1), Some(25), Some(u16::MAX)][usize::from(arg) % 5],
                        );
                    }
                    3 => {
                        n.set_endpoint(id, if arg & 1 == 0 { None } else { Some(source_addr(arg >> 1)) });
                    }
                    4 => n.set_mtu([0, 1, 16, 1280, 1420, u16::MAX][usize::from(arg) % 6]),
                    5 => {
                        n.set_preshared_key(
                            id,
                            if arg & 1 == 0 { None } else { Some(PresharedKey::from_bytes([arg; 32])) },
                        );
                    }
                    6 => {
                        // Remove the peer and add it back (same id expected, fresh state).
                        let removed = n.remove_peer(id);
                        let new = n.add_peer(
                            now,
                            PeerConfig { endpoint: Some(source_addr(arg)), ..PeerConfig::new(peer_key) },
                        );
                        if removed {
                            assert!(new.is_ok(), "re-adding the removed peer: {new:?}");
                        }
                        if let Ok(new) = new {
                            let _ = n.add_allowed_ip(new, "0.0.0.0/0".parse().unwrap());
                            let _ = n.add_allowed_ip(new, "::/0".parse().unwrap());
                        }
                    }
                    7 => {
                        // Rotate to a throwaway identity and back.
                        let own = n.private_key().cloned();
                        n.set_private_key(Some(omni_core::StaticSecret::from_bytes([arg | 1; 32])));
                        n.set_private_key(own);
                    }
                    8 => {
                        // A timer call at exactly the advertised deadline.
                        if let Some(d) = n.poll_timeout() {
                            assert!(d >= Instant::ZERO);
                            n.handle_timeout(d.max(now));
                        }
                    }
                    _ => {
                        let _ = n.peer_stats(id);
                        n.for_each_allowed_ip(id, |_| {});
                        while n.poll_event().is_some() {}
                    }
                }
            }
            // Deliver the newest pooled datagram to the other side as the
            // network would (keeps handshakes progressing without mutation).
            _ => {
                if let Some(d) = w.pool.last().cloned() {
                    let from = if to_b { addr_a() } else { addr_b() };
                    w.deliver(to_b, from, &d, 2048, false, 2);
                }
            }
        }
    }
});
