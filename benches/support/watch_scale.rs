//! `watch` on a generated Microsoft 365 lab of N mailboxes with the tenant-wide message trace
//! granted: the watcher's own cycles (real Graph client over HTTP, real SQLite store), a
//! malicious message delivered with `/_lab/deliver` to 50 mailboxes, then how long until the
//! lab records the first and the last retraction, and what cycles cost in requests. Shared by
//! `benches/watch_scale.rs` (100,000 mailboxes, release) and `tests/automation.rs` (a smaller
//! tenant in debug, asserting correctness only).

use clawback::config::Config;
use clawback::engine::Engine;
use clawback::engine::automation::{WatchOptions, Watcher};
use clawback::lab::generate::{GenerateKind, GenerateOptions, generate};
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{Disposition, RetractAction};
use clawback::store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The lure's Message-ID.
pub const LURE: &str = "<watch-scale-lure@evil-payroll.example>";

/// What one run measured.
#[derive(Debug)]
#[allow(dead_code)] // the test reads only some of it
pub struct WatchScale {
    pub mailboxes: usize,
    /// Generating and loading the lab.
    pub lab_ready: Duration,
    /// The first cycle: the trace filled from the log.
    pub first_cycle: Duration,
    pub first_cycle_requests: u64,
    /// A cycle with nothing new.
    pub idle_cycle: Duration,
    pub idle_cycle_requests: u64,
    /// Delivery → the lab's first and last action on the lure.
    pub first_retraction: Duration,
    pub all_retracted: Duration,
    /// Start of the cycle that found the lure → the lab's first action on it.
    pub detection_to_first_retraction: Duration,
    /// Requests the cycle that found and retracted the lure cost.
    pub detecting_cycle_requests: u64,
    /// Lab actions after the delivery, per (mailbox, Message-ID, action).
    pub actions: BTreeMap<(String, String, String), usize>,
    /// The mailboxes the lure was delivered to.
    pub targets: Vec<String>,
}

/// Provider requests the lab answered so far (every route but its own `/_lab/` control API;
/// token requests included).
fn requests(lab: &clawback::lab::Lab) -> u64 {
    lab.stats
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(route, _)| !route.contains("/_lab"))
        .map(|(_, n)| n)
        .sum()
}

fn served(server: &LabServer) -> u64 {
    requests(&server.lab)
}

