//! What a cluster's name and secret turn into, and the membership proof.
//!
//! From `(name, secret)` every member derives the same two values:
//!
//! - a Curve25519 key pair `(c, C)`: `C` is the cluster's identity at the
//!   Nucleus (the name never travels); membership is proven by an HMAC keyed
//!   with `X25519(c, N)`, where `N` is the Nucleus's static public key. The
//!   Nucleus computes the same key as `X25519(n, C)`, so it verifies proofs
//!   while knowing only the public `C`: it never holds anything from which
//!   the secret or the members' pairwise keys follow (short of guessing a
//!   weak secret offline, which is why secrets should be random).
//! - `psk_root`, from which each pair of members derives the WireGuard
//!   preshared key of their tunnel, so traffic between members is gated by
//!   the secret too, and the Nucleus cannot compute it.
//!
//! Binding `N` into the proof key makes a proof useless at any other
//! Nucleus (an impostor edges were tricked into trusting cannot replay it);
//! binding the edge's key, the cluster, the VIP and the Nucleus's one-time
//! challenge makes it useless for any other request.

use core::net::IpAddr;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::wire::Challenge;
use crate::crypto::CryptoProvider;
use crate::keys::{PresharedKey, PublicKey, StaticSecret};
use crate::noise::kdf::{hash2, hmac, kdf};

const LABEL_CLUSTER: &[u8] = b"omni cluster v1";
const LABEL_ID: &[u8] = b"omni cluster id";
const LABEL_REGISTER: &[u8] = b"omni register v1";
const LABEL_REGISTER_DUAL: &[u8] = b"omni register dual v1";
const LABEL_PAIR: &[u8] = b"omni pair psk v1";

/// The keys every member of a cluster derives from its name and secret.
/// Wiped on drop; `Debug` shows only the public key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ClusterSecret {
    private: StaticSecret,
    #[zeroize(skip)]
    public: PublicKey,
    psk_root: [u8; 32],
}

impl core::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClusterSecret").field("public", &self.public).finish_non_exhaustive()
    }
}

impl ClusterSecret {
    /// Derives the cluster keys: `salt = HASH("omni cluster v1" || name)`,
    /// `(c, psk_root) = KDF2(salt, secret)`, `C = X25519(c, 9)`.
    pub fn derive<C: CryptoProvider>(name: &[u8], secret: &[u8]) -> Self {
        let salt = hash2(LABEL_CLUSTER, name);
        let [mut c, psk_root] = kdf::<2>(&salt, secret);
        let private = StaticSecret::from_bytes(c);
        c.zeroize();
        let public = private.public_key::<C>();
        ClusterSecret { private, public, psk_root }
    }

    /// The cluster's public key `C`: its identity at the Nucleus.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// `BLAKE2s("omni cluster id" || C)`: a printable, non-secret identifier.
    pub fn id(&self) -> [u8; 32] {
        cluster_id(&self.public)
    }

    /// The proof key shared with the Nucleus `nucleus`: `X25519(c, N)`.
    /// `None` for a low-order Nucleus key.
    pub fn auth_key<C: CryptoProvider>(&self, nucleus: &PublicKey) -> Option<AuthKey> {
        let shared = C::x25519(&C::x25519_secret(self.private.bytes()), &nucleus.0);
        AuthKey::new(shared)
    }

    /// The WireGuard preshared key between members `a` and `b` (symmetric
    /// in `a`, `b`): `HMAC(psk_root, "omni pair psk v1" || min || max)`.
    pub fn pair_psk(&self, a: &PublicKey, b: &PublicKey) -> PresharedKey {
        let (lo, hi) = if a.0 <= b.0 { (a, b) } else { (b, a) };
        PresharedKey::from_bytes(hmac(&self.psk_root, &[LABEL_PAIR, &lo.0, &hi.0]))
    }
}

/// `BLAKE2s("omni cluster id" || C)`.
pub fn cluster_id(cluster: &PublicKey) -> [u8; 32] {
    hash2(LABEL_ID, &cluster.0)
}

