//! The OmniNervous demo device on a Raspberry Pi Pico W: joins Wi-Fi (CYW43439
//! over PIO SPI), gets an address by DHCP, brings the tunnel up and answers on
//! its VIP (ICMP echo, UDP echo on port 7), like the QEMU demo.
//!
//! Build-time settings (environment): `OMNI_CONFIG` (the device's tunnel
//! configuration, see `omni_firmware::config`), `OMNI_WIFI_SSID`,
//! `OMNI_WIFI_PASSWORD`. The CYW43439 firmware, CLM and NVRAM blobs are not
//! in this repository: flash them (each prefixed with its length as a
//! little-endian u32) at 0x1010_0000, 0x1014_0000 and 0x1014_4000.
//! The wall-clock ceiling (TAI64N after reboot) lives in the last flash sector.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use cyw43::{Aligned, JoinOptions, A4};
use cyw43_pio::{PioSpi, DEFAULT_CLOCK_DIVIDER};
use defmt_rtt as _;
use embassy_executor::Spawner;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Stack, StackResources};
use embassy_rp::bind_interrupts;
use embassy_rp::clocks::RoscRng;
use embassy_rp::flash::{Blocking, Flash, ERASE_SIZE};
use embassy_rp::gpio::{Level, Output};
use embassy_rp::peripherals::{DMA_CH0, FLASH, PIO0};
use embassy_rp::pio::{InterruptHandler, Pio};
use embassy_time::Timer;
use omni_core::crypto::RustCrypto;
use omni_core::storage::Fixed;
use omni_firmware::tunnel::{build_node, tunnel_net_config};
use omni_firmware::{omni_now, Config, PersistedWall, Tunnel, TunnelResources, TunnelStats, WallStore, TUNNEL_MTU};
use panic_probe as _;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use static_cell::{ConstStaticCell, StaticCell};

bind_interrupts!(struct Irqs {
    PIO0_IRQ_0 => InterruptHandler<PIO0>;
    DMA_IRQ_0 => embassy_rp::dma::InterruptHandler<DMA_CH0>;
});

const FLASH_SIZE: usize = 2 * 1024 * 1024;
/// The last sector holds the wall-clock ceiling.
const WALL_SECTOR: u32 = (FLASH_SIZE - ERASE_SIZE) as u32;
const FW_ADDR: usize = 0x1010_0000;
const CLM_ADDR: usize = 0x1014_0000;
const NVRAM_ADDR: usize = 0x1014_4000;

type Storage = Fixed<4, 16, 16>;
type Tun = Tunnel<'static, RustCrypto, ChaCha20Rng, Storage>;
type Cyw43Spi = PioSpi<'static, PIO0, 0>;

/// The ceiling in the last flash sector: erased (all 0xff) means none.
/// One erase + page write per boot and per hour of uptime (`RESERVE_SECS`).
struct FlashStore(Flash<'static, FLASH, Blocking, FLASH_SIZE>);

impl WallStore for FlashStore {
    fn load(&mut self) -> Option<u64> {
        let mut b = [0u8; 8];
        self.0.blocking_read(WALL_SECTOR, &mut b).ok()?;
        let v = u64::from_le_bytes(b);
        (v != u64::MAX).then_some(v)
    }
    fn store(&mut self, ceiling: u64) -> bool {
        let mut page = [0xffu8; 256];
        page[..8].copy_from_slice(&ceiling.to_le_bytes());
        self.0.blocking_erase(WALL_SECTOR, WALL_SECTOR + ERASE_SIZE as u32).is_ok()
            && self.0.blocking_write(WALL_SECTOR, &page).is_ok()
    }
}

/// A length-prefixed blob flashed at `addr` (memory-mapped through XIP).
fn blob(addr: usize, max: usize) -> &'static Aligned<A4, [u8]> {
    // SAFETY: XIP flash is mapped read-only for the program's lifetime; the
    // data after the 4-byte length is 4-byte aligned; `Aligned` is a
    // `repr(C)` wrapper with the slice as its only sized-by-metadata field.
    unsafe {
        let len = (core::ptr::read_volatile(addr as *const u32) as usize).min(max);
        let data = core::ptr::slice_from_raw_parts((addr + 4) as *const u8, len);
        &*(data as *const Aligned<A4, [u8]>)
    }
}

