//! The lab's Microsoft Graph face against Microsoft's own OpenAPI description
//! (`../shared/reference/graph.v1.subset.openapi.yaml`): every route the lab serves under `/v1.0`
//! is a documented path template + method, and every JSON field the lab emits for messages,
//! mail folders, users, groups, domains, list envelopes and errors is a property of the
//! operation's response schema (following `$ref`, `allOf`, `anyOf` and `@odata.type`
//! discriminators), with the documented JSON type, enum value and date-time format.
//!
//! Where the subset cannot speak for itself the test says so by name, never by a blanket pass:
//! - OData lets a bound action be called without its namespace (`…/move` for
//!   `…/microsoft.graph.move`), and the lab must accept both: both spellings are exercised.
//! - `…/attachments` is the `attachments` navigation property of `microsoft.graph.message`
//!   (checked in the schema), `…/$value` the message's MIME stream (Graph "Get MIME content").
//! - Instance annotations (`@odata.context`, `@odata.etag`) are accepted exactly when a real
//!   Graph response in `reference/examples/graph.*.json` carries them.
//! - The spec's error schema has a known source quirk (its header says so): real responses
//!   spell `innerError` / `date`, the spec `innererror` / `Date`.
//! - Derived types whose discriminator mapping the subset pruned (`fileAttachment`,
//!   `orgContact`) are checked against the base type plus their own CSDL properties listed here.

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

use clawback::lab::graph::fixture::{self, PHISH_ID};
use clawback::lab::graph::{self as lab_graph};
use clawback::lab::oauth_ms::GRAPH_DEFAULT_SCOPE;
use clawback::lab::scenario::lab_client_secret;
use clawback::lab::{LabOptions, LabServer};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference")
}

fn read_reference(name: &str) -> String {
    let path = reference_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the reference spec {} ({e}); the Graph conformance test needs the shared reference files beside the crate (../shared/reference)",
            path.display()
        )
    })
}

fn spec() -> Value {
    let name = "graph.v1.subset.openapi.yaml";
    serde_yaml::from_str(&read_reference(name))
        .unwrap_or_else(|e| panic!("{name}: not a YAML OpenAPI document: {e}"))
}

/// `@odata.*` instance annotations that real Graph responses in `reference/examples/` carry.
fn annotations_in_examples() -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k.starts_with("@odata.") {
                        out.insert(k.clone());
                    }
                    walk(v, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let dir = reference_dir().join("examples");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "cannot list {} ({e}); the conformance test needs the shared reference examples",
            dir.display()
        )
    });
    let mut out = BTreeSet::new();
    for e in entries {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("graph.") && name.ends_with(".json") && !name.contains("token") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            walk(&v, &mut out);
        }
    }
    out
}

/// Own properties of derived types whose discriminator mapping the subset pruned
/// (msgraph-metadata CSDL `fileAttachment`, `orgContact`); checked on top of the base type.
fn pruned_derived(odata_type: &str) -> Option<&'static [(&'static str, &'static str)]> {
    match odata_type {
        "#microsoft.graph.fileAttachment" => Some(&[
            ("contentBytes", "string"),
            ("contentId", "string"),
            ("contentLocation", "string"),
        ]),
        "#microsoft.graph.orgContact" => Some(&[
            ("displayName", "string"),
            ("mail", "string"),
            ("mailNickname", "string"),
            ("givenName", "string"),
            ("surname", "string"),
            ("companyName", "string"),
            ("jobTitle", "string"),
            ("proxyAddresses", "array"),
        ]),
        _ => None,
    }
}

struct Checker<'a> {
    spec: &'a Value,
    annotations: BTreeSet<String>,
    problems: Vec<String>,
    /// Fields checked (a check that checks nothing must not pass).
    fields: usize,
}

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let mut cur = spec;
            for seg in r.trim_start_matches("#/").split('/') {
                cur = &cur[seg];
            }
            assert!(!cur.is_null(), "$ref {r} is missing from the spec");
            resolve(spec, cur)
        }
        None => schema,
    }
}

/// `{nullable: true, type: object}` without properties: the generator's "or null" branch.
fn is_null_branch(s: &Value) -> bool {
    s["nullable"] == true && s.get("properties").is_none() && s.get("$ref").is_none()
}

