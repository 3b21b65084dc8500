//! Refresh: rotation with reuse detection (RFC 9700 §4.14), the reuse grace, idle and absolute
//! expiry, and refresh tokens stored only as hashes.

use std::{sync::Arc, time::Duration};

use authd::{clock::ManualClock, pb};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};
use tonic::{Code, Status};

use crate::{
    backend_tests,
    common::{
        Backend, Fixture, TestApp, TestState, assert_status, reason, redis_url, spawn_app, unix_now,
    },
};

backend_tests!(
    refresh_returns_a_new_pair_for_the_same_session,
    reusing_a_spent_refresh_token_ends_the_whole_session,
    of_sixteen_concurrent_refreshes_with_one_token_one_wins_and_the_session_ends,
    within_the_grace_concurrent_refreshes_with_one_token_all_get_a_pair,
    the_grace_covers_only_the_latest_rotation_and_only_for_its_window,
    unknown_malformed_and_ended_session_refresh_tokens_are_invalid,
    an_unused_refresh_token_expires_after_the_idle_ttl,
    refresh_extends_the_idle_limit_but_never_past_the_session_max_age,
    a_one_second_session_max_age_is_accepted_and_caps_the_first_token,
    no_table_or_redis_key_holds_a_refresh_token,
);

/// Asserts that Refresh with `token` fails with UNAUTHENTICATED and `reason`.
async fn assert_refresh_fails(app: &TestApp, token: &str, reason: &str) {
    let status = app.refresh(token).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some(reason));
}

async fn assert_revoked(app: &TestApp, access_token: &str) {
    let status = app.verify(access_token).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("TOKEN_REVOKED"));
}

