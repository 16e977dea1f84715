//! The cross-platform userspace API (wireguard.com/xplatform): the text
//! protocol `wg` speaks over `/var/run/wireguard/IFNAME.sock`.
//!
//! - `get=1\n\n` → `key=value` lines describing the device, then `errno=0\n\n`.
//! - `set=1\n` + `key=value` lines + `\n` → `errno=N\n\n`.
//!
//! A `set` is parsed completely before anything is applied: a malformed
//! request changes nothing and answers the errno wireguard-go would
//! (`EINVAL` for a bad key or value, `EPROTO` for a line without `=`).
//! Applying it happens in [`crate::device::Device::apply`] under the device lock.

use std::fs;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use omni_core::{AllowedIp, PresharedKey, PublicKey, StaticSecret};
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use crate::event_loop::Shared;

pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// Longest line we accept (an allowed IP or key line is < 100 bytes).
const MAX_LINE: usize = 4096;

/// A failed UAPI request: the positive errno sent back as `errno=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UapiError {
    pub errno: i32,
    pub message: String,
}

impl UapiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        UapiError { errno: libc::EINVAL, message: message.into() }
    }
}

impl std::fmt::Display for UapiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errno {})", self.message, self.errno)
    }
}

/// An interface-wide setting, in request order.
#[derive(Debug)]
pub enum DeviceOp {
    /// `None`: the all-zero key, which removes our identity.
    PrivateKey(Option<StaticSecret>),
    ListenPort(u16),
    Fwmark(u32),
    ReplacePeers,
}

/// A per-peer setting, in request order.
#[derive(Debug)]
pub enum PeerOp {
    Remove,
    UpdateOnly,
    PresharedKey(PresharedKey),
    Endpoint(SocketAddr),
    PersistentKeepalive(u16),
    ReplaceAllowedIps,
    AddAllowedIp(AllowedIp),
    /// `allowed_ip=-prefix` (newer wg tools): remove one prefix.
    RemoveAllowedIp(AllowedIp),
}

#[derive(Debug)]
pub struct PeerBlock {
    pub public_key: PublicKey,
    pub ops: Vec<PeerOp>,
}

impl PeerBlock {
    pub fn update_only(&self) -> bool {
        self.ops.iter().any(|op| matches!(op, PeerOp::UpdateOnly))
    }
}

/// A parsed `set=1` request.
#[derive(Debug, Default)]
pub struct SetRequest {
    pub device: Vec<DeviceOp>,
    pub peers: Vec<PeerBlock>,
}

fn parse_true(key: &str, value: &str) -> Result<(), UapiError> {
    if value == "true" {
        Ok(())
    } else {
        Err(UapiError::invalid(format!("{key}: invalid value {value:?} (only \"true\" is accepted)")))
    }
}

/// Decimal digits only (Go's strconv.ParseUint: no sign, no spaces).
fn parse_uint<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, UapiError> {
    let bad = || UapiError::invalid(format!("{key}: invalid number {value:?}"));
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

fn parse_endpoint(value: &str) -> Result<SocketAddr, UapiError> {
    let bad = || UapiError::invalid(format!("endpoint: invalid address {value:?}"));
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // A link-local IPv6 address with a named zone, "[fe80::1%eth0]:51820"
    // (numeric zones parse above).
    let (host, port) = value.strip_prefix('[').and_then(|v| v.rsplit_once("]:")).ok_or_else(bad)?;
    let (ip, zone) = host.split_once('%').ok_or_else(bad)?;
    let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| bad())?;
    let port: u16 = parse_uint("endpoint", port).map_err(|_| bad())?;
    let scope = nix::net::if_::if_nametoindex(zone).map_err(|_| bad())?;
    Ok(SocketAddr::V6(std::net::SocketAddrV6::new(ip, port, 0, scope)))
}

fn parse_prefix(value: &str) -> Result<AllowedIp, UapiError> {
    // Like netip.ParsePrefix: the length is mandatory.
    if !value.contains('/') {
        return Err(UapiError::invalid(format!("allowed_ip: missing prefix length in {value:?}")));
    }
    value.parse().map_err(|_| UapiError::invalid(format!("allowed_ip: invalid prefix {value:?}")))
}

/// Incremental parser for the lines of a `set=1` request (without the
/// terminating blank line). Keeps the first error and ignores what follows,
/// so the caller can read up to the blank line and stay in sync.
#[derive(Debug, Default)]
pub struct SetParser {
    request: SetRequest,
    error: Option<UapiError>,
}

