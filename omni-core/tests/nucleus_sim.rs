//! One Nucleus and several edges on a simulated network with a virtual clock
//! (the patterns of `sim/mod.rs`: a seeded RNG, a priority queue of datagrams
//! with per-link latency and loss, hosts driven by their `poll_timeout`).
//!
//! Edges run a [`Node`] with a [`NucleusClient`]; the Nucleus runs a
//! [`NucleusServer`]; "raw" hosts are bare nodes that talk to the Nucleus
//! with hand-made signaling payloads (the attacker and the fuzzer).

mod sim;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use omni_core::crypto::RustCrypto;
use omni_core::node::{Received, Sent};
use omni_core::nucleus::client::{ClientEvent, ControlError, HeapMembers, Path, State};
use omni_core::nucleus::server::{ServerConfig, ServerEvent};
use omni_core::nucleus::wire::{self, ErrorCode, Message, PeerRef, RelayData};
use omni_core::nucleus::{ClientConfig, ClusterSecret, NucleusClient, NucleusServer};
use omni_core::storage::Heap;
use omni_core::{Event, Incoming, Instant, Node, NodeConfig, PeerConfig, PeerId, PublicKey, StaticSecret, WallTime};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sim::{fmt_t, ipv4_udp, kind, Link, WALL_BASE_SECS};

type EdgeNode = Node<RustCrypto, ChaCha20Rng, Heap>;
type Server = NucleusServer<RustCrypto, ChaCha20Rng>;
type Client = NucleusClient<HeapMembers>;

const NUCLEUS_ADDR: &str = "192.0.2.1:51820";

struct Edge {
    node: EdgeNode,
    client: Client,
    cluster: ClusterSecret,
    vip: Ipv4Addr,
    inbox: Vec<(Instant, Vec<u8>)>,
    events: Vec<(Instant, ClientEvent)>,
    node_events: Vec<(Instant, Event)>,
    control_errors: Vec<ControlError>,
    /// Offline: receives nothing, sends nothing (a crash).
    down: bool,
}

/// A bare node with the Nucleus as a control peer: sends whatever payload a
/// test wants and keeps every signaling message it gets back.
struct Raw {
    node: EdgeNode,
    nucleus: PeerId,
    got: Vec<(Instant, Vec<u8>)>,
}

enum Host {
    Nucleus(Server),
    Edge(Box<Edge>),
    Raw(Box<Raw>),
}

struct Slot {
    name: String,
    addr: SocketAddr,
    public: PublicKey,
    host: Host,
}

#[derive(Clone, Debug)]
struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

