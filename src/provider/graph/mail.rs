//! Graph mail reads: locating a message's copies (and naming their folders), a conversation,
//! recent mail for trace sync, raw MIME and the message trace.

use super::{GraphClient, SYNC_SELECT};
use crate::model::Folder;
use crate::provider::errors::{Failure, Operation, classify};
use crate::provider::http::{SubRequest, SubResponse, enc};
use crate::provider::scheduler::{call_all, call_each, call_ok};
use crate::provider::{LocatedCopy, LoggedDelivery, MessageMeta, windows};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

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

impl GraphClient {
    pub(super) fn messages_filter(mailbox: &str, filter: &str, folder: Option<&str>) -> String {
        let folder = folder
            .map(|f| format!("/mailFolders/{f}"))
            .unwrap_or_default();
        format!(
            "/users/{}{folder}/messages?$filter={}&$select={COPY_SELECT}&$top=50",
            enc(mailbox),
            enc(filter)
        )
    }

    pub(super) fn mid_filter(internet_message_id: &str) -> String {
        format!(
            "internetMessageId eq '{}'",
            internet_message_id.replace('\'', "''")
        )
    }

    /// A folder name for an opaque `parentFolderId`, if known without asking: a well-known name,
    /// or an id of a mailbox whose well-known folders were learned (any other id is a folder
    /// of the user's own, `Other`).
    pub(super) fn folder_of(&self, mailbox: &str, folder_id: &str) -> Option<Folder> {
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
    pub(super) fn learn_folders(&self, mailbox: &str, responses: &[SubResponse]) {
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
    pub(super) fn folder_requests_if_unknown(&self, mailbox: &str) -> Vec<SubRequest> {
        if self.folders_learned(mailbox) {
            Vec::new()
        } else {
            Self::folder_requests(mailbox)
        }
    }

    pub(super) fn folder_requests(mailbox: &str) -> Vec<SubRequest> {
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
    pub(super) fn locate_requests(
        &self,
        mailbox: &str,
        internet_message_id: &str,
    ) -> Vec<SubRequest> {
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
    pub(super) fn located_copies(
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

    pub(super) fn to_copy(&self, mailbox: &str, m: &Value, folder: Option<Folder>) -> LocatedCopy {
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
    pub(super) fn meta_of(m: &Value, c: LocatedCopy) -> MessageMeta {
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
}
