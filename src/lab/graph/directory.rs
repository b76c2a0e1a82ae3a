//! Graph directory routes: users, groups (+ transitive members), domains.

use super::filter;
use super::json;
use super::{
    Caller, authenticate, bad_request, collection, context, error, ok_json, parse_query,
    require_directory, serve,
};
use crate::lab::SharedLab;
use crate::lab::state::{Tenant, directory_id};
use crate::model::TenantKind;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

const USER_READ: &[&str] = &[
    "User.Read.All",
    "User.ReadBasic.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const GROUP_READ: &[&str] = &[
    "GroupMember.Read.All",
    "Group.Read.All",
    "GroupMember.ReadWrite.All",
    "Group.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const DOMAIN_READ: &[&str] = &[
    "Domain.Read.All",
    "Domain.ReadWrite.All",
    "Directory.Read.All",
];

async fn begin(
    lab: &SharedLab,
    headers: &HeaderMap,
    permissions: &[&str],
) -> Result<Caller, Response> {
    let caller = authenticate(lab, headers)?;
    require_directory(&caller, permissions)?;
    serve(lab, caller.t).await?;
    Ok(caller)
}

fn not_found(key: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{key}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// `$filter` for directory lists: `prop eq 'value'` on the allowed properties (lowercased value).
fn equality_filter(
    text: Option<&str>,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, Response> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let clauses = filter::parse(text).map_err(|e| bad_request(&e.to_string()))?;
    clauses
        .into_iter()
        .map(|c| {
            let prop = c.property.to_ascii_lowercase();
            if c.op != filter::Op::Eq || !allowed.contains(&prop.as_str()) {
                return Err(bad_request(&format!(
                    "Invalid filter clause: the lab supports {} eq '…' here, not {:?}",
                    allowed.join(" / "),
                    c.property
                )));
            }
            Ok((prop, c.value.to_ascii_lowercase()))
        })
        .collect()
}

/// A directory `$filter`: `prop eq 'v'` clauses joined by `and`, or — for users — clauses
/// joined by `or`, where a clause may also be `proxyAddresses/any(p:p eq 'smtp:v')`.
enum DirectoryFilter {
    All(Vec<(String, String)>),
    Any(Vec<(String, String)>),
}

impl DirectoryFilter {
    fn matches(&self, tenant: &Tenant, key: &str) -> bool {
        let one = |(prop, value): &(String, String)| -> bool {
            match (prop.as_str(), tenant.users.get(key)) {
                ("userprincipalname", Some(u)) => u.upn == *value,
                ("proxyaddresses", Some(u)) => value
                    .strip_prefix("smtp:")
                    .is_some_and(|a| a == u.address || u.aliases.iter().any(|x| x == a)),
                ("proxyaddresses", None) => false,
                _ => key == value,
            }
        };
        match self {
            DirectoryFilter::All(c) => c.iter().all(one),
            DirectoryFilter::Any(c) => c.iter().any(one),
        }
    }
}

fn directory_filter(text: Option<&str>, kind: &DirectoryKind) -> Result<DirectoryFilter, Response> {
    let Some(text) = text else {
        return Ok(DirectoryFilter::All(Vec::new()));
    };
    let parts = split_or(text);
    if parts.len() == 1 && !text.contains("/any(") {
        return equality_filter(Some(text), kind.filterable).map(DirectoryFilter::All);
    }
    if kind.type_name != "user" {
        return Err(bad_request(
            "Invalid filter clause: the lab supports 'or' and proxyAddresses/any(…) on users only",
        ));
    }
    let mut clauses = Vec::new();
    for part in parts {
        let part = part.trim();
        if let Some(inner) = part
            .strip_prefix("proxyAddresses/any(")
            .and_then(|r| r.strip_suffix(')'))
        {
            // `p:p eq 'smtp:…'`
            let (var, cond) = inner.split_once(':').ok_or_else(|| {
                bad_request("Invalid filter clause: expected proxyAddresses/any(p:p eq '…')")
            })?;
            let c = filter::parse(cond).map_err(|e| bad_request(&e.to_string()))?;
            match c.as_slice() {
                [c] if c.property == var.trim() && c.op == filter::Op::Eq => {
                    clauses.push(("proxyaddresses".to_string(), c.value.to_ascii_lowercase()))
                }
                _ => {
                    return Err(bad_request(
                        "Invalid filter clause: expected proxyAddresses/any(p:p eq '…')",
                    ));
                }
            }
        } else {
            clauses.extend(equality_filter(Some(part), kind.filterable)?);
        }
    }
    Ok(DirectoryFilter::Any(clauses))
}

/// Splits a filter at ` or ` outside quotes and parentheses.
fn split_or(text: &str) -> Vec<&str> {
    let (mut parts, mut start, mut depth, mut quoted) = (Vec::new(), 0, 0i32, false);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            b' ' if !quoted && depth == 0 && text[i..].starts_with(" or ") => {
                parts.push(&text[start..i]);
                i += 4;
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&text[start..]);
    parts
}

fn check_select(
    select: Option<&[String]>,
    allowed: &[&str],
    type_name: &str,
) -> Result<(), Response> {
    for p in select.unwrap_or_default() {
        if !allowed.iter().any(|k| k.eq_ignore_ascii_case(p)) {
            return Err(bad_request(&format!(
                "Parsing OData Select and Expand failed: Could not find a property named '{p}' on type 'microsoft.graph.{type_name}'."
            )));
        }
    }
    Ok(())
}

/// A directory collection served by [`list`] and [`get_one`].
struct DirectoryKind {
    /// Segment after `/v1.0` and `@odata.context` fragment.
    path: &'static str,
    type_name: &'static str,
    permissions: &'static [&'static str],
    filterable: &'static [&'static str],
    properties: &'static [&'static str],
    /// Addresses (keys) of the tenant's objects, in order.
    keys: fn(&Tenant) -> Vec<String>,
    /// One object by address or directory id, as JSON.
    render: fn(&Tenant, &str, Option<&[String]>) -> Option<Value>,
    /// The address (key) of the object `GET /{path}/{key}` names: users by id or
    /// userPrincipalName only (as Graph), groups by id or address.
    find: fn(&Tenant, &str) -> Option<String>,
}

