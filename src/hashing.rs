//! Password hashing: argon2id on a dedicated pool of threads — one per
//! core by default, SCHED_BATCH at niceness 19 — fed by two bounded queues, verifications (Login)
//! before new hashes (Register). Past its queue, a request is shed at once (`Overloaded`), so a
//! flood costs bounded memory, a registration flood cannot take Login's places, and Verify, which
//! runs on the async workers at normal priority, never waits behind argon2.
//!
//! New hashes use the configured [`PasswordParams`] (OWASP's m=19 MiB, t=2, p=1 by default), which
//! must meet one of OWASP's minimums ([`OWASP_MINIMUM_PARAMS`]) and stay within the ceiling below.
//! A stored hash made with other parameters still verifies; [`PasswordHasher::needs_rehash`] tells
//! the caller to hash the password again, and [`PasswordHasher::verify_keeping`] hands the password
//! back for that.
//!
//! Each hashing thread owns one argon2 memory buffer (the configured memory, 19 MiB by default) for
//! its whole life. Allocating it per hash, as `Argon2::hash_password` does, costs thousands of page
//! faults per hash and, with glibc, grows the heap by about that much per hash (64-byte-aligned
//! allocations of that size are not reused); the pool's memory is therefore exactly threads × the
//! configured memory.
//!
//! A stored hash is refused before verifying if it is not argon2id or names parameters above the
//! ceiling: the argon2 crate verifies with whatever parameters the stored string names, so a
//! tampered row could otherwise make one Login allocate gigabytes. The configured parameters must
//! stay within the same ceiling, so that every hash authd makes it can verify.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use tokio::sync::oneshot;

use crate::domain::{Password, PasswordHashString};

/// Default parameters, OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
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
/// OWASP Password Storage Cheat Sheet: the argon2id configurations of equal strength it lists as
/// minimums (p=1 each). Configured parameters must have at least the memory and the iterations of
/// one of them (and p ≥ 1).
pub const OWASP_MINIMUM_PARAMS: [PasswordParams; 5] = [
    PasswordParams::minimum(47_104, 1),
    PasswordParams::minimum(19_456, 2),
    PasswordParams::minimum(12_288, 3),
    PasswordParams::minimum(9_216, 4),
    PasswordParams::minimum(7_168, 5),
];
/// Length of the hash output authd writes, in bytes.
const OUTPUT_LEN: usize = Params::DEFAULT_OUTPUT_LEN;
/// Niceness of hashing threads where SCHED_IDLE is not available.
const HASHING_THREAD_NICENESS: i32 = 19;

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
    #[error("password hashing failed")]
    Unexpected(#[source] anyhow::Error),
}

impl HashError {
    fn unexpected(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unexpected(cause.into())
    }
}

/// How much hashing may happen at once, and how much may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingLimits {
    /// Hashing threads (default: one per core).
    pub concurrency: usize,
    /// Hashes that may wait for a thread before new ones are shed (AUTHD_HASH_QUEUE). Each
    /// waiting request holds a few hundred bytes; only running hashes hold argon2's memory.
    pub queue: usize,
}

/// The argon2id parameters new hashes are made with: at least one of [`OWASP_MINIMUM_PARAMS`], at
/// most the ceiling for stored hashes. Only [`PasswordParams::new`] makes one, so an out-of-range
/// configuration cannot reach the hasher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

/// One of the three argon2 parameters, to say which one was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordParameter {
    /// Memory, in KiB (argon2's m).
    MemoryKib,
    /// Passes over the memory (argon2's t).
    Iterations,
    /// Lanes (argon2's p).
    Parallelism,
}

