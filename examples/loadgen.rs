//! authd's load generator: drives one RPC at a fixed concurrency for a fixed time, with many
//! distinct users and tokens, and always measures grpc.health.v1 Check on the same server first,
//! so the result is read as a ratio to the no-op limit of this machine.
//!
//! ```sh
//! cargo run --release --example loadgen -- --target http://127.0.0.1:50051 \
//!     --rpc verify --concurrency 64 --duration 10s --users 1000
//! ```
//!
//! `--flood-logins N` measures the RPC a second time while N workers hammer Login, and prints the
//! p99 ratio; `--argon2-ceiling` measures one argon2id hash here and prints the Login ceiling
//! (cores ÷ hash time); `--server-pid` prints the server's peak RSS (VmHWM) at the end.
//!
//! Health and Verify go out as request bodies encoded once before the run, and their answers are
//! checked by status and body without being decoded, both through the same raw codec: on a small
//! machine the load generator shares the cores with the server, and building and parsing messages
//! it does not need would be counted against the server. `--rounds N` measures the health baseline
//! and the RPC N times, alternating, and prints each ratio and their median, so a noisy neighbour
//! during one phase does not decide the figure.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use authd::pb::{self, auth_service_client::AuthServiceClient};
use bytes::{Buf as _, BufMut as _, Bytes};
use clap::{Parser, ValueEnum};
use prost::Message as _;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_check_response};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Rpc {
    Verify,
    Login,
    Register,
    /// 95% Verify, 4% Login, 1% Logout of a fresh token.
    Mixed,
    /// Each worker refreshes its own session over and over (one rotation chain per worker, so
    /// `--users` must be at least `--concurrency`).
    Refresh,
    /// Envoy ext_authz `Check` with a valid token in a request Envoy would send (a dozen headers).
    Check,
    Health,
}

#[derive(Debug, Parser)]
struct Args {
    /// The server, e.g. http://127.0.0.1:50051.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    #[arg(long, value_enum, default_value = "verify")]
    rpc: Rpc,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections shared by the workers.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// How long each measured phase lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Users registered before the run (each brings one token).
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Skip the health-check baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Measure the baseline and the RPC this many times, alternating, and print the median ratio.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Also measure the RPC while this many workers flood Login.
    #[arg(long, default_value_t = 0)]
    flood_logins: usize,
    /// Measure one argon2id hash (OWASP parameters) and print the Login ceiling.
    #[arg(long)]
    argon2_ceiling: bool,
    /// Print this process's peak RSS (VmHWM) at the end, and its CPU time per call in each
    /// phase.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) start with the state, field 3;
    // utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// CPU used by the server and by this load generator while a phase ran.
#[derive(Default)]
struct CpuUsed {
    server: Option<Duration>,
    load_generator: Option<Duration>,
}

impl CpuUsed {
    fn since(server_pid: Option<u32>, start: &(Option<Duration>, Option<Duration>)) -> Self {
        let (server, own) = Self::now(server_pid);
        Self {
            server: server
                .zip(start.0)
                .map(|(end, start)| end.saturating_sub(start)),
            load_generator: own
                .zip(start.1)
                .map(|(end, start)| end.saturating_sub(start)),
        }
    }

    fn now(server_pid: Option<u32>) -> (Option<Duration>, Option<Duration>) {
        (
            server_pid.and_then(|pid| cpu_time(&pid.to_string())),
            cpu_time("self"),
        )
    }
}

const PASSWORD: &str = "loadgen correct horse battery staple";

/// What the workers share: connections and the prepared users.
struct Fixture {
    channels: Vec<Channel>,
    /// (email, access token, refresh token)
    users: Vec<(String, String, String)>,
    /// Each user's VerifyRequest, encoded.
    verify_requests: Vec<Bytes>,
    /// The HealthCheckRequest for auth.v1.AuthService, encoded, and the SERVING answer.
    health_request: Bytes,
    health_serving: Bytes,
    run_id: String,
}

/// Sends request bodies encoded beforehand and hands back answers undecoded.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// One unary call with an encoded body; the answer's body, undecoded.
async fn raw_unary(
    channel: Channel,
    path: &'static str,
    body: Bytes,
) -> Result<Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// One phase's outcome.
#[derive(Default)]
struct Outcome {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
    cpu: CpuUsed,
}

impl Outcome {
    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index =
            ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[index]
    }

