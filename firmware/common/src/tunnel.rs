//! The tunnel task: omni-core over an embassy-net UDP socket, with the
//! decrypted side exposed as an embassy-net device.
//!
//! ```text
//!  app sockets on the VIP ── embassy-net stack (IP medium) ── channel Device
//!                                                               │ ▲
//!                                                   tx packets  ▼ │ rx packets
//!                                   Tunnel::run (omni_core::Node, sans-IO)
//!                                                               │ ▲
//!                                       UDP socket on the outer embassy-net stack
//! ```
//!
//! One task owns the node; it sleeps until a datagram arrives, the tunnel
//! stack hands it a packet, or the node's next deadline (`poll_timeout`), so
//! there is no periodic tick. Packets use the node's in-place calls: one copy
//! per direction (between the channel's buffers and the work buffers).

use core::future::pending;
use core::net::{IpAddr, SocketAddr, SocketAddrV4};
use core::sync::atomic::{AtomicU32, Ordering};

use embassy_futures::select::{select3, Either3};
use embassy_net::udp::{PacketMetadata, RecvError as UdpRecvError, UdpSocket};
use embassy_net::{IpEndpoint, Stack};
use embassy_net_driver::LinkState;
use embassy_net_driver_channel as ch;
use embassy_time::Timer;
use omni_core::crypto::CryptoProvider;
use omni_core::node::{Incoming, Received, SendError, Sent, Transmit, IN_PLACE_OFFSET};
use omni_core::storage::Storage;
use omni_core::{Event, Instant, Node, NodeConfig, PeerConfig, PeerId, WallTime};

use crate::config::Config;
use crate::{omni_now, to_embassy};

/// MTU of the tunnel device (WireGuard's default).
pub const TUNNEL_MTU: usize = 1420;
/// Largest datagram the node produces for a `TUNNEL_MTU` packet (16-byte
/// header, payload padded but never past the MTU, 16-byte tag), rounded up.
pub const DATAGRAM_MAX: usize = TUNNEL_MTU + 32 + 12;
/// The work buffers also hold the in-place headroom and padding slack, and
/// the framing of a datagram relayed through a Nucleus (a `RelayData` header
/// and key, and the Nucleus session's own transport overhead: < 128 bytes).
const WORK: usize = DATAGRAM_MAX + 128;
const SOCKET_PACKETS: usize = 4;

/// Counters the tunnel task updates (only that task writes them, so plain
/// load/store works on cores without atomic read-modify-write, like thumbv6m).
#[derive(Default)]
pub struct TunnelStats {
    pub handshakes: AtomicU32,
    pub packets_in: AtomicU32,
    pub packets_out: AtomicU32,
    pub datagrams_dropped: AtomicU32,
    pub stale_timestamps: AtomicU32,
    /// The wall clock (Unix seconds) last taken from the control plane (the
    /// Nucleus's time), 0 if none yet.
    pub control_wall_secs: AtomicU32,
}

impl TunnelStats {
    pub const fn new() -> Self {
        TunnelStats {
            handshakes: AtomicU32::new(0),
            packets_in: AtomicU32::new(0),
            packets_out: AtomicU32::new(0),
            datagrams_dropped: AtomicU32::new(0),
            stale_timestamps: AtomicU32::new(0),
            control_wall_secs: AtomicU32::new(0),
        }
    }
}

fn bump(c: &AtomicU32) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// Static memory of one tunnel: the channel's packet buffers (`N_RX`/`N_TX`
/// packets of `TUNNEL_MTU` each way), the UDP socket's buffers and two work buffers.
pub struct TunnelResources<const N_RX: usize, const N_TX: usize> {
    channel: ch::State<TUNNEL_MTU, N_RX, N_TX>,
    rx_meta: [PacketMetadata; SOCKET_PACKETS],
    rx_buffer: [u8; 2 * DATAGRAM_MAX],
    tx_meta: [PacketMetadata; SOCKET_PACKETS],
    tx_buffer: [u8; 2 * DATAGRAM_MAX],
    rx_work: [u8; WORK],
    tx_work: [u8; WORK],
}

