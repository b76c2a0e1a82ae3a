//! The lab's Microsoft Graph v1.0 face (PROVIDER-APIS.md A.1–A.8): mail (list with `$filter`,
//! get, move, delete, permanentDelete, attachments, `$value`, mail folders), directory (users,
//! groups with transitive members, domains) and JSON batching.
//!
//! Every request is checked like the real service does it: bearer token (audience, expiry), the
//! token's tenant, application roles (or delegated scopes), the mailbox (exists, is a mailbox,
//! its domain is granted to the app), the Outlook per-mailbox limits and the tenant's capacity.
//!
//! Mail requests may ask for immutable ids (`Prefer: IdType="ImmutableId"`, each request for
//! itself, also inside `$batch`): the ids they see then survive moves within the mailbox, and
//! the response says `Preference-Applied: IdType="ImmutableId"`. Either kind of id addresses a
//! message. A path Graph has no resource for is `400 BadRequest` "Resource not found for the
//! segment '…'" (PROVIDER-APIS.md §F.3), never a bare 404.

// Handlers return ready HTTP responses as their error type, the axum way; boxing them would
// only add noise.
#![allow(clippy::result_large_err)]

mod batch;
mod directory;
pub mod filter;
pub mod fixture;
pub mod json;
mod mail;
pub mod tracing;

use super::errors;
use super::limits::{MailboxGuard, Throttle};
use super::state::TenantIdx;
use super::tokens::{AccessClaims, TokenProblem};

/// Every cloud's Graph resource: tokens name the one of their tenant's cloud.
const GRAPH_AUDIENCES: [&str; 4] = [
    crate::config::Cloud::ALL[0].graph_host(),
    crate::config::Cloud::ALL[1].graph_host(),
    crate::config::Cloud::ALL[2].graph_host(),
    crate::config::Cloud::ALL[3].graph_host(),
];
use super::{Lab, SharedLab};
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;

/// The `Prefer` preference that asks for immutable ids, also the `Preference-Applied` answer.
pub const IMMUTABLE_ID_PREFERENCE: &str = "IdType=\"ImmutableId\"";

/// Every Graph route the lab serves, as (method, path template below `/v1.0`), in the
/// spec's spelling of parameters. The conformance test checks each against the reference spec.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/users"),
    ("GET", "/users/{user-id}"),
    ("GET", "/users/{user-id}/messages"),
    ("GET", "/users/{user-id}/messages/{message-id}"),
    ("DELETE", "/users/{user-id}/messages/{message-id}"),
    ("POST", "/users/{user-id}/messages/{message-id}/move"),
    (
        "POST",
        "/users/{user-id}/messages/{message-id}/permanentDelete",
    ),
    ("GET", "/users/{user-id}/messages/{message-id}/attachments"),
    ("GET", "/users/{user-id}/messages/{message-id}/$value"),
    ("GET", "/users/{user-id}/mailFolders/{mailFolder-id}"),
    (
        "GET",
        "/users/{user-id}/mailFolders/{mailFolder-id}/messages",
    ),
    (
        "GET",
        "/users/{user-id}/mailFolders/{mailFolder-id}/messages/{message-id}",
    ),
    (
        "DELETE",
        "/users/{user-id}/mailFolders/{mailFolder-id}/messages/{message-id}",
    ),
    (
        "POST",
        "/users/{user-id}/mailFolders/{mailFolder-id}/messages/{message-id}/move",
    ),
    (
        "POST",
        "/users/{user-id}/mailFolders/{mailFolder-id}/messages/{message-id}/permanentDelete",
    ),
    (
        "GET",
        "/users/{user-id}/mailFolders/{mailFolder-id}/messages/{message-id}/attachments",
    ),
    (
        "GET",
        "/users/{user-id}/mailFolders/{mailFolder-id}/messages/{message-id}/$value",
    ),
    ("GET", "/groups"),
    ("GET", "/groups/{group-id}"),
    ("GET", "/groups/{group-id}/transitiveMembers"),
    ("GET", "/domains"),
    ("POST", "/$batch"),
];

/// The Graph routes, under `/v1.0`.
pub fn routes() -> Router<SharedLab> {
    Router::new().nest("/v1.0", graph_routes())
}