    fn print(&self, name: &str) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{name:<22} {:>9} ok {:>10.0} rps   p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  errors {:?}",
            self.latencies.len(),
            self.throughput(),
            ms(self.percentile(0.50)),
            ms(self.percentile(0.90)),
            ms(self.percentile(0.99)),
            ms(self.percentile(0.999)),
            self.errors,
        );
        let per_call = |cpu: Option<Duration>| {
            cpu.map_or_else(
                || "-".to_owned(),
                |cpu| {
                    format!(
                        "{:.1} µs",
                        cpu.as_secs_f64() * 1e6 / self.latencies.len().max(1) as f64
                    )
                },
            )
        };
        println!(
            "{:<22} cpu per call: server {}, load generator {}",
            "",
            per_call(self.cpu.server),
            per_call(self.cpu.load_generator),
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            Endpoint::from_shared(args.target.clone())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    let run_id = format!("{:x}", rand::random::<u64>());
    let mut fixture = Fixture {
        channels,
        users: Vec::new(),
        verify_requests: Vec::new(),
        health_request: HealthCheckRequest {
            service: "auth.v1.AuthService".into(),
        }
        .encode_to_vec()
        .into(),
        health_serving: HealthCheckResponse {
            status: health_check_response::ServingStatus::Serving.into(),
        }
        .encode_to_vec()
        .into(),
        run_id,
    };
    if args.rpc != Rpc::Health && args.rpc != Rpc::Register || args.flood_logins > 0 {
        let started = Instant::now();
        fixture.users = register_users(&fixture, args.users, args.concurrency.min(64)).await?;
        println!(
            "prepared {} users in {:.1} s",
            fixture.users.len(),
            started.elapsed().as_secs_f64()
        );
        fixture.verify_requests = fixture
            .users
            .iter()
            .map(|user| {
                pb::VerifyRequest {
                    access_token: user.1.clone(),
                }
                .encode_to_vec()
                .into()
            })
            .collect();
    }
    if args.rpc == Rpc::Refresh && fixture.users.len() < args.concurrency {
        anyhow::bail!("--rpc refresh needs --users >= --concurrency (one session per worker)");
    }
    let fixture = Arc::new(fixture);
    println!(
        "target {}  rpc {:?}  concurrency {}  connections {}  duration {:?}",
        args.target, args.rpc, args.concurrency, args.connections, args.duration
    );

    let mut ratios = Vec::new();
    let mut medians = Vec::new();
    let mut outcome = Outcome::default();
    for round in 1..=args.rounds.max(1) {
        if args.rounds > 1 {
            println!("round {round}");
        }
        let baseline = if args.no_baseline {
            None
        } else {
            let outcome = run_phase(
                &fixture,
                Rpc::Health,
                args.concurrency,
                args.duration,
                0,
                args.server_pid,
            )
            .await;
            outcome.print("health Check");
            Some(outcome)
        };
        outcome = run_phase(
            &fixture,
            args.rpc,
            args.concurrency,
            args.duration,
            0,
            args.server_pid,
        )
        .await;
        outcome.print(&format!("{:?}", args.rpc));
        medians.push(outcome.percentile(0.50).as_secs_f64() * 1e3);
        if let Some(baseline) = &baseline {
            let ratio = outcome.throughput() / baseline.throughput();
            println!(
                "ratio {:?} ÷ health Check throughput = {ratio:.3}",
                args.rpc
            );
            ratios.push(ratio);
        }
    }
    if ratios.len() > 1 {
        ratios.sort_by(f64::total_cmp);
        println!(
            "median ratio {:?} ÷ health Check throughput over {} rounds = {:.3} (each: {})",
            args.rpc,
            ratios.len(),
            ratios[ratios.len() / 2],
            ratios
                .iter()
                .map(|ratio| format!("{ratio:.3}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    if medians.len() > 1 {
        let each = medians
            .iter()
            .map(|p50| format!("{p50:.3}"))
            .collect::<Vec<_>>()
            .join(" ");
        medians.sort_by(f64::total_cmp);
        println!(
            "median p50 {:?} over {} rounds = {:.3} ms (each: {each})",
            args.rpc,
            medians.len(),
            medians[medians.len() / 2],
        );
    }
    if args.flood_logins > 0 {
        let flooded = run_phase(
            &fixture,
            args.rpc,
            args.concurrency,
            args.duration,
            args.flood_logins,
            args.server_pid,
        )
        .await;
        flooded.print(&format!("{:?} + Login flood", args.rpc));
        println!(
            "ratio p99 under a {}-worker Login flood ÷ p99 idle = {:.2}",
            args.flood_logins,
            flooded.percentile(0.99).as_secs_f64() / outcome.percentile(0.99).as_secs_f64()
        );
    }
    if args.argon2_ceiling {
        let hash_time = time_one_argon2_hash();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let ceiling = cores as f64 / hash_time.as_secs_f64();
        println!(
            "argon2id m=19456 t=2 p=1: {:.2} ms per hash, ceiling {cores} cores ÷ hash = {ceiling:.1} logins/s",
            hash_time.as_secs_f64() * 1e3
        );
        if args.rpc == Rpc::Login {
            println!(
                "ratio Login throughput ÷ argon2 ceiling = {:.3}",
                outcome.throughput() / ceiling
            );
        }
    }
    if let Some(pid) = args.server_pid {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        for line in status
            .lines()
            .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        {
            println!("server {line}");
        }
    }
    Ok(())
}

async fn register_users(
    fixture: &Fixture,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..concurrency.max(1) {
        let mut client =
            AuthServiceClient::new(fixture.channels[worker % fixture.channels.len()].clone());
        let next = next.clone();
        let run_id = fixture.run_id.clone();
        workers.push(tokio::spawn(async move {
            let mut users = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, tonic::Status>(users);
                }
                let email = format!("loadgen-{run_id}-{i}@example.com");
                let response = loop {
                    let request = pb::RegisterRequest {
                        email: email.clone(),
                        password: PASSWORD.into(),
                        username: String::new(),
                    };
                    match client.register(request).await {
                        Ok(response) => break response.into_inner(),
                        // Shed under load: wait and retry.
                        Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(status) => return Err(status),
                    }
                };
                let tokens = response.tokens.unwrap_or_default();
                users.push((email, tokens.access_token, tokens.refresh_token));
            }
        }));
    }
    let mut users = Vec::with_capacity(count);
    for worker in workers {
        users.extend(worker.await??);
    }
    Ok(users)
}

/// Runs `concurrency` workers calling `rpc` for `duration` (plus `flood` Login workers whose
/// results are not recorded).
async fn run_phase(
    fixture: &Arc<Fixture>,
    rpc: Rpc,
    concurrency: usize,
    duration: Duration,
    flood: usize,
    server_pid: Option<u32>,
) -> Outcome {
    let cpu_at_start = CpuUsed::now(server_pid);
    let deadline = Instant::now() + duration;
    let mut flooders = Vec::new();
    for worker in 0..flood {
        let fixture = fixture.clone();
        flooders.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let mut refresh = String::new();
            while Instant::now() < deadline {
                let _ = call(&fixture, Rpc::Login, worker, &mut outcome, &mut refresh).await;
            }
        }));
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency.max(1) {
        let fixture = fixture.clone();
        workers.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let mut iteration = worker;
            // Refresh: this worker's own rotation chain.
            let mut refresh = fixture
                .users
                .get(worker)
                .map(|user| user.2.clone())
                .unwrap_or_default();
            while Instant::now() < deadline {
                let call_started = Instant::now();
                if call(&fixture, rpc, iteration, &mut outcome, &mut refresh).await {
                    outcome.latencies.push(call_started.elapsed());
                }
                iteration += concurrency;
            }
            outcome
        }));
    }
    let mut total = Outcome::default();
    for worker in workers {
        let outcome = worker.await.expect("worker panicked");
        total.latencies.extend(outcome.latencies);
        for (code, count) in outcome.errors {
            *total.errors.entry(code).or_default() += count;
        }
    }
    for flooder in flooders {
        let _ = flooder.await;
    }
    total.elapsed = started.elapsed();
    total.cpu = CpuUsed::since(server_pid, &cpu_at_start);
    total.latencies.sort_unstable();
    total
}

