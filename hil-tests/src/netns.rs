//! Network namespaces, child processes that die with their guard, and a
//! userspace WireGuard host (wireguard-go or omni-daemon) configured with the
//! stock `wg` tool inside a namespace of its own.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Stops (and reaps) the child when dropped, also when a test fails or
/// panics: SIGTERM first (daemons then remove their sockets), SIGKILL if it
/// is still there after 2 s.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    pub fn is_running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
            let end = Instant::now() + Duration::from_secs(2);
            while Instant::now() < end && self.is_running() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A network namespace with `lo` up, deleted when dropped.
pub struct Netns(pub String);

impl Netns {
    pub fn create(name: &str) -> Result<Netns, String> {
        if !run_ok(&["ip", "netns", "add", name]) {
            return Err("cannot create a network namespace (root needed)".into());
        }
        let ns = Netns(name.into());
        if !run_ok(&["ip", "-n", name, "link", "set", "lo", "up"]) {
            return Err("lo up".into());
        }
        Ok(ns)
    }

    /// `ip netns exec NS args...` (waits, captures the output).
    pub fn exec(&self, args: &[&str]) -> Result<Output, String> {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", args.join(" ")))
    }

    /// `exec` that must succeed.
    pub fn exec_ok(&self, args: &[&str]) -> Result<Output, String> {
        let out = self.exec(args)?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(format!("failed in {}: {}: {}", self.0, args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Starts a process in the namespace (stdout and stderr to `log`).
    pub fn spawn(&self, args: &[&str], log: &Path) -> Result<KillOnDrop, String> {
        let f = File::create(log).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().map_err(|e| e.to_string())?)
            .stderr(f)
            .spawn()
            .map_err(|e| format!("{}: {e}", args.join(" ")))?;
        Ok(KillOnDrop(child))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

pub fn run_ok(args: &[&str]) -> bool {
    Command::new(args[0]).args(&args[1..]).output().is_ok_and(|o| o.status.success())
}

pub fn have_tool(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Writes a secret to an owner-only file (removed by the caller once used).
pub fn write_secret(path: &Path, text: &str) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| e.to_string())
}

/// Which userspace WireGuard runs the host side.
#[derive(Clone, Copy)]
pub enum WgImpl<'a> {
    /// Debian's wireguard-go.
    WireguardGo,
    /// Our own daemon (`omni-daemon -f IFNAME`, the binary at this path).
    OmniDaemon(&'a Path),
}

impl WgImpl<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            WgImpl::WireguardGo => "wireguard-go",
            WgImpl::OmniDaemon(_) => "omni-daemon",
        }
    }
}

/// What the host's WireGuard interface is configured with.
pub struct WgConfig<'a> {
    pub private_key_b64: &'a str,
    pub listen_port: u16,
    pub address: &'a str,
    pub peer_b64: &'a str,
    pub allowed: &'a str,
    pub endpoint: &'a str,
}

/// A userspace WireGuard interface in a namespace of its own, configured with
/// `ip` and `wg` only. Dropping it stops the process, then deletes the
/// namespace (field order).
pub struct WgHost {
    proc: KillOnDrop,
    pub ifname: String,
    pub ns: Netns,
}

