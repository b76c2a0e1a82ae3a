//! The lab's Microsoft identity + Graph face over real HTTP on 127.0.0.1:0. Side effects are
//! checked in the lab's own state, never through a client's report.

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

use base64::Engine;
use clawback::lab::graph::fixture::{self, PHISH_ID};
use clawback::lab::keys;
use clawback::lab::oauth_ms::{DEVICE_CODE_GRANT, GRAPH_DEFAULT_SCOPE, JWT_BEARER_ASSERTION};
use clawback::lab::scenario::lab_client_secret;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::Folder;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

async fn start(options: LabOptions) -> LabServer {
    LabServer::start(
        &fixture::scenario(),
        options,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("lab starts")
}

fn client_id(server: &LabServer, tenant: &str) -> String {
    let state = server.lab.state();
    let t = state.tenant_index(tenant).unwrap();
    state.tenants[t].credentials.client_id.clone()
}

async fn token_for(server: &LabServer, tenant: &str) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", server.base_url()))
        .form(&[
            ("client_id", client_id(server, tenant).as_str()),
            ("client_secret", lab_client_secret(tenant).as_str()),
            ("scope", GRAPH_DEFAULT_SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["ext_expires_in"].as_i64().unwrap() > 0);
    body["access_token"].as_str().unwrap().to_string()
}

struct Graph {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Graph {
    async fn new(server: &LabServer) -> Graph {
        Graph {
            base: format!("{}/v1.0", server.base_url()),
            token: token_for(server, "contoso").await,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// GET with query parameters that reqwest percent-encodes.
    async fn query(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .query(params)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn find(&self, user: &str, message_id: &str) -> Vec<Value> {
        let filter = format!("internetMessageId eq '{}'", message_id.replace('\'', "''"));
        let (s, body) = self
            .query(
                &format!("/users/{user}/messages"),
                &[
                    ("$filter", &filter),
                    ("$select", "id,parentFolderId,internetMessageId"),
                ],
            )
            .await;
        assert_eq!(s, 200, "{body}");
        body["value"].as_array().unwrap().clone()
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn folder_of(server: &LabServer, mailbox: &str, message_id: &str) -> Vec<Folder> {
    server
        .lab
        .state()
        .copies_of(message_id)
        .into_iter()
        .filter(|(_, m, _)| *m == mailbox)
        .map(|(_, _, c)| c.folder.clone())
        .collect()
}

#[tokio::test]
async fn locates_by_internet_message_id_encoded_and_raw() {
    let server = start(LabOptions::default()).await;
    let g = Graph::new(&server).await;
    // reqwest percent-encodes the brackets, quotes and spaces.
    let hits = g.find("alice@contoso.com", PHISH_ID).await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["internetMessageId"], PHISH_ID);
    assert!(
        hits[0].get("subject").is_none(),
        "$select limits properties"
    );

    // Raw brackets in the literal (above, the URL encoding is undone once) and a double-encoded
    // literal (`%3C…%3E` inside the quotes), which Graph's docs say some callers must send.
    let double = format!(
        "internetMessageId eq '{}'",
        PHISH_ID.replace('<', "%3C").replace('>', "%3E")
    );
    let (s, body) = g
        .query(
            "/users/bob@contoso.com/messages",
            &[("$filter", &double), ("$select", "internetMessageHeaders")],
        )
        .await;
    assert_eq!(s, 200);
    let headers = body["value"][0]["internetMessageHeaders"]
        .as_array()
        .unwrap();
    assert!(
        headers
            .iter()
            .any(|h| h["name"] == "X-Clawback-Disposition" && h["value"] == "malicious")
    );

    // Default properties exclude the headers; conversationId finds the reply too.
    let (s, msg) = g
        .get(&format!(
            "/users/alice@contoso.com/messages/{}",
            hits[0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, 200);
    assert!(msg.get("internetMessageHeaders").is_none());
    let conv = msg["conversationId"].as_str().unwrap().to_string();
    let conversation =
        format!("conversationId eq '{conv}' and receivedDateTime ge 2024-05-10T09:00:00Z");
    let (_, body) = g
        .query(
            "/users/alice@contoso.com/messages",
            &[("$filter", &conversation)],
        )
        .await;
    assert_eq!(body["value"].as_array().unwrap().len(), 2, "{body}");

    // Paging: 12 old + the phish in bob's mailbox, 5 per page.
    let mut next = Some(format!("{}/users/bob@contoso.com/messages?$top=5", g.base));
    let mut seen = Vec::new();
    while let Some(url) = next {
        let (s, page) = g.get(&url).await;
        assert_eq!(s, 200, "{page}");
        assert!(
            page["@odata.context"]
                .as_str()
                .unwrap()
                .contains("$metadata#users")
        );
        seen.extend(
            page["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string()),
        );
        next = page["@odata.nextLink"].as_str().map(str::to_string);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 13);

    for bad in [
        "subject eq",
        "internetMessageId eq '<x@y>' or isRead eq true",
        "receivedDateTime ge yesterday",
    ] {
        let (s, body) = g
            .query("/users/bob@contoso.com/messages", &[("$filter", bad)])
            .await;
        assert_eq!(s, 400, "{bad}");
        assert_eq!(error_code(&body), "BadRequest");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid filter clause")
        );
    }
    let (s, _) = g.get("/users/bob@contoso.com/messages?$top=1001").await;
    assert_eq!(s, 400);
    server.stop().await;
}

#[tokio::test]
async fn move_gives_a_new_id_and_the_old_one_404s() {
    let server = start(LabOptions::default()).await;
    let g = Graph::new(&server).await;
    let old = g.find("alice@contoso.com", PHISH_ID).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, moved) = g
        .send(
            reqwest::Method::POST,
            &format!("/users/alice@contoso.com/messages/{old}/move"),
            Some(json!({ "destinationId": "junkemail" })),
        )
        .await;
    assert_eq!(s, 201, "{moved}");
    let new = moved["id"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(
        folder_of(&server, "alice@contoso.com", PHISH_ID),
        vec![Folder::Junk]
    );
    let (s, body) = g
        .get(&format!("/users/alice@contoso.com/messages/{old}"))
        .await;
    assert_eq!(s, 404);
    assert_eq!(error_code(&body), "ErrorItemNotFound");
    assert_eq!(
        body["error"]["message"],
        "The specified object was not found in the store., The process failed to get the correct properties."
    );
    // The new id works, also through its folder, and parentFolderId resolves to Junk Email.
    let folder = moved["parentFolderId"].as_str().unwrap();
    let (s, f) = g
        .get(&format!("/users/alice@contoso.com/mailFolders/{folder}"))
        .await;
    assert_eq!(s, 200);
    assert_eq!(f["displayName"], "Junk Email");
    let (s, _) = g
        .get(&format!(
            "/users/alice@contoso.com/mailFolders/junkemail/messages/{new}"
        ))
        .await;
    assert_eq!(s, 200);
    let (s, _) = g
        .get(&format!(
            "/users/alice@contoso.com/mailFolders/inbox/messages/{new}"
        ))
        .await;
    assert_eq!(s, 404);
    // The generated spelling and body casing work too.
    let (s, again) = g
        .send(
            reqwest::Method::POST,
            &format!("/users/alice@contoso.com/messages/{new}/microsoft.graph.move"),
            Some(json!({ "DestinationId": "inbox" })),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        folder_of(&server, "alice@contoso.com", PHISH_ID),
        vec![Folder::Inbox]
    );
    assert_ne!(again["id"], moved["id"]);
    let actions: Vec<String> = server
        .lab
        .state()
        .actions
        .iter()
        .map(|a| a.action.clone())
        .collect();
    assert_eq!(actions, vec!["move:junkemail", "move:inbox"]);
    server.stop().await;
}

#[tokio::test]
async fn delete_soft_deletes_and_permanent_delete_purges_also_on_hold() {
    let server = start(LabOptions::default()).await;
    let g = Graph::new(&server).await;
    let id = g.find("bob@contoso.com", PHISH_ID).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = g
        .send(
            reqwest::Method::DELETE,
            &format!("/users/bob@contoso.com/messages/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(
        folder_of(&server, "bob@contoso.com", PHISH_ID),
        vec![Folder::RecoverableDeletions]
    );
    assert!(
        g.find("bob@contoso.com", PHISH_ID).await.is_empty(),
        "/messages excludes recoverable items"
    );
    let (s, list) = g
        .get("/users/bob@contoso.com/mailFolders/recoverableitemsdeletions/messages")
        .await;
    assert_eq!(s, 200);
    assert_eq!(list["value"].as_array().unwrap().len(), 1);

    let id = g.find("dave@contoso.com", PHISH_ID).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = g
        .send(
            reqwest::Method::POST,
            &format!("/users/dave@contoso.com/mailFolders/inbox/messages/{id}/permanentDelete"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(
        folder_of(&server, "dave@contoso.com", PHISH_ID),
        vec![Folder::Purged]
    );
    let (s, _) = g
        .get(&format!("/users/dave@contoso.com/messages/{id}"))
        .await;
    assert_eq!(s, 404);

    let id = g.find("carol@contoso.com", PHISH_ID).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, body) = g
        .send(
            reqwest::Method::POST,
            &format!("/users/carol@contoso.com/messages/{id}/permanentDelete"),
            None,
        )
        .await;
    // A hold does not refuse: 204, gone for the user, kept in Purges for admins
    // (PROVIDER-APIS.md §F.3).
    assert_eq!(s, 204, "{body}");
    assert_eq!(
        folder_of(&server, "carol@contoso.com", PHISH_ID),
        vec![Folder::Purged]
    );
    let (s, _) = g
        .get(&format!("/users/carol@contoso.com/messages/{id}"))
        .await;
    assert_eq!(s, 404);
    let actions: Vec<String> = server
        .lab
        .state()
        .actions
        .iter()
        .map(|a| a.action.clone())
        .collect();
    assert_eq!(
        actions,
        vec!["delete", "permanentDelete", "permanentDelete"]
    );

    // Attachments and MIME.
    let news = g.find("alice@contoso.com", "<news-7@lists.example>").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, att) = g
        .get(&format!(
            "/users/alice@contoso.com/messages/{news}/attachments"
        ))
        .await;
    assert_eq!(s, 200);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(att["value"][0]["contentBytes"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, b"quarterly numbers");
    let mime = g
        .http
        .get(format!(
            "{}/users/alice@contoso.com/messages/{news}/$value",
            g.base
        ))
        .bearer_auth(&g.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        mime.contains("Message-ID: <news-7@lists.example>"),
        "{mime}"
    );
    server.stop().await;
}

#[tokio::test]
async fn batch_of_twenty_keeps_per_item_status_and_refuses_malformed() {
    let server = start(LabOptions::default()).await;
    let g = Graph::new(&server).await;
    let alice = g.find("alice@contoso.com", PHISH_ID).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let eve = g.find("eve@contoso.com", PHISH_ID).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut requests = vec![
        json!({"id": "move", "method": "POST", "url": format!("/users/alice@contoso.com/messages/{alice}/move"),
               "headers": {"Content-Type": "application/json"}, "body": {"destinationId": "junkemail"}}),
        json!({"id": "gone", "method": "GET", "url": "/users/alice@contoso.com/messages/AAMkNOPE"}),
        json!({"id": "after-gone", "method": "DELETE", "url": format!("/users/eve@contoso.com/messages/{eve}"), "dependsOn": ["gone"]}),
        json!({"id": "nobody", "method": "GET", "url": "/users/nobody@contoso.com/messages"}),
        json!({"id": "ungranted", "method": "GET", "url": "/users/pat@subsidiary.example/messages"}),
        json!({"id": "dl", "method": "GET", "url": "/users/all-staff@contoso.com/messages"}),
    ];
    for n in 0..14 {
        requests.push(json!({"id": format!("u{n}"), "method": "GET", "url": "/users?$filter=mail eq 'bob@contoso.com'"}));
    }
    assert_eq!(requests.len(), 20);
    let (s, body) = g
        .send(
            reqwest::Method::POST,
            "/$batch",
            Some(json!({ "requests": requests })),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let responses = body["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 20);
    let order: Vec<&str> = responses
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let request_order: Vec<&str> = requests.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_ne!(order, request_order, "responses are not in request order");
    let by_id = |id: &str| responses.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(by_id("move")["status"], 201);
    assert_ne!(by_id("move")["body"]["id"], alice.as_str());
    assert_eq!(by_id("gone")["status"], 404);
    assert_eq!(by_id("after-gone")["status"], 424);
    assert_eq!(by_id("nobody")["status"], 404);
    assert_eq!(error_code(&by_id("nobody")["body"]), "ErrorInvalidUser");
    assert_eq!(by_id("ungranted")["status"], 403);
    assert_eq!(
        error_code(&by_id("dl")["body"]),
        "MailboxNotEnabledForRESTAPI"
    );
    assert_eq!(by_id("u3")["status"], 200);
    assert_eq!(by_id("u3")["body"]["value"][0]["mail"], "bob@contoso.com");
    assert_eq!(
        folder_of(&server, "alice@contoso.com", PHISH_ID),
        vec![Folder::Junk]
    );
    assert_eq!(
        folder_of(&server, "eve@contoso.com", PHISH_ID),
        vec![Folder::Inbox],
        "424 never ran"
    );

    let get = |id: &str| json!({"id": id, "method": "GET", "url": "/domains"});
    let too_many: Vec<Value> = (0..21).map(|n| get(&n.to_string())).collect();
    let malformed = [
        json!({ "requests": too_many }),
        json!({ "requests": [get("a"), get("A")] }),
        json!({ "requests": [{"id": "1", "url": "/domains"}] }),
        json!({ "requests": [{"id": "1", "method": "POST", "url": "/x", "body": {"a": 1}}] }),
        json!({ "requests": [{"id": "1", "method": "GET", "url": "/domains", "dependsOn": ["2"]},
                             {"id": "2", "method": "GET", "url": "/domains", "dependsOn": ["1"]}] }),
    ];
    for m in malformed {
        let (s, body) = g
            .send(reqwest::Method::POST, "/$batch", Some(m.clone()))
            .await;
        assert_eq!(s, 400, "{m}");
        assert_eq!(error_code(&body), "BadRequest");
    }
    let resp = g
        .http
        .post(format!("{}/$batch", g.base))
        .bearer_auth(&g.token)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    server.stop().await;
}

#[tokio::test]
async fn fifth_concurrent_request_on_a_mailbox_is_throttled() {
    let server = start(LabOptions {
        latency: Duration::from_millis(400),
        ..Default::default()
    })
    .await;
    let g = Graph::new(&server).await;
    let url = format!("{}/users/alice@contoso.com/messages?$top=1", g.base);
    let calls = (0..5).map(|_| {
        let req = g.http.get(&url).bearer_auth(&g.token);
        async move { req.send().await.unwrap() }
    });
    let responses = futures_util::future::join_all(calls).await;
    let throttled: Vec<_> = responses.iter().filter(|r| r.status() == 429).collect();
    assert_eq!(
        throttled.len(),
        1,
        "{:?}",
        responses.iter().map(|r| r.status()).collect::<Vec<_>>()
    );
    let retry: f64 = throttled[0].headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0.0);
    let r = responses.into_iter().find(|r| r.status() == 429).unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "ApplicationThrottled");
    assert_eq!(
        body["error"]["message"],
        "Application is over its MailboxConcurrency limit."
    );
    assert_eq!(
        server
            .lab
            .stats
            .throttled
            .lock()
            .unwrap()
            .get("graph_mailbox_concurrency"),
        Some(&1)
    );
    server.stop().await;
}

#[tokio::test]
async fn capacity_exceeded_is_throttled() {
    let server = start(LabOptions {
        latency: Duration::from_millis(400),
        capacity: 2,
        ..Default::default()
    })
    .await;
    let g = Graph::new(&server).await;
    let calls = ["alice", "bob", "dave"].map(|u| {
        let req = g
            .http
            .get(format!("{}/users/{u}@contoso.com/messages", g.base))
            .bearer_auth(&g.token);
        async move { req.send().await.unwrap() }
    });
    let responses = futures_util::future::join_all(calls).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );
    let r = responses.into_iter().find(|r| r.status() == 429).unwrap();
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "TooManyRequests");
    server.stop().await;
}

#[tokio::test]
async fn expired_and_missing_tokens_are_refused() {
    let server = start(LabOptions {
        token_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let g = Graph::new(&server).await;
    let (s, _) = g.get("/users/alice@contoso.com/messages").await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, body) = g.get("/users/alice@contoso.com/messages").await;
    assert_eq!(s, 401);
    assert_eq!(error_code(&body), "InvalidAuthenticationToken");
    assert_eq!(
        body["error"]["message"],
        "Lifetime validation failed, the token is expired."
    );
    let resp = reqwest::get(format!("{}/domains", g.base)).await.unwrap();
    assert_eq!(resp.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn mailbox_resolution_and_permissions() {
    let server = start(LabOptions::default()).await;
    let g = Graph::new(&server).await;
    let (s, body) = g.get("/users/pat@subsidiary.example/messages").await;
    assert_eq!(s, 403);
    assert_eq!(error_code(&body), "ErrorAccessDenied");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[RAOP]")
    );
    for (user, code) in [
        ("nomail@contoso.com", "MailboxNotEnabledForRESTAPI"),
        ("team@contoso.com", "MailboxNotEnabledForRESTAPI"),
        ("ghost@contoso.com", "ErrorInvalidUser"),
    ] {
        let (s, body) = g.get(&format!("/users/{user}/messages")).await;
        assert_eq!((s, error_code(&body)), (404, code), "{user}");
    }
    let (s, body) = g.get("/users/ghost@contoso.com").await;
    assert_eq!((s, error_code(&body)), (404, "Request_ResourceNotFound"));
    // Resolve by id as well as UPN.
    let (_, users) = g
        .get("/users?$filter=userPrincipalName eq 'alice@contoso.com'&$select=id,mail")
        .await;
    let id = users["value"][0]["id"].as_str().unwrap().to_string();
    assert!(users["value"][0].get("displayName").is_none());
    let (s, one) = g.get(&format!("/users/{id}")).await;
    assert_eq!((s, one["mail"].as_str()), (200, Some("alice@contoso.com")));
    assert_eq!(g.find(&id, PHISH_ID).await.len(), 1);

    // Groups: flattened members with types, the external one as an orgContact.
    let (_, groups) = g
        .get("/groups?$filter=mail eq 'all-staff@contoso.com'")
        .await;
    let gid = groups["value"][0]["id"].as_str().unwrap().to_string();
    let (s, members) = g
        .get(&format!("/groups/{gid}/transitiveMembers?$top=3"))
        .await;
    assert_eq!(s, 200);
    let mut all: Vec<Value> = members["value"].as_array().unwrap().clone();
    let (_, rest) = g.get(members["@odata.nextLink"].as_str().unwrap()).await;
    all.extend(rest["value"].as_array().unwrap().iter().cloned());
    let typed = |addr: &str| {
        all.iter()
            .find(|m| m["mail"] == addr)
            .map(|m| m["@odata.type"].as_str().unwrap().to_string())
    };
    assert_eq!(all.len(), 6);
    assert_eq!(
        typed("carol@contoso.com").as_deref(),
        Some("#microsoft.graph.user")
    );
    assert_eq!(
        typed("team@contoso.com").as_deref(),
        Some("#microsoft.graph.group")
    );
    assert_eq!(
        typed("partner@external.example").as_deref(),
        Some("#microsoft.graph.orgContact")
    );
    let (_, domains) = g.get("/domains").await;
    let names: Vec<&str> = domains["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["contoso.com", "subsidiary.example"]);

    // An app granted Mail.ReadWrite only: directory refused.
    let mail_only = Graph {
        token: token_for(&server, "mailonly").await,
        ..Graph::new(&server).await
    };
    for path in ["/users", "/groups", "/domains"] {
        let (s, body) = mail_only.get(path).await;
        assert_eq!(
            (s, error_code(&body)),
            (403, "Authorization_RequestDenied"),
            "{path}"
        );
    }
    let (s, _) = mail_only.get("/users/zoe@mailonly.example/messages").await;
    assert_eq!(s, 200);
    let (s, _) = mail_only.get("/users/alice@contoso.com/messages").await;
    assert_eq!(s, 404, "a token only reaches its own tenant");
    server.stop().await;
}

fn assertion(server: &LabServer, alg: Algorithm, key_pem: &str, thumbprint_s256: bool) -> String {
    let der = keys::ms_app_certificate_der();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut header = Header::new(alg);
    header.typ = Some("JWT".into());
    if thumbprint_s256 {
        header.x5t_s256 = Some(b64(&sha2::Sha256::digest(&der)));
    } else {
        header.x5t = Some(b64(&sha1::Sha1::digest(&der)));
    }
    let id = client_id(server, "contoso");
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "aud": format!("{}/contoso.com/oauth2/v2.0/token", server.base_url()),
        "iss": id, "sub": id, "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now, "iat": now, "exp": now + 300,
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn token_call(server: &LabServer, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", server.base_url()))
        .form(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn client_credentials_by_secret_and_assertion() {
    let server = start(LabOptions::default()).await;
    let id = client_id(&server, "contoso");
    for (alg, s256) in [(Algorithm::RS256, false), (Algorithm::PS256, true)] {
        let jwt = assertion(&server, alg, keys::MS_APP_PRIVATE_KEY, s256);
        let (s, body) = token_call(
            &server,
            "contoso.com",
            &[
                ("client_id", &id),
                ("scope", GRAPH_DEFAULT_SCOPE),
                ("grant_type", "client_credentials"),
                ("client_assertion_type", JWT_BEARER_ASSERTION),
                ("client_assertion", &jwt),
            ],
        )
        .await;
        assert_eq!(s, 200, "{alg:?}: {body}");
        let token = body["access_token"].as_str().unwrap();
        let claims = server
            .lab
            .tokens
            .check(
                Some(&format!("Bearer {token}")),
                clawback::lab::tokens::GRAPH_AUDIENCE,
            )
            .unwrap();
        assert!(claims.roles.contains(&"Mail.ReadWrite".to_string()));
        assert_eq!(claims.tid, "contoso");
    }
    let rogue = assertion(&server, Algorithm::RS256, keys::ROGUE_PRIVATE_KEY, false);
    let (s, body) = token_call(
        &server,
        "contoso",
        &[
            ("client_id", &id),
            ("scope", GRAPH_DEFAULT_SCOPE),
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER_ASSERTION),
            ("client_assertion", &rogue),
        ],
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (401, Some("invalid_client")));
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS700027")
    );

    let (s, body) = token_call(
        &server,
        "contoso",
        &[
            ("client_id", &id),
            ("client_secret", "wrong"),
            ("scope", GRAPH_DEFAULT_SCOPE),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_eq!((s, body["error_codes"][0].as_u64()), (401, Some(7000215)));
    let secret = lab_client_secret("contoso");
    let (s, body) = token_call(
        &server,
        "contoso",
        &[
            ("client_id", &id),
            ("client_secret", &secret),
            ("scope", "https://foo.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (400, Some("invalid_scope")));
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS70011")
    );
    let (s, body) = token_call(
        &server,
        "nowhere.example",
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_eq!((s, body["error_codes"][0].as_u64()), (400, Some(90002)));
    // HTTP Basic client authentication.
    let resp = reqwest::Client::new()
        .post(format!("{}/contoso/oauth2/v2.0/token", server.base_url()))
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("scope", GRAPH_DEFAULT_SCOPE),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn device_code_is_pending_then_signs_in_the_admin() {
    let server = start(LabOptions::default()).await;
    let id = client_id(&server, "contoso");
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/contoso/oauth2/v2.0/devicecode",
            server.base_url()
        ))
        .form(&[
            ("client_id", id.as_str()),
            (
                "scope",
                "https://graph.microsoft.com/.default offline_access",
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let dc: Value = resp.json().await.unwrap();
    assert_eq!(dc["expires_in"], 900);
    for field in ["device_code", "user_code", "verification_uri", "message"] {
        assert!(dc[field].as_str().is_some_and(|s| !s.is_empty()), "{field}");
    }
    let code = dc["device_code"].as_str().unwrap();
    let poll = [
        ("grant_type", DEVICE_CODE_GRANT),
        ("client_id", id.as_str()),
        ("device_code", code),
    ];
    let (s, body) = token_call(&server, "contoso", &poll).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let (s, body) = token_call(&server, "contoso", &poll).await;
    assert_eq!(s, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let claims = server
        .lab
        .tokens
        .check(
            Some(&format!("Bearer {token}")),
            clawback::lab::tokens::GRAPH_AUDIENCE,
        )
        .unwrap();
    assert_eq!(claims.sub.as_deref(), Some("admin@contoso.com"));
    assert!(claims.roles.is_empty());
    assert!(claims.scopes().contains(&"Mail.ReadWrite"));
    // The delegated token reaches the signed-in user's own mailbox only (Mail.ReadWrite is
    // the user's own mail; others need Mail.ReadWrite.Shared and FullAccess), and the code is
    // spent.
    let read = |mailbox: &str| {
        reqwest::Client::new()
            .get(format!(
                "{}/v1.0/users/{mailbox}/messages",
                server.base_url()
            ))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(read("admin@contoso.com").await.unwrap().status(), 200);
    let denied = read("alice@contoso.com").await.unwrap();
    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ErrorAccessDenied");
    let (s, _) = token_call(&server, "contoso", &poll).await;
    assert_eq!(s, 400);
    // offline_access brought a refresh token: it renews once and is replaced.
    let rt = body_refresh(&body_of_token(&server, &id).await);
    let renew = |rt: String| {
        let id = id.clone();
        let server = &server;
        async move {
            token_call(
                server,
                "contoso",
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", id.as_str()),
                    ("refresh_token", rt.as_str()),
                ],
            )
            .await
        }
    };
    let (s, renewed) = renew(rt.clone()).await;
    assert_eq!(s, 200, "{renewed}");
    assert!(renewed["access_token"].as_str().is_some());
    assert_ne!(renewed["refresh_token"].as_str(), Some(rt.as_str()));
    let (s, again) = renew(rt).await;
    assert_eq!((s, again["error"].as_str()), (400, Some("invalid_grant")));
    server.stop().await;
}

/// Signs in through the device code flow (asking for Mail.ReadWrite and offline_access) and
/// returns the token endpoint's answer.
async fn body_of_token(server: &LabServer, id: &str) -> Value {
    let dc: Value = reqwest::Client::new()
        .post(format!(
            "{}/contoso/oauth2/v2.0/devicecode",
            server.base_url()
        ))
        .form(&[
            ("client_id", id),
            (
                "scope",
                "https://graph.microsoft.com/Mail.ReadWrite offline_access",
            ),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = dc["device_code"].as_str().unwrap().to_string();
    let poll = [
        ("grant_type", DEVICE_CODE_GRANT),
        ("client_id", id),
        ("device_code", code.as_str()),
    ];
    let _pending = token_call(server, "contoso", &poll).await;
    let (s, body) = token_call(server, "contoso", &poll).await;
    assert_eq!(s, 200, "{body}");
    body
}

fn body_refresh(body: &Value) -> String {
    body["refresh_token"]
        .as_str()
        .expect("a refresh token with offline_access")
        .to_string()
}

/// `Prefer: IdType="ImmutableId"` (PROVIDER-APIS.md §F.3): the ids a request asks for survive
/// moves within the mailbox (to Junk, Deleted Items, Recoverable Items), the response says
/// `Preference-Applied`, and each `$batch` step asks for itself. Without the header the same
/// copy shows its regular id, which changes on every move and then 404s; both kinds address it.
#[tokio::test]
async fn immutable_ids_survive_moves_when_asked_for() {
    let server = start(LabOptions::default()).await;
    let g = Graph::new(&server).await;
    let prefer = "IdType=\"ImmutableId\"";
    let immutable = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut req = g
            .http
            .request(method, format!("{}{path}", g.base))
            .bearer_auth(&g.token)
            .header(
                "Prefer",
                format!("outlook.body-content-type=\"text\", {prefer}"),
            );
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let applied = resp
                .headers()
                .get("preference-applied")
                .map(|v| v.to_str().unwrap().to_string());
            (
                status,
                applied,
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let filter = url::form_urlencoded::byte_serialize(
        format!("internetMessageId eq '{PHISH_ID}'").as_bytes(),
    )
    .collect::<String>();
    let list =
        format!("/users/alice@contoso.com/messages?$filter={filter}&$select=id,parentFolderId");
    let (s, applied, body) = immutable(reqwest::Method::GET, list.clone(), None).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(applied.as_deref(), Some(prefer), "Preference-Applied");
    let id = body["value"][0]["id"].as_str().unwrap().to_string();
    let regular = g.find("alice@contoso.com", PHISH_ID).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(id, regular, "the two kinds of id differ");
    // Without the header: no Preference-Applied.
    let resp = g
        .http
        .get(format!("{}{list}", g.base))
        .bearer_auth(&g.token)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("preference-applied").is_none());

    // Moved to Junk, then Deleted Items: the same id each time, and it still addresses the copy.
    for (dest, folder) in [("junkemail", Folder::Junk), ("deleteditems", Folder::Trash)] {
        let (s, applied, moved) = immutable(
            reqwest::Method::POST,
            format!("/users/alice@contoso.com/messages/{id}/move"),
            Some(json!({ "destinationId": dest })),
        )
        .await;
        assert_eq!(s, 201, "{moved}");
        assert_eq!(applied.as_deref(), Some(prefer));
        assert_eq!(
            moved["id"],
            id.as_str(),
            "move to {dest} keeps the immutable id"
        );
        assert_eq!(
            folder_of(&server, "alice@contoso.com", PHISH_ID),
            vec![folder]
        );
        let (s, _, got) = immutable(
            reqwest::Method::GET,
            format!("/users/alice@contoso.com/messages/{id}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{got}");
        assert_eq!(got["id"], id.as_str());
    }
    // The regular id from before the moves is stale; a fresh regular id addresses it too.
    let (s, body) = g
        .get(&format!("/users/alice@contoso.com/messages/{regular}"))
        .await;
    assert_eq!((s, error_code(&body)), (404, "ErrorItemNotFound"));
    let now_regular = g.find("alice@contoso.com", PHISH_ID).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(now_regular, regular);
    let (s, got) = g
        .get(&format!("/users/alice@contoso.com/messages/{id}"))
        .await;
    assert_eq!(
        s, 200,
        "an immutable id addresses the copy without the header too"
    );
    assert_eq!(
        got["id"],
        now_regular.as_str(),
        "shown under its regular id"
    );
    // Soft-deleted into Recoverable Items (same mailbox): still the same id.
    let resp = g
        .http
        .delete(format!("{}/users/alice@contoso.com/messages/{id}", g.base))
        .bearer_auth(&g.token)
        .header("Prefer", prefer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (s, _, got) = immutable(
        reqwest::Method::GET,
        format!("/users/alice@contoso.com/mailFolders/recoverableitemsdeletions/messages/{id}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["id"], id.as_str());

    // Inside $batch each step asks for itself: the same message of bob, with and without.
    let bob = g.find("bob@contoso.com", PHISH_ID).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let step_url = format!("/users/bob@contoso.com/messages/{bob}?$select=id");
    let (s, body) = g
        .send(
            reqwest::Method::POST,
            "/$batch",
            Some(json!({ "requests": [
                {"id": "asks", "method": "GET", "url": step_url, "headers": {"Prefer": prefer}},
                {"id": "plain", "method": "GET", "url": step_url},
            ]})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let by_id = |id: &str| {
        body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    let asks = by_id("asks");
    let plain = by_id("plain");
    assert_eq!(
        (asks["status"].as_u64(), plain["status"].as_u64()),
        (Some(200), Some(200))
    );
    assert_eq!(asks["headers"]["Preference-Applied"], prefer, "{asks}");
    assert!(
        plain["headers"].get("Preference-Applied").is_none(),
        "{plain}"
    );
    assert_eq!(plain["body"]["id"], bob.as_str());
    let bob_immutable = asks["body"]["id"].as_str().unwrap().to_string();
    assert_ne!(bob_immutable, bob);
    let (s, body) = g
        .send(
            reqwest::Method::POST,
            "/$batch",
            Some(json!({ "requests": [
                {"id": "1", "method": "POST", "url": format!("/users/bob@contoso.com/messages/{bob_immutable}/move"),
                 "headers": {"Content-Type": "application/json", "Prefer": prefer},
                 "body": {"destinationId": "junkemail"}},
            ]})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["responses"][0]["status"], 201, "{body}");
    assert_eq!(body["responses"][0]["body"]["id"], bob_immutable.as_str());
    assert_eq!(
        folder_of(&server, "bob@contoso.com", PHISH_ID),
        vec![Folder::Junk]
    );
    // The lab's own view carries both ids; a copy of another mailbox has its own.
    let (immutables, copies) = {
        let state = server.lab.state();
        let copies = state.copies_of(PHISH_ID);
        let ids: std::collections::BTreeSet<String> = copies
            .iter()
            .map(|(_, _, c)| {
                serde_json::to_value(c).unwrap()["immutable_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        (ids, copies.len())
    };
    assert_eq!(immutables.len(), copies, "one immutable id per copy");
    assert!(immutables.contains(&id) && immutables.contains(&bob_immutable));
    server.stop().await;
}

/// Whole-second `Retry-After` (PROVIDER-APIS.md §F.3; Graph's throttling doc sample says 10):
/// at least 1, an integer an official SDK can parse, both on a plain 429 and inside `$batch`.
#[tokio::test]
async fn throttling_says_retry_after_in_whole_seconds() {
    let server = start(LabOptions {
        latency: Duration::from_millis(300),
        capacity: 1,
        ..Default::default()
    })
    .await;
    let g = Graph::new(&server).await;
    let calls = ["alice", "bob"].map(|u| {
        let req = g
            .http
            .get(format!("{}/users/{u}@contoso.com/messages?$top=1", g.base))
            .bearer_auth(&g.token);
        async move { req.send().await.unwrap() }
    });
    let responses = futures_util::future::join_all(calls).await;
    let throttled: Vec<_> = responses.iter().filter(|r| r.status() == 429).collect();
    assert_eq!(throttled.len(), 1, "one of two on a capacity of 1");
    let text = throttled[0].headers()["retry-after"].to_str().unwrap();
    let secs: u64 = text
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {text:?} is not whole seconds"));
    assert!(secs >= 1, "{text}");

    // Inside `$batch`: a throttled step carries the same advice in its own headers.
    let server = start(LabOptions {
        latency: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let g = Graph::new(&server).await;
    let step = |n: usize| json!({"id": n.to_string(), "method": "GET", "url": "/users/alice@contoso.com/messages?$top=1"});
    let batch = |ids: std::ops::Range<usize>| {
        let req = g
            .http
            .post(format!("{}/$batch", g.base))
            .bearer_auth(&g.token)
            .json(&json!({ "requests": ids.map(step).collect::<Vec<_>>() }));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    // Two batches of four at once: eight concurrent on alice's mailbox, four over the limit.
    let (a, b) = futures_util::join!(batch(0..4), batch(4..8));
    let limited: Vec<Value> = [a, b]
        .iter()
        .flat_map(|r| r["responses"].as_array().unwrap().clone())
        .filter(|r| r["status"] == 429)
        .collect();
    assert!(!limited.is_empty(), "no step was throttled");
    for r in &limited {
        let text = r["headers"]["Retry-After"].as_str().unwrap();
        assert!(
            text.parse::<u64>().is_ok_and(|s| s >= 1),
            "step Retry-After {text:?}"
        );
    }
    server.stop().await;
}

/// A path Graph has no resource for is `400 BadRequest` "Resource not found for the segment
/// '…'" (PROVIDER-APIS.md §F.3), naming the segment, not a bodiless 404 a client would read as
/// "already gone"; a `$batch` step with an absolute url gets the same.
#[tokio::test]
async fn unknown_segments_are_400_bad_request_naming_the_segment() {
    let server = start(LabOptions::default()).await;
    let g = Graph::new(&server).await;
    for (path, segment) in [
        ("/me/messages", "me"),
        ("/users/alice@contoso.com/bogus", "bogus"),
        (
            "/users/alice@contoso.com/messages/AAMkX/frobnicate",
            "frobnicate",
        ),
        ("/users/alice@contoso.com/messages/AAMkX/move", "move"),
        ("/v1.0/users", "v1.0"),
        (
            "/users/alice@contoso.com/mailFolders/inbox/childFolders",
            "childFolders",
        ),
    ] {
        let (s, body) = g.get(path).await;
        assert_eq!(s, 400, "{path}: {body}");
        assert_eq!(error_code(&body), "BadRequest", "{path}");
        assert_eq!(
            body["error"]["message"],
            format!("Resource not found for the segment '{segment}'."),
            "{path}"
        );
        assert!(
            body["error"]["innerError"]["request-id"].is_string(),
            "{body}"
        );
    }
    let (s, body) = g
        .send(
            reqwest::Method::POST,
            "/$batch",
            Some(json!({ "requests": [
                {"id": "abs", "method": "GET", "url": "https://graph.microsoft.com/v1.0/users"},
                {"id": "unknown", "method": "GET", "url": "/users/alice@contoso.com/nothing"},
                {"id": "ok", "method": "GET", "url": "/users/alice@contoso.com/messages?$top=1"},
            ]})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let by_id = |id: &str| {
        body["responses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()
            .clone()
    };
    for (id, segment) in [("abs", "https:"), ("unknown", "nothing")] {
        let r = by_id(id);
        assert_eq!(r["status"], 400, "{r}");
        assert_eq!(r["body"]["error"]["code"], "BadRequest", "{r}");
        assert_eq!(
            r["body"]["error"]["message"],
            format!("Resource not found for the segment '{segment}'."),
            "{r}"
        );
    }
    assert_eq!(by_id("ok")["status"], 200);
    server.stop().await;
}

/// One page of `messages/delta` with `Prefer: odata.maxpagesize` and immutable ids.
async fn delta_page(g: &Graph, url: &str, page: usize) -> (u16, Value) {
    let url = if url.starts_with("http") {
        url.to_string()
    } else {
        format!("{}{url}", g.base)
    };
    let resp = g
        .http
        .get(url)
        .bearer_auth(&g.token)
        .header("Prefer", format!("odata.maxpagesize={page}"))
        .header("Prefer", "IdType=\"ImmutableId\"")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A whole delta round: (messages by Internet Message-ID, removed ids, pages, deltaLink).
async fn delta_round(
    g: &Graph,
    start: &str,
) -> (BTreeSet<String>, BTreeSet<String>, usize, String) {
    let (mut present, mut removed, mut pages) = (BTreeSet::new(), BTreeSet::new(), 0);
    let mut next = start.to_string();
    loop {
        let (s, body) = delta_page(g, &next, 5).await;
        assert_eq!(s, 200, "{body}");
        pages += 1;
        assert!(body["value"].as_array().unwrap().len() <= 5, "{body}");
        for m in body["value"].as_array().unwrap() {
            if m.get("@removed").is_some() {
                assert_eq!(m["@removed"]["reason"], "deleted", "{m}");
                removed.insert(m["id"].as_str().unwrap().to_string());
            } else {
                present.insert(m["internetMessageId"].as_str().unwrap().to_string());
            }
        }
        match (
            body["@odata.nextLink"].as_str(),
            body["@odata.deltaLink"].as_str(),
        ) {
            (Some(n), None) => next = n.to_string(),
            (None, Some(d)) => return (present, removed, pages, d.to_string()),
            _ => panic!("a delta page has exactly one of nextLink and deltaLink: {body}"),
        }
    }
}

/// Graph `messages/delta` per folder, fed by the lab's own changes: a first round pages through
/// the folder (maxpagesize) to a deltaLink; with nothing new the link answers an empty page; a
/// delivery shows up, a move out is `@removed` there and present in the destination folder; an
/// expired token is `410 SyncStateNotFound`; unsupported options are 400.
#[tokio::test]
async fn messages_delta_follows_deliveries_and_moves_per_folder() {
    let server = start(LabOptions::default()).await;
    let g = Graph::new(&server).await;
    let bob = "bob@contoso.com";
    let inbox_of_bob = |server: &LabServer| -> BTreeSet<String> {
        let state = server.lab.state();
        let t = state.tenant_index("contoso").unwrap();
        state.tenants[t].mailboxes[bob]
            .copies
            .values()
            .filter(|c| c.folder == Folder::Inbox)
            .map(|c| c.content.internet_message_id.clone())
            .collect()
    };
    let path =
        format!("/users/{bob}/mailFolders/inbox/messages/delta?$select=internetMessageId,subject");
    let (first, removed, pages, inbox_link) = delta_round(&g, &path).await;
    assert_eq!(first, inbox_of_bob(&server));
    assert!(
        first.len() > 5 && pages > 1,
        "{} messages in {pages} pages",
        first.len()
    );
    assert!(removed.is_empty());
    let (_, _, _, junk_link) = delta_round(
        &g,
        &format!("/users/{bob}/mailFolders/junkemail/messages/delta"),
    )
    .await;

    // Nothing changed: one empty page.
    let (again, removed, pages, inbox_link) = delta_round(&g, &inbox_link).await;
    assert!(again.is_empty() && removed.is_empty() && pages == 1);

    // A delivery.
    let now = chrono::Utc::now().to_rfc3339();
    let r = reqwest::Client::new()
        .post(format!("{}/_lab/deliver", server.base_url()))
        .json(&json!({"tenant": "contoso", "message": {
            "message_id": "<delta-1@evil.example>", "from": "x@evil.example", "to": [bob],
            "subject": "New", "date": now, "body": "b", "copy": [{"mailbox": bob}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (new, removed, _, inbox_link) = delta_round(&g, &inbox_link).await;
    assert_eq!(new, BTreeSet::from(["<delta-1@evil.example>".to_string()]));
    assert!(removed.is_empty());

    // A move to junk: removed from the inbox round, present in the junk round.
    let found = g.find(bob, PHISH_ID).await;
    let id = found[0]["id"].as_str().unwrap().to_string();
    let (s, moved) = g
        .send(
            reqwest::Method::POST,
            &format!("/users/{bob}/messages/{id}/move"),
            Some(json!({"destinationId": "junkemail"})),
        )
        .await;
    assert_eq!(s, 201, "{moved}");
    let (new, removed, _, inbox_link) = delta_round(&g, &inbox_link).await;
    assert!(new.is_empty(), "{new:?}");
    assert_eq!(removed.len(), 1, "{removed:?}");
    let immutable = {
        let state = server.lab.state();
        let t = state.tenant_index("contoso").unwrap();
        state.tenants[t].mailboxes[bob]
            .copies
            .values()
            .find(|c| c.content.internet_message_id == PHISH_ID)
            .unwrap()
            .immutable_id
            .clone()
    };
    assert_eq!(removed, BTreeSet::from([immutable]));
    let (junk, _, _, _) = delta_round(&g, &junk_link).await;
    assert_eq!(junk, BTreeSet::from([PHISH_ID.to_string()]));

    // The journal no longer reaches back: 410, and a first round starts over.
    {
        let mut state = server.lab.state();
        let t = state.tenant_index("contoso").unwrap();
        assert!(state.expire_history(t, bob));
    }
    let (s, body) = delta_page(&g, &inbox_link, 5).await;
    assert_eq!((s, error_code(&body)), (410, "SyncStateNotFound"), "{body}");
    let (restart, _, _, _) = delta_round(&g, &path).await;
    assert_eq!(restart, inbox_of_bob(&server));

    // What the delta function does not take.
    for bad in [
        "?$expand=attachments",
        "?$filter=subject eq 'x'",
        "?$deltatoken=garbage",
    ] {
        let (s, body) = delta_page(
            &g,
            &format!("/users/{bob}/mailFolders/inbox/messages/delta{bad}"),
            5,
        )
        .await;
        assert_eq!(s, 400, "{bad}: {body}");
    }
}

/// A whole `mailFolders/delta` round two folders a page: (folders by displayName, pages,
/// deltaLink).
async fn folder_round(g: &Graph, start: &str) -> (BTreeMap<String, Value>, usize, String) {
    let (mut folders, mut pages) = (BTreeMap::new(), 0);
    let mut next = start.to_string();
    loop {
        let (s, body) = delta_page(g, &next, 2).await;
        assert_eq!(s, 200, "{body}");
        pages += 1;
        assert!(body["value"].as_array().unwrap().len() <= 2, "{body}");
        for f in body["value"].as_array().unwrap() {
            assert!(
                f.get("@removed").is_none(),
                "the lab's users remove no folder: {f}"
            );
            let name = f["displayName"].as_str().unwrap().to_string();
            assert!(
                folders.insert(name, f.clone()).is_none(),
                "listed twice: {f}"
            );
        }
        match (
            body["@odata.nextLink"].as_str(),
            body["@odata.deltaLink"].as_str(),
        ) {
            (Some(n), None) => next = n.to_string(),
            (None, Some(d)) => return (folders, pages, d.to_string()),
            _ => panic!("a delta page has exactly one of nextLink and deltaLink: {body}"),
        }
    }
}

/// Graph `mailFolders/delta` ("mailFolder: delta"): a first round pages (maxpagesize) through
/// the mailbox's whole folder tree, child folders included, flat — the standard folders of the
/// IPM subtree (not Recoverable Items) and the user's own, each with its parent and counts;
/// the deltaLink later answers the folders added since (an empty page when none); every id
/// listed names its folder for `mailFolders/{id}` and its messages' delta; `$select` keeps
/// `id`; other options and bad tokens are 400; an expired token is 410.
#[tokio::test]
async fn mail_folders_delta_lists_the_folder_tree_and_the_folders_added_since() {
    let server = start(LabOptions::default()).await;
    let g = Graph::new(&server).await;
    let bob = "bob@contoso.com";
    let deliver = |mid: &'static str, folder: Value| {
        let url = format!("{}/_lab/deliver", server.base_url());
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&json!({"tenant": "contoso", "message": {
                    "message_id": mid, "from": "x@evil.example", "to": [bob],
                    "subject": "Filed", "date": chrono::Utc::now().to_rfc3339(), "body": "b",
                    "copy": [{"mailbox": bob, "folder": folder}]}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    };
    deliver("<tree-1@evil.example>", json!({"other": "Projects/2026"})).await;
    deliver("<tree-2@evil.example>", json!({"other": "Inbox/Invoices"})).await;

    let (tree, pages, link) = folder_round(&g, &format!("/users/{bob}/mailFolders/delta")).await;
    let names: BTreeSet<&str> = tree.keys().map(String::as_str).collect();
    let user_folders: Vec<String> = {
        let state = server.lab.state();
        let t = state.tenant_index("contoso").unwrap();
        state.tenants[t].mailboxes[bob]
            .folders
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(
        user_folders,
        ["Inbox/Invoices", "Projects", "Projects/2026"]
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "Inbox",
            "Junk Email",
            "Deleted Items",
            "Sent Items",
            "Archive",
            "Drafts",
            "Projects",
            "2026",
            "Invoices",
        ]),
        "{tree:?}"
    );
    assert!(pages >= 5, "{pages} pages of two");
    let id = |name: &str| tree[name]["id"].as_str().unwrap().to_string();
    let (s, inbox) = g.get(&format!("/users/{bob}/mailFolders/inbox")).await;
    assert_eq!(s, 200, "{inbox}");
    assert_eq!(inbox["id"], tree["Inbox"]["id"]);
    assert_eq!(tree["Inbox"]["childFolderCount"], 1);
    assert_eq!(tree["Invoices"]["parentFolderId"], inbox["id"]);
    assert_eq!(
        tree["2026"]["parentFolderId"].as_str().unwrap(),
        id("Projects")
    );
    assert_eq!(tree["Projects"]["childFolderCount"], 1);
    assert_eq!(tree["Projects"]["totalItemCount"], 0);
    assert_eq!(tree["2026"]["totalItemCount"], 1);
    assert_eq!(tree["2026"]["unreadItemCount"], 1);
    assert_eq!(tree["Projects"]["parentFolderId"], inbox["parentFolderId"]);
    // Each id names its folder, and its messages have a delta of their own.
    for name in ["2026", "Invoices"] {
        let (s, f) = g
            .get(&format!("/users/{bob}/mailFolders/{}", id(name)))
            .await;
        assert_eq!((s, f["displayName"].as_str()), (200, Some(name)), "{f}");
        let (msgs, _, _, _) = delta_round(
            &g,
            &format!("/users/{bob}/mailFolders/{}/messages/delta", id(name)),
        )
        .await;
        let want = if name == "2026" {
            "<tree-1@evil.example>"
        } else {
            "<tree-2@evil.example>"
        };
        assert_eq!(msgs, BTreeSet::from([want.to_string()]));
    }

    // Nothing new: one empty page. A folder made since (a user files mail there): only it.
    let (none, pages, link) = folder_round(&g, &link).await;
    assert!(none.is_empty() && pages == 1, "{none:?}");
    let r = reqwest::Client::new()
        .post(format!("{}/_lab/user-action", server.base_url()))
        .json(
            &json!({"tenant": "contoso", "mailbox": bob, "message_id": PHISH_ID,
            "folder": {"other": "Projects/2026/Q3"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let (added, _, link) = folder_round(&g, &link).await;
    assert_eq!(added.keys().collect::<Vec<_>>(), ["Q3"], "{added:?}");
    assert_eq!(added["Q3"]["parentFolderId"].as_str().unwrap(), id("2026"));

    // $select: the properties asked for, and id.
    let (s, body) = delta_page(
        &g,
        &format!("/users/{bob}/mailFolders/delta?$select=displayName"),
        50,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    for f in body["value"].as_array().unwrap() {
        let keys: BTreeSet<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["id", "displayName"]), "{f}");
    }

    // What the function does not take.
    for bad in [
        "?$filter=displayName eq 'x'",
        "?$deltatoken=garbage",
        "?$select=nope",
    ] {
        let (s, body) = delta_page(&g, &format!("/users/{bob}/mailFolders/delta{bad}"), 5).await;
        assert_eq!(s, 400, "{bad}: {body}");
    }
    // The journal no longer reaches back: 410.
    {
        let mut state = server.lab.state();
        let t = state.tenant_index("contoso").unwrap();
        assert!(state.expire_history(t, bob));
    }
    let (s, body) = delta_page(&g, &link, 5).await;
    assert_eq!((s, error_code(&body)), (410, "SyncStateNotFound"), "{body}");
}
