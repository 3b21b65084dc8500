//! The keys directory (`AUTHD_SIGNING_KEYS_DIR`, default `DATA_DIR/keys`): one Ed25519 PKCS#8 PEM
//! file per key (mode 0600), named `key-<starts signing at, Unix seconds>-<label>.pem`. Everything
//! about a key's schedule is in its file name, so every instance reading the directory computes
//! the same ring (`ring.rs`) at the same second, and a file is written atomically (a temporary
//! file linked into place), so a half-written key is never read.
//!
//! `authd keys rotate` adds a key that is published at once and signs after a lead time;
//! `authd keys prune` removes keys whose last possible token has expired; `authd keys list` shows
//! each key's state. Other files in the directory are ignored.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use ed25519_dalek::SigningKey;

use super::{
    ScheduledKey, SigningKeyMaterial,
    keys::{create_private_dir, parse_ed25519_pem, pkcs8_v1_pem, write_new_private_file},
};
use crate::clock::UnixSeconds;

/// Where a key stands at a given second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not signing yet.
    Next,
    /// Signing.
    Active,
    /// Superseded; still published so that its tokens verify until they expire.
    Retiring,
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retiring => "retiring",
        })
    }
}

/// A key file of the directory.
pub struct StoredKey {
    /// Its file.
    pub path: PathBuf,
    /// Its `kid` (RFC 7638 thumbprint).
    pub kid: String,
    /// The first second it signs.
    pub starts_at: UnixSeconds,
    /// When the file was written, as the file system says.
    pub created: Option<SystemTime>,
    key: SigningKey,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("path", &self.path)
            .field("kid", &self.kid)
            .field("starts_at", &self.starts_at)
            .finish_non_exhaustive()
    }
}

/// The keys directory.
#[derive(Debug, Clone)]
pub struct KeyDirectory {
    path: PathBuf,
}

