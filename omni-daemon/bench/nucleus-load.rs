//! Load generator for the Nucleus (a benchmark, not a test): many simulated
//! edges against one real `omni-daemon --mode nucleus` on loopback. Run it
//! through `bench/nucleus-load.sh`, which starts the Nucleus and passes its
//! key and PID.
//!
//! Every simulated edge is a real WireGuard node (omni-core, fixed storage,
//! one peer: the Nucleus as a control peer) with its own static key: it does
//! a real handshake, then `Hello`, `Register` with a real membership proof
//! (clusters of `--cluster-size` members, each cluster with its own name and
//! secret), acknowledges the peer lists the Nucleus pushes, and heartbeats.
//!
//! The Nucleus keeps its production limits (per-source rate limits, session
//! caps): the edges are spread over `--sources` UDP sockets, each bound to
//! its own loopback address (127.x.y.z: all of 127/8 is loopback on Linux),
//! so each source stays under the per-source limits as a real deployment's
//! would; nothing in the Nucleus is switched off for the benchmark.
//!
//! Phases: (1) register `--nodes` edges, at most `--register-window` in
//! flight; (2) for `--seconds`, keep `--window` heartbeats in flight (closed
//! loop: as fast as the Nucleus answers), each from a different edge, and
//! record each reply's latency. Registered edges idle for 20 s heartbeat in
//! both phases (members must, or they expire). With `--nucleus-pid`, the
//! Nucleus's RSS is read from /proc before and after registration, and its
//! CPU time over the heartbeat phase.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant as StdInstant};

use anyhow::{bail, Context};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use omni_core::crypto::DefaultProvider;
use omni_core::node::{Received, Sent};
use omni_core::nucleus::cluster::AuthKey;
use omni_core::nucleus::wire::{self, ErrorCode, Heartbeat, ListAck, Message, Register};
use omni_core::nucleus::ClusterSecret;
use omni_core::storage::Fixed;
use omni_core::{Incoming, Instant, Node, NodeConfig, PeerConfig, PeerId, PublicKey, StaticSecret, WallTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// One peer (the Nucleus), one route slot, four receiver indexes.
type EdgeNode = Node<DefaultProvider, ChaCha20Rng, Fixed<1, 1, 4, 1>>;

/// A registered edge heartbeats at least this often, as `NucleusClient`
/// does (the Nucleus's default heartbeat interval; members silent for 60 s
/// expire).
const KEEPALIVE: Duration = Duration::from_secs(15);
/// A registration step unanswered this long is retried.
const STEP_RETRY: Duration = Duration::from_secs(5);
/// A heartbeat unanswered this long is lost (resent; after [`MAX_LOST`] in a
/// row the edge registers again, as `NucleusClient` does).
const HB_LOST: Duration = Duration::from_secs(5);
/// Registration retries (and re-registrations) per pass over the edges, so
/// a burst of losses does not become a storm of handshakes (the client
/// backs off exponentially for the same reason).
const RETRIES_PER_PASS: usize = 128;
const MAX_LOST: u8 = 3;

struct Args {
    nucleus: SocketAddr,
    key: PublicKey,
    nodes: usize,
    seconds: f64,
    cluster_size: usize,
    sources: usize,
    window: usize,
    register_window: usize,
    pid: Option<u32>,
}

fn usage() -> ! {
    eprintln!(
        "usage: nucleus-load --nucleus ADDR:PORT --key B64 [--nodes N] [--seconds S] [--cluster-size N]\n\
         \x20                   [--sources N] [--window N] [--register-window N] [--nucleus-pid PID]"
    );
    std::process::exit(2)
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        nucleus: "127.0.0.1:51820".parse()?,
        key: PublicKey([0; 32]),
        nodes: 100_000,
        seconds: 20.0,
        cluster_size: 10,
        sources: 4096,
        window: 128,
        register_window: 256,
        pid: None,
    };
    let mut have_key = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(v) = it.next() else { usage() };
        let num = |v: &str| v.parse::<usize>().with_context(|| format!("{flag} {v:?}: not a number"));
        match flag.as_str() {
            "--nucleus" => a.nucleus = v.parse().with_context(|| format!("--nucleus {v:?}"))?,
            "--key" => {
                a.key = PublicKey::from_base64(v.trim()).map_err(|e| anyhow::anyhow!("--key {v:?}: {e:?}"))?;
                have_key = true;
            }
            "--nodes" => a.nodes = num(&v)?,
            "--seconds" => a.seconds = v.parse().with_context(|| format!("--seconds {v:?}"))?,
            "--cluster-size" => a.cluster_size = num(&v)?,
            "--sources" => a.sources = num(&v)?,
            "--window" => a.window = num(&v)?,
            "--register-window" => a.register_window = num(&v)?,
            "--nucleus-pid" => a.pid = Some(v.parse().with_context(|| format!("--nucleus-pid {v:?}"))?),
            _ => usage(),
        }
    }
    if !have_key {
        bail!("--key (the Nucleus's public key) is required");
    }
    if a.nodes == 0 || a.cluster_size == 0 || a.sources == 0 || a.window == 0 || a.register_window == 0 {
        bail!("--nodes, --cluster-size, --sources, --window and --register-window must be at least 1");
    }
    if a.sources > 65_536 {
        bail!("--sources: at most 65536 (one loopback address each)");
    }
    if !(a.seconds > 0.0 && a.seconds <= 3600.0) {
        bail!("--seconds: between 0 and 3600");
    }
    if a.cluster_size > 60_000 {
        bail!("--cluster-size: at most 60000 (VIPs are 10.0.x.y)");
    }
    Ok(a)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    NotStarted,
    Handshake,
    Hello,
    Register,
    Registered,
}

