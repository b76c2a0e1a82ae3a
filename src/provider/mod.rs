//! Provider clients: Microsoft Graph (Microsoft 365) and the Gmail API (Google Workspace) behind
//! one enum, [`ProviderClient`], over real HTTP (DESIGN §3).
//!
//! Every operation is expressed as a small per-item state machine (locate → act → verify) whose
//! steps are provider sub-requests. The same machine runs one item (`apply`, `restore`) or many
//! (`retract_many`), where [`scheduler`] batches sub-requests (Graph `$batch` ≤ 20, Gmail HTTP
//! batch ≤ 50), bounds concurrency per tenant and per mailbox, spends Gmail quota units and honours
//! `Retry-After`. Mutations whose outcome is unknown (5xx, dropped connection) are never simply
//! re-sent: the copy is located again first, and if it already sits where the action puts it,
//! the action succeeded.

pub mod auth;
mod directory;
pub mod errors;
pub mod gmail;
pub mod graph;
pub mod http;
pub mod multipart;
pub mod scheduler;
pub mod token_file;

use crate::config::{Config, ConfigError, TenantConfig};
use crate::model::{FailureReason, Folder, RetractAction, TenantKind};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

pub use errors::Failure;

/// Why a client could not be built (bad credentials material, config).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{source_name}: {problem}")]
    Credentials {
        source_name: String,
        problem: String,
    },
    #[error("tenant {tenant:?}: {problem}")]
    Tenant { tenant: String, problem: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// What an address turned out to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resolved {
    /// A user with a mailbox in this tenant.
    Mailbox {
        address: String,
        /// The key its mail is addressed by when that is not `address`: the
        /// userPrincipalName (Graph's `/users/{id | userPrincipalName}`) or the primary email
        /// (Google impersonates primary addresses, not aliases). Lowercase.
        mailbox: String,
        id: String,
        display_name: String,
    },
    /// A group / distribution list (itself `not_a_mailbox`): its nested members' mailboxes are
    /// retracted separately; members outside the tenant are listed as external.
    Group {
        address: String,
        id: String,
        display_name: String,
        member_mailboxes: Vec<String>,
        external_members: Vec<String>,
    },
    /// A mail contact (external recipient known to the directory).
    Contact { address: String },
    /// Outside the tenant's domains: never acted on.
    External { address: String },
    /// In a tenant domain but unknown to the directory.
    Unknown { address: String },
}

impl Resolved {
    /// The failure reason retracting *this address itself* would have, if any.
    pub fn failure_reason(&self) -> Option<FailureReason> {
        match self {
            Resolved::Mailbox { .. } => None,
            Resolved::Group { .. } | Resolved::Unknown { .. } => Some(FailureReason::NotAMailbox),
            Resolved::Contact { .. } | Resolved::External { .. } => Some(FailureReason::External),
        }
    }
}

/// One copy of a message in one mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocatedCopy {
    pub mailbox: String,
    /// Provider id (Graph: changes on every move; Gmail: immutable).
    pub id: String,
    pub internet_message_id: String,
    pub folder: Folder,
    /// Graph `parentFolderId` (opaque) or the Gmail label ids, as the provider gave them.
    pub provider_folder: String,
    pub read: bool,
    /// Graph `conversationId` / Gmail `threadId`.
    pub conversation_id: String,
    pub received: Option<DateTime<Utc>>,
    /// What changes whenever the copy changes: Gmail's `historyId`. None for Graph, whose
    /// (default, not immutable) ids change on every move, which tells the same for moves.
    pub version: Option<String>,
}

/// What an action or restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub mailbox: String,
    pub internet_message_id: String,
    /// Id before the call.
    pub old_id: String,
    /// Id after (Graph move returns a new one; `None` when the copy left the visible mailbox).
    pub new_id: Option<String>,
    pub from: Folder,
    pub to: Folder,
    /// The action actually performed (soft_delete is trash on Gmail).
    pub action: RetractAction,
    /// Read state at the moment of retraction.
    pub was_read: bool,
    /// Provider-specific note, e.g. "soft_delete mapped to trash on Gmail".
    pub detail: String,
}

/// Trace-ready metadata of one message in one mailbox (for trace sync).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    pub mailbox: String,
    pub id: String,
    pub internet_message_id: String,
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub date: Option<DateTime<Utc>>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub folder: Folder,
    pub read: bool,
    pub conversation_id: String,
    /// Every header the provider returned, in order.
    pub headers: Vec<(String, String)>,
}

