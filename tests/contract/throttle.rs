//! The `ThrottleStore` contract, run on Postgres, SQLite, Redis and Redis Cluster: a counter is
//! stored and loaded back exactly; `replace` is a compare-and-set that swaps only from the counter
//! that is there (every field compared), and from `None` only where there is none or it has
//! expired at `now`; of concurrent replaces from one state exactly one succeeds; a counter is
//! gone once `now` reaches its `expires_at`; `clear` forgets; purging deletes only expired
//! counters (SQL) or nothing (Redis expires them itself); and keys do not touch each other.
//!
//! Time: Redis expires a counter with its own clock (PEXPIREAT `expires_at`), so every counter
//! written expires after the real current time, and calls pass the real current time, except
//! where a case asks about a later `now` (a counter expired at `now` while Redis still holds it) or
//! an earlier one (whether Redis really deleted the key). Expiry on the real clock is tested with
//! counters that live a few tens of milliseconds, and bounded waits.

use std::time::Duration;

use authd::{
    clock::{Clock as _, SystemClock, UnixMillis},
    store::{Counter, ThrottleStore},
};

use super::backends::{contract_suite, join_all};

contract_suite! {
    cases: [
        an_absent_key_loads_as_none,
        replace_from_none_creates_a_counter_that_loads_exactly_as_stored,
        replace_expecting_a_counter_that_differs_in_any_field_changes_nothing,
        replace_expecting_a_counter_on_an_absent_key_changes_nothing,
        replace_expecting_the_stored_counter_swaps_it,
        replace_from_none_over_a_live_counter_fails_and_keeps_it,
        replace_from_none_over_a_counter_expired_at_now_succeeds,
        replace_expecting_a_counter_that_has_expired_at_now_fails,
        a_counter_loads_as_none_once_now_reaches_its_expires_at,
        a_counter_is_gone_once_its_expires_at_passes_on_the_real_clock,
        of_concurrent_replaces_from_one_counter_exactly_one_succeeds,
        of_concurrent_replaces_from_none_on_an_absent_key_exactly_one_succeeds,
        of_concurrent_replaces_from_none_over_an_expired_counter_exactly_one_succeeds,
        clear_forgets_a_counter_and_only_that_one,
        clearing_an_absent_key_is_fine,
        purge_expired_deletes_expired_counters_and_keeps_live_ones,
        keys_are_independent,
    ],
    fresh: { on_postgres => postgres, on_sqlite => sqlite, on_redis => redis },
    cluster: on_redis_cluster,
}

/// Keys as the service makes them.
const ACCOUNT: &str = "account:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const SOURCE_V4: &str = "source:192.0.2.1";
const SOURCE_V6: &str = "source:2001:db8::1";
/// A lifetime no case outlives, in milliseconds.
const HOUR: UnixMillis = 3_600_000;
/// A lifetime that has passed by the time a case has waited for it, in milliseconds.
const SHORT: UnixMillis = 30;
/// Past an expiry, how long to leave Redis (on the same wall clock) to see it.
const PAST_EXPIRY: Duration = Duration::from_millis(20);
/// How many replaces race in the concurrency cases.
const RACERS: u32 = 16;

/// The real current time, in the milliseconds the stores take.
fn now() -> UnixMillis {
    SystemClock.now_millis()
}

fn counter(count: u32, until: UnixMillis, expires_at: UnixMillis) -> Counter {
    Counter {
        count,
        until,
        expires_at,
    }
}

async fn load(store: &dyn ThrottleStore, key: &str, now: UnixMillis) -> Option<Counter> {
    store
        .load(key, now)
        .await
        .unwrap_or_else(|error| panic!("load({key:?}, {now}): {error:?}"))
}

async fn replace(
    store: &dyn ThrottleStore,
    key: &str,
    expected: Option<Counter>,
    new: Counter,
    now: UnixMillis,
) -> bool {
    store
        .replace(key, expected, new, now)
        .await
        .unwrap_or_else(|error| panic!("replace({key:?}, {expected:?}, {new:?}, {now}): {error:?}"))
}

