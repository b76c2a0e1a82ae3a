//! Running jobs (DESIGN §2, §5): a plan becomes a durable job whose items move
//! `pending → in_flight → succeeded | failed | skipped`. Every item is committed `in_flight`
//! before its provider call and settled right after; on resume, `in_flight` items are reconciled
//! by locating the copy again (already where the action puts it = succeeded), so nothing is
//! acted on twice and nothing is lost. Canary runs, cancel, retry by reason and restore live here.

use super::core::{Engine, EngineError};
use super::overlap::{item_row, skipped_row};
use super::plan::Plan;
use super::planner::failure_detail;
use super::roles::Capability;
use crate::model::{FailureReason, Folder, RetractAction, Trigger};
use crate::provider::MAY_HAVE_LANDED;
use crate::provider::scheduler::UNCERTAIN;
use crate::provider::{
    Applied, BulkItem, Failure, LocatedCopy, ProgressEvent, RestoreOptions, SentCopy,
};
use crate::store::chain::AuditHead;
use crate::store::jobs::{
    ItemCounts, ItemFinish, ItemRow, ItemState, JobKind, JobLease, JobRow, JobState, LeaseTaken,
    NewJob,
};
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Items handed to the scheduler per call; cancel is checked between chunks.
const CHUNK: usize = 2_000;
/// Outcomes committed per transaction.
const FINISH_GROUP: usize = 64;

/// What the parts of one job run share.
pub(super) struct RunShared<'a> {
    engine: &'a Engine,
    job: i64,
    /// Seconds the provider made us wait.
    throttled: std::sync::Mutex<f64>,
    /// Set when `in_flight` could not be committed: nothing more is sent.
    unrecorded: AtomicBool,
    /// The operator's cancel in this process.
    cancel: Option<&'a AtomicBool>,
    /// The front end is closing: stop like a cancel, but leave the job resumable.
    interrupt: Option<&'a AtomicBool>,
    /// Set once the store said stop (a cancel from any process, or the lease lost).
    stopped_by_store: AtomicBool,
    /// This run makes the job's plan (acting while planning): its copies were located moments
    /// ago, by this run.
    planning_here: AtomicBool,
    /// A `clawback worker` runs this part of the job: it goes on while its registration is
    /// active (not while it holds the job's lease).
    worker: bool,
}

impl<'a> RunShared<'a> {
    /// Asked before every batch: this process's cancel, an unrecordable `in_flight`, or the
    /// store — a cancel written by any process, or a lease taken over — stops the run.
    pub(super) fn should_stop(&self) -> bool {
        if self.unrecorded.load(Ordering::SeqCst)
            || self.cancel.is_some_and(|c| c.load(Ordering::SeqCst))
            || self.interrupted()
            || self.stopped_by_store.load(Ordering::SeqCst)
        {
            return true;
        }
        let owner = &self.engine.lease.owner;
        let check = if self.worker {
            self.engine.store().worker_check(self.job, owner)
        } else {
            self.engine.store().job_run_check(self.job, owner)
        };
        let go_on = match check {
            Ok((state, ours)) => state == JobState::Running && ours,
            Err(e) => {
                tracing::error!(job = self.job, "cannot read the job's state: {e}");
                false
            }
        };
        if !go_on {
            self.stopped_by_store.store(true, Ordering::SeqCst);
        }
        !go_on
    }

    /// A worker's share of `job`: stops when `stop` is set (the worker was asked to end), at a
    /// cancel, or when its registration was ended by another worker.
    pub(super) fn for_worker(engine: &'a Engine, job: i64, stop: &'a AtomicBool) -> RunShared<'a> {
        RunShared {
            engine,
            job,
            throttled: std::sync::Mutex::new(0f64),
            unrecorded: AtomicBool::new(false),
            cancel: None,
            interrupt: Some(stop),
            stopped_by_store: AtomicBool::new(false),
            planning_here: AtomicBool::new(false),
            worker: true,
        }
    }

    /// Whether an item could not be marked in flight (nothing more was sent).
    pub(super) fn unrecorded(&self) -> bool {
        self.unrecorded.load(Ordering::SeqCst)
    }

    /// Seconds the provider made this run wait.
    pub(super) fn throttled_secs(&self) -> f64 {
        *self.throttled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The front end that runs the job is closing (and nobody cancelled it).
    fn interrupted(&self) -> bool {
        self.interrupt.is_some_and(|i| i.load(Ordering::SeqCst))
            && !self.cancel.is_some_and(|c| c.load(Ordering::SeqCst))
    }
}

/// A lease whose heartbeat is older than this is taken over (its holder hung or its host is
/// gone); on the same host a dead holder's lease is taken over at once. The default of
/// `[jobs] lease_stale_secs` ([`Engine::lease_stale`]).
pub const LEASE_STALE: chrono::Duration = chrono::Duration::seconds(30);
/// How often a running job renews its lease.
pub(super) const LEASE_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(2);

/// Outcomes reported by the scheduler, not committed yet.
type FinishedBuffer = std::sync::Mutex<Vec<(u64, Result<Applied, Failure>)>>;
/// A plan younger than this hands its located copies to the job, which does not search for
/// them again. Graph ids change on every move, so a copy the user moved or deleted since
/// answers 404 and is then located afresh; Gmail ids survive label changes, so a Gmail copy's
/// labels are read again (one get instead of a search and a get) before it is acted on.
const PLANNED_COPY_FRESH: chrono::Duration = chrono::Duration::minutes(10);
/// A job that makes its plan as it runs (nothing waits for a confirmation: `retract --yes`)
/// located its copies moments ago, in this run: while its plan is younger than this, they are
/// acted on as located, without reading them again first (Gmail: the modify's answer tells a
/// copy trashed in between; a copy deleted since answers 404 and is located afresh). A plan
/// made first and then confirmed or applied, a job resumed later, keeps the read.
const PLANNED_COPY_JUST_LOCATED: chrono::Duration = chrono::Duration::seconds(60);
/// Restores and reconciliation locates in flight at once.
const SIDE_CONCURRENCY: usize = 32;

/// What a running job reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    Started {
        job: i64,
        total: u64,
        remaining: u64,
    },
    /// An `in_flight` item found settled (or not) after a crash.
    Reconciled {
        job: i64,
        succeeded: u64,
        requeued: u64,
    },
    ItemSucceeded {
        job: i64,
        mailbox: String,
    },
    ItemFailed {
        job: i64,
        mailbox: String,
        reason: FailureReason,
        provider_code: String,
    },
    Throttled {
        job: i64,
        seconds: f64,
    },
    CanaryPassed {
        job: i64,
        mailboxes: u64,
    },
}

