//! The Graph client over real HTTP against the lab's Microsoft face. Side effects are checked in
//! the lab state, never through the client's own report. Mirrors `provider_gmail.rs`.

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

mod lab_support;
use lab_support::{LostRestore, restore_with_lost_answer};

use clawback::config::Config;
use clawback::lab::scenario::Scenario;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{FailureReason, Folder, RetractAction};
use clawback::provider::{BulkItem, Failure, ProgressEvent, ProviderClient, Resolved};
use serde_json::json;
use std::collections::BTreeMap;

const PHISH: &str = "<phish-1@evil.example>";

/// A compact Microsoft 365 tenant: alice, bob (phish already in Deleted Items), carol (on
/// litigation hold), a user without mailbox, a user in an ungranted domain, nested groups with
/// an external member.
fn scenario() -> Scenario {
    let s = json!({
        "name": "provider-graph-test",
        "tenant": [{
            "name": "contoso",
            "kind": "microsoft365",
            "domains": [{"name": "contoso.test"}, {"name": "ungranted.test", "granted": false}],
            "user": [
                {"address": "admin@contoso.test", "admin": true},
                {"address": "alice@contoso.test"},
                {"address": "bob@contoso.test"},
                {"address": "carol@contoso.test", "on_hold": true},
                {"address": "nomail@contoso.test", "mailbox": false},
                {"address": "dave@ungranted.test"}
            ],
            "group": [
                {"address": "all@contoso.test", "members": ["alice@contoso.test", "team@contoso.test", "ext@partner.example"]},
                {"address": "team@contoso.test", "members": ["bob@contoso.test", "carol@contoso.test"]}
            ],
            "message": [{
                "message_id": PHISH,
                "from": "mallory@evil.example",
                "to": ["all@contoso.test"],
                "subject": "Urgent: invoice overdue",
                "date": "2026-03-10T12:00:00Z",
                "body": "Please pay the attached invoice today.",
                "copy": [
                    {"mailbox": "alice@contoso.test"},
                    {"mailbox": "bob@contoso.test", "folder": "trash"},
                    {"mailbox": "carol@contoso.test"},
                    {"mailbox": "dave@ungranted.test"}
                ]
            }]
        }]
    });
    Scenario::parse(&s.to_string(), false, "test").unwrap()
}

