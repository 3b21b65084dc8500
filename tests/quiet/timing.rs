//! Timing: an unknown email and a wrong password cost the same (no account enumeration by
//! timing).

use tonic::Code;

use crate::common::{Backend, TestState, assert_status, exclusive_cpu};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_and_wrong_password_take_the_same_time() {
    let _cpu = exclusive_cpu().await;
    for backend in [Backend::Postgres, Backend::Embedded] {
        let state = TestState::new(backend).await;
        // Throttling would step in long before the samples are taken: switch it off here.
        let app = state
            .app()
            .args([
                "--login-failures-before-backoff=100000",
                "--source-max-failures=0",
                "--account-max-failures=0",
            ])
            .start()
            .await;
        let (email, _, _) = app.new_user().await;
        let mut unknown = Vec::new();
        let mut wrong = Vec::new();
        for round in 0..40 {
            // Alternate the order so that drift in machine load hits both sides alike.
            for kind in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                let started = std::time::Instant::now();
                let status = if kind == 0 {
                    app.login(&format!("ghost{round}@example.com"), "wrong password!")
                        .await
                } else {
                    app.login(&email, "wrong password!").await
                }
                .unwrap_err();
                let elapsed = started.elapsed();
                assert_status(&status, Code::Unauthenticated, Some("INVALID_CREDENTIALS"));
                if kind == 0 {
                    unknown.push(elapsed)
                } else {
                    wrong.push(elapsed)
                }
            }
        }
        let median = |samples: &mut Vec<std::time::Duration>| {
            samples.sort();
            samples[samples.len() / 2].as_secs_f64()
        };
        let (unknown, wrong) = (median(&mut unknown), median(&mut wrong));
        let gap = (unknown - wrong).abs() / unknown.max(wrong);
        eprintln!(
            "{backend:?}: median unknown email {:.1} ms, wrong password {:.1} ms",
            unknown * 1e3,
            wrong * 1e3
        );
        assert!(
            gap < 0.10,
            "{backend:?}: median unknown email {:.1} ms, wrong password {:.1} ms ({:.0}% apart)",
            unknown * 1e3,
            wrong * 1e3,
            gap * 100.0
        );
    }
}
