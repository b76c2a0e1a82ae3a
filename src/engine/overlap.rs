//! Planning and acting at once, when nothing waits for a confirmation (`retract --yes`): the
//! job is made first, with its plan stored provisional (the request, no items yet), and every
//! copy the planner locates becomes a job item — recorded in the store, claims checked, before
//! anything is sent for it — and is acted on while other mailboxes are still being located.
//! When planning ends, what it found beside (copies planning could not reach, lists, outside
//! addresses, copies already gone) is added to the job, and the complete plan is sealed and
//! stored under the id the job names, and audited as for a confirmed plan: the same plan
//! accounting, only earlier action. A job stopped while its plan was provisional (a crash, a
//! kill) plans again when resumed, adding only the copies it does not hold yet.

use super::core::{Engine, EngineError};
use super::execute::{RunShared, Sink};
use super::plan::{Plan, PlanItem, RetractRequest, SkippedItem};
use super::planner::{Located, PlanStream};
use super::roles::Capability;
use crate::model::Folder;
use crate::store::jobs::{ItemRow, ItemState, JobKind, JobRow};
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// The digest of a plan stored while its job plans it (not a `sha256:` digest: never applied).
pub const PLANNING_DIGEST: &str = "planning";
/// Located copies recorded (one transaction) and handed to the providers at once, at most.
const LOCATED_CHUNK: usize = 500;
/// Such handovers acting at the same time (the tenants' pacers bound what is sent).
const ACTING_AT_ONCE: usize = 8;

/// (tenant, mailbox or address, Message-ID): one plan line.
type Key = (String, String, String);

fn item_key(it: &ItemRow) -> Key {
    (it.tenant.clone(), it.mailbox.clone(), it.message_id.clone())
}

fn plan_item_key(p: &PlanItem) -> Key {
    (
        p.tenant.clone(),
        p.mailbox.clone(),
        p.internet_message_id.clone(),
    )
}

fn skipped_key(s: &SkippedItem) -> Key {
    (
        s.tenant.clone().unwrap_or_default(),
        s.address.clone(),
        s.internet_message_id.clone(),
    )
}

/// A plan's item as a pending job item.
pub(super) fn item_row(p: &PlanItem, delivered_at: Option<DateTime<Utc>>) -> ItemRow {
    let mut row = ItemRow::pending(
        &p.tenant,
        &p.mailbox,
        &p.internet_message_id,
        p.folder.clone(),
        p.action,
        p.effective_action,
    );
    row.copy_id = Some(p.copy_id.clone());
    row.read = p.read;
    row.depth = p.depth;
    row.note = p.note.clone();
    row.detail = p
        .unresolved
        .as_ref()
        .map(|why| format!("unresolved when planned ({why}): located when run"));
    row.delivered_at = delivered_at;
    row
}

/// A line the job stored `skipped`, as the plan shows it.
fn skipped_of_row(it: &ItemRow) -> SkippedItem {
    SkippedItem {
        tenant: (!it.tenant.is_empty()).then(|| it.tenant.clone()),
        address: it.mailbox.clone(),
        internet_message_id: it.message_id.clone(),
        reason: it
            .reason
            .unwrap_or(crate::model::FailureReason::ProviderError),
        detail: it.detail.clone().unwrap_or_default(),
    }
}

/// A plan's skipped line as a settled job item.
pub(super) fn skipped_row(s: &SkippedItem, action: crate::model::RetractAction) -> ItemRow {
    let mut row = ItemRow::pending(
        s.tenant.as_deref().unwrap_or_default(),
        &s.address,
        &s.internet_message_id,
        Folder::Inbox,
        action,
        action,
    );
    row.state = ItemState::Skipped;
    row.reason = Some(s.reason);
    row.detail = Some(s.detail.clone());
    row
}

