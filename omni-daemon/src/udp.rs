//! The WireGuard UDP sockets: one IPv4 and one IPv6-only socket on the same
//! port (as wireguard-go does), nonblocking, with an optional fwmark.
//!
//! Sockets are created by the process's own threads, which never change
//! network namespace: when the interface moves to another namespace, the
//! sockets keep sending and receiving where the daemon was started.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use socket2::{Domain, Protocol, Socket, Type};

const SOCKET_BUFFER: usize = 4 << 20;

/// The bound pair of sockets. Cloning shares them (the data plane keeps
/// clones to poll on while the UAPI may replace them).
#[derive(Debug, Clone)]
pub struct Sockets {
    pub v4: Option<Arc<UdpSocket>>,
    pub v6: Option<Arc<UdpSocket>>,
    pub port: u16,
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
                Ok(v6) => return Ok(Sockets { v4: Some(Arc::new(v4)), v6: Some(Arc::new(v6)), port: actual }),
                Err(e) if v6_unavailable(&e) => {
                    return Ok(Sockets { v4: Some(Arc::new(v4)), v6: None, port: actual });
                }
                // The random IPv4 port is taken for IPv6: try another one.
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && port == 0 => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
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
}
