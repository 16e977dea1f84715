//! The WireGuard UDP sockets: one IPv4 and one IPv6-only socket on the same
//! port (as wireguard-go does), nonblocking, with an optional fwmark.
//!
//! Segmentation offloads (Linux 4.18+/5.0+): runs of equal-sized datagrams
//! to one destination go out in one `sendmsg` with `UDP_SEGMENT` (UDP GSO),
//! and with `UDP_GRO` one `recvmsg` may return several datagrams from one
//! source back to back, with their size in a control message.
//!
//! Sockets are created by the process's own threads, which never change
//! network namespace: when the interface moves to another namespace, the
//! sockets keep sending and receiving where the daemon was started.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{self as sock, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage};
use socket2::{Domain, Protocol, Socket, Type};

const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams per GSO send at most (the kernel's `UDP_MAX_SEGMENTS`).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes per GSO send at most: what fits in one IPv4 UDP datagram.
pub const GSO_MAX_BYTES: usize = 65535 - 20 - 8;
/// A receive buffer this large never truncates a GRO batch.
pub const GRO_BUF: usize = 65536;

/// The bound pair of sockets. Cloning shares them (the data plane keeps
/// clones to poll on while the UAPI may replace them).
#[derive(Debug, Clone)]
pub struct Sockets {
    pub v4: Option<Arc<UdpSocket>>,
    pub v6: Option<Arc<UdpSocket>>,
    pub port: u16,
    /// UDP GSO works (cleared after the kernel refused it with `EIO`).
    gso: Arc<AtomicBool>,
}

fn open(addr: SocketAddr, fwmark: u32) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let socket = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    if fwmark != 0 {
        socket.set_mark(fwmark)?;
    }
    // Bigger buffers ride out bursts. As root, go past rmem_max/wmem_max
    // (as wireguard-go does); otherwise take what the kernel allows.
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(&socket, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    }
    if setsockopt(&socket, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    }
    // Best effort: older kernels simply deliver one datagram per read.
    let _ = sock::setsockopt(&socket, sock::sockopt::UdpGroSegment, &offload_enabled());
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// IPv6 unavailable on this host (disabled or not compiled in).
fn v6_unavailable(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT))
}

impl Sockets {
    /// Binds both families to `port` (0: a random port free in both).
    pub fn bind(port: u16, fwmark: u32) -> io::Result<Sockets> {
        let attempts = if port == 0 { 100 } else { 1 };
        let mut last_err = None;
        for _ in 0..attempts {
            let v4 = open(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)), fwmark)?;
            let actual = v4.local_addr()?.port();
            match open(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, actual, 0, 0)), fwmark) {
                Ok(v6) => return Ok(Sockets::new(Some(v4), Some(v6), actual)),
                Err(e) if v6_unavailable(&e) => return Ok(Sockets::new(Some(v4), None, actual)),
                // The random IPv4 port is taken for IPv6: try another one.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && port == 0 => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
    }

    fn new(v4: Option<UdpSocket>, v6: Option<UdpSocket>, port: u16) -> Sockets {
        let gso = Arc::new(AtomicBool::new(offload_enabled()));
        Sockets { v4: v4.map(Arc::new), v6: v6.map(Arc::new), port, gso }
    }

    /// Sets (or with 0 clears) the fwmark on both sockets.
    pub fn set_mark(&self, fwmark: u32) -> io::Result<()> {
        for s in [&self.v4, &self.v6].into_iter().flatten() {
            socket2::SockRef::from(s.as_ref()).set_mark(fwmark)?;
        }
        Ok(())
    }

    /// The socket for a destination (IPv4-mapped IPv6 goes out over IPv4).
    fn for_dest(&self, to: SocketAddr) -> (Option<&Arc<UdpSocket>>, SocketAddr) {
        match to {
            SocketAddr::V4(_) => (self.v4.as_ref(), to),
            SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
                Some(v4) => (self.v4.as_ref(), SocketAddr::V4(SocketAddrV4::new(v4, a.port()))),
                None => (self.v6.as_ref(), to),
            },
        }
    }

    /// Sends one datagram. A full socket buffer is waited out briefly (the
    /// data plane has nothing better to do), then the datagram is dropped.
    pub fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        let (Some(socket), to) = self.for_dest(to) else {
            return Err(io::Error::from(io::ErrorKind::AddrNotAvailable));
        };
        for _ in 0..3 {
            match socket.send_to(buf, to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_writable(socket.as_fd(), Duration::from_millis(5))
                }
                r => return r,
            }
        }
        socket.send_to(buf, to)
    }

    /// Sends the datagrams laid back to back in `buf`, each `seg` bytes but
    /// the last (which may be shorter): one UDP GSO `sendmsg` when there are
    /// several and the kernel allows it, else one by one.
    pub fn send_segments(&self, buf: &[u8], seg: usize, to: SocketAddr) -> io::Result<()> {
        if buf.len() > seg && self.gso.load(Ordering::Relaxed) {
            let (Some(socket), to) = self.for_dest(to) else {
                return Err(io::Error::from(io::ErrorKind::AddrNotAvailable));
            };
            let addr = SockaddrStorage::from(to);
            let size = seg as u16;
            let cmsg = [ControlMessage::UdpGsoSegments(&size)];
            let iov = [IoSlice::new(buf)];
            let fd = socket.as_raw_fd();
            let mut r = sock::sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&addr));
            for _ in 0..3 {
                if r != Err(nix::errno::Errno::EAGAIN) {
                    break;
                }
                wait_writable(socket.as_fd(), Duration::from_millis(5));
                r = sock::sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&addr));
            }
            match r {
                Ok(_) => return Ok(()),
                // The device cannot take GSO packets (no checksum offload):
                // never again; send this batch one by one.
                Err(nix::errno::Errno::EIO) => {
                    tracing::debug!("UDP GSO refused by the kernel; sending datagrams one by one");
                    self.gso.store(false, Ordering::Relaxed);
                }
                // E.g. a segment larger than the path MTU: one by one (fragmented).
                Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::EMSGSIZE) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for d in buf.chunks(seg.max(1)) {
            self.send_to(d, to)?;
        }
        Ok(())
    }
}

