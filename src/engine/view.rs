//! View types: what the engine tells a front end, already shaped for display. They carry no
//! provider handles and no secrets, so a front end can keep, clone and render them freely.
//!
//! Counting rules follow DESIGN §2 exactly, so the TUI, `clawback metrics --json` and the tests
//! show the same numbers.

use crate::model::{Disposition, FailureReason, Folder, RetractAction, Role, TenantKind, Trigger};
use crate::store::trace::TraceSummary;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Latest-wins request id. The front end increments it for every search / recipient load /
/// depth preview; the engine echoes it back and the front end drops answers older than the
/// newest request it made. Never derived from wall-clock time.
pub type Generation = u64;

/// A delivered message in the trace: tenant plus normalized Internet Message-ID (`<a@b>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageRef {
    pub tenant: String,
    pub message_id: String,
}

/// Where a message stands with respect to retraction (the results table's last column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetractionState {
    /// Never retracted.
    None,
    /// A job is running on it.
    InProgress,
    /// Some copies retracted, some not (failed or excluded).
    Partial,
    /// Every actionable copy retracted.
    Retracted,
    /// Retracted, then restored.
    Restored,
}

impl RetractionState {
    /// From the state word the engine stores on a trace row (`trace.retraction_state`).
    pub fn from_stored(word: Option<&str>) -> RetractionState {
        match word {
            Some("retracted") => RetractionState::Retracted,
            Some("partial") => RetractionState::Partial,
            Some("restored") => RetractionState::Restored,
            Some("running") => RetractionState::InProgress,
            _ => RetractionState::None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RetractionState::None => "-",
            RetractionState::InProgress => "running",
            RetractionState::Partial => "partial",
            RetractionState::Retracted => "retracted",
            RetractionState::Restored => "restored",
        }
    }
}

/// One row of the search results table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRow {
    pub message: MessageRef,
    pub received: DateTime<Utc>,
    /// Header From address. (`Box<str>` here and in `subject`: the console holds 100,000 rows.)
    pub from: Box<str>,
    pub subject: Box<str>,
    /// Copies known to the trace (envelope recipients after expansion).
    pub copies: u64,
    pub disposition: Option<Disposition>,
    pub retraction: RetractionState,
    /// Campaign key ([`crate::trace::search::campaign_key`]: same sender + normalized subject),
    /// used by the grouping toggle. A number rather than the text, as the console holds one per
    /// result row. `None` when the message belongs to no campaign.
    pub campaign: Option<u64>,
}

impl SearchRow {
    /// The row of a stored message (the only place a search result becomes a table row).
    pub fn from_summary(s: TraceSummary) -> SearchRow {
        let campaign = Some(crate::trace::search::campaign_key(&s.sender, &s.subject));
        SearchRow {
            message: MessageRef {
                tenant: s.tenant,
                message_id: s.message_id,
            },
            received: DateTime::from_timestamp(s.received, 0).unwrap_or_default(),
            from: s.sender.into_boxed_str(),
            subject: s.subject.into_boxed_str(),
            copies: s.copies,
            disposition: s.disposition,
            retraction: RetractionState::from_stored(s.retraction_state.as_deref()),
            campaign,
        }
    }
}

/// What a recipient address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressKind {
    Mailbox,
    /// Distribution list / group: its member mailboxes are listed separately.
    DistributionList,
    /// Outside the tenant's managed domains: cannot be retracted.
    External,
}

impl AddressKind {
    pub fn label(self) -> &'static str {
        match self {
            AddressKind::Mailbox => "mailbox",
            AddressKind::DistributionList => "DL",
            AddressKind::External => "external",
        }
    }
}

/// Retract grant status of a domain (same words as `clawback doctor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    Granted,
    /// The app lacks a permission / scope; `permission` names it (`Mail.ReadWrite`).
    Missing {
        permission: String,
    },
    NotInTenant,
}

impl GrantStatus {
    pub fn label(&self) -> String {
        match self {
            GrantStatus::Granted => "Granted".into(),
            GrantStatus::Missing { permission } => format!("Missing ({permission})"),
            GrantStatus::NotInTenant => "Not in tenant".into(),
        }
    }
}

/// The outcome of the last action on one copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyOutcome {
    Pending,
    InFlight,
    Succeeded { action: RetractAction },
    Failed { reason: FailureReason },
    Skipped { why: String },
    Restored,
}

