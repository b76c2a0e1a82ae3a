//! Audit log: the hash-chained entries (filterable) and the result of verifying the chain.

use super::PaneCtx;
use crate::engine::Command;
use crate::engine::view::{AuditEntryView, AuditFilter, AuditVerification};
use crate::tui::action::Action;
use crate::tui::app::{App, DEBOUNCE_TICKS, Loadable};
use crate::tui::theme::Theme;
use crate::tui::widgets::{
    column_width, count, debounce_due, list_move, loadable, pane_block, scroll_indicator, spinner,
    state_message, visible_window,
};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditState {
    pub entries: Loadable<Vec<AuditEntryView>>,
    pub filter: String,
    /// Ticks left before the filter being typed is sent (the list filters live, debounced).
    pub filter_debounce: Option<u8>,
    pub selected: usize,
    pub verification: Loadable<AuditVerification>,
}

impl AuditState {
    /// Lists the entries (again) with the filter typed so far.
    pub fn reload(&mut self) -> Vec<Command> {
        self.filter_debounce = None;
        self.entries = Loadable::Loading;
        vec![Command::LoadAudit {
            filter: AuditFilter {
                text: self.filter.clone(),
            },
        }]
    }

    pub fn update(&mut self, action: Action, ctx: &mut PaneCtx) -> Vec<Command> {
        let len = self.entries.ready().map(Vec::len).unwrap_or(0);
        if let Some(at) = list_move(&action, self.selected, len) {
            self.selected = at;
            return Vec::new();
        }
        match action {
            Action::Filter => ctx.open_filter(&self.filter),
            Action::VerifyAudit => {
                self.verification = Loadable::Loading;
                return vec![Command::VerifyAudit];
            }
            _ => {}
        }
        Vec::new()
    }

    /// The filter as it is typed: it runs in the engine, sent once typing pauses.
    pub fn set_filter(&mut self, text: String) {
        self.filter = text;
        self.selected = 0;
        self.filter_debounce = Some(DEBOUNCE_TICKS);
    }

    /// One tick: the filter is sent when typing has paused.
    pub fn tick(&mut self) -> Vec<Command> {
        if debounce_due(&mut self.filter_debounce) {
            return self.reload();
        }
        Vec::new()
    }

    pub fn loaded(&mut self, entries: Vec<AuditEntryView>) {
        self.selected = self.selected.min(entries.len().saturating_sub(1));
        self.entries = Loadable::Ready(entries);
    }
}

/// What the keys can do here now (moving only with more than one entry).
pub fn hints(app: &App) -> Vec<Action> {
    let mut hints = Vec::new();
    if app.audit.entries.ready().is_some_and(|e| e.len() > 1) {
        hints.push(Action::MoveDown);
    }
    hints.extend([Action::Filter, Action::VerifyAudit, Action::Refresh]);
    hints
}

// Layout inside the pane:
//
// +-Audit (filter: hard)----------------------------------------------------+
// | Chain: verified, 1,204 entries intact          (or: BROKEN at #17: ...) |
// |    Seq  Time              Operator  Role       Action       Detail  Hash |
// |   1204  2026-11-22 08:41  alice     responder  retract      ...          |
// +-------------------------------------------------------------------------+
pub fn render(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let a = &app.audit;
    let title = if a.filter.is_empty() {
        " Audit ".to_string()
    } else {
        format!(" Audit (filter: {}) ", a.filter)
    };
    let block = pane_block(title, true, theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [verify_area, table_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(inner);
    let verify = match &a.verification {
        Loadable::NotLoaded => Line::from(Span::styled(
            "Chain: not verified yet (v to verify)",
            theme.muted,
        )),
        Loadable::Loading => Line::from(Span::styled(
            format!("Chain: verifying... {}", spinner(app.spinner)),
            theme.status_running,
        )),
        Loadable::Failed(message) => {
            Line::from(Span::styled(format!("Chain: {message}"), theme.error))
        }
        Loadable::Ready(v) => match &v.broken_at {
            None => Line::from(Span::styled(
                format!(
                    "Chain: verified, {} intact",
                    count(v.entries, "entry", "entries")
                ),
                theme.status_succeeded,
            )),
            Some((seq, why)) => Line::from(Span::styled(
                format!("Chain: BROKEN at #{seq}: {why}"),
                theme.status_failed,
            )),
        },
    };
    frame.render_widget(Paragraph::new(verify), verify_area);
    let Some(entries) = loadable(frame, table_area, &a.entries, "audit log", theme) else {
        return;
    };
    if entries.is_empty() {
        let text = if a.filter.is_empty() {
            "The audit log is empty"
        } else {
            "No audit entry matches the filter"
        };
        state_message(frame, table_area, text, theme.muted);
        return;
    }
    let height = table_area.height.saturating_sub(1) as usize;
    let (offset, end) = visible_window(a.selected, height, entries.len());
    let rows = entries[offset..end].iter().map(|e| {
        Row::new(vec![
            Cell::from(format!("{:>6}", e.seq)),
            Cell::from(e.at.format("%Y-%m-%d %H:%M").to_string()).style(theme.muted),
            Cell::from(e.operator.as_str()),
            Cell::from(e.role.as_str()),
            Cell::from(e.action.as_str()),
            Cell::from(e.detail.as_str()),
            Cell::from(e.hash_prefix.as_str()).style(theme.muted),
        ])
    });
    // Operator, role and action as wide as their widest value (capped, so Detail keeps room);
    // Detail takes the rest, so a wide terminal shows more of it.
    let width = |header: &str, value: fn(&AuditEntryView) -> &str, max: u16| {
        column_width(header, entries.iter().map(value), 4).min(max)
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Length(16),
            Constraint::Length(width("Operator", |e| e.operator.as_str(), 24)),
            Constraint::Length(width("Role", |e| e.role.as_str(), 12)),
            Constraint::Length(width("Action", |e| e.action.as_str(), 24)),
            Constraint::Fill(1),
            Constraint::Length(8),
        ],
    )
    .header(
        Row::new([
            "Seq", "Time", "Operator", "Role", "Action", "Detail", "Hash",
        ])
        .style(theme.header),
    )
    .style(theme.text)
    .row_highlight_style(theme.selection);
    let mut state = TableState::default().with_selected(Some(a.selected.saturating_sub(offset)));
    frame.render_stateful_widget(table, table_area, &mut state);
    scroll_indicator(frame, area, (offset, end), entries.len(), theme);
}
