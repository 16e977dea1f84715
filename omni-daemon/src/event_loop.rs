//! The data plane: two threads, one per direction, each sleeping in `ppoll`.
//!
//! - The main thread ([`DataPlane`]) reads the TUN device (outgoing packets)
//!   and also watches link notifications, a wake-up eventfd (the UAPI changed
//!   something) and a signalfd. Its poll timeout is the node's next deadline
//!   (`Node::poll_timeout`): there is no periodic tick.
//! - The receive thread ([`Receiver`]) reads the UDP sockets and writes
//!   decrypted packets to the TUN device.
//!
//! Each readable source is drained in a bounded batch under the device lock;
//! the resulting `sendmsg`/`writev` calls, where the kernel does most of its
//! work, run after the lock is released, so each direction's system calls
//! overlap the other's crypto. Then everything the node wants to send
//! (`poll_transmit`) goes out.
//!
//! Zero copy: a TUN read lands 16 bytes into the transmit buffer and is
//! encrypted there (`Node::send_ip_in_place`); a GSO super-packet is cut into
//! segments laid out right after it, each encrypted where it was written.
//! The datagrams of a batch sit back to back and go out as UDP GSO sends. A
//! received (GRO) run of datagrams is decrypted where it landed
//! (`Node::handle_datagram_in_place`) and the packets are written with
//! `writev`, TCP segments merged into super-packets (see [`crate::offload`]).

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::time::TimeSpec;
use omni_core::node::{Received, SendError, Sent, IN_PLACE_OFFSET};
use omni_core::{Event, Instant};
use tracing::{debug, info, trace, warn};

use crate::device::Device;
use crate::netlink::LinkWatch;
use crate::offload::{self, Gro, Segmenter, VnetHdr, VNET_HDR_LEN};
use crate::tun::{self, Tun};
use crate::udp::{self, Sockets};

/// Reads from one source before looking at the others.
const BATCH: usize = 64;
/// Largest IP packet a TUN device can hand us, plus WireGuard's overhead.
const BUF_LEN: usize = 65536 + 64;
/// Largest TUN read: a 64 KiB (super-)packet behind its vnet header.
const TUN_READ_MAX: usize = 65535 + VNET_HDR_LEN;
/// Datagrams (or decrypted packets) are sent (written) once this many bytes
/// have collected, and at the end of a batch.
const SEND_AT: usize = 65536;
/// The transmit buffer: datagrams of several small reads wait there back to
/// back. Past `SEND_AT` comes one more read: a 64 KiB super-packet and the
/// segments cut from it (MTU-sized ones take ~70 KiB; smaller ones more).
const TX_BUF: usize = SEND_AT + 4 * 65536;
/// The receive buffer: GRO reads, decrypted in place, wait there to be
/// merged and written to the TUN device.
const RX_BUF: usize = SEND_AT + 2 * udp::GRO_BUF;

/// Encrypted datagrams waiting to be sent, back to back in `buf`.
struct TxQueue {
    buf: Vec<u8>,
    batch: TxBatch,
}

/// Decrypted packets waiting to be written to the TUN device.
struct RxQueue {
    buf: Vec<u8>,
    gro: Gro,
}

/// The sends the datagrams in a [`TxQueue`] make up: a run of equal-sized
/// datagrams to one destination (the last may be shorter) is one UDP GSO send.
#[derive(Default)]
struct TxBatch {
    sends: Vec<TxSend>,
    /// Where the next datagram may go.
    end: usize,
}

struct TxSend {
    to: std::net::SocketAddr,
    start: usize,
    len: usize,
    seg: usize,
    count: usize,
}

impl TxBatch {
    /// Records the datagram at `buf[start..start + len]`.
    fn push(&mut self, start: usize, len: usize, to: std::net::SocketAddr) {
        self.end = start + len;
        if let Some(s) = self.sends.last_mut() {
            let joins = s.to == to
                && s.start + s.len == start
                && s.len % s.seg == 0 // no shorter datagram ended the run
                && len <= s.seg
                && s.count < udp::GSO_MAX_SEGMENTS
                && s.len + len <= udp::GSO_MAX_BYTES;
            if joins {
                s.len += len;
                s.count += 1;
                return;
            }
        }
        self.sends.push(TxSend { to, start, len, seg: len, count: 1 });
    }
}

