//! The IKpsk2 handshake, message by message (WireGuard paper §5.4.2–5.4.5).
//! Pure functions over explicit state: the node decides when to call them.
//! Every intermediate secret is wiped on drop.

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::kdf::{hash2, initial_chaining_key, initial_hash, kdf};
use super::tai64n::Tai64N;
use crate::crypto::{AeadKey, CryptoProvider};
use crate::keys::{PresharedKey, PublicKey, StaticSecret};
use crate::wire::{Initiation, Response};

/// Why a handshake message was refused. Deliberately coarse: the sender of a
/// forged message learns nothing about which check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum HandshakeError {
    /// An AEAD field did not authenticate (wrong keys, wrong PSK, tampering).
    Decrypt,
    /// A Diffie-Hellman result was all zero (low-order point).
    WeakPoint,
}

/// Our long-term identity with what is derived from it.
pub struct LocalStatic<C: CryptoProvider> {
    pub(crate) secret: StaticSecret,
    /// The same key parsed once by the provider.
    pub(crate) parsed: C::X25519Secret,
    pub(crate) public: PublicKey,
    /// H_i for initiations addressed to us (depends only on our public key).
    pub(crate) responder_hash: [u8; 32],
}

impl<C: CryptoProvider> core::fmt::Debug for LocalStatic<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalStatic").field("public", &self.public).finish()
    }
}

impl<C: CryptoProvider> LocalStatic<C> {
    pub fn new(secret: StaticSecret) -> Self {
        let parsed = C::x25519_secret(secret.bytes());
        let public = PublicKey(C::x25519_public(&parsed));
        let responder_hash = initial_hash(&public.0);
        LocalStatic { secret, parsed, public, responder_hash }
    }
}

/// What we hold about a peer for handshakes: precomputed static-static DH.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct PeerStatic {
    #[zeroize(skip)]
    pub(crate) public: PublicKey,
    /// DH(s_local, S_peer), computed once per (local key, peer key) pair.
    pub(crate) static_static: [u8; 32],
    /// H_i for initiations we send to this peer.
    pub(crate) initiator_hash: [u8; 32],
    pub(crate) psk: PresharedKey,
}

impl core::fmt::Debug for PeerStatic {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PeerStatic").field("public", &self.public).finish()
    }
}

impl PeerStatic {
    pub fn new<C: CryptoProvider>(local: &LocalStatic<C>, public: PublicKey, psk: PresharedKey) -> Self {
        let static_static = C::x25519(&local.parsed, &public.0);
        PeerStatic { public, static_static, initiator_hash: initial_hash(&public.0), psk }
    }
    /// Whether DH(s_local, S_peer) is usable (not a low-order public key).
    pub fn is_valid(&self) -> bool {
        !bool::from(self.static_static.ct_eq(&[0u8; 32]))
    }
}

/// Symmetric state carried between handshake steps.
#[derive(Zeroize, ZeroizeOnDrop)]
struct Symmetric {
    ck: [u8; 32],
    h: [u8; 32],
}

