//! The edge mode (`--nucleus HOST:PORT --cluster NAME [--secret S] --vip IP`):
//! a TUN interface carrying the cluster's subnet, one WireGuard node whose
//! peers are the Nucleus (a control peer) and the cluster's members, and
//! omni-core's [`NucleusClient`] driving membership, hole punching and relay.
//!
//! One thread runs a plain `ppoll` over the TUN device, the UDP sockets, a
//! signalfd, address-change notifications and the status/metrics sockets;
//! its timeout is the earlier of the node's and the client's deadlines. It
//! follows the client's calling rules exactly (see `omni_core::nucleus::client`):
//! datagrams go through `handle_datagram_with_control`, signaling to
//! `handle_control`, every node event to `handle_node_event`, every
//! transmit through `route_transmit` / the client's `poll_transmit`.
//!
//! Packets take the same batched, zero-copy path as wg mode's data plane
//! (see [`crate::batch`]): TUN super-packets are cut into segments and sealed
//! in place, datagrams go out as UDP GSO sends, GRO runs of datagrams are
//! opened in place and TCP segments merged again on the way to the TUN
//! device. Every datagram of a GRO run is still handled alone, so signaling
//! from the Nucleus is never mistaken for anything else. One thread carries
//! both directions: wg mode's second thread would need the client shared
//! under a lock, which the per-packet routing through it would contend for.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::time::TimeSpec;
use omni_core::crypto::DefaultProvider;
use omni_core::node::{Transmit, IN_PLACE_OFFSET};
use omni_core::nucleus::client::{ClientEvent, HeapMembers, Path, State};
use omni_core::nucleus::wire::{self, MAX_LOCAL_ENDPOINTS};
use omni_core::nucleus::{ClientConfig, ClusterSecret, NucleusClient};
use omni_core::{Event, Incoming, Instant, NodeConfig, PeerId, PublicKey, WallTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tracing::{debug, error, info, trace, warn};

use crate::batch::{self, RxQueue, Sealer, TxQueue, BATCH, SEND_AT};
use crate::clock::Clock;
use crate::config::EdgeOptions;
use crate::device::WgNode;
use crate::identity;
use crate::ifconfig::{self, AddrWatch};
use crate::netlink::LinkWatch;
use crate::nucleus_server::{read_signal, termination_signals};
use crate::status::{self, human_ago, human_bytes, metric, MetricsServer, StatusServer};
use crate::tun::Tun;
use crate::udp::{self, Sockets};

type Client = NucleusClient<HeapMembers>;

const MTU: u16 = 1420;
/// Any IP packet the node or client may write, plus WireGuard and relay framing.
const BUF: usize = 65536 + 256;
const WALL_RESYNC: Duration = Duration::from_secs(60);
/// Address notifications come in bursts: act once they settle.
const ADDR_SETTLE: Duration = Duration::from_millis(300);
const KEY_QUERY_RETRY: Duration = Duration::from_secs(1);

pub fn run(mut opts: EdgeOptions) -> anyhow::Result<()> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let sigfd = termination_signals()?;
    // The cluster keys first, so the secret is wiped as early as possible.
    let secret = opts.secret.take();
    if secret.is_none() {
        warn!(cluster = %opts.cluster, "no --secret: an unauthenticated cluster (anyone who knows its name may join)");
    }
    let cluster = ClusterSecret::derive::<DefaultProvider>(
        opts.cluster.as_bytes(),
        secret.as_ref().map_or(&b""[..], |s| s.as_bytes()),
    );
    drop(secret); // Zeroizing: wiped here

    let (key, created) = identity::load_or_create(&opts.identity_dir, identity::EDGE_KEY_FILE)?;
    if created {
        info!(path = %opts.identity_dir.join(identity::EDGE_KEY_FILE).display(), "created a new key");
    }
    let nucleus_addr = resolve(&opts.nucleus_host, opts.nucleus_port)?;
    let sockets = Sockets::bind(opts.port, 0).with_context(|| format!("cannot bind UDP port {}", opts.port))?;
    let clock = Clock::new();

    let learned = opts.nucleus_key.is_none();
    let nucleus_key = match opts.nucleus_key {
        Some(k) => k,
        None => match identity::load_pinned(&opts.identity_dir, &opts.nucleus)? {
            Some(k) => {
                info!(nucleus = %opts.nucleus, key = %k, "using the pinned Nucleus key");
                k
            }
            None => {
                let Some(k) = discover_key(&sockets, nucleus_addr, &sigfd)? else { return Ok(()) };
                let path = identity::save_pinned(&opts.identity_dir, &opts.nucleus, &k)?;
                warn!(
                    nucleus = %opts.nucleus, key = %k, pinned = %path.display(),
                    "learned the Nucleus key on first contact (trust on first use); pass --nucleus-key to pin it yourself"
                );
                k
            }
        },
    };

    let tun = Tun::create(&opts.interface, udp::offload_enabled())
        .with_context(|| format!("cannot create TUN interface {:?}", opts.interface))?;
    let name = tun.name().context("reading the interface name")?;
    match LinkWatch::open_here().and_then(|mut l| l.set_mtu(&name, u32::from(MTU))) {
        Ok(()) => {}
        Err(e) => warn!("cannot set MTU {MTU} on {name}: {e}"),
    }
    for (vip, prefix) in [(opts.vip, opts.prefix)].into_iter().chain(opts.vip2) {
        ifconfig::configure(&name, vip, prefix)
            .with_context(|| format!("cannot give {name} the address {vip}/{prefix}"))?;
    }
    let addr_watch = match AddrWatch::open() {
        Ok(w) => Some(w),
        Err(e) => {
            warn!("no address notifications (address changes will not be followed): {e}");
            None
        }
    };
    let status = StatusServer::bind(&status::socket_path(&name)).context("cannot create the status socket")?;
    let metrics = match opts.metrics {
        Some(a) => Some(MetricsServer::bind(a).with_context(|| format!("cannot serve metrics on {a}"))?),
        None => None,
    };

    if let Some(m) = &metrics {
        info!(addr = %m.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving Prometheus metrics");
    }
    let now = clock.now();
    let mut node = WgNode::new(
        NodeConfig { private_key: Some(key), mtu: MTU, ..NodeConfig::default() },
        ChaCha20Rng::from_entropy(),
    );
    node.set_wall_time(now, WallTime::now_system());
    let public = node.public_key().context("no public key")?;
    let mut config = ClientConfig::new(nucleus_key, nucleus_addr, opts.vip);
    config.vip2 = opts.vip2.map(|(vip, _)| vip);
    let announced = locals(&sockets, &name);
    config.local_endpoints = announced.iter().copied().take(MAX_LOCAL_ENDPOINTS).collect();
    let mut client = Client::new(config, cluster);
    client.start(now, &mut node).map_err(|e| anyhow::anyhow!("cannot start the Nucleus client: {e:?}"))?;
    let vip2 = opts.vip2.map(|(v, p)| format!("{v}/{p}")).unwrap_or_default();
    info!(
        interface = %name, vip = %opts.vip, prefix = opts.prefix, vip2, key = %public, port = sockets.port,
        nucleus = %nucleus_addr, cluster = %opts.cluster, status = %status.path().display(),
        "edge running"
    );

    let mut edge = Edge {
        node,
        client,
        sockets,
        tun,
        name,
        clock,
        vip: opts.vip,
        prefix: opts.prefix,
        vip2: opts.vip2,
        nucleus: nucleus_addr,
        cluster: opts.cluster.clone(),
        tx: TxQueue::new(),
        rx: RxQueue::new(),
        out: vec![0; BUF],
        out2: vec![0; BUF],
        wall_at: now.saturating_add(WALL_RESYNC),
        addr_settle: None,
        locals: announced,
        nucleus_key,
        key_learned: learned,
        pin_path: identity::pinned_path(&opts.identity_dir, &opts.nucleus),
        addr_watch,
        status,
        metrics,
        started: now,
    };
    edge.flush(now);
    let exit = edge.serve(&sigfd);
    // Leave the cluster whatever stopped us (if the socket still works).
    let now = edge.clock.now();
    edge.client.leave(now, &mut edge.node);
    edge.flush(now);
    match exit? {
        Exit::Signal(sig) => info!("{sig}; left the cluster, shutting down"),
        Exit::InterfaceDeleted => info!(interface = %edge.name, "interface deleted; left the cluster, exiting"),
    }
    Ok(())
}

/// The Nucleus's address (IPv4 first: most NATs are IPv4).
fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the Nucleus {host}:{port}"))?
        .map(udp::canonical)
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| anyhow::anyhow!("the Nucleus {host} has no address"))
}

