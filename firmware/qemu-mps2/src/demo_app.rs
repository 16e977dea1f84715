// The demo application shared by the `demo` and `demo-short-timers-for-tests`
// binaries (each `include!`s it; they differ only in omni-core's features).
// See src/bin/demo.rs for what it does.

use core::net::Ipv4Addr;
use core::str::FromStr;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use defmt_semihosting as _;
use embassy_executor::Spawner;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Ipv4Cidr, Stack, StackResources, StaticConfigV4};
use omni_core::crypto::RustCrypto;
use omni_core::nucleus::NucleusClient;
use omni_core::storage::Fixed;
use omni_firmware::nucleus::{self as nucleus, FixedMembers, NucleusSignaling, NucleusStatus};
use omni_firmware::tunnel::{build_node, tunnel_net_config};
use omni_firmware::{omni_now, Config, PersistedWall, Tunnel, TunnelResources, TunnelStats, WallStore, TUNNEL_MTU};
use omni_qemu_mps2::hostfs::{self, HostFileStore, NoStore};
use omni_qemu_mps2::lan9118::{self, Lan9118};
use omni_qemu_mps2::{self as board, board_handlers};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use static_cell::{ConstStaticCell, StaticCell};

board_handlers!();

/// 4 peers, 16 allowed-IP entries, 16 live receiver indexes.
type Storage = Fixed<4, 16, 16>;
type Tun = Tunnel<'static, RustCrypto, ChaCha20Rng, Storage>;
/// In a cluster: the Nucleus takes one peer slot, members the other three.
type Members = FixedMembers<3>;
type NucleusTun = Tunnel<'static, RustCrypto, ChaCha20Rng, Storage, NucleusSignaling<'static, Members>>;
type TunDevice = embassy_net_driver_channel::Device<'static, TUNNEL_MTU>;

enum DeviceStore {
    File(HostFileStore),
    Nothing(NoStore),
}

impl WallStore for DeviceStore {
    fn load(&mut self) -> Option<u64> {
        match self {
            DeviceStore::File(s) => s.load(),
            DeviceStore::Nothing(s) => s.load(),
        }
    }
    fn store(&mut self, v: u64) -> bool {
        match self {
            DeviceStore::File(s) => s.store(v),
            DeviceStore::Nothing(s) => s.store(v),
        }
    }
}

static ARGS: ConstStaticCell<[u8; 2048]> = ConstStaticCell::new([0; 2048]);
static ETH_RES: ConstStaticCell<StackResources<4>> = ConstStaticCell::new(StackResources::new());
static VIP_RES: ConstStaticCell<StackResources<6>> = ConstStaticCell::new(StackResources::new());
static TUN_RES: ConstStaticCell<TunnelResources<4, 4>> = ConstStaticCell::new(TunnelResources::new());
static WALL: StaticCell<PersistedWall<DeviceStore>> = StaticCell::new();
static STATS: TunnelStats = TunnelStats::new();
static ECHOES: AtomicU32 = AtomicU32::new(0);
static CLIENT: StaticCell<NucleusClient<Members>> = StaticCell::new();
static NUCLEUS: NucleusStatus = NucleusStatus::new();
/// Whether this boot joined a cluster (`nucleus=` in the configuration).
static IN_CLUSTER: AtomicBool = AtomicBool::new(false);

