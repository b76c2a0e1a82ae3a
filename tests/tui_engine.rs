//! Layer 2 + 3: the headless console driven by key presses against the real engine task, which
//! talks to the lab's demo scenario over HTTP. Search → select → untick two recipients →
//! depth 1 → Junk → confirm; the lab's own state shows exactly the expected copies moved; then
//! undo puts them back.

#![allow(clippy::unwrap_used)]

mod tui_support;

mod lab_support;
use clawback::engine::plan::RetractRequest;
use clawback::engine::view::{Confirmation, CopyOutcome, JobId, JobKind, JobPhase};
use clawback::engine::{Command, Engine, EngineEvent, EngineHandle, service};
use clawback::lab::demo::{self, CAMPAIGN_MESSAGE_ID, CONTOSO, FABRIKAM};
use clawback::lab::scenario::Scenario;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{FailureReason, Folder, RetractAction, Role, Trigger};
use clawback::store::Store;
use clawback::tui::app::Loadable;
use clawback::tui::{TuiOptions, prepare};
use lab_support::{CopyKey, expected_copies, synced_lab};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tui_support::console::Console;

/// (tenant, mailbox, Message-ID) → folders of its copies, in every tenant.
type Folders = BTreeMap<CopyKey, Vec<Folder>>;

fn lab_folders(server: &LabServer) -> Folders {
    let state = server.lab.state();
    let mut out: Folders = BTreeMap::new();
    for t in &state.tenants {
        for (addr, mb) in &t.mailboxes {
            for c in mb.copies.values() {
                out.entry((
                    t.name.clone(),
                    addr.to_ascii_lowercase(),
                    c.content.internet_message_id.clone(),
                ))
                .or_default()
                .push(c.folder.clone());
            }
        }
    }
    out
}

/// (mailbox, Message-ID) → folders of its copies in contoso.
fn contoso_folders(server: &LabServer) -> BTreeMap<(String, String), Vec<Folder>> {
    lab_folders(server)
        .into_iter()
        .filter(|((tenant, _, _), _)| tenant == CONTOSO)
        .map(|((_, mailbox, mid), folders)| ((mailbox, mid), folders))
        .collect()
}

