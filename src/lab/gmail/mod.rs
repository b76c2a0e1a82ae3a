//! The lab's Gmail API v1 face (PROVIDER-APIS.md B.1–B.5): the `users.messages` and
//! `users.threads.get` methods clawback uses, with Gmail's label model mapped onto the lab's
//! folders, per-user quota units and concurrency, scopes per method as in the discovery
//! document, and the HTTP batch endpoint ([`batch`]).
//!
//! Gmail ids never change: every mutation keeps the copy's id and records the action in the
//! lab state for `/_lab/`.

// Handler helpers return the finished error response; boxing it would only add noise.
#![allow(clippy::result_large_err)]

pub mod batch;
pub mod history;
pub mod query;

use super::errors;
use super::limits::{MailboxGuard, Throttle, ThrottleKind};
use super::oauth_google::{check_bearer, insufficient_scopes};
use super::state::{Copy, LabState, Placement, TenantIdx, gmail_thread_id};
use super::{Lab, SharedLab};
use crate::model::Folder;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use query::Query;
use serde::Deserialize;
use serde_json::{Value, json};

/// A handler's answer: both arms are finished responses (the error arm lets `?` short-cut).
type Reply = Result<Response, Response>;

/// Full mailbox access; the only scope `delete` and `batchDelete` accept.
pub const SCOPE_FULL: &str = "https://mail.google.com/";
pub const SCOPE_MODIFY: &str = "https://www.googleapis.com/auth/gmail.modify";
pub const SCOPE_READONLY: &str = "https://www.googleapis.com/auth/gmail.readonly";
pub const SCOPE_METADATA: &str = "https://www.googleapis.com/auth/gmail.metadata";

const READ_SCOPES: &[&str] = &[SCOPE_FULL, SCOPE_MODIFY, SCOPE_READONLY, SCOPE_METADATA];
const WRITE_SCOPES: &[&str] = &[SCOPE_FULL, SCOPE_MODIFY];
const DELETE_SCOPES: &[&str] = &[SCOPE_FULL];

/// Every route this module serves: (HTTP method, path template as in the discovery document).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/gmail/v1/users/{userId}/messages"),
    ("GET", "/gmail/v1/users/{userId}/messages/{id}"),
    ("DELETE", "/gmail/v1/users/{userId}/messages/{id}"),
    ("POST", "/gmail/v1/users/{userId}/messages/{id}/modify"),
    ("POST", "/gmail/v1/users/{userId}/messages/{id}/trash"),
    ("POST", "/gmail/v1/users/{userId}/messages/{id}/untrash"),
    ("POST", "/gmail/v1/users/{userId}/messages/batchModify"),
    ("POST", "/gmail/v1/users/{userId}/messages/batchDelete"),
    ("GET", "/gmail/v1/users/{userId}/threads/{id}"),
    ("GET", "/gmail/v1/users/{userId}/history"),
    ("GET", "/gmail/v1/users/{userId}/profile"),
];

/// HTTP batch paths: the discovery document's `batchPath` and the guide's per-API path.
pub const BATCH_ROUTES: &[(&str, &str)] = &[("POST", "/batch"), ("POST", "/batch/gmail/v1")];

/// Quota units per method (PROVIDER-APIS.md B.4).
pub mod units {
    pub const LIST: u32 = 5;
    pub const GET: u32 = 5;
    pub const MODIFY: u32 = 5;
    pub const TRASH: u32 = 5;
    pub const UNTRASH: u32 = 5;
    pub const DELETE: u32 = 10;
    pub const BATCH_MODIFY: u32 = 50;
    pub const BATCH_DELETE: u32 = 50;
    pub const THREADS_GET: u32 = 10;
    pub const HISTORY_LIST: u32 = 2;
    pub const GET_PROFILE: u32 = 1;
}

/// Most label ids per `addLabelIds` / `removeLabelIds` list.
pub const MAX_LABEL_CHANGES: usize = 100;
/// Most ids per `batchModify` / `batchDelete`.
pub const MAX_BATCH_IDS: usize = 1000;
/// `messages.list` page size: default and maximum.
pub const LIST_DEFAULT: usize = 100;
pub const LIST_MAX: usize = 500;

