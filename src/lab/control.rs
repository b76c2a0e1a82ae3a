//! The lab's control API under `/_lab/`: where every copy is, what was done to it, what the lab
//! served, plus two ways to change the world from a test (deliver mail, act as a user).
//!
//! Every response is JSON. Bad input gets `400 {"error": "..."}` naming the problem; unknown
//! things get `404 {"error": "..."}`.
//!
//! | Route | What |
//! |---|---|
//! | `GET /_lab/scenario` | name; tenants with kind, domains (granted), counts |
//! | `GET /_lab/messages?message_id=<id>` | every copy of an Internet Message-ID |
//! | `GET /_lab/mailboxes/{address}` | every copy in one mailbox |
//! | `GET /_lab/actions[?message_id=][&mailbox=]` | actions per (tenant, mailbox, message) and the records |
//! | `GET /_lab/stats` | requests per route, (sub-)requests served per tenant, 429s by limit, in flight, slots in use, API actions, faults |
//! | `POST /_lab/deliver` | `{tenant, message}` → the new copies |
//! | `POST /_lab/user-action` | `{tenant, mailbox, message_id, folder}` → the moved copy |
//!
//! Actions a simulated user takes (`/_lab/user-action`) are recorded with names starting
//! `user:`; the `count` of an action group counts only the others (what an API client did),
//! `user_actions` counts these.