impl SetParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn line(&mut self, line: &str) {
        if self.error.is_none() {
            if let Err(e) = self.parse_line(line) {
                self.error = Some(e);
            }
        }
    }

    pub fn finish(self) -> Result<SetRequest, UapiError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.request),
        }
    }

    fn parse_line(&mut self, line: &str) -> Result<(), UapiError> {
        let Some((key, value)) = line.split_once('=') else {
            // The line is not echoed: it might be a mangled secret.
            return Err(UapiError { errno: libc::EPROTO, message: format!("line without '=' ({} bytes)", line.len()) });
        };
        if key == "public_key" {
            let public_key =
                PublicKey::from_hex(value).map_err(|e| UapiError::invalid(format!("public_key: {e}: {value:?}")))?;
            self.request.peers.push(PeerBlock { public_key, ops: Vec::new() });
            return Ok(());
        }
        let Some(peer) = self.request.peers.last_mut() else {
            let op = match key {
                // Secrets never go into messages.
                "private_key" => DeviceOp::PrivateKey(
                    Some(StaticSecret::from_hex(value).map_err(|e| UapiError::invalid(format!("private_key: {e}")))?)
                        .filter(|k| !k.is_zero()),
                ),
                "listen_port" => DeviceOp::ListenPort(parse_uint(key, value)?),
                "fwmark" => DeviceOp::Fwmark(parse_uint(key, value)?),
                "replace_peers" => {
                    parse_true(key, value)?;
                    DeviceOp::ReplacePeers
                }
                _ => return Err(UapiError::invalid(format!("invalid device key {key:?}"))),
            };
            self.request.device.push(op);
            return Ok(());
        };
        let op = match key {
            "remove" => {
                parse_true(key, value)?;
                PeerOp::Remove
            }
            "update_only" => {
                parse_true(key, value)?;
                PeerOp::UpdateOnly
            }
            "preshared_key" => PeerOp::PresharedKey(
                PresharedKey::from_hex(value).map_err(|e| UapiError::invalid(format!("preshared_key: {e}")))?,
            ),
            "endpoint" => PeerOp::Endpoint(parse_endpoint(value)?),
            "persistent_keepalive_interval" => PeerOp::PersistentKeepalive(parse_uint(key, value)?),
            "replace_allowed_ips" => {
                parse_true(key, value)?;
                PeerOp::ReplaceAllowedIps
            }
            "allowed_ip" => match value.strip_prefix('-') {
                Some(v) => PeerOp::RemoveAllowedIp(parse_prefix(v)?),
                None => PeerOp::AddAllowedIp(parse_prefix(value)?),
            },
            "protocol_version" => {
                if value != "1" {
                    return Err(UapiError::invalid(format!("unsupported protocol_version {value:?}")));
                }
                return Ok(());
            }
            _ => return Err(UapiError::invalid(format!("invalid peer key {key:?}"))),
        };
        peer.ops.push(op);
        Ok(())
    }
}

/// Parses a whole `set=1` body (lines up to, not including, the blank line).
#[cfg(test)]
pub fn parse_set(body: &str) -> Result<SetRequest, UapiError> {
    let mut p = SetParser::new();
    for line in body.lines() {
        p.line(line);
    }
    p.finish()
}

/// Reads one `\n`-terminated line (without the newline). `None` at EOF
/// before any byte. Lines longer than [`MAX_LINE`] are a protocol error.
fn read_line(r: &mut impl BufRead) -> io::Result<Option<Zeroizing<String>>> {
    let mut buf = Zeroizing::new(Vec::new());
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            if buf.is_empty() {
                return Ok(None);
            }
            break;
        }
        if let Some(i) = avail.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&avail[..i]);
            r.consume(i + 1);
            break;
        }
        let n = avail.len();
        buf.extend_from_slice(avail);
        r.consume(n);
        if buf.len() > MAX_LINE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "UAPI line too long"));
        }
    }
    if buf.len() > MAX_LINE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "UAPI line too long"));
    }
    Ok(Some(Zeroizing::new(String::from_utf8_lossy(&buf).into_owned())))
}

