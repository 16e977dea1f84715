use super::{check_len, read_array, read_u32, WireError, Writer};
use crate::constants::{INITIATION_LEN, MSG_INITIATION};

/// Message 1: handshake initiation (148 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Initiation {
    pub sender: u32,
    pub ephemeral: [u8; 32],
    pub encrypted_static: [u8; 48],
    pub encrypted_timestamp: [u8; 28],
    pub mac1: [u8; 16],
    pub mac2: [u8; 16],
}

impl Initiation {
    /// Offset of mac1: MAC1 covers every byte before it.
    pub const MAC1_OFFSET: usize = 116;
    /// Offset of mac2: MAC2 covers every byte before it.
    pub const MAC2_OFFSET: usize = 132;

    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        check_len(b, INITIATION_LEN)?;
        let bad = WireError::BadLength { expected: INITIATION_LEN, got: b.len() };
        Ok(Initiation {
            sender: read_u32(b, 4).ok_or(bad)?,
            ephemeral: read_array(b, 8).ok_or(bad)?,
            encrypted_static: read_array(b, 40).ok_or(bad)?,
            encrypted_timestamp: read_array(b, 88).ok_or(bad)?,
            mac1: read_array(b, 116).ok_or(bad)?,
            mac2: read_array(b, 132).ok_or(bad)?,
        })
    }

    /// Writes the message into the first 148 bytes of `out` (caller checked the size).
    pub fn emit(&self, out: &mut [u8]) {
        let mut w = Writer::new(out);
        w.put_u32(MSG_INITIATION);
        w.put_u32(self.sender);
        w.put(&self.ephemeral);
        w.put(&self.encrypted_static);
        w.put(&self.encrypted_timestamp);
        w.put(&self.mac1);
        w.put(&self.mac2);
    }
}
