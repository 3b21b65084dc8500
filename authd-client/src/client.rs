//! `AuthClient`: every AuthService RPC, typed, over one reusable channel.

use std::time::Duration;

use tonic::{
    Request, Response, Status, Streaming,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

use crate::pb::{self, auth_service_client::AuthServiceClient};

/// Where calls that take an access token carry it. authd reads the message field first, then
/// `authorization: Bearer` metadata, so both work; metadata keeps the token out of message logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenPlacement {
    /// In the message's `access_token` field.
    #[default]
    Field,
    /// In `authorization: Bearer <token>` metadata, the field left empty.
    Bearer,
}

/// A typed client for authd's AuthService. Cloning is cheap and shares the connection.
#[derive(Debug, Clone)]
pub struct AuthClient {
    inner: AuthServiceClient<Channel>,
    placement: TokenPlacement,
}

impl AuthClient {
    /// Connects to authd's gRPC address (`http://host:port`, or `https://` with TLS).
    pub async fn connect(address: impl Into<String>) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(address.into())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(Self::new(channel))
    }

    /// A client over a channel the caller built (TLS, timeouts, load balancing as it needs).
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: AuthServiceClient::new(channel),
            placement: TokenPlacement::Field,
        }
    }

    /// Sends access tokens as `placement` says from now on.
    pub fn with_token_placement(mut self, placement: TokenPlacement) -> Self {
        self.placement = placement;
        self
    }

    /// The generated client, for anything this one does not wrap (per-call metadata, say).
    pub fn raw(&self) -> AuthServiceClient<Channel> {
        self.inner.clone()
    }

    /// Puts `token` where the placement says: returns the field's value and the request.
    fn carrying<T>(
        &self,
        token: &str,
        message: impl FnOnce(String) -> T,
    ) -> Result<Request<T>, Status> {
        match self.placement {
            TokenPlacement::Field => Ok(Request::new(message(token.to_owned()))),
            TokenPlacement::Bearer => {
                let mut request = Request::new(message(String::new()));
                request
                    .metadata_mut()
                    .insert("authorization", bearer(token)?);
                Ok(request)
            }
        }
    }

    /// Register: a new account. `username` may be empty.
    pub async fn register(
        &self,
        email: &str,
        password: &str,
        username: &str,
    ) -> Result<pb::RegisterResponse, Status> {
        let request = pb::RegisterRequest {
            email: email.to_owned(),
            password: password.to_owned(),
            username: username.to_owned(),
        };
        Ok(self.inner.clone().register(request).await?.into_inner())
    }

    /// Login: an access token, a refresh token and a new session.
    pub async fn login(&self, email: &str, password: &str) -> Result<pb::LoginResponse, Status> {
        let request = pb::LoginRequest {
            email: email.to_owned(),
            password: password.to_owned(),
        };
        Ok(self.inner.clone().login(request).await?.into_inner())
    }

    /// Logout: revokes the access token and ends its session (the refresh token, if given,
    /// with it).
    pub async fn logout(&self, access_token: &str, refresh_token: &str) -> Result<(), Status> {
        let request = self.carrying(access_token, |access_token| pb::LogoutRequest {
            access_token,
            refresh_token: refresh_token.to_owned(),
        })?;
        self.inner.clone().logout(request).await?;
        Ok(())
    }

    /// Verify: who the token speaks for, if it is valid and not revoked.
    pub async fn verify(&self, access_token: &str) -> Result<pb::VerifyResponse, Status> {
        let request = self.carrying(access_token, |access_token| pb::VerifyRequest {
            access_token,
        })?;
        Ok(self.inner.clone().verify(request).await?.into_inner())
    }

    /// Refresh: rotates the refresh token, with a new access token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<pb::RefreshResponse, Status> {
        let request = pb::RefreshRequest {
            refresh_token: refresh_token.to_owned(),
        };
        Ok(self.inner.clone().refresh(request).await?.into_inner())
    }

    /// LogoutAll: ends every session of the token's user.
    pub async fn logout_all(&self, access_token: &str) -> Result<pb::LogoutAllResponse, Status> {
        let request = self.carrying(access_token, |access_token| pb::LogoutAllRequest {
            access_token,
        })?;
        Ok(self.inner.clone().logout_all(request).await?.into_inner())
    }

    /// ChangePassword: every other session ends; a new one starts.
    pub async fn change_password(
        &self,
        access_token: &str,
        current_password: &str,
        new_password: &str,
    ) -> Result<pb::ChangePasswordResponse, Status> {
        let request = self.carrying(access_token, |access_token| pb::ChangePasswordRequest {
            access_token,
            current_password: current_password.to_owned(),
            new_password: new_password.to_owned(),
        })?;
        Ok(self
            .inner
            .clone()
            .change_password(request)
            .await?
            .into_inner())
    }

    /// ListSessions: the user's live sessions.
    pub async fn list_sessions(&self, access_token: &str) -> Result<Vec<pb::Session>, Status> {
        let request = self.carrying(access_token, |access_token| pb::ListSessionsRequest {
            access_token,
        })?;
        Ok(self
            .inner
            .clone()
            .list_sessions(request)
            .await?
            .into_inner()
            .sessions)
    }

    /// RevokeSession: ends one of the user's sessions.
    pub async fn revoke_session(&self, access_token: &str, session_id: &str) -> Result<(), Status> {
        let request = self.carrying(access_token, |access_token| pb::RevokeSessionRequest {
            access_token,
            session_id: session_id.to_owned(),
        })?;
        self.inner.clone().revoke_session(request).await?;
        Ok(())
    }

    /// DeleteAccount: the user, every session and every token, gone.
    pub async fn delete_account(&self, access_token: &str, password: &str) -> Result<(), Status> {
        let request = self.carrying(access_token, |access_token| pb::DeleteAccountRequest {
            access_token,
            password: password.to_owned(),
        })?;
        self.inner.clone().delete_account(request).await?;
        Ok(())
    }

    /// WatchRevocations: the snapshot, then every revocation and a heartbeat. `watch_token` is
    /// authd's `AUTHD_WATCH_TOKEN`; `None` where the channel presents a client certificate.
    pub async fn watch_revocations(
        &self,
        watch_token: Option<&str>,
    ) -> Result<Response<Streaming<pb::RevocationEvent>>, Status> {
        let mut request = Request::new(pb::WatchRevocationsRequest {});
        if let Some(token) = watch_token {
            request
                .metadata_mut()
                .insert("authorization", bearer(token)?);
        }
        self.inner.clone().watch_revocations(request).await
    }
}

/// `Bearer <token>` as metadata; a token that cannot be a header value is the caller's mistake.
pub(crate) fn bearer(token: &str) -> Result<MetadataValue<tonic::metadata::Ascii>, Status> {
    let mut value: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| Status::invalid_argument("the token cannot be sent as a header"))?;
    value.set_sensitive(true);
    Ok(value)
}
