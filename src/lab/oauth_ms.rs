//! The lab's Microsoft identity platform face (PROVIDER-APIS.md A.9): the v2.0 token endpoint
//! (client credentials by secret or by client assertion, and the device-code grant) and the
//! device-code endpoint.
//!
//! Device code: the lab has no browser and no user. Its simulated operator "signs in" at once:
//! the first poll answers `authorization_pending`, the next one returns a delegated token whose
//! `scp` holds the tenant's granted roles and whose `sub` is the tenant's first admin user.

// Handlers return ready HTTP responses as their error type, the axum way; boxing them would
// only add noise.
#![allow(clippy::result_large_err)]

use super::errors;
use super::state::Tenant;
use super::tokens::AccessClaims;
use super::{Lab, SharedLab};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The only scope client credentials accept against the lab.
pub const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
/// `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `grant_type` of device-code polling.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Lifetime of a device code (the service's default, 15 minutes).
pub const DEVICE_CODE_TTL: Duration = Duration::from_secs(900);
/// Polling interval the lab asks for (seconds).
pub const DEVICE_CODE_INTERVAL: u64 = 1;

/// The Microsoft identity routes (`/{tenant}/oauth2/v2.0/…`).
pub fn routes() -> Router<SharedLab> {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/oauth2/v2.0/devicecode", post(devicecode))
}

/// A device code handed out and not yet redeemed.
struct DeviceGrant {
    tenant: String,
    client_id: String,
    /// The delegated permissions asked for, without their resource (`Mail.ReadWrite.Shared`).
    permissions: Vec<String>,
    polls: u32,
    expires: Instant,
}

/// A refresh token handed out with a delegated token (single use: Entra rotates it).
struct RefreshGrant {
    tenant: String,
    client_id: String,
    scp: String,
    sub: Option<String>,
}

/// Live refresh tokens of every lab in the process.
fn refresh_grants() -> &'static Mutex<HashMap<String, RefreshGrant>> {
    static GRANTS: OnceLock<Mutex<HashMap<String, RefreshGrant>>> = OnceLock::new();
    GRANTS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The delegated permissions a consented tenant grants out of `asked`: those it holds as app
/// roles, and their `.Shared` variants (the lab's admin consented to what the app lists);
/// `.default` stands for every consented permission.
fn consented(tenant: &Tenant, asked: &[String]) -> String {
    if asked.iter().any(|p| p == ".default") {
        return tenant.credentials.granted.join(" ");
    }
    asked
        .iter()
        .filter(|p| {
            let base = p.strip_suffix(".Shared").unwrap_or(p);
            tenant.credentials.granted.iter().any(|g| g == base)
        })
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A new refresh token for this delegated grant.
fn issue_refresh_token(grant: RefreshGrant) -> String {
    let token = format!(
        "LAB-RT-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
    );
    if let Ok(mut grants) = refresh_grants().lock() {
        grants.insert(token.clone(), grant);
    }
    token
}

/// Pending device codes of every lab in the process, keyed by the (random) device code.
fn device_grants() -> &'static Mutex<HashMap<String, DeviceGrant>> {
    static GRANTS: OnceLock<Mutex<HashMap<String, DeviceGrant>>> = OnceLock::new();
    GRANTS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The form fields and the tenant of a token-endpoint request.
fn form_and_tenant(
    lab: &Lab,
    tenant_key: &str,
    body: &[u8],
) -> Result<(HashMap<String, String>, Tenant), Response> {
    Ok((form(body), find_tenant(lab, tenant_key)?))
}

/// The tenant named in the URL: its name, directory id, or one of its domains.
fn find_tenant(lab: &Lab, key: &str) -> Result<Tenant, Response> {
    let state = lab.state();
    state
        .tenant_index(key)
        .map(|t| &state.tenants[t])
        .filter(|t| t.kind == crate::model::TenantKind::Microsoft365)
        .map(clone_identity)
        .ok_or_else(|| {
            errors::oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!(
                    "Tenant '{key}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
                ),
                Some(90002),
            )
        })
}

/// The tenant without its mailboxes (the token endpoint needs identity data only).
fn clone_identity(t: &Tenant) -> Tenant {
    Tenant {
        name: t.name.clone(),
        kind: t.kind,
        cloud: t.cloud,
        rbac_mail_scope: t.rbac_mail_scope.clone(),
        tenant_id: t.tenant_id.clone(),
        domains: t.domains.clone(),
        credentials: t.credentials.clone(),
        admin_user: t.admin_user.clone(),
        report_mailboxes: Vec::new(),
        users: t
            .users
            .iter()
            .filter(|(_, u)| u.is_admin)
            .map(|(k, u)| (k.clone(), u.clone()))
            .collect(),
        groups: Default::default(),
        mailboxes: Default::default(),
    }
}

