//! Boots the firmware on QEMU mps2-an385 and makes sure QEMU dies with the
//! guard (also when a test panics).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Boot<'a> {
    pub elf: &'a Path,
    /// The device configuration (semihosting command line).
    pub args: String,
    /// Host UDP port forwarded (from 127.0.0.1 only) to the device's port.
    pub host_port: u16,
    pub device_port: u16,
    /// Run QEMU inside this network namespace.
    pub netns: Option<&'a str>,
    /// Extra QEMU arguments (e.g. `-icount shift=0`).
    pub extra: Vec<String>,
    pub log: PathBuf,
}

pub struct Qemu {
    qemu: Child,
    decoder: Option<Child>,
    #[allow(dead_code)]
    pub log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Qemu {
    pub fn boot(b: &Boot<'_>) -> io::Result<Qemu> {
        let mut cmd = match b.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "qemu-system-arm"]);
                c
            }
            None => Command::new("qemu-system-arm"),
        };
        cmd.args(["-machine", "mps2-an385", "-cpu", "cortex-m3", "-nographic", "-monitor", "none", "-serial", "none"])
            .args(["-semihosting-config", "enable=on,target=native"])
            .arg("-netdev")
            .arg(format!("user,id=n0,net=10.0.2.0/24,hostfwd=udp:127.0.0.1:{}-:{}", b.host_port, b.device_port))
            .args(["-net", "nic,netdev=n0,model=lan9118"])
            .arg("-kernel")
            .arg(b.elf)
            .arg("-append")
            .arg(&b.args)
            .args(&b.extra)
            .stdin(Stdio::null());
        let log = File::create(&b.log)?;
        let have_decoder = Command::new("defmt-print").arg("--version").output().is_ok_and(|o| o.status.success());
        if have_decoder {
            cmd.stdout(Stdio::piped()).stderr(log.try_clone()?);
            let mut qemu = cmd.spawn()?;
            let out = qemu.stdout.take().expect("piped stdout");
            let decoder = Command::new("defmt-print")
                .arg("-e")
                .arg(b.elf)
                .stdin(out)
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn();
            match decoder {
                Ok(d) => Ok(Qemu { qemu, decoder: Some(d), log: b.log.clone(), exited: None }),
                Err(e) => {
                    let _ = qemu.kill();
                    let _ = qemu.wait();
                    Err(e)
                }
            }
        } else {
            cmd.stdout(log.try_clone()?).stderr(log);
            let qemu = cmd.spawn()?;
            Ok(Qemu { qemu, decoder: None, log: b.log.clone(), exited: None })
        }
    }

    /// Waits up to `d` for QEMU to exit (the firmware's semihosting exit code).
    pub fn wait_exit(&mut self, d: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.qemu.try_wait() {
                self.exited = Some(s);
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.qemu.try_wait(), Ok(None))
    }

    /// The decoded log so far.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.qemu.kill();
            let _ = self.qemu.wait();
        }
        if let Some(d) = self.decoder.as_mut() {
            // Its input closed with QEMU; give it a moment to flush.
            let end = Instant::now() + Duration::from_secs(2);
            while Instant::now() < end && matches!(d.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("free port")
}
