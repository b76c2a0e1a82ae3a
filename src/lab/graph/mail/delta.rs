//! `GET /users/{u}/mailFolders/{f}/messages/delta`: Graph's change tracking for one folder,
//! fed by the lab's mailbox journal ([`crate::lab::state::Change`]).
//!
//! A first round (no token) pages through the folder's messages (optionally
//! `$filter=receivedDateTime ge|gt …`, `$select`) with `@odata.nextLink`s and ends with an
//! `@odata.deltaLink`; following that link later returns what changed in the folder since:
//! messages that arrived or changed there as message resources, messages that left it (moved,
//! deleted, purged) as `{"id", "@removed": {"reason": "deleted"}}`. Page size follows
//! `Prefer: odata.maxpagesize` (default 10). Every query option is carried in the links'
//! tokens, as Graph does. A token older than the mailbox's journal is `410 Gone`
//! `SyncStateNotFound` (the client starts a new first round).

use super::{
    MailRequest, begin, check_select, error, folder_not_found, mailbox_of, matches,
    message_filters, resolve_folder,
};
use crate::lab::SharedLab;
use crate::lab::graph::{bad_request, context, json, ok_json};
use crate::lab::state::{Copy, Mailbox};
use crate::model::Folder;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Page size without `Prefer: odata.maxpagesize`, and the most the lab gives.
pub const DELTA_PAGE_DEFAULT: usize = 10;
pub const DELTA_PAGE_MAX: usize = 1000;

/// What a `$skiptoken` / `$deltatoken` carries (opaque to clients).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeltaState {
    /// The journal position the round reads changes after (`None`: a first round).
    #[serde(default)]
    after: Option<u64>,
    /// The journal position the round's deltaLink will carry.
    upto: u64,
    /// Items of this round already returned.
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    select: Option<Vec<String>>,
}

fn encode(state: &DeltaState) -> String {
    let text = serde_json::to_string(state).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("lab-delta:{text}"))
}

fn decode(token: &str) -> Option<DeltaState> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    serde_json::from_str(text.strip_prefix("lab-delta:")?).ok()
}

fn gone() -> Response {
    error(
        StatusCode::GONE,
        "SyncStateNotFound",
        "The sync state could not be found. Start a new synchronization.",
    )
}

/// `odata.maxpagesize` from the `Prefer` header(s).
fn max_page_size(headers: &HeaderMap) -> usize {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("odata.maxpagesize")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .next()
        .map_or(DELTA_PAGE_DEFAULT, |n| n.clamp(1, DELTA_PAGE_MAX))
}

/// One item of a delta page: a message now in the folder, or one that left it.
enum Item {
    Present(Copy),
    Removed(String),
}

/// A delta request's query options: a token (and whether it opens a new round: a
/// `$deltatoken`), or the first round's `$filter` / `$select` (a token carries those).
struct DeltaQuery {
    token: Option<DeltaState>,
    new_round: bool,
    filter: Option<String>,
    select: Option<Vec<String>>,
}

/// Parses a delta request's query. `$filter` and `$orderby` are taken on messages only; any
/// other option but the tokens and `$select` is 400.
fn parse_delta_query(raw: Option<&str>, messages: bool) -> Result<DeltaQuery, Response> {
    let mut q = DeltaQuery {
        token: None,
        new_round: false,
        filter: None,
        select: None,
    };
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match name.to_ascii_lowercase().as_str() {
            "$skiptoken" => match decode(&value) {
                Some(s) => q.token = Some(s),
                None => return Err(bad_request("Invalid $skiptoken value.")),
            },
            // A new round: it reads the changes up to now.
            "$deltatoken" => match decode(&value) {
                Some(s) => {
                    q.new_round = true;
                    q.token = Some(s);
                }
                None => return Err(bad_request("Invalid $deltatoken value.")),
            },
            "$filter" if messages => q.filter = Some(value.into_owned()),
            "$select" => {
                q.select = Some(
                    value
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>(),
                )
            }
            "$orderby" if messages => {}
            other => {
                let what = if messages { "messages" } else { "mail folders" };
                return Err(bad_request(&format!(
                    "The query option '{other}' is not supported by delta queries on {what}."
                )));
            }
        }
    }
    if let Some(t) = &q.token {
        q.filter = t.filter.clone();
        q.select = t.select.clone();
    }
    Ok(q)
}

