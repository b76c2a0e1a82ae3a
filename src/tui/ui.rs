//! Pure rendering: `render(frame, &App, &Theme)` draws the screen from state alone (no I/O, no
//! locks). Each pane lives in `panes/` with its own render function and hints.

use super::action::Action;
use super::app::{App, Loadable, Pane, PromptKind};
use super::keymap::Mode;
use super::panes;
use super::theme::Theme;
use super::widgets::{centered, count, pane_block, scroll_indicator, thousands};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

/// From this width the search results and the checklist are side by side, and the metrics
/// strip shows on every screen.
pub const SIDE_BY_SIDE_WIDTH: u16 = 160;

/// Smallest screen the layout supports.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

/// What an action does in `mode` right now, for the hint bar. The generic description
/// (`Action::describe`) is right for the help overlay, but in the hint bar the key is already
/// shown, so a move action must say what it moves over, and Enter what it does here.
pub fn hint_label(app: &App, mode: Mode, action: &Action) -> &'static str {
    let hard_delete = || {
        app.plan
            .as_ref()
            .and_then(|p| p.summary.ready())
            .is_some_and(|s| s.action == crate::model::RetractAction::HardDelete)
    };
    if let (Mode::Confirm, Some(confirm)) = (mode, &app.confirm) {
        return panes::confirm::hint_label(confirm, action);
    }
    let outcomes = app.jobs.outcomes_focused;
    // Esc clears a non-empty input first, then leaves it.
    let typed = match mode {
        Mode::Plan => app.plan.as_ref().is_some_and(|p| !p.typed.is_empty()),
        Mode::Query => !app.search.query.is_empty(),
        Mode::Prompt => app.prompt.as_ref().is_some_and(|p| !p.text.is_empty()),
        _ => false,
    };
    match (mode, action) {
        (Mode::Plan | Mode::Query | Mode::Prompt, Action::Cancel) if typed => "clear",
        (Mode::Plan, Action::Submit) if hard_delete() => "confirm hard delete",
        (Mode::Plan, Action::Submit) => "apply plan",
        (Mode::Plan, Action::Cancel) => "cancel",
        (Mode::Query, Action::Submit) => "search",
        (Mode::Query, Action::Cancel) => "stop typing",
        (Mode::Query, Action::NextPane) => "next pane",
        (Mode::Prompt, Action::Submit) => "run",
        (Mode::Metrics, Action::Submit) => "search it",
        (Mode::Metrics, Action::ViewDetails) if app.metrics.details.is_some() => "back",
        (Mode::Recipients, Action::Cancel) => "cancel loading",
        (Mode::Tenants, Action::Cancel) => "cancel check",
        (Mode::Recipients, Action::ShowSearch) => "pick a message",
        (Mode::Prompt, Action::Cancel) => "cancel",
        (Mode::Jobs, Action::Submit) => "outcomes",
        (Mode::Jobs, Action::MoveDown | Action::MoveUp) if outcomes => "scroll",
        (Mode::Jobs, Action::Cancel) => "back to jobs",
        (Mode::Jobs, Action::Filter) => "filter",
        (Mode::Jobs, Action::MoveRight) => "next reason",
        (Mode::Policy, Action::MoveDown) => "next row",
        (Mode::Policy, Action::MoveRight) => "next action",
        (_, Action::MoveDown | Action::MoveUp) if app.help => "scroll",
        (_, Action::MoveDown | Action::MoveUp) => "select",
        (_, Action::Cancel) if app.help => "close help",
        _ => action.describe(),
    }
}

/// Hint spans `key label` for actions, from the effective keymap (unbound actions are left out),
/// fitted into `width` columns: hints that do not fit are dropped from the end, except the last
/// one (`? help`, which leads to all the others) which is always kept.
pub fn hint_spans(
    app: &App,
    mode: Mode,
    actions: &[Action],
    theme: &Theme,
    width: usize,
) -> Vec<Span<'static>> {
    let hints: Vec<(String, String)> = actions
        .iter()
        .filter_map(|action| {
            app.keymap
                .first_key(mode, action)
                .map(|key| (key, format!(" {}", hint_label(app, mode, action))))
        })
        .collect();
    let cost = |(key, label): &(String, String)| key.chars().count() + label.chars().count() + 2;
    let reserved = match (hints.last(), actions.last()) {
        (Some(last), Some(Action::Help)) => cost(last),
        _ => 0,
    };
    let mut used = reserved;
    let mut spans = Vec::new();
    for (i, hint) in hints.iter().enumerate() {
        let is_reserved = reserved > 0 && i + 1 == hints.len();
        if !is_reserved {
            if used + cost(hint) > width {
                continue;
            }
            used += cost(hint);
        }
        if !spans.is_empty() {
            spans.push(Span::raw("  "));
        }
        spans.push(Span::styled(hint.0.clone(), theme.hint_key));
        spans.push(Span::styled(hint.1.clone(), theme.hint_text));
    }
    spans
}

