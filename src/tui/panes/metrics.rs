//! Live metrics (DESIGN §2): total retractions, success %, fail % by reason, unread / read,
//! auto / manual, dwell time, and a sparkline of retractions over time.

use super::{PaneCtx, Then};
use crate::engine::Command;
use crate::engine::metrics::RetractedMessage;
use crate::engine::view::{MetricsSnapshot, MetricsWindow};
use crate::tui::action::Action;
use crate::tui::app::{App, Loadable};
use crate::tui::theme::Theme;
use crate::tui::widgets::{
    ASCII_BORDER, PAGE, count, duration, loadable, pane_block, scroll_indicator, state_message,
    step, thousands, visible_window,
};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState};

/// What the keys can do here now: in the details, open a message and go back.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsState {
    pub window: MetricsWindow,
    pub snapshot: Loadable<MetricsSnapshot>,
    /// `d`: the messages retracted in the window (by retraction time), shown instead of the
    /// cards until `d` again.
    pub details: Option<Loadable<Vec<RetractedMessage>>>,
    pub details_selected: usize,
}

impl Default for MetricsState {
    fn default() -> MetricsState {
        MetricsState {
            window: MetricsWindow::Day,
            snapshot: Loadable::NotLoaded,
            details: None,
            details_selected: 0,
        }
    }
}

impl MetricsState {
    /// Loads the snapshot of the window (again).
    pub fn reload(&mut self) -> Vec<Command> {
        self.snapshot = Loadable::Loading;
        vec![Command::LoadMetrics {
            window: self.window,
        }]
    }

    pub fn update(&mut self, action: Action, ctx: &mut PaneCtx) -> Vec<Command> {
        let len = match &self.details {
            Some(Loadable::Ready(m)) => m.len(),
            _ => 0,
        };
        let sel = self.details_selected;
        match action {
            Action::NextWindow | Action::MoveRight => {
                self.window = self.window.next();
                let mut commands = self.reload();
                if self.details.is_some() {
                    commands.extend(self.load_details());
                }
                commands
            }
            Action::ViewDetails if self.details.is_some() => {
                self.details = None;
                Vec::new()
            }
            Action::ViewDetails => self.load_details(),
            Action::Cancel => {
                self.details = None;
                Vec::new()
            }
            Action::MoveUp => {
                self.details_selected = step(sel, len, -1);
                Vec::new()
            }
            Action::MoveDown => {
                self.details_selected = step(sel, len, 1);
                Vec::new()
            }
            Action::PageUp => {
                self.details_selected = step(sel, len, -PAGE);
                Vec::new()
            }
            Action::PageDown => {
                self.details_selected = step(sel, len, PAGE);
                Vec::new()
            }
            // Enter on a listed message: find it in the trace (its copies, its recipients).
            Action::Submit => match &self.details {
                Some(Loadable::Ready(messages)) => {
                    if let Some(m) = messages.get(sel) {
                        ctx.then = Some(Then::Search(format!("msgid:{}", m.message_id)));
                    }
                    Vec::new()
                }
                Some(_) => Vec::new(),
                None => self.load_details(),
            },
            _ => Vec::new(),
        }
    }

    fn load_details(&mut self) -> Vec<Command> {
        if !matches!(self.details, Some(Loadable::Ready(_))) {
            self.details = Some(Loadable::Loading);
        }
        vec![Command::LoadMetricsDetails {
            window: self.window,
        }]
    }

    pub fn loaded(&mut self, snapshot: MetricsSnapshot) {
        if snapshot.window == self.window {
            self.snapshot = Loadable::Ready(snapshot);
        }
    }

    pub fn details_loaded(&mut self, window: MetricsWindow, messages: Vec<RetractedMessage>) {
        if window == self.window && self.details.is_some() {
            self.details_selected = self.details_selected.min(messages.len().saturating_sub(1));
            self.details = Some(Loadable::Ready(messages));
        }
    }
}

