//! The job ledger on both store backends (issue 17): plans, jobs and items, copy claims,
//! leases, the acting-under-lease rule and transactions give the same observable results on
//! the embedded SQLite file and on a PostgreSQL database; and real processes racing for one
//! lease, one plan and the same copies find exactly one winner each, on both.

use chrono::{TimeZone, Utc};
use clawback::model::{FailureReason, Folder, RetractAction, Role, Trigger};
use clawback::store::jobs::{
    ItemFinish, ItemRow, ItemState, JobKind, JobState, LeaseHolder, LeaseTaken, NewJob, host_name,
};
use clawback::store::pg::PgLocator;
use clawback::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

mod store_support;
use store_support::{Raw, backends};

const TENANT: &str = "contoso";
const MESSAGE: &str = "<campaign@evil.example>";

fn new_job(kind: JobKind, plan: Option<&str>, parent: Option<i64>, dry_run: bool) -> NewJob {
    NewJob {
        kind,
        plan_id: plan.map(str::to_string),
        parent_job: parent,
        trigger: Trigger::Manual,
        action: RetractAction::SoftDelete,
        operator: "analyst".into(),
        role: Role::Responder,
        reason: "phish".into(),
        dry_run,
        detected_at: None,
    }
}

fn item(mailbox: &str) -> ItemRow {
    let mut it = ItemRow::pending(
        TENANT,
        mailbox,
        MESSAGE,
        Folder::Inbox,
        RetractAction::SoftDelete,
        RetractAction::SoftDelete,
    );
    it.copy_id = Some(format!("id-{mailbox}"));
    it.delivered_at = Utc.timestamp_opt(1_700_000_000, 0).single();
    it
}

fn holder(owner: &str, host: &str) -> LeaseHolder {
    LeaseHolder {
        owner: owner.into(),
        pid: std::process::id(),
        host: host.into(),
    }
}

const STALE: chrono::Duration = chrono::Duration::seconds(30);

/// What a job's items look like, without times: (mailbox, state, reason, detail).
fn item_lines(store: &Store, job: i64) -> Vec<(String, ItemState, Option<FailureReason>, String)> {
    store
        .job_items(job, None)
        .expect("items")
        .into_iter()
        .map(|it| {
            (
                it.mailbox,
                it.state,
                it.reason,
                it.detail.unwrap_or_default(),
            )
        })
        .collect()
}

fn plan_and_job(store: &mut Store, plan: &str, mailboxes: &[&str]) -> i64 {
    store
        .insert_plan(plan, "digest-1", Utc::now(), "{}")
        .expect("plan");
    let items: Vec<ItemRow> = mailboxes.iter().map(|m| item(m)).collect();
    store
        .create_job(&new_job(JobKind::Retract, Some(plan), None, false), &items)
        .expect("job")
}

