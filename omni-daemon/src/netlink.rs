//! Just enough rtnetlink for the TUN interface: read and set its MTU by
//! name, and hear about link changes (MTU, moves between namespaces) without
//! polling. Messages are built and parsed here with bounds-checked slices.
//!
//! Netlink sockets belong to the network namespace they were created in, so
//! once the interface moved to another namespace, [`LinkWatch::open_in`]
//! creates fresh ones there from a short-lived thread that joins that
//! namespace (our UDP sockets, made by other threads, never move).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const RTMGRP_LINK: u32 = 1;

/// What a link message told us.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkInfo {
    pub index: i32,
    pub name: Option<String>,
    pub mtu: Option<u32>,
}

/// One parsed netlink message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    NewLink(LinkInfo),
    DelLink(LinkInfo),
    /// An error (negative errno) or, when 0, an acknowledgement.
    Error(i32),
    Done,
    Other(u16),
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn i32_at(b: &[u8], off: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn push_attr(msg: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(data);
    msg.resize(align4(msg.len()), 0);
}

/// A link request naming the interface (and optionally setting its MTU).
pub fn link_request(kind: u16, flags: u16, seq: u32, name: &str, mtu: Option<u32>) -> Vec<u8> {
    let mut msg = vec![0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
    let mut ifname = name.as_bytes().to_vec();
    ifname.push(0);
    push_attr(&mut msg, IFLA_IFNAME, &ifname);
    if let Some(mtu) = mtu {
        push_attr(&mut msg, IFLA_MTU, &mtu.to_ne_bytes());
    }
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&kind.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    // pid 0 (the kernel), ifinfomsg all zero: family AF_UNSPEC, index 0 (look up by name).
    msg
}

fn parse_link(body: &[u8]) -> LinkInfo {
    let mut info = LinkInfo { index: i32_at(body, 4).unwrap_or(0), ..LinkInfo::default() };
    let mut off = IFINFOMSG_LEN;
    while let (Some(len), Some(kind)) = (u16_at(body, off), u16_at(body, off + 2)) {
        let len = usize::from(len);
        if len < 4 {
            break;
        }
        let Some(data) = body.get(off + 4..off + len) else { break };
        match kind & 0x3fff {
            IFLA_IFNAME => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                info.name = Some(String::from_utf8_lossy(&data[..end]).into_owned());
            }
            IFLA_MTU => info.mtu = u32_at(data, 0),
            _ => {}
        }
        off += align4(len);
    }
    info
}

/// Splits a buffer of netlink messages; stops at the first malformed one.
pub fn parse(buf: &[u8]) -> Vec<(u32, Message)> {
    let mut out = Vec::new();
    let mut off = 0;
    while let (Some(len), Some(kind), Some(seq)) = (u32_at(buf, off), u16_at(buf, off + 4), u32_at(buf, off + 8)) {
        let len = len as usize;
        if len < NLMSG_HDRLEN {
            break;
        }
        let Some(body) = buf.get(off + NLMSG_HDRLEN..off + len) else { break };
        let msg = match kind {
            RTM_NEWLINK => Message::NewLink(parse_link(body)),
            RTM_DELLINK => Message::DelLink(parse_link(body)),
            NLMSG_ERROR => Message::Error(i32_at(body, 0).unwrap_or(-libc::EPROTO)),
            NLMSG_DONE => Message::Done,
            other => Message::Other(other),
        };
        out.push((seq, msg));
        off += align4(len);
    }
    out
}

/// A NETLINK_ROUTE socket.
#[derive(Debug)]
struct RouteSocket {
    fd: OwnedFd,
}

impl RouteSocket {
    fn open(groups: u32, nonblocking: bool) -> io::Result<Self> {
        let mut flags = SockFlag::SOCK_CLOEXEC;
        if nonblocking {
            flags |= SockFlag::SOCK_NONBLOCK;
        }
        let fd = socket::socket(AddressFamily::Netlink, SockType::Raw, flags, SockProtocol::NetlinkRoute)?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        if !nonblocking {
            // A request always gets an answer; never hang the data plane if not.
            let timeout = nix::sys::time::TimeVal::new(1, 0);
            socket::setsockopt(&fd, socket::sockopt::ReceiveTimeout, &timeout)?;
        }
        let _ = socket::setsockopt(&fd, socket::sockopt::RcvBuf, &(256 * 1024));
        Ok(RouteSocket { fd })
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(socket::recv(self.fd.as_raw_fd(), buf, MsgFlags::empty())?)
    }

    /// Sends a request and returns the first answer carrying its sequence number.
    fn request(&self, seq: u32, msg: &[u8]) -> io::Result<Message> {
        socket::send(self.fd.as_raw_fd(), msg, MsgFlags::empty())?;
        let mut buf = vec![0u8; 32 * 1024];
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            let n = self.recv(&mut buf)?;
            for (s, m) in parse(&buf[..n]) {
                if s == seq {
                    return Ok(m);
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "no netlink answer"))
    }
}

/// Link queries and change notifications in one network namespace.
#[derive(Debug)]
pub struct LinkWatch {
    events: RouteSocket,
    query: RouteSocket,
    /// Inode of the namespace these sockets live in.
    ns_inode: u64,
    seq: u32,
}

impl LinkWatch {
    /// Sockets in the calling thread's network namespace.
    pub fn open_here() -> io::Result<Self> {
        let ns_inode = nix::sys::stat::stat("/proc/thread-self/ns/net")?.st_ino;
        Ok(LinkWatch {
            events: RouteSocket::open(RTMGRP_LINK, true)?,
            query: RouteSocket::open(0, false)?,
            ns_inode,
            seq: 1,
        })
    }

    /// Sockets in the namespace `ns` (a helper thread joins it to create them).
    pub fn open_in(ns: &OwnedFd) -> io::Result<Self> {
        let ns = ns.as_fd();
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                Self::open_here()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("netns helper thread panicked")))
        })
    }

    pub fn ns_inode(&self) -> u64 {
        self.ns_inode
    }

    /// The descriptor to poll for link notifications.
    pub fn events_fd(&self) -> BorrowedFd<'_> {
        self.events.fd.as_fd()
    }

    /// Reads every pending notification; returns whether there were any
    /// (an overrun counts: something changed).
    pub fn drain(&self) -> bool {
        let mut buf = vec![0u8; 32 * 1024];
        let mut any = false;
        loop {
            match self.events.recv(&mut buf) {
                Ok(0) => return any,
                Ok(_) => any = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return any,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true, // ENOBUFS: notifications were lost
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// The MTU of interface `name` in this namespace.
    pub fn mtu(&mut self, name: &str) -> io::Result<u32> {
        let seq = self.next_seq();
        match self.query.request(seq, &link_request(RTM_GETLINK, NLM_F_REQUEST, seq, name, None))? {
            Message::NewLink(LinkInfo { mtu: Some(mtu), .. }) => Ok(mtu),
            Message::Error(e) if e < 0 => Err(io::Error::from_raw_os_error(-e)),
            other => Err(io::Error::other(format!("unexpected netlink answer {other:?}"))),
        }
    }

    /// Sets the MTU of interface `name`.
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> io::Result<()> {
        let seq = self.next_seq();
        let msg = link_request(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, seq, name, Some(mtu));
        match self.query.request(seq, &msg)? {
            Message::Error(0) => Ok(()),
            Message::Error(e) => Err(io::Error::from_raw_os_error(-e)),
            other => Err(io::Error::other(format!("unexpected netlink answer {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let m = link_request(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, 7, "wg0", Some(1420));
        // header 16 + ifinfomsg 16 + IFNAME attr (4 + "wg0\0" = 8) + MTU attr (8)
        assert_eq!(m.len(), 48);
        assert_eq!(u32_at(&m, 0), Some(48));
        assert_eq!(u16_at(&m, 4), Some(RTM_SETLINK));
        assert_eq!(u32_at(&m, 8), Some(7));
        assert_eq!(&m[36..40], b"wg0\0");
        assert_eq!(u32_at(&m, 44), Some(1420));
    }

    #[test]
    fn parse_link_answer_and_errors() {
        // A NEWLINK answer looks like a SETLINK request with another type.
        let mut m = link_request(RTM_NEWLINK, 0, 9, "omni0", Some(1280));
        m[20..24].copy_from_slice(&5i32.to_ne_bytes());
        let mut err = vec![0u8; 36];
        err[0..4].copy_from_slice(&36u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[8..12].copy_from_slice(&10u32.to_ne_bytes());
        err[16..20].copy_from_slice(&(-libc::ENODEV).to_ne_bytes());
        let mut buf = m.clone();
        buf.extend_from_slice(&err);
        let msgs = parse(&buf);
        assert_eq!(
            msgs,
            vec![
                (9, Message::NewLink(LinkInfo { index: 5, name: Some("omni0".into()), mtu: Some(1280) })),
                (10, Message::Error(-libc::ENODEV)),
            ]
        );
        // Truncated or garbage input never panics.
        for cut in 0..buf.len() {
            let _ = parse(&buf[..cut]);
        }
        let _ = parse(&[0xff; 64]);
    }
}