/// Runs the scenario: `mailboxes` in the tenant, the lure to `targets` of them, a cycle every
/// `interval` (the message trace allows 100 requests per 5 minutes: 3 s is its floor).
pub async fn run(mailboxes: usize, targets: usize, interval: Duration) -> WatchScale {
    let started = Instant::now();
    let scenario = generate(&GenerateOptions {
        mailboxes,
        campaign_recipients: 0,
        seed: 16,
        kind: GenerateKind::Microsoft365,
        background_messages: 20,
    })
    .expect("generate");
    let server = LabServer::start(
        &scenario,
        LabOptions::default(),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("lab");
    let lab_ready = started.elapsed();
    let dir = tempfile::tempdir().expect("tempdir");
    let config: Config = server
        .write_config(&dir.path().join("lab.toml"))
        .expect("config");
    let engine = Arc::new(
        Engine::new(
            config,
            Store::open_in_dir(&dir.path().join("data")).expect("store"),
        )
        .expect("engine"),
    );
    let mut policy = engine.load_policy().expect("policy");
    policy
        .actions
        .insert(Disposition::Malicious, RetractAction::Junk);
    engine.save_policy(policy).expect("save policy");
    let options = WatchOptions {
        sync: true,
        intel_dir: None,
        journal_dir: None,
        reporters_threshold: 3,
        force_responses: false,
    };

    // Warm up: the first cycle fills the trace, the second has nothing new.
    let mut watcher = Watcher::new(&engine, options.clone());
    let (t, before) = (Instant::now(), served(&server));
    watcher.cycle().await.expect("first cycle");
    let (first_cycle, first_cycle_requests) = (t.elapsed(), served(&server) - before);
    let (t, before) = (Instant::now(), served(&server));
    watcher.cycle().await.expect("idle cycle");
    let (idle_cycle, idle_cycle_requests) = (t.elapsed(), served(&server) - before);
    drop(watcher);

    // The watch loop, in its own task; each cycle notes when it started.
    let stop = Arc::new(AtomicBool::new(false));
    let cycle_started = Arc::new(std::sync::Mutex::new(Vec::<(Instant, u64)>::new()));
    let cycle_cost = Arc::new(AtomicU64::new(0));
    let looper = {
        let (engine, stop, cycle_started, cycle_cost) = (
            engine.clone(),
            stop.clone(),
            cycle_started.clone(),
            cycle_cost.clone(),
        );
        let lab = server.lab.clone();
        tokio::spawn(async move {
            let mut watcher = Watcher::new(&engine, options);
            // Bounded: at most 200 cycles.
            for _ in 0..200 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let before = requests(&lab);
                cycle_started
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((Instant::now(), before));
                watcher.cycle().await.expect("cycle");
                let after = requests(&lab);
                cycle_cost.store(after - before, Ordering::Relaxed);
                tokio::time::sleep(interval).await;
            }
        })
    };

    let targets: Vec<String> = {
        let state = server.lab.state();
        state.tenants[0]
            .mailboxes
            .keys()
            .filter(|a| state.tenants[0].mailbox_granted(a) && !a.starts_with("admin@"))
            .step_by((mailboxes / targets.max(1)).max(1))
            .take(targets)
            .cloned()
            .collect()
    };
    let from = server.lab.state().actions.len();
    let body = serde_json::json!({
        "tenant": "contoso",
        "message": {
            "message_id": LURE,
            "from": "payroll@evil-payroll.example",
            "to": targets,
            "subject": "Your payslip is ready",
            "date": chrono::Utc::now().to_rfc3339(),
            "body": "Open https://evil-payroll.example/payslip",
            "headers": [["X-Clawback-Disposition", "malicious"]],
            "copy": targets.iter().map(|m| serde_json::json!({"mailbox": m})).collect::<Vec<_>>(),
        }
    });
    let r = reqwest::Client::new()
        .post(format!("{}/_lab/deliver", server.base_url()))
        .json(&body)
        .send()
        .await
        .expect("deliver");
    assert!(r.status().is_success(), "deliver: {:?}", r.text().await);
    let delivered = Instant::now();
    let (mut first_at, mut all_at, mut first_instant) = (None, None, None);
    // Bounded wait: 300 s at 5 ms.
    for _ in 0..60_000 {
        let n = {
            let state = server.lab.state();
            state
                .actions
                .iter()
                .skip(from)
                .filter(|a| a.internet_message_id == LURE)
                .count()
        };
        if n > 0 && first_at.is_none() {
            first_at = Some(delivered.elapsed());
            first_instant = Some(Instant::now());
        }
        if n >= targets.len() {
            all_at = Some(delivered.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the detecting cycle finish, then stop the loop.
    let detecting = first_instant.and_then(|f| {
        let starts = cycle_started.lock().unwrap_or_else(|p| p.into_inner());
        starts.iter().rev().find(|(s, _)| *s <= f).copied()
    });
    let before_stop = cycle_started
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len();
    for _ in 0..6_000 {
        if cycle_started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
            > before_stop
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(120), looper).await;
    let detecting_cycle_requests = {
        let starts = cycle_started.lock().unwrap_or_else(|p| p.into_inner());
        match detecting {
            Some((s, before)) => starts
                .iter()
                .find(|(t, _)| *t > s)
                .map_or(cycle_cost.load(Ordering::Relaxed), |(_, next)| {
                    next - before
                }),
            None => 0,
        }
    };
    let mut actions = BTreeMap::new();
    for a in server.lab.state().actions.iter().skip(from) {
        *actions
            .entry((
                a.mailbox.clone(),
                a.internet_message_id.clone(),
                a.action.clone(),
            ))
            .or_insert(0) += 1;
    }
    WatchScale {
        mailboxes,
        lab_ready,
        first_cycle,
        first_cycle_requests,
        idle_cycle,
        idle_cycle_requests,
        first_retraction: first_at.unwrap_or(Duration::MAX),
        all_retracted: all_at.unwrap_or(Duration::MAX),
        detection_to_first_retraction: match (detecting, first_instant) {
            (Some((s, _)), Some(f)) => f - s,
            _ => Duration::MAX,
        },
        detecting_cycle_requests,
        actions,
        targets,
    }
}
