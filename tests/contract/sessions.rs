//! The `SessionStore` contract (with the `UserStore` calls sessions depend on), run on Postgres
//! and SQLite: a session reads back as created; a refresh token is looked up and rotated under the
//! session it names (a token presented as another session's is unknown and rotates nothing); a
//! rotation is a compare-and-set on the current refresh token (of N concurrent rotations from one
//! token exactly one succeeds), records the presented token as spent (a session remembers its
//! newest 16 spent tokens) and is refused on an ended or expired session; the idle limit never
//! passes the absolute end; the grace replacement swaps only from the expected current token,
//! records that one as spent and keeps the rotation it follows; ending a session is for its user
//! and happens once; listing shows live sessions newest first; purging deletes ended and expired
//! sessions with their spent tokens; deleting a user deletes its sessions; and no row holds a
//! refresh token's secret.
//!
//! Time: the SQL stores take every time from their caller, so the cases use fixed Unix
//! milliseconds and never wait.

use std::collections::HashSet;

use authd::{
    clock::UnixMillis,
    domain::{
        Email, PasswordHashString, RefreshToken, RefreshTokenHash, SessionId, UserAgent, UserId,
    },
    store::{
        NewSession, NewUser, RefreshTokenState, Rotation, SessionStore, SqlStore, StoredSession,
        UserStore,
    },
};
use uuid::Uuid;

use super::backends::{self, Fresh, contract_suite, join_all};

contract_suite! {
    cases: [
        a_created_session_reads_back_as_created,
        an_unknown_session_or_refresh_token_is_none,
        a_token_naming_another_session_is_none_and_rotates_nothing,
        a_session_for_an_unknown_user_is_refused,
        a_session_guarded_by_a_hash_starts_only_while_the_hash_is_unchanged,
        a_rotation_from_the_current_token_succeeds_once,
        a_rotation_records_the_presented_token_as_spent_and_the_next_as_current,
        rotations_chain_and_every_spent_token_stays_spent,
        the_spent_list_keeps_exactly_the_newest_sixteen,
        of_concurrent_rotations_from_one_token_exactly_one_succeeds,
        a_rotation_is_refused_on_an_ended_session,
        a_rotation_is_refused_once_the_idle_limit_is_reached,
        a_rotation_is_refused_once_the_absolute_end_is_reached,
        the_idle_limit_is_capped_at_the_absolute_end,
        the_grace_replacement_swaps_only_from_the_expected_current_token,
        the_grace_replacement_keeps_the_previous_token_and_rotation_time,
        the_grace_replacement_records_the_replaced_token_as_spent,
        the_grace_replacement_is_refused_on_an_ended_or_expired_session,
        a_session_is_ended_only_for_its_own_user,
        a_session_is_ended_only_once,
        an_expired_session_is_not_ended,
        ending_a_users_sessions_ends_only_its_live_ones_and_returns_them,
        live_sessions_are_newest_first_without_ended_or_expired_ones,
        sessions_beyond_the_newest_few_are_ended_oldest_first,
        purging_deletes_ended_and_expired_sessions_with_their_spent_tokens,
        deleting_a_user_deletes_its_sessions_and_their_tokens,
        a_user_is_found_by_id_with_its_email_and_hash,
        a_password_hash_is_replaced_only_from_the_expected_one,
    ],
    fresh: { on_postgres => postgres, on_sqlite => sqlite },
}

/// What the cases need of a store: sessions, and users for them to belong to.
trait Store: UserStore + SessionStore {}
impl<T: UserStore + SessionStore> Store for T {}

/// A fixed now, in Unix milliseconds: the stores read no clock.
const T0: UnixMillis = 1_900_000_000_000;
/// The idle limit the cases give a session: a minute.
const IDLE: UnixMillis = 60_000;
/// The absolute lifetime the cases give a session: ten minutes.
const MAX_AGE: UnixMillis = 600_000;
/// How many rotations from one token race in the concurrency case.
const RACERS: usize = 16;

/// The hash of a new refresh token of `session` (a token carries its session's id).
fn hash(session: SessionId) -> RefreshTokenHash {
    RefreshToken::generate(session).hash()
}

/// A new user in `store`, which sessions need (they reference it).
async fn user(store: &dyn Store) -> UserId {
    user_with_hash(store, &phc()).await
}

