//! Plan preview and confirmation overlay (Hard Delete: type the number of copies).

use crate::engine::Command;
use crate::engine::view::PlanSummary;
use crate::model::RetractAction;
use crate::tui::action::Action;
use crate::tui::app::{App, HARD_DELETE_DIGITS, Loadable, short_digest};
use crate::tui::input::TextInput;
use crate::tui::theme::Theme;
use crate::tui::widgets::{centered, count, pane_block, spinner, state_message, thousands};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use tui_input::InputRequest;

#[derive(Debug, Clone, PartialEq)]
pub struct PlanState {
    pub summary: Loadable<PlanSummary>,
    /// What the operator typed (Hard Delete: the number of copies).
    pub typed: TextInput,
    pub refusal: Option<String>,
}

/// How the operator leaves the plan overlay.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanExit {
    /// Closed without applying: the built plan (if any) is discarded.
    Cancelled(Option<Command>),
    /// Confirmed: apply this plan (Hard Delete: with the count typed).
    Apply {
        summary: PlanSummary,
        typed_copies: Option<u64>,
    },
}

impl PlanState {
    /// A plan being built.
    pub fn building() -> PlanState {
        PlanState {
            summary: Loadable::Loading,
            typed: TextInput::default(),
            refusal: None,
        }
    }

    /// A key in the overlay: typing and refusals are handled here; leaving it is returned.
    pub fn update(&mut self, action: Action) -> Option<PlanExit> {
        match action {
            // The first esc clears what was typed, the second closes the plan.
            Action::Cancel if !self.typed.is_empty() => {
                self.typed.clear();
                self.refusal = None;
            }
            Action::Cancel => {
                let discard = self.summary.ready().map(|s| Command::DiscardPlan {
                    plan_id: s.plan_id.clone(),
                });
                return Some(PlanExit::Cancelled(discard));
            }
            // Only the Hard Delete confirmation takes typing, and only digits.
            Action::Edit(edit)
                if self
                    .summary
                    .ready()
                    .is_some_and(|s| s.action == RetractAction::HardDelete) =>
            {
                let typed = match edit {
                    InputRequest::InsertChar(c) => {
                        c.is_ascii_digit() && self.typed.char_count() < HARD_DELETE_DIGITS
                    }
                    _ => true,
                };
                if typed && self.typed.edit(edit) {
                    self.refusal = None;
                }
            }
            Action::Submit => {
                let summary = self.summary.ready().cloned()?;
                let typed_copies = if summary.action == RetractAction::HardDelete {
                    match self.typed.value().parse::<u64>() {
                        Ok(n) if n == summary.copies_total => Some(n),
                        _ => {
                            self.refusal = Some(format!(
                                "type {} (the number of copies) to hard delete",
                                summary.copies_total
                            ));
                            return None;
                        }
                    }
                } else {
                    None
                };
                return Some(PlanExit::Apply {
                    summary,
                    typed_copies,
                });
            }
            _ => {}
        }
        None
    }
}

pub fn hints(_app: &App) -> Vec<Action> {
    vec![Action::Submit, Action::Cancel]
}

// Overlay, centred over the body:
//
// +-Plan: Junk Email-------------------------------------------+
// | 1,234 copies in 1,100 mailboxes, depth 1, digest 3f2a9c0d1e |
// | per action:  junk 1,200   trash 34                          |
// | per tenant:  contoso (microsoft365) 1,000   ...             |
// | not actionable: external 3   already_gone 2                 |
// | note lines...                                               |
// |                                                             |
// | Hard Delete is admin-recoverable only. (Hard Delete only)   |
// |                                                             |
// | Type 1234 to confirm: [12   ]      or: Apply Junk Email ... |
// | (the refusal, after a wrong count)                          |
// +-------------------------------------------------------------+
pub fn render(frame: &mut Frame, body: Rect, app: &App, theme: &Theme) {
    let Some(plan) = &app.plan else {
        return;
    };
    let area = centered(body, 72, 16);
    frame.render_widget(Clear, area);
    let title = match plan.summary.ready() {
        Some(s) => format!(" Plan: {} ", s.action.label()),
        None => " Plan ".to_string(),
    };
    let block = pane_block(title, true, theme).style(theme.overlay);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let summary = match &plan.summary {
        Loadable::NotLoaded | Loadable::Loading => {
            state_message(
                frame,
                inner,
                &format!("Building plan... {}", spinner(app.spinner)),
                theme.muted,
            );
            return;
        }
        Loadable::Failed(message) => {
            state_message(
                frame,
                inner,
                &format!("Plan failed: {message}"),
                theme.error,
            );
            return;
        }
        Loadable::Ready(s) => s,
    };
    let mut lines = vec![
        Line::from(vec![
            Span::styled(
                format!(
                    "{} in {}",
                    count(summary.copies_total, "copy", "copies"),
                    count(summary.mailboxes, "mailbox", "mailboxes")
                ),
                theme.header,
            ),
            Span::styled(
                format!(
                    ", depth {}, digest {}",
                    summary.depth,
                    short_digest(&summary.digest)
                ),
                theme.muted,
            ),
        ]),
        Line::from(format!(
            "per action:  {}",
            summary
                .per_action
                .iter()
                .map(|(a, n)| format!("{} {}", a.as_str(), thousands(*n)))
                .collect::<Vec<_>>()
                .join("   ")
        )),
        Line::from(format!(
            "per tenant:  {}",
            summary
                .per_tenant
                .iter()
                .map(|t| format!("{} ({}) {}", t.tenant, t.kind, thousands(t.copies)))
                .collect::<Vec<_>>()
                .join("   ")
        )),
    ];
    if !summary.not_actionable.is_empty() {
        lines.push(Line::from(Span::styled(
            format!(
                "not actionable: {}",
                summary
                    .not_actionable
                    .iter()
                    .map(|(r, n)| format!("{} {}", r.as_str(), thousands(*n)))
                    .collect::<Vec<_>>()
                    .join("   ")
            ),
            theme.status_warning,
        )));
    }
    for note in &summary.notes {
        lines.push(Line::from(Span::styled(
            format!("note: {note}"),
            theme.muted,
        )));
    }
    // The question and its answer sit at the bottom, below however the summary wraps.
    let [summary_area, question_area, refusal_area] = Layout::vertical([
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(inner);
    if summary.action == RetractAction::HardDelete {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            "Hard Delete is admin-recoverable only.",
            theme.status_failed,
        )));
        let lead = format!("Type {} to confirm: [", summary.copies_total);
        let lead_width = lead.len() as u16;
        frame.render_widget(Span::styled(lead, theme.status_failed), question_area);
        // Room for the longest count the field takes and the cursor after it.
        let field_width =
            (HARD_DELETE_DIGITS as u16 + 1).min(question_area.width.saturating_sub(lead_width + 1));
        let field = Rect::new(
            question_area.x + lead_width.min(question_area.width),
            question_area.y,
            field_width,
            1,
        );
        let typed = Line::from(Span::styled(plan.typed.value(), theme.input));
        plan.typed.render(frame, field, typed, true);
        frame.render_widget(
            Span::styled("]", theme.status_failed),
            Rect::new(field.right(), field.y, 1, 1).intersection(question_area),
        );
    } else {
        frame.render_widget(
            Span::styled(
                format!(
                    "Apply {} to {}?",
                    summary.action.label(),
                    count(summary.copies_total, "copy", "copies")
                ),
                theme.header,
            ),
            question_area,
        );
    }
    if let Some(refusal) = &plan.refusal {
        frame.render_widget(Span::styled(refusal.as_str(), theme.error), refusal_area);
    }
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }),
        summary_area,
    );
}