struct Scheduled {
    at: Instant,
    seq: u64,
    d: Datagram,
}
impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct NSim {
    now: Instant,
    hosts: Vec<Slot>,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    rng: ChaCha20Rng,
    key_rng: ChaCha20Rng,
    seed: u64,
    default_link: Link,
    links: HashMap<(usize, usize), Link>,
    /// Every datagram delivered, when set (for replays).
    capture: bool,
    captured: Vec<Datagram>,
    nucleus_key: PublicKey,
    nucleus_secret: StaticSecret,
    /// The Nucleus's events, with the time they happened.
    server_events: Vec<(Instant, ServerEvent)>,
    buf: Vec<u8>,
    buf2: Vec<u8>,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

impl NSim {
    fn new(seed: u64, config: ServerConfig) -> NSim {
        let mut key_rng = ChaCha20Rng::seed_from_u64(seed ^ 0x6b65_7973);
        let nucleus_secret = StaticSecret::random(&mut key_rng);
        let nucleus_key = nucleus_secret.public_key::<RustCrypto>();
        let mut s = NSim {
            now: Instant::ZERO,
            hosts: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: ChaCha20Rng::seed_from_u64(seed),
            key_rng,
            seed,
            default_link: Link::ideal(20),
            links: HashMap::new(),
            capture: false,
            captured: Vec::new(),
            nucleus_key,
            nucleus_secret,
            server_events: Vec::new(),
            buf: vec![0u8; 4096],
            buf2: vec![0u8; 4096],
        };
        let server = s.make_server(config, 0);
        s.hosts.push(Slot {
            name: "nucleus".into(),
            addr: addr(NUCLEUS_ADDR),
            public: nucleus_key,
            host: Host::Nucleus(server),
        });
        s
    }

    fn make_server(&self, config: ServerConfig, generation: u64) -> Server {
        let r = |k: u64| {
            ChaCha20Rng::seed_from_u64(self.seed.wrapping_mul(31).wrapping_add(k).wrapping_add(generation << 8))
        };
        let mut server = Server::new(config, self.nucleus_secret.clone(), r(1), r(2));
        server.set_wall_time(self.now, self.true_wall());
        server
    }

    fn true_wall(&self) -> WallTime {
        let n = self.now.as_nanos();
        WallTime::new(WALL_BASE_SECS + n / 1_000_000_000, (n % 1_000_000_000) as u32)
    }

    fn server(&mut self) -> &mut Server {
        match &mut self.hosts[0].host {
            Host::Nucleus(s) => s,
            _ => unreachable!(),
        }
    }

    fn server_ref(&self) -> &Server {
        match &self.hosts[0].host {
            Host::Nucleus(s) => s,
            _ => unreachable!(),
        }
    }

    fn edge(&self, i: usize) -> &Edge {
        match &self.hosts[i].host {
            Host::Edge(e) => e,
            _ => panic!("{} is not an edge", self.hosts[i].name),
        }
    }

    fn edge_mut(&mut self, i: usize) -> &mut Edge {
        match &mut self.hosts[i].host {
            Host::Edge(e) => e,
            _ => panic!("not an edge"),
        }
    }

    fn raw(&self, i: usize) -> &Raw {
        match &self.hosts[i].host {
            Host::Raw(r) => r,
            _ => panic!("not raw"),
        }
    }

    /// Adds an edge of cluster `name`/`secret` with VIP `vip`, and starts its client.
    fn add_edge(
        &mut self,
        name: &str,
        at: &str,
        cluster: (&str, &str),
        vip: [u8; 4],
        tweak: impl FnOnce(&mut ClientConfig, &mut EdgeNode),
    ) -> usize {
        let idx = self.hosts.len();
        let secret = StaticSecret::random(&mut self.key_rng);
        let public = secret.public_key::<RustCrypto>();
        let mut node = EdgeNode::new(
            NodeConfig { private_key: Some(secret), ..NodeConfig::default() },
            ChaCha20Rng::seed_from_u64(self.seed ^ (idx as u64) << 20),
        );
        node.set_wall_time(self.now, self.true_wall());
        let cluster = ClusterSecret::derive::<RustCrypto>(cluster.0.as_bytes(), cluster.1.as_bytes());
        let vip = Ipv4Addr::from(vip);
        let mut config = ClientConfig::new(self.nucleus_key, addr(NUCLEUS_ADDR), IpAddr::V4(vip));
        tweak(&mut config, &mut node);
        let client = Client::new(config, cluster.clone());
        let edge = Edge {
            node,
            client,
            cluster,
            vip,
            inbox: Vec::new(),
            events: Vec::new(),
            node_events: Vec::new(),
            control_errors: Vec::new(),
            down: false,
        };
        self.hosts.push(Slot { name: name.into(), addr: addr(at), public, host: Host::Edge(Box::new(edge)) });
        let now = self.now;
        let e = self.edge_mut(idx);
        e.client.start(now, &mut e.node).expect("start");
        self.drain(idx);
        idx
    }

    fn add_raw(&mut self, name: &str, at: &str) -> usize {
        let idx = self.hosts.len();
        let secret = StaticSecret::random(&mut self.key_rng);
        let public = secret.public_key::<RustCrypto>();
        let mut node = EdgeNode::new(
            NodeConfig { private_key: Some(secret), ..NodeConfig::default() },
            ChaCha20Rng::seed_from_u64(self.seed ^ (idx as u64) << 24),
        );
        node.set_wall_time(self.now, self.true_wall());
        let nucleus = node
            .add_peer(self.now, PeerConfig { endpoint: Some(addr(NUCLEUS_ADDR)), ..PeerConfig::new(self.nucleus_key) })
            .unwrap();
        node.set_control_peer(nucleus, true);
        self.hosts.push(Slot {
            name: name.into(),
            addr: addr(at),
            public,
            host: Host::Raw(Box::new(Raw { node, nucleus, got: Vec::new() })),
        });
        idx
    }

    /// A raw host sends a signaling payload to the Nucleus.
    fn raw_send(&mut self, idx: usize, payload: &[u8]) {
        let now = self.now;
        let mut out = vec![0u8; 4096];
        let Host::Raw(r) = &mut self.hosts[idx].host else { panic!() };
        let nucleus = r.nucleus;
        if let Ok(Sent::Transmit(t)) = r.node.send_to_peer(now, nucleus, payload, &mut out) {
            let from = self.hosts[idx].addr;
            self.emit(from, t.to, out[..t.len].to_vec());
        }
        self.drain(idx);
    }

    fn raw_msg(&mut self, idx: usize, m: &Message<'_>) {
        let mut b = vec![0u8; m.encoded_len()];
        m.emit(&mut b).unwrap();
        self.raw_send(idx, &b);
    }

    /// Signaling messages a raw host received since `since`.
    fn raw_got(&self, idx: usize, since: Instant) -> Vec<Vec<u8>> {
        self.raw(idx).got.iter().filter(|(t, _)| *t >= since).map(|(_, m)| m.clone()).collect()
    }

    /// An edge sends a hand-made signaling message on its Nucleus session.
    fn edge_signal(&mut self, idx: usize, m: &Message<'_>) {
        let now = self.now;
        let mut b = vec![0u8; m.encoded_len()];
        m.emit(&mut b).unwrap();
        let mut out = vec![0u8; 4096];
        let from = self.hosts[idx].addr;
        let e = self.edge_mut(idx);
        let np = e.client.nucleus_peer().unwrap();
        let Ok(Sent::Transmit(t)) = e.node.send_to_peer(now, np, &b, &mut out) else { panic!("no session") };
        self.emit(from, t.to, out[..t.len].to_vec());
    }

    fn ping(&mut self, from: usize, to: usize, payload: &[u8]) -> bool {
        let p = ipv4_udp(self.edge(from).vip, self.edge(to).vip, payload);
        let now = self.now;
        let mut buf = std::mem::take(&mut self.buf);
        let src = self.hosts[from].addr;
        let e = self.edge_mut(from);
        let r = e.node.send_ip(now, &p, &mut buf);
        let mut sent = false;
        if let Ok(Sent::Transmit(t)) = r {
            let e = self.edge_mut(from);
            if let Ok(Some(t)) = e.client.route_transmit(now, &mut e.node, t, &mut buf) {
                let d = buf[..t.len].to_vec();
                self.emit(src, t.to, d);
                sent = true;
            }
        }
        sent |= matches!(r, Ok(Sent::Queued { .. }));
        self.buf = buf;
        self.drain(from);
        sent
    }

    /// Packets `to` received from `from`'s VIP carrying `payload`.
    fn received(&self, to: usize, from: usize, payload: &[u8]) -> usize {
        let src = self.edge(from).vip.octets();
        self.edge(to).inbox.iter().filter(|(_, p)| p.len() >= 28 && p[12..16] == src && &p[28..] == payload).count()
    }

    fn set_link_both(&mut self, a: usize, b: usize, l: Link) {
        self.links.insert((a, b), l);
        self.links.insert((b, a), l);
    }

    // ----- the network --------------------------------------------------

    fn host_at(&self, a: SocketAddr) -> Option<usize> {
        self.hosts.iter().position(|h| h.addr == a)
    }

    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn emit(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let link = match (self.host_at(from), self.host_at(to)) {
            (Some(a), Some(b)) => self.links.get(&(a, b)).copied().unwrap_or(self.default_link),
            _ => self.default_link,
        };
        if self.uniform() < link.loss {
            return;
        }
        let at = self.now + link.latency + link.jitter.mul_f64(self.uniform());
        self.schedule(at, Datagram { from, to, data });
    }

    fn inject(&mut self, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        let at = self.now + Duration::from_millis(1);
        self.schedule(at, Datagram { from, to, data });
    }

    fn schedule(&mut self, at: Instant, d: Datagram) {
        self.seq += 1;
        self.queue.push(Scheduled { at, seq: self.seq, d });
    }

    fn drain(&mut self, idx: usize) {
        let now = self.now;
        let src = self.hosts[idx].addr;
        let mut buf = std::mem::take(&mut self.buf);
        let mut sends = Vec::new();
        match &mut self.hosts[idx].host {
            Host::Nucleus(s) => {
                while let Some(t) = s.poll_transmit(now, &mut buf).expect("server poll_transmit") {
                    sends.push((t.to, buf[..t.len].to_vec()));
                }
                while let Some(e) = s.poll_event() {
                    self.server_events.push((now, e));
                }
            }
            Host::Edge(e) => {
                if !e.down {
                    while let Some(t) =
                        e.client.poll_transmit(now, &mut e.node, &mut buf).expect("client poll_transmit")
                    {
                        sends.push((t.to, buf[..t.len].to_vec()));
                    }
                }
                while let Some(ev) = e.client.poll_event() {
                    e.events.push((now, ev));
                }
            }
            Host::Raw(r) => {
                while let Some(t) = r.node.poll_transmit(now, &mut buf).unwrap() {
                    sends.push((t.to, buf[..t.len].to_vec()));
                }
            }
        }
        self.buf = buf;
        for (to, d) in sends {
            self.emit(src, to, d);
        }
    }

    fn deliver(&mut self, d: Datagram) {
        let Some(idx) = self.host_at(d.to) else { return };
        if self.capture {
            self.captured.push(d.clone());
        }
        let now = self.now;
        let mut buf = std::mem::take(&mut self.buf);
        let mut buf2 = std::mem::take(&mut self.buf2);
        let mut reply = None;
        match &mut self.hosts[idx].host {
            Host::Nucleus(s) => {
                if let Ok(omni_core::nucleus::server::Handled::Reply { len }) =
                    s.handle_datagram(now, d.from, &d.data, &mut buf)
                {
                    reply = Some(buf[..len].to_vec());
                }
            }
            Host::Edge(e) => {
                if !e.down {
                    match e.node.handle_datagram_with_control(now, d.from, &d.data, &mut buf) {
                        Ok(Incoming::Received(Received::Reply { len })) => reply = Some(buf[..len].to_vec()),
                        Ok(Incoming::Received(Received::Packet { len, .. })) => {
                            e.inbox.push((now, buf[..len].to_vec()))
                        }
                        Ok(Incoming::Control { peer, len }) => {
                            match e.client.handle_control(now, &mut e.node, peer, &buf[..len], &mut buf2) {
                                Ok(Some((_, n))) => e.inbox.push((now, buf2[..n].to_vec())),
                                Ok(None) => {}
                                Err(err) => e.control_errors.push(err),
                            }
                        }
                        _ => {}
                    }
                    while let Some(ev) = e.node.poll_event() {
                        e.node_events.push((now, ev));
                        e.client.handle_node_event(now, &mut e.node, &ev);
                    }
                }
            }
            Host::Raw(r) => match r.node.handle_datagram_with_control(now, d.from, &d.data, &mut buf) {
                Ok(Incoming::Received(Received::Reply { len })) => reply = Some(buf[..len].to_vec()),
                Ok(Incoming::Control { len, .. }) => r.got.push((now, buf[..len].to_vec())),
                _ => {}
            },
        }
        self.buf = buf;
        self.buf2 = buf2;
        if let Some(r) = reply {
            let src = self.hosts[idx].addr;
            self.emit(src, d.from, r);
        }
        self.drain(idx);
    }

    fn timeout_of(&self, idx: usize) -> Option<Instant> {
        match &self.hosts[idx].host {
            Host::Nucleus(s) => s.poll_timeout(),
            Host::Edge(e) if e.down => None,
            Host::Edge(e) => [e.node.poll_timeout(), e.client.poll_timeout()].into_iter().flatten().min(),
            Host::Raw(r) => r.node.poll_timeout(),
        }
    }

    fn fire(&mut self, idx: usize) {
        let now = self.now;
        match &mut self.hosts[idx].host {
            Host::Nucleus(s) => s.handle_timeout(now),
            Host::Edge(e) => {
                e.node.handle_timeout(now);
                while let Some(ev) = e.node.poll_event() {
                    e.node_events.push((now, ev));
                    e.client.handle_node_event(now, &mut e.node, &ev);
                }
                e.client.handle_timeout(now, &mut e.node);
            }
            Host::Raw(r) => r.node.handle_timeout(now),
        }
        self.drain(idx);
    }

    fn run_until(&mut self, end: Instant) {
        let mut same = 0u32;
        loop {
            let q = self.queue.peek().map(|s| s.at);
            let t = (0..self.hosts.len()).filter_map(|i| self.timeout_of(i)).min();
            let Some(next) = [q, t].into_iter().flatten().min() else { break };
            if next > end {
                break;
            }
            if next <= self.now {
                same += 1;
                assert!(same < 100_000, "busy loop at {}", fmt_t(self.now));
            } else {
                same = 0;
                self.now = next;
            }
            for i in 0..self.hosts.len() {
                if self.timeout_of(i).is_some_and(|d| d <= self.now) {
                    self.fire(i);
                }
            }
            while self.queue.peek().is_some_and(|s| s.at <= self.now) {
                let s = self.queue.pop().unwrap();
                self.deliver(s.d);
            }
        }
        self.now = self.now.max(end);
    }

    fn run_for(&mut self, secs: f64) {
        let end = self.now + Duration::from_secs_f64(secs);
        self.run_until(end);
    }

    /// Runs until `pred` holds (checked after every step of 10 ms) or `max` seconds pass.
    fn run_until_pred(&mut self, max: f64, mut pred: impl FnMut(&NSim) -> bool) -> Option<Instant> {
        let end = self.now + Duration::from_secs_f64(max);
        while self.now < end {
            if pred(self) {
                return Some(self.now);
            }
            let step = (self.now + Duration::from_millis(10)).min(end);
            self.run_until(step);
        }
        pred(self).then_some(self.now)
    }

    /// Whether edge `a` has edge `b` as a peer (its key, VIP routed to it).
    fn knows(&self, a: usize, b: usize) -> bool {
        let e = self.edge(a);
        let Some(id) = e.node.peer_by_key(&self.hosts[b].public) else { return false };
        e.node.route(IpAddr::V4(self.edge(b).vip)) == Some(id) && e.client.member(&self.hosts[b].public).is_some()
    }

    fn registered(&self, a: usize) -> bool {
        self.edge(a).client.state() == State::Registered
    }
}

fn lab(c: &mut ClientConfig, _: &mut EdgeNode) {
    let _ = c;
}

// ----- the happy path ------------------------------------------------------

#[test]
fn registration_push_direct_mesh_leave_and_expiry() {
    let mut s = NSim::new(1, ServerConfig::default());
    let a = s.add_edge("a", "198.51.100.1:51820", ("lab", "S3cret!"), [10, 200, 0, 1], lab);
    let b = s.add_edge("b", "198.51.100.2:51820", ("lab", "S3cret!"), [10, 200, 0, 2], lab);
    let c = s.add_edge("c", "198.51.100.3:51820", ("lab", "S3cret!"), [10, 200, 0, 3], lab);
    // A device without a clock: its node's wall clock starts at the epoch,
    // and takes the Nucleus's time.
    let d_at = s.now;
    let d = s.add_edge("d", "198.51.100.4:51820", ("lab", "S3cret!"), [10, 200, 0, 4], |c, n| {
        c.use_nucleus_time = true;
        n.set_wall_time(Instant::ZERO, WallTime::new(0, 0));
    });
    let edges = [a, b, c, d];
    let all_know = |s: &NSim, set: &[usize]| set.iter().all(|&x| set.iter().all(|&y| x == y || s.knows(x, y)));
    let t = s.run_until_pred(5.0, |s| all_know(s, &edges)).expect("full mesh of peers");
    println!("4 edges registered and know each other after {}", fmt_t(t));
    assert!(t.saturating_duration_since(d_at) <= Duration::from_secs(2), "peer lists took {}", fmt_t(t));
    for &e in &edges {
        assert!(s.registered(e));
        assert_eq!(s.edge(e).node.peer_count(), 4, "3 members + the Nucleus");
        assert!(s.edge(e).events.iter().any(|(_, ev)| matches!(ev, ClientEvent::Registered { .. })));
    }
    assert_eq!(s.server().member_count(), 4);
    assert_eq!(s.server().cluster_count(), 1);
    let joined = s.server_events.iter().filter(|(_, e)| matches!(e, ServerEvent::MemberJoined { .. })).count();
    assert_eq!(joined, 4);

    // Pairwise PSKs: both ends derive the same key, from the secret.
    let (ka, kb) = (s.hosts[a].public, s.hosts[b].public);
    let ea = s.edge(a);
    let psk_ab = ea.node.preshared_key(ea.node.peer_by_key(&kb).unwrap()).unwrap();
    let eb = s.edge(b);
    let psk_ba = eb.node.preshared_key(eb.node.peer_by_key(&ka).unwrap()).unwrap();
    assert_eq!(psk_ab.to_hex().as_str(), psk_ba.to_hex().as_str());
    assert_eq!(psk_ab.to_hex().as_str(), eb.cluster.pair_psk(&ka, &kb).to_hex().as_str());

    // Direct handshakes between every pair, then VIP-to-VIP traffic.
    s.run_for(3.0);
    for &x in &edges {
        for &y in &edges {
            if x != y {
                assert!(s.ping(x, y, format!("ping {x}->{y}").as_bytes()));
            }
        }
    }
    s.run_for(1.0);
    for &x in &edges {
        for &y in &edges {
            if x != y {
                assert_eq!(s.received(y, x, format!("ping {x}->{y}").as_bytes()), 1, "{x} -> {y}");
                let e = s.edge(x);
                let stats = e.node.peer_stats(e.node.peer_by_key(&s.hosts[y].public).unwrap()).unwrap();
                assert_eq!(stats.endpoint, Some(s.hosts[y].addr), "direct path {x} -> {y}");
                assert_eq!(e.client.member(&s.hosts[y].public).unwrap().path, Path::Direct);
            }
        }
    }
    assert_eq!(s.server().stats().relayed, 0);
    // The clockless device's handshakes carry the Nucleus's time.
    let ed = s.edge(d);
    let wall = ed.node.peer_stats(ed.node.peer_by_key(&ka).unwrap()).unwrap().last_handshake_wall.unwrap();
    assert!(wall.secs >= WALL_BASE_SECS, "clockless edge has wall time {wall:?}");

    // A late joiner reaches everyone within 2 s, and learns everyone.
    let e_at = s.now;
    let e = s.add_edge("e", "198.51.100.5:51820", ("lab", "S3cret!"), [10, 200, 0, 5], lab);
    let five = [a, b, c, d, e];
    let t = s.run_until_pred(5.0, |s| all_know(s, &five)).expect("late joiner");
    println!("join propagated in {:.3}s", t.saturating_duration_since(e_at).as_secs_f64());
    assert!(t.saturating_duration_since(e_at) <= Duration::from_secs(2));

    // A leave reaches everyone within 2 s.
    let now = s.now;
    let ec = s.edge_mut(c);
    ec.client.leave(now, &mut ec.node);
    s.drain(c);
    let left_at = s.now;
    let rest = [a, b, d, e];
    let t = s
        .run_until_pred(5.0, |s| rest.iter().all(|&x| s.edge(x).node.peer_by_key(&s.hosts[c].public).is_none()))
        .expect("leave propagated");
    println!("leave propagated in {:.3}s", t.saturating_duration_since(left_at).as_secs_f64());
    assert!(t.saturating_duration_since(left_at) <= Duration::from_secs(2));
    assert!(rest.iter().all(|&x| s.edge(x).node.route(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 3))).is_none()));
    assert_eq!(s.server().member_count(), 4);
    assert_eq!(s.edge(c).node.peer_count(), 1, "the leaver dropped its members");

    // A crashed member expires after the member timeout and is removed everywhere.
    s.edge_mut(e).down = true;
    let crashed_at = s.now;
    let rest = [a, b, d];
    let t = s
        .run_until_pred(90.0, |s| rest.iter().all(|&x| s.edge(x).node.peer_by_key(&s.hosts[e].public).is_none()))
        .expect("expiry");
    let took = t.saturating_duration_since(crashed_at);
    println!("crash expired after {:.1}s", took.as_secs_f64());
    assert!(took >= Duration::from_secs(59) && took <= Duration::from_secs(63), "{took:?}");
    assert_eq!(s.server().stats().expired, 1);
    // Heartbeats kept everyone else alive all along.
    assert_eq!(s.server().member_count(), 3);
    for &x in &rest {
        assert!(s.registered(x));
        assert_eq!(s.edge(x).client.list_version(), s.edge(a).client.list_version());
    }
}

