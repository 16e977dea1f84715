//! Key parsing (base64 as in wg(8) configs, hex as in the UAPI) on arbitrary
//! UTF-8. Accepted input must be the canonical encoding of the key it
//! decodes to: every host parses keys the same way, and two different
//! strings never name the same key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omni_core::{PresharedKey, PublicKey, StaticSecret};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = core::str::from_utf8(data) else { return };

    let b64 = PublicKey::from_base64(s);
    // The three key types share one decoder.
    let secret = StaticSecret::from_base64(s);
    assert_eq!(b64.is_ok(), secret.is_ok());
    if let (Ok(k), Ok(sk)) = (&b64, &secret) {
        assert_eq!(sk.to_hex().as_str(), k.to_hex().as_str());
    }
    assert_eq!(b64.is_ok(), PresharedKey::from_base64(s).is_ok());
    if let Ok(k) = b64 {
        assert_eq!(k.to_base64().as_str(), s, "accepted non-canonical base64");
        assert_eq!(PublicKey::from_base64(k.to_base64().as_str()), Ok(k));
        assert_eq!(PublicKey::from_hex(k.to_hex().as_str()), Ok(k));
        assert_eq!(format!("{k}"), s);
    }

    let hex = PublicKey::from_hex(s);
    assert_eq!(hex.is_ok(), StaticSecret::from_hex(s).is_ok());
    assert_eq!(hex.is_ok(), PresharedKey::from_hex(s).is_ok());
    if let Ok(k) = hex {
        // Hex input may use either case; output is lowercase.
        assert_eq!(k.to_hex().as_str(), s.to_ascii_lowercase(), "hex did not round-trip");
        assert_eq!(PublicKey::from_hex(k.to_hex().as_str()), Ok(k));
        assert_eq!(PublicKey::from_base64(k.to_base64().as_str()), Ok(k));
    }

    // Reference decoding of strict padded base64 of 32 bytes.
    assert_eq!(b64.ok().map(|k| k.0), reference_base64(s), "differs from the reference decoder");
});

/// Straightforward strict decoder: 43 alphabet characters then '=',
/// the two low bits of the last character zero.
fn reference_base64(s: &str) -> Option<[u8; 32]> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    if b.len() != 44 || b[43] != b'=' {
        return None;
    }
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(32);
    for &c in &b[..43] {
        let v = A.iter().position(|&x| x == c)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    if bits != 0 {
        return None;
    }
    out.try_into().ok()
}
