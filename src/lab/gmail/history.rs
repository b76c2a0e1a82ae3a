//! Gmail `users.history.list` and `users.getProfile`, fed by the lab's mailbox journal
//! ([`crate::lab::state::Change`]): deliveries are `messagesAdded`, permanent deletes
//! `messagesDeleted`, every other change the labels it added and removed. History ids are the
//! journal's sequence numbers plus [`HISTORY_ID_BASE`]: increasing, not contiguous per mailbox.
//! A `startHistoryId` older than the mailbox's journal is `404 notFound` ("perform a full
//! sync", as the discovery document says).

use super::{
    HISTORY_ID_BASE, READ_SCOPES, Reply, enter, failed_precondition, invalid_argument, labels_at,
    not_found_now, param, param_all, params, units,
};
use crate::lab::SharedLab;
use crate::lab::state::{Change, Placement, gmail_thread_id};
use crate::model::Folder;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// `maxResults` of `history.list`: default and maximum (discovery document).
pub const HISTORY_DEFAULT: usize = 100;
pub const HISTORY_MAX: usize = 500;
/// The `historyTypes` values.
const HISTORY_TYPES: &[&str] = &[
    "messageAdded",
    "messageDeleted",
    "labelAdded",
    "labelRemoved",
];

/// `GET …/users/{userId}/profile`
pub async fn profile(
    State(lab): State<SharedLab>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let (caller, _guard) = enter(&lab, &headers, &user_id, READ_SCOPES, units::GET_PROFILE).await?;
    let state = lab.state();
    let Some(mb) = state.tenants[caller.tenant].mailboxes.get(&caller.mailbox) else {
        return Err(failed_precondition());
    };
    let visible: Vec<_> = mb.copies.values().filter(|c| super::visible(c)).collect();
    let threads: std::collections::BTreeSet<&str> = visible
        .iter()
        .map(|c| c.content.conversation_key.as_str())
        .collect();
    Ok(axum::Json(json!({
        "emailAddress": caller.mailbox,
        "messagesTotal": visible.len(),
        "threadsTotal": threads.len(),
        "historyId": (HISTORY_ID_BASE + state.change_seq()).to_string(),
    }))
    .into_response())
}

/// `GET …/users/{userId}/history`
pub async fn list(
    State(lab): State<SharedLab>,
    Path(user_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Reply {
    let (caller, _guard) =
        enter(&lab, &headers, &user_id, READ_SCOPES, units::HISTORY_LIST).await?;
    let params = params(raw);
    let start = match param(&params, "startHistoryId").map(str::parse::<u64>) {
        Some(Ok(n)) => n,
        Some(Err(_)) => return Err(invalid_argument("Invalid startHistoryId")),
        None => {
            return Err(invalid_argument(
                "Missing required parameter startHistoryId",
            ));
        }
    };
    let types = param_all(&params, "historyTypes");
    if let Some(bad) = types.iter().find(|t| !HISTORY_TYPES.contains(&t.as_str())) {
        return Err(invalid_argument(&format!(
            "Invalid value at 'history_types' ({bad})"
        )));
    }
    let label = param(&params, "labelId").filter(|l| !l.is_empty());
    let max = match param(&params, "maxResults").map(str::parse::<usize>) {
        None => HISTORY_DEFAULT,
        Some(Ok(n)) => n.clamp(1, HISTORY_MAX),
        Some(Err(_)) => return Err(invalid_argument("Invalid value for maxResults")),
    };
    // The page token is the id of the last record already returned.
    let after = match param(&params, "pageToken").filter(|s| !s.is_empty()) {
        None => None,
        Some(tok) => match tok.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return Err(invalid_argument("Invalid pageToken")),
        },
    };
    let state = lab.state();
    let Some(mb) = state.tenants[caller.tenant].mailboxes.get(&caller.mailbox) else {
        return Err(failed_precondition());
    };
    // Out of date: older than what the journal still holds (or not an id at all).
    let Some(start_seq) = start.checked_sub(HISTORY_ID_BASE) else {
        return Err(not_found_now());
    };
    if start_seq < mb.history_floor {
        return Err(not_found_now());
    }
    let from = after.map_or(start_seq, |a| {
        a.saturating_sub(HISTORY_ID_BASE).max(start_seq)
    });
    let mut records: Vec<Value> = Vec::new();
    let mut last_seq = None;
    let mut more = false;
    for change in mb.changes.iter().filter(|c| c.seq > from) {
        let Some(record) = record(change, &caller.mailbox, &types, label) else {
            continue;
        };
        if records.len() == max {
            more = true;
            break;
        }
        records.push(record);
        last_seq = Some(change.seq);
    }
    let mut body = json!({ "historyId": (HISTORY_ID_BASE + state.change_seq()).to_string() });
    if !records.is_empty() {
        body["history"] = Value::Array(records);
    }
    if more && let Some(seq) = last_seq {
        body["nextPageToken"] = json!((HISTORY_ID_BASE + seq).to_string());
    }
    Ok(axum::Json(body).into_response())
}

/// The history record of one journal change, restricted to the asked types and label; `None`
/// when nothing of it is asked for.
fn record(change: &Change, mailbox: &str, types: &[String], label: Option<&str>) -> Option<Value> {
    let wanted = |t: &str| types.is_empty() || types.iter().any(|x| x == t);
    let after = &change.after;
    let thread = gmail_thread_id(&change.content.conversation_key, mailbox);
    let message = |p: &Placement, labels: bool| {
        let mut m = json!({ "id": change.immutable_id, "threadId": thread });
        if labels {
            m["labelIds"] = json!(labels_at(p));
        }
        m
    };
    let mut rec = json!({
        "id": (HISTORY_ID_BASE + change.seq).to_string(),
        "messages": [message(after, false)],
    });
    let mut any = false;
    let labelled = |p: &Placement| label.is_none_or(|l| labels_at(p).iter().any(|x| x == l));
    match &change.before {
        None if after.folder == Folder::Purged => {}
        None => {
            if wanted("messageAdded") && labelled(after) {
                rec["messagesAdded"] = json!([{ "message": message(after, true) }]);
                any = true;
            }
        }
        Some(before) if after.folder == Folder::Purged => {
            let deleted = before.folder != Folder::Purged;
            if deleted && wanted("messageDeleted") && labelled(before) {
                rec["messagesDeleted"] = json!([{ "message": message(after, false) }]);
                any = true;
            }
        }
        Some(before) => {
            let (old, new) = (labels_at(before), labels_at(after));
            let added: Vec<&String> = new.iter().filter(|l| !old.contains(l)).collect();
            let removed: Vec<&String> = old.iter().filter(|l| !new.contains(l)).collect();
            let hit = |ls: &[&String]| label.is_none_or(|l| ls.iter().any(|x| *x == l));
            if !added.is_empty() && wanted("labelAdded") && hit(&added) {
                rec["labelsAdded"] =
                    json!([{ "message": message(after, true), "labelIds": added }]);
                any = true;
            }
            if !removed.is_empty() && wanted("labelRemoved") && hit(&removed) {
                rec["labelsRemoved"] =
                    json!([{ "message": message(after, true), "labelIds": removed }]);
                any = true;
            }
        }
    }
    any.then_some(rec)
}
