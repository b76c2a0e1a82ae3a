//! Gmail API v1 + Admin SDK Directory client (PROVIDER-APIS.md part B), with a service account
//! impersonating each user (domain-wide delegation).

use super::auth::{
    Authenticator, DIRECTORY_SCOPES, Flow, GMAIL_SCOPE, REPORTS_SCOPE, ServiceAccount,
};
use super::errors::{Failure, Operation, classify, error_code_message};
use super::graph::token_answer;
use super::http::{Http, SubRequest, SubResponse, enc};
use super::multipart;
use super::scheduler::{
    Backend, Pacer, Step, UNCERTAIN, Work, call, call_each, call_ok, choose, first_error,
};
use super::{
    AFTER_UNANSWERED, Applied, DomainRetract, DomainStatus, LocatedCopy, LoggedDelivery,
    MAY_HAVE_LANDED, MessageMeta, Permissions, ProviderError, Resolved, RestoreOptions,
    RestorePick, SentCopy, pick_restore, unchanged_since, windows,
};
use crate::config::{Config, LimitConfig, TenantConfig};
use crate::model::{FailureReason, Folder, RetractAction, address_domain};
use chrono::{DateTime, TimeZone, Utc};
use futures_util::StreamExt;

mod history;
use reqwest::Method;
use serde_json::{Value, json};

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

/// Metadata GETs in flight per mailbox while listing recent mail (trace sync).
const METADATA_CONCURRENCY: usize = 8;

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
/// The widest startTime..endTime the Reports API accepts for applicationName gmail.
const GMAIL_LOG_WINDOW_DAYS: i64 = 30;