impl Symmetric {
    fn mix_hash(&mut self, data: &[u8]) {
        self.h = hash2(&self.h, data);
    }
    fn mix_key(&mut self, input: &[u8]) {
        let [ck] = kdf::<1>(&self.ck, input);
        self.ck = ck;
    }
    fn mix_key_dh(&mut self, dh: &[u8; 32]) -> Result<[u8; 32], HandshakeError> {
        if bool::from(dh.ct_eq(&[0u8; 32])) {
            return Err(HandshakeError::WeakPoint);
        }
        let [ck, k] = kdf::<2>(&self.ck, dh);
        self.ck = ck;
        Ok(k)
    }
    /// `C = KDF1(C, DH)`: the ee/se mixes of message 2 derive no key, so
    /// skip the second HMAC output (`kdf::<1>` equals the first of `kdf::<2>`).
    fn mix_dh(&mut self, dh: &[u8; 32]) -> Result<(), HandshakeError> {
        if bool::from(dh.ct_eq(&[0u8; 32])) {
            return Err(HandshakeError::WeakPoint);
        }
        let [ck] = kdf::<1>(&self.ck, dh);
        self.ck = ck;
        Ok(())
    }
    fn mix_psk(&mut self, psk: &[u8; 32]) -> [u8; 32] {
        let [ck, t, k] = kdf::<3>(&self.ck, psk);
        self.ck = ck;
        self.mix_hash(&t);
        k
    }
    fn encrypt<C: CryptoProvider>(&mut self, key: &[u8; 32], buf: &mut [u8], tag: &mut [u8]) {
        let t = C::AeadKey::new(key).seal_in_place(0, &self.h, buf);
        tag.copy_from_slice(&t);
    }
    fn decrypt<C: CryptoProvider>(
        &mut self,
        key: &[u8; 32],
        buf: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), HandshakeError> {
        C::AeadKey::new(key).open_in_place(0, &self.h, buf, tag).map_err(|_| HandshakeError::Decrypt)
    }
}

/// Transport keys out of a finished handshake (T_send, T_recv from our side).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    pub send: [u8; 32],
    pub recv: [u8; 32],
}

impl core::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

/// Initiator state between sending message 1 and receiving message 2.
/// The symmetric state wipes itself on drop; the provider wipes the ephemeral.
pub struct InitiatorState<C: CryptoProvider> {
    sym: Symmetric,
    ephemeral: C::X25519Secret,
    pub(crate) local_index: u32,
}

impl<C: CryptoProvider> core::fmt::Debug for InitiatorState<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InitiatorState").field("local_index", &self.local_index).finish()
    }
}

/// A fresh ephemeral key pair, parsed once for all the DH operations it takes part in.
fn ephemeral<C: CryptoProvider>(
    rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng),
) -> (C::X25519Secret, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    let secret = C::x25519_secret(&bytes);
    bytes.zeroize();
    let public = C::x25519_public(&secret);
    (secret, public)
}

fn split<const SWAP: bool>(ck: &[u8; 32]) -> SessionKeys {
    let [t1, t2] = kdf::<2>(ck, &[]);
    if SWAP {
        SessionKeys { send: t2, recv: t1 }
    } else {
        SessionKeys { send: t1, recv: t2 }
    }
}

/// Builds message 1 (MAC fields left zero for the cookie jar to stamp).
pub fn create_initiation<C: CryptoProvider>(
    local: &LocalStatic<C>,
    peer: &PeerStatic,
    timestamp: Tai64N,
    local_index: u32,
    rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng),
) -> Result<(Initiation, InitiatorState<C>), HandshakeError> {
    let mut sym = Symmetric { ck: initial_chaining_key(), h: peer.initiator_hash };
    let (eph, e_pub) = ephemeral::<C>(rng);
    sym.mix_hash(&e_pub);
    sym.mix_key(&e_pub);
    let mut k = sym.mix_key_dh(&C::x25519(&eph, &peer.public.0))?;
    let mut msg = Initiation {
        sender: local_index,
        ephemeral: e_pub,
        encrypted_static: [0; 48],
        encrypted_timestamp: [0; 28],
        mac1: [0; 16],
        mac2: [0; 16],
    };
    {
        let (ct, tag) = msg.encrypted_static.split_at_mut(32);
        ct.copy_from_slice(&local.public.0);
        sym.encrypt::<C>(&k, ct, tag);
    }
    sym.mix_hash(&msg.encrypted_static);
    k = sym.mix_key_dh(&peer.static_static)?;
    {
        let (ct, tag) = msg.encrypted_timestamp.split_at_mut(12);
        ct.copy_from_slice(&timestamp.0);
        sym.encrypt::<C>(&k, ct, tag);
    }
    sym.mix_hash(&msg.encrypted_timestamp);
    k.zeroize();
    Ok((msg, InitiatorState { sym, ephemeral: eph, local_index }))
}

