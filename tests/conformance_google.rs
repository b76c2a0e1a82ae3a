//! The lab's Google face against Google's own discovery documents
//! (`../shared/reference/gmail.v1.discovery.json`, `admin.directory_v1.subset.discovery.json`):
//! every served route is a documented method (HTTP method + path), and every JSON field the
//! lab emits for messages, list envelopes, threads, users, groups, members and errors is a
//! property of the method's response schema (following `$ref`), with the documented JSON type.

use clawback::lab::scenario::Scenario;
use clawback::lab::{LabOptions, LabServer, directory, gmail, keys};
use serde_json::{Value, json};
use std::path::PathBuf;

fn load(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the discovery document {} ({e}); the conformance test needs the shared reference specs beside the crate",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Every method of a discovery document: (HTTP method, "/" + path) → method object.
fn methods(doc: &Value) -> Vec<(String, String, Value)> {
    fn walk(resources: &Value, prefix: &str, out: &mut Vec<(String, String, Value)>) {
        let Some(map) = resources.as_object() else {
            return;
        };
        for r in map.values() {
            if let Some(ms) = r["methods"].as_object() {
                for m in ms.values() {
                    for key in ["flatPath", "path"] {
                        if let Some(p) = m[key].as_str() {
                            out.push((
                                m["httpMethod"].as_str().unwrap_or("").to_string(),
                                format!("/{prefix}{p}"),
                                m.clone(),
                            ));
                        }
                    }
                }
            }
            walk(&r["resources"], prefix, out);
        }
    }
    let mut out = Vec::new();
    let prefix = doc["servicePath"].as_str().unwrap_or("");
    walk(&doc["resources"], prefix, &mut out);
    out
}

fn method<'a>(all: &'a [(String, String, Value)], verb: &str, template: &str) -> &'a Value {
    &all.iter()
        .find(|(m, p, _)| m == verb && p == template)
        .unwrap_or_else(|| panic!("{verb} {template} is not a method of the discovery documents"))
        .2
}

