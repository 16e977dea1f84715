//! `Tunnel`: one omni-core `Node` behind a mutex, with the clock, the peers'
//! configured endpoints and event translation, and (for a tunnel created by
//! `join_cluster`) omni-core's Nucleus client driving cluster membership.
//! The uniffi methods live here; the C API and JNI call the `pub(crate)`
//! buffer-based methods, which follow the Nucleus client's calling rules
//! too, so every front end works in a cluster.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};

use omni_core::node::{Event, Incoming, Received, RecvError, SendError, Sent, IN_PLACE_OFFSET};
use omni_core::nucleus::client::ControlError;
use omni_core::storage::Heap;
use omni_core::{AllowedIp, Instant, Node, NodeConfig, PeerConfig, PeerId, PublicKey, Transmit, WallTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::clock::{Clock, HostClock};
use crate::cluster::{self, Client, Cluster, ClusterConfig, ClusterMember, ClusterStatus, Membership};
use crate::config::{self, EndpointSpec, InterfaceSettings, IpNetwork, PeerSpec, TunnelConfig};
use crate::error::{self, TunnelError};

/// The crypto provider: RustCrypto everywhere; ring's assembly AEAD on
/// desktop builds with the `ring` feature.
pub(crate) type Crypto = omni_core::crypto::DefaultProvider;
pub(crate) type CoreNode = Node<Crypto, ChaCha20Rng, Heap>;

/// Room for any datagram or packet the tunnel handles: a 64 KiB IP packet plus
/// WireGuard's header, padding and tag, and relay framing in a cluster.
pub(crate) const MAX_DATAGRAM: usize = 65535 + 256;

/// Bytes beyond a packet's length an output buffer needs in a cluster, where
/// a datagram to a relayed member is wrapped for the Nucleus: the WireGuard
/// datagram (len + 47 at most) inside a `RelayData` (4 + 32 bytes) inside the
/// Nucleus session (16 + padding 15 + tag 16): len + 130; rounded up.
pub(crate) const CLUSTER_OVERHEAD: usize = 160;

/// Events kept for a host that does not poll them; the oldest go first.
const MAX_QUEUED_EVENTS: usize = 1024;

/// Why a received datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RxError {
    Recv(RecvError),
    /// A signaling payload from the Nucleus the client refused.
    Signaling(ControlError),
}

impl From<RecvError> for RxError {
    fn from(e: RecvError) -> Self {
        RxError::Recv(e)
    }
}

/// Something that happened in the tunnel (`Tunnel.poll_event`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum TunnelEvent {
    /// The first handshake with the peer completed (or the first after it went down).
    PeerUp { public_key: String, initiator: bool },
    /// A later handshake completed while the peer was up: a rekey (every 2
    /// minutes of traffic) or a rehandshake after wake or a network change.
    /// With `PeerUp` it tells a first handshake from a renewal.
    SessionRenewed { public_key: String, initiator: bool },
    /// The peer's keys expired after a long silence; it is down until the next handshake.
    PeerDown { public_key: String },
    /// The peer's endpoint moved (it roamed, or a host re-resolved it).
    EndpointChanged { public_key: String, endpoint: String },
    /// A handshake attempt timed out (90 s without an answer); queued packets were dropped.
    HandshakeFailed { public_key: String },
    /// A packet is queued for a peer that has no endpoint: no handshake can
    /// start until the host sets one (`set_peer_endpoint`, `resolve_endpoints`)
    /// or the peer contacts us. Once per peer until it has an endpoint.
    EndpointNeeded { public_key: String },
    /// Registered with the Nucleus (again, after `NucleusLost`). `vip` is ours;
    /// `reflexive_endpoint` our address as the Nucleus sees it.
    ClusterJoined { vip: String, reflexive_endpoint: Option<String> },
    /// The Nucleus refused a request; registration retries with backoff.
    /// `reason`: `vip-in-use`, `unauthorized`, `capacity`, `rate-limited`, …
    ClusterRefused { reason: String },
    /// The Nucleus stopped answering (or forgot us): registering again.
    /// Members stay peers meanwhile.
    NucleusLost,
    /// A member of the cluster became a peer (its VIP routes to it).
    MemberJoined { public_key: String, vip: String },
    /// A member left or expired; its peer and route are gone.
    MemberLeft { public_key: String },
    /// A member could not become a peer (the peer table is full, or the key
    /// is configured as a peer already).
    MemberSkipped { public_key: String },
    /// A member is now reached through the Nucleus's relay (`relayed`), or
    /// directly (again).
    MemberPathChanged { public_key: String, relayed: bool },
    /// `leave_cluster` completed (drain `poll_transmit` to tell the Nucleus).
    ClusterLeft,
}

/// What became of a received datagram.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum DatagramOutcome {
    /// Consumed (a keepalive, a completed handshake). Drain `poll_transmit`.
    Done,
    /// Send `datagram` back to where it came from (a handshake response or cookie reply).
    Reply { datagram: Vec<u8> },
    /// A decrypted IP packet for the TUN device.
    Packet { packet: Vec<u8> },
    /// Dropped: malformed, replayed, not authentic… `reason` is a short word
    /// (`replay`, `decrypt-failed`, …). The sender's fault, not the host's.
    Rejected { reason: String },
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Datagram {
    /// `ip:port` (`[ipv6]:port`).
    pub endpoint: String,
    pub data: Vec<u8>,
}