/// The copies a depth-1 Junk retraction of the campaign must move in both tenants, from the
/// scenario: the campaign and its direct replies/forwards, in granted mailboxes, not the
/// sender's own copy, not already gone, not in Sent Items, and not in the mailboxes the
/// operator unticked.
fn expected(scenario: &Scenario, unticked: &BTreeSet<String>) -> BTreeSet<CopyKey> {
    let mut messages = BTreeSet::from([CAMPAIGN_MESSAGE_ID.to_string()]);
    for t in &scenario.tenants {
        for m in &t.messages {
            let parent = m.in_reply_to.as_ref().or(m.references.last());
            if parent.is_some_and(|p| p == CAMPAIGN_MESSAGE_ID) {
                messages.insert(m.message_id.clone());
            }
        }
    }
    expected_copies(scenario, &messages)
        .into_iter()
        .filter(|(_, mailbox, _)| !unticked.contains(mailbox))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_select_untick_depth_junk_confirm_then_undo() {
    let scenario = demo::build(7);
    let lab = synced_lab(&scenario, LabOptions::default(), &[], 30).await;
    let (server, config, store) = (lab.server, lab.config, lab.store);
    let engine = std::sync::Arc::new(Engine::new(config.clone(), store).unwrap());
    let mut console = Console::open(&config, service::spawn(engine)).await;

    // Search for the campaign in contoso and open it: the checklist spans both tenants.
    console.keys(&["/"]);
    console.type_text(&format!("msgid:{CAMPAIGN_MESSAGE_ID} tenant:contoso"));
    console.keys(&["enter"]);
    console
        .until("the campaign row", |a| {
            a.search.results.ready().is_some_and(|r| {
                r.rows.len() == 1 && r.rows[0].message.message_id == CAMPAIGN_MESSAGE_ID
            })
        })
        .await;
    console.open_selected_message().await;

    let rows = console.app.recipients.rows.ready().unwrap().clone();
    let tenants: BTreeSet<&str> = rows.iter().map(|r| r.tenant.as_str()).collect();
    assert!(
        tenants.contains(CONTOSO) && tenants.contains(FABRIKAM),
        "{tenants:?}"
    );
    // Untick the first two located recipients.
    let suggested: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.tickable())
        .map(|(i, _)| i)
        .take(2)
        .collect();
    assert_eq!(suggested.len(), 2, "the campaign has included recipients");
    let mut unticked = BTreeSet::new();
    let mut at = console.app.recipients.selected;
    for i in suggested {
        while at < i {
            console.keys(&["j"]);
            at += 1;
        }
        console.keys(&["space"]);
        unticked.insert(rows[i].address.clone());
    }
    assert_eq!(
        console.app.excluded().into_iter().collect::<BTreeSet<_>>(),
        unticked
    );

    // Depth 1, Junk (the default action), plan, confirm.
    console.keys(&["+"]);
    assert_eq!(console.app.recipients.depth, 1);
    assert_eq!(console.app.recipients.action, RetractAction::Junk);
    console
        .until("the depth preview", |a| {
            a.recipients
                .depth_preview
                .ready()
                .is_some_and(|d| d.len() == 2)
        })
        .await;
    let before = lab_folders(&server);
    let log_start = server.lab.state().actions.len();
    console.keys(&["p"]);
    console
        .until("the plan", |a| {
            a.plan.as_ref().is_some_and(|p| p.summary.ready().is_some())
        })
        .await;
    let want = expected(&scenario, &unticked);
    let copies = console
        .app
        .plan
        .as_ref()
        .and_then(|p| p.summary.ready())
        .map(|s| s.copies_total)
        .unwrap();
    assert_eq!(copies as usize, want.len(), "the plan preview counts");
    console.keys(&["enter"]);
    // Outcomes are loaded by a command of their own after the job list: wait for both (under
    // load the finished list can come first).
    console
        .until("the job to finish and its outcomes to load", |a| {
            a.jobs.list.ready().is_some_and(|jobs| {
                jobs.iter()
                    .any(|j| j.state == JobPhase::Finished && j.succeeded > 0)
            }) && a.jobs.outcomes.as_ref().is_some_and(|(_, o)| {
                o.iter()
                    .filter(|o| matches!(o.outcome, CopyOutcome::Succeeded { .. }))
                    .count()
                    >= want.len()
            })
        })
        .await;

    // The lab moved exactly the expected copies, once each, to Junk.
    let moved: Vec<CopyKey> = server
        .lab
        .state()
        .actions
        .iter()
        .skip(log_start)
        .map(|a| {
            (
                a.tenant.clone(),
                a.mailbox.to_ascii_lowercase(),
                a.internet_message_id.clone(),
            )
        })
        .collect();
    let moved_set: BTreeSet<_> = moved.iter().cloned().collect();
    assert_eq!(moved.len(), moved_set.len(), "a copy was acted on twice");
    assert_eq!(moved_set, want);
    let by_tenant: BTreeSet<&str> = moved_set.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(by_tenant, BTreeSet::from([CONTOSO, FABRIKAM]));
    let after = lab_folders(&server);
    for key in &want {
        assert!(
            after[key].contains(&Folder::Junk),
            "{key:?}: {:?}",
            after[key]
        );
    }
    for mailbox in &unticked {
        for (key, folders) in &before {
            if &key.1 == mailbox {
                assert_eq!(&after[key], folders, "unticked {mailbox} was touched");
            }
        }
    }
    let outcomes = console.app.jobs.outcomes.clone().unwrap().1;
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o.outcome, CopyOutcome::Succeeded { .. }))
            .count(),
        want.len()
    );

    // Undo from the jobs pane (asked, then confirmed): everything is back where it was.
    console.keys(&["u", "y"]);
    console
        .until("the restore to finish", |a| {
            a.jobs.list.ready().is_some_and(|jobs| {
                jobs.len() == 2 && jobs.iter().all(|j| j.state == JobPhase::Finished)
            })
        })
        .await;
    assert_eq!(lab_folders(&server), before);
}

/// Sends one command and collects the engine's events until one that answers it.
async fn answer(engine: &mut EngineHandle, command: Command) -> Vec<EngineEvent> {
    engine.commands.send(command).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no answer; got {out:?}");
        let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(200), engine.events.recv()).await
        else {
            continue;
        };
        let last = matches!(
            e,
            EngineEvent::Denied { .. }
                | EngineEvent::EngineFailed { .. }
                | EngineEvent::PlanBuilt(_)
                | EngineEvent::PlanFailed { .. }
                | EngineEvent::JobFinished { .. }
                | EngineEvent::PolicySaved(_)
                | EngineEvent::PolicyLoaded(_)
        );
        out.push(e);
        if last {
            return out;
        }
    }
}

fn denied(events: &[EngineEvent]) -> Option<(String, Role)> {
    events.iter().find_map(|e| match e {
        EngineEvent::Denied {
            action, required, ..
        } => Some((action.clone(), *required)),
        _ => None,
    })
}

