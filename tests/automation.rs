//! Automation (issue 7) against the lab: `watch` retracts new malicious mail per the matrix,
//! intel added to the intel directory retracts exactly the matching mail on the next cycle, the
//! demo's phish reports lead to exactly the expected retractions and "not malicious" records, a
//! killed and restarted `watch` neither loses nor repeats work, and metrics / audit show it.
//!
//! The automation guard (issue 11): an indicator over the copy cap or the share-of-trace cap is
//! held (the lab sees nothing) until `policy confirm`; removing an indicator expires its
//! verdicts; an absurd look-back is refused at `policy set` / `import`.
//!
//! Side effects are checked through the lab's own action log, expectations come from the
//! scenario. Times are measured and printed, never asserted.

#![allow(clippy::unwrap_used)]

mod lab_support;
use lab_support::{CopyKey, expected_copies};

use clawback::config::{Config, WatchConfig};
use clawback::engine::automation::{CycleReport, WatchOptions, Watcher};
use clawback::engine::{Engine, EngineError};
use clawback::lab::demo::{
    self, BENIGN_REPORTS, CAMPAIGN_MESSAGE_ID, CAMPAIGN_REPORTS, CONTOSO,
    DEMO_CONTOSO_REPORT_MAILBOX, DEMO_FABRIKAM_REPORT_MAILBOX, DEMO_HOLD_MAILBOX, FABRIKAM,
    MALICIOUS_MESSAGE_ID,
};
use clawback::lab::scenario::Scenario;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{Disposition, Folder, RetractAction, Role, Trigger};
use clawback::store::Store;
use clawback::store::automation::{HoldChange, HoldState};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const SEED: u64 = 7;

struct World {
    scenario: Scenario,
    server: LabServer,
    config: Config,
    config_path: PathBuf,
    data: PathBuf,
    dir: tempfile::TempDir,
}

