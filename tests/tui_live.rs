//! Issue 12, "panes go stale" and "Metrics details": the headless console on the real engine
//! task and the lab's demo. After a job this console ran, and after a job another process ran
//! on the same store (`clawback retract --yes` in a second terminal), the Metrics, Audit, Jobs
//! and Search panes show what `clawback metrics --json` and `clawback audit list` say — without
//! a key press. Metrics details list the retracted messages by retraction time.

#![allow(clippy::unwrap_used)]

mod lab_support;
mod tui_support;

use clawback::engine::view::{JobPhase, MetricsSnapshot, RetractionState};
use clawback::engine::{Engine, service};
use clawback::lab::LabOptions;
use clawback::lab::demo::{self, CAMPAIGN_MESSAGE_ID, CONTOSO, FABRIKAM};
use clawback::tui::app::{App, Loadable};
use lab_support::synced_lab;
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use tui_support::console::Console;

/// `clawback --config DIR/lab.toml --data-dir DIR/data ARGS…`, another process on the store.
async fn clawback(dir: &Path, args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawback"))
        .arg("--config")
        .arg(dir.join("lab.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args)
        .env_remove("CLAWBACK_DATA_DIR")
        .env_remove("CLAWBACK_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c == 0 || c == 3),
        "clawback {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The Metrics pane's figures: total, succeeded, failed by reason, unread, read, auto, manual.
type Figures = (u64, u64, Vec<(String, u64)>, u64, u64, u64, u64);

/// What `clawback metrics --json --since 24h` says, in the Metrics pane's terms (its window).
async fn cli_metrics(dir: &Path) -> Figures {
    let out = clawback(dir, &["metrics", "--json", "--since", "24h"]).await;
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let count = |v: &Value| v["count"].as_u64().unwrap();
    let reasons = m["failed_by_reason"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(r, s)| (r.clone(), count(s)))
        .collect();
    (
        m["total"].as_u64().unwrap(),
        count(&m["succeeded"]),
        reasons,
        count(&m["unread"]),
        count(&m["read"]),
        count(&m["auto"]),
        count(&m["manual"]),
    )
}

fn pane_metrics(s: &MetricsSnapshot) -> Figures {
    (
        s.total,
        s.succeeded,
        s.failed_by_reason
            .iter()
            .map(|(r, n)| (r.as_str().to_string(), *n))
            .collect(),
        s.unread,
        s.read,
        s.auto,
        s.manual,
    )
}

/// The entry numbers `clawback audit list` prints (oldest first).
async fn cli_audit_seqs(dir: &Path) -> Vec<u64> {
    let out = clawback(dir, &["audit", "list"]).await;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The Audit pane's entries (oldest first) and its chain line, when verified.
fn pane_audit(app: &App) -> Option<(Vec<u64>, u64)> {
    let entries = app.audit.entries.ready()?;
    let verified = app.audit.verification.ready()?;
    let mut seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    seqs.reverse();
    Some((seqs, verified.entries))
}

/// Waits until the Metrics and Audit panes equal what the CLI says now (the store is settled:
/// no job runs).
async fn panes_match_the_cli(console: &mut Console, dir: &Path, after: &str) {
    let metrics = cli_metrics(dir).await;
    let audit = cli_audit_seqs(dir).await;
    assert!(metrics.0 > 0 && !audit.is_empty(), "{after}: {metrics:?}");
    let n = audit.len() as u64;
    console
        .until(
            &format!("Metrics = `metrics --json` {metrics:?} {after}"),
            |a| {
                a.metrics
                    .snapshot
                    .ready()
                    .is_some_and(|s| pane_metrics(s) == metrics)
            },
        )
        .await;
    console
        .until(
            &format!("Audit = `audit list` ({n} entries) {after}"),
            |a| pane_audit(a) == Some((audit.clone(), n)),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panes_follow_this_consoles_jobs_and_another_processs_without_a_refresh() {
    let scenario = demo::build(7);
    let lab = synced_lab(&scenario, LabOptions::default(), &[], 30).await;
    let dir = lab.dir.path().to_path_buf();
    let engine = std::sync::Arc::new(Engine::new(lab.config.clone(), lab.store).unwrap());
    let mut console = Console::open(&lab.config, service::spawn(engine)).await;

    // Every pane loaded once, by hand, before any job: nothing retracted, the chain verified.
    console.keys(&["4"]);
    console
        .until("metrics", |a| a.metrics.snapshot.ready().is_some())
        .await;
    assert_eq!(console.app.metrics.snapshot.ready().unwrap().total, 0);
    console.keys(&["6", "v"]);
    console
        .until("the audit pane", |a| pane_audit(a).is_some())
        .await;
    let audit_before = pane_audit(&console.app).unwrap().1;
    console.keys(&["5"]);
    console
        .until("the jobs", |a| {
            a.jobs.list.ready().is_some_and(Vec::is_empty)
        })
        .await;

    // Job 1, from this console: the campaign to Junk in contoso. The checklist covers both
    // tenants that hold it: the fabrikam rows are unticked (filter, select none).
    console.keys(&["1", "/"]);
    console.type_text(&format!("msgid:{CAMPAIGN_MESSAGE_ID} tenant:contoso"));
    console.keys(&["enter"]);
    console
        .until("the campaign row", |a| {
            a.search
                .results
                .ready()
                .is_some_and(|r| r.rows.len() == 1 && r.rows[0].retraction == RetractionState::None)
        })
        .await;
    console.open_selected_message().await;
    console.keys(&["/"]);
    console.type_text("@fabrikam.com");
    console.keys(&["enter", "n"]);
    console.keys(&["p"]);
    console
        .until("the plan", |a| {
            a.plan.as_ref().is_some_and(|p| p.summary.ready().is_some())
        })
        .await;
    console.keys(&["enter"]);
    console
        .until("job 1 to finish", |a| {
            a.jobs.list.ready().is_some_and(|jobs| {
                jobs.iter()
                    .any(|j| j.id.0 == "1" && j.state == JobPhase::Finished)
            })
        })
        .await;
    // No key pressed since: the panes loaded before the job show it.
    panes_match_the_cli(&mut console, &dir, "after this console's job").await;
    assert!(pane_audit(&console.app).unwrap().1 > audit_before);
    console
        .until("the search row's retraction state", |a| {
            a.search
                .results
                .ready()
                .is_some_and(|r| r.rows[0].retraction != RetractionState::None)
        })
        .await;

    // Job 2, run by another process on the same store: the fabrikam copies job 1 left out. It
    // shows in the Jobs pane, and Metrics / Audit follow, with no key press here.
    clawback(
        &dir,
        &[
            "retract",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--tenant",
            FABRIKAM,
            "--yes",
            "--reason",
            "second terminal",
        ],
    )
    .await;
    console
        .until("job 2 (another process) in the Jobs pane", |a| {
            a.jobs.list.ready().is_some_and(|jobs| {
                jobs.iter()
                    .any(|j| j.id.0 == "2" && j.state == JobPhase::Finished && j.succeeded > 0)
            })
        })
        .await;
    panes_match_the_cli(&mut console, &dir, "after another process's job").await;

    // Metrics details: the campaign, retracted in the window by retraction time (it arrived
    // days ago), with every copy the cards count, all manual, in both tenants.
    console.keys(&["4", "d"]);
    console
        .until("the details", |a| {
            matches!(a.metrics.details, Some(Loadable::Ready(_)))
        })
        .await;
    let Some(Loadable::Ready(details)) = console.app.metrics.details.clone() else {
        unreachable!()
    };
    let snapshot = console.app.metrics.snapshot.ready().unwrap().clone();
    assert_eq!(details.len(), 1, "{details:?}");
    let d = &details[0];
    assert_eq!(d.message_id, CAMPAIGN_MESSAGE_ID);
    assert_eq!(d.tenants, vec![CONTOSO.to_string(), FABRIKAM.to_string()]);
    assert_eq!(
        (d.succeeded, d.failed, d.auto, d.manual),
        (snapshot.succeeded, snapshot.failed(), 0, snapshot.total)
    );
    assert!(!d.subject.is_empty());
    // The same list as `clawback metrics --details` (one engine function).
    let out = clawback(&dir, &["metrics", "--json", "--since", "24h", "--details"]).await;
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["details"], serde_json::to_value(&details).unwrap());
    // Enter searches the message.
    console.keys(&["enter"]);
    assert_eq!(
        console.app.search.query,
        format!("msgid:{CAMPAIGN_MESSAGE_ID}")
    );
}

/// Issue 12, "the demo is whole": the demo's own set-up (`start_demo_lab`, `demo_engine`, as
/// `clawback demo` runs them) with the headless console. The policy starts all off; the
/// operator sets `malicious -> junk` in the Policy pane and saves; a malicious message then
/// delivered through `/_lab/deliver` is moved to Junk at the lab by the in-process watcher,
/// within seconds, and shows in the Jobs pane as an auto job without a key press. Then Post
/// Delivery Response (the demo's intel) and Phish Submission Response (the demo's report
/// mailboxes) act too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_demo_the_policy_pane_acts_on_a_delivered_lure_intel_and_phish_reports() {
    use clawback::cli::console::{demo_engine, start_demo_lab};
    use clawback::lab::demo::{
        BENIGN_REPORTS, CAMPAIGN_REPORTS, DEMO_CONTOSO_REPORT_MAILBOX,
        DEMO_FABRIKAM_REPORT_MAILBOX, DEMO_HOLD_MAILBOX, DEMO_SEED, MALICIOUS_RECIPIENTS,
    };
    use clawback::model::{Disposition, RetractAction, Trigger};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let (server, config) = start_demo_lab(dir.path(), DEMO_SEED, Duration::ZERO)
        .await
        .unwrap();
    // The written config names the phish-report mailboxes and says how to serve its lab again.
    let text = std::fs::read_to_string(dir.path().join("lab.toml")).unwrap();
    assert!(
        text.contains(&format!(
            "#   clawback lab serve --scenario demo --seed {DEMO_SEED} --addr {}\n",
            server.addr
        )),
        "{text}"
    );
    assert_eq!(
        config.automation.intel_dir.as_deref(),
        Some(dir.path().join("intel").as_path())
    );
    let reports: Vec<(String, Vec<String>)> = config
        .tenants
        .iter()
        .map(|t| (t.name.clone(), t.report_mailboxes.clone()))
        .collect();
    assert_eq!(
        reports,
        vec![
            (CONTOSO.into(), vec![DEMO_CONTOSO_REPORT_MAILBOX.into()]),
            (FABRIKAM.into(), vec![DEMO_FABRIKAM_REPORT_MAILBOX.into()]),
        ]
    );

    let store = clawback::store::Store::open_in_dir(dir.path()).unwrap();
    let engine = service::spawn_after(demo_engine(config.clone(), store));
    let mut console = Console::open(&config, engine).await;

    // Safe by default: nothing on. Then malicious (first row) -> Junk (second column), saved.
    console.keys(&["3"]);
    console
        .until("the policy", |a| a.policy.loaded.ready().is_some())
        .await;
    let initial = console.app.policy.loaded.ready().unwrap().clone();
    assert!(
        initial
            .actions
            .values()
            .all(|a| *a == RetractAction::NoAction)
            && !initial.post_delivery.enabled
            && !initial.phish_submission.enabled,
        "{initial:?}"
    );
    console.keys(&["l", "space", "w"]);
    console
        .until("the saved policy", |a| {
            a.policy.loaded.ready().is_some_and(|p| {
                p.version > initial.version
                    && p.actions.get(&Disposition::Malicious) == Some(&RetractAction::Junk)
            })
        })
        .await;
    console.keys(&["5"]);
    console
        .until("the jobs", |a| a.jobs.list.ready().is_some())
        .await;

    // A malicious lure to a few contoso mailboxes (not as many as the scenario's own lure).
    let n = if MALICIOUS_RECIPIENTS == 5 { 6 } else { 5 };
    let mailboxes: Vec<String> = scenario_mailboxes(CONTOSO)
        .into_iter()
        .filter(|m| m != DEMO_HOLD_MAILBOX && m != DEMO_CONTOSO_REPORT_MAILBOX)
        .take(n)
        .collect();
    let mid = "<demo-lure-0001@evil-payroll.example>";
    let http = reqwest::Client::new();
    lab_support::lab_deliver_malicious(&http, &server.base_url(), CONTOSO, mid, &mailboxes).await;
    let delivered = Instant::now();

    // At the lab: every copy moved to Junk. Polled with a generous bound (a loaded machine);
    // the latency is printed, not asserted.
    let enc = percent_encoding::utf8_percent_encode(mid, percent_encoding::NON_ALPHANUMERIC);
    let path = format!("/_lab/messages?message_id={enc}");
    loop {
        let copies = lab_support::lab_get(&http, &server.base_url(), &path).await["copies"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(copies.len(), n);
        if copies.iter().all(|c| c["folder"] == "junk") {
            break;
        }
        assert!(
            delivered.elapsed() < Duration::from_secs(60),
            "not retracted: {copies:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let latency = delivered.elapsed();
    eprintln!("demo: delivered -> all {n} copies in Junk in {latency:?}");
    let moves = server
        .lab
        .state()
        .actions
        .iter()
        .filter(|a| a.internet_message_id == mid)
        .count();
    assert_eq!(moves, n, "each copy moved once");

    // The Jobs pane shows it as an auto job, with no key pressed since.
    console
        .until("the auto job in the Jobs pane", |a| {
            a.jobs.list.ready().is_some_and(|jobs| {
                jobs.iter().any(|j| {
                    j.trigger == Trigger::Auto
                        && j.action == RetractAction::Junk
                        && j.total == n as u64
                        && j.succeeded == n as u64
                        && j.state == JobPhase::Finished
                })
            })
        })
        .await;

    // Post Delivery Response on (p), saved: the demo's intel (the campaign's phishing URL, in
    // the intel directory its config names) makes the campaign malicious, and it is retracted
    // per the matrix as a post_delivery job, shown live.
    console.keys(&["3", "p", "w"]);
    console
        .until("post delivery saved", |a| {
            a.policy
                .loaded
                .ready()
                .is_some_and(|p| p.post_delivery.enabled)
        })
        .await;
    console.keys(&["5"]);
    console
        .until("the post delivery job in the Jobs pane", |a| {
            a.jobs.list.ready().is_some_and(|jobs| {
                jobs.iter().any(|j| {
                    j.trigger == Trigger::PostDelivery
                        && j.succeeded > 0
                        && j.state == JobPhase::Finished
                })
            })
        })
        .await;

    // Phish Submission Response on (s), saved: the watcher reads the demo's report mailboxes
    // (named in the written config) and decides every report (the campaign, reported by
    // distinct users, malicious; it is already retracted).
    console.keys(&["3", "s", "w"]);
    console
        .until("phish submission saved", |a| {
            a.policy
                .loaded
                .ready()
                .is_some_and(|p| p.phish_submission.enabled)
        })
        .await;
    let store = clawback::store::Store::open_in_dir(dir.path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let decisions = loop {
        let d = store.report_decisions().unwrap();
        if d.len() >= CAMPAIGN_REPORTS + BENIGN_REPORTS {
            break d;
        }
        assert!(Instant::now() < deadline, "reports decided: {d:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(decisions.len(), CAMPAIGN_REPORTS + BENIGN_REPORTS);
    assert_eq!(
        decisions
            .iter()
            .filter(|d| d.verdict == "malicious")
            .count(),
        CAMPAIGN_REPORTS,
        "{decisions:?}"
    );
    server.stop().await;
}

/// Mailboxes of a demo tenant (lowercase), from the scenario.
fn scenario_mailboxes(tenant: &str) -> Vec<String> {
    demo::build(clawback::lab::demo::DEMO_SEED)
        .tenants
        .iter()
        .find(|t| t.name == tenant)
        .unwrap()
        .users
        .iter()
        .filter(|u| u.mailbox && u.address.ends_with("@contoso.com"))
        .map(|u| u.address.to_ascii_lowercase())
        .collect()
}
