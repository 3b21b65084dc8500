//! Each gRPC call's span, for OpenTelemetry: named `service/method` (of the methods authd serves;
//! `unknown/unknown` otherwise), with the OTel RPC attributes (`rpc.system`, `rpc.service`,
//! `rpc.method`, `rpc.grpc.status_code`) and nothing from the request's body or credentials. It
//! joins the caller's trace (W3C `traceparent`). Created at debug level on the `authd::rpc`
//! target: unless traces are exported it is disabled and costs one cached check per call.

use tracing::{Span, field::Empty};

use super::call_metrics::GrpcCall;

/// The span of `call`, child of the trace its `headers` name. The method's names come from the
/// call's metrics, already looked up.
pub fn call_span(call: &GrpcCall, headers: &http::HeaderMap) -> Span {
    let (service, method) = call.names();
    let span = tracing::debug_span!(
        target: "authd::rpc",
        "grpc.server",
        otel.name = format!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        otel.status_code = Empty,
    );
    crate::telemetry::join_callers_trace(&span, headers);
    span
}

/// Records a call's final `code` in its span; the span's status is an error for the codes that
/// mean the server failed (OTel's RPC conventions), not for a client's mistake.
pub fn record_code(span: &Span, code: tonic::Code) {
    if span.is_disabled() {
        return;
    }
    span.record("rpc.grpc.status_code", code as i64);
    use tonic::Code::*;
    if matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
}
