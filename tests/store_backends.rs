//! The store's areas on both backends (issue 17): the embedded SQLite file and a shared
//! PostgreSQL database (a throwaway cluster, see `clawback::store::pg::testing`). Each test runs
//! the same assertions on both.

use clawback::store::chain::AuditBreak;
use clawback::store::pg::{PgLocator, testing};
use clawback::store::{Store, StoreError};
use std::process::Command;

mod store_support;
use store_support::{audit_record as record, backends, spawn_child};

#[test]
fn the_audit_chain_is_the_same_and_catches_the_same_edits_on_both_backends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut heads = Vec::new();
    for raw in backends(&dir) {
        let name = raw.name();
        let mut store = raw.open();
        assert_eq!(store.audit_head().expect("head"), None, "{name}: empty log");
        assert_eq!(store.audit_verify().expect("verify"), Ok(0), "{name}");
        for n in 1..=5 {
            let e = store.audit_append(record(n)).expect("append");
            assert_eq!(e.seq, n, "{name}");
        }
        let head = store.audit_head().expect("head").expect("a head");
        assert_eq!(head.seq, 5, "{name}");
        assert_eq!(store.audit_verify().expect("verify"), Ok(5), "{name}");
        heads.push(head.clone());

        // An edited record is named by its seq.
        raw.exec("UPDATE audit SET record = replace(record, 'step_3', 'step_x') WHERE seq = 3");
        assert_eq!(
            store.audit_verify().expect("verify"),
            Err(AuditBreak::Edited { seq: 3 }),
            "{name}: an edit is found"
        );
        raw.exec("UPDATE audit SET record = replace(record, 'step_x', 'step_3') WHERE seq = 3");
        // Removal from the end is caught by the separately kept head.
        raw.exec("DELETE FROM audit WHERE seq = 5");
        assert_eq!(
            store.audit_verify().expect("verify"),
            Err(AuditBreak::Truncated {
                last: 4,
                head_seq: 5
            }),
            "{name}: truncation is found"
        );
        // And by a head recorded outside the store.
        assert!(
            matches!(
                store.audit_verify_heads(&[head]).expect("verify"),
                Err(AuditBreak::Anchor { seq: 5, .. })
            ),
            "{name}: the outside head names the lost entry"
        );
    }
    // The same records chain to the same hashes on both backends.
    assert!(
        heads.windows(2).all(|w| w[0] == w[1]),
        "one chain arithmetic for both backends: {heads:?}"
    );
}

const CHILD_ENV: &str = "CLAWBACK_TEST_AUDIT_CHILD";

/// Child process: appends `APPENDS` entries to the store named in its environment.
#[test]
#[ignore = "run as a child process by several_processes_appending_at_once_form_one_chain"]
fn audit_append_child() {
    let Ok(tag) = std::env::var(CHILD_ENV) else {
        return;
    };
    let appends: u64 = std::env::var("APPENDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut store = if let Ok(p) = std::env::var("STORE_SQLITE") {
        Store::open(std::path::Path::new(&p)).unwrap_or_else(|e| panic!("open sqlite: {e}"))
    } else {
        let url = std::env::var("STORE_PG").expect("STORE_PG");
        let loc = PgLocator::parse(&url, None).expect("locator");
        Store::open_postgres(&loc, None).expect("open postgres")
    };
    for n in 1..=appends {
        let mut r = record(n);
        r.operator = tag.clone();
        store.audit_append(r).expect("append");
    }
}

#[test]
fn several_processes_appending_at_once_form_one_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    const PROCESSES: u64 = 4;
    const APPENDS: u64 = 25;
    for raw in backends(&dir) {
        let name = raw.name();
        let (key, value) = raw.env();
        // Each child opens the store itself (on PostgreSQL the first opens migrate it, at once).
        let children: Vec<_> = (0..PROCESSES)
            .map(|i| {
                Command::new(&exe)
                    .args(["--exact", "audit_append_child", "--ignored", "--nocapture"])
                    .env(CHILD_ENV, format!("writer-{i}"))
                    .env("APPENDS", APPENDS.to_string())
                    .env(key, &value)
                    .spawn()
                    .expect("spawn child")
            })
            .collect();
        for mut c in children {
            let status = c.wait().expect("child");
            assert!(status.success(), "{name}: a child failed: {status}");
        }
        let store = raw.open();
        let total = PROCESSES * APPENDS;
        assert_eq!(
            store.audit_verify().expect("verify"),
            Ok(total),
            "{name}: every append of every process in one intact chain"
        );
        let entries = store.audit_entries().expect("entries").expect("readable");
        for i in 0..PROCESSES {
            let mine: Vec<u64> = entries
                .iter()
                .filter(|e| e.record.operator == format!("writer-{i}"))
                .map(|e| e.record.counts["n"])
                .collect();
            assert_eq!(
                mine,
                (1..=APPENDS).collect::<Vec<_>>(),
                "{name}: writer {i}'s entries, all there and in its own order"
            );
        }
        assert_eq!(
            store.audit_head().expect("head").map(|h| h.seq),
            Some(total),
            "{name}"
        );
    }
}

