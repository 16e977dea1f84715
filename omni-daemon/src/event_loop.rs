//! The data plane: one thread sleeping in `ppoll` over the TUN device, the
//! UDP sockets, link notifications, a wake-up eventfd (the UAPI thread
//! changed something) and a signalfd. Its poll timeout is the node's next
//! deadline (`Node::poll_timeout`): there is no periodic tick.
//!
//! One thread carries both directions. A thread per direction (what this
//! was before) cost more CPU per Gbit on the two-core machines we measure
//! on: lock handoffs, wake-ups between the threads, the node's state moving
//! between cores, and a core taken from the traffic's own ends (iperf3).
//! The edge's single-threaded loop, on the same batched path, showed it
//! first (see `bench/iperf-vs-wireguard-go.sh` and the README's figures).
//!
//! Each readable source is drained in a bounded batch (see [`crate::batch`]):
//! TUN reads are sealed in place and go out as UDP GSO sends, GRO reads are
//! opened in place and written to the TUN device with TCP segments merged.
//! The device lock (shared with the UAPI thread) is held per read, never
//! across a system call. Then everything the node wants to send
//! (`poll_transmit`) goes out.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::time::TimeSpec;
use omni_core::node::{Received, Transmit, IN_PLACE_OFFSET};
use omni_core::{Event, Instant};
use tracing::{debug, info, warn};

use crate::batch::{self, RxQueue, Sealer, TxQueue, BATCH, SEND_AT};
use crate::clock::Clock;
use crate::device::Device;
use crate::netlink::LinkWatch;
use crate::tun::{self, Tun};
use crate::udp::{self, Sockets};

/// Largest IP packet a TUN device can hand us, plus WireGuard's overhead.
const BUF_LEN: usize = 65536 + 64;

/// What the data plane and the UAPI thread share.
#[derive(Debug)]
pub struct Shared {
    device: Mutex<Device>,
    /// Wakes the data plane.
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

/// The data plane's thread: both directions, timers, signals, link changes.
pub struct DataPlane {
    shared: Arc<Shared>,
    tun: Tun,
    link: Option<LinkWatch>,
    signals: SignalFd,
    tx: TxQueue,
    rx: RxQueue,
    /// The TUN device is gone (seen by a write).
    gone: bool,
    /// For what `poll_transmit` sends (handshakes, queued packets).
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

/// Seals under the device lock, taken per TUN read.
struct LockedSealer<'a> {
    shared: &'a Shared,
    clock: Clock,
    device: Option<MutexGuard<'a, Device>>,
    now: Instant,
}

impl Sealer for LockedSealer<'_> {
    fn begin(&mut self) {
        self.device = Some(self.shared.lock());
        self.now = self.clock.now();
    }

    fn mtu(&self) -> u16 {
        self.device.as_ref().map_or(u16::MAX, |d| d.node.mtu())
    }

    fn seal(&mut self, buf: &mut [u8], len: usize) -> Option<Transmit> {
        let d = self.device.as_mut()?;
        batch::transmit_of(d.node.send_ip_in_place(self.now, buf, len))
    }

    fn end(&mut self) {
        self.device = None;
    }
}

impl DataPlane {
    pub fn new(shared: Arc<Shared>, tun: Tun, link: Option<LinkWatch>, signals: SignalFd) -> Self {
        let (tx, rx) = (TxQueue::new(), RxQueue::new());
        DataPlane { shared, tun, link, signals, tx, rx, gone: false, buf_out: vec![0; BUF_LEN] }
    }