/// Serves one connection: any number of get/set operations until EOF.
pub fn handle_connection(stream: UnixStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    loop {
        let Some(op) = read_line(&mut reader)? else { return Ok(()) };
        let result = match op.as_str() {
            "get=1" => match read_line(&mut reader)? {
                Some(l) if l.is_empty() => {
                    let answer = shared.lock().get();
                    writer.write_all(answer.as_bytes())?;
                    Ok(())
                }
                _ => Err(UapiError::invalid("trailing data after get=1")),
            },
            "set=1" => {
                let mut parser = SetParser::new();
                while let Some(line) = read_line(&mut reader)? {
                    if line.is_empty() {
                        break;
                    }
                    parser.line(&line);
                }
                let result = parser.finish().and_then(|req| shared.lock().apply(req));
                shared.wake();
                result
            }
            other => {
                // Only the part before '=' is logged: the line might hold a secret.
                let name: String = other.split('=').next().unwrap_or("").chars().take(32).collect();
                warn!("invalid UAPI operation {name:?}; closing connection");
                return Ok(());
            }
        };
        let errno = match result {
            Ok(()) => 0,
            Err(e) => {
                info!("UAPI {}: {}", op.as_str(), e);
                e.errno
            }
        };
        write!(writer, "errno={errno}\n\n")?;
        writer.flush()?;
    }
}

/// The listening UAPI socket; removes its file on [`UapiSocket::remove`].
#[derive(Debug)]
pub struct UapiSocket {
    listener: UnixListener,
    path: PathBuf,
    inode: (u64, u64),
}

impl UapiSocket {
    /// Binds `/var/run/wireguard/NAME.sock` (owner-only: the process umask is 077).
    pub fn bind(interface: &str) -> io::Result<Self> {
        Self::bind_in(Path::new(SOCKET_DIR), interface)
    }

