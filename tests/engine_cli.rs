//! The retraction engine as an operator meets it (issue 5): the real `clawback` binary against
//! the lab over HTTP, with side effects checked at the lab (`/_lab/`) or in the SQLite store —
//! never by trusting clawback's own report.
//!
//! - audit: every single edit, deletion and swap of an entry is caught by `audit verify`;
//! - metrics: every figure of `metrics --json` against a hand-built mix of outcomes;
//! - roles: viewer and responder refusals are audited and move nothing;
//! - plan files: apply, digest check, unknown tenant, malformed file.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod lab_support;
use lab_support::synced_lab;

use clawback::config::Config;
use clawback::engine::Engine;
use clawback::engine::execute::RunOptions;
use clawback::engine::plan::{Plan, PlanItem, RetractRequest};
use clawback::lab::demo::{CAMPAIGN_MESSAGE_ID, DEMO_HOLD_MAILBOX, DEMO_NO_MAILBOX_USER};
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{Folder, RetractAction, TenantKind, Trigger};
use clawback::store::Store;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

/// What `$USER` says in the binary's environment: a lie the audit must not repeat.
const FAKE_USER: &str = "soc-night-shift";

/// The account of this process's uid, as `id -un` reports it (the audit records this).
fn os_user() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A lab with the demo scenario, a config for it and a data directory whose trace is synced.
struct World {
    server: LabServer,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl World {
    async fn new() -> World {
        let scenario = clawback::lab::scenario::demo(7);
        let lab = synced_lab(&scenario, LabOptions::default(), &[], 3650).await;
        // The store is closed here: the binary under test opens it.
        drop(lab.store);
        World {
            server: lab.server,
            dir: lab.dir,
            http: reqwest::Client::new(),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("lab.toml")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A copy of the lab config with another operator role.
    fn config_with_role(&self, role: &str) -> PathBuf {
        let text = std::fs::read_to_string(self.config()).unwrap();
        assert!(text.contains("role = \"admin\""), "{text}");
        let path = self.path(&format!("{role}.toml"));
        std::fs::write(
            &path,
            text.replace("role = \"admin\"", &format!("role = \"{role}\"")),
        )
        .unwrap();
        path
    }

    /// `clawback --config C --data-dir D ARGS…`
    async fn run_with(&self, config: &Path, data: &Path, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_clawback"))
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .env_remove("CLAWBACK_DATA_DIR")
            .env_remove("CLAWBACK_CONFIG")
            .env("USER", FAKE_USER)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap()
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with(&self.config(), &self.data(), args).await
    }

    async fn lab(&self, path: &str) -> Value {
        lab_support::lab_get(&self.http, &self.server.base_url(), path).await
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

    /// Every copy of the campaign at the lab, by mailbox.
    async fn campaign(&self) -> BTreeMap<String, Value> {
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
            .map(|c| (c["mailbox"].as_str().unwrap().to_string(), c.clone()))
            .collect()
    }

    /// Provider requests the lab served (everything but `/_lab/` control calls).
    async fn provider_requests(&self) -> u64 {
        let stats = self.lab("/_lab/stats").await;
        stats["requests"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(route, _)| !route.contains("/_lab/"))
            .map(|(_, n)| n.as_u64().unwrap())
            .sum()
    }

    /// API (not user) actions the lab recorded on the campaign.
    async fn api_actions(&self) -> u64 {
        self.lab(&format!(
            "/_lab/actions?message_id={}",
            enc(CAMPAIGN_MESSAGE_ID)
        ))
        .await["total"]
            .as_u64()
            .unwrap()
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

/// Granted inbox copies of the campaign, in address order, with the given tenant and read state.
fn pick(copies: &BTreeMap<String, Value>, tenant: &str, read: bool, n: usize) -> Vec<String> {
    let out: Vec<String> = copies
        .values()
        .filter(|c| {
            c["tenant"] == tenant
                && c["folder"] == "inbox"
                && c["granted"] == true
                && c["read"] == read
                && c["mailbox"] != DEMO_HOLD_MAILBOX
        })
        .map(|c| c["mailbox"].as_str().unwrap().to_string())
        .take(n)
        .collect();
    assert_eq!(out.len(), n, "not enough {tenant} read={read} copies");
    out
}

fn open_sqlite(data: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(data.join(clawback::store::STORE_FILE)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Audit
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Tamper {
    Edit,
    Delete,
    Swap,
}

/// Copies the (checkpointed) store into a fresh data dir and tampers with entry `seq`.
fn tampered_copy(src: &Path, dst: &Path, seq: i64, how: Tamper) {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(
        src.join(clawback::store::STORE_FILE),
        dst.join(clawback::store::STORE_FILE),
    )
    .unwrap();
    let conn = open_sqlite(dst);
    match how {
        Tamper::Edit => {
            let rec: String = conn
                .query_row("SELECT record FROM audit WHERE seq = ?1", [seq], |r| {
                    r.get(0)
                })
                .unwrap();
            let mut v: Value = serde_json::from_str(&rec).unwrap();
            v["operator"] = Value::from("mallory");
            let n = conn
                .execute(
                    "UPDATE audit SET record = ?2 WHERE seq = ?1",
                    rusqlite::params![seq, v.to_string()],
                )
                .unwrap();
            assert_eq!(n, 1);
        }
        Tamper::Delete => {
            let n = conn
                .execute("DELETE FROM audit WHERE seq = ?1", [seq])
                .unwrap();
            assert_eq!(n, 1);
        }
        Tamper::Swap => {
            type Row = (i64, i64, String, String, String);
            let row = |s: i64| -> Row {
                conn.query_row(
                    "SELECT pos, seq, record, prev_hash, hash FROM audit WHERE seq = ?1",
                    [s],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .unwrap()
            };
            let (a, b) = (row(seq), row(seq + 1));
            for (pos, other) in [(a.0, &b), (b.0, &a)] {
                conn.execute(
                    "UPDATE audit SET seq = ?2, record = ?3, prev_hash = ?4, hash = ?5 \
                     WHERE pos = ?1",
                    rusqlite::params![pos, other.1, other.2, other.3, other.4],
                )
                .unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_chain_detects_every_edit_delete_and_swap() {
    let w = World::new().await;
    let copies = w.campaign().await;
    let first = pick(&copies, "contoso", false, 2);
    let second = pick(&copies, "fabrikam", true, 1);

    let o = w
        .run(&[
            "retract",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--only",
            &first.join(","),
            "--action",
            "junk",
            "--reason",
            "INC-7",
            "--yes",
        ])
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = w.run(&["restore", "1"]).await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = w
        .run(&[
            "retract",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--only",
            &second.join(","),
            "--action",
            "trash",
            "--yes",
        ])
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // The operations really happened: the first two copies are back in the inbox after a
    // junk + restore, the third is in the trash.
    let now = w.campaign().await;
    for mb in &first {
        assert_eq!(now[mb]["folder"], "inbox", "{mb}");
        assert_eq!(now[mb]["actions"], 2, "{mb}: junk then restore");
    }
    assert_eq!(now[&second[0]]["folder"], "trash");

    // Export: one JSON object per line, chained, in the operator's name.
    let o = w.run(&["audit", "export"]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let entries: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sections: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["section"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sections,
        [
            ("retract", "plan_applied"),
            ("job", "job_finished"),
            ("restore", "restore_started"),
            ("restore", "job_finished"),
            ("retract", "plan_applied"),
            ("job", "job_finished"),
        ]
    );
    let mut prev = clawback::engine::audit::GENESIS.to_string();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        assert_eq!(e["prev_hash"], prev.as_str(), "entry {}", i + 1);
        prev = e["hash"].as_str().unwrap().to_string();
        assert_eq!(e["operator"], "lab-operator");
        assert_eq!(e["role"], "admin");
        assert_eq!(e["os_user"], os_user());
    }
    assert_eq!(entries[0]["counts"]["copies"], 2);
    assert_eq!(entries[0]["detail"]["reason"], "INC-7");
    assert_eq!(entries[1]["counts"]["succeeded"], 2);
    assert_eq!(entries[2]["job_id"], "2", "the restore is job 2");
    assert_eq!(entries[3]["counts"]["succeeded"], 2);
    // The plan digest in the log is the one of the plan the store kept for job 1.
    let digest: String = open_sqlite(&w.data())
        .query_row(
            "SELECT p.digest FROM plan p JOIN job j ON j.plan_id = p.id WHERE j.id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(entries[0]["plan_digest"], digest.as_str());

    // List by section.
    let o = w.run(&["audit", "list", "--section", "retract"]).await;
    assert_eq!(code(&o), 0);
    let lines: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].trim_start().starts_with("1 "), "{lines:?}");
    assert!(lines[1].trim_start().starts_with("5 "), "{lines:?}");
    assert!(lines.iter().all(|l| l.contains("plan_applied")
        && l.contains(&format!("lab-operator(admin, {})", os_user()))));
    let o = w.run(&["audit", "list", "--section", "restore"]).await;
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
    let o = w.run(&["audit", "list", "--section", "denied"]).await;
    assert_eq!(stdout(&o), "");

    // Intact.
    let o = w.run(&["audit", "verify"]).await;
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert_eq!(stdout(&o), "audit log intact: 6 entries\n");

    // Fold the WAL into the file so a plain copy holds every entry.
    open_sqlite(&w.data())
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let n = entries.len() as i64;
    for seq in 1..=n {
        for how in [Tamper::Edit, Tamper::Delete, Tamper::Swap] {
            if matches!(how, Tamper::Swap) && seq == n {
                continue;
            }
            let data = w.path(&format!("tamper-{how:?}-{seq}"));
            tampered_copy(&w.data(), &data, seq, how);
            let o = w.run_with(&w.config(), &data, &["audit", "verify"]).await;
            let out = stdout(&o);
            assert_eq!(code(&o), 1, "{how:?} {seq}: {out}{}", stderr(&o));
            let expected = match how {
                Tamper::Edit => format!("audit entry {seq}: content does not match its hash"),
                Tamper::Delete if seq == n => format!(
                    "audit log ends at entry {} but the recorded head is entry {n}",
                    n - 1
                ),
                // Entry seq+1 now stands at seq's place: both numbers are named.
                Tamper::Delete | Tamper::Swap => format!(
                    "audit entry {}: found where entry {seq} should be (entry {seq} was removed or moved)",
                    seq + 1
                ),
            };
            assert!(
                out.starts_with("audit log BROKEN: ") && out.contains(&expected),
                "{how:?} {seq}: {out}"
            );
        }
    }
    // The original is still intact (every tamper worked on a copy).
    let o = w.run(&["audit", "verify"]).await;
    assert_eq!(code(&o), 0, "{}", stdout(&o));
}

// ---------------------------------------------------------------------------------------------
// 3. Roles
// ---------------------------------------------------------------------------------------------

/// Audit entries (export) of a data dir.
async fn audit_entries(w: &World, config: &Path) -> Vec<Value> {
    let o = w.run_with(config, &w.data(), &["audit", "export"]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_refuse_and_audit_what_they_do_not_allow() {
    let w = World::new().await;
    let copies = w.campaign().await;
    let targets = pick(&copies, "contoso", false, 2);
    let only = targets.join(",");
    let retract = |action: &'static str| {
        vec![
            "retract".to_string(),
            "--message-id".into(),
            CAMPAIGN_MESSAGE_ID.into(),
            "--only".into(),
            only.clone(),
            "--action".into(),
            action.into(),
            "--yes".into(),
        ]
    };

    // viewer: refused (exit 2, the role needed named), audited, nothing moved.
    let viewer = w.config_with_role("viewer");
    let a = retract("junk");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let served = w.provider_requests().await;
    let o = w.run_with(&viewer, &w.data(), &a).await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    // Refused before planning: not even a read reached the providers.
    assert_eq!(w.provider_requests().await, served);
    let err = stderr(&o);
    assert!(
        err.contains("denied: role viewer may not retract (junk); it needs role responder"),
        "{err}"
    );
    assert_eq!(w.api_actions().await, 0, "a viewer moved something");
    let entries = audit_entries(&w, &viewer).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["section"], "denied");
    assert_eq!(entries[0]["role"], "viewer");
    assert_eq!(entries[0]["os_user"], os_user());
    assert_ne!(entries[0]["os_user"], FAKE_USER, "the audit took $USER");
    assert_eq!(entries[0]["detail"]["needed"], "responder");
    assert_eq!(entries[0]["detail"]["attempted"], "retract (junk)");
    // No job was created for the refused attempt.
    let jobs: i64 = open_sqlite(&w.data())
        .query_row("SELECT count(*) FROM job", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jobs, 0);
    // A viewer may still read the metrics and the audit.
    let o = w.run_with(&viewer, &w.data(), &["metrics", "--json"]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // responder: hard delete refused and audited, nothing moved.
    let responder = w.config_with_role("responder");
    let a = retract("hard_delete");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = w.run_with(&responder, &w.data(), &a).await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o)
            .contains("denied: role responder may not retract (hard_delete); it needs role admin"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        w.api_actions().await,
        0,
        "a responder hard-deleted something"
    );
    let entries = audit_entries(&w, &responder).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["section"], "denied");
    assert_eq!(entries[1]["role"], "responder");
    assert_eq!(entries[1]["detail"]["needed"], "admin");
    assert_eq!(entries[1]["detail"]["attempted"], "retract (hard_delete)");
    // Without --yes the refusal comes first: no prompt to type the number of copies for an
    // action the role may not take.
    let mut a = retract("hard_delete");
    a.retain(|x| x != "--yes");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = w.run_with(&responder, &w.data(), &a).await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("denied: role responder may not retract (hard_delete)")
            && !stderr(&o).contains("not a terminal"),
        "{}",
        stderr(&o)
    );
    let o = w
        .run_with(
            &responder,
            &w.data(),
            &["audit", "list", "--section", "denied"],
        )
        .await;
    assert_eq!(stdout(&o).lines().count(), 3, "{}", stdout(&o));

    // responder: junk works, and moved exactly the two copies once each.
    let a = retract("junk");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = w.run_with(&responder, &w.data(), &a).await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(w.api_actions().await, 2);
    let now = w.campaign().await;
    for mb in &targets {
        assert_eq!(now[mb]["folder"], "junk", "{mb}");
        assert_eq!(now[mb]["actions"], 1, "{mb}");
    }
    let entries = audit_entries(&w, &responder).await;
    assert_eq!(entries[3]["section"], "retract");
    assert_eq!(entries[3]["role"], "responder");

    // viewer: restoring that job is refused too, audited, and puts nothing back.
    let o = w.run_with(&viewer, &w.data(), &["restore", "1"]).await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("denied: role viewer may not restore; it needs role responder"),
        "{}",
        stderr(&o)
    );
    assert_eq!(w.api_actions().await, 2);
    let entries = audit_entries(&w, &viewer).await;
    let last = entries.last().unwrap();
    assert_eq!(
        (
            &last["section"],
            &last["role"],
            &last["detail"]["attempted"]
        ),
        (
            &Value::from("denied"),
            &Value::from("viewer"),
            &Value::from("restore")
        )
    );
    let now = w.campaign().await;
    for mb in &targets {
        assert_eq!(now[mb]["folder"], "junk", "{mb}");
    }
    let o = w
        .run_with(&responder, &w.data(), &["audit", "verify"])
        .await;
    assert_eq!(code(&o), 0, "{}", stdout(&o));
}

/// The role matrix of issue 11: every state-changing CLI command × viewer / responder / admin.
/// A refusal exits 2 naming the role needed and is audited in the role's name; an allowed
/// command may still fail for its own reasons (a finished job), but never on the role. The
/// read-only commands stay open to a viewer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_changing_command_checks_the_role() {
    let w = World::new().await;
    let copies = w.campaign().await;
    let targets = pick(&copies, "contoso", false, 8);
    // Job 1 (admin): two copies junked, to resume, cancel, retry and restore below.
    let o = w
        .run(&[
            "retract",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--only",
            &targets[..2].join(","),
            "--action",
            "junk",
            "--yes",
        ])
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let plan_path = w.path("matrix-plan.json");
    let o = w
        .run(&[
            "plan",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--only",
            &targets[2],
            "--action",
            "trash",
            "--out",
            plan_path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let policy_path = w.path("policy.toml");
    let o = w
        .run(&["policy", "export", "--out", policy_path.to_str().unwrap()])
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let eml = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eml/bcc-copy.eml");
    let out = w.path("viewer-plan.json");

    let roles = ["viewer", "responder", "admin"];
    let configs: BTreeMap<&str, PathBuf> = roles
        .iter()
        .map(|r| {
            let c = if *r == "admin" {
                w.config()
            } else {
                w.config_with_role(r)
            };
            (*r, c)
        })
        .collect();
    let rank = |r: &str| roles.iter().position(|x| *x == r).unwrap();
    let retract_one = |mailbox: &str, action: &str| {
        vec![
            "retract".to_string(),
            "--message-id".into(),
            CAMPAIGN_MESSAGE_ID.into(),
            "--only".into(),
            mailbox.into(),
            "--action".into(),
            action.into(),
            "--yes".into(),
        ]
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // (command, least role, what a refusal names); per role, so each acts on its own copy.
    let matrix = |role: &str| -> Vec<(Vec<String>, &'static str, &'static str)> {
        let i = rank(role);
        vec![
            (
                s(&["trace", "sync", "--tenant", "contoso"]),
                "responder",
                "update the trace",
            ),
            (
                s(&["trace", "ingest", eml.to_str().unwrap()]),
                "responder",
                "update the trace",
            ),
            (
                s(&[
                    "plan",
                    "--message-id",
                    CAMPAIGN_MESSAGE_ID,
                    "--only",
                    &targets[3],
                    "--action",
                    "junk",
                    "--out",
                    out.to_str().unwrap(),
                ]),
                "responder",
                "plan a retraction",
            ),
            (
                retract_one(&targets[4 + i], "junk"),
                "responder",
                "retract (junk)",
            ),
            (
                retract_one(&targets[7], "hard_delete"),
                "admin",
                "retract (hard_delete)",
            ),
            (
                s(&["apply", plan_path.to_str().unwrap(), "--yes"]),
                "responder",
                "retract (trash)",
            ),
            (s(&["jobs", "resume", "1"]), "responder", "retract (junk)"),
            (s(&["jobs", "cancel", "1"]), "responder", "cancel a job"),
            (
                s(&["jobs", "retry", "1", "--reason", "already_gone"]),
                "responder",
                "retract (junk)",
            ),
            (
                s(&["restore", "1", "--only", &targets[0]]),
                "responder",
                "restore",
            ),
            (s(&["watch", "--once"]), "responder", "run the automation"),
            (
                s(&["policy", "set", "spam", "junk"]),
                "admin",
                "change the auto-retract policy",
            ),
            (
                s(&["policy", "import", policy_path.to_str().unwrap()]),
                "admin",
                "change the auto-retract policy",
            ),
            // The automation guard's release (no hold here: the admin gets "no held match").
            (
                s(&["policy", "confirm", "1"]),
                "admin",
                "change the auto-retract policy",
            ),
        ]
    };
    for role in roles {
        let config = &configs[role];
        let before = w.api_actions().await;
        for (args, least, what) in matrix(role) {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = w.run_with(config, &w.data(), &a).await;
            let err = stderr(&o);
            if rank(role) < rank(least) {
                assert_eq!(code(&o), 2, "{role} {a:?}: {}{err}", stdout(&o));
                assert!(
                    err.contains(&format!(
                        "denied: role {role} may not {what}; it needs role {least}"
                    )),
                    "{role} {a:?}: {err}"
                );
                let entries = audit_entries(&w, config).await;
                let last = entries.last().unwrap();
                assert_eq!(
                    (
                        last["section"].as_str(),
                        last["role"].as_str(),
                        last["detail"]["attempted"].as_str()
                    ),
                    (Some("denied"), Some(role), Some(what)),
                    "{role} {a:?}"
                );
            } else {
                assert!(!err.contains("denied:"), "{role} {a:?}: {err}");
            }
        }
        if role == "viewer" {
            assert_eq!(w.api_actions().await, before, "a viewer moved something");
        }
    }
    // What the responder and admin did reached the lab: their junk, the plan's trash, the
    // restore; the Hard Delete only from the admin.
    let now = w.campaign().await;
    assert_eq!(now[&targets[0]]["folder"], "inbox", "restored");
    assert_eq!(now[&targets[2]]["folder"], "trash", "the applied plan");
    assert_eq!(now[&targets[4]]["folder"], "inbox", "the viewer's retract");
    assert_eq!(
        now[&targets[5]]["folder"], "junk",
        "the responder's retract"
    );
    assert_eq!(now[&targets[6]]["folder"], "junk", "the admin's retract");
    // Purged: gone from the user's view (the lab keeps the copy, marked purged).
    assert!(
        now.get(&targets[7]).is_none_or(|c| c["folder"] == "purged"),
        "the admin's Hard Delete: {:?}",
        now.get(&targets[7])
    );
    assert_eq!(
        w.lab(&format!("/_lab/actions?mailbox={}", enc(&targets[7])))
            .await["total"],
        1
    );

    // Reading stays open to a viewer.
    for args in [
        vec!["search", "subject:invoice"],
        vec!["jobs", "list"],
        vec!["jobs", "show", "1"],
        vec!["metrics"],
        vec!["audit", "verify"],
        vec!["audit", "export"],
        vec!["policy", "show"],
        vec!["policy", "export"],
        vec!["policy", "holds"],
        vec!["audit", "head"],
    ] {
        let o = w.run_with(&configs["viewer"], &w.data(), &args).await;
        assert_eq!(code(&o), 0, "viewer {args:?}: {}", stderr(&o));
    }
}

/// A copy of the store in a fresh data dir (the binary has exited: the WAL is checkpointed or
/// copied along).
fn store_copy(src: &Path, dst: &Path) -> rusqlite::Connection {
    std::fs::create_dir_all(dst).unwrap();
    for suffix in ["", "-wal"] {
        let from = src.join(format!("{}{suffix}", clawback::store::STORE_FILE));
        if from.exists() {
            std::fs::copy(
                &from,
                dst.join(format!("{}{suffix}", clawback::store::STORE_FILE)),
            )
            .unwrap();
        }
    }
    open_sqlite(dst)
}

/// Issue 11: the audit head kept outside the store (a job summary, `audit head`, the head
/// file) catches what the chain and its in-store head cannot: the tail cut and the stored head
/// fixed, every row wiped, an old row edited with every later hash recomputed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_head_kept_outside_catches_truncation_wipe_and_rewrite() {
    let w = World::new().await;
    let copies = w.campaign().await;
    let targets = pick(&copies, "contoso", false, 2);
    // The config appends every head to a file outside the data dir.
    let heads_path = w.path("heads.log");
    let with_file = w.path("with-head-file.toml");
    std::fs::write(
        &with_file,
        format!(
            "{}\n[audit]\nhead_file = \"heads.log\"\n",
            std::fs::read_to_string(w.config()).unwrap()
        ),
    )
    .unwrap();
    let o = w
        .run_with(
            &with_file,
            &w.data(),
            &[
                "retract",
                "--message-id",
                CAMPAIGN_MESSAGE_ID,
                "--only",
                &targets.join(","),
                "--action",
                "junk",
                "--yes",
            ],
        )
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // The job summary carries the head after it; `audit head` says the same.
    let out = stdout(&o);
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("audit head: "))
        .unwrap_or_else(|| panic!("no audit head in the job summary: {out}"));
    let head = line.split("  ").next().unwrap().to_string();
    let (seq, hash) = head.split_once(" sha256:").unwrap();
    let seq: u64 = seq.parse().unwrap();
    assert!(seq >= 2, "{head}");
    let o = w.run(&["audit", "head"]).await;
    assert_eq!(stdout(&o).trim(), head);
    let o = w.run(&["jobs", "show", "1"]).await;
    assert!(
        stdout(&o).contains(&format!("audit head after it: {head}")),
        "{}",
        stdout(&o)
    );
    // The head file has one line per entry, the last one the head.
    let lines: Vec<String> = std::fs::read_to_string(&heads_path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len() as u64, seq, "{lines:?}");
    assert_eq!(lines.last().unwrap(), &head);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&heads_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "head file mode {mode:o}");
    }
    let arg = format!("{seq}:sha256:{hash}");

    // The untouched log passes, with the head given and with the head file.
    let o = w.run(&["audit", "verify", "--head", &arg]).await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = w
        .run_with(&with_file, &w.data(), &["audit", "verify"])
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(&format!("matching {seq} heads in {}", heads_path.display())),
        "{}",
        stdout(&o)
    );

    type AuditRow = (i64, i64, String, String);
    type Tampering = fn(&rusqlite::Connection, &[AuditRow]);
    let rows = |conn: &rusqlite::Connection| -> Vec<AuditRow> {
        let mut stmt = conn
            .prepare("SELECT pos, seq, record, prev_hash FROM audit ORDER BY pos")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let cases: [(&str, Tampering); 3] = [
        ("tail cut, stored head fixed", |conn, rows| {
            let keep = rows.len() - 1;
            conn.execute("DELETE FROM audit WHERE pos > ?1", [rows[keep - 1].0])
                .unwrap();
            conn.execute(
                "UPDATE audit_head SET seq = (SELECT seq FROM audit ORDER BY pos DESC LIMIT 1), \
                 hash = (SELECT hash FROM audit ORDER BY pos DESC LIMIT 1)",
                [],
            )
            .unwrap();
        }),
        ("every row wiped", |conn, _| {
            conn.execute_batch("DELETE FROM audit; DELETE FROM audit_head;")
                .unwrap();
        }),
        (
            "entry 1 edited, every later hash recomputed",
            |conn, rows| {
                let mut prev = clawback::engine::audit::GENESIS.to_string();
                for (i, (pos, seq, record, _)) in rows.iter().enumerate() {
                    let mut rec: clawback::engine::audit::AuditRecord =
                        serde_json::from_str(record).unwrap();
                    if i == 0 {
                        rec.operator = "mallory".into();
                    }
                    let hash = clawback::engine::audit::entry_hash(&prev, *seq as u64, &rec);
                    conn.execute(
                        "UPDATE audit SET record = ?2, prev_hash = ?3, hash = ?4 WHERE pos = ?1",
                        rusqlite::params![pos, serde_json::to_string(&rec).unwrap(), prev, hash],
                    )
                    .unwrap();
                    prev = hash;
                }
                conn.execute("UPDATE audit_head SET hash = ?1", [&prev])
                    .unwrap();
            },
        ),
    ];
    for (i, (what, tamper)) in cases.into_iter().enumerate() {
        let data = w.path(&format!("tampered-{i}"));
        let conn = store_copy(&w.data(), &data);
        let before = rows(&conn);
        tamper(&conn, &before);
        drop(conn);
        // The chain and its in-store head alone are fooled …
        let o = w.run_with(&w.config(), &data, &["audit", "verify"]).await;
        assert_eq!(
            code(&o),
            0,
            "{what}: plain verify {}{}",
            stdout(&o),
            stderr(&o)
        );
        // … the head recorded outside is not.
        let o = w
            .run_with(&w.config(), &data, &["audit", "verify", "--head", &arg])
            .await;
        assert_eq!(code(&o), 1, "{what}: {}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains(&format!("audit entry {seq}:"))
                && stdout(&o).contains("recorded outside the store"),
            "{what}: {}",
            stdout(&o)
        );
        // Nor is the head file.
        let o = w.run_with(&with_file, &data, &["audit", "verify"]).await;
        assert_eq!(
            code(&o),
            1,
            "{what} (head file): {}{}",
            stdout(&o),
            stderr(&o)
        );
    }
    // A malformed --head is a usage error that says what is expected.
    let o = w.run(&["audit", "verify", "--head", "12:nope"]).await;
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("expected SEQ:sha256:HEX"),
        "{}",
        stderr(&o)
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Plan files
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_files_apply_and_refuse_tampering() {
    let w = World::new().await;
    let copies = w.campaign().await;
    let targets = pick(&copies, "fabrikam", false, 2);
    let others = pick(&copies, "fabrikam", true, 1);
    let plan_path = w.path("p.json");
    let p = plan_path.to_str().unwrap();
    let o = w
        .run(&[
            "plan",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--only",
            &targets.join(","),
            "--action",
            "trash",
            "--out",
            p,
        ])
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(w.api_actions().await, 0, "planning moved something");
    let text = std::fs::read_to_string(&plan_path).unwrap();

    // An edited plan (one mailbox changed) is refused with the digest message; nothing moves.
    let edited_path = w.path("edited.json");
    let edited = text.replace(&targets[0], &others[0]);
    assert_ne!(edited, text);
    std::fs::write(&edited_path, &edited).unwrap();
    let o = w
        .run(&["apply", edited_path.to_str().unwrap(), "--yes"])
        .await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "{}: plan digest does not match its content",
            edited_path.display()
        )),
        "{}",
        stderr(&o)
    );

    // A plan naming a tenant that is not configured (digest recomputed, so only the tenant
    // check can refuse it) is refused; nothing moves, no job is created.
    let mut plan: Plan = serde_json::from_str(&text).unwrap();
    plan.items[0].tenant = "northwind".into();
    plan.digest = plan.compute_digest();
    let unknown_path = w.path("unknown-tenant.json");
    std::fs::write(&unknown_path, plan.to_json_pretty()).unwrap();
    let o = w
        .run(&["apply", unknown_path.to_str().unwrap(), "--yes"])
        .await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("unknown tenant \"northwind\"; configured tenants: contoso, fabrikam"),
        "{}",
        stderr(&o)
    );

    // A role check comes before the confirmation: a responder applying a Hard Delete plan
    // (made by an admin) without --yes is refused, not asked to type the number of copies.
    let hard_path = w.path("hard.json");
    let o = w
        .run(&[
            "plan",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--only",
            &targets.join(","),
            "--action",
            "hard_delete",
            "--out",
            hard_path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let responder = w.config_with_role("responder");
    let o = w
        .run_with(
            &responder,
            &w.data(),
            &["apply", hard_path.to_str().unwrap()],
        )
        .await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("denied: role responder may not retract (hard_delete)")
            && !stderr(&o).contains("not a terminal"),
        "{}",
        stderr(&o)
    );

    // A malformed file: path:line:column.
    let bad_path = w.path("bad.json");
    std::fs::write(&bad_path, "{\n  \"version\": 1,\n  oops\n}\n").unwrap();
    let o = w.run(&["apply", bad_path.to_str().unwrap(), "--yes"]).await;
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains(&format!("{}:3:3: not a clawback plan", bad_path.display())),
        "{}",
        stderr(&o)
    );

    assert_eq!(w.api_actions().await, 0, "a refused plan moved something");
    let jobs: i64 = open_sqlite(&w.data())
        .query_row("SELECT count(*) FROM job", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jobs, 0);

    // The untouched plan applies: exactly its two copies go to the trash, once each.
    let o = w.run(&["apply", p, "--yes"]).await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(w.api_actions().await, 2);
    let now = w.campaign().await;
    for mb in &targets {
        assert_eq!(now[mb]["folder"], "trash", "{mb}");
        assert_eq!(now[mb]["actions"], 1, "{mb}");
    }
    assert_eq!(now[&others[0]]["folder"], "inbox");
    // The job names the plan's digest.
    let digest: String = open_sqlite(&w.data())
        .query_row(
            "SELECT p.digest FROM plan p JOIN job j ON j.plan_id = p.id WHERE j.id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        digest,
        serde_json::from_str::<Value>(&text).unwrap()["digest"]
    );
}

/// The attack of issue 11: a responder turns a Junk plan into Hard Delete by editing every
/// item's action and recomputing the (public) digest. The store's seal and the item/request
/// check refuse it, for an admin too; the refusal is audited; the lab saw no permanentDelete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_plan_is_refused_and_audited() {
    let w = World::new().await;
    let copies = w.campaign().await;
    let targets = pick(&copies, "contoso", false, 2);
    let responder = w.config_with_role("responder");
    let plan_path = w.path("junk.json");
    let o = w
        .run_with(
            &responder,
            &w.data(),
            &[
                "plan",
                "--message-id",
                CAMPAIGN_MESSAGE_ID,
                "--only",
                &targets.join(","),
                "--action",
                "junk",
                "--out",
                plan_path.to_str().unwrap(),
            ],
        )
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let text = std::fs::read_to_string(&plan_path).unwrap();
    let plan: Plan = serde_json::from_str(&text).unwrap();
    assert!(plan.seal.starts_with("hmac-sha256:"), "{}", plan.seal);

    let write = |name: &str, plan: &Plan| {
        let path = w.path(name);
        std::fs::write(&path, plan.to_json_pretty()).unwrap();
        path
    };
    // (a) items say hard_delete under a junk request, digest recomputed.
    let mut items_only = plan.clone();
    for item in &mut items_only.items {
        item.action = RetractAction::HardDelete;
        item.effective_action = RetractAction::HardDelete;
    }
    items_only.digest = items_only.compute_digest();
    let a = write("a.json", &items_only);
    // (b) the request says hard_delete too, digest recomputed.
    let mut everything = items_only.clone();
    everything.request.action = RetractAction::HardDelete;
    everything.digest = everything.compute_digest();
    let b = write("b.json", &everything);

    let admin = w.config();
    for (config, path, role) in [
        (&responder, &a, "responder"),
        (&responder, &b, "responder"),
        (&admin, &a, "admin"),
    ] {
        let o = w
            .run_with(
                config,
                &w.data(),
                &["apply", path.to_str().unwrap(), "--yes"],
            )
            .await;
        assert_eq!(code(&o), 2, "{role} {path:?}: {}{}", stdout(&o), stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("plan {} refused:", plan.id))
                && err.contains("its seal does not match"),
            "{role} {path:?}: {err}"
        );
        let entries = audit_entries(&w, config).await;
        let last = entries.last().unwrap();
        assert_eq!(last["action"], "plan_refused", "{last}");
        assert_eq!(last["role"], role, "{last}");
        assert!(
            last["detail"]["reason"]
                .as_str()
                .unwrap()
                .contains("its seal does not match"),
            "{last}"
        );
    }
    // The mismatch itself is named (here for (a): items against their request).
    let entries = audit_entries(&w, &admin).await;
    assert!(
        entries
            .iter()
            .any(|e| e["detail"]["reason"].as_str().is_some_and(
                |r| r.contains("2 items: hard_delete (effective hard_delete) under a junk request")
            )),
        "{entries:?}"
    );
    // Nothing was deleted, nothing was made into a job.
    assert_eq!(w.api_actions().await, 0, "a refused plan moved something");
    // No API action on any message of any tenant (a permanentDelete would be one).
    assert_eq!(w.lab("/_lab/actions").await["total"], 0);
    let now = w.campaign().await;
    for mb in &targets {
        assert_eq!(now[mb]["folder"], "inbox", "{mb}");
    }
    let jobs: i64 = open_sqlite(&w.data())
        .query_row("SELECT count(*) FROM job", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jobs, 0);

    // The plan as made applies for the responder: exactly its two copies go to Junk.
    let o = w
        .run_with(
            &responder,
            &w.data(),
            &["apply", plan_path.to_str().unwrap(), "--yes"],
        )
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let now = w.campaign().await;
    for mb in &targets {
        assert_eq!(now[mb]["folder"], "junk", "{mb}");
    }
    let o = w.run(&["audit", "verify"]).await;
    assert_eq!(code(&o), 0, "{}", stdout(&o));
}

// ---------------------------------------------------------------------------------------------
// 2. Metrics
// ---------------------------------------------------------------------------------------------

fn approx(v: &Value, expected: f64, what: &str) {
    let got = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {v} is not a number"));
    assert!((got - expected).abs() < 1e-9, "{what}: {got} != {expected}");
}

/// `{count, pct}` against `count` out of `base`.
fn share(v: &Value, count: u64, base: u64, what: &str) {
    assert_eq!(v["count"], count, "{what}.count");
    let pct = if base == 0 {
        0.0
    } else {
        count as f64 * 100.0 / base as f64
    };
    approx(&v["pct"], pct, &format!("{what}.pct"));
}

/// Nearest-rank percentile, written out again here (not the engine's).
fn nearest_rank(mut v: Vec<i64>, p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1] as f64)
}

