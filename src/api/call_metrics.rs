//! The gRPC call metrics, under the go-grpc-prometheus names existing dashboards use:
//! `grpc_server_started_total`, `grpc_server_handled_total` (with the final code) and
//! `grpc_server_handling_seconds`, labelled by type, service and method. The methods are read
//! from the descriptor sets authd serves; any other path counts as `unknown`, so a client cannot
//! grow the number of series. The edge layer (`edge.rs`) starts and ends each call.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
    time::Instant,
};

use metrics::{Counter, Histogram};
use prost::Message as _;

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
        crate::metrics::handle();
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

    /// Counts a call to `path` as started; the returned call records its end (and its code in
    /// the call's span, [`GrpcCall::traced`]).
    pub fn start(&self, path: &str) -> GrpcCall {
        let method = self.method_index(path);
        self.methods[method].started.increment(1);
        GrpcCall {
            methods: self.methods.clone(),
            method,
            started: Instant::now(),
            finished: false,
            span: tracing::Span::none(),
        }
    }

    fn method_index(&self, path: &str) -> usize {
        self.index
            .get(path)
            .copied()
            .unwrap_or(self.methods.len() - 1)
    }
}

/// A call in progress. Ends with [`GrpcCall::finish`]; dropped unfinished (the client went away
/// before the response ended), it counts as `Canceled`.
pub struct GrpcCall {
    methods: Arc<[MethodMetrics]>,
    method: usize,
    started: Instant,
    finished: bool,
    /// The call's span (disabled when traces are not exported).
    span: tracing::Span,
}

impl GrpcCall {
    /// The call, recording its final code in `span` too.
    pub fn traced(mut self, span: tracing::Span) -> Self {
        self.span = span;
        self
    }

    /// The service and method called, `unknown` for a path authd does not serve (so a client
    /// cannot choose span names either).
    pub fn names(&self) -> (&str, &str) {
        let labels = &self.methods[self.method].labels;
        (labels[1].1.as_str(), labels[2].1.as_str())
    }

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
        crate::api::call_trace::record_code(&self.span, code);
    }
}

impl Drop for GrpcCall {
    fn drop(&mut self) {
        self.record(tonic::Code::Cancelled);
    }
}
