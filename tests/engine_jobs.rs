//! Job control against the lab's demo scenario: canary runs, cancel and resume, retry of the
//! items that failed with one reason, partial restore. Side effects are read from the lab.

#![allow(clippy::unwrap_used)]

mod lab_support;
use lab_support::synced_lab;

use clawback::engine::Engine;
use clawback::engine::execute::{JobEvent, JobReport, RunOptions};
use clawback::engine::plan::{Plan, RetractRequest};
use clawback::lab::demo::{self, CAMPAIGN_MESSAGE_ID, CONTOSO, FABRIKAM};
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{FailureReason, Folder, RetractAction, Trigger};
use clawback::store::Store;
use clawback::store::jobs::{ItemState, JobState};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

struct World {
    server: LabServer,
    engine: Engine,
    config: clawback::config::Config,
    dir: tempfile::TempDir,
}

async fn world() -> World {
    let lab = synced_lab(&demo::build(7), LabOptions::default(), &[CONTOSO], 30).await;
    World {
        config: lab.config.clone(),
        engine: Engine::new(lab.config, lab.store).unwrap(),
        server: lab.server,
        dir: lab.dir,
    }
}

fn request(action: RetractAction) -> RetractRequest {
    RetractRequest {
        message_ids: vec![CAMPAIGN_MESSAGE_ID.into()],
        query: None,
        tenants: vec![CONTOSO.into()],
        only: vec![],
        exclude: vec![],
        depth: 0,
        action,
        trigger: Trigger::Manual,
        reason: "engine_jobs".into(),
    }
}

/// A plan of the campaign in contoso and the job made from it.
async fn planned_job(w: &World, action: RetractAction) -> (Plan, i64) {
    let plan = w.engine.build_plan(request(action)).await.unwrap();
    let job = w.engine.create_job(&plan, false).unwrap();
    (plan, job)
}

/// Makes the plan's job and runs it; returns its report and the sub-requests the lab served
/// meanwhile.
async fn run_counting_served(
    engine: &Engine,
    server: &LabServer,
    plan: &Plan,
) -> (JobReport, usize) {
    let before: usize = server.lab.limits.served().iter().sum();
    let job = engine.create_job(plan, false).unwrap();
    let report = engine
        .run_job(job, &RunOptions::default(), &|_| {})
        .await
        .unwrap();
    (
        report,
        server.lab.limits.served().iter().sum::<usize>() - before,
    )
}

/// Engine-made actions per mailbox on the campaign (user actions excluded).
fn engine_actions(server: &LabServer) -> BTreeMap<String, usize> {
    let state = server.lab.state();
    let mut out = BTreeMap::new();
    for a in &state.actions {
        if a.internet_message_id == CAMPAIGN_MESSAGE_ID && !a.action.starts_with("user") {
            *out.entry(a.mailbox.to_ascii_lowercase()).or_insert(0) += 1;
        }
    }
    out
}

fn folder_of(server: &LabServer, mailbox: &str) -> Vec<Folder> {
    server
        .lab
        .state()
        .copies_of(CAMPAIGN_MESSAGE_ID)
        .into_iter()
        .filter(|(_, mb, _)| mb.eq_ignore_ascii_case(mailbox))
        .map(|(_, _, c)| c.folder.clone())
        .collect()
}

async fn user_moves(server: &LabServer, mailbox: &str, folder: &str) {
    user_moves_in(server, CONTOSO, mailbox, folder).await;
}