// ----- NAT traversal helpers: punch and relay --------------------------------

#[test]
fn relay_fallback_when_the_direct_path_is_blocked_and_punch_notify() {
    let mut s = NSim::new(2, ServerConfig::default());
    let a = s.add_edge("a", "198.51.100.1:51820", ("lab", "pw"), [10, 200, 0, 1], lab);
    let b = s.add_edge("b", "203.0.113.9:40001", ("lab", "pw"), [10, 200, 0, 2], lab);
    // A firewall between a and b: only the Nucleus reaches both.
    s.set_link_both(a, b, Link::down());
    let t = s
        .run_until_pred(60.0, |s| {
            [(a, b), (b, a)]
                .iter()
                .all(|&(x, y)| s.edge(x).client.member(&s.hosts[y].public).is_some_and(|m| m.path == Path::Relayed))
        })
        .expect("relay fallback");
    println!("relayed after {}", fmt_t(t));
    s.run_for(2.0);
    assert!(s.ping(a, b, b"through the relay"));
    assert!(s.ping(b, a, b"and back"));
    s.run_for(1.0);
    assert_eq!(s.received(b, a, b"through the relay"), 1);
    assert_eq!(s.received(a, b, b"and back"), 1);
    let st = s.server().stats();
    assert!(st.relayed >= 2, "{st:?}");
    assert!(st.punches >= 1, "relayed members keep punching: {st:?}");
    assert!(s.edge(a).events.iter().any(|(_, e)| matches!(e, ClientEvent::Relayed { .. })));

    // The firewall opens: the periodic re-punch finds the direct path again.
    s.set_link_both(a, b, Link::ideal(20));
    let t = s
        .run_until_pred(130.0, |s| {
            let e = s.edge(a);
            let id = e.node.peer_by_key(&s.hosts[b].public).unwrap();
            e.node.peer_stats(id).unwrap().endpoint == Some(s.hosts[b].addr)
        })
        .expect("back to direct");
    println!("direct again at {}", fmt_t(t));
    let before = s.server().stats().relayed;
    s.run_for(1.0);
    assert!(s.ping(a, b, b"direct again"));
    s.run_for(1.0);
    assert_eq!(s.received(b, a, b"direct again"), 1);
    assert_eq!(s.server().stats().relayed, before, "not relayed any more");
}

