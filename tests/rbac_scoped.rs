//! A Microsoft tenant whose app is scoped by Exchange RBAC for Applications (issue 13, point 1):
//! the Entra consent holds only the directory permissions, and an Exchange role assignment
//! "Application Mail.ReadWrite" covers some mailboxes. `doctor` (the real binary) shows mail
//! access as granted and scoped — not "Missing" — and never offers the consent URL that would
//! undo the scoping; a plan marks the out-of-scope mailbox `not_authorized` with Exchange's
//! code, and the job moves exactly the in-scope copies (checked in the lab).

#![allow(clippy::unwrap_used)]

mod lab_support;
use lab_support::{clawback_with_config, manual_request, run_plan, synced_lab};

use clawback::engine::Engine;
use clawback::lab::LabOptions;
use clawback::lab::scenario::Scenario;
use clawback::model::{FailureReason, Folder, RetractAction};

const MID: &str = "<rbac-1@evil.example>";

fn scenario() -> Scenario {
    let date = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
    toml::from_str(&format!(
        r#"
[[tenant]]
name = "contoso"
kind = "microsoft365"
domains = [{{ name = "contoso.com" }}]
granted = ["User.Read.All", "Domain.Read.All", "GroupMember.Read.All"]
rbac_mail_scope = ["admin@contoso.com", "ann@contoso.com", "ben@contoso.com"]
user = [
  {{ address = "admin@contoso.com", admin = true }},
  {{ address = "ann@contoso.com" }},
  {{ address = "ben@contoso.com" }},
  {{ address = "cat@contoso.com" }},
]

[[tenant.message]]
message_id = "{MID}"
from = "attacker@evil.example"
to = ["ann@contoso.com", "ben@contoso.com", "cat@contoso.com"]
subject = "Shared document"
date = "{date}"
copy = [
  {{ mailbox = "ann@contoso.com" }},
  {{ mailbox = "ben@contoso.com" }},
  {{ mailbox = "cat@contoso.com" }},
]
"#
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_the_scoped_grant_and_the_plan_the_out_of_scope_mailbox() {
    let lab = synced_lab(&scenario(), LabOptions::default(), &[], 30).await;
    let out = clawback_with_config(&lab.dir.path().join("lab.toml"), &["doctor"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("Mail.ReadWrite (Exchange RBAC for Applications, scoped"),
        "{text}"
    );
    assert!(!text.contains("Missing:"), "{text}");
    assert!(!text.contains("adminconsent"), "{text}");
    assert!(
        text.contains("Test-ServicePrincipalAuthorization"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(0), "{text}");

    let server = lab.server;
    let engine = Engine::new(lab.config, lab.store).unwrap();
    let plan = engine
        .build_plan(manual_request(&[MID], RetractAction::Junk, "rbac"))
        .await
        .unwrap();
    let mut mailboxes: Vec<&str> = plan.items.iter().map(|i| i.mailbox.as_str()).collect();
    mailboxes.sort();
    assert_eq!(mailboxes, ["ann@contoso.com", "ben@contoso.com"]);
    let cat = plan
        .skipped
        .iter()
        .find(|s| s.address == "cat@contoso.com")
        .unwrap_or_else(|| panic!("cat is accounted for: {:?}", plan.skipped));
    assert_eq!(cat.reason, FailureReason::NotAuthorized);
    assert!(cat.detail.contains("ErrorAccessDenied"), "{}", cat.detail);

    let report = run_plan(&engine, &plan).await;
    assert_eq!(report.counts.succeeded, 2, "{report:?}");
    let state = server.lab.state();
    for (_, m, c) in state.copies_of(MID) {
        let want = if m == "cat@contoso.com" {
            Folder::Inbox
        } else {
            Folder::Junk
        };
        assert_eq!(c.folder, want, "{m}");
    }
}