/// The Gmail routes, including HTTP batch.
pub fn routes() -> Router<SharedLab> {
    let m = "/gmail/v1/users/{userId}/messages";
    Router::new()
        .route(m, get(list))
        .route(&format!("{m}/{{id}}"), get(get_message).delete(delete_one))
        .route(&format!("{m}/{{id}}/modify"), post(modify))
        .route(&format!("{m}/{{id}}/trash"), post(trash))
        .route(&format!("{m}/{{id}}/untrash"), post(untrash))
        .route(&format!("{m}/batchModify"), post(batch_modify))
        .route(&format!("{m}/batchDelete"), post(batch_delete))
        .route("/gmail/v1/users/{userId}/threads/{id}", get(thread))
        .route("/gmail/v1/users/{userId}/history", get(history::list))
        .route("/gmail/v1/users/{userId}/profile", get(history::profile))
        .route("/batch", post(batch::handle))
        .route("/batch/gmail/v1", post(batch::handle))
}

fn not_found_now() -> Response {
    errors::google(
        StatusCode::NOT_FOUND,
        "notFound",
        "global",
        "Requested entity was not found.",
    )
}

fn invalid_argument(message: &str) -> Response {
    errors::google(
        StatusCode::BAD_REQUEST,
        "invalidArgument",
        "global",
        message,
    )
}

/// A message or thread id Gmail can parse: its ids are 64-bit numbers in hex (16 digits in
/// practice). Anything else (a Graph id, a cut-off or padded one) is `400 invalidArgument`
/// "Invalid id value", not `404 notFound` (PROVIDER-APIS.md §F.3): only a well-formed id of no
/// message is "not found", which a client reads as "already gone".
pub fn well_formed_id(id: &str) -> bool {
    (1..=16).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_id(id: &str) -> Result<(), Response> {
    if well_formed_id(id) {
        Ok(())
    } else {
        Err(invalid_argument("Invalid id value"))
    }
}

fn failed_precondition() -> Response {
    errors::google(
        StatusCode::BAD_REQUEST,
        "failedPrecondition",
        "global",
        "Precondition check failed.",
    )
}

/// The mailbox a call acts on, after every check passed.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantIdx,
    /// Lowercased address of the impersonated user.
    pub mailbox: String,
    /// The token holds only `gmail.metadata` among the read scopes.
    pub metadata_only: bool,
}

/// Authenticates and authorizes a call on `users/{user_id}` (no quota spent yet).
pub fn authorize(
    lab: &Lab,
    headers: &HeaderMap,
    user_id: &str,
    accepted: &[&str],
) -> Result<Caller, Response> {
    let caller = check_bearer(lab, headers)?;
    if !caller.has_any_scope(accepted) {
        return Err(insufficient_scopes());
    }
    let Some(sub) = caller.claims.sub.clone() else {
        return Err(failed_precondition());
    };
    let sub = sub.to_ascii_lowercase();
    if user_id != "me" && !user_id.eq_ignore_ascii_case(&sub) {
        return Err(errors::google(
            StatusCode::FORBIDDEN,
            "forbidden",
            "global",
            &format!("Delegation denied for {sub}"),
        ));
    }
    let state = lab.state();
    let tenant = &state.tenants[caller.tenant];
    let has_mailbox =
        tenant.user(&sub).is_some_and(|u| u.has_mailbox) && tenant.mailboxes.contains_key(&sub);
    if !has_mailbox {
        return Err(failed_precondition());
    }
    if !tenant.mailbox_granted(&sub) {
        return Err(errors::google(
            StatusCode::FORBIDDEN,
            "domainPolicy",
            "global",
            "The domain administrators have disabled Gmail apps.",
        ));
    }
    let metadata_only = !caller.has_any_scope(&[SCOPE_FULL, SCOPE_MODIFY, SCOPE_READONLY]);
    Ok(Caller {
        tenant: caller.tenant,
        mailbox: sub,
        metadata_only,
    })
}

/// The Google response for a refusal by one of the lab's limits.
pub fn throttled(lab: &Lab, throttle: &Throttle) -> Response {
    lab.note_throttle(throttle);
    match throttle.kind {
        ThrottleKind::GmailUserQuota => errors::google_throttled(
            StatusCode::FORBIDDEN,
            "userRateLimitExceeded",
            "User Rate Limit Exceeded",
            None,
        ),
        ThrottleKind::GmailConcurrency => errors::google_throttled(
            StatusCode::TOO_MANY_REQUESTS,
            "rateLimitExceeded",
            "Too many concurrent requests for user",
            Some(throttle.retry_after_secs),
        ),
        _ => errors::google_throttled(
            StatusCode::TOO_MANY_REQUESTS,
            "rateLimitExceeded",
            "Rate Limit Exceeded",
            Some(throttle.retry_after_secs),
        ),
    }
}