/// Why [`PasswordParams::new`] refused; [`PasswordParamsError::parameter`] names the one to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordParamsError {
    /// Less memory than OWASP asks for with this many iterations.
    #[error(
        "{memory_kib} KiB with {iterations} iteration(s) is below OWASP's minimum for argon2id, \
         {minimum_kib} KiB (OWASP's minimums, p=1: {})",
        owasp_minimums_listed()
    )]
    BelowFloor {
        /// The memory asked for.
        memory_kib: u32,
        /// The iterations asked for.
        iterations: u32,
        /// The least memory OWASP accepts with that many iterations.
        minimum_kib: u32,
    },
    /// More than verification accepts for a stored hash.
    #[error("{value} is above {ceiling}, the most verification accepts for stored hashes")]
    AboveCeiling {
        /// Which parameter.
        parameter: PasswordParameter,
        /// The value asked for.
        value: u32,
        /// The ceiling.
        ceiling: u32,
    },
    /// Zero iterations or lanes.
    #[error("must be at least 1")]
    Zero {
        /// Which parameter.
        parameter: PasswordParameter,
    },
}

impl PasswordParamsError {
    /// The parameter to change (memory, for a configuration below OWASP's minimums).
    pub fn parameter(&self) -> PasswordParameter {
        match self {
            Self::BelowFloor { .. } => PasswordParameter::MemoryKib,
            Self::AboveCeiling { parameter, .. } | Self::Zero { parameter } => *parameter,
        }
    }
}

impl PasswordParams {
    /// OWASP's recommendation: m=19456 KiB, t=2, p=1.
    pub const DEFAULT: Self = Self {
        memory_kib: DEFAULT_M_COST_KIB,
        iterations: DEFAULT_T_COST,
        parallelism: DEFAULT_P_COST,
    };

    /// Parameters with at least the memory and iterations of one of [`OWASP_MINIMUM_PARAMS`], at
    /// least one lane, and none above the ceiling for stored hashes.
    pub fn new(
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
    ) -> Result<Self, PasswordParamsError> {
        for (parameter, value) in [
            (PasswordParameter::Iterations, iterations),
            (PasswordParameter::Parallelism, parallelism),
        ] {
            if value == 0 {
                return Err(PasswordParamsError::Zero { parameter });
            }
        }
        for (parameter, value, ceiling) in [
            (PasswordParameter::MemoryKib, memory_kib, MAX_M_COST_KIB),
            (PasswordParameter::Iterations, iterations, MAX_T_COST),
            (PasswordParameter::Parallelism, parallelism, MAX_P_COST),
        ] {
            if value > ceiling {
                return Err(PasswordParamsError::AboveCeiling {
                    parameter,
                    value,
                    ceiling,
                });
            }
        }
        // Iterations ≥ 1 here, and OWASP lists t=1, so there is always a minimum.
        let minimum_kib = OWASP_MINIMUM_PARAMS
            .iter()
            .filter(|floor| floor.iterations <= iterations)
            .map(|floor| floor.memory_kib)
            .min()
            .unwrap_or(u32::MAX);
        if memory_kib < minimum_kib {
            return Err(PasswordParamsError::BelowFloor {
                memory_kib,
                iterations,
                minimum_kib,
            });
        }
        Ok(Self {
            memory_kib,
            iterations,
            parallelism,
        })
    }

    /// One of OWASP's minimums, p=1 (for [`OWASP_MINIMUM_PARAMS`]).
    const fn minimum(memory_kib: u32, iterations: u32) -> Self {
        Self {
            memory_kib,
            iterations,
            parallelism: 1,
        }
    }

    /// Memory per hash, in KiB (argon2's m).
    pub const fn memory_kib(&self) -> u32 {
        self.memory_kib
    }

    /// Passes over the memory (argon2's t).
    pub const fn iterations(&self) -> u32 {
        self.iterations
    }

    /// Lanes (argon2's p).
    pub const fn parallelism(&self) -> u32 {
        self.parallelism
    }

    /// The argon2 crate's parameters.
    fn argon2_params(&self) -> Result<Params, HashError> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(HashError::unexpected)
    }
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl std::fmt::Display for PasswordParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "m={} t={} p={}",
            self.memory_kib, self.iterations, self.parallelism
        )
    }
}

