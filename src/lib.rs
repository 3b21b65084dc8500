//! authd: a gRPC authentication service — Register, Login, Logout and Verify.
//!
//! Data flows one way:
//!
//! ```text
//! api (tonic edge: proto <-> domain, Error -> Status)
//!   -> service (the use cases)
//!        -> tokens (keys, JWT issue/verify, verified-token cache), hashing (argon2id on a
//!           bounded pool), throttle (login back-off policy)
//!        -> store (UserStore, RevocationStore, ThrottleStore: SQL (Postgres, SQLite), Redis)
//! ```
//!
//! Nothing below `api` knows about tonic; nothing above `store` knows about SQL or Redis.
//! `config` parses the flags into typed `Settings`; `startup` wires an `App` from them and a
//! `Clock`; `server` serves it, with `tasks` beside; `telemetry` sets up logs.

pub mod api;
pub mod clock;
pub mod config;
pub mod domain;
pub mod hashing;
pub mod server;
pub mod service;
pub mod startup;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod throttle;
pub mod tokens;

/// Code generated from `proto/auth/v1/auth.proto`.
pub mod pb {
    tonic::include_proto!("auth.v1");

    /// The encoded file descriptor set served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("auth_descriptor");
}

pub use config::{Config, Settings};
pub use startup::App;
