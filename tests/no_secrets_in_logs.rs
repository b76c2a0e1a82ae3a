//! Both clients run against the lab with every tracing (and `log`) event at TRACE level captured
//! into a buffer; no token, assertion, client secret or private key may appear in it.

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

use clawback::lab::demo::CAMPAIGN_MESSAGE_ID;
use clawback::lab::keys::GOOGLE_SA_PRIVATE_KEY;
use clawback::lab::scenario::lab_client_secret;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{Folder, RetractAction};
use clawback::provider::{BulkItem, ProviderClient};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn exercise(client: &ProviderClient, mailboxes: &[String]) {
    let _ = client.permissions().await;
    let _ = client.domains_status().await;
    let located = client
        .locate(&mailboxes[0], CAMPAIGN_MESSAGE_ID)
        .await
        .unwrap();
    assert!(!located.is_empty());
    let applied = client
        .apply(&located[0], RetractAction::Trash)
        .await
        .unwrap();
    client
        .restore(
            &mailboxes[0],
            CAMPAIGN_MESSAGE_ID,
            applied.new_id.as_deref(),
            &Folder::Inbox,
        )
        .await
        .unwrap();
    let items = mailboxes[1..]
        .iter()
        .enumerate()
        .map(|(i, m)| BulkItem {
            key: i as u64,
            mailbox: m.clone(),
            internet_message_id: CAMPAIGN_MESSAGE_ID.into(),
            copy: None,
        })
        .collect();
    client
        .retract_many(items, RetractAction::Junk, |_| {})
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_carry_no_token_or_secret() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();

    let scenario = clawback::lab::scenario::demo(1);
    let options = LabOptions {
        // Short tokens and some faults: refreshes, retries and error paths get logged too.
        token_ttl: Duration::from_secs(2),
        fault_rate: 0.05,
        seed: 3,
        ..Default::default()
    };
    let server = LabServer::start(&scenario, options, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = server.write_config(&dir.path().join("lab.toml")).unwrap();
    for (tenant, t) in config.tenants.iter().zip(&scenario.tenants) {
        let client = ProviderClient::new(&config, tenant).unwrap();
        let campaign = t
            .messages
            .iter()
            .find(|m| m.message_id == CAMPAIGN_MESSAGE_ID)
            .unwrap();
        let mailboxes: Vec<String> = campaign
            .copies
            .iter()
            .filter(|c| c.folder == Folder::Inbox)
            .take(12)
            .map(|c| c.mailbox.clone())
            .collect();
        exercise(&client, &mailboxes[..6]).await;
        tokio::time::sleep(Duration::from_millis(1700)).await; // past the refresh point
        exercise(&client, &mailboxes[6..]).await;
    }
    server.stop().await;

    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    // The capture worked and saw the token traffic at all levels.
    assert!(log.contains("TRACE"), "no trace-level events captured");
    // Transport internals too (hyper, reqwest through `log`): where headers would leak.
    assert!(log.contains("hyper"), "no transport-level events captured");
    assert!(log.contains("reqwest"), "no reqwest events captured");
    assert!(
        log.contains("requesting Microsoft access token"),
        "{}",
        &log[..log.len().min(2000)]
    );
    assert!(log.contains("requesting Google access token"));
    // Secrets: the Microsoft client secrets, the service-account key (any line of its body),
    // and every JWT — access tokens and signed assertions all start with base64url '{"'.
    for t in &scenario.tenants {
        let secret = lab_client_secret(&t.name);
        assert!(
            !log.contains(&secret),
            "client secret {secret:?} in the log"
        );
    }
    for line in GOOGLE_SA_PRIVATE_KEY
        .lines()
        .filter(|l| !l.starts_with("-----"))
    {
        assert!(!log.contains(line), "private key material in the log");
    }
    for needle in [
        "eyJ",
        "Bearer ",
        "access_token",
        "client_secret=",
        "assertion=",
    ] {
        if let Some(at) = log.find(needle) {
            let from = at.saturating_sub(200);
            panic!(
                "{needle:?} in the log: …{}…",
                &log[from..(at + 200).min(log.len())]
            );
        }
    }
}