/// One delivery in a tenant-wide log (Graph message trace, Gmail log events): a message that
/// reached a recipient's mailbox. The logs carry no provider message id: a copy is located by
/// Message-ID when one is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedDelivery {
    /// Internet Message-ID as the log gives it.
    pub internet_message_id: String,
    pub sender: String,
    /// The mailbox the copy was delivered to (lowercase).
    pub recipient: String,
    pub subject: String,
    pub received: DateTime<Utc>,
}

/// The name of a Gmail mailbox's one change cursor (its `historyId`).
pub const GMAIL_HISTORY_CURSOR: &str = "history";
/// The change-cursor key of a Graph mailbox's folder tree (`mailFolders/delta`); never a
/// folder id.
pub const FOLDER_TREE_CURSOR: &str = "(folders)";

/// Where a Graph delta round starts.
#[derive(Debug, Clone, Copy)]
pub enum DeltaStart<'a> {
    /// A previous round's `@odata.deltaLink`.
    Cursor(&'a str),
    /// A first round over the mail received since then.
    Since(DateTime<Utc>),
}

/// One round of a mailbox folder's changes (Graph delta, Gmail history).
#[derive(Debug, Clone, Default)]
pub struct ChangeRound {
    /// Messages added (or changed) there, with trace-ready metadata.
    pub metas: Vec<MessageMeta>,
    /// Messages that left the folder (Graph `@removed`): the trace keeps their delivery.
    pub removed: u64,
    /// Provider requests the round cost.
    pub requests: u64,
    /// The cursor for the next round (a deltaLink, a historyId).
    pub cursor: String,
}

/// One round of a mailbox's folder tree (Graph `mailFolders/delta`).
#[derive(Debug, Clone, Default)]
pub struct FolderRound {
    /// Folder ids listed (every folder on a first round; added or changed ones later).
    pub folders: Vec<String>,
    /// Folder ids removed since the previous round.
    pub removed: Vec<String>,
    pub requests: u64,
    /// The cursor for the next round (a deltaLink).
    pub cursor: String,
}

/// `[start, end)` cut into consecutive windows of at most `step` (a log query's limit).
pub(crate) fn windows(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    step: chrono::Duration,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let step = step.max(chrono::Duration::seconds(1));
    let mut out = Vec::new();
    let mut from = start;
    while from < end {
        let to = (from + step).min(end);
        out.push((from, to));
        from = to;
    }
    out
}

/// Which tenant-wide log a provider offers, and the permission it needs.
pub fn delivery_log_permission(kind: TenantKind) -> &'static str {
    match kind {
        TenantKind::Microsoft365 => graph::MESSAGE_TRACE_ROLE,
        TenantKind::GoogleWorkspace => auth::REPORTS_SCOPE,
    }
}

/// Retract status of one domain (doctor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DomainRetract {
    Granted,
    /// Missing permission: which one, and the provider's words.
    Missing {
        permission: String,
        detail: String,
    },
    NotInTenant,
    /// The probe could not tell (no user to probe, provider error).
    Unknown {
        detail: String,
    },
}

impl fmt::Display for DomainRetract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainRetract::Granted => f.write_str("Granted"),
            DomainRetract::Missing { permission, .. } => {
                write!(f, "Missing permission ({permission})")
            }
            DomainRetract::NotInTenant => f.write_str("Not in tenant"),
            DomainRetract::Unknown { detail } => write!(f, "Unknown ({detail})"),
        }
    }
}

/// One row of the doctor's domain table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainStatus {
    pub domain: String,
    pub configured: bool,
    pub in_tenant: bool,
    pub retract: DomainRetract,
}

/// What the credentials may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// Whether a token was obtained, or the exact reason not (an unreachable token endpoint
    /// is a transport failure, see [`Failure::is_unreachable`], not a missing permission).
    pub token: Result<(), Failure>,
    pub granted: Vec<String>,
    pub needed: Vec<String>,
    pub missing: Vec<String>,
    /// Microsoft: the admin consent URL. Google: where to enter the DWD client id and scopes.
    pub how_to_grant: String,
}

/// One unit of bulk work: retract a message from a mailbox (locating it there first when
/// `copy` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkItem {
    /// Caller's key (e.g. the job item id), echoed in progress events.
    pub key: u64,
    pub mailbox: String,
    pub internet_message_id: String,
    /// The copy as located earlier (e.g. by a plan): acted on without locating it again. If
    /// it is gone by then (404: Graph ids change on every move), it is located afresh.
    pub copy: Option<LocatedCopy>,
}