/// Authorizes, spends `units` of the user's quota, enters their concurrency limit and holds a
/// service slot for one service time. The guard keeps the concurrency place until dropped.
pub async fn enter<'a>(
    lab: &'a Lab,
    headers: &HeaderMap,
    user_id: &str,
    accepted: &[&str],
    units: u32,
) -> Result<(Caller, MailboxGuard<'a>), Response> {
    let caller = authorize(lab, headers, user_id, accepted)?;
    let guard = lab
        .limits
        .enter_gmail_user(caller.tenant, &caller.mailbox, units)
        .map_err(|t| throttled(lab, &t))?;
    if let Err(t) = lab.limits.serve(caller.tenant).await {
        return Err(throttled(lab, &t));
    }
    Ok((caller, guard))
}

/// Gmail labels of a copy: its folder's system label, `UNREAD`, then its extra labels.
pub fn labels_of(copy: &Copy) -> Vec<String> {
    labels_at(&Placement::of(copy))
}

/// Gmail labels of a copy where a mailbox change put it.
pub fn labels_at(copy: &Placement) -> Vec<String> {
    let mut out = Vec::new();
    let folder_label = match &copy.folder {
        Folder::Inbox => Some("INBOX"),
        Folder::Junk => Some("SPAM"),
        Folder::Trash => Some("TRASH"),
        Folder::SentItems => Some("SENT"),
        Folder::Drafts => Some("DRAFT"),
        _ => None,
    };
    if let Some(l) = folder_label {
        out.push(l.to_string());
    }
    if !copy.read {
        out.push("UNREAD".to_string());
    }
    for l in &copy.extra_labels {
        if !out.contains(l) {
            out.push(l.clone());
        }
    }
    out
}

/// Whether the Gmail API still shows this copy (permanently deleted copies are gone).
pub fn visible(copy: &Copy) -> bool {
    !matches!(copy.folder, Folder::Purged | Folder::RecoverableDeletions)
}

const FOLDER_LABELS: &[&str] = &["INBOX", "SPAM", "TRASH", "SENT", "DRAFT", "UNREAD"];
const APPLICABLE_SYSTEM_LABELS: &[&str] = &[
    "INBOX",
    "SPAM",
    "TRASH",
    "UNREAD",
    "STARRED",
    "IMPORTANT",
    "CATEGORY_PERSONAL",
    "CATEGORY_SOCIAL",
    "CATEGORY_PROMOTIONS",
    "CATEGORY_UPDATES",
    "CATEGORY_FORUMS",
];

/// Checks label ids of a modify request.
fn check_label_changes(add: &[String], remove: &[String]) -> Result<(), Response> {
    if add.len() > MAX_LABEL_CHANGES || remove.len() > MAX_LABEL_CHANGES {
        return Err(invalid_argument(&format!(
            "Too many label ids: at most {MAX_LABEL_CHANGES} may be added or removed at once."
        )));
    }
    for l in add.iter().chain(remove) {
        if !APPLICABLE_SYSTEM_LABELS.contains(&l.as_str()) && !l.starts_with("Label_") {
            return Err(invalid_argument(&format!("Invalid label: {l}")));
        }
    }
    Ok(())
}

/// Applies label changes to a copy: the label set decides the folder (TRASH > SPAM > INBOX >
/// SENT > DRAFT > archive; a copy in a user folder stays there), UNREAD decides read.
fn apply_labels(copy: &mut Copy, add: &[String], remove: &[String]) {
    let mut set = labels_of(copy);
    set.retain(|l| !remove.contains(l));
    for l in add {
        if !set.contains(l) {
            set.push(l.clone());
        }
    }
    let has = |l: &str| set.iter().any(|x| x == l);
    copy.folder = if has("TRASH") {
        Folder::Trash
    } else if has("SPAM") {
        Folder::Junk
    } else if has("INBOX") {
        Folder::Inbox
    } else if has("SENT") {
        Folder::SentItems
    } else if has("DRAFT") {
        Folder::Drafts
    } else if let Folder::Other(name) = &copy.folder {
        Folder::Other(name.clone())
    } else {
        Folder::Archive
    };
    copy.read = !has("UNREAD");
    copy.extra_labels = set
        .iter()
        .filter(|l| !FOLDER_LABELS.contains(&l.as_str()))
        .cloned()
        .collect();
}

