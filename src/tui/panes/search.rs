//! Message search: the query box (trace query language) and the results table.

use super::{PaneCtx, Then};
use crate::engine::Command;
use crate::engine::event::QueryErrorView;
use crate::engine::view::{Generation, SearchRow};
use crate::tui::action::Action;
use crate::tui::app::{App, DEBOUNCE_TICKS, Loadable, Pane, SEARCH_LIMIT};
use crate::tui::input::TextInput;
use crate::tui::theme::Theme;
use crate::tui::widgets::{
    column_width, count, debounce_due, list_move, pane_block, scroll_indicator, spinner,
    state_message, thousands, visible_window,
};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

/// What the keys can do here now, most useful first (the last ones give way on a narrow
/// terminal): open and move only with results on screen.
/// One displayed row of the results table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultRow {
    /// Index into the result rows.
    Message(usize),
    /// A campaign (grouping on): its first message, message count and copies.
    Campaign {
        first: usize,
        messages: usize,
        copies: u64,
        /// Tenants holding its messages (one campaign often lands in two).
        tenants: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchResults {
    pub rows: Vec<SearchRow>,
    pub total: u64,
    /// What the table shows (messages, or campaigns when grouped), computed once per result.
    pub view: Vec<ResultRow>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchState {
    pub query: TextInput,
    pub editing: bool,
    /// Generation of the newest search sent.
    pub generation: Generation,
    /// Ticks left before the typed query is sent.
    pub debounce: Option<u8>,
    pub results: Loadable<SearchResults>,
    pub error: Option<QueryErrorView>,
    pub selected: usize,
    pub grouped: bool,
    /// The message count of the results a running search replaces: the title keeps it (with
    /// a spinner) instead of dropping to no count while the search runs.
    pub previous_count: Option<usize>,
}

impl SearchState {
    pub fn send(&mut self) -> Command {
        self.generation += 1;
        self.debounce = None;
        if let Some(results) = self.results.ready() {
            self.previous_count = Some(results.view.len());
        }
        self.results = Loadable::Loading;
        Command::Search {
            generation: self.generation,
            query: self.query.value().to_string(),
            limit: SEARCH_LIMIT,
        }
    }

    /// One tick: the typed query is sent once typing has paused.
    pub fn tick(&mut self) -> Option<Command> {
        debounce_due(&mut self.debounce).then(|| self.send())
    }

    /// An action on the Search pane: typing in the query box, or moving over the results.
    pub fn update(&mut self, action: Action, ctx: &mut PaneCtx) -> Vec<Command> {
        if self.editing {
            match action {
                // The edit is made in the guard; only a changed text searches again.
                Action::Edit(edit) if self.query.edit(edit) => {
                    self.debounce = Some(DEBOUNCE_TICKS);
                }
                Action::Submit => {
                    self.editing = false;
                    return vec![self.send()];
                }
                // The first esc clears the query (the results follow, as when typing), the
                // second leaves the box.
                Action::Cancel if !self.query.is_empty() => {
                    self.query.clear();
                    self.debounce = Some(DEBOUNCE_TICKS);
                }
                Action::Cancel => self.editing = false,
                Action::MoveDown => self.editing = false,
                _ => {}
            }
            return Vec::new();
        }
        let len = self.results.ready().map(|r| r.view.len()).unwrap_or(0);
        self.move_in_results(action, len, ctx);
        Vec::new()
    }

    fn move_in_results(&mut self, action: Action, len: usize, ctx: &mut PaneCtx) {
        if let Some(at) = list_move(&action, self.selected, len) {
            self.selected = at;
            return;
        }
        match action {
            Action::Filter => self.editing = true,
            Action::ToggleGrouping => {
                self.grouped = !self.grouped;
                let grouped = self.grouped;
                if let Loadable::Ready(results) = &mut self.results {
                    results.view = build_view(&results.rows, grouped);
                }
                self.selected = 0;
            }
            Action::Submit => ctx.then = Some(Then::OpenMessage),
            _ => {}
        }
    }

    /// The search row under the cursor (the first message of a campaign when grouped).
    pub fn selected_row(&self) -> Option<&SearchRow> {
        let results = self.results.ready()?;
        let index = match results.view.get(self.selected)? {
            ResultRow::Message(i) => *i,
            ResultRow::Campaign { first, .. } => *first,
        };
        results.rows.get(index)
    }

    /// The Message-IDs behind the search row under the cursor: its message, or every message
    /// of its campaign when grouped.
    pub fn selected_message_ids(&self) -> Vec<String> {
        let Some(results) = self.results.ready() else {
            return Vec::new();
        };
        let mut ids: Vec<String> = match results.view.get(self.selected) {
            Some(ResultRow::Message(i)) => results
                .rows
                .get(*i)
                .map(|r| vec![r.message.message_id.clone()])
                .unwrap_or_default(),
            Some(ResultRow::Campaign { first, .. }) => {
                let key = results.rows.get(*first).and_then(|r| r.campaign);
                results
                    .rows
                    .iter()
                    .filter(|r| r.campaign.is_some() && r.campaign == key)
                    .map(|r| r.message.message_id.clone())
                    .collect()
            }
            None => Vec::new(),
        };
        ids.sort();
        ids.dedup();
        ids
    }

    pub fn completed(&mut self, generation: Generation, rows: Vec<SearchRow>, total: u64) {
        if generation != self.generation {
            return;
        }
        let view = build_view(&rows, self.grouped);
        self.error = None;
        self.selected = self.selected.min(view.len().saturating_sub(1));
        self.results = Loadable::Ready(SearchResults { rows, total, view });
    }

    pub fn failed(&mut self, generation: Generation, error: QueryErrorView) {
        if generation != self.generation {
            return;
        }
        self.results = Loadable::Failed(error.message.clone());
        self.error = Some(error);
    }
}

/// Builds the displayed rows: one per message, or one per campaign (messages without a campaign
/// stay single) in first-seen order.
pub fn build_view(rows: &[SearchRow], grouped: bool) -> Vec<ResultRow> {
    if !grouped {
        return (0..rows.len()).map(ResultRow::Message).collect();
    }
    let mut view: Vec<ResultRow> = Vec::new();
    // Campaign key -> (its row in `view`, the tenants seen so far).
    let mut campaign_index: std::collections::HashMap<u64, (usize, Vec<&str>)> =
        std::collections::HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        match row.campaign {
            Some(key) => match campaign_index.get_mut(&key) {
                Some((at, seen)) => {
                    if !seen.contains(&row.message.tenant.as_str()) {
                        seen.push(&row.message.tenant);
                    }
                    if let Some(ResultRow::Campaign {
                        messages,
                        copies,
                        tenants,
                        ..
                    }) = view.get_mut(*at)
                    {
                        *messages += 1;
                        *copies += row.copies;
                        *tenants = seen.len();
                    }
                }
                None => {
                    campaign_index.insert(key, (view.len(), vec![&row.message.tenant]));
                    view.push(ResultRow::Campaign {
                        first: i,
                        messages: 1,
                        copies: row.copies,
                        tenants: 1,
                    });
                }
            },
            None => view.push(ResultRow::Message(i)),
        }
    }
    view
}

pub fn hints(app: &App) -> Vec<Action> {
    if app.search.editing {
        return vec![Action::Submit, Action::Cancel, Action::NextPane];
    }
    let rows = app.search.results.ready().map_or(0, |r| r.view.len());
    let mut hints = Vec::new();
    if rows > 0 {
        hints.push(Action::Submit);
    }
    hints.push(Action::Filter);
    if rows > 1 {
        hints.push(Action::MoveDown);
    }
    if rows > 0 {
        hints.push(Action::ToggleGrouping);
    }
    hints.extend([Action::CommandLine, Action::Quit]);
    hints
}

const QUERY_LEAD: &str = "Query: ";

/// The query language for the help overlay: each field (every one in
/// `trace::query::FIELDS`) and the operators, with an example.
pub const QUERY_HELP: &[(&str, &str)] = &[
    ("from:evil.example", "sender address, domain or word"),
    ("to:bob@corp.example", "a recipient"),
    ("subject:invoice", "words in the subject"),
    ("msgid:<id@host>", "one Message-ID"),
    ("domain:evil.example", "sender or link domain"),
    ("url:bit.ly/x", "a link in the body"),
    ("sha256:<64 hex>", "an attachment hash"),
    (
        "disposition:malicious",
        "also suspicious spoof spam bulk none any",
    ),
    ("tenant:contoso", "one configured tenant"),
    ("since:24h", "30m 24h 7d 2w or 2026-11-20[T08:00]"),
    ("until:2026-11-20", "the same forms as since"),
    ("retracted:no", "yes or no"),
    (
        "invoice \"wire transfer\"",
        "words / phrases anywhere (and)",
    ),
    ("-from:corp.example", "not"),
    ("a OR (b c)", "either; parentheses group"),
];

/// The query line: a label, then the input (cursor on it while typing); the column of a parse
/// error (1-based, `len + 1` = end) is underlined. Returns the input's horizontal scroll.
fn render_query(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) -> usize {
    let [lead, field] = Layout::horizontal([
        Constraint::Length(QUERY_LEAD.len() as u16),
        Constraint::Fill(1),
    ])
    .areas(area);
    frame.render_widget(Span::styled(QUERY_LEAD, theme.header), lead);
    let query = &app.search.query;
    if query.is_empty() && !app.search.editing {
        frame.render_widget(
            Span::styled("(all messages; / to type a query)", theme.muted),
            field,
        );
        return 0;
    }
    let error_col = app.search.error.as_ref().map(|e| e.column);
    let mut spans: Vec<Span> = query
        .value()
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let style = if error_col == Some(i + 1) {
                theme.input_error
            } else {
                theme.input
            };
            Span::styled(c.to_string(), style)
        })
        .collect();
    if error_col.is_some_and(|c| c > query.char_count()) {
        spans.push(Span::styled("_", theme.input_error));
    }
    query.render(frame, field, Line::from(spans), app.search.editing);
    query.scroll(field.width)
}

