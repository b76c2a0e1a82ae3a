//! Access tokens: Microsoft client credentials (secret or certificate assertion), Microsoft device
//! code (an operator's delegated sign-in over SSH), Google service account JWT bearer with
//! domain-wide delegation (`sub` per impersonated user).
//!
//! Tokens are cached in memory only, per (user, scopes), until shortly before expiry; one
//! refresh per key at a time (a burst of 2,000 calls makes one token request).

use super::ProviderError;
use super::errors::{Failure, Operation, classify, transport};
use super::http::Http;
use crate::model::FailureReason;
use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Graph resource's default scope for app-only tokens.
pub const GRAPH_DEFAULT_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Delegated permissions asked for by the device code flow, under the cloud's Graph resource.
/// `Mail.ReadWrite.Shared` covers the operator's own mailbox and every mailbox they hold
/// FullAccess to (plain `Mail.ReadWrite` would cover their own only); `offline_access` brings a
/// refresh token, so a long `watch` renews its token without a new sign-in.
pub const GRAPH_DELEGATED_PERMISSIONS: &[&str] = &[
    "Mail.ReadWrite.Shared",
    "User.Read.All",
    "Domain.Read.All",
    "GroupMember.Read.All",
];

/// The device code flow's `scope` for the Graph resource `resource`.
pub fn graph_delegated_scopes(resource: &str) -> String {
    let resource = resource.trim_end_matches('/');
    GRAPH_DELEGATED_PERMISSIONS
        .iter()
        .map(|p| format!("{resource}/{p}"))
        .chain(std::iter::once("offline_access".to_string()))
        .collect::<Vec<_>>()
        .join(" ")
}
/// Google scope for Gmail (delete needs it; narrower scopes cannot hard delete).
pub const GMAIL_SCOPE: &str = "https://mail.google.com/";
/// Google directory scopes (read-only).
pub const DIRECTORY_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly",
];

/// The Admin SDK Reports scope the Gmail log (tenant-wide trace source) needs.
pub const REPORTS_SCOPE: &str = "https://www.googleapis.com/auth/admin.reports.audit.readonly";

/// Certificate assertion signature flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionAlg {
    /// Current docs: PS256 with `x5t#S256` (SHA-256 thumbprint).
    Ps256,
    /// Older docs: RS256 with `x5t` (SHA-1 thumbprint).
    Rs256,
}

/// Microsoft credential material.
pub enum MsCredential {
    Secret(Secret),
    Certificate {
        key: EncodingKey,
        certificate_der: Vec<u8>,
        alg: AssertionAlg,
    },
    DeviceCode,
}

/// A Google service account key (the JSON file's useful part).
pub struct ServiceAccount {
    pub client_email: String,
    pub client_id: String,
    pub private_key_id: String,
    key: EncodingKey,
}

#[derive(Deserialize)]
struct ServiceAccountFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    client_id: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
}

impl ServiceAccount {
    /// Parses a service account JSON key; `source` names the file (or variable) for errors.
    pub fn parse(json: &Secret, source: &str) -> Result<ServiceAccount, ProviderError> {
        let bad = |problem: String| ProviderError::Credentials {
            source_name: source.to_string(),
            problem,
        };
        let file: ServiceAccountFile = serde_json::from_str(json.expose()).map_err(|e| {
            bad(format!(
                "not a service account key: not JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        match file.kind.as_deref() {
            Some("service_account") => {}
            Some(other) => {
                return Err(bad(format!(
                    "not a service account key: \"type\" is {other:?}, expected \"service_account\" (download a key under IAM → Service accounts → Keys)"
                )));
            }
            None => {
                return Err(bad(
                    "not a service account key: no \"type\": \"service_account\" field".into(),
                ));
            }
        }
        let client_email = file
            .client_email
            .ok_or_else(|| bad("service account key has no \"client_email\"".into()))?;
        let pem = file
            .private_key
            .ok_or_else(|| bad("service account key has no \"private_key\"".into()))?;
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
            bad("service account \"private_key\" is not an RSA private key in PEM form".into())
        })?;
        Ok(ServiceAccount {
            client_email,
            client_id: file.client_id.unwrap_or_default(),
            private_key_id: file.private_key_id.unwrap_or_default(),
            key,
        })
    }

    /// The JWT bearer assertion for `sub` and `scopes` (google-auth's shape).
    pub fn assertion(
        &self,
        token_url: &str,
        subject: &str,
        scopes: &str,
    ) -> Result<String, Failure> {
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": scopes,
            "aud": token_url,
            "iat": now,
            "exp": now + 3600,
            "sub": subject,
        });
        let mut header = Header::new(Algorithm::RS256);
        if !self.private_key_id.is_empty() {
            header.kid = Some(self.private_key_id.clone());
        }
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| {
            Failure::new(
                FailureReason::NotAuthorized,
                None,
                "assertion",
                e.to_string(),
            )
        })
    }
}