/// Changes one visible copy and records `action`; the id stays.
fn mutate(
    state: &mut LabState,
    t: TenantIdx,
    mailbox: &str,
    id: &str,
    action: &str,
    change: impl FnOnce(&mut Copy),
) -> Option<Copy> {
    let copy = state.copy_mut(t, mailbox, id).ok().filter(|c| visible(c))?;
    let before = Placement::of(copy);
    change(copy);
    let mut after = copy.clone();
    state.record_change(t, mailbox, &after, action, before);
    after.changed = state.change_seq();
    Some(after)
}

/// `historyId` of a copy: the journal sequence number of its last change (mail loaded with
/// the scenario: 0), offset so that ids look like Gmail's and never read 0.
fn history_id(copy: &Copy) -> String {
    (HISTORY_ID_BASE + copy.changed).to_string()
}

/// Added to journal sequence numbers to make Gmail history ids.
pub const HISTORY_ID_BASE: u64 = 1000;

/// `messages.get` / `threads.get` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Minimal,
    Metadata,
    Raw,
    Full,
}

impl Format {
    fn parse(v: Option<&str>) -> Result<Format, Response> {
        match v.map(str::to_ascii_lowercase).as_deref() {
            None | Some("full") => Ok(Format::Full),
            Some("minimal") => Ok(Format::Minimal),
            Some("metadata") => Ok(Format::Metadata),
            Some("raw") => Ok(Format::Raw),
            Some(other) => Err(invalid_argument(&format!(
                "Invalid value at 'format' ({other}): expected minimal, full, raw or metadata"
            ))),
        }
    }
}

/// Query parameters as pairs (repeated parameters such as `labelIds` and `metadataHeaders`).
fn params(raw: Option<String>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn param_all(params: &[(String, String)], name: &str) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter(|v| !v.is_empty())
        .collect()
}

fn bool_param(params: &[(String, String)], name: &str) -> Result<bool, Response> {
    match param(params, name) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
        Some(v) => Err(invalid_argument(&format!(
            "Invalid value for boolean parameter {name}: {v}"
        ))),
    }
}

