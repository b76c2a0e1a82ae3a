//! Shared work (issue 17, DESIGN §5 "several workers split one huge job"): a job queued for
//! workers (`retract --queue`, `apply --queue`) is run by any number of `clawback worker`
//! processes, on any hosts sharing the store. Each worker registers on the job (heartbeat every
//! 2 s), takes batches of free pending items, acts on them through the same path as a
//! single-process run (`Engine::act`: same schedulers, per-tenant limits and throttling, same
//! durability rule), and settles them. A worker whose heartbeat lapsed (or, on this host, whose
//! process is gone) has its registration ended by another (audited `worker_taken_over`): its
//! untouched items are free again, its in-flight items are taken over and settled by locating
//! the copy, never sent blindly. The store fences a worker whose items were taken: it can no
//! longer mark them in flight. The worker that settles the last item ends the job, exactly
//! once (a conditional update), with the same `job_finished` audit entry as a single run.
//!
//! A job is run either by one process holding its lease (`run_job`) or by workers, never both:
//! a worker registers and then checks the lease; a run takes the lease and then checks the
//! workers; whichever comes second backs off.

use super::core::{Engine, EngineError};
use super::execute::{JobEvent, JobReport, LEASE_HEARTBEAT, RunShared};
use super::roles::Capability;
use crate::store::jobs::{ItemState, JobKind, JobRow, JobState};
use crate::store::workers::JobWorker;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How often an idle worker looks for work.
const IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Items taken per batch.
    pub batch: usize,
    /// Only this job (the worker ends when it is no longer running).
    pub job: Option<i64>,
    /// End when no queued job is left to work on or wait for (instead of waiting for new ones).
    pub exit_when_idle: bool,
    /// Set to stop: the batch in flight is finished, untouched items are given back.
    pub stop: Arc<AtomicBool>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            batch: 250,
            job: None,
            exit_when_idle: false,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// What a worker reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    /// Registered on a job.
    Joined { job: i64 },
    /// Not joined: a process runs the job alone (it holds the job's lease).
    Refused { job: i64, holder: String },
    /// Took a batch of items.
    Took { job: i64, items: u64 },
    /// Ended a lapsed worker's registration; `in_flight` of its items are settled here.
    TookOver { job: i64, worker: String, held: u64 },
    /// Left a job (its untouched items given back).
    Left { job: i64 },
    /// This worker settled the job's last item and ended the job.
    Finished(JobReport),
    /// An item's outcome, as in a single run.
    Item(JobEvent),
}

/// What a worker did before it ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerSummary {
    /// Items it took (in batches) or took over.
    pub items: u64,
    /// Jobs it ended.
    pub finished: Vec<i64>,
}

/// What one visit to a job found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Visit {
    /// Items were taken and settled.
    Worked,
    /// Nothing to take now, but the job has items other workers hold: wait for them.
    Waiting,
    /// Nothing here for a worker (ended, not queued, or run by a process alone).
    Nothing,
}

pub type WorkerSink<'a> = &'a (dyn Fn(WorkerEvent) + Send + Sync);

impl Engine {
    /// How old a heartbeat may be before its holder is taken to be gone (`[jobs]
    /// lease_stale_secs`).
    pub fn lease_stale(&self) -> chrono::Duration {
        self.config.jobs.lease_stale()
    }

    /// The workers working on `job` now (registered, heartbeat fresh, process alive).
    pub fn live_workers(&self, job: i64) -> Result<Vec<JobWorker>, EngineError> {
        let stale = self.lease_stale();
        Ok(self
            .store()
            .job_workers(job)?
            .into_iter()
            .filter(|w| w.is_live(&self.lease.host, stale))
            .collect())
    }

    /// Leaves a created retract job for `clawback worker` (audited `job_queued`).
    pub fn queue_job(&self, job: i64) -> Result<(), EngineError> {
        let row = self.job_row(job)?;
        if row.kind != JobKind::Retract {
            return Err(EngineError::Invalid(format!(
                "job {job} is a restore job; only retract jobs are queued for workers"
            )));
        }
        self.authorize(Capability::Retract(row.action))?;
        self.store().queue_job(job)?;
        self.audit(
            "job",
            "job_queued",
            None,
            Some(job),
            BTreeMap::new(),
            serde_json::json!({"for": "clawback worker"}),
        )?;
        Ok(())
    }

