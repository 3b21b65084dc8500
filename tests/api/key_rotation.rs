//! Signing-key rotation with two instances running on one keys directory: a rotated key is
//! published at once and signs after its lead time on both instances alike; tokens of the old
//! key keep verifying until they expire; a pruned key's tokens are TOKEN_INVALID; a broken file
//! keeps the keys in use.

use std::{sync::Arc, time::Duration};

use authd::{
    clock::{Clock as _, ManualClock},
    tokens::directory::KeyDirectory,
};
use tonic::Code;

use crate::common::{Backend, TestApp, TestState, assert_status, eventually};

const RELOAD: &str = "--signing-keys-reload-interval=100ms";
/// Access-token TTL (15m) plus the clock leeway (5s).
const TOKEN_LIFETIME: Duration = Duration::from_secs(905);

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("a JWT")
        .kid
        .expect("a kid")
}

async fn published_kids(app: &TestApp) -> Vec<String> {
    let jwks = app.http().get("/.well-known/jwks.json").await.json();
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key["kid"].as_str().expect("kid").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_published_then_signs_on_every_instance_and_the_old_one_verifies_until_pruned()
 {
    let state = TestState::new(Backend::Postgres).await;
    let keys_dir = state.data_dir.path().join("shared-keys");
    let clock = Arc::new(ManualClock::starting_now());
    let start = || {
        state
            .app()
            .clock(clock.clone())
            .arg(format!("--signing-keys-dir={}", keys_dir.display()))
            .arg(RELOAD)
            .start()
    };
    let a = start().await;
    let b = start().await;
    let (_, _, old_token) = a.new_user().await;
    let old_kid = kid_of(&old_token);
    assert_eq!(published_kids(&a).await, std::slice::from_ref(&old_kid));

    let directory = KeyDirectory::new(&keys_dir);
    let next = directory
        .rotate(clock.now(), Duration::from_secs(600))
        .unwrap();
    assert_ne!(next.kid, old_kid);
    for app in [&a, &b] {
        let published = eventually(Duration::from_secs(5), || async {
            let mut kids = published_kids(app).await;
            kids.sort();
            let mut both = vec![old_kid.clone(), next.kid.clone()];
            both.sort();
            kids == both
        })
        .await;
        assert!(
            published,
            "the next key is published at once, beside the active one"
        );
        // Published, not signing yet.
        let (_, _, token) = app.new_user().await;
        assert_eq!(kid_of(&token), old_kid);
    }

    // The lead time passes: both instances sign with the new key, and both verify either.
    clock.advance(Duration::from_secs(600));
    let (_, _, token_a) = a.new_user().await;
    let (_, _, token_b) = b.new_user().await;
    assert_eq!(kid_of(&token_a), next.kid);
    assert_eq!(kid_of(&token_b), next.kid);
    for app in [&a, &b] {
        app.verify(&old_token).await.expect("the old key's token");
        app.verify(&token_a).await.unwrap();
        app.verify(&token_b).await.unwrap();
    }

    // Nothing to prune while the old key's last token can still be valid.
    assert!(
        directory
            .prune(clock.now(), TOKEN_LIFETIME)
            .unwrap()
            .is_empty()
    );
    clock.advance(TOKEN_LIFETIME + Duration::from_secs(1));
    let removed = directory.prune(clock.now(), TOKEN_LIFETIME).unwrap();
    assert_eq!(
        removed.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(),
        std::slice::from_ref(&old_kid)
    );
    for app in [&a, &b] {
        let pruned = eventually(Duration::from_secs(5), || async {
            published_kids(app).await == [next.kid.clone()]
        })
        .await;
        assert!(pruned, "the pruned key is no longer published");
        // Even though it was verified (and remembered) before: TOKEN_INVALID, not EXPIRED.
        let status = app.verify(&old_token).await.unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("TOKEN_INVALID"));
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_key_file_keeps_the_keys_in_use() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().arg(RELOAD).start().await;
    let (_, _, token) = app.new_user().await;
    let keys_dir = state.data_dir.path().join("keys");
    std::fs::write(keys_dir.join("key-1-broken.pem"), "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    app.verify(&token).await.expect("the keys in use stay");
    assert_eq!(published_kids(&app).await, [kid_of(&token)]);
    let (_, _, fresh) = app.new_user().await;
    assert_eq!(kid_of(&fresh), kid_of(&token));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_of_an_earlier_version_is_adopted_and_its_tokens_still_verify() {
    let state = TestState::new(Backend::Embedded).await;
    let legacy = state.data_dir.path().join("signing-key.pem");
    let (key, generated) = authd::tokens::load_or_generate_ed25519_key(&legacy).unwrap();
    assert!(generated);
    let app = state.app().start().await;
    let (_, _, token) = app.new_user().await;
    let jwks = app.http().get("/.well-known/jwks.json").await.json();
    let x = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        key.verifying_key().as_bytes(),
    );
    assert_eq!(jwks["keys"][0]["x"], x, "the earlier key signs");
    assert_eq!(jwks["keys"][0]["kid"], kid_of(&token));
    app.stop().await;
}
