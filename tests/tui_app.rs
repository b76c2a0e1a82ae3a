//! Layer 2: the headless console driven by key presses and engine events, no terminal.

mod tui_support;

use clawback::engine::Command;
use clawback::engine::event::{EngineEvent, QueryErrorView, StoreChanges};
use clawback::engine::view::{
    AuditFilter, AuditVerification, Confirmation, CopyOutcome, JobId, JobPhase, JobView,
    MetricsWindow, PlanId,
};
use clawback::model::{Disposition, RetractAction, Role};
use clawback::tui::action::Action;
use clawback::tui::app::{App, Confirm, DEBOUNCE_TICKS, Loadable, OutcomeFilter, Pane};
use clawback::tui::keymap::{KeyChord, Keymap, KeymapError, Mode};
use crossterm::event::KeyEventKind;
use proptest::prelude::*;
use std::collections::BTreeMap;
use tui_support::*;

fn ticks(app: &mut App, n: u8) -> Vec<Command> {
    (0..n).flat_map(|_| app.update(Action::Tick)).collect()
}

/// An app with results for `n` messages on screen.
fn app_with_results(n: usize) -> App {
    let mut app = app();
    app.startup();
    let generation = app.search.generation;
    app.on_engine(EngineEvent::SearchCompleted {
        generation,
        rows: search_rows(n),
        total: n as u64,
    });
    app
}

/// An app on the recipients pane of message 0, recipients loaded.
fn app_with_recipients() -> App {
    let mut app = app_with_results(10);
    let commands = keys(&mut app, &["enter"]);
    let Some(Command::LoadRecipients { generation, .. }) = commands.first().cloned() else {
        panic!("expected LoadRecipients, got {commands:?}");
    };
    app.on_engine(EngineEvent::RecipientsLoaded {
        generation,
        rows: recipients(),
    });
    app
}

#[test]
fn typing_is_debounced_into_exactly_one_search_with_the_latest_generation() {
    let mut app = app();
    let first = app.startup();
    assert!(matches!(
        first.as_slice(),
        [
            Command::Search { generation: 1, .. },
            Command::FindInterruptedJobs
        ]
    ));
    assert!(keys(&mut app, &["/"]).is_empty());
    assert_eq!(app.mode(), Mode::Query);
    // Typing sends nothing, even with a tick or two between keys.
    assert!(type_text(&mut app, "from:evil").is_empty());
    assert!(ticks(&mut app, DEBOUNCE_TICKS - 1).is_empty());
    assert!(type_text(&mut app, ".example").is_empty());
    assert!(ticks(&mut app, DEBOUNCE_TICKS - 1).is_empty());
    let sent = ticks(&mut app, 1 + 10);
    assert_eq!(
        sent,
        vec![Command::Search {
            generation: 2,
            query: "from:evil.example".into(),
            limit: clawback::tui::app::SEARCH_LIMIT,
        }]
    );
    // Typed letters that are global keys elsewhere ("q", "j") type in the query box.
    assert!(type_text(&mut app, " q").is_empty());
    assert!(!app.should_quit);
    assert_eq!(app.search.query, "from:evil.example q");
}

#[test]
fn enter_in_the_query_box_searches_at_once_and_cancels_the_debounce() {
    let mut app = app();
    app.startup();
    keys(&mut app, &["/"]);
    type_text(&mut app, "subject:invoice");
    let sent = keys(&mut app, &["enter"]);
    assert!(
        matches!(sent.as_slice(), [Command::Search { generation: 2, query, .. }] if query == "subject:invoice")
    );
    assert!(
        ticks(&mut app, 10).is_empty(),
        "the debounced search must not go out too"
    );
}

#[test]
fn a_stale_search_answer_is_dropped() {
    let mut app = app();
    app.startup();
    keys(&mut app, &["/"]);
    type_text(&mut app, "a");
    ticks(&mut app, DEBOUNCE_TICKS);
    assert_eq!(app.search.generation, 2);
    // The answer to generation 1 arrives late.
    app.on_engine(EngineEvent::SearchCompleted {
        generation: 1,
        rows: search_rows(3),
        total: 3,
    });
    assert_eq!(app.search.results, Loadable::Loading);
    app.on_engine(EngineEvent::SearchFailed {
        generation: 1,
        error: QueryErrorView {
            column: 1,
            message: "old".into(),
        },
    });
    assert_eq!(app.search.error, None);
    app.on_engine(EngineEvent::SearchCompleted {
        generation: 2,
        rows: search_rows(5),
        total: 5,
    });
    assert_eq!(app.search.results.ready().map(|r| r.rows.len()), Some(5));
}

#[test]
fn selecting_a_row_loads_its_recipients() {
    let mut app = app_with_results(10);
    let commands = keys(&mut app, &["j", "j", "enter"]);
    assert_eq!(
        commands,
        vec![Command::LoadRecipients {
            generation: 1,
            message_ids: vec![message_ref(2).message_id],
        }]
    );
    assert_eq!(app.focus, Pane::Recipients);
    assert_eq!(app.recipients.rows, Loadable::Loading);
}

#[test]
fn recipients_loaded_previews_depth_zero_and_a_stale_load_is_dropped() {
    let mut app = app_with_results(10);
    keys(&mut app, &["enter"]);
    keys(&mut app, &["1", "j", "enter"]); // a second message: generation 2
    let stale = app.on_engine(EngineEvent::RecipientsLoaded {
        generation: 1,
        rows: recipients(),
    });
    assert!(stale.is_empty());
    assert_eq!(app.recipients.rows, Loadable::Loading);
    let commands = app.on_engine(EngineEvent::RecipientsLoaded {
        generation: 2,
        rows: recipients(),
    });
    assert!(matches!(
        commands.as_slice(),
        [Command::PreviewDepth {
            depth: 0,
            generation: 1,
            ..
        }]
    ));
}

#[test]
fn unticking_two_recipients_then_depth_plus_one_previews_with_the_included_set() {
    let mut app = app_with_recipients();
    // Rows: alice, bob (contoso), carol (fabrikam) located; then erin (unresolved), sales
    // (DL), dave (not authorized), frank (gone), grace (in another job), partner (external).
    let commands = keys(&mut app, &["space", "j", "space"]);
    assert!(
        commands.is_empty(),
        "toggles are debounced, not sent per key"
    );
    let commands = keys(&mut app, &["+"]);
    assert_eq!(
        commands,
        vec![Command::PreviewDepth {
            generation: 2,
            message_ids: vec![message_ref(0).message_id],
            depth: 1,
            // Only what the operator unticked: the rows that cannot be ticked (the DL, the
            // external address…) do not keep anyone out at deeper depths.
            excluded: vec!["alice@contoso.example".into(), "bob@contoso.example".into(),],
        }]
    );
    // A stale depth answer is dropped; the current one shows.
    app.on_engine(EngineEvent::DepthPreviewed {
        generation: 1,
        per_depth: depth_counts(0),
    });
    assert_eq!(app.recipients.depth_preview, Loadable::Loading);
    app.on_engine(EngineEvent::DepthPreviewed {
        generation: 2,
        per_depth: depth_counts(1),
    });
    assert_eq!(
        app.recipients.depth_preview,
        Loadable::Ready(depth_counts(1))
    );
}

