//! Graph mail routes: list/get messages, move, delete, permanentDelete, attachments, `$value`,
//! mail folders.

pub mod delta;

use super::filter::{self, Clause};
use super::json;
use super::{
    Caller, authenticate, bad_request, collection, context, enter_mailbox, error, ok_json,
    parse_query, require_mail, resolve_mailbox, serve, wants_immutable_ids,
};
use crate::lab::SharedLab;
use crate::lab::limits::MailboxGuard;
use crate::lab::state::{Copy, LabState, Lookup, Mailbox, TenantIdx, graph_conversation_id};
use crate::model::Folder;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use serde_json::json;
use std::collections::HashMap;

/// Graph's well-known folder names (locale independent), PROVIDER-APIS.md A.2.
pub const WELL_KNOWN_FOLDERS: &[&str] = &[
    "archive",
    "clutter",
    "conflicts",
    "conversationhistory",
    "deleteditems",
    "drafts",
    "inbox",
    "junkemail",
    "localfailures",
    "msgfolderroot",
    "outbox",
    "recoverableitemsdeletions",
    "scheduled",
    "searchfolders",
    "sentitems",
    "serverfailures",
    "syncissues",
];

/// A mail request that passed authentication, permission, mailbox and limit checks.
struct MailRequest<'a> {
    caller: Caller,
    mailbox: String,
    /// The caller asked for immutable ids (`Prefer: IdType="ImmutableId"`).
    immutable_ids: bool,
    _guard: MailboxGuard<'a>,
}

impl MailRequest<'_> {
    /// A copy as this caller sees it: under its immutable id when asked for.
    fn shown(&self, copy: &Copy) -> Copy {
        let mut c = copy.clone();
        if self.immutable_ids {
            c.id = c.immutable_id.clone();
        }
        c
    }
}

async fn begin<'a>(
    lab: &'a SharedLab,
    headers: &HeaderMap,
    user: &str,
    write: bool,
) -> Result<MailRequest<'a>, Response> {
    let immutable_ids = wants_immutable_ids(headers);
    lab.note_id_type(immutable_ids);
    let caller = authenticate(lab, headers)?;
    let rbac = lab.state().tenants[caller.t].rbac_mail_scope.is_some();
    if !rbac {
        require_mail(&caller, write)?;
    }
    let mailbox = resolve_mailbox(lab, caller.t, user)?;
    super::delegated_mailbox(lab, &caller, &mailbox, write)?;
    super::rbac_mailbox(lab, &caller, &mailbox)?;
    let guard = enter_mailbox(lab, caller.t, &mailbox)?;
    serve(lab, caller.t).await?;
    Ok(MailRequest {
        caller,
        mailbox,
        immutable_ids,
        _guard: guard,
    })
}

fn folder_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

fn item_not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store., The process failed to get the correct properties.",
    )
}

/// A folder named by a well-known name or by an id the lab emitted. Purges is not reachable.
fn resolve_folder(mailbox: &str, mb: &Mailbox, key: &str) -> Option<Folder> {
    if let Some(name) = WELL_KNOWN_FOLDERS
        .iter()
        .find(|n| n.eq_ignore_ascii_case(key))
    {
        return Some(Folder::from_graph_name(name));
    }
    // Every lab mailbox has the folder tree's standard folders and Recoverable Items.
    if let Some(f) = json::TREE_FOLDERS
        .iter()
        .chain([&Folder::RecoverableDeletions])
        .find(|f| json::folder_id(mailbox, f) == key)
    {
        return Some(f.clone());
    }
    mb.folders
        .keys()
        .map(|path| Folder::Other(path.clone()))
        .chain(
            mb.copies
                .values()
                .map(|c| &c.folder)
                .filter(|f| matches!(f, Folder::Other(_)))
                .cloned(),
        )
        .find(|f| json::folder_id(mailbox, f) == key)
}

/// A folder's `(totalItemCount, unreadItemCount, childFolderCount)`.
fn folder_counts(mb: &Mailbox, folder: &Folder) -> (usize, usize, usize) {
    let (total, unread) = mb
        .copies
        .values()
        .filter(|c| c.folder == *folder)
        .fold((0, 0), |(t, u), c| (t + 1, u + usize::from(!c.read)));
    let children = mb
        .folders
        .keys()
        .filter_map(|path| path.rsplit_once('/').map(|(parent, _)| parent))
        .filter(|parent| match folder {
            Folder::Other(path) => parent == path,
            standard => json::standard_folder_named(parent).as_ref() == Some(standard),
        })
        .count();
    (total, unread, children)
}