/// Our addresses on the host's networks with the listen port (at most
/// `MAX_LOCAL_ENDPOINTS`, what a registration carries).
fn locals(sockets: &Sockets, tun_name: &str) -> Vec<SocketAddr> {
    ifconfig::local_endpoints(sockets.port, tun_name, sockets.v6.is_some(), MAX_LOCAL_ENDPOINTS)
}

/// Asks the Nucleus for its key until it answers (or a signal stops us: `None`).
fn discover_key(sockets: &Sockets, nucleus: SocketAddr, sigfd: &SignalFd) -> anyhow::Result<Option<PublicKey>> {
    info!(%nucleus, "asking the Nucleus for its key (no --nucleus-key given and none pinned)");
    let mut buf = vec![0u8; udp::GRO_BUF];
    let mut tries = 0u32;
    loop {
        if let Err(e) = sockets.send_to(&wire::key_query(), nucleus) {
            debug!("key query: {e}");
        }
        tries += 1;
        if tries % 10 == 0 {
            warn!(%nucleus, tries, "the Nucleus does not answer yet; still asking");
        }
        let deadline = std::time::Instant::now() + KEY_QUERY_RETRY;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
            for s in [&sockets.v4, &sockets.v6].into_iter().flatten() {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            match nix::poll::ppoll(&mut fds, Some(TimeSpec::from_duration(left)), None) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("poll"),
            }
            let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
            drop(fds);
            if ready[0] && read_signal(sigfd).is_some() {
                return Ok(None);
            }
            for s in [&sockets.v4, &sockets.v6].into_iter().flatten() {
                while let Ok(r) = udp::recv(s, &mut buf) {
                    if r.from != nucleus {
                        continue;
                    }
                    if let Some(k) = r.datagrams().find_map(|(a, b)| wire::parse_key_reply(&buf[a..b])) {
                        return Ok(Some(k));
                    }
                }
            }
        }
    }
}

