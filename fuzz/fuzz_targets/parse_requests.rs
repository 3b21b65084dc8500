//! Any bytes, as each request message (prost), then the API's own parsing of every message that
//! decodes: Register (Email::parse, Password::parse_new, Username::parse, check_strength against
//! the user's email and name), Login (Email::parse, Password::parse_offered), Logout and Verify
//! (AccessToken::new, then verification). Nothing may panic.
//!
//! `AUTHD_FUZZ_WRITE_SEEDS=corpus/parse_requests` writes encoded requests there at start-up.

#![no_main]

use authd::pb;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(
    init: {
        if let Some(dir) = std::env::var_os("AUTHD_FUZZ_WRITE_SEEDS") {
            authd_fuzz::write_request_seeds(dir.as_ref()).expect("cannot write the seed requests");
        }
        authd_fuzz::authorities();
    },
    |data: &[u8]| {
        if let Ok(request) = pb::RegisterRequest::decode(data) {
            authd_fuzz::check_register(&request);
        }
        if let Ok(request) = pb::LoginRequest::decode(data) {
            authd_fuzz::check_login(&request);
        }
        if let Ok(request) = pb::LogoutRequest::decode(data) {
            authd_fuzz::check_token_field(&request.access_token);
        }
        if let Ok(request) = pb::VerifyRequest::decode(data) {
            authd_fuzz::check_token_field(&request.access_token);
        }
    }
);