/// When `a`'s client saw `b` become relayed, and when its ping arrived.
fn relayed_at(s: &NSim, a: usize, b: usize) -> Option<Instant> {
    let peer = s.edge(a).node.peer_by_key(&s.hosts[b].public)?;
    s.edge(a).events.iter().find(|(_, e)| *e == ClientEvent::Relayed { peer }).map(|(t, _)| *t)
}

#[test]
fn relay_comes_up_within_the_configured_bound_and_upgrades_to_direct() {
    // Default timings: relayed about `relay_after` (1 s) after the second
    // member joins, while punching goes on.
    let mut s = NSim::new(12, ServerConfig::default());
    let a = s.add_edge("a", "198.51.100.1:51820", ("lab", "pw"), [10, 200, 0, 1], lab);
    s.run_for(1.0);
    let joined = s.now;
    let b = s.add_edge("b", "203.0.113.9:40001", ("lab", "pw"), [10, 200, 0, 2], lab);
    s.set_link_both(a, b, Link::down());
    // Ping a -> b every 100 ms until one arrives (as an application would).
    let mut first_ping = None;
    for i in 0..60 {
        let payload = format!("early {i}");
        s.ping(a, b, payload.as_bytes());
        s.run_for(0.1);
        if s.received(b, a, payload.as_bytes()) > 0
            || (0..i).any(|j| s.received(b, a, format!("early {j}").as_bytes()) > 0)
        {
            first_ping = Some(s.now);
            break;
        }
    }
    let first_ping = first_ping.expect("no ping through the relay within 6 s");
    let took = first_ping.saturating_duration_since(joined);
    println!("first ping through the relay {:.3}s after the second member started", took.as_secs_f64());
    let bound = omni_core::nucleus::client::RELAY_AFTER + Duration::from_secs(1);
    assert!(took <= bound, "relayed traffic after {took:?} (bound {bound:?})");
    for (x, y) in [(a, b), (b, a)] {
        let t = relayed_at(&s, x, y).or_else(|| {
            s.run_for(1.0);
            relayed_at(&s, x, y)
        });
        assert!(t.is_some(), "{x} never saw {y} relayed");
    }
    assert!(s.server().stats().relayed >= 2);
    // No direct path yet: punch rounds go on (with PunchRequests, so both
    // sides probe at once) and back off.
    s.run_for(3.0);
    let punches = s.server().stats().punches;
    assert!(punches >= 2, "punch requests while relayed: {punches}");
    for (x, y) in [(a, b), (b, a)] {
        assert_eq!(s.edge(x).client.member(&s.hosts[y].public).unwrap().path, Path::Relayed);
    }

    // The firewall opens: the next punch round finds the direct path, and
    // the path upgrades as soon as an authenticated packet arrives on it.
    s.set_link_both(a, b, Link::ideal(20));
    let opened = s.now;
    let direct = |s: &NSim| {
        [(a, b), (b, a)].iter().all(|&(x, y)| {
            let e = s.edge(x);
            let id = e.node.peer_by_key(&s.hosts[y].public).unwrap();
            e.client.member(&s.hosts[y].public).unwrap().path == Path::Direct
                && e.node.peer_stats(id).unwrap().endpoint == Some(s.hosts[y].addr)
        })
    };
    let t = s.run_until_pred(10.0, direct).expect("no upgrade to direct within 10 s of the path opening");
    println!("direct {:.3}s after the path opened", t.saturating_duration_since(opened).as_secs_f64());
    assert!(s.edge(a).events.iter().any(|(_, e)| matches!(e, ClientEvent::Direct { .. })));
    let before = s.server().stats().relayed;
    assert!(s.ping(a, b, b"direct now"));
    assert!(s.ping(b, a, b"both ways"));
    s.run_for(0.5);
    assert_eq!(s.received(b, a, b"direct now"), 1);
    assert_eq!(s.received(a, b, b"both ways"), 1);
    assert_eq!(s.server().stats().relayed, before, "not relayed any more");

    // A configured bound is honoured: between two members with
    // relay_after = 3 s the relay is not asked for earlier, and comes right after.
    let slow = |c: &mut ClientConfig, _: &mut EdgeNode| c.relay_after = Duration::from_secs(3);
    let c = s.add_edge("c", "203.0.113.10:40002", ("lab", "pw"), [10, 200, 0, 3], slow);
    s.run_for(0.5);
    let d_at = s.now;
    let d = s.add_edge("d", "203.0.113.11:40003", ("lab", "pw"), [10, 200, 0, 4], slow);
    s.set_link_both(c, d, Link::down());
    let t = s.run_until_pred(10.0, |s| relayed_at(s, c, d).is_some()).expect("c relayed to d");
    let took = t.saturating_duration_since(d_at);
    println!("relay_after = 3 s: relayed after {:.3}s", took.as_secs_f64());
    assert!(took >= Duration::from_secs(3) && took <= Duration::from_millis(3500), "{took:?}");
    // a reaches c and d directly.
    assert_eq!(s.edge(c).client.member(&s.hosts[a].public).unwrap().path, Path::Direct);
    assert_eq!(s.edge(d).client.member(&s.hosts[a].public).unwrap().path, Path::Direct);
}

#[test]
fn a_member_that_moves_is_followed_at_its_new_address() {
    let mut s = NSim::new(13, ServerConfig::default());
    let a = s.add_edge("a", "198.51.100.1:51820", ("lab", "pw"), [10, 200, 0, 1], lab);
    let b = s.add_edge("b", "198.51.100.2:51820", ("lab", "pw"), [10, 200, 0, 2], lab);
    s.run_for(3.0);
    assert_eq!(s.edge(a).client.member(&s.hosts[b].public).unwrap().path, Path::Direct);
    // b's NAT mapping changes; its heartbeat shows the Nucleus the new one
    // (nothing goes to a from there yet).
    let new_addr = addr("198.51.100.22:40000");
    s.hosts[b].addr = new_addr;
    let now = s.now;
    let e = s.edge_mut(b);
    e.client.network_changed(now);
    s.drain(b);
    let moved_at = s.now;
    let peer = s.edge(a).node.peer_by_key(&s.hosts[b].public).unwrap();
    let t = s
        .run_until_pred(2.0, |s| s.edge(a).node.peer_stats(peer).unwrap().endpoint == Some(new_addr))
        .expect("a did not follow b");
    println!("followed {:.3}s after the move", t.saturating_duration_since(moved_at).as_secs_f64());
    assert!(
        s.edge(a).events.iter().any(|(_, e)| *e == ClientEvent::Moved { peer, endpoint: new_addr }),
        "the client followed the member itself"
    );
    s.run_for(0.5);
    assert!(s.ping(a, b, b"at the new address"));
    s.run_for(0.5);
    assert_eq!(s.received(b, a, b"at the new address"), 1);
}

