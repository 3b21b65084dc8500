//! Hostile requests: random protobuf bytes, invalid UTF-8, control characters in every field,
//! oversized metadata — always a clear status, never INTERNAL, UNKNOWN, a panic or a hang.

use std::time::Duration;

use bytes::{Buf as _, BufMut as _};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use tonic::{
    Code, Request, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};

use authd::pb;

use crate::common::{Backend, Fixture, PASSWORD, assert_status, spawn_app, violated_fields};

/// Sends and receives raw bytes, so the test can put anything on the wire.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug, Clone, Default)]
struct RawCoder;

impl Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = src.copy_to_bytes(src.remaining()).to_vec();
        Ok(Some(bytes))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;
    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }
    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

async fn raw_call(channel: &Channel, method: &str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path = PathAndQuery::try_from(format!("/auth.v1.AuthService/{method}")).unwrap();
    grpc.unary(Request::new(body), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

const METHODS: [&str; 4] = ["Register", "Login", "Logout", "Verify"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_protobuf_bytes_on_every_method_get_a_clear_client_error() {
    let Fixture { app, state: _state } = spawn_app(Backend::Embedded).await;
    let mut rng = StdRng::seed_from_u64(0x5eed_a07d);
    for method in METHODS {
        for _ in 0..150 {
            let len = rng.gen_range(0..300);
            let body: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            let answer = tokio::time::timeout(
                Duration::from_secs(10),
                raw_call(&app.channel, method, body),
            )
            .await
            .expect("no hang");
            // No random message is a valid registration, login or token: OK would be a bug.
            let status = answer.expect_err("random bytes must never be accepted");
            assert!(
                matches!(
                    status.code(),
                    Code::InvalidArgument | Code::Unauthenticated | Code::ResourceExhausted
                ),
                "{method}: {status:?}"
            );
        }
    }
    // The server is still healthy afterwards.
    app.new_user().await;
}

#[tokio::test]
async fn undecodable_messages_are_invalid_argument_with_a_reason() {
    let Fixture { app, state: _state } = spawn_app(Backend::Embedded).await;
    // Field 1 (email), length 2, invalid UTF-8; then a truncated field; then a bad wire type.
    for body in [
        vec![0x0a, 0x02, 0xff, 0xfe],
        vec![0x0a, 0x10, b'a'],
        vec![0x0f, 0x01],
    ] {
        for method in METHODS {
            let status = raw_call(&app.channel, method, body.clone())
                .await
                .unwrap_err();
            assert_status(&status, Code::InvalidArgument, Some("MALFORMED_REQUEST"));
        }
    }
}

#[tokio::test]
async fn control_characters_in_every_field_are_refused() {
    let Fixture { app, state: _state } = spawn_app(Backend::Embedded).await;
    let mut client = app.client.clone();
    for bad in ["\u{0}", "\u{7}", "\u{1b}[2J", "\u{7f}", "\n"] {
        let email = format!("user{bad}@example.com");
        let password = format!("{PASSWORD}{bad}");
        let username = format!("na{bad}me");
        for (request, field) in [
            (
                pb::RegisterRequest {
                    email: email.clone(),
                    password: PASSWORD.into(),
                    username: String::new(),
                },
                "email",
            ),
            (
                pb::RegisterRequest {
                    email: "ok@example.com".into(),
                    password: password.clone(),
                    username: String::new(),
                },
                "password",
            ),
            (
                pb::RegisterRequest {
                    email: "ok@example.com".into(),
                    password: PASSWORD.into(),
                    username: username.clone(),
                },
                "username",
            ),
        ] {
            let status = client
                .register(request)
                .await
                .expect_err(&format!("{field} with {bad:?}"));
            assert_status(&status, Code::InvalidArgument, Some("INVALID_ARGUMENT"));
            assert_eq!(violated_fields(&status), [field], "{bad:?}");
        }
        for (request, field) in [
            (
                pb::LoginRequest {
                    email: email.clone(),
                    password: PASSWORD.into(),
                },
                "email",
            ),
            (
                pb::LoginRequest {
                    email: "ok@example.com".into(),
                    password: password.clone(),
                },
                "password",
            ),
        ] {
            let status = client.login(request).await.unwrap_err();
            assert_status(&status, Code::InvalidArgument, Some("INVALID_ARGUMENT"));
            assert_eq!(violated_fields(&status), [field]);
        }
        let token = format!("a.b{bad}.c");
        let status = client
            .verify(pb::VerifyRequest {
                access_token: token.clone(),
            })
            .await
            .unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("TOKEN_INVALID"));
        let status = client
            .logout(pb::LogoutRequest {
                access_token: token,
                refresh_token: String::new(),
            })
            .await
            .unwrap_err();
        assert_status(&status, Code::Unauthenticated, Some("TOKEN_INVALID"));
    }
}

#[tokio::test]
async fn oversized_metadata_is_refused_without_harm() {
    let Fixture { app, state: _state } = spawn_app(Backend::Embedded).await;
    let mut request = Request::new(pb::VerifyRequest::default());
    let huge = format!("Bearer {}", "a".repeat(64 * 1024));
    request
        .metadata_mut()
        .insert("authorization", huge.parse().unwrap());
    // The HTTP/2 layer refuses the header block (GOAWAY ENHANCE_YOUR_CALM) before any handler
    // runs; tonic reports that to the client as RESOURCE_EXHAUSTED.
    let status = app.client.clone().verify(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // The server keeps serving.
    app.new_user().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_running_past_the_request_timeout_are_deadline_exceeded() {
    let state = crate::common::TestState::new(Backend::Embedded).await;
    let app = state
        .app()
        .args(["--request-timeout=100ms", "--hash-concurrency=1"])
        .start()
        .await;
    let app = std::sync::Arc::new(app);
    // Twenty registrations queue behind one hashing thread: the later ones outlive 100 ms.
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                app.register(&format!("slow{i}@example.com"), PASSWORD)
                    .await
            })
        })
        .collect();
    let mut timed_out = 0;
    for call in calls {
        if let Err(status) = call.await.unwrap() {
            assert_status(&status, Code::DeadlineExceeded, Some("TIMEOUT"));
            timed_out += 1;
        }
    }
    assert!(timed_out > 0, "no call outlived the 100 ms limit");
    // Quick calls are unaffected.
    assert_status(
        &app.verify("").await.unwrap_err(),
        Code::Unauthenticated,
        Some("TOKEN_MISSING"),
    );
}
