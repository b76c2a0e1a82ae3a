//! The Gmail client over real HTTP against the lab's Google face. Side effects are checked in
//! the lab state, never through the client's own report.

mod lab_support;
use lab_support::{GMAIL_PHISH as PHISH, gmail_scenario};

use clawback::config::Config;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{FailureReason, Folder, RetractAction};
use clawback::provider::{BulkItem, ProgressEvent, ProviderClient, Resolved};

async fn lab(options: LabOptions) -> (LabServer, ProviderClient, tempfile::TempDir) {
    let server = LabServer::start(
        &gmail_scenario(),
        options,
        "127.0.0.1:0".parse().expect("addr"),
    )
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
