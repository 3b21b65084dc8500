//! The security audit log: one structured event per security-relevant action (registrations,
//! logins and their failures, session refreshes, reuse detection, sessions ended, password
//! changes, revocations, a revocation store that lost its data). Every event goes to the tracing
//! target `authd::audit` (a JSON line with `AUTHD_LOG_FORMAT=json`) and, with `AUTHD_AUDIT_LOG`,
//! to a file of its own as a JSON line, appended by a writer thread and reopened on SIGHUP (for
//! logrotate). An event names the user, the session, the source address, the user agent, the
//! instance and the trace; never a password, a token, a refresh token or a hash of one. A failed
//! login carries a keyed hash of the email instead of the email (SECURITY.md says why).

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, UNIX_EPOCH},
};

use anyhow::Context as _;
use hmac::{Hmac, Mac as _};
use secrecy::{ExposeSecret as _, SecretSlice};
use sha2::Sha256;

use crate::{
    clock::UnixMillis,
    domain::{Email, SessionId, UserAgent, UserId},
};

/// The tracing target of audit events.
pub const TARGET: &str = "authd::audit";
/// The target of this module's own messages (the file cannot be written, …), kept apart from
/// the events.
const OPERATIONS: &str = "authd::audit_log";

/// Events queued for the file before new ones are dropped (and counted) rather than wait.
const FILE_QUEUE: usize = 65_536;

/// A security-relevant action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// An account was created (and signed in).
    UserRegistered,
    /// A password was accepted: Login.
    LoginSucceeded,
    /// A password check was refused: Login, ChangePassword or DeleteAccount (`reason`).
    LoginFailed,
    /// A failed attempt made the throttle refuse the next ones for a while.
    LoginThrottled,
    /// A refresh token was rotated.
    SessionRefreshed,
    /// A spent refresh token was presented again; the session ends.
    SessionRefreshReuseDetected,
    /// Sessions ended (`by`).
    SessionEnded,
    /// A password was changed.
    PasswordChanged,
    /// An account was deleted.
    AccountDeleted,
    /// An access token was revoked by its id.
    TokenRevoked,
    /// The revocation store lost its data; tokens issued before now were cut off.
    RevocationsLost,
}

impl Action {
    /// The event's name in the log.
    pub fn name(self) -> &'static str {
        match self {
            Self::UserRegistered => "user.registered",
            Self::LoginSucceeded => "login.succeeded",
            Self::LoginFailed => "login.failed",
            Self::LoginThrottled => "login.throttled",
            Self::SessionRefreshed => "session.refreshed",
            Self::SessionRefreshReuseDetected => "session.refresh_reuse_detected",
            Self::SessionEnded => "session.ended",
            Self::PasswordChanged => "password.changed",
            Self::AccountDeleted => "account.deleted",
            Self::TokenRevoked => "token.revoked",
            Self::RevocationsLost => "revocations.lost",
        }
    }

    /// `success` for what was done as asked, `failure` for what was refused or went wrong.
    pub fn outcome(self) -> &'static str {
        match self {
            Self::LoginFailed
            | Self::LoginThrottled
            | Self::SessionRefreshReuseDetected
            | Self::RevocationsLost => "failure",
            _ => "success",
        }
    }
}

/// A W3C trace id (the `trace-id` of a `traceparent`), to join an event to its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 16]);

impl TraceId {
    /// The trace id of a `traceparent` header value (version `00` or later), `None` when it is
    /// not one or names the invalid all-zero trace.
    pub fn from_traceparent(header: &[u8]) -> Option<Self> {
        // version "-" trace-id "-" parent-id "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2.
        if header.len() < 55 || header[2] != b'-' || header[35] != b'-' || header[52] != b'-' {
            return None;
        }
        if header.len() > 55 && (header[..2] == *b"00" || header[55] != b'-') {
            return None;
        }
        let hex = |bytes: &[u8]| {
            bytes
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        };
        if !hex(&header[..2])
            || &header[..2] == b"ff"
            || !hex(&header[36..52])
            || header[36..52].iter().all(|b| *b == b'0')
            || !hex(&header[53..55])
        {
            return None;
        }
        Self::from_hex(&header[3..35])
    }

