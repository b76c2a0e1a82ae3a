//! Shared set-up of the engine and provider tests: a lab with a scenario, a config for it and a
//! store whose trace is synced from it; what a retraction must act on, read from the scenario
//! alone; and the compact Google tenant of the Gmail tests. Side effects are still checked in
//! the lab by each test.
#![allow(dead_code, clippy::unwrap_used)]

use clawback::config::Config;
use clawback::lab::scenario::Scenario;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::Folder;
use clawback::provider::ProviderClient;
use clawback::store::Store;
use clawback::trace::sync::{SyncOptions, sync};
use serde_json::json;
use std::collections::BTreeSet;

/// (tenant, mailbox, Message-ID) of one copy.
pub type CopyKey = (String, String, String);

/// A running lab, the config written for it (`<dir>/lab.toml`) and a store in `<dir>/data`.
pub struct SyncedLab {
    pub server: LabServer,
    pub config: Config,
    pub store: Store,
    pub dir: tempfile::TempDir,
}

/// Starts a lab on a free loopback port and syncs the trace of the last `days` days from it,
/// for `tenants` (all when empty), through the real clients.
pub async fn synced_lab(
    scenario: &Scenario,
    options: LabOptions,
    tenants: &[&str],
    days: i64,
) -> SyncedLab {
    let server = LabServer::start(scenario, options, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = server.write_config(&dir.path().join("lab.toml")).unwrap();
    let mut store = Store::open_in_dir(&dir.path().join("data")).unwrap();
    let clients: Vec<ProviderClient> = config
        .tenants
        .iter()
        .map(|t| ProviderClient::new(&config, t).unwrap())
        .collect();
    let mut sync_options = SyncOptions::from_config(Some(&config));
    sync_options.since = chrono::Utc::now() - chrono::Duration::days(days);
    sync_options.tenants = tenants.iter().map(|t| t.to_string()).collect();
    sync(&mut store, &clients, &sync_options, |_| {})
        .await
        .unwrap();
    SyncedLab {
        server,
        config,
        store,
        dir,
    }
}

/// The demo lab on a free loopback port, the config written for it in `dir` (`lab.toml`),
/// and its `host:port` (what clawback names when it cannot reach it).
pub async fn demo_lab(options: LabOptions, dir: &std::path::Path) -> (LabServer, Config, String) {
    let server = LabServer::start(
        &clawback::lab::scenario::demo(1),
        options,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let config = server.write_config(&dir.join("lab.toml")).unwrap();
    let endpoint = server.base_url().trim_start_matches("http://").to_string();
    (server, config, endpoint)
}

/// [`demo_lab`] stopped at once: its config points at a port nothing listens on.
pub async fn stopped_demo_lab(dir: &std::path::Path) -> (Config, String) {
    let (server, config, endpoint) = demo_lab(LabOptions::default(), dir).await;
    server.stop().await;
    (config, endpoint)
}

/// What retracting `messages` must act on, from the scenario alone: every copy in a granted
/// domain's mailbox, except the sender's own copy and copies already gone (Junk, Trash,
/// Recoverable Items) or in Sent Items / Drafts.
pub fn expected_copies(scenario: &Scenario, messages: &BTreeSet<String>) -> BTreeSet<CopyKey> {
    let mut out = BTreeSet::new();
    for t in &scenario.tenants {
        let granted: BTreeSet<String> = t
            .domains
            .iter()
            .filter(|d| d.granted)
            .map(|d| d.name.to_ascii_lowercase())
            .collect();
        let has_mailbox: BTreeSet<String> = t
            .users
            .iter()
            .filter(|u| u.mailbox)
            .map(|u| u.address.to_ascii_lowercase())
            .collect();
        for m in &t.messages {
            if !messages.contains(&m.message_id) {
                continue;
            }
            for c in &m.copies {
                let mailbox = c.mailbox.to_ascii_lowercase();
                let domain = mailbox.rsplit('@').next().unwrap_or_default().to_string();
                if mailbox == m.from.to_ascii_lowercase()
                    || !granted.contains(&domain)
                    || !has_mailbox.contains(&mailbox)
                    || c.folder.is_gone()
                    || matches!(c.folder, Folder::SentItems | Folder::Drafts)
                {
                    continue;
                }
                out.insert((t.name.clone(), mailbox, m.message_id.clone()));
            }
        }
    }
    out
}

/// API actions per copy the lab recorded since `from` (an index into its action log), leaving
/// out the users' own (`user:` actions).
pub fn lab_actions_since(
    server: &LabServer,
    from: usize,
) -> std::collections::BTreeMap<CopyKey, usize> {
    let state = server.lab.state();
    let mut out = std::collections::BTreeMap::new();
    for a in state.actions.iter().skip(from) {
        if a.action.starts_with("user:") {
            continue;
        }
        *out.entry((
            a.tenant.clone(),
            a.mailbox.to_ascii_lowercase(),
            a.internet_message_id.clone(),
        ))
        .or_insert(0) += 1;
    }
    out
}

/// Every copy of `want` acted on, nothing else, and each exactly once.
pub fn assert_acted_on_once(
    got: &std::collections::BTreeMap<CopyKey, usize>,
    want: &BTreeSet<CopyKey>,
    what: &str,
) {
    let keys: BTreeSet<CopyKey> = got.keys().cloned().collect();
    let missing: Vec<_> = want.difference(&keys).collect();
    let extra: Vec<_> = keys.difference(want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, extra {extra:?}"
    );
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: acted on more than once: {twice:?}"
    );
}

/// GETs a `/_lab/` control path as JSON (the request must succeed).
pub async fn lab_get(http: &reqwest::Client, base: &str, path: &str) -> serde_json::Value {
    let url = format!("{base}{path}");
    let r = http.get(&url).send().await.unwrap();
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.unwrap()
}

/// A simulated user moving their copy of a message (`/_lab/user-action`).
pub async fn lab_user_action(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    mailbox: &str,
    message_id: &str,
    folder: &str,
) {
    let r = http
        .post(format!("{base}/_lab/user-action"))
        .json(&json!({
            "tenant": tenant,
            "mailbox": mailbox,
            "message_id": message_id,
            "folder": folder,
        }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "user-action {mailbox}");
}

/// Delivers a payroll lure marked `X-Clawback-Disposition: malicious` to `mailboxes` of
/// `tenant` now (`/_lab/deliver`), as mail arriving during a watch.
pub async fn lab_deliver_malicious(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    message_id: &str,
    mailboxes: &[String],
) {
    let body = json!({
        "tenant": tenant,
        "message": {
            "message_id": message_id,
            "from": "payroll@evil-payroll.example",
            "to": mailboxes,
            "subject": "Your payslip is ready",
            "date": chrono::Utc::now().to_rfc3339(),
            "body": "Open https://evil-payroll.example/payslip",
            "headers": [["X-Clawback-Disposition", "malicious"]],
            "copy": mailboxes.iter().map(|m| json!({"mailbox": m})).collect::<Vec<_>>(),
        }
    });
    let r = http
        .post(format!("{base}/_lab/deliver"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
}

pub const GMAIL_FULL: &str = "https://mail.google.com/";
pub const GMAIL_MODIFY: &str = "https://www.googleapis.com/auth/gmail.modify";
pub const GMAIL_MEMBERS: &str =
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly";
pub const GMAIL_PHISH: &str = "<phish-1@evil.example>";

/// A compact Google tenant: alice (admin), bob (phish already in Trash), carol (50 bulk
/// messages), a user without mailbox, an ungranted domain, and nested groups with an external.
pub fn gmail_scenario() -> Scenario {
    let mut messages = vec![json!({
        "message_id": GMAIL_PHISH,
        "from": "mallory@evil.example",
        "to": ["all@fabrikam.test"],
        "subject": "Urgent: invoice overdue",
        "date": "2026-03-10T12:00:00Z",
        "body": "Please pay the attached invoice today.",
        "attachment": [{"name": "invoice.html", "content_type": "text/html", "content": "<b>pay</b>"}],
        "copy": [
            {"mailbox": "alice@fabrikam.test"},
            {"mailbox": "bob@fabrikam.test", "folder": "trash"},
            {"mailbox": "dave@ungranted.test"}
        ]
    })];
    for i in 0..50 {
        messages.push(json!({
            "message_id": format!("<bulk-{i}@evil.example>"),
            "from": "mallory@evil.example",
            "to": ["carol@fabrikam.test"],
            "subject": format!("Bulk {i}"),
            "date": format!("2026-03-11T10:{:02}:00Z", i),
            "body": "spam",
            "copy": [{"mailbox": "carol@fabrikam.test"}]
        }));
    }
    let s = json!({
        "name": "lab-gmail-test",
        "tenant": [{
            "name": "fabrikam",
            "kind": "google_workspace",
            "domains": [{"name": "fabrikam.test"}, {"name": "ungranted.test", "granted": false}],
            "granted": [GMAIL_FULL, GMAIL_MODIFY,
                "https://www.googleapis.com/auth/admin.directory.user.readonly",
                "https://www.googleapis.com/auth/admin.directory.group.readonly",
                GMAIL_MEMBERS],
            "user": [
                {"address": "alice@fabrikam.test", "admin": true},
                {"address": "bob@fabrikam.test"},
                {"address": "carol@fabrikam.test"},
                {"address": "nomail@fabrikam.test", "mailbox": false},
                {"address": "dave@ungranted.test"}
            ],
            "group": [
                {"address": "all@fabrikam.test", "members": ["alice@fabrikam.test", "team@fabrikam.test", "ext@partner.example"]},
                {"address": "team@fabrikam.test", "members": ["bob@fabrikam.test", "carol@fabrikam.test"]}
            ],
            "message": messages
        }]
    });
    Scenario::parse(&s.to_string(), false, "test").expect("scenario parses")
}

/// A manual request for these Message-IDs in every tenant, at depth 0.
pub fn manual_request(
    message_ids: &[&str],
    action: clawback::model::RetractAction,
    reason: &str,
) -> clawback::engine::plan::RetractRequest {
    clawback::engine::plan::RetractRequest {
        message_ids: message_ids.iter().map(|m| m.to_string()).collect(),
        query: None,
        tenants: vec![],
        only: vec![],
        exclude: vec![],
        depth: 0,
        action,
        trigger: clawback::model::Trigger::Manual,
        reason: reason.into(),
    }
}

/// Makes the plan's job and runs it to the end.
pub async fn run_plan(
    engine: &clawback::engine::Engine,
    plan: &clawback::engine::plan::Plan,
) -> clawback::engine::execute::JobReport {
    let job = engine.create_job(plan, false).unwrap();
    engine
        .run_job(
            job,
            &clawback::engine::execute::RunOptions::default(),
            &|_| {},
        )
        .await
        .unwrap()
}

/// `clawback --config CONFIG ARGS…` as a real process (no `CLAWBACK_CONFIG` from outside).
pub async fn clawback_with_config(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_clawback"))
            .arg("--config")
            .arg(&config)
            .args(&args)
            .env_remove("CLAWBACK_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// One copy retracted, then restored with the restore request's answer lost after it landed
/// (see [`restore_with_lost_answer`]).
pub struct LostRestore<'a> {
    pub tenant: &'a str,
    pub mailbox: &'a str,
    pub message_id: &'a str,
    pub action: clawback::model::RetractAction,
    /// Where the action puts the copy (the restore's `retracted_to`).
    pub retracted_to: Folder,
    /// Part of the restore request's path: `/move` (Graph), `/untrash` (Gmail).
    pub restore_path: &'a str,
    /// A user's move made right after the lost request landed, before clawback looks.
    pub user_then: Option<Folder>,
}

/// Retracts the copy through `client`, scripts the lab to lose the restore's answer (after
/// `user_then`, if any), restores, and returns the restore's outcome. Side effects are the
/// caller's to check in the lab.
pub async fn restore_with_lost_answer(
    server: &LabServer,
    client: &ProviderClient,
    r: &LostRestore<'_>,
) -> Result<clawback::provider::Applied, clawback::provider::Failure> {
    use clawback::lab::{LostAnswer, UserMove};
    let copies = client.locate(r.mailbox, r.message_id).await.unwrap();
    let applied = client.apply(&copies[0], r.action).await.unwrap();
    server.lab.lose_answer(LostAnswer {
        path_contains: r.restore_path.into(),
        then: r.user_then.clone().map(|folder| UserMove {
            tenant: r.tenant.into(),
            mailbox: r.mailbox.into(),
            message_id: r.message_id.into(),
            folder,
        }),
    });
    client
        .restore_from(
            r.mailbox,
            r.message_id,
            applied.new_id.as_deref(),
            &Folder::Inbox,
            clawback::provider::RestoreOptions {
                retracted_to: Some(&r.retracted_to),
                ..Default::default()
            },
        )
        .await
}

/// Withdraws the tenant-wide trace log's permission (Graph `ExchangeMessageTrace.Read.All`,
/// Google `admin.reports.audit.readonly`) from these lab tenants (all when empty): tokens issued
/// from now on lack it, so `trace sync` falls back to listing every mailbox.
pub fn withdraw_trace_log(server: &LabServer, tenants: &[&str]) {
    let mut state = server.lab.state();
    for t in state.tenants.iter_mut() {
        if tenants.is_empty() || tenants.contains(&t.name.as_str()) {
            t.credentials.granted.retain(|g| {
                g != clawback::lab::graph::tracing::PERMISSION
                    && g != clawback::lab::directory::reports::REPORTS_SCOPE
            });
        }
    }
}

/// The mailboxes (lowercase) holding a copy of the demo campaign in the scenario's first
/// tenant, as the scenario says.
pub fn campaign_mailboxes(scenario: &Scenario) -> Vec<String> {
    scenario.tenants[0]
        .messages
        .iter()
        .find(|m| m.message_id == clawback::lab::demo::CAMPAIGN_MESSAGE_ID)
        .unwrap()
        .copies
        .iter()
        .map(|c| c.mailbox.to_ascii_lowercase())
        .collect()
}

/// A child process (a `clawback lab serve`) killed and reaped when dropped, also when an
/// assertion fails.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a `clawback lab serve` started with piped stdout prints, up to and including its
/// `lab listening on …` line. A generous bound (60 s), so a broken lab fails the test instead
/// of hanging it.
pub fn lines_until_listening(child: &mut std::process::Child) -> Vec<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("lab serve printed no listening line ({e}); saw {lines:?}"));
        let listening = line.starts_with("lab listening on ");
        lines.push(line);
        if listening {
            return lines;
        }
    }
}
