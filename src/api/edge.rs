//! A tower layer around every gRPC service: a per-call time limit (DEADLINE_EXCEEDED past it),
//! the statuses tonic itself produces for bad input (decoding errors, oversized messages) replaced
//! by the ones a client can act on, and each call's metrics (started, handled with its final code,
//! duration until the response ends) and its span (`call_trace.rs`). `status::from_transport`
//! decides which statuses to swap; this file only finds trailers-only error responses and swaps
//! them.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tonic::{
    Status,
    body::Body,
    codegen::http::{Request, Response},
    transport::server::TcpConnectInfo,
};

use tracing::Instrument as _;

use super::{call_trace::call_span, status};
use crate::{
    api::call_metrics::{GrpcCall, GrpcMetrics},
    server::connections::{ActivityRegistry, CallInFlight},
};

/// Applies [`Edge`] to a service.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    timeout: Duration,
    connections: ActivityRegistry,
    metrics: GrpcMetrics,
}

impl EdgeLayer {
    /// Calls running longer than `timeout` answer DEADLINE_EXCEEDED; each call marks its
    /// connection busy in `connections` while it runs (for the idle timeout), and is counted in
    /// `metrics`.
    pub fn new(timeout: Duration, connections: ActivityRegistry, metrics: GrpcMetrics) -> Self {
        Self {
            timeout,
            connections,
            metrics,
        }
    }
}

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Edge {
            inner,
            timeout: self.timeout,
            connections: self.connections.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    timeout: Duration,
    connections: ActivityRegistry,
    metrics: GrpcMetrics,
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
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(|info| info.remote_addr);
        let in_flight = self.connections.call_started(peer);
        let path = request.uri().path();
        let metered = self.metrics.start(path);
        let span = call_span(&metered, request.headers());
        let metered = metered.traced(span.clone());
        let call = span.in_scope(|| self.inner.call(request));
        let timeout = self.timeout;
        let call = async move {
            match tokio::time::timeout(timeout, call).await {
                // The connection stays busy until the response body ends (a stream may last).
                Ok(Ok(response)) => {
                    // A trailers-only response (every error status) ends here; any other ends
                    // with the grpc-status of its trailers.
                    let (response, code) = rewrite_with_code(response);
                    let metered = match code {
                        Some(code) => {
                            metered.finish(code);
                            None
                        }
                        None => Some(metered),
                    };
                    Ok(response.map(|body| {
                        Body::new(BusyUntilEnd {
                            body,
                            metered,
                            _in_flight: in_flight,
                        })
                    }))
                }
                Ok(Err(error)) => {
                    metered.finish(tonic::Code::Internal);
                    Err(error)
                }
                Err(_) => {
                    metered.finish(tonic::Code::DeadlineExceeded);
                    Ok(status::deadline_exceeded(timeout).into_http())
                }
            }
        };
        Box::pin(call.instrument(span))
    }
}

/// A response body that keeps its call marked in flight until it is dropped (after its end), and
/// records the call's end with the code of its trailers.
struct BusyUntilEnd {
    body: Body,
    metered: Option<GrpcCall>,
    _in_flight: CallInFlight,
}

impl http_body::Body for BusyUntilEnd {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = Status::from_header_map(trailers)
                        .map_or(tonic::Code::Ok, |status| status.code());
                    if let Some(metered) = self.metered.take() {
                        metered.finish(code);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(metered) = self.metered.take() {
                    metered.finish(tonic::Code::Ok);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(metered) = self.metered.take() {
                    metered.finish(tonic::Code::Internal);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Replaces a trailers-only error response from tonic's own decoding with a clearer status.
#[cfg(test)]
fn rewrite(response: Response<Body>) -> Response<Body> {
    rewrite_with_code(response).0
}

/// [`rewrite`], with the code of a trailers-only response (`None` for any other): its headers
/// are read once.
fn rewrite_with_code(response: Response<Body>) -> (Response<Body>, Option<tonic::Code>) {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return (response, None);
    };
    match status::from_transport(&status) {
        Some(replaced) => {
            let code = replaced.code();
            (replaced.into_http(), Some(code))
        }
        None => (response, Some(status.code())),
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::service::ServiceError;

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
        let internal = status::from_service(ServiceError::Unexpected(anyhow::anyhow!("bug")));
        assert_eq!(code_after_rewrite(internal), Code::Internal);
        assert_eq!(
            code_after_rewrite(Status::unauthenticated("no")),
            Code::Unauthenticated
        );
        let ok = Response::new(Body::default());
        assert!(Status::from_header_map(rewrite(ok).headers()).is_none());
    }
}
