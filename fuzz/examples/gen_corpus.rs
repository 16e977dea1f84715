//! Writes the checked-in seed corpus (deterministic: fixed keys, seeded RNGs).
//!
//!     cd fuzz && cargo +nightly run --example gen_corpus [corpus-dir]
//!
//! Seeds are named after what they hold; rerunning rewrites the same bytes.
//! Crash reproducers added by hand (`crash-*`) are left alone.

use std::fs;
use std::path::{Path, PathBuf};

use omni_core::NodeConfig;
use omni_core_fuzz::*;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(name), bytes).unwrap();
}

/// node_datagram op: raw datagram (op 0).
fn op_raw(flags: u8, d: &[u8], src: u8, out: u8) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(&(d.len() as u16).to_le_bytes());
    v.extend_from_slice(d);
    v.extend_from_slice(&[src, out]);
    v
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));

    // Real datagrams: a normal handshake with data both ways and a keepalive,
    // and one against a responder under load (cookie reply, MAC2).
    let mut p = pair(NodeConfig::default(), NodeConfig::default(), false);
    let cap = handshake(&mut p);
    let (_, cookie_cap) = cookie_handshake();
    let init = cap.of_type(T_INIT).next().unwrap().to_vec();
    let resp = cap.of_type(T_RESP).next().unwrap().to_vec();
    let data: Vec<Vec<u8>> = cap.of_type(T_DATA).map(<[u8]>::to_vec).collect();
    let keepalive = data.iter().find(|d| d.len() == 32).unwrap().clone();
    let cookie = cookie_cap.of_type(T_COOKIE).next().unwrap().to_vec();
    let init_mac2 = cookie_cap.of_type(T_INIT).nth(1).unwrap().to_vec();
    assert_eq!(init.len(), 148);
    assert_eq!(resp.len(), 92);
    assert_eq!(cookie.len(), 64);
    assert_ne!(&init_mac2[132..], &[0u8; 16][..], "second initiation carries MAC2");

    // ----- wire_parse
    let w = "wire_parse";
    write(&dir, w, "initiation", &init);
    write(&dir, w, "initiation-mac2", &init_mac2);
    write(&dir, w, "response", &resp);
    write(&dir, w, "cookie-reply", &cookie);
    write(&dir, w, "transport-data", &data[0]);
    write(&dir, w, "transport-keepalive", &keepalive);
    write(&dir, w, "transport-too-short", &keepalive[..31]);

    // ----- key_parse
    let k = "key_parse";
    let pk = public_of(&secret_a());
    write(&dir, k, "base64", pk.to_base64().as_str().as_bytes());
    write(&dir, k, "hex", pk.to_hex().as_str().as_bytes());
    write(&dir, k, "hex-upper", pk.to_hex().as_str().to_ascii_uppercase().as_bytes());
    write(&dir, k, "base64-zero", b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    write(&dir, k, "base64-noncanonical-tail", b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=");

    // ----- allowed_ip_parse
    let a = "allowed_ip_parse";
    for (name, s) in [
        ("v4-prefix", "10.0.0.0/8"),
        ("v4-host-bits", "192.168.1.77/24"),
        ("v4-bare", "10.0.0.1"),
        ("v4-default", "0.0.0.0/0"),
        ("v6-prefix", "fd00::2/128"),
        ("v6-mapped", "::ffff:192.0.2.1/120"),
        ("v4-leading-zero-cidr", "10.0.0.1/032"),
    ] {
        write(&dir, a, name, s.as_bytes());
    }

    // ----- node_datagram (layout: see fuzz_targets/node_datagram.rs)
    // Pool order after `handshake`: 0 init, 1 resp, 2 data a->b, 3 data b->a, 4 keepalive a->b.
    let n = "node_datagram";
    // Setup 0: the real initiation, re-stamped for a (passes MAC1, fails Noise).
    let mut s = vec![0u8];
    s.extend(op_raw(0x10, &init, 1, 14));
    write(&dir, n, "single-node-restamped-initiation", &s);
    // Setup 0: a transport header with an unknown index, tiny buffer.
    let mut s = vec![0u8];
    s.extend(op_raw(0x00, &keepalive, 4, 0));
    write(&dir, n, "single-node-unknown-index", &s);
    // Setup 2: replay each captured datagram to its receiver (and a full buffer).
    write(&dir, n, "replay-initiation", &[2, 0x0a, 0, 0, 14]);
    write(&dir, n, "replay-response", &[2, 0x02, 1, 1, 14]);
    write(&dir, n, "replay-data-small-buffer", &[2, 0x0a, 2, 0, 0x81]);
    // Setup 2: a data message with its counter moved ahead, then a bit flip.
    write(&dir, n, "mutate-counter-then-flip", &[2, 0x09, 2, 1, 5, 2, 3, 0, 40, 0, 0x10, 0, 14]);
    // Setup 2: 180 s pass (sessions expire), send, timers, drain both ways.
    write(
        &dir,
        n,
        "expire-then-send",
        &[2, 0x23, 13, 14, 0x24, 0, 14, 4, b'p', b'i', b'n', b'g', 0x23, 5, 14, 0x25, 14, 0x2d, 14],
    );
    // Setup 1: send (queues, starts handshake), drain/forward both ways.
    write(&dir, n, "fresh-handshake", &[1, 0, 0x24, 0, 14, 4, b'p', b'i', b'n', b'g', 0x25, 14, 0x2d, 14, 0x25, 14]);
    // Setup 3: replay the cookie reply to a, then a's retry to b.
    write(&dir, n, "cookie-replay", &[3, 0x02, 1, 1, 14, 0x0a, 2, 0, 14]);
    // Setup 2: config churn (persistent keepalive, remove/re-add peer, key rotation) and timers.
    write(&dir, n, "config-churn", &[2, 0x06, 3, 2, 0x23, 9, 14, 0x0e, 0, 6, 0x06, 1, 7, 0x23, 5, 14]);

    // ----- node_admission (layout: see fuzz_targets/node_admission.rs)
    // Setup 1: load threshold 1, `h` knows no initiator. Op 0 = initiator 0
    // initiates; the byte after an unknown initiation decides it (1 accept,
    // 2 wrong key, 3 hold, 0x81 accept with a small buffer).
    let a = "node_admission";
    write(&dir, a, "accept-then-data", &[1, 0x00, 1, 0x07, 4, b'p', b'i', b'n', b'g', 0x04, 3]);
    write(&dir, a, "accept-then-replay", &[1, 0x00, 1, 0x02, 0, 0x80, 14]);
    write(&dir, a, "hold-rotate-accept", &[1, 0x00, 3, 0x06, 2, 0x05, 0, 1]);
    write(&dir, a, "hold-known-accept", &[1, 0x00, 3, 0x06, 0, 0x05, 0, 1]);
    write(&dir, a, "wrong-key", &[1, 0x08, 2, 0, 0x04, 4, 0x04, 4, 1]);
    write(&dir, a, "small-buffer-then-retry", &[1, 0x00, 0x81, 10, 0x04, 4, 0x04, 4, 1]);
    // Setup 0: always under load: a cookie reply first, the retry carries MAC2.
    write(
        &dir,
        a,
        "under-load",
        &[0, 0x00, 0x04, 4, 0x04, 4, 1, 0x0f, 8, b'c', b'o', b'o', b'k', b'i', b'e', b'!', b'!'],
    );
    // Setup 0x17: load threshold 3, initiators 0 and 2 known from the start, 1 unknown.
    write(&dir, a, "known-and-unknown", &[0x17, 0x00, 0x08, 1, 0x10, 0x04, 3, 0x06, 3]);

    // ----- node_send_ip (flags, out size u16, mtu selector, packet)
    let si = "node_send_ip";
    let mut s = vec![1u8, 0x00, 0x08, 0];
    s.extend(ipv4(IP_A, IP_B, b"hello over a session"));
    write(&dir, si, "session-v4", &s);
    let mut s = vec![0u8, 100, 0, 0];
    s.extend(ipv6(IP6_A, IP6_B, b"needs a handshake first"));
    write(&dir, si, "handshake-v6-small-buffer", &s);
    let mut s = vec![3u8, 0, 0, 1];
    s.extend(ipv4(IP_A, [8, 8, 8, 8], &[0xee; 33]));
    write(&dir, si, "catch-all-mtu0-no-buffer", &s);
    let mut s = vec![5u8, 5, 0, 3];
    s.extend(ipv4(IP_A, IP_B, &[0; 1]));
    write(&dir, si, "session-mtu15-threshold-buffer", &s);
    let mut s = vec![9u8, 0, 8, 0];
    s.extend(ipv4(IP_A, IP_B, b"no endpoint"));
    write(&dir, si, "no-endpoint", &s);
    // A bogus IPv4 length field shorter than the packet.
    let mut pkt = ipv4(IP_A, IP_B, &[7; 40]);
    pkt[2..4].copy_from_slice(&30u16.to_be_bytes());
    let mut s = vec![1u8, 0, 8, 0];
    s.extend(pkt);
    write(&dir, si, "session-v4-short-length-field", &s);

    // ----- aead_differential: key ‖ nonce ‖ AAD length ‖ offset ‖ tamper (2)
    // ‖ AAD ‖ message; the bytes are arbitrary, the lengths are the point
    // (empty, keepalive, one byte, an ACK, 16-block edges, an MTU-sized
    // packet, odd tails with AAD, the largest libFuzzer input by default).
    let ad = "aead_differential";
    let mut filler = (0u32..).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8);
    for (name, aad_len, offset, msg_len) in [
        ("empty", 0u8, 0u8, 0usize),
        ("keepalive-aad", 16, 3, 0),
        ("one-byte", 0, 1, 1),
        ("tcp-ack", 0, 16, 52),
        ("block-edges", 12, 7, 1023),
        ("mtu-packet", 0, 16, 1420),
        ("odd-tail-aad", 33, 63, 1447),
        ("large", 0, 5, 4000),
    ] {
        let mut s: Vec<u8> = filler.by_ref().take(44).collect();
        s.extend([aad_len, offset, 5, 3]);
        s.extend(filler.by_ref().take(usize::from(aad_len) + msg_len));
        write(&dir, ad, name, &s);
    }

    eprintln!("corpus written to {}", dir.display());
}