impl TxQueue {
    fn flush(&mut self, sockets: &Sockets) {
        for s in self.batch.sends.drain(..) {
            if let Err(e) = sockets.send_segments(&self.buf[s.start..s.start + s.len], s.seg, s.to) {
                debug!(to = %s.to, "send failed: {e}");
            }
        }
        self.batch.end = 0;
    }
}

/// Queues what `send_ip_in_place` made of the packet in the slot at `start`;
/// returns the bytes it took.
fn queue_sent(sent: Result<Sent, SendError>, batch: &mut TxBatch, start: usize) -> usize {
    match sent {
        Ok(Sent::Transmit(t)) => {
            batch.push(start, t.len, t.to);
            t.len
        }
        Ok(Sent::Queued { .. }) => 0,
        Err(SendError::NoRoute) => {
            trace!("no peer for packet");
            0
        }
        Err(e) => {
            debug!("packet dropped: {e:?}");
            0
        }
    }
}

/// What the data-plane threads and the UAPI thread share.
#[derive(Debug)]
pub struct Shared {
    device: Mutex<Device>,
    /// Wakes the main thread.
    wake: EventFd,
    /// Wakes the receive thread (the sockets may have been replaced).
    wake_rx: EventFd,
    /// The deadline the main thread sleeps until (`Instant` nanoseconds,
    /// `u64::MAX`: none): the receive thread wakes it when a datagram
    /// brought the node's next deadline forward.
    main_sleeps_until: AtomicU64,
}

