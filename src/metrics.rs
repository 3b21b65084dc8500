//! Prometheus metrics: the process-wide recorder (`metrics` + `metrics-exporter-prometheus`), the
//! gRPC call metrics under the go-grpc-prometheus names that existing dashboards use, the HTTP
//! ones, and the names of authd's own counters and gauges (recorded where the events happen, with
//! the `metrics` macros).
//!
//! Label values come from fixed sets only: a gRPC method is one of the methods authd serves
//! (read from the descriptor sets at start-up), anything else is `unknown`; an HTTP path is a
//! route or `unmatched`. A client cannot grow the number of series.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use prost::Message as _;

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

/// The grpc_code label of each gRPC code, as go-grpc-prometheus writes it.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The metrics of one gRPC method.
struct MethodMetrics {
    labels: [(&'static str, String); 3],
    started: Counter,
    seconds: Histogram,
    /// One per code, registered on first use (so unused codes are not exported as zeros).
    handled: [OnceLock<Counter>; 17],
}

impl MethodMetrics {
    fn new(kind: &'static str, service: &str, method: &str) -> Self {
        let labels = [
            ("grpc_type", kind.to_owned()),
            ("grpc_service", service.to_owned()),
            ("grpc_method", method.to_owned()),
        ];
        Self {
            started: metrics::counter!("grpc_server_started_total", &labels),
            seconds: metrics::histogram!("grpc_server_handling_seconds", &labels),
            labels,
            handled: Default::default(),
        }
    }

    fn handled(&self, code: tonic::Code) -> &Counter {
        let index = (code as usize).min(CODE_NAMES.len() - 1);
        self.handled[index].get_or_init(|| {
            let mut labels = self.labels.to_vec();
            labels.push(("grpc_code", CODE_NAMES[index].to_owned()));
            metrics::counter!("grpc_server_handled_total", &labels)
        })
    }
}

/// Every gRPC method authd serves, by request path (`/auth.v1.AuthService/Verify`).
#[derive(Clone)]
pub struct GrpcMetrics {
    /// Each method's metrics; the last entry stands for every unknown path.
    methods: Arc<[MethodMetrics]>,
    index: Arc<HashMap<String, usize>>,
}

impl std::fmt::Debug for GrpcMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcMetrics")
            .field("methods", &self.index.len())
            .finish()
    }
}

impl GrpcMetrics {
    /// The methods of the services in `descriptor_sets` (encoded `FileDescriptorSet`s).
    pub fn new(descriptor_sets: &[&[u8]]) -> Self {
        handle();
        let mut methods = Vec::new();
        let mut index = HashMap::new();
        for set in descriptor_sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                tracing::warn!(
                    "metrics: a descriptor set does not decode; its methods count as unknown"
                );
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    let service_name = match file.package() {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    for method in &service.method {
                        let kind = match (method.client_streaming(), method.server_streaming()) {
                            (false, false) => "unary",
                            (false, true) => "server_stream",
                            (true, false) => "client_stream",
                            (true, true) => "bidi_stream",
                        };
                        let path = format!("/{service_name}/{}", method.name());
                        index.entry(path).or_insert_with(|| {
                            methods.push(MethodMetrics::new(kind, &service_name, method.name()));
                            methods.len() - 1
                        });
                    }
                }
            }
        }
        methods.push(MethodMetrics::new("unary", "unknown", "unknown"));
        Self {
            methods: methods.into(),
            index: Arc::new(index),
        }
    }

    /// Counts a call to `path` as started; the returned call records its end.
    pub fn start(&self, path: &str) -> GrpcCall {
        let method = self
            .index
            .get(path)
            .copied()
            .unwrap_or(self.methods.len() - 1);
        self.methods[method].started.increment(1);
        GrpcCall {
            methods: self.methods.clone(),
            method,
            started: Instant::now(),
            finished: false,
        }
    }
}

/// A call in progress. Ends with [`GrpcCall::finish`]; dropped unfinished (the client went away
/// before the response ended), it counts as `Canceled`.
pub struct GrpcCall {
    methods: Arc<[MethodMetrics]>,
    method: usize,
    started: Instant,
    finished: bool,
}

impl GrpcCall {
    /// Records the call's end with `code`.
    pub fn finish(mut self, code: tonic::Code) {
        self.record(code);
    }

    fn record(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let metrics = &self.methods[self.method];
        metrics.handled(code).increment(1);
        metrics.seconds.record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for GrpcCall {
    fn drop(&mut self) {
        self.record(tonic::Code::Cancelled);
    }
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