#[test]
fn plans_jobs_and_items_read_back_alike_on_both_backends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = Vec::new();
    for raw in backends(&dir) {
        let name = raw.name();
        let mut store = raw.open();
        let made = Utc.timestamp_opt(1_700_000_100, 0).single().expect("time");
        store
            .insert_plan("p1", "d1", made, "{\"a\":1}")
            .expect("plan");
        // A plan is kept once: a second insert changes nothing.
        store
            .insert_plan("p1", "d2", Utc::now(), "{}")
            .expect("again");
        assert_eq!(
            store.plan_digest("p1").expect("digest").as_deref(),
            Some("d1")
        );
        assert_eq!(
            store.plan_created_at("p1").expect("at"),
            Some(made),
            "{name}"
        );
        store.update_plan("p1", "d3", "{\"a\":2}").expect("update");
        assert_eq!(
            store.plan_json("p1").expect("json").as_deref(),
            Some("{\"a\":2}")
        );
        assert_eq!(
            store.plan_digest("p1").expect("digest").as_deref(),
            Some("d3")
        );
        assert_eq!(store.plan_digest("nope").expect("none"), None, "{name}");

        let mut odd = item("b@contoso.example");
        odd.folder = Folder::Other("Projects/2024".into());
        odd.read = true;
        odd.depth = 2;
        odd.note = Some("retained_by_hold: litigation".into());
        let items = vec![item("a@contoso.example"), odd, item("c@contoso.example")];
        let job = store
            .create_job(&new_job(JobKind::Retract, Some("p1"), None, false), &items)
            .expect("job");
        // A plan is spent once.
        let again = store.create_job(&new_job(JobKind::Retract, Some("p1"), None, false), &items);
        assert!(
            matches!(again, Err(StoreError::PlanSpent { job: j, .. }) if j == job),
            "{name}: {again:?}"
        );
        assert_eq!(
            store.job_of_plan("p1").expect("of plan"),
            Some(job),
            "{name}"
        );
        // A retry names its parent and the same plan: allowed.
        let retry = store
            .create_job(
                &new_job(JobKind::Retract, Some("p1"), Some(job), false),
                &[],
            )
            .expect("retry");

        let row = store.job(job).expect("job").expect("a job");
        assert_eq!(row.state, JobState::Running, "{name}");
        assert_eq!(row.plan_id.as_deref(), Some("p1"));
        assert_eq!(row.role, Role::Responder);
        assert!(!row.dry_run);
        assert_eq!(store.job(9999).expect("none"), None, "{name}");
        let stored = store.job_items(job, None).expect("items");
        assert_eq!(stored.len(), 3, "{name}: nothing lost");
        assert_eq!(stored[1].folder, Folder::Other("Projects/2024".into()));
        assert!(stored[1].read && stored[1].depth == 2, "{name}");
        assert_eq!(stored[0].delivered_at, items[0].delivered_at, "{name}");

        store.set_job_audit_head(job, "7 sha256:abc").expect("head");
        store
            .set_job_state(retry, JobState::Finished)
            .expect("state");
        let unfinished: Vec<i64> = store
            .unfinished_jobs()
            .expect("unfinished")
            .iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(unfinished, vec![job], "{name}");
        let listed: Vec<(i64, JobState, Option<String>, bool)> = store
            .jobs(10)
            .expect("jobs")
            .into_iter()
            .map(|j| (j.id, j.state, j.audit_head, j.finished_at.is_some()))
            .collect();
        assert_eq!(listed.len(), 2, "{name}: newest first");
        assert!(
            listed[0].3 && !listed[1].3,
            "{name}: finish time only when finished"
        );
        assert_eq!(store.jobs(1).expect("one").len(), 1, "{name}: limit");
        let pending = store
            .job_items(job, Some(ItemState::Pending))
            .expect("pending")
            .len();
        let counts = store.item_counts(job).expect("counts");
        seen.push((listed, pending, counts, item_lines(&store, job)));
    }
    assert_eq!(seen[0], seen[1], "the same ledger on both backends");
}

#[test]
fn a_copy_is_claimed_by_one_job_at_a_time_and_a_retraction_restored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = Vec::new();
    for raw in backends(&dir) {
        let name = raw.name();
        let mut store = raw.open();
        let a = plan_and_job(&mut store, "pa", &["a@x", "b@x"]);
        let b = plan_and_job(&mut store, "pb", &["a@x", "c@x"]);
        let lines = item_lines(&store, b);
        assert_eq!(
            lines[0].1,
            ItemState::Skipped,
            "{name}: a@x is held by job {a}"
        );
        assert_eq!(lines[0].2, Some(FailureReason::InAnotherJob));
        assert!(
            lines[0].3.contains(&format!("held by job {a}")),
            "{lines:?}"
        );
        assert_eq!(lines[1].1, ItemState::Pending, "{name}: c@x is free");
        let claim = store
            .copy_claim(MESSAGE, (TENANT, "a@x"), None)
            .expect("claim")
            .expect("held");
        assert_eq!((claim.job, claim.state), (a, ItemState::Pending), "{name}");
        assert_eq!(
            store
                .copy_claim(MESSAGE, (TENANT, "a@x"), Some(a))
                .expect("except"),
            None,
            "{name}: not against its own job"
        );
        // A dry run claims nothing.
        store
            .create_job(&new_job(JobKind::Retract, None, None, true), &[item("c@x")])
            .expect("dry run");
        // Appends are claimed the same way.
        let appended = store
            .append_job_items(a, &[item("c@x"), item("d@x")])
            .expect("append");
        assert_eq!(
            appended.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            vec![ItemState::Skipped, ItemState::Pending],
            "{name}: c@x is job {b}'s"
        );
        let items_a = store.job_items(a, None).expect("items");
        // a@x fails: the claim goes; b@x succeeds: it stays, as "already retracted".
        store
            .finish_item_failed(items_a[0].id, FailureReason::AlreadyGone, "404", "gone")
            .expect("failed");
        store
            .finish_item_succeeded(
                items_a[1].id,
                &Folder::Inbox,
                false,
                Some("n1"),
                &Folder::Trash,
                "moved",
            )
            .expect("succeeded");
        assert_eq!(
            store.copy_claim(MESSAGE, (TENANT, "a@x"), None).expect("c"),
            None
        );
        let held = store
            .copy_claim(MESSAGE, (TENANT, "b@x"), None)
            .expect("c")
            .expect("retracted");
        assert!(held.detail().contains("already retracted"), "{name}");
        assert_eq!(
            store.retracted_mailboxes(MESSAGE).expect("r"),
            vec!["b@x".to_string()]
        );
        let restorable = store.unrestored_items(a).expect("unrestored");
        assert_eq!(
            restorable.iter().copied().collect::<Vec<_>>(),
            vec![items_a[1].id]
        );

        // Restore b@x: one restore job holds it; a second is skipped.
        let mut undo = item("b@x");
        undo.source_item = Some(items_a[1].id);
        undo.to_folder = Some(Folder::Trash);
        let r1 = store
            .create_job(
                &new_job(JobKind::Restore, Some("pa"), Some(a), false),
                &[undo.clone()],
            )
            .expect("restore");
        let r2 = store
            .create_job(
                &new_job(JobKind::Restore, Some("pa"), Some(a), false),
                &[undo],
            )
            .expect("restore again");
        let second = item_lines(&store, r2);
        assert_eq!(
            second[0].1,
            ItemState::Skipped,
            "{name}: not restored twice"
        );
        assert!(
            second[0].3.contains(&format!("restored by job {r1}")),
            "{second:?}"
        );
        assert!(store.unrestored_items(a).expect("u").is_empty(), "{name}");
        assert_eq!(
            store.restore_jobs_of(a).expect("restores"),
            vec![(r1, JobState::Running), (r2, JobState::Running)]
        );
        let r_item = store.job_items(r1, None).expect("r items");
        assert_eq!(r_item[0].to_folder, Some(Folder::Trash), "{name}");
        store
            .finish_item_succeeded(
                r_item[0].id,
                &Folder::Trash,
                false,
                None,
                &Folder::Inbox,
                "back",
            )
            .expect("restored");
        assert!(
            store.retracted_mailboxes(MESSAGE).expect("r").is_empty(),
            "{name}"
        );
        assert_eq!(
            store.copy_claim(MESSAGE, (TENANT, "b@x"), None).expect("c"),
            None
        );

        let outcomes: Vec<(String, Option<Result<(), FailureReason>>)> = store
            .item_outcomes(None, None)
            .expect("outcomes")
            .into_iter()
            .map(|(o, m)| (m, o.result))
            .collect();
        let last: Vec<(String, ItemState)> = store
            .last_outcomes(MESSAGE)
            .expect("last")
            .into_iter()
            .map(|it| (it.mailbox, it.state))
            .collect();
        seen.push((item_lines(&store, a), item_lines(&store, b), outcomes, last));
    }
    assert_eq!(seen[0], seen[1], "the same claims on both backends");
}