/// Responder state after decrypting the initiator's static key, before we
/// know whether that key belongs to a configured peer.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct InitiationPending {
    sym: Symmetric,
    #[zeroize(skip)]
    pub(crate) remote_ephemeral: [u8; 32],
    #[zeroize(skip)]
    pub(crate) remote_static: PublicKey,
    #[zeroize(skip)]
    pub(crate) remote_index: u32,
}

impl core::fmt::Debug for InitiationPending {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("InitiationPending").field("remote_static", &self.remote_static).finish()
    }
}

/// Message 1, first half: decrypt the initiator's static public key.
pub fn open_initiation<C: CryptoProvider>(
    local: &LocalStatic<C>,
    msg: &Initiation,
) -> Result<InitiationPending, HandshakeError> {
    let mut sym = Symmetric { ck: initial_chaining_key(), h: local.responder_hash };
    sym.mix_hash(&msg.ephemeral);
    sym.mix_key(&msg.ephemeral);
    let mut k = sym.mix_key_dh(&C::x25519(&local.parsed, &msg.ephemeral))?;
    let mut s = [0u8; 32];
    let (ct, tag) = msg.encrypted_static.split_at(32);
    s.copy_from_slice(ct);
    let tag: [u8; 16] = tag.try_into().map_err(|_| HandshakeError::Decrypt)?;
    let r = sym.decrypt::<C>(&k, &mut s, &tag);
    k.zeroize();
    r?;
    sym.mix_hash(&msg.encrypted_static);
    Ok(InitiationPending {
        sym,
        remote_ephemeral: msg.ephemeral,
        remote_static: PublicKey(s),
        remote_index: msg.sender,
    })
}

/// Message 1, second half: with the peer identified, authenticate the
/// timestamp. Returns the timestamp for the caller's replay check.
pub fn finish_initiation<C: CryptoProvider>(
    pending: &mut InitiationPending,
    peer: &PeerStatic,
    msg: &Initiation,
) -> Result<Tai64N, HandshakeError> {
    let mut k = pending.sym.mix_key_dh(&peer.static_static)?;
    let mut ts = [0u8; 12];
    let (ct, tag) = msg.encrypted_timestamp.split_at(12);
    ts.copy_from_slice(ct);
    let tag: [u8; 16] = tag.try_into().map_err(|_| HandshakeError::Decrypt)?;
    let r = pending.sym.decrypt::<C>(&k, &mut ts, &tag);
    k.zeroize();
    r?;
    pending.sym.mix_hash(&msg.encrypted_timestamp);
    Ok(Tai64N(ts))
}

/// Builds message 2 for an authenticated initiation; returns the responder's keys.
pub fn create_response<C: CryptoProvider>(
    pending: InitiationPending,
    peer: &PeerStatic,
    local_index: u32,
    rng: &mut (impl rand_core::RngCore + rand_core::CryptoRng),
) -> Result<(Response, SessionKeys), HandshakeError> {
    let mut p = pending;
    let sym = &mut p.sym;
    let (eph, e_pub) = ephemeral::<C>(rng);
    sym.mix_hash(&e_pub);
    sym.mix_key(&e_pub);
    let mut ee = C::x25519(&eph, &p.remote_ephemeral);
    sym.mix_dh(&ee)?;
    ee.zeroize();
    let mut se = C::x25519(&eph, &peer.public.0);
    sym.mix_dh(&se)?;
    se.zeroize();
    let mut k = sym.mix_psk(&peer.psk.0);
    let mut msg = Response {
        sender: local_index,
        receiver: p.remote_index,
        ephemeral: e_pub,
        encrypted_nothing: [0; 16],
        mac1: [0; 16],
        mac2: [0; 16],
    };
    sym.encrypt::<C>(&k, &mut [], &mut msg.encrypted_nothing);
    sym.mix_hash(&msg.encrypted_nothing);
    k.zeroize();
    Ok((msg, split::<true>(&sym.ck)))
}