impl Checker<'_> {
    /// Properties of an object schema, through `allOf` and `$ref`.
    fn properties(&self, schema: &Value, out: &mut Map<String, Value>) {
        let s = resolve(self.spec, schema);
        if let Some(all) = s["allOf"].as_array() {
            for part in all {
                self.properties(part, out);
            }
        }
        if let Some(p) = s["properties"].as_object() {
            for (k, v) in p {
                out.insert(k.clone(), v.clone());
            }
        }
    }

    /// The discriminator mapping of a schema (own or through `allOf`), and whether some
    /// mapping was pruned from the subset.
    fn discriminator(&self, schema: &Value, mapping: &mut Map<String, Value>, pruned: &mut bool) {
        let s = resolve(self.spec, schema);
        if s.get("x-subset-pruned-discriminator-mapping").is_some() {
            *pruned = true;
        }
        if let Some(m) = s["discriminator"]["mapping"].as_object() {
            mapping.extend(m.clone());
        }
        // The subtypes are mapped at the schema's own level (its inline `allOf` parts), not by
        // its `$ref` bases, which map the base's other subtypes.
        if let Some(all) = s["allOf"].as_array() {
            for part in all.iter().filter(|p| p.get("$ref").is_none()) {
                if part.get("x-subset-pruned-discriminator-mapping").is_some() {
                    *pruned = true;
                }
                if let Some(m) = part["discriminator"]["mapping"].as_object() {
                    mapping.extend(m.clone());
                }
            }
        }
    }

    fn check(&mut self, value: &Value, schema: &Value, path: &str) {
        let s = resolve(self.spec, schema);
        if let Some(any) = s["anyOf"].as_array().or(s["oneOf"].as_array()) {
            if value.is_null() && any.iter().any(is_null_branch) {
                return;
            }
            let real: Vec<&Value> = any.iter().filter(|b| !is_null_branch(b)).collect();
            let mut best: Option<Vec<String>> = None;
            for branch in real {
                let mut sub = Checker {
                    spec: self.spec,
                    annotations: self.annotations.clone(),
                    problems: Vec::new(),
                    fields: 0,
                };
                sub.check(value, branch, path);
                if sub.problems.is_empty() {
                    self.fields += sub.fields;
                    return;
                }
                if best.as_ref().is_none_or(|b| sub.problems.len() < b.len()) {
                    best = Some(sub.problems);
                }
            }
            self.problems.extend(
                best.unwrap_or_else(|| vec![format!("{path}: no branch of anyOf applies")]),
            );
            return;
        }
        if value.is_null() {
            if s["nullable"] != true {
                self.problems
                    .push(format!("{path}: null where the schema is not nullable"));
            }
            return;
        }
        let is_object =
            s.get("allOf").is_some() || s.get("properties").is_some() || s["type"] == "object";
        if is_object {
            self.check_object(value, s, path);
            return;
        }
        let ty = s["type"].as_str().unwrap_or("any");
        let ok = match ty {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            _ => true,
        };
        if !ok {
            self.problems
                .push(format!("{path}: {value} is not of type {ty}"));
            return;
        }
        if let Some(allowed) = s["enum"].as_array()
            && !allowed.contains(value)
        {
            self.problems.push(format!(
                "{path}: {value} is not one of the enum {allowed:?}"
            ));
        }
        if s["format"] == "date-time"
            && let Some(text) = value.as_str()
            && chrono::DateTime::parse_from_rfc3339(text).is_err()
        {
            self.problems
                .push(format!("{path}: {text:?} is not an RFC 3339 date-time"));
        }
        if let Value::Array(items) = value {
            for (i, v) in items.iter().enumerate() {
                self.check(v, &s["items"], &format!("{path}[{i}]"));
            }
        }
    }

    fn check_object(&mut self, value: &Value, schema: &Value, path: &str) {
        let Some(map) = value.as_object() else {
            self.problems
                .push(format!("{path}: {value} is not an object"));
            return;
        };
        if schema.get("x-subset-omitted").is_some() {
            self.problems.push(format!(
                "{path}: schema {} is a stub in the subset, fields cannot be checked",
                schema["title"]
            ));
            return;
        }
        // Follow the discriminator to the concrete type.
        let mut props = Map::new();
        self.properties(schema, &mut props);
        let mut extra: &[(&str, &str)] = &[];
        if let Some(t) = map.get("@odata.type").and_then(Value::as_str) {
            let mut mapping = Map::new();
            let mut pruned = false;
            self.discriminator(schema, &mut mapping, &mut pruned);
            if let Some(target) = mapping.get(t) {
                let target = json!({ "$ref": target });
                props.clear();
                self.properties(&target, &mut props);
            } else if !mapping.is_empty() || pruned {
                match pruned_derived(t) {
                    Some(own) if pruned => extra = own,
                    _ => self.problems.push(format!(
                        "{path}: @odata.type {t} is not a subtype the schema maps"
                    )),
                }
            }
        }
        for (k, v) in map {
            let sub = format!("{path}.{k}");
            self.fields += 1;
            if let Some(p) = props.get(k) {
                self.check(v, p, &sub);
                continue;
            }
            // The spec's error quirk (see the file header of the spec).
            if k == "innerError"
                && let Some(p) = props.get("innererror")
            {
                self.check(v, p, &sub);
                continue;
            }
            if k == "date" && props.contains_key("Date") {
                if !v.is_string() {
                    self.problems.push(format!("{sub}: not a string"));
                }
                continue;
            }
            if let Some((_, ty)) = extra.iter().find(|(name, _)| name == k) {
                self.check(v, &json!({"type": ty, "nullable": true}), &sub);
                continue;
            }
            if k.starts_with("@odata.") && self.annotations.contains(k) {
                if !v.is_string() {
                    self.problems
                        .push(format!("{sub}: annotation not a string"));
                }
                continue;
            }
            self.problems
                .push(format!("{sub}: not a property of the schema"));
        }
    }
}

