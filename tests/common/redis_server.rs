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
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut server = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .args(settings)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed for the private Redis tests");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if cli(port, &["ping"]).contains("PONG") {
                    return Self {
                        port,
                        server,
                        _dir: dir,
                    };
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

fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
