//! The signaling messages, as carried in the payload of WireGuard transport
//! messages between an edge and the Nucleus.
//!
//! Every message is `version (1) | type (1) | body length (u16 LE) | body`,
//! followed only by WireGuard's zero padding (fewer than 16 bytes). Integers
//! are little-endian; addresses are a family byte (4 or 6; 0 = none where a
//! field is optional) then the octets, endpoints add a u16 port. Every count
//! and length is bounded by a constant below and checked against the bytes
//! actually present; [`parse`] checks everything once and never panics.
//!
//! Whole messages stay within [`MAX_MESSAGE_LEN`] bytes (so a signaling
//! datagram fits in 1280 bytes with WireGuard's 32-byte overhead and
//! padding), except [`RelayData`], which carries a whole WireGuard datagram
//! ([`MAX_RELAY_DATAGRAM`]).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::keys::PublicKey;
use crate::time::WallTime;

/// Protocol version in the first byte of every message.
pub const VERSION: u8 = 1;
/// `version | type | body length`.
pub const HEADER_LEN: usize = 4;
/// Largest message (header + body) of every type but [`RelayData`]:
/// 1200 + 15 bytes of padding + 32 bytes of WireGuard overhead ≤ 1280.
pub const MAX_MESSAGE_LEN: usize = 1200;
/// Largest WireGuard datagram a [`RelayData`] carries.
pub const MAX_RELAY_DATAGRAM: usize = 1600;
/// Largest [`RelayData`] message.
pub const MAX_RELAY_MESSAGE_LEN: usize = HEADER_LEN + KEY_LEN + MAX_RELAY_DATAGRAM;
/// Local (LAN) endpoints a member may announce.
pub const MAX_LOCAL_ENDPOINTS: usize = 4;
/// WireGuard pads payloads to 16 bytes; more trailing bytes are malformed.
pub const MAX_PADDING: usize = 15;
pub const CHALLENGE_LEN: usize = 16;
pub const KEY_LEN: usize = 32;
pub const PROOF_LEN: usize = 32;
/// A [`PeerEntry`] with both VIPs (one IPv6, one IPv4), IPv6 endpoints
/// and every local endpoint.
pub const MAX_ENTRY_LEN: usize = KEY_LEN + 17 + 5 + 19 + 1 + MAX_LOCAL_ENDPOINTS * 19;
/// `kind | version | base_or_total | add count | remove count`.
pub const PEER_LIST_HEADER_LEN: usize = 1 + 4 + 4 + 2 + 2;

/// A single-use value the Nucleus hands out in every reply; the next
/// `Register` proves cluster membership over it.
pub type Challenge = [u8; CHALLENGE_LEN];

/// Message type codes. Edge → Nucleus below 0x80, Nucleus → edge from 0x80;
/// `RELAY_DATA` goes both ways.
pub mod msg_type {
    pub const HELLO: u8 = 0x01;
    pub const REGISTER: u8 = 0x02;
    pub const HEARTBEAT: u8 = 0x03;
    pub const LEAVE: u8 = 0x04;
    pub const PEER_LIST_REQUEST: u8 = 0x05;
    pub const PUNCH_REQUEST: u8 = 0x06;
    pub const RELAY_REQUEST: u8 = 0x07;
    pub const RELAY_DATA: u8 = 0x08;
    pub const LIST_ACK: u8 = 0x09;
    pub const CHALLENGE: u8 = 0x81;
    pub const REGISTER_OK: u8 = 0x82;
    pub const ERROR: u8 = 0x83;
    pub const HEARTBEAT_ACK: u8 = 0x84;
    pub const PEER_LIST: u8 = 0x85;
    pub const PUNCH_NOTIFY: u8 = 0x86;
    pub const RELAY_READY: u8 = 0x87;
}

/// Why a signaling payload is malformed. Every variant is the sender's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than its header or than a field it announces.
    Truncated,
    /// Unknown protocol version byte.
    BadVersion(u8),
    /// Unknown message type.
    UnknownType(u8),
    /// Longer than the maximum for its type.
    TooLong { max: usize, got: usize },
    /// Bytes after the body that are not WireGuard's zero padding.
    BadPadding,
    /// The body has bytes its fields do not account for.
    TrailingBytes,
    /// An address family byte other than 4 or 6 (or 0 where allowed).
    BadAddressFamily(u8),
    /// More local endpoints than [`MAX_LOCAL_ENDPOINTS`].
    TooManyEndpoints(u8),
    /// A field value outside its range (list kind, nanoseconds, an empty
    /// or oversize relayed datagram, a zero port or unspecified address).
    BadField,
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ParseError::Truncated => f.write_str("truncated signaling message"),
            ParseError::BadVersion(v) => write!(f, "unknown signaling version {v}"),
            ParseError::UnknownType(t) => write!(f, "unknown signaling message type {t:#x}"),
            ParseError::TooLong { max, got } => write!(f, "signaling message of {got} bytes (max {max})"),
            ParseError::BadPadding => f.write_str("non-zero bytes after the signaling message"),
            ParseError::TrailingBytes => f.write_str("signaling body longer than its fields"),
            ParseError::BadAddressFamily(a) => write!(f, "unknown address family {a}"),
            ParseError::TooManyEndpoints(n) => write!(f, "{n} local endpoints (max {MAX_LOCAL_ENDPOINTS})"),
            ParseError::BadField => f.write_str("signaling field out of range"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseError {}

/// The output buffer cannot hold the message; `needed` bytes would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EmitError {
    BufferTooSmall {
        needed: usize,
    },
    /// The message would exceed its maximum length (too many or too large fields).
    TooLong,
    /// A field [`parse`] would refuse (see [`Message::emit`]).
    Invalid,
}