/// (path template, lowercase method) of the spec.
fn operation<'a>(spec: &'a Value, template: &str, method: &str) -> Option<&'a Value> {
    spec["paths"]
        .get(template)
        .and_then(|item| item.get(method.to_ascii_lowercase()))
}

/// The JSON schema of an operation's success response (through `#/components/responses`).
fn response_schema(spec: &Value, op: &Value) -> Value {
    let r = &op["responses"];
    let ok = ["2XX", "200", "201"]
        .iter()
        .map(|k| &r[*k])
        .find(|v| !v.is_null())
        .unwrap_or(&Value::Null);
    resolve(spec, ok)["content"]["application/json"]["schema"].clone()
}

/// How a lab route is documented: the spec path it matches and why.
fn documented(spec: &Value, method: &str, route: &str) -> Result<(String, &'static str), String> {
    if operation(spec, route, method).is_some() {
        return Ok((route.to_string(), "path template"));
    }
    let (parent, last) = route.rsplit_once('/').unwrap();
    // OData: a bound action may be called without its namespace.
    let qualified = format!("{parent}/microsoft.graph.{last}");
    if method == "POST"
        && operation(spec, &qualified, method)
            .is_some_and(|op| op["x-ms-docs-operation-type"] == "action")
    {
        return Ok((qualified, "bound action, namespace omitted"));
    }
    if method == "GET"
        && let Some(get) = operation(spec, parent, "GET")
    {
        let entity = &response_schema(spec, get);
        let c = Checker {
            spec,
            annotations: BTreeSet::new(),
            problems: Vec::new(),
            fields: 0,
        };
        let mut props = Map::new();
        c.properties(entity, &mut props);
        let is_message = entity["$ref"] == "#/components/schemas/microsoft.graph.message";
        if last == "$value" && is_message {
            return Ok((parent.to_string(), "MIME stream of the message ($value)"));
        }
        if let Some(nav) = props.get(last)
            && nav["type"] == "array"
            && nav["items"].get("$ref").is_some()
        {
            return Ok((parent.to_string(), "collection navigation property"));
        }
    }
    Err(format!(
        "{method} /v1.0{route} is not a path template + method of the Graph OpenAPI subset"
    ))
}

