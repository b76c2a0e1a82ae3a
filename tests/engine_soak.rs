//! A seeded randomized run of several clawback processes on one data directory (issue 10):
//! four workers for a while doing `retract` (junk/trash), `jobs resume`, `jobs cancel` and
//! `restore` on several messages of the demo, one command in four SIGKILLed at a random moment,
//! users junking and deleting copies through `/_lab/user-action`, the lab at 5 % faults and a
//! small capacity. Then faults off, every unfinished job resumed, and the ledger checked against
//! the lab's own action records:
//!
//! - every API mutation is claimed by exactly one succeeded item and every succeeded item by
//!   one mutation (per copy, retractions and restores counted separately);
//! - no copy receives two retractions not separated by a restore;
//! - every copy is where the store says: retracted (an unrestored succeeded item) exactly when
//!   the lab's last API mutation of it was a retraction;
//! - every item is settled; `audit verify` passes; no process panicked or met a locked store.
//!
//! `SOAK_SEEDS=1,2,3` picks the seeds (printed), `SOAK_SECS=120` the length of each run.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod lab_support;
use lab_support::synced_lab;

use clawback::lab::LabOptions;
use clawback::lab::demo::CAMPAIGN_MESSAGE_ID;
use clawback::store::Store;
use clawback::store::jobs::{ItemState, JobKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WORKERS: usize = 4;

/// (tenant, mailbox, Message-ID)
type Copy = (String, String, String);

fn seeds() -> Vec<u64> {
    std::env::var("SOAK_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<u64>| !v.is_empty())
        .unwrap_or_else(|| vec![11, 12])
}

fn run_secs() -> u64 {
    std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
}

fn clawback(config: &Path, data: &Path, args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clawback"));
    c.arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("CLAWBACK_DATA_DIR")
        .env_remove("CLAWBACK_CONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// What the workers saw go wrong (a panic, a locked store): must stay empty.
type Problems = Arc<Mutex<Vec<String>>>;

fn worker(
    seed: u64,
    index: usize,
    config: PathBuf,
    data: PathBuf,
    messages: Vec<String>,
    stop: Arc<AtomicBool>,
    problems: Problems,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed * 100 + index as u64);
    let mut highest_job = 1u64;
    while !stop.load(Ordering::SeqCst) {
        let roll = rng.gen_range(0..100);
        let args: Vec<String> = if roll < 45 {
            let m = &messages[rng.gen_range(0..messages.len())];
            let action = if rng.gen_bool(0.5) { "junk" } else { "trash" };
            highest_job += 1;
            ["retract", "--message-id", m, "--action", action, "--yes"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else if roll < 65 {
            vec!["jobs".into(), "resume".into()]
        } else if roll < 80 {
            let j = rng.gen_range(1..=highest_job);
            vec!["jobs".into(), "cancel".into(), j.to_string()]
        } else {
            let j = rng.gen_range(1..=highest_job);
            vec!["restore".into(), j.to_string()]
        };
        let mut child = clawback(&config, &data, &args).spawn().unwrap();
        let kill_after = rng
            .gen_bool(0.25)
            .then(|| Duration::from_millis(rng.gen_range(10..1_500)));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if kill_after.is_some_and(|d| started.elapsed() >= d) {
                let _ = child.kill(); // SIGKILL
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        if let Some(status) = status
            && (status.code() == Some(101) || err.contains("panicked") || err.contains("locked"))
        {
            problems
                .lock()
                .unwrap()
                .push(format!("{args:?} exited {status:?}: {err}"));
        }
    }
}

/// Copies of `messages` in the lab, from its own state.
fn lab_copies(lab: &clawback::lab::Lab, messages: &BTreeSet<String>) -> Vec<Copy> {
    let state = lab.state();
    let mut out = Vec::new();
    for t in &state.tenants {
        for (addr, mb) in &t.mailboxes {
            for c in mb.copies.values() {
                if messages.contains(&c.content.internet_message_id) {
                    out.push((
                        t.name.clone(),
                        addr.clone(),
                        c.content.internet_message_id.clone(),
                    ));
                }
            }
        }
    }
    out
}

fn soak(seed: u64) {
    eprintln!(
        "soak seed {seed} for {}s (SOAK_SEEDS={seed} reproduces)",
        run_secs()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let scenario = clawback::lab::scenario::demo(7);
    let options = LabOptions {
        latency: Duration::from_millis(5),
        capacity: 32,
        seed,
        ..LabOptions::default()
    };
    let world = rt.block_on(synced_lab(&scenario, options, &[], 3650));
    drop(world.store);
    let config = world.dir.path().join("lab.toml");
    let data = world.dir.path().join("data");
    let lab = world.server.lab.clone();

    // The campaign and the three other messages with the most copies.
    let mut by_copies: BTreeMap<String, usize> = BTreeMap::new();
    for t in &scenario.tenants {
        for m in &t.messages {
            *by_copies.entry(m.message_id.clone()).or_default() += m.copies.len();
        }
    }
    let mut ranked: Vec<(usize, String)> = by_copies.into_iter().map(|(m, n)| (n, m)).collect();
    ranked.sort_by(|a, b| b.cmp(a));
    let mut messages: Vec<String> = vec![CAMPAIGN_MESSAGE_ID.to_string()];
    for (_, m) in ranked {
        if messages.len() >= 4 {
            break;
        }
        if !messages.contains(&m) {
            messages.push(m);
        }
    }
    let message_set: BTreeSet<String> = messages.iter().cloned().collect();
    let copies = lab_copies(&lab, &message_set);

    lab.set_fault_rate(0.05);
    let stop = Arc::new(AtomicBool::new(false));
    let problems: Problems = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let (config, data, messages, stop, problems) = (
                config.clone(),
                data.clone(),
                messages.clone(),
                stop.clone(),
                problems.clone(),
            );
            std::thread::spawn(move || worker(seed, i, config, data, messages, stop, problems))
        })
        .collect();
    // Users junk and delete copies meanwhile.
    let base = world.server.base_url();
    let users = {
        let stop = stop.clone();
        let copies = copies.clone();
        let base = base.to_string();
        rt.spawn(async move {
            let http = reqwest::Client::new();
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
            while !stop.load(Ordering::SeqCst) {
                let (tenant, mailbox, mid) = &copies[rng.gen_range(0..copies.len())];
                let folder = if rng.gen_bool(0.5) { "junk" } else { "trash" };
                let _ = http
                    .post(format!("{base}/_lab/user-action"))
                    .json(&serde_json::json!({
                        "tenant": tenant, "mailbox": mailbox, "message_id": mid, "folder": folder,
                    }))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
            }
        })
    };
    std::thread::sleep(Duration::from_secs(run_secs()));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    rt.block_on(users).unwrap();
    let problems = problems.lock().unwrap().clone();
    assert!(problems.is_empty(), "seed {seed}: {problems:#?}");

    // Faults off; every unfinished job (running or cancelled with work left) resumed.
    lab.set_fault_rate(0.0);
    for _ in 0..10 {
        let store = Store::open_in_dir(&data).unwrap();
        let open: Vec<i64> = store
            .jobs(10_000)
            .unwrap()
            .into_iter()
            .filter(|j| store.item_counts(j.id).unwrap().remaining() > 0)
            .map(|j| j.id)
            .collect();
        drop(store);
        if open.is_empty() {
            break;
        }
        for j in open {
            let args = vec!["jobs".to_string(), "resume".to_string(), j.to_string()];
            let out = clawback(&config, &data, &args)
                .stdout(Stdio::piped())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_ne!(
                out.status.code(),
                Some(101),
                "seed {seed}: resume {j}: {err}"
            );
            if std::env::var_os("SOAK_VERBOSE").is_some() {
                eprintln!(
                    "resume {j}: exit {:?}\n{}{err}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }

    // The ledger against the lab.
    let store = Store::open_in_dir(&data).unwrap();
    let jobs = store.jobs(10_000).unwrap();
    assert!(jobs.len() > 4, "seed {seed}: only {} jobs ran", jobs.len());
    let mut retract_ok: BTreeMap<Copy, u64> = BTreeMap::new();
    // Succeeded retract items whose outcome was established by looking (answer lost): a user
    // who moved the copy to the same place in between is indistinguishable from clawback.
    let mut by_looking: BTreeMap<Copy, u64> = BTreeMap::new();
    let mut restore_by_looking: BTreeMap<Copy, u64> = BTreeMap::new();
    // Restores whose answer was lost and whose copy a user moved on: they may or may not have
    // landed (the store says so; nobody can tell), so the lab may count one more restore.
    let mut maybe_restored: BTreeSet<Copy> = BTreeSet::new();
    let mut maybe_retracted: BTreeSet<Copy> = BTreeSet::new();
    let mut restore_ok: BTreeMap<Copy, u64> = BTreeMap::new();
    let mut unrestored: BTreeSet<Copy> = BTreeSet::new();
    for j in &jobs {
        let c = store.item_counts(j.id).unwrap();
        if c.remaining() > 0 {
            let args = vec!["jobs".to_string(), "resume".to_string(), j.id.to_string()];
            let out = clawback(&config, &data, &args)
                .stdout(Stdio::piped())
                .output()
                .unwrap();
            panic!(
                "seed {seed}: job {} ({:?}, {:?}) unsettled {c:?}; resume says: {}{}",
                j.id,
                j.kind,
                j.state,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let open = store.unrestored_items(j.id).unwrap();
        if j.kind == JobKind::Restore {
            for it in store.job_items(j.id, Some(ItemState::Failed)).unwrap() {
                if it
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.contains(clawback::provider::MAY_HAVE_LANDED))
                {
                    maybe_restored.insert((it.tenant, it.mailbox, it.message_id));
                }
            }
        }
        if j.kind == JobKind::Retract {
            // Our answer was lost after the provider acted, and a user moved the copy on
            // before clawback looked: the item says where the copy is (moved by someone else),
            // not that clawback put it there. Counted below only with such a user move.
            for it in store.job_items(j.id, Some(ItemState::Failed)).unwrap() {
                if it
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.starts_with("already_moved"))
                {
                    maybe_retracted.insert((it.tenant, it.mailbox, it.message_id));
                }
            }
        }
        for it in store.job_items(j.id, Some(ItemState::Succeeded)).unwrap() {
            let key = (it.tenant.clone(), it.mailbox.clone(), it.message_id.clone());
            let detail = it.detail.as_deref().unwrap_or_default();
            match j.kind {
                JobKind::Retract => {
                    if detail.contains("verified") || detail.contains("reconciled") {
                        *by_looking.entry(key.clone()).or_default() += 1;
                    }
                    *retract_ok.entry(key.clone()).or_default() += 1;
                    if open.contains(&it.id) {
                        unrestored.insert(key);
                    }
                }
                // A copy found already back was not sent anything.
                JobKind::Restore if detail.contains("already back") => {}
                JobKind::Restore => {
                    if detail.contains("verified") || detail.contains("interrupted") {
                        *restore_by_looking.entry(key.clone()).or_default() += 1;
                    }
                    if detail.contains("sent again after") {
                        maybe_restored.insert(key.clone());
                    }
                    *restore_ok.entry(key).or_default() += 1
                }
            }
        }
    }
    drop(store);
    let state = lab.state();
    let mut retract_api: BTreeMap<Copy, u64> = BTreeMap::new();
    let mut restore_api: BTreeMap<Copy, u64> = BTreeMap::new();
    let mut last_api: BTreeMap<Copy, bool> = BTreeMap::new(); // true = retraction
    let mut since_restore: BTreeMap<Copy, u64> = BTreeMap::new();
    let mut doubled = Vec::new();
    let mut user_gone: BTreeSet<Copy> = BTreeSet::new();
    for r in &state.actions {
        if !message_set.contains(&r.internet_message_id) {
            continue;
        }
        if r.action.starts_with("user:") {
            if r.to_folder.is_gone() {
                user_gone.insert((
                    r.tenant.clone(),
                    r.mailbox.to_ascii_lowercase(),
                    r.internet_message_id.clone(),
                ));
            }
            continue;
        }
        let key = (
            r.tenant.clone(),
            r.mailbox.to_ascii_lowercase(),
            r.internet_message_id.clone(),
        );
        // A restore puts a copy back in sight; anything else clawback sends is a retraction
        // (also one that lands on a copy a user junked or trashed between clawback's read and
        // its write: a user's race, not a second retraction by clawback).
        let restoration = !r.to_folder.is_gone();
        if !restoration {
            *retract_api.entry(key.clone()).or_default() += 1;
            let n = since_restore.entry(key.clone()).or_default();
            *n += 1;
            if *n > 1 {
                doubled.push((key.clone(), r.action.clone()));
            }
            last_api.insert(key, true);
        } else {
            *restore_api.entry(key.clone()).or_default() += 1;
            since_restore.insert(key.clone(), 0);
            last_api.insert(key, false);
        }
    }
    drop(state);
    if let Some((first, _)) = doubled.first() {
        panic!(
            "seed {seed}: acted twice: {doubled:?}\nfirst: {}",
            describe(&lab, &data, first)
        );
    }
    for (what, api, ok, looked) in [
        ("retractions", &retract_api, &retract_ok, &by_looking),
        ("restores", &restore_api, &restore_ok, &restore_by_looking),
    ] {
        let keys: BTreeSet<&Copy> = api.keys().chain(ok.keys()).collect();
        let diff: Vec<_> = keys
            .into_iter()
            .filter(|k| api.get(*k) != ok.get(*k))
            .filter(|k| {
                // Tolerated: surplus successes established by looking, where a user did move
                // the copy away too (counted and printed, never silently).
                let surplus = ok.get(*k).copied().unwrap_or(0)
                    - api
                        .get(*k)
                        .copied()
                        .unwrap_or(0)
                        .min(ok.get(*k).copied().unwrap_or(0));
                let lab_surplus =
                    api.get(*k).copied().unwrap_or(0) == ok.get(*k).copied().unwrap_or(0) + 1;
                let explained = user_gone.contains(*k)
                    && ((surplus > 0 && looked.get(*k).copied().unwrap_or(0) >= surplus)
                        || (what == "restores" && lab_surplus && maybe_restored.contains(*k))
                        || (what == "retractions" && lab_surplus && maybe_retracted.contains(*k)));
                if explained {
                    eprintln!(
                        "seed {seed}: {k:?}: a user's move was taken for clawback's lost answer"
                    );
                }
                !explained
            })
            .map(|k| (k.clone(), api.get(k).copied(), ok.get(k).copied()))
            .collect();
        if !diff.is_empty() {
            panic!(
                "seed {seed}: {what} at the lab vs succeeded items differ for {} copies (copy, lab, store): {:?}\nfirst: {}",
                diff.len(),
                &diff[..diff.len().min(5)],
                describe(&lab, &data, &diff[0].0)
            );
        }
    }
    let lab_retracted: BTreeSet<Copy> = last_api
        .iter()
        .filter(|(_, retracted)| **retracted)
        .map(|(k, _)| k.clone())
        .collect();
    let differ: Vec<&Copy> = lab_retracted
        .symmetric_difference(&unrestored)
        .filter(|k| {
            let explained = user_gone.contains(*k)
                && (by_looking.contains_key(*k)
                    || maybe_restored.contains(*k)
                    || maybe_retracted.contains(*k));
            if explained {
                eprintln!("seed {seed}: {k:?}: a user's move was taken for clawback's lost answer");
            }
            !explained
        })
        .collect();
    if let Some(first) = differ.first() {
        panic!(
            "seed {seed}: {} copies retracted at the lab but not in the store or back: {:?}\nfirst: {}",
            differ.len(),
            &differ[..differ.len().min(5)],
            describe(&lab, &data, first)
        );
    }
    assert!(
        !retract_api.is_empty(),
        "seed {seed}: nothing was retracted at all"
    );
    let out = clawback(&config, &data, &["audit".into(), "verify".into()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "seed {seed}: audit verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "soak seed {seed}: {} jobs, {} retractions, {} restores, every one accounted for",
        jobs.len(),
        retract_api.values().sum::<u64>(),
        restore_api.values().sum::<u64>()
    );
}

/// A copy's job items and lab log, for a failure message.
fn describe(lab: &clawback::lab::Lab, data: &Path, copy: &Copy) -> String {
    let (t, m, mid) = copy;
    let store = Store::open_in_dir(data).unwrap();
    let mut items = Vec::new();
    for j in store.jobs(10_000).unwrap() {
        for it in store.job_items(j.id, None).unwrap() {
            if &it.tenant == t && &it.mailbox == m && &it.message_id == mid {
                items.push(format!(
                    "job {} {:?} {:?}: {:?} {:?} {:?} -> {:?} src {:?}",
                    j.id,
                    j.kind,
                    it.state,
                    it.reason,
                    it.detail,
                    it.folder,
                    it.to_folder,
                    it.source_item
                ));
            }
        }
    }
    let state = lab.state();
    let log: Vec<_> = state
        .actions
        .iter()
        .filter(|r| &r.tenant == t && &r.mailbox == m && &r.internet_message_id == mid)
        .map(|r| format!("{} {:?}->{:?}", r.action, r.from_folder, r.to_folder))
        .collect();
    format!(
        "{copy:?}\n  items:\n    {}\n  lab: {log:?}",
        items.join("\n    ")
    )
}

#[test]
fn several_processes_at_random_keep_the_ledger_exact() {
    for seed in seeds() {
        soak(seed);
    }
}
