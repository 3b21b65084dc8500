//! Remote verification: authd's Verify for every request, over one shared HTTP/2 connection,
//! with a deadline. Nothing is cached, so a revocation is honoured on the very next request.

use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt as _;
use uuid::Uuid;

use crate::{AuthClient, Claims, Rejection};

#[derive(Debug, Clone)]
pub(crate) struct RemoteVerifier {
    client: AuthClient,
    timeout: Duration,
}

impl RemoteVerifier {
    pub(crate) fn new(client: AuthClient, timeout: Duration) -> Self {
        Self { client, timeout }
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Claims, Rejection> {
        let call = self.client.verify(token);
        let response = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => {
                return Err(Rejection::Unavailable(format!(
                    "authd's Verify took over {:?}",
                    self.timeout
                )));
            }
            Ok(Err(status)) => return Err(rejection_of(&status)),
            Ok(Ok(response)) => response,
        };
        let seconds = |t: Option<prost_types::Timestamp>| t.map_or(0, |t| t.seconds);
        let unexpected =
            || Rejection::Unavailable("authd's Verify answered without valid claims".into());
        let user = Uuid::try_parse(&response.user_id).map_err(|_| unexpected())?;
        let token = Uuid::try_parse(&response.jti).map_err(|_| unexpected())?;
        let session = match response.session_id.as_str() {
            "" => None,
            sid => Some(Uuid::try_parse(sid).map_err(|_| unexpected())?),
        };
        Ok(Claims::new(
            user,
            session,
            token,
            seconds(response.issued_at),
            seconds(response.expires_at),
        ))
    }
}

/// What authd's answer means for the caller: its token's fault (UNAUTHENTICATED, or a token authd
/// could not even read), or authd's (anything else, so the layer fails closed).
fn rejection_of(status: &tonic::Status) -> Rejection {
    match status.code() {
        Code::Unauthenticated | Code::InvalidArgument => {
            match status
                .get_details_error_info()
                .as_ref()
                .map(|info| info.reason.as_str())
            {
                Some("TOKEN_EXPIRED") => Rejection::Expired,
                Some("TOKEN_REVOKED") => Rejection::Revoked,
                Some("TOKEN_MISSING") => Rejection::Missing,
                _ => Rejection::Invalid,
            }
        }
        code => Rejection::Unavailable(format!("authd's Verify failed: {code:?}")),
    }
}