fn unknown_client(client_id: &str, tenant: &Tenant) -> Response {
    errors::oauth(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        &format!(
            "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
            tenant.tenant_id
        ),
        Some(700016),
    )
}

fn missing(parameter: &str) -> Response {
    errors::oauth(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        &format!("The request body must contain the following parameter: '{parameter}'."),
        Some(900144),
    )
}

/// `POST /{tenant}/oauth2/v2.0/token`
async fn token(
    State(lab): State<SharedLab>,
    Path(tenant_key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (params, tenant) = match form_and_tenant(&lab, &tenant_key, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    match params.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            client_credentials(&lab, &tenant, &tenant_key, &headers, &params)
        }
        Some(DEVICE_CODE_GRANT) => device_code_poll(&lab, &tenant, &params),
        Some("refresh_token") => refresh(&lab, &tenant, &params),
        Some(other) => errors::oauth(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!(
                "The provided value for the input parameter 'grant_type' is not valid. Expected 'client_credentials' or '{DEVICE_CODE_GRANT}', got '{other}'."
            ),
            Some(70003),
        ),
        None => missing("grant_type"),
    }
}

fn client_credentials(
    lab: &Lab,
    tenant: &Tenant,
    tenant_key: &str,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Response {
    let basic = basic_credentials(headers);
    let assertion = params.get("client_assertion");
    let client_id = params
        .get("client_id")
        .cloned()
        .or_else(|| basic.as_ref().map(|(id, _)| id.clone()))
        .or_else(|| assertion.and_then(|a| assertion_subject(a)));
    let Some(client_id) = client_id else {
        return missing("client_id");
    };
    if client_id != tenant.credentials.client_id {
        return unknown_client(&client_id, tenant);
    }
    match params.get("scope").map(String::as_str) {
        None => return missing("scope"),
        // `{resource}/.default`, the resource being the tenant's cloud's Graph.
        Some(scope) if scope.trim() != format!("{}/.default", tenant.cloud.graph_host()) => {
            return errors::oauth(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                &format!(
                    "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
                ),
                Some(70011),
            );
        }
        Some(_) => {}
    }
    let secret = params
        .get("client_secret")
        .cloned()
        .or_else(|| basic.map(|(_, s)| s));
    if let Some(secret) = secret {
        if secret != tenant.credentials.client_secret {
            return errors::oauth(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                ),
                Some(7000215),
            );
        }
    } else if let Some(assertion) = assertion {
        if params.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER_ASSERTION) {
            return errors::oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!(
                    "The provided value for the input parameter 'client_assertion_type' is not valid. Expected '{JWT_BEARER_ASSERTION}'."
                ),
                Some(50027),
            );
        }
        if let Err(r) = verify_assertion(lab, tenant, tenant_key, &client_id, assertion) {
            return r;
        }
    } else {
        return errors::oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            Some(7000218),
        );
    }
    let claims = access_claims(lab, tenant, &client_id, None, None);
    token_response(lab, &claims, None, None)
}

/// `client_id:secret` from `Authorization: Basic …` (RFC 6749 §2.3.1: both form-urlencoded).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let un = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((un(id), un(secret)))
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    aud: serde_json::Value,
    iss: String,
    sub: String,
}

/// `sub` of an assertion without verifying it (only to learn the client id when the form omits it).
fn assertion_subject(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("sub")?.as_str().map(str::to_string)
}

fn assertion_refused(code: u32, description: &str) -> Response {
    errors::oauth(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        description,
        Some(code),
    )
}