impl CopyOutcome {
    pub fn label(&self) -> String {
        match self {
            CopyOutcome::Pending => "pending".into(),
            CopyOutcome::InFlight => "in flight".into(),
            CopyOutcome::Succeeded { action } => format!("ok: {}", action.as_str()),
            CopyOutcome::Failed { reason } => format!("failed: {}", reason.as_str()),
            CopyOutcome::Skipped { why } => format!("skipped: {why}"),
            CopyOutcome::Restored => "restored".into(),
        }
    }
}

/// Where a recipient stands in the plan the checklist would make (the planner's own words).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RecipientState {
    /// A copy was located: the row can be ticked (unticked = excluded from the plan).
    Located,
    /// Planning could not reach the mailbox now (throttled, provider error): the plan keeps
    /// it and the job locates it again. Never shown as granted.
    Unresolved {
        reason: FailureReason,
        detail: String,
    },
    /// Not acted on: `not_authorized`, `not_a_mailbox` (a list: its members are rows of their
    /// own), `external`, `already_gone`, `in_another_job`…
    NotActionable {
        reason: FailureReason,
        detail: String,
    },
}

impl RecipientState {
    /// The State column.
    pub fn label(&self) -> String {
        match self {
            RecipientState::Located => "mailbox".into(),
            RecipientState::Unresolved { reason, .. } => format!("unresolved: {reason}"),
            RecipientState::NotActionable { reason, .. } => reason.as_str().into(),
        }
    }

    /// Why the row cannot be ticked (`None`: it can).
    pub fn why_not_tickable(&self) -> Option<String> {
        match self {
            RecipientState::Located => None,
            RecipientState::Unresolved { reason, detail } => Some(format!(
                "unresolved ({reason}: {detail}); the plan keeps it and the job locates it again"
            )),
            RecipientState::NotActionable { reason, detail } => Some(format!("{reason}: {detail}")),
        }
    }
}

/// One line of the recipient checklist (the plan's recipient list for the opened messages):
/// one per (tenant, address).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipientRow {
    pub address: String,
    /// The tenant that holds it (empty: the address is in no configured tenant).
    pub tenant: String,
    pub kind: AddressKind,
    pub state: RecipientState,
    /// Where the copy is now (`None`: no copy located, e.g. a DL or external address).
    pub folder: Option<Folder>,
    /// Read state of the copy (`None`: unknown / no copy).
    pub read: Option<bool>,
    /// Copies the plan would act on in this mailbox (several messages of a campaign).
    #[serde(default)]
    pub copies: u64,
    pub last_outcome: Option<CopyOutcome>,
}

impl RecipientRow {
    /// Whether the include box can be ticked: only a located copy.
    pub fn tickable(&self) -> bool {
        self.state == RecipientState::Located
    }
}

/// What one conversation depth adds (DESIGN §2, "Conversation depth").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepthCount {
    pub depth: u8,
    /// Copies added at this depth (not cumulative).
    pub copies: u64,
    /// Mailboxes added at this depth (not cumulative).
    pub mailboxes: u64,
}

pub use super::plan::RetractRequest;
/// A match held by the automation guard (issue 11), as stored: plain data.
pub use crate::store::automation::{HeldMatch, HoldState};

/// Identifies a built plan until it is applied or discarded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlanId(pub String);

/// Identifies a job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub String);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Copies per tenant in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantCount {
    pub tenant: String,
    pub kind: TenantKind,
    pub copies: u64,
}

/// The plan preview shown before confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSummary {
    pub plan_id: PlanId,
    /// SHA-256 of the canonical plan (hex); shown so a reviewer can match a saved plan file.
    pub digest: String,
    /// The action asked for.
    pub action: RetractAction,
    pub depth: u8,
    /// Copies that will be acted on (the number Hard Delete asks to be typed).
    pub copies_total: u64,
    pub mailboxes: u64,
    /// Copies per effective action (Soft Delete on Gmail counts under Trash).
    pub per_action: Vec<(RetractAction, u64)>,
    pub per_tenant: Vec<TenantCount>,
    /// What cannot be acted on, per reason.
    pub not_actionable: Vec<(FailureReason, u64)>,
    /// Notes said once per plan, e.g. "Soft Delete becomes Trash on Gmail (12 copies)".
    pub notes: Vec<String>,
}

