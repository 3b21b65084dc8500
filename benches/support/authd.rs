//! An authd for the client benchmarks: the real server on the embedded back end in a temporary
//! directory, on free loopback ports, with WatchRevocations enabled, and a user's token.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use authd::{
    App, Config,
    clock::SystemClock,
    pb::{self, auth_service_client::AuthServiceClient},
};
use clap::Parser as _;

pub const WATCH_TOKEN: &str = "bench-watch-token-0123456789abcdef-0123456789";

pub struct Authd {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    _data_dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Authd {
    /// Starts authd on the current runtime.
    pub async fn start() -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let settings = Config::try_parse_from([
            "authd".to_owned(),
            "--listen-addr=127.0.0.1:0".to_owned(),
            "--http-listen-addr=127.0.0.1:0".to_owned(),
            format!("--data-dir={}", data_dir.path().display()),
            format!("--watch-token={WATCH_TOKEN}"),
        ])
        .unwrap()
        .settings()
        .unwrap();
        let app = App::build(settings, Arc::new(SystemClock)).await.unwrap();
        let grpc = app.local_addr();
        let http = app.http_local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            grpc,
            http,
            _data_dir: data_dir,
            _stop: stop,
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// A new user's access token.
    pub async fn token(&self) -> String {
        let channel = tonic::transport::Endpoint::from_shared(self.grpc_url())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        let response = AuthServiceClient::new(channel)
            .register(pb::RegisterRequest {
                email: format!("bench-{}@example.com", uuid::Uuid::new_v4().simple()),
                password: "correct horse battery staple".to_owned(),
                username: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        response.tokens.unwrap().access_token
    }

    /// A local-mode verifier on this authd, current.
    pub async fn local_verifier(&self) -> authd_client::Verifier {
        let verifier = authd_client::Verifier::local(
            authd_client::LocalOptions::new(self.grpc_url(), self.http_url())
                .watch_token(WATCH_TOKEN),
        )
        .unwrap();
        assert!(verifier.wait_until_current(Duration::from_secs(15)).await);
        verifier
    }
}