/// Whether offloads are on (`OMNI_DAEMON_OFFLOAD=0` turns them off, to
/// compare or to rule them out).
pub fn offload_enabled() -> bool {
    std::env::var_os("OMNI_DAEMON_OFFLOAD").is_none_or(|v| v != "0")
}

/// What [`recv`] got: `len` bytes from `from`, datagrams of `seg` bytes back
/// to back (the last may be shorter; `seg == len` without GRO).
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub seg: usize,
}

impl Received {
    /// The byte ranges of the datagrams in the buffer, in order, so each is
    /// handled alone (`seg` is at least 1: [`recv`] sets it to `len` without GRO).
    pub fn datagrams(&self) -> impl Iterator<Item = (usize, usize)> {
        let (len, seg) = (self.len, self.seg.max(1));
        (0..len).step_by(seg).map(move |at| (at, (at + seg).min(len)))
    }
}

/// Receives one datagram, or with GRO a run of them from one source. `buf`
/// should hold [`GRO_BUF`] bytes: a truncated read is an error.
pub fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    let mut cmsg = [0u8; 64];
    let mut iov = [IoSliceMut::new(buf)];
    let msg = sock::recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())?;
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "datagram truncated"));
    }
    let from = msg.address.as_ref().and_then(to_socket_addr).ok_or(io::ErrorKind::InvalidData)?;
    let mut seg = msg.bytes.max(1); // never 0: callers step through the buffer by it
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::UdpGroSegments(size) = c {
                seg = usize::try_from(size).unwrap_or(0).clamp(1, msg.bytes.max(1));
            }
        }
    }
    Ok(Received { len: msg.bytes, from: canonical(from), seg })
}

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) {
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    let ts = nix::sys::time::TimeSpec::from_duration(timeout);
    let _ = nix::poll::ppoll(&mut fds, Some(ts), None);
}

/// Normalises a received address (an IPv4-mapped IPv6 source is IPv4).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_splits_into_datagrams() {
        let from: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let r = |len, seg| Received { len, from, seg }.datagrams().collect::<Vec<_>>();
        assert_eq!(r(10, 4), vec![(0, 4), (4, 8), (8, 10)]);
        assert_eq!(r(8, 4), vec![(0, 4), (4, 8)]);
        assert_eq!(r(10, 10), vec![(0, 10)]);
        assert_eq!(r(3, 0), vec![(0, 1), (1, 2), (2, 3)]);
        assert!(r(0, 4).is_empty());
    }

    #[test]
    fn binds_both_families_on_one_port_and_sends() {
        let a = Sockets::bind(0, 0).unwrap();
        assert_ne!(a.port, 0);
        // A second pair on the same explicit port is refused.
        let err = Sockets::bind(a.port, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let b = Sockets::bind(0, 0).unwrap();
        let to: SocketAddr = format!("127.0.0.1:{}", b.port).parse().unwrap();
        assert_eq!(a.send_to(b"hi", to).unwrap(), 2);
        let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", b.port).parse().unwrap();
        assert_eq!(a.send_to(b"again", mapped).unwrap(), 5);
        assert_eq!(canonical(mapped), to);
    }

    /// Receives until `want` bytes came in (the socket is nonblocking).
    fn recv_all(socket: &UdpSocket, want: usize) -> Vec<Received> {
        let mut buf = vec![0u8; GRO_BUF];
        let (mut got, mut total) = (Vec::new(), 0);
        for _ in 0..500 {
            match recv(socket, &mut buf) {
                Ok(r) => {
                    total += r.len;
                    got.push(r);
                    if total >= want && got.len() > 1 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => panic!("recv: {e}"),
            }
        }
        got
    }

    #[test]
    fn gso_sends_and_gro_receives_runs() {
        let a = Sockets::bind(0, 0).unwrap();
        let b = Sockets::bind(0, 0).unwrap();
        let to: SocketAddr = format!("127.0.0.1:{}", b.port).parse().unwrap();
        // An empty datagram must not trip the receiver (seg is never 0).
        a.send_to(&[], to).unwrap();
        // Three 100-byte datagrams and a 40-byte one, in one GSO send.
        let run: Vec<u8> = (0..340u32).map(|i| i as u8).collect();
        a.send_segments(&run, 100, to).unwrap();
        let got = recv_all(b.v4.as_ref().unwrap(), 340);
        assert_eq!(got[0].len, 0);
        assert!(got[0].seg >= 1);
        // With GRO they may arrive as one run, else one by one: the sizes agree.
        let mut sizes = Vec::new();
        for r in &got[1..] {
            assert_eq!(r.from.port(), a.port);
            let mut left = r.len;
            while left > 0 {
                sizes.push(left.min(r.seg));
                left -= left.min(r.seg);
            }
        }
        assert_eq!(sizes, vec![100, 100, 100, 40]);
    }
}
