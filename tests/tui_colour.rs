//! Colour truth (issue 15, Build 3): the default theme draws with the 16 ANSI colours only and
//! the bytes sent to the terminal use the 16-colour SGR codes; a theme that needs more colours
//! than the terminal advertises is approximated and says so; under `NO_COLOR` every state
//! (selected row, active tab, the policy cursor on a chosen cell) differs from its neighbours
//! by modifiers alone.

#![allow(clippy::unwrap_used)]

mod tui_support;

use clawback::config::Config;
use clawback::engine::event::EngineEvent;
use clawback::engine::view::{JobId, MetricsWindow};
use clawback::model::{Disposition, RetractAction};
use clawback::tui::TuiOptions;
use clawback::tui::app::App;
use clawback::tui::terminal::Ansi16Writer;
use clawback::tui::theme::{ColourDepth, Theme};
use clawback::tui::ui;
use ratatui::backend::CrosstermBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier};
use ratatui::{Terminal, TerminalOptions, Viewport};
use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use tui_support::*;

fn theme(name: &str) -> Theme {
    Theme::load(name, None).unwrap()
}

fn pane(key: &str, event: EngineEvent) -> App {
    let mut app = admin_app();
    keys(&mut app, &[key]);
    app.on_engine(event);
    app
}

fn search_results() -> App {
    let mut app = with_results(30);
    keys(&mut app, &["j"]);
    app
}

/// The policy pane with the cursor on malicious's chosen action (Soft Delete in `policy(3)`).
fn policy_cursor_on_the_chosen_cell() -> App {
    let mut app = pane("3", EngineEvent::PolicyLoaded(policy(3)));
    let chosen = policy(3).action_for(Disposition::Malicious);
    let column = RetractAction::ALL
        .iter()
        .position(|a| *a == chosen)
        .unwrap();
    for _ in 0..column {
        keys(&mut app, &["l"]);
    }
    app
}

/// Screens covering every pane and overlay, with selections, failures and the policy matrix.
fn screens() -> Vec<App> {
    let mut jobs = pane("5", EngineEvent::JobsLoaded(jobs()));
    jobs.on_engine(EngineEvent::JobProgressed(job_progress()));
    jobs.on_engine(EngineEvent::JobOutcomesLoaded {
        job: JobId("job-42".into()),
        outcomes: outcomes(),
    });
    let mut recipients = search_results();
    keys(&mut recipients, &["enter"]);
    let generation = recipients.recipients.generation;
    recipients.on_engine(EngineEvent::RecipientsLoaded {
        generation,
        rows: tui_support::recipients(),
    });
    let mut plan = recipients.clone();
    keys(&mut plan, &["p"]);
    plan.on_engine(EngineEvent::PlanBuilt(plan_summary(
        RetractAction::Junk,
        13,
    )));
    let mut help = search_results();
    keys(&mut help, &["?"]);
    let mut query_error = search_results();
    keys(&mut query_error, &["/"]);
    query_error.on_engine(query_error_event());
    vec![
        search_results(),
        query_error,
        recipients,
        plan,
        help,
        jobs,
        policy_cursor_on_the_chosen_cell(),
        pane(
            "4",
            EngineEvent::MetricsLoaded(metrics(MetricsWindow::Day, 4000)),
        ),
        pane("6", EngineEvent::AuditLoaded(audit_entries())),
        pane("7", EngineEvent::TenantsLoaded(tenants())),
    ]
}

