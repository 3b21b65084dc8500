//! The `authd` binary: parse the configuration, start logging, serve until SIGTERM/SIGINT.

use std::{process::ExitCode, sync::Arc};

use authd::{App, Config, clock::SystemClock, config::LogFormat, telemetry};
use clap::{Parser, ValueEnum as _};

/// mimalloc: per-thread free lists instead of glibc's locked arenas, which showed up as lock waits
/// and ~12% of CPU in a Verify profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        // --help and --version: not errors.
        Err(error) if !error.use_stderr() => {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        // A setting that does not parse is a failure to start like any other: exit 1, and a log
        // line in the requested format (read from the environment: the flags did not parse).
        Err(error) => {
            telemetry::init(log_format_from_env());
            tracing::error!("authd stopped: {}", error.to_string().trim_end());
            let _ = error.print();
            return ExitCode::FAILURE;
        }
    };
    telemetry::init(config.log_format);
    let result = async {
        let app = App::build(config.settings()?, Arc::new(SystemClock)).await?;
        app.run_until_signal().await
    };
    match result.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let error = telemetry::error_chain(error.as_ref());
            tracing::error!("authd stopped: {error}");
            eprintln!("authd: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `AUTHD_LOG_FORMAT` as far as it can be read without the rest of the flags (text otherwise).
fn log_format_from_env() -> LogFormat {
    std::env::var("AUTHD_LOG_FORMAT")
        .ok()
        .and_then(|value| LogFormat::from_str(value.trim(), true).ok())
        .unwrap_or(LogFormat::Text)
}
