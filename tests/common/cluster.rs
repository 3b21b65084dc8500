//! A private three-master Redis Cluster for one test: `redis-server --cluster-enabled yes` on free
//! ports, joined with `redis-cli --cluster create`, shut down when dropped.

use std::{
    net::TcpListener,
    process::{Child, Command},
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

    /// Starts one cluster node on a free port whose bus port (+10000) is free too.
    fn start_node(&self) -> (u16, Child) {
        super::redis_server::spawn_redis_server(
            free_port_with_free_bus_port,
            self.dir.path(),
            &["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
        )
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
