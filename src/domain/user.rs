//! `UserId` (a UUID) and `Username` (an optional display name).

use uuid::Uuid;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

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
        // Format characters are invisible but reorder or hide text: U+202E makes "Ada\u{202E}nimda"
        // display as "Adaadmin", U+200B makes two names that look alike differ.
        if trimmed
            .chars()
            .any(|c| c.general_category() == GeneralCategory::Format)
        {
            return Err(FieldViolation::new(
                "username",
                "must not contain invisible format characters (such as U+202E or U+200B)",
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

    #[test]
    fn invisible_format_characters_are_refused() {
        for name in [
            "Ada\u{202E}nimda",
            "Ad\u{200B}a",
            "\u{FEFF}Ada",
            "A\u{2066}da",
            "Ada\u{AD}",
        ] {
            let violation = Username::parse(name).unwrap_err();
            assert_eq!(violation.field, "username");
        }
        // Letters and marks of any script, and emoji, are fine.
        for name in ["Zoë", "周杰倫", "Ngũgĩ wa Thiong'o", "Ada 🚀"] {
            assert!(Username::parse(name).unwrap().is_some(), "{name}");
        }
    }
}
