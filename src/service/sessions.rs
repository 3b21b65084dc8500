//! Sessions: starting one (Register, Login, ChangePassword), Refresh with rotation and reuse
//! detection (RFC 9700 §4.14), Logout, LogoutAll, ListSessions and RevokeSession.
//!
//! A session lives in the user database; its refresh token is stored as a hash and rotated by a
//! compare-and-set, so of concurrent Refresh calls with one token exactly one wins and the others
//! present a spent token: reuse, which ends the session. Ending a session writes a revocation of
//! its id (every access token issued in it), which Verify checks with the jti and the user's
//! cut-off in one round trip.

use crate::audit::{Action, AuditEvent};
use std::{net::IpAddr, time::Duration};

use super::{AuthService, ServiceError, Session};
use crate::{
    clock::{UnixMillis, UnixSeconds},
    domain::{AccessToken, PasswordHashString, RefreshToken, SessionId, UserAgent, UserId},
    store::{NewSession, RefreshTokenState, Revocation, Revoked, Rotation, StoredSession},
    tokens::{TokenClaims, TokenError},
};

/// Sessions are purged this long after they ended or expired (kept meanwhile for the logs of an
/// investigation; a spent token of an ended session is refused either way).
const ENDED_SESSION_RETENTION_MS: UnixMillis = 24 * 3600 * 1000;
/// Compare-and-set rounds a Refresh tries before giving up on a session that keeps changing
/// (within the reuse grace, each of N concurrent calls with one token may lose N − 1 rounds).
const REFRESH_ROUNDS: usize = 64;

/// Session lifetimes (AUTHD_REFRESH_TOKEN_TTL, AUTHD_SESSION_MAX_AGE) and the reuse grace
/// (AUTHD_REFRESH_REUSE_GRACE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A refresh token unused this long expires; each Refresh starts it again.
    pub refresh_token_ttl: Duration,
    /// A session ends this long after it started, whatever happens.
    pub max_age: Duration,
    /// Within this long of a rotation, the token it spent still rotates (a fresh pair) instead of
    /// counting as reuse; 0 turns the grace off.
    pub reuse_grace: Duration,
    /// Live sessions one user may have; a new one past it ends the oldest.
    pub max_per_user: u32,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            max_age: Duration::from_secs(90 * 24 * 3600),
            reuse_grace: Duration::ZERO,
            max_per_user: 100,
        }
    }
}

/// Who is calling, as far as a new session records it.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The address the login throttle counts.
    pub source: Option<IpAddr>,
    /// The call's `user-agent`.
    pub user_agent: Option<UserAgent>,
    /// The trace the call belongs to (audit events name it).
    pub trace_id: Option<crate::audit::TraceId>,
}

impl Client {
    /// The caller as an audit event records it.
    pub fn caller(&self) -> crate::audit::Caller {
        crate::audit::Caller {
            source: self.source,
            user_agent: self.user_agent.clone(),
            trace_id: self.trace_id,
        }
    }
}

fn millis(duration: Duration) -> UnixMillis {
    UnixMillis::try_from(duration.as_millis()).unwrap_or(UnixMillis::MAX)
}

fn seconds_until(deadline: UnixMillis, now: UnixMillis) -> i64 {
    deadline.saturating_sub(now).max(0) / 1000
}

impl AuthService {
    /// Starts a session for `user_id`: a session row with a fresh refresh token, and an access
    /// token naming it. With `checked_hash` (Login, ChangePassword), only while the user's stored
    /// hash is still that one: a sign-in that checked the old password cannot start a session
    /// after a ChangePassword (which would then outlive it), nor one for a deleted user.
    pub(super) async fn start_session(
        &self,
        user_id: UserId,
        client: &Client,
        checked_hash: Option<&PasswordHashString>,
    ) -> Result<Session, ServiceError> {
        let policy = &self.parts.session_policy;
        let now = self.parts.clock.now_millis();
        let expires_at = now.saturating_add(millis(policy.max_age));
        let session_id = SessionId::generate();
        let refresh_token = RefreshToken::generate(session_id);
        let session = NewSession {
            id: session_id,
            user_id,
            refresh_hash: refresh_token.hash(),
            created_at: now,
            idle_expires_at: now
                .saturating_add(millis(policy.refresh_token_ttl))
                .min(expires_at),
            expires_at,
            user_agent: client.user_agent.clone(),
            source_address: client.source.map(|source| source.to_string()),
        };
        if !self
            .parts
            .sessions
            .create_session(&session, checked_hash)
            .await?
        {
            return Err(ServiceError::InvalidCredentials);
        }
        let evicted = self
            .parts
            .sessions
            .end_sessions_beyond(user_id, policy.max_per_user, now)
            .await?;
        if !evicted.is_empty() {
            self.end_sessions(user_id, &evicted, &[]).await?;
            tracing::info!(%user_id, ended = evicted.len(), "oldest sessions ended: too many live sessions");
            self.audit(
                AuditEvent::new(Action::SessionEnded)
                    .user(user_id)
                    .by("session_limit")
                    .sessions_ended(u32::try_from(evicted.len()).unwrap_or(u32::MAX))
                    .caller(client.caller()),
            );
        }
        self.session_tokens(
            user_id,
            session.id,
            session.idle_expires_at,
            refresh_token,
            now,
        )
    }

