//! The `RevocationStore` contract, run on Postgres, SQLite, Redis, Redis Cluster and the cached-mode
//! mirror: a revoked jti is revoked through its `until` second (inclusive) and not after, revoking
//! again keeps the later `until`, an `until` already past revokes nothing, and purging expired
//! entries never touches a live one.
//!
//! Time: the Redis stores expire a revocation with Redis's own clock (SET … EXAT `until + 1`) and
//! ignore the `now` they are given, so every call passes the real current time, and a case that
//! needs an `until` to pass revokes until the current second and waits for the next one (at most
//! a little over a second), not for an hour-long expiry.

use std::time::Duration;

use authd::{
    clock::{Clock as _, SystemClock, UnixSeconds},
    domain::Jti,
    store::RevocationStore,
};

use super::backends::contract_suite;

contract_suite! {
    cases: [
        a_revoked_jti_is_revoked,
        a_jti_never_revoked_is_not_revoked,
        a_revocation_is_in_force_through_its_until_second,
        a_revocation_lapses_once_its_until_has_passed,
        revoking_again_with_a_later_until_extends_the_revocation,
        revoking_again_with_an_earlier_until_keeps_the_later_one,
        revoking_again_with_an_until_already_past_does_not_lift_the_revocation,
        a_revocation_whose_until_is_already_past_is_not_revoked,
        purge_expired_never_removes_a_live_revocation,
        a_placed_data_marker_stays_and_the_first_one_wins,
        ping_answers,
    ],
    fresh: {
        on_postgres => postgres,
        on_sqlite => sqlite,
        on_redis => redis,
        on_mirror => mirror,
    },
    cluster: on_redis_cluster,
}

const HOUR: i64 = 3600;
/// Past the second boundary, how long to leave Redis to notice (it reads the same wall clock).
const PAST_THE_SECOND: Duration = Duration::from_millis(20);

/// The real current time, in the seconds the stores take.
fn now() -> UnixSeconds {
    SystemClock.now()
}

async fn is_revoked(store: &dyn RevocationStore, jti: Jti) -> bool {
    store
        .is_revoked(jti, now())
        .await
        .unwrap_or_else(|error| panic!("is_revoked: {error:?}"))
}

async fn revoke(store: &dyn RevocationStore, jti: Jti, until: UnixSeconds) {
    store
        .revoke(jti, until, now())
        .await
        .unwrap_or_else(|error| panic!("revoke until {until}: {error:?}"));
}

/// The current second, once at least half of it remains, so that a case can finish inside it:
/// waits at most half a second.
async fn early_in_a_second() -> UnixSeconds {
    let into_the_second = SystemClock.now_millis().rem_euclid(1000);
    if into_the_second > 500 {
        let rest = u64::try_from(1000 - into_the_second).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(rest + 1)).await;
    }
    now()
}

/// Waits until the wall clock, Redis's too, has passed second `until` (which must be about now:
/// at most a little over a second).
async fn wait_past(until: UnixSeconds) {
    let next_second_ms = (until + 1) * 1000;
    let wait = next_second_ms - SystemClock.now_millis();
    assert!(wait <= 1000, "wait_past is for an `until` of about now");
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait.unsigned_abs()) + PAST_THE_SECOND).await;
    }
    assert!(now() > until);
}

/// Whether the store keeps expired entries until `purge_expired` deletes them, and reports how
/// many it deleted: the SQL stores. Redis expires revocation keys by itself (its purge only trims
/// the mirrors' index) and the mirror drops entries from memory, so for them the count is only
/// bounded by the expired entries.
fn keeps_expired_rows_until_purged(store: &dyn RevocationStore) -> bool {
    matches!(store.describe(), "postgres" | "sqlite")
}

async fn a_revoked_jti_is_revoked(store: &dyn RevocationStore) {
    let jti = Jti::generate();
    revoke(store, jti, now() + HOUR).await;
    assert!(is_revoked(store, jti).await);
    assert!(is_revoked(store, jti).await, "asking does not consume it");
}

async fn a_jti_never_revoked_is_not_revoked(store: &dyn RevocationStore) {
    assert!(
        !is_revoked(store, Jti::generate()).await,
        "in an empty store"
    );
    revoke(store, Jti::generate(), now() + HOUR).await;
    assert!(
        !is_revoked(store, Jti::generate()).await,
        "beside another revocation"
    );
}