/// The Graph routes without the version prefix (also what `$batch` dispatches into).
fn graph_routes() -> Router<SharedLab> {
    let msg = "/users/{user}/messages/{id}";
    let fmsg = "/users/{user}/mailFolders/{folder}/messages/{id}";
    let mail = Router::new()
        .route("/users/{user}/messages", get(mail::list_messages))
        .route(
            "/users/{user}/mailFolders/{folder}/messages",
            get(mail::list_messages),
        )
        .route("/users/{user}/mailFolders/{folder}", get(mail::get_folder))
        // Not in the OpenAPI subset (like messageTraces): shapes from the Graph docs
        // ("message: delta"), see `mail::delta`.
        .route(
            "/users/{user}/mailFolders/{folder}/messages/delta",
            get(mail::delta::messages_delta),
        )
        // "mailFolder: delta", also outside the subset: the folder tree, child folders
        // included (see `mail::delta::folders_delta`).
        .route(
            "/users/{user}/mailFolders/delta",
            get(mail::delta::folders_delta),
        )
        .route(msg, get(mail::get_message).delete(mail::delete_message))
        .route(fmsg, get(mail::get_message).delete(mail::delete_message))
        // Any other method on `…/{action}` names no resource either (a GET of `…/move`, or of
        // a segment no route has): Graph's 400, not axum's bare 405.
        .route(
            &format!("{msg}/{{action}}"),
            post(mail::message_action).fallback(unknown_segment),
        )
        .route(
            &format!("{fmsg}/{{action}}"),
            post(mail::message_action).fallback(unknown_segment),
        )
        .route(&format!("{msg}/attachments"), get(mail::attachments))
        .route(&format!("{fmsg}/attachments"), get(mail::attachments))
        .route(&format!("{msg}/$value"), get(mail::raw_value))
        .route(&format!("{fmsg}/$value"), get(mail::raw_value))
        .route_layer(axum::middleware::from_fn(id_preference));
    Router::new()
        .merge(mail)
        .route("/users", get(directory::list_users))
        .route("/users/{user}", get(directory::get_user))
        .route("/groups", get(directory::list_groups))
        .route("/groups/{group}", get(directory::get_group))
        .route(
            "/groups/{group}/transitiveMembers",
            get(directory::transitive_members),
        )
        .route("/domains", get(directory::list_domains))
        .route(
            "/admin/exchange/tracing/messageTraces",
            get(tracing::message_traces),
        )
        .route("/$batch", post(batch::batch))
        .fallback(unknown_segment)
}

/// Whether a request asks for immutable ids: `Prefer: IdType="ImmutableId"`, alone or among
/// other preferences (`outlook.body-content-type="text", IdType="ImmutableId"`).
pub fn wants_immutable_ids(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.split_once('='))
        .any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("IdType")
                && value
                    .trim()
                    .trim_matches('"')
                    .eq_ignore_ascii_case("ImmutableId")
        })
}

/// Answers `Preference-Applied: IdType="ImmutableId"` on a mail response that honoured it.
async fn id_preference(request: Request, next: Next) -> Response {
    let immutable = wants_immutable_ids(request.headers());
    let mut response = next.run(request).await;
    if immutable && response.status().is_success() {
        response.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static(IMMUTABLE_ID_PREFERENCE),
        );
    }
    response
}

/// The first segment of `path` (below `/v1.0`) that no served route has in that place; the
/// last segment when the whole path is a prefix of a route (a resource the lab does not serve).
pub fn unmatched_segment(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let templates: Vec<Vec<&str>> = ROUTES
        .iter()
        .map(|(_, t)| t.trim_start_matches('/').split('/').collect())
        .collect();
    // A bound action may be namespace-qualified (`microsoft.graph.move`).
    let fits = |template: &str, segment: &str| {
        if template.starts_with('{') {
            return !segment.is_empty();
        }
        let bare = segment.strip_prefix("microsoft.graph.").unwrap_or(segment);
        template.eq_ignore_ascii_case(segment) || template.eq_ignore_ascii_case(bare)
    };
    for k in 0..segments.len() {
        let known = templates
            .iter()
            .any(|t| t.len() > k && segments[..=k].iter().zip(t.iter()).all(|(s, t)| fits(t, s)));
        if !known {
            return segments[k].clone();
        }
    }
    segments.last().cloned().unwrap_or_default()
}

/// Graph's answer to a path it has no resource for (PROVIDER-APIS.md §F.3). A bodiless 404
/// here would read to a client as "the message is gone".
async fn unknown_segment(uri: Uri) -> Response {
    let segment = unmatched_segment(uri.path());
    bad_request(&format!("Resource not found for the segment '{segment}'."))
}

/// An authenticated caller.
pub(crate) struct Caller {
    pub t: TenantIdx,
    pub claims: AccessClaims,
}

/// A Graph error response.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    errors::graph(status, code, message)
}

