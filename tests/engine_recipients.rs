//! Recipients a real tenant would make the planner miss (issue 13, point 7), in the lab: a
//! user whose mail address is not the sign-in name (Graph's `/users/{key}` knows ids and
//! userPrincipalNames only), a message addressed to an alias (Graph `proxyAddresses`, a Google
//! alias: mail is read under the primary address), a list whose membership is hidden (needs
//! `Member.Read.Hidden`) and an Exchange dynamic distribution group (unknown to Graph). Every
//! copy is retracted exactly once, checked in the lab; every address the message names has
//! its line in the plan with the reason.

#![allow(clippy::unwrap_used)]

mod lab_support;
use lab_support::{manual_request, run_plan, synced_lab};

use clawback::engine::Engine;
use clawback::lab::LabOptions;
use clawback::lab::scenario::Scenario;
use clawback::model::{FailureReason, Folder, RetractAction};
use std::collections::BTreeMap;

const MID: &str = "<aliases-1@evil.example>";

fn scenario() -> Scenario {
    let date = (chrono::Utc::now() - chrono::Duration::hours(20)).to_rfc3339();
    let text = format!(
        r#"
name = "aliases"

[[tenant]]
name = "contoso"
kind = "microsoft365"
domains = [{{ name = "contoso.com" }}]
user = [
  {{ address = "admin@contoso.com", admin = true }},
  {{ address = "alice@contoso.com" }},
  {{ address = "jon.doe@contoso.com", upn = "jdoe@contoso.com" }},
  {{ address = "sam@contoso.com", aliases = ["samantha@contoso.com"] }},
  {{ address = "carl@contoso.com" }},
  {{ address = "dina@contoso.com" }},
  {{ address = "erin@contoso.com" }},
  {{ address = "fred@contoso.com" }},
]
group = [
  {{ address = "secret-team@contoso.com", members = ["carl@contoso.com", "dina@contoso.com"], hidden_membership = true }},
  {{ address = "all-sales@contoso.com", members = ["erin@contoso.com", "fred@contoso.com"], dynamic = true }},
]

[[tenant.message]]
message_id = "{MID}"
from = "attacker@evil.example"
to = ["alice@contoso.com", "jon.doe@contoso.com", "samantha@contoso.com", "secret-team@contoso.com", "all-sales@contoso.com"]
subject = "Invoice overdue"
date = "{date}"
copy = [
  {{ mailbox = "alice@contoso.com" }},
  {{ mailbox = "jon.doe@contoso.com" }},
  {{ mailbox = "sam@contoso.com" }},
  {{ mailbox = "carl@contoso.com" }},
  {{ mailbox = "dina@contoso.com" }},
  {{ mailbox = "erin@contoso.com" }},
  {{ mailbox = "fred@contoso.com" }},
]

[[tenant]]
name = "fabrikam"
kind = "google_workspace"
domains = [{{ name = "fabrikam.com" }}]
admin_user = "admin@fabrikam.com"
user = [
  {{ address = "admin@fabrikam.com", admin = true }},
  {{ address = "sam@fabrikam.com", aliases = ["samantha@fabrikam.com"] }},
]

[[tenant.message]]
message_id = "{MID}"
from = "attacker@evil.example"
to = ["samantha@fabrikam.com"]
subject = "Invoice overdue"
date = "{date}"
copy = [{{ mailbox = "sam@fabrikam.com" }}]
"#
    );
    toml::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_sign_in_names_hidden_and_dynamic_lists_are_each_accounted_for() {
    let lab = synced_lab(&scenario(), LabOptions::default(), &[], 30).await;
    // The trace sync reads each mailbox by its sign-in name: jon.doe's copy is indexed too.
    let contoso = lab
        .store
        .trace_by_message_id(MID)
        .unwrap()
        .into_iter()
        .find(|r| r.tenant == "contoso")
        .unwrap();
    assert!(
        contoso.delivered_to().contains(&"jdoe@contoso.com"),
        "{:?}",
        contoso.delivered_to()
    );
    let server = lab.server;
    let engine = Engine::new(lab.config, lab.store).unwrap();
    let plan = engine
        .build_plan(manual_request(&[MID], RetractAction::Junk, "aliases"))
        .await
        .unwrap();
    let mut items: Vec<(String, String)> = plan
        .items
        .iter()
        .map(|i| (i.tenant.clone(), i.mailbox.clone()))
        .collect();
    items.sort();
    let want: Vec<(String, String)> = [
        ("contoso", "alice@contoso.com"),
        ("contoso", "carl@contoso.com"),
        ("contoso", "dina@contoso.com"),
        ("contoso", "erin@contoso.com"),
        ("contoso", "fred@contoso.com"),
        // Addressed by its sign-in name: `/users/jon.doe@…` is not found.
        ("contoso", "jdoe@contoso.com"),
        ("contoso", "sam@contoso.com"),
        ("fabrikam", "sam@fabrikam.com"),
    ]
    .iter()
    .map(|(t, m)| (t.to_string(), m.to_string()))
    .collect();
    assert_eq!(
        items, want,
        "each mailbox once, under the name its mail is read by"
    );

    let lines: BTreeMap<String, (FailureReason, String)> = plan
        .skipped
        .iter()
        .map(|s| (s.address.clone(), (s.reason, s.detail.clone())))
        .collect();
    let line = |a: &str| {
        lines
            .get(a)
            .unwrap_or_else(|| panic!("{a}: no line in {lines:?}"))
    };
    assert_eq!(line("jon.doe@contoso.com").0, FailureReason::NotAMailbox);
    assert!(line("jon.doe@contoso.com").1.contains("jdoe@contoso.com"));
    assert!(line("samantha@contoso.com").1.contains("sam@contoso.com"));
    assert!(line("samantha@fabrikam.com").1.contains("sam@fabrikam.com"));
    let hidden = line("secret-team@contoso.com");
    assert_eq!(hidden.0, FailureReason::NotAuthorized, "{hidden:?}");
    assert!(hidden.1.contains("Member.Read.Hidden"), "{hidden:?}");
    let dynamic = line("all-sales@contoso.com");
    assert_eq!(dynamic.0, FailureReason::NotAMailbox, "{dynamic:?}");
    assert!(
        dynamic.1.contains("dynamic distribution group"),
        "{dynamic:?}"
    );
    assert_eq!(lines.len(), 5, "{lines:?}");

    let report = run_plan(&engine, &plan).await;
    assert_eq!(
        (report.counts.succeeded, report.counts.failed),
        (8, 0),
        "{report:?}"
    );
    // The lab's word: each of the 8 copies moved once, to Junk.
    let state = server.lab.state();
    let mut acted: Vec<(String, String)> = state
        .actions
        .iter()
        .filter(|a| a.internet_message_id == MID)
        .map(|a| (a.tenant.clone(), a.mailbox.clone()))
        .collect();
    acted.sort();
    let mut copies: Vec<(String, String)> = Vec::new();
    for (t, m, c) in state.copies_of(MID) {
        assert_eq!(c.folder, Folder::Junk, "{m}");
        copies.push((t.to_string(), m.to_string()));
    }
    copies.sort();
    assert_eq!(acted, copies);
    assert_eq!(acted.len(), 8);
}
