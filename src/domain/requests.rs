//! Whole requests, parsed: `Registration` (email, new password with its strength judged against
//! the user's own details, optional name) and `Credentials` (email and offered password). The API
//! and the fuzz targets call these same functions; every refused field is reported at once.

use super::{Email, FieldViolation, Password, Username, personal_words};

/// A registration request, parsed: every rule for a new account holds.
#[derive(Debug)]
pub struct Registration {
    /// The login email.
    pub email: Email,
    /// The new password, long enough and not guessable from `email` or `username`.
    pub password: Password,
    /// An optional display name.
    pub username: Option<Username>,
}

impl Registration {
    /// Parses the three Register fields; the strength check runs once the fields it needs parse.
    pub fn parse(email: &str, password: &str, username: &str) -> Result<Self, Vec<FieldViolation>> {
        let fields = both(Email::parse(email), Password::parse_new(password));
        let username = Username::parse(username);
        match (fields, username) {
            (Ok((email, password)), Ok(username)) => {
                password
                    .check_strength(&personal_words(&email, username.as_ref()))
                    .map_err(|violation| vec![violation])?;
                Ok(Self {
                    email,
                    password,
                    username,
                })
            }
            (fields, username) => {
                let mut violations = fields.err().unwrap_or_default();
                violations.extend(username.err());
                Err(violations)
            }
        }
    }
}

/// An email and a password offered to sign in (Login): only bounded, so that a change of the
/// rules for new passwords never locks out an existing user.
#[derive(Debug)]
pub struct Credentials {
    /// The login email.
    pub email: Email,
    /// The password offered.
    pub password: Password,
}

impl Credentials {
    /// Parses the two Login fields.
    pub fn parse(email: &str, password: &str) -> Result<Self, Vec<FieldViolation>> {
        let (email, password) = both(Email::parse(email), Password::parse_offered(password))?;
        Ok(Self { email, password })
    }
}

/// Both values, or every violation (so a client learns about all its mistakes at once).
fn both<A, B>(
    a: Result<A, FieldViolation>,
    b: Result<B, FieldViolation>,
) -> Result<(A, B), Vec<FieldViolation>> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(a.err().into_iter().chain(b.err()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(violations: Vec<FieldViolation>) -> Vec<&'static str> {
        violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_good_registration_parses() {
        let registration =
            Registration::parse("Ada@Example.com", "correct horse battery staple", " Ada ")
                .unwrap();
        assert_eq!(registration.email.normalized(), "ada@example.com");
        assert_eq!(registration.username.unwrap().as_str(), "Ada");
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let violations = Registration::parse("nope", "short", &"x".repeat(65)).unwrap_err();
        assert_eq!(fields(violations), ["email", "password", "username"]);
        let violations = Credentials::parse("", "").unwrap_err();
        assert_eq!(fields(violations), ["email", "password"]);
    }

    #[test]
    fn a_password_built_from_the_users_own_details_is_too_weak() {
        let violations =
            Registration::parse("jane.doe@example.com", "jane.doe1985", "").unwrap_err();
        assert_eq!(fields(violations), ["password"]);
    }

    #[test]
    fn login_accepts_passwords_that_registration_would_refuse() {
        Credentials::parse("ada@example.com", "short").unwrap();
    }
}
