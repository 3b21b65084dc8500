//! A private `redis-server` for one test, on a free port, with whatever settings the test needs
//! (memory limits, eviction policies), stopped when dropped. For tests that must change or break
//! Redis without touching the machine's shared server.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// A running private Redis.
pub struct PrivateRedis {
    pub port: u16,
    server: Child,
    _dir: TempDir,
}

impl PrivateRedis {
    /// Starts `redis-server` with `settings` (e.g. `["--maxmemory-policy", "allkeys-lru"]`).
    /// redis-server cannot be handed a bound listener, so a port taken between picking and
    /// binding makes it exit; then it starts again on another port.
    pub fn start(settings: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let free_port = || {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, server) = spawn_redis_server(free_port, dir.path(), settings);
        Self {
            port,
            server,
            _dir: dir,
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs a redis-cli command against it and returns what it printed.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Starts `redis-server` with `settings` on a port from `pick_port`, with its files under
/// `dir/<port>`, and waits until it answers PING. redis-server cannot be handed a bound
/// listener, so the port is free only when it is picked: if another process takes it first, the
/// server exits and is started again on another port.
pub fn spawn_redis_server(
    mut pick_port: impl FnMut() -> u16,
    dir: &std::path::Path,
    settings: &[&str],
) -> (u16, Child) {
    for _ in 0..5 {
        let port = pick_port();
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).unwrap();
        let mut server = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&node_dir)
            .args(settings)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for the private Redis tests");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if cli(port, &["ping"]).contains("PONG") {
                return (port, server);
            }
            if server.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                let _ = server.kill();
                let _ = server.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("redis-server did not start on any of five free ports");
}

fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