/// What the operator typed to confirm a plan. The engine re-checks it: a Hard Delete whose
/// `typed_copies` differs from the plan's `copies_total` is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub typed_copies: Option<u64>,
}

/// Live progress of a running job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    pub job: JobId,
    pub done: u64,
    pub failed: u64,
    pub remaining: u64,
    pub rate_per_sec: f64,
    /// `None` until a rate is known.
    pub eta_secs: Option<u64>,
    /// Times the job waited on provider throttling (429 / rate-limit 403) so far.
    pub throttled_waits: u64,
}

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobPhase {
    Running,
    Finished,
    Cancelled,
    /// Unfinished and run by no live process (a console quit mid-job, a crash, a kill):
    /// resumable.
    Interrupted,
}

impl JobPhase {
    pub fn label(self) -> &'static str {
        match self {
            JobPhase::Running => "running",
            JobPhase::Finished => "finished",
            JobPhase::Cancelled => "cancelled",
            JobPhase::Interrupted => "interrupted",
        }
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Applies a retraction action (junk, trash, …).
    #[default]
    Retract,
    /// Undoes a retract job: puts its copies back where they were.
    Restore,
}

impl JobKind {
    pub fn label(self) -> &'static str {
        match self {
            JobKind::Retract => "retract",
            JobKind::Restore => "restore",
        }
    }
}

/// A job in the jobs list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub started: DateTime<Utc>,
    pub trigger: Trigger,
    /// Retract, or restore (undo) of `parent`.
    #[serde(default)]
    pub kind: JobKind,
    /// The retraction action; for a restore, the action it undoes.
    pub action: RetractAction,
    /// For a restore: the retract job it undoes.
    #[serde(default)]
    pub parent: Option<JobId>,
    /// For a retract job: its restore jobs (running or run), oldest first.
    #[serde(default)]
    pub restored_by: Vec<(JobId, JobPhase)>,
    /// `Running` while a live process runs it; `Interrupted` when it is unfinished and nobody
    /// runs it (a console quit mid-job, a crash): resumable.
    pub state: JobPhase,
    pub total: u64,
    pub succeeded: u64,
    pub failed_by_reason: Vec<(FailureReason, u64)>,
    pub skipped: u64,
    /// Succeeded items that can be restored (0 for a restore job, for hard-deleted copies,
    /// and for copies restored or being restored).
    pub restorable: u64,
    pub operator: String,
    /// The audit head after the job's last run (`SEQ sha256:HEX`), to keep outside the store.
    #[serde(default)]
    pub audit_head: Option<String>,
}

impl JobView {
    pub fn failed(&self) -> u64 {
        self.failed_by_reason.iter().map(|(_, n)| n).sum()
    }

    /// The label for the Action column: the action, or `restore` for an undo.
    pub fn action_label(&self) -> &'static str {
        match self.kind {
            JobKind::Retract => self.action.as_str(),
            JobKind::Restore => "restore",
        }
    }
}

/// Outcome for one recipient of a job (the table after a job). Failures come first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientOutcome {
    pub address: String,
    pub tenant: String,
    pub outcome: CopyOutcome,
    /// Where the copy was when the job acted on it: for a retraction, the folder before (the
    /// restore target); for a restore, where the retraction had put it.
    pub from_folder: Option<Folder>,
    /// Where the job puts (or put) the copy: for a restore, the folder it goes back to; for a
    /// retraction, known once it succeeded.
    pub to_folder: Option<Folder>,
}

impl RecipientOutcome {
    /// Display order: failures first (by reason), then copies not settled yet, then the
    /// succeeded and restored, then the skipped.
    pub fn rank(&self) -> (u8, Option<FailureReason>) {
        match &self.outcome {
            CopyOutcome::Failed { reason } => (0, Some(*reason)),
            CopyOutcome::InFlight => (1, None),
            CopyOutcome::Pending => (2, None),
            CopyOutcome::Succeeded { .. } | CopyOutcome::Restored => (3, None),
            CopyOutcome::Skipped { .. } => (4, None),
        }
    }
}

/// Metrics windows offered by the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MetricsWindow {
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "24h")]
    Day,
    #[serde(rename = "7d")]
    Week,
    #[serde(rename = "30d")]
    Month,
}

impl MetricsWindow {
    pub const ALL: [MetricsWindow; 4] = [
        MetricsWindow::Hour,
        MetricsWindow::Day,
        MetricsWindow::Week,
        MetricsWindow::Month,
    ];