use super::SharedLab;
use super::scenario::{ScenarioMessage, message_content};
use super::state::{ActionRecord, Copy, LabState, Tenant};
use crate::model::{Folder, TenantKind, normalize_message_id};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The `/_lab/` routes.
pub fn routes() -> Router<SharedLab> {
    Router::new()
        .route("/_lab/scenario", get(scenario))
        .route("/_lab/messages", get(messages))
        .route("/_lab/mailboxes/{address}", get(mailbox))
        .route("/_lab/actions", get(actions))
        .route("/_lab/stats", get(stats))
        .route("/_lab/deliver", post(deliver))
        .route("/_lab/user-action", post(user_action))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// Gmail labels of a copy as the Gmail API would show them (system labels from the folder,
/// `UNREAD`, then any extra labels).
pub fn gmail_labels(copy: &Copy) -> Vec<String> {
    let mut labels: Vec<String> = match copy.folder {
        Folder::Inbox => vec!["INBOX".into()],
        Folder::Junk => vec!["SPAM".into()],
        Folder::Trash => vec!["TRASH".into()],
        Folder::SentItems => vec!["SENT".into()],
        Folder::Drafts => vec!["DRAFT".into()],
        _ => Vec::new(),
    };
    if !copy.read {
        labels.push("UNREAD".into());
    }
    labels.extend(copy.extra_labels.iter().cloned());
    labels
}

fn is_user_action(r: &ActionRecord) -> bool {
    r.action.starts_with("user:")
}

/// API actions (not simulated user actions) on one (tenant, mailbox, message).
fn action_count(state: &LabState, tenant: &str, mailbox: &str, message_id: &str) -> usize {
    state
        .actions
        .iter()
        .filter(|r| {
            r.tenant == tenant
                && r.mailbox == mailbox
                && r.internet_message_id == message_id
                && !is_user_action(r)
        })
        .count()
}

/// A copy as `/_lab/` reports it.
fn copy_json(state: &LabState, t: &Tenant, mailbox: &str, c: &Copy) -> Value {
    let mut v = json!({
        "tenant": t.name,
        "kind": t.kind,
        "mailbox": mailbox,
        "message_id": c.content.internet_message_id,
        "subject": c.content.subject,
        "id": c.id,
        "folder": c.folder,
        "read": c.read,
        "received": c.received,
        "granted": t.mailbox_granted(mailbox),
        "actions": action_count(state, &t.name, mailbox, &c.content.internet_message_id),
        "retained_by_hold": c.folder == Folder::Purged
            && t.users.get(mailbox).is_some_and(|u| u.on_hold),
    });
    if let Some(o) = v.as_object_mut() {
        match t.kind {
            TenantKind::GoogleWorkspace => {
                o.insert("labels".into(), json!(gmail_labels(c)));
            }
            // The id Graph shows with `Prefer: IdType="ImmutableId"`: kept across moves.
            TenantKind::Microsoft365 => {
                o.insert("immutable_id".into(), json!(c.immutable_id));
            }
        }
    }
    v
}

async fn scenario(State(lab): State<SharedLab>) -> Response {
    let state = lab.state();
    let tenants: Vec<Value> = state
        .tenants
        .iter()
        .map(|t| {
            let mut ids = std::collections::BTreeSet::new();
            let mut copies = 0usize;
            for mb in t.mailboxes.values() {
                for c in mb.copies.values() {
                    ids.insert(c.content.internet_message_id.as_str());
                    copies += 1;
                }
            }
            json!({
                "name": t.name,
                "kind": t.kind,
                "tenant_id": t.tenant_id,
                "domains": t.domains.iter().map(|d| json!({"name": d.name, "granted": d.retract_granted})).collect::<Vec<_>>(),
                "admin_user": t.admin_user,
                "users": t.users.len(),
                "groups": t.groups.len(),
                "mailboxes": t.mailboxes.len(),
                "messages": ids.len(),
                "copies": copies,
            })
        })
        .collect();
    Json(json!({ "name": lab.scenario_name, "tenants": tenants })).into_response()
}

#[derive(Debug, Deserialize)]
struct MessagesQuery {
    message_id: Option<String>,
}

async fn messages(State(lab): State<SharedLab>, Query(q): Query<MessagesQuery>) -> Response {
    let Some(raw) = q.message_id else {
        return bad_request("query parameter message_id is required, e.g. ?message_id=<a@b>");
    };
    let Some(mid) = normalize_message_id(&raw) else {
        return bad_request(format!("message_id {raw:?} is not a Message-ID"));
    };
    let state = lab.state();
    let mut copies = Vec::new();
    for t in &state.tenants {
        for (addr, mb) in &t.mailboxes {
            for c in mb.copies.values() {
                if c.content.internet_message_id == mid {
                    copies.push(copy_json(&state, t, addr, c));
                }
            }
        }
    }
    Json(json!({ "message_id": mid, "count": copies.len(), "copies": copies })).into_response()
}

async fn mailbox(State(lab): State<SharedLab>, Path(address): Path<String>) -> Response {
    let key = address.trim().to_ascii_lowercase();
    let state = lab.state();
    for t in &state.tenants {
        if let Some(mb) = t.mailboxes.get(&key) {
            let user = t.users.get(&key);
            let copies: Vec<Value> = mb
                .copies
                .values()
                .map(|c| copy_json(&state, t, &key, c))
                .collect();
            return Json(json!({
                "tenant": t.name,
                "address": key,
                "granted": t.mailbox_granted(&key),
                "on_hold": user.is_some_and(|u| u.on_hold),
                "count": copies.len(),
                "copies": copies,
            }))
            .into_response();
        }
        if t.users.contains_key(&key) {
            return error(
                StatusCode::NOT_FOUND,
                format!("{key} is a user of tenant {} without a mailbox", t.name),
            );
        }
        if t.groups.contains_key(&key) {
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "{key} is a group of tenant {}, not a mailbox; its members' mailboxes hold the copies",
                    t.name
                ),
            );
        }
    }
    error(
        StatusCode::NOT_FOUND,
        format!("{key} is not a mailbox in any tenant of this lab"),
    )
}

#[derive(Debug, Deserialize)]
struct ActionsQuery {
    message_id: Option<String>,
    mailbox: Option<String>,
}

