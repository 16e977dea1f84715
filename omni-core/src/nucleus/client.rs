//! The edge's side of the Nucleus protocol: a sans-IO state machine that
//! registers with the Nucleus, keeps the membership alive, and turns the
//! peer lists the Nucleus pushes into peers of the [`Node`].

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use super::cluster::{AuthKey, ClusterSecret};
use super::wire::{
    self, Challenge, ChallengeMsg, ErrorCode, ErrorReply, Heartbeat, HeartbeatAck, ListKind, Message, ParseError,
    PeerEntry, PeerList, PeerRef, RegisterOk, RelayData, HEADER_LEN, KEY_LEN, MAX_LOCAL_ENDPOINTS, MAX_RELAY_DATAGRAM,
};
use crate::allowed_ips::AllowedIp;
use crate::constants::{AEAD_TAG_LEN, INITIATION_LEN, MSG_INITIATION, MSG_TRANSPORT, PADDING_MULTIPLE};
use crate::crypto::CryptoProvider;
use crate::keys::PublicKey;
use crate::node::{AddPeerError, IN_PLACE_OFFSET};
use crate::node::{Event, Incoming, Node, PeerConfig, PeerId, Received, RecvError, SendError, Sent, Transmit};
use crate::storage::Storage;
use crate::time::Instant;

/// First retry of an unanswered `Hello`/`Register`; doubles up to [`RETRY_MAX`].
pub const RETRY_BASE: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(32);
/// A heartbeat unanswered for this long counts as missed and is resent.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// Missed heartbeats after which the Nucleus counts as lost (re-register).
pub const MAX_MISSED: u32 = 3;
/// Heartbeat interval until the Nucleus says otherwise, and its bounds.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
const MIN_HEARTBEAT_SECS: u16 = 1;
const MAX_HEARTBEAT_SECS: u16 = 300;
/// Default [`ClientConfig::relay_after`]: a member not reached directly
/// within this long of its addition is relayed (while punching goes on).
pub const RELAY_AFTER: Duration = Duration::from_secs(1);
/// Default [`ClientConfig::punch_interval`]: the first spacing of punch
/// rounds for a member not reached directly; doubles every round.
pub const PUNCH_INTERVAL: Duration = Duration::from_secs(1);
/// Default [`ClientConfig::punch_interval_max`]: a relayed member is punched
/// at least this often (to get back to a direct path).
pub const REPUNCH_INTERVAL: Duration = Duration::from_secs(60);
/// Punch rounds are never closer than this (a zero interval is not a busy loop).
const MIN_PUNCH_INTERVAL: Duration = Duration::from_millis(100);
/// An unanswered `RelayRequest` is resent after this long, up to
/// [`RELAY_TRIES`] times.
const RELAY_RETRY: Duration = Duration::from_secs(2);
const RELAY_TRIES: u8 = 3;
/// Minimum spacing of full peer-list requests.
const LIST_REQUEST_SPACING: Duration = Duration::from_secs(2);
/// After a re-registration (Nucleus restart, long outage), peers missing from
/// the new list are kept this long: the others are re-registering too.
pub const RESTART_GRACE: Duration = Duration::from_secs(120);

const OUTQ: usize = 16;
const PUNCH_JOBS: usize = 4;
const EVENTS: usize = 32;
/// Our signaling messages are small (a `Register` is at most 178 bytes).
const MSG_BUF: usize = 256;
/// Candidates per peer: the reflexive endpoint and the local ones.
const CANDIDATES: usize = MAX_LOCAL_ENDPOINTS + 1;

/// How an edge joins its cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The Nucleus's static key (printed by the Nucleus at start; pin it).
    pub nucleus_key: PublicKey,
    pub nucleus_endpoint: SocketAddr,
    /// Our virtual IP in the cluster.
    pub vip: IpAddr,
    /// A second VIP of the other address family (a dual-stack edge, e.g.
    /// `10.200.0.1` and `fd00:200::1`): registered and bound to our key
    /// like `vip`; members route both to us.
    pub vip2: Option<IpAddr>,
    /// Addresses on our own networks peers may try (host's interface
    /// addresses with the listen port).
    pub local_endpoints: heapless::Vec<SocketAddr, MAX_LOCAL_ENDPOINTS>,
    /// Set the node's wall clock (for TAI64N) from the Nucleus's replies:
    /// for devices without a clock.
    pub use_nucleus_time: bool,
    /// Persistent keepalive of mesh peers (keeps NAT mappings open; also
    /// starts the handshake as soon as a peer is added).
    pub mesh_keepalive: Option<u16>,
    /// Relay through the Nucleus when direct handshakes fail.
    pub relay_fallback: bool,
    /// A member with no completed handshake this long after it was added
    /// (or after its direct path failed) is relayed through the Nucleus
    /// (with `relay_fallback`). Punching goes on meanwhile, so traffic flows
    /// through the relay at once and moves to a direct path as soon as an
    /// authenticated packet arrives on one. Zero: relay at once.
    pub relay_after: Duration,
    /// First spacing of punch rounds for a member not reached directly
    /// (relayed, or waiting when relaying is off): each round sends our
    /// probes to its candidates and a `PunchRequest` so it probes ours at
    /// the same moment. Doubles every round up to `punch_interval_max`
    /// (at least 100 ms).
    pub punch_interval: Duration,
    pub punch_interval_max: Duration,
}

impl ClientConfig {
    pub fn new(nucleus_key: PublicKey, nucleus_endpoint: SocketAddr, vip: IpAddr) -> Self {
        ClientConfig {
            nucleus_key,
            nucleus_endpoint,
            vip,
            vip2: None,
            local_endpoints: heapless::Vec::new(),
            use_nucleus_time: false,
            mesh_keepalive: Some(25),
            relay_fallback: true,
            relay_after: RELAY_AFTER,
            punch_interval: PUNCH_INTERVAL,
            punch_interval_max: REPUNCH_INTERVAL,
        }
    }
}

/// How we currently reach a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Path {
    /// Added; no handshake completed yet (punching).
    Connecting,
    /// A handshake completed over a direct path.
    Direct,
    /// Asked the Nucleus to relay; waiting for `RelayReady`.
    RelayRequested,
    /// Through the Nucleus (the node's endpoint for it is the Nucleus's).
    Relayed,
}

impl Path {
    /// A short lowercase name for status tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            Path::Connecting => "connecting",
            Path::Direct => "direct",
            Path::RelayRequested => "relaying",
            Path::Relayed => "relayed",
        }
    }
}

/// A cluster member the client manages as a peer of the node.
#[derive(Debug, Clone)]
pub struct Member {
    pub key: PublicKey,
    pub peer: PeerId,
    pub vip: IpAddr,
    /// Its second VIP (the other address family), if it is dual-stack.
    pub vip2: Option<IpAddr>,
    pub reflexive: Option<SocketAddr>,
    pub locals: heapless::Vec<SocketAddr, MAX_LOCAL_ENDPOINTS>,
    pub path: Path,
    /// Epoch of the last full list (or delta) that named it.
    mark: u32,
    check_at: Option<Instant>,
    attempts: u8,
}

/// What the node said about a member's peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Handshake,
    Endpoint,
    Failed,
}

impl Member {
    /// Follows the node's view of the path; `relayed`: the node's endpoint
    /// for the peer is the Nucleus's.
    /// `punch_first`: when the first punch round of a newly relayed member is due.
    fn on_signal(&mut self, signal: Signal, relayed: bool, now: Instant, punch_first: Duration) -> Option<ClientEvent> {
        match signal {
            Signal::Handshake | Signal::Endpoint if relayed => {
                if self.path != Path::Relayed {
                    self.path = Path::Relayed;
                    self.attempts = 0;
                    self.check_at = Some(now.saturating_add(punch_first));
                    return Some(ClientEvent::Relayed { peer: self.peer });
                }
            }
            Signal::Handshake => {
                if self.path != Path::Direct {
                    self.path = Path::Direct;
                    self.check_at = None;
                    self.attempts = 0;
                    return Some(ClientEvent::Direct { peer: self.peer });
                }
            }
            Signal::Endpoint => {
                if self.path == Path::Relayed {
                    self.path = Path::Direct;
                    self.check_at = None;
                    self.attempts = 0;
                    return Some(ClientEvent::Direct { peer: self.peer });
                }
            }
            Signal::Failed => {
                if !relayed {
                    self.path = Path::Connecting;
                    self.attempts = 0;
                    self.check_at = Some(now);
                }
            }
        }
        None
    }

    fn candidates(&self) -> heapless::Vec<SocketAddr, CANDIDATES> {
        let mut v = heapless::Vec::new();
        for e in self.reflexive.iter().chain(self.locals.iter()) {
            if !v.contains(e) {
                let _ = v.push(*e);
            }
        }
        v
    }
}

/// Where the client keeps members: [`FixedMembers`] without `alloc`,
/// [`HeapMembers`] with it.
pub trait MemberTable: Default {
    fn get(&self, key: &PublicKey) -> Option<&Member>;
    fn get_mut(&mut self, key: &PublicKey) -> Option<&mut Member>;
    /// Adds a member (its key is not in the table); `false` if full.
    fn insert(&mut self, m: Member) -> bool;
    fn remove(&mut self, key: &PublicKey) -> Option<Member>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Keeps the members for which `f` returns true (`f` may change them).
    fn retain(&mut self, f: impl FnMut(&mut Member) -> bool);
    fn for_each(&self, f: impl FnMut(&Member));
}

