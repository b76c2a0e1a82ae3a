//! Widgets every pane shares: its bordered block, the Loading / Error line, the list window and
//! its scroll position (`12-35 of 150`), the spinner, column sizing, counts and durations, and the
//! cursor arithmetic of a list. Panes and the screen layout (`ui.rs`) both import these; nothing
//! here imports a pane or the layout.

use super::action::Action;
use super::app::Loadable;
use super::theme::Theme;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

/// ASCII borders (the default: they survive every terminal, font and SSH hop).
pub const ASCII_BORDER: symbols::border::Set = symbols::border::Set {
    top_left: "+",
    top_right: "+",
    bottom_left: "+",
    bottom_right: "+",
    vertical_left: "|",
    vertical_right: "|",
    horizontal_top: "-",
    horizontal_bottom: "-",
};

/// A pane's bordered block, styled by focus.
pub fn pane_block<'a>(title: impl Into<Line<'a>>, focused: bool, theme: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_set(ASCII_BORDER)
        .border_style(if focused {
            theme.border_focused
        } else {
            theme.border
        })
        .title(title.into().style(theme.title))
}

/// The Loading / Empty / Error line centred in a pane body.
pub fn state_message(frame: &mut Frame, area: Rect, text: &str, style: Style) {
    if area.height == 0 {
        return;
    }
    let y = area.y + area.height / 2;
    let line = Rect::new(
        area.x,
        y.min(area.bottom().saturating_sub(1)),
        area.width,
        1,
    );
    frame.render_widget(
        Paragraph::new(Line::from(Span::styled(text.to_string(), style)).centered()),
        line,
    );
}

/// Draws a loadable's non-ready states; returns the data when ready.
pub fn loadable<'a, T>(
    frame: &mut Frame,
    area: Rect,
    data: &'a Loadable<T>,
    what: &str,
    theme: &Theme,
) -> Option<&'a T> {
    match data {
        Loadable::NotLoaded | Loadable::Loading => {
            state_message(frame, area, &format!("Loading {what}..."), theme.muted);
            None
        }
        Loadable::Failed(message) => {
            state_message(
                frame,
                area,
                &format!("Could not load {what}: {message}"),
                theme.error,
            );
            None
        }
        Loadable::Ready(t) => Some(t),
    }
}

/// The window of rows to draw so that `selected` is visible: `(offset, end)`.
pub fn visible_window(selected: usize, height: usize, len: usize) -> (usize, usize) {
    if height == 0 || len == 0 {
        return (0, 0);
    }
    let offset = selected
        .saturating_sub(height - 1)
        .min(len.saturating_sub(1));
    (offset, (offset + height).min(len))
}

/// The position of a list's window, `12-35 of 150` (rows are counted from 1), drawn on the
/// bottom border of the pane that holds the list (`area` is the bordered area), right-aligned.
/// Nothing is drawn for an empty list or where the border is too short to hold it.
pub fn scroll_indicator(
    frame: &mut Frame,
    area: Rect,
    window: (usize, usize),
    len: usize,
    theme: &Theme,
) {
    let Some(text) = scroll_text(window, len) else {
        return;
    };
    let width = text.chars().count() as u16;
    if area.height < 2 || area.width < width + 4 {
        return;
    }
    let rect = Rect::new(
        area.right().saturating_sub(width + 2),
        area.bottom() - 1,
        width,
        1,
    );
    frame.render_widget(Paragraph::new(Span::styled(text, theme.title)), rect);
}

/// ` 12-35 of 150 ` for the rows `offset..end` of `len` (ASCII: a hyphen, not an en dash).
pub fn scroll_text((offset, end): (usize, usize), len: usize) -> Option<String> {
    if len == 0 {
        return None;
    }
    let first = (offset + 1).min(len) as u64;
    let last = end.clamp(offset + 1, len) as u64;
    Some(format!(
        " {}-{} of {} ",
        thousands(first),
        thousands(last),
        thousands(len as u64)
    ))
}

/// `1 message`, `2 messages`, `1,234 messages`: a count with its noun in the right number.
pub fn count(n: u64, singular: &str, plural: &str) -> String {
    format!("{} {}", thousands(n), noun(n, singular, plural))
}

/// The noun for `n` things: `singular` for exactly one.
pub fn noun<'a>(n: u64, singular: &'a str, plural: &'a str) -> &'a str {
    if n == 1 { singular } else { plural }
}

/// Frames of the busy indicator (ASCII; not `|`, which reads as a border), advanced by the
/// app's tick while work runs.
const SPINNER: [&str; 6] = ["[=   ]", "[ =  ]", "[  = ]", "[   =]", "[  = ]", "[ =  ]"];

/// The busy indicator at `frame` (the app's `spinner` count).
pub fn spinner(frame: u8) -> &'static str {
    SPINNER[frame as usize % SPINNER.len()]
}

/// The width a column needs for its header and values (in characters), at least `min`.
pub fn column_width<'a>(header: &str, values: impl Iterator<Item = &'a str>, min: u16) -> u16 {
    let widest = values
        .map(|v| v.chars().count())
        .chain(std::iter::once(header.chars().count()))
        .max()
        .unwrap_or(0);
    (widest.min(u16::MAX as usize) as u16).max(min)
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds as `45s`, `4m 10s`, `2h 5m`, `3d 4h`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A centred rectangle of at most `width` x `height` inside `area`.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// Moves a list cursor by `delta` rows, within `0..len`.
pub fn step(index: usize, len: usize, delta: isize) -> usize {
    if len == 0 {
        return 0;
    }
    let max = len - 1;
    if delta < 0 {
        index.saturating_sub(delta.unsigned_abs())
    } else {
        index.saturating_add(delta as usize).min(max)
    }
}

/// Counts a debounce down by one tick: true when it runs out now (it is then cleared).
pub fn debounce_due(left: &mut Option<u8>) -> bool {
    match *left {
        Some(n) if n <= 1 => {
            *left = None;
            true
        }
        Some(n) => {
            *left = Some(n - 1);
            false
        }
        None => false,
    }
}

/// Rows a page key moves.
pub const PAGE: isize = 10;

/// Where a list key (up, down, page up/down, first, last) takes a cursor at `at` over `len`
/// rows; `None` for any other action.
pub fn list_move(action: &Action, at: usize, len: usize) -> Option<usize> {
    match action {
        Action::MoveUp => Some(step(at, len, -1)),
        Action::MoveDown => Some(step(at, len, 1)),
        Action::PageUp => Some(step(at, len, -PAGE)),
        Action::PageDown => Some(step(at, len, PAGE)),
        Action::First => Some(0),
        Action::Last => Some(len.saturating_sub(1)),
        _ => None,
    }
}
