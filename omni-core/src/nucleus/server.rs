//! The Nucleus: a sans-IO signaling server (the `alloc` feature). The host
//! (omni-daemon `--mode nucleus`) only moves datagrams and time in and out.
//!
//! It owns a [`Node`] whose peers are the edges: any key may complete a
//! WireGuard handshake with it (a session is created for a new key, with
//! per-source limits and a cap on sessions that are not members), and each
//! session is a control peer whose payloads are signaling messages. A
//! session becomes a member by proving, inside the session, knowledge of its
//! cluster's private key (see [`cluster`](super::cluster)).

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use super::cluster::AuthKey;
use super::wire::{
    self, Challenge, ChallengeMsg, ErrorCode, ErrorReply, HeartbeatAck, ListKind, Message, PeerEntry, PeerListWriter,
    PeerRef, Register, RegisterOk, RelayData, MAX_LOCAL_ENDPOINTS, MAX_MESSAGE_LEN,
};
use crate::allowed_ips::TrieRoutes;
use crate::cookie::RateLimiter;
use crate::crypto::CryptoProvider;
use crate::keys::{PublicKey, StaticSecret};
use crate::node::{
    AcceptError, Accepted, Arrival, Event, Incoming, Node, NodeConfig, PeerConfig, PeerId, Received, RecvError,
    SendError, Sent, Transmit, UnknownInitiation,
};
use crate::noise::handshake::LocalStatic;
use crate::peer::Peer;
use crate::replay::ReplayWindow;
use crate::storage::{Slab, Storage};
use crate::time::{Instant, WallTime};

/// How often expiry runs (member timeouts are accurate to this).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// A member whose acknowledged peer-list version lags this long after our
/// last push to it gets the full list again (a delta or page was lost).
const RESYNC_AFTER: Duration = Duration::from_secs(1);
const EVENT_CAPACITY: usize = 1024;
/// The node's timers (keepalives, session expiry and key erasure of the edges'
/// sessions) run at most this often: a pass visits every peer, and with
/// 100,000 sessions some timer is always due, so running them at every
/// deadline would visit every peer for nearly every datagram. None of the
/// Nucleus's timers needs more precision (it only responds to handshakes).
const NODE_TIMER_TICK: Duration = Duration::from_millis(250);

/// Tunables of the Nucleus.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Heartbeat interval members are told to keep.
    pub heartbeat_secs: u16,
    /// A member silent for this long is removed (and its peers told).
    pub member_timeout: Duration,
    /// A session that does not become a member within this long is dropped.
    pub pending_timeout: Duration,
    /// Create a cluster when the first member proves its key (trust on first
    /// use of the cluster key). `false`: only clusters added with
    /// [`NucleusServer::add_cluster`] exist.
    pub open_clusters: bool,
    /// Relay datagrams between members of a cluster.
    pub relay: bool,
    /// Relayed bytes per second per member (burst: two seconds' worth).
    pub relay_bytes_per_sec: u32,
    /// Sessions (members and not-yet-members).
    pub max_sessions: usize,
    /// Sessions that are not members.
    pub max_pending: usize,
    pub max_clusters: usize,
    pub max_cluster_members: usize,
    /// Signaling messages per second per source address (IPv6: per /64);
    /// burst: twice that. Relayed data has its own budget.
    pub control_rate: u32,
    /// New sessions (handshakes from unknown keys) per second per source.
    pub new_session_rate: u32,
    /// Source addresses tracked by each rate limiter.
    pub limiter_sources: usize,
    /// Outbound messages queued at most (beyond: dropped and counted).
    pub max_queue: usize,
    /// Passed to the node: handshakes per second before cookies are demanded.
    pub under_load_threshold: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            heartbeat_secs: 15,
            member_timeout: Duration::from_secs(60),
            pending_timeout: Duration::from_secs(30),
            open_clusters: true,
            relay: true,
            relay_bytes_per_sec: 1 << 20,
            max_sessions: 1 << 20,
            max_pending: 1 << 14,
            max_clusters: 1 << 20,
            max_cluster_members: 1 << 14,
            control_rate: 100,
            new_session_rate: 20,
            limiter_sources: 1 << 16,
            max_queue: 1 << 20,
            under_load_threshold: 4096,
        }
    }
}

/// What the host does with the datagram's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Nothing to send back (drain [`NucleusServer::poll_transmit`]).
    Done,
    /// Send `out[..len]` back to the datagram's source.
    Reply { len: usize },
}

/// Why a member left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LeaveReason {
    Left,
    Expired,
    /// It registered in another cluster.
    Moved,
}

/// For logs and metrics. Never carries secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    ClusterCreated {
        cluster: PublicKey,
    },
    ClusterRemoved {
        cluster: PublicKey,
    },
    MemberJoined {
        cluster: PublicKey,
        key: PublicKey,
        vip: IpAddr,
        endpoint: Option<SocketAddr>,
    },
    MemberLeft {
        cluster: PublicKey,
        key: PublicKey,
        reason: LeaveReason,
    },
    /// A registration was refused (wrong proof, VIP taken, …).
    Refused {
        key: PublicKey,
        code: ErrorCode,
    },
}

/// Counters (all saturating).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub datagrams: u64,
    /// Datagrams the node dropped (bad MAC, replays, unknown index, …).
    pub dropped: u64,
    pub sessions_opened: u64,
    /// New sessions refused by the per-source limit or the session caps.
    pub sessions_refused: u64,
    pub messages: u64,
    /// Signaling payloads that did not parse, or came in the wrong direction.
    pub malformed: u64,
    pub rate_limited: u64,
    pub unauthorized: u64,
    pub challenge_expired: u64,
    pub vip_conflicts: u64,
    pub registrations: u64,
    pub leaves: u64,
    pub expired: u64,
    pub punches: u64,
    pub relayed: u64,
    pub relayed_bytes: u64,
    pub relay_refused: u64,
    pub queue_dropped: u64,
    pub send_failed: u64,
    pub events_dropped: u64,
}

fn bump(c: &mut u64) {
    *c = c.saturating_add(1);
}