/// Why the Nucleus refused a request. Deliberately coarse: a non-member, a
/// wrong proof and an unknown cluster all get [`ErrorCode::Unauthorized`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ErrorCode {
    /// Not a member, or the membership proof did not verify.
    Unauthorized,
    /// The challenge in the request is not the current one; retry with the
    /// challenge of this reply.
    ChallengeExpired,
    /// Another key holds the requested VIP in this cluster.
    VipInUse,
    /// The request needs a registration first (e.g. after a Nucleus restart).
    NotRegistered,
    /// Too many requests from this source or member.
    RateLimited,
    /// The Nucleus or the cluster is full.
    Capacity,
    /// The Nucleus does not relay for this pair.
    RelayUnavailable,
    /// The named peer is not a member of the sender's cluster.
    UnknownPeer,
    /// A request the Nucleus does not accept (wrong direction, bad VIP).
    BadRequest,
    /// A code this version does not know.
    Other(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 1,
            ErrorCode::ChallengeExpired => 2,
            ErrorCode::VipInUse => 3,
            ErrorCode::NotRegistered => 4,
            ErrorCode::RateLimited => 5,
            ErrorCode::Capacity => 6,
            ErrorCode::RelayUnavailable => 7,
            ErrorCode::UnknownPeer => 8,
            ErrorCode::BadRequest => 9,
            ErrorCode::Other(c) => c,
        }
    }
    pub fn from_u16(c: u16) -> Self {
        match c {
            1 => ErrorCode::Unauthorized,
            2 => ErrorCode::ChallengeExpired,
            3 => ErrorCode::VipInUse,
            4 => ErrorCode::NotRegistered,
            5 => ErrorCode::RateLimited,
            6 => ErrorCode::Capacity,
            7 => ErrorCode::RelayUnavailable,
            8 => ErrorCode::UnknownPeer,
            9 => ErrorCode::BadRequest,
            c => ErrorCode::Other(c),
        }
    }
}

/// A member as the Nucleus describes it to the other members of its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEntry {
    pub key: PublicKey,
    /// The member's virtual IP (its /32 or /128 allowed IP at the peers).
    pub vip: IpAddr,
    /// A second VIP of the other address family (a dual-stack member).
    pub vip2: Option<IpAddr>,
    /// The member's address as the Nucleus sees it on the shared socket
    /// (its NAT mapping), if known.
    pub reflexive: Option<SocketAddr>,
    /// Addresses the member announced for peers on its own network.
    pub locals: heapless::Vec<SocketAddr, MAX_LOCAL_ENDPOINTS>,
}

impl PeerEntry {
    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        KEY_LEN
            .saturating_add(addr_len(Some(self.vip)))
            .saturating_add(addr_len(self.vip2))
            .saturating_add(endpoint_len(self.reflexive))
            .saturating_add(1)
            .saturating_add(self.locals.iter().map(|e| endpoint_len(Some(*e))).sum::<usize>())
    }
    /// Every candidate endpoint: the reflexive one first, then the local ones
    /// (duplicates removed).
    pub fn candidates(&self) -> heapless::Vec<SocketAddr, { MAX_LOCAL_ENDPOINTS + 1 }> {
        let mut v = heapless::Vec::new();
        for e in self.reflexive.iter().chain(self.locals.iter()) {
            if !v.contains(e) {
                let _ = v.push(*e);
            }
        }
        v
    }
}

/// `Register`: join (or refresh membership in) the cluster whose public key
/// is `cluster_key`, proving knowledge of its private key over `challenge`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    pub cluster_key: PublicKey,
    pub challenge: Challenge,
    pub proof: [u8; PROOF_LEN],
    pub vip: IpAddr,
    /// A second VIP of the other family (dual stack), bound to the key like `vip`.
    pub vip2: Option<IpAddr>,
    pub locals: heapless::Vec<SocketAddr, MAX_LOCAL_ENDPOINTS>,
}

/// `Challenge`: the answer to `Hello`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChallengeMsg {
    pub challenge: Challenge,
    pub time: WallTime,
}

/// `RegisterOk`: the sender is a member with this VIP (and `vip2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterOk {
    pub vip: IpAddr,
    pub vip2: Option<IpAddr>,
    pub challenge: Challenge,
    /// The Nucleus's wall clock when it wrote the reply.
    pub time: WallTime,
    /// Send a heartbeat at least this often.
    pub heartbeat_secs: u16,
    /// The member's address as the Nucleus sees it.
    pub reflexive: Option<SocketAddr>,
}

/// `Error`: a refused request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub challenge: Challenge,
}

/// `Heartbeat`: still here; the newest peer-list version applied (0: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub list_version: u32,
}

/// `HeartbeatAck`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatAck {
    pub challenge: Challenge,
    pub time: WallTime,
    /// The cluster's current peer-list version: a member that has another
    /// one asks for the full list.
    pub list_version: u32,
    pub reflexive: Option<SocketAddr>,
}

/// `ListAck`: the member applied the peer list up to `version` (the
/// Nucleus resends the list to members whose acknowledgement lags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListAck {
    pub version: u32,
}

/// Whether a [`PeerList`] page is part of a full list or a delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ListKind {
    /// One page of the full list of `version`; `base_or_total` is the number
    /// of entries in the whole list (the pages carry only adds).
    Full,
    /// The changes from version `base_or_total` to `version`.
    Delta,
}

/// `PeerList`: a page of the full member list, or a delta. A zero-copy view
/// whose entries were all checked by [`parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerList<'a> {
    pub kind: ListKind,
    pub version: u32,
    pub base_or_total: u32,
    add_count: u16,
    remove_count: u16,
    adds: &'a [u8],
    removes: &'a [u8],
}

impl<'a> PeerList<'a> {
    pub fn add_count(&self) -> usize {
        usize::from(self.add_count)
    }
    pub fn remove_count(&self) -> usize {
        usize::from(self.remove_count)
    }
    /// Members added or updated.
    pub fn adds(&self) -> impl Iterator<Item = PeerEntry> + 'a {
        let mut r = Reader::new(self.adds);
        (0..self.add_count).map_while(move |_| read_entry(&mut r).ok())
    }
    /// Keys of members that left.
    pub fn removes(&self) -> impl Iterator<Item = PublicKey> + 'a {
        self.removes.chunks_exact(KEY_LEN).filter_map(|c| c.try_into().ok().map(PublicKey))
    }
    fn body_len(&self) -> usize {
        PEER_LIST_HEADER_LEN.saturating_add(self.adds.len()).saturating_add(self.removes.len())
    }
}

/// A key naming a peer: `PunchRequest`, `RelayRequest`, `RelayReady`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerRef {
    pub key: PublicKey,
}