/// Reads a certificate (PEM, first `CERTIFICATE` block) and its RSA private key.
pub fn load_certificate(
    certificate_file: &std::path::Path,
    private_key_file: &std::path::Path,
) -> Result<(Vec<u8>, EncodingKey), ProviderError> {
    crate::secret::regular_file(certificate_file).map_err(|e| ProviderError::Credentials {
        source_name: certificate_file.display().to_string(),
        problem: e.to_string(),
    })?;
    let cert_text =
        std::fs::read_to_string(certificate_file).map_err(|e| ProviderError::Credentials {
            source_name: certificate_file.display().to_string(),
            problem: format!("cannot read certificate: {e}"),
        })?;
    let der = pem_block(&cert_text, "CERTIFICATE").ok_or_else(|| ProviderError::Credentials {
        source_name: certificate_file.display().to_string(),
        problem: "no PEM \"-----BEGIN CERTIFICATE-----\" block".into(),
    })?;
    let key_text = crate::secret::read_secret_file(private_key_file).map_err(|e| {
        ProviderError::Credentials {
            source_name: private_key_file.display().to_string(),
            problem: e.to_string(),
        }
    })?;
    let key = EncodingKey::from_rsa_pem(key_text.expose().as_bytes()).map_err(|_| {
        ProviderError::Credentials {
            source_name: private_key_file.display().to_string(),
            problem: "not an RSA private key in PEM form".into(),
        }
    })?;
    Ok((der, key))
}

/// Decodes the first PEM block with this label.
pub fn pem_block(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// The client assertion for Microsoft certificate credentials.
pub fn client_assertion(
    key: &EncodingKey,
    certificate_der: &[u8],
    alg: AssertionAlg,
    token_url: &str,
    client_id: &str,
) -> Result<String, Failure> {
    let mut header = match alg {
        AssertionAlg::Ps256 => {
            let mut h = Header::new(Algorithm::PS256);
            h.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(Sha256::digest(certificate_der)));
            h
        }
        AssertionAlg::Rs256 => {
            let mut h = Header::new(Algorithm::RS256);
            h.x5t = Some(URL_SAFE_NO_PAD.encode(Sha1::digest(certificate_der)));
            h
        }
    };
    header.typ = Some("JWT".into());
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "aud": token_url,
        "iss": client_id,
        "sub": client_id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now,
        "iat": now,
        "exp": now + 600,
    });
    jsonwebtoken::encode(&header, &claims, key).map_err(|e| {
        Failure::new(
            FailureReason::NotAuthorized,
            None,
            "assertion",
            e.to_string(),
        )
    })
}

/// A cached token.
#[derive(Clone)]
struct Cached {
    token: Secret,
    refresh_at: Instant,
    granted: Vec<String>,
    /// Delegated sign-in (`offline_access`): renews the token without a new sign-in. Kept in
    /// memory only, like the token.
    refresh_token: Option<Secret>,
}

/// One cache entry, locked while it is being refreshed.
type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// Tokens per (user, scopes), in memory only.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<(String, String), Slot>>,
}

impl TokenCache {
    fn slot(&self, key: (String, String)) -> Slot {
        let mut map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key).or_default().clone()
    }
}

/// When to refresh: shortly before expiry (a fifth of the lifetime, at most a minute early).
pub fn refresh_after(expires_in: Duration) -> Duration {
    let margin = (expires_in / 5).min(Duration::from_secs(60));
    expires_in.saturating_sub(margin)
}