// ----- security ------------------------------------------------------------

fn parse_all(msgs: &[Vec<u8>]) -> Vec<Message<'_>> {
    msgs.iter().map(|m| wire::parse(m).expect("nucleus sent a malformed message")).collect()
}

fn errors(msgs: &[Vec<u8>]) -> Vec<ErrorCode> {
    parse_all(msgs)
        .into_iter()
        .filter_map(|m| match m {
            Message::Error(e) => Some(e.code),
            _ => None,
        })
        .collect()
}

/// Handshake + Hello for a raw host; returns the challenge it got.
fn raw_hello(s: &mut NSim, r: usize) -> [u8; 16] {
    let since = s.now;
    s.raw_msg(r, &Message::Hello);
    s.run_for(1.0);
    for m in parse_all(&s.raw_got(r, since)) {
        if let Message::Challenge(c) = m {
            return c.challenge;
        }
    }
    panic!("no challenge for the raw host");
}

#[test]
fn wrong_secret_other_clusters_and_non_members_learn_nothing() {
    let mut s = NSim::new(3, ServerConfig::default());
    let a = s.add_edge("a", "198.51.100.1:51820", ("lab", "right"), [10, 200, 0, 1], lab);
    let b = s.add_edge("b", "198.51.100.2:51820", ("lab", "right"), [10, 200, 0, 2], lab);
    // Same name, wrong secret: a different cluster key, so a cluster of its own.
    let w = s.add_edge("wrong", "198.51.100.66:51820", ("lab", "wrong"), [10, 200, 0, 66], lab);
    // Another cluster on the same Nucleus, with an overlapping VIP.
    let x = s.add_edge("x", "198.51.100.7:51820", ("ops", "other"), [10, 200, 0, 1], lab);
    let y = s.add_edge("y", "198.51.100.8:51820", ("ops", "other"), [10, 200, 0, 2], lab);
    s.run_for(5.0);
    assert!(s.knows(a, b) && s.knows(b, a) && s.knows(x, y) && s.knows(y, x));
    for (p, q) in [(a, w), (b, w), (w, a), (a, x), (x, a), (y, b), (b, y), (w, x)] {
        assert!(!s.knows(p, q), "{} knows {}", s.hosts[p].name, s.hosts[q].name);
    }
    assert_eq!(s.edge(w).client.members().len(), 0, "the wrong secret sees no one");
    assert_eq!(s.edge(w).node.peer_count(), 1);
    assert_eq!(s.server().cluster_count(), 3);

    // A member of "ops" probes "lab" on its own authenticated session:
    // punch, relay and relayed data addressed to a's key.
    let ka = s.hosts[a].public;
    let inbox_a = s.edge(a).inbox.len();
    let relay_refused = s.server().stats().relay_refused;
    let wg_like = [4u8, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9];
    for m in [
        Message::PunchRequest(PeerRef { key: ka }),
        Message::RelayRequest(PeerRef { key: ka }),
        Message::RelayData(RelayData { peer: ka, datagram: &wg_like }),
    ] {
        s.edge_signal(x, &m);
    }
    s.run_for(1.0);
    assert!(s.edge(x).events.iter().any(|(_, e)| *e == ClientEvent::Refused { code: ErrorCode::UnknownPeer }));
    let st = s.server().stats();
    assert!(st.relay_refused > relay_refused, "relay to another cluster refused");
    assert_eq!(st.punches, 0);
    assert_eq!(s.edge(a).inbox.len(), inbox_a, "nothing reached a");
    assert!(s.edge(a).control_errors.is_empty());
    assert!(!s.knows(x, a));

    // A session that never registered: every request gets the same refusal.
    let r = s.add_raw("stranger", "198.51.100.99:4444");
    let _ = raw_hello(&mut s, r);
    let since = s.now;
    for m in [
        Message::PeerListRequest,
        Message::Heartbeat(wire::Heartbeat { list_version: 0 }),
        Message::PunchRequest(PeerRef { key: ka }),
        Message::RelayRequest(PeerRef { key: ka }),
    ] {
        s.raw_msg(r, &m);
    }
    s.run_for(1.0);
    let got = s.raw_got(r, since);
    assert_eq!(errors(&got), vec![ErrorCode::NotRegistered; 4]);
    assert!(parse_all(&got).iter().all(|m| matches!(m, Message::Error(_))), "nothing but errors");

    // Register with a cluster key it cannot prove (lab's public key is not
    // secret), and with a key of a cluster that does not exist: one answer.
    let lab_key = s.edge(a).cluster.public();
    let mut codes = Vec::new();
    let mut lens = Vec::new();
    for cluster_key in [lab_key, PublicKey([9; 32])] {
        let ch = raw_hello(&mut s, r);
        let since = s.now;
        s.raw_msg(
            r,
            &Message::Register(wire::Register {
                cluster_key,
                challenge: ch,
                proof: [0x55; 32],
                vip: IpAddr::V4(Ipv4Addr::new(10, 200, 0, 50)),
                vip2: None,
                locals: Default::default(),
            }),
        );
        s.run_for(1.0);
        let got = s.raw_got(r, since);
        codes.extend(errors(&got));
        lens.extend(got.iter().map(|m| m.len()));
    }
    assert_eq!(codes, vec![ErrorCode::Unauthorized, ErrorCode::Unauthorized]);
    assert_eq!(lens[0], lens[1], "same size");
    assert_eq!(s.server().cluster_members(&lab_key), 2);
}

#[test]
fn closed_nucleus_refuses_unknown_clusters_and_wrong_secrets_alike() {
    let config = ServerConfig { open_clusters: false, ..ServerConfig::default() };
    let mut s = NSim::new(4, config);
    let lab_key = ClusterSecret::derive::<RustCrypto>(b"lab", b"right").public();
    assert!(s.server().add_cluster(lab_key));
    assert!(!s.server().add_cluster(PublicKey([0; 32])), "low-order key refused");
    let a = s.add_edge("a", "198.51.100.1:51820", ("lab", "right"), [10, 200, 0, 1], lab);
    let w = s.add_edge("w", "198.51.100.2:51820", ("lab", "wrong"), [10, 200, 0, 2], lab);
    let u = s.add_edge("u", "198.51.100.3:51820", ("unknown", "x"), [10, 200, 0, 3], lab);
    s.run_for(10.0);
    assert!(s.registered(a));
    for x in [w, u] {
        assert_ne!(s.edge(x).client.state(), State::Registered);
        let refused: Vec<_> = s
            .edge(x)
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                ClientEvent::Refused { code } => Some(*code),
                _ => None,
            })
            .collect();
        assert!(!refused.is_empty() && refused.iter().all(|c| *c == ErrorCode::Unauthorized), "{refused:?}");
    }
    assert_eq!(s.server().cluster_count(), 1);
    assert!(s.server().stats().unauthorized >= 2);
    // Refused sessions are dropped once they stop trying... but they retry
    // with backoff, so they stay bounded by the pending cap meanwhile.
    assert!(s.server().session_count() <= 3);
}

#[test]
fn vip_theft_is_refused_until_the_holder_leaves() {
    let mut s = NSim::new(5, ServerConfig::default());
    let a = s.add_edge("a", "198.51.100.1:51820", ("lab", "pw"), [10, 200, 0, 1], lab);
    let b = s.add_edge("b", "198.51.100.2:51820", ("lab", "pw"), [10, 200, 0, 2], lab);
    s.run_for(3.0);
    // Another key of the same cluster claims a's VIP.
    let t = s.add_edge("thief", "198.51.100.3:51820", ("lab", "pw"), [10, 200, 0, 1], lab);
    s.run_for(10.0);
    assert!(!s.registered(t));
    assert!(s.edge(t).events.iter().any(|(_, e)| *e == ClientEvent::Refused { code: ErrorCode::VipInUse }));
    assert!(s.server().stats().vip_conflicts >= 1);
    let eb = s.edge(b);
    assert_eq!(eb.node.route(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1))), eb.node.peer_by_key(&s.hosts[a].public));
    assert!(!s.knows(b, t));
    // Once a leaves, the VIP is free: the thief's retry gets it.
    let now = s.now;
    let ea = s.edge_mut(a);
    ea.client.leave(now, &mut ea.node);
    s.drain(a);
    s.run_until_pred(60.0, |s| s.registered(t)).expect("VIP free after the holder left");
    s.run_for(2.0);
    let eb = s.edge(b);
    assert_eq!(eb.node.route(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1))), eb.node.peer_by_key(&s.hosts[t].public));
}