    /// 32 lowercase hex digits, not all zero.
    pub fn from_hex(text: &[u8]) -> Option<Self> {
        if text.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (byte, pair) in id.iter_mut().zip(text.chunks_exact(2)) {
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            *byte = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        (id != [0; 16]).then_some(Self(id))
    }

    /// The 16 bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// From 16 bytes; `None` for all zero.
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(Self(bytes))
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Who asked, as an event records it.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The source address (as the login throttle counts it).
    pub source: Option<IpAddr>,
    /// The `user-agent`.
    pub user_agent: Option<UserAgent>,
    /// The trace the call belongs to.
    pub trace_id: Option<TraceId>,
}

/// One event, built by the use case that did the action.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    action: Action,
    user_id: Option<UserId>,
    session_id: Option<SessionId>,
    reason: Option<&'static str>,
    by: Option<&'static str>,
    sessions_ended: Option<u32>,
    retry_after_seconds: Option<u64>,
    email_hash: Option<String>,
    caller: Option<Caller>,
}

impl AuditEvent {
    /// An event of `action` with nothing else known yet.
    pub fn new(action: Action) -> Self {
        Self {
            action,
            user_id: None,
            session_id: None,
            reason: None,
            by: None,
            sessions_ended: None,
            retry_after_seconds: None,
            email_hash: None,
            caller: None,
        }
    }

    /// The same event as another action.
    pub fn action(mut self, action: Action) -> Self {
        self.action = action;
        self
    }

    /// The same event with no reason.
    pub fn without_reason(mut self) -> Self {
        self.reason = None;
        self
    }

    /// The user it concerns.
    pub fn user(mut self, user_id: UserId) -> Self {
        self.user_id = Some(user_id);
        self
    }

    /// The session it concerns.
    pub fn session(mut self, session_id: SessionId) -> Self {
        self.session_id = Some(session_id);
        self
    }

    /// Why it failed (`invalid_credentials`, `throttled`).
    pub fn reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// What ended the sessions (`logout`, `logout_all`, `password_change`, `revoke_session`,
    /// `reuse`, `session_limit`).
    pub fn by(mut self, by: &'static str) -> Self {
        self.by = Some(by);
        self
    }

    /// How many sessions ended.
    pub fn sessions_ended(mut self, count: u32) -> Self {
        self.sessions_ended = Some(count);
        self
    }

    /// How long the throttle makes the caller wait.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after_seconds = Some(wait.as_secs_f64().ceil() as u64);
        self
    }

    /// Who asked.
    pub fn caller(mut self, caller: Caller) -> Self {
        self.caller = Some(caller);
        self
    }

    /// The event as one JSON object, with the time, the instance and the email hash filled.
    fn to_json(&self, time: &str, instance_id: &str) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        let mut put = |key: &str, value: serde_json::Value| {
            object.insert(key.to_owned(), value);
        };
        put("time", time.into());
        put("event", self.action.name().into());
        put("outcome", self.action.outcome().into());
        if let Some(user_id) = self.user_id {
            put("user_id", user_id.to_string().into());
        }
        if let Some(session_id) = self.session_id {
            put("session_id", session_id.to_string().into());
        }
        if let Some(reason) = self.reason {
            put("reason", reason.into());
        }
        if let Some(by) = self.by {
            put("by", by.into());
        }
        if let Some(count) = self.sessions_ended {
            put("sessions_ended", count.into());
        }
        if let Some(seconds) = self.retry_after_seconds {
            put("retry_after_seconds", seconds.into());
        }
        if let Some(hash) = &self.email_hash {
            put("email_hash", hash.as_str().into());
        }
        if let Some(caller) = &self.caller {
            if let Some(source) = caller.source {
                put("source_address", source.to_string().into());
            }
            if let Some(user_agent) = &caller.user_agent {
                put("user_agent", user_agent.as_str().into());
            }
            if let Some(trace_id) = caller.trace_id {
                put("trace_id", trace_id.to_string().into());
            }
        }
        put("instance_id", instance_id.into());
        serde_json::Value::Object(object)
    }
}