/// `RelayData`: a WireGuard datagram relayed through the Nucleus. Edge →
/// Nucleus: `peer` is the destination; Nucleus → edge: the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayData<'a> {
    pub peer: PublicKey,
    pub datagram: &'a [u8],
}

/// A parsed signaling message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Edge → Nucleus: "give me a challenge" (the first message of a session).
    Hello,
    Register(Register),
    Heartbeat(Heartbeat),
    /// Edge → Nucleus: leaving the cluster now.
    Leave,
    /// Edge → Nucleus: send me the full peer list.
    PeerListRequest,
    /// Edge → Nucleus: tell `key` to probe my candidates now (and tell me its).
    PunchRequest(PeerRef),
    /// Edge → Nucleus: relay my datagrams to `key`.
    RelayRequest(PeerRef),
    RelayData(RelayData<'a>),
    ListAck(ListAck),
    Challenge(ChallengeMsg),
    RegisterOk(RegisterOk),
    Error(ErrorReply),
    HeartbeatAck(HeartbeatAck),
    PeerList(PeerList<'a>),
    /// Nucleus → edge: probe this member's candidates now.
    PunchNotify(PeerEntry),
    /// Nucleus → edge: `RelayData` to `key` will be forwarded.
    RelayReady(PeerRef),
}

impl Message<'_> {
    /// The type code.
    pub fn msg_type(&self) -> u8 {
        use msg_type::*;
        match self {
            Message::Hello => HELLO,
            Message::Register(_) => REGISTER,
            Message::Heartbeat(_) => HEARTBEAT,
            Message::Leave => LEAVE,
            Message::PeerListRequest => PEER_LIST_REQUEST,
            Message::PunchRequest(_) => PUNCH_REQUEST,
            Message::RelayRequest(_) => RELAY_REQUEST,
            Message::RelayData(_) => RELAY_DATA,
            Message::ListAck(_) => LIST_ACK,
            Message::Challenge(_) => CHALLENGE,
            Message::RegisterOk(_) => REGISTER_OK,
            Message::Error(_) => ERROR,
            Message::HeartbeatAck(_) => HEARTBEAT_ACK,
            Message::PeerList(_) => PEER_LIST,
            Message::PunchNotify(_) => PUNCH_NOTIFY,
            Message::RelayReady(_) => RELAY_READY,
        }
    }

    /// Whether an edge sends this message (the Nucleus sends the others;
    /// `RelayData` goes both ways).
    pub fn is_from_edge(&self) -> bool {
        self.msg_type() < 0x80
    }

    fn body_len(&self) -> usize {
        const TIME: usize = 12;
        match self {
            Message::Hello | Message::Leave | Message::PeerListRequest => 0,
            Message::Register(r) => KEY_LEN
                .saturating_add(CHALLENGE_LEN)
                .saturating_add(PROOF_LEN)
                .saturating_add(addr_len(Some(r.vip)))
                .saturating_add(addr_len(r.vip2))
                .saturating_add(1)
                .saturating_add(r.locals.iter().map(|e| endpoint_len(Some(*e))).sum::<usize>()),
            Message::Heartbeat(_) | Message::ListAck(_) => 4,
            Message::PunchRequest(_) | Message::RelayRequest(_) | Message::RelayReady(_) => KEY_LEN,
            Message::RelayData(d) => KEY_LEN.saturating_add(d.datagram.len()),
            Message::Challenge(_) => CHALLENGE_LEN + TIME,
            Message::RegisterOk(m) => addr_len(Some(m.vip))
                .saturating_add(addr_len(m.vip2))
                .saturating_add(CHALLENGE_LEN + TIME + 2)
                .saturating_add(endpoint_len(m.reflexive)),
            Message::Error(_) => 2 + CHALLENGE_LEN,
            Message::HeartbeatAck(m) => (CHALLENGE_LEN + TIME + 4).saturating_add(endpoint_len(m.reflexive)),
            Message::PeerList(l) => l.body_len(),
            Message::PunchNotify(e) => e.encoded_len(),
        }
    }

    /// Encoded length (header and body, no padding).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.body_len())
    }

    /// Whether [`emit`](Self::emit) writes something [`parse`] accepts:
    /// a specified VIP, endpoints with a port and an address, nanoseconds
    /// below 10^9, a relayed datagram of 1..=[`MAX_RELAY_DATAGRAM`] bytes.
    fn is_valid(&self) -> bool {
        fn opt(e: &Option<SocketAddr>) -> bool {
            e.as_ref().is_none_or(valid_endpoint)
        }
        fn time(t: &WallTime) -> bool {
            t.nanos < 1_000_000_000
        }
        let ep = valid_endpoint;
        let entry = valid_entry;
        match self {
            Message::Register(r) => valid_vips(r.vip, r.vip2) && r.locals.iter().all(ep),
            Message::RelayData(d) => !d.datagram.is_empty() && d.datagram.len() <= MAX_RELAY_DATAGRAM,
            Message::Challenge(c) => time(&c.time),
            Message::RegisterOk(m) => valid_vips(m.vip, m.vip2) && time(&m.time) && opt(&m.reflexive),
            Message::HeartbeatAck(m) => time(&m.time) && opt(&m.reflexive),
            Message::PunchNotify(e) => entry(e),
            _ => true,
        }
    }

    /// Writes the message into `out`; returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, EmitError> {
        let len = self.encoded_len();
        if !self.is_valid() {
            return Err(EmitError::Invalid);
        }
        if len > max_len(self.msg_type()) {
            return Err(EmitError::TooLong);
        }
        let buf = out.get_mut(..len).ok_or(EmitError::BufferTooSmall { needed: len })?;
        let body = u16::try_from(self.body_len()).map_err(|_| EmitError::TooLong)?;
        let mut w = Out::new(buf);
        w.u8(VERSION);
        w.u8(self.msg_type());
        w.u16(body);
        match self {
            Message::Hello | Message::Leave | Message::PeerListRequest => {}
            Message::Register(r) => {
                w.bytes(&r.cluster_key.0);
                w.bytes(&r.challenge);
                w.bytes(&r.proof);
                w.addr(Some(r.vip));
                w.addr(r.vip2);
                w.locals(&r.locals);
            }
            Message::Heartbeat(h) => w.u32(h.list_version),
            Message::ListAck(a) => w.u32(a.version),
            Message::PunchRequest(p) | Message::RelayRequest(p) | Message::RelayReady(p) => w.bytes(&p.key.0),
            Message::RelayData(d) => {
                w.bytes(&d.peer.0);
                w.bytes(d.datagram);
            }
            Message::Challenge(c) => {
                w.bytes(&c.challenge);
                w.time(c.time);
            }
            Message::RegisterOk(m) => {
                w.addr(Some(m.vip));
                w.addr(m.vip2);
                w.bytes(&m.challenge);
                w.time(m.time);
                w.u16(m.heartbeat_secs);
                w.endpoint(m.reflexive);
            }
            Message::Error(e) => {
                w.u16(e.code.to_u16());
                w.bytes(&e.challenge);
            }
            Message::HeartbeatAck(m) => {
                w.bytes(&m.challenge);
                w.time(m.time);
                w.u32(m.list_version);
                w.endpoint(m.reflexive);
            }
            Message::PeerList(l) => {
                w.u8(match l.kind {
                    ListKind::Full => 0,
                    ListKind::Delta => 1,
                });
                w.u32(l.version);
                w.u32(l.base_or_total);
                w.u16(l.add_count);
                w.u16(l.remove_count);
                w.bytes(l.adds);
                w.bytes(l.removes);
            }
            Message::PunchNotify(e) => w.entry(e),
        }
        Ok(len)
    }
}