/// Writes `new` under an absent `key`, which must succeed.
async fn create(store: &dyn ThrottleStore, key: &str, new: Counter) {
    assert!(
        replace(store, key, None, new, now()).await,
        "creating {new:?} under the absent {key:?}"
    );
}

async fn clear(store: &dyn ThrottleStore, key: &str) {
    store
        .clear(key)
        .await
        .unwrap_or_else(|error| panic!("clear({key:?}): {error:?}"));
}

async fn purge_expired(store: &dyn ThrottleStore, now: UnixMillis) -> u64 {
    store
        .purge_expired(now)
        .await
        .unwrap_or_else(|error| panic!("purge_expired({now}): {error:?}"))
}

/// Sleeps until the wall clock, Redis's too, is past `at` (a second away at most).
async fn sleep_past(at: UnixMillis) {
    let wait = at - now();
    assert!(wait <= 1000, "sleep_past is for short waits");
    if wait >= 0 {
        tokio::time::sleep(Duration::from_millis(wait.unsigned_abs()) + PAST_EXPIRY).await;
    }
    assert!(now() > at);
}

/// Whether the store keeps expired counters until `purge_expired` deletes them and reports how
/// many it deleted: the SQL stores. Redis expires counters by itself, and its purge is a no-op.
fn keeps_expired_rows_until_purged(store: &dyn ThrottleStore) -> bool {
    matches!(store.describe(), "postgres" | "sqlite")
}

async fn an_absent_key_loads_as_none(store: &dyn ThrottleStore) {
    assert_eq!(load(store, ACCOUNT, now()).await, None, "in an empty store");
    let t = now();
    create(store, SOURCE_V4, counter(1, t, t + HOUR)).await;
    assert_eq!(
        load(store, ACCOUNT, now()).await,
        None,
        "beside another counter"
    );
}

async fn replace_from_none_creates_a_counter_that_loads_exactly_as_stored(
    store: &dyn ThrottleStore,
) {
    let t = now();
    // The store attaches no meaning to `count` or `until`: any values come back as written,
    // including an `until` already past or far beyond the expiry, and the largest count.
    let written = [
        (ACCOUNT, counter(1, t + 250, t + HOUR)),
        (SOURCE_V4, counter(u32::MAX, 0, t + HOUR + 1)),
        (SOURCE_V6, counter(0, t + 10 * HOUR, t + 2 * HOUR - 7)),
    ];
    for (key, new) in written {
        create(store, key, new).await;
    }
    for (key, stored) in written {
        assert_eq!(
            load(store, key, now()).await,
            Some(stored),
            "{key:?} loads as stored"
        );
        assert_eq!(
            load(store, key, now()).await,
            Some(stored),
            "{key:?}: loading changes nothing"
        );
    }
}

async fn replace_expecting_a_counter_that_differs_in_any_field_changes_nothing(
    store: &dyn ThrottleStore,
) {
    let t = now();
    let stored = counter(3, t + 1000, t + HOUR);
    create(store, ACCOUNT, stored).await;
    let wrong = [
        Counter { count: 2, ..stored },
        Counter { count: 4, ..stored },
        Counter {
            until: stored.until - 1,
            ..stored
        },
        Counter {
            until: stored.until + 1,
            ..stored
        },
        Counter {
            expires_at: stored.expires_at - 1,
            ..stored
        },
        Counter {
            expires_at: stored.expires_at + 1,
            ..stored
        },
        counter(0, 0, t + HOUR),
    ];
    let new = counter(4, t + 2000, t + HOUR);
    for expected in wrong {
        assert!(
            !replace(store, ACCOUNT, Some(expected), new, now()).await,
            "expecting {expected:?} where {stored:?} is stored"
        );
        assert_eq!(
            load(store, ACCOUNT, now()).await,
            Some(stored),
            "a refused replace (expecting {expected:?}) changes nothing"
        );
    }
}

async fn replace_expecting_a_counter_on_an_absent_key_changes_nothing(store: &dyn ThrottleStore) {
    let t = now();
    let imagined = counter(1, t, t + HOUR);
    assert!(
        !replace(
            store,
            ACCOUNT,
            Some(imagined),
            counter(2, t, t + HOUR),
            now()
        )
        .await,
        "nothing is stored, so the counter there is not {imagined:?}"
    );
    assert_eq!(load(store, ACCOUNT, now()).await, None, "still absent");
}

