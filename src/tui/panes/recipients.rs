//! Recipient checklist for the selected message: include boxes, per-recipient status, the
//! conversation depth stepper with its live preview, and the action selector.

use super::{PaneCtx, Then};
use crate::engine::Command;
use crate::engine::view::{DepthCount, Generation, RecipientRow, SearchRow};
use crate::model::RetractAction;
use crate::tui::action::Action;
use crate::tui::app::{App, DEBOUNCE_TICKS, Loadable, MAX_DEPTH, Pane, SELECTOR_ACTIONS};
use crate::tui::theme::Theme;
use crate::tui::widgets::{
    column_width, count, list_move, loadable, noun, pane_block, scroll_indicator, spinner,
    state_message, thousands, visible_window,
};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

/// What the keys can do here now, most important first (at 80 columns the last ones give
/// way): a box only on a tickable row, the plan only with someone included, depth only in the
/// direction it can still move.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipientsState {
    /// The row the messages were opened from (the title).
    pub message: Option<SearchRow>,
    /// The Message-IDs opened: one message, or every message of a campaign; in every tenant
    /// that holds them.
    pub message_ids: Vec<String>,
    pub generation: Generation,
    pub rows: Loadable<Vec<RecipientRow>>,
    /// Progress of the load running now: (mailboxes located, to locate, seconds).
    pub progress: Option<(u64, u64, u64)>,
    /// The last load was cancelled (Esc) before it finished.
    pub cancelled: bool,
    /// Include boxes, parallel to `rows` (only located rows can be ticked).
    pub included: Vec<bool>,
    /// The operator's exclusions (lower-case addresses): kept across a refresh and reopening
    /// the same messages, cleared when other messages are opened.
    pub excluded: std::collections::BTreeSet<String>,
    /// Indexes of rows matching the filter.
    pub visible: Vec<usize>,
    pub filter: String,
    /// Position in `visible`.
    pub selected: usize,
    pub depth: u8,
    pub depth_generation: Generation,
    pub depth_preview: Loadable<Vec<DepthCount>>,
    pub preview_debounce: Option<u8>,
    /// Side by side: ticks left before the checklist follows the search selection.
    pub follow_debounce: Option<u8>,
    pub action: RetractAction,
}

impl Default for RecipientsState {
    fn default() -> RecipientsState {
        RecipientsState {
            message: None,
            generation: 0,
            rows: Loadable::NotLoaded,
            message_ids: Vec::new(),
            progress: None,
            cancelled: false,
            included: Vec::new(),
            excluded: Default::default(),
            visible: Vec::new(),
            filter: String::new(),
            selected: 0,
            depth: 0,
            depth_generation: 0,
            depth_preview: Loadable::NotLoaded,
            preview_debounce: None,
            follow_debounce: None,
            action: RetractAction::Junk,
        }
    }
}

impl RecipientsState {
    pub fn load_again(&mut self) -> Vec<Command> {
        if self.message_ids.is_empty() {
            return Vec::new();
        }
        self.generation += 1;
        self.rows = Loadable::Loading;
        self.progress = None;
        self.cancelled = false;
        self.depth_preview = Loadable::NotLoaded;
        vec![Command::LoadRecipients {
            generation: self.generation,
            message_ids: self.message_ids.clone(),
        }]
    }

    /// The exclusions the plan gets: the located rows left unticked. A row that cannot be
    /// ticked (a list, external, not authorized, gone, unresolved…) is not an exclusion: it
    /// must not keep that mailbox out at deeper conversation depths (a user who deleted the
    /// phish may still hold a forward of it), and an unresolved mailbox stays in the plan.
    pub fn excluded(&self) -> Vec<String> {
        let mut excluded = Vec::new();
        if let Some(rows) = self.rows.ready() {
            for (row, on) in rows.iter().zip(&self.included) {
                if row.tickable() && !*on {
                    excluded.push(row.address.to_ascii_lowercase());
                }
            }
        }
        excluded.sort();
        excluded.dedup();
        excluded
    }

    /// Ticked rows (what the plan acts on at depth 0, beside unresolved mailboxes).
    pub fn included_count(&self) -> usize {
        self.included.iter().filter(|on| **on).count()
    }

    pub fn send_depth_preview(&mut self) -> Vec<Command> {
        if self.message_ids.is_empty() || self.rows.ready().is_none() {
            return Vec::new();
        }
        let excluded = self.excluded();
        self.depth_generation += 1;
        self.depth_preview = Loadable::Loading;
        self.preview_debounce = None;
        vec![Command::PreviewDepth {
            generation: self.depth_generation,
            message_ids: self.message_ids.clone(),
            depth: self.depth,
            excluded,
        }]
    }