#[test]
fn only_the_lease_holder_acts_and_a_stale_or_dead_holder_is_taken_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    for raw in backends(&dir) {
        let name = raw.name();
        let mut store = raw.open();
        let job = plan_and_job(&mut store, "p", &["a@x", "b@x", "c@x"]);
        let items = store.job_items(job, None).expect("items");
        let me = holder("me", "host-a");
        let other = holder("other", "host-b");
        assert_eq!(store.job_lease(job).expect("lease"), None, "{name}");
        assert_eq!(
            store.acquire_job_lease(job, &me, STALE).expect("a"),
            Ok(LeaseTaken::Free)
        );
        assert_eq!(
            store.acquire_job_lease(job, &me, STALE).expect("a"),
            Ok(LeaseTaken::Free)
        );
        let refused = store
            .acquire_job_lease(job, &other, STALE)
            .expect("b")
            .expect_err("a live holder keeps it");
        assert_eq!(refused.holder, me, "{name}");
        assert!(
            store.heartbeat_job_lease(job, "me").expect("beat"),
            "{name}"
        );
        assert!(
            !store.heartbeat_job_lease(job, "other").expect("beat"),
            "{name}"
        );
        assert_eq!(
            store.job_run_check(job, "me").expect("check"),
            (JobState::Running, true)
        );
        assert_eq!(
            store.job_run_check(job, "other").expect("check"),
            (JobState::Running, false)
        );

        // Acting needs the lease.
        let err = store
            .mark_in_flight(items[0].id, "id-a", "other")
            .expect_err("not leased");
        assert!(
            matches!(err, StoreError::NotLeased { item } if item == items[0].id),
            "{name}"
        );
        store
            .mark_in_flight(items[0].id, "id-a2", "me")
            .expect("leased");
        assert!(matches!(
            store.record_sending(items[0].id, "id-a2", Some("v1"), "other"),
            Err(StoreError::NotLeased { .. })
        ));
        store
            .record_sending(items[0].id, "id-a2", Some("v1"), "me")
            .expect("sending");
        assert_eq!(
            store.sent_copy(items[0].id).expect("sent"),
            Some(("id-a2".to_string(), Some("v1".to_string())))
        );
        assert_eq!(store.sent_copy(items[1].id).expect("none"), None, "{name}");
        // Not for a pending item, nor for a settled one.
        assert!(
            store.record_sending(items[1].id, "x", None, "me").is_err(),
            "{name}"
        );
        store
            .finish_item_failed(items[2].id, FailureReason::AlreadyGone, "404", "gone")
            .expect("failed");
        assert!(
            store.mark_in_flight(items[2].id, "x", "me").is_err(),
            "{name}: settled"
        );
        let mid = store
            .job_items(job, Some(ItemState::InFlight))
            .expect("in flight");
        assert_eq!(mid.len(), 1);
        assert_eq!(mid[0].copy_id.as_deref(), Some("id-a2"), "{name}");

        // A silent holder (heartbeat an hour old) is taken over; it can no longer act or end
        // the run.
        raw.exec(&format!(
            "UPDATE job SET lease_heartbeat = lease_heartbeat - 3600 WHERE id = {job}"
        ));
        match store
            .acquire_job_lease(job, &other, STALE)
            .expect("take over")
        {
            Ok(LeaseTaken::TakenOver(prev)) => assert_eq!(prev.holder, me, "{name}"),
            got => panic!("{name}: {got:?}"),
        }
        assert_eq!(
            store.job_lease(job).expect("l").map(|l| l.holder),
            Some(other.clone())
        );
        assert!(
            !store.heartbeat_job_lease(job, "me").expect("beat"),
            "{name}"
        );
        assert!(
            store.mark_in_flight(items[1].id, "id-b", "me").is_err(),
            "{name}"
        );
        assert!(
            !store
                .end_job_run(job, "me", JobState::Finished)
                .expect("end"),
            "{name}"
        );
        // Releasing is the holder's: another's release changes nothing.
        store.release_job_lease(job, "me").expect("release");
        assert!(store.job_lease(job).expect("l").is_some(), "{name}");

        // A dead process of this host is taken over at once, heartbeat fresh or not.
        let mut gone = Command::new("true").spawn().expect("spawn");
        let dead_pid = gone.id();
        gone.wait().expect("wait");
        let here = host_name();
        let dead = LeaseHolder {
            owner: "dead".into(),
            pid: dead_pid,
            host: here.clone(),
        };
        store.release_job_lease(job, "other").expect("release");
        assert_eq!(store.job_lease(job).expect("l"), None, "{name}");
        assert_eq!(
            store.acquire_job_lease(job, &dead, STALE).expect("d"),
            Ok(LeaseTaken::Free)
        );
        let successor = holder("successor", &here);
        assert!(
            matches!(
                store.acquire_job_lease(job, &successor, STALE).expect("s"),
                Ok(LeaseTaken::TakenOver(ref l)) if l.holder.owner == "dead"
            ),
            "{name}"
        );
        assert!(
            store
                .end_job_run(job, "successor", JobState::Finished)
                .expect("end")
        );
        let row = store.job(job).expect("job").expect("a job");
        assert_eq!(row.state, JobState::Finished, "{name}");
        assert!(row.finished_at.is_some(), "{name}");
        // No such job: nothing to hold.
        assert_eq!(
            store.acquire_job_lease(4242, &me, STALE).expect("none"),
            Ok(LeaseTaken::Free),
            "{name}"
        );
    }
}

