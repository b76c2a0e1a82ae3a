//! Graph change tracking for trace sync: `GET /users/{u}/mailFolders/delta` for the folder
//! tree (child folders included), then `GET /users/{u}/mailFolders/{f}/messages/delta` for
//! each folder followed, every round paged with `@odata.nextLink` to its
//! `@odata.deltaLink` (the cursor kept for the next round).

use super::{GraphClient, SYNC_SELECT};
use crate::model::Folder;
use crate::provider::errors::{Failure, Operation, internal};
use crate::provider::http::{SubRequest, enc};
use crate::provider::scheduler::call_ok;
use crate::provider::{ChangeRound, DeltaStart, FolderRound};
use serde_json::Value;

/// The well-known folders an earlier clawback followed by name (before every folder was
/// followed by id): their cursors are dropped when the mailbox is next listed in full.
pub const LEGACY_DELTA_FOLDERS: &[&str] =
    &["inbox", "junkemail", "deleteditems", "archive", "sentitems"];

impl GraphClient {
    /// One round of the mailbox's folder tree (`mailFolders/delta`): every folder on a first
    /// round (`from: None`), the folders added or changed since on a later one, and those
    /// removed. An out-of-date link fails like a message delta's.
    pub async fn folders_delta(
        &self,
        mailbox: &str,
        from: Option<&str>,
    ) -> Result<FolderRound, Failure> {
        let mut next = Some(match from {
            Some(link) => self.relative_link(link).ok_or_else(|| {
                internal(&format!(
                    "{mailbox}: stored folder delta link {link:?} is not a URL of this tenant"
                ))
            })?,
            None => format!("/users/{}/mailFolders/delta?$select=id", enc(mailbox)),
        });
        let mut round = FolderRound::default();
        let cursor = loop {
            let Some(path) = next.take() else {
                return Err(internal(&format!(
                    "{mailbox}: folder delta page without a next or delta link"
                )));
            };
            let r = call_ok(self, SubRequest::get(path, mailbox, 0), Operation::Read).await?;
            round.requests += 1;
            for f in r.body["value"].as_array().into_iter().flatten() {
                let Some(id) = f["id"].as_str() else { continue };
                if f.get("@removed").is_some() {
                    round.removed.push(id.to_string());
                } else {
                    round.folders.push(id.to_string());
                }
            }
            if let Some(link) = r.body["@odata.deltaLink"].as_str() {
                break link.to_string();
            }
            next = r.body["@odata.nextLink"]
                .as_str()
                .and_then(|l| self.relative_link(l));
        };
        round.cursor = cursor;
        Ok(round)
    }

    /// One delta round of a folder: from a previous round's deltaLink, or a first round over
    /// the mail received since a time. Messages that left the folder are only counted.
    /// An out-of-date link answers `410 Gone` (the failure's status): start a first round.
    pub async fn messages_delta(
        &self,
        mailbox: &str,
        folder: &str,
        start: DeltaStart<'_>,
    ) -> Result<ChangeRound, Failure> {
        let mut next = Some(match start {
            DeltaStart::Cursor(link) => self.relative_link(link).ok_or_else(|| {
                internal(&format!(
                    "{mailbox}/{folder}: stored delta link {link:?} is not a URL of this tenant"
                ))
            })?,
            DeltaStart::Since(since) => {
                let filter = format!(
                    "receivedDateTime ge {}",
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
                format!(
                    "/users/{}/mailFolders/{folder}/messages/delta?$filter={}&$select={SYNC_SELECT}",
                    enc(mailbox),
                    enc(&filter)
                )
            }
        });
        let mut values: Vec<Value> = Vec::new();
        let mut removed = 0u64;
        let mut requests = 0u64;
        let cursor = loop {
            let Some(path) = next.take() else {
                return Err(internal(&format!(
                    "{mailbox}/{folder}: delta page without a next or delta link"
                )));
            };
            let r = call_ok(self, SubRequest::get(path, mailbox, 0), Operation::Read).await?;
            requests += 1;
            for m in r.body["value"].as_array().into_iter().flatten() {
                if m.get("@removed").is_some() {
                    removed += 1;
                } else {
                    values.push(m.clone());
                }
            }
            if let Some(link) = r.body["@odata.deltaLink"].as_str() {
                break link.to_string();
            }
            next = r.body["@odata.nextLink"]
                .as_str()
                .and_then(|l| self.relative_link(l));
        };
        // A well-known name names the folder; an id is named from the message's parentFolderId.
        let place =
            Some(Folder::from_graph_name(folder)).filter(|f| !matches!(f, Folder::Other(_)));
        let metas = values
            .iter()
            .map(|m| Self::meta_of(m, self.to_copy(mailbox, m, place.clone())))
            .collect();
        Ok(ChangeRound {
            metas,
            removed,
            requests,
            cursor,
        })
    }
}
