//! The `RevocationStore` contract, run on Postgres, SQLite, Redis, Redis Cluster, the cached-mode
//! mirror and the embedded default's resident set: a revoked jti is revoked through its `until`
//! second (inclusive) and not after, revoking again keeps the later `until`, an `until` already
//! past revokes nothing, and purging expired entries never touches a live one; a session
//! revocation refuses every token of that session and no other; a cut-off refuses its user's
//! tokens issued before its second and nothing else, and a second cut-off never lowers it; several
//! kinds go in one call; tokens without a session (issued before sessions) are still found. Then
//! what only some implementations promise: the resident set survives a reload and answers from
//! memory, mirrors learn each other's revocations, and a user's Redis keys share a cluster slot.
//!
//! Time: the Redis stores expire a revocation with Redis's own clock (SET … EXAT `until + 1`) and
//! ignore the `now` they are given, so every call passes the real current time, and a case that
//! needs an `until` to pass revokes until the current second and waits for the next one (at most
//! a little over a second), not for an hour-long expiry.

use std::time::Duration;

use authd::{
    clock::{Clock as _, SystemClock, UnixSeconds},
    domain::{Jti, SessionId, UserId},
    store::{Revocation, RevocationStore, Revoked, TokenRef},
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
        a_revoked_jti_of_a_legacy_token_without_a_session_is_revoked,
        a_session_revocation_refuses_the_tokens_of_that_session_only,
        a_cutoff_refuses_the_users_tokens_issued_before_it_and_no_others,
        a_cutoff_refuses_legacy_tokens_without_a_session_too,
        a_second_earlier_cutoff_never_lowers_the_first,
        a_second_later_cutoff_raises_the_first,
        several_kinds_revoked_in_one_call_are_all_in_force,
        a_session_revocation_lapses_once_its_until_has_passed,
        a_cutoff_lapses_once_its_until_has_passed,
        a_session_revocation_or_cutoff_revoked_again_with_an_earlier_until_keeps_the_later_one,
        a_session_revocation_or_cutoff_whose_until_is_already_past_refuses_nothing,
        purge_expired_keeps_live_session_revocations_and_cutoffs,
    ],
    fresh: {
        on_postgres => postgres,
        on_sqlite => sqlite,
        on_redis => redis,
        on_mirror => mirror,
        on_resident => resident,
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

/// An access token as Verify asks about it: of a new user, in a new session, issued now.
fn token() -> TokenRef {
    TokenRef {
        user: UserId::generate(),
        jti: Jti::generate(),
        session: Some(SessionId::generate()),
        issued_at: now(),
    }
}

/// Another token of the same user, in the same session, issued at the same second.
fn sibling(of: &TokenRef) -> TokenRef {
    TokenRef {
        jti: Jti::generate(),
        ..*of
    }
}

/// A token of the same user and session issued at `issued_at`.
fn issued_at(of: &TokenRef, issued_at: UnixSeconds) -> TokenRef {
    TokenRef {
        issued_at,
        ..sibling(of)
    }
}

fn revoking_token(token: &TokenRef, until: UnixSeconds) -> Revocation {
    Revocation {
        user: token.user,
        what: Revoked::Token(token.jti),
        until,
    }
}

/// The revocation of `token`'s session (which it must have).
fn revoking_session(token: &TokenRef, until: UnixSeconds) -> Revocation {
    Revocation {
        user: token.user,
        what: Revoked::Session(token.session.expect("a token with a session")),
        until,
    }
}

/// A cut-off: `user`'s tokens issued before second `before` are refused.
fn cutoff(user: UserId, before: UnixSeconds, until: UnixSeconds) -> Revocation {
    Revocation {
        user,
        what: Revoked::IssuedBefore(user, before),
        until,
    }
}

async fn is_revoked(store: &dyn RevocationStore, token: &TokenRef) -> bool {
    store
        .is_revoked(token, now())
        .await
        .unwrap_or_else(|error| panic!("is_revoked({token:?}): {error:?}"))
}

async fn revoke_all(store: &dyn RevocationStore, revocations: &[Revocation]) {
    store
        .revoke(revocations, now())
        .await
        .unwrap_or_else(|error| panic!("revoke({revocations:?}): {error:?}"));
}

async fn revoke(store: &dyn RevocationStore, token: &TokenRef, until: UnixSeconds) {
    revoke_all(store, &[revoking_token(token, until)]).await;
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
/// many it deleted: the SQL stores, and the resident store (which reports SQLite's count). Redis
/// expires revocation keys by itself (its purge only trims the mirrors' index) and the mirror
/// drops entries from memory, so for them the count is only bounded by the expired entries.
fn keeps_expired_rows_until_purged(store: &dyn RevocationStore) -> bool {
    matches!(
        store.describe(),
        "postgres" | "sqlite" | "sqlite (in memory)"
    )
}

async fn a_revoked_jti_is_revoked(store: &dyn RevocationStore) {
    let token = token();
    revoke(store, &token, now() + HOUR).await;
    assert!(is_revoked(store, &token).await);
    assert!(
        is_revoked(store, &token).await,
        "asking does not consume it"
    );
}

async fn a_jti_never_revoked_is_not_revoked(store: &dyn RevocationStore) {
    let first = token();
    assert!(!is_revoked(store, &first).await, "in an empty store");
    revoke(store, &token(), now() + HOUR).await;
    assert!(
        !is_revoked(store, &first).await,
        "beside another user's revocation"
    );
    revoke(store, &sibling(&first), now() + HOUR).await;
    assert!(
        !is_revoked(store, &first).await,
        "beside the revocation of another token of its user and session"
    );
}

async fn a_revocation_is_in_force_through_its_until_second(store: &dyn RevocationStore) {
    let second = early_in_a_second().await;
    let token = token();
    store
        .revoke(&[revoking_token(&token, second)], second)
        .await
        .unwrap();
    // Still `second` (half a second remained): `until` is inclusive.
    assert!(store.is_revoked(&token, second).await.unwrap());
}

async fn a_revocation_lapses_once_its_until_has_passed(store: &dyn RevocationStore) {
    let until = now();
    let token = token();
    revoke(store, &token, until).await;
    wait_past(until).await;
    assert!(
        !is_revoked(store, &token).await,
        "a token revoked until {until} is no longer revoked at {}",
        now()
    );
}

async fn revoking_again_with_a_later_until_extends_the_revocation(store: &dyn RevocationStore) {
    let until = now();
    let token = token();
    revoke(store, &token, until).await;
    revoke(store, &token, until + HOUR).await;
    wait_past(until).await;
    assert!(
        is_revoked(store, &token).await,
        "revoked until now, then until an hour later: still revoked after now"
    );
}

async fn revoking_again_with_an_earlier_until_keeps_the_later_one(store: &dyn RevocationStore) {
    let until = now();
    let token = token();
    revoke(store, &token, until + HOUR).await;
    revoke(store, &token, until).await;
    wait_past(until).await;
    assert!(
        is_revoked(store, &token).await,
        "revoked until an hour later, then until now: still revoked after now"
    );
}

async fn revoking_again_with_an_until_already_past_does_not_lift_the_revocation(
    store: &dyn RevocationStore,
) {
    let token = token();
    revoke(store, &token, now() + HOUR).await;
    revoke(store, &token, now() - HOUR).await;
    assert!(is_revoked(store, &token).await);
}

async fn a_revocation_whose_until_is_already_past_is_not_revoked(store: &dyn RevocationStore) {
    let long_ago = token();
    revoke(store, &long_ago, now() - HOUR).await;
    let a_second_ago = token();
    revoke(store, &a_second_ago, now() - 1).await;
    assert!(!is_revoked(store, &long_ago).await);
    assert!(!is_revoked(store, &a_second_ago).await);
}

async fn purge_expired_never_removes_a_live_revocation(store: &dyn RevocationStore) {
    // Half a second to spare: `until_now` must still be live when it is checked.
    let now = early_in_a_second().await;
    let live = token();
    store
        .revoke(&[revoking_token(&live, now + HOUR)], now)
        .await
        .unwrap();
    // Revoked through `now`, inclusive: live at a purge at `now`.
    let until_now = token();
    store
        .revoke(&[revoking_token(&until_now, now)], now)
        .await
        .unwrap();
    let expired = [token(), token()];
    for token in &expired {
        revoke(store, token, now - 10).await;
    }
    let purged = store.purge_expired(now).await.expect("purge_expired");
    if keeps_expired_rows_until_purged(store) {
        assert_eq!(purged, 2, "the SQL stores delete exactly the expired rows");
    } else {
        assert!(purged <= 2, "purged {purged} of 2 expired entries");
    }
    assert!(is_revoked(store, &live).await, "a live revocation survives");
    assert!(
        store.is_revoked(&until_now, now).await.unwrap(),
        "a revocation through the purge's own second survives"
    );
    for token in &expired {
        assert!(!is_revoked(store, token).await);
    }
    assert_eq!(
        store.purge_expired(now).await.unwrap(),
        0,
        "a second purge finds nothing"
    );
    assert!(is_revoked(store, &live).await);
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

/// Access tokens issued before sessions (no `sid`) are still refused by their jti (Logout).
async fn a_revoked_jti_of_a_legacy_token_without_a_session_is_revoked(store: &dyn RevocationStore) {
    let legacy = TokenRef {
        session: None,
        ..token()
    };
    assert!(!is_revoked(store, &legacy).await, "before it is revoked");
    revoke(store, &legacy, now() + HOUR).await;
    assert!(is_revoked(store, &legacy).await);
    let other = TokenRef {
        jti: Jti::generate(),
        ..legacy
    };
    assert!(
        !is_revoked(store, &other).await,
        "another legacy token of the same user is not"
    );
}

async fn a_session_revocation_refuses_the_tokens_of_that_session_only(store: &dyn RevocationStore) {
    let first = token();
    let second = sibling(&first);
    let earlier = issued_at(&first, first.issued_at - 600);
    let other_session = TokenRef {
        session: Some(SessionId::generate()),
        ..sibling(&first)
    };
    let legacy = TokenRef {
        session: None,
        ..sibling(&first)
    };
    let other_user = token();
    revoke_all(store, &[revoking_session(&first, now() + HOUR)]).await;
    for refused in [&first, &second, &earlier] {
        assert!(
            is_revoked(store, refused).await,
            "every token of the ended session is refused: {refused:?}"
        );
    }
    assert!(
        !is_revoked(store, &other_session).await,
        "a token of the same user in another session is not"
    );
    assert!(
        !is_revoked(store, &legacy).await,
        "a token of the same user without a session is not"
    );
    assert!(
        !is_revoked(store, &other_user).await,
        "another user's token is not"
    );
}

async fn a_cutoff_refuses_the_users_tokens_issued_before_it_and_no_others(
    store: &dyn RevocationStore,
) {
    let base = token();
    let second = base.issued_at;
    revoke_all(store, &[cutoff(base.user, second, now() + HOUR)]).await;
    for before in [second - 1, second - HOUR] {
        let token = TokenRef {
            session: Some(SessionId::generate()),
            ..issued_at(&base, before)
        };
        assert!(
            is_revoked(store, &token).await,
            "issued at {before}, before the cut-off at {second}: refused"
        );
    }
    for at_or_after in [second, second + 1] {
        assert!(
            !is_revoked(store, &issued_at(&base, at_or_after)).await,
            "issued at {at_or_after}, not before the cut-off at {second}: accepted"
        );
    }
    let other_user = TokenRef {
        issued_at: second - 1,
        ..token()
    };
    assert!(
        !is_revoked(store, &other_user).await,
        "another user's token issued before the cut-off is accepted"
    );
}

async fn a_cutoff_refuses_legacy_tokens_without_a_session_too(store: &dyn RevocationStore) {
    let legacy = TokenRef {
        session: None,
        ..token()
    };
    revoke_all(
        store,
        &[cutoff(legacy.user, legacy.issued_at + 1, now() + HOUR)],
    )
    .await;
    assert!(is_revoked(store, &legacy).await);
    assert!(
        !is_revoked(store, &issued_at(&legacy, legacy.issued_at + 1)).await,
        "one issued at the cut-off is accepted"
    );
}

async fn a_second_earlier_cutoff_never_lowers_the_first(store: &dyn RevocationStore) {
    let base = token();
    let second = base.issued_at;
    revoke_all(store, &[cutoff(base.user, second, now() + HOUR)]).await;
    revoke_all(store, &[cutoff(base.user, second - 100, now() + HOUR)]).await;
    assert!(
        is_revoked(store, &issued_at(&base, second - 50)).await,
        "issued between the two cut-offs: still refused by the first"
    );
    assert!(is_revoked(store, &issued_at(&base, second - 1)).await);
    assert!(!is_revoked(store, &issued_at(&base, second)).await);
}

async fn a_second_later_cutoff_raises_the_first(store: &dyn RevocationStore) {
    let base = token();
    let second = base.issued_at;
    revoke_all(store, &[cutoff(base.user, second - 100, now() + HOUR)]).await;
    assert!(!is_revoked(store, &issued_at(&base, second - 50)).await);
    revoke_all(store, &[cutoff(base.user, second, now() + HOUR)]).await;
    assert!(
        is_revoked(store, &issued_at(&base, second - 50)).await,
        "issued before the later cut-off: refused"
    );
    assert!(!is_revoked(store, &issued_at(&base, second)).await);
}

/// What a LogoutAll or a reuse writes: several kinds, of several users, in one call.
async fn several_kinds_revoked_in_one_call_are_all_in_force(store: &dyn RevocationStore) {
    let logged_out = token();
    let in_ended_session = token();
    let cut_off = TokenRef {
        issued_at: now() - 10,
        ..token()
    };
    // Issued after the cut-off: refused by its jti only.
    let by_jti_of_same_user = issued_at(&cut_off, now());
    let untouched = token();
    let until = now() + HOUR;
    revoke_all(
        store,
        &[
            revoking_token(&logged_out, until),
            revoking_session(&in_ended_session, until),
            cutoff(cut_off.user, now() - 5, until),
            revoking_token(&by_jti_of_same_user, until),
        ],
    )
    .await;
    for refused in [
        &logged_out,
        &in_ended_session,
        &sibling(&in_ended_session),
        &cut_off,
        &by_jti_of_same_user,
    ] {
        assert!(is_revoked(store, refused).await, "{refused:?} is refused");
    }
    assert!(!is_revoked(store, &untouched).await);
    assert!(
        !is_revoked(store, &issued_at(&cut_off, now())).await,
        "another token of the cut-off user issued after it is accepted"
    );
    assert!(
        !is_revoked(store, &sibling(&logged_out)).await,
        "a revoked jti refuses only its own token"
    );
}

async fn a_session_revocation_lapses_once_its_until_has_passed(store: &dyn RevocationStore) {
    let until = now();
    let token = token();
    revoke_all(store, &[revoking_session(&token, until)]).await;
    wait_past(until).await;
    assert!(
        !is_revoked(store, &token).await,
        "a session ended until {until} no longer matters at {}",
        now()
    );
}

async fn a_cutoff_lapses_once_its_until_has_passed(store: &dyn RevocationStore) {
    let until = now();
    let token = TokenRef {
        issued_at: until - 10,
        ..token()
    };
    revoke_all(store, &[cutoff(token.user, until, until)]).await;
    wait_past(until).await;
    assert!(
        !is_revoked(store, &token).await,
        "a cut-off kept until {until} no longer matters at {}",
        now()
    );
}

async fn a_session_revocation_or_cutoff_revoked_again_with_an_earlier_until_keeps_the_later_one(
    store: &dyn RevocationStore,
) {
    let until = now();
    let in_session = token();
    let cut_off = TokenRef {
        issued_at: until - 10,
        ..token()
    };
    revoke_all(
        store,
        &[
            revoking_session(&in_session, until + HOUR),
            cutoff(cut_off.user, until, until + HOUR),
        ],
    )
    .await;
    revoke_all(
        store,
        &[
            revoking_session(&in_session, until),
            cutoff(cut_off.user, until, until),
        ],
    )
    .await;
    wait_past(until).await;
    assert!(
        is_revoked(store, &in_session).await,
        "session: still refused after the earlier until"
    );
    assert!(
        is_revoked(store, &cut_off).await,
        "cut-off: still refused after the earlier until"
    );
}

async fn a_session_revocation_or_cutoff_whose_until_is_already_past_refuses_nothing(
    store: &dyn RevocationStore,
) {
    let in_session = token();
    let cut_off = TokenRef {
        issued_at: now() - HOUR,
        ..token()
    };
    revoke_all(
        store,
        &[
            revoking_session(&in_session, now() - 1),
            cutoff(cut_off.user, now(), now() - 1),
        ],
    )
    .await;
    assert!(!is_revoked(store, &in_session).await);
    assert!(!is_revoked(store, &cut_off).await);
}

async fn purge_expired_keeps_live_session_revocations_and_cutoffs(store: &dyn RevocationStore) {
    let now = early_in_a_second().await;
    let live_session = token();
    let live_cutoff = issued_at(&token(), now - 1);
    let expired_session = token();
    let expired_cutoff = issued_at(&token(), now - 1);
    store
        .revoke(
            &[
                revoking_session(&live_session, now),
                cutoff(live_cutoff.user, now, now + HOUR),
                revoking_session(&expired_session, now - 10),
                cutoff(expired_cutoff.user, now, now - 10),
            ],
            now,
        )
        .await
        .unwrap();
    let purged = store.purge_expired(now).await.expect("purge_expired");
    if keeps_expired_rows_until_purged(store) {
        assert_eq!(purged, 2, "exactly the expired session and cut-off");
    } else {
        assert!(purged <= 2, "purged {purged} of 2 expired entries");
    }
    assert!(store.is_revoked(&live_session, now).await.unwrap());
    assert!(store.is_revoked(&live_cutoff, now).await.unwrap());
    assert!(!store.is_revoked(&expired_session, now).await.unwrap());
    assert!(!store.is_revoked(&expired_cutoff, now).await.unwrap());
}

/// The embedded default's own promises, on its SQLite file: what it was told survives a restart,
/// and it answers from memory (so that Verify asks no database).
mod resident {
    use authd::store::{ResidentRevocations, RevocationStore as _};

    use super::*;
    use crate::contract::backends::{sqlite_at, sqlite_file};

    async fn load(file: &std::path::Path, now: UnixSeconds) -> ResidentRevocations {
        let clock = std::sync::Arc::new(authd::clock::ManualClock::at(now));
        ResidentRevocations::load(sqlite_at(file).await, clock)
            .await
            .expect("load the resident revocations")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_written_through_survives_a_reload_on_the_same_file() {
        let directory = tempfile::tempdir().unwrap();
        let file = sqlite_file(&directory);
        let first = load(&file, now()).await;
        let logged_out = token();
        let in_ended_session = token();
        let cut_off = issued_at(&token(), now() - 10);
        let until = now() + HOUR;
        revoke_all(
            &first,
            &[
                revoking_token(&logged_out, until),
                revoking_session(&in_ended_session, until),
                cutoff(cut_off.user, now(), until),
            ],
        )
        .await;
        drop(first);
        let reloaded = load(&file, now()).await;
        assert_eq!(reloaded.len(), 3, "the three revocations are loaded");
        for refused in [&logged_out, &in_ended_session, &cut_off] {
            assert!(
                is_revoked(&reloaded, refused).await,
                "{refused:?} is still refused"
            );
        }
        assert!(!is_revoked(&reloaded, &token()).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reload_leaves_out_what_has_lapsed() {
        let directory = tempfile::tempdir().unwrap();
        let file = sqlite_file(&directory);
        let start = now();
        let first = load(&file, start).await;
        let lapsing = token();
        let lasting = token();
        first
            .revoke(
                &[
                    revoking_token(&lapsing, start + 10),
                    revoking_session(&lasting, start + HOUR),
                ],
                start,
            )
            .await
            .unwrap();
        drop(first);
        let later = start + 11;
        let reloaded = load(&file, later).await;
        assert_eq!(reloaded.len(), 1, "only the revocation still in force");
        assert!(!reloaded.is_revoked(&lapsing, later).await.unwrap());
        assert!(reloaded.is_revoked(&lasting, later).await.unwrap());
    }

    /// There is no way to close the store's pool from outside, so this shows it another way:
    /// changes made to the SQLite file behind the resident store's back (by a second store on the
    /// same file) are not seen by it, which they would be if it asked SQLite.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn is_revoked_answers_from_memory_without_asking_sqlite() {
        let directory = tempfile::tempdir().unwrap();
        let file = sqlite_file(&directory);
        let resident = load(&file, now()).await;
        let behind_its_back = sqlite_at(&file).await;
        let revoked_through_it = token();
        revoke_all(
            &resident,
            &[revoking_token(&revoked_through_it, now() + HOUR)],
        )
        .await;
        assert!(
            is_revoked(&behind_its_back, &revoked_through_it).await,
            "written through to SQLite"
        );

        let written_behind = token();
        revoke_all(
            &behind_its_back,
            &[revoking_token(&written_behind, now() + HOUR)],
        )
        .await;
        assert!(is_revoked(&behind_its_back, &written_behind).await);
        assert!(
            !is_revoked(&resident, &written_behind).await,
            "a row it did not write is not seen: it does not ask SQLite"
        );

        // Every row deleted behind its back: still refused, from memory.
        let purged = behind_its_back
            .purge_expired(now() + 2 * HOUR)
            .await
            .unwrap();
        assert_eq!(purged, 2);
        assert!(!is_revoked(&behind_its_back, &revoked_through_it).await);
        assert!(is_revoked(&resident, &revoked_through_it).await);
    }
}

/// Verify reads a user's three entries in one round trip, which on a cluster needs them in one
/// slot: the keys named in the design (`{prefix}{u:<user>}:jti:<jti>`, `…:sid:<sid>`,
/// `…:cutoff`) share a hash slot, and the store writes its entries under exactly those names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_cluster_a_users_three_keys_share_one_slot() {
    use super::backends::{on_cluster, start_cluster};

    let cluster = start_cluster().await;
    let store = on_cluster(&cluster).await;
    let prefix = store.redis_prefix();
    let token = token();
    let until = now() + HOUR;
    revoke_all(
        &*store,
        &[
            revoking_token(&token, until),
            revoking_session(&token, until),
            cutoff(token.user, now(), until),
        ],
    )
    .await;
    let user_keys = format!("{prefix}{{u:{}}}:", token.user);
    let keys = [
        format!("{user_keys}jti:{}", token.jti),
        format!("{user_keys}sid:{}", token.session.unwrap()),
        format!("{user_keys}cutoff"),
    ];
    let mut connection = redis::Client::open(format!("redis://127.0.0.1:{}", cluster.ports[0]))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut slots = Vec::new();
    for key in &keys {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
        slots.push(slot);
    }
    assert!(
        slots.iter().all(|slot| *slot == slots[0]),
        "one slot for {keys:?}: {slots:?}"
    );
    let pattern = format!("{user_keys}*");
    let mut per_node = cluster.keys_per_node(&pattern);
    per_node.sort_unstable();
    assert_eq!(
        per_node,
        vec![0, 0, 3],
        "the user's three keys, all on one node"
    );
    for key in &keys {
        let node_with_key = cluster.keys_per_node(key);
        assert_eq!(node_with_key.iter().sum::<usize>(), 1, "{key} exists");
    }
    drop(store);
    drop(cluster);
}

/// Cached mode across instances: a mirror learns another instance's revocations of every kind
/// from the feed while it runs, and from the index when it starts.
mod mirrors {
    use std::time::Instant;

    use authd::store::mirror::MirroredRevocations;

    use super::*;
    use crate::contract::backends::{current_mirror, redis};

    /// How long an announcement may take to reach another mirror on the same server.
    const FEED_WITHIN: Duration = Duration::from_secs(2);

    /// Whether `mirror` refuses `token` within `FEED_WITHIN`, asking from memory (it is current).
    async fn refuses_soon(mirror: &MirroredRevocations, token: &TokenRef) -> bool {
        let deadline = Instant::now() + FEED_WITHIN;
        loop {
            assert!(mirror.is_current(), "the mirror answers from memory");
            if is_revoked(mirror, token).await {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_kind_reaches_another_mirror_by_the_feed_and_a_new_one_by_the_index() {
        let shared = redis().await;
        let writer = current_mirror((*shared).clone()).await;
        let follower = current_mirror((*shared).clone()).await;
        let logged_out = token();
        let legacy = TokenRef {
            session: None,
            ..token()
        };
        let in_ended_session = token();
        let cut_off = issued_at(&token(), now() - 10);
        let until = now() + HOUR;
        revoke_all(
            &writer,
            &[
                revoking_token(&logged_out, until),
                revoking_token(&legacy, until),
                revoking_session(&in_ended_session, until),
                cutoff(cut_off.user, now() - 5, until),
            ],
        )
        .await;
        let same_session = sibling(&in_ended_session);
        let refused = [
            &logged_out,
            &legacy,
            &in_ended_session,
            &same_session,
            &cut_off,
        ];
        for token in refused {
            assert!(
                refuses_soon(&follower, token).await,
                "the follower learns what refuses {token:?} from the feed"
            );
        }
        let accepted = [
            issued_at(&cut_off, now()),
            TokenRef {
                session: Some(SessionId::generate()),
                ..sibling(&in_ended_session)
            },
            sibling(&logged_out),
            token(),
        ];
        let started_later = current_mirror((*shared).clone()).await;
        for (name, mirror) in [("follower", &follower), ("started later", &started_later)] {
            for token in refused {
                assert!(
                    is_revoked(mirror, token).await,
                    "{name}: {token:?} is refused"
                );
            }
            for token in &accepted {
                assert!(
                    !is_revoked(mirror, token).await,
                    "{name}: {token:?} is accepted"
                );
            }
        }
    }
}