// ----- the key query ---------------------------------------------------------

/// Opens both the key query and its answer: an edge that was given no
/// Nucleus key asks the Nucleus's UDP port for it once, outside WireGuard,
/// and pins the answer (trust on first use). Read as a little-endian u32,
/// its first four bytes are no WireGuard message type, so the Nucleus tells
/// it apart from WireGuard before anything else.
pub const KEY_MAGIC: &[u8; 16] = b"omni-nucleus-key";
/// A key query: the magic, `?`, zero padding. Longer than the answer, so the
/// port is no amplifier.
pub const KEY_QUERY_LEN: usize = 64;
/// A key answer: the magic and the 32-byte key.
pub const KEY_REPLY_LEN: usize = 48;

/// The query an edge sends (as a bare UDP datagram) to learn the Nucleus's key.
pub fn key_query() -> [u8; KEY_QUERY_LEN] {
    let mut q = [0u8; KEY_QUERY_LEN];
    if let Some(d) = q.get_mut(..KEY_MAGIC.len()) {
        d.copy_from_slice(KEY_MAGIC);
    }
    if let Some(d) = q.get_mut(KEY_MAGIC.len()) {
        *d = b'?';
    }
    q
}

/// Whether a datagram is exactly a key query.
pub fn is_key_query(d: &[u8]) -> bool {
    d.len() == KEY_QUERY_LEN && d == key_query()
}

/// The Nucleus's answer to a key query.
pub fn key_reply(key: &PublicKey) -> [u8; KEY_REPLY_LEN] {
    let mut r = [0u8; KEY_REPLY_LEN];
    let (magic, k) = r.split_at_mut(KEY_MAGIC.len());
    magic.copy_from_slice(KEY_MAGIC);
    k.copy_from_slice(&key.0);
    r
}

/// The key in a key answer (`None`: not an answer). An answer proves
/// nothing: the edge pins the first one and warns when it changes.
pub fn parse_key_reply(d: &[u8]) -> Option<PublicKey> {
    if d.len() != KEY_REPLY_LEN {
        return None;
    }
    let (magic, key) = d.split_at(KEY_MAGIC.len());
    if magic != KEY_MAGIC {
        return None;
    }
    Some(PublicKey(key.try_into().ok()?))
}

/// Maximum encoded length (header + body) of a message type.
pub fn max_len(t: u8) -> usize {
    if t == msg_type::RELAY_DATA {
        MAX_RELAY_MESSAGE_LEN
    } else {
        MAX_MESSAGE_LEN
    }
}

/// The type byte of a signaling payload, if it has a header of our version.
pub fn peek_type(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [VERSION, t, ..] => Some(*t),
        _ => None,
    }
}

/// Parses one signaling payload (a decrypted transport payload, padding
/// included). Never panics.
pub fn parse(bytes: &[u8]) -> Result<Message<'_>, ParseError> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != VERSION {
        return Err(ParseError::BadVersion(version));
    }
    let t = r.u8()?;
    let body_len = usize::from(r.u16()?);
    let total = HEADER_LEN.saturating_add(body_len);
    let max = max_len(t);
    if total > max {
        return Err(ParseError::TooLong { max, got: total });
    }
    let body = bytes.get(HEADER_LEN..total).ok_or(ParseError::Truncated)?;
    let padding = bytes.get(total..).unwrap_or(&[]);
    if padding.len() > MAX_PADDING || padding.iter().any(|&b| b != 0) {
        return Err(ParseError::BadPadding);
    }
    let mut r = Reader::new(body);
    use msg_type::*;
    let msg = match t {
        HELLO => Message::Hello,
        LEAVE => Message::Leave,
        PEER_LIST_REQUEST => Message::PeerListRequest,
        REGISTER => Message::Register(Register {
            cluster_key: PublicKey(r.array()?),
            challenge: r.array()?,
            proof: r.array()?,
            vip: r.vip()?,
            vip2: r.second_vip()?,
            locals: r.locals()?,
        }),
        HEARTBEAT => Message::Heartbeat(Heartbeat { list_version: r.u32()? }),
        LIST_ACK => Message::ListAck(ListAck { version: r.u32()? }),
        PUNCH_REQUEST => Message::PunchRequest(PeerRef { key: PublicKey(r.array()?) }),
        RELAY_REQUEST => Message::RelayRequest(PeerRef { key: PublicKey(r.array()?) }),
        RELAY_READY => Message::RelayReady(PeerRef { key: PublicKey(r.array()?) }),
        RELAY_DATA => {
            let peer = PublicKey(r.array()?);
            let datagram = r.rest();
            if datagram.is_empty() || datagram.len() > MAX_RELAY_DATAGRAM {
                return Err(ParseError::BadField);
            }
            Message::RelayData(RelayData { peer, datagram })
        }
        CHALLENGE => Message::Challenge(ChallengeMsg { challenge: r.array()?, time: r.time()? }),
        REGISTER_OK => Message::RegisterOk(RegisterOk {
            vip: r.vip()?,
            vip2: r.second_vip()?,
            challenge: r.array()?,
            time: r.time()?,
            heartbeat_secs: r.u16()?,
            reflexive: r.endpoint()?,
        }),
        ERROR => Message::Error(ErrorReply { code: ErrorCode::from_u16(r.u16()?), challenge: r.array()? }),
        HEARTBEAT_ACK => Message::HeartbeatAck(HeartbeatAck {
            challenge: r.array()?,
            time: r.time()?,
            list_version: r.u32()?,
            reflexive: r.endpoint()?,
        }),
        PEER_LIST => Message::PeerList(parse_peer_list(&mut r)?),
        PUNCH_NOTIFY => Message::PunchNotify(read_entry(&mut r)?),
        other => return Err(ParseError::UnknownType(other)),
    };
    if !r.rest().is_empty() {
        return Err(ParseError::TrailingBytes);
    }
    Ok(msg)
}