#[test]
fn cancel_reset_and_transactions_behave_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = Vec::new();
    for raw in backends(&dir) {
        let name = raw.name();
        let mut store = raw.open();
        let job = plan_and_job(&mut store, "p", &["a@x", "b@x", "c@x"]);
        let ids: Vec<i64> = store
            .job_items(job, None)
            .expect("items")
            .iter()
            .map(|it| it.id)
            .collect();
        store
            .acquire_job_lease(job, &holder("me", "h"), STALE)
            .expect("lease")
            .expect("free");
        // A failing batch leaves nothing behind: the first mark is rolled back.
        let failed = store.in_transaction(|s| {
            s.mark_in_flight(ids[0], "x", "me")?;
            s.mark_in_flight(ids[1], "x", "not-me")
        });
        assert!(
            matches!(failed, Err(StoreError::NotLeased { .. })),
            "{name}: {failed:?}"
        );
        assert_eq!(
            store.item_counts(job).expect("c").in_flight,
            0,
            "{name}: rolled back"
        );
        // A whole batch commits.
        let n = store
            .in_transaction(|s| {
                for id in &ids {
                    s.mark_in_flight(*id, "x", "me")?;
                }
                Ok(ids.len())
            })
            .expect("batch");
        assert_eq!(
            store.item_counts(job).expect("c").in_flight,
            n as u64,
            "{name}"
        );
        store.reset_item_pending(ids[2]).expect("reset");
        store
            .reset_item_pending(ids[2])
            .expect("reset twice is harmless");
        store
            .finish_item_succeeded(ids[0], &Folder::Inbox, true, None, &Folder::Trash, "ok")
            .expect("ok");
        // A settled item stays settled.
        store
            .finish_item_failed(ids[0], FailureReason::ProviderError, "500", "late")
            .expect("no-op");
        assert_eq!(
            store.request_cancel(job).expect("cancel"),
            Some(JobState::Running)
        );
        assert_eq!(
            store.request_cancel(job).expect("again"),
            Some(JobState::Cancelled)
        );
        assert_eq!(store.request_cancel(777).expect("none"), None, "{name}");
        let until = Utc::now() + chrono::Duration::days(1);
        let counts = store.item_counts(job).expect("counts");
        let outcomes = store.item_outcomes(None, Some(until)).expect("o").len();
        let none_yet = store.item_outcomes(Some(until), None).expect("o").len();
        seen.push((item_lines(&store, job), counts, outcomes, none_yet));
    }
    assert_eq!(seen[0], seen[1], "the same on both backends");
    assert_eq!(seen[0].2, 1, "one settled retract item");
    assert_eq!(seen[0].3, 0, "none after the window");
}

