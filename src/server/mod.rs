//! Serving: `auth.v1.AuthService`, Envoy's `envoy.service.auth.v3.Authorization`,
//! grpc.health.v1 and reflection (v1 and v1alpha) on the bound listener, with the HTTP/2 limits
//! and the edge layer, and the HTTP listener (`http`) beside it, until shutdown (SIGTERM/SIGINT
//! or a given future), then draining in-flight calls on both. `connections.rs` accepts the
//! connections (cap, handshake and idle timeouts), `tls.rs` holds the listeners' TLS; the
//! background tasks run beside it (`tasks.rs`).

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::watch;
use tonic::transport::Server;

pub mod connections;
pub mod tls;

use self::connections::ActivityRegistry;
use crate::{
    api::{self, AuthApi, EdgeLayer, call_metrics::GrpcMetrics, ext_authz::ExtAuthz},
    gateway::ForwardedHeaders,
    http::{self, HttpState},
    pb::{self, auth_service_server::AuthServiceServer},
    startup::App,
    tasks,
};

/// Largest Envoy `CheckRequest` accepted: Envoy forwards the request's headers (60 KiB by
/// default) and, when configured to, part of its body.
pub const MAX_CHECK_REQUEST_BYTES: usize = 1024 * 1024;

/// Requests larger than this are refused before they are decoded.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest HTTP/2 header block (metadata) accepted: a bearer token fits many times over.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// HTTP/2 PING interval on idle connections, and how long to wait for the answer before closing:
/// dead peers (and half-open connections through NATs) are noticed within a minute.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// See [`HTTP2_KEEPALIVE_INTERVAL`].
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 connection-level flow-control window.
pub const HTTP2_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
/// HTTP/2 stream-level flow-control window (a request is at most 64 KiB anyway).
pub const HTTP2_STREAM_WINDOW: u32 = 256 * 1024;
/// TCP keep-alive for idle connections.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

impl App {
    /// Serves until SIGTERM or SIGINT, then drains in-flight calls.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        self.run_until_stopped(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then drains in-flight calls.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let address = self.local_addr();
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let (stop_tasks, stopped) = watch::channel(false);
        let tasks = [
            api::health::report_health(self.service.clone(), health_reporter, stopped.clone()),
            tasks::purge_expired(self.service.clone(), stopped.clone()),
            tasks::watch_revocation_store(self.service.clone(), stopped.clone()),
            tasks::metrics_upkeep(stopped.clone()),
            tasks::reopen_audit_log_on_hangup(self.service.clone(), stopped.clone()),
            tasks::reload_signing_keys(self.service.clone(), self.keys_reload, stopped.clone()),
            tasks::reload_tls(
                self.grpc_tls
                    .iter()
                    .chain(&self.http_tls)
                    .cloned()
                    .collect(),
                stopped,
            ),
        ];

