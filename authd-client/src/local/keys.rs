//! authd's signing keys as its JWKS publishes them: fetched over HTTP(S), refreshed when a token
//! names a `kid` not seen yet (at most once per `min_refresh`), and on a fixed period so removed
//! keys stop verifying. Only Ed25519 keys are taken; anything else in the set is ignored.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::JwksTls;
use crate::verifier::BuildError;
use jsonwebtoken::{
    DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk},
};

/// The keys, by `kid`.
pub(crate) type KeysById = HashMap<String, DecodingKey>;

/// Why the keys could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeysError {
    #[error("fetching the JWKS: {0}")]
    Fetch(#[from] reqwest::Error),
    #[error("the JWKS is not a JSON key set")]
    NotAKeySet,
    #[error("the JWKS holds no Ed25519 key")]
    NoUsableKey,
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
}

/// The largest JWKS document read (authd's holds a handful of keys in well under 4 KiB).
const MAX_JWKS_BYTES: usize = 1 << 20;

/// What [`Keys::refresh_for`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KidLookup {
    /// The kid is in the set now.
    Known,
    /// The set was loaded (now or recently) and does not hold it.
    Unknown,
    /// The set could not be loaded, so the kid's fate is unknown.
    Unavailable,
}

pub(crate) struct Keys {
    url: reqwest::Url,
    http: reqwest::Client,
    min_refresh: Duration,
    current: RwLock<Option<Arc<KeysById>>>,
    /// Counts the replacements that removed a key: a token verified under an older epoch must
    /// be verified again.
    epoch: AtomicU64,
    /// One refresh at a time; holds when the last attempt started and whether it succeeded.
    refreshing: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl Keys {
    pub(crate) fn new(
        url: reqwest::Url,
        min_refresh: Duration,
        tls: &JwksTls,
    ) -> Result<Self, BuildError> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .no_proxy();
        if let Some(pem) = &tls.ca_certificate {
            let certificates =
                reqwest::Certificate::from_pem_bundle(pem).map_err(BuildError::Http)?;
            if certificates.is_empty() {
                return Err(BuildError::JwksTls(
                    "the CA certificate PEM holds no certificate".into(),
                ));
            }
            for certificate in certificates {
                http = http.add_root_certificate(certificate);
            }
        }
        if let Some(pem) = &tls.client_identity {
            http = http.identity(reqwest::Identity::from_pem(pem).map_err(BuildError::Http)?);
        }
        if tls.ca_certificate.is_some() || tls.client_identity.is_some() {
            if url.scheme() != "https" {
                return Err(BuildError::JwksTls(format!(
                    "TLS settings given for {url}, which is not https: the keys would come in plaintext"
                )));
            }
            http = http.https_only(true);
        }
        let http = http.build().map_err(BuildError::Http)?;
        Ok(Self {
            url,
            http,
            min_refresh,
            current: RwLock::new(None),
            epoch: AtomicU64::new(0),
            refreshing: tokio::sync::Mutex::new(None),
        })
    }

    /// The keys in place; `None` before the first successful fetch.
    pub(crate) fn current(&self) -> Option<Arc<KeysById>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The keys in place with their epoch, read together.
    pub(crate) fn current_with_epoch(&self) -> (Option<Arc<KeysById>>, u64) {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        (current.clone(), self.epoch.load(Ordering::Acquire))
    }

    /// The epoch of the keys in place.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Fetches the set now and puts it in place. Returns whether a key that verified before no
    /// longer does (so tokens verified with it must be forgotten).
    pub(crate) async fn reload(&self) -> Result<bool, KeysError> {
        let mut refreshing = self.refreshing.lock().await;
        let outcome = self.fetch().await;
        *refreshing = Some((Instant::now(), outcome.is_ok()));
        let fetched = outcome?;
        Ok(self.replace(fetched))
    }

