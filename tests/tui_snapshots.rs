//! Layer 1: every pane drawn on a `TestBackend` in its loading, empty, populated and error
//! states at 80x24 and 160x48, snapshotted with insta; plus cell-style asserts where colour
//! carries meaning, a custom keymap, and each built-in theme.
//!
//! The snapshots live in `tests/snapshots/`; the fixtures use fixed times, so they are stable.
//! To review a change: `INSTA_UPDATE=always cargo test --test tui_snapshots` then `git diff`.

#![allow(clippy::unwrap_used)]

mod tui_support;

use clawback::config::Config;
use clawback::engine::event::{EngineEvent, QueryErrorView};
use clawback::engine::view::{
    AuditVerification, JobId, JobPhase, MetricsWindow, PolicyMatrix, TenantsProgress,
};
use clawback::model::{FailureReason, RetractAction, Role};
use clawback::tui::TuiOptions;
use clawback::tui::app::{App, Pane};
use clawback::tui::theme::Theme;
use ratatui::buffer::{Buffer, Cell};
use ratatui::style::{Color, Modifier, Style};
use std::path::Path;
use tui_support::*;

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

fn default_theme() -> Theme {
    Theme::default_theme()
}

/// Snapshots `app` at both sizes as text: `<name>@80x24`, `<name>@160x48`.
fn snap(name: &str, app: &App) {
    let theme = default_theme();
    for (w, h) in SIZES {
        let text = render_text(app, &theme, w, h);
        insta::assert_snapshot!(format!("{name}@{w}x{h}"), text);
    }
}

fn fail_engine(app: &mut App) {
    app.on_engine(EngineEvent::EngineFailed {
        message: "store locked by another process".into(),
    });
}

// ---- app builders ----

/// Recipients at depth 1 with the preview in, the second row unticked.
fn recipients_populated() -> App {
    let mut app = with_recipients();
    keys(&mut app, &["j", "space", "+"]);
    let generation = app.recipients.depth_generation;
    app.on_engine(EngineEvent::DepthPreviewed {
        generation,
        per_depth: depth_counts(1),
    });
    app
}

fn on_pane(pane_key: &str) -> App {
    let mut app = app();
    keys(&mut app, &[pane_key]);
    app
}

fn jobs_populated() -> App {
    let mut app = on_pane("5");
    app.on_engine(EngineEvent::JobsLoaded(jobs()));
    app.on_engine(EngineEvent::JobProgressed(job_progress()));
    for (address, reason) in [
        ("carol@contoso.example", FailureReason::AlreadyGone),
        ("dave@fabrikam.example", FailureReason::NotAuthorized),
    ] {
        app.on_engine(EngineEvent::ItemFailed {
            job: JobId("job-42".into()),
            address: address.into(),
            reason,
            provider_code: None,
        });
    }
    app
}

fn jobs_with_outcomes() -> App {
    let mut app = jobs_populated();
    open_job_41_outcomes(&mut app);
    app
}

/// The 82-copy job with its outcomes, the cursor in them.
fn jobs_82() -> App {
    let mut app = on_pane("5");
    app.on_engine(EngineEvent::JobsLoaded(vec![job_82()]));
    keys(&mut app, &["enter"]);
    app.on_engine(EngineEvent::JobOutcomesLoaded {
        job: JobId("7".into()),
        outcomes: outcomes_82(),
    });
    app
}

/// Job 7 restored by job 8; job 8 selected with its outcomes.
fn jobs_restored() -> App {
    let mut app = on_pane("5");
    let mut retract = job_82();
    retract.restorable = 0;
    retract.restored_by = vec![(JobId("8".into()), JobPhase::Finished)];
    app.on_engine(EngineEvent::JobsLoaded(vec![restore_job_of_82(), retract]));
    keys(&mut app, &["enter"]);
    app.on_engine(EngineEvent::JobOutcomesLoaded {
        job: JobId("8".into()),
        outcomes: restore_outcomes(),
    });
    keys(&mut app, &["esc"]);
    app
}

fn policy_populated(role: Role) -> App {
    let mut app = if role == Role::Admin {
        admin_app()
    } else {
        app()
    };
    keys(&mut app, &["3"]);
    app.on_engine(EngineEvent::PolicyLoaded(policy(3)));
    // Cursor onto malicious / Junk, and change suspicious to Trash: "modified".
    keys(&mut app, &["l"]);
    app
}

fn metrics_populated() -> App {
    let mut app = on_pane("4");
    app.on_engine(EngineEvent::MetricsLoaded(metrics(
        MetricsWindow::Day,
        4000,
    )));
    app
}

fn audit_populated() -> App {
    let mut app = on_pane("6");
    app.on_engine(EngineEvent::AuditLoaded(audit_entries()));
    app.on_engine(EngineEvent::AuditVerified(AuditVerification {
        entries: 1204,
        broken_at: None,
    }));
    app
}

fn tenants_populated() -> App {
    let mut app = on_pane("7");
    app.on_engine(EngineEvent::TenantsLoaded(tenants()));
    app
}

fn plan_open(action: RetractAction, copies: u64) -> App {
    let mut app = recipients_populated();
    let presses = SELECTOR_INDEX
        .iter()
        .position(|a| *a == action)
        .unwrap_or(0);
    for _ in 0..presses {
        keys(&mut app, &["x"]);
    }
    keys(&mut app, &["p"]);
    app.on_engine(EngineEvent::PlanBuilt(plan_summary(action, copies)));
    app
}

const SELECTOR_INDEX: [RetractAction; 4] = [
    RetractAction::Junk,
    RetractAction::Trash,
    RetractAction::SoftDelete,
    RetractAction::HardDelete,
];

// ---- every pane, every state ----

