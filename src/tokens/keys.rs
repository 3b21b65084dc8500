//! The signing key: an Ed25519 PKCS#8 PEM file (loaded, or generated 0600 and written atomically
//! when absent; a warning when others can read it) or an HS256 secret, and what jsonwebtoken needs
//! from it: the algorithm, the encoding and decoding keys, and a `kid` that names the key without
//! revealing it. The only file I/O of the token code lives here.

use std::{fs, io::Write as _, path::Path};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, spki::der::pem::LineEnding},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest as _, Sha256};

/// How tokens are signed.
// Built once at start-up and consumed: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum SigningKeyMaterial {
    /// An Ed25519 key pair.
    Ed25519(SigningKey),
    /// A shared HS256 secret.
    Hs256(SecretString),
}

/// Signs the JWS signing input of a token. Ed25519 keeps the expanded key: jsonwebtoken's
/// `encode` decodes the PKCS#8 key again on every call, which derives the public key (a second
/// scalar multiplication as costly as the signature itself).
pub(super) enum TokenSigner {
    Ed25519(Box<SigningKey>),
    Hs256(EncodingKey),
}

impl TokenSigner {
    /// The base64url signature of `message` (`header.claims`).
    pub fn sign(&self, message: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
        match self {
            Self::Ed25519(key) => {
                use ed25519_dalek::Signer as _;
                Ok(URL_SAFE_NO_PAD.encode(key.sign(message).to_bytes()))
            }
            Self::Hs256(key) => jsonwebtoken::crypto::sign(message, key, Algorithm::HS256),
        }
    }
}

/// A key in the form jsonwebtoken uses it.
pub(super) struct JwtKeys {
    /// The one algorithm tokens are signed and verified with.
    pub algorithm: Algorithm,
    /// Signs.
    pub signer: TokenSigner,
    /// Verifies.
    pub decoding: DecodingKey,
    /// The `kid` header of tokens signed with this key.
    pub kid: String,
    /// The public key as an RFC 7517 JWK, for publishing; `None` for a shared secret.
    pub public_jwk: Option<serde_json::Value>,
}

impl SigningKeyMaterial {
    /// The jsonwebtoken keys and the `kid`.
    pub(super) fn into_jwt_keys(self) -> Result<JwtKeys, anyhow::Error> {
        Ok(match self {
            Self::Ed25519(signing_key) => {
                let public = signing_key.verifying_key();
                JwtKeys {
                    algorithm: Algorithm::EdDSA,
                    signer: TokenSigner::Ed25519(Box::new(signing_key)),
                    decoding: DecodingKey::from_ed_der(public.as_bytes()),
                    kid: ed25519_thumbprint(public.as_bytes()),
                    public_jwk: Some(ed25519_jwk(public.as_bytes())),
                }
            }
            Self::Hs256(secret) => {
                let bytes = secret.expose_secret().as_bytes();
                JwtKeys {
                    algorithm: Algorithm::HS256,
                    signer: TokenSigner::Hs256(EncodingKey::from_secret(bytes)),
                    decoding: DecodingKey::from_secret(bytes),
                    kid: hs256_key_id(bytes),
                    public_jwk: None,
                }
            }
        })
    }
}

/// RFC 7638 JWK thumbprint of an Ed25519 public key: a stable `kid` that names the key.
fn ed25519_thumbprint(public_key: &[u8; 32]) -> String {
    let jwk = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public_key)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(jwk.as_bytes()))
}

/// The `kid` of an Ed25519 key: the RFC 7638 thumbprint of its public key.
pub(super) fn ed25519_kid(key: &SigningKey) -> String {
    ed25519_thumbprint(key.verifying_key().as_bytes())
}

/// An Ed25519 public key as an RFC 8037 JWK, with its `kid` (the RFC 7638 thumbprint).
fn ed25519_jwk(public_key: &[u8; 32]) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": URL_SAFE_NO_PAD.encode(public_key),
        "kid": ed25519_thumbprint(public_key),
        "alg": "EdDSA",
        "use": "sig",
    })
}

