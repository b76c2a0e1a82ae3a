//! Text inputs (issue 15, Build 1–2): the search query, the `/` filters, the `:` command line and
//! the typed Hard Delete count edit with the usual keys, show the terminal cursor where the keys
//! put it, clear on the first `esc` and close on the second, and filter live in every pane. An
//! alt+key nothing binds is read as `esc` then the key.
//!
//! Headless (`App` driven by key presses) plus `TestBackend` frames: the cursor position is the
//! one ratatui gives the terminal; the snapshots are reviewed text.

#![allow(clippy::unwrap_used)]

mod tui_support;

use clawback::engine::Command;
use clawback::engine::event::EngineEvent;
use clawback::engine::view::AuditFilter;
use clawback::model::RetractAction;
use clawback::tui::action::Action;
use clawback::tui::app::{App, DEBOUNCE_TICKS, Loadable, Pane};
use clawback::tui::keymap::Mode;
use clawback::tui::theme::Theme;
use clawback::tui::ui;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Position;
use tui_support::*;

const LONG_QUERY: &str = "from:evil.example urgent invoice overdue";

fn ticks(app: &mut App, n: u8) -> Vec<Command> {
    (0..n).flat_map(|_| app.update(Action::Tick)).collect()
}

/// The frame and where the terminal cursor is (`None`: hidden).
fn frame(app: &App, width: u16, height: u16) -> (Buffer, Option<Position>) {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|f| ui::render(f, app, &Theme::default_theme()))
        .unwrap();
    let backend = terminal.backend();
    let cursor = backend.cursor_visible().then(|| backend.cursor_position());
    (backend.buffer().clone(), cursor)
}

fn with_outcomes() -> App {
    let mut app = tui_support::app();
    keys(&mut app, &["5"]);
    app.on_engine(EngineEvent::JobsLoaded(jobs()));
    tui_support::open_job_41_outcomes(&mut app);
    app
}

fn hard_delete_plan(copies: u64) -> App {
    let mut app = with_recipients();
    keys(&mut app, &["x", "x", "x", "p"]);
    app.on_engine(EngineEvent::PlanBuilt(plan_summary(
        RetractAction::HardDelete,
        copies,
    )));
    app
}

/// The query typed, then its middle edited: the cursor is drawn where the keys put it, and the
/// search that goes out is the edited query.
#[test]
fn the_query_is_edited_in_the_middle_and_the_cursor_follows() {
    let mut app = with_results(20);
    keys(&mut app, &["/"]);
    type_text(&mut app, LONG_QUERY);
    let (buffer, cursor) = frame(&app, 80, 24);
    let (x, y) = find(&buffer, "Query: ").unwrap();
    let text_x = x + "Query: ".len() as u16;
    assert_eq!(
        cursor,
        Some(Position::new(text_x + LONG_QUERY.len() as u16, y))
    );
    // Left over "overdue", then ctrl+w takes "invoice ".
    for _ in 0.."overdue".len() {
        keys(&mut app, &["left"]);
    }
    assert_eq!(
        app.search.query.cursor(),
        "from:evil.example urgent invoice ".len()
    );
    ticks(&mut app, DEBOUNCE_TICKS + 1);
    keys(&mut app, &["ctrl+w"]);
    assert_eq!(app.search.query, "from:evil.example urgent overdue");
    let (buffer, cursor) = frame(&app, 80, 24);
    assert!(buffer_text(&buffer).contains("Query: from:evil.example urgent overdue"));
    assert_eq!(
        cursor,
        Some(Position::new(
            text_x + "from:evil.example urgent ".len() as u16,
            y
        ))
    );
    insta::assert_snapshot!("query_edited_in_the_middle@80x24", buffer_text(&buffer));
    // Home, ctrl+e, alt+b, alt+f move; typing inserts at the cursor.
    keys(&mut app, &["home"]);
    assert_eq!(frame(&app, 80, 24).1, Some(Position::new(text_x, y)));
    keys(&mut app, &["ctrl+e", "alt+b", "alt+b"]);
    type_text(&mut app, "very ");
    assert_eq!(app.search.query, "from:evil.example very urgent overdue");
    // One search goes out when typing pauses: the edited query.
    let sent = ticks(&mut app, DEBOUNCE_TICKS + 1);
    assert!(
        matches!(sent.as_slice(), [Command::Search { query, .. }] if query == "from:evil.example very urgent overdue"),
        "{sent:?}"
    );
    // Not editing: no cursor on screen.
    keys(&mut app, &["enter"]);
    assert_eq!(frame(&app, 80, 24).1, None);
}