/// Progress of a bulk retraction, reported as soon as known.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgressEvent {
    /// The mutating calls for these items (one batch) are about to be sent: commit
    /// `in_flight` now, before this returns.
    InFlight { items: Vec<(u64, LocatedCopy)> },
    /// The item's final outcome.
    Finished {
        key: u64,
        outcome: Result<Applied, Failure>,
    },
    /// The client is waiting because the provider throttled it.
    Throttled { seconds: f64 },
}

/// A configured provider connection.
#[derive(Clone)]
pub enum ProviderClient {
    Graph(Arc<graph::GraphClient>),
    Gmail(Arc<gmail::GmailClient>),
}

impl fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderClient::Graph(c) => write!(f, "ProviderClient::Graph({})", c.tenant_name()),
            ProviderClient::Gmail(c) => write!(f, "ProviderClient::Gmail({})", c.tenant_name()),
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            ProviderClient::Graph($c) => $e,
            ProviderClient::Gmail($c) => $e,
        }
    };
}

impl ProviderClient {
    /// Builds the client for one tenant: reads its secret or key material now (so a bad file is
    /// reported before any work starts); no network traffic until the first call.
    pub fn new(config: &Config, tenant: &TenantConfig) -> Result<ProviderClient, ProviderError> {
        for (key, url) in tenant.endpoints.set() {
            if crate::config::endpoint_transport(url) == crate::config::Transport::Cleartext {
                tracing::warn!(
                    tenant = %tenant.name,
                    "endpoints.{key} = {url} is plain http:// (allow_insecure_http): credentials and mail cross the network in cleartext"
                );
            }
        }
        Ok(match tenant.kind {
            TenantKind::Microsoft365 => {
                ProviderClient::Graph(Arc::new(graph::GraphClient::new(config, tenant)?))
            }
            TenantKind::GoogleWorkspace => {
                ProviderClient::Gmail(Arc::new(gmail::GmailClient::new(config, tenant)?))
            }
        })
    }

    /// Keeps this client's access tokens in `file` across runs (`[auth] token_cache`).
    pub fn keep_tokens_in(&self, file: Arc<token_file::TokenFile>) {
        dispatch!(self, c => c.auth().keep_tokens_in(file, c.tenant_name()))
    }

    pub fn kind(&self) -> TenantKind {
        match self {
            ProviderClient::Graph(_) => TenantKind::Microsoft365,
            ProviderClient::Gmail(_) => TenantKind::GoogleWorkspace,
        }
    }

    pub fn tenant_name(&self) -> &str {
        dispatch!(self, c => c.tenant_name())
    }

    /// What an address is: mailbox, group (with its transitive member mailboxes), contact,
    /// external or unknown.
    pub async fn resolve(&self, address: &str) -> Result<Resolved, Failure> {
        dispatch!(self, c => c.resolve(address).await)
    }

    /// Every copy of an Internet Message-ID in a mailbox (also in Junk/Trash/Spam).
    pub async fn locate(
        &self,
        mailbox: &str,
        internet_message_id: &str,
    ) -> Result<Vec<LocatedCopy>, Failure> {
        let mid = errors::checked_message_id(internet_message_id)?;
        dispatch!(self, c => c.locate(mailbox, &mid).await)
    }

    /// How many `(mailbox, Message-ID)` targets [`ProviderClient::locate_many`] sends together
    /// to good effect: Graph, a `$batch` of 20 steps over locates of at most two; Gmail, an
    /// HTTP batch of 25 lists (then one of their gets).
    pub fn locate_group(&self) -> usize {
        match self {
            ProviderClient::Graph(c) => scheduler::Backend::batch_max(c.as_ref()) / 2,
            ProviderClient::Gmail(c) => scheduler::Backend::batch_max(c.as_ref()),
        }
    }

