//! Google's OAuth 2.0 token endpoint as the lab serves it: the service-account JWT bearer grant
//! with domain-wide delegation (PROVIDER-APIS.md B.6), and the bearer check the Gmail and
//! Directory faces share.
//!
//! The assertion is verified for real (RS256 with the tenant's service-account public key), its
//! audience, lifetime, scopes (each must be delegated to the client) and impersonated user
//! (`sub`) are checked, and the lab mints an access token carrying tenant, scopes and `sub`.

// Handler helpers return the finished error response; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use super::errors;
use super::state::TenantIdx;
use super::tokens::{AccessClaims, GOOGLE_AUDIENCE, TokenProblem};
use super::{Lab, SharedLab};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;

/// The JWT bearer grant type.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The audience Google requires in service-account assertions.
pub const GOOGLE_TOKEN_AUDIENCE: &str = "https://oauth2.googleapis.com/token";
/// Longest assertion lifetime Google accepts (`exp` at most one hour after `iat`).
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 3600;

/// The token endpoint routes (`POST /token`).
pub fn routes() -> Router<SharedLab> {
    Router::new().route("/token", post(token))
}

/// Claims of a service-account assertion.
#[derive(Debug, Deserialize)]
struct Assertion {
    iss: String,
    #[serde(default)]
    scope: String,
    aud: String,
    iat: i64,
    exp: i64,
    #[serde(default)]
    sub: Option<String>,
}

fn invalid_grant(description: &str) -> Response {
    errors::oauth(StatusCode::BAD_REQUEST, "invalid_grant", description, None)
}

/// A token request being answered, counted in `Stats::tokens_in_flight` (and its most at
/// once) until dropped.
struct Answering(SharedLab);

impl Answering {
    fn enter(lab: &SharedLab) -> Answering {
        use std::sync::atomic::Ordering;
        let now = lab.stats.tokens_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        lab.stats
            .tokens_in_flight_max
            .fetch_max(now, Ordering::SeqCst);
        Answering(lab.clone())
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0
            .stats
            .tokens_in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `POST /token`: exchanges a signed service-account JWT for an access token.
async fn token(
    State(lab): State<SharedLab>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let _answering = Answering::enter(&lab);
    if !lab.options.token_latency.is_zero() {
        tokio::time::sleep(lab.options.token_latency).await;
    }
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    if grant != JWT_BEARER {
        return errors::oauth(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type: ",
            None,
        );
    }
    let Some(jwt) = form.get("assertion").map(|s| s.trim()) else {
        return invalid_grant("Missing required parameter: assertion");
    };
    let Some(unverified) = peek_claims(jwt) else {
        return invalid_grant(
            "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    };
    // Find the tenant whose service account signed this, and copy what the checks need.
    let found = {
        let state = lab.state();
        state
            .tenants
            .iter()
            .enumerate()
            .find(|(_, t)| {
                !t.credentials.client_email.is_empty()
                    && t.credentials
                        .client_email
                        .eq_ignore_ascii_case(&unverified.iss)
            })
            .map(|(i, t)| {
                (
                    i,
                    t.name.clone(),
                    t.credentials.client_id.clone(),
                    t.credentials.public_key_pem.clone(),
                    t.credentials.granted.clone(),
                )
            })
    };
    let Some((t, tenant_name, client_id, pem, granted)) = found else {
        return invalid_grant("Invalid grant: account not found");
    };
    let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) else {
        return errors::oauth(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_failure",
            "lab: the tenant's service-account public key does not parse",
            None,
        );
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<Assertion>(jwt, &key, &validation) {
        Ok(data) => data.claims,
        Err(_) => return invalid_grant("Invalid JWT Signature."),
    };
    let base_token = format!("{}/token", lab.base_url());
    if claims.aud != GOOGLE_TOKEN_AUDIENCE && claims.aud != base_token {
        return invalid_grant(&format!(
            "Invalid JWT: Failed audience check. The right audience is {GOOGLE_TOKEN_AUDIENCE}"
        ));
    }
    let now = chrono::Utc::now().timestamp();
    if claims.exp > claims.iat + MAX_ASSERTION_LIFETIME_SECS
        || claims.exp <= now
        || claims.iat > now + 300
    {
        return invalid_grant(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let scopes: Vec<&str> = claims.scope.split_whitespace().collect();
    if scopes.is_empty() {
        return errors::oauth(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
            None,
        );
    }
    if scopes.iter().any(|s| !granted.iter().any(|g| g == s)) {
        return errors::oauth(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
            None,
        );
    }
    let sub = match &claims.sub {
        Some(s) if !s.is_empty() => {
            let state = lab.state();
            match state.tenants.get(t).and_then(|tn| tn.user(s)) {
                Some(u) => Some(u.address.clone()),
                None => {
                    drop(state);
                    return invalid_grant("Invalid email or User ID");
                }
            }
        }
        _ => None,
    };
    let ttl = lab.options.token_ttl.as_secs() as i64;
    let access = AccessClaims {
        iss: format!("{}/", lab.base_url()),
        aud: GOOGLE_AUDIENCE.to_string(),
        tid: tenant_name,
        appid: client_id,
        roles: Vec::new(),
        scp: Some(scopes.join(" ")),
        sub,
        iat: now,
        exp: now + ttl,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    let body = serde_json::json!({
        "access_token": lab.tokens.mint(&access),
        "scope": scopes.join(" "),
        "token_type": "Bearer",
        "expires_in": ttl,
    });
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    response
}

/// The claims of a JWT before its signature is checked (to learn who claims to sign it).
fn peek_claims(jwt: &str) -> Option<Assertion> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A checked Google bearer token: the tenant it was issued for and its claims.
#[derive(Debug, Clone)]
pub struct GoogleCaller {
    pub tenant: TenantIdx,
    pub claims: AccessClaims,
}

impl GoogleCaller {
    /// Whether the token holds at least one of `accepted` scopes.
    pub fn has_any_scope(&self, accepted: &[&str]) -> bool {
        let held = self.claims.scopes();
        accepted.iter().any(|s| held.contains(s))
    }
}

/// The 401 every Google API sends for a missing, invalid or expired token.
pub fn auth_error() -> Response {
    errors::google(
        StatusCode::UNAUTHORIZED,
        "authError",
        "global",
        "Invalid Credentials",
    )
}

/// The 403 for a token without a scope the method accepts.
pub fn insufficient_scopes() -> Response {
    let mut r = errors::google(
        StatusCode::FORBIDDEN,
        "insufficientPermissions",
        "global",
        "Request had insufficient authentication scopes.",
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static(
            "Bearer realm=\"https://accounts.google.com/\", error=\"insufficient_scope\"",
        ),
    );
    r
}

/// Checks the `Authorization` header for a lab Google token of a known tenant.
pub fn check_bearer(lab: &Lab, headers: &HeaderMap) -> Result<GoogleCaller, Response> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let claims = lab
        .tokens
        .check(auth, GOOGLE_AUDIENCE)
        .map_err(|_: TokenProblem| auth_error())?;
    let tenant = lab
        .state()
        .tenant_index(&claims.tid)
        .ok_or_else(auth_error)?;
    Ok(GoogleCaller { tenant, claims })
}
