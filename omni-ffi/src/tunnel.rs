//! `Tunnel`: one omni-core `Node` behind a mutex, with the clock, the peers'
//! configured endpoints and event translation. The uniffi methods live here;
//! the C API and JNI call the `pub(crate)` buffer-based methods.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};

use omni_core::node::{Event, Received, Sent};
use omni_core::storage::Heap;
use omni_core::{Instant, Node, NodeConfig, PeerConfig, PeerId, PublicKey, Transmit, WallTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::clock::{Clock, HostClock};
use crate::config::{self, EndpointSpec, InterfaceSettings, IpNetwork, PeerSpec, TunnelConfig};
use crate::error::{self, TunnelError};

/// The crypto provider: RustCrypto everywhere; ring's assembly AEAD on
/// desktop builds with the `ring` feature.
pub(crate) type Crypto = omni_core::crypto::DefaultProvider;
pub(crate) type CoreNode = Node<Crypto, ChaCha20Rng, Heap>;

/// Room for any datagram or packet the tunnel handles: a 64 KiB IP packet plus
/// WireGuard's header, padding and tag.
pub(crate) const MAX_DATAGRAM: usize = 65535 + 64;

/// Something that happened in the tunnel (`Tunnel.poll_event`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum TunnelEvent {
    /// The first handshake with the peer completed (or the first after it went down).
    PeerUp { public_key: String, initiator: bool },
    /// The peer's keys expired after a long silence; it is down until the next handshake.
    PeerDown { public_key: String },
    /// The peer's endpoint moved (it roamed, or a host re-resolved it).
    EndpointChanged { public_key: String, endpoint: String },
    /// A handshake attempt timed out (90 s without an answer); queued packets were dropped.
    HandshakeFailed { public_key: String },
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
}

struct PeerMeta {
    public_key: PublicKey,
    /// A host name from the config, re-resolved by `resolve_endpoints`.
    hostname: Option<(String, u16)>,
    up: bool,
}

