//! The TUN device: `/dev/net/tun` with `IFF_TUN | IFF_NO_PI | IFF_VNET_HDR`,
//! nonblocking. With the vnet header and `TUNSETOFFLOAD` the kernel may hand
//! us TCP/UDP super-packets and take merged ones (see [`crate::offload`]);
//! every read and write then starts with a `virtio_net_hdr`.
//!
//! The ioctls we need are declared here rather than pulling in a TUN crate:
//! `TUNSETIFF` (create/attach), `TUNSETOFFLOAD` (what the kernel may send us),
//! `TUNGETIFF` (the current name: the interface may be renamed) and
//! `TUNGETDEVNETNS` (the namespace the interface lives in now: it may be
//! moved with `ip link set IFNAME netns X` while our sockets stay put).
//!
//! When the interface is deleted the kernel detaches the file: `poll`
//! reports `POLLERR` and reads fail with `EBADFD`; [`is_gone`] recognises it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

const IFNAMSIZ: usize = 16;
const IFF_TUN: i16 = 0x0001;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;
// TUNSETOFFLOAD flags: checksum left to us, TCP segmentation, UDP segmentation.
const TUN_F_CSUM: libc::c_int = 0x01;
const TUN_F_TSO4: libc::c_int = 0x02;
const TUN_F_TSO6: libc::c_int = 0x04;
const TUN_F_USO4: libc::c_int = 0x20;
const TUN_F_USO6: libc::c_int = 0x40;

/// `struct ifreq`: the name, then a union whose first member we use as the
/// flags. Sized generously (the kernel copies `sizeof(struct ifreq)`, 40 bytes
/// on 64-bit targets, in both directions).
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 30],
}

impl IfReq {
    fn zeroed() -> Self {
        IfReq { name: [0; IFNAMSIZ], flags: 0, _pad: [0; 30] }
    }
}

nix::ioctl_write_ptr_bad!(tun_set_iff, nix::request_code_write!(b'T', 202, size_of::<libc::c_int>()), IfReq);
nix::ioctl_read_bad!(tun_get_iff, nix::request_code_read!(b'T', 210, size_of::<libc::c_uint>()), IfReq);
nix::ioctl_write_int_bad!(tun_set_offload, nix::request_code_write!(b'T', 208, size_of::<libc::c_uint>()));
nix::ioctl_none_bad!(tun_get_devnetns, nix::request_code_none!(b'T', 227));

/// Checks a Linux interface name the way the kernel's `dev_valid_name` does.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() >= IFNAMSIZ {
        return Err(format!("interface name {name:?} must be 1 to {} bytes", IFNAMSIZ - 1));
    }
    if name == "." || name == ".." || name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        return Err(format!("invalid interface name {name:?}"));
    }
    Ok(())
}

#[derive(Debug)]
pub struct Tun {
    file: File,
    /// Reads and writes carry a `virtio_net_hdr` (see [`crate::offload`]).
    vnet: bool,
}

impl Tun {
    /// Creates (or attaches to an existing, unused) TUN interface `name`,
    /// with segmentation offloads when the kernel has them (`offload`).
    pub fn create(name: &str, offload: bool) -> io::Result<Tun> {
        validate_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if offload {
            match Self::open(name, true) {
                Ok(tun) => {
                    // TCP segmentation, and UDP's where the kernel has it (6.2+).
                    let tcp = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
                    // SAFETY: TUNSETOFFLOAD takes its argument by value.
                    let set = |flags| unsafe { tun_set_offload(tun.file.as_raw_fd(), flags) };
                    if set(tcp | TUN_F_USO4 | TUN_F_USO6).is_err() {
                        if let Err(e) = set(tcp) {
                            tracing::debug!("TUN offloads unavailable: {e}");
                        }
                    }
                    return Ok(tun);
                }
                Err(e) => tracing::debug!("TUN with a vnet header unavailable ({e}); plain packets"),
            }
        }
        Self::open(name, false)
    }

    fn open(name: &str, vnet: bool) -> io::Result<Tun> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfReq::zeroed();
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req.flags = IFF_TUN | IFF_NO_PI | if vnet { IFF_VNET_HDR } else { 0 };
        // SAFETY: `req` is an initialised, large-enough `struct ifreq` that
        // outlives the call; TUNSETIFF only reads and writes within it.
        unsafe { tun_set_iff(file.as_raw_fd(), &req) }?;
        Ok(Tun { file, vnet })
    }

    /// Whether packets carry a `virtio_net_hdr` of [`crate::offload::VNET_HDR_LEN`] bytes.
    pub fn vnet(&self) -> bool {
        self.vnet
    }

    /// The interface's current name.
    pub fn name(&self) -> io::Result<String> {
        let mut req = IfReq::zeroed();
        // SAFETY: as in `create`; TUNGETIFF writes at most `sizeof(struct ifreq)` into `req`.
        unsafe { tun_get_iff(self.file.as_raw_fd(), &mut req) }?;
        let len = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        Ok(String::from_utf8_lossy(&req.name[..len]).into_owned())
    }

    /// A handle to the network namespace the interface is in now.
    pub fn netns(&self) -> io::Result<OwnedFd> {
        // SAFETY: TUNGETDEVNETNS takes no argument and returns a new file
        // descriptor (or -1, turned into an error by nix).
        let fd = unsafe { tun_get_devnetns(self.file.as_raw_fd()) }?;
        // SAFETY: `fd` was just opened by the kernel for us and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Reads one packet; `WouldBlock` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one packet, given in pieces (`writev`).
    pub fn send_vectored(&self, pieces: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&self.file).write_vectored(pieces)
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Whether an I/O error on the TUN file means the interface was deleted.
pub fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADFD) | Some(libc::ENODEV) | Some(libc::EBADF))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(validate_name("wg0").is_ok());
        assert!(validate_name("omni-test-12345").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a-name-that-is-too-long").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("..").is_err());
        assert!(std::mem::size_of::<IfReq>() >= 40);
    }
}
