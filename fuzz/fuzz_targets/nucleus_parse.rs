//! `nucleus::wire::parse` on arbitrary bytes: never panics; every message
//! that parses re-emits to exactly its bytes (minus WireGuard's zero
//! padding), its peer-list iterators yield exactly the counted entries, and
//! a second VIP is always of the other address family.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omni_core::nucleus::wire::{self, EmitError, Message, HEADER_LEN, MAX_PADDING};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = wire::parse(data) else { return };
    let len = msg.encoded_len();
    assert!(len <= data.len() && data.len() - len <= MAX_PADDING, "len {len} of {}", data.len());
    assert!(len <= wire::max_len(msg.msg_type()));
    assert_eq!(Some(msg.msg_type()), wire::peek_type(data));
    assert_eq!(usize::from(u16::from_le_bytes([data[2], data[3]])) + HEADER_LEN, len);
    let mut buf = vec![0u8; len];
    assert_eq!(msg.emit(&mut buf), Ok(len));
    assert_eq!(&buf[..], &data[..len], "re-emitted bytes differ");
    assert_eq!(wire::parse(&buf).as_ref(), Ok(&msg));
    // Emitting into a short buffer reports the size and does not panic.
    assert_eq!(msg.emit(&mut buf[..len - 1]), Err(EmitError::BufferTooSmall { needed: len }));
    match &msg {
        Message::PeerList(l) => {
            assert_eq!(l.adds().count(), l.add_count());
            assert_eq!(l.removes().count(), l.remove_count());
            for e in l.adds() {
                assert!(e.encoded_len() <= wire::MAX_ENTRY_LEN);
                assert!(!e.candidates().is_empty() || (e.reflexive.is_none() && e.locals.is_empty()));
                assert!(e.vip2.is_none_or(|v| v.is_ipv4() != e.vip.is_ipv4()), "two VIPs of one family");
            }
        }
        Message::Register(r) => assert!(r.vip2.is_none_or(|v| v.is_ipv4() != r.vip.is_ipv4())),
        Message::RegisterOk(r) => assert!(r.vip2.is_none_or(|v| v.is_ipv4() != r.vip.is_ipv4())),
        Message::PunchNotify(e) => assert!(e.vip2.is_none_or(|v| v.is_ipv4() != e.vip.is_ipv4())),
        Message::RelayData(d) => assert!(!d.datagram.is_empty() && d.datagram.len() <= wire::MAX_RELAY_DATAGRAM),
        _ => {}
    }
});
