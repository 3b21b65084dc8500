//! `spawn_app(Backend)`: a fresh database (Postgres: a new database named by a UUID; embedded: a new
//! data directory), a unique Redis key prefix, the real server on port 0, connected clients.
//!
//! Test URLs: AUTHD_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres, an admin
//! connection used to create and drop the per-test database) and AUTHD_TEST_REDIS_URL (default
//! redis://127.0.0.1:6379). Set TEST_LOG=1 to see the server's logs.

#![allow(dead_code)]

pub mod cluster;
pub mod gateway;
pub mod http;
pub mod proxy;
pub mod redis_server;
pub mod tls;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use authd::{
    App, Config,
    clock::{Clock, ManualClock, SystemClock},
    pb::{self, auth_service_client::AuthServiceClient},
};
use clap::Parser as _;
use sqlx::Connection as _;
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt as _;
use uuid::Uuid;

#[allow(unused_imports)]
pub use proxy::Proxy;

/// Which back ends an app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Users in Postgres, revocations in Redis.
    Postgres,
    /// Users and revocations in SQLite in the data directory.
    Embedded,
}

/// A strong password that passes every rule.
pub const PASSWORD: &str = "correct horse battery staple";

pub fn admin_database_url() -> String {
    std::env::var("AUTHD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("AUTHD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `host:port` of a URL like `scheme://user@host:port/path`.
pub fn host_port(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let host_port = rest.split(['/', '?']).next().unwrap();
    host_port
        .parse()
        .unwrap_or_else(|_| panic!("test URLs must use an IP:port, got {host_port}"))
}

/// A database created for one test and dropped after it.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin = admin_database_url();
        let name = format!("authd_test_{}", Uuid::new_v4().simple());
        let mut connection = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to Postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut connection)
            .await
            .expect("create test database");
        let base = admin.rsplit_once('/').map(|(base, _)| base).unwrap();
        let url = format!("{base}/{name}");
        Self { name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Async work in Drop: a short-lived runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut connection) = sqlx::PgConnection::connect(&admin_database_url()).await
                {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                    )))
                    .execute(&mut connection)
                    .await;
                }
            });
        })
        .join();
    }
}

/// Where an app's state lives, kept across restarts of the app.
pub struct TestState {
    pub backend: Backend,
    pub data_dir: TempDir,
    pub database: Option<TestDatabase>,
    pub redis_prefix: String,
}

impl TestState {
    pub async fn new(backend: Backend) -> Self {
        Self {
            backend,
            data_dir: tempfile::tempdir().unwrap(),
            database: match backend {
                Backend::Postgres => Some(TestDatabase::create().await),
                Backend::Embedded => None,
            },
            redis_prefix: format!("authd-test:{}:", Uuid::new_v4().simple()),
        }
    }

    /// An app on this state: its own back ends (Postgres + Redis, or embedded) unless the
    /// builder says otherwise.
    pub fn app(&self) -> AppBuilder<'_> {
        let (database_url, redis_url) = match self.backend {
            Backend::Postgres => (
                self.database.as_ref().map(|d| d.url.clone()),
                Some(redis_url()),
            ),
            Backend::Embedded => (None, None),
        };
        AppBuilder {
            state: self,
            database_url,
            redis_url,
            redis_prefix: self.redis_prefix.clone(),
            extra: Vec::new(),
            clock: Arc::new(SystemClock),
            client_tls: None,
            listen: (
                SocketAddr::from(([127, 0, 0, 1], 0)),
                SocketAddr::from(([127, 0, 0, 1], 0)),
            ),
        }
    }

    /// The URL of this state's Postgres database (Postgres states only).
    pub fn database_url(&self) -> String {
        self.database
            .as_ref()
            .expect("a Postgres state")
            .url
            .clone()
    }

    /// The key a first start generates in the keys directory (created here, in its place, when
    /// read before the first start).
    pub fn signing_key_path(&self) -> PathBuf {
        self.data_dir.path().join("keys").join("key-0-initial.pem")
    }
}

