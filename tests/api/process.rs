//! The `authd` binary as an operator runs it: logs, SIGTERM, concurrent start-up.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use authd::pb::{self, auth_service_client::AuthServiceClient};
use tonic::transport::Channel;

use crate::common::{PASSWORD, TestDatabase, redis_url};

/// A running `authd` process whose output is collected.
pub(super) struct Process {
    child: Child,
    address: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts the binary with JSON logs at debug level and waits for its listen address.
    pub(super) fn start(args: &[String]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`Process::start`] with more environment variables.
    pub(super) fn start_with_env(args: &[String], env: &[(&str, String)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_authd"))
            .args(args)
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .env("AUTHD_LOG_FORMAT", "json")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn authd");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            let address_tx = address_tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("serving gRPC") {
                        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
                        let _ = address_tx.send(json["address"].as_str().unwrap().parse().unwrap());
                    }
                    output.lock().unwrap().push(line);
                }
            });
        }
        let address = address_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("authd did not start: {:?}", output.lock().unwrap()));
        Self {
            child,
            address,
            output,
        }
    }

    pub(super) async fn client(&self) -> AuthServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .unwrap();
        AuthServiceClient::new(channel)
    }

    /// The HTTP listener's address, from its "serving HTTP" log line.
    fn http_address(&self) -> SocketAddr {
        let output = self.output.lock().unwrap();
        let line = output
            .iter()
            .find(|line| line.contains("serving HTTP"))
            .expect("the HTTP listener is on");
        let json: serde_json::Value = serde_json::from_str(line).unwrap();
        let address = json["address"].as_str().unwrap();
        address
            .parse()
            .unwrap_or_else(|_| panic!("not an address: {address}"))
    }

    pub(super) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub(super) fn wait(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let output = self.output.lock().unwrap().clone();
        (status, output)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub(super) fn embedded_args(data_dir: &std::path::Path) -> Vec<String> {
    vec![
        "--listen-addr=127.0.0.1:0".into(),
        "--http-listen-addr=127.0.0.1:0".into(),
        format!("--data-dir={}", data_dir.display()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_calls_finish_then_exits_zero() {
    let data_dir = tempfile::tempdir().unwrap();
    let process = Process::start(&embedded_args(data_dir.path()));
    let client = process.client().await;
    // Sixteen registrations queue behind argon2 (one hash per core): still in flight at
    // SIGTERM. The signal waits until the server has started all sixteen (its metrics say so): a
    // call sent after shutdown began is refused (or its connection reset), which is HTTP/2's
    // graceful shutdown, not a lost call; a fixed pause was too short under a loaded CI machine.
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let result = client
                    .register(pb::RegisterRequest {
                        email: format!("drain{i}@example.com"),
                        password: PASSWORD.into(),
                        username: String::new(),
                    })
                    .await;
                (result, std::time::Instant::now())
            })
        })
        .collect();
    let http = process.http_address();
    let started = std::time::Instant::now();
    loop {
        let metrics = tokio::task::spawn_blocking(move || http_get(http, "/metrics"))
            .await
            .unwrap();
        let registers_started = metrics.lines().any(|line| {
            line.starts_with("grpc_server_started_total")
                && line.contains("grpc_method=\"Register\"")
                && line.ends_with(" 16")
        });
        if registers_started {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the sixteen calls never reached the server: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let signalled = std::time::Instant::now();
    process.signal("TERM");
    let mut finished_after_signal = 0;
    for call in calls {
        let (result, finished) = call.await.unwrap();
        result.expect("an in-flight call completes during shutdown");
        finished_after_signal += usize::from(finished > signalled);
    }
    assert!(
        finished_after_signal > 0,
        "no call was in flight at SIGTERM: the test proved nothing"
    );
    let (status, output) = tokio::task::spawn_blocking(|| process.wait())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}: {output:#?}");
    assert!(
        output
            .iter()
            .any(|l| l.contains("draining in-flight calls")),
        "{output:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_passwords_or_tokens() {
    let data_dir = tempfile::tempdir().unwrap();
    let process = Process::start(&embedded_args(data_dir.path()));
    let mut client = process.client().await;
    let secret_password = "unmistakable-Pa55word-in-logs";
    let registered = client
        .register(pb::RegisterRequest {
            email: "logs@example.com".into(),
            password: secret_password.into(),
            username: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let token = registered.tokens.unwrap().access_token;
    let _ = client
        .login(pb::LoginRequest {
            email: "logs@example.com".into(),
            password: "wrong-Pa55word-in-logs".into(),
        })
        .await;
    client
        .verify(pb::VerifyRequest {
            access_token: token.clone(),
        })
        .await
        .unwrap();
    client
        .logout(pb::LogoutRequest {
            access_token: token.clone(),
            refresh_token: String::new(),
        })
        .await
        .unwrap();
    let _ = client
        .verify(pb::VerifyRequest {
            access_token: token.clone(),
        })
        .await;
    process.signal("TERM");
    let (_, output) = tokio::task::spawn_blocking(|| process.wait())
        .await
        .unwrap();
    let logs = output.join("\n");
    assert!(
        logs.contains("registered"),
        "the test must see the request logs: {logs}"
    );
    let signature = token.rsplit('.').next().unwrap();
    for secret in [
        secret_password,
        "wrong-Pa55word-in-logs",
        token.as_str(),
        signature,
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
    let private_key =
        std::fs::read_to_string(data_dir.path().join("keys").join("key-0-initial.pem")).unwrap();
    let key_body = private_key.lines().nth(1).unwrap();
    assert!(!logs.contains(key_body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_at_once_on_a_fresh_postgres_database_all_come_up() {
    let database = TestDatabase::create().await;
    let key_dir = tempfile::tempdir().unwrap();
    let processes: Vec<Process> = (0..4)
        .map(|_| {
            Process::start(&[
                "--listen-addr=127.0.0.1:0".into(),
                "--http-listen-addr=127.0.0.1:0".into(),
                format!("--database-url={}", database.url),
                format!("--redis-url={}", redis_url()),
                // One shared key file, generated by whichever instance wins.
                format!("--data-dir={}", key_dir.path().display()),
            ])
        })
        .collect();
    // Register on one, log in on every other: they share the database and the key.
    let mut first = processes[0].client().await;
    first
        .register(pb::RegisterRequest {
            email: "shared@example.com".into(),
            password: PASSWORD.into(),
            username: String::new(),
        })
        .await
        .unwrap();
    for process in &processes[1..] {
        let login = process
            .client()
            .await
            .login(pb::LoginRequest {
                email: "shared@example.com".into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let token = login.tokens.unwrap().access_token;
        first
            .verify(pb::VerifyRequest {
                access_token: token,
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_readable_by_others_draws_a_warning() {
    let data_dir = tempfile::tempdir().unwrap();
    let key = data_dir.path().join("keys").join("key-0-initial.pem");
    let first = Process::start(&embedded_args(data_dir.path()));
    first.signal("TERM");
    let (_, output) = tokio::task::spawn_blocking(|| first.wait()).await.unwrap();
    assert!(
        !output
            .iter()
            .any(|l| l.contains("readable by group or others")),
        "{output:#?}"
    );

    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let second = Process::start(&embedded_args(data_dir.path()));
    second.signal("TERM");
    let (status, output) = tokio::task::spawn_blocking(|| second.wait()).await.unwrap();
    assert!(status.success());
    assert!(
        output
            .iter()
            .any(|l| l.contains("WARN") && l.contains("readable by group or others")),
        "{output:#?}"
    );
}

#[test]
fn bad_configuration_exits_non_zero_at_once_naming_the_setting() {
    let data_dir = tempfile::tempdir().unwrap();
    let unreadable = data_dir.path().join("not-a-key.pem");
    std::fs::write(&unreadable, "not a key").unwrap();
    let cases: [(&[String], &str); 5] = [
        (
            &["--access-token-ttl=fortnight".into()],
            "AUTHD_ACCESS_TOKEN_TTL",
        ),
        (
            &["--jwt-alg=HS256".into(), "--jwt-secret=too-short".into()],
            "AUTHD_JWT_SECRET",
        ),
        (
            &["--database-url=postgres://nobody@127.0.0.1:1/none".into()],
            "AUTHD_DATABASE_URL",
        ),
        (
            &["--redis-url=redis://127.0.0.1:1".into()],
            "AUTHD_REDIS_URL",
        ),
        (
            &[format!("--signing-key-file={}", unreadable.display())],
            "AUTHD_SIGNING_KEY_FILE",
        ),
    ];
    for (extra, setting) in cases {
        let started = std::time::Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_authd"))
            .args(embedded_args(data_dir.path()))
            .args(extra)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{extra:?} must not start");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(setting), "{extra:?}: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{extra:?} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn unparseable_back_end_urls_never_print_their_passwords() {
    let data_dir = tempfile::tempdir().unwrap();
    for (variable, url) in [
        (
            "AUTHD_DATABASE_URL",
            "postgres://authd:S3cretPW@db.example:notaport/authd",
        ),
        (
            "AUTHD_DATABASE_URL",
            "postgres://authd:S3cretPW@db:5432/authd?sslmode=bogus",
        ),
        ("AUTHD_REDIS_URL", "redis://:S3cretPW@cache:6379/notadb"),
        ("AUTHD_REDIS_URL", "http://user:S3cretPW@cache:6379"),
    ] {
        for format in ["text", "json"] {
            let output = Command::new(env!("CARGO_BIN_EXE_authd"))
                .args(embedded_args(data_dir.path()))
                .env(variable, url)
                .env("AUTHD_LOG_FORMAT", format)
                .output()
                .unwrap();
            assert_eq!(output.status.code(), Some(1), "{url}");
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(printed.contains(variable), "{url}: {printed}");
            assert!(!printed.contains("S3cretPW"), "{url}: {printed}");
        }
    }
}

/// The body of a plain HTTP/1.1 GET of `path` on `address`.
fn http_get(address: SocketAddr, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}