pub fn hints(app: &App) -> Vec<Action> {
    match &app.metrics.details {
        Some(Loadable::Ready(messages)) if !messages.is_empty() => vec![
            Action::Submit,
            Action::ViewDetails,
            Action::MoveDown,
            Action::NextWindow,
        ],
        Some(_) => vec![Action::ViewDetails, Action::NextWindow],
        None => vec![Action::NextWindow, Action::ViewDetails, Action::Refresh],
    }
}

/// ASCII bars for the sparkline (fancy block glyphs are opt-in).
const ASCII_BARS: symbols::bar::Set = symbols::bar::Set {
    full: "#",
    seven_eighths: "#",
    three_quarters: "*",
    five_eighths: "*",
    half: "+",
    three_eighths: "=",
    one_quarter: "-",
    one_eighth: ".",
    empty: " ",
};

fn card<'a>(frame: &mut Frame, area: Rect, title: &'a str, lines: Vec<Line<'a>>, theme: &Theme) {
    let block = Block::default()
        .borders(Borders::ALL)
        .border_set(ASCII_BORDER)
        .border_style(theme.border)
        .title(Line::from(title).style(theme.title));
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn pct(part: u64, total: u64) -> String {
    format!("{:.1}%", MetricsSnapshot::pct(part, total))
}

// Layout inside the pane:
//
// +-Metrics: last 24h-----------------------------------------------------------+
// |  1h  [24h]  7d  30d                                                          |
// | +Total------+ +Success---+ +Failed-----+ +Read state----+ +Trigger------+   |
// | | 1,234     | | 95.1%    | | 4.9%      | | unread 80.0% | | auto 60.0%   |   |
// | |           | | 1,174    | | 60        | | read 20.0%   | | manual 40.0% |   |
// | +-----------+ +----------+ +-----------+ +--------------+ +--------------+   |
// | Failed by reason: already_gone 2.1%  not_authorized 1.5%  ...                |
// | Dwell time (delivered -> retracted): p50 4m 10s   p95 1h 3m                  |
// | +Retractions over time--------------------------------------------------+    |
// | |            .-+*#                                                     |    |
// | +-----------------------------------------------------------------------+    |
// +-----------------------------------------------------------------------------+
pub fn render(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let m = &app.metrics;
    let block = pane_block(
        format!(" Metrics: last {} ", m.window.as_str()),
        true,
        theme,
    );
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [tabs, cards, reasons, dwell, spark] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(4),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Fill(1),
    ])
    .areas(inner);
    let mut tab_spans = Vec::new();
    for w in MetricsWindow::ALL {
        let style = if w == m.window {
            theme.tab_active
        } else {
            theme.tab_inactive
        };
        tab_spans.push(Span::raw(" "));
        tab_spans.push(Span::styled(format!(" {} ", w.as_str()), style));
    }
    frame.render_widget(Paragraph::new(Line::from(tab_spans)), tabs);
    let body = Rect::new(
        inner.x,
        cards.y,
        inner.width,
        inner.height.saturating_sub(1),
    );
    if let Some(details) = &m.details {
        if let Some(messages) = loadable(frame, body, details, "retracted messages", theme) {
            render_details(
                frame,
                area,
                body,
                messages,
                m.details_selected,
                m.window,
                theme,
            );
        }
        return;
    }
    let Some(s) = loadable(frame, body, &m.snapshot, "metrics", theme) else {
        return;
    };
    if s.total == 0 {
        crate::tui::widgets::state_message(
            frame,
            body,
            &format!("No retractions in the last {}", s.window.as_str()),
            theme.muted,
        );
        return;
    }
    let failed = s.failed();
    let card_areas: [Rect; 5] = Layout::horizontal([Constraint::Fill(1); 5]).areas(cards);
    card(
        frame,
        card_areas[0],
        "Total",
        vec![Line::from(Span::styled(thousands(s.total), theme.header))],
        theme,
    );
    card(
        frame,
        card_areas[1],
        "Success",
        vec![
            Line::from(Span::styled(
                pct(s.succeeded, s.total),
                theme.status_succeeded,
            )),
            Line::from(thousands(s.succeeded)),
        ],
        theme,
    );
    card(
        frame,
        card_areas[2],
        "Failed",
        vec![
            Line::from(Span::styled(
                pct(failed, s.total),
                if failed > 0 {
                    theme.status_failed
                } else {
                    theme.text
                },
            )),
            Line::from(thousands(failed)),
        ],
        theme,
    );
    let read_total = s.unread + s.read;
    card(
        frame,
        card_areas[3],
        "Read state",
        vec![
            Line::from(format!("unread {}", pct(s.unread, read_total))),
            Line::from(format!("read {}", pct(s.read, read_total))),
        ],
        theme,
    );
    card(
        frame,
        card_areas[4],
        "Trigger",
        vec![
            Line::from(format!("auto {}", pct(s.auto, s.total))),
            Line::from(format!("manual {}", pct(s.manual, s.total))),
        ],
        theme,
    );
    let mut reason_spans = vec![Span::styled("Failed by reason: ", theme.header)];
    if s.failed_by_reason.is_empty() {
        reason_spans.push(Span::styled("none", theme.muted));
    }
    for (reason, n) in &s.failed_by_reason {
        reason_spans.push(Span::styled(
            format!("{} {}  ", reason.as_str(), pct(*n, s.total)),
            theme.status_failed,
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(reason_spans)), reasons);
    let fmt = |v: Option<u64>| v.map(duration).unwrap_or_else(|| "-".into());
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("Dwell time (delivered -> retracted): ", theme.header),
            Span::raw(format!(
                "p50 {}   p95 {}",
                fmt(s.dwell_p50_secs),
                fmt(s.dwell_p95_secs)
            )),
        ])),
        dwell,
    );
    render_chart(frame, spark, s, theme);
}

