//! Argon2 load shedding: a Login flood is shed with RESOURCE_EXHAUSTED once the hashing queue is
//! full, and Verify, which never touches argon2, keeps answering quickly meanwhile.

use std::{sync::Arc, time::Duration};

use tonic::Code;
use tonic_types::StatusExt as _;

use crate::common::{Backend, TestState, assert_status, exclusive_cpu};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_shed_and_verify_does_not_wait_behind_argon2() {
    let _cpu = exclusive_cpu().await;
    let state = TestState::new(Backend::Embedded).await;
    let app = state
        .app()
        .args([
            "--hash-concurrency=1",
            "--hash-queue=64",
            "--source-max-failures=0",
        ])
        .start()
        .await;
    let app = Arc::new(app);
    let (_, _, token) = app.new_user().await;

    let flood: Vec<_> = (0..300)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                app.login(&format!("flood{i}@example.com"), "wrong password!")
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut verify_latencies = Vec::new();
    for _ in 0..100 {
        let started = std::time::Instant::now();
        app.verify(&token)
            .await
            .expect("Verify keeps serving during a Login flood");
        verify_latencies.push(started.elapsed());
    }

    let (mut refused, mut shed) = (0, 0);
    for login in flood {
        let status = login.await.unwrap().unwrap_err();
        match status.code() {
            Code::Unauthenticated => refused += 1,
            Code::ResourceExhausted => {
                assert_status(&status, Code::ResourceExhausted, Some("OVERLOADED"));
                assert!(
                    status.get_error_details().retry_info().is_some(),
                    "{status:?}"
                );
                shed += 1;
            }
            _ => panic!("unexpected answer under load: {status:?}"),
        }
    }
    assert!(
        shed > 0,
        "300 concurrent logins against 1 thread + 64 queued must shed some"
    );
    assert!(
        refused >= 65,
        "the queue's worth of logins must still be served ({refused})"
    );

    verify_latencies.sort();
    let p99 = verify_latencies[98];
    assert!(
        p99 < Duration::from_millis(250),
        "Verify p99 {p99:?} during the flood"
    );
}
