//! The lab's Admin SDK Directory API subset (PROVIDER-APIS.md B.7): users, groups and group
//! members, as clawback needs them to expand distribution lists. Calls need a Google token that
//! impersonates an admin of the tenant and holds a matching `admin.directory.*` scope.
//!
//! Member `type` values: `USER` and `GROUP` for tenant objects; addresses outside the tenant's
//! directory are listed as `EXTERNAL` (commonly seen, not enumerated in the discovery document:
//! UNCONFIRMED). With `includeDerivedMembership=true` the list is the direct members plus
//! everything reachable through nested groups (nested groups included, each address once).

// Handler helpers return the finished error response; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use super::errors;
use super::oauth_google::{check_bearer, insufficient_scopes};
use super::state::{Group, Tenant, TenantIdx, User, directory_id};
use super::{Lab, SharedLab};
use crate::model::TenantKind;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

/// A handler's answer: both arms are finished responses (the error arm lets `?` short-cut).
pub mod reports;

type Reply = Result<Response, Response>;

const USER_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/admin.directory.user",
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
];
const USER_LIST_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/admin.directory.user",
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/cloud-platform",
];
const GROUP_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/admin.directory.group",
    "https://www.googleapis.com/auth/admin.directory.group.readonly",
];
const MEMBER_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/admin.directory.group",
    "https://www.googleapis.com/auth/admin.directory.group.member",
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.readonly",
];

/// Every route this module serves: (HTTP method, path template as in the discovery document).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/directory/v1/users"),
    ("GET", "/admin/directory/v1/users/{userKey}"),
    ("GET", "/admin/directory/v1/groups"),
    ("GET", "/admin/directory/v1/groups/{groupKey}"),
    ("GET", "/admin/directory/v1/groups/{groupKey}/members"),
    (
        "GET",
        "/admin/directory/v1/groups/{groupKey}/members/{memberKey}",
    ),
    (
        "GET",
        "/admin/directory/v1/groups/{groupKey}/hasMember/{memberKey}",
    ),
];

/// `members.list` page size: default and maximum.
pub const MEMBERS_MAX: usize = 200;
/// `users.list` / `groups.list` page size: default and maximum.
pub const LIST_DEFAULT: usize = 100;
pub const LIST_MAX: usize = 500;

/// The Directory routes.
pub fn routes() -> Router<SharedLab> {
    let b = "/admin/directory/v1";
    Router::new()
        .route(
            "/admin/reports/v1/activity/users/{userKey}/applications/{applicationName}",
            get(reports::activities),
        )
        .route(&format!("{b}/users"), get(users_list))
        .route(&format!("{b}/users/{{userKey}}"), get(users_get))
        .route(&format!("{b}/groups"), get(groups_list))
        .route(&format!("{b}/groups/{{groupKey}}"), get(groups_get))
        .route(
            &format!("{b}/groups/{{groupKey}}/members"),
            get(members_list),
        )
        .route(
            &format!("{b}/groups/{{groupKey}}/members/{{memberKey}}"),
            get(members_get),
        )
        .route(
            &format!("{b}/groups/{{groupKey}}/hasMember/{{memberKey}}"),
            get(has_member),
        )
}

fn not_authorized() -> Response {
    errors::google(
        StatusCode::FORBIDDEN,
        "forbidden",
        "global",
        "Not Authorized to access this resource/api",
    )
}

fn not_found(what: &str) -> Response {
    errors::google(
        StatusCode::NOT_FOUND,
        "notFound",
        "global",
        &format!("Resource Not Found: {what}"),
    )
}

fn bad_request(message: &str) -> Response {
    errors::google(StatusCode::BAD_REQUEST, "badRequest", "global", message)
}

/// Checks token, admin impersonation and scope, then holds a service slot.
async fn enter(lab: &Lab, headers: &HeaderMap, accepted: &[&str]) -> Result<TenantIdx, Response> {
    let caller = check_bearer(lab, headers)?;
    let is_admin = caller.claims.sub.as_deref().is_some_and(|sub| {
        lab.state().tenants[caller.tenant]
            .user(sub)
            .is_some_and(|u| u.is_admin)
    });
    if !is_admin {
        return Err(not_authorized());
    }
    if !caller.has_any_scope(accepted) {
        return Err(insufficient_scopes());
    }
    if let Err(t) = lab.limits.serve(caller.tenant).await {
        return Err(super::gmail::throttled(lab, &t));
    }
    Ok(caller.tenant)
}

fn etag(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "\"{}\"",
        &hex::encode(Sha256::digest(seed.as_bytes()))[..27]
    )
}

