//! Issue 11, "no panics on input or pipes": one hostile input per panic or hang that was found.
//!
//! - a reader that goes away (`clawback audit export | head`, also `2>&1 | head`): every bulk
//!   printer of the real binary ends quietly with its own exit code, never a panic (exit 101);
//! - a full disk under `> file` is reported once and exits 1;
//! - a query of 12,000 nested parentheses is a usage error pointing at the first one too deep
//!   (the parser's side is in tests/trace_query.rs);
//! - every numeric setting outside its range is refused at load with file, line, key and range;
//!   limits set in code to the largest (or smallest) values still retract, clamped; a huge
//!   `lab scenario` size is a usage error;
//! - a References header of 200,000 ids is deduplicated with linear work (counted, not timed:
//!   `cargo bench --bench trace -- --references 200000` gives the time);
//! - so are 100,000 recipients in one To header (the same quadratic dedupe);
//! - NUL bytes in the first 4 KB of an EML: `trace ingest` indexes it exactly as `trace sync`
//!   indexes the same message served by the lab.

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

mod lab_support;
use clawback::config::{Config, LimitConfig};
use clawback::lab::demo::CAMPAIGN_MESSAGE_ID;
use clawback::lab::generate::{GenerateKind, GenerateOptions, generate};
use clawback::lab::scenario::{ScenarioCopy, ScenarioMessage};
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{Folder, RetractAction, Role, Trigger};
use clawback::provider::{BulkItem, ProgressEvent, ProviderClient};
use clawback::store::Store;
use clawback::store::chain::AuditRecord;
use clawback::store::jobs::{ItemRow, JobKind, NewJob};
use clawback::trace::ingest::{IngestOptions, ingest_paths, parse_message};
use clawback::trace::sync::{SyncOptions, sync};
use clawback::trace::{TraceRecord, message_id_list, unique_in_order};
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

/// `2>&1 | head`: stdout and stderr are one pipe, closed here before the command even starts.
/// Messages, progress and errors on stderr are dropped quietly too; the exit code is the
/// command's own.
#[test]
fn a_closed_pipe_on_stdout_and_stderr_is_quiet_too() {
    let bulk = Bulk::new();
    let eml = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eml");
    let eml = eml.to_str().unwrap();
    let cases: &[(&[&str], i32)] = &[
        (&["trace", "ingest", eml], 0),       // rejections on stderr
        (&["search", "", "--limit", "1"], 0), // "showing 1–1 of N" on stderr
        (&["search", "nothing-matches-this"], 0),
        (&["search", "((("], 2),
        (&["jobs", "show", "99999999"], 2),
        (&["audit", "export"], 0),
    ];
    for (args, want) in cases {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let status = bulk
            .command(args)
            .stdout(writer.try_clone().unwrap())
            .stderr(writer)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(*want), "{args:?}");
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

/// A lab config with one Microsoft tenant; `limits` and `automation` are appended as given.
const CONFIG: &str = r#"[operator]
role = "admin"

[[tenant]]
name = "contoso"
kind = "microsoft365"
tenant_id = "contoso.onmicrosoft.com"
client_id = "app"
client_secret = "inline"
endpoints = { login = "http://127.0.0.1:9", graph = "http://127.0.0.1:9" }
"#;

#[test]
fn numeric_settings_out_of_range_name_file_line_key_and_range() {
    let huge = "4611686018427387904"; // 2^62: a semaphore of that size panicked
    let cases: Vec<(String, String)> = [
        ("limits", "max_in_flight", "1 to 10000"),
        ("limits", "per_mailbox", "1 to 100"),
        ("limits", "gmail_units_per_second", "1 to 100000"),
        ("limits", "max_attempts", "1 to 100"),
        ("automation", "reporters_threshold", "1 to 10000"),
        ("automation", "interval_secs", "1 to 86400"),
    ]
    .iter()
    .flat_map(|(table, key, range)| {
        [huge, "0", "-1"].map(|v| {
            let header = if *table == "limits" {
                "[tenant.limits]"
            } else {
                "[automation]"
            };
            (
                format!("{CONFIG}\n{header}\n{key} = {v}\n"),
                format!("c.toml:13: {table}.{key} must be from {range}, got {v}"),
            )
        })
    })
    .collect();
    for (text, want) in &cases {
        let e = Config::parse(text, Path::new("c.toml")).unwrap_err();
        assert_eq!(&e.to_string(), want);
    }
    // In range: taken as written (the bounds themselves included).
    let text = format!(
        "{CONFIG}\n[tenant.limits]\nmax_in_flight = 10000\nper_mailbox = 1\nmax_attempts = 100\n[automation]\ninterval_secs = 86400\n"
    );
    let c = Config::parse(&text, Path::new("c.toml")).unwrap();
    let l = &c.tenants[0].limits;
    assert_eq!(
        (l.max_in_flight, l.per_mailbox, l.max_attempts),
        (10_000, 1, 100)
    );
    assert_eq!(c.automation.interval_secs, 86_400);

    // The real binary: one line, exit 2.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.toml");
    std::fs::write(
        &path,
        format!("{CONFIG}\n[tenant.limits]\nmax_in_flight = {huge}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clawback"))
        .arg("--config")
        .arg(&path)
        .arg("doctor")
        .env_remove("CLAWBACK_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [format!(
            "clawback: {}:13: limits.max_in_flight must be from 1 to 10000, got {huge}",
            path.display()
        )]
    );
}

