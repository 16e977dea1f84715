//! `Node::send_ip` with arbitrary packets, output buffers of arbitrary size
//! and a few MTUs, with and without an established session. Never panics,
//! honours the buffer contract, and whatever it transmits decrypts at the
//! peer to exactly the packet that was sent.
//!
//! Input: flags, out size (u16), mtu selector, then the packet.
//! flags bit 0: establish a session first; bit 1: catch-all routes
//! (0.0.0.0/0, ::/0) instead of single hosts; bit 2: use an out size from
//! the threshold table instead of the u16; bit 3: drop a's endpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omni_core::node::{Received, RecvError, SendError, Sent};
use omni_core::{Instant, NodeConfig};
use omni_core_fuzz::*;

const MTUS: [u16; 8] = [1420, 0, 1, 15, 16, 17, 1280, 65535];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.u8();
    let size16 = input.u16();
    let mtu = MTUS[usize::from(input.u8()) % MTUS.len()];
    let packet = input.rest();
    let out_len = if flags & 4 != 0 { out_size(size16 as u8) } else { usize::from(size16) };

    let mut p = pair(NodeConfig::default(), NodeConfig::default(), flags & 2 != 0);
    if flags & 1 != 0 {
        handshake(&mut p);
    }
    p.a.set_mtu(mtu);
    if flags & 8 != 0 {
        p.a.set_endpoint(p.ida, None);
    }
    let now = Instant::from_secs(13);
    let mut out = vec![0u8; out_len];
    let r = p.a.send_ip(now, packet, &mut out);
    check_send(&r, out_len);
    // The documented sufficient size never yields BufferTooSmall.
    let enough = (packet.len() + 32 + 15).max(148);
    if out_len >= enough {
        assert!(!matches!(r, Err(SendError::BufferTooSmall { .. })), "{r:?} with {out_len} >= {enough}");
    }
    let mut sent: Vec<Vec<u8>> = Vec::new();
    match r {
        Ok(Sent::Transmit(t)) => sent.push(out[..t.len].to_vec()),
        Err(SendError::BufferTooSmall { needed }) => {
            // Nothing lost: the same call with `needed` bytes goes through.
            let mut big = vec![0u8; needed];
            let r2 = p.a.send_ip(now, packet, &mut big);
            check_send(&r2, needed);
            assert!(!matches!(r2, Err(SendError::BufferTooSmall { .. })), "{r2:?} after needed = {needed}");
            if let Ok(Sent::Transmit(t)) = r2 {
                sent.push(big[..t.len].to_vec());
            }
        }
        _ => {}
    }
    // Drain (initiation, staged data), with the fuzzed size first then a
    // large buffer; a finished handshake releases the staged packet.
    let mut big = vec![0u8; 70_000];
    for _ in 0..8 {
        let small = p.a.poll_transmit(now, &mut out);
        let t = match small {
            Ok(Some(t)) => {
                assert!(t.len <= out_len);
                Some(out[..t.len].to_vec())
            }
            Ok(None) => None,
            Err(SendError::BufferTooSmall { needed }) => {
                assert!(needed > out_len);
                match p.a.poll_transmit(now, &mut big) {
                    Ok(Some(t)) => Some(big[..t.len].to_vec()),
                    Ok(None) => None,
                    e => panic!("poll_transmit with 70000 bytes: {e:?}"),
                }
            }
            Err(_) => None,
        };
        let Some(d) = t else { break };
        if d.first() == Some(&T_DATA) {
            sent.push(d);
            continue;
        }
        // A handshake initiation: let b answer, and a complete it.
        let mut rb = vec![0u8; 2048];
        if let Ok(Received::Reply { len }) = p.b.handle_datagram(now, addr_a(), &d, &mut rb) {
            let _ = p.a.handle_datagram(now, addr_b(), &rb[..len], &mut big);
        }
    }

    // Every transport message a sent decrypts at b to the packet (a zero
    // length one is a keepalive).
    for d in sent {
        let mut rb = vec![0u8; d.len()];
        let r = p.b.handle_datagram(now, addr_a(), &d, &mut rb);
        let plain_len = d.len() - 32;
        if packet.is_empty() {
            // Only the handshake-confirming keepalive may carry nothing.
            assert!(matches!(r, Ok(Received::Done)), "{r:?}");
            continue;
        }
        if plain_len == 0 {
            assert!(matches!(r, Ok(Received::Done)), "{r:?}");
            continue;
        }
        match expected_ip_len(packet, plain_len) {
            Some(len) => {
                let Ok(Received::Packet { len: got, .. }) = r else {
                    // Inner source outside a's allowed IPs at b.
                    assert!(matches!(r, Err(RecvError::DisallowedSource { .. })), "{r:?} for {len}-byte packet");
                    continue;
                };
                assert_eq!(got, len);
                let mut want = packet.to_vec();
                want.resize(plain_len.max(packet.len()), 0);
                assert_eq!(&rb[..got], &want[..got], "decrypted packet differs");
            }
            None => assert!(matches!(r, Err(RecvError::NotIp)), "{r:?}"),
        }
    }
});

/// What b should report as the packet length for `packet` padded to
/// `plain_len` bytes (None: not an IP packet).
fn expected_ip_len(packet: &[u8], plain_len: usize) -> Option<usize> {
    let mut plain = packet.to_vec();
    plain.resize(plain_len.max(packet.len()), 0);
    plain.truncate(plain_len);
    match plain.first()? >> 4 {
        4 => {
            let len = usize::from(u16::from_be_bytes(plain.get(2..4)?.try_into().ok()?));
            plain.get(12..16)?;
            (len >= 20 && len <= plain.len()).then_some(len)
        }
        6 => {
            let len = usize::from(u16::from_be_bytes(plain.get(4..6)?.try_into().ok()?)) + 40;
            plain.get(8..24)?;
            (len <= plain.len()).then_some(len)
        }
        _ => None,
    }
}
