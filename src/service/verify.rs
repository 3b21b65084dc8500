//! Verify, the hot path: "who is this token?", failing closed. Every call that takes an access
//! token (LogoutAll, ChangePassword, ListSessions, RevokeSession, DeleteAccount) checks it here
//! too, so each answers an expired, revoked or forged token exactly as Verify does.

use super::{AuthService, ServiceError};
use crate::{
    domain::AccessToken,
    store::TokenRef,
    tokens::{TokenClaims, TokenError},
};

impl AuthService {
    /// Answers "who is this token?": signature, claims and time, then revocation. Fails closed:
    /// if revocation cannot be checked, the answer is `Unavailable`, never success.
    pub async fn verify(&self, token: Option<AccessToken>) -> Result<TokenClaims, ServiceError> {
        let token = token.ok_or(TokenError::Missing)?;
        let now = self.parts.clock.now();
        let mut decoded = self
            .parts
            .verified_tokens
            .get_or_decode(&token, |token| self.parts.tokens.decode(token))?;
        if !self.parts.tokens.decoded_with_current_keys(&decoded) {
            // Remembered (or decoded) before a key was removed: check against the keys in place.
            decoded = self.parts.tokens.decode(&token)?;
        }
        self.parts.tokens.check_time(&decoded, now)?;
        let claims = decoded.claims;
        if claims.issued_at < self.revocation_cutoff() {
            return Err(TokenError::Revoked.into());
        }
        let token = TokenRef {
            user: claims.user_id,
            jti: claims.jti,
            session: claims.session_id,
            issued_at: claims.issued_at,
        };
        if self.parts.revocations.is_revoked(&token, now).await? {
            return Err(TokenError::Revoked.into());
        }
        Ok(claims)
    }
}
