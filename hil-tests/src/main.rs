//! Hardware-in-the-loop tests for the OmniNervous firmware under QEMU
//! (mps2-an385, LAN9118 on slirp, UDP forwarded from 127.0.0.1 only).
//!
//! `omni-hil [--firmware ELF] [--short-timers-firmware ELF] [--daemon PATH]
//! [--slow] [--only NAME]...` runs every test (`--slow` adds the ones that
//! wait for WireGuard's real timers) and ends with "N passed, M failed" (exit
//! status 1 if any failed). `--daemon` (or `OMNI_DAEMON`) is the omni-daemon
//! binary for the tests that run it as a host peer or a Nucleus. Subcommands
//! used inside the test namespaces: `omni-hil udp-probe ADDR:PORT PAYLOAD`
//! (exit 0 if the datagram is echoed), `omni-hil udp-ask ADDR:PORT PAYLOAD`
//! (prints the answer), `omni-hil udp-echo ADDR:PORT` (an echo server).

mod cluster;
mod netns;
mod packet;
mod peer;
mod qemu;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns::{unix_now, WgConfig, WgHost, WgImpl};
use omni_core::crypto::RustCrypto;
use omni_core::StaticSecret;
use packet::Parsed;
use peer::HostPeer;
use qemu::{free_udp_port, Boot, Qemu};
use rand_core::OsRng;

const DEVICE_VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const HOST_VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const DEVICE_PORT: u16 = 51820;

struct Ctx {
    elf: PathBuf,
    /// The demo built with omni-core's `short-timers-for-tests` (rekey every 8 s).
    short_timers_elf: PathBuf,
    /// The omni-daemon binary (built from the main workspace).
    daemon: Option<PathBuf>,
    dir: PathBuf,
}