/// The state of this request's round: the token's (a new round reads up to `now`), or a first
/// round's with its options; `410` when the mailbox's journal no longer reaches the token.
fn round_state(
    token: Option<DeltaState>,
    new_round: bool,
    (filter, select): (Option<String>, Option<Vec<String>>),
    now: u64,
    mb: &Mailbox,
) -> Result<DeltaState, Response> {
    let mut state = token.unwrap_or(DeltaState {
        after: None,
        upto: now,
        offset: 0,
        filter,
        select,
    });
    if state.after.is_some_and(|a| a < mb.history_floor) || state.upto < mb.history_floor {
        return Err(gone());
    }
    if new_round {
        state.upto = now;
        state.offset = 0;
    }
    Ok(state)
}

/// The items of a round this page shows.
fn page_range(state: &DeltaState, total: usize, size: usize) -> std::ops::Range<usize> {
    let start = state.offset.min(total);
    start..(start + size).min(total)
}

/// A delta page of `value` (a `type_name` collection) under `/v1.0/{path}`: with a nextLink
/// while the round has items after `end` (of `total`), else with the round's deltaLink.
fn page_body(
    lab: &SharedLab,
    path: &str,
    type_name: &str,
    value: Vec<Value>,
    state: &DeltaState,
    (end, total): (usize, usize),
) -> Value {
    let link = |param: &str, s: &DeltaState| {
        format!("{}/v1.0/{path}?{param}={}", lab.base_url(), encode(s))
    };
    let mut body = json!({
        "@odata.context": context(lab, &format!("Collection({type_name})")),
        "value": value,
    });
    if end < total {
        let next = DeltaState {
            offset: end,
            ..state.clone()
        };
        body["@odata.nextLink"] = json!(link("$skiptoken", &next));
    } else {
        let next = DeltaState {
            after: Some(state.upto),
            upto: state.upto,
            offset: 0,
            filter: state.filter.clone(),
            select: state.select.clone(),
        };
        body["@odata.deltaLink"] = json!(link("$deltatoken", &next));
    }
    body
}

/// `GET /users/{u}/mailFolders/{f}/messages/delta`
pub async fn messages_delta(
    State(lab): State<SharedLab>,
    Path((user, folder_key)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let DeltaQuery {
        token,
        new_round,
        filter,
        select,
    } = match parse_delta_query(raw.as_deref(), true) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let filters = match filter.as_deref().map(message_filters).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(r) => return r,
    };
    if filters
        .iter()
        .any(|f| !matches!(f, super::MessageFilter::Received(..)))
    {
        return bad_request("Delta queries on messages filter only on receivedDateTime.");
    }
    if let Err(r) = check_select(select.as_deref()) {
        return r;
    }
    let size = max_page_size(&headers);
    let req = match begin(&lab, &headers, &user, false).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (items, state) = {
        let lab_state = lab.state();
        let mb = match mailbox_of(&lab_state, req.caller.t, &req.mailbox) {
            Ok(m) => m,
            Err(r) => return r,
        };
        let Some(folder) = resolve_folder(&req.mailbox, mb, &folder_key) else {
            return folder_not_found();
        };
        let first = (filter.clone(), select.clone());
        let state = match round_state(token, new_round, first, lab_state.change_seq(), mb) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let items = round(mb, &folder, &state, &req, |c| matches(c, &filters));
        (items, state)
    };
    let range = page_range(&state, items.len(), size);
    let value: Vec<Value> = items[range.clone()]
        .iter()
        .map(|item| match item {
            Item::Present(c) => json::message(c, &req.mailbox, select.as_deref()),
            Item::Removed(id) => json!({
                "@odata.type": "#microsoft.graph.message",
                "id": id,
                "@removed": { "reason": "deleted" },
            }),
        })
        .collect();
    let path = format!("users/{user}/mailFolders/{folder_key}/messages/delta");
    let body = page_body(
        &lab,
        &path,
        "message",
        value,
        &state,
        (range.end, items.len()),
    );
    let mut r = ok_json(StatusCode::OK, body);
    if req.immutable_ids {
        r.headers_mut().insert(
            header::HeaderName::from_static("preference-applied"),
            header::HeaderValue::from_static(crate::lab::graph::IMMUTABLE_ID_PREFERENCE),
        );
    }
    r
}