/// An IPv6/UDP packet (the node checks the header, not the checksum).
fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 48 + payload.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..42].copy_from_slice(&4000u16.to_be_bytes());
    p[42..44].copy_from_slice(&4000u16.to_be_bytes());
    p[44..46].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[48..].copy_from_slice(payload);
    p
}

/// The IPv6 packets `to` received from `from`'s VIPs carrying `payload`.
fn received_v6(s: &NSim, to: usize, from: Ipv6Addr, payload: &[u8]) -> usize {
    s.edge(to).inbox.iter().filter(|(_, p)| p.len() >= 48 && p[8..24] == from.octets() && &p[48..] == payload).count()
}

#[test]
fn dual_stack_members_route_both_vips_and_both_are_bound_to_the_key() {
    let mut s = NSim::new(14, ServerConfig::default());
    let v6 = |i: u16| Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, i);
    let dual = |i: u16| move |c: &mut ClientConfig, _: &mut EdgeNode| c.vip2 = Some(IpAddr::V6(v6(i)));
    let a = s.add_edge("a", "198.51.100.1:51820", ("lab", "pw"), [10, 200, 0, 1], dual(1));
    let b = s.add_edge("b", "198.51.100.2:51820", ("lab", "pw"), [10, 200, 0, 2], dual(2));
    // A single-stack member routes both VIPs of the dual-stack ones too.
    let c = s.add_edge("c", "198.51.100.3:51820", ("lab", "pw"), [10, 200, 0, 3], lab);
    s.run_for(3.0);
    for (x, y, i) in [(a, b, 2), (b, a, 1), (c, a, 1), (c, b, 2)] {
        assert!(s.knows(x, y));
        let e = s.edge(x);
        let id = e.node.peer_by_key(&s.hosts[y].public);
        assert_eq!(e.node.route(IpAddr::V6(v6(i))), id, "{x} routes {y}'s IPv6 VIP");
        assert_eq!(e.client.member(&s.hosts[y].public).unwrap().vip2, Some(IpAddr::V6(v6(i))));
    }
    assert_eq!(s.edge(a).client.member(&s.hosts[c].public).unwrap().vip2, None);
    // IPv6 traffic between the IPv6 VIPs, both ways (IPv4 was covered elsewhere).
    for (x, y, from, to) in [(a, b, 1, 2), (b, a, 2, 1)] {
        let p = ipv6_udp(v6(from), v6(to), b"over v6");
        let now = s.now;
        let mut buf = vec![0u8; 4096];
        let src = s.hosts[x].addr;
        let e = s.edge_mut(x);
        let Ok(Sent::Transmit(t)) = e.node.send_ip(now, &p, &mut buf) else { panic!("no session {x} -> {y}") };
        s.emit(src, t.to, buf[..t.len].to_vec());
        s.run_for(0.5);
        assert_eq!(received_v6(&s, y, v6(from), b"over v6"), 1, "{x} -> {y} over IPv6");
    }
    assert!(s.ping(a, b, b"v4 too"));
    s.run_for(0.5);
    assert_eq!(s.received(b, a, b"v4 too"), 1);

    // A thief claiming only a's IPv6 VIP (with a fresh IPv4 one) is refused,
    // and so is one claiming only its IPv4 VIP.
    let t6 = s.add_edge("thief6", "198.51.100.6:51820", ("lab", "pw"), [10, 200, 0, 66], dual(1));
    let t4 = s.add_edge("thief4", "198.51.100.7:51820", ("lab", "pw"), [10, 200, 0, 1], dual(77));
    s.run_for(5.0);
    for t in [t6, t4] {
        assert!(!s.registered(t));
        assert!(s.edge(t).events.iter().any(|(_, e)| *e == ClientEvent::Refused { code: ErrorCode::VipInUse }));
    }
    let eb = s.edge(b);
    assert_eq!(eb.node.route(IpAddr::V6(v6(1))), eb.node.peer_by_key(&s.hosts[a].public));
    assert_eq!(s.server().member_count(), 3);
    // Two VIPs of one family are refused by the codec (the client cannot even send them).
    let r = s.add_raw("odd", "203.0.113.50:5000");
    let ch = raw_hello(&mut s, r);
    let m = Message::Register(wire::Register {
        cluster_key: s.edge(a).cluster.public(),
        challenge: ch,
        proof: [0; 32],
        vip: IpAddr::V4(Ipv4Addr::new(10, 200, 0, 90)),
        vip2: Some(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 91))),
        locals: Default::default(),
    });
    assert_eq!(m.emit(&mut [0u8; 256]), Err(wire::EmitError::Invalid));

    // When a leaves, both of its VIPs are free: the IPv6 thief's retry gets in.
    let now = s.now;
    let ea = s.edge_mut(a);
    ea.client.leave(now, &mut ea.node);
    s.drain(a);
    s.run_until_pred(60.0, |s| s.registered(t6) && s.registered(t4)).expect("both VIPs free after the holder left");
    s.run_for(2.0);
    let eb = s.edge(b);
    assert_eq!(eb.node.route(IpAddr::V6(v6(1))), eb.node.peer_by_key(&s.hosts[t6].public));
    assert_eq!(eb.node.route(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1))), eb.node.peer_by_key(&s.hosts[t4].public));
}

#[test]
fn replayed_datagrams_and_proofs_are_useless() {
    let mut s = NSim::new(6, ServerConfig::default());
    s.capture = true;
    let a = s.add_edge("a", "198.51.100.1:51820", ("lab", "pw"), [10, 200, 0, 1], lab);
    let b = s.add_edge("b", "198.51.100.2:51820", ("lab", "pw"), [10, 200, 0, 2], lab);
    s.run_for(3.0);
    s.capture = false;
    let from_a: Vec<Datagram> =
        s.captured.iter().filter(|d| d.from == s.hosts[a].addr && d.to == addr(NUCLEUS_ADDR)).cloned().collect();
    assert!(from_a.len() >= 3, "initiation, hello, register, ...");
    let before = s.server().stats();
    // Replayed as is, and from an attacker's address.
    for d in &from_a {
        s.inject(d.from, d.to, d.data.clone());
        s.inject(addr("203.0.113.66:6666"), d.to, d.data.clone());
    }
    s.run_for(2.0);
    let after = s.server().stats();
    assert_eq!(after.registrations, before.registrations, "no registration from replays");
    assert_eq!(after.messages, before.messages, "no replayed signaling message was accepted");
    assert_eq!(after.dropped - before.dropped, 2 * from_a.len() as u64, "every replay dropped by the node");
    assert_eq!(s.server().member_count(), 2);
    // a's membership and endpoint were not disturbed (no roaming on replays).
    let (ka, kb) = (s.hosts[a].public, s.hosts[b].public);
    let eb = s.edge(b);
    assert_eq!(eb.node.peer_stats(eb.node.peer_by_key(&ka).unwrap()).unwrap().endpoint, Some(s.hosts[a].addr));
    s.run_for(20.0);
    assert!(s.registered(a) && s.registered(b) && s.knows(b, a));

    // After a leaves, a replay of its handshake opens at most a session
    // that never becomes a member.
    let now = s.now;
    let ea = s.edge_mut(a);
    ea.client.leave(now, &mut ea.node);
    s.drain(a);
    s.run_for(2.0);
    for d in &from_a {
        s.inject(d.from, d.to, d.data.clone());
    }
    s.run_for(2.0);
    assert_eq!(s.server().member_count(), 1);
    assert!(!s.knows(b, a));
    s.run_for(40.0);
    assert_eq!(s.server().session_count(), 1, "the replayed session expired");

    // A proof made for another key (say, leaked from a member's log) does
    // not work in the attacker's session, even with the challenge it was made for.
    let r = s.add_raw("mallory", "203.0.113.66:6666");
    let ch = raw_hello(&mut s, r);
    let eb = s.edge(b);
    let nucleus = s.nucleus_key;
    let auth = eb.cluster.auth_key::<RustCrypto>(&nucleus).unwrap();
    let vip = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 9));
    let proof_for_b = auth.proof(&kb, &nucleus, &eb.cluster.public(), &ch, vip, None);
    let reg = |proof, challenge| {
        Message::Register(wire::Register {
            cluster_key: eb.cluster.public(),
            challenge,
            proof,
            vip,
            vip2: None,
            locals: Default::default(),
        })
    };
    let m1 = reg(proof_for_b, ch);
    let since = s.now;
    s.raw_msg(r, &m1);
    s.run_for(1.0);
    assert_eq!(errors(&s.raw_got(r, since)), vec![ErrorCode::Unauthorized]);
    // A correct proof for its own key but over a spent challenge.
    let own = s.hosts[r].public;
    let eb = s.edge(b);
    let m2 = Message::Register(wire::Register {
        cluster_key: eb.cluster.public(),
        challenge: ch,
        proof: auth.proof(&own, &nucleus, &eb.cluster.public(), &ch, vip, None),
        vip,
        vip2: None,
        locals: Default::default(),
    });
    let since = s.now;
    s.raw_msg(r, &m2);
    s.run_for(1.0);
    assert_eq!(errors(&s.raw_got(r, since)), vec![ErrorCode::ChallengeExpired]);
    assert_eq!(s.server().member_count(), 1);
}

