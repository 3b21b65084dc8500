//! TLS on the listeners (AUTHD_TLS_CERT_FILE, AUTHD_TLS_KEY_FILE, AUTHD_TLS_CLIENT_CA_FILE):
//! the rustls configuration built from the files, and built again when one of them changes
//! (cert-manager and Vault rotate certificates in place): new connections get the new
//! certificate, open ones keep theirs. A file that does not parse keeps the previous
//! configuration and logs an error. Only regular files of at most [`MAX_PEM_FILE_BYTES`] are read
//! (a FIFO or a device in their place is an error, not a blocked thread), and the periodic check
//! runs on the blocking pool within [`TLS_RELOAD_DEADLINE`]. With a client CA, every client must present a certificate
//! it issued (mutual TLS). Also the stream a listener serves: plain TCP, or TLS over it.

use std::{
    io::{self, Read as _},
    os::unix::fs::MetadataExt as _,
    path::Path,
    pin::Pin,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{self, RootCertStore, ServerConfig, server::WebPkiClientVerifier},
    server::TlsStream,
};

use crate::config::ListenerTls;

/// How often the files are checked for changes.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// ALPN of the gRPC listener: HTTP/2 only.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];
/// ALPN of the HTTP listener: HTTP/2, else HTTP/1.1.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// How long one check of the files may take before it is given up (and logged); until it ends,
/// no other check starts.
pub const TLS_RELOAD_DEADLINE: Duration = Duration::from_secs(5);

/// The largest certificate, key or CA file read (a PEM bundle of many CAs is far smaller).
pub const MAX_PEM_FILE_BYTES: u64 = 1 << 20;

/// What a file looked like when last read (device, inode, size, modification and change times in
/// nanoseconds): a change of any is a reason to read the files again. A rename over the file (how
/// Kubernetes secret volumes and most tools rotate) changes the inode even when size and
/// modification time are kept.
type FileStamp = (u64, u64, u64, i64, i64, i64, i64);

/// One stamp per file, `None` for a file that cannot be examined.
type FileStamps = Vec<Option<FileStamp>>;

/// One listener's TLS configuration, kept current with its files.
pub struct ReloadingTls {
    files: ListenerTls,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<FileStamps>,
    checking: AtomicBool,
}

impl std::fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingTls {
    /// Reads the files; an error (start-up fails) when they do not make a configuration.
    pub fn load(files: &ListenerTls, alpn: &[&[u8]]) -> anyhow::Result<Arc<Self>> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let stamps = stamps(files);
        let config = build(files, &alpn)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            alpn,
            current: RwLock::new(Arc::new(config)),
            stamps: Mutex::new(stamps),
            checking: AtomicBool::new(false),
        }))
    }

    /// [`Self::reload_if_changed`] on the blocking pool, within [`TLS_RELOAD_DEADLINE`]: a file
    /// system that hangs (a stalled network mount) holds a blocking thread, never a runtime
    /// worker, and while one check is still running the next is skipped instead of piling up.
    pub async fn check_files(self: &Arc<Self>) {
        if self.checking.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                cert = %self.files.cert_file.display(),
                "TLS: the previous check of the certificate files has not finished; skipping this one"
            );
            return;
        }
        let this = self.clone();
        let check = tokio::task::spawn_blocking(move || {
            this.reload_if_changed();
            this.checking.store(false, Ordering::Release);
        });
        if tokio::time::timeout(TLS_RELOAD_DEADLINE, check)
            .await
            .is_err()
        {
            tracing::error!(
                cert = %self.files.cert_file.display(),
                deadline = ?TLS_RELOAD_DEADLINE,
                "TLS: reading the certificate files did not finish in time; keeping the current ones"
            );
        }
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .map(|config| config.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
        TlsAcceptor::from(config)
    }

    /// Reads the files again if one changed since the last read; keeps the current configuration
    /// (and logs why) when they do not make a new one.
    pub fn reload_if_changed(&self) {
        let now = stamps(&self.files);
        {
            let Ok(mut seen) = self.stamps.lock() else {
                return;
            };
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match build(&self.files, &self.alpn) {
            Ok(config) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Arc::new(config);
                }
                tracing::info!(
                    cert = %self.files.cert_file.display(),
                    "TLS: certificate files changed; new connections use them"
                );
            }
            Err(error) => tracing::error!(
                cert = %self.files.cert_file.display(),
                error = format!("{error:#}"),
                "TLS: the changed certificate files cannot be used; keeping the previous ones"
            ),
        }
    }
}