// Screen layout:
//
//  clawback  1 Search  2 Recipients  3 Policy  4 Metrics  5 Jobs ...    role responder
// +-Pane title--------------------------------------------------------------------+
// |                                                                               |
// |                     focused pane (panes/*.rs)                                 |
// |                                                                               |
// +-------------------------------------------------------------------------------+
//  key hint  key hint  ? help                                          status text
//
// Overlays (plan confirmation, help) are drawn centred over the body.
//
// From 160 columns (SIDE_BY_SIDE_WIDTH) a metrics strip sits under the tabs on every screen,
// and Search and Recipients share the body:
//
//  clawback  1 Search  2 Recipients ...                                   role responder
//  last 24h: 1,234 retractions, 96.5% ok | job 42 running 503/1,000 50% | throttled 3
// +-Search (60 messages)------------------++-Recipients: "Invoice" from a@evil.example--+
// | results (panes/search.rs)             || checklist (panes/recipients.rs)            |
// +---------------------------------------++--------------------------------------------+
//  key hint  key hint  ? help                                          status text

/// Draws one whole frame.
pub fn render(frame: &mut Frame, app: &App, theme: &Theme) {
    let area = frame.area();
    frame.render_widget(Block::default().style(theme.text), area);
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        render_too_small(frame, area, app, theme);
        return;
    }
    let wide = area.width >= SIDE_BY_SIDE_WIDTH;
    let [header, strip, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(u16::from(wide)),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(frame, header, app, theme);
    if wide {
        render_strip(frame, strip, app, theme);
    }
    match app.focus {
        Pane::Search | Pane::Recipients if wide => {
            let [left, right] =
                Layout::horizontal([Constraint::Percentage(50), Constraint::Fill(1)]).areas(body);
            panes::search::render(frame, left, app, theme);
            panes::recipients::render(frame, right, app, theme);
        }
        Pane::Search => panes::search::render(frame, body, app, theme),
        Pane::Recipients => panes::recipients::render(frame, body, app, theme),
        Pane::Policy => panes::policy::render(frame, body, app, theme),
        Pane::Metrics => panes::metrics::render(frame, body, app, theme),
        Pane::Jobs => panes::jobs::render(frame, body, app, theme),
        Pane::Audit => panes::audit::render(frame, body, app, theme),
        Pane::Tenants => panes::tenants::render(frame, body, app, theme),
    }
    if app.plan.is_some() {
        panes::plan::render(frame, body, app, theme);
    }
    if app.help {
        render_help(frame, body, app, theme);
    }
    if app.confirm.is_some() {
        panes::confirm::render(frame, body, app, theme);
    }
    render_command_list(frame, body, app, theme);
    render_footer(frame, footer, app, theme);
}

/// While `:` is typed: the commands that match, on the row above the command line.
fn render_command_list(frame: &mut Frame, body: Rect, app: &App, theme: &Theme) {
    let Some(prompt) = app
        .prompt
        .as_ref()
        .filter(|p| p.kind == PromptKind::Command)
    else {
        return;
    };
    let matches = super::app::matching_commands(prompt.text.value());
    if matches.is_empty() || body.height == 0 {
        return;
    }
    let mut spans = vec![Span::styled(" tab completes: ", theme.muted)];
    for command in matches {
        spans.push(Span::styled(command.name, theme.hint_key));
        if !command.args.is_empty() {
            spans.push(Span::styled(format!(" {}", command.args), theme.hint_text));
        }
        spans.push(Span::raw("  "));
    }
    let row = Rect::new(body.x, body.bottom() - 1, body.width, 1);
    frame.render_widget(Clear, row);
    frame.render_widget(Paragraph::new(Line::from(spans)).style(theme.overlay), row);
}

