//! The `UserStore` contract, run on Postgres and SQLite: a user is found by its normalised email
//! whatever the spelling, the normalised email is unique (atomically, also under concurrent
//! inserts), and a failed insert changes nothing.

use authd::{
    domain::{Email, PasswordHashString, UserId, Username},
    store::{NewUser, StoreError, UserStore},
};
use uuid::Uuid;

use super::backends::{contract_suite, join_all};

contract_suite! {
    cases: [
        an_inserted_user_is_found_by_its_email_in_any_case_and_spacing,
        an_unknown_email_finds_nobody,
        each_user_is_found_under_its_own_email,
        a_second_insert_of_the_same_normalised_email_is_email_taken,
        of_concurrent_inserts_of_one_email_exactly_one_succeeds,
        users_page_through_every_user_once_in_id_order,
        a_normalised_email_can_be_changed_but_not_to_one_that_is_taken,
        facts_are_created_once_and_swapped_only_from_their_current_value,
        maintenance_steps_are_recorded_once,
        ping_answers,
    ],
    fresh: { on_postgres => postgres, on_sqlite => sqlite },
}

/// How many inserts of one email race in the concurrency case.
const RACERS: usize = 8;

/// A new address in mixed case, so that only a lookup by the normalised email finds it.
fn unique_email() -> String {
    format!("Contract.User-{}@Example.COM", Uuid::new_v4().simple())
}

fn email(raw: &str) -> Email {
    Email::parse(raw).unwrap_or_else(|violation| panic!("{raw:?}: {violation}"))
}

/// A user with `email`, a display name and a PHC string of its own (so that a lookup returning
/// another user's hash shows).
fn new_user(raw_email: &str) -> NewUser {
    NewUser {
        id: UserId::generate(),
        email: email(raw_email),
        username: Username::parse("Contract User").unwrap(),
        password_hash: PasswordHashString::from_phc(format!(
            "$argon2id$v=19$m=19456,t=2,p=1${}${}",
            Uuid::new_v4().simple(),
            Uuid::new_v4().simple()
        )),
    }
}

async fn find(store: &dyn UserStore, raw_email: &str) -> Option<(UserId, PasswordHashString)> {
    store
        .find_credentials(&email(raw_email))
        .await
        .unwrap_or_else(|error| panic!("find_credentials({raw_email:?}): {error:?}"))
        .map(|found| (found.id, found.password_hash))
}

async fn an_inserted_user_is_found_by_its_email_in_any_case_and_spacing(store: &dyn UserStore) {
    let written = unique_email();
    let user = new_user(&written);
    store.insert(&user).await.expect("insert");
    for spelling in [
        written.clone(),
        written.to_lowercase(),
        written.to_uppercase(),
        format!("  {written}\n"),
    ] {
        assert_eq!(
            find(store, &spelling).await,
            Some((user.id, user.password_hash.clone())),
            "{spelling:?} finds the user with its id and hash"
        );
    }
}

async fn an_unknown_email_finds_nobody(store: &dyn UserStore) {
    assert_eq!(
        find(store, &unique_email()).await,
        None,
        "in an empty store"
    );
    store.insert(&new_user(&unique_email())).await.unwrap();
    assert_eq!(
        find(store, &unique_email()).await,
        None,
        "beside another user"
    );
}

async fn each_user_is_found_under_its_own_email(store: &dyn UserStore) {
    let first = new_user(&unique_email());
    let second = NewUser {
        // Without a display name (a NULL username).
        username: None,
        ..new_user(&unique_email())
    };
    store.insert(&first).await.expect("insert the first user");
    store.insert(&second).await.expect("insert the second user");
    for user in [&first, &second] {
        assert_eq!(
            find(store, user.email.as_str()).await,
            Some((user.id, user.password_hash.clone()))
        );
    }
}

