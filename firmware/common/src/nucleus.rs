//! Joining a cluster through a Nucleus: omni-core's sans-IO `NucleusClient`
//! run by the tunnel task as its [`Signaling`], over the tunnel's own UDP
//! socket (so the Nucleus sees the very NAT mapping the members must use).
//!
//! - Members become peers of the tunnel's node (the VIP of each as its /32),
//!   reached directly or relayed through the Nucleus; the device's own VIP is
//!   its address on the tunnel device, so applications are unchanged.
//! - No heap: the client and its member table ([`FixedMembers`]) live in a
//!   static; the node needs one peer slot for the Nucleus plus one per member.
//! - Wall time: the Nucleus stamps its replies with its clock. The tunnel
//!   hands that time to its [`WallKeeper`](crate::tunnel::WallKeeper), which
//!   stores the new ceiling before the node uses it (see [`crate::wall`]): the
//!   device's TAI64N timestamps follow the Nucleus's clock and still never go
//!   back across reboots. (The client's own `use_nucleus_time` is off for that
//!   reason: the time must be persisted before it is used.)

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use omni_core::crypto::CryptoProvider;
use omni_core::node::{SendError, Transmit};
use omni_core::nucleus::client::{ClientConfig, ClientEvent, MemberTable, NucleusClient, Path, State};
use omni_core::nucleus::cluster::ClusterSecret;
use omni_core::nucleus::wire::{self, Message};
use omni_core::storage::Storage;
use omni_core::{Event, Instant, Node, PeerId, WallTime};

pub use omni_core::nucleus::client::FixedMembers;

use crate::config::NucleusSpec;
use crate::tunnel::Signaling;

/// The client's configuration for a device: the Nucleus and its pinned key
/// from `spec`, our VIP, no local endpoints (a device behind NAT has none
/// worth announcing), relay fallback on, Nucleus time through the tunnel's
/// wall keeper (see the module documentation).
pub fn client_config(spec: &NucleusSpec<'_>, vip: Ipv4Addr) -> ClientConfig {
    let mut c = ClientConfig::new(spec.key, SocketAddr::V4(spec.endpoint), IpAddr::V4(vip));
    c.use_nucleus_time = false;
    c.relay_fallback = true;
    c
}

/// The cluster's keys from its name and secret.
pub fn cluster_secret<C: CryptoProvider>(spec: &NucleusSpec<'_>) -> ClusterSecret {
    if spec.secret.is_empty() {
        defmt::warn!("nucleus: no secret: the cluster is unauthenticated");
    }
    ClusterSecret::derive::<C>(spec.cluster.as_bytes(), spec.secret.as_bytes())
}

/// What the client is doing, for the application (updated by the tunnel task).
pub struct NucleusStatus {
    state: AtomicU8,
    pub members: AtomicU32,
    pub direct: AtomicU32,
    pub relayed: AtomicU32,
    pub registrations: AtomicU32,
    pub refusals: AtomicU32,
}

impl NucleusStatus {
    pub const fn new() -> Self {
        NucleusStatus {
            state: AtomicU8::new(0),
            members: AtomicU32::new(0),
            direct: AtomicU32::new(0),
            relayed: AtomicU32::new(0),
            registrations: AtomicU32::new(0),
            refusals: AtomicU32::new(0),
        }
    }

    /// The registration state's name (`idle`, `connecting`, `registering`,
    /// `registered`, `left`).
    pub fn state(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            1 => State::Connecting.name(),
            2 => State::Registering.name(),
            3 => State::Registered.name(),
            4 => State::Left.name(),
            _ => State::Idle.name(),
        }
    }
}

impl Default for NucleusStatus {
    fn default() -> Self {
        Self::new()
    }
}

fn bump(c: &AtomicU32) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
}

/// The tunnel's control plane for a device in a cluster.
pub struct NucleusSignaling<'d, M: MemberTable> {
    client: &'d mut NucleusClient<M>,
    status: &'d NucleusStatus,
    wall: Option<WallTime>,
}

impl<'d, M: MemberTable> NucleusSignaling<'d, M> {
    pub fn new(client: &'d mut NucleusClient<M>, status: &'d NucleusStatus) -> Self {
        NucleusSignaling { client, status, wall: None }
    }

