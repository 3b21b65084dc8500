//! Domain types that parse on the way in: once a value of these types exists, it is valid.
//! Their inner fields are private; `parse` is the only way in. `requests` parses whole requests
//! (Register, Login) from their fields, so the API and the fuzz targets share one implementation.

mod email;
mod password;
mod password_hash;
mod requests;
mod session;
mod token;
mod user;

pub use email::Email;
pub use password::{Password, personal_words};
pub use password_hash::PasswordHashString;
pub use requests::{Credentials, Registration};
pub use session::{
    MAX_USER_AGENT_CHARS, REFRESH_TOKEN_CHARS, RefreshToken, RefreshTokenHash, SPENT_MARK_CHARS,
    SessionId, UserAgent,
};
pub use token::{AccessToken, Jti};
pub use user::{UserId, Username};

/// Why a field was refused; the API layer turns it into a google.rpc.BadRequest field violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {description}")]
pub struct FieldViolation {
    /// The request field, as named in the proto.
    pub field: &'static str,
    /// What is wrong, in words a client developer can act on.
    pub description: String,
}

impl FieldViolation {
    pub(crate) fn new(field: &'static str, description: impl Into<String>) -> Self {
        Self {
            field,
            description: description.into(),
        }
    }
}