/// A query longer than the box scrolls so the cursor stays on screen; home shows its start.
#[test]
fn a_long_query_scrolls_with_the_cursor() {
    let mut app = with_results(20);
    keys(&mut app, &["/"]);
    let long = format!("{LONG_QUERY} {LONG_QUERY} {LONG_QUERY}");
    type_text(&mut app, &long);
    let (buffer, cursor) = frame(&app, 80, 24);
    let cursor = cursor.unwrap();
    // Inside the pane border (x = 79 is the border).
    assert!(cursor.x < 79, "{cursor:?}");
    let line = buffer_text(&buffer)
        .lines()
        .nth(cursor.y as usize)
        .unwrap()
        .to_string();
    assert!(line.contains("overdue"), "the end is shown: {line}");
    keys(&mut app, &["home"]);
    let (buffer, cursor) = frame(&app, 80, 24);
    assert_eq!(cursor.unwrap().x, "|Query: ".len() as u16);
    let line = buffer_text(&buffer)
        .lines()
        .nth(cursor.unwrap().y as usize)
        .unwrap()
        .to_string();
    assert!(
        line.starts_with("|Query: from:evil.example urgent"),
        "{line}"
    );
}

/// Every input: the first esc clears what is typed (and a filter stops filtering), the second
/// leaves the input.
#[test]
fn esc_clears_then_leaves_in_every_input() {
    // The query box: cleared, then left; the cleared query searches everything.
    let mut app = with_results(20);
    keys(&mut app, &["/"]);
    type_text(&mut app, "from:evil");
    keys(&mut app, &["esc"]);
    assert_eq!((app.search.query.value(), app.mode()), ("", Mode::Query));
    let sent = ticks(&mut app, DEBOUNCE_TICKS + 1);
    assert!(matches!(sent.as_slice(), [Command::Search { query, .. }] if query.is_empty()));
    keys(&mut app, &["esc"]);
    assert_eq!(app.mode(), Mode::Search);

    // The recipients filter: typed, cleared (every row back), closed.
    let mut app = with_recipients();
    let all = app.recipients.visible.len();
    keys(&mut app, &["/"]);
    type_text(&mut app, "bob");
    assert!(app.recipients.visible.len() < all);
    keys(&mut app, &["esc"]);
    assert_eq!(app.recipients.filter, "");
    assert_eq!(app.recipients.visible.len(), all);
    assert!(app.prompt.is_some());
    keys(&mut app, &["esc"]);
    assert!(app.prompt.is_none());
    assert_eq!(app.focus, Pane::Recipients);

    // The command line.
    let mut app = with_results(20);
    keys(&mut app, &[":"]);
    type_text(&mut app, "depth 9");
    keys(&mut app, &["esc"]);
    assert_eq!(app.prompt.as_ref().unwrap().text, "");
    keys(&mut app, &["esc"]);
    assert!(app.prompt.is_none());

    // The Hard Delete count: cleared, then the plan closes (and is discarded).
    let mut app = hard_delete_plan(1234);
    type_text(&mut app, "12");
    assert!(keys(&mut app, &["esc"]).is_empty());
    assert_eq!(app.plan.as_ref().unwrap().typed, "");
    let sent = keys(&mut app, &["esc"]);
    assert!(app.plan.is_none());
    assert!(matches!(sent.as_slice(), [Command::DiscardPlan { .. }]));
}

