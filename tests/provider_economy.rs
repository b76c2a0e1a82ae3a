//! Request economy (issue 14): what a copy costs in sub-requests, counted by the lab
//! (`limits.served()`), for a copy the job locates itself and for one a plan located; that a
//! Graph copy outside the Inbox is still named by its folder (the lean locate asks for folder
//! ids only then), so a copy already in Junk is not acted on again; and that a client allowed
//! more than the service takes still acts on every copy exactly once (the pacer follows the
//! service's throttling).

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

mod lab_support;

use clawback::config::Config;
use clawback::engine::Engine;
use clawback::engine::plan::RetractRequest;
use clawback::lab::demo::CAMPAIGN_MESSAGE_ID;
use clawback::lab::generate::{GenerateKind, GenerateOptions, generate};
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{FailureReason, Folder, RetractAction, Trigger};
use clawback::provider::{BulkItem, ProgressEvent, ProviderClient};
use lab_support::{lab_user_action, synced_lab};
use std::collections::BTreeMap;

const MAILBOXES: usize = 60;

struct Lab {
    server: LabServer,
    client: ProviderClient,
    recipients: Vec<String>,
    _dir: tempfile::TempDir,
}

async fn lab(kind: GenerateKind) -> Lab {
    lab_with(kind, MAILBOXES, LabOptions::default(), None).await
}

/// A lab of `mailboxes` with `options`; the client may have `in_flight` sub-requests in flight
/// (default: what `--write-config` writes, never above the lab's capacity).
async fn lab_with(
    kind: GenerateKind,
    mailboxes: usize,
    options: LabOptions,
    in_flight: Option<usize>,
) -> Lab {
    let scenario = generate(&GenerateOptions {
        mailboxes,
        campaign_recipients: mailboxes,
        seed: 3,
        kind,
        background_messages: 2,
    })
    .unwrap();
    let recipients = lab_support::campaign_mailboxes(&scenario);
    let server = LabServer::start(&scenario, options, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config: Config = server.write_config(&dir.path().join("lab.toml")).unwrap();
    if let Some(n) = in_flight {
        config.tenants[0].limits.max_in_flight = n;
    }
    let client = ProviderClient::new(&config, &config.tenants[0]).unwrap();
    // The tenant's domains and the first token, outside the count.
    let _ = client.resolve(&recipients[0]).await.unwrap();
    Lab {
        server,
        client,
        recipients,
        _dir: dir,
    }
}

fn served(server: &LabServer) -> usize {
    server.lab.limits.served().iter().sum()
}

/// A user moves the campaign copy of `mailbox` to `folder` (through the lab's control API).
async fn user_moves(server: &LabServer, tenant: &str, mailbox: &str, folder: &str) {
    let http = reqwest::Client::new();
    let base = server.base_url();
    lab_user_action(&http, &base, tenant, mailbox, CAMPAIGN_MESSAGE_ID, folder).await;
}

/// Runs `items` to Junk; returns the outcomes by key.
async fn retract(
    client: &ProviderClient,
    items: Vec<BulkItem>,
) -> BTreeMap<u64, Result<Folder, FailureReason>> {
    let mut out = BTreeMap::new();
    client
        .retract_many(items, RetractAction::Junk, |e| {
            if let ProgressEvent::Finished { key, outcome } = e {
                out.insert(key, outcome.map(|a| a.from).map_err(|f| f.reason));
            }
        })
        .await;
    out
}

/// Copies in Junk, and actions per mailbox, as the lab has them.
fn lab_junk_and_actions(server: &LabServer) -> (usize, BTreeMap<String, usize>) {
    let state = server.lab.state();
    let junk = state
        .copies_of(CAMPAIGN_MESSAGE_ID)
        .into_iter()
        .filter(|(_, _, c)| c.folder == Folder::Junk)
        .count();
    let mut actions = BTreeMap::new();
    for a in &state.actions {
        if a.internet_message_id == CAMPAIGN_MESSAGE_ID {
            *actions.entry(a.mailbox.clone()).or_default() += 1;
        }
    }
    (junk, actions)
}

fn items(recipients: &[String]) -> Vec<BulkItem> {
    recipients
        .iter()
        .enumerate()
        .map(|(i, m)| BulkItem {
            key: i as u64,
            mailbox: m.clone(),
            internet_message_id: CAMPAIGN_MESSAGE_ID.into(),
            copy: None,
        })
        .collect()
}

/// Graph, a copy the job locates itself: the message list, the same filter in the Inbox, the
/// move — three sub-requests a copy (it was nine: the six well-known folder ids per mailbox).
#[tokio::test]
async fn graph_locates_and_acts_in_three_sub_requests_a_copy() {
    let l = lab(GenerateKind::Microsoft365).await;
    let before = served(&l.server);
    let out = retract(&l.client, items(&l.recipients)).await;
    let cost = served(&l.server) - before;
    assert_eq!(out.len(), MAILBOXES);
    assert!(
        out.values().all(|o| *o == Ok(Folder::Inbox)),
        "every copy acted on from the Inbox: {out:?}"
    );
    assert_eq!(cost, 3 * MAILBOXES, "sub-requests for {MAILBOXES} copies");
    let (junk, actions) = lab_junk_and_actions(&l.server);
    assert_eq!(junk, MAILBOXES);
    assert!(actions.values().all(|n| *n == 1), "{actions:?}");
}

/// Graph, a copy a plan located (`ProviderClient::locate`, then acted on by that id): two
/// sub-requests to locate a copy in the Inbox, one to act — and nothing read again between.
#[tokio::test]
async fn graph_a_planned_copy_costs_two_to_locate_and_one_to_act() {
    let l = lab(GenerateKind::Microsoft365).await;
    let mailbox = &l.recipients[1];
    let before = served(&l.server);
    let copies = l.client.locate(mailbox, CAMPAIGN_MESSAGE_ID).await.unwrap();
    assert_eq!(served(&l.server) - before, 2, "the locate");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].folder, Folder::Inbox);
    let mut planned = items(std::slice::from_ref(mailbox));
    planned[0].copy = Some(copies[0].clone());
    let out = retract(&l.client, planned).await;
    assert_eq!(out.get(&0), Some(&Ok(Folder::Inbox)));
    assert_eq!(served(&l.server) - before, 3, "locate and act");
}