/// Checks `value` against `schema`; problems are pushed as `path: what`.
fn check(value: &Value, schema: &Value, doc: &Value, path: &str, problems: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let target = &doc["schemas"][r];
        if target.is_null() {
            problems.push(format!("{path}: $ref {r} missing from the document"));
            return;
        }
        return check(value, target, doc, path, problems);
    }
    let ty = schema["type"].as_str().unwrap_or("any");
    let ok = match ty {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    };
    if !ok {
        problems.push(format!("{path}: {value} is not of type {ty}"));
        return;
    }
    match (value, ty) {
        (Value::Object(map), "object") => {
            for (k, v) in map {
                let sub = format!("{path}.{k}");
                if let Some(p) = schema["properties"].get(k) {
                    check(v, p, doc, &sub, problems);
                } else if let Some(ap) = schema.get("additionalProperties") {
                    check(v, ap, doc, &sub, problems);
                } else {
                    problems.push(format!("{sub}: not a property of the schema"));
                }
            }
        }
        (Value::Array(items), "array") => {
            for (i, v) in items.iter().enumerate() {
                check(v, &schema["items"], doc, &format!("{path}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

/// Google's error envelope (not in the discovery documents; as in `examples/gmail.error.*`).
fn error_schema() -> Value {
    json!({
        "type": "object",
        "properties": { "error": { "type": "object", "properties": {
            "code": { "type": "integer" },
            "message": { "type": "string" },
            "status": { "type": "string" },
            "errors": { "type": "array", "items": { "type": "object", "properties": {
                "domain": { "type": "string" },
                "reason": { "type": "string" },
                "message": { "type": "string" },
                "location": { "type": "string" },
                "locationType": { "type": "string" }
            }}}
        }}}
    })
}

#[test]
fn every_served_route_is_a_documented_method() {
    let gmail_doc = load("gmail.v1.discovery.json");
    let dir_doc = load("admin.directory_v1.subset.discovery.json");
    let mut all = methods(&gmail_doc);
    all.extend(methods(&dir_doc));
    for (verb, path) in gmail::ROUTES.iter().chain(directory::ROUTES) {
        method(&all, verb, path);
    }
    let batch_path = format!("/{}", gmail_doc["batchPath"].as_str().expect("batchPath"));
    for (verb, path) in gmail::BATCH_ROUTES {
        assert_eq!(*verb, "POST");
        assert!(
            *path == batch_path || *path == "/batch/gmail/v1",
            "{path} is neither the discovery batchPath {batch_path} nor /batch/gmail/v1"
        );
    }
}

fn scenario() -> Scenario {
    let s = json!({
        "tenant": [{
            "name": "fabrikam",
            "kind": "google_workspace",
            "domains": [{"name": "fabrikam.test"}],
            "user": [{"address": "alice@fabrikam.test", "admin": true}, {"address": "bob@fabrikam.test"}],
            "group": [
                {"address": "all@fabrikam.test", "members": ["alice@fabrikam.test", "team@fabrikam.test", "ext@partner.example"]},
                {"address": "team@fabrikam.test", "members": ["bob@fabrikam.test"]}
            ],
            "message": [{
                "message_id": "<c1@evil.example>",
                "from": "mallory@evil.example",
                "to": ["alice@fabrikam.test"],
                "subject": "Conformance",
                "date": "2026-03-10T12:00:00Z",
                "body": "Hello",
                "html": "<p>Hello</p>",
                "attachment": [{"name": "a.txt", "content": "x"}],
                "copy": [{"mailbox": "alice@fabrikam.test"}]
            }]
        }]
    });
    Scenario::parse(&s.to_string(), false, "conformance").expect("scenario")
}

async fn token(base: &str, scopes: &[&str]) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": "clawback@fabrikam-lab.iam.gserviceaccount.com",
        "scope": scopes.join(" "),
        "aud": "https://oauth2.googleapis.com/token",
        "iat": now, "exp": now + 600,
        "sub": "alice@fabrikam.test",
    });
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(keys::GOOGLE_SA_PRIVATE_KEY.as_bytes())
        .expect("key");
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .expect("sign");
    let body: Value = reqwest::Client::new()
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", jwt.as_str()),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

#[tokio::test]
async fn emitted_json_fields_are_schema_properties() {
    let gmail_doc = load("gmail.v1.discovery.json");
    let dir_doc = load("admin.directory_v1.subset.discovery.json");
    let mut all = methods(&gmail_doc);
    all.extend(methods(&dir_doc));
    let server = LabServer::start(
        &scenario(),
        LabOptions::default(),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("lab");
    let base = server.base_url();
    let t = token(
        &base,
        &[
            "https://mail.google.com/",
            "https://www.googleapis.com/auth/admin.directory.user.readonly",
            "https://www.googleapis.com/auth/admin.directory.group.readonly",
            "https://www.googleapis.com/auth/admin.directory.group.member.readonly",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let fetch = |verb: reqwest::Method, path: String, body: Option<Value>| {
        let mut r = client
            .request(verb, format!("{base}{path}"))
            .bearer_auth(&t);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let resp = r.send().await.expect("send");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("json"))
        }
    };
    let u = "/gmail/v1/users/me";
    let (_, list) = fetch(reqwest::Method::GET, format!("{u}/messages"), None).await;
    let id = list["messages"][0]["id"].as_str().expect("id").to_string();
    let thread = list["messages"][0]["threadId"]
        .as_str()
        .expect("thread")
        .to_string();
    // A history cursor from before the changes below, so history.list reports them.
    let (_, profile) = fetch(reqwest::Method::GET, format!("{u}/profile"), None).await;
    let start = profile["historyId"]
        .as_str()
        .expect("historyId")
        .to_string();
    // (method, template, concrete path, body)
    let cases: Vec<(&str, &str, String, Option<Value>)> = vec![
        (
            "GET",
            "/gmail/v1/users/{userId}/messages",
            format!("{u}/messages?maxResults=1&q=Conformance"),
            None,
        ),
        (
            "GET",
            "/gmail/v1/users/{userId}/messages/{id}",
            format!("{u}/messages/{id}?format=full"),
            None,
        ),
        (
            "GET",
            "/gmail/v1/users/{userId}/messages/{id}",
            format!("{u}/messages/{id}?format=metadata&metadataHeaders=Subject"),
            None,
        ),
        (
            "GET",
            "/gmail/v1/users/{userId}/messages/{id}",
            format!("{u}/messages/{id}?format=minimal"),
            None,
        ),
        (
            "GET",
            "/gmail/v1/users/{userId}/messages/{id}",
            format!("{u}/messages/{id}?format=raw"),
            None,
        ),
        (
            "GET",
            "/gmail/v1/users/{userId}/threads/{id}",
            format!("{u}/threads/{thread}?format=full"),
            None,
        ),
        (
            "POST",
            "/gmail/v1/users/{userId}/messages/{id}/modify",
            format!("{u}/messages/{id}/modify"),
            Some(json!({"addLabelIds": ["STARRED"]})),
        ),
        (
            "POST",
            "/gmail/v1/users/{userId}/messages/{id}/trash",
            format!("{u}/messages/{id}/trash"),
            None,
        ),
        (
            "POST",
            "/gmail/v1/users/{userId}/messages/{id}/untrash",
            format!("{u}/messages/{id}/untrash"),
            None,
        ),
        (
            "GET",
            "/gmail/v1/users/{userId}/profile",
            format!("{u}/profile"),
            None,
        ),
        (
            "GET",
            "/gmail/v1/users/{userId}/history",
            format!("{u}/history?startHistoryId={start}"),
            None,
        ),
        (
            "GET",
            "/admin/directory/v1/users",
            "/admin/directory/v1/users?customer=my_customer".into(),
            None,
        ),
        (
            "GET",
            "/admin/directory/v1/users/{userKey}",
            "/admin/directory/v1/users/bob@fabrikam.test".into(),
            None,
        ),
        (
            "GET",
            "/admin/directory/v1/groups",
            "/admin/directory/v1/groups?domain=fabrikam.test".into(),
            None,
        ),
        (
            "GET",
            "/admin/directory/v1/groups/{groupKey}",
            "/admin/directory/v1/groups/all@fabrikam.test".into(),
            None,
        ),
        (
            "GET",
            "/admin/directory/v1/groups/{groupKey}/members",
            "/admin/directory/v1/groups/all@fabrikam.test/members".into(),
            None,
        ),
        (
            "GET",
            "/admin/directory/v1/groups/{groupKey}/members",
            "/admin/directory/v1/groups/all@fabrikam.test/members?includeDerivedMembership=true"
                .into(),
            None,
        ),
        (
            "GET",
            "/admin/directory/v1/groups/{groupKey}/members/{memberKey}",
            "/admin/directory/v1/groups/all@fabrikam.test/members/ext@partner.example".into(),
            None,
        ),
        (
            "GET",
            "/admin/directory/v1/groups/{groupKey}/hasMember/{memberKey}",
            "/admin/directory/v1/groups/all@fabrikam.test/hasMember/bob@fabrikam.test".into(),
            None,
        ),
    ];
    let mut problems = Vec::new();
    let mut checked = 0;
    for (verb, template, path, body) in cases {
        let m = method(&all, verb, template);
        let doc = if template.starts_with("/gmail") {
            &gmail_doc
        } else {
            &dir_doc
        };
        let verb = reqwest::Method::from_bytes(verb.as_bytes()).expect("verb");
        let (status, value) = fetch(verb, path.clone(), body).await;
        assert_eq!(status, 200, "{path}: {value}");
        assert!(
            value.as_object().is_some_and(|o| !o.is_empty()),
            "{path}: empty response"
        );
        check(&value, &m["response"], doc, &path, &mut problems);
        checked += 1;
    }
    // Errors: 401, 403, 404, 400 from both APIs.
    let errors = [
        ("GET", format!("{u}/messages/ffffffffffffffff")),
        // A malformed id: 400 invalidArgument "Invalid id value" (PROVIDER-APIS.md §F.3).
        ("GET", format!("{u}/messages/AAMkAGI2THVSAAA%3D")),
        ("GET", format!("{u}/messages?q=subject%3A%22open")),
        // An out-of-date startHistoryId: 404 (the client then lists the mailbox again).
        ("GET", format!("{u}/history?startHistoryId=1")),
        (
            "GET",
            "/gmail/v1/users/bob@fabrikam.test/messages".to_string(),
        ),
        (
            "GET",
            "/admin/directory/v1/groups/none@fabrikam.test".to_string(),
        ),
        ("GET", "/admin/directory/v1/users".to_string()),
    ];
    for (verb, path) in errors {
        let (status, value) = fetch(
            reqwest::Method::from_bytes(verb.as_bytes()).expect("verb"),
            path.clone(),
            None,
        )
        .await;
        assert!(status >= 400, "{path}");
        check(&value, &error_schema(), &json!({}), &path, &mut problems);
        checked += 1;
    }
    let r = client
        .get(format!("{base}{u}/messages"))
        .bearer_auth("expired-or-bogus")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    check(
        &r.json::<Value>().await.expect("json"),
        &error_schema(),
        &json!({}),
        "401",
        &mut problems,
    );
    assert!(
        problems.is_empty(),
        "{} responses checked; problems:\n{}",
        checked + 1,
        problems.join("\n")
    );
    server.stop().await;
}

#[test]
fn checker_catches_unknown_fields_and_wrong_types() {
    let gmail_doc = load("gmail.v1.discovery.json");
    let schema = json!({"$ref": "Message"});
    let mut problems = Vec::new();
    check(
        &json!({"id": "1", "sizeEstimate": 3, "payload": {"partId": ""}}),
        &schema,
        &gmail_doc,
        "ok",
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:?}");
    check(
        &json!({"id": "1", "bogus": 1, "historyId": 5, "payload": {"body": {"nope": 1}}}),
        &schema,
        &gmail_doc,
        "bad",
        &mut problems,
    );
    assert_eq!(problems.len(), 3, "{problems:?}");
}
