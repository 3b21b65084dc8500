//! The one place that picks gRPC codes and google.rpc details:
//! INVALID_ARGUMENT + BadRequest, UNAUTHENTICATED + ErrorInfo{domain "authd", reason TOKEN_* or
//! REFRESH_TOKEN_* | WATCH_CREDENTIAL_MISSING}, PERMISSION_DENIED (WatchRevocations), NOT_FOUND
//! (RevokeSession),
//! ALREADY_EXISTS, RESOURCE_EXHAUSTED + RetryInfo, UNAVAILABLE, INTERNAL (bugs only), and, for the
//! edge layer, what tonic's own transport errors become and DEADLINE_EXCEEDED.
//!
//! Every status authd's handlers produce carries an ErrorInfo in the "authd" domain; one without
//! it was produced by tonic before any handler ran (decoding, size limits), which is how
//! [`from_transport`] tells the two apart without reading messages.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation as WireViolation, StatusExt as _};

use crate::{domain::FieldViolation, service::ServiceError, tokens::TokenError};

/// The google.rpc.ErrorInfo domain of authd's errors.
pub const ERROR_DOMAIN: &str = "authd";
/// The message of every INTERNAL status authd itself returns (details go to the logs only).
pub const INTERNAL_MESSAGE: &str = "internal error";
/// How long clients should wait before retrying an overloaded or unavailable call.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// INVALID_ARGUMENT naming every refused field.
pub fn invalid_argument(violations: Vec<FieldViolation>) -> Status {
    let message = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let wire: Vec<WireViolation> = violations
        .into_iter()
        .map(|v| WireViolation::new(v.field, v.description))
        .collect();
    let fields = violations_fields(&wire);
    let mut details = ErrorDetails::with_bad_request(wire);
    details.set_error_info(
        "INVALID_ARGUMENT",
        ERROR_DOMAIN,
        HashMap::from([("fields".to_owned(), fields)]),
    );
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// The refused fields, comma-separated, for ErrorInfo metadata.
fn violations_fields(violations: &[WireViolation]) -> String {
    let mut fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    fields.dedup();
    fields.join(",")
}

/// The status for a use-case error.
pub fn from_service(error: ServiceError) -> Status {
    match &error {
        ServiceError::EmailTaken => Status::with_error_details(
            Code::AlreadyExists,
            error.to_string(),
            ErrorDetails::with_error_info("EMAIL_TAKEN", ERROR_DOMAIN, HashMap::new()),
        ),
        ServiceError::InvalidCredentials => Status::with_error_details(
            Code::Unauthenticated,
            error.to_string(),
            ErrorDetails::with_error_info("INVALID_CREDENTIALS", ERROR_DOMAIN, HashMap::new()),
        ),
        ServiceError::Token(token_error) => token_status(*token_error),
        ServiceError::RefreshTokenInvalid => {
            unauthenticated("REFRESH_TOKEN_INVALID", error.to_string())
        }
        ServiceError::RefreshTokenExpired => {
            unauthenticated("REFRESH_TOKEN_EXPIRED", error.to_string())
        }
        ServiceError::RefreshTokenReused => {
            unauthenticated("REFRESH_TOKEN_REUSED", error.to_string())
        }
        ServiceError::SessionNotFound => Status::with_error_details(
            Code::NotFound,
            error.to_string(),
            ErrorDetails::with_error_info("SESSION_NOT_FOUND", ERROR_DOMAIN, HashMap::new()),
        ),
        ServiceError::WatchCredentialMissing => {
            unauthenticated("WATCH_CREDENTIAL_MISSING", error.to_string())
        }
        ServiceError::WatchCredentialWrong => Status::with_error_details(
            Code::PermissionDenied,
            error.to_string(),
            ErrorDetails::with_error_info("WATCH_CREDENTIAL_WRONG", ERROR_DOMAIN, HashMap::new()),
        ),
        ServiceError::WatchingDisabled => Status::with_error_details(
            Code::PermissionDenied,
            error.to_string(),
            ErrorDetails::with_error_info("WATCH_NOT_ENABLED", ERROR_DOMAIN, HashMap::new()),
        ),
        ServiceError::InvalidArgument(violations) => invalid_argument(violations.clone()),
        ServiceError::Throttled { retry_after } => {
            throttled("LOGIN_THROTTLED", "too many failed logins", *retry_after)
        }
        ServiceError::RegistrationsThrottled { retry_after } => throttled(
            "REGISTRATION_THROTTLED",
            "too many registrations from this address",
            *retry_after,
        ),
        ServiceError::Overloaded => {
            let mut details = ErrorDetails::with_retry_info(Some(RETRY_AFTER));
            details.set_error_info("OVERLOADED", ERROR_DOMAIN, HashMap::new());
            Status::with_error_details(Code::ResourceExhausted, error.to_string(), details)
        }
        ServiceError::Unavailable { backend, cause } => {
            tracing::warn!(
                backend,
                error = crate::telemetry::error_chain(cause.as_ref()),
                "back end unavailable"
            );
            let mut details = ErrorDetails::with_retry_info(Some(RETRY_AFTER));
            details.set_error_info(
                "BACKEND_UNAVAILABLE",
                ERROR_DOMAIN,
                HashMap::from([("backend".to_owned(), (*backend).to_owned())]),
            );
            Status::with_error_details(
                Code::Unavailable,
                format!("{backend} is unavailable; retry later"),
                details,
            )
        }
        ServiceError::Unexpected(cause) => {
            tracing::error!(
                error = crate::telemetry::error_chain(cause.as_ref()),
                "unexpected error"
            );
            Status::with_error_details(
                Code::Internal,
                INTERNAL_MESSAGE,
                ErrorDetails::with_error_info("INTERNAL", ERROR_DOMAIN, HashMap::new()),
            )
        }
    }
}

/// RESOURCE_EXHAUSTED with ErrorInfo `reason` and RetryInfo: `what`; retry in so many seconds.
fn throttled(reason: &str, what: &str, retry_after: Duration) -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(retry_after));
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    let seconds = retry_after.as_secs_f64().ceil();
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("{what}; retry in {seconds} s"),
        details,
    )
}