/// A copy outside the Inbox costs the folder ids, and is named right: one in Junk is already
/// gone (no action), one in Archive is acted on from Archive, one the user soft-deleted is
/// found in Recoverable Items by a plan's locate.
#[tokio::test]
async fn graph_copies_outside_the_inbox_are_named_by_their_folder() {
    let l = lab(GenerateKind::Microsoft365).await;
    let tenant = l.client.tenant_name().to_string();
    let (junk, archive, deleted) = (&l.recipients[0], &l.recipients[1], &l.recipients[2]);
    user_moves(&l.server, &tenant, junk, "junkemail").await;
    user_moves(&l.server, &tenant, archive, "archive").await;
    user_moves(&l.server, &tenant, deleted, "recoverableitemsdeletions").await;

    let located = l.client.locate(deleted, CAMPAIGN_MESSAGE_ID).await.unwrap();
    assert_eq!(
        located.iter().map(|c| c.folder.clone()).collect::<Vec<_>>(),
        vec![Folder::RecoverableDeletions]
    );
    let located = l.client.locate(junk, CAMPAIGN_MESSAGE_ID).await.unwrap();
    assert_eq!(
        located.iter().map(|c| c.folder.clone()).collect::<Vec<_>>(),
        vec![Folder::Junk]
    );

    let out = retract(&l.client, items(&l.recipients[..3])).await;
    assert_eq!(out.get(&0), Some(&Err(FailureReason::AlreadyGone)));
    assert_eq!(out.get(&1), Some(&Ok(Folder::Archive)));
    assert_eq!(out.get(&2), Some(&Err(FailureReason::AlreadyGone)));
    let (_, actions) = lab_junk_and_actions(&l.server);
    let ours: BTreeMap<_, _> = actions
        .iter()
        .filter(|(m, _)| l.recipients[..3].contains(m))
        .collect();
    // The user's own moves are in the log too: one each; ours adds one for Archive only.
    assert_eq!(ours.get(junk), Some(&&1), "{ours:?}");
    assert_eq!(ours.get(archive), Some(&&2), "{ours:?}");
    assert_eq!(ours.get(deleted), Some(&&1), "{ours:?}");
}