/// The items of one round, in a stable order: a first round lists the folder (newest first);
/// a later one every copy whose journal changes in `(after, upto]` touch the folder, as it is
/// now (present, when still in the folder and passing the filter) or removed.
fn round(
    mb: &Mailbox,
    folder: &Folder,
    state: &DeltaState,
    req: &MailRequest<'_>,
    pass: impl Fn(&Copy) -> bool,
) -> Vec<Item> {
    let Some(after) = state.after else {
        let mut hits: Vec<&Copy> = mb
            .copies
            .values()
            .filter(|c| c.folder == *folder && pass(c))
            .collect();
        hits.sort_by(|a, b| {
            b.received
                .cmp(&a.received)
                .then_with(|| a.immutable_id.cmp(&b.immutable_id))
        });
        return hits
            .into_iter()
            .map(|c| Item::Present(req.shown(c)))
            .collect();
    };
    // Last change per copy in the window that concerns this folder, in journal order.
    let mut touched: Vec<(&str, &str)> = Vec::new();
    for ch in mb
        .changes
        .iter()
        .filter(|c| c.seq > after && c.seq <= state.upto)
    {
        let in_folder = |f: &Folder| f == folder;
        if !(in_folder(&ch.after.folder)
            || ch.before.as_ref().is_some_and(|b| in_folder(&b.folder)))
        {
            continue;
        }
        // The regular id it had in this folder (what a client that saw it there knows).
        let known_id = match &ch.before {
            Some(b) if in_folder(&b.folder) => b.id.as_str(),
            _ => ch.after.id.as_str(),
        };
        touched.retain(|(imm, _)| *imm != ch.immutable_id);
        touched.push((ch.immutable_id.as_str(), known_id));
    }
    touched
        .into_iter()
        .map(|(immutable, known)| match mb.get(immutable) {
            Some(c) if c.folder == *folder => {
                if pass(c) {
                    Item::Present(req.shown(c))
                } else {
                    Item::Removed(removed_id(req, immutable, known))
                }
            }
            _ => Item::Removed(removed_id(req, immutable, known)),
        })
        .collect()
}

fn removed_id(req: &MailRequest<'_>, immutable: &str, known: &str) -> String {
    if req.immutable_ids {
        immutable.to_string()
    } else {
        known.to_string()
    }
}

/// The mailFolder properties the lab gives (PROVIDER-APIS.md, mailFolder in v1.0 CSDL).
const FOLDER_PROPERTIES: &[&str] = &[
    "id",
    "displayName",
    "parentFolderId",
    "childFolderCount",
    "unreadItemCount",
    "totalItemCount",
    "isHidden",
];

/// `GET /users/{u}/mailFolders/delta` ("mailFolder: delta"): the mailbox's folder tree,
/// child folders included, flat. A first round lists every folder of the IPM subtree (the
/// standard ones, then the user's own by path); following its `@odata.deltaLink` later
/// returns the folders added since. The lab's users never rename or delete a folder, so no
/// `@removed` entry is ever due. `$select` (`id` always comes) is the only query option
/// besides the tokens; paging and `410 Gone` as for messages.
pub async fn folders_delta(
    State(lab): State<SharedLab>,
    Path(user): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let DeltaQuery {
        token,
        new_round,
        select,
        ..
    } = match parse_delta_query(raw.as_deref(), false) {
        Ok(q) => q,
        Err(r) => return r,
    };
    if let Some(bad) = select
        .iter()
        .flatten()
        .find(|p| !FOLDER_PROPERTIES.iter().any(|k| k.eq_ignore_ascii_case(p)))
    {
        return bad_request(&format!(
            "Could not find a property named '{bad}' on type 'microsoft.graph.mailFolder'."
        ));
    }
    let size = max_page_size(&headers);
    let req = match begin(&lab, &headers, &user, false).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (items, state) = {
        let lab_state = lab.state();
        let mb = match mailbox_of(&lab_state, req.caller.t, &req.mailbox) {
            Ok(m) => m,
            Err(r) => return r,
        };
        let first = (None, select.clone());
        let state = match round_state(token, new_round, first, lab_state.change_seq(), mb) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let user_folders = mb
            .folders
            .iter()
            .filter(|(_, seq)| state.after.is_none_or(|a| **seq > a) && **seq <= state.upto)
            .map(|(path, _)| Folder::Other(path.clone()));
        let standard: &[Folder] = if state.after.is_none() {
            crate::lab::graph::json::TREE_FOLDERS
        } else {
            &[]
        };
        let standard = standard.iter().cloned();
        let items: Vec<Value> = standard
            .chain(user_folders)
            .map(|f| {
                let all = crate::lab::graph::json::mail_folder(
                    &req.mailbox,
                    &f,
                    super::folder_counts(mb, &f),
                );
                match &select {
                    None => all,
                    Some(list) => Value::Object(
                        all.as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(k, _)| {
                                *k == "id" || list.iter().any(|s| s.eq_ignore_ascii_case(k))
                            })
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                }
            })
            .collect();
        (items, state)
    };
    let range = page_range(&state, items.len(), size);
    let (end, total) = (range.end, items.len());
    let value = items
        .into_iter()
        .skip(range.start)
        .take(range.len())
        .collect();
    let path = format!("users/{user}/mailFolders/delta");
    let body = page_body(&lab, &path, "mailFolder", value, &state, (end, total));
    ok_json(StatusCode::OK, body)
}
