//! End-to-end retraction benchmark (issue 5): a campaign delivered to 10,000 mailboxes (mixed
//! Microsoft 365 + Google Workspace lab), retracted to Junk by the release binary
//! `clawback retract --yes` against a lab in its own process (latency 20 ms, capacity 256 per
//! tenant). The trace is prepared beforehand (not timed).
//!
//! ```text
//! cargo bench --bench retract_e2e
//! cargo bench --bench retract_e2e -- --mailboxes 2000 --latency-ms 10 --capacity 64
//! bash -c 'source .ci/postgres.sh; cargo bench --bench retract_e2e -- --store postgres'
//! ```
//!
//! `--store postgres` keeps the store on PostgreSQL (issue 17): each run gets a new database on
//! `$CLAWBACK_TEST_PG_URL` (e.g. the cluster `.ci/postgres.sh` starts), or on a private
//! throwaway cluster when it is unset (`clawback::store::pg::testing`), and the retract process
//! opens it through `CLAWBACK_STORE_URL`; everything else is the same as on SQLite (the default).
//!
//! Three runs by default (`--kinds microsoft365,google_warm,mixed`): Microsoft 365 only,
//! Google Workspace only with every per-user token kept by an earlier `--dry-run` (not timed)
//! in the data dir's token file, and the mixed campaign cold. Each prints, per tenant,
//! sub-requests per copy, and for the run the **minimal-work floor** (2 sub-requests per copy ×
//! latency ÷ capacity, tenants served in parallel; a cold Google tenant adds the RS256
//! signing floor of its per-user tokens) and wall ÷ floor (goal ≤ 2.0×).
//!
//! Reports the wall time of the retract command (plan + job), the lab's ideal bound
//! `(sub-requests served during the run) × latency ÷ capacity` and their ratio (for information:
//! DESIGN §9's budget is the floor above, which a client cannot lower by sending more), the
//! stricter per-tenant bound (tenants are served in parallel), and the clawback process's peak
//! RSS (VmHWM from /proc, sampled while it runs).
//!
//! `E2E_TIMELINE=1` also prints, per 100 ms of the run, the lab's slots in use and the
//! sub-requests it served per tenant (a ramp, a stall or a tail shows where the wall time over
//! the ideal bound goes); `E2E_STDERR=1` shows the retract command's stderr.

#[path = "support/signing.rs"]
mod support_signing;

use clawback::lab::demo::CAMPAIGN_MESSAGE_ID;
use clawback::lab::generate::{GenerateKind, GenerateOptions, generate};
use clawback::store::Store;
use clawback::trace::{RecipientKind, TraceRecord};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Options {
    mailboxes: usize,
    latency_ms: u64,
    capacity: usize,
    kinds: Vec<String>,
    /// `--store postgres`: the store on PostgreSQL (see the module documentation).
    postgres: bool,
}

