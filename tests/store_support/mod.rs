//! Both store backends for tests (issue 17): the embedded SQLite file and a PostgreSQL
//! database of its own on a throwaway cluster (`clawback::store::pg::testing`).
#![allow(dead_code)]

use clawback::store::Store;
use clawback::store::pg::{PgConn, PgLocator, testing};

/// One store per backend, each with a way to reach its rows behind the store's back.
#[allow(clippy::large_enum_variant)] // a handful per test
pub enum Raw {
    Sqlite(std::path::PathBuf),
    Postgres(PgLocator),
}

impl Raw {
    /// Runs one SQL statement directly (tampering, as an attacker with database access would).
    pub fn exec(&self, sql: &str) {
        match self {
            Raw::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).expect("sqlite");
                c.execute_batch(sql).expect("raw sql");
            }
            Raw::Postgres(l) => {
                let c = PgConn::connect(l).expect("pg");
                c.batch(sql).expect("raw sql");
            }
        }
    }

    pub fn open(&self) -> Store {
        match self {
            Raw::Sqlite(p) => Store::open(p).expect("open sqlite"),
            Raw::Postgres(l) => Store::open_postgres(l, None).expect("open postgres"),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Raw::Sqlite(_) => "sqlite",
            Raw::Postgres(_) => "postgres",
        }
    }

    /// What a child process is told to open.
    pub fn env(&self) -> (&'static str, String) {
        match self {
            Raw::Sqlite(p) => ("STORE_SQLITE", p.display().to_string()),
            Raw::Postgres(l) => ("STORE_PG", l.to_string()),
        }
    }
}

/// In a child process: the store its parent named with [`Raw::env`].
pub fn open_from_env() -> Store {
    match std::env::var("STORE_SQLITE") {
        Ok(p) => Store::open(std::path::Path::new(&p)).expect("open sqlite"),
        Err(_) => {
            let url = std::env::var("STORE_PG").expect("STORE_SQLITE or STORE_PG");
            let loc = PgLocator::parse(&url, None).expect("locator");
            Store::open_postgres(&loc, None).expect("open postgres")
        }
    }
}

/// Runs the ignored test `test` of this test binary as a child process on `raw`'s store, with
/// `tag` in `child_env` and its standard output captured (read it with `wait_with_output`).
pub fn spawn_child(raw: &Raw, test: &str, child_env: &str, tag: &str) -> std::process::Child {
    let (key, value) = raw.env();
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", test, "--ignored", "--nocapture"])
        .env(child_env, tag)
        .env(key, value)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn child")
}

pub fn backends(dir: &tempfile::TempDir) -> Vec<Raw> {
    let mut all = vec![Raw::Sqlite(dir.path().join("clawback.sqlite3"))];
    // Without a PostgreSQL server (outside CI) the SQLite half still runs.
    all.extend(testing::fresh_database_or_skip().map(Raw::Postgres));
    all
}

/// The `n`th test audit record (fixed time, `counts.n = n`).
pub fn audit_record(n: u64) -> clawback::store::chain::AuditRecord {
    use chrono::TimeZone;
    clawback::store::chain::AuditRecord {
        at: chrono::Utc
            .timestamp_opt(1_700_000_000 + n as i64, 0)
            .single()
            .expect("time"),
        os_user: "tester".into(),
        operator: "tester".into(),
        role: clawback::model::Role::Admin,
        section: "test".into(),
        action: format!("step_{n}"),
        plan_digest: None,
        job_id: None,
        counts: std::collections::BTreeMap::from([("n".to_string(), n)]),
        detail: serde_json::Value::Null,
    }
}