impl<const N_RX: usize, const N_TX: usize> TunnelResources<N_RX, N_TX> {
    pub const fn new() -> Self {
        TunnelResources {
            channel: ch::State::new(),
            rx_meta: [PacketMetadata::EMPTY; SOCKET_PACKETS],
            rx_buffer: [0; 2 * DATAGRAM_MAX],
            tx_meta: [PacketMetadata::EMPTY; SOCKET_PACKETS],
            tx_buffer: [0; 2 * DATAGRAM_MAX],
            rx_work: [0; WORK],
            tx_work: [0; WORK],
        }
    }
}

impl<const N_RX: usize, const N_TX: usize> Default for TunnelResources<N_RX, N_TX> {
    fn default() -> Self {
        Self::new()
    }
}

/// Something the tunnel calls before handshakes may need wall time, e.g.
/// [`PersistedWall`](crate::PersistedWall) raising its stored ceiling.
pub trait WallKeeper {
    /// Does any upkeep due at `now`; returns when to be called again.
    fn maintain(&mut self, now: Instant) -> Instant;
    /// Wall time learned at `now` from elsewhere (the Nucleus): returns the
    /// wall time the node should use (never earlier than before).
    fn adopt(&mut self, now: Instant, wall: WallTime) -> WallTime;
}

impl<S: crate::WallStore> WallKeeper for crate::PersistedWall<S> {
    fn maintain(&mut self, now: Instant) -> Instant {
        crate::PersistedWall::maintain(self, now)
    }
    fn adopt(&mut self, now: Instant, wall: WallTime) -> WallTime {
        crate::PersistedWall::adopt(self, now, wall)
    }
}

/// A control plane the tunnel runs beside its node, in the same task and
/// over the same UDP socket: [`NoSignaling`] for configured peers only, or
/// [`NucleusSignaling`](crate::nucleus::NucleusSignaling) (a cluster joined
/// through a Nucleus). The defaults are what a plain tunnel does.
pub trait Signaling<C, R, S>
where
    C: CryptoProvider,
    R: rand_core::RngCore + rand_core::CryptoRng,
    S: Storage<C>,
{
    /// Once, when the tunnel starts (before the first transmit).
    fn start(&mut self, _now: Instant, _node: &mut Node<C, R, S>) {}
    /// The next datagram to send (instead of `Node::poll_transmit`).
    fn poll_transmit(
        &mut self,
        now: Instant,
        node: &mut Node<C, R, S>,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, SendError> {
        node.poll_transmit(now, buf)
    }
    /// A datagram `Node::send_ip` produced (`buf[..t.len]`): what to send.
    fn route_transmit(
        &mut self,
        _now: Instant,
        _node: &mut Node<C, R, S>,
        t: Transmit,
        _buf: &mut [u8],
    ) -> Result<Option<Transmit>, SendError> {
        Ok(Some(t))
    }
    /// A payload from a control peer. A relayed IP packet for the tunnel
    /// device is written to `out`: returns its length.
    fn handle_control(
        &mut self,
        _now: Instant,
        _node: &mut Node<C, R, S>,
        _from: PeerId,
        _payload: &[u8],
        _out: &mut [u8],
    ) -> Option<usize> {
        None
    }
    /// Every node event, after the tunnel saw it.
    fn handle_event(&mut self, _now: Instant, _node: &mut Node<C, R, S>, _event: &Event) {}
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn handle_timeout(&mut self, _now: Instant, _node: &mut Node<C, R, S>) {}
    /// Wall time the control plane learned since the last call.
    fn take_wall_time(&mut self) -> Option<WallTime> {
        None
    }
}

/// No control plane: the configured peers only.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSignaling;

impl<C, R, S> Signaling<C, R, S> for NoSignaling
where
    C: CryptoProvider,
    R: rand_core::RngCore + rand_core::CryptoRng,
    S: Storage<C>,
{
}

/// Errors building a node from a [`Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum BuildError {
    AddPeer(omni_core::node::AddPeerError),
    Route(omni_core::node::RouteError),
}

