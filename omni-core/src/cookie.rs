//! DoS mitigation (WireGuard paper §5.4.7): MAC1 on every handshake message,
//! and under load a cookie bound to the sender's IP and port that must come
//! back as MAC2; plus a bounded per-source rate limiter for handshakes.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::constants::{COOKIE_REFRESH_TIME, LABEL_COOKIE, LABEL_MAC1};
use crate::noise::kdf::{hash2, mac};
use crate::time::Instant;
use crate::wire::CookieReply;

/// The two keys derived from a static public key for MAC1 and cookie encryption.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MacKeys {
    pub mac1: [u8; 32],
    pub cookie: [u8; 32],
}

impl MacKeys {
    pub fn new(public: &[u8; 32]) -> Self {
        MacKeys { mac1: hash2(LABEL_MAC1, public), cookie: hash2(LABEL_COOKIE, public) }
    }
}

impl core::fmt::Debug for MacKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MacKeys(..)")
    }
}

/// Splits a handshake message at `mac1_off` and checks its MAC1.
pub fn verify_mac1(keys: &MacKeys, msg: &[u8], mac1_off: usize) -> bool {
    let (Some(body), Some(got)) = (msg.get(..mac1_off), msg.get(mac1_off..mac1_off.saturating_add(16))) else {
        return false;
    };
    mac(&keys.mac1, body).ct_eq(got).into()
}

/// Responder side: the rotating secret, cookie replies, MAC2 checks.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct CookieChecker {
    #[zeroize(skip)]
    keys: MacKeys,
    secret: [u8; 32],
    #[zeroize(skip)]
    secret_born: Option<Instant>,
}

impl core::fmt::Debug for CookieChecker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CookieChecker(..)")
    }
}

fn addr_bytes(src: SocketAddr, out: &mut [u8; 18]) -> usize {
    match src.ip() {
        IpAddr::V4(v4) => {
            let (a, rest) = out.split_at_mut(4);
            a.copy_from_slice(&v4.octets());
            if let Some(p) = rest.get_mut(..2) {
                p.copy_from_slice(&src.port().to_be_bytes());
            }
            6
        }
        IpAddr::V6(v6) => {
            let (a, rest) = out.split_at_mut(16);
            a.copy_from_slice(&v6.octets());
            rest.copy_from_slice(&src.port().to_be_bytes());
            18
        }
    }
}

/// The cookie for `src` under `secret`: MAC(secret, IP || port), the port big-endian.
pub fn cookie_for(secret: &[u8; 32], src: SocketAddr) -> [u8; 16] {
    let mut a = [0u8; 18];
    let n = addr_bytes(src, &mut a);
    mac(secret, a.get(..n).unwrap_or(&[]))
}

impl CookieChecker {
    pub fn new(our_public: &[u8; 32]) -> Self {
        CookieChecker { keys: MacKeys::new(our_public), secret: [0; 32], secret_born: None }
    }

    pub fn mac_keys(&self) -> &MacKeys {
        &self.keys
    }

    fn cookie(&mut self, now: Instant, src: SocketAddr, rng: &mut impl rand_core::RngCore) -> [u8; 16] {
        let stale = match self.secret_born {
            None => true,
            Some(b) => now.saturating_duration_since(b) >= COOKIE_REFRESH_TIME,
        };
        if stale {
            rng.fill_bytes(&mut self.secret);
            self.secret_born = Some(now);
        }
        cookie_for(&self.secret, src)
    }

    /// Checks MAC2 of a message whose MAC2 field starts at `mac2_off`.
    pub fn verify_mac2(
        &mut self,
        now: Instant,
        src: SocketAddr,
        msg: &[u8],
        mac2_off: usize,
        rng: &mut impl rand_core::RngCore,
    ) -> bool {
        let (Some(body), Some(got)) = (msg.get(..mac2_off), msg.get(mac2_off..mac2_off.saturating_add(16))) else {
            return false;
        };
        let mut cookie = self.cookie(now, src, rng);
        let ok = mac(&cookie, body).ct_eq(got).into();
        cookie.zeroize();
        ok
    }

