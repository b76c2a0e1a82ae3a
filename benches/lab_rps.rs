//! Lab benchmarks: requests per second the lab serves at latency 0 over real HTTP (loopback)
//! from several concurrent keep-alive clients, and the time to generate (and load) a
//! 10,000-mailbox scenario.
//!
//! ```text
//! cargo bench --bench lab_rps                                  # 100,000 requests per phase
//! cargo bench --bench lab_rps -- --requests 200000 --concurrency 64 --seconds 20
//! ```
//! Goal (issue 2): ≥ 20,000 requests/s on a 2-core machine, so the lab is never the bottleneck
//! of our own benchmarks. Clients and lab share this process and the machine's cores (and the
//! machine may be shared), so the wall-clock rate is a lower bound. The lab runs on its own
//! runtime threads (`lab-srv*`); their on-CPU time per request (from
//! `/proc/self/task/*/schedstat`, kernel time included) gives what the lab alone could serve
//! with all cores, which does not depend on other load. Both are printed.
//!
//! Every phase is bounded by a request count and a duration; only 2xx answers count as served,
//! anything else is reported.

use clawback::lab::generate::{GenerateKind, GenerateOptions, generate};
use clawback::lab::graph::fixture;
use clawback::lab::oauth_ms::GRAPH_DEFAULT_SCOPE;
use clawback::lab::scenario::lab_client_secret;
use clawback::lab::{LabOptions, LabServer};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// On-CPU nanoseconds of this process's threads whose name starts with `prefix`
/// (`/proc/self/task/*/schedstat`; Linux only, `None` elsewhere).
fn thread_cpu_ns(prefix: &str) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

struct Args {
    requests: u64,
    concurrency: usize,
    seconds: u64,
    mailboxes: usize,
    generate_runs: usize,
}

fn args() -> Args {
    let mut a = Args {
        requests: 100_000,
        concurrency: 32,
        seconds: 15,
        mailboxes: 500,
        generate_runs: 3,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = |i: usize| -> u64 {
            argv.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| {
                    eprintln!("lab_rps: {} needs a number", argv[i]);
                    std::process::exit(2)
                })
        };
        match argv[i].as_str() {
            "--requests" => a.requests = value(i),
            "--concurrency" => a.concurrency = value(i) as usize,
            "--seconds" => a.seconds = value(i),
            "--mailboxes" => a.mailboxes = value(i) as usize,
            "--generate-runs" => a.generate_runs = value(i) as usize,
            "--bench" => {
                i += 1;
                continue;
            }
            other => {
                eprintln!(
                    "lab_rps: unknown argument {other}; use --requests N --concurrency C --seconds S --mailboxes M --generate-runs R"
                );
                std::process::exit(2)
            }
        }
        i += 2;
    }
    a
}

