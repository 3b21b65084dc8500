//! Local verification: the signature against authd's JWKS, the claims and time here, revocation
//! against the mirror `WatchRevocations` keeps current. Tokens verified once are remembered (by
//! their exact bytes), so a token already seen costs a cache lookup, a clock read and the mirror.

mod keys;
mod mirror;
mod watcher;

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, Validation};
use tokio::task::AbortHandle;
use uuid::Uuid;

use self::{
    keys::{Keys, KidLookup},
    mirror::RevocationMirror,
    watcher::{Watcher, unix_now},
};
use crate::{
    AuthClient, Claims, Rejection,
    remote::RemoteVerifier,
    verifier::{BuildError, with_keepalive},
};

/// What a local-mode layer does while its revocation mirror is stale (before the first snapshot,
/// or no heartbeat from authd within three intervals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StalePolicy {
    /// Refuse with UNAVAILABLE / 503: no token is accepted whose revocation could not be checked.
    #[default]
    FailClosed,
    /// Ask authd's Verify instead, as remote mode does (and fail closed if that fails too).
    FallBackToRemote,
}

/// How a local-mode [`Verifier`](crate::Verifier) reaches authd and what it accepts.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub(crate) grpc_address: String,
    pub(crate) jwks_url: String,
    pub(crate) watch_token: Option<String>,
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) leeway: Duration,
    pub(crate) stale_policy: StalePolicy,
    pub(crate) jwks_min_refresh: Duration,
    pub(crate) jwks_refresh_every: Duration,
    pub(crate) remote_timeout: Duration,
    pub(crate) cache_entries: usize,
    pub(crate) max_token_lifetime: Duration,
    pub(crate) endpoint: Option<tonic::transport::Endpoint>,
    pub(crate) jwks_tls: JwksTls,
}

/// How the JWKS is fetched over HTTPS: an extra CA to trust, and a client certificate to present
/// (PEM), for an authd whose HTTP listener serves a private CA's certificate or requires mTLS.
#[derive(Debug, Clone, Default)]
pub(crate) struct JwksTls {
    pub(crate) ca_certificate: Option<Vec<u8>>,
    pub(crate) client_identity: Option<Vec<u8>>,
}

/// authd's largest clock leeway; a longer one here would accept tokens past every revocation.
const MAX_LEEWAY: Duration = Duration::from_secs(300);

impl LocalOptions {
    /// authd's gRPC address (`http://127.0.0.1:50051`) and its HTTP listener's base URL
    /// (`http://127.0.0.1:8080`), where the JWKS is at `/.well-known/jwks.json`.
    pub fn new(grpc_address: impl Into<String>, http_base_url: impl AsRef<str>) -> Self {
        Self {
            grpc_address: grpc_address.into(),
            jwks_url: format!(
                "{}/.well-known/jwks.json",
                http_base_url.as_ref().trim_end_matches('/')
            ),
            watch_token: None,
            issuer: "authd".to_owned(),
            audience: "authd".to_owned(),
            leeway: Duration::from_secs(5),
            stale_policy: StalePolicy::FailClosed,
            jwks_min_refresh: Duration::from_secs(5),
            jwks_refresh_every: Duration::from_secs(300),
            remote_timeout: Duration::from_secs(1),
            cache_entries: 100_000,
            max_token_lifetime: Duration::from_secs(24 * 3600),
            endpoint: None,
            jwks_tls: JwksTls::default(),
        }
    }

