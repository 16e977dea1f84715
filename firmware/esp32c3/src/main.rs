//! The OmniNervous demo device on an ESP32-C3: joins Wi-Fi (esp-radio),
//! gets an address by DHCP, brings the tunnel up and answers on its VIP
//! (ICMP echo, UDP echo on port 7), like the QEMU demo.
//!
//! Build-time settings (environment): `OMNI_CONFIG` (the device's tunnel
//! configuration, see `omni_firmware::config`), `OMNI_WIFI_SSID`,
//! `OMNI_WIFI_PASSWORD`. The wall-clock ceiling (TAI64N after reboot) lives in
//! the last 4 KiB sector of the flash, outside the partition table's regions.
//!
//! The Wi-Fi driver needs a heap (esp-alloc, 72 KiB); the tunnel, the node
//! and the network stacks use static buffers only.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use defmt::{error, info, warn};
use embassy_executor::Spawner;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Stack, StackResources};
use embassy_time::Timer;
use esp_backtrace as _;
use esp_hal::clock::CpuClock;
use esp_hal::rng::Rng;
use esp_hal::timer::timg::TimerGroup;
use esp_println as _;
use esp_radio::wifi::sta::StationConfig;
use esp_radio::wifi::{AuthenticationMethodConfig, Config as WifiConfig, Interface, WifiController};
use esp_storage::FlashStorage;
use omni_core::crypto::RustCrypto;
use omni_core::storage::Fixed;
use omni_firmware::tunnel::{build_node, tunnel_net_config};
use omni_firmware::{omni_now, Config, PersistedWall, Tunnel, TunnelResources, TunnelStats, WallStore, TUNNEL_MTU};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use static_cell::{ConstStaticCell, StaticCell};

esp_bootloader_esp_idf::esp_app_desc!();

type Storage = Fixed<4, 16, 16>;
type Tun = Tunnel<'static, RustCrypto, ChaCha20Rng, Storage>;

/// The ceiling in the flash's last sector (erased = none). `FlashStorage::write`
/// erases and rewrites the sector: once per boot and per hour of uptime.
struct FlashStore {
    flash: FlashStorage<'static>,
    offset: u32,
}

impl WallStore for FlashStore {
    fn load(&mut self) -> Option<u64> {
        let mut b = [0u8; 8];
        self.flash.read(self.offset, &mut b).ok()?;
        let v = u64::from_le_bytes(b);
        (v != u64::MAX).then_some(v)
    }
    fn store(&mut self, ceiling: u64) -> bool {
        self.flash.write(self.offset, &ceiling.to_le_bytes()).is_ok()
    }
}

static STATS: TunnelStats = TunnelStats::new();
static ECHOES: AtomicU32 = AtomicU32::new(0);
static WIFI_RES: ConstStaticCell<StackResources<4>> = ConstStaticCell::new(StackResources::new());
static VIP_RES: ConstStaticCell<StackResources<4>> = ConstStaticCell::new(StackResources::new());
static TUN_RES: ConstStaticCell<TunnelResources<2, 2>> = ConstStaticCell::new(TunnelResources::new());
static WALL: StaticCell<PersistedWall<FlashStore>> = StaticCell::new();
static CONTROLLER: StaticCell<WifiController<'static>> = StaticCell::new();

#[embassy_executor::task]
async fn wifi_net_task(mut runner: embassy_net::Runner<'static, Interface>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn vip_net_task(
    mut runner: embassy_net::Runner<'static, embassy_net_driver_channel::Device<'static, TUNNEL_MTU>>,
) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn tunnel_task(tunnel: Tun) -> ! {
    tunnel.run().await
}