impl Engine {
    /// Makes a retract job whose plan is made while it runs ([`Engine::run_job`] plans and
    /// acts at once): for a request nobody confirms (`retract --yes`). Refused, like
    /// planning, for a request that names nothing or messages not in the trace, and when the
    /// role may not plan or act. The plan is audited (`plan_applied`, as a confirmed plan)
    /// when it is complete.
    pub fn create_planning_job(
        &self,
        request: RetractRequest,
        detected_at: Option<DateTime<Utc>>,
    ) -> Result<i64, EngineError> {
        self.authorize(Capability::Plan)?;
        self.authorize(Capability::Retract(request.action))?;
        if request.message_ids.is_empty() && request.query.is_none() {
            return Err(EngineError::Invalid(
                "nothing to retract: give a Message-ID or a query".into(),
            ));
        }
        // Message-IDs unknown to the trace, a bad query, an unknown tenant: refused now.
        self.expand_conversation(&request)?;
        let plan = Plan::new(self.operator.name.clone(), request, Vec::new(), Vec::new());
        let job = self.store_plan_and_job(&plan, PLANNING_DIGEST, false, detected_at, &[])?;
        Ok(job)
    }

    /// The provisional plan of a job whose plan is still being made, if it is one.
    pub(super) fn planning_plan(&self, row: &JobRow) -> Result<Option<Plan>, EngineError> {
        let Some(id) = row.plan_id.as_deref() else {
            return Ok(None);
        };
        if row.kind != JobKind::Retract
            || self.store().plan_digest(id)?.as_deref() != Some(PLANNING_DIGEST)
        {
            return Ok(None);
        }
        let Some(json) = self.store().plan_json(id)? else {
            return Ok(None);
        };
        serde_json::from_str(&json).map(Some).map_err(|e| {
            EngineError::Invalid(format!(
                "job {}: its plan {id} cannot be read ({e}); it is not resumable",
                row.id
            ))
        })
    }

    /// The complete plan of a retract job, once sealed (`None` while it is still being made,
    /// or for a job without a plan).
    pub(super) fn sealed_plan(&self, job: i64) -> Result<Option<Plan>, EngineError> {
        let Some(row) = self.store().job(job)? else {
            return Ok(None);
        };
        let Some(id) = row.plan_id.as_deref() else {
            return Ok(None);
        };
        if self.store().plan_digest(id)?.as_deref() == Some(PLANNING_DIGEST) {
            return Ok(None);
        }
        let Some(json) = self.store().plan_json(id)? else {
            return Ok(None);
        };
        serde_json::from_str(&json).map(Some).map_err(|e| {
            EngineError::Invalid(format!("job {job}: its plan {id} cannot be read ({e})"))
        })
    }

