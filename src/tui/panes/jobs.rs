//! Jobs: running and past jobs; the selected job's progress (gauge, rate, ETA, throttling),
//! failures by reason (retry one reason), outcome per recipient, and restore.

use crate::engine::view::JobPhase;
use crate::tui::action::Action;
use crate::tui::app::App;
use crate::tui::panes::policy::hold_line;
use crate::tui::panes::recipients::outcome_style;
use crate::tui::theme::Theme;
use crate::tui::ui::{duration, loadable, pane_block, state_message, thousands, visible_window};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

pub fn hints(_app: &App) -> Vec<Action> {
    vec![
        Action::MoveDown,
        Action::Submit,
        Action::MoveRight,
        Action::RetryFailed,
        Action::Restore,
        Action::CancelJob,
        Action::Refresh,
    ]
}

fn state_style(state: JobPhase, failed: u64, theme: &Theme) -> ratatui::style::Style {
    match state {
        JobPhase::Running => theme.status_running,
        JobPhase::Finished if failed > 0 => theme.status_warning,
        JobPhase::Finished => theme.status_succeeded,
        JobPhase::Cancelled => theme.muted,
        JobPhase::Interrupted => theme.status_failed,
    }
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
    let block = pane_block(title, true, theme);
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
            Some(j) => format!(" Job {} ({}) ", j.id, j.state.label()),
            None => " Job ".into(),
        },
        false,
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
            Cell::from(j.action.as_str()),
            Cell::from(j.state.label()).style(state_style(j.state, j.failed(), theme)),
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
            spans.push(Span::raw(format!(
                " {} ok, {} failed, {} skipped of {}; {} restorable",
                thousands(job.succeeded),
                thousands(job.failed()),
                thousands(job.skipped),
                thousands(job.total),
                thousands(job.restorable)
            )));
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
            if outcomes.is_empty() {
                state_message(
                    frame,
                    outcomes_area,
                    "No per-recipient outcomes",
                    theme.muted,
                );
                return;
            }
            let height = outcomes_area.height.saturating_sub(1) as usize;
            let rows = outcomes.iter().take(height).map(|o| {
                Row::new(vec![
                    Cell::from(o.address.as_str()),
                    Cell::from(o.outcome.label()).style(outcome_style(&o.outcome, theme)),
                    Cell::from(
                        o.from_folder
                            .as_ref()
                            .map(|f| f.label().to_string())
                            .unwrap_or_else(|| "-".into()),
                    ),
                ])
            });
            let table = Table::new(
                rows,
                [
                    Constraint::Fill(2),
                    Constraint::Fill(2),
                    Constraint::Fill(1),
                ],
            )
            .header(Row::new(["Address", "Outcome", "Folder before"]).style(theme.header))
            .style(theme.text);
            frame.render_widget(table, outcomes_area);
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