fn stamps(files: &ListenerTls) -> FileStamps {
    [
        Some(files.cert_file.as_path()),
        Some(files.key_file.as_path()),
        files.client_ca_file.as_deref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| {
        std::fs::metadata(path)
            .ok()
            .map(|metadata| stamp(&metadata))
    })
    .collect()
}

fn stamp(metadata: &std::fs::Metadata) -> FileStamp {
    (
        metadata.dev(),
        metadata.ino(),
        metadata.size(),
        metadata.mtime(),
        metadata.mtime_nsec(),
        metadata.ctime(),
        metadata.ctime_nsec(),
    )
}

/// The bytes of a certificate or key file: a regular file (after symbolic links) of at most
/// [`MAX_PEM_FILE_BYTES`]. Opened with `O_NONBLOCK`, so a FIFO put in the file's place (even
/// between a check and the open) cannot block the open, then examined on the open descriptor.
fn read_pem_file(path: &Path, setting: &str) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("{setting}: cannot read {}", path.display()))?;
    anyhow::ensure!(
        metadata.file_type().is_file(),
        "{setting}: {} is not a regular file",
        path.display()
    );
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_PEM_FILE_BYTES,
        "{setting}: {} is larger than {MAX_PEM_FILE_BYTES} bytes",
        path.display()
    );
    Ok(bytes)
}

/// The rustls configuration the files describe.
fn build(files: &ListenerTls, alpn: &[Vec<u8>]) -> anyhow::Result<ServerConfig> {
    let chain = certificates(&files.cert_file, "AUTHD_TLS_CERT_FILE")?;
    let key_pem = read_pem_file(&files.key_file, "AUTHD_TLS_KEY_FILE")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).with_context(|| {
        format!(
            "AUTHD_TLS_KEY_FILE: no PEM private key in {}",
            files.key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &files.client_ca_file {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(ca_file, "AUTHD_TLS_CLIENT_CA_FILE")? {
                roots.add(certificate).with_context(|| {
                    format!(
                        "AUTHD_TLS_CLIENT_CA_FILE: a certificate in {} is not a CA",
                        ca_file.display()
                    )
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .context("AUTHD_TLS_CLIENT_CA_FILE: cannot verify clients with it")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).with_context(|| {
        format!(
            "AUTHD_TLS_CERT_FILE and AUTHD_TLS_KEY_FILE do not make a certificate and its key ({})",
            files.cert_file.display()
        )
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// Every certificate in a PEM file (at least one).
fn certificates(path: &Path, setting: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem_file(path, setting)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{setting}: {} is not PEM", path.display()))?;
    anyhow::ensure!(
        !certificates.is_empty(),
        "{setting}: no certificate in {}",
        path.display()
    );
    Ok(certificates)
}

/// The TLS of the OTLP trace exporter, from the standard OTel variables: the CA of
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` (else the webpki roots) and, with
/// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `_CLIENT_KEY`, a client certificate. `None` for a
/// plaintext (`http://`) endpoint.
pub fn otlp_client_tls(
    endpoint: &str,
) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    if !endpoint
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("https://")
    {
        return Ok(None);
    }
    let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let mut config = ClientTlsConfig::new();
    config = match var("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE")
        .or_else(|| var("OTEL_EXPORTER_OTLP_CERTIFICATE"))
    {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            let pem = read_pem_file(&path, "OTEL_EXPORTER_OTLP_CERTIFICATE")?;
            config.ca_certificate(Certificate::from_pem(pem))
        }
        None => config.with_webpki_roots(),
    };
    let certificate = var("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE")
        .or_else(|| var("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"));
    let key = var("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY")
        .or_else(|| var("OTEL_EXPORTER_OTLP_CLIENT_KEY"));
    match (certificate, key) {
        (Some(certificate), Some(key)) => {
            let certificate = read_pem_file(
                std::path::Path::new(&certificate),
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            )?;
            let key = read_pem_file(std::path::Path::new(&key), "OTEL_EXPORTER_OTLP_CLIENT_KEY")?;
            config = config.identity(Identity::from_pem(certificate, key));
        }
        (None, None) => {}
        _ => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY go together"
        ),
    }
    Ok(Some(config))
}

/// A listener's connection: plain TCP, or TLS over it.
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            Transport::Tls(stream) => stream.get_ref().0,
        }
    }

    /// Whether TLS negotiated HTTP/2 by ALPN.
    pub fn negotiated_h2(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(stream) => stream.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(stream) => stream.is_write_vectored(),
            Transport::Tls(stream) => stream.is_write_vectored(),
        }
    }
}