    /// The tokens of a session whose refresh token is `refresh_token`: a new access token.
    fn session_tokens(
        &self,
        user_id: UserId,
        session_id: SessionId,
        refresh_expires_at: UnixMillis,
        refresh_token: RefreshToken,
        now: UnixMillis,
    ) -> Result<Session, ServiceError> {
        // Never issue a token the revocation cut-off would refuse: within the cut-off's own
        // second (JWT times are whole seconds), `iat` is the cut-off, a fraction of a second
        // ahead, well inside the clock leeway.
        let issued_at = now.div_euclid(1000).max(self.revocation_cutoff());
        let token = self
            .parts
            .tokens
            .issue(user_id, session_id, issued_at)
            .map_err(ServiceError::Unexpected)?;
        Ok(Session {
            user_id,
            session_id,
            token,
            expires_in: self.parts.tokens.ttl_seconds(),
            refresh_token,
            refresh_expires_in: seconds_until(refresh_expires_at, now),
        })
    }

    /// Exchanges the current refresh token for a new pair. A spent one (outside the grace) is
    /// reuse: the session ends and the answer is `RefreshTokenReused`.
    pub async fn refresh(&self, presented: &str, client: &Client) -> Result<Session, ServiceError> {
        let presented = RefreshToken::parse(presented).ok_or(ServiceError::RefreshTokenInvalid)?;
        let sessions = &self.parts.sessions;
        let policy = &self.parts.session_policy;
        for _ in 0..REFRESH_ROUNDS {
            let now = self.parts.clock.now_millis();
            let next = RefreshToken::generate(presented.session());
            let rotation = Rotation {
                session: presented.session(),
                presented: presented.hash(),
                next: next.hash(),
                now,
                idle_until: now.saturating_add(millis(policy.refresh_token_ttl)),
            };
            if let Some(session) = sessions.rotate_refresh_token(&rotation).await? {
                self.audit(
                    AuditEvent::new(Action::SessionRefreshed)
                        .user(session.user_id)
                        .session(session.id)
                        .caller(client.caller()),
                );
                return self.session_tokens(
                    session.user_id,
                    session.id,
                    session.idle_expires_at,
                    next,
                    now,
                );
            }
            // Not current (or not live): find out why.
            let Some((session, current, state)) = sessions
                .find_refresh_token(rotation.session, rotation.presented)
                .await?
            else {
                return Err(ServiceError::RefreshTokenInvalid);
            };
            if state == RefreshTokenState::Spent && session.ended_at.is_some() {
                // Reuse after the session ended (typically: concurrent calls with one token, one
                // of which already ended it): still reuse. Its revocation is written again, in
                // case the call that ended it could not write it (Redis down).
                self.end_sessions(session.user_id, std::slice::from_ref(&session), &[])
                    .await?;
                self.audit(
                    AuditEvent::new(Action::SessionRefreshReuseDetected)
                        .user(session.user_id)
                        .session(session.id)
                        .caller(client.caller()),
                );
                return Err(ServiceError::RefreshTokenReused);
            }
            if session.ended_at.is_some() {
                return Err(ServiceError::RefreshTokenInvalid);
            }
            if !session.is_live(now) {
                return Err(ServiceError::RefreshTokenExpired);
            }
            match state {
                // Current and live, yet the compare-and-set missed: not expected (a token never
                // becomes current again); try again rather than answer wrongly.
                RefreshTokenState::Current => continue,
                RefreshTokenState::Spent if self.within_grace(&session, &rotation) => {
                    if let Some(session) = sessions
                        .replace_current_refresh_token(session.id, current, &rotation)
                        .await?
                    {
                        tracing::info!(session_id = %session.id, "refresh token reused within the grace");
                        self.audit(
                            AuditEvent::new(Action::SessionRefreshed)
                                .user(session.user_id)
                                .session(session.id)
                                .reason("reuse_within_grace")
                                .caller(client.caller()),
                        );
                        return self.session_tokens(
                            session.user_id,
                            session.id,
                            session.idle_expires_at,
                            next,
                            now,
                        );
                    }
                    // The current token changed meanwhile: look again.
                    continue;
                }
                RefreshTokenState::Spent => {
                    // The database first: once the session has ended there, no Refresh of the
                    // thief's succeeds, even if the revocation below cannot be written now.
                    let ended = sessions.end_session(session.id, None, now).await?.is_some();
                    self.end_sessions(session.user_id, std::slice::from_ref(&session), &[])
                        .await?;
                    tracing::warn!(
                        user_id = %session.user_id,
                        session_id = %session.id,
                        "a spent refresh token was presented again: the session is ended"
                    );
                    self.audit(
                        AuditEvent::new(Action::SessionRefreshReuseDetected)
                            .user(session.user_id)
                            .session(session.id)
                            .caller(client.caller()),
                    );
                    // Of concurrent reuses, only the one that ended the session says so.
                    if ended {
                        self.audit(
                            AuditEvent::new(Action::SessionEnded)
                                .user(session.user_id)
                                .session(session.id)
                                .by("reuse")
                                .sessions_ended(1)
                                .caller(client.caller()),
                        );
                    }
                    return Err(ServiceError::RefreshTokenReused);
                }
            }
        }
        Err(ServiceError::Unexpected(anyhow::anyhow!(
            "the session kept changing during a Refresh"
        )))
    }