/// `hour`, `30 minutes`, `day`: the span of one bucket, for the chart title.
fn bucket_label(secs: u64) -> String {
    match secs {
        60 => "minute".into(),
        3600 => "hour".into(),
        86_400 => "day".into(),
        s if s.is_multiple_of(86_400) => format!("{} days", s / 86_400),
        s if s.is_multiple_of(3600) => format!("{} hours", s / 3600),
        s if s.is_multiple_of(60) => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// An age on the time axis: `-24h`, `-30m`, `-7d`; 0 is `now`.
fn age_label(secs: u64) -> String {
    match secs {
        0 => "now".into(),
        s if s >= 2 * 86_400 && s.is_multiple_of(86_400) => format!("-{}d", s / 86_400),
        s if s >= 3600 => format!("-{}h", s / 3600),
        s => format!("-{}m", s / 60),
    }
}

// The chart (the bars stretched over the width, newest at the right):
//
// +Retractions per 30 minutes, last 24h------------------------------------------+
// | 520|          .-+*#                 .-+*#                                    |
// |    |      .-+*#####             .-+*#####                                    |
// |   0|_________________________________________________________________________|
// |     -24h            -18h            -12h             -6h                 now |
// +------------------------------------------------------------------------------+
fn render_chart(frame: &mut Frame, area: Rect, s: &MetricsSnapshot, theme: &Theme) {
    let block = Block::default()
        .borders(Borders::ALL)
        .border_set(ASCII_BORDER)
        .border_style(theme.border)
        .title(
            Line::from(format!(
                "Retractions per {}, last {}",
                bucket_label(s.bucket_secs),
                s.window.as_str()
            ))
            .style(theme.title),
        );
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height < 3 || s.series.is_empty() {
        return;
    }
    let peak = s.series.iter().copied().max().unwrap_or(0);
    // The value axis: the peak at the top, 0 at the bottom, then `|`.
    let gutter = thousands(peak).len().max(1) as u16 + 1;
    let [axis, bars_and_time] =
        Layout::horizontal([Constraint::Length(gutter), Constraint::Fill(1)]).areas(inner);
    let [bars, time] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(bars_and_time);
    let mut axis_lines = vec![Line::from(format!("{}|", thousands(peak))).right_aligned()];
    axis_lines.extend(
        (2..bars.height).map(|_| Line::from(Span::styled("|", theme.muted)).right_aligned()),
    );
    axis_lines.push(Line::from("0|").right_aligned());
    frame.render_widget(Paragraph::new(axis_lines).style(theme.muted), axis);
    // Each column shows the bucket under it: the buckets are stretched over the width, or,
    // when there are more buckets than columns, the newest that fit are drawn.
    // Every bucket gets the same whole number of columns (so equal spans look equal).
    let shown = &s.series[s.series.len().saturating_sub(bars.width as usize)..];
    let per = (bars.width as usize / shown.len()).max(1);
    let width = shown.len() * per;
    let columns: Vec<u64> = (0..width).map(|x| shown[x / per]).collect();
    frame.render_widget(
        Sparkline::default()
            .data(&columns)
            .max(peak.max(1))
            .bar_set(ASCII_BARS)
            .style(Style::default().patch(theme.sparkline)),
        bars,
    );
    // The time axis: the age of the bucket under a label, about every 16 columns, and `now`
    // at the right end.
    let age_at = |x: usize| (shown.len() - x / per) as u64 * s.bucket_secs;
    let mut axis_text = vec![' '; width];
    let now = "now";
    let last_start = width.saturating_sub(now.len());
    let mut x = 0;
    while x < last_start {
        let label = age_label(age_at(x));
        if x + label.len() + 2 > last_start {
            break;
        }
        for (i, c) in label.chars().enumerate() {
            axis_text[x + i] = c;
        }
        x += (label.len() + 2).max(16);
    }
    for (i, c) in now.chars().enumerate() {
        if let Some(slot) = axis_text.get_mut(last_start + i) {
            *slot = c;
        }
    }
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled(
            axis_text.into_iter().collect::<String>(),
            theme.muted,
        ))),
        time,
    );
}