async fn token(server: &LabServer) -> String {
    let client_id = {
        let state = server.lab.state();
        let t = state.tenant_index("bench").unwrap_or(0);
        state.tenants[t].credentials.client_id.clone()
    };
    let resp = reqwest::Client::new()
        .post(format!("{}/bench/oauth2/v2.0/token", server.base_url()))
        .form(&[
            ("client_id", client_id.as_str()),
            ("client_secret", lab_client_secret("bench").as_str()),
            ("scope", GRAPH_DEFAULT_SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap_or_else(|e| panic!("token request: {e}"));
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token from the lab: {body}"))
        .to_string()
}

struct Outcome {
    /// On-CPU time of the lab's own threads during the phase.
    lab_cpu: Option<Duration>,
    /// On-CPU time of the client threads during the phase.
    client_cpu: Option<Duration>,
    ok: u64,
    other: u64,
    throttled: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// Runs `requests` GETs built by `url(n)` from `concurrency` tasks, at most `limit` long.
async fn phase(
    http: &reqwest::Client,
    token: &str,
    requests: u64,
    concurrency: usize,
    limit: Duration,
    url: Arc<dyn Fn(u64) -> String + Send + Sync>,
) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    let cpu_before = thread_cpu_ns(LAB_THREADS);
    let client_before = thread_cpu_ns(CLIENT_THREADS);
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, token, next, url) = (http.clone(), token.to_string(), next.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut other, mut throttled) = (0u64, 0u64, 0u64);
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests || Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                match http.get(url(n)).bearer_auth(&token).send().await {
                    Ok(r) => {
                        let status = r.status();
                        let _ = r.bytes().await;
                        if status.is_success() {
                            ok += 1;
                        } else if status.as_u16() == 429 {
                            throttled += 1;
                        } else {
                            other += 1;
                        }
                    }
                    Err(_) => other += 1,
                }
                if n % 16 == 0 {
                    latencies.push(t0.elapsed());
                }
            }
            (ok, other, throttled, latencies)
        }));
    }
    let mut out = Outcome {
        lab_cpu: None,
        client_cpu: None,
        ok: 0,
        other: 0,
        throttled: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for t in tasks {
        if let Ok((ok, other, throttled, lat)) = t.await {
            out.ok += ok;
            out.other += other;
            out.throttled += throttled;
            out.latencies.extend(lat);
        }
    }
    out.elapsed = started.elapsed();
    out.lab_cpu = match (cpu_before, thread_cpu_ns(LAB_THREADS)) {
        (Some(a), Some(b)) => Some(Duration::from_nanos(b.saturating_sub(a))),
        _ => None,
    };
    out.client_cpu = match (client_before, thread_cpu_ns(CLIENT_THREADS)) {
        (Some(a), Some(b)) => Some(Duration::from_nanos(b.saturating_sub(a))),
        _ => None,
    };
    out.latencies.sort();
    out
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(name: &str, o: &Outcome) {
    let rps = o.ok as f64 / o.elapsed.as_secs_f64();
    println!(
        "{name:<44} {:>7} ok {:>4} 429 {:>4} other in {:>5.2} s = {:>7.0} req/s wall  (p50 {:.2} ms, p99 {:.2} ms)",
        o.ok,
        o.throttled,
        o.other,
        o.elapsed.as_secs_f64(),
        rps,
        pct(&o.latencies, 0.5),
        pct(&o.latencies, 0.99),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if let Some(cpu) = o.lab_cpu.filter(|_| o.ok > 0) {
        let per_request = cpu.as_secs_f64() / (o.ok + o.throttled + o.other) as f64;
        let capacity = cores / per_request;
        println!(
            "{:<44} lab threads used {:.2} CPU-s = {:.1} µs CPU per request → {:.0} req/s on {} cores if the lab had them to itself {}",
            "",
            cpu.as_secs_f64(),
            per_request * 1e6,
            capacity,
            cores,
            if capacity >= 20_000.0 {
                "[goal ≥ 20,000/s met]"
            } else {
                "[below the 20,000/s goal]"
            }
        );
    }
    if let Some(cpu) = o.client_cpu.filter(|_| o.ok > 0) {
        println!(
            "{:<44} client threads used {:.2} CPU-s = {:.1} µs CPU per request",
            "",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / (o.ok + o.throttled + o.other) as f64
        );
    }
}

/// Thread-name prefix of the lab's runtime (the clients run on other threads).
const LAB_THREADS: &str = "lab-srv";
/// Thread-name prefix of the clients' runtime.
const CLIENT_THREADS: &str = "bench-cli";

fn bench_rps(a: &Args) {
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the {name} runtime: {e}"))
    };
    let lab_runtime = runtime(LAB_THREADS);
    let clients = runtime(CLIENT_THREADS);
    let server = lab_runtime.block_on(async {
        let scenario = fixture::many_mailboxes(a.mailboxes, 4);
        let options = LabOptions {
            latency: Duration::ZERO,
            // Enough slots for every client: the benchmark measures serving, not throttling.
            capacity: a.concurrency * 4,
            ..Default::default()
        };
        LabServer::start(&scenario, options, ([127, 0, 0, 1], 0).into())
            .await
            .unwrap_or_else(|e| panic!("lab: {e}"))
    });
    clients.block_on(async {
        let base = server.base_url();
        let token = token(&server).await;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(a.concurrency)
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"));
        let mailboxes = a.mailboxes as u64;
        // Message ids per mailbox, to fetch by id.
        let ids: Vec<String> = {
            let state = server.lab.state();
            let t = state.tenant_index("bench").unwrap_or(0);
            (0..a.mailboxes)
                .map(|n| {
                    state.tenants[t].mailboxes[&format!("user{n}@bench.example")]
                        .copies
                        .keys()
                        .next()
                        .cloned()
                        .unwrap_or_default()
                })
                .collect()
        };
        let ids = Arc::new(ids);
        let limit = Duration::from_secs(a.seconds);
        println!(
            "lab at {base}, latency 0, {} mailboxes, {} concurrent clients, ≤ {} requests and ≤ {} s per phase; load average {}",
            a.mailboxes,
            a.concurrency,
            a.requests,
            a.seconds,
            load_average()
        );
        // Warm up connections.
        let b = base.clone();
        phase(&http, &token, 2_000, a.concurrency, limit, Arc::new(move |n| {
            format!("{b}/v1.0/users/user{}@bench.example/messages?$top=1", n % mailboxes)
        }))
        .await;

        let b = base.clone();
        let ids2 = ids.clone();
        let o = phase(&http, &token, a.requests, a.concurrency, limit, Arc::new(move |n| {
            let m = n % mailboxes;
            format!("{b}/v1.0/users/user{m}@bench.example/messages/{}?$select=id,isRead", ids2[m as usize])
        }))
        .await;
        report("Graph GET message by id", &o);

        let b = base.clone();
        let o = phase(&http, &token, a.requests, a.concurrency, limit, Arc::new(move |n| {
            let m = n % mailboxes;
            let k = (n / mailboxes) % 4;
            format!(
                "{b}/v1.0/users/user{m}@bench.example/messages?$filter=internetMessageId%20eq%20'%3Cm{k}.u{m}%40bench.example%3E'&$select=id"
            )
        }))
        .await;
        report("Graph locate by internetMessageId ($filter)", &o);

        let b = base.clone();
        let o = phase(&http, &token, a.requests, a.concurrency, limit, Arc::new(move |_| {
            format!("{b}/_lab/stats")
        }))
        .await;
        report("/_lab/stats (no auth, no limits)", &o);
    });
    lab_runtime.block_on(server.stop());
}

fn bench_generate(a: &Args) {
    let mut gen_times = Vec::new();
    let mut build_times = Vec::new();
    let mut summary = String::new();
    for run in 0..a.generate_runs.max(1) {
        let opts = GenerateOptions {
            mailboxes: 10_000,
            campaign_recipients: 1_000,
            seed: 1 + run as u64,
            kind: GenerateKind::Mixed,
            background_messages: 20,
        };
        let t0 = Instant::now();
        let scenario = match generate(&opts) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("lab_rps: generate: {e}");
                std::process::exit(1)
            }
        };
        gen_times.push(t0.elapsed());
        let t1 = Instant::now();
        let state = match scenario.build() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("lab_rps: build: {e}");
                std::process::exit(1)
            }
        };
        build_times.push(t1.elapsed());
        let users: usize = scenario.tenants.iter().map(|t| t.users.len()).sum();
        let mailboxes: usize = state.tenants.iter().map(|t| t.mailboxes.len()).sum();
        let copies: usize = state
            .tenants
            .iter()
            .flat_map(|t| t.mailboxes.values())
            .map(|m| m.copies.len())
            .sum();
        summary = format!("{users} users, {mailboxes} mailboxes, {copies} copies");
    }
    gen_times.sort();
    build_times.sort();
    let med = |v: &[Duration]| v[v.len() / 2].as_secs_f64() * 1000.0;
    println!(
        "generate 10,000-mailbox scenario ({summary}): median {:.1} ms, min {:.1} ms over {} runs",
        med(&gen_times),
        gen_times[0].as_secs_f64() * 1000.0,
        gen_times.len()
    );
    println!(
        "load it into a lab world (Scenario::build):   median {:.1} ms, min {:.1} ms",
        med(&build_times),
        build_times[0].as_secs_f64() * 1000.0
    );
}

fn main() {
    let a = args();
    bench_generate(&a);
    bench_rps(&a);
}
