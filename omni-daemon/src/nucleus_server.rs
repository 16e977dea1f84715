//! `--mode nucleus`: the signaling server. No TUN device: one UDP port
//! (IPv4 + IPv6) carries the WireGuard sessions of every edge, driven by
//! omni-core's sans-IO [`NucleusServer`]; this module only moves datagrams
//! and time in and out, in one thread sleeping in `ppoll` until the server's
//! next deadline.
//!
//! Besides WireGuard, the port answers one daemon-level message, the key
//! query (see `omni_core::nucleus::wire::key_query`): an edge started without `--nucleus-key` asks
//! for the Nucleus's public key once and pins it (trust on first use). The
//! answer is smaller than the question, so the port is no amplifier.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use omni_core::crypto::{CryptoProvider, DefaultProvider, RustCrypto};
use omni_core::nucleus::server::{Handled, ServerEvent, ServerStats};
use omni_core::nucleus::wire::{is_key_query, key_reply};
use omni_core::nucleus::{NucleusServer, ServerConfig};
use omni_core::{Instant, WallTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::config::NucleusOptions;
use crate::identity;
use crate::status::{metric, MetricsServer};
use crate::udp::{self, Sockets};

pub type Server = NucleusServer<NucleusCrypto, ChaCha20Rng>;

/// The Nucleus's crypto: the default provider's X25519 (aws-lc: fast
/// handshakes, the Nucleus's main CPU cost), and ChaCha20-Poly1305 keys held
/// as their 32 bytes (omni-core's RustCrypto AEAD), because the Nucleus keeps
/// a session for every edge: aws-lc allocates an AEAD context of about 600
/// bytes per key, two per session, which would be most of the Nucleus's
/// memory per member. Its messages are small (signaling) or rate-limited
/// (relayed data, 1 MiB/s per member), so the portable AEAD costs little.
#[derive(Debug)]
pub struct NucleusCrypto;

impl CryptoProvider for NucleusCrypto {
    type AeadKey = <RustCrypto as CryptoProvider>::AeadKey;
    type X25519Secret = <DefaultProvider as CryptoProvider>::X25519Secret;
    fn x25519_secret(bytes: &[u8; 32]) -> Self::X25519Secret {
        DefaultProvider::x25519_secret(bytes)
    }
    fn x25519_public(secret: &Self::X25519Secret) -> [u8; 32] {
        DefaultProvider::x25519_public(secret)
    }
    fn x25519(secret: &Self::X25519Secret, public: &[u8; 32]) -> [u8; 32] {
        DefaultProvider::x25519(secret, public)
    }
}

/// Output buffers: 1700 bytes always suffice for the server; receive
/// buffers hold any datagram.
const OUT_BUF: usize = 2048;
const RECV_BUF: usize = 65536;
/// Datagrams read from one socket before looking at the others.
const BATCH: usize = 64;
const WALL_RESYNC: Duration = Duration::from_secs(60);
const STATS_EVERY: Duration = Duration::from_secs(300);

// ----- the key query ---------------------------------------------------------
// Its codec lives in omni-core (`nucleus::wire::{key_query, key_reply, ...}`)
// so every host (phones, firmware) speaks it the same way.

/// Key queries answered per second (all sources together).
const KEY_QUERIES_PER_SEC: u32 = 100;

/// A token bucket (one per process: key queries are rare).
struct Bucket {
    tokens: u32,
    last: Instant,
}

impl Bucket {
    fn allow(&mut self, now: Instant) -> bool {
        let secs = now.saturating_duration_since(self.last).as_millis();
        let refill = u32::try_from(secs * u128::from(KEY_QUERIES_PER_SEC) / 1000).unwrap_or(u32::MAX);
        if refill > 0 {
            self.tokens = self.tokens.saturating_add(refill).min(KEY_QUERIES_PER_SEC);
            self.last = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Turns receive offload off: every read is one datagram, so signaling is
/// never part of a coalesced batch.
pub fn disable_gro(sockets: &Sockets) {
    for s in [&sockets.v4, &sockets.v6].into_iter().flatten() {
        let _ = nix::sys::socket::setsockopt(&**s, nix::sys::socket::sockopt::UdpGroSegment, &false);
    }
}

/// Blocks the termination signals (delivered through the returned signalfd).
pub fn termination_signals() -> anyhow::Result<SignalFd> {
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().context("blocking signals")?;
    SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).context("signalfd")
}

/// A termination signal waiting on `sigfd`, if any.
pub fn read_signal(sigfd: &SignalFd) -> Option<Signal> {
    match sigfd.read_signal() {
        Ok(Some(info)) => Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)).ok(),
        _ => None,
    }
}

fn send(sockets: &Sockets, buf: &[u8], to: SocketAddr) {
    if let Err(e) = sockets.send_to(buf, to) {
        debug!(%to, "send failed: {e}");
    }
}

struct Nucleus {
    server: Server,
    sockets: Sockets,
    clock: Clock,
    out: Vec<u8>,
    recv: Vec<u8>,
    key_queries: Bucket,
    wall_at: Instant,
    stats_at: Instant,
    metrics: Option<MetricsServer>,
}

pub fn run(opts: NucleusOptions) -> anyhow::Result<()> {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let sigfd = termination_signals()?;
    let (secret, created) = identity::load_or_create(&opts.identity_dir, identity::NUCLEUS_KEY_FILE)?;
    let key_path = opts.identity_dir.join(identity::NUCLEUS_KEY_FILE);
    if created {
        info!(path = %key_path.display(), "created a new Nucleus key");
    }
    let sockets = Sockets::bind(opts.port, 0).with_context(|| format!("cannot bind UDP port {}", opts.port))?;
    disable_gro(&sockets);
    let metrics = match opts.metrics {
        Some(a) => Some(MetricsServer::bind(a).with_context(|| format!("cannot serve metrics on {a}"))?),
        None => None,
    };
    if let Some(m) = &metrics {
        info!(addr = %m.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving Prometheus metrics");
    }
    let clock = Clock::new();
    let now = clock.now();
    let mut server =
        Server::new(ServerConfig::default(), secret, ChaCha20Rng::from_entropy(), ChaCha20Rng::from_entropy());
    server.set_wall_time(now, WallTime::now_system());
    let public = server.public_key();
    // The one line edges need: on stdout, for scripts and for pinning.
    println!("nucleus public key: {public}");
    info!(port = sockets.port, key = %public, "Nucleus running (pin the key on edges with --nucleus-key)");
    let mut n = Nucleus {
        server,
        sockets,
        clock,
        out: vec![0; OUT_BUF],
        recv: vec![0; RECV_BUF],
        key_queries: Bucket { tokens: KEY_QUERIES_PER_SEC, last: now },
        wall_at: now.saturating_add(WALL_RESYNC),
        stats_at: now.saturating_add(STATS_EVERY),
        metrics,
    };
    let sig = n.serve(&sigfd)?;
    info!("{sig}; Nucleus shutting down");
    n.log_stats();
    Ok(())
}

impl Nucleus {
    fn serve(&mut self, sigfd: &SignalFd) -> anyhow::Result<Signal> {
        loop {
            let now = self.clock.now();
            if now >= self.wall_at {
                self.server.set_wall_time(now, WallTime::now_system());
                self.wall_at = now.saturating_add(WALL_RESYNC);
            }
            if now >= self.stats_at {
                self.log_stats();
                self.stats_at = now.saturating_add(STATS_EVERY);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
                self.drain(now);
            }
            let deadline =
                [self.server.poll_timeout(), Some(self.wall_at), Some(self.stats_at)].into_iter().flatten().min();
            let timeout = deadline.map(|t| TimeSpec::from_duration(self.clock.until(t)));
            let sockets = self.sockets.clone();
            let readable = PollFlags::POLLIN;
            let mut fds = vec![PollFd::new(sigfd.as_fd(), readable)];
            for s in [&sockets.v4, &sockets.v6].into_iter().flatten() {
                fds.push(PollFd::new(s.as_fd(), readable));
            }
            if let Some(m) = &self.metrics {
                fds.push(PollFd::new(m.fd(), readable));
            }
            match nix::poll::ppoll(&mut fds, timeout, None) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("poll"),
            }
            let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
            drop(fds);
            if ready[0] {
                if let Some(sig) = read_signal(sigfd) {
                    return Ok(sig);
                }
            }
            for (i, s) in [&sockets.v4, &sockets.v6].into_iter().flatten().enumerate() {
                if ready.get(i + 1).copied().unwrap_or(false) {
                    self.read_socket(s);
                }
            }
            if self.metrics.is_some() && ready.last().copied().unwrap_or(false) {
                let text = self.render_metrics();
                if let Some(m) = &self.metrics {
                    m.serve(|| text.clone());
                }
            }
        }
    }

    fn read_socket(&mut self, socket: &std::net::UdpSocket) {
        for _ in 0..BATCH {
            let r = match udp::recv(socket, &mut self.recv) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("UDP receive: {e}");
                    continue;
                }
            };
            let now = self.clock.now();
            let from = udp::canonical(r.from);
            // Should a kernel coalesce anyway, each datagram is handled alone.
            for (start, end) in r.datagrams() {
                self.datagram(now, from, start, end);
            }
            self.drain(now);
        }
    }

    fn datagram(&mut self, now: Instant, from: SocketAddr, start: usize, end: usize) {
        let dg = &self.recv[start..end];
        if is_key_query(dg) {
            if self.key_queries.allow(now) {
                send(&self.sockets, &key_reply(&self.server.public_key()), from);
            }
            return;
        }
        match self.server.handle_datagram(now, from, dg, &mut self.out) {
            Ok(Handled::Reply { len }) => send(&self.sockets, &self.out[..len], from),
            Ok(Handled::Done) => {}
            Err(e) => debug!(%from, "datagram dropped: {e:?}"),
        }
    }

    fn drain(&mut self, now: Instant) {
        loop {
            match self.server.poll_transmit(now, &mut self.out) {
                Ok(Some(t)) => send(&self.sockets, &self.out[..t.len], t.to),
                Ok(None) => break,
                Err(e) => {
                    warn!("poll_transmit: {e:?}");
                    break;
                }
            }
        }
        while let Some(e) = self.server.poll_event() {
            match e {
                ServerEvent::ClusterCreated { cluster } => info!(%cluster, "cluster created"),
                ServerEvent::ClusterRemoved { cluster } => info!(%cluster, "cluster removed"),
                ServerEvent::MemberJoined { cluster, key, vip, endpoint } => {
                    let endpoint = endpoint.map(|e| e.to_string()).unwrap_or_default();
                    info!(%cluster, %key, %vip, endpoint, "member joined")
                }
                ServerEvent::MemberLeft { cluster, key, reason } => info!(%cluster, %key, ?reason, "member left"),
                ServerEvent::Refused { key, code } => info!(%key, ?code, "registration refused"),
                other => debug!("{other:?}"),
            }
        }
    }

    fn log_stats(&self) {
        let s = self.server.stats();
        info!(
            members = self.server.member_count(),
            sessions = self.server.session_count(),
            clusters = self.server.cluster_count(),
            datagrams = s.datagrams,
            dropped = s.dropped,
            malformed = s.malformed,
            rate_limited = s.rate_limited,
            unauthorized = s.unauthorized,
            relayed = s.relayed,
            relayed_bytes = s.relayed_bytes,
            "Nucleus stats"
        );
    }

    fn render_metrics(&self) -> String {
        let mut m = String::new();
        let g = |m: &mut String, name: &str, help: &str, v: usize| {
            metric(m, name, "gauge", help, "", u64::try_from(v).unwrap_or(u64::MAX))
        };
        g(&mut m, "omni_nucleus_members", "Registered members.", self.server.member_count());
        g(&mut m, "omni_nucleus_sessions", "WireGuard sessions (members and pending).", self.server.session_count());
        g(&mut m, "omni_nucleus_clusters", "Clusters.", self.server.cluster_count());
        g(&mut m, "omni_nucleus_queued", "Messages waiting to be sent.", self.server.queued());
        let s: ServerStats = self.server.stats();
        let counters: [(&str, u64); 20] = [
            ("datagrams", s.datagrams),
            ("dropped", s.dropped),
            ("sessions_opened", s.sessions_opened),
            ("sessions_refused", s.sessions_refused),
            ("messages", s.messages),
            ("malformed", s.malformed),
            ("rate_limited", s.rate_limited),
            ("unauthorized", s.unauthorized),
            ("challenge_expired", s.challenge_expired),
            ("vip_conflicts", s.vip_conflicts),
            ("registrations", s.registrations),
            ("leaves", s.leaves),
            ("expired", s.expired),
            ("punches", s.punches),
            ("relayed", s.relayed),
            ("relayed_bytes", s.relayed_bytes),
            ("relay_refused", s.relay_refused),
            ("queue_dropped", s.queue_dropped),
            ("send_failed", s.send_failed),
            ("events_dropped", s.events_dropped),
        ];
        for (name, v) in counters {
            metric(&mut m, &format!("omni_nucleus_{name}_total"), "counter", "Nucleus counter.", "", v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_queries_are_rate_limited() {
        let mut b = Bucket { tokens: 2, last: Instant::ZERO };
        assert!(b.allow(Instant::ZERO) && b.allow(Instant::ZERO) && !b.allow(Instant::ZERO));
        assert!(b.allow(Instant::from_secs(1)));
        // The Nucleus answers exactly the core's query with the core's reply format.
        let q = omni_core::nucleus::wire::key_query();
        assert!(is_key_query(&q));
        let k = omni_core::PublicKey([9; 32]);
        assert_eq!(omni_core::nucleus::wire::parse_key_reply(&key_reply(&k)), Some(k));
    }
}
