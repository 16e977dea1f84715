//! The firmware in a cluster: a Nucleus (`omni-daemon --mode nucleus`), an
//! edge (`omni-daemon --config edge.toml`, a TUN device with its VIP) and the
//! QEMU device (configured with `nucleus=`), all in one network namespace the
//! test makes: the device reaches the Nucleus at 10.0.2.2 (slirp's alias for
//! the namespace's loopback).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use omni_core::StaticSecret;
use rand_core::{OsRng, RngCore};

use crate::netns::{have_tool, unix_now, write_secret, Netns};
use crate::qemu::{Boot, Qemu};
use crate::{ensure, stat, Ctx, TestResult, DEVICE_PORT};

const NUCLEUS_PORT: u16 = 51830;
const EDGE_PORT: u16 = 51831;
const EDGE_VIP: &str = "10.200.0.1";
const DEVICE_VIP: &str = "10.200.0.2";

/// Removes a directory (keys, configuration with the cluster secret) when dropped.
struct RemoveDir(PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn wait_for_line(log: &Path, prefix: &str, timeout: Duration) -> Option<String> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(rest) = text.lines().find_map(|l| l.strip_prefix(prefix)) {
            return Some(rest.trim().to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The device joins a cluster through the Nucleus, takes its wall time from
/// it, an omni-daemon edge pings the device's VIP (and gets UDP echoes), and
/// the device reaches the edge by its VIP. slirp forwards the device's
/// datagrams from its `hostfwd` socket and lets any host address answer, so
/// the two members reach each other directly.
pub fn nucleus_edge_direct(ctx: &Ctx) -> TestResult {
    cluster(ctx, false)
}

/// The same with every direct datagram between the edge and the device
/// dropped (iptables in the namespace: the edge's port may talk to the
/// Nucleus only), so the members' traffic is relayed through the Nucleus.
pub fn nucleus_edge_relayed(ctx: &Ctx) -> TestResult {
    cluster(ctx, true)
}

fn cluster(ctx: &Ctx, block_direct: bool) -> TestResult {
    let daemon = ctx.daemon.as_deref().ok_or(
        "omni-daemon binary not found: build it (cargo build --release -p omni-daemon) and pass --daemon PATH",
    )?;
    let daemon = daemon.to_str().ok_or("omni-daemon path is not UTF-8")?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let me = me.to_str().ok_or("runner path is not UTF-8")?.to_string();
    let pid = std::process::id();
    let ns = Netns::create(&format!("omni-hil-nuc-{pid}"))?;
    if block_direct {
        ensure(have_tool("iptables"), "iptables not installed")?;
        let (edge, nucleus) = (EDGE_PORT.to_string(), NUCLEUS_PORT.to_string());
        ns.exec_ok(&[
            "iptables", "-A", "OUTPUT", "-p", "udp", "--sport", &edge, "!", "--dport", &nucleus, "-j", "DROP",
        ])?;
        ns.exec_ok(&[
            "iptables", "-A", "OUTPUT", "-p", "udp", "--dport", &edge, "!", "--sport", &nucleus, "-j", "DROP",
        ])?;
    }
    let work = ctx.dir.join(format!("nucleus-edge-{pid}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let _work = RemoveDir(work.clone());
    let path = |name: &str| work.join(name).display().to_string();

    // The Nucleus prints its key; edges and the device pin it.
    let nucleus_log = ctx.dir.join("nucleus_edge-nucleus.log");
    let port = NUCLEUS_PORT.to_string();
    let mut nucleus =
        ns.spawn(&[daemon, "--mode", "nucleus", "--port", &port, "--identity-dir", &path("nucleus")], &nucleus_log)?;
    let nucleus_key = wait_for_line(&nucleus_log, "nucleus public key:", Duration::from_secs(10))
        .ok_or(format!("the Nucleus printed no key (log: {})", nucleus_log.display()))?;

    let mut raw = [0u8; 16];
    OsRng.fill_bytes(&mut raw);
    let secret = hex(&raw);
    let cluster = format!("hil-{pid}");
    let ifname = format!("ohnuc{}", pid % 100_000);
    let edge_toml = work.join("edge.toml");
    write_secret(
        &edge_toml,
        &format!(
            "nucleus = \"127.0.0.1:{NUCLEUS_PORT}\"\ncluster = \"{cluster}\"\nsecret = \"{secret}\"\n\
             vip = \"{EDGE_VIP}\"\nnetmask = 24\ninterface = \"{ifname}\"\nport = {EDGE_PORT}\n\
             identity_dir = \"{}\"\nnucleus_key = \"{nucleus_key}\"\n",
            path("edge")
        ),
    )?;
    let edge_log = ctx.dir.join("nucleus_edge-edge.log");
    let mut edge = ns.spawn(&[daemon, "--config", &edge_toml.display().to_string()], &edge_log)?;

    // The device: its key and the cluster secret in an owner-only file (not on
    // QEMU's command line, which every local user can read).
    let device = StaticSecret::random(&mut OsRng);
    let device_conf = work.join("device.conf");
    write_secret(
        &device_conf,
        &format!(
            "key={} vip={DEVICE_VIP}/24 port={DEVICE_PORT}\nnucleus=10.0.2.2:{NUCLEUS_PORT} nucleus_key={nucleus_key} \
             cluster={cluster} secret={secret}\n",
            device.to_base64().as_str()
        ),
    )?;
    let b = Boot {
        elf: &ctx.elf,
        args: format!("config={} state={}", path("device.conf"), path("device.state")),
        host_port: 51822,
        device_port: DEVICE_PORT,
        netns: Some(&ns.0),
        extra: vec![],
        log: ctx.dir.join("nucleus_edge.log"),
    };
    let t0 = Instant::now();
    let mut q = Qemu::boot(&b).map_err(|e| format!("cannot start qemu-system-arm: {e}"))?;
    let _echo = ns.spawn(&[&me, "udp-echo", "0.0.0.0:7"], &ctx.dir.join("nucleus_edge-echo.log"))?;

    // The edge reaches the device by its VIP once both registered and the
    // Nucleus introduced them.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if ns.exec(&["ping", "-c", "1", "-W", "1", DEVICE_VIP])?.status.success() {
            break;
        }
        ensure(q.is_running(), "qemu stopped")?;
        ensure(edge.is_running(), format!("the edge exited (log: {})", edge_log.display()))?;
        ensure(
            Instant::now() < end,
            format!("the edge cannot ping the device's VIP after 30 s (logs: {})", ctx.dir.display()),
        )?;
    }
    println!("    boot to first ping from the edge: {} ms", t0.elapsed().as_millis());
    let out = ns.exec(&["ping", "-c", "5", "-i", "0.3", "-W", "3", DEVICE_VIP])?;
    let summary = crate::netns::ping_summary(&String::from_utf8_lossy(&out.stdout));
    println!("    edge -> device: {summary}");
    ensure(crate::netns::ping_counts(&summary) == Some((5, 5)), format!("edge ping: {summary}"))?;
    let probe = ns.exec(&[&me, "udp-probe", &format!("{DEVICE_VIP}:7"), "hello from the edge"])?;
    ensure(probe.status.success(), "no UDP echo from the device's VIP")?;

    // The device reaches the edge by its VIP (echoed by `udp-echo` there).
    let ask = |payload: &str| -> Result<String, String> {
        let out = ns.exec(&[&me, "udp-ask", &format!("{DEVICE_VIP}:9"), payload])?;
        ensure(out.status.success(), format!("control port: no answer to {payload:?}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let reply = ask(&format!("send {EDGE_VIP}:7 hello-from-the-device"))?;
    println!("    device -> edge {EDGE_VIP}:7: {reply}");
    ensure(reply == "reply hello-from-the-device", format!("device -> edge: {reply:?}"))?;

    let st = ask("stats")?;
    println!("    device: {st}");
    let status = ns.exec(&[daemon, "status", "-i", &ifname])?;
    let table = String::from_utf8_lossy(&status.stdout);
    for l in table.lines() {
        println!("    edge status: {l}");
    }
    ensure(st.contains("nucleus=registered"), format!("device not registered: {st}"))?;
    ensure(stat(&st, "members") == Some(1), format!("device should see 1 member: {st}"))?;
    let (direct, relayed) = (stat(&st, "direct").unwrap_or(0), stat(&st, "relayed").unwrap_or(0));
    ensure(direct + relayed == 1, format!("member path unknown: {st}"))?;
    println!("    path (device's view): {}", if direct == 1 { "direct" } else { "relayed through the Nucleus" });
    let want = if block_direct { "relayed" } else { "direct" };
    ensure(stat(&st, want) == Some(1), format!("expected the member {want}: {st}"))?;
    ensure(
        table.lines().any(|l| l.starts_with(DEVICE_VIP) && l.split_whitespace().any(|w| w == want)),
        format!("the edge does not report the device as {want}"),
    )?;
    // Wall time from the Nucleus: the device's clock started near the epoch.
    let wall = stat(&st, "nucleus_wall").unwrap_or(0);
    let now = unix_now();
    ensure(
        wall + 60 > now && wall <= now + 5,
        format!("device wall clock {wall} is not the Nucleus's time (host: {now})"),
    )?;
    ensure(nucleus.is_running(), "the Nucleus exited")?;
    ensure(edge.is_running(), "the edge exited")?;
    // The persisted ceiling moved up to the Nucleus's time before it was used.
    let state = std::fs::read(work.join("device.state")).map_err(|e| format!("device.state: {e}"))?;
    let ceiling = u64::from_le_bytes(state.get(..8).and_then(|b| b.try_into().ok()).ok_or("short device.state")?);
    ensure(ceiling > wall, format!("persisted ceiling {ceiling} is not above the adopted time {wall}"))
}

/// `omni-hil udp-echo ADDR:PORT`: echoes every datagram (until killed).
pub fn udp_echo(addr: &str) -> ! {
    let sock = std::net::UdpSocket::bind(addr).expect("bind");
    let mut buf = [0u8; 2048];
    loop {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    }
}