/// The live metrics strip: the metrics window's retractions and success, the jobs running
/// (with progress where this console runs them) and throttling.
fn render_strip(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let sep = || Span::styled("  |  ", theme.muted);
    let mut spans = vec![Span::raw(" ")];
    match &app.metrics.snapshot {
        Loadable::Ready(s) => {
            spans.push(Span::styled(
                format!("last {}: ", s.window.as_str()),
                theme.header,
            ));
            spans.push(Span::raw(count(s.total, "retraction", "retractions")));
            if s.total > 0 {
                spans.push(Span::styled(
                    format!(
                        ", {:.1}% ok",
                        crate::engine::view::MetricsSnapshot::pct(s.succeeded, s.total)
                    ),
                    theme.status_succeeded,
                ));
            }
        }
        Loadable::Failed(_) => spans.push(Span::styled("metrics: could not load", theme.error)),
        Loadable::Loading => spans.push(Span::styled("metrics: loading...", theme.muted)),
        Loadable::NotLoaded => spans.push(Span::styled("metrics: -", theme.muted)),
    }
    spans.push(sep());
    let running: Vec<&crate::engine::view::JobView> = app
        .jobs
        .list
        .ready()
        .map(|jobs| {
            jobs.iter()
                .filter(|j| j.state == crate::engine::view::JobPhase::Running)
                .collect()
        })
        .unwrap_or_default();
    let mut throttled = 0;
    if running.is_empty() {
        spans.push(Span::styled("no job running", theme.muted));
    }
    for (i, job) in running.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw(", "));
        }
        let (done, total) = match app.progress_of(&job.id) {
            Some(p) => {
                throttled += p.throttled_waits;
                (p.done, p.done + p.remaining)
            }
            None => (job.succeeded + job.failed() + job.skipped, job.total),
        };
        spans.push(Span::styled(
            format!(
                "job {} running {}/{} {:.0}%",
                job.id,
                thousands(done),
                thousands(total),
                crate::engine::view::MetricsSnapshot::pct(done, total)
            ),
            theme.status_running,
        ));
    }
    spans.push(sep());
    spans.push(Span::styled(
        format!("throttled {throttled}"),
        if throttled > 0 {
            theme.status_warning
        } else {
            theme.muted
        },
    ));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Behind this screen no key acts but quit (and the answer to its question): the operator
/// cannot see what anything else would do.
fn render_too_small(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let quit_key = app
        .keymap
        .first_key(Mode::Global, &Action::Quit)
        .unwrap_or_else(|| "q".into());
    let mut text = vec![
        Line::from(Span::styled(
            "clawback needs a larger terminal",
            theme.error,
        )),
        Line::from(format!(
            "at least {MIN_WIDTH}x{MIN_HEIGHT}; this one is {}x{}",
            area.width, area.height
        )),
        Line::from(format!(
            "resize the window (keys wait until then), or press {quit_key} to quit"
        )),
    ];
    if let Some(confirm @ super::app::Confirm::Quit { .. }) = &app.confirm {
        let (_, lines) = panes::confirm::question(app, confirm);
        text.extend(lines.into_iter().map(Line::from));
        let key = |action: &Action| {
            app.keymap
                .first_key(Mode::Confirm, action)
                .unwrap_or_default()
        };
        text.push(Line::from(Span::styled(
            format!(
                "{} quit anyway, {} stay",
                key(&Action::Confirm),
                key(&Action::Cancel)
            ),
            theme.hint_key,
        )));
    }
    // Rows once wrapped; word wrapping may take a row more than the width alone says.
    let width = area.width.max(1) as usize;
    let rows: usize = text
        .iter()
        .map(|l| match l.width() {
            w if w <= width => 1,
            w => w.div_ceil(width) + 1,
        })
        .sum();
    let height = (rows as u16).min(area.height);
    let y = area.y + area.height.saturating_sub(height) / 2;
    frame.render_widget(
        Paragraph::new(text)
            .centered()
            .wrap(Wrap { trim: true })
            .style(theme.text),
        Rect::new(area.x, y, area.width, height),
    );
}