/// Builds a node with the configuration's key, peers and allowed IPs.
pub fn build_node<C, R, S>(cfg: &Config<'_>, rng: R, now: Instant) -> Result<Node<C, R, S>, BuildError>
where
    C: CryptoProvider,
    R: rand_core::RngCore + rand_core::CryptoRng,
    S: Storage<C>,
{
    let mut node = Node::new(
        NodeConfig { private_key: Some(cfg.private_key.clone()), mtu: TUNNEL_MTU as u16, ..NodeConfig::default() },
        rng,
    );
    for p in &cfg.peers {
        let id = node
            .add_peer(
                now,
                PeerConfig {
                    public_key: p.public_key,
                    preshared_key: p.preshared_key.clone(),
                    endpoint: p.endpoint.map(SocketAddr::V4),
                    persistent_keepalive: p.keepalive,
                },
            )
            .map_err(BuildError::AddPeer)?;
        for net in &p.allowed {
            node.add_allowed_ip(id, *net).map_err(BuildError::Route)?;
        }
    }
    Ok(node)
}

/// The embassy-net configuration of the tunnel device: the VIP, no gateway.
pub fn tunnel_net_config(cfg: &Config<'_>) -> embassy_net::Config {
    embassy_net::Config::ipv4_static(embassy_net::StaticConfigV4 {
        address: embassy_net::Ipv4Cidr::new(cfg.vip, cfg.vip_prefix),
        gateway: None,
        dns_servers: Default::default(),
    })
}

/// The task half of a tunnel; its [`run`](Self::run) never returns. `G` is
/// its control plane (none by default; see [`with_signaling`](Self::with_signaling)).
pub struct Tunnel<'d, C: CryptoProvider, R, S: Storage<C>, G = NoSignaling> {
    node: Node<C, R, S>,
    sig: G,
    socket: UdpSocket<'d>,
    runner: Option<ch::Runner<'d, TUNNEL_MTU>>,
    rx: &'d mut [u8; WORK],
    tx: &'d mut [u8; WORK],
    wall: Option<&'d mut dyn WallKeeper>,
    stats: &'d TunnelStats,
}

impl<'d, C, R, S> Tunnel<'d, C, R, S, NoSignaling>
where
    C: CryptoProvider,
    R: rand_core::RngCore + rand_core::CryptoRng,
    S: Storage<C>,
{
    /// Binds `listen_port` on the outer stack and creates the tunnel device
    /// (hand it to `embassy_net::new` with [`tunnel_net_config`]).
    pub fn new<const N_RX: usize, const N_TX: usize>(
        node: Node<C, R, S>,
        outer: Stack<'d>,
        listen_port: u16,
        res: &'d mut TunnelResources<N_RX, N_TX>,
        stats: &'d TunnelStats,
    ) -> (Self, ch::Device<'d, TUNNEL_MTU>) {
        let TunnelResources { channel, rx_meta, rx_buffer, tx_meta, tx_buffer, rx_work, tx_work } = res;
        let (runner, device) = ch::new(channel, embassy_net_driver::HardwareAddress::Ip);
        let mut socket = UdpSocket::new(outer, rx_meta, rx_buffer, tx_meta, tx_buffer);
        if let Err(e) = socket.bind(listen_port) {
            defmt::error!("tunnel: cannot bind UDP port {}: {}", listen_port, e);
        }
        let tunnel = Tunnel {
            node,
            sig: NoSignaling,
            socket,
            runner: Some(runner),
            rx: rx_work,
            tx: tx_work,
            wall: None,
            stats,
        };
        (tunnel, device)
    }

    /// Runs `sig` as the tunnel's control plane (e.g. a Nucleus client).
    pub fn with_signaling<G: Signaling<C, R, S>>(self, sig: G) -> Tunnel<'d, C, R, S, G> {
        let Tunnel { node, sig: NoSignaling, socket, runner, rx, tx, wall, stats } = self;
        Tunnel { node, sig, socket, runner, rx, tx, wall, stats }
    }
}

