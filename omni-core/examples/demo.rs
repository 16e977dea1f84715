//! A two-node demo on a simulated link with a virtual clock: handshake, data
//! both ways, a rekey, a roam, and a replay refused. Prints what happened.
//!
//!     cargo run -p omni-core --example demo

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use omni_core::crypto::RustCrypto;
use omni_core::node::{Received, Sent};
use omni_core::storage::Heap;
use omni_core::{Instant, Node, NodeConfig, PeerConfig, PeerId, StaticSecret, WallTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

type DemoNode = Node<RustCrypto, ChaCha20Rng, Heap>;

struct Host {
    name: &'static str,
    node: DemoNode,
    addr: SocketAddr,
    peer: PeerId,
}

/// Datagrams in flight: (deliver_at, from, to, bytes).
type Wire = VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>;

const LATENCY: Duration = Duration::from_millis(20);

fn icmp_echo(src: [u8; 4], dst: [u8; 4], seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 28 + 32];
    p[0] = 0x45;
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    p[8] = 64;
    p[9] = 1; // ICMP
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20] = 8; // echo request
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    p
}

fn drain(h: &mut Host, now: Instant, wire: &mut Wire) {
    let mut out = vec![0u8; 2048];
    while let Ok(Some(t)) = h.node.poll_transmit(now, &mut out) {
        wire.push_back((now + LATENCY, h.addr, t.to, out[..t.len].to_vec()));
    }
    while let Some(e) = h.node.poll_event() {
        println!("{:>9.3}s  {}: event {:?}", secs(now), h.name, e);
    }
}

fn secs(t: Instant) -> f64 {
    t.as_nanos() as f64 / 1e9
}

fn deliver(hosts: &mut [Host; 2], now: Instant, wire: &mut Wire, log: bool) -> usize {
    let mut delivered = 0;
    let mut out = vec![0u8; 2048];
    while let Some(&(at, ..)) = wire.front() {
        if at > now {
            break;
        }
        let (_, from, to, bytes) = wire.pop_front().unwrap();
        let Some(i) = hosts.iter().position(|h| h.addr == to) else { continue };
        let h = &mut hosts[i];
        match h.node.handle_datagram(now, from, &bytes, &mut out) {
            Ok(Received::Reply { len }) => {
                if log {
                    println!("{:>9.3}s  {}: answered {} bytes to {from}", secs(now), h.name, len);
                }
                wire.push_back((now + LATENCY, h.addr, from, out[..len].to_vec()));
            }
            Ok(Received::Packet { len, .. }) => {
                delivered += 1;
                if log {
                    println!("{:>9.3}s  {}: received a {len}-byte IP packet through the tunnel", secs(now), h.name);
                }
            }
            Ok(Received::Done) => {}
            Err(e) => println!("{:>9.3}s  {}: dropped a datagram: {e:?}", secs(now), h.name),
        }
        drain(h, now, wire);
    }
    delivered
}

