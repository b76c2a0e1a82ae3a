//! Microsoft Graph v1.0 client (PROVIDER-APIS.md part A).

use super::auth::{AssertionAlg, Authenticator, Flow, MsCredential, load_certificate};
use super::errors::{Failure, Operation, classify, error_code_message};
use super::http::{Http, SubRequest, SubResponse, enc};
use super::scheduler::{
    Backend, Pacer, Step, UNCERTAIN, Work, call, call_all, call_each, call_ok, call_ok_within,
    choose, first_error,
};
use super::{
    AFTER_UNANSWERED, Applied, DomainRetract, DomainStatus, LocatedCopy, LoggedDelivery,
    MAY_HAVE_LANDED, MessageMeta, Permissions, ProviderError, Resolved, RestoreOptions,
    RestorePick, SentCopy, pick_restore, unchanged_since, windows,
};
use crate::config::{Config, LimitConfig, MicrosoftAuth, TenantConfig};
use crate::model::{FailureReason, Folder, RetractAction, address_domain};
use chrono::{DateTime, Utc};
use reqwest::Method;

mod delta;
pub use delta::LEGACY_DELTA_FOLDERS;

/// What `trace sync` reads of a message (listing and delta).
const SYNC_SELECT: &str = "id,internetMessageId,from,toRecipients,ccRecipients,subject,receivedDateTime,isRead,parentFolderId,conversationId,internetMessageHeaders";
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Application permissions clawback needs.
pub const NEEDED_ROLES: &[&str] = &[
    "Mail.ReadWrite",
    "User.Read.All",
    "Domain.Read.All",
    "GroupMember.Read.All",
];

/// Mailboxes `doctor` reads (one message id each) to find mail access granted by Exchange RBAC
/// for Applications, which the token's roles do not show.
/// The application permission of the message trace (tenant-wide trace source).
pub const MESSAGE_TRACE_ROLE: &str = "ExchangeMessageTrace.Read.All";
/// The widest window one message-trace query may ask for (as Get-MessageTraceV2).
const MESSAGE_TRACE_WINDOW_DAYS: i64 = 10;
/// How far back the message trace reaches.
const MESSAGE_TRACE_RETENTION_DAYS: i64 = 90;
/// Records per message-trace page (the most Graph serves).
const MESSAGE_TRACE_PAGE: usize = 5000;
/// The longest a message-trace read waits on `Retry-After` (Graph allows 100 requests per 5
/// minutes, so its advice can be minutes) before the sync gives the tenant up for this run.
const LOG_PATIENCE: Duration = Duration::from_secs(10);
/// Statuses of a record whose message reached the recipient's mailbox (Junk included); a list
/// (`expanded`), quarantined, failed or recalled mail left no copy there.
const DELIVERED_STATUSES: &[&str] = &["delivered", "filteredAsSpam"];

const RBAC_PROBES: usize = 20;

/// What `doctor` says when mail access comes from Exchange RBAC for Applications.
const RBAC_SCOPED_NOTE: &str = "mail access is scoped by Exchange RBAC for Applications: do not add Mail.ReadWrite to the Entra consent (the two add up and the scope would be undone); check a mailbox with `Test-ServicePrincipalAuthorization -Identity <app> -Resource <mailbox>`; mailboxes outside the scope fail as not_authorized";

/// Well-known folders whose ids we learn per mailbox to name a copy's folder.
const WELL_KNOWN: &[&str] = &[
    "inbox",
    "junkemail",
    "deleteditems",
    "sentitems",
    "drafts",
    "archive",
];

