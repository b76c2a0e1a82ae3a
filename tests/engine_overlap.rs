//! Planning and acting at once (issue 14): a job nobody confirms (`retract --yes`) acts on each
//! copy as soon as it is located. Against the lab: it acts on every copy exactly once, and its
//! plan, job items and audit account for the request exactly as a plan made first and then
//! confirmed; a copy another job holds is left to that job; a run stopped while it was still
//! planning (the future dropped, as in a kill) is resumed exactly once to a complete plan.

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

mod lab_support;
use lab_support::synced_lab;

use clawback::engine::Engine;
use clawback::engine::execute::{JobEvent, JobReport, RunOptions};
use clawback::engine::overlap::PLANNING_DIGEST;
use clawback::engine::plan::{Plan, RetractRequest};
use clawback::lab::demo::{self, CAMPAIGN_MESSAGE_ID};
use clawback::lab::generate::{GenerateKind, GenerateOptions, generate};
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{FailureReason, RetractAction, Trigger};
use clawback::store::jobs::ItemState;
use std::collections::BTreeMap;

struct World {
    server: LabServer,
    engine: Engine,
    _dir: tempfile::TempDir,
}

async fn demo_world() -> World {
    // Both tenants (Graph and Gmail), lists, outside addresses, users who deleted already.
    let lab = synced_lab(&demo::build(7), LabOptions::default(), &[], 30).await;
    World {
        engine: Engine::new(lab.config, lab.store).unwrap(),
        server: lab.server,
        _dir: lab.dir,
    }
}

fn request(only: Vec<String>) -> RetractRequest {
    RetractRequest {
        message_ids: vec![CAMPAIGN_MESSAGE_ID.into()],
        query: None,
        tenants: vec![],
        only,
        exclude: vec![],
        depth: 1,
        action: RetractAction::Junk,
        trigger: Trigger::Manual,
        reason: "engine_overlap".into(),
    }
}

/// Engine-made actions per (mailbox, message) (user actions excluded).
fn engine_actions(server: &LabServer) -> BTreeMap<(String, String), usize> {
    let state = server.lab.state();
    let mut out = BTreeMap::new();
    for a in &state.actions {
        if !a.action.starts_with("user") {
            *out.entry((
                a.mailbox.to_ascii_lowercase(),
                a.internet_message_id.clone(),
            ))
            .or_insert(0) += 1;
        }
    }
    out
}

/// The job's plan as stored (complete: sealed, accepted by `check_plan`).
fn stored_plan(engine: &Engine, job: i64) -> Plan {
    let id = engine.store().job(job).unwrap().unwrap().plan_id.unwrap();
    let json = engine.store().plan_json(&id).unwrap().unwrap();
    Plan::from_json(&json, "stored plan").unwrap()
}

/// What a plan says, without ids and times: items and skipped lines.
type Lines = (
    Vec<(String, String, String, String, u8)>,
    Vec<(String, String, String, FailureReason)>,
);

fn plan_lines(plan: &Plan) -> Lines {
    let mut items: Vec<_> = plan
        .items
        .iter()
        .map(|i| {
            (
                i.tenant.clone(),
                i.mailbox.clone(),
                i.internet_message_id.clone(),
                i.folder.to_string(),
                i.depth,
            )
        })
        .collect();
    items.sort();
    let mut skipped: Vec<_> = plan
        .skipped
        .iter()
        .map(|s| {
            (
                s.tenant.clone().unwrap_or_default(),
                s.address.clone(),
                s.internet_message_id.clone(),
                s.reason,
            )
        })
        .collect();
    skipped.sort();
    (items, skipped)
}

/// The job's items, without ids and times.
fn job_lines(
    engine: &Engine,
    job: i64,
) -> Vec<(String, String, String, ItemState, Option<FailureReason>)> {
    let mut out: Vec<_> = engine
        .store()
        .job_items(job, None)
        .unwrap()
        .into_iter()
        .map(|it| (it.tenant, it.mailbox, it.message_id, it.state, it.reason))
        .collect();
    out.sort();
    out
}

/// The `plan_applied` audit counts of a job.
fn plan_applied_counts(engine: &Engine, job: i64) -> Vec<BTreeMap<String, u64>> {
    engine
        .store()
        .audit_entries()
        .unwrap()
        .unwrap()
        .into_iter()
        .filter(|e| e.record.action == "plan_applied" && e.record.job_id == Some(job.to_string()))
        .map(|e| e.record.counts)
        .collect()
}

