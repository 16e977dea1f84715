//! Cluster membership through a Nucleus: the config a phone joins with, the
//! status it shows, and the glue between omni-core's sans-IO
//! [`NucleusClient`] and the [`Tunnel`](crate::Tunnel).
//!
//! The host still does all I/O: it sends what `poll_transmit` gives (to the
//! Nucleus and to members alike, one UDP socket) and feeds every received
//! datagram to `handle_datagram`. The tunnel follows the client's calling
//! rules (omni-core `nucleus::client`): datagrams through
//! `handle_datagram_with_control`, signaling to `handle_control`, every node
//! event to `handle_node_event`, every transmit through `route_transmit` or
//! the client's `poll_transmit`, both timers. The same holds on the C and JNI
//! packet paths, which drive the same tunnel.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use omni_core::nucleus::client::{ClientEvent, HeapMembers, Path, State as ClientState};
use omni_core::nucleus::wire::{ErrorCode, MAX_LOCAL_ENDPOINTS};
use omni_core::nucleus::{ClientConfig, ClusterSecret, NucleusClient};
use omni_core::{PeerId, PublicKey};

use crate::config::{self, Interface, DEFAULT_MTU};
use crate::error::TunnelError;
use crate::tunnel::Crypto;

pub(crate) type Client = NucleusClient<HeapMembers>;

const MAX_CLUSTER_NAME: usize = 255;
const MAX_SECRET: usize = 1024;

/// How a phone joins a cluster (what `omni-daemon --nucleus ... --cluster ...
/// --secret ... --vip ...` takes on the command line).
#[derive(Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClusterConfig {
    /// Our private key (base64).
    pub private_key: String,
    /// The Nucleus: `ip:port`, `[ipv6]:port` or `host:port` (a host name is
    /// resolved when the tunnel is created: blocking DNS, so call it off the
    /// main thread).
    pub nucleus_endpoint: String,
    /// The Nucleus's public key (base64): printed by `omni-daemon --mode
    /// nucleus` at start. Pin it; `nucleus_key_query` /
    /// `parse_nucleus_key_reply` learn it on first contact otherwise (trust on
    /// first use).
    pub nucleus_public_key: String,
    /// The cluster's name (never sent: it and the secret derive the cluster key).
    pub cluster: String,
    /// The cluster's secret, shared out of band. Empty: an unauthenticated
    /// cluster anyone who knows its name can join. Never logged.
    pub secret: String,
    /// Our virtual IP with the cluster's prefix, e.g. `10.200.0.5/24` (a bare
    /// IPv4 address means /24, a bare IPv6 address /64). An IPv6 VIP makes an
    /// IPv6 cluster.
    pub vip: String,
    /// A second VIP of the other family (dual stack: `vip` IPv4, this IPv6,
    /// e.g. `fd00:200::5/64`; a bare address means /64), like `omni-daemon
    /// --vip … --vip6 …`.
    #[uniffi(default = None)]
    pub vip6: Option<String>,
    /// The UDP port the host binds (None: any).
    #[uniffi(default = None)]
    pub listen_port: Option<u16>,
    /// `ip:port` of our socket on the phone's own networks (at most 4), so
    /// members on the same LAN can reach us directly.
    #[uniffi(default = [])]
    pub local_endpoints: Vec<String>,
    /// DNS servers and search domains for the VPN builder.
    #[uniffi(default = [])]
    pub dns: Vec<String>,
    #[uniffi(default = None)]
    pub mtu: Option<u16>,
    /// Persistent keepalive towards members, seconds (None: 25; 0: off).
    /// Keeps NAT mappings open and starts handshakes as soon as a member appears.
    #[uniffi(default = None)]
    pub mesh_keepalive: Option<u16>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("nucleus_endpoint", &self.nucleus_endpoint)
            .field("nucleus_public_key", &self.nucleus_public_key)
            .field("cluster", &self.cluster)
            .field("vip", &self.vip)
            .field("vip6", &self.vip6)
            .finish_non_exhaustive() // no private key, no secret
    }
}

/// Where the registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum ClusterState {
    /// Asking the Nucleus for a challenge (its handshake may still be running).
    Connecting,
    /// `Register` sent, waiting for the answer (or retrying after a refusal).
    Registering,
    /// A member: heartbeats flow, members become peers.
    Registered,
    /// `leave_cluster` was called.
    Left,
}

/// How a member is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum MemberPath {
    /// Added; no handshake completed yet (hole punching).
    Connecting,
    /// A handshake completed over a direct path.
    Direct,
    /// Direct attempts failed; the Nucleus was asked to relay.
    RelayRequested,
    /// Through the Nucleus's relay (still end-to-end encrypted).
    Relayed,
}

