use super::{check_len, read_array, read_u32, WireError, Writer};
use crate::constants::{MSG_RESPONSE, RESPONSE_LEN};

/// Message 2: handshake response (92 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub sender: u32,
    pub receiver: u32,
    pub ephemeral: [u8; 32],
    pub encrypted_nothing: [u8; 16],
    pub mac1: [u8; 16],
    pub mac2: [u8; 16],
}

impl Response {
    pub const MAC1_OFFSET: usize = 60;
    pub const MAC2_OFFSET: usize = 76;

    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        check_len(b, RESPONSE_LEN)?;
        let bad = WireError::BadLength { expected: RESPONSE_LEN, got: b.len() };
        Ok(Response {
            sender: read_u32(b, 4).ok_or(bad)?,
            receiver: read_u32(b, 8).ok_or(bad)?,
            ephemeral: read_array(b, 12).ok_or(bad)?,
            encrypted_nothing: read_array(b, 44).ok_or(bad)?,
            mac1: read_array(b, 60).ok_or(bad)?,
            mac2: read_array(b, 76).ok_or(bad)?,
        })
    }

    pub fn emit(&self, out: &mut [u8]) {
        let mut w = Writer::new(out);
        w.put_u32(MSG_RESPONSE);
        w.put_u32(self.sender);
        w.put_u32(self.receiver);
        w.put(&self.ephemeral);
        w.put(&self.encrypted_nothing);
        w.put(&self.mac1);
        w.put(&self.mac2);
    }
}