async fn actions(State(lab): State<SharedLab>, Query(q): Query<ActionsQuery>) -> Response {
    let mid = match &q.message_id {
        Some(raw) => match normalize_message_id(raw) {
            Some(m) => Some(m),
            None => return bad_request(format!("message_id {raw:?} is not a Message-ID")),
        },
        None => None,
    };
    let mailbox = q.mailbox.as_ref().map(|m| m.trim().to_ascii_lowercase());
    let state = lab.state();
    let records: Vec<&ActionRecord> = state
        .actions
        .iter()
        .filter(|r| mid.as_ref().is_none_or(|m| &r.internet_message_id == m))
        .filter(|r| mailbox.as_ref().is_none_or(|m| &r.mailbox == m))
        .collect();
    // (tenant, mailbox, message) → (API actions, user actions, names)
    type Group<'a> = (usize, usize, Vec<&'a str>);
    let mut groups: BTreeMap<(&str, &str, &str), Group> = BTreeMap::new();
    for r in &records {
        let g = groups
            .entry((&r.tenant, &r.mailbox, &r.internet_message_id))
            .or_default();
        if is_user_action(r) {
            g.1 += 1;
        } else {
            g.0 += 1;
        }
        g.2.push(&r.action);
    }
    let counts: Vec<Value> = groups
        .into_iter()
        .map(|((tenant, mailbox, message_id), (count, user, names))| {
            json!({
                "tenant": tenant,
                "mailbox": mailbox,
                "message_id": message_id,
                "count": count,
                "user_actions": user,
                "actions": names,
            })
        })
        .collect();
    let total = records.iter().filter(|r| !is_user_action(r)).count();
    Json(json!({ "total": total, "counts": counts, "records": records })).into_response()
}