async fn replace_expecting_the_stored_counter_swaps_it(store: &dyn ThrottleStore) {
    let t = now();
    let first = counter(1, t + 100, t + HOUR);
    let second = counter(2, t + 400, t + HOUR + 500);
    // A swap may also shorten the expiry and move `until` back.
    let third = counter(3, t + 50, t + HOUR - 500);
    create(store, ACCOUNT, first).await;
    assert!(
        replace(store, ACCOUNT, Some(first), second, now()).await,
        "from the stored counter"
    );
    assert_eq!(load(store, ACCOUNT, now()).await, Some(second), "swapped");
    assert!(
        !replace(store, ACCOUNT, Some(first), third, now()).await,
        "from the counter that was there before: stale"
    );
    assert_eq!(load(store, ACCOUNT, now()).await, Some(second), "kept");
    assert!(
        replace(store, ACCOUNT, Some(second), third, now()).await,
        "from the new stored counter"
    );
    assert_eq!(load(store, ACCOUNT, now()).await, Some(third), "swapped");
    assert!(
        replace(store, ACCOUNT, Some(third), third, now()).await,
        "replacing a counter with itself succeeds"
    );
    assert_eq!(load(store, ACCOUNT, now()).await, Some(third));
}

async fn replace_from_none_over_a_live_counter_fails_and_keeps_it(store: &dyn ThrottleStore) {
    let t = now();
    let stored = counter(5, t + 1000, t + HOUR);
    create(store, ACCOUNT, stored).await;
    // Live through the millisecond before its expiry.
    for at in [now(), stored.expires_at - 1] {
        assert!(
            !replace(store, ACCOUNT, None, counter(1, t, t + 2 * HOUR), at).await,
            "from none at {at}, over {stored:?}"
        );
        assert_eq!(load(store, ACCOUNT, now()).await, Some(stored), "kept");
    }
}

async fn replace_from_none_over_a_counter_expired_at_now_succeeds(store: &dyn ThrottleStore) {
    // Redis still holds both counters: it is the `now` passed that has reached their expiry.
    let t = now();
    let old = counter(7, t + 1000, t + HOUR);
    let new = counter(1, t + 2000, t + 2 * HOUR);
    for (key, at) in [
        (ACCOUNT, old.expires_at),
        (SOURCE_V4, old.expires_at + 1),
        (SOURCE_V6, old.expires_at + HOUR / 2),
    ] {
        create(store, key, old).await;
        assert!(
            replace(store, key, None, new, at).await,
            "{key:?}: from none at {at}, over {old:?}"
        );
        assert_eq!(
            load(store, key, now()).await,
            Some(new),
            "{key:?}: replaced"
        );
        assert_eq!(
            load(store, key, at).await,
            Some(new),
            "{key:?}: live at {at}"
        );
    }
}

async fn replace_expecting_a_counter_that_has_expired_at_now_fails(store: &dyn ThrottleStore) {
    let t = now();
    let old = counter(7, t + 1000, t + HOUR);
    let new = counter(8, t + 2000, t + 2 * HOUR);
    create(store, ACCOUNT, old).await;
    let at = old.expires_at;
    assert!(
        !replace(store, ACCOUNT, Some(old), new, at).await,
        "at {at}, {old:?} has expired: what is there is none"
    );
    assert_eq!(load(store, ACCOUNT, now()).await, Some(old), "unchanged");
    assert!(
        replace(store, ACCOUNT, None, new, at).await,
        "from none at {at}, it succeeds"
    );
    assert_eq!(load(store, ACCOUNT, now()).await, Some(new));
}