const COPY_SELECT: &str =
    "id,internetMessageId,conversationId,isRead,parentFolderId,receivedDateTime";

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

    /// The tenant's domains: configured, else Graph `/domains`.
    async fn managed_domains(&self) -> Result<&Vec<String>, Failure> {
        self.domains
            .get_or_try_init(|| async {
                if !self.tenant.domains.is_empty() {
                    return Ok(self
                        .tenant
                        .domains
                        .iter()
                        .map(|d| d.to_ascii_lowercase())
                        .collect());
                }
                self.tenant_domains().await
            })
            .await
    }

    /// Graph `/domains` (ids = domain names).
    async fn tenant_domains(&self) -> Result<Vec<String>, Failure> {
        let values = self.get_all("/domains", "").await?;
        Ok(values
            .iter()
            .filter_map(|d| d["id"].as_str().map(|s| s.to_ascii_lowercase()))
            .collect())
    }

    /// GET with paging (`@odata.nextLink` followed verbatim).
    async fn get_all(&self, path: &str, mailbox: &str) -> Result<Vec<Value>, Failure> {
        self.get_all_within(path, mailbox, Duration::MAX).await
    }

    /// [`Self::get_all`], giving up as throttled on a `Retry-After` longer than `patience`.
    async fn get_all_within(
        &self,
        path: &str,
        mailbox: &str,
        patience: Duration,
    ) -> Result<Vec<Value>, Failure> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(p) = next.take() {
            let request = SubRequest::get(p, mailbox, 0);
            let r = call_ok_within(self, request, Operation::Directory, patience).await?;
            if let Some(v) = r.body["value"].as_array() {
                out.extend(v.iter().cloned());
            }
            if let Some(link) = r.body["@odata.nextLink"].as_str() {
                next = self.relative_link(link);
            }
        }
        Ok(out)
    }

    /// A `@odata.nextLink` / `deltaLink` as a path below our base URL (a link to another host
    /// is followed only as a relative path of ours).
    fn relative_link(&self, link: &str) -> Option<String> {
        let rel = link.strip_prefix(&self.base).unwrap_or(link);
        if !rel.starts_with("http") {
            return Some(rel.to_string());
        }
        url::Url::parse(link).ok().and_then(|u| {
            u.path()
                .strip_prefix("/v1.0")
                .map(|p| format!("{p}?{}", u.query().unwrap_or_default()))
        })
    }

    fn messages_filter(mailbox: &str, filter: &str, folder: Option<&str>) -> String {
        let folder = folder
            .map(|f| format!("/mailFolders/{f}"))
            .unwrap_or_default();
        format!(
            "/users/{}{folder}/messages?$filter={}&$select={COPY_SELECT}&$top=50",
            enc(mailbox),
            enc(filter)
        )
    }

    fn mid_filter(internet_message_id: &str) -> String {
        format!(
            "internetMessageId eq '{}'",
            internet_message_id.replace('\'', "''")
        )
    }

    /// A folder name for an opaque `parentFolderId`, if known without asking: a well-known name,
    /// or an id of a mailbox whose well-known folders were learned (any other id is a folder
    /// of the user's own, `Other`).
    fn folder_of(&self, mailbox: &str, folder_id: &str) -> Option<Folder> {
        let wk = Folder::from_graph_name(folder_id);
        if !matches!(wk, Folder::Other(_)) {
            return Some(wk);
        }
        let map = self.folders.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&mailbox.to_ascii_lowercase()).map(|m| {
            m.get(folder_id)
                .cloned()
                .unwrap_or_else(|| Folder::Other(folder_id.to_string()))
        })
    }

    /// Whether the mailbox's well-known folder ids are known.
    fn folders_learned(&self, mailbox: &str) -> bool {
        let map = self.folders.lock().unwrap_or_else(|p| p.into_inner());
        map.contains_key(&mailbox.to_ascii_lowercase())
    }

    /// Records the answers to [`GraphClient::folder_requests`] (in that order). Nothing is
    /// recorded when none was answered, so the next locate asks again.
    fn learn_folders(&self, mailbox: &str, responses: &[SubResponse]) {
        let learned: HashMap<String, Folder> = WELL_KNOWN
            .iter()
            .zip(responses)
            .filter(|(_, r)| r.ok())
            .filter_map(|(name, r)| {
                r.body["id"]
                    .as_str()
                    .map(|id| (id.to_string(), Folder::from_graph_name(name)))
            })
            .collect();
        if learned.is_empty() {
            return;
        }
        let mut map = self.folders.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(mailbox.to_ascii_lowercase())
            .or_default()
            .extend(learned);
    }

    /// The well-known folder lookups, when the mailbox's folders are not known yet.
    fn folder_requests_if_unknown(&self, mailbox: &str) -> Vec<SubRequest> {
        if self.folders_learned(mailbox) {
            Vec::new()
        } else {
            Self::folder_requests(mailbox)
        }
    }

    fn folder_requests(mailbox: &str) -> Vec<SubRequest> {
        WELL_KNOWN
            .iter()
            .map(|n| {
                SubRequest::get(
                    format!("/users/{}/mailFolders/{n}?$select=id", enc(mailbox)),
                    mailbox,
                    0,
                )
            })
            .collect()
    }

    /// The message list of a locate: every visible copy of the Message-ID, and (while the
    /// mailbox's folder ids are not known) the same filter inside the Inbox, whose answers name
    /// the Inbox without asking for folder ids: a delivered copy is almost always there, so a
    /// locate costs two sub-requests instead of eight (the folder ids are asked for only when a
    /// copy is somewhere else).
    fn locate_requests(&self, mailbox: &str, internet_message_id: &str) -> Vec<SubRequest> {
        let filter = Self::mid_filter(internet_message_id);
        let mut requests = vec![SubRequest::get(
            Self::messages_filter(mailbox, &filter, None),
            mailbox,
            0,
        )];
        if !self.folders_learned(mailbox) {
            requests.push(SubRequest::get(
                Self::messages_filter(mailbox, &filter, Some("inbox")),
                mailbox,
                0,
            ));
        }
        requests
    }

    /// The copies of a [`GraphClient::locate_requests`] answer whose folders are known (`None`
    /// when one is not: the folder ids must be asked for first).
    fn located_copies(
        &self,
        mailbox: &str,
        values: &[Value],
        in_inbox: Option<&SubResponse>,
    ) -> Option<Vec<LocatedCopy>> {
        let inbox: std::collections::HashSet<&str> = in_inbox
            .filter(|r| r.ok())
            .and_then(|r| r.body["value"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str())
            .collect();
        values
            .iter()
            .map(|m| {
                let folder = if m["id"].as_str().is_some_and(|id| inbox.contains(id)) {
                    Some(Folder::Inbox)
                } else {
                    self.folder_of(mailbox, m["parentFolderId"].as_str().unwrap_or_default())
                };
                folder.map(|f| self.to_copy(mailbox, m, Some(f)))
            })
            .collect()
    }

    fn to_copy(&self, mailbox: &str, m: &Value, folder: Option<Folder>) -> LocatedCopy {
        let pfid = m["parentFolderId"].as_str().unwrap_or_default();
        LocatedCopy {
            mailbox: mailbox.to_ascii_lowercase(),
            id: m["id"].as_str().unwrap_or_default().to_string(),
            internet_message_id: m["internetMessageId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            folder: folder
                .or_else(|| self.folder_of(mailbox, pfid))
                .unwrap_or_else(|| Folder::Other(pfid.to_string())),
            provider_folder: pfid.to_string(),
            read: m["isRead"].as_bool().unwrap_or(false),
            conversation_id: m["conversationId"].as_str().unwrap_or_default().to_string(),
            received: m["receivedDateTime"]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.with_timezone(&Utc)),
            version: None,
        }
    }

    /// Copies from list results, learning folder ids first when some are unknown.
    async fn copies_from(
        &self,
        mailbox: &str,
        values: &[Value],
    ) -> Result<Vec<LocatedCopy>, Failure> {
        let unknown = values.iter().any(|m| {
            self.folder_of(mailbox, m["parentFolderId"].as_str().unwrap_or_default())
                .is_none()
        });
        if unknown {
            let answers = call_all(self, Self::folder_requests(mailbox)).await?;
            self.learn_folders(mailbox, &answers);
        }
        Ok(values
            .iter()
            .map(|m| self.to_copy(mailbox, m, None))
            .collect())
    }

    pub async fn resolve(&self, address: &str) -> Result<Resolved, Failure> {
        let address = address.trim().to_ascii_lowercase();
        if !self.is_internal(&address).await? {
            return Ok(Resolved::External { address });
        }
        let user = call(
            self,
            SubRequest::get(
                format!(
                    "/users/{}?$select=id,mail,userPrincipalName,displayName",
                    enc(&address)
                ),
                "",
                0,
            ),
        )
        .await?;
        if user.ok() {
            return Ok(mailbox_of(address, &user.body));
        }
        if user.status != 404 {
            return Err(classify(user.status, &user.body, Operation::Directory));
        }
        // `/users/{key}` knows ids and sign-in names only: a mail address that differs from
        // the userPrincipalName, or an alias, is found by `mail` or `proxyAddresses`.
        let quoted = address.replace('\'', "''");
        let by_mail = self
            .get_all(
                &format!(
                    "/users?$filter={}&$select=id,mail,userPrincipalName,displayName",
                    enc(&format!(
                        "mail eq '{quoted}' or proxyAddresses/any(p:p eq 'smtp:{quoted}')"
                    ))
                ),
                "",
            )
            .await?;
        if let Some(user) = by_mail.first() {
            return Ok(mailbox_of(address, user));
        }
        let groups = self
            .get_all(
                &format!(
                    "/groups?$filter={}&$select=id,mail,displayName",
                    enc(&format!("mail eq '{}'", address.replace('\'', "''")))
                ),
                "",
            )
            .await?;
        let Some(group) = groups.first() else {
            return Ok(Resolved::Unknown { address });
        };
        let id = group["id"].as_str().unwrap_or_default().to_string();
        let members = self
            .get_all(
                &format!(
                    "/groups/{}/transitiveMembers?$select=id,mail,userPrincipalName",
                    enc(&id)
                ),
                "",
            )
            .await
            .map_err(|mut f| {
                // The directory read worked for the group itself: a refusal for its members is
                // a hidden membership (Graph needs Member.Read.Hidden for it).
                if f.reason == FailureReason::NotAuthorized {
                    f.message = format!(
                        "{address}: the list's membership is hidden; the app needs Member.Read.Hidden to expand it, so its members' copies are not planned ({})",
                        f.message
                    );
                }
                f
            })?;
        let domains = self.managed_domains().await?;
        let mut member_mailboxes = Vec::new();
        let mut external_members = Vec::new();
        for m in &members {
            let kind = m["@odata.type"].as_str().unwrap_or_default();
            let Some(mail) = m["mail"]
                .as_str()
                .or_else(|| m["userPrincipalName"].as_str())
            else {
                continue;
            };
            let mail = mail.to_ascii_lowercase();
            let internal = address_domain(&mail).is_some_and(|d| domains.contains(&d));
            match kind {
                "#microsoft.graph.user" if internal => member_mailboxes.push(mail),
                "#microsoft.graph.group" => {}
                _ if !internal => external_members.push(mail),
                "#microsoft.graph.orgContact" => external_members.push(mail),
                _ => {}
            }
        }
        member_mailboxes.sort();
        member_mailboxes.dedup();
        Ok(Resolved::Group {
            address,
            id,
            display_name: group["displayName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            member_mailboxes,
            external_members,
        })
    }

    /// Copies in the mailbox, including Recoverable Items\Deletions when no copy is in view:
    /// a copy in view is what a plan acts on, and a soft-deleted one beside it is already out
    /// of the user's view. Two sub-requests when the copy is in the Inbox (see
    /// [`GraphClient::locate_requests`]); otherwise a second round asks for the recoverable
    /// items and, if still unknown, the well-known folder ids.
    pub async fn locate(
        &self,
        mailbox: &str,
        internet_message_id: &str,
    ) -> Result<Vec<LocatedCopy>, Failure> {
        let answers = call_all(self, self.locate_requests(mailbox, internet_message_id)).await?;
        self.locate_from(mailbox, internet_message_id, &answers)
            .await
    }

    /// Locates each `(mailbox, Internet Message-ID)` as [`GraphClient::locate`] does, their
    /// first rounds sent together: `$batch`es of up to 20 steps over several mailboxes instead
    /// of one small `$batch` per mailbox. Each target's outcome is its own: one mailbox's
    /// throttling or error answer is not another's.
    pub async fn locate_many(
        &self,
        targets: &[(String, String)],
    ) -> Vec<Result<Vec<LocatedCopy>, Failure>> {
        let rounds: Vec<Vec<SubRequest>> = targets
            .iter()
            .map(|(mailbox, mid)| self.locate_requests(mailbox, mid))
            .collect();
        let answers = call_each(self, rounds.iter().flatten().cloned().collect()).await;
        let mut rest = answers.as_slice();
        let mut mine: Vec<Result<Vec<SubResponse>, Failure>> = Vec::with_capacity(targets.len());
        for round in &rounds {
            let (head, tail) = rest.split_at(round.len().min(rest.len()));
            mine.push(if head.len() == round.len() {
                head.iter().cloned().collect()
            } else {
                Err(super::errors::transport("no response"))
            });
            rest = tail;
        }
        futures_util::future::join_all(
            targets
                .iter()
                .zip(mine)
                .map(|((mailbox, mid), answers)| async move {
                    self.locate_from(mailbox, mid, &answers?).await
                }),
        )
        .await
    }

    /// The rest of a locate from the answers to its first round
    /// ([`GraphClient::locate_requests`]).
    async fn locate_from(
        &self,
        mailbox: &str,
        internet_message_id: &str,
        answers: &[SubResponse],
    ) -> Result<Vec<LocatedCopy>, Failure> {
        let listed = answers
            .first()
            .ok_or_else(|| super::errors::transport("no response"))?;
        if !listed.ok() {
            return Err(classify(listed.status, &listed.body, Operation::Directory));
        }
        let values = listed.body["value"].as_array().cloned().unwrap_or_default();
        if let Some(copies) = self.located_copies(mailbox, &values, answers.get(1))
            && copies.iter().any(|c| !c.folder.is_gone())
        {
            return Ok(copies);
        }
        let filter = Self::mid_filter(internet_message_id);
        let mut requests = vec![SubRequest::get(
            Self::messages_filter(mailbox, &filter, Some("recoverableitemsdeletions")),
            mailbox,
            0,
        )];
        let unknown = self
            .located_copies(mailbox, &values, answers.get(1))
            .is_none();
        if unknown {
            requests.extend(Self::folder_requests(mailbox));
        }
        let second = call_all(self, requests).await?;
        let (recoverable, folders) = second
            .split_first()
            .ok_or_else(|| super::errors::transport("no response"))?;
        self.learn_folders(mailbox, folders);
        let mut copies = self
            .located_copies(mailbox, &values, answers.get(1))
            .unwrap_or_else(|| {
                values
                    .iter()
                    .map(|m| self.to_copy(mailbox, m, None))
                    .collect()
            });
        if recoverable.ok() {
            for m in recoverable.body["value"].as_array().into_iter().flatten() {
                copies.push(self.to_copy(mailbox, m, Some(Folder::RecoverableDeletions)));
            }
        }
        Ok(copies)
    }

    pub async fn conversation(
        &self,
        mailbox: &str,
        conversation_id: &str,
    ) -> Result<Vec<LocatedCopy>, Failure> {
        let filter = format!(
            "conversationId eq '{}'",
            conversation_id.replace('\'', "''")
        );
        let values = self
            .get_all(&Self::messages_filter(mailbox, &filter, None), mailbox)
            .await?;
        self.copies_from(mailbox, &values).await
    }

    pub async fn restore(
        &self,
        mailbox: &str,
        internet_message_id: &str,
        current_id: Option<&str>,
        original: &Folder,
        options: RestoreOptions<'_>,
    ) -> Result<Applied, Failure> {
        let retracted_to = options.retracted_to;
        if matches!(original, Folder::Purged | Folder::RecoverableDeletions) {
            return Err(Failure::new(
                FailureReason::ProviderError,
                None,
                "bad_destination",
                format!("cannot restore into {original}"),
            ));
        }
        let mut attempts = 0;
        // The copy the last unanswered move was sent for (here, or in a process that stopped).
        let mut sent: Option<SentCopy> = options.earlier.cloned();
        loop {
            attempts += 1;
            let copies = match self.locate(mailbox, internet_message_id).await {
                Ok(copies) => copies,
                // After an unanswered move, not being able to look leaves the outcome unknown:
                // never a failure that would hide a restore that landed.
                Err(mut f) if attempts > 1 => {
                    f.code = UNCERTAIN.into();
                    return Err(f);
                }
                Err(f) => return Err(f),
            };
            if copies.iter().any(|c| &c.folder == original) && attempts > 1 {
                // An earlier attempt's outcome was unknown: it landed.
                let c = copies.iter().find(|c| &c.folder == original).cloned();
                return Ok(restored(
                    c,
                    mailbox,
                    internet_message_id,
                    original,
                    "move (verified)",
                ));
            }
            let picked = pick_restore(
                &copies,
                mailbox,
                internet_message_id,
                current_id,
                retracted_to,
                original,
            );
            let copy = match picked {
                Err(mut f) if attempts > 1 && f.reason == FailureReason::MovedSince => {
                    f.message = format!("{} {MAY_HAVE_LANDED}", f.message);
                    return Err(f);
                }
                other => other?,
            };
            let copy = match copy {
                // Where the retraction put it: sent again only if it is the very copy the lost
                // move was sent for (Graph gives a copy a new id on every move); otherwise it
                // was moved since, perhaps back by a user after that move landed.
                RestorePick::Act(copy) => {
                    if let Some(sent) = &sent {
                        unchanged_since(&copy, sent, internet_message_id)?;
                    }
                    copy
                }
                RestorePick::AlreadyBack(c) => {
                    return Ok(restored(
                        Some(c),
                        mailbox,
                        internet_message_id,
                        original,
                        "already back: nothing sent",
                    ));
                }
            };
            let req = SubRequest::mutate(
                Method::POST,
                format!("/users/{}/messages/{}/move", enc(mailbox), enc(&copy.id)),
                Some(json!({ "destinationId": original.graph_name() })),
                mailbox,
                0,
            );
            if let Some(record) = options.before_send {
                record(&copy)?;
            }
            match call(self, req).await {
                Ok(r) if r.ok() => {
                    return Ok(Applied {
                        mailbox: mailbox.to_ascii_lowercase(),
                        internet_message_id: internet_message_id.to_string(),
                        old_id: copy.id.clone(),
                        new_id: r.body["id"].as_str().map(str::to_string),
                        from: copy.folder.clone(),
                        to: original.clone(),
                        action: RetractAction::NoAction,
                        was_read: copy.read,
                        detail: format!(
                            "restored: move to {}{}",
                            original.graph_name(),
                            if attempts > 1 { AFTER_UNANSWERED } else { "" }
                        ),
                    });
                }
                Ok(r) => return Err(classify(r.status, &r.body, Operation::Mutate)),
                Err(f) if f.code == "uncertain" && attempts < 4 => {
                    sent = Some(SentCopy::of(&copy));
                    continue;
                }
                Err(f) => return Err(f),
            }
        }
    }

    /// Every user's mailbox key: the userPrincipalName, which Graph's `/users/{key}` accepts
    /// (a mail address that differs from it is not found there).
    pub async fn list_mailboxes(&self) -> Result<Vec<String>, Failure> {
        Ok(self
            .list_users()
            .await?
            .into_iter()
            .map(|(_, upn)| upn)
            .collect())
    }

    /// (mail address, userPrincipalName) of every user, lowercase; the mail address is the
    /// userPrincipalName when the user has none.
    async fn list_users(&self) -> Result<Vec<(String, String)>, Failure> {
        let users = self
            .get_all("/users?$select=id,mail,userPrincipalName&$top=999", "")
            .await?;
        Ok(users
            .iter()
            .filter_map(|u| {
                let upn = u["userPrincipalName"]
                    .as_str()
                    .or_else(|| u["mail"].as_str())?;
                let mail = u["mail"].as_str().unwrap_or(upn);
                Some((mail.to_ascii_lowercase(), upn.to_ascii_lowercase()))
            })
            .collect())
    }

    pub async fn list_recent_messages(
        &self,
        mailbox: &str,
        since: DateTime<Utc>,
        soft_deleted: bool,
    ) -> Result<Vec<MessageMeta>, Failure> {
        let filter = format!(
            "receivedDateTime ge {}",
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let list = |scope: &str| {
            format!(
                "/users/{}{scope}/messages?$filter={}&$select={SYNC_SELECT}&$top=100",
                enc(mailbox),
                enc(&filter)
            )
        };
        let mut values = self.get_all(&list(""), mailbox).await?;
        let mut copies = self.copies_from(mailbox, &values).await?;
        // `/messages` does not reach Recoverable Items: a copy the user soft-deleted before this
        // mailbox was first synced would be unknown to the trace (and to every plan). One more
        // listing, on the first sync of a mailbox only.
        if soft_deleted {
            let gone = self
                .get_all(&list("/mailFolders/recoverableitemsdeletions"), mailbox)
                .await?;
            copies.extend(
                gone.iter()
                    .map(|m| self.to_copy(mailbox, m, Some(Folder::RecoverableDeletions))),
            );
            values.extend(gone);
        }
        Ok(values
            .iter()
            .zip(copies)
            .map(|(m, c)| Self::meta_of(m, c))
            .collect())
    }

    /// Trace-ready metadata of one listed message and its copy.
    fn meta_of(m: &Value, c: LocatedCopy) -> MessageMeta {
        let headers = super::header_pairs(&m["internetMessageHeaders"]);
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let addrs = |key: &str| -> Vec<String> {
            m[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["emailAddress"]["address"].as_str())
                .map(|s| s.to_ascii_lowercase())
                .collect()
        };
        MessageMeta {
            mailbox: c.mailbox.clone(),
            id: c.id.clone(),
            internet_message_id: c.internet_message_id.clone(),
            from: m["from"]["emailAddress"]["address"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase(),
            to: addrs("toRecipients"),
            cc: addrs("ccRecipients"),
            subject: m["subject"].as_str().unwrap_or_default().to_string(),
            date: c.received,
            in_reply_to: header("In-Reply-To"),
            references: header("References")
                .map(|r| r.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            folder: c.folder.clone(),
            read: c.read,
            conversation_id: c.conversation_id.clone(),
            headers,
        }
    }

    /// The raw MIME of one message (`GET /users/{mailbox}/messages/{id}/$value`).
    ///
    /// The shared HTTP layer hands non-JSON bodies over as text, so 8-bit bytes that are not
    /// UTF-8 arrive as U+FFFD; headers, URLs and base64 attachments (what the trace indexes)
    /// are ASCII and unaffected.
    pub async fn fetch_raw(&self, mailbox: &str, id: &str) -> Result<Vec<u8>, Failure> {
        let path = format!("/users/{}/messages/{}/$value", enc(mailbox), enc(id));
        let r = call_ok(self, SubRequest::get(path, mailbox, 0), Operation::Read).await?;
        match r.body {
            Value::String(s) => Ok(s.into_bytes()),
            Value::Null => Ok(Vec::new()),
            other => Err(super::errors::internal(&format!(
                "message {id} in {mailbox}: $value answered JSON ({}), not MIME",
                match other {
                    Value::Object(_) => "an object",
                    Value::Array(_) => "an array",
                    _ => "a scalar",
                }
            ))),
        }
    }

    /// The message trace in `[start, end)`, in windows of at most ten days, every page.
    pub async fn delivery_log(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<LoggedDelivery>, Failure> {
        use chrono::DurationRound;
        let second = chrono::Duration::seconds(1);
        // The filter speaks whole seconds: the start rounded down, the end up, so a record
        // received within the last second is not left out.
        let ceil = |t: DateTime<Utc>| {
            let down = t.duration_trunc(second).unwrap_or(t);
            if down == t { t } else { down + second }
        };
        // The log reaches back 90 days; asking for more is refused whole.
        let start = start.max(
            Utc::now() - chrono::Duration::days(MESSAGE_TRACE_RETENTION_DAYS)
                + chrono::Duration::minutes(1),
        );
        let mut out = Vec::new();
        // Two seconds spare: the filter rounds each window out to whole seconds.
        let step = chrono::Duration::days(MESSAGE_TRACE_WINDOW_DAYS) - second * 2;
        for (from, to) in windows(start, end, step) {
            let filter = format!(
                "receivedDateTime ge {} and receivedDateTime le {}",
                from.duration_trunc(second)
                    .unwrap_or(from)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ceil(to).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            let path = format!(
                "/admin/exchange/tracing/messageTraces?$filter={}&$top={MESSAGE_TRACE_PAGE}",
                enc(&filter)
            );
            // The trace allows 100 requests per 5 minutes: its Retry-After can be minutes,
            // which a sync or watch cycle must not sit out (the caller fails the tenant for
            // this run and keeps its cursor).
            for r in self.get_all_within(&path, "", LOG_PATIENCE).await? {
                let status = r["status"].as_str().unwrap_or_default();
                let (Some(mid), Some(recipient), Some(received)) = (
                    r["messageId"].as_str(),
                    r["recipientAddress"].as_str(),
                    r["receivedDateTime"]
                        .as_str()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
                ) else {
                    continue;
                };
                let received = received.with_timezone(&Utc);
                // `le` is inclusive, so a record on a window boundary comes twice: callers
                // key deliveries by (message, recipient).
                if !DELIVERED_STATUSES.contains(&status) {
                    continue;
                }
                out.push(LoggedDelivery {
                    internet_message_id: mid.to_string(),
                    sender: r["senderAddress"].as_str().unwrap_or_default().to_string(),
                    recipient: recipient.to_ascii_lowercase(),
                    subject: r["subject"].as_str().unwrap_or_default().to_string(),
                    received,
                });
            }
        }
        // The log names recipients by SMTP address; a mailbox is read by its sign-in name
        // (`/users/{mail}` is not found where the two differ), which the trace keys it by.
        // The directory is listed once and again only when the log names an address it has
        // not seen (a new user).
        if !out.is_empty() {
            let stale = {
                let cache = self.sign_in.lock().unwrap_or_else(|p| p.into_inner());
                cache.users.as_ref().is_none_or(|users| {
                    out.iter().any(|d| {
                        !users.contains_key(&d.recipient) && !cache.unknown.contains(&d.recipient)
                    })
                })
            };
            if stale {
                let users: HashMap<String, String> = self.list_users().await?.into_iter().collect();
                let mut cache = self.sign_in.lock().unwrap_or_else(|p| p.into_inner());
                cache.unknown = out
                    .iter()
                    .filter(|d| !users.contains_key(&d.recipient))
                    .map(|d| d.recipient.clone())
                    .collect();
                cache.users = Some(users);
            }
            let cache = self.sign_in.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(users) = &cache.users {
                for d in &mut out {
                    if let Some(upn) = users.get(&d.recipient) {
                        d.recipient = upn.clone();
                    }
                }
            }
        }
        Ok(out)
    }

    pub async fn permissions(&self) -> Permissions {
        let needed: Vec<String> = NEEDED_ROLES.iter().map(|s| s.to_string()).collect();
        let how_to_grant = self.admin_consent_url();
        match self.auth.token_and_grants("", self.scope()).await {
            Ok((_, mut granted)) => {
                let mut missing: Vec<String> = needed
                    .iter()
                    .filter(|n| !granted.iter().any(|g| g.eq_ignore_ascii_case(n)))
                    .cloned()
                    .collect();
                let mut how_to_grant = how_to_grant;
                // Exchange RBAC for Applications grants mail access outside the token's roles
                // (and needs the Entra Mail.ReadWrite consent removed): a mailbox read that
                // works proves it. The consent URL would undo the scoping, so it is offered
                // only for the directory permissions then.
                if missing.iter().any(|m| m == "Mail.ReadWrite")
                    && let Some(mailbox) = self.probe_mail_access().await
                {
                    missing.retain(|m| m != "Mail.ReadWrite");
                    granted.push(format!(
                        "Mail.ReadWrite (Exchange RBAC for Applications, scoped; read {mailbox})"
                    ));
                    how_to_grant = if missing.is_empty() {
                        RBAC_SCOPED_NOTE.to_string()
                    } else {
                        format!(
                            "grant the directory permissions {} as Entra application permissions ({how_to_grant}) but NOT Mail.ReadWrite: {RBAC_SCOPED_NOTE}",
                            missing.join(", ")
                        )
                    };
                }
                Permissions {
                    token: Ok(()),
                    granted,
                    needed,
                    missing,
                    how_to_grant,
                }
            }
            Err(f) => Permissions {
                // Unreachable: nothing is known about the grants, so nothing is "missing".
                missing: if f.is_unreachable() {
                    Vec::new()
                } else {
                    needed.clone()
                },
                token: Err(f),
                granted: Vec::new(),
                needed,
                how_to_grant,
            },
        }
    }

    /// The first of up to [`RBAC_PROBES`] mailboxes whose mail this app may read, if any.
    async fn probe_mail_access(&self) -> Option<String> {
        let users = self.list_mailboxes().await.ok()?;
        for user in users.into_iter().take(RBAC_PROBES) {
            let probe = SubRequest::get(
                format!("/users/{}/messages?$top=1&$select=id", enc(&user)),
                &user,
                0,
            );
            if matches!(call(self, probe).await, Ok(r) if r.ok()) {
                return Some(user);
            }
        }
        None
    }

    /// `https://login.microsoftonline.com/{tenant}/adminconsent?client_id=…`
    pub fn admin_consent_url(&self) -> String {
        format!(
            "{}/{}/adminconsent?client_id={}",
            self.tenant.cloud.login_host(),
            enc(self.tenant.tenant_id.as_deref().unwrap_or("organizations")),
            enc(self.tenant.client_id.as_deref().unwrap_or_default())
        )
    }

    pub async fn domains_status(&self) -> Result<Vec<DomainStatus>, Failure> {
        let in_tenant = self.tenant_domains().await?;
        let users = self.list_users().await.unwrap_or_default();
        let mut names: Vec<String> = in_tenant.clone();
        for d in &self.tenant.domains {
            let d = d.to_ascii_lowercase();
            if !names.contains(&d) {
                names.push(d);
            }
        }
        let mut out = Vec::new();
        for domain in names {
            let configured = self.tenant.domains.is_empty()
                || self
                    .tenant
                    .domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&domain));
            let present = in_tenant.contains(&domain);
            let retract = if !present {
                DomainRetract::NotInTenant
            } else {
                match users
                    .iter()
                    .find(|(mail, _)| address_domain(mail).as_deref() == Some(domain.as_str()))
                    .map(|(_, upn)| upn)
                {
                    None => DomainRetract::Unknown {
                        detail: "no mailbox in this domain to probe".into(),
                    },
                    Some(user) => {
                        let probe = SubRequest::get(
                            format!("/users/{}/messages?$top=1&$select=id", enc(user)),
                            user,
                            0,
                        );
                        match call(self, probe).await {
                            Ok(r) if r.ok() => DomainRetract::Granted,
                            Ok(r) if matches!(r.status, 401 | 403) => {
                                let (code, message) = error_code_message(&r.body);
                                DomainRetract::Missing {
                                    permission: format!(
                                        "Mail.ReadWrite for {user} (outside the app's Exchange RBAC scope or application access policy; one mailbox probed, a scope by group or filter may still cover others)"
                                    ),
                                    detail: format!("HTTP {} {code}: {message}", r.status),
                                }
                            }
                            Ok(r) => DomainRetract::Unknown {
                                detail: classify(r.status, &r.body, Operation::Read).to_string(),
                            },
                            Err(f) => DomainRetract::Unknown {
                                detail: f.to_string(),
                            },
                        }
                    }
                }
            };
            out.push(DomainStatus {
                domain,
                configured,
                in_tenant: present,
                retract,
            });
        }
        Ok(out)
    }

    async fn send_batch(&self, requests: &[SubRequest]) -> Vec<Result<SubResponse, Failure>> {
        let token = match self.auth.token("", self.scope()).await {
            Ok(t) => t,
            Err(f) => return vec![token_answer(&f); requests.len()],
        };
        if requests.len() == 1 {
            return vec![
                self.http
                    .send_sub(&self.base, &requests[0], token.expose())
                    .await,
            ];
        }
        let body = json!({
            "requests": requests.iter().enumerate().map(|(i, r)| {
                let mut v = json!({ "id": (i + 1).to_string(), "method": r.method.as_str(), "url": r.path });
                if let Some(b) = &r.body {
                    v["body"] = b.clone();
                    v["headers"] = json!({ "Content-Type": "application/json" });
                }
                v
            }).collect::<Vec<_>>()
        });
        let url = format!("{}/$batch", self.base);
        let resp = match self
            .http
            .send(
                Method::POST,
                &url,
                Some(token.expose()),
                Some("application/json"),
                Some(body.to_string().into_bytes()),
            )
            .await
        {
            Ok(r) => r,
            Err(f) => return vec![Err(f); requests.len()],
        };
        let whole = resp.into_sub();
        if whole.status != 200 {
            return vec![Ok(whole); requests.len()];
        }
        let mut out: Vec<Result<SubResponse, Failure>> =
            vec![Err(super::errors::transport("missing from $batch response")); requests.len()];
        for item in whole.body["responses"].as_array().into_iter().flatten() {
            let id = match &item["id"] {
                Value::String(s) => s.parse::<usize>().ok(),
                Value::Number(n) => n.as_u64().map(|n| n as usize),
                _ => None,
            };
            let Some(i) = id.and_then(|i| i.checked_sub(1)).filter(|i| *i < out.len()) else {
                continue;
            };
            let headers = &item["headers"];
            let retry_after = headers
                .as_object()
                .and_then(|h| {
                    h.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                        .map(|(_, v)| v)
                })
                .and_then(|v| match v {
                    Value::String(s) => super::errors::parse_retry_after(s),
                    Value::Number(n) => n.as_f64(),
                    _ => None,
                });
            out[i] = Ok(SubResponse {
                status: item["status"].as_u64().unwrap_or(0) as u16,
                retry_after,
                body: item["body"].clone(),
            });
        }
        out
    }
}

/// A token failure as a response the scheduler understands (401 → one refresh, then final).
/// What the scheduler sees for a sub-request whose token could not be had: an unreachable
/// token endpoint as that transport failure (final at once, naming the endpoint; never a
/// permission problem), anything else as [`token_failure`].
pub(crate) fn token_answer(f: &Failure) -> Result<SubResponse, Failure> {
    if f.is_unreachable() {
        Err(f.clone())
    } else {
        Ok(token_failure(f))
    }
}

pub(crate) fn token_failure(f: &Failure) -> SubResponse {
    let status = match f.status {
        Some(s) if super::errors::is_server_error(s) || s == 429 => s,
        _ if f.transport_cause().is_some() => 503,
        _ => 401,
    };
    SubResponse {
        status,
        retry_after: None,
        body: json!({ "error": { "code": if f.code.is_empty() { "token" } else { f.code.as_str() }, "message": format!("cannot get an access token: {}", f.message) } }),
    }
}

/// A Graph user object as the mailbox `address` delivers to: mail is addressed by its
/// userPrincipalName.
fn mailbox_of(address: String, user: &serde_json::Value) -> Resolved {
    Resolved::Mailbox {
        mailbox: user["userPrincipalName"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| address.clone()),
        id: user["id"].as_str().unwrap_or_default().to_string(),
        display_name: user["displayName"].as_str().unwrap_or_default().to_string(),
        address,
    }
}

fn restored(
    copy: Option<LocatedCopy>,
    mailbox: &str,
    mid: &str,
    original: &Folder,
    detail: &str,
) -> Applied {
    Applied {
        mailbox: mailbox.to_ascii_lowercase(),
        internet_message_id: mid.to_string(),
        old_id: String::new(),
        new_id: copy.as_ref().map(|c| c.id.clone()),
        from: original.clone(),
        to: original.clone(),
        action: RetractAction::NoAction,
        was_read: copy.map(|c| c.read).unwrap_or(false),
        detail: detail.to_string(),
    }
}

impl Backend for GraphClient {
    fn limits(&self) -> &LimitConfig {
        &self.tenant.limits
    }

    fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    fn batch_max(&self) -> usize {
        20
    }

    fn service_slots(&self, n: usize) -> usize {
        // "Microsoft Graph sends the Outlook service up to four individual requests from the
        // batch at a time" (PROVIDER-APIS.md A.5): a batch of 20 keeps four in service, so
        // counting it as 20 would leave most of the tenant's budget idle.
        n.min(4)
    }

    async fn is_internal(&self, mailbox: &str) -> Result<bool, Failure> {
        let domains = self.managed_domains().await?;
        Ok(address_domain(mailbox).is_some_and(|d| domains.contains(&d)))
    }

    async fn send(&self, requests: &[SubRequest]) -> Vec<Result<SubResponse, Failure>> {
        self.send_batch(requests).await
    }

    async fn invalidate(&self, _mailbox: &str) {
        if let Ok(t) = self.auth.token("", self.scope()).await {
            self.auth.invalidate("", self.scope(), &t).await;
        }
    }

    fn requests(&self, work: &Work, action: RetractAction) -> Vec<SubRequest> {
        let mb = work.mailbox.as_str();
        let filter = Self::mid_filter(&work.internet_message_id);
        match &work.step {
            Step::Locate => self.locate_requests(mb, &work.internet_message_id),
            Step::Resolve(_) => Self::folder_requests(mb),
            Step::Act(copy) => {
                let item = format!("/users/{}/messages/{}", enc(mb), enc(&copy.id));
                vec![match action {
                    RetractAction::Junk | RetractAction::Trash | RetractAction::NoAction => {
                        let dest = if action == RetractAction::Junk {
                            "junkemail"
                        } else {
                            "deleteditems"
                        };
                        SubRequest::mutate(
                            Method::POST,
                            format!("{item}/move"),
                            Some(json!({ "destinationId": dest })),
                            mb,
                            0,
                        )
                    }
                    RetractAction::SoftDelete => {
                        SubRequest::mutate(Method::DELETE, item, None, mb, 0)
                    }
                    RetractAction::HardDelete => SubRequest::mutate(
                        Method::POST,
                        format!("{item}/permanentDelete"),
                        None,
                        mb,
                        0,
                    ),
                }]
            }
            Step::Verify(_) => {
                let mut requests = vec![
                    SubRequest::get(Self::messages_filter(mb, &filter, None), mb, 0),
                    SubRequest::get(
                        Self::messages_filter(mb, &filter, Some("recoverableitemsdeletions")),
                        mb,
                        0,
                    ),
                ];
                // Where each copy is must be told by folder, not by id: the folder ids.
                requests.extend(self.folder_requests_if_unknown(mb));
                requests
            }
            Step::Done(_) => Vec::new(),
        }
    }

    fn advance(&self, work: &mut Work, action: RetractAction, responses: &[SubResponse]) {
        let mb = work.mailbox.clone();
        let step = std::mem::replace(&mut work.step, Step::Locate);
        work.step = match step {
            Step::Locate => {
                match first_error(&responses[..1.min(responses.len())], Operation::Directory) {
                    Some(f) => Step::Done(Err(f)),
                    None => {
                        let values = responses
                            .first()
                            .and_then(|r| r.body["value"].as_array().cloned())
                            .unwrap_or_default();
                        match self.located_copies(&mb, &values, responses.get(1)) {
                            Some(copies) => choose(copies, &mb),
                            // A copy outside the Inbox: its folder id must be named first.
                            None => Step::Resolve(values),
                        }
                    }
                }
            }
            Step::Resolve(values) => {
                self.learn_folders(&mb, responses);
                choose(
                    values.iter().map(|m| self.to_copy(&mb, m, None)).collect(),
                    &mb,
                )
            }
            Step::Act(copy) => {
                let op = if action == RetractAction::HardDelete {
                    Operation::PermanentDelete
                } else {
                    Operation::Mutate
                };
                match first_error(responses, op) {
                    Some(f) => Step::Done(Err(f)),
                    None => {
                        let new_id = responses
                            .first()
                            .and_then(|r| r.body["id"].as_str())
                            .map(str::to_string);
                        Step::Done(Ok(applied(&copy, action, new_id, "")))
                    }
                }
            }
            Step::Verify(copy) => {
                match first_error(&responses[..1.min(responses.len())], Operation::Read) {
                    Some(f) => Step::Done(Err(f)),
                    None => {
                        let listed = |i: usize| -> Vec<Value> {
                            responses
                                .get(i)
                                .filter(|r| r.ok())
                                .and_then(|r| r.body["value"].as_array().cloned())
                                .unwrap_or_default()
                        };
                        let visible = listed(0);
                        let recoverable = listed(1);
                        self.learn_folders(&mb, responses.get(2..).unwrap_or_default());
                        let folder_of = |m: &Value| {
                            self.folder_of(&mb, m["parentFolderId"].as_str().unwrap_or_default())
                                .unwrap_or_else(|| Folder::Other(String::new()))
                        };
                        let target = match action {
                            RetractAction::Junk => Some(Folder::Junk),
                            RetractAction::Trash | RetractAction::NoAction => Some(Folder::Trash),
                            RetractAction::SoftDelete | RetractAction::HardDelete => None,
                        };
                        // Decided by where the copies are now, not by id (a planned id may be
                        // stale; with immutable ids a moved copy keeps it).
                        let landed = visible
                            .iter()
                            .find(|m| target.as_ref() == Some(&folder_of(m)));
                        let live: Vec<&Value> =
                            visible.iter().filter(|m| !folder_of(m).is_gone()).collect();
                        let note = " (outcome verified after an unanswered request)";
                        if let Some(m) = landed {
                            let new_id = m["id"].as_str().map(str::to_string);
                            Step::Done(Ok(applied(&copy, action, new_id, note)))
                        } else if let Some(still) = live
                            .iter()
                            .find(|m| m["id"].as_str() == Some(&copy.id))
                            .or(live.first())
                        {
                            // Not done: act again on the copy as it is now.
                            let mut again = self.to_copy(&mb, still, Some(copy.folder.clone()));
                            again.folder = copy.folder.clone();
                            Step::Act(again)
                        } else if action == RetractAction::HardDelete
                            || (action == RetractAction::SoftDelete && !recoverable.is_empty())
                        {
                            let new_id = recoverable
                                .first()
                                .filter(|_| action == RetractAction::SoftDelete)
                                .and_then(|m| m["id"].as_str())
                                .map(str::to_string);
                            Step::Done(Ok(applied(&copy, action, new_id, note)))
                        } else {
                            // Gone elsewhere (another retracted folder, or no copy): not where
                            // this action puts it, so not this job's doing.
                            let now = visible
                                .first()
                                .map(|m| folder_of(m).label().to_string())
                                .unwrap_or_else(|| "no folder (deleted)".into());
                            Step::Done(Err(Failure::new(
                                FailureReason::AlreadyGone,
                                None,
                                "already_moved",
                                format!(
                                    "the copy is in {now}, not where this action puts it {MAY_HAVE_LANDED}"
                                ),
                            )))
                        }
                    }
                }
            }
            done @ Step::Done(_) => done,
        };
    }
}

fn applied(
    copy: &LocatedCopy,
    action: RetractAction,
    new_id: Option<String>,
    note: &str,
) -> Applied {
    let (to, detail) = match action {
        RetractAction::Junk => (Folder::Junk, "move to junkemail"),
        RetractAction::Trash | RetractAction::NoAction => (Folder::Trash, "move to deleteditems"),
        RetractAction::SoftDelete => (
            Folder::RecoverableDeletions,
            "DELETE: in Recoverable Items\\Deletions (user recoverable)",
        ),
        RetractAction::HardDelete => (
            Folder::Purged,
            "permanentDelete: in Purges (admin recoverable via eDiscovery)",
        ),
    };
    Applied {
        mailbox: copy.mailbox.clone(),
        internet_message_id: copy.internet_message_id.clone(),
        old_id: copy.id.clone(),
        new_id,
        from: copy.folder.clone(),
        to,
        action,
        was_read: copy.read,
        detail: format!("{detail}{note}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_filter_is_quoted_and_encoded() {
        let path =
            GraphClient::messages_filter("a@x.com", &GraphClient::mid_filter("<it's+1@x>"), None);
        assert!(
            path.starts_with("/users/a%40x.com/messages?$filter=internetMessageId%20eq%20%27%3Cit%27%27s%2B1%40x%3E%27&$select="),
            "{path}"
        );
    }

    #[test]
    fn token_failures_become_final_or_retryable_responses() {
        let f = Failure::new(
            FailureReason::NotAuthorized,
            Some(400),
            "unauthorized_client",
            "no",
        );
        assert_eq!(token_failure(&f).status, 401);
        let t = super::super::errors::transport("cannot connect");
        assert_eq!(token_failure(&t).status, 503);
    }
}