struct Edge {
    node: EdgeNode,
    nucleus: PeerId,
    public: PublicKey,
    cluster: u32,
    vip: IpAddr,
    step: Step,
    step_at: StdInstant,
    list_version: u32,
    /// When the heartbeat in flight was sent (one at a time per edge).
    hb_sent: Option<StdInstant>,
    last_hb: StdInstant,
    /// Heartbeats lost in a row.
    lost: u8,
    source: u32,
}

struct Cluster {
    public: PublicKey,
    auth: AuthKey,
}

#[derive(Default)]
struct Counters {
    registered: usize,
    handshakes: usize,
    retries: usize,
    refused: HashMap<String, usize>,
    hb_sent: u64,
    hb_acked: u64,
    lists: u64,
    datagrams_in: u64,
    datagrams_out: u64,
    send_errors: u64,
    unknown_index: u64,
    hb_lost: u64,
    reregistered: u64,
}

struct Gen {
    args: Args,
    edges: Vec<Edge>,
    clusters: Vec<Option<Cluster>>,
    sockets: Vec<UdpSocket>,
    /// Our receiver index -> edge.
    index: HashMap<u32, u32>,
    start: StdInstant,
    c: Counters,
    out: Vec<u8>,
    buf: Vec<u8>,
    /// Latencies (µs) of heartbeat replies in the measured phase.
    lat: Vec<u32>,
    measuring: bool,
    in_flight_hb: usize,
    inflight_reg: usize,
}

