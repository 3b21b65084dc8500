//! Sessions: `SessionId` (a UUID, the access token's `sid` claim), `RefreshToken` (what Refresh
//! spends: the session's id, which is no secret, followed by 256 secret bits; never printed or
//! stored) and its `RefreshTokenHash` (what is stored and compared), and `UserAgent` (what
//! started a session, cut to a printable length). Carrying the session id lets a rotation find
//! its row by primary key, so that it updates no index.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// Secret random bytes in a refresh token: 256 bits.
const SECRET_BYTES: usize = 32;
/// A refresh token's bytes: the session id (16), then the secret.
const REFRESH_TOKEN_BYTES: usize = 16 + SECRET_BYTES;
/// A refresh token's text: base64url without padding of [`REFRESH_TOKEN_BYTES`].
pub const REFRESH_TOKEN_CHARS: usize = 64;
/// The longest `user-agent` kept for a session, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// A session's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A new random id (UUIDv4).
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
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

impl From<Uuid> for SessionId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A refresh token: its session's id and 256 bits from the OS RNG, base64url. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    text: String,
    session: SessionId,
}

impl RefreshToken {
    /// A new token of `session`, its secret from the operating system's RNG.
    pub fn generate(session: SessionId) -> Self {
        let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
        bytes[..16].copy_from_slice(session.as_uuid().as_bytes());
        rand::rngs::OsRng.fill_bytes(&mut bytes[16..]);
        Self {
            text: URL_SAFE_NO_PAD.encode(bytes),
            session,
        }
    }

    /// A token as received; `None` unless it has the exact form this service issues (surrounding
    /// whitespace aside).
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        if raw.len() != REFRESH_TOKEN_CHARS {
            return None;
        }
        let decoded = URL_SAFE_NO_PAD.decode(raw).ok()?;
        // Canonical only: one text per token (base64 can hide bits in the last character).
        if decoded.len() != REFRESH_TOKEN_BYTES || URL_SAFE_NO_PAD.encode(&decoded) != raw {
            return None;
        }
        let session = Uuid::from_slice(&decoded[..16]).ok()?.into();
        Some(Self {
            text: raw.to_owned(),
            session,
        })
    }

    /// The session it belongs to (no secret: access tokens carry it as `sid`).
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The token, to hand to the client.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// What is stored and compared instead of the token.
    pub fn hash(&self) -> RefreshTokenHash {
        RefreshTokenHash(Sha256::digest(self.text.as_bytes()).into())
    }
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken(<hidden>)")
    }
}

/// The length of [`RefreshTokenHash::spent_mark`].
pub const SPENT_MARK_CHARS: usize = 32;

/// The SHA-256 of a refresh token: 256 bits of entropy hashed, so a stolen table yields nothing
/// that can be presented. `Debug` shows a short prefix only.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RefreshTokenHash([u8; 32]);

impl RefreshTokenHash {
    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From stored bytes; `None` unless there are 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// How the list of a session's spent tokens names this one: its first 128 bits in lowercase
    /// hex ([`SPENT_MARK_CHARS`] characters). Enough to recognise a token presented again (a
    /// match by chance is a 2^-128 event, and forging one needs a preimage), and a short list
    /// keeps the session row small, which keeps each rotation's update cheap.
    pub fn spent_mark(&self) -> String {
        self.0[..SPENT_MARK_CHARS / 2]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

impl std::fmt::Debug for RefreshTokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RefreshTokenHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

/// The `user-agent` of the call that started a session: control characters dropped, at most
/// [`MAX_USER_AGENT_CHARS`] characters; `None` when nothing printable is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgent(String);

impl UserAgent {
    /// Cleans a raw header value.
    pub fn from_header(raw: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(raw);
        let cleaned: String = text
            .chars()
            // Control characters, and the format and separator characters that make a log
            // viewer show other text than is there (bidi overrides, zero-width, U+2028/U+2029).
            .filter(|c| {
                use unicode_properties::{GeneralCategory::*, UnicodeGeneralCategory as _};
                !c.is_control()
                    && !matches!(
                        c.general_category(),
                        Format | LineSeparator | ParagraphSeparator
                    )
            })
            .take(MAX_USER_AGENT_CHARS)
            .collect();
        let cleaned = cleaned.trim();
        (!cleaned.is_empty()).then(|| Self(cleaned.to_owned()))
    }

    /// A stored value, as stored.
    pub fn from_stored(stored: String) -> Self {
        Self(stored)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_256_bit_url_safe_and_parse_back() {
        let session = SessionId::generate();
        let token = RefreshToken::generate(session);
        assert_eq!(token.session(), session);
        assert_eq!(token.expose().len(), REFRESH_TOKEN_CHARS);
        assert!(
            token
                .expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(RefreshToken::parse(token.expose()), Some(token.clone()));
        assert_ne!(RefreshToken::generate(session), token);
        assert_eq!(
            RefreshToken::parse(token.expose()).unwrap().session(),
            session
        );
        assert!(!format!("{token:?}").contains(token.expose()));
    }

    #[test]
    fn malformed_refresh_tokens_do_not_parse() {
        let token = RefreshToken::generate(SessionId::generate());
        let text = token.expose();
        assert!(RefreshToken::parse("").is_none());
        assert!(RefreshToken::parse(&text[1..]).is_none());
        assert!(RefreshToken::parse(&format!("{text}A")).is_none());
        assert!(RefreshToken::parse(&format!("{text}=")).is_none());
        assert!(RefreshToken::parse(&format!("{}+", &text[..text.len() - 1])).is_none());
        // A non-canonical last character (unused low bits set) is another text for the same bytes.
        let last = text.chars().last().unwrap();
        let bits = URL_SAFE_NO_PAD.decode(text).unwrap();
        let mut other = None;
        for c in ['A', 'B', 'C', 'D'] {
            let candidate = format!("{}{c}", &text[..text.len() - 1]);
            if c != last && URL_SAFE_NO_PAD.decode(&candidate).ok().as_deref() == Some(&bits[..]) {
                other = Some(candidate);
            }
        }
        if let Some(other) = other {
            assert!(RefreshToken::parse(&other).is_none());
        }
    }

    #[test]
    fn user_agents_are_cleaned_and_cut() {
        assert_eq!(UserAgent::from_header(b"  \x01 "), None);
        assert_eq!(
            UserAgent::from_header(b"grpcurl/1.9\x07").unwrap().as_str(),
            "grpcurl/1.9"
        );
        let long = "é".repeat(300);
        assert_eq!(
            UserAgent::from_header(long.as_bytes())
                .unwrap()
                .as_str()
                .chars()
                .count(),
            MAX_USER_AGENT_CHARS
        );
    }
}