/// A PHC string of its own, so that reading back another user's shows.
fn phc() -> PasswordHashString {
    PasswordHashString::from_phc(format!(
        "$argon2id$v=19$m=19456,t=2,p=1${}${}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    ))
}

async fn user_with_hash(store: &dyn Store, password_hash: &PasswordHashString) -> UserId {
    let id = UserId::generate();
    let user = NewUser {
        id,
        email: Email::parse(&format!(
            "Session.User-{}@Example.COM",
            Uuid::new_v4().simple()
        ))
        .unwrap(),
        username: None,
        password_hash: password_hash.clone(),
    };
    store.insert(&user).await.expect("insert the user");
    id
}

/// A session of `user` started at `created_at`, with the cases' limits.
fn new_session(user: UserId, created_at: UnixMillis) -> NewSession {
    let id = SessionId::generate();
    NewSession {
        id,
        user_id: user,
        refresh_hash: hash(id),
        created_at,
        idle_expires_at: created_at + IDLE,
        expires_at: created_at + MAX_AGE,
        user_agent: UserAgent::from_header(b"contract-test/1.0"),
        source_address: Some("127.0.0.1".to_owned()),
    }
}

/// Creates a session of `user` started at `created_at`.
async fn start(store: &dyn Store, user: UserId, created_at: UnixMillis) -> NewSession {
    create(store, new_session(user, created_at)).await
}

async fn create(store: &dyn Store, session: NewSession) -> NewSession {
    let created = store
        .create_session(&session, None)
        .await
        .unwrap_or_else(|error| panic!("create_session: {error:?}"));
    assert!(created);
    session
}

/// The session as it must read back right after `create_session`.
fn as_created(new: &NewSession) -> StoredSession {
    StoredSession {
        id: new.id,
        user_id: new.user_id,
        previous_hash: None,
        rotated_at: None,
        created_at: new.created_at,
        last_used_at: new.created_at,
        idle_expires_at: new.idle_expires_at,
        expires_at: new.expires_at,
        ended_at: None,
        user_agent: new.user_agent.clone(),
        source_address: new.source_address.clone(),
    }
}

/// A rotation of `session` from `presented` at `now` to a new token of it, extending the idle
/// limit by `IDLE`.
fn rotation(session: SessionId, presented: RefreshTokenHash, now: UnixMillis) -> Rotation {
    Rotation {
        session,
        presented,
        next: hash(session),
        now,
        idle_until: now + IDLE,
    }
}

async fn rotate(store: &dyn Store, rotation: &Rotation) -> Option<StoredSession> {
    store
        .rotate_refresh_token(rotation)
        .await
        .unwrap_or_else(|error| panic!("rotate_refresh_token: {error:?}"))
}

async fn session(store: &dyn Store, id: SessionId) -> Option<StoredSession> {
    store
        .session(id)
        .await
        .unwrap_or_else(|error| panic!("session({id}): {error:?}"))
}

/// Session `id`, its current token's hash and the state of `presented`, if the session exists
/// and knows it (as its current token or one of its last spent ones).
async fn find(
    store: &dyn Store,
    id: SessionId,
    presented: RefreshTokenHash,
) -> Option<(StoredSession, RefreshTokenHash, RefreshTokenState)> {
    store
        .find_refresh_token(id, presented)
        .await
        .unwrap_or_else(|error| panic!("find_refresh_token: {error:?}"))
}

/// The id of session `id` if it knows `presented`, its current token's hash, and the state.
async fn standing(
    store: &dyn Store,
    id: SessionId,
    presented: RefreshTokenHash,
) -> Option<(SessionId, RefreshTokenHash, RefreshTokenState)> {
    find(store, id, presented)
        .await
        .map(|(session, current, state)| (session.id, current, state))
}

async fn end(
    store: &dyn Store,
    id: SessionId,
    user: Option<UserId>,
    now: UnixMillis,
) -> Option<StoredSession> {
    store
        .end_session(id, user, now)
        .await
        .unwrap_or_else(|error| panic!("end_session: {error:?}"))
}

async fn live(store: &dyn Store, user: UserId, now: UnixMillis) -> Vec<SessionId> {
    store
        .live_sessions(user, now)
        .await
        .unwrap_or_else(|error| panic!("live_sessions: {error:?}"))
        .into_iter()
        .map(|session| session.id)
        .collect()
}

fn ids(sessions: &[StoredSession]) -> HashSet<SessionId> {
    sessions.iter().map(|session| session.id).collect()
}

async fn a_created_session_reads_back_as_created(store: &dyn Store) {
    let user = user(store).await;
    let created = start(store, user, T0).await;
    assert_eq!(session(store, created.id).await, Some(as_created(&created)));
    assert_eq!(
        find(store, created.id, created.refresh_hash).await,
        Some((
            as_created(&created),
            created.refresh_hash,
            RefreshTokenState::Current
        ))
    );
    let bare = create(
        store,
        NewSession {
            user_agent: None,
            source_address: None,
            ..new_session(user, T0 + 1)
        },
    )
    .await;
    assert_eq!(
        session(store, bare.id).await,
        Some(as_created(&bare)),
        "without a user agent or source address"
    );
}

async fn an_unknown_session_or_refresh_token_is_none(store: &dyn Store) {
    let unknown = SessionId::generate();
    assert_eq!(session(store, unknown).await, None);
    assert_eq!(find(store, unknown, hash(unknown)).await, None);
    let created = start(store, user(store).await, T0).await;
    assert_eq!(session(store, unknown).await, None, "beside one");
    assert_eq!(
        find(store, unknown, hash(unknown)).await,
        None,
        "beside one"
    );
    assert_eq!(
        find(store, created.id, hash(created.id)).await,
        None,
        "a token the session never had"
    );
}

async fn a_token_naming_another_session_is_none_and_rotates_nothing(store: &dyn Store) {
    let user = user(store).await;
    let owner = start(store, user, T0).await;
    let other = start(store, user, T0).await;
    let unknown = SessionId::generate();
    // The owner's current token (the right hash) presented as another session's, or an unknown
    // one's: the session id it names is wrong.
    for named in [other.id, unknown] {
        assert_eq!(
            find(store, named, owner.refresh_hash).await,
            None,
            "found under a session it does not belong to"
        );
        let rotation = rotation(named, owner.refresh_hash, T0 + 1_000);
        assert_eq!(
            rotate(store, &rotation).await,
            None,
            "rotated under a session it does not belong to"
        );
        assert_eq!(find(store, named, rotation.next).await, None);
        assert_eq!(find(store, owner.id, rotation.next).await, None);
    }
    assert_eq!(session(store, owner.id).await, Some(as_created(&owner)));
    assert_eq!(session(store, other.id).await, Some(as_created(&other)));
    assert_eq!(session(store, unknown).await, None);
    assert_eq!(
        standing(store, owner.id, owner.refresh_hash).await,
        Some((owner.id, owner.refresh_hash, RefreshTokenState::Current)),
        "the owner's token is still current, not spent"
    );
    assert_eq!(
        standing(store, other.id, other.refresh_hash).await,
        Some((other.id, other.refresh_hash, RefreshTokenState::Current))
    );
}

async fn a_session_for_an_unknown_user_is_refused(store: &dyn Store) {
    let orphan = new_session(UserId::generate(), T0);
    assert!(
        store.create_session(&orphan, None).await.is_err(),
        "a session must belong to a user"
    );
    assert_eq!(session(store, orphan.id).await, None);
    // With a hash to match, an unknown user is no row, not an error.
    assert!(!store.create_session(&orphan, Some(&phc())).await.unwrap());
    assert_eq!(session(store, orphan.id).await, None);
}

async fn a_session_guarded_by_a_hash_starts_only_while_the_hash_is_unchanged(store: &dyn Store) {
    let hash = phc();
    let id = user_with_hash(store, &hash).await;
    let guarded = new_session(id, T0);
    assert!(store.create_session(&guarded, Some(&hash)).await.unwrap());
    assert!(session(store, guarded.id).await.is_some());
    let changed = phc();
    assert!(
        store
            .replace_password_hash(id, &hash, &changed)
            .await
            .unwrap()
    );
    let stale = new_session(id, T0);
    assert!(!store.create_session(&stale, Some(&hash)).await.unwrap());
    assert_eq!(session(store, stale.id).await, None);
    let fresh = new_session(id, T0);
    assert!(store.create_session(&fresh, Some(&changed)).await.unwrap());
}

async fn a_rotation_from_the_current_token_succeeds_once(store: &dyn Store) {
    let created = start(store, user(store).await, T0).await;
    let first = rotation(created.id, created.refresh_hash, T0 + 1_000);
    let rotated = rotate(store, &first).await.expect("the first rotation");
    assert_eq!(
        rotated,
        StoredSession {
            previous_hash: Some(created.refresh_hash),
            rotated_at: Some(T0 + 1_000),
            last_used_at: T0 + 1_000,
            idle_expires_at: T0 + 1_000 + IDLE,
            ..as_created(&created)
        },
        "the session as it is afterwards"
    );
    assert_eq!(session(store, created.id).await, Some(rotated.clone()));
    let again = rotation(created.id, created.refresh_hash, T0 + 2_000);
    assert_eq!(rotate(store, &again).await, None, "the same token again");
    assert_eq!(
        session(store, created.id).await,
        Some(rotated),
        "a refused rotation changes nothing"
    );
    assert_eq!(
        find(store, created.id, again.next).await,
        None,
        "its next token is unknown"
    );
}

async fn a_rotation_records_the_presented_token_as_spent_and_the_next_as_current(
    store: &dyn Store,
) {
    let created = start(store, user(store).await, T0).await;
    let rotation = rotation(created.id, created.refresh_hash, T0 + 1_000);
    rotate(store, &rotation).await.expect("the rotation");
    assert_eq!(
        standing(store, created.id, created.refresh_hash).await,
        Some((created.id, rotation.next, RefreshTokenState::Spent))
    );
    assert_eq!(
        standing(store, created.id, rotation.next).await,
        Some((created.id, rotation.next, RefreshTokenState::Current))
    );
}

async fn rotations_chain_and_every_spent_token_stays_spent(store: &dyn Store) {
    let created = start(store, user(store).await, T0).await;
    let mut spent = Vec::new();
    let mut current = created.refresh_hash;
    for step in 1..=3 {
        let rotation = rotation(created.id, current, T0 + step * 1_000);
        let rotated = rotate(store, &rotation)
            .await
            .unwrap_or_else(|| panic!("rotation {step}"));
        assert_eq!(rotated.previous_hash, Some(current));
        spent.push(current);
        current = rotation.next;
    }
    for token in spent {
        assert_eq!(
            standing(store, created.id, token).await,
            Some((created.id, current, RefreshTokenState::Spent))
        );
        assert_eq!(
            rotate(store, &rotation(created.id, token, T0 + 10_000)).await,
            None
        );
    }
}

/// How many spent tokens a session remembers (newer ones push older ones out).
const SPENT_KEPT: usize = 16;

/// Rotates `session` from `current` once a second from `from`, `times` times; returns the
/// tokens spent, oldest first, and the current one.
async fn rotate_times(
    store: &dyn Store,
    session: SessionId,
    mut current: RefreshTokenHash,
    from: UnixMillis,
    times: usize,
) -> (Vec<RefreshTokenHash>, RefreshTokenHash) {
    let mut spent = Vec::new();
    for step in 0..times {
        let rotation = rotation(session, current, from + 1_000 * step as UnixMillis);
        rotate(store, &rotation)
            .await
            .unwrap_or_else(|| panic!("rotation {step}"));
        spent.push(current);
        current = rotation.next;
    }
    (spent, current)
}

async fn the_spent_list_keeps_exactly_the_newest_sixteen(store: &dyn Store) {
    let created = start(store, user(store).await, T0).await;
    let (spent, current) = rotate_times(
        store,
        created.id,
        created.refresh_hash,
        T0 + 1_000,
        SPENT_KEPT + 1,
    )
    .await;
    assert_eq!(spent.len(), 17);
    assert_eq!(
        standing(store, created.id, spent[0]).await,
        None,
        "the first token, the 17th newest spent, is forgotten (merely invalid)"
    );
    assert_eq!(
        standing(store, created.id, spent[1]).await,
        Some((created.id, current, RefreshTokenState::Spent)),
        "the second token, the 16th newest spent, is still spent"
    );
    for (index, &token) in spent.iter().enumerate().skip(1) {
        assert_eq!(
            standing(store, created.id, token).await,
            Some((created.id, current, RefreshTokenState::Spent)),
            "spent token {index}"
        );
    }
    assert_eq!(
        standing(store, created.id, current).await,
        Some((created.id, current, RefreshTokenState::Current))
    );
    let before = session(store, created.id).await;
    for token in [spent[0], spent[1]] {
        assert_eq!(
            rotate(store, &rotation(created.id, token, T0 + 30_000)).await,
            None
        );
    }
    assert_eq!(session(store, created.id).await, before, "nothing changes");
}

async fn of_concurrent_rotations_from_one_token_exactly_one_succeeds(store: &dyn Store) {
    let created = start(store, user(store).await, T0).await;
    let rotations: Vec<Rotation> = (0..RACERS)
        .map(|_| rotation(created.id, created.refresh_hash, T0 + 1_000))
        .collect();
    let outcomes = join_all(
        rotations
            .iter()
            .map(|rotation| store.rotate_refresh_token(rotation))
            .collect(),
    )
    .await;
    let mut winners = Vec::new();
    for (rotation, outcome) in rotations.iter().zip(outcomes) {
        match outcome {
            Ok(Some(_)) => winners.push(rotation.next),
            Ok(None) => {}
            Err(error) => panic!("a racing rotation failed: {error:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {RACERS} rotations succeeds"
    );
    let winner = winners[0];
    assert_eq!(
        standing(store, created.id, created.refresh_hash).await,
        Some((created.id, winner, RefreshTokenState::Spent))
    );
    for rotation in rotations.iter().filter(|rotation| rotation.next != winner) {
        assert_eq!(
            find(store, created.id, rotation.next).await,
            None,
            "a losing rotation's token is unknown"
        );
    }
}

async fn a_rotation_is_refused_on_an_ended_session(store: &dyn Store) {
    let created = start(store, user(store).await, T0).await;
    end(store, created.id, None, T0 + 1_000)
        .await
        .expect("the session ends");
    let before = session(store, created.id).await;
    assert_eq!(
        rotate(
            store,
            &rotation(created.id, created.refresh_hash, T0 + 2_000)
        )
        .await,
        None
    );
    assert_eq!(session(store, created.id).await, before, "nothing changes");
    assert_eq!(
        standing(store, created.id, created.refresh_hash)
            .await
            .map(|(_, _, state)| state),
        Some(RefreshTokenState::Current),
        "its token is not spent"
    );
}

async fn a_rotation_is_refused_once_the_idle_limit_is_reached(store: &dyn Store) {
    let user = user(store).await;
    let at_limit = start(store, user, T0).await;
    assert_eq!(
        rotate(
            store,
            &rotation(at_limit.id, at_limit.refresh_hash, T0 + IDLE)
        )
        .await,
        None,
        "at the idle limit"
    );
    let past_limit = start(store, user, T0).await;
    assert_eq!(
        rotate(
            store,
            &rotation(past_limit.id, past_limit.refresh_hash, T0 + IDLE + 1)
        )
        .await,
        None,
        "past the idle limit"
    );
    assert_eq!(
        session(store, past_limit.id).await,
        Some(as_created(&past_limit))
    );
    let just_before = start(store, user, T0).await;
    assert!(
        rotate(
            store,
            &rotation(just_before.id, just_before.refresh_hash, T0 + IDLE - 1)
        )
        .await
        .is_some(),
        "a millisecond before the idle limit"
    );
}

async fn a_rotation_is_refused_once_the_absolute_end_is_reached(store: &dyn Store) {
    let user = user(store).await;
    // Kept alive by rotations until its idle limit meets its absolute end.
    let created = start(store, user, T0).await;
    let mut current = created.refresh_hash;
    let mut now = T0;
    while now + IDLE / 2 < T0 + MAX_AGE {
        now += IDLE / 2;
        let rotation = rotation(created.id, current, now);
        rotate(store, &rotation)
            .await
            .unwrap_or_else(|| panic!("a rotation at {now}"));
        current = rotation.next;
    }
    assert_eq!(
        rotate(store, &rotation(created.id, current, T0 + MAX_AGE)).await,
        None,
        "at the absolute end"
    );
    // Even a session whose idle limit was (wrongly) created past its end is refused there.
    let inconsistent = create(
        store,
        NewSession {
            idle_expires_at: T0 + MAX_AGE + IDLE,
            ..new_session(user, T0)
        },
    )
    .await;
    assert_eq!(
        rotate(
            store,
            &rotation(inconsistent.id, inconsistent.refresh_hash, T0 + MAX_AGE)
        )
        .await,
        None,
        "at the absolute end, whatever the idle limit"
    );
}

async fn the_idle_limit_is_capped_at_the_absolute_end(store: &dyn Store) {
    // Ends half an idle limit after it starts: every extension would pass the end.
    let end = T0 + IDLE / 2;
    let created = create(
        store,
        NewSession {
            idle_expires_at: end,
            expires_at: end,
            ..new_session(user(store).await, T0)
        },
    )
    .await;
    let first = rotation(created.id, created.refresh_hash, T0 + 1_000);
    let rotated = rotate(store, &first).await.expect("the rotation");
    assert_eq!(rotated.idle_expires_at, end, "capped at the end");
    assert_eq!(rotated.expires_at, end, "the end does not move");
    assert_eq!(
        session(store, created.id).await.map(|s| s.idle_expires_at),
        Some(end)
    );
    // The grace replacement is capped the same way.
    let replacement = Rotation {
        session: created.id,
        presented: created.refresh_hash,
        next: hash(created.id),
        now: T0 + 2_000,
        idle_until: T0 + 2_000 + IDLE,
    };
    let replaced = store
        .replace_current_refresh_token(created.id, first.next, &replacement)
        .await
        .unwrap()
        .expect("the replacement");
    assert_eq!(replaced.idle_expires_at, end);
    assert_eq!(
        rotate(store, &rotation(created.id, replacement.next, end)).await,
        None,
        "refused at the end"
    );
}

async fn the_grace_replacement_swaps_only_from_the_expected_current_token(store: &dyn Store) {
    let user = user(store).await;
    let created = start(store, user, T0).await;
    let other = start(store, user, T0).await;
    let first = rotation(created.id, created.refresh_hash, T0 + 1_000);
    rotate(store, &first).await.expect("the rotation");
    let grace = rotation(created.id, created.refresh_hash, T0 + 1_500);
    let replace = async |id, expected| {
        store
            .replace_current_refresh_token(id, expected, &grace)
            .await
            .unwrap_or_else(|error| panic!("replace_current_refresh_token: {error:?}"))
    };
    assert_eq!(
        replace(created.id, created.refresh_hash).await,
        None,
        "expecting the spent token"
    );
    assert_eq!(
        replace(created.id, hash(created.id)).await,
        None,
        "expecting an unknown one"
    );
    assert_eq!(
        replace(other.id, first.next).await,
        None,
        "expecting this session's token on another session"
    );
    assert_eq!(
        standing(store, created.id, first.next).await,
        Some((created.id, first.next, RefreshTokenState::Current)),
        "nothing changed"
    );
    assert!(
        replace(created.id, first.next).await.is_some(),
        "expecting the current one"
    );
    assert_eq!(
        standing(store, created.id, first.next).await,
        Some((created.id, grace.next, RefreshTokenState::Spent)),
        "the replaced token is spent"
    );
    assert_eq!(
        standing(store, created.id, grace.next).await,
        Some((created.id, grace.next, RefreshTokenState::Current))
    );
    assert_eq!(
        replace(created.id, first.next).await,
        None,
        "a second replacement from the same token"
    );
    assert_eq!(session(store, other.id).await, Some(as_created(&other)));
}

async fn the_grace_replacement_keeps_the_previous_token_and_rotation_time(store: &dyn Store) {
    let created = start(store, user(store).await, T0).await;
    let first = rotation(created.id, created.refresh_hash, T0 + 1_000);
    rotate(store, &first).await.expect("the rotation");
    let grace = rotation(created.id, created.refresh_hash, T0 + 1_500);
    let replaced = store
        .replace_current_refresh_token(created.id, first.next, &grace)
        .await
        .unwrap()
        .expect("the replacement");
    let expected = StoredSession {
        previous_hash: Some(created.refresh_hash),
        rotated_at: Some(T0 + 1_000),
        last_used_at: T0 + 1_500,
        idle_expires_at: T0 + 1_500 + IDLE,
        ..as_created(&created)
    };
    assert_eq!(replaced, expected, "the session as it is afterwards");
    assert_eq!(session(store, created.id).await, Some(expected));
    assert_eq!(
        standing(store, created.id, created.refresh_hash).await,
        Some((created.id, grace.next, RefreshTokenState::Spent)),
        "the token spent by the rotation stays spent"
    );
}

async fn the_grace_replacement_records_the_replaced_token_as_spent(store: &dyn Store) {
    let created = start(store, user(store).await, T0).await;
    let first = rotation(created.id, created.refresh_hash, T0 + 1_000);
    rotate(store, &first).await.expect("the rotation");
    let grace = rotation(created.id, created.refresh_hash, T0 + 1_500);
    store
        .replace_current_refresh_token(created.id, first.next, &grace)
        .await
        .unwrap()
        .expect("the replacement");
    for (token, what) in [
        (first.next, "the replaced current token"),
        (created.refresh_hash, "the token spent by the rotation"),
    ] {
        assert_eq!(
            standing(store, created.id, token).await,
            Some((created.id, grace.next, RefreshTokenState::Spent)),
            "{what} is spent"
        );
    }
    let before = session(store, created.id).await;
    assert_eq!(
        rotate(store, &rotation(created.id, first.next, T0 + 2_000)).await,
        None,
        "the replaced token no longer rotates"
    );
    assert_eq!(session(store, created.id).await, before, "nothing changes");
    // It is listed as spent after the rotation's token: 15 more rotations push the rotation's
    // token out of the newest 16, but not the replaced one.
    let (_, current) =
        rotate_times(store, created.id, grace.next, T0 + 3_000, SPENT_KEPT - 1).await;
    assert_eq!(
        standing(store, created.id, first.next).await,
        Some((created.id, current, RefreshTokenState::Spent)),
        "the replaced token, the 16th newest spent"
    );
    assert_eq!(
        standing(store, created.id, created.refresh_hash).await,
        None,
        "the rotation's token, the 17th newest spent"
    );
}

async fn the_grace_replacement_is_refused_on_an_ended_or_expired_session(store: &dyn Store) {
    let user = user(store).await;
    let ended = start(store, user, T0).await;
    end(store, ended.id, None, T0 + 1_000).await.expect("ends");
    let expired = start(store, user, T0).await;
    for (session, now) in [(&ended, T0 + 2_000), (&expired, T0 + IDLE)] {
        let grace = rotation(session.id, hash(session.id), now);
        assert_eq!(
            store
                .replace_current_refresh_token(session.id, session.refresh_hash, &grace)
                .await
                .unwrap(),
            None
        );
        assert_eq!(find(store, session.id, grace.next).await, None);
    }
}

async fn a_session_is_ended_only_for_its_own_user(store: &dyn Store) {
    let owner = user(store).await;
    let stranger = user(store).await;
    let created = start(store, owner, T0).await;
    assert_eq!(
        end(store, created.id, Some(stranger), T0 + 1_000).await,
        None,
        "another user cannot end it"
    );
    assert_eq!(session(store, created.id).await, Some(as_created(&created)));
    let ended = end(store, created.id, Some(owner), T0 + 2_000)
        .await
        .expect("its user ends it");
    assert_eq!((ended.id, ended.user_id), (created.id, owner));
    assert_eq!(
        session(store, created.id).await.and_then(|s| s.ended_at),
        Some(T0 + 2_000)
    );
}

async fn a_session_is_ended_only_once(store: &dyn Store) {
    let owner = user(store).await;
    let created = start(store, owner, T0).await;
    assert!(end(store, created.id, None, T0 + 1_000).await.is_some());
    assert_eq!(
        end(store, created.id, None, T0 + 2_000).await,
        None,
        "again"
    );
    assert_eq!(
        end(store, created.id, Some(owner), T0 + 3_000).await,
        None,
        "again, by its user"
    );
    assert_eq!(
        session(store, created.id).await.and_then(|s| s.ended_at),
        Some(T0 + 1_000),
        "the first end stands"
    );
    assert_eq!(
        end(store, SessionId::generate(), None, T0).await,
        None,
        "unknown"
    );
}

async fn an_expired_session_is_not_ended(store: &dyn Store) {
    let created = start(store, user(store).await, T0).await;
    assert_eq!(end(store, created.id, None, T0 + IDLE).await, None);
    assert_eq!(session(store, created.id).await, Some(as_created(&created)));
}

async fn ending_a_users_sessions_ends_only_its_live_ones_and_returns_them(store: &dyn Store) {
    let owner = user(store).await;
    let other = user(store).await;
    let now = T0 + IDLE + 1_000;
    let live_one = start(store, owner, T0 + 2_000).await;
    let live_two = start(store, owner, T0 + 3_000).await;
    let ended = start(store, owner, T0 + 2_000).await;
    end(store, ended.id, None, T0 + 2_500).await.expect("ends");
    let expired = start(store, owner, T0).await;
    let others = start(store, other, T0 + 2_000).await;
    let returned = store.end_user_sessions(owner, now).await.unwrap();
    assert_eq!(ids(&returned), HashSet::from([live_one.id, live_two.id]));
    assert!(returned.iter().all(|session| session.user_id == owner));
    for id in [live_one.id, live_two.id] {
        assert_eq!(session(store, id).await.and_then(|s| s.ended_at), Some(now));
    }
    assert_eq!(
        session(store, ended.id).await.and_then(|s| s.ended_at),
        Some(T0 + 2_500),
        "an ended session keeps its end"
    );
    assert_eq!(session(store, expired.id).await, Some(as_created(&expired)));
    assert_eq!(
        live(store, other, now).await,
        vec![others.id],
        "another user's"
    );
    assert!(
        store
            .end_user_sessions(owner, now)
            .await
            .unwrap()
            .is_empty(),
        "nothing left to end"
    );
}

async fn live_sessions_are_newest_first_without_ended_or_expired_ones(store: &dyn Store) {
    let owner = user(store).await;
    let now = T0 + IDLE + 10_000;
    let oldest = start(store, owner, T0 + 11_000).await;
    let newest = start(store, owner, T0 + 13_000).await;
    let middle = start(store, owner, T0 + 12_000).await;
    // Used last, but not the newest.
    rotate(
        store,
        &rotation(oldest.id, oldest.refresh_hash, T0 + 14_000),
    )
    .await
    .expect("the rotation");
    let ended = start(store, owner, T0 + 15_000).await;
    end(store, ended.id, None, T0 + 16_000).await.expect("ends");
    start(store, owner, T0 + 10_000).await; // idle until `now`: expired at it
    let absolutely_ended = create(
        store,
        NewSession {
            idle_expires_at: now + IDLE,
            expires_at: now,
            ..new_session(owner, T0 + 10_500)
        },
    )
    .await;
    start(store, user(store).await, T0 + 17_000).await;
    assert_eq!(
        live(store, owner, now).await,
        vec![newest.id, middle.id, oldest.id]
    );
    assert!(!live(store, owner, now).await.contains(&absolutely_ended.id));
    assert!(live(store, UserId::generate(), now).await.is_empty());
}

async fn purging_deletes_ended_and_expired_sessions_with_their_spent_tokens(store: &dyn Store) {
    let owner = user(store).await;
    let before = T0 + 100_000;
    // Ended before `before`, after a rotation.
    let ended = start(store, owner, T0).await;
    let ended_rotation = rotation(ended.id, ended.refresh_hash, T0 + 1_000);
    rotate(store, &ended_rotation).await.expect("the rotation");
    end(store, ended.id, None, T0 + 2_000).await.expect("ends");
    // Its idle limit passed before `before`, after a rotation.
    let expired = start(store, owner, T0).await;
    let expired_rotation = rotation(expired.id, expired.refresh_hash, T0 + 1_000);
    rotate(store, &expired_rotation)
        .await
        .expect("the rotation");
    // Live at `before`, with a spent token.
    let live_one = start(store, owner, before - 1_000).await;
    let live_rotation = rotation(live_one.id, live_one.refresh_hash, before - 500);
    rotate(store, &live_rotation).await.expect("the rotation");
    // Ended, but not before `before`.
    let ended_late = start(store, owner, before - 1_000).await;
    end(store, ended_late.id, None, before).await.expect("ends");

    let purged = store.purge_sessions(before).await.expect("purge_sessions");
    assert_eq!(purged, 2, "the ended and the expired session");
    // A session's spent tokens are kept in its own row, so they go with it.
    for (gone, rotation) in [(&ended, &ended_rotation), (&expired, &expired_rotation)] {
        assert_eq!(session(store, gone.id).await, None);
        assert_eq!(
            find(store, gone.id, gone.refresh_hash).await,
            None,
            "its spent token"
        );
        assert_eq!(
            find(store, gone.id, rotation.next).await,
            None,
            "its current token"
        );
    }
    assert_eq!(
        standing(store, live_one.id, live_one.refresh_hash).await,
        Some((live_one.id, live_rotation.next, RefreshTokenState::Spent)),
        "a live session keeps its spent tokens"
    );
    assert!(session(store, ended_late.id).await.is_some());
    assert_eq!(store.purge_sessions(before).await.unwrap(), 0, "again");
}

async fn deleting_a_user_deletes_its_sessions_and_their_tokens(store: &dyn Store) {
    let doomed = user(store).await;
    let other = user(store).await;
    let first = start(store, doomed, T0).await;
    let rotation = rotation(first.id, first.refresh_hash, T0 + 1_000);
    rotate(store, &rotation).await.expect("the rotation");
    let second = start(store, doomed, T0 + 2_000).await;
    let others = start(store, other, T0).await;
    assert!(store.delete_user(doomed).await.unwrap(), "it existed");
    for id in [first.id, second.id] {
        assert_eq!(session(store, id).await, None);
    }
    for (id, token) in [
        (first.id, first.refresh_hash),
        (first.id, rotation.next),
        (second.id, second.refresh_hash),
    ] {
        assert_eq!(find(store, id, token).await, None);
    }
    assert!(store.find_user(doomed).await.unwrap().is_none());
    assert!(!store.delete_user(doomed).await.unwrap(), "gone already");
    assert!(
        !store.delete_user(UserId::generate()).await.unwrap(),
        "unknown"
    );
    assert_eq!(session(store, others.id).await, Some(as_created(&others)));
    assert!(store.find_user(other).await.unwrap().is_some());
}

async fn a_user_is_found_by_id_with_its_email_and_hash(store: &dyn Store) {
    let password_hash = phc();
    let email = Email::parse(&format!("Find.Me-{}@Example.COM", Uuid::new_v4().simple())).unwrap();
    let id = UserId::generate();
    store
        .insert(&NewUser {
            id,
            email: email.clone(),
            username: None,
            password_hash: password_hash.clone(),
        })
        .await
        .unwrap();
    user(store).await;
    let found = store.find_user(id).await.unwrap().expect("found by id");
    assert_eq!(found.email_normalized, email.normalized());
    assert_eq!(found.password_hash, password_hash);
    assert!(store.find_user(UserId::generate()).await.unwrap().is_none());
}

async fn a_password_hash_is_replaced_only_from_the_expected_one(store: &dyn Store) {
    let original = phc();
    let id = user_with_hash(store, &original).await;
    let other = user(store).await;
    let stored_hash = async |id| store.find_user(id).await.unwrap().unwrap().password_hash;
    let other_hash = stored_hash(other).await;
    let (wrong, new, newer) = (phc(), phc(), phc());
    assert!(!store.replace_password_hash(id, &wrong, &new).await.unwrap());
    assert_eq!(stored_hash(id).await, original, "unchanged");
    assert!(
        store
            .replace_password_hash(id, &original, &new)
            .await
            .unwrap()
    );
    assert_eq!(stored_hash(id).await, new);
    assert!(
        !store
            .replace_password_hash(id, &original, &newer)
            .await
            .unwrap(),
        "from the old hash again"
    );
    assert_eq!(stored_hash(id).await, new);
    assert!(
        !store
            .replace_password_hash(UserId::generate(), &original, &newer)
            .await
            .unwrap(),
        "an unknown user"
    );
    assert_eq!(
        stored_hash(other).await,
        other_hash,
        "another user is untouched"
    );
}

/// Tables that must never hold a refresh token: they hold its SHA-256 only (the spent ones in
/// `sessions.spent_hashes`).
const SESSION_TABLES: [&str; 1] = ["sessions"];
/// The shortest run of a token that must not appear in a row.
const LONG_SUBSTRING: usize = 16;
/// A refresh token's bytes: its session's id, then the secret.
const SESSION_ID_BYTES: usize = 16;
/// The characters of a token's text that encode only secret bytes start here: 16 bytes are 128
/// bits, 21⅓ base64 characters, so the 22nd character mixes the id's last bits with the secret's
/// first ones.
const SECRET_TEXT_FROM: usize = 22;

/// No cell of the session tables holds a refresh token's secret, in text, in raw bytes or in hex,
/// nor any 16-character (or 16-byte) run of it; the hash of each is there (the current one as
/// bytes in `refresh_hash`, the spent ones by their 128-bit mark in hex in `spent_hashes`, newest first), which shows
/// the rows were read.
///
/// A token begins with its session's id, which is no secret and is stored (the `id` column: raw
/// bytes on Postgres, hyphenated text on SQLite). So the rule is checked on what the id does not
/// give away: the 32 secret bytes (token bytes 16..48) and their hex, and the token's text after
/// its first 22 characters (the ones that encode only secret bits).
async fn no_row_holds_a_refresh_token(store: Fresh<SqlStore>) {
    let user = user(&*store).await;
    let session = SessionId::generate();
    let first = RefreshToken::generate(session);
    let second = RefreshToken::generate(session);
    let third = RefreshToken::generate(session);
    let created = create(
        &*store,
        NewSession {
            id: session,
            refresh_hash: first.hash(),
            ..new_session(user, T0)
        },
    )
    .await;
    let rotation = |presented: &RefreshToken, next: &RefreshToken, now| Rotation {
        session: presented.session(),
        presented: presented.hash(),
        next: next.hash(),
        now,
        idle_until: now + IDLE,
    };
    rotate(&*store, &rotation(&first, &second, T0 + 1_000))
        .await
        .expect("the rotation");
    store
        .replace_current_refresh_token(
            created.id,
            second.hash(),
            &rotation(&first, &third, T0 + 1_500),
        )
        .await
        .unwrap()
        .expect("the grace replacement");

    let mut cells = Vec::new();
    for table in SESSION_TABLES {
        cells.extend(store.raw_cells(table).await.into_iter().flatten());
    }
    let lowercase: Vec<Vec<u8>> = cells.iter().map(|cell| cell.to_ascii_lowercase()).collect();
    let found_in = |cells: &[Vec<u8>], needle: &[u8]| {
        cells
            .iter()
            .any(|cell| cell.windows(needle.len()).any(|window| window == needle))
    };
    assert!(
        found_in(&cells, third.hash().as_bytes()),
        "the current token's hash is stored as bytes (the rows were read)"
    );
    let spent_list = format!(
        "{}{}",
        second.hash().spent_mark(),
        first.hash().spent_mark()
    );
    assert!(
        cells.iter().any(|cell| cell == spent_list.as_bytes()),
        "the spent tokens are stored by their hash marks, newest first (the rows were read)"
    );
    for token in [&first, &second, &third] {
        assert_eq!(token.session(), session);
        let text = token.expose().as_bytes();
        let raw = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, text)
            .expect("a token is base64url");
        assert_eq!(&raw[..SESSION_ID_BYTES], session.as_uuid().as_bytes());
        let secret = &raw[SESSION_ID_BYTES..];
        assert_eq!(secret.len(), 32, "256 secret bits");
        for run in text[SECRET_TEXT_FROM..].windows(LONG_SUBSTRING) {
            assert!(
                !found_in(&cells, run),
                "a row holds {LONG_SUBSTRING} characters of a refresh token"
            );
        }
        for run in secret.windows(LONG_SUBSTRING) {
            assert!(
                !found_in(&cells, run),
                "a row holds {LONG_SUBSTRING} bytes of a refresh token"
            );
            assert!(
                !found_in(&lowercase, hex(run).as_bytes()),
                "a row holds {LONG_SUBSTRING} bytes of a refresh token in hex"
            );
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

mod storage_rule {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_postgres_no_row_holds_a_refresh_token() {
        no_row_holds_a_refresh_token(backends::postgres().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_sqlite_no_row_holds_a_refresh_token() {
        no_row_holds_a_refresh_token(backends::sqlite().await).await;
    }
}

async fn sessions_beyond_the_newest_few_are_ended_oldest_first(store: &dyn Store) {
    let user = self::user(store).await;
    let other = self::user(store).await;
    let oldest = start(store, user, T0).await;
    let middle = start(store, user, T0 + 1).await;
    let newest = start(store, user, T0 + 2).await;
    let others = start(store, other, T0).await;
    let ended = store.end_sessions_beyond(user, 2, T0 + 3).await.unwrap();
    assert_eq!(ended.iter().map(|s| s.id).collect::<Vec<_>>(), [oldest.id]);
    assert_eq!(live(store, user, T0 + 3).await, [newest.id, middle.id]);
    // Within the limit: nothing more ends; another user's sessions are not counted.
    assert!(
        store
            .end_sessions_beyond(user, 2, T0 + 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .end_sessions_beyond(other, 1, T0 + 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(session(store, others.id).await.unwrap().ended_at.is_none());
}