/// Where events go: the tracing target, and the file when there is one.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    instance_id: String,
    email_key: SecretSlice<u8>,
    file: Option<FileSink>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("instance_id", &self.inner.instance_id)
            .field("file", &self.inner.file.as_ref().map(|file| &file.path))
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Events of instance `instance_id`, email hashes keyed with `email_key`, and appended to
    /// `file` when given (opened now: an error when it cannot be).
    pub fn new(
        instance_id: String,
        email_key: SecretSlice<u8>,
        file: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let file = file.map(FileSink::open).transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                instance_id,
                email_key,
                file,
            }),
        })
    }

    /// Events to the tracing target only, with a random email key (tests, tools).
    pub fn without_file(instance_id: &str) -> Self {
        let key: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
        Self {
            inner: Arc::new(Inner {
                instance_id: instance_id.to_owned(),
                email_key: SecretSlice::from(key),
                file: None,
            }),
        }
    }

    /// The keyed hash an event carries for `email`: HMAC-SHA256 of its normalised form, the first
    /// 128 bits in hex. Attempts on one address correlate; the address cannot be read back, nor
    /// guessed from a list of addresses without the key.
    pub fn email_hash(&self, email: &Email) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.inner.email_key.expose_secret())
            .expect("HMAC takes a key of any length");
        mac.update(email.normalized().as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `event` with the hash of `email`.
    pub fn with_email(&self, event: AuditEvent, email: &Email) -> AuditEvent {
        AuditEvent {
            email_hash: Some(self.email_hash(email)),
            ..event
        }
    }

    /// Records `event`, which happened at `now`.
    pub fn record(&self, event: AuditEvent, now: UnixMillis) {
        let time = rfc3339(now);
        let json = event.to_json(&time, &self.inner.instance_id);
        let field = |key: &str| json.get(key).and_then(|value| value.as_str());
        tracing::info!(
            target: TARGET,
            event = event.action.name(),
            outcome = event.action.outcome(),
            user_id = field("user_id"),
            session_id = field("session_id"),
            reason = event.reason,
            by = event.by,
            sessions_ended = event.sessions_ended,
            retry_after_seconds = event.retry_after_seconds,
            email_hash = field("email_hash"),
            source_address = field("source_address"),
            user_agent = field("user_agent"),
            trace_id = field("trace_id"),
            instance_id = %self.inner.instance_id,
            "audit"
        );
        metrics::counter!(crate::metrics::AUDIT_EVENTS, "event" => event.action.name())
            .increment(1);
        if let Some(file) = &self.inner.file {
            file.append(json.to_string());
        }
    }

    /// Closes and reopens the file before the next write (after logrotate moved it). Never
    /// blocks.
    pub fn reopen(&self) {
        if let Some(file) = &self.inner.file {
            file.reopen();
        }
    }

    /// Waits at most `deadline` for the events recorded so far to reach the file (at shutdown);
    /// whether they did.
    pub fn flush(&self, deadline: Duration) -> bool {
        self.inner
            .file
            .as_ref()
            .is_none_or(|file| file.flush(deadline))
    }

    /// Whether events are also written to a file.
    pub fn has_file(&self) -> bool {
        self.inner.file.is_some()
    }
}

/// `now` as RFC 3339 in UTC with milliseconds.
fn rfc3339(now: UnixMillis) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(now).unwrap_or(0));
    humantime::format_rfc3339_millis(time.max(UNIX_EPOCH)).to_string()
}

/// What the writer thread is asked to do.
enum Message {
    Line(String),
    /// Everything queued before this is written (or counted lost); then the sender hears back.
    Flush(crossbeam_channel::Sender<()>),
}

/// The audit file, written by a thread of its own (a slow or stuck disk never holds a request,
/// nor a runtime thread).
struct FileSink {
    path: PathBuf,
    queue: crossbeam_channel::Sender<Message>,
    /// Set by SIGHUP; the writer reopens the file before its next write.
    reopen: Arc<AtomicBool>,
}

