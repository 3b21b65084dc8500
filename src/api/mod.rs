//! The gRPC edge: turns requests into domain types, calls one `AuthService` function, turns the
//! answer back into a response. `status` is the only place that picks gRPC codes; `edge` is the
//! tower layer around every service (time limit, transport errors); `health` feeds
//! grpc.health.v1; `bearer` and `source` read the token and the client address from metadata;
//! `ext_authz` serves Envoy's external authorization API; `watch` streams WatchRevocations.

pub(crate) mod bearer;
pub mod call_metrics;
mod call_trace;
mod edge;
pub mod ext_authz;
pub mod health;
mod source;
pub mod status;
mod watch;

pub use edge::EdgeLayer;

use std::sync::Arc;

use ipnet::IpNet;
use tonic::{Request, Response, Status};

use crate::{
    clock::UnixMillis,
    domain::{Credentials, FieldViolation, Password, Registration, SessionId, UserAgent},
    pb::{self, auth_service_server::AuthService as AuthServiceRpc},
    service::{AuthService, Client, Session},
    store::StoredSession,
    tokens::TokenClaims,
};

/// The tonic implementation of `auth.v1.AuthService`.
#[derive(Clone)]
pub struct AuthApi {
    service: Arc<AuthService>,
    /// Peers whose `x-forwarded-for` is believed.
    trusted_proxies: Arc<[IpNet]>,
    /// Turns true when the server starts draining: WatchRevocations streams end then.
    draining: tokio::sync::watch::Receiver<bool>,
}

impl AuthApi {
    /// Serves `service` over gRPC; open streams end when `draining` turns true.
    pub fn new(
        service: Arc<AuthService>,
        trusted_proxies: Vec<IpNet>,
        draining: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            service,
            trusted_proxies: trusted_proxies.into(),
            draining,
        }
    }

    /// Who is calling: the throttle's source address and the `user-agent`.
    fn client<T>(&self, request: &Request<T>) -> Client {
        Client {
            source: source::source_address(request, &self.trusted_proxies),
            user_agent: request
                .metadata()
                .get("user-agent")
                .and_then(|value| UserAgent::from_header(value.as_bytes())),
            trace_id: crate::telemetry::trace_id(
                request.metadata().get("traceparent").map(|v| v.as_bytes()),
            ),
        }
    }
}

/// A password field parsed as `parse` does, its violations renamed to `field`.
fn password_field(
    raw: &str,
    field: &'static str,
    parse: fn(&str) -> Result<Password, FieldViolation>,
) -> Result<Password, FieldViolation> {
    parse(raw).map_err(|violation| FieldViolation { field, ..violation })
}