/// What an item holds after acting, without its mailbox and times: (state, copy id, folder,
/// read, new id, to folder, reason, provider code, detail).
type Acted = (
    ItemState,
    Option<String>,
    Folder,
    bool,
    Option<String>,
    Option<Folder>,
    Option<FailureReason>,
    Option<String>,
    Option<String>,
);

fn acted(store: &Store, job: i64) -> Vec<Acted> {
    store
        .job_items(job, None)
        .expect("items")
        .into_iter()
        .map(|it| {
            (
                it.state,
                it.copy_id,
                it.folder,
                it.read,
                it.new_id,
                it.to_folder,
                it.reason,
                it.provider_code,
                it.detail,
            )
        })
        .collect()
}

/// A planned outcome of a test item: where the copy was (read?), its new id, where it went;
/// or why it failed.
type Outcome = (
    i64,
    Result<(Folder, bool, Option<&'static str>, Folder), FailureReason>,
);

fn as_finish((item, o): &Outcome) -> ItemFinish<'_> {
    match o {
        Ok((from, read, new_id, to)) => ItemFinish::Succeeded {
            item: *item,
            from,
            read: *read,
            new_id: *new_id,
            to,
            detail: "moved",
        },
        Err(reason) => ItemFinish::Failed {
            item: *item,
            reason: *reason,
            provider_code: "ErrorItemNotFound",
            detail: "gone",
        },
    }
}