fn options() -> Options {
    let mut o = Options {
        mailboxes: 10_000,
        latency_ms: 20,
        capacity: 256,
        kinds: vec!["microsoft365".into(), "google_warm".into(), "mixed".into()],
        postgres: false,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        if args[i] == "--kinds"
            && let Some(v) = args.get(i + 1)
        {
            o.kinds = v.split(',').map(|k| k.trim().to_string()).collect();
            i += 2;
            continue;
        }
        if args[i] == "--store" {
            match args.get(i + 1).map(String::as_str) {
                Some("postgres") => o.postgres = true,
                Some("sqlite") => o.postgres = false,
                other => {
                    eprintln!("retract_e2e: --store takes sqlite or postgres, not {other:?}");
                    std::process::exit(2);
                }
            }
            i += 2;
            continue;
        }
        let value = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (args[i].as_str(), value) {
            ("--mailboxes", Some(v)) => o.mailboxes = v as usize,
            ("--latency-ms", Some(v)) => o.latency_ms = v,
            ("--capacity", Some(v)) => o.capacity = v as usize,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

struct LabProcess {
    child: Child,
    base: String,
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_clawback")
}

fn start_lab(dir: &Path, scenario: &Path, o: &Options) -> LabProcess {
    let mut child = Command::new(bin())
        .args(["lab", "serve", "--addr", "127.0.0.1:0", "--scenario"])
        .arg(scenario)
        .arg("--write-config")
        .arg(dir.join("lab.toml"))
        .args(["--latency-ms", &o.latency_ms.to_string()])
        .args(["--capacity", &o.capacity.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lab");
    let stdout = child.stdout.take().expect("lab stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut base = None;
    for _ in 0..10 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("lab listening on ") {
            base = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    LabProcess {
        child,
        base: base.expect("lab printed its address"),
    }
}

fn get(rt: &tokio::runtime::Runtime, url: &str) -> Value {
    rt.block_on(async {
        reqwest::get(url)
            .await
            .expect("lab answers")
            .json::<Value>()
            .await
            .expect("lab JSON")
    })
}

/// CPU seconds (user + system) from `/proc/{pid}/stat`: the process's own (`children` false),
/// or what its waited-for children used (`children` true). Linux counts in USER_HZ, which is
/// 100 on every Linux ABI.
fn cpu_secs(pid: &str, children: bool) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14..=17 of the whole line; `rest` starts at 3.
    let at = if children { 13 } else { 11 };
    let ticks: u64 =
        fields.get(at)?.parse::<u64>().ok()? + fields.get(at + 1)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Peak resident set size of a process so far, in KiB (Linux).
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Per 100 ms of the run: the mean slots in use and the sub-requests served, per tenant.
fn print_timeline(samples: &[(f64, Value)], before: &Value) {
    let mut last = served(before);
    let mut bucket = 0usize;
    let mut slots: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (t, s) in samples {
        for (k, v) in s["slots_in_use"].as_object().into_iter().flatten() {
            let e = slots.entry(k.clone()).or_default();
            e.0 += v.as_u64().unwrap_or(0);
            e.1 += 1;
        }
        if (t * 10.0) as usize > bucket {
            let now = served(s);
            let line: Vec<String> = slots
                .iter()
                .map(|(k, (sum, n))| {
                    let d = now.get(k).copied().unwrap_or(0) - last.get(k).copied().unwrap_or(0);
                    format!("{k} slots {:>3} served {d:>5}", sum / (*n).max(1))
                })
                .collect();
            println!("  t {:>4.1} s  {}", t, line.join("  "));
            last = now;
            slots.clear();
            bucket = (t * 10.0) as usize;
        }
    }
}

fn served(stats: &Value) -> BTreeMap<String, u64> {
    stats["served"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

fn main() {
    let o = options();
    let mut failed = false;
    for k in &o.kinds {
        let (kind, warm) = match k.as_str() {
            "microsoft365" => (GenerateKind::Microsoft365, false),
            "google" => (GenerateKind::GoogleWorkspace, false),
            "google_warm" => (GenerateKind::GoogleWorkspace, true),
            "mixed" => (GenerateKind::Mixed, false),
            other => {
                eprintln!(
                    "retract_e2e: unknown kind {other:?} in --kinds (microsoft365, google, google_warm, mixed)"
                );
                std::process::exit(2);
            }
        };
        failed |= !run(&o, kind, warm);
    }
    if failed {
        std::process::exit(1);
    }
}

/// The wall time `users` RS256 signatures of the service account take on this machine's cores.
fn signing_floor(config: &Path, users: usize) -> f64 {
    use clawback::config::Config;
    let floor = std::fs::read_to_string(config)
        .map_err(|e| e.to_string())
        .and_then(|text| Config::parse(&text, config).map_err(|e| e.to_string()))
        .and_then(|c| {
            let t = c
                .tenants
                .iter()
                .find(|t| t.kind == clawback::model::TenantKind::GoogleWorkspace)
                .ok_or("no Google tenant")?;
            support_signing::signing_floor(&c, t, users)
        });
    match floor {
        Ok(f) => {
            println!(
                "  signing floor          {users} per-user tokens × {:.2} ms per RS256 signature ÷ {} cores = {:.2} s",
                f.each * 1000.0,
                f.cores,
                f.floor
            );
            f.floor
        }
        Err(e) => {
            println!("  signing floor: cannot load the service account: {e}");
            0.0
        }
    }
}

/// One measured retraction; `false` when it did not retract every copy.
fn run(o: &Options, kind: GenerateKind, warm: bool) -> bool {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let data = dir.join("data");

    let scenario = generate(&GenerateOptions {
        mailboxes: o.mailboxes,
        campaign_recipients: o.mailboxes,
        seed: 1,
        kind,
        background_messages: 20,
    })
    .expect("generate");
    let scenario_path = dir.join("scenario.json");
    std::fs::write(
        &scenario_path,
        serde_json::to_string(&scenario).expect("JSON"),
    )
    .expect("write scenario");
    let lab = start_lab(dir, &scenario_path, o);
    let config = dir.join("lab.toml");

    // The trace: the campaign with its copies as envelope recipients, one record per tenant.
    let mut records = Vec::new();
    for t in &scenario.tenants {
        for m in t
            .messages
            .iter()
            .filter(|m| m.message_id == CAMPAIGN_MESSAGE_ID)
        {
            let mut r = TraceRecord {
                tenant: t.name.clone(),
                message_id: CAMPAIGN_MESSAGE_ID.to_string(),
                sender: m.from.to_ascii_lowercase(),
                subject: m.subject.clone(),
                received: 1_736_150_400,
                size: 2_048,
                ..Default::default()
            };
            for c in &m.copies {
                r.add_recipient(&c.mailbox, RecipientKind::Envelope);
            }
            records.push(r);
        }
    }
    let postgres = o.postgres.then(|| {
        clawback::store::pg::testing::fresh_database().expect("a PostgreSQL database for the store")
    });
    let mut store = match &postgres {
        Some(loc) => Store::open_postgres(loc, Some(&data)),
        None => Store::open_in_dir(&data),
    }
    .expect("store");
    store.upsert_trace(&records).expect("trace");
    drop(store);

    // Copies (and Google users) per tenant, for the floor.
    let copies_per_tenant: BTreeMap<String, (u64, bool)> = scenario
        .tenants
        .iter()
        .map(|t| {
            let n = t
                .messages
                .iter()
                .filter(|m| m.message_id == CAMPAIGN_MESSAGE_ID)
                .map(|m| m.copies.len() as u64)
                .sum();
            (
                t.name.clone(),
                (n, t.kind == clawback::model::TenantKind::GoogleWorkspace),
            )
        })
        .collect();
    let retract = |extra: &str| {
        let mut c = Command::new(bin());
        c.arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "retract",
                "--message-id",
                CAMPAIGN_MESSAGE_ID,
                "--action",
                "junk",
                extra,
            ])
            .stdin(Stdio::null());
        match &postgres {
            // The locator's shown form: a test cluster's connection string (no password).
            Some(loc) => c.env(clawback::config::STORE_URL_ENV, loc.to_string()),
            None => c.env_remove(clawback::config::STORE_URL_ENV),
        };
        c
    };
    if warm {
        // Not timed: a dry run plans every copy, fetching (and keeping) every user's token.
        let out = retract("--dry-run")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("dry run");
        assert!(out.success(), "the warm-up dry run failed: {out}");
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stats_url = format!("{}/_lab/stats", lab.base);
    let before = get(&rt, &stats_url);
    let lab_pid = lab.child.id().to_string();
    let lab_cpu_before = cpu_secs(&lab_pid, false);
    let children_cpu_before = cpu_secs("self", true);

    let started = Instant::now();
    let mut child = retract("--yes")
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("E2E_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("spawn retract");
    let pid = child.id();
    let mut peak_kib = 0u64;
    // `E2E_TIMELINE=1`: the lab's slots in use and sub-requests served, sampled every 10 ms
    // while the retraction runs (where the wall time over the ideal bound goes).
    let timeline = std::env::var_os("E2E_TIMELINE").is_some();
    let mut samples: Vec<(f64, Value)> = Vec::new();
    let status = loop {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak_kib = peak_kib.max(kib);
        }
        if timeline {
            samples.push((started.elapsed().as_secs_f64(), get(&rt, &stats_url)));
        }
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let wall = started.elapsed().as_secs_f64();
    if timeline {
        print_timeline(&samples, &before);
    }
    // The retract process is waited for: its CPU is in this process's children's account.
    let client_cpu = cpu_secs("self", true)
        .zip(children_cpu_before)
        .map(|(a, b)| a - b);
    let lab_cpu = cpu_secs(&lab_pid, false)
        .zip(lab_cpu_before)
        .map(|(a, b)| a - b);
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        let _ = so.read_to_string(&mut out);
    }
    let after = get(&rt, &stats_url);

    // The job's own time, from "job N finished: … in X.Ys".
    let job_secs: Option<f64> = out
        .lines()
        .find(|l| l.starts_with("job "))
        .and_then(|l| l.rsplit(" in ").next())
        .and_then(|t| t.trim_end_matches('s').parse().ok());
    let (b, a) = (served(&before), served(&after));
    let per_tenant: BTreeMap<String, u64> = a
        .iter()
        .map(|(t, n)| (t.clone(), n - b.get(t).copied().unwrap_or(0)))
        .collect();
    let total: u64 = per_tenant.values().sum();
    let latency = o.latency_ms as f64 / 1000.0;
    let ideal = total as f64 * latency / o.capacity as f64;
    let ideal_parallel =
        per_tenant.values().copied().max().unwrap_or(0) as f64 * latency / o.capacity as f64;
    let actions = after["actions_total"].as_u64().unwrap_or(0)
        - before["actions_total"].as_u64().unwrap_or(0);
    let throttled = after["throttled_total"].as_u64().unwrap_or(0)
        - before["throttled_total"].as_u64().unwrap_or(0);

    println!(
        "retract_e2e {kind:?}{}: {} mailboxes, latency {} ms, capacity {} per tenant, store {}",
        if warm { " (warm: tokens kept)" } else { "" },
        o.mailboxes,
        o.latency_ms,
        o.capacity,
        match &postgres {
            Some(loc) => format!("PostgreSQL ({})", loc.database()),
            None => "SQLite".to_string(),
        }
    );
    println!("  exit status            {status}");
    println!("  copies acted on (lab)  {actions}");
    println!("  wall time              {wall:.2} s");
    if let Some(j) = job_secs {
        println!(
            "    of which plan        {:.2} s (start-up, resolve, locate)",
            wall - j
        );
        println!("    of which job         {j:.2} s");
    }
    println!("  sub-requests served    {total} {per_tenant:?}");
    println!("  429s                   {throttled}");
    println!("  ideal bound            {ideal:.2} s  (served × latency ÷ capacity)");
    println!(
        "  ratio                  {:.2}×  (information; the budget is wall ÷ floor below)",
        wall / ideal
    );
    println!(
        "  per-tenant bound       {ideal_parallel:.2} s  (tenants served in parallel; ratio {:.2}×)",
        wall / ideal_parallel
    );
    if let (Some(c), Some(l)) = (client_cpu, lab_cpu) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        println!(
            "  CPU                    clawback {c:.2} s ({:.0} µs per copy), lab {l:.2} s ({:.0} µs per copy); (clawback + lab) ÷ {cores} cores = {:.2} s",
            c * 1e6 / o.mailboxes.max(1) as f64,
            l * 1e6 / o.mailboxes.max(1) as f64,
            (c + l) / cores as f64
        );
    }
    println!(
        "  peak RSS (VmHWM)       {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
    // The minimal-work floor: one locate and one action per copy, tenants in parallel; a cold
    // Google tenant signs a token per user first.
    let mut floor = 0f64;
    for (t, (copies, google)) in &copies_per_tenant {
        let served_t = per_tenant.get(t).copied().unwrap_or(0);
        let mut f = 2.0 * *copies as f64 * latency / o.capacity as f64;
        let signing = if *google && !warm {
            signing_floor(&config, *copies as usize)
        } else {
            0.0
        };
        f += signing;
        floor = floor.max(f);
        println!(
            "  {t:<22} {copies} copies, {:.2} sub-requests per copy (goal ≤ 3), floor {f:.2} s{}",
            served_t as f64 / (*copies).max(1) as f64,
            if signing > 0.0 {
                format!(" (of which RS256 signing {signing:.2} s)")
            } else {
                String::new()
            }
        );
    }
    println!(
        "  minimal-work floor     {floor:.2} s  (2 × copies × latency ÷ capacity per tenant{})",
        if kind != GenerateKind::Microsoft365 && !warm {
            " + signing"
        } else {
            ""
        }
    );
    println!(
        "  wall ÷ floor           {:.2}×  (goal ≤ 2.0×)",
        wall / floor.max(1e-9)
    );
    if actions != o.mailboxes as u64 || !status.success() {
        eprintln!("retract_e2e: the run did not retract every copy:\n{out}");
        return false;
    }
    true
}
