//! The `ThrottleStore` contract, run on Postgres, SQLite, Redis and Redis Cluster: a key counts its
//! failures up from zero, `failures` answers in key order, `clear` forgets, a fixed window ends a
//! memory after its first failure and a sliding one a memory after its latest, an expired count
//! starts over, and purging keeps live counts.
//!
//! Time: Redis expires a count with its own clock (PEXPIRE) and reports a window's end as its TTL
//! added to the `now` it was given, so every call passes the real current time, expiry is tested
//! with memories of milliseconds and bounded waits of milliseconds, and Redis's window ends are
//! compared with a little slack (`SLACK_MS`). The SQL stores compute everything from `now`, exactly.

use std::time::Duration;

use authd::{
    clock::{Clock as _, SystemClock, UnixMillis},
    store::{FailureCount, ThrottleStore},
};

use super::backends::contract_suite;

contract_suite! {
    cases: [
        an_absent_key_has_no_failures,
        each_failure_counts_up_and_returns_the_count,
        failures_returns_the_counts_in_key_order,
        clear_forgets_a_key_and_only_that_key,
        a_fixed_window_keeps_the_end_set_by_its_first_failure,
        a_sliding_window_ends_a_memory_after_the_latest_failure,
        an_expired_count_starts_over,
        purge_expired_keeps_live_counts,
    ],
    fresh: { on_postgres => postgres, on_sqlite => sqlite, on_redis => redis },
    cluster: on_redis_cluster,
}

/// Keys as the service makes them.
const ACCOUNT: &str = "account:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const SOURCE_V4: &str = "source:192.0.2.1";
const SOURCE_V6: &str = "source:2001:db8::1";
/// A memory no case outlives.
const LONG: Duration = Duration::from_secs(60);
/// A memory that has passed by the next call but one.
const TINY: Duration = Duration::from_millis(5);
/// The window of the fixed/sliding cases, and the step between their two failures: a fixed window
/// ends `WINDOW` after the first, a sliding one `STEP` later.
const WINDOW: Duration = Duration::from_millis(400);
const STEP: Duration = Duration::from_millis(200);
/// How far Redis's idea of a window's end may be from the exact one: its TTL is measured on its
/// clock, a round trip away from the `now` it is added to.
const SLACK_MS: i64 = 50;
/// Past an expiry, how long to leave for it to be seen.
const PAST_EXPIRY: Duration = Duration::from_millis(20);

/// The real current time, in the milliseconds the stores take.
fn now() -> UnixMillis {
    SystemClock.now_millis()
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap()
}

fn assert_near(actual: UnixMillis, expected: UnixMillis, what: &str) {
    assert!(
        (actual - expected).abs() <= SLACK_MS,
        "{what}: {actual} is {} ms from {expected}",
        actual - expected
    );
}

async fn add(
    store: &dyn ThrottleStore,
    key: &str,
    memory: Duration,
    sliding: bool,
) -> (UnixMillis, FailureCount) {
    let at = now();
    let count = store
        .add_failure(key, memory, sliding, at)
        .await
        .unwrap_or_else(|error| panic!("add_failure({key:?}): {error:?}"));
    (at, count)
}

async fn failures(store: &dyn ThrottleStore, keys: &[&str]) -> Vec<FailureCount> {
    let keys: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
    let counts = store
        .failures(&keys, now())
        .await
        .unwrap_or_else(|error| panic!("failures({keys:?}): {error:?}"));
    assert_eq!(counts.len(), keys.len(), "one count per key");
    counts
}

async fn failures_of(store: &dyn ThrottleStore, key: &str) -> FailureCount {
    failures(store, &[key]).await[0]
}

/// Sleeps until the wall clock is past `at` (a few hundred milliseconds away at most).
async fn sleep_past(at: UnixMillis) {
    let wait = at - now();
    assert!(wait <= ms(WINDOW), "sleep_past is for short waits");
    if wait >= 0 {
        tokio::time::sleep(Duration::from_millis(wait.unsigned_abs()) + PAST_EXPIRY).await;
    }
}

/// Whether the store keeps expired counts until `purge_expired` deletes them and reports how many
/// it deleted: the SQL stores. Redis expires counts by itself, and its purge is a no-op.
fn keeps_expired_rows_until_purged(store: &dyn ThrottleStore) -> bool {
    matches!(store.describe(), "postgres" | "sqlite")
}

async fn an_absent_key_has_no_failures(store: &dyn ThrottleStore) {
    // The contract promises a zero count; what else an absent key reports is unspecified.
    assert_eq!(failures_of(store, ACCOUNT).await.failures, 0, "empty store");
    add(store, SOURCE_V4, LONG, false).await;
    assert_eq!(
        failures_of(store, ACCOUNT).await.failures,
        0,
        "beside a count"
    );
    assert!(failures(store, &[]).await.is_empty(), "no keys, no counts");
}

async fn each_failure_counts_up_and_returns_the_count(store: &dyn ThrottleStore) {
    for sliding in [false, true] {
        let key = if sliding { SOURCE_V6 } else { SOURCE_V4 };
        for expected in 1..=3 {
            let (at, count) = add(store, key, LONG, sliding).await;
            assert_eq!(
                count.failures, expected,
                "add_failure returns the new count"
            );
            assert_eq!(count.last_failure, at, "the latest failure is now");
            let seen = failures_of(store, key).await;
            assert_eq!(seen.failures, expected, "failures reads the count back");
            assert_eq!(seen.last_failure, at);
            assert_near(seen.window_ends, count.window_ends, "the window read back");
        }
    }
}

