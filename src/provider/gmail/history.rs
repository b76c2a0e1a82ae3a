//! Gmail change tracking for trace sync: `users.getProfile` for a starting `historyId`, then
//! `users.history.list(startHistoryId, historyTypes=messageAdded)` for the messages added
//! since (their metadata read as a listing reads it).

use super::{GmailClient, units};
use crate::provider::ChangeRound;
use crate::provider::errors::{Failure, Operation, internal};
use crate::provider::http::{SubRequest, enc};
use crate::provider::scheduler::call_ok;

/// History records per page (the discovery document's maximum).
const HISTORY_PAGE: u32 = 500;

impl GmailClient {
    /// The mailbox's current `historyId` (`users.getProfile`): a cursor taken before a full
    /// listing sees everything that changes during and after it.
    pub async fn current_history_id(&self, mailbox: &str) -> Result<String, Failure> {
        let path = format!("{}/profile", Self::user_path(mailbox));
        let r = call_ok(
            self,
            SubRequest::get(path, mailbox, units::GET_PROFILE),
            Operation::Read,
        )
        .await?;
        history_id(&r.body, mailbox)
    }

    /// The messages added to the mailbox after `start` (a `historyId`), with their metadata,
    /// and the history id to start from next time. An out-of-date `start` answers `404` (the
    /// failure's status): list the mailbox again.
    pub async fn messages_added_since(
        &self,
        mailbox: &str,
        start: &str,
    ) -> Result<ChangeRound, Failure> {
        let mut ids: Vec<String> = Vec::new();
        let mut page: Option<String> = None;
        let mut requests = 0u64;
        let cursor = loop {
            let mut path = format!(
                "{}/history?startHistoryId={}&historyTypes=messageAdded&maxResults={HISTORY_PAGE}",
                Self::user_path(mailbox),
                enc(start)
            );
            if let Some(p) = &page {
                path.push_str(&format!("&pageToken={}", enc(p)));
            }
            let r = call_ok(
                self,
                SubRequest::get(path, mailbox, units::HISTORY_LIST),
                Operation::Read,
            )
            .await?;
            requests += 1;
            for h in r.body["history"].as_array().into_iter().flatten() {
                for added in h["messagesAdded"].as_array().into_iter().flatten() {
                    if let Some(id) = added["message"]["id"].as_str()
                        && !ids.iter().any(|x| x == id)
                    {
                        ids.push(id.to_string());
                    }
                }
            }
            page = r.body["nextPageToken"].as_str().map(str::to_string);
            if page.is_none() {
                // "If you receive no nextPageToken … store the returned historyId."
                break history_id(&r.body, mailbox)?;
            }
        };
        requests += ids.len() as u64;
        // A message added and deleted since is gone: nothing to index.
        let metas = self.metadata_of(mailbox, ids, true).await?;
        Ok(ChangeRound {
            metas,
            removed: 0,
            requests,
            cursor,
        })
    }
}

fn history_id(body: &serde_json::Value, mailbox: &str) -> Result<String, Failure> {
    match &body["historyId"] {
        serde_json::Value::String(s) if s.parse::<u64>().is_ok() => Ok(s.clone()),
        serde_json::Value::Number(n) if n.is_u64() => Ok(n.to_string()),
        other => Err(internal(&format!(
            "{mailbox}: answer has no usable historyId ({other})"
        ))),
    }
}
