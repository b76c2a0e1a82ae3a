//! The engine against the lab's demo scenario (issue 5): retract the campaign at depth 0, 1 and 2
//! and check through the lab's own state that exactly the copies the *scenario* says (not our
//! plan) moved, once each; then restore after each action puts every copy back where it was.

#![allow(clippy::unwrap_used)]

mod lab_support;
use lab_support::{CopyKey, expected_copies, synced_lab};

use clawback::engine::Engine;
use clawback::engine::execute::{JobEvent, RunOptions};
use clawback::engine::plan::RetractRequest;
use clawback::lab::demo::{self, CAMPAIGN_MESSAGE_ID};
use clawback::lab::scenario::Scenario;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{Folder, RetractAction, TenantKind, Trigger};
use clawback::store::jobs::ItemState;
use std::collections::{BTreeMap, BTreeSet};

const SEED: u64 = 7;

struct World {
    scenario: Scenario,
    server: LabServer,
    engine: Engine,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let scenario = demo::build(SEED);
    let lab = synced_lab(&scenario, LabOptions::default(), &[], 30).await;
    World {
        engine: Engine::new(lab.config, lab.store).unwrap(),
        scenario,
        server: lab.server,
        _dir: lab.dir,
    }
}

/// The messages of the campaign's conversation up to `depth`, from the scenario's own headers.
fn conversation(scenario: &Scenario, depth: u8) -> BTreeSet<String> {
    let mut reached: BTreeSet<String> = BTreeSet::from([CAMPAIGN_MESSAGE_ID.to_string()]);
    let mut frontier = reached.clone();
    for _ in 0..depth {
        let mut next = BTreeSet::new();
        for t in &scenario.tenants {
            for m in &t.messages {
                // The parent: In-Reply-To, else the last of References (DESIGN §2 depth,
                // one hop per level).
                let parent = m.in_reply_to.as_ref().or(m.references.last());
                let names_frontier = parent.is_some_and(|p| frontier.contains(p));
                if names_frontier && !reached.contains(&m.message_id) {
                    next.insert(m.message_id.clone());
                }
            }
        }
        reached.extend(next.iter().cloned());
        frontier = next;
    }
    reached
}

/// What a retraction of the campaign at `depth` must act on, from the scenario alone: every
/// copy of those messages in a granted domain's mailbox, except the sender's own copy and
/// copies already gone (Junk, Trash, Recoverable Items) or in Sent Items / Drafts.
fn expected(scenario: &Scenario, depth: u8) -> BTreeSet<CopyKey> {
    expected_copies(scenario, &conversation(scenario, depth))
}

/// Every copy's folder in the lab now.
fn lab_folders(server: &LabServer) -> BTreeMap<CopyKey, Vec<Folder>> {
    let state = server.lab.state();
    let mut out: BTreeMap<CopyKey, Vec<Folder>> = BTreeMap::new();
    for t in &state.tenants {
        for (addr, mb) in &t.mailboxes {
            for c in mb.copies.values() {
                out.entry((
                    t.name.clone(),
                    addr.clone(),
                    c.content.internet_message_id.clone(),
                ))
                .or_default()
                .push(c.folder.clone());
            }
        }
    }
    out
}

/// Mutating calls recorded by the lab per copy since `from` (index into the action log).
fn lab_actions_since(server: &LabServer, from: usize) -> BTreeMap<CopyKey, usize> {
    let state = server.lab.state();
    let mut out = BTreeMap::new();
    for a in state.actions.iter().skip(from) {
        *out.entry((
            a.tenant.clone(),
            a.mailbox.to_ascii_lowercase(),
            a.internet_message_id.clone(),
        ))
        .or_insert(0) += 1;
    }
    out
}

fn action_log_len(server: &LabServer) -> usize {
    server.lab.state().actions.len()
}

fn request(depth: u8, action: RetractAction) -> RetractRequest {
    RetractRequest {
        message_ids: vec![CAMPAIGN_MESSAGE_ID.to_string()],
        query: None,
        tenants: vec![],
        only: vec![],
        exclude: vec![],
        depth,
        action,
        trigger: Trigger::Manual,
        reason: "engine_demo test".into(),
    }
}

fn ignore(_: JobEvent) {}

