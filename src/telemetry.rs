//! The tracing subscriber: text or JSON lines, filtered by `RUST_LOG` (default `info`), and
//! `error_chain`, how an error and its causes are written in logs and messages. Nothing logged
//! anywhere in authd contains a password, a whole token or a signature.

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

/// Installs the global subscriber; a second call is a no-op (tests start many apps).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_target(false);
    let _already_set = match format {
        LogFormat::Text => builder.try_init(),
        // JSON lines name their target, so a shipper can route `authd::audit` on its own.
        LogFormat::Json => builder
            .json()
            .with_target(true)
            .flatten_event(true)
            .try_init(),
    };
}

/// The trace a call belongs to: the current span's when traces are exported (authd joined the
/// caller's trace, or started one), else the trace id of the call's `traceparent`.
pub fn trace_id(traceparent: Option<&[u8]>) -> Option<crate::audit::TraceId> {
    traceparent.and_then(crate::audit::TraceId::from_traceparent)
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