/// One peer in `Tunnel.stats`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PeerStatus {
    pub public_key: String,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: Option<u16>,
    /// Nanoseconds since the last completed handshake (None: never).
    pub last_handshake_age_nanos: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub has_session: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct TunnelStats {
    pub peers: Vec<PeerStatus>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Datagrams dropped since the tunnel started (invalid, replayed, …).
    pub datagrams_rejected: u64,
    /// Events lost because the host did not poll them.
    pub events_dropped: u64,
    /// Packets `send_ip_batch` could not send (no route, not IP, …).
    pub packets_dropped: u64,
}

struct PeerMeta {
    public_key: PublicKey,
    /// A host name from the config, re-resolved by `resolve_endpoints`.
    hostname: Option<(String, u16)>,
    up: bool,
    /// Added by the Nucleus client (a cluster member), not by the host.
    member: bool,
    /// `EndpointNeeded` was reported and the peer has no endpoint yet.
    endpoint_needed: bool,
}

impl PeerMeta {
    fn new(public_key: PublicKey, hostname: Option<(String, u16)>, member: bool) -> Self {
        PeerMeta { public_key, hostname, up: false, member, endpoint_needed: false }
    }
}

pub(crate) struct State {
    pub(crate) node: CoreNode,
    peers: BTreeMap<PeerId, PeerMeta>,
    events: VecDeque<TunnelEvent>,
    events_lost: u64,
    rejected: u64,
    packets_dropped: u64,
    cluster: Option<Cluster>,
}

/// A received datagram's result as the uniffi outcome (`out` holds the output).
fn outcome(r: Received, mut out: Vec<u8>) -> DatagramOutcome {
    match r {
        Received::Done => DatagramOutcome::Done,
        Received::Reply { len } => {
            out.truncate(len);
            DatagramOutcome::Reply { datagram: out }
        }
        Received::Packet { len, .. } => {
            out.truncate(len);
            DatagramOutcome::Packet { packet: out }
        }
    }
}

fn push_event(events: &mut VecDeque<TunnelEvent>, lost: &mut u64, e: TunnelEvent) {
    if events.len() >= MAX_QUEUED_EVENTS {
        events.pop_front();
        *lost = lost.saturating_add(1);
    }
    events.push_back(e);
}

/// A node event as the host sees it (`None`: nothing to report). `nucleus`:
/// the Nucleus's peer, whose handshakes are infrastructure, not events.
fn translate(
    node: &CoreNode,
    peers: &mut BTreeMap<PeerId, PeerMeta>,
    nucleus: Option<PeerId>,
    e: Event,
) -> Option<TunnelEvent> {
    let peer = match e {
        Event::HandshakeCompleted { peer, .. }
        | Event::EndpointChanged { peer, .. }
        | Event::HandshakeFailed { peer }
        | Event::KeysExpired { peer } => peer,
        _ => return None,
    };
    if Some(peer) == nucleus {
        return None;
    }
    let m = match peers.entry(peer) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        // A member the client added in this same call: its PeerAdded comes next.
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(PeerMeta::new(node.peer_stats(peer)?.public_key, None, nucleus.is_some()))
        }
    };
    let key = key_string(&m.public_key);
    let translated = match e {
        Event::HandshakeCompleted { initiator, .. } => {
            m.endpoint_needed = false;
            if m.up {
                TunnelEvent::SessionRenewed { public_key: key, initiator }
            } else {
                m.up = true;
                TunnelEvent::PeerUp { public_key: key, initiator }
            }
        }
        Event::EndpointChanged { endpoint, .. } => {
            m.endpoint_needed = false;
            TunnelEvent::EndpointChanged { public_key: key, endpoint: endpoint.to_string() }
        }
        Event::HandshakeFailed { .. } => TunnelEvent::HandshakeFailed { public_key: key },
        Event::KeysExpired { .. } => {
            if !m.up {
                return None;
            }
            m.up = false;
            TunnelEvent::PeerDown { public_key: key }
        }
        _ => return None,
    };
    log::debug!("peer {}: {translated:?}", peer.0);
    Some(translated)
}

impl State {
    /// Cluster mode: hands every node event to the Nucleus client (its
    /// calling rules: after every node call) and turns node and client events
    /// into tunnel events. A plain tunnel translates lazily in `next_event`.
    fn pump(&mut self, now: Instant) {
        let State { node, peers, events, events_lost, cluster, .. } = self;
        let Some(c) = cluster.as_mut() else { return };
        let nucleus = Some(c.nucleus_peer);
        loop {
            let mut any = false;
            while let Some(e) = node.poll_event() {
                any = true;
                c.client.handle_node_event(now, node, &e);
                if let Some(t) = translate(node, peers, nucleus, e) {
                    push_event(events, events_lost, t);
                }
            }
            while let Some(ce) = c.client.poll_event() {
                any = true;
                let key_of = |p: PeerId| node.peer_stats(p).map(|s| s.public_key);
                match cluster::membership(ce, key_of) {
                    Some(Membership::Added { peer, key, vip }) => {
                        if peers.get(&peer).is_none_or(|m| m.public_key != key) {
                            peers.insert(peer, PeerMeta::new(key, None, true));
                        }
                        log::info!("member {vip} joined");
                        let e = TunnelEvent::MemberJoined { public_key: key_string(&key), vip: vip.to_string() };
                        push_event(events, events_lost, e);
                    }
                    Some(Membership::Removed { peer, key }) => {
                        if peers.get(&peer).is_some_and(|m| m.public_key == key) {
                            peers.remove(&peer);
                        }
                        push_event(events, events_lost, TunnelEvent::MemberLeft { public_key: key_string(&key) });
                    }
                    Some(Membership::Other(t)) => {
                        log::debug!("cluster: {t:?}");
                        push_event(events, events_lost, t);
                    }
                    None => {}
                }
            }
            if !any {
                break;
            }
        }
    }

