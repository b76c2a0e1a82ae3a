//! Auto-retract disposition matrix: 5 dispositions x 5 actions, plus the Post Delivery and
//! Phish Submission Response switches with their intervals.

use super::PaneCtx;
use crate::engine::Command;
use crate::engine::view::{HeldMatch, HoldState, PolicyMatrix};
use crate::model::{Disposition, RetractAction, Role};
use crate::tui::action::Action;
use crate::tui::app::{App, INTERVAL_MAX, INTERVAL_MIN, INTERVAL_STEP, Loadable};
use crate::tui::theme::Theme;
use crate::tui::widgets::{count, duration, loadable, pane_block, step};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyState {
    pub loaded: Loadable<PolicyMatrix>,
    pub draft: Option<PolicyMatrix>,
    /// 0..5 dispositions, 5 = Post Delivery, 6 = Phish Submission.
    pub row: usize,
    /// Action column 0..5.
    pub col: usize,
    pub saving: bool,
    /// Matches the automation guard holds open (shown here and in the Jobs pane).
    pub held: Vec<HeldMatch>,
}

impl PolicyState {
    /// Loads the stored policy (again).
    pub fn reload(&mut self) -> Vec<Command> {
        self.loaded = Loadable::Loading;
        vec![Command::LoadPolicy]
    }

    pub fn update(&mut self, action: Action, ctx: &mut PaneCtx) -> Vec<Command> {
        let Some(draft) = self.draft.as_mut() else {
            return Vec::new();
        };
        let rows = Disposition::ALL.len() + 2;
        let cols = RetractAction::ALL.len();
        match action {
            Action::MoveUp => self.row = step(self.row, rows, -1),
            Action::MoveDown => self.row = step(self.row, rows, 1),
            Action::First => self.row = 0,
            Action::Last => self.row = rows - 1,
            Action::MoveLeft => self.col = step(self.col, cols, -1),
            Action::MoveRight => self.col = step(self.col, cols, 1),
            Action::SetPolicyCell | Action::Submit => match self.row {
                r if r < Disposition::ALL.len() => {
                    draft
                        .actions
                        .insert(Disposition::ALL[r], RetractAction::ALL[self.col]);
                }
                5 => draft.post_delivery.enabled = !draft.post_delivery.enabled,
                _ => draft.phish_submission.enabled = !draft.phish_submission.enabled,
            },
            Action::TogglePostDelivery => {
                draft.post_delivery.enabled = !draft.post_delivery.enabled
            }
            Action::TogglePhishSubmission => {
                draft.phish_submission.enabled = !draft.phish_submission.enabled
            }
            Action::IntervalIncrease | Action::IntervalDecrease => {
                let switch = match self.row {
                    6 => &mut draft.phish_submission,
                    _ => &mut draft.post_delivery,
                };
                switch.interval_secs = if action == Action::IntervalIncrease {
                    (switch.interval_secs + INTERVAL_STEP).min(INTERVAL_MAX)
                } else {
                    switch
                        .interval_secs
                        .saturating_sub(INTERVAL_STEP)
                        .max(INTERVAL_MIN)
                };
            }
            Action::SavePolicy => {
                if ctx.role != Role::Admin {
                    ctx.set_status(
                        format!("saving the policy needs role admin (you are {})", ctx.role),
                        true,
                    );
                    return Vec::new();
                }
                self.saving = true;
                return vec![Command::SavePolicy(draft.clone())];
            }
            _ => {}
        }
        Vec::new()
    }

    /// True when the draft differs from the stored policy.
    pub fn modified(&self) -> bool {
        match (&self.draft, self.loaded.ready()) {
            (Some(draft), Some(loaded)) => draft != loaded,
            _ => false,
        }
    }

    /// The stored policy arrived (loaded, or saved): the draft starts from it.
    pub fn loaded(&mut self, policy: PolicyMatrix) {
        self.draft = Some(policy.clone());
        self.loaded = Loadable::Ready(policy);
    }
}

pub fn hints(app: &App) -> Vec<Action> {
    let mut hints = vec![
        Action::MoveDown,
        Action::MoveRight,
        Action::SetPolicyCell,
        Action::TogglePostDelivery,
        Action::TogglePhishSubmission,
        Action::IntervalIncrease,
        Action::IntervalDecrease,
    ];
    if app.role == Role::Admin {
        hints.push(Action::SavePolicy);
    }
    hints
}

/// Column width of one action cell.
const CELL: usize = 12;

fn column_title(action: RetractAction) -> &'static str {
    match action {
        RetractAction::NoAction => "No action",
        RetractAction::Junk => "Junk",
        RetractAction::Trash => "Trash",
        RetractAction::SoftDelete => "Soft Del*",
        RetractAction::HardDelete => "Hard Del",
    }
}