/// How to run a job.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Act on this many mailboxes first, verify each copy moved, then fan out (0 = no canary).
    pub canary: usize,
    /// Set to stop after the items in flight (pending items stay pending; resumable).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Set when the front end running the job closes: the run stops after the items in flight
    /// like a cancel, but the job stays `running` (without a lease), so it is listed by
    /// [`Engine::unfinished_jobs`] and offered for resume, instead of ending `cancelled`.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// How a job run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub job: i64,
    pub state: JobState,
    pub counts: ItemCounts,
    pub failed_by_reason: BTreeMap<FailureReason, u64>,
    /// Items not acted on, by reason (planned that way, or held by another job).
    pub skipped_by_reason: BTreeMap<FailureReason, u64>,
    /// Seconds the provider made us wait (Retry-After and backoff).
    pub throttled_secs: f64,
    pub elapsed_secs: f64,
    /// Why the run stopped early (canary failed, cancelled), if it did.
    pub stopped: Option<String>,
    /// The audit head right after this run's end was audited: keep it outside the store and
    /// check it later with `clawback audit verify --head`.
    pub audit_head: Option<AuditHead>,
}

impl JobReport {
    /// Exit code per DESIGN §8: 0 all done, 3 some items failed or left undone.
    pub fn exit_code(&self) -> u8 {
        if self.counts.failed > 0 || self.counts.remaining() > 0 {
            3
        } else {
            0
        }
    }
}

pub(super) type Sink<'a> = &'a (dyn Fn(JobEvent) + Send + Sync);

/// Where an action puts a copy (`RecoverableDeletions` and `Purged` are invisible to the APIs).
pub fn target_folder(action: RetractAction) -> Option<Folder> {
    match action {
        RetractAction::NoAction => None,
        RetractAction::Junk => Some(Folder::Junk),
        RetractAction::Trash => Some(Folder::Trash),
        RetractAction::SoftDelete => Some(Folder::RecoverableDeletions),
        RetractAction::HardDelete => Some(Folder::Purged),
    }
}

impl Engine {
    /// Turns a plan into a durable job (plan items pending, skipped ones settled as skipped)
    /// and audits it. Refused (and audited) when the role does not allow the action, or when
    /// the plan names a tenant that is not configured.
    pub fn create_job(&self, plan: &Plan, dry_run: bool) -> Result<i64, EngineError> {
        self.create_job_detected(plan, dry_run, None)
    }

    /// [`Engine::create_job`] for a job that answers a detection (automation): `detected_at`
    /// is when the trigger was found, and time-to-act in the metrics counts from it instead
    /// of from the job's creation.
    pub fn create_job_detected(
        &self,
        plan: &Plan,
        dry_run: bool,
        detected_at: Option<DateTime<Utc>>,
    ) -> Result<i64, EngineError> {
        for item in &plan.items {
            self.client(&item.tenant)?;
        }
        self.check_plan(plan)?;
        let mut delivered: BTreeMap<(String, String), Option<DateTime<Utc>>> = BTreeMap::new();
        let mut items = Vec::with_capacity(plan.items.len() + plan.skipped.len());
        {
            let store = self.store();
            for p in &plan.items {
                let key = (p.tenant.clone(), p.internet_message_id.clone());
                if !delivered.contains_key(&key) {
                    let at = store
                        .trace_by_message_id(&p.internet_message_id)?
                        .into_iter()
                        .find(|r| r.tenant == p.tenant)
                        .and_then(|r| DateTime::from_timestamp(r.received, 0));
                    delivered.insert(key.clone(), at);
                }
                items.push(item_row(p, delivered.get(&key).copied().flatten()));
            }
            for s in &plan.skipped {
                items.push(skipped_row(s, plan.request.action));
            }
        }
        self.store_plan_and_job(plan, &plan.digest, dry_run, detected_at, &items)
    }

    /// Stores a plan (under `digest`) and creates its retract job with `items`. A complete
    /// plan's audit entries — `plan_applied`, and an automation's `auto_retract` — are
    /// appended in the job's transaction; a plan still being made (`PLANNING_DIGEST`) is
    /// audited when it is sealed.
    pub(super) fn store_plan_and_job(
        &self,
        plan: &Plan,
        digest: &str,
        dry_run: bool,
        detected_at: Option<DateTime<Utc>>,
        items: &[ItemRow],
    ) -> Result<i64, EngineError> {
        let mut store = self.store();
        store.insert_plan(&plan.id, digest, plan.created_at, &plan.to_json_pretty())?;
        let complete = digest != super::overlap::PLANNING_DIGEST;
        let (job, _) = store.create_job_audited(
            &NewJob {
                kind: JobKind::Retract,
                plan_id: Some(plan.id.clone()),
                parent_job: None,
                trigger: plan.request.trigger,
                action: plan.request.action,
                operator: self.operator.name.clone(),
                role: self.operator.role,
                reason: plan.request.reason.clone(),
                dry_run,
                detected_at,
            },
            items,
            |job| {
                let mut records = Vec::new();
                if complete {
                    records.push(self.plan_applied_record(plan, job));
                    if plan.request.trigger.is_auto() {
                        records.push(self.auto_retract_record(plan, Some(job)));
                    }
                }
                records
            },
        )?;
        Ok(job)
    }

    /// The `plan_applied` entry of a plan becoming job `job`.
    pub(super) fn plan_applied_record(
        &self,
        plan: &Plan,
        job: i64,
    ) -> crate::store::chain::AuditRecord {
        let counts = plan.counts();
        self.new_record(
            "retract",
            "plan_applied",
            Some(&plan.digest),
            Some(job),
            BTreeMap::from([
                ("copies".to_string(), counts.copies as u64),
                ("mailboxes".to_string(), counts.mailboxes as u64),
                ("messages".to_string(), counts.messages as u64),
                ("skipped".to_string(), plan.skipped.len() as u64),
                ("unresolved".to_string(), counts.unresolved as u64),
            ]),
            serde_json::json!({
                "action": plan.request.action.as_str(),
                "trigger": plan.request.trigger.as_str(),
                "depth": plan.request.depth,
                "reason": plan.request.reason,
                "message_ids": plan.request.message_ids,
                "query": plan.request.query,
                "tenants": plan.request.tenants,
                "exclude": plan.request.exclude,
                "only": plan.request.only,
            }),
        )
    }

    /// Runs (or resumes) a job to the end, or until cancelled or a canary fails. The job's
    /// lease is taken first: a job that another live process runs is refused
    /// ([`EngineError::JobLeased`]), a dead or silent holder's lease is taken over (audited)
    /// and its `in_flight` items reconciled. A finished job is not run again.
    pub async fn run_job(
        &self,
        job: i64,
        options: &RunOptions,
        sink: Sink<'_>,
    ) -> Result<JobReport, EngineError> {
        let row = self.job_row(job)?;
        self.authorize(match row.kind {
            JobKind::Retract => Capability::Retract(row.action),
            JobKind::Restore => Capability::Restore,
        })?;
        if row.state == JobState::Finished {
            return Err(EngineError::Invalid(format!(
                "job {job} is finished: nothing to resume (`clawback jobs show {job}`; `clawback jobs retry {job} --reason R` retries its failures)"
            )));
        }
        self.leased(job, async {
            let started = Instant::now();
            // A resumed job runs again (its cancel was read by whoever ran it then).
            if row.state == JobState::Cancelled {
                self.store().set_job_state(job, JobState::Running)?;
            }
            if row.kind == JobKind::Restore {
                return self.run_restore_items(&row, options, sink, started).await;
            }
            self.run_retract_leased(row, options, sink, started).await
        })
        .await
    }