/// "m=47104 t=1, m=19456 t=2, …", for messages.
fn owasp_minimums_listed() -> String {
    OWASP_MINIMUM_PARAMS
        .iter()
        .map(|floor| format!("m={} t={}", floor.memory_kib, floor.iterations))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Work for a hashing thread, given that thread's argon2 memory.
type Job = Box<dyn FnOnce(&mut ArgonMemory) + Send>;

/// A hashing thread's reusable argon2 memory.
pub struct ArgonMemory {
    blocks: Vec<Block>,
}

impl ArgonMemory {
    /// Memory for `params`, allocated (and touched) once.
    fn for_params(params: &Params) -> Self {
        Self {
            blocks: vec![Block::default(); params.block_count()],
        }
    }

    /// Runs argon2id with `params` in this memory, or, for a stored hash that needs more than the
    /// configured amount (within the ceiling), in a temporary allocation.
    fn hash_into(
        &mut self,
        params: &Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), HashError> {
        let argon2 = argon2id(params);
        let needed = params.block_count();
        let result = if needed <= self.blocks.len() {
            argon2.hash_password_into_with_memory(password, salt, out, &mut self.blocks[..needed])
        } else {
            argon2.hash_password_into_with_memory(
                password,
                salt,
                out,
                vec![Block::default(); needed],
            )
        };
        result.map_err(HashError::unexpected)
    }
}

/// Hashes and verifies passwords on a dedicated, bounded pool. Cheap to clone; the threads stop
/// when the last clone is dropped.
#[derive(Clone)]
pub struct PasswordHasher {
    /// The configured parameters, for new hashes.
    params: Params,
    /// Verifications (Login): served first by every thread, with a queue of their own.
    verifications: Sender<Job>,
    /// New hashes (Register): a queue of their own, taken only when no verification waits, so
    /// that a registration flood is shed at its own queue and cannot starve sign-ins.
    new_hashes: Sender<Job>,
    /// Verified when the email is unknown, so that timing reveals nothing.
    dummy_hash: Arc<PasswordHashString>,
}

impl PasswordHasher {
    /// Starts the hashing threads, each with memory for `params`, the parameters of new hashes.
    pub fn new(limits: HashingLimits, params: PasswordParams) -> Result<Self, HashError> {
        let params = params.argon2_params()?;
        let dummy_hash = hash_blocking(
            &params,
            b"authd dummy password for unknown users",
            &mut ArgonMemory::for_params(&params),
        )?;
        let (verifications, verification_queue) = crossbeam_channel::bounded::<Job>(limits.queue);
        let (new_hashes, new_hash_queue) = crossbeam_channel::bounded::<Job>(limits.queue);
        for index in 0..limits.concurrency.max(1) {
            let queues = (verification_queue.clone(), new_hash_queue.clone());
            let params = params.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    lower_this_thread_priority();
                    let mut memory = ArgonMemory::for_params(&params);
                    // Ends when every sender (every PasswordHasher clone) is gone.
                    while let Some(job) = next_job(&queues.0, &queues.1) {
                        job(&mut memory);
                    }
                })
                .map_err(|e| {
                    HashError::Unexpected(
                        anyhow::Error::new(e).context("cannot start a hashing thread"),
                    )
                })?;
        }
        Ok(Self {
            params,
            verifications,
            new_hashes,
            dummy_hash: Arc::new(dummy_hash),
        })
    }

    /// Hashes a new password into an argon2id PHC string with a fresh random salt.
    #[tracing::instrument(name = "password.hash", level = "debug", skip_all)]
    pub async fn hash(&self, password: Password) -> Result<PasswordHashString, HashError> {
        let params = self.params.clone();
        self.run(&self.new_hashes, move |memory| {
            hash_blocking(&params, password.expose_bytes(), memory)
        })
        .await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no user, so
    /// that both cases cost one argon2 verification. Returns whether it matched (never for `None`).
    pub async fn verify(
        &self,
        password: Password,
        stored: Option<PasswordHashString>,
    ) -> Result<bool, HashError> {
        let (matched, _password) = self.verify_keeping(password, stored).await?;
        Ok(matched)
    }

    /// [`verify`](Self::verify), handing the password back with the verdict, for a rehash (see
    /// [`needs_rehash`](Self::needs_rehash)). The same secret moves to the hashing thread and
    /// back, never copied; dropped, it is zeroized as always. On an error it is dropped there.
    #[tracing::instrument(name = "password.verify", level = "debug", skip_all)]
    pub async fn verify_keeping(
        &self,
        password: Password,
        stored: Option<PasswordHashString>,
    ) -> Result<(bool, Password), HashError> {
        let user_exists = stored.is_some();
        let dummy = self.dummy_hash.clone();
        let (matched, password) = self
            .run(&self.verifications, move |memory| {
                let hash = stored.as_ref().unwrap_or(&dummy);
                let matched = verify_blocking(password.expose_bytes(), hash, memory);
                (matched, password)
            })
            .await?;
        Ok((matched? && user_exists, password))
    }

    /// Hashes waiting for a thread (both queues).
    pub fn queued(&self) -> usize {
        self.verifications.len() + self.new_hashes.len()
    }

    /// Whether `stored` was made otherwise than new hashes are: another algorithm or version, other
    /// m, t or p, another output length, or a key id or associated data. False for a string that
    /// does not parse (it cannot have verified either).
    pub fn needs_rehash(&self, stored: &PasswordHashString) -> bool {
        let Ok(parsed) = PasswordHash::new(stored.as_str()) else {
            return false;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        parsed.algorithm.as_str() != "argon2id"
            || parsed.version != Some(0x13)
            || params.m_cost() != self.params.m_cost()
            || params.t_cost() != self.params.t_cost()
            || params.p_cost() != self.params.p_cost()
            || params.output_len() != Some(OUTPUT_LEN)
            || !params.keyid().is_empty()
            || !params.data().is_empty()
    }

    /// Queues `job` on `queue` for a hashing thread; sheds it at once when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        queue: &Sender<Job>,
        job: impl FnOnce(&mut ArgonMemory) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (result_tx, result_rx) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // The caller gave up (cancelled or timed out) while queued: skip the work.
            if !result_tx.is_closed() {
                let _ = result_tx.send(job(memory));
            }
        });
        queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => HashError::Overloaded,
            TrySendError::Disconnected(_) => {
                HashError::Unexpected(anyhow::anyhow!("hashing threads are gone"))
            }
        })?;
        result_rx
            .await
            .map_err(|_| HashError::Unexpected(anyhow::anyhow!("a hashing thread dropped its job")))
    }
}