/// Every state-changing console action × viewer / responder / admin (issue 11): the engine
/// answers `Denied` (and audits it) for what the role does not allow, and nothing moves at the
/// lab for a refused action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_actions_are_checked_against_the_role() {
    let scenario = demo::build(7);
    let lab = synced_lab(&scenario, LabOptions::default(), &[], 30).await;
    let store_path = lab.store.path().unwrap().to_path_buf();
    let http = reqwest::Client::new();
    let base = lab.server.base_url();
    let actions = || async {
        lab_support::lab_get(&http, &base, "/_lab/actions").await["total"]
            .as_u64()
            .unwrap()
    };
    let engine_as = |role: Role| {
        let mut config = lab.config.clone();
        config.operator.role = role;
        let store = Store::open(&store_path).unwrap();
        service::spawn(std::sync::Arc::new(Engine::new(config, store).unwrap()))
    };
    let enc = percent_encoding::utf8_percent_encode(
        CAMPAIGN_MESSAGE_ID,
        percent_encoding::NON_ALPHANUMERIC,
    );
    let campaign =
        lab_support::lab_get(&http, &base, &format!("/_lab/messages?message_id={enc}")).await;
    let copies: Vec<String> = campaign["copies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["tenant"] == CONTOSO
                && c["folder"] == "inbox"
                && c["granted"] == true
                && c["mailbox"] != clawback::lab::demo::DEMO_HOLD_MAILBOX
        })
        .map(|c| c["mailbox"].as_str().unwrap().to_string())
        .take(6)
        .collect();
    assert_eq!(copies.len(), 6);
    let request = |action: RetractAction, only: &[String]| {
        Command::BuildPlan(RetractRequest {
            message_ids: vec![CAMPAIGN_MESSAGE_ID.into()],
            query: None,
            tenants: vec![CONTOSO.into()],
            only: only.to_vec(),
            exclude: vec![],
            depth: 0,
            action,
            trigger: Trigger::Manual,
            reason: "role matrix".into(),
        })
    };
    let built = |events: &[EngineEvent]| {
        events.iter().find_map(|e| match e {
            EngineEvent::PlanBuilt(p) => Some((p.plan_id.clone(), p.copies_total)),
            _ => None,
        })
    };

    // The admin retracts two copies: job 1, to restore and cancel below.
    let mut admin = engine_as(Role::Admin);
    let e = answer(&mut admin, request(RetractAction::Junk, &copies[..2])).await;
    let (plan, _) = built(&e).unwrap_or_else(|| panic!("{e:?}"));
    let e = answer(
        &mut admin,
        Command::ApplyPlan {
            plan_id: plan,
            confirmation: Confirmation { typed_copies: None },
        },
    )
    .await;
    assert!(
        matches!(e.last(), Some(EngineEvent::JobFinished { .. })),
        "{e:?}"
    );
    let job = JobId("1".into());
    let e = answer(&mut admin, Command::LoadPolicy).await;
    let Some(EngineEvent::PolicyLoaded(policy)) = e.last().cloned() else {
        panic!("{e:?}")
    };

    for role in [Role::Viewer, Role::Responder] {
        let before = actions().await;
        let mut console = engine_as(role);
        let slice = if role == Role::Viewer {
            &copies[2..4]
        } else {
            &copies[4..6]
        };
        // Plan (and then apply) Junk: responder yes, viewer no.
        let e = answer(&mut console, request(RetractAction::Junk, slice)).await;
        match role {
            Role::Viewer => assert_eq!(
                denied(&e),
                Some(("plan a retraction".into(), Role::Responder)),
                "{e:?}"
            ),
            _ => {
                let (plan, _) = built(&e).unwrap_or_else(|| panic!("{e:?}"));
                let e = answer(
                    &mut console,
                    Command::ApplyPlan {
                        plan_id: plan,
                        confirmation: Confirmation { typed_copies: None },
                    },
                )
                .await;
                assert_eq!(denied(&e), None, "{e:?}");
                assert!(
                    matches!(e.last(), Some(EngineEvent::JobFinished { .. })),
                    "{e:?}"
                );
            }
        }
        // Hard Delete: only an admin. The responder may plan it but not apply it.
        if role == Role::Responder {
            let e = answer(
                &mut console,
                request(RetractAction::HardDelete, &copies[2..3]),
            )
            .await;
            let (plan, n) = built(&e).unwrap_or_else(|| panic!("{e:?}"));
            let e = answer(
                &mut console,
                Command::ApplyPlan {
                    plan_id: plan,
                    confirmation: Confirmation {
                        typed_copies: Some(n),
                    },
                },
            )
            .await;
            assert_eq!(
                denied(&e),
                Some(("retract (hard_delete)".into(), Role::Admin)),
                "{e:?}"
            );
        }
        // Cancel, retry, restore job 1: responder allowed (cancel/retry then fail on the job's
        // state, not on the role), viewer denied.
        for (command, what) in [
            (Command::CancelJob { job: job.clone() }, "cancel a job"),
            (
                Command::RetryFailed {
                    job: job.clone(),
                    reason: FailureReason::AlreadyGone,
                },
                "retract (junk)",
            ),
            (
                Command::Restore {
                    job: job.clone(),
                    only: vec![copies[0].clone()],
                },
                "restore",
            ),
        ] {
            let e = answer(&mut console, command).await;
            match role {
                Role::Viewer => assert_eq!(
                    denied(&e),
                    Some((what.to_string(), Role::Responder)),
                    "{what}: {e:?}"
                ),
                _ => assert_eq!(denied(&e), None, "{what}: {e:?}"),
            }
        }
        // The policy: admin only.
        let e = answer(&mut console, Command::SavePolicy(policy.clone())).await;
        assert_eq!(
            denied(&e),
            Some(("change the auto-retract policy".into(), Role::Admin)),
            "{e:?}"
        );
        let moved = actions().await - before;
        match role {
            // Nothing at all for the viewer.
            Role::Viewer => assert_eq!(moved, 0),
            // Two junked, one restored; the Hard Delete never reached the lab.
            _ => assert_eq!(moved, 3),
        }
    }
    let folders = contoso_folders(&lab.server);
    let folder = |mb: &String| folders[&(mb.clone(), CAMPAIGN_MESSAGE_ID.to_string())].clone();
    assert_eq!(
        folder(&copies[0]),
        vec![Folder::Inbox],
        "restored by the responder"
    );
    assert_eq!(folder(&copies[1]), vec![Folder::Junk]);
    assert_eq!(
        folder(&copies[2]),
        vec![Folder::Inbox],
        "no hard delete, no viewer junk"
    );
    assert_eq!(folder(&copies[3]), vec![Folder::Inbox]);
    assert_eq!(folder(&copies[4]), vec![Folder::Junk]);

    // Every refusal is in the audit log, in the role's name.
    let store = Store::open(&store_path).unwrap();
    let entries = store.audit_entries().unwrap().unwrap();
    let refusals: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e.record.section == "denied")
        .map(|e| {
            (
                e.record.role.as_str().to_string(),
                e.record.detail["attempted"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        refusals,
        [
            ("viewer", "plan a retraction"),
            ("viewer", "cancel a job"),
            ("viewer", "retract (junk)"),
            ("viewer", "restore"),
            ("viewer", "change the auto-retract policy"),
            ("responder", "retract (hard_delete)"),
            ("responder", "change the auto-retract policy"),
        ]
        .map(|(r, w)| (r.to_string(), w.to_string()))
    );
}

/// The engine task answers LoadPolicy and LoadJobs with the automation guard's open holds too,
/// and the console keeps them for the Policy and Jobs panes (issue 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_matches_reach_the_console_with_the_policy_and_the_jobs() {
    use clawback::intel::IndicatorKey;
    use clawback::model::Disposition;
    use clawback::store::Store;
    use clawback::store::automation::HeldMessage;
    let mut store = Store::open_in_memory().unwrap();
    let key = IndicatorKey {
        file: "feed.csv".into(),
        kind: "subject".into(),
        value: "*".into(),
        disposition: Disposition::Malicious,
    };
    let message = HeldMessage {
        tenant: CONTOSO.into(),
        message_id: CAMPAIGN_MESSAGE_ID.into(),
        copies: 900,
    };
    let (hold, _) = store
        .hold_record(&key, "over the cap", 300, &[message])
        .unwrap();
    let config = clawback::config::Config::default();
    let engine = std::sync::Arc::new(Engine::new(config.clone(), store).unwrap());
    let (app, _theme) = prepare(&config, &TuiOptions::default()).unwrap();
    let mut console = Console {
        app,
        engine: service::spawn(engine),
    };
    for command in [Command::LoadPolicy, Command::LoadJobs] {
        console.app.policy.held.clear();
        console.send(vec![command]);
        console
            .until("the holds", |app| !app.policy.held.is_empty())
            .await;
        assert_eq!(console.app.policy.held[0].id, hold.id);
        assert_eq!(console.app.policy.held[0].copies, 900);
    }
}

// ---- issue 12: undo, hard delete, quitting mid-job, leases ----

/// Collects the engine's events until `done` says the last one ends the wait (bounded).
async fn events_until(
    engine: &mut EngineHandle,
    what: &str,
    done: impl Fn(&[EngineEvent]) -> bool,
) -> Vec<EngineEvent> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done(&out) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; got {out:?}"
        );
        if let Ok(Some(e)) =
            tokio::time::timeout(Duration::from_millis(200), engine.events.recv()).await
        {
            out.push(e);
        }
    }
    out
}

