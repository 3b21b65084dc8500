//! A tower layer around every gRPC service: a per-call time limit, and the statuses tonic itself
//! produces for bad input rewritten into the ones a client can act on, with google.rpc details:
//!
//! | tonic says | client gets |
//! |---|---|
//! | INTERNAL "failed to decode Protobuf message…" (and any other protocol error) | INVALID_ARGUMENT, ErrorInfo `MALFORMED_REQUEST` |
//! | OUT_OF_RANGE "decoded message length too large…" | RESOURCE_EXHAUSTED, ErrorInfo `REQUEST_TOO_LARGE` |
//! | (a call running past AUTHD_REQUEST_TIMEOUT) | DEADLINE_EXCEEDED |
//!
//! authd's own handlers only ever answer INTERNAL with the message `internal error`, so every
//! other INTERNAL comes from decoding what the client sent: a client mistake, not a server fault.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tonic::{
    Code, Status,
    body::Body,
    codegen::http::{Request, Response},
};
use tonic_types::{ErrorDetails, StatusExt as _};

use super::status::{ERROR_DOMAIN, INTERNAL_MESSAGE};

/// Applies [`Edge`] to a service.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLayer {
    timeout: Duration,
}

impl EdgeLayer {
    /// Calls running longer than `timeout` answer DEADLINE_EXCEEDED.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Edge {
            inner,
            timeout: self.timeout,
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> tower::Service<Request<B>> for Edge<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let call = self.inner.call(request);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(response)) => Ok(rewrite(response)),
                Ok(Err(error)) => Err(error),
                Err(_) => Ok(deadline_exceeded(timeout).into_http()),
            }
        })
    }
}

/// Replaces a trailers-only error response from tonic's decoding with a clearer status.
fn rewrite(response: Response<Body>) -> Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    match status.code() {
        Code::Internal if status.message() != INTERNAL_MESSAGE => malformed(&status).into_http(),
        Code::OutOfRange if status.message().contains("message length too large") => {
            too_large(&status).into_http()
        }
        _ => response,
    }
}

fn malformed(original: &Status) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        format!("malformed request: {}", original.message()),
        ErrorDetails::with_error_info("MALFORMED_REQUEST", ERROR_DOMAIN, HashMap::new()),
    )
}

fn too_large(original: &Status) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("request too large: {}", original.message()),
        ErrorDetails::with_error_info("REQUEST_TOO_LARGE", ERROR_DOMAIN, HashMap::new()),
    )
}

fn deadline_exceeded(timeout: Duration) -> Status {
    Status::with_error_details(
        Code::DeadlineExceeded,
        format!("the call took longer than {} ms", timeout.as_millis()),
        ErrorDetails::with_error_info("TIMEOUT", ERROR_DOMAIN, HashMap::new()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_after_rewrite(status: Status) -> Code {
        let response = rewrite(status.into_http());
        Status::from_header_map(response.headers()).unwrap().code()
    }

    #[test]
    fn decoding_errors_become_invalid_argument() {
        let decode = Status::internal("failed to decode Protobuf message: invalid wire type");
        assert_eq!(code_after_rewrite(decode), Code::InvalidArgument);
    }

    #[test]
    fn oversized_messages_become_resource_exhausted() {
        let large =
            Status::out_of_range("Error, decoded message length too large: found 70000 bytes");
        assert_eq!(code_after_rewrite(large), Code::ResourceExhausted);
    }

    #[test]
    fn authd_own_statuses_pass_through() {
        assert_eq!(
            code_after_rewrite(Status::internal(INTERNAL_MESSAGE)),
            Code::Internal
        );
        assert_eq!(
            code_after_rewrite(Status::unauthenticated("no")),
            Code::Unauthenticated
        );
        let ok = Response::new(Body::default());
        assert!(Status::from_header_map(rewrite(ok).headers()).is_none());
    }
}
