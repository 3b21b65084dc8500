//! authd-client: a typed client for authd's `auth.v1.AuthService`, and [`AuthLayer`], a tower
//! layer that protects tonic servers and axum routers with authd's access tokens.
//!
//! The layer verifies in one of two modes, chosen when the [`Verifier`] is built:
//! - [`Verifier::remote`]: every request is checked by authd's `Verify` (revocation is immediate;
//!   one round trip per request);
//! - [`Verifier::local`]: the signature is checked against authd's JWKS and revocation against an
//!   in-memory mirror that authd keeps current through `WatchRevocations` (a revocation is
//!   honoured within the propagation delay; beyond the staleness bound the layer fails closed,
//!   or asks authd, as [`StalePolicy`] says).
//!
//! ```no_run
//! use authd_client::{AuthLayer, Claims, LocalOptions, Verifier};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::local(LocalOptions::new("http://127.0.0.1:50051", "http://127.0.0.1:8080")
//!     .watch_token(std::env::var("AUTHD_WATCH_TOKEN")?))?;
//! let app: axum::Router = axum::Router::new()
//!     .route("/whoami", axum::routing::get(|claims: axum::Extension<Claims>| async move {
//!         claims.user_id().to_owned()
//!     }))
//!     .layer(AuthLayer::new(verifier));
//! # let _ = app; Ok(()) }
//! ```

mod claims;
mod client;
mod layer;
mod local;
mod rejection;
mod remote;
mod verifier;

pub use claims::Claims;
pub use client::{AuthClient, TokenPlacement};
pub use layer::{AuthLayer, Protected};
pub use local::{LocalOptions, StalePolicy};
pub use rejection::Rejection;
pub use verifier::{BuildError, Verifier};

/// The generated `auth.v1` types and client, re-exported as they are.
pub mod pb {
    tonic::include_proto!("auth.v1");
}
