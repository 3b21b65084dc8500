//! TLS on the listeners (AUTHD_TLS_CERT_FILE, AUTHD_TLS_KEY_FILE, AUTHD_TLS_CLIENT_CA_FILE):
//! the rustls configuration built from the files, and built again when one of them changes
//! (cert-manager and Vault rotate certificates in place): new connections get the new
//! certificate, open ones keep theirs. A file that does not parse keeps the previous
//! configuration and logs an error. With a client CA, every client must present a certificate
//! it issued (mutual TLS). Also the stream a listener serves: plain TCP, or TLS over it.

use std::{
    io,
    path::Path,
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    task::{Context, Poll},
    time::{Duration, SystemTime},
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

/// What the files looked like when last read: a change of any is a reason to read them again.
type FileStamps = Vec<Option<(SystemTime, u64)>>;

/// One listener's TLS configuration, kept current with its files.
pub struct ReloadingTls {
    files: ListenerTls,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<FileStamps>,
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
        }))
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
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    })
    .collect()
}

/// The rustls configuration the files describe.
fn build(files: &ListenerTls, alpn: &[Vec<u8>]) -> anyhow::Result<ServerConfig> {
    let chain = certificates(&files.cert_file, "AUTHD_TLS_CERT_FILE")?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).with_context(|| {
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
    let certificates = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{setting}: {} is not PEM", path.display()))?;
    anyhow::ensure!(
        !certificates.is_empty(),
        "{setting}: no certificate in {}",
        path.display()
    );
    Ok(certificates)
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
