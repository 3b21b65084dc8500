//! The key ring: every published key, each with the second it starts signing at. Exactly one key
//! signs at any moment — the one that started most recently (ties: the greater `kid`) — and every
//! key in the ring verifies. Which key signs is a function of the ring and the clock only, so
//! instances reading the same keys directory agree. No file I/O (`directory.rs` reads the files).

use jsonwebtoken::{Algorithm, DecodingKey, Header};

use super::keys::{SigningKeyMaterial, TokenSigner};
use crate::clock::UnixSeconds;

/// A key and when it starts signing (`UnixSeconds::MIN`: always).
pub struct ScheduledKey {
    /// The key.
    pub material: SigningKeyMaterial,
    /// The first second tokens are signed with it.
    pub starts_at: UnixSeconds,
}

/// One key of the ring, ready to sign and verify.
pub(super) struct RingKey {
    pub kid: String,
    pub signer: TokenSigner,
    pub decoding: DecodingKey,
    pub public_jwk: Option<serde_json::Value>,
    /// The JWS protected header of tokens this key signs, base64url-encoded once.
    pub encoded_header: String,
    pub starts_at: UnixSeconds,
}

/// Every published key, in signing order.
pub(super) struct KeyRing {
    /// Sorted by (`starts_at`, `kid`).
    keys: Vec<RingKey>,
    algorithm: Algorithm,
    /// Counts the replacements that removed a key: a token decoded with a ring of an earlier
    /// epoch may have been verified with a key that is gone.
    pub epoch: u64,
}

impl KeyRing {
    /// The ring of `keys` (at least one; all of one algorithm; duplicates by `kid` dropped).
    pub fn new(keys: Vec<ScheduledKey>, typ: &str) -> Result<Self, anyhow::Error> {
        use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
        let mut ring: Vec<RingKey> = Vec::with_capacity(keys.len());
        let mut algorithm = None;
        for key in keys {
            let jwt = key.material.into_jwt_keys()?;
            if *algorithm.get_or_insert(jwt.algorithm) != jwt.algorithm {
                anyhow::bail!("the signing keys mix algorithms");
            }
            if ring.iter().any(|other| other.kid == jwt.kid) {
                continue;
            }
            let mut header = Header::new(jwt.algorithm);
            header.typ = Some(typ.to_owned());
            header.kid = Some(jwt.kid.clone());
            ring.push(RingKey {
                encoded_header: URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
                kid: jwt.kid,
                signer: jwt.signer,
                decoding: jwt.decoding,
                public_jwk: jwt.public_jwk,
                starts_at: key.starts_at,
            });
        }
        let algorithm = algorithm.ok_or_else(|| anyhow::anyhow!("no signing key"))?;
        ring.sort_by(|a, b| (a.starts_at, &a.kid).cmp(&(b.starts_at, &b.kid)));
        Ok(Self {
            keys: ring,
            algorithm,
            epoch: 0,
        })
    }

    /// The algorithm of every key.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The key that signs at `now`: the latest to have started; before any has, the first.
    pub fn signing(&self, now: UnixSeconds) -> &RingKey {
        self.keys
            .iter()
            .rev()
            .find(|key| key.starts_at <= now)
            .unwrap_or(&self.keys[0])
    }

    /// The key named `kid`, if it is in the ring.
    pub fn get(&self, kid: &str) -> Option<&RingKey> {
        self.keys.iter().find(|key| key.kid == kid)
    }

    /// Every key, in signing order.
    pub fn keys(&self) -> &[RingKey] {
        &self.keys
    }

    /// Whether some `kid` of this ring is not in `next`.
    pub fn loses_keys_in(&self, next: &KeyRing) -> bool {
        self.keys.iter().any(|key| next.get(&key.kid).is_none())
    }
}
