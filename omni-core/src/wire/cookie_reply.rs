use super::{check_len, read_array, read_u32, WireError, Writer};
use crate::constants::{COOKIE_REPLY_LEN, MSG_COOKIE_REPLY};

/// Message 3: cookie reply (64 bytes), sent instead of a response under load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieReply {
    pub receiver: u32,
    pub nonce: [u8; 24],
    pub encrypted_cookie: [u8; 32],
}

impl CookieReply {
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        check_len(b, COOKIE_REPLY_LEN)?;
        let bad = WireError::BadLength { expected: COOKIE_REPLY_LEN, got: b.len() };
        Ok(CookieReply {
            receiver: read_u32(b, 4).ok_or(bad)?,
            nonce: read_array(b, 8).ok_or(bad)?,
            encrypted_cookie: read_array(b, 32).ok_or(bad)?,
        })
    }

    pub fn emit(&self, out: &mut [u8]) {
        let mut w = Writer::new(out);
        w.put_u32(MSG_COOKIE_REPLY);
        w.put_u32(self.receiver);
        w.put(&self.nonce);
        w.put(&self.encrypted_cookie);
    }
}
