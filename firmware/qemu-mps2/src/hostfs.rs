//! What a real board keeps in flash or gets from hardware, provided by the
//! host through semihosting under QEMU:
//! - the device configuration: the semihosting command line (QEMU's `-append`),
//!   and with `config=PATH` also a host file (like a configuration in flash:
//!   the place for secrets, which a command line shows to every local user);
//! - persistent storage for the wall-clock ceiling: a host file (survives a
//!   reset of the emulated board and a restart of QEMU, like a flash sector);
//! - entropy: the host's `/dev/urandom` (the board has no TRNG).

use core::ffi::CStr;

use omni_firmware::WallStore;
use semihosting::io::{Read as _, Write as _};

/// Joins the semihosting command line (without the program name) into `buf`,
/// separated by spaces. Returns the text, or "" if there is none.
pub fn command_line(buf: &mut [u8]) -> &str {
    let mut len = 0;
    if let Ok(args) = semihosting::experimental::env::args::<1024>() {
        for arg in (&args).skip(1).flatten() {
            let need = arg.len() + 1;
            if len + need > buf.len() {
                defmt::warn!("command line truncated");
                break;
            }
            buf[len..len + arg.len()].copy_from_slice(arg.as_bytes());
            buf[len + arg.len()] = b' ';
            len += need;
        }
    }
    core::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// The device configuration: the command line, followed by the contents of
/// the host file its `config=PATH` token names (if any), in `buf`.
pub fn device_config(buf: &mut [u8]) -> &str {
    let n = command_line(buf).len();
    let mut path: heapless::Vec<u8, 128> = heapless::Vec::new();
    if let Some(p) =
        core::str::from_utf8(&buf[..n]).unwrap_or("").split_ascii_whitespace().find_map(|t| t.strip_prefix("config="))
    {
        if path.extend_from_slice(p.as_bytes()).is_err() || path.push(0).is_err() {
            defmt::warn!("config= path too long");
            path.clear();
        }
    }
    let mut len = n;
    if let Ok(c) = CStr::from_bytes_with_nul(&path) {
        match semihosting::fs::File::open(c) {
            Ok(mut f) => loop {
                match f.read(&mut buf[len..]) {
                    Ok(0) => break,
                    Ok(k) => len += k,
                    Err(_) => {
                        defmt::warn!("config file: read error");
                        break;
                    }
                }
                if len == buf.len() {
                    defmt::warn!("config file truncated");
                    break;
                }
            },
            Err(_) => defmt::warn!("config file: cannot open"),
        }
    }
    core::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// Fills `out` with the host's entropy. Returns false if that failed.
pub fn host_entropy(out: &mut [u8]) -> bool {
    semihosting::experimental::random::fill_bytes(out).is_ok()
}

/// A [`WallStore`] in a host file (the path comes from the configuration's
/// `state=` key): 8 bytes, little-endian.
pub struct HostFileStore {
    path: heapless::Vec<u8, 128>,
}

impl HostFileStore {
    pub fn new(path: &str) -> Option<Self> {
        let mut p = heapless::Vec::new();
        p.extend_from_slice(path.as_bytes()).ok()?;
        p.push(0).ok()?;
        CStr::from_bytes_with_nul(&p).ok()?;
        Some(HostFileStore { path: p })
    }

    fn path(&self) -> &CStr {
        CStr::from_bytes_with_nul(&self.path).unwrap_or(c"")
    }
}

impl WallStore for HostFileStore {
    fn load(&mut self) -> Option<u64> {
        let mut f = semihosting::fs::File::open(self.path()).ok()?;
        let mut b = [0u8; 8];
        f.read_exact(&mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }

    fn store(&mut self, ceiling_secs: u64) -> bool {
        match semihosting::fs::File::create(self.path()) {
            Ok(mut f) => f.write_all(&ceiling_secs.to_le_bytes()).is_ok(),
            Err(_) => false,
        }
    }
}

/// A store that keeps nothing (no `state=` given): the device then restarts
/// its clock at the epoch on every boot, and a peer that saw it before
/// refuses its handshakes until its uptime catches up. The HIL tests use this
/// to show that the persisted store is what makes reboots work.
pub struct NoStore;

impl WallStore for NoStore {
    fn load(&mut self) -> Option<u64> {
        None
    }
    fn store(&mut self, _: u64) -> bool {
        false
    }
}