/// Gmail, a copy the job locates itself: the search, the message's labels, the modify.
#[tokio::test]
async fn gmail_locates_and_acts_in_three_sub_requests_a_copy() {
    let l = lab(GenerateKind::GoogleWorkspace).await;
    let before = served(&l.server);
    let out = retract(&l.client, items(&l.recipients)).await;
    let cost = served(&l.server) - before;
    assert!(out.values().all(|o| o.is_ok()), "{out:?}");
    assert!(
        cost <= 3 * MAILBOXES,
        "{cost} sub-requests for {MAILBOXES} copies"
    );
    let (junk, actions) = lab_junk_and_actions(&l.server);
    assert_eq!(junk, MAILBOXES);
    assert!(actions.values().all(|n| *n == 1), "{actions:?}");
}

/// Google, cold: one token per impersonated user, each an RS256 signature made here and then a
/// request to the token endpoint. The signing slots (one per core and one more) are held for
/// the signature only: with the endpoint 200 ms away (the real one is tens of milliseconds
/// away), the next users' tokens are signed while earlier ones are still on their way, so far
/// more token requests are in flight at the lab than there are slots. (A slot held across the
/// request let one token per slot be on its way, and a core sit idle for each.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmail_signs_the_next_tokens_while_earlier_ones_are_on_their_way() {
    let options = LabOptions {
        token_latency: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let l = lab_with(GenerateKind::GoogleWorkspace, MAILBOXES, options, None).await;
    let out = retract(&l.client, items(&l.recipients)).await;
    assert!(out.values().all(|o| o.is_ok()), "{out:?}");
    assert_eq!(out.len(), MAILBOXES);
    let slots = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) + 1;
    let most = l
        .server
        .lab
        .stats
        .tokens_in_flight_max
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        most >= (2 * slots).min(MAILBOXES / 2),
        "at most {most} token requests at once at the lab, with {slots} signing slots"
    );
    let (junk, actions) = lab_junk_and_actions(&l.server);
    assert_eq!(junk, MAILBOXES);
    assert!(actions.values().all(|n| *n == 1), "{actions:?}");
}

/// A client configured for four times what the service takes (lab capacity 16, client 64 in
/// flight, whole-second `Retry-After`): it follows the service down instead of having most
/// requests refused every round until their attempts run out, and acts on every copy exactly
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_above_the_service_capacity_still_acts_on_every_copy_once() {
    above_capacity(GenerateKind::Microsoft365, 600).await;
}

/// The same for Gmail, whose batch parts are all served at once: a round's batch is cut to
/// what the tenant allows now (a batch of 50 against 16 places was refused in most parts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmail_above_the_service_capacity_still_acts_on_every_copy_once() {
    above_capacity(GenerateKind::GoogleWorkspace, 300).await;
}

async fn above_capacity(kind: GenerateKind, n: usize) {
    let options = LabOptions {
        latency: std::time::Duration::from_millis(20),
        capacity: 16,
        ..Default::default()
    };
    let l = lab_with(kind, n, options, Some(64)).await;
    let out = retract(&l.client, items(&l.recipients)).await;
    let throttled: u64 = l.server.lab.stats.throttled.lock().unwrap().values().sum();
    assert!(
        throttled > 0,
        "the lab never throttled: not the case under test"
    );
    let failed: Vec<_> = out.iter().filter(|(_, o)| o.is_err()).collect();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    let (junk, actions) = lab_junk_and_actions(&l.server);
    assert_eq!(junk, n);
    assert_eq!(actions.len(), n);
    assert!(actions.values().all(|n| *n == 1), "{actions:?}");
}