/// The next job for a hashing thread: a waiting verification if there is one, else whichever
/// comes first. `None` once every sender is gone.
fn next_job(verifications: &Receiver<Job>, new_hashes: &Receiver<Job>) -> Option<Job> {
    match verifications.try_recv() {
        Ok(job) => return Some(job),
        Err(TryRecvError::Disconnected) => return None,
        Err(TryRecvError::Empty) => {}
    }
    crossbeam_channel::select_biased! {
        recv(verifications) -> job => job.ok(),
        recv(new_hashes) -> job => job.ok(),
    }
}

/// Puts the calling thread in Linux's SCHED_BATCH class (CPU-bound, no wake-up preemption) at
/// the lowest niceness, so that Verify workers, at normal priority, come first. Not SCHED_IDLE,
/// which runs a thread only when nothing else wants the core: a flood of cheap requests (shed
/// registrations, Verify at full rate) kept both cores busy and starved every Login of its hash
/// for good (each timed out). Niceness 19 still leaves hashing a small share of a busy core.
fn lower_this_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: both calls take plain values and a pointer to a live local; pid/who 0 is the calling
    // thread (Linux scheduling attributes are per thread).
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
        libc::setpriority(libc::PRIO_PROCESS, 0, HASHING_THREAD_NICENESS);
    }
}