async fn failures_returns_the_counts_in_key_order(store: &dyn ThrottleStore) {
    let mut latest = Vec::new();
    for (key, times) in [(ACCOUNT, 1), (SOURCE_V4, 2), (SOURCE_V6, 3)] {
        for _ in 0..times {
            let (at, _) = add(store, key, LONG, false).await;
            latest.push((key, at));
        }
    }
    let last_failure = |key| latest.iter().rev().find(|(k, _)| *k == key).unwrap().1;
    let counts = failures(
        store,
        &[
            SOURCE_V6,
            "source:198.51.100.9",
            ACCOUNT,
            SOURCE_V4,
            ACCOUNT,
        ],
    )
    .await;
    let seen: Vec<u32> = counts.iter().map(|count| count.failures).collect();
    assert_eq!(seen, [3, 0, 1, 2, 1]);
    assert_eq!(counts[0].last_failure, last_failure(SOURCE_V6));
    assert_eq!(counts[2].last_failure, last_failure(ACCOUNT));
    assert_eq!(counts[3].last_failure, last_failure(SOURCE_V4));
}

async fn clear_forgets_a_key_and_only_that_key(store: &dyn ThrottleStore) {
    add(store, ACCOUNT, LONG, false).await;
    add(store, ACCOUNT, LONG, false).await;
    add(store, SOURCE_V4, LONG, false).await;
    store.clear(ACCOUNT).await.expect("clear");
    assert_eq!(failures_of(store, ACCOUNT).await.failures, 0, "forgotten");
    assert_eq!(failures_of(store, SOURCE_V4).await.failures, 1, "kept");
    let (_, count) = add(store, ACCOUNT, LONG, false).await;
    assert_eq!(count.failures, 1, "a cleared key counts from one again");
    store
        .clear(SOURCE_V6)
        .await
        .expect("clearing an absent key is fine");
}

async fn a_fixed_window_keeps_the_end_set_by_its_first_failure(store: &dyn ThrottleStore) {
    let (first_at, first) = add(store, ACCOUNT, WINDOW, false).await;
    assert_near(
        first.window_ends,
        first_at + ms(WINDOW),
        "a memory after the first failure",
    );
    tokio::time::sleep(STEP).await;
    let (second_at, second) = add(store, ACCOUNT, WINDOW, false).await;
    assert!(
        second_at < first.window_ends - SLACK_MS,
        "the machine stalled: the second failure came after the window"
    );
    assert_eq!(second.failures, 2);
    assert_eq!(second.last_failure, second_at);
    assert_near(
        second.window_ends,
        first.window_ends,
        "a later failure does not move a fixed window's end",
    );
    sleep_past(first.window_ends).await;
    assert_eq!(
        failures_of(store, ACCOUNT).await.failures,
        0,
        "the count is forgotten a memory after its first failure"
    );
}

async fn a_sliding_window_ends_a_memory_after_the_latest_failure(store: &dyn ThrottleStore) {
    let (first_at, first) = add(store, ACCOUNT, WINDOW, true).await;
    assert_near(
        first.window_ends,
        first_at + ms(WINDOW),
        "a memory after the first failure",
    );
    tokio::time::sleep(STEP).await;
    let (second_at, second) = add(store, ACCOUNT, WINDOW, true).await;
    assert!(
        second_at < first.window_ends - SLACK_MS,
        "the machine stalled: the second failure came after the window"
    );
    assert_eq!(second.failures, 2);
    assert_near(
        second.window_ends,
        second_at + ms(WINDOW),
        "a sliding window ends a memory after the latest failure",
    );
    // Past where a fixed window would have ended, well before the sliding one does.
    sleep_past(first.window_ends).await;
    assert!(now() < second.window_ends - SLACK_MS, "the machine stalled");
    let seen = failures_of(store, ACCOUNT).await;
    assert_eq!(seen.failures, 2, "still counted, from the latest failure");
    assert_near(seen.window_ends, second.window_ends, "the window read back");
}

async fn an_expired_count_starts_over(store: &dyn ThrottleStore) {
    for sliding in [false, true] {
        add(store, ACCOUNT, TINY, sliding).await;
        let (_, count) = add(store, ACCOUNT, TINY, sliding).await;
        assert!(count.failures >= 1);
        sleep_past(count.window_ends).await;
        assert_eq!(
            failures_of(store, ACCOUNT).await.failures,
            0,
            "expired (sliding: {sliding})"
        );
        let (at, count) = add(store, ACCOUNT, LONG, sliding).await;
        assert_eq!(
            count.failures, 1,
            "an expired count starts over (sliding: {sliding})"
        );
        assert_near(count.window_ends, at + ms(LONG), "with a new window");
        store.clear(ACCOUNT).await.unwrap();
    }
}

async fn purge_expired_keeps_live_counts(store: &dyn ThrottleStore) {
    add(store, ACCOUNT, LONG, false).await;
    add(store, SOURCE_V4, LONG, true).await;
    let (_, expiring) = add(store, SOURCE_V6, TINY, false).await;
    sleep_past(expiring.window_ends).await;
    let purged = store.purge_expired(now()).await.expect("purge_expired");
    if keeps_expired_rows_until_purged(store) {
        assert_eq!(purged, 1, "the SQL stores delete exactly the expired row");
    } else {
        // Redis forgets expired counts by itself: nothing is left to purge.
        assert!(purged <= 1, "purged {purged} of 1 expired count");
    }
    let counts: Vec<u32> = failures(store, &[ACCOUNT, SOURCE_V4, SOURCE_V6])
        .await
        .iter()
        .map(|count| count.failures)
        .collect();
    assert_eq!(counts, [1, 1, 0], "live counts survive the purge");
    assert_eq!(
        store.purge_expired(now()).await.unwrap(),
        0,
        "a second purge finds nothing"
    );
    assert_eq!(
        add(store, ACCOUNT, LONG, false).await.1.failures,
        2,
        "a purged store still counts on"
    );
}
