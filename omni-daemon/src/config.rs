//! Settings of the Nucleus modes: the command-line flags of `--mode nucleus`
//! and of an edge (`--nucleus HOST:PORT --cluster NAME ...`), the TOML file
//! `--config FILE` holding the same settings, and their validation into a
//! [`Plan`]. Flags given on the command line override the file.
//!
//! Every error names the flag (or file key) at fault. The cluster secret is
//! kept in [`Zeroizing`] buffers and wiped once the cluster keys are derived.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use omni_core::PublicKey;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Where keys live unless `--identity-dir` says otherwise.
pub const DEFAULT_IDENTITY_DIR: &str = "/var/lib/omni-daemon";
pub const DEFAULT_INTERFACE: &str = "omni0";
pub const DEFAULT_PORT: u16 = 51820;
pub const DEFAULT_PREFIX_V4: u8 = 24;
pub const DEFAULT_PREFIX_V6: u8 = 64;
const MAX_CLUSTER_NAME: usize = 255;
const MAX_SECRET: usize = 1024;

/// The flags of the Nucleus modes (flattened into the top-level CLI).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct MeshArgs {
    /// Edge: the Nucleus to join, HOST:PORT (a name or an address; IPv6 in brackets).
    #[arg(long, value_name = "HOST:PORT")]
    pub nucleus: Option<String>,

    /// Edge: the cluster's name.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,

    /// Edge: the cluster's secret (omit it for an unauthenticated cluster).
    /// Visible to other local users in the process list: prefer `secret` in a
    /// 0600 `--config` file.
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,

    /// Edge: our virtual IPv4 address in the cluster.
    #[arg(long, value_name = "IPV4")]
    pub vip: Option<String>,

    /// Edge: prefix length (or dotted mask) of the cluster's IPv4 subnet [default: 24].
    #[arg(long, value_name = "BITS|MASK")]
    pub netmask: Option<String>,

    /// Edge: our virtual IPv6 address, ADDR[/PREFIX] [default prefix: 64];
    /// alone for an IPv6 cluster, with --vip for a dual-stack edge.
    #[arg(long, value_name = "IPV6[/PREFIX]")]
    pub vip6: Option<String>,

    /// Edge: the TUN interface to create [default: omni0].
    #[arg(long = "interface", id = "tun_interface", value_name = "IFNAME")]
    pub tun_interface: Option<String>,

    /// UDP port: the Nucleus's, or the edge's listen port (0: any) [default: 51820].
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Where the private key (0600) and pinned Nucleus keys are kept
    /// [default: /var/lib/omni-daemon].
    #[arg(long, value_name = "DIR")]
    pub identity_dir: Option<PathBuf>,

    /// Edge: the Nucleus's public key (base64, printed by the Nucleus at
    /// start). Without it the key is learned on first contact and pinned.
    #[arg(long, value_name = "B64")]
    pub nucleus_key: Option<String>,

    /// A TOML file with the same settings (keys as the flags, with `_`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Serve Prometheus metrics over HTTP on ADDR (e.g. 127.0.0.1:9184).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
}

impl MeshArgs {
    /// Whether any flag of the Nucleus modes was given.
    fn any(&self) -> bool {
        self.first_flag().is_some()
    }

    fn first_flag(&self) -> Option<&'static str> {
        [
            ("--nucleus", self.nucleus.is_some()),
            ("--cluster", self.cluster.is_some()),
            ("--secret", self.secret.is_some()),
            ("--vip", self.vip.is_some()),
            ("--netmask", self.netmask.is_some()),
            ("--vip6", self.vip6.is_some()),
            ("--interface", self.tun_interface.is_some()),
            ("--port", self.port.is_some()),
            ("--identity-dir", self.identity_dir.is_some()),
            ("--nucleus-key", self.nucleus_key.is_some()),
            ("--config", self.config.is_some()),
            ("--metrics", self.metrics.is_some()),
        ]
        .into_iter()
        .find_map(|(n, set)| set.then_some(n))
    }

    /// Takes the secret out (the caller wipes it).
    fn take_secret(&mut self) -> Option<Zeroizing<String>> {
        self.secret.take().map(Zeroizing::new)
    }
}