    /// Logs the client's events and refreshes the status.
    fn after(&mut self) {
        while let Some(e) = self.client.poll_event() {
            match e {
                ClientEvent::Registered { vip, reflexive } => {
                    bump(&self.status.registrations);
                    defmt::info!(
                        "nucleus: registered as {} (seen as {})",
                        defmt::Display2Format(&vip),
                        defmt::Debug2Format(&reflexive)
                    );
                }
                ClientEvent::Refused { code } => {
                    bump(&self.status.refusals);
                    defmt::warn!("nucleus: refused: {}", defmt::Debug2Format(&code));
                }
                ClientEvent::NucleusLost => defmt::warn!("nucleus: lost, registering again"),
                ClientEvent::PeerAdded { peer, vip, .. } => {
                    defmt::info!("nucleus: member {} at {}", peer, defmt::Display2Format(&vip))
                }
                ClientEvent::PeerRemoved { peer, .. } => defmt::info!("nucleus: member {} left", peer),
                ClientEvent::PeerSkipped { .. } => defmt::warn!("nucleus: member skipped (tables full)"),
                ClientEvent::Relayed { peer } => defmt::info!("nucleus: member {} relayed", peer),
                ClientEvent::Direct { peer } => defmt::info!("nucleus: member {} direct", peer),
                ClientEvent::Moved { peer, endpoint } => {
                    defmt::info!("nucleus: member {} moved to {}", peer, defmt::Display2Format(&endpoint))
                }
                ClientEvent::Left => defmt::info!("nucleus: left the cluster"),
                _ => defmt::debug!("nucleus: {}", defmt::Debug2Format(&e)),
            }
        }
        let state = match self.client.state() {
            State::Idle => 0,
            State::Connecting => 1,
            State::Registering => 2,
            State::Registered => 3,
            State::Left => 4,
        };
        self.status.state.store(state, Ordering::Relaxed);
        let (mut n, mut direct, mut relayed) = (0u32, 0u32, 0u32);
        self.client.members().for_each(|m| {
            n += 1;
            match m.path {
                Path::Direct => direct += 1,
                Path::Relayed => relayed += 1,
                Path::Connecting | Path::RelayRequested => {}
            }
        });
        self.status.members.store(n, Ordering::Relaxed);
        self.status.direct.store(direct, Ordering::Relaxed);
        self.status.relayed.store(relayed, Ordering::Relaxed);
    }
}

impl<C, R, S, M> Signaling<C, R, S> for NucleusSignaling<'_, M>
where
    C: CryptoProvider,
    R: rand_core::RngCore + rand_core::CryptoRng,
    S: Storage<C>,
    M: MemberTable,
{
    fn start(&mut self, now: Instant, node: &mut Node<C, R, S>) {
        match self.client.start(now, node) {
            Ok(id) => defmt::info!("nucleus: started (peer {})", id),
            Err(e) => defmt::error!("nucleus: cannot start: {}", e),
        }
        self.after();
    }

    fn poll_transmit(
        &mut self,
        now: Instant,
        node: &mut Node<C, R, S>,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, SendError> {
        let r = self.client.poll_transmit(now, node, buf);
        self.after();
        r
    }

    fn route_transmit(
        &mut self,
        now: Instant,
        node: &mut Node<C, R, S>,
        t: Transmit,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, SendError> {
        self.client.route_transmit(now, node, t, buf)
    }

    fn handle_control(
        &mut self,
        now: Instant,
        node: &mut Node<C, R, S>,
        from: PeerId,
        payload: &[u8],
        out: &mut [u8],
    ) -> Option<usize> {
        let from_nucleus = Some(from) == self.client.nucleus_peer();
        let r = self.client.handle_control(now, node, from, payload, out);
        if from_nucleus && r.is_ok() {
            // The Nucleus stamps these replies with its clock (authenticated:
            // they came through our WireGuard session with its pinned key).
            self.wall = match wire::parse(payload) {
                Ok(Message::Challenge(c)) => Some(c.time),
                Ok(Message::RegisterOk(ok)) => Some(ok.time),
                Ok(Message::HeartbeatAck(a)) => Some(a.time),
                _ => self.wall,
            };
        }
        self.after();
        match r {
            Ok(Some((_, len))) => Some(len),
            Ok(None) => None,
            Err(e) => {
                defmt::debug!("nucleus: control payload dropped: {}", e);
                None
            }
        }
    }

    fn handle_event(&mut self, now: Instant, node: &mut Node<C, R, S>, event: &Event) {
        self.client.handle_node_event(now, node, event);
        self.after();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant, node: &mut Node<C, R, S>) {
        self.client.handle_timeout(now, node);
        self.after();
    }

    fn take_wall_time(&mut self) -> Option<WallTime> {
        self.wall.take()
    }
}
