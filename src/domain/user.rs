//! `UserId` (a UUID) and `Username` (an optional display name).

use uuid::Uuid;

use super::FieldViolation;

/// Display names are for humans: short and printable.
pub const MAX_USERNAME_CHARS: usize = 64;

/// A user's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(Uuid);

impl UserId {
    /// A new id: UUIDv7, time-ordered, so inserts stay at the right edge of the index.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses an id from its text form.
    pub fn parse(raw: &str) -> Option<Self> {
        Uuid::try_parse(raw).ok().map(Self)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for UserId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An optional display name: trimmed, at most 64 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Parses the `username` field; empty (after trimming) means no name.
    pub fn parse(raw: &str) -> Result<Option<Self>, FieldViolation> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        if trimmed.chars().count() > MAX_USERNAME_CHARS {
            return Err(FieldViolation::new(
                "username",
                "must be at most 64 characters",
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldViolation::new(
                "username",
                "must not contain control characters",
            ));
        }
        Ok(Some(Self(trimmed.to_owned())))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_username_means_none() {
        assert_eq!(Username::parse("  ").unwrap(), None);
        assert_eq!(Username::parse(" Ada ").unwrap().unwrap().as_str(), "Ada");
    }

    #[test]
    fn long_or_control_usernames_are_refused() {
        assert!(Username::parse(&"a".repeat(65)).is_err());
        assert!(Username::parse("a\u{1b}[31m").is_err());
    }
}