/// A fixed-capacity member table (linear search; for small clusters).
pub type FixedMembers<const N: usize> = heapless::Vec<Member, N>;

impl<const N: usize> MemberTable for heapless::Vec<Member, N> {
    fn get(&self, key: &PublicKey) -> Option<&Member> {
        self.iter().find(|m| m.key == *key)
    }
    fn get_mut(&mut self, key: &PublicKey) -> Option<&mut Member> {
        self.iter_mut().find(|m| m.key == *key)
    }
    fn insert(&mut self, m: Member) -> bool {
        self.push(m).is_ok()
    }
    fn remove(&mut self, key: &PublicKey) -> Option<Member> {
        let i = self.iter().position(|m| m.key == *key)?;
        Some(self.swap_remove(i))
    }
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn retain(&mut self, f: impl FnMut(&mut Member) -> bool) {
        self.retain_mut(f);
    }
    fn for_each(&self, f: impl FnMut(&Member)) {
        self.iter().for_each(f);
    }
}

#[cfg(feature = "alloc")]
pub use heap::HeapMembers;

#[cfg(feature = "alloc")]
mod heap {
    use super::*;
    use alloc::collections::BTreeMap;

    /// A growable member table (the `alloc` feature).
    pub type HeapMembers = BTreeMap<PublicKey, Member>;

    impl MemberTable for BTreeMap<PublicKey, Member> {
        fn get(&self, key: &PublicKey) -> Option<&Member> {
            BTreeMap::get(self, key)
        }
        fn get_mut(&mut self, key: &PublicKey) -> Option<&mut Member> {
            BTreeMap::get_mut(self, key)
        }
        fn insert(&mut self, m: Member) -> bool {
            BTreeMap::insert(self, m.key, m);
            true
        }
        fn remove(&mut self, key: &PublicKey) -> Option<Member> {
            BTreeMap::remove(self, key)
        }
        fn len(&self) -> usize {
            BTreeMap::len(self)
        }
        fn retain(&mut self, mut f: impl FnMut(&mut Member) -> bool) {
            BTreeMap::retain(self, |_, m| f(m));
        }
        fn for_each(&self, f: impl FnMut(&Member)) {
            self.values().for_each(f);
        }
    }
}

/// Where the registration stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum State {
    /// [`NucleusClient::start`] not called yet.
    Idle,
    /// Asking the Nucleus for a challenge.
    Connecting,
    /// `Register` sent, waiting for `RegisterOk`.
    Registering,
    /// A member: heartbeats flow, peer lists are applied.
    Registered,
    /// [`NucleusClient::leave`] was called.
    Left,
}

impl State {
    /// A short lowercase name for status tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connecting => "connecting",
            State::Registering => "registering",
            State::Registered => "registered",
            State::Left => "left",
        }
    }
}

/// Something the host may want to log or show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    Registered {
        vip: IpAddr,
        reflexive: Option<SocketAddr>,
    },
    /// The Nucleus refused a request (registration retries with backoff).
    Refused {
        code: ErrorCode,
    },
    /// Heartbeats went unanswered: registering again.
    NucleusLost,
    /// A member became a peer of the node, routed at `vip` and, for a
    /// dual-stack member, at its second virtual IP `vip2` too.
    PeerAdded {
        peer: PeerId,
        key: PublicKey,
        vip: IpAddr,
        vip2: Option<IpAddr>,
    },
    PeerRemoved {
        peer: PeerId,
        key: PublicKey,
    },
    /// A member could not become a peer: the node's table or ours is full,
    /// or the host configured that key itself.
    PeerSkipped {
        key: PublicKey,
    },
    /// The member is now reached through the Nucleus.
    Relayed {
        peer: PeerId,
    },
    /// The member is reached directly (again).
    Direct {
        peer: PeerId,
    },
    /// A member we reached directly moved (the Nucleus announced a new
    /// address for it): we follow it to `endpoint` and handshake there.
    Moved {
        peer: PeerId,
        endpoint: SocketAddr,
    },
    Left,
}

/// Counters for diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub sent: u64,
    pub received: u64,
    pub malformed: u64,
    pub relayed_out: u64,
    pub relayed_in: u64,
    pub punches: u64,
    pub dropped: u64,
}

/// Why [`NucleusClient::start`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum StartError {
    /// The node has no private key.
    NoPrivateKey,
    /// The Nucleus key is a low-order point (or our own key).
    BadNucleusKey,
    AddPeer(AddPeerError),
}

/// Why a control payload was dropped by [`NucleusClient::handle_control`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ControlError {
    /// From a control peer that is not our Nucleus.
    NotNucleus,
    Malformed(ParseError),
    /// A message only edges send.
    Unexpected,
    /// Relayed data from a key that is not a member.
    UnknownRelayPeer,
    /// The node refused the relayed datagram.
    Relay(RecvError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outgoing {
    Hello,
    Register,
    Heartbeat,
    Leave,
    ListRequest,
    ListAck,
    Punch(PublicKey),
    Relay(PublicKey),
}

/// A full list being received page by page.
#[derive(Clone, Copy, Debug)]
struct Sweep {
    version: u32,
    total: u32,
    seen: u32,
    epoch: u32,
}

/// Copies of one handshake datagram for every candidate of a peer.
#[derive(Debug)]
struct Punch {
    peer: PeerId,
    candidates: heapless::Vec<SocketAddr, CANDIDATES>,
    next: usize,
    /// Where the node itself sent the datagram (no copy needed there).
    sent_to: Option<SocketAddr>,
    datagram: heapless::Vec<u8, INITIATION_LEN>,
    waiting: bool,
}

/// The edge's Nucleus client.
///
/// # Calling rules
///
/// The client drives the same [`Node`] that carries the mesh traffic; every
/// call takes it. The Nucleus is a peer of that node marked as a control peer,
/// so signaling shares the WireGuard socket and the Nucleus sees the very
/// NAT mapping our peers must use.
///
/// - At start: [`start`](Self::start), then drain [`poll_transmit`](Self::poll_transmit).
/// - A datagram arrives: [`Node::handle_datagram_with_control`]. An
///   [`Incoming::Control`] goes to [`handle_control`](Self::handle_control)
///   (with a second buffer: a relayed IP packet for the TUN device is
///   decrypted into it); everything else is handled as usual.
/// - After every node call, forward [`Node::poll_event`]s to
///   [`handle_node_event`](Self::handle_node_event).
/// - Drain [`poll_transmit`](Self::poll_transmit) instead of
///   [`Node::poll_transmit`]: it returns our signaling, the node's own
///   datagrams, copies for hole punching and relay-wrapped datagrams.
/// - A [`Sent::Transmit`] from [`Node::send_ip`] goes through
///   [`route_transmit`](Self::route_transmit) (it may have to be relayed).
/// - Sleep until the earlier of [`Node::poll_timeout`] and
///   [`poll_timeout`](Self::poll_timeout); then call both `handle_timeout`s
///   (the node's first) and drain [`poll_transmit`](Self::poll_transmit).
///
/// Buffers given to `poll_transmit`/`route_transmit` need room for relay
/// framing: datagram length + 100 bytes (1700 bytes always suffice).
pub struct NucleusClient<T: MemberTable> {
    config: ClientConfig,
    cluster: ClusterSecret,
    auth: Option<AuthKey>,
    own: Option<PublicKey>,
    nucleus: Option<PeerId>,
    state: State,
    challenge: Option<Challenge>,
    attempts: u32,
    retry_at: Option<Instant>,
    heartbeat_at: Option<Instant>,
    ack_deadline: Option<Instant>,
    missed: u32,
    heartbeat_interval: Duration,
    reflexive: Option<SocketAddr>,
    list_version: u32,
    sweep: Option<Sweep>,
    epoch: u32,
    list_requested_at: Option<Instant>,
    grace_until: Option<Instant>,
    ever_registered: bool,
    members: T,
    next_member_check: Option<Instant>,
    outq: heapless::Deque<Outgoing, OUTQ>,
    punches: heapless::Deque<Punch, PUNCH_JOBS>,
    relay_reply: Option<(PublicKey, heapless::Vec<u8, INITIATION_LEN>)>,
    events: heapless::Deque<ClientEvent, EVENTS>,
    events_dropped: u64,
    last_now: Instant,
    stats: ClientStats,
}

impl<T: MemberTable> core::fmt::Debug for NucleusClient<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NucleusClient")
            .field("state", &self.state)
            .field("cluster", &self.cluster.public())
            .field("members", &self.members.len())
            .field("list_version", &self.list_version)
            .field("sweep", &self.sweep)
            .finish_non_exhaustive()
    }
}

fn host_route(vip: IpAddr) -> Option<AllowedIp> {
    let bits = match vip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    AllowedIp::new(vip, bits).ok()
}

