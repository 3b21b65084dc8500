//! The tracing subscriber: text or JSON lines, filtered by `RUST_LOG` (default `info`); when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, OpenTelemetry
//! traces exported over OTLP/gRPC as well, configured by the standard OTel variables
//! (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, …). Unset, no exporter and no span
//! is even built on the hot path. Also `error_chain`, how an error and its causes are written in
//! logs and messages. Nothing logged or traced anywhere in authd contains a password, an email,
//! a whole token or a signature.

use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::Targets, fmt, layer::SubscriberExt as _,
    util::SubscriberInitExt as _,
};

use crate::config::LogFormat;

/// The tracing target of authd's own spans: the OTel layer records authd's spans (down to
/// debug, the level they are created at, so that the log filter can leave them out).
const TRACED_CRATE: &str = "authd";

/// What must be flushed before the process exits.
#[derive(Debug, Default)]
#[must_use = "shut telemetry down before exiting, or the last spans are lost"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exports_traces(&self) -> bool {
        self.traces.is_some()
    }

    /// Exports the spans still queued and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "OpenTelemetry: the last spans may not have been exported");
        }
    }
}

/// Whether the environment asks for OTLP trace export (an endpoint is set, the SDK is not
/// disabled, and `OTEL_TRACES_EXPORTER` is not `none`).
fn otlp_requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) && !disabled
}

/// Installs the global subscriber; a second call is a no-op (tests start many apps). Trace
/// export starts when the environment asks for it (this needs a Tokio runtime); an exporter
/// that cannot be built is logged and left out, never a reason not to serve.
pub fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Text => fmt::layer().with_target(false).boxed(),
        // JSON lines name their target, so a shipper can route `authd::audit` on its own.
        LogFormat::Json => fmt::layer()
            .json()
            .with_target(true)
            .flatten_event(true)
            .boxed(),
    }
    .with_filter(filter);
    let (traces, export_error) = if otlp_requested() {
        match tracer_provider() {
            Ok(provider) => (Some(provider), None),
            Err(error) => (None, Some(error)),
        }
    } else {
        (None, None)
    };
    let otel = traces.as_ref().map(|provider| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("authd"))
            .with_filter(Targets::new().with_target(TRACED_CRATE, tracing::Level::DEBUG))
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init()
        .is_ok();
    if let Some(error) = export_error {
        tracing::error!(error = %format!("{error:#}"), "OpenTelemetry: cannot export traces; serving without");
    }
    match (installed, traces) {
        (true, Some(provider)) => {
            tracing::info!("OpenTelemetry: exporting traces over OTLP/gRPC");
            Telemetry {
                traces: Some(provider),
            }
        }
        (false, Some(provider)) => {
            let _ = provider.shutdown();
            Telemetry::default()
        }
        (_, None) => Telemetry::default(),
    }
}

/// The OTLP/gRPC exporter behind a batch processor on the Tokio runtime; endpoint, headers,
/// timeout, sampler, resource and batch sizes come from the standard OTel variables.
fn tracer_provider() -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithTonicConfig as _;
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .unwrap_or_default();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if let Some(tls) = crate::server::tls::otlp_client_tls(&endpoint)? {
        exporter = exporter.with_tls_config(tls);
    }
    let exporter = exporter.build()?;
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("authd");
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource.build())
        .build())
}

/// Makes `span` a child of the trace a call's W3C `traceparent`/`tracestate` headers name (a
/// no-op when traces are not exported: the span is disabled, and nothing is parsed).
pub fn join_callers_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The trace id of the current span, when traces are exported.
fn current_trace_id() -> Option<crate::audit::TraceId> {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| crate::audit::TraceId::from_bytes(span_context.trace_id().to_bytes()))
        .flatten()
}

/// Reads W3C trace context from HTTP/2 headers (gRPC metadata).
struct HeaderExtractor<'a>(&'a http::HeaderMap);

/// The longest `tracestate` taken from a caller (W3C allows 32 members of up to 256 bytes: copied
/// onto every span, that much from an untrusted caller could make export batches too large for the
/// collector); a longer one is dropped, the `traceparent` kept.
const MAX_TRACESTATE_BYTES: usize = 512;

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key).and_then(|value| value.to_str().ok())?;
        (key != "tracestate" || value.len() <= MAX_TRACESTATE_BYTES).then_some(value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|key| key.as_str()).collect()
    }
}

/// The trace a call belongs to: the current span's when traces are exported (authd joined the
/// caller's trace, or started one), else the trace id of the call's `traceparent`.
pub fn trace_id(traceparent: Option<&[u8]>) -> Option<crate::audit::TraceId> {
    current_trace_id().or_else(|| traceparent.and_then(crate::audit::TraceId::from_traceparent))
}

/// An error and its causes, outermost first, joined by ": ". A cause whose text the message before
/// it already contains is left out (sqlx and redis put their source's text in their own message,
/// so `{:#}` would print it twice).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let message = inner.to_string();
        if !message.is_empty() && !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let wrapped = anyhow::Error::new(io).context("error communicating: Connection refused");
        let outer = wrapped.context("database unavailable");
        assert_eq!(
            error_chain(outer.as_ref()),
            "database unavailable: error communicating: Connection refused"
        );
    }
}
