//! WireGuard's four message formats: parse (checked once, then infallible
//! field access) and emit into caller buffers. One file per message.
//!
//! Handshake messages are small and parsed into owned `Repr`s; transport
//! messages are zero-copy views over the datagram.

mod cookie_reply;
mod initiation;
mod response;
mod transport;

pub use cookie_reply::CookieReply;
pub use initiation::Initiation;
pub use response::Response;
pub use transport::TransportHeader;

use crate::constants::*;

/// Why a datagram is not a well-formed WireGuard message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than four bytes, or not the fixed length of its type.
    BadLength { expected: usize, got: usize },
    /// Type field not 1..=4 or its three reserved bytes not zero.
    UnknownType(u32),
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::BadLength { expected, got } => {
                write!(f, "bad message length: expected {expected} bytes, got {got}")
            }
            WireError::UnknownType(t) => write!(f, "unknown message type {t:#x}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for WireError {}

/// A parsed datagram.
#[derive(Debug, Clone)]
pub enum Message<'a> {
    Initiation(Initiation),
    Response(Response),
    CookieReply(CookieReply),
    /// Header plus the encrypted payload (ciphertext followed by the 16-byte tag).
    Transport(TransportHeader, &'a [u8]),
}

/// The message type of a datagram, if its first four bytes name one.
pub fn message_type(bytes: &[u8]) -> Option<u32> {
    let t = read_u32(bytes, 0)?;
    matches!(t, MSG_INITIATION | MSG_RESPONSE | MSG_COOKIE_REPLY | MSG_TRANSPORT).then_some(t)
}

/// Parses and length-checks a datagram. Never panics.
pub fn parse(bytes: &[u8]) -> Result<Message<'_>, WireError> {
    let t = read_u32(bytes, 0).ok_or(WireError::BadLength { expected: 4, got: bytes.len() })?;
    match t {
        MSG_INITIATION => Initiation::parse(bytes).map(Message::Initiation),
        MSG_RESPONSE => Response::parse(bytes).map(Message::Response),
        MSG_COOKIE_REPLY => CookieReply::parse(bytes).map(Message::CookieReply),
        MSG_TRANSPORT => TransportHeader::parse(bytes).map(|(h, p)| Message::Transport(h, p)),
        other => Err(WireError::UnknownType(other)),
    }
}

pub(crate) fn check_len(bytes: &[u8], expected: usize) -> Result<(), WireError> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(WireError::BadLength { expected, got: bytes.len() })
    }
}

pub(crate) fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(read_array(b, off)?))
}

pub(crate) fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(read_array(b, off)?))
}

pub(crate) fn read_array<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    let end = off.checked_add(N)?;
    b.get(off..end)?.try_into().ok()
}

/// Sequential writer over a buffer already checked to be large enough.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        let end = self.pos.saturating_add(bytes.len());
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
    }
    pub(crate) fn put_u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    pub(crate) fn put_u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_type_and_lengths() {
        assert!(matches!(parse(&[]), Err(WireError::BadLength { .. })));
        assert!(matches!(parse(&[1, 0, 0]), Err(WireError::BadLength { .. })));
        assert_eq!(parse(&[5, 0, 0, 0]).unwrap_err(), WireError::UnknownType(5));
        // Reserved bytes must be zero.
        assert_eq!(parse(&[1, 1, 0, 0]).unwrap_err(), WireError::UnknownType(0x101));
        let mut init = [0u8; INITIATION_LEN + 1];
        init[0] = 1;
        assert!(matches!(parse(&init), Err(WireError::BadLength { expected: 148, got: 149 })));
        assert!(matches!(parse(&init[..INITIATION_LEN]), Ok(Message::Initiation(_))));
        let mut t = [0u8; 31];
        t[0] = 4;
        assert!(matches!(parse(&t), Err(WireError::BadLength { .. })));
        let mut t = [0u8; 32];
        t[0] = 4;
        assert!(matches!(parse(&t), Ok(Message::Transport(_, p)) if p.len() == 16));
    }

    #[test]
    fn round_trips() {
        let i = Initiation {
            sender: 0xdead_beef,
            ephemeral: [1; 32],
            encrypted_static: [2; 48],
            encrypted_timestamp: [3; 28],
            mac1: [4; 16],
            mac2: [5; 16],
        };
        let mut b = [0u8; INITIATION_LEN];
        i.emit(&mut b);
        assert_eq!(&b[..4], &[1, 0, 0, 0]);
        match parse(&b).unwrap() {
            Message::Initiation(p) => assert_eq!(p, i),
            m => panic!("{m:?}"),
        }
        let r = Response {
            sender: 1,
            receiver: 2,
            ephemeral: [6; 32],
            encrypted_nothing: [7; 16],
            mac1: [8; 16],
            mac2: [9; 16],
        };
        let mut b = [0u8; RESPONSE_LEN];
        r.emit(&mut b);
        match parse(&b).unwrap() {
            Message::Response(p) => assert_eq!(p, r),
            m => panic!("{m:?}"),
        }
        let c = CookieReply { receiver: 3, nonce: [1; 24], encrypted_cookie: [2; 32] };
        let mut b = [0u8; COOKIE_REPLY_LEN];
        c.emit(&mut b);
        match parse(&b).unwrap() {
            Message::CookieReply(p) => assert_eq!(p, c),
            m => panic!("{m:?}"),
        }
    }
}