    /// Runs the data plane until the interface is deleted or a termination
    /// signal arrives.
    pub fn run(&mut self) -> io::Result<Exit> {
        loop {
            // Timers first, then sleep until the next one or until I/O.
            let (deadline, sockets) = {
                let mut d = self.shared.lock();
                let now = d.clock.now();
                if d.node.poll_timeout().is_some_and(|t| t <= now) {
                    d.node.handle_timeout(now);
                    d.maybe_sync_wall_time(now);
                    flush(&mut d, now, &mut self.buf_out);
                }
                // The UAPI may have bound new sockets: taken afresh each time.
                (d.node.poll_timeout().map(|t| d.clock.until(t)), d.sockets.clone())
            };
            let readable = PollFlags::POLLIN;
            // Fixed slots: 0 TUN, 1 wake, 2 signals, 3 link (signals again
            // without one), 4.. the sockets.
            let signals = self.signals.as_fd();
            let mut fds = [
                PollFd::new(self.tun.as_fd(), readable),
                PollFd::new(self.shared.wake.as_fd(), readable),
                PollFd::new(signals, readable),
                PollFd::new(self.link.as_ref().map_or(signals, |l| l.events_fd()), readable),
                PollFd::new(signals, readable),
                PollFd::new(signals, readable),
            ];
            let mut watched = 4;
            for s in [&sockets.v4, &sockets.v6].into_iter().flatten() {
                fds[watched] = PollFd::new(s.as_fd(), readable);
                watched += 1;
            }
            match nix::poll::ppoll(&mut fds[..watched], deadline.map(TimeSpec::from_duration), None) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready = fds.map(|f| f.revents().is_some_and(|r| !r.is_empty()));
            let [tun_ready, wake_ready, signal_ready, link_ready, ..] = ready;

            if signal_ready {
                if let Ok(Some(info)) = self.signals.read_signal() {
                    if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                        return Ok(Exit::Signal(sig));
                    }
                }
            }
            if wake_ready {
                // The UAPI changed something: send what is queued (a
                // keepalive when persistent keepalive was just enabled).
                let _ = self.shared.wake.read();
                let mut d = self.shared.lock();
                let now = d.clock.now();
                flush(&mut d, now, &mut self.buf_out);
            }
            for (i, s) in [&sockets.v4, &sockets.v6].into_iter().flatten().enumerate() {
                if ready[4 + i] {
                    self.handle_udp(s, &sockets);
                }
            }
            if self.gone || (tun_ready && !self.handle_tun()?) {
                return Ok(Exit::InterfaceDeleted);
            }
            if link_ready && self.link.is_some() {
                if let Some(link) = &self.link {
                    link.drain();
                }
                self.refresh_link();
            }
        }
    }

    /// Reads a batch of datagrams (runs of them with UDP GRO) from one
    /// socket, decrypts them in place, and has the packets written to the
    /// TUN device, TCP segments of a flow merged.
    fn handle_udp(&mut self, socket: &UdpSocket, sockets: &Sockets) {
        let merge = self.tun.vnet();
        let mut end = 0;
        for _ in 0..BATCH {
            // Write what a GRO run (or many small datagrams) gave, so the
            // TUN side gets a steady stream rather than bursts.
            if end >= SEND_AT {
                self.write_tun();
                end = 0;
            }
            let r = match udp::recv(socket, self.rx.read_slot(end)) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("UDP receive: {e}");
                    break;
                }
            };
            let from = r.from;
            // Locked per read, as on the TUN side.
            let mut d = self.shared.lock();
            let now = d.clock.now();
            for at in (end..end + r.len).step_by(r.seg) {
                let datagram = &mut self.rx.buf[at..(at + r.seg).min(end + r.len)];
                match d.node.handle_datagram_in_place(now, from, datagram) {
                    Ok(Received::Packet { len, .. }) => self.rx.push(at + IN_PLACE_OFFSET, len, merge),
                    Ok(Received::Reply { len }) => send(sockets, &datagram[..len], from),
                    Ok(Received::Done) => {}
                    Err(e) => debug!(%from, "datagram dropped: {e:?}"),
                }
            }
            drop(d);
            end += r.len;
        }
        self.write_tun();
        let mut d = self.shared.lock();
        let now = d.clock.now();
        flush(&mut d, now, &mut self.buf_out);
    }

    /// Writes the decrypted packets collected so far to the TUN device.
    fn write_tun(&mut self) {
        self.gone |= self.rx.write_tun(&self.tun).is_err();
    }

    /// Reads a batch of packets from the TUN device, encrypts them where
    /// they landed and sends the datagrams; then what the node queued.
    /// `Ok(false)`: the interface is gone.
    fn handle_tun(&mut self) -> io::Result<bool> {
        let (sockets, clock) = {
            let mut d = self.shared.lock();
            let now = d.clock.now();
            d.maybe_sync_wall_time(now);
            (d.sockets.clone(), d.clock)
        };
        // The lock is held per read (one packet or one 64 KiB super-packet),
        // so the UAPI thread never waits long.
        let mut sealer = LockedSealer { shared: &self.shared, clock, device: None, now: Instant::ZERO };
        let read = self.tx.read_tun(&self.tun, &sockets, &mut sealer);
        drop(sealer);
        if read.gone {
            return Ok(false);
        }
        {
            // Handshakes a packet asked for, packets queued until one completed.
            let mut d = self.shared.lock();
            let now = d.clock.now();
            flush(&mut d, now, &mut self.buf_out);
        }
        if read.oversized {
            // The MTU was raised without a notification reaching us.
            self.refresh_link();
        }
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
