//! A private three-master Redis Cluster for one test: `redis-server --cluster-enabled yes` on free
//! ports, joined with `redis-cli --cluster create`, shut down when dropped.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// A running local Redis Cluster.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    servers: Vec<Child>,
    dir: TempDir,
}

impl RedisCluster {
    /// Starts three masters and waits until the cluster reports `cluster_state:ok`.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Self {
            ports: Vec::new(),
            servers: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            let (port, server) = cluster.start_node();
            cluster.ports.push(port);
            cluster.servers.push(server);
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        for port in &cluster.ports {
            cluster.wait_for(
                || cli(*port, &["cluster", "info"]).contains("cluster_state:ok"),
                "the cluster to converge",
            );
        }
        cluster
    }

    /// Starts one node on a free port. redis-server cannot be handed a bound listener, so the
    /// port is free only when it is picked: if another process takes it first, the node exits and
    /// is started again on another port.
    fn start_node(&self) -> (u16, Child) {
        for _ in 0..5 {
            let port = free_port_with_free_bus_port();
            let node_dir = self.dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let mut server = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed for the cluster tests");
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

    /// The comma-separated seed URLs for AUTHD_REDIS_URL.
    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Keys matching `pattern` held by each node.
    pub fn keys_per_node(&self, pattern: &str) -> Vec<usize> {
        self.ports
            .iter()
            .map(|port| {
                cli(*port, &["--scan", "--pattern", pattern])
                    .lines()
                    .count()
            })
            .collect()
    }

    fn wait_for(&self, mut ready: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output();
    output
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A port that is free, and whose cluster bus port (+10000) is free too.
fn free_port_with_free_bus_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}
