//! Accounts: Register (create and sign in) and Login (check the password, throttled).

use std::net::IpAddr;

use super::{AuthService, ServiceError, Session};
use crate::{
    domain::{Credentials, Registration, UserId},
    store::NewUser,
};

impl AuthService {
    /// Creates an account and signs it in. Each source may register at most so many times per
    /// window (counted before anything else), and a taken email is answered before any argon2
    /// work; two registrations of one email still race on the unique index: exactly one wins,
    /// the other gets `EmailTaken`.
    pub async fn register(
        &self,
        registration: Registration,
        source: Option<IpAddr>,
    ) -> Result<Session, ServiceError> {
        let now = self.parts.clock.now_millis();
        self.parts.throttle.count_registration(source, now).await?;
        if self
            .parts
            .users
            .find_credentials(&registration.email)
            .await?
            .is_some()
        {
            return Err(ServiceError::EmailTaken);
        }
        let password_hash = self.parts.hasher.hash(registration.password).await?;
        let user = NewUser {
            id: UserId::generate(),
            email: registration.email,
            username: registration.username,
            password_hash,
        };
        self.parts.users.insert(&user).await?;
        tracing::info!(user_id = %user.id, "registered");
        self.start_session(user.id)
    }

    /// Checks an email and password and signs the user in. An unknown email costs the same
    /// argon2 verification as a wrong password and gets the same error. The attempt is counted
    /// by the throttle before the password is checked (and refused while a limit says wait, or
    /// when it cannot be counted); a success gives the count back.
    pub async fn login(
        &self,
        credentials: Credentials,
        source: Option<IpAddr>,
    ) -> Result<Session, ServiceError> {
        let Credentials { email, password } = credentials;
        let now = self.parts.clock.now_millis();
        let attempt = self.parts.throttle.begin(&email, source, now).await?;
        let stored = self.parts.users.find_credentials(&email).await?;
        let user_id = stored.as_ref().map(|credentials| credentials.id);
        let matched = self
            .parts
            .hasher
            .verify(
                password,
                stored.map(|credentials| credentials.password_hash),
            )
            .await?;
        match user_id {
            Some(user_id) if matched => {
                self.parts.throttle.succeeded(attempt, now).await?;
                tracing::info!(%user_id, "logged in");
                self.start_session(user_id)
            }
            _ => {
                // The failure was counted when the attempt began.
                drop(attempt);
                tracing::info!(?source, "login refused");
                Err(ServiceError::InvalidCredentials)
            }
        }
    }
}