/// The replay window of the Nucleus's sessions: 128 counters (40 bytes per
/// session instead of the host window's 1032). Signaling and relayed data
/// from one edge travel one path to the Nucleus at modest rates (the relay
/// budget is 1 MiB/s per member); a datagram overtaken by more than 128
/// later ones of the same session is dropped, which costs one retransmission.
pub type ControlReplay = ReplayWindow<3>;

/// The node tables of the Nucleus: the host tables of
/// [`Heap`](crate::storage::Heap) with the small [`ControlReplay`] window
/// (most of a peer's RAM is its three sessions' windows) and a peer table
/// whose inserts do not scan it (see [`PeerSlab`]).
#[derive(Debug)]
pub struct NucleusStorage;

impl<C: CryptoProvider> Storage<C> for NucleusStorage {
    type Replay = ControlReplay;
    type Peers = PeerSlab<Peer<C, ControlReplay>>;
    type Keys = BTreeMap<PublicKey, PeerId>;
    type Indexes = BTreeMap<u32, PeerId>;
    type Routes = TrieRoutes<PeerId>;
    type Pending = VecDeque<PeerId>;
    type Events = VecDeque<Event>;
    type Limiter = RateLimiter<256>;
    const MAX_EVENTS: usize = EVENT_CAPACITY;
}

/// A growable slot table for many peers: free slots are found from a list
/// gathered by a scan that runs at most once per `len / 8` inserts (each
/// listed slot is checked to be still free when used), so inserting is
/// amortized O(1) rather than a scan of every slot.
#[derive(Debug)]
pub struct PeerSlab<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    since_scan: usize,
}

impl<T> Default for PeerSlab<T> {
    fn default() -> Self {
        PeerSlab { slots: Vec::new(), free: Vec::new(), since_scan: 0 }
    }
}

impl<T> Slab<T> for PeerSlab<T> {
    fn slots(&self) -> &[Option<T>] {
        &self.slots
    }
    fn slots_mut(&mut self) -> &mut [Option<T>] {
        &mut self.slots
    }
    fn insert(&mut self, value: T) -> Result<usize, T> {
        let mut value = Some(value);
        loop {
            while let Some(i) = self.free.pop() {
                if let Some(slot @ None) = self.slots.get_mut(i) {
                    *slot = value.take();
                    return Ok(i);
                }
            }
            self.since_scan = self.since_scan.saturating_add(1);
            if self.since_scan <= self.slots.len() / 8 {
                break;
            }
            self.since_scan = 0;
            // Highest first, so the lowest free slot is used first.
            self.free = self.slots.iter().enumerate().rev().filter(|(_, s)| s.is_none()).map(|(i, _)| i).collect();
            if self.free.is_empty() {
                break;
            }
        }
        self.slots.push(value);
        Ok(self.slots.len().saturating_sub(1))
    }
}

#[derive(Debug)]
struct Membership {
    cluster: PublicKey,
    vip: IpAddr,
    vip2: Option<IpAddr>,
    /// Announced local endpoints (most members announce one or two; none
    /// costs no allocation).
    locals: alloc::boxed::Box<[SocketAddr]>,
    reflexive: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy)]
struct Cursor {
    version: u32,
    after: Option<PeerId>,
}

/// What the Nucleus keeps per session (per edge key; the key itself is the
/// node peer's, not repeated here).
#[derive(Debug)]
struct Session {
    last_seen: Instant,
    /// The challenge of our last reply, and the one before (a request may
    /// cross a reply).
    challenge: Challenge,
    prev_challenge: Option<Challenge>,
    member: Option<Membership>,
    /// A full list being streamed (rare: boxed).
    full_list: Option<alloc::boxed::Box<Cursor>>,
    in_work: bool,
    /// The peer-list version the member acknowledged, and when we last
    /// pushed list data to it.
    acked: u32,
    pushed_at: Instant,
    relay_tokens: u64,
    relay_last: Instant,
}

struct Cluster {
    auth: AuthKey,
    /// Members by session (their keys are the node's).
    members: BTreeSet<PeerId>,
    /// Who holds each VIP.
    vips: BTreeMap<IpAddr, PeerId>,
    version: u32,
    /// Added by [`NucleusServer::add_cluster`]: kept when empty.
    provisioned: bool,
}

/// Token buckets per source address in two generations of bounded maps:
/// when the current one is full it becomes the previous one (so memory stays
/// bounded under floods from many addresses while active sources keep their
/// state).
#[derive(Debug)]
struct SourceLimiter {
    token_ns: u64,
    max_ns: u64,
    cap: usize,
    current: BTreeMap<[u8; 16], (u64, Instant)>,
    previous: BTreeMap<[u8; 16], (u64, Instant)>,
}

impl SourceLimiter {
    fn new(rate: u32, cap: usize) -> Self {
        let token_ns = 1_000_000_000u64.checked_div(u64::from(rate.max(1))).unwrap_or(1).max(1);
        SourceLimiter {
            token_ns,
            max_ns: token_ns.saturating_mul(u64::from(rate.max(1)).saturating_mul(2)),
            cap: cap.max(1),
            current: BTreeMap::new(),
            previous: BTreeMap::new(),
        }
    }

    fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let key = source_key(ip);
        let (tokens, last) = match self.current.get(&key).copied().or_else(|| self.previous.remove(&key)) {
            Some(b) => b,
            None => (self.max_ns, now),
        };
        let elapsed = u64::try_from(now.saturating_duration_since(last).as_nanos()).unwrap_or(u64::MAX);
        let tokens = tokens.saturating_add(elapsed).min(self.max_ns);
        let (ok, left) = match tokens.checked_sub(self.token_ns) {
            Some(left) => (true, left),
            None => (false, tokens),
        };
        if !self.current.contains_key(&key) && self.current.len() >= self.cap {
            self.previous = core::mem::take(&mut self.current);
        }
        self.current.insert(key, (left, now));
        ok
    }
}