fn render_header(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let mut spans = vec![Span::styled(" clawback ", theme.title)];
    for (i, pane) in Pane::ALL.iter().enumerate() {
        let style = if *pane == app.focus {
            theme.tab_active
        } else {
            theme.tab_inactive
        };
        spans.push(Span::raw(" "));
        spans.push(Span::styled(format!("{} {}", i + 1, pane.title()), style));
    }
    let tabs_width = Line::from(spans.clone()).width();
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
    let mut right = format!("role {} ", app.role);
    if app.mouse {
        right.insert_str(0, "mouse  ");
    }
    // At 80 columns the tabs take the line; the role is then left out rather than drawn over
    // the last tab.
    if tabs_width + right.len() + 1 > area.width as usize {
        return;
    }
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled(right, theme.muted)).right_aligned()),
        area,
    );
}

/// The focused pane's hints (from the effective keymap), then `? help`.
pub fn footer_hints(app: &App) -> (Mode, Vec<Action>) {
    let mode = app.mode();
    let mut actions = if app.confirm.is_some() {
        panes::confirm::hints(app)
    } else if app.plan.is_some() {
        panes::plan::hints(app)
    } else if app.prompt.is_some() {
        vec![Action::Submit, Action::Cancel]
    } else if app.help {
        vec![Action::Cancel, Action::MoveDown]
    } else {
        match app.focus {
            Pane::Search => panes::search::hints(app),
            Pane::Recipients => panes::recipients::hints(app),
            Pane::Policy => panes::policy::hints(app),
            Pane::Metrics => panes::metrics::hints(app),
            Pane::Jobs => panes::jobs::hints(app),
            Pane::Audit => panes::audit::hints(app),
            Pane::Tenants => panes::tenants::hints(app),
        }
    };
    if app.confirm.is_none() && app.plan.is_none() && app.prompt.is_none() && !app.search.editing {
        actions.push(Action::Help);
    }
    (mode, actions)
}

fn render_footer(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    if let Some(prompt) = &app.prompt {
        let lead = match prompt.kind {
            PromptKind::Command => ":",
            PromptKind::Filter => "/",
        };
        let [lead_area, field] =
            Layout::horizontal([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
        frame.render_widget(Span::styled(lead, theme.hint_key), lead_area);
        let line = Line::from(Span::styled(prompt.text.value(), theme.input));
        prompt.text.render(frame, field, line, true);
        return;
    }
    // The status (at most half the line) is right-aligned; the hints get the rest, so the two
    // never run into each other.
    let status = app.status.as_ref().map(|status| {
        let max = (area.width / 2) as usize;
        let text: String = status.text.chars().take(max).collect();
        (text, status.is_error)
    });
    let status_width = status
        .as_ref()
        .map(|(text, _)| text.chars().count() as u16 + 1)
        .unwrap_or(0)
        .min(area.width);
    let (mode, actions) = footer_hints(app);
    let mut spans = vec![Span::raw(" ")];
    spans.extend(hint_spans(
        app,
        mode,
        &actions,
        theme,
        area.width.saturating_sub(status_width + 2) as usize,
    ));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
    if let Some((text, is_error)) = status {
        let style = if is_error { theme.error } else { theme.muted };
        let rect = Rect::new(
            area.right().saturating_sub(status_width),
            area.y,
            status_width,
            1,
        );
        frame.render_widget(Clear, rect);
        frame.render_widget(
            Paragraph::new(Line::from(Span::styled(format!("{text} "), style))),
            rect,
        );
    }
}

/// The `?` overlay: every binding of the global mode and the focused pane's mode, grouped;
/// the Search help adds the query language, every help the `:` commands and the line-editing
/// keys. A mode without bound keys gets no (empty) section.
pub fn help_lines(app: &App, theme: &Theme) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let pane_mode = app.focus.mode();
    let mut modes = vec![pane_mode];
    if app.focus == Pane::Search {
        modes.push(Mode::Query);
    }
    modes.push(Mode::Global);
    for mode in modes {
        let bindings = app.keymap.bindings(mode);
        if bindings.iter().all(|b| b.keys.is_empty()) {
            continue;
        }
        lines.push(Line::from(Span::styled(
            format!("{} keys", mode.as_str()),
            theme.header,
        )));
        let pairs: Vec<(String, &str)> = bindings
            .iter()
            .filter(|b| !b.keys.is_empty())
            .map(|b| {
                (
                    b.keys
                        .iter()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                    help_label(mode, &b.action),
                )
            })
            .collect();
        help_pairs(&mut lines, &pairs, theme);
    }
    if app.focus == Pane::Search {
        lines.push(Line::from(Span::styled(
            "query language (/ to type; enter searches)",
            theme.header,
        )));
        for (example, what) in panes::search::QUERY_HELP {
            lines.push(help_row(example, what, theme));
        }
    }
    if app.focus == Pane::Tenants {
        lines.push(Line::from(Span::styled("the Retract column", theme.header)));
        for (state, what) in [
            ("Granted", "clawback may retract here"),
            ("Missing (P)", "the app lacks permission P (doctor)"),
            ("Not in tenant", "not a domain of this tenant"),
            ("Error: ...", "not checked (why: under the table)"),
        ] {
            lines.push(help_row(state, what, theme));
        }
    }
    lines.push(Line::from(Span::styled(
        "commands (: then tab completes)",
        theme.header,
    )));
    for command in super::app::COMMANDS {
        let usage = format!("{} {}", command.name, command.args);
        lines.push(help_row(usage.trim_end(), command.describe, theme));
    }
    // The line-editing keys are fixed (one table in `tui::input`), the same in every input.
    lines.push(Line::from(Span::styled(
        "line editing (query, / filter, : command)",
        theme.header,
    )));
    let groups = crate::tui::input::edit_key_groups();
    let pairs: Vec<(String, &str)> = groups.iter().map(|(k, d)| (k.clone(), *d)).collect();
    help_pairs(&mut lines, &pairs, theme);
    lines
}

/// What a key does in `mode`, for the help overlay: where the generic description
/// (`Action::describe`) would not say what happens in that mode.
fn help_label(mode: Mode, action: &Action) -> &'static str {
    match (mode, action) {
        (Mode::Query, Action::Submit) => "search",
        (Mode::Query, Action::Cancel) => "clear, then leave",
        (Mode::Query, Action::MoveDown) => "to the results",
        (Mode::Global, Action::Cancel) => "leave / close",
        (Mode::Jobs, Action::Submit) => "outcomes",
        (Mode::Metrics, Action::Submit) => "search it",
        _ => action.describe(),
    }
}