impl FileSink {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let file = open_for_append(path)?;
        let (queue, lines) = crossbeam_channel::bounded(FILE_QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            path: path.to_owned(),
            torn: file_ends_mid_line(&file),
            file: Some(file),
            reopen: reopen.clone(),
            last_checked: Instant::now(),
        };
        std::thread::Builder::new()
            .name("authd-audit".into())
            .spawn(move || writer.run(lines))
            .context("AUTHD_AUDIT_LOG: cannot start its writer thread")?;
        Ok(Self {
            path: path.to_owned(),
            queue,
            reopen,
        })
    }

    fn append(&self, line: String) {
        if self.queue.try_send(Message::Line(line)).is_err() {
            metrics::counter!(crate::metrics::AUDIT_EVENTS_DROPPED).increment(1);
            tracing::error!(
                target: OPERATIONS,
                path = %self.path.display(),
                "AUTHD_AUDIT_LOG: the writer is behind; an audit event was not written to the file"
            );
        }
    }

    fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Waits at most `deadline` for the events queued so far to be written.
    fn flush(&self, deadline: Duration) -> bool {
        let (done, heard) = crossbeam_channel::bounded(1);
        self.queue
            .send_timeout(Message::Flush(done), deadline)
            .is_ok()
            && heard.recv_timeout(deadline).is_ok()
    }
}

/// Opens `path` to append: a regular file (created mode 0640), never a FIFO or a device, whose
/// open could block. `O_NONBLOCK` makes the open itself return at once, whatever is there.
fn open_for_append(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("AUTHD_AUDIT_LOG: cannot open {} to append", path.display()))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("AUTHD_AUDIT_LOG: cannot examine {}", path.display()))?;
    anyhow::ensure!(
        metadata.file_type().is_file(),
        "AUTHD_AUDIT_LOG: {} is not a regular file",
        path.display()
    );
    Ok(file)
}

/// Lines written per system call at most (a batch of what is queued).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// How often the writer checks that the path still names the file it writes (a file deleted or
/// moved without a SIGHUP is reopened by itself).
const PATH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    /// `None` after a failure until a reopen succeeds.
    file: Option<File>,
    /// The last write stopped in the middle of a line: the next starts on a new line.
    torn: bool,
    reopen: Arc<AtomicBool>,
    last_checked: Instant,
}

impl Writer {
    /// Appends the lines as they come, in batches of what is queued; every line that does not
    /// reach the file is counted in `authd_audit_events_dropped_total`.
    fn run(mut self, queue: crossbeam_channel::Receiver<Message>) {
        let mut batch = Vec::with_capacity(MAX_BATCH_BYTES);
        while let Ok(first) = queue.recv() {
            let mut message = Some(first);
            let mut lines = 0usize;
            let mut flushed = Vec::new();
            batch.clear();
            while let Some(next) = message.take() {
                match next {
                    Message::Line(line) => {
                        batch.extend_from_slice(line.as_bytes());
                        batch.push(b'\n');
                        lines += 1;
                    }
                    Message::Flush(done) => flushed.push(done),
                }
                if batch.len() < MAX_BATCH_BYTES {
                    message = queue.try_recv().ok();
                }
            }
            if lines > 0 {
                self.write(&batch, lines);
            }
            for done in flushed {
                let _ = done.send(());
            }
        }
    }

    fn write(&mut self, batch: &[u8], lines: usize) {
        if self.reopen.swap(false, Ordering::AcqRel) {
            self.reopen_file("SIGHUP");
        } else if self.last_checked.elapsed() >= PATH_CHECK_INTERVAL {
            self.last_checked = Instant::now();
            if !self.path_names_open_file() {
                self.reopen_file("the file was moved or deleted");
            }
        }
        if self.file.is_none() {
            self.reopen_file("the last write failed");
        }
        let Some(file) = self.file.as_mut() else {
            metrics::counter!(crate::metrics::AUDIT_EVENTS_DROPPED).increment(lines as u64);
            return;
        };
        let mut written = 0;
        let mut failure = None;
        if self.torn {
            match file.write_all(b"\n") {
                Ok(()) => self.torn = false,
                Err(error) => failure = Some(error),
            }
        }
        while failure.is_none() && written < batch.len() {
            match file.write(&batch[written..]) {
                Ok(0) => failure = Some(std::io::ErrorKind::WriteZero.into()),
                Ok(count) => written += count,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => failure = Some(error),
            }
        }
        let Some(error) = failure else {
            return;
        };
        let complete = batch[..written]
            .iter()
            .filter(|byte| **byte == b'\n')
            .count();
        self.torn = self.torn || (written > 0 && batch[written - 1] != b'\n');
        metrics::counter!(crate::metrics::AUDIT_EVENTS_DROPPED)
            .increment(lines.saturating_sub(complete) as u64);
        tracing::error!(
            target: OPERATIONS,
            path = %self.path.display(),
            %error,
            lost = lines.saturating_sub(complete),
            "AUTHD_AUDIT_LOG: write failed; audit events were not written to the file"
        );
        self.file = None;
    }