/// `clawback lab scenario` with a huge size panicked allocating it; now it is a usage error.
#[test]
fn a_huge_generated_scenario_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    for (option, value) in [
        ("--mailboxes", "4611686018427387904"),
        ("--background-messages", "18446744073709551615"),
        ("--mailboxes", "1000001"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_clawback"))
            .args(["lab", "scenario", option, value, "--out"])
            .arg(dir.path().join("s.json"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(
            stderr,
            format!(
                "clawback lab scenario: {option} {value} is more than 1000000, the most a generated scenario holds\n"
            )
        );
    }
}

/// Limits set in code (no file, so no load check) at the extremes of their types: the clients
/// clamp them, and a bulk retraction still moves every copy exactly once (checked in the lab).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_set_in_code_to_extremes_are_clamped_not_a_panic() {
    let extremes = [
        LimitConfig {
            max_in_flight: usize::MAX,
            per_mailbox: usize::MAX,
            gmail_units_per_second: u32::MAX,
            gmail_project_units_per_minute: u32::MAX,
            gmail_project_units_per_day: u64::MAX,
            max_attempts: u32::MAX,
        },
        // (Not gmail_units_per_second = 0: clamped to 1 unit a second, it is merely slow.)
        LimitConfig {
            max_in_flight: 0,
            per_mailbox: 0,
            max_attempts: 0,
            ..LimitConfig::default()
        },
    ];
    for kind in [GenerateKind::Microsoft365, GenerateKind::GoogleWorkspace] {
        for limits in &extremes {
            let scenario = generate(&GenerateOptions {
                mailboxes: 20,
                campaign_recipients: 20,
                seed: 5,
                kind,
                background_messages: 1,
            })
            .unwrap();
            let server = LabServer::start(
                &scenario,
                LabOptions::default(),
                "127.0.0.1:0".parse().unwrap(),
            )
            .await
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let mut config = server.write_config(&dir.path().join("lab.toml")).unwrap();
            config.tenants[0].limits = limits.clone();
            let client = ProviderClient::new(&config, &config.tenants[0]).unwrap();
            let mailboxes = lab_support::campaign_mailboxes(&scenario);
            let items = mailboxes
                .iter()
                .enumerate()
                .map(|(i, m)| BulkItem {
                    key: i as u64,
                    mailbox: m.clone(),
                    internet_message_id: CAMPAIGN_MESSAGE_ID.into(),
                    copy: None,
                })
                .collect();
            let mut ok = 0;
            client
                .retract_many(items, RetractAction::Junk, |e| {
                    if let ProgressEvent::Finished { outcome, .. } = e {
                        assert!(outcome.is_ok(), "{kind:?} {limits:?}: {outcome:?}");
                        ok += 1;
                    }
                })
                .await;
            assert_eq!(ok, mailboxes.len(), "{kind:?} {limits:?}");
            // The lab's word: each copy moved once, to Junk.
            {
                let state = server.lab.state();
                let mut acted: Vec<&str> = state
                    .actions
                    .iter()
                    .filter(|a| a.internet_message_id == CAMPAIGN_MESSAGE_ID)
                    .map(|a| a.mailbox.as_str())
                    .collect();
                acted.sort();
                let mut want: Vec<&str> = mailboxes.iter().map(String::as_str).collect();
                want.sort();
                assert_eq!(acted, want, "{kind:?} {limits:?}");
                for (_, m, c) in state.copies_of(CAMPAIGN_MESSAGE_ID) {
                    assert_eq!(c.folder, Folder::Junk, "{m}");
                }
            }
            server.stop().await;
        }
    }
}

/// The recipients' twin of the References case: a To header of 100,000 addresses (a tenth of
/// them twice, in another case) is indexed with each address once, in order. Added one at a
/// time with a scan each, 50,000 took 22 s in a debug build; now it is under a second.
#[test]
fn a_to_header_of_100000_addresses_is_indexed() {
    let n = 100_000;
    let addresses: Vec<String> = (0..n).map(|i| format!("u{i}@contoso.example")).collect();
    let repeats: Vec<String> = addresses[..n / 10]
        .iter()
        .map(|a| a.to_ascii_uppercase())
        .collect();
    let folded: Vec<String> = addresses
        .chunks(20)
        .chain(repeats.chunks(20))
        .map(|c| c.join(", "))
        .collect();
    let raw = format!(
        "From: a@evil.example\r\nTo: {}\r\nSubject: everyone\r\n\
         Message-ID: <to@evil.example>\r\nDate: Thu, 19 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n",
        folded.join(",\r\n ")
    );
    let rec = parse_message(raw.as_bytes(), &IngestOptions::default()).unwrap();
    // (Not assert_eq!: a failure would print 200,000 addresses.)
    assert_eq!(rec.recipients.len(), n);
    assert!(rec.named_recipients() == addresses);
    assert!(rec.delivered_to() == addresses);
    let mut store = Store::open_in_memory().unwrap();
    store.upsert_trace(&[rec]).unwrap();
    let stored = store.trace_by_message_id("<to@evil.example>").unwrap();
    // The store keeps recipients by address.
    let mut stored: Vec<&str> = stored[0].delivered_to();
    stored.sort_unstable();
    let mut want: Vec<&str> = addresses.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert!(stored == want, "{} stored", stored.len());
}

/// Counts the comparisons `unique_in_order` makes.
static COMPARISONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug, Clone)]
struct Counted(u32);