const USERS: DirectoryKind = DirectoryKind {
    path: "users",
    type_name: "user",
    permissions: USER_READ,
    filterable: &["mail", "userprincipalname"],
    properties: json::USER_PROPERTIES,
    keys: |t| t.users.keys().cloned().collect(),
    render: |t, key, select| t.user(key).map(|u| json::user(u, select)),
    find: |t, key| t.graph_user(key).map(|u| u.address.clone()),
};

const GROUPS: DirectoryKind = DirectoryKind {
    path: "groups",
    type_name: "group",
    permissions: GROUP_READ,
    filterable: &["mail"],
    properties: json::GROUP_PROPERTIES,
    // An Exchange dynamic distribution group is no Entra group: Graph does not list it.
    keys: |t| {
        t.groups
            .iter()
            .filter(|(_, g)| !g.dynamic)
            .map(|(k, _)| k.clone())
            .collect()
    },
    render: |t, key, select| t.group(key).map(|g| json::group(g, select)),
    find: |t, key| {
        t.group(key)
            .filter(|g| !g.dynamic)
            .map(|g| g.address.clone())
    },
};

async fn list(
    lab: SharedLab,
    raw: Option<String>,
    headers: HeaderMap,
    kind: &DirectoryKind,
) -> Response {
    let query = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let prepared = directory_filter(query.filter.as_deref(), kind)
        .and_then(|f| {
            check_select(query.select.as_deref(), kind.properties, kind.type_name).map(|_| f)
        })
        .and_then(|f| query.page_size(100, 999).map(|s| (f, s)));
    let (filters, size) = match prepared {
        Ok(x) => x,
        Err(r) => return r,
    };
    let caller = match begin(&lab, &headers, kind.permissions).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (value, next) = {
        let state = lab.state();
        let tenant = &state.tenants[caller.t];
        let keys: Vec<String> = (kind.keys)(tenant)
            .into_iter()
            .filter(|k| filters.matches(tenant, k))
            .collect();
        let (range, next) = query.page(&lab, &format!("/{}", kind.path), keys.len(), size);
        let value: Vec<Value> = keys[range]
            .iter()
            .filter_map(|k| (kind.render)(tenant, k, query.select.as_deref()))
            .collect();
        (value, next)
    };
    collection(context(&lab, kind.path), value, next)
}