impl<'d, C, R, S, G> Tunnel<'d, C, R, S, G>
where
    C: CryptoProvider,
    R: rand_core::RngCore + rand_core::CryptoRng,
    S: Storage<C>,
    G: Signaling<C, R, S>,
{
    /// Keeps `wall` maintained (see [`WallKeeper`]).
    pub fn with_wall_keeper(mut self, wall: &'d mut dyn WallKeeper) -> Self {
        self.wall = Some(wall);
        self
    }

    pub fn node_mut(&mut self) -> &mut Node<C, R, S> {
        &mut self.node
    }

    /// Runs the tunnel forever.
    pub async fn run(mut self) -> ! {
        // `new` always sets it, and `run` takes `self`: never `None`.
        let Some(runner) = self.runner.take() else {
            loop {
                pending::<()>().await
            }
        };
        let (state, mut rx_chan, mut tx_chan) = runner.split();
        // The device is always up: a packet to a peer without a session
        // starts a handshake (and is dropped, as there is no queue without alloc).
        state.set_link_state(LinkState::Up);

        // Say hello to every peer we can reach, so they learn our endpoint and
        // the session is ready before the first packet.
        let now = omni_now();
        let mut ids: heapless::Vec<omni_core::PeerId, 8> = heapless::Vec::new();
        self.node.for_each_peer(|id| {
            let _ = ids.push(id);
        });
        if let Some(w) = self.wall.as_mut() {
            w.maintain(now);
        }
        self.sig.start(now, &mut self.node);
        for id in ids {
            if self.node.peer_stats(id).is_some_and(|s| s.endpoint.is_some()) {
                self.node.initiate(now, id);
            }
        }
        self.flush().await;

        loop {
            let mut deadline = match (self.node.poll_timeout(), self.sig.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(w) = self.wall.as_mut() {
                let next = w.maintain(omni_now());
                deadline = Some(deadline.map_or(next, |d| d.min(next)));
            }
            let timer = async {
                match deadline {
                    Some(d) => Timer::at(to_embassy(d)).await,
                    None => pending::<()>().await,
                }
            };
            let event = match select3(self.socket.recv_from(&mut self.rx[..]), tx_chan.tx_buf(), timer).await {
                Either3::First(Ok((n, meta))) => Wake::Datagram(n, meta.endpoint),
                Either3::First(Err(UdpRecvError::Truncated)) => {
                    bump(&self.stats.datagrams_dropped);
                    Wake::Nothing
                }
                Either3::Second(pkt) => {
                    let n = pkt.len().min(TUNNEL_MTU);
                    if let (Some(dst), Some(src)) =
                        (self.tx.get_mut(IN_PLACE_OFFSET..IN_PLACE_OFFSET + n), pkt.get(..n))
                    {
                        dst.copy_from_slice(src);
                    }
                    Wake::Packet(n)
                }
                Either3::Third(()) => Wake::Timer,
            };
            match event {
                Wake::Datagram(n, from) => self.on_datagram(n, from, &mut rx_chan).await,
                Wake::Packet(n) => {
                    tx_chan.tx_done();
                    self.on_packet(n).await;
                }
                Wake::Timer => {
                    let now = omni_now();
                    self.node.handle_timeout(now);
                    self.sig.handle_timeout(now, &mut self.node);
                }
                Wake::Nothing => {}
            }
            self.flush().await;
        }
    }

    async fn on_datagram(&mut self, n: usize, from: IpEndpoint, rx_chan: &mut ch::RxRunner<'d, TUNNEL_MTU>) {
        let IpAddr::V4(ip) = IpAddr::from(from.addr) else { return };
        let from_sa = SocketAddr::V4(SocketAddrV4::new(ip, from.port));
        let Some(buf) = self.rx.get_mut(..n) else { return };
        let now = omni_now();
        let packet = match self.node.handle_datagram_in_place_with_control(now, from_sa, buf) {
            Ok(Incoming::Received(Received::Done)) => None,
            Ok(Incoming::Received(Received::Reply { len })) => {
                if let Some(reply) = self.rx.get(..len) {
                    if let Err(e) = self.socket.send_to(reply, from).await {
                        defmt::warn!("tunnel: reply not sent: {}", e);
                    }
                }
                None
            }
            Ok(Incoming::Received(Received::Packet { len, .. })) => self.rx.get(IN_PLACE_OFFSET..IN_PLACE_OFFSET + len),
            Ok(Incoming::Control { peer, len }) => {
                let payload = self.rx.get(IN_PLACE_OFFSET..IN_PLACE_OFFSET + len).unwrap_or(&[]);
                // A relayed packet is decrypted into the (idle) transmit buffer.
                let relayed = self.sig.handle_control(now, &mut self.node, peer, payload, &mut self.tx[..]);
                if let Some(wall) = self.sig.take_wall_time() {
                    let wall = match self.wall.as_mut() {
                        Some(w) => w.adopt(now, wall),
                        None => wall,
                    };
                    self.node.set_wall_time(now, wall);
                    let secs = u32::try_from(wall.secs).unwrap_or(u32::MAX);
                    self.stats.control_wall_secs.store(secs, Ordering::Relaxed);
                }
                relayed.and_then(|len| self.tx.get(..len))
            }
            Err(e) => {
                if matches!(e, omni_core::node::RecvError::StaleTimestamp) {
                    bump(&self.stats.stale_timestamps);
                }
                bump(&self.stats.datagrams_dropped);
                defmt::debug!("tunnel: datagram dropped: {}", e);
                None
            }
        };
        let Some(pkt) = packet else { return };
        bump(&self.stats.packets_in);
        // Never block the tunnel on a slow application: drop instead.
        match rx_chan.try_rx_buf() {
            Some(buf) if buf.len() >= pkt.len() => {
                buf[..pkt.len()].copy_from_slice(pkt);
                rx_chan.rx_done(pkt.len());
            }
            _ => bump(&self.stats.datagrams_dropped),
        }
    }

    async fn on_packet(&mut self, n: usize) {
        let now = omni_now();
        match self.node.send_ip_in_place(now, &mut self.tx[..], n) {
            Ok(Sent::Transmit(t)) => {
                bump(&self.stats.packets_out);
                // Through the Nucleus if the peer is relayed.
                match self.sig.route_transmit(now, &mut self.node, t, &mut self.tx[..]) {
                    Ok(Some(t)) => send(&self.socket, &self.tx[..t.len], t.to).await,
                    Ok(None) => {}
                    Err(e) => defmt::debug!("tunnel: packet not relayed: {}", e),
                }
            }
            Ok(Sent::Queued { .. }) => {}
            Err(e) => defmt::debug!("tunnel: packet not sent: {}", e),
        }
    }

    /// Sends everything the node (and its control plane) wants to send and
    /// handles the node's events.
    async fn flush(&mut self) {
        loop {
            self.drain_events();
            match self.sig.poll_transmit(omni_now(), &mut self.node, &mut self.tx[..]) {
                Ok(Some(t)) => send(&self.socket, &self.tx[..t.len], t.to).await,
                Ok(None) => break,
                Err(e) => {
                    defmt::error!("tunnel: poll_transmit: {}", e);
                    break;
                }
            }
        }
        self.drain_events();
    }

    fn drain_events(&mut self) {
        let now = omni_now();
        while let Some(e) = self.node.poll_event() {
            if let Event::HandshakeCompleted { .. } = e {
                bump(&self.stats.handshakes);
            }
            defmt::info!("tunnel: {}", e);
            self.sig.handle_event(now, &mut self.node, &e);
        }
    }
}

enum Wake {
    Datagram(usize, IpEndpoint),
    Packet(usize),
    Timer,
    Nothing,
}

async fn send(socket: &UdpSocket<'_>, datagram: &[u8], to: SocketAddr) {
    let SocketAddr::V4(to) = to else {
        defmt::warn!("tunnel: IPv6 endpoints are not supported on this device");
        return;
    };
    if let Err(e) = socket.send_to(datagram, IpEndpoint::from(to)).await {
        defmt::warn!("tunnel: datagram not sent: {}", e);
    }
}
