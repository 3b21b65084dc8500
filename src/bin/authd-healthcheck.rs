//! `authd-healthcheck [--liveness] [ADDR]`: calls grpc.health.v1 Check for `auth.v1.AuthService`
//! and exits 0 only when it is SERVING (readiness: the back ends answer). With `--liveness` it
//! exits 0 whenever authd answers the Check at all, SERVING or NOT_SERVING, so an orchestrator
//! does not restart healthy processes during a back-end outage. The whole check has 2 s. For
//! container health checks; ADDR defaults to the port of AUTHD_LISTEN_ADDR on 127.0.0.1. When
//! authd serves TLS (AUTHD_TLS_CERT_FILE is set), the check does too: it trusts
//! AUTHD_HEALTHCHECK_CA_FILE, expects the name AUTHD_HEALTHCHECK_DOMAIN (default `localhost`) and,
//! under mutual TLS, presents AUTHD_HEALTHCHECK_CLIENT_CERT_FILE and
//! AUTHD_HEALTHCHECK_CLIENT_KEY_FILE (both or neither).

use std::{process::ExitCode, time::Duration};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut liveness = false;
    let mut address = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--liveness" => liveness = true,
            other if other.starts_with('-') || address.is_some() => {
                eprintln!("usage: authd-healthcheck [--liveness] [ADDR]");
                return ExitCode::from(2);
            }
            other => address = Some(other.to_owned()),
        }
    }
    let address = address.unwrap_or_else(default_address);
    // One deadline for everything (connect, TLS handshake, the call), below the 3 s probe
    // timeouts of the Kubernetes manifests: a peer that accepts and never answers fails it.
    let checked = tokio::time::timeout(CHECK_DEADLINE, check(&address))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {CHECK_DEADLINE:?}").into()));
    match checked {
        Ok(ServingStatus::Serving) => ExitCode::SUCCESS,
        // Alive, and saying it cannot serve (a back end is down): not a reason to restart it.
        Ok(ServingStatus::NotServing) if liveness => ExitCode::SUCCESS,
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

/// The longest the whole check may take.
const CHECK_DEADLINE: Duration = Duration::from_secs(2);

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
    let tls = std::env::var_os("AUTHD_TLS_CERT_FILE").is_some();
    let scheme = if tls { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    if tls {
        endpoint = endpoint.tls_config(client_tls()?)?;
    }
    let channel = endpoint.connect().await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: authd::api::health::SERVICE_NAME.into(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// The TLS client configuration from the AUTHD_HEALTHCHECK_* variables.
fn client_tls() -> Result<tonic::transport::ClientTlsConfig, Box<dyn std::error::Error>> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |name: &str| -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let path = std::env::var_os(name)
            .ok_or_else(|| format!("authd serves TLS: set {name} for the health check"))?;
        Ok(std::fs::read(&path)
            .map_err(|e| format!("{name}: cannot read {}: {e}", path.to_string_lossy()))?)
    };
    let domain =
        std::env::var("AUTHD_HEALTHCHECK_DOMAIN").unwrap_or_else(|_| "localhost".to_owned());
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("AUTHD_HEALTHCHECK_CA_FILE")?))
        .domain_name(domain);
    let certificate = std::env::var_os("AUTHD_HEALTHCHECK_CLIENT_CERT_FILE").is_some();
    let key = std::env::var_os("AUTHD_HEALTHCHECK_CLIENT_KEY_FILE").is_some();
    if certificate != key {
        return Err("set both AUTHD_HEALTHCHECK_CLIENT_CERT_FILE and AUTHD_HEALTHCHECK_CLIENT_KEY_FILE, or neither".into());
    }
    if certificate {
        tls = tls.identity(Identity::from_pem(
            read("AUTHD_HEALTHCHECK_CLIENT_CERT_FILE")?,
            read("AUTHD_HEALTHCHECK_CLIENT_KEY_FILE")?,
        ));
    }
    Ok(tls)
}