    /// Sets include box `i` (a located row only) and keeps the operator's exclusions in step.
    fn set_included(&mut self, i: usize, on: bool) {
        let Some(address) = self
            .rows
            .ready()
            .and_then(|rows| rows.get(i))
            .filter(|r| r.tickable())
            .map(|r| r.address.to_ascii_lowercase())
        else {
            return;
        };
        if let Some(slot) = self.included.get_mut(i) {
            *slot = on;
        }
        if on {
            self.excluded.remove(&address);
        } else {
            self.excluded.insert(address);
        }
    }

    pub fn refilter(&mut self) {
        let needle = self.filter.to_lowercase();
        self.visible = match self.rows.ready() {
            Some(rows) => rows
                .iter()
                .enumerate()
                .filter(|(_, r)| needle.is_empty() || r.address.to_lowercase().contains(&needle))
                .map(|(i, _)| i)
                .collect(),
            None => Vec::new(),
        };
        self.selected = self.selected.min(self.visible.len().saturating_sub(1));
    }

    pub fn update(&mut self, action: Action, ctx: &mut PaneCtx) -> Vec<Command> {
        if matches!(self.rows, Loadable::Loading) && action == Action::Cancel {
            return vec![Command::CancelRecipients {
                generation: self.generation,
            }];
        }
        if self.rows.ready().is_none() {
            return Vec::new();
        }
        let len = self.visible.len();
        let sel = self.selected;
        if let Some(at) = list_move(&action, sel, len) {
            self.selected = at;
            return Vec::new();
        }
        let mut selection_changed = false;
        match action {
            Action::ToggleInclude => {
                let Some(&i) = self.visible.get(sel) else {
                    return Vec::new();
                };
                let row = self.rows.ready().and_then(|rows| rows.get(i));
                if let Some(why) = row.and_then(|r| r.state.why_not_tickable()) {
                    let address = row.map(|r| r.address.as_str()).unwrap_or_default();
                    ctx.set_status(format!("{address} cannot be ticked: {why}"), true);
                    return Vec::new();
                }
                let on = self.included.get(i).copied().unwrap_or(false);
                self.set_included(i, !on);
                selection_changed = true;
            }
            Action::SelectAll | Action::SelectNone | Action::InvertSelection => {
                for i in self.visible.clone() {
                    let on = self.included.get(i).copied().unwrap_or(false);
                    let on = match action {
                        Action::SelectAll => true,
                        Action::SelectNone => false,
                        _ => !on,
                    };
                    self.set_included(i, on);
                }
                selection_changed = true;
            }
            Action::DepthIncrease | Action::DepthDecrease => {
                let depth = if action == Action::DepthIncrease {
                    (self.depth + 1).min(MAX_DEPTH)
                } else {
                    self.depth.saturating_sub(1)
                };
                if depth != self.depth {
                    self.depth = depth;
                    return self.send_depth_preview();
                }
                // A key that cannot move the depth says why instead of doing nothing.
                if action == Action::DepthIncrease {
                    ctx.set_status(format!("depth is at its maximum ({MAX_DEPTH})"), false);
                } else {
                    ctx.set_status("depth is at its minimum (0: this message only)", false);
                }
            }
            Action::NextRetractAction | Action::PrevRetractAction => {
                let n = SELECTOR_ACTIONS.len();
                let step = if action == Action::NextRetractAction {
                    1
                } else {
                    n - 1
                };
                let i = SELECTOR_ACTIONS
                    .iter()
                    .position(|a| *a == self.action)
                    .map(|i| (i + step) % n)
                    .unwrap_or(0);
                self.action = SELECTOR_ACTIONS[i];
            }
            Action::Filter => {
                ctx.open_filter(&self.filter);
            }
            Action::PreviewPlan | Action::Submit => {
                ctx.then = Some(Then::BuildPlan);
                return Vec::new();
            }
            _ => {}
        }
        if selection_changed {
            self.preview_debounce = Some(DEBOUNCE_TICKS);
        }
        Vec::new()
    }

    /// The recipients of the open messages arrived: rows the operator excluded stay unticked.
    pub fn loaded(&mut self, generation: Generation, rows: Vec<RecipientRow>) -> Vec<Command> {
        if generation != self.generation {
            return Vec::new();
        }
        let excluded = &self.excluded;
        self.included = rows
            .iter()
            .map(|r| r.tickable() && !excluded.contains(&r.address.to_ascii_lowercase()))
            .collect();
        self.rows = Loadable::Ready(rows);
        self.progress = None;
        self.refilter();
        self.send_depth_preview()
    }
}

