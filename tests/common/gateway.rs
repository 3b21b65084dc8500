//! Real gateways for the tests: nginx or Caddy started from a configuration under `deploy/`, with
//! its addresses replaced by the test's (each must appear, so the file cannot drift from what is
//! tested), on free ports, in a private directory, stopped when dropped; and the upstream they
//! protect, which answers every request with the headers it received.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use axum::{Router, http::HeaderMap};
use tempfile::TempDir;

/// Which gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Caddy,
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Caddy => "caddy",
        }
    }

    /// The binary, if installed (nginx lives in /usr/sbin, often not on a user's PATH).
    pub fn binary(self) -> Option<PathBuf> {
        let name = self.program();
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    }

    /// The binary; or `None` after saying loudly that the test is skipped (`.ci/run` installs
    /// both, so in CI this only happens where the package cannot be installed).
    pub fn binary_or_skip(self) -> Option<PathBuf> {
        let binary = self.binary();
        if binary.is_none() {
            eprintln!(
                "\n!!!!!!!! SKIPPED: {} is not installed (apt-get install {}); this test did not run \
                 !!!!!!!!\n",
                self.program(),
                self.program()
            );
        }
        binary
    }
}

/// A running gateway.
pub struct Gateway {
    /// The listening addresses that replaced the configuration's, in the order asked for.
    pub listening: Vec<SocketAddr>,
    child: Child,
    dir: TempDir,
}

impl Gateway {
    /// Starts `kind` from `deploy/<config>`, replacing each `(from, to)` address in `targets`,
    /// and each address in `listen` with a free port; waits until every listening port answers.
    /// A port taken between picking and binding makes the gateway exit: then it is started again
    /// on other ports.
    pub fn start(
        kind: Kind,
        binary: &std::path::Path,
        config: &str,
        targets: &[(&str, String)],
        listen: &[&str],
    ) -> Self {
        let path = format!("{}/deploy/{config}", env!("CARGO_MANIFEST_DIR"));
        let template = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let dir = tempfile::tempdir().unwrap();
        let mut last_error = String::new();
        for _ in 0..5 {
            let listening: Vec<SocketAddr> = listen.iter().map(|_| free_address()).collect();
            let mut text = template.clone();
            let replacements = targets.iter().map(|(from, to)| (*from, to.clone())).chain(
                listen
                    .iter()
                    .zip(&listening)
                    .map(|(from, to)| (*from, to.to_string())),
            );
            for (from, to) in replacements {
                assert!(
                    text.contains(from),
                    "deploy/{config} no longer mentions {from}: update the test with it"
                );
                text = text.replace(from, &to);
            }
            let mut child = spawn(kind, binary, &text, dir.path());
            let started = Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    last_error = format!(
                        "{} exited ({status}): {}",
                        kind.program(),
                        std::fs::read_to_string(dir.path().join("output.log")).unwrap_or_default()
                    );
                    break;
                }
                if listening.iter().all(|address| {
                    TcpStream::connect_timeout(address, Duration::from_millis(100)).is_ok()
                }) {
                    return Self {
                        listening,
                        child,
                        dir,
                    };
                }
                if started.elapsed() > Duration::from_secs(15) {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{} did not listen within 15 s", kind.program());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("{} did not start: {last_error}", kind.program());
    }

    /// What the gateway wrote to its log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("output.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `kind` on the configuration `text`, its files and output in `dir`.
fn spawn(kind: Kind, binary: &std::path::Path, text: &str, dir: &std::path::Path) -> Child {
    let output = std::fs::File::create(dir.join("output.log")).unwrap();
    let mut command = Command::new(binary);
    match kind {
        Kind::Nginx => {
            // Keep every file nginx writes in `dir`: one process in the foreground, its pid,
            // logs and temporary files there.
            let temp_paths: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
                .iter()
                .map(|name| format!("    {name}_temp_path {}/{name};\n", dir.display()))
                .collect();
            let text = text.replacen(
                "http {\n",
                &format!("http {{\n{temp_paths}    access_log off;\n"),
                1,
            );
            std::fs::write(dir.join("nginx.conf"), text).unwrap();
            command
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-g")
                .arg(format!(
                    "daemon off; master_process off; pid {}/nginx.pid;",
                    dir.display()
                ));
        }
        Kind::Caddy => {
            std::fs::write(dir.join("Caddyfile"), text).unwrap();
            command
                .args(["run", "--adapter", "caddyfile", "--config"])
                .arg(dir.join("Caddyfile"))
                .env("HOME", dir)
                .env("XDG_DATA_HOME", dir.join("data"))
                .env("XDG_CONFIG_HOME", dir.join("config"));
        }
    }
    command
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()))
}

fn free_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The application behind the gateway: answers every request 200 with a JSON object of the
/// request headers it received (lower-case name → every value, in order).
pub struct Upstream {
    pub address: SocketAddr,
    _server: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Self {
        async fn echo(headers: HeaderMap) -> String {
            let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, value) in &headers {
                seen.entry(name.as_str().to_owned())
                    .or_default()
                    .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
            }
            serde_json::to_string(&seen).unwrap()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new().fallback(echo);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            address,
            _server: server,
        }
    }
}