/// The key membership proofs are made with (`X25519(c, N) = X25519(n, C)`).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AuthKey([u8; 32]);

impl core::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AuthKey(<redacted>)")
    }
}

impl AuthKey {
    fn new(mut shared: [u8; 32]) -> Option<Self> {
        if bool::from(shared.ct_eq(&[0u8; 32])) {
            return None;
        }
        let k = AuthKey(shared);
        shared.zeroize();
        Some(k)
    }

    /// The Nucleus's side: `X25519(n, C)`. `None` for a low-order `C`.
    pub fn for_nucleus<C: CryptoProvider>(nucleus: &StaticSecret, cluster: &PublicKey) -> Option<Self> {
        AuthKey::new(C::x25519(&C::x25519_secret(nucleus.bytes()), &cluster.0))
    }

    /// `HMAC(K, "omni register v1" || edge || nucleus || cluster || challenge || vip)`;
    /// with a second VIP (dual stack), `HMAC(K, "omni register dual v1" || edge ||
    /// nucleus || cluster || challenge || family || vip || family || vip2)`
    /// (families as bytes 4 or 6, so no pair of VIPs reads as another).
    #[allow(clippy::too_many_arguments)]
    pub fn proof(
        &self,
        edge: &PublicKey,
        nucleus: &PublicKey,
        cluster: &PublicKey,
        challenge: &Challenge,
        vip: IpAddr,
        vip2: Option<IpAddr>,
    ) -> [u8; 32] {
        let first = tagged(vip);
        let Some(second) = vip2.map(tagged) else {
            let bytes = first.get(1..tagged_len(vip)).unwrap_or(&[]);
            return hmac(&self.0, &[LABEL_REGISTER, &edge.0, &nucleus.0, &cluster.0, challenge, bytes]);
        };
        let a = first.get(..tagged_len(vip)).unwrap_or(&[]);
        let b = second.get(..vip2.map_or(0, tagged_len)).unwrap_or(&[]);
        hmac(&self.0, &[LABEL_REGISTER_DUAL, &edge.0, &nucleus.0, &cluster.0, challenge, a, b])
    }

    /// Checks a proof in constant time.
    #[allow(clippy::too_many_arguments)]
    pub fn verify(
        &self,
        proof: &[u8; 32],
        edge: &PublicKey,
        nucleus: &PublicKey,
        cluster: &PublicKey,
        challenge: &Challenge,
        vip: IpAddr,
        vip2: Option<IpAddr>,
    ) -> bool {
        self.proof(edge, nucleus, cluster, challenge, vip, vip2).ct_eq(proof).into()
    }
}

/// `family (4 or 6) || octets`, in a buffer of the longest; see [`tagged_len`].
fn tagged(ip: IpAddr) -> [u8; 17] {
    let mut b = [0u8; 17];
    let (tag, rest) = b.split_at_mut(1);
    match ip {
        IpAddr::V4(a) => {
            tag.copy_from_slice(&[4]);
            if let Some(d) = rest.get_mut(..4) {
                d.copy_from_slice(&a.octets());
            }
        }
        IpAddr::V6(a) => {
            tag.copy_from_slice(&[6]);
            if let Some(d) = rest.get_mut(..16) {
                d.copy_from_slice(&a.octets());
            }
        }
    }
    b
}