    /// Runs `work` holding the lease of `job`, renewing it every [`LEASE_HEARTBEAT`], and
    /// gives the lease up afterwards.
    async fn leased<T>(
        &self,
        job: i64,
        work: impl std::future::Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        let taken = self
            .store()
            .acquire_job_lease(job, &self.lease, self.lease_stale())?;
        // Workers register before they look at the lease, a run takes the lease before it looks
        // at the workers: whichever comes second sees the other, so a job is never run by both.
        if taken.is_ok() {
            let workers = self.live_workers(job)?;
            if !workers.is_empty() {
                if let Err(e) = self.store().release_job_lease(job, &self.lease.owner) {
                    tracing::error!(job, "cannot release the lease: {e}");
                }
                return Err(EngineError::JobLeased {
                    job,
                    holder: format!(
                        "{} `clawback worker` process{} ({})",
                        workers.len(),
                        if workers.len() == 1 { "" } else { "es" },
                        workers
                            .iter()
                            .map(|w| format!("pid {} on {}", w.holder.pid, w.holder.host))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        match taken {
            Err(holder) => {
                return Err(EngineError::JobLeased {
                    job,
                    holder: holder.to_string(),
                });
            }
            Ok(LeaseTaken::TakenOver(previous)) => {
                tracing::warn!(job, "lease of {previous} taken over");
                self.audit(
                    "job",
                    "lease_taken_over",
                    None,
                    Some(job),
                    BTreeMap::new(),
                    serde_json::json!({
                        "previous_pid": previous.holder.pid,
                        "previous_host": previous.holder.host,
                        "previous_heartbeat": previous.heartbeat,
                    }),
                )?;
            }
            Ok(LeaseTaken::Free) => {}
        }
        let owner = self.lease.owner.as_str();
        let heartbeat = async {
            loop {
                tokio::time::sleep(LEASE_HEARTBEAT).await;
                match self.store().heartbeat_job_lease(job, owner) {
                    Ok(true) => {}
                    // The next batch's check sees it and stops.
                    Ok(false) => tracing::error!(job, "lease lost to another process"),
                    Err(e) => tracing::error!(job, "cannot renew the lease: {e}"),
                }
            }
        };
        let out = tokio::select! {
            out = work => out,
            () = heartbeat => unreachable!("the heartbeat loop never ends"),
        };
        if let Err(e) = self.store().release_job_lease(job, owner) {
            tracing::error!(job, "cannot release the lease: {e}");
        }
        out
    }

    async fn run_retract_leased(
        &self,
        row: JobRow,
        options: &RunOptions,
        sink: Sink<'_>,
        started: Instant,
    ) -> Result<JobReport, EngineError> {
        let job = row.id;
        self.reconcile(&row, sink).await?;
        let counts = self.store().item_counts(job)?;
        sink(JobEvent::Started {
            job,
            total: counts.total(),
            remaining: counts.remaining(),
        });
        let shared = RunShared {
            engine: self,
            job,
            throttled: std::sync::Mutex::new(0f64),
            unrecorded: AtomicBool::new(false),
            cancel: options.cancel.as_deref(),
            interrupt: options.interrupt.as_deref(),
            stopped_by_store: AtomicBool::new(false),
            planning_here: AtomicBool::new(false),
            worker: false,
        };
        // A plan made while the job runs: copies are acted on as they are located (a canary
        // waits for the whole plan instead: its mailboxes go first).
        if let Some(provisional) = self.planning_plan(&row)? {
            shared.planning_here.store(true, Ordering::SeqCst);
            self.plan_while_acting(&row, provisional, options.canary == 0, sink, &shared)
                .await?;
            let counts = self.store().item_counts(job)?;
            sink(JobEvent::Started {
                job,
                total: counts.total(),
                remaining: counts.remaining(),
            });
        }
        let mut pending = self.store().job_items(job, Some(ItemState::Pending))?;
        let mut stopped = None;

        if options.canary > 0 && !pending.is_empty() {
            let mut canary_boxes: BTreeSet<(String, String)> = BTreeSet::new();
            for it in &pending {
                if canary_boxes.len() >= options.canary {
                    break;
                }
                canary_boxes.insert((it.tenant.clone(), it.mailbox.clone()));
            }
            let (canary, rest): (Vec<ItemRow>, Vec<ItemRow>) = pending
                .into_iter()
                .partition(|it| canary_boxes.contains(&(it.tenant.clone(), it.mailbox.clone())));
            self.act(&row, canary.clone(), sink, &shared).await;
            match self.verify_canary(&row, &canary).await {
                Ok(()) => {
                    sink(JobEvent::CanaryPassed {
                        job,
                        mailboxes: canary_boxes.len() as u64,
                    });
                    pending = rest;
                }
                Err(why) => {
                    stopped = Some(format!("canary failed: {why}; the rest was not touched"));
                    pending = Vec::new();
                }
            }
        }

        // Tenants have limits of their own: each goes through its items at its own pace. A
        // cancel is seen before every batch (the scheduler asks) and between chunks.
        let mut by_tenant: BTreeMap<String, Vec<ItemRow>> = BTreeMap::new();
        for it in pending {
            by_tenant.entry(it.tenant.clone()).or_default().push(it);
        }
        let (row_ref, shared_ref) = (&row, &shared);
        let runs = by_tenant.into_values().map(|items| async move {
            for chunk in items.chunks(CHUNK) {
                if shared_ref.should_stop() {
                    return;
                }
                self.act(row_ref, chunk.to_vec(), sink, shared_ref).await;
            }
        });
        join_all(runs).await;
        // Items whose mutation's outcome is unknown (answer lost, no read got through) are
        // still `in_flight`: settle them by evidence now — located where the action puts them
        // = succeeded (with their from-folder, so undo restores them); still in place = act
        // again. What still cannot be told stays `in_flight` for `jobs resume`.
        for _ in 0..2 {
            if shared.should_stop() || self.store().item_counts(job)?.in_flight == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            self.reconcile(&row, sink).await?;
            let again = self.store().job_items(job, Some(ItemState::Pending))?;
            if !again.is_empty() && !shared.should_stop() {
                self.act(&row, again, sink, &shared).await;
            }
        }
        if shared.unrecorded.load(Ordering::SeqCst) {
            stopped = Some(
                "stopped: in_flight could not be recorded in the store (see the log), so nothing \
                 more was sent"
                    .into(),
            );
        } else if shared.interrupted() {
            stopped = Some(format!(
                "interrupted: the console closed; `clawback jobs resume {job}` (or the console at its next start) continues it"
            ));
        } else if shared.should_stop() {
            stopped = Some(match self.store().job_run_check(job, &self.lease.owner) {
                Ok((_, false)) => "stopped: another process took the job's lease over".into(),
                _ => "cancelled by the operator".into(),
            });
        }

        let counts = self.store().item_counts(job)?;
        // A plan still provisional (stopped while planning) leaves the job to be resumed.
        let planned = self.planning_plan(&row)?.is_none();
        if !planned && stopped.is_none() {
            stopped = Some("stopped while planning".into());
        }
        let state = if counts.remaining() == 0 && planned {
            JobState::Finished
        } else if shared.interrupted() && !shared.stopped_by_store.load(Ordering::SeqCst) {
            // Left running without a lease: an interrupted job, as after a crash.
            JobState::Running
        } else if stopped.is_some() {
            JobState::Cancelled
        } else {
            // Not stopped, yet unsettled: outcomes nobody could tell. The job stays running
            // (without a lease) so `jobs resume` and a restarted watcher take it up.
            stopped = Some(format!(
                "{} items' outcome is unknown (answers lost, the copy could not be located): `clawback jobs resume {job}` settles them by locating",
                counts.remaining()
            ));
            JobState::Running
        };
        let failed_by_reason = self.failed_by_reason(job)?;
        self.mark_trace(job)?;
        let waited = *shared.throttled.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = JobReport {
            job,
            state,
            counts,
            failed_by_reason,
            skipped_by_reason: self.skipped_by_reason(job)?,
            throttled_secs: waited,
            elapsed_secs: started.elapsed().as_secs_f64(),
            stopped,
            audit_head: None,
        };
        let end = crate::store::audit::JobEnd::Run {
            owner: &self.lease.owner,
            state,
        };
        self.end_job_audited(&row, end, &mut report)?;
        Ok(report)
    }

    /// Whether the job's plan is younger than `age` (a retract job's plan only).
    fn plan_younger_than(&self, row: &JobRow, age: chrono::Duration) -> bool {
        if row.kind != JobKind::Retract {
            return false;
        }
        let made = row
            .plan_id
            .as_deref()
            .and_then(|id| self.store().plan_created_at(id).ok().flatten());
        made.is_some_and(|t| Utc::now().signed_duration_since(t) < age)
    }

    pub(super) fn job_row(&self, job: i64) -> Result<JobRow, EngineError> {
        self.store().job(job)?.ok_or(EngineError::UnknownJob(job))
    }

    pub(super) fn failed_by_reason(
        &self,
        job: i64,
    ) -> Result<BTreeMap<FailureReason, u64>, EngineError> {
        self.count_by_reason(job, ItemState::Failed)
    }

    pub(super) fn skipped_by_reason(
        &self,
        job: i64,
    ) -> Result<BTreeMap<FailureReason, u64>, EngineError> {
        self.count_by_reason(job, ItemState::Skipped)
    }

    fn count_by_reason(
        &self,
        job: i64,
        state: ItemState,
    ) -> Result<BTreeMap<FailureReason, u64>, EngineError> {
        let mut out = BTreeMap::new();
        for it in self.store().job_items(job, Some(state))? {
            *out.entry(it.reason.unwrap_or(FailureReason::ProviderError))
                .or_insert(0) += 1;
        }
        Ok(out)
    }

    /// Ends the job as `end` says together with its `job_finished` / `job_stopped` entry (one
    /// transaction, see [`crate::store::Store::end_job_audited`]) and puts the entry's head in
    /// the report. False (nothing changed or appended) when a queued job was not this
    /// worker's to end.
    pub(super) fn end_job_audited(
        &self,
        row: &JobRow,
        end: crate::store::audit::JobEnd<'_>,
        report: &mut JobReport,
    ) -> Result<bool, EngineError> {
        let mut counts = BTreeMap::from([
            ("succeeded".to_string(), report.counts.succeeded),
            ("failed".to_string(), report.counts.failed),
            ("skipped".to_string(), report.counts.skipped),
            ("remaining".to_string(), report.counts.remaining()),
        ]);
        for (reason, n) in &report.failed_by_reason {
            counts.insert(format!("failed_{}", reason.as_str()), *n);
        }
        let section = if row.kind == JobKind::Restore {
            "restore"
        } else {
            "job"
        };
        let action = match report.state {
            JobState::Finished => "job_finished",
            _ => "job_stopped",
        };
        let record = self.new_record(
            section,
            action,
            None,
            Some(row.id),
            counts,
            serde_json::json!({
                "trigger": row.trigger.as_str(),
                "action": row.action.as_str(),
                "stopped": report.stopped,
            }),
        );
        let Some(entry) = self.store().end_job_audited(row.id, end, record)? else {
            return Ok(false);
        };
        report.audit_head = Some(AuditHead {
            seq: entry.seq,
            hash: entry.hash,
        });
        Ok(true)
    }

    /// Settles `in_flight` items left by a crash: located where the action puts them (or gone,
    /// for deletes) = succeeded; still where they were = pending again.
    async fn reconcile(&self, row: &JobRow, sink: Sink<'_>) -> Result<(), EngineError> {
        let in_flight = self.store().job_items(row.id, Some(ItemState::InFlight))?;
        self.reconcile_items(row, in_flight, sink).await
    }

    /// [`Engine::reconcile`] for these in-flight items only (a worker's, or those it took over).
    pub(super) async fn reconcile_items(
        &self,
        row: &JobRow,
        in_flight: Vec<ItemRow>,
        sink: Sink<'_>,
    ) -> Result<(), EngineError> {
        if in_flight.is_empty() {
            return Ok(());
        }
        let results: Vec<_> = stream::iter(in_flight.into_iter().map(|it| async move {
            let located = match self.client(&it.tenant) {
                Ok(c) => c.locate(&it.mailbox, &it.message_id).await,
                Err(_) => Ok(Vec::new()),
            };
            (it, located)
        }))
        .buffer_unordered(SIDE_CONCURRENCY)
        .collect()
        .await;
        let (mut settled, mut requeued) = (0u64, 0u64);
        let store = self.store();
        for (it, located) in results {
            let target = target_folder(it.effective_action);
            match located {
                Ok(copies) => {
                    if let Some(c) = copies.iter().find(|c| Some(&c.folder) == target.as_ref()) {
                        store.finish_item_succeeded(
                            it.id,
                            &it.folder,
                            it.read,
                            Some(&c.id),
                            &c.folder,
                            "reconciled after restart: found where the action puts it",
                        )?;
                        settled += 1;
                    } else if copies.iter().any(|c| !c.folder.is_gone()) {
                        store.reset_item_pending(it.id)?;
                        requeued += 1;
                    } else if matches!(
                        it.effective_action,
                        RetractAction::SoftDelete | RetractAction::HardDelete
                    ) && copies.is_empty()
                    {
                        store.finish_item_succeeded(
                            it.id,
                            &it.folder,
                            it.read,
                            None,
                            target.as_ref().unwrap_or(&Folder::Purged),
                            "reconciled after restart: no longer visible (deleted)",
                        )?;
                        settled += 1;
                    } else if let Some(elsewhere) = copies.first() {
                        // Out of sight, but not where this action puts it: the interrupted
                        // request may have landed and a user (or another job) moved the copy
                        // on, or it never went out and the copy was moved anyway. Nobody can
                        // tell, and the record says so.
                        store.finish_item_failed(
                            it.id,
                            FailureReason::AlreadyGone,
                            "already_moved",
                            &format!(
                                "already_moved: reconciled after restart: the copy is in {} {MAY_HAVE_LANDED}",
                                elsewhere.folder
                            ),
                        )?;
                        settled += 1;
                    } else {
                        store.finish_item_failed(
                            it.id,
                            FailureReason::AlreadyGone,
                            "not_found",
                            "reconciled after restart: the copy is gone",
                        )?;
                        settled += 1;
                    }
                }
                // Cannot look now: no evidence either way, so the item stays in flight.
                Err(f) => {
                    tracing::warn!(job = row.id, mailbox = %it.mailbox, "cannot reconcile yet: {}", failure_detail(&f));
                }
            }
        }
        sink(JobEvent::Reconciled {
            job: row.id,
            succeeded: settled,
            requeued,
        });
        Ok(())
    }

    /// Sends items through the provider schedulers (one per tenant and action, concurrently),
    /// committing each item's state as the scheduler reports it.
    pub(super) async fn act(
        &self,
        row: &JobRow,
        items: Vec<ItemRow>,
        sink: Sink<'_>,
        shared: &RunShared<'_>,
    ) {
        let mut groups: BTreeMap<(String, RetractAction), Vec<ItemRow>> = BTreeMap::new();
        for it in items {
            groups
                .entry((it.tenant.clone(), it.effective_action))
                .or_default()
                .push(it);
        }
        let job = row.id;
        let runs = groups
            .into_iter()
            .map(|((tenant, action), items)| async move {
                let by_key: BTreeMap<u64, ItemRow> =
                    items.iter().map(|it| (it.id as u64, it.clone())).collect();
                let client = match self.client(&tenant) {
                    Ok(c) => c.clone(),
                    Err(e) => {
                        let store = self.store();
                        for it in &items {
                            let _ = store.finish_item_failed(
                                it.id,
                                FailureReason::NotAuthorized,
                                "unknown_tenant",
                                &e.to_string(),
                            );
                        }
                        return;
                    }
                };
                let fresh = self.plan_younger_than(row, PLANNED_COPY_FRESH);
                let just_located = shared.planning_here.load(Ordering::SeqCst)
                    && self.plan_younger_than(row, PLANNED_COPY_JUST_LOCATED);
                let bulk: Vec<BulkItem> = items
                    .iter()
                    .map(|it| BulkItem {
                        key: it.id as u64,
                        mailbox: it.mailbox.clone(),
                        internet_message_id: it.message_id.clone(),
                        copy: fresh.then(|| planned_copy(it)).flatten(),
                    })
                    .collect();
                let finished = std::sync::Mutex::new(Vec::new());
                client
                    .retract_located_until(
                        bulk,
                        action,
                        just_located,
                        &|| shared.should_stop(),
                        |event| self.on_progress(job, &by_key, event, sink, shared, &finished),
                    )
                    .await;
                self.flush_finished(job, &by_key, &finished, sink);
            });
        join_all(runs).await;
    }

    /// Commits what the scheduler reports. `in_flight` is committed at once (one transaction
    /// per batch, before it is sent); outcomes are committed in groups of [`FINISH_GROUP`]
    /// (and before the next `in_flight`, and at the end): an outcome lost to a crash leaves its
    /// item `in_flight`, which a restart reconciles by locating the copy.
    fn on_progress(
        &self,
        job: i64,
        by_key: &BTreeMap<u64, ItemRow>,
        event: ProgressEvent,
        sink: Sink<'_>,
        shared: &RunShared<'_>,
        finished: &FinishedBuffer,
    ) {
        match event {
            ProgressEvent::InFlight { items } => {
                if shared.unrecorded.load(Ordering::SeqCst) {
                    return; // Stopped: these will not be sent.
                }
                // The outcomes so far go in the same transaction (one commit per batch).
                let outcomes =
                    std::mem::take(&mut *finished.lock().unwrap_or_else(|p| p.into_inner()));
                let marks: Vec<(i64, &str)> = items
                    .iter()
                    .map(|(key, copy)| (*key as i64, copy.id.as_str()))
                    .collect();
                let mark =
                    |s: &crate::store::Store| s.mark_items_in_flight(&marks, &self.lease.owner);
                let together = self.store().in_transaction(|s| {
                    commit_outcomes(s, &outcomes)?;
                    mark(s)
                });
                if together.is_ok() {
                    report_outcomes(job, by_key, outcomes, sink);
                    return;
                }
                // Apart, as if never tried together: the outcomes on their own (a failure
                // there is logged), then the marks.
                finished
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .splice(0..0, outcomes);
                self.flush_finished(job, by_key, finished, sink);
                if let Err(e) = self.store().in_transaction(mark) {
                    // Unrecorded, a mutation could not be reconciled after a crash: stop sending.
                    tracing::error!(job, items = items.len(), "cannot record in_flight: {e}");
                    shared.unrecorded.store(true, Ordering::SeqCst);
                }
            }
            ProgressEvent::Finished { key, outcome } => {
                let full = {
                    let mut buffer = finished.lock().unwrap_or_else(|p| p.into_inner());
                    buffer.push((key, outcome));
                    buffer.len() >= FINISH_GROUP
                };
                if full {
                    self.flush_finished(job, by_key, finished, sink);
                }
            }
            ProgressEvent::Throttled { seconds } => {
                *shared.throttled.lock().unwrap_or_else(|p| p.into_inner()) += seconds;
                sink(JobEvent::Throttled { job, seconds });
            }
        }
    }

    /// Commits the buffered outcomes in one transaction, then reports them.
    fn flush_finished(
        &self,
        job: i64,
        by_key: &BTreeMap<u64, ItemRow>,
        finished: &FinishedBuffer,
        sink: Sink<'_>,
    ) {
        let outcomes = std::mem::take(&mut *finished.lock().unwrap_or_else(|p| p.into_inner()));
        if outcomes.is_empty() {
            return;
        }
        let result = self
            .store()
            .in_transaction(|s| commit_outcomes(s, &outcomes));
        if let Err(e) = result {
            tracing::error!(job, items = outcomes.len(), "cannot record outcomes: {e}");
        }
        report_outcomes(job, by_key, outcomes, sink);
    }

    /// Locates every canary copy again: each succeeded item must sit where the action puts it
    /// (or be invisible, for deletes).
    async fn verify_canary(&self, row: &JobRow, canary: &[ItemRow]) -> Result<(), String> {
        let ids: BTreeSet<i64> = canary.iter().map(|c| c.id).collect();
        let settled: Vec<ItemRow> = self
            .store()
            .job_items(row.id, None)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|it| ids.contains(&it.id))
            .collect();
        let failed = settled
            .iter()
            .filter(|it| it.state == ItemState::Failed)
            .count();
        let succeeded: Vec<&ItemRow> = settled
            .iter()
            .filter(|it| it.state == ItemState::Succeeded)
            .collect();
        if succeeded.is_empty() {
            return Err(format!(
                "none of {} canary copies was retracted",
                canary.len()
            ));
        }
        for it in succeeded {
            let client = self.client(&it.tenant).map_err(|e| e.to_string())?;
            let copies = client
                .locate(&it.mailbox, &it.message_id)
                .await
                .map_err(|f| format!("{}: {}", it.mailbox, failure_detail(&f)))?;
            let target = target_folder(it.effective_action);
            let ok = copies.iter().all(|c| c.folder.is_gone())
                && (copies.is_empty() || copies.iter().any(|c| Some(&c.folder) == target.as_ref()));
            if !ok {
                return Err(format!(
                    "{}: the copy is still in {}",
                    it.mailbox,
                    copies
                        .iter()
                        .map(|c| c.folder.label().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        tracing::info!(job = row.id, failed, "canary verified");
        Ok(())
    }

    /// Records the retraction state of the job's messages in the trace.
    pub(super) fn mark_trace(&self, job: i64) -> Result<(), EngineError> {
        let mut store = self.store();
        let per_message = store.message_outcomes(job)?;
        let now = Utc::now().timestamp();
        for m in per_message {
            let (tenant, mid, ok, not_ok) =
                (m.tenant, m.message_id, m.succeeded, m.unsettled_or_failed);
            if ok == 0 {
                continue;
            }
            let state = if not_ok == 0 { "retracted" } else { "partial" };
            for r in store.trace_by_message_id(&mid)? {
                if r.tenant == tenant
                    && let Some(id) = r.id
                {
                    store.set_retraction(id, Some(now), Some(state))?;
                }
            }
        }
        Ok(())
    }

    /// Jobs left running by a crash or a kill.
    pub fn unfinished_jobs(&self) -> Result<Vec<JobRow>, EngineError> {
        Ok(self.store().unfinished_jobs()?)
    }

    /// The live holder of a job's lease: the process running it now, if any (a dead or
    /// silent holder does not count).
    pub fn live_lease(&self, job: i64) -> Result<Option<JobLease>, EngineError> {
        Ok(self
            .store()
            .job_lease(job)?
            .filter(|l| l.is_live(&self.lease.host, self.lease_stale())))
    }

    /// Unfinished jobs that no live process runs: interrupted (a console quit mid-job, a
    /// crash, a kill), to offer for resume. A job queued for `clawback worker` is the
    /// workers' to take up, not offered here (`clawback jobs resume ID` still runs it alone
    /// when no worker is on it).
    pub fn interrupted_jobs(&self) -> Result<Vec<JobRow>, EngineError> {
        let mut out = Vec::new();
        for row in self.unfinished_jobs()? {
            let queued = self.store().job_queued(row.id)?;
            if !queued && self.live_lease(row.id)?.is_none() {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// Cancels a running job, from any process: the process running it (if any) sees the
    /// cancel before its next batch and stops; pending items stay pending (`jobs resume`).
    /// Returns the live holder of the job's lease, if a process is running it. A finished or
    /// already cancelled job is refused.
    pub fn cancel_job(&self, job: i64) -> Result<Option<JobLease>, EngineError> {
        self.authorize(Capability::CancelJob)?;
        match self.store().request_cancel(job)? {
            None => return Err(EngineError::UnknownJob(job)),
            Some(JobState::Running) => {}
            Some(JobState::Finished) => {
                return Err(EngineError::Invalid(format!(
                    "job {job} is finished: there is nothing to cancel"
                )));
            }
            Some(JobState::Cancelled) => {
                return Err(EngineError::Invalid(format!(
                    "job {job} is already cancelled (`clawback jobs resume {job}` continues it)"
                )));
            }
        }
        let holder = self
            .store()
            .job_lease(job)?
            .filter(|l| l.is_live(&self.lease.host, self.lease_stale()));
        self.audit(
            "job",
            "job_cancelled",
            None,
            Some(job),
            BTreeMap::new(),
            serde_json::json!({
                "running_in": holder.as_ref().map(|h| h.to_string()),
            }),
        )?;
        Ok(holder)
    }

    /// A new job with the items of `job` that failed with `reason`, located afresh.
    pub fn retry_failed(&self, job: i64, reason: FailureReason) -> Result<i64, EngineError> {
        let row = self.job_row(job)?;
        self.authorize(Capability::Retract(row.action))?;
        let failed: Vec<ItemRow> = self
            .store()
            .job_items(job, Some(ItemState::Failed))?
            .into_iter()
            .filter(|it| it.reason == Some(reason))
            .map(|mut it| {
                it.state = ItemState::Pending;
                it.reason = None;
                it.provider_code = None;
                it.detail = Some(format!("retry of job {job}"));
                it.finished_at = None;
                it
            })
            .collect();
        if failed.is_empty() {
            return Err(EngineError::Invalid(format!(
                "job {job} has no items that failed with {reason}"
            )));
        }
        let new = self.store().create_job(
            &NewJob {
                kind: JobKind::Retract,
                plan_id: row.plan_id.clone(),
                parent_job: Some(job),
                trigger: row.trigger,
                action: row.action,
                operator: self.operator.name.clone(),
                role: self.operator.role,
                reason: format!("retry {reason} of job {job}"),
                dry_run: false,
                detected_at: row.detected_at,
            },
            &failed,
        )?;
        self.audit(
            "retract",
            "retry_failed",
            None,
            Some(new),
            BTreeMap::from([("items".to_string(), failed.len() as u64)]),
            serde_json::json!({"of_job": job, "reason": reason.as_str()}),
        )?;
        Ok(new)
    }

    /// Undo: creates a restore job for the succeeded items of `job` (only these addresses when
    /// `only` is not empty) that are not restored or being restored yet, and runs it.
    /// Hard-deleted copies are not offered (admin recovery only); a copy that was moved since
    /// the retraction is left alone (`moved_since`); a copy already back is not sent again.
    pub async fn restore(
        &self,
        job: i64,
        only: &[String],
        sink: Sink<'_>,
    ) -> Result<JobReport, EngineError> {
        let new = self.create_restore_job(job, only)?;
        self.run_job(new, &RunOptions::default(), sink).await
    }

    /// The first half of [`Engine::restore`]: creates (and audits) the restore job without
    /// running it, so a front end can show it at once and run it with [`Engine::run_job`].
    /// Store work only; a second call for the same job finds its copies being restored and
    /// is refused.
    pub fn create_restore_job(&self, job: i64, only: &[String]) -> Result<i64, EngineError> {
        self.authorize(Capability::Restore)?;
        let row = self.job_row(job)?;
        if row.kind != JobKind::Retract {
            return Err(EngineError::Invalid(format!(
                "job {job} is a restore job; restore the retract job it undid"
            )));
        }
        let only: BTreeSet<String> = only.iter().map(|s| s.to_ascii_lowercase()).collect();
        let unrestored: BTreeSet<i64> = self.store().unrestored_items(job)?;
        let succeeded: Vec<ItemRow> = self
            .store()
            .job_items(job, Some(ItemState::Succeeded))?
            .into_iter()
            .filter(|it| only.is_empty() || only.contains(&it.mailbox))
            .collect();
        let hard_deleted = succeeded
            .iter()
            .filter(|it| it.effective_action == RetractAction::HardDelete)
            .count();
        let items: Vec<ItemRow> = succeeded
            .into_iter()
            .filter(|it| unrestored.contains(&it.id))
            .map(|it| {
                let mut r = ItemRow::pending(
                    &it.tenant,
                    &it.mailbox,
                    &it.message_id,
                    it.folder.clone(),
                    it.action,
                    it.effective_action,
                );
                r.copy_id = it.new_id.clone();
                r.read = it.read;
                r.depth = it.depth;
                r.to_folder = it.to_folder.clone();
                r.delivered_at = it.delivered_at;
                r.source_item = Some(it.id);
                r
            })
            .collect();
        if items.is_empty() {
            return Err(EngineError::Invalid(if hard_deleted > 0 {
                format!(
                    "job {job} hard-deleted {hard_deleted} copies: they are recoverable by an admin only (eDiscovery / Recoverable Items\\Purges, Google Vault), not by clawback{}",
                    if only.is_empty() {
                        ""
                    } else {
                        " (for those addresses)"
                    }
                )
            } else {
                format!(
                    "job {job} has nothing to restore (no succeeded copies{} left that are not restored or being restored)",
                    if only.is_empty() {
                        ""
                    } else {
                        " for those addresses"
                    }
                )
            }));
        }
        let new = self.store().create_job(
            &NewJob {
                kind: JobKind::Restore,
                plan_id: row.plan_id.clone(),
                parent_job: Some(job),
                trigger: Trigger::Manual,
                action: row.action,
                operator: self.operator.name.clone(),
                role: self.operator.role,
                reason: format!("undo job {job}"),
                dry_run: false,
                detected_at: None,
            },
            &items,
        )?;
        self.audit(
            "restore",
            "restore_started",
            None,
            Some(new),
            BTreeMap::from([
                ("copies".to_string(), items.len() as u64),
                ("hard_deleted_not_offered".to_string(), hard_deleted as u64),
            ]),
            serde_json::json!({"of_job": job, "only": only}),
        )?;
        Ok(new)
    }

    async fn run_restore_items(
        &self,
        row: &JobRow,
        options: &RunOptions,
        sink: Sink<'_>,
        started: Instant,
    ) -> Result<JobReport, EngineError> {
        let job = row.id;
        // A restore in flight at a crash is simply run again: the copy is located afresh and
        // moved back only from where the retraction put it (already back = nothing sent).
        // An item in flight whose request was about to be sent (its copy recorded) was
        // interrupted: its outcome is unknown until looked at, and the copy is sent again only
        // if it is the same copy, unchanged since. One never sent for is simply run.
        let mut todo = self.store().job_items(job, Some(ItemState::Pending))?;
        let mut earlier: BTreeMap<i64, SentCopy> = BTreeMap::new();
        let in_flight = self.store().job_items(job, Some(ItemState::InFlight))?;
        for it in in_flight {
            if let Some((id, version)) = self.store().sent_copy(it.id)? {
                earlier.insert(it.id, SentCopy { id, version });
            }
            todo.push(it);
        }
        let earlier = &earlier;
        let interrupted: BTreeSet<i64> = earlier.keys().copied().collect();
        let counts = self.store().item_counts(job)?;
        sink(JobEvent::Started {
            job,
            total: counts.total(),
            remaining: counts.remaining(),
        });
        let shared = RunShared {
            engine: self,
            job,
            throttled: std::sync::Mutex::new(0f64),
            unrecorded: AtomicBool::new(false),
            cancel: options.cancel.as_deref(),
            interrupt: options.interrupt.as_deref(),
            stopped_by_store: AtomicBool::new(false),
            planning_here: AtomicBool::new(false),
            worker: false,
        };
        let shared = &shared;
        let results: Vec<_> = stream::iter(todo.into_iter().map(|it| async move {
            if shared.should_stop() {
                return None;
            }
            let recorded = self.store().mark_in_flight(
                it.id,
                it.copy_id.as_deref().unwrap_or_default(),
                &self.lease.owner,
            );
            if let Err(e) = recorded {
                tracing::error!(job, item = it.id, "restore not sent: {e}");
                return None;
            }
            // Durability rule: the copy is recorded before the request is sent for it.
            let item = it.id;
            let record = move |c: &LocatedCopy| {
                self.store()
                    .record_sending(item, &c.id, c.version.as_deref(), &self.lease.owner)
                    .map_err(|e| {
                        crate::provider::Failure::new(
                            FailureReason::ProviderError,
                            None,
                            NOT_RECORDED,
                            format!("not sent: the store did not record it ({e})"),
                        )
                    })
            };
            let outcome = match self.client(&it.tenant) {
                Ok(c) => {
                    c.restore_from(
                        &it.mailbox,
                        &it.message_id,
                        it.copy_id.as_deref(),
                        &it.folder,
                        RestoreOptions {
                            retracted_to: it.to_folder.as_ref(),
                            earlier: earlier.get(&it.id),
                            before_send: Some(&record),
                        },
                    )
                    .await
                }
                Err(e) => Err(crate::provider::Failure::new(
                    FailureReason::NotAuthorized,
                    None,
                    "unknown_tenant",
                    e.to_string(),
                )),
            };
            Some((it, outcome))
        }))
        .buffer_unordered(SIDE_CONCURRENCY)
        .filter_map(|r| async move { r })
        .collect()
        .await;
        for (it, outcome) in results {
            let store = self.store();
            match outcome {
                Ok(applied) => {
                    // Back in place after an interrupted attempt: that attempt landed.
                    // Sent again: the copy was the same and unchanged since the interrupted
                    // attempt recorded it (a moved one is left alone), so that attempt had
                    // not landed.
                    let detail = if !interrupted.contains(&it.id) {
                        applied.detail.clone()
                    } else if applied.detail.starts_with("already back") {
                        "back in place: the interrupted attempt landed (verified)".to_string()
                    } else {
                        format!(
                            "{} (sent again after an interrupted attempt that had not landed: the copy was unchanged)",
                            applied.detail
                        )
                    };
                    store.finish_item_succeeded(
                        it.id,
                        it.to_folder.as_ref().unwrap_or(&applied.from),
                        it.read,
                        applied.new_id.as_deref(),
                        &applied.to,
                        &detail,
                    )?;
                    drop(store);
                    sink(JobEvent::ItemSucceeded {
                        job,
                        mailbox: it.mailbox.clone(),
                    });
                }
                // Unknown (an answer lost and no look possible), or not sent because the
                // store could not record it: left in flight for a resume to settle by locating.
                Err(f) if f.code == UNCERTAIN || f.code == NOT_RECORDED => {
                    drop(store);
                    tracing::warn!(job, mailbox = %it.mailbox, "restore outcome unknown: left in flight");
                }
                Err(mut f) => {
                    // Interrupted (in flight when its process stopped) and the copy has left
                    // the place the retraction put it for another one: whether the interrupted
                    // request landed before a user or a later job moved the copy on, or never
                    // went out, cannot be told. Left alone as moved_since, and the record says so.
                    if f.reason == FailureReason::MovedSince
                        && interrupted.contains(&it.id)
                        && !f.message.contains(MAY_HAVE_LANDED)
                    {
                        f.message = format!("{} {MAY_HAVE_LANDED}", f.message);
                    }
                    store.finish_item_failed(it.id, f.reason, &f.code, &failure_detail(&f))?;
                    drop(store);
                    sink(JobEvent::ItemFailed {
                        job,
                        mailbox: it.mailbox.clone(),
                        reason: f.reason,
                        provider_code: f.code,
                    });
                }
            }
        }
        let counts = self.store().item_counts(job)?;
        let stopped_by_store = shared.stopped_by_store.load(Ordering::SeqCst);
        let interrupted = shared.interrupted() && !stopped_by_store;
        let cancelled = shared.cancel.is_some_and(|c| c.load(Ordering::SeqCst));
        let state = if counts.remaining() == 0 {
            JobState::Finished
        } else if interrupted {
            // Left running without a lease: offered for resume, as after a crash.
            JobState::Running
        } else if stopped_by_store || cancelled {
            JobState::Cancelled
        } else {
            // Outcomes nobody could tell: the job stays running for `jobs resume`.
            JobState::Running
        };
        // The trace shows the messages as restored — in the tenants this job restored them in.
        {
            let mut store = self.store();
            let restored: BTreeSet<(String, String)> = store
                .job_items(job, Some(ItemState::Succeeded))?
                .into_iter()
                .map(|it| (it.tenant, it.message_id))
                .collect();
            for (tenant, mid) in restored {
                for r in store.trace_by_message_id(&mid)? {
                    if r.tenant == tenant
                        && let Some(id) = r.id
                    {
                        store.set_retraction(id, r.retracted_at, Some("restored"))?;
                    }
                }
            }
        }
        let stopped = if counts.remaining() > 0 && interrupted {
            Some(format!(
                "interrupted: the console closed; `clawback jobs resume {job}` (or the console at its next start) continues it"
            ))
        } else if stopped_by_store || (cancelled && counts.remaining() > 0) {
            Some("cancelled, or the lease was taken over".to_string())
        } else if counts.remaining() > 0 {
            Some(format!(
                "{} restores' outcome is unknown (answers lost, the copy could not be located): `clawback jobs resume {job}` settles them by locating",
                counts.remaining()
            ))
        } else {
            None
        };
        let mut report = JobReport {
            job,
            state,
            counts,
            failed_by_reason: self.failed_by_reason(job)?,
            skipped_by_reason: self.skipped_by_reason(job)?,
            throttled_secs: 0.0,
            elapsed_secs: started.elapsed().as_secs_f64(),
            stopped,
            audit_head: None,
        };
        let end = crate::store::audit::JobEnd::Run {
            owner: &self.lease.owner,
            state,
        };
        self.end_job_audited(row, end, &mut report)?;
        Ok(report)
    }
}

/// The provider code of a restore not sent because the store could not record the copy first
/// (the lease was lost, or the store failed): nothing was sent; the item stays in flight.
const NOT_RECORDED: &str = "not_recorded";

/// The copy as the plan located it, for a job that acts without locating it again.
fn planned_copy(it: &ItemRow) -> Option<LocatedCopy> {
    let id = it.copy_id.as_deref().filter(|id| !id.is_empty())?;
    Some(LocatedCopy {
        mailbox: it.mailbox.clone(),
        id: id.to_string(),
        internet_message_id: it.message_id.clone(),
        folder: it.folder.clone(),
        provider_folder: String::new(),
        read: it.read,
        conversation_id: String::new(),
        received: it.delivered_at,
        version: None,
    })
}

/// Writes items' outcomes (inside the caller's transaction). An unknown outcome is left
/// `in_flight`, for reconciliation by locating.
fn commit_outcomes(
    s: &crate::store::Store,
    outcomes: &[(u64, Result<Applied, Failure>)],
) -> Result<(), crate::store::StoreError> {
    let details: Vec<String> = outcomes
        .iter()
        .map(|(_, o)| match o {
            Err(f) if f.code != UNCERTAIN => failure_detail(f),
            _ => String::new(),
        })
        .collect();
    let items: Vec<ItemFinish<'_>> = outcomes
        .iter()
        .zip(&details)
        .filter_map(|((key, outcome), detail)| match outcome {
            Err(f) if f.code == UNCERTAIN => None,
            Ok(applied) => Some(ItemFinish::Succeeded {
                item: *key as i64,
                from: &applied.from,
                read: applied.was_read,
                new_id: applied.new_id.as_deref(),
                to: &applied.to,
                detail: &applied.detail,
            }),
            Err(f) => Some(ItemFinish::Failed {
                item: *key as i64,
                reason: f.reason,
                provider_code: &f.code,
                detail,
            }),
        })
        .collect();
    s.finish_items(&items)
}

/// Reports committed outcomes to the job's sink.
fn report_outcomes(
    job: i64,
    by_key: &BTreeMap<u64, ItemRow>,
    outcomes: Vec<(u64, Result<Applied, Failure>)>,
    sink: Sink<'_>,
) {
    for (key, outcome) in outcomes {
        let Some(it) = by_key.get(&key) else { continue };
        if matches!(&outcome, Err(f) if f.code == UNCERTAIN) {
            tracing::warn!(job, mailbox = %it.mailbox, "outcome unknown: left in flight");
            continue;
        }
        sink(match outcome {
            Ok(_) => JobEvent::ItemSucceeded {
                job,
                mailbox: it.mailbox.clone(),
            },
            Err(f) => JobEvent::ItemFailed {
                job,
                mailbox: it.mailbox.clone(),
                reason: f.reason,
                provider_code: f.code,
            },
        });
    }
}
