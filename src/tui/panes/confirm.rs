//! Questions asked before something that cannot be taken back: quitting with a job running
//! (or unsaved policy changes), restoring a job's copies, resuming interrupted jobs. Only the
//! `confirm` keys answer them (`y`, `n`/`esc` by default).

use crate::engine::view::{JobId, JobView};
use crate::model::RetractAction;
use crate::tui::action::Action;
use crate::tui::app::App;
use crate::tui::keymap::Mode;
use crate::tui::theme::Theme;
use crate::tui::widgets::{centered, count, pane_block, thousands};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

/// A question asked before something that cannot be taken back; only `y` / `n` / `esc`
/// answer it.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    /// `q` with jobs running here or unsaved policy changes.
    Quit {
        running: Vec<JobId>,
        unsaved_policy: bool,
    },
    /// `u`: restore the copies of a retract job.
    Restore {
        job: JobId,
        copies: u64,
        action: RetractAction,
    },
    /// Interrupted jobs found at start.
    Resume { jobs: Vec<JobView> },
}

pub fn hints(_app: &App) -> Vec<Action> {
    vec![Action::Confirm, Action::Cancel]
}

/// What `y` and `n` do for this question, for the hint bar.
pub fn hint_label(confirm: &Confirm, action: &Action) -> &'static str {
    match (confirm, action) {
        (Confirm::Quit { .. }, Action::Confirm) => "quit anyway",
        (Confirm::Quit { .. }, _) => "stay",
        (Confirm::Restore { .. }, Action::Confirm) => "restore",
        (Confirm::Restore { .. }, _) => "do not restore",
        (Confirm::Resume { .. }, Action::Confirm) => "resume",
        (Confirm::Resume { .. }, _) => "later",
    }
}

fn ids(jobs: &[JobId]) -> String {
    jobs.iter()
        .map(|j| j.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The title and the lines of a question (also used by the too-small screen for quit).
pub fn question(app: &App, confirm: &Confirm) -> (String, Vec<String>) {
    match confirm {
        Confirm::Quit {
            running: asked_for,
            unsaved_policy,
        } => {
            // What runs now, not when the question was asked: a job may start or end meanwhile.
            let running = &app.jobs.running;
            let mut lines = Vec::new();
            if running.is_empty() && app.jobs.starting > 0 {
                lines.push("A job is starting (just confirmed).".into());
                lines.push(
                    "Quitting stops it after the copies in flight; it is offered for resume at the next start."
                        .into(),
                );
            } else if running.is_empty() && !asked_for.is_empty() {
                lines.push(format!(
                    "Job {} has ended meanwhile: nothing runs any more.",
                    ids(asked_for)
                ));
            }
            if !running.is_empty() {
                let progress: Vec<String> = running
                    .iter()
                    .map(|j| match app.progress_of(j) {
                        Some(p) => format!(
                            "job {j} ({} of {} done)",
                            thousands(p.done),
                            thousands(p.done + p.remaining)
                        ),
                        None => format!("job {j}"),
                    })
                    .collect();
                lines.push(format!("Running: {}.", progress.join(", ")));
                lines.push(
                    "Quitting stops it after the copies in flight; it is offered for resume at the next start."
                        .into(),
                );
            }
            if *unsaved_policy {
                lines.push(
                    "The policy has unsaved changes (w saves them); quitting loses them.".into(),
                );
            }
            if lines.is_empty() {
                lines.push("Nothing runs any more: quitting is safe now.".into());
            }
            (" Quit? ".into(), lines)
        }
        Confirm::Restore {
            job,
            copies,
            action,
        } => (
            format!(" Restore job {job}? "),
            vec![
                format!(
                    "Put {} that job {job} moved ({}) back into the folders they were in before.",
                    count(*copies, "copy", "copies"),
                    action.label()
                ),
                "A copy moved since by someone else is left where it is.".into(),
            ],
        ),
        Confirm::Resume { jobs } => {
            let mut lines = vec![format!(
                "Interrupted (the console quit or crashed mid-job): {}.",
                jobs.iter()
                    .map(|j| format!(
                        "job {} ({}, {} of {} copies left)",
                        j.id,
                        j.action_label(),
                        thousands(j.total.saturating_sub(j.succeeded + j.failed() + j.skipped)),
                        thousands(j.total)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            )];
            lines.push(format!(
                "Resume {} now? Later: Jobs (5), select it, R.",
                if jobs.len() == 1 { "it" } else { "them" }
            ));
            let ids: Vec<JobId> = jobs.iter().map(|j| j.id.clone()).collect();
            (format!(" Resume job {}? ", self::ids(&ids)), lines)
        }
    }
}

// Overlay, centred over the body:
//
// +-Restore job 42?---------------------------------------------+
// | Put 34 copies that job 42 moved (Junk Email) back into the   |
// | folders they were in before.                                 |
// | ...                                                          |
// |                                                              |
// | y restore   n do not restore                                 |
// +--------------------------------------------------------------+
pub fn render(frame: &mut Frame, body: Rect, app: &App, theme: &Theme) {
    let Some(confirm) = &app.confirm else {
        return;
    };
    let (title, text) = question(app, confirm);
    let area = centered(body, 66, 10);
    frame.render_widget(Clear, area);
    let block = pane_block(title, true, theme).style(theme.overlay);
    let mut lines: Vec<Line> = text.into_iter().map(Line::from).collect();
    lines.push(Line::from(""));
    let mut keys = Vec::new();
    for action in hints(app) {
        if let Some(key) = app.keymap.first_key(Mode::Confirm, &action) {
            if !keys.is_empty() {
                keys.push(Span::raw("   "));
            }
            keys.push(Span::styled(key, theme.hint_key));
            keys.push(Span::styled(
                format!(" {}", hint_label(confirm, &action)),
                theme.hint_text,
            ));
        }
    }
    lines.push(Line::from(keys));
    frame.render_widget(
        Paragraph::new(lines).block(block).wrap(Wrap { trim: true }),
        area,
    );
}