    /// The spelling used by `since:` in queries and `--since` on the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsWindow::Hour => "1h",
            MetricsWindow::Day => "24h",
            MetricsWindow::Week => "7d",
            MetricsWindow::Month => "30d",
        }
    }

    pub fn next(self) -> MetricsWindow {
        let i = Self::ALL.iter().position(|w| *w == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    /// How far back the window reaches from now.
    pub fn span(self) -> chrono::Duration {
        match self {
            MetricsWindow::Hour => chrono::Duration::hours(1),
            MetricsWindow::Day => chrono::Duration::hours(24),
            MetricsWindow::Week => chrono::Duration::days(7),
            MetricsWindow::Month => chrono::Duration::days(30),
        }
    }
}

/// Metrics over a window (DESIGN §2): every count comes from job items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub window: MetricsWindow,
    /// Items that reached `succeeded` or `failed` (not skipped, not dry runs).
    pub total: u64,
    pub succeeded: u64,
    /// Failed items per reason; the sum is `total - succeeded`.
    pub failed_by_reason: Vec<(FailureReason, u64)>,
    /// Read state at the moment of retraction, over succeeded items.
    pub unread: u64,
    pub read: u64,
    /// Share of `total` by trigger: auto = every non-manual trigger.
    pub auto: u64,
    pub manual: u64,
    /// Dwell time (delivered → retracted) percentiles, seconds; `None` without data.
    pub dwell_p50_secs: Option<u64>,
    pub dwell_p95_secs: Option<u64>,
    /// Retractions (total) per bucket, oldest first, for the sparkline.
    pub series: Vec<u64>,
    pub bucket_secs: u64,
}

impl MetricsSnapshot {
    pub fn failed(&self) -> u64 {
        self.failed_by_reason.iter().map(|(_, n)| n).sum()
    }

    /// `part / total` in percent; 0 when `total` is 0.
    pub fn pct(part: u64, total: u64) -> f64 {
        if total == 0 {
            0.0
        } else {
            part as f64 * 100.0 / total as f64
        }
    }
}

/// Filter for the audit list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Case-insensitive substring over operator, action and detail.
    pub text: String,
}

/// One audit entry for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntryView {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub os_user: String,
    pub operator: String,
    pub role: Role,
    pub action: String,
    /// Counts, plan digest prefix, target: one line.
    pub detail: String,
    /// First hex digits of the entry hash.
    pub hash_prefix: String,
}

/// Result of `audit verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    pub entries: u64,
    /// `None` when the chain is intact; otherwise the first broken sequence number and why.
    pub broken_at: Option<(u64, String)>,
}

/// A domain and its Retract status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainView {
    pub domain: String,
    pub status: GrantStatus,
}

/// A configured tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantView {
    pub name: String,
    pub kind: TenantKind,
    pub domains: Vec<DomainView>,
    /// Why the tenant could not be checked at all, naming the endpoint and the cause
    /// (`connection refused: 127.0.0.1:8080`), or the provider's answer; its domains are then
    /// unknown (never shown as granted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How far a tenants load has come (`TenantsProgress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantsProgress {
    /// Tenants checked so far, of `total`.
    pub done: usize,
    pub total: usize,
    /// Domains probed so far (in the tenants done).
    pub domains: usize,
}

/// A Post Delivery / Phish Submission switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseSwitch {
    pub enabled: bool,
    /// How often it runs, seconds.
    pub interval_secs: u64,
    /// How far back it looks, seconds (default 7 days).
    #[serde(default = "default_lookback_secs")]
    pub lookback_secs: u64,
}

/// Default look-back of the response cycles: 7 days.
pub fn default_lookback_secs() -> u64 {
    7 * 86_400
}

/// The auto-retract policy (DESIGN §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyMatrix {
    /// Version in the store; the engine refuses a save whose version is stale.
    pub version: u64,
    /// One action per disposition; a missing disposition means No Action.
    pub actions: BTreeMap<Disposition, RetractAction>,
    pub post_delivery: ResponseSwitch,
    pub phish_submission: ResponseSwitch,
}

impl PolicyMatrix {
    pub fn action_for(&self, disposition: Disposition) -> RetractAction {
        self.actions
            .get(&disposition)
            .copied()
            .unwrap_or(RetractAction::NoAction)
    }
}