fn parse_peer_list<'a>(r: &mut Reader<'a>) -> Result<PeerList<'a>, ParseError> {
    let kind = match r.u8()? {
        0 => ListKind::Full,
        1 => ListKind::Delta,
        _ => return Err(ParseError::BadField),
    };
    let version = r.u32()?;
    let base_or_total = r.u32()?;
    let add_count = r.u16()?;
    let remove_count = r.u16()?;
    if kind == ListKind::Full && remove_count != 0 {
        return Err(ParseError::BadField);
    }
    let start = r.b;
    for _ in 0..add_count {
        read_entry(r)?;
    }
    let adds_len = start.len().saturating_sub(r.b.len());
    let adds = start.get(..adds_len).ok_or(ParseError::Truncated)?;
    let removes_len = usize::from(remove_count).checked_mul(KEY_LEN).ok_or(ParseError::Truncated)?;
    let removes = r.take(removes_len)?;
    Ok(PeerList { kind, version, base_or_total, add_count, remove_count, adds, removes })
}

fn read_entry(r: &mut Reader<'_>) -> Result<PeerEntry, ParseError> {
    let key = PublicKey(r.array()?);
    let vip = r.vip()?;
    Ok(PeerEntry { key, vip, vip2: r.second_vip()?, reflexive: r.endpoint()?, locals: r.locals()? })
}

/// Builds a [`PeerList`] page in a caller buffer: entries are added until
/// the page is full (at most [`MAX_MESSAGE_LEN`] bytes).
#[derive(Debug)]
pub struct PeerListWriter<'a> {
    buf: &'a mut [u8],
    /// End of the written bytes.
    pos: usize,
    /// Room for removes, which follow all adds: adds are refused once a remove was written.
    adds: u16,
    removes: u16,
    limit: usize,
}

impl<'a> PeerListWriter<'a> {
    /// Starts a page. `buf` must hold at least the header (a smaller buffer
    /// gives [`EmitError::BufferTooSmall`]).
    pub fn new(buf: &'a mut [u8], kind: ListKind, version: u32, base_or_total: u32) -> Result<Self, EmitError> {
        let head = HEADER_LEN + PEER_LIST_HEADER_LEN;
        let limit = buf.len().min(MAX_MESSAGE_LEN);
        let dst = buf.get_mut(..head).ok_or(EmitError::BufferTooSmall { needed: head })?;
        let mut w = Out::new(dst);
        w.u8(VERSION);
        w.u8(msg_type::PEER_LIST);
        w.u16(0);
        w.u8(match kind {
            ListKind::Full => 0,
            ListKind::Delta => 1,
        });
        w.u32(version);
        w.u32(base_or_total);
        w.u16(0);
        w.u16(0);
        Ok(PeerListWriter { buf, pos: head, adds: 0, removes: 0, limit })
    }

    /// Appends an entry; `false` (nothing written) if the page is full
    /// (or the entry has an unspecified VIP or endpoint, which [`parse`] refuses).
    pub fn push_add(&mut self, e: &PeerEntry) -> bool {
        let end = self.pos.saturating_add(e.encoded_len());
        if !valid_entry(e) || self.removes > 0 || end > self.limit || self.adds == u16::MAX {
            return false;
        }
        let Some(dst) = self.buf.get_mut(self.pos..end) else { return false };
        Out::new(dst).entry(e);
        self.pos = end;
        self.adds = self.adds.saturating_add(1);
        true
    }

    /// Appends a removed key (after all adds); `false` if the page is full
    /// or this is a full-list page.
    pub fn push_remove(&mut self, key: &PublicKey) -> bool {
        let end = self.pos.saturating_add(KEY_LEN);
        let full_list = self.buf.get(HEADER_LEN) == Some(&0);
        if full_list || end > self.limit || self.removes == u16::MAX {
            return false;
        }
        let Some(dst) = self.buf.get_mut(self.pos..end) else { return false };
        dst.copy_from_slice(&key.0);
        self.pos = end;
        self.removes = self.removes.saturating_add(1);
        true
    }

    pub fn entries(&self) -> usize {
        usize::from(self.adds).saturating_add(usize::from(self.removes))
    }

    /// Finishes the page; returns its length.
    pub fn finish(self) -> usize {
        let body = u16::try_from(self.pos.saturating_sub(HEADER_LEN)).unwrap_or(0);
        let counts = HEADER_LEN + 1 + 4 + 4;
        if let Some(d) = self.buf.get_mut(2..4) {
            d.copy_from_slice(&body.to_le_bytes());
        }
        if let Some(d) = self.buf.get_mut(counts..counts + 2) {
            d.copy_from_slice(&self.adds.to_le_bytes());
        }
        if let Some(d) = self.buf.get_mut(counts + 2..counts + 4) {
            d.copy_from_slice(&self.removes.to_le_bytes());
        }
        self.pos
    }
}

// ----- encoding helpers -----------------------------------------------------