/// One call; true when it succeeded (errors are counted by code). `refresh` is the calling
/// worker's current refresh token (Refresh replaces it).
async fn call(
    fixture: &Fixture,
    rpc: Rpc,
    iteration: usize,
    outcome: &mut Outcome,
    refresh: &mut String,
) -> bool {
    let channel = fixture.channels[iteration % fixture.channels.len()].clone();
    let user = |i: usize| &fixture.users[i % fixture.users.len().max(1)];
    let mut client = AuthServiceClient::new(channel.clone());
    let result = match rpc {
        Rpc::Health => raw_unary(
            channel,
            "/grpc.health.v1.Health/Check",
            fixture.health_request.clone(),
        )
        .await
        .and_then(|body| {
            if body == fixture.health_serving {
                Ok(())
            } else {
                Err(tonic::Status::unavailable("not SERVING"))
            }
        }),
        Rpc::Verify => raw_unary(
            channel,
            "/auth.v1.AuthService/Verify",
            fixture.verify_requests[iteration % fixture.verify_requests.len().max(1)].clone(),
        )
        .await
        .and_then(|body| {
            // An OK Verify always names the user, so its body is never empty.
            if body.is_empty() {
                Err(tonic::Status::internal("empty VerifyResponse"))
            } else {
                Ok(())
            }
        }),
        Rpc::Check => {
            use envoy_types::pb::envoy::service::auth::v3::{
                AttributeContext, CheckRequest, attribute_context,
                authorization_client::AuthorizationClient,
            };
            let headers = [
                (":authority", "api.example.com"),
                (":method", "GET"),
                (":path", "/v1/orders?page=2"),
                (":scheme", "https"),
                ("accept", "application/json"),
                ("accept-encoding", "gzip, deflate, br"),
                ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) loadgen"),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-request-id", "4f1c2d7e-9b8a-4c3d-8e2f-1a2b3c4d5e6f"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .chain([(
                "authorization".to_owned(),
                format!("Bearer {}", user(iteration).1),
            )])
            .collect();
            let request = CheckRequest {
                attributes: Some(AttributeContext {
                    request: Some(attribute_context::Request {
                        http: Some(attribute_context::HttpRequest {
                            method: "GET".into(),
                            path: "/v1/orders?page=2".into(),
                            host: "api.example.com".into(),
                            scheme: "https".into(),
                            protocol: "HTTP/2".into(),
                            headers,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            };
            match AuthorizationClient::new(channel).check(request).await {
                Ok(response) => match response.into_inner().status {
                    Some(status) if status.code == 0 => Ok(()),
                    other => Err(tonic::Status::new(
                        tonic::Code::from(other.map_or(2, |s| s.code)),
                        "denied",
                    )),
                },
                Err(status) => Err(status),
            }
        }
        Rpc::Refresh => client
            .refresh(pb::RefreshRequest {
                refresh_token: refresh.clone(),
            })
            .await
            .map(|response| {
                *refresh = response
                    .into_inner()
                    .tokens
                    .unwrap_or_default()
                    .refresh_token;
            }),
        Rpc::Login => client
            .login(pb::LoginRequest {
                email: user(iteration).0.clone(),
                password: PASSWORD.into(),
            })
            .await
            .map(drop),
        Rpc::Register => client
            .register(pb::RegisterRequest {
                email: format!("loadgen-{}-new-{iteration}@example.com", fixture.run_id),
                password: PASSWORD.into(),
                username: String::new(),
            })
            .await
            .map(drop),
        Rpc::Mixed => match iteration % 100 {
            0..=94 => client
                .verify(pb::VerifyRequest {
                    access_token: user(iteration).1.clone(),
                })
                .await
                .map(drop),
            95..=98 => client
                .login(pb::LoginRequest {
                    email: user(iteration).0.clone(),
                    password: PASSWORD.into(),
                })
                .await
                .map(drop),
            _ => {
                let login = client
                    .login(pb::LoginRequest {
                        email: user(iteration).0.clone(),
                        password: PASSWORD.into(),
                    })
                    .await;
                match login {
                    Ok(response) => {
                        let token = response
                            .into_inner()
                            .tokens
                            .unwrap_or_default()
                            .access_token;
                        client
                            .logout(pb::LogoutRequest {
                                access_token: token,
                                refresh_token: String::new(),
                            })
                            .await
                            .map(drop)
                    }
                    Err(status) => Err(status),
                }
            }
        },
    };
    match result {
        Ok(()) => true,
        Err(status) => {
            *outcome
                .errors
                .entry(format!("{:?}", status.code()))
                .or_default() += 1;
            false
        }
    }
}

fn time_one_argon2_hash() -> Duration {
    use argon2::{Argon2, password_hash::PasswordHasher as _};
    let argon2 = Argon2::default();
    // Warm up, then take the median of 15.
    let _ = argon2.hash_password(b"warm up");
    let mut times: Vec<Duration> = (0..15)
        .map(|_| {
            let started = Instant::now();
            let _ = argon2.hash_password(PASSWORD.as_bytes());
            started.elapsed()
        })
        .collect();
    times.sort();
    times[7]
}
