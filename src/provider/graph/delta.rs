//! Graph change tracking for trace sync: `GET /users/{u}/mailFolders/{f}/messages/delta`,
//! one folder at a time, paged with `@odata.nextLink` to the round's `@odata.deltaLink` (the
//! cursor kept for the next round).

use super::{GraphClient, SYNC_SELECT};
use crate::model::Folder;
use crate::provider::errors::{Failure, Operation, internal};
use crate::provider::http::{SubRequest, enc};
use crate::provider::scheduler::call_ok;
use crate::provider::{ChangeRound, DeltaStart};
use serde_json::Value;

/// The folders whose changes trace sync follows: where delivered mail lands and where users
/// and retractions move it.
pub const DELTA_FOLDERS: &[&str] = &["inbox", "junkemail", "deleteditems", "archive", "sentitems"];

impl GraphClient {
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
        let place = Folder::from_graph_name(folder);
        let metas = values
            .iter()
            .map(|m| Self::meta_of(m, self.to_copy(mailbox, m, Some(place.clone()))))
            .collect();
        Ok(ChangeRound {
            metas,
            removed,
            requests,
            cursor,
        })
    }
}