/// The settings of a `--config` file. Unknown keys are errors (a typo must
/// not silently drop a setting).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub mode: Option<String>,
    pub nucleus: Option<String>,
    pub cluster: Option<String>,
    pub secret: Option<String>,
    pub vip: Option<String>,
    pub netmask: Option<NetmaskValue>,
    pub vip6: Option<String>,
    pub interface: Option<String>,
    pub port: Option<u16>,
    pub identity_dir: Option<PathBuf>,
    pub nucleus_key: Option<String>,
    pub metrics: Option<String>,
}

/// `netmask = 24` or `netmask = "255.255.255.0"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NetmaskValue {
    Bits(i64),
    Text(String),
}

impl FileConfig {
    /// Parses the text of a config file.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.message().trim().to_string())
    }

    /// Reads and parses `path`. A file holding a secret must not be readable
    /// by others.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = Zeroizing::new(text);
        let mut cfg = Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if cfg.secret.is_some() {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map(|m| m.permissions().mode()).unwrap_or(0);
            if mode & 0o077 != 0 {
                // Wipe what we read before refusing.
                if let Some(s) = cfg.secret.take() {
                    drop(Zeroizing::new(s));
                }
                return Err(format!(
                    "{} holds a secret but is accessible by other users (mode {:04o}): chmod 600 it",
                    path.display(),
                    mode & 0o7777
                ));
            }
        }
        Ok(cfg)
    }

    fn take_secret(&mut self) -> Option<Zeroizing<String>> {
        self.secret.take().map(Zeroizing::new)
    }
}

/// The mode the user asked for (`--mode`, or `mode` in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeKind {
    Wg,
    Nucleus,
    Edge,
}

impl ModeKind {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "wg" => Ok(ModeKind::Wg),
            "nucleus" => Ok(ModeKind::Nucleus),
            "edge" => Ok(ModeKind::Edge),
            other => Err(format!("mode = {other:?}: expected \"nucleus\" or \"edge\"")),
        }
    }
}

/// What to run.
#[derive(Debug)]
pub enum Plan {
    /// The stock-tools WireGuard mode (no flag of this module was given).
    Wg,
    Nucleus(NucleusOptions),
    Edge(Box<EdgeOptions>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NucleusOptions {
    pub port: u16,
    pub identity_dir: PathBuf,
    pub metrics: Option<SocketAddr>,
}

/// An edge's settings, checked.
pub struct EdgeOptions {
    /// HOST:PORT as given (resolved at start).
    pub nucleus: String,
    pub nucleus_host: String,
    pub nucleus_port: u16,
    pub cluster: String,
    /// `None`: an unauthenticated cluster (anyone who knows the name joins).
    pub secret: Option<Zeroizing<String>>,
    /// The VIP registered with the Nucleus and its prefix length (`--vip`,
    /// or `--vip6` alone).
    pub vip: IpAddr,
    pub prefix: u8,
    /// With `--vip` and `--vip6` together (a dual-stack edge): the IPv6 VIP
    /// and its prefix, registered as the member's second VIP.
    pub vip2: Option<(IpAddr, u8)>,
    pub interface: String,
    pub port: u16,
    pub identity_dir: PathBuf,
    pub nucleus_key: Option<PublicKey>,
    pub metrics: Option<SocketAddr>,
}

impl std::fmt::Debug for EdgeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeOptions")
            .field("nucleus", &self.nucleus)
            .field("cluster", &self.cluster)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("vip", &self.vip)
            .field("prefix", &self.prefix)
            .field("vip2", &self.vip2)
            .field("interface", &self.interface)
            .field("port", &self.port)
            .field("identity_dir", &self.identity_dir)
            .field("nucleus_key", &self.nucleus_key)
            .field("metrics", &self.metrics)
            .finish()
    }
}

/// Turns the flags (and the `--config` file, if any) into a [`Plan`].
/// `mode`: `--mode` if given; `positional`: `wg` mode's interface argument.
pub fn resolve(mode: Option<ModeKind>, mut args: MeshArgs, positional: Option<&str>) -> Result<Plan, String> {
    let mut file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    resolve_with(mode, &mut args, &mut file, positional)
}