/// One settled retract item as the store has it.
#[derive(Debug, Clone)]
struct Settled {
    job: i64,
    trigger: String,
    tenant: String,
    mailbox: String,
    state: String,
    reason: Option<String>,
    read: bool,
    dwell: Option<i64>,
    to_act: Option<i64>,
}

fn settled_items(data: &Path) -> Vec<Settled> {
    let conn = open_sqlite(data);
    let mut stmt = conn
        .prepare(
            "SELECT j.id, j.trigger, i.tenant, i.mailbox, i.state, i.reason, i.read, \
             i.finished_at - i.delivered_at, i.finished_at - COALESCE(j.detected_at, j.created_at) \
             FROM job_item i JOIN job j ON j.id = i.job_id \
             WHERE j.kind = 'retract' AND j.dry_run = 0 ORDER BY i.id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Settled {
            job: r.get(0)?,
            trigger: r.get(1)?,
            tenant: r.get(2)?,
            mailbox: r.get(3)?,
            state: r.get(4)?,
            reason: r.get(5)?,
            read: r.get::<_, i64>(6)? != 0,
            dwell: r.get(7)?,
            to_act: r.get(8)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_a_hand_built_mix_of_outcomes() {
    let w = World::new().await;
    let copies = w.campaign().await;
    let c_read = pick(&copies, "contoso", true, 4);
    let c_unread = pick(&copies, "contoso", false, 3);
    let f_read = pick(&copies, "fabrikam", true, 2);
    let f_unread = pick(&copies, "fabrikam", false, 3);
    let ungranted = copies
        .values()
        .find(|c| c["tenant"] == "contoso" && c["granted"] == false && c["folder"] == "inbox")
        .unwrap()
        .clone();
    let already_trashed = copies
        .values()
        .find(|c| c["tenant"] == "contoso" && c["granted"] == true && c["folder"] == "trash")
        .unwrap()["mailbox"]
        .as_str()
        .unwrap()
        .to_string();

    // Manual job 1 (a plan file applied with the CLI): 7 successes, 2 copies the users junk or
    // delete between plan and apply (already_gone), one recipient the plan already skips.
    let manual_ok: Vec<String> =
        [&c_read[..2], &c_unread[..2], &f_unread[..2], &f_read[..1]].concat();
    let gone_c = c_read[3].clone();
    let gone_f = f_read[1].clone();
    let mut only = manual_ok.clone();
    only.extend([gone_c.clone(), gone_f.clone(), already_trashed.clone()]);
    let plan_path = w.path("a.json");
    let o = w
        .run(&[
            "plan",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--only",
            &only.join(","),
            "--action",
            "junk",
            "--out",
            plan_path.to_str().unwrap(),
        ])
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let mut plan =
        Plan::from_json(&std::fs::read_to_string(&plan_path).unwrap(), "a.json").unwrap();
    assert_eq!(plan.items.len(), 9);
    assert_eq!(plan.skipped.len(), 1, "{:?}", plan.skipped);
    assert_eq!(plan.skipped[0].address, already_trashed);
    // The planner never puts an ungranted mailbox, a user without a mailbox or an external
    // address into a plan's items (they are skipped, or absent from the trace). A job meets
    // them when a plan goes stale — a grant revoked, a mailbox removed — between review and
    // apply. Model that: add the three items and reseal the plan as clawback would.
    let mid = plan.items[0].internet_message_id.clone();
    let stale = |mailbox: &str, copy_id: &str| PlanItem {
        tenant: "contoso".into(),
        kind: TenantKind::Microsoft365,
        mailbox: mailbox.into(),
        internet_message_id: mid.clone(),
        copy_id: copy_id.into(),
        folder: Folder::Inbox,
        read: false,
        depth: 0,
        action: RetractAction::Junk,
        effective_action: RetractAction::Junk,
        note: None,
        unresolved: None,
    };
    let ungranted_mb = ungranted["mailbox"].as_str().unwrap().to_string();
    let external = clawback::lab::demo::DEMO_EXTERNAL_MEMBER;
    plan.items
        .push(stale(&ungranted_mb, ungranted["id"].as_str().unwrap()));
    plan.items.push(stale(DEMO_NO_MAILBOX_USER, "AAMkAGone"));
    plan.items.push(stale(external, "AAMkAExternal"));
    let key = Store::open_in_dir(&w.data()).unwrap().plan_key().unwrap();
    plan.seal_with(&key);
    std::fs::write(&plan_path, plan.to_json_pretty()).unwrap();
    w.user_action("contoso", &gone_c, "deleteditems").await;
    w.user_action("fabrikam", &gone_f, "junk").await;
    let o = w
        .run(&["apply", plan_path.to_str().unwrap(), "--yes"])
        .await;
    assert_eq!(code(&o), 3, "{}{}", stdout(&o), stderr(&o));

    // Manual job 2: Hard Delete on the mailbox on hold. A hold does not refuse it (Graph
    // answers 204 and keeps the item in Purges for admins): a success.
    let hard_ok = vec![DEMO_HOLD_MAILBOX.to_string()];
    let o = w
        .run(&[
            "retract",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--only",
            DEMO_HOLD_MAILBOX,
            "--action",
            "hard_delete",
            "--yes",
        ])
        .await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // The plan said so beforehand, the outcome says so after.
    assert!(
        stdout(&o).contains("1 copies retained_by_hold"),
        "{}",
        stdout(&o)
    );
    let shown = w.run(&["jobs", "show", "2"]).await;
    assert!(
        stdout(&shown).contains("succeeded") && stdout(&shown).contains("[retained_by_hold:"),
        "{}",
        stdout(&shown)
    );

    // Auto job 3 through the library on the same data dir: two successes and one copy the
    // user junks between plan and run.
    let auto_ok = vec![c_read[2].clone(), f_unread[2].clone()];
    let auto_gone = c_unread[2].clone();
    {
        let config = Config::load(&w.config()).unwrap();
        let store = Store::open_in_dir(&w.data()).unwrap();
        let engine = Engine::new(config, store).unwrap();
        let mut auto_only = auto_ok.clone();
        auto_only.push(auto_gone.clone());
        let plan = engine
            .build_plan(RetractRequest {
                message_ids: vec![CAMPAIGN_MESSAGE_ID.into()],
                query: None,
                tenants: vec![],
                only: auto_only,
                exclude: vec![],
                depth: 0,
                action: RetractAction::Trash,
                trigger: Trigger::Auto,
                reason: "policy: malicious -> trash".into(),
            })
            .await
            .unwrap();
        assert_eq!(plan.items.len(), 3);
        w.user_action("contoso", &auto_gone, "junkemail").await;
        let job = engine.create_job(&plan, false).unwrap();
        engine
            .run_job(job, &RunOptions::default(), &|_| {})
            .await
            .unwrap();
    }

    // The lab: exactly the successes moved, once each; nothing else was touched by the API.
    let now = w.campaign().await;
    for mb in &manual_ok {
        assert_eq!(
            (&now[mb]["folder"], &now[mb]["actions"]),
            (&Value::from("junk"), &Value::from(1)),
            "{mb}"
        );
    }
    for mb in &auto_ok {
        assert_eq!(
            (&now[mb]["folder"], &now[mb]["actions"]),
            (&Value::from("trash"), &Value::from(1)),
            "{mb}"
        );
    }
    for mb in &hard_ok {
        assert_eq!(
            (
                &now[mb]["folder"],
                &now[mb]["actions"],
                &now[mb]["retained_by_hold"]
            ),
            (&Value::from("purged"), &Value::from(1), &Value::from(true)),
            "{mb}"
        );
    }
    for (mb, folder) in [
        (&gone_c, "trash"),
        (&gone_f, "junk"),
        (&auto_gone, "junk"),
        (&ungranted_mb, "inbox"),
        (&already_trashed, "trash"),
    ] {
        assert_eq!(now[mb]["folder"], folder, "{mb}");
        assert_eq!(now[mb]["actions"], 0, "{mb}: the API acted on it");
    }
    assert_eq!(
        w.api_actions().await,
        (manual_ok.len() + auto_ok.len() + hard_ok.len()) as u64
    );

    // The store: every item settled with the reason the construction gives it.
    let items = settled_items(&w.data());
    let by_mb = |mb: &str| -> Settled {
        let found: Vec<&Settled> = items.iter().filter(|s| s.mailbox == mb).collect();
        assert_eq!(found.len(), 1, "{mb}: {found:?}");
        found[0].clone()
    };
    let expect_fail = [
        (gone_c.as_str(), "already_gone"),
        (gone_f.as_str(), "already_gone"),
        (auto_gone.as_str(), "already_gone"),
        (ungranted_mb.as_str(), "not_authorized"),
        (DEMO_NO_MAILBOX_USER, "not_a_mailbox"),
        (external, "external"),
    ];
    for (mb, reason) in expect_fail {
        let s = by_mb(mb);
        assert_eq!(
            (s.state.as_str(), s.reason.as_deref()),
            ("failed", Some(reason)),
            "{mb}"
        );
    }
    for mb in manual_ok.iter().chain(&auto_ok).chain(&hard_ok) {
        let s = by_mb(mb);
        assert_eq!(s.state, "succeeded", "{mb}");
        // The read state recorded is the one the lab had before the retraction.
        assert_eq!(s.read, copies[mb]["read"] == true, "{mb}");
    }
    let skipped = by_mb(&already_trashed);
    assert_eq!(
        (skipped.state.as_str(), skipped.reason.as_deref()),
        ("skipped", Some("already_gone"))
    );
    assert_eq!(items.len(), 9 + 3 + 1 + 3 + 1, "every item accounted for");
    assert_eq!(
        items
            .iter()
            .filter(|s| s.trigger == "auto")
            .map(|s| s.job)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([3])
    );

    // Hand-computed figures: from the construction (lab read states, chosen mailboxes).
    let ok_all: Vec<&String> = manual_ok.iter().chain(&auto_ok).chain(&hard_ok).collect();
    let read = ok_all
        .iter()
        .filter(|mb| copies[**mb]["read"] == true)
        .count() as u64;
    let succeeded = ok_all.len() as u64;
    let unread = succeeded - read;
    let failed = expect_fail.len() as u64;
    let total = succeeded + failed;
    let auto = (auto_ok.len() + 1) as u64;
    let tenant_of = |mb: &str| {
        if mb.ends_with("@fabrikam.com") {
            "fabrikam"
        } else {
            "contoso"
        }
    };
    let mut per_tenant: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for mb in &ok_all {
        per_tenant.entry(tenant_of(mb)).or_default().0 += 1;
    }
    for (mb, _) in expect_fail {
        per_tenant.entry(tenant_of(mb)).or_default().1 += 1;
    }
    // …and the same totals straight from the store's rows (skipped ones do not count).
    let counted: Vec<&Settled> = items.iter().filter(|s| s.state != "skipped").collect();
    assert_eq!(counted.len() as u64, total);
    assert_eq!(
        counted.iter().filter(|s| s.trigger != "manual").count() as u64,
        auto
    );
    for s in &counted {
        assert_eq!(s.tenant, tenant_of(&s.mailbox), "{s:?}");
    }
    let ok_rows: Vec<&&Settled> = counted.iter().filter(|s| s.state == "succeeded").collect();
    let dwell: Vec<i64> = ok_rows.iter().map(|s| s.dwell.unwrap()).collect();
    let to_act: Vec<i64> = ok_rows.iter().map(|s| s.to_act.unwrap()).collect();

    let o = w.run(&["metrics", "--json", "--details"]).await;
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let m: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(m["total"], total, "{m}");
    share(&m["succeeded"], succeeded, total, "succeeded");
    share(&m["failed"], failed, total, "failed");
    let reasons: BTreeSet<&str> = m["failed_by_reason"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from([
            "already_gone",
            "external",
            "not_a_mailbox",
            "not_authorized",
        ])
    );
    for reason in &reasons {
        let n = expect_fail.iter().filter(|(_, r)| r == reason).count() as u64;
        share(&m["failed_by_reason"][reason], n, total, reason);
    }
    share(&m["read"], read, succeeded, "read");
    share(
        &m["retained_by_hold"],
        hard_ok.len() as u64,
        succeeded,
        "retained_by_hold",
    );
    share(&m["unread"], unread, succeeded, "unread");
    share(&m["auto"], auto, total, "auto");
    share(&m["manual"], total - auto, total, "manual");
    let tenants: BTreeMap<String, Value> = m["per_tenant"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(tenants.len(), per_tenant.len());
    for (t, (ok, bad)) in &per_tenant {
        assert_eq!(
            tenants[*t],
            serde_json::json!({"total": ok + bad, "succeeded": ok, "failed": bad}),
            "{t}"
        );
    }
    assert_eq!(m["dwell"]["samples"], succeeded);
    assert_eq!(
        m["dwell"]["p50_secs"].as_f64(),
        nearest_rank(dwell.clone(), 50.0)
    );
    assert_eq!(m["dwell"]["p95_secs"].as_f64(), nearest_rank(dwell, 95.0));
    assert_eq!(m["time_to_act"]["samples"], succeeded);
    assert_eq!(
        m["time_to_act"]["p50_secs"].as_f64(),
        nearest_rank(to_act.clone(), 50.0)
    );
    assert_eq!(
        m["time_to_act"]["p95_secs"].as_f64(),
        nearest_rank(to_act, 95.0)
    );
    // The lab issued no 429s, so no throttling is reported.
    assert_eq!(w.lab("/_lab/stats").await["throttled_total"], 0);
    assert_eq!(m["throttled_responses"], 0);
    approx(&m["throttled_wait_secs"], 0.0, "throttled_wait_secs");
    let series: Vec<u64> = m["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!((series.len(), series.iter().sum::<u64>()), (24, total));
    assert_eq!(m["until"], Value::Null);
    // Details: the one message, by retraction time, with the same copies as the totals.
    let details = m["details"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{details:?}");
    let d = &details[0];
    assert_eq!(d["message_id"], serde_json::json!(mid));
    assert_eq!(
        (&d["succeeded"], &d["failed"], &d["auto"], &d["manual"]),
        (
            &serde_json::json!(succeeded),
            &serde_json::json!(failed),
            &serde_json::json!(auto),
            &serde_json::json!(total - auto)
        )
    );
    assert_eq!(
        d["tenants"],
        serde_json::json!(per_tenant.keys().collect::<Vec<_>>())
    );

    // Undoing job 1 puts its copies back but is no retraction: the figures stay the same.
    let o = w.run(&["restore", "1"]).await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let now = w.campaign().await;
    for mb in &manual_ok {
        assert_eq!(now[mb]["folder"], "inbox", "{mb}");
    }
    let o = w.run(&["metrics", "--json", "--details"]).await;
    let after: Value = serde_json::from_str(&stdout(&o)).unwrap();
    for key in [
        "total",
        "succeeded",
        "failed",
        "failed_by_reason",
        "read",
        "unread",
        "auto",
        "manual",
        "per_tenant",
        "details",
    ] {
        assert_eq!(after[key], m[key], "{key} changed by a restore");
    }

    // A window that ends before anything happened is empty, with zero percentages.
    let o = w
        .run(&[
            "metrics",
            "--json",
            "--since",
            "2000-01-01",
            "--until",
            "2000-01-02",
        ])
        .await;
    let empty: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(empty["total"], 0);
    share(&empty["succeeded"], 0, 0, "empty succeeded");
    assert_eq!(empty["failed_by_reason"], serde_json::json!({}));
}
