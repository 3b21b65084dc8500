//! Why a request was not let through, and how that reads to a gRPC or an HTTP caller.

use http::{HeaderValue, Response, StatusCode, header};

/// Why the layer refused a request. `Unauthenticated` is the caller's fault (send a valid token);
/// `Unavailable` means the layer could not decide (authd unreachable, the mirror stale) and the
/// caller may retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No `authorization: Bearer` credential.
    #[error("missing bearer access token")]
    Missing,
    /// Forged, malformed, for another issuer or audience, or signed by an unknown key.
    #[error("invalid access token")]
    Invalid,
    /// Past its expiry.
    #[error("access token expired")]
    Expired,
    /// Revoked: logged out, session ended, or issued before a cut-off.
    #[error("access token revoked")]
    Revoked,
    /// Revocation (or the key) could not be checked; fails closed.
    #[error("cannot verify access tokens now: {0}")]
    Unavailable(String),
}

impl Rejection {
    /// Whether the caller may retry the same request and expect another answer.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// The reason authd's Verify gives for the same answer (`google.rpc.ErrorInfo.reason`,
    /// domain `authd`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "TOKEN_MISSING",
            Self::Invalid => "TOKEN_INVALID",
            Self::Expired => "TOKEN_EXPIRED",
            Self::Revoked => "TOKEN_REVOKED",
            Self::Unavailable(_) => "BACKEND_UNAVAILABLE",
        }
    }

    /// The gRPC status for this rejection: UNAUTHENTICATED, or UNAVAILABLE, with the
    /// `google.rpc.ErrorInfo` authd's Verify would send, so callers tell expired from revoked.
    pub fn to_status(&self) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt as _};
        let code = match self {
            Self::Unavailable(_) => tonic::Code::Unavailable,
            _ => tonic::Code::Unauthenticated,
        };
        tonic::Status::with_error_details(
            code,
            self.to_string(),
            ErrorDetails::with_error_info(self.reason(), "authd", std::collections::HashMap::new()),
        )
    }

    /// The response for a gRPC call: trailers-only, with `grpc-status` in the headers.
    pub(crate) fn grpc_response<B: Default>(&self) -> Response<B> {
        let mut response: Response<B> = self.to_status().into_http();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// The response for a plain HTTP request: 401 with `WWW-Authenticate` (RFC 6750 §3), or 503
    /// with `Retry-After`.
    pub(crate) fn http_response<B: Default>(&self) -> Response<B> {
        let (status, challenge) = match self {
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
            Self::Missing => (StatusCode::UNAUTHORIZED, Some(r#"Bearer realm="authd""#)),
            Self::Expired => (
                StatusCode::UNAUTHORIZED,
                Some(r#"Bearer realm="authd", error="invalid_token", error_description="expired""#),
            ),
            Self::Revoked => (
                StatusCode::UNAUTHORIZED,
                Some(r#"Bearer realm="authd", error="invalid_token", error_description="revoked""#),
            ),
            Self::Invalid => (
                StatusCode::UNAUTHORIZED,
                Some(r#"Bearer realm="authd", error="invalid_token""#),
            ),
        };
        let mut response = Response::new(B::default());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        match challenge {
            Some(challenge) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            None => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
