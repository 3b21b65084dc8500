//! The one place that turns errors into gRPC statuses with google.rpc details:
//! INVALID_ARGUMENT + BadRequest, UNAUTHENTICATED + ErrorInfo{domain "authd", reason TOKEN_*},
//! ALREADY_EXISTS, RESOURCE_EXHAUSTED + RetryInfo, UNAVAILABLE, INTERNAL (bugs only).

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
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request(wire),
    )
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
        ServiceError::Throttled { retry_after } => {
            let mut details = ErrorDetails::with_retry_info(Some(*retry_after));
            details.set_error_info("LOGIN_THROTTLED", ERROR_DOMAIN, HashMap::new());
            let seconds = retry_after.as_secs_f64().ceil();
            Status::with_error_details(
                Code::ResourceExhausted,
                format!("too many failed logins; retry in {seconds} s"),
                details,
            )
        }
        ServiceError::Overloaded => {
            let mut details = ErrorDetails::with_retry_info(Some(RETRY_AFTER));
            details.set_error_info("OVERLOADED", ERROR_DOMAIN, HashMap::new());
            Status::with_error_details(Code::ResourceExhausted, error.to_string(), details)
        }
        ServiceError::Unavailable { backend, reason } => {
            tracing::warn!(backend, reason, "back end unavailable");
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
            tracing::error!(error = format!("{cause:#}"), "unexpected error");
            Status::internal(INTERNAL_MESSAGE)
        }
    }
}

/// UNAUTHENTICATED with the token's ErrorInfo reason.
fn token_status(error: TokenError) -> Status {
    let reason = match error {
        TokenError::Missing => "TOKEN_MISSING",
        TokenError::Invalid => "TOKEN_INVALID",
        TokenError::Expired => "TOKEN_EXPIRED",
        TokenError::Revoked => "TOKEN_REVOKED",
    };
    Status::with_error_details(
        Code::Unauthenticated,
        error.to_string(),
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
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
                    reason: "down".into(),
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
    }
}
