//! Tenants and their domains: Retract Granted / Missing (permission) / Not in tenant.

use super::PaneCtx;
use crate::engine::Command;
use crate::engine::view::{TenantView, TenantsProgress};
use crate::tui::action::Action;
use crate::tui::app::{App, Loadable};
use crate::tui::keymap::Mode;
use crate::tui::theme::Theme;
use crate::tui::widgets::{
    column_width, loadable, pane_block, scroll_indicator, state_message, step, visible_window,
};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantsState {
    pub tenants: Loadable<Vec<TenantView>>,
    pub selected: usize,
    /// The load under way: how far it came and how long it has run.
    pub loading: Option<TenantsLoading>,
}

/// Feedback on a tenants load while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TenantsLoading {
    /// Ticks of the event loop since the load was asked for (elapsed time without a clock).
    pub ticks: u32,
    /// The engine's last word on it (`None` until the first `TenantsProgress`).
    pub progress: Option<TenantsProgress>,
}

impl TenantsLoading {
    /// Whole seconds since the load was asked for.
    pub fn elapsed_secs(&self) -> u64 {
        u64::from(self.ticks) * crate::tui::event::TICK.as_millis() as u64 / 1000
    }
}

impl TenantsState {
    /// Checks the tenants (again).
    pub fn reload(&mut self) -> Vec<Command> {
        self.tenants = Loadable::Loading;
        self.loading = Some(TenantsLoading::default());
        vec![Command::LoadTenants]
    }

    pub fn update(&mut self, action: Action, ctx: &mut PaneCtx) -> Vec<Command> {
        let len = self
            .tenants
            .ready()
            .map(|t| t.iter().map(|t| t.domains.len().max(1)).sum())
            .unwrap_or(0);
        match action {
            Action::MoveUp => self.selected = step(self.selected, len, -1),
            Action::MoveDown => self.selected = step(self.selected, len, 1),
            Action::Cancel if self.tenants == Loadable::Loading => {
                let secs = self.loading.take().map(|l| l.elapsed_secs()).unwrap_or(0);
                self.tenants = Loadable::Failed(format!(
                    "cancelled after {secs} s; {} checks again",
                    ctx.keymap
                        .first_key(Mode::Tenants, &Action::Refresh)
                        .unwrap_or_else(|| "refresh".into())
                ));
                return vec![Command::CancelTenants];
            }
            _ => {}
        }
        Vec::new()
    }

    /// One tick of the event loop: true when the elapsed seconds shown changed (redraw).
    pub fn tick(&mut self) -> bool {
        if let Some(load) = self.loading.as_mut()
            && self.tenants == Loadable::Loading
        {
            let shown = load.elapsed_secs();
            load.ticks = load.ticks.saturating_add(1);
            return load.elapsed_secs() != shown;
        }
        false
    }

    pub fn loaded(&mut self, tenants: Vec<TenantView>) {
        self.loading = None;
        self.tenants = Loadable::Ready(tenants);
    }

    pub fn progressed(&mut self, progress: TenantsProgress) {
        if let Some(load) = self.loading.as_mut()
            && self.tenants == Loadable::Loading
        {
            load.progress = Some(progress);
        }
    }
}

pub fn hints(app: &App) -> Vec<Action> {
    if app.tenants.loading.is_some() && app.tenants.tenants == Loadable::Loading {
        return vec![Action::Cancel];
    }
    let mut hints = Vec::new();
    if app.tenants.tenants.ready().is_some_and(|t| t.len() > 1) {
        hints.push(Action::MoveDown);
    }
    hints.push(Action::Refresh);
    hints
}

/// The line shown while tenants are checked: how far, how long, how to stop.
pub fn loading_text(load: &TenantsLoading, cancel_key: &str) -> String {
    let secs = load.elapsed_secs();
    match load.progress {
        Some(p) => format!(
            "Checking tenants: {}/{} done, {} domains probed, {secs} s elapsed ({cancel_key} cancels)",
            p.done, p.total, p.domains
        ),
        None => format!("Checking tenants: {secs} s elapsed ({cancel_key} cancels)"),
    }
}

// Layout inside the pane:
//
// +-Tenants---------------------------------------------------------------+
// | Tenant      Kind              Domain               Retract              |
// | contoso     microsoft365      contoso.example      Granted              |
// |                               fabrikam.example     Missing (Mail.Read.. |
// | northwind   google_workspace  -                    Error: connection re |
// |                                                                         |
// | northwind: connection refused: 127.0.0.1:8080   (one line per Error)    |
// +-----------------------------------------------------------------------+
pub fn render(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let block = pane_block(" Tenants ", true, theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if let (Loadable::Loading, Some(load)) = (&app.tenants.tenants, &app.tenants.loading) {
        let cancel_key = app
            .keymap
            .first_key(Mode::Tenants, &Action::Cancel)
            .unwrap_or_else(|| "cancel".into());
        state_message(frame, inner, &loading_text(load, &cancel_key), theme.muted);
        return;
    }
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
        if let Some(error) = &t.error {
            // Not checked: the domains are unknown, never "Granted".
            lines.push(Row::new(vec![
                Cell::from(t.name.as_str()),
                Cell::from(t.kind.as_str()),
                Cell::from("-").style(theme.muted),
                Cell::from(format!("Error: {error}")).style(theme.error),
            ]));
            continue;
        }
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
                Cell::from(d.status.label()).style(theme.grant(&d.status)),
            ]));
        }
    }
    // Each tenant that could not be checked also gets a full-width line under the table: the
    // Retract column is too narrow at 80 columns for the endpoint and cause.
    let errors: Vec<Line> = tenants
        .iter()
        .filter_map(|t| {
            let e = t.error.as_ref()?;
            Some(Line::styled(format!("{}: {e}", t.name), theme.error))
        })
        .take(inner.height.saturating_sub(3) as usize)
        .collect();
    let [inner, footer] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(errors.len() as u16)])
            .areas(inner);
    frame.render_widget(Paragraph::new(errors), footer);
    let height = inner.height.saturating_sub(1) as usize;
    let (offset, end) = visible_window(app.tenants.selected, height, lines.len());
    let len = lines.len();
    let rows: Vec<Row> = lines.into_iter().skip(offset).take(end - offset).collect();
    // Names and kinds as wide as the widest (kinds go up to `google_workspace`).
    let name_width = column_width("Tenant", tenants.iter().map(|t| t.name.as_str()), 8).min(30);
    let kind_width = column_width("Kind", tenants.iter().map(|t| t.kind.as_str()), 4);
    let table = Table::new(
        rows,
        [
            Constraint::Length(name_width),
            Constraint::Length(kind_width),
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
    scroll_indicator(frame, area, (offset, end), len, theme);
}