impl<T: MemberTable> NucleusClient<T> {
    pub fn new(config: ClientConfig, cluster: ClusterSecret) -> Self {
        NucleusClient {
            config,
            cluster,
            auth: None,
            own: None,
            nucleus: None,
            state: State::Idle,
            challenge: None,
            attempts: 0,
            retry_at: None,
            heartbeat_at: None,
            ack_deadline: None,
            missed: 0,
            heartbeat_interval: DEFAULT_HEARTBEAT,
            reflexive: None,
            list_version: 0,
            sweep: None,
            epoch: 0,
            list_requested_at: None,
            grace_until: None,
            ever_registered: false,
            members: T::default(),
            next_member_check: None,
            outq: heapless::Deque::new(),
            punches: heapless::Deque::new(),
            relay_reply: None,
            events: heapless::Deque::new(),
            events_dropped: 0,
            last_now: Instant::ZERO,
            stats: ClientStats::default(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    /// The Nucleus's peer id in the node, once started.
    pub fn nucleus_peer(&self) -> Option<PeerId> {
        self.nucleus
    }
    pub fn members(&self) -> &T {
        &self.members
    }
    pub fn member(&self, key: &PublicKey) -> Option<&Member> {
        self.members.get(key)
    }
    /// The member behind a node peer (`None` for the Nucleus and for peers
    /// the host added itself). A linear scan: for logs and status.
    pub fn member_by_peer(&self, peer: PeerId) -> Option<&Member> {
        let mut found = None;
        self.members.for_each(|m| {
            if m.peer == peer {
                found = Some(m.key);
            }
        });
        found.and_then(|k| self.members.get(&k))
    }
    /// Our address as the Nucleus last saw it.
    pub fn reflexive(&self) -> Option<SocketAddr> {
        self.reflexive
    }
    /// The peer-list version applied last (0: none yet).
    pub fn list_version(&self) -> u32 {
        self.list_version
    }
    pub fn stats(&self) -> ClientStats {
        self.stats
    }
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Adds the Nucleus as a control peer of `node` and starts registering.
    pub fn start<C, R, S>(&mut self, now: Instant, node: &mut Node<C, R, S>) -> Result<PeerId, StartError>
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        let now = self.clamp(now);
        let own = node.public_key().ok_or(StartError::NoPrivateKey)?;
        if own == self.config.nucleus_key {
            return Err(StartError::BadNucleusKey);
        }
        let auth = self.cluster.auth_key::<C>(&self.config.nucleus_key).ok_or(StartError::BadNucleusKey)?;
        let cfg =
            PeerConfig { endpoint: Some(self.config.nucleus_endpoint), ..PeerConfig::new(self.config.nucleus_key) };
        let id = match node.add_peer(now, cfg) {
            Ok(id) => id,
            Err(AddPeerError::Duplicate(id)) => {
                node.set_endpoint(id, Some(self.config.nucleus_endpoint));
                node.set_preshared_key(id, None);
                id
            }
            Err(e) => return Err(StartError::AddPeer(e)),
        };
        node.set_control_peer(id, true);
        self.own = Some(own);
        self.auth = Some(auth);
        self.nucleus = Some(id);
        self.state = State::Connecting;
        self.attempts = 0;
        self.challenge = None;
        self.queue(Outgoing::Hello);
        self.retry_at = Some(now.saturating_add(self.backoff(0)));
        Ok(id)
    }

    /// Leaves the cluster: tells the Nucleus (drain [`poll_transmit`](Self::poll_transmit))
    /// and removes every member from the node.
    pub fn leave<C, R, S>(&mut self, now: Instant, node: &mut Node<C, R, S>)
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        let _ = self.clamp(now);
        if matches!(self.state, State::Idle | State::Left) {
            return;
        }
        if self.state == State::Registered {
            self.outq.clear();
            // Twice: a lost Leave would otherwise leave us listed until expiry.
            let _ = self.outq.push_back(Outgoing::Leave);
            let _ = self.outq.push_back(Outgoing::Leave);
        } else {
            self.outq.clear();
        }
        let events = &mut self.events;
        let dropped = &mut self.events_dropped;
        self.members.retain(|m| {
            node.remove_peer(m.peer);
            push(events, dropped, ClientEvent::PeerRemoved { peer: m.peer, key: m.key });
            false
        });
        self.punches.clear();
        self.state = State::Left;
        self.retry_at = None;
        self.heartbeat_at = None;
        self.ack_deadline = None;
        self.next_member_check = None;
        self.sweep = None;
        self.list_version = 0;
        self.push_event(ClientEvent::Left);
    }

    /// New local endpoints (the host's addresses changed): re-registers so
    /// the Nucleus tells the members.
    pub fn set_local_endpoints(&mut self, now: Instant, locals: heapless::Vec<SocketAddr, MAX_LOCAL_ENDPOINTS>) {
        let _ = self.clamp(now);
        if self.config.local_endpoints == locals {
            return;
        }
        self.config.local_endpoints = locals;
        if self.state == State::Registered {
            self.queue(Outgoing::Register);
        }
    }

    /// Everything a host does when its addresses change (a phone moving from
    /// Wi-Fi to cellular, a laptop waking up, a DHCP renewal): announces the
    /// new local endpoints (`locals`; re-registers if they differ), sends a
    /// heartbeat so the Nucleus sees our new NAT mapping and pushes it to the
    /// members, and rebinds the node's sessions (fresh handshakes from the
    /// new address). Then drain [`poll_transmit`](Self::poll_transmit).
    pub fn addresses_changed<C, R, S>(
        &mut self,
        now: Instant,
        node: &mut Node<C, R, S>,
        locals: heapless::Vec<SocketAddr, MAX_LOCAL_ENDPOINTS>,
    ) where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        self.set_local_endpoints(now, locals);
        self.network_changed(now);
        node.rebind(now);
    }

    /// The host's network changed (new address, wake from sleep): a heartbeat
    /// now lets the Nucleus see our new mapping and push it to the members.
    pub fn network_changed(&mut self, now: Instant) {
        let now = self.clamp(now);
        if self.state == State::Registered {
            self.queue(Outgoing::Heartbeat);
            self.ack_deadline = Some(now.saturating_add(ACK_TIMEOUT));
        }
    }

    // ----- input ---------------------------------------------------------

