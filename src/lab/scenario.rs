//! Scenario files: the lab's world as data (JSON or TOML), and how it becomes a [`LabState`].
//!
//! The schema is documented in the README ("Scenario files"). Every field with a sensible
//! default may be left out. Messages are given either as full RFC 5322 text (`raw`) or by
//! fields from which the lab writes realistic headers.

use super::keys;
use super::state::{
    Attachment, Credentials, Domain, Group, LabState, MessageContent, Tenant, User, directory_id,
};
use crate::model::{Folder, TenantKind, normalize_message_id};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// Graph application roles a fully granted lab app holds.
pub const GRAPH_ROLES: &[&str] = &[
    "Mail.ReadWrite",
    "User.Read.All",
    "Domain.Read.All",
    "GroupMember.Read.All",
    "ExchangeMessageTrace.Read.All",
];

/// Google scopes a fully delegated lab service account holds.
pub const GOOGLE_SCOPES: &[&str] = &[
    "https://mail.google.com/",
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.readonly",
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly",
    "https://www.googleapis.com/auth/admin.reports.audit.readonly",
];

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: cannot read scenario: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("scenario: tenant {tenant:?}: {message}")]
    Invalid { tenant: String, message: String },
}

/// A whole scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(rename = "tenant", default)]
    pub tenants: Vec<ScenarioTenant>,
}