/// A copy's folder from its labels.
pub fn folder_of_labels(labels: &[String]) -> Folder {
    let has = |l: &str| labels.iter().any(|x| x == l);
    if has("TRASH") {
        Folder::Trash
    } else if has("SPAM") {
        Folder::Junk
    } else if has("INBOX") {
        Folder::Inbox
    } else if has("DRAFT") {
        Folder::Drafts
    } else if has("SENT") {
        Folder::SentItems
    } else {
        Folder::Archive
    }
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

    fn list_request(mailbox: &str, mid: &str) -> SubRequest {
        SubRequest::get(
            format!(
                "{}/messages?q={}&includeSpamTrash=true&maxResults=50",
                Self::user_path(mailbox),
                enc(&format!("rfc822msgid:{mid}"))
            ),
            mailbox,
            units::LIST,
        )
    }

    fn get_request(mailbox: &str, id: &str) -> SubRequest {
        SubRequest::get(
            format!(
                "{}/messages/{}?format=metadata&metadataHeaders=Message-ID",
                Self::user_path(mailbox),
                enc(id)
            ),
            mailbox,
            units::GET,
        )
    }

    fn to_copy(mailbox: &str, mid: &str, m: &Value) -> LocatedCopy {
        let labels: Vec<String> = m["labelIds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str().map(str::to_string))
            .collect();
        LocatedCopy {
            mailbox: mailbox.to_ascii_lowercase(),
            id: m["id"].as_str().unwrap_or_default().to_string(),
            internet_message_id: mid.to_string(),
            folder: folder_of_labels(&labels),
            provider_folder: labels.join(","),
            read: !labels.iter().any(|l| l == "UNREAD"),
            conversation_id: m["threadId"].as_str().unwrap_or_default().to_string(),
            received: internal_date(m),
            version: m["historyId"].as_str().map(str::to_string),
        }
    }

    /// Directory call impersonating the admin.
    /// A Directory API GET as the admin: at most [`DIRECTORY_IN_FLIGHT`] at once, retried on
    /// throttling (honouring `Retry-After`) and 5xx, like every other read.
    async fn directory_get(&self, path: &str) -> Result<SubResponse, Failure> {
        self.admin_get(path, &self.directory_scopes).await
    }

    /// [`GmailClient::directory_get`] with a token for `scopes` (the Reports API's own scope).
    async fn admin_get(&self, path: &str, scopes: &str) -> Result<SubResponse, Failure> {
        let max_attempts = self.tenant.limits.max_attempts.max(1);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let answer = {
                let _slot = self.directory_gate.acquire().await;
                self.admin_get_once(path, scopes).await
            };
            let wait = match &answer {
                Ok(r)
                    if super::errors::is_rate_limited(
                        r.status,
                        &super::errors::error_code_message(&r.body).0,
                    ) =>
                {
                    r.retry_after
                        .unwrap_or_else(|| super::http::backoff(attempt).as_secs_f64())
                }
                Ok(r) if r.status >= 500 => super::http::backoff(attempt).as_secs_f64(),
                // A refused token (a scope not delegated) is an answer, not a hiccup.
                Err(f) if f.is_unreachable() || f.reason == FailureReason::NotAuthorized => {
                    return answer;
                }
                Err(_) => super::http::backoff(attempt).as_secs_f64(),
                Ok(_) => return answer,
            };
            if attempt >= max_attempts {
                return answer;
            }
            tokio::time::sleep(std::time::Duration::from_secs_f64(wait)).await;
        }
    }

    async fn admin_get_once(&self, path: &str, scopes: &str) -> Result<SubResponse, Failure> {
        let token = self.auth.token(&self.admin, scopes).await?;
        let mut r = self
            .http
            .send_sub(
                &self.directory,
                &SubRequest::get(path, &self.admin, 0),
                token.expose(),
            )
            .await?;
        if r.status == 401 {
            self.auth.invalidate(&self.admin, scopes, &token).await;
            let token = self.auth.token(&self.admin, scopes).await?;
            r = self
                .http
                .send_sub(
                    &self.directory,
                    &SubRequest::get(path, &self.admin, 0),
                    token.expose(),
                )
                .await?;
        }
        Ok(r)
    }

    fn managed(&self) -> Vec<String> {
        self.tenant
            .domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect()
    }

    pub async fn resolve(&self, address: &str) -> Result<Resolved, Failure> {
        let address = address.trim().to_ascii_lowercase();
        if !self.is_internal(&address).await? {
            return Ok(Resolved::External { address });
        }
        let user = self
            .directory_get(&format!("/admin/directory/v1/users/{}", enc(&address)))
            .await?;
        if user.ok() {
            // `address` may be an alias: mail is read as the primary address.
            let mailbox = user.body["primaryEmail"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .unwrap_or_else(|| address.clone());
            return Ok(Resolved::Mailbox {
                mailbox,
                id: user.body["id"].as_str().unwrap_or_default().to_string(),
                display_name: user.body["name"]["fullName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                address,
            });
        }
        if user.status != 404 {
            return Err(classify(user.status, &user.body, Operation::Directory));
        }
        let group = self
            .directory_get(&format!("/admin/directory/v1/groups/{}", enc(&address)))
            .await?;
        if group.status == 404 {
            return Ok(Resolved::Unknown { address });
        }
        if !group.ok() {
            return Err(classify(group.status, &group.body, Operation::Directory));
        }
        let mut member_mailboxes = Vec::new();
        let mut external_members = Vec::new();
        let managed = self.managed();
        let mut page: Option<String> = None;
        loop {
            let mut path = format!(
                "/admin/directory/v1/groups/{}/members?includeDerivedMembership=true&maxResults=200",
                enc(&address)
            );
            if let Some(p) = &page {
                path.push_str(&format!("&pageToken={}", enc(p)));
            }
            let r = self.directory_get(&path).await?;
            if !r.ok() {
                return Err(classify(r.status, &r.body, Operation::Directory));
            }
            for m in r.body["members"].as_array().into_iter().flatten() {
                let Some(email) = m["email"].as_str().map(str::to_ascii_lowercase) else {
                    continue;
                };
                let internal = address_domain(&email).is_some_and(|d| managed.contains(&d));
                match m["type"].as_str().unwrap_or("USER") {
                    "GROUP" => {}
                    "USER" if internal => member_mailboxes.push(email),
                    _ => external_members.push(email),
                }
            }
            page = r.body["nextPageToken"].as_str().map(str::to_string);
            if page.is_none() {
                break;
            }
        }
        member_mailboxes.sort();
        member_mailboxes.dedup();
        Ok(Resolved::Group {
            id: group.body["id"].as_str().unwrap_or_default().to_string(),
            display_name: group.body["name"].as_str().unwrap_or_default().to_string(),
            address,
            member_mailboxes,
            external_members,
        })
    }

    pub async fn locate(
        &self,
        mailbox: &str,
        internet_message_id: &str,
    ) -> Result<Vec<LocatedCopy>, Failure> {
        let r = call_ok(
            self,
            Self::list_request(mailbox, internet_message_id),
            Operation::Directory,
        )
        .await?;
        let mut out = Vec::new();
        for m in r.body["messages"].as_array().into_iter().flatten() {
            let id = m["id"].as_str().unwrap_or_default();
            let g = call_ok(self, Self::get_request(mailbox, id), Operation::Read).await?;
            out.push(Self::to_copy(mailbox, internet_message_id, &g.body));
        }
        Ok(out)
    }

    /// Locates each `(mailbox, Internet Message-ID)` as [`GmailClient::locate`] does, in two
    /// rounds sent in HTTP batches across mailboxes: every target's list, then a get for every
    /// id listed. One request per call cost each copy two HTTP exchanges of its own on both
    /// sides; batched, they share a `multipart/mixed` request each of up to 50 calls. Each
    /// target's outcome is its own (one mailbox's error answer is not another's).
    pub async fn locate_many(
        &self,
        targets: &[(String, String)],
    ) -> Vec<Result<Vec<LocatedCopy>, Failure>> {
        let lists = call_each(
            self,
            targets
                .iter()
                .map(|(mailbox, mid)| Self::list_request(mailbox, mid))
                .collect(),
        )
        .await;
        let mut out: Vec<Result<Vec<LocatedCopy>, Failure>> = Vec::with_capacity(targets.len());
        let (mut owners, mut gets) = (Vec::new(), Vec::new());
        for (k, ((mailbox, _), listed)) in targets.iter().zip(lists).enumerate() {
            out.push(match listed {
                Err(f) => Err(f),
                Ok(r) if !r.ok() => Err(classify(r.status, &r.body, Operation::Directory)),
                Ok(r) => {
                    for id in r.body["messages"].as_array().into_iter().flatten() {
                        owners.push(k);
                        gets.push(Self::get_request(
                            mailbox,
                            id["id"].as_str().unwrap_or_default(),
                        ));
                    }
                    Ok(Vec::new())
                }
            });
        }
        let got = call_each(self, gets).await;
        for (k, answer) in owners.into_iter().zip(got) {
            let (mailbox, mid) = &targets[k];
            let Some(Ok(copies)) = out.get_mut(k) else {
                continue;
            };
            match answer {
                Ok(r) if r.ok() => copies.push(Self::to_copy(mailbox, mid, &r.body)),
                Ok(r) => out[k] = Err(classify(r.status, &r.body, Operation::Read)),
                Err(f) => out[k] = Err(f),
            }
        }
        out
    }

    pub async fn conversation(
        &self,
        mailbox: &str,
        thread_id: &str,
    ) -> Result<Vec<LocatedCopy>, Failure> {
        let r = call_ok(
            self,
            SubRequest::get(
                format!(
                    "{}/threads/{}?format=metadata&metadataHeaders=Message-ID",
                    Self::user_path(mailbox),
                    enc(thread_id)
                ),
                mailbox,
                10,
            ),
            Operation::Read,
        )
        .await?;
        Ok(r.body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let mid = header(m, "Message-ID").unwrap_or_default();
                Self::to_copy(mailbox, &mid, m)
            })
            .collect())
    }

    pub async fn restore(
        &self,
        mailbox: &str,
        internet_message_id: &str,
        current_id: Option<&str>,
        original: &Folder,
        options: RestoreOptions<'_>,
    ) -> Result<Applied, Failure> {
        let copies = self.locate(mailbox, internet_message_id).await?;
        let copy = match pick_restore(
            &copies,
            mailbox,
            internet_message_id,
            current_id,
            options.retracted_to,
            original,
        )? {
            RestorePick::Act(copy) => {
                // An earlier attempt's answer was lost: only the same copy, unchanged since
                // (same historyId), is sent again.
                if let Some(earlier) = options.earlier {
                    unchanged_since(&copy, earlier, internet_message_id)?;
                }
                copy
            }
            RestorePick::AlreadyBack(c) => {
                // Nothing to send: a no-op modify would still count as an action.
                return Ok(Applied {
                    mailbox: mailbox.to_ascii_lowercase(),
                    internet_message_id: internet_message_id.to_string(),
                    old_id: c.id.clone(),
                    new_id: Some(c.id.clone()),
                    from: original.clone(),
                    to: original.clone(),
                    action: RetractAction::NoAction,
                    was_read: c.read,
                    detail: "already back: nothing sent".into(),
                });
            }
        };
        let item = format!("{}/messages/{}", Self::user_path(mailbox), enc(&copy.id));
        let (req, detail) = match copy.folder {
            Folder::Trash => (
                SubRequest::mutate(
                    Method::POST,
                    format!("{item}/untrash"),
                    None,
                    mailbox,
                    units::TRASH,
                ),
                "untrash",
            ),
            _ => {
                let add = match original {
                    Folder::Inbox => vec!["INBOX"],
                    _ => vec![],
                };
                (
                    SubRequest::mutate(
                        Method::POST,
                        format!("{item}/modify"),
                        Some(json!({ "addLabelIds": add, "removeLabelIds": ["SPAM"] })),
                        mailbox,
                        units::MODIFY,
                    ),
                    "modify: remove SPAM",
                )
            }
        };
        // After a lost answer the copy is read again (Gmail ids are immutable) before anything
        // is sent again: a restore that landed is not repeated as a second, no-op mutation.
        if let Some(record) = options.before_send {
            record(&copy)?;
        }
        let mut tries = 0;
        let (r, detail) = loop {
            tries += 1;
            match call(self, req.clone()).await {
                Err(f) if f.code == "uncertain" && tries < 4 => {
                    // Not being able to look leaves the outcome unknown, never a failure.
                    let now = call_ok(self, Self::get_request(mailbox, &copy.id), Operation::Read)
                        .await
                        .map(|g| Self::to_copy(mailbox, internet_message_id, &g.body))
                        .map_err(|mut f| {
                            f.code = UNCERTAIN.into();
                            f
                        })?;
                    if now.folder == *original {
                        break (None, "verified after an unanswered request");
                    }
                    // Still where the retraction put it, but changed since it was read
                    // (its historyId moved on): the lost request may have landed and a user
                    // moved the copy back. Sending it again could undo that user's move.
                    if now.folder == copy.folder {
                        unchanged_since(&now, &SentCopy::of(&copy), internet_message_id)?;
                    }
                    if now.folder != copy.folder {
                        return Err(Failure::new(
                            FailureReason::MovedSince,
                            None,
                            "moved_since",
                            format!(
                                "the copy of {internet_message_id} in {mailbox} is now in {}: left alone {MAY_HAVE_LANDED}",
                                now.folder
                            ),
                        ));
                    }
                }
                other => break (Some(other?), detail),
            }
        };
        if let Some(r) = &r
            && !r.ok()
        {
            return Err(classify(r.status, &r.body, Operation::Mutate));
        }
        Ok(Applied {
            mailbox: mailbox.to_ascii_lowercase(),
            internet_message_id: internet_message_id.to_string(),
            old_id: copy.id.clone(),
            new_id: Some(copy.id.clone()),
            from: copy.folder.clone(),
            to: original.clone(),
            action: RetractAction::NoAction,
            was_read: copy.read,
            detail: format!(
                "restored: {detail}{}",
                if tries > 1 { AFTER_UNANSWERED } else { "" }
            ),
        })
    }

    /// The Gmail log (Admin SDK Reports `activities.list`, userKey `all`, applicationName
    /// `gmail`): received-mail events in `[start, end)`, in windows of at most thirty days,
    /// every page.
    pub async fn delivery_log(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<LoggedDelivery>, Failure> {
        let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut out = Vec::new();
        for (from, to) in windows(start, end, chrono::Duration::days(GMAIL_LOG_WINDOW_DAYS)) {
            let mut page: Option<String> = None;
            loop {
                let mut path = format!(
                    "/admin/reports/v1/activity/users/all/applications/gmail?eventName=delivery&filters={}&startTime={}&endTime={}&maxResults=1000",
                    enc("event_info.mail_event_type==2"),
                    enc(&stamp(from)),
                    enc(&stamp(to))
                );
                if let Some(p) = &page {
                    path.push_str(&format!("&pageToken={}", enc(p)));
                }
                let r = self.admin_get(&path, REPORTS_SCOPE).await?;
                if !r.ok() {
                    return Err(classify(r.status, &r.body, Operation::Directory));
                }
                for item in r.body["items"].as_array().into_iter().flatten() {
                    out.extend(logged_deliveries(item));
                }
                page = r.body["nextPageToken"].as_str().map(str::to_string);
                if page.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub async fn list_mailboxes(&self) -> Result<Vec<String>, Failure> {
        let mut out = Vec::new();
        for domain in self.managed() {
            let mut page: Option<String> = None;
            loop {
                let mut path = format!(
                    "/admin/directory/v1/users?domain={}&maxResults=500",
                    enc(&domain)
                );
                if let Some(p) = &page {
                    path.push_str(&format!("&pageToken={}", enc(p)));
                }
                let r = self.directory_get(&path).await?;
                if !r.ok() {
                    return Err(classify(r.status, &r.body, Operation::Directory));
                }
                for u in r.body["users"].as_array().into_iter().flatten() {
                    if let Some(e) = u["primaryEmail"].as_str() {
                        out.push(e.to_ascii_lowercase());
                    }
                }
                page = r.body["nextPageToken"].as_str().map(str::to_string);
                if page.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub async fn list_recent_messages(
        &self,
        mailbox: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<MessageMeta>, Failure> {
        let mut ids = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let mut path = format!(
                "{}/messages?q={}&includeSpamTrash=true&maxResults=500",
                Self::user_path(mailbox),
                enc(&format!("after:{}", since.timestamp()))
            );
            if let Some(p) = &page {
                path.push_str(&format!("&pageToken={}", enc(p)));
            }
            let r = call_ok(
                self,
                SubRequest::get(path, mailbox, units::LIST),
                Operation::Read,
            )
            .await?;
            for m in r.body["messages"].as_array().into_iter().flatten() {
                if let Some(id) = m["id"].as_str() {
                    ids.push(id.to_string());
                }
            }
            page = r.body["nextPageToken"].as_str().map(str::to_string);
            if page.is_none() {
                break;
            }
        }
        self.metadata_of(mailbox, ids, false).await
    }

    /// Trace-ready metadata of these messages of a mailbox (`messages.get?format=metadata`).
    /// With `skip_gone`, a message deleted since its id was learned (404) is left out.
    pub(crate) async fn metadata_of(
        &self,
        mailbox: &str,
        ids: Vec<String>,
        skip_gone: bool,
    ) -> Result<Vec<MessageMeta>, Failure> {
        // The metadata GETs run a few at a time (in order); the pacer still spends the user's
        // quota units and bounds the per-mailbox concurrency.
        let answers: Vec<Result<SubResponse, Failure>> = futures_util::stream::iter(ids)
            .map(|id| {
                call_ok(
                    self,
                    SubRequest::get(
                        format!(
                            "{}/messages/{}?format=metadata",
                            Self::user_path(mailbox),
                            enc(&id)
                        ),
                        mailbox,
                        units::GET,
                    ),
                    Operation::Read,
                )
            })
            .buffered(METADATA_CONCURRENCY)
            .collect()
            .await;
        let mut out = Vec::new();
        for r in answers {
            let r = match r {
                Err(f) if skip_gone && f.status == Some(404) => continue,
                r => r?,
            };
            let m = &r.body;
            let headers = super::header_pairs(&m["payload"]["headers"]);
            let mid = header(m, "Message-ID").unwrap_or_default();
            let copy = Self::to_copy(mailbox, &mid, m);
            let list = |name: &str| -> Vec<String> {
                header(m, name)
                    .map(|v| {
                        v.split(',')
                            .filter_map(|a| {
                                let a = a.trim();
                                let a = a
                                    .rsplit_once('<')
                                    .map(|(_, r)| r.trim_end_matches('>'))
                                    .unwrap_or(a);
                                (!a.is_empty()).then(|| a.to_ascii_lowercase())
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            out.push(MessageMeta {
                mailbox: copy.mailbox.clone(),
                id: copy.id.clone(),
                internet_message_id: mid,
                from: list("From").into_iter().next().unwrap_or_default(),
                to: list("To"),
                cc: list("Cc"),
                subject: header(m, "Subject").unwrap_or_default(),
                date: copy.received,
                in_reply_to: header(m, "In-Reply-To"),
                references: header(m, "References")
                    .map(|r| r.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default(),
                folder: copy.folder.clone(),
                read: copy.read,
                conversation_id: copy.conversation_id.clone(),
                headers,
            });
        }
        Ok(out)
    }

    /// The raw MIME of one message (`messages.get?format=raw`, base64url-decoded).
    pub async fn fetch_raw(&self, mailbox: &str, id: &str) -> Result<Vec<u8>, Failure> {
        use base64::Engine;
        let path = format!(
            "{}/messages/{}?format=raw",
            Self::user_path(mailbox),
            enc(id)
        );
        let r = call_ok(
            self,
            SubRequest::get(path, mailbox, units::GET),
            Operation::Read,
        )
        .await?;
        let Some(raw) = r.body["raw"].as_str() else {
            return Err(super::errors::internal(&format!(
                "message {id} in {mailbox}: format=raw answer has no \"raw\" field"
            )));
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw.trim().trim_end_matches('='))
            .map_err(|e| {
                super::errors::internal(&format!(
                    "message {id} in {mailbox}: \"raw\" is not base64url: {e}"
                ))
            })
    }

    pub async fn permissions(&self) -> Permissions {
        let mut needed = vec![GMAIL_SCOPE.to_string()];
        needed.extend(DIRECTORY_SCOPES.iter().map(|s| s.to_string()));
        let how_to_grant = format!(
            "Google Admin console → Security → Access and data control → API controls → Domain-wide delegation → Add new: client ID {} with scopes {}",
            self.delegation_client_id(),
            needed.join(",")
        );
        let mut granted = Vec::new();
        let mut token = Ok(());
        match self.auth.token_and_grants(&self.admin, GMAIL_SCOPE).await {
            Ok((_, g)) => granted.extend(g),
            Err(f) => token = Err(f),
        }
        // An unreachable token endpoint answers no scope: asking per scope would only wait
        // out the same timeout again.
        let reachable = !matches!(&token, Err(f) if f.is_unreachable());
        for scope in DIRECTORY_SCOPES.iter().filter(|_| reachable) {
            // One scope per request: the token endpoint refuses a request naming any ungranted scope.
            if let Ok((_, g)) = self.auth.token_and_grants(&self.admin, scope).await {
                granted.extend(g);
            }
        }
        granted.sort();
        granted.dedup();
        // Unreachable: nothing is known about the grants, so nothing is "missing".
        let missing = needed
            .iter()
            .filter(|n| reachable && !granted.contains(n))
            .cloned()
            .collect();
        Permissions {
            token,
            granted,
            needed,
            missing,
            how_to_grant,
        }
    }

    pub async fn domains_status(&self) -> Result<Vec<DomainStatus>, Failure> {
        let mut out = Vec::new();
        for domain in self.managed() {
            let r = self
                .directory_get(&format!(
                    "/admin/directory/v1/users?domain={}&maxResults=1",
                    enc(&domain)
                ))
                .await?;
            let (in_tenant, user) = if r.ok() {
                (
                    true,
                    r.body["users"][0]["primaryEmail"]
                        .as_str()
                        .map(str::to_string),
                )
            } else if matches!(r.status, 400 | 404) || error_code_message(&r.body).0 == "notFound" {
                (false, None)
            } else {
                return Err(classify(r.status, &r.body, Operation::Directory));
            };
            let retract = match (in_tenant, user) {
                (false, _) => DomainRetract::NotInTenant,
                (true, None) => DomainRetract::Unknown {
                    detail: "no user in this domain to probe".into(),
                },
                (true, Some(user)) => {
                    let probe = SubRequest::get(
                        format!("{}/messages?maxResults=1", Self::user_path(&user)),
                        &user,
                        units::LIST,
                    );
                    match call(self, probe).await {
                        Ok(r) if r.ok() => DomainRetract::Granted,
                        Ok(r) if matches!(r.status, 401 | 403) => {
                            let (code, message) = error_code_message(&r.body);
                            DomainRetract::Missing {
                                permission: format!("{GMAIL_SCOPE} (domain-wide delegation)"),
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
            };
            out.push(DomainStatus {
                domain,
                configured: true,
                in_tenant,
                retract,
            });
        }
        Ok(out)
    }

    async fn send_batch(&self, requests: &[SubRequest]) -> Vec<Result<SubResponse, Failure>> {
        // One token per impersonated user: fetch them concurrently (the cache locks per user, so
        // a user's token is fetched once even when many parts name that user).
        let tokens: Vec<Result<_, Failure>> = futures_util::future::join_all(
            requests
                .iter()
                .map(|r| async { self.auth.token(&r.mailbox, GMAIL_SCOPE).await }),
        )
        .await;
        if requests.len() == 1 {
            return vec![match &tokens[0] {
                Ok(t) => {
                    self.http
                        .send_sub(&self.gmail, &requests[0], t.expose())
                        .await
                }
                Err(f) => token_answer(f),
            }];
        }
        // Only parts with a token go into the batch.
        let mut out: Vec<Option<Result<SubResponse, Failure>>> = vec![None; requests.len()];
        let mut index = Vec::new();
        let mut parts = Vec::new();
        for (i, (r, t)) in requests.iter().zip(&tokens).enumerate() {
            match t {
                Ok(t) => {
                    index.push(i);
                    parts.push(multipart::Part {
                        request: r,
                        bearer: t.expose(),
                    });
                }
                Err(f) => out[i] = Some(token_answer(f)),
            }
        }
        if !parts.is_empty() {
            let boundary = format!("batch_{}", uuid::Uuid::new_v4().simple());
            let (ct, body) = multipart::build(&parts, &boundary);
            let url = format!("{}/batch/gmail/v1", self.gmail);
            match self
                .http
                .send(Method::POST, &url, None, Some(&ct), Some(body))
                .await
            {
                Err(f) => {
                    for &i in &index {
                        out[i] = Some(Err(f.clone()));
                    }
                }
                Ok(resp) if resp.status != 200 => {
                    let sub = resp.into_sub();
                    for &i in &index {
                        out[i] = Some(Ok(sub.clone()));
                    }
                }
                Ok(resp) => {
                    let ct = resp
                        .headers
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    match multipart::parse(&ct, &resp.body, parts.len()) {
                        Ok(answers) => {
                            for (k, a) in answers.into_iter().enumerate() {
                                out[index[k]] = Some(a.ok_or_else(|| {
                                    super::errors::transport("part missing from batch response")
                                }));
                            }
                        }
                        Err(e) => {
                            for &i in &index {
                                out[i] = Some(Err(super::errors::transport(&e.to_string())));
                            }
                        }
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err(super::errors::transport("no response"))))
            .collect()
    }
}

/// The received-mail deliveries of one Reports `Activity` (one per destination address).
fn logged_deliveries(item: &Value) -> Vec<LoggedDelivery> {
    let Some(time) = item["id"]["time"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for event in item["events"].as_array().into_iter().flatten() {
        let nested = |name: &str| -> Vec<Value> {
            event["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == name)
                .and_then(|p| p["messageValue"]["parameter"].as_array().cloned())
                .unwrap_or_default()
        };
        let field = |params: &[Value], name: &str| -> Option<Value> {
            params.iter().find(|p| p["name"] == name).cloned()
        };
        let info = nested("event_info");
        if field(&info, "mail_event_type").and_then(|p| p["intValue"].as_str().map(str::to_string))
            != Some("2".into())
        {
            continue;
        }
        let message = nested("message_info");
        let text = |name: &str| {
            field(&message, name)
                .and_then(|p| p["value"].as_str().map(str::to_string))
                .unwrap_or_default()
        };
        let mid = text("rfc2822_message_id");
        if mid.is_empty() {
            continue;
        }
        let mut recipients: Vec<String> = field(&message, "destination.address")
            .and_then(|p| p["multiValue"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_ascii_lowercase))
            .collect();
        if recipients.is_empty()
            && let Some(actor) = item["actor"]["email"].as_str()
        {
            recipients.push(actor.to_ascii_lowercase());
        }
        for recipient in recipients {
            out.push(LoggedDelivery {
                internet_message_id: mid.clone(),
                sender: text("source.address"),
                recipient,
                subject: text("subject"),
                received: time.with_timezone(&Utc),
            });
        }
    }
    out
}

fn header(m: &Value, name: &str) -> Option<String> {
    m["payload"]["headers"]
        .as_array()?
        .iter()
        .find(|h| {
            h["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .and_then(|h| h["value"].as_str())
        .map(str::to_string)
}

fn internal_date(m: &Value) -> Option<DateTime<Utc>> {
    let ms = match &m["internalDate"] {
        Value::String(s) => s.parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    Utc.timestamp_millis_opt(ms).single()
}

/// What the labels a modify answers with say about a Junk acted on without a second read:
/// a copy that carries `TRASH` beside the added `SPAM` was trashed (by its user) before the
/// modify landed — already gone, as a read before acting would have found it, not junked from
/// where the plan saw it. Trash answers with `TRASH` whatever the copy's labels were, and
/// Delete answers with no body: nothing to tell there.
fn moved_before_acted(responses: &[SubResponse], effective: RetractAction) -> Option<Failure> {
    if effective != RetractAction::Junk {
        return None;
    }
    let labels: Vec<String> = responses
        .first()?
        .body
        .get("labelIds")?
        .as_array()?
        .iter()
        .filter_map(|l| l.as_str().map(String::from))
        .collect();
    let now = folder_of_labels(&labels);
    (now != Folder::Junk && now.is_gone()).then(|| {
        Failure::new(
            FailureReason::AlreadyGone,
            None,
            "already_moved",
            format!("the copy was already in {now} when the action landed"),
        )
    })
}

fn applied(
    copy: &LocatedCopy,
    asked: RetractAction,
    effective: RetractAction,
    note: &str,
) -> Applied {
    let (to, detail) = match effective {
        RetractAction::Junk => (Folder::Junk, "modify: add SPAM, remove INBOX".to_string()),
        RetractAction::HardDelete => (
            Folder::Purged,
            "DELETE: permanently deleted (admin can restore for 25 days)".to_string(),
        ),
        _ => (Folder::Trash, "trash".to_string()),
    };
    let detail = if asked == RetractAction::SoftDelete {
        format!("soft_delete mapped to trash on Gmail; {detail}")
    } else {
        detail
    };
    Applied {
        mailbox: copy.mailbox.clone(),
        internet_message_id: copy.internet_message_id.clone(),
        old_id: copy.id.clone(),
        new_id: (effective != RetractAction::HardDelete).then(|| copy.id.clone()),
        from: copy.folder.clone(),
        to,
        action: effective,
        was_read: copy.read,
        detail: format!("{detail}{note}"),
    }
}

impl Backend for GmailClient {
    fn limits(&self) -> &LimitConfig {
        &self.tenant.limits
    }

    fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    fn batch_max(&self) -> usize {
        50
    }

    async fn is_internal(&self, mailbox: &str) -> Result<bool, Failure> {
        let managed = self.managed();
        Ok(address_domain(mailbox).is_some_and(|d| managed.contains(&d)))
    }

    async fn prepare(&self, requests: &[SubRequest]) {
        // Tokens are fetched before the batch takes its service slots, so slow token requests
        // never hold the tenant's capacity idle.
        futures_util::future::join_all(
            requests
                .iter()
                .map(|r| self.auth.token(&r.mailbox, GMAIL_SCOPE)),
        )
        .await;
    }

    async fn send(&self, requests: &[SubRequest]) -> Vec<Result<SubResponse, Failure>> {
        self.send_batch(requests).await
    }

    fn start(&self, copy: LocatedCopy, mailbox: &str, just_located: bool) -> Step {
        if just_located {
            // Located moments ago by this run: acted on as located (no second read). A copy
            // deleted since answers 404 (located afresh); one junked or trashed since is named
            // by the labels the action answers with (see `advance`).
            return choose(vec![copy], mailbox);
        }
        // A Gmail id survives every label change, so a copy located earlier may have been
        // junked or trashed since: read its labels again (one get) before acting.
        Step::Resolve(vec![Value::String(copy.id)])
    }

    async fn invalidate(&self, mailbox: &str) {
        if let Ok(t) = self.auth.token(mailbox, GMAIL_SCOPE).await {
            self.auth.invalidate(mailbox, GMAIL_SCOPE, &t).await;
        }
    }

    fn requests(&self, work: &Work, action: RetractAction) -> Vec<SubRequest> {
        let mb = work.mailbox.as_str();
        match &work.step {
            Step::Locate => vec![Self::list_request(mb, &work.internet_message_id)],
            Step::Resolve(ids) => ids
                .iter()
                .filter_map(|v| v.as_str())
                .map(|id| Self::get_request(mb, id))
                .collect(),
            Step::Act(copy) => {
                let item = format!("{}/messages/{}", Self::user_path(mb), enc(&copy.id));
                vec![
                    match action.effective_for(crate::model::TenantKind::GoogleWorkspace) {
                        RetractAction::Junk => SubRequest::mutate(
                            Method::POST,
                            format!("{item}/modify"),
                            Some(json!({ "addLabelIds": ["SPAM"], "removeLabelIds": ["INBOX"] })),
                            mb,
                            units::MODIFY,
                        ),
                        RetractAction::HardDelete => {
                            SubRequest::mutate(Method::DELETE, item, None, mb, units::DELETE)
                        }
                        _ => SubRequest::mutate(
                            Method::POST,
                            format!("{item}/trash"),
                            None,
                            mb,
                            units::TRASH,
                        ),
                    },
                ]
            }
            Step::Verify(copy) => vec![Self::get_request(mb, &copy.id)],
            Step::Done(_) => Vec::new(),
        }
    }

    fn advance(&self, work: &mut Work, action: RetractAction, responses: &[SubResponse]) {
        let effective = action.effective_for(crate::model::TenantKind::GoogleWorkspace);
        let mb = work.mailbox.clone();
        let mid = work.internet_message_id.clone();
        let step = std::mem::replace(&mut work.step, Step::Locate);
        work.step = match step {
            Step::Locate => match first_error(responses, Operation::Directory) {
                Some(f) => Step::Done(Err(f)),
                None => {
                    let ids: Vec<Value> = responses
                        .first()
                        .and_then(|r| r.body["messages"].as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|m| m["id"].as_str().map(|s| Value::String(s.into())))
                        .collect();
                    if ids.is_empty() {
                        choose(Vec::new(), &mb)
                    } else {
                        Step::Resolve(ids)
                    }
                }
            },
            Step::Resolve(_) => {
                let copies: Vec<LocatedCopy> = responses
                    .iter()
                    .filter(|r| r.ok())
                    .map(|r| Self::to_copy(&mb, &mid, &r.body))
                    .collect();
                match (copies.is_empty(), first_error(responses, Operation::Read)) {
                    (true, Some(f)) => Step::Done(Err(f)),
                    _ => choose(copies, &mb),
                }
            }
            Step::Act(copy) => match first_error(responses, Operation::Mutate) {
                Some(f) => Step::Done(Err(f)),
                None => match moved_before_acted(responses, effective) {
                    Some(f) => Step::Done(Err(f)),
                    None => Step::Done(Ok(applied(&copy, action, effective, ""))),
                },
            },
            Step::Verify(copy) => {
                let r = responses.first();
                let note = " (outcome verified after an unanswered request)";
                match r {
                    Some(r) if r.status == 404 && effective == RetractAction::HardDelete => {
                        Step::Done(Ok(applied(&copy, action, effective, note)))
                    }
                    Some(r) if r.ok() => {
                        let now = Self::to_copy(&mb, &mid, &r.body);
                        let done = match effective {
                            RetractAction::Junk => now.folder == Folder::Junk,
                            RetractAction::HardDelete => false,
                            _ => now.folder == Folder::Trash,
                        };
                        if done {
                            Step::Done(Ok(applied(&copy, action, effective, note)))
                        } else if now.folder.is_gone() {
                            // Out of sight, not where this action puts it: the lost request
                            // may have landed and a user moved the copy on (acting again
                            // would retract it twice), or it never went out. Left alone.
                            Step::Done(Err(Failure::new(
                                FailureReason::AlreadyGone,
                                None,
                                "already_moved",
                                format!(
                                    "the copy is in {}, not where this action puts it {MAY_HAVE_LANDED}",
                                    now.folder
                                ),
                            )))
                        } else {
                            Step::Act(copy)
                        }
                    }
                    Some(r) => Step::Done(Err(classify(r.status, &r.body, Operation::Read))),
                    None => Step::Done(Err(super::errors::internal("no verify response"))),
                }
            }
            done @ Step::Done(_) => done,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_map_to_folders() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(folder_of_labels(&l(&["INBOX", "UNREAD"])), Folder::Inbox);
        assert_eq!(folder_of_labels(&l(&["SPAM"])), Folder::Junk);
        assert_eq!(folder_of_labels(&l(&["TRASH", "INBOX"])), Folder::Trash);
        assert_eq!(folder_of_labels(&l(&["CATEGORY_UPDATES"])), Folder::Archive);
        let c = GmailClient::to_copy(
            "A@x.com",
            "<m@x>",
            &json!({"id": "17", "threadId": "t", "labelIds": ["INBOX"], "internalDate": "1700000000000"}),
        );
        assert!(c.read);
        assert_eq!(c.mailbox, "a@x.com");
        assert_eq!(c.received.map(|d| d.timestamp()), Some(1_700_000_000));
    }

    #[test]
    fn locate_query_is_encoded() {
        let r = GmailClient::list_request("a@x.com", "<m+1@x>");
        assert_eq!(
            r.path,
            "/gmail/v1/users/a%40x.com/messages?q=rfc822msgid%3A%3Cm%2B1%40x%3E&includeSpamTrash=true&maxResults=50"
        );
        assert_eq!(r.units, units::LIST);
    }
}