impl WgHost {
    pub fn start(imp: WgImpl<'_>, tag: &str, cfg: &WgConfig<'_>, dir: &Path) -> Result<WgHost, String> {
        for tool in ["wg", "ip", "ping"] {
            if !have_tool(tool) {
                return Err(format!("{tool} not installed (hil-tests/install-deps.sh installs it)"));
            }
        }
        let pid = std::process::id();
        let ns = Netns::create(&format!("omni-hil-{tag}-{pid}"))?;
        // Unique per test run: the UAPI socket directory is shared by all namespaces.
        let ifname = format!("oh{}{}", &tag[..tag.len().min(3)], pid % 100_000);
        let log = dir.join(format!("{tag}-{}.log", imp.name()));
        let proc = match imp {
            WgImpl::WireguardGo => {
                if !have_tool("wireguard-go") {
                    return Err("wireguard-go not installed (hil-tests/install-deps.sh installs it)".into());
                }
                let f = File::create(&log).map_err(|e| e.to_string())?;
                let child = Command::new("ip")
                    .args(["netns", "exec", &ns.0, "wireguard-go", "-f", &ifname])
                    .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
                    .stdin(Stdio::null())
                    .stdout(f.try_clone().map_err(|e| e.to_string())?)
                    .stderr(f)
                    .spawn()
                    .map_err(|e| format!("wireguard-go: {e}"))?;
                KillOnDrop(child)
            }
            WgImpl::OmniDaemon(bin) => {
                let bin = bin.to_str().ok_or("omni-daemon path is not UTF-8")?;
                ns.spawn(&[bin, "-f", "--log-level", "info", &ifname], &log)?
            }
        };
        let mut host = WgHost { proc, ifname, ns };
        let end = Instant::now() + Duration::from_secs(10);
        let sock = PathBuf::from(format!("/var/run/wireguard/{}.sock", host.ifname));
        while !(run_ok(&["ip", "-n", &host.ns.0, "link", "show", &host.ifname]) && sock.exists()) {
            if !host.proc.is_running() {
                return Err(format!("{} exited at start (log: {})", imp.name(), log.display()));
            }
            if Instant::now() > end {
                return Err(format!("{} did not create {} (log: {})", imp.name(), host.ifname, log.display()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let key_file = dir.join(format!("{tag}-host.key"));
        write_secret(&key_file, cfg.private_key_b64)?;
        let key_path = key_file.display().to_string();
        let port = cfg.listen_port.to_string();
        let r = host.ns.exec_ok(&[
            "wg",
            "set",
            &host.ifname,
            "private-key",
            &key_path,
            "listen-port",
            &port,
            "peer",
            cfg.peer_b64,
            "allowed-ips",
            cfg.allowed,
            "endpoint",
            cfg.endpoint,
        ]);
        let _ = std::fs::remove_file(&key_file);
        r?;
        host.ns.exec_ok(&["ip", "addr", "add", cfg.address, "dev", &host.ifname])?;
        host.ns.exec_ok(&["ip", "link", "set", &host.ifname, "up"])?;
        Ok(host)
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// The peer's latest handshake (Unix seconds; 0 = never), from `wg show`.
    pub fn latest_handshake(&self) -> Result<u64, String> {
        let out = self.ns.exec_ok(&["wg", "show", &self.ifname, "latest-handshakes"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.split_whitespace().nth(1).and_then(|t| t.parse().ok()).unwrap_or(0))
    }

    /// Waits until `wg show` reports a handshake later than `after`.
    pub fn wait_handshake_after(&self, after: u64, timeout: Duration) -> Result<u64, String> {
        let end = Instant::now() + timeout;
        loop {
            let t = self.latest_handshake()?;
            if t > after {
                return Ok(t);
            }
            if Instant::now() > end {
                return Err(format!("no handshake after {after} within {} s (latest: {t})", timeout.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ping -c count -i interval` from the namespace; Ok(summary) if every reply came.
    pub fn ping(&self, dst: &str, count: u32, interval: &str) -> Result<String, String> {
        let c = count.to_string();
        let out = self.ns.exec(&["ping", "-c", &c, "-i", interval, "-W", "3", dst])?;
        let summary = ping_summary(&String::from_utf8_lossy(&out.stdout));
        match ping_counts(&summary) {
            Some((tx, rx)) if tx == count && rx == count => Ok(summary),
            _ => Err(format!("ping {dst}: {summary}")),
        }
    }
}

/// The "N packets transmitted ..." and "rtt ..." lines of ping's output.
pub fn ping_summary(out: &str) -> String {
    out.lines().filter(|l| l.contains("packets") || l.contains("rtt")).collect::<Vec<_>>().join("; ")
}

/// (transmitted, received) from ping's summary.
pub fn ping_counts(summary: &str) -> Option<(u32, u32)> {
    let mut words = summary.split_whitespace();
    let tx = words.next()?.parse().ok()?;
    let rx = summary.split([',', ';']).find_map(|w| w.trim().strip_suffix(" received")?.trim().parse().ok());
    Some((tx, rx?))
}
