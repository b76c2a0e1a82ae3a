//! Questions asked before something that cannot be taken back: restoring a job's copies.
//! Only the `confirm` keys answer them (`y`, `n`/`esc` by default).

use crate::tui::action::Action;
use crate::tui::app::{App, Confirm};
use crate::tui::keymap::Mode;
use crate::tui::theme::Theme;
use crate::tui::ui::{centered, pane_block, thousands};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

pub fn hints(_app: &App) -> Vec<Action> {
    vec![Action::Confirm, Action::Cancel]
}

/// What `y` and `n` do for this question, for the hint bar.
pub fn hint_label(confirm: &Confirm, action: &Action) -> &'static str {
    match (confirm, action) {
        (Confirm::Restore { .. }, Action::Confirm) => "restore",
        (Confirm::Restore { .. }, _) => "do not restore",
    }
}

/// The title and the lines of a question.
pub fn question(_app: &App, confirm: &Confirm) -> (String, Vec<String>) {
    match confirm {
        Confirm::Restore {
            job,
            copies,
            action,
        } => (
            format!(" Restore job {job}? "),
            vec![
                format!(
                    "Put {} copies that job {job} moved ({}) back into the folders they were in before.",
                    thousands(*copies),
                    action.label()
                ),
                "A copy moved since by someone else is left where it is.".into(),
            ],
        ),
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