#[embassy_executor::task]
async fn udp_echo(stack: Stack<'static>) -> ! {
    let mut rx_meta = [PacketMetadata::EMPTY; 2];
    let mut rx_buf = [0u8; 1536];
    let mut tx_meta = [PacketMetadata::EMPTY; 2];
    let mut tx_buf = [0u8; 1536];
    let mut sock = UdpSocket::new(stack, &mut rx_meta, &mut rx_buf, &mut tx_meta, &mut tx_buf);
    let _ = sock.bind(7);
    let mut buf = [0u8; TUNNEL_MTU];
    loop {
        let Ok((n, meta)) = sock.recv_from(&mut buf).await else { continue };
        ECHOES.store(ECHOES.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let _ = sock.send_to(&buf[..n], meta.endpoint).await;
    }
}

async fn halt(why: &str) -> ! {
    loop {
        error!("halted: {=str}", why);
        Timer::after_secs(10).await;
    }
}

#[esp_rtos::main]
async fn main(spawner: Spawner) {
    let peripherals = esp_hal::init(esp_hal::Config::default().with_cpu_clock(CpuClock::max()));
    esp_alloc::heap_allocator!(size: 72 * 1024);
    let timg0 = TimerGroup::new(peripherals.TIMG0);
    esp_rtos::start(timg0.timer0, peripherals.FROM_CPU_INTR0);

    let cfg = match Config::parse(option_env!("OMNI_CONFIG").unwrap_or("")) {
        Ok(c) => c,
        Err(e) => {
            error!("OMNI_CONFIG: {}", e);
            halt("no tunnel configuration (set OMNI_CONFIG at build time)").await
        }
    };

    // Wi-Fi first: with the radio on, the RNG is a true random source.
    let controller = match WifiController::new(peripherals.WIFI, Default::default()) {
        Ok(c) => CONTROLLER.init(c),
        Err(e) => {
            error!("wifi: {}", e);
            halt("wifi").await
        }
    };
    let mut seed = [0u8; 32];
    Rng::new().fill_bytes(&mut seed);
    let mut rng = ChaCha20Rng::from_seed(seed);
    let (seed_wifi, seed_vip) = (rng.next_u64(), rng.next_u64());

    let now = omni_now();
    let flash = FlashStorage::new(peripherals.FLASH);
    let offset = flash.capacity() as u32 - FlashStorage::SECTOR_SIZE;
    let wall = WALL.init(PersistedWall::boot(FlashStore { flash, offset }, now));
    let mut node = match build_node::<RustCrypto, _, Storage>(&cfg, rng, now) {
        Ok(n) => n,
        Err(e) => {
            error!("node: {}", e);
            halt("peers").await
        }
    };
    node.set_wall_time(now, wall.wall_at(now));

    let ssid = option_env!("OMNI_WIFI_SSID").unwrap_or("omni");
    let password = option_env!("OMNI_WIFI_PASSWORD").unwrap_or("");
    let auth = if password.is_empty() {
        AuthenticationMethodConfig::Open
    } else {
        match password.try_into() {
            Ok(p) => AuthenticationMethodConfig::Wpa2Personal(p),
            Err(_) => halt("OMNI_WIFI_PASSWORD").await,
        }
    };
    let Ok(ssid) = ssid.try_into() else { halt("OMNI_WIFI_SSID").await };
    let station = StationConfig::default().with_ssid(ssid).with_authentication(auth);
    if let Err(e) = controller.set_config(&WifiConfig::Station(station)) {
        error!("wifi config: {}", e);
        halt("wifi config").await
    }
    let (outer, wifi_runner) = embassy_net::new(
        Interface::station(),
        embassy_net::Config::dhcpv4(Default::default()),
        WIFI_RES.take(),
        seed_wifi,
    );
    spawner.spawn(wifi_net_task(wifi_runner).unwrap_or_else(|_| defmt::panic!("spawn")));
    while let Err(e) = controller.connect_async().await {
        warn!("wifi connect: {}", e);
        Timer::after_secs(2).await;
    }
    outer.wait_config_up().await;
    info!("wifi up: {}", outer.config_v4().map(|c| c.address));

    let (tunnel, device) = Tunnel::new(node, outer, cfg.listen_port, TUN_RES.take(), &STATS);
    let tunnel = tunnel.with_wall_keeper(wall);
    let (vip, vip_runner) = embassy_net::new(device, tunnel_net_config(&cfg), VIP_RES.take(), seed_vip);
    spawner.spawn(vip_net_task(vip_runner).unwrap_or_else(|_| defmt::panic!("spawn")));
    spawner.spawn(tunnel_task(tunnel).unwrap_or_else(|_| defmt::panic!("spawn")));
    spawner.spawn(udp_echo(vip).unwrap_or_else(|_| defmt::panic!("spawn")));
    info!("tunnel up: vip {}", cfg.vip);
}