impl KeyDirectory {
    /// The directory at `path` (not read yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every key, in signing order (by start, then `kid`: the ring's order). A key file that
    /// does not parse is an error (a broken key must not silently drop out of the ring).
    pub fn load(&self) -> Result<Vec<StoredKey>, anyhow::Error> {
        let entries = fs::read_dir(&self.path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.path.display()))?;
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(starts_at) = name.to_str().and_then(starts_at_of) else {
                continue;
            };
            let path = entry.path();
            let pem = fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let key = parse_ed25519_pem(&path, &pem)?;
            let kid = super::keys::ed25519_kid(&key);
            let created = entry.metadata().ok().and_then(|m| m.modified().ok());
            keys.push(StoredKey {
                path,
                kid,
                starts_at,
                created,
                key,
            });
        }
        keys.sort_by(|a, b| (a.starts_at, &a.kid).cmp(&(b.starts_at, &b.kid)));
        Ok(keys)
    }

    /// Makes sure the directory holds a key: when it holds none, the key of `legacy` (the single
    /// key file of earlier versions) if that exists, else a new one; either signs from the
    /// start. Instances starting at once agree on one (the file is linked into place once).
    /// Whether a key was generated.
    pub fn ensure_key(&self, legacy: Option<&Path>) -> Result<bool, anyhow::Error> {
        create_private_dir(&self.path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", self.path.display()))?;
        if !self.load()?.is_empty() {
            return Ok(false);
        }
        if let Some(legacy) = legacy.filter(|legacy| legacy.exists()) {
            let pem = fs::read_to_string(legacy)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", legacy.display()))?;
            let key = parse_ed25519_pem(legacy, &pem)?;
            write_new_private_file(
                &self.path.join("key-0-adopted.pem"),
                pkcs8_v1_pem(&key)?.as_bytes(),
            )?;
            return Ok(false);
        }
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        write_new_private_file(
            &self.path.join("key-0-initial.pem"),
            pkcs8_v1_pem(&key)?.as_bytes(),
        )?;
        Ok(true)
    }

    /// Adds a new key, published at once, signing from `now + lead`.
    pub fn rotate(&self, now: UnixSeconds, lead: Duration) -> Result<StoredKey, anyhow::Error> {
        create_private_dir(&self.path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", self.path.display()))?;
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let starts_at = now.saturating_add(i64::try_from(lead.as_secs()).unwrap_or(i64::MAX));
        let kid = super::keys::ed25519_kid(&key);
        let path = self.path.join(format!(
            "key-{starts_at}-{}.pem",
            kid.get(..12).unwrap_or(&kid).replace(['-', '_'], "x")
        ));
        write_new_private_file(&path, pkcs8_v1_pem(&key)?.as_bytes())?;
        Ok(StoredKey {
            path,
            kid,
            starts_at,
            created: Some(SystemTime::now()),
            key,
        })
    }

    /// Removes the keys no token can still need at `now`: superseded by a key that started
    /// signing more than `token_lifetime` (access-token TTL plus leeway) ago. The keys removed.
    pub fn prune(
        &self,
        now: UnixSeconds,
        token_lifetime: Duration,
    ) -> Result<Vec<StoredKey>, anyhow::Error> {
        let lifetime = i64::try_from(token_lifetime.as_secs()).unwrap_or(i64::MAX);
        let keys = self.load()?;
        let states = states(&keys, now);
        let mut removed = Vec::new();
        for (index, key) in keys.into_iter().enumerate() {
            // The key that replaced this one is the next in signing order.
            let replaced_at = states.get(index + 1).map(|(_, starts_at)| *starts_at);
            let expired = states[index].0 == KeyState::Retiring
                && replaced_at.is_some_and(|at| now > at.saturating_add(lifetime));
            if expired {
                removed.push(key);
            }
        }
        for key in &removed {
            fs::remove_file(&key.path)
                .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", key.path.display()))?;
        }
        Ok(removed)
    }
}

/// Each key's state at `now`, with its start (same order as `keys`).
pub fn states(keys: &[StoredKey], now: UnixSeconds) -> Vec<(KeyState, UnixSeconds)> {
    let active = keys
        .iter()
        .rposition(|key| key.starts_at <= now)
        .unwrap_or(0);
    keys.iter()
        .enumerate()
        .map(|(index, key)| {
            let state = match index.cmp(&active) {
                std::cmp::Ordering::Less => KeyState::Retiring,
                std::cmp::Ordering::Equal => KeyState::Active,
                std::cmp::Ordering::Greater => KeyState::Next,
            };
            (state, key.starts_at)
        })
        .collect()
}

/// The keys as the ring takes them.
pub fn scheduled(keys: Vec<StoredKey>) -> Vec<ScheduledKey> {
    keys.into_iter()
        .map(|key| ScheduledKey {
            material: SigningKeyMaterial::Ed25519(key.key),
            starts_at: key.starts_at,
        })
        .collect()
}

/// The start of a key file named `key-<starts_at>-<label>.pem`; `None` for any other name.
fn starts_at_of(name: &str) -> Option<UnixSeconds> {
    let rest = name.strip_prefix("key-")?.strip_suffix(".pem")?;
    let (starts_at, label) = rest.split_once('-')?;
    if label.is_empty() || !starts_at.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    starts_at.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIME: Duration = Duration::from_secs(905);

    #[test]
    fn a_fresh_directory_gets_one_key_that_signs_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDirectory::new(dir.path().join("keys"));
        assert!(keys.ensure_key(None).unwrap());
        assert!(!keys.ensure_key(None).unwrap(), "only once");
        let loaded = keys.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(states(&loaded, 0), vec![(KeyState::Active, 0)]);
    }

    #[test]
    fn an_earlier_single_key_file_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("signing-key.pem");
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        fs::write(&legacy, pkcs8_v1_pem(&key).unwrap()).unwrap();
        let keys = KeyDirectory::new(dir.path().join("keys"));
        assert!(!keys.ensure_key(Some(&legacy)).unwrap());
        let loaded = keys.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].kid, super::super::keys::ed25519_kid(&key));
    }

    #[test]
    fn rotation_publishes_a_next_key_that_signs_after_the_lead() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDirectory::new(dir.path());
        keys.ensure_key(None).unwrap();
        let next = keys.rotate(1_000, Duration::from_secs(600)).unwrap();
        assert_eq!(next.starts_at, 1_600);
        let loaded = keys.load().unwrap();
        let at = |now| {
            states(&loaded, now)
                .into_iter()
                .map(|(s, _)| s)
                .collect::<Vec<_>>()
        };
        assert_eq!(at(1_599), [KeyState::Active, KeyState::Next]);
        assert_eq!(at(1_600), [KeyState::Retiring, KeyState::Active]);
    }

    #[test]
    fn prune_keeps_a_retiring_key_until_its_last_token_has_expired() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDirectory::new(dir.path());
        keys.ensure_key(None).unwrap();
        keys.rotate(1_000, Duration::from_secs(600)).unwrap();
        assert!(keys.prune(1_600 + 905, LIFETIME).unwrap().is_empty());
        assert_eq!(keys.load().unwrap().len(), 2);
        let removed = keys.prune(1_600 + 906, LIFETIME).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].starts_at, 0);
        assert_eq!(keys.load().unwrap().len(), 1);
        // The active key is never pruned, however old.
        assert!(keys.prune(i64::MAX / 2, LIFETIME).unwrap().is_empty());
    }

    #[test]
    fn other_files_are_ignored_and_a_broken_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDirectory::new(dir.path());
        keys.ensure_key(None).unwrap();
        fs::write(dir.path().join("README"), "not a key").unwrap();
        fs::write(dir.path().join("key-x-y.pem"), "not a key").unwrap();
        fs::write(dir.path().join(".key-1-tmp.pem"), "not a key").unwrap();
        assert_eq!(keys.load().unwrap().len(), 1);
        fs::write(dir.path().join("key-5-broken.pem"), "garbage").unwrap();
        assert!(keys.load().is_err());
    }
}