pub(crate) struct State {
    pub(crate) node: CoreNode,
    peers: BTreeMap<PeerId, PeerMeta>,
    events: VecDeque<TunnelEvent>,
    rejected: u64,
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
    pub(crate) fn build(cfg: &TunnelConfig, clock: Clock) -> Result<Tunnel, TunnelError> {
        crate::logging::init();
        let (interface, peers) = config::validate(cfg)?;
        let rng = ChaCha20Rng::from_rng(rand_core::OsRng)
            .map_err(|e| TunnelError::Internal { detail: format!("no system randomness: {e}") })?;
        let node = Node::new(
            NodeConfig { private_key: Some(interface.secret.clone()), mtu: interface.mtu, ..NodeConfig::default() },
            rng,
        );
        let tunnel = Tunnel {
            state: Mutex::new(State { node, peers: BTreeMap::new(), events: VecDeque::new(), rejected: 0 }),
            clock,
            interface,
        };
        {
            let now = tunnel.now();
            let mut st = lock(&tunnel.state);
            st.node.set_wall_time(now, WallTime::now_system());
            for p in peers {
                Self::add_peer_locked(&mut st, now, p)?;
            }
        }
        log::info!("tunnel created with {} peer(s)", cfg.peers.len());
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
        st.peers.insert(id, PeerMeta { public_key: p.public_key, hostname, up: false });
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

    /// Encrypts `packet` into `out`. `Ok(None)`: queued until a handshake completes.
    pub(crate) fn send_ip_into(
        &self,
        now: Instant,
        packet: &[u8],
        out: &mut [u8],
    ) -> Result<Option<Transmit>, omni_core::node::SendError> {
        match self.lock().node.send_ip(now, packet, out)? {
            Sent::Transmit(t) => Ok(Some(t)),
            Sent::Queued { .. } => Ok(None),
        }
    }

    /// Zero-copy send: the packet is at `buf[IN_PLACE_OFFSET..][..len]`.
    pub(crate) fn send_ip_in_place(
        &self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Option<Transmit>, omni_core::node::SendError> {
        match self.lock().node.send_ip_in_place(now, buf, len)? {
            Sent::Transmit(t) => Ok(Some(t)),
            Sent::Queued { .. } => Ok(None),
        }
    }

    pub(crate) fn handle_datagram_into(
        &self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut [u8],
    ) -> Result<Received, omni_core::node::RecvError> {
        let mut st = self.lock();
        let r = st.node.handle_datagram(now, from, datagram, out);
        if r.is_err() {
            st.rejected = st.rejected.saturating_add(1);
        }
        r
    }

    /// Zero-copy receive: `buf` holds exactly the datagram; a packet ends up
    /// at `buf[IN_PLACE_OFFSET..][..len]`, a reply at `buf[..len]`.
    pub(crate) fn handle_datagram_in_place(
        &self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> Result<Received, omni_core::node::RecvError> {
        let mut st = self.lock();
        let r = st.node.handle_datagram_in_place(now, from, buf);
        if r.is_err() {
            st.rejected = st.rejected.saturating_add(1);
        }
        r
    }

    pub(crate) fn poll_transmit_into(
        &self,
        now: Instant,
        out: &mut [u8],
    ) -> Result<Option<Transmit>, omni_core::node::SendError> {
        self.lock().node.poll_transmit(now, out)
    }

    pub(crate) fn handle_timeout_at(&self, now: Instant) {
        self.lock().node.handle_timeout(now);
    }

    pub(crate) fn rebind_at(&self, now: Instant) {
        self.lock().node.rebind(now);
    }

    pub(crate) fn poll_timeout_instant(&self) -> Option<Instant> {
        self.lock().node.poll_timeout()
    }

    /// The next translated event.
    pub(crate) fn next_event(&self) -> Option<TunnelEvent> {
        let mut st = self.lock();
        loop {
            if let Some(e) = st.events.pop_front() {
                return Some(e);
            }
            let e = st.node.poll_event()?;
            let st = &mut *st;
            let (id, translated) = match e {
                Event::HandshakeCompleted { peer, initiator } => {
                    let Some(m) = st.peers.get_mut(&peer) else { continue };
                    if m.up {
                        continue; // a rekey: nothing for the host
                    }
                    m.up = true;
                    (peer, TunnelEvent::PeerUp { public_key: key_string(&m.public_key), initiator })
                }
                Event::EndpointChanged { peer, endpoint } => {
                    let Some(m) = st.peers.get(&peer) else { continue };
                    (
                        peer,
                        TunnelEvent::EndpointChanged {
                            public_key: key_string(&m.public_key),
                            endpoint: endpoint.to_string(),
                        },
                    )
                }
                Event::HandshakeFailed { peer } => {
                    let Some(m) = st.peers.get(&peer) else { continue };
                    (peer, TunnelEvent::HandshakeFailed { public_key: key_string(&m.public_key) })
                }
                Event::KeysExpired { peer } => {
                    let Some(m) = st.peers.get_mut(&peer) else { continue };
                    if !m.up {
                        continue;
                    }
                    m.up = false;
                    (peer, TunnelEvent::PeerDown { public_key: key_string(&m.public_key) })
                }
                _ => continue,
            };
            log::debug!("peer {}: {translated:?}", id.0);
            return Some(translated);
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

    /// Our public key (base64).
    pub fn public_key(&self) -> String {
        self.lock().node.public_key().map(|k| key_string(&k)).unwrap_or_default()
    }

    /// Addresses, routes, DNS and MTU for the platform's VPN builder.
    pub fn interface_settings(&self) -> InterfaceSettings {
        let st = self.lock();
        let mut routes = Vec::new();
        st.node.for_each_peer(|id| {
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
            Ok(Received::Done) => DatagramOutcome::Done,
            Ok(Received::Reply { len }) => {
                out.truncate(len);
                DatagramOutcome::Reply { datagram: out }
            }
            Ok(Received::Packet { len, .. }) => {
                out.truncate(len);
                DatagramOutcome::Packet { packet: out }
            }
            Err(e) => DatagramOutcome::Rejected { reason: error::recv_reason(e).to_owned() },
        })
    }

    /// Encrypts an IP packet read from the TUN device. `None`: it waits for a
    /// handshake (drain `poll_transmit` to send the initiation).
    pub fn send_ip(&self, packet: Vec<u8>) -> Result<Option<Datagram>, TunnelError> {
        let mut out = vec![0u8; packet.len() + 64];
        let now = self.now();
        let mut st = self.lock();
        match st.node.send_ip(now, &packet, &mut out) {
            Ok(Sent::Transmit(t)) => {
                out.truncate(t.len);
                Ok(Some(Datagram { endpoint: t.to.to_string(), data: out }))
            }
            Ok(Sent::Queued { .. }) => Ok(None),
            Err(e) => Err(Self::send_error(&st, e)),
        }
    }

    /// The next datagram to send (handshakes, queued data, keepalives), or None.
    pub fn poll_transmit(&self) -> Result<Option<Datagram>, TunnelError> {
        let mut out = vec![0u8; MAX_DATAGRAM];
        let now = self.now();
        let mut st = self.lock();
        match st.node.poll_transmit(now, &mut out) {
            Ok(Some(t)) => {
                out.truncate(t.len);
                Ok(Some(Datagram { endpoint: t.to.to_string(), data: out }))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Self::send_error(&st, e)),
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
            events_dropped: st.node.events_dropped(),
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
                    st.events.push_back(e);
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

    /// A handle for the JNI packet path (`net.omninervous.ffi.OmniNative`).
    /// It holds a strong reference: release it with `OmniNative.release`.
    pub fn packet_handle(self: Arc<Self>) -> u64 {
        Arc::into_raw(self) as usize as u64
    }
}