    /// [`ProviderClient::locate`] for each `(mailbox, Internet Message-ID)`, in that order;
    /// their rounds are sent together (see [`ProviderClient::locate_group`]).
    pub async fn locate_many(
        &self,
        targets: &[(String, String)],
    ) -> Vec<Result<Vec<LocatedCopy>, Failure>> {
        let checked: Vec<Result<(String, String), Failure>> = targets
            .iter()
            .map(|(mailbox, mid)| Ok((mailbox.clone(), errors::checked_message_id(mid)?)))
            .collect();
        let valid: Vec<(String, String)> = checked.iter().flatten().cloned().collect();
        let mut located = dispatch!(self, c => c.locate_many(&valid).await).into_iter();
        checked
            .into_iter()
            .map(|t| match t {
                Ok(_) => located
                    .next()
                    .unwrap_or_else(|| Err(errors::internal("locate: no answer"))),
                Err(f) => Err(f),
            })
            .collect()
    }

    /// The messages of a conversation (Graph `conversationId`) / thread (Gmail `threadId`).
    pub async fn conversation(
        &self,
        mailbox: &str,
        conversation_id: &str,
    ) -> Result<Vec<LocatedCopy>, Failure> {
        dispatch!(self, c => c.conversation(mailbox, conversation_id).await)
    }

    /// Applies one action to one located copy (per the action table of DESIGN §2).
    pub async fn apply(
        &self,
        copy: &LocatedCopy,
        action: RetractAction,
    ) -> Result<Applied, Failure> {
        let item = BulkItem {
            key: 0,
            mailbox: copy.mailbox.clone(),
            internet_message_id: copy.internet_message_id.clone(),
            copy: Some(copy.clone()),
        };
        let mut out = Err(errors::internal("no outcome"));
        self.retract_many(vec![item], action, |e| {
            if let ProgressEvent::Finished { outcome, .. } = e {
                out = outcome;
            }
        })
        .await;
        out
    }

    /// Puts a retracted copy back into `original_folder`. `current_id` is the id recorded after
    /// the action (if any); when it is gone the copy is located again by Message-ID. Any copy
    /// in a retracted folder (Junk, Trash, Recoverable Items) counts: see
    /// [`ProviderClient::restore_from`] for the exact form a job uses.
    pub async fn restore(
        &self,
        mailbox: &str,
        internet_message_id: &str,
        current_id: Option<&str>,
        original_folder: &Folder,
    ) -> Result<Applied, Failure> {
        self.restore_from(
            mailbox,
            internet_message_id,
            current_id,
            original_folder,
            RestoreOptions::default(),
        )
        .await
    }

    /// Puts a copy back from `options.retracted_to` (where the retraction put it) into
    /// `original_folder` — only from there: a copy found elsewhere was moved since (by a later
    /// job or the user) and is left alone (`moved_since`); a copy already back in
    /// `original_folder` succeeds without a request ("already back"). After an attempt whose
    /// answer was lost (here, or `options.earlier` in a process that stopped), the copy is sent
    /// again only when it is the same copy, unchanged since that attempt read it: otherwise it
    /// was moved since, maybe back by a user after that attempt landed, and is left alone.
    pub async fn restore_from(
        &self,
        mailbox: &str,
        internet_message_id: &str,
        current_id: Option<&str>,
        original_folder: &Folder,
        options: RestoreOptions<'_>,
    ) -> Result<Applied, Failure> {
        let mid = errors::checked_message_id(internet_message_id)?;
        dispatch!(self, c => c.restore(mailbox, &mid, current_id, original_folder, options).await)
    }

    /// Retracts many items through the scheduler with batching. `progress` is called with
    /// `InFlight` before each mutating call and `Finished` as soon as an item's outcome is known.
    pub async fn retract_many<F>(&self, items: Vec<BulkItem>, action: RetractAction, progress: F)
    where
        F: FnMut(ProgressEvent) + Send,
    {
        self.retract_many_until(items, action, &|| false, progress)
            .await;
    }

    /// [`ProviderClient::retract_many`] that sends nothing more once `stop` says so: it is asked
    /// before every batch, after that batch's `InFlight` was reported (so a caller that cannot
    /// record `in_flight` can still keep the mutation from being sent). Items not finished by
    /// then get no `Finished` event.
    pub async fn retract_many_until<F>(
        &self,
        items: Vec<BulkItem>,
        action: RetractAction,
        stop: &(dyn Fn() -> bool + Sync),
        progress: F,
    ) where
        F: FnMut(ProgressEvent) + Send,
    {
        self.retract_located_until(items, action, false, stop, progress)
            .await;
    }