/// `GET …/messages`
async fn list(
    State(lab): State<SharedLab>,
    Path(user_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Reply {
    let (caller, _guard) = enter(&lab, &headers, &user_id, READ_SCOPES, units::LIST).await?;
    let params = params(raw);
    let q = param(&params, "q").unwrap_or("");
    if caller.metadata_only && !q.is_empty() {
        return Err(errors::google(
            StatusCode::FORBIDDEN,
            "forbidden",
            "global",
            "Metadata scope does not support 'q' parameter",
        ));
    }
    let query = match Query::parse(q) {
        Ok(v) => v,
        Err(e) => return Err(invalid_argument(&e)),
    };
    let include_spam_trash = bool_param(&params, "includeSpamTrash")? || query.reaches_spam_trash();
    let max = match param(&params, "maxResults").map(str::parse::<usize>) {
        None => LIST_DEFAULT,
        Some(Ok(n)) => n.clamp(1, LIST_MAX),
        Some(Err(_)) => return Err(invalid_argument("Invalid value for maxResults")),
    };
    let offset = match param(&params, "pageToken").filter(|s| !s.is_empty()) {
        None => 0,
        Some(tok) => match tok.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return Err(invalid_argument("Invalid pageToken")),
        },
    };
    let label_filter = param_all(&params, "labelIds");
    let state = lab.state();
    let Some(mb) = state.tenants[caller.tenant].mailboxes.get(&caller.mailbox) else {
        return Err(failed_precondition());
    };
    let mut hits: Vec<&Copy> = mb
        .copies
        .values()
        .filter(|c| visible(c))
        .filter(|c| {
            let labels = labels_of(c);
            (include_spam_trash || !labels.iter().any(|l| l == "SPAM" || l == "TRASH"))
                && label_filter.iter().all(|f| labels.contains(f))
                && query.matches(c, &labels, &caller.mailbox)
        })
        .collect();
    hits.sort_by(|a, b| b.received.cmp(&a.received).then_with(|| b.id.cmp(&a.id)));
    let total = hits.len();
    let page: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(max)
        .map(|c| {
            json!({
                "id": c.id,
                "threadId": gmail_thread_id(&c.content.conversation_key, &caller.mailbox),
            })
        })
        .collect();
    let mut body = json!({ "resultSizeEstimate": total });
    if !page.is_empty() {
        body["messages"] = Value::Array(page);
    }
    if offset + max < total {
        body["nextPageToken"] = json!((offset + max).to_string());
    }
    Ok(axum::Json(body).into_response())
}

/// `GET …/messages/{id}`
async fn get_message(
    State(lab): State<SharedLab>,
    Path((user_id, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Reply {
    let (caller, _guard) = enter(&lab, &headers, &user_id, READ_SCOPES, units::GET).await?;
    check_id(&id)?;
    let params = params(raw);
    let format = Format::parse(param(&params, "format"))?;
    if let Some(r) = metadata_scope_refusal(&caller, format) {
        return Err(r);
    }
    let wanted = param_all(&params, "metadataHeaders");
    let state = lab.state();
    match state
        .copy(caller.tenant, &caller.mailbox, &id)
        .ok()
        .filter(|c| visible(c))
    {
        Some(c) => {
            let h = history_id(c);
            Ok(axum::Json(message_json(c, &caller.mailbox, format, &wanted, &h)).into_response())
        }
        None => Err(not_found_now()),
    }
}

fn metadata_scope_refusal(caller: &Caller, format: Format) -> Option<Response> {
    if caller.metadata_only && matches!(format, Format::Full | Format::Raw) {
        let name = if format == Format::Full {
            "FULL"
        } else {
            "RAW"
        };
        return Some(errors::google(
            StatusCode::FORBIDDEN,
            "forbidden",
            "global",
            &format!("Metadata scope doesn't allow format {name}"),
        ));
    }
    None
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ModifyRequest {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    add_label_ids: Vec<String>,
    #[serde(default)]
    remove_label_ids: Vec<String>,
    /// Accepted and ignored (classification labels are not modelled).
    #[serde(default, rename = "addClassificationLabels")]
    _add_classification: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "removeClassificationLabelIds")]
    _remove_classification: Option<serde::de::IgnoredAny>,
}

fn parse_body(body: &Bytes) -> Result<ModifyRequest, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ModifyRequest::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| invalid_argument(&format!("Invalid JSON payload received. {e}")))
}

/// `POST …/messages/{id}/modify`
async fn modify(
    State(lab): State<SharedLab>,
    Path((user_id, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let (caller, _guard) = enter(&lab, &headers, &user_id, WRITE_SCOPES, units::MODIFY).await?;
    check_id(&id)?;
    let req = parse_body(&body)?;
    if !req.ids.is_empty() {
        return Err(invalid_argument(
            "Invalid JSON payload received. Unknown name \"ids\": Cannot find field.",
        ));
    }
    check_label_changes(&req.add_label_ids, &req.remove_label_ids)?;
    let mut state = lab.state();
    match mutate(
        &mut state,
        caller.tenant,
        &caller.mailbox,
        &id,
        "modify",
        |c| apply_labels(c, &req.add_label_ids, &req.remove_label_ids),
    ) {
        Some(c) => {
            let h = history_id(&c);
            Ok(
                axum::Json(message_json(&c, &caller.mailbox, Format::Minimal, &[], &h))
                    .into_response(),
            )
        }
        None => Err(not_found_now()),
    }
}

/// `POST …/messages/{id}/trash`
async fn trash(
    State(lab): State<SharedLab>,
    Path((user_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    move_one(&lab, &headers, &user_id, &id, units::TRASH, "trash").await
}

/// `POST …/messages/{id}/untrash`
async fn untrash(
    State(lab): State<SharedLab>,
    Path((user_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    move_one(&lab, &headers, &user_id, &id, units::UNTRASH, "untrash").await
}

async fn move_one(
    lab: &Lab,
    headers: &HeaderMap,
    user_id: &str,
    id: &str,
    cost: u32,
    action: &str,
) -> Reply {
    let (caller, _guard) = enter(lab, headers, user_id, WRITE_SCOPES, cost).await?;
    check_id(id)?;
    let mut state = lab.state();
    let mailbox = caller.mailbox.clone();
    let untrash = action == "untrash";
    match mutate(&mut state, caller.tenant, &mailbox, id, action, |c| {
        if !untrash {
            c.folder = Folder::Trash;
        } else if c.folder == Folder::Trash {
            c.folder = if c.content.from.eq_ignore_ascii_case(&mailbox) {
                Folder::SentItems
            } else {
                Folder::Inbox
            };
        }
    }) {
        Some(c) => {
            let h = history_id(&c);
            Ok(axum::Json(message_json(&c, &mailbox, Format::Minimal, &[], &h)).into_response())
        }
        None => Err(not_found_now()),
    }
}

/// `DELETE …/messages/{id}`: permanent (the copy goes to `Purged`); 204.
async fn delete_one(
    State(lab): State<SharedLab>,
    Path((user_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    let (caller, _guard) = enter(&lab, &headers, &user_id, DELETE_SCOPES, units::DELETE).await?;
    check_id(&id)?;
    let mut state = lab.state();
    match mutate(
        &mut state,
        caller.tenant,
        &caller.mailbox,
        &id,
        "delete",
        |c| c.folder = Folder::Purged,
    ) {
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        None => Err(not_found_now()),
    }
}

fn check_ids(req: &ModifyRequest) -> Result<(), Response> {
    if req.ids.is_empty() {
        return Err(invalid_argument("ids must not be empty"));
    }
    if req.ids.len() > MAX_BATCH_IDS {
        // Gmail's own words (PROVIDER-APIS.md §F.3).
        return Err(invalid_argument(&format!(
            "Number of ids cannot exceed {MAX_BATCH_IDS}"
        )));
    }
    Ok(())
}

/// `POST …/messages/batchModify`: unknown ids are ignored; 204.
async fn batch_modify(
    State(lab): State<SharedLab>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let (caller, _guard) =
        enter(&lab, &headers, &user_id, WRITE_SCOPES, units::BATCH_MODIFY).await?;
    let req = parse_body(&body)?;
    check_ids(&req)?;
    check_label_changes(&req.add_label_ids, &req.remove_label_ids)?;
    let mut state = lab.state();
    for id in &req.ids {
        mutate(
            &mut state,
            caller.tenant,
            &caller.mailbox,
            id,
            "modify",
            |c| apply_labels(c, &req.add_label_ids, &req.remove_label_ids),
        );
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST …/messages/batchDelete`: permanent; unknown ids are ignored; 204.
async fn batch_delete(
    State(lab): State<SharedLab>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let (caller, _guard) =
        enter(&lab, &headers, &user_id, DELETE_SCOPES, units::BATCH_DELETE).await?;
    let req = parse_body(&body)?;
    check_ids(&req)?;
    let mut state = lab.state();
    for id in &req.ids {
        mutate(
            &mut state,
            caller.tenant,
            &caller.mailbox,
            id,
            "delete",
            |c| c.folder = Folder::Purged,
        );
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET …/threads/{id}`: the visible copies of one conversation in this mailbox, oldest first.
async fn thread(
    State(lab): State<SharedLab>,
    Path((user_id, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Reply {
    let (caller, _guard) = enter(&lab, &headers, &user_id, READ_SCOPES, units::THREADS_GET).await?;
    check_id(&id)?;
    let params = params(raw);
    let format = match Format::parse(param(&params, "format")) {
        Ok(Format::Raw) => return Err(invalid_argument("Invalid value at 'format' (raw)")),
        Ok(f) => f,
        Err(r) => return Err(r),
    };
    if let Some(r) = metadata_scope_refusal(&caller, format) {
        return Err(r);
    }
    let wanted = param_all(&params, "metadataHeaders");
    let state = lab.state();
    let Some(mb) = state.tenants[caller.tenant].mailboxes.get(&caller.mailbox) else {
        return Err(failed_precondition());
    };
    let mut copies: Vec<&Copy> = mb
        .copies
        .values()
        .filter(|c| {
            visible(c) && gmail_thread_id(&c.content.conversation_key, &caller.mailbox) == id
        })
        .collect();
    if copies.is_empty() {
        return Err(not_found_now());
    }
    copies.sort_by(|a, b| a.received.cmp(&b.received).then_with(|| a.id.cmp(&b.id)));
    let histories: Vec<String> = copies.iter().map(|c| history_id(c)).collect();
    let newest = histories
        .iter()
        .filter_map(|h| h.parse::<u64>().ok())
        .max()
        .unwrap_or(1000);
    let messages: Vec<Value> = copies
        .iter()
        .zip(&histories)
        .map(|(c, h)| message_json(c, &caller.mailbox, format, &wanted, h))
        .collect();
    Ok(
        axum::Json(json!({ "id": id, "historyId": newest.to_string(), "messages": messages }))
            .into_response(),
    )
}

/// The `Message` resource of a copy in the given format.
pub fn message_json(
    copy: &Copy,
    mailbox: &str,
    format: Format,
    metadata_headers: &[String],
    history_id: &str,
) -> Value {
    let content = &copy.content;
    let mut m = json!({
        "id": copy.id,
        "threadId": gmail_thread_id(&content.conversation_key, mailbox),
    });
    let labels = labels_of(copy);
    if !labels.is_empty() {
        m["labelIds"] = json!(labels);
    }
    m["snippet"] = json!(snippet(&content.body_text));
    m["sizeEstimate"] = json!(content.raw.len());
    m["historyId"] = json!(history_id);
    m["internalDate"] = json!(copy.received.timestamp_millis().to_string());
    match format {
        Format::Minimal => {}
        Format::Raw => {
            m["raw"] =
                json!(base64::engine::general_purpose::URL_SAFE.encode(content.raw.as_bytes()));
        }
        Format::Metadata | Format::Full => {
            if let Some(p) = payload(&content.raw, &copy.id, format, metadata_headers) {
                m["payload"] = p;
            }
        }
    }
    m
}

/// The first 200 characters of the text body, whitespace collapsed.
fn snippet(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(200).collect()
}

/// The `payload` (`MessagePart` tree) parsed from the RFC 5322 text.
fn payload(raw: &str, message_id: &str, format: Format, wanted: &[String]) -> Option<Value> {
    let parsed = mail_parser::MessageParser::default().parse(raw.as_bytes())?;
    let bytes = raw.as_bytes();
    if format == Format::Metadata {
        let root = parsed.part(0)?;
        let headers: Vec<Value> = part_headers(root, bytes)
            .into_iter()
            .filter(|(n, _)| wanted.is_empty() || wanted.iter().any(|w| w.eq_ignore_ascii_case(n)))
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect();
        return Some(json!({
            "partId": "",
            "mimeType": mime_type(root),
            "filename": "",
            "headers": headers,
        }));
    }
    Some(part_json(&parsed, bytes, 0, String::new(), message_id, 0))
}

fn part_json(
    msg: &mail_parser::Message<'_>,
    raw: &[u8],
    index: u32,
    part_id: String,
    message_id: &str,
    depth: usize,
) -> Value {
    use mail_parser::MimeHeaders;
    let Some(part) = msg.part(index) else {
        return json!({ "partId": part_id, "mimeType": "text/plain", "body": { "size": 0 } });
    };
    let headers: Vec<Value> = part_headers(part, raw)
        .into_iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect();
    let filename = part.attachment_name().unwrap_or("").to_string();
    let mut out = json!({
        "partId": part_id,
        "mimeType": mime_type(part),
        "filename": filename,
        "headers": headers,
    });
    if let Some(children) = part.sub_parts().filter(|_| depth < 16) {
        out["body"] = json!({ "size": 0 });
        let parts: Vec<Value> = children
            .iter()
            .enumerate()
            .map(|(n, child)| {
                let id = if part_id.is_empty() {
                    n.to_string()
                } else {
                    format!("{part_id}.{n}")
                };
                part_json(msg, raw, *child, id, message_id, depth + 1)
            })
            .collect();
        out["parts"] = Value::Array(parts);
    } else {
        let data = part.contents();
        if filename.is_empty() {
            out["body"] = json!({
                "size": data.len(),
                "data": base64::engine::general_purpose::URL_SAFE.encode(data),
            });
        } else {
            out["body"] = json!({
                "attachmentId": format!("ANGjdJ_{message_id}_{part_id}"),
                "size": data.len(),
            });
        }
    }
    out
}

fn mime_type(part: &mail_parser::MessagePart<'_>) -> String {
    use mail_parser::MimeHeaders;
    match part.content_type() {
        Some(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
            None => ct.ctype().to_ascii_lowercase(),
        },
        None => "text/plain".to_string(),
    }
}

/// A part's headers as written (name as in the text, value unfolded).
fn part_headers(part: &mail_parser::MessagePart<'_>, raw: &[u8]) -> Vec<(String, String)> {
    part.headers
        .iter()
        .map(|h| {
            let name = raw
                .get(h.offset_field as usize..h.offset_start as usize)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(|s| s.trim_end().trim_end_matches(':').trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| h.name.as_str().to_string());
            let value = raw
                .get(h.offset_start as usize..h.offset_end as usize)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let unfolded = value
                .split("\r\n")
                .flat_map(|l| l.split('\n'))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            (name, decode_words(&unfolded))
        })
        .collect()
}

/// Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`), as Gmail shows header values decoded.
fn decode_words(value: &str) -> String {
    if !value.contains("=?") {
        return value.to_string();
    }
    // mail-parser decodes encoded words in unstructured fields such as Subject.
    let carrier = format!("Subject: {value}\r\n\r\n");
    mail_parser::MessageParser::default()
        .parse(carrier.as_bytes())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn copy(folder: Folder, read: bool) -> Copy {
        let date = chrono::Utc::now();
        Copy {
            id: "abc".into(),
            immutable_id: "abc".into(),
            folder,
            read,
            extra_labels: vec!["STARRED".into()],
            received: date,
            changed: 0,
            content: Arc::new(crate::lab::state::MessageContent {
                internet_message_id: "<m@x>".into(),
                raw: "Message-ID: <m@x>\r\nSubject: hi\r\n\r\nbody\r\n".into(),
                subject: "hi".into(),
                from: "a@x".into(),
                from_name: "A".into(),
                to: vec![],
                cc: vec![],
                date,
                in_reply_to: None,
                references: vec![],
                conversation_key: "<m@x>".into(),
                body_text: "body".into(),
                has_attachments: false,
                attachments: vec![],
            }),
        }
    }

    #[test]
    fn label_set_decides_folder_and_read_state() {
        let mut c = copy(Folder::Inbox, false);
        assert_eq!(labels_of(&c), ["INBOX", "UNREAD", "STARRED"]);
        apply_labels(&mut c, &["SPAM".into()], &["INBOX".into()]);
        assert_eq!(c.folder, Folder::Junk);
        apply_labels(&mut c, &["TRASH".into()], &["UNREAD".into()]);
        assert_eq!((c.folder.clone(), c.read), (Folder::Trash, true));
        apply_labels(&mut c, &[], &["TRASH".into(), "SPAM".into()]);
        assert_eq!(c.folder, Folder::Archive);
        assert_eq!(c.extra_labels, ["STARRED"]);
        let mut sent = copy(Folder::SentItems, true);
        apply_labels(&mut sent, &[], &["INBOX".into()]);
        assert_eq!(sent.folder, Folder::SentItems);
    }

    #[test]
    fn formats_emit_the_right_fields() {
        let c = copy(Folder::Inbox, true);
        let min = message_json(&c, "a@x", Format::Minimal, &[], "1");
        assert!(min.get("payload").is_none() && min.get("raw").is_none());
        let meta = message_json(&c, "a@x", Format::Metadata, &["subject".into()], "1");
        assert_eq!(
            meta["payload"]["headers"],
            json!([{"name":"Subject","value":"hi"}])
        );
        let raw = message_json(&c, "a@x", Format::Raw, &[], "1");
        let bytes = base64::engine::general_purpose::URL_SAFE
            .decode(raw["raw"].as_str().expect("raw"))
            .expect("b64");
        assert_eq!(bytes, c.content.raw.as_bytes());
        assert_eq!(
            decode_words("=?utf-8?b?R3LDvMOfZQ==?= <a@x>"),
            "Grüße <a@x>"
        );
        let full = message_json(&c, "a@x", Format::Full, &[], "1");
        assert_eq!(full["payload"]["mimeType"], "text/plain");
        assert!(full["payload"]["body"]["data"].is_string());
    }
}