/// What reaches the terminal (each frame is flushed by ratatui).
#[derive(Clone, Default)]
struct Sink(Rc<RefCell<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn query_error_event() -> EngineEvent {
    tui_support::query_error()
}

fn buffer(app: &App, theme: &Theme) -> Buffer {
    render_buffer(app, theme, 120, 40)
}

#[test]
fn the_default_theme_draws_only_the_16_ansi_colours() {
    let theme = Theme::default_theme();
    assert_eq!(theme.colour_depth(), ColourDepth::Ansi16);
    let mut coloured = 0;
    for app in screens() {
        for cell in buffer(&app, &theme).content() {
            for colour in [cell.fg, cell.bg] {
                assert!(
                    !matches!(colour, Color::Indexed(_) | Color::Rgb(..)),
                    "{cell:?}"
                );
                coloured += usize::from(colour != Color::Reset);
            }
        }
    }
    assert!(coloured > 0, "the screens use colour at all");
}

/// The bytes a terminal receives: SGR colour codes 30–37, 90–97, 40–47, 100–107 and the
/// resets 39/49, never the 256-colour or truecolour forms.
#[test]
fn the_terminal_receives_16_colour_sgr_codes() {
    let theme = Theme::default_theme();
    let sink = Sink::default();
    // A fixed viewport: no size query of a real terminal; each screen drawn whole.
    for app in screens() {
        let mut terminal = Terminal::with_options(
            CrosstermBackend::new(Ansi16Writer::new(sink.clone())),
            TerminalOptions {
                viewport: Viewport::Fixed(Rect::new(0, 0, 120, 40)),
            },
        )
        .unwrap();
        terminal.draw(|f| ui::render(f, &app, &theme)).unwrap();
    }
    let out = String::from_utf8_lossy(&sink.0.borrow()).into_owned();
    for extended in ["38;5;", "48;5;", "38;2;", "48;2;"] {
        assert!(!out.contains(extended), "{extended} sent");
    }
    // Cyan borders and hint keys, dark grey muted text, red failures: in their 16-colour form.
    let codes: Vec<&str> = out
        .split("\x1b[")
        .filter_map(|sgr| sgr.split_once('m').map(|(params, _)| params))
        .filter(|params| params.chars().all(|c| c.is_ascii_digit() || c == ';'))
        .flat_map(|params| params.split(';'))
        .collect();
    for code in ["36", "90", "31"] {
        assert!(codes.contains(&code), "no SGR {code}");
    }
}

#[test]
fn the_advertised_colour_depth_follows_colorterm_and_term() {
    let cases = [
        (Some("truecolor"), Some("xterm"), ColourDepth::TrueColour),
        (Some("24bit"), None, ColourDepth::TrueColour),
        (None, Some("xterm-direct"), ColourDepth::TrueColour),
        (None, Some("xterm-256color"), ColourDepth::Ansi256),
        (None, Some("screen-256color"), ColourDepth::Ansi256),
        (None, Some("xterm"), ColourDepth::Ansi16),
        (None, Some("linux"), ColourDepth::Ansi16),
        (None, None, ColourDepth::Ansi16),
    ];
    for (colorterm, term, depth) in cases {
        assert_eq!(
            ColourDepth::advertised(colorterm, term),
            depth,
            "{colorterm:?} {term:?}"
        );
    }
}

/// midnight (hex colours) on a terminal that does not advertise 24-bit colour: approximated
/// to what it does advertise, and the status line says so at start.
#[test]
fn a_truecolour_theme_is_approximated_and_says_so() {
    let midnight = theme("midnight");
    assert_eq!(midnight.colour_depth(), ColourDepth::TrueColour);
    let (same, warning) = midnight.for_terminal(ColourDepth::TrueColour);
    assert_eq!((same, warning), (midnight.clone(), None));
    for depth in [ColourDepth::Ansi16, ColourDepth::Ansi256] {
        let (fitted, warning) = midnight.for_terminal(depth);
        assert_eq!(fitted.colour_depth(), depth);
        let warning = warning.unwrap();
        assert!(
            warning.starts_with(&format!("theme midnight approximated to {}", depth.label())),
            "{warning}"
        );
        // Roles keep distinct colours where the original had them.
        assert_ne!(fitted.selection, fitted.text);
    }
    // The 16-colour themes need no approximation anywhere.
    for name in ["default", "high-contrast"] {
        assert_eq!(
            theme(name).for_terminal(ColourDepth::Ansi16).1,
            None,
            "{name}"
        );
    }
    let (app, theme) = clawback::tui::prepare(
        &Config::default(),
        &TuiOptions {
            theme: Some("midnight".into()),
            colour_depth: Some(ColourDepth::Ansi16),
            no_color: Some(false),
            ..TuiOptions::default()
        },
    )
    .unwrap();
    assert_eq!(theme.colour_depth(), ColourDepth::Ansi16);
    let status = app.status.unwrap().text;
    assert!(
        status.contains("theme midnight approximated to 16 colours"),
        "{status}"
    );
}

/// Under `NO_COLOR`, modifiers alone tell apart: the selected row from the others, the active
/// tab from the rest, and in the policy matrix the cursor on a chosen cell from a chosen cell
/// and from the cursor on an unchosen one.
#[test]
fn without_colour_every_state_stays_distinguishable() {
    for name in ["default", "high-contrast", "midnight"] {
        let theme = theme(name).without_colours();
        let modifiers = |buffer: &Buffer, (x, y): (u16, u16)| buffer[(x, y)].modifier;

        // The selected search row (the second) against the first.
        let search = buffer(&search_results(), &theme);
        let first = find(&search, "Invoice overdue").unwrap();
        let second = (first.0, first.1 + 1);
        assert_ne!(
            modifiers(&search, first),
            modifiers(&search, second),
            "{name}"
        );
        assert!(
            modifiers(&search, second).contains(Modifier::REVERSED),
            "{name}"
        );

        // The active tab.
        let active = find(&search, "1 Search").unwrap();
        let inactive = find(&search, "2 Recipients").unwrap();
        assert_ne!(
            modifiers(&search, active),
            modifiers(&search, inactive),
            "{name}"
        );

        // The policy matrix: malicious's chosen cell under the cursor, suspicious's chosen
        // cell, an unchosen cell, and the cursor on an unchosen cell.
        let app = policy_cursor_on_the_chosen_cell();
        let matrix = buffer(&app, &theme);
        let row = |label: &str| find(&matrix, label).unwrap().1;
        let cells = |y: u16| -> Vec<(u16, u16)> {
            let line: String = (0..120)
                .map(|x| matrix[(x, y)].symbol().to_string())
                .collect();
            line.match_indices(['('])
                .map(|(x, _)| (x as u16, y))
                .collect()
        };
        let malicious = cells(row("malicious"));
        let suspicious = cells(row("suspicious"));
        let column = |action: RetractAction| {
            RetractAction::ALL
                .iter()
                .position(|a| *a == action)
                .unwrap()
        };
        let cursor_on_chosen = malicious[column(policy(3).action_for(Disposition::Malicious))];
        let chosen = suspicious[column(policy(3).action_for(Disposition::Suspicious))];
        let unchosen = suspicious[(column(policy(3).action_for(Disposition::Suspicious)) + 1)
            % RetractAction::ALL.len()];
        let mut moved = app.clone();
        keys(&mut moved, &["l"]);
        let moved_buffer = buffer(&moved, &theme);
        let cursor_on_unchosen = modifiers(
            &moved_buffer,
            malicious[(column(policy(3).action_for(Disposition::Malicious)) + 1)
                % RetractAction::ALL.len()],
        );
        let styles = [
            modifiers(&matrix, cursor_on_chosen),
            modifiers(&matrix, chosen),
            modifiers(&matrix, unchosen),
            cursor_on_unchosen,
        ];
        for (i, a) in styles.iter().enumerate() {
            for b in &styles[i + 1..] {
                assert_ne!(a, b, "{name}: {styles:?}");
            }
        }
    }
}