    /// After a token named `kid` that is not in the set: refetches the set unless that was
    /// tried less than `min_refresh` ago, and says whether `kid` is known now. The second return
    /// says whether a key went away.
    pub(crate) async fn refresh_for(&self, kid: &str) -> (KidLookup, bool) {
        let mut refreshing = self.refreshing.lock().await;
        // Another caller may have refreshed while this one waited for the lock.
        if self.current().is_some_and(|keys| keys.contains_key(kid)) {
            return (KidLookup::Known, false);
        }
        if let Some((at, succeeded)) = *refreshing
            && at.elapsed() < self.min_refresh
        {
            // A key published within the window is not seen until it ends: authd publishes keys
            // ahead of using them (`authd keys rotate --lead`, 10 min by default), and the set
            // is fetched every few minutes anyway, so in practice a new key is known in time.
            let lookup = if succeeded {
                KidLookup::Unknown
            } else {
                KidLookup::Unavailable
            };
            return (lookup, false);
        }
        let outcome = self.fetch().await;
        *refreshing = Some((Instant::now(), outcome.is_ok()));
        match outcome {
            Ok(fetched) => {
                let known = fetched.contains_key(kid);
                let lost = self.replace(fetched);
                (
                    if known {
                        KidLookup::Known
                    } else {
                        KidLookup::Unknown
                    },
                    lost,
                )
            }
            Err(error) => {
                tracing::warn!(%error, "authd-client: could not refresh authd's JWKS");
                (KidLookup::Unavailable, false)
            }
        }
    }

    fn replace(&self, fetched: KeysById) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        // A key is lost when its kid is gone, or now names other key material (a JWKS that
        // reuses kids): what it verified must be verified again.
        let lost = current.as_ref().is_some_and(|old| {
            old.iter().any(|(kid, key)| {
                fetched
                    .get(kid)
                    .is_none_or(|new| new.try_get_as_bytes().ok() != key.try_get_as_bytes().ok())
            })
        });
        *current = Some(Arc::new(fetched));
        if lost {
            // Under the write lock, so that no reader pairs the new keys with the old epoch.
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        lost
    }

    async fn fetch(&self) -> Result<KeysById, KeysError> {
        let mut response = self
            .http
            .get(self.url.clone())
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await?
            .error_for_status()?;
        if response
            .content_length()
            .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
        {
            return Err(KeysError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(KeysError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        parse_key_set(&body)
    }
}

/// The Ed25519 keys of a JWKS document, by `kid`. Keys of other types, with another `alg`, meant
/// for encryption, without a `kid`, or malformed are skipped rather than failing the whole set.
pub(crate) fn parse_key_set(body: &[u8]) -> Result<KeysById, KeysError> {
    #[derive(serde::Deserialize)]
    struct KeySet {
        keys: Vec<serde_json::Value>,
    }
    let set: KeySet = serde_json::from_slice(body).map_err(|_| KeysError::NotAKeySet)?;
    let keys: KeysById =
        set.keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| {
                let AlgorithmParameters::OctetKeyPair(okp) = &jwk.algorithm else {
                    return None;
                };
                let usable =
                    okp.curve == EllipticCurve::Ed25519
                        && jwk
                            .common
                            .key_algorithm
                            .is_none_or(|alg| alg == jsonwebtoken::jwk::KeyAlgorithm::EdDSA)
                        && jwk.common.public_key_use.as_ref().is_none_or(|usage| {
                            *usage == jsonwebtoken::jwk::PublicKeyUse::Signature
                        });
                let kid = jwk.common.key_id.clone().filter(|kid| !kid.is_empty())?;
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                (usable && key.try_get_as_bytes().is_ok_and(|bytes| bytes.len() == 32))
                    .then_some((kid, key))
            })
            .collect();
    if keys.is_empty() {
        return Err(KeysError::NoUsableKey);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_ed25519_signing_keys_only() {
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let body = format!(
            r#"{{"keys":[
                {{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"good","alg":"EdDSA","use":"sig"}},
                {{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"enc","use":"enc"}},
                {{"kty":"OKP","crv":"Ed25519","x":"{x}"}},
                {{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}},
                {{"kty":"EC","crv":"P-256","kid":"ec","x":"AA","y":"AA"}},
                {{"kty":"future-kind","kid":"future"}}
            ]}}"#
        );
        let keys = parse_key_set(body.as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["good"]);
        assert!(matches!(parse_key_set(b"{}"), Err(KeysError::NotAKeySet)));
        assert!(matches!(
            parse_key_set(br#"{"keys":[]}"#),
            Err(KeysError::NoUsableKey)
        ));
    }
}