#[test]
fn search_pane_states() {
    snap("search_not_loaded", &app());
    let mut loading = app();
    loading.startup();
    snap("search_loading", &loading);
    snap("search_empty", &with_results(0));
    let mut populated = with_results(60);
    keys(&mut populated, &["j", "j", "j"]);
    snap("search_populated", &populated);
    let mut grouped = with_results(60);
    keys(&mut grouped, &["c"]);
    snap("search_grouped", &grouped);
    // A query with a parse error, still typing: the column is pointed at.
    let mut query_error = with_results(60);
    keys(&mut query_error, &["/"]);
    type_text(&mut query_error, "from: since:24h");
    keys(&mut query_error, &["enter"]);
    let generation = search_generation(&query_error);
    query_error.on_engine(EngineEvent::SearchFailed {
        generation,
        error: QueryErrorView {
            column: 6,
            message: "expected a value after \"from:\"".into(),
        },
    });
    snap("search_query_error", &query_error);
    let mut failed = app();
    failed.startup();
    fail_engine(&mut failed);
    snap("search_engine_error", &failed);
    let mut editing = with_results(60);
    keys(&mut editing, &["/"]);
    type_text(&mut editing, "from:evil.example");
    snap("search_typing", &editing);
}

#[test]
fn recipients_pane_states() {
    snap("recipients_no_message", &on_pane("2"));
    let mut loading = with_results(10);
    keys(&mut loading, &["enter"]);
    snap("recipients_loading", &loading);
    let mut empty = with_results(10);
    keys(&mut empty, &["enter"]);
    let generation = empty.recipients.generation;
    empty.on_engine(EngineEvent::RecipientsLoaded {
        generation,
        rows: vec![],
    });
    snap("recipients_empty", &empty);
    snap("recipients_populated", &recipients_populated());
    let mut filtered = recipients_populated();
    keys(&mut filtered, &["/"]);
    type_text(&mut filtered, "contoso");
    snap("recipients_filter_typing", &filtered);
    let mut failed = with_results(10);
    keys(&mut failed, &["enter"]);
    fail_engine(&mut failed);
    snap("recipients_error", &failed);
}

#[test]
fn plan_overlay_states() {
    let mut loading = recipients_populated();
    keys(&mut loading, &["p"]);
    snap("plan_loading", &loading);
    // Nobody included: no plan is built, the status line says why.
    let mut empty = recipients_populated();
    keys(&mut empty, &["n", "p"]);
    snap("plan_nobody_included", &empty);
    snap("plan_junk", &plan_open(RetractAction::Junk, 13));
    let mut hard = plan_open(RetractAction::HardDelete, 1234);
    keys(&mut hard, &["1", "2"]);
    snap("plan_hard_delete_typing", &hard);
    let mut refused = plan_open(RetractAction::HardDelete, 1234);
    keys(&mut refused, &["1", "2", "enter"]);
    snap("plan_hard_delete_refused", &refused);
    let mut failed = recipients_populated();
    keys(&mut failed, &["p"]);
    failed.on_engine(EngineEvent::PlanFailed {
        message: "the trace has no copies of this message".into(),
    });
    snap("plan_error", &failed);
}

#[test]
fn jobs_pane_states() {
    snap("jobs_loading", &on_pane("5"));
    let mut empty = on_pane("5");
    empty.on_engine(EngineEvent::JobsLoaded(vec![]));
    snap("jobs_empty", &empty);
    snap("jobs_running_progress", &jobs_populated());
    let mut reason = jobs_populated();
    keys(&mut reason, &["l"]);
    snap("jobs_failure_reason_selected", &reason);
    snap("jobs_outcomes", &jobs_with_outcomes());
    let mut failed = on_pane("5");
    fail_engine(&mut failed);
    snap("jobs_error", &failed);
}

/// Issue 12: the outcomes scroll (failures first) with a position on the border, and filter.
#[test]
fn jobs_outcomes_scroll_and_filter() {
    let app = jobs_82();
    snap("jobs_outcomes_top", &app);
    let mut last = jobs_82();
    keys(&mut last, &["G"]);
    snap("jobs_outcomes_scrolled_to_last", &last);
    let text = render_text(&last, &default_theme(), 80, 24);
    assert!(text.contains("user81@contoso.example"), "{text}");
    assert!(text.contains("of 82"), "{text}");
    let mut failed = jobs_82();
    keys(&mut failed, &["f"]);
    snap("jobs_outcomes_failed_filter", &failed);
    let mut reason = jobs_82();
    keys(&mut reason, &["/"]);
    type_text(&mut reason, "not_auth");
    keys(&mut reason, &["enter"]);
    let text = render_text(&reason, &default_theme(), 80, 24);
    assert!(text.contains("/not_auth: 1-2 of 2 (82 in all)"), "{text}");
    assert!(text.contains("user08@contoso.example"), "{text}");
    assert!(!text.contains("user04@contoso.example"), "{text}");
}

/// Issue 12: a restore is shown as a restore, from Junk back to the Inbox; its retract job
/// says who restored it and offers no second undo; a Hard Delete job offers none at all.
#[test]
fn restore_and_hard_delete_jobs() {
    snap("jobs_restore", &jobs_restored());
    let mut retract = jobs_restored();
    keys(&mut retract, &["j"]);
    snap("jobs_restored_retract", &retract);
    let mut hard = on_pane("5");
    let mut job = job_82();
    job.action = RetractAction::HardDelete;
    job.restorable = 0;
    hard.on_engine(EngineEvent::JobsLoaded(vec![job]));
    snap("jobs_hard_delete", &hard);
}

/// Issue 12: the questions asked before quitting mid-job, restoring, and resuming.
#[test]
fn confirmation_questions() {
    let mut restore = on_pane("5");
    restore.on_engine(EngineEvent::JobsLoaded(vec![job_82()]));
    keys(&mut restore, &["u"]);
    snap("confirm_restore", &restore);
    let mut quit = jobs_populated();
    quit.on_engine(EngineEvent::JobStarted {
        job: JobId("job-42".into()),
        plan_id: None,
        total: 1000,
    });
    quit.on_engine(EngineEvent::JobProgressed(job_progress()));
    keys(&mut quit, &["q"]);
    snap("confirm_quit_running", &quit);
    let text = render_text(&quit, &default_theme(), 79, 24);
    insta::assert_snapshot!("too_small_quit_question@79x24", text);
    let mut resume = with_results(10);
    let mut interrupted = job_82();
    interrupted.state = JobPhase::Interrupted;
    interrupted.succeeded = 40;
    interrupted.failed_by_reason = vec![];
    resume.on_engine(EngineEvent::InterruptedJobsFound(vec![interrupted]));
    snap("confirm_resume", &resume);
}