    /// Builds the cookie reply for a handshake message from `src` whose
    /// sender index is `receiver` and whose MAC1 is `msg_mac1`.
    pub fn reply(
        &mut self,
        now: Instant,
        src: SocketAddr,
        receiver: u32,
        msg_mac1: &[u8; 16],
        rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng),
    ) -> CookieReply {
        let cookie = self.cookie(now, src, rng);
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let mut enc = [0u8; 32];
        let (ct, tag_out) = enc.split_at_mut(16);
        ct.copy_from_slice(&cookie);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(&self.keys.cookie));
        if let Ok(tag) = cipher.encrypt_in_place_detached(XNonce::from_slice(&nonce), msg_mac1, ct) {
            tag_out.copy_from_slice(&tag);
        }
        CookieReply { receiver, nonce, encrypted_cookie: enc }
    }
}

/// Initiator side, per peer: stamps MAC1/MAC2 on our handshake messages and
/// absorbs cookie replies. Keeps the two keys derived from the peer's public
/// key; a large peer table uses [`CookieState`] instead, which derives them
/// on demand.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct CookieJar {
    #[zeroize(skip)]
    keys: MacKeys,
    state: CookieState,
}

impl core::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CookieJar").field("has_cookie", &self.state.cookie_at.is_some()).finish()
    }
}

/// A cookie reply that did not decrypt against our last handshake message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadCookieReply;

impl CookieJar {
    pub fn new(peer_public: &[u8; 32]) -> Self {
        CookieJar { keys: MacKeys::new(peer_public), state: CookieState::default() }
    }

    /// Fills in MAC1 and MAC2 of a fully written handshake message.
    pub fn stamp(&mut self, now: Instant, msg: &mut [u8], mac1_off: usize) {
        self.state.stamp_with(&self.keys.mac1, now, msg, mac1_off);
    }

    /// Decrypts a cookie reply addressed to our last message and keeps the cookie.
    pub fn absorb(&mut self, now: Instant, reply: &CookieReply) -> Result<(), BadCookieReply> {
        self.state.absorb_with(&self.keys.cookie, now, reply)
    }
}

/// The per-peer part of a [`CookieJar`] without its keys: the MAC1 and
/// cookie-encryption keys are derived from the peer's public key each time
/// one is needed (a BLAKE2s over 40 bytes, next to the Curve25519 work of a
/// handshake), so each peer of a large table saves their 64 bytes.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
pub struct CookieState {
    cookie: [u8; 16],
    #[zeroize(skip)]
    cookie_at: Option<Instant>,
    /// MAC1 of the last handshake message we sent: the AAD of a cookie reply.
    last_mac1: Option<[u8; 16]>,
}

impl core::fmt::Debug for CookieState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CookieState").field("has_cookie", &self.cookie_at.is_some()).finish()
    }
}

impl CookieState {
    /// Fills in MAC1 and MAC2 of a fully written handshake message to the
    /// peer with public key `peer_public`.
    pub fn stamp(&mut self, peer_public: &[u8; 32], now: Instant, msg: &mut [u8], mac1_off: usize) {
        let key = Zeroizing::new(hash2(LABEL_MAC1, peer_public));
        self.stamp_with(&key, now, msg, mac1_off);
    }

    /// Decrypts a cookie reply from the peer with public key `peer_public`
    /// addressed to our last message and keeps the cookie.
    pub fn absorb(&mut self, peer_public: &[u8; 32], now: Instant, reply: &CookieReply) -> Result<(), BadCookieReply> {
        let key = Zeroizing::new(hash2(LABEL_COOKIE, peer_public));
        self.absorb_with(&key, now, reply)
    }