    /// A packet was queued for `peer`: tell the host once if it cannot be sent
    /// anywhere (no endpoint, so no handshake can start).
    fn queued(&mut self, peer: PeerId) {
        let no_endpoint = self.node.peer_stats(peer).is_some_and(|s| s.endpoint.is_none());
        let Some(m) = self.peers.get_mut(&peer) else { return };
        if no_endpoint && !m.endpoint_needed {
            m.endpoint_needed = true;
            let e = TunnelEvent::EndpointNeeded { public_key: key_string(&m.public_key) };
            push_event(&mut self.events, &mut self.events_lost, e);
        }
    }

    /// After `send_ip*`: a datagram for a relayed member goes through the
    /// Nucleus (wrapped in place in `buf`).
    fn sent(
        &mut self,
        now: Instant,
        r: Result<Sent, SendError>,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, SendError> {
        let out = match r? {
            Sent::Transmit(t) => match self.cluster.as_mut() {
                None => return Ok(Some(t)),
                Some(c) => c.client.route_transmit(now, &mut self.node, t, buf),
            },
            Sent::Queued { peer } => {
                self.queued(peer);
                Ok(None)
            }
        };
        self.pump(now);
        out
    }

    /// After `handle_datagram*_with_control`: a signaling payload
    /// (`payload_at..+len` of `buf`) goes to the Nucleus client, which may
    /// decrypt a relayed packet into `buf[out_at..]`.
    fn received(
        &mut self,
        now: Instant,
        r: Result<Incoming, RecvError>,
        buf: &mut [u8],
        payload_at: usize,
        out_at: usize,
    ) -> Result<Received, RxError> {
        let r = match r {
            Ok(Incoming::Received(r)) => Ok(r),
            Ok(Incoming::Control { peer, len }) => match self.cluster.as_mut() {
                // Only a cluster marks control peers.
                None => Err(RxError::Recv(RecvError::ControlPayload { peer })),
                Some(c) => {
                    let payload = buf.get(payload_at..payload_at.saturating_add(len)).unwrap_or(&[]);
                    c.scratch.clear();
                    c.scratch.extend_from_slice(payload);
                    let out = buf.get_mut(out_at..).unwrap_or(&mut []);
                    match c.client.handle_control(now, &mut self.node, peer, &c.scratch, out) {
                        Ok(Some((peer, len))) => Ok(Received::Packet { peer, len }),
                        Ok(None) => Ok(Received::Done),
                        Err(ControlError::Relay(e)) => Err(RxError::Recv(e)),
                        Err(e) => Err(RxError::Signaling(e)),
                    }
                }
            },
            Err(e) => Err(RxError::Recv(e)),
        };
        self.pump(now);
        if r.is_err() {
            self.rejected = self.rejected.saturating_add(1);
        }
        r
    }
}

/// A WireGuard tunnel: the omni-core state machine plus what a phone host
/// needs around it. All methods are thread-safe (one mutex; calls serialize).
///
/// Calling rules (those of omni-core's `Node`): a datagram from the UDP
/// socket goes to `handle_datagram`, an IP packet from the TUN device to
/// `send_ip`; after either, and after `handle_timeout`, drain
/// `poll_transmit` until it returns nothing. `poll_timeout_nanos` /
/// `next_timeout_millis` tell when to call `handle_timeout`: there is no
/// periodic tick, so a sleeping phone stays asleep.
#[derive(uniffi::Object)]
pub struct Tunnel {
    state: Mutex<State>,
    clock: Clock,
    interface: config::Interface,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while locked is caught at the boundary; the node's state is
    // still consistent (no partial writes of memory-unsafe kind), so go on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn key_string(k: &PublicKey) -> String {
    k.to_base64().as_str().to_owned()
}

fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
    // Prefer IPv4 (more often reachable from mobile networks), as wg-quick does not care.
    addrs.iter().find(|a| a.is_ipv4()).or_else(|| addrs.first()).copied()
}

