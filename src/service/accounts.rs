//! Accounts: Register (create and sign in), Login (check the password, throttled),
//! ChangePassword and DeleteAccount (the password checked like Login's). A successful check of a
//! hash made with other parameters than the configured ones rehashes it, off the response path.

use super::{AuthService, Client, ServiceError, Session};
use crate::{
    audit::{Action, AuditEvent},
    domain::{
        AccessToken, Credentials, Email, FieldViolation, Password, PasswordHashString,
        Registration, UserId, personal_words,
    },
    store::{NewUser, Revocation, Revoked, StoredUser},
    throttle::LoginAttempt,
};

impl AuthService {
    /// Creates an account and signs it in. Each source may register at most so many times per
    /// window (counted before anything else), and a taken email is answered before any argon2
    /// work; two registrations of one email still race on the unique index: exactly one wins,
    /// the other gets `EmailTaken`.
    pub async fn register(
        &self,
        registration: Registration,
        client: &Client,
    ) -> Result<Session, ServiceError> {
        let result = self.create_account(registration, client).await;
        metrics::counter!(crate::metrics::REGISTRATIONS, "outcome" => outcome(&result))
            .increment(1);
        result
    }

    async fn create_account(
        &self,
        registration: Registration,
        client: &Client,
    ) -> Result<Session, ServiceError> {
        let now = self.parts.clock.now_millis();
        self.parts
            .throttle
            .count_registration(client.source, now)
            .await?;
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
        let session = self.start_session(user.id, client, None).await?;
        self.audit(
            AuditEvent::new(Action::UserRegistered)
                .user(user.id)
                .session(session.session_id)
                .caller(client.caller()),
        );
        Ok(session)
    }

    /// Checks an email and password and signs the user in. An unknown email costs the same
    /// argon2 verification as a wrong password and gets the same error. The attempt is counted
    /// by the throttle before the password is checked (and refused while a limit says wait, or
    /// when it cannot be counted); a success gives the count back.
    pub async fn login(
        &self,
        credentials: Credentials,
        client: &Client,
    ) -> Result<Session, ServiceError> {
        let result = self.sign_in(credentials, client).await;
        metrics::counter!(crate::metrics::LOGINS, "outcome" => outcome(&result)).increment(1);
        result
    }

    async fn sign_in(
        &self,
        credentials: Credentials,
        client: &Client,
    ) -> Result<Session, ServiceError> {
        let Credentials { email, password } = credentials;
        let now = self.parts.clock.now_millis();
        let failed = || {
            self.parts.audit.with_email(
                AuditEvent::new(Action::LoginFailed).caller(client.caller()),
                &email,
            )
        };
        let attempt = match self.parts.throttle.begin(&email, client.source, now).await {
            Ok(attempt) => attempt,
            Err(error) => return Err(self.refused_by_throttle(error, failed())),
        };
        let stored = self.parts.users.find_credentials(&email).await?;
        let (user_id, hash) = match stored {
            Some(stored) => (Some(stored.id), Some(stored.password_hash)),
            None => (None, None),
        };
        let (matched, password) = self
            .parts
            .hasher
            .verify_keeping(password, hash.clone())
            .await?;
        match (user_id, hash) {
            (Some(user_id), Some(hash)) if matched => {
                self.parts.throttle.succeeded(attempt, now).await?;
                let session = self.start_session(user_id, client, Some(&hash)).await?;
                self.rehash_if_outdated(user_id, hash, password);
                tracing::info!(%user_id, "logged in");
                self.audit(
                    AuditEvent::new(Action::LoginSucceeded)
                        .user(user_id)
                        .session(session.session_id)
                        .caller(client.caller()),
                );
                Ok(session)
            }
            _ => {
                tracing::info!(
                    source = client.source.map(tracing::field::display),
                    "login refused"
                );
                let mut event = failed().reason("invalid_credentials");
                if let Some(user_id) = user_id {
                    event = event.user(user_id);
                }
                self.audit_failure(event, attempt);
                Err(ServiceError::InvalidCredentials)
            }
        }
    }

    /// Checks `password` for the user of a verified access token, exactly like Login (the same
    /// throttle counters, the same error); the stored user and the password back.
    async fn check_password(
        &self,
        user_id: UserId,
        password: Password,
        client: &Client,
    ) -> Result<(StoredUser, Password), ServiceError> {
        let now = self.parts.clock.now_millis();
        let stored = self.parts.users.find_user(user_id).await?;
        // The account may have been deleted since the token was checked; the attempt still costs
        // one hash.
        let key = stored
            .as_ref()
            .map_or("", |user| user.email_normalized.as_str());
        let failed = || {
            AuditEvent::new(Action::LoginFailed)
                .user(user_id)
                .caller(client.caller())
        };
        let attempt = match self.parts.throttle.begin_for(key, client.source, now).await {
            Ok(attempt) => attempt,
            Err(error) => return Err(self.refused_by_throttle(error, failed())),
        };
        let (matched, password) = self
            .parts
            .hasher
            .verify_keeping(
                password,
                stored.as_ref().map(|user| user.password_hash.clone()),
            )
            .await?;
        match stored {
            Some(stored) if matched => {
                self.parts.throttle.succeeded(attempt, now).await?;
                Ok((stored, password))
            }
            _ => {
                tracing::info!(%user_id, source = client.source.map(tracing::field::display), "password check refused");
                self.audit_failure(failed().reason("invalid_credentials"), attempt);
                Err(ServiceError::InvalidCredentials)
            }
        }
    }

