//! omni-aead's AVX-512 ChaCha20-Poly1305 against RustCrypto's portable one,
//! byte for byte, on arbitrary keys, nonces, AAD and messages, sealed at any
//! offset of a guarded buffer. Run under AddressSanitizer (run-all.sh does):
//! omni-aead is the one crate here with `unsafe` (vector loads and stores).
//!
//! Input: key (32) ‖ nonce (12) ‖ AAD length (1) ‖ offset (1) ‖ tamper (2) ‖
//! AAD ‖ message.
#![no_main]

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use libfuzzer_sys::fuzz_target;

const GUARD: u8 = 0xa5;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<48>() else { return };
    let key: [u8; 32] = head[..32].try_into().unwrap();
    let nonce: [u8; 12] = head[32..44].try_into().unwrap();
    let aad_len = usize::from(head[44]).min(rest.len());
    let offset = usize::from(head[45] % 64);
    let (aad, msg) = rest.split_at(aad_len);

    let ours = omni_aead::ChaCha20Poly1305::new(&key).expect("this CPU lacks AVX-512F/VL: nothing would be tested");
    let reference = chacha20poly1305::ChaCha20Poly1305::new(&key.into());

    // The message sits `offset` bytes into a buffer with guard bytes on
    // both sides: nothing outside it may change.
    let mut guarded = vec![GUARD; offset + msg.len() + 64];
    let range = offset..offset + msg.len();
    guarded[range.clone()].copy_from_slice(msg);
    let tag = ours.seal_in_place(&nonce, aad, &mut guarded[range.clone()]);
    let intact = |g: &[u8]| g[..offset].iter().chain(&g[range.end..]).all(|&b| b == GUARD);
    assert!(intact(&guarded), "seal wrote outside its buffer");

    let mut expected = msg.to_vec();
    let expected_tag = reference.encrypt_in_place_detached(&nonce.into(), aad, &mut expected).unwrap();
    assert_eq!(&guarded[range.clone()], &expected[..], "ciphertext differs from RustCrypto");
    assert_eq!(&tag[..], &expected_tag[..], "tag differs from RustCrypto");

    // A forged tag (one bit, chosen by the input) is refused, buffer untouched.
    let mut forged = tag;
    forged[usize::from(head[46] % 16)] ^= 1 << (head[47] % 8);
    let sealed = guarded.clone();
    assert_eq!(ours.open_in_place(&nonce, aad, &mut guarded[range.clone()], &forged), Err(omni_aead::Error));
    assert_eq!(guarded, sealed, "a refused open changed the buffer");

    // A flipped ciphertext bit is refused too.
    if !msg.is_empty() {
        let i = range.start + usize::from(head[46]) * 7 % msg.len();
        guarded[i] ^= 0x40;
        assert_eq!(ours.open_in_place(&nonce, aad, &mut guarded[range.clone()], &tag), Err(omni_aead::Error));
        guarded[i] ^= 0x40;
    }

    ours.open_in_place(&nonce, aad, &mut guarded[range.clone()], &tag).expect("our own seal must open");
    assert_eq!(&guarded[range.clone()], msg);
    assert!(intact(&guarded), "open wrote outside its buffer");
});