pub fn hints(app: &App) -> Vec<Action> {
    let r = &app.recipients;
    if r.rows == Loadable::Loading {
        return vec![Action::Cancel];
    }
    let Some(rows) = r.rows.ready() else {
        return if r.message.is_none() {
            vec![Action::ShowSearch]
        } else {
            vec![Action::Refresh]
        };
    };
    let mut hints = Vec::new();
    let on_tickable = r
        .visible
        .get(r.selected)
        .and_then(|&i| rows.get(i))
        .is_some_and(|row| row.tickable());
    if on_tickable {
        hints.push(Action::ToggleInclude);
    }
    if app.included_count() > 0 {
        hints.push(Action::PreviewPlan);
    }
    hints.push(Action::NextRetractAction);
    if r.depth < crate::tui::app::MAX_DEPTH {
        hints.push(Action::DepthIncrease);
    }
    if r.depth > 0 {
        hints.push(Action::DepthDecrease);
    }
    if rows.iter().any(|row| row.tickable()) {
        hints.extend([
            Action::SelectAll,
            Action::SelectNone,
            Action::InvertSelection,
        ]);
    }
    hints.extend([Action::Filter, Action::PrevRetractAction]);
    hints
}

fn action_label(action: RetractAction) -> String {
    match action {
        RetractAction::SoftDelete => "Soft Delete (Microsoft only)".into(),
        a => a.label().into(),
    }
}

