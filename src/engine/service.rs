//! The engine task: reads [`Command`]s from a front end and answers with [`EngineEvent`]s. All
//! store and provider I/O happens here, never in the UI. Quick reads (search, metrics, jobs,
//! audit) are answered in order; provider work (recipients, plans, jobs, restores, tenants) runs
//! in tasks of its own so the loop stays responsive. A panic in any of them becomes
//! `EngineFailed`, never a torn screen.

use super::core::{Engine, EngineError};
use super::execute::{JobEvent, JobReport, RunOptions};
use super::plan::Plan;
use super::planner::{LocateCount, LocateProgress};
use super::view::{
    self, AuditEntryView, AuditVerification, CopyOutcome, DepthCount, DomainView, Generation,
    GrantStatus, JobId, JobProgress, JobView, MetricsSnapshot, MetricsWindow, PlanId, PlanSummary,
    RecipientOutcome, SearchRow, TenantCount, TenantView, TenantsProgress,
};
use super::{Command, EngineEnd, EngineEvent, EngineHandle};
use crate::engine::event::{QueryErrorView, StoreChanges};
use crate::model::{FailureReason, RetractAction};
use crate::provider::DomainRetract;
use crate::store::jobs::{ItemRow, ItemState, JobKind, JobRow};
use crate::store::stamp::ChangeStamp;
use crate::store::{Store, StoreError};
use crate::trace::query::Query;
use chrono::Utc;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// Starts the engine task on the current tokio runtime and returns the front end's handle.
pub fn spawn(engine: Arc<Engine>) -> EngineHandle {
    let (handle, end) = EngineHandle::pair();
    let events = end.events.clone();
    tokio::spawn(async move {
        let run = tokio::spawn(run(engine, end));
        if let Err(e) = run.await
            && e.is_panic()
        {
            let _ = events.send(EngineEvent::EngineFailed {
                message: format!("the engine task panicked: {}", panic_text(e)),
            });
        }
    });
    handle
}

/// Like [`spawn`], but the engine is built by `setup` on the engine task (e.g. the demo's trace
/// sync against the lab), so the front end can draw its first frame at once. Commands sent
/// meanwhile wait in the channel; if `setup` fails the front end gets `EngineFailed`.
pub fn spawn_after<F>(setup: F) -> EngineHandle
where
    F: Future<Output = Result<Arc<Engine>, String>> + Send + 'static,
{
    let (handle, end) = EngineHandle::pair();
    let events = end.events.clone();
    tokio::spawn(async move {
        let engine = match setup.await {
            Ok(engine) => engine,
            Err(message) => {
                let _ = events.send(EngineEvent::EngineFailed { message });
                return;
            }
        };
        let run = tokio::spawn(run(engine, end));
        if let Err(e) = run.await
            && e.is_panic()
        {
            let _ = events.send(EngineEvent::EngineFailed {
                message: format!("the engine task panicked: {}", panic_text(e)),
            });
        }
    });
    handle
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into()),
        Err(e) => e.to_string(),
    }
}

/// The stop switches of a job this engine task runs.
#[derive(Clone, Default)]
struct RunControl {
    /// The operator's cancel (`CancelJob`): the job ends `cancelled`.
    cancel: Arc<AtomicBool>,
    /// The front end is closing (`Shutdown`): the job stays resumable.
    interrupt: Arc<AtomicBool>,
}