fn finished_job(
    events: &[EngineEvent],
) -> Option<(
    clawback::engine::view::JobView,
    Vec<clawback::engine::view::RecipientOutcome>,
)> {
    events.iter().find_map(|e| match e {
        EngineEvent::JobFinished { job, outcomes } => Some((job.clone(), outcomes.clone())),
        _ => None,
    })
}

fn campaign_request(action: RetractAction, only: &[String]) -> Command {
    Command::BuildPlan(RetractRequest {
        message_ids: vec![CAMPAIGN_MESSAGE_ID.into()],
        query: None,
        tenants: vec![CONTOSO.into()],
        only: only.to_vec(),
        exclude: vec![],
        depth: 0,
        action,
        trigger: Trigger::Manual,
        reason: "issue 12".into(),
    })
}

/// Builds and applies a plan; returns the finished job and its outcomes.
async fn retract(
    engine: &mut EngineHandle,
    action: RetractAction,
    only: &[String],
    before_apply: impl std::future::Future<Output = ()>,
) -> (
    clawback::engine::view::JobView,
    Vec<clawback::engine::view::RecipientOutcome>,
) {
    let e = answer(engine, campaign_request(action, only)).await;
    let Some(EngineEvent::PlanBuilt(plan)) = e.last().cloned() else {
        panic!("{e:?}")
    };
    before_apply.await;
    let typed = (action == RetractAction::HardDelete).then_some(plan.copies_total);
    let e = answer(
        engine,
        Command::ApplyPlan {
            plan_id: plan.plan_id,
            confirmation: Confirmation {
                typed_copies: typed,
            },
        },
    )
    .await;
    finished_job(&e).unwrap_or_else(|| panic!("{e:?}"))
}