/// What a status tonic produced itself (decoding or size limits, before any handler ran)
/// stands for, as a status the client can act on; `None` passes the status through unchanged.
///
/// | tonic says | client gets |
/// |---|---|
/// | INTERNAL (failed to decode the message, or any other protocol error) | INVALID_ARGUMENT, ErrorInfo `MALFORMED_REQUEST` |
/// | OUT_OF_RANGE (decoded message length too large) | RESOURCE_EXHAUSTED, ErrorInfo `REQUEST_TOO_LARGE` |
pub fn from_transport(status: &Status) -> Option<Status> {
    let ours = status
        .get_error_details()
        .error_info()
        .is_some_and(|info| info.domain == ERROR_DOMAIN);
    if ours {
        return None;
    }
    let (code, reason, what) = match status.code() {
        Code::Internal => (
            Code::InvalidArgument,
            "MALFORMED_REQUEST",
            "malformed request",
        ),
        Code::OutOfRange => (
            Code::ResourceExhausted,
            "REQUEST_TOO_LARGE",
            "request too large",
        ),
        _ => return None,
    };
    Some(Status::with_error_details(
        code,
        format!("{what}: {}", status.message()),
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    ))
}

/// DEADLINE_EXCEEDED for a call that ran past the per-call limit.
pub fn deadline_exceeded(limit: Duration) -> Status {
    Status::with_error_details(
        Code::DeadlineExceeded,
        format!("the call took longer than {} ms", limit.as_millis()),
        ErrorDetails::with_error_info("TIMEOUT", ERROR_DOMAIN, HashMap::new()),
    )
}

/// UNAUTHENTICATED with the token's ErrorInfo reason.
/// UNAUTHENTICATED with ErrorInfo `reason`.
fn unauthenticated(reason: &str, message: String) -> Status {
    Status::with_error_details(
        Code::Unauthenticated,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    )
}