fn source_key(ip: IpAddr) -> [u8; 16] {
    let mut k = [0u8; 16];
    match ip {
        IpAddr::V4(a) => {
            if let Some(d) = k.get_mut(..4) {
                d.copy_from_slice(&a.octets());
            }
            if let Some(t) = k.get_mut(15) {
                *t = 4;
            }
        }
        IpAddr::V6(a) => {
            if let (Some(d), Some(s)) = (k.get_mut(..8), a.octets().get(..8)) {
                d.copy_from_slice(s);
            }
            if let Some(t) = k.get_mut(15) {
                *t = 6;
            }
        }
    }
    k
}

/// A VIP a member may hold: unicast, not loopback/broadcast.
fn valid_vip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_loopback() || a.is_multicast()),
    }
}

/// The Nucleus.
///
/// # Calling rules
///
/// Like [`Node`]'s: every call takes `now`; the server never reads a clock.
///
/// - At start: [`set_wall_time`](Self::set_wall_time) (members without a clock
///   take their time from us); print [`public_key`](Self::public_key) for the edges.
/// - A datagram arrives on the UDP socket: [`handle_datagram`](Self::handle_datagram);
///   on [`Handled::Reply`] send `out[..len]` back to the source. Then drain
///   [`poll_transmit`](Self::poll_transmit) (membership changes are pushed to
///   every member of the cluster right away).
/// - Sleep until [`poll_timeout`](Self::poll_timeout), call
///   [`handle_timeout`](Self::handle_timeout), drain [`poll_transmit`](Self::poll_transmit).
/// - [`poll_event`](Self::poll_event) for logs.
///
/// Output buffers: 1700 bytes always suffice (a relayed datagram plus framing).
pub struct NucleusServer<C: CryptoProvider, R> {
    config: ServerConfig,
    node: Node<C, R, NucleusStorage>,
    local: LocalStatic<C>,
    public: PublicKey,
    rng: R,
    wall: Option<(Instant, WallTime)>,
    sessions: Vec<Option<Session>>,
    session_count: usize,
    member_count: usize,
    clusters: BTreeMap<PublicKey, Cluster>,
    outq: VecDeque<(PeerId, Arc<[u8]>)>,
    /// Members with a full list being streamed to them.
    work: VecDeque<PeerId>,
    new_sessions: SourceLimiter,
    control: SourceLimiter,
    next_sweep: Option<Instant>,
    /// The node's timers run no earlier than this (see [`NODE_TIMER_TICK`]).
    node_tick: Instant,
    events: VecDeque<ServerEvent>,
    stats: ServerStats,
    last_now: Instant,
}

impl<C: CryptoProvider, R> core::fmt::Debug for NucleusServer<C, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NucleusServer")
            .field("public_key", &self.public)
            .field("sessions", &self.session_count)
            .field("members", &self.member_count)
            .field("clusters", &self.clusters.len())
            .finish_non_exhaustive()
    }
}