#[test]
fn choosing_junk_builds_a_plan_with_the_selection_depth_and_action() {
    let mut app = app_with_recipients();
    keys(&mut app, &["space", "j", "space", "+"]);
    // The selector starts on Junk; cycle once round to show it wraps.
    assert_eq!(app.recipients.action, RetractAction::Junk);
    keys(&mut app, &["x", "x", "x", "x"]);
    assert_eq!(app.recipients.action, RetractAction::Junk);
    let commands = keys(&mut app, &["p"]);
    let [Command::BuildPlan(request)] = commands.as_slice() else {
        panic!("expected BuildPlan, got {commands:?}");
    };
    assert_eq!(request.message_ids, vec!["<m0@evil.example>".to_string()]);
    assert_eq!(request.action, RetractAction::Junk);
    assert_eq!(request.depth, 1);
    assert_eq!(
        request.exclude,
        vec![
            "alice@contoso.example".to_string(),
            "bob@contoso.example".into(),
        ]
    );
    assert!(request.only.is_empty());
    assert_eq!(app.mode(), Mode::Plan);
}

#[test]
fn plan_built_opens_the_confirmation_and_enter_applies_it() {
    let mut app = app_with_recipients();
    keys(&mut app, &["p"]);
    // Enter while the plan is still being built does nothing.
    assert!(keys(&mut app, &["enter"]).is_empty());
    app.on_engine(EngineEvent::PlanBuilt(plan_summary(
        RetractAction::Junk,
        42,
    )));
    let commands = keys(&mut app, &["enter"]);
    assert_eq!(
        commands,
        vec![Command::ApplyPlan {
            plan_id: PlanId("plan-7".into()),
            confirmation: Confirmation { typed_copies: None },
        }]
    );
    assert!(app.plan.is_none());
    assert_eq!(app.focus, Pane::Jobs);
}

#[test]
fn escape_discards_the_plan() {
    let mut app = app_with_recipients();
    keys(&mut app, &["p"]);
    app.on_engine(EngineEvent::PlanBuilt(plan_summary(
        RetractAction::Trash,
        4,
    )));
    assert_eq!(
        keys(&mut app, &["esc"]),
        vec![Command::DiscardPlan {
            plan_id: PlanId("plan-7".into())
        }]
    );
    assert!(app.plan.is_none());
}

#[test]
fn hard_delete_needs_the_exact_number_of_copies_typed() {
    let mut app = app_with_recipients();
    keys(&mut app, &["x", "x", "x"]);
    assert_eq!(app.recipients.action, RetractAction::HardDelete);
    keys(&mut app, &["p"]);
    app.on_engine(EngineEvent::PlanBuilt(plan_summary(
        RetractAction::HardDelete,
        1234,
    )));
    // Nothing typed: refused.
    assert!(keys(&mut app, &["enter"]).is_empty());
    // Wrong count: refused, with a message saying what to type.
    type_text(&mut app, "123");
    assert!(keys(&mut app, &["enter"]).is_empty());
    let refusal = app.plan.as_ref().and_then(|p| p.refusal.clone()).unwrap();
    assert!(refusal.contains("type 1234"), "{refusal}");
    // Letters do not type; "q" does not quit from the confirmation.
    type_text(&mut app, "q");
    assert!(!app.should_quit);
    type_text(&mut app, "45");
    assert!(keys(&mut app, &["enter"]).is_empty(), "12345 is not 1234");
    keys(&mut app, &["backspace"]);
    let commands = keys(&mut app, &["enter"]);
    assert_eq!(
        commands,
        vec![Command::ApplyPlan {
            plan_id: PlanId("plan-7".into()),
            confirmation: Confirmation {
                typed_copies: Some(1234)
            },
        }]
    );
}

#[test]
fn a_plan_with_nobody_included_is_not_built() {
    let mut app = app_with_recipients();
    keys(&mut app, &["n"]);
    assert!(keys(&mut app, &["p"]).is_empty());
    assert!(app.plan.is_none());
    assert!(app.status.as_ref().unwrap().is_error);
}

#[test]
fn select_all_none_invert_and_filter_apply_to_the_visible_rows() {
    let mut app = app_with_recipients();
    keys(&mut app, &["a"]);
    // Every row that can be ticked: the three located mailboxes.
    assert_eq!(app.included_count(), 3);
    keys(&mut app, &["/"]);
    type_text(&mut app, "contoso");
    keys(&mut app, &["enter"]);
    // alice, bob, sales, dave, frank, grace.
    assert_eq!(app.recipients.visible.len(), 6);
    keys(&mut app, &["i"]);
    assert_eq!(
        app.recipients.included,
        vec![false, false, true, false, false, false, false, false, false],
        "only the visible rows that can be ticked were inverted"
    );
}

#[test]
fn job_events_fill_the_jobs_pane_and_restore_targets_the_selected_job() {
    let mut app = app_with_recipients();
    keys(&mut app, &["p"]);
    app.on_engine(EngineEvent::PlanBuilt(plan_summary(
        RetractAction::Junk,
        1000,
    )));
    keys(&mut app, &["enter"]);
    let commands = app.on_engine(EngineEvent::JobStarted {
        job: clawback::engine::view::JobId("job-42".into()),
        plan_id: Some(PlanId("plan-7".into())),
        total: 1000,
    });
    assert_eq!(commands, vec![Command::LoadJobs]);
    app.on_engine(EngineEvent::JobsLoaded(jobs()));
    app.on_engine(EngineEvent::JobProgressed(job_progress()));
    assert_eq!(app.progress_of(&jobs()[0].id), Some(&job_progress()));
    // Restore is refused while the job runs; cancel is offered.
    assert!(keys(&mut app, &["u"]).is_empty());
    assert_eq!(
        keys(&mut app, &["C"]),
        vec![Command::CancelJob {
            job: jobs()[0].id.clone()
        }]
    );
    // Retry failed: the reason under the cursor (right moves to the second reason).
    assert_eq!(
        keys(&mut app, &["l", "r"]),
        vec![Command::RetryFailed {
            job: jobs()[0].id.clone(),
            reason: clawback::model::FailureReason::NotAuthorized
        }]
    );
    // The finished job can be restored, once confirmed.
    assert!(keys(&mut app, &["j", "u"]).is_empty());
    assert_eq!(app.mode(), Mode::Confirm);
    assert_eq!(
        keys(&mut app, &["y"]),
        vec![Command::Restore {
            job: jobs()[1].id.clone(),
            only: vec![]
        }]
    );
}

#[test]
fn keys_in_the_wrong_state_do_nothing_harmful() {
    let mut app = app();
    // Recipients without a message, jobs without jobs, policy not loaded, plan keys without a plan.
    for pane in ["2", "3", "5", "6", "7"] {
        keys(&mut app, &[pane]);
        app.on_engine(EngineEvent::EngineFailed {
            message: "offline".into(),
        });
        let commands = keys(
            &mut app,
            &[
                "space", "a", "n", "i", "+", "-", "x", "p", "u", "r", "C", "w", "enter", "j", "G",
            ],
        );
        assert!(
            commands.iter().all(|c| !matches!(
                c,
                Command::ApplyPlan { .. }
                    | Command::BuildPlan(_)
                    | Command::Restore { .. }
                    | Command::RetryFailed { .. }
                    | Command::CancelJob { .. }
                    | Command::SavePolicy(_)
            )),
            "pane {pane}: {commands:?}"
        );
    }
    assert!(app.plan.is_none());
    assert!(!app.should_quit);
}

#[test]
fn release_and_repeat_events_are_ignored() {
    let mut app = app_with_results(10);
    for kind in [KeyEventKind::Release, KeyEventKind::Repeat] {
        assert!(app.handle_key(key_with_kind("enter", kind)).is_empty());
        assert!(app.handle_key(key_with_kind("q", kind)).is_empty());
    }
    assert!(!app.should_quit);
    assert_eq!(app.focus, Pane::Search);
    assert_eq!(
        app.handle_key(key_with_kind("q", KeyEventKind::Press)),
        vec![Command::Shutdown]
    );
    assert!(app.should_quit);
}