    /// Whether the path still names the file open for writing (same device and inode).
    fn path_names_open_file(&self) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        let Some(file) = &self.file else {
            return false;
        };
        match (std::fs::metadata(&self.path), file.metadata()) {
            (Ok(named), Ok(open)) => named.dev() == open.dev() && named.ino() == open.ino(),
            _ => false,
        }
    }

    fn reopen_file(&mut self, why: &str) {
        match open_for_append(&self.path) {
            Ok(file) => {
                // Whatever the file ends with (a torn line of ours, or of another writer), the
                // next event starts a line of its own.
                self.torn = file_ends_mid_line(&file);
                self.file = Some(file);
                tracing::info!(target: OPERATIONS, path = %self.path.display(), why, "AUTHD_AUDIT_LOG: reopened");
            }
            Err(error) => {
                self.file = None;
                tracing::error!(target: OPERATIONS, why, "{error:#}; audit events are not written to the file until it can be opened");
            }
        }
    }
}

/// Whether `file` is non-empty and its last byte is not a newline (a torn line at its end).
fn file_ends_mid_line(file: &File) -> bool {
    use std::os::unix::fs::FileExt as _;
    let Ok(metadata) = file.metadata() else {
        return false;
    };
    let Some(last) = metadata.len().checked_sub(1) else {
        return false;
    };
    let mut byte = [0u8; 1];
    file.read_at(&mut byte, last).is_ok() && byte[0] != b'\n'
}

/// The instance id events carry by default: the host name (a pod's name in Kubernetes).
pub fn default_instance_id() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let name = if result == 0 {
        let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    } else {
        String::new()
    };
    if name.is_empty() {
        "authd".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_trace_ids_parse_and_bad_ones_do_not() {
        let good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            TraceId::from_traceparent(good).unwrap().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"garbage",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ] {
            assert!(TraceId::from_traceparent(bad).is_none(), "{bad:?}");
        }
        // A later version may carry more fields.
        assert!(
            TraceId::from_traceparent(
                b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more"
            )
            .is_some()
        );
    }

    #[test]
    fn email_hashes_are_keyed_and_stable() {
        let email = Email::parse("Someone@Example.com").unwrap();
        let same = Email::parse("someone@example.com").unwrap();
        let one = AuditLog::without_file("a");
        let other = AuditLog::without_file("b");
        assert_eq!(one.email_hash(&email), one.email_hash(&same));
        assert_ne!(one.email_hash(&email), other.email_hash(&email));
        assert_eq!(one.email_hash(&email).len(), 32);
        assert!(!one.email_hash(&email).contains("example"));
    }

    #[test]
    fn a_failed_write_is_not_glued_to_the_next_line_and_the_file_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // A torn line left by an earlier failure.
        std::fs::write(&path, "{\"event\":\"torn").unwrap();
        let file = open_for_append(&path).unwrap();
        let mut writer = Writer {
            path: path.clone(),
            torn: file_ends_mid_line(&file),
            file: Some(file),
            reopen: Arc::new(AtomicBool::new(false)),
            last_checked: Instant::now(),
        };
        writer.write(b"{\"n\":1}\n", 1);
        // A disk that refuses every byte: the batch is lost (and counted), the file let go.
        writer.file = Some(OpenOptions::new().write(true).open("/dev/full").unwrap());
        writer.write(b"{\"n\":2}\n{\"n\":3}\n", 2);
        assert!(writer.file.is_none());
        // The next write reopens the path and goes on.
        writer.write(b"{\"n\":4}\n", 1);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"event\":\"torn\n{\"n\":1}\n{\"n\":4}\n"
        );
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