async fn get_one(
    lab: SharedLab,
    key: String,
    raw: Option<String>,
    headers: HeaderMap,
    kind: &DirectoryKind,
) -> Response {
    let query = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(r) => return r,
    };
    if let Err(r) = check_select(query.select.as_deref(), kind.properties, kind.type_name) {
        return r;
    }
    let caller = match begin(&lab, &headers, kind.permissions).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let found = {
        let state = lab.state();
        let tenant = &state.tenants[caller.t];
        (kind.find)(tenant, &key).and_then(|k| (kind.render)(tenant, &k, query.select.as_deref()))
    };
    let Some(mut body) = found else {
        return not_found(&key);
    };
    body["@odata.context"] = json!(context(&lab, &format!("{}/$entity", kind.path)));
    ok_json(StatusCode::OK, body)
}

/// `GET /users`
pub async fn list_users(
    State(lab): State<SharedLab>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    list(lab, raw, headers, &USERS).await
}

/// `GET /users/{id | userPrincipalName}`
pub async fn get_user(
    State(lab): State<SharedLab>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    get_one(lab, key, raw, headers, &USERS).await
}

/// `GET /groups`
pub async fn list_groups(
    State(lab): State<SharedLab>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    list(lab, raw, headers, &GROUPS).await
}

/// `GET /groups/{id}`
pub async fn get_group(
    State(lab): State<SharedLab>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    get_one(lab, key, raw, headers, &GROUPS).await
}

/// `GET /groups/{id}/transitiveMembers`: users, groups and external contacts (`orgContact`), flattened.
pub async fn transitive_members(
    State(lab): State<SharedLab>,
    Path(key): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let size = match query.page_size(100, 999) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let caller = match begin(&lab, &headers, GROUP_READ).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let (value, next) = {
        let state = lab.state();
        let tenant = &state.tenants[caller.t];
        let Some(group) = tenant.group(&key).filter(|g| !g.dynamic) else {
            return not_found(&key);
        };
        if group.hidden_membership && !caller.claims.has("Member.Read.Hidden") {
            return error(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            );
        }
        let members = tenant.transitive_members(group);
        let (range, next) = query.page(
            &lab,
            &format!("/groups/{key}/transitiveMembers"),
            members.len(),
            size,
        );
        let value: Vec<Value> = members[range]
            .iter()
            .map(|address| {
                if let Some(u) = tenant.users.get(address) {
                    json::typed(json::user(u, None), "#microsoft.graph.user")
                } else if let Some(g) = tenant.groups.get(address) {
                    json::typed(json::group(g, None), "#microsoft.graph.group")
                } else {
                    json!({
                        "@odata.type": "#microsoft.graph.orgContact",
                        "id": directory_id(TenantKind::Microsoft365, &format!("contact:{address}")),
                        "displayName": crate::lab::scenario::display_name_of(address),
                        "mail": address,
                    })
                }
            })
            .collect();
        (value, next)
    };
    collection(context(&lab, "directoryObjects"), value, next)
}

/// `GET /domains`
pub async fn list_domains(State(lab): State<SharedLab>, headers: HeaderMap) -> Response {
    let caller = match begin(&lab, &headers, DOMAIN_READ).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let value: Vec<Value> = lab.state().tenants[caller.t]
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| json::domain(d, i == 0))
        .collect();
    collection(context(&lab, "domains"), value, None)
}
