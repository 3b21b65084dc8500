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

/// A key in the form jsonwebtoken uses it.
pub(super) struct JwtKeys {
    /// The one algorithm tokens are signed and verified with.
    pub algorithm: Algorithm,
    /// Signs.
    pub encoding: EncodingKey,
    /// Verifies.
    pub decoding: DecodingKey,
    /// The `kid` header of tokens signed with this key.
    pub kid: String,
}

impl SigningKeyMaterial {
    /// The jsonwebtoken keys and the `kid`.
    pub(super) fn into_jwt_keys(self) -> Result<JwtKeys, anyhow::Error> {
        Ok(match self {
            Self::Ed25519(signing_key) => {
                let der = signing_key.to_pkcs8_der()?;
                let public = signing_key.verifying_key();
                JwtKeys {
                    algorithm: Algorithm::EdDSA,
                    encoding: EncodingKey::from_ed_der(der.as_bytes()),
                    decoding: DecodingKey::from_ed_der(public.as_bytes()),
                    kid: ed25519_thumbprint(public.as_bytes()),
                }
            }
            Self::Hs256(secret) => {
                let bytes = secret.expose_secret().as_bytes();
                JwtKeys {
                    algorithm: Algorithm::HS256,
                    encoding: EncodingKey::from_secret(bytes),
                    decoding: DecodingKey::from_secret(bytes),
                    kid: hs256_key_id(bytes),
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

/// A `kid` for an HS256 secret: a domain-separated hash prefix that names the secret without
/// revealing it.
fn hs256_key_id(secret: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"authd hs256 kid\0");
    hasher.update(secret);
    format!("hs256-{}", URL_SAFE_NO_PAD.encode(&hasher.finalize()[..12]))
}

/// Loads the Ed25519 signing key from `path`, generating one (mode 0600) if the file is absent.
/// Generation is atomic (write a temporary file, then hard-link it into place), so instances
/// starting at once agree on one key.
pub fn load_or_generate_ed25519_key(path: &Path) -> Result<(SigningKey, bool), anyhow::Error> {
    match fs::read_to_string(path) {
        Ok(pem) => {
            warn_if_readable_by_others(path);
            let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
                anyhow::anyhow!("{} is not an Ed25519 PKCS#8 PEM key: {e}", path.display())
            })?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = key.to_pkcs8_pem(LineEnding::LF)?;
            write_new_private_file(path, pem.as_bytes())?;
            // Another instance may have won the race: use whatever is in place now.
            let (key, _) = load_or_generate_ed25519_key(path)?;
            Ok((key, true))
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

fn write_new_private_file(path: &Path, contents: &[u8]) -> Result<(), anyhow::Error> {
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

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
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
}