    /// Handles a signaling payload the node reported as
    /// [`Incoming::Control`] (`payload` is `out[..len]` of that call). A
    /// relayed IP packet is decrypted into `out`: `Ok(Some((peer, len)))`
    /// means `out[..len]` goes to the TUN device. Drain
    /// [`poll_transmit`](Self::poll_transmit) afterwards.
    pub fn handle_control<C, R, S>(
        &mut self,
        now: Instant,
        node: &mut Node<C, R, S>,
        from: PeerId,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<Option<(PeerId, usize)>, ControlError>
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        let now = self.clamp(now);
        if Some(from) != self.nucleus {
            return Err(ControlError::NotNucleus);
        }
        let msg = match wire::parse(payload) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed = self.stats.malformed.saturating_add(1);
                return Err(ControlError::Malformed(e));
            }
        };
        self.stats.received = self.stats.received.saturating_add(1);
        if matches!(self.state, State::Idle | State::Left) {
            return Ok(None);
        }
        match msg {
            Message::Challenge(c) => self.on_challenge(now, node, c),
            Message::RegisterOk(ok) => self.on_register_ok(now, node, ok),
            Message::Error(e) => self.on_error(now, e),
            Message::HeartbeatAck(a) => self.on_heartbeat_ack(now, node, a),
            Message::PeerList(l) => {
                if self.state == State::Registered {
                    self.on_peer_list(now, node, &l);
                }
            }
            Message::PunchNotify(e) => {
                if self.state == State::Registered {
                    let mark = self.epoch;
                    if let Some(peer) = self.upsert(now, node, &e, mark) {
                        self.stats.punches = self.stats.punches.saturating_add(1);
                        self.punch(peer, &e.candidates());
                    }
                }
            }
            Message::RelayReady(r) => self.on_relay_ready(now, node, r),
            Message::RelayData(d) => return self.unwrap_relay(now, node, d, out),
            Message::Hello
            | Message::Register(_)
            | Message::Heartbeat(_)
            | Message::Leave
            | Message::PeerListRequest
            | Message::ListAck(_)
            | Message::PunchRequest(_)
            | Message::RelayRequest(_) => return Err(ControlError::Unexpected),
        }
        Ok(None)
    }

    /// Node events the client reacts to (forward every one; it ignores the rest).
    pub fn handle_node_event<C, R, S>(&mut self, now: Instant, node: &mut Node<C, R, S>, event: &Event)
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        let now = self.clamp(now);
        let relay_ep = self.config.nucleus_endpoint;
        let punch_first = self.punch_backoff(0);
        let (peer, signal) = match *event {
            Event::HandshakeCompleted { peer, .. } => (peer, Signal::Handshake),
            Event::EndpointChanged { peer, .. } => (peer, Signal::Endpoint),
            Event::HandshakeFailed { peer } => (peer, Signal::Failed),
            _ => return,
        };
        if Some(peer) == self.nucleus {
            if signal == Signal::Handshake {
                self.retry_at = self.retry_at.map(|t| t.min(now.saturating_add(RETRY_BASE)));
            }
            return;
        }
        let Some(stats) = node.peer_stats(peer) else { return };
        let relayed = stats.endpoint == Some(relay_ep);
        let Some(m) = self.members.get_mut(&stats.public_key) else { return };
        let ev = m.on_signal(signal, relayed, now, punch_first);
        let check = m.check_at;
        if let Some(e) = ev {
            self.push_event(e);
        }
        if let Some(c) = check {
            self.arm_member_check(c);
        }
    }

    // ----- output --------------------------------------------------------

    /// The next datagram to send: signaling, the node's own datagrams,
    /// punch copies, relayed datagrams. Call until `Ok(None)`.
    pub fn poll_transmit<C, R, S>(
        &mut self,
        now: Instant,
        node: &mut Node<C, R, S>,
        out: &mut [u8],
    ) -> Result<Option<Transmit>, SendError>
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        let now = self.clamp(now);
        // Bounded: every round consumes a queued item or ends.
        for _ in 0..64 {
            if let Some(t) = self.poll_signaling(now, node, out)? {
                return Ok(Some(t));
            }
            if let Some((key, bytes)) = self.relay_reply.take() {
                if let Some(len) = out.get_mut(..bytes.len()).map(|o| {
                    o.copy_from_slice(&bytes);
                    bytes.len()
                }) {
                    if let Some(peer) = node.peer_by_key(&key) {
                        let t = Transmit { to: self.config.nucleus_endpoint, len, peer };
                        if let Some(t) = self.route_transmit(now, node, t, out)? {
                            return Ok(Some(t));
                        }
                    }
                }
                continue;
            }
            if let Some(t) = self.next_punch_copy(now, node, out)? {
                return Ok(Some(t));
            }
            match node.poll_transmit(now, out)? {
                Some(t) => {
                    self.capture(&t, out);
                    if let Some(t) = self.route_transmit(now, node, t, out)? {
                        return Ok(Some(t));
                    }
                }
                None => {
                    // A punch whose handshake the node did not send now
                    // (one was sent < 5 s ago): nothing to copy.
                    if self.punches.front().is_some_and(|p| p.waiting && p.datagram.is_empty()) {
                        self.punches.pop_front();
                        continue;
                    }
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// Passes a datagram of the node through the relay when its peer is
    /// relayed (the node's endpoint for it is the Nucleus's): `buf[..t.len]`
    /// is wrapped in place into a `RelayData` for the Nucleus. `Ok(None)`:
    /// nothing to send now (no Nucleus session yet, or oversize).
    pub fn route_transmit<C, R, S>(
        &mut self,
        now: Instant,
        node: &mut Node<C, R, S>,
        t: Transmit,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, SendError>
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        let Some(nucleus) = self.nucleus else { return Ok(Some(t)) };
        if t.peer == nucleus || t.to != self.config.nucleus_endpoint {
            return Ok(Some(t));
        }
        let Some(key) = node.peer_stats(t.peer).map(|s| s.public_key) else { return Ok(None) };
        if t.len > MAX_RELAY_DATAGRAM || t.len == 0 {
            self.stats.dropped = self.stats.dropped.saturating_add(1);
            return Ok(None);
        }
        let head = HEADER_LEN.saturating_add(KEY_LEN);
        let plen = head.saturating_add(t.len);
        let needed = IN_PLACE_OFFSET.saturating_add(plen).saturating_add(PADDING_MULTIPLE).saturating_add(AEAD_TAG_LEN);
        if buf.len() < needed {
            return Err(SendError::BufferTooSmall { needed });
        }
        let body = u16::try_from(KEY_LEN.saturating_add(t.len)).unwrap_or(0).to_le_bytes();
        buf.copy_within(..t.len, IN_PLACE_OFFSET.saturating_add(head));
        let header = [wire::VERSION, wire::msg_type::RELAY_DATA, body[0], body[1]];
        if let Some(h) = buf.get_mut(IN_PLACE_OFFSET..IN_PLACE_OFFSET.saturating_add(HEADER_LEN)) {
            h.copy_from_slice(&header);
        }
        let kstart = IN_PLACE_OFFSET.saturating_add(HEADER_LEN);
        if let Some(k) = buf.get_mut(kstart..kstart.saturating_add(KEY_LEN)) {
            k.copy_from_slice(&key.0);
        }
        match node.send_to_peer_in_place(now, nucleus, buf, plen) {
            Ok(Sent::Transmit(t)) => {
                self.stats.relayed_out = self.stats.relayed_out.saturating_add(1);
                Ok(Some(t))
            }
            Ok(Sent::Queued { .. }) => Ok(None),
            Err(SendError::BufferTooSmall { needed }) => Err(SendError::BufferTooSmall { needed }),
            Err(_) => {
                self.stats.dropped = self.stats.dropped.saturating_add(1);
                Ok(None)
            }
        }
    }

    // ----- time ----------------------------------------------------------

    /// The next moment [`handle_timeout`](Self::handle_timeout) must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.retry_at, self.heartbeat_at, self.ack_deadline, self.next_member_check, self.grace_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires due timers. Then drain [`poll_transmit`](Self::poll_transmit).
    pub fn handle_timeout<C, R, S>(&mut self, now: Instant, node: &mut Node<C, R, S>)
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        let now = self.clamp(now);
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            if matches!(self.state, State::Connecting | State::Registering) {
                self.attempts = self.attempts.saturating_add(1);
                if self.state == State::Registering && self.challenge.is_some() {
                    self.queue(Outgoing::Register);
                } else {
                    self.queue(Outgoing::Hello);
                }
                if self.attempts % 3 == 0 {
                    // Long silence: the session may be dead (Nucleus restarted).
                    if let Some(n) = self.nucleus {
                        node.initiate(now, n);
                    }
                }
                self.retry_at = Some(now.saturating_add(self.backoff(self.attempts)));
            }
        }
        if self.ack_deadline.is_some_and(|t| t <= now) {
            self.ack_deadline = None;
            if self.state == State::Registered {
                self.missed = self.missed.saturating_add(1);
                if self.missed >= MAX_MISSED {
                    self.lost(now, node);
                } else {
                    self.queue(Outgoing::Heartbeat);
                    self.ack_deadline = Some(now.saturating_add(ACK_TIMEOUT));
                }
            }
        }
        if self.heartbeat_at.is_some_and(|t| t <= now) {
            self.heartbeat_at = None;
            if self.state == State::Registered {
                self.queue(Outgoing::Heartbeat);
                if self.ack_deadline.is_none() {
                    self.ack_deadline = Some(now.saturating_add(ACK_TIMEOUT));
                }
                self.heartbeat_at = Some(now.saturating_add(self.heartbeat_interval));
            }
        }
        if self.grace_until.is_some_and(|t| t <= now) {
            self.grace_until = None;
            if self.sweep.is_none() && self.list_version != 0 {
                let epoch = self.epoch;
                self.remove_unmarked(node, epoch);
            }
        }
        if self.next_member_check.is_some_and(|t| t <= now) {
            self.check_members(now, node);
        }
    }

    // ----- registration --------------------------------------------------

    fn on_challenge<C, R, S>(&mut self, now: Instant, node: &mut Node<C, R, S>, c: ChallengeMsg)
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        self.challenge = Some(c.challenge);
        self.wall_time(now, node, c.time);
        if matches!(self.state, State::Connecting | State::Registering) {
            self.state = State::Registering;
            self.queue(Outgoing::Register);
            self.retry_at = Some(now.saturating_add(self.backoff(self.attempts)));
        }
    }

    fn on_register_ok<C, R, S>(&mut self, now: Instant, node: &mut Node<C, R, S>, ok: RegisterOk)
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        self.challenge = Some(ok.challenge);
        self.wall_time(now, node, ok.time);
        if !matches!(self.state, State::Connecting | State::Registering | State::Registered) {
            return;
        }
        let fresh = self.state != State::Registered;
        self.state = State::Registered;
        self.attempts = 0;
        self.retry_at = None;
        self.missed = 0;
        self.ack_deadline = None;
        let secs = ok.heartbeat_secs.clamp(MIN_HEARTBEAT_SECS, MAX_HEARTBEAT_SECS);
        self.heartbeat_interval = Duration::from_secs(u64::from(secs));
        self.heartbeat_at = Some(now.saturating_add(self.heartbeat_interval));
        self.reflexive = ok.reflexive;
        if fresh {
            // The Nucleus sends the full list next; versions restart with it
            // (it may be a new Nucleus process).
            self.list_version = 0;
            self.sweep = None;
            if self.ever_registered && !self.members.is_empty() {
                self.grace_until = Some(now.saturating_add(RESTART_GRACE));
            }
            self.ever_registered = true;
            self.push_event(ClientEvent::Registered { vip: ok.vip, reflexive: ok.reflexive });
        }
    }

    fn on_error(&mut self, now: Instant, e: ErrorReply) {
        self.challenge = Some(e.challenge);
        match e.code {
            ErrorCode::ChallengeExpired => {
                if self.state == State::Connecting {
                    self.state = State::Registering;
                }
                self.queue(Outgoing::Register);
            }
            ErrorCode::NotRegistered if self.state == State::Registered => {
                // The Nucleus forgot us (restart, expiry): register again.
                self.state = State::Registering;
                self.attempts = 0;
                self.heartbeat_at = None;
                self.ack_deadline = None;
                self.queue(Outgoing::Register);
                self.retry_at = Some(now.saturating_add(self.backoff(0)));
                self.push_event(ClientEvent::NucleusLost);
            }
            code => {
                self.push_event(ClientEvent::Refused { code });
                if matches!(self.state, State::Connecting | State::Registering) {
                    self.state = State::Registering;
                    self.retry_at = Some(now.saturating_add(self.backoff(self.attempts.max(2))));
                }
            }
        }
    }

    fn on_heartbeat_ack<C, R, S>(&mut self, now: Instant, node: &mut Node<C, R, S>, a: HeartbeatAck)
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        self.challenge = Some(a.challenge);
        self.wall_time(now, node, a.time);
        if self.state != State::Registered {
            return;
        }
        self.missed = 0;
        self.ack_deadline = None;
        self.reflexive = a.reflexive.or(self.reflexive);
        let streaming = self.sweep.is_some_and(|s| s.version == a.list_version);
        if a.list_version != self.list_version && !streaming {
            self.request_list(now);
        }
    }

    fn lost<C, R, S>(&mut self, now: Instant, node: &mut Node<C, R, S>)
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        self.push_event(ClientEvent::NucleusLost);
        self.state = State::Connecting;
        self.attempts = 0;
        self.challenge = None;
        self.heartbeat_at = None;
        self.ack_deadline = None;
        self.missed = 0;
        self.outq.clear();
        self.queue(Outgoing::Hello);
        if let Some(n) = self.nucleus {
            node.initiate(now, n);
        }
        self.retry_at = Some(now.saturating_add(self.backoff(0)));
    }

    fn wall_time<C, R, S>(&mut self, now: Instant, node: &mut Node<C, R, S>, t: crate::time::WallTime)
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        if self.config.use_nucleus_time {
            node.set_wall_time(now, t);
        }
    }

    fn request_list(&mut self, now: Instant) {
        if self.list_requested_at.is_some_and(|t| now.saturating_duration_since(t) < LIST_REQUEST_SPACING) {
            return;
        }
        self.list_requested_at = Some(now);
        self.queue(Outgoing::ListRequest);
    }

    // ----- peer lists ----------------------------------------------------

    fn on_peer_list<C, R, S>(&mut self, now: Instant, node: &mut Node<C, R, S>, l: &PeerList<'_>)
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        match l.kind {
            ListKind::Full => {
                let sweep = match self.sweep {
                    Some(s) if s.version == l.version => s,
                    _ => {
                        if self.list_version != 0 && l.version == self.list_version {
                            // A resend of the list we have: our ack was lost.
                            self.queue(Outgoing::ListAck);
                            return;
                        }
                        self.epoch = self.epoch.wrapping_add(1);
                        Sweep { version: l.version, total: l.base_or_total, seen: 0, epoch: self.epoch }
                    }
                };
                // Entries are counted once (a duplicated page marks nothing
                // new); an entry we could not add counts each time it is seen.
                let mut seen = sweep.seen;
                for e in l.adds() {
                    let marked = self.members.get(&e.key).is_some_and(|m| m.mark == sweep.epoch);
                    self.upsert(now, node, &e, sweep.epoch);
                    if !marked {
                        seen = seen.saturating_add(1);
                    }
                }
                if seen >= sweep.total {
                    self.sweep = None;
                    self.list_version = l.version;
                    self.queue(Outgoing::ListAck);
                    if self.grace_until.is_none() {
                        self.remove_unmarked(node, sweep.epoch);
                    }
                } else {
                    self.sweep = Some(Sweep { seen, ..sweep });
                }
            }
            ListKind::Delta => {
                if self.sweep.is_some() {
                    return; // the full list in flight is restarted at the newest version
                }
                if self.list_version != 0 && l.base_or_total == self.list_version {
                    let mark = self.epoch;
                    for e in l.adds() {
                        self.upsert(now, node, &e, mark);
                    }
                    for k in l.removes() {
                        self.remove_member(node, &k);
                    }
                    self.list_version = l.version;
                    self.queue(Outgoing::ListAck);
                } else if self.list_version == 0 || l.version > self.list_version {
                    self.request_list(now);
                } else {
                    self.queue(Outgoing::ListAck); // an old or duplicated delta
                }
            }
        }
    }

    /// Adds or updates a member; returns its peer id.
    fn upsert<C, R, S>(&mut self, now: Instant, node: &mut Node<C, R, S>, e: &PeerEntry, mark: u32) -> Option<PeerId>
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        if Some(e.key) == self.own || e.key == self.config.nucleus_key {
            return None;
        }
        let relay_ep = self.config.nucleus_endpoint;
        let endpoint = self.choose_endpoint(e);
        if let Some(m) = self.members.get_mut(&e.key) {
            m.mark = mark;
            if m.vip != e.vip || m.vip2 != e.vip2 {
                for old in [Some(m.vip), m.vip2].into_iter().flatten().filter_map(host_route) {
                    node.remove_allowed_ip(m.peer, old);
                }
                for new in [Some(e.vip), e.vip2].into_iter().flatten().filter_map(host_route) {
                    let _ = node.add_allowed_ip(m.peer, new);
                }
                m.vip = e.vip;
                m.vip2 = e.vip2;
            }
            let mut moved = None;
            if m.reflexive != e.reflexive || m.locals != e.locals {
                let announced_before = m.candidates();
                m.reflexive = e.reflexive;
                m.locals = e.locals.clone();
                let current = node.peer_stats(m.peer).and_then(|s| s.endpoint);
                if current != Some(relay_ep) && endpoint.is_some() && m.path != Path::Direct {
                    node.set_endpoint(m.peer, endpoint);
                } else if m.path == Path::Direct {
                    // We reach it directly at an address it announced, and it
                    // no longer announces that address (its NAT mapping or
                    // its own address changed: it moved). Follow it at once
                    // and handshake there rather than wait for the old path
                    // to fail. The new address comes from the Nucleus over
                    // its authenticated session, the source we trust for
                    // every other endpoint; an endpoint the node learned by
                    // roaming (not announced) is left alone.
                    let stale = current.filter(|c| announced_before.contains(c) && !m.candidates().contains(c));
                    if let (Some(_), Some(to)) = (stale, endpoint) {
                        node.set_endpoint(m.peer, Some(to));
                        node.initiate(now, m.peer);
                        moved = Some((m.peer, to));
                    }
                }
            }
            let peer = m.peer;
            if let Some((peer, endpoint)) = moved {
                self.push_event(ClientEvent::Moved { peer, endpoint });
            }
            return Some(peer);
        }
        let own = self.own?;
        let cfg = PeerConfig {
            preshared_key: Some(self.cluster.pair_psk(&own, &e.key)),
            endpoint,
            persistent_keepalive: self.config.mesh_keepalive,
            ..PeerConfig::new(e.key)
        };
        let peer = match node.add_peer(now, cfg) {
            Ok(p) => p,
            Err(_) => {
                self.push_event(ClientEvent::PeerSkipped { key: e.key });
                return None;
            }
        };
        let routed = [Some(e.vip), e.vip2]
            .into_iter()
            .flatten()
            .all(|vip| host_route(vip).is_some_and(|r| node.add_allowed_ip(peer, r).is_ok()));
        let check_at = now.saturating_add(self.config.relay_after);
        let member = Member {
            key: e.key,
            peer,
            vip: e.vip,
            vip2: e.vip2,
            reflexive: e.reflexive,
            locals: e.locals.clone(),
            path: Path::Connecting,
            mark,
            check_at: Some(check_at),
            attempts: 0,
        };
        if !routed || !self.members.insert(member) {
            node.remove_peer(peer);
            self.push_event(ClientEvent::PeerSkipped { key: e.key });
            return None;
        }
        self.arm_member_check(check_at);
        self.push_event(ClientEvent::PeerAdded { peer, key: e.key, vip: e.vip, vip2: e.vip2 });
        // Copies of the first handshake go to every candidate (LAN peers
        // behind the same NAT, several mappings).
        let candidates = e.candidates();
        if candidates.len() > 1 {
            self.punch(peer, &candidates);
        }
        Some(peer)
    }

    /// The reflexive endpoint, unless the member is behind our own NAT (same
    /// public address): then its first local endpoint (hairpinning is rare).
    fn choose_endpoint(&self, e: &PeerEntry) -> Option<SocketAddr> {
        let same_nat = matches!((self.reflexive, e.reflexive), (Some(a), Some(b)) if a.ip() == b.ip());
        if same_nat {
            if let Some(l) = e.locals.first() {
                return Some(*l);
            }
        }
        e.reflexive.or_else(|| e.locals.first().copied())
    }

    fn remove_member<C, R, S>(&mut self, node: &mut Node<C, R, S>, key: &PublicKey)
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        if let Some(m) = self.members.remove(key) {
            node.remove_peer(m.peer);
            self.push_event(ClientEvent::PeerRemoved { peer: m.peer, key: m.key });
        }
    }

    fn remove_unmarked<C, R, S>(&mut self, node: &mut Node<C, R, S>, epoch: u32)
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        let events = &mut self.events;
        let dropped = &mut self.events_dropped;
        self.members.retain(|m| {
            if m.mark == epoch {
                return true;
            }
            node.remove_peer(m.peer);
            push(events, dropped, ClientEvent::PeerRemoved { peer: m.peer, key: m.key });
            false
        });
    }

    // ----- NAT traversal and relay ---------------------------------------

    fn check_members<C, R, S>(&mut self, now: Instant, node: &mut Node<C, R, S>)
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        let relay = self.config.relay_fallback;
        let registered = self.state == State::Registered;
        let (first, max) = (self.config.punch_interval, self.config.punch_interval_max);
        let backoff = |attempts: u8| punch_spacing(first, max, attempts);
        let max_interval = backoff(u8::MAX);
        let mut next: Option<Instant> = None;
        // What to do once the table is no longer borrowed: a message to the
        // Nucleus, and/or a punch of the member's candidates.
        let mut wants: heapless::Vec<(Option<Outgoing>, PeerId, heapless::Vec<SocketAddr, CANDIDATES>), 8> =
            heapless::Vec::new();
        self.members.retain(|m| {
            if let Some(at) = m.check_at {
                if at <= now && wants.len() < wants.capacity() {
                    let has_session = node.peer_stats(m.peer).is_some_and(|s| s.has_session);
                    m.check_at = None;
                    match m.path {
                        Path::Connecting if has_session => m.path = Path::Direct,
                        Path::Connecting if relay && registered => {
                            // No direct handshake yet: relay now, punch on
                            // (the first round comes once the relay is up).
                            m.path = Path::RelayRequested;
                            m.attempts = 1;
                            let _ = wants.push((Some(Outgoing::Relay(m.key)), m.peer, heapless::Vec::new()));
                            m.check_at = Some(now.saturating_add(RELAY_RETRY));
                        }
                        Path::Connecting => {
                            // No relay: punch rounds, ours and the peer's at once.
                            let _ = wants.push((Some(Outgoing::Punch(m.key)), m.peer, m.candidates()));
                            m.check_at = Some(now.saturating_add(backoff(m.attempts)));
                            m.attempts = m.attempts.saturating_add(1);
                        }
                        Path::RelayRequested => {
                            if m.attempts < RELAY_TRIES && registered {
                                m.attempts = m.attempts.saturating_add(1);
                                let _ = wants.push((Some(Outgoing::Relay(m.key)), m.peer, heapless::Vec::new()));
                                m.check_at = Some(now.saturating_add(RELAY_RETRY));
                            } else {
                                // No relay for us now: punch, and ask again later.
                                m.path = Path::Connecting;
                                m.attempts = 0;
                                let _ = wants.push((Some(Outgoing::Punch(m.key)), m.peer, m.candidates()));
                                m.check_at = Some(now.saturating_add(max_interval));
                            }
                        }
                        Path::Relayed => {
                            // Try to get back to a direct path: both sides probe at once.
                            let _ = wants.push((Some(Outgoing::Punch(m.key)), m.peer, m.candidates()));
                            m.attempts = m.attempts.saturating_add(1);
                            m.check_at = Some(now.saturating_add(backoff(m.attempts)));
                        }
                        Path::Direct => {}
                    }
                }
            }
            if let Some(at) = m.check_at {
                next = Some(next.map_or(at, |n: Instant| n.min(at)));
            }
            true
        });
        self.next_member_check = next;
        for (o, peer, candidates) in wants {
            if let Some(o) = o.filter(|_| registered) {
                self.queue(o);
            }
            if !candidates.is_empty() {
                self.stats.punches = self.stats.punches.saturating_add(1);
                self.punch(peer, &candidates);
            }
        }
    }

    fn arm_member_check(&mut self, at: Instant) {
        self.next_member_check = Some(self.next_member_check.map_or(at, |n| n.min(at)));
    }

    fn on_relay_ready<C, R, S>(&mut self, now: Instant, node: &mut Node<C, R, S>, r: PeerRef)
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        let relay_ep = self.config.nucleus_endpoint;
        let punch_first = self.punch_backoff(0);
        let Some(m) = self.members.get_mut(&r.key) else { return };
        if m.path != Path::RelayRequested {
            return;
        }
        m.path = Path::Relayed;
        m.attempts = 0;
        let check = now.saturating_add(punch_first);
        m.check_at = Some(check);
        let peer = m.peer;
        node.set_endpoint(peer, Some(relay_ep));
        // A handshake through the relay right away: the direct one in
        // flight (if any) is replaced rather than waited for.
        node.initiate_now(now, peer);
        self.arm_member_check(check);
        self.push_event(ClientEvent::Relayed { peer });
    }

    fn unwrap_relay<C, R, S>(
        &mut self,
        now: Instant,
        node: &mut Node<C, R, S>,
        d: RelayData<'_>,
        out: &mut [u8],
    ) -> Result<Option<(PeerId, usize)>, ControlError>
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        if self.members.get(&d.peer).is_none() {
            return Err(ControlError::UnknownRelayPeer);
        }
        self.stats.relayed_in = self.stats.relayed_in.saturating_add(1);
        // The relayed peer's endpoint becomes the Nucleus's (it roams there
        // if the datagram authenticates): our answers go back through the relay.
        match node.handle_datagram_with_control(now, self.config.nucleus_endpoint, d.datagram, out) {
            Ok(Incoming::Received(Received::Packet { peer, len })) => Ok(Some((peer, len))),
            Ok(Incoming::Received(Received::Reply { len })) => {
                let mut v = heapless::Vec::new();
                if out.get(..len).is_some_and(|b| v.extend_from_slice(b).is_ok()) {
                    self.relay_reply = Some((d.peer, v));
                }
                Ok(None)
            }
            Ok(Incoming::Received(Received::Done)) => Ok(None),
            Ok(Incoming::Control { .. }) => Err(ControlError::Unexpected),
            Err(e) => Err(ControlError::Relay(e)),
        }
    }

    fn punch(&mut self, peer: PeerId, candidates: &[SocketAddr]) {
        if candidates.is_empty() || self.punches.iter().any(|p| p.peer == peer) {
            return;
        }
        let mut c = heapless::Vec::new();
        for e in candidates.iter().take(CANDIDATES) {
            let _ = c.push(*e);
        }
        let job = Punch { peer, candidates: c, next: 0, sent_to: None, datagram: heapless::Vec::new(), waiting: false };
        if self.punches.push_back(job).is_err() {
            self.stats.dropped = self.stats.dropped.saturating_add(1);
        }
    }

    /// Keeps a copy of the node's handshake (or keepalive) for the peer a
    /// waiting punch job is about.
    fn capture(&mut self, t: &Transmit, out: &[u8]) {
        let Some(job) = self.punches.front_mut() else { return };
        if !job.waiting || job.peer != t.peer || !job.datagram.is_empty() {
            return;
        }
        let Some(bytes) = out.get(..t.len) else { return };
        let kind = bytes.first().copied().map(u32::from);
        let copyable = kind == Some(MSG_INITIATION) || (kind == Some(MSG_TRANSPORT) && t.len == 32);
        if copyable && job.datagram.extend_from_slice(bytes).is_ok() {
            job.sent_to = Some(t.to);
        }
    }

    fn next_punch_copy<C, R, S>(
        &mut self,
        now: Instant,
        node: &mut Node<C, R, S>,
        out: &mut [u8],
    ) -> Result<Option<Transmit>, SendError>
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        let relay_ep = self.config.nucleus_endpoint;
        loop {
            let Some(job) = self.punches.front_mut() else { return Ok(None) };
            if node.peer_stats(job.peer).is_none() {
                self.punches.pop_front();
                continue;
            }
            if job.datagram.is_empty() {
                if job.waiting {
                    return Ok(None); // the node's next transmit for the peer is captured
                }
                job.waiting = true;
                let has_session = node.peer_stats(job.peer).is_some_and(|s| s.has_session);
                if has_session {
                    let peer = job.peer;
                    if let Ok(Sent::Transmit(t)) = node.send_to_peer(now, peer, &[], out) {
                        self.capture(&t, out);
                        return self.route_transmit(now, node, t, out);
                    }
                }
                let peer = job.peer;
                node.initiate(now, peer);
                return Ok(None);
            }
            // Next candidate not yet sent to (never the relay: copies are direct).
            let sent_to = job.sent_to;
            let skip = |e: &SocketAddr| Some(*e) == sent_to || *e == relay_ep;
            while job.candidates.get(job.next).is_some_and(skip) {
                job.next = job.next.saturating_add(1);
            }
            let Some(&to) = job.candidates.get(job.next) else {
                self.punches.pop_front();
                continue;
            };
            job.next = job.next.saturating_add(1);
            let len = job.datagram.len();
            let dst = out.get_mut(..len).ok_or(SendError::BufferTooSmall { needed: len })?;
            dst.copy_from_slice(&job.datagram);
            return Ok(Some(Transmit { to, len, peer: job.peer }));
        }
    }

    // ----- signaling out -------------------------------------------------

    fn poll_signaling<C, R, S>(
        &mut self,
        now: Instant,
        node: &mut Node<C, R, S>,
        out: &mut [u8],
    ) -> Result<Option<Transmit>, SendError>
    where
        C: CryptoProvider,
        R: rand_core::RngCore + rand_core::CryptoRng,
        S: Storage<C>,
    {
        let Some(nucleus) = self.nucleus else {
            self.outq.clear();
            return Ok(None);
        };
        while let Some(&o) = self.outq.front() {
            let mut msg = [0u8; MSG_BUF];
            let Some(n) = self.encode(o, &mut msg) else {
                self.outq.pop_front();
                continue;
            };
            let payload = msg.get(..n).unwrap_or(&[]);
            match node.send_to_peer(now, nucleus, payload, out) {
                Ok(Sent::Transmit(t)) => {
                    self.outq.pop_front();
                    self.stats.sent = self.stats.sent.saturating_add(1);
                    return Ok(Some(t));
                }
                Ok(Sent::Queued { .. }) => {
                    // Staged by the node until the handshake completes.
                    self.outq.pop_front();
                    self.stats.sent = self.stats.sent.saturating_add(1);
                }
                // No session and no queue (no alloc): sent once the handshake completes.
                Err(SendError::QueueFull { .. }) => return Ok(None),
                Err(SendError::BufferTooSmall { needed }) => return Err(SendError::BufferTooSmall { needed }),
                Err(_) => {
                    self.outq.pop_front();
                    self.stats.dropped = self.stats.dropped.saturating_add(1);
                }
            }
        }
        Ok(None)
    }

    fn encode(&self, o: Outgoing, buf: &mut [u8]) -> Option<usize> {
        let msg = match o {
            Outgoing::Hello => Message::Hello,
            Outgoing::Leave => Message::Leave,
            Outgoing::ListRequest => Message::PeerListRequest,
            Outgoing::ListAck => Message::ListAck(wire::ListAck { version: self.list_version }),
            Outgoing::Heartbeat => Message::Heartbeat(Heartbeat { list_version: self.list_version }),
            Outgoing::Punch(key) => Message::PunchRequest(PeerRef { key }),
            Outgoing::Relay(key) => Message::RelayRequest(PeerRef { key }),
            Outgoing::Register => {
                let (Some(challenge), Some(auth), Some(own)) = (self.challenge, self.auth.as_ref(), self.own) else {
                    return Message::Hello.emit(buf).ok();
                };
                let cluster_key = self.cluster.public();
                let (vip, vip2) = (self.config.vip, self.config.vip2);
                let proof = auth.proof(&own, &self.config.nucleus_key, &cluster_key, &challenge, vip, vip2);
                Message::Register(wire::Register {
                    cluster_key,
                    challenge,
                    proof,
                    vip,
                    vip2,
                    locals: self.config.local_endpoints.clone(),
                })
            }
        };
        msg.emit(buf).ok()
    }

    fn queue(&mut self, o: Outgoing) {
        if self.outq.iter().any(|q| *q == o) {
            return;
        }
        if self.outq.push_back(o).is_err() {
            self.stats.dropped = self.stats.dropped.saturating_add(1);
        }
    }

    // ----- helpers -------------------------------------------------------

    /// Exponential backoff with a per-node jitter of up to 1/4 (derived from
    /// our key, so nodes restarted together spread out).
    fn backoff(&self, attempt: u32) -> Duration {
        let base = RETRY_BASE.saturating_mul(1u32 << attempt.min(5)).min(RETRY_MAX);
        let seed = self
            .own
            .map_or(0u64, |k| u64::from_le_bytes(k.0.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8])));
        let h = seed.wrapping_add(u64::from(attempt)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33;
        let quarter = u64::try_from(base.as_millis() / 4).unwrap_or(0).max(1);
        base.saturating_add(Duration::from_millis(h.checked_rem(quarter).unwrap_or(0)))
    }

    /// The spacing of punch round `attempts` (0: the first): `punch_interval`
    /// doubled per round, within [100 ms, `punch_interval_max`].
    fn punch_backoff(&self, attempts: u8) -> Duration {
        punch_spacing(self.config.punch_interval, self.config.punch_interval_max, attempts)
    }

    fn push_event(&mut self, e: ClientEvent) {
        push(&mut self.events, &mut self.events_dropped, e);
    }

    fn clamp(&mut self, now: Instant) -> Instant {
        if now > self.last_now {
            self.last_now = now;
        }
        self.last_now
    }
}

