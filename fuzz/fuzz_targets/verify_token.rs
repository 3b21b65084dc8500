//! Any bytes, as a (UTF-8-lossy) access token: `AccessToken::new`, then `decode` and `verify` on an
//! EdDSA and an HS256 authority. Nothing may panic, `verify` must equal `decode` + `check_time`,
//! and no token may be accepted by both authorities.
//!
//! `AUTHD_FUZZ_WRITE_SEEDS=corpus/verify_token` writes fresh genuine tokens there at start-up.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        if let Some(dir) = std::env::var_os("AUTHD_FUZZ_WRITE_SEEDS") {
            authd_fuzz::write_token_seeds(dir.as_ref()).expect("cannot write the seed tokens");
        }
        authd_fuzz::authorities();
    },
    |data: &[u8]| {
        let raw = String::from_utf8_lossy(data);
        authd_fuzz::check_token(&raw, authd_fuzz::NOW);
    }
);