        // AUTHD_REFLECTION=false leaves both out: reflection calls answer UNIMPLEMENTED.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(pb::ENVOY_EXT_AUTHZ_FILE_DESCRIPTOR_SET)
        };
        let (reflection_v1, reflection_v1alpha) = if self.reflection {
            (
                Some(reflection().build_v1()?),
                Some(reflection().build_v1alpha()?),
            )
        } else {
            (None, None)
        };
        // Streams (WatchRevocations) end when draining starts, so that draining can finish.
        let (start_draining, draining) = watch::channel(false);
        let mut drain_started = draining.clone();
        let auth = AuthServiceServer::new(AuthApi::new(
            self.service.clone(),
            self.trusted_proxies.clone(),
            draining,
        ))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        let forwarded = ForwardedHeaders::new(&self.gateway.header_prefix)
            .context("invalid AUTHD_FORWARD_HEADER_PREFIX")?;
        let ext_authz = envoy_types::ext_authz::v3::pb::AuthorizationServer::new(ExtAuthz::new(
            self.service.clone(),
            forwarded.clone(),
            self.gateway.strip_authorization,
        ))
        .max_decoding_message_size(MAX_CHECK_REQUEST_BYTES);

        // The HTTP listener stops when the gRPC side starts draining.
        let (stop_http, http_stopped) = watch::channel(false);
        let stop_http = Arc::new(stop_http);
        let stop_http_on_drain = stop_http.clone();
        let http_server = self.http.map(|(listener, public_url)| {
            let http_address = listener
                .local_addr()
                .map_or_else(|_| "unknown".to_owned(), |address| address.to_string());
            tracing::info!(address = %http_address, %public_url, tls = self.http_tls.is_some(), "serving HTTP");
            let state = Arc::new(HttpState {
                service: self.service.clone(),
                headers: forwarded,
                public_url,
            });
            let mut stopped = http_stopped;
            tokio::spawn(http::serve(
                listener,
                self.http_tls.clone(),
                state,
                self.limits.connections,
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                },
            ))
        });

        tracing::info!(%address, tls = self.grpc_tls.is_some(), "serving gRPC");
        let registry = ActivityRegistry::default();
        let incoming = connections::incoming(
            self.listener,
            self.limits.connections,
            registry.clone(),
            self.grpc_tls.clone(),
        );
        let serving = Server::builder()
            .max_concurrent_streams(self.limits.max_concurrent_streams)
            // Larger flow-control windows: fewer WINDOW_UPDATE frames under many small calls.
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
            .tcp_keepalive(Some(TCP_KEEPALIVE))
            .layer(EdgeLayer::new(
                self.limits.request_timeout,
                registry,
                GrpcMetrics::new(&[
                    pb::FILE_DESCRIPTOR_SET,
                    pb::ENVOY_EXT_AUTHZ_FILE_DESCRIPTOR_SET,
                    tonic_health::pb::FILE_DESCRIPTOR_SET,
                    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                ]),
            ))
            .add_service(health_service)
            .add_optional_service(reflection_v1)
            .add_optional_service(reflection_v1alpha)
            .add_service(auth)
            .add_service(ext_authz)
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                tracing::info!("shutting down: draining in-flight calls");
                let _ = start_draining.send(true);
                let _ = stop_http_on_drain.send(true);
            });
        // Draining waits for in-flight calls, which the request timeout bounds; a connection
        // still open after that is stalled or idle (its keepalive would take 40 s to notice), so
        // it is dropped rather than allowed to hold shutdown up.
        let drain_deadline = self.limits.request_timeout;
        let served = tokio::select! {
            served = serving => served,
            () = async {
                let _ = drain_started.wait_for(|draining| *draining).await;
                tokio::time::sleep(drain_deadline).await;
            } => {
                tracing::warn!(?drain_deadline, "shutting down: connections still open after the drain deadline are closed");
                Ok(())
            }
        };
        let _ = stop_http.send(true);
        if let Some(http_server) = http_server {
            let _ = http_server.await;
        }

        let _ = stop_tasks.send(true);
        for task in tasks {
            let _ = task.await;
        }
        // The audit events of the last calls reach AUTHD_AUDIT_LOG before exit (a stuck file
        // system gets a few seconds, on a blocking thread).
        let service = self.service.clone();
        let flushed =
            tokio::task::spawn_blocking(move || service.flush_audit_log(AUDIT_FLUSH_GRACE));
        if !matches!(flushed.await, Ok(true)) {
            tracing::error!("AUTHD_AUDIT_LOG: the last audit events may not have been written");
        }
        served.context("gRPC server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// How long shutdown waits for the audit file to take the last events.
const AUDIT_FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// SIGTERM or SIGINT. The handlers are installed when this is called, before "serving" is
/// logged, so a signal that arrives right after start-up still shuts down gracefully.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).ok();
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            let terminated = async {
                match terminate.as_mut() {
                    Some(terminate) => terminate.recv().await,
                    None => std::future::pending().await,
                }
            };
            let interrupted = async {
                match interrupt.as_mut() {
                    Some(interrupt) => interrupt.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = terminated => {}
                _ = interrupted => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