impl std::hash::Hash for Counted {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for Counted {
    fn eq(&self, other: &Counted) -> bool {
        COMPARISONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0 == other.0
    }
}
impl Eq for Counted {}

/// Issue 11: References parsing was quadratic (each id compared with every id kept before it:
/// 200,000 ids took 30 s in release, 210 s in a debug build). The work is counted here, not
/// timed: 300,000 ids of which 100,000 repeat need about one comparison per repeat, where the
/// old way needed about 4.5e10.
#[test]
fn deduplicating_ids_takes_linear_work() {
    let n: u32 = 200_000;
    let ids = (0..n).map(Counted).chain((0..n).step_by(2).map(Counted));
    let total = u64::from(n) * 3 / 2;
    COMPARISONS.store(0, std::sync::atomic::Ordering::Relaxed);
    let unique = unique_in_order(ids);
    let comparisons = COMPARISONS.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(unique.len(), n as usize);
    assert!(unique.iter().enumerate().all(|(i, c)| c.0 == i as u32));
    assert!(
        comparisons <= 2 * total,
        "{comparisons} comparisons for {total} ids"
    );
}

/// The whole path at the size of the report: an EML whose References holds 200,000 ids (some
/// twice) parses, stores and reads back every id once, in order, and the reply is found from
/// any of them. Synced mail uses the same rule (`message_id_list`) on the provider's header.
#[test]
fn a_references_header_of_200000_ids_is_indexed() {
    let n = 200_000;
    let ids: Vec<String> = (0..n).map(|i| format!("<r{i}@thread.example>")).collect();
    // Folded lines of 20 ids, and the first 1,000 ids again at the end.
    let header: Vec<String> = ids
        .chunks(20)
        .chain(ids[..1_000].chunks(20))
        .map(|c| c.join(" "))
        .collect();
    let raw = format!(
        "From: a@evil.example\r\nTo: b@contoso.example\r\nSubject: long thread\r\n\
         Message-ID: <refs@evil.example>\r\nDate: Thu, 19 Nov 2026 10:00:00 +0000\r\n\
         In-Reply-To: <r{}@thread.example>\r\nReferences: {}\r\n\r\nbody\r\n",
        n - 1,
        header.join("\r\n ")
    );
    let opts = IngestOptions {
        now: 1_795_132_800,
        ..IngestOptions::default()
    };
    let rec = parse_message(raw.as_bytes(), &opts).unwrap();
    assert_eq!(rec.references, ids);
    assert_eq!(rec.in_reply_to, [ids[n - 1].clone()]);
    let synced = message_id_list(header.join(" ").split_whitespace());
    assert_eq!(synced, ids);

    let dir = tempfile::tempdir().unwrap();
    let eml = dir.path().join("refs.eml");
    std::fs::write(&eml, &raw).unwrap();
    let mut store = Store::open_in_dir(&dir.path().join("data")).unwrap();
    let report = ingest_paths(&mut store, &[eml], &opts, &mut |_| {}).unwrap();
    assert_eq!(report.indexed, 1, "{}", report.summary());
    let stored = store.trace_by_message_id("<refs@evil.example>").unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].references, ids);
    for probe in [0, n / 2, n - 1] {
        let replies = store.replies_to(&[ids[probe].clone()]).unwrap();
        assert_eq!(replies.len(), 1, "{}", ids[probe]);
        assert_eq!(replies[0].message_id, "<refs@evil.example>");
    }
}

