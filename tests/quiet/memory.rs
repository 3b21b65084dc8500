//! Password hashing memory stays bounded: each hashing thread reuses one argon2 buffer, so many
//! registrations do not grow the process (with a fresh 19 MiB allocation per hash, glibc grew the
//! heap by about that much per hash).

use crate::common::{Backend, TestState, exclusive_cpu};

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_registrations_do_not_grow_memory_by_more_than_the_hashing_buffers() {
    let _cpu = exclusive_cpu().await;
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().arg("--hash-concurrency=2").start().await;
    // Warm up: both hashing threads have touched their buffers.
    for _ in 0..4 {
        app.new_user().await;
    }
    let before = resident_kib();
    for _ in 0..50 {
        app.new_user().await;
    }
    let grown_mib = resident_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 40,
        "50 registrations grew the process by {grown_mib} MiB"
    );
}