    fn stamp_with(&mut self, mac1_key: &[u8; 32], now: Instant, msg: &mut [u8], mac1_off: usize) {
        let m1 = mac(mac1_key, msg.get(..mac1_off).unwrap_or(&[]));
        let mac2_off = mac1_off.saturating_add(16);
        if let Some(d) = msg.get_mut(mac1_off..mac2_off) {
            d.copy_from_slice(&m1);
        }
        self.last_mac1 = Some(m1);
        // A cookie is good for two minutes minus the time it may take to arrive.
        let fresh = self.cookie_at.is_some_and(|t| {
            now.saturating_duration_since(t) < COOKIE_REFRESH_TIME.saturating_sub(Duration::from_secs(5))
        });
        let m2 = if fresh { mac(&self.cookie, msg.get(..mac2_off).unwrap_or(&[])) } else { [0u8; 16] };
        if let Some(d) = msg.get_mut(mac2_off..mac2_off.saturating_add(16)) {
            d.copy_from_slice(&m2);
        }
    }

    fn absorb_with(&mut self, cookie_key: &[u8; 32], now: Instant, reply: &CookieReply) -> Result<(), BadCookieReply> {
        let aad = self.last_mac1.ok_or(BadCookieReply)?;
        let mut buf = [0u8; 16];
        let (ct, tag) = reply.encrypted_cookie.split_at(16);
        buf.copy_from_slice(ct);
        let cipher = XChaCha20Poly1305::new(Key::from_slice(cookie_key));
        cipher
            .decrypt_in_place_detached(XNonce::from_slice(&reply.nonce), &aad, &mut buf, Tag::from_slice(tag))
            .map_err(|_| BadCookieReply)?;
        self.cookie = buf;
        self.cookie_at = Some(now);
        buf.zeroize();
        Ok(())
    }
}

/// Token bucket per source address, bounded table: handshakes (which cost
/// Curve25519 operations) from one address are limited to `RATE` per second
/// with a burst of `BURST`, independently of every other source. IPv6
/// sources are grouped by /64 so one host cannot dodge the limit.
#[derive(Debug)]
pub struct RateLimiter<const N: usize> {
    entries: heapless::Vec<Bucket, N>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    key: [u8; 16],
    tokens: u64,
    last: Instant,
}

impl<const N: usize> Default for RateLimiter<N> {
    fn default() -> Self {
        RateLimiter { entries: heapless::Vec::new() }
    }
}

pub const RATE_PER_SEC: u64 = 20;
pub const BURST: u64 = 5;
const TOKEN_NS: u64 = 1_000_000_000 / RATE_PER_SEC;
const MAX_TOKENS: u64 = TOKEN_NS * BURST;

fn source_key(ip: IpAddr) -> [u8; 16] {
    let mut k = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            if let Some(d) = k.get_mut(..4) {
                d.copy_from_slice(&v4.octets());
            }
            if let Some(tag) = k.get_mut(15) {
                *tag = 4;
            }
        }
        IpAddr::V6(v6) => {
            if let (Some(d), Some(s)) = (k.get_mut(..8), v6.octets().get(..8)) {
                d.copy_from_slice(s);
            }
            if let Some(tag) = k.get_mut(15) {
                *tag = 6;
            }
        }
    }
    k
}

