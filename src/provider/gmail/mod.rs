//! Gmail API v1 + Admin SDK Directory client (PROVIDER-APIS.md part B), with a service account
//! impersonating each user (domain-wide delegation).
//!
//! `client` (transport: the multipart batch, per-user tokens, Directory API calls as the
//! admin), `directory` (users, groups, domains, permissions), `mail` (locating and listing
//! copies, raw MIME, the Gmail log), `retract` (the retract state machine and restore),
//! `history` (change tracking for trace sync).

use super::ProviderError;
use super::auth::{Authenticator, DIRECTORY_SCOPES, Flow, ServiceAccount};
use super::http::{Http, enc};
use super::scheduler::Pacer;
use crate::config::{Config, TenantConfig};
// The provider modules, as `super::…` in this module's files (their code reads as it did in
// one file).
use super::{errors, header_pairs, http};

mod client;
mod directory;
mod history;
mod mail;
mod retract;
pub use mail::folder_of_labels;

/// Quota units per method (PROVIDER-APIS.md B.4).
pub mod units {
    pub const LIST: u32 = 5;
    pub const GET: u32 = 5;
    pub const MODIFY: u32 = 5;
    pub const TRASH: u32 = 5;
    pub const DELETE: u32 = 10;
    pub const BATCH_MODIFY: u32 = 50;
    pub const HISTORY_LIST: u32 = 2;
    pub const GET_PROFILE: u32 = 1;
}

/// The Gmail client of one Google Workspace tenant.
pub struct GmailClient {
    tenant: TenantConfig,
    http: Http,
    auth: Authenticator,
    gmail: String,
    directory: String,
    admin: String,
    pacer: Pacer,
    directory_scopes: String,
    /// Directory API calls in flight at once (they share the tenant's capacity with Gmail).
    directory_gate: tokio::sync::Semaphore,
}

/// Directory API requests in flight at once per tenant.
const DIRECTORY_IN_FLIGHT: usize = 16;
/// The path of the page after `page` of the listing at `path` (Google's `nextPageToken`), if
/// `page` was not the last.
fn next_page(path: &str, page: &serde_json::Value) -> Option<String> {
    page["nextPageToken"]
        .as_str()
        .map(|token| format!("{path}&pageToken={}", enc(token)))
}

impl GmailClient {
    pub fn new(config: &Config, tenant: &TenantConfig) -> Result<GmailClient, ProviderError> {
        let json = config.service_account_json(tenant)?;
        let source = tenant
            .service_account_file
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| tenant.service_account_env.as_ref().map(|e| format!("${e}")))
            .unwrap_or_else(|| "service account".into());
        let account = ServiceAccount::parse(&json, &source)?;
        let admin = tenant
            .admin_user
            .clone()
            .ok_or_else(|| ProviderError::Tenant {
                tenant: tenant.name.clone(),
                problem: "admin_user is required for google_workspace".into(),
            })?;
        let http = Http::new(&config.http)?;
        Ok(GmailClient {
            auth: Authenticator::new(
                http.clone(),
                Flow::Google {
                    token_url: tenant.google_token_url().to_string(),
                    account: std::sync::Arc::new(account),
                },
            ),
            http,
            gmail: tenant.gmail_url().trim_end_matches('/').to_string(),
            directory: tenant.directory_url().trim_end_matches('/').to_string(),
            admin,
            pacer: Pacer::new(&tenant.limits, true),
            directory_gate: tokio::sync::Semaphore::new(DIRECTORY_IN_FLIGHT),
            // Within their allowed ranges even when the config was built in code.
            tenant: TenantConfig {
                limits: tenant.limits.clamped(),
                ..tenant.clone()
            },
            directory_scopes: DIRECTORY_SCOPES.join(" "),
        })
    }

    pub fn tenant_name(&self) -> &str {
        &self.tenant.name
    }

    /// The tenant's token source.
    pub(crate) fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// The service account's client id (entered in Admin console → domain-wide delegation).
    pub fn delegation_client_id(&self) -> String {
        match &self.auth.flow {
            Flow::Google { account, .. } => account.client_id.clone(),
            Flow::Microsoft { .. } => String::new(),
        }
    }

    fn user_path(mailbox: &str) -> String {
        format!("/gmail/v1/users/{}", enc(mailbox))
    }
}