    /// The JWKS at another URL than the HTTP listener's default path.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = url.into();
        self
    }

    /// authd's `AUTHD_WATCH_TOKEN`, sent as `authorization: Bearer` on `WatchRevocations`. Not
    /// needed where the channel presents a client certificate to an mTLS authd.
    pub fn watch_token(mut self, token: impl Into<String>) -> Self {
        self.watch_token = Some(token.into());
        self
    }

    /// The `iss` tokens must carry (authd's `AUTHD_JWT_ISSUER`; default `authd`).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// The `aud` tokens must carry (authd's `AUTHD_JWT_AUDIENCE`; default `authd`).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// Clock leeway for `exp`, `nbf` and `iat` (default 5 s, as authd's; at most 5 min). Past
    /// `exp` it never exceeds authd's own, which the revocation snapshot states: authd forgets
    /// a revocation once its token is past `exp` plus its leeway.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.min(MAX_LEEWAY);
        self
    }

    /// The longest `exp - iat` accepted (default 24 h, authd's longest
    /// `AUTHD_ACCESS_TOKEN_TTL`). authd's own TTL, which each revocation snapshot states, caps
    /// it further: a token living longer than authd now issues is refused, as authd refuses it.
    pub fn max_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_token_lifetime = lifetime;
        self
    }

    /// What to do while the mirror is stale (default [`StalePolicy::FailClosed`]).
    pub fn stale_policy(mut self, policy: StalePolicy) -> Self {
        self.stale_policy = policy;
        self
    }

    /// The least time between two JWKS fetches caused by unknown `kid`s (default 5 s).
    pub fn jwks_min_refresh(mut self, every: Duration) -> Self {
        self.jwks_min_refresh = every.max(Duration::from_millis(100));
        self
    }

    /// How often the JWKS is fetched anyway, so removed keys stop verifying (default 5 min).
    pub fn jwks_refresh_every(mut self, every: Duration) -> Self {
        self.jwks_refresh_every = every.max(Duration::from_secs(1));
        self
    }

    /// The deadline of a fallback Verify call (default 1 s).
    pub fn remote_timeout(mut self, timeout: Duration) -> Self {
        self.remote_timeout = timeout;
        self
    }

    /// How many verified tokens to remember (default 100 000).
    pub fn cache_entries(mut self, entries: usize) -> Self {
        self.cache_entries = entries.max(1);
        self
    }

    /// Trusts this CA (PEM) for the JWKS over HTTPS, besides the public roots: an authd whose
    /// HTTP listener serves a certificate from a private CA (`AUTHD_TLS_CERT_FILE`).
    pub fn jwks_ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.jwks_tls.ca_certificate = Some(pem.into());
        self
    }

    /// Presents this client certificate and key (PEM) when fetching the JWKS: an authd with
    /// mutual TLS (`AUTHD_TLS_CLIENT_CA_FILE`) requires one on its HTTP listener too. (The gRPC
    /// side presents the one of [`LocalOptions::endpoint`]'s TLS configuration.)
    pub fn jwks_client_identity(
        mut self,
        certificate_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Self {
        let mut identity = key_pem.as_ref().to_vec();
        identity.push(b'\n');
        identity.extend_from_slice(certificate_pem.as_ref());
        self.jwks_tls.client_identity = Some(identity);
        self
    }

    /// An endpoint to authd configured by the caller (TLS, a client certificate), instead of
    /// `grpc_address`. Its HTTP/2 keepalive is set here (pings every second), whatever it was:
    /// the staleness bound depends on finding a dead connection quickly, and a fresh connection
    /// is made from it after one goes silent.
    pub fn endpoint(mut self, endpoint: tonic::transport::Endpoint) -> Self {
        self.endpoint = Some(endpoint);
        self
    }
}

/// The local verifier and the tasks that feed it; dropping it stops them.
pub(crate) struct LocalVerifier {
    shared: Arc<Shared>,
    tasks: Vec<AbortHandle>,
}

struct Shared {
    keys: Keys,
    mirror: Arc<RevocationMirror>,
    /// Tokens verified, with the key epoch they were verified under.
    verified: quick_cache::sync::Cache<Box<str>, (Claims, u64)>,
    validation: Validation,
    leeway_seconds: i64,
    max_lifetime_seconds: i64,
    stale_policy: StalePolicy,
    remote: RemoteVerifier,
}

/// What the synchronous part of a verification found.
enum Checked {
    Done(Result<Claims, Rejection>),
    /// The token names a key not in the set; fetch the set and try again.
    UnknownKey(String),
}