/// A running app and clients connected to it.
pub struct TestApp {
    pub address: SocketAddr,
    /// The HTTP listener (`None` when started with `--http-listen-addr=off`, or when this handle
    /// only connected to a running server).
    pub http_address: Option<SocketAddr>,
    pub client: AuthServiceClient<Channel>,
    pub health: HealthClient<Channel>,
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// How a test starts an app: the state's back ends and defaults, then overrides. Time comes from
/// the system clock unless the test hands in a [`ManualClock`] to step over delays.
pub struct AppBuilder<'a> {
    state: &'a TestState,
    database_url: Option<String>,
    redis_url: Option<String>,
    redis_prefix: String,
    extra: Vec<String>,
    clock: Arc<dyn Clock>,
    client_tls: Option<tonic::transport::ClientTlsConfig>,
    listen: (SocketAddr, SocketAddr),
}

impl AppBuilder<'_> {
    /// Listens on these gRPC and HTTP addresses instead of free ports (to restart in place).
    pub fn listen_on(mut self, grpc: SocketAddr, http: SocketAddr) -> Self {
        self.listen = (grpc, http);
        self
    }

    /// One more flag, e.g. `--login-backoff-base=10s`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// More flags.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// Another user database (`None`: the embedded default).
    pub fn database_url(mut self, url: Option<&str>) -> Self {
        self.database_url = url.map(str::to_owned);
        self
    }

    /// Another Redis (`None`: revocations and throttling in the user database).
    pub fn redis_url(mut self, url: Option<&str>) -> Self {
        self.redis_url = url.map(str::to_owned);
        self
    }

    /// Another Redis key prefix than the state's.
    pub fn redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.redis_prefix = prefix.into();
        self
    }

    /// The test's clients connect with TLS configured so (for an app started with TLS).
    pub fn client_tls(mut self, tls: tonic::transport::ClientTlsConfig) -> Self {
        self.client_tls = Some(tls);
        self
    }

    /// Time from `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<ManualClock>) -> Self {
        self.clock = clock;
        self
    }

    /// The command line this builder stands for (the first element is the program name).
    pub fn command_line(&self) -> Vec<String> {
        let mut args = vec![
            "authd".to_owned(),
            format!("--listen-addr={}", self.listen.0),
            format!("--http-listen-addr={}", self.listen.1),
            format!("--data-dir={}", self.state.data_dir.path().display()),
            format!("--redis-key-prefix={}", self.redis_prefix),
        ];
        args.extend(
            self.database_url
                .iter()
                .map(|url| format!("--database-url={url}")),
        );
        args.extend(
            self.redis_url
                .iter()
                .map(|url| format!("--redis-url={url}")),
        );
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Starts the app; panics if it does not start.
    pub async fn start(self) -> TestApp {
        self.try_start().await.expect("app starts")
    }

    /// Starts the app, or says why it did not.
    pub async fn try_start(self) -> anyhow::Result<TestApp> {
        if std::env::var_os("TEST_LOG").is_some() {
            let _logs_only = authd::telemetry::init(authd::config::LogFormat::Text);
        }
        let settings = Config::try_parse_from(self.command_line())?.settings()?;
        let app = App::build(settings, self.clock).await?;
        TestApp::serve(app, self.client_tls).await
    }
}

