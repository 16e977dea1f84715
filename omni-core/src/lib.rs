//! # omni-core
//!
//! A sans-IO, `no_std` WireGuard (`Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`) state
//! machine. The host owns sockets, the TUN device and the clock; this crate owns
//! every protocol decision. See [`Node`] for the calling rules.
//!
//! Features:
//! - `alloc`: growable peer and allowed-IP tables (a trie that scales to hundreds
//!   of thousands of prefixes), a per-peer queue for packets sent before a session exists.
//! - `std` (default, implies `alloc`): `std::error::Error` impls.
//! - `ring`: a std-host crypto provider using ring's assembly ChaCha20-Poly1305.
//! - `defmt` / `log`: diagnostics through one of those frameworks (not both).
//!
//! Without `alloc` every table has a compile-time capacity ([`storage::Fixed`]).
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]
#![warn(missing_debug_implementations)]

#[cfg(all(feature = "defmt", feature = "log"))]
compile_error!("omni-core: enable at most one of the `defmt` and `log` features");

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

#[macro_use]
mod macros;

pub mod allowed_ips;
pub mod constants;
pub mod cookie;
pub mod crypto;
pub mod keys;
pub mod node;
pub mod noise;
pub mod nucleus;
pub mod peer;
pub mod replay;
pub mod session;
pub mod storage;
pub mod time;
pub mod timers;
pub mod wire;

pub use allowed_ips::AllowedIp;
pub use keys::{PresharedKey, PublicKey, StaticSecret};
pub use node::{Event, Incoming, Node, NodeConfig, PeerConfig, PeerId, Transmit};
pub use time::{Instant, WallTime};