impl Tunnel {
    fn assemble(interface: config::Interface, clock: Clock) -> Result<Tunnel, TunnelError> {
        let rng = ChaCha20Rng::from_rng(rand_core::OsRng)
            .map_err(|e| TunnelError::Internal { detail: format!("no system randomness: {e}") })?;
        let node = Node::new(
            NodeConfig { private_key: Some(interface.secret.clone()), mtu: interface.mtu, ..NodeConfig::default() },
            rng,
        );
        let state = State {
            node,
            peers: BTreeMap::new(),
            events: VecDeque::new(),
            events_lost: 0,
            rejected: 0,
            packets_dropped: 0,
            cluster: None,
        };
        let tunnel = Tunnel { state: Mutex::new(state), clock, interface };
        let now = tunnel.now();
        tunnel.lock().node.set_wall_time(now, WallTime::now_system());
        Ok(tunnel)
    }

    pub(crate) fn build(cfg: &TunnelConfig, clock: Clock) -> Result<Tunnel, TunnelError> {
        crate::logging::init();
        let (interface, peers) = config::validate(cfg)?;
        let tunnel = Self::assemble(interface, clock)?;
        {
            let now = tunnel.now();
            let mut st = lock(&tunnel.state);
            for p in peers {
                Self::add_peer_locked(&mut st, now, p)?;
            }
        }
        log::info!("tunnel created with {} peer(s)", cfg.peers.len());
        Ok(tunnel)
    }

    /// A tunnel whose peers are the members of a cluster (see `cluster.rs`).
    pub(crate) fn build_cluster(cfg: ClusterConfig, clock: Clock) -> Result<Tunnel, TunnelError> {
        crate::logging::init();
        let join = cluster::validate(cfg)?;
        let nucleus_endpoint = join.client.nucleus_endpoint;
        let tunnel = Self::assemble(join.interface, clock)?;
        {
            let now = tunnel.now();
            let mut st = lock(&tunnel.state);
            let mut client = Client::new(join.client, join.cluster);
            let nucleus_peer = client.start(now, &mut st.node).map_err(error::start_error)?;
            st.cluster = Some(Cluster {
                client,
                nucleus_peer,
                nucleus_endpoint,
                vip: join.vip,
                vip6: join.vip6,
                scratch: Vec::new(),
            });
            st.pump(now);
        }
        log::info!("joining a cluster through the Nucleus at {nucleus_endpoint}");
        Ok(tunnel)
    }

    fn add_peer_locked(st: &mut State, now: Instant, p: config::Peer) -> Result<PeerId, TunnelError> {
        let key = key_string(&p.public_key);
        let (endpoint, hostname) = match p.endpoint {
            Some(EndpointSpec::Addr(a)) => (Some(a), None),
            Some(EndpointSpec::Host(h, port)) => (None, Some((h, port))),
            None => (None, None),
        };
        let id = st
            .node
            .add_peer(
                now,
                PeerConfig {
                    public_key: p.public_key,
                    preshared_key: p.preshared_key,
                    endpoint,
                    persistent_keepalive: None,
                },
            )
            .map_err(|e| error::add_peer_error(e, &key))?;
        for net in p.allowed_ips {
            if let Err(e) = st.node.add_allowed_ip(id, net) {
                st.node.remove_peer(id);
                return Err(error::route_error(e, &key));
            }
        }
        // Set after the routes so the first keepalive finds a complete peer.
        if p.persistent_keepalive.is_some() {
            st.node.set_persistent_keepalive(now, id, p.persistent_keepalive);
        }
        st.peers.insert(id, PeerMeta::new(p.public_key, hostname, false));
        Ok(id)
    }

    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn peer_id(st: &State, key: &str) -> Result<PeerId, TunnelError> {
        let pk = config::parse_public_key(key)?;
        st.node.peer_by_key(&pk).ok_or_else(|| TunnelError::UnknownPeer { public_key: key.to_owned() })
    }

    fn send_error(st: &State, e: omni_core::node::SendError) -> TunnelError {
        use omni_core::node::SendError as E;
        let key = |id: PeerId| st.peers.get(&id).map(|m| key_string(&m.public_key)).unwrap_or_default();
        match e {
            E::BufferTooSmall { needed } => TunnelError::BufferTooSmall { needed: needed as u64 },
            E::NotIp => TunnelError::NotIp,
            E::NoRoute => TunnelError::NoRoute,
            E::NoEndpoint { peer } => TunnelError::NoEndpoint { public_key: key(peer) },
            E::QueueFull { peer } => TunnelError::QueueFull { public_key: key(peer) },
            E::UnknownPeer => TunnelError::UnknownPeer { public_key: String::new() },
            other => TunnelError::Internal { detail: format!("{other:?}") },
        }
    }

    // ----- the buffer-based packet path (C API, JNI) -----------------------

    /// Encrypts `packet` into `out`. `Ok(None)`: queued until a handshake
    /// completes (or, in a cluster, a relay path is up).
    pub(crate) fn send_ip_into(
        &self,
        now: Instant,
        packet: &[u8],
        out: &mut [u8],
    ) -> Result<Option<Transmit>, SendError> {
        let mut st = self.lock();
        let r = st.node.send_ip(now, packet, out);
        st.sent(now, r, out)
    }

