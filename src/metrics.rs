//! Prometheus metrics: the process-wide recorder (`metrics` + `metrics-exporter-prometheus`), the
//! HTTP request metrics, and the names of authd's own counters and gauges (recorded where the
//! events happen, with the `metrics` macros). The gRPC call metrics, under the go-grpc-prometheus
//! names, are recorded at the gRPC edge (`api/call_metrics.rs`).
//!
//! Label values come from fixed sets only: a gRPC method is one of the methods authd serves
//! (read from the descriptor sets at start-up), anything else is `unknown`; an HTTP path is a
//! route or `unmatched`. A client cannot grow the number of series.

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Logins by outcome: `ok`, `invalid_credentials`, `throttled`, `shed`.
pub const LOGINS: &str = "authd_logins_total";
/// Registrations by outcome: `ok`, `email_taken`, `throttled`, `shed`.
pub const REGISTRATIONS: &str = "authd_registrations_total";
/// Logouts (one session each) and LogoutAll calls, by `kind`.
pub const LOGOUTS: &str = "authd_logouts_total";
/// Revocations written, by kind: `token`, `session`, `cutoff`.
pub const REVOCATIONS_WRITTEN: &str = "authd_revocations_written_total";
/// Verified-token cache lookups by `result`: `hit`, `miss`.
pub const VERIFY_CACHE: &str = "authd_verify_cache_lookups_total";
/// Back-end errors (unavailable), by `backend`.
pub const BACKEND_ERRORS: &str = "authd_backend_errors_total";
/// Cached mode: seconds since the revocation mirror last heard its feed's heartbeat.
pub const MIRROR_STALENESS: &str = "authd_revocation_mirror_staleness_seconds";
/// Cached mode and the embedded store: revocations held in memory.
pub const MIRROR_ENTRIES: &str = "authd_revocation_mirror_entries";
/// Password hashes waiting for a hashing thread.
pub const HASHING_QUEUE_DEPTH: &str = "authd_hashing_queue_depth";
/// Audit events recorded, by `event` (`login.failed`, `session.ended`, …).
pub const AUDIT_EVENTS: &str = "authd_audit_events_total";
/// Audit events that did not reach AUTHD_AUDIT_LOG (the writer behind, or a write failed).
pub const AUDIT_EVENTS_DROPPED: &str = "authd_audit_events_dropped_total";
/// WatchRevocations streams open.
pub const REVOCATION_WATCHERS: &str = "authd_revocation_watchers";

/// Histogram buckets (seconds) for call durations: go-grpc-prometheus's defaults, with finer
/// ones below 5 ms, where Verify lives.
const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The process-wide recorder, installed on first use. If another recorder was installed first
/// (authd embedded in a program that has its own), metrics go there and `/metrics` shows only
/// what this handle sees.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &DURATION_BUCKETS)
            .expect("the bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only authd's handle"
            );
        }
        describe();
        handle
    })
}

/// The text exposition of every metric.
pub fn render() -> String {
    handle().render()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(AUDIT_EVENTS, "Audit events recorded, by event.");
    describe_counter!(
        AUDIT_EVENTS_DROPPED,
        "Audit events that could not be written to AUTHD_AUDIT_LOG."
    );
    describe_gauge!(REVOCATION_WATCHERS, "WatchRevocations streams open.");
    describe_counter!(
        "grpc_server_started_total",
        "Total number of RPCs started on the server."
    );
    describe_counter!(
        "grpc_server_handled_total",
        "Total number of RPCs completed on the server, regardless of success or failure."
    );
    describe_histogram!(
        "grpc_server_handling_seconds",
        metrics::Unit::Seconds,
        "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server."
    );
    describe_counter!(
        "http_server_requests_total",
        "HTTP requests served, by method, route and status code."
    );
    describe_histogram!(
        "http_server_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency (seconds), by method and route."
    );
    describe_counter!(LOGINS, "Logins by outcome.");
    describe_counter!(REGISTRATIONS, "Registrations by outcome.");
    describe_counter!(LOGOUTS, "Logouts by kind.");
    describe_counter!(REVOCATIONS_WRITTEN, "Revocations written, by kind.");
    describe_counter!(VERIFY_CACHE, "Verified-token cache lookups, by result.");
    describe_counter!(
        BACKEND_ERRORS,
        "Back-end errors (unavailable), by back end."
    );
    describe_gauge!(
        MIRROR_STALENESS,
        metrics::Unit::Seconds,
        "Seconds since the revocation mirror last heard its feed (cached mode)."
    );
    describe_gauge!(MIRROR_ENTRIES, "Revocations held in memory.");
    describe_gauge!(HASHING_QUEUE_DEPTH, "Password hashes waiting for a thread.");
}

/// Records one HTTP request: `route` is the matched route or `unmatched`.
pub fn record_http(method: &http::Method, route: &'static str, status: u16, elapsed: Duration) {
    let method = match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    metrics::counter!(
        "http_server_requests_total",
        "method" => method,
        "path" => route,
        "code" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        "http_server_request_duration_seconds",
        "method" => method,
        "path" => route
    )
    .record(elapsed.as_secs_f64());
}
