//! A host peer built on omni-core with std: a UDP socket on loopback and a
//! `Node`, driven by hand (no TUN): tests hand it IP packets to send and read
//! the decrypted packets it received.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant as StdInstant};

use omni_core::crypto::RustCrypto;
use omni_core::node::{Received, RecvError, Sent};
use omni_core::storage::Heap;
use omni_core::{Event, Instant, Node, NodeConfig, PeerConfig, PeerId, PublicKey, StaticSecret, WallTime};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng};

pub struct HostPeer {
    pub node: Node<RustCrypto, ChaCha20Rng, Heap>,
    pub sock: UdpSocket,
    /// The device.
    #[allow(dead_code)]
    pub peer: PeerId,
    start: StdInstant,
    pub inbox: VecDeque<Vec<u8>>,
    pub events: Vec<Event>,
    pub stale: u32,
    pub errors: Vec<RecvError>,
}

impl HostPeer {
    /// A peer on `sock` with key `secret` that knows the device by
    /// `device_key`, routes `allowed` to it and reaches it at `device_endpoint`.
    pub fn new(
        sock: UdpSocket,
        secret: StaticSecret,
        device_key: PublicKey,
        allowed: &str,
        device_endpoint: Option<SocketAddr>,
    ) -> Self {
        let mut node = Node::new(
            NodeConfig { private_key: Some(secret), ..NodeConfig::default() },
            ChaCha20Rng::from_rng(OsRng).expect("rng"),
        );
        let now = Instant::ZERO;
        node.set_wall_time(now, WallTime::now_system());
        let peer = node
            .add_peer(now, PeerConfig { endpoint: device_endpoint, ..PeerConfig::new(device_key) })
            .expect("add peer");
        node.add_allowed_ip(peer, allowed.parse().expect("allowed ip")).expect("route");
        sock.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        HostPeer {
            node,
            sock,
            peer,
            start: StdInstant::now(),
            inbox: VecDeque::new(),
            events: Vec::new(),
            stale: 0,
            errors: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(self.start.elapsed().as_nanos() as u64)
    }

    /// Sends an IP packet into the tunnel (may start a handshake first).
    pub fn send_ip(&mut self, packet: &[u8]) {
        let mut out = vec![0u8; packet.len() + 64];
        let now = self.now();
        match self.node.send_ip(now, packet, &mut out) {
            Ok(Sent::Transmit(t)) => {
                let _ = self.sock.send_to(&out[..t.len], t.to);
            }
            Ok(Sent::Queued { .. }) => {}
            Err(e) => eprintln!("host peer: send_ip: {e:?}"),
        }
        self.flush();
    }

    fn flush(&mut self) {
        let mut out = vec![0u8; 2048];
        let now = self.now();
        while let Ok(Some(t)) = self.node.poll_transmit(now, &mut out) {
            let _ = self.sock.send_to(&out[..t.len], t.to);
        }
        while let Some(e) = self.node.poll_event() {
            eprintln!("host peer: {e:?}");
            self.events.push(e);
        }
    }

    /// Runs the peer for up to `d` or until `done` says so.
    pub fn run_until(&mut self, d: Duration, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let end = StdInstant::now() + d;
        let mut buf = vec![0u8; 2048];
        let mut out = vec![0u8; 2048];
        loop {
            if done(self) {
                return true;
            }
            if StdInstant::now() >= end {
                return false;
            }
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let now = self.now();
                    match self.node.handle_datagram(now, from, &buf[..n], &mut out) {
                        Ok(Received::Reply { len }) => {
                            let _ = self.sock.send_to(&out[..len], from);
                        }
                        Ok(Received::Packet { len, .. }) => self.inbox.push_back(out[..len].to_vec()),
                        Ok(Received::Done) => {}
                        Err(e) => {
                            if e == RecvError::StaleTimestamp {
                                self.stale += 1;
                            }
                            eprintln!("host peer: datagram from {from} refused: {e:?}");
                            self.errors.push(e);
                        }
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => eprintln!("host peer: recv: {e}"),
            }
            let now = self.now();
            if self.node.poll_timeout().is_some_and(|t| t <= now) {
                self.node.handle_timeout(now);
            }
            self.flush();
        }
    }

    /// Receives and discards datagrams until the first one arrives (up to
    /// `d`): the device's first initiation is lost, as if the peer were down.
    pub fn discard_first_datagram(&mut self, d: Duration) -> bool {
        let end = StdInstant::now() + d;
        let mut buf = [0u8; 2048];
        while StdInstant::now() < end {
            if self.sock.recv_from(&mut buf).is_ok() {
                return true;
            }
        }
        false
    }

    /// Handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, Event::HandshakeCompleted { .. })).count()
    }

    pub fn wait_handshakes(&mut self, n: usize, d: Duration) -> bool {
        self.run_until(d, |p| p.handshakes() >= n)
    }

    /// Sends `packet` and waits for a received packet that `matches`.
    pub fn exchange(&mut self, packet: &[u8], d: Duration, mut matches: impl FnMut(&[u8]) -> bool) -> bool {
        self.inbox.clear();
        self.send_ip(packet);
        self.run_until(d, |p| {
            while let Some(pkt) = p.inbox.pop_front() {
                if matches(&pkt) {
                    return true;
                }
            }
            false
        })
    }
}
