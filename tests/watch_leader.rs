//! One watcher at a time (issue 17, Build 3), with the real binary against the lab: two
//! `clawback watch` processes on one store — one SQLite data directory, or one PostgreSQL
//! database with a data directory per process (two hosts); one leads, the other follows and acts on
//! nothing; the demo's malicious delivery is retracted once (the lab's action log); the leader
//! is killed (SIGKILL) and the follower takes the lead and retracts a new malicious delivery,
//! each copy once. Times are printed, never asserted.

#![allow(clippy::unwrap_used)]

mod lab_support;
use lab_support::{CopyKey, assert_acted_on_once as assert_exactly_once, expected_copies};

use clawback::config::Config;
use clawback::lab::demo::{self, CONTOSO, DEMO_CONTOSO_REPORT_MAILBOX, MALICIOUS_MESSAGE_ID};
use clawback::lab::{LabOptions, LabServer};
use clawback::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn actions(server: &LabServer) -> BTreeMap<CopyKey, usize> {
    lab_support::lab_actions_since(server, 0)
}

fn of_message(all: &BTreeMap<CopyKey, usize>, mid: &str) -> BTreeMap<CopyKey, usize> {
    all.iter()
        .filter(|(k, _)| k.2 == mid)
        .map(|(k, n)| (k.clone(), *n))
        .collect()
}

fn clawback(config: &Path, data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clawback"));
    c.arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env_remove("CLAWBACK_CONFIG")
        .env_remove("CLAWBACK_DATA_DIR")
        .env_remove("CLAWBACK_STORE_URL");
    c
}

/// The watchers' interval: long enough that a loaded test machine does not stall a leader past
/// its lease (two thirds of it), short enough for a quick test.
const INTERVAL_MS: i64 = 3_000;

