//! The data plane: one thread, one `ppoll` over the TUN device, the UDP
//! sockets, link notifications, a wake-up eventfd (the UAPI changed
//! something) and a signalfd. The poll timeout is the node's next deadline
//! (`Node::poll_timeout`): there is no periodic tick.
//!
//! Each readable source is drained in a bounded batch under the device lock,
//! then everything the node wants to send (`poll_transmit`) goes out.

use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::time::TimeSpec;
use omni_core::node::{Received, SendError, Sent};
use omni_core::{Event, Instant};
use tracing::{debug, info, trace, warn};

use crate::device::Device;
use crate::netlink::LinkWatch;
use crate::tun::{self, Tun};
use crate::udp::{self, Sockets};

/// Packets taken from one source before looking at the others.
const BATCH: usize = 64;
/// Largest IP packet a TUN device can hand us, plus WireGuard's overhead.
const BUF_LEN: usize = 65536 + 64;

/// What the data plane and the UAPI threads share.
#[derive(Debug)]
pub struct Shared {
    device: Mutex<Device>,
    wake: EventFd,
}

impl Shared {
    pub fn new(device: Device) -> io::Result<Self> {
        let wake = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Shared { device: Mutex::new(device), wake })
    }

    pub fn lock(&self) -> MutexGuard<'_, Device> {
        // A panic while holding the lock leaves a consistent node (it never
        // panics mid-update by design); keep serving.
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the data plane recompute its deadline and socket set.
    pub fn wake(&self) {
        let _ = self.wake.write(1);
    }
}

/// Why the data plane stopped.
#[derive(Debug)]
pub enum Exit {
    InterfaceDeleted,
    Signal(Signal),
}

pub struct DataPlane {
    shared: Arc<Shared>,
    tun: Tun,
    link: Option<LinkWatch>,
    signals: SignalFd,
    buf_in: Vec<u8>,
    buf_out: Vec<u8>,
}

/// Sends one datagram; failures are the network's business, logged quietly.
fn send(sockets: &Sockets, buf: &[u8], to: std::net::SocketAddr) {
    if let Err(e) = sockets.send_to(buf, to) {
        debug!(%to, "send failed: {e}");
    }
}

/// Sends everything the node has queued and logs its events.
fn flush(d: &mut Device, now: Instant, out: &mut [u8]) {
    loop {
        match d.node.poll_transmit(now, out) {
            Ok(Some(t)) => send(&d.sockets, &out[..t.len], t.to),
            Ok(None) => break,
            Err(e) => {
                warn!("poll_transmit: {e:?}");
                break;
            }
        }
    }
    while let Some(event) = d.node.poll_event() {
        let key = |peer| d.node.peer_stats(peer).map(|s| s.public_key.to_string()).unwrap_or_default();
        match event {
            Event::HandshakeCompleted { peer, initiator } => {
                info!(peer = %key(peer), initiator, "handshake completed")
            }
            Event::EndpointChanged { peer, endpoint } => info!(peer = %key(peer), %endpoint, "endpoint changed"),
            Event::HandshakeFailed { peer } => info!(peer = %key(peer), "handshake did not complete"),
            Event::KeysExpired { peer } => debug!(peer = %key(peer), "session keys expired"),
            other => debug!("{other:?}"),
        }
    }
}

impl DataPlane {
    pub fn new(shared: Arc<Shared>, tun: Tun, link: Option<LinkWatch>, signals: SignalFd) -> Self {
        DataPlane { shared, tun, link, signals, buf_in: vec![0; BUF_LEN], buf_out: vec![0; BUF_LEN] }
    }