/// The batch requests the lab has served on the route ending in `route` (Graph `/$batch`,
/// up to 20 sub-requests each; Gmail `/batch/gmail/v1`, up to 25 calls each).
fn batches(server: &LabServer, route: &str) -> u64 {
    let requests = server.lab.stats.requests.lock().unwrap();
    requests
        .iter()
        .filter(|(k, _)| k.ends_with(route))
        .map(|(_, v)| *v)
        .sum()
}

/// The campaign in every recipient's mailbox, with a malformed Message-ID at index 5.
fn campaign_targets_and_a_malformed_id(recipients: &[String]) -> Vec<(String, String)> {
    let mut targets: Vec<(String, String)> = recipients
        .iter()
        .map(|m| (m.clone(), CAMPAIGN_MESSAGE_ID.to_string()))
        .collect();
    targets.insert(5, (recipients[0].clone(), "not a message id".to_string()));
    targets
}

/// Graph, many mailboxes located together: ten locates (two steps each) share a `$batch` of
/// 20 steps instead of one small `$batch` per mailbox; each copy is still named by its own
/// mailbox's answers (one in Junk is Junk), and a target that cannot be asked for (a malformed
/// Message-ID) gets its own error without holding the others back.
#[tokio::test]
async fn graph_locates_many_mailboxes_in_batches_of_twenty_steps() {
    let l = lab(GenerateKind::Microsoft365).await;
    let tenant = l.client.tenant_name().to_string();
    assert_eq!(l.client.locate_group(), 10);
    user_moves(&l.server, &tenant, &l.recipients[3], "junkemail").await;
    let targets = campaign_targets_and_a_malformed_id(&l.recipients);
    let (before, before_batches) = (served(&l.server), batches(&l.server, "/$batch"));

    let found = l.client.locate_many(&targets).await;

    assert_eq!(found.len(), targets.len());
    assert!(found[5].is_err(), "{:?}", found[5]);
    let folders: Vec<Vec<Folder>> = found
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 5)
        .map(|(_, r)| {
            r.as_ref()
                .unwrap()
                .iter()
                .map(|c| c.folder.clone())
                .collect()
        })
        .collect();
    for (i, f) in folders.iter().enumerate() {
        let want = if i == 3 { Folder::Junk } else { Folder::Inbox };
        assert_eq!(f, &vec![want], "{}", l.recipients[i]);
    }
    for (r, (mailbox, _)) in found.iter().zip(&targets).filter(|(r, _)| r.is_ok()) {
        assert!(r.as_ref().unwrap().iter().all(|c| &c.mailbox == mailbox));
    }
    // Two steps a mailbox in six `$batch`es; the copy in Junk then asks for Recoverable Items
    // and the six folder ids in a seventh.
    assert_eq!(served(&l.server) - before, 2 * MAILBOXES + 7);
    assert_eq!(batches(&l.server, "/$batch") - before_batches, 7);
}