fn argon2id(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// Hashes `password` with a fresh random salt into a PHC string.
fn hash_blocking(
    params: &Params,
    password: &[u8],
    memory: &mut ArgonMemory,
) -> Result<PasswordHashString, HashError> {
    let unexpected = |e: &dyn std::fmt::Display| HashError::Unexpected(anyhow::anyhow!("{e}"));
    let salt = argon2::password_hash::try_generate_salt().map_err(|e| unexpected(&e))?;
    let mut output = [0u8; OUTPUT_LEN];
    memory.hash_into(params, password, &salt, &mut output)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| unexpected(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| unexpected(&e))?),
        hash: Some(Output::new(&output).map_err(|e| unexpected(&e))?),
    };
    Ok(PasswordHashString::from_phc(hash.to_string()))
}

/// Recomputes the stored hash's output from `password` and compares in constant time.
fn verify_blocking(
    password: &[u8],
    stored: &PasswordHashString,
    memory: &mut ArgonMemory,
) -> Result<bool, HashError> {
    let parsed = PasswordHash::new(stored.as_str())
        .map_err(|e| HashError::UnacceptableStoredHash(format!("unparsable: {e}")))?;
    let params = check_stored_params(&parsed)?;
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return Err(HashError::UnacceptableStoredHash(
            "no salt or output".into(),
        ));
    };
    let mut output = vec![0u8; expected.len()];
    memory.hash_into(&params, password, salt.as_ref(), &mut output)?;
    let computed = Output::new(&output).map_err(HashError::unexpected)?;
    // `Output`'s equality is constant-time.
    Ok(computed == *expected)
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
        let hasher = PasswordHasher::new(
            HashingLimits {
                concurrency: 2,
                queue: 8,
            },
            PasswordParams::default(),
        )
        .unwrap();
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
    async fn hashes_interoperate_with_the_argon2_crate_own_api() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let hasher = PasswordHasher::new(
            HashingLimits {
                concurrency: 1,
                queue: 8,
            },
            PasswordParams::default(),
        )
        .unwrap();
        let ours = hasher.hash(password("correct horse")).await.unwrap();
        let parsed = PasswordHash::new(ours.as_str()).unwrap();
        Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .unwrap();
        let theirs = Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        let theirs = PasswordHashString::from_phc(theirs);
        assert!(
            hasher
                .verify(password("correct horse"), Some(theirs.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify(password("correct horsf"), Some(theirs))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn unknown_user_never_matches_even_the_dummy_password() {
        let hasher = PasswordHasher::new(
            HashingLimits {
                concurrency: 1,
                queue: 8,
            },
            PasswordParams::default(),
        )
        .unwrap();
        let dummy = Password::parse_offered("authd dummy password for unknown users").unwrap();
        assert!(!hasher.verify(dummy, None).await.unwrap());
    }

    #[tokio::test]
    async fn stored_hashes_beyond_the_ceiling_or_not_argon2id_are_refused() {
        let hasher = PasswordHasher::new(
            HashingLimits {
                concurrency: 1,
                queue: 8,
            },
            PasswordParams::default(),
        )
        .unwrap();
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
                    Some(PasswordHashString::from_phc(stored.clone())),
                )
                .await;
            assert!(
                matches!(result, Err(HashError::UnacceptableStoredHash(_))),
                "{stored}: {result:?}"
            );
        }
    }

    fn one_thread() -> HashingLimits {
        HashingLimits {
            concurrency: 1,
            queue: 8,
        }
    }

    #[test]
    fn each_owasp_minimum_is_accepted_and_anything_below_refused() {
        assert_eq!(
            PasswordParams::new(19_456, 2, 1),
            Ok(PasswordParams::DEFAULT)
        );
        for floor in OWASP_MINIMUM_PARAMS {
            let (m, t) = (floor.memory_kib(), floor.iterations());
            assert_eq!(PasswordParams::new(m, t, 1), Ok(floor), "{floor}");
            // More of anything (within the ceiling) is fine too.
            PasswordParams::new(m + 1024, t + 1, 2).unwrap();
            let refused = PasswordParams::new(m - 1, t, 1).unwrap_err();
            assert_eq!(refused.parameter(), PasswordParameter::MemoryKib, "{floor}");
            assert!(refused.to_string().contains("m=7168 t=5"), "{refused}");
            let expected = if t == 1 {
                PasswordParameter::Iterations
            } else {
                PasswordParameter::MemoryKib
            };
            assert_eq!(
                PasswordParams::new(m, t - 1, 1).unwrap_err().parameter(),
                expected,
                "{floor}"
            );
            assert_eq!(
                PasswordParams::new(m, t, 0).unwrap_err(),
                PasswordParamsError::Zero {
                    parameter: PasswordParameter::Parallelism
                }
            );
        }
        // Beyond t=5, the least memory stays OWASP's last row.
        PasswordParams::new(7_168, 8, 1).unwrap();
        assert!(PasswordParams::new(7_167, 8, 1).is_err());
    }

    #[test]
    fn parameters_above_the_verification_ceiling_are_refused() {
        PasswordParams::new(MAX_M_COST_KIB, MAX_T_COST, MAX_P_COST).unwrap();
        for (params, parameter) in [
            ((MAX_M_COST_KIB + 1, 2, 1), PasswordParameter::MemoryKib),
            ((19_456, MAX_T_COST + 1, 1), PasswordParameter::Iterations),
            ((19_456, 2, MAX_P_COST + 1), PasswordParameter::Parallelism),
        ] {
            let refused = PasswordParams::new(params.0, params.1, params.2).unwrap_err();
            assert!(
                matches!(refused, PasswordParamsError::AboveCeiling { parameter: p, .. } if p == parameter),
                "{params:?}: {refused:?}"
            );
        }
    }

    #[tokio::test]
    async fn new_hashes_use_the_configured_parameters() {
        let params = PasswordParams::new(7_168, 5, 2).unwrap();
        let hasher = PasswordHasher::new(one_thread(), params).unwrap();
        let hash = hasher.hash(password("correct horse")).await.unwrap();
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$m=7168,t=5,p=2$"),
            "{}",
            hash.as_str()
        );
        assert!(
            hasher
                .verify(password("correct horse"), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn only_hashes_made_with_other_parameters_need_a_rehash() {
        let configured =
            PasswordHasher::new(one_thread(), PasswordParams::new(7_168, 5, 1).unwrap()).unwrap();
        let other =
            PasswordHasher::new(one_thread(), PasswordParams::new(9_216, 4, 1).unwrap()).unwrap();
        let own = configured.hash(password("correct horse")).await.unwrap();
        let others = other.hash(password("correct horse")).await.unwrap();
        assert!(!configured.needs_rehash(&own));
        assert!(configured.needs_rehash(&others));
        assert!(other.needs_rehash(&own));
        let salt = "c29tZXNhbHRzb21lc2FsdA";
        let out = "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        let short = "aGFzaGhhc2hoYXNoaGFzaA";
        let phc = |s: String| PasswordHashString::from_phc(s);
        assert!(
            !configured.needs_rehash(&phc(format!("$argon2id$v=19$m=7168,t=5,p=1${salt}${out}")))
        );
        for stale in [
            format!("$argon2id$v=19$m=7168,t=5,p=1${salt}${short}"),
            format!("$argon2id$v=16$m=7168,t=5,p=1${salt}${out}"),
            format!("$argon2id$m=7168,t=5,p=1${salt}${out}"),
            format!("$argon2i$v=19$m=7168,t=5,p=1${salt}${out}"),
            format!("$argon2id$v=19$m=7168,t=5,p=2${salt}${out}"),
        ] {
            assert!(configured.needs_rehash(&phc(stale.clone())), "{stale}");
        }
        for unparsable in ["", "$2b$12$notargon", "$argon2id$v=19$m=lots,t=5,p=1$x$y"] {
            assert!(
                !configured.needs_rehash(&phc(unparsable.into())),
                "{unparsable}"
            );
        }
    }

    #[tokio::test]
    async fn verify_keeping_hands_the_password_back_with_the_verdict() {
        let hasher =
            PasswordHasher::new(one_thread(), PasswordParams::new(7_168, 5, 1).unwrap()).unwrap();
        let stored = hasher.hash(password("correct horse")).await.unwrap();
        let (matched, kept) = hasher
            .verify_keeping(password("correct horse"), Some(stored))
            .await
            .unwrap();
        assert!(matched);
        assert_eq!(kept.expose_bytes(), b"correct horse");
        // The kept password rehashes, and the new hash verifies.
        let rehashed = hasher.hash(kept).await.unwrap();
        assert!(
            hasher
                .verify(password("correct horse"), Some(rehashed.clone()))
                .await
                .unwrap()
        );
        let (matched, kept) = hasher
            .verify_keeping(password("wrong horse"), Some(rehashed))
            .await
            .unwrap();
        assert!(!matched);
        assert_eq!(kept.expose_bytes(), b"wrong horse");
        let (matched, _) = hasher
            .verify_keeping(password("correct horse"), None)
            .await
            .unwrap();
        assert!(!matched);
    }

    /// A registration hash that holds a one-thread pool's thread until `release` is sent.
    async fn occupy_the_only_thread(
        hasher: &PasswordHasher,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<Option<()>, HashError>>,
    ) {
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = oneshot::channel::<()>();
        let running = tokio::spawn({
            let hasher = hasher.clone();
            async move {
                hasher
                    .run(&hasher.new_hashes, move |_| {
                        let _ = started_tx.send(());
                        blocked.recv().ok()
                    })
                    .await
            }
        });
        started.await.unwrap();
        (release, running)
    }

    #[tokio::test]
    async fn a_full_queue_sheds_load_at_once() {
        let hasher = PasswordHasher::new(
            HashingLimits {
                concurrency: 1,
                queue: 1,
            },
            PasswordParams::default(),
        )
        .unwrap();
        let (release, running) = occupy_the_only_thread(&hasher).await;
        let queued = tokio::spawn({
            let hasher = hasher.clone();
            async move { hasher.run(&hasher.new_hashes, |_| ()).await }
        });
        while hasher.new_hashes.is_empty() {
            tokio::task::yield_now().await;
        }
        let shed = hasher.hash(password("correct horse")).await;
        assert!(
            matches!(shed, Err(HashError::Overloaded)),
            "{:?}",
            shed.map(|_| ())
        );
        release.send(()).unwrap();
        running.await.unwrap().unwrap();
        queued.await.unwrap().unwrap();
        // With the queue drained, hashing works again.
        hasher.hash(password("correct horse")).await.unwrap();
    }

    #[tokio::test]
    async fn verifications_are_served_before_new_hashes_and_not_shed_by_them() {
        let hasher = PasswordHasher::new(
            HashingLimits {
                concurrency: 1,
                queue: 1,
            },
            PasswordParams::default(),
        )
        .unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        // A registration occupies the only thread, another fills the registration queue.
        let (release, running) = occupy_the_only_thread(&hasher).await;
        let queued = tokio::spawn({
            let (hasher, order) = (hasher.clone(), order.clone());
            async move {
                hasher
                    .run(&hasher.new_hashes, move |_| {
                        order.lock().unwrap().push("register")
                    })
                    .await
            }
        });
        while hasher.new_hashes.is_empty() {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            hasher.hash(password("correct horse")).await,
            Err(HashError::Overloaded)
        ));
        // A login still gets in, and is served first.
        let login = tokio::spawn({
            let (hasher, order) = (hasher.clone(), order.clone());
            async move {
                hasher
                    .run(&hasher.verifications, move |_| {
                        order.lock().unwrap().push("login")
                    })
                    .await
            }
        });
        while hasher.verifications.is_empty() {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        running.await.unwrap().unwrap();
        login.await.unwrap().unwrap();
        queued.await.unwrap().unwrap();
        assert_eq!(*order.lock().unwrap(), ["login", "register"]);
    }
}