fn main() {
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let (ka, kb) = (StaticSecret::random(&mut rng), StaticSecret::random(&mut rng));
    let (pa, pb) = (ka.public_key::<RustCrypto>(), kb.public_key::<RustCrypto>());
    let addr_a: SocketAddr = "192.0.2.1:51820".parse().unwrap();
    let addr_b: SocketAddr = "198.51.100.2:51820".parse().unwrap();
    let t0 = Instant::from_secs(1);
    let mk = |key, seed| -> DemoNode {
        let mut n =
            Node::new(NodeConfig { private_key: Some(key), ..Default::default() }, ChaCha20Rng::seed_from_u64(seed));
        n.set_wall_time(t0, WallTime::new(1_795_000_000, 0));
        n
    };
    let mut a = mk(ka, 1);
    let mut b = mk(kb, 2);
    let pa_id = a.add_peer(t0, PeerConfig { endpoint: Some(addr_b), ..PeerConfig::new(pb) }).unwrap();
    let pb_id = b.add_peer(t0, PeerConfig::new(pa)).unwrap();
    a.add_allowed_ip(pa_id, "10.200.0.2/32".parse().unwrap()).unwrap();
    b.add_allowed_ip(pb_id, "10.200.0.1/32".parse().unwrap()).unwrap();
    println!("node A {pa} at {addr_a}, VIP 10.200.0.1");
    println!("node B {pb} at {addr_b}, VIP 10.200.0.2 (B does not know A's address)");

    let mut hosts = [
        Host { name: "A", node: a, addr: addr_a, peer: pa_id },
        Host { name: "B", node: b, addr: addr_b, peer: pb_id },
    ];
    let mut wire = Wire::new();
    let mut out = vec![0u8; 2048];
    let mut now = t0;
    let mut pings = 0u32;
    let mut delivered = 0usize;
    let mut captured: Option<Vec<u8>> = None;
    let end = t0 + Duration::from_secs(300);
    let mut next_ping = t0;
    let mut roamed = false;

    while now < end {
        if now >= next_ping {
            pings += 1;
            let log = pings <= 2;
            for (i, (src, dst)) in
                [([10, 200, 0, 1], [10, 200, 0, 2]), ([10, 200, 0, 2], [10, 200, 0, 1])].into_iter().enumerate()
            {
                let h = &mut hosts[i];
                match h.node.send_ip(now, &icmp_echo(src, dst, pings as u16), &mut out) {
                    Ok(Sent::Transmit(t)) => {
                        let bytes = out[..t.len].to_vec();
                        if captured.is_none() && i == 0 {
                            captured = Some(bytes.clone());
                        }
                        wire.push_back((now + LATENCY, h.addr, t.to, bytes));
                    }
                    Ok(Sent::Queued { .. }) if log => {
                        println!("{:>9.3}s  {}: no session yet, packet queued", secs(now), h.name)
                    }
                    Ok(_) => {}
                    Err(e) if log => println!("{:>9.3}s  {}: cannot send yet: {e:?}", secs(now), h.name),
                    Err(_) => {}
                }
                drain(h, now, &mut wire);
            }
            next_ping = now + Duration::from_secs(1);
        }
        if !roamed && now >= t0 + Duration::from_secs(150) {
            roamed = true;
            let new_addr: SocketAddr = "203.0.113.9:40000".parse().unwrap();
            println!("{:>9.3}s  A: underlay address changes {} -> {new_addr}", secs(now), hosts[0].addr);
            hosts[0].addr = new_addr;
            if let Some(bytes) = captured.take() {
                println!("{:>9.3}s  attacker: replays A's first data packet to B", secs(now));
                wire.push_back((now, addr_a, addr_b, bytes));
            }
        }
        delivered += deliver(&mut hosts, now, &mut wire, pings <= 2);
        for h in hosts.iter_mut() {
            if h.node.poll_timeout().is_some_and(|t| t <= now) {
                h.node.handle_timeout(now);
                drain(h, now, &mut wire);
            }
        }
        // Advance the virtual clock to the next thing that happens.
        let mut next = next_ping;
        if let Some(&(at, ..)) = wire.front() {
            next = next.min(at);
        }
        for h in hosts.iter() {
            if let Some(t) = h.node.poll_timeout() {
                next = next.min(t);
            }
        }
        now = next.max(now + Duration::from_micros(1));
    }
    for h in &hosts {
        let s = h.node.peer_stats(h.peer).unwrap();
        println!(
            "{}: peer endpoint {:?}, last handshake at {:.1}s, rx {} B, tx {} B",
            h.name,
            s.endpoint,
            s.last_handshake.map(secs).unwrap_or(0.0),
            s.rx_bytes,
            s.tx_bytes
        );
    }
    println!(
        "{delivered} of {} pings delivered over {} simulated seconds",
        pings * 2,
        (end.as_nanos() - t0.as_nanos()) / 1_000_000_000
    );
}
