//! Board-independent OmniNervous firmware.
//!
//! - [`tunnel`]: a task that drives an `omni_core::Node` over an embassy-net
//!   UDP socket (the "outer" network) and exposes the decrypted tunnel as an
//!   embassy-net device (an `embassy-net-driver-channel` with IP medium), so
//!   applications use ordinary embassy-net sockets on the virtual IP (VIP).
//! - [`wall`]: TAI64N wall time for boards without a battery-backed clock: a
//!   counter persisted in flash (or the board's equivalent) that only goes up,
//!   so a rebooted device's handshakes are never taken for replays.
//! - [`nucleus`]: joining a cluster through a Nucleus (omni-core's
//!   `NucleusClient` as the tunnel's [`Signaling`](tunnel::Signaling)), with
//!   wall time from the Nucleus kept monotonic by [`wall`].
//! - [`config`]: one text format for a device's tunnel configuration, parsed
//!   without allocation (compiled in, read from flash, or from the QEMU
//!   command line).
//!
//! Everything uses static buffers; there is no heap.
#![no_std]

pub mod config;
pub mod nucleus;
pub mod tunnel;
pub mod wall;

pub use config::{Config, ConfigError, NucleusSpec, PeerSpec};
pub use tunnel::{Tunnel, TunnelResources, TunnelStats, TUNNEL_MTU};
pub use wall::{PersistedWall, WallStore};

/// omni-core's clock from embassy's: nanoseconds since boot.
pub fn omni_now() -> omni_core::Instant {
    omni_core::Instant::from_nanos(embassy_time::Instant::now().as_micros().saturating_mul(1000))
}

/// An omni-core deadline as an embassy instant, rounded up so a timer never
/// fires before the node's deadline.
pub fn to_embassy(t: omni_core::Instant) -> embassy_time::Instant {
    embassy_time::Instant::from_micros(t.as_nanos().div_ceil(1000))
}