/// Gmail, many mailboxes located together: their searches share HTTP batches of 25 calls
/// across mailboxes, then their gets do (it was two requests of their own per copy); each copy
/// is named by its own mailbox's answers (one in Spam is Junk), and a target that cannot be
/// asked for (a malformed Message-ID) gets its own error without holding the others back.
#[tokio::test]
async fn gmail_locates_many_mailboxes_in_batches_of_twenty_five_calls() {
    let l = lab(GenerateKind::GoogleWorkspace).await;
    let tenant = l.client.tenant_name().to_string();
    assert_eq!(l.client.locate_group(), 25);
    user_moves(&l.server, &tenant, &l.recipients[3], "junk").await;
    let targets = campaign_targets_and_a_malformed_id(&l.recipients);
    let before = served(&l.server);
    let before_batches = batches(&l.server, "/batch/gmail/v1");

    let found = l.client.locate_many(&targets).await;

    assert_eq!(found.len(), targets.len());
    assert!(found[5].is_err(), "{:?}", found[5]);
    for (i, r) in found.iter().enumerate().filter(|(i, _)| *i != 5) {
        let k = if i < 5 { i } else { i - 1 };
        let copies = r.as_ref().unwrap();
        let want = if k == 3 { Folder::Junk } else { Folder::Inbox };
        assert_eq!(
            copies.iter().map(|c| c.folder.clone()).collect::<Vec<_>>(),
            vec![want],
            "{}",
            l.recipients[k]
        );
        assert!(copies.iter().all(|c| c.mailbox == l.recipients[k]));
    }
    // A search and a get a mailbox, in batches of at most 25: two rounds of three batches.
    assert_eq!(served(&l.server) - before, 2 * MAILBOXES);
    assert_eq!(batches(&l.server, "/batch/gmail/v1") - before_batches, 6);
}

/// The planner locates a campaign's mailboxes ten to a `$batch`: a plan of 60 Inbox copies
/// (and the list the campaign was also sent to) costs seven `$batch`es of locate steps (it
/// was one per mailbox), and accounts for every copy and the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_locates_ten_mailboxes_a_batch() {
    let scenario = generate(&GenerateOptions {
        mailboxes: MAILBOXES,
        campaign_recipients: MAILBOXES,
        seed: 3,
        kind: GenerateKind::Microsoft365,
        background_messages: 2,
    })
    .unwrap();
    // Generated scenarios may be dated long ago: sync all of it.
    let lab = synced_lab(&scenario, LabOptions::default(), &[], 100_000).await;
    let tenant = lab.config.tenants[0].name.clone();
    let engine = Engine::new(lab.config, lab.store).unwrap();
    let (before, before_batches) = (served(&lab.server), batches(&lab.server, "/$batch"));
    let plan = engine
        .build_plan(RetractRequest {
            message_ids: vec![CAMPAIGN_MESSAGE_ID.into()],
            query: None,
            tenants: vec![tenant],
            only: vec![],
            exclude: vec![],
            depth: 0,
            action: RetractAction::Junk,
            trigger: Trigger::Manual,
            reason: "provider_economy".into(),
        })
        .await
        .unwrap();
    assert_eq!(plan.items.len(), MAILBOXES, "{:?}", plan.skipped);
    // The campaign is also addressed to a dynamic list: located too, then not a mailbox.
    let skipped: Vec<_> = plan
        .skipped
        .iter()
        .map(|s| (s.address.as_str(), s.reason))
        .collect();
    assert_eq!(
        skipped,
        vec![("all@contoso.com", FailureReason::NotAMailbox)]
    );
    // 61 locates of two steps: seven `$batch`es (it was 61), and one directory lookup of the
    // list.
    let targets = MAILBOXES + 1;
    assert_eq!(served(&lab.server) - before, 2 * targets + 1);
    assert_eq!(
        batches(&lab.server, "/$batch") - before_batches,
        (2 * targets).div_ceil(20) as u64
    );
}

/// Runs copies a plan located to Junk, acted on as located (`just_located`: moments ago, in
/// this run) or read again first; returns the outcomes by key (Ok = the folder acted from).
async fn retract_located(
    client: &ProviderClient,
    copies: &[clawback::provider::LocatedCopy],
    just_located: bool,
) -> BTreeMap<u64, Result<Folder, (FailureReason, String)>> {
    let items: Vec<BulkItem> = copies
        .iter()
        .enumerate()
        .map(|(i, c)| BulkItem {
            key: i as u64,
            mailbox: c.mailbox.clone(),
            internet_message_id: CAMPAIGN_MESSAGE_ID.into(),
            copy: Some(c.clone()),
        })
        .collect();
    let mut out = BTreeMap::new();
    client
        .retract_located_until(items, RetractAction::Junk, just_located, &|| false, |e| {
            if let ProgressEvent::Finished { key, outcome } = e {
                out.insert(key, outcome.map(|a| a.from).map_err(|f| (f.reason, f.code)));
            }
        })
        .await;
    out
}

