//! A device's tunnel configuration as one line of `key=value` tokens
//! (separated by spaces), so the same text can be compiled in, stored in
//! flash or handed over the QEMU command line:
//!
//! ```text
//! key=<base64 private key> vip=10.77.0.2/24 port=51820
//! peer=<base64 public key> endpoint=10.0.2.2:51821 allowed=10.77.0.1/32 keepalive=25 psk=<base64>
//! ```
//!
//! `peer=` opens a new peer; `endpoint`, `allowed` (repeatable), `keepalive`
//! and `psk` apply to the last one.
//!
//! A device that joins a cluster through a Nucleus instead of (or besides)
//! configured peers adds (the VIP is then its VIP in the cluster):
//!
//! ```text
//! nucleus=10.0.2.2:51820 nucleus_key=<base64 public key> cluster=NAME secret=S
//! ```
//!
//! `nucleus_key` is required (a device pins the Nucleus's key; there is no
//! trust on first use); without `secret` the cluster is unauthenticated. The
//! secret is a cluster credential: keep such a configuration where only the
//! device reads it (flash, or an owner-only file under QEMU). Tokens without `=` and unknown keys are
//! ignored (boards add their own, e.g. `state=` or `ip=`), so a board can
//! look them up with [`Config::get`].

use core::net::{Ipv4Addr, SocketAddrV4};
use core::str::FromStr;

use omni_core::{AllowedIp, PresharedKey, PublicKey, StaticSecret};

/// Peers a device configuration can hold.
pub const MAX_PEERS: usize = 4;
/// Allowed-IP entries per peer.
pub const MAX_ALLOWED: usize = 4;

#[derive(Clone)]
pub struct PeerSpec {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddrV4>,
    pub allowed: heapless::Vec<AllowedIp, MAX_ALLOWED>,
    pub keepalive: Option<u16>,
}

/// How the device joins a cluster (see the module documentation).
#[derive(Clone)]
pub struct NucleusSpec<'a> {
    pub endpoint: SocketAddrV4,
    pub key: PublicKey,
    pub cluster: &'a str,
    /// Empty: an unauthenticated cluster.
    pub secret: &'a str,
}

#[derive(Clone)]
pub struct Config<'a> {
    text: &'a str,
    pub private_key: StaticSecret,
    /// The device's address in the tunnel and the tunnel's prefix length.
    pub vip: Ipv4Addr,
    pub vip_prefix: u8,
    /// UDP port the node listens on (on the outer network).
    pub listen_port: u16,
    pub peers: heapless::Vec<PeerSpec, MAX_PEERS>,
    pub nucleus: Option<NucleusSpec<'a>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum ConfigError {
    MissingKey,
    MissingVip,
    BadValue(&'static str),
    ValueBeforePeer(&'static str),
    TooManyPeers,
    TooManyAllowedIps,
    /// `nucleus=` without `nucleus_key=` or `cluster=`, or those without `nucleus=`.
    IncompleteNucleus,
}

impl<'a> Config<'a> {
    pub fn parse(text: &'a str) -> Result<Self, ConfigError> {
        let mut private_key = None;
        let mut vip = None;
        let mut listen_port = 51820;
        let mut peers: heapless::Vec<PeerSpec, MAX_PEERS> = heapless::Vec::new();
        for (k, v) in tokens(text) {
            match k {
                "key" => private_key = Some(StaticSecret::from_base64(v).map_err(|_| ConfigError::BadValue("key"))?),
                "vip" => {
                    let (a, p) = v.split_once('/').unwrap_or((v, "24"));
                    let a = Ipv4Addr::from_str(a).map_err(|_| ConfigError::BadValue("vip"))?;
                    let p = u8::from_str(p).ok().filter(|p| *p <= 32).ok_or(ConfigError::BadValue("vip"))?;
                    vip = Some((a, p));
                }
                "port" => listen_port = u16::from_str(v).map_err(|_| ConfigError::BadValue("port"))?,
                "peer" => {
                    let public_key = PublicKey::from_base64(v).map_err(|_| ConfigError::BadValue("peer"))?;
                    let spec = PeerSpec {
                        public_key,
                        preshared_key: None,
                        endpoint: None,
                        allowed: heapless::Vec::new(),
                        keepalive: None,
                    };
                    peers.push(spec).map_err(|_| ConfigError::TooManyPeers)?;
                }
                "endpoint" => {
                    let p = peers.last_mut().ok_or(ConfigError::ValueBeforePeer("endpoint"))?;
                    p.endpoint = Some(SocketAddrV4::from_str(v).map_err(|_| ConfigError::BadValue("endpoint"))?);
                }
                "allowed" => {
                    let p = peers.last_mut().ok_or(ConfigError::ValueBeforePeer("allowed"))?;
                    let net = AllowedIp::from_str(v).map_err(|_| ConfigError::BadValue("allowed"))?;
                    p.allowed.push(net).map_err(|_| ConfigError::TooManyAllowedIps)?;
                }
                "keepalive" => {
                    let p = peers.last_mut().ok_or(ConfigError::ValueBeforePeer("keepalive"))?;
                    p.keepalive = Some(u16::from_str(v).map_err(|_| ConfigError::BadValue("keepalive"))?);
                }
                "psk" => {
                    let p = peers.last_mut().ok_or(ConfigError::ValueBeforePeer("psk"))?;
                    let k = PublicKey::from_base64(v).map_err(|_| ConfigError::BadValue("psk"))?;
                    p.preshared_key = Some(PresharedKey::from_bytes(k.0));
                }
                _ => {}
            }
        }
        let private_key = private_key.ok_or(ConfigError::MissingKey)?;
        let (vip, vip_prefix) = vip.ok_or(ConfigError::MissingVip)?;
        let nucleus = Self::nucleus(text)?;
        Ok(Config { text, private_key, vip, vip_prefix, listen_port, peers, nucleus })
    }

    fn nucleus(text: &'a str) -> Result<Option<NucleusSpec<'a>>, ConfigError> {
        let get = |key: &str| tokens(text).find(|(k, _)| *k == key).map(|(_, v)| v);
        let (endpoint, key, cluster) = match (get("nucleus"), get("nucleus_key"), get("cluster")) {
            (None, None, None) => return Ok(None),
            (Some(e), Some(k), Some(c)) if !c.is_empty() => (e, k, c),
            _ => return Err(ConfigError::IncompleteNucleus),
        };
        Ok(Some(NucleusSpec {
            endpoint: SocketAddrV4::from_str(endpoint).map_err(|_| ConfigError::BadValue("nucleus"))?,
            key: PublicKey::from_base64(key).map_err(|_| ConfigError::BadValue("nucleus_key"))?,
            cluster,
            secret: get("secret").unwrap_or(""),
        }))
    }

    /// The first value of a key, including keys this module does not know.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        tokens(self.text).find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

fn tokens(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split_ascii_whitespace().filter_map(|t| t.split_once('='))
}
