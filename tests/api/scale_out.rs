//! Scale-out: several stateless instances on one Postgres and one Redis (single or Cluster).

use tonic::Code;

use crate::common::{
    Backend, PASSWORD, TestApp, TestState, assert_status, cluster::RedisCluster, redis_url,
};

async fn two_instances(state: &TestState, redis: &str) -> (TestApp, TestApp) {
    let a = state.app().redis_url(Some(redis)).start().await;
    let b = state.app().redis_url(Some(redis)).start().await;
    (a, b)
}

async fn register_on_a_login_on_b_logout_on_a_revoked_on_b(a: &TestApp, b: &TestApp) {
    let (email, user_id, token) = a.new_user().await;
    let login = b
        .login(&email, PASSWORD)
        .await
        .expect("B knows a user registered on A");
    assert_eq!(login.user_id, user_id);
    let b_token = login.tokens.unwrap().access_token;
    assert_eq!(a.verify(&b_token).await.unwrap().user_id, user_id);
    a.logout(&token).await.unwrap();
    // Strict mode: the very next Verify on the other instance sees the revocation.
    assert_status(
        &b.verify(&token).await.unwrap_err(),
        Code::Unauthenticated,
        Some("TOKEN_REVOKED"),
    );
    b.verify(&b_token)
        .await
        .expect("the other token stays valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_users_and_revocations_through_postgres_and_redis() {
    let state = TestState::new(Backend::Postgres).await;
    let (a, b) = two_instances(&state, &redis_url()).await;
    register_on_a_login_on_b_logout_on_a_revoked_on_b(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_work_on_a_three_master_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let state = TestState::new(Backend::Postgres).await;
    let (a, b) = two_instances(&state, &cluster.url()).await;
    register_on_a_login_on_b_logout_on_a_revoked_on_b(&a, &b).await;

    // Revocations spread over the slots, hence over the masters, and each is seen by B.
    let mut tokens = Vec::new();
    for _ in 0..24 {
        let (_, _, token) = a.new_user().await;
        a.logout(&token).await.unwrap();
        tokens.push(token);
    }
    for token in &tokens {
        assert_status(
            &b.verify(token).await.unwrap_err(),
            Code::Unauthenticated,
            Some("TOKEN_REVOKED"),
        );
    }
    let pattern = format!("{}revoked:*", state.redis_prefix);
    let per_node = cluster.keys_per_node(&pattern);
    assert_eq!(per_node.iter().sum::<usize>(), 25, "{per_node:?}");
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "keys all on one node: {per_node:?}"
    );

    // Login throttling works across slots too.
    let (email, _, _) = a.new_user().await;
    for _ in 0..5 {
        b.login(&email, "wrong password!").await.unwrap_err();
    }
    let status = a.login(&email, PASSWORD).await.unwrap_err();
    assert_status(&status, Code::ResourceExhausted, Some("LOGIN_THROTTLED"));
}
