//! Password micro-benchmarks: one argon2id hash (Register) and one verification (Login), each
//! through `PasswordHasher`, so the figures include the hand-off to a hashing thread (which runs
//! at lowered OS priority) and back. argon2 with OWASP's parameters takes tens of milliseconds, so
//! few samples are taken.
//!
//! ```sh
//! cargo bench --bench password
//! ```

use std::{hint::black_box, time::Duration};

use authd::{
    domain::Password,
    hashing::{HashingLimits, PasswordHasher, PasswordParams},
};
use criterion::{Criterion, criterion_group, criterion_main};

/// The server's allocator, so that allocation costs match production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn password_benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let hasher = PasswordHasher::new(
        HashingLimits {
            concurrency: 1,
            queue: 8,
        },
        PasswordParams::default(),
    )
    .expect("password hasher");
    let password = Password::parse_new("correct horse battery staple").expect("password");
    let stored = runtime
        .block_on(hasher.hash(password.clone()))
        .expect("hash");
    assert!(
        runtime
            .block_on(hasher.verify(password.clone(), Some(stored.clone())))
            .expect("verify"),
        "the password must match its own hash"
    );

    let mut group = c.benchmark_group("password");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    group.bench_function("hash", |b| {
        b.to_async(&runtime)
            .iter(|| hasher.hash(black_box(password.clone())))
    });
    group.bench_function("verify", |b| {
        b.to_async(&runtime)
            .iter(|| hasher.verify(black_box(password.clone()), black_box(Some(stored.clone()))))
    });
    group.finish();
}

criterion_group!(benches, password_benches);
criterion_main!(benches);
