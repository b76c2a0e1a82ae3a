//! Layer 2 + 3: the headless console driven by key presses against the real engine task, which
//! talks to the lab's demo scenario over HTTP. Search → select → untick two recipients →
//! depth 1 → Junk → confirm; the lab's own state shows exactly the expected copies moved; then
//! undo puts them back.

#![allow(clippy::unwrap_used)]

mod tui_support;

mod lab_support;
use clawback::engine::plan::RetractRequest;
use clawback::engine::view::{Confirmation, CopyOutcome, JobId, JobPhase};
use clawback::engine::{Command, Engine, EngineEvent, EngineHandle, service};
use clawback::lab::demo::{self, CAMPAIGN_MESSAGE_ID, CONTOSO};
use clawback::lab::scenario::Scenario;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{FailureReason, Folder, RetractAction, Role, Trigger};
use clawback::store::Store;
use clawback::tui::action::Action;
use clawback::tui::app::{App, Loadable};
use clawback::tui::{TuiOptions, prepare};
use lab_support::synced_lab;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tui_support::{press, type_text};

/// (mailbox, Message-ID) → folders of its copies in contoso.
type Folders = BTreeMap<(String, String), Vec<Folder>>;

fn contoso_folders(server: &LabServer) -> Folders {
    let state = server.lab.state();
    let mut out: Folders = BTreeMap::new();
    for t in state.tenants.iter().filter(|t| t.name == CONTOSO) {
        for (addr, mb) in &t.mailboxes {
            for c in mb.copies.values() {
                out.entry((addr.clone(), c.content.internet_message_id.clone()))
                    .or_default()
                    .push(c.folder.clone());
            }
        }
    }
    out
}

/// The copies a depth-1 Junk retraction of the campaign in contoso must move, from the scenario:
/// the campaign and its direct replies/forwards, in granted mailboxes, not the sender's own copy,
/// not already gone, not in Sent Items, and not in the mailboxes the operator unticked.
fn expected(scenario: &Scenario, unticked: &BTreeSet<String>) -> BTreeSet<(String, String)> {
    let t = scenario.tenants.iter().find(|t| t.name == CONTOSO).unwrap();
    let granted: BTreeSet<String> = t
        .domains
        .iter()
        .filter(|d| d.granted)
        .map(|d| d.name.clone())
        .collect();
    let mailboxes: BTreeSet<String> = t
        .users
        .iter()
        .filter(|u| u.mailbox)
        .map(|u| u.address.to_ascii_lowercase())
        .collect();
    let mut out = BTreeSet::new();
    for m in &t.messages {
        let parent = m.in_reply_to.as_ref().or(m.references.last());
        let depth1 =
            m.message_id == CAMPAIGN_MESSAGE_ID || parent.is_some_and(|p| p == CAMPAIGN_MESSAGE_ID);
        if !depth1 {
            continue;
        }
        for c in &m.copies {
            let mb = c.mailbox.to_ascii_lowercase();
            let domain = mb.rsplit('@').next().unwrap_or_default();
            if mb != m.from.to_ascii_lowercase()
                && granted.contains(domain)
                && mailboxes.contains(&mb)
                && !unticked.contains(&mb)
                && !c.folder.is_gone()
                && !matches!(c.folder, Folder::SentItems | Folder::Drafts)
            {
                out.insert((mb, m.message_id.clone()));
            }
        }
    }
    out
}

struct Console {
    app: App,
    engine: EngineHandle,
}

impl Console {
    fn send(&self, commands: Vec<Command>) {
        for c in commands {
            self.engine.commands.send(c).unwrap();
        }
    }

    fn keys(&mut self, keys: &[&str]) {
        for k in keys {
            let commands = self.app.handle_key(press(k));
            self.send(commands);
        }
    }

    fn type_text(&mut self, text: &str) {
        let commands = type_text(&mut self.app, text);
        self.send(commands);
    }

    /// Feeds engine events and ticks into the app until `done` holds (or fails after 60 s).
    async fn until(&mut self, what: &str, done: impl Fn(&App) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&self.app) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            match tokio::time::timeout(Duration::from_millis(50), self.engine.events.recv()).await {
                Ok(Some(event)) => {
                    let commands = self.app.on_engine(event);
                    self.send(commands);
                }
                Ok(None) => panic!("the engine stopped while waiting for {what}"),
                Err(_) => {
                    let commands = self.app.update(Action::Tick);
                    self.send(commands);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_select_untick_depth_junk_confirm_then_undo() {
    let scenario = demo::build(7);
    let lab = synced_lab(&scenario, LabOptions::default(), &[], 30).await;
    let (server, config, store) = (lab.server, lab.config, lab.store);
    let engine = std::sync::Arc::new(Engine::new(config.clone(), store).unwrap());
    let (app, _theme) = prepare(&config, &TuiOptions::default()).unwrap();
    let mut console = Console {
        app,
        engine: service::spawn(engine),
    };
    let startup = console.app.startup();
    console.send(startup);
    console
        .until("the first results", |a| a.search.results.ready().is_some())
        .await;

    // Search for the campaign in contoso and open it.
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
    console.keys(&["enter"]);
    console
        .until("the recipients", |a| {
            matches!(a.recipients.rows, Loadable::Ready(_))
        })
        .await;

    // Untick the first two suggested recipients.
    let rows = console.app.recipients.rows.ready().unwrap().clone();
    let suggested: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.included)
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
        console
            .app
            .selection()
            .1
            .into_iter()
            .collect::<BTreeSet<_>>(),
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
    let before = contoso_folders(&server);
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
    console
        .until("the job to finish", |a| {
            a.jobs.list.ready().is_some_and(|jobs| {
                jobs.iter()
                    .any(|j| j.state == JobPhase::Finished && j.succeeded > 0)
            })
        })
        .await;

    // The lab moved exactly the expected copies, once each, to Junk.
    let moved: Vec<(String, String)> = server
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
    let moved_set: BTreeSet<_> = moved.iter().cloned().collect();
    assert_eq!(moved.len(), moved_set.len(), "a copy was acted on twice");
    assert_eq!(moved_set, want);
    let after = contoso_folders(&server);
    for key in &want {
        assert!(
            after[key].contains(&Folder::Junk),
            "{key:?}: {:?}",
            after[key]
        );
    }
    for mailbox in &unticked {
        for (key, folders) in &before {
            if &key.0 == mailbox {
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

    // Undo from the jobs pane: everything is back where it was.
    console.keys(&["u"]);
    console
        .until("the restore to finish", |a| {
            a.jobs.list.ready().is_some_and(|jobs| {
                jobs.len() == 2 && jobs.iter().all(|j| j.state == JobPhase::Finished)
            })
        })
        .await;
    assert_eq!(contoso_folders(&server), before);
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
