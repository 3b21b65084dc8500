//! Issuing and verifying with one key. Keys, the header and the `Validation` are built once at
//! start-up.
//!
//! Verification pins the one configured algorithm and checks everything jsonwebtoken leaves to the
//! caller: `typ`, `kid`, the presence and form of `sub`/`jti`/`iat`, and (here, against an explicit
//! `now`) `exp`, `nbf` and `iat` with the clock leeway. `jwk`/`jku`/`x5u` headers are ignored: the
//! key is never taken from the token.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

use super::{
    IssuedToken, SigningKeyMaterial, TokenClaims, TokenError,
    ring::{KeyRing, ScheduledKey},
};
use crate::{
    clock::UnixSeconds,
    domain::{AccessToken, Jti, SessionId, UserId},
};

/// The earliest and latest seconds a google.protobuf.Timestamp can hold (0001-01-01T00:00:00Z and
/// 9999-12-31T23:59:59Z).
const MIN_TIMESTAMP: UnixSeconds = -62_135_596_800;
const MAX_TIMESTAMP: UnixSeconds = 253_402_300_799;

/// The JWT `typ` of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Tokens longer than this are refused before any parsing; ours are about 400 bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// What replacing the keys changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysReplaced {
    /// Whether the ring differs at all.
    pub changed: bool,
    /// Whether a key that verified before no longer does.
    pub lost_keys: bool,
}

/// The claims as they travel in the JWT.
#[derive(Debug, Serialize, Deserialize)]
struct WireClaims {
    iss: String,
    aud: String,
    sub: String,
    iat: i64,
    exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    jti: String,
    /// The session (OpenID Connect's `sid`); absent in tokens issued before sessions existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
}

/// Issues and verifies access tokens with a key ring: the key signing at the moment of issue
/// signs; a token verifies with the ring's key its `kid` names.
pub struct TokenAuthority {
    algorithm: Algorithm,
    /// Replaced whole when the keys directory changes; read briefly by each issue and decode.
    ring: RwLock<Arc<KeyRing>>,
    /// The epoch of the ring in place (read without the lock on every Verify).
    epoch: AtomicU64,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_seconds: i64,
    leeway_seconds: i64,
}

impl TokenAuthority {
    /// An authority with one key, signing always.
    pub fn new(
        key: SigningKeyMaterial,
        issuer: &str,
        audience: &str,
        ttl: Duration,
        leeway: Duration,
    ) -> Result<Self, anyhow::Error> {
        let key = ScheduledKey {
            material: key,
            starts_at: UnixSeconds::MIN,
        };
        Self::with_keys(vec![key], issuer, audience, ttl, leeway)
    }

