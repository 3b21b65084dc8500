//! `Verifier`: the one question the layer asks, "who is this token?", answered remotely or
//! locally.

use std::{sync::Arc, time::Duration};

use crate::{
    AuthClient, Claims, Rejection,
    local::{LocalOptions, LocalVerifier},
    remote::RemoteVerifier,
};

/// The longest access token accepted (authd's own limit).
pub(crate) const MAX_TOKEN_BYTES: usize = 4096;

/// `endpoint` with what every connection of this crate to authd needs: HTTP/2 pings every
/// second (a dead connection is found within the staleness bound, not after TCP's minutes), a
/// connect timeout and no Nagle delay.
pub(crate) fn with_keepalive(endpoint: tonic::transport::Endpoint) -> tonic::transport::Endpoint {
    endpoint
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true)
}

/// `error` and its sources, joined: reqwest's own message alone ("builder error") says nothing.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Why a verifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// authd's gRPC address is not a URI.
    #[error("authd's gRPC address: {0}")]
    Address(#[source] tonic::transport::Error),
    /// The JWKS URL is not an http(s) URL.
    #[error("the JWKS URL {0}")]
    JwksUrl(String),
    /// The HTTP client for the JWKS could not be built (a client identity whose key does not
    /// match its certificate, say).
    #[error("the JWKS HTTP client: {}", error_chain(.0))]
    Http(#[source] reqwest::Error),
    /// The TLS material for the JWKS is unusable: a CA file with no certificate, or TLS material
    /// for an `http://` JWKS URL (which would fetch the keys in plaintext).
    #[error("the JWKS TLS settings: {0}")]
    JwksTls(String),
}

/// Verifies access tokens, remotely or locally. Cheap to clone; clones share everything, and the
/// background tasks of a local verifier stop when the last clone is dropped.
#[derive(Clone)]
pub struct Verifier(Arc<Mode>);

enum Mode {
    Remote(RemoteVerifier),
    Local(LocalVerifier),
}

impl Verifier {
    /// Remote mode over a lazily connected channel to `grpc_address`; each call has `timeout`
    /// (1 s is a sensible deadline on one network).
    pub fn remote(grpc_address: impl Into<String>, timeout: Duration) -> Result<Self, BuildError> {
        let endpoint = tonic::transport::Endpoint::from_shared(grpc_address.into())
            .map_err(BuildError::Address)?;
        Ok(Self::remote_over(endpoint, timeout))
    }

    /// Remote mode over an endpoint the caller configured (TLS, a client certificate). Its
    /// HTTP/2 keepalive is set here, whatever it was, so a connection that dies silently is
    /// replaced within seconds instead of failing every call until TCP gives up.
    pub fn remote_over(endpoint: tonic::transport::Endpoint, timeout: Duration) -> Self {
        let channel = with_keepalive(endpoint).connect_lazy();
        Self(Arc::new(Mode::Remote(RemoteVerifier::new(
            AuthClient::new(channel),
            timeout,
        ))))
    }

    /// Local mode: starts fetching the JWKS and watching revocations. Must be called inside a
    /// tokio runtime. Until both are loaded, requests are refused with UNAVAILABLE (or sent to
    /// Verify, as the stale policy says); [`Verifier::wait_until_current`] waits for that.
    pub fn local(options: LocalOptions) -> Result<Self, BuildError> {
        Ok(Self(Arc::new(Mode::Local(LocalVerifier::start(options)?))))
    }

    /// Who `token` speaks for, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        // authd issues nothing longer and refuses anything longer; so does this, in both modes,
        // without asking anyone.
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::Invalid);
        }
        match &*self.0 {
            Mode::Remote(remote) => remote.verify(token).await,
            Mode::Local(local) => local.verify(token).await,
        }
    }

    /// Whether local verification can answer now: keys loaded and revocations current. Remote
    /// mode is always current.
    pub fn is_current(&self) -> bool {
        match &*self.0 {
            Mode::Remote(_) => true,
            Mode::Local(local) => local.is_current(),
        }
    }

    /// Waits until [`Verifier::is_current`], or `timeout`; says which.
    pub async fn wait_until_current(&self, timeout: Duration) -> bool {
        match &*self.0 {
            Mode::Remote(_) => true,
            Mode::Local(local) => local.wait_until_current(timeout).await,
        }
    }

    /// How long after authd was last heard from local mode stops trusting its mirror (three
    /// heartbeat intervals); zero in remote mode.
    pub fn staleness_bound(&self) -> Duration {
        match &*self.0 {
            Mode::Remote(_) => Duration::ZERO,
            Mode::Local(local) => local.staleness_bound(),
        }
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &*self.0 {
            Mode::Remote(_) => "remote",
            Mode::Local(_) => "local",
        };
        f.debug_struct("Verifier")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}