    /// Plans the job's request, recording each located copy as an item and (when `act`)
    /// acting on it at once; then adds the rest of the plan and stores the complete plan.
    pub(super) async fn plan_while_acting(
        &self,
        row: &JobRow,
        provisional: Plan,
        act: bool,
        sink: Sink<'_>,
        shared: &RunShared<'_>,
    ) -> Result<(), EngineError> {
        let job = row.id;
        let request = &provisional.request;
        // Lines a previous run of this job recorded (a job resumed after a crash).
        let earlier: Vec<ItemRow> = self.store().job_items(job, None)?;
        let held: Mutex<BTreeSet<Key>> = Mutex::new(earlier.iter().map(item_key).collect());
        let messages = self.expand_conversation(request)?;
        let delivered = self.delivered_at(&messages);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Located>();
        let planning = self.resolve_streaming(request, None, Some(PlanStream { job, located: tx }));
        let chunks = stream::unfold(rx, |mut rx| async move {
            let first = rx.recv().await?;
            let mut chunk = vec![first];
            while chunk.len() < LOCATED_CHUNK {
                match rx.try_recv() {
                    Ok(l) => chunk.push(l),
                    Err(_) => break,
                }
            }
            Some((chunk, rx))
        });
        // Lines stored `skipped` because another job holds their copy (the planner leaves the
        // claim of a located copy to the job's own record of it, checked when it is stored).
        let claimed: Mutex<BTreeSet<Key>> = Mutex::new(BTreeSet::new());
        let (act_tx, act_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<ItemRow>>();
        let (held_ref, claimed_ref, messages_ref, delivered_ref) =
            (&held, &claimed, &messages, &delivered);
        // Recording: each located copy becomes a job item as it comes (before anything is sent
        // for it), handed to acting at once. It runs ahead of acting, so the complete plan can
        // be sealed as soon as planning ends, while the last copies are still acted on.
        let recording = async move {
            let mut chunks = std::pin::pin!(chunks);
            while let Some(chunk) = chunks.next().await {
                let mut rows = Vec::new();
                for ((tenant, mailbox, mid), depth, result) in chunk {
                    let Ok(copies) = result else { continue };
                    let key = (tenant.clone(), mailbox.clone(), mid.clone());
                    if held_ref
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains(&key)
                    {
                        continue;
                    }
                    // Lines without a copy to act on are added with the rest of the plan.
                    if let Ok(items) = self.located_items(
                        request,
                        messages_ref,
                        (&tenant, &mailbox, &mid),
                        depth,
                        copies,
                    ) {
                        let at = delivered_ref.get(&(tenant.clone(), mid.clone())).copied();
                        rows.extend(items.iter().map(|p| item_row(p, at.flatten())));
                    }
                }
                // Stopped (cancelled, or the lease taken over by a process that plans the
                // job again): nothing more is recorded; the plan stays provisional for the
                // run that resumes the job.
                if rows.is_empty() || shared.should_stop() {
                    continue;
                }
                // Durability: recorded before anything is sent for them.
                let stored = self.store().append_job_items(job, &rows)?;
                let mut pending = Vec::new();
                {
                    let mut held = held_ref.lock().unwrap_or_else(|p| p.into_inner());
                    let mut claimed = claimed_ref.lock().unwrap_or_else(|p| p.into_inner());
                    for (mut row, (id, state)) in rows.into_iter().zip(stored) {
                        held.insert(item_key(&row));
                        row.id = id;
                        row.job_id = job;
                        row.state = state;
                        match state {
                            ItemState::Pending => pending.push(row),
                            ItemState::Skipped => {
                                claimed.insert(item_key(&row));
                            }
                            _ => {}
                        }
                    }
                }
                if act && !pending.is_empty() {
                    // A closed receiver: acting stopped (cancelled); the items stay pending.
                    let _ = act_tx.send(pending);
                }
            }
            drop(act_tx);
            Ok::<(), EngineError>(())
        };
        // What waits is taken together, up to a chunk: recording runs ahead in handovers as
        // small as one locate round (Graph: 10 mailboxes), and a few such at a time would
        // leave most of the tenant's slots idle.
        let acting = stream::unfold(act_rx, |mut rx| async move {
            let mut pending = rx.recv().await?;
            while pending.len() < LOCATED_CHUNK {
                match rx.try_recv() {
                    Ok(more) => pending.extend(more),
                    Err(_) => break,
                }
            }
            Some((pending, rx))
        })
        .map(|pending| async move {
            if !shared.should_stop() {
                self.act(row, pending, sink, shared).await;
            }
        })
        .buffer_unordered(ACTING_AT_ONCE)
        .collect::<Vec<()>>();
        let sealing = async {
            let (resolution, recorded) = tokio::join!(planning, recording);
            let resolution = resolution?;
            recorded?;
            if shared.should_stop() {
                return Ok(());
            }
            let claimed = claimed_ref
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let held = held_ref.lock().unwrap_or_else(|p| p.into_inner()).clone();
            self.seal_streamed_plan(
                job,
                &provisional,
                resolution,
                earlier,
                &held,
                &claimed,
                &delivered,
            )
            .await
        };
        let (sealed, _) = tokio::join!(sealing, acting);
        sealed
    }

    /// The rest of a plan made while its job acts (what no streamed copy covered) added to
    /// the job, and the complete plan sealed and stored with its audit entries. The heavy part
    /// (sorting, digest, seal, JSON, the store write) runs off the async task, which keeps
    /// sending and settling the job's batches meanwhile.
    #[allow(clippy::too_many_arguments)]
    async fn seal_streamed_plan(
        &self,
        job: i64,
        provisional: &Plan,
        resolution: super::planner::Resolution,
        earlier: Vec<ItemRow>,
        held: &BTreeSet<Key>,
        claimed: &BTreeSet<Key>,
        delivered: &BTreeMap<(String, String), Option<DateTime<Utc>>>,
    ) -> Result<(), EngineError> {
        let earlier_keys: BTreeSet<Key> = earlier.iter().map(item_key).collect();
        let mut rest: Vec<ItemRow> = Vec::new();
        for p in &resolution.items {
            if !held.contains(&plan_item_key(p)) {
                let at = delivered
                    .get(&(p.tenant.clone(), p.internet_message_id.clone()))
                    .copied()
                    .flatten();
                rest.push(item_row(p, at));
            }
        }
        for s in &resolution.skipped {
            if !held.contains(&skipped_key(s)) {
                rest.push(skipped_row(s, provisional.request.action));
            }
        }
        if !rest.is_empty() {
            self.store().append_job_items(job, &rest)?;
        }
        // Copies another job holds, as the job recorded them when they were located: shown
        // with that job, not planned here.
        let mut claims: BTreeMap<Key, ItemRow> = BTreeMap::new();
        if !claimed.is_empty() {
            for it in self.store().job_items(job, Some(ItemState::Skipped))? {
                let key = item_key(&it);
                if claimed.contains(&key) {
                    claims.insert(key, it);
                }
            }
        }

        // The plan as this job holds it. Lines an earlier run of the job recorded stand as
        // recorded (planning now would find the copies it acted on already gone).
        let mut items: Vec<PlanItem> = Vec::with_capacity(resolution.items.len());
        let mut skipped: Vec<SkippedItem> = Vec::new();
        for p in resolution.items {
            let key = plan_item_key(&p);
            if earlier_keys.contains(&key) {
                continue;
            }
            match claims.remove(&key) {
                Some(it) => skipped.push(skipped_of_row(&it)),
                None => items.push(p),
            }
        }
        skipped.extend(
            resolution
                .skipped
                .into_iter()
                .filter(|s| !earlier_keys.contains(&skipped_key(s))),
        );
        for it in earlier {
            if it.state == ItemState::Skipped {
                skipped.push(skipped_of_row(&it));
            } else {
                let kind = self
                    .client(&it.tenant)
                    .map(|c| c.kind())
                    .unwrap_or(crate::model::TenantKind::Microsoft365);
                items.push(PlanItem {
                    tenant: it.tenant.clone(),
                    kind,
                    mailbox: it.mailbox.clone(),
                    internet_message_id: it.message_id.clone(),
                    copy_id: it.copy_id.clone().unwrap_or_default(),
                    folder: it.folder.clone(),
                    read: it.read,
                    depth: it.depth,
                    action: it.action,
                    effective_action: it.effective_action,
                    note: it.note.clone(),
                    unresolved: None,
                });
            }
        }
        let key = self.store().plan_key()?;
        let (operator, request) = (provisional.operator.clone(), provisional.request.clone());
        let (id, created_at) = (provisional.id.clone(), provisional.created_at);
        let (plan, json) = tokio::task::spawn_blocking(move || {
            super::planner::sort_items(&mut items);
            skipped.sort_by(|a, b| {
                (&a.tenant, &a.address, &a.internet_message_id).cmp(&(
                    &b.tenant,
                    &b.address,
                    &b.internet_message_id,
                ))
            });
            let mut plan = Plan::new(operator, request, items, skipped);
            plan.id = id;
            plan.created_at = created_at;
            plan.seal_with(&key);
            let json = plan.to_json_pretty();
            (plan, json)
        })
        .await
        .map_err(|e| EngineError::Invalid(format!("job {job}: sealing its plan failed: {e}")))?;
        // The complete plan and what it means for the audit, in one transaction: a crash
        // leaves the provisional plan (planned again on resume) or both, never a sealed plan
        // without its entries. An automation's decision is audited here too (`auto_retract`).
        let mut records = vec![self.plan_applied_record(&plan, job)];
        if plan.request.trigger.is_auto() {
            records.push(self.auto_retract_record(&plan, Some(job)));
        }
        let store = self.store_handle();
        tokio::task::spawn_blocking(move || {
            store
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .seal_plan_audited(&plan.id, PLANNING_DIGEST, &plan.digest, &json, records)
        })
        .await
        .map_err(|e| EngineError::Invalid(format!("job {job}: storing its plan failed: {e}")))??;
        Ok(())
    }

    /// When each (tenant, message) was delivered, from the trace (time to act counts from it).
    fn delivered_at(
        &self,
        messages: &[super::planner::PlannedMessage],
    ) -> BTreeMap<(String, String), Option<DateTime<Utc>>> {
        messages
            .iter()
            .map(|m| {
                (
                    (m.record.tenant.clone(), m.record.message_id.clone()),
                    DateTime::from_timestamp(m.record.received, 0),
                )
            })
            .collect()
    }
}
