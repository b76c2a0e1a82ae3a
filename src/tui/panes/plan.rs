//! Plan preview and confirmation overlay (Hard Delete: type the number of copies).

use crate::model::RetractAction;
use crate::tui::action::Action;
use crate::tui::app::{App, Loadable, short_digest};
use crate::tui::theme::Theme;
use crate::tui::ui::{centered, pane_block, state_message, thousands};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

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
// | Type 1234 to hard delete: [12_]       (Hard Delete only)    |
// | enter apply   esc cancel                                    |
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
            state_message(frame, inner, "Building plan...", theme.muted);
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
                    "{} copies in {} mailboxes",
                    thousands(summary.copies_total),
                    thousands(summary.mailboxes)
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
    lines.push(Line::from(""));
    if summary.action == RetractAction::HardDelete {
        lines.push(Line::from(vec![
            Span::styled(
                format!(
                    "Hard Delete is admin-recoverable only. Type {} to confirm: ",
                    summary.copies_total
                ),
                theme.status_failed,
            ),
            Span::styled(format!("[{}", plan.typed), theme.input),
            Span::styled(" ", theme.selection),
            Span::styled("]", theme.input),
        ]));
    } else {
        lines.push(Line::from(Span::styled(
            format!(
                "Apply {} to {} copies?",
                summary.action.label(),
                thousands(summary.copies_total)
            ),
            theme.header,
        )));
    }
    if let Some(refusal) = &plan.refusal {
        lines.push(Line::from(Span::styled(refusal.clone(), theme.error)));
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}
