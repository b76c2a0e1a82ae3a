//! The Gmail client over real HTTP against the lab's Google face. Side effects are checked in
//! the lab state, never through the client's own report.

mod lab_support;
use lab_support::{GMAIL_PHISH as PHISH, LostRestore, gmail_scenario, restore_with_lost_answer};

use clawback::config::Config;
use clawback::lab::scenario::Scenario;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{FailureReason, Folder, RetractAction};
use clawback::provider::{BulkItem, ProgressEvent, ProviderClient, Resolved};

async fn lab(options: LabOptions) -> (LabServer, ProviderClient, tempfile::TempDir) {
    lab_of(&gmail_scenario(), options).await
}

/// A lab serving `scenario`, and the client of its (first) tenant.
async fn lab_of(
    scenario: &Scenario,
    options: LabOptions,
) -> (LabServer, ProviderClient, tempfile::TempDir) {
    let server = LabServer::start(scenario, options, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("lab starts");
    let dir = tempfile::tempdir().expect("tmp");
    let config: Config = server
        .write_config(&dir.path().join("lab.toml"))
        .expect("config");
    let client = ProviderClient::new(&config, &config.tenants[0]).expect("client");
    (server, client, dir)
}

/// (folder, number of recorded actions) of the message in the mailbox, from the lab's state.
fn lab_copy(server: &LabServer, mailbox: &str, mid: &str) -> (Vec<Folder>, usize) {
    let state = server.lab.state();
    let folders = state
        .copies_of(mid)
        .into_iter()
        .filter(|(_, m, _)| *m == mailbox)
        .map(|(_, _, c)| c.folder.clone())
        .collect();
    let acted = state
        .actions
        .iter()
        .filter(|a| a.mailbox == mailbox && a.internet_message_id == mid)
        .count();
    (folders, acted)
}

#[tokio::test]
async fn each_action_lands_where_the_table_says_and_restores() {
    for (action, landed) in [
        (RetractAction::Junk, Some(Folder::Junk)),
        (RetractAction::Trash, Some(Folder::Trash)),
        (RetractAction::SoftDelete, Some(Folder::Trash)),
        (RetractAction::HardDelete, Some(Folder::Purged)),
    ] {
        let (server, client, _dir) = lab(LabOptions::default()).await;
        let copies = client
            .locate("alice@fabrikam.test", PHISH)
            .await
            .expect("locate");
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(copies[0].folder, Folder::Inbox);
        let applied = client.apply(&copies[0], action).await.expect("applied");
        let (folders, acted) = lab_copy(&server, "alice@fabrikam.test", PHISH);
        assert_eq!(folders.first().cloned(), landed, "{action}");
        assert_eq!(acted, 1, "{action} acted once");
        if action == RetractAction::SoftDelete {
            assert!(
                applied.detail.contains("soft_delete mapped to trash"),
                "{}",
                applied.detail
            );
        }
        if landed != Some(Folder::Purged) {
            client
                .restore(
                    "alice@fabrikam.test",
                    PHISH,
                    applied.new_id.as_deref(),
                    &Folder::Inbox,
                )
                .await
                .expect("restore");
            let (folders, acted) = lab_copy(&server, "alice@fabrikam.test", PHISH);
            assert_eq!(folders, vec![Folder::Inbox], "{action} restored");
            assert_eq!(acted, 2);
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn failure_reasons_and_groups() {
    let (server, client, _dir) = lab(LabOptions::default()).await;
    let mut outcomes = std::collections::BTreeMap::new();
    let items = [
        "alice@fabrikam.test",
        "bob@fabrikam.test",
        "dave@ungranted.test",
        "ext@partner.example",
    ]
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
        .retract_many(items, RetractAction::Trash, |e| {
            if let ProgressEvent::Finished { key, outcome } = e {
                outcomes.insert(key, outcome);
            }
        })
        .await;
    assert!(outcomes[&0].is_ok(), "{:?}", outcomes[&0]);
    let reason = |k: u64| outcomes[&k].as_ref().err().map(|f| f.reason);
    assert_eq!(reason(1), Some(FailureReason::AlreadyGone));
    assert_eq!(reason(2), Some(FailureReason::NotAuthorized));
    assert_eq!(reason(3), Some(FailureReason::External));
    assert_eq!(
        lab_copy(&server, "bob@fabrikam.test", PHISH),
        (vec![Folder::Trash], 0)
    );
    assert_eq!(
        lab_copy(&server, "alice@fabrikam.test", PHISH),
        (vec![Folder::Trash], 1)
    );

    match client.resolve("all@fabrikam.test").await.expect("resolve") {
        Resolved::Group {
            member_mailboxes,
            external_members,
            ..
        } => {
            assert_eq!(
                member_mailboxes,
                vec![
                    "alice@fabrikam.test",
                    "bob@fabrikam.test",
                    "carol@fabrikam.test"
                ]
            );
            assert_eq!(external_members, vec!["ext@partner.example"]);
        }
        other => panic!("{other:?}"),
    }
    let r = client.resolve("all@fabrikam.test").await.expect("resolve");
    assert_eq!(r.failure_reason(), Some(FailureReason::NotAMailbox));
    assert!(matches!(
        client.resolve("bob@fabrikam.test").await,
        Ok(Resolved::Mailbox { .. })
    ));
    assert!(matches!(
        client.resolve("x@partner.example").await,
        Ok(Resolved::External { .. })
    ));
}

#[tokio::test]
async fn bulk_in_one_mailbox_with_faults_moves_each_copy_once() {
    let options = LabOptions {
        fault_rate: 0.05,
        seed: 7,
        token_ttl: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    let (server, client, _dir) = lab(options).await;
    let items = (0..50)
        .map(|i| BulkItem {
            key: i,
            mailbox: "carol@fabrikam.test".into(),
            internet_message_id: format!("<bulk-{i}@evil.example>"),
            copy: None,
        })
        .collect();
    let mut ok = 0;
    client
        .retract_many(items, RetractAction::Junk, |e| {
            if let ProgressEvent::Finished { outcome, .. } = e {
                assert!(outcome.is_ok(), "{outcome:?}");
                ok += 1;
            }
        })
        .await;
    assert_eq!(ok, 50);
    for i in 0..50 {
        let mid = format!("<bulk-{i}@evil.example>");
        assert_eq!(
            lab_copy(&server, "carol@fabrikam.test", &mid),
            (vec![Folder::Junk], 1),
            "{mid}"
        );
    }
}

fn lost_restore(user_then: Option<Folder>) -> LostRestore<'static> {
    LostRestore {
        tenant: "fabrikam",
        mailbox: "alice@fabrikam.test",
        message_id: PHISH,
        action: RetractAction::Trash,
        retracted_to: Folder::Trash,
        restore_path: "/untrash",
        user_then,
    }
}

/// A restore (untrash) whose answer is lost after it landed, with the user trashing the copy
/// again before clawback looks: the copy is in Trash as the retraction left it, but its
/// `historyId` moved on, so clawback leaves it alone (the lost attempt may have landed) rather
/// than undo the user's move.
#[tokio::test]
async fn a_lost_restore_answer_then_a_users_move_back_is_left_alone() {
    let (server, client, _dir) = lab(LabOptions::default()).await;
    let r = lost_restore(Some(Folder::Trash));
    let f = restore_with_lost_answer(&server, &client, &r)
        .await
        .expect_err("left alone");
    assert_eq!(f.reason, FailureReason::MovedSince, "{f:?}");
    assert!(
        f.message.contains(clawback::provider::MAY_HAVE_LANDED),
        "{f:?}"
    );
    let (folders, acted) = lab_copy(&server, r.mailbox, PHISH);
    assert_eq!(folders, vec![Folder::Trash], "the user's move stands");
    assert_eq!(
        acted, 3,
        "trash, one untrash, the user's trash: nothing after it"
    );
    server.stop().await;
}

/// The same lost answer without anyone touching the copy: verified by reading it, not sent
/// twice.
#[tokio::test]
async fn a_lost_restore_answer_is_verified_not_sent_again() {
    let (server, client, _dir) = lab(LabOptions::default()).await;
    let r = lost_restore(None);
    let applied = restore_with_lost_answer(&server, &client, &r)
        .await
        .expect("verified");
    assert!(applied.detail.contains("verified"), "{applied:?}");
    let (folders, acted) = lab_copy(&server, r.mailbox, PHISH);
    assert_eq!(folders, vec![Folder::Inbox]);
    assert_eq!(acted, 2, "trash and one untrash");
    assert_eq!(server.lab.faults_dropped(), 1, "the scripted loss happened");
    server.stop().await;
}

/// An undo interrupted in another process, judged by the copy that process recorded before
/// sending (id and historyId): unchanged means its request never landed, so it is sent now;
/// trashed again by the user after that request landed (same id, new historyId) means moved
/// since, left alone.
#[tokio::test]
async fn an_earlier_attempt_is_judged_by_the_recorded_copy() {
    use clawback::provider::{MAY_HAVE_LANDED, RestoreOptions, SentCopy};
    let alice = "alice@fabrikam.test";
    let (server, client, _dir) = lab(LabOptions::default()).await;
    let inbox = client.locate(alice, PHISH).await.expect("locate");
    let trashed = client
        .apply(&inbox[0], RetractAction::Trash)
        .await
        .expect("trashed");
    let in_trash = client.locate(alice, PHISH).await.expect("locate");
    let recorded = SentCopy::of(&in_trash[0]);
    assert!(recorded.version.is_some(), "Gmail copies carry a historyId");
    let options = RestoreOptions {
        retracted_to: Some(&Folder::Trash),
        earlier: Some(&recorded),
        before_send: None,
    };
    // Never landed: the recorded copy, unchanged.
    client
        .restore_from(
            alice,
            PHISH,
            trashed.new_id.as_deref(),
            &Folder::Inbox,
            options,
        )
        .await
        .expect("sent");
    assert_eq!(lab_copy(&server, alice, PHISH), (vec![Folder::Inbox], 2));

    // Trashed again; the interrupted restore landed, then the user trashed the copy.
    client
        .apply(&inbox[0], RetractAction::Trash)
        .await
        .expect("trashed again");
    let in_trash = client.locate(alice, PHISH).await.expect("locate");
    let recorded = SentCopy::of(&in_trash[0]);
    client
        .restore(alice, PHISH, Some(&recorded.id), &Folder::Inbox)
        .await
        .expect("the interrupted attempt");
    let user = reqwest::Client::new()
        .post(format!("{}/_lab/user-action", server.base_url()))
        .json(&serde_json::json!({
            "tenant": "fabrikam", "mailbox": alice, "message_id": PHISH, "folder": "trash",
        }))
        .send()
        .await
        .expect("user action");
    assert!(user.status().is_success());
    let f = client
        .restore_from(
            alice,
            PHISH,
            Some(&recorded.id),
            &Folder::Inbox,
            RestoreOptions {
                earlier: Some(&recorded),
                ..options
            },
        )
        .await
        .expect_err("left alone");
    assert_eq!(f.reason, FailureReason::MovedSince, "{f:?}");
    assert!(f.message.contains("new historyId"), "{f:?}");
    assert!(f.message.contains(MAY_HAVE_LANDED), "{f:?}");
    assert_eq!(lab_copy(&server, alice, PHISH), (vec![Folder::Trash], 5));
    server.stop().await;
}

/// The Directory API serves users 500 and group members 200 a page: listing every mailbox and
/// expanding a large group follow `nextPageToken` to the last page, and no member or mailbox
/// is lost or counted twice between pages.
#[tokio::test]
async fn directory_listings_follow_every_page() {
    const USERS: usize = 1_205;
    const MEMBERS: usize = 450;
    let mut scenario = serde_json::to_value(gmail_scenario()).expect("scenario as JSON");
    let tenant = &mut scenario["tenant"][0];
    let users: Vec<String> = (0..USERS)
        .map(|i| format!("u{i:04}@fabrikam.test"))
        .collect();
    for u in &users {
        tenant["user"]
            .as_array_mut()
            .expect("users")
            .push(serde_json::json!({ "address": u }));
    }
    tenant["group"]
        .as_array_mut()
        .expect("groups")
        .push(serde_json::json!({ "address": "big@fabrikam.test", "members": &users[..MEMBERS] }));
    let scenario = Scenario::parse(&scenario.to_string(), false, "test").expect("scenario parses");
    let (_server, client, _dir) = lab_of(&scenario, LabOptions::default()).await;

    let mut listed = client.list_mailboxes().await.expect("listed");
    let count = listed.len();
    listed.sort();
    listed.dedup();
    assert_eq!(listed.len(), count, "a mailbox listed twice");
    for u in &users {
        assert!(listed.binary_search(u).is_ok(), "{u} not listed");
    }
    assert!(
        listed.len() > USERS,
        "the scenario's own users too: {}",
        listed.len()
    );

    let Resolved::Group {
        member_mailboxes,
        external_members,
        ..
    } = client.resolve("big@fabrikam.test").await.expect("resolved")
    else {
        panic!("not a group");
    };
    assert_eq!(member_mailboxes, users[..MEMBERS].to_vec());
    assert!(external_members.is_empty(), "{external_members:?}");
}
