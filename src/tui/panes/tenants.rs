//! Tenants and their domains: Retract Granted / Missing (permission) / Not in tenant.

use crate::tui::action::Action;
use crate::tui::app::App;
use crate::tui::panes::recipients::grant_style;
use crate::tui::theme::Theme;
use crate::tui::ui::{loadable, pane_block, state_message, visible_window};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::{Cell, Row, Table, TableState};

pub fn hints(_app: &App) -> Vec<Action> {
    vec![Action::MoveDown, Action::Refresh]
}

// Layout inside the pane:
//
// +-Tenants---------------------------------------------------------------+
// | Tenant      Kind              Domain               Retract              |
// | contoso     microsoft365      contoso.example      Granted              |
// |                               fabrikam.example     Missing (Mail.Read.. |
// +-----------------------------------------------------------------------+
pub fn render(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let block = pane_block(" Tenants ", true, theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(tenants) = loadable(frame, inner, &app.tenants.tenants, "tenants", theme) else {
        return;
    };
    if tenants.is_empty() {
        state_message(
            frame,
            inner,
            "No tenants configured: add a [[tenant]] to the config (clawback init)",
            theme.muted,
        );
        return;
    }
    // One line per domain; a tenant without domains still gets a line.
    let mut lines: Vec<Row> = Vec::new();
    for t in tenants {
        if t.domains.is_empty() {
            lines.push(Row::new(vec![
                Cell::from(t.name.as_str()),
                Cell::from(t.kind.as_str()),
                Cell::from("(no domains)").style(theme.muted),
                Cell::from("-"),
            ]));
        }
        for (i, d) in t.domains.iter().enumerate() {
            let (name, kind) = if i == 0 {
                (t.name.as_str(), t.kind.as_str())
            } else {
                ("", "")
            };
            lines.push(Row::new(vec![
                Cell::from(name),
                Cell::from(kind),
                Cell::from(d.domain.as_str()),
                Cell::from(d.status.label()).style(grant_style(&d.status, theme)),
            ]));
        }
    }
    let height = inner.height.saturating_sub(1) as usize;
    let (offset, end) = visible_window(app.tenants.selected, height, lines.len());
    let len = lines.len();
    let rows: Vec<Row> = lines.into_iter().skip(offset).take(end - offset).collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(14),
            Constraint::Length(17),
            Constraint::Fill(1),
            Constraint::Fill(1),
        ],
    )
    .header(Row::new(["Tenant", "Kind", "Domain", "Retract"]).style(theme.header))
    .style(theme.text)
    .row_highlight_style(theme.selection);
    let mut state = TableState::default()
        .with_selected((len > 0).then(|| app.tenants.selected.saturating_sub(offset)));
    frame.render_stateful_widget(table, inner, &mut state);
}