#[test]
fn malformed_oversize_and_floods_are_counted_and_the_server_keeps_serving() {
    let mut s = NSim::new(7, ServerConfig::default());
    let a = s.add_edge("a", "198.51.100.1:51820", ("lab", "pw"), [10, 200, 0, 1], lab);
    let r = s.add_raw("fuzzer", "203.0.113.7:7777");
    raw_hello(&mut s, r);
    let before = s.server().stats();
    let mut big = vec![1u8, wire::msg_type::REGISTER];
    big.extend_from_slice(&(1400u16).to_le_bytes());
    big.extend(std::iter::repeat(0xaa).take(1400));
    let mut relay_big = vec![1u8, wire::msg_type::RELAY_DATA];
    relay_big.extend_from_slice(&(1700u16).to_le_bytes());
    relay_big.extend(std::iter::repeat(0x04).take(1700));
    let bad: Vec<Vec<u8>> = vec![
        vec![9, 1, 0, 0],                                                 // bad version
        vec![1, 0x42, 0, 0],                                              // unknown type
        vec![1, 1, 5, 0],                                                 // truncated
        vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], // non-zero padding
        vec![1, wire::msg_type::REGISTER_OK, 0, 0],                       // wrong direction (and truncated)
        big,
        relay_big,
    ];
    for p in &bad {
        s.raw_send(r, p);
    }
    // A server-to-edge message, well formed, sent by an edge.
    s.raw_msg(r, &Message::Error(wire::ErrorReply { code: ErrorCode::Capacity, challenge: [0; 16] }));
    // Garbage on the socket that is not even WireGuard.
    s.inject(addr("203.0.113.8:1"), addr(NUCLEUS_ADDR), vec![0xff; 3000]);
    s.inject(addr("203.0.113.8:1"), addr(NUCLEUS_ADDR), vec![1, 0, 0, 0]);
    s.run_for(1.0);
    let after = s.server().stats();
    assert_eq!(after.malformed - before.malformed, bad.len() as u64 + 1, "{after:?}");
    assert!(after.dropped >= before.dropped + 2);

    // A flood of requests from one source is rate-limited...
    let since = s.now;
    for _ in 0..500 {
        s.raw_msg(r, &Message::Hello);
    }
    s.run_for(1.0);
    let answered = s.raw_got(r, since).len();
    let st = s.server().stats();
    assert!(answered <= 250 && st.rate_limited >= 250, "{answered} answered, {st:?}");
    // ...and so are new sessions from one address.
    let mut refused_before = st.sessions_refused;
    for i in 0..60 {
        let x = s.add_raw(&format!("sybil{i}"), &format!("203.0.113.9:{}", 1000 + i));
        s.raw_msg(x, &Message::Hello);
    }
    s.run_for(1.0);
    let st = s.server().stats();
    assert!(st.sessions_refused > refused_before, "{st:?}");
    refused_before = st.sessions_refused;
    let _ = refused_before;

    // The server still serves members and newcomers.
    let b = s.add_edge("b", "198.51.100.2:51820", ("lab", "pw"), [10, 200, 0, 2], lab);
    s.run_for(20.0);
    assert!(s.registered(a) && s.registered(b) && s.knows(a, b) && s.knows(b, a));
}

/// New sessions: the node opens an initiation from an unknown key once and
/// the server admits it (limits first); a refused one leaves no peer behind.
#[test]
fn admitted_sessions_work_and_refused_initiations_leave_no_peer() {
    let mut s = NSim::new(8, ServerConfig { max_pending: 2, ..ServerConfig::default() });
    let (r1, r2) = (s.add_raw("r1", "203.0.113.1:1000"), s.add_raw("r2", "203.0.113.2:1000"));
    // Admitted: each gets a session and its Hello answered with a challenge.
    raw_hello(&mut s, r1);
    raw_hello(&mut s, r2);
    let st = s.server().stats();
    let counts = |s: &NSim| (s.server_ref().session_count(), s.server_ref().node().peer_count());
    assert_eq!((st.sessions_opened, counts(&s)), (2, (2, 2)), "{st:?}");
    for r in [r1, r2] {
        assert!(s.server_ref().node().peer_by_key(&s.hosts[r].public).is_some());
    }
    // Refused by the cap on sessions that are not members: no answer, no peer.
    let r3 = s.add_raw("r3", "203.0.113.3:1000");
    let since = s.now;
    s.raw_msg(r3, &Message::Hello);
    s.run_for(1.0);
    let st3 = s.server().stats();
    assert!(st3.sessions_refused > st.sessions_refused, "{st3:?}");
    assert!(s.raw_got(r3, since).is_empty());
    assert_eq!(s.server_ref().node().peer_by_key(&s.hosts[r3].public), None);
    assert_eq!(counts(&s), (2, 2));

    // Refused by the per-source limit on new sessions (1/s, burst 2): the
    // newcomers beyond it leave nothing behind either.
    let mut s = NSim::new(9, ServerConfig { new_session_rate: 1, ..ServerConfig::default() });
    let raws: Vec<usize> = (0..5).map(|i| s.add_raw(&format!("x{i}"), &format!("203.0.113.9:{}", 1000 + i))).collect();
    for &r in &raws {
        s.raw_msg(r, &Message::Hello);
    }
    s.run_for(1.0);
    let st = s.server().stats();
    let admitted: Vec<usize> =
        raws.iter().copied().filter(|&r| s.server_ref().node().peer_by_key(&s.hosts[r].public).is_some()).collect();
    assert!(st.sessions_refused >= 1 && !admitted.is_empty() && admitted.len() < raws.len(), "{st:?}");
    assert_eq!(counts(&s), (admitted.len(), admitted.len()));
    assert_eq!(st.sessions_opened, admitted.len() as u64);
    for &r in &raws {
        let answered = !s.raw_got(r, Instant::ZERO).is_empty();
        assert_eq!(answered, admitted.contains(&r), "{}", s.hosts[r].name);
    }
}

#[test]
fn nucleus_restart_re_registers_without_tearing_down_the_mesh() {
    let mut s = NSim::new(8, ServerConfig::default());
    let a = s.add_edge("a", "198.51.100.1:51820", ("lab", "pw"), [10, 200, 0, 1], lab);
    let b = s.add_edge("b", "198.51.100.2:51820", ("lab", "pw"), [10, 200, 0, 2], lab);
    let c = s.add_edge("c", "198.51.100.3:51820", ("lab", "pw"), [10, 200, 0, 3], lab);
    s.run_for(5.0);
    // The Nucleus process restarts with the same key and empty tables.
    let server = s.make_server(ServerConfig::default(), 1);
    s.hosts[0].host = Host::Nucleus(server);
    let restarted = s.now;
    s.run_for(5.0);
    assert!(s.ping(a, c, b"during restart"));
    s.run_for(1.0);
    assert_eq!(s.received(c, a, b"during restart"), 1, "the mesh does not need the Nucleus");
    let t = s
        .run_until_pred(60.0, |s| [a, b, c].iter().all(|&x| s.registered(x)) && s.server_ref().member_count() == 3)
        .expect("re-registration");
    println!("all re-registered {:.1}s after the restart", t.saturating_duration_since(restarted).as_secs_f64());
    for &x in &[a, b, c] {
        assert!(s.edge(x).events.iter().any(|(_, e)| *e == ClientEvent::NucleusLost));
        assert!(
            !s.edge(x).events.iter().any(|(_, e)| matches!(e, ClientEvent::PeerRemoved { .. })),
            "{}: peers torn down by the restart",
            s.hosts[x].name
        );
    }
    // The mesh kept working all along, and still does.
    assert!(s.ping(a, c, b"after restart"));
    s.run_for(1.0);
    assert_eq!(s.received(c, a, b"after restart"), 1);
    s.run_for(130.0);
    assert!([a, b, c].iter().all(|&x| [a, b, c].iter().all(|&y| x == y || s.knows(x, y))));
}