// Layout inside the pane:
//
// +-Recipients (2 tenants): "Invoice overdue" from a@evil.example-------------------+
// | Action: [Junk Email]   Depth: 1 (+/-)   Included: 8 of 10, 3 not tickable      |
// | depth 0: 10 copies in 10 mailboxes   +1: 4 copies in 3 mailboxes                |
// | Inc Tenant   Address            State           Folder      Read Last outcome   |
// | [x] contoso  bob@corp.example   mailbox         Inbox       no   -              |
// |  -  contoso  all@corp.example   not_a_mailbox   -           -    -              |
// +---------------------------------------------------------------------------------+
pub fn render(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let r = &app.recipients;
    let tenants: std::collections::BTreeSet<&str> = r
        .rows
        .ready()
        .map(|rows| {
            rows.iter()
                .filter(|row| !row.tenant.is_empty())
                .map(|row| row.tenant.as_str())
                .collect()
        })
        .unwrap_or_default();
    let title = match &r.message {
        Some(m) if tenants.len() > 1 => format!(
            " Recipients ({} tenants): \"{}\" from {} ",
            tenants.len(),
            m.subject,
            m.from
        ),
        Some(m) => format!(" Recipients: \"{}\" from {} ", m.subject, m.from),
        None => " Recipients ".to_string(),
    };
    let block = pane_block(title, app.focus == Pane::Recipients, theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if r.message.is_none() {
        state_message(
            frame,
            inner,
            "No message selected: pick one on the Search pane (1) and press enter",
            theme.muted,
        );
        return;
    }
    let [controls, preview, table_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Fill(1),
    ])
    .areas(inner);
    if r.cancelled && matches!(r.rows, Loadable::NotLoaded) {
        state_message(
            frame,
            table_area,
            "Loading recipients cancelled (esc); ctrl+r loads again",
            theme.muted,
        );
        return;
    }
    if matches!(r.rows, Loadable::Loading) {
        let text = match r.progress {
            Some((done, total, secs)) => format!(
                // The counts and seconds move by themselves: no spinner (it would not fit at 80).
                "Loading recipients... {}/{} mailboxes located, {secs} s (esc cancels)",
                thousands(done),
                thousands(total)
            ),
            None => format!(
                "Loading recipients... (esc cancels) {}",
                spinner(app.spinner)
            ),
        };
        state_message(frame, table_area, &text, theme.muted);
        return;
    }
    let Some(rows) = loadable(frame, table_area, &r.rows, "recipients", theme) else {
        return;
    };
    let included = app.included_count();
    let not_tickable = rows.iter().filter(|row| !row.tickable()).count();
    let action_style = if r.action == RetractAction::HardDelete {
        theme.status_failed
    } else {
        theme.selection
    };
    let mut spans = vec![
        Span::styled("Action: ", theme.header),
        Span::styled(format!("[{}]", action_label(r.action)), action_style),
        Span::raw("  "),
        Span::styled("Depth: ", theme.header),
        Span::styled(format!("{}", r.depth), theme.selection),
        Span::styled(
            if r.depth >= crate::tui::app::MAX_DEPTH {
                " (max)"
            } else {
                ""
            },
            theme.muted,
        ),
        Span::raw("  "),
        Span::styled(
            // Recipients (rows), not copies: the depth line below counts copies.
            format!(
                "Included: {included} of {}, {} not tickable",
                count(
                    (rows.len() - not_tickable) as u64,
                    "recipient",
                    "recipients"
                ),
                thousands(not_tickable as u64)
            ),
            theme.text,
        ),
    ];
    if !r.filter.is_empty() {
        spans.push(Span::styled(
            format!("   Filter: {}", r.filter),
            theme.muted,
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), controls);

    let preview_line = match &r.depth_preview {
        Loadable::NotLoaded | Loadable::Loading => {
            Line::from(Span::styled("counting copies per depth...", theme.muted))
        }
        Loadable::Failed(message) => Line::from(Span::styled(message.clone(), theme.error)),
        Loadable::Ready(per_depth) => {
            let mut spans = Vec::new();
            for d in per_depth {
                if !spans.is_empty() {
                    spans.push(Span::raw("   "));
                }
                // Each deeper level counts what it adds: more copies, and the mailboxes not
                // reached at a shallower depth.
                let text = if d.depth == 0 {
                    format!(
                        "depth 0: {} in {}",
                        count(d.copies, "copy", "copies"),
                        count(d.mailboxes, "mailbox", "mailboxes")
                    )
                } else {
                    format!(
                        "+{}: {} more {}, {} more {}",
                        d.depth,
                        thousands(d.copies),
                        noun(d.copies, "copy", "copies"),
                        thousands(d.mailboxes),
                        noun(d.mailboxes, "mailbox", "mailboxes")
                    )
                };
                spans.push(Span::styled(text, theme.text));
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(preview_line), preview);

    if rows.is_empty() {
        state_message(
            frame,
            table_area,
            "This message has no recipients",
            theme.muted,
        );
        return;
    }
    if r.visible.is_empty() {
        state_message(
            frame,
            table_area,
            "No recipient matches the filter",
            theme.muted,
        );
        return;
    }
    let height = table_area.height.saturating_sub(1) as usize;
    let (offset, end) = visible_window(r.selected, height, r.visible.len());
    let table_rows = r.visible[offset..end].iter().filter_map(|&i| {
        let row = rows.get(i)?;
        let on = r.included.get(i).copied().unwrap_or(false);
        let (last, last_style) = match &row.last_outcome {
            Some(o) => (o.label(), theme.outcome(o)),
            None => ("-".to_string(), theme.muted),
        };
        let (check, text_style) = match (row.tickable(), on) {
            (true, true) => ("[x]", theme.text),
            (true, false) => ("[ ]", theme.text),
            // Not tickable: no box at all, so it never reads as "left out by the operator".
            (false, _) => (" - ", theme.muted),
        };
        Some(
            Row::new(vec![
                Cell::from(check),
                Cell::from(if row.tenant.is_empty() {
                    "-"
                } else {
                    row.tenant.as_str()
                }),
                Cell::from(row.address.as_str()),
                Cell::from(row.state.label()).style(theme.recipient_state(&row.state)),
                Cell::from(
                    row.folder
                        .as_ref()
                        .map(|f| f.label().to_string())
                        .unwrap_or("-".into()),
                ),
                Cell::from(match row.read {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                }),
                Cell::from(last).style(last_style),
            ])
            .style(text_style),
        )
    });
    let header = Row::new([
        "Inc",
        "Tenant",
        "Address",
        "State",
        "Folder",
        "Read",
        "Last outcome",
    ])
    .style(theme.header);
    let wide = table_area.width >= 120;
    // Tenant, state and folder as wide as their widest value (over every row, so they do not
    // jump while scrolling); below 120 columns the state is cut at 14 so the address fits.
    let tenant_width = column_width("Tenant", rows.iter().map(|r| r.tenant.as_str()), 6)
        .min(if wide { 16 } else { 8 });
    let states: Vec<String> = rows.iter().map(|r| r.state.label()).collect();
    let state_width =
        column_width("State", states.iter().map(String::as_str), 7).min(if wide { 30 } else { 14 });
    let folders: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.folder.as_ref().map(|f| f.label()))
        .collect();
    let folder_width = column_width("Folder", folders.iter().copied(), 6).min(16);
    // The last outcome as wide as the widest (`failed: not_authorized`), so the address takes
    // the rest.
    let outcomes: Vec<String> = rows
        .iter()
        .filter_map(|r| r.last_outcome.as_ref().map(|o| o.label()))
        .collect();
    let outcome_width =
        column_width("Last outcome", outcomes.iter().map(String::as_str), 12).min(30);
    let table = Table::new(
        table_rows,
        [
            Constraint::Length(3),
            Constraint::Length(tenant_width),
            Constraint::Fill(1),
            Constraint::Length(state_width),
            Constraint::Length(folder_width),
            Constraint::Length(4),
            Constraint::Length(outcome_width),
        ],
    )
    .header(header)
    .style(theme.text)
    .row_highlight_style(theme.selection);
    let mut state = TableState::default().with_selected(Some(r.selected.saturating_sub(offset)));
    frame.render_stateful_widget(table, table_area, &mut state);
    scroll_indicator(frame, area, (offset, end), r.visible.len(), theme);
}
