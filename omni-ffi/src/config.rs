//! Tunnel configuration: the structured records of the uniffi surface, the
//! wg-quick text format, and their validation into core types.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use omni_core::{AllowedIp, PresharedKey, PublicKey, StaticSecret};

use crate::error::TunnelError;

/// A tunnel as a wg-quick file describes it. All keys are base64.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct TunnelConfig {
    /// `[Interface] PrivateKey`.
    pub private_key: String,
    /// `ListenPort`: the UDP port the host should bind (None = any).
    #[uniffi(default = None)]
    pub listen_port: Option<u16>,
    /// `Address`: the tunnel's own addresses with prefix, e.g. `10.0.0.2/24`.
    pub addresses: Vec<String>,
    /// `DNS`: server addresses and search domains.
    pub dns: Vec<String>,
    /// `MTU` (default 1420).
    #[uniffi(default = None)]
    pub mtu: Option<u16>,
    pub peers: Vec<PeerSpec>,
}

/// A `[Peer]` section.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PeerSpec {
    pub public_key: String,
    #[uniffi(default = None)]
    pub preshared_key: Option<String>,
    /// Prefixes routed to this peer, e.g. `0.0.0.0/0`, `10.0.0.0/24`.
    pub allowed_ips: Vec<String>,
    /// `ip:port`, `[ipv6]:port` or `hostname:port` (resolved by
    /// `Tunnel.resolve_endpoints`).
    #[uniffi(default = None)]
    pub endpoint: Option<String>,
    /// Seconds; None or 0 disables.
    #[uniffi(default = None)]
    pub persistent_keepalive: Option<u16>,
}

/// An IP address with a prefix length, for VPN builders.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct IpNetwork {
    pub address: String,
    pub prefix_length: u8,
}

/// What a VPN host needs to set up its interface (Android `VpnService.Builder`,
/// iOS `NEPacketTunnelNetworkSettings`).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct InterfaceSettings {
    pub addresses: Vec<IpNetwork>,
    /// The union of all peers' allowed IPs: what to route into the tunnel.
    pub routes: Vec<IpNetwork>,
    pub dns_servers: Vec<String>,
    pub search_domains: Vec<String>,
    pub mtu: u16,
    pub listen_port: Option<u16>,
}

/// A validated interface.
pub(crate) struct Interface {
    pub secret: StaticSecret,
    pub listen_port: Option<u16>,
    pub addresses: Vec<(IpAddr, u8)>,
    pub dns_servers: Vec<IpAddr>,
    pub search_domains: Vec<String>,
    pub mtu: u16,
}

/// How a peer's endpoint was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndpointSpec {
    Addr(SocketAddr),
    /// A hostname to resolve (with the port).
    Host(String, u16),
}

/// A validated peer.
pub(crate) struct Peer {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub allowed_ips: Vec<AllowedIp>,
    pub endpoint: Option<EndpointSpec>,
    pub persistent_keepalive: Option<u16>,
}

pub(crate) const DEFAULT_MTU: u16 = 1420;
/// IPv6 needs 1280; WireGuard's overhead on top must still fit a 1500 path.
const MIN_MTU: u16 = 576;

pub(crate) fn parse_private_key(s: &str) -> Result<StaticSecret, TunnelError> {
    StaticSecret::from_base64(s.trim()).map_err(|e| TunnelError::InvalidKey { detail: e.to_string() })
}

pub(crate) fn parse_public_key(s: &str) -> Result<PublicKey, TunnelError> {
    PublicKey::from_base64(s.trim()).map_err(|e| TunnelError::InvalidKey { detail: e.to_string() })
}

fn parse_psk(s: &str) -> Result<PresharedKey, TunnelError> {
    PresharedKey::from_base64(s.trim()).map_err(|e| TunnelError::InvalidKey { detail: e.to_string() })
}

