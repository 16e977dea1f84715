//! Known-answer tests. The expected values were computed with Python's
//! hashlib/hmac (an implementation independent of the RustCrypto crates):
//!   HMAC = hmac.new(k, m, hashlib.blake2s); KDF per WireGuard §5.4;
//!   MAC  = hashlib.blake2s(m, key=k, digest_size=16).

use omni_core::cookie::{cookie_for, verify_mac1, CookieJar, MacKeys};
use omni_core::noise::kdf::{hash2, hmac, kdf, mac};
use omni_core::wire::Initiation;
use omni_core::Instant;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

const KEY: [u8; 32] = {
    let mut k = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        k[i] = i as u8;
        i += 1;
    }
    k
};
const INPUT: &[u8] = b"omninervous kdf vector";

#[test]
fn hmac_blake2s() {
    assert_eq!(hmac(&KEY, &[INPUT]).to_vec(), hex("7db5e8524895a7fae1373426ad70505d5d632290eccf768786fd8525b85ccfd6"));
}

#[test]
fn kdf_chain() {
    let t1 = hex("d41d1edb2e4ad690f9dde74b582f15c06e5485d3bc7ebffc9169e506deb1ac78");
    let t2 = hex("f9191d2edb652909ca6bd61acd5b569d31fc1782decf258baf44855f23b863b9");
    let t3 = hex("8edab2ab0c0214541a22a87e925b2d4883b3b4cc4fed9ea0995cb11b7d2d9a2b");
    let [a] = kdf::<1>(&KEY, INPUT);
    assert_eq!(a.to_vec(), t1);
    let [a, b] = kdf::<2>(&KEY, INPUT);
    assert_eq!((a.to_vec(), b.to_vec()), (t1.clone(), t2.clone()));
    let [a, b, c] = kdf::<3>(&KEY, INPUT);
    assert_eq!((a.to_vec(), b.to_vec(), c.to_vec()), (t1, t2, t3));
}

#[test]
fn mac1_keys_and_mac1() {
    let public = [0x42u8; 32];
    let keys = MacKeys::new(&public);
    assert_eq!(keys.mac1.to_vec(), hex("172c34d6807bd7acef1a2471f20e928626c23ce0b9f90b326cf5f82d12480a4e"));
    assert_eq!(keys.cookie.to_vec(), hex("32c9aa406608a87d7ff9c2e50449cf680a330f503c774b8ecfbca0b8becb1de1"));
    assert_eq!(hash2(b"mac1----", &public), keys.mac1);

    let body: Vec<u8> = (0..116u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(mac(&keys.mac1, &body).to_vec(), hex("13d6d2331bfec1f04c55bdfd08c2d2ab"));

    // The jar stamps the same MAC1 into a message, and the checker accepts it.
    let mut msg = [0u8; 148];
    msg[..116].copy_from_slice(&body);
    CookieJar::new(&public).stamp(Instant::from_secs(1), &mut msg, Initiation::MAC1_OFFSET);
    assert_eq!(msg[116..132].to_vec(), hex("13d6d2331bfec1f04c55bdfd08c2d2ab"));
    assert_eq!(&msg[132..], &[0u8; 16], "no cookie yet: MAC2 is zero");
    assert!(verify_mac1(&keys, &msg, Initiation::MAC1_OFFSET));
    msg[3] ^= 1;
    assert!(!verify_mac1(&keys, &msg, Initiation::MAC1_OFFSET));
}

#[test]
fn cookie_and_mac2() {
    let secret = [0x99u8; 32];
    let src = "192.0.2.1:51820".parse().unwrap();
    let cookie = cookie_for(&secret, src);
    assert_eq!(cookie.to_vec(), hex("378220c34c61dc370be57d87f70ee5de"));
    let keys = MacKeys::new(&[0x42u8; 32]);
    let mut msg: Vec<u8> = (0..116u32).map(|i| (i * 7) as u8).collect();
    msg.extend_from_slice(&mac(&keys.mac1, &msg.clone()));
    assert_eq!(mac(&cookie, &msg).to_vec(), hex("df64d4c548e977ed7445b6b99b63ae99"));
}
