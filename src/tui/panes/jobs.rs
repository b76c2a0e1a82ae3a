//! Jobs: running and past jobs; the selected job's progress (gauge, rate, ETA, throttling),
//! failures by reason (retry one reason), the outcome per recipient (failures first,
//! scrollable, filtered by outcome or text), undo (restore) and resume.

use super::{PaneCtx, Then};
use crate::engine::Command;
use crate::engine::view::{
    CopyOutcome, JobId, JobKind, JobPhase, JobProgress, JobView, RecipientOutcome,
};
use crate::model::{FailureReason, Folder, RetractAction};
use crate::tui::action::Action;
use crate::tui::app::{App, Confirm, Loadable};
use crate::tui::panes::policy::hold_line;
use crate::tui::theme::Theme;
use crate::tui::widgets::{
    duration, list_move, loadable, pane_block, scroll_indicator, scroll_text, state_message, step,
    thousands, visible_window,
};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

/// What the keys can do here now: only what the selected job allows is offered.
/// What the keys can do here now: only what the selected job allows is offered, and those
/// come first (cancel, resume, restore, retry), so they survive a narrow terminal.
/// Which outcomes the Jobs pane lists (`f` cycles through them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutcomeFilter {
    #[default]
    All,
    Failed,
    /// Pending or in flight.
    Unsettled,
    /// Succeeded or restored.
    Done,
    Skipped,
}

impl OutcomeFilter {
    pub const ALL: [OutcomeFilter; 5] = [
        OutcomeFilter::All,
        OutcomeFilter::Failed,
        OutcomeFilter::Unsettled,
        OutcomeFilter::Done,
        OutcomeFilter::Skipped,
    ];