impl<C, R> NucleusServer<C, R>
where
    C: CryptoProvider,
    R: rand_core::RngCore + rand_core::CryptoRng,
{
    /// A Nucleus with static key `secret`. `node_rng` drives the WireGuard
    /// node, `rng` the challenges.
    pub fn new(config: ServerConfig, secret: StaticSecret, node_rng: R, rng: R) -> Self {
        let node_config = NodeConfig {
            private_key: Some(secret.clone()),
            under_load_threshold: config.under_load_threshold,
            // Nothing is queued for the edges before a session exists.
            max_staged_packets: 16,
            ..NodeConfig::default()
        };
        let node = Node::new(node_config, node_rng);
        let local = LocalStatic::<C>::new(secret);
        let public = local.public;
        NucleusServer {
            new_sessions: SourceLimiter::new(config.new_session_rate, config.limiter_sources),
            control: SourceLimiter::new(config.control_rate, config.limiter_sources),
            config,
            node,
            local,
            public,
            rng,
            wall: None,
            sessions: Vec::new(),
            session_count: 0,
            member_count: 0,
            clusters: BTreeMap::new(),
            outq: VecDeque::new(),
            work: VecDeque::new(),
            next_sweep: None,
            node_tick: Instant::ZERO,
            events: VecDeque::new(),
            stats: ServerStats::default(),
            last_now: Instant::ZERO,
        }
    }

    /// The key edges must be configured with.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }
    pub fn stats(&self) -> ServerStats {
        self.stats
    }
    pub fn member_count(&self) -> usize {
        self.member_count
    }
    pub fn session_count(&self) -> usize {
        self.session_count
    }
    pub fn cluster_count(&self) -> usize {
        self.clusters.len()
    }
    /// Members of the cluster with public key `cluster`.
    pub fn cluster_members(&self, cluster: &PublicKey) -> usize {
        self.clusters.get(cluster).map_or(0, |c| c.members.len())
    }
    /// Messages waiting in [`poll_transmit`](Self::poll_transmit).
    pub fn queued(&self) -> usize {
        self.outq.len()
    }
    /// The WireGuard node (read-only: sessions, endpoints, counters).
    pub fn node(&self) -> &Node<C, R, NucleusStorage> {
        &self.node
    }
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The wall clock at `now` (handed to members in every reply).
    pub fn set_wall_time(&mut self, now: Instant, wall: WallTime) {
        self.wall = Some((now, wall));
        self.node.set_wall_time(now, wall);
    }

    /// Provisions a cluster (its public key, from
    /// [`ClusterSecret::public`](super::ClusterSecret::public)); required when
    /// `open_clusters` is off. Returns false for a low-order key or at capacity.
    pub fn add_cluster(&mut self, cluster: PublicKey) -> bool {
        if let Some(c) = self.clusters.get_mut(&cluster) {
            c.provisioned = true;
            return true;
        }
        if self.clusters.len() >= self.config.max_clusters {
            return false;
        }
        let Some(auth) = AuthKey::for_nucleus::<C>(&self.local.secret, &cluster) else { return false };
        self.clusters.insert(
            cluster,
            Cluster { auth, members: BTreeSet::new(), vips: BTreeMap::new(), version: 1, provisioned: true },
        );
        true
    }

    // ----- input ---------------------------------------------------------

    /// Processes one UDP datagram. See the calling rules on the type.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Handled, RecvError> {
        let now = self.clamp(now);
        bump(&mut self.stats.datagrams);
        let r = match self.node.handle_datagram_with_admission(now, from, datagram, out) {
            Ok(Arrival::Incoming(r)) => Ok(r),
            Ok(Arrival::UnknownPeer(init)) => self.open_session(now, init, out),
            Err(e) => Err(e),
        };
        let result = match r {
            Ok(Incoming::Received(Received::Reply { len })) => Ok(Handled::Reply { len }),
            Ok(Incoming::Received(_)) => Ok(Handled::Done),
            Ok(Incoming::Control { peer, len }) => {
                let payload = out.get(..len).unwrap_or(&[]);
                self.on_control(now, from, peer, payload);
                Ok(Handled::Done)
            }
            Err(e) => {
                bump(&mut self.stats.dropped);
                Err(e)
            }
        };
        self.drain_node_events();
        result
    }

    /// An initiation from a key we have no session with (opened once by the
    /// node, which checked MAC1 and cookies): admit it (limits first), and
    /// let the node add the key as a peer and answer it, made a control peer.
    /// A refused initiation is dropped: no peer is added.
    fn open_session(&mut self, now: Instant, init: UnknownInitiation, out: &mut [u8]) -> Result<Incoming, RecvError> {
        let pending = self.session_count.saturating_sub(self.member_count);
        if pending >= self.config.max_pending || self.session_count >= self.config.max_sessions {
            bump(&mut self.stats.sessions_refused);
            return Err(RecvError::RateLimited);
        }
        if !self.new_sessions.allow(now, init.source().ip()) {
            bump(&mut self.stats.sessions_refused);
            return Err(RecvError::RateLimited);
        }
        let key = init.public_key();
        match self.node.accept_initiation(now, init, PeerConfig::new(key), out) {
            Ok(Accepted { peer: id, len }) => {
                self.node.set_control_peer(id, true);
                let challenge = self.random_challenge();
                let session = Session {
                    last_seen: now,
                    challenge,
                    prev_challenge: None,
                    member: None,
                    full_list: None,
                    in_work: false,
                    acked: 0,
                    pushed_at: now,
                    relay_tokens: 0,
                    relay_last: now,
                };
                let slot = usize::try_from(id.0).unwrap_or(usize::MAX);
                if self.sessions.len() <= slot {
                    self.sessions.resize_with(slot.saturating_add(1), || None);
                }
                if let Some(s) = self.sessions.get_mut(slot) {
                    *s = Some(session);
                }
                self.session_count = self.session_count.saturating_add(1);
                bump(&mut self.stats.sessions_opened);
                self.arm_sweep(now);
                Ok(Incoming::Received(Received::Reply { len }))
            }
            // The initiation claimed a key it could not prove (the node kept
            // no peer for it), or the node's table is full.
            Err(AcceptError::Initiation(e)) => Err(e),
            Err(_) => Err(RecvError::UnknownPeer),
        }
    }

    fn on_control(&mut self, now: Instant, from: SocketAddr, peer: PeerId, payload: &[u8]) {
        if self.session(peer).is_none() {
            return;
        }
        let relay = wire::peek_type(payload) == Some(wire::msg_type::RELAY_DATA);
        if !relay && !self.control.allow(now, from.ip()) {
            bump(&mut self.stats.rate_limited);
            return;
        }
        let msg = match wire::parse(payload) {
            Ok(m) if m.is_from_edge() => m,
            _ => {
                bump(&mut self.stats.malformed);
                return;
            }
        };
        bump(&mut self.stats.messages);
        if let Some(s) = self.session_mut(peer) {
            s.last_seen = now;
        }
        let member = self.session(peer).is_some_and(|s| s.member.is_some());
        match msg {
            Message::Hello => {
                let challenge = self.rotate_challenge(peer);
                let time = self.wall_at(now);
                self.send(peer, &Message::Challenge(ChallengeMsg { challenge, time }));
            }
            Message::Register(r) => self.on_register(now, peer, r),
            Message::Heartbeat(h) if member => {
                if let Some(s) = self.session_mut(peer) {
                    s.acked = h.list_version;
                }
                let challenge = self.rotate_challenge(peer);
                let time = self.wall_at(now);
                let reflexive = self.endpoint_of(peer);
                let list_version = self.cluster_of(peer).map_or(0, |c| c.version);
                self.send(peer, &Message::HeartbeatAck(HeartbeatAck { challenge, time, list_version, reflexive }));
            }
            Message::Leave => {
                if member {
                    bump(&mut self.stats.leaves);
                }
                self.close_session(now, peer, LeaveReason::Left);
            }
            Message::PeerListRequest if member => self.schedule_full_list(now, peer),
            Message::ListAck(a) if member => {
                if let Some(s) = self.session_mut(peer) {
                    s.acked = a.version;
                }
            }
            Message::PunchRequest(r) if member => self.on_punch(peer, r),
            Message::RelayRequest(r) if member => {
                let same = self.same_cluster(peer, &r.key).is_some();
                if !self.config.relay {
                    self.error(peer, ErrorCode::RelayUnavailable);
                } else if !same {
                    self.error(peer, ErrorCode::UnknownPeer);
                } else {
                    self.send(peer, &Message::RelayReady(r));
                }
            }
            Message::RelayData(d) if member => self.on_relay(now, peer, d),
            Message::RelayData(_) => bump(&mut self.stats.relay_refused),
            _ => self.error(peer, ErrorCode::NotRegistered),
        }
    }

    fn on_register(&mut self, now: Instant, peer: PeerId, r: Register) {
        let Some(s) = self.session(peer) else { return };
        let Some(key) = self.key_of(peer) else { return };
        let current = s.challenge == r.challenge || s.prev_challenge == Some(r.challenge);
        if !current {
            bump(&mut self.stats.challenge_expired);
            self.error(peer, ErrorCode::ChallengeExpired);
            return;
        }
        // The challenge is spent whatever happens next.
        self.rotate_challenge(peer);
        self.rotate_challenge(peer);
        if !valid_vip(r.vip) || r.vip2.is_some_and(|v| !valid_vip(v) || v.is_ipv4() == r.vip.is_ipv4()) {
            self.refuse(peer, key, ErrorCode::BadRequest);
            return;
        }
        // Membership proof. An unknown cluster and a wrong proof get the same answer.
        let verified = match self.clusters.get(&r.cluster_key) {
            Some(c) => c.auth.verify(&r.proof, &key, &self.public, &r.cluster_key, &r.challenge, r.vip, r.vip2),
            None => {
                self.config.open_clusters
                    && AuthKey::for_nucleus::<C>(&self.local.secret, &r.cluster_key).is_some_and(|a| {
                        a.verify(&r.proof, &key, &self.public, &r.cluster_key, &r.challenge, r.vip, r.vip2)
                    })
            }
        };
        if !verified {
            bump(&mut self.stats.unauthorized);
            self.refuse(peer, key, ErrorCode::Unauthorized);
            return;
        }
        if !self.clusters.contains_key(&r.cluster_key) {
            if self.clusters.len() >= self.config.max_clusters {
                self.refuse(peer, key, ErrorCode::Capacity);
                return;
            }
            let Some(auth) = AuthKey::for_nucleus::<C>(&self.local.secret, &r.cluster_key) else { return };
            self.clusters.insert(
                r.cluster_key,
                Cluster { auth, members: BTreeSet::new(), vips: BTreeMap::new(), version: 1, provisioned: false },
            );
            self.push_event(ServerEvent::ClusterCreated { cluster: r.cluster_key });
        }
        // Already a member elsewhere: that membership ends.
        let old_cluster = self.session(peer).and_then(|s| s.member.as_ref()).map(|m| m.cluster);
        if old_cluster.is_some_and(|c| c != r.cluster_key) {
            self.remove_member(now, peer, LeaveReason::Moved);
        }
        let Some(cluster) = self.clusters.get(&r.cluster_key) else { return };
        let rejoin = cluster.members.contains(&peer);
        if !rejoin && cluster.members.len() >= self.config.max_cluster_members {
            self.refuse(peer, key, ErrorCode::Capacity);
            return;
        }
        let wanted = [Some(r.vip), r.vip2];
        if wanted.iter().flatten().any(|v| cluster.vips.get(v).is_some_and(|holder| *holder != peer)) {
            bump(&mut self.stats.vip_conflicts);
            self.refuse(peer, key, ErrorCode::VipInUse);
            return;
        }
        let reflexive = self.endpoint_of(peer);
        let Some(cluster) = self.clusters.get_mut(&r.cluster_key) else { return };
        let Some(Some(s)) = self.sessions.get_mut(usize::try_from(peer.0).unwrap_or(usize::MAX)) else { return };
        let changed = match &s.member {
            Some(m) => m.vip != r.vip || m.vip2 != r.vip2 || *m.locals != *r.locals || m.reflexive != reflexive,
            None => true,
        };
        if let Some(m) = &s.member {
            // VIPs it no longer asks for are free again.
            for old in [Some(m.vip), m.vip2].into_iter().flatten() {
                if !wanted.contains(&Some(old)) && cluster.vips.get(&old) == Some(&peer) {
                    cluster.vips.remove(&old);
                }
            }
        }
        for v in wanted.into_iter().flatten() {
            cluster.vips.insert(v, peer);
        }
        cluster.members.insert(peer);
        let fresh = s.member.is_none();
        let locals = r.locals.iter().copied().collect();
        s.member = Some(Membership { cluster: r.cluster_key, vip: r.vip, vip2: r.vip2, locals, reflexive });
        s.last_seen = now;
        // A registering edge starts over at list version 0 (below): until it
        // acknowledges the full list, it lags (and gets it again if a page,
        // or the whole list overtaking our RegisterOk, is lost).
        s.acked = 0;
        if fresh {
            self.member_count = self.member_count.saturating_add(1);
            bump(&mut self.stats.registrations);
            self.push_event(ServerEvent::MemberJoined { cluster: r.cluster_key, key, vip: r.vip, endpoint: reflexive });
        }
        let challenge = self.current_challenge(peer);
        let time = self.wall_at(now);
        let heartbeat_secs = self.config.heartbeat_secs;
        let ok = RegisterOk { vip: r.vip, vip2: r.vip2, challenge, time, heartbeat_secs, reflexive };
        self.send(peer, &Message::RegisterOk(ok));
        if changed {
            self.announce(now, peer);
        }
        // The edge starts over with a full list after every registration
        // (it may be a restarted edge, or we may be a restarted Nucleus).
        self.schedule_full_list(now, peer);
    }

    fn on_punch(&mut self, peer: PeerId, r: PeerRef) {
        let Some(target) = self.same_cluster(peer, &r.key) else {
            self.error(peer, ErrorCode::UnknownPeer);
            return;
        };
        bump(&mut self.stats.punches);
        if let (Some(ours), Some(theirs)) = (self.entry_of(peer), self.entry_of(target)) {
            self.send(target, &Message::PunchNotify(ours));
            self.send(peer, &Message::PunchNotify(theirs));
        }
    }

    fn on_relay(&mut self, now: Instant, peer: PeerId, d: RelayData<'_>) {
        let target = self.same_cluster(peer, &d.peer);
        let looks_like_wireguard = crate::wire::parse(d.datagram).is_ok();
        let (Some(target), true, true) = (target, self.config.relay, looks_like_wireguard) else {
            bump(&mut self.stats.relay_refused);
            return;
        };
        let rate = u64::from(self.config.relay_bytes_per_sec);
        let Some(s) = self.session_mut(peer) else { return };
        // Token bucket in bytes (burst: two seconds).
        let elapsed_ms = u64::try_from(now.saturating_duration_since(s.relay_last).as_millis()).unwrap_or(u64::MAX);
        let refill = rate.saturating_mul(elapsed_ms) / 1000;
        s.relay_tokens = s.relay_tokens.saturating_add(refill).min(rate.saturating_mul(2));
        s.relay_last = now;
        let cost = u64::try_from(d.datagram.len()).unwrap_or(u64::MAX);
        if s.relay_tokens < cost {
            bump(&mut self.stats.relay_refused);
            return;
        }
        s.relay_tokens = s.relay_tokens.saturating_sub(cost);
        let Some(key) = self.key_of(peer) else { return };
        bump(&mut self.stats.relayed);
        self.stats.relayed_bytes = self.stats.relayed_bytes.saturating_add(cost);
        self.send(target, &Message::RelayData(RelayData { peer: key, datagram: d.datagram }));
    }

    fn drain_node_events(&mut self) {
        while let Some(e) = self.node.poll_event() {
            if let Event::EndpointChanged { peer, endpoint } = e {
                let Some(Some(s)) = self.sessions.get_mut(usize::try_from(peer.0).unwrap_or(usize::MAX)) else {
                    continue;
                };
                if let Some(m) = s.member.as_mut() {
                    if m.reflexive != Some(endpoint) {
                        m.reflexive = Some(endpoint);
                        let now = self.last_now;
                        self.announce(now, peer);
                    }
                }
            }
        }
    }

    // ----- membership ----------------------------------------------------

    /// Tells every other member of the peer's cluster about its (new) entry.
    fn announce(&mut self, now: Instant, peer: PeerId) {
        let Some(entry) = self.entry_of(peer) else { return };
        let Some(cluster) = self.cluster_of_mut(peer) else { return };
        cluster.version = cluster.version.wrapping_add(1).max(1);
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        let Ok(mut w) =
            PeerListWriter::new(&mut buf, ListKind::Delta, cluster.version, cluster.version.wrapping_sub(1))
        else {
            return;
        };
        if !w.push_add(&entry) {
            return;
        }
        let n = w.finish();
        buf.truncate(n);
        self.broadcast(now, peer, Arc::from(buf));
    }

    /// Removes the peer's membership (not the session) and tells the cluster.
    fn remove_member(&mut self, now: Instant, peer: PeerId, reason: LeaveReason) {
        let Some(Some(s)) = self.sessions.get_mut(usize::try_from(peer.0).unwrap_or(usize::MAX)) else { return };
        let Some(m) = s.member.take() else { return };
        s.full_list = None;
        let key = self.node.peer_stats(peer).map(|p| p.public_key).unwrap_or_default();
        self.member_count = self.member_count.saturating_sub(1);
        self.push_event(ServerEvent::MemberLeft { cluster: m.cluster, key, reason });
        let Some(cluster) = self.clusters.get_mut(&m.cluster) else { return };
        cluster.members.remove(&peer);
        for vip in [Some(m.vip), m.vip2].into_iter().flatten() {
            if cluster.vips.get(&vip) == Some(&peer) {
                cluster.vips.remove(&vip);
            }
        }
        if cluster.members.is_empty() && !cluster.provisioned {
            self.clusters.remove(&m.cluster);
            self.push_event(ServerEvent::ClusterRemoved { cluster: m.cluster });
            return;
        }
        cluster.version = cluster.version.wrapping_add(1).max(1);
        let mut buf = vec![0u8; MAX_MESSAGE_LEN];
        let Ok(mut w) =
            PeerListWriter::new(&mut buf, ListKind::Delta, cluster.version, cluster.version.wrapping_sub(1))
        else {
            return;
        };
        if !w.push_remove(&key) {
            return;
        }
        let n = w.finish();
        buf.truncate(n);
        let cluster_key = m.cluster;
        self.broadcast_in(now, &cluster_key, peer, Arc::from(buf));
    }

    /// Ends the session: membership, node peer, state.
    fn close_session(&mut self, now: Instant, peer: PeerId, reason: LeaveReason) {
        self.remove_member(now, peer, reason);
        let slot = usize::try_from(peer.0).unwrap_or(usize::MAX);
        if let Some(s) = self.sessions.get_mut(slot) {
            if s.take().is_some() {
                self.session_count = self.session_count.saturating_sub(1);
            }
        }
        self.node.remove_peer(peer);
        self.outq.retain(|(p, _)| *p != peer);
    }

    /// Queues `payload` for every other member of the peer's cluster.
    fn broadcast(&mut self, now: Instant, peer: PeerId, payload: Arc<[u8]>) {
        let Some(cluster) = self.session(peer).and_then(|s| s.member.as_ref()).map(|m| m.cluster) else { return };
        self.broadcast_in(now, &cluster, peer, payload);
    }

    fn broadcast_in(&mut self, now: Instant, cluster: &PublicKey, except: PeerId, payload: Arc<[u8]>) {
        let Some(c) = self.clusters.get(cluster) else { return };
        for p in &c.members {
            if *p == except {
                continue;
            }
            if self.outq.len() >= self.config.max_queue {
                bump(&mut self.stats.queue_dropped);
                continue;
            }
            self.outq.push_back((*p, payload.clone()));
            if let Some(Some(s)) = self.sessions.get_mut(usize::try_from(p.0).unwrap_or(usize::MAX)) {
                s.pushed_at = now;
            }
        }
    }

    fn schedule_full_list(&mut self, now: Instant, peer: PeerId) {
        let version = self.cluster_of(peer).map_or(0, |c| c.version);
        let Some(s) = self.session_mut(peer) else { return };
        s.full_list = Some(alloc::boxed::Box::new(Cursor { version, after: None }));
        s.pushed_at = now;
        if !s.in_work {
            s.in_work = true;
            self.work.push_back(peer);
        }
    }

    /// The next page of a full list being streamed, as (recipient, message).
    fn next_page(&mut self, now: Instant) -> Option<(PeerId, Vec<u8>)> {
        while let Some(peer) = self.work.pop_front() {
            let slot = usize::try_from(peer.0).unwrap_or(usize::MAX);
            let Some(Some(s)) = self.sessions.get(slot) else { continue };
            let (Some(m), Some(cursor)) = (s.member.as_ref(), s.full_list.as_deref().copied()) else {
                if let Some(Some(s)) = self.sessions.get_mut(slot) {
                    s.in_work = false;
                }
                continue;
            };
            let Some(cluster) = self.clusters.get(&m.cluster) else { continue };
            // The list changed since the stream started: start over at the new version.
            let cursor = if cursor.version == cluster.version {
                cursor
            } else {
                Cursor { version: cluster.version, after: None }
            };
            let total = u32::try_from(cluster.members.len().saturating_sub(1)).unwrap_or(u32::MAX);
            let mut buf = vec![0u8; MAX_MESSAGE_LEN];
            let Ok(mut w) = PeerListWriter::new(&mut buf, ListKind::Full, cursor.version, total) else { continue };
            let range = match cursor.after {
                Some(a) => cluster.members.range((core::ops::Bound::Excluded(a), core::ops::Bound::Unbounded)),
                None => cluster.members.range(..),
            };
            let mut last = cursor.after;
            let mut done = true;
            for &p in range {
                if p == peer {
                    last = Some(p);
                    continue;
                }
                let Some(entry) = entry_from(&self.node, &self.sessions, p) else {
                    last = Some(p);
                    continue;
                };
                if !w.push_add(&entry) {
                    done = false;
                    break;
                }
                last = Some(p);
            }
            let n = w.finish();
            buf.truncate(n);
            if let Some(Some(s)) = self.sessions.get_mut(slot) {
                s.pushed_at = now;
                if done {
                    s.full_list = None;
                    s.in_work = false;
                } else {
                    s.full_list = Some(alloc::boxed::Box::new(Cursor { version: cursor.version, after: last }));
                    self.work.push_back(peer);
                }
            }
            return Some((peer, buf));
        }
        None
    }

    // ----- output --------------------------------------------------------

    /// The next datagram to send. Call until `Ok(None)`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Result<Option<Transmit>, SendError> {
        let now = self.clamp(now);
        loop {
            if let Some(t) = self.node.poll_transmit(now, out)? {
                return Ok(Some(t));
            }
            let (peer, payload): (PeerId, Arc<[u8]>) = match self.outq.pop_front() {
                Some(m) => m,
                None => match self.next_page(now) {
                    Some((p, v)) => (p, Arc::from(v)),
                    None => return Ok(None),
                },
            };
            match self.node.send_to_peer(now, peer, &payload, out) {
                Ok(Sent::Transmit(t)) => return Ok(Some(t)),
                Ok(Sent::Queued { .. }) => {}
                Err(SendError::BufferTooSmall { needed }) => {
                    self.outq.push_front((peer, payload));
                    return Err(SendError::BufferTooSmall { needed });
                }
                Err(_) => bump(&mut self.stats.send_failed),
            }
        }
    }

    // ----- time ----------------------------------------------------------

    pub fn poll_timeout(&self) -> Option<Instant> {
        let node = self.node.poll_timeout().map(|t| t.max(self.node_tick));
        match (node, self.next_sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the node's timers and expires silent members and sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        if now >= self.node_tick && self.node.poll_timeout().is_some_and(|t| t <= now) {
            self.node.handle_timeout(now);
            self.node_tick = now.saturating_add(NODE_TIMER_TICK);
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.next_sweep = None;
            self.sweep(now);
            self.resync(now);
        }
        self.drain_node_events();
    }

    fn sweep(&mut self, now: Instant) {
        let mut expired: Vec<(PeerId, bool)> = Vec::new();
        for (slot, s) in self.sessions.iter().enumerate() {
            let Some(s) = s else { continue };
            let idle = now.saturating_duration_since(s.last_seen);
            let member = s.member.is_some();
            let limit = if member { self.config.member_timeout } else { self.config.pending_timeout };
            if idle >= limit {
                expired.push((PeerId(u32::try_from(slot).unwrap_or(u32::MAX)), member));
            }
        }
        for (peer, member) in expired {
            if member {
                bump(&mut self.stats.expired);
            }
            self.close_session(now, peer, LeaveReason::Expired);
        }
        if self.session_count > 0 {
            self.arm_sweep(now);
        }
    }

    /// Members whose acknowledged list version lags, with nothing pushed to
    /// them for a while and no list in flight, get the full list again.
    fn resync(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (slot, s) in self.sessions.iter().enumerate() {
            let Some(s) = s else { continue };
            let Some(m) = s.member.as_ref() else { continue };
            let current = self.clusters.get(&m.cluster).map_or(s.acked, |c| c.version);
            if s.acked != current && s.full_list.is_none() && now.saturating_duration_since(s.pushed_at) >= RESYNC_AFTER
            {
                due.push(PeerId(u32::try_from(slot).unwrap_or(u32::MAX)));
            }
        }
        for peer in due {
            self.schedule_full_list(now, peer);
        }
    }

    fn arm_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now.saturating_add(SWEEP_INTERVAL));
        }
    }

    // ----- helpers -------------------------------------------------------

    fn session(&self, peer: PeerId) -> Option<&Session> {
        self.sessions.get(usize::try_from(peer.0).ok()?)?.as_ref()
    }

    fn session_mut(&mut self, peer: PeerId) -> Option<&mut Session> {
        self.sessions.get_mut(usize::try_from(peer.0).ok()?)?.as_mut()
    }

    fn cluster_of(&self, peer: PeerId) -> Option<&Cluster> {
        let m = self.session(peer)?.member.as_ref()?;
        self.clusters.get(&m.cluster)
    }

    fn cluster_of_mut(&mut self, peer: PeerId) -> Option<&mut Cluster> {
        let c = self.session(peer)?.member.as_ref()?.cluster;
        self.clusters.get_mut(&c)
    }

    /// The member `key` if it is in the same cluster as `peer`.
    fn same_cluster(&self, peer: PeerId, key: &PublicKey) -> Option<PeerId> {
        let target = self.node.peer_by_key(key)?;
        if target == peer {
            return None;
        }
        self.cluster_of(peer)?.members.contains(&target).then_some(target)
    }

    /// The peer's public key (kept by the node, once per peer).
    fn key_of(&self, peer: PeerId) -> Option<PublicKey> {
        self.node.peer_stats(peer).map(|p| p.public_key)
    }

    fn endpoint_of(&self, peer: PeerId) -> Option<SocketAddr> {
        self.node.peer_stats(peer).and_then(|s| s.endpoint)
    }

    fn entry_of(&self, peer: PeerId) -> Option<PeerEntry> {
        entry_from(&self.node, &self.sessions, peer)
    }

    fn random_challenge(&mut self) -> Challenge {
        let mut c = [0u8; wire::CHALLENGE_LEN];
        self.rng.fill_bytes(&mut c);
        c
    }

    /// A fresh challenge for the next reply to `peer` (the previous one stays
    /// valid for requests that crossed it).
    fn rotate_challenge(&mut self, peer: PeerId) -> Challenge {
        let c = self.random_challenge();
        if let Some(s) = self.session_mut(peer) {
            s.prev_challenge = Some(s.challenge);
            s.challenge = c;
        }
        c
    }

    fn current_challenge(&self, peer: PeerId) -> Challenge {
        self.session(peer).map_or([0; wire::CHALLENGE_LEN], |s| s.challenge)
    }

    fn error(&mut self, peer: PeerId, code: ErrorCode) {
        let challenge = self.rotate_challenge(peer);
        self.send(peer, &Message::Error(ErrorReply { code, challenge }));
    }

    fn refuse(&mut self, peer: PeerId, key: PublicKey, code: ErrorCode) {
        self.push_event(ServerEvent::Refused { key, code });
        let challenge = self.current_challenge(peer);
        self.send(peer, &Message::Error(ErrorReply { code, challenge }));
    }

    fn send(&mut self, peer: PeerId, m: &Message<'_>) {
        if self.outq.len() >= self.config.max_queue {
            bump(&mut self.stats.queue_dropped);
            return;
        }
        let mut buf = vec![0u8; m.encoded_len()];
        if m.emit(&mut buf).is_ok() {
            self.outq.push_back((peer, Arc::from(buf)));
        }
    }

    fn wall_at(&self, now: Instant) -> WallTime {
        match self.wall {
            Some((at, wall)) => {
                WallTime::from_nanos(wall.as_nanos().saturating_add(now.saturating_duration_since(at).as_nanos()))
            }
            None => WallTime::default(),
        }
    }

    fn push_event(&mut self, e: ServerEvent) {
        if self.events.len() >= EVENT_CAPACITY {
            bump(&mut self.stats.events_dropped);
            return;
        }
        self.events.push_back(e);
    }

    fn clamp(&mut self, now: Instant) -> Instant {
        if now > self.last_now {
            self.last_now = now;
        }
        self.last_now
    }
}