    /// Zero-copy send: the packet is at `buf[IN_PLACE_OFFSET..][..len]`.
    pub(crate) fn send_ip_in_place(
        &self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Option<Transmit>, SendError> {
        let mut st = self.lock();
        let r = st.node.send_ip_in_place(now, buf, len);
        st.sent(now, r, buf)
    }

    pub(crate) fn handle_datagram_into(
        &self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Received, RxError> {
        let mut st = self.lock();
        if st.cluster.is_none() {
            let r = st.node.handle_datagram(now, from, datagram, out);
            if r.is_err() {
                st.rejected = st.rejected.saturating_add(1);
            }
            return r.map_err(RxError::Recv);
        }
        let r = st.node.handle_datagram_with_control(now, from, datagram, out);
        st.received(now, r, out, 0, 0)
    }

    /// Zero-copy receive: `buf` holds exactly the datagram; a packet ends up
    /// at `buf[IN_PLACE_OFFSET..][..len]`, a reply at `buf[..len]`.
    pub(crate) fn handle_datagram_in_place(
        &self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<Received, RxError> {
        let mut st = self.lock();
        if st.cluster.is_none() {
            let r = st.node.handle_datagram_in_place(now, from, buf);
            if r.is_err() {
                st.rejected = st.rejected.saturating_add(1);
            }
            return r.map_err(RxError::Recv);
        }
        let r = st.node.handle_datagram_in_place_with_control(now, from, buf);
        st.received(now, r, buf, IN_PLACE_OFFSET, IN_PLACE_OFFSET)
    }

    pub(crate) fn poll_transmit_into(&self, now: Instant, out: &mut [u8]) -> Result<Option<Transmit>, SendError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let r = match st.cluster.as_mut() {
            None => st.node.poll_transmit(now, out),
            Some(c) => {
                let r = c.client.poll_transmit(now, &mut st.node, out);
                st.pump(now);
                r
            }
        };
        r
    }

    pub(crate) fn handle_timeout_at(&self, now: Instant) {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.node.handle_timeout(now);
        if st.cluster.is_some() {
            st.pump(now);
            if let Some(c) = st.cluster.as_mut() {
                c.client.handle_timeout(now, &mut st.node);
            }
            st.pump(now);
        }
    }

    /// The network changed: fresh handshakes; in a cluster, a heartbeat so the
    /// Nucleus sees (and tells the members) our new address.
    pub(crate) fn rebind_at(&self, now: Instant) {
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(c) = st.cluster.as_mut() {
            c.client.network_changed(now);
        }
        // Sessions rehandshake, and handshakes in flight start over from the
        // new address at once instead of at their retransmit timer.
        st.node.rebind(now);
    }

    pub(crate) fn poll_timeout_instant(&self) -> Option<Instant> {
        let st = self.lock();
        let client = st.cluster.as_ref().and_then(|c| c.client.poll_timeout());
        [st.node.poll_timeout(), client].into_iter().flatten().min()
    }

    /// Whether this tunnel joined a cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.lock().cluster.is_some()
    }

    /// The next translated event.
    pub(crate) fn next_event(&self) -> Option<TunnelEvent> {
        let now = self.now();
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(e) = st.events.pop_front() {
            return Some(e);
        }
        if st.cluster.is_some() {
            st.pump(now);
            return st.events.pop_front();
        }
        loop {
            let e = st.node.poll_event()?;
            if let Some(t) = translate(&st.node, &mut st.peers, None, e) {
                return Some(t);
            }
        }
    }
}

#[uniffi::export]
impl Tunnel {
    /// A tunnel from a structured config, on the system clock.
    #[uniffi::constructor]
    pub fn new(config: TunnelConfig) -> Result<Arc<Self>, TunnelError> {
        Tunnel::build(&config, Clock::System).map(Arc::new)
    }

    /// A tunnel from wg-quick text, on the system clock.
    #[uniffi::constructor]
    pub fn from_wg_quick(text: String) -> Result<Arc<Self>, TunnelError> {
        let cfg = config::parse_wg_quick(&text)?;
        Tunnel::build(&cfg, Clock::System).map(Arc::new)
    }

    /// A tunnel whose time comes from the host's clock.
    #[uniffi::constructor]
    pub fn with_clock(config: TunnelConfig, clock: Arc<dyn HostClock>) -> Result<Arc<Self>, TunnelError> {
        Tunnel::build(&config, Clock::Host(clock)).map(Arc::new)
    }

    /// A tunnel that joins a cluster through its Nucleus (on the system
    /// clock): its peers are the cluster's members, found, punched through
    /// NATs and relayed by the Nucleus client as they come and go. Nothing is
    /// sent yet: drain `poll_transmit` (the Nucleus handshake and `Hello`),
    /// then drive it like any tunnel; watch `poll_event` for `ClusterJoined`,
    /// `MemberJoined`, … Call `leave_cluster` (and drain) before dropping it.
    /// A host name in `nucleus_endpoint` is resolved here (blocking).
    #[uniffi::constructor]
    pub fn join_cluster(config: ClusterConfig) -> Result<Arc<Self>, TunnelError> {
        Tunnel::build_cluster(config, Clock::System).map(Arc::new)
    }

    /// `join_cluster` on the host's clock.
    #[uniffi::constructor]
    pub fn join_cluster_with_clock(config: ClusterConfig, clock: Arc<dyn HostClock>) -> Result<Arc<Self>, TunnelError> {
        Tunnel::build_cluster(config, Clock::Host(clock)).map(Arc::new)
    }

