//! A Microsoft tenant in a national cloud (issue 13, point 6): with `cloud = "usgov"` every
//! token asks for `https://graph.microsoft.us/.default` (the lab refuses any other resource,
//! as Entra ID in that cloud does), the admin-consent URL is on `login.microsoftonline.us`,
//! and Hard Delete — Graph's permanentDelete exists in the global service only — is refused
//! before anything is located. Junk works as anywhere (checked in the lab).

#![allow(clippy::unwrap_used)]

mod lab_support;
use lab_support::{manual_request, run_plan, synced_lab};

use clawback::config::Cloud;
use clawback::engine::Engine;
use clawback::engine::plan::RetractRequest;
use clawback::lab::LabOptions;
use clawback::lab::scenario::Scenario;
use clawback::model::{FailureReason, Folder, RetractAction};
use clawback::provider::ProviderClient;
use clawback::provider::graph::GraphClient;

const MID: &str = "<gov-1@evil.example>";

fn scenario() -> Scenario {
    let date = (chrono::Utc::now() - chrono::Duration::hours(5)).to_rfc3339();
    toml::from_str(&format!(
        r#"
[[tenant]]
name = "agency"
kind = "microsoft365"
cloud = "usgov"
domains = [{{ name = "agency.gov" }}]
user = [
  {{ address = "admin@agency.gov", admin = true }},
  {{ address = "ann@agency.gov" }},
  {{ address = "ben@agency.gov" }},
]

[[tenant.message]]
message_id = "{MID}"
from = "attacker@evil.example"
to = ["ann@agency.gov", "ben@agency.gov"]
subject = "Benefits update"
date = "{date}"
copy = [{{ mailbox = "ann@agency.gov" }}, {{ mailbox = "ben@agency.gov" }}]
"#
    ))
    .unwrap()
}

fn request(action: RetractAction) -> RetractRequest {
    manual_request(&[MID], action, "national cloud")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usgov_tenant_asks_for_its_own_resource_and_has_no_hard_delete() {
    let lab = synced_lab(&scenario(), LabOptions::default(), &[], 30).await;
    assert_eq!(
        lab.config.tenants[0].cloud,
        Cloud::Usgov,
        "written by the lab"
    );
    assert_eq!(
        lab.store
            .count(&clawback::trace::query::parse("").unwrap())
            .unwrap(),
        1,
        "the trace synced through usgov tokens"
    );

    // The consent URL names the cloud's sign-in host.
    let graph = GraphClient::new(&lab.config, &lab.config.tenants[0]).unwrap();
    assert!(
        graph
            .admin_consent_url()
            .starts_with("https://login.microsoftonline.us/"),
        "{}",
        graph.admin_consent_url()
    );

    // The same app configured as a global-cloud tenant asks for the wrong resource: the lab's
    // token endpoint refuses it, so the resource really went over the wire.
    let mut global = lab.config.clone();
    global.tenants[0].cloud = Cloud::Global;
    let wrong = ProviderClient::new(&global, &global.tenants[0]).unwrap();
    let f = wrong.locate("ann@agency.gov", MID).await.unwrap_err();
    assert_eq!(f.reason, FailureReason::NotAuthorized, "{f:?}");
    assert_eq!(f.code, "invalid_scope", "{f:?}");

    let server = lab.server;
    let engine = Engine::new(lab.config, lab.store).unwrap();
    let refused = engine
        .build_plan(request(RetractAction::HardDelete))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("Hard Delete is not offered in agency (cloud usgov)"),
        "{refused}"
    );

    let plan = engine
        .build_plan(request(RetractAction::Junk))
        .await
        .unwrap();
    assert_eq!(plan.items.len(), 2);
    let report = run_plan(&engine, &plan).await;
    assert_eq!(report.counts.succeeded, 2, "{report:?}");
    let state = server.lab.state();
    let copies = state.copies_of(MID);
    assert_eq!(copies.len(), 2);
    for (_, m, c) in copies {
        assert_eq!(c.folder, Folder::Junk, "{m}");
    }
    assert!(
        state.actions.iter().all(|a| a.action != "permanentDelete"),
        "nothing was hard deleted"
    );
}