fn now_of(start: StdInstant) -> Instant {
    Instant::from_nanos(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

impl Gen {
    fn now(&self) -> Instant {
        now_of(self.start)
    }

    fn cluster(&mut self, i: u32) -> anyhow::Result<(PublicKey, &AuthKey)> {
        let slot = self.clusters.get_mut(i as usize).context("cluster index")?;
        if slot.is_none() {
            let name = format!("load-{i}");
            let secret = format!("secret-{i}-of-the-load-generator");
            let cs = ClusterSecret::derive::<DefaultProvider>(name.as_bytes(), secret.as_bytes());
            let auth = cs.auth_key::<DefaultProvider>(&self.args.key).context("low-order Nucleus key")?;
            *slot = Some(Cluster { public: cs.public(), auth });
        }
        let c = slot.as_ref().context("cluster")?;
        Ok((c.public, &c.auth))
    }

    fn send_raw(&mut self, e: usize, len: usize, to: SocketAddr) {
        let src = self.edges[e].source as usize;
        match self.sockets[src].send_to(&self.out[..len], to) {
            Ok(_) => self.c.datagrams_out += 1,
            Err(_) => self.c.send_errors += 1,
        }
    }

    /// Sends whatever the edge's node has queued (handshakes, staged data).
    fn flush(&mut self, e: usize) {
        let now = self.now();
        loop {
            let r = self.edges[e].node.poll_transmit(now, &mut self.out);
            match r {
                Ok(Some(t)) => {
                    if self.out[0] == 1 {
                        // An initiation: its sender index is where replies come back.
                        let idx = u32::from_le_bytes(self.out[4..8].try_into().unwrap_or([0; 4]));
                        self.index.insert(idx, e as u32);
                        self.c.handshakes += 1;
                    }
                    self.send_raw(e, t.len, t.to);
                }
                _ => break,
            }
        }
    }

    fn signal(&mut self, e: usize, m: &Message<'_>) {
        let mut msg = [0u8; 512];
        let Ok(n) = m.emit(&mut msg) else { return };
        let now = self.now();
        let edge = &mut self.edges[e];
        let peer = edge.nucleus;
        match edge.node.send_to_peer(now, peer, &msg[..n], &mut self.out) {
            Ok(Sent::Transmit(t)) => self.send_raw(e, t.len, t.to),
            Ok(Sent::Queued { .. }) => {}
            Err(_) => self.c.send_errors += 1,
        }
        self.flush(e);
    }

    fn start_edge(&mut self, e: usize) {
        let now = self.now();
        let edge = &mut self.edges[e];
        edge.node.initiate(now, edge.nucleus);
        edge.step = Step::Handshake;
        edge.step_at = StdInstant::now();
        self.flush(e);
    }

    fn register(&mut self, e: usize, challenge: [u8; 16]) -> anyhow::Result<()> {
        let (cluster, public, vip) = {
            let edge = &self.edges[e];
            (edge.cluster, edge.public, edge.vip)
        };
        let nucleus_key = self.args.key;
        let (cluster_key, auth) = self.cluster(cluster)?;
        let proof = auth.proof(&public, &nucleus_key, &cluster_key, &challenge, vip, None);
        let m =
            Message::Register(Register { cluster_key, challenge, proof, vip, vip2: None, locals: Default::default() });
        self.edges[e].step = Step::Register;
        self.edges[e].step_at = StdInstant::now();
        self.signal(e, &m);
        Ok(())
    }

    fn heartbeat(&mut self, e: usize) {
        let v = self.edges[e].list_version;
        let t = StdInstant::now();
        self.edges[e].hb_sent = Some(t);
        self.edges[e].last_hb = t;
        self.in_flight_hb += 1;
        self.c.hb_sent += 1;
        self.signal(e, &Message::Heartbeat(Heartbeat { list_version: v }));
    }

    fn datagram(&mut self, from: SocketAddr, len: usize) -> anyhow::Result<()> {
        self.c.datagrams_in += 1;
        let d = &self.buf[..len];
        let idx_at = match d.first() {
            Some(2) => 8,
            Some(3) | Some(4) => 4,
            _ => return Ok(()),
        };
        let Some(idx) = d.get(idx_at..idx_at + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4]))) else {
            return Ok(());
        };
        let Some(&e) = self.index.get(&idx) else {
            self.c.unknown_index += 1;
            return Ok(());
        };
        let e = e as usize;
        let now = self.now();
        let r = self.edges[e].node.handle_datagram_with_control(now, from, &self.buf[..len], &mut self.out);
        match r {
            Ok(Incoming::Received(Received::Reply { len })) => self.send_raw(e, len, from),
            Ok(Incoming::Received(_)) => {
                if self.edges[e].step == Step::Handshake
                    && self.edges[e].node.peer_stats(self.edges[e].nucleus).is_some_and(|s| s.has_session)
                {
                    self.edges[e].step = Step::Hello;
                    self.edges[e].step_at = StdInstant::now();
                    self.signal(e, &Message::Hello);
                }
            }
            Ok(Incoming::Control { len, .. }) => {
                let payload: Vec<u8> = self.out[..len].to_vec();
                self.control(e, &payload)?;
            }
            Err(_) => {}
        }
        self.flush(e);
        Ok(())
    }

    fn control(&mut self, e: usize, payload: &[u8]) -> anyhow::Result<()> {
        let Ok(m) = wire::parse(payload) else { return Ok(()) };
        match m {
            Message::Challenge(c) => {
                if matches!(self.edges[e].step, Step::Hello | Step::Register) {
                    self.register(e, c.challenge)?;
                }
            }
            Message::RegisterOk(_) if self.edges[e].step != Step::Registered => {
                self.edges[e].step = Step::Registered;
                self.edges[e].last_hb = StdInstant::now();
                self.c.registered += 1;
                self.inflight_reg = self.inflight_reg.saturating_sub(1);
            }
            Message::PeerList(l) => {
                self.c.lists += 1;
                self.edges[e].list_version = l.version;
                self.signal(e, &Message::ListAck(ListAck { version: l.version }));
            }
            Message::HeartbeatAck(a) => {
                if let Some(t) = self.edges[e].hb_sent.take() {
                    self.edges[e].lost = 0;
                    self.in_flight_hb = self.in_flight_hb.saturating_sub(1);
                    self.c.hb_acked += 1;
                    if self.measuring {
                        self.lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                    }
                }
                if a.list_version != self.edges[e].list_version && a.list_version != 0 {
                    self.signal(e, &Message::PeerListRequest);
                }
            }
            Message::Error(err) => {
                *self.c.refused.entry(format!("{:?}", err.code)).or_default() += 1;
                match err.code {
                    ErrorCode::ChallengeExpired if self.edges[e].step == Step::Register => {
                        self.register(e, err.challenge)?;
                    }
                    ErrorCode::NotRegistered if self.edges[e].hb_sent.take().is_some() => {
                        self.in_flight_hb = self.in_flight_hb.saturating_sub(1);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Retries registration steps that went unanswered.
    fn retry_stuck(&mut self, upto: usize) {
        let t = StdInstant::now();
        let mut budget = RETRIES_PER_PASS;
        for e in 0..upto {
            if budget == 0 {
                break;
            }
            let edge = &self.edges[e];
            if matches!(edge.step, Step::NotStarted | Step::Registered) || t.duration_since(edge.step_at) < STEP_RETRY {
                continue;
            }
            self.c.retries += 1;
            budget -= 1;
            match edge.step {
                Step::Handshake => {
                    let now = self.now();
                    let edge = &mut self.edges[e];
                    edge.node.initiate_now(now, edge.nucleus);
                    edge.step_at = t;
                    self.flush(e);
                }
                _ => {
                    self.edges[e].step = Step::Hello;
                    self.edges[e].step_at = t;
                    self.signal(e, &Message::Hello);
                }
            }
        }
    }

    fn poll(&mut self, epoll: &Epoll, events: &mut [EpollEvent], timeout_ms: u8) -> anyhow::Result<()> {
        let n = epoll.wait(events, timeout_ms).context("epoll_wait")?;
        for ev in &events[..n] {
            let s = ev.data() as usize;
            for _ in 0..64 {
                match self.sockets[s].recv_from(&mut self.buf) {
                    Ok((len, from)) => self.datagram(from, len)?,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        Ok(())
    }
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // /proc counts in USER_HZ, which is 100 on Linux.
    Some(ticks as f64 / 100.0)
}

fn own_cpu_secs() -> f64 {
    cpu_secs(std::process::id()).unwrap_or(0.0)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let t0 = StdInstant::now();
    println!(
        "nucleus-load: {} nodes in clusters of {}, {} sources (127.x.y.z), heartbeat window {}, {} s measured",
        args.nodes, args.cluster_size, args.sources, args.window, args.seconds
    );

    // Sources: 127.1.0.1, 127.1.0.2, ... one socket each.
    let epoll = Epoll::new(EpollCreateFlags::empty()).context("epoll")?;
    let mut sockets = Vec::with_capacity(args.sources);
    for i in 0..args.sources {
        let n = (i + 1) as u32;
        let ip = Ipv4Addr::new(127, 1 + (n >> 16) as u8, (n >> 8) as u8, n as u8);
        let s = UdpSocket::bind((ip, 0))
            .with_context(|| format!("binding {ip}:0 (source {i}; raise `ulimit -n` for many sources)"))?;
        s.set_nonblocking(true)?;
        epoll.add(s.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, i as u64)).context("epoll add")?;
        sockets.push(s);
    }

    // Edges: keys, nodes, cluster and VIP assignment.
    let mut key_rng = ChaCha20Rng::seed_from_u64(0x6c6f_6164);
    let start = StdInstant::now();
    let wall = WallTime::now_system();
    let clusters = args.nodes.div_ceil(args.cluster_size);
    let mut edges = Vec::with_capacity(args.nodes);
    for i in 0..args.nodes {
        let secret = StaticSecret::random(&mut key_rng);
        let public = secret.public_key::<DefaultProvider>();
        let mut node = EdgeNode::new(
            NodeConfig { private_key: Some(secret), ..NodeConfig::default() },
            ChaCha20Rng::seed_from_u64(i as u64),
        );
        node.set_wall_time(now_of(start), wall);
        let nucleus = node
            .add_peer(now_of(start), PeerConfig { endpoint: Some(args.nucleus), ..PeerConfig::new(args.key) })
            .map_err(|e| anyhow::anyhow!("add_peer: {e:?}"))?;
        node.set_control_peer(nucleus, true);
        let m = (i % args.cluster_size) as u32 + 1;
        edges.push(Edge {
            node,
            nucleus,
            public,
            cluster: (i / args.cluster_size) as u32,
            vip: IpAddr::V4(Ipv4Addr::new(10, 0, (m >> 8) as u8, m as u8)),
            step: Step::NotStarted,
            step_at: start,
            list_version: 0,
            hb_sent: None,
            last_hb: start,
            lost: 0,
            source: (i % args.sources) as u32,
        });
    }
    println!("created {} edge nodes in {:.1} s", args.nodes, t0.elapsed().as_secs_f64());

    let mut g = Gen {
        clusters: (0..clusters).map(|_| None).collect(),
        edges,
        sockets,
        index: HashMap::with_capacity(args.nodes * 2),
        start,
        c: Counters::default(),
        out: vec![0u8; 2048],
        buf: vec![0u8; 4096],
        lat: Vec::new(),
        measuring: false,
        in_flight_hb: 0,
        inflight_reg: 0,
        args,
    };
    let mut events = vec![EpollEvent::empty(); 256];

    // ----- phase 1: registration -------------------------------------------
    let rss_before = g.args.pid.and_then(rss);
    let reg_start = StdInstant::now();
    let mut next = 0usize;
    let mut last_retry = StdInstant::now();
    let mut last_report = StdInstant::now();
    let reg_deadline = reg_start + Duration::from_secs(600);
    while g.c.registered < g.args.nodes {
        while next < g.args.nodes && g.inflight_reg < g.args.register_window {
            g.inflight_reg += 1;
            g.start_edge(next);
            next += 1;
        }
        g.poll(&epoll, &mut events, 1)?;
        if last_retry.elapsed() >= Duration::from_millis(500) {
            g.retry_stuck(next);
            keepalives(&mut g, next);
            last_retry = StdInstant::now();
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            println!(
                "  registered {} / {} after {:.1} s ({} retries)",
                g.c.registered,
                g.args.nodes,
                reg_start.elapsed().as_secs_f64(),
                g.c.retries
            );
            last_report = StdInstant::now();
        }
        if StdInstant::now() > reg_deadline {
            bail!("only {} of {} edges registered within 600 s", g.c.registered, g.args.nodes);
        }
    }
    let reg_secs = reg_start.elapsed().as_secs_f64();
    // Let pushed lists and acks settle before reading memory.
    let settle = StdInstant::now();
    while settle.elapsed() < Duration::from_secs(1) {
        g.poll(&epoll, &mut events, 10)?;
    }
    let rss_after = g.args.pid.and_then(rss);
    println!(
        "registered {} nodes in {:.1} s ({:.0} registrations/s: handshake + Hello + Register with proof + lists)",
        g.c.registered,
        reg_secs,
        g.c.registered as f64 / reg_secs
    );

    // ----- phase 2: heartbeats, closed loop ---------------------------------
    let measure = Duration::from_secs_f64(g.args.seconds);
    let cpu_n0 = g.args.pid.and_then(cpu_secs);
    let cpu_g0 = own_cpu_secs();
    let acked0 = g.c.hb_acked;
    let in0 = g.c.datagrams_in;
    let out0 = g.c.datagrams_out;
    g.measuring = true;
    let m_start = StdInstant::now();
    let mut rr = 0usize;
    let mut last_keep = StdInstant::now();
    while m_start.elapsed() < measure {
        let mut tries = 0;
        while g.in_flight_hb < g.args.window && tries < g.args.nodes {
            let e = rr;
            rr = (rr + 1) % g.args.nodes;
            tries += 1;
            if g.edges[e].hb_sent.is_none() && g.edges[e].step == Step::Registered {
                g.heartbeat(e);
            }
        }
        g.poll(&epoll, &mut events, 1)?;
        if last_keep.elapsed() >= Duration::from_secs(1) {
            let n = g.args.nodes;
            keepalives(&mut g, n);
            last_keep = StdInstant::now();
        }
    }
    let secs = m_start.elapsed().as_secs_f64();
    g.measuring = false;
    let cpu_n = g.args.pid.and_then(cpu_secs).zip(cpu_n0).map(|(b, a)| b - a);
    let cpu_g = own_cpu_secs() - cpu_g0;
    let acked = g.c.hb_acked - acked0;
    let dg = (g.c.datagrams_in - in0) + (g.c.datagrams_out - out0);
    g.lat.sort_unstable();

    // ----- report -------------------------------------------------------------
    println!();
    println!("RESULTS (one omni-daemon --mode nucleus process, production limits on, loopback)");
    println!("  nodes registered:        {}", g.c.registered);
    println!(
        "  signaling sustained:     {:.0} requests/s answered (Heartbeat -> HeartbeatAck over {:.1} s; \
         {:.0} WireGuard datagrams/s both ways)",
        acked as f64 / secs,
        secs,
        dg as f64 / secs
    );
    println!(
        "  reply latency:           p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms ({} replies, window {})",
        percentile(&g.lat, 0.50),
        percentile(&g.lat, 0.99),
        percentile(&g.lat, 1.0),
        g.lat.len(),
        g.args.window
    );
    match (rss_before, rss_after) {
        (Some(b), Some(a)) => println!(
            "  Nucleus memory:          RSS {:.1} MiB idle -> {:.1} MiB with {} members: {:.0} bytes per node",
            b as f64 / 1048576.0,
            a as f64 / 1048576.0,
            g.c.registered,
            a.saturating_sub(b) as f64 / g.c.registered as f64
        ),
        _ => println!("  Nucleus memory:          (no --nucleus-pid: not measured)"),
    }
    if let Some(c) = cpu_n {
        println!(
            "  Nucleus CPU:             {:.1} s over {:.1} s ({:.0} % of one core; {:.1} µs per request)",
            c,
            secs,
            100.0 * c / secs,
            1e6 * c / acked.max(1) as f64
        );
    }
    println!(
        "  generator CPU:           {:.1} s over {:.1} s ({:.0} % of one core)",
        cpu_g,
        secs,
        100.0 * cpu_g / secs
    );
    println!(
        "  counters:                {} handshakes, {} registration retries, {} re-registrations, {} peer-list \
         pages, {} heartbeats lost, {} send errors, refusals {:?}",
        g.c.handshakes, g.c.retries, g.c.reregistered, g.c.lists, g.c.hb_lost, g.c.send_errors, g.c.refused
    );
    if g.c.registered < g.args.nodes || acked == 0 {
        bail!("the run did not complete");
    }
    Ok(())
}

/// Heartbeats from registered edges idle for [`KEEPALIVE`] (members must
/// heartbeat or they expire); lost heartbeats are resent, and an edge whose
/// heartbeats keep getting lost registers again.
fn keepalives(g: &mut Gen, upto: usize) {
    let t = StdInstant::now();
    let now = g.now();
    for e in 0..upto {
        if g.edges[e].step != Step::Registered {
            continue;
        }
        // The node's own timers, as a real edge runs them (passive
        // keepalives: without them the Nucleus, having sent data and heard
        // nothing for 15 s, would start handshakes with every edge).
        if g.edges[e].node.poll_timeout().is_some_and(|d| d <= now) {
            g.edges[e].node.handle_timeout(now);
            g.flush(e);
        }
        if g.lost_heartbeat(e, t) {
            continue;
        }
        let edge = &g.edges[e];
        if edge.hb_sent.is_none() && t.duration_since(edge.last_hb) >= KEEPALIVE {
            g.heartbeat(e);
        }
    }
}

impl Gen {
    /// Handles a heartbeat of `e` unanswered for [`HB_LOST`]; true if the
    /// edge went back to registering.
    fn lost_heartbeat(&mut self, e: usize, t: StdInstant) -> bool {
        let Some(sent) = self.edges[e].hb_sent else { return false };
        if t.duration_since(sent) < HB_LOST {
            return false;
        }
        self.edges[e].hb_sent = None;
        self.in_flight_hb = self.in_flight_hb.saturating_sub(1);
        self.c.hb_lost += 1;
        self.edges[e].lost += 1;
        if self.edges[e].lost < MAX_LOST || self.inflight_reg >= self.args.register_window {
            self.heartbeat(e);
            return false;
        }
        // The Nucleus forgot us (or the session is gone): start over.
        self.edges[e].lost = 0;
        self.c.registered = self.c.registered.saturating_sub(1);
        self.c.reregistered += 1;
        self.inflight_reg += 1;
        let now = self.now();
        let edge = &mut self.edges[e];
        edge.node.initiate_now(now, edge.nucleus);
        edge.step = Step::Handshake;
        edge.step_at = t;
        self.flush(e);
        true
    }
}