    /// Our public key (base64).
    pub fn public_key(&self) -> String {
        self.lock().node.public_key().map(|k| key_string(&k)).unwrap_or_default()
    }

    /// Addresses, routes, DNS and MTU for the platform's VPN builder.
    pub fn interface_settings(&self) -> InterfaceSettings {
        let st = self.lock();
        let mut routes = Vec::new();
        if let Some(c) = &st.cluster {
            // The cluster's subnet: members come and go inside it (a VPN
            // builder's routes are fixed once the interface is up).
            for (vip, prefix) in [Some(c.vip), c.vip6].into_iter().flatten() {
                if let Ok(net) = AllowedIp::new(vip, prefix) {
                    routes.push(IpNetwork { address: net.addr().to_string(), prefix_length: net.cidr() });
                }
            }
        }
        st.node.for_each_peer(|id| {
            if st.peers.get(&id).is_none_or(|m| m.member) {
                return; // the Nucleus, members (inside the subnet)
            }
            st.node.for_each_allowed_ip(id, |net| {
                let n = IpNetwork { address: net.addr().to_string(), prefix_length: net.cidr() };
                if !routes.contains(&n) {
                    routes.push(n);
                }
            })
        });
        let i = &self.interface;
        InterfaceSettings {
            addresses: i
                .addresses
                .iter()
                .map(|(a, p)| IpNetwork { address: a.to_string(), prefix_length: *p })
                .collect(),
            routes,
            dns_servers: i.dns_servers.iter().map(IpAddr::to_string).collect(),
            search_domains: i.search_domains.clone(),
            mtu: st.node.mtu(),
            listen_port: i.listen_port,
        }
    }

    /// Feeds one datagram received on the UDP socket from `from` (`ip:port`).
    /// Then drain `poll_transmit`.
    pub fn handle_datagram(&self, from: String, datagram: Vec<u8>) -> Result<DatagramOutcome, TunnelError> {
        let from: SocketAddr = from.parse().map_err(|_| TunnelError::address(&from, "expected ip:port"))?;
        let mut out = vec![0u8; datagram.len().max(148)];
        let now = self.now();
        Ok(match self.handle_datagram_into(now, from, &datagram, &mut out) {
            Ok(r) => outcome(r, out),
            Err(e) => DatagramOutcome::Rejected { reason: error::recv_reason(e).to_owned() },
        })
    }

    /// Encrypts an IP packet read from the TUN device. `None`: it waits for a
    /// handshake (drain `poll_transmit` to send the initiation).
    pub fn send_ip(&self, packet: Vec<u8>) -> Result<Option<Datagram>, TunnelError> {
        let mut out = vec![0u8; packet.len() + CLUSTER_OVERHEAD];
        let now = self.now();
        match self.send_ip_into(now, &packet, &mut out) {
            Ok(Some(t)) => {
                out.truncate(t.len);
                Ok(Some(Datagram { endpoint: t.to.to_string(), data: out }))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Self::send_error(&self.lock(), e)),
        }
    }

    /// Encrypts several packets at once (one call across the language
    /// boundary instead of one per packet: what iOS' `readPackets` hands over).
    /// Returns the datagrams to send, in order; packets queued behind a
    /// handshake give none (drain `poll_transmit`), and packets that cannot be
    /// sent (no route, not IP, …) are dropped and counted in
    /// `TunnelStats.packets_dropped`.
    pub fn send_ip_batch(&self, packets: Vec<Vec<u8>>) -> Vec<Datagram> {
        let now = self.now();
        let mut st = self.lock();
        let mut datagrams = Vec::with_capacity(packets.len());
        for packet in packets {
            let mut out = vec![0u8; packet.len() + CLUSTER_OVERHEAD];
            let r = st.node.send_ip(now, &packet, &mut out);
            match st.sent(now, r, &mut out) {
                Ok(Some(t)) => {
                    out.truncate(t.len);
                    datagrams.push(Datagram { endpoint: t.to.to_string(), data: out });
                }
                Ok(None) => {}
                Err(e) => {
                    log::trace!("packet dropped: {e:?}");
                    st.packets_dropped = st.packets_dropped.saturating_add(1);
                }
            }
        }
        datagrams
    }

    /// Handles several received datagrams at once: `endpoint` of each is
    /// where it came from. One outcome per datagram, in order.
    pub fn handle_datagram_batch(&self, datagrams: Vec<Datagram>) -> Vec<DatagramOutcome> {
        let now = self.now();
        datagrams
            .into_iter()
            .map(|d| {
                let Ok(from) = d.endpoint.parse::<SocketAddr>() else {
                    return DatagramOutcome::Rejected { reason: "bad-endpoint".to_owned() };
                };
                let mut out = vec![0u8; d.data.len().max(148)];
                match self.handle_datagram_into(now, from, &d.data, &mut out) {
                    Ok(r) => outcome(r, out),
                    Err(e) => DatagramOutcome::Rejected { reason: error::recv_reason(e).to_owned() },
                }
            })
            .collect()
    }

