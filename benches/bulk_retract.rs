//! Bulk retraction budget (DESIGN §9): one message retracted from N mailboxes (default 10,000)
//! on the lab (latency 20 ms, capacity S = 256) through `ProviderClient::retract_many`, for
//! Graph and Gmail. Reports wall time against the lab's ideal bound
//! `served sub-requests × latency ÷ S`, where the sub-requests are counted by the lab itself
//! (`/_lab/stats` → `served`), for information. Checks afterwards that every copy moved exactly
//! once (no item lost or doubled).
//!
//! Also prints, per provider (issue 14): sub-requests per copy, wall against the
//! **minimal-work floor** (2 sub-requests per copy — one locate, one action — × latency ÷ S;
//! for Gmail cold plus the RS256 signing floor) and wall ÷ floor, DESIGN §9's budget (goal ≤ 2.0×
//! for every unthrottled run; the last line names the worst); Gmail twice, cold (every
//! per-user token signed and fetched) and warm (tokens kept by an earlier client in the token
//! file); and a throttled run (lab capacity 16, the client allowed 64 in flight, whole-second
//! `Retry-After`) that must still act on every copy exactly once, with the time spent waiting
//! (no time goal: a whole second per refusal is the service's advice, not the client's work).
//!
//! `cargo bench --bench bulk_retract` — environment: `BULK_MAILBOXES` (default 10000),
//! `BULK_PROVIDERS` (`graph,gmail`), `BULK_THROTTLED_MAILBOXES` (default 1000; 0 skips the
//! throttled runs).

#[path = "support/signing.rs"]
mod support_signing;

use clawback::lab::demo::CAMPAIGN_MESSAGE_ID;
use clawback::lab::generate::{GenerateKind, GenerateOptions, generate};
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{Folder, RetractAction};
use clawback::provider::token_file::TokenFile;
use clawback::provider::{BulkItem, ProgressEvent, ProviderClient};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LATENCY: Duration = Duration::from_millis(20);
const CAPACITY: usize = 256;