/// Issue 12 part 8: `d` lists the messages retracted in the window (by retraction time, from
/// the engine), not a search on received time; enter searches the selected one; `d` goes back.
#[test]
fn view_details_lists_the_messages_retracted_in_the_window() {
    let mut app = app();
    app.startup();
    assert_eq!(
        keys(&mut app, &["4"]),
        vec![Command::LoadMetrics {
            window: MetricsWindow::Day
        }]
    );
    assert_eq!(
        keys(&mut app, &["w"]),
        vec![Command::LoadMetrics {
            window: MetricsWindow::Week
        }]
    );
    // An answer for another window is not shown.
    app.on_engine(EngineEvent::MetricsLoaded(metrics(MetricsWindow::Day, 100)));
    assert_eq!(app.metrics.snapshot, Loadable::Loading);
    assert_eq!(
        keys(&mut app, &["d"]),
        vec![Command::LoadMetricsDetails {
            window: MetricsWindow::Week
        }]
    );
    assert_eq!(app.focus, Pane::Metrics);
    assert_eq!(app.metrics.details, Some(Loadable::Loading));
    app.on_engine(EngineEvent::MetricsDetailsLoaded {
        window: MetricsWindow::Day,
        messages: vec![retracted(9, 1, 0, 0)],
    });
    assert_eq!(app.metrics.details, Some(Loadable::Loading));
    let messages = vec![retracted(1, 134, 4, 0), retracted(2, 71, 0, 71)];
    app.on_engine(EngineEvent::MetricsDetailsLoaded {
        window: MetricsWindow::Week,
        messages: messages.clone(),
    });
    assert_eq!(app.metrics.details, Some(Loadable::Ready(messages)));
    // The next window reloads both the cards and the list.
    assert_eq!(
        keys(&mut app, &["w"]),
        vec![
            Command::LoadMetrics {
                window: MetricsWindow::Month
            },
            Command::LoadMetricsDetails {
                window: MetricsWindow::Month
            }
        ]
    );
    app.on_engine(EngineEvent::MetricsDetailsLoaded {
        window: MetricsWindow::Month,
        messages: vec![retracted(1, 134, 4, 0), retracted(2, 71, 0, 71)],
    });
    let generation = search_generation(&app);
    assert_eq!(
        keys(&mut app, &["j", "enter"]),
        vec![Command::Search {
            generation: generation + 1,
            query: "msgid:<m2@example.com>".into(),
            limit: clawback::tui::app::SEARCH_LIMIT,
        }]
    );
    assert_eq!(app.focus, Pane::Search);
    // Back on Metrics, `d` closes the list.
    keys(&mut app, &["4"]);
    assert!(keys(&mut app, &["d"]).is_empty());
    assert_eq!(app.metrics.details, None);
}

/// Issue 12 part 4: a store change reloads every pane already loaded that shows it — and only
/// those — keeping what is on screen until the answer; the audit chain line is never left
/// saying "verified, N entries" beside a longer list.
#[test]
fn a_store_change_reloads_the_loaded_panes_without_a_key() {
    let mut app = app_with_results(10);
    keys(&mut app, &["4"]);
    app.on_engine(EngineEvent::MetricsLoaded(metrics(MetricsWindow::Day, 164)));
    keys(&mut app, &["6", "v"]);
    app.on_engine(EngineEvent::AuditLoaded(audit_entries()));
    app.on_engine(EngineEvent::AuditVerified(AuditVerification {
        entries: 5,
        broken_at: None,
    }));
    let generation = search_generation(&app);
    // Jobs were never shown, no message is open: neither is loaded.
    let commands = app.on_engine(EngineEvent::StoreChanged(StoreChanges {
        jobs: true,
        items: true,
        audit: true,
        trace: false,
    }));
    assert_eq!(
        commands,
        vec![
            Command::LoadMetrics {
                window: MetricsWindow::Day
            },
            Command::LoadAudit {
                filter: AuditFilter::default()
            },
            Command::VerifyAudit,
            Command::Search {
                generation: generation + 1,
                query: String::new(),
                limit: clawback::tui::app::SEARCH_LIMIT,
            },
        ]
    );
    assert_eq!(app.audit.verification, Loadable::Loading);
    // What was on screen stays until the answers come.
    assert!(app.metrics.snapshot.ready().is_some());
    assert!(app.search.results.ready().is_some());
    assert!(app.audit.entries.ready().is_some());
    app.on_engine(EngineEvent::MetricsLoaded(metrics(MetricsWindow::Day, 205)));
    assert_eq!(app.metrics.snapshot.ready().unwrap().total, 205);

    // Only new mail: the search (its rows may change), nothing else.
    let commands = app.on_engine(EngineEvent::StoreChanged(StoreChanges {
        trace: true,
        ..StoreChanges::default()
    }));
    assert!(
        matches!(commands.as_slice(), [Command::Search { .. }]),
        "{commands:?}"
    );
    // While the operator types a query, their own search comes; none is sent behind it.
    keys(&mut app, &["1", "/"]);
    type_text(&mut app, "from:x");
    assert!(
        app.on_engine(EngineEvent::StoreChanged(StoreChanges {
            trace: true,
            ..StoreChanges::default()
        }))
        .is_empty()
    );
}

/// A policy saved elsewhere (every save is audited) reloads the Policy pane, but never over
/// the operator's unsaved changes.
#[test]
fn an_audited_change_reloads_the_policy_unless_it_has_unsaved_changes() {
    let mut app = admin_app();
    keys(&mut app, &["3"]);
    app.on_engine(EngineEvent::PolicyLoaded(policy(3)));
    let audit = StoreChanges {
        audit: true,
        ..StoreChanges::default()
    };
    assert_eq!(
        app.on_engine(EngineEvent::StoreChanged(audit)),
        vec![Command::LoadPolicy]
    );
    keys(&mut app, &["space"]);
    assert!(app.policy_modified());
    assert!(app.on_engine(EngineEvent::StoreChanged(audit)).is_empty());
}

/// A job start or end reloads the open message's recipients (their last outcome) and the
/// Jobs pane with the outcomes shown; item progress alone does not ask the provider again.
#[test]
fn a_job_change_reloads_the_open_messages_recipients_and_the_jobs() {
    let mut app = app_with_recipients();
    keys(&mut app, &["5"]);
    app.on_engine(EngineEvent::JobsLoaded(jobs()));
    let shown = jobs()[0].id.clone();
    app.on_engine(EngineEvent::JobOutcomesLoaded {
        job: shown.clone(),
        outcomes: outcomes(),
    });
    let progress = app.on_engine(EngineEvent::StoreChanged(StoreChanges {
        items: true,
        ..StoreChanges::default()
    }));
    assert!(
        !progress
            .iter()
            .any(|c| matches!(c, Command::LoadRecipients { .. })),
        "{progress:?}"
    );
    assert!(progress.contains(&Command::LoadJobs), "{progress:?}");
    assert!(progress.contains(&Command::LoadJobOutcomes { job: shown }));
    let generation = app.recipients.generation;
    let commands = app.on_engine(EngineEvent::StoreChanged(StoreChanges {
        jobs: true,
        ..StoreChanges::default()
    }));
    assert!(
        commands.contains(&Command::LoadRecipients {
            generation: generation + 1,
            message_ids: vec![message_ref(0).message_id],
        }),
        "{commands:?}"
    );
}