/// One member of the cluster (`Tunnel.cluster_status`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClusterMember {
    pub public_key: String,
    pub vip: String,
    /// Its IPv6 VIP if it is dual-stack.
    pub vip6: Option<String>,
    /// Where we send to it now (the Nucleus's address while relayed).
    pub endpoint: Option<String>,
    /// Its address as the Nucleus sees it.
    pub reflexive_endpoint: Option<String>,
    pub path: MemberPath,
    pub last_handshake_age_nanos: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The cluster side of a tunnel created by `Tunnel.join_cluster`.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ClusterStatus {
    pub state: ClusterState,
    /// Our VIP with the cluster's prefix.
    pub vip: String,
    /// Our IPv6 VIP with its prefix (dual stack).
    pub vip6: Option<String>,
    pub nucleus_endpoint: String,
    /// Our address as the Nucleus last saw it (our NAT mapping).
    pub reflexive_endpoint: Option<String>,
    pub members: Vec<ClusterMember>,
    /// The peer-list version applied last (0: none yet).
    pub list_version: u32,
    /// Signaling messages sent to and received from the Nucleus.
    pub signaling_sent: u64,
    pub signaling_received: u64,
    /// Datagrams relayed through the Nucleus, out and in.
    pub relayed_out: u64,
    pub relayed_in: u64,
}

/// A validated [`ClusterConfig`].
pub(crate) struct Join {
    pub interface: Interface,
    pub client: ClientConfig,
    pub cluster: ClusterSecret,
    pub vip: (IpAddr, u8),
    pub vip6: Option<(IpAddr, u8)>,
}