/// Consumes message 2 for our pending initiation; returns the initiator's keys.
pub fn consume_response<C: CryptoProvider>(
    state: &InitiatorState<C>,
    local: &LocalStatic<C>,
    peer: &PeerStatic,
    msg: &Response,
) -> Result<SessionKeys, HandshakeError> {
    let mut sym = Symmetric { ck: state.sym.ck, h: state.sym.h };
    sym.mix_hash(&msg.ephemeral);
    sym.mix_key(&msg.ephemeral);
    let mut ee = C::x25519(&state.ephemeral, &msg.ephemeral);
    sym.mix_dh(&ee)?;
    ee.zeroize();
    let mut se = C::x25519(&local.parsed, &msg.ephemeral);
    sym.mix_dh(&se)?;
    se.zeroize();
    let mut k = sym.mix_psk(&peer.psk.0);
    let r = sym.decrypt::<C>(&k, &mut [], &msg.encrypted_nothing);
    k.zeroize();
    r?;
    Ok(split::<false>(&sym.ck))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::RustCrypto;
    use crate::time::WallTime;
    use rand_core::SeedableRng;

    #[test]
    fn both_sides_derive_matching_keys_with_and_without_psk() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        for psk in [[0u8; 32], [0x42; 32]] {
            let a = LocalStatic::<RustCrypto>::new(StaticSecret::random(&mut rng));
            let b = LocalStatic::<RustCrypto>::new(StaticSecret::random(&mut rng));
            let a_sees_b = PeerStatic::new::<RustCrypto>(&a, b.public, PresharedKey(psk));
            let b_sees_a = PeerStatic::new::<RustCrypto>(&b, a.public, PresharedKey(psk));
            let ts = Tai64N::from_wall(WallTime::new(100, 5));
            let (init, ist) = create_initiation::<RustCrypto>(&a, &a_sees_b, ts, 11, &mut rng).unwrap();
            let mut pend = open_initiation::<RustCrypto>(&b, &init).unwrap();
            assert_eq!(pend.remote_static, a.public);
            assert_eq!(finish_initiation::<RustCrypto>(&mut pend, &b_sees_a, &init).unwrap(), ts);
            let (resp, bk) = create_response::<RustCrypto>(pend, &b_sees_a, 22, &mut rng).unwrap();
            assert_eq!(resp.receiver, 11);
            let ak = consume_response::<RustCrypto>(&ist, &a, &a_sees_b, &resp).unwrap();
            assert_eq!(ak.send, bk.recv);
            assert_eq!(ak.recv, bk.send);
            assert_ne!(ak.send, ak.recv);
        }
    }

    #[test]
    fn psk_mismatch_and_tampering_fail() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(8);
        let a = LocalStatic::<RustCrypto>::new(StaticSecret::random(&mut rng));
        let b = LocalStatic::<RustCrypto>::new(StaticSecret::random(&mut rng));
        let a_sees_b = PeerStatic::new::<RustCrypto>(&a, b.public, PresharedKey([1; 32]));
        let b_sees_a = PeerStatic::new::<RustCrypto>(&b, a.public, PresharedKey([2; 32]));
        let ts = Tai64N::from_wall(WallTime::new(100, 5));
        let (init, ist) = create_initiation::<RustCrypto>(&a, &a_sees_b, ts, 1, &mut rng).unwrap();
        let mut bad = init.clone();
        bad.encrypted_static[3] ^= 1;
        assert_eq!(open_initiation::<RustCrypto>(&b, &bad).unwrap_err(), HandshakeError::Decrypt);
        let mut bad = init.clone();
        bad.ephemeral = [0; 32];
        assert!(open_initiation::<RustCrypto>(&b, &bad).is_err());
        let mut pend = open_initiation::<RustCrypto>(&b, &init).unwrap();
        finish_initiation::<RustCrypto>(&mut pend, &b_sees_a, &init).unwrap();
        let (resp, _) = create_response::<RustCrypto>(pend, &b_sees_a, 2, &mut rng).unwrap();
        assert_eq!(consume_response::<RustCrypto>(&ist, &a, &a_sees_b, &resp).unwrap_err(), HandshakeError::Decrypt);
    }
}
