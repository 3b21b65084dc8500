//! TLS for the tests: throwaway certificate authorities and certificates (rcgen), written to a
//! private directory, and private TLS-only servers started from them on free ports: a Postgres
//! cluster (initdb into a temporary directory, `ssl=on`, plaintext refused by pg_hba) and a
//! `redis-server --tls-port`. Each is stopped when dropped.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority of its own, writing what it issues into `dir`.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM), to trust.
    pub cert_file: PathBuf,
    dir: PathBuf,
    name: String,
}

impl TestCa {
    /// A new CA called `name`, its files under `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("authd test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let cert_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert_file, issuer.pem()).unwrap();
        Self {
            issuer,
            cert_file,
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1, as `<label>.pem` / `<label>.key`.
    pub fn server(&self, label: &str) -> IdentityFiles {
        self.issue(
            label,
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name `label`.
    pub fn client(&self, label: &str) -> IdentityFiles {
        self.issue(label, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A certificate for `localhost` and 127.0.0.1 that serves and connects too (Redis Cluster
    /// nodes present it to one another on the TLS cluster bus).
    pub fn peer(&self, label: &str) -> IdentityFiles {
        self.issue_for(
            label,
            vec!["localhost".into(), "127.0.0.1".into()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    fn issue(
        &self,
        label: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> IdentityFiles {
        self.issue_for(label, names, vec![usage])
    }

    fn issue_for(
        &self,
        label: &str,
        names: Vec<String>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> IdentityFiles {
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, label.to_owned());
        params.extended_key_usages = usages;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = IdentityFiles {
            cert: self.dir.join(format!("{}-{label}.pem", self.name)),
            key: self.dir.join(format!("{}-{label}.key", self.name)),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        write_private(&files.key, key.serialize_pem().as_bytes());
        files
    }
}

/// Writes a file only its owner may read (Postgres refuses a key others can read).
pub fn write_private(path: &Path, contents: &[u8]) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `ready` holds or `child` exits (then its output, from `log`, is the panic).
fn wait_until(child: &mut Child, log: &Path, what: &str, mut ready: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Some(status) = child.try_wait().unwrap() {
            eprintln!(
                "{what} exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            return false;
        }
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start within 30 s");
}

/// A private `redis-server` that speaks TLS only, with a certificate from `ca`.
pub struct TlsRedis {
    pub port: u16,
    server: Child,
    _dir: TempDir,
}

impl TlsRedis {
    /// Starts it; with `require_client_certificates`, clients must present one `ca` issued.
    pub fn start(ca: &TestCa, require_client_certificates: bool) -> Self {
        let server_identity = ca.server("redis");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("redis.log");
        for _ in 0..5 {
            let port = free_port();
            let mut server = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .arg("--tls-cert-file")
                .arg(&server_identity.cert)
                .arg("--tls-key-file")
                .arg(&server_identity.key)
                .arg("--tls-ca-cert-file")
                .arg(&ca.cert_file)
                .args([
                    "--tls-auth-clients",
                    if require_client_certificates {
                        "yes"
                    } else {
                        "no"
                    },
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (built with TLS) on the PATH");
            let listening = wait_until(&mut server, &log, "redis-server", || {
                std::fs::read_to_string(&log)
                    .is_ok_and(|text| text.contains("Ready to accept connections"))
            });
            if listening {
                return Self {
                    port,
                    server,
                    _dir: dir,
                };
            }
        }
        panic!("redis-server --tls-port did not start");
    }

    /// Its URL, by the name its certificate carries.
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Where Debian keeps the Postgres server binaries.
const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A private Postgres cluster that accepts TLS connections only, with a certificate from `ca`.
pub struct TlsPostgres {
    pub port: u16,
    server: Child,
    data: PathBuf,
    run_as: Option<(u32, u32)>,
    _dir: TempDir,
}

impl TlsPostgres {
    /// initdb into a temporary directory, then the server on a free port (as the `postgres` user
    /// when the tests run as root: Postgres refuses to run as root).
    pub fn start(ca: &TestCa) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(postgres_user())
        } else {
            None
        };
        let data = dir.path().join("data");
        let identity = ca.server("postgres");
        // The server's own copies of its files, owned by the user it runs as.
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        std::fs::copy(&identity.cert, &cert).unwrap();
        write_private(&key, &std::fs::read(&identity.key).unwrap());
        if let Some((uid, gid)) = run_as {
            for path in [dir.path(), &cert, &key] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
            }
        }
        let mut initdb = Command::new(format!("{POSTGRES_BIN}/initdb"));
        initdb
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut initdb, run_as);
        assert!(initdb.status().unwrap().success(), "initdb failed");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let log = dir.path().join("postgres.log");
        for _ in 0..5 {
            let port = free_port();
            let mut command = Command::new(format!("{POSTGRES_BIN}/postgres"));
            command
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", dir.path().display()))
                .args(["-c", "ssl=on", "-c", "fsync=off"])
                .arg("-c")
                .arg(format!("ssl_cert_file={}", cert.display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", key.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            as_user(&mut command, run_as);
            let mut server = command.spawn().unwrap();
            let socket = dir.path().join(format!(".s.PGSQL.{port}"));
            if wait_until(&mut server, &log, "postgres", || socket.exists()) {
                return Self {
                    port,
                    server,
                    data,
                    run_as,
                    _dir: dir,
                };
            }
        }
        panic!("the private Postgres did not start");
    }

    /// A URL of its `postgres` database, by the name its certificate carries, with `params`
    /// (e.g. `sslmode=verify-full&sslrootcert=/path`).
    pub fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?{params}",
            self.port
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let mut stop = Command::new(format!("{POSTGRES_BIN}/pg_ctl"));
        stop.args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_user(&mut stop, self.run_as);
        if stop.status().map(|s| s.success()).unwrap_or(false) {
            let _ = self.server.wait();
        } else {
            let _ = self.server.kill();
            let _ = self.server.wait();
        }
    }
}

fn as_user(command: &mut Command, run_as: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt as _;
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
}

/// The `postgres` user's uid and gid, from /etc/passwd.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres"))
                .then(|| (fields[2].parse().unwrap(), fields[3].parse().unwrap()))
        })
        .expect("a postgres user (the Debian package creates it)")
}

/// A tonic client TLS configuration trusting `ca_file`, for `localhost`, presenting `identity`.
pub fn grpc_client_tls(
    ca_file: &Path,
    identity: Option<&IdentityFiles>,
) -> tonic::transport::ClientTlsConfig {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca_file).unwrap()))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&identity.cert).unwrap(),
            std::fs::read(&identity.key).unwrap(),
        ));
    }
    tls
}

/// `GET path` over HTTPS/1.1 to `address`, trusting `ca_file` for `localhost`: the status line
/// and the rest, or the TLS error.
pub async fn https_get(
    address: std::net::SocketAddr,
    ca_file: &Path,
    path: &str,
) -> Result<String, std::io::Error> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tls_connect(address, ca_file, b"http/1.1").await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// `GET path` over HTTP/2 on TLS (ALPN h2) to `address`, trusting `ca_file` for `localhost`:
/// the status and the negotiated version.
pub async fn https_h2_get(
    address: std::net::SocketAddr,
    ca_file: &Path,
    path: &str,
) -> (hyper::StatusCode, hyper::Version) {
    let stream = tls_connect(address, ca_file, b"h2").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("https://localhost{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    (response.status(), response.version())
}

/// A TLS connection to `address` for `localhost`, trusting `ca_file`, offering `alpn`.
async fn tls_connect(
    address: std::net::SocketAddr,
    ca_file: &Path,
    alpn: &[u8],
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, std::io::Error> {
    use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject as _};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}