async fn lab() -> (LabServer, ProviderClient, tempfile::TempDir) {
    let server = LabServer::start(
        &scenario(),
        LabOptions::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config: Config = server.write_config(&dir.path().join("lab.toml")).unwrap();
    let client = ProviderClient::new(&config, &config.tenants[0]).unwrap();
    (server, client, dir)
}

/// (folders of the message's copies in the mailbox, recorded actions on it, their names),
/// from the lab's own state.
fn lab_copy(server: &LabServer, mailbox: &str, mid: &str) -> (Vec<Folder>, usize, Vec<String>) {
    let state = server.lab.state();
    let folders = state
        .copies_of(mid)
        .into_iter()
        .filter(|(_, m, _)| *m == mailbox)
        .map(|(_, _, c)| c.folder.clone())
        .collect();
    let actions: Vec<String> = state
        .actions
        .iter()
        .filter(|a| a.mailbox == mailbox && a.internet_message_id == mid)
        .map(|a| a.action.clone())
        .collect();
    (folders, actions.len(), actions)
}

#[tokio::test]
async fn each_action_lands_where_the_table_says_and_restores() {
    // DESIGN §2: junk → move junkemail; trash → move deleteditems; soft_delete → DELETE
    // (Recoverable Items\Deletions); hard_delete → permanentDelete (Purges).
    for (action, landed, call) in [
        (RetractAction::Junk, Folder::Junk, "move:junkemail"),
        (RetractAction::Trash, Folder::Trash, "move:deleteditems"),
        (
            RetractAction::SoftDelete,
            Folder::RecoverableDeletions,
            "delete",
        ),
        (RetractAction::HardDelete, Folder::Purged, "permanentDelete"),
    ] {
        let (server, client, _dir) = lab().await;
        let copies = client.locate("alice@contoso.test", PHISH).await.unwrap();
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(copies[0].folder, Folder::Inbox);
        let applied = client.apply(&copies[0], action).await.unwrap();
        assert_eq!(applied.to, landed, "{action}");
        let (folders, acted, calls) = lab_copy(&server, "alice@contoso.test", PHISH);
        assert_eq!(folders, vec![landed.clone()], "{action}");
        assert_eq!(acted, 1, "{action} acted once: {calls:?}");
        assert_eq!(calls, vec![call.to_string()], "{action}");
        // Graph ids change on move: the id the client kept is the lab's current one.
        if landed != Folder::Purged && landed != Folder::RecoverableDeletions {
            let state = server.lab.state();
            let now = state
                .copies_of(PHISH)
                .into_iter()
                .find(|(_, m, _)| *m == "alice@contoso.test")
                .map(|(_, _, c)| c.id.clone());
            assert_eq!(applied.new_id, now, "{action}: new id kept");
            assert_ne!(applied.new_id.as_deref(), Some(copies[0].id.as_str()));
        }

        let restored = client
            .restore(
                "alice@contoso.test",
                PHISH,
                applied.new_id.as_deref(),
                &Folder::Inbox,
            )
            .await;
        let (folders, acted, calls) = lab_copy(&server, "alice@contoso.test", PHISH);
        if landed == Folder::Purged {
            // Purges are admin recoverable only (eDiscovery): the client says so and does nothing.
            let f = restored.unwrap_err();
            assert_eq!(f.reason, FailureReason::AlreadyGone, "{f:?}");
            assert!(f.message.contains("admin recoverable"), "{f:?}");
            assert_eq!(folders, vec![Folder::Purged]);
            assert_eq!(acted, 1, "{calls:?}");
        } else {
            let r = restored.unwrap();
            assert_eq!(r.from, landed, "{action}");
            assert_eq!(folders, vec![Folder::Inbox], "{action} restored");
            assert_eq!(acted, 2, "{action}: {calls:?}");
            assert_eq!(calls[1], "move:inbox", "{action}");
        }
        server.stop().await;
    }
}

async fn outcomes(
    client: &ProviderClient,
    mailboxes: &[&str],
    action: RetractAction,
) -> BTreeMap<u64, Result<clawback::provider::Applied, Failure>> {
    let mut out = BTreeMap::new();
    let items = mailboxes
        .iter()
        .enumerate()
        .map(|(i, m)| BulkItem {
            key: i as u64,
            mailbox: m.to_string(),
            internet_message_id: PHISH.into(),
            copy: None,
        })
        .collect();
    client
        .retract_many(items, action, |e| {
            if let ProgressEvent::Finished { key, outcome } = e {
                out.insert(key, outcome);
            }
        })
        .await;
    out
}

#[tokio::test]
async fn failure_reasons_keep_the_provider_code() {
    let (server, client, _dir) = lab().await;
    let got = outcomes(
        &client,
        &[
            "alice@contoso.test",
            "bob@contoso.test",
            "dave@ungranted.test",
            "ext@partner.example",
            "nomail@contoso.test",
        ],
        RetractAction::Trash,
    )
    .await;
    assert_eq!(got.len(), 5);
    assert!(got[&0].is_ok(), "{:?}", got[&0]);
    let fail = |k: u64| got[&k].as_ref().unwrap_err().clone();
    // The user already deleted it: not acted on.
    let f = fail(1);
    assert_eq!(f.reason, FailureReason::AlreadyGone, "{f:?}");
    assert_eq!(f.code, "already_moved", "{f:?}");
    assert!(f.message.contains("Trash"), "{f:?}");
    // Ungranted domain: Graph's own 403 code is kept.
    let f = fail(2);
    assert_eq!(f.reason, FailureReason::NotAuthorized, "{f:?}");
    assert_eq!(
        (f.status, f.code.as_str()),
        (Some(403), "ErrorAccessDenied")
    );
    let f = fail(3);
    assert_eq!(f.reason, FailureReason::External, "{f:?}");
    // A user without a mailbox: Graph's MailboxNotEnabledForRESTAPI kept.
    let f = fail(4);
    assert_eq!(f.reason, FailureReason::NotAMailbox, "{f:?}");
    assert_eq!(f.code, "MailboxNotEnabledForRESTAPI", "{f:?}");

    assert_eq!(
        lab_copy(&server, "bob@contoso.test", PHISH).0,
        vec![Folder::Trash]
    );
    assert_eq!(lab_copy(&server, "bob@contoso.test", PHISH).1, 0);
    assert_eq!(
        lab_copy(&server, "dave@ungranted.test", PHISH).0,
        vec![Folder::Inbox]
    );
    assert_eq!(lab_copy(&server, "dave@ungranted.test", PHISH).1, 0);
    assert_eq!(
        lab_copy(&server, "alice@contoso.test", PHISH).0,
        vec![Folder::Trash]
    );
    assert_eq!(lab_copy(&server, "alice@contoso.test", PHISH).1, 1);

    // A stale id (the copy moved since it was located): Graph answers 404 ErrorItemNotFound
    // (classified in provider::errors' tests), nothing was done, so the copy is located afresh
    // and found in Junk already: not acted on a second time.
    let (server, client, _dir) = lab().await;
    let copy = client.locate("alice@contoso.test", PHISH).await.unwrap()[0].clone();
    client.apply(&copy, RetractAction::Junk).await.unwrap();
    let f = client.apply(&copy, RetractAction::Trash).await.unwrap_err();
    assert_eq!(f.reason, FailureReason::AlreadyGone, "{f:?}");
    assert_eq!(f.code, "already_moved", "{f:?}");
    assert!(f.message.contains("Junk"), "{f:?}");
    assert_eq!(
        lab_copy(&server, "alice@contoso.test", PHISH).0,
        vec![Folder::Junk]
    );
    assert_eq!(lab_copy(&server, "alice@contoso.test", PHISH).1, 1);
}

#[tokio::test]
async fn hard_delete_on_the_held_mailbox_succeeds_and_is_purged() {
    let (server, client, _dir) = lab().await;
    let got = outcomes(
        &client,
        &["carol@contoso.test", "alice@contoso.test"],
        RetractAction::HardDelete,
    )
    .await;
    // A hold does not refuse permanentDelete (PROVIDER-APIS.md §F.3): 204, like anywhere else.
    assert!(got[&0].is_ok(), "{:?}", got[&0]);
    assert!(got[&1].is_ok(), "{:?}", got[&1]);
    assert_eq!(
        lab_copy(&server, "carol@contoso.test", PHISH).0,
        vec![Folder::Purged]
    );
    assert_eq!(lab_copy(&server, "carol@contoso.test", PHISH).1, 1);
    assert_eq!(
        lab_copy(&server, "alice@contoso.test", PHISH).0,
        vec![Folder::Purged]
    );
}

#[tokio::test]
async fn a_move_on_the_held_mailbox_works_too() {
    let (server, client, _dir) = lab().await;
    let got = outcomes(&client, &["carol@contoso.test"], RetractAction::Trash).await;
    assert!(got[&0].is_ok(), "{:?}", got[&0]);
    assert_eq!(
        lab_copy(&server, "carol@contoso.test", PHISH).0,
        vec![Folder::Trash]
    );
}

#[tokio::test]
async fn a_group_is_not_a_mailbox_and_its_nested_members_resolve() {
    let (server, client, _dir) = lab().await;
    let r = client.resolve("all@contoso.test").await.unwrap();
    assert_eq!(r.failure_reason(), Some(FailureReason::NotAMailbox));
    let Resolved::Group {
        mut member_mailboxes,
        external_members,
        ..
    } = r
    else {
        panic!("{r:?}");
    };
    member_mailboxes.sort();
    // team@ is nested: bob and carol come through it; the group itself is no mailbox.
    assert_eq!(
        member_mailboxes,
        vec![
            "alice@contoso.test",
            "bob@contoso.test",
            "carol@contoso.test"
        ]
    );
    assert_eq!(external_members, vec!["ext@partner.example"]);
    assert!(matches!(
        client.resolve("alice@contoso.test").await,
        Ok(Resolved::Mailbox { .. })
    ));
    assert_eq!(
        client
            .resolve("x@partner.example")
            .await
            .unwrap()
            .failure_reason(),
        Some(FailureReason::External)
    );
    // The members' mailboxes come back for retraction: retract through them.
    let members: Vec<&str> = member_mailboxes.iter().map(String::as_str).collect();
    let got = outcomes(&client, &members, RetractAction::Junk).await;
    assert!(got[&0].is_ok(), "{:?}", got[&0]);
    assert_eq!(
        got[&1].as_ref().unwrap_err().reason,
        FailureReason::AlreadyGone
    );
    assert!(got[&2].is_ok(), "{:?}", got[&2]);
    for m in ["alice@contoso.test", "carol@contoso.test"] {
        assert_eq!(lab_copy(&server, m, PHISH).0, vec![Folder::Junk], "{m}");
        assert_eq!(lab_copy(&server, m, PHISH).1, 1, "{m}");
    }
}

fn lost_restore(action: RetractAction, user_then: Option<Folder>) -> LostRestore<'static> {
    LostRestore {
        tenant: "contoso",
        mailbox: "alice@contoso.test",
        message_id: PHISH,
        action,
        retracted_to: match action {
            RetractAction::Junk => Folder::Junk,
            _ => Folder::Trash,
        },
        restore_path: "/move",
        user_then,
    }
}

