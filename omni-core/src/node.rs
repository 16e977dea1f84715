//! The multi-peer WireGuard state machine a host drives.

use core::marker::PhantomData;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

use crate::allowed_ips::{AllowedIp, RouteTable, TableFull};
use crate::constants::*;
use crate::cookie::{verify_mac1, CookieChecker};
use crate::crypto::CryptoProvider;
use crate::keys::{PresharedKey, PublicKey, StaticSecret};
use crate::noise::handshake::{self, HandshakeError, InitiationPending, LocalStatic, PeerStatic};
use crate::noise::tai64n::Tai64N;
use crate::peer::{Held, Peer, Slot};
use crate::session::{sealed_len, OpenError, Session};
use crate::storage::{Fifo, Map, Slab, SourceLimiter, Storage};
use crate::time::{Instant, WallTime};
use crate::timers::Timer;
use crate::wire::{self, CookieReply, Initiation, Message, Response, TransportHeader, WireError};

/// A handle to a peer of a [`Node`]. Stable while the peer exists; a removed
/// peer's id may be reused by a later [`Node::add_peer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PeerId(pub u32);

impl PeerId {
    fn slot(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Node-wide settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Our static private key. `None` leaves the node unable to handshake
    /// until [`Node::set_private_key`] (the UAPI allows configuring peers first).
    pub private_key: Option<StaticSecret>,
    /// Handshake messages per second above which the node is "under load"
    /// and demands cookies (MAC2) before doing any Curve25519 work.
    pub under_load_threshold: u32,
    /// Tunnel MTU: padding never grows a packet past it.
    pub mtu: u16,
    /// Packets kept per peer while a handshake is in progress (`alloc` only).
    pub max_staged_packets: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { private_key: None, under_load_threshold: 1024, mtu: 1420, max_staged_packets: 128 }
    }
}

/// A peer as configured by the host.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    /// Seconds between keepalives sent even when idle (for NAT mappings).
    pub persistent_keepalive: Option<u16>,
}

impl PeerConfig {
    pub fn new(public_key: PublicKey) -> Self {
        PeerConfig { public_key, preshared_key: None, endpoint: None, persistent_keepalive: None }
    }
}

/// Something the host may want to know (logging, UI, the Nucleus client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A handshake completed; `initiator` tells which side we played.
    HandshakeCompleted { peer: PeerId, initiator: bool },
    /// An authenticated packet arrived from a new address (roaming).
    EndpointChanged { peer: PeerId, endpoint: SocketAddr },
    /// Rekey-Attempt-Time passed without an answer; queued packets were dropped.
    HandshakeFailed { peer: PeerId },
    /// No traffic for 3 × Reject-After-Time: all keys of the peer were erased.
    KeysExpired { peer: PeerId },
}

#[cfg(feature = "defmt")]
impl defmt::Format for Event {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            Event::HandshakeCompleted { peer, initiator } => {
                defmt::write!(f, "HandshakeCompleted({}, initiator={})", peer, initiator)
            }
            // defmt has no SocketAddr formatting; the peer id is what matters on a device.
            Event::EndpointChanged { peer, .. } => defmt::write!(f, "EndpointChanged({})", peer),
            Event::HandshakeFailed { peer } => defmt::write!(f, "HandshakeFailed({})", peer),
            Event::KeysExpired { peer } => defmt::write!(f, "KeysExpired({})", peer),
        }
    }
}

/// A datagram the host must send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    /// Bytes of the output buffer holding the datagram.
    pub len: usize,
    pub peer: PeerId,
}

/// What [`Node::handle_datagram`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Consumed with nothing for the host (keepalive, handshake completion,
    /// cookie absorbed). Call [`Node::poll_transmit`]: queued data may now flow.
    Done,
    /// Send `out[..len]` back to the datagram's source (a handshake response
    /// or a cookie reply).
    Reply { len: usize },
    /// `out[..len]` is a decrypted IP packet from `peer` for the TUN device.
    Packet { peer: PeerId, len: usize },
}

/// What [`Node::handle_datagram_with_control`] produced: everything
/// [`Node::handle_datagram`] reports, plus signaling from control peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// What [`Node::handle_datagram`] would have returned.
    Received(Received),
    /// `out[..len]` (in place: `buf[IN_PLACE_OFFSET..][..len]`) is an
    /// authenticated signaling payload from `peer`, a control peer (see
    /// [`Node::set_control_peer`]). It is not an IP packet: hand it to the
    /// signaling layer (e.g. `nucleus::NucleusClient::handle_control`), never
    /// to the TUN device. `len` includes WireGuard's zero padding.
    Control { peer: PeerId, len: usize },
}

/// What [`Node::handle_datagram_with_admission`] produced.
#[derive(Debug)]
// The large variant is the opened handshake state, moved once to the host
// and back; boxing it would allocate, which the core must not.
#[allow(clippy::large_enum_variant)]
pub enum Arrival {
    /// What [`Node::handle_datagram_with_control`] would have returned.
    Incoming(Incoming),
    /// A handshake initiation from a public key that is not a peer (where
    /// [`Node::handle_datagram_with_control`] fails with
    /// [`RecvError::UnknownPeer`]): admit it with
    /// [`Node::accept_initiation`] or refuse it by dropping it.
    UnknownPeer(UnknownInitiation),
}

/// A handshake initiation from a public key that is not a peer of the node,
/// checked and opened once by [`Node::handle_datagram_with_admission`]:
/// MAC1 verified, the load meter counted it, under load its cookie (MAC2)
/// was verified (or a cookie reply went out instead) and the per-source
/// handshake limit applied, and the sender's static key was decrypted.
///
/// The sender has not yet proven that it holds that key:
/// [`Node::accept_initiation`] checks the proof (the timestamp encrypted
/// under the static-static DH) before anything is answered, and keeps no
/// peer if it fails. To refuse, drop the value: the handshake state is
/// wiped and the node is unchanged.
pub struct UnknownInitiation {
    pending: InitiationPending,
    init: Initiation,
    from: SocketAddr,
}

impl UnknownInitiation {
    /// The static key the initiation claims (not yet proven).
    pub fn public_key(&self) -> PublicKey {
        self.pending.remote_static
    }

    /// Where the initiation came from (the address the response goes to).
    pub fn source(&self) -> SocketAddr {
        self.from
    }
}

impl core::fmt::Debug for UnknownInitiation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UnknownInitiation")
            .field("public_key", &self.pending.remote_static)
            .field("source", &self.from)
            .finish_non_exhaustive()
    }
}

/// A peer admitted by [`Node::accept_initiation`]: send `out[..len]` (the
/// handshake response) to the initiation's [`source`](UnknownInitiation::source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub peer: PeerId,
    pub len: usize,
}

/// Errors of [`Node::accept_initiation`]. Whatever the error, the node holds
/// no peer for the initiation's key afterwards (unless it held one before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum AcceptError {
    /// The peer configuration names another key than the initiation (the
    /// host's mistake).
    KeyMismatch,
    /// The peer could not be added (table full, or the key became a peer
    /// since the initiation arrived).
    AddPeer(AddPeerError),
    /// The initiation did not complete, e.g. [`RecvError::Handshake`]: the
    /// sender does not hold the key it claimed; or
    /// [`RecvError::BufferTooSmall`] (the initiation is lost: use a buffer
    /// as large as the one given to `handle_datagram_with_admission`).
    Initiation(RecvError),
}

/// What [`Node::send_ip`] did with the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Encrypted into `out`; send it.
    Transmit(Transmit),
    /// Kept until a handshake finishes; [`Node::poll_transmit`] will emit the
    /// initiation and later the packet.
    Queued { peer: PeerId },
}

/// Errors of [`Node::send_ip`]. All are local conditions; nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SendError {
    /// `out` is too small; `needed` bytes are required.
    BufferTooSmall { needed: usize },
    /// Not an IPv4 or IPv6 packet, or truncated header.
    NotIp,
    /// No peer's allowed IPs contain the destination.
    NoRoute,
    /// The peer has no known endpoint to send to.
    NoEndpoint { peer: PeerId },
    /// No session yet and the queue for the peer is full (or there is none without `alloc`).
    QueueFull { peer: PeerId },
    /// The peer id does not name a peer.
    UnknownPeer,
}

/// Errors of [`Node::handle_datagram`]: the datagram was dropped.
/// `BufferTooSmall` is the host's fault; every other variant is the sender's
/// (or an attacker's) and needs no action beyond counting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RecvError {
    BufferTooSmall {
        needed: usize,
    },
    Malformed(WireError),
    /// MAC1 did not verify: not addressed to our public key.
    BadMac1,
    /// Too many handshakes from this source, or from this peer.
    RateLimited,
    /// The initiation decrypted to a public key that is not a configured peer.
    UnknownPeer,
    /// The initiation's TAI64N is not newer than the last one accepted: a replay.
    StaleTimestamp,
    Handshake(HandshakeError),
    /// The receiver index names no session or handshake of ours.
    UnknownIndex,
    /// Transport counter already seen or too old.
    Replay,
    /// The session is older than Reject-After-Time.
    Expired,
    /// The transport payload did not authenticate.
    Decrypt,
    /// A cookie reply that did not decrypt for our last handshake message.
    BadCookie,
    /// The decrypted packet is not IPv4/IPv6.
    NotIp,
    /// The inner source address is outside the sending peer's allowed IPs.
    DisallowedSource {
        peer: PeerId,
    },
    /// We have no private key yet.
    NoPrivateKey,
    /// An authenticated signaling payload from a control peer reached
    /// [`Node::handle_datagram`], which only reports IP packets: hosts that
    /// mark control peers call [`Node::handle_datagram_with_control`].
    ControlPayload {
        peer: PeerId,
    },
}

/// Errors of [`Node::add_peer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum AddPeerError {
    /// A peer with this public key exists already.
    Duplicate(PeerId),
    /// The peer table (or its key index) is full.
    TableFull,
    /// The key is our own public key.
    OwnKey,
}

/// Errors of the allowed-IP calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RouteError {
    UnknownPeer,
    TableFull,
}

/// A snapshot of a peer for `wg show` and friends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStats {
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    /// Monotonic time of the last completed handshake.
    pub last_handshake: Option<Instant>,
    /// The same moment on the wall clock the host handed in.
    pub last_handshake_wall: Option<WallTime>,
    /// Bytes of authenticated datagrams received from / sent to the peer.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub has_session: bool,
}