/// A job (created, not run) of the campaign in contoso to Junk, made by an engine of its own.
async fn contoso_junk_job(
    config: &clawback::config::Config,
    store_path: &std::path::Path,
    reason: &str,
) -> i64 {
    let engine = Engine::new(config.clone(), Store::open(store_path).unwrap()).unwrap();
    let plan = engine
        .build_plan(RetractRequest {
            message_ids: vec![CAMPAIGN_MESSAGE_ID.into()],
            query: None,
            tenants: vec![CONTOSO.into()],
            only: vec![],
            exclude: vec![],
            depth: 0,
            action: RetractAction::Junk,
            trigger: Trigger::Manual,
            reason: reason.into(),
        })
        .await
        .unwrap();
    engine.create_job(&plan, false).unwrap()
}

fn engine_for(config: &clawback::config::Config, store_path: &std::path::Path) -> EngineHandle {
    let store = Store::open(store_path).unwrap();
    service::spawn(std::sync::Arc::new(
        Engine::new(config.clone(), store).unwrap(),
    ))
}

/// Issue 12: "Undo misleads". The restore job is created at once (`JobStarted` before any
/// provider work), shown as a restore of its job from Junk back to the folder each copy was
/// in; a second undo of the same job (sent right behind the first) is refused without a
/// job; the retract job then says who restored it and has nothing left to restore; the lab
/// has every copy back. The failure of a copy moved before the job comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_is_shown_as_a_restore_and_a_second_undo_is_refused() {
    let scenario = demo::build(7);
    let lab = synced_lab(&scenario, LabOptions::default(), &[], 30).await;
    let store_path = lab.store.path().unwrap().to_path_buf();
    let http = reqwest::Client::new();
    let base = lab.server.base_url();
    let mut engine = engine_for(&lab.config, &store_path);
    let before = contoso_folders(&lab.server);
    let enc = percent_encoding::utf8_percent_encode(
        CAMPAIGN_MESSAGE_ID,
        percent_encoding::NON_ALPHANUMERIC,
    );
    let campaign =
        lab_support::lab_get(&http, &base, &format!("/_lab/messages?message_id={enc}")).await;
    let inbox: Vec<String> = campaign["copies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["tenant"] == CONTOSO
                && c["folder"] == "inbox"
                && c["granted"] == true
                && c["mailbox"] != clawback::lab::demo::DEMO_HOLD_MAILBOX
        })
        .map(|c| c["mailbox"].as_str().unwrap().to_string())
        .collect();
    assert!(inbox.len() > 3, "{inbox:?}");
    // The last copy is moved by its user between plan and apply: it fails.
    let moved = inbox.last().unwrap().clone();
    let (job, outcomes) = retract(&mut engine, RetractAction::Junk, &[], async {
        lab_support::lab_user_action(
            &http,
            &base,
            CONTOSO,
            &moved,
            CAMPAIGN_MESSAGE_ID,
            "deleteditems",
        )
        .await;
    })
    .await;
    assert!(job.failed() >= 1, "{job:?}");
    assert!(
        matches!(outcomes[0].outcome, CopyOutcome::Failed { .. }),
        "failures first: {:?}",
        outcomes[0]
    );
    let ranks: Vec<_> = outcomes.iter().map(|o| o.rank()).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    assert!(outcomes.iter().any(|o| o.from_folder == Some(Folder::Inbox)
        && o.to_folder == Some(Folder::Junk)
        && matches!(o.outcome, CopyOutcome::Succeeded { .. })));
    assert!(job.restorable > 0);
    let after_retract = contoso_folders(&lab.server);
    let log_start = lab.server.lab.state().actions.len();

    // Two undos back to back (a double `u`): one restore job, the second refused.
    for _ in 0..2 {
        engine
            .commands
            .send(Command::Restore {
                job: job.id.clone(),
                only: vec![],
            })
            .unwrap();
    }
    let events = events_until(&mut engine, "the restore and the refusal", |es| {
        finished_job(es).is_some()
            && es
                .iter()
                .any(|e| matches!(e, EngineEvent::EngineFailed { .. }))
    })
    .await;
    // The first answer (a store change the retraction left is news, not an answer).
    let first_answer = events
        .iter()
        .find(|e| !matches!(e, EngineEvent::StoreChanged(_)));
    assert!(
        matches!(first_answer, Some(EngineEvent::JobStarted { .. })),
        "the restore shows at once: {events:?}"
    );
    let started: Vec<&JobId> = events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::JobStarted { job, .. } => Some(job),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 1, "{events:?}");
    let refusal = events
        .iter()
        .find_map(|e| match e {
            EngineEvent::EngineFailed { message } => Some(message.clone()),
            _ => None,
        })
        .unwrap();
    assert!(refusal.contains("nothing to restore"), "{refusal}");
    let (restore, restored) = finished_job(&events).unwrap();
    assert_eq!(restore.kind, JobKind::Restore);
    assert_eq!(restore.action_label(), "restore");
    assert_eq!(restore.parent.as_ref(), Some(&job.id));
    assert_eq!(restore.state, JobPhase::Finished);
    assert_eq!(restore.failed(), 0, "{restored:?}");
    assert_eq!(restore.succeeded, job.succeeded);
    for o in &restored {
        assert_eq!(o.outcome, CopyOutcome::Restored, "{o:?}");
        assert_eq!(o.from_folder, Some(Folder::Junk), "{o:?}");
        assert_eq!(o.to_folder, Some(Folder::Inbox), "{o:?}");
    }
    // The lab: every copy the job moved is back, each moved back once; the user's move stays.
    let back: Vec<(String, String)> = lab
        .server
        .lab
        .state()
        .actions
        .iter()
        .skip(log_start)
        .map(|a| {
            (
                a.mailbox.to_ascii_lowercase(),
                a.internet_message_id.clone(),
            )
        })
        .collect();
    assert_eq!(back.len() as u64, job.succeeded, "{back:?}");
    let now = contoso_folders(&lab.server);
    for (key, folders) in &before {
        if key.0 == moved.to_ascii_lowercase() && key.1 == CAMPAIGN_MESSAGE_ID {
            assert_eq!(now[key], after_retract[key]);
        } else {
            assert_eq!(&now[key], folders, "{key:?}");
        }
    }
    // The list: the retract job was restored by the restore job, nothing left to restore.
    engine.commands.send(Command::LoadJobs).unwrap();
    let listed = events_until(&mut engine, "the jobs", |es| {
        es.iter().any(|e| matches!(e, EngineEvent::JobsLoaded(_)))
    })
    .await;
    let jobs = listed
        .iter()
        .find_map(|e| match e {
            EngineEvent::JobsLoaded(j) => Some(j.clone()),
            _ => None,
        })
        .unwrap();
    let retract_view = jobs.iter().find(|j| j.id == job.id).unwrap();
    assert_eq!(retract_view.restorable, 0);
    assert_eq!(
        retract_view.restored_by,
        vec![(restore.id.clone(), JobPhase::Finished)]
    );
}

