//! The lab's Google face over real HTTP: the service-account token endpoint, Gmail messages,
//! the HTTP batch endpoint, quota, and the Directory API. Side effects are checked in the lab
//! state (`server.lab.state()`), never through a client's own report.

mod lab_support;
use lab_support::{
    GMAIL_FULL as FULL, GMAIL_MEMBERS as MEMBERS, GMAIL_MODIFY as MODIFY, GMAIL_PHISH as PHISH,
    gmail_scenario,
};

use clawback::lab::{LabOptions, LabServer, keys};
use clawback::model::Folder;
use serde_json::{Value, json};
use std::time::Duration;

const SA: &str = "clawback@fabrikam-lab.iam.gserviceaccount.com";

async fn start(options: LabOptions) -> LabServer {
    LabServer::start(
        &gmail_scenario(),
        options,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("lab starts")
}

fn assertion(key_pem: &str, scopes: &str, sub: Option<&str>) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "iss": SA,
        "scope": scopes,
        "aud": "https://oauth2.googleapis.com/token",
        "iat": now,
        "exp": now + 3600,
    });
    if let Some(s) = sub {
        claims["sub"] = json!(s);
    }
    sign(key_pem, &claims)
}

fn sign(key_pem: &str, claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.as_bytes()).expect("key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        claims,
        &key,
    )
    .expect("sign")
}

async fn token_response(server: &LabServer, jwt: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/token", server.base_url()))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", jwt),
        ])
        .send()
        .await
        .expect("token request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

async fn token(server: &LabServer, scopes: &str, sub: Option<&str>) -> String {
    let (status, body) =
        token_response(server, &assertion(keys::GOOGLE_SA_PRIVATE_KEY, scopes, sub)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    body["access_token"].as_str().expect("token").to_string()
}

async fn call(
    server: &LabServer,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base_url()))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("json body")
    };
    (status, json)
}

fn reason(body: &Value) -> &str {
    body["error"]["errors"][0]["reason"].as_str().unwrap_or("")
}

fn folder_of(server: &LabServer, mailbox: &str, id: &str) -> Folder {
    let state = server.lab.state();
    state.tenants[0].mailboxes[mailbox].copies[id]
        .folder
        .clone()
}

fn actions(server: &LabServer, action: &str) -> Vec<(String, String)> {
    server
        .lab
        .state()
        .actions
        .iter()
        .filter(|a| a.action == action)
        .map(|a| (a.mailbox.clone(), a.internet_message_id.clone()))
        .collect()
}