fn valid_endpoint(e: &SocketAddr) -> bool {
    e.port() != 0 && !e.ip().is_unspecified()
}

/// A specified VIP, and an optional second one: specified, of the other family.
fn valid_vips(vip: IpAddr, vip2: Option<IpAddr>) -> bool {
    !vip.is_unspecified() && vip2.is_none_or(|v| !v.is_unspecified() && v.is_ipv4() != vip.is_ipv4())
}

fn valid_entry(e: &PeerEntry) -> bool {
    valid_vips(e.vip, e.vip2) && e.reflexive.as_ref().is_none_or(valid_endpoint) && e.locals.iter().all(valid_endpoint)
}

fn addr_len(a: Option<IpAddr>) -> usize {
    match a {
        None => 1,
        Some(IpAddr::V4(_)) => 5,
        Some(IpAddr::V6(_)) => 17,
    }
}

fn endpoint_len(e: Option<SocketAddr>) -> usize {
    match e {
        None => 1,
        Some(e) => addr_len(Some(e.ip())).saturating_add(2),
    }
}

/// Bounds-checked reader: every read either succeeds or reports `Truncated`.
struct Reader<'a> {
    b: &'a [u8],
    /// The family of the last VIP read (a second VIP must be of the other one).
    last_vip_v4: bool,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, last_vip_v4: false }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        if n > self.b.len() {
            return Err(ParseError::Truncated);
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }
    fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.b)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ParseError> {
        self.take(N)?.try_into().map_err(|_| ParseError::Truncated)
    }
    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(u8::from_le_bytes(self.array()?))
    }
    fn u16(&mut self) -> Result<u16, ParseError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn time(&mut self) -> Result<WallTime, ParseError> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(ParseError::BadField);
        }
        Ok(WallTime::new(secs, nanos))
    }
    fn addr(&mut self) -> Result<Option<IpAddr>, ParseError> {
        match self.u8()? {
            0 => Ok(None),
            4 => Ok(Some(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)))),
            6 => Ok(Some(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)))),
            f => Err(ParseError::BadAddressFamily(f)),
        }
    }
    /// A VIP: present and not unspecified.
    fn vip(&mut self) -> Result<IpAddr, ParseError> {
        match self.addr()? {
            Some(a) if !a.is_unspecified() => {
                self.last_vip_v4 = a.is_ipv4();
                Ok(a)
            }
            Some(_) => Err(ParseError::BadField),
            None => Err(ParseError::BadAddressFamily(0)),
        }
    }
    /// The optional second VIP after a VIP: absent (family 0), or specified
    /// and of the other family.
    fn second_vip(&mut self) -> Result<Option<IpAddr>, ParseError> {
        let first_v4 = self.last_vip_v4;
        match self.addr()? {
            None => Ok(None),
            Some(a) if a.is_unspecified() || a.is_ipv4() == first_v4 => Err(ParseError::BadField),
            Some(a) => Ok(Some(a)),
        }
    }
    fn endpoint(&mut self) -> Result<Option<SocketAddr>, ParseError> {
        let Some(ip) = self.addr()? else { return Ok(None) };
        let port = self.u16()?;
        if port == 0 || ip.is_unspecified() {
            return Err(ParseError::BadField);
        }
        Ok(Some(match ip {
            IpAddr::V4(a) => SocketAddr::V4(SocketAddrV4::new(a, port)),
            IpAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(a, port, 0, 0)),
        }))
    }
    fn locals(&mut self) -> Result<heapless::Vec<SocketAddr, MAX_LOCAL_ENDPOINTS>, ParseError> {
        let n = self.u8()?;
        if usize::from(n) > MAX_LOCAL_ENDPOINTS {
            return Err(ParseError::TooManyEndpoints(n));
        }
        let mut v = heapless::Vec::new();
        for _ in 0..n {
            let e = self.endpoint()?.ok_or(ParseError::BadAddressFamily(0))?;
            v.push(e).map_err(|_| ParseError::TooManyEndpoints(n))?;
        }
        Ok(v)
    }
}

