//! Several clawback processes on one data directory (issue 10, DESIGN §5 "Several processes,
//! one store"): the real binary, twice at once, against the demo lab with latency so the runs
//! overlap. Side effects are read from the lab's own action records (`/_lab/actions`) and
//! folders (`/_lab/messages`); expectations come from the scenario, not from our plans.
//!
//! - two `retract` of the same message at once: every copy receives exactly one API action;
//!   two `restore` of the resulting job at once put every copy back exactly once;
//! - two `jobs resume` of one SIGKILLed job at once: one runs it, the other is refused (or
//!   finds it finished); every copy acted on once; restore puts everything back;
//! - `jobs cancel` from another process stops the running job before its next batch;
//! - a spent plan, a second restore and a Hard Delete restore are refused; a restore leaves a
//!   copy the user moved since alone and touches only its own tenant's trace records;
//! - planning under throttling keeps what it could not reach, and `jobs retry --reason
//!   throttled` finishes the job.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod lab_support;
use lab_support::{CopyKey, expected_copies, synced_lab};

use clawback::lab::demo::CAMPAIGN_MESSAGE_ID;
use clawback::lab::{LabOptions, LabServer};
use clawback::store::Store;
use clawback::store::jobs::ItemState;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// Rounds of each two-process race.
const ROUNDS: usize = 5;

struct World {
    server: LabServer,
    dir: tempfile::TempDir,
    http: reqwest::Client,
    /// The campaign's copies a retraction must act on, from the scenario alone.
    expected: BTreeSet<CopyKey>,
}

/// (tenant, mailbox) → what the lab recorded for the campaign there.
type Acted = BTreeMap<(String, String), (u64, Vec<String>)>;

async fn world(options: LabOptions) -> World {
    let scenario = clawback::lab::scenario::demo(7);
    let lab = synced_lab(&scenario, options, &[], 3650).await;
    drop(lab.store);
    let expected = expected_copies(
        &scenario,
        &BTreeSet::from([CAMPAIGN_MESSAGE_ID.to_string()]),
    );
    assert!(expected.len() > 100, "{}", expected.len());
    World {
        server: lab.server,
        dir: lab.dir,
        http: reqwest::Client::new(),
        expected,
    }
}

