//! Issue 11, "no panics on input or pipes": one hostile input per panic or hang that was found.
//!
//! - a reader that goes away (`clawback audit export | head`): every bulk printer of the real
//!   binary ends quietly with its own exit code, never a panic (exit 101);
//! - a full disk under `> file` is reported once and exits 1;
//! - a query of 12,000 nested parentheses is a usage error pointing at the first one too deep
//!   (the parser's side is in tests/trace_query.rs).

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

use clawback::model::{Folder, RetractAction, Role, Trigger};
use clawback::store::Store;
use clawback::store::chain::AuditRecord;
use clawback::store::jobs::{ItemRow, JobKind, NewJob};
use clawback::trace::TraceRecord;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Every listing below prints well over a pipe's buffer (64 KiB on Linux), so a write after the
/// reader has gone is certain to fail with EPIPE however the two processes are scheduled.
const BULK_BYTES: usize = 1 << 20;

/// A config (no tenants) and a data directory holding bulk output for every listing: audit
/// entries, a job with many items, many jobs, and trace records.
struct Bulk {
    dir: tempfile::TempDir,
}

impl Bulk {
    fn new() -> Bulk {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "[operator]\nname = \"pipe\"\nrole = \"admin\"\n").unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut store = Store::open_in_dir(&dir.path().join("data")).unwrap();
        // Audit: a few entries with a long job id (`audit list` shows it, `export` too).
        let long_job = "j".repeat(64 * 1024);
        for _ in 0..(BULK_BYTES / long_job.len() + 1) {
            store
                .audit_append(AuditRecord {
                    at: chrono::Utc::now(),
                    os_user: "pipe".into(),
                    operator: "pipe".into(),
                    role: Role::Admin,
                    section: "job".into(),
                    action: "job_finished".into(),
                    plan_digest: None,
                    job_id: Some(long_job.clone()),
                    counts: Default::default(),
                    detail: serde_json::Value::Null,
                })
                .unwrap();
        }
        // Job 1: items with long Message-IDs; then enough small jobs for `jobs list`.
        let job = |reason: &str| NewJob {
            kind: JobKind::Retract,
            plan_id: None,
            parent_job: None,
            trigger: Trigger::Manual,
            action: RetractAction::Junk,
            operator: "pipe".into(),
            role: Role::Admin,
            reason: reason.into(),
            dry_run: false,
            detected_at: None,
        };
        let long_id = format!("<{}@bulk.test>", "m".repeat(4096));
        let items: Vec<ItemRow> = (0..BULK_BYTES / long_id.len() + 1)
            .map(|n| {
                ItemRow::pending(
                    "contoso",
                    &format!("user{n}@contoso.test"),
                    &long_id,
                    Folder::Inbox,
                    RetractAction::Junk,
                    RetractAction::Junk,
                )
            })
            .collect();
        assert_eq!(store.create_job(&job("bulk items"), &items).unwrap(), 1);
        // A `jobs list` row is about 100 bytes.
        for _ in 0..(BULK_BYTES / 4 / 100) {
            store.create_job(&job("bulk jobs"), &[]).unwrap();
        }
        // Trace: a table row is about 100 bytes (the subject cut to its column).
        let records: Vec<TraceRecord> = (0..BULK_BYTES / 4 / 100)
            .map(|n| TraceRecord {
                tenant: "contoso".into(),
                message_id: format!("<bulk{n}@bulk.test>"),
                sender: format!("a{n}@evil{n}.test"),
                subject: format!("{n} {}", "s".repeat(200)),
                received: 1_795_132_800 + n as i64,
                ..TraceRecord::default()
            })
            .collect();
        store.upsert_trace(&records).unwrap();
        Bulk { dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_clawback"));
        c.arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(args)
            .env_remove("CLAWBACK_CONFIG")
            .env_remove("CLAWBACK_DATA_DIR")
            .stdin(Stdio::null());
        c
    }

    /// Runs `args` with stdout a pipe that is closed after `lines` lines were read (`| head`).
    /// Returns (exit code, stderr).
    fn run_closing_after(&self, args: &[&str], lines: usize) -> (Option<i32>, String) {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut read = 0;
        let mut line = String::new();
        while read < lines {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "{args:?}: no output"
            );
            read += 1;
        }
        drop(reader);
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        (status.code(), stderr)
    }
}

/// Every bulk printer of the CLI, with its reader gone before it starts and after one line.
#[test]
fn a_closed_stdout_ends_every_listing_quietly() {
    let bulk = Bulk::new();
    let listings: &[&[&str]] = &[
        &["audit", "export"],
        &["audit", "list"],
        &["audit"],
        &["jobs", "show", "1"],
        &["jobs", "list", "--limit", "100000"],
        &["search", "", "--limit", "100000"],
        &["search", "", "--limit", "100000", "--json"],
        &["search", "", "--limit", "100000", "--csv"],
        &["search", "", "--limit", "100000", "--group", "--json"],
    ];
    for args in listings {
        // The premise: more than a pipe holds, so the writer does meet the closed pipe.
        let full = bulk.command(args).output().unwrap();
        assert_eq!(full.status.code(), Some(0), "{args:?}");
        assert!(
            full.stdout.len() > 256 * 1024,
            "{args:?}: {}",
            full.stdout.len()
        );
        for lines in [0, 1] {
            let (code, stderr) = bulk.run_closing_after(args, lines);
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
            assert_eq!(code, Some(0), "{args:?} after {lines} lines: {stderr}");
            assert_eq!(stderr, "", "{args:?} after {lines} lines: quiet");
        }
    }
}

/// Not a closed pipe but a failed write (a full disk): said once, and the exit code says it.
#[test]
fn a_full_disk_under_stdout_is_reported_and_exits_1() {
    let full = Path::new("/dev/full");
    if !full.exists() {
        return;
    }
    let bulk = Bulk::new();
    let out = bulk
        .command(&["audit", "export"])
        .stdout(std::fs::File::create(full).unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        vec!["clawback: cannot write to standard output: No space left on device (os error 28)"],
    );
}

#[test]
fn a_deeply_nested_query_is_a_usage_error_not_a_stack_overflow() {
    let bulk = Bulk::new();
    let q = format!("{}a{}", "(".repeat(12_000), ")".repeat(12_000));
    let out = bulk.command(&["search", &q]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        &stderr[..stderr.len().min(300)]
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[0],
        "error: query:1:65: \"(\" nested more than 64 deep (parentheses and \"-\" count); write the query flatter"
    );
    // The caret sits under column 65.
    assert_eq!(lines[2], format!("  {}^", " ".repeat(64)));
}