fn sha256(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The stored hash of a session's current refresh token.
async fn current_refresh_hash(state: &TestState, session_id: &str) -> Vec<u8> {
    match state.backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&state.database_url()).await.unwrap();
            sqlx::query_scalar("SELECT refresh_hash FROM sessions WHERE id::text = $1")
                .bind(session_id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
        Backend::Embedded => {
            let pool = sqlx::SqlitePool::connect(&state.embedded_database_url())
                .await
                .unwrap();
            sqlx::query_scalar("SELECT refresh_hash FROM sessions WHERE id = ?1")
                .bind(session_id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    }
}

async fn refresh_returns_a_new_pair_for_the_same_session(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, user_id, first) = app.new_session_user().await;
    let refreshed = app.refresh(&first.refresh_token).await.unwrap();
    assert_eq!(refreshed.user_id, user_id);
    let tokens = refreshed.tokens.unwrap();
    assert_eq!(tokens.session_id, first.session_id, "the same session");
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.expires_in, 900);
    assert_ne!(tokens.access_token, first.access_token);
    assert_ne!(
        tokens.refresh_token, first.refresh_token,
        "a NEW refresh token"
    );
    assert_eq!(tokens.refresh_token.len(), 64);
    assert!((30 * 86400 - 1..=30 * 86400).contains(&tokens.refresh_expires_in));
    let verified = app.verify(&tokens.access_token).await.unwrap();
    assert_eq!(verified.user_id, user_id);
    assert_eq!(verified.session_id, first.session_id);
    // The new refresh token is current and rotates in turn.
    let again = app
        .refresh(&tokens.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    assert_eq!(again.session_id, first.session_id);
    app.verify(&again.access_token).await.unwrap();
}

async fn reusing_a_spent_refresh_token_ends_the_whole_session(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (email, _, first) = app.new_session_user().await;
    let other = app.new_session(&email).await;
    let second = app
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    let third = app
        .refresh(&second.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();

    // The first refresh token was spent by the first rotation: presenting it again is reuse.
    assert_refresh_fails(&app, &first.refresh_token, "REFRESH_TOKEN_REUSED").await;
    // The session has ended: its current refresh token and every access token issued in it.
    assert_refresh_fails(&app, &third.refresh_token, "REFRESH_TOKEN_INVALID").await;
    for access_token in [
        &first.access_token,
        &second.access_token,
        &third.access_token,
    ] {
        assert_revoked(&app, access_token).await;
    }
    // Presenting a spent token of the ended session again is refused (as reuse or as a token of
    // an ended session: the table leaves it open) and revives nothing.
    for spent in [&first.refresh_token, &second.refresh_token] {
        let status = app.refresh(spent).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(
            ["REFRESH_TOKEN_REUSED", "REFRESH_TOKEN_INVALID"].contains(&reason(&status).as_str()),
            "{status:?}"
        );
    }
    assert_refresh_fails(&app, &third.refresh_token, "REFRESH_TOKEN_INVALID").await;
    // Another session of the same user is untouched.
    app.verify(&other.access_token)
        .await
        .expect("other session verifies");
    let other = app
        .refresh(&other.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    app.verify(&other.access_token).await.unwrap();
}

/// Sixteen Refresh calls with one token, started together.
async fn sixteen_concurrent_refreshes(
    app: &TestApp,
    token: &str,
) -> Vec<Result<pb::RefreshResponse, Status>> {
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let mut client = app.client.clone();
            let token = token.to_owned();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                client
                    .refresh(pb::RefreshRequest {
                        refresh_token: token,
                    })
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    results
}

async fn of_sixteen_concurrent_refreshes_with_one_token_one_wins_and_the_session_ends(
    backend: Backend,
) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (email, _, first) = app.new_session_user().await;
    let other = app.new_session(&email).await;
    let results = sixteen_concurrent_refreshes(&app, &first.refresh_token).await;
    let (won, lost): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    assert_eq!(won.len(), 1, "exactly one OK; the others: {lost:?}");
    let reasons: Vec<String> = lost
        .iter()
        .map(|result| {
            let status = result.as_ref().unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
            reason(status)
        })
        .collect();
    assert!(
        reasons.iter().all(|r| r == "REFRESH_TOKEN_REUSED"),
        "the 15 others are reuse: {reasons:?}"
    );
    // The session has ended, the winner's pair included.
    let winner = won.into_iter().next().unwrap().unwrap().tokens.unwrap();
    assert_refresh_fails(&app, &winner.refresh_token, "REFRESH_TOKEN_INVALID").await;
    assert_revoked(&app, &winner.access_token).await;
    assert_revoked(&app, &first.access_token).await;
    app.verify(&other.access_token)
        .await
        .expect("other session untouched");
}

async fn within_the_grace_concurrent_refreshes_with_one_token_all_get_a_pair(backend: Backend) {
    let state = TestState::new(backend).await;
    let app = state.app().arg("--refresh-reuse-grace=1m").start().await;
    let (_, _, first) = app.new_session_user().await;
    let results = sixteen_concurrent_refreshes(&app, &first.refresh_token).await;
    let pairs: Vec<pb::AuthTokens> = results
        .into_iter()
        .map(|result| {
            result
                .expect("every call within the grace gets a pair")
                .tokens
                .unwrap()
        })
        .collect();
    for pair in &pairs {
        assert_eq!(pair.session_id, first.session_id);
        app.verify(&pair.access_token)
            .await
            .expect("nothing was revoked");
    }
    // Exactly one of the sixteen refresh tokens is the session's current one …
    let stored = current_refresh_hash(&state, &first.session_id).await;
    let current: Vec<&pb::AuthTokens> = pairs
        .iter()
        .filter(|pair| sha256(&pair.refresh_token) == stored)
        .collect();
    assert_eq!(current.len(), 1, "one current refresh token");
    // … and the session goes on with it.
    let next = app
        .refresh(&current[0].refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    assert_eq!(next.session_id, first.session_id);
    app.verify(&next.access_token).await.unwrap();
    app.verify(&first.access_token).await.unwrap();
}

async fn the_grace_covers_only_the_latest_rotation_and_only_for_its_window(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let state = TestState::new(backend).await;
    let app = state
        .app()
        .arg("--refresh-reuse-grace=1m")
        .clock(clock.clone())
        .start()
        .await;

    // Within the grace, the token spent by the latest rotation gives a fresh pair, more than once.
    let (_, _, first) = app.new_session_user().await;
    let second = app
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    clock.advance(Duration::from_secs(30));
    let retried = app
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    assert_eq!(retried.session_id, first.session_id);
    app.verify(&retried.access_token).await.unwrap();
    // The grace rotation spent the token that was current.
    clock.advance(Duration::from_secs(20));
    let retried_again = app
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    // Past the window counted from the regular rotation (grace rotations do not extend it): reuse.
    clock.advance(Duration::from_secs(10) + Duration::from_millis(1));
    assert_refresh_fails(&app, &first.refresh_token, "REFRESH_TOKEN_REUSED").await;
    assert_refresh_fails(&app, &retried_again.refresh_token, "REFRESH_TOKEN_INVALID").await;
    for access_token in [
        &first.access_token,
        &second.access_token,
        &retried.access_token,
        &retried_again.access_token,
    ] {
        assert_revoked(&app, access_token).await;
    }

    // A token spent two rotations ago is reuse even within the grace.
    let (_, _, first) = app.new_session_user().await;
    let second = app
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    let third = app
        .refresh(&second.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    assert_refresh_fails(&app, &first.refresh_token, "REFRESH_TOKEN_REUSED").await;
    assert_refresh_fails(&app, &third.refresh_token, "REFRESH_TOKEN_INVALID").await;
    assert_revoked(&app, &third.access_token).await;

    // A token spent by a grace rotation is not covered by the grace: reuse.
    let (_, _, first) = app.new_session_user().await;
    let second = app
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    let retried = app
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    assert_refresh_fails(&app, &second.refresh_token, "REFRESH_TOKEN_REUSED").await;
    assert_refresh_fails(&app, &retried.refresh_token, "REFRESH_TOKEN_INVALID").await;
    assert_revoked(&app, &retried.access_token).await;
}

async fn unknown_malformed_and_ended_session_refresh_tokens_are_invalid(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let (_, _, tokens) = app.new_session_user().await;
    let unknown = URL_SAFE_NO_PAD.encode([7u8; 32]);
    assert_eq!(unknown.len(), 43);
    let valid = tokens.refresh_token.clone();
    let malformed = [
        String::new(),
        "not a refresh token".to_owned(),
        valid[..42].to_owned(),
        format!("{valid}A"),
        valid
            .replace(|c: char| c.is_ascii_alphanumeric(), "+")
            .chars()
            .take(43)
            .collect(),
        format!("{}=", &valid),
        tokens.access_token.clone(),
    ];
    assert_refresh_fails(&app, &unknown, "REFRESH_TOKEN_INVALID").await;
    for token in &malformed {
        assert_refresh_fails(&app, token, "REFRESH_TOKEN_INVALID").await;
    }
    // None of that touched the session.
    let tokens = app.refresh(&valid).await.unwrap().tokens.unwrap();
    // An ended session's current refresh token.
    app.logout(&tokens.access_token).await.unwrap();
    assert_refresh_fails(&app, &tokens.refresh_token, "REFRESH_TOKEN_INVALID").await;
}

async fn an_unused_refresh_token_expires_after_the_idle_ttl(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let state = TestState::new(backend).await;
    let app = state
        .app()
        .arg("--refresh-token-ttl=1s")
        .clock(clock.clone())
        .start()
        .await;
    let (email, _, tokens) = app.new_session_user().await;
    assert_eq!(tokens.refresh_expires_in, 1);
    // Each Refresh within the idle limit starts it again.
    let mut current = tokens.refresh_token;
    for _ in 0..3 {
        clock.advance(Duration::from_millis(900));
        let tokens = app.refresh(&current).await.unwrap().tokens.unwrap();
        assert_eq!(tokens.refresh_expires_in, 1);
        current = tokens.refresh_token;
    }
    let kept = app.new_session(&email).await;
    clock.advance(Duration::from_secs(1));
    assert_refresh_fails(&app, &current, "REFRESH_TOKEN_EXPIRED").await;
    assert_refresh_fails(&app, &current, "REFRESH_TOKEN_EXPIRED").await;
    assert_refresh_fails(&app, &kept.refresh_token, "REFRESH_TOKEN_EXPIRED").await;
    // Expired sessions are not listed.
    let fresh = app.new_session(&email).await;
    let listed = app.list_sessions(&fresh.access_token).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.session_id.as_str()).collect();
    assert_eq!(ids, [fresh.session_id.as_str()]);
}

async fn refresh_extends_the_idle_limit_but_never_past_the_session_max_age(backend: Backend) {
    let clock = Arc::new(ManualClock::at(unix_now()));
    let state = TestState::new(backend).await;
    let app = state
        .app()
        .args(["--refresh-token-ttl=10s", "--session-max-age=25s"])
        .clock(clock.clone())
        .start()
        .await;
    let started = unix_now_of(&clock);
    let (_, _, tokens) = app.new_session_user().await;
    assert_eq!(tokens.refresh_expires_in, 10);
    let mut current = tokens.refresh_token;
    // t = 8 s, 16 s, 24 s: the idle limit moves on, until it meets the absolute end (t = 25 s).
    for expected in [10, 9, 1] {
        clock.advance(Duration::from_secs(8));
        let tokens = app.refresh(&current).await.unwrap().tokens.unwrap();
        assert_eq!(tokens.refresh_expires_in, expected);
        let listed = app.list_sessions(&tokens.access_token).await.unwrap();
        assert_eq!(listed.len(), 1);
        let expires_at = listed[0].expires_at.unwrap().seconds;
        assert_eq!(
            expires_at,
            (unix_now_of(&clock) + expected),
            "session expires_at"
        );
        assert!(expires_at <= started + 25);
        current = tokens.refresh_token;
    }
    clock.advance(Duration::from_secs(1));
    assert_refresh_fails(&app, &current, "REFRESH_TOKEN_EXPIRED").await;
}

fn unix_now_of(clock: &ManualClock) -> i64 {
    authd::clock::Clock::now(clock)
}

async fn a_one_second_session_max_age_is_accepted_and_caps_the_first_token(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let state = TestState::new(backend).await;
    let app = state
        .app()
        .arg("--session-max-age=1s")
        .clock(clock.clone())
        .start()
        .await;
    let (_, _, tokens) = app.new_session_user().await;
    assert_eq!(tokens.refresh_expires_in, 1, "capped by the absolute end");
    clock.advance(Duration::from_millis(500));
    let tokens = app
        .refresh(&tokens.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    assert_eq!(tokens.refresh_expires_in, 0, "half a second left");
    clock.advance(Duration::from_millis(500));
    assert_refresh_fails(&app, &tokens.refresh_token, "REFRESH_TOKEN_EXPIRED").await;
}

/// Everything that could hold a refresh token: the text of every row of every table (Postgres),
/// the raw database files (embedded), and every key and value under the state's Redis prefix.
async fn stored_bytes(state: &TestState) -> Vec<Vec<u8>> {
    let mut stored = Vec::new();
    match state.backend {
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&state.database_url()).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = 'public'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            assert!(tables.iter().any(|t| t == "sessions"), "{tables:?}");
            for table in tables {
                let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    r#"SELECT row_to_json(t)::text FROM "{table}" t"#
                )))
                .fetch_all(&pool)
                .await
                .unwrap();
                stored.extend(rows.into_iter().map(String::into_bytes));
            }
            let client = redis::Client::open(redis_url()).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                .arg(format!("{}*", state.redis_prefix))
                .query_async(&mut connection)
                .await
                .unwrap();
            for key in keys {
                let kind: String = redis::cmd("TYPE")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                let values: Vec<Vec<u8>> = match kind.as_str() {
                    "string" => vec![
                        redis::cmd("GET")
                            .arg(&key)
                            .query_async(&mut connection)
                            .await
                            .unwrap(),
                    ],
                    "zset" => redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut connection)
                        .await
                        .unwrap(),
                    "set" => redis::cmd("SMEMBERS")
                        .arg(&key)
                        .query_async(&mut connection)
                        .await
                        .unwrap(),
                    "hash" => redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async(&mut connection)
                        .await
                        .unwrap(),
                    "list" => redis::cmd("LRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .query_async(&mut connection)
                        .await
                        .unwrap(),
                    other => panic!("unexpected Redis type {other} of {key:?}"),
                };
                stored.push(key);
                stored.extend(values);
            }
        }
        Backend::Embedded => {
            for entry in std::fs::read_dir(state.data_dir.path()).unwrap() {
                let path = entry.unwrap().path();
                if path.is_file() {
                    stored.push(std::fs::read(&path).unwrap());
                }
            }
        }
    }
    stored
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