/// A token endpoint's success body.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// RS256 signatures made at once in this process: one per core, and one more. A cold Google
/// run asks for thousands of users' tokens together; unbounded, the blocking pool started a
/// thread per waiting signature (up to 512), each faulting in its own stack and allocator heap
/// (a tenth of the run's CPU went to zeroing fresh pages), and the signatures crowded out the
/// async workers serving the other tenants. Bounded, the same signatures take the same cores'
/// time.
/// One more than the cores: a slot is also held while its signature waits for a blocking thread
/// and its answer for an async worker, and with exactly one per core the 10,000-mailbox mixed
/// cold run (`retract_e2e`) signed on fewer than two cores (2.71-2.93 s against 2.60-2.84 s
/// with one more, alternated runs).
fn signers() -> &'static tokio::sync::Semaphore {
    static SIGNERS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SIGNERS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        tokio::sync::Semaphore::new(cores + 1)
    })
}

/// Gets and caches tokens for one tenant.
pub struct Authenticator {
    http: Http,
    cache: TokenCache,
    pub flow: Flow,
    /// Tokens kept across runs (`[auth] token_cache`), with the tenant name they are kept under.
    kept: std::sync::OnceLock<(Arc<super::token_file::TokenFile>, String)>,
}

/// How tokens are obtained.
pub enum Flow {
    Microsoft {
        token_url: String,
        devicecode_url: String,
        client_id: String,
        credential: MsCredential,
        /// The cloud's Graph resource (`https://graph.microsoft.com`, …): delegated scopes
        /// are named under it.
        resource: String,
    },
    Google {
        token_url: String,
        account: std::sync::Arc<ServiceAccount>,
    },
}

impl Authenticator {
    pub fn new(http: Http, flow: Flow) -> Authenticator {
        Authenticator {
            http,
            cache: TokenCache::default(),
            flow,
            kept: std::sync::OnceLock::new(),
        }
    }

    /// Keeps this tenant's app-only tokens in `file` across runs (delegated sign-ins are never
    /// kept there). Set once; a second call changes nothing.
    pub fn keep_tokens_in(&self, file: Arc<super::token_file::TokenFile>, tenant: &str) {
        if matches!(
            self.flow,
            Flow::Microsoft {
                credential: MsCredential::DeviceCode,
                ..
            }
        ) {
            return;
        }
        let _ = self.kept.set((file, tenant.to_string()));
    }

    /// The token file and this token's key in it, when tokens are kept.
    fn kept_key(
        &self,
        subject: &str,
        scopes: &str,
    ) -> Option<(&super::token_file::TokenFile, String)> {
        let (file, tenant) = self.kept.get()?;
        let client = match &self.flow {
            Flow::Microsoft { client_id, .. } => client_id.as_str(),
            Flow::Google { account, .. } => account.client_email.as_str(),
        };
        Some((
            file.as_ref(),
            super::token_file::key(tenant, client, subject, scopes),
        ))
    }

    /// A valid token for `subject` (Google: the impersonated user; Microsoft: ignored) and
    /// `scopes`, from the cache when fresh.
    pub async fn token(&self, subject: &str, scopes: &str) -> Result<Secret, Failure> {
        Ok(self.token_and_grants(subject, scopes).await?.0)
    }

