//! The one error type of the uniffi surface, and the result codes shared by
//! the C API and JNI.

use omni_core::node::{AddPeerError, RecvError, RouteError, SendError};
use omni_core::nucleus::client::{ControlError, StartError};

use crate::tunnel::RxError;

/// Errors of the tunnel API. In Kotlin this is `TunnelException`, in Swift
/// `TunnelError`, in Python `TunnelError`; each variant is its own subclass
/// or case with typed fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum TunnelError {
    /// The configuration (wg-quick text or a record) is invalid. `line` is
    /// 1-based for wg-quick text and 0 for structured configs.
    #[error("invalid configuration (line {line}): {detail}")]
    InvalidConfig { line: u32, detail: String },
    /// A key is not 44 characters of base64 encoding 32 bytes.
    #[error("invalid key: {detail}")]
    InvalidKey { detail: String },
    /// An IP address, prefix or endpoint could not be parsed.
    #[error("invalid address {value:?}: {detail}")]
    InvalidAddress { value: String, detail: String },
    /// No peer's allowed IPs contain the packet's destination.
    #[error("no peer's allowed IPs contain the destination")]
    NoRoute,
    /// The packet is not IPv4 or IPv6 (or its header is truncated).
    #[error("not an IPv4 or IPv6 packet")]
    NotIp,
    /// The peer has no endpoint yet (set one, or wait for it to contact us).
    #[error("peer {public_key} has no endpoint")]
    NoEndpoint { public_key: String },
    /// A handshake is in progress and the peer's queue is full.
    #[error("queue of peer {public_key} is full")]
    QueueFull { public_key: String },
    /// No peer has this public key.
    #[error("unknown peer {public_key}")]
    UnknownPeer { public_key: String },
    /// A peer with this public key exists already.
    #[error("duplicate peer {public_key}")]
    DuplicatePeer { public_key: String },
    /// The peer's key is the tunnel's own public key.
    #[error("a peer cannot have the tunnel's own public key")]
    OwnKey,
    /// The peer or route table is full.
    #[error("table full")]
    TableFull,
    /// A caller-supplied buffer is too small; `needed` bytes are required.
    #[error("buffer too small: {needed} bytes needed")]
    BufferTooSmall { needed: u64 },
    /// A cluster operation on a tunnel that did not join a cluster.
    #[error("the tunnel is not in a cluster (create it with join_cluster)")]
    NotInCluster,
    /// A bug in omni-ffi (never expected; reported instead of crashing).
    #[error("internal error: {detail}")]
    Internal { detail: String },
}

impl TunnelError {
    pub(crate) fn config(line: usize, detail: impl Into<String>) -> Self {
        TunnelError::InvalidConfig { line: u32::try_from(line).unwrap_or(u32::MAX), detail: detail.into() }
    }
    pub(crate) fn address(value: &str, detail: impl Into<String>) -> Self {
        TunnelError::InvalidAddress { value: value.to_owned(), detail: detail.into() }
    }
}

/// Result codes of the C API (`OmniResult` in `omni.h`) and the negative
/// results of the JNI packet calls. Values are stable.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OmniResult {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = -1,
    /// An argument is invalid (bad UTF-8, bad endpoint family, …).
    InvalidArgument = -2,
    /// The configuration text is invalid (see the error message buffer).
    InvalidConfig = -3,
    /// A caller buffer is too small; the size needed was reported.
    BufferTooSmall = -4,
    /// No peer's allowed IPs contain the packet's destination.
    NoRoute = -5,
    /// Not an IPv4/IPv6 packet.
    NotIp = -6,
    /// The peer has no endpoint.
    NoEndpoint = -7,
    /// The peer's queue is full while a handshake is in progress.
    QueueFull = -8,
    /// No such peer.
    UnknownPeer = -9,
    /// A received datagram was dropped (malformed, replayed, not authentic, …):
    /// the sender's fault, count it and go on.
    Dropped = -10,
    /// An invalid key.
    InvalidKey = -11,
    /// omni-ffi panicked; the call had no effect on the caller's memory.
    Panic = -99,
}