/// A filter applies as it is typed in every pane that has one; enter only closes the line.
#[test]
fn filters_apply_live_in_every_pane() {
    let mut app = with_recipients();
    keys(&mut app, &["/"]);
    type_text(&mut app, "carol");
    assert_eq!(app.recipients.filter, "carol");
    assert!(app.recipients.visible.iter().all(|i| {
        app.recipients.rows.ready().unwrap()[*i]
            .address
            .contains("carol")
    }));

    let mut app = with_outcomes();
    assert_eq!(app.jobs.outcome_rows.len(), 2);
    keys(&mut app, &["/"]);
    type_text(&mut app, "alice");
    assert_eq!(app.jobs.outcome_text, "alice");
    assert_eq!(app.jobs.outcome_rows.len(), 1);
    // Editing keys work here too: ctrl+u empties the filter and every outcome is back.
    keys(&mut app, &["ctrl+u"]);
    assert_eq!(app.jobs.outcome_rows.len(), 2);

    // The audit filter runs in the engine: one load once typing pauses, with the text typed.
    let mut app = tui_support::app();
    keys(&mut app, &["6"]);
    app.on_engine(EngineEvent::AuditLoaded(audit_entries()));
    keys(&mut app, &["/"]);
    assert!(type_text(&mut app, "restore").is_empty());
    assert!(ticks(&mut app, DEBOUNCE_TICKS - 1).is_empty());
    let sent = ticks(&mut app, 1);
    assert_eq!(
        sent,
        vec![Command::LoadAudit {
            filter: AuditFilter {
                text: "restore".into()
            }
        }]
    );
    assert_eq!(app.audit.entries, Loadable::Loading);
    // Enter closes the line without loading again.
    assert!(keys(&mut app, &["enter"]).is_empty());
    assert!(app.prompt.is_none());
    assert!(ticks(&mut app, DEBOUNCE_TICKS + 1).is_empty());
}

/// The filter line and the command line show the cursor on the bottom line; reopening a filter
/// starts from the filter in force.
#[test]
fn the_command_line_and_filters_show_the_cursor() {
    let mut app = with_results(20);
    keys(&mut app, &[":"]);
    type_text(&mut app, "search from:x");
    let (buffer, cursor) = frame(&app, 80, 24);
    assert_eq!(cursor, Some(Position::new(1 + 13, 23)));
    assert!(buffer_text(&buffer).ends_with(":search from:x\n"));
    keys(&mut app, &["ctrl+a", "right"]);
    assert_eq!(frame(&app, 80, 24).1, Some(Position::new(2, 23)));
    keys(&mut app, &["delete"]);
    assert_eq!(app.prompt.as_ref().unwrap().text, "sarch from:x");

    let mut app = with_recipients();
    keys(&mut app, &["/"]);
    type_text(&mut app, "carol");
    keys(&mut app, &["enter", "/"]);
    let prompt = app.prompt.as_ref().unwrap();
    assert_eq!((prompt.text.value(), prompt.text.cursor()), ("carol", 5));
    assert_eq!(frame(&app, 80, 24).1, Some(Position::new(6, 23)));
}

/// The Hard Delete count: only digits type; the cursor sits after them in the field.
#[test]
fn the_hard_delete_count_takes_digits_with_the_cursor_in_its_field() {
    let mut app = hard_delete_plan(1234);
    type_text(&mut app, "1x2");
    keys(&mut app, &["left"]);
    type_text(&mut app, "3");
    assert_eq!(app.plan.as_ref().unwrap().typed, "132");
    let (buffer, cursor) = frame(&app, 80, 24);
    let (x, y) = find(&buffer, "Type 1234 to confirm: [").unwrap();
    let field_x = x + "Type 1234 to confirm: [".len() as u16;
    assert_eq!(cursor, Some(Position::new(field_x + 2, y)));
    insta::assert_snapshot!("hard_delete_count_edited@80x24", buffer_text(&buffer));
    keys(&mut app, &["end", "ctrl+u"]);
    type_text(&mut app, "1234");
    let sent = keys(&mut app, &["enter"]);
    assert!(matches!(
        sent.as_slice(),
        [Command::ApplyPlan { confirmation, .. }] if confirmation.typed_copies == Some(1234)
    ));
}

/// Esc then a key that arrive together are read by the terminal layer as alt+key: unbound, it
/// acts as the two keys; a bound alt key (word left in an input) keeps its meaning.
#[test]
fn an_unbound_alt_key_is_esc_then_the_key() {
    let mut app = with_results(20);
    keys(&mut app, &["/"]);
    // Empty query: esc leaves the box, then 3 shows the Policy pane.
    let sent = keys(&mut app, &["alt+3"]);
    assert_eq!(app.focus, Pane::Policy);
    assert_eq!(sent, vec![Command::LoadPolicy]);
    // In the box with text: alt+b is word left, not esc + b.
    keys(&mut app, &["1", "/"]);
    type_text(&mut app, "from:a subject:b");
    keys(&mut app, &["alt+b"]);
    assert_eq!(app.mode(), Mode::Query);
    assert_eq!(app.search.query.cursor(), "from:a ".len());
    // In a pane: alt+j is esc (nothing to leave) then j.
    let mut app = with_results(20);
    let before = app.search.selected;
    keys(&mut app, &["alt+j"]);
    assert_eq!(app.search.selected, before + 1);
}
