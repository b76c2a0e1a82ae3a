//! `trace sync` against the lab's demo scenario started in-process on 127.0.0.1:0: the real
//! Graph and Gmail clients over real HTTP, the expectation derived from the lab's own state and
//! `/_lab/` control API (never from the sync report), then the library search and the real
//! `clawback search --json` / `clawback trace sync` binaries over the same store.

#![allow(clippy::unwrap_used)]

use clawback::config::Config;
use clawback::lab::demo::{self, *};
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{Disposition, FailureReason, Folder};
use clawback::provider::ProviderClient;
use clawback::store::Store;
use clawback::trace::TraceRecord;
use clawback::trace::ingest::{IngestOptions, ingest_paths};
use clawback::trace::query;
use clawback::trace::sync::{SyncOptions, SyncReport, sync};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Output;

mod lab_support;

struct World {
    server: LabServer,
    config: Config,
    config_path: PathBuf,
    data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    /// The demo without the tenant-wide logs' permission: sync lists every mailbox.
    async fn start() -> World {
        let w = World::with_logs().await;
        lab_support::withdraw_trace_log(&w.server, &[]);
        w
    }

    /// The demo as it is: both tenants grant their tenant-wide log.
    async fn with_logs() -> World {
        World::of(&demo::build(7)).await
    }

