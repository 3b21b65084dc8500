//! The `authd` binary: parse the configuration, start logging, serve until SIGTERM/SIGINT; or
//! `authd keys list|rotate|prune` on the signing keys directory.

use std::{process::ExitCode, sync::Arc};

use authd::{
    App, Config,
    clock::{Clock as _, SystemClock},
    config::{Command, KeysCommand, LogFormat, SigningKeySetting},
    telemetry,
    tokens::directory::{KeyDirectory, states},
};
use clap::{Parser, ValueEnum as _};

/// mimalloc: per-thread free lists instead of glibc's locked arenas, which showed up as lock waits
/// and ~12% of CPU in a Verify profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long the runtime waits, once serving has stopped, for work on its blocking pool (a file
/// read stuck on a hung mount must not keep a SIGTERMed process alive).
const BLOCKING_WORK_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("authd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run());
    runtime.shutdown_timeout(BLOCKING_WORK_GRACE);
    code
}

async fn run() -> ExitCode {
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
            let _logs_only = telemetry::init(log_format_from_env());
            tracing::error!("authd stopped: {}", error.to_string().trim_end());
            let _ = error.print();
            return ExitCode::FAILURE;
        }
    };
    let telemetry = telemetry::init(config.log_format);
    if let Some(Command::Keys { action }) = config.command.clone() {
        return match keys(config, action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("authd keys: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = async {
        let app = App::build(config.settings()?, Arc::new(SystemClock)).await?;
        app.run_until_signal().await
    };
    let result = result.await;
    // The spans still queued are exported (within the exporter's timeout) before exit; the
    // exporter's task runs on this runtime, so the wait is on a blocking thread.
    let flushed = tokio::task::spawn_blocking(move || telemetry.shutdown());
    let _ = tokio::time::timeout(BLOCKING_WORK_GRACE, flushed).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let error = telemetry::error_chain(error.as_ref());
            tracing::error!("authd stopped: {error}");
            eprintln!("authd: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `authd keys …`: the keys directory of the configuration, read and changed with the system
/// clock. Prints one line per key.
fn keys(config: Config, action: KeysCommand) -> anyhow::Result<()> {
    let settings = config.settings()?;
    let SigningKeySetting::Ed25519Directory { dir, legacy } = &settings.signing_key else {
        anyhow::bail!(
            "the signing key is not a keys directory (AUTHD_SIGNING_KEY_FILE or HS256 is set)"
        );
    };
    let directory = KeyDirectory::new(dir);
    let now = SystemClock.now();
    match action {
        KeysCommand::List => {
            directory.ensure_key(Some(legacy))?;
        }
        KeysCommand::Rotate { lead } => {
            directory.ensure_key(Some(legacy))?;
            if lead < settings.signing_keys_reload || lead < std::time::Duration::from_secs(300) {
                eprintln!(
                    "warning: a lead shorter than the JWKS cache lifetime (5m) or the reload \
                     interval lets tokens of the new key reach verifiers that do not know it yet"
                );
            }
            let key = directory.rotate(now, lead)?;
            println!(
                "added {} (starts signing at {})",
                key.kid,
                timestamp(key.starts_at)
            );
        }
        KeysCommand::Prune => {
            let lifetime = settings.tokens.ttl + settings.tokens.leeway;
            for key in directory.prune(now, lifetime)? {
                println!("removed {}", key.kid);
            }
        }
    }
    let keys = directory.load()?;
    println!(
        "{:<44}  {:<8}  {:<20}  starts signing at",
        "kid", "state", "created"
    );
    for (key, (state, starts_at)) in keys.iter().zip(states(&keys, now)) {
        let created = key.created.map_or("-".to_owned(), |created| {
            humantime::format_rfc3339_seconds(created).to_string()
        });
        println!(
            "{:<44}  {:<8}  {:<20}  {}",
            key.kid,
            state,
            created,
            timestamp(starts_at)
        );
    }
    Ok(())
}

/// A Unix second in RFC 3339 (the epoch for keys that sign from the start).
fn timestamp(seconds: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0).unsigned_abs());
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `AUTHD_LOG_FORMAT` as far as it can be read without the rest of the flags (text otherwise).
fn log_format_from_env() -> LogFormat {
    std::env::var("AUTHD_LOG_FORMAT")
        .ok()
        .and_then(|value| LogFormat::from_str(value.trim(), true).ok())
        .unwrap_or(LogFormat::Text)
}
