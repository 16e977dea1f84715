use super::{read_u32, read_u64, WireError, Writer};
use crate::constants::{AEAD_TAG_LEN, MSG_TRANSPORT, TRANSPORT_HEADER_LEN};

/// Message 4 header: receiver index and counter; the payload stays in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportHeader {
    pub receiver: u32,
    pub counter: u64,
}

impl TransportHeader {
    /// Splits a transport datagram into header and encrypted payload
    /// (at least a tag; an empty payload is a keepalive).
    pub fn parse(b: &[u8]) -> Result<(Self, &[u8]), WireError> {
        let min = TRANSPORT_HEADER_LEN + AEAD_TAG_LEN;
        let bad = WireError::BadLength { expected: min, got: b.len() };
        if b.len() < min {
            return Err(bad);
        }
        let h = TransportHeader { receiver: read_u32(b, 4).ok_or(bad)?, counter: read_u64(b, 8).ok_or(bad)? };
        let payload = b.get(TRANSPORT_HEADER_LEN..).ok_or(bad)?;
        Ok((h, payload))
    }

    pub fn emit(&self, out: &mut [u8]) {
        let mut w = Writer::new(out);
        w.put_u32(MSG_TRANSPORT);
        w.put_u32(self.receiver);
        w.put_u64(self.counter);
    }
}
