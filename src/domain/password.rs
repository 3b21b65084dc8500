//! `Password`: 8 to 128 characters, any Unicode including spaces, no control characters, no
//! composition rules (NIST SP 800-63B §5.1.1.2). Normalised to NFKC so that the same password typed
//! on different keyboards hashes the same. The secret is never printed.

use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;

use super::{Email, FieldViolation, Username};

/// NIST SP 800-63B: at least 8 characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// NIST SP 800-63B: allow at least 64; 128 bounds the cost of hashing hostile input.
pub const MAX_PASSWORD_CHARS: usize = 128;
/// zxcvbn score 2 = at least about 10^6 estimated guesses: refuses the common and the guessable
/// (top passwords, dictionary words, keyboard walks, dates, the user's own email) without
/// composition rules. Score 3 would refuse every 8-character password, random ones included.
const MIN_ZXCVBN_SCORE: zxcvbn::Score = zxcvbn::Score::Two;

/// A password as given in a request, normalised; `Debug` is redacted.
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    /// Parses a new password (Register): enforces the length rules.
    pub fn parse_new(raw: &str) -> Result<Self, FieldViolation> {
        let password = Self::normalize(raw)?;
        let chars = password.0.expose_secret().chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(FieldViolation::new(
                "password",
                "must be at least 8 characters",
            ));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(FieldViolation::new(
                "password",
                "must be at most 128 characters",
            ));
        }
        Ok(password)
    }

    /// Parses a password offered at Login: only bounded and non-empty, so that a change of the
    /// length rules never locks out existing users.
    pub fn parse_offered(raw: &str) -> Result<Self, FieldViolation> {
        let password = Self::normalize(raw)?;
        let chars = password.0.expose_secret().chars().count();
        if chars == 0 {
            return Err(FieldViolation::new("password", "is required"));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(FieldViolation::new(
                "password",
                "must be at most 128 characters",
            ));
        }
        Ok(password)
    }

    fn normalize(raw: &str) -> Result<Self, FieldViolation> {
        // Bound the work before normalising: 4 bytes per char is the UTF-8 maximum.
        if raw.len() > MAX_PASSWORD_CHARS * 4 {
            return Err(FieldViolation::new(
                "password",
                "must be at most 128 characters",
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(FieldViolation::new(
                "password",
                "must not contain control characters",
            ));
        }
        Ok(Self(SecretString::from(raw.nfkc().collect::<String>())))
    }

    /// Refuses a new password that is common or guessable from the user's own details (NIST SP
    /// 800-63B §5.1.1.2 blocklist), judged by zxcvbn: below score 2 (about 10^6 estimated
    /// guesses) is refused.
    /// `context` holds the user's email, its parts and the display name.
    pub fn check_strength(&self, context: &[&str]) -> Result<(), FieldViolation> {
        let estimate = zxcvbn::zxcvbn(self.0.expose_secret(), context);
        if estimate.score() >= MIN_ZXCVBN_SCORE {
            return Ok(());
        }
        let reason = estimate
            .feedback()
            .and_then(|feedback| feedback.warning())
            .map_or_else(|| "it is too easy to guess".to_owned(), |w| w.to_string());
        Err(FieldViolation::new(
            "password",
            format!("is too weak: {reason}; use a longer passphrase of uncommon words"),
        ))
    }

    /// The normalised password bytes, for hashing only.
    pub fn expose_bytes(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

/// What a new password must not be built from: the user's email, its parts, the display name.
/// The context for [`Password::check_strength`].
pub fn personal_words<'a>(email: &'a Email, username: Option<&'a Username>) -> Vec<&'a str> {
    let mut words = vec![email.normalized()];
    if let Some((local, domain)) = email.normalized().rsplit_once('@') {
        words.push(local);
        words.push(domain);
        words.extend(
            local
                .split(['.', '_', '-', '+'])
                .filter(|part| part.len() >= 3),
        );
        words.extend(domain.split('.').filter(|part| part.len() >= 3));
    }
    words.extend(username.map(Username::as_str));
    words
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_8_to_128_characters_of_any_kind() {
        for ok in [
            "12345678",
            "correct horse battery staple",
            "pässwörd",
            "密码密码密码密码",
            &"x".repeat(128),
        ] {
            assert!(Password::parse_new(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn counts_characters_not_bytes() {
        // 8 characters, 24 bytes.
        assert!(Password::parse_new("密码密码密码密码").is_ok());
        // 7 characters, 21 bytes.
        assert!(Password::parse_new("密码密码密码密").is_err());
        assert!(Password::parse_new(&"é".repeat(129)).is_err());
    }

    #[test]
    fn refuses_too_short_too_long_and_control_characters() {
        for bad in [
            "",
            "1234567",
            &"x".repeat(129),
            "abc\u{0}defgh",
            "abcdefgh\n",
        ] {
            let violation = Password::parse_new(bad).unwrap_err();
            assert_eq!(violation.field, "password");
        }
    }

    #[test]
    fn nfkc_makes_compatible_forms_equal() {
        let composed = Password::parse_new("caf\u{e9} au lait").unwrap();
        let decomposed = Password::parse_new("cafe\u{301} au lait").unwrap();
        assert_eq!(composed.expose_bytes(), decomposed.expose_bytes());
    }

    #[test]
    fn common_or_personal_passwords_are_too_weak() {
        let context = ["jane.doe@example.com", "jane.doe", "example.com"];
        for weak in [
            "password",
            "12345678",
            "qwertyuiop",
            "iloveyou123",
            "jane.doe1985",
            "janedoejanedoe",
        ] {
            let violation = Password::parse_new(weak)
                .unwrap()
                .check_strength(&context)
                .unwrap_err();
            assert_eq!(violation.field, "password");
            assert!(
                violation.description.starts_with("is too weak"),
                "{weak}: {violation}"
            );
        }
        for strong in [
            "correct horse battery staple",
            "Tr0ub4dor&3-plus-more",
            "Zq8#mL2p",
        ] {
            Password::parse_new(strong)
                .unwrap()
                .check_strength(&context)
                .unwrap();
        }
    }

    #[test]
    fn debug_is_redacted() {
        let password = Password::parse_new("hunter2hunter2").unwrap();
        assert!(!format!("{password:?}").contains("hunter2"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn length_rule_counts_characters_of_any_script(raw in "[^\\p{Cc}]{0,140}") {
                let chars = raw.nfkc().count();
                let parsed = Password::parse_new(&raw);
                prop_assert_eq!(
                    parsed.is_ok(),
                    (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars),
                    "{} characters", chars
                );
            }

            #[test]
            fn control_characters_are_always_refused(
                raw in "[a-z ]{8,40}",
                control in prop::char::range('\u{0}', '\u{1f}'),
                at in 0usize..8,
            ) {
                let mut with_control: Vec<char> = raw.chars().collect();
                with_control.insert(at, control);
                let with_control: String = with_control.into_iter().collect();
                prop_assert!(Password::parse_new(&with_control).is_err());
                prop_assert!(Password::parse_offered(&with_control).is_err());
            }

            #[test]
            fn any_new_password_is_also_a_valid_offered_one(raw in "\\PC{8,128}") {
                if let Ok(new) = Password::parse_new(&raw) {
                    let offered = Password::parse_offered(&raw).unwrap();
                    prop_assert_eq!(new.expose_bytes(), offered.expose_bytes());
                }
            }
        }
    }
}