    /// The next datagram to send (handshakes, queued data, keepalives,
    /// signaling with the Nucleus), or None.
    pub fn poll_transmit(&self) -> Result<Option<Datagram>, TunnelError> {
        let mut out = vec![0u8; MAX_DATAGRAM];
        let now = self.now();
        match self.poll_transmit_into(now, &mut out) {
            Ok(Some(t)) => {
                out.truncate(t.len);
                Ok(Some(Datagram { endpoint: t.to.to_string(), data: out }))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Self::send_error(&self.lock(), e)),
        }
    }

    /// Every datagram `poll_transmit` would give, at once.
    pub fn drain_transmits(&self) -> Result<Vec<Datagram>, TunnelError> {
        let mut v = Vec::new();
        while let Some(d) = self.poll_transmit()? {
            v.push(d);
        }
        Ok(v)
    }

    /// The next deadline on the tunnel's clock (nanoseconds), if any.
    pub fn poll_timeout_nanos(&self) -> Option<u64> {
        self.poll_timeout_instant().map(Instant::as_nanos)
    }

    /// Milliseconds from now until `handle_timeout` is due (0: now), if any
    /// timer is armed. Rounded up, so a host that sleeps this long is never early.
    pub fn next_timeout_millis(&self) -> Option<u64> {
        let deadline = self.poll_timeout_instant()?;
        let nanos = deadline.saturating_duration_since(self.now()).as_nanos();
        Some(u64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(u64::MAX))
    }

    /// Fires the timers that are due. Then drain `poll_transmit`.
    pub fn handle_timeout(&self) {
        self.handle_timeout_at(self.now());
    }

    /// The next event, if any.
    pub fn poll_event(&self) -> Option<TunnelEvent> {
        self.next_event()
    }

    pub fn stats(&self) -> TunnelStats {
        let now = self.now();
        let st = self.lock();
        let mut peers = Vec::new();
        for (&id, meta) in &st.peers {
            let Some(s) = st.node.peer_stats(id) else { continue };
            let mut allowed_ips = Vec::new();
            st.node.for_each_allowed_ip(id, |n| allowed_ips.push(n.to_string()));
            peers.push(PeerStatus {
                public_key: key_string(&meta.public_key),
                endpoint: s.endpoint.map(|e| e.to_string()),
                allowed_ips,
                persistent_keepalive: s.persistent_keepalive,
                last_handshake_age_nanos: s
                    .last_handshake
                    .map(|t| u64::try_from(now.saturating_duration_since(t).as_nanos()).unwrap_or(u64::MAX)),
                rx_bytes: s.rx_bytes,
                tx_bytes: s.tx_bytes,
                has_session: s.has_session,
            });
        }
        TunnelStats {
            rx_bytes: peers.iter().map(|p| p.rx_bytes).sum(),
            tx_bytes: peers.iter().map(|p| p.tx_bytes).sum(),
            peers,
            datagrams_rejected: st.rejected,
            events_dropped: st.node.events_dropped().saturating_add(st.events_lost),
            packets_dropped: st.packets_dropped,
        }
    }

    /// Adds a peer at run time.
    pub fn add_peer(&self, peer: PeerSpec) -> Result<(), TunnelError> {
        let p = config::validate_peer(&peer)?;
        let now = self.now();
        Self::add_peer_locked(&mut self.lock(), now, p).map(|_| ())
    }

    /// Removes a peer (its sessions and routes).
    pub fn remove_peer(&self, public_key: String) -> Result<(), TunnelError> {
        let mut st = self.lock();
        let id = Self::peer_id(&st, &public_key)?;
        if st.peers.get(&id).is_some_and(|m| m.member) {
            return Err(TunnelError::config(0, "cluster members are managed by the Nucleus"));
        }
        st.node.remove_peer(id);
        st.peers.remove(&id);
        Ok(())
    }

    /// Sets a peer's endpoint (`ip:port`), e.g. after the host resolved a name itself.
    pub fn set_peer_endpoint(&self, public_key: String, endpoint: String) -> Result<(), TunnelError> {
        let addr: SocketAddr = endpoint.parse().map_err(|_| TunnelError::address(&endpoint, "expected ip:port"))?;
        let mut st = self.lock();
        let id = Self::peer_id(&st, &public_key)?;
        st.node.set_endpoint(id, Some(addr));
        if let Some(m) = st.peers.get_mut(&id) {
            m.endpoint_needed = false;
        }
        Ok(())
    }

    /// Peers whose endpoint is a host name not resolved yet, as `host:port`.
    pub fn unresolved_endpoints(&self) -> Vec<String> {
        let st = self.lock();
        st.peers
            .iter()
            .filter_map(|(&id, m)| {
                let (h, p) = m.hostname.as_ref()?;
                let has = st.node.peer_stats(id).is_some_and(|s| s.endpoint.is_some());
                (!has).then(|| format!("{h}:{p}"))
            })
            .collect()
    }

