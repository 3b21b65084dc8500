//! `AuthLayer`: the tower layer that lets through only requests with a valid access token, and
//! tells the service behind it who sent them.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderMap, HeaderValue, Request, Response, header};
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
        let grpc = is_grpc(request.headers());
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

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
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
    fn grpc_is_told_by_content_type() {
        let mut headers = HeaderMap::new();
        assert!(!is_grpc(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_grpc(&headers));
    }
}
