//! The gRPC edge: turns requests into domain types, calls one `AuthService` function, turns the
//! answer back into a response. `status` is the only place that picks gRPC codes; `edge` is the
//! tower layer around every service (time limit, transport errors); `health` feeds
//! grpc.health.v1; `bearer` and `source` read the token and the client address from metadata.

mod bearer;
mod edge;
pub mod health;
mod source;
pub mod status;

pub use edge::EdgeLayer;

use std::sync::Arc;

use ipnet::IpNet;
use tonic::{Request, Response, Status};

use crate::{
    domain::{Credentials, Registration},
    pb::{self, auth_service_server::AuthService as AuthServiceRpc},
    service::{AuthService, Session},
    tokens::TokenClaims,
};

/// The tonic implementation of `auth.v1.AuthService`.
#[derive(Clone)]
pub struct AuthApi {
    service: Arc<AuthService>,
    /// Peers whose `x-forwarded-for` is believed.
    trusted_proxies: Arc<[IpNet]>,
}

impl AuthApi {
    /// Serves `service` over gRPC.
    pub fn new(service: Arc<AuthService>, trusted_proxies: Vec<IpNet>) -> Self {
        Self {
            service,
            trusted_proxies: trusted_proxies.into(),
        }
    }
}

#[tonic::async_trait]
impl AuthServiceRpc for AuthApi {
    #[tracing::instrument(name = "Register", level = "debug", skip_all)]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let source = source::source_address(&request, &self.trusted_proxies);
        let request = request.into_inner();
        let registration =
            Registration::parse(&request.email, &request.password, &request.username)
                .map_err(status::invalid_argument)?;
        let session = self
            .service
            .register(registration, source)
            .await
            .map_err(status::from_service)?;
        Ok(Response::new(pb::RegisterResponse {
            user_id: session.user_id.to_string(),
            tokens: Some(auth_tokens(session)),
        }))
    }

    #[tracing::instrument(name = "Login", level = "debug", skip_all)]
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let source = source::source_address(&request, &self.trusted_proxies);
        let request = request.into_inner();
        let credentials = Credentials::parse(&request.email, &request.password)
            .map_err(status::invalid_argument)?;
        let session = self
            .service
            .login(credentials, source)
            .await
            .map_err(status::from_service)?;
        Ok(Response::new(pb::LoginResponse {
            user_id: session.user_id.to_string(),
            tokens: Some(auth_tokens(session)),
        }))
    }

    #[tracing::instrument(name = "Logout", level = "debug", skip_all)]
    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let token = bearer::token_from(request, |message| message.access_token);
        self.service
            .logout(token)
            .await
            .map_err(status::from_service)?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    #[tracing::instrument(name = "Verify", level = "debug", skip_all)]
    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let token = bearer::token_from(request, |message| message.access_token);
        let claims = self
            .service
            .verify(token)
            .await
            .map_err(status::from_service)?;
        Ok(Response::new(verify_response(claims)))
    }
}

fn auth_tokens(session: Session) -> pb::AuthTokens {
    pb::AuthTokens {
        access_token: session.token.token.expose().to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in: session.expires_in,
    }
}

fn verify_response(claims: TokenClaims) -> pb::VerifyResponse {
    let timestamp = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
    pb::VerifyResponse {
        user_id: claims.user_id.to_string(),
        jti: claims.jti.to_string(),
        issued_at: Some(timestamp(claims.issued_at)),
        expires_at: Some(timestamp(claims.expires_at)),
    }
}
