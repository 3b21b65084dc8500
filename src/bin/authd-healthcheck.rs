//! `authd-healthcheck [ADDR]`: calls grpc.health.v1 Check for `auth.v1.AuthService` and exits 0
//! only when it is SERVING. For container health checks; ADDR defaults to the port of
//! AUTHD_LISTEN_ADDR on 127.0.0.1.

use std::{process::ExitCode, time::Duration};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let address = std::env::args().nth(1).unwrap_or_else(default_address);
    match check(&address).await {
        Ok(ServingStatus::Serving) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("authd at {address}: {}", status.as_str_name());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("authd at {address}: {error}");
            ExitCode::FAILURE
        }
    }
}

fn default_address() -> String {
    let listen = std::env::var("AUTHD_LISTEN_ADDR")
        .unwrap_or_else(|_| authd::config::DEFAULT_LISTEN_ADDR.into());
    let port = listen
        .rsplit_once(':')
        .map_or("50051", |(_, port)| port)
        .to_owned();
    format!("127.0.0.1:{port}")
}

async fn check(address: &str) -> Result<ServingStatus, Box<dyn std::error::Error>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: authd::api::health::SERVICE_NAME.into(),
        })
        .await?;
    Ok(response.into_inner().status())
}