    /// The token and what the token endpoint (or the token itself) says was granted.
    pub async fn token_and_grants(
        &self,
        subject: &str,
        scopes: &str,
    ) -> Result<(Secret, Vec<String>), Failure> {
        let subject = match self.flow {
            Flow::Microsoft { .. } => "",
            Flow::Google { .. } => subject,
        };
        let slot = self
            .cache
            .slot((subject.to_ascii_lowercase(), scopes.to_string()));
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok((c.token.clone(), c.granted.clone()));
        }
        // A delegated sign-in renews with its refresh token; only when that is refused (revoked,
        // expired after 90 days idle, Conditional Access) does the operator sign in again.
        let renewed = match guard.as_ref().and_then(|c| c.refresh_token.clone()) {
            Some(rt) => match self.renew(&rt).await {
                Ok(c) => Some(c),
                Err(f) => {
                    tracing::warn!(code = %f.code, "refresh token refused; signing in again");
                    None
                }
            },
            None => None,
        };
        // Kept by an earlier run (or another process) and still valid: no signature, no request.
        // Not after a 401 here (the entry in memory was marked stale), which dropped it.
        let kept = self.kept_key(subject, scopes);
        if guard.is_none()
            && let Some(k) = kept.as_ref().and_then(|(file, key)| file.get(key))
        {
            let out = (k.token.clone(), k.granted.clone());
            *guard = Some(Cached {
                token: k.token,
                refresh_at: Instant::now() + k.valid_for,
                granted: k.granted,
                refresh_token: None,
            });
            return Ok(out);
        }
        let fresh = match renewed {
            Some(c) => c,
            None => self.fetch(subject, scopes).await?,
        };
        if let Some((file, key)) = &kept
            && fresh.refresh_token.is_none()
        {
            let valid_for = fresh.refresh_at.saturating_duration_since(Instant::now());
            file.put(key, &fresh.token, &fresh.granted, valid_for);
        }
        let out = (fresh.token.clone(), fresh.granted.clone());
        *guard = Some(fresh);
        Ok(out)
    }

    /// Forgets `token` (after a 401) so the next call fetches a new one; a token refreshed
    /// meanwhile by another call is kept.
    pub async fn invalidate(&self, subject: &str, scopes: &str, token: &Secret) {
        let subject = match self.flow {
            Flow::Microsoft { .. } => "",
            Flow::Google { .. } => subject,
        };
        let slot = self
            .cache
            .slot((subject.to_ascii_lowercase(), scopes.to_string()));
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_mut()
            && c.token.expose() == token.expose()
        {
            // Stale, not gone: a refresh token it carries still renews it.
            c.refresh_at = Instant::now();
        }
        if let Some((file, key)) = self.kept_key(subject, scopes) {
            file.drop_token(&key, token);
        }
    }

    /// Renews a delegated token with its refresh token (`grant_type=refresh_token`; Entra
    /// rotates the refresh token, so the new one is kept).
    async fn renew(&self, refresh_token: &Secret) -> Result<Cached, Failure> {
        let Flow::Microsoft {
            token_url,
            client_id,
            resource,
            ..
        } = &self.flow
        else {
            return Err(Failure::new(
                FailureReason::NotAuthorized,
                None,
                "no_refresh",
                "only a Microsoft delegated sign-in renews with a refresh token",
            ));
        };
        let scopes = graph_delegated_scopes(resource);
        tracing::debug!("renewing the delegated token with its refresh token");
        let resp = self
            .http
            .post_form(
                token_url,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id),
                    ("refresh_token", refresh_token.expose()),
                    ("scope", &scopes),
                ],
            )
            .await?;
        let mut renewed = token_result(resp, &scopes)?;
        if renewed.refresh_token.is_none() {
            renewed.refresh_token = Some(refresh_token.clone());
        }
        Ok(renewed)
    }

    async fn fetch(&self, subject: &str, scopes: &str) -> Result<Cached, Failure> {
        match &self.flow {
            Flow::Google { token_url, account } => {
                // An RS256 signature per impersonated user costs about half a millisecond of CPU:
                // signed off the async workers so a burst of new users does not stall I/O, and
                // at most one per core (and one more) at a time (see `SIGNERS`). The slot is held
                // for the signature only, not for the token request after it: held across that
                // round trip, a core sat idle for every token in flight.
                let assertion = {
                    let _signer = signers()
                        .acquire()
                        .await
                        .map_err(|e| super::errors::internal(&format!("signing slot: {e}")))?;
                    let (account, url, sub, scopes) = (
                        account.clone(),
                        token_url.clone(),
                        subject.to_string(),
                        scopes.to_string(),
                    );
                    tokio::task::spawn_blocking(move || account.assertion(&url, &sub, &scopes))
                        .await
                        .map_err(|e| super::errors::internal(&format!("signing task: {e}")))??
                };
                tracing::debug!(user = subject, "requesting Google access token");
                let resp = self
                    .http
                    .post_form(
                        token_url,
                        &[
                            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                            ("assertion", &assertion),
                        ],
                    )
                    .await?;
                token_result(resp, scopes)
            }
            Flow::Microsoft {
                token_url,
                devicecode_url,
                client_id,
                credential,
                resource,
            } => match credential {
                MsCredential::Secret(secret) => {
                    tracing::debug!("requesting Microsoft access token (client secret)");
                    let resp = self
                        .http
                        .post_form(
                            token_url,
                            &[
                                ("grant_type", "client_credentials"),
                                ("client_id", client_id),
                                ("scope", scopes),
                                ("client_secret", secret.expose()),
                            ],
                        )
                        .await?;
                    token_result(resp, scopes)
                }
                MsCredential::Certificate {
                    key,
                    certificate_der,
                    alg,
                } => {
                    tracing::debug!("requesting Microsoft access token (certificate)");
                    let assertion =
                        client_assertion(key, certificate_der, *alg, token_url, client_id)?;
                    let resp = self
                        .http
                        .post_form(
                            token_url,
                            &[
                                ("grant_type", "client_credentials"),
                                ("client_id", client_id),
                                ("scope", scopes),
                                (
                                    "client_assertion_type",
                                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                                ),
                                ("client_assertion", &assertion),
                            ],
                        )
                        .await?;
                    token_result(resp, scopes)
                }
                MsCredential::DeviceCode => {
                    self.device_code(token_url, devicecode_url, client_id, resource)
                        .await
                }
            },
        }
    }

    /// Device code flow (RFC 8628 as Entra implements it): print the code and URL for the
    /// operator, then poll honouring `interval`, `authorization_pending`, `slow_down`,
    /// `expired_token`.
    async fn device_code(
        &self,
        token_url: &str,
        devicecode_url: &str,
        client_id: &str,
        resource: &str,
    ) -> Result<Cached, Failure> {
        let scopes = graph_delegated_scopes(resource);
        let resp = self
            .http
            .post_form(
                devicecode_url,
                &[("client_id", client_id), ("scope", &scopes)],
            )
            .await?;
        let body = resp.json();
        if !(200..300).contains(&resp.status) {
            return Err(classify(resp.status, &body, Operation::Read));
        }
        let device_code = body["device_code"].as_str().unwrap_or_default().to_string();
        let user_code = body["user_code"].as_str().unwrap_or_default();
        let uri = body["verification_uri"].as_str().unwrap_or_default();
        if device_code.is_empty() || user_code.is_empty() {
            return Err(Failure::new(
                FailureReason::ProviderError,
                Some(resp.status),
                "device_code",
                "device code response lacks device_code or user_code",
            ));
        }
        let mut interval = body["interval"].as_u64().unwrap_or(5).max(1);
        let expires_in = body["expires_in"].as_u64().unwrap_or(900);
        let deadline = Instant::now() + Duration::from_secs(expires_in);
        // The operator reads this on the terminal (stderr): the user code is not a secret
        // credential by itself, but it is not logged either. Not `eprintln!`, which panics
        // when stderr is a closed pipe.
        let _ = writeln!(
            std::io::stderr(),
            "To sign in, open {uri} and enter the code {user_code} (expires in {expires_in} s)."
        );
        loop {
            tokio::time::sleep(Duration::from_secs(interval)).await;
            if Instant::now() > deadline {
                return Err(Failure::new(
                    FailureReason::NotAuthorized,
                    None,
                    "expired_token",
                    "the device code expired before sign-in completed",
                ));
            }
            let resp = self
                .http
                .post_form(
                    token_url,
                    &[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                        ("client_id", client_id),
                        ("device_code", &device_code),
                    ],
                )
                .await?;
            if (200..300).contains(&resp.status) {
                return token_result(resp, &scopes);
            }
            let body = resp.json();
            match body["error"].as_str().unwrap_or_default() {
                "authorization_pending" => continue,
                "slow_down" => interval += 5,
                _ => return Err(classify(resp.status, &body, Operation::Read)),
            }
        }
    }
}