/// A restore whose answer is lost after it landed, with the user moving the copy back to
/// Deleted Items before clawback looks: the copy is back where the retraction put it, but
/// under a new id (Graph ids change on every move), so clawback leaves it alone and says the
/// lost attempt may have landed — it does not undo the user's move.
#[tokio::test]
async fn a_lost_restore_answer_then_a_users_move_back_is_left_alone() {
    let (server, client, _dir) = lab().await;
    let r = lost_restore(RetractAction::Trash, Some(Folder::Trash));
    let f = restore_with_lost_answer(&server, &client, &r)
        .await
        .unwrap_err();
    assert_eq!(f.reason, FailureReason::MovedSince, "{f:?}");
    assert!(
        f.message.contains(clawback::provider::MAY_HAVE_LANDED),
        "{f:?}"
    );
    let (folders, _, calls) = lab_copy(&server, r.mailbox, PHISH);
    assert_eq!(folders, vec![Folder::Trash], "the user's move stands");
    assert_eq!(
        calls,
        vec!["move:deleteditems", "move:inbox", "user:deleteditems"],
        "one restore sent, none after the user's move"
    );
    server.stop().await;
}

/// The same lost answer without anyone touching the copy: clawback looks, finds it back in
/// the Inbox and records the restore as verified, without sending it twice.
#[tokio::test]
async fn a_lost_restore_answer_is_verified_not_sent_again() {
    let (server, client, _dir) = lab().await;
    let r = lost_restore(RetractAction::Junk, None);
    let applied = restore_with_lost_answer(&server, &client, &r)
        .await
        .unwrap();
    assert!(applied.detail.contains("verified"), "{applied:?}");
    let (folders, _, calls) = lab_copy(&server, r.mailbox, PHISH);
    assert_eq!(folders, vec![Folder::Inbox]);
    assert_eq!(calls, vec!["move:junkemail", "move:inbox"]);
    assert_eq!(server.lab.faults_dropped(), 1, "the scripted loss happened");
    server.stop().await;
}