/// `10.0.0.2/24`, or a bare address (a host prefix).
pub(crate) fn parse_address(s: &str) -> Result<(IpAddr, u8), TunnelError> {
    let s = s.trim();
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| TunnelError::address(s, "not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(|| TunnelError::address(s, "bad prefix length"))?
        }
        Some(_) => return Err(TunnelError::address(s, "bad prefix length")),
    };
    Ok((ip, prefix))
}

pub(crate) fn parse_allowed_ip(s: &str) -> Result<AllowedIp, TunnelError> {
    s.trim().parse().map_err(|_| TunnelError::address(s, "not an IP prefix"))
}

/// `1.2.3.4:51820`, `[::1]:51820` or `host.example:51820`.
pub(crate) fn parse_endpoint(s: &str) -> Result<EndpointSpec, TunnelError> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(EndpointSpec::Addr(a));
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| TunnelError::address(s, "expected host:port"))?;
    let port: u16 = port.parse().map_err(|_| TunnelError::address(s, "bad port"))?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !host_ok {
        return Err(TunnelError::address(s, "bad host name"));
    }
    Ok(EndpointSpec::Host(host.to_owned(), port))
}

/// Validates a structured config.
pub(crate) fn validate(cfg: &TunnelConfig) -> Result<(Interface, Vec<Peer>), TunnelError> {
    let secret = parse_private_key(&cfg.private_key)?;
    let addresses = cfg.addresses.iter().map(|a| parse_address(a)).collect::<Result<Vec<_>, _>>()?;
    let (dns_servers, search_domains) = parse_dns(&cfg.dns)?;
    let mtu = cfg.mtu.unwrap_or(DEFAULT_MTU);
    check_mtu(mtu)?;
    let peers = cfg.peers.iter().map(validate_peer).collect::<Result<Vec<_>, _>>()?;
    Ok((Interface { secret, listen_port: cfg.listen_port, addresses, dns_servers, search_domains, mtu }, peers))
}

/// `DNS` entries: server addresses and search domains.
pub(crate) fn parse_dns(list: &[String]) -> Result<(Vec<IpAddr>, Vec<String>), TunnelError> {
    let (mut dns_servers, mut search_domains) = (Vec::new(), Vec::new());
    for d in list {
        let d = d.trim();
        match d.parse::<IpAddr>() {
            Ok(ip) => dns_servers.push(ip),
            Err(_) if !d.is_empty() && !d.contains(char::is_whitespace) => search_domains.push(d.to_owned()),
            Err(_) => return Err(TunnelError::address(d, "not a DNS server or search domain")),
        }
    }
    Ok((dns_servers, search_domains))
}

pub(crate) fn check_mtu(mtu: u16) -> Result<(), TunnelError> {
    if mtu < MIN_MTU {
        return Err(TunnelError::config(0, format!("MTU {mtu} is below {MIN_MTU}")));
    }
    Ok(())
}

/// Validates one `[Peer]`.
pub(crate) fn validate_peer(p: &PeerSpec) -> Result<Peer, TunnelError> {
    Ok(Peer {
        public_key: parse_public_key(&p.public_key)?,
        preshared_key: p.preshared_key.as_deref().map(parse_psk).transpose()?,
        allowed_ips: p.allowed_ips.iter().map(|a| parse_allowed_ip(a)).collect::<Result<Vec<_>, _>>()?,
        endpoint: p.endpoint.as_deref().map(parse_endpoint).transpose()?,
        persistent_keepalive: p.persistent_keepalive.filter(|&k| k > 0),
    })
}