    /// Whether `rotation.presented` is the token spent by the session's latest rotation, within
    /// the reuse grace.
    fn within_grace(&self, session: &StoredSession, rotation: &Rotation) -> bool {
        let grace = millis(self.parts.session_policy.reuse_grace);
        grace > 0
            && session.previous_hash == Some(rotation.presented)
            && session
                .rotated_at
                .is_some_and(|rotated_at| rotation.now <= rotated_at.saturating_add(grace))
    }

    /// Ends the session of an access token and/or of a refresh token. Idempotent: an ended
    /// session, an expired access token or an unknown (well-formed) refresh token is fine; a
    /// forged access token or a malformed refresh token is not.
    pub async fn logout(
        &self,
        access_token: Option<AccessToken>,
        refresh_token: &str,
        client: &Client,
    ) -> Result<(), ServiceError> {
        let refresh_token = match refresh_token.trim() {
            "" => None,
            raw => Some(RefreshToken::parse(raw).ok_or(ServiceError::RefreshTokenInvalid)?),
        };
        if access_token.is_none() && refresh_token.is_none() {
            return Err(TokenError::Missing.into());
        }
        let now = self.parts.clock.now_millis();
        if let Some(access_token) = access_token {
            let decoded = self.parts.tokens.decode(&access_token)?;
            match self.parts.tokens.check_time(&decoded, now.div_euclid(1000)) {
                Ok(()) => {
                    let ended = self.logout_access_token(&decoded.claims, now).await?;
                    let claims = &decoded.claims;
                    let mut revoked = AuditEvent::new(Action::TokenRevoked)
                        .user(claims.user_id)
                        .by("logout")
                        .caller(client.caller());
                    // A retry of a Logout that already ended the session records nothing more.
                    match claims.session_id {
                        Some(session_id) if ended => {
                            revoked = revoked.session(session_id);
                            self.audit(revoked.clone());
                            self.audit(revoked.action(Action::SessionEnded).sessions_ended(1));
                        }
                        Some(_) => {}
                        None => self.audit(revoked),
                    }
                }
                // An expired token needs no revoking, and ends nothing.
                Err(TokenError::Expired) => {}
                Err(other) => return Err(other.into()),
            }
        }
        if let Some(refresh_token) = refresh_token
            && let Some((session, _, _)) = self
                .parts
                .sessions
                .find_refresh_token(refresh_token.session(), refresh_token.hash())
                .await?
        {
            let ended = self
                .parts
                .sessions
                .end_session(session.id, None, now)
                .await?
                .is_some();
            self.end_sessions(session.user_id, std::slice::from_ref(&session), &[])
                .await?;
            tracing::info!(user_id = %session.user_id, session_id = %session.id, "logged out");
            if ended {
                self.audit(
                    AuditEvent::new(Action::SessionEnded)
                        .user(session.user_id)
                        .session(session.id)
                        .by("logout")
                        .sessions_ended(1)
                        .caller(client.caller()),
                );
            }
        }
        metrics::counter!(crate::metrics::LOGOUTS, "kind" => "logout").increment(1);
        Ok(())
    }

