//! The whole pipeline on a shared PostgreSQL store (issue 17): two clawback processes with data
//! directories of their own (two hosts, one store) retract the demo campaign at once against the
//! lab; every copy receives exactly one API action (the lab's own record), both jobs are in the
//! one store, and the one audit chain verifies.

use clawback::lab::LabOptions;
use clawback::lab::demo::CAMPAIGN_MESSAGE_ID;
use clawback::store::Store;
use clawback::store::pg::testing;
use std::collections::BTreeSet;
use std::time::Duration;

mod lab_support;
use lab_support::{assert_acted_on_once, demo_lab, expected_copies, lab_actions_since};

async fn clawback(
    config: &std::path::Path,
    data: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    let (config, data) = (config.to_path_buf(), data.to_path_buf());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_clawback"))
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(&args)
            .env_remove("CLAWBACK_CONFIG")
            .env_remove("CLAWBACK_STORE_URL")
            .output()
            .expect("run clawback")
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_on_one_postgres_store_retract_each_copy_once_and_share_one_audit_chain() {
    let Some(db) = testing::fresh_database_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LabOptions {
        latency: Duration::from_millis(40),
        ..LabOptions::default()
    };
    let (server, _config, _) = demo_lab(options, dir.path()).await;
    let config = dir.path().join("lab.toml");
    // Every process of this test uses the shared store, whatever its data directory.
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!("\n[store]\nurl = {:?}\n", db.to_string()));
    std::fs::write(&config, text).expect("config");
    let (host_a, host_b) = (dir.path().join("host-a"), dir.path().join("host-b"));

    let sync = clawback(&config, &host_a, &["trace", "sync"]).await;
    assert!(
        sync.status.success(),
        "{}",
        String::from_utf8_lossy(&sync.stderr)
    );
    // The other host sees the trace the first one synced.
    let found = clawback(
        &config,
        &host_b,
        &["search", "--json", &format!("msgid:{CAMPAIGN_MESSAGE_ID}")],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&found.stdout).contains("pwexpiry"),
        "host B finds the campaign host A synced: {}{}",
        String::from_utf8_lossy(&found.stdout),
        String::from_utf8_lossy(&found.stderr)
    );

    let before = server.lab.state().actions.len();
    let args = [
        "retract",
        "--message-id",
        CAMPAIGN_MESSAGE_ID,
        "--action",
        "junk",
        "--yes",
    ];
    let (a, b) = tokio::join!(
        clawback(&config, &host_a, &args),
        clawback(&config, &host_b, &args)
    );
    for o in [&a, &b] {
        assert!(
            [0, 3].contains(&o.status.code().unwrap_or(-1)),
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let want = expected_copies(
        &clawback::lab::scenario::demo(1),
        &BTreeSet::from([CAMPAIGN_MESSAGE_ID.to_string()]),
    );
    assert!(!want.is_empty());
    assert_acted_on_once(
        &lab_actions_since(&server, before),
        &want,
        "two hosts at once",
    );

    // One store: both jobs, every item settled, one intact chain.
    let store = Store::open_postgres(&db, None).expect("open");
    let jobs = store.jobs(10).expect("jobs");
    assert_eq!(jobs.len(), 2, "both hosts' jobs are in the one store");
    let mut succeeded = 0;
    for j in &jobs {
        let c = store.item_counts(j.id).expect("counts");
        assert_eq!(c.pending + c.in_flight, 0, "job {} settled", j.id);
        succeeded += c.succeeded;
    }
    assert_eq!(
        succeeded as usize,
        want.len(),
        "each copy succeeded in exactly one job"
    );
    let verify = clawback(&config, &host_b, &["audit", "verify"]).await;
    assert!(
        verify.status.success() && String::from_utf8_lossy(&verify.stdout).contains("intact"),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}