/// Splits a comma-separated wg-quick value.
fn list(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Parses wg-quick text. Keys are case-insensitive; `#` starts a comment;
/// list values may repeat across lines. wg-quick's host-script keys (`Table`,
/// `PreUp`, `PostUp`, `PreDown`, `PostDown`, `SaveConfig`, `FwMark`) are
/// accepted and ignored: a phone runs no shell scripts. Every other unknown
/// key is an error with its line number. Values are checked here too, so an
/// error points at its line.
pub fn parse_wg_quick(text: &str) -> Result<TunnelConfig, TunnelError> {
    #[derive(PartialEq)]
    enum Section {
        None,
        Interface,
        Peer,
    }
    let mut section = Section::None;
    let mut seen_interface = false;
    let mut private_key: Option<String> = None;
    let mut cfg = TunnelConfig {
        private_key: String::new(),
        listen_port: None,
        addresses: Vec::new(),
        dns: Vec::new(),
        mtu: None,
        peers: Vec::new(),
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = match line.to_ascii_lowercase().as_str() {
                "[interface]" if !seen_interface => {
                    seen_interface = true;
                    Section::Interface
                }
                "[interface]" => return Err(TunnelError::config(n, "a second [Interface] section")),
                "[peer]" => {
                    cfg.peers.push(PeerSpec {
                        public_key: String::new(),
                        preshared_key: None,
                        allowed_ips: Vec::new(),
                        endpoint: None,
                        persistent_keepalive: None,
                    });
                    Section::Peer
                }
                _ => return Err(TunnelError::config(n, format!("unknown section {line}"))),
            };
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(TunnelError::config(n, "expected Key = Value"));
        };
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        let at = |e: TunnelError| TunnelError::config(n, e.to_string());
        match section {
            Section::None => return Err(TunnelError::config(n, "key outside of a section")),
            Section::Interface => match key.as_str() {
                "privatekey" => {
                    parse_private_key(value).map_err(at)?;
                    private_key = Some(value.to_owned());
                }
                "listenport" => {
                    cfg.listen_port = Some(value.parse().map_err(|_| TunnelError::config(n, "bad ListenPort"))?)
                }
                "address" => {
                    for a in list(value) {
                        parse_address(&a).map_err(at)?;
                        cfg.addresses.push(a);
                    }
                }
                "dns" => cfg.dns.extend(list(value)),
                "mtu" => cfg.mtu = Some(value.parse().map_err(|_| TunnelError::config(n, "bad MTU"))?),
                "table" | "preup" | "postup" | "predown" | "postdown" | "saveconfig" | "fwmark" => {
                    log::debug!("wg-quick line {n}: {key} ignored on this host");
                }
                _ => return Err(TunnelError::config(n, format!("unknown [Interface] key {key}"))),
            },
            Section::Peer => {
                let Some(peer) = cfg.peers.last_mut() else { return Err(TunnelError::config(n, "no [Peer]")) };
                match key.as_str() {
                    "publickey" => {
                        parse_public_key(value).map_err(at)?;
                        peer.public_key = value.to_owned();
                    }
                    "presharedkey" => {
                        parse_psk(value).map_err(at)?;
                        peer.preshared_key = Some(value.to_owned());
                    }
                    "allowedips" => {
                        for a in list(value) {
                            parse_allowed_ip(&a).map_err(at)?;
                            peer.allowed_ips.push(a);
                        }
                    }
                    "endpoint" => {
                        parse_endpoint(value).map_err(at)?;
                        peer.endpoint = Some(value.to_owned());
                    }
                    "persistentkeepalive" => {
                        peer.persistent_keepalive = if value.eq_ignore_ascii_case("off") {
                            None
                        } else {
                            Some(value.parse().map_err(|_| TunnelError::config(n, "bad PersistentKeepalive"))?)
                        }
                    }
                    _ => return Err(TunnelError::config(n, format!("unknown [Peer] key {key}"))),
                }
            }
        }
    }
    if !seen_interface {
        return Err(TunnelError::config(0, "no [Interface] section"));
    }
    cfg.private_key = private_key.ok_or_else(|| TunnelError::config(0, "[Interface] has no PrivateKey"))?;
    if let Some(i) = cfg.peers.iter().position(|p| p.public_key.is_empty()) {
        return Err(TunnelError::config(0, format!("[Peer] #{} has no PublicKey", i + 1)));
    }
    // Structural checks beyond single lines (MTU range and so on).
    validate(&cfg)?;
    Ok(cfg)
}