/// A message with NUL bytes in a header, in its text part and between parts, all in the first
/// 4 KB (`\0` in the text below), addressed to `to`.
fn nul_message(to: &[&str]) -> String {
    format!(
        "From: Billing <billing@nul.evil.example>\r\n\
         To: {}\r\n\
         Subject: Invoice\0 overdue\r\n\
         Message-ID: <nul@nul.evil.example>\r\n\
         Date: Thu, 19 Nov 2026 10:00:00 +0000\r\n\
         References: <root@nul.evil.example>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
         \r\n\
         \0\0preamble\r\n\
         --b1\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         Pay now\0 at https://pay.nul.evil.example/invoice?id=7 today\0\r\n\
         --b1\r\n\
         Content-Type: application/octet-stream; name=\"inv.bin\"\r\n\
         Content-Disposition: attachment; filename=\"inv.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         aW52b2ljZSBwYXlsb2Fk\r\n\
         --b1--\r\n",
        to.join(", ")
    )
}

/// Issue 11: one NUL byte in the first 4 KB made `trace ingest` reject the whole file as
/// binary, while `trace sync` took the same message. Now the real binary indexes the file, and
/// the record is the one sync makes from the lab's copy: sender, subject, header recipients,
/// references, URL and attachment hash alike (sync adds the mailboxes as envelope recipients).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eml_with_nul_bytes_is_indexed_as_sync_indexes_it() {
    for kind in [GenerateKind::Microsoft365, GenerateKind::GoogleWorkspace] {
        let mut scenario = generate(&GenerateOptions {
            mailboxes: 3,
            campaign_recipients: 0,
            seed: 3,
            kind,
            background_messages: 0,
        })
        .unwrap();
        let tenant = &mut scenario.tenants[0];
        let to: Vec<String> = tenant.users[1..]
            .iter()
            .map(|u| u.address.clone())
            .collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        let raw = nul_message(&to);
        assert!(raw[..4096.min(raw.len())].contains('\0'));
        tenant.messages.push(ScenarioMessage {
            message_id: "<nul@nul.evil.example>".into(),
            raw: Some(raw.clone()),
            from: "billing@nul.evil.example".into(),
            from_name: Some("Billing".into()),
            to: to.iter().map(|a| a.to_string()).collect(),
            cc: vec![],
            subject: "Invoice overdue".into(),
            date: "2026-11-19T10:00:00Z".parse().unwrap(),
            body: String::new(),
            html: None,
            in_reply_to: None,
            references: vec!["<root@nul.evil.example>".into()],
            headers: vec![],
            attachments: vec![],
            conversation: None,
            copies: to
                .iter()
                .map(|a| ScenarioCopy {
                    mailbox: a.to_string(),
                    folder: Folder::Inbox,
                    read: false,
                })
                .collect(),
        });

        // trace ingest, through the real binary.
        let dir = tempfile::tempdir().unwrap();
        let eml = dir.path().join("nul.eml");
        std::fs::write(&eml, &raw).unwrap();
        let ingested_dir = dir.path().join("ingested");
        let out = Command::new(env!("CARGO_BIN_EXE_clawback"))
            .arg("--data-dir")
            .arg(&ingested_dir)
            .args(["trace", "ingest"])
            .arg(&eml)
            .env_remove("CLAWBACK_CONFIG")
            .env("HOME", dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_eq!(stderr, "");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "indexed 1, merged 0, duplicate 0, rejected 0\n"
        );
        let ingested = Store::open_in_dir(&ingested_dir)
            .unwrap()
            .trace_by_message_id("<nul@nul.evil.example>")
            .unwrap();
        assert_eq!(ingested.len(), 1);
        let ingested = &ingested[0];

        // trace sync of the same message from the lab.
        let server = LabServer::start(
            &scenario,
            LabOptions::default(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let config = server.write_config(&dir.path().join("lab.toml")).unwrap();
        let clients: Vec<ProviderClient> = config
            .tenants
            .iter()
            .map(|t| ProviderClient::new(&config, t).unwrap())
            .collect();
        let mut store = Store::open_in_dir(&dir.path().join("synced")).unwrap();
        let mut options = SyncOptions::from_config(Some(&config));
        options.since = chrono::Utc::now() - chrono::Duration::days(3650);
        let report = sync(&mut store, &clients, &options, |_| {}).await.unwrap();
        assert!(
            report.raw_failed.is_empty(),
            "{kind:?}: {:?}",
            report.raw_failed
        );
        let synced = store.trace_by_message_id("<nul@nul.evil.example>").unwrap();
        assert_eq!(synced.len(), 1, "{kind:?}");
        let synced = &synced[0];
        server.stop().await;

        assert_eq!(ingested.subject, "Invoice overdue");
        assert_eq!(ingested.sender, "billing@nul.evil.example");
        assert_eq!(
            ingested.urls,
            ["https://pay.nul.evil.example/invoice?id=7"],
            "{kind:?}"
        );
        assert_eq!(ingested.attachments.len(), 1);
        assert_eq!(ingested.named_recipients(), to);
        let same = |r: &TraceRecord| {
            (
                r.sender.clone(),
                r.sender_name.clone(),
                r.subject.clone(),
                r.named_recipients().join(","),
                r.references.clone(),
                r.urls.clone(),
                r.attachments.clone(),
                r.size,
            )
        };
        assert_eq!(same(synced), same(ingested), "{kind:?}");
        assert_eq!(synced.delivered_to(), to, "{kind:?}");
    }
}