fn punch_spacing(first: Duration, max: Duration, attempts: u8) -> Duration {
    let max = max.max(MIN_PUNCH_INTERVAL);
    first.max(MIN_PUNCH_INTERVAL).saturating_mul(1u32 << attempts.min(20)).min(max)
}

fn push(events: &mut heapless::Deque<ClientEvent, EVENTS>, dropped: &mut u64, e: ClientEvent) {
    if events.push_back(e).is_err() {
        *dropped = dropped.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    //! The client against a hand-driven Nucleus (a bare node that answers by
    //! hand), with fixed storage: runs with and without `alloc`.
    use super::*;
    use crate::crypto::RustCrypto;
    use crate::keys::StaticSecret;
    use crate::node::NodeConfig;
    use crate::nucleus::wire::PeerListWriter;
    use crate::storage::Fixed;
    use crate::time::WallTime;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::vec::Vec;

    type Small = Node<RustCrypto, ChaCha20Rng, Fixed<4, 8, 16>>;

    struct Rig {
        edge: Small,
        client: NucleusClient<FixedMembers<3>>,
        nucleus: Small,
        edge_at_nucleus: PeerId,
        edge_addr: SocketAddr,
        nucleus_addr: SocketAddr,
        nucleus_secret: StaticSecret,
        cluster: ClusterSecret,
        now: Instant,
    }

    impl Rig {
        fn new() -> Rig {
            let mut rng = ChaCha20Rng::seed_from_u64(42);
            let (ke, kn) = (StaticSecret::random(&mut rng), StaticSecret::random(&mut rng));
            let (pe, pn) = (ke.public_key::<RustCrypto>(), kn.public_key::<RustCrypto>());
            let cfg = |k| NodeConfig { private_key: Some(k), ..NodeConfig::default() };
            let edge = Small::new(cfg(ke), ChaCha20Rng::seed_from_u64(1));
            let mut nucleus = Small::new(cfg(kn.clone()), ChaCha20Rng::seed_from_u64(2));
            let now = Instant::from_secs(10);
            let edge_at_nucleus = nucleus.add_peer(now, PeerConfig::new(pe)).unwrap();
            nucleus.set_control_peer(edge_at_nucleus, true);
            let nucleus_addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();
            let cluster = ClusterSecret::derive::<RustCrypto>(b"lab", b"s3cret");
            let mut config = ClientConfig::new(pn, nucleus_addr, "10.200.0.1".parse().unwrap());
            config.use_nucleus_time = true;
            let client = NucleusClient::new(config, cluster.clone());
            Rig {
                edge,
                client,
                nucleus,
                edge_at_nucleus,
                edge_addr: "198.51.100.1:40000".parse().unwrap(),
                nucleus_addr,
                nucleus_secret: kn,
                cluster,
                now,
            }
        }

        /// Everything the edge sends now.
        fn drain_edge(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
            let mut out = [0u8; 1700];
            let mut v = Vec::new();
            while let Some(t) = self.client.poll_transmit(self.now, &mut self.edge, &mut out).unwrap() {
                v.push((t.to, out[..t.len].to_vec()));
            }
            v
        }

        /// Delivers edge datagrams to the Nucleus; returns the signaling
        /// messages it decrypted (handshake replies go straight back).
        fn deliver_to_nucleus(&mut self, dgs: Vec<(SocketAddr, Vec<u8>)>) -> Vec<Vec<u8>> {
            let mut msgs = Vec::new();
            for (to, d) in dgs {
                if to != self.nucleus_addr {
                    continue;
                }
                let mut out = [0u8; 1700];
                match self.nucleus.handle_datagram_with_control(self.now, self.edge_addr, &d, &mut out) {
                    Ok(Incoming::Received(Received::Reply { len })) => {
                        let reply = out[..len].to_vec();
                        self.deliver_to_edge(&reply);
                    }
                    Ok(Incoming::Control { peer, len }) => {
                        assert_eq!(peer, self.edge_at_nucleus);
                        msgs.push(out[..len].to_vec());
                    }
                    Ok(Incoming::Received(Received::Done)) => {}
                    r => panic!("nucleus: {r:?}"),
                }
            }
            msgs
        }

        fn deliver_to_edge(&mut self, d: &[u8]) -> Option<(PeerId, usize)> {
            let mut out = [0u8; 1700];
            let mut inner = [0u8; 1700];
            let r = match self.edge.handle_datagram_with_control(self.now, self.nucleus_addr, d, &mut out).unwrap() {
                Incoming::Control { peer, len } => {
                    self.client.handle_control(self.now, &mut self.edge, peer, &out[..len], &mut inner).unwrap()
                }
                _ => None,
            };
            while let Some(e) = self.edge.poll_event() {
                self.client.handle_node_event(self.now, &mut self.edge, &e);
            }
            r
        }

        /// The Nucleus sends a signaling message to the edge.
        fn send(&mut self, m: &Message<'_>) {
            let mut msg = [0u8; 1300];
            let n = m.emit(&mut msg).unwrap();
            let mut out = [0u8; 1400];
            let Ok(Sent::Transmit(t)) = self.nucleus.send_to_peer(self.now, self.edge_at_nucleus, &msg[..n], &mut out)
            else {
                panic!("nucleus has no session")
            };
            let d = out[..t.len].to_vec();
            self.deliver_to_edge(&d);
        }

        fn round(&mut self) -> Vec<Vec<u8>> {
            let d = self.drain_edge();
            self.deliver_to_nucleus(d)
        }

        fn advance_to_timeout(&mut self) {
            let t = self.client.poll_timeout().unwrap();
            self.now = self.now.max(t);
            self.edge.handle_timeout(self.now);
            self.client.handle_timeout(self.now, &mut self.edge);
        }
    }

    fn entry(k: u8, vip: [u8; 4]) -> PeerEntry {
        PeerEntry {
            key: StaticSecret::from_bytes([k; 32]).public_key::<RustCrypto>(),
            vip: IpAddr::from(vip),
            vip2: None,
            reflexive: Some(SocketAddr::from(([203, 0, 113, k], 5000))),
            locals: heapless::Vec::new(),
        }
    }

    #[test]
    fn registers_applies_lists_and_detects_a_lost_nucleus() {
        let mut r = Rig::new();
        let own = r.edge.public_key().unwrap();
        let np = r.client.start(r.now, &mut r.edge).unwrap();
        assert!(r.edge.is_control_peer(np));
        assert_eq!(r.client.state(), State::Connecting);
        // Handshake, then Hello (without alloc, after the handshake completes).
        let mut msgs = r.round();
        if msgs.is_empty() {
            msgs = r.round();
        }
        assert_eq!(msgs.len(), 1);
        assert_eq!(wire::parse(&msgs[0]).unwrap(), Message::Hello);

        let time = WallTime::new(1_800_000_000, 0);
        r.send(&Message::Challenge(ChallengeMsg { challenge: [7; 16], time }));
        let msgs = r.round();
        let Message::Register(reg) = wire::parse(&msgs[0]).unwrap() else { panic!("{msgs:?}") };
        assert_eq!(reg.cluster_key, r.cluster.public());
        assert_eq!(reg.challenge, [7; 16]);
        let npub = r.nucleus.public_key().unwrap();
        let k = AuthKey::for_nucleus::<RustCrypto>(&r.nucleus_secret, &reg.cluster_key).unwrap();
        assert!(k.verify(&reg.proof, &own, &npub, &reg.cluster_key, &[7; 16], reg.vip, reg.vip2));
        assert_eq!(reg.vip2, None);
        assert_eq!(reg.vip, IpAddr::from([10, 200, 0, 1]));

        r.send(&Message::RegisterOk(RegisterOk {
            vip: reg.vip,
            vip2: reg.vip2,
            challenge: [8; 16],
            time,
            heartbeat_secs: 5,
            reflexive: Some(r.edge_addr),
        }));
        assert_eq!(r.client.state(), State::Registered);
        assert_eq!(r.client.poll_event(), Some(ClientEvent::Registered { vip: reg.vip, reflexive: Some(r.edge_addr) }));

        // A full list in two pages (the second duplicated): both become peers.
        // y is dual-stack: its second VIP comes with its PeerAdded.
        let y_vip2 = IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, 3]);
        let (x, y) = (entry(1, [10, 200, 0, 2]), PeerEntry { vip2: Some(y_vip2), ..entry(2, [10, 200, 0, 3]) });
        for (e, total) in [(&x, 2), (&x, 2), (&y, 2)] {
            let mut buf = [0u8; 1200];
            let mut w = PeerListWriter::new(&mut buf, ListKind::Full, 1, total).unwrap();
            assert!(w.push_add(e));
            let n = w.finish();
            let msg = wire::parse(&buf[..n]).unwrap();
            r.send(&msg);
        }
        assert_eq!(r.client.list_version(), 1);
        assert_eq!(r.edge.peer_count(), 3);
        let px = r.edge.route(IpAddr::from([10, 200, 0, 2])).unwrap();
        let stats = r.edge.peer_stats(px).unwrap();
        assert_eq!(stats.public_key, x.key);
        assert_eq!(stats.endpoint, x.reflexive);
        assert_eq!(
            r.edge.preshared_key(px).unwrap().to_hex().as_str(),
            r.cluster.pair_psk(&own, &x.key).to_hex().as_str()
        );
        assert!(!r.edge.is_control_peer(px));
        let py = r.edge.route(y_vip2).unwrap();
        assert_eq!(r.edge.route(y.vip), Some(py));
        assert_eq!(
            r.client.poll_event(),
            Some(ClientEvent::PeerAdded { peer: px, key: x.key, vip: x.vip, vip2: None })
        );
        assert_eq!(
            r.client.poll_event(),
            Some(ClientEvent::PeerAdded { peer: py, key: y.key, vip: y.vip, vip2: Some(y_vip2) })
        );
        // The new peers' handshakes go out (persistent keepalive starts them).
        let out = r.drain_edge();
        assert!(out.iter().any(|(to, d)| Some(*to) == x.reflexive && d[0] == 1), "{out:?}");

        // Delta: x leaves.
        let mut buf = [0u8; 1200];
        let mut w = PeerListWriter::new(&mut buf, ListKind::Delta, 2, 1).unwrap();
        assert!(w.push_remove(&x.key));
        let n = w.finish();
        r.send(&wire::parse(&buf[..n]).unwrap());
        assert_eq!(r.client.list_version(), 2);
        assert!(r.edge.peer_stats(px).is_none());
        assert!(r.edge.route(IpAddr::from([10, 200, 0, 2])).is_none());
        assert_eq!(r.client.poll_event(), Some(ClientEvent::PeerRemoved { peer: px, key: x.key }));
        // A delta with a gap: the client asks for the full list.
        let mut w = PeerListWriter::new(&mut buf, ListKind::Delta, 4, 3).unwrap();
        assert!(w.push_add(&x));
        let n = w.finish();
        r.send(&wire::parse(&buf[..n]).unwrap());
        assert_eq!(r.client.list_version(), 2);
        let msgs = r.round();
        assert!(msgs.iter().any(|m| wire::parse(m) == Ok(Message::PeerListRequest)), "{msgs:?}");

        // Heartbeats every 5 s (the member's relay request comes first: it
        // never completed a handshake); unanswered ones are resent, then the
        // Nucleus is lost.
        let registered_at = r.now;
        let mut heartbeat = None;
        let mut relay_asked = None;
        for _ in 0..10 {
            r.advance_to_timeout();
            let msgs = r.round();
            if msgs.iter().any(|m| matches!(wire::parse(m), Ok(Message::Heartbeat(h)) if h.list_version == 2)) {
                heartbeat = Some(r.now);
                break;
            }
            if msgs.iter().any(|m| matches!(wire::parse(m), Ok(Message::RelayRequest(p)) if p.key == y.key)) {
                relay_asked.get_or_insert(r.now);
            }
        }
        let relay_asked = relay_asked.expect("no relay request for a member without a handshake");
        assert_eq!(relay_asked.saturating_duration_since(registered_at), RELAY_AFTER);
        let at = heartbeat.expect("no heartbeat");
        assert!(at.saturating_duration_since(registered_at) <= Duration::from_secs(5));
        let mut lost = false;
        for _ in 0..10 {
            r.advance_to_timeout();
            r.drain_edge();
            while let Some(e) = r.client.poll_event() {
                lost |= e == ClientEvent::NucleusLost;
            }
            if lost {
                break;
            }
        }
        assert!(lost, "no NucleusLost after missed heartbeats");
        assert_eq!(r.client.state(), State::Connecting);
        // The members stay peers while the Nucleus is away.
        assert_eq!(r.client.members().len(), 1);

        // Control payloads from anyone but the Nucleus, and malformed ones, are refused.
        let mut out = [0u8; 64];
        assert_eq!(
            r.client.handle_control(r.now, &mut r.edge, px, &[1, 1, 0, 0], &mut out),
            Err(ControlError::NotNucleus)
        );
        assert_eq!(
            r.client.handle_control(r.now, &mut r.edge, np, &[1, 1, 0, 1], &mut out),
            Err(ControlError::Malformed(ParseError::Truncated))
        );
        assert_eq!(
            r.client.handle_control(r.now, &mut r.edge, np, &[1, 1, 0, 0], &mut out),
            Err(ControlError::Unexpected)
        );

        // Leaving removes the members and sends Leave.
        r.client.leave(r.now, &mut r.edge);
        assert_eq!(r.edge.peer_count(), 1);
        assert_eq!(r.client.state(), State::Left);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let r = Rig::new();
        let mut last = Duration::ZERO;
        for a in 0..10 {
            let b = r.client.backoff(a);
            assert!(b >= RETRY_BASE && b <= RETRY_MAX + RETRY_MAX / 4, "{a}: {b:?}");
            if a < 5 {
                assert!(b > last);
            }
            last = b;
        }
    }
}