impl From<&TunnelError> for OmniResult {
    fn from(e: &TunnelError) -> Self {
        match e {
            TunnelError::InvalidConfig { .. } | TunnelError::DuplicatePeer { .. } | TunnelError::OwnKey => {
                OmniResult::InvalidConfig
            }
            TunnelError::InvalidKey { .. } => OmniResult::InvalidKey,
            TunnelError::InvalidAddress { .. } | TunnelError::NotInCluster => OmniResult::InvalidArgument,
            TunnelError::NoRoute => OmniResult::NoRoute,
            TunnelError::NotIp => OmniResult::NotIp,
            TunnelError::NoEndpoint { .. } => OmniResult::NoEndpoint,
            TunnelError::QueueFull { .. } | TunnelError::TableFull => OmniResult::QueueFull,
            TunnelError::UnknownPeer { .. } => OmniResult::UnknownPeer,
            TunnelError::BufferTooSmall { .. } => OmniResult::BufferTooSmall,
            TunnelError::Internal { .. } => OmniResult::Panic,
        }
    }
}

/// A send-path error as a result code and, for a too-small buffer, the size needed.
pub(crate) fn send_code(e: SendError) -> (OmniResult, usize) {
    match e {
        SendError::BufferTooSmall { needed } => (OmniResult::BufferTooSmall, needed),
        SendError::NotIp => (OmniResult::NotIp, 0),
        SendError::NoRoute => (OmniResult::NoRoute, 0),
        SendError::NoEndpoint { .. } => (OmniResult::NoEndpoint, 0),
        SendError::QueueFull { .. } => (OmniResult::QueueFull, 0),
        SendError::UnknownPeer => (OmniResult::UnknownPeer, 0),
        _ => (OmniResult::InvalidArgument, 0),
    }
}

/// A receive-path error as a result code and, for a too-small buffer, the size needed.
pub(crate) fn recv_code(e: RxError) -> (OmniResult, usize) {
    match e {
        RxError::Recv(RecvError::BufferTooSmall { needed }) => (OmniResult::BufferTooSmall, needed),
        _ => (OmniResult::Dropped, 0),
    }
}

/// Why a datagram was dropped, as a short stable word (logs, stats, the uniffi outcome).
pub(crate) fn recv_reason(e: RxError) -> &'static str {
    let e = match e {
        RxError::Recv(e) => e,
        RxError::Signaling(ControlError::NotNucleus) => return "signaling-not-nucleus",
        RxError::Signaling(ControlError::Malformed(_)) => return "signaling-malformed",
        RxError::Signaling(ControlError::UnknownRelayPeer) => return "relay-unknown-peer",
        RxError::Signaling(_) => return "signaling-unexpected",
    };
    match e {
        RecvError::BufferTooSmall { .. } => "buffer-too-small",
        RecvError::Malformed(_) => "malformed",
        RecvError::BadMac1 => "bad-mac1",
        RecvError::RateLimited => "rate-limited",
        RecvError::UnknownPeer => "unknown-peer",
        RecvError::StaleTimestamp => "stale-timestamp",
        RecvError::Handshake(_) => "handshake-failed",
        RecvError::UnknownIndex => "unknown-index",
        RecvError::Replay => "replay",
        RecvError::Expired => "expired",
        RecvError::Decrypt => "decrypt-failed",
        RecvError::BadCookie => "bad-cookie",
        RecvError::NotIp => "not-ip",
        RecvError::DisallowedSource { .. } => "disallowed-source",
        RecvError::NoPrivateKey => "no-private-key",
        RecvError::ControlPayload { .. } => "control-payload",
        _ => "rejected",
    }
}

pub(crate) fn add_peer_error(e: AddPeerError, key: &str) -> TunnelError {
    match e {
        AddPeerError::Duplicate(_) => TunnelError::DuplicatePeer { public_key: key.to_owned() },
        AddPeerError::OwnKey => TunnelError::OwnKey,
        _ => TunnelError::TableFull,
    }
}

pub(crate) fn route_error(e: RouteError, key: &str) -> TunnelError {
    match e {
        RouteError::UnknownPeer => TunnelError::UnknownPeer { public_key: key.to_owned() },
        _ => TunnelError::TableFull,
    }
}

/// Why the Nucleus client could not start.
pub(crate) fn start_error(e: StartError) -> TunnelError {
    match e {
        StartError::BadNucleusKey => {
            TunnelError::InvalidKey { detail: "the Nucleus key is a low-order point or our own key".to_owned() }
        }
        StartError::AddPeer(e) => add_peer_error(e, "the Nucleus"),
        other => TunnelError::Internal { detail: format!("cannot start the Nucleus client: {other:?}") },
    }
}
