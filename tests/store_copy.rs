//! `clawback store copy` (issue 17, "move in"): a SQLite store with a large trace, a job and an
//! audit chain moves into a new PostgreSQL store; counts and the audit head are the same, read
//! from the target's own rows; a target holding data and a password on the command line are
//! refused.

use chrono::Utc;
use clawback::model::{Folder, RetractAction, Role, Trigger};
use clawback::store::chain::AuditRecord;
use clawback::store::jobs::{ItemRow, JobKind, NewJob};
use clawback::store::pg::{PgConn, testing};
use clawback::store::{Store, TraceRecord};
use clawback::trace::{Recipient, RecipientKind};
use std::collections::BTreeMap;
use std::process::Command;

mod store_support;

const TRACE_RECORDS: usize = 100_000;

fn clawback(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_clawback"))
        .args(args)
        .env_remove("CLAWBACK_STORE_URL")
        .env_remove("PGPASSWORD")
        .output()
        .expect("run clawback")
}

/// A SQLite store with `TRACE_RECORDS` trace records, a job with items, and audit entries.
fn source_store(dir: &std::path::Path) -> Store {
    let mut s = Store::open_in_dir(dir).expect("open");
    let mut batch = Vec::with_capacity(5_000);
    for i in 0..TRACE_RECORDS {
        batch.push(TraceRecord {
            tenant: "contoso".into(),
            message_id: format!("<m{i}@example.com>"),
            sender: format!("s{}@example.net", i % 97),
            subject: format!("subject {} of the copy test", i % 13),
            received: 1_700_000_000 + i as i64,
            size: 1000,
            recipients: vec![Recipient {
                address: format!("u{}@contoso.com", i % 1000),
                kind: RecipientKind::To,
            }],
            ..TraceRecord::default()
        });
        if batch.len() == 5_000 {
            s.upsert_trace(&batch).expect("upsert");
            batch.clear();
        }
    }
    let job = NewJob {
        kind: JobKind::Retract,
        plan_id: None,
        parent_job: None,
        trigger: Trigger::Manual,
        action: RetractAction::Junk,
        operator: "tester".into(),
        role: Role::Admin,
        reason: "copy test".into(),
        dry_run: false,
        detected_at: None,
    };
    let items: Vec<ItemRow> = (0..50)
        .map(|i| {
            ItemRow::pending(
                "contoso",
                &format!("u{i}@contoso.com"),
                "<m1@example.com>",
                Folder::Inbox,
                RetractAction::Junk,
                RetractAction::Junk,
            )
        })
        .collect();
    s.create_job(&job, &items).expect("job");
    for n in 1..=7u64 {
        let mut r = store_support::audit_record(n);
        r.detail = serde_json::json!({"text": "tab\there, newline\nthere, backslash \\ end"});
        s.audit_append(r).expect("audit");
    }
    s
}

fn count(pg: &PgConn, table: &str) -> i64 {
    pg.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .expect("count")
        .get(0)
}

#[test]
fn store_copy_moves_a_sqlite_store_into_postgres_with_its_audit_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = source_store(dir.path());
    let head = source.audit_head().expect("head").expect("a head");
    let sqlite = rusqlite::Connection::open(Store::path_in(dir.path())).expect("sqlite");
    let mut tables: Vec<(String, i64)> = Vec::new();
    {
        let mut stmt = sqlite
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .expect("tables");
        let names: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .expect("names")
            .collect::<Result<_, _>>()
            .expect("names");
        for n in names {
            let c: i64 = sqlite
                .query_row(&format!("SELECT count(*) FROM \"{n}\""), [], |r| r.get(0))
                .expect("count");
            tables.push((n, c));
        }
    }
    drop(source);

    let Some(target) = testing::fresh_database_or_skip() else {
        return;
    };
    let from = format!("sqlite:{}", dir.path().display());
    let out = clawback(&[
        "store",
        "copy",
        "--from",
        &from,
        "--to",
        &target.to_string(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "store copy failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&head.to_string()),
        "prints the audit head: {stdout}"
    );

    // The target's own rows: every table PostgreSQL has holds what SQLite held.
    let pg = PgConn::connect(&target).expect("connect");
    let pg_tables: Vec<String> = pg
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
            &[],
        )
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut compared = 0;
    for (t, n) in &tables {
        if pg_tables.contains(t) {
            assert_eq!(count(&pg, t), *n, "rows of {t}");
            compared += 1;
        } else {
            assert!(
                stdout.contains(t.as_str()),
                "a table not copied is named in the output: {t}\n{stdout}"
            );
        }
    }
    assert!(compared >= 2, "at least the audit tables were compared");
    // The chain, verified through a store opened on the target.
    let store = Store::open_postgres(&target, None).expect("open target");
    // Search finds on the target what it found on the source.
    let source = Store::open_in_dir(dir.path()).expect("open source");
    for q in [
        "subject:\"subject 7 of the copy\"",
        "from:s5@example.net",
        "to:u42@contoso.com",
        "copy test 11",
    ] {
        let query = clawback::trace::query::parse(q).expect("query");
        let ids = |s: &Store| -> Vec<String> {
            s.search_at(&query, 100_000, 0, 1_800_000_000)
                .expect("search")
                .into_iter()
                .map(|r| r.message_id)
                .collect()
        };
        let want = ids(&source);
        assert!(!want.is_empty(), "{q} finds something on the source");
        assert_eq!(ids(&store), want, "{q}: the same answer after the move");
    }
    drop(source);
    assert_eq!(store.audit_head().expect("head"), Some(head.clone()));
    assert_eq!(store.audit_verify().expect("verify"), Ok(7));
    // New entries continue the copied chain.
    drop(store);
    let mut store = Store::open_postgres(&target, None).expect("open target");
    let e = store
        .audit_append(AuditRecord {
            at: Utc::now(),
            os_user: "tester".into(),
            operator: "tester".into(),
            role: Role::Admin,
            section: "test".into(),
            action: "after_copy".into(),
            plan_digest: None,
            job_id: None,
            counts: BTreeMap::new(),
            detail: serde_json::Value::Null,
        })
        .expect("append after copy");
    assert_eq!(e.seq, 8);
    assert_eq!(e.prev_hash, head.hash);
    assert_eq!(store.audit_verify().expect("verify"), Ok(8));

    // A second copy into the same (now non-empty) store is refused and changes nothing.
    let again = clawback(&[
        "store",
        "copy",
        "--from",
        &from,
        "--to",
        &target.to_string(),
    ]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already holds data"), "{err}");
    assert_eq!(count(&pg, "audit"), 8);
}

#[test]
fn store_copy_refuses_a_password_on_the_command_line() {
    let out = clawback(&[
        "store",
        "copy",
        "--from",
        "sqlite:/nonexistent",
        "--to",
        "postgres://soc:hunter2@db.example/clawback",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--password-file"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password is never echoed: {err}"
    );
}