/// Writes a config back as wg-quick text (keys included: handle with care).
pub fn to_wg_quick(cfg: &TunnelConfig) -> String {
    let mut s = String::from("[Interface]\n");
    let _ = writeln!(s, "PrivateKey = {}", cfg.private_key);
    if let Some(p) = cfg.listen_port {
        let _ = writeln!(s, "ListenPort = {p}");
    }
    if !cfg.addresses.is_empty() {
        let _ = writeln!(s, "Address = {}", cfg.addresses.join(", "));
    }
    if !cfg.dns.is_empty() {
        let _ = writeln!(s, "DNS = {}", cfg.dns.join(", "));
    }
    if let Some(m) = cfg.mtu {
        let _ = writeln!(s, "MTU = {m}");
    }
    for p in &cfg.peers {
        let _ = writeln!(s, "\n[Peer]\nPublicKey = {}", p.public_key);
        if let Some(k) = &p.preshared_key {
            let _ = writeln!(s, "PresharedKey = {k}");
        }
        if !p.allowed_ips.is_empty() {
            let _ = writeln!(s, "AllowedIPs = {}", p.allowed_ips.join(", "));
        }
        if let Some(e) = &p.endpoint {
            let _ = writeln!(s, "Endpoint = {e}");
        }
        if let Some(k) = p.persistent_keepalive {
            let _ = writeln!(s, "PersistentKeepalive = {k}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const KEY_B: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    #[test]
    fn parses_a_full_file() {
        let text = format!(
            "# phone\n[Interface]\nPrivateKey = {KEY_A}\nListenPort = 51820\nAddress = 10.0.0.2/24, fd00::2/64\n\
             DNS = 1.1.1.1, example.com\nMTU = 1380\nPostUp = iptables ...\n\n[Peer]\nPublicKey = {KEY_B}\n\
             PresharedKey = {KEY_B}\nAllowedIPs = 0.0.0.0/0\nAllowedIPs = ::/0\nEndpoint = vpn.example.com:51820\n\
             PersistentKeepalive = 25\n"
        );
        let cfg = parse_wg_quick(&text).unwrap();
        assert_eq!(cfg.listen_port, Some(51820));
        assert_eq!(cfg.addresses, ["10.0.0.2/24", "fd00::2/64"]);
        assert_eq!(cfg.dns, ["1.1.1.1", "example.com"]);
        assert_eq!(cfg.mtu, Some(1380));
        assert_eq!(cfg.peers[0].allowed_ips, ["0.0.0.0/0", "::/0"]);
        assert_eq!(cfg.peers[0].persistent_keepalive, Some(25));
        let (iface, peers) = validate(&cfg).unwrap();
        assert_eq!(iface.search_domains, ["example.com"]);
        assert_eq!(peers[0].endpoint, Some(EndpointSpec::Host("vpn.example.com".into(), 51820)));
        // Round trip.
        assert_eq!(parse_wg_quick(&to_wg_quick(&cfg)).unwrap(), cfg);
    }

    #[test]
    fn errors_carry_line_numbers() {
        let bad = format!("[Interface]\nPrivateKey = {KEY_A}\nAddress = 10.0.0.300/24\n");
        assert!(matches!(parse_wg_quick(&bad), Err(TunnelError::InvalidConfig { line: 3, .. })));
        let bad = format!("[Interface]\nPrivateKey = {KEY_A}\n[Peer]\nPublicKey = nope\n");
        assert!(matches!(parse_wg_quick(&bad), Err(TunnelError::InvalidConfig { line: 4, .. })));
        assert!(matches!(parse_wg_quick("[Interface]\nFoo = 1\n"), Err(TunnelError::InvalidConfig { line: 2, .. })));
        assert!(matches!(parse_wg_quick("Address = 1.2.3.4\n"), Err(TunnelError::InvalidConfig { line: 1, .. })));
        assert!(matches!(parse_wg_quick("[Interface]\n"), Err(TunnelError::InvalidConfig { line: 0, .. })));
        assert!(parse_endpoint("[::1]:5").is_ok());
        assert!(parse_endpoint("no port").is_err());
    }
}