fn q(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn list_by_message_id_misses_trash_unless_asked() {
    let server = start(LabOptions::default()).await;
    let t = token(&server, FULL, Some("bob@fabrikam.test")).await;
    let base = "/gmail/v1/users/me/messages";
    let (s, body) = call(
        &server,
        reqwest::Method::GET,
        &format!("{base}?q={}", q(&format!("rfc822msgid:{PHISH}"))),
        &t,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(body["resultSizeEstimate"], 0);
    assert!(body.get("messages").is_none(), "{body}");
    for query in [
        format!("rfc822msgid:{PHISH}"),
        "rfc822msgid:phish-1@evil.example".to_string(),
    ] {
        let (s, body) = call(
            &server,
            reqwest::Method::GET,
            &format!("{base}?q={}&includeSpamTrash=true", q(&query)),
            &t,
            None,
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(body["resultSizeEstimate"], 1, "{query}: {body}");
        let item = &body["messages"][0];
        assert_eq!(
            item.as_object().expect("object").len(),
            2,
            "only id and threadId"
        );
        let id = item["id"].as_str().expect("id");
        assert_eq!(folder_of(&server, "bob@fabrikam.test", id), Folder::Trash);
    }
    // in:trash reaches the copy without includeSpamTrash.
    let (_, body) = call(
        &server,
        reqwest::Method::GET,
        &format!("{base}?q={}", q("in:trash from:mallory@evil.example")),
        &t,
        None,
    )
    .await;
    assert_eq!(body["resultSizeEstimate"], 1);
    let id = body["messages"][0]["id"].as_str().expect("id").to_string();
    // get: metadata with selected headers, raw, full.
    let (s, m) = call(
        &server,
        reqwest::Method::GET,
        &format!("{base}/{id}?format=metadata&metadataHeaders=Message-ID&metadataHeaders=subject"),
        &t,
        None,
    )
    .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["labelIds"], json!(["TRASH", "UNREAD"]));
    let headers = m["payload"]["headers"].as_array().expect("headers");
    assert_eq!(headers.len(), 2, "{headers:?}");
    assert!(
        headers
            .iter()
            .any(|h| h["name"] == "Message-ID" && h["value"] == PHISH)
    );
    let (_, m) = call(
        &server,
        reqwest::Method::GET,
        &format!("{base}/{id}?format=raw"),
        &t,
        None,
    )
    .await;
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(m["raw"].as_str().expect("raw"))
        .expect("base64url");
    assert!(String::from_utf8_lossy(&raw).contains("Subject: Urgent: invoice overdue"));
    let (_, m) = call(
        &server,
        reqwest::Method::GET,
        &format!("{base}/{id}"),
        &t,
        None,
    )
    .await;
    let parts = m["payload"]["parts"].as_array().expect("multipart");
    assert!(parts.iter().any(|p| p["filename"] == "invoice.html"), "{m}");
    // A bad query is refused.
    let (s, body) = call(
        &server,
        reqwest::Method::GET,
        &format!("{base}?q={}", q("subject:\"open")),
        &t,
        None,
    )
    .await;
    assert_eq!((s, reason(&body)), (400, "invalidArgument"));
    // Another user's mailbox is not delegated by this token.
    let (s, body) = call(
        &server,
        reqwest::Method::GET,
        "/gmail/v1/users/alice@fabrikam.test/messages",
        &t,
        None,
    )
    .await;
    assert_eq!((s, reason(&body)), (403, "forbidden"));
    assert_eq!(
        body["error"]["message"],
        "Delegation denied for bob@fabrikam.test"
    );
    server.stop().await;
}

#[tokio::test]
async fn trash_untrash_spam_and_delete_change_the_lab_state() {
    let server = start(LabOptions::default()).await;
    let alice = "alice@fabrikam.test";
    let t = token(&server, FULL, Some(alice)).await;
    let base = format!("/gmail/v1/users/{alice}/messages");
    let (_, body) = call(
        &server,
        reqwest::Method::GET,
        &format!("{base}?q={}", q(&format!("rfc822msgid:{PHISH}"))),
        &t,
        None,
    )
    .await;
    let id = body["messages"][0]["id"].as_str().expect("id").to_string();
    assert_eq!(folder_of(&server, alice, &id), Folder::Inbox);

    let (s, m) = call(
        &server,
        reqwest::Method::POST,
        &format!("{base}/{id}/trash"),
        &t,
        None,
    )
    .await;
    assert_eq!((s, m["id"].as_str()), (200, Some(id.as_str())));
    assert_eq!(folder_of(&server, alice, &id), Folder::Trash);
    assert_eq!(
        actions(&server, "trash"),
        [(alice.to_string(), PHISH.to_string())]
    );

    let (s, _) = call(
        &server,
        reqwest::Method::POST,
        &format!("{base}/{id}/untrash"),
        &t,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(folder_of(&server, alice, &id), Folder::Inbox);
    assert_eq!(actions(&server, "untrash").len(), 1);

    let (s, m) = call(
        &server,
        reqwest::Method::POST,
        &format!("{base}/{id}/modify"),
        &t,
        Some(json!({"addLabelIds": ["SPAM"], "removeLabelIds": ["INBOX", "UNREAD"]})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(m["labelIds"], json!(["SPAM"]), "{m}");
    assert_eq!(
        folder_of(&server, alice, &id),
        Folder::Junk,
        "the id never changes"
    );
    assert!(server.lab.state().tenants[0].mailboxes[alice].copies[&id].read);
    assert_eq!(actions(&server, "modify").len(), 1);

    let (s, body) = call(
        &server,
        reqwest::Method::POST,
        &format!("{base}/{id}/modify"),
        &t,
        Some(json!({"addLabelIds": ["SENT"]})),
    )
    .await;
    assert_eq!((s, reason(&body)), (400, "invalidArgument"));

    let (s, body) = call(
        &server,
        reqwest::Method::DELETE,
        &format!("{base}/{id}"),
        &t,
        None,
    )
    .await;
    assert_eq!((s, body), (204, Value::Null));
    assert_eq!(folder_of(&server, alice, &id), Folder::Purged);
    assert_eq!(
        actions(&server, "delete"),
        [(alice.to_string(), PHISH.to_string())]
    );
    let (s, body) = call(
        &server,
        reqwest::Method::GET,
        &format!("{base}/{id}"),
        &t,
        None,
    )
    .await;
    assert_eq!((s, reason(&body)), (404, "notFound"));
    let (s, _) = call(
        &server,
        reqwest::Method::POST,
        &format!("{base}/{id}/trash"),
        &t,
        None,
    )
    .await;
    assert_eq!(s, 404, "a purged copy is gone for the API");
    server.stop().await;
}

#[tokio::test]
async fn scopes_signatures_and_delegation_are_enforced() {
    let server = start(LabOptions::default()).await;
    let alice = "alice@fabrikam.test";
    // gmail.modify cannot delete.
    let t = token(&server, MODIFY, Some(alice)).await;
    let (_, body) = call(
        &server,
        reqwest::Method::GET,
        "/gmail/v1/users/me/messages",
        &t,
        None,
    )
    .await;
    let id = body["messages"][0]["id"].as_str().expect("id").to_string();
    let (s, body) = call(
        &server,
        reqwest::Method::DELETE,
        &format!("/gmail/v1/users/me/messages/{id}"),
        &t,
        None,
    )
    .await;
    assert_eq!((s, reason(&body)), (403, "insufficientPermissions"));
    assert_eq!(
        body["error"]["message"],
        "Request had insufficient authentication scopes."
    );
    assert_eq!(folder_of(&server, alice, &id), Folder::Inbox);

    // A JWT signed with another key.
    let (s, body) = token_response(
        &server,
        &assertion(keys::ROGUE_PRIVATE_KEY, FULL, Some(alice)),
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(body["error_description"], "Invalid JWT Signature.");

    // Wrong audience; a lifetime over one hour; an expired assertion.
    let now = chrono::Utc::now().timestamp();
    for (aud, iat, exp) in [
        ("https://example.com/token", now, now + 600),
        ("https://oauth2.googleapis.com/token", now, now + 7200),
        (
            "https://oauth2.googleapis.com/token",
            now - 7200,
            now - 3600,
        ),
    ] {
        let jwt = sign(
            keys::GOOGLE_SA_PRIVATE_KEY,
            &json!({"iss": SA, "scope": FULL, "aud": aud, "iat": iat, "exp": exp, "sub": alice}),
        );
        let (s, body) = token_response(&server, &jwt).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{aud} {iat} {exp}"
        );
    }
    // The lab's own token URL is an accepted audience.
    let jwt = sign(
        keys::GOOGLE_SA_PRIVATE_KEY,
        &json!({"iss": SA, "scope": FULL, "aud": format!("{}/token", server.base_url()), "iat": now, "exp": now + 600, "sub": alice}),
    );
    assert_eq!(token_response(&server, &jwt).await.0, 200);

    // A scope the admin did not delegate.
    let (s, body) = token_response(
        &server,
        &assertion(
            keys::GOOGLE_SA_PRIVATE_KEY,
            "https://www.googleapis.com/auth/gmail.send",
            Some(alice),
        ),
    )
    .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (401, Some("unauthorized_client"))
    );

    // An unknown user to impersonate.
    let (s, body) = token_response(
        &server,
        &assertion(
            keys::GOOGLE_SA_PRIVATE_KEY,
            FULL,
            Some("ghost@fabrikam.test"),
        ),
    )
    .await;
    assert_eq!(
        (s, body["error_description"].as_str()),
        (400, Some("Invalid email or User ID"))
    );

    // A token without sub: Gmail says failedPrecondition.
    let t = token(&server, FULL, None).await;
    let (s, body) = call(
        &server,
        reqwest::Method::GET,
        "/gmail/v1/users/me/messages",
        &t,
        None,
    )
    .await;
    assert_eq!((s, reason(&body)), (400, "failedPrecondition"));

    // A user without a mailbox.
    let t = token(&server, FULL, Some("nomail@fabrikam.test")).await;
    let (s, body) = call(
        &server,
        reqwest::Method::GET,
        "/gmail/v1/users/me/messages",
        &t,
        None,
    )
    .await;
    assert_eq!((s, reason(&body)), (400, "failedPrecondition"));

    // A user in a domain where the app is not allowed.
    let t = token(&server, FULL, Some("dave@ungranted.test")).await;
    let (s, body) = call(
        &server,
        reqwest::Method::GET,
        "/gmail/v1/users/me/messages",
        &t,
        None,
    )
    .await;
    assert_eq!((s, reason(&body)), (403, "domainPolicy"));

    // No token, a garbage token.
    let (s, body) = call(
        &server,
        reqwest::Method::GET,
        "/gmail/v1/users/me/messages",
        "garbage",
        None,
    )
    .await;
    assert_eq!((s, reason(&body)), (401, "authError"));
    server.stop().await;
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let server = start(LabOptions {
        token_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let t = token(&server, FULL, Some("alice@fabrikam.test")).await;
    let (s, _) = call(
        &server,
        reqwest::Method::GET,
        "/gmail/v1/users/me/messages",
        &t,
        None,
    )
    .await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, body) = call(
        &server,
        reqwest::Method::GET,
        "/gmail/v1/users/me/messages",
        &t,
        None,
    )
    .await;
    assert_eq!((s, reason(&body)), (401, "authError"));
    assert_eq!(body["error"]["message"], "Invalid Credentials");
    server.stop().await;
}

#[tokio::test]
async fn exhausting_a_users_quota_gives_403_user_rate_limit() {
    let server = start(LabOptions {
        gmail_units_per_sec: 20.0,
        ..Default::default()
    })
    .await;
    let t = token(&server, FULL, Some("carol@fabrikam.test")).await;
    let mut statuses = Vec::new();
    let mut last = Value::Null;
    for _ in 0..8 {
        let (s, body) = call(
            &server,
            reqwest::Method::GET,
            "/gmail/v1/users/me/messages?maxResults=1",
            &t,
            None,
        )
        .await;
        statuses.push(s);
        if s == 403 {
            last = body;
        }
    }
    assert_eq!(statuses[..4], [200, 200, 200, 200], "{statuses:?}");
    assert!(
        statuses.contains(&403),
        "20 units/s cannot pay for 8 lists at once: {statuses:?}"
    );
    assert_eq!(reason(&last), "userRateLimitExceeded");
    assert_eq!(last["error"]["errors"][0]["domain"], "usageLimits");
    let throttled = server.lab.stats.throttled.lock().expect("stats").clone();
    assert!(
        throttled.get("gmail_user_quota").copied().unwrap_or(0) >= 1,
        "{throttled:?}"
    );
    // Another user has their own quota.
    let t = token(&server, FULL, Some("alice@fabrikam.test")).await;
    let (s, _) = call(
        &server,
        reqwest::Method::GET,
        "/gmail/v1/users/me/messages",
        &t,
        None,
    )
    .await;
    assert_eq!(s, 200);
    server.stop().await;
}

/// Sends a multipart batch; returns the response parts as (part and response headers, status,
/// json body).
async fn batch(
    server: &LabServer,
    token: &str,
    path: &str,
    parts: &[String],
) -> (u16, Vec<(String, u16, Value)>) {
    let boundary = "batch_test_b0undary";
    let mut body = String::new();
    for p in parts {
        body.push_str(&format!("--{boundary}\r\n{p}\r\n"));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let r = reqwest::Client::new()
        .post(format!("{}{path}", server.base_url()))
        .bearer_auth(token)
        .header(
            "Content-Type",
            format!("multipart/mixed; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("batch");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r.text().await.expect("text");
    if status != 200 {
        return (
            status,
            vec![(
                String::new(),
                status,
                serde_json::from_str(&text).unwrap_or(Value::Null),
            )],
        );
    }
    let b = ct
        .split("boundary=")
        .nth(1)
        .expect("boundary")
        .trim_matches('"')
        .to_string();
    let mut out = Vec::new();
    for chunk in text.split(&format!("--{b}")).skip(1) {
        if chunk.starts_with("--") {
            break;
        }
        let (outer, inner) = chunk.split_once("\r\n\r\n").expect("part headers");
        let (head, body) = inner.split_once("\r\n\r\n").expect("response head");
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .expect("status")
            .parse()
            .expect("code");
        let body = body.trim();
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).expect("part json")
        };
        out.push((format!("{outer}\r\n{head}"), code, json));
    }
    (status, out)
}

#[tokio::test]
async fn http_batch_of_50_modifies_answers_in_order_and_moves_each_once() {
    // 50 modifies cost 250 units: a whole second of the real per-user quota, so the lab's
    // quota is raised here (quota refusal has its own test).
    let server = start(LabOptions {
        gmail_units_per_sec: 1000.0,
        ..Default::default()
    })
    .await;
    let carol = "carol@fabrikam.test";
    let t = token(&server, FULL, Some(carol)).await;
    let (_, body) = call(
        &server,
        reqwest::Method::GET,
        "/gmail/v1/users/me/messages?q=from:mallory@evil.example",
        &t,
        None,
    )
    .await;
    let ids: Vec<String> = body["messages"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids.len(), 50);
    let parts: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let body = r#"{"addLabelIds":["SPAM"],"removeLabelIds":["INBOX"]}"#;
            format!(
                "Content-Type: application/http\r\nContent-ID: <item{i}>\r\n\r\nPOST /gmail/v1/users/me/messages/{id}/modify\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        })
        .collect();
    let (status, answers) = batch(&server, &t, "/batch/gmail/v1", &parts).await;
    assert_eq!(status, 200);
    assert_eq!(answers.len(), 50);
    for (i, (head, code, json)) in answers.iter().enumerate() {
        assert!(
            head.contains(&format!("Content-ID: <response-item{i}>")),
            "{head}"
        );
        assert_eq!(*code, 200, "{json}");
        assert_eq!(json["id"], ids[i].as_str(), "answers come in request order");
        assert_eq!(json["labelIds"], json!(["SPAM", "UNREAD"]));
    }
    {
        let state = server.lab.state();
        for id in &ids {
            assert_eq!(
                state.tenants[0].mailboxes[carol].copies[id].folder,
                Folder::Junk
            );
        }
        let modifies: Vec<_> = state
            .actions
            .iter()
            .filter(|a| a.action == "modify")
            .collect();
        assert_eq!(modifies.len(), 50);
        let distinct: std::collections::BTreeSet<_> = modifies
            .iter()
            .map(|a| a.internet_message_id.clone())
            .collect();
        assert_eq!(distinct.len(), 50, "each message moved exactly once");
    }

    // Mixed outcomes keep their own statuses; the per-part token overrides the outer one.
    let other = token(&server, FULL, Some("alice@fabrikam.test")).await;
    let parts = vec![
        format!("Content-Type: application/http\r\nContent-ID: <a>\r\n\r\nGET /gmail/v1/users/me/messages/{}?format=minimal", ids[0]),
        "Content-Type: application/http\r\nContent-ID: <b>\r\n\r\nGET /gmail/v1/users/me/messages/ffffffffffffffff".to_string(),
        format!("Content-Type: application/http\r\nContent-ID: <c>\r\n\r\nGET /gmail/v1/users/me/messages/{}\r\nAuthorization: Bearer {other}\r\n", ids[1]),
    ];
    let (status, answers) = batch(&server, &t, "/batch", &parts).await;
    assert_eq!(status, 200);
    let codes: Vec<u16> = answers.iter().map(|a| a.1).collect();
    assert_eq!(
        codes,
        [200, 404, 404],
        "alice's token cannot see carol's message id"
    );
    assert_eq!(reason(&answers[1].2), "notFound");

    // More than 100 parts are refused as a whole.
    let parts: Vec<String> = (0..101)
        .map(|_| {
            "Content-Type: application/http\r\n\r\nGET /gmail/v1/users/me/messages".to_string()
        })
        .collect();
    let (status, answers) = batch(&server, &t, "/batch/gmail/v1", &parts).await;
    assert_eq!(status, 400);
    assert_eq!(reason(&answers[0].2), "badRequest");
    server.stop().await;
}

#[tokio::test]
async fn batch_modify_and_batch_delete_apply_to_known_ids() {
    let server = start(LabOptions::default()).await;
    let carol = "carol@fabrikam.test";
    let t = token(&server, FULL, Some(carol)).await;
    let (_, body) = call(
        &server,
        reqwest::Method::GET,
        "/gmail/v1/users/me/messages?maxResults=3",
        &t,
        None,
    )
    .await;
    assert!(body["nextPageToken"].is_string());
    let ids: Vec<String> = body["messages"]
        .as_array()
        .expect("list")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    let mut with_unknown = ids.clone();
    with_unknown.push("0000000000000000".into());
    let (s, _) = call(
        &server,
        reqwest::Method::POST,
        "/gmail/v1/users/me/messages/batchModify",
        &t,
        Some(json!({"ids": with_unknown, "addLabelIds": ["TRASH"]})),
    )
    .await;
    assert_eq!(s, 204);
    for id in &ids {
        assert_eq!(folder_of(&server, carol, id), Folder::Trash);
    }
    let (s, _) = call(
        &server,
        reqwest::Method::POST,
        "/gmail/v1/users/me/messages/batchDelete",
        &t,
        Some(json!({"ids": ids})),
    )
    .await;
    assert_eq!(s, 204);
    for id in &ids {
        assert_eq!(folder_of(&server, carol, id), Folder::Purged);
    }
    assert_eq!(actions(&server, "delete").len(), 3);
    let too_many: Vec<String> = (0..1001).map(|i| format!("{i:016x}")).collect();
    let (s, body) = call(
        &server,
        reqwest::Method::POST,
        "/gmail/v1/users/me/messages/batchModify",
        &t,
        Some(json!({"ids": too_many, "addLabelIds": ["SPAM"]})),
    )
    .await;
    assert_eq!((s, reason(&body)), (400, "invalidArgument"));
    server.stop().await;
}

#[tokio::test]
async fn threads_get_groups_a_conversation_in_one_mailbox() {
    let server = start(LabOptions::default()).await;
    let t = token(&server, FULL, Some("alice@fabrikam.test")).await;
    let (_, body) = call(
        &server,
        reqwest::Method::GET,
        "/gmail/v1/users/me/messages",
        &t,
        None,
    )
    .await;
    let thread = body["messages"][0]["threadId"]
        .as_str()
        .expect("thread")
        .to_string();
    let (s, th) = call(
        &server,
        reqwest::Method::GET,
        &format!("/gmail/v1/users/me/threads/{thread}?format=minimal"),
        &t,
        None,
    )
    .await;
    assert_eq!(s, 200, "{th}");
    assert_eq!(th["id"], thread.as_str());
    assert_eq!(th["messages"].as_array().expect("messages").len(), 1);
    let (s, _) = call(
        &server,
        reqwest::Method::GET,
        "/gmail/v1/users/me/threads/0123456789abcdef",
        &t,
        None,
    )
    .await;
    assert_eq!(s, 404);
    server.stop().await;
}

#[tokio::test]
async fn directory_lists_nested_members_for_admins_only() {
    let server = start(LabOptions::default()).await;
    let admin = token(&server, MEMBERS, Some("alice@fabrikam.test")).await;
    let base = "/admin/directory/v1/groups/all@fabrikam.test/members";
    let (s, body) = call(&server, reqwest::Method::GET, base, &admin, None).await;
    assert_eq!(s, 200, "{body}");
    let direct: Vec<(String, String)> = body["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["email"].as_str().expect("email").to_string(),
                m["type"].as_str().expect("type").to_string(),
            )
        })
        .collect();
    assert_eq!(
        direct,
        [
            ("alice@fabrikam.test".to_string(), "USER".to_string()),
            ("team@fabrikam.test".to_string(), "GROUP".to_string()),
            ("ext@partner.example".to_string(), "EXTERNAL".to_string()),
        ]
    );
    let (_, body) = call(
        &server,
        reqwest::Method::GET,
        &format!("{base}?includeDerivedMembership=true"),
        &admin,
        None,
    )
    .await;
    let emails: Vec<&str> = body["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["email"].as_str().expect("email"))
        .collect();
    assert!(
        emails.contains(&"bob@fabrikam.test") && emails.contains(&"carol@fabrikam.test"),
        "{emails:?}"
    );
    let (_, body) = call(
        &server,
        reqwest::Method::GET,
        &format!("{base}?maxResults=2"),
        &admin,
        None,
    )
    .await;
    assert_eq!(body["members"].as_array().expect("page").len(), 2);
    let next = body["nextPageToken"].as_str().expect("next page");
    let (_, body) = call(
        &server,
        reqwest::Method::GET,
        &format!("{base}?maxResults=2&pageToken={next}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(body["members"][0]["email"], "ext@partner.example");
    let (s, body) = call(
        &server,
        reqwest::Method::GET,
        "/admin/directory/v1/groups/all@fabrikam.test/hasMember/carol@fabrikam.test",
        &admin,
        None,
    )
    .await;
    assert_eq!((s, body), (200, json!({"isMember": true})));
    let (s, body) = call(
        &server,
        reqwest::Method::GET,
        "/admin/directory/v1/groups/nope@fabrikam.test/members",
        &admin,
        None,
    )
    .await;
    assert_eq!((s, reason(&body)), (404, "notFound"));
    assert_eq!(body["error"]["message"], "Resource Not Found: groupKey");

    // A non-admin impersonation is refused, as is a token without the directory scope.
    let user = token(&server, MEMBERS, Some("bob@fabrikam.test")).await;
    let (s, body) = call(&server, reqwest::Method::GET, base, &user, None).await;
    assert_eq!((s, reason(&body)), (403, "forbidden"));
    let mail_only = token(&server, FULL, Some("alice@fabrikam.test")).await;
    let (s, body) = call(&server, reqwest::Method::GET, base, &mail_only, None).await;
    assert_eq!((s, reason(&body)), (403, "insufficientPermissions"));
    server.stop().await;
}

#[tokio::test]
async fn a_wide_batch_on_one_user_hits_the_concurrency_limit() {
    // With a service time, a batch's parts run at once: the 11th concurrent call for one user
    // is refused with 429 and a Retry-After, as Gmail does for unchunked batches.
    let server = start(LabOptions {
        latency: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    let t = token(&server, FULL, Some("carol@fabrikam.test")).await;
    let parts: Vec<String> = (0..20)
        .map(|i| format!("Content-Type: application/http\r\nContent-ID: <g{i}>\r\n\r\nGET /gmail/v1/users/me/messages?maxResults=1"))
        .collect();
    let (status, answers) = batch(&server, &t, "/batch/gmail/v1", &parts).await;
    assert_eq!(status, 200);
    let ok = answers.iter().filter(|a| a.1 == 200).count();
    let refused: Vec<_> = answers.iter().filter(|a| a.1 == 429).collect();
    assert_eq!(
        (ok, refused.len()),
        (10, 10),
        "{:?}",
        answers.iter().map(|a| a.1).collect::<Vec<_>>()
    );
    assert!(refused.iter().all(|a| reason(&a.2) == "rateLimitExceeded"));
    assert!(
        refused.iter().all(|a| a.0.contains("Retry-After: ")),
        "{}",
        refused[0].0
    );
    assert_eq!(
        refused[0].2["error"]["message"],
        "Too many concurrent requests for user"
    );
    let throttled = server.lab.stats.throttled.lock().expect("stats").clone();
    assert_eq!(throttled.get("gmail_user_concurrency"), Some(&10));
    server.stop().await;
}

/// A malformed message or thread id (not 1–16 hex digits: a Graph id, a cut or padded Gmail
/// id) is `400 invalidArgument` "Invalid id value"; only a well-formed id of no message is
/// `404 notFound` (PROVIDER-APIS.md §F.3), which a client reads as "already gone". Inside an HTTP
/// batch the part gets the same. `batchModify` over 1000 ids says Gmail's own words.
#[tokio::test]
async fn malformed_ids_are_invalid_arguments_and_unknown_ones_not_found() {
    // Many calls on one user: a quota that is not what this test is about.
    let server = start(LabOptions {
        gmail_units_per_sec: 100_000.0,
        ..LabOptions::default()
    })
    .await;
    let alice = "alice@fabrikam.test";
    let t = token(&server, FULL, Some(alice)).await;
    let base = "/gmail/v1/users/me/messages";
    let (_, listed) = call(
        &server,
        reqwest::Method::GET,
        &format!("{base}?q={}", q(&format!("rfc822msgid:{PHISH}"))),
        &t,
        None,
    )
    .await;
    let id = listed["messages"][0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(id.len(), 16, "{id}");
    let graph_id = "AAMkAGI2THVSAAA=";
    let malformed = [
        graph_id.to_string(),
        format!("{id}0"),      // padded: more than 64 bits
        "18c5f-2".to_string(), // cut and garbled
        "not-an-id".to_string(),
    ];
    for bad in &malformed {
        let enc = q(bad);
        for (method, path, body) in [
            (reqwest::Method::GET, format!("{base}/{enc}"), None),
            (
                reqwest::Method::POST,
                format!("{base}/{enc}/modify"),
                Some(json!({"addLabelIds": ["SPAM"]})),
            ),
            (reqwest::Method::POST, format!("{base}/{enc}/trash"), None),
            (reqwest::Method::POST, format!("{base}/{enc}/untrash"), None),
            (reqwest::Method::DELETE, format!("{base}/{enc}"), None),
            (
                reqwest::Method::GET,
                format!("/gmail/v1/users/me/threads/{enc}"),
                None,
            ),
        ] {
            let (s, body) = call(&server, method.clone(), &path, &t, body).await;
            assert_eq!(
                (s, reason(&body)),
                (400, "invalidArgument"),
                "{method} {path}: {body}"
            );
            assert_eq!(body["error"]["message"], "Invalid id value", "{path}");
            assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{path}");
        }
    }
    // Well-formed, but no such message or thread: 404 notFound.
    for path in [
        format!("{base}/ffffffffffffffff"),
        format!("{base}/{}", &id[..8]),
        "/gmail/v1/users/me/threads/0123456789abcdef".to_string(),
    ] {
        let (s, body) = call(&server, reqwest::Method::GET, &path, &t, None).await;
        assert_eq!((s, reason(&body)), (404, "notFound"), "{path}: {body}");
    }
    assert!(actions(&server, "modify").is_empty() && actions(&server, "trash").is_empty());

    // The same inside an HTTP batch.
    let parts = vec![
        format!("Content-Type: application/http\r\nContent-ID: <a>\r\n\r\nGET {base}/{graph_id}"),
        format!(
            "Content-Type: application/http\r\nContent-ID: <b>\r\n\r\nGET {base}/ffffffffffffffff"
        ),
    ];
    let (status, answers) = batch(&server, &t, "/batch", &parts).await;
    assert_eq!(status, 200);
    assert_eq!(
        (answers[0].1, reason(&answers[0].2)),
        (400, "invalidArgument")
    );
    assert_eq!((answers[1].1, reason(&answers[1].2)), (404, "notFound"));

    // batchModify over 1000 ids.
    let too_many: Vec<String> = (0..1001).map(|i| format!("{i:016x}")).collect();
    for (method, request) in [
        (
            "batchModify",
            json!({"ids": too_many, "addLabelIds": ["SPAM"]}),
        ),
        ("batchDelete", json!({"ids": too_many})),
    ] {
        let (s, body) = call(
            &server,
            reqwest::Method::POST,
            &format!("{base}/{method}"),
            &t,
            Some(request),
        )
        .await;
        assert_eq!((s, reason(&body)), (400, "invalidArgument"), "{method}");
        assert_eq!(
            body["error"]["message"], "Number of ids cannot exceed 1000",
            "{method}"
        );
    }
    server.stop().await;
}

/// Gmail `users.getProfile` + `users.history.list`, fed by the lab's own changes: nothing after
/// the profile's historyId at first; a delivery is `messagesAdded` (with its labels), a move to
/// spam `labelsAdded`/`labelsRemoved`, a permanent delete `messagesDeleted`; `historyTypes`
/// filters, `maxResults` pages with `nextPageToken`; an out-of-date `startHistoryId` is 404 and
/// a missing one 400.
#[tokio::test]
async fn history_lists_the_mailboxs_changes_after_a_history_id() {
    let server = start(LabOptions::default()).await;
    let alice = "alice@fabrikam.test";
    let t = token(&server, FULL, Some(alice)).await;
    let get = |path: String| {
        let (server, t) = (&server, &t);
        async move { call(server, reqwest::Method::GET, &path, t, None).await }
    };
    let u = format!("/gmail/v1/users/{alice}");
    let (s, profile) = get(format!("{u}/profile")).await;
    assert_eq!(s, 200, "{profile}");
    assert_eq!(profile["emailAddress"], alice);
    let start = profile["historyId"].as_str().unwrap().to_string();
    let (s, body) = get(format!("{u}/history?startHistoryId={start}")).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.get("history").is_none(), "{body}");
    assert_eq!(body["historyId"], start.as_str());

    let r = reqwest::Client::new()
        .post(format!("{}/_lab/deliver", server.base_url()))
        .json(&json!({"tenant": "fabrikam", "message": {
            "message_id": "<hist-1@evil.example>", "from": "x@evil.example", "to": [alice],
            "subject": "New", "date": chrono::Utc::now().to_rfc3339(), "body": "b",
            "copy": [{"mailbox": alice}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, body) = get(format!("{u}/history?startHistoryId={start}")).await;
    let history = body["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{body}");
    let added = &history[0]["messagesAdded"][0]["message"];
    let id = added["id"].as_str().unwrap().to_string();
    assert_eq!(added["labelIds"], json!(["INBOX", "UNREAD"]));
    assert_eq!(
        folder_of(&server, alice, &id),
        Folder::Inbox,
        "the added id is the lab's copy"
    );

    let (s, _) = call(
        &server,
        reqwest::Method::POST,
        &format!("{u}/messages/{id}/modify"),
        &t,
        Some(json!({"addLabelIds": ["SPAM"], "removeLabelIds": ["INBOX"]})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &server,
        reqwest::Method::DELETE,
        &format!("{u}/messages/{id}"),
        &t,
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (_, body) = get(format!("{u}/history?startHistoryId={start}")).await;
    let history = body["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{body}");
    assert_eq!(history[1]["labelsAdded"][0]["labelIds"], json!(["SPAM"]));
    assert_eq!(history[1]["labelsRemoved"][0]["labelIds"], json!(["INBOX"]));
    assert_eq!(
        history[2]["messagesDeleted"][0]["message"]["id"],
        id.as_str()
    );
    let ids: Vec<u64> = history
        .iter()
        .map(|h| h["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // Only deliveries.
    let (_, body) = get(format!(
        "{u}/history?startHistoryId={start}&historyTypes=messageAdded"
    ))
    .await;
    assert_eq!(body["history"].as_array().unwrap().len(), 1, "{body}");
    // One record a page.
    let (_, page1) = get(format!("{u}/history?startHistoryId={start}&maxResults=1")).await;
    let token1 = page1["nextPageToken"].as_str().unwrap().to_string();
    let (_, page2) = get(format!(
        "{u}/history?startHistoryId={start}&maxResults=2&pageToken={token1}"
    ))
    .await;
    assert_eq!(page1["history"].as_array().unwrap().len(), 1);
    assert_eq!(page2["history"].as_array().unwrap().len(), 2, "{page2}");
    assert!(page2.get("nextPageToken").is_none(), "{page2}");

    // Out of date, and missing.
    {
        let mut state = server.lab.state();
        let ti = state.tenant_index("fabrikam").unwrap();
        assert!(state.expire_history(ti, alice));
    }
    let (s, body) = get(format!("{u}/history?startHistoryId={start}")).await;
    assert_eq!((s, reason(&body)), (404, "notFound"), "{body}");
    let (s, _) = get(format!("{u}/history")).await;
    assert_eq!(s, 400);
}