async fn no_table_or_redis_key_holds_a_refresh_token(backend: Backend) {
    let Fixture { app, state } = spawn_app(backend).await;
    let (email, _, first) = app.new_session_user().await;
    let mut issued = vec![first.refresh_token.clone()];
    // Rotations (spent tokens), a reuse (an ended session), a Logout by refresh token, a live one.
    let second = app
        .refresh(&first.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    issued.push(second.refresh_token.clone());
    assert_refresh_fails(&app, &first.refresh_token, "REFRESH_TOKEN_REUSED").await;
    let other = app.new_session(&email).await;
    issued.push(other.refresh_token.clone());
    app.logout_refresh(&other.refresh_token).await.unwrap();
    let live = app.new_session(&email).await;
    issued.push(live.refresh_token.clone());
    let live = app
        .refresh(&live.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    issued.push(live.refresh_token.clone());

    let stored = stored_bytes(&state).await;
    assert!(!stored.is_empty());
    for token in &issued {
        let raw = URL_SAFE_NO_PAD.decode(token).unwrap();
        let hex_raw: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        // The first 16 bytes are the session id, which is stored (as the row's id); the 32 after
        // them are the secret.
        let secret = &raw[16..];
        let hex_secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        for blob in &stored {
            // The token, a 16-character substring of it, or its raw bytes (also as hex).
            for start in (0..=token.len() - 16).step_by(9) {
                assert!(
                    !contains(blob, &token.as_bytes()[start..start + 16]),
                    "a stored value holds part of a refresh token"
                );
            }
            assert!(
                !contains(blob, &raw),
                "a stored value holds a token's raw bytes"
            );
            assert!(
                !contains(blob, hex_raw.as_bytes()),
                "a stored value holds a token's bytes as hex"
            );
            for start in (0..=secret.len() - 16).step_by(4) {
                assert!(
                    !contains(blob, &secret[start..start + 16]),
                    "a stored value holds part of a token's secret"
                );
                assert!(
                    !contains(blob, &hex_secret.as_bytes()[2 * start..2 * start + 32]),
                    "a stored value holds part of a token's secret as hex"
                );
            }
        }
    }
    // What is stored is the SHA-256 of the current token.
    assert_eq!(
        current_refresh_hash(&state, &live.session_id).await,
        sha256(&live.refresh_token)
    );
}

/// An outside attack found that with Redis unreachable, presenting a spent token ended nothing
/// (the revocation was written first and failed), so the thief kept rotating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_while_redis_is_down_still_ends_the_session_in_the_database() {
    let state = TestState::new(Backend::Postgres).await;
    let proxy = crate::common::Proxy::start(crate::common::host_port(&redis_url())).await;
    let app = state
        .app()
        .redis_url(Some(&proxy.url(&redis_url())))
        .start()
        .await;
    let (_, _, owner) = app.new_session_user().await;
    let thief = app
        .refresh(&owner.refresh_token)
        .await
        .unwrap()
        .tokens
        .unwrap();
    proxy.cut();
    let status = app.refresh(&owner.refresh_token).await.unwrap_err();
    assert_status(&status, Code::Unavailable, Some("BACKEND_UNAVAILABLE"));
    proxy.restore();
    // The session ended in the database: the thief's current token no longer rotates...
    let status = app.refresh(&thief.refresh_token).await.unwrap_err();
    assert_status(
        &status,
        Code::Unauthenticated,
        Some("REFRESH_TOKEN_INVALID"),
    );
    // ... and presenting the spent one again (once Redis answers again) writes the revocation
    // the outage kept out.
    let mut status = app.refresh(&owner.refresh_token).await.unwrap_err();
    for _ in 0..50 {
        if status.code() != Code::Unavailable {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = app.refresh(&owner.refresh_token).await.unwrap_err();
    }
    assert_status(&status, Code::Unauthenticated, Some("REFRESH_TOKEN_REUSED"));
    let status = app.verify(&thief.access_token).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, Some("TOKEN_REVOKED"));
}

/// An app on Postgres allowed `limit` database connections (half of them, rounded down, for
/// rotations), with `users` session users.
async fn app_with_database_connections(
    state: &TestState,
    limit: u32,
    users: usize,
) -> (Arc<TestApp>, Vec<pb::AuthTokens>) {
    let app = Arc::new(
        state
            .app()
            .arg(format!("--database-max-connections={limit}"))
            .start()
            .await,
    );
    let mut sessions = Vec::new();
    for _ in 0..users {
        sessions.push(app.new_session_user().await.2);
    }
    (app, sessions)
}

/// How many back ends `state`'s database has, not counting the one with process id `except`.
async fn database_backends(admin: &sqlx::PgPool, state: &TestState, except: i32) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> $2")
        .bind(&state.database.as_ref().unwrap().name)
        .bind(except)
        .fetch_one(admin)
        .await
        .unwrap()
}