/// A batch's marks and outcomes written at once (one statement each on PostgreSQL) leave
/// exactly what one item at a time leaves, on both backends: the fence refuses the whole
/// batch when one item's job is not ours (naming that item, nothing left marked), a success
/// keeps where the copy was and went, a failure its reason, and a settled item stays settled.
#[test]
fn marks_and_outcomes_of_a_batch_at_once_are_those_of_one_item_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = Vec::new();
    for raw in backends(&dir) {
        let name = raw.name();
        let mut store = raw.open();
        let at_once = plan_and_job(&mut store, "p1", &["a1@x", "a2@x", "a3@x", "a4@x"]);
        let one_by_one = plan_and_job(&mut store, "p2", &["b1@x", "b2@x", "b3@x", "b4@x"]);
        let theirs = plan_and_job(&mut store, "p3", &["c1@x"]);
        for (job, owner) in [(at_once, "me"), (one_by_one, "me"), (theirs, "other")] {
            store
                .acquire_job_lease(job, &holder(owner, "h"), STALE)
                .expect("lease")
                .expect("free");
        }
        let ids = |job: i64| -> Vec<i64> {
            store
                .job_items(job, None)
                .expect("items")
                .iter()
                .map(|it| it.id)
                .collect()
        };
        let (a, b, c) = (ids(at_once), ids(one_by_one), ids(theirs));

        // One item of another holder's job: the batch is refused, naming it, and rolled back.
        let refused = store.in_transaction(|s| {
            s.mark_items_in_flight(&[(a[0], "id-0"), (c[0], "id-c"), (a[1], "id-1")], "me")
        });
        assert!(
            matches!(refused, Err(StoreError::NotLeased { item }) if item == c[0]),
            "{name}: {refused:?}"
        );
        assert_eq!(
            store.item_counts(at_once).expect("c").in_flight,
            0,
            "{name}"
        );
        assert_eq!(store.item_counts(theirs).expect("c").in_flight, 0, "{name}");

        let marks = [(0, "id-0"), (1, "id-1"), (2, "id-2"), (3, "id-3")];
        let batch: Vec<(i64, &str)> = marks.iter().map(|(i, c)| (a[*i], *c)).collect();
        store
            .in_transaction(|s| s.mark_items_in_flight(&batch, "me"))
            .expect("marked");
        for (i, c) in marks {
            store.mark_in_flight(b[i], c, "me").expect("marked");
        }
        let outcomes = |items: &[i64]| -> Vec<Outcome> {
            vec![
                (
                    items[0],
                    Ok((Folder::Inbox, true, Some("new-0"), Folder::Junk)),
                ),
                (items[1], Ok((Folder::Archive, false, None, Folder::Trash))),
                (items[2], Err(FailureReason::AlreadyGone)),
            ]
        };
        let mine = outcomes(&a);
        let finishes: Vec<ItemFinish<'_>> = mine.iter().map(as_finish).collect();
        store
            .in_transaction(|s| s.finish_items(&finishes))
            .expect("finished");
        for o in &outcomes(&b) {
            match as_finish(o) {
                ItemFinish::Succeeded {
                    item,
                    from,
                    read,
                    new_id,
                    to,
                    detail,
                } => store.finish_item_succeeded(item, from, read, new_id, to, detail),
                ItemFinish::Failed {
                    item,
                    reason,
                    provider_code,
                    detail,
                } => store.finish_item_failed(item, reason, provider_code, detail),
            }
            .expect("finished");
        }
        // Settled stays settled, at once as one by one.
        let late = [ItemFinish::Failed {
            item: a[0],
            reason: FailureReason::ProviderError,
            provider_code: "500",
            detail: "late",
        }];
        store.finish_items(&late).expect("no-op");
        store
            .finish_item_failed(b[0], FailureReason::ProviderError, "500", "late")
            .expect("no-op");

        let (batch_items, single_items) = (acted(&store, at_once), acted(&store, one_by_one));
        assert_eq!(batch_items, single_items, "{name}");
        assert_eq!(batch_items[0].0, ItemState::Succeeded, "{name}");
        assert_eq!(batch_items[0].4.as_deref(), Some("new-0"), "{name}");
        assert_eq!(batch_items[2].0, ItemState::Failed, "{name}");
        assert_eq!(batch_items[3].0, ItemState::InFlight, "{name}");
        assert_eq!(batch_items[3].1.as_deref(), Some("id-3"), "{name}");
        seen.push(batch_items);
    }
    assert_eq!(seen[0], seen[1], "the same on both backends");
}

/// A job's outcome per (tenant, message), as the trace's retraction state is set from it:
/// succeeded items, and items neither succeeded nor skipped, per message; a line skipped
/// outside every tenant is not counted. The same on both backends, and as read item by item.
#[test]
fn outcomes_per_message_are_counted_alike_on_both_backends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seen = Vec::new();
    for raw in backends(&dir) {
        let name = raw.name();
        let mut store = raw.open();
        let other = "<follow-up@evil.example>";
        let mut items: Vec<ItemRow> = ["a@x", "b@x", "c@x", "d@x"].map(item).to_vec();
        let mut second = item("a@x");
        second.message_id = other.into();
        let mut elsewhere = item("e@y");
        elsewhere.tenant = "fabrikam".into();
        let mut outside = item("f@outside.example");
        outside.tenant = String::new();
        outside.state = ItemState::Skipped;
        outside.reason = Some(FailureReason::External);
        items.extend([second, elsewhere, outside]);
        store.insert_plan("p", "d", Utc::now(), "{}").expect("plan");
        let job = store
            .create_job(&new_job(JobKind::Retract, Some("p"), None, false), &items)
            .expect("job");
        let ids: BTreeMap<(String, String), i64> = store
            .job_items(job, None)
            .expect("items")
            .iter()
            .map(|it| ((it.mailbox.clone(), it.message_id.clone()), it.id))
            .collect();
        let id = |m: &str, mid: &str| ids[&(m.to_string(), mid.to_string())];
        let moved = |s: &Store, item: i64| {
            s.finish_item_succeeded(item, &Folder::Inbox, false, None, &Folder::Junk, "ok")
        };
        moved(&store, id("a@x", MESSAGE)).expect("a");
        moved(&store, id("b@x", MESSAGE)).expect("b");
        store
            .finish_item_failed(
                id("c@x", MESSAGE),
                FailureReason::NotAuthorized,
                "403",
                "no",
            )
            .expect("c");
        // d@x stays pending.
        moved(&store, id("a@x", other)).expect("a, second message");
        store
            .finish_item_failed(
                id("e@y", MESSAGE),
                FailureReason::AlreadyGone,
                "404",
                "gone",
            )
            .expect("e");
        let got: Vec<(String, String, u64, u64)> = store
            .message_outcomes(job)
            .expect("outcomes")
            .into_iter()
            .map(|m| (m.tenant, m.message_id, m.succeeded, m.unsettled_or_failed))
            .collect();
        // The same, item by item.
        let mut by_item: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for it in store.job_items(job, None).expect("items") {
            if it.state == ItemState::Skipped && it.tenant.is_empty() {
                continue;
            }
            let e = by_item.entry((it.tenant, it.message_id)).or_default();
            match it.state {
                ItemState::Succeeded => e.0 += 1,
                ItemState::Skipped => {}
                _ => e.1 += 1,
            }
        }
        let by_item: Vec<(String, String, u64, u64)> = by_item
            .into_iter()
            .map(|((t, m), (ok, not_ok))| (t, m, ok, not_ok))
            .collect();
        assert_eq!(got, by_item, "{name}");
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "the same on both backends");
    assert_eq!(
        seen[0],
        vec![
            (
                "contoso".to_string(),
                "<campaign@evil.example>".to_string(),
                2,
                2
            ),
            (
                "contoso".to_string(),
                "<follow-up@evil.example>".to_string(),
                1,
                0
            ),
            (
                "fabrikam".to_string(),
                "<campaign@evil.example>".to_string(),
                0,
                1
            ),
        ]
    );
}