/// A `kid` for an HS256 secret: a domain-separated hash prefix that names the secret without
/// revealing it.
fn hs256_key_id(secret: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"authd hs256 kid\0");
    hasher.update(secret);
    format!("hs256-{}", URL_SAFE_NO_PAD.encode(&hasher.finalize()[..12]))
}

/// Loads the Ed25519 signing key from `path`, generating one (mode 0600) if the file is absent:
/// for the default path under the data directory only (an explicitly configured file that is
/// missing is a mistake, see [`load_ed25519_key`]). Generation is atomic (write a temporary file,
/// then hard-link it into place), so instances starting at once agree on one key.
pub fn load_or_generate_ed25519_key(path: &Path) -> Result<(SigningKey, bool), anyhow::Error> {
    match fs::read_to_string(path) {
        Ok(pem) => Ok((parse_ed25519_pem(path, &pem)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            write_new_private_file(path, pkcs8_v1_pem(&key)?.as_bytes())?;
            // Another instance may have won the race: use whatever is in place now.
            let (key, _) = load_or_generate_ed25519_key(path)?;
            Ok((key, true))
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Loads the Ed25519 signing key from `path`, which must exist: a configured key file that is
/// missing (an unmounted secret, a typo) stops start-up instead of silently signing with a new
/// key that no other instance knows.
pub fn load_ed25519_key(path: &Path) -> Result<SigningKey, anyhow::Error> {
    let pem = fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "{} does not exist (a key is generated only at the default path in AUTHD_DATA_DIR)",
            path.display()
        ),
        _ => anyhow::anyhow!("cannot read {}: {e}", path.display()),
    })?;
    parse_ed25519_pem(path, &pem)
}

/// The Ed25519 key in a PKCS#8 PEM file, or an error naming the kind of key found instead.
pub(super) fn parse_ed25519_pem(path: &Path, pem: &str) -> Result<SigningKey, anyhow::Error> {
    warn_if_readable_by_others(path);
    SigningKey::from_pkcs8_pem(pem).map_err(|_| {
        anyhow::anyhow!(
            "{} is not an Ed25519 PKCS#8 PEM key: it holds {}",
            path.display(),
            describe_key(pem)
        )
    })
}

/// What a PEM file holds, in words: the PKCS#8 algorithm found, or the PEM label.
fn describe_key(pem: &str) -> String {
    use pkcs8::{PrivateKeyInfo, der::Decode as _};
    let Ok((label, der)) = pkcs8::der::pem::decode_vec(pem.trim().as_bytes()) else {
        return "no PEM data".into();
    };
    if label != "PRIVATE KEY" {
        return format!("a \"{label}\" PEM block, not a PKCS#8 \"PRIVATE KEY\"");
    }
    match PrivateKeyInfo::from_der(&der) {
        Ok(info) => {
            let oid = info.algorithm.oid.to_string();
            let name = match oid.as_str() {
                "1.2.840.113549.1.1.1" => "an RSA key",
                "1.2.840.10045.2.1" => "an EC (ECDSA) key",
                "1.3.101.110" => "an X25519 key",
                "1.3.101.111" => "an X448 key",
                "1.3.101.112" => "a malformed Ed25519 key",
                "1.3.101.113" => "an Ed448 key",
                _ => "a key of another type",
            };
            format!("{name} (algorithm OID {oid})")
        }
        Err(_) => "a PKCS#8 block that does not parse".into(),
    }
}

/// `key` as a PKCS#8 v1 PEM (RFC 5208: private key only). ed25519-dalek writes v2 (RFC 5958, with
/// the public key), which OpenSSL 3.0's `openssl pkey` cannot read.
pub(super) fn pkcs8_v1_pem(key: &SigningKey) -> Result<String, anyhow::Error> {
    use ed25519_dalek::pkcs8::KeypairBytes;
    let v1 = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    Ok(v1.to_pkcs8_pem(LineEnding::LF)?.to_string())
}

pub(super) fn write_new_private_file(path: &Path, contents: &[u8]) -> Result<(), anyhow::Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let temp = dir.join(format!(".signing-key.{}.tmp", uuid::Uuid::new_v4()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        match fs::hard_link(&temp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&temp);
    result.map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Creates `dir` (and its parents) readable by its owner only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Warns, once per path in the life of the process (keys are read again every few seconds), that
/// a key file is readable by group or others.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        static WARNED: std::sync::Mutex<Vec<std::path::PathBuf>> =
            std::sync::Mutex::new(Vec::new());
        if let Ok(metadata) = fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
            && WARNED.lock().is_ok_and(|mut warned| {
                let first = !warned.iter().any(|p| p == path);
                if first {
                    warned.push(path.to_owned());
                }
                first
            })
        {
            tracing::warn!(
                path = %path.display(),
                "the signing key file is readable by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn load_or_generate_creates_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("signing.pem");
        let (key, generated) = load_or_generate_ed25519_key(&path).unwrap();
        assert!(generated);
        let pem = fs::read_to_string(&path).unwrap();
        let on_disk = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(on_disk.verifying_key(), key.verifying_key());
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        let files: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(files.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn load_or_generate_loads_the_existing_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.pem");
        let (first, first_generated) = load_or_generate_ed25519_key(&path).unwrap();
        let (second, second_generated) = load_or_generate_ed25519_key(&path).unwrap();
        assert!(first_generated);
        assert!(!second_generated);
        assert_eq!(second.verifying_key(), first.verifying_key());
    }

    #[test]
    fn load_or_generate_rejects_a_garbage_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.pem");
        fs::write(&path, "not a key\n").unwrap();
        assert!(load_or_generate_ed25519_key(&path).is_err());
        let contents = fs::read_to_string(&path).unwrap();
        assert_eq!(
            contents, "not a key\n",
            "an existing file is never replaced"
        );
    }

    #[test]
    fn a_generated_key_file_is_pkcs8_v1() {
        use pkcs8::{PrivateKeyInfo, Version, der::Decode as _};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.pem");
        load_or_generate_ed25519_key(&path).unwrap();
        let pem = fs::read_to_string(&path).unwrap();
        let (label, der) = pkcs8::der::pem::decode_vec(pem.as_bytes()).unwrap();
        assert_eq!(label, "PRIVATE KEY");
        let info = PrivateKeyInfo::from_der(&der).unwrap();
        assert_eq!(info.version(), Version::V1);
        assert!(info.public_key.is_none());
    }

    #[test]
    fn a_configured_key_file_that_is_missing_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mounted").join("signing.pem");
        let error = load_ed25519_key(&path).unwrap_err().to_string();
        assert!(error.contains("does not exist"), "{error}");
        assert!(!path.exists() && !path.parent().unwrap().exists());
    }

    #[test]
    fn a_key_of_another_type_is_named_in_the_error() {
        // An EC P-256 PKCS#8 key (RFC 5915 test vector style), and a PKCS#1 RSA label.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ec.pem");
        let ec = "-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2\n\
OF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r\n\
1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB4QdbAd0E7oH50VpuZ1P087G\n\
-----END PRIVATE KEY-----\n";
        fs::write(&path, ec).unwrap();
        let error = load_ed25519_key(&path).unwrap_err().to_string();
        assert!(
            error.contains("EC (ECDSA)") && error.contains("1.2.840.10045.2.1"),
            "{error}"
        );
        assert!(!error.contains("1.3.101.112"), "{error}");
        fs::write(
            &path,
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        let error = load_ed25519_key(&path).unwrap_err().to_string();
        assert!(error.contains("RSA PRIVATE KEY"), "{error}");
    }
}
