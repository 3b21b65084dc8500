//! WatchRevocations: the service credential, the snapshot (in chunks), each revocation as it
//! happens on any instance, heartbeats, and the stream's end at shutdown or when the instance's
//! own feed is lost.

use std::time::Duration;

use authd::{
    pb::{self, revocation::Kind, revocation_event::Event},
    store::{RedisStore, RedisTopology, Revocation, RevocationStore as _, Revoked},
};
use tonic::{Code, Status, Streaming, metadata::MetadataValue};

use crate::common::{
    Backend, TestApp, TestState, assert_status, host_port, jwt_claims, proxy::Proxy,
    redis_server::PrivateRedis, redis_url, unix_now,
};

/// The service credential the watching tests configure.
pub const WATCH_TOKEN: &str = "test-watch-token-0123456789abcdef-0123456789";

/// Opens a watch with `authorization` as given.
async fn open(app: &TestApp, authorization: Option<&str>) -> Result<Watcher, Status> {
    let mut request = tonic::Request::new(pb::WatchRevocationsRequest {});
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", MetadataValue::try_from(value).unwrap());
    }
    let mut client = app.client.clone();
    let stream = client.watch_revocations(request).await?.into_inner();
    Ok(Watcher { stream })
}

/// Opens a watch with the service credential.
async fn watch(app: &TestApp) -> Watcher {
    open(app, Some(&format!("Bearer {WATCH_TOKEN}")))
        .await
        .expect("the service credential may watch")
}

struct Watcher {
    stream: Streaming<pb::RevocationEvent>,
}

impl Watcher {
    /// The next event within `within`; panics on a timeout, an error or the end of the stream.
    async fn next(&mut self, within: Duration) -> Event {
        self.try_next(within)
            .await
            .expect("the stream goes on")
            .expect("an event in time")
    }

    /// The next event (`Ok(None)`: none within `within`), or the status that ended the stream.
    async fn try_next(&mut self, within: Duration) -> Result<Option<Event>, Status> {
        match tokio::time::timeout(within, self.stream.message()).await {
            Err(_) => Ok(None),
            Ok(Ok(Some(message))) => Ok(Some(message.event.expect("an event"))),
            Ok(Ok(None)) => Err(Status::internal("the stream ended without a status")),
            Ok(Err(status)) => Err(status),
        }
    }

    /// The whole snapshot, with how many chunks carried it.
    async fn snapshot(&mut self) -> (Vec<pb::Revocation>, usize) {
        let mut revocations = Vec::new();
        let mut chunks = 0;
        loop {
            match self.next(Duration::from_secs(15)).await {
                Event::Snapshot(chunk) => {
                    chunks += 1;
                    assert!(chunk.server_time.is_some());
                    // authd's default leeway, which local verifiers must not exceed past `exp`.
                    assert_eq!(
                        chunk.clock_leeway,
                        Some(prost_types::Duration {
                            seconds: 5,
                            nanos: 0
                        })
                    );
                    // authd's default access-token lifetime (15 min).
                    assert_eq!(
                        chunk.access_token_ttl,
                        Some(prost_types::Duration {
                            seconds: 900,
                            nanos: 0
                        })
                    );
                    revocations.extend(chunk.revocations);
                    if chunk.complete {
                        return (revocations, chunks);
                    }
                }
                other => panic!("expected the snapshot first, got {other:?}"),
            }
        }
    }

    /// Revocations that arrive within `within`, heartbeats skipped, until `done` holds for them.
    async fn revocations_until(
        &mut self,
        within: Duration,
        done: impl Fn(&[pb::Revocation]) -> bool,
    ) -> Vec<pb::Revocation> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        while !done(&seen) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_next(left).await {
                Ok(Some(Event::Revoked(revocation))) => seen.push(revocation),
                Ok(Some(Event::Heartbeat(_))) => {}
                Ok(Some(other)) => panic!("unexpected event {other:?}"),
                Ok(None) => panic!("not all revocations arrived in {within:?}: {seen:?}"),
                Err(status) => panic!("the stream ended: {status:?}"),
            }
        }
        seen
    }
}

fn names(revocations: &[pb::Revocation], kind: Kind, id: &str) -> bool {
    revocations
        .iter()
        .any(|revocation| revocation.kind() == kind && revocation.id == id)
}

