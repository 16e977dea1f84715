//! Nucleus signaling: cluster membership, peer discovery, NAT traversal and
//! relay fallback for a mesh of OmniNervous nodes.
//!
//! # The channel
//!
//! An edge talks to the Nucleus over an ordinary WireGuard session between
//! its node key and the Nucleus's static key (Noise IK: both keys are proven;
//! replay protection and encryption come with it). The Nucleus is a peer of
//! the edge's [`Node`](crate::Node) marked with
//! [`Node::set_control_peer`](crate::Node::set_control_peer): its payloads come
//! back from [`Node::handle_datagram_with_control`](crate::Node::handle_datagram_with_control)
//! as [`Incoming::Control`](crate::Incoming::Control), never as IP packets. So
//! signaling shares the WireGuard UDP socket (no demultiplexing needed beyond
//! the node's receiver indexes) and the address the Nucleus observes is the
//! NAT mapping the other members must use. The preshared key of that session
//! is zero (the Nucleus cannot know the cluster before the handshake); the
//! edge must know the Nucleus's key beforehand (IK): the Nucleus prints it at
//! start and edges are configured with it.
//!
//! # Membership
//!
//! From the cluster's name and secret every member derives (see [`cluster`])
//! a Curve25519 key pair `(c, C)` and a root for pairwise preshared keys.
//! `C` names the cluster at the Nucleus (the name never travels). Joining:
//!
//! ```text
//! edge                                          Nucleus
//!  | -- WireGuard handshake (IK, psk 0) ----------> |
//!  | -- Hello ------------------------------------> |
//!  | <------------------ Challenge{challenge, time} |
//!  | -- Register{C, challenge, proof, vip[, vip2], locals}> |  proof = HMAC(X25519(c, N),
//!  | <-- RegisterOk{vip[, vip2], challenge, time, hb, refl} | edge ‖ N ‖ C ‖ challenge ‖ vip[s])
//!  | <-- PeerList(full, paged) -------------------- |
//!  | -- ListAck{version} -------------------------> |
//!  | -- Heartbeat{version} every hb s ------------> |
//!  | <-- HeartbeatAck{challenge, time, version, refl}|
//! ```
//!
//! - The Nucleus verifies proofs with `X25519(n, C)`, knowing only the public
//!   `C`: it never holds the secret, nor the pairwise keys derived from it.
//! - Every reply carries a fresh single-use challenge, so a proof cannot be
//!   replayed; it is bound to the edge's key (proven by the handshake), the
//!   Nucleus's key (useless at an impostor), the cluster and the VIP.
//! - A wrong secret yields a different `C`: with `open_clusters` (the default:
//!   the first member of a cluster creates it) the edge lands in a cluster of
//!   its own and sees no one; with provisioned clusters only, it is refused.
//!   An unknown cluster and a wrong proof get the same `Error{Unauthorized}`;
//!   a session that is not a member gets `Error{NotRegistered}` to everything
//!   else. Members only ever learn about members of their own cluster.
//! - A VIP is bound to the first key that registers it, until that key leaves
//!   or expires (`Error{VipInUse}` for anyone else). A dual-stack member
//!   registers a second VIP of the other family (`vip2`), bound the same way
//!   and covered by the proof.
//! - Membership changes (join, leave, expiry, a member's new NAT mapping) are
//!   pushed at once to every member as `PeerList` deltas (`version`, `base`);
//!   a member that sees a gap asks for the full list, and the Nucleus resends
//!   the full list to members whose `ListAck` lags for a second.
//! - Members that stop heartbeating expire after `member_timeout`.
//! - Edges without a clock take the Nucleus's wall time (for TAI64N).
//!
//! Peer-list entries carry each member's key, VIP (and second VIP), reflexive
//! endpoint (as the Nucleus sees it) and announced local endpoints. The client
//! adds each member as a node peer with its VIPs as /32 and /128 allowed IPs and the pairwise
//! preshared key `HMAC(psk_root, "omni pair psk v1" ‖ min(a, b) ‖ max(a, b))`,
//! so traffic between members is gated by the secret as well.
//!
//! # NAT traversal and relay
//!
//! A new peer's first handshake is copied to each of its candidate endpoints
//! (both members get the news at once, so both probe at once: hole
//! punching). If no handshake has completed `relay_after` (1 s by default,
//! a [`ClientConfig`] field) after the member was added, the client asks for
//! `RelayRequest{peer}` right away; on `RelayReady` it points the peer's
//! endpoint at the Nucleus and handshakes through it at once, so traffic
//! flows within about a second even when no direct path will ever form. Its
//! WireGuard datagrams (still end-to-end encrypted with the pairwise
//! session) travel as `RelayData` inside the two Nucleus sessions. Punching
//! goes on meanwhile: every round (after `punch_interval`, doubling up to
//! `punch_interval_max`) sends our keepalive (or handshake) to each direct
//! candidate and a `PunchRequest{peer}`, on which the Nucleus sends
//! `PunchNotify` with each side's entry to both, so both probe each other
//! at the same moment. The first authenticated packet that arrives on a
//! direct path moves the peer there (the node roams to it), and the client
//! reports it as direct. A member we reach directly that moves (the Nucleus
//! announces a new address for it) is followed at once.
//!
//! # Pieces
//!
//! - [`wire`]: the messages (`no_std`, no allocation, every field bounded).
//! - [`cluster`]: key derivation, proofs, pairwise keys.
//! - [`client`]: [`NucleusClient`], the edge's state machine (`no_std`; fixed or
//!   heap member tables).
//! - `server` (`alloc`): [`NucleusServer`], the Nucleus as a sans-IO state
//!   machine the daemon drives. Its node uses `NucleusStorage`: host tables
//!   with a 128-counter replay window per session (control sessions) and a
//!   peer table with amortized O(1) inserts, for 100,000s of edges.

pub mod client;
pub mod cluster;
#[cfg(all(feature = "alloc", target_has_atomic = "ptr"))]
pub mod server;
pub mod wire;

pub use client::{ClientConfig, ClientEvent, NucleusClient};
pub use cluster::{AuthKey, ClusterSecret};
#[cfg(all(feature = "alloc", target_has_atomic = "ptr"))]
pub use server::{NucleusServer, ServerConfig};