impl LocalVerifier {
    /// Builds the verifier and starts its tasks (the revocation stream, the JWKS refresh). Must
    /// be called inside a tokio runtime.
    pub(crate) fn start(options: LocalOptions) -> Result<Self, BuildError> {
        let url = reqwest::Url::parse(&options.jwks_url)
            .map_err(|error| BuildError::JwksUrl(format!("{}: {error}", options.jwks_url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BuildError::JwksUrl(format!(
                "{}: not http(s)",
                options.jwks_url
            )));
        }
        let keys = Keys::new(url, options.jwks_min_refresh, &options.jwks_tls)?;
        let endpoint = match options.endpoint {
            Some(endpoint) => endpoint,
            None => tonic::transport::Endpoint::from_shared(options.grpc_address.clone())
                .map_err(BuildError::Address)?,
        };
        let endpoint = with_keepalive(endpoint);
        let channel = endpoint.connect_lazy();
        let client = AuthClient::new(channel);
        let leeway_seconds = i64::try_from(options.leeway.as_secs()).unwrap_or(i64::MAX);
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[options.issuer.as_str()]);
        validation.set_audience(&[options.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = options.leeway.as_secs();
        // `nbf` is read as authd reads it (an integer, or absent/null) and checked below.
        validation.validate_nbf = false;
        let max_lifetime_seconds =
            i64::try_from(options.max_token_lifetime.as_secs()).unwrap_or(i64::MAX);
        let mirror = Arc::new(RevocationMirror::new());
        let shared = Arc::new(Shared {
            keys,
            mirror: mirror.clone(),
            verified: quick_cache::sync::Cache::new(options.cache_entries),
            validation,
            leeway_seconds,
            max_lifetime_seconds,
            stale_policy: options.stale_policy,
            remote: RemoteVerifier::new(client.clone(), options.remote_timeout),
        });
        let watcher = Watcher {
            client,
            endpoint,
            watch_token: options.watch_token,
            mirror,
            leeway_seconds,
        };
        let tasks = vec![
            tokio::spawn(watcher.run()).abort_handle(),
            tokio::spawn(maintain_keys(shared.clone(), options.jwks_refresh_every)).abort_handle(),
            tokio::spawn(purge_mirror(shared.clone())).abort_handle(),
        ];
        Ok(Self { shared, tasks })
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        let shared = &self.shared;
        match shared.check(token) {
            Checked::Done(outcome) => return shared.decide(token, outcome).await,
            Checked::UnknownKey(kid) => {
                let (lookup, lost) = shared.keys.refresh_for(&kid).await;
                if lost {
                    shared.verified.clear();
                }
                match lookup {
                    KidLookup::Known => {}
                    KidLookup::Unknown => return Err(Rejection::Invalid),
                    KidLookup::Unavailable => {
                        return match shared.stale_policy {
                            StalePolicy::FallBackToRemote => shared.remote.verify(token).await,
                            StalePolicy::FailClosed => Err(Rejection::Unavailable(
                                "authd's signing keys could not be fetched".into(),
                            )),
                        };
                    }
                }
            }
        }
        match shared.check(token) {
            Checked::Done(outcome) => shared.decide(token, outcome).await,
            Checked::UnknownKey(_) => Err(Rejection::Invalid),
        }
    }

    pub(crate) fn is_current(&self) -> bool {
        self.shared.mirror.is_current() && self.shared.keys.current().is_some()
    }

    pub(crate) async fn wait_until_current(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        if !self.shared.mirror.wait_until_current(timeout).await {
            return false;
        }
        while self.shared.keys.current().is_none() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.is_current()
    }

    pub(crate) fn staleness_bound(&self) -> Duration {
        self.shared.mirror.staleness_bound()
    }
}

impl Drop for LocalVerifier {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Shared {
    /// Signature (or the cache), claims and time; no revocation yet.
    fn check(&self, token: &str) -> Checked {
        let claims = match self.verified.get(token) {
            Some((claims, epoch)) if epoch == self.keys.epoch() => claims,
            // Not seen, or verified with a key set that has lost a key since.
            _ => match self.decode(token) {
                Ok((claims, epoch)) => {
                    self.verified.insert(token.into(), (claims.clone(), epoch));
                    claims
                }
                Err(checked) => return checked,
            },
        };
        let now = unix_now();
        // Past `exp`: this client's leeway, but never more than authd's (its revocations end
        // then), on whichever clock is later, authd's or this one.
        let expiry_leeway = self.leeway_seconds.min(self.mirror.server_leeway());
        // A lifetime authd could have issued: no longer than its TTL (as the last snapshot
        // said; it may have been lowered since the token was issued) or this client's cap. A
        // longer-lived token is refused by authd and outlives its revocations.
        let longest = self
            .max_lifetime_seconds
            .min(self.mirror.server_token_ttl())
            .saturating_add(expiry_leeway);
        if claims
            .expires_at_unix()
            .saturating_sub(claims.issued_at_unix())
            > longest
        {
            return Checked::Done(Err(Rejection::Invalid));
        }
        let latest_now = now.saturating_add(self.mirror.server_ahead());
        if claims.expires_at_unix().saturating_add(expiry_leeway) < latest_now {
            return Checked::Done(Err(Rejection::Expired));
        }
        if claims.issued_at_unix() > now.saturating_add(self.leeway_seconds) {
            return Checked::Done(Err(Rejection::Invalid));
        }
        Checked::Done(Ok(claims))
    }

    /// Verifies a token not seen before: its claims and the key epoch it was verified under.
    fn decode(&self, token: &str) -> Result<(Claims, u64), Checked> {
        let invalid = || Checked::Done(Err(Rejection::Invalid));
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        let typ_ok = header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        // Pinned algorithm; a `kid` is required; no JWS extension is understood, so any `crit`
        // is refused (RFC 7515 §4.1.11). `jwk`/`jku`/`x5u` headers are never followed.
        if header.alg != Algorithm::EdDSA || !typ_ok || header.crit.is_some() {
            return Err(invalid());
        }
        let kid = header
            .kid
            .filter(|kid| !kid.is_empty())
            .ok_or_else(invalid)?;
        let (keys, epoch) = self.keys.current_with_epoch();
        let Some(keys) = keys else {
            return Err(Checked::UnknownKey(kid));
        };
        let Some(key) = keys.get(&kid) else {
            return Err(Checked::UnknownKey(kid));
        };
        let data =
            jsonwebtoken::decode::<WireClaims>(token, key, &self.validation).map_err(|error| {
                match error.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        Checked::Done(Err(Rejection::Expired))
                    }
                    _ => invalid(),
                }
            })?;
        let claims = data.claims;
        // As authd: ids are UUIDs (compared as such, whatever their spelling), and the lifetime
        // is one authd could have issued.
        let user = Uuid::try_parse(&claims.sub).map_err(|_| invalid())?;
        let jti = Uuid::try_parse(&claims.jti).map_err(|_| invalid())?;
        let session = match &claims.sid {
            None => None,
            Some(sid) => Some(Uuid::try_parse(sid).map_err(|_| invalid())?),
        };
        if claims.exp < claims.iat {
            return Err(invalid());
        }
        // Not valid yet: refused now (and not remembered, so it is read again later). Time only
        // moves on, so a token remembered once its `nbf` passed stays past it.
        if claims
            .nbf
            .is_some_and(|nbf| nbf > unix_now().saturating_add(self.leeway_seconds))
        {
            return Err(invalid());
        }
        Ok((
            Claims::new(user, session, jti, claims.iat, claims.exp),
            epoch,
        ))
    }

    /// Revocation, once signature and time passed.
    async fn decide(
        &self,
        token: &str,
        outcome: Result<Claims, Rejection>,
    ) -> Result<Claims, Rejection> {
        let claims = outcome?;
        if self.mirror.is_current() {
            return if self.mirror.refuses(&claims) {
                Err(Rejection::Revoked)
            } else {
                Ok(claims)
            };
        }
        match self.stale_policy {
            StalePolicy::FailClosed => Err(Rejection::Unavailable(
                "revocations from authd are not current".into(),
            )),
            StalePolicy::FallBackToRemote => self.remote.verify(token).await,
        }
    }
}

/// The claims authd's access tokens carry. `iss` and `aud` are single strings, as authd writes
/// them (an array is refused, as authd refuses it); jsonwebtoken checks their values.
#[derive(serde::Deserialize)]
struct WireClaims {
    #[serde(rename = "iss")]
    _iss: String,
    #[serde(rename = "aud")]
    _aud: String,
    sub: String,
    iat: i64,
    exp: i64,
    jti: String,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    nbf: Option<i64>,
}

/// Loads the JWKS at start (retrying with back-off until it succeeds), then refetches it every
/// `every`; a key removed from the set makes tokens verified with the old set verify again.
async fn maintain_keys(shared: Arc<Shared>, every: Duration) {
    let mut pause = Duration::from_millis(100);
    loop {
        match shared.keys.reload().await {
            Ok(lost) => {
                if lost {
                    shared.verified.clear();
                }
                break;
            }
            Err(error) => {
                tracing::warn!(%error, "authd-client: could not load authd's JWKS; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match shared.keys.reload().await {
            Ok(true) => shared.verified.clear(),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "authd-client: could not refresh authd's JWKS"),
        }
    }
}

/// Forgets revocations whose tokens have expired, every 30 s.
async fn purge_mirror(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(30));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        shared.mirror.purge(unix_now(), shared.leeway_seconds);
    }
}