#[test]
fn what_postgres_does_not_hold_yet_fails_clearly_and_touches_nothing() {
    let Some(loc) = testing::fresh_database_or_skip() else {
        return;
    };
    let store = Store::open_postgres(&loc, None).expect("open");
    // SQLite's page statistics (`dbstat`) have no PostgreSQL counterpart here.
    let err = store
        .space_by_table()
        .expect_err("page statistics are SQLite's");
    assert!(matches!(err, StoreError::NotOnPostgres { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("store operation"),
        "names what is missing: {text}"
    );
    assert!(text.contains("SQLite"), "says what to use instead: {text}");
}

#[test]
fn a_connection_the_server_closed_is_opened_again_at_the_next_call() {
    let Some(loc) = testing::fresh_database_or_skip() else {
        return;
    };
    let conn = clawback::store::pg::PgConn::connect(&loc).expect("connect");
    let pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pid")
        .get(0);
    let admin = clawback::store::pg::PgConn::connect(&loc).expect("connect");
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .expect("terminate");
    // The call that finds the connection gone may fail (the server closed it under us); a
    // later one runs on a new connection.
    let mut new_pid = None;
    for _ in 0..100 {
        if let Ok(row) = conn.query_one("SELECT pg_backend_pid()", &[]) {
            let p: i32 = row.get(0);
            if p != pid {
                new_pid = Some(p);
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(new_pid.is_some(), "the connection was opened again");
}

const SEAL_ENV: &str = "CLAWBACK_TEST_SEAL_CHILD";

/// Child process: tries to seal the plan `racing` with two entries; prints `sealed` or `refused`.
#[test]
#[ignore = "run as a child process by a_plan_is_sealed_once_with_its_entries_in_one_transaction"]
fn seal_plan_child() {
    let Ok(tag) = std::env::var(SEAL_ENV) else {
        return;
    };
    let mut store = store_support::open_from_env();
    let records = [1, 2].map(|n| {
        let mut r = record(n);
        r.operator = tag.clone();
        r
    });
    match store.seal_plan_audited(
        "racing",
        "planning",
        &format!("sha256:{tag}"),
        "{}",
        records.to_vec(),
    ) {
        Ok(entries) => {
            assert_eq!(entries.len(), 2);
            println!("sealed");
        }
        Err(StoreError::PlanSealed { .. }) => println!("refused"),
        Err(e) => panic!("{tag}: {e}"),
    }
}

/// A plan made while its job ran is stored as complete together with its audit entries, in
/// one transaction: processes racing to seal the same plan — one seals it and appends its
/// entries, next to each other; every other is refused and appends nothing; the chain is
/// intact.
#[test]
fn a_plan_is_sealed_once_with_its_entries_in_one_transaction() {
    const PROCESSES: usize = 5;
    let dir = tempfile::tempdir().expect("tempdir");
    for raw in backends(&dir) {
        let name = raw.name();
        {
            let mut store = raw.open();
            store.audit_append(record(0)).expect("an entry before");
            store
                .insert_plan("racing", "planning", chrono::Utc::now(), "{}")
                .expect("plan");
        }
        let children: Vec<_> = (0..PROCESSES)
            .map(|i| spawn_child(&raw, "seal_plan_child", SEAL_ENV, &format!("sealer-{i}")))
            .collect();
        let mut said = Vec::new();
        for c in children {
            let out = c.wait_with_output().expect("child");
            assert!(out.status.success(), "{name}: a child failed: {out:?}");
            said.push(String::from_utf8_lossy(&out.stdout).to_string());
        }
        let sealed = said.iter().filter(|s| s.contains("sealed")).count();
        let refused = said.iter().filter(|s| s.contains("refused")).count();
        assert_eq!((sealed, refused), (1, PROCESSES - 1), "{name}: {said:?}");
        let store = raw.open();
        let entries = store.audit_entries().expect("entries").expect("readable");
        assert_eq!(
            entries.len(),
            3,
            "{name}: the entry before and the winner's two"
        );
        let winner = &entries[1].record.operator;
        assert_eq!(
            &entries[2].record.operator, winner,
            "{name}: one transaction"
        );
        assert_eq!(
            store.plan_digest("racing").expect("digest").as_deref(),
            Some(format!("sha256:{winner}").as_str()),
            "{name}: the plan is the winner's"
        );
        assert_eq!(store.audit_verify().expect("verify"), Ok(3), "{name}");
        // Sealed already: refused, and nothing appended.
        let mut store = store;
        assert!(matches!(
            store.seal_plan_audited("racing", "planning", "sha256:late", "{}", vec![record(9)]),
            Err(StoreError::PlanSealed { .. })
        ));
        assert_eq!(store.audit_verify().expect("verify"), Ok(3), "{name}");
    }
}
