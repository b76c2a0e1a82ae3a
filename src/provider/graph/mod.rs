//! Microsoft Graph v1.0 client (PROVIDER-APIS.md part A).
//!
//! `client` (transport: the `$batch` call, tokens, paging), `directory` (users, groups,
//! domains, permissions), `mail` (locating and listing copies, raw MIME, the message trace),
//! `retract` (the retract state machine and restore), `delta` (change tracking for trace sync).

use super::ProviderError;
use super::auth::{AssertionAlg, Authenticator, Flow, MsCredential, load_certificate};
use super::http::Http;
use super::scheduler::Pacer;
use crate::config::{Config, MicrosoftAuth, TenantConfig};
use crate::model::Folder;
use std::collections::HashMap;
use std::sync::Mutex;

mod client;
mod delta;
mod directory;
mod mail;
mod retract;
pub(crate) use client::token_answer;
pub use delta::LEGACY_DELTA_FOLDERS;
// The provider modules, as `super::…` in this module's files (their code reads as it did in
// one file).
use super::{errors, header_pairs};

/// What `trace sync` reads of a message (listing and delta).
const SYNC_SELECT: &str = "id,internetMessageId,from,toRecipients,ccRecipients,subject,receivedDateTime,isRead,parentFolderId,conversationId,internetMessageHeaders";

/// Application permissions clawback needs.
pub const NEEDED_ROLES: &[&str] = &[
    "Mail.ReadWrite",
    "User.Read.All",
    "Domain.Read.All",
    "GroupMember.Read.All",
];

/// The application permission of the message trace (tenant-wide trace source).
pub const MESSAGE_TRACE_ROLE: &str = "ExchangeMessageTrace.Read.All";

/// The Graph client of one Microsoft 365 tenant.
pub struct GraphClient {
    tenant: TenantConfig,
    /// `{cloud's Graph resource}/.default`
    scope: String,
    http: Http,
    auth: Authenticator,
    /// `{graph}/v1.0`
    base: String,
    pacer: Pacer,
    domains: tokio::sync::OnceCell<Vec<String>>,
    /// Per mailbox: folder id → folder.
    folders: Mutex<HashMap<String, HashMap<String, Folder>>>,
    /// The tenant's mail address → sign-in name map for the message trace, kept across log
    /// reads (a watch cycle would otherwise list every user each time it finds deliveries).
    sign_in: Mutex<SignInCache>,
}

/// What [`GraphClient::delivery_log`] knows of the directory's addresses.
#[derive(Debug, Default)]
struct SignInCache {
    /// Mail address → sign-in name of every user (`None`: never listed).
    users: Option<HashMap<String, String>>,
    /// Recipients found in no listing since the last one (groups, contacts): they do not make
    /// the next read list `/users` again.
    unknown: std::collections::HashSet<String>,
}

impl GraphClient {
    pub fn new(config: &Config, tenant: &TenantConfig) -> Result<GraphClient, ProviderError> {
        let missing = |what: &str| ProviderError::Tenant {
            tenant: tenant.name.clone(),
            problem: format!("{what} is required for microsoft365"),
        };
        let tenant_id = tenant
            .tenant_id
            .clone()
            .ok_or_else(|| missing("tenant_id"))?;
        let client_id = tenant
            .client_id
            .clone()
            .ok_or_else(|| missing("client_id"))?;
        let credential = match tenant.auth {
            MicrosoftAuth::ClientSecret => MsCredential::Secret(config.client_secret(tenant)?),
            MicrosoftAuth::Certificate => {
                let (cert, key) = match (&tenant.certificate_file, &tenant.private_key_file) {
                    (Some(c), Some(k)) => load_certificate(c, k)?,
                    _ => return Err(missing("certificate_file and private_key_file")),
                };
                MsCredential::Certificate {
                    key,
                    certificate_der: cert,
                    alg: AssertionAlg::Ps256,
                }
            }
            MicrosoftAuth::DeviceCode => MsCredential::DeviceCode,
        };
        let login = tenant.login_url().trim_end_matches('/');
        let http = Http::new(&config.http)?;
        let flow = Flow::Microsoft {
            token_url: format!("{login}/{tenant_id}/oauth2/v2.0/token"),
            devicecode_url: format!("{login}/{tenant_id}/oauth2/v2.0/devicecode"),
            client_id,
            credential,
            resource: tenant.cloud.graph_host().to_string(),
        };
        Ok(GraphClient {
            scope: format!("{}/.default", tenant.cloud.graph_host()),
            base: format!("{}/v1.0", tenant.graph_url().trim_end_matches('/')),
            auth: Authenticator::new(http.clone(), flow),
            http,
            pacer: Pacer::new(&tenant.limits, false),
            // Within their allowed ranges even when the config was built in code.
            tenant: TenantConfig {
                limits: tenant.limits.clamped(),
                ..tenant.clone()
            },
            domains: tokio::sync::OnceCell::new(),
            folders: Mutex::new(HashMap::new()),
            sign_in: Mutex::new(SignInCache::default()),
        })
    }

    /// Uses RS256 + `x5t` (SHA-1 thumbprint) instead of PS256 + `x5t#S256` for certificate auth.
    pub fn use_rs256_assertions(&mut self) {
        if let Flow::Microsoft {
            credential: MsCredential::Certificate { alg, .. },
            ..
        } = &mut self.auth.flow
        {
            *alg = AssertionAlg::Rs256;
        }
    }

    pub fn tenant_name(&self) -> &str {
        &self.tenant.name
    }

    /// The tenant's token source.
    pub(crate) fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// `{graph resource}/.default`: the resource is the tenant's cloud's Graph host (also when
    /// the endpoint is overridden, e.g. by a proxy or the lab).
    fn scope(&self) -> &str {
        &self.scope
    }
}