    /// [`ProviderClient::retract_many_until`] for items whose copies a plan located.
    /// `just_located`: moments ago, in this run (a fresh plan nobody waited on), so each copy is
    /// acted on as located, without reading it again first (Gmail; Graph never reads again).
    /// A copy gone since answers 404 and is located afresh; one a user junked or trashed in
    /// between is named by the action's answer. Otherwise Gmail reads a copy's labels again
    /// before acting (its ids survive label changes).
    pub async fn retract_located_until<F>(
        &self,
        items: Vec<BulkItem>,
        action: RetractAction,
        just_located: bool,
        stop: &(dyn Fn() -> bool + Sync),
        progress: F,
    ) where
        F: FnMut(ProgressEvent) + Send,
    {
        match self {
            ProviderClient::Graph(c) => {
                scheduler::run(c.clone(), items, action, just_located, stop, progress).await;
            }
            ProviderClient::Gmail(c) => {
                scheduler::run(c.clone(), items, action, just_located, stop, progress).await;
            }
        }
    }

    /// Every mailbox of the tenant (addresses).
    pub async fn list_mailboxes(&self) -> Result<Vec<String>, Failure> {
        dispatch!(self, c => c.list_mailboxes().await)
    }

    /// Messages received in a mailbox since `since`, with trace-ready metadata. With
    /// `first_sync`, Microsoft mailboxes also list Recoverable Items (copies soft-deleted before
    /// clawback first looked; Gmail's Trash is listed anyway).
    pub async fn list_recent_messages(
        &self,
        mailbox: &str,
        since: DateTime<Utc>,
        first_sync: bool,
    ) -> Result<Vec<MessageMeta>, Failure> {
        match self {
            ProviderClient::Graph(c) => c.list_recent_messages(mailbox, since, first_sync).await,
            ProviderClient::Gmail(c) => c.list_recent_messages(mailbox, since).await,
        }
    }

    /// The raw MIME of one message copy (Graph `$value`, Gmail `format=raw`), for indexing URLs
    /// and attachment hashes.
    pub async fn fetch_raw(&self, mailbox: &str, id: &str) -> Result<Vec<u8>, Failure> {
        dispatch!(self, c => c.fetch_raw(mailbox, id).await)
    }

    /// Every delivery the tenant-wide log recorded in `[start, end)` (Graph message trace with
    /// `$filter` on `receivedDateTime`, Gmail `activities.list` with startTime/endTime), paged
    /// to the end, in windows the provider accepts. `not_authorized` when the permission
    /// ([`delivery_log_permission`]) is missing.
    pub async fn delivery_log(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<LoggedDelivery>, Failure> {
        dispatch!(self, c => c.delivery_log(start, end).await)
    }

    /// The change cursor a mailbox must have to be read through its cursors: Graph the folder
    /// tree's (`mailFolders/delta`; one more per folder followed, by folder id), Gmail the
    /// mailbox's history (`history.list` covers every label).
    pub fn mailbox_cursor(&self) -> &'static str {
        match self {
            ProviderClient::Graph(_) => FOLDER_TREE_CURSOR,
            ProviderClient::Gmail(_) => GMAIL_HISTORY_CURSOR,
        }
    }

    /// One round of a mailbox's folder tree (`from: None`: every folder), for providers whose
    /// change cursors are per folder (Graph); `None` for Gmail, whose history is mailbox-wide.
    pub async fn folder_changes(
        &self,
        mailbox: &str,
        from: Option<&str>,
    ) -> Option<Result<FolderRound, Failure>> {
        match self {
            ProviderClient::Graph(c) => Some(c.folders_delta(mailbox, from).await),
            ProviderClient::Gmail(_) => None,
        }
    }

    /// Whether a change cursor failed because its folder is gone (Graph 404 on the folder):
    /// the folder is no longer followed.
    pub fn folder_gone(&self, failure: &Failure) -> bool {
        matches!(self, ProviderClient::Graph(_))
            && failure.status == Some(404)
            && failure.code.eq_ignore_ascii_case("ErrorItemNotFound")
    }

    /// A fresh change cursor for a folder of a mailbox, taken before the mailbox is listed in
    /// full (Graph: a first delta round over the mail received since `since`, whose messages
    /// come with it; Gmail: the current `historyId`).
    pub async fn start_changes(
        &self,
        mailbox: &str,
        folder: &str,
        since: DateTime<Utc>,
    ) -> Result<ChangeRound, Failure> {
        match self {
            ProviderClient::Graph(c) => {
                c.messages_delta(mailbox, folder, DeltaStart::Since(since))
                    .await
            }
            ProviderClient::Gmail(c) => Ok(ChangeRound {
                metas: Vec::new(),
                removed: 0,
                requests: 1,
                cursor: c.current_history_id(mailbox).await?,
            }),
        }
    }