fn user_json(tenant: &Tenant, u: &User) -> Value {
    let mut names = u.display_name.splitn(2, ' ');
    let given = names.next().unwrap_or("").to_string();
    let family = names.next().unwrap_or("").to_string();
    let mut emails = vec![json!({ "address": u.address, "primary": true })];
    emails.extend(u.aliases.iter().map(|a| json!({ "address": a })));
    let mut out = json!({
        "kind": "admin#directory#user",
        "id": u.id,
        "etag": etag(&u.address),
        "primaryEmail": u.address,
        "name": { "givenName": given, "familyName": family, "fullName": u.display_name },
        "isAdmin": u.is_admin,
        "isDelegatedAdmin": false,
        "isMailboxSetup": u.has_mailbox,
        "suspended": false,
        "archived": false,
        "customerId": tenant.tenant_id,
        "orgUnitPath": "/",
        "includeInGlobalAddressList": true,
        "emails": emails,
    });
    if !u.aliases.is_empty() {
        out["aliases"] = json!(u.aliases);
    }
    out
}

fn group_json(g: &Group) -> Value {
    json!({
        "kind": "admin#directory#group",
        "id": g.id,
        "etag": etag(&g.address),
        "email": g.address,
        "name": g.display_name,
        "description": "",
        "directMembersCount": g.members.len().to_string(),
        "adminCreated": true,
    })
}

/// `USER`, `GROUP` or `EXTERNAL` (UNCONFIRMED value for addresses outside the directory).
fn member_json(tenant: &Tenant, address: &str) -> Value {
    let (id, kind) = if let Some(u) = tenant.user(address) {
        (u.id.clone(), "USER")
    } else if let Some(g) = tenant.group(address) {
        (g.id.clone(), "GROUP")
    } else {
        (
            directory_id(TenantKind::GoogleWorkspace, &format!("external:{address}")),
            "EXTERNAL",
        )
    };
    let mut m = json!({
        "kind": "admin#directory#member",
        "etag": etag(&format!("member:{address}")),
        "id": id,
        "email": address,
        "role": "MEMBER",
        "type": kind,
    });
    if kind == "USER" {
        m["status"] = json!("ACTIVE");
        m["delivery_settings"] = json!("ALL_MAIL");
    }
    m
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    customer: Option<String>,
    domain: Option<String>,
    max_results: Option<String>,
    page_token: Option<String>,
    user_key: Option<String>,
    include_derived_membership: Option<String>,
    roles: Option<String>,
}

fn page_of(p: &ListParams, default: usize, max: usize) -> Result<(usize, usize), Response> {
    let size = match p.max_results.as_deref() {
        None => default,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n.min(max),
            _ => return Err(bad_request(&format!("Invalid Input: maxResults {v}"))),
        },
    };
    let offset = match p.page_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| bad_request("Invalid Input: pageToken"))?,
    };
    Ok((offset, size))
}

/// Which domain a list covers: `domain` (must be the tenant's) or `customer` (`my_customer`
/// or the customer id) for all of them. `None` = every domain.
fn scope_of(tenant: &Tenant, p: &ListParams) -> Result<Option<String>, Response> {
    if let Some(d) = &p.domain {
        if tenant
            .domains
            .iter()
            .any(|x| x.name.eq_ignore_ascii_case(d))
        {
            return Ok(Some(d.to_ascii_lowercase()));
        }
        return Err(not_authorized());
    }
    match p.customer.as_deref() {
        Some("my_customer") => Ok(None),
        Some(c) if c == tenant.tenant_id => Ok(None),
        Some(_) => Err(not_authorized()),
        None => Err(bad_request("Bad Request")),
    }
}

fn in_domain(address: &str, domain: &Option<String>) -> bool {
    match domain {
        None => true,
        Some(d) => crate::model::address_domain(address).is_some_and(|a| a.eq_ignore_ascii_case(d)),
    }
}

fn envelope(kind: &str, field: &str, items: Vec<Value>, next: Option<usize>) -> Response {
    let mut body = json!({ "kind": kind, "etag": etag(&format!("{kind}:{}", items.len())) });
    if !items.is_empty() {
        body[field] = Value::Array(items);
    }
    if let Some(n) = next {
        body["nextPageToken"] = json!(n.to_string());
    }
    axum::Json(body).into_response()
}

fn paged(items: Vec<Value>, offset: usize, size: usize) -> (Vec<Value>, Option<usize>) {
    let total = items.len();
    let page = items.into_iter().skip(offset).take(size).collect();
    let next = (offset + size < total).then_some(offset + size);
    (page, next)
}

/// `GET /admin/directory/v1/users`
async fn users_list(
    State(lab): State<SharedLab>,
    Query(p): Query<ListParams>,
    headers: HeaderMap,
) -> Reply {
    let t = enter(&lab, &headers, USER_LIST_SCOPES).await?;
    let (offset, size) = page_of(&p, LIST_DEFAULT, LIST_MAX)?;
    let state = lab.state();
    let tenant = &state.tenants[t];
    let domain = scope_of(tenant, &p)?;
    let items: Vec<Value> = tenant
        .users
        .values()
        .filter(|u| in_domain(&u.address, &domain))
        .map(|u| user_json(tenant, u))
        .collect();
    let (page, next) = paged(items, offset, size);
    Ok(envelope("admin#directory#users", "users", page, next))
}

/// `GET /admin/directory/v1/users/{userKey}`
async fn users_get(
    State(lab): State<SharedLab>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let t = enter(&lab, &headers, USER_SCOPES).await?;
    let state = lab.state();
    let tenant = &state.tenants[t];
    // `userKey`: the primary email, an alias, or the unique id.
    match tenant.user_or_alias(&key) {
        Some(u) => Ok(axum::Json(user_json(tenant, u)).into_response()),
        None => Err(not_found("userKey")),
    }
}