/// Plans, applies and returns the job id.
async fn retract(w: &World, depth: u8, action: RetractAction) -> i64 {
    let plan = w.engine.build_plan(request(depth, action)).await.unwrap();
    let job = w.engine.create_job(&plan, false).unwrap();
    let report = w
        .engine
        .run_job(job, &RunOptions::default(), &ignore)
        .await
        .unwrap();
    assert_eq!(report.counts.remaining(), 0, "{report:?}");
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_at_depth_0_1_2_moves_exactly_the_scenarios_copies_once() {
    let w = world().await;
    let mut previous = BTreeSet::new();
    for depth in 0..=2u8 {
        let want = expected(&w.scenario, depth);
        let messages = conversation(&w.scenario, depth);
        eprintln!(
            "depth {depth}: {} messages, {} copies to act on",
            messages.len(),
            want.len()
        );
        assert!(
            depth == 0 || messages.len() > conversation(&w.scenario, depth - 1).len(),
            "depth {depth} adds messages in the demo scenario"
        );
        assert!(want.len() >= previous.len());
        previous = want.clone();
        let before = lab_folders(&w.server);
        let log = action_log_len(&w.server);

        let job = retract(&w, depth, RetractAction::Junk).await;

        let acted = lab_actions_since(&w.server, log);
        let acted_keys: BTreeSet<CopyKey> = acted.keys().cloned().collect();
        assert_eq!(
            acted_keys,
            want,
            "depth {depth}: acted on {} copies, scenario says {}; extra {:?}, missing {:?}",
            acted_keys.len(),
            want.len(),
            acted_keys.difference(&want).take(5).collect::<Vec<_>>(),
            want.difference(&acted_keys).take(5).collect::<Vec<_>>()
        );
        assert!(
            acted.values().all(|n| *n == 1),
            "depth {depth}: a copy was acted on twice: {:?}",
            acted.iter().filter(|(_, n)| **n != 1).collect::<Vec<_>>()
        );
        let after = lab_folders(&w.server);
        for key in &want {
            assert!(
                after[key].contains(&Folder::Junk),
                "depth {depth}: {key:?} is in {:?}",
                after[key]
            );
        }
        for (key, folders) in &before {
            if !want.contains(key) {
                assert_eq!(&after[key], folders, "depth {depth}: {key:?} was touched");
            }
        }

        // Undo before the next depth, so each depth starts from the scenario's state.
        let log = action_log_len(&w.server);
        let report = w.engine.restore(job, &[], &ignore).await.unwrap();
        assert_eq!(report.counts.failed, 0, "{report:?}");
        assert_eq!(lab_folders(&w.server), before, "depth {depth}: restore");
        let restored = lab_actions_since(&w.server, log);
        assert_eq!(restored.keys().cloned().collect::<BTreeSet<_>>(), want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_after_each_action_returns_every_copy_to_its_folder() {
    let w = world().await;
    let want = expected(&w.scenario, 0);
    let kinds: BTreeMap<String, TenantKind> = w
        .scenario
        .tenants
        .iter()
        .map(|t| (t.name.clone(), t.kind))
        .collect();
    for action in [
        RetractAction::Junk,
        RetractAction::Trash,
        RetractAction::SoftDelete,
    ] {
        let before = lab_folders(&w.server);
        let job = retract(&w, 0, action).await;
        let during = lab_folders(&w.server);
        for key in &want {
            let target = match (action, kinds[&key.0]) {
                (RetractAction::Junk, _) => Folder::Junk,
                (RetractAction::Trash, _) => Folder::Trash,
                (RetractAction::SoftDelete, TenantKind::Microsoft365) => {
                    Folder::RecoverableDeletions
                }
                (RetractAction::SoftDelete, TenantKind::GoogleWorkspace) => Folder::Trash,
                _ => unreachable!(),
            };
            assert!(
                during[key].contains(&target),
                "{action}: {key:?} is in {:?}, expected {target:?}",
                during[key]
            );
        }
        let report = w.engine.restore(job, &[], &ignore).await.unwrap();
        assert_eq!(report.counts.failed, 0, "{action}: {report:?}");
        assert_eq!(lab_folders(&w.server), before, "{action}: restore");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_delete_purges_every_copy_and_the_hold_retains_its_own() {
    let w = world().await;
    let want = expected(&w.scenario, 0);
    let log = action_log_len(&w.server);
    let job = retract(&w, 0, RetractAction::HardDelete).await;
    let after = lab_folders(&w.server);
    let items = w.engine.store().job_items(job, None).unwrap();
    let hold = demo::DEMO_HOLD_MAILBOX;
    for key in &want {
        let item = items
            .iter()
            .find(|i| i.mailbox == key.1 && i.message_id == key.2)
            .unwrap();
        // A held mailbox answers 204 like any other (PROVIDER-APIS.md §F.3): the item is
        // purged for the user and kept for admins by the hold.
        assert_eq!(item.state, ItemState::Succeeded, "{key:?}: {item:?}");
        assert!(
            after[key].contains(&Folder::Purged),
            "{key:?}: {:?}",
            after[key]
        );
    }
    assert!(
        want.iter().any(|k| k.1 == hold),
        "the hold mailbox is a recipient"
    );
    assert!(lab_actions_since(&w.server, log).len() >= want.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_campaign_plan_accounts_for_every_copy_and_recipient() {
    use clawback::model::FailureReason;
    let w = world().await;
    let plan = w
        .engine
        .build_plan(request(0, RetractAction::Junk))
        .await
        .unwrap();
    // The JSON a reviewer gets carries the same accounting.
    let plan =
        clawback::engine::plan::Plan::from_json(&plan.to_json_pretty(), "plan.json").unwrap();
    let item = |t: &str, m: &str| plan.items.iter().find(|i| i.tenant == t && i.mailbox == m);
    let skipped = |t: &str, a: &str| {
        plan.skipped
            .iter()
            .find(|s| s.tenant.as_deref() == Some(t) && s.address == a)
            .map(|s| s.reason)
    };
    // From the scenario alone: every copy of the campaign, its folder and its domain's grant.
    let (mut copies, mut ungranted, mut soft_deleted) = (0, 0, 0);
    for t in &w.scenario.tenants {
        let granted: BTreeSet<String> = t
            .domains
            .iter()
            .filter(|d| d.granted)
            .map(|d| d.name.to_ascii_lowercase())
            .collect();
        for m in t
            .messages
            .iter()
            .filter(|m| m.message_id == CAMPAIGN_MESSAGE_ID)
        {
            for c in &m.copies {
                copies += 1;
                let mb = c.mailbox.to_ascii_lowercase();
                let domain = mb.rsplit('@').next().unwrap_or_default().to_string();
                let what = (item(&t.name, &mb).is_some(), skipped(&t.name, &mb));
                if !granted.contains(&domain) {
                    ungranted += 1;
                    assert_eq!(what, (false, Some(FailureReason::NotAuthorized)), "{mb}");
                } else if c.folder.is_gone() {
                    // Soft-deleted by the user before the first sync too: that sync lists
                    // Recoverable Items, so the trace names the copy and the plan says why.
                    if c.folder == Folder::RecoverableDeletions {
                        soft_deleted += 1;
                    }
                    assert_eq!(what, (false, Some(FailureReason::AlreadyGone)), "{mb}");
                } else {
                    assert_eq!(what, (true, None), "{mb}");
                }
            }
        }
    }
    assert_eq!(copies, demo::CAMPAIGN_RECIPIENTS);
    assert_eq!(ungranted, 13, "8 contoso-labs.com + 5 fabrikam.org");
    assert!(soft_deleted > 0, "the demo has soft-deleted copies");
    // The lists it was addressed to, and the outside member of one.
    assert_eq!(
        skipped("contoso", demo::DEMO_DL),
        Some(FailureReason::NotAMailbox)
    );
    assert_eq!(
        skipped("fabrikam", demo::FABRIKAM_SALES_DL),
        Some(FailureReason::NotAMailbox)
    );
    assert_eq!(
        skipped("contoso", demo::DEMO_EXTERNAL_MEMBER),
        Some(FailureReason::External)
    );
    // Nothing in the plan that is not a copy of the scenario or one of those recipients.
    let c = plan.counts();
    assert_eq!(
        c.copies + plan.skipped.len(),
        copies + 3,
        "{:?}",
        c.skipped_by_reason
    );
    // The sender (outside) has no copy and is in no line.
    assert!(
        plan.items
            .iter()
            .all(|i| i.mailbox != demo::CAMPAIGN_SENDER)
    );
}

/// The console's checklist for the demo campaign (no tenant named): every mailbox holding one
/// of the campaign's 150 copies in the lab, in both tenants, is a row with the state the lab's
/// own folders and grants call for; the lists it was addressed to are rows of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_campaign_checklist_lists_every_mailbox_holding_a_copy_plus_the_lists() {
    use clawback::engine::view::{AddressKind, RecipientState};
    use clawback::model::FailureReason;
    let w = world().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let progress = clawback::engine::planner::LocateProgress::new(tx);
    let rows = w
        .engine
        .recipient_checklist(&[CAMPAIGN_MESSAGE_ID.to_string()], Some(&progress))
        .await
        .unwrap();
    drop(progress);
    // The lab's state: who holds a copy of the campaign, where, in which tenant.
    let lab = lab_folders(&w.server);
    let holders: BTreeMap<(String, String), Vec<Folder>> = lab
        .iter()
        .filter(|(k, _)| k.2 == CAMPAIGN_MESSAGE_ID)
        .map(|(k, f)| ((k.0.clone(), k.1.to_ascii_lowercase()), f.clone()))
        .collect();
    assert_eq!(
        holders.len(),
        demo::CAMPAIGN_RECIPIENTS,
        "150 copies in the lab"
    );
    let granted: BTreeSet<(String, String)> = w
        .scenario
        .tenants
        .iter()
        .flat_map(|t| {
            t.domains
                .iter()
                .filter(|d| d.granted)
                .map(|d| (t.name.clone(), d.name.to_ascii_lowercase()))
        })
        .collect();
    let row = |t: &str, a: &str| {
        rows.iter()
            .find(|r| r.tenant == t && r.address.eq_ignore_ascii_case(a))
    };
    for ((tenant, mailbox), folders) in &holders {
        let r = row(tenant, mailbox).unwrap_or_else(|| panic!("no row for {tenant}/{mailbox}"));
        let domain = mailbox.rsplit('@').next().unwrap_or_default().to_string();
        let reason = match &r.state {
            RecipientState::NotActionable { reason, .. } => Some(*reason),
            RecipientState::Located => None,
            RecipientState::Unresolved { reason, detail } => {
                panic!("{mailbox} unresolved on a quiet lab: {reason} {detail}")
            }
        };
        if !granted.contains(&(tenant.clone(), domain)) {
            assert_eq!(reason, Some(FailureReason::NotAuthorized), "{mailbox}");
        } else if folders.iter().all(|f| f.is_gone()) {
            assert_eq!(reason, Some(FailureReason::AlreadyGone), "{mailbox}");
        } else {
            assert_eq!(reason, None, "{mailbox}");
            assert!(r.tickable());
            assert_eq!(r.folder.as_ref(), folders.iter().find(|f| !f.is_gone()));
        }
    }
    // Both tenants, and the two lists as not_a_mailbox rows (never tickable).
    for (tenant, list) in [
        (demo::CONTOSO, demo::DEMO_DL),
        (demo::FABRIKAM, demo::FABRIKAM_SALES_DL),
    ] {
        let r = row(tenant, list).unwrap_or_else(|| panic!("no row for {list}"));
        assert_eq!(r.kind, AddressKind::DistributionList);
        assert!(!r.tickable());
    }
    // Nothing else but the holders, the lists and what the plan says about outsiders.
    for r in &rows {
        let held = holders.contains_key(&(r.tenant.clone(), r.address.to_ascii_lowercase()));
        assert!(
            held || !r.tickable(),
            "{}/{} tickable without a copy in the lab",
            r.tenant,
            r.address
        );
    }
    let located = rows.iter().filter(|r| r.tickable()).count();
    // Progress heard every locate: the last count is complete.
    let mut last = None;
    while let Ok(c) = rx.try_recv() {
        last = Some(c);
    }
    let last = last.unwrap();
    assert_eq!(last.done, last.total);
    assert!(
        last.total as usize >= located,
        "{last:?} vs {located} located"
    );
}
