//! Password hashing: argon2id with OWASP's parameters, run on the blocking pool with bounded
//! concurrency and a bounded queue, so hashing never stalls the async workers that serve Verify.
//!
//! A stored hash is refused before verifying if it is not argon2id or names parameters above the
//! ceiling: the argon2 crate verifies with whatever parameters the stored string names, so a
//! tampered row could otherwise make one Login allocate gigabytes.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash},
};
use tokio::sync::Semaphore;

use crate::domain::Password;

/// OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
pub const DEFAULT_M_COST_KIB: u32 = Params::DEFAULT_M_COST;
/// See [`DEFAULT_M_COST_KIB`].
pub const DEFAULT_T_COST: u32 = Params::DEFAULT_T_COST;
/// See [`DEFAULT_M_COST_KIB`].
pub const DEFAULT_P_COST: u32 = Params::DEFAULT_P_COST;
/// Ceiling for stored hashes: at most 64 MiB of memory …
pub const MAX_M_COST_KIB: u32 = 64 * 1024;
/// … at most 8 passes …
pub const MAX_T_COST: u32 = 8;
/// … and at most 4 lanes.
pub const MAX_P_COST: u32 = 4;
/// Hashes waiting for a slot, per slot, before new requests are shed.
pub const DEFAULT_QUEUE_PER_SLOT: usize = 64;

/// An argon2id PHC string, as stored in `users.password_hash`.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHashString(String);

impl PasswordHashString {
    /// Wraps a stored PHC string.
    pub fn from_stored(phc: String) -> Self {
        Self(phc)
    }

    /// The PHC string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PasswordHashString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHashString(<redacted>)")
    }
}

/// What can go wrong while hashing or verifying.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Every slot is busy and the queue is full: shed load.
    #[error("password hashing is overloaded")]
    Overloaded,
    /// The stored hash is not argon2id or exceeds the parameter ceiling.
    #[error("stored password hash refused: {0}")]
    UnacceptableStoredHash(String),
    /// A bug or an exhausted runtime.
    #[error("password hashing failed: {0}")]
    Unexpected(String),
}

/// Hashes and verifies passwords on a bounded pool.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    slots: Arc<Semaphore>,
    /// Requests admitted (running or queued); bounded by `max_admitted`.
    admitted: Arc<AtomicUsize>,
    max_admitted: usize,
    /// Verified when the email is unknown, so that timing reveals nothing.
    dummy_hash: PasswordHashString,
}

impl PasswordHasher {
    /// A hasher with the default parameters and `concurrency` simultaneous hashes.
    pub fn new(concurrency: usize) -> Result<Self, HashError> {
        let params = Params::new(DEFAULT_M_COST_KIB, DEFAULT_T_COST, DEFAULT_P_COST, None)
            .map_err(|e| HashError::Unexpected(e.to_string()))?;
        let concurrency = concurrency.max(1);
        let dummy_hash = hash_blocking(&params, b"authd dummy password for unknown users")?;
        Ok(Self {
            params,
            slots: Arc::new(Semaphore::new(concurrency)),
            admitted: Arc::new(AtomicUsize::new(0)),
            max_admitted: concurrency * (1 + DEFAULT_QUEUE_PER_SLOT),
            dummy_hash,
        })
    }

    /// Hashes a new password into an argon2id PHC string with a fresh random salt.
    pub async fn hash(&self, password: Password) -> Result<PasswordHashString, HashError> {
        let params = self.params.clone();
        self.run(move || hash_blocking(&params, password.expose_bytes()))
            .await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no user, so
    /// that both cases cost one argon2 verification. Returns whether it matched (never for `None`).
    pub async fn verify(
        &self,
        password: Password,
        stored: Option<PasswordHashString>,
    ) -> Result<bool, HashError> {
        let user_exists = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let matched = self
            .run(move || verify_blocking(password.expose_bytes(), &hash))
            .await??;
        Ok(matched && user_exists)
    }

    /// Runs `job` on the blocking pool once a slot is free; sheds load when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _admission = Admission::try_new(&self.admitted, self.max_admitted)?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| HashError::Unexpected("hashing pool closed".into()))?;
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| HashError::Unexpected(e.to_string()))
    }
}