type TestResult = Result<(), String>;
type Test = (&'static str, fn(&Ctx) -> TestResult);

fn ensure(cond: bool, what: impl Into<String>) -> TestResult {
    if cond {
        Ok(())
    } else {
        Err(what.into())
    }
}

/// Fresh keys and the device's command line for a device that talks to a host
/// peer at 10.0.2.2:`host_port` (slirp's alias for the host's loopback).
struct Setup {
    device: StaticSecret,
    host: StaticSecret,
}

impl Setup {
    fn new() -> Self {
        Setup { device: StaticSecret::random(&mut OsRng), host: StaticSecret::random(&mut OsRng) }
    }
    fn device_args(&self, host_port: u16, state: Option<&Path>) -> String {
        let mut a = format!(
            "key={} vip={DEVICE_VIP}/24 port={DEVICE_PORT} peer={} endpoint=10.0.2.2:{host_port} allowed={HOST_VIP}/32",
            self.device.to_base64().as_str(),
            self.host.public_key::<RustCrypto>().to_base64().as_str(),
        );
        if let Some(s) = state {
            a.push_str(&format!(" state={}", s.display()));
        }
        a
    }
    fn host_peer(&self, port: u16, device_host_port: u16) -> HostPeer {
        let sock = UdpSocket::bind(("127.0.0.1", port)).expect("bind host peer");
        HostPeer::new(
            sock,
            self.host.clone(),
            self.device.public_key::<RustCrypto>(),
            &format!("{DEVICE_VIP}/32"),
            Some(SocketAddr::from(([127, 0, 0, 1], device_host_port))),
        )
    }
}

fn boot(ctx: &Ctx, name: &str, args: String, host_port: u16) -> Result<Qemu, String> {
    let b = Boot {
        elf: &ctx.elf,
        args,
        host_port,
        device_port: DEVICE_PORT,
        netns: None,
        extra: vec![],
        log: ctx.dir.join(format!("{name}.log")),
    };
    Qemu::boot(&b).map_err(|e| format!("cannot start qemu-system-arm: {e}"))
}

fn ping(p: &mut HostPeer, seq: u16) -> Option<Duration> {
    let data = format!("omni ping {seq}");
    let req = packet::icmp_echo_request(HOST_VIP, DEVICE_VIP, 0x0e1e, seq, data.as_bytes());
    let t = Instant::now();
    let ok = p.exchange(&req, Duration::from_secs(3), |pkt| {
        matches!(packet::parse(pkt), Parsed::EchoReply { src, id: 0x0e1e, seq: s, data: d }
            if src == DEVICE_VIP && s == seq && d == data.as_bytes())
    });
    ok.then(|| t.elapsed())
}

fn udp_request(p: &mut HostPeer, port: u16, payload: &[u8]) -> Option<Vec<u8>> {
    let req = packet::udp(HOST_VIP, 40000, DEVICE_VIP, port, payload);
    let mut answer = None;
    p.exchange(&req, Duration::from_secs(3), |pkt| match packet::parse(pkt) {
        Parsed::Udp { src, sport, dport: 40000, data } if src == DEVICE_VIP && sport == port => {
            answer = Some(data.to_vec());
            true
        }
        _ => false,
    });
    answer
}

fn udp_echo(p: &mut HostPeer, n: u32) -> TestResult {
    let payload = format!("hello through the tunnel #{n}");
    let got = udp_request(p, 7, payload.as_bytes()).ok_or("no UDP echo")?;
    ensure(got == payload.as_bytes(), format!("echo mismatch: {:?}", String::from_utf8_lossy(&got)))
}

fn stats(p: &mut HostPeer) -> Option<String> {
    udp_request(p, 9, b"stats").map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn stat(stats: &str, key: &str) -> Option<u64> {
    stats.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Handshake initiated by the device, ICMP echo and UDP echo on the VIP, the
/// control port, and the firmware's own verdict as its semihosting exit code.
fn omni_core_peer(ctx: &Ctx) -> TestResult {
    let s = Setup::new();
    let (hp, dp) = (free_udp_port(), free_udp_port());
    let mut p = s.host_peer(hp, dp);
    let t0 = Instant::now();
    let state = ctx.dir.join("omni_core_peer.state");
    let _ = std::fs::remove_file(&state);
    let mut q = boot(ctx, "omni_core_peer", s.device_args(hp, Some(&state)), dp)?;
    ensure(p.wait_handshakes(1, Duration::from_secs(20)), "no handshake within 20 s")?;
    println!("    boot to handshake: {} ms", t0.elapsed().as_millis());
    let mut rtts = vec![];
    for seq in 1..=5 {
        rtts.push(ping(&mut p, seq).ok_or(format!("ping {seq}: no reply"))?);
    }
    println!("    ping RTT over the tunnel: {:?}", rtts);
    for n in 0..3 {
        udp_echo(&mut p, n)?;
    }
    // A near-MTU datagram: 1380 bytes of UDP payload, a 1408-byte IP packet (tunnel MTU 1420).
    let big = vec![0xa5u8; 1380];
    let got = udp_request(&mut p, 7, &big).ok_or("no echo of a 1380-byte datagram")?;
    ensure(got == big, "large echo mismatch")?;
    let st = stats(&mut p).ok_or("no answer on the control port")?;
    println!("    device: {st}");
    ensure(stat(&st, "handshakes") == Some(1), format!("device counted handshakes: {st}"))?;
    ensure(p.stale == 0, "host peer saw stale timestamps")?;
    // The regular demo must keep WireGuard's real timers: the short-timer
    // test build (same workspace, same target dir) announces itself at boot.
    ensure(!q.log_text().contains("TEST BUILD"), "the regular demo was built with short-timers-for-tests")?;
    // The firmware checks its own counters and exits through semihosting.
    let _ = udp_request(&mut p, 9, b"exit");
    let status = q.wait_exit(Duration::from_secs(5)).ok_or("firmware did not exit")?;
    ensure(status.code() == Some(0), format!("firmware exit status {status}"))
}

/// Boots the device and loses its first initiation (as if the host peer
/// were down), so the handshake that succeeds is the retry 5 s later: its
/// TAI64N is then well above what a freshly booted device without a persisted
/// clock would send. Then reboots the device (system reset).
/// Returns (host peer, qemu, boot_wall before the reboot, a way to boot it again).
fn reboot_scenario(ctx: &Ctx, name: &str, persisted: bool) -> Result<(HostPeer, Qemu, u64, Reboot), String> {
    let s = Setup::new();
    let (hp, dp) = (free_udp_port(), free_udp_port());
    let state = ctx.dir.join(format!("{name}.state"));
    let _ = std::fs::remove_file(&state);
    let mut p = s.host_peer(hp, dp);
    let q = boot(ctx, name, s.device_args(hp, persisted.then_some(state.as_path())), dp)?;
    ensure(p.discard_first_datagram(Duration::from_secs(20)), "no initiation from the device")?;
    ensure(p.wait_handshakes(1, Duration::from_secs(12)), "no handshake (retry) within 12 s")?;
    ping(&mut p, 1).ok_or("ping before reboot")?;
    let st = stats(&mut p).ok_or("stats before reboot")?;
    let wall = stat(&st, "boot_wall").ok_or("no boot_wall")?;
    println!("    before reboot: {st}");
    let _ = udp_request(&mut p, 9, b"reboot");
    let again = Reboot { args: s.device_args(hp, persisted.then_some(state.as_path())), host_port: dp };
    Ok((p, q, wall, again))
}

/// What it takes to power the same device up again (same keys, same flash).
struct Reboot {
    args: String,
    host_port: u16,
}

/// TAI64N after reboot: a device without a battery-backed clock keeps a
/// ceiling in its (emulated) flash, so the host peer accepts its handshake
/// right after a reset of the board.
fn reboot_persisted_clock(ctx: &Ctx) -> TestResult {
    let (mut p, mut q, wall, again) = reboot_scenario(ctx, "reboot_persisted", true)?;
    let t = Instant::now();
    ensure(p.wait_handshakes(2, Duration::from_secs(8)), format!("no handshake after reboot (stale: {})", p.stale))?;
    println!("    reboot to handshake: {} ms", t.elapsed().as_millis());
    ensure(p.stale == 0, format!("{} initiations refused as stale", p.stale))?;
    ping(&mut p, 2).ok_or("ping after reboot")?;
    udp_echo(&mut p, 1)?;
    let st = stats(&mut p).ok_or("stats after reboot")?;
    println!("    after reboot: {st}");
    let wall2 = stat(&st, "boot_wall").ok_or("no boot_wall")?;
    ensure(wall2 > wall, format!("wall clock did not move up: {wall} -> {wall2}"))?;
    ensure(q.is_running(), "qemu stopped")?;
    // Power cycle: a new QEMU process (all RAM lost), the same "flash" file.
    drop(q);
    let _q = boot(ctx, "reboot_persisted_power_cycle", again.args, again.host_port)?;
    let t = Instant::now();
    ensure(
        p.wait_handshakes(3, Duration::from_secs(8)),
        format!("no handshake after power cycle (stale: {})", p.stale),
    )?;
    println!("    power cycle to handshake: {} ms", t.elapsed().as_millis());
    ensure(p.stale == 0, format!("{} initiations refused as stale", p.stale))?;
    ping(&mut p, 3).ok_or("ping after power cycle")?;
    let st = stats(&mut p).ok_or("stats after power cycle")?;
    let wall3 = stat(&st, "boot_wall").ok_or("no boot_wall")?;
    ensure(wall3 > wall2, format!("wall clock did not move up: {wall2} -> {wall3}"))
}

/// The control: the same reboot without the persisted ceiling is refused by
/// the host peer (StaleTimestamp), which is what the ceiling prevents.
fn reboot_without_persisted_clock_is_refused(ctx: &Ctx) -> TestResult {
    let (mut p, _q, _, _) = reboot_scenario(ctx, "reboot_unpersisted", false)?;
    p.run_until(Duration::from_secs(3), |p| p.stale > 0 || p.handshakes() >= 2);
    ensure(p.stale > 0, "the rebooted device's initiation was not refused as stale")?;
    ensure(p.handshakes() == 1, "a stale initiation was accepted")
}

/// A userspace WireGuard host peer (`imp`) in a network namespace of its own,
/// configured with stock `wg`, and the device booted from `elf` inside the
/// same namespace (so all traffic stays on that namespace's loopback).
struct NsSetup {
    s: Setup,
    host: WgHost,
    hp: u16,
    dp: u16,
}

impl NsSetup {
    fn start(ctx: &Ctx, imp: WgImpl<'_>, tag: &str) -> Result<NsSetup, String> {
        let s = Setup::new();
        let (hp, dp) = (51821, 51822);
        let host_key = s.host.to_base64();
        let device_pub = s.device.public_key::<RustCrypto>().to_base64();
        let endpoint = format!("127.0.0.1:{dp}");
        let cfg = WgConfig {
            private_key_b64: host_key.as_str(),
            listen_port: hp,
            address: "10.77.0.1/24",
            peer_b64: device_pub.as_str(),
            allowed: "10.77.0.2/32",
            endpoint: &endpoint,
        };
        let host = WgHost::start(imp, tag, &cfg, &ctx.dir)?;
        Ok(NsSetup { s, host, hp, dp })
    }

    fn boot(&self, ctx: &Ctx, elf: &Path, name: &str, state: &Path) -> Result<Qemu, String> {
        let b = Boot {
            elf,
            args: self.s.device_args(self.hp, Some(state)),
            host_port: self.dp,
            device_port: DEVICE_PORT,
            netns: Some(&self.host.ns.0),
            extra: vec![],
            log: ctx.dir.join(format!("{name}.log")),
        };
        Qemu::boot(&b).map_err(|e| format!("cannot start qemu-system-arm: {e}"))
    }

    /// Sends `payload` to the device's VIP from inside the namespace (with
    /// this runner's `udp-ask`); returns the answer.
    fn ask(&self, port: u16, payload: &str) -> Result<String, String> {
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let me = me.to_str().ok_or("runner path is not UTF-8")?;
        let addr = format!("{DEVICE_VIP}:{port}");
        let out = self.host.ns.exec(&[me, "udp-ask", &addr, payload])?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!("no answer from {addr}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    fn udp_echo(&self, payload: &str) -> TestResult {
        let got = self.ask(7, payload)?;
        ensure(got == payload, format!("UDP echo mismatch: {got:?}"))
    }
}

/// wireguard-go (the Go implementation, with a TUN device in its own network
/// namespace) as the peer: handshake, ping and UDP echo to the device's VIP.
fn wireguard_go_peer(ctx: &Ctx) -> TestResult {
    let n = NsSetup::start(ctx, WgImpl::WireguardGo, "wggo")?;
    let _q = n.boot(ctx, &ctx.elf, "wireguard_go_peer", &ctx.dir.join("wireguard_go.state"))?;
    // The device initiates at boot; wait for wireguard-go to report the handshake.
    n.host.wait_handshake_after(0, Duration::from_secs(20))?;
    println!("    {}", n.host.ping("10.77.0.2", 3, "0.3")?);
    n.udp_echo("hello via wireguard-go")
}

/// omni-daemon (the workspace's own Linux host, `omni-daemon -f IFNAME` in a
/// network namespace, configured with stock `wg`) as the peer: handshake,
/// ping and UDP echo to the device's VIP; then the board reboots and the
/// daemon accepts its new handshake (TAI64N from the persisted clock).
fn omni_daemon_peer(ctx: &Ctx) -> TestResult {
    let daemon = ctx.daemon.as_deref().ok_or(
        "omni-daemon binary not found: build it (cargo build --release -p omni-daemon) and pass --daemon PATH",
    )?;
    let mut n = NsSetup::start(ctx, WgImpl::OmniDaemon(daemon), "omnid")?;
    let state = ctx.dir.join("omni_daemon_peer.state");
    let _ = std::fs::remove_file(&state);
    let mut q = n.boot(ctx, &ctx.elf, "omni_daemon_peer", &state)?;
    let t0 = Instant::now();
    let first = n.host.wait_handshake_after(0, Duration::from_secs(20))?;
    println!("    boot to handshake (wg show): {} ms", t0.elapsed().as_millis());
    println!("    {}", n.host.ping("10.77.0.2", 3, "0.3")?);
    n.udp_echo("hello via omni-daemon")?;
    let st = n.ask(9, "stats")?;
    println!("    device: {st}");
    let wall = stat(&st, "boot_wall").ok_or(format!("no boot_wall in {st:?}"))?;
    // `wg show` has 1 s resolution: make the next handshake land in a later second.
    while unix_now() <= first {
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure(n.ask(9, "reboot")? == "rebooting", "device did not acknowledge the reboot")?;
    let t = Instant::now();
    let second = n.host.wait_handshake_after(first, Duration::from_secs(15))?;
    println!("    reboot to handshake: {} ms", t.elapsed().as_millis());
    println!("    after reboot: {}", n.host.ping("10.77.0.2", 3, "0.3")?);
    n.udp_echo("hello again via omni-daemon")?;
    let st = n.ask(9, "stats")?;
    println!("    device after reboot: {st}");
    let wall2 = stat(&st, "boot_wall").ok_or(format!("no boot_wall in {st:?}"))?;
    ensure(wall2 > wall, format!("device wall clock did not move up: {wall} -> {wall2}"))?;
    ensure(stat(&st, "handshakes") == Some(1), format!("rebooted device should count 1 handshake: {st}"))?;
    ensure(second > first, "handshake time did not advance")?;
    ensure(q.is_running(), "qemu stopped")?;
    ensure(n.host.is_running(), "omni-daemon exited")
}

/// Rekeys in CI time with the `demo-short-timers-for-tests` build (omni-core's
/// `short-timers-for-tests`: Rekey-After-Time 8 s) against wireguard-go with
/// its normal timers: the device initiated the session, so it rekeys every
/// ~8 s while it answers pings; wireguard-go must see several new handshakes
/// about 8 s apart, and no ping may be lost across the switches.
fn rekey_short_timers(ctx: &Ctx) -> TestResult {
    ensure(
        ctx.short_timers_elf.exists(),
        format!("{} not built (hil-tests/run.sh builds it)", ctx.short_timers_elf.display()),
    )?;
    let n = NsSetup::start(ctx, WgImpl::WireguardGo, "rekey")?;
    let state = ctx.dir.join("rekey_short.state");
    let _ = std::fs::remove_file(&state);
    let q = n.boot(ctx, &ctx.short_timers_elf, "rekey_short_timers", &state)?;
    let first = n.host.wait_handshake_after(0, Duration::from_secs(20))?;
    ensure(q.log_text().contains("TEST BUILD"), "the short-timers image did not announce its test timers")?;
    // 54 pings, one every 0.5 s (27 s): three rekeys are due at ~8, ~16 and ~24 s.
    let mut pinger = n
        .host
        .ns
        .spawn(&["ping", "-c", "54", "-i", "0.5", "-W", "3", "10.77.0.2"], &ctx.dir.join("rekey_short_timers.ping"))?;
    let mut seen = vec![first];
    let end = Instant::now() + Duration::from_secs(40);
    while pinger.is_running() && Instant::now() < end {
        let t = n.host.latest_handshake()?;
        if seen.last().is_some_and(|&l| t > l) {
            seen.push(t);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = pinger.0.wait().map_err(|e| e.to_string())?;
    let out = std::fs::read_to_string(ctx.dir.join("rekey_short_timers.ping")).unwrap_or_default();
    let summary = netns::ping_summary(&out);
    let gaps: Vec<u64> = seen.windows(2).map(|w| w[1] - w[0]).collect();
    println!("    {summary}");
    println!("    handshakes seen by wireguard-go: {}, intervals {gaps:?} s", seen.len());
    let st = n.ask(9, "stats")?;
    println!("    device: {st}");
    ensure(status.success(), format!("ping lost replies across rekeys: {summary}"))?;
    ensure(netns::ping_counts(&summary) == Some((54, 54)), format!("ping: {summary}"))?;
    ensure(seen.len() >= 4, format!("expected >= 3 rekeys in 27 s, wireguard-go saw {:?}", seen))?;
    ensure(gaps.iter().all(|g| (6..=12).contains(g)), format!("rekey intervals {gaps:?} s, expected ~8 s"))?;
    let hs = stat(&st, "handshakes").unwrap_or(0);
    ensure(hs >= 4, format!("device counted {hs} handshakes"))
}

/// Rekey with WireGuard's real timers (slow: ~2.5 minutes; `--slow`). The
/// device initiated the session, so it rekeys once the session is older than
/// Rekey-After-Time (120 s) and it sends data; pings keep flowing across the
/// switch. The CI-time variant is `rekey_short_timers` (a separate test build).
fn rekey_real_timers(ctx: &Ctx) -> TestResult {
    let s = Setup::new();
    let (hp, dp) = (free_udp_port(), free_udp_port());
    let mut p = s.host_peer(hp, dp);
    let _q = boot(ctx, "rekey_real_timers", s.device_args(hp, Some(&ctx.dir.join("rekey.state"))), dp)?;
    ensure(p.wait_handshakes(1, Duration::from_secs(20)), "no handshake")?;
    let t0 = Instant::now();
    let (mut seq, mut lost) = (0u16, 0u32);
    while p.handshakes() < 2 && t0.elapsed() < Duration::from_secs(150) {
        seq += 1;
        if ping(&mut p, seq).is_none() {
            lost += 1;
        }
        if seq % 20 == 0 {
            println!(
                "    {} s: {seq} pings, {lost} lost, device: {}",
                t0.elapsed().as_secs(),
                stats(&mut p).unwrap_or_default()
            );
        }
        p.run_until(Duration::from_secs(2), |p| p.handshakes() >= 2);
    }
    ensure(p.handshakes() >= 2, format!("no rekey within 150 s ({seq} pings, {lost} lost)"))?;
    let at = t0.elapsed().as_secs();
    println!("    rekey after {at} s, {seq} pings, {lost} lost");
    ensure((118..=140).contains(&at), format!("rekey at {at} s, expected ~120 s"))?;
    for n in 1..=3 {
        ping(&mut p, seq + n).ok_or("ping after rekey")?;
    }
    ensure(lost == 0, format!("{lost} pings lost"))
}

fn udp_probe(addr: &str, payload: &str) -> ! {
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    for _ in 0..3 {
        sock.send_to(payload.as_bytes(), addr).expect("send");
        let mut buf = [0u8; 1500];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            if &buf[..n] == payload.as_bytes() {
                println!("echo ok");
                std::process::exit(0);
            }
        }
    }
    eprintln!("no echo from {addr}");
    std::process::exit(1)
}

/// Sends one datagram (retrying) and prints the first answer.
fn udp_ask(addr: &str, payload: &str) -> ! {
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    for _ in 0..3 {
        sock.send_to(payload.as_bytes(), addr).expect("send");
        let mut buf = [0u8; 1500];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            println!("{}", String::from_utf8_lossy(&buf[..n]));
            std::process::exit(0);
        }
    }
    eprintln!("no answer from {addr}");
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("udp-probe") => udp_probe(&args[2], args.get(3).map_or("probe", String::as_str)),
        Some("udp-ask") => udp_ask(&args[2], args.get(3).map_or("", String::as_str)),
        Some("udp-echo") => cluster::udp_echo(&args[2]),
        _ => {}
    }
    let fw = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../firmware/target");
    let mut elf = fw.join("thumbv7m-none-eabi/release/demo");
    let mut short_timers_elf = fw.join("thumbv7m-none-eabi/release/demo-short-timers-for-tests");
    let mut daemon = std::env::var_os("OMNI_DAEMON").map(PathBuf::from);
    let mut only: Vec<String> = vec![];
    let mut slow = false;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--firmware" => elf = PathBuf::from(it.next().expect("--firmware ELF")),
            "--short-timers-firmware" => {
                short_timers_elf = PathBuf::from(it.next().expect("--short-timers-firmware ELF"))
            }
            "--daemon" => daemon = Some(PathBuf::from(it.next().expect("--daemon PATH"))),
            "--only" => only.push(it.next().expect("--only NAME").clone()),
            "--slow" => slow = true,
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/hil-logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    let ctx = Ctx { elf, short_timers_elf, daemon, dir };
    let tests: &[Test] = &[
        ("omni_core_peer", omni_core_peer),
        ("reboot_persisted_clock", reboot_persisted_clock),
        ("reboot_without_persisted_clock_is_refused", reboot_without_persisted_clock_is_refused),
        ("wireguard_go_peer", wireguard_go_peer),
        ("omni_daemon_peer", omni_daemon_peer),
        ("rekey_short_timers", rekey_short_timers),
        ("nucleus_edge_direct", cluster::nucleus_edge_direct),
        ("nucleus_edge_relayed", cluster::nucleus_edge_relayed),
        ("rekey_real_timers", rekey_real_timers),
    ];
    let slow_tests = ["rekey_real_timers"];
    let (mut passed, mut failed) = (0, 0);
    for (name, f) in tests {
        let selected = if only.is_empty() {
            slow || !slow_tests.contains(name)
        } else {
            only.iter().any(|o| name.contains(o.as_str()))
        };
        if !selected {
            continue;
        }
        println!("test {name} ...");
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| f(&ctx)).unwrap_or_else(|_| Err("panicked".into()));
        match r {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1} s)", t.elapsed().as_secs_f64());
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED ({:.1} s): {e}", t.elapsed().as_secs_f64());
                println!("    device log: {}", ctx.dir.join(format!("{name}.log")).display());
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