/// A connection to `state`'s database in a transaction holding a lock on `sessions` that blocks
/// every UPDATE of it (as a migration or a long transaction would), and its back end's pid.
async fn lock_sessions_table(state: &TestState) -> (sqlx::PgConnection, i32) {
    use sqlx::Connection as _;
    let mut locker = sqlx::PgConnection::connect(&state.database_url())
        .await
        .unwrap();
    let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut locker)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("LOCK TABLE sessions IN SHARE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    (locker, pid)
}

/// Refresh's rotations run on connections of their own (no ping on release); together with the
/// main pool they stay within AUTHD_DATABASE_MAX_CONNECTIONS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_and_the_other_calls_together_stay_within_the_database_connection_limit() {
    let state = TestState::new(Backend::Postgres).await;
    let (app, users) = app_with_database_connections(&state, 4, 8).await;
    let admin = sqlx::PgPool::connect(&crate::common::admin_database_url())
        .await
        .unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for tokens in users {
        let app = app.clone();
        calls.spawn(async move {
            let mut tokens = tokens;
            for _ in 0..10 {
                let listed = app.list_sessions(&tokens.access_token).await.unwrap();
                assert_eq!(listed.len(), 1);
                tokens = app
                    .refresh(&tokens.refresh_token)
                    .await
                    .expect("every rotation succeeds")
                    .tokens
                    .unwrap();
            }
        });
    }
    let mut most = 0;
    while !calls.is_empty() {
        most = most.max(database_backends(&admin, &state, 0).await);
        if let Some(done) = calls.try_join_next() {
            done.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    most = most.max(database_backends(&admin, &state, 0).await);
    assert!(most <= 4, "{most} connections open with a limit of 4");
    assert!(
        most >= 2,
        "the rotations and the rest each had a connection: {most}"
    );
}

/// A TCP proxy to the test Postgres that counts the connections opened through it.
async fn counting_proxy() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let upstream = crate::common::host_port(&crate::common::admin_database_url());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let counter = opened.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (address, opened)
}