/// Below this width the Received column drops the year so the Tenant column fits.
const WIDE: u16 = 100;

fn message_cells<'a>(row: &'a SearchRow, wide: bool, theme: &Theme) -> Vec<Cell<'a>> {
    let received = if wide {
        "%Y-%m-%d %H:%M"
    } else {
        "%m-%d %H:%M"
    };
    vec![
        Cell::from(row.received.format(received).to_string()).style(theme.muted),
        Cell::from(row.message.tenant.as_str()),
        Cell::from(&*row.from),
        Cell::from(&*row.subject),
        Cell::from(format!("{:>6}", thousands(row.copies))),
        Cell::from(row.disposition.map(|d| d.as_str()).unwrap_or("-"))
            .style(theme.disposition(row.disposition)),
        Cell::from(row.retraction.label()).style(theme.retraction(row.retraction)),
    ]
}

// Layout inside the pane:
//
// +-Search (1,234 of 5,000 messages)------------------------------------------+
// | Query: from:evil.example since:24h                                        |
// |        ^ col 12: expected a value                     (only on error)     |
// | Received          Tenant   From        Subject       Copies Disposit. State |
// | 2026-11-22 08:41  contoso  a@evil.ex.. Invoice overdue   42 malicious  -     |
// (below 100 columns Received drops the year: `11-22 08:41`)
// +---------------------------------------------------------------------------+
pub fn render(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let title = match &app.search.results {
        Loadable::Ready(r) => {
            // Say what is counted: rows shown, messages loaded, messages matching.
            let messages = if r.total > r.rows.len() as u64 {
                format!(
                    "first {} of {} matching messages",
                    thousands(r.rows.len() as u64),
                    thousands(r.total)
                )
            } else {
                count(r.rows.len() as u64, "message", "messages")
            };
            if app.search.grouped {
                format!(
                    " Search ({} grouped from {messages}) ",
                    count(r.view.len() as u64, "row", "rows")
                )
            } else {
                format!(" Search ({messages}) ")
            }
        }
        // The count of the results on their way out stays, with the spinner beside it.
        Loadable::Loading => match app.search.previous_count {
            Some(n) => format!(
                " Search ({}; searching {}) ",
                count(n as u64, "row", "rows"),
                spinner(app.spinner)
            ),
            None => format!(" Search (searching {}) ", spinner(app.spinner)),
        },
        _ => " Search ".to_string(),
    };
    let block = pane_block(title, app.focus == Pane::Search, theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let error_height = u16::from(app.search.error.is_some());
    let [query_area, error_area, table_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(error_height),
        Constraint::Fill(1),
    ])
    .areas(inner);
    let scroll = render_query(frame, query_area, app, theme);
    if let Some(error) = &app.search.error {
        let pad =
            " ".repeat((QUERY_LEAD.len() + error.column.saturating_sub(1)).saturating_sub(scroll));
        let text = format!("{pad}^ col {}: {}", error.column, error.message);
        frame.render_widget(
            Paragraph::new(Line::from(Span::styled(text, theme.error))),
            error_area,
        );
    }
    match &app.search.results {
        Loadable::NotLoaded => state_message(
            frame,
            table_area,
            "Type a query with / (e.g. from:evil.example since:24h)",
            theme.muted,
        ),
        Loadable::Loading => state_message(
            frame,
            table_area,
            &format!("Searching... {}", spinner(app.spinner)),
            theme.muted,
        ),
        Loadable::Failed(message) => {
            if app.search.error.is_none() {
                state_message(
                    frame,
                    table_area,
                    &format!("Search failed: {message}"),
                    theme.error,
                );
            } else {
                state_message(frame, table_area, "Fix the query above", theme.muted);
            }
        }
        Loadable::Ready(results) if results.view.is_empty() => state_message(
            frame,
            table_area,
            "No messages match this query",
            theme.muted,
        ),
        Loadable::Ready(results) => {
            // Header takes one line; only the visible window becomes rows.
            let height = table_area.height.saturating_sub(1) as usize;
            let (offset, end) = visible_window(app.search.selected, height, results.view.len());
            let wide = table_area.width >= WIDE;
            // The Tenant column is as wide as its widest name (over every row, so it does not
            // jump while scrolling), between 6 and 16 columns.
            let tenant_width = column_width(
                "Tenant",
                results.rows.iter().map(|r| r.message.tenant.as_str()),
                6,
            )
            .min(16)
            .max(
                if results
                    .view
                    .iter()
                    .any(|v| matches!(v, ResultRow::Campaign { tenants, .. } if *tenants > 1))
                {
                    9
                } else {
                    6
                },
            );
            let rows = results.view[offset..end]
                .iter()
                .filter_map(|item| match *item {
                    ResultRow::Message(i) => results
                        .rows
                        .get(i)
                        .map(|r| Row::new(message_cells(r, wide, theme))),
                    ResultRow::Campaign {
                        first,
                        messages,
                        copies,
                        tenants,
                    } => results.rows.get(first).map(|r| {
                        let mut cells = message_cells(r, wide, theme);
                        if tenants > 1 {
                            cells[1] = Cell::from(format!("{tenants} tenants"));
                        }
                        cells[3] = Cell::from(format!(
                            "[{}] {}",
                            count(messages as u64, "msg", "msgs"),
                            r.subject
                        ));
                        cells[4] = Cell::from(format!("{:>6}", thousands(copies)));
                        Row::new(cells)
                    }),
                });
            let header = Row::new([
                "Received",
                "Tenant",
                "From",
                "Subject",
                "Copies",
                "Disposition",
                "State",
            ])
            .style(theme.header);
            let table = Table::new(
                rows,
                [
                    Constraint::Length(if wide { 16 } else { 11 }),
                    Constraint::Length(tenant_width),
                    Constraint::Fill(2),
                    Constraint::Fill(3),
                    Constraint::Length(6),
                    Constraint::Length(11),
                    Constraint::Length(9),
                ],
            )
            .header(header)
            .style(theme.text)
            .row_highlight_style(if app.search.editing {
                Style::default()
            } else {
                theme.selection
            });
            let mut state = TableState::default().with_selected(Some(app.search.selected - offset));
            frame.render_stateful_widget(table, table_area, &mut state);
            scroll_indicator(frame, area, (offset, end), results.view.len(), theme);
        }
    }
}
