//! `AuthLayer`: the tower layer that lets through only requests with a valid access token, and
//! tells the service behind it who sent them.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response, header};
use tower_layer::Layer;
use tower_service::Service;

use crate::{Rejection, Verifier};

/// Protects a tonic server or an axum router: takes `authorization: Bearer <token>`, verifies it,
/// and puts its [`Claims`](crate::Claims) in the request's extensions. Refuses otherwise, in
/// the caller's protocol: a gRPC call gets UNAUTHENTICATED (or UNAVAILABLE when the token could
/// not be checked), an HTTP request 401 with `WWW-Authenticate: Bearer` (or 503).
#[derive(Debug, Clone)]
pub struct AuthLayer {
    verifier: Verifier,
}

impl AuthLayer {
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Protected<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Protected {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// A service behind [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Protected<S> {
    inner: S,
    verifier: Verifier,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Protected<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready goes into the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let grpc = is_grpc(&request);
        // An owned copy of the header (a reference count, not the bytes) so the future does not
        // borrow the request across the verification. Two `authorization` headers are refused:
        // which one counts would depend on who reads them (authd refuses them too).
        let mut authorizations = request.headers().get_all(header::AUTHORIZATION).iter();
        let credential = match (authorizations.next(), authorizations.next()) {
            (None, _) => Err(Rejection::Missing),
            (Some(value), None) => Ok(value.clone()),
            (Some(_), Some(_)) => Err(Rejection::Invalid),
        };
        Box::pin(async move {
            let verdict = match &credential {
                Ok(value) => match bearer_token(value) {
                    Some(token) => verifier.verify(token).await,
                    None => Err(Rejection::Missing),
                },
                Err(rejection) => Err(rejection.clone()),
            };
            match verdict {
                Ok(claims) => {
                    request.extensions_mut().insert(claims);
                    inner.call(request).await
                }
                Err(rejection) if grpc => Ok(rejection.grpc_response()),
                Err(rejection) => Ok(rejection.http_response()),
            }
        })
    }
}

/// Whether `request` is a gRPC call, to be refused the gRPC way (HTTP 200 with `grpc-status`).
/// gRPC runs over HTTP/2 with `application/grpc` or `application/grpc+<codec>`; anything else
/// (gRPC-Web, a plain HTTP request that merely claims the content type, a forward-auth proxy
/// copying a client's headers) is refused with 401/503, never a 2xx.
fn is_grpc<B>(request: &Request<B>) -> bool {
    request.version() == http::Version::HTTP_2
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| {
                let value = value.as_bytes();
                value == b"application/grpc" || value.starts_with(b"application/grpc+")
            })
}

/// The token of an `authorization` value, read as authd reads it: `Bearer`, case-insensitive,
/// exactly one space, then the token.
pub(crate) fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && !token.starts_with(char::is_whitespace))
    .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_credentials_as_authd_does() {
        let token =
            |value: &str| bearer_token(&HeaderValue::from_str(value).unwrap()).map(str::to_owned);
        assert_eq!(token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("bearer abc").as_deref(), Some("abc"));
        assert_eq!(token(" BEARER abc ").as_deref(), Some("abc"));
        assert_eq!(token("Bearer  abc"), None);
        assert_eq!(token("Bearer"), None);
        assert_eq!(token("Basic abc"), None);
        assert_eq!(token("Bearer "), None);
    }

    #[test]
    fn grpc_is_http2_with_a_grpc_content_type() {
        let request = |version: http::Version, content_type: Option<&'static str>| {
            let mut request = Request::builder().version(version);
            if let Some(content_type) = content_type {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            request.body(()).unwrap()
        };
        const HTTP_11: http::Version = http::Version::HTTP_11;
        const HTTP_2: http::Version = http::Version::HTTP_2;
        assert!(is_grpc(&request(HTTP_2, Some("application/grpc"))));
        assert!(is_grpc(&request(HTTP_2, Some("application/grpc+proto"))));
        assert!(!is_grpc(&request(HTTP_2, None)));
        assert!(!is_grpc(&request(HTTP_2, Some("application/json"))));
        assert!(!is_grpc(&request(HTTP_2, Some("application/grpc-web"))));
        assert!(!is_grpc(&request(HTTP_2, Some("application/grpcanything"))));
        // Over HTTP/1.1 it is not gRPC, whatever the client says.
        assert!(!is_grpc(&request(HTTP_11, Some("application/grpc"))));
        assert!(!is_grpc(&request(HTTP_11, Some("application/grpc+proto"))));
    }
}