/// One help line: what to type (right-aligned), then what it does.
fn help_row(typed: &str, what: &str, theme: &Theme) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{typed:>26} "), theme.hint_key),
        Span::styled(what.to_string(), theme.hint_text),
    ])
}

/// Key / description pairs in two columns (to fit 80x24).
fn help_pairs(lines: &mut Vec<Line<'static>>, pairs: &[(String, &str)], theme: &Theme) {
    for chunk in pairs.chunks(2) {
        let mut spans = Vec::new();
        for (keys, desc) in chunk {
            spans.push(Span::styled(format!("{keys:>14} "), theme.hint_key));
            spans.push(Span::styled(format!("{desc:<18}"), theme.hint_text));
        }
        lines.push(Line::from(spans));
    }
}

fn render_help(frame: &mut Frame, body: Rect, app: &App, theme: &Theme) {
    // Narrow screens: the whole body, so no stray pane columns show beside the overlay.
    let width = if body.width < 90 { body.width } else { 76 };
    let area = centered(body, width, body.height);
    frame.render_widget(Clear, area);
    let block =
        pane_block(" Help (? or esc to close, j/k scroll) ", true, theme).style(theme.overlay);
    let lines = help_lines(app, theme);
    // Scrolled by the operator; never past the point where the last line is at the bottom.
    let height = area.height.saturating_sub(2) as usize;
    let scroll = (app.help_scroll as usize).min(lines.len().saturating_sub(height));
    let len = lines.len();
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .scroll((scroll.min(u16::MAX as usize) as u16, 0)),
        area,
    );
    scroll_indicator(
        frame,
        area,
        (scroll, (scroll + height).min(len)),
        len,
        theme,
    );
}

/// How far the help can scroll on a screen `screen_height` rows high (0 = not known yet: as
/// far as the last line).
pub fn help_max_scroll(app: &App, screen_height: u16) -> u16 {
    let lines = help_lines(app, &Theme::default_theme()).len();
    // Header, footer and the overlay's two borders.
    let visible = match screen_height {
        0 => 1,
        h => h.saturating_sub(4).max(1) as usize,
    };
    lines.saturating_sub(visible).min(u16::MAX as usize) as u16
}