    pub fn bind_in(dir: &Path, interface: &str) -> io::Result<Self> {
        if !dir.is_dir() {
            // World-listable like wireguard-go's (the sockets themselves are 0700).
            fs::create_dir_all(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        }
        let path = dir.join(format!("{interface}.sock"));
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running daemon", path.display()),
                ));
            }
            fs::remove_file(&path)?; // stale, from a daemon that died
        }
        let listener = UnixListener::bind(&path)?;
        let meta = fs::metadata(&path)?;
        Ok(UapiSocket { listener, path, inode: (meta.dev(), meta.ino()) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A handle that can remove the socket file later (the listener itself
    /// moves into the server thread).
    pub fn remover(&self) -> SocketFile {
        SocketFile { path: self.path.clone(), inode: self.inode }
    }

    /// Accepts connections forever, one thread per connection.
    pub fn serve(self, shared: Arc<Shared>) {
        for conn in self.listener.incoming() {
            match conn {
                Ok(stream) => {
                    let shared = shared.clone();
                    let spawned = std::thread::Builder::new().name("uapi-conn".into()).spawn(move || {
                        if let Err(e) = handle_connection(stream, &shared) {
                            debug!("UAPI connection: {e}");
                        }
                    });
                    if let Err(e) = spawned {
                        warn!("cannot spawn UAPI connection thread: {e}");
                    }
                }
                Err(e) => {
                    warn!("UAPI accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// The socket's path, for removal at exit.
#[derive(Debug, Clone)]
pub struct SocketFile {
    path: PathBuf,
    inode: (u64, u64),
}

impl SocketFile {
    /// Removes the socket file unless another daemon has replaced it since.
    pub fn remove(&self) {
        if let Ok(meta) = fs::metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.inode {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUB1: &str = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
    const PRIV: &str = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";

    fn errno(body: &str) -> i32 {
        parse_set(body).map(|_| 0).unwrap_or_else(|e| e.errno)
    }

    #[test]
    fn every_device_key() {
        let r = parse_set(&format!("private_key={PRIV}\nlisten_port=51820\nfwmark=4294967295\nreplace_peers=true"))
            .unwrap();
        assert!(matches!(&r.device[0], DeviceOp::PrivateKey(Some(_))));
        assert!(matches!(r.device[1], DeviceOp::ListenPort(51820)));
        assert!(matches!(r.device[2], DeviceOp::Fwmark(u32::MAX)));
        assert!(matches!(r.device[3], DeviceOp::ReplacePeers));
        assert!(r.peers.is_empty());
        // The all-zero key clears the identity.
        let r = parse_set(&format!("private_key={}", "0".repeat(64))).unwrap();
        assert!(matches!(r.device[0], DeviceOp::PrivateKey(None)));
        assert!(matches!(parse_set("listen_port=0").unwrap().device[0], DeviceOp::ListenPort(0)));
    }

    #[test]
    fn every_peer_key() {
        let body = format!(
            "public_key={PUB1}\nupdate_only=true\nremove=true\npreshared_key={psk}\nendpoint=192.168.241.2:51820\n\
             endpoint=[fd00:241::2]:51821\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
             allowed_ip=10.241.0.2/32\nallowed_ip=fd00:aa::/64\nallowed_ip=-10.0.0.0/8\nprotocol_version=1",
            psk = "11".repeat(32)
        );
        let r = parse_set(&body).unwrap();
        assert_eq!(r.peers.len(), 1);
        let p = &r.peers[0];
        assert_eq!(p.public_key, PublicKey::from_hex(PUB1).unwrap());
        assert!(p.update_only());
        let ops = &p.ops;
        assert!(matches!(ops[0], PeerOp::UpdateOnly));
        assert!(matches!(ops[1], PeerOp::Remove));
        assert!(matches!(&ops[2], PeerOp::PresharedKey(k) if k.to_hex().as_str() == "11".repeat(32)));
        assert!(matches!(ops[3], PeerOp::Endpoint(e) if e == "192.168.241.2:51820".parse().unwrap()));
        assert!(matches!(ops[4], PeerOp::Endpoint(e) if e == "[fd00:241::2]:51821".parse().unwrap()));
        // Zones: numeric, or an interface name.
        let r = parse_set(&format!("public_key={PUB1}\nendpoint=[fe80::1%1]:7\nendpoint=[fe80::1%lo]:7")).unwrap();
        for op in &r.peers[0].ops {
            assert!(matches!(op, PeerOp::Endpoint(std::net::SocketAddr::V6(a)) if a.scope_id() == 1 && a.port() == 7));
        }
        assert!(matches!(ops[5], PeerOp::PersistentKeepalive(25)));
        assert!(matches!(ops[6], PeerOp::ReplaceAllowedIps));
        assert!(matches!(ops[7], PeerOp::AddAllowedIp(a) if a == "10.241.0.2/32".parse().unwrap()));
        assert!(matches!(ops[8], PeerOp::AddAllowedIp(a) if a == "fd00:aa::/64".parse().unwrap()));
        assert!(matches!(ops[9], PeerOp::RemoveAllowedIp(a) if a == "10.0.0.0/8".parse().unwrap()));
        assert_eq!(ops.len(), 10, "protocol_version=1 is accepted and needs no action");
    }

    #[test]
    fn several_peers_keep_their_own_settings() {
        let pub2 = "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376";
        let r = parse_set(&format!(
            "public_key={PUB1}\nallowed_ip=10.0.0.1/32\npublic_key={pub2}\nallowed_ip=10.0.0.2/32\nallowed_ip=10.0.0.3/32"
        ))
        .unwrap();
        assert_eq!(r.peers.len(), 2);
        assert_eq!(r.peers[0].ops.len(), 1);
        assert_eq!(r.peers[1].ops.len(), 2);
    }

    #[test]
    fn bad_input_answers_errno() {
        const EINVAL: i32 = 22;
        const EPROTO: i32 = 71;
        // Unknown keys, at device and at peer level.
        assert_eq!(errno("bogus=1"), EINVAL);
        assert_eq!(errno(&format!("public_key={PUB1}\nbogus=1")), EINVAL);
        // Device keys are not peer keys and vice versa.
        assert_eq!(errno(&format!("public_key={PUB1}\nlisten_port=1")), EINVAL);
        assert_eq!(errno("endpoint=1.2.3.4:5"), EINVAL);
        // A line without '='.
        assert_eq!(errno("listen_port"), EPROTO);
        // Bad keys: length, alphabet, base64 where hex is expected.
        assert_eq!(errno("private_key=abcd"), EINVAL);
        assert_eq!(errno(&format!("private_key={}", "zz".repeat(32))), EINVAL);
        assert_eq!(errno("public_key=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), EINVAL);
        assert_eq!(errno(&format!("public_key={PUB1}\npreshared_key=xyz")), EINVAL);
        // Numbers.
        assert_eq!(errno("listen_port=65536"), EINVAL);
        assert_eq!(errno("listen_port=-1"), EINVAL);
        assert_eq!(errno("listen_port=+5"), EINVAL);
        assert_eq!(errno("listen_port="), EINVAL);
        assert_eq!(errno("fwmark=4294967296"), EINVAL);
        assert_eq!(errno("fwmark=0x10"), EINVAL);
        assert_eq!(errno(&format!("public_key={PUB1}\npersistent_keepalive_interval=70000")), EINVAL);
        // Booleans accept only "true".
        assert_eq!(errno("replace_peers=false"), EINVAL);
        for key in ["remove", "update_only", "replace_allowed_ips"] {
            assert_eq!(errno(&format!("public_key={PUB1}\n{key}=yes")), EINVAL);
        }
        // Endpoints.
        for bad in ["1.2.3.4", "1.2.3.4:", "1.2.3.4:99999", "fd00::1:80", "[fd00::1]", "example.com:51820", ""] {
            assert_eq!(errno(&format!("public_key={PUB1}\nendpoint={bad}")), EINVAL, "{bad}");
        }
        assert_eq!(errno(&format!("public_key={PUB1}\nendpoint=[fe80::1%no-such-if]:5")), EINVAL);
        // Allowed IPs.
        for bad in ["10.0.0.1", "10.0.0.0/33", "fd00::/129", "10.0.0.0/-1", "10.0.0.0/+8", "x/8", "-"] {
            assert_eq!(errno(&format!("public_key={PUB1}\nallowed_ip={bad}")), EINVAL, "{bad}");
        }
        assert_eq!(errno(&format!("public_key={PUB1}\nprotocol_version=2")), EINVAL);
    }

    #[test]
    fn first_error_wins_and_later_lines_are_ignored() {
        let mut p = SetParser::new();
        p.line("bogus=1");
        p.line("listen_port");
        p.line("listen_port=5");
        assert_eq!(p.finish().unwrap_err().errno, libc::EINVAL);
    }

    #[test]
    fn errors_never_echo_secrets() {
        let secret = "ab".repeat(31) + "zz";
        let e = parse_set(&format!("private_key={secret}")).unwrap_err();
        assert!(!e.message.contains(&secret), "{}", e.message);
        let e = parse_set(&format!("public_key={PUB1}\npreshared_key={secret}")).unwrap_err();
        assert!(!e.message.contains(&secret), "{}", e.message);
        let e = parse_set(&secret).unwrap_err();
        assert!(!e.message.contains(&secret), "{}", e.message);
    }

    /// Runs a whole conversation through `handle_connection`.
    fn converse(shared: &Shared, request: &str) -> String {
        use std::io::Read;
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(request.as_bytes()).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        handle_connection(server, shared).unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn connection_framing() {
        let device =
            crate::device::Device::new(crate::clock::Clock::new(), crate::udp::Sockets::bind(0, 0).unwrap(), 1420);
        let shared = Shared::new(device).unwrap();
        let port = shared.lock().sockets.port;
        // get: the state, then exactly one errno line and a blank line.
        assert_eq!(converse(&shared, "get=1\n\n"), format!("listen_port={port}\nerrno=0\n\n"));
        // Several operations on one connection; a bad set changes nothing.
        let answer = converse(
            &shared,
            &format!("set=1\nfwmark=3\nbogus=1\n\nset=1\npublic_key={PUB1}\nallowed_ip=10.0.0.0/8\n\nget=1\n\n"),
        );
        assert_eq!(
            answer,
            format!(
                "errno=22\n\nerrno=0\n\nlisten_port={port}\npublic_key={PUB1}\npreshared_key={}\n\
                 protocol_version=1\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\n\
                 rx_bytes=0\npersistent_keepalive_interval=0\nallowed_ip=10.0.0.0/8\nerrno=0\n\n",
                "0".repeat(64)
            )
        );
        // Garbage after get=1, a line without '=', then an unknown operation closes.
        assert_eq!(converse(&shared, "get=1\nx\nset=1\nlisten_port\n\nhello\nget=1\n\n"), "errno=22\n\nerrno=71\n\n");
        // A set cut short by EOF is still applied, as wireguard-go does.
        assert_eq!(converse(&shared, "set=1\nfwmark=9\n"), "errno=0\n\n");
        assert!(shared.lock().get().contains("fwmark=9\n"));
    }

    #[test]
    fn line_reader_limits_and_eof() {
        let mut r = io::Cursor::new(b"get=1\n\nlast".to_vec());
        assert_eq!(read_line(&mut r).unwrap().as_deref().map(String::as_str), Some("get=1"));
        assert_eq!(read_line(&mut r).unwrap().as_deref().map(String::as_str), Some(""));
        assert_eq!(read_line(&mut r).unwrap().as_deref().map(String::as_str), Some("last"));
        assert!(read_line(&mut r).unwrap().is_none());
        let mut long = io::Cursor::new(vec![b'a'; MAX_LINE + 10]);
        assert!(read_line(&mut long).is_err());
    }
}
