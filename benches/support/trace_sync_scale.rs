//! `trace sync` on a generated lab of N mailboxes (two thirds Microsoft 365, one third Google
//! Workspace) with both tenant-wide logs granted: the real clients over HTTP, a real SQLite
//! store, the expectation taken from the lab's own state. Shared by
//! `benches/trace_sync_scale.rs` (prints the numbers) and `tests/trace_sync.rs` (asserts
//! correctness and request bounds, never times).

use clawback::config::Config;
use clawback::lab::generate::{GenerateKind, GenerateOptions, generate};
use clawback::lab::{LabOptions, LabServer};
use clawback::provider::ProviderClient;
use clawback::store::Store;
use clawback::trace::RecipientKind;
use clawback::trace::query;
use clawback::trace::sync::{SyncOptions, SyncReport, sync};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// (tenant, Message-ID, mailbox).
pub type CopyKey = (String, String, String);

/// What a scale run measured.
#[derive(Debug)]
#[allow(dead_code)] // the test reads only some of it
pub struct TraceSyncScale {
    pub mailboxes: usize,
    /// Generating and loading the lab.
    pub lab_ready: Duration,
    /// Every delivered copy the lab holds, from its own state.
    pub delivered: BTreeSet<CopyKey>,
    /// (tenant, Message-ID, envelope mailbox) of every trace record after the first sync.
    pub indexed: BTreeSet<CopyKey>,
    /// Trace records after the first sync.
    pub records: u64,
    /// The first sync (empty store).
    pub first: SyncReport,
    pub first_wall: Duration,
    /// Requests the lab answered during the first sync, by `METHOD route` (a `$batch` once).
    pub first_requests: BTreeMap<String, u64>,
    /// Sub-requests the lab served during the first sync (batched ones one by one).
    pub first_served: u64,
    /// A second sync with nothing new.
    pub second: SyncReport,
    pub second_served: u64,
    /// The directory holding the store (`data/`), kept for a test to search.
    pub dir: tempfile::TempDir,
}

/// Provider requests by route (the lab's own `/_lab/` routes left out).
fn requests(server: &LabServer) -> BTreeMap<String, u64> {
    server
        .lab
        .stats
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(route, _)| !route.contains("/_lab"))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn served(server: &LabServer) -> u64 {
    server.lab.limits.served().iter().map(|n| *n as u64).sum()
}

/// Every (tenant, Message-ID, mailbox) delivered in the lab, whatever happened to the copy
/// since (the tenant-wide logs record deliveries).
pub fn delivered(server: &LabServer) -> BTreeSet<CopyKey> {
    let state = server.lab.state();
    let mut out = BTreeSet::new();
    for t in &state.tenants {
        for (addr, mb) in &t.mailboxes {
            for c in mb.copies.values() {
                out.insert((
                    t.name.clone(),
                    c.content.internet_message_id.clone(),
                    addr.clone(),
                ));
            }
        }
    }
    out
}

/// (tenant, Message-ID, envelope mailbox) of every trace record.
pub fn indexed(store: &Store) -> BTreeSet<CopyKey> {
    let all = store
        .search(&query::parse("").expect("empty query"), 100_000_000, 0)
        .expect("search");
    let mut out = BTreeSet::new();
    for r in all {
        for rc in &r.recipients {
            if rc.kind == RecipientKind::Envelope {
                out.insert((r.tenant.clone(), r.message_id.clone(), rc.address.clone()));
            }
        }
    }
    out
}

async fn one_sync(
    store: &mut Store,
    clients: &[ProviderClient],
    options: &SyncOptions,
) -> SyncReport {
    sync(store, clients, options, |_| {}).await.expect("sync")
}

/// Runs the scenario: `mailboxes` in the lab, a campaign to `campaign` of them and
/// `background` other messages (each to a handful of mailboxes); a first sync into an empty
/// store, then a second with nothing new.
pub async fn run(mailboxes: usize, campaign: usize, background: usize) -> TraceSyncScale {
    let started = Instant::now();
    let scenario = generate(&GenerateOptions {
        mailboxes,
        campaign_recipients: campaign,
        seed: 16,
        kind: GenerateKind::Mixed,
        background_messages: background,
    })
    .expect("generate");
    let server = LabServer::start(
        &scenario,
        LabOptions::default(),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("lab");
    drop(scenario);
    let lab_ready = started.elapsed();
    let dir = tempfile::tempdir().expect("tempdir");
    let config: Config = server
        .write_config(&dir.path().join("lab.toml"))
        .expect("config");
    let clients: Vec<ProviderClient> = config
        .tenants
        .iter()
        .map(|t| ProviderClient::new(&config, t).expect("client"))
        .collect();
    let mut store = Store::open_in_dir(&dir.path().join("data")).expect("store");
    let options = SyncOptions::from_config(Some(&config));

    let (before, served_before, t) = (requests(&server), served(&server), Instant::now());
    let first = one_sync(&mut store, &clients, &options).await;
    let first_wall = t.elapsed();
    let first_served = served(&server) - served_before;
    let first_requests: BTreeMap<String, u64> = requests(&server)
        .into_iter()
        .map(|(k, v)| {
            let n = v - before.get(&k).copied().unwrap_or(0);
            (k, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let indexed = indexed(&store);
    let records = store.trace_count().expect("count");

    let served_before = served(&server);
    let second = one_sync(&mut store, &clients, &options).await;
    let second_served = served(&server) - served_before;

    TraceSyncScale {
        mailboxes,
        lab_ready,
        delivered: delivered(&server),
        indexed,
        records,
        first,
        first_wall,
        first_requests,
        first_served,
        second,
        second_served,
        dir,
    }
}