#[test]
fn the_policy_is_edited_locally_and_saved_only_by_an_admin() {
    for (mut app, role) in [(app(), Role::Responder), (admin_app(), Role::Admin)] {
        assert_eq!(keys(&mut app, &["3"]), vec![Command::LoadPolicy]);
        app.on_engine(EngineEvent::PolicyLoaded(policy(3)));
        // Bulk (row 4) -> Hard Delete (column 4); Post Delivery interval +5 min; phish on.
        keys(
            &mut app,
            &["G", "k", "k", "l", "l", "l", "l", "space", "j", "+", "s"],
        );
        assert!(app.policy_modified());
        let draft = app.policy.draft.clone().unwrap();
        assert_eq!(
            draft.action_for(Disposition::Bulk),
            RetractAction::HardDelete
        );
        assert_eq!(draft.post_delivery.interval_secs, 1200);
        assert!(draft.phish_submission.enabled);
        let commands = keys(&mut app, &["w"]);
        if role == Role::Admin {
            assert_eq!(commands, vec![Command::SavePolicy(draft)]);
        } else {
            assert!(commands.is_empty());
            assert!(
                app.status
                    .as_ref()
                    .unwrap()
                    .text
                    .contains("needs role admin")
            );
        }
    }
}

#[test]
fn denied_and_engine_failures_become_messages_not_crashes() {
    let mut app = app_with_recipients();
    keys(&mut app, &["p"]);
    app.on_engine(EngineEvent::Denied {
        action: "build plan".into(),
        role: Role::Viewer,
        required: Role::Responder,
    });
    assert!(app.plan.is_none());
    let status = app.status.clone().unwrap();
    assert!(
        status.is_error && status.text.contains("needs role responder"),
        "{status:?}"
    );
    keys(&mut app, &["6"]);
    app.on_engine(EngineEvent::EngineFailed {
        message: "engine task panicked: boom".into(),
    });
    assert_eq!(
        app.audit.entries,
        Loadable::Failed("engine task panicked: boom".into())
    );
}

#[test]
fn the_command_line_searches_sets_depth_and_quits() {
    let mut app = app_with_recipients();
    keys(&mut app, &[":"]);
    type_text(&mut app, "depth 2");
    let commands = keys(&mut app, &["enter"]);
    assert!(matches!(
        commands.as_slice(),
        [Command::PreviewDepth { depth: 2, .. }]
    ));
    keys(&mut app, &[":"]);
    type_text(&mut app, "bogus");
    assert!(keys(&mut app, &["enter"]).is_empty());
    assert!(
        app.status
            .as_ref()
            .unwrap()
            .text
            .contains("unknown command")
    );
    keys(&mut app, &[":"]);
    type_text(&mut app, "search from:x");
    let commands = keys(&mut app, &["enter"]);
    assert!(matches!(commands.as_slice(), [Command::Search { query, .. }] if query == "from:x"));
    keys(&mut app, &[":"]);
    type_text(&mut app, "q");
    assert_eq!(keys(&mut app, &["enter"]), vec![Command::Shutdown]);
}

#[test]
fn grouping_collapses_campaigns() {
    let mut app = app_with_results(8);
    keys(&mut app, &["c"]);
    let view = &app.search.results.ready().unwrap().view;
    // Rows 3 and 7 have no campaign; the rest split into two campaigns.
    assert_eq!(view.len(), 4);
}