/// Writer over a buffer already checked to be exactly large enough.
struct Out<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Out<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Out { buf, pos: 0 }
    }
    fn bytes(&mut self, b: &[u8]) {
        let end = self.pos.saturating_add(b.len());
        if let Some(d) = self.buf.get_mut(self.pos..end) {
            d.copy_from_slice(b);
        }
        self.pos = end;
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn time(&mut self, t: WallTime) {
        self.bytes(&t.secs.to_le_bytes());
        self.u32(t.nanos);
    }
    fn addr(&mut self, a: Option<IpAddr>) {
        match a {
            None => self.u8(0),
            Some(IpAddr::V4(a)) => {
                self.u8(4);
                self.bytes(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                self.u8(6);
                self.bytes(&a.octets());
            }
        }
    }
    fn endpoint(&mut self, e: Option<SocketAddr>) {
        match e {
            None => self.u8(0),
            Some(e) => {
                self.addr(Some(e.ip()));
                self.u16(e.port());
            }
        }
    }
    fn locals(&mut self, l: &[SocketAddr]) {
        self.u8(u8::try_from(l.len()).unwrap_or(0));
        for e in l {
            self.endpoint(Some(*e));
        }
    }
    fn entry(&mut self, e: &PeerEntry) {
        self.bytes(&e.key.0);
        self.addr(Some(e.vip));
        self.addr(e.vip2);
        self.endpoint(e.reflexive);
        self.locals(&e.locals);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn ep(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn entry(i: u8, v6: bool) -> PeerEntry {
        let mut locals = heapless::Vec::new();
        for j in 0..(i as usize % (MAX_LOCAL_ENDPOINTS + 1)) {
            locals.push(ep(&std::format!("192.168.{i}.{}:51820", j + 1))).unwrap();
        }
        PeerEntry {
            key: PublicKey([i; 32]),
            vip: if v6 { "fd00::1".parse().unwrap() } else { IpAddr::V4(Ipv4Addr::new(10, 200, 0, i)) },
            // Every other IPv4 member is dual-stack.
            vip2: (!v6 && i % 4 == 1).then(|| std::format!("fd00::{i}").parse().unwrap()),
            reflexive: if i % 3 == 0 { None } else { Some(ep(&std::format!("[2001:db8::{i}]:4000"))) },
            locals,
        }
    }

    fn round_trip(m: &Message<'_>) -> Vec<u8> {
        let mut buf = [0u8; MAX_RELAY_MESSAGE_LEN + 16];
        let n = m.emit(&mut buf).unwrap();
        assert_eq!(n, m.encoded_len());
        assert_eq!(&parse(&buf[..n]).unwrap(), m);
        // With WireGuard padding to 16.
        let padded = n.div_ceil(16) * 16;
        assert_eq!(&parse(&buf[..padded]).unwrap(), m);
        // Short buffers report the size needed.
        assert_eq!(m.emit(&mut buf[..n - 1]), Err(EmitError::BufferTooSmall { needed: n }));
        // Every truncation is refused without panicking.
        for cut in 0..n {
            assert!(parse(&buf[..cut]).is_err(), "{m:?} cut at {cut}");
        }
        buf[..n].to_vec()
    }

    #[test]
    fn every_message_round_trips() {
        let t = WallTime::new(1_700_000_000, 999_999_999);
        let mut locals = heapless::Vec::new();
        locals.push(ep("192.168.1.2:51820")).unwrap();
        locals.push(ep("[fe80::1]:51820")).unwrap();
        let msgs = [
            Message::Hello,
            Message::Leave,
            Message::PeerListRequest,
            Message::Register(Register {
                cluster_key: PublicKey([1; 32]),
                challenge: [2; 16],
                proof: [3; 32],
                vip: "10.200.0.1".parse().unwrap(),
                vip2: None,
                locals: locals.clone(),
            }),
            Message::Register(Register {
                cluster_key: PublicKey([1; 32]),
                challenge: [2; 16],
                proof: [3; 32],
                vip: "10.200.0.1".parse().unwrap(),
                vip2: Some("fd00:200::1".parse().unwrap()),
                locals: locals.clone(),
            }),
            Message::Register(Register {
                cluster_key: PublicKey([1; 32]),
                challenge: [2; 16],
                proof: [3; 32],
                vip: "fd00::7".parse().unwrap(),
                vip2: Some("10.9.8.7".parse().unwrap()),
                locals: heapless::Vec::new(),
            }),
            Message::Heartbeat(Heartbeat { list_version: 7 }),
            Message::ListAck(ListAck { version: 9 }),
            Message::PunchRequest(PeerRef { key: PublicKey([4; 32]) }),
            Message::RelayRequest(PeerRef { key: PublicKey([5; 32]) }),
            Message::RelayReady(PeerRef { key: PublicKey([6; 32]) }),
            Message::RelayData(RelayData { peer: PublicKey([7; 32]), datagram: &[4, 0, 0, 0, 9] }),
            Message::RelayData(RelayData { peer: PublicKey([7; 32]), datagram: &[0xab; MAX_RELAY_DATAGRAM] }),
            Message::Challenge(ChallengeMsg { challenge: [8; 16], time: t }),
            Message::RegisterOk(RegisterOk {
                vip: "10.200.0.1".parse().unwrap(),
                vip2: None,
                challenge: [9; 16],
                time: t,
                heartbeat_secs: 15,
                reflexive: Some(ep("198.51.100.7:40000")),
            }),
            Message::RegisterOk(RegisterOk {
                vip: "10.200.0.1".parse().unwrap(),
                vip2: Some("fd00::1".parse().unwrap()),
                challenge: [9; 16],
                time: t,
                heartbeat_secs: 15,
                reflexive: None,
            }),
            Message::Error(ErrorReply { code: ErrorCode::VipInUse, challenge: [10; 16] }),
            Message::Error(ErrorReply { code: ErrorCode::Other(999), challenge: [10; 16] }),
            Message::HeartbeatAck(HeartbeatAck { challenge: [11; 16], time: t, list_version: 3, reflexive: None }),
            Message::PunchNotify(entry(4, true)),
            Message::PunchNotify(entry(5, false)),
        ];
        for m in &msgs {
            round_trip(m);
        }
        for c in 0..=12u16 {
            assert_eq!(ErrorCode::from_u16(c).to_u16(), c);
        }
    }

    #[test]
    fn peer_list_pages_fill_up_and_round_trip() {
        let mut buf = [0u8; 2048];
        let mut w = PeerListWriter::new(&mut buf, ListKind::Full, 9, 100).unwrap();
        let mut pushed = Vec::new();
        for i in 0..100u8 {
            let e = entry(i, i % 2 == 0);
            if !w.push_add(&e) {
                break;
            }
            pushed.push(e);
        }
        assert!(!w.push_remove(&PublicKey([1; 32])), "a full list has no removes");
        let n = w.finish();
        assert!(n <= MAX_MESSAGE_LEN && n > MAX_MESSAGE_LEN - MAX_ENTRY_LEN, "page of {n} bytes");
        let Message::PeerList(l) = parse(&buf[..n]).unwrap() else { panic!() };
        assert_eq!((l.kind, l.version, l.base_or_total), (ListKind::Full, 9, 100));
        assert_eq!(l.adds().collect::<Vec<_>>(), pushed);
        assert_eq!(l.removes().count(), 0);
        let m = Message::PeerList(l);
        let again = round_trip(&m);
        assert_eq!(again, buf[..n]);

        let mut w = PeerListWriter::new(&mut buf, ListKind::Delta, 10, 9).unwrap();
        assert!(w.push_add(&entry(1, false)));
        assert!(w.push_remove(&PublicKey([2; 32])));
        assert!(!w.push_add(&entry(3, false)), "adds come before removes");
        assert_eq!(w.entries(), 2);
        let n = w.finish();
        let Message::PeerList(l) = parse(&buf[..n]).unwrap() else { panic!() };
        assert_eq!(l.adds().collect::<Vec<_>>(), [entry(1, false)]);
        assert_eq!(l.removes().collect::<Vec<_>>(), [PublicKey([2; 32])]);
        assert_eq!(
            PeerListWriter::new(&mut buf[..5], ListKind::Delta, 1, 0).err(),
            Some(EmitError::BufferTooSmall { needed: 17 })
        );
    }

    #[test]
    fn key_query_and_reply() {
        let q = key_query();
        assert!(is_key_query(&q));
        // Never a WireGuard message (types 1..4 as little-endian u32), nor a
        // signaling payload (those only travel inside WireGuard).
        let t = u32::from_le_bytes(q[..4].try_into().unwrap());
        assert!(!(1..=4).contains(&t));
        assert!(!is_key_query(&q[..63]));
        let mut bad = q;
        bad[40] = 1;
        assert!(!is_key_query(&bad));
        let mut long = q.to_vec();
        long.push(0);
        assert!(!is_key_query(&long));
        let key = PublicKey([7; 32]);
        let r = key_reply(&key);
        assert!(r.len() < q.len(), "no amplification");
        assert_eq!(parse_key_reply(&r), Some(key));
        assert_eq!(parse_key_reply(&r[..47]), None);
        assert_eq!(parse_key_reply(&q), None);
        let mut bad = r;
        bad[0] = b'O';
        assert_eq!(parse_key_reply(&bad), None);
    }

    #[test]
    fn malformed_input_is_refused() {
        assert_eq!(parse(&[]), Err(ParseError::Truncated));
        assert_eq!(parse(&[2, 1, 0, 0]), Err(ParseError::BadVersion(2)));
        assert_eq!(parse(&[1, 0x42, 0, 0]), Err(ParseError::UnknownType(0x42)));
        assert_eq!(parse(&[1, 1, 1, 0]), Err(ParseError::Truncated));
        assert_eq!(parse(&[1, 1, 1, 0, 0]), Err(ParseError::TrailingBytes));
        assert_eq!(parse(&[1, 1, 0, 0, 0, 0]), Ok(Message::Hello));
        assert_eq!(parse(&[1, 1, 0, 0, 0, 1]), Err(ParseError::BadPadding));
        assert_eq!(
            parse(&[1, 1, 0, 0].iter().chain(&[0u8; 16]).copied().collect::<Vec<_>>()),
            Err(ParseError::BadPadding)
        );
        let big = (MAX_MESSAGE_LEN as u16 - 3).to_le_bytes();
        assert_eq!(
            parse(&[1, 1, big[0], big[1]]),
            Err(ParseError::TooLong { max: MAX_MESSAGE_LEN, got: MAX_MESSAGE_LEN + 1 })
        );
        // Relay data: empty and oversize datagrams.
        let mut m = std::vec![1, msg_type::RELAY_DATA, 32, 0];
        m.extend_from_slice(&[0; 32]);
        assert_eq!(parse(&m), Err(ParseError::BadField));
        // Heartbeat ack with 10^9 nanoseconds.
        let mut buf = [0u8; 256];
        let n = Message::HeartbeatAck(HeartbeatAck {
            challenge: [0; 16],
            time: WallTime::new(1, 0),
            list_version: 0,
            reflexive: None,
        })
        .emit(&mut buf)
        .unwrap();
        buf[4 + 16 + 8..4 + 16 + 12].copy_from_slice(&1_000_000_000u32.to_le_bytes());
        assert_eq!(parse(&buf[..n]), Err(ParseError::BadField));
        // Too many local endpoints; bad address family; zero port.
        let reg = Message::Register(Register {
            cluster_key: PublicKey([1; 32]),
            challenge: [2; 16],
            proof: [3; 32],
            vip: "10.0.0.1".parse().unwrap(),
            vip2: None,
            locals: heapless::Vec::new(),
        });
        let n = reg.emit(&mut buf).unwrap();
        let count_at = n - 1;
        buf[count_at] = 5;
        assert_eq!(parse(&buf[..n]), Err(ParseError::TooManyEndpoints(5)));
        buf[count_at] = 0;
        buf[4 + 80] = 5;
        assert_eq!(parse(&buf[..n]), Err(ParseError::BadAddressFamily(5)));
        buf[4 + 80] = 4;
        buf[4 + 81..4 + 85].copy_from_slice(&[0; 4]);
        assert_eq!(parse(&buf[..n]), Err(ParseError::BadField), "unspecified VIP");
        // A second VIP must be specified and of the other family.
        let dual = |vip: &str, vip2: &str| {
            Message::Register(Register {
                cluster_key: PublicKey([1; 32]),
                challenge: [2; 16],
                proof: [3; 32],
                vip: vip.parse().unwrap(),
                vip2: Some(vip2.parse().unwrap()),
                locals: heapless::Vec::new(),
            })
        };
        assert_eq!(dual("10.0.0.1", "10.0.0.2").emit(&mut buf), Err(EmitError::Invalid));
        assert_eq!(dual("10.0.0.1", "::").emit(&mut buf), Err(EmitError::Invalid));
        let n = dual("10.0.0.1", "fd00::2").emit(&mut buf).unwrap();
        assert!(parse(&buf[..n]).is_ok());
        let second = 4 + 80 + 5;
        assert_eq!(buf[second], 6);
        buf[second + 1..second + 17].copy_from_slice(&[0; 16]);
        assert_eq!(parse(&buf[..n]), Err(ParseError::BadField), "unspecified second VIP");
        // Re-encode the second VIP as IPv4 (same family as the first): refused.
        let mut same = buf[..second].to_vec();
        same.extend_from_slice(&[4, 10, 0, 0, 2, 0]);
        let body = (same.len() - 4) as u16;
        same[2..4].copy_from_slice(&body.to_le_bytes());
        assert_eq!(parse(&same), Err(ParseError::BadField), "two IPv4 VIPs");
        same[second] = 9;
        assert_eq!(parse(&same), Err(ParseError::BadAddressFamily(9)));
        // A peer list that announces more entries than it holds.
        let mut w = PeerListWriter::new(&mut buf, ListKind::Delta, 2, 1).unwrap();
        w.push_add(&entry(1, false));
        let n = w.finish();
        buf[4 + 9] = 2;
        assert_eq!(parse(&buf[..n]), Err(ParseError::Truncated));
        buf[4 + 9] = 0;
        assert_eq!(parse(&buf[..n]), Err(ParseError::TrailingBytes));
        buf[4] = 7;
        assert_eq!(parse(&buf[..n]), Err(ParseError::BadField));
    }
}
