//! Gmail mail reads: locating a message's copies (folder from labels), a thread, recent mail
//! for trace sync, raw MIME and the Gmail log (Admin SDK Reports).

use super::{GmailClient, next_page, units};
use crate::model::Folder;
use crate::provider::auth::REPORTS_SCOPE;
use crate::provider::directory::all_pages;
use crate::provider::errors::{Failure, Operation, classify};
use crate::provider::http::{SubRequest, SubResponse, enc};
use crate::provider::scheduler::{call_each, call_ok};
use crate::provider::{LocatedCopy, LoggedDelivery, MessageMeta, windows};
use chrono::{DateTime, TimeZone, Utc};
use futures_util::StreamExt;
use serde_json::Value;

/// Metadata GETs in flight per mailbox while listing recent mail (trace sync).
const METADATA_CONCURRENCY: usize = 8;

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
    pub(super) fn list_request(mailbox: &str, mid: &str) -> SubRequest {
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

    pub(super) fn get_request(mailbox: &str, id: &str) -> SubRequest {
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

    pub(super) fn to_copy(mailbox: &str, mid: &str, m: &Value) -> LocatedCopy {
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
    /// sides; batched, they share a `multipart/mixed` request each of up to 25 calls. Each
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
            let path = format!(
                "/admin/reports/v1/activity/users/all/applications/gmail?eventName=delivery&filters={}&startTime={}&endTime={}&maxResults=1000",
                enc("event_info.mail_event_type==2"),
                enc(&stamp(from)),
                enc(&stamp(to))
            );
            for item in self.admin_list(path, REPORTS_SCOPE, "items").await? {
                out.extend(logged_deliveries(&item));
            }
        }
        Ok(out)
    }

    pub async fn list_recent_messages(
        &self,
        mailbox: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<MessageMeta>, Failure> {
        let path = format!(
            "{}/messages?q={}&includeSpamTrash=true&maxResults=500",
            Self::user_path(mailbox),
            enc(&format!("after:{}", since.timestamp()))
        );
        let listed = all_pages(
            path.clone(),
            "messages",
            |p| async move {
                let request = SubRequest::get(p, mailbox, units::LIST);
                Ok(call_ok(self, request, Operation::Read).await?.body)
            },
            |page| next_page(&path, page),
        )
        .await?;
        let ids = listed
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