/// Issue 12: "`u` is offered for Hard Delete ("25 restorable") and then fails all 25". A Hard
/// Delete job has nothing restorable, and a restore of it is refused without a job or a
/// request to the lab.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_delete_job_has_nothing_restorable() {
    let scenario = demo::build(7);
    let lab = synced_lab(&scenario, LabOptions::default(), &[], 30).await;
    let store_path = lab.store.path().unwrap().to_path_buf();
    let mut config = lab.config.clone();
    config.operator.role = Role::Admin;
    let mut engine = engine_for(&config, &store_path);
    let (job, _) = retract(&mut engine, RetractAction::HardDelete, &[], async {}).await;
    assert!(job.succeeded > 0, "{job:?}");
    assert_eq!(job.restorable, 0, "{job:?}");
    let log = lab.server.lab.state().actions.len();
    let e = answer(
        &mut engine,
        Command::Restore {
            job: job.id.clone(),
            only: vec![],
        },
    )
    .await;
    assert!(
        !e.iter()
            .any(|e| matches!(e, EngineEvent::JobStarted { .. })),
        "{e:?}"
    );
    assert!(
        matches!(e.last(), Some(EngineEvent::EngineFailed { message }) if message.contains("hard-deleted")),
        "{e:?}"
    );
    assert_eq!(lab.server.lab.state().actions.len(), log);
}