impl TestApp {
    /// Serves a built app on a task and connects clients to it.
    async fn serve(
        app: App,
        client_tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> anyhow::Result<Self> {
        let address = app.local_addr();
        let http_address = app.http_local_addr();
        let (shutdown, stopped) = oneshot::channel();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        let connected = Self::try_connect_with(address, client_tls).await;
        let mut connected = match connected {
            Ok(connected) => connected,
            Err(error) => {
                let _ = shutdown.send(());
                let _ = server.await;
                return Err(error);
            }
        };
        connected.http_address = http_address;
        connected.shutdown = Some(shutdown);
        connected.server = Some(server);
        Ok(connected)
    }

    /// Clients on a connection of their own to a server that is already running (this handle
    /// does not stop it).
    pub async fn connect(address: SocketAddr) -> Self {
        Self::try_connect(address).await.expect("connects")
    }

    async fn try_connect(address: SocketAddr) -> anyhow::Result<Self> {
        Self::try_connect_with(address, None).await
    }

    /// Clients on a connection of their own, over TLS configured by `tls` if given.
    pub async fn try_connect_with(
        address: SocketAddr,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> anyhow::Result<Self> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{address}"))?
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10));
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint.connect().await?;
        Ok(Self {
            address,
            http_address: None,
            client: AuthServiceClient::new(channel.clone()),
            health: HealthClient::new(channel.clone()),
            channel,
            shutdown: None,
            server: None,
        })
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }

    pub async fn register(
        &self,
        email: &str,
        password: &str,
    ) -> Result<pb::RegisterResponse, Status> {
        self.client
            .clone()
            .register(pb::RegisterRequest {
                email: email.into(),
                password: password.into(),
                username: String::new(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<pb::LoginResponse, Status> {
        self.client
            .clone()
            .login(pb::LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn verify(&self, token: &str) -> Result<pb::VerifyResponse, Status> {
        self.client
            .clone()
            .verify(pb::VerifyRequest {
                access_token: token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn logout(&self, token: &str) -> Result<pb::LogoutResponse, Status> {
        self.client
            .clone()
            .logout(pb::LogoutRequest {
                access_token: token.into(),
                refresh_token: String::new(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Registers a fresh user and returns (email, user id, access token).
    pub async fn new_user(&self) -> (String, String, String) {
        let email = format!("user-{}@example.com", Uuid::new_v4().simple());
        let response = self.register(&email, PASSWORD).await.expect("register");
        let token = response.tokens.unwrap().access_token;
        (email, response.user_id, token)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A state and an app running on it: the usual test fixture.
pub struct Fixture {
    pub app: TestApp,
    pub state: TestState,
}

pub async fn spawn_app(backend: Backend) -> Fixture {
    let state = TestState::new(backend).await;
    let app = state.app().start().await;
    Fixture { app, state }
}

/// Asserts the code and, when given, the google.rpc.ErrorInfo reason.
pub fn assert_status(status: &Status, code: Code, reason: Option<&str>) {
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    if let Some(reason) = reason {
        let info = status
            .get_error_details()
            .error_info()
            .cloned()
            .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
        assert_eq!(info.domain, "authd");
        assert_eq!(info.reason, reason, "{status:?}");
    }
}

/// The fields named by a google.rpc.BadRequest detail.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// Polls `check` until it is true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a test body once per back end: `backend_tests!(name, …)` expects `async fn name(Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod on_postgres_and_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
        mod on_embedded_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Embedded).await
                }
            )*
        }
    };
}

/// Signs arbitrary claims with the app's own Ed25519 key, to make tokens the server would not
/// issue (expired, wrong issuer, missing claims…). `typ`/`kid` default to the real ones.
pub struct Forger {
    key: jsonwebtoken::EncodingKey,
    pub kid: String,
}

impl Forger {
    pub fn for_state(state: &TestState) -> Self {
        let (signing_key, _) =
            authd::tokens::load_or_generate_ed25519_key(&state.signing_key_path()).unwrap();
        let der = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(&signing_key).unwrap();
        let key = jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes());
        let authority = authd::tokens::TokenAuthority::new(
            authd::tokens::SigningKeyMaterial::Ed25519(signing_key),
            "authd",
            "authd",
            Duration::from_secs(900),
            Duration::from_secs(5),
        )
        .unwrap();
        Self {
            key,
            kid: authority.key_id().to_owned(),
        }
    }

    /// The standard header of an access token.
    pub fn header(&self) -> jsonwebtoken::Header {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid.clone());
        header
    }

    /// Valid claims for `user_id`, issued `age` seconds ago, living `ttl` seconds.
    pub fn claims(user_id: &str, age: i64, ttl: i64) -> serde_json::Value {
        let now = unix_now();
        serde_json::json!({
            "iss": "authd", "aud": "authd", "sub": user_id,
            "iat": now - age, "exp": now - age + ttl, "jti": Uuid::new_v4().to_string(),
        })
    }

    pub fn sign(&self, header: &jsonwebtoken::Header, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(header, claims, &self.key).unwrap()
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Held by tests that saturate the CPU or measure time, so that they do not run at once and
/// skew each other (other tests still run beside them).
pub async fn exclusive_cpu() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Sessions (issue 9): one helper per session RPC, taking the token in the request field.
impl TestApp {
    pub async fn refresh(&self, refresh_token: &str) -> Result<pb::RefreshResponse, Status> {
        self.client
            .clone()
            .refresh(pb::RefreshRequest {
                refresh_token: refresh_token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Logout with a refresh token only.
    pub async fn logout_refresh(&self, refresh_token: &str) -> Result<pb::LogoutResponse, Status> {
        self.client
            .clone()
            .logout(pb::LogoutRequest {
                access_token: String::new(),
                refresh_token: refresh_token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn logout_all(&self, token: &str) -> Result<pb::LogoutAllResponse, Status> {
        self.client
            .clone()
            .logout_all(pb::LogoutAllRequest {
                access_token: token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn change_password(
        &self,
        token: &str,
        current_password: &str,
        new_password: &str,
    ) -> Result<pb::ChangePasswordResponse, Status> {
        self.client
            .clone()
            .change_password(pb::ChangePasswordRequest {
                access_token: token.into(),
                current_password: current_password.into(),
                new_password: new_password.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The caller's live sessions, as listed.
    pub async fn list_sessions(&self, token: &str) -> Result<Vec<pb::Session>, Status> {
        self.client
            .clone()
            .list_sessions(pb::ListSessionsRequest {
                access_token: token.into(),
            })
            .await
            .map(|r| r.into_inner().sessions)
    }

    pub async fn revoke_session(
        &self,
        token: &str,
        session_id: &str,
    ) -> Result<pb::RevokeSessionResponse, Status> {
        self.client
            .clone()
            .revoke_session(pb::RevokeSessionRequest {
                access_token: token.into(),
                session_id: session_id.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn delete_account(
        &self,
        token: &str,
        password: &str,
    ) -> Result<pb::DeleteAccountResponse, Status> {
        self.client
            .clone()
            .delete_account(pb::DeleteAccountRequest {
                access_token: token.into(),
                password: password.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Login sending `user-agent` metadata (tonic appends its own "tonic/x.y" to it).
    pub async fn login_as(
        &self,
        email: &str,
        password: &str,
        user_agent: &str,
    ) -> Result<pb::LoginResponse, Status> {
        let mut request = tonic::Request::new(pb::LoginRequest {
            email: email.into(),
            password: password.into(),
        });
        request
            .metadata_mut()
            .insert("user-agent", user_agent.parse().unwrap());
        self.client
            .clone()
            .login(request)
            .await
            .map(|r| r.into_inner())
    }

    /// Registers a fresh user and returns (email, user id, its first session's tokens).
    pub async fn new_session_user(&self) -> (String, String, pb::AuthTokens) {
        let email = format!("user-{}@example.com", Uuid::new_v4().simple());
        let response = self.register(&email, PASSWORD).await.expect("register");
        (email, response.user_id, response.tokens.unwrap())
    }

    /// A new session of `email` (password [`PASSWORD`]).
    pub async fn new_session(&self, email: &str) -> pb::AuthTokens {
        self.login(email, PASSWORD)
            .await
            .expect("login")
            .tokens
            .unwrap()
    }
}

impl TestState {
    /// The embedded SQLite database of this state's data directory, as a sqlx URL.
    pub fn embedded_database_url(&self) -> String {
        format!(
            "sqlite://{}",
            self.data_dir.path().join("authd.db").display()
        )
    }
}

/// The claims of a JWT, decoded without any check.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a compact JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// `token` with one character of its signature changed: signed by no one.
pub fn tampered(token: &str) -> String {
    let (head, signature) = token.rsplit_once('.').expect("a compact JWT");
    let mut signature: Vec<char> = signature.chars().collect();
    let middle = signature.len() / 2;
    signature[middle] = if signature[middle] == 'A' { 'B' } else { 'A' };
    format!("{head}.{}", signature.into_iter().collect::<String>())
}

/// The ErrorInfo reason of a status, or "" when it has none.
pub fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}