/// An outside attack found that a Refresh cancelled during its statement (a client's short
/// grpc-timeout; Refresh needs no authentication) threw its Postgres connection away, so that
/// 1 200 such calls with random tokens made authd open 1 047 new connections. The statement now
/// runs to its end and the connection is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_cancelled_mid_statement_do_not_make_authd_reconnect() {
    use std::sync::atomic::Ordering;
    let state = TestState::new(Backend::Postgres).await;
    let (proxy, opened) = counting_proxy().await;
    let admin = crate::common::host_port(&crate::common::admin_database_url()).to_string();
    let url = state.database_url().replacen(&admin, &proxy.to_string(), 1);
    let app = Arc::new(state.app().database_url(Some(&url)).start().await);
    let (_, _, mut tokens) = app.new_session_user().await;
    for _ in 0..5 {
        tokens = app
            .refresh(&tokens.refresh_token)
            .await
            .unwrap()
            .tokens
            .unwrap();
    }
    let before = opened.load(Ordering::SeqCst);
    let mut attackers = tokio::task::JoinSet::new();
    for worker in 0..8u64 {
        let app = app.clone();
        attackers.spawn(async move {
            for i in 0..150u64 {
                let token: [u8; 48] = std::array::from_fn(|_| rand::random());
                let mut request = tonic::Request::new(pb::RefreshRequest {
                    refresh_token: URL_SAFE_NO_PAD.encode(token),
                });
                // 0.2 to 4 ms: lands in the checkout, the ping, the connect or the statement.
                request.set_timeout(Duration::from_micros(
                    200 + ((i * 7 + worker * 13) % 20) * 190,
                ));
                let _ = app.client.clone().refresh(request).await;
            }
        });
    }
    while let Some(done) = attackers.join_next().await {
        done.unwrap();
    }
    let reconnects = opened.load(Ordering::SeqCst) - before;
    eprintln!("new Postgres connections during 1 200 cancelled Refresh calls: {reconnects}");
    assert!(
        reconnects <= 16,
        "1 200 cancelled Refresh calls made authd open {reconnects} Postgres connections"
    );
    app.refresh(&tokens.refresh_token)
        .await
        .expect("the session still rotates");
}