    /// Changes the password of the token's user: `current` checked like Login, `new` judged like
    /// Register's; then every session of the user ends and a new one starts.
    pub async fn change_password(
        &self,
        access_token: Option<AccessToken>,
        current: Password,
        new: Password,
        client: &Client,
    ) -> Result<Session, ServiceError> {
        let claims = self.verify(access_token).await?;
        let user_id = claims.user_id;
        let (mut stored, mut current) = self.check_password(user_id, current, client).await?;
        let personal = Email::parse(&stored.email_normalized).ok();
        let context = personal
            .as_ref()
            .map(|email| personal_words(email, None))
            .unwrap_or_default();
        new.check_strength(&context).map_err(|violation| {
            ServiceError::InvalidArgument(vec![FieldViolation {
                field: "new_password",
                ..violation
            }])
        })?;
        let new_hash = self.parts.hasher.hash(new).await?;
        // The compare-and-set first: of concurrent changes exactly one gets past it, and only
        // that one ends sessions (a loser ending them would end the winner's new one). A hash
        // that changed meanwhile is checked once more: a Login's rehash changes it without
        // changing the password.
        for attempt in 0..2 {
            if self
                .parts
                .users
                .replace_password_hash(user_id, &stored.password_hash, &new_hash)
                .await?
            {
                break;
            }
            if attempt == 1 {
                // Changed again: another ChangePassword won.
                return Err(ServiceError::InvalidCredentials);
            }
            // Changed (or deleted) meanwhile: is the password given still the one stored?
            (stored, current) = self.check_password(user_id, current, client).await?;
        }
        // Every session that exists now ends; a Login that checked the old password can no longer
        // start one (`start_session` checks the hash it verified).
        let ended = self.end_every_session_retrying(user_id).await?;
        tracing::info!(%user_id, "password changed; every session ended");
        self.audit(
            AuditEvent::new(Action::PasswordChanged)
                .user(user_id)
                .caller(client.caller()),
        );
        self.audit(
            AuditEvent::new(Action::SessionEnded)
                .user(user_id)
                .by("password_change")
                .sessions_ended(ended)
                .caller(client.caller()),
        );
        let session = self.start_session(user_id, client, Some(&new_hash)).await?;
        Ok(session)
    }

    /// The answer to an attempt the throttle did not let begin; one that must wait is recorded
    /// as `failed` with reason `throttled`.
    fn refused_by_throttle(
        &self,
        error: crate::throttle::ThrottleError,
        failed: AuditEvent,
    ) -> ServiceError {
        let error = ServiceError::from(error);
        if let ServiceError::Throttled { retry_after } = &error {
            self.audit(failed.reason("throttled").retry_after(*retry_after));
        }
        error
    }

    /// Records a refused password check (the failure was counted when the attempt began) and,
    /// when it was the one that reached a limit, that the throttle now makes callers wait.
    fn audit_failure(&self, failed: AuditEvent, attempt: LoginAttempt) {
        let wait = attempt.wait_if_failed();
        drop(attempt);
        let throttled = wait.map(|wait| failed.clone().retry_after(wait));
        self.audit(failed);
        if let Some(throttled) = throttled {
            self.audit(throttled.action(Action::LoginThrottled).without_reason());
        }
    }

    /// Deletes the token's user after checking `password` like Login: its row, its sessions and
    /// its throttle counts; every token of the user is refused from now on.
    pub async fn delete_account(
        &self,
        access_token: Option<AccessToken>,
        password: Password,
        client: &Client,
    ) -> Result<(), ServiceError> {
        let claims = self.verify(access_token).await?;
        let user_id = claims.user_id;
        let (stored, _) = self.check_password(user_id, password, client).await?;
        let now = self.parts.clock.now_millis();
        // Every token of the user, whenever issued: the id is never reused.
        let cutoff = Revocation {
            user: user_id,
            what: Revoked::IssuedBefore(user_id, i64::MAX),
            until: self.last_access_token_until(now),
        };
        self.write_revocations(&[cutoff], now.div_euclid(1000))
            .await?;
        self.parts.users.delete_user(user_id).await?;
        self.parts
            .throttle
            .forget_account(&stored.email_normalized, client.source)
            .await?;
        tracing::info!(%user_id, "account deleted");
        self.audit(
            AuditEvent::new(Action::AccountDeleted)
                .user(user_id)
                .caller(client.caller()),
        );
        Ok(())
    }

    /// Rehashes a password whose stored hash has other parameters than the configured ones, on a
    /// task of its own; the hash is replaced only if it is still the one checked.
    fn rehash_if_outdated(&self, user_id: UserId, checked: PasswordHashString, password: Password) {
        if !self.parts.hasher.needs_rehash(&checked) {
            return;
        }
        let hasher = self.parts.hasher.clone();
        let users = self.parts.users.clone();
        tokio::spawn(async move {
            let rehashed = match hasher.hash(password).await {
                Ok(rehashed) => rehashed,
                Err(error) => {
                    tracing::warn!(%user_id, error = %error, "rehash skipped");
                    return;
                }
            };
            match users
                .replace_password_hash(user_id, &checked, &rehashed)
                .await
            {
                Ok(true) => {
                    tracing::info!(%user_id, "password rehashed with the configured parameters")
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    %user_id,
                    error = crate::telemetry::error_chain(&error),
                    "rehash not stored"
                ),
            }
        });
    }
}

/// The `outcome` label of a Login or Register metric.
fn outcome(result: &Result<Session, ServiceError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ServiceError::InvalidCredentials) => "invalid_credentials",
        Err(ServiceError::EmailTaken) => "email_taken",
        Err(ServiceError::Throttled { .. } | ServiceError::RegistrationsThrottled { .. }) => {
            "throttled"
        }
        Err(ServiceError::Overloaded) => "shed",
        Err(ServiceError::Unavailable { .. }) => "unavailable",
        Err(ServiceError::InvalidArgument(_)) => "invalid_argument",
        Err(_) => "error",
    }
}
