//! The lab's Graph message trace (`GET /v1.0/admin/exchange/tracing/messageTraces`) against
//! PROVIDER-APIS.md §F.1: one record per (message, recipient) with the documented properties, a
//! list as `expanded` beside its members' `delivered` records, `$filter` on the documented
//! fields, `$top` ≤ 5000 with `@odata.nextLink` paging, the 90-day / 10-day window rule, the
//! `ExchangeMessageTrace.Read.All` permission, the global cloud only, and 100 requests per
//! 5 minutes per tenant (then 429 with whole-second Retry-After). Records are compared with the
//! lab's own copies.

#![allow(clippy::unwrap_used)]

use clawback::lab::scenario::{Scenario, lab_client_secret};
use clawback::lab::{LabOptions, LabServer};
use serde_json::Value;
use std::collections::BTreeSet;

const PATH: &str = "/v1.0/admin/exchange/tracing/messageTraces";

fn scenario() -> Scenario {
    let now = chrono::Utc::now();
    let recent = (now - chrono::Duration::hours(3)).to_rfc3339();
    let older = (now - chrono::Duration::days(5)).to_rfc3339();
    let ancient = (now - chrono::Duration::days(120)).to_rfc3339();
    toml::from_str(&format!(
        r#"
[[tenant]]
name = "contoso"
kind = "microsoft365"
domains = [{{ name = "contoso.com" }}]
user = [
  {{ address = "admin@contoso.com", admin = true }},
  {{ address = "ann@contoso.com" }},
  {{ address = "ben@contoso.com" }},
  {{ address = "cat@contoso.com" }},
]
group = [{{ address = "team@contoso.com", members = ["ben@contoso.com", "cat@contoso.com"] }}]

[[tenant.message]]
message_id = "<recent@evil.example>"
from = "Attacker@Evil.example"
to = ["ann@contoso.com", "team@contoso.com"]
subject = "Recent"
date = "{recent}"
copy = [{{ mailbox = "ann@contoso.com" }}, {{ mailbox = "ben@contoso.com" }}, {{ mailbox = "cat@contoso.com", folder = "junk" }}]

[[tenant.message]]
message_id = "<older@evil.example>"
from = "attacker@evil.example"
to = ["ann@contoso.com"]
subject = "Older"
date = "{older}"
copy = [{{ mailbox = "ann@contoso.com" }}]

[[tenant.message]]
message_id = "<ancient@evil.example>"
from = "attacker@evil.example"
to = ["ben@contoso.com"]
subject = "Ancient"
date = "{ancient}"
copy = [{{ mailbox = "ben@contoso.com" }}]

[[tenant]]
name = "noperm"
kind = "microsoft365"
domains = [{{ name = "noperm.com" }}]
granted = ["Mail.ReadWrite", "User.Read.All"]
user = [{{ address = "admin@noperm.com", admin = true }}]

[[tenant]]
name = "agency"
kind = "microsoft365"
cloud = "usgov"
domains = [{{ name = "agency.gov" }}]
user = [{{ address = "admin@agency.gov", admin = true }}]
"#
    ))
    .unwrap()
}