    async fn logout_access_token(
        &self,
        claims: &TokenClaims,
        now: UnixMillis,
    ) -> Result<bool, ServiceError> {
        let until = self.parts.tokens.accepted_until(claims);
        let mut revocations = vec![Revocation {
            user: claims.user_id,
            what: Revoked::Token(claims.jti),
            until,
        }];
        if let Some(session_id) = claims.session_id {
            revocations.push(Revocation {
                user: claims.user_id,
                what: Revoked::Session(session_id),
                until: self.last_access_token_until(now),
            });
        }
        // The revocations first: if the database then fails, the retry finds them in place.
        self.write_revocations(&revocations, now.div_euclid(1000))
            .await?;
        let mut ended = false;
        if let Some(session_id) = claims.session_id {
            ended = self
                .parts
                .sessions
                .end_session(session_id, Some(claims.user_id), now)
                .await?
                .is_some();
        }
        tracing::info!(user_id = %claims.user_id, jti = %claims.jti, "logged out");
        Ok(ended)
    }

    /// The last second an access token issued now (or a moment ago, by a Refresh racing the end
    /// of its session) can be accepted: what a session's revocation must outlive.
    pub(super) fn last_access_token_until(&self, now: UnixMillis) -> UnixSeconds {
        now.div_euclid(1000)
            .max(self.revocation_cutoff())
            .saturating_add(self.parts.tokens.ttl_seconds())
            .saturating_add(self.parts.tokens.leeway_seconds())
            .saturating_add(1)
    }

    /// The earliest last use of a session that may still hold an access token accepted at `now`
    /// (its lifetime and the leeway back, and two seconds for `iat` rounding and the cut-off).
    fn access_tokens_live_since(&self, now: UnixMillis) -> UnixMillis {
        let window = self.parts.tokens.ttl_seconds() + self.parts.tokens.leeway_seconds() + 2;
        now.saturating_sub(window.saturating_mul(1000))
    }

    /// Revokes the access tokens of `sessions` (those that may still hold a live access token)
    /// and records `extra` revocations with them.
    async fn end_sessions(
        &self,
        user: UserId,
        sessions: &[StoredSession],
        extra: &[Revocation],
    ) -> Result<(), ServiceError> {
        let now = self.parts.clock.now_millis();
        let until = self.last_access_token_until(now);
        let since = self.access_tokens_live_since(now);
        let mut revocations: Vec<Revocation> = sessions
            .iter()
            // A session whose last access token has expired needs no revocation.
            .filter(|session| session.last_used_at >= since)
            .map(|session| Revocation {
                user,
                what: Revoked::Session(session.id),
                until,
            })
            .collect();
        revocations.extend_from_slice(extra);
        if revocations.is_empty() {
            return Ok(());
        }
        Ok(self
            .write_revocations(&revocations, now.div_euclid(1000))
            .await?)
    }

    /// Ends every session of `user` and refuses every access token issued before now; how many
    /// live sessions ended. Within the current second (JWT `iat` has one-second resolution), the
    /// sessions' own revocations refuse their tokens, and a session started later is untouched.
    pub(super) async fn end_every_session(&self, user: UserId) -> Result<u32, ServiceError> {
        let now = self.parts.clock.now_millis();
        let cutoff = Revocation {
            user,
            what: Revoked::IssuedBefore(user, now.div_euclid(1000)),
            until: self.last_access_token_until(now),
        };
        // Every session that may hold a live access token, expired ones included (a session past
        // its end may have refreshed a moment before it, in this very second).
        let before = self
            .parts
            .sessions
            .sessions_used_since(user, self.access_tokens_live_since(now))
            .await?;
        self.end_sessions(user, &before, &[cutoff]).await?;
        let ended = self.parts.sessions.end_user_sessions(user, now).await?;
        // Sessions started between the two reads.
        let started_meanwhile: Vec<StoredSession> = ended
            .iter()
            .filter(|session| !before.iter().any(|b| b.id == session.id))
            .cloned()
            .collect();
        self.end_sessions(user, &started_meanwhile, &[]).await?;
        Ok(u32::try_from(ended.len()).unwrap_or(u32::MAX))
    }