impl<const N: usize> RateLimiter<N> {
    /// Takes one token for `ip`; false if that source is over its rate.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let key = source_key(ip);
        if let Some(b) = self.entries.iter_mut().find(|b| b.key == key) {
            let elapsed = u64::try_from(now.saturating_duration_since(b.last).as_nanos()).unwrap_or(u64::MAX);
            b.tokens = b.tokens.saturating_add(elapsed).min(MAX_TOKENS);
            b.last = now;
            if b.tokens >= TOKEN_NS {
                b.tokens = b.tokens.saturating_sub(TOKEN_NS);
                return true;
            }
            return false;
        }
        let fresh = Bucket { key, tokens: MAX_TOKENS.saturating_sub(TOKEN_NS), last: now };
        if self.entries.push(fresh).is_err() {
            // Full: recycle the least recently seen source (its bucket has
            // refilled the most, so forgetting it is the smallest concession).
            if let Some(oldest) = self.entries.iter_mut().min_by_key(|b| b.last) {
                *oldest = fresh;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Initiation;

    #[test]
    fn limiter_is_per_source_and_refills() {
        let mut rl = RateLimiter::<4>::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::from_secs(1);
        let allowed = (0..100).filter(|_| rl.allow(t0, a)).count() as u64;
        assert_eq!(allowed, BURST);
        assert!(rl.allow(t0, b), "another source is unaffected");
        assert!(!rl.allow(t0, a));
        assert!(rl.allow(t0 + Duration::from_millis(50), a), "one token per 50 ms");
        assert!(!rl.allow(t0 + Duration::from_millis(51), a));
        // Same /64 shares a bucket.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..BURST {
            assert!(rl.allow(t0, v6a));
        }
        assert!(!rl.allow(t0, v6b));
    }

    #[test]
    fn cookie_round_trip_and_mac2() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        use rand_core::SeedableRng;
        let responder_pub = [9u8; 32];
        let mut checker = CookieChecker::new(&responder_pub);
        let mut jar = CookieJar::new(&responder_pub);
        let src: SocketAddr = "198.51.100.7:5555".parse().unwrap();
        let now = Instant::from_secs(10);
        let mut msg = [0u8; 148];
        msg[0] = 1;
        jar.stamp(now, &mut msg, Initiation::MAC1_OFFSET);
        assert!(verify_mac1(checker.mac_keys(), &msg, Initiation::MAC1_OFFSET));
        assert!(!checker.verify_mac2(now, src, &msg, Initiation::MAC2_OFFSET, &mut rng), "no cookie yet");
        let m1: [u8; 16] = msg[116..132].try_into().unwrap();
        let reply = checker.reply(now, src, 42, &m1, &mut rng);
        jar.absorb(now, &reply).unwrap();
        jar.stamp(now, &mut msg, Initiation::MAC1_OFFSET);
        assert!(checker.verify_mac2(now, src, &msg, Initiation::MAC2_OFFSET, &mut rng));
        // Bound to IP and port.
        let other: SocketAddr = "198.51.100.7:5556".parse().unwrap();
        assert!(!checker.verify_mac2(now, other, &msg, Initiation::MAC2_OFFSET, &mut rng));
        // A tampered reply is refused and the jar is unchanged.
        let mut bad = reply.clone();
        bad.encrypted_cookie[0] ^= 1;
        assert_eq!(jar.absorb(now, &bad), Err(BadCookieReply));
        // After the secret rotates (120 s), the old cookie no longer verifies.
        let later = now + Duration::from_secs(121);
        assert!(!checker.verify_mac2(later, src, &msg, Initiation::MAC2_OFFSET, &mut rng));
    }

    #[test]
    fn cookie_state_matches_jar() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        use rand_core::SeedableRng;
        let responder_pub = [7u8; 32];
        let mut checker = CookieChecker::new(&responder_pub);
        let mut jar = CookieJar::new(&responder_pub);
        let mut state = CookieState::default();
        let src: SocketAddr = "198.51.100.8:4444".parse().unwrap();
        let now = Instant::from_secs(10);
        let mut a = [3u8; 148];
        let mut b = a;
        jar.stamp(now, &mut a, Initiation::MAC1_OFFSET);
        state.stamp(&responder_pub, now, &mut b, Initiation::MAC1_OFFSET);
        assert_eq!(a, b);
        let m1: [u8; 16] = b[116..132].try_into().unwrap();
        let reply = checker.reply(now, src, 1, &m1, &mut rng);
        assert_eq!(state.absorb(&[8u8; 32], now, &reply), Err(BadCookieReply), "other peer's key");
        state.absorb(&responder_pub, now, &reply).unwrap();
        jar.absorb(now, &reply).unwrap();
        jar.stamp(now, &mut a, Initiation::MAC1_OFFSET);
        state.stamp(&responder_pub, now, &mut b, Initiation::MAC1_OFFSET);
        assert_eq!(a, b);
        assert!(checker.verify_mac2(now, src, &b, Initiation::MAC2_OFFSET, &mut rng));
    }
}