#[test]
fn every_served_graph_route_is_documented() {
    let spec = spec();
    let mut by_rule = std::collections::BTreeMap::<&str, usize>::new();
    let mut problems = Vec::new();
    for (method, route) in lab_graph::ROUTES {
        if *route == "/$batch" {
            continue; // JSON batching is not part of the OData-generated OpenAPI.
        }
        match documented(&spec, method, route) {
            Ok((_, rule)) => *by_rule.entry(rule).or_default() += 1,
            Err(e) => problems.push(e),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        by_rule.get("path template").copied().unwrap_or(0) >= 10,
        "{by_rule:?}"
    );
    // The matcher refuses what the spec does not have.
    for (method, route) in [
        ("GET", "/users/{user-id}/notAProperty"),
        ("PATCH", "/domains"),
        ("POST", "/users/{user-id}/messages/{message-id}/forward"),
        ("GET", "/users/{user-id}/messages/{message-id}/subject"),
        ("GET", "/groups/{group-id}/$value"),
    ] {
        assert!(
            documented(&spec, method, route).is_err(),
            "{method} {route}"
        );
    }
}

async fn token(server: &LabServer, tenant: &str) -> String {
    let client_id = {
        let state = server.lab.state();
        let t = state.tenant_index(tenant).unwrap();
        state.tenants[t].credentials.client_id.clone()
    };
    let body: Value = reqwest::Client::new()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", server.base_url()))
        .form(&[
            ("client_id", client_id.as_str()),
            ("client_secret", lab_client_secret(tenant).as_str()),
            ("scope", GRAPH_DEFAULT_SCOPE),
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

/// Normalised route (`{…}` → `{}`) for comparing the lab's matched routes with `ROUTES`.
fn shape(route: &str) -> Vec<String> {
    route
        .split('/')
        .map(|s| {
            if s.starts_with('{') {
                "{}".to_string()
            } else {
                s.to_string()
            }
        })
        .collect()
}

#[tokio::test]
async fn emitted_graph_json_fields_are_schema_properties() {
    let spec = spec();
    let server = LabServer::start(
        &fixture::scenario(),
        LabOptions::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("lab starts");
    let base = format!("{}/v1.0", server.base_url());
    let t = token(&server, "contoso").await;
    let http = reqwest::Client::new();
    let send = |method: &str, path: String, body: Option<Value>| {
        let mut r = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{base}{path}"),
            )
            .bearer_auth(&t);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, text)
        }
    };
    let json_of = |text: &str| -> Value { serde_json::from_str(text).unwrap() };

    let a = "alice@contoso.com";
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let filter = enc(&format!("internetMessageId eq '{PHISH_ID}'"));
    let (_, list) = send("GET", format!("/users/{a}/messages?$filter={filter}"), None).await;
    let list = json_of(&list);
    let phish = list["value"][0]["id"].as_str().unwrap().to_string();
    let (_, junk) = send(
        "GET",
        format!("/users/{a}/mailFolders/junkemail/messages"),
        None,
    )
    .await;
    let news = json_of(&junk)["value"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, users) = send("GET", "/users?$top=3".into(), None).await;
    let user_id = json_of(&users)["value"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, groups) = send(
        "GET",
        format!("/groups?$filter={}", enc("mail eq 'all-staff@contoso.com'")),
        None,
    )
    .await;
    let gid = json_of(&groups)["value"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // (route of lab_graph::ROUTES, concrete path, body, expected status)
    let cases: Vec<(&str, &str, String, Option<Value>, u16)> = vec![
        ("GET", "/users", "/users?$top=3".into(), None, 200),
        (
            "GET",
            "/users/{user-id}",
            format!("/users/{user_id}"),
            None,
            200,
        ),
        (
            "GET",
            "/users/{user-id}",
            format!("/users/{a}?$select=id,mail,displayName"),
            None,
            200,
        ),
        (
            "GET",
            "/users/{user-id}/messages",
            "/users/bob@contoso.com/messages?$top=5".to_string(),
            None,
            200,
        ),
        (
            "GET",
            "/users/{user-id}/messages",
            format!(
                "/users/{a}/messages?$filter={filter}&$select=id,internetMessageHeaders,body,flag"
            ),
            None,
            200,
        ),
        (
            "GET",
            "/users/{user-id}/messages/{message-id}",
            format!("/users/{a}/messages/{phish}"),
            None,
            200,
        ),
        (
            "GET",
            "/users/{user-id}/messages/{message-id}/attachments",
            format!("/users/{a}/messages/{news}/attachments"),
            None,
            200,
        ),
        (
            "GET",
            "/users/{user-id}/mailFolders/{mailFolder-id}",
            format!("/users/{a}/mailFolders/inbox"),
            None,
            200,
        ),
        (
            "GET",
            "/users/{user-id}/mailFolders/{mailFolder-id}",
            format!("/users/{a}/mailFolders/recoverableitemsdeletions"),
            None,
            200,
        ),
        (
            "GET",
            "/users/{user-id}/mailFolders/{mailFolder-id}/messages",
            format!("/users/{a}/mailFolders/inbox/messages?$top=1"),
            None,
            200,
        ),
        (
            "GET",
            "/users/{user-id}/mailFolders/{mailFolder-id}/messages/{message-id}",
            format!("/users/{a}/mailFolders/junkemail/messages/{news}"),
            None,
            200,
        ),
        (
            "GET",
            "/users/{user-id}/mailFolders/{mailFolder-id}/messages/{message-id}/attachments",
            format!("/users/{a}/mailFolders/junkemail/messages/{news}/attachments"),
            None,
            200,
        ),
        ("GET", "/groups", "/groups".into(), None, 200),
        (
            "GET",
            "/groups/{group-id}",
            format!("/groups/{gid}"),
            None,
            200,
        ),
        (
            "GET",
            "/groups/{group-id}/transitiveMembers",
            format!("/groups/{gid}/transitiveMembers"),
            None,
            200,
        ),
        ("GET", "/domains", "/domains".into(), None, 200),
    ];
    let annotations = annotations_in_examples();
    assert!(
        annotations.contains("@odata.context") && annotations.contains("@odata.etag"),
        "the reference examples no longer show the annotations: {annotations:?}"
    );
    let mut c = Checker {
        spec: &spec,
        annotations,
        problems: Vec::new(),
        fields: 0,
    };
    let mut served = BTreeSet::new();
    for (method, route, path, body, want) in cases {
        let (documented_as, rule) = documented(&spec, method, route).unwrap();
        let (status, text) = send(method, path.clone(), body).await;
        assert_eq!(status, want, "{path}: {text}");
        let value = json_of(&text);
        let op = operation(&spec, &documented_as, method).unwrap();
        let mut schema = response_schema(&spec, op);
        if rule == "collection navigation property" {
            // A collection of the navigation property's item type.
            let mut props = Map::new();
            c.properties(&schema, &mut props);
            let nav = route.rsplit('/').next().unwrap();
            schema = json!({"allOf": [
                {"$ref": "#/components/schemas/BaseCollectionPaginationCountResponse"},
                {"type": "object", "properties": {"value": props[nav].clone()}}
            ]});
            assert!(
                value["value"].as_array().is_some_and(|v| !v.is_empty()),
                "{path}: {value}"
            );
        }
        assert!(!schema.is_null(), "{documented_as}: no 2XX JSON schema");
        c.check(&value, &schema, &path);
        served.insert((method, route));
    }
    // $value: MIME text of the message, not JSON.
    let (s, mime) = send("GET", format!("/users/{a}/messages/{phish}/$value"), None).await;
    assert_eq!(s, 200);
    assert!(mime.contains(&format!("Message-ID: {PHISH_ID}")), "{mime}");
    let (s, _) = send(
        "GET",
        format!("/users/{a}/mailFolders/inbox/messages/{phish}/$value"),
        None,
    )
    .await;
    assert_eq!(s, 200);

    // Actions, in both spellings (qualified as in the spec, unqualified as in the docs); the
    // lab's state must show each one happened.
    let folder_of = |mailbox: &str, id: &str| {
        let state = server.lab.state();
        let t = state.tenant_index("contoso").unwrap();
        state.tenants[t].mailboxes[mailbox]
            .copies
            .get(id)
            .map(|c| c.folder.clone())
    };
    let folders_of = |mailbox: &str, message_id: &str| {
        server
            .lab
            .state()
            .copies_of(message_id)
            .into_iter()
            .filter(|(_, m, _)| *m == mailbox)
            .map(|(_, _, c)| c.folder.clone())
            .collect::<Vec<_>>()
    };
    let move_cases = [
        (
            "/users/{user-id}/messages/{message-id}/move",
            "dave@contoso.com",
            "microsoft.graph.move",
            None,
        ),
        (
            "/users/{user-id}/mailFolders/{mailFolder-id}/messages/{message-id}/move",
            "eve@contoso.com",
            "move",
            Some("inbox"),
        ),
    ];
    for (route, mailbox, action, folder) in move_cases {
        let (_, l) = send(
            "GET",
            format!("/users/{mailbox}/messages?$filter={filter}"),
            None,
        )
        .await;
        let id = json_of(&l)["value"][0]["id"].as_str().unwrap().to_string();
        let prefix = folder
            .map(|f| format!("/mailFolders/{f}"))
            .unwrap_or_default();
        let (s, text) = send(
            "POST",
            format!("/users/{mailbox}{prefix}/messages/{id}/{action}"),
            Some(json!({"destinationId": "deleteditems"})),
        )
        .await;
        assert_eq!(s, 201, "{route}: {text}");
        let moved = json_of(&text);
        let (documented_as, _) = documented(&spec, "POST", route).unwrap();
        let op = operation(&spec, &documented_as, "POST").unwrap();
        c.check(
            &moved,
            &op["responses"]["2XX"]["content"]["application/json"]["schema"],
            route,
        );
        let new_id = moved["id"].as_str().unwrap();
        assert_ne!(new_id, id);
        assert_eq!(
            folder_of(mailbox, new_id),
            Some(clawback::model::Folder::Trash)
        );
        assert_eq!(folder_of(mailbox, &id), None);
        served.insert(("POST", route));
    }
    let pd_cases = [
        (
            "/users/{user-id}/messages/{message-id}/permanentDelete",
            "bob@contoso.com",
            "microsoft.graph.permanentDelete",
            None,
        ),
        (
            "/users/{user-id}/mailFolders/{mailFolder-id}/messages/{message-id}/permanentDelete",
            a,
            "permanentDelete",
            Some("inbox"),
        ),
    ];
    for (route, mailbox, action, folder) in pd_cases {
        let (_, l) = send(
            "GET",
            format!("/users/{mailbox}/messages?$filter={filter}"),
            None,
        )
        .await;
        let id = json_of(&l)["value"][0]["id"].as_str().unwrap().to_string();
        let prefix = folder
            .map(|f| format!("/mailFolders/{f}"))
            .unwrap_or_default();
        let (s, text) = send(
            "POST",
            format!("/users/{mailbox}{prefix}/messages/{id}/{action}"),
            None,
        )
        .await;
        assert_eq!(s, 204, "{route}: {text}");
        assert_eq!(
            folders_of(mailbox, PHISH_ID),
            vec![clawback::model::Folder::Purged],
            "{route}"
        );
        served.insert(("POST", route));
    }
    // DELETE in both forms: to recoverable deletions.
    let (_, l) = send(
        "GET",
        "/users/bob@contoso.com/mailFolders/inbox/messages?$top=2&$select=id,internetMessageId"
            .into(),
        None,
    )
    .await;
    let listed = json_of(&l)["value"].as_array().unwrap().clone();
    let ids: Vec<String> = listed
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    for (route, path) in [
        (
            "/users/{user-id}/messages/{message-id}",
            format!("/users/bob@contoso.com/messages/{}", ids[0]),
        ),
        (
            "/users/{user-id}/mailFolders/{mailFolder-id}/messages/{message-id}",
            format!(
                "/users/bob@contoso.com/mailFolders/inbox/messages/{}",
                ids[1]
            ),
        ),
    ] {
        let (s, text) = send("DELETE", path, None).await;
        assert_eq!(s, 204, "{route}: {text}");
        served.insert(("DELETE", route));
    }
    for m in &listed {
        assert_eq!(
            folders_of("bob@contoso.com", m["internetMessageId"].as_str().unwrap()),
            vec![clawback::model::Folder::RecoverableDeletions]
        );
    }
    served.insert(("GET", "/users/{user-id}/messages/{message-id}/$value"));
    served.insert((
        "GET",
        "/users/{user-id}/mailFolders/{mailFolder-id}/messages/{message-id}/$value",
    ));

    // Errors, against the spec's error response.
    let error_schema =
        json!({"$ref": "#/components/schemas/microsoft.graph.ODataErrors.ODataError"});
    let errors = [
        (
            format!("/users/{a}/messages/AAMkAGnotthere"),
            404,
            "ErrorItemNotFound",
        ),
        (
            "/users/pat@subsidiary.example/messages".to_string(),
            403,
            "ErrorAccessDenied",
        ),
        (
            "/users/nomail@contoso.com/messages".to_string(),
            404,
            "MailboxNotEnabledForRESTAPI",
        ),
        (
            "/users/ghost@contoso.com/messages".to_string(),
            404,
            "ErrorInvalidUser",
        ),
        (
            "/users/ghost@contoso.com".to_string(),
            404,
            "Request_ResourceNotFound",
        ),
        (format!("/users/{a}/messages?$top=0"), 400, "BadRequest"),
        // A path with no resource: Graph's 400 naming the segment (PROVIDER-APIS.md §F.3).
        (format!("/users/{a}/bogus"), 400, "BadRequest"),
        ("/me/messages".to_string(), 400, "BadRequest"),
    ];
    for (path, status, code) in errors {
        let (s, text) = send("GET", path.clone(), None).await;
        let v = json_of(&text);
        assert_eq!(
            (s, v["error"]["code"].as_str().unwrap()),
            (status, code),
            "{path}"
        );
        c.check(&v, &error_schema, &path);
    }
    let r = http
        .get(format!("{base}/domains"))
        .bearer_auth("bogus")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    c.check(&r.json::<Value>().await.unwrap(), &error_schema, "401");

    // Every route the lab matched under /v1.0 is one of ROUTES, and every ROUTE was served.
    let stats: Value = reqwest::get(format!("{}/_lab/stats", server.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let routes: Vec<(String, Vec<String>)> = lab_graph::ROUTES
        .iter()
        .map(|(m, r)| (m.to_string(), shape(r)))
        .collect();
    for key in stats["requests"].as_object().unwrap().keys() {
        let (method, route) = key.split_once(' ').unwrap();
        let Some(route) = route.strip_prefix("/v1.0") else {
            continue;
        };
        let got = shape(route);
        let listed = routes.iter().any(|(m, r)| {
            m == method
                && r.len() == got.len()
                && r.iter().zip(&got).all(|(a, b)| a == b || b == "{}")
        });
        assert!(
            listed,
            "the lab served {key}, which graph::ROUTES does not list"
        );
    }
    for (method, route) in lab_graph::ROUTES {
        if *route != "/$batch" {
            assert!(
                served.contains(&(*method, *route)),
                "{method} {route} was not exercised"
            );
        }
    }
    assert!(c.fields > 300, "only {} fields checked", c.fields);
    assert!(
        c.problems.is_empty(),
        "{} fields checked; problems:\n{}",
        c.fields,
        c.problems.join("\n")
    );
    server.stop().await;
}

#[test]
fn checker_catches_unknown_fields_wrong_types_and_enums() {
    let spec = spec();
    let mut c = Checker {
        spec: &spec,
        annotations: ["@odata.etag".to_string()].into(),
        problems: Vec::new(),
        fields: 0,
    };
    let message = json!({"$ref": "#/components/schemas/microsoft.graph.message"});
    c.check(
        &json!({"@odata.etag": "W/\"x\"", "id": "1", "isRead": true, "importance": "high",
                "receivedDateTime": "2026-01-01T00:00:00Z",
                "from": {"emailAddress": {"address": "a@b.c", "name": "A"}}}),
        &message,
        "ok",
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    c.check(
        &json!({"id": "1", "bogus": 1, "isRead": "yes", "importance": "urgent",
                "receivedDateTime": "yesterday", "@odata.context": "x",
                "from": {"emailAddress": {"nope": 1}}}),
        &message,
        "bad",
    );
    assert_eq!(c.problems.len(), 6, "{:#?}", c.problems);
}

#[test]
#[should_panic(
    expected = "needs the shared reference files beside the crate (../shared/reference)"
)]
fn a_missing_reference_file_fails_with_a_clear_message() {
    read_reference("no-such-spec.openapi.yaml");
}
