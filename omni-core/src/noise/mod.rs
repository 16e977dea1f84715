//! Noise_IKpsk2 as WireGuard instantiates it: the symmetric primitives
//! ([`kdf`]), TAI64N timestamps ([`tai64n`]) and the two-message handshake
//! ([`handshake`]).

pub mod handshake;
pub mod kdf;
pub mod tai64n;