#[test]
fn deterministic() {
    let run = |seed| {
        let mut s = NSim::new(seed, ServerConfig::default());
        let a = s.add_edge("a", "198.51.100.1:51820", ("lab", "pw"), [10, 200, 0, 1], lab);
        let b = s.add_edge("b", "198.51.100.2:51820", ("lab", "pw"), [10, 200, 0, 2], lab);
        s.default_link = Link::lossy(10, 40, 0.1, 0.05);
        s.run_for(30.0);
        (s.server().stats(), s.edge(a).events.len(), s.edge(b).events.len(), kind(&[4, 0, 0, 0]))
    };
    assert_eq!(run(11), run(11));
}

#[test]
fn node_reports_control_payloads_apart_from_ip_packets() {
    use omni_core::node::{RecvError, IN_PLACE_OFFSET};
    let mut rng = ChaCha20Rng::seed_from_u64(77);
    let (ka, kn) = (StaticSecret::random(&mut rng), StaticSecret::random(&mut rng));
    let (pa, pn) = (ka.public_key::<RustCrypto>(), kn.public_key::<RustCrypto>());
    let cfg = |k| NodeConfig { private_key: Some(k), ..NodeConfig::default() };
    let mut a = EdgeNode::new(cfg(ka), ChaCha20Rng::seed_from_u64(1));
    let mut n = EdgeNode::new(cfg(kn), ChaCha20Rng::seed_from_u64(2));
    let (addr_a, addr_n) = (addr("198.51.100.1:1"), addr(NUCLEUS_ADDR));
    let now = Instant::from_secs(1);
    let na = a.add_peer(now, PeerConfig { endpoint: Some(addr_n), ..PeerConfig::new(pn) }).unwrap();
    let an = n.add_peer(now, PeerConfig::new(pa)).unwrap();
    assert!(a.set_control_peer(na, true) && a.is_control_peer(na) && !n.is_control_peer(an));
    assert!(!a.set_control_peer(PeerId(99), true));
    // Handshake.
    let mut out = vec![0u8; 2048];
    let mut out2 = vec![0u8; 2048];
    a.initiate(now, na);
    let t = a.poll_transmit(now, &mut out).unwrap().unwrap();
    let Ok(Received::Reply { len }) = n.handle_datagram(now, addr_a, &out[..t.len], &mut out2) else { panic!() };
    assert_eq!(a.handle_datagram(now, addr_n, &out2[..len], &mut out), Ok(Received::Done));
    let t = a.poll_transmit(now, &mut out).unwrap().unwrap();
    assert_eq!(n.handle_datagram(now, addr_a, &out[..t.len], &mut out2), Ok(Received::Done));

    let seal = |n: &mut EdgeNode, payload: &[u8]| {
        let mut o = vec![0u8; 2048];
        let Ok(Sent::Transmit(t)) = n.send_to_peer(now, an, payload, &mut o) else { panic!() };
        o.truncate(t.len);
        o
    };
    let signal = [1u8, 1, 0, 0, 0xaa];
    // The IP-only call refuses it (authenticated, but not for the TUN device).
    let d = seal(&mut n, &signal);
    assert_eq!(a.handle_datagram(now, addr_n, &d, &mut out), Err(RecvError::ControlPayload { peer: na }));
    // The control-aware call hands it over, padding included.
    let d = seal(&mut n, &signal);
    let Ok(Incoming::Control { peer, len }) = a.handle_datagram_with_control(now, addr_n, &d, &mut out) else {
        panic!()
    };
    assert_eq!((peer, len), (na, 16));
    assert_eq!(&out[..5], &signal);
    assert!(out[5..16].iter().all(|&b| b == 0));
    // In place.
    let mut buf = seal(&mut n, &signal);
    let Ok(Incoming::Control { len, .. }) = a.handle_datagram_in_place_with_control(now, addr_n, &mut buf) else {
        panic!()
    };
    assert_eq!(&buf[IN_PLACE_OFFSET..IN_PLACE_OFFSET + 5], &signal);
    assert_eq!(len, 16);
    let mut buf = seal(&mut n, &signal);
    assert_eq!(a.handle_datagram_in_place(now, addr_n, &mut buf), Err(RecvError::ControlPayload { peer: na }));
    // Even an IP packet from a control peer is signaling, never routed.
    let ip = ipv4_udp(Ipv4Addr::new(10, 9, 9, 9), Ipv4Addr::new(10, 0, 0, 1), b"x");
    let d = seal(&mut n, &ip);
    assert!(matches!(a.handle_datagram_with_control(now, addr_n, &d, &mut out), Ok(Incoming::Control { .. })));
    // Keepalives stay keepalives.
    let d = seal(&mut n, &[]);
    assert_eq!(a.handle_datagram_with_control(now, addr_n, &d, &mut out), Ok(Incoming::Received(Received::Done)));
    // Unmarked again: back to IP semantics.
    a.set_control_peer(na, false);
    let d = seal(&mut n, &signal);
    assert_eq!(a.handle_datagram_with_control(now, addr_n, &d, &mut out), Err(RecvError::NotIp));
}

#[test]
fn converges_on_a_lossy_reordering_duplicating_network() {
    for seed in [21, 22, 23] {
        let mut s = NSim::new(seed, ServerConfig::default());
        s.default_link = Link::lossy(10, 80, 0.15, 0.1);
        let mut edges = Vec::new();
        for i in 0..6u8 {
            edges.push(s.add_edge(
                &format!("e{i}"),
                &format!("198.51.100.{}:51820", i + 1),
                ("lab", "pw"),
                [10, 200, 0, i + 1],
                lab,
            ));
            s.run_for(0.3);
        }
        let mesh = |s: &NSim, set: &[usize]| {
            set.iter().all(|&x| s.registered(x) && set.iter().all(|&y| x == y || s.knows(x, y)))
        };
        let t = s.run_until_pred(90.0, |s| mesh(s, &edges)).unwrap_or_else(|| {
            for &e in &edges {
                let c = &s.edge(e).client;
                eprintln!("{}: {:?} members {} v{}", s.hosts[e].name, c.state(), c.members().len(), c.list_version());
            }
            panic!("seed {seed}: no convergence")
        });
        // A leave and a join under loss: converged within a heartbeat interval or two.
        let now = s.now;
        let gone = edges.remove(2);
        let e = s.edge_mut(gone);
        e.client.leave(now, &mut e.node);
        s.drain(gone);
        edges.push(s.add_edge("late", "198.51.100.99:51820", ("lab", "pw"), [10, 200, 0, 99], lab));
        let t2 = s
            .run_until_pred(60.0, |s| {
                mesh(s, &edges) && edges.iter().all(|&x| s.edge(x).node.peer_by_key(&s.hosts[gone].public).is_none())
            })
            .unwrap_or_else(|| panic!("seed {seed}: leave/join did not converge"));
        println!(
            "seed {seed}: mesh at {}, leave+join converged in {:.1}s",
            fmt_t(t),
            t2.saturating_duration_since(now).as_secs_f64()
        );
        // From the joiner's registration to everyone knowing it (a lost
        // delta is resent by the Nucleus after 1 s without an ack).
        let late = *edges.last().unwrap();
        let late_key = s.hosts[late].public;
        let registered_at = s
            .server_events
            .iter()
            .find(|(_, e)| matches!(e, ServerEvent::MemberJoined { key, .. } if *key == late_key))
            .unwrap()
            .0;
        let known_at = edges
            .iter()
            .filter(|&&x| x != late)
            .map(|&x| {
                s.edge(x)
                    .events
                    .iter()
                    .find(|(_, e)| matches!(e, ClientEvent::PeerAdded { key, .. } if *key == late_key))
                    .unwrap()
                    .0
            })
            .max()
            .unwrap();
        let took = known_at.saturating_duration_since(registered_at);
        println!("seed {seed}: join reached every member {:.3}s after the Nucleus admitted it", took.as_secs_f64());
        assert!(took <= Duration::from_secs(4), "{took:?}");
        // Everyone agrees on the list version.
        let v = s.edge(edges[0]).client.list_version();
        s.run_for(10.0);
        let versions: Vec<_> = edges.iter().map(|&x| format!("{:?}", s.edge(x).client)).collect();
        assert!(
            edges.iter().all(|&x| s.edge(x).client.list_version() == s.edge(edges[0]).client.list_version()),
            "v{v} {versions:#?}"
        );
    }
}