    /// A lab serving `scenario`, a config for it and an empty data directory.
    async fn of(scenario: &clawback::lab::scenario::Scenario) -> World {
        let server = LabServer::start(
            scenario,
            LabOptions::default(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("lab.toml");
        let config = server.write_config(&config_path).unwrap();
        let data_dir = dir.path().join("data");
        World {
            server,
            config,
            config_path,
            data_dir,
            _dir: dir,
        }
    }

    fn clients(&self) -> Vec<ProviderClient> {
        self.config
            .tenants
            .iter()
            .map(|t| ProviderClient::new(&self.config, t).unwrap())
            .collect()
    }

    fn store(&self) -> Store {
        Store::open_in_dir(&self.data_dir).unwrap()
    }

    async fn sync(&self, tenants: &[&str]) -> SyncReport {
        let mut store = self.store();
        let options = SyncOptions {
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            ..SyncOptions::from_config(Some(&self.config))
        };
        let mut calls = 0;
        let mut last = None;
        let report = sync(&mut store, &self.clients(), &options, |p| {
            calls += 1;
            last = Some(p);
        })
        .await
        .unwrap();
        assert!(calls >= 2, "progress is reported");
        // The final progress counts every raw fetch, from mailbox listings and from the logs.
        let last = last.unwrap();
        assert_eq!(last.fetched, last.to_fetch, "{last:?}");
        assert!(
            last.fetched >= report.raw_fetched,
            "{last:?} {}",
            report.summary()
        );
        report
    }

    /// Every (tenant, Message-ID, mailbox) the provider APIs can show: copies in mailboxes the
    /// app is granted, outside Recoverable Items / purged (which only an admin search sees).
    fn visible_copies(&self, tenant: Option<&str>) -> BTreeSet<(String, String, String)> {
        let state = self.server.lab.state();
        let mut out = BTreeSet::new();
        for t in &state.tenants {
            if tenant.is_some_and(|n| n != t.name) {
                continue;
            }
            for (addr, mb) in &t.mailboxes {
                if !t.mailbox_granted(addr) {
                    continue;
                }
                for c in mb.copies.values() {
                    // Purged copies are invisible; Recoverable Items are listed on a Microsoft
                    // mailbox's first sync (soft-deleted before clawback looked).
                    if c.folder == Folder::Purged
                        || (c.folder == Folder::RecoverableDeletions
                            && t.kind != clawback::model::TenantKind::Microsoft365)
                    {
                        continue;
                    }
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

    /// `/_lab/` over HTTP.
    async fn lab_get(&self, path: &str) -> Value {
        let r = reqwest::get(format!("{}{path}", self.server.base_url()))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.json().await.unwrap()
    }

    async fn stats(&self) -> BTreeMap<String, u64> {
        let v = self.lab_get("/_lab/stats").await;
        serde_json::from_value(v["requests"].clone()).unwrap()
    }

    /// The real binary against this world's config and data directory.
    async fn run(&self, args: &[&str]) -> Output {
        World::run_with(&self.config_path, &self.data_dir)(args)
            .await
            .unwrap()
    }

    /// The real binary against a config and data directory.
    fn run_with(
        config: &std::path::Path,
        data_dir: &std::path::Path,
    ) -> impl FnMut(&[&str]) -> tokio::task::JoinHandle<Output> + use<> {
        let (config, data_dir) = (config.to_path_buf(), data_dir.to_path_buf());
        move |args| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_clawback"));
            cmd.arg("--config")
                .arg(&config)
                .arg("--data-dir")
                .arg(&data_dir)
                .args(args)
                .env_remove("CLAWBACK_DATA_DIR")
                .env_remove("CLAWBACK_CONFIG");
            // The lab keeps serving on the runtime's other threads while the binary runs.
            tokio::task::spawn_blocking(move || cmd.output().unwrap())
        }
    }
}

/// The trace's (tenant, Message-ID, envelope mailbox) are exactly `expected`.
fn assert_indexed_exactly(store: &Store, expected: &BTreeSet<(String, String, String)>) {
    let got = indexed_copies(store);
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(expected).take(5).collect();
    assert!(missing.is_empty(), "not indexed: {missing:?}");
    assert!(extra.is_empty(), "indexed but not in the lab: {extra:?}");
}

/// A finished process's stdout and stderr, as text.
fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// (tenant, Message-ID, envelope mailbox) of every trace record.
fn indexed_copies(store: &Store) -> BTreeSet<(String, String, String)> {
    trace_sync_scale::indexed(store)
}

fn all_records(store: &Store) -> Vec<TraceRecord> {
    store
        .search(&query::parse("").unwrap(), 1_000_000, 0)
        .unwrap()
}

fn search(store: &Store, q: &str) -> Vec<TraceRecord> {
    store.search(&query::parse(q).unwrap(), 10_000, 0).unwrap()
}

fn campaign_tenants(records: &[TraceRecord]) -> BTreeSet<String> {
    records
        .iter()
        .filter(|r| r.message_id == CAMPAIGN_MESSAGE_ID)
        .map(|r| r.tenant.clone())
        .collect()
}

fn count_route(stats: &BTreeMap<String, u64>, pred: impl Fn(&str) -> bool) -> u64 {
    stats.iter().filter(|(k, _)| pred(k)).map(|(_, v)| *v).sum()
}

fn is_graph_raw(route: &str) -> bool {
    route.starts_with("GET /v1.0/") && route.ends_with("/$value")
}

fn is_gmail_get(route: &str) -> bool {
    route.starts_with("GET /gmail/v1/users/") && route.contains("/messages/{")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_indexes_every_delivered_copy_and_search_finds_the_campaign() {
    let w = World::start().await;
    let before = w.stats().await;
    let report = w.sync(&[]).await;

    // Every copy the providers can show is in the trace, and nothing else is.
    let expected = w.visible_copies(None);
    let store = w.store();
    assert_indexed_exactly(&store, &expected);
    // One record per (tenant, Message-ID).
    let distinct: BTreeSet<(String, String)> = expected
        .iter()
        .map(|(t, m, _)| (t.clone(), m.clone()))
        .collect();
    assert_eq!(store.trace_count().unwrap(), distinct.len() as u64);

    // The mailboxes the app may not read failed with their reason; they did not stop the sync.
    let (ungranted, no_mailbox) = {
        let state = w.server.lab.state();
        let mut ungranted = BTreeSet::new();
        let mut no_mailbox = BTreeSet::new();
        for t in &state.tenants {
            for addr in t.mailboxes.keys() {
                if !t.mailbox_granted(addr) {
                    ungranted.insert((t.name.clone(), addr.clone()));
                }
            }
            for u in t.users.values() {
                if !u.has_mailbox && t.mailbox_granted(&u.address) {
                    no_mailbox.insert((t.name.clone(), u.address.clone()));
                }
            }
        }
        (ungranted, no_mailbox)
    };
    assert!(!ungranted.is_empty());
    // They sit in domains the provider confirms are not granted: set aside, not failures.
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(report.complete());
    let refused: BTreeSet<(String, String)> = report
        .ungranted
        .iter()
        .map(|f| (f.tenant.clone(), f.mailbox.clone().unwrap()))
        .collect();
    assert_eq!(refused, ungranted);
    assert!(
        report
            .ungranted
            .iter()
            .all(|f| f.failure.reason == FailureReason::NotAuthorized),
        "{:?}",
        report.failed
    );
    let skipped: BTreeSet<(String, String)> = report
        .skipped
        .iter()
        .map(|f| (f.tenant.clone(), f.mailbox.clone().unwrap()))
        .collect();
    assert!(skipped.is_subset(&no_mailbox), "{skipped:?}");

    // The raw MIME was fetched once per distinct message, not once per copy (lab counters).
    let after = w.stats().await;
    let delta = |pred: fn(&str) -> bool| count_route(&after, pred) - count_route(&before, pred);
    let distinct_in = |tenant: &str| distinct.iter().filter(|(t, _)| t == tenant).count() as u64;
    let copies_in = |tenant: &str| expected.iter().filter(|(t, _, _)| t == tenant).count() as u64;
    assert_eq!(delta(is_graph_raw), distinct_in(CONTOSO));
    // Gmail: one metadata GET per copy listed, plus one format=raw GET per distinct message.
    assert_eq!(
        delta(is_gmail_get),
        copies_in(FABRIKAM) + distinct_in(FABRIKAM)
    );

    // The campaign's copies as /_lab/ reports them are the record's delivered-to, per tenant.
    let v = w
        .lab_get(&format!(
            "/_lab/messages?message_id={}",
            clawback::provider::http::enc(CAMPAIGN_MESSAGE_ID)
        ))
        .await;
    assert_eq!(v["count"], CAMPAIGN_RECIPIENTS);
    let mut lab_copies: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in v["copies"].as_array().unwrap() {
        let folder = c["folder"].as_str().unwrap_or("other");
        // As the sync sees them: Recoverable Items on Microsoft's first sync, never Purges.
        let seen = match folder {
            "purged" => false,
            "recoverable_deletions" => c["kind"] == json!("microsoft365"),
            _ => true,
        };
        if c["granted"] == json!(true) && seen {
            lab_copies
                .entry(c["tenant"].as_str().unwrap().to_string())
                .or_default()
                .insert(c["mailbox"].as_str().unwrap().to_string());
        }
    }
    let records = store.trace_by_message_id(CAMPAIGN_MESSAGE_ID).unwrap();
    assert_eq!(records.len(), 2, "one record per tenant");
    for r in &records {
        let delivered: BTreeSet<String> =
            r.delivered_to().into_iter().map(str::to_string).collect();
        assert_eq!(Some(&delivered), lab_copies.get(&r.tenant), "{}", r.tenant);
        assert_eq!(r.sender, CAMPAIGN_SENDER);
        assert_eq!(r.subject, CAMPAIGN_SUBJECT);
        assert!(r.urls.iter().any(|u| u == CAMPAIGN_URL), "{:?}", r.urls);
        assert_eq!(r.disposition, None, "the campaign got past the filters");
    }

    // Search finds the campaign in both tenants by msgid:, from:, url: and sha256:.
    let both: BTreeSet<String> = [CONTOSO, FABRIKAM].map(String::from).into();
    for q in [
        format!("msgid:{CAMPAIGN_MESSAGE_ID}"),
        format!("from:{CAMPAIGN_SENDER}"),
        format!("url:\"{CAMPAIGN_URL}\""),
    ] {
        assert_eq!(campaign_tenants(&search(&store, &q)), both, "{q}");
    }
    let attachment_sha = {
        let state = w.server.lab.state();
        let t = &state.tenants[state.tenant_index(CONTOSO).unwrap()];
        let content = t
            .mailboxes
            .values()
            .flat_map(|m| m.copies.values())
            .find(|c| c.content.internet_message_id == CAMPAIGN_MESSAGE_ID)
            .map(|c| c.content.clone())
            .unwrap();
        let a = content
            .attachments
            .iter()
            .find(|a| a.name == CAMPAIGN_ATTACHMENT)
            .unwrap();
        hex::encode(Sha256::digest(&a.bytes))
    };
    assert_eq!(
        campaign_tenants(&search(&store, &format!("sha256:{attachment_sha}"))),
        both
    );

    // disposition: the header-marked lure is malicious straight from sync; the campaign is
    // undispositioned until a verdict says otherwise, then found by disposition:malicious.
    let malicious = search(&store, "disposition:malicious");
    assert!(
        malicious
            .iter()
            .any(|r| r.message_id == MALICIOUS_MESSAGE_ID),
        "header disposition from sync"
    );
    assert!(campaign_tenants(&malicious).is_empty());
    assert_eq!(
        campaign_tenants(&search(
            &store,
            &format!("disposition:none msgid:{CAMPAIGN_MESSAGE_ID}")
        )),
        both
    );
    let feed = w.data_dir.join("verdicts.jsonl");
    std::fs::write(
        &feed,
        format!(
            "{}\n",
            json!({"message_id": CAMPAIGN_MESSAGE_ID, "disposition": "malicious", "source": "intel"})
        ),
    )
    .unwrap();
    drop(store);
    let mut store = w.store();
    ingest_paths(
        &mut store,
        &[feed],
        &IngestOptions::from_config(Some(&w.config)),
        &mut |_| {},
    )
    .unwrap();
    let malicious = search(&store, "disposition:malicious");
    assert_eq!(campaign_tenants(&malicious), both);
    assert!(
        malicious
            .iter()
            .filter(|r| r.message_id == CAMPAIGN_MESSAGE_ID)
            .all(|r| r.disposition == Some(Disposition::Malicious))
    );
    drop(store);

    // The real binary over the same store: `clawback search --json`.
    for q in [
        format!("msgid:{CAMPAIGN_MESSAGE_ID}"),
        format!("from:{CAMPAIGN_SENDER}"),
        format!("url:\"{CAMPAIGN_URL}\""),
        format!("disposition:malicious from:{CAMPAIGN_SENDER}"),
    ] {
        let out = w.run(&["search", "--json", "--limit", "1000", &q]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{q}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let tenants: BTreeSet<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["message_id"] == CAMPAIGN_MESSAGE_ID)
            .map(|r| r["tenant"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(tenants, both, "{q}");
        let contoso = v
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["message_id"] == CAMPAIGN_MESSAGE_ID && r["tenant"] == CONTOSO)
            .unwrap();
        assert_eq!(
            contoso["delivered_to"].as_array().unwrap().len(),
            lab_copies[CONTOSO].len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_sync_adds_nothing_and_new_mail_is_picked_up_from_the_cursor() {
    let w = World::start().await;
    let first = w.sync(&[]).await;
    assert!(first.inserted > 0);
    let snapshot = all_records(&w.store());
    let before = w.stats().await;

    // Nothing new: nothing changes in the store and no raw message is fetched again.
    let second = w.sync(&[]).await;
    assert_eq!((second.inserted, second.merged), (0, 0), "{second:?}");
    assert_eq!(all_records(&w.store()), snapshot);
    let after = w.stats().await;
    assert_eq!(
        count_route(&after, is_graph_raw),
        count_route(&before, is_graph_raw)
    );
    // Gmail lists only from each mailbox's cursor: at most the newest message(s) of each synced
    // mailbox are fetched again (metadata), far fewer than the copies of the first sync.
    let gmail_again = count_route(&after, is_gmail_get) - count_route(&before, is_gmail_get);
    let fabrikam_copies = w.visible_copies(Some(FABRIKAM)).len() as u64;
    assert!(
        gmail_again <= FABRIKAM_MAILBOXES as u64 && gmail_again < fabrikam_copies / 2,
        "{gmail_again} Gmail message GETs on a sync with nothing new ({fabrikam_copies} copies)"
    );

    // New mail in both tenants arrives after the cursors: only it is indexed.
    let (contoso_box, fabrikam_box) = (
        a_granted_mailbox(&w, CONTOSO),
        a_granted_mailbox(&w, FABRIKAM),
    );
    for (tenant, mailbox, mid) in [
        (CONTOSO, &contoso_box, "<late-1@evil.example>"),
        (FABRIKAM, &fabrikam_box, "<late-2@evil.example>"),
    ] {
        deliver_now(&w, tenant, mailbox, mid).await;
    }
    let third = w.sync(&[]).await;
    assert_eq!(third.inserted, 2, "{third:?}");
    let store = w.store();
    assert_eq!(store.trace_count().unwrap(), snapshot.len() as u64 + 2);
    let late = search(&store, "url:\"https://late.evil.example/x\"");
    let got: BTreeSet<(String, Vec<&str>)> = late
        .iter()
        .map(|r| (r.tenant.clone(), r.delivered_to()))
        .collect();
    assert_eq!(
        got,
        [
            (CONTOSO.to_string(), vec![contoso_box.as_str()]),
            (FABRIKAM.to_string(), vec![fabrikam_box.as_str()]),
        ]
        .into()
    );
    assert_eq!(indexed_copies(&store), w.visible_copies(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_sync_restricted_by_tenant_touches_only_that_tenant() {
    let w = World::start().await;
    let before = w.stats().await;
    let out = w
        .run(&["trace", "sync", "--tenant", FABRIKAM, "--since", "30d"])
        .await;
    let (stdout, stderr) = texts(&out);
    // fabrikam has mailboxes in a domain outside the delegation: reported, not a failure.
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("in 1 ungranted domain skipped — see `clawback doctor`"),
        "{stdout}"
    );
    assert!(
        stderr.contains("sync: mailboxes"),
        "progress line: {stderr}"
    );
    assert!(stderr.contains(FABRIKAM_UNGRANTED_DOMAIN), "{stderr}");
    assert!(stdout.starts_with("synced "), "{stdout}");

    // Only fabrikam is in the trace, and contoso's Graph face saw no request at all.
    let store = w.store();
    let tenants: BTreeSet<String> = all_records(&store).into_iter().map(|r| r.tenant).collect();
    assert_eq!(tenants, [FABRIKAM.to_string()].into());
    assert_eq!(indexed_copies(&store), w.visible_copies(Some(FABRIKAM)));
    let after = w.stats().await;
    let graph = |s: &BTreeMap<String, u64>| count_route(s, |k| k.contains(" /v1.0/"));
    assert_eq!(graph(&after), graph(&before), "no Graph request");
    drop(store);

    // A second run adds nothing.
    let out = w.run(&["trace", "sync", "--tenant", FABRIKAM]).await;
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("indexed 0 new, 0 merged"), "{stdout}");

    // Bad arguments exit 2 naming what is wrong.
    let out = w.run(&["trace", "sync", "--tenant", "nosuch"]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains("\"nosuch\"") && stderr.contains(CONTOSO),
        "{stderr}"
    );
    let out = w.run(&["trace", "sync", "--since", "fortnight"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since \"fortnight\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn library_sync_refuses_an_unknown_tenant() {
    let w = World::start().await;
    let mut store = w.store();
    let options = SyncOptions {
        tenants: vec!["nosuch".into()],
        ..SyncOptions::default()
    };
    let e = sync(&mut store, &w.clients(), &options, |_| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nosuch"), "{e}");
    assert_eq!(store.trace_count().unwrap(), 0);
}

/// Issue 16, exit codes for routine runs: on the demo, the mailboxes in the two ungranted
/// domains are reported in one line and the run exits 0 (a cron job can tell a routine run from
/// a broken one); a tenant whose endpoint refuses connections still exits 3, for `trace sync`
/// and for `watch --once`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_sync_exits_0_with_ungranted_domains_reported_and_3_when_an_endpoint_refuses() {
    let w = World::start().await;
    let ungranted = {
        let state = w.server.lab.state();
        state
            .tenants
            .iter()
            .flat_map(|t| t.mailboxes.keys().filter(|a| !t.mailbox_granted(a)))
            .count()
    };
    assert_eq!(ungranted, 23, "the demo's ungranted mailboxes");
    let out = w.run(&["trace", "sync"]).await;
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("23 mailboxes in 2 ungranted domains skipped — see `clawback doctor`"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
    for domain in [DEMO_UNGRANTED_DOMAIN, FABRIKAM_UNGRANTED_DOMAIN] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("skipped ") && l.contains(domain)),
            "{domain}: {stderr}"
        );
    }

    // The same config with every endpoint on a port nobody listens on: refused, exit 3.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let text = std::fs::read_to_string(&w.config_path).unwrap();
    let lab = w.server.base_url();
    assert!(text.contains(&lab));
    let refused_path = w.config_path.with_file_name("refused.toml");
    std::fs::write(
        &refused_path,
        text.replace(&lab, &format!("http://{closed}")),
    )
    .unwrap();
    let mut refused = World::run_with(&refused_path, &w.data_dir.with_file_name("refused"));
    for args in [&["trace", "sync"][..], &["watch", "--once"][..]] {
        let out = refused(args).await.unwrap();
        let (stdout, stderr) = texts(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stdout}\n{stderr}");
        if args[0] == "trace" {
            assert!(stderr.contains("cannot list mailboxes"), "{stderr}");
            assert!(stderr.contains(&closed.to_string()), "{stderr}");
            assert!(stdout.contains("FAILED"), "{stdout}");
        }
    }
}

/// Every (tenant, Message-ID, mailbox) delivered in the lab, whatever happened to the copy
/// since (the tenant-wide logs record deliveries).
fn delivered_copies(server: &LabServer) -> BTreeSet<(String, String, String)> {
    trace_sync_scale::delivered(server)
}

/// Sub-requests the lab served (every tenant, batched ones counted one by one).
async fn served(w: &World) -> u64 {
    w.lab_get("/_lab/stats").await["served_total"]
        .as_u64()
        .unwrap()
}

#[path = "../benches/support/trace_sync_scale.rs"]
mod trace_sync_scale;

/// Issue 16, acceptance: on a generated 100,000-mailbox lab granting both tenant-wide logs,
/// `trace sync` indexes every delivered copy the lab holds (compared with the lab's own
/// state) with sub-requests proportional to messages: a per-mailbox sync needs at least one
/// per mailbox, more than ten times the bound asserted. A second sync re-reads only the log's
/// overlap and changes nothing. `cargo bench --bench trace_sync_scale` prints the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_from_the_tenant_wide_logs_at_100000_mailboxes_costs_requests_per_message() {
    const MAILBOXES: usize = 100_000;
    let r = trace_sync_scale::run(MAILBOXES, 10_000, 200).await;
    let messages: BTreeSet<(String, String)> = r
        .delivered
        .iter()
        .map(|(t, m, _)| (t.clone(), m.clone()))
        .collect();
    assert!(r.delivered.len() > 10_000, "{}", r.delivered.len());
    assert_eq!(
        r.first.log_tenants,
        vec![CONTOSO.to_string(), FABRIKAM.to_string()]
    );
    assert!(
        r.first.log_fallbacks.is_empty(),
        "{:?}",
        r.first.log_fallbacks
    );
    assert_eq!(r.first.mailboxes_total, 0, "no mailbox listed");
    assert!(
        r.first.complete() && r.first.raw_failed.is_empty(),
        "{}",
        r.first.summary()
    );
    let missing: Vec<_> = r.delivered.difference(&r.indexed).take(5).collect();
    let extra: Vec<_> = r.indexed.difference(&r.delivered).take(5).collect();
    assert!(missing.is_empty(), "not indexed: {missing:?}");
    assert!(extra.is_empty(), "indexed but not in the lab: {extra:?}");
    assert_eq!(r.records, messages.len() as u64);
    // The raw MIME was read (one located copy per message): the campaign has its URL.
    let store = Store::open_in_dir(&r.dir.path().join("data")).unwrap();
    let campaign = search(&store, &format!("msgid:{CAMPAIGN_MESSAGE_ID}"));
    assert_eq!(
        campaign_tenants(&campaign),
        [CONTOSO.to_string(), FABRIKAM.to_string()].into()
    );
    assert!(
        campaign
            .iter()
            .all(|r| r.urls.iter().any(|u| u == CAMPAIGN_URL)),
        "{campaign:?}"
    );
    let cost = r.first_served;
    eprintln!(
        "MEASURED log sync: {MAILBOXES} mailboxes, {} messages, {} copies: {cost} sub-requests ({:.2} per message); {:?}",
        messages.len(),
        r.delivered.len(),
        cost as f64 / messages.len() as f64,
        r.first_requests
    );
    // Per message: locating and reading one copy (a handful of sub-requests, a token per
    // impersonated Gmail user). Per page: the logs (5,000 and 1,000 records a page) and the
    // Graph directory map (999 users a page) — pages, not mailboxes.
    let pages = r.delivered.len() as u64 / 1_000 + MAILBOXES as u64 / 999 + 20;
    assert!(
        cost <= 12 * messages.len() as u64 + pages,
        "{cost} sub-requests for {} messages",
        messages.len()
    );
    assert!(
        cost * 10 <= MAILBOXES as u64,
        "{cost} sub-requests for {MAILBOXES} mailboxes: not 10x below one per mailbox"
    );

    // Again: only the log's overlap is read, nothing fetched, nothing changed.
    assert_eq!(
        (r.second.inserted, r.second.merged, r.second.raw_fetched),
        (0, 0, 0),
        "{}",
        r.second.summary()
    );
    assert!(
        r.second_served <= 4 + r.delivered.len() as u64 / 1_000,
        "second sync: {} sub-requests",
        r.second_served
    );
}

/// Issue 16, Build 2: with the logs' permission withdrawn on a generated 2,000-mailbox lab,
/// the sync says so once per tenant, lists every mailbox (at least one sub-request each) and
/// still indexes every copy the mailboxes show.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_log_permission_sync_says_so_and_lists_every_mailbox() {
    use clawback::lab::generate::{GenerateKind, GenerateOptions, generate};
    const MAILBOXES: usize = 2_000;
    let scenario = generate(&GenerateOptions {
        mailboxes: MAILBOXES,
        campaign_recipients: 600,
        seed: 16,
        kind: GenerateKind::Mixed,
        background_messages: 16,
    })
    .unwrap();
    let fallback = World::of(&scenario).await;
    lab_support::withdraw_trace_log(&fallback.server, &[]);
    let before = served(&fallback).await;
    let report = fallback.sync(&[]).await;
    let cost = served(&fallback).await - before;
    assert!(report.log_tenants.is_empty());
    let said: Vec<&str> = report
        .log_fallbacks
        .iter()
        .map(|f| f.tenant.as_str())
        .collect();
    assert_eq!(said, vec![CONTOSO, FABRIKAM]);
    assert!(
        report
            .log_fallbacks
            .iter()
            .all(|f| f.failure.reason == FailureReason::NotAuthorized),
        "{:?}",
        report.log_fallbacks
    );
    let summary = report.summary();
    assert_eq!(
        summary.matches("tenant-wide log not used").count(),
        2,
        "{summary}"
    );
    assert_eq!(report.mailboxes_total, MAILBOXES);
    assert!(
        cost >= MAILBOXES as u64,
        "per-mailbox sync: {cost} sub-requests"
    );
    let store = fallback.store();
    assert_eq!(indexed_copies(&store), fallback.visible_copies(None));
    eprintln!("MEASURED per-mailbox sync (fallback): {cost} sub-requests");
}

/// Delivers one message now to `mailbox` of `tenant` (`/_lab/deliver`).
async fn deliver_now(w: &World, tenant: &str, mailbox: &str, message_id: &str) {
    deliver_into(w, tenant, mailbox, message_id, json!("inbox")).await
}

/// Delivers one message now into a folder (`{"other": "Projects/2026"}`: a user's own folder
/// or label) of `mailbox`, as an inbox rule or a filter files it.
async fn deliver_into(w: &World, tenant: &str, mailbox: &str, message_id: &str, folder: Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_lab/deliver", w.server.base_url()))
        .json(&json!({"tenant": tenant, "message": {
            "message_id": message_id,
            "from": "late@evil.example",
            "to": [mailbox],
            "subject": "Late arrival",
            "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "body": "Click https://late.evil.example/x now",
            "copy": [{"mailbox": mailbox, "folder": folder}]
        }}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
}

/// The first granted mailbox of a lab tenant (lowercase address).
fn a_granted_mailbox(w: &World, tenant: &str) -> String {
    let state = w.server.lab.state();
    let t = &state.tenants[state.tenant_index(tenant).unwrap()];
    t.mailboxes
        .keys()
        .find(|a| t.mailbox_granted(a))
        .unwrap()
        .clone()
}

/// Mail requests per route between two `/_lab/stats` snapshots (directory, domain and token
/// routes left out).
fn mail_requests(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(k, _)| {
            k.contains("/messages")
                || k.contains("/history")
                || k.contains("/profile")
                || k.contains("/mailFolders")
        })
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

const GRAPH_DELTA: &str = "GET /v1.0/users/{user}/mailFolders/{folder}/messages/delta";
const GRAPH_FOLDER_TREE: &str = "GET /v1.0/users/{user}/mailFolders/delta";

/// Mailbox-folders per tenant, from the lab: every granted Microsoft mailbox's folder tree
/// (the standard folders of the IPM subtree and the user's own, child folders included);
/// one per granted Gmail mailbox (its history covers every label).
fn mailbox_folders(w: &World) -> BTreeMap<&'static str, u64> {
    let state = w.server.lab.state();
    let mut out = BTreeMap::new();
    for name in [CONTOSO, FABRIKAM] {
        let t = &state.tenants[state.tenant_index(name).unwrap()];
        let n = t
            .mailboxes
            .iter()
            .filter(|(a, _)| t.mailbox_granted(a))
            .map(|(_, mb)| match t.kind {
                clawback::model::TenantKind::Microsoft365 => {
                    (clawback::lab::graph::json::TREE_FOLDERS.len() + mb.folders.len()) as u64
                }
                clawback::model::TenantKind::GoogleWorkspace => 1,
            })
            .sum();
        out.insert(name, n);
    }
    out
}
const GMAIL_HISTORY: &str = "GET /gmail/v1/users/{userId}/history";

/// Issue 16, Build 2 (fallback): without the tenant-wide logs' permission the first sync lists
/// every mailbox and takes delta (Graph, per followed folder) and history (Gmail, per mailbox)
/// cursors; a second sync with nothing new costs exactly one request per mailbox-folder, no
/// other mail request, and indexes nothing; new mail is then picked up through the cursors;
/// an out-of-date cursor (Graph 410, Gmail 404) lists that mailbox again in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_logs_sync_follows_delta_and_history_cursors() {
    let w = World::start().await;
    let first = w.sync(&[]).await;
    assert!(
        first.inserted > 0 && first.mailboxes_from_changes == 0,
        "{first:?}"
    );
    assert_eq!(indexed_copies(&w.store()), w.visible_copies(None));
    let snapshot = all_records(&w.store());

    let mailbox_folders = mailbox_folders(&w);
    let granted = |tenant: &str| granted_mailboxes(&w, tenant);

    let before = w.stats().await;
    let second = w.sync(&[]).await;
    let after = w.stats().await;
    assert_eq!(
        (second.inserted, second.merged, second.raw_fetched),
        (0, 0, 0)
    );
    assert_eq!(all_records(&w.store()), snapshot);
    assert_eq!(
        second.mailboxes_from_changes, second.mailboxes_synced,
        "{second:?}"
    );
    // Granted mailboxes: Graph one folder-tree request and one delta request per folder of
    // the tree; Gmail one history request. Refused mailboxes (ungranted domains, not
    // mailboxes) have no cursor and cost their one refused request, as before.
    let mail = mail_requests(&before, &after);
    let refused = |tenant: &str| {
        (second.ungranted.iter().chain(&second.skipped))
            .filter(|f| f.tenant == tenant)
            .count() as u64
    };
    // `clawback doctor`'s probe: one list per domain of a tenant with refused mailboxes.
    let probes: u64 = {
        let state = w.server.lab.state();
        state.tenants.iter().map(|t| t.domains.len() as u64).sum()
    };
    assert_eq!(
        mail.get(GRAPH_FOLDER_TREE).copied(),
        Some(granted(CONTOSO) + refused(CONTOSO)),
        "{mail:?}"
    );
    assert_eq!(
        mail.get(GRAPH_DELTA).copied(),
        Some(mailbox_folders[CONTOSO]),
        "{mail:?}"
    );
    assert_eq!(
        mail.get(GMAIL_HISTORY).copied(),
        Some(granted(FABRIKAM)),
        "{mail:?}"
    );
    let rest: u64 = mail
        .iter()
        .filter(|(k, _)| ![GRAPH_DELTA, GRAPH_FOLDER_TREE, GMAIL_HISTORY].contains(&k.as_str()))
        .map(|(_, n)| n)
        .sum();
    assert!(rest <= refused(FABRIKAM) + probes, "{mail:?}");
    // At most one request per mailbox-folder, plus one per Graph mailbox for its folder tree.
    let bound = mailbox_folders[CONTOSO]
        + mailbox_folders[FABRIKAM]
        + granted(CONTOSO)
        + refused(CONTOSO)
        + refused(FABRIKAM)
        + probes;
    assert!(
        mail.values().sum::<u64>() <= bound,
        "{mail:?}: at most one request per mailbox-folder (+ the folder tree)"
    );

    // New mail in both tenants: picked up through the cursors.
    let (contoso_box, fabrikam_box) = (
        a_granted_mailbox(&w, CONTOSO),
        a_granted_mailbox(&w, FABRIKAM),
    );
    deliver_now(&w, CONTOSO, &contoso_box, "<delta-late-1@evil.example>").await;
    deliver_now(&w, FABRIKAM, &fabrikam_box, "<delta-late-2@evil.example>").await;
    let third = w.sync(&[]).await;
    assert_eq!((third.inserted, third.raw_fetched), (2, 2), "{third:?}");
    assert_eq!(third.mailboxes_from_changes, third.mailboxes_synced);
    assert_eq!(indexed_copies(&w.store()), w.visible_copies(None));

    // Both mailboxes' history expires; mail arrives meanwhile: they are listed again in full.
    {
        let mut state = w.server.lab.state();
        for (tenant, mb) in [(CONTOSO, &contoso_box), (FABRIKAM, &fabrikam_box)] {
            let t = state.tenant_index(tenant).unwrap();
            assert!(state.expire_history(t, mb));
        }
    }
    deliver_now(&w, FABRIKAM, &fabrikam_box, "<delta-late-3@evil.example>").await;
    let fourth = w.sync(&[]).await;
    assert_eq!(fourth.cursors_expired, 2, "{fourth:?}");
    assert_eq!(fourth.inserted, 1, "{fourth:?}");
    assert_eq!(fourth.mailboxes_from_changes, fourth.mailboxes_synced - 2);
    assert_eq!(indexed_copies(&w.store()), w.visible_copies(None));
    // And their fresh cursors work.
    let fifth = w.sync(&[]).await;
    assert_eq!((fifth.inserted, fifth.merged), (0, 0));
    assert_eq!(fifth.mailboxes_from_changes, fifth.mailboxes_synced);
}

/// A user's move (`/_lab/user-action`) of their copy of `message_id` to `folder`.
async fn user_moves(w: &World, tenant: &str, mailbox: &str, message_id: &str, folder: Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_lab/user-action", w.server.base_url()))
        .json(
            &json!({"tenant": tenant, "mailbox": mailbox, "message_id": message_id,
            "folder": folder}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
}

/// Mail that reached `mailbox` since the last sync without passing through its inbox: one
/// message filed straight into `filed` (an inbox rule, a filter), one delivered to the inbox
/// and moved by the user to `moved` before the next sync.
async fn file_and_move(
    w: &World,
    tenant: &str,
    mailbox: &str,
    (filed_id, filed): (&str, &str),
    (moved_id, moved): (&str, &str),
) {
    deliver_into(w, tenant, mailbox, filed_id, json!({ "other": filed })).await;
    deliver_now(w, tenant, mailbox, moved_id).await;
    user_moves(w, tenant, mailbox, moved_id, json!({ "other": moved })).await;
}

/// Granted mailboxes of a lab tenant.
fn granted_mailboxes(w: &World, tenant: &str) -> u64 {
    let state = w.server.lab.state();
    let t = &state.tenants[state.tenant_index(tenant).unwrap()];
    t.mailboxes.keys().filter(|a| t.mailbox_granted(a)).count() as u64
}

/// Issue 16, delta beyond the well-known folders: without the logs, a Microsoft mailbox's
/// cursor syncs follow its whole folder tree (`mailFolders/delta`), so mail an inbox rule files
/// into a new child folder, and mail a user moves into a child of the Inbox before the next
/// sync, is indexed through the cursors alone; a folder once followed reports what arrives
/// later; a sync with nothing new then costs one request per folder followed plus one for the
/// tree, and indexes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graph_cursor_syncs_follow_the_users_own_folders_and_child_folders() {
    let w = World::start().await;
    w.sync(&[CONTOSO]).await;
    let mb = a_granted_mailbox(&w, CONTOSO);
    file_and_move(
        &w,
        CONTOSO,
        &mb,
        ("<filed-1@evil.example>", "Projects/2026"),
        ("<filed-2@evil.example>", "Inbox/Invoices"),
    )
    .await;
    let r = w.sync(&[CONTOSO]).await;
    assert_eq!((r.inserted, r.raw_fetched), (2, 2), "{}", r.summary());
    assert_eq!(
        r.mailboxes_from_changes,
        r.mailboxes_synced,
        "{}",
        r.summary()
    );
    assert_eq!(indexed_copies(&w.store()), w.visible_copies(Some(CONTOSO)));

    deliver_into(
        &w,
        CONTOSO,
        &mb,
        "<filed-3@evil.example>",
        json!({"other": "Projects/2026"}),
    )
    .await;
    let r = w.sync(&[CONTOSO]).await;
    assert_eq!(r.inserted, 1, "{}", r.summary());
    assert_eq!(
        r.mailboxes_from_changes,
        r.mailboxes_synced,
        "{}",
        r.summary()
    );
    assert_eq!(indexed_copies(&w.store()), w.visible_copies(Some(CONTOSO)));

    let (before, snapshot) = (w.stats().await, all_records(&w.store()));
    let idle = w.sync(&[CONTOSO]).await;
    let mail = mail_requests(&before, &w.stats().await);
    assert_eq!((idle.inserted, idle.merged), (0, 0), "{}", idle.summary());
    assert_eq!(all_records(&w.store()), snapshot);
    let refused = (idle.ungranted.len() + idle.skipped.len()) as u64;
    let granted = granted_mailboxes(&w, CONTOSO);
    assert_eq!(
        mail.get(GRAPH_DELTA).copied(),
        Some(mailbox_folders(&w)[CONTOSO]),
        "{mail:?}"
    );
    assert_eq!(
        mail.get(GRAPH_FOLDER_TREE).copied(),
        Some(granted + refused),
        "{mail:?}"
    );
}

/// Issue 16: Gmail's history is mailbox-wide, so user labels need no cursor of their own: a
/// copy a user moves to a label of their own stays indexed (nothing new, nothing lost), and
/// mail a filter files under a label — or that a user moves there before the next sync — is
/// found through the one history cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gmail_history_covers_user_labels() {
    let w = World::start().await;
    w.sync(&[FABRIKAM]).await;
    let mb = a_granted_mailbox(&w, FABRIKAM);
    let indexed_here = {
        let state = w.server.lab.state();
        let t = &state.tenants[state.tenant_index(FABRIKAM).unwrap()];
        t.mailboxes[&mb]
            .copies
            .values()
            .find(|c| c.folder == Folder::Inbox)
            .unwrap()
            .content
            .internet_message_id
            .clone()
    };
    user_moves(
        &w,
        FABRIKAM,
        &mb,
        &indexed_here,
        json!({"other": "Projects"}),
    )
    .await;
    let r = w.sync(&[FABRIKAM]).await;
    assert_eq!((r.inserted, r.merged), (0, 0), "{}", r.summary());
    assert_eq!(indexed_copies(&w.store()), w.visible_copies(Some(FABRIKAM)));

    file_and_move(
        &w,
        FABRIKAM,
        &mb,
        ("<labelled-1@evil.example>", "Projects"),
        ("<labelled-2@evil.example>", "Receipts"),
    )
    .await;
    let r = w.sync(&[FABRIKAM]).await;
    assert_eq!(r.inserted, 2, "{}", r.summary());
    assert_eq!(
        r.mailboxes_from_changes,
        r.mailboxes_synced,
        "{}",
        r.summary()
    );
    assert_eq!(indexed_copies(&w.store()), w.visible_copies(Some(FABRIKAM)));
}

/// Two `clawback trace sync` processes over one store at once, twice (first listing, then
/// through the cursors): one trace equal to the lab's copies, and cursors that still work
/// (a third sync reads every mailbox through them and indexes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_syncing_through_cursors_at_once_stay_consistent() {
    let w = World::start().await;
    let mut run = World::run_with(&w.config_path, &w.data_dir);
    for round in 0..2 {
        if round == 1 {
            deliver_now(
                &w,
                CONTOSO,
                &a_granted_mailbox(&w, CONTOSO),
                "<both-1@evil.example>",
            )
            .await;
            deliver_now(
                &w,
                FABRIKAM,
                &a_granted_mailbox(&w, FABRIKAM),
                "<both-2@evil.example>",
            )
            .await;
            // A folder new to both processes: each follows it, one cursor stays.
            deliver_into(
                &w,
                CONTOSO,
                &a_granted_mailbox(&w, CONTOSO),
                "<both-3@evil.example>",
                json!({"other": "Projects/2026"}),
            )
            .await;
        }
        let (a, b) = (run(&["trace", "sync"]), run(&["trace", "sync"]));
        for out in [a.await.unwrap(), b.await.unwrap()] {
            let (stdout, stderr) = texts(&out);
            assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        }
        assert_eq!(
            indexed_copies(&w.store()),
            w.visible_copies(None),
            "round {round}"
        );
    }
    let third = w.sync(&[]).await;
    assert_eq!((third.inserted, third.merged), (0, 0), "{third:?}");
    assert_eq!(third.mailboxes_from_changes, third.mailboxes_synced);
    // The new folder's cursor survived both writers: what arrives there is found.
    deliver_into(
        &w,
        CONTOSO,
        &a_granted_mailbox(&w, CONTOSO),
        "<both-4@evil.example>",
        json!({"other": "Projects/2026"}),
    )
    .await;
    let fourth = w.sync(&[]).await;
    assert_eq!(fourth.inserted, 1, "{}", fourth.summary());
    assert_eq!(fourth.mailboxes_from_changes, fourth.mailboxes_synced);
}

/// A store from before every folder was followed keeps Graph cursors under five well-known
/// names: such a mailbox (no folder-tree cursor) is listed in full once, its old cursors are
/// dropped and its folders followed by id from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graph_cursors_kept_by_an_earlier_version_are_replaced_by_the_folder_tree() {
    let w = World::start().await;
    w.sync(&[CONTOSO]).await;
    let mb = a_granted_mailbox(&w, CONTOSO);
    {
        let mut store = w.store();
        let ours = store.change_cursors(CONTOSO).unwrap().remove(&mb).unwrap();
        assert!(ours.contains_key("(folders)"), "{ours:?}");
        for (folder, cursor) in &ours {
            assert!(
                store
                    .drop_change_cursor(CONTOSO, &mb, folder, Some(cursor))
                    .unwrap()
            );
        }
        for name in clawback::provider::graph::LEGACY_DELTA_FOLDERS {
            let link = format!(
                "{}/v1.0/users/{mb}/mailFolders/{name}/messages/delta?$deltatoken=old",
                w.server.base_url()
            );
            assert!(
                store
                    .advance_change_cursor(CONTOSO, &mb, name, None, &link, 0)
                    .unwrap()
            );
        }
    }
    let r = w.sync(&[CONTOSO]).await;
    assert_eq!(
        r.mailboxes_from_changes,
        r.mailboxes_synced - 1,
        "{}",
        r.summary()
    );
    assert!(r.complete(), "{}", r.summary());
    let now = w
        .store()
        .change_cursors(CONTOSO)
        .unwrap()
        .remove(&mb)
        .unwrap();
    assert!(now.contains_key("(folders)"), "{now:?}");
    for name in clawback::provider::graph::LEGACY_DELTA_FOLDERS {
        assert!(!now.contains_key(*name), "{name} kept: {now:?}");
    }
    assert_eq!(indexed_copies(&w.store()), w.visible_copies(Some(CONTOSO)));
    let again = w.sync(&[CONTOSO]).await;
    assert_eq!(again.mailboxes_from_changes, again.mailboxes_synced);
}

/// Issue 16, Build 3: the message trace names recipients by address and the trace keys them by
/// sign-in name; the `/users` map that translates is listed once per client and kept, so a
/// watch cycle that finds new deliveries does not list every user again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn log_syncs_keep_the_directory_map_across_syncs() {
    let w = World::with_logs().await;
    let clients = w.clients();
    let mut store = w.store();
    let options = SyncOptions::from_config(Some(&w.config));
    let users = |s: &BTreeMap<String, u64>| s.get("GET /v1.0/users").copied().unwrap_or(0);
    sync(&mut store, &clients, &options, |_| {}).await.unwrap();
    let before = w.stats().await;
    assert!(
        users(&before) >= 1,
        "the first log sync lists the directory"
    );
    for n in 0..2 {
        let mailbox = a_granted_mailbox(&w, CONTOSO);
        deliver_now(&w, CONTOSO, &mailbox, &format!("<cached-{n}@evil.example>")).await;
        let r = sync(&mut store, &clients, &options, |_| {}).await.unwrap();
        assert_eq!(r.inserted, 1, "{}", r.summary());
        assert!(r.log_tenants.contains(&CONTOSO.to_string()));
    }
    assert_eq!(
        users(&w.stats().await),
        users(&before),
        "/users listed again"
    );
    assert_eq!(indexed_copies(&store), delivered_copies(&w.server));
}

/// A tenant-wide log that answers 429 (Graph's message trace allows 100 requests per 5 minutes)
/// fails that tenant for this sync — reported as throttled, its log cursor kept — instead of
/// listing every mailbox in its place (one request per mailbox: 100,000 in a big tenant); the
/// other tenant syncs from its own log; once the window has passed, the next sync reads what
/// the throttled one missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_log_fails_its_tenant_for_the_run_without_listing_every_mailbox() {
    let w = World::with_logs().await;
    let first = w.sync(&[]).await;
    assert!(first.failed.is_empty(), "{}", first.summary());
    let mailbox = a_granted_mailbox(&w, CONTOSO);
    deliver_now(&w, CONTOSO, &mailbox, "<while-throttled@evil.example>").await;

    // Use up contoso's message-trace window, as 100 earlier requests would have.
    let contoso = w.server.lab.state().tenant_index(CONTOSO).unwrap();
    w.server
        .lab
        .trace_windows
        .lock()
        .unwrap()
        .insert(contoso, vec![std::time::Instant::now(); 100].into());
    let before = w.stats().await;
    let throttled = w.sync(&[]).await;
    let after = w.stats().await;
    let failed: Vec<_> = throttled
        .failed
        .iter()
        .map(|f| (f.tenant.as_str(), f.mailbox.clone(), f.failure.reason))
        .collect();
    assert_eq!(
        failed,
        vec![(CONTOSO, None, FailureReason::Throttled)],
        "{}",
        throttled.summary()
    );
    assert!(
        throttled.log_fallbacks.is_empty(),
        "no fallback to listing: {}",
        throttled.summary()
    );
    assert_eq!(throttled.inserted, 0, "{}", throttled.summary());
    let listed = mail_requests(&before, &after);
    assert!(
        listed
            .keys()
            .all(|route| !route.starts_with("GET /v1.0/users/{user}/")),
        "contoso's mailboxes were listed: {listed:?}"
    );
    assert!(throttled.log_tenants.contains(&FABRIKAM.to_string()));

    // The window passes: the cursor was kept, so the missed delivery is read now.
    w.server.lab.trace_windows.lock().unwrap().clear();
    let later = w.sync(&[]).await;
    assert!(later.failed.is_empty(), "{}", later.summary());
    assert_eq!(later.inserted, 1, "{}", later.summary());
    assert!(search(&w.store(), "msgid:<while-throttled@evil.example>").len() == 1);
}
