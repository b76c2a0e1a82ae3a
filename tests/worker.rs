//! Shared work (issue 17): `clawback worker` processes split one queued job. The store half runs
//! on both backends (SQLite and PostgreSQL): items are taken by one worker each, a worker whose
//! items were taken over is fenced off, the job is ended by exactly one worker. The acceptance
//! half runs three real `clawback worker` processes on a 6,000-mailbox job against the lab, on
//! each backend, and SIGKILLs one of them mid-job: the lab's own action log shows every copy
//! acted on exactly once.

use clawback::lab::LabOptions;
use clawback::lab::LabServer;
use clawback::lab::demo::CAMPAIGN_MESSAGE_ID;
use clawback::lab::generate::{GenerateKind, GenerateOptions, generate};
use clawback::model::{Folder, RetractAction, Role, Trigger};
use clawback::store::audit::JobEnd;
use clawback::store::jobs::{ItemRow, ItemState, JobKind, JobState, LeaseHolder, NewJob};
use clawback::store::{Store, StoreError};
use clawback::trace::{RecipientKind, TraceRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod lab_support;
mod store_support;
use lab_support::{KillOnDrop, assert_acted_on_once, expected_copies, lab_actions_since};
use store_support::{Raw, backends};

// ---- the store, on both backends ----

/// A queued retract job with `n` pending items (mailboxes `u0@contoso.com`…).
fn queued_job(store: &mut Store, n: usize) -> i64 {
    let items: Vec<ItemRow> = (0..n)
        .map(|i| {
            ItemRow::pending(
                "contoso",
                &format!("u{i}@contoso.com"),
                "<m@example.com>",
                Folder::Inbox,
                RetractAction::Junk,
                RetractAction::Junk,
            )
        })
        .collect();
    let job = store
        .create_job(
            &NewJob {
                kind: JobKind::Retract,
                plan_id: None,
                parent_job: None,
                trigger: Trigger::Manual,
                action: RetractAction::Junk,
                operator: "tester".into(),
                role: Role::Admin,
                reason: String::new(),
                dry_run: false,
                detected_at: None,
            },
            &items,
        )
        .expect("create job");
    store.queue_job(job).expect("queue");
    job
}

fn holder(name: &str) -> LeaseHolder {
    LeaseHolder {
        owner: name.to_string(),
        pid: std::process::id(),
        host: "worker-host".into(),
    }
}

fn ids(items: &[ItemRow]) -> Vec<i64> {
    items.iter().map(|it| it.id).collect()
}

#[test]
fn a_worker_whose_items_were_taken_over_can_no_longer_mark_them_in_flight() {
    let dir = tempfile::tempdir().expect("tempdir");
    for raw in backends(&dir) {
        let name = raw.name();
        let mut store = raw.open();
        let job = queued_job(&mut store, 6);
        let (a, b) = (holder("worker-a"), holder("worker-b"));
        // Not registered: nothing to take.
        assert!(
            store
                .take_items(job, &a.owner, 10)
                .expect("take")
                .is_empty()
        );
        store.join_job(job, &a).expect("join a");
        store.join_job(job, &b).expect("join b");
        let taken_a = store.take_items(job, &a.owner, 3).expect("take a");
        let taken_b = store.take_items(job, &b.owner, 10).expect("take b");
        assert_eq!(taken_a.len(), 3, "{name}");
        assert_eq!(
            taken_b.len(),
            3,
            "{name}: b takes only what a does not hold"
        );
        assert!(
            ids(&taken_a).iter().all(|id| !ids(&taken_b).contains(id)),
            "{name}"
        );
        // A marks one item in flight (its request is out), then goes silent.
        store
            .mark_in_flight(taken_a[0].id, "copy-0", &a.owner)
            .expect("a marks its own item");
        assert!(
            store
                .mark_in_flight(taken_a[1].id, "copy-1", &b.owner)
                .is_err(),
            "{name}: b cannot mark a's item"
        );
        let beat = store
            .job_workers(job)
            .expect("workers")
            .into_iter()
            .find(|w| w.holder.owner == a.owner)
            .expect("a registered")
            .heartbeat_secs;
        // B judges A lapsed and ends its registration; only one taker wins.
        assert!(
            store
                .end_lapsed_worker(job, (&a.owner, beat), &b.owner)
                .expect("end"),
            "{name}"
        );
        assert!(
            !store
                .end_lapsed_worker(job, (&a.owner, beat), &b.owner)
                .expect("end again"),
            "{name}: ended once"
        );
        // The fence: A, presumed dead, cannot act on the items it held.
        let refused = store.mark_in_flight(taken_a[1].id, "copy-1", &a.owner);
        assert!(
            matches!(refused, Err(StoreError::NotLeased { .. })),
            "{name}: {refused:?}"
        );
        assert!(
            store
                .take_items(job, &a.owner, 10)
                .expect("take")
                .is_empty(),
            "{name}: an ended worker takes nothing"
        );
        // B takes A's untouched items, and its in-flight one to settle by locating.
        let freed = store.take_items(job, &b.owner, 10).expect("take freed");
        assert_eq!(
            ids(&freed),
            ids(&taken_a[1..])
                .into_iter()
                .chain(ids(&taken_b))
                .collect::<Vec<_>>(),
            "{name}: b takes a's two untouched items (and keeps its own)"
        );
        let orphans = store.take_orphans(job, &b.owner).expect("orphans");
        assert_eq!(ids(&orphans), vec![taken_a[0].id], "{name}");
        assert_eq!(orphans[0].state, ItemState::InFlight, "{name}");
        store
            .mark_in_flight(taken_a[1].id, "copy-1", &b.owner)
            .expect("b marks the item it took over");
        let workers = store.job_workers(job).expect("workers");
        let a_row = workers
            .iter()
            .find(|w| w.holder.owner == a.owner)
            .expect("a");
        assert!(a_row.taken_over && a_row.ended.is_some(), "{name}");
        assert_eq!(a_row.held, 0, "{name}");
        let b_row = workers
            .iter()
            .find(|w| w.holder.owner == b.owner)
            .expect("b");
        assert_eq!(b_row.held, 6, "{name}");
    }
}

#[test]
fn concurrent_workers_take_every_item_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    for raw in backends(&dir) {
        let name = raw.name();
        let job = queued_job(&mut raw.open(), 600);
        let taken: Vec<Vec<i64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|w| {
                    let raw = &raw;
                    s.spawn(move || {
                        let store = raw.open();
                        let me = holder(&format!("worker-{w}"));
                        store.join_job(job, &me).expect("join");
                        let mut mine = Vec::new();
                        loop {
                            let batch = store.take_items(job, &me.owner, 7).expect("take");
                            if batch.is_empty() {
                                break;
                            }
                            for it in &batch {
                                store
                                    .mark_in_flight(it.id, "c", &me.owner)
                                    .expect("mark own item");
                                store
                                    .finish_item_succeeded(
                                        it.id,
                                        &Folder::Inbox,
                                        false,
                                        None,
                                        &Folder::Junk,
                                        "ok",
                                    )
                                    .expect("settle");
                            }
                            mine.extend(ids(&batch));
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let all: Vec<i64> = taken.iter().flatten().copied().collect();
        let distinct: BTreeSet<i64> = all.iter().copied().collect();
        assert_eq!(all.len(), 600, "{name}: every item taken once");
        assert_eq!(distinct.len(), 600, "{name}: no item taken twice");
        assert!(
            taken.iter().filter(|t| !t.is_empty()).count() >= 2,
            "{name}: the work was shared: {:?}",
            taken.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let store = raw.open();
        let done: u64 = store
            .job_workers(job)
            .expect("workers")
            .iter()
            .map(|w| w.succeeded)
            .sum();
        assert_eq!(done, 600, "{name}: each worker's settled items are counted");
    }
}

#[test]
fn a_job_several_workers_finish_at_once_is_ended_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    for raw in backends(&dir) {
        let name = raw.name();
        let mut store = raw.open();
        let job = queued_job(&mut store, 3);
        let end = |store: &mut Store, n: u64| {
            let mut r = store_support::audit_record(n);
            r.action = "job_finished".into();
            r.job_id = Some(job.to_string());
            store
                .end_job_audited(job, JobEnd::Queued, r)
                .expect("end")
                .is_some()
        };
        let before = store
            .audit_entries()
            .expect("audit")
            .expect("readable")
            .len();
        assert!(!end(&mut store, 0), "{name}: not while items are pending");
        for it in store.job_items(job, None).expect("items") {
            store
                .finish_item_succeeded(it.id, &Folder::Inbox, false, None, &Folder::Junk, "ok")
                .expect("settle");
        }
        let barrier = std::sync::Barrier::new(6);
        let ended: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let (raw, barrier) = (&raw, &barrier);
                    s.spawn(move || {
                        let mut store = raw.open();
                        barrier.wait();
                        end(&mut store, 1)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert_eq!(
            ended.iter().filter(|e| **e).count(),
            1,
            "{name}: exactly one finisher: {ended:?}"
        );
        let store = raw.open();
        let row = store.job(job).expect("job").expect("exists");
        assert_eq!(row.state, JobState::Finished, "{name}");
        // One `job_finished` entry, written with the end: the job's audit head is it.
        let entries = store.audit_entries().expect("audit").expect("readable");
        assert_eq!(entries.len(), before + 1, "{name}: one entry for one end");
        let last = entries.last().expect("an entry");
        assert_eq!(
            row.audit_head.as_deref(),
            Some(format!("{} sha256:{}", last.seq, last.hash).as_str()),
            "{name}"
        );
    }
}

// ---- real processes against the lab ----

/// The store the processes share: the SQLite file in `data`, or the PostgreSQL database.
fn open_store(raw: &Raw, data: &Path) -> Store {
    match raw {
        Raw::Sqlite(_) => Store::open_in_dir(data).expect("open"),
        Raw::Postgres(_) => raw.open(),
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_clawback")
}

fn clawback(config: &Path, data: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("CLAWBACK_CONFIG")
        .env_remove("CLAWBACK_STORE_URL")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

async fn run(config: &Path, data: &Path, args: &[&str]) -> std::process::Output {
    let mut c = clawback(config, data, args);
    tokio::task::spawn_blocking(move || c.output().expect("run clawback"))
        .await
        .expect("join")
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A lab of `mailboxes` generated mailboxes (two thirds Microsoft 365, one third Google) all
/// holding the campaign, its config in `dir` (on `raw`'s store, with a short lease so a
/// lapsed worker is noticed quickly), and the trace of the campaign in that store.
struct WorkerLab {
    server: LabServer,
    config: PathBuf,
    want: BTreeSet<lab_support::CopyKey>,
}

async fn worker_lab(raw: &Raw, dir: &Path, mailboxes: usize, latency: Duration) -> WorkerLab {
    let scenario = generate(&GenerateOptions {
        mailboxes,
        campaign_recipients: mailboxes,
        seed: 3,
        kind: GenerateKind::Mixed,
        background_messages: 0,
    })
    .expect("generate");
    let want = expected_copies(
        &scenario,
        &BTreeSet::from([CAMPAIGN_MESSAGE_ID.to_string()]),
    );
    assert_eq!(want.len(), mailboxes, "every mailbox holds the campaign");
    let server = LabServer::start(
        &scenario,
        LabOptions {
            latency,
            ..LabOptions::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("lab");
    let config = dir.join("lab.toml");
    server.write_config(&config).expect("config");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str("\n[jobs]\nlease_stale_secs = 6\n");
    if let Raw::Postgres(locator) = raw {
        text.push_str(&format!("\n[store]\nurl = {:?}\n", locator.to_string()));
    }
    std::fs::write(&config, text).expect("config");
    // The campaign as the trace knows it: one record per tenant, its copies as recipients.
    let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (tenant, mailbox, _) in &want {
        by_tenant
            .entry(tenant.clone())
            .or_default()
            .push(mailbox.clone());
    }
    let records: Vec<TraceRecord> = by_tenant
        .into_iter()
        .map(|(tenant, mailboxes)| {
            let mut r = TraceRecord {
                tenant,
                message_id: CAMPAIGN_MESSAGE_ID.to_string(),
                sender: "it-support@mail.contoso-helpdesk.com".into(),
                subject: "Your password expires today".into(),
                received: 1_736_150_400,
                size: 2_048,
                ..Default::default()
            };
            for m in &mailboxes {
                r.add_recipient(m, RecipientKind::Envelope);
            }
            r
        })
        .collect();
    let mut store = open_store(raw, &dir.join("data"));
    store.upsert_trace(&records).expect("trace");
    WorkerLab {
        server,
        config,
        want,
    }
}

/// `retract --queue`: the job made (plan located, audited) and left for the workers.
async fn queue_campaign(lab: &WorkerLab, data: &Path) -> i64 {
    let out = run(
        &lab.config,
        data,
        &[
            "retract",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--action",
            "junk",
            "--yes",
            "--queue",
        ],
    )
    .await;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    said.lines()
        .find_map(|l| {
            l.strip_prefix("job ")?
                .split_once(" queued: ")?
                .0
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no queued job in: {said}"))
}

fn spawn_worker(lab: &WorkerLab, data: &Path) -> KillOnDrop {
    KillOnDrop(
        clawback(
            &lab.config,
            data,
            &["worker", "--exit-when-idle", "--batch", "150"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker"),
    )
}

/// Waits for the workers to end (bounded, so a hang fails the test); all must exit 0.
async fn wait_all(workers: Vec<KillOnDrop>) {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(240);
        for mut w in workers {
            loop {
                if let Some(status) = w.0.try_wait().expect("try_wait") {
                    assert!(status.success(), "worker exited {status:?}");
                    break;
                }
                assert!(Instant::now() < deadline, "workers did not finish");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    })
    .await
    .expect("join");
}

/// The job finished with every copy succeeded, ended once (one `job_finished` entry), and the
/// audit chain intact.
async fn assert_finished_once(raw: &Raw, lab: &WorkerLab, data: &Path, job: i64, before: usize) {
    let name = raw.name();
    assert_acted_on_once(
        &lab_actions_since(&lab.server, before),
        &lab.want,
        &format!("{name}: three workers"),
    );
    let store = open_store(raw, data);
    let row = store.job(job).expect("job").expect("exists");
    assert_eq!(row.state, JobState::Finished, "{name}");
    let counts = store.item_counts(job).expect("counts");
    assert_eq!(
        counts.succeeded as usize,
        lab.want.len(),
        "{name}: {counts:?}"
    );
    assert_eq!(counts.remaining(), 0, "{name}");
    let entries = store.audit_entries().expect("read").expect("chain");
    let finished = entries
        .iter()
        .filter(|e| {
            e.record.action == "job_finished"
                && e.record.job_id.as_deref() == Some(&job.to_string())
        })
        .count();
    assert_eq!(finished, 1, "{name}: the job is ended exactly once");
    let verify = run(&lab.config, data, &["audit", "verify"]).await;
    assert!(
        verify.status.success() && text(&verify).contains("intact"),
        "{name}: {}",
        text(&verify)
    );
}

const MAILBOXES: usize = 6_000;

async fn three_workers_share_one_job(raw: Raw, dir: &Path) {
    let lab = worker_lab(&raw, dir, MAILBOXES, Duration::from_millis(2)).await;
    let data = dir.join("data");
    let job = queue_campaign(&lab, &data).await;
    let before = lab.server.lab.state().actions.len();
    let workers = (0..3).map(|_| spawn_worker(&lab, &data)).collect();
    wait_all(workers).await;
    assert_finished_once(&raw, &lab, &data, job, before).await;
    // `jobs show` names each worker that took part, with what it settled.
    let shown = run(&lab.config, &data, &["jobs", "show", &job.to_string()]).await;
    let shown = text(&shown);
    let shares: Vec<u64> = shown
        .lines()
        .filter(|l| l.starts_with("worker "))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "succeeded")?;
            words.get(at + 1)?.parse::<u64>().ok()
        })
        .collect();
    assert_eq!(
        shares.iter().sum::<u64>() as usize,
        lab.want.len(),
        "{shown}"
    );
    assert!(
        shares.iter().filter(|n| **n > 0).count() >= 2,
        "the job was shared: {shares:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_sqlite_act_on_each_of_6000_copies_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = Raw::Sqlite(dir.path().join("data").join("clawback.sqlite3"));
    three_workers_share_one_job(raw, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_on_postgres_act_on_each_of_6000_copies_once() {
    let Some(db) = clawback::store::pg::testing::fresh_database_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    three_workers_share_one_job(Raw::Postgres(db), dir.path()).await;
}

/// Three workers; one is SIGKILLed while it holds items. The other two take its items over
/// (its registration ended and audited; what it had in flight settled by locating) and finish
/// the job: every copy still acted on exactly once, the job ended once, the chain intact.
async fn a_killed_workers_items_are_finished_by_the_others(raw: Raw, dir: &Path) {
    let name = raw.name();
    // Slower service, so the job lasts several seconds and the kill lands mid-job.
    let lab = worker_lab(&raw, dir, MAILBOXES, Duration::from_millis(15)).await;
    let data = dir.join("data");
    let job = queue_campaign(&lab, &data).await;
    let before = lab.server.lab.state().actions.len();
    let mut workers: Vec<KillOnDrop> = (0..3).map(|_| spawn_worker(&lab, &data)).collect();
    let victim = workers[0].0.id();
    let store = open_store(&raw, &data);
    // Wait until the store shows the victim holding items, having settled some already.
    let deadline = Instant::now() + Duration::from_secs(120);
    let held = loop {
        let me = store
            .job_workers(job)
            .expect("workers")
            .into_iter()
            .find(|w| w.holder.pid == victim && w.ended.is_none());
        if let Some(w) = me
            && w.held > 0
            && w.succeeded > 0
        {
            break w.held;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: the victim never held items"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut killed = workers.remove(0);
    killed.0.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
    let status = killed.0.wait().expect("reap");
    assert!(!status.success(), "{name}: the victim was killed");
    assert!(
        lab.server.lab.state().actions.len() - before < lab.want.len(),
        "{name}: the kill landed mid-job"
    );
    wait_all(workers).await;
    assert_finished_once(&raw, &lab, &data, job, before).await;
    // The victim's registration was ended by a survivor, and that is on record.
    let entries = store.audit_entries().expect("read").expect("chain");
    let taken_over: Vec<_> = entries
        .iter()
        .filter(|e| e.record.action == "worker_taken_over")
        .collect();
    assert_eq!(taken_over.len(), 1, "{name}: one take-over audited");
    assert_eq!(
        taken_over[0].record.detail["previous_pid"].as_u64(),
        Some(u64::from(victim)),
        "{name}"
    );
    let victim_row = store
        .job_workers(job)
        .expect("workers")
        .into_iter()
        .find(|w| w.holder.pid == victim)
        .expect("victim registered");
    assert!(victim_row.taken_over, "{name}: {victim_row:?}");
    assert_eq!(
        victim_row.held, 0,
        "{name}: it holds nothing now (held {held} at the kill)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_on_sqlite_is_taken_over_and_each_copy_acted_on_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = Raw::Sqlite(dir.path().join("data").join("clawback.sqlite3"));
    a_killed_workers_items_are_finished_by_the_others(raw, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_worker_on_postgres_is_taken_over_and_each_copy_acted_on_once() {
    let Some(db) = clawback::store::pg::testing::fresh_database_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    a_killed_workers_items_are_finished_by_the_others(Raw::Postgres(db), dir.path()).await;
}

/// A job is run by workers or by one process holding its lease, never both: `jobs resume`
/// refuses a job live workers share (naming them, as `jobs list` does), and a worker does not
/// join a job a process runs alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_run_by_workers_or_by_one_process_never_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = Raw::Sqlite(dir.path().join("data").join("clawback.sqlite3"));
    let lab = worker_lab(&raw, dir.path(), 30, Duration::from_millis(1)).await;
    let data = dir.path().join("data");
    let job = queue_campaign(&lab, &data).await;
    let before = lab.server.lab.state().actions.len();
    let mut store = Store::open_in_dir(&data).expect("open");

    // A live worker (another host) shares the job.
    let worker = holder("worker-elsewhere");
    store.join_job(job, &worker).expect("join");
    assert_eq!(
        store.take_items(job, &worker.owner, 5).expect("take").len(),
        5
    );
    let listed = text(&run(&lab.config, &data, &["jobs", "list"]).await);
    assert!(
        listed.contains(&format!(
            "worker worker-host:{} (held 5, done 0)",
            worker.pid
        )),
        "{listed}"
    );
    let resumed = run(&lab.config, &data, &["jobs", "resume", &job.to_string()]).await;
    assert_eq!(resumed.status.code(), Some(1), "{}", text(&resumed));
    assert!(
        text(&resumed).contains(&format!(
            "1 `clawback worker` process (pid {} on worker-host)",
            worker.pid
        )),
        "{}",
        text(&resumed)
    );
    assert_eq!(lab.server.lab.state().actions.len(), before, "nothing sent");
    store.leave_job(job, &worker.owner).expect("leave");

    // A process runs the job alone (its lease is live): a worker does not join.
    let alone = holder("single-run");
    let taken = store
        .acquire_job_lease(job, &alone, chrono::Duration::seconds(30))
        .expect("lease");
    assert!(taken.is_ok());
    let refused = run(
        &lab.config,
        &data,
        &["worker", "--exit-when-idle", "--job", &job.to_string()],
    )
    .await;
    assert!(refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains(&format!("job {job} is run by pid {}", alone.pid))
            && text(&refused).contains("not joined"),
        "{}",
        text(&refused)
    );
    assert_eq!(lab.server.lab.state().actions.len(), before, "nothing sent");
    assert_eq!(
        store.item_counts(job).expect("counts").pending as usize,
        lab.want.len()
    );

    // Lease given up: a worker finishes the job.
    store.release_job_lease(job, &alone.owner).expect("release");
    let worked = run(
        &lab.config,
        &data,
        &["worker", "--exit-when-idle", "--job", &job.to_string()],
    )
    .await;
    assert!(worked.status.success(), "{}", text(&worked));
    assert_acted_on_once(
        &lab_actions_since(&lab.server, before),
        &lab.want,
        "one worker after the lease",
    );
    assert_eq!(
        store.job(job).expect("job").expect("exists").state,
        JobState::Finished
    );
}

/// `jobs cancel` stops the workers before their next batch; pending items stay pending and the
/// job is not ended by them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_workers_before_their_next_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = Raw::Sqlite(dir.path().join("data").join("clawback.sqlite3"));
    let lab = worker_lab(&raw, dir.path(), 600, Duration::from_millis(20)).await;
    let data = dir.path().join("data");
    let job = queue_campaign(&lab, &data).await;
    let before = lab.server.lab.state().actions.len();
    let worker = KillOnDrop(
        clawback(
            &lab.config,
            &data,
            &["worker", "--exit-when-idle", "--batch", "20"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while lab.server.lab.state().actions.len() == before {
        assert!(Instant::now() < deadline, "the worker never acted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cancelled = run(&lab.config, &data, &["jobs", "cancel", &job.to_string()]).await;
    assert!(cancelled.status.success(), "{}", text(&cancelled));
    wait_all(vec![worker]).await;
    let store = Store::open_in_dir(&data).expect("open");
    let counts = store.item_counts(job).expect("counts");
    assert_eq!(
        store.job(job).expect("job").expect("exists").state,
        JobState::Cancelled
    );
    assert!(counts.pending > 0, "stopped before the end: {counts:?}");
    assert_eq!(counts.in_flight, 0, "{counts:?}");
    let acted = lab_actions_since(&lab.server, before);
    assert_eq!(acted.len() as u64, counts.succeeded, "{counts:?}");
    assert!(acted.values().all(|n| *n == 1));
}

/// A worker on another host that went silent (its heartbeat older than `[jobs]
/// lease_stale_secs`) holding items, one of them in flight: a worker here takes them over once
/// the heartbeat lapsed — the in-flight one settled by locating (still in the inbox: acted on
/// once, here) — and finishes the job. `jobs show` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_on_another_host_is_taken_over_once_its_heartbeat_lapsed() {
    let dir = tempfile::tempdir().expect("tempdir");
    for raw in backends(&dir) {
        let name = raw.name();
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).expect("dir");
        let raw = match raw {
            Raw::Sqlite(_) => Raw::Sqlite(sub.join("data").join("clawback.sqlite3")),
            pg => pg,
        };
        let lab = worker_lab(&raw, &sub, 30, Duration::from_millis(1)).await;
        let data = sub.join("data");
        let job = queue_campaign(&lab, &data).await;
        let before = lab.server.lab.state().actions.len();
        let store = open_store(&raw, &data);
        let silent = holder("silent-elsewhere");
        store.join_job(job, &silent).expect("join");
        let held = store.take_items(job, &silent.owner, 5).expect("take");
        store
            .mark_in_flight(
                held[0].id,
                held[0].copy_id.as_deref().unwrap_or(""),
                &silent.owner,
            )
            .expect("in flight");
        // Its last heartbeat a minute ago (the config's limit is 6 s).
        raw.exec("UPDATE job_worker SET heartbeat = heartbeat - 60");
        let worked = run(
            &lab.config,
            &data,
            &["worker", "--exit-when-idle", "--job", &job.to_string()],
        )
        .await;
        assert!(worked.status.success(), "{name}: {}", text(&worked));
        assert!(
            text(&worked).contains(&format!(
                "worker worker-host:{} lapsed; its 5 items taken over",
                silent.pid
            )),
            "{name}: {}",
            text(&worked)
        );
        assert_finished_once(&raw, &lab, &data, job, before).await;
        let shown = text(&run(&lab.config, &data, &["jobs", "show", &job.to_string()]).await);
        assert!(
            shown.lines().any(
                |l| l.starts_with(&format!("worker worker-host:{}", silent.pid))
                    && l.contains("lapsed (items taken over)")
            ),
            "{name}: {shown}"
        );
    }
}

/// SIGTERM: the worker finishes the batch in flight, gives its untouched items back and leaves
/// the job (not a lapse: nothing to take over); another worker then finishes the job, each copy
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_by_sigterm_gives_its_untouched_items_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = Raw::Sqlite(dir.path().join("data").join("clawback.sqlite3"));
    let lab = worker_lab(&raw, dir.path(), 600, Duration::from_millis(20)).await;
    let data = dir.path().join("data");
    let job = queue_campaign(&lab, &data).await;
    let before = lab.server.lab.state().actions.len();
    let worker = KillOnDrop(
        clawback(&lab.config, &data, &["worker", "--batch", "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn worker"),
    );
    let pid = worker.0.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lab.server.lab.state().actions.len() == before {
        assert!(Instant::now() < deadline, "the worker never acted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    wait_all(vec![worker]).await;
    let store = open_store(&raw, &data);
    let counts = store.item_counts(job).expect("counts");
    assert_eq!(
        counts.in_flight, 0,
        "the batch in flight was finished: {counts:?}"
    );
    assert!(counts.pending > 0, "stopped before the end: {counts:?}");
    let w = store
        .job_workers(job)
        .expect("workers")
        .into_iter()
        .find(|w| w.holder.pid == pid)
        .expect("registered");
    assert!(w.ended.is_some() && !w.taken_over, "it left: {w:?}");
    assert_eq!(w.held, 0, "its untouched items were given back");
    assert_eq!(
        store.job(job).expect("job").expect("exists").state,
        JobState::Running
    );
    let rest = run(&lab.config, &data, &["worker", "--exit-when-idle"]).await;
    assert!(rest.status.success(), "{}", text(&rest));
    assert!(!text(&rest).contains("lapsed"), "{}", text(&rest));
    assert_finished_once(&raw, &lab, &data, job, before).await;
}