    /// Resolves every host-name endpoint again (blocking DNS: call it off the
    /// main thread, after creating the tunnel and after a network change).
    /// Returns how many endpoints changed.
    pub fn resolve_endpoints(&self) -> u32 {
        let names: Vec<(PeerId, String, u16)> = {
            let st = self.lock();
            st.peers.iter().filter_map(|(&id, m)| m.hostname.clone().map(|(h, p)| (id, h, p))).collect()
        };
        let mut changed = 0u32;
        for (id, host, port) in names {
            // Resolve without holding the lock: DNS may take seconds.
            let Some(addr) = resolve(&host, port) else {
                log::warn!("could not resolve {host}:{port}");
                continue;
            };
            let mut st = self.lock();
            let old = st.node.peer_stats(id).and_then(|s| s.endpoint);
            if old != Some(addr) && st.node.set_endpoint(id, Some(addr)) {
                changed += 1;
                if let Some(m) = st.peers.get(&id) {
                    let e = TunnelEvent::EndpointChanged {
                        public_key: key_string(&m.public_key),
                        endpoint: addr.to_string(),
                    };
                    let st = &mut *st;
                    push_event(&mut st.events, &mut st.events_lost, e);
                }
            }
        }
        changed
    }

    /// The host's network changed (Wi-Fi ↔ cellular, new address): the host
    /// has recreated (and on Android protected) its UDP socket. Fresh
    /// handshakes start with every peer that has an endpoint; drain
    /// `poll_transmit`. Call `resolve_endpoints` too if peers use host names.
    pub fn on_network_changed(&self) {
        log::info!("network changed: rebinding");
        self.rebind_at(self.now());
    }

    /// The device is going to sleep. Nothing needs to happen (no tick runs),
    /// but it is logged so traces explain the silence.
    pub fn on_sleep(&self) {
        log::debug!("host going to sleep");
    }

    /// The device woke up: fire the timers that passed while asleep and, since
    /// NAT mappings rarely survive a sleep, start fresh handshakes.
    pub fn on_wake(&self) {
        let now = self.now();
        log::debug!("host woke up");
        self.handle_timeout_at(now);
        self.rebind_at(now);
    }

    /// Current time on the tunnel's clock (nanoseconds).
    pub fn now_nanos(&self) -> u64 {
        self.now().as_nanos()
    }

    /// The cluster side of a tunnel created by `join_cluster` (None for a
    /// tunnel of configured peers): registration, our VIP and NAT mapping,
    /// and every member with its path.
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        let now = self.now();
        let st = self.lock();
        let c = st.cluster.as_ref()?;
        let mut members = Vec::new();
        c.client.members().values().for_each(|m| {
            let s = st.node.peer_stats(m.peer);
            members.push(ClusterMember {
                public_key: key_string(&m.key),
                vip: m.vip.to_string(),
                vip6: m.vip2.map(|v| v.to_string()),
                endpoint: s.and_then(|s| s.endpoint).map(|e| e.to_string()),
                reflexive_endpoint: m.reflexive.map(|e| e.to_string()),
                path: cluster::path(m.path),
                last_handshake_age_nanos: s
                    .and_then(|s| s.last_handshake)
                    .map(|t| u64::try_from(now.saturating_duration_since(t).as_nanos()).unwrap_or(u64::MAX)),
                rx_bytes: s.map_or(0, |s| s.rx_bytes),
                tx_bytes: s.map_or(0, |s| s.tx_bytes),
            });
        });
        members.sort_by(|a, b| a.vip.cmp(&b.vip));
        let stats = c.client.stats();
        Some(ClusterStatus {
            state: cluster::state(c.client.state()),
            vip: format!("{}/{}", c.vip.0, c.vip.1),
            vip6: c.vip6.map(|(ip, p)| format!("{ip}/{p}")),
            nucleus_endpoint: c.nucleus_endpoint.to_string(),
            reflexive_endpoint: c.client.reflexive().map(|r| r.to_string()),
            members,
            list_version: c.client.list_version(),
            signaling_sent: stats.sent,
            signaling_received: stats.received,
            relayed_out: stats.relayed_out,
            relayed_in: stats.relayed_in,
        })
    }

    /// Leaves the cluster: every member is removed (`MemberLeft` events) and
    /// a `Leave` for the Nucleus is queued: drain `poll_transmit` and send it
    /// before closing the socket, so the others drop us at once. No-op for a
    /// plain tunnel.
    pub fn leave_cluster(&self) {
        let now = self.now();
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(c) = st.cluster.as_mut() {
            c.client.leave(now, &mut st.node);
            log::info!("leaving the cluster");
        }
        st.pump(now);
    }

    /// Our socket's addresses on the phone's own networks changed (`ip:port`,
    /// at most 4): announced to the members through the Nucleus, for direct
    /// paths on a shared LAN. Call it after `on_network_changed`.
    pub fn set_local_endpoints(&self, endpoints: Vec<String>) -> Result<(), TunnelError> {
        let locals = cluster::parse_local_endpoints(&endpoints)?;
        let now = self.now();
        let mut st = self.lock();
        let Some(c) = st.cluster.as_mut() else { return Err(TunnelError::NotInCluster) };
        // At most MAX_LOCAL_ENDPOINTS (checked by the parser), so the collect cannot overflow.
        c.client.set_local_endpoints(now, locals.into_iter().collect());
        Ok(())
    }

    /// A handle for the JNI packet path (`net.omninervous.ffi.OmniNative`).
    /// It holds a strong reference: release it with `OmniNative.release`.
    pub fn packet_handle(self: Arc<Self>) -> u64 {
        Arc::into_raw(self) as usize as u64
    }
}