pub(crate) fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// Checks the bearer token and finds the caller's tenant.
pub(crate) fn authenticate(lab: &Lab, headers: &HeaderMap) -> Result<Caller, Response> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let unauthorized = |message: &str| {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"\", error=\"invalid_token\""),
        );
        r
    };
    let claims = lab
        .tokens
        .check_any(auth, &GRAPH_AUDIENCES)
        .map_err(|p| match p {
            TokenProblem::Missing => unauthorized("Access token is empty."),
            TokenProblem::Expired => {
                unauthorized("Lifetime validation failed, the token is expired.")
            }
            TokenProblem::Invalid => {
                unauthorized("Access token validation failure. Invalid audience or signature.")
            }
        })?;
    // A token is for one cloud's Graph: the tenant's.
    let t = {
        let state = lab.state();
        state.tenant_index(&claims.tid).filter(|t| {
            let tenant = &state.tenants[*t];
            tenant.kind == crate::model::TenantKind::Microsoft365
                && claims.aud == tenant.cloud.graph_host()
        })
    };
    let t = t.ok_or_else(|| unauthorized("Access token validation failure. Unknown tenant."))?;
    Ok(Caller { t, claims })
}

/// Mail permission: reads accept `Mail.Read` or `Mail.ReadWrite`; writes need `Mail.ReadWrite`
/// (delegated: or their `.Shared` variants, which [`delegated_mailbox`] then scopes).
pub(crate) fn require_mail(caller: &Caller, write: bool) -> Result<(), Response> {
    let any = |names: &[&str]| names.iter().any(|n| caller.claims.has(n));
    let ok = any(&["Mail.ReadWrite", "Mail.ReadWrite.Shared"])
        || (!write && any(&["Mail.Read", "Mail.Read.Shared"]));
    if ok {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ))
    }
}

/// A delegated token reaches the signed-in user's own mailbox (`Mail.ReadWrite`) and, with
/// `Mail.ReadWrite.Shared` (or `Mail.Read.Shared` to read), the mailboxes the user holds
/// FullAccess to; anything else is access denied, as in Exchange. App-only tokens pass.
pub(crate) fn delegated_mailbox(
    lab: &Lab,
    caller: &Caller,
    mailbox: &str,
    write: bool,
) -> Result<(), Response> {
    if caller.claims.scp.is_none() {
        return Ok(());
    }
    let me = caller.claims.sub.as_deref().unwrap_or_default();
    if me.eq_ignore_ascii_case(mailbox) {
        return Ok(());
    }
    let shared = caller.claims.has("Mail.ReadWrite.Shared")
        || (!write && caller.claims.has("Mail.Read.Shared"));
    let full_access = lab.state().tenants[caller.t].user(me).is_some_and(|u| {
        u.full_access
            .iter()
            .any(|m| m.eq_ignore_ascii_case(mailbox))
    });
    if shared && full_access {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ))
    }
}

/// Exchange RBAC for Applications: an app-only token without an Entra `Mail.ReadWrite` role
/// reaches the mailboxes its role assignment's scope covers, and gets `ErrorAccessDenied`
/// elsewhere. An Entra consent, where present, still reaches every mailbox (the two add up:
/// that is why Microsoft says to remove it when scoping).
pub(crate) fn rbac_mailbox(lab: &Lab, caller: &Caller, mailbox: &str) -> Result<(), Response> {
    if caller.claims.scp.is_some() || caller.claims.has("Mail.ReadWrite") {
        return Ok(());
    }
    let in_scope = match &lab.state().tenants[caller.t].rbac_mail_scope {
        None => return Ok(()),
        Some(scope) => scope.contains(&mailbox.to_ascii_lowercase()),
    };
    if in_scope {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ))
    }
}

/// Directory permission: any one of `any_of`.
pub(crate) fn require_directory(caller: &Caller, any_of: &[&str]) -> Result<(), Response> {
    if any_of.iter().any(|p| caller.claims.has(p)) {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ))
    }
}

/// Resolves `/users/{key}` for a mail route to a mailbox address (lowercase).
pub(crate) fn resolve_mailbox(lab: &Lab, t: TenantIdx, key: &str) -> Result<String, Response> {
    let state = lab.state();
    let tenant = &state.tenants[t];
    if let Some(user) = tenant.graph_user(key) {
        if !tenant.mailbox_granted(&user.address) {
            return Err(error(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.",
            ));
        }
        if !user.has_mailbox || !tenant.mailboxes.contains_key(&user.address) {
            return Err(mailbox_not_enabled());
        }
        return Ok(user.address.clone());
    }
    if tenant.group(key).is_some() {
        return Err(mailbox_not_enabled());
    }
    Err(error(
        StatusCode::NOT_FOUND,
        "ErrorInvalidUser",
        &format!("The requested user '{key}' is invalid."),
    ))
}

fn mailbox_not_enabled() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "MailboxNotEnabledForRESTAPI",
        "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
    )
}

fn throttled(lab: &Lab, throttle: &Throttle, code: &str, message: &str) -> Response {
    lab.note_throttle(throttle);
    errors::graph_throttled(code, message, throttle.retry_after_secs)
}