/// Where the IP packet sits in the buffers of the in-place calls
/// ([`Node::send_ip_in_place`], [`Node::handle_datagram_in_place`]).
pub const IN_PLACE_OFFSET: usize = TRANSPORT_HEADER_LEN;

/// The packet to encrypt: in its own slice, or already in the output buffer.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Separate(&'a [u8]),
    InPlace(usize),
}

/// Keys are erased after three Reject-After-Times without a new session.
const ZERO_KEYS_AFTER: Duration = Duration::from_secs(REJECT_AFTER_TIME.as_secs() * 3);

/// A WireGuard node: our identity, a table of peers, cryptokey routing.
///
/// # Calling rules
///
/// The node performs no I/O and reads no clock; the host passes `now` (its
/// monotonic clock) into every call, and must never pass a time earlier than
/// a previous call's (an earlier `now` is clamped, not trusted).
///
/// - A datagram arrives on the UDP socket: [`handle_datagram`](Self::handle_datagram).
///   If it returns [`Received::Reply`], send those bytes back to the source;
///   [`Received::Packet`] is for the TUN device. Then drain
///   [`poll_transmit`](Self::poll_transmit).
/// - An IP packet arrives from the TUN device: [`send_ip`](Self::send_ip), then
///   drain [`poll_transmit`](Self::poll_transmit) (the packet may have started a
///   handshake).
/// - After any call, [`poll_timeout`](Self::poll_timeout) gives the next deadline.
///   Sleep until then (or until I/O), call [`handle_timeout`](Self::handle_timeout),
///   and drain [`poll_transmit`](Self::poll_transmit). There is no periodic tick.
/// - [`poll_event`](Self::poll_event) reports handshakes, roaming and expiry.
/// - A host that admits peers it was not configured with (a Nucleus) calls
///   [`handle_datagram_with_admission`](Self::handle_datagram_with_admission)
///   instead: an initiation from an unknown key comes back opened, and
///   [`accept_initiation`](Self::accept_initiation) adds the peer and
///   answers it (or the host drops it to refuse).
/// - Wall time (for TAI64N timestamps) comes from [`set_wall_time`](Self::set_wall_time);
///   call it at start and whenever the host's wall clock is corrected.
///
/// Buffers are the caller's: an output buffer of
/// `packet.len() + 32 + 15` (at least 148) bytes always suffices for
/// `send_ip`/`poll_transmit`, and one as large as the datagram for
/// `handle_datagram`. A too-small buffer yields an error with the size
/// needed; nothing is lost: call again with a larger one.
///
/// No input makes the node panic or allocate on the transport path.
pub struct Node<C: CryptoProvider, R, S: Storage<C>> {
    local: Option<LocalStatic<C>>,
    cookie_checker: Option<CookieChecker>,
    limiter: S::Limiter,
    peers: S::Peers,
    keys: S::Keys,
    indexes: S::Indexes,
    routes: S::Routes,
    pending: S::Pending,
    events: S::Events,
    events_dropped: u64,
    rng: R,
    config: NodeConfig,
    wall: Option<(Instant, WallTime)>,
    last_tai: Tai64N,
    last_now: Instant,
    load_window_start: Instant,
    load_count: u32,
    under_load_until: Option<Instant>,
    /// Lower bound of the earliest armed timer; exact after `handle_timeout`.
    deadline_hint: Option<Instant>,
    _crypto: PhantomData<C>,
}

impl<C: CryptoProvider, R, S: Storage<C>> core::fmt::Debug for Node<C, R, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Node")
            .field("public_key", &self.local.as_ref().map(|l| l.public))
            .field("peers", &self.keys.len())
            .finish_non_exhaustive()
    }
}

fn jitter(rng: &mut impl rand_core::RngCore) -> Duration {
    let max = u32::try_from(REKEY_TIMEOUT_JITTER_MAX.as_millis()).unwrap_or(333);
    Duration::from_millis(u64::from(rng.next_u32().checked_rem(max.saturating_add(1)).unwrap_or(0)))
}

/// An initiation after the checks that precede knowing its sender.
enum Opened {
    /// Under load without a valid cookie: a cookie reply is in `out`.
    CookieReply {
        len: usize,
    },
    Known(PeerId, InitiationPending),
    Unknown(InitiationPending),
}

/// The [`Node::handle_datagram`] view of an [`Incoming`].
fn only_received(r: Result<Incoming, RecvError>) -> Result<Received, RecvError> {
    match r? {
        Incoming::Received(r) => Ok(r),
        Incoming::Control { peer, .. } => Err(RecvError::ControlPayload { peer }),
    }
}

/// Destination address of an IP packet (for routing on send).
fn ip_destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => Some(IpAddr::V4(Ipv4Addr::from(wire::read_array::<4>(packet, 16)?))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(wire::read_array::<16>(packet, 24)?))),
        _ => None,
    }
}

/// Source address and true length (without WireGuard padding) of a decrypted packet.
fn ip_source_and_len(packet: &[u8]) -> Option<(IpAddr, usize)> {
    match packet.first()? >> 4 {
        4 => {
            let len = usize::from(u16::from_be_bytes(wire::read_array::<2>(packet, 2)?));
            let src = IpAddr::V4(Ipv4Addr::from(wire::read_array::<4>(packet, 12)?));
            (len >= 20 && len <= packet.len()).then_some((src, len))
        }
        6 => {
            let payload = usize::from(u16::from_be_bytes(wire::read_array::<2>(packet, 4)?));
            let len = payload.checked_add(40)?;
            let src = IpAddr::V6(Ipv6Addr::from(wire::read_array::<16>(packet, 8)?));
            (len <= packet.len()).then_some((src, len))
        }
        _ => None,
    }
}