#[test]
fn policy_pane_states() {
    snap("policy_loading", &on_pane("3"));
    let mut empty = on_pane("3");
    empty.on_engine(EngineEvent::PolicyLoaded(PolicyMatrix {
        actions: Default::default(),
        ..policy(1)
    }));
    snap("policy_empty", &empty);
    snap(
        "policy_populated_responder",
        &policy_populated(Role::Responder),
    );
    let mut modified = policy_populated(Role::Admin);
    keys(&mut modified, &["j", "l", "space"]);
    snap("policy_modified_admin", &modified);
    let mut failed = on_pane("3");
    fail_engine(&mut failed);
    snap("policy_error", &failed);
}

#[test]
fn metrics_pane_states() {
    snap("metrics_loading", &on_pane("4"));
    let mut empty = on_pane("4");
    empty.on_engine(EngineEvent::MetricsLoaded(metrics(MetricsWindow::Day, 0)));
    snap("metrics_empty", &empty);
    snap("metrics_populated", &metrics_populated());
    let mut failed = on_pane("4");
    fail_engine(&mut failed);
    snap("metrics_error", &failed);
}

/// Issue 12 part 8: `d` shows the messages retracted in the window (by retraction time) with
/// copies ok / failed and auto / manual, instead of the cards; or says there are none.
#[test]
fn metrics_details_states() {
    let mut app = metrics_populated();
    keys(&mut app, &["d"]);
    snap("metrics_details_loading", &app);
    app.on_engine(EngineEvent::MetricsDetailsLoaded {
        window: MetricsWindow::Day,
        messages: vec![
            retracted(1, 134, 4, 0),
            retracted(2, 71, 0, 71),
            retracted(3, 0, 2, 2),
        ],
    });
    keys(&mut app, &["j"]);
    snap("metrics_details", &app);
    app.on_engine(EngineEvent::MetricsDetailsLoaded {
        window: MetricsWindow::Day,
        messages: vec![],
    });
    snap("metrics_details_empty", &app);
}

#[test]
fn audit_pane_states() {
    snap("audit_loading", &on_pane("6"));
    let mut empty = on_pane("6");
    empty.on_engine(EngineEvent::AuditLoaded(vec![]));
    snap("audit_empty", &empty);
    snap("audit_populated", &audit_populated());
    let mut broken = audit_populated();
    broken.on_engine(EngineEvent::AuditVerified(AuditVerification {
        entries: 1204,
        broken_at: Some((1202, "hash does not match entry 1201".into())),
    }));
    snap("audit_chain_broken", &broken);
    let mut failed = on_pane("6");
    fail_engine(&mut failed);
    snap("audit_error", &failed);
}

#[test]
fn tenants_pane_states() {
    snap("tenants_loading", &on_pane("7"));
    let mut empty = on_pane("7");
    empty.on_engine(EngineEvent::TenantsLoaded(vec![]));
    snap("tenants_empty", &empty);
    snap("tenants_populated", &tenants_populated());
    let mut failed = on_pane("7");
    fail_engine(&mut failed);
    snap("tenants_error", &failed);
}

/// Issue 12: a tenants load says how far it came and how long it runs (ticks, not a clock),
/// and how to stop it; a tenant whose endpoint cannot be reached is an Error naming the
/// endpoint and the cause, in the table and in full under it, in the error colour.
#[test]
fn tenants_pane_progress_cancel_and_unreachable() {
    let mut checking = on_pane("7");
    checking.on_engine(EngineEvent::TenantsProgress(TenantsProgress {
        done: 1,
        total: 2,
        domains: 3,
    }));
    for _ in 0..50 {
        checking.update(clawback::tui::action::Action::Tick);
    }
    snap("tenants_checking", &checking);
    let mut cancelled = checking.clone();
    keys(&mut cancelled, &["esc"]);
    snap("tenants_cancelled", &cancelled);

    let mut unreachable = on_pane("7");
    let mut views = tenants();
    views[1].domains.clear();
    views[1].error = Some("connection refused: 127.0.0.1:41234".into());
    unreachable.on_engine(EngineEvent::TenantsLoaded(views));
    snap("tenants_unreachable", &unreachable);
    let theme = default_theme();
    let buffer = render_buffer(&unreachable, &theme, 80, 24);
    let (x, y) = find(&buffer, "northwind: connection refused: 127.0.0.1:41234").unwrap();
    assert_eq!(buffer[(x, y)].style().fg, theme.error.fg);
    let (x, y) = find(&buffer, "Error: ").unwrap();
    assert_eq!(buffer[(x, y)].style().fg, theme.error.fg);
}

#[test]
fn help_overlay_and_command_line() {
    let mut help = with_results(60);
    keys(&mut help, &["?"]);
    snap("help_search", &help);
    let mut help = recipients_populated();
    keys(&mut help, &["?"]);
    snap("help_recipients", &help);
    let mut command = with_results(60);
    keys(&mut command, &[":"]);
    type_text(&mut command, "search from:evil.example");
    snap("command_line", &command);
    let mut unknown = with_results(60);
    keys(&mut unknown, &[":"]);
    type_text(&mut unknown, "frobnicate");
    keys(&mut unknown, &["enter"]);
    snap("command_line_unknown", &unknown);
}