impl World {
    fn config(&self) -> PathBuf {
        self.dir.path().join("lab.toml")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A copy of the lab config with other client limits (`max_in_flight`, `max_attempts`).
    fn config_limited(&self, name: &str, in_flight: usize, attempts: u32) -> PathBuf {
        let text = std::fs::read_to_string(self.config()).unwrap();
        // The lab writes `max_in_flight` to fit its capacity (256 at most).
        assert!(text.contains("max_in_flight = "), "{text}");
        assert!(text.contains("max_attempts = 8"), "{text}");
        let path = self.dir.path().join(name);
        let limited: Vec<String> = text
            .lines()
            .map(|line| {
                if line.starts_with("max_in_flight = ") {
                    format!("max_in_flight = {in_flight}")
                } else if line == "max_attempts = 8" {
                    format!("max_attempts = {attempts}")
                } else {
                    line.to_string()
                }
            })
            .collect();
        std::fs::write(&path, limited.join("\n")).unwrap();
        path
    }

    fn command(&self, config: &Path, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawback"));
        c.arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .env_remove("CLAWBACK_DATA_DIR")
            .env_remove("CLAWBACK_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with(&self.config(), args).await
    }

    async fn run_with(&self, config: &Path, args: &[&str]) -> Output {
        self.command(config, args).output().await.unwrap()
    }

    /// Two processes started together; both outputs.
    async fn twice(&self, config: &Path, args: &[&str]) -> (Output, Output) {
        let a = self.command(config, args).spawn().unwrap();
        let b = self.command(config, args).spawn().unwrap();
        let (a, b) = tokio::join!(a.wait_with_output(), b.wait_with_output());
        (a.unwrap(), b.unwrap())
    }

    async fn lab(&self, path: &str) -> Value {
        lab_support::lab_get(&self.http, &self.server.base_url(), path).await
    }

    /// API actions (not user actions) the lab recorded on the campaign, per mailbox.
    async fn acted(&self) -> Acted {
        let v = self
            .lab(&format!(
                "/_lab/actions?message_id={}",
                enc(CAMPAIGN_MESSAGE_ID)
            ))
            .await;
        v["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let names = c["actions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect();
                (
                    (
                        c["tenant"].as_str().unwrap().to_string(),
                        c["mailbox"].as_str().unwrap().to_string(),
                    ),
                    (c["count"].as_u64().unwrap(), names),
                )
            })
            .collect()
    }

    async fn actions_total(&self) -> u64 {
        self.lab("/_lab/stats").await["actions_total"]
            .as_u64()
            .unwrap()
    }

    /// Every copy of the campaign at the lab: (tenant, mailbox) → folder.
    async fn folders(&self) -> BTreeMap<(String, String), String> {
        let v = self
            .lab(&format!(
                "/_lab/messages?message_id={}",
                enc(CAMPAIGN_MESSAGE_ID)
            ))
            .await;
        v["copies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    (
                        c["tenant"].as_str().unwrap().to_string(),
                        c["mailbox"].as_str().unwrap().to_string(),
                    ),
                    c["folder"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    async fn user_action(&self, tenant: &str, mailbox: &str, folder: &str) {
        let base = self.server.base_url();
        lab_support::lab_user_action(
            &self.http,
            &base,
            tenant,
            mailbox,
            CAMPAIGN_MESSAGE_ID,
            folder,
        )
        .await;
    }

    /// API actions per expected copy since `before`; asserts nothing else was acted on.
    async fn delta(&self, before: &Acted) -> BTreeMap<(String, String), u64> {
        let now = self.acted().await;
        let mut out = BTreeMap::new();
        for (key, (n, names)) in &now {
            let was = before.get(key).map(|b| b.0).unwrap_or(0);
            if *n > was {
                assert!(
                    self.expected.contains(&(
                        key.0.clone(),
                        key.1.clone(),
                        CAMPAIGN_MESSAGE_ID.to_string()
                    )),
                    "{key:?} is no copy to act on, yet the API acted on it: {names:?}"
                );
                out.insert(key.clone(), n - was);
            }
        }
        out
    }

    /// Asserts every expected copy received exactly `n` API actions since `before`.
    async fn each_acted_on(&self, before: &Acted, n: u64, what: &str) {
        let delta = self.delta(before).await;
        let wrong: Vec<_> = self
            .expected
            .iter()
            .map(|(t, m, _)| {
                let key = (t.clone(), m.clone());
                let got = delta.get(&key).copied().unwrap_or(0);
                (key, got)
            })
            .filter(|(_, got)| *got != n)
            .collect();
        assert!(
            wrong.is_empty(),
            "{what}: {} copies did not receive exactly {n} API action(s): {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        );
    }

    fn store(&self) -> Store {
        Store::open_in_dir(&self.data()).unwrap()
    }

    /// Every item of every job is settled (nothing pending or in flight).
    fn all_settled(&self, what: &str) {
        let store = self.store();
        for job in store.jobs(1_000).unwrap() {
            let c = store.item_counts(job.id).unwrap();
            assert_eq!(c.remaining(), 0, "{what}: job {} {c:?}", job.id);
        }
    }

    /// The newest retract jobs that moved copies (succeeded > 0), oldest first.
    fn jobs_that_moved(&self, since_job: i64) -> Vec<i64> {
        let store = self.store();
        let mut out: Vec<i64> = store
            .jobs(1_000)
            .unwrap()
            .into_iter()
            .filter(|j| j.id > since_job && j.kind.as_str() == "retract")
            .filter(|j| store.item_counts(j.id).unwrap().succeeded > 0)
            .map(|j| j.id)
            .collect();
        out.sort();
        out
    }

    fn newest_job(&self) -> i64 {
        self.store()
            .jobs(1)
            .unwrap()
            .first()
            .map(|j| j.id)
            .unwrap_or(0)
    }

    /// A plan file for the campaign (`extra` arguments), made with the default config.
    async fn plan(&self, name: &str, action: &str, extra: &[&str]) -> PathBuf {
        let path = self.dir.path().join(name);
        let mut args = vec![
            "plan",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--action",
            action,
            "--out",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = self.run(&args).await;
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
        path
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn both(a: &Output, b: &Output) -> String {
    format!(
        "--- first (exit {}):\n{}{}\n--- second (exit {}):\n{}{}",
        code(a),
        stdout(a),
        stderr(a),
        code(b),
        stdout(b),
        stderr(b)
    )
}

fn latency(ms: u64) -> LabOptions {
    LabOptions {
        latency: Duration::from_millis(ms),
        ..LabOptions::default()
    }
}

/// Waits until the lab recorded at least `target` API actions (bounded).
async fn wait_for_actions(w: &World, target: u64) {
    let started = Instant::now();
    while w.actions_total().await < target {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the lab never saw {target} actions"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_retracts_at_once_act_on_each_copy_once_and_two_restores_undo_it_once() {
    let w = world(latency(40)).await;
    let original = w.folders().await;
    for round in 0..ROUNDS {
        let action = if round % 2 == 0 { "junk" } else { "trash" };
        let last_job = w.newest_job();
        let before = w.acted().await;
        let (a, b) = w
            .twice(
                &w.config(),
                &[
                    "retract",
                    "--message-id",
                    CAMPAIGN_MESSAGE_ID,
                    "--action",
                    action,
                    "--yes",
                ],
            )
            .await;
        let out = both(&a, &b);
        // Each process either acts, or finds every copy held by the other's job (a job of
        // skipped items, exit 0, or nothing to act on, exit 3): never "database is locked".
        for o in [&a, &b] {
            assert!([0, 3].contains(&code(o)), "round {round}: {out}");
        }
        assert!(!out.contains("locked"), "round {round}: {out}");
        w.each_acted_on(&before, 1, &format!("round {round} ({action})"))
            .await;
        w.all_settled(&format!("round {round}"));
        let moved = w.jobs_that_moved(last_job);
        assert!(!moved.is_empty(), "round {round}: no job moved anything");
        let store = w.store();
        // Every expected copy is claimed by exactly one succeeded item across the two jobs.
        let mut succeeded: BTreeMap<(String, String), u64> = BTreeMap::new();
        for job in &moved {
            for it in store.job_items(*job, Some(ItemState::Succeeded)).unwrap() {
                *succeeded.entry((it.tenant, it.mailbox)).or_default() += 1;
            }
        }
        drop(store);
        assert_eq!(succeeded.len(), w.expected.len(), "round {round}");
        assert!(succeeded.values().all(|n| *n == 1), "round {round}");

        // Undo, twice at once for each job: each copy is put back exactly once.
        let before = w.acted().await;
        for job in &moved {
            let job = job.to_string();
            let (a, b) = w.twice(&w.config(), &["restore", &job]).await;
            let out = both(&a, &b);
            let codes = BTreeSet::from([code(&a), code(&b)]);
            // One restores (0); the other finds nothing left to restore (2) or every item
            // held by the first restore (0, skipped): never both acting.
            assert!(codes.contains(&0), "round {round} restore {job}: {out}");
            assert!(
                codes.iter().all(|c| [0, 2].contains(c)),
                "round {round} restore {job}: {out}"
            );
        }
        w.each_acted_on(&before, 1, &format!("round {round} restore"))
            .await;
        w.all_settled(&format!("round {round} restore"));
        assert_eq!(w.folders().await, original, "round {round}: restore");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_resumes_of_a_killed_job_act_on_each_copy_once() {
    let w = world(latency(40)).await;
    let original = w.folders().await;
    // A slow client, so the job is still running when it is killed.
    let slow = w.config_limited("slow.toml", 2, 8);
    for round in 0..ROUNDS {
        let action = if round % 2 == 0 { "junk" } else { "trash" };
        let plan = w.plan(&format!("plan-{round}.json"), action, &[]).await;
        let before = w.acted().await;
        let start = w.actions_total().await;
        let mut apply = w
            .command(&slow, &["apply", plan.to_str().unwrap(), "--yes"])
            .spawn()
            .unwrap();
        wait_for_actions(&w, start + 10 + 7 * round as u64).await;
        apply.kill().await.unwrap(); // SIGKILL
        let _ = apply.wait().await;
        let job = w.newest_job();
        let counts = w.store().item_counts(job).unwrap();
        assert!(
            counts.remaining() > 0,
            "round {round}: the job finished before it was killed"
        );
        let id = job.to_string();
        let (a, b) = w.twice(&w.config(), &["jobs", "resume", &id]).await;
        let out = both(&a, &b);
        let codes = BTreeSet::from([code(&a), code(&b)]);
        assert!(codes.contains(&0), "round {round}: {out}");
        // The other one was refused while the first ran it (1, naming the holder), or came
        // after it had finished (2).
        assert!(
            codes.iter().all(|c| [0, 1, 2].contains(c)),
            "round {round}: {out}"
        );
        if codes.contains(&1) {
            assert!(out.contains("is being run by pid"), "round {round}: {out}");
        }
        w.each_acted_on(&before, 1, &format!("round {round} resume"))
            .await;
        w.all_settled(&format!("round {round}"));
        let store = w.store();
        let items = store.job_items(job, None).unwrap();
        drop(store);
        let ok: BTreeSet<(String, String)> = items
            .iter()
            .filter(|it| it.state == ItemState::Succeeded)
            .map(|it| (it.tenant.clone(), it.mailbox.clone()))
            .collect();
        assert_eq!(ok.len(), w.expected.len(), "round {round}: {items:?}");

        let before = w.acted().await;
        let o = w.run(&["restore", &id]).await;
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
        w.each_acted_on(&before, 1, &format!("round {round} restore"))
            .await;
        assert_eq!(w.folders().await, original, "round {round}: restore");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_another_process_stops_the_job_before_its_next_batch() {
    let w = world(latency(40)).await;
    // Two requests in flight per tenant: batches of 2, a window of 4 batches.
    let slow = w.config_limited("slow.toml", 2, 8);
    let plan = w.plan("plan.json", "junk", &[]).await;
    let before = w.acted().await;
    let start = w.actions_total().await;
    let apply = w
        .command(&slow, &["apply", plan.to_str().unwrap(), "--yes"])
        .spawn()
        .unwrap();
    wait_for_actions(&w, start + 10).await;
    let job = w.newest_job().to_string();
    // A second terminal sees which process runs it.
    let pid = apply.id().unwrap();
    let o = w.run(&["jobs", "list"]).await;
    let line = stdout(&o)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(job.as_str()))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        line.contains("running") && line.contains(&format!("pid {pid} on ")),
        "{}",
        stdout(&o)
    );
    let o = w.run(&["jobs", "cancel", &job]).await;
    let at_cancel = w.actions_total().await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("stops it before its next batch"),
        "{}",
        stdout(&o)
    );
    let out = apply.wait_with_output().await.unwrap();
    let after = w.actions_total().await;
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("cancelled by the operator"),
        "{}",
        stdout(&out)
    );
    // What was already sent or past its last check may land: at most the window of batches
    // per tenant (4 batches of 2, two tenants), never the rest of the job.
    let late = after - at_cancel;
    assert!(late <= 16, "{late} actions after the cancel was recorded");
    let acted = w.delta(&before).await.len();
    assert!(
        acted < w.expected.len() / 2,
        "{acted} of {} copies acted on: the job ran on",
        w.expected.len()
    );
    let store = w.store();
    let row = store.job(job.parse().unwrap()).unwrap().unwrap();
    assert_eq!(row.state.as_str(), "cancelled");
    let counts = store.item_counts(row.id).unwrap();
    assert!(counts.remaining() > 0, "{counts:?}");
    drop(store);
    // Cancelling it again, or a finished job, is refused.
    let o = w.run(&["jobs", "cancel", &job]).await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("already cancelled"), "{}", stderr(&o));

    // Resumed, the job finishes each copy once; then a cancel is refused, and so is a resume.
    let o = w.run(&["jobs", "resume", &job]).await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    w.each_acted_on(&before, 1, "cancel then resume").await;
    let o = w.run(&["jobs", "cancel", &job]).await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("is finished"), "{}", stderr(&o));
    let audit_before = w.run(&["audit", "list"]).await;
    let o = w.run(&["jobs", "resume", &job]).await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("is finished"), "{}", stderr(&o));
    let audit_after = w.run(&["audit", "list"]).await;
    assert_eq!(
        stdout(&audit_before),
        stdout(&audit_after),
        "a refused resume audits nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_plans_second_restores_and_hard_delete_restores_are_refused() {
    let w = world(LabOptions::default()).await;
    // The text plan prints one line per reason with its count.
    let o = w
        .run(&["retract", "--message-id", CAMPAIGN_MESSAGE_ID, "--dry-run"])
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    for line in [
        "cannot  not_authorized 13",
        "cannot  not_a_mailbox  2",
        "cannot  external       1",
        "cannot  already_gone",
    ] {
        assert!(stdout(&o).contains(line), "{line:?} in\n{}", stdout(&o));
    }
    let plan = w.plan("plan.json", "junk", &[]).await;
    let o = w.run(&["apply", plan.to_str().unwrap(), "--yes"]).await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let job = w.newest_job();
    let before = w.acted().await;
    let o = w.run(&["apply", plan.to_str().unwrap(), "--yes"]).await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(&format!("already applied as job {job}")),
        "{}",
        stderr(&o)
    );
    assert_eq!(w.newest_job(), job, "no second job");
    assert!(w.delta(&before).await.is_empty(), "nothing acted on");

    // A second retract of the same copies with the same action is planned as held by job 1.
    let o = w
        .run(&[
            "retract",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--action",
            "junk",
            "--dry-run",
            "--json",
        ])
        .await;
    let second: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 0, "{second}");

    let o = w.run(&["restore", &job.to_string()]).await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let before = w.acted().await;
    let o = w.run(&["restore", &job.to_string()]).await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("nothing to restore"), "{}", stderr(&o));
    assert!(w.delta(&before).await.is_empty(), "nothing acted on");

    // Hard Delete is admin recovery only: refused up front, nothing sent.
    let (tenant, mailbox, _) = w.expected.iter().next().unwrap().clone();
    let o = w
        .run(&[
            "retract",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--only",
            &mailbox,
            "--action",
            "hard_delete",
            "--yes",
        ])
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let hard = w.newest_job();
    let before = w.acted().await;
    let o = w.run(&["restore", &hard.to_string()]).await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("admin"), "{}", stderr(&o));
    assert!(w.delta(&before).await.is_empty(), "nothing acted on");
    assert_eq!(
        w.folders().await[&(tenant, mailbox)],
        "purged",
        "the hard-deleted copy stays purged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_leaves_moved_copies_and_other_tenants_alone() {
    let w = world(LabOptions::default()).await;
    let original = w.folders().await;
    // A contoso-only job.
    let o = w
        .run(&[
            "retract",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--tenant",
            "contoso",
            "--action",
            "junk",
            "--yes",
        ])
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let contoso_job = w.newest_job();
    // Then fabrikam, in a job of its own.
    let o = w
        .run(&[
            "retract",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--tenant",
            "fabrikam",
            "--action",
            "junk",
            "--yes",
        ])
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));

    // The user moves one retracted contoso copy on to Deleted Items.
    let moved = w
        .expected
        .iter()
        .find(|(t, _, _)| t == "contoso")
        .map(|(_, m, _)| m.clone())
        .unwrap();
    w.user_action("contoso", &moved, "deleteditems").await;
    let before = w.acted().await;
    let o = w.run(&["restore", &contoso_job.to_string()]).await;
    assert_eq!(code(&o), 3, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("moved_since"), "{}", stdout(&o));
    let now = w.folders().await;
    for (t, m, _) in &w.expected {
        let key = (t.clone(), m.clone());
        let want = if t == "fabrikam" {
            "junk".to_string()
        } else if *m == moved {
            "trash".to_string()
        } else {
            original[&key].clone()
        };
        assert_eq!(now[&key], want, "{key:?}");
    }
    let delta = w.delta(&before).await;
    assert!(!delta.contains_key(&("contoso".to_string(), moved.clone())));
    assert!(delta.keys().all(|(t, _)| t == "contoso"), "{delta:?}");

    // The trace: contoso's record restored, fabrikam's still retracted.
    let o = w
        .run(&["search", &format!("msgid:{CAMPAIGN_MESSAGE_ID}"), "--json"])
        .await;
    let rows: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let state = |tenant: &str| -> Value {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["tenant"] == tenant)
            .map(|r| r["retraction_state"].clone())
            .unwrap()
    };
    assert_eq!(state("contoso"), "restored", "{rows}");
    assert_eq!(state("fabrikam"), "retracted", "{rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_planning_keeps_every_copy_and_retry_finishes_the_job() {
    let w = world(LabOptions {
        latency: Duration::from_millis(20),
        capacity: 4,
        ..LabOptions::default()
    })
    .await;
    // The sync of `world` ran into the same small capacity: finish it with a patient client
    // (the plan can only account for what the trace knows).
    let patient = w.config_limited("patient.toml", 4, 8);
    let o = w
        .run_with(&patient, &["trace", "sync", "--since", "3650d"])
        .await;
    // The ungranted domain is reported, not a failure (issue 16).
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // One attempt per request: the lab's 429s become `throttled` at once.
    let impatient = w.config_limited("impatient.toml", 256, 1);
    let plan_path = w.dir.path().join("plan.json");
    let o = w
        .run_with(
            &impatient,
            &[
                "plan",
                "--message-id",
                CAMPAIGN_MESSAGE_ID,
                "--action",
                "junk",
                "--out",
                plan_path.to_str().unwrap(),
            ],
        )
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(&plan_path).unwrap()).unwrap();
    let items = plan["items"].as_array().unwrap();
    let unresolved = items.iter().filter(|i| i["unresolved"].is_string()).count();
    assert!(unresolved > 0, "the lab throttled nothing: {}", stdout(&o));
    assert!(stdout(&o).contains("unresolved"), "{}", stdout(&o));
    // Every expected copy is in the plan's items: reached, or kept as unresolved.
    let planned: BTreeSet<(String, String)> = items
        .iter()
        .map(|i| {
            (
                i["tenant"].as_str().unwrap().to_string(),
                i["mailbox"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (t, m, _) in &w.expected {
        assert!(
            planned.contains(&(t.clone(), m.clone())),
            "{t}/{m} dropped from the plan: {:?}",
            plan["skipped"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["address"] == m.as_str())
                .collect::<Vec<_>>()
        );
    }
    let throttled_skips = plan["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["reason"] == "throttled")
        .count();
    assert_eq!(
        throttled_skips, 0,
        "throttled copies are items, not skipped"
    );

    let before = w.acted().await;
    let mut job = None;
    let mut last = 0;
    // Apply (still impatient), then retry the throttled failures with a patient client: the
    // exit code stays 3 while anything is left, and is 0 once every copy is settled.
    let o = w
        .run_with(&impatient, &["apply", plan_path.to_str().unwrap(), "--yes"])
        .await;
    let first_code = code(&o);
    assert!([0, 3].contains(&first_code), "{}{}", stdout(&o), stderr(&o));
    let mut current = w.newest_job();
    let mut code_now = first_code;
    for _ in 0..10 {
        if code_now == 0 {
            break;
        }
        let store = w.store();
        let c = store.item_counts(current).unwrap();
        assert!(
            c.failed > 0 || c.remaining() > 0,
            "exit 3 with nothing left: {c:?}"
        );
        let failed = store.job_items(current, Some(ItemState::Failed)).unwrap();
        drop(store);
        // Only what throttling left, or copies that were gone before anything was done (the
        // scenario's users who deleted or junked it: planning could not see that in time).
        let gone_before = |it: &&clawback::store::jobs::ItemRow| {
            it.reason.map(|r| r.as_str()) == Some("already_gone")
                && !w.expected.contains(&(
                    it.tenant.clone(),
                    it.mailbox.clone(),
                    CAMPAIGN_MESSAGE_ID.to_string(),
                ))
        };
        let other: Vec<_> = failed
            .iter()
            .filter(|it| it.reason.map(|r| r.as_str()) != Some("throttled"))
            .filter(|it| !gone_before(it))
            .map(|it| (&it.mailbox, it.reason, &it.detail))
            .collect();
        if !other.is_empty() {
            let acted = w.acted().await;
            let log: Vec<_> = other
                .iter()
                .map(|(m, _, _)| acted.iter().find(|(k, _)| &k.1 == *m))
                .collect();
            panic!("{other:?}\nlab: {log:?}");
        }
        let id = current.to_string();
        let throttled = failed
            .iter()
            .filter(|it| it.reason.map(|r| r.as_str()) == Some("throttled"))
            .count();
        if c.remaining() == 0 && throttled == 0 {
            break; // settled: only copies gone before are left as failures
        }
        let o = if c.remaining() > 0 {
            w.run(&["jobs", "resume", &id]).await
        } else {
            w.run(&["jobs", "retry", &id, "--reason", "throttled"])
                .await
        };
        code_now = code(&o);
        assert!([0, 3].contains(&code_now), "{}{}", stdout(&o), stderr(&o));
        current = w.newest_job();
        last += 1;
        job = Some(current);
    }
    let c = w.store().item_counts(current).unwrap();
    assert_eq!(
        c.remaining(),
        0,
        "still unsettled after {last} retries (job {job:?})"
    );
    w.each_acted_on(&before, 1, "throttled plan, then retries")
        .await;
    let now = w.folders().await;
    for (t, m, _) in &w.expected {
        assert_eq!(now[&(t.clone(), m.clone())], "junk", "{t}/{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_dropped_after_the_provider_acted_end_succeeded_and_undo_restores_them() {
    let w = world(LabOptions::default()).await;
    let original = w.folders().await;
    // Now the faults: 5xx before acting and connections dropped after acting, with few
    // attempts per request, so some outcomes are only known by looking.
    let lab = w.server.lab.clone();
    lab.set_fault_rate(0.3);
    let flaky = w.config_limited("flaky.toml", 256, 2);
    let before = w.acted().await;
    let o = w
        .run_with(
            &flaky,
            &[
                "retract",
                "--message-id",
                CAMPAIGN_MESSAGE_ID,
                "--action",
                "junk",
                "--yes",
            ],
        )
        .await;
    assert!([0, 3].contains(&code(&o)), "{}{}", stdout(&o), stderr(&o));
    let job = w.newest_job();
    let mut current = job;
    // Settle what is left the way the report says: resume unknown outcomes, retry failures.
    for _ in 0..20 {
        let store = w.store();
        let c = store.item_counts(current).unwrap();
        let failed = store.job_items(current, Some(ItemState::Failed)).unwrap();
        drop(store);
        let id = current.to_string();
        let o = if c.remaining() > 0 {
            w.run_with(&flaky, &["jobs", "resume", &id]).await
        } else if let Some(reason) = failed
            .iter()
            .filter_map(|it| it.reason)
            .find(|r| matches!(r.as_str(), "provider_error" | "throttled"))
        {
            w.run_with(&flaky, &["jobs", "retry", &id, "--reason", reason.as_str()])
                .await
        } else {
            break;
        };
        assert!([0, 3].contains(&code(&o)), "{}{}", stdout(&o), stderr(&o));
        current = w.newest_job();
    }
    assert!(
        lab.faults_dropped() > 0,
        "no answer was dropped after the lab acted"
    );
    if std::env::var_os("DEBUG_DROPS").is_some() {
        let delta = w.delta(&before).await;
        let acted = w.acted().await;
        let store = w.store();
        for (key, n) in delta.iter().filter(|(_, n)| **n != 1) {
            eprintln!("{key:?}: {n} actions {:?}", acted.get(key));
            for j in store.jobs(100).unwrap() {
                for it in store.job_items(j.id, None).unwrap() {
                    if it.mailbox == key.1 {
                        eprintln!(
                            "  job {} {:?} {:?} {:?} {:?}",
                            j.id, it.state, it.reason, it.provider_code, it.detail
                        );
                    }
                }
            }
        }
    }
    // Every expected copy was acted on exactly once, and its item (in the first job or a
    // retry) says succeeded — none was recorded already_gone by its own job's move.
    w.each_acted_on(&before, 1, "with dropped answers").await;
    let store = w.store();
    let mut ok: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut gone = Vec::new();
    let mut known_by_looking = 0;
    for j in store.jobs(100).unwrap().into_iter().filter(|j| j.id >= job) {
        for it in store.job_items(j.id, None).unwrap() {
            let key = (it.tenant.clone(), it.mailbox.clone());
            match (it.state, it.reason.map(|r| r.as_str())) {
                (ItemState::Succeeded, _) => {
                    let detail = it.detail.as_deref().unwrap_or_default();
                    if detail.contains("verified") || detail.contains("reconciled") {
                        known_by_looking += 1;
                    }
                    ok.insert(key, j.id);
                }
                (ItemState::Failed, Some("already_gone"))
                    if w.expected.contains(&(
                        key.0.clone(),
                        key.1.clone(),
                        CAMPAIGN_MESSAGE_ID.to_string(),
                    )) =>
                {
                    gone.push(key)
                }
                _ => {}
            }
        }
    }
    drop(store);
    assert!(
        gone.is_empty(),
        "moved by us, recorded already_gone: {gone:?}"
    );
    assert!(
        known_by_looking > 0,
        "no success was established by looking after a lost answer"
    );
    for (t, m, _) in &w.expected {
        assert!(
            ok.contains_key(&(t.clone(), m.clone())),
            "{t}/{m} not succeeded"
        );
    }

    // Undo, job by job, until every succeeded copy is back (restore retries its own drops).
    let jobs: BTreeSet<i64> = ok.values().copied().collect();
    lab.set_fault_rate(0.0);
    for j in jobs {
        let o = w.run(&["restore", &j.to_string()]).await;
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    }
    assert_eq!(w.folders().await, original, "every copy back where it was");
}