fn same_outcome(a: &JobReport, b: &JobReport) {
    assert_eq!(a.state, b.state);
    assert_eq!(a.counts, b.counts);
    assert_eq!(a.failed_by_reason, b.failed_by_reason);
    assert_eq!(a.skipped_by_reason, b.skipped_by_reason);
}

/// The same request, confirmed (plan, then job) in one lab and run unconfirmed (planning
/// while acting) in a twin lab: every copy acted on exactly once, the same actions, and the
/// same plan, job items, outcome and audited plan counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acting_while_planning_acts_once_and_accounts_like_a_confirmed_plan() {
    let confirmed = demo_world().await;
    let plan = confirmed.engine.build_plan(request(vec![])).await.unwrap();
    let job_a = confirmed.engine.create_job(&plan, false).unwrap();
    let report_a = confirmed
        .engine
        .run_job(job_a, &RunOptions::default(), &|_| {})
        .await
        .unwrap();

    let overlapped = demo_world().await;
    let job_b = overlapped
        .engine
        .create_planning_job(request(vec![]), None)
        .unwrap();
    let report_b = overlapped
        .engine
        .run_job(job_b, &RunOptions::default(), &|_| {})
        .await
        .unwrap();

    let acted_a = engine_actions(&confirmed.server);
    let acted_b = engine_actions(&overlapped.server);
    assert!(!acted_b.is_empty());
    assert!(acted_b.values().all(|n| *n == 1), "{acted_b:?}");
    assert_eq!(acted_a, acted_b);
    assert!(
        plan.skipped.len() > 2,
        "a request with skipped lines: {plan:?}"
    );
    same_outcome(&report_a, &report_b);

    let plan_b = stored_plan(&overlapped.engine, job_b);
    assert_ne!(plan_b.digest, PLANNING_DIGEST);
    overlapped.engine.check_plan(&plan_b).unwrap();
    assert_eq!(plan_lines(&plan), plan_lines(&plan_b));
    assert_eq!(
        job_lines(&confirmed.engine, job_a),
        job_lines(&overlapped.engine, job_b)
    );
    let audited = plan_applied_counts(&overlapped.engine, job_b);
    assert_eq!(audited, plan_applied_counts(&confirmed.engine, job_a));
    assert_eq!(audited.len(), 1);
}

/// A copy another job holds (its job made first, not run) is not acted on by a job planning
/// while it acts: skipped `in_another_job` in its plan and items, like a confirmed plan's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acting_while_planning_leaves_a_copy_another_job_holds() {
    let w = demo_world().await;
    let at_depth_0 = |only| RetractRequest {
        depth: 0,
        ..request(only)
    };
    let first = w.engine.build_plan(at_depth_0(vec![])).await.unwrap();
    let held = first.items[0].clone();
    let only = w
        .engine
        .build_plan(at_depth_0(vec![held.mailbox.clone()]))
        .await
        .unwrap();
    assert_eq!(only.items.len(), 1, "{only:?}");
    let holder = w.engine.create_job(&only, false).unwrap();

    let job = w
        .engine
        .create_planning_job(at_depth_0(vec![]), None)
        .unwrap();
    let report = w
        .engine
        .run_job(job, &RunOptions::default(), &|_| {})
        .await
        .unwrap();

    let acted = engine_actions(&w.server);
    let key = (held.mailbox.clone(), held.internet_message_id.clone());
    assert_eq!(acted.get(&key), None, "the held copy was acted on");
    assert_eq!(acted.len(), first.items.len() - 1, "{acted:?}");
    assert!(acted.values().all(|n| *n == 1), "{acted:?}");
    let plan = stored_plan(&w.engine, job);
    let skipped: Vec<_> = plan
        .skipped
        .iter()
        .filter(|s| s.address == held.mailbox && s.internet_message_id == held.internet_message_id)
        .map(|s| (s.reason, s.detail.contains(&format!("job {holder}"))))
        .collect();
    assert_eq!(skipped, vec![(FailureReason::InAnotherJob, true)]);
    assert_eq!(
        report.skipped_by_reason.get(&FailureReason::InAnotherJob),
        Some(&1)
    );
    assert!(!plan.items.iter().any(|i| i.mailbox == held.mailbox
        && i.internet_message_id == held.internet_message_id));
}