#[test]
fn too_small_terminal_says_so() {
    let theme = default_theme();
    let app = with_results(60);
    for (w, h) in [(79, 24), (80, 23), (40, 12)] {
        let text = render_text(&app, &theme, w, h);
        assert!(text.contains("clawback needs a larger terminal"), "{text}");
        insta::assert_snapshot!(format!("too_small@{w}x{h}"), text);
    }
    // Exactly 80x24 draws the console.
    let text = render_text(&app, &theme, 80, 24);
    assert!(!text.contains("larger terminal"), "{text}");
    assert!(text.contains("Search (60 messages)"), "{text}");
}

// ---- custom keymap ----

fn config_with_keys() -> Config {
    let text = r#"
[ui.keys.global]
help = "f1"
move_down = "J"
filter = "f"

[ui.keys.recipients]
toggle_include = "t"
select_all = "A"
"#;
    Config::parse(text, Path::new("/nonexistent/config.toml")).unwrap()
}

#[test]
fn a_custom_keymap_shows_in_the_hint_bar_and_help() {
    let config = config_with_keys();
    let (mut app, theme) = clawback::tui::prepare(
        &config,
        &TuiOptions {
            no_color: Some(false),
            ..TuiOptions::default()
        },
    )
    .unwrap();
    app.startup();
    let generation = search_generation(&app);
    app.on_engine(EngineEvent::SearchCompleted {
        generation,
        rows: search_rows(20),
        total: 20,
    });
    let text = render_text(&app, &theme, 80, 24);
    let footer = text.lines().nth(23).unwrap_or_default();
    assert!(footer.contains("f filter"), "{footer}");
    assert!(footer.contains("J select"), "{footer}");
    assert!(footer.contains("f1 help"), "{footer}");
    assert!(
        !footer.contains("/ filter") && !footer.contains("? help"),
        "{footer}"
    );
    insta::assert_snapshot!("custom_keys_search@80x24", text);

    // The remapped keys work, and the recipients hints and help show them.
    keys(&mut app, &["J", "enter"]);
    assert_eq!(app.focus, Pane::Recipients);
    let generation = app.recipients.generation;
    app.on_engine(EngineEvent::RecipientsLoaded {
        generation,
        rows: recipients(),
    });
    let text = render_text(&app, &theme, 80, 24);
    let footer = text.lines().nth(23).unwrap_or_default();
    assert!(
        footer.starts_with(" t include") && footer.contains("A all"),
        "{footer}"
    );
    keys(&mut app, &["f1"]);
    assert!(app.help);
    let text = render_text(&app, &theme, 80, 24);
    assert!(text.contains("t include"), "{text}");
    assert!(text.contains("f1 help"), "{text}");
    assert!(text.contains("up k move up"), "{text}");
    assert!(text.contains("J move down"), "{text}");
    insta::assert_snapshot!("custom_keys_help@80x24", text);
}

// ---- themes ----

fn theme(name: &str) -> Theme {
    Theme::load(name, None).unwrap()
}

/// A buffer's Debug form lists text and every style run, so a theme snapshot records colours.
#[test]
fn each_theme_on_populated_panes() {
    for name in ["default", "high-contrast", "midnight"] {
        let theme = theme(name);
        let mut search = with_results(60);
        keys(&mut search, &["j"]);
        insta::assert_snapshot!(
            format!("theme_{name}_search@80x24"),
            format!("{:?}", render_buffer(&search, &theme, 80, 24))
        );
        insta::assert_snapshot!(
            format!("theme_{name}_jobs@80x24"),
            format!("{:?}", render_buffer(&jobs_populated(), &theme, 80, 24))
        );
        insta::assert_snapshot!(
            format!("theme_{name}_policy@80x24"),
            format!(
                "{:?}",
                render_buffer(&policy_populated(Role::Admin), &theme, 80, 24)
            )
        );
    }
}

// ---- cell styles where colour carries meaning ----

/// True when `cell` shows `style`: every colour the style sets, and all its modifiers.
fn shows(cell: &Cell, style: Style) -> bool {
    style.fg.is_none_or(|fg| cell.fg == fg)
        && style.bg.is_none_or(|bg| cell.bg == bg)
        && cell.modifier.contains(style.add_modifier)
}

fn cell_at<'a>(buffer: &'a Buffer, needle: &str) -> &'a Cell {
    let (x, y) = find(buffer, needle).unwrap_or_else(|| {
        panic!("{needle:?} not on screen:\n{}", buffer_text(buffer));
    });
    &buffer[(x, y)]
}

fn all_themes() -> Vec<Theme> {
    ["default", "high-contrast", "midnight"]
        .into_iter()
        .map(theme)
        .collect()
}

#[test]
fn failed_counts_and_outcomes_use_status_failed() {
    for theme in all_themes() {
        let buffer = render_buffer(&jobs_populated(), &theme, 160, 48);
        // job-42 failed 6: the Failed column's number (with job-41 selected, so the selection
        // style does not cover it).
        let mut other_selected = jobs_populated();
        keys(&mut other_selected, &["j"]);
        let list = render_buffer(&other_selected, &theme, 160, 48);
        // (Not the metrics strip's "job job-42 running": the list's row.)
        let (x, y) = find(&list, "08:41 job-42").unwrap();
        let line: String = (0..160)
            .map(|i| list[(i, y)].symbol().to_string())
            .collect();
        let six = line.find("      6").unwrap() as u16 + 6;
        assert!(six > x);
        assert!(
            shows(&list[(six, y)], theme.status_failed),
            "{}: failed count {:?} vs {:?}",
            theme.name,
            list[(six, y)],
            theme.status_failed
        );
        // A live failure line.
        assert!(shows(
            cell_at(&buffer, "carol@contoso.example: failed"),
            theme.status_failed
        ));
        // Finished job without failures: green state; with failures, never green.
        assert!(shows(cell_at(&buffer, "finished"), theme.status_succeeded));
        let outcomes = render_buffer(&jobs_with_outcomes(), &theme, 160, 48);
        assert!(shows(
            cell_at(&outcomes, "failed: already_gone"),
            theme.status_failed
        ));
        // Malicious messages in the results: status_failed.
        let search = render_buffer(&with_results(10), &theme, 160, 48);
        let (x, y) = find(&search, "malicious").unwrap();
        // Row 0 is selected (selection style wins); look at the next malicious row (index 4).
        let _ = x;
        let later = (y + 1..48)
            .find_map(|yy| {
                let line: String = (0..160)
                    .map(|i| search[(i, yy)].symbol().to_string())
                    .collect();
                line.find("malicious").map(|xx| (xx as u16, yy))
            })
            .unwrap();
        assert!(shows(&search[later], theme.status_failed), "{}", theme.name);
    }
}