fn mailbox_of<'s>(
    state: &'s LabState,
    t: TenantIdx,
    mailbox: &str,
) -> Result<&'s Mailbox, Response> {
    state.tenants[t].mailboxes.get(mailbox).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )
    })
}

/// The copy `id` (regular or immutable), visible to Graph (not purged) and, when a folder is
/// named, in that folder.
fn visible_copy<'s>(
    state: &'s LabState,
    t: TenantIdx,
    mailbox: &str,
    folder_key: Option<&str>,
    id: &str,
) -> Result<&'s Copy, Response> {
    let mb = mailbox_of(state, t, mailbox)?;
    let copy = mb
        .get(id)
        .filter(|c| c.folder != Folder::Purged)
        .ok_or_else(item_not_found)?;
    if let Some(key) = folder_key {
        let folder = resolve_folder(mailbox, mb, key).ok_or_else(folder_not_found)?;
        if copy.folder != folder {
            return Err(item_not_found());
        }
    }
    Ok(copy)
}

/// A compiled message filter.
enum MessageFilter {
    MessageId(String),
    Conversation(String),
    Received(Clause, chrono::DateTime<chrono::Utc>),
}

fn message_filters(text: &str) -> Result<Vec<MessageFilter>, Response> {
    let invalid = |why: String| bad_request(&format!("Invalid filter clause: {why}"));
    let clauses = filter::parse(text).map_err(|e| invalid(e.0))?;
    clauses
        .into_iter()
        .map(|c| match c.property.to_ascii_lowercase().as_str() {
            "internetmessageid" if c.op == filter::Op::Eq => Ok(MessageFilter::MessageId(once_more_decoded(c.value))),
            "conversationid" if c.op == filter::Op::Eq => Ok(MessageFilter::Conversation(c.value)),
            "receiveddatetime" => {
                let when = c.date().ok_or_else(|| invalid(format!("{:?} is not a date-time", c.value)))?;
                Ok(MessageFilter::Received(c, when))
            }
            _ => Err(invalid(format!(
                "the lab filters messages on internetMessageId eq, conversationId eq and receivedDateTime ge/gt/le/lt/eq, not {:?}",
                c.property
            ))),
        })
        .collect()
}

/// A double-encoded literal (`'%3Cid@x%3E'` after the URL's own decoding) decoded once more,
/// as Graph does for callers that follow its "you may have to double-encode" advice.
fn once_more_decoded(value: String) -> String {
    if !value.contains('%') {
        return value;
    }
    percent_encoding::percent_decode_str(&value)
        .decode_utf8()
        .map(|v| v.into_owned())
        .unwrap_or(value)
}

fn matches(copy: &Copy, filters: &[MessageFilter]) -> bool {
    filters.iter().all(|f| match f {
        MessageFilter::MessageId(id) => copy.content.internet_message_id.eq_ignore_ascii_case(id),
        MessageFilter::Conversation(id) => {
            graph_conversation_id(&copy.content.conversation_key) == *id
        }
        MessageFilter::Received(c, when) => c.compare(&copy.received, when),
    })
}

fn check_select(select: Option<&[String]>) -> Result<(), Response> {
    for p in select.unwrap_or_default() {
        if !json::MESSAGE_PROPERTIES
            .iter()
            .any(|k| k.eq_ignore_ascii_case(p))
        {
            return Err(bad_request(&format!(
                "Could not find a property named '{p}' on type 'microsoft.graph.message'."
            )));
        }
    }
    Ok(())
}