/// A place in the admitted set, given back on drop (also when the request is cancelled).
struct Admission<'a>(&'a AtomicUsize);

impl<'a> Admission<'a> {
    fn try_new(admitted: &'a AtomicUsize, max: usize) -> Result<Self, HashError> {
        let before = admitted.fetch_add(1, Ordering::AcqRel);
        let admission = Self(admitted);
        if before >= max {
            return Err(HashError::Overloaded);
        }
        Ok(admission)
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn argon2id(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, password: &[u8]) -> Result<PasswordHashString, HashError> {
    let hash = argon2id(params)
        .hash_password(password)
        .map_err(|e| HashError::Unexpected(e.to_string()))?;
    Ok(PasswordHashString(hash.to_string()))
}

fn verify_blocking(password: &[u8], stored: &PasswordHashString) -> Result<bool, HashError> {
    let parsed = PasswordHash::new(stored.as_str())
        .map_err(|e| HashError::UnacceptableStoredHash(format!("unparsable: {e}")))?;
    let params = check_stored_params(&parsed)?;
    match argon2id(&params).verify_password(password, &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(HashError::UnacceptableStoredHash(e.to_string())),
    }
}

/// Refuses anything but argon2id v19 within the parameter ceiling.
fn check_stored_params(parsed: &PasswordHash) -> Result<Params, HashError> {
    let refuse = |reason: String| Err(HashError::UnacceptableStoredHash(reason));
    if parsed.algorithm.as_str() != "argon2id" {
        return refuse(format!(
            "algorithm {} is not argon2id",
            parsed.algorithm.as_str()
        ));
    }
    if parsed.version.is_some_and(|v| v != 0x13) {
        return refuse("argon2 version is not 19".into());
    }
    let params =
        Params::try_from(parsed).map_err(|e| HashError::UnacceptableStoredHash(e.to_string()))?;
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return refuse(format!(
            "parameters m={} t={} p={} exceed the ceiling m={MAX_M_COST_KIB} t={MAX_T_COST} p={MAX_P_COST}",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        ));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn password(raw: &str) -> Password {
        Password::parse_new(raw).unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let hasher = PasswordHasher::new(2).unwrap();
        let hash = hasher.hash(password("correct horse")).await.unwrap();
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{}",
            hash.as_str()
        );
        assert!(
            hasher
                .verify(password("correct horse"), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(password("wrong horse"), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn unknown_user_never_matches_even_the_dummy_password() {
        let hasher = PasswordHasher::new(1).unwrap();
        let dummy = Password::parse_offered("authd dummy password for unknown users").unwrap();
        assert!(!hasher.verify(dummy, None).await.unwrap());
    }

    #[tokio::test]
    async fn stored_hashes_beyond_the_ceiling_or_not_argon2id_are_refused() {
        let hasher = PasswordHasher::new(1).unwrap();
        let salt = "c29tZXNhbHRzb21lc2FsdA";
        let out = "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        for stored in [
            format!("$argon2id$v=19$m=4194304,t=2,p=1${salt}${out}"),
            format!("$argon2id$v=19$m=19456,t=100,p=1${salt}${out}"),
            format!("$argon2i$v=19$m=19456,t=2,p=1${salt}${out}"),
            format!("$argon2d$v=19$m=19456,t=2,p=1${salt}${out}"),
            "$2b$12$notargon".to_string(),
        ] {
            let result = hasher
                .verify(
                    password("whatever1"),
                    Some(PasswordHashString::from_stored(stored.clone())),
                )
                .await;
            assert!(
                matches!(result, Err(HashError::UnacceptableStoredHash(_))),
                "{stored}: {result:?}"
            );
        }
    }

    #[test]
    fn admission_is_bounded_and_given_back() {
        let admitted = AtomicUsize::new(0);
        let first = Admission::try_new(&admitted, 1).unwrap();
        assert!(matches!(
            Admission::try_new(&admitted, 1),
            Err(HashError::Overloaded)
        ));
        drop(first);
        assert!(Admission::try_new(&admitted, 1).is_ok());
        assert_eq!(admitted.load(Ordering::SeqCst), 0);
    }
}