/// The same attack found that rotations timed out behind a lock (a migration, a long
/// transaction) left their back ends waiting while new connections took their slots: 10 back
/// ends with AUTHD_DATABASE_MAX_CONNECTIONS=4. A statement now keeps its slot until it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_blocked_by_a_lock_keep_within_the_connection_limit() {
    let state = TestState::new(Backend::Postgres).await;
    let (app, sessions) = app_with_database_connections(&state, 4, 2).await;
    let (mut locker, locker_pid) = lock_sessions_table(&state).await;
    let admin = sqlx::PgPool::connect(&crate::common::admin_database_url())
        .await
        .unwrap();
    let mut most = 0;
    for _ in 0..4 {
        let mut calls = tokio::task::JoinSet::new();
        for tokens in &sessions {
            let (app, token) = (app.clone(), tokens.refresh_token.clone());
            calls.spawn(async move { app.refresh(&token).await });
        }
        while let Some(done) = calls.join_next().await {
            let status = done.unwrap().unwrap_err();
            assert_status(&status, Code::Unavailable, Some("BACKEND_UNAVAILABLE"));
        }
        most = most.max(database_backends(&admin, &state, locker_pid).await);
    }
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    assert!(most <= 4, "{most} back ends with a limit of 4");
    // The lock gone, the statements that waited behind it end, and rotation works again.
    let mut recovered = false;
    for _ in 0..50 {
        match app.refresh(&sessions[0].refresh_token).await {
            Ok(_) => {
                recovered = true;
                break;
            }
            Err(status) if status.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // A rotation that waited behind the lock committed after its call gave up: the
            // token it spent is now reuse (RFC 9700), which is also an answer.
            Err(status) => {
                assert_status(&status, Code::Unauthenticated, Some("REFRESH_TOKEN_REUSED"));
                recovered = true;
                break;
            }
        }
    }
    assert!(recovered, "Refresh must answer again once the lock is gone");
}