/// `GET /users/{u}/messages` and `GET /users/{u}/mailFolders/{f}/messages`
pub async fn list_messages(
    State(lab): State<SharedLab>,
    Path(params): Path<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let user = params.get("user").cloned().unwrap_or_default();
    let folder_key = params.get("folder").cloned();
    let query = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let filters = match query.filter.as_deref().map(message_filters).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(r) => return r,
    };
    if let Err(r) = check_select(query.select.as_deref()) {
        return r;
    }
    let size = match query.page_size(10, 1000) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let req = match begin(&lab, &headers, &user, false).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (page, next) = {
        let state = lab.state();
        let mb = match mailbox_of(&state, req.caller.t, &req.mailbox) {
            Ok(m) => m,
            Err(r) => return r,
        };
        let folder = match &folder_key {
            Some(k) => match resolve_folder(&req.mailbox, mb, k) {
                Some(f) => Some(f),
                None => return folder_not_found(),
            },
            None => None,
        };
        let mut hits: Vec<&Copy> = mb
            .copies
            .values()
            .filter(|c| match &folder {
                Some(f) => c.folder == *f,
                None => !matches!(c.folder, Folder::RecoverableDeletions | Folder::Purged),
            })
            .filter(|c| matches(c, &filters))
            .collect();
        hits.sort_by(|a, b| b.received.cmp(&a.received).then_with(|| a.id.cmp(&b.id)));
        let path = match &folder_key {
            Some(f) => format!("/users/{user}/mailFolders/{f}/messages"),
            None => format!("/users/{user}/messages"),
        };
        let (range, next) = query.page(&lab, &path, hits.len(), size);
        let page: Vec<Copy> = hits[range].iter().map(|c| req.shown(c)).collect();
        (page, next)
    };
    let select = query.select.as_deref();
    let value = page
        .iter()
        .map(|c| json::message(c, &req.mailbox, select))
        .collect();
    let mut fragment = format!("users('{user}')/messages");
    if let Some(s) = select {
        fragment.push_str(&format!("({})", s.join(",")));
    }
    collection(context(&lab, &fragment), value, next)
}

/// `GET /users/{u}/mailFolders/{f}`
pub async fn get_folder(
    State(lab): State<SharedLab>,
    Path((user, folder_key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let req = match begin(&lab, &headers, &user, false).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let state = lab.state();
    let mb = match mailbox_of(&state, req.caller.t, &req.mailbox) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let Some(folder) = resolve_folder(&req.mailbox, mb, &folder_key) else {
        return folder_not_found();
    };
    let mut body = json::mail_folder(&req.mailbox, &folder, folder_counts(mb, &folder));
    body["@odata.context"] = json!(context(
        &lab,
        &format!("users('{user}')/mailFolders/$entity")
    ));
    ok_json(StatusCode::OK, body)
}

/// Authenticates a read of one message and returns a snapshot of its copy.
async fn fetch_copy<'a>(
    lab: &'a SharedLab,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(MailRequest<'a>, Copy), Response> {
    let (user, folder, id) = ids(params);
    let req = begin(lab, headers, &user, false).await?;
    let copy = {
        let state = lab.state();
        req.shown(visible_copy(
            &state,
            req.caller.t,
            &req.mailbox,
            folder.as_deref(),
            &id,
        )?)
    };
    Ok((req, copy))
}

/// `GET …/messages/{id}`
pub async fn get_message(
    State(lab): State<SharedLab>,
    Path(params): Path<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let user = params.get("user").cloned().unwrap_or_default();
    let query = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(r) => return r,
    };
    if let Err(r) = check_select(query.select.as_deref()) {
        return r;
    }
    let (req, copy) = match fetch_copy(&lab, &headers, &params).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut body = json::message(&copy, &req.mailbox, query.select.as_deref());
    body["@odata.context"] = json!(context(&lab, &format!("users('{user}')/messages/$entity")));
    ok_json(StatusCode::OK, body)
}

fn ids(params: &HashMap<String, String>) -> (String, Option<String>, String) {
    (
        params.get("user").cloned().unwrap_or_default(),
        params.get("folder").cloned(),
        params.get("id").cloned().unwrap_or_default(),
    )
}

/// Moves a visible copy (new regular id, same immutable id) and records the action; maps
/// lookups to Graph errors.
fn relocate(
    lab: &SharedLab,
    req: &MailRequest<'_>,
    folder_key: Option<&str>,
    id: &str,
    to: Folder,
    action: &str,
) -> Result<Copy, Response> {
    let mut state = lab.state();
    let from = visible_copy(&state, req.caller.t, &req.mailbox, folder_key, id)?
        .folder
        .clone();
    if action == "delete" && from == Folder::RecoverableDeletions {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "ErrorCannotDeleteObject",
            "Object cannot be deleted.",
        ));
    }
    // A mailbox on hold does not refuse `permanentDelete`: Graph answers 204, the item leaves
    // the user's view and the hold keeps it in Recoverable Items\Purges for eDiscovery
    // (PROVIDER-APIS.md §F.3). `/_lab/` shows such a copy as `retained_by_hold`.
    state
        .move_copy(req.caller.t, &req.mailbox, id, to, action, false)
        .map_err(|l| match l {
            Lookup::NoSuchMailbox => error(
                StatusCode::NOT_FOUND,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            ),
            _ => item_not_found(),
        })
}

