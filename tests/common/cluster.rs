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
    /// With TLS: the CA file the nodes' certificates chain to (clients, and the nodes among
    /// themselves, speak TLS only).
    tls_ca: Option<std::path::PathBuf>,
}

impl RedisCluster {
    /// Starts three masters and waits until the cluster reports `cluster_state:ok`.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Three masters that speak TLS only (clients and the cluster bus), with certificates from
    /// `ca` for localhost and 127.0.0.1; clients need no certificate of their own.
    pub fn start_tls(ca: &super::tls::TestCa) -> Self {
        Self::start_with(Some(ca))
    }

    fn start_with(ca: Option<&super::tls::TestCa>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Self {
            ports: Vec::new(),
            servers: Vec::new(),
            dir,
            tls_ca: ca.map(|ca| ca.cert_file.clone()),
        };
        for _ in 0..3 {
            let (port, server) = match ca {
                None => cluster.start_node(),
                Some(ca) => cluster.start_tls_node(ca),
            };
            cluster.ports.push(port);
            cluster.servers.push(server);
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        // `redis-cli --cluster create` waits for the nodes to agree for as long as it takes:
        // bounded here, so that a cluster that cannot form fails the test instead of hanging it.
        let created = Command::new("timeout")
            .arg("60")
            .arg("redis-cli")
            .args(cluster.tls_args())
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
                || {
                    cluster
                        .cli(*port, &["cluster", "info"])
                        .contains("cluster_state:ok")
                },
                "the cluster to converge",
            );
        }
        cluster
    }

    /// redis-cli's flags to reach the nodes (TLS with the cluster's CA, if it has one).
    fn tls_args(&self) -> Vec<String> {
        match &self.tls_ca {
            None => Vec::new(),
            Some(ca) => vec!["--tls".into(), "--cacert".into(), ca.display().to_string()],
        }
    }

    fn cli(&self, port: u16, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(self.tls_args())
            .args(["-p", &port.to_string()])
            .args(args)
            .output();
        output
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// One TLS-only cluster node (`--port 0`, `--tls-port`, `--tls-cluster yes`).
    fn start_tls_node(&self, ca: &super::tls::TestCa) -> (u16, Child) {
        let identity = ca.peer("redis-cluster-node");
        for _ in 0..5 {
            let port = free_port_with_free_bus_port();
            let node_dir = self.dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let mut server = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--tls-cluster", "yes", "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(&identity.cert)
                .arg("--tls-key-file")
                .arg(&identity.key)
                .arg("--tls-ca-cert-file")
                .arg(&ca.cert_file)
                .arg("--dir")
                .arg(&node_dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (built with TLS) on the PATH");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if self.cli(port, &["ping"]).contains("PONG") {
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
        panic!("a TLS redis-server did not start on any of five free ports");
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
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.ports
            .iter()
            .map(|p| format!("{scheme}://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Keys matching `pattern` held by each node.
    pub fn keys_per_node(&self, pattern: &str) -> Vec<usize> {
        self.ports
            .iter()
            .map(|port| {
                self.cli(*port, &["--scan", "--pattern", pattern])
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
