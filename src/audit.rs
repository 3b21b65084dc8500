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
    io::{BufWriter, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
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
        if !hex(&header[..2]) || &header[..2] == b"ff" || !hex(&header[36..52]) {
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
    /// `reuse`, `account_deleted`).
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

    /// Closes and reopens the file (after logrotate moved it).
    pub fn reopen(&self) {
        if let Some(file) = &self.inner.file {
            file.reopen();
        }
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
    Reopen,
}

/// The audit file, written by a thread of its own (a slow disk never holds a request).
struct FileSink {
    path: PathBuf,
    queue: crossbeam_channel::Sender<Message>,
}

impl FileSink {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let file = open_for_append(path)?;
        let (queue, lines) = crossbeam_channel::bounded(FILE_QUEUE);
        let thread_path = path.to_owned();
        std::thread::Builder::new()
            .name("authd-audit".into())
            .spawn(move || write_lines(thread_path, file, lines))
            .context("AUTHD_AUDIT_LOG: cannot start its writer thread")?;
        Ok(Self {
            path: path.to_owned(),
            queue,
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
        // Blocks only while the queue is full; a reopen must not be lost.
        let _ = self.queue.send(Message::Reopen);
    }
}

fn open_for_append(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("AUTHD_AUDIT_LOG: cannot open {} to append", path.display()))
}

/// The writer thread: appends each line, flushing whenever the queue is empty; reopens the file
/// when asked. A write that fails is logged, and the file is reopened before the next line.
fn write_lines(path: PathBuf, file: File, lines: crossbeam_channel::Receiver<Message>) {
    let mut out = Some(BufWriter::new(file));
    let mut next = lines.recv();
    while let Ok(message) = next {
        match message {
            Message::Line(line) => {
                if out.is_none() {
                    out = reopen(&path);
                }
                if let Some(writer) = out.as_mut() {
                    let written = writer
                        .write_all(line.as_bytes())
                        .and_then(|()| writer.write_all(b"\n"));
                    if let Err(error) = written {
                        tracing::error!(target: OPERATIONS, path = %path.display(), %error, "AUTHD_AUDIT_LOG: write failed");
                        metrics::counter!(crate::metrics::AUDIT_EVENTS_DROPPED).increment(1);
                        out = None;
                    }
                } else {
                    metrics::counter!(crate::metrics::AUDIT_EVENTS_DROPPED).increment(1);
                }
            }
            Message::Reopen => {
                if let Some(mut writer) = out.take() {
                    let _ = writer.flush();
                }
                out = reopen(&path);
                tracing::info!(target: OPERATIONS, path = %path.display(), "AUTHD_AUDIT_LOG: reopened");
            }
        }
        next = match lines.try_recv() {
            Ok(message) => Ok(message),
            Err(crossbeam_channel::TryRecvError::Empty) => {
                if let Some(writer) = out.as_mut()
                    && let Err(error) = writer.flush()
                {
                    tracing::error!(target: OPERATIONS, path = %path.display(), %error, "AUTHD_AUDIT_LOG: write failed");
                    out = None;
                }
                lines.recv()
            }
            Err(crossbeam_channel::TryRecvError::Disconnected) => Err(crossbeam_channel::RecvError),
        };
    }
    if let Some(mut writer) = out {
        let _ = writer.flush();
    }
}

fn reopen(path: &Path) -> Option<BufWriter<File>> {
    match open_for_append(path) {
        Ok(file) => Some(BufWriter::new(file)),
        Err(error) => {
            tracing::error!(target: OPERATIONS, "{error:#}");
            None
        }
    }
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
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