/// How long `Shutdown` waits for running jobs to stop after their items in flight. A job
/// still going after that is left to the crash path (its lease lapses; resume reconciles).
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often the engine looks at the store for changes another process made (a second
/// console, `clawback watch`, `clawback retract`): one small query each time.
pub const STORE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

struct State {
    engine: Arc<Engine>,
    events: UnboundedSender<EngineEvent>,
    plans: Arc<Mutex<HashMap<String, Plan>>>,
    /// Jobs this task runs now.
    runs: Arc<Mutex<HashMap<i64, RunControl>>>,
    /// The recipient load running now (latest wins), to cancel.
    recipient_load: Arc<Mutex<Option<(Generation, tokio::task::AbortHandle)>>>,
    /// The tenants load under way, to abort on `CancelTenants` or a newer `LoadTenants`.
    tenants_load: Arc<Mutex<Option<tokio::task::AbortHandle>>>,
    /// The store as last reported to the front end (see [`store_changes`]).
    seen: Arc<Mutex<Option<ChangeStamp>>>,
}

impl State {
    fn send(&self, e: EngineEvent) {
        let _ = self.events.send(e);
    }

    /// Ids of the jobs this task runs now.
    fn running_here(&self) -> HashSet<i64> {
        lock(&self.runs).keys().copied().collect()
    }

    /// Runs provider work in its own task; a panic there is reported, not propagated.
    fn background<F>(&self, what: &'static str, work: F)
    where
        F: Future<Output = Vec<EngineEvent>> + Send + 'static,
    {
        let events = self.events.clone();
        tokio::spawn(async move {
            match tokio::spawn(work).await {
                Ok(out) => {
                    for e in out {
                        let _ = events.send(e);
                    }
                }
                Err(e) => {
                    let _ = events.send(EngineEvent::EngineFailed {
                        message: format!("{what} failed: {}", panic_text(e)),
                    });
                }
            }
        });
    }
}

async fn run(engine: Arc<Engine>, mut end: EngineEnd) {
    let state = State {
        engine,
        events: end.events.clone(),
        plans: Arc::new(Mutex::new(HashMap::new())),
        runs: Arc::new(Mutex::new(HashMap::new())),
        recipient_load: Arc::new(Mutex::new(None)),
        tenants_load: Arc::new(Mutex::new(None)),
        seen: Arc::new(Mutex::new(None)),
    };
    // The baseline: what the front end loads first is what the store holds now.
    let _ = store_changes(&state.engine, &state.seen);
    let mut check = tokio::time::interval(STORE_CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queue: VecDeque<Command> = VecDeque::new();
    loop {
        let command = match queue.pop_front() {
            Some(c) => c,
            None => tokio::select! {
                c = end.commands.recv() => match c {
                    Some(c) => c,
                    None => break,
                },
                _ = check.tick() => {
                    if let Some(e) = store_changes(&state.engine, &state.seen) {
                        state.send(e);
                    }
                    continue;
                }
            },
        };
        // Latest wins: take what else is waiting, and skip a search / preview / recipient
        // load that a newer one of the same kind supersedes.
        while let Ok(c) = end.commands.try_recv() {
            queue.push_back(c);
        }
        let superseded = queue
            .iter()
            .any(|later| std::mem::discriminant(later) == std::mem::discriminant(&command))
            && matches!(
                command,
                Command::Search { .. }
                    | Command::PreviewDepth { .. }
                    | Command::LoadRecipients { .. }
            );
        if superseded {
            continue;
        }
        if matches!(command, Command::Shutdown) {
            for run in lock(&state.runs).values() {
                run.interrupt.store(true, Ordering::SeqCst);
            }
            // Each job stops after its items in flight and reports `JobFinished` (interrupted)
            // before the engine stops.
            let deadline = Instant::now() + SHUTDOWN_WAIT;
            while !lock(&state.runs).is_empty() && Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            break;
        }
        handle(&state, command);
    }
}

/// `StoreChanged` when the store differs from what was last reported (and records it as
/// reported); `None` when nothing changed, on the first look, or when the store cannot be read
/// (the next look tries again).
fn store_changes(engine: &Engine, seen: &Mutex<Option<ChangeStamp>>) -> Option<EngineEvent> {
    // Held while reading, so two looks (the periodic one, a job's end) never record an older
    // stamp over a newer one.
    let mut seen = lock(seen);
    let stamp = engine.store().change_stamp();
    let now = match stamp {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("store change check: {e}");
            return None;
        }
    };
    let before = seen.replace(now.clone())?;
    let changes = StoreChanges {
        jobs: before.jobs != now.jobs,
        items: before.items != now.items,
        audit: before.audit != now.audit,
        trace: before.trace != now.trace,
    };
    changes.any().then_some(EngineEvent::StoreChanged(changes))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn failed(e: impl std::fmt::Display) -> EngineEvent {
    EngineEvent::EngineFailed {
        message: e.to_string(),
    }
}

fn denied_or_failed(e: EngineError) -> EngineEvent {
    match e {
        EngineError::Denied(d) => EngineEvent::Denied {
            action: d.what,
            role: d.role,
            required: d.needed,
        },
        // Another process runs it: the job is fine, only not here.
        EngineError::JobLeased { job, holder } => EngineEvent::JobLeased {
            job: JobId(job.to_string()),
            holder,
        },
        other => failed(other),
    }
}

fn handle(state: &State, command: Command) {
    let engine = state.engine.clone();
    match command {
        Command::Search {
            generation,
            query,
            limit,
        } => state.send(search(&engine, generation, &query, limit)),
        Command::LoadRecipients {
            generation,
            message_ids,
        } => load_recipients(state, generation, message_ids),
        Command::CancelRecipients { generation } => {
            let running = lock(&state.recipient_load).take();
            match running {
                Some((g, task)) if g == generation && !task.is_finished() => {
                    task.abort();
                    state.send(EngineEvent::RecipientsCancelled { generation });
                }
                other => *lock(&state.recipient_load) = other,
            }
        }
        Command::PreviewDepth {
            generation,
            message_ids,
            depth,
            excluded,
        } => {
            let request = view::RetractRequest {
                message_ids,
                query: None,
                tenants: Vec::new(),
                only: Vec::new(),
                exclude: excluded,
                depth,
                action: RetractAction::Junk,
                trigger: crate::model::Trigger::Manual,
                reason: String::new(),
            };
            state.send(match engine.preview_depth(&request) {
                Ok(adds) => EngineEvent::DepthPreviewed {
                    generation,
                    per_depth: adds
                        .into_iter()
                        .map(|a| DepthCount {
                            depth: a.depth,
                            copies: a.copies,
                            mailboxes: a.mailboxes,
                        })
                        .collect(),
                },
                Err(e) => failed(e),
            });
        }
        Command::BuildPlan(request) => {
            let plans = state.plans.clone();
            state.background("building the plan", async move {
                match engine.build_plan(request).await {
                    Ok(plan) => {
                        let summary = plan_summary(&plan);
                        lock(&plans).insert(plan.id.clone(), plan);
                        vec![EngineEvent::PlanBuilt(summary)]
                    }
                    Err(e @ EngineError::Denied(_)) => vec![denied_or_failed(e)],
                    Err(e) => vec![EngineEvent::PlanFailed {
                        message: e.to_string(),
                    }],
                }
            });
        }
        Command::ApplyPlan {
            plan_id,
            confirmation,
        } => {
            let Some(plan) = lock(&state.plans).remove(&plan_id.0) else {
                state.send(failed(format!(
                    "plan {} is not known (already applied or discarded)",
                    plan_id.0
                )));
                return;
            };
            if plan.request.action == RetractAction::HardDelete
                && confirmation.typed_copies != Some(plan.items.len() as u64)
            {
                state.send(failed(format!(
                    "Hard Delete not confirmed: {} copies, typed {}",
                    plan.items.len(),
                    confirmation
                        .typed_copies
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "nothing".into())
                )));
                return;
            }
            match engine.create_job(&plan, false) {
                Ok(job) => start_job(state, job, Some(PlanId(plan.id.clone()))),
                Err(e) => state.send(denied_or_failed(e)),
            }
        }
        Command::DiscardPlan { plan_id } => {
            lock(&state.plans).remove(&plan_id.0);
        }
        Command::CancelJob { job } => {
            let Some(id) = parse_job(&job) else {
                state.send(failed(format!("no job {job}")));
                return;
            };
            // Recorded in the store (role checked first): a job another process runs stops
            // before its next batch; a finished job is not cancelled.
            match engine.cancel_job(id) {
                Ok(_) => {
                    if let Some(run) = lock(&state.runs).get(&id).cloned() {
                        run.cancel.store(true, Ordering::SeqCst);
                    }
                }
                Err(e) => state.send(denied_or_failed(e)),
            }
        }
        Command::RetryFailed { job, reason } => {
            let Some(id) = parse_job(&job) else {
                state.send(failed(format!("no job {job}")));
                return;
            };
            match engine.retry_failed(id, reason) {
                Ok(new) => start_job(state, new, None),
                Err(e) => state.send(denied_or_failed(e)),
            }
        }
        Command::Restore { job, only } => {
            let Some(id) = parse_job(&job) else {
                state.send(failed(format!("no job {job}")));
                return;
            };
            // Created here, in command order: a second restore of the same job finds the
            // first one's copies being restored and is refused, and the new job is shown at
            // once (`JobStarted`) however slow the tenant.
            match engine.create_restore_job(id, &only) {
                Ok(new) => start_job(state, new, None),
                Err(e) => state.send(denied_or_failed(e)),
            }
        }
        Command::ResumeJob { job } => {
            let Some(id) = parse_job(&job) else {
                state.send(failed(format!("no job {job}")));
                return;
            };
            if state.running_here().contains(&id) {
                state.send(EngineEvent::JobLeased {
                    job,
                    holder: "this console".into(),
                });
                return;
            }
            match engine.live_lease(id) {
                Ok(Some(lease)) => state.send(EngineEvent::JobLeased {
                    job,
                    holder: lease.to_string(),
                }),
                // The run checks the role, the job's state and (again) the lease.
                Ok(None) => {
                    // Bound first: a store guard in the scrutinee would live through the arms.
                    let row = engine.store().job(id);
                    match row {
                        Ok(Some(row)) if row.state != crate::store::jobs::JobState::Finished => {
                            start_job(state, id, None)
                        }
                        Ok(Some(_)) => {
                            state.send(failed(format!("job {id} is finished: nothing to resume")))
                        }
                        Ok(None) => state.send(failed(EngineError::UnknownJob(id))),
                        Err(e) => state.send(failed(e)),
                    }
                }
                Err(e) => state.send(failed(e)),
            }
        }
        Command::FindInterruptedJobs => {
            let here = state.running_here();
            let rows = engine.interrupted_jobs();
            state.send(match rows {
                Ok(rows) => EngineEvent::InterruptedJobsFound(
                    rows.iter()
                        .filter(|r| !here.contains(&r.id))
                        .filter_map(|r| job_view(&engine, r, &here).ok())
                        .collect(),
                ),
                Err(e) => failed(e),
            });
        }
        Command::LoadMetrics { window } => state.send(metrics(&engine, window)),
        Command::LoadMetricsDetails { window } => {
            let since = Utc::now() - window.span();
            let messages = super::metrics::retracted_in_window(&engine.store(), Some(since), None);
            state.send(match messages {
                Ok(messages) => EngineEvent::MetricsDetailsLoaded { window, messages },
                Err(e) => failed(e),
            });
        }
        Command::LoadJobs => {
            // Bind first: a guard in a `match` scrutinee lives through the arms, and
            // `job_view` locks the store again.
            let jobs = engine.store().jobs(200);
            let here = state.running_here();
            state.send(match jobs {
                Ok(rows) => EngineEvent::JobsLoaded(
                    rows.iter()
                        .filter_map(|r| job_view(&engine, r, &here).ok())
                        .collect(),
                ),
                Err(e) => failed(e),
            });
            state.send(holds(&engine));
        }
        Command::LoadJobOutcomes { job } => {
            let Some(id) = parse_job(&job) else {
                state.send(failed(format!("no job {job}")));
                return;
            };
            let kind = engine.store().job(id).ok().flatten().map(|r| r.kind);
            state.send(match engine.store().job_items(id, None) {
                Ok(items) => EngineEvent::JobOutcomesLoaded {
                    job,
                    outcomes: outcomes(&items, kind.unwrap_or(JobKind::Retract)),
                },
                Err(e) => failed(e),
            });
        }
        Command::LoadAudit { filter } => state.send(audit_list(&engine, &filter.text)),
        Command::VerifyAudit => state.send(match engine.verify_audit() {
            Ok(Ok(n)) => EngineEvent::AuditVerified(AuditVerification {
                entries: n,
                broken_at: None,
            }),
            Ok(Err(b)) => EngineEvent::AuditVerified(AuditVerification {
                entries: 0,
                broken_at: Some((break_seq(&b), b.to_string())),
            }),
            Err(e) => failed(e),
        }),
        Command::LoadTenants => {
            let events = state.events.clone();
            let task = tokio::spawn(async move {
                let loaded = load_tenants(&engine, &events).await;
                let _ = events.send(loaded);
            });
            // Latest wins: a load still running is superseded.
            if let Some(older) = lock(&state.tenants_load).replace(task.abort_handle()) {
                older.abort();
            }
            let events = state.events.clone();
            tokio::spawn(async move {
                if let Err(e) = task.await
                    && e.is_panic()
                {
                    let _ = events.send(EngineEvent::EngineFailed {
                        message: format!("loading tenants failed: {}", panic_text(e)),
                    });
                }
            });
        }
        Command::CancelTenants => {
            // Aborting drops the provider requests in flight: nothing waits out a timeout.
            if let Some(load) = lock(&state.tenants_load).take()
                && !load.is_finished()
            {
                load.abort();
                state.send(EngineEvent::TenantsCancelled);
            }
        }
        Command::LoadPolicy => {
            state.send(match engine.load_policy() {
                Ok(p) => EngineEvent::PolicyLoaded(p),
                Err(e) => failed(e),
            });
            state.send(holds(&engine));
        }
        Command::SavePolicy(policy) => state.send(match engine.save_policy(policy) {
            Ok((p, _warnings)) => EngineEvent::PolicySaved(p),
            Err(e) => denied_or_failed(e),
        }),
        Command::Shutdown => {}
    }
}

/// The automation guard's open holds, for the Policy and Jobs panes.
fn holds(engine: &Engine) -> EngineEvent {
    match engine.automation_holds(false) {
        Ok(h) => EngineEvent::HoldsLoaded(h),
        Err(e) => failed(e),
    }
}

fn break_seq(b: &crate::engine::audit::AuditBreak) -> u64 {
    use crate::engine::audit::AuditBreak;
    match b {
        AuditBreak::Edited { seq }
        | AuditBreak::Sequence { seq, .. }
        | AuditBreak::Link { seq }
        | AuditBreak::Anchor { seq, .. } => *seq,
        AuditBreak::Truncated { last, .. } => last + 1,
    }
}

fn parse_job(job: &JobId) -> Option<i64> {
    job.0.trim().parse().ok()
}

/// The console's search: the first `limit` rows of `query`, newest first, and how many match in
/// all. Each store row becomes a [`SearchRow`] as it is read (no full records, no second vector).
/// The engine task answers `Command::Search` with it; benchmarks call it to measure the same path.
pub fn search_rows(
    store: &Store,
    query: &Query,
    limit: usize,
) -> Result<(Vec<SearchRow>, u64), StoreError> {
    let rows = store.search_summaries(query, limit, 0, SearchRow::from_summary)?;
    Ok((rows, store.count(query)?))
}

fn search(engine: &Engine, generation: u64, query: &str, limit: usize) -> EngineEvent {
    let q = match crate::trace::query::parse(query) {
        Ok(q) => q,
        Err(e) => {
            return EngineEvent::SearchFailed {
                generation,
                error: QueryErrorView {
                    column: e.column,
                    message: e.message,
                },
            };
        }
    };
    match search_rows(&engine.store(), &q, limit) {
        Ok((rows, total)) => EngineEvent::SearchCompleted {
            generation,
            total,
            rows,
        },
        Err(e) => failed(e),
    }
}

pub(super) fn item_outcome(it: &ItemRow, restored: bool) -> CopyOutcome {
    match it.state {
        ItemState::Pending => CopyOutcome::Pending,
        ItemState::InFlight => CopyOutcome::InFlight,
        ItemState::Succeeded if restored => CopyOutcome::Restored,
        ItemState::Succeeded => CopyOutcome::Succeeded {
            action: it.effective_action,
        },
        ItemState::Failed => CopyOutcome::Failed {
            reason: it.reason.unwrap_or(FailureReason::ProviderError),
        },
        ItemState::Skipped => CopyOutcome::Skipped {
            why: it
                .reason
                .map(|r| r.as_str().to_string())
                .unwrap_or_default(),
        },
    }
}

/// How often a recipient load reports progress at most, and at least.
const LOAD_PROGRESS_MIN: std::time::Duration = std::time::Duration::from_millis(100);
const LOAD_PROGRESS_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts the checklist load of `generation` in a task of its own (a previous load is
/// aborted: latest wins), reporting progress as mailboxes are located and at least once a
/// second; `CancelRecipients` aborts it, and with it every locate it started.
fn load_recipients(state: &State, generation: Generation, message_ids: Vec<String>) {
    if let Some((_, previous)) = lock(&state.recipient_load).take() {
        previous.abort();
    }
    let engine = state.engine.clone();
    let events = state.events.clone();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let progress = LocateProgress::new(tx);
        let work = engine.recipient_checklist(&message_ids, Some(&progress));
        tokio::pin!(work);
        let mut heartbeat = tokio::time::interval(LOAD_PROGRESS_MAX);
        let mut count = LocateCount::default();
        let mut sent: Option<Instant> = None;
        let send_progress = |count: LocateCount| {
            let _ = events.send(EngineEvent::RecipientsProgressed {
                generation,
                done: count.done,
                total: count.total,
                elapsed_secs: started.elapsed().as_secs(),
            });
        };
        let result = loop {
            tokio::select! {
                result = &mut work => break result,
                Some(c) = rx.recv() => {
                    count = c;
                    if sent.is_none_or(|t| t.elapsed() >= LOAD_PROGRESS_MIN) {
                        sent = Some(Instant::now());
                        send_progress(count);
                    }
                }
                _ = heartbeat.tick() => {
                    sent = Some(Instant::now());
                    send_progress(count);
                }
            }
        };
        let _ = events.send(match result {
            Ok(rows) => EngineEvent::RecipientsLoaded { generation, rows },
            Err(e) => EngineEvent::RecipientsFailed {
                generation,
                message: e.to_string(),
            },
        });
    });
    *lock(&state.recipient_load) = Some((generation, task.abort_handle()));
    let events = state.events.clone();
    tokio::spawn(async move {
        if let Err(e) = task.await
            && e.is_panic()
        {
            let _ = events.send(EngineEvent::EngineFailed {
                message: format!("loading recipients failed: {}", panic_text(e)),
            });
        }
    });
}

fn plan_summary(plan: &Plan) -> PlanSummary {
    let c = plan.counts();
    let mut per_action: BTreeMap<RetractAction, u64> = BTreeMap::new();
    let mut per_tenant: BTreeMap<String, TenantCount> = BTreeMap::new();
    for it in &plan.items {
        *per_action.entry(it.effective_action).or_default() += 1;
        per_tenant
            .entry(it.tenant.clone())
            .or_insert_with(|| TenantCount {
                tenant: it.tenant.clone(),
                kind: it.kind,
                copies: 0,
            })
            .copies += 1;
    }
    let mut notes = Vec::new();
    if c.mapped > 0 {
        notes.push(format!(
            "Soft Delete becomes Trash on Gmail ({} copies)",
            c.mapped
        ));
    }
    PlanSummary {
        plan_id: PlanId(plan.id.clone()),
        digest: plan.digest.trim_start_matches("sha256:").to_string(),
        action: plan.request.action,
        depth: plan.request.depth,
        copies_total: plan.items.len() as u64,
        mailboxes: c.mailboxes as u64,
        per_action: per_action.into_iter().collect(),
        per_tenant: per_tenant.into_values().collect(),
        not_actionable: c
            .skipped_by_reason
            .into_iter()
            .map(|(r, n)| (r, n as u64))
            .collect(),
        notes,
    }
}

/// Forwards job progress to the front end, at most ~10 updates a second.
fn progress_sink(events: UnboundedSender<EngineEvent>) -> impl Fn(JobEvent) + Send + Sync {
    struct Tally {
        total: u64,
        done: u64,
        failed: u64,
        throttled: u64,
        started: Instant,
        last: Option<Instant>,
    }
    let tally = Mutex::new(Tally {
        total: 0,
        done: 0,
        failed: 0,
        throttled: 0,
        started: Instant::now(),
        last: None,
    });
    move |e: JobEvent| {
        let mut t = lock(&tally);
        let job = match &e {
            JobEvent::Started { job, remaining, .. } => {
                t.total = *remaining;
                *job
            }
            JobEvent::ItemSucceeded { job, .. } => {
                t.done += 1;
                *job
            }
            JobEvent::ItemFailed {
                job,
                mailbox,
                reason,
                provider_code,
            } => {
                t.done += 1;
                t.failed += 1;
                let _ = events.send(EngineEvent::ItemFailed {
                    job: JobId(job.to_string()),
                    address: mailbox.clone(),
                    reason: *reason,
                    provider_code: Some(provider_code.clone()),
                });
                *job
            }
            JobEvent::Throttled { job, .. } => {
                t.throttled += 1;
                *job
            }
            JobEvent::Reconciled { job, .. } | JobEvent::CanaryPassed { job, .. } => *job,
        };
        let now = Instant::now();
        if t.last
            .is_some_and(|l| now.duration_since(l).as_millis() < 100)
            && t.done < t.total
        {
            return;
        }
        t.last = Some(now);
        let secs = t.started.elapsed().as_secs_f64().max(0.001);
        let rate = t.done as f64 / secs;
        let remaining = t.total.saturating_sub(t.done);
        let _ = events.send(EngineEvent::JobProgressed(JobProgress {
            job: JobId(job.to_string()),
            done: t.done,
            failed: t.failed,
            remaining,
            rate_per_sec: rate,
            eta_secs: (rate > 0.0).then(|| (remaining as f64 / rate).ceil() as u64),
            throttled_waits: t.throttled,
        }));
    }
}

fn start_job(state: &State, job: i64, plan_id: Option<PlanId>) {
    let engine = state.engine.clone();
    let total = engine
        .store()
        .item_counts(job)
        .map(|c| c.remaining())
        .unwrap_or(0);
    state.send(EngineEvent::JobStarted {
        job: JobId(job.to_string()),
        plan_id,
        total,
    });
    let control = RunControl::default();
    lock(&state.runs).insert(job, control.clone());
    let runs = state.runs.clone();
    let events = state.events.clone();
    let seen = state.seen.clone();
    state.background("running the job", async move {
        let sink = progress_sink(events);
        let result = engine
            .run_job(
                job,
                &RunOptions {
                    canary: 0,
                    cancel: Some(control.cancel),
                    interrupt: Some(control.interrupt),
                },
                &sink,
            )
            .await;
        lock(&runs).remove(&job);
        let mut out = match result {
            Ok(report) => vec![finished(&engine, &report)],
            Err(e) => vec![denied_or_failed(e)],
        };
        // Metrics, audit, search and recipients changed with the job: say so at once rather
        // than at the next periodic look.
        out.extend(store_changes(&engine, &seen));
        out
    });
}

/// Per-recipient outcomes of a job's items, failures first (see [`RecipientOutcome::rank`]).
fn outcomes(items: &[ItemRow], kind: JobKind) -> Vec<RecipientOutcome> {
    let mut out: Vec<RecipientOutcome> = items
        .iter()
        .map(|it| {
            let (from_folder, to_folder) = match (kind, it.state) {
                (_, ItemState::Skipped) => (None, None),
                // A restore item holds the original folder (its target) and where the
                // retraction put the copy (its source) until it succeeds; then, like every
                // succeeded item, where the copy was and where it went.
                (JobKind::Restore, ItemState::Succeeded) | (JobKind::Retract, _) => {
                    (Some(it.folder.clone()), it.to_folder.clone())
                }
                (JobKind::Restore, _) => (it.to_folder.clone(), Some(it.folder.clone())),
            };
            RecipientOutcome {
                address: it.mailbox.clone(),
                tenant: it.tenant.clone(),
                outcome: item_outcome(it, kind == JobKind::Restore),
                from_folder,
                to_folder,
            }
        })
        .collect();
    out.sort_by_key(RecipientOutcome::rank);
    out
}

fn finished(engine: &Engine, report: &JobReport) -> EngineEvent {
    let row = engine.store().job(report.job).ok().flatten();
    let items = engine
        .store()
        .job_items(report.job, None)
        .unwrap_or_default();
    // The run is over: it no longer counts as running here.
    let view = row.and_then(|r| {
        job_view(engine, &r, &HashSet::new())
            .ok()
            .map(|v| (v, r.kind))
    });
    match view {
        Some((view, kind)) => EngineEvent::JobFinished {
            job: view,
            outcomes: outcomes(&items, kind),
        },
        None => failed(format!("job {} vanished from the store", report.job)),
    }
}

/// A stored job's phase: `running` counts only while a live process runs it (this task, or
/// another process holding its lease); otherwise an unfinished job is interrupted.
fn phase(
    engine: &Engine,
    job: i64,
    state: crate::store::jobs::JobState,
    running_here: &HashSet<i64>,
) -> view::JobPhase {
    use crate::store::jobs::JobState;
    match state {
        JobState::Finished => view::JobPhase::Finished,
        JobState::Cancelled => view::JobPhase::Cancelled,
        JobState::Running
            if running_here.contains(&job) || engine.live_lease(job).ok().flatten().is_some() =>
        {
            view::JobPhase::Running
        }
        JobState::Running => view::JobPhase::Interrupted,
    }
}

fn job_view(
    engine: &Engine,
    row: &JobRow,
    running_here: &HashSet<i64>,
) -> Result<JobView, EngineError> {
    let store = engine.store();
    let counts = store.item_counts(row.id)?;
    let mut failed: BTreeMap<FailureReason, u64> = BTreeMap::new();
    for it in store.job_items(row.id, Some(ItemState::Failed))? {
        *failed
            .entry(it.reason.unwrap_or(FailureReason::ProviderError))
            .or_default() += 1;
    }
    let (restorable, restores) = if row.kind == JobKind::Retract {
        (
            store.unrestored_items(row.id)?.len() as u64,
            store.restore_jobs_of(row.id)?,
        )
    } else {
        (0, Vec::new())
    };
    drop(store);
    Ok(JobView {
        id: JobId(row.id.to_string()),
        started: row.created_at,
        trigger: row.trigger,
        kind: match row.kind {
            JobKind::Retract => view::JobKind::Retract,
            JobKind::Restore => view::JobKind::Restore,
        },
        action: row.action,
        parent: row
            .parent_job
            .filter(|_| row.kind == JobKind::Restore)
            .map(|p| JobId(p.to_string())),
        restored_by: restores
            .into_iter()
            .map(|(id, state)| {
                (
                    JobId(id.to_string()),
                    phase(engine, id, state, running_here),
                )
            })
            .collect(),
        state: phase(engine, row.id, row.state, running_here),
        total: counts.total(),
        succeeded: counts.succeeded,
        failed_by_reason: failed.into_iter().collect(),
        skipped: counts.skipped,
        restorable,
        operator: row.operator.clone(),
        audit_head: row.audit_head.clone(),
    })
}

fn metrics(engine: &Engine, window: MetricsWindow) -> EngineEvent {
    let now = Utc::now();
    let span = window.span();
    let buckets = 24usize;
    let since = now - span;
    let rows = match engine.store().item_outcomes(Some(since), None) {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let outcomes: Vec<_> = rows.into_iter().map(|(o, _)| o).collect();
    let m = super::metrics::compute(outcomes.iter(), Some(since), Some(now), buckets);
    MetricsSnapshot {
        window,
        total: m.total,
        succeeded: m.succeeded.count,
        failed_by_reason: m
            .failed_by_reason
            .iter()
            .map(|(r, s)| (*r, s.count))
            .collect(),
        unread: m.unread.count,
        read: m.read.count,
        auto: m.auto.count,
        manual: m.manual.count,
        dwell_p50_secs: m.dwell.p50_secs.map(|s| s.round() as u64),
        dwell_p95_secs: m.dwell.p95_secs.map(|s| s.round() as u64),
        series: m.series.clone(),
        bucket_secs: (span.num_seconds().max(1) as u64) / buckets as u64,
    }
    .into()
}

impl From<MetricsSnapshot> for EngineEvent {
    fn from(m: MetricsSnapshot) -> EngineEvent {
        EngineEvent::MetricsLoaded(m)
    }
}

fn audit_list(engine: &Engine, text: &str) -> EngineEvent {
    let entries = match engine.store().audit_entries() {
        Ok(Ok(e)) => e,
        Ok(Err(b)) => return failed(format!("{b}; verify the audit log")),
        Err(e) => return failed(e),
    };
    let needle = text.to_lowercase();
    EngineEvent::AuditLoaded(
        entries
            .iter()
            .rev()
            .map(|e| {
                let counts: Vec<String> = e
                    .record
                    .counts
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let mut detail = counts.join(" ");
                let request = super::audit::request_summary(&e.record);
                if !request.is_empty() {
                    detail = format!("{detail} {request}");
                }
                if let Some(j) = &e.record.job_id {
                    detail = format!("job {j} {detail}");
                }
                if let Some(d) = &e.record.plan_digest {
                    detail.push_str(&format!(
                        " plan {}",
                        d.trim_start_matches("sha256:")
                            .chars()
                            .take(12)
                            .collect::<String>()
                    ));
                }
                AuditEntryView {
                    seq: e.seq,
                    at: e.record.at,
                    os_user: e.record.os_user.clone(),
                    operator: e.record.operator.clone(),
                    role: e.record.role,
                    action: format!("{}/{}", e.record.section, e.record.action),
                    detail,
                    hash_prefix: e.hash.chars().take(12).collect(),
                }
            })
            .filter(|v| {
                needle.is_empty()
                    || v.operator.to_lowercase().contains(&needle)
                    || v.action.to_lowercase().contains(&needle)
                    || v.detail.to_lowercase().contains(&needle)
            })
            .collect(),
    )
}

/// Every tenant and the Retract status of its domains, tenants checked side by side (one
/// unreachable tenant costs one timeout, not one per tenant), with a `TenantsProgress` event as
/// each is done. A tenant that cannot be checked keeps its row with the reason: an endpoint
/// that cannot be reached says which and why, never "Granted".
async fn load_tenants(engine: &Engine, events: &UnboundedSender<EngineEvent>) -> EngineEvent {
    use futures_util::StreamExt;
    let clients: Vec<_> = engine.clients().collect();
    let total = clients.len();
    let mut checks: futures_util::stream::FuturesUnordered<_> = clients
        .iter()
        .enumerate()
        .map(|(i, client)| async move { (i, tenant_view(client).await) })
        .collect();
    let mut views: Vec<Option<TenantView>> = vec![None; total];
    let mut progress = TenantsProgress {
        done: 0,
        total,
        domains: 0,
    };
    let _ = events.send(EngineEvent::TenantsProgress(progress));
    while let Some((i, view)) = checks.next().await {
        progress.done += 1;
        progress.domains += view.domains.len();
        let _ = events.send(EngineEvent::TenantsProgress(progress));
        if let Some(slot) = views.get_mut(i) {
            *slot = Some(view);
        }
    }
    EngineEvent::TenantsLoaded(views.into_iter().flatten().collect())
}

/// One tenant's row: its domains' Retract status, or why they could not be had.
async fn tenant_view(client: &crate::provider::ProviderClient) -> TenantView {
    let (domains, error) = match client.domains_status().await {
        Ok(ds) => (
            ds.into_iter()
                .map(|d| DomainView {
                    domain: d.domain,
                    status: match d.retract {
                        DomainRetract::Granted => GrantStatus::Granted,
                        DomainRetract::Missing { permission, .. } => {
                            GrantStatus::Missing { permission }
                        }
                        DomainRetract::NotInTenant => GrantStatus::NotInTenant,
                        DomainRetract::Unknown { detail } => {
                            GrantStatus::Missing { permission: detail }
                        }
                    },
                })
                .collect(),
            None,
        ),
        // The message names the endpoint and cause (`connection refused: host:port`).
        Err(f) if f.is_unreachable() => (Vec::new(), Some(f.message)),
        Err(f) => (Vec::new(), Some(format!("cannot list domains: {f}"))),
    };
    TenantView {
        name: client.tenant_name().to_string(),
        kind: client.kind(),
        domains,
        error,
    }
}