fn watching(state: &TestState) -> crate::common::AppBuilder<'_> {
    state.app().arg(format!("--watch-token={WATCH_TOKEN}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_service_credential_may_watch() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().start().await;
    let status = open(&app, Some(&format!("Bearer {WATCH_TOKEN}")))
        .await
        .err()
        .unwrap();
    assert_status(&status, Code::PermissionDenied, Some("WATCH_NOT_ENABLED"));
    app.stop().await;

    let app = watching(&state).start().await;
    for authorization in [None, Some("Basic abc"), Some("Bearer"), Some("bearer  x")] {
        let status = open(&app, authorization).await.err().unwrap();
        assert_status(
            &status,
            Code::Unauthenticated,
            Some("WATCH_CREDENTIAL_MISSING"),
        );
    }
    let wrong = format!("Bearer {}", &WATCH_TOKEN[..WATCH_TOKEN.len() - 1]);
    let (_, _, user_token) = app.new_user().await;
    for authorization in [wrong, format!("Bearer {user_token}")] {
        let status = open(&app, Some(&authorization)).await.err().unwrap();
        assert_status(
            &status,
            Code::PermissionDenied,
            Some("WATCH_CREDENTIAL_WRONG"),
        );
    }
    // The scheme is case-insensitive, as everywhere.
    let mut watcher = open(&app, Some(&format!("bearer {WATCH_TOKEN}")))
        .await
        .unwrap();
    watcher.snapshot().await;
    app.stop().await;

    let too_short = state.app().arg("--watch-token=short").try_start().await;
    let error = format!("{:#}", too_short.err().unwrap());
    assert!(error.contains("AUTHD_WATCH_TOKEN"), "{error}");
}

/// A watcher gets what was revoked before it came, then each revocation as it is made, and a
/// heartbeat every second.
async fn a_watcher_gets_the_snapshot_then_each_revocation(backend: Backend) {
    let state = TestState::new(backend).await;
    let app = watching(&state).start().await;
    let (_, _, before) = app.new_user().await;
    let before_session = jwt_claims(&before)["sid"].as_str().unwrap().to_owned();
    app.logout(&before).await.unwrap();

    let mut watcher = watch(&app).await;
    let (snapshot, chunks) = watcher.snapshot().await;
    assert_eq!(chunks, 1);
    assert!(
        names(&snapshot, Kind::Session, &before_session),
        "{snapshot:?}"
    );
    let entry = snapshot.iter().find(|r| r.id == before_session).unwrap();
    let until = entry.until.unwrap().seconds;
    let exp = jwt_claims(&before)["exp"].as_i64().unwrap();
    assert!(
        until >= exp,
        "kept until {until}, the token lives until {exp}"
    );

    match watcher.next(Duration::from_secs(3)).await {
        Event::Heartbeat(heartbeat) => {
            assert_eq!(heartbeat.interval.unwrap().seconds, 1);
            let time = heartbeat.server_time.unwrap().seconds;
            assert!((time - unix_now()).abs() <= 2);
        }
        other => panic!("expected a heartbeat, got {other:?}"),
    }

    let (_, _, logged_out) = app.new_user().await;
    let session = jwt_claims(&logged_out)["sid"].as_str().unwrap().to_owned();
    app.logout(&logged_out).await.unwrap();
    let (_, user, everywhere) = app.new_user().await;
    app.logout_all(&everywhere).await.unwrap();
    let seen = watcher
        .revocations_until(Duration::from_secs(5), |seen| {
            names(seen, Kind::Session, &session) && names(seen, Kind::UserCutoff, &user)
        })
        .await;
    let cutoff = seen.iter().find(|r| r.kind() == Kind::UserCutoff).unwrap();
    let issued_at = jwt_claims(&everywhere)["iat"].as_i64().unwrap();
    assert!(cutoff.issued_before.unwrap().seconds >= issued_at);
    app.stop().await;
}

crate::backend_tests!(a_watcher_gets_the_snapshot_then_each_revocation);

/// Two instances on one Postgres (and, unless `redis` is `None`, one Redis): a revocation made
/// through A reaches a watcher of B.
async fn revocations_through_one_instance_reach_the_watchers_of_another(
    redis: Option<&str>,
    b_args: &[&str],
) {
    let state = TestState::new(Backend::Postgres).await;
    let a = watching(&state).redis_url(redis).start().await;
    let b = watching(&state)
        .redis_url(redis)
        .args(b_args.iter().copied())
        .start()
        .await;
    let mut watcher = watch(&b).await;
    watcher.snapshot().await;
    let (_, _, token) = a.new_user().await;
    let session = jwt_claims(&token)["sid"].as_str().unwrap().to_owned();
    a.logout(&token).await.unwrap();
    watcher
        .revocations_until(Duration::from_secs(5), |seen| {
            names(seen, Kind::Session, &session)
        })
        .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_redis_in_strict_mode() {
    revocations_through_one_instance_reach_the_watchers_of_another(Some(&redis_url()), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_redis_in_cached_mode() {
    revocations_through_one_instance_reach_the_watchers_of_another(
        Some(&redis_url()),
        &["--revocation-mode=cached"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_postgres_without_redis() {
    revocations_through_one_instance_reach_the_watchers_of_another(None, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_snapshot_comes_in_chunks() {
    let state = TestState::new(Backend::Postgres).await;
    let store = RedisStore::connect(
        &RedisTopology::Single(redis_url()),
        &Default::default(),
        &state.redis_prefix,
        false,
    )
    .await
    .unwrap();
    let now = unix_now();
    let revocations: Vec<Revocation> = (0..5_000)
        .map(|_| Revocation {
            user: authd::domain::UserId::generate(),
            what: Revoked::Token(authd::domain::Jti::generate()),
            until: now + 600,
        })
        .collect();
    store.revoke(&revocations, now).await.unwrap();
    let app = watching(&state).start().await;
    let mut watcher = watch(&app).await;
    let (snapshot, chunks) = watcher.snapshot().await;
    assert_eq!(snapshot.len(), 5_000);
    assert_eq!(chunks, 2);
    let expected: std::collections::HashSet<String> = revocations
        .iter()
        .map(|r| match r.what {
            Revoked::Token(jti) => jti.to_string(),
            _ => unreachable!(),
        })
        .collect();
    assert!(
        snapshot
            .iter()
            .all(|r| r.kind() == Kind::Token && expected.contains(&r.id))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_streams_and_is_not_held_up_by_them() {
    let state = TestState::new(Backend::Embedded).await;
    let app = watching(&state).start().await;
    let mut watcher = watch(&app).await;
    watcher.snapshot().await;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the server stops with a watcher connected");
    assert!(started.elapsed() < Duration::from_secs(5));
    loop {
        match watcher.try_next(Duration::from_secs(5)).await {
            Ok(Some(Event::Heartbeat(_))) => {}
            Ok(other) => panic!("expected the stream to end, got {other:?}"),
            Err(status) => {
                assert!(
                    matches!(status.code(), Code::Unavailable | Code::Cancelled),
                    "{status:?}"
                );
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_redis_stops_its_heartbeats_then_ends_the_stream() {
    let state = TestState::new(Backend::Postgres).await;
    let proxy = Proxy::start(host_port(&redis_url())).await;
    let app = watching(&state)
        .redis_url(Some(&proxy.url(&redis_url())))
        .start()
        .await;
    let mut watcher = watch(&app).await;
    watcher.snapshot().await;
    assert!(matches!(
        watcher.next(Duration::from_secs(3)).await,
        Event::Heartbeat(_)
    ));
    proxy.cut();
    let cut = std::time::Instant::now();
    let mut last_heartbeat = None;
    let status = loop {
        match watcher.try_next(Duration::from_secs(15)).await {
            Ok(Some(Event::Heartbeat(_))) => last_heartbeat = Some(cut.elapsed()),
            Ok(other) => panic!("expected the stream to end, got {other:?}"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // The mirror stops being current 2 s after its last heartbeat; then three missed beats.
    assert!(
        last_heartbeat.is_none_or(|at| at <= Duration::from_millis(2_600)),
        "a heartbeat {last_heartbeat:?} after the cut"
    );
    assert!(
        cut.elapsed() <= Duration::from_secs(8),
        "{:?}",
        cut.elapsed()
    );

    // Back: a new watcher gets a snapshot again.
    proxy.restore();
    let mut watcher = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(mut watcher) = open(&app, Some(&format!("Bearer {WATCH_TOKEN}"))).await
                && let Ok(Some(Event::Snapshot(_))) =
                    watcher.try_next(Duration::from_secs(12)).await
            {
                return watcher;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("watching works again once Redis is back");
    let _ = watcher.try_next(Duration::from_secs(2)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_store_that_lost_its_data_sends_watchers_the_global_cut_off() {
    let redis = PrivateRedis::start(&["--maxmemory-policy", "noeviction"]);
    let state = TestState::new(Backend::Postgres).await;
    let app = watching(&state).redis_url(Some(&redis.url())).start().await;
    let (_, _, token) = app.new_user().await;
    let issued_at = jwt_claims(&token)["iat"].as_i64().unwrap();
    let mut watcher = watch(&app).await;
    watcher.snapshot().await;
    assert!(redis.cli(&["flushall"]).contains("OK"));
    let seen = watcher
        .revocations_until(Duration::from_secs(10), |seen| {
            seen.iter().any(|r| r.kind() == Kind::GlobalCutoff)
        })
        .await;
    let cutoff = seen
        .iter()
        .find(|r| r.kind() == Kind::GlobalCutoff)
        .unwrap();
    assert!(cutoff.id.is_empty());
    assert!(cutoff.issued_before.unwrap().seconds > issued_at);
    assert!(cutoff.until.unwrap().seconds >= jwt_claims(&token)["exp"].as_i64().unwrap());
    // A watcher that comes later finds it in the snapshot.
    let (snapshot, _) = watch(&app).await.snapshot().await;
    assert!(snapshot.iter().any(|r| r.kind() == Kind::GlobalCutoff));
    app.stop().await;
}
