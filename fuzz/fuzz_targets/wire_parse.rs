//! `wire::parse` on arbitrary bytes: never panics, and every message that
//! parses re-emits to exactly the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omni_core::constants::*;
use omni_core::wire::{self, Message, WireError};

fuzz_target!(|data: &[u8]| {
    let parsed = wire::parse(data);
    // `message_type` and `parse` agree on which type fields are known.
    let known = wire::message_type(data);
    match &parsed {
        Err(WireError::UnknownType(t)) => {
            assert!(known.is_none());
            assert_eq!(Some(*t), data.get(..4).map(|b| u32::from_le_bytes(b.try_into().unwrap())));
        }
        Err(WireError::BadLength { expected, got }) => {
            assert_eq!(*got, data.len());
            assert_ne!(*expected, data.len());
        }
        Err(_) => {}
        Ok(_) => assert!(known.is_some()),
    }
    let mut buf = [0u8; INITIATION_LEN];
    match parsed {
        Ok(Message::Initiation(m)) => {
            assert_eq!(data.len(), INITIATION_LEN);
            m.emit(&mut buf);
            assert_eq!(&buf[..], data);
            // Emitting into a short buffer must not panic.
            m.emit(&mut buf[..data.len() / 2]);
        }
        Ok(Message::Response(m)) => {
            assert_eq!(data.len(), RESPONSE_LEN);
            m.emit(&mut buf[..RESPONSE_LEN]);
            assert_eq!(&buf[..RESPONSE_LEN], data);
            m.emit(&mut buf[..data.len() / 2]);
        }
        Ok(Message::CookieReply(m)) => {
            assert_eq!(data.len(), COOKIE_REPLY_LEN);
            m.emit(&mut buf[..COOKIE_REPLY_LEN]);
            assert_eq!(&buf[..COOKIE_REPLY_LEN], data);
            m.emit(&mut buf[..data.len() / 2]);
        }
        Ok(Message::Transport(h, payload)) => {
            assert!(data.len() >= TRANSPORT_OVERHEAD);
            assert_eq!(payload, &data[TRANSPORT_HEADER_LEN..]);
            h.emit(&mut buf[..TRANSPORT_HEADER_LEN]);
            assert_eq!(&buf[..TRANSPORT_HEADER_LEN], &data[..TRANSPORT_HEADER_LEN]);
        }
        Err(_) => {}
    }
});