impl Shared {
    pub fn new(device: Device) -> io::Result<Self> {
        let eventfd = || EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC);
        Ok(Shared {
            device: Mutex::new(device),
            wake: eventfd()?,
            wake_rx: eventfd()?,
            main_sleeps_until: AtomicU64::new(u64::MAX),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Device> {
        // A panic while holding the lock leaves a consistent node (it never
        // panics mid-update by design); keep serving.
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the data plane recompute its deadline and socket set.
    pub fn wake(&self) {
        let _ = self.wake.write(1);
        let _ = self.wake_rx.write(1);
    }
}

/// Why the data plane stopped.
#[derive(Debug)]
pub enum Exit {
    InterfaceDeleted,
    Signal(Signal),
}

/// The main thread: TUN -> tunnel, timers, signals, link changes.
pub struct DataPlane {
    shared: Arc<Shared>,
    tun: Arc<Tun>,
    link: Option<LinkWatch>,
    signals: SignalFd,
    tx: TxQueue,
    /// For what `poll_transmit` sends (handshakes, queued packets).
    buf_out: Vec<u8>,
}

/// The receive thread: tunnel -> TUN.
pub struct Receiver {
    shared: Arc<Shared>,
    tun: Arc<Tun>,
    rx: RxQueue,
    /// The TUN device is gone (seen by a write).
    gone: bool,
    buf_out: Vec<u8>,
}

impl Receiver {
    /// Serves the UDP sockets for the life of the process. When the
    /// interface is gone it stops writing; the main thread notices and exits.
    fn run(mut self) {
        let mut sockets = self.shared.lock().sockets.clone();
        loop {
            let readable = PollFlags::POLLIN;
            let wake = PollFd::new(self.shared.wake_rx.as_fd(), readable);
            let mut fds = [wake.clone(), wake.clone(), wake];
            let mut n = 1;
            for s in [&sockets.v4, &sockets.v6].into_iter().flatten() {
                fds[n] = PollFd::new(s.as_fd(), readable);
                n += 1;
            }
            match nix::poll::ppoll(&mut fds[..n], None, None) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    warn!("receive thread: poll: {e}");
                    return;
                }
            }
            let ready = fds.map(|f| f.revents().is_some_and(|r| !r.is_empty()));
            if ready[0] {
                // The UAPI may have bound new sockets.
                let _ = self.shared.wake_rx.read();
                sockets = self.shared.lock().sockets.clone();
                continue;
            }
            for (i, s) in (1..n).zip([&sockets.v4, &sockets.v6].into_iter().flatten()) {
                if ready[i] {
                    self.handle_udp(s);
                }
            }
            if self.gone {
                // Nothing useful left to do; don't spin on readable sockets.
                std::thread::park();
            }
        }
    }

    /// Reads a batch of datagrams (runs of them with UDP GRO) from one
    /// socket, decrypts them in place, and has the packets written to the
    /// TUN device, TCP segments of a flow merged.
    fn handle_udp(&mut self, socket: &std::net::UdpSocket) {
        let merge = self.tun.vnet();
        let shared = Arc::clone(&self.shared);
        let (sockets, clock) = {
            let d = shared.lock();
            (d.sockets.clone(), d.clock)
        };
        let mut end = 0;
        for _ in 0..BATCH {
            // Write what a GRO run (or many small datagrams) gave, so the
            // TUN side gets a steady stream rather than bursts.
            if end >= SEND_AT {
                self.write_tun();
                end = 0;
            }
            let r = match udp::recv(socket, &mut self.rx.buf[end..end + udp::GRO_BUF]) {
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
            let mut d = shared.lock();
            let now = clock.now();
            let RxQueue { buf, gro } = &mut self.rx;
            for at in (end..end + r.len).step_by(r.seg) {
                let datagram = &mut buf[at..(at + r.seg).min(end + r.len)];
                match d.node.handle_datagram_in_place(now, from, datagram) {
                    Ok(Received::Packet { len, .. }) => gro.push(buf, at + IN_PLACE_OFFSET, len, merge),
                    Ok(Received::Reply { len }) => send(&sockets, &datagram[..len], from),
                    Ok(Received::Done) => {}
                    Err(e) => debug!(%from, "datagram dropped: {e:?}"),
                }
            }
            drop(d);
            end += r.len;
        }
        self.write_tun();
        let mut d = shared.lock();
        let now = d.clock.now();
        flush(&mut d, now, &mut self.buf_out);
        // A handshake (or a data packet) armed an earlier timer than the
        // main thread sleeps until: wake it to re-arm.
        if d.node.poll_timeout().is_some_and(|t| t.as_nanos() < shared.main_sleeps_until.load(Ordering::Relaxed)) {
            let _ = shared.wake.write(1);
        }
    }

    /// Writes the decrypted packets collected so far to the TUN device.
    fn write_tun(&mut self) {
        let tun = &self.tun;
        let RxQueue { buf, gro } = &mut self.rx;
        let r = gro.flush(buf, tun.vnet(), |pieces| match tun.send_vectored(pieces) {
            Err(e) if tun::is_gone(&e) => Err(e),
            Err(e) => {
                trace!("TUN write: {e}");
                Ok(())
            }
            Ok(_) => Ok(()),
        });
        self.gone |= r.is_err();
    }
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
        let tx = TxQueue { buf: vec![0; TX_BUF], batch: TxBatch::default() };
        DataPlane { shared, tun: Arc::new(tun), link, signals, tx, buf_out: vec![0; BUF_LEN] }
    }

    /// Runs the data plane (starting the receive thread) until the interface
    /// is deleted or a termination signal arrives.
    pub fn run(&mut self) -> io::Result<Exit> {
        let receiver = Receiver {
            shared: self.shared.clone(),
            tun: self.tun.clone(),
            rx: RxQueue { buf: vec![0; RX_BUF], gro: Gro::default() },
            gone: false,
            buf_out: vec![0; BUF_LEN],
        };
        // It lives as long as the process: returning from here ends both.
        std::thread::Builder::new().name("rx".into()).spawn(move || receiver.run())?;
        loop {
            // Timers first, then sleep until the next one or until I/O.
            let deadline = {
                let mut d = self.shared.lock();
                let now = d.clock.now();
                if d.node.poll_timeout().is_some_and(|t| t <= now) {
                    d.node.handle_timeout(now);
                    d.maybe_sync_wall_time(now);
                    flush(&mut d, now, &mut self.buf_out);
                }
                let deadline = d.node.poll_timeout();
                // Published under the lock: the receive thread compares
                // under the lock too, so no earlier deadline slips by.
                self.shared.main_sleeps_until.store(deadline.map_or(u64::MAX, |t| t.as_nanos()), Ordering::Relaxed);
                deadline.map(|t| d.clock.until(t))
            };
            let readable = PollFlags::POLLIN;
            let mut fds = [
                PollFd::new(self.tun.as_fd(), readable),
                PollFd::new(self.shared.wake.as_fd(), readable),
                PollFd::new(self.signals.as_fd(), readable),
                PollFd::new(self.link.as_ref().map_or(self.signals.as_fd(), |l| l.events_fd()), readable),
            ];
            let watched = if self.link.is_some() { fds.len() } else { fds.len() - 1 };
            match nix::poll::ppoll(&mut fds[..watched], deadline.map(TimeSpec::from_duration), None) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready = fds.map(|f| f.revents().is_some_and(|r| !r.is_empty()));
            let [tun_ready, wake_ready, signal_ready, link_ready] = ready;

            if signal_ready {
                if let Ok(Some(info)) = self.signals.read_signal() {
                    if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                        // The interface goes before we report shutting down
                        // (and before the UAPI socket), not whenever the
                        // receive thread's exit closes the last reference.
                        if let Err(e) = self.tun.release_interface() {
                            warn!("cannot release the interface: {e}");
                        }
                        return Ok(Exit::Signal(sig));
                    }
                }
            }
            if wake_ready {
                // The UAPI changed something, or the receive thread brought
                // the deadline forward: send what is queued (a keepalive
                // when persistent keepalive was just enabled).
                let _ = self.shared.wake.read();
                let mut d = self.shared.lock();
                let now = d.clock.now();
                flush(&mut d, now, &mut self.buf_out);
            }
            if tun_ready && !self.handle_tun()? {
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

    /// Reads a batch of packets from the TUN device, encrypts them where
    /// they landed and queues the datagrams; sends them after the batch.
    /// `Ok(false)`: the interface is gone.
    fn handle_tun(&mut self) -> io::Result<bool> {
        let vnet = self.tun.vnet();
        // The IP packet must land at IN_PLACE_OFFSET, the vnet header before it.
        let lead = IN_PLACE_OFFSET - if vnet { VNET_HDR_LEN } else { 0 };
        let mut oversized = false;
        let (sockets, clock) = {
            let mut d = self.shared.lock();
            let now = d.clock.now();
            d.maybe_sync_wall_time(now);
            (d.sockets.clone(), d.clock)
        };
        for _ in 0..BATCH {
            // Send what a super-packet (or many small packets) gave, so the
            // peer gets a steady stream rather than bursts.
            if self.tx.batch.end >= SEND_AT {
                self.tx.flush(&sockets);
            }
            let TxQueue { buf, batch } = &mut self.tx;
            let base = batch.end;
            let n = match self.tun.recv(&mut buf[base + lead..base + lead + TUN_READ_MAX]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if tun::is_gone(&e) => return Ok(false),
                Err(e) => {
                    warn!("TUN read: {e}");
                    break;
                }
            };
            let Some(len) = n.checked_sub(IN_PLACE_OFFSET - lead) else { continue };
            let hdr = match vnet {
                true => VnetHdr::parse(buf[base + lead..][..VNET_HDR_LEN].try_into().unwrap_or(&[0; VNET_HDR_LEN])),
                false => VnetHdr::default(),
            };
            // The lock is held per read (one packet or one 64 KiB
            // super-packet), so the receive thread, carrying the other
            // direction (e.g. TCP's ACKs), never waits long.
            if !hdr.is_gso() {
                // One packet, encrypted where it is: the datagram ends up at `base`.
                if !offload::complete_checksum(&mut buf[base + IN_PLACE_OFFSET..][..len], &hdr) {
                    debug!("TUN packet with bad checksum offsets dropped");
                    continue;
                }
                let mut d = self.shared.lock();
                oversized |= len > usize::from(d.node.mtu());
                let sent = d.node.send_ip_in_place(clock.now(), &mut buf[base..], len);
                drop(d);
                queue_sent(sent, batch, base);
                continue;
            }
            // A super-packet: cut it into segments laid out after it, each
            // encrypted in place; runs of them go out as one GSO send.
            let seg_base = base + IN_PLACE_OFFSET + len;
            let (src, dst) = buf.split_at_mut(seg_base);
            let Some(mut segments) = Segmenter::new(&hdr, &src[base + IN_PLACE_OFFSET..]) else {
                debug!(?hdr, "TUN super-packet not understood; dropped");
                continue;
            };
            let mut d = self.shared.lock();
            let now = clock.now();
            oversized |= segments.max_segment() > usize::from(d.node.mtu());
            let mut pos = 0;
            loop {
                // Room for the segment, its padding and tag.
                if pos + IN_PLACE_OFFSET + segments.max_segment() + 64 > dst.len() {
                    debug!("super-packet cut short: too many segments");
                    break;
                }
                let Some(seg_len) = segments.next_into(&mut dst[pos + IN_PLACE_OFFSET..]) else { break };
                let sent = d.node.send_ip_in_place(now, &mut dst[pos..], seg_len);
                pos += queue_sent(sent, batch, seg_base + pos);
            }
        }
        self.tx.flush(&sockets);
        {
            // Handshakes a packet asked for, packets queued until one completed.
            let mut d = self.shared.lock();
            let now = d.clock.now();
            flush(&mut d, now, &mut self.buf_out);
        }
        if oversized {
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