/// [`resolve`] with the file already parsed (for tests).
pub fn resolve_with(
    mode: Option<ModeKind>,
    args: &mut MeshArgs,
    file: &mut FileConfig,
    positional: Option<&str>,
) -> Result<Plan, String> {
    let file_mode = file.mode.as_deref().map(ModeKind::parse).transpose()?;
    let mode = match (mode, file_mode) {
        (Some(m), Some(f)) if m != f => {
            return Err(format!("--mode {m:?} contradicts mode = {f:?} in the config file").to_lowercase())
        }
        (Some(m), _) | (None, Some(m)) => m,
        (None, None) => {
            let edge_hint = args.nucleus.is_some()
                || file.nucleus.is_some()
                || args.cluster.is_some()
                || file.cluster.is_some()
                || args.vip.is_some()
                || file.vip.is_some()
                || args.vip6.is_some()
                || file.vip6.is_some();
            if edge_hint {
                ModeKind::Edge
            } else if args.any() {
                let flag = args.first_flag().unwrap_or("this flag");
                return Err(format!(
                    "{flag} needs --mode nucleus, or an edge's --nucleus HOST:PORT --cluster NAME --vip IP"
                ));
            } else {
                ModeKind::Wg
            }
        }
    };
    match mode {
        ModeKind::Wg => {
            if let Some(flag) = args.first_flag() {
                return Err(format!("{flag} is not a setting of wg mode"));
            }
            Ok(Plan::Wg)
        }
        ModeKind::Nucleus => {
            if let Some(p) = positional {
                return Err(format!("unexpected argument {p:?}: --mode nucleus creates no interface"));
            }
            let edge_only = [
                ("--nucleus / nucleus", args.nucleus.is_some() || file.nucleus.is_some()),
                ("--cluster / cluster", args.cluster.is_some() || file.cluster.is_some()),
                ("--secret / secret", args.secret.is_some() || file.secret.is_some()),
                ("--vip / vip", args.vip.is_some() || file.vip.is_some()),
                ("--netmask / netmask", args.netmask.is_some() || file.netmask.is_some()),
                ("--vip6 / vip6", args.vip6.is_some() || file.vip6.is_some()),
                ("--interface / interface", args.tun_interface.is_some() || file.interface.is_some()),
                ("--nucleus-key / nucleus_key", args.nucleus_key.is_some() || file.nucleus_key.is_some()),
            ];
            if let Some((flag, _)) = edge_only.iter().find(|(_, set)| *set) {
                // Wipe a secret that came along before refusing.
                drop(args.take_secret());
                drop(file.take_secret());
                return Err(format!("{flag} is an edge setting, not one of --mode nucleus"));
            }
            Ok(Plan::Nucleus(NucleusOptions {
                port: args.port.or(file.port).unwrap_or(DEFAULT_PORT),
                identity_dir: identity_dir(args, file),
                metrics: metrics(args, file)?,
            }))
        }
        ModeKind::Edge => {
            if let Some(p) = positional {
                drop(args.take_secret());
                drop(file.take_secret());
                return Err(format!("unexpected argument {p:?} (the edge's interface is --interface NAME)"));
            }
            let secret = match (args.take_secret(), file.take_secret()) {
                (Some(s), _) | (None, Some(s)) => Some(s),
                (None, None) => None,
            };
            edge(args, file, secret).map(|e| Plan::Edge(Box::new(e)))
        }
    }
}

fn identity_dir(args: &MeshArgs, file: &FileConfig) -> PathBuf {
    args.identity_dir.clone().or_else(|| file.identity_dir.clone()).unwrap_or_else(|| DEFAULT_IDENTITY_DIR.into())
}

fn metrics(args: &MeshArgs, file: &FileConfig) -> Result<Option<SocketAddr>, String> {
    args.metrics
        .as_deref()
        .or(file.metrics.as_deref())
        .map(|m| {
            m.parse::<SocketAddr>().map_err(|_| format!("--metrics {m:?}: expected ADDRESS:PORT, e.g. 127.0.0.1:9184"))
        })
        .transpose()
}