/// Issue 12: "`q` quits mid-job … and the console cannot resume that job afterwards". The
/// console's shutdown stops the job after its copies in flight and leaves it interrupted (not
/// cancelled); the next start finds it, resumes it, and every copy is acted on exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_by_quitting_is_found_and_resumed_at_the_next_start() {
    let scenario = demo::build(7);
    let options = LabOptions {
        latency: Duration::from_millis(40),
        ..LabOptions::default()
    };
    let lab = synced_lab(&scenario, options, &[CONTOSO], 30).await;
    let store_path = lab.store.path().unwrap().to_path_buf();
    // The plan is built at full speed; the job then runs one request at a time, so it takes
    // several round trips and is mid-way when the console quits.
    let job = contoso_junk_job(&lab.config, &store_path, "quit mid-job").await;
    let mut slow = lab.config.clone();
    for t in &mut slow.tenants {
        t.limits.max_in_flight = 1;
        t.limits.per_mailbox = 1;
    }
    let mut engine = engine_for(&slow, &store_path);
    let log_start = lab.server.lab.state().actions.len();
    engine
        .commands
        .send(Command::ResumeJob {
            job: JobId(job.to_string()),
        })
        .unwrap();
    events_until(&mut engine, "the job to start", |es| {
        es.iter()
            .any(|e| matches!(e, EngineEvent::JobStarted { .. }))
    })
    .await;
    // The operator quits (and confirms): Shutdown.
    engine.commands.send(Command::Shutdown).unwrap();
    let events = events_until(&mut engine, "the job to stop", |es| {
        finished_job(es).is_some()
    })
    .await;
    let (job, _) = finished_job(&events).unwrap();
    assert_eq!(job.state, JobPhase::Interrupted, "{job:?}");
    assert!(
        job.succeeded + job.failed() < job.total,
        "the job stopped before its end: {job:?}"
    );
    // The engine stops after that: its events end.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        while engine.events.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the engine did not stop");
    {
        let store = Store::open(&store_path).unwrap();
        let row = store.job(job.id.0.parse().unwrap()).unwrap().unwrap();
        assert_eq!(row.state, clawback::store::jobs::JobState::Running);
        assert!(store.job_lease(row.id).unwrap().is_none(), "lease released");
    }

    // The next start: the job is offered, and resumed.
    let mut engine = engine_for(&lab.config, &store_path);
    engine.commands.send(Command::FindInterruptedJobs).unwrap();
    let found = events_until(&mut engine, "the interrupted jobs", |es| {
        es.iter()
            .any(|e| matches!(e, EngineEvent::InterruptedJobsFound(_)))
    })
    .await;
    let Some(EngineEvent::InterruptedJobsFound(interrupted)) = found.last().cloned() else {
        panic!("{found:?}")
    };
    assert_eq!(
        interrupted.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![job.id.clone()]
    );
    assert_eq!(interrupted[0].state, JobPhase::Interrupted);
    let e = answer(
        &mut engine,
        Command::ResumeJob {
            job: job.id.clone(),
        },
    )
    .await;
    let (resumed, _) = finished_job(&e).unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(resumed.state, JobPhase::Finished, "{resumed:?}");
    assert_eq!(resumed.failed(), 0, "{resumed:?}");
    // The lab: each copy moved exactly once, all of them in Junk.
    let acted: Vec<(String, String)> = lab
        .server
        .lab
        .state()
        .actions
        .iter()
        .skip(log_start)
        .map(|a| {
            (
                a.mailbox.to_ascii_lowercase(),
                a.internet_message_id.clone(),
            )
        })
        .collect();
    let unique: BTreeSet<_> = acted.iter().cloned().collect();
    assert_eq!(acted.len(), unique.len(), "a copy was acted on twice");
    assert_eq!(acted.len() as u64, resumed.succeeded);
    let folders = contoso_folders(&lab.server);
    for key in &unique {
        assert!(
            folders[key].contains(&Folder::Junk),
            "{key:?}: {:?}",
            folders[key]
        );
    }
    // Nothing is left to offer.
    engine.commands.send(Command::FindInterruptedJobs).unwrap();
    let found = events_until(&mut engine, "no interrupted jobs", |es| {
        es.iter()
            .any(|e| matches!(e, EngineEvent::InterruptedJobsFound(_)))
    })
    .await;
    assert!(
        matches!(found.last(), Some(EngineEvent::InterruptedJobsFound(j)) if j.is_empty()),
        "{found:?}"
    );
}

/// Issue 12: a job another live process runs is reported as such (`JobLeased`), not as a
/// failure, is not offered for resume, and runs here once that process lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_another_process_runs_is_leased_not_failed() {
    use clawback::store::jobs::{LeaseHolder, host_name};
    let scenario = demo::build(7);
    let lab = synced_lab(&scenario, LabOptions::default(), &[], 30).await;
    let store_path = lab.store.path().unwrap().to_path_buf();
    // A job created and not run (as a crash right after creating it leaves it).
    let job = contoso_junk_job(&lab.config, &store_path, "leased").await;
    // Another live process (this one's pid, another owner) holds its lease.
    let other = LeaseHolder {
        owner: "another-console".into(),
        pid: std::process::id(),
        host: host_name(),
    };
    let store = Store::open(&store_path).unwrap();
    assert!(
        store
            .acquire_job_lease(job, &other, chrono::Duration::seconds(30))
            .unwrap()
            .is_ok()
    );
    let mut engine = engine_for(&lab.config, &store_path);
    let id = JobId(job.to_string());
    engine.commands.send(Command::FindInterruptedJobs).unwrap();
    let found = events_until(&mut engine, "the interrupted jobs", |es| {
        es.iter()
            .any(|e| matches!(e, EngineEvent::InterruptedJobsFound(_)))
    })
    .await;
    assert!(
        matches!(found.last(), Some(EngineEvent::InterruptedJobsFound(j)) if j.is_empty()),
        "a job run elsewhere is not offered: {found:?}"
    );
    let log = lab.server.lab.state().actions.len();
    engine
        .commands
        .send(Command::ResumeJob { job: id.clone() })
        .unwrap();
    let e = events_until(&mut engine, "the lease answer", |es| {
        es.iter().any(|e| {
            matches!(
                e,
                EngineEvent::JobLeased { .. }
                    | EngineEvent::EngineFailed { .. }
                    | EngineEvent::JobStarted { .. }
            )
        })
    })
    .await;
    assert!(
        matches!(e.last(), Some(EngineEvent::JobLeased { job, holder })
            if *job == id && holder.contains(&format!("pid {}", std::process::id()))),
        "{e:?}"
    );
    assert_eq!(lab.server.lab.state().actions.len(), log);
    // The other process lets go: the job is interrupted, offered, and runs here.
    store.release_job_lease(job, "another-console").unwrap();
    engine.commands.send(Command::FindInterruptedJobs).unwrap();
    let found = events_until(&mut engine, "the interrupted jobs", |es| {
        es.iter()
            .any(|e| matches!(e, EngineEvent::InterruptedJobsFound(_)))
    })
    .await;
    assert!(
        matches!(found.last(), Some(EngineEvent::InterruptedJobsFound(j)) if j.len() == 1 && j[0].id == id),
        "{found:?}"
    );
    let e = answer(&mut engine, Command::ResumeJob { job: id.clone() }).await;
    let (done, _) = finished_job(&e).unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(done.state, JobPhase::Finished);
    assert!(done.succeeded > 0);
}