fn token_status(error: TokenError) -> Status {
    Status::with_error_details(
        Code::Unauthenticated,
        error.to_string(),
        ErrorDetails::with_error_info(error.reason(), ERROR_DOMAIN, HashMap::new()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(status: &Status) -> Option<String> {
        status
            .get_error_details()
            .error_info()
            .map(|info| info.reason.clone())
    }

    #[test]
    fn every_service_error_has_its_code() {
        let cases = [
            (ServiceError::EmailTaken, Code::AlreadyExists),
            (ServiceError::InvalidCredentials, Code::Unauthenticated),
            (
                ServiceError::Token(TokenError::Revoked),
                Code::Unauthenticated,
            ),
            (ServiceError::Overloaded, Code::ResourceExhausted),
            (
                ServiceError::Throttled {
                    retry_after: Duration::from_secs(2),
                },
                Code::ResourceExhausted,
            ),
            (
                ServiceError::Unavailable {
                    backend: "redis",
                    cause: anyhow::anyhow!("down"),
                },
                Code::Unavailable,
            ),
            (
                ServiceError::Unexpected(anyhow::anyhow!("bug")),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(from_service(error).code(), code);
        }
    }

    #[test]
    fn token_errors_carry_their_reason() {
        for (error, expected) in [
            (TokenError::Missing, "TOKEN_MISSING"),
            (TokenError::Invalid, "TOKEN_INVALID"),
            (TokenError::Expired, "TOKEN_EXPIRED"),
            (TokenError::Revoked, "TOKEN_REVOKED"),
        ] {
            let status = from_service(ServiceError::Token(error));
            assert_eq!(reason(&status).as_deref(), Some(expected));
            let info = status.get_error_details().error_info().cloned().unwrap();
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
    }

    #[test]
    fn invalid_argument_names_each_field() {
        let status = invalid_argument(vec![
            FieldViolation::new("email", "is required"),
            FieldViolation::new("password", "must be at least 8 characters"),
        ]);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(fields, ["email", "password"]);
        let info = details.error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            ("INVALID_ARGUMENT", ERROR_DOMAIN)
        );
        assert_eq!(info.metadata["fields"], "email,password");
    }

    #[test]
    fn every_status_authd_produces_carries_an_error_info() {
        let statuses = [
            from_service(ServiceError::EmailTaken),
            from_service(ServiceError::InvalidCredentials),
            from_service(ServiceError::Token(TokenError::Missing)),
            from_service(ServiceError::Overloaded),
            from_service(ServiceError::Throttled {
                retry_after: Duration::from_secs(1),
            }),
            from_service(ServiceError::RegistrationsThrottled {
                retry_after: Duration::from_secs(1),
            }),
            from_service(ServiceError::Unavailable {
                backend: "redis",
                cause: anyhow::anyhow!("down"),
            }),
            from_service(ServiceError::Unexpected(anyhow::anyhow!("bug"))),
            invalid_argument(vec![FieldViolation::new("email", "is required")]),
            deadline_exceeded(Duration::from_secs(1)),
        ];
        for status in statuses {
            let info = status.get_error_details().error_info().cloned();
            assert!(
                info.is_some_and(|info| info.domain == ERROR_DOMAIN && !info.reason.is_empty()),
                "{status:?}"
            );
        }
    }

    #[test]
    fn transport_errors_become_client_errors_and_ours_pass_through() {
        let decode = Status::internal("failed to decode Protobuf message: invalid wire type");
        assert_eq!(
            from_transport(&decode).map(|s| s.code()),
            Some(Code::InvalidArgument)
        );
        let large =
            Status::out_of_range("Error, decoded message length too large: found 70000 bytes");
        let rewritten = from_transport(&large).unwrap();
        assert_eq!(rewritten.code(), Code::ResourceExhausted);
        assert_eq!(reason(&rewritten).as_deref(), Some("REQUEST_TOO_LARGE"));
        let ours = from_service(ServiceError::Unexpected(anyhow::anyhow!("bug")));
        assert_eq!(ours.code(), Code::Internal);
        assert!(from_transport(&ours).is_none());
        assert!(from_transport(&Status::not_found("unknown service")).is_none());
    }
}