    /// `clawback worker`: works on queued jobs until `options.stop` is set (or, with
    /// `exit_when_idle`, until nothing is left to work on or wait for).
    pub async fn work(
        &self,
        options: &WorkerOptions,
        sink: WorkerSink<'_>,
    ) -> Result<WorkerSummary, EngineError> {
        let mut summary = WorkerSummary::default();
        loop {
            if options.stop.load(Ordering::SeqCst) {
                break;
            }
            let jobs = match options.job {
                Some(job) => {
                    let row = self.job_row(job)?;
                    if row.state != JobState::Running {
                        break;
                    }
                    vec![job]
                }
                None => self.store().queued_jobs()?,
            };
            let (mut worked, mut waiting) = (false, false);
            for job in jobs {
                match self.visit(job, options, sink, &mut summary).await? {
                    Visit::Worked => worked = true,
                    Visit::Waiting => waiting = true,
                    Visit::Nothing => {}
                }
                if options.stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            if worked {
                continue;
            }
            if options.exit_when_idle && !waiting {
                break;
            }
            let idle_until = tokio::time::Instant::now() + IDLE_POLL;
            while tokio::time::Instant::now() < idle_until && !options.stop.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        Ok(summary)
    }

    /// Joins one job, works on it while there is something to take, leaves it, and ends it
    /// when its last item is settled.
    async fn visit(
        &self,
        job: i64,
        options: &WorkerOptions,
        sink: WorkerSink<'_>,
        summary: &mut WorkerSummary,
    ) -> Result<Visit, EngineError> {
        let row = self.job_row(job)?;
        if row.state != JobState::Running
            || row.kind != JobKind::Retract
            || !self.store().job_queued(job)?
        {
            return Ok(Visit::Nothing);
        }
        self.authorize(Capability::Retract(row.action))?;
        let owner = self.lease.owner.clone();
        self.store().join_job(job, &self.lease)?;
        if let Some(lease) = self.live_lease(job)? {
            self.store().leave_job(job, &owner)?;
            sink(WorkerEvent::Refused {
                job,
                holder: lease.to_string(),
            });
            return Ok(Visit::Nothing);
        }
        sink(WorkerEvent::Joined { job });
        let heartbeat = async {
            loop {
                tokio::time::sleep(LEASE_HEARTBEAT).await;
                match self.store().heartbeat_worker(job, &owner) {
                    Ok(true) => {}
                    // The next batch's check sees it and stops.
                    Ok(false) => tracing::error!(job, "items taken over by another worker"),
                    Err(e) => tracing::error!(job, "cannot renew the worker's heartbeat: {e}"),
                }
            }
        };
        let worked = tokio::select! {
            out = self.work_batches(&row, options, sink) => out,
            () = heartbeat => unreachable!("the heartbeat loop never ends"),
        };
        if let Err(e) = self.store().leave_job(job, &owner) {
            tracing::error!(job, "cannot leave the job: {e}");
        }
        sink(WorkerEvent::Left { job });
        let (taken, throttled) = worked?;
        summary.items += taken;
        if let Some(report) = self.end_shared_job(&row, throttled)? {
            summary.finished.push(job);
            sink(WorkerEvent::Finished(report));
            return Ok(Visit::Worked);
        }
        if taken > 0 {
            return Ok(Visit::Worked);
        }
        let row = self.job_row(job)?;
        let counts = self.store().item_counts(job)?;
        Ok(
            if row.state == JobState::Running && counts.remaining() > 0 {
                Visit::Waiting
            } else {
                Visit::Nothing
            },
        )
    }

    /// Takes over lapsed workers' items, then takes and settles batches until nothing is left
    /// to take or the worker must stop. Returns the items taken and the seconds throttled.
    async fn work_batches(
        &self,
        row: &JobRow,
        options: &WorkerOptions,
        sink: WorkerSink<'_>,
    ) -> Result<(u64, f64), EngineError> {
        let job = row.id;
        let owner = self.lease.owner.as_str();
        let item_sink = |e: JobEvent| sink(WorkerEvent::Item(e));
        let (mut taken, mut throttled) = (0u64, 0f64);
        loop {
            self.end_lapsed_workers(job, sink)?;
            let shared = RunShared::for_worker(self, job, &options.stop);
            let orphans = self.store().take_orphans(job, owner)?;
            if !orphans.is_empty() {
                taken += orphans.len() as u64;
                self.reconcile_items(row, orphans, &item_sink).await?;
            }
            if shared.should_stop() {
                break;
            }
            let batch = self.store().take_items(job, owner, options.batch.max(1))?;
            if batch.is_empty() {
                break;
            }
            taken += batch.len() as u64;
            sink(WorkerEvent::Took {
                job,
                items: batch.len() as u64,
            });
            let ids: BTreeSet<i64> = batch.iter().map(|it| it.id).collect();
            self.act(row, batch, &item_sink, &shared).await;
            // Outcomes nobody could tell (answer lost): settled by locating, as a single run
            // does; what still cannot be told is left in flight (taken over when this worker
            // leaves).
            for _ in 0..2 {
                if shared.should_stop() {
                    break;
                }
                let unknown: Vec<_> = self
                    .store()
                    .job_items(job, Some(ItemState::InFlight))?
                    .into_iter()
                    .filter(|it| ids.contains(&it.id))
                    .collect();
                if unknown.is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                self.reconcile_items(row, unknown, &item_sink).await?;
            }
            throttled += shared.throttled_secs();
            if shared.unrecorded() {
                // Its items were taken over (or the store failed): nothing more is sent.
                tracing::warn!(
                    job,
                    "a batch could not be marked in flight; leaving the job"
                );
                break;
            }
        }
        Ok((taken, throttled))
    }

    /// Ends the registration of every other worker of `job` that is no longer live; its items
    /// become free (pending) or are taken over (in flight). Audited per worker.
    fn end_lapsed_workers(&self, job: i64, sink: WorkerSink<'_>) -> Result<(), EngineError> {
        let stale = self.lease_stale();
        let lapsed: Vec<JobWorker> = self
            .store()
            .job_workers(job)?
            .into_iter()
            .filter(|w| {
                w.holder.owner != self.lease.owner
                    && w.ended.is_none()
                    && !w.is_live(&self.lease.host, stale)
            })
            .collect();
        for w in lapsed {
            if !self.store().end_lapsed_worker(
                job,
                (&w.holder.owner, w.heartbeat_secs),
                &self.lease.owner,
            )? {
                continue; // Another worker did, or it came back.
            }
            tracing::warn!(job, "worker {} lapsed: its items are taken over", w.name());
            self.audit(
                "job",
                "worker_taken_over",
                None,
                Some(job),
                BTreeMap::from([("held".to_string(), w.held)]),
                serde_json::json!({
                    "previous_pid": w.holder.pid,
                    "previous_host": w.holder.host,
                    "previous_heartbeat": w.as_lease().heartbeat,
                }),
            )?;
            sink(WorkerEvent::TookOver {
                job,
                worker: w.name(),
                held: w.held,
            });
        }
        Ok(())
    }

    /// The end of a job its workers finished, by the one worker whose conditional update ends
    /// it (running, nothing left), together with its `job_finished` entry (counts and audit
    /// head) in one transaction; the trace marked first. `None` when the job is not done yet
    /// or another worker ended it.
    fn end_shared_job(
        &self,
        row: &JobRow,
        throttled: f64,
    ) -> Result<Option<JobReport>, EngineError> {
        let job = row.id;
        let counts = self.store().item_counts(job)?;
        if counts.remaining() > 0 {
            return Ok(None);
        }
        self.mark_trace(job)?;
        let mut report = JobReport {
            job,
            state: JobState::Finished,
            counts,
            failed_by_reason: self.failed_by_reason(job)?,
            skipped_by_reason: self.skipped_by_reason(job)?,
            throttled_secs: throttled,
            elapsed_secs: (chrono::Utc::now() - row.created_at)
                .num_milliseconds()
                .max(0) as f64
                / 1000.0,
            stopped: None,
            audit_head: None,
        };
        let ended = self.end_job_audited(row, crate::store::audit::JobEnd::Queued, &mut report)?;
        Ok(ended.then_some(report))
    }
}
