//! Access-token micro-benchmarks: issue, a cold verify (signature, header, claims and time), and
//! what the Verify RPC does with the verified-token cache, on a hit and on a miss. Each runs with
//! Ed25519 (the default) and HS256. Revocation (a Redis or SQL round trip) is not included.
//!
//! ```sh
//! cargo bench --bench tokens
//! ```

use std::{hint::black_box, time::Duration};

use authd::{
    clock::UnixSeconds,
    domain::{AccessToken, SessionId, UserId},
    tokens::{
        DEFAULT_VERIFY_CACHE_ENTRIES as DEFAULT_CAPACITY, SigningKeyMaterial, TokenAuthority,
        VerifiedTokenCache,
    },
};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;

/// The server's allocator, so that allocation costs match production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A fixed "now"; tokens are issued and verified at it.
const NOW: UnixSeconds = 1_700_000_000;

fn authorities() -> [(&'static str, TokenAuthority); 2] {
    let authority = |key| {
        TokenAuthority::new(
            key,
            "https://auth.example.com",
            "https://api.example.com",
            Duration::from_secs(900),
            Duration::from_secs(5),
        )
        .expect("token authority")
    };
    [
        (
            "EdDSA",
            authority(SigningKeyMaterial::Ed25519(SigningKey::from_bytes(
                &[7; 32],
            ))),
        ),
        (
            "HS256",
            authority(SigningKeyMaterial::Hs256(
                "authd-bench-hs256-secret-0123456789abcdef"
                    .to_owned()
                    .into(),
            )),
        ),
    ]
}

fn issue(authority: &TokenAuthority) -> AccessToken {
    authority
        .issue(UserId::generate(), SessionId::generate(), NOW)
        .expect("issue")
        .token
}

/// `get_or_decode` then `check_time`, as in `AuthService::verify` before revocation.
fn verify_cached(
    cache: &VerifiedTokenCache,
    authority: &TokenAuthority,
    token: &AccessToken,
) -> UserId {
    let decoded = cache
        .get_or_decode(token, |t| authority.decode(t))
        .expect("decode");
    authority.check_time(&decoded, NOW).expect("in time");
    decoded.claims.user_id
}

fn token_benches(c: &mut Criterion) {
    let authorities = authorities();

    let mut group = c.benchmark_group("token_issue");
    for (name, authority) in &authorities {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                authority.issue(
                    black_box(UserId::generate()),
                    SessionId::generate(),
                    black_box(NOW),
                )
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("token_verify_cold");
    for (name, authority) in &authorities {
        let token = issue(authority);
        authority.verify(&token, NOW).expect("valid token");
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| authority.verify(black_box(&token), black_box(NOW)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("token_verify_cached_hit");
    for (name, authority) in &authorities {
        let token = issue(authority);
        let cache = VerifiedTokenCache::new(DEFAULT_CAPACITY);
        verify_cached(&cache, authority, &token);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| verify_cached(&cache, authority, black_box(&token)))
        });
    }
    group.finish();

    // A token not yet in the cache: hash, look up, decode, insert, check time. The fresh token is
    // issued in untimed setup; once the cache is full, each insert also evicts.
    let mut group = c.benchmark_group("token_verify_cached_miss");
    for (name, authority) in &authorities {
        let cache = VerifiedTokenCache::new(DEFAULT_CAPACITY);
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched(
                || issue(authority),
                |token| verify_cached(&cache, authority, &token),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, token_benches);
criterion_main!(benches);
