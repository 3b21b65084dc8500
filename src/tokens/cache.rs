//! A bounded in-process cache of tokens whose signature and claims have already been verified,
//! keyed by the SHA-256 of the whole token. One token is verified many times in its life (every
//! request a service serves), so most Verify calls skip the signature check. Time (`exp`, `nbf`,
//! `iat`) and revocation are still checked on every call; only the pure function "is this string
//! a well-formed token signed by our key" is remembered. Failures are not cached.

use quick_cache::sync::Cache;
use sha2::{Digest as _, Sha256};

use super::DecodedToken;
use crate::domain::AccessToken;

/// Default number of tokens remembered (about 100 bytes each).
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Tokens already verified, and what they say.
pub struct VerifiedTokenCache {
    /// `None` when disabled (capacity 0).
    entries: Option<Cache<[u8; 32], DecodedToken>>,
    hits: metrics::Counter,
    misses: metrics::Counter,
}

impl VerifiedTokenCache {
    /// A cache holding up to `capacity` tokens; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: (capacity > 0).then(|| Cache::new(capacity)),
            hits: metrics::counter!(crate::metrics::VERIFY_CACHE, "result" => "hit"),
            misses: metrics::counter!(crate::metrics::VERIFY_CACHE, "result" => "miss"),
        }
    }

    /// The decoded token, from the cache or from `decode` (whose successes are remembered).
    pub fn get_or_decode<E>(
        &self,
        token: &AccessToken,
        decode: impl FnOnce(&AccessToken) -> Result<DecodedToken, E>,
    ) -> Result<DecodedToken, E> {
        let Some(entries) = &self.entries else {
            return decode(token);
        };
        let key: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        if let Some(decoded) = entries.get(&key) {
            self.hits.increment(1);
            return Ok(decoded);
        }
        self.misses.increment(1);
        let decoded = decode(token)?;
        entries.insert(key, decoded);
        Ok(decoded)
    }

    /// Forgets every token.
    pub fn clear(&self) {
        if let Some(entries) = &self.entries {
            entries.clear();
        }
    }

    /// Tokens currently remembered.
    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, Cache::len)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, time::Duration};

    use super::*;
    use crate::{
        domain::{SessionId, UserId},
        tokens::{SigningKeyMaterial, TokenAuthority, TokenError},
    };

    fn authority() -> TokenAuthority {
        TokenAuthority::new(
            SigningKeyMaterial::Hs256("0123456789abcdef0123456789abcdef".to_owned().into()),
            "authd",
            "authd",
            Duration::from_secs(900),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    #[test]
    fn a_verified_token_is_decoded_once() {
        let tokens = authority();
        let issued = tokens
            .issue(UserId::generate(), SessionId::generate(), 1_000)
            .unwrap();
        let cache = VerifiedTokenCache::new(10);
        let decodes = Cell::new(0);
        for _ in 0..3 {
            let decoded = cache
                .get_or_decode(&issued.token, |t| {
                    decodes.set(decodes.get() + 1);
                    tokens.decode(t)
                })
                .unwrap();
            assert_eq!(decoded.claims, issued.claims);
        }
        assert_eq!(decodes.get(), 1);
    }

    #[test]
    fn failures_are_not_remembered_and_a_cached_token_still_expires() {
        let tokens = authority();
        let cache = VerifiedTokenCache::new(10);
        let forged = AccessToken::new("a.b.c").unwrap();
        assert_eq!(
            cache
                .get_or_decode(&forged, |t| tokens.decode(t))
                .unwrap_err(),
            TokenError::Invalid
        );
        assert!(cache.is_empty());
        let issued = tokens
            .issue(UserId::generate(), SessionId::generate(), 1_000)
            .unwrap();
        let decoded = cache
            .get_or_decode(&issued.token, |t| tokens.decode(t))
            .unwrap();
        // The cache holds claims, not a verdict on time: expiry is checked by the caller each time.
        assert_eq!(
            tokens.check_time(&decoded, 1_000 + 900 + 6),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn capacity_zero_disables_the_cache() {
        let tokens = authority();
        let issued = tokens
            .issue(UserId::generate(), SessionId::generate(), 1_000)
            .unwrap();
        let cache = VerifiedTokenCache::new(0);
        cache
            .get_or_decode(&issued.token, |t| tokens.decode(t))
            .unwrap();
        assert!(cache.is_empty());
    }
}