#[test]
fn the_selected_row_uses_the_selection_style() {
    for theme in all_themes() {
        let mut app = with_results(60);
        keys(&mut app, &["j", "j"]);
        let buffer = render_buffer(&app, &theme, 80, 24);
        // Rows start under the query line (y=2) and header (y=3): the third row is y=6.
        let selected_y = 6;
        assert!(
            buffer_text(&buffer)
                .lines()
                .nth(selected_y)
                .unwrap()
                .contains("Quarterly result")
        );
        for x in 1..79 {
            assert!(
                shows(&buffer[(x, selected_y as u16)], theme.selection),
                "{} x={x}: {:?}",
                theme.name,
                buffer[(x, selected_y as u16)]
            );
        }
        // The row above is not selected.
        assert!(!shows(&buffer[(20, 5)], theme.selection) || theme.selection == Style::default());
        // While typing a query, no row is highlighted (the input has the focus).
        keys(&mut app, &["/"]);
        let typing = render_buffer(&app, &theme, 80, 24);
        assert_ne!(
            typing[(20, selected_y as u16)].modifier & Modifier::REVERSED,
            Modifier::REVERSED,
            "{}",
            theme.name
        );
    }
}

#[test]
fn the_focused_border_differs_from_the_unfocused_one() {
    for theme in all_themes() {
        let buffer = render_buffer(&jobs_populated(), &theme, 80, 24);
        // The jobs list (focused) starts at y=1; the job detail (not focused) below it.
        assert!(
            shows(&buffer[(0, 1)], theme.border_focused),
            "{}",
            theme.name
        );
        let (_, detail_y) = find(&buffer, "+ Job job-42").unwrap();
        assert!(
            shows(&buffer[(0, detail_y)], theme.border),
            "{}",
            theme.name
        );
        assert_ne!(theme.border, theme.border_focused, "{}", theme.name);
        // Active tab.
        assert!(shows(cell_at(&buffer, "5 Jobs"), theme.tab_active));
    }
}

#[test]
fn the_policy_matrix_marks_the_active_cell() {
    for theme in all_themes() {
        // Cursor on malicious / Junk; malicious's chosen action (Soft Delete) is not under it.
        let buffer = render_buffer(&policy_populated(Role::Admin), &theme, 80, 24);
        let (_, y) = find(&buffer, "malicious").unwrap();
        let line: String = (0..80)
            .map(|i| buffer[(i, y)].symbol().to_string())
            .collect();
        let active = line.find("(*)").unwrap() as u16;
        assert!(
            shows(&buffer[(active, y)], theme.matrix_cell_active),
            "{}",
            theme.name
        );
        let cells: Vec<u16> = line.match_indices("( )").map(|(i, _)| i as u16).collect();
        // First "( )" is No action (plain cell), the second Junk under the cursor.
        assert!(shows(&buffer[(cells[0], y)], theme.matrix_cell));
        assert!(shows(&buffer[(cells[1], y)], theme.selection));
        assert_ne!(theme.matrix_cell, theme.matrix_cell_active);
    }
}

