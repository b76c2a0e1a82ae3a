//! Access tokens the lab issues (Microsoft and Google token endpoints) and checks (Graph, Gmail,
//! Directory). They are real JWTs (HS256 with a per-lab secret) carrying the tenant, the granted
//! roles or scopes, and for Google the impersonated user; clients treat them as opaque, as they
//! must with the real services.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Audience of Graph tokens.
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
/// Audience of Google tokens (Gmail and Directory).
pub const GOOGLE_AUDIENCE: &str = "https://www.googleapis.com/";

/// Claims of a lab access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// Tenant name in the lab.
    pub tid: String,
    /// Client (application) id.
    pub appid: String,
    /// Graph application roles (app-only Microsoft tokens).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Space-separated delegated scopes (Microsoft device code) or Google scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<String>,
    /// Impersonated user (Google) or signed-in user (Microsoft device code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

impl AccessClaims {
    /// Scopes as a list (Google tokens and delegated Microsoft tokens).
    pub fn scopes(&self) -> Vec<&str> {
        self.scp
            .as_deref()
            .map(|s| s.split_whitespace().collect())
            .unwrap_or_default()
    }

    /// Whether the token carries this Graph role or scope.
    pub fn has(&self, permission: &str) -> bool {
        self.roles.iter().any(|r| r == permission) || self.scopes().contains(&permission)
    }
}

/// Why a presented token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenProblem {
    Missing,
    Expired,
    Invalid,
}

/// Mints and checks lab tokens.
pub struct TokenIssuer {
    secret: Vec<u8>,
    /// Tokens whose signature was verified, with their claims: a token is presented on every
    /// request (each part of a batch), and verifying it each time was a tenth of the lab's CPU
    /// in a 10,000-mailbox retraction. Expiry and audience are still checked on every use.
    verified: std::sync::Mutex<std::collections::HashMap<String, AccessClaims>>,
}

/// Verified tokens remembered at most (then forgotten all at once and verified again).
const VERIFIED_MAX: usize = 100_000;

impl TokenIssuer {
    pub fn new(secret: Vec<u8>) -> Self {
        TokenIssuer {
            secret,
            verified: Default::default(),
        }
    }

    pub fn mint(&self, claims: &AccessClaims) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .unwrap_or_default()
    }

    /// Checks an `Authorization` header value (`Bearer …`) for the given audience.
    pub fn check(
        &self,
        authorization: Option<&str>,
        audience: &str,
    ) -> Result<AccessClaims, TokenProblem> {
        self.check_any(authorization, &[audience])
    }

    /// Like [`check`](Self::check), for a token meant for any of `audiences`.
    pub fn check_any(
        &self,
        authorization: Option<&str>,
        audiences: &[&str],
    ) -> Result<AccessClaims, TokenProblem> {
        let header = authorization.ok_or(TokenProblem::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or(TokenProblem::Invalid)?
            .trim();
        self.check_token_at(token, audiences, chrono::Utc::now().timestamp())
    }

    /// [`check_any`](Self::check_any) of a bare token at `now` (Unix seconds): the signature
    /// (once per token), then expiry and audience, in the order `jsonwebtoken` checks them.
    fn check_token_at(
        &self,
        token: &str,
        audiences: &[&str],
        now: i64,
    ) -> Result<AccessClaims, TokenProblem> {
        let known = self
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(token).cloned());
        let claims = match known {
            Some(claims) => claims,
            None => {
                let mut validation = Validation::new(Algorithm::HS256);
                validation.validate_exp = false;
                validation.validate_aud = false;
                let claims = jsonwebtoken::decode::<AccessClaims>(
                    token,
                    &DecodingKey::from_secret(&self.secret),
                    &validation,
                )
                .map_err(|_| TokenProblem::Invalid)?
                .claims;
                if let Ok(mut m) = self.verified.lock() {
                    if m.len() >= VERIFIED_MAX {
                        m.clear();
                    }
                    m.insert(token.to_string(), claims.clone());
                }
                claims
            }
        };
        if claims.exp < now {
            return Err(TokenProblem::Expired);
        }
        if !audiences.contains(&claims.aud.as_str()) {
            return Err(TokenProblem::Invalid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_in: i64) -> AccessClaims {
        let now = chrono::Utc::now().timestamp();
        AccessClaims {
            iss: "lab".into(),
            aud: GRAPH_AUDIENCE.into(),
            tid: "contoso".into(),
            appid: "app".into(),
            roles: vec!["Mail.ReadWrite".into()],
            scp: None,
            sub: None,
            iat: now,
            exp: now + exp_in,
            jti: "1".into(),
        }
    }

    /// A token verified once is remembered, but it still expires, and its audience is still
    /// checked on every use.
    #[test]
    fn a_remembered_token_still_expires_and_keeps_its_audience() {
        let issuer = TokenIssuer::new(b"k".to_vec());
        let c = claims(60);
        let token = issuer.mint(&c);
        let now = chrono::Utc::now().timestamp();
        assert_eq!(
            issuer.check_token_at(&token, &[GRAPH_AUDIENCE], now),
            Ok(c.clone())
        );
        assert_eq!(
            issuer.check_token_at(&token, &[GRAPH_AUDIENCE], now),
            Ok(c.clone())
        );
        assert_eq!(
            issuer.check_token_at(&token, &[GOOGLE_AUDIENCE], now),
            Err(TokenProblem::Invalid)
        );
        assert_eq!(
            issuer.check_token_at(&token, &[GRAPH_AUDIENCE], c.exp + 1),
            Err(TokenProblem::Expired)
        );
        assert_eq!(
            issuer.check_token_at(&token, &[GRAPH_AUDIENCE], c.exp),
            Ok(c.clone())
        );
        // A token of another issuer is refused, also after a good one was remembered.
        let forged = TokenIssuer::new(b"x".to_vec()).mint(&c);
        assert_eq!(
            issuer.check_token_at(&forged, &[GRAPH_AUDIENCE], now),
            Err(TokenProblem::Invalid)
        );
    }

    #[test]
    fn round_trip_expiry_and_audience() {
        let issuer = TokenIssuer::new(b"k".to_vec());
        let good = format!("Bearer {}", issuer.mint(&claims(60)));
        assert!(
            issuer
                .check(Some(&good), GRAPH_AUDIENCE)
                .expect("valid")
                .has("Mail.ReadWrite")
        );
        assert_eq!(
            issuer.check(Some(&good), GOOGLE_AUDIENCE),
            Err(TokenProblem::Invalid)
        );
        let old = format!("Bearer {}", issuer.mint(&claims(-5)));
        assert_eq!(
            issuer.check(Some(&old), GRAPH_AUDIENCE),
            Err(TokenProblem::Expired)
        );
        assert_eq!(
            issuer.check(None, GRAPH_AUDIENCE),
            Err(TokenProblem::Missing)
        );
        let forged = format!(
            "Bearer {}",
            TokenIssuer::new(b"x".to_vec()).mint(&claims(60))
        );
        assert_eq!(
            issuer.check(Some(&forged), GRAPH_AUDIENCE),
            Err(TokenProblem::Invalid)
        );
    }
}