    pub fn label(self) -> &'static str {
        match self {
            OutcomeFilter::All => "all",
            OutcomeFilter::Failed => "failed",
            OutcomeFilter::Unsettled => "not settled",
            OutcomeFilter::Done => "ok",
            OutcomeFilter::Skipped => "skipped",
        }
    }

    pub fn next(self) -> OutcomeFilter {
        let i = Self::ALL.iter().position(|f| *f == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    pub fn matches(self, outcome: &CopyOutcome) -> bool {
        match self {
            OutcomeFilter::All => true,
            OutcomeFilter::Failed => matches!(outcome, CopyOutcome::Failed { .. }),
            OutcomeFilter::Unsettled => {
                matches!(outcome, CopyOutcome::Pending | CopyOutcome::InFlight)
            }
            OutcomeFilter::Done => {
                matches!(
                    outcome,
                    CopyOutcome::Succeeded { .. } | CopyOutcome::Restored
                )
            }
            OutcomeFilter::Skipped => matches!(outcome, CopyOutcome::Skipped { .. }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobsState {
    pub list: Loadable<Vec<JobView>>,
    pub selected: usize,
    pub progress: Vec<JobProgress>,
    /// Live failures (job, address, reason), newest last.
    pub failures: Vec<(JobId, String, FailureReason)>,
    /// The outcome per recipient of one job, failures first (as the engine sends them).
    pub outcomes: Option<(JobId, Vec<RecipientOutcome>)>,
    /// Index into the selected job's `failed_by_reason` for "retry failed".
    pub reason_cursor: usize,
    /// The job to select when the list next arrives: the one this console just started.
    pub follow: Option<JobId>,
    /// Keys move over the outcomes (after enter) rather than over the jobs.
    pub outcomes_focused: bool,
    pub outcome_filter: OutcomeFilter,
    /// `/` filter over the outcomes: address, outcome or reason, folder (case-insensitive).
    pub outcome_text: String,
    /// Indexes into the outcomes that pass the filters, computed when they change.
    pub outcome_rows: Vec<usize>,
    /// Position in `outcome_rows`.
    pub outcome_selected: usize,
    /// Jobs this console started (or resumed) that have not ended: quitting asks first.
    pub running: Vec<JobId>,
    /// Commands sent that start a job (apply, retry, restore, resume) and are not answered
    /// yet: quitting asks first here too.
    pub starting: u32,
    /// A restore this console asked for and the engine has not answered yet.
    pub restore_requested: Option<JobId>,
    /// Restores this console started: (retract job, its restore job). The list's
    /// `restored_by` says the same once it is reloaded.
    pub restores_started: Vec<(JobId, JobId)>,
}

impl JobsState {
    /// Lists the jobs (again).
    pub fn reload(&mut self) -> Vec<Command> {
        self.list = Loadable::Loading;
        vec![Command::LoadJobs]
    }

    /// The `/` filter over the outcomes, as it is typed.
    pub fn set_filter(&mut self, text: String) {
        self.outcome_text = text;
        self.outcome_selected = 0;
        self.refilter_outcomes();
    }

    /// Live progress of a job arrived.
    pub fn progressed(&mut self, progress: JobProgress) {
        match self.progress.iter_mut().find(|p| p.job == progress.job) {
            Some(p) => *p = progress,
            None => self.progress.push(progress),
        }
    }

    /// The job under the cursor.
    pub fn selected_job(&self) -> Option<&JobView> {
        self.list.ready()?.get(self.selected)
    }

    /// Live progress of a job, if any arrived.
    pub fn progress_of(&self, job: &JobId) -> Option<&JobProgress> {
        self.progress.iter().find(|p| &p.job == job)
    }

    /// The job an action targets: the selected one.
    pub fn selected_job_id(&self) -> Option<JobId> {
        self.selected_job().map(|j| j.id.clone())
    }

    /// Whether `u` may restore `job`: the number of copies it would put back, or why not.
    pub fn can_restore(&self, job: &JobView) -> Result<u64, String> {
        let id = &job.id;
        if job.kind == JobKind::Restore {
            let of = job
                .parent
                .as_ref()
                .map(|p| format!(" (it undoes job {p})"))
                .unwrap_or_default();
            return Err(format!("job {id} is itself a restore{of}: nothing to undo"));
        }
        if job.action == RetractAction::HardDelete {
            return Err(format!(
                "job {id} hard-deleted: no undo (admin recovery only: eDiscovery / Recoverable Items, Google Vault)"
            ));
        }
        if job.state == JobPhase::Running {
            return Err(format!(
                "job {id} still running: restore once it ends (C cancels it)"
            ));
        }
        if self.restore_requested.as_ref() == Some(id) {
            return Err(format!("job {id} is being restored (starting)"));
        }
        let started_here = self
            .restores_started
            .iter()
            .filter(|(of, _)| of == id)
            .map(|(_, r)| r);
        let known = job.restored_by.iter().map(|(r, _)| r);
        if let Some(restore) = known.chain(started_here).last() {
            let phase = self
                .list
                .ready()
                .and_then(|l| l.iter().find(|j| &j.id == restore))
                .map(|j| j.state)
                .or_else(|| {
                    job.restored_by
                        .iter()
                        .find(|(r, _)| r == restore)
                        .map(|(_, p)| *p)
                })
                .unwrap_or(JobPhase::Running);
            return Err(match phase {
                // The status line may show only the first half: what matters comes first.
                JobPhase::Running => {
                    format!("job {id} is being restored by job {restore}: wait for it to end")
                }
                JobPhase::Interrupted | JobPhase::Cancelled => format!(
                    "job {id} restore {restore} {}: select job {restore}, R resumes it",
                    phase.label()
                ),
                JobPhase::Finished => format!(
                    "job {id} already restored by job {restore}; the rest: `clawback restore {id}`"
                ),
            });
        }
        if job.restorable == 0 {
            return Err(format!(
                "job {id}: nothing to restore (no copy it moved is left to put back)"
            ));
        }
        Ok(job.restorable)
    }

    pub fn update(&mut self, action: Action, ctx: &mut PaneCtx) -> Vec<Command> {
        let len = self.list.ready().map(Vec::len).unwrap_or(0);
        let sel = self.selected;
        if self.outcomes_focused {
            let rows = self.outcome_rows.len();
            let at = self.outcome_selected;
            if let Some(at) = list_move(&action, at, rows) {
                self.outcome_selected = at;
                return Vec::new();
            }
            if action == Action::Cancel {
                self.outcomes_focused = false;
                return Vec::new();
            }
        }
        if let Some(at) = list_move(&action, sel, len) {
            self.select_job(at);
            return Vec::new();
        }
        match action {
            Action::MoveLeft => self.reason_cursor = self.reason_cursor.saturating_sub(1),
            Action::MoveRight => {
                let reasons = self
                    .selected_job()
                    .map(|j| j.failed_by_reason.len())
                    .unwrap_or(0);
                self.reason_cursor = step(self.reason_cursor, reasons, 1);
            }
            Action::Submit => {
                if let Some(job) = self.selected_job_id() {
                    self.outcomes_focused = true;
                    return vec![Command::LoadJobOutcomes { job }];
                }
            }
            Action::NextOutcomeFilter | Action::Filter => {
                let Some(job) = self.selected_job_id() else {
                    return Vec::new();
                };
                if action == Action::Filter {
                    ctx.open_filter(&self.outcome_text);
                } else {
                    self.outcome_filter = self.outcome_filter.next();
                    self.refilter_outcomes();
                }
                self.outcomes_focused = true;
                if self.outcomes.as_ref().is_none_or(|(id, _)| *id != job) {
                    return vec![Command::LoadJobOutcomes { job }];
                }
            }
            Action::CancelJob => {
                if let Some(job) = self.selected_job().filter(|j| j.state == JobPhase::Running) {
                    return vec![Command::CancelJob {
                        job: job.id.clone(),
                    }];
                }
            }
            Action::RetryFailed => {
                let target = self.selected_job().and_then(|j| {
                    j.failed_by_reason
                        .get(self.reason_cursor)
                        .filter(|(_, n)| *n > 0)
                        .map(|(reason, _)| (j.id.clone(), *reason))
                });
                if let Some((job, reason)) = target {
                    self.starting += 1;
                    return vec![Command::RetryFailed { job, reason }];
                }
            }
            Action::Restore => {
                let Some(job) = self.selected_job().cloned() else {
                    return Vec::new();
                };
                match self.can_restore(&job) {
                    Ok(copies) => {
                        ctx.then = Some(Then::Ask(Confirm::Restore {
                            job: job.id,
                            copies,
                            action: job.action,
                        }))
                    }
                    Err(why) => ctx.set_status(why, true),
                }
            }
            Action::ResumeJob => {
                let Some(job) = self.selected_job().cloned() else {
                    return Vec::new();
                };
                match job.state {
                    JobPhase::Interrupted | JobPhase::Cancelled => {
                        ctx.set_status(format!("resuming job {}", job.id), false);
                        self.starting += 1;
                        return vec![Command::ResumeJob { job: job.id }];
                    }
                    JobPhase::Running => ctx.set_status(
                        format!("job {} is running: nothing to resume", job.id),
                        true,
                    ),
                    JobPhase::Finished => ctx.set_status(
                        format!(
                            "job {} is finished: nothing to resume (r retries a failure reason)",
                            job.id
                        ),
                        true,
                    ),
                }
            }
            _ => {}
        }
        Vec::new()
    }

    /// Moves the jobs cursor; the failure-reason cursor starts over on another job.
    fn select_job(&mut self, index: usize) {
        let before = self.selected_job_id();
        self.selected = index;
        if self.selected_job_id() != before {
            self.reason_cursor = 0;
        }
    }

    /// Recomputes which outcomes pass the filters (once per change, not per frame).
    pub fn refilter_outcomes(&mut self) {
        let filter = self.outcome_filter;
        let needle = self.outcome_text.to_lowercase();
        self.outcome_rows = match &self.outcomes {
            Some((_, outcomes)) => outcomes
                .iter()
                .enumerate()
                .filter(|(_, o)| filter.matches(&o.outcome))
                .filter(|(_, o)| {
                    needle.is_empty()
                        || o.address.to_lowercase().contains(&needle)
                        || o.outcome.label().to_lowercase().contains(&needle)
                        || [&o.from_folder, &o.to_folder].iter().any(|f| {
                            f.as_ref()
                                .is_some_and(|f| f.label().to_lowercase().contains(&needle))
                        })
                })
                .map(|(i, _)| i)
                .collect(),
            None => Vec::new(),
        };
        self.outcome_selected = self
            .outcome_selected
            .min(self.outcome_rows.len().saturating_sub(1));
    }

    /// New outcomes for a job: kept when it is the job on screen (or none is shown yet).
    pub fn set_outcomes(&mut self, job: JobId, outcomes: Vec<RecipientOutcome>) {
        let shown = self.outcomes.as_ref().map(|(id, _)| id.clone());
        let selected = self.selected_job_id();
        // The job about to be selected (just started here) counts as selected.
        let wanted = [selected.as_ref(), shown.as_ref(), self.follow.as_ref()];
        if shown.is_some() && !wanted.contains(&Some(&job)) {
            return;
        }
        if shown.as_ref() != Some(&job) {
            self.outcome_selected = 0;
        }
        self.outcomes = Some((job, outcomes));
        self.refilter_outcomes();
    }

    /// Replaces the list, keeping the cursor on the same job (new jobs come first) or moving
    /// it to the job this console just started.
    pub fn set_jobs(&mut self, jobs: Vec<JobView>) {
        let before = self.selected_job_id();
        let follow = self.follow.clone();
        let index = follow
            .as_ref()
            .and_then(|f| jobs.iter().position(|j| &j.id == f))
            .or_else(|| {
                before
                    .as_ref()
                    .and_then(|b| jobs.iter().position(|j| &j.id == b))
            })
            .unwrap_or_else(|| self.selected.min(jobs.len().saturating_sub(1)));
        if follow.is_some_and(|f| jobs.iter().any(|j| j.id == f)) {
            self.follow = None;
            self.outcomes_focused = false;
        }
        if jobs.get(index).map(|j| &j.id) != before.as_ref() {
            self.reason_cursor = 0;
        }
        // Jobs this console started that the store no longer shows running have ended.
        self.running.retain(|r| {
            jobs.iter()
                .find(|j| &j.id == r)
                .is_none_or(|j| j.state == JobPhase::Running)
        });
        self.list = Loadable::Ready(jobs);
        self.selected = index;
    }

    pub fn upsert_job(&mut self, job: JobView) {
        let mut jobs = self.list.ready().cloned().unwrap_or_default();
        match jobs.iter_mut().find(|j| j.id == job.id) {
            Some(existing) => *existing = job,
            None => jobs.insert(0, job),
        }
        self.set_jobs(jobs);
    }
}

pub fn hints(app: &App) -> Vec<Action> {
    let mut hints = Vec::new();
    let jobs = app.jobs.list.ready().map_or(0, Vec::len);
    if let Some(job) = app.selected_job() {
        match job.state {
            JobPhase::Running => hints.push(Action::CancelJob),
            JobPhase::Interrupted | JobPhase::Cancelled => hints.push(Action::ResumeJob),
            JobPhase::Finished => {}
        }
        if app.can_restore(job).is_ok() {
            hints.push(Action::Restore);
        }
        // Retry acts on the reason under the cursor: only offered when it has failures.
        let reasons = job.failed_by_reason.iter().filter(|(_, n)| *n > 0).count();
        if reasons > 0 {
            hints.push(Action::RetryFailed);
        }
        if reasons > 1 {
            hints.push(Action::MoveRight);
        }
    }
    if app.jobs.outcomes_focused {
        hints.extend([
            Action::Cancel,
            Action::MoveDown,
            Action::NextOutcomeFilter,
            Action::Filter,
        ]);
    } else if jobs > 0 {
        hints.push(Action::Submit);
        if jobs > 1 {
            hints.push(Action::MoveDown);
        }
    }
    hints.push(Action::Refresh);
    hints
}

/// `[#########-----------]` of `width` characters.
pub fn ascii_gauge(done: u64, total: u64, width: usize) -> String {
    let inner = width.saturating_sub(2);
    let filled = if total == 0 {
        0
    } else {
        ((done.min(total) as u128 * inner as u128) / total as u128) as usize
    };
    format!("[{}{}]", "#".repeat(filled), "-".repeat(inner - filled))
}

// Layout inside the pane:
//
// +-Jobs (3)-------------------------------------------------------------------+
// | Held: #3 (1,470 copies): clawback policy confirm 3; subject "*" (fe... |  (only with holds)
// | Started           Job        Trigger  Action       State     Total   OK  Fail |
// | 2026-11-22 08:41  job-42     manual   junk         running   1,000  500     3 |
// +-Job job-42------------------------------------------------------------------+
// | [##########----------] 50.3%  503 of 1,000  rate 120.5/s  ETA 4s  throttled 3 |
// | Failed: <already_gone 2>  not_authorized 1          (left/right, r retry)    |
// | Address                    Outcome                 Folder before             |
// | bob@corp.example           ok: junk                Inbox                     |
// +----------------------------------------------------------------------------+
pub fn render(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let [list_area, detail_area] =
        Layout::vertical([Constraint::Percentage(40), Constraint::Fill(1)]).areas(area);
    let count = app.jobs.list.ready().map(Vec::len);
    let title = match count {
        Some(n) => format!(" Jobs ({n}) "),
        None => " Jobs ".into(),
    };
    let block = pane_block(title, !app.jobs.outcomes_focused, theme);
    let inner = block.inner(list_area);
    frame.render_widget(block, list_area);
    // Matches the automation guard holds: one line above the list, the newest first.
    let inner = match app.policy.held.first() {
        None => inner,
        Some(h) => {
            let [held_area, rest] =
                Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(inner);
            let more = match app.policy.held.len() {
                1 => String::new(),
                n => format!(" (+{} more: clawback policy holds)", n - 1),
            };
            frame.render_widget(
                Paragraph::new(Line::from(Span::styled(
                    format!("Held: {}{more}", hold_line(h)),
                    theme.status_warning,
                ))),
                held_area,
            );
            rest
        }
    };
    let detail_block = pane_block(
        match app.selected_job() {
            Some(j) => detail_title(j),
            None => " Job ".into(),
        },
        app.jobs.outcomes_focused,
        theme,
    );
    let detail = detail_block.inner(detail_area);
    frame.render_widget(detail_block, detail_area);
    let Some(jobs) = loadable(frame, inner, &app.jobs.list, "jobs", theme) else {
        return;
    };
    if jobs.is_empty() {
        state_message(
            frame,
            inner,
            "No jobs yet: retract something from Recipients (2)",
            theme.muted,
        );
        return;
    }
    let height = inner.height.saturating_sub(1) as usize;
    let (offset, end) = visible_window(app.jobs.selected, height, jobs.len());
    // Job ids are short store ids and the other columns have fixed-width values, so they get
    // fixed widths; the operator column (shown from 100 columns) takes what is left.
    let wide = inner.width >= 100;
    let rows = jobs[offset..end].iter().map(|j| {
        let mut cells = vec![
            Cell::from(j.started.format("%Y-%m-%d %H:%M").to_string()).style(theme.muted),
            Cell::from(j.id.0.as_str()),
            Cell::from(j.trigger.as_str()),
            Cell::from(j.action_label()),
            Cell::from(j.state.label()).style(theme.job_phase(j.state, j.failed())),
            Cell::from(format!("{:>7}", thousands(j.total))),
            Cell::from(format!("{:>7}", thousands(j.succeeded))).style(theme.status_succeeded),
            Cell::from(format!("{:>6}", thousands(j.failed()))).style(if j.failed() > 0 {
                theme.status_failed
            } else {
                theme.muted
            }),
        ];
        if wide {
            cells.push(Cell::from(j.operator.as_str()));
        }
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Length(16),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(11),
        Constraint::Length(11),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(6),
    ];
    let right = |s: &'static str| Cell::from(Line::from(s).right_aligned());
    let mut header = vec![
        Cell::from("Started"),
        Cell::from("Job"),
        Cell::from("Trigger"),
        Cell::from("Action"),
        Cell::from("State"),
        right("Total"),
        right("OK"),
        right("Failed"),
    ];
    if wide {
        // Triggers go up to `phish_submission`.
        widths[2] = Constraint::Length(16);
        widths.push(Constraint::Fill(1));
        header.push(Cell::from("Operator"));
    } else {
        // At 80 columns the fixed widths must fit: the job id and trigger give way.
        widths[1] = Constraint::Min(4);
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.header))
        .style(theme.text)
        .row_highlight_style(theme.selection);
    let mut state =
        TableState::default().with_selected(Some(app.jobs.selected.saturating_sub(offset)));
    frame.render_stateful_widget(table, inner, &mut state);
    scroll_indicator(frame, list_area, (offset, end), jobs.len(), theme);

    let Some(job) = app.selected_job() else {
        return;
    };
    let [progress_area, reasons_area, outcomes_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Fill(1),
    ])
    .areas(detail);
    let mut spans = Vec::new();
    match app.progress_of(&job.id) {
        Some(p) if job.state == JobPhase::Running || job.succeeded + job.failed() < p.done => {
            let total = p.done + p.remaining;
            spans.push(Span::styled(ascii_gauge(p.done, total, 22), theme.gauge));
            spans.push(Span::raw(format!(
                " {:.1}%  {} of {}  rate {:.1}/s  ETA {}  ",
                crate::engine::view::MetricsSnapshot::pct(p.done, total),
                thousands(p.done),
                thousands(total),
                p.rate_per_sec,
                p.eta_secs.map(duration).unwrap_or_else(|| "-".into()),
            )));
            spans.push(Span::styled(
                format!("throttled {}", p.throttled_waits),
                if p.throttled_waits > 0 {
                    theme.status_warning
                } else {
                    theme.muted
                },
            ));
        }
        _ => {
            spans.push(Span::styled(
                ascii_gauge(job.succeeded + job.failed() + job.skipped, job.total, 22),
                theme.gauge,
            ));
            spans.push(Span::raw(summary(app, job)));
            // The audit head after the job, to note outside the store (full text: `clawback
            // jobs show ID` or `clawback audit head`).
            if let Some(head) = &job.audit_head {
                let short: String = head
                    .chars()
                    .take(head.find(':').map_or(0, |i| i + 13))
                    .collect();
                // Shown only where it fits whole (a cut-off head is worse than none).
                let text = format!("  audit head {short}…");
                let used: usize = spans.iter().map(|s| s.width()).sum();
                if used + text.chars().count() <= progress_area.width as usize {
                    spans.push(Span::styled(text, theme.muted));
                }
            }
        }
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), progress_area);
    let mut reason_spans = vec![Span::styled("Failed: ", theme.header)];
    if job.failed_by_reason.is_empty() {
        reason_spans.push(Span::styled("none", theme.muted));
    }
    for (i, (reason, n)) in job.failed_by_reason.iter().enumerate() {
        let text = format!("{} {}", reason.as_str(), thousands(*n));
        if i == app.jobs.reason_cursor {
            reason_spans.push(Span::styled(format!("<{text}>"), theme.selection));
        } else {
            reason_spans.push(Span::styled(format!(" {text} "), theme.status_failed));
        }
        reason_spans.push(Span::raw(" "));
    }
    frame.render_widget(Paragraph::new(Line::from(reason_spans)), reasons_area);
    match &app.jobs.outcomes {
        Some((id, outcomes)) if *id == job.id => {
            render_outcomes(frame, outcomes_area, detail_area, app, job, outcomes, theme);
        }
        _ => {
            let live: Vec<Line> = app
                .jobs
                .failures
                .iter()
                .rev()
                .filter(|(id, _, _)| *id == job.id)
                .take(outcomes_area.height as usize)
                .map(|(_, address, reason)| {
                    Line::from(Span::styled(
                        format!("{address}: failed: {}", reason.as_str()),
                        theme.status_failed,
                    ))
                })
                .collect();
            if live.is_empty() {
                state_message(
                    frame,
                    outcomes_area,
                    "enter: show the outcome per recipient",
                    theme.muted,
                );
            } else {
                frame.render_widget(Paragraph::new(live), outcomes_area);
            }
        }
    }
}

/// ` Job 42 (finished) `, ` Job 43: restore of job 42 (running) `.
fn detail_title(job: &JobView) -> String {
    match (job.kind, &job.parent) {
        (JobKind::Restore, Some(parent)) => format!(
            " Job {}: restore of job {parent} ({}) ",
            job.id,
            job.state.label()
        ),
        (JobKind::Restore, None) => format!(" Job {}: restore ({}) ", job.id, job.state.label()),
        (JobKind::Retract, _) => format!(" Job {} ({}) ", job.id, job.state.label()),
    }
}

/// The line after a job's gauge: counts, then what undo can (or cannot) do.
fn summary(app: &App, job: &JobView) -> String {
    // Kept short: the line must hold at 80 columns beside the gauge.
    let skipped = match job.skipped {
        0 => String::new(),
        n => format!(", {} skipped", thousands(n)),
    };
    let counts = match job.kind {
        JobKind::Retract => format!(
            " {} ok, {} failed{skipped} of {}",
            thousands(job.succeeded),
            thousands(job.failed()),
            thousands(job.total),
        ),
        JobKind::Restore => format!(
            " {} restored, {} failed of {}",
            thousands(job.succeeded),
            thousands(job.failed()),
            thousands(job.total),
        ),
    };
    let undo = if job.state == JobPhase::Interrupted {
        "interrupted: R resumes".to_string()
    } else if job.kind == JobKind::Restore {
        match &job.parent {
            Some(parent) => format!("undoes job {parent}"),
            None => "undo".into(),
        }
    } else if job.action == RetractAction::HardDelete {
        // Hard-deleted copies are recoverable by an admin only; `u` says so.
        "no undo".into()
    } else if let Some((restore, phase)) = job.restored_by.last() {
        match phase {
            JobPhase::Running => format!("restoring: job {restore}"),
            _ => format!("restored by job {restore}"),
        }
    } else if app.jobs.restore_requested.as_ref() == Some(&job.id) {
        "restore starting".into()
    } else {
        format!("{} restorable", thousands(job.restorable))
    };
    format!("{counts}; {undo}")
}

/// `Inbox -> Junk`, `Junk -> Inbox`, `Inbox` (not moved yet), `-` (skipped).
fn folders(outcome: &RecipientOutcome) -> String {
    let label = |f: &Option<Folder>| f.as_ref().map(|f| f.label().to_string());
    match (label(&outcome.from_folder), label(&outcome.to_folder)) {
        (Some(from), Some(to)) => format!("{from} -> {to}"),
        (Some(from), None) => from,
        (None, Some(to)) => format!("-> {to}"),
        (None, None) => "-".into(),
    }
}

/// Which outcomes are on screen, for the detail border: ` 10-18 of 82 `, or with a filter
/// ` failed /bob: 1-9 of 12 (82 in all) `.
fn outcome_position(app: &App, offset: usize, end: usize, all: usize) -> String {
    let shown = app.jobs.outcome_rows.len();
    let mut filters = Vec::new();
    if app.jobs.outcome_filter != OutcomeFilter::All {
        filters.push(app.jobs.outcome_filter.label().to_string());
    }
    if !app.jobs.outcome_text.is_empty() {
        filters.push(format!("/{}", app.jobs.outcome_text));
    }
    let range = scroll_text((offset, end), shown)
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|| "none".to_string());
    if filters.is_empty() {
        format!(" {range} ")
    } else {
        format!(
            " {}: {range} ({} in all) ",
            filters.join(" "),
            thousands(all as u64)
        )
    }
}

fn render_outcomes(
    frame: &mut Frame,
    area: Rect,
    detail_area: Rect,
    app: &App,
    job: &JobView,
    outcomes: &[RecipientOutcome],
    theme: &Theme,
) {
    if outcomes.is_empty() {
        state_message(frame, area, "No per-recipient outcomes", theme.muted);
        return;
    }
    let rows_shown = &app.jobs.outcome_rows;
    // Only the visible window is built, however many recipients the job has.
    let height = area.height.saturating_sub(1) as usize;
    let (offset, end) = visible_window(app.jobs.outcome_selected, height, rows_shown.len());
    // The position goes on the detail box's bottom border, right-aligned.
    let position = outcome_position(app, offset, end, outcomes.len());
    let border = Rect::new(
        detail_area.x + 1,
        detail_area.bottom().saturating_sub(1),
        detail_area.width.saturating_sub(2),
        1,
    );
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled(position, theme.title)).right_aligned()),
        border,
    );
    if rows_shown.is_empty() {
        state_message(
            frame,
            area,
            "No outcome matches the filter (f: next filter, /: text)",
            theme.muted,
        );
        return;
    }
    let rows = rows_shown[offset..end]
        .iter()
        .filter_map(|&i| outcomes.get(i))
        .map(|o| {
            Row::new(vec![
                Cell::from(o.address.as_str()),
                Cell::from(o.outcome.label()).style(theme.outcome(&o.outcome)),
                Cell::from(folders(o)),
            ])
        });
    let folder_header = match job.kind {
        JobKind::Retract => "Folder (before -> after)",
        JobKind::Restore => "Folder (from -> back to)",
    };
    // The address takes what the outcome (`skipped: not_authorized`) and the folders
    // (`Folder (before -> after)`) leave.
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(23),
            Constraint::Length(24),
        ],
    )
    .header(Row::new(["Address", "Outcome", folder_header]).style(theme.header))
    .style(theme.text)
    .row_highlight_style(theme.selection);
    let mut state = TableState::default();
    if app.jobs.outcomes_focused {
        state.select(Some(app.jobs.outcome_selected.saturating_sub(offset)));
    }
    frame.render_stateful_widget(table, area, &mut state);
}