// ---- real processes ----

const CHILD_ENV: &str = "CLAWBACK_TEST_JOBS_CHILD";
const PROCESSES: usize = 5;
const COPIES: usize = 120;
const LEASED_JOBS: usize = 200;

fn open_from_env() -> Store {
    if let Ok(p) = std::env::var("STORE_SQLITE") {
        return Store::open(Path::new(&p)).expect("open sqlite");
    }
    let url = std::env::var("STORE_PG").expect("STORE_PG");
    let loc = PgLocator::parse(&url, None).expect("locator");
    Store::open_postgres(&loc, None).expect("open postgres")
}

/// Waits until `path` exists (the parent's "go" or "done"); never a clock in the assertion.
fn wait_for(path: &Path) {
    while !path.exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Child process: races for the leases of jobs `JOBS` (all children in the same order, so
/// that they collide on each), for the shared plan and, with a job of its own, for the same
/// `COPIES` copies; writes what it got to `<tag>.out`, then stays alive (a live holder) until
/// the parent says done.
#[test]
#[ignore = "run as a child process by the racing tests in this file"]
fn jobs_child() {
    let Ok(tag) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var("RACE_DIR").expect("RACE_DIR"));
    let jobs: Vec<i64> = std::env::var("JOBS")
        .expect("JOBS")
        .split(',')
        .map(|j| j.parse().expect("job id"))
        .collect();
    let mut store = open_from_env();
    let me = LeaseHolder::this_process();
    wait_for(&dir.join("go"));
    let mut won = Vec::new();
    for job in jobs {
        if store
            .acquire_job_lease(job, &me, STALE)
            .expect("acquire")
            .is_ok()
        {
            won.push(job.to_string());
        }
    }
    // The plan's job is made with its audit entry, in one transaction.
    let plan = match store.create_job_audited(
        &new_job(JobKind::Retract, Some("shared"), None, false),
        &[],
        |job| {
            let mut r = store_support::audit_record(1);
            r.action = "plan_applied".into();
            r.operator = tag.clone();
            r.job_id = Some(job.to_string());
            vec![r]
        },
    ) {
        Ok(_) => "won".to_string(),
        Err(StoreError::PlanSpent { .. }) => "spent".to_string(),
        Err(e) => panic!("create_job: {e}"),
    };
    // Its own job, whose copies arrive in appends of 10 (as a job planned while it runs).
    let mine = store
        .create_job(&new_job(JobKind::Retract, None, None, false), &[])
        .expect("own job");
    let copies: Vec<ItemRow> = (0..COPIES).map(|i| item(&format!("m{i:03}@x"))).collect();
    for chunk in copies.chunks(10) {
        store.append_job_items(mine, chunk).expect("append");
    }
    std::fs::write(
        dir.join(format!("{tag}.out")),
        format!("{plan}\n{mine}\n{}\n{}", me.owner, won.join(" ")),
    )
    .expect("write result");
    wait_for(&dir.join("done"));
}

/// Each child's result: its plan answer, its own job, its lease owner, the jobs whose lease
/// it won.
fn race(raw: &Raw, dir: &Path, jobs: &[i64]) -> Vec<(String, i64, String, Vec<i64>)> {
    let exe = std::env::current_exe().expect("test binary");
    let (key, value) = raw.env();
    let children: Vec<_> = (0..PROCESSES)
        .map(|i| {
            Command::new(&exe)
                .args(["--exact", "jobs_child", "--ignored", "--nocapture"])
                .env(CHILD_ENV, format!("c{i}"))
                .env("RACE_DIR", dir)
                .env(
                    "JOBS",
                    jobs.iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                )
                .env(key, &value)
                .spawn()
                .expect("spawn child")
        })
        .collect();
    let mut children = children;
    std::fs::write(dir.join("go"), "").expect("go");
    let outs: Vec<std::path::PathBuf> = (0..PROCESSES)
        .map(|i| dir.join(format!("c{i}.out")))
        .collect();
    // Until every child has written its result; a child that ended without one failed.
    while !outs.iter().all(|o| o.exists()) {
        for (i, c) in children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait().expect("child") {
                assert!(
                    outs[i].exists(),
                    "child {i} ended without a result: {status}"
                );
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Every child still lives (holding what it won) until all have tried.
    std::fs::write(dir.join("done"), "").expect("done");
    for mut c in children {
        let status = c.wait().expect("child");
        assert!(status.success(), "a child failed: {status}");
    }
    outs.iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("result");
            let lines: Vec<&str> = text.lines().collect();
            (
                lines[0].to_string(),
                lines[1].parse().expect("job id"),
                lines[2].to_string(),
                lines
                    .get(3)
                    .map(|l| {
                        l.split_whitespace()
                            .map(|j| j.parse().expect("id"))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn processes_racing_for_one_lease_one_plan_and_the_same_copies_find_one_winner_each() {
    let top = tempfile::tempdir().expect("tempdir");
    for raw in backends(&top) {
        let name = raw.name();
        let mut store = raw.open();
        store
            .insert_plan("shared", "d", Utc::now(), "{}")
            .expect("plan");
        let jobs: Vec<i64> = (0..LEASED_JOBS)
            .map(|_| {
                store
                    .create_job(&new_job(JobKind::Retract, None, None, false), &[])
                    .expect("job")
            })
            .collect();
        let dir = top.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let results = race(&raw, &dir, &jobs);

        for job in &jobs {
            let winners: Vec<&String> = results
                .iter()
                .filter(|r| r.3.contains(job))
                .map(|r| &r.2)
                .collect();
            assert_eq!(
                winners.len(),
                1,
                "{name}: job {job} has one lease holder: {winners:?}"
            );
            let held = store.job_lease(*job).expect("lease").expect("held");
            assert_eq!(
                &held.holder.owner, winners[0],
                "{name}: the winner holds it"
            );
        }
        let plan_winners = results.iter().filter(|r| r.0 == "won").count();
        assert_eq!(plan_winners, 1, "{name}: a plan is spent once: {results:?}");
        // …and audited once, by the process whose job holds it, with that job's id.
        let entries = store.audit_entries().expect("audit").expect("readable");
        let spent_by = store
            .job_of_plan("shared")
            .expect("job of plan")
            .expect("a job");
        assert_eq!(
            entries
                .iter()
                .map(|e| e.record.job_id.clone())
                .collect::<Vec<_>>(),
            vec![Some(spent_by.to_string())],
            "{name}: one plan_applied entry, the spending job's"
        );
        assert_eq!(store.audit_verify().expect("verify"), Ok(1), "{name}");
        assert_eq!(
            results.iter().filter(|r| r.0 == "spent").count(),
            PROCESSES - 1,
            "{name}"
        );

        // Every copy: exactly one live item across the racing jobs, the others skipped as
        // held by that job; no item lost.
        let mut live: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut total = 0;
        for r in &results {
            let mine = r.1;
            let items = store.job_items(mine, None).expect("items");
            total += items.len();
            for it in items {
                match it.state {
                    ItemState::Pending => live.entry(it.mailbox).or_default().push(mine),
                    ItemState::Skipped => {
                        assert_eq!(it.reason, Some(FailureReason::InAnotherJob), "{name}")
                    }
                    other => panic!("{name}: unexpected {other:?}"),
                }
            }
        }
        assert_eq!(
            total,
            PROCESSES * COPIES,
            "{name}: every appended item is stored"
        );
        assert_eq!(live.len(), COPIES, "{name}: every copy is claimed");
        let twice: Vec<_> = live.iter().filter(|(_, jobs)| jobs.len() != 1).collect();
        assert!(
            twice.is_empty(),
            "{name}: copies claimed by two jobs: {twice:?}"
        );
        for (mailbox, jobs) in &live {
            let claim = store
                .copy_claim(MESSAGE, (TENANT, mailbox), None)
                .expect("claim")
                .expect("held");
            assert_eq!(claim.job, jobs[0], "{name}: {mailbox}");
        }
    }
}