async fn world(options: LabOptions) -> World {
    let scenario = demo::build(SEED);
    let server = LabServer::start(&scenario, options, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("lab.toml");
    let mut config: Config = server.write_config(&config_path).unwrap();
    for t in &mut config.tenants {
        t.report_mailboxes = vec![if t.name == CONTOSO {
            DEMO_CONTOSO_REPORT_MAILBOX.to_string()
        } else {
            DEMO_FABRIKAM_REPORT_MAILBOX.to_string()
        }];
    }
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let config = Config::load(&config_path).unwrap();
    let data = dir.path().join("data");
    World {
        scenario,
        server,
        config,
        config_path,
        data,
        dir,
    }
}

impl World {
    fn engine(&self) -> Engine {
        Engine::new(self.config.clone(), Store::open_in_dir(&self.data).unwrap()).unwrap()
    }

    fn set_policy(&self, f: impl FnOnce(&mut clawback::engine::view::PolicyMatrix)) {
        let e = self.engine();
        let mut p = e.load_policy().unwrap();
        f(&mut p);
        e.save_policy(p).unwrap();
    }
}

/// What retracting `messages` must act on, from the scenario alone.
fn expected(scenario: &Scenario, messages: &BTreeSet<String>) -> BTreeSet<CopyKey> {
    expected_copies(scenario, messages)
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// API actions per copy recorded by the lab since `from` (index into its action log).
fn actions_since(server: &LabServer, from: usize) -> BTreeMap<CopyKey, usize> {
    lab_support::lab_actions_since(server, from)
}

fn log_len(server: &LabServer) -> usize {
    server.lab.state().actions.len()
}

fn assert_exactly_once(got: &BTreeMap<CopyKey, usize>, want: &BTreeSet<CopyKey>, what: &str) {
    lab_support::assert_acted_on_once(got, want, what)
}

fn options(intel: Option<PathBuf>) -> WatchOptions {
    WatchOptions {
        sync: true,
        intel_dir: intel,
        journal_dir: None,
        reporters_threshold: 3,
        force_responses: true,
    }
}

async fn once(engine: &Engine, opts: WatchOptions) -> CycleReport {
    let mut w = Watcher::new(engine, opts);
    let r = w.cycle().await.unwrap();
    eprintln!("{}", r.summary());
    r
}

/// (i) A new malicious message delivered to 50 mailboxes while the watch loop runs is
/// retracted per the matrix, each copy once; detection → first retraction time is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_loop_retracts_new_malicious_delivery_in_50_mailboxes() {
    let w = world(LabOptions::default()).await;
    w.set_policy(|p| {
        p.actions
            .insert(Disposition::Malicious, RetractAction::Junk);
    });
    let engine = Arc::new(w.engine());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<CycleReport>();
    let loop_engine = engine.clone();
    let loop_stop = stop.clone();
    let looper = tokio::spawn(async move {
        let mut watcher = Watcher::new(
            &loop_engine,
            WatchOptions {
                force_responses: false,
                ..options(None)
            },
        );
        // Bounded: at most 600 cycles of >= 200 ms.
        for _ in 0..600 {
            if loop_stop.load(Ordering::Relaxed) {
                break;
            }
            let r = watcher.cycle().await.unwrap();
            let _ = tx.send(r);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // The first cycle syncs the demo and retracts its header-malicious lure.
    let first = tokio::time::timeout(Duration::from_secs(120), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        first
            .jobs
            .iter()
            .any(|j| j.message_id == MALICIOUS_MESSAGE_ID && j.trigger == Trigger::Auto),
        "{first:?}"
    );

    let contoso = w
        .scenario
        .tenants
        .iter()
        .find(|t| t.name == CONTOSO)
        .unwrap();
    let mailboxes: Vec<String> = contoso
        .users
        .iter()
        .filter(|u| {
            u.mailbox
                && u.address.ends_with("@contoso.com")
                && u.address != DEMO_HOLD_MAILBOX
                && u.address != DEMO_CONTOSO_REPORT_MAILBOX
        })
        .map(|u| u.address.to_ascii_lowercase())
        .take(50)
        .collect();
    assert_eq!(mailboxes.len(), 50);
    let mid = "<watch-test-0001@evil-payroll.example>";
    let from = log_len(&w.server);
    let http = reqwest::Client::new();
    lab_support::lab_deliver_malicious(&http, &w.server.base_url(), CONTOSO, mid, &mailboxes).await;
    let delivered = Instant::now();
    let mut first_at = None;
    let mut all_at = None;
    // Bounded wait: 120 s at 20 ms.
    for _ in 0..6000 {
        let got = actions_since(&w.server, from);
        let n = got.keys().filter(|k| k.2 == mid).count();
        if n > 0 && first_at.is_none() {
            first_at = Some(delivered.elapsed());
        }
        if n >= 50 {
            all_at = Some(delivered.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let first_at = first_at.expect("nothing was retracted");
    let all_at = all_at.expect("not every copy was retracted");
    eprintln!(
        "MEASURED delivery -> first retraction {:.3}s, -> all 50 copies {:.3}s",
        first_at.as_secs_f64(),
        all_at.as_secs_f64()
    );
    // Let the loop finish its cycle, then check exactly once and the folder.
    tokio::time::timeout(Duration::from_secs(60), looper)
        .await
        .unwrap()
        .unwrap();
    let want: BTreeSet<CopyKey> = mailboxes
        .iter()
        .map(|m| (CONTOSO.to_string(), m.clone(), mid.to_string()))
        .collect();
    let got: BTreeMap<CopyKey, usize> = actions_since(&w.server, from)
        .into_iter()
        .filter(|(k, _)| k.2 == mid)
        .collect();
    assert_exactly_once(&got, &want, "new malicious delivery");
    let state = w.server.lab.state();
    let t = state.tenants.iter().find(|t| t.name == CONTOSO).unwrap();
    for m in &mailboxes {
        let folders: Vec<&Folder> = t.mailboxes[m]
            .copies
            .values()
            .filter(|c| c.content.internet_message_id == mid)
            .map(|c| &c.folder)
            .collect();
        assert_eq!(folders, vec![&Folder::Junk], "{m}");
    }
    drop(state);
    // The job is an auto job, stamped with when the watcher found the disposition (no later
    // than the job's creation), so time-to-act counts from the detection.
    let jobs = engine.store().jobs(50).unwrap();
    assert!(jobs.iter().all(|j| j.trigger == Trigger::Auto), "{jobs:?}");
    assert!(
        jobs.iter()
            .all(|j| j.detected_at.is_some_and(|d| d <= j.created_at)),
        "{jobs:?}"
    );
}

/// (ii) An indicator file added to the intel directory makes the next cycle retract exactly
/// the matching delivered messages; broken intel files are reported and skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intel_added_to_the_directory_retracts_exactly_the_matching_mail() {
    let w = world(LabOptions::default()).await;
    w.set_policy(|p| {
        p.actions
            .insert(Disposition::Malicious, RetractAction::Junk);
        p.actions
            .insert(Disposition::Suspicious, RetractAction::Trash);
        p.post_delivery.enabled = true;
    });
    let intel = w.dir.path().join("intel");
    std::fs::create_dir_all(&intel).unwrap();
    let engine = w.engine();
    let baseline = once(&engine, options(Some(intel.clone()))).await;
    // The baseline cycle applies the matrix to the demo's header dispositions (auto).
    assert!(
        baseline.jobs.iter().all(|j| j.trigger == Trigger::Auto),
        "{baseline:?}"
    );
    assert!(baseline.intel_reloaded.is_none());

    // Pick from the scenario: an external sender without any disposition header (several
    // messages), and another such message by subject.
    let internal = [
        "@contoso.com",
        "@fabrikam.com",
        "@contoso-labs.com",
        "@fabrikam.org",
    ];
    let mut by_sender: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut subjects: BTreeMap<String, (String, String)> = BTreeMap::new();
    for t in &w.scenario.tenants {
        for m in &t.messages {
            let from = m.from.to_ascii_lowercase();
            let has_disposition = m
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("X-Clawback-Disposition"))
                || m.raw
                    .as_deref()
                    .is_some_and(|r| r.to_ascii_lowercase().contains("x-clawback-disposition"));
            if m.message_id == CAMPAIGN_MESSAGE_ID
                || has_disposition
                || m.in_reply_to.is_some()
                || internal.iter().any(|d| from.ends_with(d))
            {
                continue;
            }
            by_sender
                .entry(from.clone())
                .or_default()
                .push(m.message_id.clone());
            subjects.insert(m.message_id.clone(), (from, m.subject.clone()));
        }
    }
    let (sender, sender_msgs) = busiest(&by_sender, 0);
    let (subject_mid, (_, subject)) = subjects
        .iter()
        .find(|(_, (f, s))| f != &sender && !s.contains('\''))
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    // Every message with that subject (any sender) matches the subject indicator.
    let mut matching: BTreeSet<String> = sender_msgs.iter().cloned().collect();
    for t in &w.scenario.tenants {
        for m in &t.messages {
            if m.subject.eq_ignore_ascii_case(&subject) {
                matching.insert(m.message_id.clone());
            }
        }
    }
    eprintln!(
        "indicators: sender {sender} ({} messages), subject {subject:?} ({subject_mid}); {} messages match",
        sender_msgs.len(),
        matching.len()
    );
    std::fs::write(
        intel.join("feed.csv"),
        format!("type,value,disposition\nsender,{sender},malicious\nnot-a-type,x,malicious\n"),
    )
    .unwrap();
    std::fs::write(
        intel.join("bundle.json"),
        serde_json::json!({
            "type": "bundle", "id": "bundle--1", "objects": [
                {"type": "indicator", "id": "indicator--s", "pattern_type": "stix",
                 "indicator_types": ["anomalous-activity"],
                 "pattern": format!("[email-message:subject = '{subject}']")},
                {"type": "indicator", "id": "indicator--bad", "pattern": "[process:name = 'x']"}
            ]
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        intel.join("broken.json"),
        "{\"type\": \"bundle\", \"objects\": [",
    )
    .unwrap();

    let from = log_len(&w.server);
    let r = once(&engine, options(Some(intel.clone()))).await;
    let (indicators, problems) = r.intel_reloaded.clone().unwrap();
    assert_eq!(indicators, 2, "{problems:?}");
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems.iter().any(|p| p.contains("feed.csv: line 3")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("bundle.json: objects[1] (indicator--bad)")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("broken.json: line 1")),
        "{problems:?}"
    );
    let want = expected(&w.scenario, &matching);
    assert!(!want.is_empty());
    assert_exactly_once(&actions_since(&w.server, from), &want, "intel");
    assert!(
        r.jobs.iter().all(|j| j.trigger == Trigger::PostDelivery),
        "{r:?}"
    );
    // The sender's mail went to Junk (malicious), the subject's to Trash (suspicious).
    {
        let state = w.server.lab.state();
        for (tenant, mailbox, mid) in &want {
            let t = state.tenants.iter().find(|t| &t.name == tenant).unwrap();
            let folder = t.mailboxes[mailbox]
                .copies
                .values()
                .find(|c| &c.content.internet_message_id == mid)
                .map(|c| c.folder.clone())
                .unwrap();
            let want_folder = if sender_msgs.contains(mid) {
                Folder::Junk
            } else {
                Folder::Trash
            };
            assert_eq!(folder, want_folder, "{tenant}/{mailbox} {mid}");
        }
    }
    let rec = engine.store().trace_by_message_id(&sender_msgs[0]).unwrap();
    assert_eq!(rec[0].disposition_source.as_deref(), Some("intel:feed.csv"));

    // Nothing changed: the next cycle does nothing.
    let from = log_len(&w.server);
    let r = once(&engine, options(Some(intel))).await;
    assert!(r.jobs.is_empty(), "{r:?}");
    assert!(actions_since(&w.server, from).is_empty());
}

/// (iii) The demo's phish reports: the campaign (reported by CAMPAIGN_REPORTS distinct users)
/// is retracted everywhere, each benign report is recorded "not malicious", every decision is
/// audited, and a restarted watcher does not decide again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phish_reports_retract_the_campaign_and_record_benign_as_not_malicious() {
    let w = world(LabOptions::default()).await;
    w.set_policy(|p| {
        p.actions
            .insert(Disposition::Malicious, RetractAction::Junk);
        p.phish_submission.enabled = true;
    });
    let engine = w.engine();
    let from = log_len(&w.server);
    let r = once(&engine, options(None)).await;
    assert!(r.phish_ran);
    let malicious: Vec<_> = r
        .decisions
        .iter()
        .filter(|d| d.verdict == "malicious")
        .collect();
    let benign: Vec<_> = r
        .decisions
        .iter()
        .filter(|d| d.verdict == "not_malicious")
        .collect();
    assert_eq!(
        r.decisions.len(),
        CAMPAIGN_REPORTS + BENIGN_REPORTS,
        "{:?}",
        r.decisions
    );
    assert_eq!(malicious.len(), CAMPAIGN_REPORTS, "{:?}", r.decisions);
    assert!(
        malicious
            .iter()
            .all(|d| d.original.as_deref() == Some(CAMPAIGN_MESSAGE_ID))
    );
    let reporters: BTreeSet<&str> = malicious.iter().map(|d| d.reporter.as_str()).collect();
    assert_eq!(reporters.len(), CAMPAIGN_REPORTS);
    assert_eq!(benign.len(), BENIGN_REPORTS, "{:?}", r.decisions);
    let benign_ids: BTreeSet<String> = benign.iter().filter_map(|d| d.original.clone()).collect();
    assert!(!benign_ids.contains(CAMPAIGN_MESSAGE_ID));

    // Exactly the campaign's copies (phish submission) and the header-malicious lure (auto).
    let want = expected(
        &w.scenario,
        &set(&[CAMPAIGN_MESSAGE_ID, MALICIOUS_MESSAGE_ID]),
    );
    let got = actions_since(&w.server, from);
    assert_exactly_once(&got, &want, "phish submission");
    assert!(got.keys().all(|k| !benign_ids.contains(&k.2)));
    for j in &r.jobs {
        let want_trigger = if j.message_id == CAMPAIGN_MESSAGE_ID {
            Trigger::PhishSubmission
        } else {
            Trigger::Auto
        };
        assert_eq!(j.trigger, want_trigger, "{j:?}");
    }
    assert!(
        r.jobs
            .iter()
            .any(|j| j.tenant == FABRIKAM && j.message_id == CAMPAIGN_MESSAGE_ID)
    );

    // Every decision is in the store and the audit log (section automation).
    let stored = engine.store().report_decisions().unwrap();
    assert_eq!(stored.len(), CAMPAIGN_REPORTS + BENIGN_REPORTS);
    let audited = engine
        .store()
        .audit_entries()
        .unwrap()
        .unwrap()
        .into_iter()
        .filter(|e| e.record.section == "automation" && e.record.action == "phish_decision")
        .count();
    assert_eq!(audited, CAMPAIGN_REPORTS + BENIGN_REPORTS);

    // A restarted watcher (fresh engine, same store) neither decides nor retracts again.
    drop(engine);
    let engine = w.engine();
    let from = log_len(&w.server);
    let r = once(&engine, options(None)).await;
    assert!(r.decisions.is_empty(), "{:?}", r.decisions);
    assert!(r.jobs.is_empty(), "{:?}", r.jobs);
    assert!(actions_since(&w.server, from).is_empty());
}

fn clawback(w: &World) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_clawback"));
    c.arg("--config")
        .arg(&w.config_path)
        .arg("--data-dir")
        .arg(&w.data)
        .env_remove("CLAWBACK_CONFIG")
        .env_remove("CLAWBACK_DATA_DIR");
    c
}

fn run_ok(w: &World, args: &[&str]) -> String {
    let out = clawback(w).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "clawback {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (iv) + (v): the real binary. `policy set` configures it; `watch` is killed (SIGKILL) while
/// it retracts, then `watch --once` resumes: every copy was acted on exactly once. Metrics show
/// the retractions as auto and the audit shows each decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_watch_restarts_without_losing_or_repeating_work() {
    let w = world(LabOptions {
        latency: Duration::from_millis(15),
        ..LabOptions::default()
    })
    .await;
    run_ok(&w, &["policy", "set", "malicious", "junk"]);
    run_ok(
        &w,
        &[
            "policy",
            "set",
            "phish_submission",
            "on",
            "--interval",
            "1m",
            "--lookback",
            "14d",
        ],
    );
    let shown = run_ok(&w, &["policy", "show"]);
    assert!(shown.contains("malicious    junk"), "{shown}");
    assert!(
        shown.contains("phish_submission  on  every 1m looking back 14d"),
        "{shown}"
    );

    let want = expected(
        &w.scenario,
        &set(&[CAMPAIGN_MESSAGE_ID, MALICIOUS_MESSAGE_ID]),
    );
    let from = log_len(&w.server);
    let mut child = clawback(&w)
        .args(["watch", "--interval", "1s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut killed_at = None;
    // Bounded: 180 s at 5 ms.
    for _ in 0..36_000 {
        let n = actions_since(&w.server, from).len();
        if n > 0 {
            killed_at = Some((n, started.elapsed()));
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL: no chance to clean up.
    let _ = child.kill();
    let _ = child.wait();
    let (n_at_kill, t) = killed_at.expect("watch retracted nothing");
    // Let in-flight requests settle before looking.
    std::thread::sleep(Duration::from_millis(300));
    let after_kill = actions_since(&w.server, from).len();
    eprintln!(
        "MEASURED killed watch after {:.2}s with {n_at_kill} copies acted on ({after_kill} after settling) of {}",
        t.as_secs_f64(),
        want.len()
    );
    run_ok(&w, &["watch", "--once"]);
    let got = actions_since(&w.server, from);
    assert_exactly_once(&got, &want, "kill + restart");

    // The log file in the data dir.
    let log = std::fs::read_to_string(w.data.join("watch.log")).unwrap();
    assert!(log.contains("watch: starting"), "{log}");

    // (v) Metrics: every retraction is auto.
    let m: serde_json::Value = serde_json::from_str(&run_ok(&w, &["metrics", "--json"])).unwrap();
    let succeeded = m["succeeded"]["count"].as_u64().unwrap();
    assert_eq!(succeeded as usize, want.len(), "{m}");
    assert_eq!(m["auto"]["count"], m["total"], "{m}");
    assert_eq!(m["manual"]["count"].as_u64(), Some(0), "{m}");
    // The audit shows each decision.
    let audit = run_ok(&w, &["audit", "list", "--section", "automation"]);
    let decisions = audit
        .lines()
        .filter(|l| l.contains("phish_decision"))
        .count();
    assert_eq!(decisions, CAMPAIGN_REPORTS + BENIGN_REPORTS, "{audit}");
    assert!(audit.contains("auto_retract"), "{audit}");

    // SIGTERM: a running watch stops cleanly (exit 0, said in the log) and acts on nothing new.
    let from = log_len(&w.server);
    let mut child = clawback(&w)
        .args(["watch", "--interval", "1s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let starts = |text: &str| text.matches("watch: starting").count();
    let before = starts(&log);
    // Bounded: 30 s at 20 ms, until the new process logged its start and one cycle.
    for _ in 0..1500 {
        let now = std::fs::read_to_string(w.data.join("watch.log")).unwrap_or_default();
        if starts(&now) > before + 1
            && now
                .rsplit("watch: starting")
                .next()
                .is_some_and(|t| t.contains("cycle:"))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut status = None;
    for _ in 0..1500 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let status = status.expect("watch did not stop on SIGTERM");
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(w.data.join("watch.log")).unwrap();
    assert!(log.contains("stopped by signal"), "{log}");
    assert!(actions_since(&w.server, from).is_empty());

    // Soft Delete with a Google tenant configured: saved, with a warning (Trash on Gmail).
    let out = clawback(&w)
        .args(["policy", "set", "suspicious", "soft_delete"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Soft Delete is Microsoft only"), "{err}");
    let exported = run_ok(&w, &["policy", "export"]);
    assert!(
        exported.contains("suspicious = \"soft_delete\""),
        "{exported}"
    );
    // Every policy change is audited.
    let audit = run_ok(&w, &["audit", "list", "--section", "policy"]);
    assert_eq!(
        audit.lines().filter(|l| l.contains("policy_set")).count(),
        3,
        "{audit}"
    );
}

/// A journal report / EML dropped into the watched journal directory (no provider sync) is
/// ingested on the next cycle and its disposition applied: exactly its copies, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_directory_message_with_a_disposition_is_retracted() {
    let w = world(LabOptions::default()).await;
    w.set_policy(|p| {
        p.actions
            .insert(Disposition::Malicious, RetractAction::Trash);
    });
    let journal = w.dir.path().join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    let engine = w.engine();
    let opts = WatchOptions {
        sync: false,
        journal_dir: Some(journal.clone()),
        ..options(None)
    };
    let mut watcher = Watcher::new(&engine, opts);
    let r = watcher.cycle().await.unwrap();
    assert!(r.jobs.is_empty(), "{r:?}");

    let mid = "<journal-0001@evil-journal.example>";
    let mailboxes = journal_lure(&w, &journal, mid, 3, "").await;
    let from = log_len(&w.server);
    let r = watcher.cycle().await.unwrap();
    assert_eq!(r.journal_files, 1, "{r:?}");
    let want: BTreeSet<CopyKey> = mailboxes
        .iter()
        .map(|m| (CONTOSO.to_string(), m.clone(), mid.to_string()))
        .collect();
    assert_exactly_once(&actions_since(&w.server, from), &want, "journal");
    assert!(r.jobs.iter().all(|j| j.trigger == Trigger::Auto));
    // Unchanged file, next cycle: not read again, nothing done.
    let from = log_len(&w.server);
    let r = watcher.cycle().await.unwrap();
    assert_eq!(r.journal_files, 0);
    drop(watcher);
    // A restarted watcher reads the file again (the trace is unchanged) and does nothing.
    let r = once(
        &engine,
        WatchOptions {
            sync: false,
            journal_dir: Some(journal),
            ..options(None)
        },
    )
    .await;
    assert_eq!(r.journal_files, 1);
    assert!(r.jobs.is_empty(), "{r:?}");
    assert!(actions_since(&w.server, from).is_empty());
}

/// Phish Submission decides "malicious" on an intel match too: a benign report's original whose
/// subject is in the intel directory is retracted (only that message, not other mail matching
/// the same intel: Post Delivery is off), the other benign reports stay "not malicious".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phish_report_matching_intel_is_malicious_with_one_reporter() {
    let w = world(LabOptions::default()).await;
    w.set_policy(|p| {
        p.actions
            .insert(Disposition::Malicious, RetractAction::Junk);
        p.phish_submission.enabled = true;
    });
    // The first benign report's original subject, from the scenario.
    let reports: Vec<String> = w
        .scenario
        .tenants
        .iter()
        .flat_map(|t| t.messages.iter())
        .filter_map(|m| m.subject.strip_prefix("Junk: ").map(str::to_string))
        .collect();
    assert_eq!(reports.len(), BENIGN_REPORTS);
    let subject = reports[0].clone();
    let same = reports.iter().filter(|s| **s == subject).count();
    let intel = w.dir.path().join("intel");
    std::fs::create_dir_all(&intel).unwrap();
    std::fs::write(
        intel.join("subjects.csv"),
        format!("subject,\"{}\",malicious\n", subject.replace('"', "\"\"")),
    )
    .unwrap();
    let engine = w.engine();
    let from = log_len(&w.server);
    let r = once(&engine, options(Some(intel))).await;
    let by_intel: Vec<_> = r
        .decisions
        .iter()
        .filter(|d| d.verdict == "malicious" && d.reason.contains("intel:subjects.csv"))
        .collect();
    assert_eq!(by_intel.len(), same, "{:?}", r.decisions);
    let not_malicious = r
        .decisions
        .iter()
        .filter(|d| d.verdict == "not_malicious")
        .count();
    assert_eq!(not_malicious, BENIGN_REPORTS - same, "{:?}", r.decisions);
    let originals: BTreeSet<String> = by_intel.iter().filter_map(|d| d.original.clone()).collect();
    let mut ids = originals.clone();
    ids.insert(CAMPAIGN_MESSAGE_ID.to_string());
    ids.insert(MALICIOUS_MESSAGE_ID.to_string());
    let want = expected(&w.scenario, &ids);
    assert_exactly_once(
        &actions_since(&w.server, from),
        &want,
        "intel-decided report",
    );
    let rec = engine
        .store()
        .trace_by_message_id(originals.iter().next().unwrap())
        .unwrap();
    assert_eq!(rec[0].disposition, Some(Disposition::Malicious));
    assert_eq!(
        rec[0].disposition_source.as_deref(),
        Some("intel:subjects.csv")
    );
}

/// External senders of the scenario whose mail carries no disposition header and is not the
/// campaign or a reply: sender → their Message-IDs.
fn plain_external_senders(scenario: &Scenario) -> BTreeMap<String, Vec<String>> {
    let internal = [
        "@contoso.com",
        "@fabrikam.com",
        "@contoso-labs.com",
        "@fabrikam.org",
    ];
    let mut by_sender: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in &scenario.tenants {
        for m in &t.messages {
            let from = m.from.to_ascii_lowercase();
            let has_disposition = m
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("X-Clawback-Disposition"))
                || m.raw
                    .as_deref()
                    .is_some_and(|r| r.to_ascii_lowercase().contains("x-clawback-disposition"));
            if m.message_id == CAMPAIGN_MESSAGE_ID
                || has_disposition
                || m.in_reply_to.is_some()
                || internal.iter().any(|d| from.ends_with(d))
            {
                continue;
            }
            by_sender
                .entry(from)
                .or_default()
                .push(m.message_id.clone());
        }
    }
    by_sender
}

/// The `rank`-th busiest sender (0 = the busiest) with at least two messages.
fn busiest(by_sender: &BTreeMap<String, Vec<String>>, rank: usize) -> (String, Vec<String>) {
    let mut senders: Vec<(&String, &Vec<String>)> =
        by_sender.iter().filter(|(_, v)| v.len() >= 2).collect();
    senders.sort_by_key(|(s, v)| std::cmp::Reverse((v.len(), s.to_string())));
    senders
        .get(rank)
        .map(|(s, v)| (s.to_string(), v.to_vec()))
        .unwrap()
}

fn audited(engine: &Engine, action: &str) -> Vec<serde_json::Value> {
    engine
        .store()
        .audit_entries()
        .unwrap()
        .unwrap()
        .into_iter()
        .filter(|e| e.record.section == "automation" && e.record.action == action)
        .map(|e| serde_json::to_value(&e.record).unwrap())
        .collect()
}

fn folders_of(w: &World, copies: &BTreeSet<CopyKey>) -> BTreeMap<CopyKey, Folder> {
    let state = w.server.lab.state();
    copies
        .iter()
        .map(|(tenant, mailbox, mid)| {
            let t = state.tenants.iter().find(|t| &t.name == tenant).unwrap();
            let folder = t.mailboxes[mailbox]
                .copies
                .values()
                .find(|c| &c.content.internet_message_id == mid)
                .map(|c| c.folder.clone())
                .unwrap();
            ((tenant.clone(), mailbox.clone(), mid.clone()), folder)
        })
        .collect()
}

/// The intel row `subject,"*"`: over `[watch] max_copies_per_cycle` (default 500) it is
/// held, not retracted — the lab sees no action, no verdict is written, the next cycle does not
/// hold it twice — and `policy holds` / the `watch` log show it. A responder may not confirm;
/// after an admin's `policy confirm ID` the next cycle retracts exactly its copies, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indicator_over_the_copy_cap_is_held_until_policy_confirm() {
    let w = world(LabOptions::default()).await;
    w.set_policy(|p| {
        p.actions
            .insert(Disposition::Malicious, RetractAction::Junk);
        p.post_delivery.enabled = true;
    });
    let intel = w.dir.path().join("intel");
    std::fs::create_dir_all(&intel).unwrap();
    let engine = w.engine();
    once(&engine, options(Some(intel.clone()))).await;

    std::fs::write(intel.join("feed.csv"), "type,value\nsubject,\"*\"\n").unwrap();
    let from = log_len(&w.server);
    let r = once(&engine, options(Some(intel.clone()))).await;
    assert_eq!(r.held.len(), 1, "{r:?}");
    let held = r.held[0].clone();
    assert_eq!(held.change, HoldChange::New);
    assert_eq!(held.indicator.kind, "subject");
    assert_eq!(held.indicator.value, "*");
    assert!(held.copies > 500, "{held:?}");
    assert!(
        held.reason.contains("max_copies_per_cycle = 500"),
        "{held:?}"
    );
    assert!(r.jobs.is_empty(), "{r:?}");
    assert_eq!(r.intel_upgraded, 0);
    assert_eq!(r.holds_waiting, 1);
    assert!(
        r.summary().contains("1 held for confirmation"),
        "{}",
        r.summary()
    );
    assert!(
        actions_since(&w.server, from).is_empty(),
        "the lab saw actions for a held match"
    );
    let campaign = engine
        .store()
        .trace_by_message_id(CAMPAIGN_MESSAGE_ID)
        .unwrap();
    assert!(
        campaign.iter().all(|t| t.disposition.is_none()),
        "a held match wrote a verdict: {campaign:?}"
    );

    // The next cycle sees the same match: the same hold, not a second one, still nothing done.
    let r = once(&engine, options(Some(intel.clone()))).await;
    assert_eq!(r.held.len(), 1, "{r:?}");
    assert_eq!(r.held[0].id, held.id);
    assert_eq!(r.held[0].change, HoldChange::Unchanged);
    assert_eq!(engine.automation_holds(true).unwrap().len(), 1);
    assert_eq!(engine.automation_holds(false).unwrap().len(), 1);
    assert!(actions_since(&w.server, from).is_empty());
    let notes = audited(&engine, "needs_confirmation");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["counts"]["copies"], held.copies, "{}", notes[0]);

    // `watch` logs it with the command that releases it; `policy holds` lists it.
    run_ok(&w, &["watch", "--once", "--intel", intel.to_str().unwrap()]);
    let log = std::fs::read_to_string(w.data.join("watch.log")).unwrap();
    let release = format!("clawback policy confirm {}", held.id);
    assert!(log.contains(&release), "{log}");
    assert!(log.contains("1 held for confirmation"), "{log}");
    let listed = run_ok(&w, &["policy", "holds"]);
    assert!(listed.contains(&release), "{listed}");
    assert!(listed.contains("needs_confirmation"), "{listed}");
    assert!(actions_since(&w.server, from).is_empty());

    // A responder may not confirm (denied, audited); unknown ids are refused.
    let mut config = w.config.clone();
    config.operator.role = Role::Responder;
    let responder = Engine::new(config, Store::open_in_dir(&w.data).unwrap()).unwrap();
    let denied = responder.confirm_hold(held.id).unwrap_err();
    assert!(matches!(denied, EngineError::Denied(_)), "{denied}");
    drop(responder);
    let out = clawback(&w)
        .args(["policy", "confirm", "999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no held match 999"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An admin confirms; the next cycle retracts exactly the held messages' copies, once.
    let out = run_ok(&w, &["policy", "confirm", &held.id.to_string()]);
    assert!(
        out.contains(&format!("confirmed hold {}", held.id)),
        "{out}"
    );
    let again = clawback(&w)
        .args(["policy", "confirm", &held.id.to_string()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    let messages: BTreeSet<String> = engine
        .automation_hold_messages(held.id)
        .unwrap()
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert!(messages.contains(CAMPAIGN_MESSAGE_ID));
    assert!(!messages.contains(MALICIOUS_MESSAGE_ID));
    let from = log_len(&w.server);
    let r = once(&engine, options(Some(intel.clone()))).await;
    assert_eq!(r.released, vec![held.id], "{r:?}");
    assert!(r.held.is_empty(), "{r:?}");
    assert!(
        r.jobs.iter().all(|j| j.trigger == Trigger::PostDelivery),
        "{r:?}"
    );
    let want = expected(&w.scenario, &messages);
    assert_exactly_once(&actions_since(&w.server, from), &want, "released hold");
    let open = engine.automation_holds(false).unwrap();
    assert!(open.is_empty(), "{open:?}");
    let all = engine.automation_holds(true).unwrap();
    assert_eq!(all[0].state, HoldState::Released);
    assert_eq!(all[0].confirmed_by.as_deref(), Some("lab-operator"));
    assert_eq!(audited(&engine, "hold_confirmed").len(), 1);
    assert_eq!(audited(&engine, "hold_released").len(), 1);
    let campaign = engine
        .store()
        .trace_by_message_id(CAMPAIGN_MESSAGE_ID)
        .unwrap();
    assert!(
        campaign
            .iter()
            .all(|t| t.disposition_source.as_deref() == Some("intel:feed.csv")),
        "{campaign:?}"
    );

    // Done: the next cycle neither holds nor retracts anything.
    let from = log_len(&w.server);
    let r = once(&engine, options(Some(intel))).await;
    assert!(r.held.is_empty() && r.jobs.is_empty(), "{r:?}");
    assert!(actions_since(&w.server, from).is_empty());
}

/// `[watch] max_trace_share`: an indicator matching more than that share of the traced messages
/// is held (whatever its copy count), while another indicator in the same cycle still retracts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indicator_matching_too_much_of_the_trace_is_held_while_others_act() {
    let mut w = world(LabOptions::default()).await;
    w.config.watch = WatchConfig {
        max_copies_per_cycle: 1_000_000,
        max_trace_share: 0.05,
        trace_share_min_messages: 5,
    };
    w.set_policy(|p| {
        p.actions
            .insert(Disposition::Malicious, RetractAction::Junk);
        p.post_delivery.enabled = true;
    });
    let intel = w.dir.path().join("intel");
    std::fs::create_dir_all(&intel).unwrap();
    let engine = w.engine();
    once(&engine, options(Some(intel.clone()))).await;
    let (sender, sender_msgs) = busiest(&plain_external_senders(&w.scenario), 0);
    std::fs::write(
        intel.join("feed.csv"),
        format!("domain,contoso.com\nsender,{sender}\n"),
    )
    .unwrap();
    let from = log_len(&w.server);
    let r = once(&engine, options(Some(intel))).await;
    assert_eq!(r.held.len(), 1, "{r:?}");
    let held = &r.held[0];
    assert_eq!(
        (held.indicator.kind.as_str(), held.indicator.value.as_str()),
        ("domain", "contoso.com")
    );
    assert!(held.reason.contains("max_trace_share = 0.05"), "{held:?}");
    let traced = engine.store().trace_messages_since(0).unwrap();
    assert!(held.messages * 20 > traced, "{held:?} of {traced}");
    let want = expected(&w.scenario, &sender_msgs.iter().cloned().collect());
    assert_exactly_once(
        &actions_since(&w.server, from),
        &want,
        "the other indicator",
    );
}

/// Verdicts carry their indicator and expire when it leaves the intel directory: the messages
/// get back the disposition they had (none), copies already retracted stay where they are, the
/// matrix no longer acts on the expired verdicts, and new mail from the removed sender is left
/// alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_indicator_expires_its_verdicts_and_retracted_copies_stay() {
    let w = world(LabOptions::default()).await;
    w.set_policy(|p| {
        p.actions
            .insert(Disposition::Malicious, RetractAction::Junk);
        p.post_delivery.enabled = true;
    });
    let intel = w.dir.path().join("intel");
    std::fs::create_dir_all(&intel).unwrap();
    let engine = w.engine();
    once(&engine, options(Some(intel.clone()))).await;
    let senders = plain_external_senders(&w.scenario);
    let (bad, bad_msgs) = busiest(&senders, 0);
    let (odd, odd_msgs) = busiest(&senders, 1);
    std::fs::write(
        intel.join("feed.csv"),
        format!("sender,{bad},malicious\nsender,{odd},suspicious\n"),
    )
    .unwrap();
    let from = log_len(&w.server);
    let r = once(&engine, options(Some(intel.clone()))).await;
    let retracted = expected(&w.scenario, &bad_msgs.iter().cloned().collect());
    assert_exactly_once(&actions_since(&w.server, from), &retracted, "intel");
    assert!(r.held.is_empty(), "{r:?}");
    let verdicts = engine.store().intel_verdicts_active().unwrap();
    assert!(!verdicts.is_empty());
    let rec = engine.store().trace_by_message_id(&odd_msgs[0]).unwrap();
    assert_eq!(rec[0].disposition, Some(Disposition::Suspicious));

    // The indicators leave: every verdict expires, the dispositions go back to none.
    std::fs::remove_file(intel.join("feed.csv")).unwrap();
    let from = log_len(&w.server);
    let r = once(&engine, options(Some(intel.clone()))).await;
    assert_eq!(r.verdicts_expired, verdicts.len(), "{r:?}");
    assert!(engine.store().intel_verdicts_active().unwrap().is_empty());
    for mid in bad_msgs.iter().chain(&odd_msgs) {
        for rec in engine.store().trace_by_message_id(mid).unwrap() {
            assert_eq!(rec.disposition, None, "{rec:?}");
            assert_eq!(rec.disposition_source, None, "{rec:?}");
        }
    }
    let expired = audited(&engine, "intel_verdict_expired");
    assert_eq!(expired.len(), 2, "{expired:?}");
    // Already retracted copies stay retracted: no action, still in Junk.
    assert!(actions_since(&w.server, from).is_empty());
    assert!(
        folders_of(&w, &retracted)
            .values()
            .all(|f| *f == Folder::Junk)
    );

    // The matrix no longer acts on what the expired verdicts said (it does on the demo's own
    // `suspicious` headers)…
    w.set_policy(|p| {
        p.actions
            .insert(Disposition::Suspicious, RetractAction::Trash);
    });
    // …and new mail from the removed sender is not retracted either.
    let contoso = w
        .scenario
        .tenants
        .iter()
        .find(|t| t.name == CONTOSO)
        .unwrap();
    let mailboxes: Vec<String> = contoso
        .users
        .iter()
        .filter(|u| {
            u.mailbox && u.address.ends_with("@contoso.com") && u.address != DEMO_HOLD_MAILBOX
        })
        .map(|u| u.address.to_ascii_lowercase())
        .take(3)
        .collect();
    let mid = "<after-expiry-0001@guard.example>";
    let resp = reqwest::Client::new()
        .post(format!("{}/_lab/deliver", w.server.base_url()))
        .json(&serde_json::json!({
            "tenant": CONTOSO,
            "message": {
                "message_id": mid, "from": bad, "to": mailboxes,
                "subject": "Another one", "date": chrono::Utc::now().to_rfc3339(),
                "body": "hello",
                "copy": mailboxes.iter().map(|m| serde_json::json!({"mailbox": m})).collect::<Vec<_>>(),
            }
        }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let from = log_len(&w.server);
    let r = once(&engine, options(Some(intel))).await;
    assert!(
        !r.jobs.is_empty() && r.jobs.iter().all(|j| j.trigger == Trigger::Auto),
        "{r:?}"
    );
    let untouched: BTreeSet<&str> = bad_msgs
        .iter()
        .chain(&odd_msgs)
        .map(String::as_str)
        .chain([mid])
        .collect();
    let acted: Vec<CopyKey> = actions_since(&w.server, from)
        .into_keys()
        .filter(|k| untouched.contains(k.2.as_str()))
        .collect();
    assert!(acted.is_empty(), "{acted:?}");
    assert_eq!(engine.store().trace_by_message_id(mid).unwrap().len(), 1);
}

/// Look-back and interval are bounded (90 days, 1 day): `policy set` and `policy import` refuse
/// more with the key named, the policy is unchanged; a policy stored before the bound does not
/// crash `watch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_look_back_or_interval_is_refused_at_policy_set_and_import() {
    let w = world(LabOptions::default()).await;
    let refused = |args: &[&str]| {
        let out = clawback(&w).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let err = refused(&[
        "policy",
        "set",
        "post_delivery",
        "on",
        "--lookback",
        "99999999999d",
    ]);
    assert_eq!(
        err.trim(),
        "clawback: post_delivery.lookback: 99999999999d is out of range: more than 0 and at most 90d (90 days)"
    );
    let err = refused(&[
        "policy",
        "set",
        "phish_submission",
        "on",
        "--interval",
        "2d",
    ]);
    assert!(
        err.contains("phish_submission.interval: 2d is out of range") && err.contains("at most 1d"),
        "{err}"
    );
    let err = refused(&[
        "policy",
        "set",
        "post_delivery",
        "on",
        "--lookback",
        "99999999999999999999999d",
    ]);
    assert!(err.contains("too long a duration"), "{err}");
    let file = w.dir.path().join("policy.toml");
    std::fs::write(
        &file,
        "[post_delivery]\nenabled = true\ninterval = \"15m\"\nlookback = \"91d\"\n",
    )
    .unwrap();
    let err = refused(&["policy", "import", file.to_str().unwrap()]);
    assert!(
        err.starts_with(&format!(
            "clawback: {}:4: post_delivery.lookback: 91d is out of range",
            file.display()
        )),
        "{err}"
    );
    assert!(run_ok(&w, &["policy", "show"]).contains("policy version 0"));
    run_ok(
        &w,
        &["policy", "set", "post_delivery", "on", "--lookback", "90d"],
    );
    // The engine refuses it too (the console saves through it).
    let engine = w.engine();
    let mut p = engine.load_policy().unwrap();
    p.phish_submission.lookback_secs = u64::MAX;
    let e = engine.save_policy(p).unwrap_err().to_string();
    assert!(e.contains("phish_submission.lookback"), "{e}");
    // A policy stored before the bound: read as 90 days, the cycle runs.
    let mut p = engine.load_policy().unwrap();
    p.post_delivery.lookback_secs = 99_999_999_999 * 86_400;
    p.version += 1;
    engine
        .store()
        .policy_insert(p.version, &serde_json::to_string(&p).unwrap(), "old")
        .unwrap();
    let r = once(&engine, options(None)).await;
    assert!(r.errors.is_empty(), "{r:?}");
}

#[path = "../benches/support/watch_scale.rs"]
mod watch_scale;

/// Issue 16, acceptance, correctness of `benches/watch_scale.rs` at the same size (100,000
/// mailboxes; about 15 s in a debug build): with the message trace granted, a malicious
/// message delivered to 50 mailboxes while `watch` runs is retracted from all 50, each once,
/// and nothing else is touched; a cycle with nothing new costs a few requests, not one per
/// mailbox. The benchmark prints detection → first retraction; this asserts no time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_on_a_big_tenant_retracts_exactly_the_lure_and_idle_cycles_cost_no_listing() {
    let r = watch_scale::run(100_000, 50, Duration::from_millis(200)).await;
    assert_eq!(r.targets.len(), 50);
    let want: BTreeMap<(String, String, String), usize> = r
        .targets
        .iter()
        .map(|m| {
            (
                (
                    m.clone(),
                    watch_scale::LURE.to_string(),
                    "move:junkemail".to_string(),
                ),
                1,
            )
        })
        .collect();
    assert_eq!(
        r.actions, want,
        "exactly the 50 copies, once each, and nothing else"
    );
    assert!(r.all_retracted < Duration::MAX, "{r:?}");
    // Per mailbox would be ≥ 100,000; the log and the directory page are a handful.
    assert!(r.idle_cycle_requests <= 10, "{r:?}");
    // The cycle that found the lure: its 50 copies, not the tenant's mailboxes.
    assert!(
        r.detecting_cycle_requests * 10 <= 100_000,
        "{}",
        r.detecting_cycle_requests
    );
    eprintln!(
        "MEASURED (100,000 mailboxes, debug) delivery -> first retraction {:.3}s, idle cycle {} requests, detecting cycle {} requests",
        r.first_retraction.as_secs_f64(),
        r.idle_cycle_requests,
        r.detecting_cycle_requests
    );
}

/// Issue 14: an auto-retract whose copies the trace names (within the guard's copy cap) acts
/// while it plans, like `retract --yes`: every copy exactly once, and the same accounting as
/// planning first — the same `auto_retract` audit (plan digest, copies, skipped, already
/// retracted) and the same plan lines. A watcher whose `max_copies_per_cycle` is below the
/// message's copies plans first. Either way the decision is audited right after its plan
/// (`plan_applied`, then `auto_retract`) and before its job ends; acting while planning writes
/// both with the sealed plan, in one transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_retract_acts_while_planning_with_the_accounting_of_planning_first() {
    const OUTSIDE: &str = "someone@outside-partner.example";
    let mid = "<overlap-0001@evil-journal.example>";
    // (max_copies_per_cycle, acts while planning)
    let mut seen = Vec::new();
    for (cap, overlapped) in [(500u64, true), (1, false)] {
        let w = world(LabOptions::default()).await;
        w.set_policy(|p| {
            p.actions
                .insert(Disposition::Malicious, RetractAction::Junk);
        });
        let mut config = w.config.clone();
        config.watch = WatchConfig {
            max_copies_per_cycle: cap,
            ..config.watch.clone()
        };
        let engine = Engine::new(config, Store::open_in_dir(&w.data).unwrap()).unwrap();
        let journal = w.dir.path().join("journal");
        std::fs::create_dir_all(&journal).unwrap();
        let mailboxes = journal_lure(&w, &journal, mid, 6, &format!(", {OUTSIDE}")).await;
        let from = log_len(&w.server);
        let r = once(
            &engine,
            WatchOptions {
                sync: false,
                journal_dir: Some(journal),
                ..options(None)
            },
        )
        .await;
        let want: BTreeSet<CopyKey> = mailboxes
            .iter()
            .map(|m| (CONTOSO.to_string(), m.clone(), mid.to_string()))
            .collect();
        assert_exactly_once(&actions_since(&w.server, from), &want, "auto-retract");
        let job = r
            .jobs
            .iter()
            .find(|j| j.message_id == mid)
            .unwrap_or_else(|| panic!("no job for the lure: {r:?}"));
        assert_eq!(job.copies, mailboxes.len(), "{r:?}");
        assert_eq!(job.succeeded, mailboxes.len() as u64, "{r:?}");

        // The decision's audit entry, and where it stands against its job's end.
        let entries = engine.store().audit_entries().unwrap().unwrap();
        let job_id = job.job.to_string();
        let position = |section: &str, action: &str| {
            let at: Vec<usize> = entries
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    e.record.section == section
                        && e.record.action == action
                        && e.record.job_id.as_deref() == Some(&job_id)
                })
                .map(|(i, _)| i)
                .collect();
            assert_eq!(at.len(), 1, "{section}/{action} for job {job_id}: {at:?}");
            at[0]
        };
        let decided = position("automation", "auto_retract");
        let ended = position("job", "job_finished");
        let applied = position("retract", "plan_applied");
        assert_eq!(
            (applied + 1, decided < ended),
            (decided, true),
            "cap {cap} (acts while planning: {overlapped}): audit order"
        );
        let decision = &entries[decided].record;
        let digest = decision.plan_digest.clone().unwrap();
        assert!(digest.starts_with("sha256:"), "{digest}");

        // The plan the job holds, as lines.
        let row = engine.store().job(job.job).unwrap().unwrap();
        let plan_id = row.plan_id.unwrap();
        assert_eq!(
            engine.store().plan_digest(&plan_id).unwrap().as_deref(),
            Some(digest.as_str())
        );
        let plan: serde_json::Value =
            serde_json::from_str(&engine.store().plan_json(&plan_id).unwrap().unwrap()).unwrap();
        let lines = |key: &str, fields: &[&str]| -> BTreeSet<String> {
            plan[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    fields
                        .iter()
                        .map(|f| v[*f].to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect()
        };
        let items = lines("items", &["tenant", "mailbox", "folder", "action"]);
        let skipped = lines("skipped", &["address", "reason"]);
        assert_eq!(items.len(), mailboxes.len(), "{items:?}");
        assert!(
            skipped.iter().any(|s| s.contains(OUTSIDE)),
            "the outside recipient is accounted for: {skipped:?}"
        );
        seen.push((
            decision.counts.clone(),
            decision.detail.clone(),
            items,
            skipped,
        ));
    }
    assert_eq!(seen[0], seen[1], "acting while planning vs planning first");
}

/// A journal lure: delivered by the lab to `count` Contoso mailboxes (not the hold mailbox) and
/// written as `lure.eml` into `journal` with a malicious disposition; `more_to` is appended to
/// its To header as it is. Returns the mailboxes.
async fn journal_lure(
    w: &World,
    journal: &std::path::Path,
    mid: &str,
    count: usize,
    more_to: &str,
) -> Vec<String> {
    let contoso = w
        .scenario
        .tenants
        .iter()
        .find(|t| t.name == CONTOSO)
        .unwrap();
    let mailboxes: Vec<String> = contoso
        .users
        .iter()
        .filter(|u| {
            u.mailbox && u.address.ends_with("@contoso.com") && u.address != DEMO_HOLD_MAILBOX
        })
        .map(|u| u.address.to_ascii_lowercase())
        .take(count)
        .collect();
    let now = chrono::Utc::now();
    let body = serde_json::json!({
        "tenant": CONTOSO,
        "message": {
            "message_id": mid, "from": "billing@evil-journal.example", "to": mailboxes,
            "subject": "Overdue invoice", "date": now.to_rfc3339(), "body": "pay now",
            "copy": mailboxes.iter().map(|m| serde_json::json!({"mailbox": m})).collect::<Vec<_>>(),
        }
    });
    let resp = reqwest::Client::new()
        .post(format!("{}/_lab/deliver", w.server.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let eml = format!(
        "From: billing@evil-journal.example\r\nTo: {}{more_to}\r\nSubject: Overdue invoice\r\n\
         Message-ID: {mid}\r\nDate: {}\r\nX-Clawback-Disposition: malicious\r\n\r\npay now\r\n",
        mailboxes.join(", "),
        now.to_rfc2822()
    );
    std::fs::write(journal.join("lure.eml"), eml).unwrap();
    mailboxes
}