impl<C, R, S> Node<C, R, S>
where
    C: CryptoProvider,
    R: rand_core::RngCore + rand_core::CryptoRng,
    S: Storage<C>,
{
    pub fn new(config: NodeConfig, rng: R) -> Self {
        let mut node = Node {
            local: None,
            cookie_checker: None,
            limiter: Default::default(),
            peers: Default::default(),
            keys: Default::default(),
            indexes: Default::default(),
            routes: Default::default(),
            pending: Default::default(),
            events: Default::default(),
            events_dropped: 0,
            rng,
            config: NodeConfig { private_key: None, ..config.clone() },
            wall: None,
            last_tai: Tai64N::default(),
            last_now: Instant::ZERO,
            load_window_start: Instant::ZERO,
            load_count: 0,
            under_load_until: None,
            deadline_hint: None,
            _crypto: PhantomData,
        };
        if let Some(k) = config.private_key {
            node.set_private_key(Some(k));
        }
        node
    }

    // ----- configuration -------------------------------------------------

    pub fn public_key(&self) -> Option<PublicKey> {
        self.local.as_ref().map(|l| l.public)
    }

    pub fn private_key(&self) -> Option<&StaticSecret> {
        self.local.as_ref().map(|l| &l.secret)
    }

    pub fn mtu(&self) -> u16 {
        self.config.mtu
    }

    pub fn set_mtu(&mut self, mtu: u16) {
        self.config.mtu = mtu;
    }

    /// Replaces our identity. All sessions end (they were keyed to the old
    /// identity); a peer whose key equals our new public key is removed, as
    /// WireGuard does.
    pub fn set_private_key(&mut self, key: Option<StaticSecret>) {
        let unchanged = match (&self.local, &key) {
            (Some(l), Some(k)) => {
                use subtle::ConstantTimeEq;
                bool::from(l.secret.bytes().ct_eq(k.bytes()))
            }
            (None, None) => true,
            _ => false,
        };
        if unchanged {
            return;
        }
        let key = key.filter(|k| !k.is_zero());
        self.local = key.map(LocalStatic::<C>::new);
        self.cookie_checker = self.local.as_ref().map(|l| CookieChecker::new(&l.public.0));
        let own = self.public_key();
        if let Some(own) = own {
            if let Some(&id) = self.keys.get(&own) {
                self.remove_peer(id);
            }
        }
        for slot in 0..self.peers.slots().len() {
            let id = PeerId(u32::try_from(slot).unwrap_or(u32::MAX));
            self.clear_sessions(id);
            let local = self.local.as_ref();
            if let Some(Some(p)) = self.peers.slots_mut().get_mut(slot) {
                let psk = p.statik.psk.clone();
                let public = p.statik.public;
                if let Some(local) = local {
                    p.statik = PeerStatic::new::<C>(local, public, psk);
                }
            }
        }
    }

    /// Adds a peer. Its allowed IPs are added separately.
    pub fn add_peer(&mut self, now: Instant, cfg: PeerConfig) -> Result<PeerId, AddPeerError> {
        let now = self.clamp(now);
        if let Some(&id) = self.keys.get(&cfg.public_key) {
            return Err(AddPeerError::Duplicate(id));
        }
        if self.public_key() == Some(cfg.public_key) {
            return Err(AddPeerError::OwnKey);
        }
        let psk = cfg.preshared_key.unwrap_or_default();
        let statik = match &self.local {
            Some(local) => PeerStatic::new::<C>(local, cfg.public_key, psk),
            None => PeerStatic { public: cfg.public_key, static_static: [0; 32], initiator_hash: [0; 32], psk },
        };
        let peer = Peer::new(statik, cfg.endpoint, cfg.persistent_keepalive);
        let slot = self.peers.insert(peer).map_err(|_| AddPeerError::TableFull)?;
        let id = PeerId(u32::try_from(slot).unwrap_or(u32::MAX));
        if self.keys.insert(cfg.public_key, id).is_err() {
            if let Some(s) = self.peers.slots_mut().get_mut(slot) {
                *s = None;
            }
            return Err(AddPeerError::TableFull);
        }
        // A persistent keepalive starts right away: it is how a peer behind
        // NAT makes itself reachable before any traffic.
        if let Some(k) = self.peer(id).and_then(|p| p.persistent_keepalive) {
            self.arm(id, Timer::PersistentKeepalive, now.saturating_add(Duration::from_secs(u64::from(k))));
            self.want(id, |p| p.want_keepalive = true);
        }
        Ok(id)
    }

    /// Removes a peer with its sessions and allowed IPs. Returns whether it existed.
    pub fn remove_peer(&mut self, id: PeerId) -> bool {
        let Some(peer) = self.peer(id) else { return false };
        let key = peer.statik.public;
        self.clear_sessions(id);
        self.keys.remove(&key);
        self.routes.remove_value(id);
        if let Some(s) = self.peers.slots_mut().get_mut(id.slot()) {
            *s = None;
        }
        true
    }

    /// Removes every peer.
    pub fn clear_peers(&mut self) {
        for id in self.peer_ids_snapshot() {
            self.remove_peer(id);
        }
    }

    pub fn peer_by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.keys.get(key).copied()
    }

    /// Calls `f` for each peer.
    pub fn for_each_peer(&self, mut f: impl FnMut(PeerId)) {
        for (i, s) in self.peers.slots().iter().enumerate() {
            if s.is_some() {
                f(PeerId(u32::try_from(i).unwrap_or(u32::MAX)));
            }
        }
    }

    pub fn peer_count(&self) -> usize {
        self.keys.len()
    }

    /// Sets or clears the preshared key; used from the next handshake on.
    pub fn set_preshared_key(&mut self, id: PeerId, psk: Option<PresharedKey>) -> bool {
        match self.peer_mut(id) {
            Some(p) => {
                p.statik.psk = psk.unwrap_or_default();
                true
            }
            None => false,
        }
    }

    /// Marks the peer as a control peer (the Nucleus): its decrypted
    /// non-empty payloads are signaling messages, reported by
    /// [`handle_datagram_with_control`](Self::handle_datagram_with_control) as
    /// [`Incoming::Control`] and never checked against allowed IPs or handed
    /// out as IP packets. Returns whether the peer exists.
    pub fn set_control_peer(&mut self, id: PeerId, control: bool) -> bool {
        match self.peer_mut(id) {
            Some(p) => {
                p.control = control;
                true
            }
            None => false,
        }
    }

    /// Whether [`set_control_peer`](Self::set_control_peer) marked the peer.
    pub fn is_control_peer(&self, id: PeerId) -> bool {
        self.peer(id).is_some_and(|p| p.control)
    }

    /// The peer's preshared key, if one is set (for the UAPI's `get`).
    pub fn preshared_key(&self, id: PeerId) -> Option<PresharedKey> {
        self.peer(id).map(|p| p.statik.psk.clone()).filter(|k| !k.is_zero())
    }

    /// Sets where the peer is reached. Packets queued while it had no
    /// endpoint start moving (a handshake is started for them).
    pub fn set_endpoint(&mut self, id: PeerId, endpoint: Option<SocketAddr>) -> bool {
        let Some(p) = self.peer_mut(id) else { return false };
        p.endpoint = endpoint;
        if endpoint.is_some() && p.has_staged() {
            self.want(id, |p| p.want_initiation = true);
        }
        true
    }

    /// Sets the persistent keepalive interval in seconds (`None` or 0 disables).
    /// Enabling it sends a keepalive at once, as WireGuard does.
    pub fn set_persistent_keepalive(&mut self, now: Instant, id: PeerId, interval: Option<u16>) -> bool {
        let now = self.clamp(now);
        let interval = interval.filter(|&k| k > 0);
        let Some(p) = self.peer_mut(id) else { return false };
        let was = p.persistent_keepalive;
        p.persistent_keepalive = interval;
        match interval {
            Some(k) => {
                self.arm(id, Timer::PersistentKeepalive, now.saturating_add(Duration::from_secs(u64::from(k))));
                if was.is_none() {
                    self.want(id, |p| p.want_keepalive = true);
                }
            }
            None => {
                if let Some(p) = self.peer_mut(id) {
                    p.timers.stop(Timer::PersistentKeepalive);
                }
            }
        }
        true
    }

    /// Routes `net` to the peer (taking it from any other peer that had it).
    pub fn add_allowed_ip(&mut self, id: PeerId, net: AllowedIp) -> Result<(), RouteError> {
        if self.peer(id).is_none() {
            return Err(RouteError::UnknownPeer);
        }
        self.routes.insert(net, id).map_err(|TableFull| RouteError::TableFull)
    }

    pub fn remove_allowed_ip(&mut self, id: PeerId, net: AllowedIp) -> bool {
        self.routes.remove(net, id)
    }

    pub fn clear_allowed_ips(&mut self, id: PeerId) {
        self.routes.remove_value(id);
    }

    pub fn for_each_allowed_ip(&self, id: PeerId, mut f: impl FnMut(AllowedIp)) {
        self.routes.for_each_of(id, &mut f);
    }

    /// The peer a packet to `ip` would be sent to.
    pub fn route(&self, ip: IpAddr) -> Option<PeerId> {
        self.routes.lookup(ip)
    }

    pub fn peer_stats(&self, id: PeerId) -> Option<PeerStats> {
        let p = self.peer(id)?;
        Some(PeerStats {
            public_key: p.statik.public,
            endpoint: p.endpoint,
            persistent_keepalive: p.persistent_keepalive,
            last_handshake: p.last_handshake,
            last_handshake_wall: p.last_handshake_wall,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            has_session: p.current.is_some() || p.next.is_some(),
        })
    }

    /// Tells the node the wall-clock time at `now`. TAI64N timestamps are
    /// derived from this pair and the monotonic clock from then on.
    pub fn set_wall_time(&mut self, now: Instant, wall: WallTime) {
        self.wall = Some((now, wall));
    }

    /// Events dropped because the host did not poll them (the queue is bounded).
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Whether the node currently demands cookies for handshakes.
    pub fn is_under_load(&self, now: Instant) -> bool {
        self.under_load_until.is_some_and(|t| now < t)
    }

    /// Starts a handshake with the peer now (unless one was sent < 5 s ago).
    pub fn initiate(&mut self, now: Instant, id: PeerId) -> bool {
        let _ = self.clamp(now);
        if self.peer(id).is_none() {
            return false;
        }
        self.want(id, |p| p.want_initiation = true);
        true
    }

    /// Starts a handshake with the peer now even if one was sent less than
    /// Rekey-Timeout ago (it replaces the one in flight): for a path change,
    /// e.g. a peer whose endpoint was just moved to a relay, where waiting
    /// for the retransmit timer would stall traffic for seconds. Still at
    /// most one initiation per 50 ms per peer.
    pub fn initiate_now(&mut self, now: Instant, id: PeerId) -> bool {
        let _ = self.clamp(now);
        if self.peer(id).is_none() {
            return false;
        }
        self.want(id, |p| {
            p.want_initiation = true;
            p.initiation_is_retry = true;
        });
        true
    }

    /// Host hint after sleep, wake or a network change: the path to every
    /// peer may be gone, so handshakes start over from the new address at
    /// once (the next [`poll_transmit`](Self::poll_transmit) sends them,
    /// bypassing the Rekey-Timeout spacing and the 50 ms initiation rate):
    ///
    /// - a peer with an endpoint and a session rehandshakes, so both sides
    ///   learn the new address and NAT mapping;
    /// - a peer with an endpoint and a handshake in flight (our initiation
    ///   is unanswered, waiting for its retransmit timer) sends a fresh
    ///   initiation now instead of up to Rekey-Timeout later. The attempt
    ///   count is kept: a handshake still gives up after Rekey-Attempt-Time.
    ///
    /// Peers without an endpoint, and idle peers with neither a session nor
    /// a handshake in flight, are left alone: configured peers without
    /// traffic cause no handshakes.
    pub fn rebind(&mut self, now: Instant) {
        let _ = self.clamp(now);
        for id in self.peer_ids_snapshot() {
            let restart =
                self.peer(id).is_some_and(|p| p.endpoint.is_some() && (p.current.is_some() || p.initiation.is_some()));
            if restart {
                self.want(id, |p| {
                    p.want_initiation = true;
                    p.last_initiation_sent = None;
                });
            }
        }
    }

    // ----- the data path -------------------------------------------------

    /// Encrypts an IP packet from the TUN device for the peer its destination
    /// routes to. See the calling rules on [`Node`].
    pub fn send_ip(&mut self, now: Instant, packet: &[u8], out: &mut [u8]) -> Result<Sent, SendError> {
        let dst = ip_destination(packet).ok_or(SendError::NotIp)?;
        let id = self.routes.lookup(dst).ok_or(SendError::NoRoute)?;
        self.send_to_peer(now, id, packet, out)
    }

    /// Encrypts `packet` for a given peer (no routing; used by hosts that
    /// route themselves, and for keepalives with an empty packet).
    pub fn send_to_peer(&mut self, now: Instant, id: PeerId, packet: &[u8], out: &mut [u8]) -> Result<Sent, SendError> {
        self.send_impl(now, id, Payload::Separate(packet), out)
    }

    /// Zero-copy [`send_ip`](Self::send_ip): the host reads the IP packet into
    /// `buf[IN_PLACE_OFFSET..][..len]`, leaving 16 bytes of headroom for the
    /// header and room after it for padding and the tag (`len + 47` bytes in
    /// all always suffice). On [`Sent::Transmit`] the datagram is `buf[..t.len]`.
    pub fn send_ip_in_place(&mut self, now: Instant, buf: &mut [u8], len: usize) -> Result<Sent, SendError> {
        let end = IN_PLACE_OFFSET.saturating_add(len);
        let packet = buf.get(IN_PLACE_OFFSET..end).ok_or(SendError::BufferTooSmall { needed: end })?;
        let dst = ip_destination(packet).ok_or(SendError::NotIp)?;
        let id = self.routes.lookup(dst).ok_or(SendError::NoRoute)?;
        self.send_impl(now, id, Payload::InPlace(len), buf)
    }

    /// Zero-copy [`send_to_peer`](Self::send_to_peer): the packet is at
    /// `buf[IN_PLACE_OFFSET..][..len]`, as for [`send_ip_in_place`](Self::send_ip_in_place).
    pub fn send_to_peer_in_place(
        &mut self,
        now: Instant,
        id: PeerId,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Sent, SendError> {
        self.send_impl(now, id, Payload::InPlace(len), buf)
    }

    fn send_impl(&mut self, now: Instant, id: PeerId, payload: Payload<'_>, out: &mut [u8]) -> Result<Sent, SendError> {
        let now = self.clamp(now);
        let mtu = usize::from(self.config.mtu);
        let plen = match payload {
            Payload::Separate(p) => p.len(),
            Payload::InPlace(len) => len,
        };
        let needed = sealed_len(plen, mtu);
        let peer = self.peer_mut(id).ok_or(SendError::UnknownPeer)?;
        let endpoint = peer.endpoint;
        if let Some(session) = peer.sendable(now) {
            let Some(to) = endpoint else { return Err(SendError::NoEndpoint { peer: id }) };
            if out.len() < needed {
                return Err(SendError::BufferTooSmall { needed });
            }
            let len = match payload {
                Payload::Separate(p) => session.seal(p, out, mtu),
                Payload::InPlace(n) => session.seal_in_place(n, out, mtu),
            };
            let (counter, age, initiator) = (session.send_counter(), session.age(now), session.initiator);
            peer.tx_bytes = peer.tx_bytes.saturating_add(len as u64);
            self.on_authenticated_sent(now, id);
            if plen > 0 {
                self.on_data_sent(now, id);
            }
            // Keep keys fresh: only the initiator of a session rekeys on age,
            // so the two sides never race to replace the same session.
            if counter >= REKEY_AFTER_MESSAGES || (initiator && age >= REKEY_AFTER_TIME) {
                self.want(id, |p| p.want_initiation = true);
            }
            return Ok(Sent::Transmit(Transmit { to, len, peer: id }));
        }
        // No usable session: keep the packet and start a handshake.
        let packet = match payload {
            Payload::Separate(p) => p,
            Payload::InPlace(n) => out.get(IN_PLACE_OFFSET..IN_PLACE_OFFSET.saturating_add(n)).unwrap_or(&[]),
        };
        let staged = self.stage(id, packet);
        self.want(id, |p| p.want_initiation = true);
        if staged {
            Ok(Sent::Queued { peer: id })
        } else {
            Err(SendError::QueueFull { peer: id })
        }
    }

    #[cfg(feature = "alloc")]
    fn stage(&mut self, id: PeerId, packet: &[u8]) -> bool {
        let max = self.config.max_staged_packets;
        let Some(p) = self.peer_mut(id) else { return false };
        if packet.is_empty() {
            // A keepalive needs no payload kept: the handshake itself will do.
            return true;
        }
        if p.staged.len() >= max {
            // Drop the oldest, as wireguard-go does: fresh packets matter more.
            p.staged.pop_front();
        }
        p.staged.push_back(packet.to_vec());
        true
    }

    #[cfg(not(feature = "alloc"))]
    fn stage(&mut self, _id: PeerId, packet: &[u8]) -> bool {
        packet.is_empty()
    }

    /// Processes one UDP datagram from `from`. See the calling rules on [`Node`].
    /// A payload from a control peer is refused with
    /// [`RecvError::ControlPayload`]: hosts with control peers call
    /// [`handle_datagram_with_control`](Self::handle_datagram_with_control).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Received, RecvError> {
        only_received(self.handle_datagram_with_control(now, from, datagram, out))
    }

    /// [`handle_datagram`](Self::handle_datagram) for hosts with control peers
    /// (a Nucleus): their signaling payloads come back as [`Incoming::Control`].
    pub fn handle_datagram_with_control(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Incoming, RecvError> {
        let now = self.clamp(now);
        let msg = wire::parse(datagram).map_err(RecvError::Malformed)?;
        match msg {
            Message::Transport(header, payload) => {
                let buf = out.get_mut(..payload.len()).ok_or(RecvError::BufferTooSmall { needed: payload.len() })?;
                buf.copy_from_slice(payload);
                self.recv_transport(now, from, datagram.len(), header, buf)
            }
            Message::Initiation(init) => match self.recv_initiation(now, from, datagram, init, out)? {
                Arrival::Incoming(incoming) => Ok(incoming),
                // Dropping it wipes the opened handshake state.
                Arrival::UnknownPeer(_) => Err(RecvError::UnknownPeer),
            },
            Message::Response(resp) => self.recv_response(now, from, datagram, &resp, out).map(Incoming::Received),
            Message::CookieReply(reply) => self.recv_cookie_reply(now, &reply).map(Incoming::Received),
        }
    }

    /// [`handle_datagram_with_control`](Self::handle_datagram_with_control)
    /// for hosts that admit peers they were not configured with (a Nucleus):
    /// an initiation from a public key that is not a peer comes back as
    /// [`Arrival::UnknownPeer`] instead of [`RecvError::UnknownPeer`], after
    /// the same checks (MAC1, cookies under load, per-source limit) and with
    /// its first Curve25519 operation done. The host applies its own limits,
    /// then [`accept_initiation`](Self::accept_initiation) answers it without
    /// opening it again, or drops it to refuse.
    pub fn handle_datagram_with_admission(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Arrival, RecvError> {
        if wire::message_type(datagram) != Some(MSG_INITIATION) {
            return self.handle_datagram_with_control(now, from, datagram, out).map(Arrival::Incoming);
        }
        let now = self.clamp(now);
        let init = Initiation::parse(datagram).map_err(RecvError::Malformed)?;
        self.recv_initiation(now, from, datagram, init, out)
    }

    /// Admits the sender of an [`UnknownInitiation`] as a new peer with
    /// `config` (its `public_key` must be the initiation's) and answers the
    /// initiation from the state opened by
    /// [`handle_datagram_with_admission`](Self::handle_datagram_with_admission):
    /// the sender proves its key, the timestamp and per-peer rules apply as
    /// for any initiation, and `out[..len]` of the [`Accepted`] result is
    /// the response to send to the initiation's source. `out` needs 92 bytes.
    /// On any error no peer is left behind.
    pub fn accept_initiation(
        &mut self,
        now: Instant,
        initiation: UnknownInitiation,
        config: PeerConfig,
        out: &mut [u8],
    ) -> Result<Accepted, AcceptError> {
        let now = self.clamp(now);
        let UnknownInitiation { pending, init, from } = initiation;
        if config.public_key != pending.remote_static {
            return Err(AcceptError::KeyMismatch);
        }
        if out.len() < RESPONSE_LEN {
            return Err(AcceptError::Initiation(RecvError::BufferTooSmall { needed: RESPONSE_LEN }));
        }
        let id = self.add_peer(now, config).map_err(AcceptError::AddPeer)?;
        match self.answer_initiation(now, from, INITIATION_LEN, id, pending, &init, out) {
            Ok(len) => Ok(Accepted { peer: id, len }),
            Err(e) => {
                self.remove_peer(id);
                Err(AcceptError::Initiation(e))
            }
        }
    }

    /// Zero-copy [`handle_datagram`](Self::handle_datagram): `buf` holds
    /// exactly the received datagram and is overwritten. A decrypted packet
    /// ends up at `buf[IN_PLACE_OFFSET..][..len]`; a reply at `buf[..len]`.
    pub fn handle_datagram_in_place(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<Received, RecvError> {
        only_received(self.handle_datagram_in_place_with_control(now, from, buf))
    }

    /// Zero-copy [`handle_datagram_with_control`](Self::handle_datagram_with_control):
    /// a signaling payload ends up at `buf[IN_PLACE_OFFSET..][..len]`.
    pub fn handle_datagram_in_place_with_control(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<Incoming, RecvError> {
        if wire::message_type(buf) == Some(MSG_TRANSPORT) {
            let now = self.clamp(now);
            let (header, _) = TransportHeader::parse(buf).map_err(RecvError::Malformed)?;
            let len = buf.len();
            let body = buf
                .get_mut(TRANSPORT_HEADER_LEN..)
                .ok_or(RecvError::Malformed(WireError::BadLength { expected: TRANSPORT_OVERHEAD, got: len }))?;
            return self.recv_transport(now, from, len, header, body);
        }
        // Handshake messages are small and rare: work on a copy so the reply
        // can be written over the original.
        let mut copy = [0u8; INITIATION_LEN];
        let n = buf.len();
        let datagram = match copy.get_mut(..n) {
            Some(c) => {
                c.copy_from_slice(buf);
                c
            }
            None => return Err(RecvError::Malformed(WireError::BadLength { expected: INITIATION_LEN, got: n })),
        };
        self.handle_datagram_with_control(now, from, datagram, buf)
    }

    fn recv_transport(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram_len: usize,
        header: TransportHeader,
        buf: &mut [u8],
    ) -> Result<Incoming, RecvError> {
        let id = *self.indexes.get(&header.receiver).ok_or(RecvError::UnknownIndex)?;
        let peer = self.peer_mut(id).ok_or(RecvError::UnknownIndex)?;
        let slot = peer.slot_of(header.receiver).ok_or(RecvError::UnknownIndex)?;
        let session = peer.session_mut(slot).ok_or(RecvError::UnknownIndex)?;
        let plain_len = session.open(now, header.counter, buf).map_err(|e| match e {
            OpenError::Replay => RecvError::Replay,
            OpenError::Expired => RecvError::Expired,
            OpenError::Decrypt => RecvError::Decrypt,
        })?;
        // Authenticated from here on.
        let (session_initiator, session_age) = (session.initiator, session.age(now));
        peer.rx_bytes = peer.rx_bytes.saturating_add(datagram_len as u64);
        if slot == Slot::Next {
            let dropped = peer.confirm_next();
            // The handshake is complete (WireGuard's timers_handshake_complete):
            // stop retrying an initiation of ours that crossed it.
            peer.timers.stop(Timer::RetransmitHandshake);
            peer.handshake_attempts = 0;
            self.forget_session(dropped);
            self.push_event(Event::HandshakeCompleted { peer: id, initiator: false });
            // Packets queued while we had no session can go now.
            self.want(id, |_| {});
        }
        self.roam(id, from);
        self.on_authenticated_received(now, id);
        if slot == Slot::Current
            && session_initiator
            && session_age >= REJECT_AFTER_TIME.saturating_sub(KEEPALIVE_TIMEOUT).saturating_sub(REKEY_TIMEOUT)
        {
            // We initiated this session and it is about to expire while the
            // peer keeps talking: rekey now rather than lose packets.
            self.want(id, |p| {
                if !p.rekey_requested {
                    p.rekey_requested = true;
                    p.want_initiation = true;
                }
            });
        }
        if plain_len == 0 {
            return Ok(Incoming::Received(Received::Done)); // keepalive
        }
        self.on_data_received(now, id);
        if self.peer(id).is_some_and(|p| p.control) {
            return Ok(Incoming::Control { peer: id, len: plain_len });
        }
        let plain = buf.get(..plain_len).unwrap_or(&[]);
        let (src, len) = ip_source_and_len(plain).ok_or(RecvError::NotIp)?;
        if self.routes.lookup(src) != Some(id) {
            return Err(RecvError::DisallowedSource { peer: id });
        }
        Ok(Incoming::Received(Received::Packet { peer: id, len }))
    }

    /// Cookie-mode gate shared by both handshake messages. Returns
    /// `Ok(Some(reply_len))` when a cookie reply was written instead.
    fn admit_handshake(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        sender: u32,
        mac1_off: usize,
        out: &mut [u8],
    ) -> Result<Option<usize>, RecvError> {
        let checker = self.cookie_checker.as_mut().ok_or(RecvError::NoPrivateKey)?;
        if !verify_mac1(checker.mac_keys(), datagram, mac1_off) {
            return Err(RecvError::BadMac1);
        }
        // Load meter: handshake messages per one-second window.
        if now.saturating_duration_since(self.load_window_start) >= Duration::from_secs(1) {
            self.load_window_start = now;
            self.load_count = 0;
        }
        self.load_count = self.load_count.saturating_add(1);
        if self.load_count > self.config.under_load_threshold {
            self.under_load_until = Some(now.saturating_add(Duration::from_secs(1)));
        }
        if !self.is_under_load(now) {
            return Ok(None);
        }
        let mac2_off = mac1_off.saturating_add(16);
        let checker = self.cookie_checker.as_mut().ok_or(RecvError::NoPrivateKey)?;
        if !checker.verify_mac2(now, from, datagram, mac2_off, &mut self.rng) {
            let out = out.get_mut(..COOKIE_REPLY_LEN).ok_or(RecvError::BufferTooSmall { needed: COOKIE_REPLY_LEN })?;
            let mac1: [u8; 16] = wire::read_array(datagram, mac1_off).unwrap_or([0; 16]);
            let reply = checker.reply(now, from, sender, &mac1, &mut self.rng);
            reply.emit(out);
            return Ok(Some(COOKIE_REPLY_LEN));
        }
        // The source proved it receives at its address: limit it per source.
        if !self.limiter.allow(now, from.ip()) {
            return Err(RecvError::RateLimited);
        }
        Ok(None)
    }

    /// An initiation: answered (a response, or a cookie reply under load),
    /// or, from a key that is not a peer, opened and handed back.
    fn recv_initiation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        init: Initiation,
        out: &mut [u8],
    ) -> Result<Arrival, RecvError> {
        let len = match self.open_initiation(now, from, datagram, &init, out)? {
            Opened::CookieReply { len } => len,
            Opened::Known(id, pending) => self.answer_initiation(now, from, datagram.len(), id, pending, &init, out)?,
            Opened::Unknown(pending) => return Ok(Arrival::UnknownPeer(UnknownInitiation { pending, init, from })),
        };
        Ok(Arrival::Incoming(Incoming::Received(Received::Reply { len })))
    }

    /// The checks every initiation passes before its sender is known (MAC1,
    /// load and cookies, per-source limit), then the first DH: who sent it.
    fn open_initiation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        init: &Initiation,
        out: &mut [u8],
    ) -> Result<Opened, RecvError> {
        if out.len() < RESPONSE_LEN {
            return Err(RecvError::BufferTooSmall { needed: RESPONSE_LEN });
        }
        if let Some(len) = self.admit_handshake(now, from, datagram, init.sender, Initiation::MAC1_OFFSET, out)? {
            return Ok(Opened::CookieReply { len });
        }
        let local = self.local.as_ref().ok_or(RecvError::NoPrivateKey)?;
        let pending = handshake::open_initiation::<C>(local, init).map_err(RecvError::Handshake)?;
        Ok(match self.keys.get(&pending.remote_static) {
            Some(&id) => Opened::Known(id, pending),
            None => Opened::Unknown(pending),
        })
    }

    /// Completes an opened initiation from peer `id`: the sender proves its
    /// key, the timestamp and per-peer rate rules apply, and the response
    /// goes into `out`. Returns the response's length.
    #[allow(clippy::too_many_arguments)]
    fn answer_initiation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram_len: usize,
        id: PeerId,
        mut pending: InitiationPending,
        init: &Initiation,
        out: &mut [u8],
    ) -> Result<usize, RecvError> {
        let peer = self.peer(id).ok_or(RecvError::UnknownPeer)?;
        let ts = handshake::finish_initiation::<C>(&mut pending, &peer.statik, init).map_err(RecvError::Handshake)?;
        if ts <= peer.last_timestamp {
            return Err(RecvError::StaleTimestamp);
        }
        if peer.last_initiation_received.is_some_and(|t| now.saturating_duration_since(t) < HANDSHAKE_INITIATION_RATE) {
            return Err(RecvError::RateLimited);
        }
        let local_index = self.new_index(id)?;
        let peer = self.peers.slots().get(id.slot()).and_then(Option::as_ref).ok_or(RecvError::UnknownPeer)?;
        let (resp, keys) = match handshake::create_response::<C>(pending, &peer.statik, local_index, &mut self.rng) {
            Ok(r) => r,
            Err(e) => {
                self.indexes.remove(&local_index);
                return Err(RecvError::Handshake(e));
            }
        };
        let session = Session::new(&keys, local_index, init.sender, now, false);
        let wall = self.wall_at(now);
        let peer = self.peer_mut(id).ok_or(RecvError::UnknownPeer)?;
        peer.last_timestamp = ts;
        peer.last_initiation_received = Some(now);
        let dropped = peer.install_responder(session);
        peer.last_handshake = Some(now);
        peer.last_handshake_wall = Some(wall);
        peer.rx_bytes = peer.rx_bytes.saturating_add(datagram_len as u64);
        peer.tx_bytes = peer.tx_bytes.saturating_add(RESPONSE_LEN as u64);
        let msg = out.get_mut(..RESPONSE_LEN).ok_or(RecvError::BufferTooSmall { needed: RESPONSE_LEN })?;
        resp.emit(msg);
        peer.cookies.stamp(&peer.statik.public.0, now, msg, Response::MAC1_OFFSET);
        for s in dropped {
            self.forget_session(s);
        }
        self.roam(id, from);
        self.on_authenticated_received(now, id);
        self.on_authenticated_sent(now, id);
        self.arm(id, Timer::ZeroKeyMaterial, now.saturating_add(ZERO_KEYS_AFTER));
        Ok(RESPONSE_LEN)
    }

    fn recv_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        resp: &Response,
        out: &mut [u8],
    ) -> Result<Received, RecvError> {
        if let Some(len) = self.admit_handshake(now, from, datagram, resp.sender, Response::MAC1_OFFSET, out)? {
            return Ok(Received::Reply { len });
        }
        let id = *self.indexes.get(&resp.receiver).ok_or(RecvError::UnknownIndex)?;
        let local = self.local.as_ref().ok_or(RecvError::NoPrivateKey)?;
        let peer = self.peers.slots().get(id.slot()).and_then(Option::as_ref).ok_or(RecvError::UnknownIndex)?;
        let state =
            peer.initiation.as_deref().filter(|s| s.local_index == resp.receiver).ok_or(RecvError::UnknownIndex)?;
        let keys = handshake::consume_response::<C>(state, local, &peer.statik, resp).map_err(RecvError::Handshake)?;
        let wall = self.wall_at(now);
        let peer = self.peer_mut(id).ok_or(RecvError::UnknownIndex)?;
        peer.initiation = None; // its index now belongs to the session
        let session = Session::new(&keys, resp.receiver, resp.sender, now, true);
        let dropped = peer.install_initiator(session);
        peer.last_handshake = Some(now);
        peer.last_handshake_wall = Some(wall);
        peer.handshake_attempts = 0;
        peer.rekey_requested = false;
        peer.rx_bytes = peer.rx_bytes.saturating_add(datagram.len() as u64);
        peer.timers.stop(Timer::RetransmitHandshake);
        // Confirm the session to the responder right away: queued data if
        // any, else a keepalive (poll_transmit picks whichever applies).
        peer.want_keepalive = !peer.has_staged();
        for s in dropped {
            self.forget_session(s);
        }
        self.roam(id, from);
        self.on_authenticated_received(now, id);
        self.arm(id, Timer::ZeroKeyMaterial, now.saturating_add(ZERO_KEYS_AFTER));
        self.want(id, |_| {});
        self.push_event(Event::HandshakeCompleted { peer: id, initiator: true });
        Ok(Received::Done)
    }

    fn recv_cookie_reply(&mut self, now: Instant, reply: &CookieReply) -> Result<Received, RecvError> {
        let id = *self.indexes.get(&reply.receiver).ok_or(RecvError::UnknownIndex)?;
        let peer = self.peer_mut(id).ok_or(RecvError::UnknownIndex)?;
        // Never roam on a cookie reply: it is not authenticated by the peer's key.
        peer.cookies.absorb(&peer.statik.public.0, now, reply).map_err(|_| RecvError::BadCookie)?;
        Ok(Received::Done)
    }

    /// Writes the next datagram the node wants to send into `out`: handshake
    /// initiations, queued data once a session exists, keepalives. Call until
    /// it returns `Ok(None)`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Result<Option<Transmit>, SendError> {
        let now = self.clamp(now);
        while let Some(&id) = self.pending.front() {
            match self.service_peer(now, id, out)? {
                Some(t) => return Ok(Some(t)),
                None => {
                    self.pending.pop_front();
                    if let Some(p) = self.peer_mut(id) {
                        p.in_pending = false;
                    }
                }
            }
        }
        Ok(None)
    }

    /// One datagram for peer `id`, or `None` when it has nothing (more) to send.
    fn service_peer(&mut self, now: Instant, id: PeerId, out: &mut [u8]) -> Result<Option<Transmit>, SendError> {
        // Only the queue of staged packets (an `alloc` feature) needs it.
        #[cfg(feature = "alloc")]
        let mtu = usize::from(self.config.mtu);
        let Some(peer) = self.peer_mut(id) else { return Ok(None) };
        let Some(to) = peer.endpoint else {
            // Nowhere to send: drop the wish, keep staged data for later.
            peer.want_initiation = false;
            peer.want_keepalive = false;
            return Ok(None);
        };
        let has_session = peer.sendable(now).is_some();
        if has_session {
            #[cfg(feature = "alloc")]
            if let Some(front) = peer.staged.front() {
                // Check the room before taking the packet off the queue, so a
                // too-small buffer loses nothing.
                let needed = sealed_len(front.len(), mtu);
                if out.len() < needed {
                    return Err(SendError::BufferTooSmall { needed });
                }
                let packet = peer.staged.pop_front().unwrap_or_default();
                let t = self.send_to_peer(now, id, &packet, out)?;
                if let Sent::Transmit(t) = t {
                    if let Some(p) = self.peer_mut(id) {
                        p.want_keepalive = false;
                    }
                    return Ok(Some(t));
                }
                return Ok(None);
            }
        }
        let peer = self.peer_mut(id).ok_or(SendError::UnknownPeer)?;
        if peer.want_initiation {
            if let Some(len) = self.write_initiation(now, id, out)? {
                return Ok(Some(Transmit { to, len, peer: id }));
            }
        }
        let peer = self.peer_mut(id).ok_or(SendError::UnknownPeer)?;
        if peer.want_keepalive {
            peer.want_keepalive = false;
            if has_session {
                if out.len() < TRANSPORT_OVERHEAD {
                    peer.want_keepalive = true;
                    return Err(SendError::BufferTooSmall { needed: TRANSPORT_OVERHEAD });
                }
                if let Sent::Transmit(t) = self.send_to_peer(now, id, &[], out)? {
                    return Ok(Some(t));
                }
            } else {
                // No session to carry a keepalive: a handshake is the keepalive.
                let peer = self.peer_mut(id).ok_or(SendError::UnknownPeer)?;
                peer.want_initiation = true;
                if let Some(len) = self.write_initiation(now, id, out)? {
                    return Ok(Some(Transmit { to, len, peer: id }));
                }
            }
        }
        Ok(None)
    }

    /// Writes an initiation for `id` if one is due. Clears `want_initiation`.
    fn write_initiation(&mut self, now: Instant, id: PeerId, out: &mut [u8]) -> Result<Option<usize>, SendError> {
        if out.len() < INITIATION_LEN {
            return Err(SendError::BufferTooSmall { needed: INITIATION_LEN });
        }
        let Some(peer) = self.peer_mut(id) else { return Ok(None) };
        let retry = peer.initiation_is_retry;
        peer.want_initiation = false;
        peer.initiation_is_retry = false;
        // One handshake per Rekey-Timeout unless this is the timer's retry.
        if !retry && peer.last_initiation_sent.is_some_and(|t| now.saturating_duration_since(t) < REKEY_TIMEOUT) {
            return Ok(None);
        }
        if peer.last_initiation_sent.is_some_and(|t| now.saturating_duration_since(t) < HANDSHAKE_INITIATION_RATE) {
            return Ok(None);
        }
        if self.local.is_none() || self.peer(id).is_some_and(|p| !p.statik.is_valid()) {
            return Ok(None);
        }
        let ts = self.next_timestamp(now);
        // Replace any initiation in flight (its index is released).
        if let Some(old) = self.peer_mut(id).and_then(|p| p.initiation.take()) {
            self.indexes.remove(&old.local_index);
        }
        let Ok(local_index) = self.new_index(id) else { return Ok(None) };
        let (Some(local), Some(Some(peer))) = (self.local.as_ref(), self.peers.slots().get(id.slot())) else {
            return Ok(None);
        };
        let created = handshake::create_initiation::<C>(local, &peer.statik, ts, local_index, &mut self.rng);
        let Ok((msg, state)) = created else {
            self.indexes.remove(&local_index);
            return Ok(None);
        };
        let j = jitter(&mut self.rng);
        let Some(peer) = self.peer_mut(id) else { return Ok(None) };
        let buf = out.get_mut(..INITIATION_LEN).ok_or(SendError::BufferTooSmall { needed: INITIATION_LEN })?;
        msg.emit(buf);
        peer.cookies.stamp(&peer.statik.public.0, now, buf, Initiation::MAC1_OFFSET);
        peer.initiation = Some(Held::new(state));
        peer.last_initiation_sent = Some(now);
        peer.tx_bytes = peer.tx_bytes.saturating_add(INITIATION_LEN as u64);
        self.arm(id, Timer::RetransmitHandshake, now.saturating_add(REKEY_TIMEOUT.saturating_add(j)));
        self.on_authenticated_sent(now, id);
        trace!("sent handshake initiation");
        Ok(Some(INITIATION_LEN))
    }

    // ----- time ----------------------------------------------------------

    /// The next moment [`handle_timeout`](Self::handle_timeout) must run, if any.
    /// May be slightly early (never late): an early call is harmless.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline_hint
    }

    /// Fires every timer due at `now`. Then drain [`poll_transmit`](Self::poll_transmit).
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        if self.deadline_hint.is_some_and(|d| now < d) {
            return;
        }
        let mut next: Option<Instant> = None;
        for slot in 0..self.peers.slots().len() {
            let id = PeerId(u32::try_from(slot).unwrap_or(u32::MAX));
            while let Some(t) = self.peer_mut(id).and_then(|p| p.timers.take_expired(now)) {
                self.fire(now, id, t);
            }
            if let Some(d) = self.peer(id).and_then(|p| p.timers.next()) {
                next = Some(next.map_or(d, |n: Instant| n.min(d)));
            }
        }
        self.deadline_hint = next;
    }

    fn fire(&mut self, now: Instant, id: PeerId, t: Timer) {
        match t {
            Timer::RetransmitHandshake => {
                let Some(p) = self.peer_mut(id) else { return };
                if p.handshake_attempts >= MAX_HANDSHAKE_ATTEMPTS {
                    // Rekey-Attempt-Time is up: give up and drop what waited.
                    p.handshake_attempts = 0;
                    p.want_initiation = false;
                    #[cfg(feature = "alloc")]
                    p.staged.clear();
                    let init = p.initiation.take();
                    let zero_armed = p.timers.is_set(Timer::ZeroKeyMaterial);
                    if let Some(s) = init {
                        self.indexes.remove(&s.local_index);
                    }
                    if !zero_armed {
                        self.arm(id, Timer::ZeroKeyMaterial, now.saturating_add(ZERO_KEYS_AFTER));
                    }
                    self.push_event(Event::HandshakeFailed { peer: id });
                } else {
                    p.handshake_attempts = p.handshake_attempts.saturating_add(1);
                    self.want(id, |p| {
                        p.want_initiation = true;
                        p.initiation_is_retry = true;
                    });
                }
            }
            Timer::SendKeepalive => {
                let again = self.peer_mut(id).map(|p| core::mem::take(&mut p.need_another_keepalive)).unwrap_or(false);
                self.want(id, |p| p.want_keepalive = true);
                if again {
                    self.arm(id, Timer::SendKeepalive, now.saturating_add(KEEPALIVE_TIMEOUT));
                }
            }
            Timer::NewHandshake => {
                // We sent data and heard nothing for 15 s: the peer may have
                // lost its state. Start over.
                self.want(id, |p| p.want_initiation = true);
            }
            Timer::ZeroKeyMaterial => {
                self.clear_sessions(id);
                self.push_event(Event::KeysExpired { peer: id });
            }
            Timer::PersistentKeepalive => {
                if let Some(k) = self.peer(id).and_then(|p| p.persistent_keepalive) {
                    self.want(id, |p| p.want_keepalive = true);
                    self.arm(id, Timer::PersistentKeepalive, now.saturating_add(Duration::from_secs(u64::from(k))));
                }
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- timer bookkeeping (WireGuard paper §6.2–6.5) -------------------

    fn on_data_sent(&mut self, now: Instant, id: PeerId) {
        if self.peer(id).is_some_and(|p| !p.timers.is_set(Timer::NewHandshake)) {
            let j = jitter(&mut self.rng);
            self.arm(
                id,
                Timer::NewHandshake,
                now.saturating_add(KEEPALIVE_TIMEOUT.saturating_add(REKEY_TIMEOUT).saturating_add(j)),
            );
        }
    }

    fn on_data_received(&mut self, now: Instant, id: PeerId) {
        let Some(p) = self.peer_mut(id) else { return };
        if p.timers.is_set(Timer::SendKeepalive) {
            p.need_another_keepalive = true;
        } else {
            self.arm(id, Timer::SendKeepalive, now.saturating_add(KEEPALIVE_TIMEOUT));
        }
    }

    fn on_authenticated_sent(&mut self, now: Instant, id: PeerId) {
        if let Some(p) = self.peer_mut(id) {
            p.timers.stop(Timer::SendKeepalive);
        }
        self.on_traversal(now, id);
    }

    fn on_authenticated_received(&mut self, now: Instant, id: PeerId) {
        if let Some(p) = self.peer_mut(id) {
            p.timers.stop(Timer::NewHandshake);
        }
        self.on_traversal(now, id);
    }

    fn on_traversal(&mut self, now: Instant, id: PeerId) {
        if let Some(k) = self.peer(id).and_then(|p| p.persistent_keepalive) {
            self.arm(id, Timer::PersistentKeepalive, now.saturating_add(Duration::from_secs(u64::from(k))));
        }
    }

    fn arm(&mut self, id: PeerId, t: Timer, at: Instant) {
        if let Some(p) = self.peer_mut(id) {
            p.timers.set(t, at);
            self.deadline_hint = Some(self.deadline_hint.map_or(at, |d| d.min(at)));
        }
    }

    // ----- helpers -------------------------------------------------------

    fn peer(&self, id: PeerId) -> Option<&Peer<C, S::Replay>> {
        self.peers.slots().get(id.slot()).and_then(Option::as_ref)
    }

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer<C, S::Replay>> {
        self.peers.slots_mut().get_mut(id.slot()).and_then(Option::as_mut)
    }

    fn peer_ids_snapshot(&self) -> impl Iterator<Item = PeerId> {
        let n = self.peers.slots().len();
        (0..n).map(|i| PeerId(u32::try_from(i).unwrap_or(u32::MAX)))
    }

    /// Applies `f` and queues the peer for `poll_transmit` if it now has work.
    fn want(&mut self, id: PeerId, f: impl FnOnce(&mut Peer<C, S::Replay>)) {
        let Some(p) = self.peer_mut(id) else { return };
        f(p);
        if p.wants_service() && !p.in_pending {
            p.in_pending = true;
            if self.pending.push_back(id).is_err() {
                if let Some(p) = self.peer_mut(id) {
                    p.in_pending = false;
                }
            }
        }
    }

    fn roam(&mut self, id: PeerId, from: SocketAddr) {
        let Some(p) = self.peer_mut(id) else { return };
        if p.endpoint != Some(from) {
            p.endpoint = Some(from);
            self.push_event(Event::EndpointChanged { peer: id, endpoint: from });
        }
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= S::MAX_EVENTS || self.events.push_back(e).is_err() {
            self.events_dropped = self.events_dropped.saturating_add(1);
        }
    }

    fn forget_session(&mut self, s: Option<Held<Session<C, S::Replay>>>) {
        if let Some(s) = s {
            self.indexes.remove(&s.local_index);
        }
    }

    fn clear_sessions(&mut self, id: PeerId) {
        let Some(p) = self.peer_mut(id) else { return };
        let idx = p.indexes();
        p.previous = None;
        p.current = None;
        p.next = None;
        p.initiation = None;
        p.timers.stop(Timer::RetransmitHandshake);
        p.timers.stop(Timer::ZeroKeyMaterial);
        p.timers.stop(Timer::NewHandshake);
        p.timers.stop(Timer::SendKeepalive);
        p.handshake_attempts = 0;
        for i in idx.into_iter().flatten() {
            self.indexes.remove(&i);
        }
    }

    /// A fresh random receiver index, registered to `id`.
    fn new_index(&mut self, id: PeerId) -> Result<u32, RecvError> {
        for _ in 0..16 {
            let i = self.rng.next_u32();
            if self.indexes.get(&i).is_none() {
                return self.indexes.insert(i, id).map(|()| i).map_err(|_| RecvError::RateLimited);
            }
        }
        Err(RecvError::RateLimited)
    }

    fn clamp(&mut self, now: Instant) -> Instant {
        if now > self.last_now {
            self.last_now = now;
        }
        self.last_now
    }

    fn wall_at(&self, now: Instant) -> WallTime {
        match self.wall {
            Some((at, wall)) => {
                let elapsed = now.saturating_duration_since(at).as_nanos();
                WallTime::from_nanos(wall.as_nanos().saturating_add(elapsed))
            }
            None => WallTime::from_nanos(u128::from(now.as_nanos())),
        }
    }

    /// TAI64N for a new initiation: coarsened to ~16 ms so it leaks little
    /// about our clock, yet strictly increasing so the peer never takes a
    /// fresh initiation for a replay.
    fn next_timestamp(&mut self, now: Instant) -> Tai64N {
        let mut wall = self.wall_at(now);
        wall.nanos &= !((1 << 24) - 1);
        let mut ts = Tai64N::from_wall(wall);
        if ts <= self.last_tai {
            let mut n = u128::from_be_bytes({
                let mut b = [0u8; 16];
                if let Some(d) = b.get_mut(4..) {
                    d.copy_from_slice(&self.last_tai.0);
                }
                b
            });
            n = n.saturating_add(1);
            let b = n.to_be_bytes();
            if let Some(s) = b.get(4..) {
                ts.0.copy_from_slice(s);
            }
        }
        self.last_tai = ts;
        ts
    }
}

#[cfg(test)]
mod tests {
    //! The node with fixed-capacity storage (the firmware configuration):
    //! runs with and without `alloc`.
    use super::*;
    use crate::crypto::RustCrypto;
    use crate::storage::Fixed;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    type Small = Node<RustCrypto, ChaCha20Rng, Fixed<2, 4, 8>>;

    fn packet(src: [u8; 4], dst: [u8; 4]) -> [u8; 40] {
        let mut p = [0u8; 40];
        p[0] = 0x45;
        p[3] = 40;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn fixed_storage_handshake_data_and_capacity_errors() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let (ka, kb) = (StaticSecret::random(&mut rng), StaticSecret::random(&mut rng));
        let (pa, pb) = (ka.public_key::<RustCrypto>(), kb.public_key::<RustCrypto>());
        let cfg = |k| NodeConfig { private_key: Some(k), ..NodeConfig::default() };
        let mut a = Small::new(cfg(ka), ChaCha20Rng::seed_from_u64(1));
        let mut b = Small::new(cfg(kb), ChaCha20Rng::seed_from_u64(2));
        let (sa, sb): (SocketAddr, SocketAddr) = ("10.9.0.1:1".parse().unwrap(), "10.9.0.2:2".parse().unwrap());
        let now = Instant::from_secs(5);
        let ia = a.add_peer(now, PeerConfig { endpoint: Some(sb), ..PeerConfig::new(pb) }).unwrap();
        let ib = b.add_peer(now, PeerConfig::new(pa)).unwrap();
        assert_eq!(a.add_peer(now, PeerConfig::new(pb)), Err(AddPeerError::Duplicate(ia)));
        assert_eq!(a.add_peer(now, PeerConfig::new(pa)), Err(AddPeerError::OwnKey));
        a.add_peer(now, PeerConfig::new(PublicKey([7; 32]))).unwrap();
        assert_eq!(a.add_peer(now, PeerConfig::new(PublicKey([8; 32]))), Err(AddPeerError::TableFull));
        for i in 0..4u8 {
            a.add_allowed_ip(ia, AllowedIp::new(IpAddr::V4(Ipv4Addr::new(10, 0, i, 0)), 24).unwrap()).unwrap();
        }
        assert_eq!(
            a.add_allowed_ip(ia, AllowedIp::new(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 0)), 24).unwrap()),
            Err(RouteError::TableFull)
        );
        b.add_allowed_ip(ib, AllowedIp::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 16).unwrap()).unwrap();

        let mut out = [0u8; 256];
        // Without alloc nothing is queued: a data packet before the handshake is refused,
        // but it still starts the handshake.
        let p = packet([10, 1, 0, 1], [10, 0, 0, 2]);
        let r = a.send_ip(now, &p, &mut out);
        #[cfg(not(feature = "alloc"))]
        assert_eq!(r, Err(SendError::QueueFull { peer: ia }));
        #[cfg(feature = "alloc")]
        assert_eq!(r, Ok(Sent::Queued { peer: ia }));
        let t = a.poll_transmit(now, &mut out).unwrap().unwrap();
        let init: [u8; 148] = out[..148].try_into().unwrap();
        assert_eq!(t.len, 148);
        let mut out_b = [0u8; 256];
        // Too-small buffers report the size needed and lose nothing.
        assert_eq!(b.handle_datagram(now, sa, &init, &mut out_b[..10]), Err(RecvError::BufferTooSmall { needed: 92 }));
        let Ok(Received::Reply { len }) = b.handle_datagram(now, sa, &init, &mut out_b) else { panic!() };
        let resp = out_b[..len].to_vec();
        assert_eq!(a.handle_datagram(now, sb, &resp, &mut out), Ok(Received::Done));
        assert_eq!(a.poll_event(), Some(Event::HandshakeCompleted { peer: ia, initiator: true }));
        // The confirming datagram (a keepalive, or the queued packet with alloc).
        let t = a.poll_transmit(now, &mut out).unwrap().unwrap();
        let first = out[..t.len].to_vec();
        let r = b.handle_datagram(now, sa, &first, &mut out_b).unwrap();
        assert!(matches!(r, Received::Done | Received::Packet { .. }));
        assert_eq!(b.peer_stats(ib).map(|s| s.has_session), Some(true));
        assert_eq!(a.send_ip(now, &p, &mut out[..40]), Err(SendError::BufferTooSmall { needed: 80 }));
        let Ok(Sent::Transmit(t)) = a.send_ip(now, &p, &mut out) else { panic!() };
        assert_eq!(t.len, 80, "40 bytes padded to 48, plus 32 of header and tag");
        let Ok(Received::Packet { peer, len }) = b.handle_datagram(now, sa, &out[..t.len], &mut out_b) else {
            panic!()
        };
        assert_eq!((peer, &out_b[..len]), (ib, &p[..]));
        // A source outside the peer's allowed IPs is refused.
        let spoof = packet([10, 2, 0, 1], [10, 0, 0, 2]);
        let Ok(Sent::Transmit(t)) = a.send_ip(now, &spoof, &mut out) else { panic!() };
        assert_eq!(
            b.handle_datagram(now, sa, &out[..t.len], &mut out_b),
            Err(RecvError::DisallowedSource { peer: ib })
        );
        assert_eq!(a.send_ip(now, &packet([10, 1, 0, 1], [192, 168, 0, 1]), &mut out), Err(SendError::NoRoute));
        assert_eq!(a.send_ip(now, &[0x45, 0], &mut out), Err(SendError::NotIp));
    }

    #[test]
    fn rebind_restarts_sessions_and_handshakes_in_flight_but_not_idle_peers() {
        type Four = Node<RustCrypto, ChaCha20Rng, Fixed<4, 4, 16>>;
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let keys: [StaticSecret; 5] = core::array::from_fn(|_| StaticSecret::random(&mut rng));
        let pubs: [PublicKey; 5] = core::array::from_fn(|i| keys[i].public_key::<RustCrypto>());
        let cfg = |k: &StaticSecret| NodeConfig { private_key: Some(k.clone()), ..NodeConfig::default() };
        let mut a = Four::new(cfg(&keys[0]), ChaCha20Rng::seed_from_u64(1));
        let mut b = Four::new(cfg(&keys[1]), ChaCha20Rng::seed_from_u64(2));
        let sa: SocketAddr = "10.9.0.1:1".parse().unwrap();
        let addr = |i: u8| -> SocketAddr { SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, i)), 51820) };
        let t0 = Instant::from_secs(5);
        // B: a session. C: a handshake in flight (C never answers). D: an
        // idle peer with an endpoint. E: no endpoint.
        let ib = a.add_peer(t0, PeerConfig { endpoint: Some(addr(2)), ..PeerConfig::new(pubs[1]) }).unwrap();
        let ic = a.add_peer(t0, PeerConfig { endpoint: Some(addr(3)), ..PeerConfig::new(pubs[2]) }).unwrap();
        let id = a.add_peer(t0, PeerConfig { endpoint: Some(addr(4)), ..PeerConfig::new(pubs[3]) }).unwrap();
        let ie = a.add_peer(t0, PeerConfig::new(pubs[4])).unwrap();
        b.add_peer(t0, PeerConfig::new(pubs[0])).unwrap();
        let (mut out, mut out_b) = ([0u8; 256], [0u8; 256]);

        assert!(a.initiate(t0, ib) && a.initiate(t0, ic) && a.initiate(t0, ie));
        // Initiations to B and C (B answers at once: then a keepalive confirms
        // its session); nothing for E, which has no endpoint.
        let mut sent = heapless::Vec::<(PeerId, usize), 8>::new();
        while let Some(t) = a.poll_transmit(t0, &mut out).unwrap() {
            if t.len == INITIATION_LEN && t.peer == ib {
                let Ok(Received::Reply { len }) = b.handle_datagram(t0, sa, &out[..t.len], &mut out_b) else {
                    panic!()
                };
                assert_eq!(a.handle_datagram(t0, addr(2), &out_b[..len], &mut out), Ok(Received::Done));
            }
            sent.push((t.peer, t.len)).unwrap();
        }
        sent.sort_unstable();
        assert_eq!(sent, [(ib, TRANSPORT_OVERHEAD), (ib, INITIATION_LEN), (ic, INITIATION_LEN)]);
        assert_eq!(a.peer_stats(ib).map(|s| s.has_session), Some(true));
        assert_eq!(a.peer_stats(ic).map(|s| s.has_session), Some(false));

        // One second later (well before C's retransmit timer) the network changes.
        let t1 = t0.saturating_add(Duration::from_secs(1));
        a.handle_timeout(t1);
        assert_eq!(a.poll_transmit(t1, &mut out), Ok(None), "nothing due before the rebind");
        a.rebind(t1);
        let mut again = [None, None];
        for s in again.iter_mut() {
            let t = a.poll_transmit(t1, &mut out).unwrap().unwrap();
            assert_eq!((t.len, u32::from(out[0])), (INITIATION_LEN, MSG_INITIATION));
            assert_eq!(t.to, if t.peer == ib { addr(2) } else { addr(3) });
            if t.peer == ib {
                // The session peer accepts the fresh handshake.
                let r = b.handle_datagram(t1, sa, &out[..t.len], &mut out_b);
                assert!(matches!(r, Ok(Received::Reply { len: RESPONSE_LEN })), "{r:?}");
            }
            *s = Some(t.peer);
        }
        again.sort_unstable();
        assert_eq!(again, [Some(ib), Some(ic)]);
        // The idle peer D and the endpoint-less E stay silent.
        assert_eq!(a.poll_transmit(t1, &mut out), Ok(None));
        assert_eq!(a.peer_stats(id).map(|s| s.tx_bytes), Some(0));
        assert_eq!(a.peer_stats(ie).map(|s| s.tx_bytes), Some(0));

        // A node whose only peers are idle sends nothing on rebind.
        let mut idle = Four::new(cfg(&keys[2]), ChaCha20Rng::seed_from_u64(3));
        let only = idle.add_peer(t0, PeerConfig { endpoint: Some(addr(1)), ..PeerConfig::new(pubs[0]) }).unwrap();
        idle.rebind(t1);
        assert_eq!(idle.poll_transmit(t1, &mut out), Ok(None));
        assert_eq!(idle.peer_stats(only).map(|s| s.tx_bytes), Some(0));
    }

    #[test]
    fn an_initiation_from_an_unknown_key_is_opened_once_then_accepted_or_refused() {
        type Four = Node<RustCrypto, ChaCha20Rng, Fixed<4, 4, 16>>;
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let (ks, ka, kb) =
            (StaticSecret::random(&mut rng), StaticSecret::random(&mut rng), StaticSecret::random(&mut rng));
        let (ps, pa, pb) =
            (ks.public_key::<RustCrypto>(), ka.public_key::<RustCrypto>(), kb.public_key::<RustCrypto>());
        let cfg = |k: StaticSecret| NodeConfig { private_key: Some(k), ..NodeConfig::default() };
        let mut s = Four::new(cfg(ks), ChaCha20Rng::seed_from_u64(1));
        let mut a = Four::new(cfg(ka), ChaCha20Rng::seed_from_u64(2));
        let mut b = Four::new(cfg(kb), ChaCha20Rng::seed_from_u64(3));
        let (ss, sa, sb): (SocketAddr, SocketAddr, SocketAddr) =
            ("10.9.0.1:1".parse().unwrap(), "10.9.0.2:2".parse().unwrap(), "10.9.0.3:3".parse().unwrap());
        let now = Instant::from_secs(5);
        let ia = a.add_peer(now, PeerConfig { endpoint: Some(ss), ..PeerConfig::new(ps) }).unwrap();
        let ib = b.add_peer(now, PeerConfig { endpoint: Some(ss), ..PeerConfig::new(ps) }).unwrap();
        let (mut out, mut out_a) = ([0u8; 256], [0u8; 256]);
        let initiation = |n: &mut Four, id: PeerId| {
            assert!(n.initiate(now, id));
            let mut buf = [0u8; 256];
            let t = n.poll_transmit(now, &mut buf).unwrap().unwrap();
            <[u8; INITIATION_LEN]>::try_from(&buf[..t.len]).unwrap()
        };
        let init_a = initiation(&mut a, ia);
        let init_b = initiation(&mut b, ib);
        let unknown = |s: &mut Four, init: &[u8], from: SocketAddr, out: &mut [u8]| match s
            .handle_datagram_with_admission(now, from, init, out)
        {
            Ok(Arrival::UnknownPeer(u)) => u,
            other => panic!("{other:?}"),
        };

        // Hosts without admission see the usual error.
        assert_eq!(s.handle_datagram_with_control(now, sa, &init_a, &mut out), Err(RecvError::UnknownPeer));
        // With admission the initiation comes back opened, with its claimed key and source.
        let u = unknown(&mut s, &init_a, sa, &mut out);
        assert_eq!((u.public_key(), u.source()), (pa, sa));
        // Refusing is dropping it: the node is unchanged.
        drop(u);
        assert_eq!((s.peer_count(), s.peer_by_key(&pa)), (0, None));
        // Errors of accept_initiation leave no peer behind.
        let u = unknown(&mut s, &init_a, sa, &mut out);
        assert_eq!(s.accept_initiation(now, u, PeerConfig::new(pb), &mut out), Err(AcceptError::KeyMismatch));
        let u = unknown(&mut s, &init_a, sa, &mut out);
        assert_eq!(
            s.accept_initiation(now, u, PeerConfig::new(pa), &mut out[..10]),
            Err(AcceptError::Initiation(RecvError::BufferTooSmall { needed: RESPONSE_LEN }))
        );
        // A key claimed without being proven: the timestamp, sealed under the
        // static-static DH, does not decrypt (MAC1 recomputed so it gets that far).
        let mut forged = init_a;
        forged[88] ^= 1;
        crate::cookie::CookieJar::new(&ps.0).stamp(now, &mut forged, Initiation::MAC1_OFFSET);
        let u = unknown(&mut s, &forged, sa, &mut out);
        assert!(matches!(
            s.accept_initiation(now, u, PeerConfig::new(pa), &mut out),
            Err(AcceptError::Initiation(RecvError::Handshake(_)))
        ));
        assert_eq!((s.peer_count(), s.peer_by_key(&pa)), (0, None));
        // The key became a peer between arrival and admission.
        let u = unknown(&mut s, &init_b, sb, &mut out);
        let added = s.add_peer(now, PeerConfig::new(pb)).unwrap();
        assert_eq!(
            s.accept_initiation(now, u, PeerConfig::new(pb), &mut out),
            Err(AcceptError::AddPeer(AddPeerError::Duplicate(added)))
        );
        assert!(s.remove_peer(added));

        // Accepted: the peer exists, at the initiation's source, and the
        // response completes the initiator's handshake.
        let u = unknown(&mut s, &init_a, sa, &mut out);
        let Ok(Accepted { peer, len }) = s.accept_initiation(now, u, PeerConfig::new(pa), &mut out) else { panic!() };
        assert_eq!(len, RESPONSE_LEN);
        assert_eq!(s.peer_by_key(&pa), Some(peer));
        assert_eq!(s.peer_stats(peer).and_then(|st| st.endpoint), Some(sa));
        assert_eq!(a.handle_datagram(now, ss, &out[..len], &mut out_a), Ok(Received::Done));
        assert_eq!(a.poll_event(), Some(Event::HandshakeCompleted { peer: ia, initiator: true }));
        let t = a.poll_transmit(now, &mut out_a).unwrap().unwrap();
        let r = s.handle_datagram_with_admission(now, sa, &out_a[..t.len], &mut out);
        assert!(matches!(r, Ok(Arrival::Incoming(Incoming::Received(Received::Done)))), "{r:?}");
        assert_eq!(s.poll_event(), Some(Event::EndpointChanged { peer, endpoint: sa }));
        assert_eq!(s.poll_event(), Some(Event::HandshakeCompleted { peer, initiator: false }));
        assert_eq!(s.peer_stats(peer).map(|st| st.has_session), Some(true));
        // The same initiation again is now from a known peer: a replay.
        let later = now.saturating_add(Duration::from_secs(1));
        assert_eq!(
            s.handle_datagram_with_admission(later, sa, &init_a, &mut out).err(),
            Some(RecvError::StaleTimestamp)
        );

        // Under load an unknown key gets a cookie reply first, like any sender.
        let mut busy = Four::new(
            NodeConfig { under_load_threshold: 0, ..cfg(StaticSecret::random(&mut rng)) },
            ChaCha20Rng::seed_from_u64(4),
        );
        let mut c = Four::new(cfg(StaticSecret::random(&mut rng)), ChaCha20Rng::seed_from_u64(5));
        let ic =
            c.add_peer(now, PeerConfig { endpoint: Some(ss), ..PeerConfig::new(busy.public_key().unwrap()) }).unwrap();
        let init_c = initiation(&mut c, ic);
        let r = busy.handle_datagram_with_admission(now, sa, &init_c, &mut out);
        assert!(
            matches!(r, Ok(Arrival::Incoming(Incoming::Received(Received::Reply { len: COOKIE_REPLY_LEN })))),
            "{r:?}"
        );
        assert_eq!(busy.peer_count(), 0);
    }
}
