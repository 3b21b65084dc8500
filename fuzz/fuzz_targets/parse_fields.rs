//! The request fields as arbitrary strings, straight into the API's parsing (no protobuf layer in
//! between, so the fuzzer spends its time on the strings): the same checks as `parse_requests`.

#![no_main]

use arbitrary::Arbitrary;
use authd::pb;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Fields {
    email: String,
    password: String,
    username: String,
    access_token: String,
}

fuzz_target!(|fields: Fields| {
    let Fields {
        email,
        password,
        username,
        access_token,
    } = fields;
    authd_fuzz::check_login(&pb::LoginRequest {
        email: email.clone(),
        password: password.clone(),
    });
    authd_fuzz::check_register(&pb::RegisterRequest {
        email,
        password,
        username,
    });
    authd_fuzz::check_token_field(&access_token);
});