fn token_result(resp: super::http::RawResponse, scopes: &str) -> Result<Cached, Failure> {
    let body = resp.json();
    if !(200..300).contains(&resp.status) {
        let mut f = classify(resp.status, &body, Operation::Read);
        if matches!(resp.status, 400 | 401) {
            f.reason = FailureReason::NotAuthorized;
        }
        return Err(f);
    }
    let parsed: TokenResponse = serde_json::from_value(body)
        .map_err(|_| transport("token endpoint answered without an access_token"))?;
    let expires_in = parsed
        .expires_in
        .as_ref()
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(3599);
    let granted = match parsed.scope {
        Some(s) if !s.is_empty() && !s.ends_with("/.default") => {
            s.split_whitespace().map(str::to_string).collect()
        }
        _ => roles_claim(&parsed.access_token)
            .unwrap_or_else(|| scopes.split_whitespace().map(str::to_string).collect()),
    };
    Ok(Cached {
        token: Secret::new(parsed.access_token),
        refresh_at: Instant::now() + refresh_after(Duration::from_secs(expires_in)),
        granted,
        refresh_token: parsed.refresh_token.map(Secret::new),
    })
}

/// The `roles` (or `scp`) claim of a JWT access token, read without verification: only for
/// doctor's report of what was granted; calls never depend on it.
pub fn roles_claim(token: &str) -> Option<Vec<String>> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if let Some(roles) = v["roles"].as_array() {
        return Some(
            roles
                .iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect(),
        );
    }
    v["scp"]
        .as_str()
        .map(|s| s.split_whitespace().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    const KEY: &str = include_str!("../lab/keys/ms-app.key");
    const PUB: &str = include_str!("../lab/keys/ms-app.pub.pem");
    const CERT: &str = include_str!("../lab/keys/ms-app.crt");

    #[test]
    fn certificate_assertion_ps256_and_rs256() {
        let key = EncodingKey::from_rsa_pem(KEY.as_bytes()).expect("key");
        let der = pem_block(CERT, "CERTIFICATE").expect("cert");
        let url = "https://login.example/t/oauth2/v2.0/token";
        for (alg, jalg) in [
            (AssertionAlg::Ps256, Algorithm::PS256),
            (AssertionAlg::Rs256, Algorithm::RS256),
        ] {
            let jwt = client_assertion(&key, &der, alg, url, "app-1").expect("jwt");
            let header = jsonwebtoken::decode_header(&jwt).expect("header");
            assert_eq!(header.alg, jalg);
            match alg {
                AssertionAlg::Ps256 => assert_eq!(
                    header.x5t_s256.as_deref(),
                    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der)).as_str())
                ),
                AssertionAlg::Rs256 => assert_eq!(
                    header.x5t.as_deref(),
                    Some(URL_SAFE_NO_PAD.encode(Sha1::digest(&der)).as_str())
                ),
            }
            let mut v = Validation::new(jalg);
            v.set_audience(&[url]);
            let data = jsonwebtoken::decode::<serde_json::Value>(
                &jwt,
                &DecodingKey::from_rsa_pem(PUB.as_bytes()).expect("pub"),
                &v,
            )
            .expect("verifies");
            assert_eq!(data.claims["iss"], "app-1");
            assert_eq!(data.claims["sub"], "app-1");
        }
    }

    #[test]
    fn service_account_files_are_checked() {
        let sa = serde_json::json!({
            "type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
            "private_key_id": "k1",
            "private_key": include_str!("../lab/keys/google-sa.key"),
        });
        let ok = ServiceAccount::parse(&Secret::new(sa.to_string()), "sa.json").expect("parse");
        let jwt = ok
            .assertion(
                "https://oauth2.googleapis.com/token",
                "u@x.com",
                GMAIL_SCOPE,
            )
            .expect("jwt");
        let header = jsonwebtoken::decode_header(&jwt).expect("header");
        assert_eq!(header.kid.as_deref(), Some("k1"));
        let claims = roles_claim(&jwt);
        assert!(claims.is_none());

        let user = serde_json::json!({"type": "authorized_user", "client_id": "x"});
        let err = ServiceAccount::parse(&Secret::new(user.to_string()), "/etc/sa.json")
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.starts_with("/etc/sa.json: not a service account key"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let err = ServiceAccount::parse(&Secret::new("{oops"), "sa.json")
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("not JSON"), "{err}");
    }

    #[test]
    fn refresh_is_shortly_before_expiry() {
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(3540)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(5)),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn roles_claim_reads_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"roles":["Mail.ReadWrite"]}"#);
        assert_eq!(
            roles_claim(&format!("h.{payload}.s")),
            Some(vec!["Mail.ReadWrite".to_string()])
        );
    }
}