enum Exit {
    Signal(Signal),
    InterfaceDeleted,
}

struct Edge {
    node: WgNode,
    client: Client,
    sockets: Sockets,
    tun: Tun,
    name: String,
    clock: Clock,
    vip: IpAddr,
    prefix: u8,
    /// The second VIP (dual stack) and its prefix.
    vip2: Option<(IpAddr, u8)>,
    nucleus: SocketAddr,
    cluster: String,
    /// Datagrams sealed from TUN reads, waiting to be sent.
    tx: TxQueue,
    /// Datagrams read and opened in place, packets waiting for the TUN device.
    rx: RxQueue,
    /// What the node and client write.
    out: Vec<u8>,
    /// Relayed packets decrypted by the client.
    out2: Vec<u8>,
    wall_at: Instant,
    addr_settle: Option<Instant>,
    /// The Nucleus key we use, and whether it was learned on first contact
    /// (then a failing Nucleus handshake makes us check it is still the one).
    nucleus_key: PublicKey,
    key_learned: bool,
    pin_path: std::path::PathBuf,
    /// The local endpoints announced last.
    locals: Vec<SocketAddr>,
    addr_watch: Option<AddrWatch>,
    status: StatusServer,
    metrics: Option<MetricsServer>,
    started: Instant,
}

