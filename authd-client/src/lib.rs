//! authd-client: a typed client for authd's `auth.v1.AuthService`, and `AuthLayer`, a tower layer
//! that protects tonic and axum services.

/// The generated `auth.v1` types and client.
pub mod pb {
    tonic::include_proto!("auth.v1");
}
