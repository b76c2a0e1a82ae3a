//! Delegated sign-in (`auth = "device_code"`, issue 13 point 3/Build 4): the operator's token
//! reaches their own mailbox and the mailboxes they hold Exchange FullAccess to (clawback asks
//! for `Mail.ReadWrite.Shared`), and no other — the lab answers `ErrorAccessDenied` as Exchange
//! does, and clawback reports `not_authorized`. When the token expires it is renewed with the
//! refresh token (`offline_access`), so a long `watch` never asks the operator to sign in again.

#![allow(clippy::unwrap_used)]

use clawback::config::MicrosoftAuth;
use clawback::lab::scenario::Scenario;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{FailureReason, Folder};
use clawback::provider::ProviderClient;
use std::time::Duration;

const MID: &str = "<deleg-1@evil.example>";

fn scenario() -> Scenario {
    let date = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    toml::from_str(&format!(
        r#"
[[tenant]]
name = "contoso"
kind = "microsoft365"
domains = [{{ name = "contoso.com" }}]
user = [
  {{ address = "admin@contoso.com", admin = true, full_access = ["shared@contoso.com"] }},
  {{ address = "shared@contoso.com" }},
  {{ address = "other@contoso.com" }},
]

[[tenant.message]]
message_id = "{MID}"
from = "attacker@evil.example"
to = ["admin@contoso.com", "shared@contoso.com", "other@contoso.com"]
subject = "Password expiry"
date = "{date}"
copy = [
  {{ mailbox = "admin@contoso.com" }},
  {{ mailbox = "shared@contoso.com" }},
  {{ mailbox = "other@contoso.com" }},
]
"#
    ))
    .unwrap()
}

fn requests_ending(server: &LabServer, suffix: &str) -> u64 {
    let requests = server.lab.stats.requests.lock().unwrap();
    requests
        .iter()
        .filter(|(k, _)| k.ends_with(suffix))
        .map(|(_, v)| *v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_and_full_access_mailboxes_only_and_renewed_without_a_new_sign_in() {
    let server = LabServer::start(
        &scenario(),
        LabOptions {
            token_ttl: Duration::from_secs(2),
            ..LabOptions::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = server.write_config(&dir.path().join("lab.toml")).unwrap();
    config.tenants[0].auth = MicrosoftAuth::DeviceCode;
    let client = ProviderClient::new(&config, &config.tenants[0]).unwrap();

    // The lab signs the admin in at the second poll.
    let own = client.locate("admin@contoso.com", MID).await.unwrap();
    assert_eq!(own.len(), 1);
    let shared = client.locate("shared@contoso.com", MID).await.unwrap();
    assert_eq!(shared.len(), 1, "FullAccess + Mail.ReadWrite.Shared");
    let other = client.locate("other@contoso.com", MID).await.unwrap_err();
    assert_eq!(other.reason, FailureReason::NotAuthorized, "{other:?}");
    assert_eq!(other.code, "ErrorAccessDenied");
    assert_eq!(requests_ending(&server, "/devicecode"), 1);
    let tokens_at_sign_in = requests_ending(&server, "/token");

    // Past the 2-second lifetime: renewed with the refresh token, no second device code.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let moved = client
        .apply(&shared[0], clawback::model::RetractAction::Junk)
        .await;
    assert!(moved.is_ok(), "{moved:?}");
    assert_eq!(requests_ending(&server, "/devicecode"), 1, "no new sign-in");
    assert_eq!(
        requests_ending(&server, "/token"),
        tokens_at_sign_in + 1,
        "one refresh_token grant"
    );
    let state = server.lab.state();
    let folders: Vec<(String, Folder)> = state
        .copies_of(MID)
        .into_iter()
        .map(|(_, m, c)| (m.to_string(), c.folder.clone()))
        .collect();
    assert!(folders.contains(&("shared@contoso.com".into(), Folder::Junk)));
    assert!(folders.contains(&("other@contoso.com".into(), Folder::Inbox)));
}