async fn user_moves_in(server: &LabServer, tenant: &str, mailbox: &str, folder: &str) {
    let r = reqwest::Client::new()
        .post(format!("{}/_lab/user-action", server.base_url()))
        .json(&serde_json::json!({
            "tenant": tenant, "mailbox": mailbox,
            "message_id": CAMPAIGN_MESSAGE_ID, "folder": folder,
        }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_acts_on_n_mailboxes_verifies_then_fans_out() {
    let w = world().await;
    let (plan, job) = planned_job(&w, RetractAction::Junk).await;
    let events = Mutex::new(Vec::new());
    let sink = |e: JobEvent| events.lock().unwrap().push(e);
    let report = w
        .engine
        .run_job(
            job,
            &RunOptions {
                canary: 5,
                cancel: None,
                interrupt: None,
            },
            &sink,
        )
        .await
        .unwrap();
    assert_eq!(report.state, JobState::Finished, "{report:?}");
    let events = events.into_inner().unwrap();
    // The canary is verified after exactly 5 mailboxes succeeded, before any other item.
    let canary_at = events
        .iter()
        .position(|e| matches!(e, JobEvent::CanaryPassed { mailboxes: 5, .. }))
        .expect("canary passed");
    let before = events[..canary_at]
        .iter()
        .filter(|e| matches!(e, JobEvent::ItemSucceeded { .. }))
        .count();
    assert_eq!(before, 5);
    let acted = engine_actions(&w.server);
    assert_eq!(acted.len(), plan.items.len());
    assert!(acted.values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_leaves_items_pending_and_resume_finishes_them() {
    let w = world().await;
    let (plan, job) = planned_job(&w, RetractAction::Trash).await;
    let cancel = Arc::new(AtomicBool::new(true));
    let report = w
        .engine
        .run_job(
            job,
            &RunOptions {
                canary: 0,
                cancel: Some(cancel),
                interrupt: None,
            },
            &|_| {},
        )
        .await
        .unwrap();
    assert_eq!(report.state, JobState::Cancelled);
    assert_eq!(report.counts.pending as usize, plan.items.len());
    assert!(engine_actions(&w.server).is_empty(), "nothing was sent");
    assert_eq!(w.engine.unfinished_jobs().unwrap().len(), 0);

    let report = run_finished(&w, job).await;
    assert_eq!(report.counts.succeeded as usize, plan.items.len());
    assert!(engine_actions(&w.server).values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_by_reason_acts_only_on_those_failures_and_partial_restore() {
    let w = world().await;
    let plan = w
        .engine
        .build_plan(request(RetractAction::Junk))
        .await
        .unwrap();
    // Between plan and apply, three users delete the message themselves.
    let gone: Vec<String> = plan
        .items
        .iter()
        .take(3)
        .map(|i| i.mailbox.clone())
        .collect();
    for mb in &gone {
        user_moves(&w.server, mb, "trash").await;
    }
    let job = w.engine.create_job(&plan, false).unwrap();
    let report = w
        .engine
        .run_job(job, &RunOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(
        report.failed_by_reason,
        BTreeMap::from([(FailureReason::AlreadyGone, 3)])
    );
    for mb in &gone {
        assert_eq!(folder_of(&w.server, mb), vec![Folder::Trash]);
        assert!(!engine_actions(&w.server).contains_key(mb));
    }

    // They take it back out of Trash; retrying the already_gone failures acts on exactly them.
    for mb in &gone {
        user_moves(&w.server, mb, "inbox").await;
    }
    let before = engine_actions(&w.server);
    let retry = w
        .engine
        .retry_failed(job, FailureReason::AlreadyGone)
        .unwrap();
    let report = w
        .engine
        .run_job(retry, &RunOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.counts.succeeded, 3, "{report:?}");
    let after = engine_actions(&w.server);
    for (mb, n) in &after {
        let was = before.get(mb).copied().unwrap_or(0);
        if gone.contains(mb) {
            assert_eq!((was, *n), (0, 1), "{mb}");
        } else {
            assert_eq!(was, *n, "{mb} was acted on again");
        }
    }
    assert!(
        w.engine
            .retry_failed(job, FailureReason::Throttled)
            .is_err(),
        "no throttled failures to retry"
    );

    // Restore only one address of the first job.
    let one = plan.items[5].mailbox.clone();
    let report = w
        .engine
        .restore(job, std::slice::from_ref(&one), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.counts.succeeded, 1);
    assert_eq!(
        folder_of(&w.server, &one),
        vec![plan.items[5].folder.clone()]
    );
    let other = &plan.items[6].mailbox;
    assert_eq!(folder_of(&w.server, other), vec![Folder::Junk]);
    let items = w
        .engine
        .store()
        .job_items(job, Some(ItemState::Succeeded))
        .unwrap();
    assert_eq!(items.len(), plan.items.len() - 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distribution_list_in_the_trace_expands_to_its_member_mailboxes() {
    use clawback::trace::RecipientKind;
    let w = world().await;
    // A journal report would list the list itself as an envelope recipient.
    let mut record = w
        .engine
        .store()
        .trace_by_message_id(CAMPAIGN_MESSAGE_ID)
        .unwrap()
        .into_iter()
        .find(|r| r.tenant == CONTOSO)
        .unwrap();
    record.id = None;
    record.recipients = vec![];
    record.add_recipient(demo::DEMO_DL, RecipientKind::Envelope);
    w.engine.store().upsert_trace(&[record]).unwrap();

    let mut req = request(RetractAction::Junk);
    req.only = vec![demo::DEMO_DL.to_string()];
    let plan = w.engine.build_plan(req).await.unwrap();

    // Expected from the lab's directory: the list's transitive members with a live copy.
    let (internal, externals): (Vec<String>, Vec<String>) = {
        let state = w.server.lab.state();
        let t = state.tenants.iter().find(|t| t.name == CONTOSO).unwrap();
        let group = t.group(demo::DEMO_DL).unwrap();
        t.transitive_members(group)
            .into_iter()
            .map(|m| m.to_ascii_lowercase())
            .partition(|m| t.domain_of(m).is_some())
    };
    let members: BTreeMap<String, Vec<Folder>> = internal
        .into_iter()
        .map(|m| {
            let folders = folder_of(&w.server, &m);
            (m, folders)
        })
        .collect();
    let want: BTreeMap<String, ()> = members
        .iter()
        .filter(|(mb, folders)| {
            w.server.lab.state().tenants[0].mailbox_granted(mb)
                && folders.iter().any(|f| !f.is_gone())
        })
        .map(|(mb, _)| (mb.clone(), ()))
        .collect();
    let got: BTreeMap<String, ()> = plan.items.iter().map(|i| (i.mailbox.clone(), ())).collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    assert!(
        plan.skipped
            .iter()
            .any(|s| s.address == demo::DEMO_DL && s.reason == FailureReason::NotAMailbox)
    );
    for e in externals {
        assert!(
            plan.skipped
                .iter()
                .any(|s| s.address == e && s.reason == FailureReason::External),
            "{e} is reported external"
        );
    }
}

/// A job made from a fresh Microsoft 365 plan acts on the copies the plan located: one
/// sub-request per copy, none to locate them again; a copy the user moved after planning (its
/// Graph id changed) answers 404 and is located afresh, so it is not acted on twice or wrongly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_plan_is_acted_on_without_locating_again() {
    let w = world().await;
    let plan = w
        .engine
        .build_plan(request(RetractAction::Junk))
        .await
        .unwrap();
    let copies = plan.items.len();
    assert!(copies >= 3, "{copies}");
    let moved = plan.items[0].mailbox.clone();
    user_moves(&w.server, &moved, "deleteditems").await;

    let (report, served) = run_counting_served(&w.engine, &w.server, &plan).await;

    // The moved copy: a 404 on the planned id (counted in `copies`), then a locate (the
    // message list and the same filter in the Inbox: the plan found every copy in the Inbox,
    // so it learned no folder ids), then the six well-known folder ids (the copy is outside
    // the Inbox now), and no action: it is in Deleted Items already. Every other copy:
    // exactly its move.
    assert_eq!(report.counts.succeeded as usize, copies - 1, "{report:?}");
    assert_eq!(
        report.failed_by_reason.get(&FailureReason::AlreadyGone),
        Some(&1),
        "{report:?}"
    );
    assert_eq!(served, copies + 2 + 6, "sub-requests the job cost");
    let actions = engine_actions(&w.server);
    assert_eq!(actions.get(&moved), None, "{actions:?}");
    for it in &plan.items[1..] {
        assert_eq!(actions.get(&it.mailbox), Some(&1), "{}", it.mailbox);
        assert_eq!(folder_of(&w.server, &it.mailbox), vec![Folder::Junk]);
    }
}

/// A mutation whose `in_flight` cannot be committed is not sent: could it not be recorded, a
/// crash right after would leave nothing to reconcile. Here the store refuses the write (a
/// trigger standing in for a full disk); the job stops with nothing sent and every item still
/// pending, and once the store accepts writes again a resume acts on each copy exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_when_in_flight_cannot_be_recorded() {
    let w = world().await;
    let (plan, job) = planned_job(&w, RetractAction::Junk).await;
    let db = rusqlite::Connection::open(Store::path_in(&w.dir.path().join("data"))).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_in_flight BEFORE UPDATE OF state ON job_item \
         WHEN NEW.state = 'in_flight' BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END;",
    )
    .unwrap();

    let report = w
        .engine
        .run_job(job, &RunOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.state, JobState::Cancelled, "{report:?}");
    assert!(
        report
            .stopped
            .as_deref()
            .is_some_and(|s| s.contains("in_flight could not be recorded")),
        "{report:?}"
    );
    assert_eq!(
        report.counts.pending as usize,
        plan.items.len(),
        "{report:?}"
    );
    assert!(engine_actions(&w.server).is_empty(), "nothing may be sent");

    db.execute_batch("DROP TRIGGER refuse_in_flight;").unwrap();
    let report = w
        .engine
        .run_job(job, &RunOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.state, JobState::Finished, "{report:?}");
    assert_eq!(report.counts.succeeded as usize, plan.items.len());
    let actions = engine_actions(&w.server);
    assert_eq!(actions.len(), plan.items.len());
    assert!(actions.values().all(|n| *n == 1), "{actions:?}");
}

/// The same for Google Workspace, where a planned id proves nothing (Gmail ids survive label
/// changes): the job reads each planned copy's labels again (one get, no search) and acts on
/// those still in place; a copy the user junked after planning is seen in Spam and left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_gmail_plan_reads_labels_again_instead_of_searching() {
    let lab = synced_lab(&demo::build(7), LabOptions::default(), &[FABRIKAM], 30).await;
    let engine = Engine::new(lab.config, lab.store).unwrap();
    let mut req = request(RetractAction::Junk);
    req.tenants = vec![FABRIKAM.into()];
    let plan = engine.build_plan(req).await.unwrap();
    let copies = plan.items.len();
    assert!(copies >= 3, "{copies}");
    let junked = plan.items[0].mailbox.clone();
    user_moves_in(&lab.server, FABRIKAM, &junked, "junk").await;

    let (report, served) = run_counting_served(&engine, &lab.server, &plan).await;

    assert_eq!(report.counts.succeeded as usize, copies - 1, "{report:?}");
    assert_eq!(
        report.failed_by_reason.get(&FailureReason::AlreadyGone),
        Some(&1),
        "{report:?}"
    );
    // A get per copy, and a modify for each copy still in place.
    assert_eq!(served, 2 * copies - 1, "sub-requests the job cost");
    let actions = engine_actions(&lab.server);
    assert_eq!(actions.get(&junked), None, "{actions:?}");
    assert_eq!(actions.len(), copies - 1, "{actions:?}");
    assert!(actions.values().all(|n| *n == 1), "{actions:?}");
}

/// A process died with an item in flight; before the job is resumed, the copy turns up in Junk
/// while the job's action (Trash) puts it in Deleted Items. Its request may have landed and a
/// user junked the copy after, or it never went out: the item is settled as `already_moved`
/// and says it may have landed — never "gone", which would hide a retraction that happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_item_whose_copy_moved_elsewhere_is_settled_as_may_have_landed() {
    let w = world().await;
    let (plan, job) = planned_job(&w, RetractAction::Trash).await;
    let mailbox = plan.items[0].mailbox.clone();
    dead_process_left_in_flight(&w, job, &mailbox, false);
    user_moves(&w.server, &mailbox, "junk").await;

    run_finished(&w, job).await;
    let items = w.engine.store().job_items(job, None).unwrap();
    let it = items.iter().find(|it| it.mailbox == mailbox).unwrap();
    assert_eq!(it.state, ItemState::Failed, "{it:?}");
    assert_eq!(it.reason, Some(FailureReason::AlreadyGone));
    let detail = it.detail.as_deref().unwrap_or_default();
    assert!(detail.starts_with("already_moved"), "{detail}");
    assert!(detail.contains("Junk"), "{detail}");
    assert!(
        detail.contains(clawback::provider::MAY_HAVE_LANDED),
        "{detail}"
    );
    // Nothing was sent for it: the user's Junk stands; every other copy went to Trash once.
    assert_eq!(folder_of(&w.server, &mailbox), vec![Folder::Junk]);
    let acted = engine_actions(&w.server);
    assert!(!acted.contains_key(&mailbox), "{acted:?}");
    assert_eq!(acted.len(), plan.items.len() - 1);
}

/// A process that died holding a job: took the lease, marked `mailbox`'s item in flight and,
/// with `recorded`, recorded the copy it was about to send for (as it is in the lab now, whose
/// id is returned); its lease is gone (released, as a stale one would be taken over).
fn dead_process_left_in_flight(w: &World, job: i64, mailbox: &str, recorded: bool) -> String {
    use clawback::store::jobs::LeaseHolder;
    let store = Store::open_in_dir(&w.dir.path().join("data")).unwrap();
    let dead = LeaseHolder {
        owner: "dead-process".into(),
        pid: 0,
        host: "elsewhere".into(),
    };
    store
        .acquire_job_lease(job, &dead, chrono::Duration::seconds(30))
        .unwrap()
        .unwrap();
    let item = store
        .job_items(job, None)
        .unwrap()
        .into_iter()
        .find(|it| it.mailbox == mailbox)
        .unwrap();
    let id = w
        .server
        .lab
        .state()
        .copies_of(CAMPAIGN_MESSAGE_ID)
        .into_iter()
        .find(|(_, mb, _)| mb.eq_ignore_ascii_case(mailbox))
        .map(|(_, _, c)| c.id.clone())
        .unwrap();
    store
        .mark_in_flight(
            item.id,
            item.copy_id.as_deref().unwrap_or(""),
            "dead-process",
        )
        .unwrap();
    if recorded {
        store
            .record_sending(item.id, &id, None, "dead-process")
            .unwrap();
    }
    store.release_job_lease(job, "dead-process").unwrap();
    id
}

/// Runs a job to its end (it must finish); its report.
async fn run_finished(w: &World, job: i64) -> JobReport {
    let report = w
        .engine
        .run_job(job, &RunOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.state, JobState::Finished);
    report
}

/// Runs a one-item job to its end; its item.
async fn run_to_the_end_for_its_item(w: &World, job: i64) -> clawback::store::jobs::ItemRow {
    run_finished(w, job).await;
    let mut items = w.engine.store().job_items(job, None).unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    items.remove(0)
}

/// Undo interrupted in another process after it recorded the copy it was moving back. If that
/// move landed and the user then moved the copy back to Deleted Items, the copy is in the
/// retraction's folder again under a new id: left alone (moved_since, may have landed), so the
/// user's move stands. If it never landed, the copy is the recorded one, unchanged: sent now,
/// and the record says the interrupted attempt had not landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_restore_is_sent_again_only_for_the_unchanged_copy() {
    let w = world().await;
    let (plan, job) = planned_job(&w, RetractAction::Trash).await;
    let report = w
        .engine
        .run_job(job, &RunOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.counts.succeeded as usize, plan.items.len());
    let landed = plan.items[0].mailbox.clone();
    let lost = plan.items[1].mailbox.clone();
    let contoso = w.config.tenants.iter().find(|t| t.name == CONTOSO).unwrap();
    let client = clawback::provider::ProviderClient::new(&w.config, contoso).unwrap();

    // The dead process's move landed for `landed`; then its user trashed the copy again.
    let restore_landed = w
        .engine
        .create_restore_job(job, std::slice::from_ref(&landed))
        .unwrap();
    let sent_for = dead_process_left_in_flight(&w, restore_landed, &landed, true);
    client
        .restore(
            &landed,
            CAMPAIGN_MESSAGE_ID,
            Some(&sent_for),
            &Folder::Inbox,
        )
        .await
        .unwrap();
    user_moves(&w.server, &landed, "trash").await;
    let it = run_to_the_end_for_its_item(&w, restore_landed).await;
    assert_eq!(it.state, ItemState::Failed, "{it:?}");
    assert_eq!(it.reason, Some(FailureReason::MovedSince));
    let detail = it.detail.unwrap_or_default();
    assert_eq!(
        detail.matches(clawback::provider::MAY_HAVE_LANDED).count(),
        1,
        "{detail}"
    );
    assert_eq!(
        folder_of(&w.server, &landed),
        vec![Folder::Trash],
        "the user's move stands"
    );
    assert_eq!(
        engine_actions(&w.server)[&landed],
        2,
        "retraction and the dead process's restore"
    );

    // The dead process's move never went out for `lost`: the copy is unchanged, sent now.
    let restore_lost = w
        .engine
        .create_restore_job(job, std::slice::from_ref(&lost))
        .unwrap();
    let sent_for = dead_process_left_in_flight(&w, restore_lost, &lost, true);
    let it = run_to_the_end_for_its_item(&w, restore_lost).await;
    assert_eq!(it.state, ItemState::Succeeded, "{it:?}");
    let detail = it.detail.clone().unwrap_or_default();
    assert!(detail.contains("had not landed"), "{detail}");
    assert_eq!(folder_of(&w.server, &lost), vec![Folder::Inbox]);
    assert_eq!(
        engine_actions(&w.server)[&lost],
        2,
        "retraction and one restore"
    );
    // This run recorded the copy before sending: the same one the dead process recorded.
    let sent = w.engine.store().sent_copy(it.id).unwrap();
    assert_eq!(sent.map(|(id, _)| id), Some(sent_for));
}
