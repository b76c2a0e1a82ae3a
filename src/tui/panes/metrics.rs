//! Live metrics (DESIGN §2): total retractions, success %, fail % by reason, unread / read,
//! auto / manual, dwell time, and a sparkline of retractions over time.

use crate::engine::metrics::RetractedMessage;
use crate::engine::view::{MetricsSnapshot, MetricsWindow};
use crate::tui::action::Action;
use crate::tui::app::App;
use crate::tui::theme::Theme;
use crate::tui::ui::{
    ASCII_BORDER, duration, loadable, pane_block, state_message, thousands, visible_window,
};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState};

pub fn hints(_app: &App) -> Vec<Action> {
    vec![Action::NextWindow, Action::ViewDetails, Action::Refresh]
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
            render_details(frame, body, messages, m.details_selected, m.window, theme);
        }
        return;
    }
    let Some(s) = loadable(frame, body, &m.snapshot, "metrics", theme) else {
        return;
    };
    if s.total == 0 {
        crate::tui::ui::state_message(
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
    let block = Block::default()
        .borders(Borders::ALL)
        .border_set(ASCII_BORDER)
        .border_style(theme.border)
        .title(
            Line::from(format!(
                "Retractions over time (per {})",
                duration(s.bucket_secs)
            ))
            .style(theme.title),
        );
    let spark_inner = block.inner(spark);
    frame.render_widget(block, spark);
    // Only the newest buckets that fit are drawn.
    let width = spark_inner.width as usize;
    let data = &s.series[s.series.len().saturating_sub(width)..];
    frame.render_widget(
        Sparkline::default()
            .data(data)
            .bar_set(ASCII_BARS)
            .style(Style::default().patch(theme.sparkline)),
        spark_inner,
    );
}

// Details (`d`), instead of the cards:
//
// | 3 messages retracted in the last 24h (by retraction time)   d: back  enter: search it |
// | Retracted         Copies ok  Failed  Auto  Manual  Tenants          Subject / Message-ID |
// | 11-20 14:02             134       4     0     138  contoso,fabrikam Password expiry ...  |
fn render_details(
    frame: &mut Frame,
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
                    "{} messages, {} copies retracted in the last {} (by retraction time)",
                    thousands(messages.len() as u64),
                    thousands(copies),
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
}
