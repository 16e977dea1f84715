//! The edge's interface set-up and its view of the host's addresses, over
//! rtnetlink (messages built and parsed with bounds-checked slices, replies
//! parsed by [`crate::netlink::parse`]):
//!
//! - bring the TUN interface up and give it the VIP with the cluster's
//!   prefix (the kernel then routes the cluster subnet into it);
//! - hear about address changes on the host (`RTMGRP_IPV4_IFADDR`,
//!   `RTMGRP_IPV6_IFADDR`), to re-announce our local endpoints;
//! - list the host's usable addresses (`getifaddrs`) as local endpoints.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

use crate::netlink;

const NLMSG_HDRLEN: usize = 16;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;
const IFF_UP: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

fn open(groups: u32, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    let fd = socket::socket(AddressFamily::Netlink, SockType::Raw, flags, SockProtocol::NetlinkRoute)?;
    socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    if !nonblocking {
        socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(2, 0))?;
    }
    Ok(fd)
}

fn push_attr(msg: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    msg.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(data);
    while msg.len() % 4 != 0 {
        msg.push(0);
    }
}

fn finish(mut msg: Vec<u8>, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
    let len = u32::try_from(msg.len()).unwrap_or(u32::MAX).to_ne_bytes();
    msg[0..4].copy_from_slice(&len);
    msg[4..6].copy_from_slice(&kind.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    msg
}

/// `RTM_NEWLINK` setting `IFF_UP` on interface `index`.
pub fn link_up_request(index: u32, seq: u32) -> Vec<u8> {
    let mut msg = vec![0u8; NLMSG_HDRLEN + 16];
    let i = NLMSG_HDRLEN;
    msg[i + 4..i + 8].copy_from_slice(&index.to_ne_bytes());
    msg[i + 8..i + 12].copy_from_slice(&IFF_UP.to_ne_bytes());
    msg[i + 12..i + 16].copy_from_slice(&IFF_UP.to_ne_bytes());
    finish(msg, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq)
}

/// `RTM_NEWADDR` giving interface `index` the address `ip/prefix`.
pub fn add_address_request(index: u32, ip: IpAddr, prefix: u8, seq: u32) -> Vec<u8> {
    let mut msg = vec![0u8; NLMSG_HDRLEN + 8];
    let i = NLMSG_HDRLEN;
    let (family, bytes): (u8, Vec<u8>) = match ip {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    msg[i] = family;
    msg[i + 1] = prefix;
    // No duplicate-address detection: the address is usable at once.
    msg[i + 2] = if ip.is_ipv6() { IFA_F_NODAD } else { 0 };
    msg[i + 3] = 0; // RT_SCOPE_UNIVERSE
    msg[i + 4..i + 8].copy_from_slice(&index.to_ne_bytes());
    push_attr(&mut msg, IFA_LOCAL, &bytes);
    push_attr(&mut msg, IFA_ADDRESS, &bytes);
    finish(msg, RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, seq)
}

fn request(fd: &OwnedFd, seq: u32, msg: &[u8]) -> io::Result<()> {
    socket::send(fd.as_raw_fd(), msg, MsgFlags::empty())?;
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        for (s, m) in netlink::parse(buf.get(..n).unwrap_or(&[])) {
            if s != seq {
                continue;
            }
            return match m {
                netlink::Message::Error(0) => Ok(()),
                netlink::Message::Error(e) => Err(io::Error::from_raw_os_error(-e)),
                other => Err(io::Error::other(format!("unexpected netlink answer {other:?}"))),
            };
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, "no netlink answer"))
}

/// Brings interface `name` up with the address `ip/prefix` (the kernel adds
/// the route of the prefix through it).
pub fn configure(name: &str, ip: IpAddr, prefix: u8) -> io::Result<()> {
    let index = nix::net::if_::if_nametoindex(name)?;
    let fd = open(0, false)?;
    request(&fd, 1, &add_address_request(index, ip, prefix, 1))?;
    request(&fd, 2, &link_up_request(index, 2))
}

/// Notifications of address changes on the host.
#[derive(Debug)]
pub struct AddrWatch {
    fd: OwnedFd,
}

impl AddrWatch {
    pub fn open() -> io::Result<Self> {
        Ok(AddrWatch { fd: open(RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR, true)? })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads every pending notification; whether there were any.
    pub fn drain(&self) -> bool {
        let mut buf = vec![0u8; 16 * 1024];
        let mut any = false;
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return any,
                Ok(_) => any = true,
                Err(nix::errno::Errno::EAGAIN) => return any,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return true, // ENOBUFS: notifications were lost
            }
        }
    }
}

/// The host's addresses peers on our own networks may reach us at, with
/// our listen port: up, not loopback, not link-local, not on `exclude` (the
/// TUN interface), IPv4 first; at most `max`.
pub fn local_endpoints(port: u16, exclude: &str, ipv6: bool, max: usize) -> Vec<SocketAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    use nix::net::if_::InterfaceFlags;
    for a in addrs {
        if a.interface_name == exclude
            || !a.flags.contains(InterfaceFlags::IFF_UP)
            || a.flags.contains(InterfaceFlags::IFF_LOOPBACK)
        {
            continue;
        }
        let Some(addr) = a.address else { continue };
        if let Some(sin) = addr.as_sockaddr_in() {
            let ip = sin.ip();
            if !(ip.is_loopback() || ip.is_link_local() || ip.is_unspecified() || ip.is_multicast()) {
                v4.push(SocketAddr::new(IpAddr::V4(ip), port));
            }
        } else if let Some(sin6) = addr.as_sockaddr_in6() {
            let ip = sin6.ip();
            let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
            if ipv6 && !(ip.is_loopback() || link_local || ip.is_unspecified() || ip.is_multicast()) {
                v6.push(SocketAddr::new(IpAddr::V6(ip), port));
            }
        }
    }
    let mut out: Vec<SocketAddr> = Vec::new();
    for e in v4.into_iter().chain(v6) {
        if !out.contains(&e) && out.len() < max {
            out.push(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layouts() {
        let m = add_address_request(7, IpAddr::from([10, 200, 0, 1]), 24, 3);
        // header 16 + ifaddrmsg 8 + two 8-byte attributes
        assert_eq!(m.len(), 40);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 40);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), RTM_NEWADDR);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 3);
        assert_eq!((m[16], m[17]), (libc::AF_INET as u8, 24));
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        assert_eq!(&m[28..32], &[10, 200, 0, 1]);
        let m = add_address_request(7, "fd00::1".parse().unwrap(), 64, 4);
        assert_eq!(m.len(), 16 + 8 + 20 + 20);
        assert_eq!(m[18], IFA_F_NODAD);
        let m = link_up_request(9, 5);
        assert_eq!(m.len(), 32);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 9);
        assert_eq!(u32::from_ne_bytes(m[24..28].try_into().unwrap()), IFF_UP);
    }

    #[test]
    fn local_endpoints_skip_loopback_and_respect_the_cap() {
        let eps = local_endpoints(51820, "omni-none", true, 4);
        assert!(eps.len() <= 4);
        assert!(eps.iter().all(|e| e.port() == 51820 && !e.ip().is_loopback()));
        assert!(local_endpoints(1, "x", true, 0).is_empty());
    }
}