/// Enters the Outlook per-mailbox limits (4 concurrent, 10,000 per 10 minutes).
pub(crate) fn enter_mailbox<'a>(
    lab: &'a Lab,
    t: TenantIdx,
    mailbox: &str,
) -> Result<MailboxGuard<'a>, Response> {
    lab.limits.enter_graph_mailbox(t, mailbox).map_err(|th| {
        let message = match th.kind {
            super::limits::ThrottleKind::MailboxWindow => {
                "Application is over its MailboxRequestCount limit."
            }
            _ => "Application is over its MailboxConcurrency limit.",
        };
        throttled(lab, &th, "ApplicationThrottled", message)
    })
}

/// Holds one of the tenant's service slots for the configured latency.
pub(crate) async fn serve(lab: &Lab, t: TenantIdx) -> Result<(), Response> {
    lab.limits
        .serve(t)
        .await
        .map_err(|th| throttled(lab, &th, "TooManyRequests", "Please retry again later."))
}

/// The OData system query options a list understands.
#[derive(Debug, Default, Clone)]
pub(crate) struct ListQuery {
    pub filter: Option<String>,
    pub select: Option<Vec<String>>,
    pub top: Option<usize>,
    pub skip: usize,
    /// The other parameters, kept for `@odata.nextLink`.
    pub rest: Vec<(String, String)>,
}

/// Parses a raw query string (`+` is a space, `%XX` decoded; names are matched case-insensitively).
pub(crate) fn parse_query(raw: Option<&str>) -> Result<ListQuery, Response> {
    let mut q = ListQuery::default();
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "$filter" => q.filter = Some(value.into_owned()),
            "$select" => {
                q.select = Some(
                    value
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                )
            }
            "$top" => {
                q.top = Some(value.trim().parse::<usize>().map_err(|_| {
                    bad_request(&format!("Invalid value '{value}' for query option $top."))
                })?)
            }
            "$skiptoken" => q.skip = decode_skiptoken(&value)?,
            // Other options ($orderby, $count, …) are accepted, ignored, and kept for paging.
            _ => q.rest.push((name.into_owned(), value.into_owned())),
        }
    }
    Ok(q)
}

fn decode_skiptoken(token: &str) -> Result<usize, Response> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("lab-skip:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| bad_request("Invalid $skiptoken value."))
}

fn encode_skiptoken(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("lab-skip:{offset}"))
}

impl ListQuery {
    /// The page size: `$top` within 1..=max, else `default`.
    pub fn page_size(&self, default: usize, max: usize) -> Result<usize, Response> {
        match self.top {
            None => Ok(default),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(n) => Err(bad_request(&format!(
                "Invalid value '{n}' for query option $top: it must be between 1 and {max}."
            ))),
        }
    }

    /// Cuts one page from `total` items, returning the range and the `@odata.nextLink`.
    pub fn page(
        &self,
        lab: &Lab,
        path: &str,
        total: usize,
        size: usize,
    ) -> (std::ops::Range<usize>, Option<String>) {
        let start = self.skip.min(total);
        let end = (start + size).min(total);
        let next = (end < total).then(|| {
            let mut params: Vec<(String, String)> = Vec::new();
            if let Some(f) = &self.filter {
                params.push(("$filter".into(), f.clone()));
            }
            if let Some(s) = &self.select {
                params.push(("$select".into(), s.join(",")));
            }
            if let Some(t) = self.top {
                params.push(("$top".into(), t.to_string()));
            }
            params.extend(self.rest.iter().cloned());
            params.push(("$skiptoken".into(), encode_skiptoken(end)));
            let query: Vec<String> = params
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
                    )
                })
                .collect();
            format!("{}/v1.0{path}?{}", lab.base_url(), query.join("&"))
        });
        (start..end, next)
    }
}

/// `@odata.context` for a path below the metadata document.
pub(crate) fn context(lab: &Lab, fragment: &str) -> String {
    format!("{}/v1.0/$metadata#{fragment}", lab.base_url())
}

/// A collection body `{@odata.context, value, @odata.nextLink?}`.
pub(crate) fn collection(
    context: String,
    value: Vec<serde_json::Value>,
    next: Option<String>,
) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("@odata.context".into(), context.into());
    body.insert("value".into(), value.into());
    if let Some(n) = next {
        body.insert("@odata.nextLink".into(), n.into());
    }
    ok_json(StatusCode::OK, serde_json::Value::Object(body))
}

/// A JSON response with Graph's content type.
pub(crate) fn ok_json(status: StatusCode, body: serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut r = Response::new(axum::body::Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(
            "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
        ),
    );
    r
}
