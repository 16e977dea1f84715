//! The device: the omni-core node, its UDP sockets and the bits of
//! configuration the UAPI reports that the node does not keep (listen port,
//! fwmark, preshared keys). Shared between the data plane and the UAPI
//! server behind one mutex.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use omni_core::crypto::DefaultProvider;
use omni_core::node::AddPeerError;
use omni_core::storage::Heap;
use omni_core::{Instant, Node, NodeConfig, PeerConfig, PresharedKey, PublicKey, WallTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tracing::{debug, info};
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::uapi::{DeviceOp, PeerOp, SetRequest, UapiError};
use crate::udp::{self, Sockets};

pub type WgNode = Node<DefaultProvider, ChaCha20Rng, Heap>;

/// How often the node's wall clock is re-anchored to the system clock.
const WALL_RESYNC: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Device {
    pub node: WgNode,
    pub sockets: Sockets,
    pub clock: Clock,
    fwmark: u32,
    /// Preshared keys by peer, for `get` (the node does not hand them out).
    psks: HashMap<PublicKey, PresharedKey>,
    wall_synced_at: Instant,
}

impl Device {
    pub fn new(clock: Clock, sockets: Sockets, mtu: u16) -> Self {
        let rng = ChaCha20Rng::from_entropy();
        let node = WgNode::new(NodeConfig { mtu, ..NodeConfig::default() }, rng);
        let now = clock.now();
        let mut device = Device { node, sockets, clock, fwmark: 0, psks: HashMap::new(), wall_synced_at: now };
        device.node.set_wall_time(now, WallTime::now_system());
        device
    }

    /// Re-anchors the node's wall clock now and then (NTP steps, suspend).
    pub fn maybe_sync_wall_time(&mut self, now: Instant) {
        if now.saturating_duration_since(self.wall_synced_at) >= WALL_RESYNC {
            self.node.set_wall_time(now, WallTime::now_system());
            self.wall_synced_at = now;
        }
    }

    /// Applies a parsed `set=1` request, in order, as wireguard-go does.
    pub fn apply(&mut self, req: SetRequest) -> Result<(), UapiError> {
        let now = self.clock.now();
        self.node.set_wall_time(now, WallTime::now_system());
        self.wall_synced_at = now;
        for op in req.device {
            match op {
                DeviceOp::PrivateKey(key) => {
                    self.node.set_private_key(key);
                    // A peer whose key is our new public key was removed with its psk.
                    let node = &self.node;
                    self.psks.retain(|k, _| node.peer_by_key(k).is_some());
                    match self.node.public_key() {
                        Some(k) => info!("private key set; public key {k}"),
                        None => info!("private key removed"),
                    }
                }
                DeviceOp::ListenPort(port) => {
                    if port == 0 || port != self.sockets.port {
                        let sockets = Sockets::bind(port, self.fwmark).map_err(|e| UapiError {
                            errno: libc::EADDRINUSE,
                            message: format!("cannot bind UDP port {port}: {e}"),
                        })?;
                        info!("listening on UDP port {}", sockets.port);
                        self.sockets = sockets;
                    }
                }
                DeviceOp::Fwmark(mark) => {
                    self.sockets.set_mark(mark).map_err(|e| UapiError {
                        errno: libc::EADDRINUSE,
                        message: format!("cannot set fwmark {mark}: {e}"),
                    })?;
                    self.fwmark = mark;
                }
                DeviceOp::ReplacePeers => {
                    self.node.clear_peers();
                    self.psks.clear();
                }
            }
        }
        for block in req.peers {
            let key = block.public_key;
            if self.node.public_key() == Some(key) {
                continue; // our own key: ignored, as WireGuard does
            }
            let id = match self.node.peer_by_key(&key) {
                Some(id) => id,
                None if block.update_only() => continue,
                None => match self.node.add_peer(now, PeerConfig::new(key)) {
                    Ok(id) | Err(AddPeerError::Duplicate(id)) => {
                        debug!("peer {key} added");
                        id
                    }
                    Err(AddPeerError::OwnKey) => continue,
                    Err(e) => {
                        return Err(UapiError { errno: libc::ENOMEM, message: format!("cannot add peer {key}: {e:?}") })
                    }
                },
            };
            for op in block.ops {
                match op {
                    PeerOp::Remove => {
                        self.node.remove_peer(id);
                        self.psks.remove(&key);
                        debug!("peer {key} removed");
                        break; // the rest of the block addresses no peer
                    }
                    PeerOp::UpdateOnly => {}
                    PeerOp::PresharedKey(psk) => {
                        self.node.set_preshared_key(id, Some(psk.clone()));
                        if psk.is_zero() {
                            self.psks.remove(&key);
                        } else {
                            self.psks.insert(key, psk);
                        }
                    }
                    PeerOp::Endpoint(e) => {
                        self.node.set_endpoint(id, Some(udp::canonical(e)));
                    }
                    PeerOp::PersistentKeepalive(secs) => {
                        self.node.set_persistent_keepalive(now, id, Some(secs));
                    }
                    PeerOp::ReplaceAllowedIps => self.node.clear_allowed_ips(id),
                    PeerOp::AddAllowedIp(net) => {
                        self.node.add_allowed_ip(id, net).map_err(|e| UapiError {
                            errno: libc::ENOMEM,
                            message: format!("cannot add allowed IP {net}: {e:?}"),
                        })?;
                    }
                    PeerOp::RemoveAllowedIp(net) => {
                        self.node.remove_allowed_ip(id, net);
                    }
                }
            }
        }
        Ok(())
    }

    /// The `get=1` answer without the final `errno=0` line (the server adds it).
    /// Holds the private key: the buffer is wiped when dropped.
    pub fn get(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::new());
        let out: &mut String = &mut s;
        if let Some(k) = self.node.private_key() {
            let hex = k.to_hex();
            out.push_str("private_key=");
            out.push_str(hex.as_str());
            out.push('\n');
        }
        if self.sockets.port != 0 {
            let _ = writeln!(out, "listen_port={}", self.sockets.port);
        }
        if self.fwmark != 0 {
            let _ = writeln!(out, "fwmark={}", self.fwmark);
        }
        self.node.for_each_peer(|id| {
            let Some(st) = self.node.peer_stats(id) else { return };
            let _ = writeln!(out, "public_key={}", st.public_key.to_hex().as_str());
            match self.psks.get(&st.public_key) {
                Some(psk) => {
                    out.push_str("preshared_key=");
                    out.push_str(psk.to_hex().as_str());
                    out.push('\n');
                }
                None => {
                    let _ = writeln!(out, "preshared_key={}", "0".repeat(64));
                }
            }
            out.push_str("protocol_version=1\n");
            if let Some(e) = st.endpoint {
                let _ = writeln!(out, "endpoint={e}");
            }
            let (secs, nsecs) = st.last_handshake_wall.map_or((0, 0), |w| (w.secs, w.nanos));
            let _ = writeln!(out, "last_handshake_time_sec={secs}");
            let _ = writeln!(out, "last_handshake_time_nsec={nsecs}");
            let _ = writeln!(out, "tx_bytes={}", st.tx_bytes);
            let _ = writeln!(out, "rx_bytes={}", st.rx_bytes);
            let _ = writeln!(out, "persistent_keepalive_interval={}", st.persistent_keepalive.unwrap_or(0));
            self.node.for_each_allowed_ip(id, |net| {
                let _ = writeln!(out, "allowed_ip={net}");
            });
        });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::parse_set;
    use omni_core::StaticSecret;

    fn device() -> Device {
        Device::new(Clock::new(), Sockets::bind(0, 0).unwrap(), 1420)
    }

    fn key(seed: u8) -> (StaticSecret, PublicKey) {
        let k = StaticSecret::from_bytes([seed; 32]);
        let p = k.public_key::<DefaultProvider>();
        (k, p)
    }

    fn set(d: &mut Device, body: &str) -> Result<(), UapiError> {
        d.apply(parse_set(body)?)
    }

    fn lines(d: &Device) -> Vec<String> {
        d.get().lines().map(str::to_owned).collect()
    }

    #[test]
    fn empty_device() {
        let d = device();
        let port = d.sockets.port;
        assert_eq!(d.get().as_str(), format!("listen_port={port}\n"));
    }

    #[test]
    fn set_then_get_round_trips_every_key() {
        let mut d = device();
        let (sk, _) = key(1);
        let (_, peer) = key(2);
        let psk = "42".repeat(32);
        set(
            &mut d,
            &format!(
                "private_key={}\nlisten_port=0\nfwmark=7\npublic_key={}\npreshared_key={psk}\n\
                 endpoint=[fd00:241::2]:51820\npersistent_keepalive_interval=25\nallowed_ip=10.241.0.2/32\n\
                 allowed_ip=fd00:aa::2/128\nprotocol_version=1",
                sk.to_hex().as_str(),
                peer.to_hex().as_str()
            ),
        )
        .unwrap();
        let port = d.sockets.port;
        let got = lines(&d);
        assert_eq!(
            got,
            vec![
                format!("private_key={}", sk.to_hex().as_str()),
                format!("listen_port={port}"),
                "fwmark=7".into(),
                format!("public_key={}", peer.to_hex().as_str()),
                format!("preshared_key={psk}"),
                "protocol_version=1".into(),
                "endpoint=[fd00:241::2]:51820".into(),
                "last_handshake_time_sec=0".into(),
                "last_handshake_time_nsec=0".into(),
                // Persistent keepalive starts with a handshake initiation: nothing sent yet.
                "tx_bytes=0".into(),
                "rx_bytes=0".into(),
                "persistent_keepalive_interval=25".into(),
                "allowed_ip=10.241.0.2/32".into(),
                "allowed_ip=fd00:aa::2/128".into(),
            ]
        );
        // IPv4 endpoint, keepalive off, allowed IPs replaced, one removed, psk cleared.
        set(
            &mut d,
            &format!(
                "public_key={}\nendpoint=192.168.241.2:51821\npersistent_keepalive_interval=0\n\
                 preshared_key={}\nreplace_allowed_ips=true\nallowed_ip=10.241.0.0/24\nallowed_ip=10.9.0.0/16\n\
                 allowed_ip=-10.9.0.0/16",
                peer.to_hex().as_str(),
                "0".repeat(64)
            ),
        )
        .unwrap();
        let got = lines(&d);
        assert!(got.contains(&"endpoint=192.168.241.2:51821".to_string()));
        assert!(got.contains(&"persistent_keepalive_interval=0".to_string()));
        assert!(got.contains(&format!("preshared_key={}", "0".repeat(64))));
        let ips: Vec<_> = got.iter().filter(|l| l.starts_with("allowed_ip=")).collect();
        assert_eq!(ips, vec!["allowed_ip=10.241.0.0/24"]);
        set(&mut d, "fwmark=0").unwrap();
        assert!(!lines(&d).iter().any(|l| l.starts_with("fwmark=")));
    }

    #[test]
    fn peer_lifecycle_update_only_remove_replace() {
        let mut d = device();
        let (_, p1) = key(3);
        let (_, p2) = key(4);
        let count = |d: &Device| d.get().lines().filter(|l| l.starts_with("public_key=")).count();
        // update_only does not create.
        set(&mut d, &format!("public_key={}\nupdate_only=true\nallowed_ip=10.0.0.1/32", p1.to_hex().as_str())).unwrap();
        assert_eq!(count(&d), 0);
        set(&mut d, &format!("public_key={}\npublic_key={}", p1.to_hex().as_str(), p2.to_hex().as_str())).unwrap();
        assert_eq!(count(&d), 2);
        // update_only on an existing peer updates it.
        set(&mut d, &format!("public_key={}\nupdate_only=true\nallowed_ip=10.0.0.1/32", p1.to_hex().as_str())).unwrap();
        assert!(lines(&d).contains(&"allowed_ip=10.0.0.1/32".to_string()));
        // remove ignores the rest of its block.
        set(&mut d, &format!("public_key={}\nremove=true\nallowed_ip=10.0.0.9/32", p1.to_hex().as_str())).unwrap();
        assert_eq!(count(&d), 1);
        assert!(!d.get().contains("10.0.0.9"));
        // replace_peers removes everyone.
        set(&mut d, "replace_peers=true").unwrap();
        assert_eq!(count(&d), 0);
        // A peer with our own public key is ignored.
        let (sk, own) = key(5);
        set(&mut d, &format!("private_key={}\npublic_key={}", sk.to_hex().as_str(), own.to_hex().as_str())).unwrap();
        assert_eq!(count(&d), 0);
        // A peer that becomes our own key disappears with its preshared key.
        let (_, p3) = key(7);
        let (sk3, _) = key(7);
        set(&mut d, &format!("public_key={}\npreshared_key={}", p3.to_hex().as_str(), "33".repeat(32))).unwrap();
        set(&mut d, &format!("private_key={}", sk3.to_hex().as_str())).unwrap();
        assert_eq!(count(&d), 0);
        set(&mut d, &format!("private_key={}\npublic_key={}", sk.to_hex().as_str(), p3.to_hex().as_str())).unwrap();
        assert!(d.get().contains(&format!("preshared_key={}\n", "0".repeat(64))));
        set(&mut d, &format!("public_key={}\nremove=true", p3.to_hex().as_str())).unwrap();
        // The zero private key removes our identity.
        set(&mut d, &format!("private_key={}", "0".repeat(64))).unwrap();
        assert!(!d.get().contains("private_key="));
    }

    #[test]
    fn listen_port_in_use_is_eaddrinuse_and_keeps_the_old_port() {
        let mut d = device();
        let other = Sockets::bind(0, 0).unwrap();
        let before = d.sockets.port;
        let err = set(&mut d, &format!("listen_port={}", other.port)).unwrap_err();
        assert_eq!(err.errno, libc::EADDRINUSE);
        assert_eq!(d.sockets.port, before);
        // Moving to a free port works, and setting the same port again is a no-op.
        drop(other);
        let fresh = Sockets::bind(0, 0).unwrap();
        let free = fresh.port;
        drop(fresh);
        set(&mut d, &format!("listen_port={free}")).unwrap();
        assert_eq!(d.sockets.port, free);
        set(&mut d, &format!("listen_port={free}")).unwrap();
        assert!(d.get().contains(&format!("listen_port={free}\n")));
    }

    #[test]
    fn many_allowed_ips_read_back() {
        let mut d = device();
        let (_, p) = key(6);
        let mut body = format!("public_key={}\n", p.to_hex().as_str());
        for i in 0..5000u32 {
            let _ = writeln!(body, "allowed_ip=10.{}.{}.0/24", i >> 8, i & 255);
        }
        set(&mut d, &body).unwrap();
        let n = d.get().lines().filter(|l| l.starts_with("allowed_ip=")).count();
        assert_eq!(n, 5000);
    }
}
