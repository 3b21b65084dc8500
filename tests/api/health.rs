//! grpc.health.v1 and server reflection, as grpcurl and load balancers use them.

use std::time::Duration;

use tokio_stream::StreamExt as _;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::{
    backend_tests,
    common::{Backend, Fixture, TestState, eventually, spawn_app},
};

backend_tests!(
    health_is_serving_overall_and_for_the_auth_service,
    reflection_lists_the_auth_and_health_services,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_can_be_turned_off() {
    let state = TestState::new(Backend::Embedded).await;
    let app = state.app().arg("--reflection=false").start().await;
    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let status = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect_err("no reflection service");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    // The API itself is still served.
    app.new_user().await;
}

async fn health_is_serving_overall_and_for_the_auth_service(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    for service in ["", "auth.v1.AuthService"] {
        let serving = eventually(Duration::from_secs(5), || {
            let mut health = app.health.clone();
            async move {
                let request = HealthCheckRequest { service: service.into() };
                matches!(health.check(request).await, Ok(r) if r.get_ref().status() == ServingStatus::Serving)
            }
        })
        .await;
        assert!(serving, "{service:?} is not SERVING");
    }
}

async fn reflection_lists_the_auth_and_health_services(backend: Backend) {
    let Fixture { app, state: _state } = spawn_app(backend).await;
    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["auth.v1.AuthService", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}