#[test]
fn keymap_duplicates_are_rejected_naming_both_actions() {
    let mut overrides = BTreeMap::new();
    overrides.insert(
        "recipients".to_string(),
        BTreeMap::from([("select_all".to_string(), "space".to_string())]),
    );
    let err = Keymap::with_overrides(&overrides).unwrap_err();
    assert_eq!(
        err,
        KeymapError::Duplicate {
            mode: "recipients".into(),
            key: "space".into(),
            first: "toggle_include".into(),
            second: "select_all".into(),
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("toggle_include") && text.contains("select_all"),
        "{text}"
    );
}

#[test]
fn keymap_overrides_remap_and_bad_entries_say_where() {
    let mut overrides = BTreeMap::new();
    overrides.insert(
        "recipients".to_string(),
        BTreeMap::from([("toggle_include".to_string(), "t ctrl+t".to_string())]),
    );
    let keymap = Keymap::with_overrides(&overrides).unwrap();
    let mut app = App::new(keymap, Role::Responder);
    app.startup();
    app.on_engine(EngineEvent::SearchCompleted {
        generation: 1,
        rows: search_rows(2),
        total: 2,
    });
    keys(&mut app, &["enter"]);
    app.on_engine(EngineEvent::RecipientsLoaded {
        generation: 1,
        rows: recipients(),
    });
    keys(&mut app, &["t"]);
    assert!(!app.recipients.included[0]);
    keys(&mut app, &["space"]);
    assert!(!app.recipients.included[0], "space no longer toggles");

    let bad = |mode: &str, action: &str, key: &str| {
        let mut o = BTreeMap::new();
        o.insert(
            mode.to_string(),
            BTreeMap::from([(action.to_string(), key.to_string())]),
        );
        Keymap::with_overrides(&o).unwrap_err().to_string()
    };
    assert_eq!(
        bad("serch", "quit", "q"),
        "[ui.keys.serch]: unknown mode; expected one of: global search query recipients plan policy metrics jobs audit tenants prompt confirm"
    );
    assert_eq!(
        bad("global", "explode", "x"),
        "[ui.keys.global]: unknown action \"explode\""
    );
    assert_eq!(
        bad("global", "quit", "hyper+q"),
        "[ui.keys.global] quit = \"hyper+q\": unknown modifier \"hyper\" (use ctrl, alt or shift)"
    );
    // Internal actions cannot be bound.
    assert_eq!(
        bad("global", "tick", "t"),
        "[ui.keys.global]: unknown action \"tick\""
    );
}

#[test]
fn no_default_binding_on_keys_terminals_take() {
    let keymap = Keymap::defaults().unwrap();
    for mode in Mode::ALL {
        for binding in keymap.bindings(mode) {
            for key in &binding.keys {
                for banned in [
                    "ctrl+b", "ctrl+a", "ctrl+s", "ctrl+q", "ctrl+h", "ctrl+m", "ctrl+i",
                ] {
                    assert_ne!(
                        *key,
                        KeyChord::parse(banned).unwrap(),
                        "{mode:?} {binding:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_bindable_action_has_a_default_key() {
    let keymap = Keymap::defaults().unwrap();
    let names = [
        "quit",
        "help",
        "next_pane",
        "prev_pane",
        "show_search",
        "show_recipients",
        "show_policy",
        "show_metrics",
        "show_jobs",
        "show_audit",
        "show_tenants",
        "command_line",
        "filter",
        "refresh",
        "toggle_mouse",
        "cancel",
        "submit",
        "confirm",
        "move_up",
        "move_down",
        "move_left",
        "move_right",
        "page_up",
        "page_down",
        "first",
        "last",
        "toggle_grouping",
        "toggle_include",
        "select_all",
        "select_none",
        "invert_selection",
        "depth_increase",
        "depth_decrease",
        "next_retract_action",
        "preview_plan",
        "cancel_job",
        "retry_failed",
        "restore",
        "resume_job",
        "next_outcome_filter",
        "set_policy_cell",
        "toggle_post_delivery",
        "toggle_phish_submission",
        "interval_increase",
        "interval_decrease",
        "save_policy",
        "next_window",
        "view_details",
        "verify_audit",
    ];
    for name in names {
        let action = Action::from_name(name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(action.name().as_deref(), Some(name));
        let bound = Mode::ALL.iter().any(|m| {
            keymap
                .bindings(*m)
                .iter()
                .any(|b| b.action == action && !b.keys.is_empty())
        });
        assert!(bound, "{name} has no default key");
    }
}

fn any_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "q",
        "?",
        "tab",
        "shift+tab",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        ":",
        "/",
        "ctrl+r",
        "M",
        "esc",
        "enter",
        "up",
        "down",
        "left",
        "right",
        "j",
        "k",
        "h",
        "l",
        "g",
        "G",
        "pageup",
        "pagedown",
        "c",
        "space",
        "a",
        "n",
        "i",
        "+",
        "-",
        "x",
        "p",
        "C",
        "r",
        "u",
        "s",
        "w",
        "d",
        "v",
        "backspace",
        "0",
        "9",
        "z",
        "y",
        "R",
        "f",
    ])
    .prop_map(str::to_string)
}

fn any_event() -> impl Strategy<Value = EngineEvent> {
    prop::sample::select(vec![
        EngineEvent::SearchCompleted {
            generation: 1,
            rows: search_rows(30),
            total: 30,
        },
        query_error(),
        EngineEvent::RecipientsLoaded {
            generation: 1,
            rows: recipients(),
        },
        EngineEvent::DepthPreviewed {
            generation: 1,
            per_depth: depth_counts(2),
        },
        EngineEvent::PlanBuilt(plan_summary(RetractAction::HardDelete, 3)),
        EngineEvent::JobsLoaded(jobs()),
        EngineEvent::JobProgressed(job_progress()),
        EngineEvent::PolicyLoaded(policy(1)),
        EngineEvent::MetricsLoaded(metrics(MetricsWindow::Day, 500)),
        EngineEvent::AuditLoaded(audit_entries()),
        EngineEvent::TenantsLoaded(tenants()),
        EngineEvent::EngineFailed {
            message: "x".into(),
        },
        EngineEvent::JobsLoaded(vec![job_82(), restore_job_of_82()]),
        EngineEvent::JobOutcomesLoaded {
            job: JobId("7".into()),
            outcomes: outcomes_82(),
        },
        EngineEvent::JobStarted {
            job: JobId("9".into()),
            plan_id: None,
            total: 3,
        },
        EngineEvent::JobLeased {
            job: JobId("9".into()),
            holder: "pid 1 on elsewhere".into(),
        },
        EngineEvent::InterruptedJobsFound(vec![job_82()]),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Any interleaving of keys, ticks and engine events keeps the app consistent and drawable,
    /// and never applies a Hard Delete plan without the typed count.
    #[test]
    fn random_keys_and_events_never_break_the_console(
        steps in prop::collection::vec(prop_oneof![
            any_key().prop_map(Ok),
            any_event().prop_map(Err),
        ], 1..60)
    ) {
        let mut app = admin_app();
        app.startup();
        let theme = clawback::tui::theme::Theme::default_theme();
        for step in steps {
            let commands = match step {
                Ok(key) => app.handle_key(press(&key)),
                Err(event) => app.on_engine(event),
            };
            app.update(Action::Tick);
            for c in commands {
                if let Command::ApplyPlan { confirmation, .. } = c {
                    prop_assert_eq!(confirmation.typed_copies, Some(3));
                }
            }
            render_buffer(&app, &theme, 80, 24);
        }
    }
}

// ---- issue 12: jobs pane and safety ----

fn job(id: &str) -> JobView {
    let mut j = job_82();
    j.id = JobId(id.into());
    j
}

fn status(app: &App) -> String {
    app.status
        .as_ref()
        .map(|s| s.text.clone())
        .unwrap_or_default()
}

/// An app on the Jobs pane with job 7 (82 copies) loaded and selected.
fn app_with_job_82() -> App {
    let mut app = app();
    keys(&mut app, &["5"]);
    app.on_engine(EngineEvent::JobsLoaded(vec![job_82()]));
    app
}

#[test]
fn the_job_just_started_is_selected_when_the_list_arrives() {
    let mut app = app();
    keys(&mut app, &["5"]);
    app.on_engine(EngineEvent::JobsLoaded(vec![
        job("12"),
        job("11"),
        job("10"),
    ]));
    // The operator looks at an older job, then confirms a plan elsewhere.
    keys(&mut app, &["j", "j"]);
    assert_eq!(app.selected_job().unwrap().id, JobId("10".into()));
    let commands = app.on_engine(EngineEvent::JobStarted {
        job: JobId("13".into()),
        plan_id: Some(PlanId("plan-7".into())),
        total: 82,
    });
    assert_eq!(commands, vec![Command::LoadJobs]);
    app.on_engine(EngineEvent::JobsLoaded(vec![
        job("13"),
        job("12"),
        job("11"),
        job("10"),
    ]));
    assert_eq!(app.selected_job().unwrap().id, JobId("13".into()));
    // A later reload with a newer job (started elsewhere) keeps the cursor on job 13.
    app.on_engine(EngineEvent::JobsLoaded(vec![
        job("14"),
        job("13"),
        job("12"),
        job("11"),
        job("10"),
    ]));
    assert_eq!(app.selected_job().unwrap().id, JobId("13".into()));
}

#[test]
fn outcomes_scroll_to_the_last_failures_first_and_filter_by_outcome_or_reason() {
    let mut app = app_with_job_82();
    assert_eq!(
        keys(&mut app, &["enter"]),
        vec![Command::LoadJobOutcomes {
            job: JobId("7".into())
        }]
    );
    app.on_engine(EngineEvent::JobOutcomesLoaded {
        job: JobId("7".into()),
        outcomes: outcomes_82(),
    });
    assert!(app.jobs.outcomes_focused);
    assert_eq!(app.jobs.outcome_rows.len(), 82);
    // Every one of the 82 can be reached: down, page down, last, first.
    keys(&mut app, &["j", "pagedown"]);
    assert_eq!(app.jobs.outcome_selected, 11);
    keys(&mut app, &["G"]);
    assert_eq!(app.jobs.outcome_selected, 81);
    let theme = clawback::tui::theme::Theme::default_theme();
    let text = render_text(&app, &theme, 80, 24);
    assert!(text.contains("user81@contoso.example"), "{text}");
    assert!(text.contains("of 82"), "{text}");
    keys(&mut app, &["g"]);
    let text = render_text(&app, &theme, 80, 24);
    // Failures first.
    let first = text
        .lines()
        .position(|l| l.contains("failed: already_gone"));
    let ok = text.lines().position(|l| l.contains("ok: junk"));
    assert!(first.unwrap() < ok.unwrap(), "{text}");
    // f: failed only, then not settled, ok, skipped, all.
    keys(&mut app, &["f"]);
    assert_eq!(app.jobs.outcome_filter, OutcomeFilter::Failed);
    assert_eq!(app.jobs.outcome_rows.len(), 5);
    keys(&mut app, &["f", "f"]);
    assert_eq!(app.jobs.outcome_filter, OutcomeFilter::Done);
    assert_eq!(app.jobs.outcome_rows.len(), 77);
    keys(&mut app, &["f", "f"]);
    assert_eq!(app.jobs.outcome_filter, OutcomeFilter::All);
    // /: by reason (or address, folder).
    keys(&mut app, &["/"]);
    type_text(&mut app, "not_authorized");
    keys(&mut app, &["enter"]);
    let outcomes = &app.jobs.outcomes.as_ref().unwrap().1;
    let shown: Vec<&str> = app
        .jobs
        .outcome_rows
        .iter()
        .map(|&i| outcomes[i].address.as_str())
        .collect();
    assert_eq!(shown, ["user08@contoso.example", "user61@contoso.example"]);
    // esc: back to the jobs list.
    keys(&mut app, &["esc"]);
    assert!(!app.jobs.outcomes_focused);
}

#[test]
fn undo_asks_first_and_a_second_undo_of_the_same_job_is_refused() {
    let mut app = app_with_job_82();
    // u asks; n leaves everything as it was.
    assert!(keys(&mut app, &["u"]).is_empty());
    assert!(matches!(
        app.confirm,
        Some(Confirm::Restore { copies: 77, .. })
    ));
    // Other keys do nothing while the question is on screen.
    assert!(keys(&mut app, &["u", "enter", "1", "q"]).is_empty());
    assert!(!app.should_quit);
    assert!(keys(&mut app, &["n"]).is_empty());
    assert!(app.confirm.is_none());
    // u, y: one restore, and the pane says it is starting at once.
    keys(&mut app, &["u"]);
    assert_eq!(
        keys(&mut app, &["y"]),
        vec![Command::Restore {
            job: JobId("7".into()),
            only: vec![]
        }]
    );
    let theme = clawback::tui::theme::Theme::default_theme();
    assert!(render_text(&app, &theme, 80, 24).contains("restore starting"));
    // A second u before the engine answers: refused, nothing sent, no question.
    assert!(keys(&mut app, &["u", "y"]).is_empty());
    assert!(app.confirm.is_none());
    assert!(
        status(&app).contains("is being restored"),
        "{}",
        status(&app)
    );
    // The restore job starts: it is selected when the list comes.
    let commands = app.on_engine(EngineEvent::JobStarted {
        job: JobId("8".into()),
        plan_id: None,
        total: 77,
    });
    assert_eq!(commands, vec![Command::LoadJobs]);
    assert!(status(&app).contains("restore job 8 (undo of job 7)"));
    // Still refused in the window before the list shows job 7 as restored.
    assert!(keys(&mut app, &["u"]).is_empty());
    assert!(app.confirm.is_none());
    assert!(
        status(&app).contains("restored by job 8"),
        "{}",
        status(&app)
    );
    let mut running = restore_job_of_82();
    running.state = JobPhase::Running;
    let mut retract = job_82();
    retract.restorable = 0;
    retract.restored_by = vec![(JobId("8".into()), JobPhase::Running)];
    app.on_engine(EngineEvent::JobsLoaded(vec![running, retract.clone()]));
    assert_eq!(app.selected_job().unwrap().id, JobId("8".into()));
    // On the restore job itself: nothing to undo.
    assert!(keys(&mut app, &["u"]).is_empty());
    assert!(
        status(&app).contains("is itself a restore"),
        "{}",
        status(&app)
    );
    // On job 7 while job 8 runs: refused, and u is not offered.
    keys(&mut app, &["j"]);
    assert!(keys(&mut app, &["u"]).is_empty());
    assert!(
        status(&app).contains("being restored by job 8"),
        "{}",
        status(&app)
    );
    let (_, hints) = clawback::tui::ui::footer_hints(&app);
    assert!(!hints.contains(&Action::Restore));
    // After it ran: still refused.
    retract.restored_by = vec![(JobId("8".into()), JobPhase::Finished)];
    app.on_engine(EngineEvent::JobsLoaded(vec![restore_job_of_82(), retract]));
    assert!(keys(&mut app, &["u"]).is_empty());
    assert!(
        status(&app).contains("job 7 already restored by job 8"),
        "{}",
        status(&app)
    );
}

#[test]
fn a_restore_job_shows_as_restore_from_junk_back_to_the_folder() {
    let mut app = app();
    keys(&mut app, &["5"]);
    app.on_engine(EngineEvent::JobsLoaded(vec![restore_job_of_82(), job_82()]));
    keys(&mut app, &["enter"]);
    app.on_engine(EngineEvent::JobOutcomesLoaded {
        job: JobId("8".into()),
        outcomes: restore_outcomes(),
    });
    let theme = clawback::tui::theme::Theme::default_theme();
    let text = render_text(&app, &theme, 80, 24);
    assert!(text.contains("Job 8: restore of job 7"), "{text}");
    assert!(text.contains("restored"), "{text}");
    assert!(text.contains("Junk -> Inbox"), "{text}");
    assert!(!text.contains("ok: junk"), "{text}");
    let list_row = text.lines().find(|l| l.contains("manual")).unwrap();
    assert!(list_row.contains("restore"), "{list_row}");
}

#[test]
fn undo_is_not_offered_for_hard_delete() {
    let mut app = app();
    keys(&mut app, &["5"]);
    let mut hard = job_82();
    hard.action = RetractAction::HardDelete;
    hard.restorable = 0;
    app.on_engine(EngineEvent::JobsLoaded(vec![hard]));
    let (_, hints) = clawback::tui::ui::footer_hints(&app);
    assert!(!hints.contains(&Action::Restore));
    assert!(keys(&mut app, &["u", "y"]).is_empty());
    assert!(app.confirm.is_none());
    assert!(
        status(&app).contains("job 7 hard-deleted: no undo"),
        "{}",
        status(&app)
    );
    let theme = clawback::tui::theme::Theme::default_theme();
    let text = render_text(&app, &theme, 160, 48);
    assert!(text.contains("of 82; no undo"), "{text}");
    assert!(!text.contains("u restore"), "{text}");
}

/// An app with a Junk plan of 82 copies ready to confirm.
fn app_with_plan_82() -> App {
    let mut app = app_with_recipients();
    keys(&mut app, &["p"]);
    app.on_engine(EngineEvent::PlanBuilt(plan_summary(
        RetractAction::Junk,
        82,
    )));
    app
}

#[test]
fn keys_are_inert_behind_the_too_small_screen() {
    let mut app = app_with_plan_82();
    app.update(Action::Resize(79, 24));
    assert!(app.too_small);
    // Enter would apply the plan nobody can see: nothing happens, the plan stays.
    for key in ["enter", "esc", "y", "u", "5", "j", "space", "tab", ":", "?"] {
        assert!(keys(&mut app, &[key]).is_empty(), "{key}");
    }
    assert!(app.plan.is_some());
    assert_eq!(app.focus, Pane::Recipients);
    // Large enough again: the plan is still there and enter applies it.
    app.update(Action::Resize(80, 24));
    assert!(!app.too_small);
    assert!(matches!(
        keys(&mut app, &["enter"]).as_slice(),
        [Command::ApplyPlan { .. }]
    ));
    // Behind the small screen q still quits, even from the query box where q types.
    let mut app = app_with_results(3);
    keys(&mut app, &["/"]);
    app.update(Action::Resize(60, 20));
    assert_eq!(keys(&mut app, &["q"]), vec![Command::Shutdown]);
    assert!(app.should_quit);
}

#[test]
fn quit_asks_while_a_job_runs_here_or_the_policy_is_unsaved() {
    let mut app = app_with_plan_82();
    keys(&mut app, &["enter"]);
    // q right behind the confirmation, before the engine reports the job: asks too.
    assert!(keys(&mut app, &["q"]).is_empty());
    assert!(matches!(app.confirm, Some(Confirm::Quit { .. })));
    let theme = clawback::tui::theme::Theme::default_theme();
    assert!(render_text(&app, &theme, 80, 24).contains("A job is starting"));
    keys(&mut app, &["n"]);
    app.on_engine(EngineEvent::JobStarted {
        job: JobId("7".into()),
        plan_id: Some(PlanId("plan-7".into())),
        total: 82,
    });
    // q asks instead of quitting; n stays.
    assert!(keys(&mut app, &["q"]).is_empty());
    assert!(!app.should_quit);
    assert!(
        matches!(app.confirm, Some(Confirm::Quit { ref running, .. }) if running == &[JobId("7".into())])
    );
    assert!(keys(&mut app, &["n"]).is_empty());
    assert!(!app.should_quit);
    // :q asks too; behind a too-small screen the question takes y / n.
    keys(&mut app, &[":"]);
    type_text(&mut app, "q");
    assert!(keys(&mut app, &["enter"]).is_empty());
    assert!(app.confirm.is_some());
    app.update(Action::Resize(70, 20));
    let text = render_text(&app, &theme, 70, 20);
    assert!(text.contains("quit anyway"), "{text}");
    assert_eq!(keys(&mut app, &["y"]), vec![Command::Shutdown]);
    assert!(app.should_quit);

    // Once the job has finished, q quits at once.
    let mut app = app_with_plan_82();
    keys(&mut app, &["enter"]);
    app.on_engine(EngineEvent::JobStarted {
        job: JobId("7".into()),
        plan_id: None,
        total: 82,
    });
    app.on_engine(EngineEvent::JobFinished {
        job: job_82(),
        outcomes: outcomes_82(),
    });
    assert_eq!(keys(&mut app, &["q"]), vec![Command::Shutdown]);

    // Unsaved policy changes: asks.
    let mut app = admin_app();
    keys(&mut app, &["3"]);
    app.on_engine(EngineEvent::PolicyLoaded(policy(1)));
    keys(&mut app, &["space"]);
    assert!(app.policy_modified());
    assert!(keys(&mut app, &["q"]).is_empty());
    assert!(matches!(
        app.confirm,
        Some(Confirm::Quit {
            unsaved_policy: true,
            ..
        })
    ));
    assert_eq!(keys(&mut app, &["y"]), vec![Command::Shutdown]);
}

#[test]
fn interrupted_jobs_are_offered_for_resume_at_start() {
    let mut app = app();
    assert!(app.startup().contains(&Command::FindInterruptedJobs));
    // None: no question.
    app.on_engine(EngineEvent::InterruptedJobsFound(vec![]));
    assert!(app.confirm.is_none());
    let mut interrupted = job_82();
    interrupted.state = JobPhase::Interrupted;
    app.on_engine(EngineEvent::InterruptedJobsFound(vec![interrupted.clone()]));
    assert_eq!(app.mode(), Mode::Confirm);
    let theme = clawback::tui::theme::Theme::default_theme();
    let text = render_text(&app, &theme, 80, 24);
    assert!(text.contains("Resume job 7?"), "{text}");
    let commands = keys(&mut app, &["y"]);
    assert_eq!(
        commands,
        vec![
            Command::ResumeJob {
                job: JobId("7".into())
            },
            Command::LoadJobs
        ]
    );
    assert_eq!(app.focus, Pane::Jobs);

    // Declined: R on the job in the Jobs pane resumes it later.
    let mut app = tui_support::app();
    app.startup();
    app.on_engine(EngineEvent::InterruptedJobsFound(vec![interrupted.clone()]));
    assert!(keys(&mut app, &["n"]).is_empty());
    assert!(status(&app).contains("R resumes"), "{}", status(&app));
    keys(&mut app, &["5"]);
    app.on_engine(EngineEvent::JobsLoaded(vec![interrupted]));
    let (_, hints) = clawback::tui::ui::footer_hints(&app);
    assert!(hints.contains(&Action::ResumeJob));
    assert_eq!(
        keys(&mut app, &["R"]),
        vec![Command::ResumeJob {
            job: JobId("7".into())
        }]
    );
    // A finished job is not resumed.
    app.on_engine(EngineEvent::JobsLoaded(vec![job_82()]));
    assert!(keys(&mut app, &["R"]).is_empty());
}

#[test]
fn a_job_another_process_runs_is_shown_as_such_not_as_a_failure() {
    let mut app = app();
    keys(&mut app, &["5"]);
    assert_eq!(app.jobs.list, Loadable::Loading);
    app.on_engine(EngineEvent::JobStarted {
        job: JobId("7".into()),
        plan_id: None,
        total: 82,
    });
    app.on_engine(EngineEvent::JobLeased {
        job: JobId("7".into()),
        holder: "pid 4242 on soc-2 (heartbeat 1s ago)".into(),
    });
    let line = app.status.clone().unwrap();
    assert!(!line.is_error);
    assert!(line.text.contains("pid 4242 on soc-2"), "{}", line.text);
    // Nothing waiting was failed, and quitting does not ask about a job not run here.
    assert_eq!(app.jobs.list, Loadable::Loading);
    assert!(app.jobs.running.is_empty());
    assert_eq!(keys(&mut app, &["q"]), vec![Command::Shutdown]);
}

#[test]
fn a_failed_outcome_keeps_its_reason_in_the_label() {
    // The text filter relies on the reason being in the outcome's label.
    let failed = CopyOutcome::Failed {
        reason: clawback::model::FailureReason::NotAuthorized,
    };
    assert_eq!(failed.label(), "failed: not_authorized");
}

// ---- the recipient checklist (issue 12) ----

/// The generation and Message-IDs of the recipient load `commands` holds.
fn load_of(commands: &[Command]) -> (u64, Vec<String>) {
    commands
        .iter()
        .find_map(|c| match c {
            Command::LoadRecipients {
                generation,
                message_ids,
            } => Some((*generation, message_ids.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no LoadRecipients in {commands:?}"))
}

fn status_text(app: &App) -> String {
    app.status
        .as_ref()
        .map(|s| s.text.clone())
        .unwrap_or_default()
}

#[test]
fn rows_that_cannot_be_ticked_refuse_space_and_say_why() {
    let mut app = app_with_recipients();
    // alice, bob, carol located; erin unresolved; then sales (DL), dave (not authorized)…
    keys(&mut app, &["j", "j", "j"]);
    let before = app.recipients.included.clone();
    assert!(keys(&mut app, &["space"]).is_empty());
    assert_eq!(app.recipients.included, before, "nothing ticked");
    let status = app.status.clone().unwrap();
    assert!(status.is_error);
    assert!(
        status
            .text
            .contains("erin@fabrikam.example cannot be ticked")
            && status.text.contains("throttled")
            && status.text.contains("the job locates it again"),
        "{}",
        status.text
    );
    keys(&mut app, &["j", "space"]);
    assert!(
        status_text(&app).contains("sales@contoso.example cannot be ticked: not_a_mailbox"),
        "{}",
        status_text(&app)
    );
    keys(&mut app, &["j", "space"]);
    assert!(status_text(&app).contains("not_authorized: 403 ErrorAccessDenied"));
    // Select all ticks only the located rows; nothing that cannot be acted on is an exclusion.
    keys(&mut app, &["a"]);
    assert_eq!(app.included_count(), 3);
    assert!(app.excluded().is_empty());
}

#[test]
fn a_refresh_and_reopening_the_same_message_keep_exclusions_depth_and_action() {
    let mut app = app_with_recipients();
    keys(&mut app, &["space", "+", "x"]);
    assert_eq!(app.excluded(), vec!["alice@contoso.example".to_string()]);
    // Ctrl-R reloads; the new rows come back with alice still unticked.
    let (generation, ids) = load_of(&keys(&mut app, &["ctrl+r"]));
    assert_eq!(ids, vec!["<m0@evil.example>".to_string()]);
    app.on_engine(EngineEvent::RecipientsLoaded {
        generation,
        rows: recipients(),
    });
    assert_eq!(app.excluded(), vec!["alice@contoso.example".to_string()]);
    assert_eq!(app.recipients.included[..3], [false, true, true]);
    // Reopening the same message from the search pane keeps them too.
    let (generation, _) = load_of(&keys(&mut app, &["1", "enter"]));
    app.on_engine(EngineEvent::RecipientsLoaded {
        generation,
        rows: recipients(),
    });
    assert_eq!(app.excluded(), vec!["alice@contoso.example".to_string()]);
    assert_eq!(app.recipients.depth, 1);
    assert_eq!(app.recipients.action, RetractAction::Trash);
    // And the plan gets exactly those exclusions and that depth.
    let commands = keys(&mut app, &["p"]);
    let [Command::BuildPlan(request)] = commands.as_slice() else {
        panic!("{commands:?}");
    };
    assert_eq!(request.exclude, vec!["alice@contoso.example".to_string()]);
    assert_eq!(request.depth, 1);
    assert!(request.tenants.is_empty(), "every tenant holding it");
}

#[test]
fn opening_another_message_resets_action_exclusions_and_depth_and_says_so() {
    let mut app = admin_app();
    app.startup();
    app.on_engine(EngineEvent::SearchCompleted {
        generation: 1,
        rows: search_rows(10),
        total: 10,
    });
    let (generation, _) = load_of(&keys(&mut app, &["enter"]));
    app.on_engine(EngineEvent::RecipientsLoaded {
        generation,
        rows: recipients(),
    });
    keys(&mut app, &["space", "j", "space", "+", "+", "x", "x", "x"]);
    assert_eq!(app.recipients.action, RetractAction::HardDelete);
    let (generation, ids) = load_of(&keys(&mut app, &["1", "j", "enter"]));
    assert_eq!(ids, vec!["<m1@evil.example>".to_string()]);
    assert_eq!(
        app.recipients.action,
        RetractAction::Junk,
        "never Hard Delete"
    );
    assert_eq!(app.recipients.depth, 0);
    let status = status_text(&app);
    assert!(
        status.contains("action reset to Junk Email (was Hard Delete)")
            && status.contains("2 exclusions cleared")
            && status.contains("depth 0 (was 2)"),
        "{status}"
    );
    app.on_engine(EngineEvent::RecipientsLoaded {
        generation,
        rows: recipients(),
    });
    assert!(app.excluded().is_empty());
    assert_eq!(app.included_count(), 3);
}

#[test]
fn a_campaign_row_opens_every_message_of_the_campaign_in_every_tenant() {
    let mut app = app();
    app.startup();
    // One Message-ID in two tenants, plus an unrelated message.
    let mut rows = search_rows(3);
    rows[1].message.tenant = "fabrikam".into();
    rows[1].message.message_id = rows[0].message.message_id.clone();
    rows[1].campaign = rows[0].campaign;
    rows[2].campaign = Some(99);
    app.on_engine(EngineEvent::SearchCompleted {
        generation: 1,
        rows,
        total: 3,
    });
    keys(&mut app, &["c"]);
    let screen = render_text(&app, &clawback::tui::theme::Theme::default_theme(), 80, 24);
    assert!(screen.contains("2 tenants billing0"), "{screen}");
    let (_, ids) = load_of(&keys(&mut app, &["enter"]));
    assert_eq!(ids, vec!["<m0@evil.example>".to_string()]);
}

#[test]
fn loading_recipients_shows_progress_and_esc_cancels_it() {
    let mut app = app_with_results(10);
    let (generation, _) = load_of(&keys(&mut app, &["enter"]));
    app.on_engine(EngineEvent::RecipientsProgressed {
        generation,
        done: 37,
        total: 150,
        elapsed_secs: 3,
    });
    let screen = render_text(&app, &clawback::tui::theme::Theme::default_theme(), 100, 24);
    assert!(
        screen.contains("Loading recipients... 37/150 mailboxes located, 3 s (esc cancels)"),
        "{screen}"
    );
    // A stale generation's progress is ignored.
    app.on_engine(EngineEvent::RecipientsProgressed {
        generation: generation - 1,
        done: 1,
        total: 2,
        elapsed_secs: 9,
    });
    assert_eq!(app.recipients.progress, Some((37, 150, 3)));
    // Esc asks the engine to stop that load; its answer marks the pane cancelled.
    let search_before = app.search.clone();
    assert_eq!(
        keys(&mut app, &["esc"]),
        vec![Command::CancelRecipients { generation }]
    );
    app.on_engine(EngineEvent::RecipientsCancelled { generation });
    assert!(app.recipients.cancelled);
    assert_eq!(app.recipients.rows, Loadable::NotLoaded);
    assert_eq!(app.search, search_before, "nothing else changes");
    assert_eq!(app.focus, Pane::Recipients);
    assert!(status_text(&app).contains("loading recipients cancelled"));
    let screen = render_text(&app, &clawback::tui::theme::Theme::default_theme(), 100, 24);
    assert!(
        screen.contains("Loading recipients cancelled (esc)"),
        "{screen}"
    );
    // A late answer of the cancelled load does not fill the pane; ctrl+r loads again.
    assert!(
        keys(&mut app, &["esc"]).is_empty(),
        "nothing left to cancel"
    );
    let (again, _) = load_of(&keys(&mut app, &["ctrl+r"]));
    assert!(again > generation);
}

// ---- side by side (issue 15, build 5) ----

/// The Message-IDs of the recipient loads among `commands`.
fn recipient_loads(commands: &[Command]) -> Vec<Vec<String>> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::LoadRecipients { message_ids, .. } => Some(message_ids.clone()),
            _ => None,
        })
        .collect()
}

/// An app on a `width` x `height` screen, started (its startup commands returned) and with
/// ten results in.
fn sized_app_with_results(width: u16, height: u16) -> (App, Vec<Command>) {
    let mut app = app();
    app.set_screen_size(width, height);
    let startup = app.startup();
    let generation = app.search.generation;
    app.on_engine(EngineEvent::SearchCompleted {
        generation,
        rows: search_rows(10),
        total: 10,
    });
    (app, startup)
}

#[test]
fn side_by_side_the_checklist_follows_the_selection_once_it_rests() {
    let (mut app, startup) = sized_app_with_results(200, 50);
    // The metrics strip needs the metrics and the jobs from the start.
    assert!(startup.contains(&Command::LoadMetrics {
        window: MetricsWindow::Day
    }));
    assert!(startup.contains(&Command::LoadJobs));
    // Three moves in quick succession: nothing until the selection rests, then one load, for
    // the row selected then (latest wins); the focus stays on the results.
    let mut commands = keys(&mut app, &["j", "j"]);
    commands.extend(ticks(&mut app, 1));
    commands.extend(keys(&mut app, &["j"]));
    assert!(recipient_loads(&commands).is_empty(), "{commands:?}");
    let commands = ticks(&mut app, DEBOUNCE_TICKS);
    let want = app.selected_message_ids();
    assert_eq!(app.search.selected, 3);
    assert_eq!(recipient_loads(&commands), vec![want.clone()]);
    assert_eq!(app.focus, Pane::Search);
    assert_eq!(app.recipients.message_ids, want);
    // Moving on while that load runs: the old load is cancelled, the new one sent.
    keys(&mut app, &["j"]);
    let loading = app.recipients.generation;
    let commands = ticks(&mut app, DEBOUNCE_TICKS);
    assert!(commands.contains(&Command::CancelRecipients {
        generation: loading
    }));
    assert_eq!(recipient_loads(&commands).len(), 1);
    // Nothing more once it rests.
    assert!(ticks(&mut app, 10).is_empty());
}

#[test]
fn narrow_the_checklist_waits_for_enter() {
    let (mut app, startup) = sized_app_with_results(80, 24);
    assert!(!startup.contains(&Command::LoadJobs));
    let mut commands = keys(&mut app, &["j", "j"]);
    commands.extend(ticks(&mut app, 10));
    assert!(recipient_loads(&commands).is_empty(), "{commands:?}");
    // Widening the terminal loads what the strip shows.
    let commands = app.update(Action::Resize(200, 50));
    assert!(commands.contains(&Command::LoadJobs));
}