async fn token(server: &LabServer, tenant: &str, resource: &str) -> String {
    let id = {
        let state = server.lab.state();
        let t = state.tenant_index(tenant).unwrap();
        state.tenants[t].credentials.client_id.clone()
    };
    let body: Value = reqwest::Client::new()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", server.base_url()))
        .form(&[
            ("client_id", id.as_str()),
            ("client_secret", lab_client_secret(tenant).as_str()),
            ("scope", &format!("{resource}/.default")),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

async fn get(server: &LabServer, token: &str, query: &str) -> (u16, Option<String>, Value) {
    let url = if query.starts_with("http") {
        query.to_string()
    } else {
        format!("{}{PATH}{query}", server.base_url())
    };
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

fn window(days: i64) -> String {
    let start = (chrono::Utc::now() - chrono::Duration::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!("?$filter=receivedDateTime ge {start}")
}

fn pairs(body: &Value) -> BTreeSet<(String, String, String)> {
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["messageId"].as_str().unwrap().to_string(),
                r["recipientAddress"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_filters_paging_window_permission_cloud_and_throttling() {
    let server = LabServer::start(
        &scenario(),
        LabOptions::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let global = "https://graph.microsoft.com";
    let t = token(&server, "contoso", global).await;

    // Default window: the last 48 hours — the recent message only, one record per recipient
    // plus the list as expanded; each record has the documented properties and no others.
    let (s, _, body) = get(&server, &t, "").await;
    assert_eq!(s, 200, "{body}");
    let want: BTreeSet<(String, String, String)> = [
        ("ann@contoso.com", "delivered"),
        ("ben@contoso.com", "delivered"),
        ("cat@contoso.com", "delivered"),
        ("team@contoso.com", "expanded"),
    ]
    .iter()
    .map(|(r, st)| {
        (
            "<recent@evil.example>".to_string(),
            r.to_string(),
            st.to_string(),
        )
    })
    .collect();
    assert_eq!(pairs(&body), want);
    let keys: BTreeSet<&str> = body["value"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let documented: BTreeSet<&str> = [
        "id",
        "messageId",
        "senderAddress",
        "recipientAddress",
        "subject",
        "receivedDateTime",
        "status",
        "size",
        "fromIP",
        "toIP",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, documented);
    assert_eq!(body["value"][0]["senderAddress"], "attacker@evil.example");
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#admin/exchange/tracing/messageTraces")
    );

    // Nine days back: the older message too; every delivered record is a copy the lab holds.
    let (s, _, body) = get(&server, &t, &window(9)).await;
    assert_eq!(s, 200, "{body}");
    let delivered: BTreeSet<(String, String)> = pairs(&body)
        .into_iter()
        .filter(|p| p.2 == "delivered")
        .map(|p| (p.0, p.1))
        .collect();
    let held: BTreeSet<(String, String)> = {
        let state = server.lab.state();
        ["<recent@evil.example>", "<older@evil.example>"]
            .iter()
            .flat_map(|m| {
                state
                    .copies_of(m)
                    .into_iter()
                    .map(|(_, mb, _)| (m.to_string(), mb.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(delivered, held);

    // Filters on the documented fields.
    let (_, _, body) = get(
        &server,
        &t,
        &format!("{}&$filter=messageId eq '<older@evil.example>'", window(9))
            .replace("&$filter=messageId", " and messageId"),
    )
    .await;
    assert_eq!(pairs(&body).len(), 1, "{body}");
    let (_, _, body) = get(
        &server,
        &t,
        &format!("{} and recipientAddress eq 'ann@contoso.com'", window(9)),
    )
    .await;
    assert_eq!(pairs(&body).len(), 2, "{body}");
    let (s, _, body) = get(
        &server,
        &t,
        "?$filter=subject eq 'x' and fromIP eq '1.2.3.4'",
    )
    .await;
    assert_eq!(s, 400, "{body}");

    // Paging: $top=2 and the whole nextLink, to the same set.
    let (_, _, all) = get(&server, &t, &window(9)).await;
    let mut seen = BTreeSet::new();
    let mut next = format!("{}&$top=2", window(9));
    let mut pages = 0;
    loop {
        let (s, _, page) = get(&server, &t, &next).await;
        assert_eq!(s, 200, "{page}");
        assert!(page["value"].as_array().unwrap().len() <= 2);
        seen.extend(pairs(&page));
        pages += 1;
        match page["@odata.nextLink"].as_str() {
            Some(link) => next = link.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, pairs(&all));
    assert_eq!(pages, 3, "5 records in pages of 2");
    let (s, _, _) = get(&server, &t, "?$top=5001").await;
    assert_eq!(s, 400);

    // Window rules: at most 10 days per query, at most 90 days back.
    let (s, _, body) = get(&server, &t, &window(11)).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("BadRequest"))
    );
    let end = (chrono::Utc::now() - chrono::Duration::days(85))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (s, _, _) = get(
        &server,
        &t,
        &format!("{} and receivedDateTime le {end}", window(91)),
    )
    .await;
    assert_eq!(s, 400);

    // Permission and cloud.
    let noperm = token(&server, "noperm", global).await;
    let (s, _, body) = get(&server, &noperm, "").await;
    assert_eq!(s, 403);
    assert_eq!(body["error"]["code"], "Authorization_RequestDenied");
    let gov = token(&server, "agency", "https://graph.microsoft.us").await;
    let (s, _, _) = get(&server, &gov, "").await;
    assert_eq!(s, 400, "not offered in GCC High");

    // 100 requests per 5 minutes per tenant: count what was used, fill the window, then 429.
    let used = {
        let w = server.lab.trace_windows.lock().unwrap();
        let state = server.lab.state();
        w.get(&state.tenant_index("contoso").unwrap())
            .map_or(0, |q| q.len())
    };
    for _ in used..100 {
        let (s, _, _) = get(&server, &t, "?$top=1").await;
        assert_eq!(s, 200);
    }
    let (s, retry, body) = get(&server, &t, "?$top=1").await;
    assert_eq!(s, 429, "{body}");
    let secs: u64 = retry.unwrap().parse().expect("whole seconds");
    assert!((1..=300).contains(&secs), "{secs}");
    // Another tenant's window is its own.
    let (s, _, _) = get(&server, &noperm, "").await;
    assert_eq!(s, 403);
}