// Layout inside the pane:
//
// +-Auto-retract policy (version 3, modified)-------------------------------+
// |               No action    Junk         Trash        Soft Del*    Hard Del |
// | malicious     ( )          ( )          ( )          (*)          ( )      |
// | ...five disposition rows...                                              |
// |                                                                          |
// | [x] Post Delivery Response       every 15m 0s                            |
// | [ ] Phish Submission Response    every 5m 0s                             |
// |                                                                          |
// | * Microsoft only: on Gmail, Soft Delete becomes Trash.                   |
// | Saving needs role admin (you are responder).                             |
// |                                                                          |
// | Held by the automation guard (over its limits, nothing done):            |
// |  #3 subject "*" (feed.csv, malicious)         (only when there are holds) |
// |     1,470 copies in 273 messages; clawback policy confirm 3              |
// +--------------------------------------------------------------------------+
pub fn render(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let p = &app.policy;
    let title = match (p.loaded.ready(), app.policy_modified()) {
        (Some(m), true) => format!(" Auto-retract policy (version {}, modified) ", m.version),
        (Some(m), false) => format!(" Auto-retract policy (version {}) ", m.version),
        (None, _) => " Auto-retract policy ".to_string(),
    };
    let block = pane_block(title, true, theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if loadable(frame, inner, &p.loaded, "policy", theme).is_none() {
        return;
    }
    let Some(draft) = &p.draft else {
        return;
    };
    let mut lines = Vec::new();
    let mut header = vec![Span::styled(format!("{:<14}", ""), theme.header)];
    for action in RetractAction::ALL {
        header.push(Span::styled(
            format!("{:<CELL$}", column_title(*action)),
            theme.header,
        ));
    }
    lines.push(Line::from(header));
    for (r, disposition) in Disposition::ALL.iter().enumerate() {
        let chosen = draft.action_for(*disposition);
        let mut spans = vec![Span::styled(
            format!("{:<14}", disposition.as_str()),
            if p.row == r { theme.header } else { theme.text },
        )];
        for (c, action) in RetractAction::ALL.iter().enumerate() {
            let active = *action == chosen;
            let mark = if active { "(*)" } else { "( )" };
            // The cursor on the chosen cell keeps the chosen cell's marks under the cursor's
            // (without colour: reversed and underlined, unlike either alone).
            let style = if p.row == r && p.col == c && active {
                theme.matrix_cell_active.patch(theme.selection)
            } else if p.row == r && p.col == c {
                theme.selection
            } else if active {
                theme.matrix_cell_active
            } else {
                theme.matrix_cell
            };
            spans.push(Span::styled(mark, style));
            spans.push(Span::raw(" ".repeat(CELL - 3)));
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::from(""));
    for (i, (name, switch)) in [
        ("Post Delivery Response", draft.post_delivery),
        ("Phish Submission Response", draft.phish_submission),
    ]
    .into_iter()
    .enumerate()
    {
        let row = Disposition::ALL.len() + i;
        let style = if p.row == row {
            theme.selection
        } else {
            theme.text
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!("{} {name:<27}", if switch.enabled { "[x]" } else { "[ ]" }),
                style,
            ),
            Span::styled(
                format!("every {}", duration(switch.interval_secs)),
                if switch.enabled {
                    theme.text
                } else {
                    theme.muted
                },
            ),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "* Microsoft only: on Gmail, Soft Delete becomes Trash.",
        theme.muted,
    )));
    if p.saving {
        lines.push(Line::from(Span::styled("Saving...", theme.status_running)));
    } else if app.role != Role::Admin {
        lines.push(Line::from(Span::styled(
            format!("Read only: saving needs role admin (you are {}).", app.role),
            theme.status_warning,
        )));
    }
    if !app.policy.held.is_empty() {
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            "Held by the automation guard (over its limits, nothing done):",
            theme.status_warning,
        )));
        for h in app.policy.held.iter().take(HELD_SHOWN) {
            lines.push(Line::from(Span::styled(
                format!(" #{} {}", h.id, h.indicator),
                theme.text,
            )));
            lines.push(Line::from(Span::styled(
                format!(
                    "    {} in {}; {}",
                    count(h.copies, "copy", "copies"),
                    count(h.messages, "message", "messages"),
                    hold_next(h)
                ),
                theme.text,
            )));
        }
        if app.policy.held.len() > HELD_SHOWN {
            lines.push(Line::from(Span::styled(
                format!(
                    " and {} more: clawback policy holds",
                    app.policy.held.len() - HELD_SHOWN
                ),
                theme.muted,
            )));
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// Holds listed in the pane (the rest: `clawback policy holds`).
const HELD_SHOWN: usize = 2;

/// What releases a held match (or where it stands once confirmed).
pub fn hold_next(h: &HeldMatch) -> String {
    match h.state {
        HoldState::NeedsConfirmation => format!("clawback policy confirm {}", h.id),
        HoldState::Confirmed => "confirmed: the next watch cycle retracts it".to_string(),
        HoldState::Released | HoldState::Expired => h.state.as_str().to_string(),
    }
}

/// One held match on one line, the id, copy count and command first so that 80 columns
/// show them (the Jobs pane's line).
pub fn hold_line(h: &HeldMatch) -> String {
    format!(
        "#{} ({}): {}; {} in {}",
        h.id,
        count(h.copies, "copy", "copies"),
        hold_next(h),
        h.indicator,
        count(h.messages, "message", "messages")
    )
}