/// Gmail, copies a plan located moments ago (a fresh plan, `--yes`): the search and the get
/// to locate, the modify to act — three sub-requests a copy, no second read of the labels. A
/// plan that waited (not just located) keeps the read: four.
#[tokio::test]
async fn gmail_a_just_located_copy_is_acted_on_without_a_second_read() {
    let l = lab(GenerateKind::GoogleWorkspace).await;
    let (fresh, waited) = l.recipients.split_at(MAILBOXES / 2);
    let before = served(&l.server);
    let mut copies = Vec::new();
    for mailbox in fresh {
        copies.extend(l.client.locate(mailbox, CAMPAIGN_MESSAGE_ID).await.unwrap());
    }
    assert_eq!(copies.len(), fresh.len());
    assert_eq!(served(&l.server) - before, 2 * fresh.len(), "the locates");
    let out = retract_located(&l.client, &copies, true).await;
    assert!(out.values().all(|o| *o == Ok(Folder::Inbox)), "{out:?}");
    assert_eq!(
        served(&l.server) - before,
        3 * fresh.len(),
        "locate and act"
    );

    let mut copies = Vec::new();
    for mailbox in waited {
        copies.extend(l.client.locate(mailbox, CAMPAIGN_MESSAGE_ID).await.unwrap());
    }
    let before = served(&l.server);
    let out = retract_located(&l.client, &copies, false).await;
    assert!(out.values().all(|o| *o == Ok(Folder::Inbox)), "{out:?}");
    assert_eq!(
        served(&l.server) - before,
        2 * waited.len(),
        "read again, act"
    );

    let (junk, actions) = lab_junk_and_actions(&l.server);
    assert_eq!(junk, MAILBOXES);
    assert!(actions.values().all(|n| *n == 1), "{actions:?}");
}

/// Acting without the second read keeps "already gone" right: a copy the user trashed after
/// the plan located it is named by the modify's answer (its labels say Trash: already gone,
/// not junked from the Inbox), and one the user deleted answers 404 and is located afresh
/// (gone: not found). An untouched copy beside them is junked.
#[tokio::test]
async fn gmail_a_copy_moved_after_its_locate_is_still_already_gone() {
    let l = lab(GenerateKind::GoogleWorkspace).await;
    let tenant = l.client.tenant_name().to_string();
    let mailboxes = &l.recipients[..3];
    let mut copies = Vec::new();
    for mailbox in mailboxes {
        copies.extend(l.client.locate(mailbox, CAMPAIGN_MESSAGE_ID).await.unwrap());
    }
    assert_eq!(copies.len(), 3);
    user_moves(&l.server, &tenant, &mailboxes[0], "trash").await;
    user_moves(&l.server, &tenant, &mailboxes[1], "purged").await;

    let out = retract_located(&l.client, &copies, true).await;

    assert_eq!(
        out.get(&0),
        Some(&Err((
            FailureReason::AlreadyGone,
            "already_moved".to_string()
        )))
    );
    assert_eq!(
        out.get(&1),
        Some(&Err((FailureReason::AlreadyGone, "not_found".to_string())))
    );
    assert_eq!(out.get(&2), Some(&Ok(Folder::Inbox)));
    let state = l.server.lab.state();
    let folders: BTreeMap<String, Folder> = state
        .copies_of(CAMPAIGN_MESSAGE_ID)
        .into_iter()
        .filter(|(_, m, _)| mailboxes.iter().any(|x| x == m))
        .map(|(_, m, c)| (m.to_string(), c.folder.clone()))
        .collect();
    assert_eq!(
        folders.get(&mailboxes[0]),
        Some(&Folder::Trash),
        "{folders:?}"
    );
    assert_eq!(
        folders.get(&mailboxes[2]),
        Some(&Folder::Junk),
        "{folders:?}"
    );
}