async fn a_counter_loads_as_none_once_now_reaches_its_expires_at(store: &dyn ThrottleStore) {
    let t = now();
    let stored = counter(2, t + 500, t + HOUR);
    create(store, ACCOUNT, stored).await;
    let expires_at = stored.expires_at;
    assert_eq!(
        load(store, ACCOUNT, expires_at - 1).await,
        Some(stored),
        "live the millisecond before"
    );
    for at in [expires_at, expires_at + 1, expires_at + HOUR] {
        assert_eq!(load(store, ACCOUNT, at).await, None, "expired at {at}");
    }
    assert_eq!(
        load(store, ACCOUNT, now()).await,
        Some(stored),
        "a load at a later `now` deletes nothing"
    );
}

async fn a_counter_is_gone_once_its_expires_at_passes_on_the_real_clock(store: &dyn ThrottleStore) {
    let t = now();
    let short = counter(1, t, t + SHORT);
    create(store, ACCOUNT, short).await;
    create(store, SOURCE_V4, counter(1, t, t + HOUR)).await;
    sleep_past(short.expires_at).await;
    assert_eq!(load(store, ACCOUNT, now()).await, None, "expired");
    // Asked about a time when it was live: Redis has deleted the key itself, while the SQL stores
    // keep the row until a purge.
    let before = short.expires_at - 1;
    let kept = load(store, ACCOUNT, before).await;
    if keeps_expired_rows_until_purged(store) {
        assert_eq!(
            kept,
            Some(short),
            "the SQL stores keep the row until a purge"
        );
    } else {
        assert_eq!(kept, None, "Redis deleted the key at its expires_at");
    }
    let new = counter(1, now(), now() + HOUR);
    assert!(
        replace(store, ACCOUNT, None, new, now()).await,
        "from none over the expired counter"
    );
    assert_eq!(load(store, ACCOUNT, now()).await, Some(new));
    assert!(
        load(store, SOURCE_V4, now()).await.is_some(),
        "a live counter beside it is kept"
    );
}