async fn stats(State(lab): State<SharedLab>) -> Response {
    let requests = lab
        .stats
        .requests
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let throttled = lab
        .stats
        .throttled
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let id_types = lab
        .stats
        .graph_id_types
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let slots = lab.limits.slots_in_use();
    let (names, actions_total): (Vec<String>, usize) = {
        let state = lab.state();
        (
            state.tenants.iter().map(|t| t.name.clone()).collect(),
            state.actions.iter().filter(|r| !is_user_action(r)).count(),
        )
    };
    let slots_in_use: BTreeMap<&str, usize> = names
        .iter()
        .map(String::as_str)
        .zip(slots.iter().copied())
        .collect();
    let served: BTreeMap<&str, usize> = names
        .iter()
        .map(String::as_str)
        .zip(lab.limits.served())
        .collect();
    let faults_5xx = lab.stats.faults_5xx.load(Ordering::Relaxed);
    let faults_dropped = lab.stats.faults_dropped.load(Ordering::Relaxed);
    Json(json!({
        "requests_total": requests.values().sum::<u64>(),
        "requests": requests,
        "throttled_total": throttled.values().sum::<u64>(),
        "throttled": throttled,
        "in_flight": lab.stats.in_flight.load(Ordering::Acquire),
        "capacity": lab.options.capacity,
        "slots_in_use": slots_in_use,
        "served": served,
        "served_total": served.values().sum::<usize>(),
        "latency_ms": lab.options.latency.as_secs_f64() * 1000.0,
        "actions_total": actions_total,
        "faults": { "5xx": faults_5xx, "dropped": faults_dropped, "total": faults_5xx + faults_dropped },
        "graph_id_types": id_types,
    }))
    .into_response()
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, String> {
    serde_json::from_slice(body)
        .map_err(|e| format!("{what}: body is not valid JSON for this call: {e}"))
}

fn tenant_of(state: &LabState, name: &str) -> Result<usize, String> {
    state.tenant_index(name).ok_or_else(|| {
        let known: Vec<&str> = state.tenants.iter().map(|t| t.name.as_str()).collect();
        format!(
            "tenant {name:?} is not in this lab (tenants: {})",
            known.join(", ")
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliverBody {
    tenant: String,
    message: ScenarioMessage,
}

async fn deliver(State(lab): State<SharedLab>, body: Bytes) -> Response {
    let req: DeliverBody = match parse_body(&body, "/_lab/deliver") {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    if req.message.copies.is_empty() {
        return bad_request("message.copy is empty: say which mailboxes receive it");
    }
    let content = match message_content(&req.message) {
        Ok(c) => Arc::new(c),
        Err(e) => return bad_request(e),
    };
    let mut state = lab.state();
    let t = match tenant_of(&state, &req.tenant) {
        Ok(t) => t,
        Err(e) => return bad_request(e),
    };
    // All or nothing: refuse before delivering anything.
    let unknown: Vec<&str> = req
        .message
        .copies
        .iter()
        .filter(|c| {
            !state.tenants[t]
                .mailboxes
                .contains_key(&c.mailbox.to_ascii_lowercase())
        })
        .map(|c| c.mailbox.as_str())
        .collect();
    if !unknown.is_empty() {
        return bad_request(format!(
            "not mailboxes of tenant {}: {}",
            state.tenants[t].name,
            unknown.join(", ")
        ));
    }
    let copies: Vec<(String, Folder, bool)> = req
        .message
        .copies
        .iter()
        .map(|c| (c.mailbox.clone(), c.folder.clone(), c.read))
        .collect();
    let (placed, _) = state.deliver(t, content.clone(), &copies);
    let tenant = &state.tenants[t];
    let out: Vec<Value> = placed
        .iter()
        .filter_map(|(mb, id)| {
            let c = tenant.mailboxes.get(mb)?.copies.get(id)?;
            Some(copy_json(&state, tenant, mb, c))
        })
        .collect();
    (
        StatusCode::CREATED,
        Json(json!({
            "message_id": content.internet_message_id,
            "count": out.len(),
            "copies": out,
        })),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserActionBody {
    tenant: String,
    mailbox: String,
    message_id: String,
    folder: Value,
    /// Mark read / unread as well (optional).
    #[serde(default)]
    read: Option<bool>,
}

/// Parses a folder: a neutral name (`junk`, `trash`, `recoverable_deletions`, …), a Graph
/// well-known name (`junkemail`, `deleteditems`, …), or `{"other": "Name"}`.
pub fn parse_folder(v: &Value) -> Result<Folder, String> {
    if let Ok(f) = serde_json::from_value::<Folder>(v.clone()) {
        return Ok(f);
    }
    match v.as_str() {
        Some(s) => match Folder::from_graph_name(s) {
            Folder::Other(_) => Err(format!(
                "folder {s:?} is not known; use inbox, junk, trash, sent_items, archive, drafts, recoverable_deletions, purged (or a Graph well-known name, or {{\"other\": \"Name\"}})"
            )),
            f => Ok(f),
        },
        None => Err(format!("folder {v} must be a string")),
    }
}

async fn user_action(State(lab): State<SharedLab>, body: Bytes) -> Response {
    let req: UserActionBody = match parse_body(&body, "/_lab/user-action") {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let folder = match parse_folder(&req.folder) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    let m = super::UserMove {
        tenant: req.tenant,
        mailbox: req.mailbox,
        message_id: req.message_id,
        folder,
    };
    match user_move(&lab, &m, req.read) {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => bad_request(e),
    }
}

/// A user's move of their copy of `m.message_id` (normalized) to `m.folder` (and optionally
/// its read state): the answer `/_lab/user-action` gives, or what is wrong.
pub(super) fn user_move(
    lab: &SharedLab,
    m: &super::UserMove,
    read: Option<bool>,
) -> Result<Value, String> {
    let Some(mid) = normalize_message_id(&m.message_id) else {
        return Err(format!("message_id {:?} is not a Message-ID", m.message_id));
    };
    let folder = m.folder.clone();
    let mut state = lab.state();
    let t = tenant_of(&state, &m.tenant)?;
    let key = m.mailbox.trim().to_ascii_lowercase();
    let tenant = &state.tenants[t];
    let Some(mb) = tenant.mailboxes.get(&key) else {
        return Err(format!("{key} is not a mailbox of tenant {}", tenant.name));
    };
    // Prefer a copy not already there (a user acts on what they see).
    let Some(id) = mb
        .copies
        .values()
        .filter(|c| c.content.internet_message_id == mid)
        .min_by_key(|c| c.folder == folder)
        .map(|c| c.id.clone())
    else {
        return Err(format!("{key} holds no copy of {mid}"));
    };
    let keep_id = tenant.kind == TenantKind::GoogleWorkspace;
    let action = format!("user:{}", folder.graph_name());
    let moved = state
        .move_copy(t, &key, &id, folder, &action, keep_id)
        .map_err(|e| format!("{key}: cannot move {mid}: {e:?}"))?;
    if let Some(read) = read
        && let Ok(c) = state.copy_mut(t, &key, &moved.id)
    {
        c.read = read;
    }
    let tenant = &state.tenants[t];
    match tenant
        .mailboxes
        .get(&key)
        .and_then(|mb| mb.copies.get(&moved.id))
    {
        Some(c) => Ok(json!({ "previous_id": id, "copy": copy_json(&state, tenant, &key, c) })),
        None => Err("moved copy vanished".to_string()),
    }
}