#[embassy_executor::task]
async fn eth_task(mut runner: embassy_net::Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn vip_task(mut runner: embassy_net::Runner<'static, TunDevice>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn tunnel_task(tunnel: Tun) -> ! {
    tunnel.run().await
}

#[embassy_executor::task]
async fn nucleus_tunnel_task(tunnel: NucleusTun) -> ! {
    tunnel.run().await
}

#[embassy_executor::task]
async fn udp_echo(stack: Stack<'static>, port: u16) -> ! {
    let mut rx_meta = [PacketMetadata::EMPTY; 4];
    let mut rx_buf = [0u8; 2048];
    let mut tx_meta = [PacketMetadata::EMPTY; 4];
    let mut tx_buf = [0u8; 2048];
    let mut sock = UdpSocket::new(stack, &mut rx_meta, &mut rx_buf, &mut tx_meta, &mut tx_buf);
    if sock.bind(port).is_err() {
        defmt::error!("echo: cannot bind {}", port);
    }
    let mut buf = [0u8; TUNNEL_MTU];
    loop {
        let Ok((n, meta)) = sock.recv_from(&mut buf).await else { continue };
        ECHOES.store(ECHOES.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if let Err(e) = sock.send_to(&buf[..n], meta.endpoint).await {
            defmt::warn!("echo: {}", e);
        }
    }
}

#[embassy_executor::task]
async fn control(stack: Stack<'static>, port: u16, boot_wall: u64) -> ! {
    let mut rx_meta = [PacketMetadata::EMPTY; 2];
    let mut rx_buf = [0u8; 256];
    let mut tx_meta = [PacketMetadata::EMPTY; 2];
    let mut tx_buf = [0u8; 512];
    let mut sock = UdpSocket::new(stack, &mut rx_meta, &mut rx_buf, &mut tx_meta, &mut tx_buf);
    if sock.bind(port).is_err() {
        defmt::error!("control: cannot bind {}", port);
    }
    let mut buf = [0u8; 128];
    loop {
        let Ok((n, meta)) = sock.recv_from(&mut buf).await else { continue };
        let cmd = core::str::from_utf8(&buf[..n]).unwrap_or("").trim();
        defmt::info!("control: {=str}", cmd);
        let (hs, echoes) = (STATS.handshakes.load(Ordering::Relaxed), ECHOES.load(Ordering::Relaxed));
        match cmd {
            "stats" => {
                let mut out: heapless::String<320> = heapless::String::new();
                let _ = core::fmt::write(
                    &mut out,
                    format_args!(
                        "handshakes={} in={} out={} dropped={} stale={} echoes={} boot_wall={}",
                        hs,
                        STATS.packets_in.load(Ordering::Relaxed),
                        STATS.packets_out.load(Ordering::Relaxed),
                        STATS.datagrams_dropped.load(Ordering::Relaxed),
                        STATS.stale_timestamps.load(Ordering::Relaxed),
                        echoes,
                        boot_wall,
                    ),
                );
                if IN_CLUSTER.load(Ordering::Relaxed) {
                    let _ = core::fmt::write(
                        &mut out,
                        format_args!(
                            " nucleus={} registrations={} refusals={} members={} direct={} relayed={} nucleus_wall={}",
                            NUCLEUS.state(),
                            NUCLEUS.registrations.load(Ordering::Relaxed),
                            NUCLEUS.refusals.load(Ordering::Relaxed),
                            NUCLEUS.members.load(Ordering::Relaxed),
                            NUCLEUS.direct.load(Ordering::Relaxed),
                            NUCLEUS.relayed.load(Ordering::Relaxed),
                            STATS.control_wall_secs.load(Ordering::Relaxed),
                        ),
                    );
                }
                let _ = sock.send_to(out.as_bytes(), meta.endpoint).await;
            }
            _ if cmd.starts_with("send ") => {
                // `send ADDR:PORT TEXT`: the device sends TEXT from its VIP and
                // reports the first answer ("reply TEXT", or "timeout").
                let mut answer: heapless::String<160> = heapless::String::new();
                match send_and_wait(stack, cmd.trim_start_matches("send ").trim()).await {
                    Some(r) => {
                        let _ = answer.push_str("reply ");
                        let _ = answer.push_str(r.as_str());
                    }
                    None => {
                        let _ = answer.push_str("timeout");
                    }
                }
                let _ = sock.send_to(answer.as_bytes(), meta.endpoint).await;
            }
            "reboot" => {
                let _ = sock.send_to(b"rebooting", meta.endpoint).await;
                sock.flush().await;
                embassy_time::Timer::after_millis(50).await;
                defmt::info!("control: system reset");
                cortex_m::peripheral::SCB::sys_reset();
            }
            "exit" => {
                let ok = hs >= 1 && echoes >= 1;
                let _ = sock.send_to(if ok { b"exit 0" } else { b"exit 1" }, meta.endpoint).await;
                sock.flush().await;
                embassy_time::Timer::after_millis(50).await;
                defmt::info!("control: exit (handshakes={}, echoes={})", hs, echoes);
                board::exit(if ok { 0 } else { 1 });
            }
            _ => {
                let _ = sock.send_to(b"?", meta.endpoint).await;
            }
        }
    }
}

/// Sends `TEXT` to `ADDR:PORT` (`spec` = "ADDR:PORT TEXT") from the VIP,
/// up to 3 times, and returns the first answer (as text).
async fn send_and_wait(stack: Stack<'static>, spec: &str) -> Option<heapless::String<128>> {
    let (addr, text) = spec.split_once(' ')?;
    let to = core::net::SocketAddrV4::from_str(addr).ok()?;
    let mut rx_meta = [PacketMetadata::EMPTY; 2];
    let mut rx_buf = [0u8; 256];
    let mut tx_meta = [PacketMetadata::EMPTY; 2];
    let mut tx_buf = [0u8; 256];
    let mut sock = UdpSocket::new(stack, &mut rx_meta, &mut rx_buf, &mut tx_meta, &mut tx_buf);
    sock.bind(40007).ok()?;
    let mut buf = [0u8; 128];
    for _ in 0..3 {
        sock.send_to(text.as_bytes(), embassy_net::IpEndpoint::from(to)).await.ok()?;
        let reply = embassy_time::with_timeout(embassy_time::Duration::from_secs(1), sock.recv_from(&mut buf)).await;
        if let Ok(Ok((n, _))) = reply {
            let mut s = heapless::String::new();
            let _ = s.push_str(core::str::from_utf8(&buf[..n]).unwrap_or("?"));
            return Some(s);
        }
    }
    None
}

fn parse_cidr(s: &str) -> Option<Ipv4Cidr> {
    let (a, p) = s.split_once('/')?;
    Some(Ipv4Cidr::new(Ipv4Addr::from_str(a).ok()?, u8::from_str(p).ok().filter(|p| *p <= 32)?))
}

fn fail(code: i32, what: &str) -> ! {
    defmt::error!("startup failed: {=str}", what);
    board::exit(code)
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = cortex_m::Peripherals::take().unwrap_or_else(|| fail(2, "peripherals"));
    board::time::init(p.SYST);
    defmt::info!("omni demo on mps2-an385");
    if omni_core::constants::SHORT_TIMERS_FOR_TESTS {
        defmt::warn!("TEST BUILD: omni-core short-timers-for-tests (rekey every 8 s); never for production");
    }

    let text = hostfs::device_config(ARGS.take());
    let cfg = match Config::parse(text) {
        Ok(c) => c,
        Err(e) => {
            defmt::error!("config: {}", e);
            fail(2, "configuration (semihosting command line)")
        }
    };
    let mut seed = [0u8; 32];
    if !hostfs::host_entropy(&mut seed) {
        fail(3, "entropy");
    }
    let mut rng = ChaCha20Rng::from_seed(seed);
    let (seed_eth, seed_vip) = (rng.next_u64(), rng.next_u64());

    let now = omni_now();
    let store = match cfg.get("state").and_then(HostFileStore::new) {
        Some(s) => DeviceStore::File(s),
        None => {
            defmt::warn!("no state= file: wall clock restarts at the epoch on every boot");
            DeviceStore::Nothing(NoStore)
        }
    };
    let wall = WALL.init(PersistedWall::boot(store, now));
    let boot_wall = wall.base_secs();
    defmt::info!("wall clock starts at {} s (persisted: {})", boot_wall, wall.is_healthy());
    let mut node = match build_node::<RustCrypto, _, Storage>(&cfg, rng, now) {
        Ok(n) => n,
        Err(e) => {
            defmt::error!("node: {}", e);
            fail(2, "peers")
        }
    };
    node.set_wall_time(now, wall.wall_at(now));
    if let Some(pk) = node.public_key() {
        defmt::info!("public key {=str}", pk.to_base64().as_str());
    }

    // SAFETY: the LAN9118 register block, used only by this driver.
    let eth = match unsafe { Lan9118::new(lan9118::BASE) } {
        Ok(d) => d,
        Err(e) => {
            defmt::error!("lan9118: {}", e);
            fail(4, "ethernet")
        }
    };
    let address = cfg.get("ip").and_then(parse_cidr).unwrap_or(Ipv4Cidr::new(Ipv4Addr::new(10, 0, 2, 15), 24));
    let gateway = cfg.get("gw").and_then(|g| Ipv4Addr::from_str(g).ok()).unwrap_or(Ipv4Addr::new(10, 0, 2, 2));
    let eth_cfg = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address,
        gateway: Some(gateway),
        dns_servers: Default::default(),
    });
    let (outer, eth_runner) = embassy_net::new(eth, eth_cfg, ETH_RES.take(), seed_eth);
    spawner.spawn(eth_task(eth_runner).unwrap_or_else(|_| fail(5, "spawn")));

    let (tunnel, device) = Tunnel::new(node, outer, cfg.listen_port, TUN_RES.take(), &STATS);
    let tunnel = tunnel.with_wall_keeper(wall);
    let (vip, vip_runner) = embassy_net::new(device, tunnel_net_config(&cfg), VIP_RES.take(), seed_vip);
    spawner.spawn(vip_task(vip_runner).unwrap_or_else(|_| fail(5, "spawn")));
    match &cfg.nucleus {
        Some(spec) => {
            // Join the cluster through the Nucleus (its time becomes ours).
            defmt::info!(
                "cluster via nucleus {} as {}",
                defmt::Display2Format(&spec.endpoint),
                defmt::Display2Format(&cfg.vip)
            );
            IN_CLUSTER.store(true, Ordering::Relaxed);
            let client = CLIENT.init(NucleusClient::new(
                nucleus::client_config(spec, cfg.vip),
                nucleus::cluster_secret::<RustCrypto>(spec),
            ));
            let tunnel = tunnel.with_signaling(NucleusSignaling::new(client, &NUCLEUS));
            spawner.spawn(nucleus_tunnel_task(tunnel).unwrap_or_else(|_| fail(5, "spawn")));
        }
        None => spawner.spawn(tunnel_task(tunnel).unwrap_or_else(|_| fail(5, "spawn"))),
    }
    spawner.spawn(udp_echo(vip, 7).unwrap_or_else(|_| fail(5, "spawn")));
    spawner.spawn(control(vip, 9, boot_wall).unwrap_or_else(|_| fail(5, "spawn")));
    defmt::info!("up: vip {} on UDP port {}", cfg.vip, cfg.listen_port);
}