fn no_content() -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// `DELETE …/messages/{id}`: a soft delete into Recoverable Items\Deletions (PROVIDER-APIS.md A.3).
pub async fn delete_message(
    State(lab): State<SharedLab>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (user, folder, id) = ids(&params);
    let req = match begin(&lab, &headers, &user, true).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match relocate(
        &lab,
        &req,
        folder.as_deref(),
        &id,
        Folder::RecoverableDeletions,
        "delete",
    ) {
        Ok(_) => no_content(),
        Err(r) => r,
    }
}

/// `POST …/messages/{id}/move` and `…/permanentDelete` (also `microsoft.graph.`-qualified).
pub async fn message_action(
    State(lab): State<SharedLab>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (user, folder, id) = ids(&params);
    let action = params.get("action").cloned().unwrap_or_default();
    let action = action
        .strip_prefix("microsoft.graph.")
        .unwrap_or(&action)
        .to_string();
    match action.as_str() {
        "move" => move_message(lab, headers, user, folder, id, body).await,
        "permanentDelete" => {
            let req = match begin(&lab, &headers, &user, true).await {
                Ok(r) => r,
                Err(r) => return r,
            };
            // Graph offers permanentDelete in the global service only.
            if !lab.state().tenants[req.caller.t]
                .cloud
                .offers_permanent_delete()
            {
                return bad_request("Resource not found for the segment 'permanentDelete'.");
            }
            match relocate(
                &lab,
                &req,
                folder.as_deref(),
                &id,
                Folder::Purged,
                "permanentDelete",
            ) {
                Ok(_) => no_content(),
                Err(r) => r,
            }
        }
        other => bad_request(&format!("Resource not found for the segment '{other}'.")),
    }
}

async fn move_message(
    lab: SharedLab,
    headers: HeaderMap,
    user: String,
    folder: Option<String>,
    id: String,
    body: Bytes,
) -> Response {
    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&body);
    let destination = match &parsed {
        Ok(v) => v
            .get("destinationId")
            .or_else(|| v.get("DestinationId"))
            .and_then(|d| d.as_str())
            .map(str::to_string),
        Err(_) if body.is_empty() => None,
        Err(_) => {
            return bad_request(
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
            );
        }
    };
    let Some(destination) = destination.filter(|d| !d.trim().is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidParameter",
            "The value of the parameter 'DestinationId' is empty or missing.",
        );
    };
    let req = match begin(&lab, &headers, &user, true).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let to = {
        let state = lab.state();
        let mb = match mailbox_of(&state, req.caller.t, &req.mailbox) {
            Ok(m) => m,
            Err(r) => return r,
        };
        resolve_folder(&req.mailbox, mb, &destination)
    };
    let Some(to) = to else {
        return folder_not_found();
    };
    let action = format!("move:{}", to.graph_name());
    match relocate(&lab, &req, folder.as_deref(), &id, to, &action) {
        Ok(copy) => {
            let mut body = json::message(&req.shown(&copy), &req.mailbox, None);
            body["@odata.context"] =
                json!(context(&lab, &format!("users('{user}')/messages/$entity")));
            ok_json(StatusCode::CREATED, body)
        }
        Err(r) => r,
    }
}

/// `GET …/messages/{id}/attachments`: file attachments with base64 `contentBytes`.
pub async fn attachments(
    State(lab): State<SharedLab>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (user, _, id) = ids(&params);
    let (_req, copy) = match fetch_copy(&lab, &headers, &params).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let value = copy
        .content
        .attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({
                "@odata.type": "#microsoft.graph.fileAttachment",
                "id": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}#{i}", copy.id)),
                "lastModifiedDateTime": json::date(&copy.received),
                "name": a.name,
                "contentType": a.content_type,
                "size": a.bytes.len(),
                "isInline": false,
                "contentId": null,
                "contentLocation": null,
                "contentBytes": b64.encode(&a.bytes),
            })
        })
        .collect();
    collection(
        context(
            &lab,
            &format!("users('{user}')/messages('{id}')/attachments"),
        ),
        value,
        None,
    )
}

/// `GET …/messages/{id}/$value`: the MIME text.
pub async fn raw_value(
    State(lab): State<SharedLab>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (_req, copy) = match fetch_copy(&lab, &headers, &params).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut r = Response::new(axum::body::Body::from(copy.content.raw.clone()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}