#[tonic::async_trait]
impl AuthServiceRpc for AuthApi {
    type WatchRevocationsStream = watch::RevocationStream;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        watch::watch_revocations(&self.service, &request, self.draining.clone())
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let client = self.client(&request);
        let request = request.into_inner();
        let registration =
            Registration::parse(&request.email, &request.password, &request.username)
                .map_err(status::invalid_argument)?;
        let session = self
            .service
            .register(registration, &client)
            .await
            .map_err(status::from_service)?;
        Ok(Response::new(pb::RegisterResponse {
            user_id: session.user_id.to_string(),
            tokens: Some(auth_tokens(session)),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = self.client(&request);
        let request = request.into_inner();
        let credentials = Credentials::parse(&request.email, &request.password)
            .map_err(status::invalid_argument)?;
        let session = self
            .service
            .login(credentials, &client)
            .await
            .map_err(status::from_service)?;
        Ok(Response::new(pb::LoginResponse {
            user_id: session.user_id.to_string(),
            tokens: Some(auth_tokens(session)),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let client = self.client(&request);
        let (metadata, _, message) = request.into_parts();
        let token = bearer::token(&metadata, message.access_token);
        self.service
            .logout(token, &message.refresh_token, &client)
            .await
            .map_err(status::from_service)?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

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

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let client = self.client(&request);
        let session = self
            .service
            .refresh(&request.into_inner().refresh_token, &client)
            .await
            .map_err(status::from_service)?;
        Ok(Response::new(pb::RefreshResponse {
            user_id: session.user_id.to_string(),
            tokens: Some(auth_tokens(session)),
        }))
    }

    async fn logout_all(
        &self,
        request: Request<pb::LogoutAllRequest>,
    ) -> Result<Response<pb::LogoutAllResponse>, Status> {
        let client = self.client(&request);
        let token = bearer::token_from(request, |message| message.access_token);
        let sessions_ended = self
            .service
            .logout_all(token, &client)
            .await
            .map_err(status::from_service)?;
        Ok(Response::new(pb::LogoutAllResponse { sessions_ended }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let client = self.client(&request);
        let (metadata, _, message) = request.into_parts();
        let current = password_field(
            &message.current_password,
            "current_password",
            Password::parse_offered,
        );
        let new = password_field(&message.new_password, "new_password", Password::parse_new);
        let (current, new) = match (current, new) {
            (Ok(current), Ok(new)) => (current, new),
            (current, new) => {
                let violations = current.err().into_iter().chain(new.err()).collect();
                return Err(status::invalid_argument(violations));
            }
        };
        let token = bearer::token(&metadata, message.access_token);
        let session = self
            .service
            .change_password(token, current, new, &client)
            .await
            .map_err(status::from_service)?;
        Ok(Response::new(pb::ChangePasswordResponse {
            user_id: session.user_id.to_string(),
            tokens: Some(auth_tokens(session)),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let token = bearer::token_from(request, |message| message.access_token);
        let (sessions, current) = self
            .service
            .list_sessions(token)
            .await
            .map_err(status::from_service)?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|session| session_message(session, current))
                .collect(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let client = self.client(&request);
        let (metadata, _, message) = request.into_parts();
        let session_id = SessionId::parse(message.session_id.trim()).ok_or_else(|| {
            status::invalid_argument(vec![FieldViolation {
                field: "session_id",
                description: "must be a session id (UUID)".to_owned(),
            }])
        })?;
        let token = bearer::token(&metadata, message.access_token);
        self.service
            .revoke_session(token, session_id, &client)
            .await
            .map_err(status::from_service)?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let client = self.client(&request);
        let (metadata, _, message) = request.into_parts();
        let password = Password::parse_offered(&message.password)
            .map_err(|violation| status::invalid_argument(vec![violation]))?;
        let token = bearer::token(&metadata, message.access_token);
        self.service
            .delete_account(token, password, &client)
            .await
            .map_err(status::from_service)?;
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }
}

fn auth_tokens(session: Session) -> pb::AuthTokens {
    pb::AuthTokens {
        access_token: session.token.token.expose().to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in: session.expires_in,
        refresh_token: session.refresh_token.expose().to_owned(),
        refresh_expires_in: session.refresh_expires_in,
        session_id: session.session_id.to_string(),
    }
}

fn timestamp_ms(millis: UnixMillis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn session_message(session: StoredSession, current: Option<SessionId>) -> pb::Session {
    pb::Session {
        session_id: session.id.to_string(),
        created_at: Some(timestamp_ms(session.created_at)),
        last_used_at: Some(timestamp_ms(session.last_used_at)),
        expires_at: Some(timestamp_ms(session.idle_expires_at)),
        user_agent: session
            .user_agent
            .map(|agent| agent.as_str().to_owned())
            .unwrap_or_default(),
        source_address: session.source_address.unwrap_or_default(),
        current: current == Some(session.id),
    }
}

fn verify_response(claims: TokenClaims) -> pb::VerifyResponse {
    let timestamp = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
    pb::VerifyResponse {
        user_id: claims.user_id.to_string(),
        jti: claims.jti.to_string(),
        issued_at: Some(timestamp(claims.issued_at)),
        expires_at: Some(timestamp(claims.expires_at)),
        session_id: claims
            .session_id
            .map(|session| session.to_string())
            .unwrap_or_default(),
    }
}