fn watch(config: &Path, data: &Path) -> Child {
    clawback(config, data)
        .args(["watch", "--interval", &format!("{}s", INTERVAL_MS / 1_000)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits (bounded: 180 s at 20 ms) until `ready` holds; else fails with `context()` (the
/// watchers' logs).
fn wait_until(
    what: &str,
    mut ready: impl FnMut() -> bool,
    context: impl Fn() -> String,
) -> Duration {
    let started = Instant::now();
    for _ in 0..9_000 {
        if ready() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("never: {what}\n{}", context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_retract_once_and_the_follower_takes_over_from_a_killed_leader() {
    two_watchers(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_on_one_postgres_store_retract_once_and_hand_over() {
    let Some(db) = clawback::store::pg::testing::fresh_database_or_skip() else {
        return;
    };
    two_watchers(Some(db)).await;
}

/// Two watchers on one SQLite data directory (`postgres` None), or on one PostgreSQL store
/// with a data directory each.
async fn two_watchers(postgres: Option<clawback::store::pg::PgLocator>) {
    let scenario = demo::build(7);
    let server = LabServer::start(
        &scenario,
        LabOptions {
            latency: Duration::from_millis(5),
            ..LabOptions::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("lab.toml");
    let _config: Config = server.write_config(&config_path).unwrap();
    let data: PathBuf = dir.path().join("data");
    // On PostgreSQL the second watcher is another host: a data directory of its own.
    let data_b: PathBuf = match &postgres {
        Some(db) => {
            let mut text = std::fs::read_to_string(&config_path).unwrap();
            text.push_str(&format!("\n[store]\nurl = {:?}\n", db.to_string()));
            std::fs::write(&config_path, text).unwrap();
            dir.path().join("data-b")
        }
        None => data.clone(),
    };
    let out = clawback(&config_path, &data)
        .args(["policy", "set", "malicious", "junk"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // Two watchers at once.
    let mut kids = [watch(&config_path, &data), watch(&config_path, &data_b)];
    let pids: Vec<u32> = kids.iter().map(Child::id).collect();
    let want = expected_copies(
        &scenario,
        &BTreeSet::from([MALICIOUS_MESSAGE_ID.to_string()]),
    );
    let log = || {
        let mut text = std::fs::read_to_string(data.join("watch.log")).unwrap_or_default();
        if data_b != data {
            text.push_str(&std::fs::read_to_string(data_b.join("watch.log")).unwrap_or_default());
        }
        text
    };
    let took = wait_until(
        "the demo lure retracted and a watcher following",
        || {
            of_message(&actions(&server), MALICIOUS_MESSAGE_ID).len() >= want.len()
                && log().contains("cycle: following the leading watch pid")
        },
        log,
    );
    eprintln!(
        "MEASURED two watchers: demo lure ({} copies) retracted after {:.2}s",
        want.len(),
        took.as_secs_f64()
    );
    // A few more cycles of both: still once.
    std::thread::sleep(Duration::from_secs(3));
    assert_exactly_once(
        &actions(&server),
        &want,
        "two watchers, the demo's malicious delivery",
    );
    let store = match &postgres {
        Some(db) => Store::open_postgres(db, None).unwrap(),
        None => Store::open_in_dir(&data).unwrap(),
    };
    let leader = store.watch_leader().unwrap().expect("a leader");
    let l = pids
        .iter()
        .position(|p| *p == leader.pid)
        .expect("one of the two leads");
    let f = 1 - l;
    let text = log();
    assert!(
        text.contains(&format!("following the leading watch pid {}", pids[l])),
        "the follower says whom it follows: {text}"
    );
    assert!(
        !text.contains(&format!("following the leading watch pid {}", pids[f])),
        "nobody followed the follower: {text}"
    );

    // The lead is held by a lease shorter than the interval, so a dead leader is
    // replaced within one interval; read by the store's clock, not timed here.
    let lease_left = store
        .watch_leader()
        .unwrap()
        .expect("a leader")
        .expires_in_ms;
    assert!(
        (1..INTERVAL_MS).contains(&lease_left),
        "the leader's lease outlasts one interval: {lease_left} ms left"
    );

    // SIGKILL the leader, then mail arrives: the follower leads and retracts it, once.
    kids[l].kill().unwrap();
    kids[l].wait().unwrap();
    let killed = Instant::now();
    let mailboxes: Vec<String> = scenario
        .tenants
        .iter()
        .find(|t| t.name == CONTOSO)
        .unwrap()
        .users
        .iter()
        .filter(|u| {
            u.mailbox
                && u.address.ends_with("@contoso.com")
                && u.address != DEMO_CONTOSO_REPORT_MAILBOX
                && u.address != demo::DEMO_HOLD_MAILBOX
        })
        .map(|u| u.address.to_ascii_lowercase())
        .take(10)
        .collect();
    let mid = "<watch-leader-0001@evil-payroll.example>";
    let http = reqwest::Client::new();
    lab_support::lab_deliver_malicious(&http, &server.base_url(), CONTOSO, mid, &mailboxes).await;
    wait_until(
        "the follower leads",
        || {
            store
                .watch_leader()
                .unwrap()
                .is_some_and(|l| l.pid == pids[f])
        },
        log,
    );
    let handover = killed.elapsed();
    wait_until(
        "the new delivery retracted",
        || of_message(&actions(&server), mid).len() >= mailboxes.len(),
        log,
    );
    eprintln!(
        "MEASURED leader killed -> follower leads {:.2}s (interval {INTERVAL_MS} ms, {lease_left} ms left on the lease before the kill), -> new delivery retracted {:.2}s",
        handover.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    let want_new: BTreeSet<CopyKey> = mailboxes
        .iter()
        .map(|m| (CONTOSO.to_string(), m.clone(), mid.to_string()))
        .collect();
    let all = actions(&server);
    assert_exactly_once(&of_message(&all, mid), &want_new, "after the handover");
    assert_exactly_once(
        &of_message(&all, MALICIOUS_MESSAGE_ID),
        &want,
        "the demo lure, still once",
    );
    let _ = kids[f].kill();
    let _ = kids[f].wait();
}
