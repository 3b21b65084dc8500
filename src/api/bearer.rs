//! Finds the access token of a request that carries one (Verify, Logout, LogoutAll, ...): the message field, or, when that is empty,
//! `authorization: Bearer <token>` metadata (RFC 6750 §2.1): the scheme case-insensitive, then
//! exactly one space. RFC 6750's grammar (`1*SP`) would allow more; authd picks one form so that a
//! header is read the same way by authd and by every proxy in front of it. Any other form is not
//! a bearer credential: TOKEN_MISSING.

use tonic::Request;

use crate::domain::AccessToken;

/// The token from the field, else from the `authorization` header; `None` if neither has one.
/// Takes the request by value so the token string is moved, not copied (Verify is the hot path).
pub(super) fn token_from<T>(
    request: Request<T>,
    field: impl FnOnce(T) -> String,
) -> Option<AccessToken> {
    let (metadata, _, message) = request.into_parts();
    token(&metadata, field(message))
}

/// The token from `field`, else from the `authorization` header of `metadata`.
pub(super) fn token(metadata: &tonic::metadata::MetadataMap, field: String) -> Option<AccessToken> {
    AccessToken::new(field).or_else(|| parse(metadata.get("authorization")?.to_str().ok()?))
}

/// The token of an `authorization` header value, if it is a bearer credential in the one form
/// authd accepts (gRPC metadata, Envoy's `CheckRequest`, HTTP forward-auth alike).
pub(crate) fn parse(header: &str) -> Option<AccessToken> {
    let (scheme, token) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.starts_with(char::is_whitespace) {
        return None;
    }
    AccessToken::new(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(field: &str, header: Option<&str>) -> Request<String> {
        let mut request = Request::new(field.to_owned());
        if let Some(header) = header {
            request
                .metadata_mut()
                .insert("authorization", header.parse().unwrap());
        }
        request
    }

    fn token(request: Request<String>) -> Option<String> {
        token_from(request, |s| s).map(|t| t.expose().to_owned())
    }

    #[test]
    fn the_field_wins_over_metadata() {
        assert_eq!(
            token(request("a.b.c", Some("Bearer x.y.z"))).as_deref(),
            Some("a.b.c")
        );
    }

    #[test]
    fn metadata_is_used_when_the_field_is_empty() {
        assert_eq!(
            token(request("", Some("Bearer x.y.z"))).as_deref(),
            Some("x.y.z")
        );
        assert_eq!(
            token(request("", Some("bearer x.y.z"))).as_deref(),
            Some("x.y.z")
        );
    }

    #[test]
    fn other_schemes_and_empty_values_are_missing() {
        assert_eq!(token(request("", Some("Basic dXNlcjpwYXNz"))), None);
        assert_eq!(token(request("", Some("Bearer "))), None);
        // Exactly one space after the scheme.
        assert_eq!(token(request("", Some("Bearer  x.y.z"))), None);
        assert_eq!(token(request("", Some("Bearer\tx.y.z"))), None);
        assert_eq!(token(request("", Some("Bearer \tx.y.z"))), None);
        assert_eq!(token(request("", None)), None);
    }
}