fn default_name() -> String {
    "custom".to_string()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioTenant {
    pub name: String,
    pub kind: TenantKind,
    /// Microsoft: the national cloud the tenant lives in (default global). The lab then expects
    /// that cloud's Graph resource in every scope and mints tokens for it.
    #[serde(default, skip_serializing_if = "crate::config::Cloud::is_global")]
    pub cloud: crate::config::Cloud,
    /// Microsoft: mail access granted by Exchange RBAC for Applications (a role assignment
    /// "Application Mail.ReadWrite" with a management scope) to these mailboxes only, instead
    /// of an Entra `Mail.ReadWrite` consent (leave it out of `granted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac_mail_scope: Option<Vec<String>>,
    /// Microsoft directory id (default: derived from the name) / Google customer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub domains: Vec<ScenarioDomain>,
    /// Microsoft app client id / Google service account client id (default: derived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Microsoft client secret (default: derived from the tenant name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Graph roles (Microsoft) or delegated scopes (Google). Default: everything clawback needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted: Option<Vec<String>>,
    /// Google: the admin to impersonate for directory calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_user: Option<String>,
    /// Mailboxes users report phish to (forwarded as attachment): a config written for the lab
    /// lists them as the tenant's `report_mailboxes`, for Phish Submission Response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub report_mailboxes: Vec<String>,
    #[serde(default, rename = "user", skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<ScenarioUser>,
    #[serde(default, rename = "group", skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<ScenarioGroup>,
    #[serde(default, rename = "message", skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<ScenarioMessage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioDomain {
    pub name: String,
    /// The app may act on this domain's mailboxes (default true).
    #[serde(default = "yes")]
    pub granted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioUser {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Has a usable mailbox (default true).
    #[serde(default = "yes")]
    pub mailbox: bool,
    /// Mailbox on litigation hold: hard delete refused (default false).
    #[serde(default)]
    pub on_hold: bool,
    #[serde(default)]
    pub admin: bool,
    /// Microsoft sign-in name when it differs from the address (Graph addresses users by id or
    /// userPrincipalName only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// Further addresses that deliver to this mailbox (Graph `proxyAddresses`, Google aliases).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Mailboxes this user holds Exchange FullAccess to (`Add-MailboxPermission … -AccessRights
    /// FullAccess`): with a delegated `Mail.ReadWrite.Shared` token they may act there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub full_access: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioGroup {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Member addresses: users, other groups (nesting), or external contacts.
    pub members: Vec<String>,
    /// Membership hidden (Graph `visibility: HiddenMembership`): listing members needs
    /// `Member.Read.Hidden`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden_membership: bool,
    /// An Exchange dynamic distribution group: mail reaches its members, but it is no Entra
    /// group, so Graph does not know it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynamic: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioMessage {
    /// Internet Message-ID, with or without brackets.
    pub message_id: String,
    /// Full RFC 5322 text. When given, it is served as-is and the fields below only fill
    /// what the lab reports in JSON (they should agree with the headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<String>,
    pub subject: String,
    /// RFC 3339 date.
    pub date: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    /// Body as HTML (optional, makes a multipart/alternative message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
    /// Extra headers, e.g. `["X-Clawback-Disposition", "malicious"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, rename = "attachment", skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<ScenarioAttachment>,
    /// Conversation key (default: the root of References, else the Message-ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    /// Where the copies are.
    #[serde(rename = "copy")]
    pub copies: Vec<ScenarioCopy>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioAttachment {
    pub name: String,
    #[serde(default = "octet_stream")]
    pub content_type: String,
    /// Text content (or base64 when `base64 = true`).
    pub content: String,
    #[serde(default)]
    pub base64: bool,
}

fn octet_stream() -> String {
    "application/octet-stream".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioCopy {
    pub mailbox: String,
    /// `inbox`, `junk`, `trash`, `sent_items`, `recoverable_deletions`, `purged`, … (default inbox).
    #[serde(default = "inbox")]
    pub folder: Folder,
    #[serde(default)]
    pub read: bool,
}

fn inbox() -> Folder {
    Folder::Inbox
}

impl Scenario {
    /// Loads a scenario file; `.toml` is TOML, anything else JSON.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        let is_toml = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        Scenario::parse(&text, is_toml, &shown)
    }

    /// Parses scenario text.
    pub fn parse(text: &str, is_toml: bool, shown: &str) -> Result<Scenario, ScenarioError> {
        if is_toml {
            toml::from_str(text).map_err(|e| ScenarioError::Parse {
                path: shown.to_string(),
                line: e
                    .span()
                    .map(|s| crate::config::line_of(text, s.start))
                    .unwrap_or(1),
                message: e.message().trim().to_string(),
            })
        } else {
            serde_json::from_str(text).map_err(|e| ScenarioError::Parse {
                path: shown.to_string(),
                line: e.line(),
                message: e.to_string(),
            })
        }
    }

    /// Builds the lab world.
    pub fn build(&self) -> Result<LabState, ScenarioError> {
        let mut tenants = Vec::new();
        for st in &self.tenants {
            tenants.push(build_tenant(st)?);
        }
        let mut state = LabState::new(tenants);
        for (t, st) in self.tenants.iter().enumerate() {
            for m in &st.messages {
                let content =
                    Arc::new(
                        message_content(m).map_err(|message| ScenarioError::Invalid {
                            tenant: st.name.clone(),
                            message,
                        })?,
                    );
                let copies: Vec<(String, Folder, bool)> = m
                    .copies
                    .iter()
                    .map(|c| (c.mailbox.clone(), c.folder.clone(), c.read))
                    .collect();
                let (_, unknown) = state.deliver(t, content, &copies);
                if let Some(mb) = unknown.first() {
                    return Err(ScenarioError::Invalid {
                        tenant: st.name.clone(),
                        message: format!(
                            "message {} has a copy in {mb:?}, which is not a mailbox of this tenant",
                            m.message_id
                        ),
                    });
                }
            }
        }
        // Nobody holds a delta or history cursor yet: the loaded mail is the starting state.
        state.clear_journals();
        Ok(state)
    }
}

fn build_tenant(st: &ScenarioTenant) -> Result<Tenant, ScenarioError> {
    let invalid = |message: String| ScenarioError::Invalid {
        tenant: st.name.clone(),
        message,
    };
    if st.domains.is_empty() {
        return Err(invalid("at least one domain is required".into()));
    }
    let tenant_id = st
        .tenant_id
        .clone()
        .unwrap_or_else(|| directory_id(st.kind, &format!("tenant:{}", st.name)));
    let default_client = directory_id(TenantKind::Microsoft365, &format!("app:{}", st.name));
    let credentials = match st.kind {
        TenantKind::Microsoft365 => Credentials {
            client_id: st.client_id.clone().unwrap_or(default_client),
            client_secret: st
                .client_secret
                .clone()
                .unwrap_or_else(|| lab_client_secret(&st.name)),
            public_key_pem: keys::MS_APP_PUBLIC_KEY.to_string(),
            certificate_der: keys::ms_app_certificate_der(),
            client_email: String::new(),
            granted: st
                .granted
                .clone()
                .unwrap_or_else(|| GRAPH_ROLES.iter().map(|s| s.to_string()).collect()),
        },
        TenantKind::GoogleWorkspace => Credentials {
            client_id: st
                .client_id
                .clone()
                .unwrap_or_else(|| directory_id(TenantKind::GoogleWorkspace, &st.name)),
            client_secret: String::new(),
            public_key_pem: keys::GOOGLE_SA_PUBLIC_KEY.to_string(),
            certificate_der: Vec::new(),
            client_email: lab_service_account_email(&st.name),
            granted: st
                .granted
                .clone()
                .unwrap_or_else(|| GOOGLE_SCOPES.iter().map(|s| s.to_string()).collect()),
        },
    };
    let mut tenant = Tenant {
        name: st.name.clone(),
        kind: st.kind,
        cloud: st.cloud,
        rbac_mail_scope: st
            .rbac_mail_scope
            .as_ref()
            .map(|v| v.iter().map(|m| m.to_ascii_lowercase()).collect()),
        tenant_id,
        domains: st
            .domains
            .iter()
            .map(|d| Domain {
                name: d.name.to_ascii_lowercase(),
                verified: true,
                retract_granted: d.granted,
            })
            .collect(),
        credentials,
        admin_user: st.admin_user.clone(),
        report_mailboxes: st.report_mailboxes.clone(),
        users: Default::default(),
        groups: Default::default(),
        mailboxes: Default::default(),
    };
    for u in &st.users {
        let key = u.address.to_ascii_lowercase();
        if tenant.domain_of(&key).is_none() {
            return Err(invalid(format!(
                "user {} is not in one of the tenant's domains",
                u.address
            )));
        }
        if u.mailbox {
            tenant.mailboxes.insert(key.clone(), Default::default());
        }
        tenant.users.insert(
            key.clone(),
            User {
                id: directory_id(st.kind, &key),
                address: key.clone(),
                display_name: u.name.clone().unwrap_or_else(|| display_name_of(&key)),
                has_mailbox: u.mailbox,
                on_hold: u.on_hold,
                is_admin: u.admin,
                upn: u
                    .upn
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .unwrap_or_else(|| key.clone()),
                aliases: u.aliases.iter().map(|a| a.to_ascii_lowercase()).collect(),
                full_access: u
                    .full_access
                    .iter()
                    .map(|a| a.to_ascii_lowercase())
                    .collect(),
            },
        );
    }
    for g in &st.groups {
        let key = g.address.to_ascii_lowercase();
        tenant.groups.insert(
            key.clone(),
            Group {
                id: directory_id(st.kind, &format!("group:{key}")),
                address: key.clone(),
                display_name: g.name.clone().unwrap_or_else(|| display_name_of(&key)),
                members: g.members.iter().map(|m| m.to_ascii_lowercase()).collect(),
                hidden_membership: g.hidden_membership,
                dynamic: g.dynamic,
            },
        );
    }
    Ok(tenant)
}

/// The lab's client secret for a tenant when the scenario does not give one.
pub fn lab_client_secret(tenant: &str) -> String {
    format!("lab-secret-{tenant}")
}

/// The lab's service account email for a Google tenant.
pub fn lab_service_account_email(tenant: &str) -> String {
    format!("clawback@{tenant}-lab.iam.gserviceaccount.com")
}

/// "jane.doe@x" → "Jane Doe".
pub fn display_name_of(address: &str) -> String {
    let local = address.split('@').next().unwrap_or(address);
    local
        .split(['.', '_', '-'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds the shared content of a scenario message, writing RFC 5322 text when `raw` is absent.
pub fn message_content(m: &ScenarioMessage) -> Result<MessageContent, String> {
    let mid = normalize_message_id(&m.message_id)
        .ok_or_else(|| format!("message_id {:?} is not a valid Message-ID", m.message_id))?;
    let in_reply_to = match &m.in_reply_to {
        Some(r) => Some(
            normalize_message_id(r)
                .ok_or_else(|| format!("message {mid}: in_reply_to {r:?} is not a Message-ID"))?,
        ),
        None => None,
    };
    let references: Vec<String> = m
        .references
        .iter()
        .filter_map(|r| normalize_message_id(r))
        .collect();
    let conversation_key = m
        .conversation
        .clone()
        .or_else(|| references.first().cloned())
        .or_else(|| in_reply_to.clone())
        .unwrap_or_else(|| mid.clone());
    let attachments: Vec<Attachment> = m
        .attachments
        .iter()
        .map(|a| {
            let bytes = if a.base64 {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(a.content.trim())
                    .map_err(|e| format!("message {mid}: attachment {}: bad base64: {e}", a.name))?
            } else {
                a.content.clone().into_bytes()
            };
            Ok(Attachment {
                name: a.name.clone(),
                content_type: a.content_type.clone(),
                bytes,
            })
        })
        .collect::<Result<_, String>>()?;
    let from_name = m
        .from_name
        .clone()
        .unwrap_or_else(|| display_name_of(&m.from));
    let mut content = MessageContent {
        internet_message_id: mid,
        raw: String::new(),
        subject: m.subject.clone(),
        from: m.from.to_ascii_lowercase(),
        from_name,
        to: m.to.iter().map(|s| s.to_ascii_lowercase()).collect(),
        cc: m.cc.iter().map(|s| s.to_ascii_lowercase()).collect(),
        date: m.date,
        in_reply_to,
        references,
        conversation_key,
        body_text: m.body.clone(),
        has_attachments: !attachments.is_empty(),
        attachments,
    };
    content.raw = match &m.raw {
        Some(raw) => raw.clone(),
        None => super::mime::render(&content, m.html.as_deref(), &m.headers),
    };
    Ok(content)
}

/// The built-in demo scenario (contoso on Microsoft 365, fabrikam on Google Workspace).
pub fn demo(seed: u64) -> Scenario {
    super::demo::build(seed)
}