#[test]
fn no_color_draws_no_colours_but_keeps_the_meaning() {
    let config = Config::default();
    let (_, theme) = clawback::tui::prepare(
        &config,
        &TuiOptions {
            no_color: Some(true),
            theme: Some("midnight".into()),
            ..TuiOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        theme,
        Theme::load("midnight", None).unwrap().without_colours()
    );
    for base in all_themes() {
        let theme = base.without_colours();
        for app in [
            with_results(60),
            jobs_populated(),
            policy_populated(Role::Admin),
            recipients_populated(),
            metrics_populated(),
        ] {
            let buffer = render_buffer(&app, &theme, 160, 48);
            for cell in buffer.content() {
                assert_eq!(cell.fg, Color::Reset, "{}: {cell:?}", base.name);
                assert_eq!(cell.bg, Color::Reset, "{}: {cell:?}", base.name);
            }
        }
        // Selection still shows, by modifiers.
        let mut app = with_results(60);
        keys(&mut app, &["j"]);
        let buffer = render_buffer(&app, &theme, 80, 24);
        assert!(!theme.selection.add_modifier.is_empty(), "{}", base.name);
        assert!(shows(&buffer[(30, 5)], theme.selection), "{}", base.name);
    }
}

/// Matches the automation guard holds (issue 11): id, indicator, copy count and the command
/// that releases them.
fn held() -> Vec<clawback::engine::view::HeldMatch> {
    use clawback::engine::view::{HeldMatch, HoldState};
    use clawback::intel::IndicatorKey;
    use clawback::model::Disposition;
    let hold = |id: i64, kind: &str, value: &str, copies: u64, messages: u64| HeldMatch {
        id,
        state: HoldState::NeedsConfirmation,
        indicator: IndicatorKey {
            file: "feed.csv".into(),
            kind: kind.into(),
            value: value.into(),
            disposition: Disposition::Malicious,
        },
        reason: format!(
            "{copies} copies in {messages} messages is more than [watch] max_copies_per_cycle = 500"
        ),
        messages,
        copies,
        trace_messages: 328,
        created_at: base_time(),
        updated_at: base_time(),
        confirmed_by: None,
        confirmed_at: None,
        closed_at: None,
    };
    vec![
        hold(3, "subject", "*", 1_470, 273),
        hold(2, "domain", "contoso.com", 880, 41),
    ]
}

#[test]
fn held_matches_show_in_the_policy_and_jobs_panes() {
    let mut policy = policy_populated(Role::Admin);
    policy.on_engine(EngineEvent::HoldsLoaded(held()));
    snap("policy_held", &policy);
    let mut jobs = jobs_populated();
    jobs.on_engine(EngineEvent::HoldsLoaded(held()));
    snap("jobs_held", &jobs);
    let text = render_text(&jobs, &default_theme(), 160, 48);
    assert!(
        text.contains("Held: #3 (1,470 copies): clawback policy confirm 3; subject \"*\" (feed.csv, malicious) in 273 messages (+1 more: clawback policy holds)"),
        "{text}"
    );
    // Released or gone: the lines leave with the holds.
    jobs.on_engine(EngineEvent::HoldsLoaded(vec![]));
    assert!(!render_text(&jobs, &default_theme(), 160, 48).contains("Held:"));
}

/// One campaign in two tenants (same Message-ID, one trace record per tenant): ungrouped, the
/// Tenant column tells the two rows apart; grouped, the row says it spans 2 tenants.
#[test]
fn search_cross_tenant_campaign() {
    let mut app = app();
    app.startup();
    let generation = search_generation(&app);
    let mut rows = search_rows(4);
    rows[1].message.tenant = "fabrikam".into();
    rows[1].message.message_id = rows[0].message.message_id.clone();
    rows[1].subject = rows[0].subject.clone();
    rows[1].campaign = rows[0].campaign;
    app.on_engine(EngineEvent::SearchCompleted {
        generation,
        rows,
        total: 4,
    });
    snap("search_cross_tenant", &app);
    keys(&mut app, &["c"]);
    snap("search_cross_tenant_grouped", &app);
}

/// While the checklist loads: mailboxes located so far, seconds, and how to cancel; after Esc,
/// the cancelled state.
#[test]
fn recipients_loading_progress_and_cancelled() {
    let mut app = with_results(10);
    keys(&mut app, &["enter"]);
    let generation = app.recipients.generation;
    app.on_engine(EngineEvent::RecipientsProgressed {
        generation,
        done: 1234,
        total: 10000,
        elapsed_secs: 27,
    });
    snap("recipients_loading_progress", &app);
    keys(&mut app, &["esc"]);
    app.on_engine(EngineEvent::RecipientsCancelled { generation });
    snap("recipients_cancelled", &app);
}

// ---- layout: scroll positions, counts, spinner, chart (issue 15, build 4) ----

/// The text of screen row `y`.
fn row_text(buffer: &Buffer, y: u16) -> String {
    (0..buffer.area.width)
        .map(|x| buffer[(x, y)].symbol().to_string())
        .collect()
}

#[test]
fn every_list_shows_its_scroll_position_on_its_bottom_border() {
    let theme = default_theme();
    let mut last = with_results(60);
    keys(&mut last, &["G"]);
    snap("search_scrolled_to_last", &last);
    let mut panes = vec![
        ("search", with_results(60), " 1-18 of 60 "),
        ("search at the end", last, " 43-60 of 60 "),
        ("recipients", recipients_populated(), " 1-9 of 9 "),
        ("jobs", jobs_populated(), " 1-2 of 2 "),
        ("audit", audit_populated(), " 1-5 of 5 "),
        ("tenants", tenants_populated(), " 1-3 of 3 "),
    ];
    let mut details = metrics_populated();
    keys(&mut details, &["d"]);
    details.on_engine(EngineEvent::MetricsDetailsLoaded {
        window: MetricsWindow::Day,
        messages: (0..3).map(|i| retracted(i, 10, 1, 0)).collect(),
    });
    panes.push(("metrics details", details, " 1-3 of 3 "));
    for (what, app, indicator) in panes {
        let buffer = render_buffer(&app, &theme, 80, 24);
        let (x, y) = find(&buffer, indicator).unwrap_or_else(|| {
            panic!(
                "{what}: {indicator:?} not on screen:\n{}",
                buffer_text(&buffer)
            )
        });
        // On a border row (the list's box), right-aligned, in the title style.
        let line = row_text(&buffer, y);
        assert!(
            line.trim_end().ends_with(&format!("{indicator}-+")),
            "{what}: {line}"
        );
        assert!(shows(&buffer[(x + 1, y)], theme.title), "{what}");
    }
}

#[test]
fn counts_say_what_they_count_in_the_right_number() {
    let one = render_text(&with_results(1), &default_theme(), 80, 24);
    assert!(one.contains(" Search (1 message) "), "{one}");
    assert!(!one.contains("1 messages"), "{one}");
    let recipients = render_text(&recipients_populated(), &default_theme(), 80, 24);
    // Recipients (rows) are named as such beside the copies the depth line counts; a deeper
    // level counts what it adds.
    assert!(
        recipients.contains("Included: 2 of 3 recipients, 6 not tickable"),
        "{recipients}"
    );
    assert!(
        recipients
            .contains("depth 0: 4 copies in 4 mailboxes   +1: 9 more copies, 6 more mailboxes"),
        "{recipients}"
    );
    let mut one_copy = with_recipients();
    let generation = one_copy.recipients.depth_generation;
    one_copy.on_engine(EngineEvent::DepthPreviewed {
        generation,
        per_depth: vec![clawback::engine::view::DepthCount {
            depth: 0,
            copies: 1,
            mailboxes: 1,
        }],
    });
    let text = render_text(&one_copy, &default_theme(), 80, 24);
    assert!(text.contains("depth 0: 1 copy in 1 mailbox "), "{text}");
}

#[test]
fn a_running_search_keeps_the_count_and_turns_a_spinner() {
    let theme = default_theme();
    let mut app = with_results(60);
    keys(&mut app, &["ctrl+r"]);
    let before = render_text(&app, &theme, 80, 24);
    assert!(
        before.contains(" Search (60 rows; searching [=   ]) "),
        "{before}"
    );
    for _ in 0..2 {
        app.update(clawback::tui::action::Action::Tick);
    }
    assert!(app.dirty);
    let after = render_text(&app, &theme, 80, 24);
    assert!(
        after.contains(" Search (60 rows; searching [  = ]) "),
        "{after}"
    );
    // Once the results are in, the spinner stops and the new count shows.
    let generation = search_generation(&app);
    app.on_engine(EngineEvent::SearchCompleted {
        generation,
        rows: search_rows(5),
        total: 5,
    });
    let done = render_text(&app, &theme, 80, 24);
    assert!(done.contains(" Search (5 messages) "), "{done}");
    assert!(!app.busy());
}

#[test]
fn the_metrics_chart_has_a_value_and_a_time_axis() {
    for (w, h) in SIZES {
        let text = render_text(&metrics_populated(), &default_theme(), w, h);
        // 48 buckets of 30 minutes over the last 24h; the peak (12 x 40) labels the top.
        assert!(
            text.contains("Retractions per 30 minutes, last 24h"),
            "{text}"
        );
        assert!(text.contains("|480|"), "{text}");
        assert!(text.contains("|  0|"), "{text}");
        let axis = text
            .lines()
            .find(|l| l.contains("-24h"))
            .unwrap_or_else(|| panic!("no time axis:\n{text}"));
        assert!(axis.contains("now"), "{axis}");
        assert!(!text.contains("1h 0m"), "{text}");
    }
}

#[test]
fn audit_columns_widen_to_their_content() {
    let mut app = audit_populated();
    let mut entries = audit_entries();
    entries[0].action = "policy_confirm_hold".into();
    entries[0].operator = "responder-on-call".into();
    app.on_engine(EngineEvent::AuditLoaded(entries));
    let text = render_text(&app, &default_theme(), 200, 50);
    assert!(text.contains("responder-on-call"), "{text}");
    assert!(text.contains("policy_confirm_hold"), "{text}");
    assert!(text.contains("plan 3f2a9c0d1e5b: 10 copies junk"), "{text}");
}

// ---- hints, commands and help (issue 15, build 6) ----

/// The hint bar (the last row) of `app` at `width` columns.
fn hint_bar(app: &App, width: u16) -> String {
    let mut app = app.clone();
    app.status = None;
    let buffer = render_buffer(&app, &default_theme(), width, 24);
    row_text(&buffer, 23).trim_end().to_string()
}

#[test]
fn the_hint_bar_offers_what_is_possible_now_at_80_and_200_columns() {
    let mut finished_job = jobs_populated();
    keys(&mut finished_job, &["j"]);
    let mut depth_max = recipients_populated();
    keys(&mut depth_max, &["+", "+", "+", "+", "+"]);
    let mut nobody = recipients_populated();
    keys(&mut nobody, &["n"]);
    let states: Vec<(&str, App)> = vec![
        ("search, no results yet", app()),
        ("search with results", with_results(60)),
        ("search typing", {
            let mut a = with_results(60);
            keys(&mut a, &["/"]);
            a
        }),
        ("recipients, no message", on_pane("2")),
        ("recipients", recipients_populated()),
        ("recipients at max depth", depth_max),
        ("recipients, nobody included", nobody),
        ("jobs, running job with failures", jobs_populated()),
        ("jobs, finished job without failures", finished_job),
        ("jobs, in the outcomes", jobs_82()),
        ("metrics", metrics_populated()),
        ("help", {
            let mut a = with_results(60);
            keys(&mut a, &["?"]);
            a
        }),
    ];
    let mut text = String::new();
    for (what, app) in &states {
        for width in [80, 200] {
            text.push_str(&format!("{what} @{width}:\n{}\n", hint_bar(app, width)));
        }
    }
    insta::assert_snapshot!("hint_bars", text);
    let bar = |i: usize, width: u16| hint_bar(&states[i].1, width);
    // Nothing to open, select or group before results; esc is not advertised where it does
    // nothing.
    assert!(!bar(0, 200).contains("enter open") && !bar(0, 200).contains("down select"));
    assert!(!bar(1, 200).contains("esc"));
    assert!(bar(1, 80).starts_with(" enter open"));
    // Depth only where it can still move; the plan only with someone included.
    assert!(!bar(5, 200).contains("depth+") && bar(5, 200).contains("- depth-"));
    assert!(!bar(6, 200).contains("p plan"));
    // The selected job's own actions come first, so they survive 80 columns: cancel on a
    // running job, restore on a finished one; retry only with failures.
    assert!(
        bar(7, 80).starts_with(" C cancel job  r retry failed"),
        "{}",
        bar(7, 80)
    );
    assert!(bar(8, 80).contains("u restore"), "{}", bar(8, 80));
    assert!(!bar(8, 200).contains("retry"), "{}", bar(8, 200));
    for (what, app) in &states {
        assert!(hint_bar(app, 80).chars().count() <= 80, "{what}");
        if !app.search.editing {
            assert!(hint_bar(app, 80).ends_with("? help"), "{what}");
        }
    }
}

#[test]
fn commands_complete_list_and_answer() {
    let theme = default_theme();
    let mut app = recipients_populated();
    keys(&mut app, &[":"]);
    // The list of commands shows above the line; tab completes a unique prefix.
    let listed = render_text(&app, &theme, 80, 24);
    assert!(
        listed.contains("tab completes: search QUERY  depth 0-5"),
        "{listed}"
    );
    type_text(&mut app, "de");
    let narrowed = render_text(&app, &theme, 80, 24);
    assert!(narrowed.contains("tab completes: depth 0-5"), "{narrowed}");
    assert!(!narrowed.contains("search QUERY"), "{narrowed}");
    keys(&mut app, &["tab"]);
    assert_eq!(app.prompt.as_ref().unwrap().text.value(), "depth ");
    snap("command_line_completed", &app);
    // Too deep: says so, with the maximum.
    type_text(&mut app, "9");
    keys(&mut app, &["enter"]);
    let status = app.status.clone().unwrap();
    assert!(status.is_error);
    assert_eq!(status.text, "depth 9 is too deep: the maximum is 5");
    // A successful command replaces the error.
    keys(&mut app, &[":"]);
    type_text(&mut app, "depth 2");
    keys(&mut app, &["enter"]);
    assert_eq!(app.recipients.depth, 2);
    let status = app.status.clone().unwrap();
    assert!(!status.is_error, "{status:?}");
    assert_eq!(status.text, "depth 2");
    // :refresh says what it refreshes.
    keys(&mut app, &[":"]);
    type_text(&mut app, "refresh");
    keys(&mut app, &["enter"]);
    assert_eq!(app.status.clone().unwrap().text, "refreshing Recipients");
    // No message open: said as such, not as a range problem.
    let mut none = with_results(3);
    keys(&mut none, &[":"]);
    type_text(&mut none, "depth 1");
    keys(&mut none, &["enter"]);
    assert!(
        none.status
            .clone()
            .unwrap()
            .text
            .contains("no message open")
    );
}

#[test]
fn depth_at_its_limits_says_so_and_x_cycles_both_ways() {
    let mut app = recipients_populated();
    keys(&mut app, &["+", "+", "+", "+"]);
    assert_eq!(app.recipients.depth, 5);
    let text = render_text(&app, &default_theme(), 80, 24);
    assert!(text.contains("Depth: 5 (max)"), "{text}");
    keys(&mut app, &["+"]);
    assert_eq!(app.recipients.depth, 5);
    assert_eq!(
        app.status.clone().unwrap().text,
        "depth is at its maximum (5)"
    );
    let start = app.recipients.action;
    keys(&mut app, &["x"]);
    assert_ne!(app.recipients.action, start);
    keys(&mut app, &["X"]);
    assert_eq!(app.recipients.action, start);
    keys(&mut app, &["X"]);
    assert_eq!(app.recipients.action, RetractAction::HardDelete);
}

#[test]
fn every_help_is_complete_and_scrolls_at_80x24() {
    let theme = default_theme();
    // The Search help lists every query field with an example.
    let mut search = with_results(60);
    keys(&mut search, &["?"]);
    let all: String = clawback::tui::ui::help_lines(&search, &theme)
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    for field in clawback::trace::query::FIELDS {
        assert!(
            all.contains(&format!("{field}:")),
            "{field} missing:\n{all}"
        );
    }
    for pane in ["1", "2", "3", "4", "5", "6", "7"] {
        let mut app = app();
        keys(&mut app, &[pane, "?"]);
        let lines = clawback::tui::ui::help_lines(&app, &theme);
        // No heading without lines under it.
        for pair in lines.windows(2) {
            let is_heading =
                |l: &ratatui::text::Line| l.spans.len() == 1 && l.spans[0].style == theme.header;
            assert!(
                !(is_heading(&pair[0]) && is_heading(&pair[1])),
                "pane {pane}: empty section {}",
                pair[0]
            );
        }
        assert!(!is_empty_last(&lines), "pane {pane}");
        // At 80x24 the end of the help is reachable: scrolled to the last line, the
        // line-editing keys show.
        app.set_screen_size(80, 24);
        let top = render_text(&app, &theme, 80, 24);
        keys(&mut app, &["G"]);
        let bottom = render_text(&app, &theme, 80, 24);
        assert!(bottom.contains("line editing"), "pane {pane}:\n{bottom}");
        assert!(bottom.contains("ctrl+w"), "pane {pane}:\n{bottom}");
        assert_ne!(top, bottom, "pane {pane}");
        keys(&mut app, &["g"]);
        assert_eq!(render_text(&app, &theme, 80, 24), top, "pane {pane}");
    }
    let mut tenants = tenants_populated();
    keys(&mut tenants, &["?"]);
    let text = render_text(&tenants, &theme, 160, 48);
    assert!(text.contains("the Retract column"), "{text}");
    snap("help_tenants", &tenants);
}

fn is_empty_last(lines: &[ratatui::text::Line]) -> bool {
    lines.last().is_none_or(|l| l.width() == 0)
}

// ---- side by side from 160 columns (issue 15, build 5) ----

#[test]
fn wide_screens_show_results_and_checklist_side_by_side_with_a_metrics_strip() {
    let theme = default_theme();
    let mut app = recipients_populated();
    keys(&mut app, &["1"]);
    app.on_engine(EngineEvent::MetricsLoaded(metrics(
        MetricsWindow::Day,
        4000,
    )));
    app.on_engine(EngineEvent::JobsLoaded(jobs()));
    let text = render_text(&app, &theme, 200, 50);
    insta::assert_snapshot!("side_by_side@200x50", text);
    let strip = text.lines().nth(1).unwrap();
    assert_eq!(
        strip.trim_end(),
        " last 24h: 4,000 retractions, 96.5% ok  |  job job-42 running 503/1,000 50%  |  throttled 0"
    );
    // One screen row holds a search result and a checklist row.
    assert!(
        text.lines()
            .any(|l| l.contains("11-22 08:34") && l.contains("alice@contoso.example")),
        "{text}"
    );
    // Progress of a job this console runs moves the strip.
    app.on_engine(EngineEvent::JobProgressed(job_progress()));
    let moved = render_text(&app, &theme, 200, 50);
    assert_ne!(moved.lines().nth(1), text.lines().nth(1));
    // Below 160 columns: one pane, no strip.
    let narrow = render_text(&app, &theme, 159, 50);
    assert!(!narrow.contains("alice@contoso.example"), "{narrow}");
    assert!(!narrow.contains("retractions, 96.5% ok"), "{narrow}");
    // The focused pane's border is the focused one; the other is not.
    let buffer = render_buffer(&app, &theme, 200, 50);
    let (x, y) = find(&buffer, "+ Recipients").unwrap();
    assert!(shows(&buffer[(x, y)], theme.border));
    let (x, y) = find(&buffer, "+ Search").unwrap();
    assert!(shows(&buffer[(x, y)], theme.border_focused));
}
