//! The console's recipient checklist: the plan's own recipient list for the opened messages
//! (every tenant that holds them), one row per (tenant, address), from [`Engine::resolve`] —
//! the planner is the only place that decides who is reached. A located copy is a row that can
//! be ticked; every recipient the plan cannot act on (with its reason) and every mailbox it
//! could not reach (unresolved) is a row of its own that cannot.

use super::core::{Engine, EngineError};
use super::plan::RetractRequest;
use super::planner::{LocateProgress, Resolution};
use super::view::{AddressKind, CopyOutcome, RecipientRow, RecipientState};
use crate::model::{FailureReason, RetractAction, Trigger};
use crate::store::jobs::{ItemRow, ItemState};
use std::collections::{BTreeMap, BTreeSet};

impl Engine {
    /// The checklist of `message_ids` (depth 0, no exclusions, every tenant holding them):
    /// located mailboxes first, then unresolved ones, then what cannot be acted on; each group
    /// by tenant and address. Reads only; no role beyond viewing is needed.
    pub async fn recipient_checklist(
        &self,
        message_ids: &[String],
        progress: Option<&LocateProgress>,
    ) -> Result<Vec<RecipientRow>, EngineError> {
        let request = RetractRequest {
            message_ids: message_ids.to_vec(),
            query: None,
            tenants: Vec::new(),
            only: Vec::new(),
            exclude: Vec::new(),
            depth: 0,
            action: RetractAction::Junk,
            trigger: Trigger::Manual,
            reason: String::new(),
        };
        let Resolution {
            messages,
            items,
            skipped,
        } = self.resolve(&request, progress).await?;
        let mut last: BTreeMap<(String, String), CopyOutcome> = BTreeMap::new();
        let mids: BTreeSet<&str> = messages
            .iter()
            .map(|m| m.record.message_id.as_str())
            .collect();
        for mid in mids {
            let items = self.store().last_outcomes(mid)?;
            last.extend(last_outcomes(items));
        }
        let mut rows: BTreeMap<(String, String), RecipientRow> = BTreeMap::new();
        for item in items {
            let key = (item.tenant.clone(), item.mailbox.to_ascii_lowercase());
            let state = match &item.unresolved {
                None => RecipientState::Located,
                Some(why) => {
                    let (reason, detail) = split_reason(why);
                    RecipientState::Unresolved { reason, detail }
                }
            };
            let row = rows.entry(key).or_insert_with(|| RecipientRow {
                address: item.mailbox.clone(),
                tenant: item.tenant.clone(),
                kind: AddressKind::Mailbox,
                state: state.clone(),
                folder: None,
                read: None,
                copies: 0,
                last_outcome: None,
            });
            if state == RecipientState::Located {
                if row.state != RecipientState::Located {
                    row.state = RecipientState::Located;
                    row.folder = None;
                }
                if row.folder.is_none() {
                    row.folder = Some(item.folder.clone());
                    row.read = Some(item.read);
                }
            }
            row.copies += 1;
        }
        for s in skipped {
            let tenant = s.tenant.clone().unwrap_or_default();
            let key = (tenant.clone(), s.address.to_ascii_lowercase());
            // A mailbox with a copy to act on stays tickable; its other (gone, claimed)
            // messages are in the plan's skipped list.
            if rows.contains_key(&key) {
                continue;
            }
            let kind = match s.reason {
                FailureReason::NotAMailbox => AddressKind::DistributionList,
                FailureReason::External => AddressKind::External,
                _ => AddressKind::Mailbox,
            };
            rows.insert(
                key,
                RecipientRow {
                    address: s.address.clone(),
                    tenant,
                    kind,
                    state: RecipientState::NotActionable {
                        reason: s.reason,
                        detail: s.detail.clone(),
                    },
                    folder: None,
                    read: None,
                    copies: 0,
                    last_outcome: None,
                },
            );
        }
        let mut out: Vec<RecipientRow> = rows
            .into_iter()
            .map(|(key, mut row)| {
                row.last_outcome = last.get(&key).cloned();
                row
            })
            .collect();
        out.sort_by_key(|r| {
            let rank = match r.state {
                RecipientState::Located => 0,
                RecipientState::Unresolved { .. } => 1,
                RecipientState::NotActionable { .. } => 2,
            };
            (rank, r.tenant.clone(), r.address.clone())
        });
        Ok(out)
    }
}

/// An unresolved item's note (`throttled: 429 …`) as reason and detail.
fn split_reason(note: &str) -> (FailureReason, String) {
    let (word, detail) = note.split_once(": ").unwrap_or((note, ""));
    let reason = word.parse().unwrap_or(FailureReason::ProviderError);
    (reason, detail.to_string())
}

/// The last settled outcome per (tenant, mailbox): the newest item wins; a succeeded restore
/// item marks the copy restored.
fn last_outcomes(items: Vec<ItemRow>) -> BTreeMap<(String, String), CopyOutcome> {
    let restore_jobs: BTreeSet<i64> = items
        .iter()
        .filter(|it| it.source_item.is_some())
        .map(|it| it.job_id)
        .collect();
    let mut last = BTreeMap::new();
    for it in items {
        let restored = restore_jobs.contains(&it.job_id) && it.state == ItemState::Succeeded;
        let outcome = super::service::item_outcome(&it, restored);
        last.insert(
            (it.tenant.clone(), it.mailbox.to_ascii_lowercase()),
            outcome,
        );
    }
    last
}