/// `GET /admin/directory/v1/groups`
async fn groups_list(
    State(lab): State<SharedLab>,
    Query(p): Query<ListParams>,
    headers: HeaderMap,
) -> Reply {
    let t = enter(&lab, &headers, GROUP_SCOPES).await?;
    let (offset, size) = page_of(&p, LIST_DEFAULT, LIST_MAX)?;
    let state = lab.state();
    let tenant = &state.tenants[t];
    let (domain, member) = match &p.user_key {
        Some(k) => (None, Some(k.to_ascii_lowercase())),
        None => (scope_of(tenant, &p)?, None),
    };
    let items: Vec<Value> = tenant
        .groups
        .values()
        .filter(|g| in_domain(&g.address, &domain))
        .filter(|g| member.as_ref().is_none_or(|m| g.members.contains(m)))
        .map(group_json)
        .collect();
    let (page, next) = paged(items, offset, size);
    Ok(envelope("admin#directory#groups", "groups", page, next))
}

/// `GET /admin/directory/v1/groups/{groupKey}`
async fn groups_get(
    State(lab): State<SharedLab>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Reply {
    let t = enter(&lab, &headers, GROUP_SCOPES).await?;
    let state = lab.state();
    match state.tenants[t].group(&key) {
        Some(g) => Ok(axum::Json(group_json(g)).into_response()),
        None => Err(not_found("groupKey")),
    }
}

/// `GET /admin/directory/v1/groups/{groupKey}/members`
async fn members_list(
    State(lab): State<SharedLab>,
    Path(key): Path<String>,
    Query(p): Query<ListParams>,
    headers: HeaderMap,
) -> Reply {
    let t = enter(&lab, &headers, MEMBER_SCOPES).await?;
    let (offset, size) = page_of(&p, MEMBERS_MAX, MEMBERS_MAX)?;
    let derived = match p.include_derived_membership.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(bad_request(&format!(
                "Invalid Input: includeDerivedMembership {v}"
            )));
        }
    };
    let roles: Vec<String> = p
        .roles
        .as_deref()
        .map(|r| {
            r.split(',')
                .map(|s| s.trim().to_ascii_uppercase())
                .collect()
        })
        .unwrap_or_default();
    for r in &roles {
        if !["OWNER", "MANAGER", "MEMBER"].contains(&r.as_str()) {
            return Err(bad_request(&format!("Invalid Input: roles {r}")));
        }
    }
    let state = lab.state();
    let tenant = &state.tenants[t];
    let Some(group) = tenant.group(&key) else {
        return Err(not_found("groupKey"));
    };
    // Everyone in the lab holds role MEMBER.
    let addresses: Vec<String> = if !roles.is_empty() && !roles.iter().any(|r| r == "MEMBER") {
        Vec::new()
    } else if derived {
        tenant.transitive_members(group)
    } else {
        group.members.clone()
    };
    let items: Vec<Value> = addresses.iter().map(|a| member_json(tenant, a)).collect();
    let (page, next) = paged(items, offset, size);
    Ok(envelope("admin#directory#members", "members", page, next))
}

/// `GET /admin/directory/v1/groups/{groupKey}/members/{memberKey}` (direct members).
async fn members_get(
    State(lab): State<SharedLab>,
    Path((group_key, member_key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    let t = enter(&lab, &headers, MEMBER_SCOPES).await?;
    let state = lab.state();
    let tenant = &state.tenants[t];
    let Some(group) = tenant.group(&group_key) else {
        return Err(not_found("groupKey"));
    };
    let address = resolve_member(tenant, &member_key);
    if group.members.contains(&address) {
        Ok(axum::Json(member_json(tenant, &address)).into_response())
    } else {
        Ok(not_found("memberKey"))
    }
}

/// A member key (address or directory id) as a lowercased address.
fn resolve_member(tenant: &Tenant, key: &str) -> String {
    tenant
        .user(key)
        .map(|u| u.address.clone())
        .or_else(|| tenant.group(key).map(|g| g.address.clone()))
        .unwrap_or_else(|| key.to_ascii_lowercase())
}

/// `GET /admin/directory/v1/groups/{groupKey}/hasMember/{memberKey}` (nested membership too).
async fn has_member(
    State(lab): State<SharedLab>,
    Path((group_key, member_key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Reply {
    let t = enter(&lab, &headers, MEMBER_SCOPES).await?;
    let state = lab.state();
    let tenant = &state.tenants[t];
    let Some(group) = tenant.group(&group_key) else {
        return Err(not_found("groupKey"));
    };
    let address = resolve_member(tenant, &member_key);
    let is_member = tenant.transitive_members(group).contains(&address);
    if !is_member && tenant.user(&address).is_none() && tenant.group(&address).is_none() {
        return Err(not_found("memberKey"));
    }
    Ok(axum::Json(json!({ "isMember": is_member })).into_response())
}