/// A Microsoft 365 campaign to `mailboxes` mailboxes (and a list) on a lab with four service
/// slots, the client allowed four: planning takes a while, and locating and acting share the
/// slots. The engine, the lab (kept alive), and a planning job at depth 0.
async fn slow_microsoft_job(mailboxes: usize, seed: u64) -> (Engine, SlowLab, i64) {
    let scenario = generate(&GenerateOptions {
        mailboxes,
        campaign_recipients: mailboxes,
        seed,
        kind: GenerateKind::Microsoft365,
        background_messages: 0,
    })
    .unwrap();
    let options = LabOptions {
        latency: std::time::Duration::from_millis(20),
        capacity: 4,
        ..Default::default()
    };
    let mut lab = synced_lab(&scenario, options, &[], 100_000).await;
    lab.config.tenants[0].limits.max_in_flight = 4;
    let engine = Engine::new(lab.config, lab.store).unwrap();
    let mut req = request(vec![]);
    req.depth = 0;
    let job = engine.create_planning_job(req, None).unwrap();
    let lab = SlowLab {
        server: lab.server,
        _dir: lab.dir,
    };
    (engine, lab, job)
}

/// The lab of [`slow_microsoft_job`], kept alive with its directory.
struct SlowLab {
    server: LabServer,
    _dir: tempfile::TempDir,
}

/// Runs the job again to its end and checks, by the lab's action log, that each of the
/// `mailboxes` copies was acted on exactly once and that the job settled every one.
async fn resume_and_check_each_copy_acted_once(
    engine: &Engine,
    lab: &SlowLab,
    job: i64,
    mailboxes: usize,
) -> JobReport {
    let report = engine
        .run_job(job, &RunOptions::default(), &|_| {})
        .await
        .unwrap();
    let acted = engine_actions(&lab.server);
    assert_eq!(acted.len(), mailboxes, "{acted:?}");
    assert!(acted.values().all(|n| *n == 1), "{acted:?}");
    assert_eq!(report.counts.succeeded, mailboxes as u64, "{report:?}");
    assert_eq!(report.counts.remaining(), 0);
    report
}

/// A run stopped while it still plans (its future dropped after its first action, as a kill
/// would stop it) leaves a job whose plan is provisional; resumed, it plans again, adds only
/// the copies it does not hold, and ends with every copy acted on exactly once, one item per
/// copy and a complete plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_while_planning_is_resumed_exactly_once() {
    const MAILBOXES: usize = 120;
    // Few service slots: the first action comes long before the last locate.
    let (engine, lab, job) = slow_microsoft_job(MAILBOXES, 5).await;

    let acted = tokio::sync::Notify::new();
    let sink = |e: JobEvent| {
        if matches!(e, JobEvent::ItemSucceeded { .. }) {
            acted.notify_one();
        }
    };
    let options = RunOptions::default();
    tokio::select! {
        r = engine.run_job(job, &options, &sink) => {
            panic!("the run ended before it could be stopped: {r:?}")
        }
        () = acted.notified() => {}
    }
    let id = engine.store().job(job).unwrap().unwrap().plan_id.unwrap();
    assert_eq!(
        engine.store().plan_digest(&id).unwrap().as_deref(),
        Some(PLANNING_DIGEST),
        "stopped after planning ended: not the case under test"
    );
    let acted_before = engine_actions(&lab.server).len();
    assert!(
        (1..MAILBOXES).contains(&acted_before),
        "{acted_before} acted on"
    );
    // The list the campaign also went to is a plan line only once planning ends.
    let skipped_before = engine
        .store()
        .job_items(job, Some(ItemState::Skipped))
        .unwrap();
    assert!(skipped_before.is_empty(), "{skipped_before:?}");

    let report = resume_and_check_each_copy_acted_once(&engine, &lab, job, MAILBOXES).await;
    let items = engine.store().job_items(job, None).unwrap();
    let mut per_box: BTreeMap<&str, usize> = BTreeMap::new();
    for it in items.iter().filter(|it| it.state != ItemState::Skipped) {
        *per_box.entry(it.mailbox.as_str()).or_default() += 1;
    }
    assert_eq!(per_box.len(), MAILBOXES);
    assert!(per_box.values().all(|n| *n == 1), "{per_box:?}");
    let plan = stored_plan(&engine, job);
    engine.check_plan(&plan).unwrap();
    assert_eq!(plan.items.len(), MAILBOXES);
    let lists: Vec<_> = plan
        .skipped
        .iter()
        .map(|s| (s.address.as_str(), s.reason))
        .collect();
    assert_eq!(lists, vec![("all@contoso.com", FailureReason::NotAMailbox)]);
    assert_eq!(report.counts.skipped, 1, "{report:?}");
    assert_eq!(plan_applied_counts(&engine, job).len(), 1);
}