fn entry_from<C: CryptoProvider, R: rand_core::RngCore + rand_core::CryptoRng>(
    node: &Node<C, R, NucleusStorage>,
    sessions: &[Option<Session>],
    peer: PeerId,
) -> Option<PeerEntry> {
    let s = sessions.get(usize::try_from(peer.0).ok()?)?.as_ref()?;
    let m = s.member.as_ref()?;
    let key = node.peer_stats(peer)?.public_key;
    let locals = m.locals.iter().copied().take(MAX_LOCAL_ENDPOINTS).collect();
    Some(PeerEntry { key, vip: m.vip, vip2: m.vip2, reflexive: m.reflexive, locals })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_limiter_is_per_source_bounded_and_refills() {
        let mut l = SourceLimiter::new(10, 4);
        let t0 = Instant::from_secs(1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = (0..100).filter(|_| l.allow(t0, a)).count();
        assert_eq!(allowed, 20, "burst of two seconds' worth");
        assert!(!l.allow(t0, a));
        assert!(l.allow(t0.saturating_add(Duration::from_millis(100)), a), "one token per 100 ms");
        // Other sources are independent; IPv6 is limited per /64.
        assert!(l.allow(t0, "192.0.2.2".parse().unwrap()));
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        assert_eq!((0..30).filter(|_| l.allow(t0, v6a)).count() + (0..30).filter(|_| l.allow(t0, v6b)).count(), 20);
        // Many sources: memory stays bounded by two generations.
        for i in 0..1000u32 {
            l.allow(t0, IpAddr::from(i.to_be_bytes()));
        }
        assert!(l.current.len() <= 4 && l.previous.len() <= 4);
    }

    #[test]
    fn vips_must_be_unicast() {
        for ok in ["10.200.0.1", "100.64.0.1", "fd00::1", "2001:db8::5"] {
            assert!(valid_vip(ok.parse().unwrap()), "{ok}");
        }
        for bad in ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "::", "::1", "ff02::1"] {
            assert!(!valid_vip(bad.parse().unwrap()), "{bad}");
        }
    }

    #[test]
    fn peer_slab_reuses_freed_slots_and_keeps_every_value() {
        let mut s: PeerSlab<u32> = PeerSlab::default();
        for i in 0..1000u32 {
            assert_eq!(s.insert(i), Ok(i as usize));
        }
        for i in [3usize, 500, 999] {
            s.slots_mut()[i] = None;
        }
        let mut at = std::vec::Vec::new();
        for v in 0..200u32 {
            at.push((s.insert(10_000 + v).unwrap(), 10_000 + v));
        }
        // The holes are filled (within len / 8 inserts), the rest appended.
        for hole in [3usize, 500, 999] {
            assert!(at.iter().take(126).any(|(i, _)| *i == hole), "slot {hole} reused");
        }
        for (i, v) in &at {
            assert_eq!(s.slots()[*i], Some(*v));
        }
        assert_eq!(s.slots().iter().filter(|x| x.is_some()).count(), 1197, "no slot left empty");
        assert_eq!(s.slots().len(), 1197);
    }

    #[test]
    fn per_member_state_is_small() {
        // The Nucleus's own record per session; the node's per-peer state
        // comes on top (see the report in the module docs).
        let s = core::mem::size_of::<Option<Session>>();
        let p = core::mem::size_of::<Option<Peer<crate::crypto::RustCrypto, ControlReplay>>>();
        std::println!("per member: Session {s} B, node Peer {p} B (+ map entries)");
        assert!(s <= 320, "Session is {s} bytes");
    }
}