/// Overwrites a string's bytes before it is freed (best effort: copies made
/// while crossing the language boundary are out of our reach).
fn wipe(s: String) {
    let mut bytes = s.into_bytes();
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, exclusive reference; volatile so the store is not elided.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

fn parse_vip(s: &str) -> Result<(IpAddr, u8), TunnelError> {
    let t = s.trim();
    let (ip, prefix) = config::parse_address(t)?;
    if t.contains('/') {
        if prefix == 0 || (ip.is_ipv4() && prefix == 32) || (ip.is_ipv6() && prefix == 128) {
            return Err(TunnelError::address(s, "the prefix must leave room for other members"));
        }
        return Ok((ip, prefix));
    }
    Ok((ip, if ip.is_ipv4() { 24 } else { 64 }))
}

fn resolve_nucleus(s: &str) -> Result<SocketAddr, TunnelError> {
    match config::parse_endpoint(s)? {
        config::EndpointSpec::Addr(a) => Ok(a),
        config::EndpointSpec::Host(host, port) => {
            let addrs: Vec<SocketAddr> = (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| TunnelError::address(s, format!("cannot resolve: {e}")))?
                .collect();
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or_else(|| addrs.first())
                .copied()
                .ok_or_else(|| TunnelError::address(s, "no address"))
        }
    }
}

/// At most `MAX_LOCAL_ENDPOINTS` `ip:port` (what a registration carries).
pub(crate) fn parse_local_endpoints(list: &[String]) -> Result<Vec<SocketAddr>, TunnelError> {
    if list.len() > MAX_LOCAL_ENDPOINTS {
        return Err(TunnelError::config(0, format!("at most {MAX_LOCAL_ENDPOINTS} local endpoints are announced")));
    }
    list.iter().map(|e| e.trim().parse().map_err(|_| TunnelError::address(e, "expected ip:port"))).collect()
}

/// Validates a cluster config; the secret is wiped once the cluster keys are derived.
pub(crate) fn validate(mut cfg: ClusterConfig) -> Result<Join, TunnelError> {
    let secret_text = std::mem::take(&mut cfg.secret);
    let cluster = ClusterSecret::derive::<Crypto>(cfg.cluster.as_bytes(), secret_text.as_bytes());
    let (unauthenticated, secret_len) = (secret_text.is_empty(), secret_text.len());
    wipe(secret_text);
    // The daemon's limits (omni-daemon --cluster / --secret), so a phone and
    // an edge accept the same clusters.
    if cfg.cluster.trim().is_empty()
        || cfg.cluster.len() > MAX_CLUSTER_NAME
        || cfg.cluster.chars().any(char::is_control)
    {
        return Err(TunnelError::config(
            0,
            format!("the cluster name must be 1 to {MAX_CLUSTER_NAME} bytes without control characters"),
        ));
    }
    if secret_len > MAX_SECRET {
        return Err(TunnelError::config(0, format!("the secret is longer than {MAX_SECRET} bytes")));
    }
    let private_key = std::mem::take(&mut cfg.private_key);
    let secret = config::parse_private_key(&private_key);
    wipe(private_key);
    let secret = secret?;
    let nucleus_key = config::parse_public_key(&cfg.nucleus_public_key)?;
    let nucleus_endpoint = resolve_nucleus(&cfg.nucleus_endpoint)?;
    let vip = parse_vip(&cfg.vip)?;
    let vip6 = cfg.vip6.as_deref().map(parse_vip).transpose()?;
    if let Some((v6, _)) = vip6 {
        if !vip.0.is_ipv4() || !v6.is_ipv6() {
            return Err(TunnelError::config(0, "dual stack: `vip` is the IPv4 VIP and `vip6` the IPv6 one"));
        }
    }
    let local_endpoints = parse_local_endpoints(&cfg.local_endpoints)?;
    let mtu = cfg.mtu.unwrap_or(DEFAULT_MTU);
    config::check_mtu(mtu)?;
    let (dns_servers, search_domains) = config::parse_dns(&cfg.dns)?;
    if unauthenticated {
        log::warn!("cluster without a secret: anyone who knows its name can join it");
    }
    let mut client = ClientConfig::new(nucleus_key, nucleus_endpoint, vip.0);
    client.vip2 = vip6.map(|(ip, _)| ip);
    // At most MAX_LOCAL_ENDPOINTS (checked above), so the collect cannot overflow.
    client.local_endpoints = local_endpoints.into_iter().collect();
    client.mesh_keepalive = match cfg.mesh_keepalive {
        None => Some(25),
        Some(0) => None,
        Some(k) => Some(k),
    };
    let interface = Interface {
        secret,
        listen_port: cfg.listen_port,
        addresses: [Some(vip), vip6].into_iter().flatten().collect(),
        dns_servers,
        search_domains,
        mtu,
    };
    Ok(Join { interface, client, cluster, vip, vip6 })
}

/// The cluster side of a tunnel's state.
pub(crate) struct Cluster {
    pub client: Client,
    pub nucleus_peer: PeerId,
    pub nucleus_endpoint: SocketAddr,
    pub vip: (IpAddr, u8),
    pub vip6: Option<(IpAddr, u8)>,
    /// Signaling payloads are copied here, so a relayed packet can be
    /// decrypted into the caller's buffer.
    pub scratch: Vec<u8>,
}

/// A short stable word for a refusal.
pub(crate) fn refusal(code: ErrorCode) -> String {
    match code {
        ErrorCode::Unauthorized => "unauthorized".into(),
        ErrorCode::ChallengeExpired => "challenge-expired".into(),
        ErrorCode::VipInUse => "vip-in-use".into(),
        ErrorCode::NotRegistered => "not-registered".into(),
        ErrorCode::RateLimited => "rate-limited".into(),
        ErrorCode::Capacity => "capacity".into(),
        ErrorCode::RelayUnavailable => "relay-unavailable".into(),
        ErrorCode::UnknownPeer => "unknown-peer".into(),
        ErrorCode::BadRequest => "bad-request".into(),
        ErrorCode::Other(n) => format!("error-{n}"),
    }
}

pub(crate) fn state(s: ClientState) -> ClusterState {
    match s {
        ClientState::Idle | ClientState::Connecting => ClusterState::Connecting,
        ClientState::Registering => ClusterState::Registering,
        ClientState::Registered => ClusterState::Registered,
        ClientState::Left => ClusterState::Left,
    }
}

pub(crate) fn path(p: Path) -> MemberPath {
    match p {
        Path::Connecting => MemberPath::Connecting,
        Path::Direct => MemberPath::Direct,
        Path::RelayRequested => MemberPath::RelayRequested,
        Path::Relayed => MemberPath::Relayed,
    }
}

/// What the tunnel does with a client event.
pub(crate) enum Membership {
    Added { peer: PeerId, key: PublicKey, vip: IpAddr },
    Removed { peer: PeerId, key: PublicKey },
    Other(crate::tunnel::TunnelEvent),
}

/// Patterns use `..` so fields the client adds later (dual-stack VIPs) do not break the build.
pub(crate) fn membership(e: ClientEvent, key_of: impl Fn(PeerId) -> Option<PublicKey>) -> Option<Membership> {
    use crate::tunnel::TunnelEvent as T;
    let key = |k: &PublicKey| k.to_base64().as_str().to_owned();
    Some(match e {
        ClientEvent::Registered { vip, reflexive, .. } => Membership::Other(T::ClusterJoined {
            vip: vip.to_string(),
            reflexive_endpoint: reflexive.map(|r| r.to_string()),
        }),
        ClientEvent::Refused { code, .. } => Membership::Other(T::ClusterRefused { reason: refusal(code) }),
        ClientEvent::NucleusLost => Membership::Other(T::NucleusLost),
        ClientEvent::PeerAdded { peer, key, vip, .. } => Membership::Added { peer, key, vip },
        ClientEvent::PeerRemoved { peer, key, .. } => Membership::Removed { peer, key },
        ClientEvent::PeerSkipped { key: k, .. } => Membership::Other(T::MemberSkipped { public_key: key(&k) }),
        ClientEvent::Relayed { peer, .. } => {
            Membership::Other(T::MemberPathChanged { public_key: key(&key_of(peer)?), relayed: true })
        }
        ClientEvent::Direct { peer, .. } => {
            Membership::Other(T::MemberPathChanged { public_key: key(&key_of(peer)?), relayed: false })
        }
        // A member we reached directly moved: the client follows it there.
        ClientEvent::Moved { peer, endpoint, .. } => {
            Membership::Other(T::EndpointChanged { public_key: key(&key_of(peer)?), endpoint: endpoint.to_string() })
        }
        ClientEvent::Left => Membership::Other(T::ClusterLeft),
        _ => return None,
    })
}

// ----- the Nucleus key on first contact (trust on first use) ----------------

/// The daemon-level key query (omni-core's codec, the one omni-daemon answers).
pub(crate) fn key_query() -> Vec<u8> {
    omni_core::nucleus::wire::key_query().to_vec()
}

pub(crate) fn parse_key_reply(d: &[u8]) -> Option<PublicKey> {
    omni_core::nucleus::wire::parse_key_reply(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ClusterConfig {
        let k = crate::generate_private_key();
        let n = crate::public_key_from_private(crate::generate_private_key()).unwrap();
        ClusterConfig {
            private_key: k,
            nucleus_endpoint: "127.0.0.1:51820".into(),
            nucleus_public_key: n,
            cluster: "lab".into(),
            secret: "s3cret".into(),
            vip: "10.200.0.5".into(),
            vip6: None,
            listen_port: None,
            local_endpoints: vec![],
            dns: vec![],
            mtu: None,
            mesh_keepalive: None,
        }
    }

    #[test]
    fn vip_prefixes() {
        assert_eq!(parse_vip("10.200.0.5").unwrap().1, 24);
        assert_eq!(parse_vip("10.200.0.5/16").unwrap().1, 16);
        assert_eq!(parse_vip("fd00::5").unwrap().1, 64);
        assert!(parse_vip("10.200.0.5/32").is_err());
        assert!(parse_vip("nope").is_err());
    }

    #[test]
    fn validation() {
        let j = validate(cfg()).unwrap();
        assert_eq!(j.vip, ("10.200.0.5".parse().unwrap(), 24));
        assert_eq!(j.client.mesh_keepalive, Some(25));
        // Same name and secret, same cluster key; another secret, another cluster.
        assert_eq!(j.cluster.public(), validate(cfg()).unwrap().cluster.public());
        assert_ne!(
            j.cluster.public(),
            validate(ClusterConfig { secret: "other".into(), ..cfg() }).unwrap().cluster.public()
        );
        assert!(matches!(
            validate(ClusterConfig { nucleus_public_key: "x".into(), ..cfg() }),
            Err(TunnelError::InvalidKey { .. })
        ));
        let dual = validate(ClusterConfig { vip6: Some("fd00::5".into()), ..cfg() }).unwrap();
        assert_eq!(
            (dual.client.vip2, dual.vip6),
            (Some("fd00::5".parse().unwrap()), Some(("fd00::5".parse().unwrap(), 64)))
        );
        assert_eq!(dual.interface.addresses.len(), 2);
        assert!(matches!(
            validate(ClusterConfig { vip6: Some("10.9.9.9".into()), ..cfg() }),
            Err(TunnelError::InvalidConfig { .. })
        ));
        assert!(matches!(
            validate(ClusterConfig { cluster: " ".into(), ..cfg() }),
            Err(TunnelError::InvalidConfig { .. })
        ));
        let five = (0..5).map(|i| format!("192.168.1.{i}:1")).collect();
        assert!(matches!(
            validate(ClusterConfig { local_endpoints: five, ..cfg() }),
            Err(TunnelError::InvalidConfig { .. })
        ));
        // Debug never shows the secret or the private key.
        let c = cfg();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret") && !shown.contains(&c.private_key));
    }

    #[test]
    fn key_query_format() {
        let q = key_query();
        assert_eq!(q.len(), 64);
        let mut reply = omni_core::nucleus::wire::KEY_MAGIC.to_vec();
        reply.extend_from_slice(&[7; 32]);
        assert_eq!(parse_key_reply(&reply), Some(PublicKey([7; 32])));
        assert_eq!(parse_key_reply(&q), None);
        assert_eq!(parse_key_reply(&reply[..47]), None);
    }
}