fn main() {
    let mailboxes: usize = std::env::var("BULK_MAILBOXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let providers = std::env::var("BULK_PROVIDERS").unwrap_or_else(|_| "graph,gmail".into());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bulk_retract: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "bulk_retract: one message from {mailboxes} mailboxes, lab latency {} ms, capacity {CAPACITY}",
        LATENCY.as_millis()
    );
    let throttled_mailboxes: usize = std::env::var("BULK_THROTTLED_MAILBOXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let mut worst = 0f64;
    for p in providers.split(',').map(str::trim) {
        let kind = match p {
            "graph" => GenerateKind::Microsoft365,
            "gmail" => GenerateKind::GoogleWorkspace,
            other => {
                eprintln!(
                    "bulk_retract: unknown provider {other:?} in BULK_PROVIDERS (graph, gmail)"
                );
                std::process::exit(2);
            }
        };
        let mut runs = vec![Run::clean(kind, mailboxes, false)];
        if kind == GenerateKind::GoogleWorkspace {
            runs.push(Run::clean(kind, mailboxes, true));
        }
        if throttled_mailboxes > 0 {
            runs.push(Run {
                kind,
                mailboxes: throttled_mailboxes,
                capacity: 16,
                client_in_flight: 64,
                warm: false,
            });
        }
        for r in runs {
            match runtime.block_on(run(&r)) {
                Ok(ratio) => worst = worst.max(ratio),
                Err(e) => {
                    eprintln!("bulk_retract: {p}: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    println!(
        "worst wall ÷ floor of the unthrottled runs {worst:.2}× (goal ≤ 2.0×): {}",
        if worst <= 2.0 { "met" } else { "MISSED" }
    );
}

/// One measured run.
struct Run {
    kind: GenerateKind,
    mailboxes: usize,
    /// The lab's capacity S.
    capacity: usize,
    /// The client's `max_in_flight` (above S, the lab throttles it).
    client_in_flight: usize,
    /// Gmail: tokens kept in the token file by an earlier client (not timed).
    warm: bool,
}

impl Run {
    fn clean(kind: GenerateKind, mailboxes: usize, warm: bool) -> Run {
        Run {
            kind,
            mailboxes,
            capacity: CAPACITY,
            client_in_flight: CAPACITY,
            warm,
        }
    }

    fn throttled(&self) -> bool {
        self.client_in_flight > self.capacity
    }
}

/// Returns wall ÷ the minimal-work floor (unthrottled runs; 0 for a throttled one).
async fn run(r: &Run) -> Result<f64, String> {
    let (kind, mailboxes) = (r.kind, r.mailboxes);
    let scenario = generate(&GenerateOptions {
        mailboxes,
        campaign_recipients: mailboxes,
        seed: 1,
        kind,
        background_messages: 0,
    })
    .map_err(|e| e.to_string())?;
    let recipients: Vec<String> = scenario.tenants[0]
        .messages
        .iter()
        .find(|m| m.message_id == CAMPAIGN_MESSAGE_ID)
        .map(|m| {
            m.copies
                .iter()
                .map(|c| c.mailbox.to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    let options = LabOptions {
        latency: LATENCY,
        capacity: r.capacity,
        ..Default::default()
    };
    let addr = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
    let server = LabServer::start(&scenario, options, addr)
        .await
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut config = server
        .write_config(&dir.path().join("lab.toml"))
        .map_err(|e| e.to_string())?;
    config.tenants[0].limits.max_in_flight = r.client_in_flight;
    let tokens = dir.path().join("data");
    if r.warm {
        // An earlier client fetched every user's token (not timed) and kept it in the file.
        let earlier =
            ProviderClient::new(&config, &config.tenants[0]).map_err(|e| e.to_string())?;
        earlier.keep_tokens_in(Arc::new(TokenFile::in_dir(&tokens)));
        futures_util::stream::iter(recipients.iter())
            .for_each_concurrent(CAPACITY, |m| {
                let earlier = &earlier;
                async move {
                    let _ = earlier.locate(m, CAMPAIGN_MESSAGE_ID).await;
                }
            })
            .await;
    }
    let client = ProviderClient::new(&config, &config.tenants[0]).map_err(|e| e.to_string())?;
    if r.warm {
        client.keep_tokens_in(Arc::new(TokenFile::in_dir(&tokens)));
    }
    // Warm-up outside the clock: the first token and the tenant's domains.
    let _ = client.resolve(&recipients[0]).await;
    let served_before: usize = server.lab.limits.served().iter().sum();
    let requests_before: u64 = server
        .lab
        .stats
        .requests
        .lock()
        .map(|m| m.values().sum())
        .unwrap_or(0);

    let items = recipients
        .iter()
        .enumerate()
        .map(|(i, m)| BulkItem {
            key: i as u64,
            mailbox: m.clone(),
            internet_message_id: CAMPAIGN_MESSAGE_ID.into(),
            copy: None,
        })
        .collect();
    let (mut ok, mut failed, mut throttled) = (0usize, 0usize, 0f64);
    let started = Instant::now();
    client
        .retract_many(items, RetractAction::Junk, |e| match e {
            ProgressEvent::Finished { outcome: Ok(_), .. } => ok += 1,
            ProgressEvent::Finished {
                outcome: Err(_), ..
            } => failed += 1,
            ProgressEvent::Throttled { seconds } => throttled += seconds,
            ProgressEvent::InFlight { .. } => {}
        })
        .await;
    let wall = started.elapsed();

    let served = server.lab.limits.served().iter().sum::<usize>() - served_before;
    let http_requests = server
        .lab
        .stats
        .requests
        .lock()
        .map(|m| m.values().sum::<u64>())
        .unwrap_or(0)
        - requests_before;
    let throttled_429: u64 = server
        .lab
        .stats
        .throttled
        .lock()
        .map(|m| m.values().sum())
        .unwrap_or(0);
    let ideal = Duration::from_secs_f64(served as f64 * LATENCY.as_secs_f64() / r.capacity as f64);
    let ratio = wall.as_secs_f64() / ideal.as_secs_f64().max(1e-9);
    let work_floor = 2.0 * recipients.len() as f64 * LATENCY.as_secs_f64() / r.capacity as f64;

    // No item lost or doubled: every copy in Junk, one action each.
    let (mut once, mut wrong) = (0usize, Vec::new());
    {
        let state = server.lab.state();
        let mut acted: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for a in &state.actions {
            if a.internet_message_id == CAMPAIGN_MESSAGE_ID {
                *acted.entry(a.mailbox.as_str()).or_default() += 1;
            }
        }
        for (_, m, c) in state.copies_of(CAMPAIGN_MESSAGE_ID) {
            if c.folder == Folder::Junk && acted.get(m) == Some(&1) {
                once += 1;
            } else if wrong.len() < 5 {
                wrong.push(format!(
                    "{m}: {} after {:?} actions",
                    c.folder,
                    acted.get(m)
                ));
            }
        }
    }
    println!(
        "{kind:?}: {} items ({ok} ok, {failed} failed), {served} sub-requests served in {http_requests} HTTP requests, \
         wall {:.2} s, ideal {:.2} s, ratio {ratio:.2}×; 429s {throttled_429}, client waited {throttled:.1} s; moved exactly once: {once}/{}",
        recipients.len(),
        wall.as_secs_f64(),
        ideal.as_secs_f64(),
        recipients.len()
    );
    let signing = if kind == GenerateKind::GoogleWorkspace && !r.warm {
        signing_floor(&config, recipients.len(), ideal)
    } else {
        0.0
    };
    let floor = work_floor + signing;
    let label = match (kind, r.warm, r.throttled()) {
        (_, _, true) => format!(
            "{kind:?} throttled (capacity {}, client {} in flight)",
            r.capacity, r.client_in_flight
        ),
        (GenerateKind::GoogleWorkspace, true, _) => format!("{kind:?} warm (tokens kept)"),
        (GenerateKind::GoogleWorkspace, false, _) => format!("{kind:?} cold"),
        _ => format!("{kind:?}"),
    };
    println!(
        "  {label}: {:.2} sub-requests per copy; wall {:.2} s; minimal-work floor {floor:.2} s \
         (2 × {} copies × {} ms ÷ {}{}); wall ÷ floor {:.2}×{}",
        served as f64 / recipients.len().max(1) as f64,
        wall.as_secs_f64(),
        recipients.len(),
        LATENCY.as_millis(),
        r.capacity,
        if signing > 0.0 {
            format!(" + signing {signing:.2} s")
        } else {
            String::new()
        },
        wall.as_secs_f64() / floor.max(1e-9),
        if r.throttled() {
            " (no time goal: whole-second Retry-After)"
        } else {
            " (goal ≤ 2.0×)"
        }
    );
    if r.throttled() {
        println!(
            "    throttled: {throttled_429} 429s; waiting on Retry-After: {throttled:.1} s summed over the client's batches (they wait in parallel)"
        );
    }
    server.stop().await;
    if once != recipients.len() || failed > 0 {
        return Err(format!(
            "{} copies not moved exactly once (e.g. {wrong:?}), {failed} failed",
            recipients.len() - once
        ));
    }
    Ok(if r.throttled() {
        0.0
    } else {
        wall.as_secs_f64() / floor.max(1e-9)
    })
}

/// Gmail acts as each user through a token of that user's own (domain-wide delegation), and
/// each token costs an RS256 signature made here. Measures that signature and prints the wall
/// time the signatures alone need on this machine's cores, beside the lab's ideal bound (which
/// counts only the lab's service time).
fn signing_floor(config: &clawback::config::Config, users: usize, ideal: Duration) -> f64 {
    match support_signing::signing_floor(config, &config.tenants[0], users) {
        Ok(f) => {
            println!(
                "  signing floor: {users} per-user tokens × {:.2} ms per RS256 signature ÷ {} cores = {:.2} s \
                 of CPU-bound wall time ({:.2}× the lab's ideal bound) before any request is served",
                f.each * 1000.0,
                f.cores,
                f.floor,
                f.floor / ideal.as_secs_f64().max(1e-9)
            );
            f.floor
        }
        Err(e) => {
            println!("  signing floor: cannot load the service account: {e}");
            0.0
        }
    }
}