// Details (`d`), instead of the cards:
//
// | 3 messages retracted in the last 24h (by retraction time)   d: back  enter: search it |
// | Retracted         Copies ok  Failed  Auto  Manual  Tenants          Subject / Message-ID |
// | 11-20 14:02             134       4     0     138  contoso,fabrikam Password expiry ...  |
fn render_details(
    frame: &mut Frame,
    pane: Rect,
    area: Rect,
    messages: &[RetractedMessage],
    selected: usize,
    window: MetricsWindow,
    theme: &Theme,
) {
    if messages.is_empty() {
        state_message(
            frame,
            area,
            &format!("No message retracted in the last {}", window.as_str()),
            theme.muted,
        );
        return;
    }
    let [title, table_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
    let copies: u64 = messages.iter().map(|m| m.succeeded + m.failed).sum();
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(
                format!(
                    "{}, {} retracted in the last {} (by retraction time)",
                    count(messages.len() as u64, "message", "messages"),
                    count(copies, "copy", "copies"),
                    window.as_str()
                ),
                theme.header,
            ),
            Span::styled("  d: back  enter: search it", theme.muted),
        ])),
        title,
    );
    let height = table_area.height.saturating_sub(1) as usize;
    let (offset, end) = visible_window(selected, height, messages.len());
    let rows = messages[offset..end].iter().map(|m| {
        let subject = if m.subject.is_empty() {
            m.message_id.as_str()
        } else {
            m.subject.as_str()
        };
        Row::new(vec![
            Cell::from(m.last_retracted.format("%m-%d %H:%M").to_string()).style(theme.muted),
            Cell::from(format!("{:>9}", thousands(m.succeeded))).style(theme.status_succeeded),
            Cell::from(format!("{:>6}", thousands(m.failed))).style(if m.failed > 0 {
                theme.status_failed
            } else {
                theme.text
            }),
            Cell::from(format!("{:>5}", thousands(m.auto))),
            Cell::from(format!("{:>6}", thousands(m.manual))),
            Cell::from(m.tenants.join(",")),
            Cell::from(subject),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(11),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Length(16),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new([
            "Retracted",
            "Copies ok",
            "Failed",
            " Auto",
            "Manual",
            "Tenants",
            "Subject",
        ])
        .style(theme.header),
    )
    .style(theme.text)
    .row_highlight_style(theme.selection);
    let mut state = TableState::default().with_selected(Some(selected.saturating_sub(offset)));
    frame.render_stateful_widget(table, table_area, &mut state);
    scroll_indicator(frame, pane, (offset, end), messages.len(), theme);
}