fn edge(args: &MeshArgs, file: &FileConfig, secret: Option<Zeroizing<String>>) -> Result<EdgeOptions, String> {
    let nucleus =
        args.nucleus.clone().or_else(|| file.nucleus.clone()).ok_or(
            "an edge needs --nucleus HOST:PORT (the Nucleus to join), e.g. --nucleus nucleus.example.com:51820",
        )?;
    let (nucleus_host, nucleus_port) = split_host_port(&nucleus)?;
    let cluster = args.cluster.clone().or_else(|| file.cluster.clone()).ok_or("an edge needs --cluster NAME")?;
    if cluster.is_empty() || cluster.len() > MAX_CLUSTER_NAME || cluster.chars().any(char::is_control) {
        return Err(format!("--cluster: the name must be 1 to {MAX_CLUSTER_NAME} bytes without control characters"));
    }
    if let Some(s) = &secret {
        if s.is_empty() {
            return Err("--secret is empty: give a secret, or omit --secret for an unauthenticated cluster".into());
        }
        if s.len() > MAX_SECRET {
            return Err(format!("--secret is longer than {MAX_SECRET} bytes"));
        }
    }
    let vip4 = args.vip.as_deref().or(file.vip.as_deref());
    let vip6 = args.vip6.as_deref().or(file.vip6.as_deref());
    let netmask = match (&args.netmask, &file.netmask) {
        (Some(m), _) => Some(NetmaskValue::Text(m.clone())),
        (None, m) => m.clone(),
    };
    // --vip (IPv4), --vip6 (IPv6), or both (dual stack: the IPv4 VIP is the
    // primary one, the IPv6 VIP the member's second VIP).
    let v4 = match vip4 {
        Some(v) => {
            let ip = parse_vip4(v)?;
            let prefix = match netmask {
                Some(m) => parse_netmask(&m)?,
                None => DEFAULT_PREFIX_V4,
            };
            Some((IpAddr::V4(ip), prefix))
        }
        None => {
            if netmask.is_some() && vip6.is_some() {
                return Err("--netmask is for --vip (IPv4); give the IPv6 prefix as --vip6 ADDR/PREFIX".into());
            }
            None
        }
    };
    let v6 = vip6.map(parse_vip6).transpose()?.map(|(ip, prefix)| (IpAddr::V6(ip), prefix));
    let ((vip, prefix), vip2) = match (v4, v6) {
        (Some(a), b) => (a, b),
        (None, Some(b)) => (b, None),
        (None, None) => return Err("an edge needs --vip IP (its address in the cluster), e.g. --vip 10.200.0.1".into()),
    };
    let interface =
        args.tun_interface.clone().or_else(|| file.interface.clone()).unwrap_or_else(|| DEFAULT_INTERFACE.to_string());
    crate::tun::validate_name(&interface).map_err(|e| format!("--interface: {e}"))?;
    let nucleus_key = args
        .nucleus_key
        .as_deref()
        .or(file.nucleus_key.as_deref())
        .map(|k| {
            PublicKey::from_base64(k.trim())
                .or_else(|_| PublicKey::from_hex(k.trim()))
                .map_err(|e| format!("--nucleus-key {k:?}: {e}"))
        })
        .transpose()?;
    Ok(EdgeOptions {
        nucleus,
        nucleus_host,
        nucleus_port,
        cluster,
        secret,
        vip,
        prefix,
        vip2,
        interface,
        port: args.port.or(file.port).unwrap_or(DEFAULT_PORT),
        identity_dir: identity_dir(args, file),
        nucleus_key,
        metrics: metrics(args, file)?,
    })
}

/// `host:port`, `1.2.3.4:port`, `[v6]:port`.
pub fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("--nucleus {s:?}: expected HOST:PORT, e.g. nucleus.example.com:51820 or [2001:db8::1]:51820");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(format!("--nucleus {s:?}: port 0 is not a port to reach"));
    }
    Ok((host.to_string(), port))
}

fn parse_vip4(v: &str) -> Result<Ipv4Addr, String> {
    if v.contains('/') {
        return Err(format!("--vip {v:?}: give the address alone and the prefix with --netmask"));
    }
    let ip: Ipv4Addr = v.parse().map_err(|_| format!("--vip {v:?}: not an IPv4 address (IPv6: --vip6)"))?;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
        return Err(format!("--vip {v}: not a unicast address"));
    }
    Ok(ip)
}

fn parse_vip6(v: &str) -> Result<(Ipv6Addr, u8), String> {
    let (addr, prefix) = match v.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (v, None),
    };
    let ip: Ipv6Addr = addr.parse().map_err(|_| format!("--vip6 {v:?}: not an IPv6 address"))?;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.to_ipv4_mapped().is_some() {
        return Err(format!("--vip6 {v}: not a unicast IPv6 address"));
    }
    let prefix = match prefix {
        Some(p) => match p.parse::<u8>() {
            Ok(n) if (1..=128).contains(&n) => n,
            _ => return Err(format!("--vip6 {v:?}: the prefix must be 1 to 128")),
        },
        None => DEFAULT_PREFIX_V6,
    };
    Ok((ip, prefix))
}