async fn a_revocation_is_in_force_through_its_until_second(store: &dyn RevocationStore) {
    let second = early_in_a_second().await;
    let jti = Jti::generate();
    store.revoke(jti, second, second).await.unwrap();
    // Still `second` (half a second remained): `until` is inclusive.
    assert!(store.is_revoked(jti, second).await.unwrap());
}

async fn a_revocation_lapses_once_its_until_has_passed(store: &dyn RevocationStore) {
    let until = now();
    let jti = Jti::generate();
    revoke(store, jti, until).await;
    wait_past(until).await;
    assert!(
        !is_revoked(store, jti).await,
        "a token revoked until {until} is no longer revoked at {}",
        now()
    );
}

async fn revoking_again_with_a_later_until_extends_the_revocation(store: &dyn RevocationStore) {
    let until = now();
    let jti = Jti::generate();
    revoke(store, jti, until).await;
    revoke(store, jti, until + HOUR).await;
    wait_past(until).await;
    assert!(
        is_revoked(store, jti).await,
        "revoked until now, then until an hour later: still revoked after now"
    );
}

async fn revoking_again_with_an_earlier_until_keeps_the_later_one(store: &dyn RevocationStore) {
    let until = now();
    let jti = Jti::generate();
    revoke(store, jti, until + HOUR).await;
    revoke(store, jti, until).await;
    wait_past(until).await;
    assert!(
        is_revoked(store, jti).await,
        "revoked until an hour later, then until now: still revoked after now"
    );
}

async fn revoking_again_with_an_until_already_past_does_not_lift_the_revocation(
    store: &dyn RevocationStore,
) {
    let jti = Jti::generate();
    revoke(store, jti, now() + HOUR).await;
    revoke(store, jti, now() - HOUR).await;
    assert!(is_revoked(store, jti).await);
}

async fn a_revocation_whose_until_is_already_past_is_not_revoked(store: &dyn RevocationStore) {
    let long_ago = Jti::generate();
    revoke(store, long_ago, now() - HOUR).await;
    let a_second_ago = Jti::generate();
    revoke(store, a_second_ago, now() - 1).await;
    assert!(!is_revoked(store, long_ago).await);
    assert!(!is_revoked(store, a_second_ago).await);
}

async fn purge_expired_never_removes_a_live_revocation(store: &dyn RevocationStore) {
    // Half a second to spare: `until_now` must still be live when it is checked.
    let now = early_in_a_second().await;
    let live = Jti::generate();
    store.revoke(live, now + HOUR, now).await.unwrap();
    // Revoked through `now`, inclusive: live at a purge at `now`.
    let until_now = Jti::generate();
    store.revoke(until_now, now, now).await.unwrap();
    let expired = [Jti::generate(), Jti::generate()];
    for jti in expired {
        revoke(store, jti, now - 10).await;
    }
    let purged = store.purge_expired(now).await.expect("purge_expired");
    if keeps_expired_rows_until_purged(store) {
        assert_eq!(purged, 2, "the SQL stores delete exactly the expired rows");
    } else {
        assert!(purged <= 2, "purged {purged} of 2 expired entries");
    }
    assert!(is_revoked(store, live).await, "a live revocation survives");
    assert!(
        store.is_revoked(until_now, now).await.unwrap(),
        "a revocation through the purge's own second survives"
    );
    for jti in expired {
        assert!(!is_revoked(store, jti).await);
    }
    assert_eq!(
        store.purge_expired(now).await.unwrap(),
        0,
        "a second purge finds nothing"
    );
    assert!(is_revoked(store, live).await);
}

async fn ping_answers(store: &dyn RevocationStore) {
    store.ping().await.expect("ping");
}

/// Redis holds the marker it is given (the first one placed wins); a SQL store, which keeps its
/// revocations in the user database, answers one fixed marker: it never loses them on its own.
async fn a_placed_data_marker_stays_and_the_first_one_wins(store: &dyn RevocationStore) {
    let placed = store.place_data_marker("marker-one").await.unwrap();
    let again = store.place_data_marker("marker-two").await.unwrap();
    assert_eq!(again, placed, "the first marker placed stays");
    assert_eq!(store.data_marker().await.unwrap(), Some(placed));
}