/// The length of [`tagged`]'s output that is used.
fn tagged_len(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => 5,
        IpAddr::V6(_) => 17,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::RustCrypto;

    #[test]
    fn both_sides_agree_and_everything_is_bound() {
        let a = ClusterSecret::derive::<RustCrypto>(b"lab", b"correct horse battery staple");
        let same = ClusterSecret::derive::<RustCrypto>(b"lab", b"correct horse battery staple");
        let other_secret = ClusterSecret::derive::<RustCrypto>(b"lab", b"wrong");
        let other_name = ClusterSecret::derive::<RustCrypto>(b"lab2", b"correct horse battery staple");
        assert_eq!(a.public(), same.public());
        assert_ne!(a.public(), other_secret.public());
        assert_ne!(a.public(), other_name.public());
        assert_eq!(a.id(), cluster_id(&a.public()));

        let n = StaticSecret::from_bytes([7; 32]);
        let n_pub = n.public_key::<RustCrypto>();
        let edge = PublicKey([1; 32]);
        let vip: IpAddr = "10.200.0.1".parse().unwrap();
        let ch = [5u8; 16];
        let k_edge = a.auth_key::<RustCrypto>(&n_pub).unwrap();
        let k_nucleus = AuthKey::for_nucleus::<RustCrypto>(&n, &a.public()).unwrap();
        let proof = k_edge.proof(&edge, &n_pub, &a.public(), &ch, vip, None);
        assert!(k_nucleus.verify(&proof, &edge, &n_pub, &a.public(), &ch, vip, None));
        // Any other key, Nucleus, cluster, challenge or VIP: refused.
        assert!(!k_nucleus.verify(&proof, &PublicKey([2; 32]), &n_pub, &a.public(), &ch, vip, None));
        assert!(!k_nucleus.verify(&proof, &edge, &PublicKey([3; 32]), &a.public(), &ch, vip, None));
        assert!(!k_nucleus.verify(&proof, &edge, &n_pub, &other_secret.public(), &ch, vip, None));
        assert!(!k_nucleus.verify(&proof, &edge, &n_pub, &a.public(), &[6; 16], vip, None));
        assert!(!k_nucleus.verify(&proof, &edge, &n_pub, &a.public(), &ch, "10.200.0.2".parse().unwrap(), None));
        // A second VIP is bound too: dropping, adding or changing it breaks the proof.
        let v6: IpAddr = "fd00:200::1".parse().unwrap();
        let dual = k_edge.proof(&edge, &n_pub, &a.public(), &ch, vip, Some(v6));
        assert!(k_nucleus.verify(&dual, &edge, &n_pub, &a.public(), &ch, vip, Some(v6)));
        assert!(!k_nucleus.verify(&dual, &edge, &n_pub, &a.public(), &ch, vip, None));
        assert!(!k_nucleus.verify(&proof, &edge, &n_pub, &a.public(), &ch, vip, Some(v6)));
        let other6 = "fd00:200::2".parse().ok();
        assert!(!k_nucleus.verify(&dual, &edge, &n_pub, &a.public(), &ch, vip, other6));
        assert!(!k_nucleus.verify(&dual, &edge, &n_pub, &a.public(), &ch, v6, Some(vip)), "order matters");
        // A wrong secret gives a different key (a different cluster).
        let k_wrong = other_secret.auth_key::<RustCrypto>(&n_pub).unwrap();
        let p = k_wrong.proof(&edge, &n_pub, &a.public(), &ch, vip, None);
        assert!(!k_nucleus.verify(&p, &edge, &n_pub, &a.public(), &ch, vip, None));
        // Low-order points are refused.
        assert!(a.auth_key::<RustCrypto>(&PublicKey([0; 32])).is_none());
        assert!(AuthKey::for_nucleus::<RustCrypto>(&n, &PublicKey([0; 32])).is_none());

        // Pairwise PSKs are symmetric, per pair, and per cluster.
        let (x, y, z) = (PublicKey([1; 32]), PublicKey([2; 32]), PublicKey([3; 32]));
        assert_eq!(a.pair_psk(&x, &y).to_hex().as_str(), a.pair_psk(&y, &x).to_hex().as_str());
        assert_ne!(a.pair_psk(&x, &y).to_hex().as_str(), a.pair_psk(&x, &z).to_hex().as_str());
        assert_ne!(a.pair_psk(&x, &y).to_hex().as_str(), other_secret.pair_psk(&x, &y).to_hex().as_str());
        assert!(!std::format!("{a:?}").contains(a.pair_psk(&x, &y).to_hex().as_str()));
    }
}
