//! Envoy external authorization (`envoy.service.auth.v3.Authorization/Check`): the bearer token of
//! the request Envoy is holding, checked exactly as Verify checks it, and the [`Verdict`] written
//! as a `CheckResponse`. Every outcome is a `CheckResponse` (a denial is never a gRPC error, which
//! Envoy would treat as an authorization-server failure and let through under
//! `failure_mode_allow: true`).

use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderAppendAction,
    HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use tonic::{Request, Response, Status};

use super::bearer;
use crate::{
    gateway::{ForwardedHeaders, Verdict},
    service::AuthService,
};

/// The gRPC name of the service, as health and reflection know it.
pub const SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";

/// The Envoy `Authorization` service.
pub struct ExtAuthz {
    service: Arc<AuthService>,
    headers: ForwardedHeaders,
    strip_authorization: bool,
}

impl ExtAuthz {
    /// Checks with `service`; accepted requests get `headers`; `strip_authorization` has Envoy
    /// remove the `authorization` header before the upstream.
    pub fn new(
        service: Arc<AuthService>,
        headers: ForwardedHeaders,
        strip_authorization: bool,
    ) -> Self {
        Self {
            service,
            headers,
            strip_authorization,
        }
    }

    fn response(&self, verdict: Verdict) -> CheckResponse {
        let code = match &verdict {
            Verdict::Allow(_) => tonic::Code::Ok,
            Verdict::NoToken | Verdict::InvalidToken(_) => tonic::Code::Unauthenticated,
            Verdict::Unavailable => tonic::Code::Unavailable,
            Verdict::Failed => tonic::Code::Internal,
        };
        let http_response = match &verdict {
            Verdict::Allow(claims) => {
                let mut headers = Vec::new();
                let mut headers_to_remove = Vec::new();
                for (name, value) in self.headers.values(claims) {
                    match value {
                        Some(value) => headers.push(header(name.as_str(), value)),
                        None => headers_to_remove.push(name.as_str().to_owned()),
                    }
                }
                if self.strip_authorization {
                    headers_to_remove.push("authorization".to_owned());
                }
                HttpResponse::OkResponse(OkHttpResponse {
                    headers,
                    headers_to_remove,
                    ..Default::default()
                })
            }
            refused => {
                let mut headers = Vec::new();
                if let Some(challenge) = refused.challenge() {
                    headers.push(header("www-authenticate", challenge));
                }
                if let Some(seconds) = refused.retry_after() {
                    headers.push(header("retry-after", seconds.to_string()));
                }
                let body = refused.body().unwrap_or_default();
                if !body.is_empty() {
                    headers.push(header("content-type", "application/json".to_owned()));
                }
                HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(refused.http_status()),
                    }),
                    headers,
                    body,
                })
            }
        };
        CheckResponse {
            status: Some(rpc::Status {
                code: code as i32,
                message: String::new(),
                details: Vec::new(),
            }),
            http_response: Some(http_response),
            ..Default::default()
        }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthz {
    #[tracing::instrument(name = "Check", level = "debug", skip_all)]
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let token = authorization(request.into_inner()).and_then(|header| bearer::parse(&header));
        let verdict = Verdict::from_verify(self.service.verify(token).await);
        Ok(Response::new(self.response(verdict)))
    }
}

/// The `authorization` header of the request Envoy holds: from `headers` (lower-case keys, values
/// of repeated headers joined with ", " by Envoy), or, when Envoy sends raw headers
/// (`encode_raw_headers`), from `header_map`, joined the same way so a repeated header never
/// verifies.
fn authorization(request: CheckRequest) -> Option<String> {
    let mut http = request.attributes?.request?.http?;
    if let Some(value) = http.headers.remove("authorization") {
        return Some(value);
    }
    let values: Vec<String> = http
        .header_map?
        .headers
        .iter()
        .filter(|header| header.key.eq_ignore_ascii_case("authorization"))
        .map(|header| {
            if header.raw_value.is_empty() {
                header.value.clone()
            } else {
                String::from_utf8_lossy(&header.raw_value).into_owned()
            }
        })
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// A header Envoy sets, replacing any of the same name (so a client cannot smuggle its own).
fn header(key: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}
