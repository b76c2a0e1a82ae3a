//! Commands: imperative requests from a front end to the engine task.
//!
//! The engine answers every command with one or more [`EngineEvent`](super::event::EngineEvent)s
//! (or `Denied` when the operator's role does not allow it). Commands that carry a
//! [`Generation`] are latest-wins: the engine may skip work for a generation that a newer
//! command of the same kind has superseded, and must echo the generation in its answer.

use super::view::{
    AuditFilter, Confirmation, Generation, JobId, MetricsWindow, PlanId, PolicyMatrix,
    RetractRequest,
};
use crate::model::FailureReason;

/// A request to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run a trace query (`trace::query` language). Answer: `SearchCompleted` or `SearchFailed`
    /// with the same generation.
    Search {
        generation: Generation,
        query: String,
        /// Rows to return at most; `total` in the answer counts every match.
        limit: usize,
    },
    /// The recipient checklist of these messages in every tenant that holds them: the plan's
    /// recipient list (located copies, and every line it cannot act on with its reason).
    /// Answer: `RecipientsProgressed`… then `RecipientsLoaded` (or `RecipientsCancelled`).
    LoadRecipients {
        generation: Generation,
        /// Internet Message-IDs (one message, or every message of a campaign).
        message_ids: Vec<String>,
    },
    /// Stop the recipient load of `generation` (the engine aborts its work). Answer:
    /// `RecipientsCancelled` when that load was still running.
    CancelRecipients { generation: Generation },
    /// How many copies and mailboxes each depth `0..=depth` adds, for the current selection.
    /// Answer: `DepthPreviewed`.
    PreviewDepth {
        generation: Generation,
        message_ids: Vec<String>,
        depth: u8,
        /// Addresses unticked in the checklist (left out at every depth).
        excluded: Vec<String>,
    },
    /// Resolve a request into a plan without acting. Answer: `PlanBuilt` (or `Denied`).
    BuildPlan(RetractRequest),
    /// Execute a built plan. Answer: `JobStarted`, `JobProgressed`…, `ItemFailed`…,
    /// `JobFinished` (or `Denied`, or `EngineFailed` if the confirmation does not match).
    ApplyPlan {
        plan_id: PlanId,
        confirmation: Confirmation,
    },
    /// Discard a built plan that was not applied.
    DiscardPlan { plan_id: PlanId },
    /// Stop a running job after the items in flight; the rest stay pending (resumable).
    CancelJob { job: JobId },
    /// Retry the items of a job that failed with `reason`, as a new job.
    RetryFailed { job: JobId, reason: FailureReason },
    /// Undo: put succeeded copies back where they were. `only`: these addresses; empty = all.
    /// The restore job is created at once (answer: `JobStarted`, then its progress and
    /// `JobFinished`); a job whose copies are restored or being restored is refused.
    Restore { job: JobId, only: Vec<String> },
    /// Continue an interrupted or cancelled job. Answer: `JobStarted`…`JobFinished`, or
    /// `JobLeased` when another live process runs it.
    ResumeJob { job: JobId },
    /// Unfinished jobs no live process runs (a console quit mid-job, a crash), to offer for
    /// resume. Answer: `InterruptedJobsFound`.
    FindInterruptedJobs,
    /// Metrics over the window ending now. Answer: `MetricsLoaded`.
    LoadMetrics { window: MetricsWindow },
    /// The messages retracted in the window ending now, by retraction time, with their
    /// copies per outcome and trigger ("view details"). Answer: `MetricsDetailsLoaded`.
    LoadMetricsDetails { window: MetricsWindow },
    /// Running and past jobs. Answer: `JobsLoaded`.
    LoadJobs,
    /// Per-recipient outcomes of one job. Answer: `JobOutcomesLoaded`.
    LoadJobOutcomes { job: JobId },
    /// Audit entries matching the filter, newest first. Answer: `AuditLoaded`.
    LoadAudit { filter: AuditFilter },
    /// Check the audit hash chain. Answer: `AuditVerified`.
    VerifyAudit,
    /// Tenants and the Retract status of their domains (all tenants at once). Answers:
    /// `TenantsProgress` as each tenant is done, then `TenantsLoaded`.
    LoadTenants,
    /// Stop a `LoadTenants` under way (the operator's `Esc`): its provider work is aborted.
    /// Answer: `TenantsCancelled`.
    CancelTenants,
    /// The current auto-retract policy. Answer: `PolicyLoaded`.
    LoadPolicy,
    /// Store a new policy version (admin only). Answer: `PolicySaved` or `Denied`.
    SavePolicy(PolicyMatrix),
    /// The front end is closing: running jobs stop after the items in flight and stay
    /// resumable (interrupted, not cancelled); the engine then stops, which closes its events.
    Shutdown,
}

impl Command {
    /// Short name for logs and the status line.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Search { .. } => "search",
            Command::LoadRecipients { .. } => "load recipients",
            Command::CancelRecipients { .. } => "cancel recipients",
            Command::PreviewDepth { .. } => "preview depth",
            Command::BuildPlan(_) => "build plan",
            Command::ApplyPlan { .. } => "apply plan",
            Command::DiscardPlan { .. } => "discard plan",
            Command::CancelJob { .. } => "cancel job",
            Command::RetryFailed { .. } => "retry failed",
            Command::Restore { .. } => "restore",
            Command::ResumeJob { .. } => "resume job",
            Command::FindInterruptedJobs => "find interrupted jobs",
            Command::LoadMetrics { .. } => "load metrics",
            Command::LoadMetricsDetails { .. } => "load metrics details",
            Command::LoadJobs => "load jobs",
            Command::LoadJobOutcomes { .. } => "load job outcomes",
            Command::LoadAudit { .. } => "load audit",
            Command::VerifyAudit => "verify audit",
            Command::LoadTenants => "load tenants",
            Command::CancelTenants => "cancel tenants",
            Command::LoadPolicy => "load policy",
            Command::SavePolicy(_) => "save policy",
            Command::Shutdown => "shutdown",
        }
    }
}
