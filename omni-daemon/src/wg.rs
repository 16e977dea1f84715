//! `wg` mode: a userspace WireGuard interface following the contract of
//! wireguard-go and boringtun-cli, so `wg`, `wg-quick` (through
//! `WG_QUICK_USERSPACE_IMPLEMENTATION`) and friends drive it unchanged.
//!
//! Start-up order matters: everything that can fail (TUN, UDP, UAPI socket)
//! happens before detaching, so the exit status of `omni-daemon IFNAME`
//! tells whether the interface is ready; threads start only after the fork.

use std::sync::Arc;

use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::device::Device;
use crate::event_loop::{DataPlane, Exit, Shared};
use crate::netlink::LinkWatch;
use crate::tun::Tun;
use crate::uapi::UapiSocket;
use crate::udp::Sockets;

/// The MTU a new interface gets (what wireguard-go and wg-quick use).
const DEFAULT_MTU: u32 = 1420;

#[derive(Debug)]
pub struct Options {
    pub interface: String,
    pub foreground: bool,
    /// Keep logging to stderr after detaching (a log level was asked for).
    pub keep_stderr: bool,
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    // Sockets and any file we create are for root only.
    nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
    // Termination signals arrive through a signalfd in the data plane; block
    // them now so every later thread inherits the mask.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().context("blocking signals")?;

    let clock = Clock::new();
    let tun = Tun::create(&opts.interface, crate::udp::offload_enabled())
        .with_context(|| format!("cannot create TUN interface {:?}", opts.interface))?;
    let name = tun.name().context("reading the interface name")?;
    let mut link = match LinkWatch::open_here() {
        Ok(l) => Some(l),
        Err(e) => {
            warn!("no rtnetlink (MTU changes will not be followed): {e}");
            None
        }
    };
    let mut mtu = DEFAULT_MTU;
    if let Some(l) = &mut link {
        if let Err(e) = l.set_mtu(&name, DEFAULT_MTU) {
            warn!("cannot set MTU {DEFAULT_MTU} on {name}: {e}");
        }
        mtu = l.mtu(&name).unwrap_or(DEFAULT_MTU);
    }
    let sockets = Sockets::bind(0, 0).context("cannot bind the UDP socket")?;
    let uapi = UapiSocket::bind(&name).context("cannot create the UAPI socket")?;
    let socket_file = uapi.remover();

    if !opts.foreground {
        if let Err(e) = crate::daemon::detach(opts.keep_stderr) {
            socket_file.remove();
            return Err(e).context("cannot detach into the background");
        }
    }
    info!(interface = %name, port = sockets.port, mtu, uapi = %uapi.path().display(), "omni-daemon running");

    let result = (|| -> anyhow::Result<Exit> {
        let device = Device::new(clock, sockets, u16::try_from(mtu).unwrap_or(u16::MAX));
        let shared = Arc::new(Shared::new(device).context("eventfd")?);
        let sigfd =
            SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).context("signalfd")?;
        let server = shared.clone();
        std::thread::Builder::new().name("uapi".into()).spawn(move || uapi.serve(server)).context("UAPI thread")?;
        // The data plane owns the TUN device: it is closed (and the
        // interface deleted) here, before the UAPI socket goes.
        Ok(DataPlane::new(shared, tun, link, sigfd).run()?)
    })();
    socket_file.remove();
    match result? {
        Exit::InterfaceDeleted => info!(interface = %name, "interface deleted; exiting"),
        Exit::Signal(sig) => info!(interface = %name, "{sig}; shutting down"),
    }
    Ok(())
}