async fn a_second_insert_of_the_same_normalised_email_is_email_taken(store: &dyn UserStore) {
    let written = unique_email();
    let first = new_user(&written);
    store.insert(&first).await.expect("the first insert");
    for spelling in [
        written.clone(),
        written.to_lowercase(),
        format!(" {} ", written.to_uppercase()),
    ] {
        let result = store.insert(&new_user(&spelling)).await;
        assert!(
            matches!(result, Err(StoreError::EmailTaken)),
            "inserting {spelling:?} again: {result:?}"
        );
    }
    assert_eq!(
        find(store, &written).await,
        Some((first.id, first.password_hash.clone())),
        "the refused inserts changed nothing"
    );
}

async fn of_concurrent_inserts_of_one_email_exactly_one_succeeds(store: &dyn UserStore) {
    let written = unique_email();
    // Spelled differently, the same normalised email.
    let users: Vec<NewUser> = (0..RACERS)
        .map(|i| match i % 3 {
            0 => new_user(&written),
            1 => new_user(&written.to_lowercase()),
            _ => new_user(&written.to_uppercase()),
        })
        .collect();
    let results = join_all(users.iter().map(|user| store.insert(user)).collect()).await;
    let mut winners = Vec::new();
    for (user, result) in users.iter().zip(results) {
        match result {
            Ok(()) => winners.push(user),
            Err(StoreError::EmailTaken) => {}
            Err(other) => panic!("a racing insert failed otherwise than EmailTaken: {other:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {RACERS} concurrent inserts succeeds"
    );
    assert_eq!(
        find(store, &written).await,
        Some((winners[0].id, winners[0].password_hash.clone())),
        "the stored user is the one whose insert succeeded"
    );
}

async fn ping_answers(store: &dyn UserStore) {
    store.ping().await.expect("ping");
}

async fn users_page_through_every_user_once_in_id_order(store: &dyn UserStore) {
    let mut inserted = Vec::new();
    for _ in 0..7 {
        let user = new_user(&unique_email());
        store.insert(&user).await.expect("insert");
        inserted.push(user.id);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.users_page(after, 3).await.expect("users_page");
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen.extend(page.into_iter().map(|stored| stored.id));
    }
    let mut sorted = seen.clone();
    sorted.sort_by_key(|id| id.to_string());
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "every user once");
    for id in &inserted {
        assert!(seen.contains(id), "{id} missing");
    }
}

async fn a_normalised_email_can_be_changed_but_not_to_one_that_is_taken(store: &dyn UserStore) {
    let first = new_user(&unique_email());
    let second = new_user(&unique_email());
    store.insert(&first).await.unwrap();
    store.insert(&second).await.unwrap();
    let moved = email(&unique_email());
    store
        .set_normalized_email(first.id, moved.normalized())
        .await
        .expect("a free identity");
    let found = store.find_credentials(&moved).await.unwrap().unwrap();
    assert_eq!(found.id, first.id);
    let taken = store
        .set_normalized_email(second.id, moved.normalized())
        .await
        .unwrap_err();
    assert!(matches!(taken, StoreError::EmailTaken), "{taken:?}");
    let still = store
        .find_credentials(&second.email)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still.id, second.id, "a refused change changes nothing");
}

async fn facts_are_created_once_and_swapped_only_from_their_current_value(store: &dyn UserStore) {
    let name = format!("contract-{}", Uuid::new_v4().simple());
    assert_eq!(store.fact(&name).await.unwrap(), None);
    assert!(store.replace_fact(&name, None, "one").await.unwrap());
    assert!(
        !store.replace_fact(&name, None, "other").await.unwrap(),
        "created once"
    );
    assert!(
        !store
            .replace_fact(&name, Some("wrong"), "two")
            .await
            .unwrap()
    );
    assert!(store.replace_fact(&name, Some("one"), "two").await.unwrap());
    assert_eq!(store.fact(&name).await.unwrap().as_deref(), Some("two"));
}

async fn maintenance_steps_are_recorded_once(store: &dyn UserStore) {
    let name = format!("contract-{}", Uuid::new_v4().simple());
    assert!(!store.maintenance_done(&name).await.unwrap());
    store.record_maintenance(&name, 1).await.unwrap();
    store
        .record_maintenance(&name, 2)
        .await
        .expect("recording again is fine");
    assert!(store.maintenance_done(&name).await.unwrap());
}
