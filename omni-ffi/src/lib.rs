//! # omni-ffi
//!
//! omni-core for phones and foreign languages. The only crate of the
//! workspace with `unsafe`, confined to the C API ([`capi`]), JNI ([`jni_api`])
//! and the system clock.
//!
//! - **uniffi** (Kotlin, Swift, Python): [`Tunnel`], [`TunnelConfig`],
//!   [`parse_wg_quick`], key helpers, [`HostClock`] and [`LogSink`] foreign traits;
//!   cluster membership through a Nucleus ([`Tunnel::join_cluster`], [`ClusterConfig`]).
//!   Errors are [`TunnelError`] in every language; uniffi turns a Rust panic
//!   into an exception of its own.
//! - **C** (`bindings/c/omni.h`, cbindgen): opaque handles, result codes,
//!   caller buffers ("too small, need N"), `catch_unwind` on every entry point.
//! - **JNI** (`net.omninervous.ffi.OmniNative`): the packet path over direct
//!   `ByteBuffer`s, zero-copy, for Android hosts.
//!
//! Every front end drives the same [`Tunnel`]: a `Mutex<Node<…>>` with a
//! ChaCha20 RNG seeded from the OS and a clock that counts time asleep.

uniffi::setup_scaffolding!();

#[cfg(feature = "bench-anchor")]
pub mod bench_anchor;
pub mod capi;
mod clock;
mod cluster;
mod config;
mod error;
pub mod jni_api;
mod logging;
mod tunnel;

pub use clock::{system_now_nanos, HostClock};
pub use cluster::{ClusterConfig, ClusterMember, ClusterState, ClusterStatus, MemberPath};
pub use config::{InterfaceSettings, IpNetwork, PeerSpec, TunnelConfig};
pub use error::{OmniResult, TunnelError};
pub use logging::{set_log_sink, LogLevel, LogSink};
pub use tunnel::{Datagram, DatagramOutcome, PeerStatus, Tunnel, TunnelEvent, TunnelStats};

use omni_core::{PublicKey, StaticSecret};

/// Parses wg-quick text (`[Interface]`, `[Peer]` sections) into a config.
#[uniffi::export]
pub fn parse_wg_quick(text: String) -> Result<TunnelConfig, TunnelError> {
    config::parse_wg_quick(&text)
}

/// Writes a config as wg-quick text (it contains the private key).
#[uniffi::export]
pub fn to_wg_quick(config: TunnelConfig) -> String {
    config::to_wg_quick(&config)
}

/// A fresh private key (base64) from the OS's random generator.
#[uniffi::export]
pub fn generate_private_key() -> String {
    StaticSecret::random(&mut rand_core::OsRng).to_base64().as_str().to_owned()
}

/// The public key (base64) of a private key (base64).
#[uniffi::export]
pub fn public_key_from_private(private_key: String) -> Result<String, TunnelError> {
    let secret = config::parse_private_key(&private_key)?;
    Ok(secret.public_key::<tunnel::Crypto>().to_base64().as_str().to_owned())
}

/// 32 key bytes as base64 (44 characters).
#[uniffi::export]
pub fn key_to_base64(key: Vec<u8>) -> Result<String, TunnelError> {
    let bytes: [u8; 32] = key
        .try_into()
        .map_err(|k: Vec<u8>| TunnelError::InvalidKey { detail: format!("{} bytes, expected 32", k.len()) })?;
    Ok(PublicKey(bytes).to_base64().as_str().to_owned())
}

/// A base64 key back to its 32 bytes.
#[uniffi::export]
pub fn key_from_base64(text: String) -> Result<Vec<u8>, TunnelError> {
    Ok(config::parse_public_key(&text)?.0.to_vec())
}

/// The datagram a host sends (bare, on its UDP socket) to a Nucleus's port to
/// learn the Nucleus's public key when none was configured: trust on first
/// use. Pin the answer (`parse_nucleus_key_reply`) and pass it to
/// `join_cluster` from then on; a configured key is the strong form.
#[uniffi::export]
pub fn nucleus_key_query() -> Vec<u8> {
    cluster::key_query()
}

/// The Nucleus's public key (base64) in its answer to `nucleus_key_query`,
/// or None if the datagram is no such answer.
#[uniffi::export]
pub fn parse_nucleus_key_reply(datagram: Vec<u8>) -> Option<String> {
    cluster::parse_key_reply(&datagram).map(|k| k.to_base64().as_str().to_owned())
}

/// The library's version.
#[uniffi::export]
pub fn omni_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
