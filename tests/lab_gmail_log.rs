//! The lab's Gmail log (Admin SDK Reports API, `activities.list(userKey=all,
//! applicationName=gmail)`) against PROVIDER-APIS.md §F.2 and the Reports discovery document:
//! one `delivery` activity per (message, recipient) with `event_info.mail_event_type` 2 and
//! `message_info` as nested parameters; `startTime` and `endTime` required and at most 30 days
//! apart; `maxResults` ≤ 1000 with `nextPageToken`; `filters` on the Message-ID; the scope
//! `admin.reports.audit.readonly` impersonating an admin. Deliveries are compared with the lab's
//! own copies; every field returned is one the discovery document defines.

#![allow(clippy::unwrap_used)]

use clawback::lab::keys;
use clawback::lab::scenario::{Scenario, lab_service_account_email};
use clawback::lab::{LabOptions, LabServer};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const REPORTS: &str = "https://www.googleapis.com/auth/admin.reports.audit.readonly";
const PATH: &str = "/admin/reports/v1/activity/users/all/applications/gmail";

fn scenario() -> Scenario {
    let now = chrono::Utc::now();
    let recent = (now - chrono::Duration::hours(2)).to_rfc3339();
    let old = (now - chrono::Duration::days(40)).to_rfc3339();
    toml::from_str(&format!(
        r#"
[[tenant]]
name = "fabrikam"
kind = "google_workspace"
domains = [{{ name = "fabrikam.com" }}]
admin_user = "admin@fabrikam.com"
user = [
  {{ address = "admin@fabrikam.com", admin = true }},
  {{ address = "ann@fabrikam.com" }},
  {{ address = "ben@fabrikam.com" }},
  {{ address = "cat@fabrikam.com" }},
]

[[tenant.message]]
message_id = "<recent@evil.example>"
from = "attacker@evil.example"
to = ["ann@fabrikam.com", "ben@fabrikam.com", "cat@fabrikam.com"]
subject = "Recent"
date = "{recent}"
copy = [{{ mailbox = "ann@fabrikam.com" }}, {{ mailbox = "ben@fabrikam.com" }}, {{ mailbox = "cat@fabrikam.com", folder = "junk" }}]

[[tenant.message]]
message_id = "<old@evil.example>"
from = "attacker@evil.example"
to = ["ann@fabrikam.com"]
subject = "Old"
date = "{old}"
copy = [{{ mailbox = "ann@fabrikam.com" }}]
"#
    ))
    .unwrap()
}

async fn token(server: &LabServer, scopes: &str, sub: &str) -> (u16, Value) {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": lab_service_account_email("fabrikam"),
        "scope": scopes,
        "aud": "https://oauth2.googleapis.com/token",
        "iat": now,
        "exp": now + 3600,
        "sub": sub,
    });
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(keys::GOOGLE_SA_PRIVATE_KEY.as_bytes()).unwrap();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/token", server.base_url()))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", jwt.as_str()),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn get(server: &LabServer, token: &str, query: &[(&str, String)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}{PATH}", server.base_url()))
        .query(query)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn window(days: i64) -> Vec<(&'static str, String)> {
    let now = chrono::Utc::now();
    vec![
        (
            "startTime",
            (now - chrono::Duration::days(days)).to_rfc3339(),
        ),
        ("endTime", now.to_rfc3339()),
    ]
}

fn param<'a>(params: &'a Value, name: &str) -> &'a Value {
    params
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no parameter {name} in {params}"))
}

/// (Message-ID, recipient) of each delivery activity.
fn deliveries(body: &Value) -> BTreeSet<(String, String)> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let ev = &a["events"][0];
            assert_eq!(ev["name"], "delivery");
            let info = &param(&ev["parameters"], "event_info")["messageValue"]["parameter"];
            assert_eq!(param(info, "mail_event_type")["intValue"], "2");
            let msg = &param(&ev["parameters"], "message_info")["messageValue"]["parameter"];
            (
                param(msg, "rfc2822_message_id")["value"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                param(msg, "destination.address")["multiValue"][0]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

/// Every key of `value` is a property of `schema` (recursively through objects and arrays).
fn conforms(value: &Value, schema: &Value, defs: &Value, at: &str) {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(name) => &defs[name],
        None => schema,
    };
    match value {
        Value::Object(map) => {
            let props = &schema["properties"];
            for (k, v) in map {
                let sub = props
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}.{k} is not in the discovery document"));
                conforms(v, sub, defs, &format!("{at}.{k}"));
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                conforms(v, &schema["items"], defs, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_window_paging_filters_scope_and_schema() {
    let server = LabServer::start(
        &scenario(),
        LabOptions::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let (s, body) = token(&server, REPORTS, "admin@fabrikam.com").await;
    assert_eq!(s, 200, "{body}");
    let t = body["access_token"].as_str().unwrap().to_string();

    // The last 30 days: the recent message to its three recipients, as the lab holds them.
    let (s, body) = get(&server, &t, &window(30)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["kind"], "admin#reports#activities");
    let held: BTreeSet<(String, String)> = server
        .lab
        .state()
        .copies_of("<recent@evil.example>")
        .into_iter()
        .map(|(_, m, _)| ("<recent@evil.example>".to_string(), m.to_string()))
        .collect();
    assert_eq!(deliveries(&body), held);
    // Every field is one the Reports discovery document defines.
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string("../shared/reference/admin.reports_v1.discovery.json").unwrap(),
    )
    .unwrap();
    conforms(
        &body,
        &doc["schemas"]["Activities"],
        &doc["schemas"],
        "Activities",
    );

    // Filters on the Message-ID; nothing matches an unknown one.
    let mut q = window(30);
    q.push((
        "filters",
        "message_info.rfc2822_message_id==<recent@evil.example>".into(),
    ));
    assert_eq!(deliveries(&get(&server, &t, &q).await.1).len(), 3);
    let mut q = window(30);
    q.push((
        "filters",
        "message_info.rfc2822_message_id==<none@x>".into(),
    ));
    assert_eq!(deliveries(&get(&server, &t, &q).await.1).len(), 0);

    // Paging by nextPageToken, maxResults ≤ 1000.
    let mut seen = BTreeSet::new();
    let mut token_param: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = window(30);
        q.push(("maxResults", "2".into()));
        if let Some(p) = &token_param {
            q.push(("pageToken", p.clone()));
        }
        let (s, page) = get(&server, &t, &q).await;
        assert_eq!(s, 200, "{page}");
        seen.extend(deliveries(&page));
        pages += 1;
        match page["nextPageToken"].as_str() {
            Some(p) => token_param = Some(p.to_string()),
            None => break,
        }
    }
    assert_eq!((seen, pages), (held, 2));
    let mut q = window(30);
    q.push(("maxResults", "1001".into()));
    assert_eq!(get(&server, &t, &q).await.0, 400);

    // startTime and endTime are required for gmail and at most 30 days apart.
    assert_eq!(get(&server, &t, &[]).await.0, 400);
    assert_eq!(get(&server, &t, &window(31)).await.0, 400);

    // The scope, and an admin to impersonate.
    let (_, body) = token(&server, "https://mail.google.com/", "admin@fabrikam.com").await;
    let mail_only = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(get(&server, &mail_only, &window(30)).await.0, 403);
    // Delegation gives a token for any user; the Reports API then refuses a non-admin.
    let (s, body) = token(&server, REPORTS, "ann@fabrikam.com").await;
    assert_eq!(s, 200, "{body}");
    let not_admin = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(get(&server, &not_admin, &window(30)).await.0, 403);
}