/// The plan is sealed as soon as planning ends, while copies still wait to be acted on. A run
/// stopped right then (its future dropped, as a kill would stop it) leaves a complete plan and
/// a job holding every line; resumed, the job acts on each copy exactly once, without planning
/// again, and the plan is audited once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_after_its_plan_is_sealed_is_resumed_exactly_once() {
    const MAILBOXES: usize = 120;
    // Few service slots, shared by locating and acting: when the last copy is located, most
    // are still waiting for their action.
    let (engine, lab, job) = slow_microsoft_job(MAILBOXES, 9).await;
    let plan_id = engine.store().job(job).unwrap().unwrap().plan_id.unwrap();
    let sealed = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            let digest = engine.store().plan_digest(&plan_id).unwrap();
            if digest.as_deref() != Some(PLANNING_DIGEST) {
                return;
            }
        }
    };
    let options = RunOptions::default();
    tokio::select! {
        r = engine.run_job(job, &options, &|_| {}) => {
            panic!("the run ended before its plan was seen sealed: {r:?}")
        }
        () = sealed => {}
    }
    let counts = engine.store().item_counts(job).unwrap();
    let acted_before = engine_actions(&lab.server).len();
    assert!(
        acted_before < MAILBOXES && counts.pending > 0,
        "stopped after every copy was acted on: not the case under test ({acted_before} acted, {counts:?})"
    );
    // Sealed means complete: every line is the job's already (the list too).
    let plan = stored_plan(&engine, job);
    engine.check_plan(&plan).unwrap();
    assert_eq!(plan.items.len(), MAILBOXES);
    assert_eq!(counts.total(), (MAILBOXES + 1) as u64, "{counts:?}");
    assert_eq!(plan_applied_counts(&engine, job).len(), 1);

    let report = resume_and_check_each_copy_acted_once(&engine, &lab, job, MAILBOXES).await;
    assert_eq!(report.counts.skipped, 1, "{report:?}");
    // The same plan, not a second one, and audited once.
    assert_eq!(stored_plan(&engine, job).digest, plan.digest);
    assert_eq!(plan_applied_counts(&engine, job).len(), 1);
}

/// Gmail, planning while acting: each copy costs the search and the get that locate it and
/// the modify — three sub-requests, no second read of copies this run located moments ago
/// (it was four). The list the campaign also went to costs a few requests of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acting_while_planning_costs_gmail_three_sub_requests_a_copy() {
    const MAILBOXES: usize = 60;
    let scenario = generate(&GenerateOptions {
        mailboxes: MAILBOXES,
        campaign_recipients: MAILBOXES,
        seed: 3,
        kind: GenerateKind::GoogleWorkspace,
        background_messages: 0,
    })
    .unwrap();
    let lab = synced_lab(&scenario, LabOptions::default(), &[], 100_000).await;
    let engine = Engine::new(lab.config, lab.store).unwrap();
    let mut req = request(vec![]);
    req.depth = 0;
    let before: usize = lab.server.lab.limits.served().iter().sum();
    let job = engine.create_planning_job(req, None).unwrap();
    let report = engine
        .run_job(job, &RunOptions::default(), &|_| {})
        .await
        .unwrap();
    let served = lab.server.lab.limits.served().iter().sum::<usize>() - before;
    assert_eq!(report.counts.succeeded, MAILBOXES as u64, "{report:?}");
    let acted = engine_actions(&lab.server);
    assert_eq!(acted.len(), MAILBOXES);
    assert!(acted.values().all(|n| *n == 1), "{acted:?}");
    assert!(
        (3 * MAILBOXES..=3 * MAILBOXES + 5).contains(&served),
        "{served} sub-requests for {MAILBOXES} copies"
    );
}