    pub fn run(&mut self) -> io::Result<Exit> {
        loop {
            // Timers first, then sleep until the next one or until I/O.
            let (sockets, deadline) = {
                let mut d = self.shared.lock();
                let now = d.clock.now();
                if d.node.poll_timeout().is_some_and(|t| t <= now) {
                    d.node.handle_timeout(now);
                    d.maybe_sync_wall_time(now);
                    flush(&mut d, now, &mut self.buf_out);
                }
                (d.sockets.clone(), d.node.poll_timeout().map(|t| d.clock.until(t)))
            };
            let readable = PollFlags::POLLIN;
            let mut fds = vec![
                PollFd::new(self.tun.as_fd(), readable),
                PollFd::new(self.shared.wake.as_fd(), readable),
                PollFd::new(self.signals.as_fd(), readable),
            ];
            let socket_at = fds.len();
            for s in [&sockets.v4, &sockets.v6].into_iter().flatten() {
                fds.push(PollFd::new(s.as_fd(), readable));
            }
            let link_at = fds.len();
            if let Some(link) = &self.link {
                fds.push(PollFd::new(link.events_fd(), readable));
            }
            match nix::poll::ppoll(&mut fds, deadline.map(TimeSpec::from_duration), None) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready: Vec<PollFlags> = fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect();
            drop(fds);
            let any = |i: usize| ready.get(i).is_some_and(|r| !r.is_empty());

            if any(2) {
                if let Ok(Some(info)) = self.signals.read_signal() {
                    if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                        return Ok(Exit::Signal(sig));
                    }
                }
            }
            if any(1) {
                // The UAPI changed something: send what it queued (a
                // keepalive when persistent keepalive was just enabled).
                let _ = self.shared.wake.read();
                let mut d = self.shared.lock();
                let now = d.clock.now();
                flush(&mut d, now, &mut self.buf_out);
            }
            if any(0) && !self.handle_tun()? {
                return Ok(Exit::InterfaceDeleted);
            }
            for (i, s) in (socket_at..).zip([&sockets.v4, &sockets.v6].into_iter().flatten()) {
                if any(i) && !self.handle_udp(s)? {
                    return Ok(Exit::InterfaceDeleted);
                }
            }
            if any(link_at) {
                if let Some(link) = &self.link {
                    link.drain();
                }
                self.refresh_link();
            }
        }
    }

    /// Reads a batch of packets from the TUN device and sends them to peers.
    /// `Ok(false)`: the interface is gone.
    fn handle_tun(&mut self) -> io::Result<bool> {
        let mut oversized = false;
        {
            let mut d = self.shared.lock();
            let now = d.clock.now();
            d.maybe_sync_wall_time(now);
            for _ in 0..BATCH {
                let n = match self.tun.recv(&mut self.buf_in) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if tun::is_gone(&e) => return Ok(false),
                    Err(e) => {
                        warn!("TUN read: {e}");
                        break;
                    }
                };
                let packet = &self.buf_in[..n];
                oversized |= n > usize::from(d.node.mtu());
                match d.node.send_ip(now, packet, &mut self.buf_out) {
                    Ok(Sent::Transmit(t)) => send(&d.sockets, &self.buf_out[..t.len], t.to),
                    Ok(Sent::Queued { .. }) => {}
                    Err(SendError::NoRoute) => trace!("no peer for packet"),
                    Err(e) => debug!("packet dropped: {e:?}"),
                }
            }
            flush(&mut d, now, &mut self.buf_out);
        }
        if oversized {
            // The MTU was raised without a notification reaching us.
            self.refresh_link();
        }
        Ok(true)
    }

    /// Reads a batch of datagrams from one socket and hands them to the node.
    /// `Ok(false)`: the interface is gone.
    fn handle_udp(&mut self, socket: &std::net::UdpSocket) -> io::Result<bool> {
        let mut d = self.shared.lock();
        let now = d.clock.now();
        for _ in 0..BATCH {
            let (n, from) = match socket.recv_from(&mut self.buf_in) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("UDP receive: {e}");
                    break;
                }
            };
            let from = udp::canonical(from);
            match d.node.handle_datagram(now, from, &self.buf_in[..n], &mut self.buf_out) {
                Ok(Received::Packet { len, .. }) => match self.tun.send(&self.buf_out[..len]) {
                    Ok(_) => {}
                    Err(e) if tun::is_gone(&e) => return Ok(false),
                    Err(e) => trace!("TUN write: {e}"),
                },
                Ok(Received::Reply { len }) => send(&d.sockets, &self.buf_out[..len], from),
                Ok(Received::Done) => {}
                Err(e) => debug!(%from, "datagram dropped: {e:?}"),
            }
        }
        flush(&mut d, now, &mut self.buf_out);
        Ok(true)
    }

    /// Follows the interface: into another network namespace if it moved,
    /// and its MTU into the node.
    fn refresh_link(&mut self) {
        let name = match self.tun.name() {
            Ok(n) => n,
            Err(e) if tun::is_gone(&e) => return, // the next TUN poll reports it
            Err(e) => {
                warn!("cannot read the interface name: {e}");
                return;
            }
        };
        if let Ok(ns) = self.tun.netns() {
            let inode = nix::sys::stat::fstat(&ns).map(|s| s.st_ino).unwrap_or(0);
            if self.link.as_ref().is_none_or(|l| l.ns_inode() != inode) {
                match LinkWatch::open_in(&ns) {
                    Ok(w) => {
                        info!(interface = %name, "interface is in another network namespace now; following it");
                        self.link = Some(w);
                    }
                    Err(e) => warn!("cannot watch the interface's new namespace: {e}"),
                }
            }
        }
        let Some(link) = &mut self.link else { return };
        match link.mtu(&name) {
            Ok(mtu) => {
                let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
                let mut d = self.shared.lock();
                if d.node.mtu() != mtu {
                    info!(interface = %name, mtu, "MTU changed");
                    d.node.set_mtu(mtu);
                }
            }
            Err(e) => debug!("MTU query for {name}: {e}"),
        }
    }
}
