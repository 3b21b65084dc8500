//! `AccessToken` (a bearer token as received, never printed) and `Jti` (a token's unique id).

use uuid::Uuid;

/// A bearer token as received from a client. `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// Wraps a token string; `None` when it is empty (the caller reports TOKEN_MISSING).
    pub fn new(raw: impl Into<String>) -> Option<Self> {
        let raw = raw.into();
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            None
        } else if trimmed.len() == raw.len() {
            Some(Self(raw))
        } else {
            Some(Self(trimmed.to_owned()))
        }
    }

    /// The compact JWT.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessToken(<{} bytes>)", self.0.len())
    }
}

/// A token's unique id (the JWT `jti` claim, a UUID): the key of a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Jti(Uuid);

impl Jti {
    /// A new random id (UUIDv4: unguessable).
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }

    /// Parses a jti from its text form.
    pub fn parse(raw: &str) -> Option<Self> {
        Uuid::try_parse(raw).ok().map(Self)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for Jti {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl std::fmt::Display for Jti {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_blank_tokens_are_missing() {
        assert!(AccessToken::new("").is_none());
        assert!(AccessToken::new("  ").is_none());
        assert_eq!(AccessToken::new(" a.b.c ").unwrap().expose(), "a.b.c");
    }

    #[test]
    fn debug_hides_the_token() {
        let token = AccessToken::new("header.payload.signature").unwrap();
        assert!(!format!("{token:?}").contains("signature"));
    }
}