static STATS: TunnelStats = TunnelStats::new();
static ECHOES: AtomicU32 = AtomicU32::new(0);
static CY_STATE: StaticCell<cyw43::State> = StaticCell::new();
static WIFI_RES: ConstStaticCell<StackResources<4>> = ConstStaticCell::new(StackResources::new());
static VIP_RES: ConstStaticCell<StackResources<4>> = ConstStaticCell::new(StackResources::new());
static TUN_RES: ConstStaticCell<TunnelResources<2, 2>> = ConstStaticCell::new(TunnelResources::new());
static WALL: StaticCell<PersistedWall<FlashStore>> = StaticCell::new();

#[embassy_executor::task]
async fn cyw43_task(runner: cyw43::Runner<'static, cyw43::SpiBus<Output<'static>, Cyw43Spi>>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn wifi_net_task(mut runner: embassy_net::Runner<'static, cyw43::NetDriver<'static>>) -> ! {
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

/// No configuration: nothing to do but say so.
async fn halt(why: &str) -> ! {
    loop {
        defmt::error!("halted: {=str}", why);
        Timer::after_secs(10).await;
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_rp::init(Default::default());
    let cfg = match Config::parse(option_env!("OMNI_CONFIG").unwrap_or("")) {
        Ok(c) => c,
        Err(e) => {
            defmt::error!("OMNI_CONFIG: {}", e);
            halt("no tunnel configuration (set OMNI_CONFIG at build time)").await
        }
    };
    let mut seed = [0u8; 32];
    RoscRng.fill_bytes(&mut seed);
    let mut rng = ChaCha20Rng::from_seed(seed);
    let (seed_wifi, seed_vip) = (rng.next_u64(), rng.next_u64());

    let now = omni_now();
    let wall = WALL.init(PersistedWall::boot(FlashStore(Flash::new_blocking(p.FLASH)), now));
    let mut node = match build_node::<RustCrypto, _, Storage>(&cfg, rng, now) {
        Ok(n) => n,
        Err(e) => {
            defmt::error!("node: {}", e);
            halt("peers").await
        }
    };
    node.set_wall_time(now, wall.wall_at(now));

    // Wi-Fi: CYW43439 on PIO0 (SPI), power on GPIO23, CS on GPIO25.
    let pwr = Output::new(p.PIN_23, Level::Low);
    let cs = Output::new(p.PIN_25, Level::High);
    let mut pio = Pio::new(p.PIO0, Irqs);
    let dma = embassy_rp::dma::Channel::new(p.DMA_CH0, Irqs);
    let spi = PioSpi::new(&mut pio.common, pio.sm0, DEFAULT_CLOCK_DIVIDER, pio.irq0, cs, p.PIN_24, p.PIN_29, dma);
    let state = CY_STATE.init(cyw43::State::new());
    let (wifi, mut control, runner) =
        cyw43::new(state, pwr, spi, blob(FW_ADDR, 256 * 1024), blob(NVRAM_ADDR, 4096)).await;
    spawner.spawn(cyw43_task(runner).unwrap_or_else(|_| defmt::panic!("spawn")));
    control.init(blob(CLM_ADDR, 16 * 1024)).await;
    control.set_power_management(cyw43::PowerManagementMode::PowerSave).await;

    let (outer, wifi_runner) =
        embassy_net::new(wifi, embassy_net::Config::dhcpv4(Default::default()), WIFI_RES.take(), seed_wifi);
    spawner.spawn(wifi_net_task(wifi_runner).unwrap_or_else(|_| defmt::panic!("spawn")));
    let ssid = option_env!("OMNI_WIFI_SSID").unwrap_or("omni");
    let password = option_env!("OMNI_WIFI_PASSWORD").unwrap_or("");
    while let Err(e) = control.join(ssid, JoinOptions::new(password.as_bytes())).await {
        defmt::warn!("wifi join failed: {}", e);
        Timer::after_secs(2).await;
    }
    outer.wait_config_up().await;
    defmt::info!("wifi up: {}", outer.config_v4().map(|c| c.address));

    let (tunnel, device) = Tunnel::new(node, outer, cfg.listen_port, TUN_RES.take(), &STATS);
    let tunnel = tunnel.with_wall_keeper(wall);
    let (vip, vip_runner) = embassy_net::new(device, tunnel_net_config(&cfg), VIP_RES.take(), seed_vip);
    spawner.spawn(vip_net_task(vip_runner).unwrap_or_else(|_| defmt::panic!("spawn")));
    spawner.spawn(tunnel_task(tunnel).unwrap_or_else(|_| defmt::panic!("spawn")));
    spawner.spawn(udp_echo(vip).unwrap_or_else(|_| defmt::panic!("spawn")));
    defmt::info!("tunnel up: vip {}", cfg.vip);
}