/// `24`, `"24"`, `"/24"` or `"255.255.255.0"`.
fn parse_netmask(m: &NetmaskValue) -> Result<u8, String> {
    let bad = |m: &str| format!("--netmask {m:?}: expected a prefix length 1 to 32 or a mask like 255.255.255.0");
    match m {
        NetmaskValue::Bits(n) => {
            u8::try_from(*n).ok().filter(|n| (1..=32).contains(n)).ok_or_else(|| bad(&n.to_string()))
        }
        NetmaskValue::Text(t) => {
            let s = t.trim().trim_start_matches('/');
            if let Ok(n) = s.parse::<u8>() {
                return if (1..=32).contains(&n) { Ok(n) } else { Err(bad(t)) };
            }
            let mask: Ipv4Addr = s.parse().map_err(|_| bad(t))?;
            let bits = u32::from(mask);
            let ones = bits.leading_ones();
            if bits.checked_shl(ones).unwrap_or(0) != 0 || ones == 0 {
                return Err(format!("--netmask {t:?}: the mask's one bits must be contiguous"));
            }
            u8::try_from(ones).map_err(|_| bad(t))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The top-level CLI's shape: positional interface, --mode, the mesh flags.
    #[derive(Debug, Parser)]
    struct TestCli {
        interface: Option<String>,
        #[arg(long)]
        mode: Option<String>,
        #[command(flatten)]
        mesh: MeshArgs,
    }

    fn plan(argv: &[&str]) -> Result<Plan, String> {
        plan_with(argv, "")
    }

    fn plan_with(argv: &[&str], toml: &str) -> Result<Plan, String> {
        let cli = TestCli::try_parse_from(std::iter::once("omni-daemon").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        let mode = cli.mode.as_deref().map(ModeKind::parse).transpose()?;
        let mut file = FileConfig::parse(toml)?;
        let mut mesh = cli.mesh;
        resolve_with(mode, &mut mesh, &mut file, cli.interface.as_deref())
    }

    fn edge(argv: &[&str]) -> EdgeOptions {
        match plan(argv) {
            Ok(Plan::Edge(e)) => *e,
            other => panic!("{other:?}"),
        }
    }

    fn err(argv: &[&str]) -> String {
        match plan(argv) {
            Err(e) => e,
            Ok(p) => panic!("accepted: {p:?}"),
        }
    }

    #[test]
    fn the_readme_commands() {
        match plan(&["--mode", "nucleus", "--port", "51820"]).unwrap() {
            Plan::Nucleus(n) => {
                assert_eq!(n.port, 51820);
                assert_eq!(n.identity_dir, PathBuf::from(DEFAULT_IDENTITY_DIR));
                assert_eq!(n.metrics, None);
            }
            p => panic!("{p:?}"),
        }
        let e = edge(&["--nucleus", "nucleus.example.com:51820", "--cluster", "my-network", "--vip", "10.200.0.1"]);
        assert_eq!(e.nucleus_host, "nucleus.example.com");
        assert_eq!(e.nucleus_port, 51820);
        assert_eq!(e.cluster, "my-network");
        assert!(e.secret.is_none());
        assert_eq!(e.vip, IpAddr::from([10, 200, 0, 1]));
        assert_eq!(e.prefix, 24);
        assert_eq!(e.interface, "omni0");
        assert_eq!(e.port, 51820);
        let e = edge(&[
            "--nucleus",
            "nucleus.example.com:51820",
            "--cluster",
            "my-network",
            "--secret",
            "your-secure-secret-here",
            "--vip",
            "10.200.0.1",
        ]);
        assert_eq!(e.secret.as_deref().map(String::as_str), Some("your-secure-secret-here"));
        // The secret never shows in Debug output.
        assert!(!format!("{e:?}").contains("your-secure"));
        // No flag at all: wg mode (its interface argument is checked by main).
        assert!(matches!(plan(&["wg0"]), Ok(Plan::Wg)));
        assert!(matches!(plan(&[]), Ok(Plan::Wg)));
    }

    #[test]
    fn every_option() {
        let key = omni_core::StaticSecret::from_bytes([3; 32]).public_key::<omni_core::crypto::DefaultProvider>();
        let b64 = key.to_base64();
        let e = edge(&[
            "--mode",
            "edge",
            "--nucleus",
            "[2001:db8::1]:4000",
            "--cluster",
            "lab",
            "--vip",
            "10.9.8.7",
            "--netmask",
            "255.255.0.0",
            "--interface",
            "omniA",
            "--port",
            "0",
            "--identity-dir",
            "/tmp/x",
            "--nucleus-key",
            b64.as_str(),
            "--metrics",
            "127.0.0.1:9184",
        ]);
        assert_eq!((e.nucleus_host.as_str(), e.nucleus_port), ("2001:db8::1", 4000));
        assert_eq!(e.prefix, 16);
        assert_eq!(e.interface, "omniA");
        assert_eq!(e.port, 0);
        assert_eq!(e.identity_dir, PathBuf::from("/tmp/x"));
        assert_eq!(e.nucleus_key, Some(key));
        assert_eq!(e.metrics, Some("127.0.0.1:9184".parse().unwrap()));
        let e = edge(&["--nucleus", "n:1", "--cluster", "c", "--vip6", "fd00:200::1"]);
        assert_eq!((e.vip, e.prefix), ("fd00:200::1".parse().unwrap(), 64));
        let e = edge(&["--nucleus", "n:1", "--cluster", "c", "--vip6", "fd00:200::1/48"]);
        assert_eq!(e.prefix, 48);
        assert_eq!(e.vip2, None);
        // Dual stack: the IPv4 VIP first, the IPv6 one second, each with its prefix.
        let e = edge(&[
            "--nucleus",
            "n:1",
            "--cluster",
            "c",
            "--vip",
            "10.0.0.1",
            "--netmask",
            "16",
            "--vip6",
            "fd00::1/56",
        ]);
        assert_eq!((e.vip, e.prefix), (IpAddr::from([10, 0, 0, 1]), 16));
        assert_eq!(e.vip2, Some(("fd00::1".parse().unwrap(), 56)));
        let e = edge(&["--nucleus", "n:1", "--cluster", "c", "--vip", "10.0.0.1", "--netmask", "/8"]);
        assert_eq!(e.prefix, 8);
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        let base = ["--nucleus", "n.example:51820", "--cluster", "c"];
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            err(&v)
        };
        assert!(with(&[]).contains("--vip"), "{}", with(&[]));
        assert!(with(&["--vip", "10.0.0.256"]).contains("not an IPv4 address"));
        assert!(with(&["--vip", "10.0.0.1/24"]).contains("--netmask"));
        assert!(with(&["--vip", "224.0.0.1"]).contains("unicast"));
        assert!(with(&["--vip", "10.0.0.1", "--netmask", "33"]).contains("--netmask"));
        assert!(with(&["--vip", "10.0.0.1", "--netmask", "255.0.255.0"]).contains("contiguous"));
        assert!(with(&["--vip", "10.0.0.1", "--vip6", "fd00::1/129"]).contains("1 to 128"));
        assert!(with(&["--vip", "10.0.0.1/8", "--vip6", "fd00::1"]).contains("--netmask"));
        assert!(with(&["--vip6", "fd00::1/129"]).contains("1 to 128"));
        assert!(with(&["--vip6", "fd00::1", "--netmask", "24"]).contains("--vip6 ADDR/PREFIX"));
        assert!(with(&["--vip", "10.0.0.1", "--secret", ""]).contains("--secret is empty"));
        assert!(with(&["--vip", "10.0.0.1", "--nucleus-key", "nope"]).contains("--nucleus-key"));
        assert!(with(&["--vip", "10.0.0.1", "--interface", "a/b"]).contains("--interface"));
        assert!(with(&["--vip", "10.0.0.1", "--metrics", "9184"]).contains("--metrics"));
        assert!(err(&["--nucleus", "n.example", "--cluster", "c", "--vip", "10.0.0.1"]).contains("HOST:PORT"));
        assert!(err(&["--nucleus", "n:0", "--cluster", "c", "--vip", "10.0.0.1"]).contains("port 0"));
        assert!(err(&["--nucleus", "2001:db8::1:5", "--cluster", "c", "--vip", "10.0.0.1"]).contains("HOST:PORT"));
        assert!(err(&["--nucleus", "n:1", "--vip", "10.0.0.1"]).contains("--cluster"));
        assert!(err(&["--cluster", "c", "--vip", "10.0.0.1"]).contains("--nucleus HOST:PORT"));
        assert!(err(&["--nucleus", "n:1", "--cluster", "", "--vip", "10.0.0.1"]).contains("--cluster"));
        // Edge flags in nucleus mode, nucleus flags in wg mode, a port out of range.
        assert!(err(&["--mode", "nucleus", "--cluster", "c"]).contains("edge setting"));
        assert!(err(&["--mode", "nucleus", "--secret", "s"]).contains("edge setting"));
        assert!(err(&["--mode", "nucleus", "wg0"]).contains("unexpected argument"));
        assert!(err(&["--mode", "wg", "--vip", "10.0.0.1"]).contains("not a setting of wg mode"));
        assert!(err(&["--port", "51820"]).contains("--mode nucleus"));
        assert!(err(&["--mode", "nucleus", "--port", "70000"]).contains("70000"));
        assert!(err(&["wg0", "--nucleus", "n:1", "--cluster", "c", "--vip", "10.0.0.1"]).contains("--interface NAME"));
    }

    #[test]
    fn toml_config() {
        let toml = r#"
            nucleus = "203.0.113.1:51820"
            cluster = "lab"
            secret = "s3cret"
            vip = "10.200.0.3"
            netmask = 16
            interface = "omniB"
            port = 40000
            identity_dir = "/tmp/id"
            metrics = "[::1]:9184"
        "#;
        let Ok(Plan::Edge(e)) = plan_with(&[], toml) else { panic!() };
        assert_eq!(e.nucleus, "203.0.113.1:51820");
        assert_eq!(e.secret.as_deref().map(String::as_str), Some("s3cret"));
        assert_eq!((e.vip, e.prefix, e.port), (IpAddr::from([10, 200, 0, 3]), 16, 40000));
        assert_eq!(e.interface, "omniB");
        assert_eq!(e.metrics, Some("[::1]:9184".parse().unwrap()));
        // Flags override the file.
        let Ok(Plan::Edge(e)) = plan_with(&["--vip", "10.200.0.9", "--netmask", "24", "--secret", "other"], toml)
        else {
            panic!()
        };
        assert_eq!((e.vip, e.prefix), (IpAddr::from([10, 200, 0, 9]), 24));
        assert_eq!(e.secret.as_deref().map(String::as_str), Some("other"));
        // A nucleus config.
        let Ok(Plan::Nucleus(n)) = plan_with(&[], "mode = \"nucleus\"\nport = 3478\nidentity_dir = \"/srv/n\"") else {
            panic!()
        };
        assert_eq!((n.port, n.identity_dir), (3478, PathBuf::from("/srv/n")));
        assert!(matches!(plan_with(&["--mode", "nucleus"], "mode = \"nucleus\""), Ok(Plan::Nucleus(_))));
        // Mistakes.
        let e = plan_with(&[], "nucleus = \"n:1\"\ncluster = \"c\"\nvip = \"10.0.0.1\"\nvpi = 3").unwrap_err();
        assert!(e.contains("vpi"), "{e}");
        let e = plan_with(&[], "port = \"x\"").unwrap_err();
        assert!(!e.is_empty());
        let e = plan_with(&[], "mode = \"hub\"").unwrap_err();
        assert!(e.contains("hub"), "{e}");
        let e = plan_with(&["--mode", "edge"], "mode = \"nucleus\"").unwrap_err();
        assert!(e.contains("contradicts"), "{e}");
        let e = plan_with(&[], "mode = \"nucleus\"\nvip = \"10.0.0.1\"").unwrap_err();
        assert!(e.contains("edge setting"), "{e}");
        let e = plan_with(&[], "nucleus = \"n:1\"\ncluster = \"c\"\nvip = \"10.0.0.1\"\nnetmask = 40").unwrap_err();
        assert!(e.contains("--netmask"), "{e}");
        let e = plan_with(&[], "nucleus = [").unwrap_err();
        assert!(!e.is_empty());
    }

    #[test]
    fn config_file_with_a_secret_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("omni-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("edge.toml");
        std::fs::write(&path, "nucleus = \"n:1\"\ncluster = \"c\"\nsecret = \"s\"\nvip = \"10.0.0.1\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut args = MeshArgs { config: Some(path.clone()), ..MeshArgs::default() };
        let e = resolve(None, args.clone(), None).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        args.vip = Some("10.0.0.2".into());
        let Ok(Plan::Edge(e)) = resolve(None, args, None) else { panic!() };
        assert_eq!(e.vip, IpAddr::from([10, 0, 0, 2]));
        let e = resolve(None, MeshArgs { config: Some(dir.join("missing.toml")), ..MeshArgs::default() }, None)
            .unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
