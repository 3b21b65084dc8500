//! Tokens in use: Verify (the hot path: "who is this token?", failing closed) and Logout
//! (revoke a token until it could no longer be accepted anyway).

use super::{AuthService, ServiceError};
use crate::{
    domain::AccessToken,
    tokens::{TokenClaims, TokenError},
};

impl AuthService {
    /// Answers "who is this token?": signature, claims and time, then revocation. Fails closed:
    /// if revocation cannot be checked, the answer is `Unavailable`, never success.
    pub async fn verify(&self, token: Option<AccessToken>) -> Result<TokenClaims, ServiceError> {
        let token = token.ok_or(TokenError::Missing)?;
        let now = self.parts.clock.now();
        let decoded = self
            .parts
            .verified_tokens
            .get_or_decode(&token, |token| self.parts.tokens.decode(token))?;
        self.parts.tokens.check_time(&decoded, now)?;
        let claims = decoded.claims;
        if claims.issued_at < self.revocation_cutoff() {
            return Err(TokenError::Revoked.into());
        }
        if self.parts.revocations.is_revoked(claims.jti, now).await? {
            return Err(TokenError::Revoked.into());
        }
        Ok(claims)
    }

    /// Revokes a token until it could no longer be accepted anyway. Idempotent: an expired or
    /// already revoked token is fine; a forged one is not.
    pub async fn logout(&self, token: Option<AccessToken>) -> Result<(), ServiceError> {
        let token = token.ok_or(TokenError::Missing)?;
        let decoded = self.parts.tokens.decode(&token)?;
        let now = self.parts.clock.now();
        match self.parts.tokens.check_time(&decoded, now) {
            Ok(()) => {}
            Err(TokenError::Expired) => return Ok(()),
            Err(other) => return Err(other.into()),
        }
        let claims = decoded.claims;
        let until = self.parts.tokens.accepted_until(&claims);
        self.parts
            .revocations
            .revoke(claims.jti, until, now)
            .await?;
        tracing::info!(user_id = %claims.user_id, jti = %claims.jti, "logged out");
        Ok(())
    }
}