    /// [`end_every_session`](Self::end_every_session) after a password change, which cannot be
    /// undone: a back end that fails for a moment gets two more tries (0.1 s, then 0.3 s later)
    /// before the caller is told UNAVAILABLE (and can still call LogoutAll: the old sessions'
    /// tokens work until it succeeds).
    pub(super) async fn end_every_session_retrying(
        &self,
        user: UserId,
    ) -> Result<u32, ServiceError> {
        let mut pause = Duration::from_millis(100);
        for _ in 0..2 {
            match self.end_every_session(user).await {
                Err(ServiceError::Unavailable { backend, cause }) => {
                    tracing::warn!(
                        %user,
                        backend,
                        error = crate::telemetry::error_chain(cause.as_ref()),
                        "ending the sessions after a password change failed; retrying"
                    );
                    tokio::time::sleep(pause).await;
                    pause *= 3;
                }
                done => return done,
            }
        }
        self.end_every_session(user).await
    }

    /// LogoutAll: ends every session of the token's user, on every instance.
    pub async fn logout_all(
        &self,
        access_token: Option<AccessToken>,
        client: &Client,
    ) -> Result<u32, ServiceError> {
        let claims = self.verify(access_token).await?;
        let ended = self.end_every_session(claims.user_id).await?;
        self.audit(
            AuditEvent::new(Action::SessionEnded)
                .user(claims.user_id)
                .by("logout_all")
                .sessions_ended(ended)
                .caller(client.caller()),
        );
        tracing::info!(user_id = %claims.user_id, sessions_ended = ended, "logged out everywhere");
        metrics::counter!(crate::metrics::LOGOUTS, "kind" => "logout_all").increment(1);
        Ok(ended)
    }

    /// The caller's live sessions, newest first, and the caller's own session id.
    pub async fn list_sessions(
        &self,
        access_token: Option<AccessToken>,
    ) -> Result<(Vec<StoredSession>, Option<SessionId>), ServiceError> {
        let claims = self.verify(access_token).await?;
        let now = self.parts.clock.now_millis();
        let sessions = self
            .parts
            .sessions
            .live_sessions(claims.user_id, now)
            .await?;
        Ok((sessions, claims.session_id))
    }

    /// Ends one of the caller's sessions. A session that is not the caller's and one that does
    /// not exist get the same answer, `SessionNotFound`.
    pub async fn revoke_session(
        &self,
        access_token: Option<AccessToken>,
        session_id: SessionId,
        client: &Client,
    ) -> Result<(), ServiceError> {
        let claims = self.verify(access_token).await?;
        let sessions = &self.parts.sessions;
        let Some(session) = sessions
            .session(session_id)
            .await?
            .filter(|session| session.user_id == claims.user_id)
        else {
            return Err(ServiceError::SessionNotFound);
        };
        // Ended already (a retry): its revocation is written again, which is harmless.
        self.end_sessions(claims.user_id, std::slice::from_ref(&session), &[])
            .await?;
        let now = self.parts.clock.now_millis();
        let ended = sessions
            .end_session(session_id, Some(claims.user_id), now)
            .await?
            .is_some();
        tracing::info!(user_id = %claims.user_id, %session_id, "session revoked");
        if ended {
            self.audit(
                AuditEvent::new(Action::SessionEnded)
                    .user(claims.user_id)
                    .session(session_id)
                    .by("revoke_session")
                    .sessions_ended(1)
                    .caller(client.caller()),
            );
        }
        Ok(())
    }

    /// Deletes sessions ended or expired long enough ago.
    pub async fn purge_ended_sessions(&self) -> Result<u64, ServiceError> {
        let before = self
            .parts
            .clock
            .now_millis()
            .saturating_sub(ENDED_SESSION_RETENTION_MS);
        Ok(self.parts.sessions.purge_sessions(before).await?)
    }
}