/// The console on `config`, its engine on a fresh store in `dir/data` (no trace synced).
fn console_on(config: &clawback::config::Config, dir: &std::path::Path) -> Console {
    let store = Store::open_in_dir(&dir.join("data")).unwrap();
    let engine = std::sync::Arc::new(Engine::new(config.clone(), store).unwrap());
    let (app, _theme) = prepare(config, &TuiOptions::default()).unwrap();
    Console {
        app,
        engine: service::spawn(engine),
    }
}

/// Issue 12, part 6: the Tenants pane against a lab that was stopped shows every tenant in
/// the Error state naming the endpoint and the cause — never "Granted" — within the
/// configured (short) timeouts, with progress on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_pane_against_a_stopped_lab_shows_the_error_naming_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, endpoint) = lab_support::stopped_demo_lab(dir.path()).await;
    config.http.connect_timeout_secs = 1.0;
    config.http.read_timeout_secs = 1.0;
    let mut console = console_on(&config, dir.path());
    console.keys(&["7"]);
    assert_eq!(console.app.tenants.tenants, Loadable::Loading);
    let started = Instant::now();
    console
        .until("the tenants", |a| a.tenants.tenants.ready().is_some())
        .await;
    // Refused is final at once; the old retry schedule took minutes.
    assert!(started.elapsed() < Duration::from_secs(20));
    let tenants = console.app.tenants.tenants.ready().unwrap().clone();
    assert_eq!(tenants.len(), config.tenants.len());
    let want = format!("connection refused: {endpoint}");
    for t in &tenants {
        assert_eq!(t.error.as_deref(), Some(want.as_str()), "{}", t.name);
        assert!(t.domains.is_empty(), "{}: {:?}", t.name, t.domains);
    }
    let theme = clawback::tui::theme::Theme::default_theme();
    let screen = tui_support::render_text(&console.app, &theme, 80, 24);
    for t in &tenants {
        assert!(screen.contains(&format!("{}: {want}", t.name)), "{screen}");
    }
    assert!(!screen.contains("Granted"), "{screen}");
}

/// Issue 12, part 6: a slow tenants load shows done/total while it runs, and `Esc` stops it:
/// the engine aborts the provider work (`TenantsCancelled`) and no late result replaces the
/// pane's "cancelled".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esc_cancels_a_slow_tenants_load_and_the_engine_aborts_it() {
    // Every API answer takes a minute; the read timeout would wait longer still.
    let options = LabOptions {
        latency: Duration::from_secs(60),
        ..LabOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, mut config, _) = lab_support::demo_lab(options, dir.path()).await;
    config.http.read_timeout_secs = 120.0;
    let mut console = console_on(&config, dir.path());
    console.keys(&["7"]);
    console
        .until("the first progress", |a| {
            a.tenants.loading.and_then(|l| l.progress).is_some()
        })
        .await;
    let progress = console.app.tenants.loading.unwrap().progress.unwrap();
    assert_eq!(
        (progress.done, progress.total),
        (0, config.tenants.len()),
        "{progress:?}"
    );
    console.keys(&["esc"]);
    assert!(
        matches!(&console.app.tenants.tenants, Loadable::Failed(m) if m.starts_with("cancelled after")),
        "{:?}",
        console.app.tenants.tenants
    );
    // The engine confirms it stopped the load (sent only when it aborted unfinished work).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, console.engine.events.recv()).await {
            Ok(Some(EngineEvent::TenantsCancelled)) => break,
            Ok(Some(EngineEvent::TenantsLoaded(t))) => panic!("loaded after cancel: {t:?}"),
            Ok(Some(other)) => {
                console.app.on_engine(other);
            }
            Ok(None) => panic!("the engine stopped"),
            Err(_) => panic!("no TenantsCancelled within 20 s"),
        }
    }
    assert!(
        matches!(&console.app.tenants.tenants, Loadable::Failed(m) if m.starts_with("cancelled after"))
    );
    assert_eq!(console.app.tenants.loading, None);
}
