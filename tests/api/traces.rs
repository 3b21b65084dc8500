//! OpenTelemetry traces: the binary, pointed at an in-process OTLP/gRPC collector by the standard
//! variables, exports a Login's spans under the caller's trace (W3C `traceparent`): the call's
//! server span with the RPC attributes, and child spans for the password check and each SQL and
//! Redis call. No span attribute holds the password, the email or a token.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use authd::pb;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value},
    trace::v1::Span,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::process::{Process, embedded_args};
use crate::common::{
    PASSWORD, TestDatabase, redis_url,
    tls::{IdentityFiles, TestCa},
};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN_ID: &str = "b7ad6b7169203331";

/// Keeps every request it is sent.
#[derive(Default, Clone)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.received.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Every span received so far, with its resource's `service.name`.
    fn spans(&self) -> Vec<(String, Span)> {
        let received = self.received.lock().unwrap();
        let mut spans = Vec::new();
        for request in received.iter() {
            for resource_spans in &request.resource_spans {
                let service = resource_spans
                    .resource
                    .as_ref()
                    .and_then(|resource| text(&resource.attributes, "service.name"))
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        spans.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }
}

fn value_text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::DoubleValue(number)) => number.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .map(|attribute| value_text(&attribute.value))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A collector on a free port (over TLS with `identity`), its address, and its server task.
async fn start_collector(
    identity: Option<&IdentityFiles>,
) -> (
    Collector,
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut builder = tonic::transport::Server::builder();
    if let Some(identity) = identity {
        let identity = tonic::transport::Identity::from_pem(
            std::fs::read(&identity.cert).unwrap(),
            std::fs::read(&identity.key).unwrap(),
        );
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .unwrap();
    }
    let serving = collector.clone();
    let server = tokio::spawn(async move {
        builder
            .add_service(TraceServiceServer::new(serving))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    (collector, address, server)
}

/// Waits until `collector` has a span named `name`.
async fn wait_for_span(collector: &Collector, name: &str) -> bool {
    for _ in 0..100 {
        if collector.spans().iter().any(|(_, span)| span.name == name) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_tls_collector_verified_with_otel_exporter_otlp_certificate() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new(pki.path(), "otel");
    let (collector, address, server) = start_collector(Some(&ca.server("collector"))).await;
    let data_dir = tempfile::tempdir().unwrap();
    let process = Process::start_with_env(
        &embedded_args(data_dir.path()),
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("https://localhost:{}", address.port()),
            ),
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                ca.cert_file.display().to_string(),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ],
    );
    let mut client = process.client().await;
    client
        .verify(pb::VerifyRequest {
            access_token: "not-a-token".into(),
        })
        .await
        .unwrap_err();
    assert!(
        wait_for_span(&collector, "auth.v1.AuthService/Verify").await,
        "no span reached the TLS collector"
    );
    let (service, span) = collector
        .spans()
        .into_iter()
        .find(|(_, span)| span.name == "auth.v1.AuthService/Verify")
        .unwrap();
    assert_eq!(service, "authd", "OTEL_SERVICE_NAME's default");
    assert_eq!(
        text(&span.attributes, "rpc.grpc.status_code").as_deref(),
        Some("16")
    );
    process.signal("TERM");
    let _ = tokio::task::spawn_blocking(|| process.wait()).await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_exports_its_spans_under_the_callers_trace_and_no_secret() {
    let (collector, collector_address, server) = start_collector(None).await;

    let database = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let args = vec![
        "--listen-addr=127.0.0.1:0".to_owned(),
        "--http-listen-addr=127.0.0.1:0".to_owned(),
        format!("--data-dir={}", data_dir.path().display()),
        format!("--database-url={}", database.url),
        format!("--redis-url={}", redis_url()),
        format!("--redis-key-prefix=authd-test:{}:", Uuid::new_v4().simple()),
    ];
    let process = Process::start_with_env(
        &args,
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{collector_address}"),
            ),
            ("OTEL_SERVICE_NAME", "authd-under-test".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ],
    );
    let mut client = process.client().await;
    let email = "traced@example.com";
    let registered = client
        .register(pb::RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
            username: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut login = Request::new(pb::LoginRequest {
        email: email.into(),
        password: PASSWORD.into(),
    });
    login.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    login
        .metadata_mut()
        .insert("tracestate", "vendor=opaque".parse().unwrap());
    let logged_in = client.login(login).await.unwrap().into_inner();
    let tokens = logged_in.tokens.unwrap();
    client
        .verify(pb::VerifyRequest {
            access_token: tokens.access_token.clone(),
        })
        .await
        .unwrap();

    let in_trace = |spans: &[(String, Span)]| {
        spans
            .iter()
            .filter(|(_, span)| hex(&span.trace_id) == TRACE_ID)
            .cloned()
            .collect::<Vec<_>>()
    };
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans = collector.spans();
        let names: Vec<String> = in_trace(&spans)
            .iter()
            .map(|(_, s)| s.name.clone())
            .collect();
        // The Verify came last: its span may arrive in a later batch.
        let verify_arrived = spans
            .iter()
            .any(|(_, span)| span.name == "auth.v1.AuthService/Verify");
        if names.iter().any(|n| n == "auth.v1.AuthService/Login")
            && names.iter().any(|n| n == "password.verify")
            && verify_arrived
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let traced = in_trace(&spans);
    let names: Vec<&str> = traced.iter().map(|(_, span)| span.name.as_str()).collect();
    let (service, call) = traced
        .iter()
        .find(|(_, span)| span.name == "auth.v1.AuthService/Login")
        .unwrap_or_else(|| panic!("no Login span in the caller's trace: {names:?}"));
    assert_eq!(service, "authd-under-test");
    assert_eq!(
        hex(&call.parent_span_id),
        CALLER_SPAN_ID,
        "not a child of the caller's span"
    );
    assert_eq!(call.kind, 2, "a server span");
    assert_eq!(call.trace_state, "vendor=opaque");
    for (key, expected) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "auth.v1.AuthService"),
        ("rpc.method", "Login"),
        ("rpc.grpc.status_code", "0"),
    ] {
        assert_eq!(
            text(&call.attributes, key).as_deref(),
            Some(expected),
            "{key} of {:?}",
            call.attributes
        );
    }
    // Children (at any depth) of the call: the password check, the SQL lookup, the Redis
    // throttle counters.
    let call_id = call.span_id.clone();
    let descends_from_call = |span: &Span| {
        let mut parent = span.parent_span_id.clone();
        for _ in 0..10 {
            if parent == call_id {
                return true;
            }
            match traced.iter().find(|(_, s)| s.span_id == parent) {
                Some((_, s)) => parent = s.parent_span_id.clone(),
                None => return false,
            }
        }
        false
    };
    for (prefix, system) in [
        ("password.verify", None),
        ("sql.find_credentials", Some("postgresql")),
        ("redis.", Some("redis")),
    ] {
        let child = traced
            .iter()
            .map(|(_, span)| span)
            .find(|span| span.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} span under the Login: {names:?}"));
        assert!(
            descends_from_call(child),
            "{} is not under the Login span",
            child.name
        );
        if let Some(system) = system {
            assert_eq!(
                text(&child.attributes, "db.system").as_deref(),
                Some(system)
            );
        }
    }
    // The Verify without a traceparent started a trace of its own.
    assert!(
        spans
            .iter()
            .any(|(_, span)| span.name == "auth.v1.AuthService/Verify"
                && hex(&span.trace_id) != TRACE_ID),
        "{:?}",
        spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
    );

    // Nothing secret in any attribute or event of any span.
    let registered_tokens = registered.tokens.unwrap();
    let secrets = [
        PASSWORD.to_owned(),
        email.to_owned(),
        tokens.access_token.clone(),
        tokens.access_token.rsplit('.').next().unwrap().to_owned(),
        tokens.refresh_token.clone(),
        registered_tokens.access_token.clone(),
        registered_tokens.refresh_token.clone(),
    ];
    for (_, span) in &spans {
        let mut values: Vec<String> = span
            .attributes
            .iter()
            .map(|attribute| value_text(&attribute.value))
            .collect();
        values.push(span.name.clone());
        for event in &span.events {
            values.push(event.name.clone());
            values.extend(event.attributes.iter().map(|a| value_text(&a.value)));
        }
        for value in values {
            for secret in &secrets {
                assert!(
                    !value.contains(secret.as_str()),
                    "span {} holds a secret in {value:?}",
                    span.name
                );
            }
        }
    }
    process.signal("TERM");
    let _ = tokio::task::spawn_blocking(|| process.wait()).await;
    server.abort();
}