    /// What was added to a folder of a mailbox since its change cursor, and the next cursor.
    /// An out-of-date cursor fails with [`ProviderClient::cursor_expired`] true.
    pub async fn changes_since(
        &self,
        mailbox: &str,
        folder: &str,
        cursor: &str,
    ) -> Result<ChangeRound, Failure> {
        match self {
            ProviderClient::Graph(c) => {
                c.messages_delta(mailbox, folder, DeltaStart::Cursor(cursor))
                    .await
            }
            ProviderClient::Gmail(c) => c.messages_added_since(mailbox, cursor).await,
        }
    }

    /// Whether a failure of [`ProviderClient::changes_since`] means the cursor is out of date
    /// (Graph `410 Gone`, Gmail `404` on `startHistoryId`): list the mailbox again.
    pub fn cursor_expired(&self, failure: &Failure) -> bool {
        match self {
            ProviderClient::Graph(_) => graph_delta_expired(failure),
            ProviderClient::Gmail(_) => failure.status == Some(404),
        }
    }

    /// Domains of the tenant and whether retraction is granted in each (doctor).
    pub async fn domains_status(&self) -> Result<Vec<DomainStatus>, Failure> {
        dispatch!(self, c => c.domains_status().await)
    }

    /// Token, granted vs needed permissions, and how to grant (doctor).
    pub async fn permissions(&self) -> Permissions {
        dispatch!(self, c => c.permissions().await)
    }
}

/// Said of a restore whose earlier attempt's answer was lost when the copy is now neither
/// where the retraction put it nor back: that attempt may have landed before the copy was
/// moved on, or never went out; nobody can tell.
pub const MAY_HAVE_LANDED: &str =
    "(an earlier attempt's answer was lost: it may have landed before the copy was moved on)";
/// Said of a restore sent again after an unanswered attempt, with the copy still where the
/// retraction put it: the earlier attempt did not land — or landed and a user moved the copy
/// back in between, which nobody can tell apart.
pub const AFTER_UNANSWERED: &str = " (sent again after an unanswered attempt)";

/// A copy as a request was about to be sent for it: its id and version (see
/// [`LocatedCopy::version`]). Recorded before sending, so that after a lost answer the copy
/// can be told apart from one that was moved since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCopy {
    pub id: String,
    pub version: Option<String>,
}

impl SentCopy {
    pub fn of(copy: &LocatedCopy) -> SentCopy {
        SentCopy {
            id: copy.id.clone(),
            version: copy.version.clone(),
        }
    }
}

/// Called with the copy right before a restore request is sent for it; an error sends nothing
/// (the job records the copy first: the durability rule).
pub type BeforeSend<'a> = dyn Fn(&LocatedCopy) -> Result<(), Failure> + Send + Sync + 'a;

/// How a job restores a copy (see [`ProviderClient::restore_from`]).
#[derive(Default, Clone, Copy)]
pub struct RestoreOptions<'a> {
    /// Where the retraction put the copy; `None`: any retracted folder.
    pub retracted_to: Option<&'a Folder>,
    /// The copy as an earlier attempt recorded it right before sending, when that attempt's
    /// outcome was never recorded (its process stopped).
    pub earlier: Option<&'a SentCopy>,
    pub before_send: Option<&'a BeforeSend<'a>>,
}

/// The copy found where the retraction put it, against what an attempt whose answer was lost
/// was sent for: the same copy, unchanged (that attempt did not land) is `Ok`; a new id (Graph
/// gives a copy one on every move) or a new version (Gmail's historyId) means it was moved
/// since — perhaps back by a user after that attempt landed — and it is left alone.
pub(crate) fn unchanged_since(
    copy: &LocatedCopy,
    sent: &SentCopy,
    internet_message_id: &str,
) -> Result<(), Failure> {
    let new_version =
        copy.version.is_some() && sent.version.is_some() && copy.version != sent.version;
    if copy.id == sent.id && !new_version {
        return Ok(());
    }
    Err(Failure::new(
        FailureReason::MovedSince,
        None,
        "moved_since",
        format!(
            "the copy of {internet_message_id} in {} is in {} again, but {} since an attempt whose answer was lost: left alone {MAY_HAVE_LANDED}",
            copy.mailbox,
            copy.folder,
            if copy.id != sent.id {
                "under a new id (moved)"
            } else {
                "changed (a new historyId)"
            }
        ),
    ))
}

