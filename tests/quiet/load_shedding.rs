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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_leaves_logins_their_capacity() {
    let _cpu = exclusive_cpu().await;
    // Postgres + Redis, as deployed: what is measured is argon2 capacity, not SQLite's single
    // writer (the embedded default serialises every insert).
    let state = TestState::new(Backend::Postgres).await;
    let app = state
        .app()
        .args([
            "--hash-concurrency=2",
            "--hash-queue=16",
            "--source-max-registrations=0",
            "--source-max-failures=0",
        ])
        .start()
        .await;
    let app = Arc::new(app);
    let (email, _, _) = app.new_user().await;
    let taken = Arc::new(email.clone());
    // 80 clients re-registering one taken email as fast as they can for the length of the test
    // (the attack that used to cost one argon2 hash each and shed 54 of 55 logins).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..80)
        .map(|_| {
            let (app, stop, taken) = (app.clone(), stop.clone(), taken.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = app.register(&taken, crate::common::PASSWORD).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 55 legitimate logins, five at a time, while the flood runs.
    let mut ok = 0;
    for batch in 0..11 {
        let logins: Vec<_> = (0..5)
            .map(|_| {
                let (app, email) = (app.clone(), email.clone());
                tokio::spawn(async move { app.login(&email, crate::common::PASSWORD).await })
            })
            .collect();
        for login in logins {
            match login.await.unwrap() {
                Ok(_) => ok += 1,
                Err(status) => eprintln!("batch {batch}: {status:?}"),
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in flood {
        client.await.unwrap();
    }
    eprintln!("{ok} of 55 logins OK during a registration flood");
    assert!(
        ok * 100 >= 55 * 90,
        "{ok} of 55 logins OK during a registration flood"
    );
}
