//! Reporting for the Nucleus modes: the edge's status socket (what
//! `omni-daemon status` prints) and opt-in Prometheus metrics over HTTP.
//!
//! Both are served from the mode's own poll loop: a connection is accepted,
//! answered with a snapshot and closed, with short timeouts so a slow client
//! cannot hold the data plane for long.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where edges put their status sockets.
pub const STATUS_DIR: &str = "/run/omni-daemon";
const CLIENT_TIMEOUT: Duration = Duration::from_millis(250);

/// The status socket of the edge whose interface is `interface`.
pub fn socket_path(interface: &str) -> PathBuf {
    Path::new(STATUS_DIR).join(format!("{interface}.sock"))
}

/// The edge's status socket (owner-only; removed when dropped).
#[derive(Debug)]
pub struct StatusServer {
    listener: UnixListener,
    path: PathBuf,
}

impl StatusServer {
    pub fn bind(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use: another edge runs with this interface name", path.display()),
                ));
            }
            std::fs::remove_file(path)?; // stale, from a crashed run
        }
        let listener = UnixListener::bind(path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(StatusServer { listener, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Answers every waiting client with `render()`.
    pub fn serve(&self, mut render: impl FnMut() -> String) {
        while let Ok((mut stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
            let _ = stream.write_all(render().as_bytes());
        }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `omni-daemon status`: what the edge on `interface` reports.
pub fn query(interface: &str) -> io::Result<String> {
    let path = socket_path(interface);
    let mut s = UnixStream::connect(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("no edge on interface {interface} ({}: {e})", path.display())))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A minimal HTTP endpoint for Prometheus scrapes (any path gets the metrics).
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(MetricsServer { listener })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Answers every waiting scrape with `render()` (Prometheus text format).
    pub fn serve(&self, mut render: impl FnMut() -> String) {
        while let Ok((mut stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
            let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
            // Read the request head (best effort: we answer whatever it asks).
            let mut req = [0u8; 2048];
            let mut got = 0;
            while got < req.len() {
                match stream.read(&mut req[got..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        got += n;
                        if req[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
            let body = render();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes()));
        }
    }
}

/// Appends one metric (with HELP/TYPE the first time its name is seen).
pub fn metric(out: &mut String, name: &str, kind: &str, help: &str, labels: &str, value: u64) {
    use std::fmt::Write as _;
    let header = format!("# TYPE {name} ");
    if !out.contains(&header) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    }
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A duration as "4s", "3m12s", "2h5m", "1d3h".
pub fn human_ago(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m{}s ago", s / 60, s % 60),
        3600..=86399 => format!("{}h{}m ago", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h ago", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_ago(Duration::from_secs(4)), "4s ago");
        assert_eq!(human_ago(Duration::from_secs(192)), "3m12s ago");
        assert_eq!(human_ago(Duration::from_secs(7500)), "2h5m ago");
        let mut m = String::new();
        metric(&mut m, "omni_x", "counter", "An x.", "", 3);
        metric(&mut m, "omni_x", "counter", "An x.", "a=\"b\"", 4);
        assert_eq!(m, "# HELP omni_x An x.\n# TYPE omni_x counter\nomni_x 3\nomni_x{a=\"b\"} 4\n");
    }

    #[test]
    fn status_socket_and_metrics_answer() {
        let dir = std::env::temp_dir().join(format!("omni-status-test-{}", std::process::id()));
        let path = dir.join("t.sock");
        let server = StatusServer::bind(&path).unwrap();
        // A second server on the same path is refused while the first lives.
        assert_eq!(StatusServer::bind(&path).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        // Connected before the server accepts: the backlog holds it.
        let mut c = UnixStream::connect(&path).unwrap();
        server.serve(|| "hello\n".into());
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello\n");
        drop(server);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);

        let m = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = m.local_addr().unwrap();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        m.serve(|| "omni_up 1\n".into());
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nomni_up 1\n"), "{out}");
    }
}