/// Checks a client assertion: RS256 + `x5t` (SHA-1 thumbprint) or PS256 + `x5t#S256`
/// (SHA-256 thumbprint) of the registered certificate, signature by its key, audience, issuer
/// and subject = client id, and lifetime.
fn verify_assertion(
    lab: &Lab,
    tenant: &Tenant,
    tenant_key: &str,
    client_id: &str,
    assertion: &str,
) -> Result<(), Response> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| {
        errors::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("The client assertion is not a well-formed JWT: {e}."),
            Some(50027),
        )
    })?;
    let der = &tenant.credentials.certificate_der;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let thumbprint_ok = match (&header.x5t_s256, &header.x5t) {
        (Some(s256), _) => s256.trim_end_matches('=') == b64(&Sha256::digest(der)),
        (None, Some(sha1)) => sha1.trim_end_matches('=') == b64(&Sha1::digest(der)),
        (None, None) => false,
    };
    if !thumbprint_ok {
        return Err(assertion_refused(
            700027,
            &format!(
                "Client assertion failed signature validation. The certificate with the thumbprint in the assertion header (x5t / x5t#S256) is not registered on application '{client_id}'."
            ),
        ));
    }
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(assertion_refused(
            700027,
            &format!(
                "Client assertion failed signature validation. Algorithm {:?} is not supported; use PS256 (or RS256).",
                header.alg
            ),
        ));
    }
    let key =
        DecodingKey::from_rsa_pem(tenant.credentials.public_key_pem.as_bytes()).map_err(|e| {
            errors::oauth(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                &format!("lab: the tenant's registered public key is unusable: {e}"),
                None,
            )
        })?;
    let mut validation = Validation::new(header.alg);
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let data = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation).map_err(
        |e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature
            | jsonwebtoken::errors::ErrorKind::ImmatureSignature => assertion_refused(
                700024,
                "Client assertion is not within its valid time range.",
            ),
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                assertion_refused(700027, "Client assertion failed signature validation.")
            }
            _ => assertion_refused(700027, &format!("Client assertion failed validation: {e}.")),
        },
    )?;
    let claims = data.claims;
    if claims.iss != client_id || claims.sub != client_id {
        return Err(assertion_refused(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter (iss and sub must be the client id).",
        ));
    }
    let audiences = accepted_audiences(lab, tenant, tenant_key);
    let aud_ok = match &claims.aud {
        serde_json::Value::String(a) => audiences.iter().any(|x| x.eq_ignore_ascii_case(a)),
        serde_json::Value::Array(list) => list.iter().any(|a| {
            a.as_str()
                .is_some_and(|a| audiences.iter().any(|x| x.eq_ignore_ascii_case(a)))
        }),
        _ => false,
    };
    if !aud_ok {
        return Err(assertion_refused(
            50013,
            &format!(
                "Assertion audience claim does not match the required value. Expected e.g. '{}'.",
                audiences.first().cloned().unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

/// Token endpoint URLs an assertion may name as `aud`: this lab's and the public one, with the
/// tenant spelled as in the request, by name, by id, or by any of its domains.
fn accepted_audiences(lab: &Lab, tenant: &Tenant, tenant_key: &str) -> Vec<String> {
    let mut names = vec![
        tenant_key.to_string(),
        tenant.name.clone(),
        tenant.tenant_id.clone(),
    ];
    names.extend(tenant.domains.iter().map(|d| d.name.clone()));
    let mut out = Vec::new();
    for base in [lab.base_url(), "https://login.microsoftonline.com"] {
        for n in &names {
            out.push(format!("{base}/{n}/oauth2/v2.0/token"));
        }
    }
    out
}

fn access_claims(
    lab: &Lab,
    tenant: &Tenant,
    client_id: &str,
    scp: Option<String>,
    sub: Option<String>,
) -> AccessClaims {
    let now = chrono::Utc::now().timestamp();
    let ttl = lab.options.token_ttl.as_secs().max(1) as i64;
    let delegated = scp.is_some();
    AccessClaims {
        iss: format!("https://sts.windows.net/{}/", tenant.tenant_id),
        aud: tenant.cloud.graph_host().to_string(),
        tid: tenant.name.clone(),
        appid: client_id.to_string(),
        roles: if delegated {
            Vec::new()
        } else {
            tenant.credentials.granted.clone()
        },
        scp,
        sub,
        iat: now,
        exp: now + ttl,
        jti: uuid::Uuid::new_v4().to_string(),
    }
}

fn token_response(
    lab: &Lab,
    claims: &AccessClaims,
    scope: Option<&str>,
    refresh_token: Option<&str>,
) -> Response {
    let ttl = (claims.exp - claims.iat).max(0);
    let mut body = json!({
        "token_type": "Bearer",
        "expires_in": ttl,
        "ext_expires_in": ttl,
        "access_token": lab.tokens.mint(claims),
    });
    if let Some(scope) = scope {
        body["scope"] = json!(scope);
    }
    if let Some(rt) = refresh_token {
        body["refresh_token"] = json!(rt);
    }
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store, no-cache")],
        axum::Json(body),
    )
        .into_response()
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`
async fn devicecode(
    State(lab): State<SharedLab>,
    Path(tenant_key): Path<String>,
    body: Bytes,
) -> Response {
    let (params, tenant) = match form_and_tenant(&lab, &tenant_key, &body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(client_id) = params.get("client_id") else {
        return missing("client_id");
    };
    if *client_id != tenant.credentials.client_id {
        return unknown_client(client_id, &tenant);
    }
    let Some(scope) = params.get("scope").filter(|s| !s.trim().is_empty()) else {
        return missing("scope");
    };
    let permissions: Vec<String> = scope
        .split_whitespace()
        .map(|s| s.rsplit_once('/').map_or(s, |(_, p)| p).to_string())
        .collect();
    // Delegated permissions are named under the tenant's cloud's Graph resource.
    let resource = format!("{}/", tenant.cloud.graph_host());
    if let Some(bad) = scope.split_whitespace().find(|s| {
        !s.starts_with(&resource) && !matches!(*s, "offline_access" | "openid" | "profile")
    }) {
        return errors::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {bad} is not valid."
            ),
            Some(70011),
        );
    }
    let device_code = format!(
        "LAB-DC-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
    );
    let user_code: String = {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let bytes: [u8; 9] = rand::random();
        bytes
            .iter()
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
            .collect()
    };
    if let Ok(mut grants) = device_grants().lock() {
        let now = Instant::now();
        grants.retain(|_, g| g.expires > now);
        grants.insert(
            device_code.clone(),
            DeviceGrant {
                tenant: tenant.name.clone(),
                client_id: client_id.clone(),
                permissions,
                polls: 0,
                expires: now + DEVICE_CODE_TTL,
            },
        );
    }
    let verification_uri = format!("{}/devicelogin", lab.base_url());
    axum::Json(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "expires_in": DEVICE_CODE_TTL.as_secs(),
        "interval": DEVICE_CODE_INTERVAL,
        "message": format!(
            "To sign in, use a web browser to open the page {verification_uri} and enter the code {user_code} to authenticate. (clawback lab: the simulated operator signs in at once; keep polling.)"
        ),
    }))
    .into_response()
}

fn device_code_poll(lab: &Lab, tenant: &Tenant, params: &HashMap<String, String>) -> Response {
    let Some(code) = params.get("device_code") else {
        return missing("device_code");
    };
    let outcome = {
        let Ok(mut grants) = device_grants().lock() else {
            return errors::oauth(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "lab: device-code table unavailable",
                None,
            );
        };
        match grants.get_mut(code) {
            None => Err("bad"),
            Some(g) if g.tenant != tenant.name => Err("bad"),
            Some(g) if g.expires <= Instant::now() => Err("expired"),
            Some(g) => {
                g.polls += 1;
                if g.polls == 1 {
                    Err("pending")
                } else {
                    Ok((g.client_id.clone(), g.permissions.clone()))
                }
            }
        }
        .inspect(|_| {
            grants.remove(code);
        })
    };
    match outcome {
        Err("pending") => errors::oauth(
            StatusCode::BAD_REQUEST,
            "authorization_pending",
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
            Some(70016),
        ),
        Err("expired") => errors::oauth(
            StatusCode::BAD_REQUEST,
            "expired_token",
            "The provided value for the input parameter 'device_code' is not valid. It has expired.",
            Some(70020),
        ),
        Err(_) => errors::oauth(
            StatusCode::BAD_REQUEST,
            "bad_verification_code",
            "The provided value for the input parameter 'device_code' is not valid.",
            Some(70000),
        ),
        Ok((client_id, permissions)) => {
            let scope = consented(tenant, &permissions);
            let sub = tenant
                .users
                .values()
                .find(|u| u.is_admin)
                .map(|u| u.address.clone())
                .or_else(|| tenant.admin_user.clone());
            let claims = access_claims(lab, tenant, &client_id, Some(scope.clone()), sub.clone());
            let rt = permissions.iter().any(|p| p == "offline_access").then(|| {
                issue_refresh_token(RefreshGrant {
                    tenant: tenant.name.clone(),
                    client_id,
                    scp: scope.clone(),
                    sub,
                })
            });
            token_response(lab, &claims, Some(&scope), rt.as_deref())
        }
    }
}

/// `grant_type=refresh_token`: a delegated token renewed without a new sign-in; the refresh
/// token is used once and replaced (Entra rotates refresh tokens).
fn refresh(lab: &Lab, tenant: &Tenant, params: &HashMap<String, String>) -> Response {
    let Some(token) = params.get("refresh_token") else {
        return missing("refresh_token");
    };
    let grant = refresh_grants()
        .lock()
        .ok()
        .and_then(|mut grants| grants.remove(token));
    let Some(grant) =
        grant.filter(|g| g.tenant == tenant.name && params.get("client_id") == Some(&g.client_id))
    else {
        return errors::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "AADSTS9002313: Invalid request. Request is malformed or invalid (the refresh token is unknown, already used or for another client).",
            Some(9002313),
        );
    };
    let claims = access_claims(
        lab,
        tenant,
        &grant.client_id,
        Some(grant.scp.clone()),
        grant.sub.clone(),
    );
    let scope = grant.scp.clone();
    let rt = issue_refresh_token(grant);
    token_response(lab, &claims, Some(&scope), Some(&rt))
}
