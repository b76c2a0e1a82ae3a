//! Issue 12, part 6: an endpoint that cannot be reached is said to be so, fast, naming
//! `host:port` and the cause — never retried into minutes of silence, never a missing
//! permission. Real clients over real HTTP against a lab that was stopped (nothing listens on
//! its port any more) or that answers slower than the configured read timeout.

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

mod lab_support;

use clawback::config::Config;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{FailureReason, Folder, RetractAction, TenantKind};
use clawback::provider::{LocatedCopy, ProviderClient};
use lab_support::{demo_lab, stopped_demo_lab};
use std::time::Duration;

/// Far above what a fail-fast answer needs, far below the minutes of the old retries.
const DEADLINE: Duration = Duration::from_secs(20);

/// The first Microsoft 365 tenant's client.
fn graph_client(config: &Config) -> ProviderClient {
    let tenant = config
        .tenants
        .iter()
        .find(|t| t.kind == TenantKind::Microsoft365)
        .unwrap();
    ProviderClient::new(config, tenant).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_lab_is_connection_refused_at_once_for_both_providers_not_a_permission() {
    let dir = tempfile::tempdir().unwrap();
    let (config, endpoint) = stopped_demo_lab(dir.path()).await;
    let kinds: Vec<TenantKind> = config.tenants.iter().map(|t| t.kind).collect();
    assert!(
        kinds.contains(&TenantKind::Microsoft365) && kinds.contains(&TenantKind::GoogleWorkspace),
        "{kinds:?}"
    );
    let want = format!("connection refused: {endpoint}");
    for tenant in &config.tenants {
        let client = ProviderClient::new(&config, tenant).unwrap();
        let checks = async {
            let listed = client.list_mailboxes().await.unwrap_err();
            let domains = client.domains_status().await.unwrap_err();
            let perms = client.permissions().await;
            (listed, domains, perms)
        };
        let (listed, domains, perms) = tokio::time::timeout(DEADLINE, checks)
            .await
            .unwrap_or_else(|_| panic!("{}: still waiting after {DEADLINE:?}", tenant.name));
        for f in [&listed, &domains] {
            assert_eq!(f.code, "connection_refused", "{}: {f}", tenant.name);
            assert_eq!(f.message, want, "{}", tenant.name);
            assert_ne!(f.reason, FailureReason::NotAuthorized);
            assert!(f.is_unreachable());
        }
        let token = perms.token.unwrap_err();
        assert_eq!(token.code, "connection_refused", "{}: {token}", tenant.name);
        assert!(
            perms.missing.is_empty(),
            "{}: nothing is known to be missing when nothing answered: {:?}",
            tenant.name,
            perms.missing
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_to_a_stopped_lab_fails_plainly_it_never_left() {
    let dir = tempfile::tempdir().unwrap();
    let (mut config, endpoint) = stopped_demo_lab(dir.path()).await;
    // Configured domains: the mailbox is known to be internal without asking the provider,
    // so the refusal met is the mutation's own (its token request), not a domain lookup's.
    for t in &mut config.tenants {
        t.domains = vec!["contoso.example".into()];
    }
    let client = graph_client(&config);
    let copy = LocatedCopy {
        mailbox: "someone@contoso.example".into(),
        id: "AAMkAD-some-id".into(),
        internet_message_id: "<m@example.com>".into(),
        folder: Folder::Inbox,
        provider_folder: String::new(),
        read: false,
        conversation_id: String::new(),
        received: None,
        version: None,
    };
    let f = tokio::time::timeout(DEADLINE, client.apply(&copy, RetractAction::Junk))
        .await
        .expect("no answer within the deadline")
        .unwrap_err();
    // Refused before anything was sent: certainly not landed, so not `uncertain`.
    assert_eq!(f.code, "connection_refused", "{f}");
    assert_eq!(f.message, format!("connection refused: {endpoint}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_slower_than_the_read_timeout_is_a_read_timeout_not_a_hang() {
    let options = LabOptions {
        latency: Duration::from_secs(3),
        ..LabOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, mut config, endpoint) = demo_lab(options, dir.path()).await;
    config.http.read_timeout_secs = 0.3;
    let client = graph_client(&config);
    let served_before = served(&server).await;
    let f = tokio::time::timeout(DEADLINE, client.list_mailboxes())
        .await
        .expect("a read timeout ends the wait")
        .unwrap_err();
    assert_eq!(f.code, "read_timeout", "{f}");
    assert_eq!(
        f.message,
        format!("no answer within the read timeout: {endpoint}")
    );
    assert!(f.is_unreachable());
    // Not retried with backoff: at most the one unanswered call reached the lab (the token
    // request, or the listing after it).
    let asked = served(&server).await - served_before;
    assert!(asked <= 2, "{asked} requests for one timed-out listing");
    server.stop().await;
}

/// Provider requests (not `/_lab/` ones) the lab has received, from its control API.
async fn served(server: &LabServer) -> u64 {
    let body: serde_json::Value = reqwest::get(format!("{}/_lab/stats", server.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["requests"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(route, _)| !route.contains("/_lab"))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum()
}