/// Which copy a restore acts on, decided from a fresh locate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RestorePick {
    /// Still where the retraction put it: move it back.
    Act(LocatedCopy),
    /// Already in the original folder: nothing to send.
    AlreadyBack(LocatedCopy),
}

/// The restore rule shared by both providers (see [`ProviderClient::restore_from`]).
pub(crate) fn pick_restore(
    copies: &[LocatedCopy],
    mailbox: &str,
    internet_message_id: &str,
    current_id: Option<&str>,
    retracted_to: Option<&Folder>,
    original: &Folder,
) -> Result<RestorePick, Failure> {
    let in_place = |c: &&LocatedCopy| match retracted_to {
        Some(f) => &c.folder == f,
        None => c.folder.is_gone(),
    };
    let placed = copies
        .iter()
        .filter(in_place)
        .find(|c| Some(c.id.as_str()) == current_id)
        .or_else(|| copies.iter().find(in_place));
    if let Some(c) = placed {
        return Ok(RestorePick::Act(c.clone()));
    }
    if let Some(c) = copies.iter().find(|c| &c.folder == original) {
        return Ok(RestorePick::AlreadyBack(c.clone()));
    }
    if let Some(c) = copies.first() {
        return Err(Failure::new(
            FailureReason::MovedSince,
            None,
            "moved_since",
            format!(
                "the copy of {internet_message_id} in {mailbox} is now in {}, not in {} where the retraction put it: left alone",
                c.folder,
                retracted_to
                    .map(Folder::label)
                    .unwrap_or("a retracted folder")
            ),
        ));
    }
    Err(Failure::new(
        FailureReason::AlreadyGone,
        None,
        "not_found",
        format!(
            "no copy of {internet_message_id} in {mailbox} any more (permanently deleted mail is admin recoverable only)"
        ),
    ))
}

/// A message's headers as (name, value) pairs from a provider's list of `{name, value}`
/// objects (Graph `internetMessageHeaders`, Gmail `payload.headers`); anything else is empty.
fn header_pairs(list: &serde_json::Value) -> Vec<(String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["name"].as_str().unwrap_or_default().to_string(),
                h["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Whether a Graph delta round failed because its token is out of date. Outlook delta tokens
/// that fell out of the service's cache answer `410 Gone`; Graph's delta overview also names
/// `syncStateNotFound` (a 400 for other resources). Either way the mailbox must be read again
/// in full, or its cursor would fail every sync from then on.
fn graph_delta_expired(failure: &Failure) -> bool {
    failure.status == Some(410)
        || (failure.status == Some(400) && failure.code.eq_ignore_ascii_case("syncStateNotFound"))
}

#[cfg(test)]
mod tests {
    use super::{Failure, graph_delta_expired};
    use crate::model::FailureReason;

    #[test]
    fn a_graph_delta_token_is_out_of_date_on_410_or_sync_state_not_found() {
        let f = |status, code: &str| {
            Failure::new(FailureReason::ProviderError, Some(status), code, "x")
        };
        assert!(graph_delta_expired(&f(410, "SyncStateNotFound")));
        assert!(graph_delta_expired(&f(410, "")));
        assert!(graph_delta_expired(&f(400, "syncStateNotFound")));
        assert!(!graph_delta_expired(&f(400, "BadRequest")));
        assert!(!graph_delta_expired(&f(404, "ErrorItemNotFound")));
        assert!(!graph_delta_expired(&f(403, "ErrorAccessDenied")));
    }

    use super::windows;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn log_windows_cover_the_range_without_gaps_and_within_the_limit() {
        let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let end = start + Duration::days(25) + Duration::seconds(7);
        let w = windows(start, end, Duration::days(10));
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].0, start);
        assert_eq!(w[2].1, end);
        for pair in w.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "no gap, no overlap");
        }
        assert!(
            w.iter()
                .all(|(a, b)| *b - *a <= Duration::days(10) && a < b)
        );
        assert!(windows(end, start, Duration::days(10)).is_empty());
        // A zero step still advances (a second at a time), never loops forever.
        assert_eq!(
            windows(start, start + Duration::seconds(10), Duration::zero()).len(),
            10
        );
    }
}
