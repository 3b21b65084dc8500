//! The claims of a verified access token, as the layer puts them in the request extensions.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use uuid::Uuid;

/// Who a verified access token speaks for. Cheap to clone (one shared allocation).
///
/// [`AuthLayer`](crate::AuthLayer) inserts it into every request it lets through, so a handler
/// reads it with `request.extensions().get::<Claims>()` (tonic) or `Extension<Claims>` (axum).
#[derive(Clone, PartialEq, Eq)]
pub struct Claims(Arc<Inner>);

#[derive(PartialEq, Eq)]
struct Inner {
    user: Uuid,
    session: Option<Uuid>,
    token: Uuid,
    /// The ids in their canonical form (lowercase, hyphenated), as authd writes them.
    user_id: Box<str>,
    session_id: Option<Box<str>>,
    jti: Box<str>,
    issued_at: i64,
    expires_at: i64,
}

impl Claims {
    pub(crate) fn new(
        user: Uuid,
        session: Option<Uuid>,
        token: Uuid,
        issued_at: i64,
        expires_at: i64,
    ) -> Self {
        let text = |id: Uuid| id.hyphenated().to_string().into_boxed_str();
        Self(Arc::new(Inner {
            user,
            session,
            token,
            user_id: text(user),
            session_id: session.map(text),
            jti: text(token),
            issued_at,
            expires_at,
        }))
    }

    /// The user, the session and the token as UUIDs (what revocations name).
    pub(crate) fn ids(&self) -> (Uuid, Option<Uuid>, Uuid) {
        (self.0.user, self.0.session, self.0.token)
    }

    /// The user (`sub`), a UUID in canonical form.
    pub fn user_id(&self) -> &str {
        &self.0.user_id
    }

    /// The session (`sid`); `None` for tokens issued before authd had sessions.
    pub fn session_id(&self) -> Option<&str> {
        self.0.session_id.as_deref()
    }

    /// The token's own id (`jti`).
    pub fn jti(&self) -> &str {
        &self.0.jti
    }

    /// When the token was issued (`iat`), in Unix seconds.
    pub fn issued_at_unix(&self) -> i64 {
        self.0.issued_at
    }

    /// When the token expires (`exp`), in Unix seconds.
    pub fn expires_at_unix(&self) -> i64 {
        self.0.expires_at
    }

    /// When the token was issued.
    pub fn issued_at(&self) -> SystemTime {
        unix_to_system_time(self.0.issued_at)
    }

    /// When the token expires.
    pub fn expires_at(&self) -> SystemTime {
        unix_to_system_time(self.0.expires_at)
    }
}

/// `seconds` after the epoch; out of `SystemTime`'s range (a token cannot be, but no panic here
/// either way), the epoch.
fn unix_to_system_time(seconds: i64) -> SystemTime {
    let moved = match u64::try_from(seconds) {
        Ok(after) => UNIX_EPOCH.checked_add(Duration::from_secs(after)),
        Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs())),
    };
    moved.unwrap_or(UNIX_EPOCH)
}

impl fmt::Debug for Claims {
    /// The ids only; a `Claims` holds nothing secret, but logs need no more than this.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("user_id", &self.user_id())
            .field("session_id", &self.session_id())
            .field("jti", &self.jti())
            .field("issued_at", &self.0.issued_at)
            .field("expires_at", &self.0.expires_at)
            .finish()
    }
}