fn send(sockets: &Sockets, buf: &[u8], to: SocketAddr) {
    if let Err(e) = sockets.send_to(buf, to) {
        debug!(%to, "send failed: {e}");
    }
}

impl Edge {
    fn serve(&mut self, sigfd: &SignalFd) -> anyhow::Result<Exit> {
        loop {
            let now = self.clock.now();
            self.timers(now);
            let deadline = [self.node.poll_timeout(), self.client.poll_timeout(), Some(self.wall_at), self.addr_settle]
                .into_iter()
                .flatten()
                .min();
            let timeout = deadline.map(|t| TimeSpec::from_duration(self.clock.until(t)));

            let sockets = self.sockets.clone();
            let readable = PollFlags::POLLIN;
            // Fixed slots: 0 signals, 1 TUN, 2 status, 3 address watch, 4 metrics, 5.. sockets.
            let mut fds = vec![
                PollFd::new(sigfd.as_fd(), readable),
                PollFd::new(self.tun.as_fd(), readable),
                PollFd::new(self.status.fd(), readable),
                PollFd::new(self.addr_watch.as_ref().map_or(sigfd.as_fd(), |w| w.fd()), readable),
                PollFd::new(self.metrics.as_ref().map_or(sigfd.as_fd(), |m| m.fd()), readable),
            ];
            for s in [&sockets.v4, &sockets.v6].into_iter().flatten() {
                fds.push(PollFd::new(s.as_fd(), readable));
            }
            match nix::poll::ppoll(&mut fds, timeout, None) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("poll"),
            }
            let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
            drop(fds);
            if ready[0] {
                if let Some(sig) = read_signal(sigfd) {
                    return Ok(Exit::Signal(sig));
                }
            }
            for (i, s) in [&sockets.v4, &sockets.v6].into_iter().flatten().enumerate() {
                if ready.get(5 + i).copied().unwrap_or(false) {
                    self.read_socket(s);
                }
            }
            if ready[1] && !self.read_tun()? {
                return Ok(Exit::InterfaceDeleted);
            }
            if ready[3] && self.addr_watch.as_ref().is_some_and(|w| w.drain()) {
                let at = self.clock.now().saturating_add(ADDR_SETTLE);
                self.addr_settle.get_or_insert(at);
            }
            if ready[2] {
                let text = self.render_status();
                self.status.serve(|| text.clone());
            }
            if ready[4] && self.metrics.is_some() {
                let text = self.render_metrics();
                if let Some(m) = &self.metrics {
                    m.serve(|| text.clone());
                }
            }
        }
    }

    /// Fires what is due: the node's timers, then the client's; wall clock;
    /// settled address changes.
    fn timers(&mut self, now: Instant) {
        if now >= self.wall_at {
            self.node.set_wall_time(now, WallTime::now_system());
            self.wall_at = now.saturating_add(WALL_RESYNC);
        }
        if self.addr_settle.is_some_and(|t| t <= now) {
            self.addr_settle = None;
            self.addresses_changed(now);
        }
        let node_due = self.node.poll_timeout().is_some_and(|t| t <= now);
        let client_due = self.client.poll_timeout().is_some_and(|t| t <= now);
        if node_due || client_due {
            self.node.handle_timeout(now);
            self.forward_node_events(now);
            self.client.handle_timeout(now, &mut self.node);
            self.flush(now);
        }
    }

    fn addresses_changed(&mut self, now: Instant) {
        let new = locals(&self.sockets, &self.name);
        if new == self.locals {
            return;
        }
        self.locals.clone_from(&new);
        info!(locals = ?new, "host addresses changed: re-announcing, rebinding sessions");
        self.client.addresses_changed(now, &mut self.node, new.into_iter().take(MAX_LOCAL_ENDPOINTS).collect());
        self.flush(now);
    }

    /// Reads a batch of datagrams (GRO runs of them) from one socket, opens
    /// them in place and writes the packets to the TUN device, TCP segments
    /// of a flow merged.
    fn read_socket(&mut self, socket: &std::net::UdpSocket) {
        let mut end = 0;
        for _ in 0..BATCH {
            // Write what a GRO run (or many small datagrams) gave, so the
            // TUN side gets a steady stream rather than bursts.
            if end >= SEND_AT {
                let _ = self.rx.write_tun(&self.tun);
                end = 0;
            }
            let r = match udp::recv(socket, self.rx.read_slot(end)) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("UDP receive: {e}");
                    break;
                }
            };
            let now = self.clock.now();
            // Each datagram of a run is handled alone.
            for (start, stop) in r.datagrams() {
                self.datagram(now, r.from, end + start, end + stop);
            }
            end += r.len;
        }
        // A write error here means the interface is gone: the TUN poll says so.
        let _ = self.rx.write_tun(&self.tun);
        let now = self.clock.now();
        self.flush(now);
    }

    /// Handles the datagram at `rx.buf[start..end]`, in place.
    fn datagram(&mut self, now: Instant, from: SocketAddr, start: usize, end: usize) {
        let merge = self.tun.vnet();
        if from == self.nucleus {
            if let Some(key) = wire::parse_key_reply(&self.rx.buf[start..end]) {
                if key != self.nucleus_key {
                    error!(
                        nucleus = %self.nucleus, key = %key, pinned = %self.nucleus_key, pin = %self.pin_path.display(),
                        "the Nucleus now has another key than the one pinned on first contact: not trusting it; if the \
                         change is expected, remove the pin file or pass --nucleus-key"
                    );
                }
                return;
            }
        }
        let dg = &mut self.rx.buf[start..end];
        match self.node.handle_datagram_in_place_with_control(now, from, dg) {
            Ok(Incoming::Received(omni_core::node::Received::Reply { len })) => send(&self.sockets, &dg[..len], from),
            Ok(Incoming::Received(omni_core::node::Received::Packet { len, .. })) => {
                self.rx.push(start + IN_PLACE_OFFSET, len, merge);
            }
            Ok(Incoming::Received(omni_core::node::Received::Done)) => {}
            Ok(Incoming::Control { peer, len }) => {
                let payload = &dg[IN_PLACE_OFFSET..][..len];
                match self.client.handle_control(now, &mut self.node, peer, payload, &mut self.out2) {
                    Ok(Some((_, n))) => batch::write_tun_one(&self.tun, &self.out2[..n]),
                    Ok(None) => {}
                    Err(e) => debug!(%from, "signaling payload dropped: {e:?}"),
                }
            }
            Err(e) => trace!(%from, "datagram dropped: {e:?}"),
        }
        self.forward_node_events(now);
    }

    /// Reads a batch of packets from the TUN device, seals them in place
    /// (through the relay where a member is not reachable directly) and
    /// sends them. `Ok(false)`: the interface is gone.
    fn read_tun(&mut self) -> anyhow::Result<bool> {
        let now = self.clock.now();
        let Edge { node, client, tx, tun, sockets, .. } = self;
        let mut sealer = EdgeSealer { node, client, now };
        let read = tx.read_tun(tun, sockets, &mut sealer);
        if read.gone {
            return Ok(false);
        }
        self.flush(now);
        Ok(true)
    }

    /// Every node event to the client (and the log).
    fn forward_node_events(&mut self, now: Instant) {
        while let Some(e) = self.node.poll_event() {
            self.client.handle_node_event(now, &mut self.node, &e);
            match e {
                Event::HandshakeCompleted { peer, .. } => debug!(peer = %self.describe(peer), "handshake completed"),
                Event::EndpointChanged { peer, endpoint } => {
                    debug!(peer = %self.describe(peer), %endpoint, "endpoint changed")
                }
                Event::HandshakeFailed { peer } => {
                    debug!(peer = %self.describe(peer), "handshake did not complete");
                    if Some(peer) == self.client.nucleus_peer() && self.key_learned {
                        // Is the pinned key still the Nucleus's? (The answer is only logged.)
                        send(&self.sockets, &wire::key_query(), self.nucleus);
                    }
                }
                other => trace!("{other:?}"),
            }
        }
    }

    /// Sends everything the client and node have, and logs the client's events.
    fn flush(&mut self, now: Instant) {
        self.forward_node_events(now);
        loop {
            match self.client.poll_transmit(now, &mut self.node, &mut self.out) {
                Ok(Some(t)) => send(&self.sockets, &self.out[..t.len], t.to),
                Ok(None) => break,
                Err(e) => {
                    warn!("poll_transmit: {e:?}");
                    break;
                }
            }
            self.forward_node_events(now);
        }
        self.forward_node_events(now);
        while let Some(e) = self.client.poll_event() {
            match e {
                ClientEvent::Registered { vip, reflexive } => {
                    let reflexive = reflexive.map(|r| r.to_string()).unwrap_or_default();
                    info!(%vip, reflexive, "registered with the Nucleus")
                }
                ClientEvent::Refused { code } => warn!(?code, "the Nucleus refused our request"),
                ClientEvent::NucleusLost => warn!("the Nucleus stopped answering: registering again"),
                ClientEvent::PeerAdded { key, vip, vip2, .. } => {
                    let vip2 = vip2.map(|v| v.to_string()).unwrap_or_default();
                    info!(%vip, vip2, %key, "member added")
                }
                ClientEvent::PeerRemoved { key, .. } => info!(%key, "member removed"),
                ClientEvent::PeerSkipped { key } => warn!(%key, "member skipped (table full or key in use)"),
                ClientEvent::Relayed { peer } => {
                    info!(peer = %self.describe(peer), "member reached through the Nucleus relay")
                }
                ClientEvent::Direct { peer } => info!(peer = %self.describe(peer), "member reached directly"),
                ClientEvent::Moved { peer, endpoint } => {
                    info!(peer = %self.describe(peer), %endpoint, "member's address changed: following it")
                }
                ClientEvent::Left => info!("left the cluster"),
                other => debug!("{other:?}"),
            }
        }
    }

    /// "VIP (key)" of a member, or the Nucleus.
    fn describe(&self, peer: PeerId) -> String {
        if Some(peer) == self.client.nucleus_peer() {
            return format!("nucleus {}", self.nucleus);
        }
        match self.client.member_by_peer(peer) {
            Some(m) => match m.vip2 {
                Some(v2) => format!("{} {} ({})", m.vip, v2, m.key),
                None => format!("{} ({})", m.vip, m.key),
            },
            None => format!("{peer:?}"),
        }
    }

    /// The table `omni-daemon status` prints.
    fn render_status(&self) -> String {
        let now = self.clock.now();
        let mut s = String::new();
        let key = self.node.public_key().map(|k| k.to_string()).unwrap_or_default();
        let vips = [(self.vip, self.prefix)]
            .into_iter()
            .chain(self.vip2)
            .map(|(v, p)| format!("{v}/{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(s, "interface: {}  vip: {}  key: {}", self.name, vips, key);
        let _ = writeln!(s, "cluster: {}  listening port: {}", self.cluster, self.sockets.port);
        let reflexive = self.client.reflexive().map_or("-".to_string(), |r| r.to_string());
        let _ = writeln!(
            s,
            "nucleus: {}  state: {}  reflexive: {}  members: {}  up: {}",
            self.nucleus,
            self.client.state().name(),
            reflexive,
            self.client.members().len(),
            human_ago(now.saturating_duration_since(self.started)).trim_end_matches(" ago"),
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<18} {:<44} {:<24} {:<10} {:<14} {:>10} {:>10}",
            "PEER VIP", "KEY", "ENDPOINT", "PATH", "HANDSHAKE", "RX", "TX"
        );
        let mut rows = Vec::new();
        self.client.members().values().for_each(|m| {
            let st = self.node.peer_stats(m.peer);
            let endpoint = st.and_then(|s| s.endpoint).map_or("-".to_string(), |e| e.to_string());
            let path = m.path.name();
            let hs = st
                .and_then(|s| s.last_handshake)
                .map_or("never".to_string(), |t| human_ago(now.saturating_duration_since(t)));
            let (rx, tx) = st.map_or((0, 0), |s| (s.rx_bytes, s.tx_bytes));
            // A dual-stack member: both VIPs, comma-separated, in the first column.
            let vips = match m.vip2 {
                Some(v2) => format!("{},{}", m.vip, v2),
                None => m.vip.to_string(),
            };
            rows.push((
                m.vip,
                format!(
                    "{:<18} {:<44} {:<24} {:<10} {:<14} {:>10} {:>10}",
                    vips,
                    m.key.to_string(),
                    endpoint,
                    path,
                    hs,
                    human_bytes(rx),
                    human_bytes(tx)
                ),
            ));
        });
        rows.sort_by_key(|(vip, _)| *vip);
        for (_, r) in rows {
            let _ = writeln!(s, "{r}");
        }
        s
    }

    fn render_metrics(&self) -> String {
        let mut m = String::new();
        let registered = u64::from(self.client.state() == State::Registered);
        metric(&mut m, "omni_edge_registered", "gauge", "1 while registered with the Nucleus.", "", registered);
        let members = u64::try_from(self.client.members().len()).unwrap_or(u64::MAX);
        metric(&mut m, "omni_edge_members", "gauge", "Cluster members known.", "", members);
        let mut by_path = [0u64; 4];
        self.client.members().values().for_each(|mb| {
            let i = match mb.path {
                Path::Direct => 0,
                Path::Relayed => 1,
                Path::RelayRequested => 2,
                Path::Connecting => 3,
            };
            by_path[i] += 1;
        });
        for (i, p) in ["direct", "relayed", "relaying", "connecting"].iter().enumerate() {
            metric(&mut m, "omni_edge_peers", "gauge", "Members by path.", &format!("path=\"{p}\""), by_path[i]);
        }
        self.client.members().values().for_each(|mb| {
            if let Some(st) = self.node.peer_stats(mb.peer) {
                let labels = format!("vip=\"{}\"", mb.vip);
                metric(
                    &mut m,
                    "omni_edge_peer_rx_bytes_total",
                    "counter",
                    "Bytes received from a member.",
                    &labels,
                    st.rx_bytes,
                );
                metric(
                    &mut m,
                    "omni_edge_peer_tx_bytes_total",
                    "counter",
                    "Bytes sent to a member.",
                    &labels,
                    st.tx_bytes,
                );
            }
        });
        let c = self.client.stats();
        for (name, v) in [
            ("signaling_sent", c.sent),
            ("signaling_received", c.received),
            ("signaling_malformed", c.malformed),
            ("relayed_out", c.relayed_out),
            ("relayed_in", c.relayed_in),
            ("punches", c.punches),
            ("dropped", c.dropped),
        ] {
            metric(&mut m, &format!("omni_edge_{name}_total"), "counter", "Nucleus client counter.", "", v);
        }
        m
    }
}

/// Seals for the edge: the node encrypts, the client routes (a member
/// behind a NAT we cannot pass is reached through the Nucleus's relay: the
/// datagram is wrapped where it lies).
struct EdgeSealer<'a> {
    node: &'a mut WgNode,
    client: &'a mut Client,
    now: Instant,
}

impl Sealer for EdgeSealer<'_> {
    fn begin(&mut self) {}

    fn mtu(&self) -> u16 {
        self.node.mtu()
    }

    fn seal(&mut self, buf: &mut [u8], len: usize) -> Option<Transmit> {
        let t = batch::transmit_of(self.node.send_ip_in_place(self.now, buf, len))?;
        match self.client.route_transmit(self.now, self.node, t, buf) {
            Ok(t) => t,
            Err(e) => {
                debug!("relay: {e:?}");
                None
            }
        }
    }

    fn end(&mut self) {}
}