/// Races `RACERS` replaces of `key` from `expected` at `at`, each to a counter of its own
/// (`new(i)`), and checks that exactly one succeeded and that its counter is the one stored.
async fn race(
    store: &dyn ThrottleStore,
    key: &str,
    expected: Option<Counter>,
    at: UnixMillis,
    new: impl Fn(u32) -> Counter,
) {
    let proposals: Vec<Counter> = (0..RACERS).map(new).collect();
    let results = join_all(
        proposals
            .iter()
            .map(|proposal| store.replace(key, expected, *proposal, at))
            .collect(),
    )
    .await;
    let mut winners = Vec::new();
    for (proposal, result) in proposals.iter().zip(results) {
        match result {
            Ok(true) => winners.push(*proposal),
            Ok(false) => {}
            Err(error) => panic!("a racing replace failed: {error:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {RACERS} concurrent replaces from {expected:?} succeeds: {winners:?}"
    );
    assert_eq!(
        load(store, key, now()).await,
        Some(winners[0]),
        "the stored counter is the one whose replace succeeded"
    );
}

async fn of_concurrent_replaces_from_one_counter_exactly_one_succeeds(store: &dyn ThrottleStore) {
    let t = now();
    let current = counter(4, t + 100, t + HOUR);
    create(store, ACCOUNT, current).await;
    race(store, ACCOUNT, Some(current), now(), |i| {
        counter(5, t + 1000 + i64::from(i), t + HOUR)
    })
    .await;
}

async fn of_concurrent_replaces_from_none_on_an_absent_key_exactly_one_succeeds(
    store: &dyn ThrottleStore,
) {
    let t = now();
    race(store, ACCOUNT, None, now(), |i| {
        counter(1, t + i64::from(i), t + HOUR)
    })
    .await;
}

async fn of_concurrent_replaces_from_none_over_an_expired_counter_exactly_one_succeeds(
    store: &dyn ThrottleStore,
) {
    let t = now();
    let old = counter(9, t + 100, t + HOUR);
    create(store, ACCOUNT, old).await;
    // At `old.expires_at` the counter has expired (Redis still holds it).
    race(store, ACCOUNT, None, old.expires_at, |i| {
        counter(1, t + i64::from(i), t + 2 * HOUR)
    })
    .await;
}

async fn clear_forgets_a_counter_and_only_that_one(store: &dyn ThrottleStore) {
    let t = now();
    let cleared = counter(3, t + 100, t + HOUR);
    let kept = counter(2, t + 200, t + HOUR);
    create(store, ACCOUNT, cleared).await;
    create(store, SOURCE_V4, kept).await;
    clear(store, ACCOUNT).await;
    assert_eq!(load(store, ACCOUNT, now()).await, None, "forgotten");
    assert_eq!(load(store, SOURCE_V4, now()).await, Some(kept), "kept");
    assert!(
        !replace(
            store,
            ACCOUNT,
            Some(cleared),
            counter(4, t, t + HOUR),
            now()
        )
        .await,
        "the cleared counter is no longer there to swap from"
    );
    let new = counter(1, t + 300, t + HOUR);
    assert!(
        replace(store, ACCOUNT, None, new, now()).await,
        "a cleared key is created from none again"
    );
    assert_eq!(load(store, ACCOUNT, now()).await, Some(new));
}

async fn clearing_an_absent_key_is_fine(store: &dyn ThrottleStore) {
    clear(store, ACCOUNT).await;
    let t = now();
    create(store, SOURCE_V4, counter(1, t, t + HOUR)).await;
    clear(store, SOURCE_V4).await;
    clear(store, SOURCE_V4).await;
    assert_eq!(load(store, SOURCE_V4, now()).await, None);
    create(store, SOURCE_V4, counter(2, t, t + HOUR)).await;
}

async fn purge_expired_deletes_expired_counters_and_keeps_live_ones(store: &dyn ThrottleStore) {
    let t = now();
    let live = [
        (ACCOUNT, counter(3, t + 100, t + HOUR)),
        (SOURCE_V4, counter(1, 0, t + 2 * HOUR)),
    ];
    let expiring = [
        (SOURCE_V6, counter(2, t, t + SHORT / 2)),
        ("source:198.51.100.9", counter(4, t, t + SHORT)),
    ];
    for (key, new) in live.into_iter().chain(expiring) {
        create(store, key, new).await;
    }
    let last_expiry = t + SHORT;
    sleep_past(last_expiry).await;
    // A purge at the very millisecond the later one expires: it has expired, and goes too.
    let purged = purge_expired(store, last_expiry).await;
    if keeps_expired_rows_until_purged(store) {
        assert_eq!(purged, 2, "the SQL stores delete exactly the expired rows");
    } else {
        assert_eq!(
            purged, 0,
            "Redis expires counters itself: its purge is a no-op"
        );
    }
    for (key, stored) in live {
        assert_eq!(
            load(store, key, now()).await,
            Some(stored),
            "{key:?}: a live counter survives the purge"
        );
    }
    for (key, gone) in expiring {
        assert_eq!(
            load(store, key, gone.expires_at - 1).await,
            None,
            "{key:?}: deleted, even when asked about a time it was live"
        );
    }
    assert_eq!(
        purge_expired(store, now()).await,
        0,
        "a second purge finds nothing"
    );
    for (key, stored) in live {
        assert_eq!(load(store, key, now()).await, Some(stored));
    }
    let (key, stored) = live[0];
    let next = Counter {
        count: stored.count + 1,
        ..stored
    };
    assert!(
        replace(store, key, Some(stored), next, now()).await,
        "a purged store still swaps"
    );
}

async fn keys_are_independent(store: &dyn ThrottleStore) {
    let t = now();
    let same = counter(1, t + 100, t + HOUR);
    // Keys that share a prefix, or differ only in case, are different keys.
    let keys = [
        ACCOUNT,
        SOURCE_V4,
        "source:192.0.2.10",
        SOURCE_V6,
        "source:2001:DB8::1",
    ];
    for key in keys {
        create(store, key, same).await;
    }
    let swapped = counter(2, t + 200, t + HOUR);
    assert!(replace(store, SOURCE_V4, Some(same), swapped, now()).await);
    clear(store, SOURCE_V6).await;
    for key in keys {
        let expected = match key {
            SOURCE_V4 => Some(swapped),
            SOURCE_V6 => None,
            _ => Some(same),
        };
        assert_eq!(load(store, key, now()).await, expected, "{key:?}");
    }
}