/// Cancelled rotations run on to their end, so their number is bounded instead: with one
/// connection for rotations and that connection stuck behind a lock, at most 64 rotations wait,
/// and the rest are refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_waiting_for_a_stuck_connection_are_bounded() {
    let state = TestState::new(Backend::Postgres).await;
    let (app, sessions) = app_with_database_connections(&state, 2, 1).await;
    let tokens = &sessions[0];
    let (mut locker, _) = lock_sessions_table(&state).await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let app = app.clone();
        calls.spawn(async move {
            let token: [u8; 48] = std::array::from_fn(|_| rand::random());
            let started = std::time::Instant::now();
            let status = app
                .refresh(&URL_SAFE_NO_PAD.encode(token))
                .await
                .unwrap_err();
            assert_status(&status, Code::Unavailable, Some("BACKEND_UNAVAILABLE"));
            started.elapsed()
        });
    }
    let mut refused_at_once = 0;
    while let Some(elapsed) = calls.join_next().await {
        if elapsed.unwrap() < Duration::from_secs(1) {
            refused_at_once += 1;
        }
    }
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    assert!(
        (30..=36).contains(&refused_at_once),
        "{refused_at_once} of 100 refused at once; 64 may wait"
    );
    let mut rotated = false;
    for _ in 0..50 {
        if app.refresh(&tokens.refresh_token).await.is_ok() {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "rotation works again once the lock is gone");
}

/// A second outside attack found that once rotations ran on tasks of their own, a Refresh the
/// client gave up on while it waited for a connection still rotated later, so that the client's
/// retry with the same token was reuse and ended its session. A call given up before it had a
/// connection now runs no statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_given_up_while_waiting_for_a_connection_does_not_spend_the_token() {
    use sqlx::Connection as _;
    let state = TestState::new(Backend::Postgres).await;
    // One connection for rotations.
    let (app, mut sessions) = app_with_database_connections(&state, 2, 2).await;
    let (blocker, victim) = (sessions.remove(0).refresh_token, sessions.remove(0));
    // Hold the row of the blocker's session, so that its rotation holds the one connection.
    let blocker_session =
        uuid::Uuid::from_slice(&URL_SAFE_NO_PAD.decode(&blocker).unwrap()[..16]).unwrap();
    let mut locker = sqlx::PgConnection::connect(&state.database_url())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE")
        .bind(blocker_session)
        .execute(&mut locker)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let blocked = {
        let app = app.clone();
        tokio::spawn(async move { app.refresh(&blocker).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut request = tonic::Request::new(pb::RefreshRequest {
        refresh_token: victim.refresh_token.clone(),
    });
    request.set_timeout(Duration::from_millis(500));
    let first = app.client.clone().refresh(request).await;
    assert!(first.is_err(), "the victim's call waited behind the lock");
    tokio::time::sleep_until((started + Duration::from_millis(1300)).into()).await;
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let _ = blocked.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.refresh(&victim.refresh_token)
        .await
        .expect("the token the victim never got an answer for is still current");
}
