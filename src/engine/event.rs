//! Engine events: facts from the engine task, in the past tense. A front end renders state from
//! them and never assumes an answer arrives (a command may be answered by `Denied` or
//! `EngineFailed` instead).

use super::metrics::RetractedMessage;
use super::view::{
    AuditEntryView, AuditVerification, DepthCount, Generation, HeldMatch, JobId, JobProgress,
    JobView, MetricsSnapshot, MetricsWindow, PlanId, PlanSummary, PolicyMatrix, RecipientOutcome,
    RecipientRow, SearchRow, TenantView, TenantsProgress,
};
use crate::model::{FailureReason, Role};

/// A query the trace parser refused: 1-based character column (`len + 1` = end of input) and
/// what was expected, as `trace::query::QueryError` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryErrorView {
    pub column: usize,
    pub message: String,
}

/// What changed in the store since the engine last said so: by this engine's own jobs or by
/// another process on the same store (a second console, `clawback watch`, `clawback retract`).
/// A front end reloads the panes that show these parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreChanges {
    /// A job was created or changed state (started, finished, cancelled).
    pub jobs: bool,
    /// Job items settled (a job made progress).
    pub items: bool,
    /// Audit entries were appended.
    pub audit: bool,
    /// Trace records were added or marked retracted.
    pub trace: bool,
}

impl StoreChanges {
    pub fn any(self) -> bool {
        self.jobs || self.items || self.audit || self.trace
    }
}

/// A fact from the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    SearchCompleted {
        generation: Generation,
        /// At most the requested `limit` rows, newest first.
        rows: Vec<SearchRow>,
        /// Every match, even beyond `limit`.
        total: u64,
    },
    SearchFailed {
        generation: Generation,
        error: QueryErrorView,
    },
    RecipientsLoaded {
        generation: Generation,
        rows: Vec<RecipientRow>,
    },
    /// A recipient load goes on: mailboxes located so far out of those to locate, and the
    /// seconds since it started. Sent as locates finish and at least once a second.
    RecipientsProgressed {
        generation: Generation,
        done: u64,
        total: u64,
        elapsed_secs: u64,
    },
    /// The recipient load of `generation` was stopped (`CancelRecipients`); nothing changed.
    RecipientsCancelled {
        generation: Generation,
    },
    /// The recipient load failed (the message is not in the trace, the store failed…).
    RecipientsFailed {
        generation: Generation,
        message: String,
    },
    DepthPreviewed {
        generation: Generation,
        /// One entry per depth `0..=depth`, what that depth adds.
        per_depth: Vec<DepthCount>,
    },
    PlanBuilt(PlanSummary),
    /// Building a plan failed (no copies found, request invalid…); says why.
    PlanFailed {
        message: String,
    },
    JobStarted {
        job: JobId,
        plan_id: Option<PlanId>,
        total: u64,
    },
    JobProgressed(JobProgress),
    ItemFailed {
        job: JobId,
        address: String,
        reason: FailureReason,
        /// The provider's own error code beside our reason (`ErrorItemNotFound`).
        provider_code: Option<String>,
    },
    JobFinished {
        job: JobView,
        outcomes: Vec<RecipientOutcome>,
    },
    JobOutcomesLoaded {
        job: JobId,
        outcomes: Vec<RecipientOutcome>,
    },
    /// Another live process runs the job (its lease): nothing was started here. Not a
    /// failure: the job goes on there.
    JobLeased {
        job: JobId,
        /// Who runs it: `pid 4242 on host (heartbeat 1s ago)`.
        holder: String,
    },
    /// Unfinished jobs nobody runs (interrupted), oldest first; empty when there are none.
    InterruptedJobsFound(Vec<JobView>),
    MetricsLoaded(MetricsSnapshot),
    MetricsDetailsLoaded {
        window: MetricsWindow,
        /// Newest retraction first.
        messages: Vec<RetractedMessage>,
    },
    JobsLoaded(Vec<JobView>),
    AuditLoaded(Vec<AuditEntryView>),
    AuditVerified(AuditVerification),
    TenantsLoaded(Vec<TenantView>),
    /// A tenants load got this far (one event per tenant done).
    TenantsProgress(TenantsProgress),
    /// A tenants load was stopped by `CancelTenants` before it finished.
    TenantsCancelled,
    PolicyLoaded(PolicyMatrix),
    PolicySaved(PolicyMatrix),
    /// Intel matches the automation guard holds open (waiting for `clawback policy confirm`
    /// or for the next `watch` cycle to release them), newest first. Sent after `PolicyLoaded`
    /// and `JobsLoaded`.
    HoldsLoaded(Vec<HeldMatch>),
    /// The operator's role does not allow `action` (a command name); `required` is the least
    /// role that does.
    Denied {
        action: String,
        role: Role,
        required: Role,
    },
    /// A command failed or the engine task died (a panic is caught and reported here).
    EngineFailed {
        message: String,
    },
    /// The store changed (jobs, items, audit, trace) since the engine last reported it: after
    /// each job this engine runs, and from a periodic check that sees other processes' work.
    StoreChanged(StoreChanges),
}