    /// An authority over `keys` (at least one); builds the keys, headers and validation once.
    pub fn with_keys(
        keys: Vec<ScheduledKey>,
        issuer: &str,
        audience: &str,
        ttl: Duration,
        leeway: Duration,
    ) -> Result<Self, anyhow::Error> {
        let ring = KeyRing::new(keys, ACCESS_TOKEN_TYP)?;
        let algorithm = ring.algorithm();
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Time is checked in `check_time` against an explicit `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;

        Ok(Self {
            algorithm,
            ring: RwLock::new(Arc::new(ring)),
            epoch: AtomicU64::new(0),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_seconds: i64::try_from(ttl.as_secs())?,
            leeway_seconds: i64::try_from(leeway.as_secs())?,
        })
    }

    /// Replaces the keys (of the same algorithm) with `keys`; whether a key that verified before
    /// no longer does (tokens remembered as verified must then be forgotten).
    pub fn replace_keys(&self, keys: Vec<ScheduledKey>) -> Result<KeysReplaced, anyhow::Error> {
        let mut next = KeyRing::new(keys, ACCESS_TOKEN_TYP)?;
        if next.algorithm() != self.algorithm {
            anyhow::bail!("the new signing keys are not {:?} keys", self.algorithm);
        }
        let mut ring = self
            .ring
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let same = ring.keys().len() == next.keys().len()
            && ring
                .keys()
                .iter()
                .zip(next.keys())
                .all(|(a, b)| a.kid == b.kid && a.starts_at == b.starts_at);
        let replaced = KeysReplaced {
            changed: !same,
            lost_keys: ring.loses_keys_in(&next),
        };
        if !same {
            next.epoch = ring.epoch + u64::from(replaced.lost_keys);
            self.epoch.store(next.epoch, Ordering::Release);
            *ring = Arc::new(next);
        }
        Ok(replaced)
    }

    /// Whether `token` was decoded with keys that all still verify: false when a key was removed
    /// since (the token must be decoded again; its key may be gone).
    pub fn decoded_with_current_keys(&self, token: &DecodedToken) -> bool {
        token.key_epoch == self.epoch.load(Ordering::Acquire)
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.ring
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The `kid` of tokens issued at `now`.
    pub fn signing_key_id(&self, now: UnixSeconds) -> String {
        self.ring().signing(now).kid.clone()
    }

    /// The `kid` of the key that signs last (the newest, once every scheduled key has started);
    /// with one key, its `kid`.
    pub fn key_id(&self) -> String {
        self.signing_key_id(UnixSeconds::MAX)
    }

    /// Every key of the ring: its `kid` and the second it starts signing at, in signing order.
    pub fn schedule(&self) -> Vec<(String, UnixSeconds)> {
        self.ring()
            .keys()
            .iter()
            .map(|key| (key.kid.clone(), key.starts_at))
            .collect()
    }

    /// The public keys tokens may be verified with, as RFC 7517 JWKs (none for HS256: a shared
    /// secret is never published).
    pub fn published_keys(&self) -> Vec<serde_json::Value> {
        self.ring()
            .keys()
            .iter()
            .filter_map(|key| key.public_jwk.clone())
            .collect()
    }

    /// The `iss` of issued tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The access token lifetime in seconds.
    pub fn ttl_seconds(&self) -> i64 {
        self.ttl_seconds
    }

    /// The clock leeway in seconds.
    pub fn leeway_seconds(&self) -> i64 {
        self.leeway_seconds
    }

    /// Issues a token for `user_id` in `session_id`, valid from `now` for the configured lifetime.
    pub fn issue(
        &self,
        user_id: UserId,
        session_id: SessionId,
        now: UnixSeconds,
    ) -> Result<IssuedToken, anyhow::Error> {
        let claims = TokenClaims {
            user_id,
            jti: Jti::generate(),
            session_id: Some(session_id),
            issued_at: now,
            expires_at: now + self.ttl_seconds,
        };
        let wire = WireClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            iat: claims.issued_at,
            exp: claims.expires_at,
            nbf: None,
            jti: claims.jti.to_string(),
            sid: Some(session_id.to_string()),
        };
        // JWS compact serialization (RFC 7515 §7.1), as jsonwebtoken's `encode` builds it.
        let ring = self.ring();
        let key = ring.signing(now);
        let mut jwt = key.encoded_header.clone();
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(&wire)?, &mut jwt);
        let signature = key.signer.sign(jwt.as_bytes())?;
        jwt.push('.');
        jwt.push_str(&signature);
        let token = AccessToken::new(jwt)
            .ok_or_else(|| anyhow::anyhow!("jsonwebtoken produced an empty token"))?;
        Ok(IssuedToken { token, claims })
    }

    /// Verifies everything about a token: signature, header, claims and time.
    pub fn verify(&self, token: &AccessToken, now: UnixSeconds) -> Result<TokenClaims, TokenError> {
        let claims = self.decode(token)?;
        self.check_time(&claims, now)?;
        Ok(claims.claims)
    }

    /// Verifies signature, header and claims, but not time: Logout accepts expired tokens.
    pub fn decode(&self, token: &AccessToken) -> Result<DecodedToken, TokenError> {
        let raw = token.expose();
        if raw.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        // The key is the ring's key the header names; a `kid` outside the ring (pruned, or never
        // ours) is invalid.
        let header = jsonwebtoken::decode_header(raw).map_err(|_| TokenError::Invalid)?;
        let ring = self.ring();
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| ring.get(kid))
            .ok_or(TokenError::Invalid)?;
        let data = jsonwebtoken::decode::<WireClaims>(raw, &key.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        let typ_ok = data.header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYP)
                || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok || data.header.kid.as_deref() != Some(key.kid.as_str()) {
            return Err(TokenError::Invalid);
        }
        // We understand no JWS extensions, so any `crit` must be refused (RFC 7515 §4.1.11).
        if data.header.crit.is_some() {
            return Err(TokenError::Invalid);
        }
        let wire = data.claims;
        let user_id = UserId::parse(&wire.sub).ok_or(TokenError::Invalid)?;
        let jti = Jti::parse(&wire.jti).ok_or(TokenError::Invalid)?;
        let session_id = match &wire.sid {
            None => None,
            Some(sid) => Some(SessionId::parse(sid).ok_or(TokenError::Invalid)?),
        };
        if !self.plausible_lifetime(wire.iat, wire.exp) {
            return Err(TokenError::Invalid);
        }
        Ok(DecodedToken {
            claims: TokenClaims {
                user_id,
                jti,
                session_id,
                issued_at: wire.iat,
                expires_at: wire.exp,
            },
            not_before: wire.nbf,
            key_epoch: ring.epoch,
        })
    }

    /// Whether `iat`..`exp` is a lifetime this authority could have issued: not negative, no
    /// longer than the configured TTL plus the leeway (a token signed with our key but living
    /// until year 9999 was not made by `issue`), and both ends within protobuf Timestamp's range,
    /// so that Verify can always answer them.
    fn plausible_lifetime(&self, iat: UnixSeconds, exp: UnixSeconds) -> bool {
        let longest = self.ttl_seconds.saturating_add(self.leeway_seconds);
        let representable = |t: UnixSeconds| (MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&t);
        exp >= iat && exp.saturating_sub(iat) <= longest && representable(iat) && representable(exp)
    }

    /// Checks `exp`, `nbf` and `iat` against `now`, allowing the leeway.
    pub fn check_time(&self, token: &DecodedToken, now: UnixSeconds) -> Result<(), TokenError> {
        if token.claims.issued_at > now.saturating_add(self.leeway_seconds) {
            return Err(TokenError::Invalid);
        }
        if token
            .not_before
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway_seconds))
        {
            return Err(TokenError::Invalid);
        }
        if self.is_expired(&token.claims, now) {
            return Err(TokenError::Expired);
        }
        Ok(())
    }

    /// Whether a token is past `exp + leeway`.
    pub fn is_expired(&self, claims: &TokenClaims, now: UnixSeconds) -> bool {
        now > self.accepted_until(claims)
    }

    /// The last second at which the token is still accepted: `exp + leeway`. A revocation must
    /// live at least this long so that a revoked token cannot come back inside the leeway window.
    pub fn accepted_until(&self, claims: &TokenClaims) -> UnixSeconds {
        claims.expires_at.saturating_add(self.leeway_seconds)
    }
}

/// A token whose signature and claims are valid, before its time is checked.
#[derive(Debug, Clone, Copy)]
pub struct DecodedToken {
    /// Its claims.
    pub claims: TokenClaims,
    not_before: Option<UnixSeconds>,
    /// The epoch of the key ring it was verified with.
    key_epoch: u64,
}
