//! Building a plan (DESIGN §2): seed messages (by Message-ID or search), conversation expansion
//! to the requested depth over the trace's References graph, recipient resolution (groups
//! expanded to their member mailboxes, externals marked), and locating every copy. What cannot be
//! acted on is listed with its reason; nothing is changed at any provider.

use super::core::{Engine, EngineError};
use super::plan::{Plan, PlanItem, RetractRequest, SkippedItem};
use super::roles::Capability;
use crate::model::{FailureReason, Folder, RetractAction, TenantKind, normalize_message_id};
use crate::provider::{Failure, LocatedCopy, Resolved};
use crate::trace::TraceRecord;
use futures_util::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

/// A (tenant, mailbox, Message-ID) to locate, with the conversation depth it was reached at.
type Target = ((String, String, String), u8);

/// Resolutions and locates in flight at once while planning.
const PLAN_CONCURRENCY: usize = 256;
/// Messages a query may seed at most.
const QUERY_SEED_LIMIT: usize = 500;

/// What locating one (tenant, mailbox, message) answered.
type LocateResult = Result<Vec<LocatedCopy>, Failure>;

/// A located (tenant, mailbox, message) with its depth.
pub(crate) type Located = ((String, String, String), u8, LocateResult);

/// A plan made while its job runs ([`Engine::resolve_streaming`]): every copy located is
/// handed over at once (a located copy is final: a later round never replaces it), and the
/// job's own items are not counted as claims on its copies.
pub(crate) struct PlanStream {
    pub job: i64,
    pub located: tokio::sync::mpsc::UnboundedSender<Located>,
}

/// One message of the plan with the depth it was reached at.
#[derive(Debug, Clone)]
pub struct PlannedMessage {
    pub record: TraceRecord,
    pub depth: u8,
}

/// What one depth adds (the TUI's live depth preview).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepthAdds {
    pub depth: u8,
    pub messages: u64,
    pub copies: u64,
    pub mailboxes: u64,
}

fn lower(v: &[String]) -> BTreeSet<String> {
    v.iter().map(|s| s.trim().to_ascii_lowercase()).collect()
}

impl Engine {
    /// The messages a request covers: its seeds, then `depth` levels of replies and forwards
    /// (level n + 1 = messages whose parent is in level n).
    pub fn expand_conversation(
        &self,
        request: &RetractRequest,
    ) -> Result<Vec<PlannedMessage>, EngineError> {
        let store = self.store();
        let mut seeds: Vec<TraceRecord> = Vec::new();
        for raw in &request.message_ids {
            let Some(mid) = normalize_message_id(raw) else {
                return Err(EngineError::Invalid(format!(
                    "{raw:?} is not a Message-ID (expected <local@domain>)"
                )));
            };
            let found = store.trace_by_message_id(&mid)?;
            if found.is_empty() {
                return Err(EngineError::Invalid(format!(
                    "message {mid} is not in the mail trace; run `clawback trace sync` or `trace ingest` first"
                )));
            }
            seeds.extend(found);
        }
        if let Some(q) = &request.query {
            let query = crate::trace::query::parse(q)
                .map_err(|e| EngineError::Invalid(format!("query {q:?}: {}", e)))?;
            seeds.extend(store.search(&query, QUERY_SEED_LIMIT, 0)?);
        }
        for t in &request.tenants {
            self.client(t)?;
        }
        let in_scope =
            |r: &TraceRecord| request.tenants.is_empty() || request.tenants.contains(&r.tenant);
        seeds.retain(in_scope);
        let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
        let mut out = Vec::new();
        let mut frontier: Vec<String> = Vec::new();
        for r in seeds {
            if seen.insert((r.tenant.clone(), r.message_id.clone())) {
                frontier.push(r.message_id.clone());
                out.push(PlannedMessage {
                    record: r,
                    depth: 0,
                });
            }
        }
        for depth in 1..=request.depth {
            if frontier.is_empty() {
                break;
            }
            let mut next = Vec::new();
            let level: BTreeSet<&String> = frontier.iter().collect();
            for r in store.replies_to(&frontier)? {
                // One hop: the message's parent (In-Reply-To, else the last of References) is
                // in the previous level. References alone name every ancestor, which would
                // put a whole thread at depth 1. A parent unknown to the trace falls back to
                // any reference.
                let parent = r.in_reply_to.first().or(r.references.last());
                let hop = match parent {
                    Some(p) if level.contains(p) => true,
                    Some(p) if store.trace_by_message_id(p)?.is_empty() => true,
                    _ => false,
                };
                if hop && in_scope(&r) && seen.insert((r.tenant.clone(), r.message_id.clone())) {
                    next.push(r.message_id.clone());
                    out.push(PlannedMessage { record: r, depth });
                }
            }
            frontier = next;
        }
        Ok(out)
    }

    /// Builds and seals a plan. Only reads from the providers.
    pub async fn build_plan(&self, request: RetractRequest) -> Result<Plan, EngineError> {
        self.authorize(Capability::Plan)?;
        let Resolution { items, skipped, .. } = self.resolve(&request, None).await?;
        let mut plan = Plan::new(self.operator.name.clone(), request, items, skipped);
        self.seal_plan(&mut plan)?;
        Ok(plan)
    }

    /// Who and what a request reaches: the one recipient resolution behind both the plan and
    /// the console's checklist. Every copy located is an item; every recipient or copy that
    /// cannot be acted on is a skipped line with its reason; a copy planning could not reach
    /// (throttled, provider error) is an unresolved item. No role check (the caller checks
    /// what it needs), no seal; only reads from the providers. `progress` hears of every
    /// locate (done / total mailboxes).
    pub async fn resolve(
        &self,
        request: &RetractRequest,
        progress: Option<&LocateProgress>,
    ) -> Result<Resolution, EngineError> {
        self.resolve_streaming(request, progress, None).await
    }

    /// [`Engine::resolve`] for a plan made while its job runs: located copies go to `stream`
    /// as they are found.
    pub(crate) async fn resolve_streaming(
        &self,
        request: &RetractRequest,
        progress: Option<&LocateProgress>,
        stream: Option<PlanStream>,
    ) -> Result<Resolution, EngineError> {
        let own_job = stream.as_ref().map(|s| s.job);
        let sink = stream.map(|s| s.located);
        if request.message_ids.is_empty() && request.query.is_none() {
            return Err(EngineError::Invalid(
                "nothing to retract: give a Message-ID or a query".into(),
            ));
        }
        let messages = self.expand_conversation(request)?;
        let only = lower(&request.only);
        let exclude = lower(&request.exclude);

        // (tenant, address, message, depth) candidates.
        let mut skipped: Vec<SkippedItem> = Vec::new();
        let mut candidates: Vec<(String, String, String, u8, Option<i64>)> = Vec::new();
        for m in &messages {
            let r = &m.record;
            if r.tenant.is_empty() || self.client(&r.tenant).is_err() {
                for addr in r.delivered_to() {
                    skipped.push(SkippedItem {
                        tenant: None,
                        address: addr.to_string(),
                        internet_message_id: r.message_id.clone(),
                        reason: FailureReason::External,
                        detail: "the message's recipients are in no configured tenant".into(),
                    });
                }
                continue;
            }
            // The sender's own copy (Sent Items) only when the operator names the sender: a
            // provider-synced trace lists the sender's mailbox among those holding a copy.
            let mut addrs: Vec<String> = r
                .delivered_to()
                .into_iter()
                .filter(|a| *a != r.sender)
                .map(String::from)
                .collect();
            // Every recipient the headers name is accounted for too, also when the envelope is
            // known: a list (not a mailbox; its members are expanded), a mailbox the app may
            // not read (not authorized: its copy never reached a per-mailbox sync), an outside
            // address. An address of another configured tenant is that tenant's record's.
            for a in r.named_recipients() {
                if a != r.sender
                    && !addrs.iter().any(|x| x == a)
                    && !self.belongs_to_other_tenant(a, &r.tenant)
                {
                    addrs.push(a.to_string());
                }
            }
            if only.contains(&r.sender) {
                addrs.push(r.sender.clone());
            }
            for a in addrs {
                if exclude.contains(&a) || (m.depth == 0 && !only.is_empty() && !only.contains(&a))
                {
                    continue;
                }
                candidates.push((
                    r.tenant.clone(),
                    a,
                    r.message_id.clone(),
                    m.depth,
                    Some(r.received),
                ));
            }
        }

        // Graph offers permanentDelete in the global cloud only: a Hard Delete that reaches a
        // national-cloud tenant is refused before anything is located.
        if request.action == RetractAction::HardDelete {
            let blocked: BTreeSet<String> = candidates
                .iter()
                .filter_map(|c| {
                    self.config
                        .tenants
                        .iter()
                        .find(|t| t.name == c.0 && !t.cloud.offers_permanent_delete())
                        .map(|t| format!("{} (cloud {})", t.name, t.cloud.as_str()))
                })
                .collect();
            if !blocked.is_empty() {
                return Err(EngineError::Invalid(format!(
                    "Hard Delete is not offered in {}: Microsoft Graph has permanentDelete in the global service only; use Soft Delete (Recoverable Items) there, or leave that tenant out",
                    blocked.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
        }

        // Locate first: almost every recipient is a mailbox, and a located copy proves it, so
        // the directory is asked only about addresses whose locate failed (a list, a contact,
        // an outside address, a user without a mailbox).
        let mut first: BTreeMap<(String, String, String), u8> = BTreeMap::new();
        for (tenant, addr, mid, depth, _) in &candidates {
            let d = first
                .entry((tenant.clone(), addr.clone(), mid.clone()))
                .or_insert(*depth);
            *d = (*d).min(*depth);
        }
        let mut located: Vec<Located> = Vec::new();
        let mut unresolved: BTreeMap<(String, String), Vec<Located>> = BTreeMap::new();
        for entry in self.locate_all(first, progress, sink.as_ref()).await {
            match &entry.2 {
                // Google refuses a token for an address that is no user ("invalid_grant:
                // Invalid email or User ID"): a group or a contact, for the directory to say.
                Err(f)
                    if !matches!(
                        f.reason,
                        FailureReason::NotAuthorized | FailureReason::Throttled
                    ) || f.code == "invalid_grant" =>
                {
                    let key = (entry.0.0.clone(), entry.0.1.clone());
                    unresolved.entry(key).or_default().push(entry);
                }
                _ => located.push(entry),
            }
        }
        let resolved: BTreeMap<(String, String), Result<Resolved, Failure>> =
            stream::iter(unresolved.keys().cloned().filter_map(|(t, a)| {
                let client = self.client(&t).ok()?.clone();
                Some(async move {
                    let r = client.resolve(&a).await;
                    ((t, a), r)
                })
            }))
            .buffer_unordered(PLAN_CONCURRENCY)
            .collect()
            .await;

        // Lists expand to their member mailboxes, located in a second round.
        let mut second: BTreeMap<(String, String, String), u8> = BTreeMap::new();
        let done: BTreeSet<(String, String, String)> =
            located.iter().map(|l| l.0.clone()).collect();
        for ((tenant, addr), entries) in unresolved {
            let resolution = resolved.get(&(tenant.clone(), addr.clone()));
            for ((_, _, mid), depth, locate_result) in entries {
                let skip = |reason, detail: String| SkippedItem {
                    tenant: Some(tenant.clone()),
                    address: addr.clone(),
                    internet_message_id: mid.clone(),
                    reason,
                    detail,
                };
                match resolution {
                    // An alias, or a mail address that is not the sign-in name: the mailbox is
                    // located under the name its mail is addressed by.
                    Some(Ok(Resolved::Mailbox { mailbox, .. })) if *mailbox != addr => {
                        let key = (tenant.clone(), mailbox.clone(), mid.clone());
                        // Shown under the address the message names, like a list's row.
                        skipped.push(skip(
                            FailureReason::NotAMailbox,
                            format!("an address of {mailbox}: its copy is retracted there"),
                        ));
                        // Excluded under its own name: the request says so.
                        if !exclude.contains(mailbox) && !done.contains(&key) {
                            let d = second.entry(key).or_insert(depth);
                            *d = (*d).min(depth);
                        }
                    }
                    Some(Ok(Resolved::Mailbox { .. })) | None => {
                        // A mailbox after all: the locate's own failure stands.
                        located.push(((tenant.clone(), addr.clone(), mid), depth, locate_result));
                    }
                    Some(Ok(Resolved::Group {
                        member_mailboxes,
                        external_members,
                        ..
                    })) => {
                        skipped.push(skip(
                            FailureReason::NotAMailbox,
                            format!(
                                "distribution list: its {} member mailboxes are retracted separately",
                                member_mailboxes.len()
                            ),
                        ));
                        for member in member_mailboxes {
                            let member = member.to_ascii_lowercase();
                            let key = (tenant.clone(), member.clone(), mid.clone());
                            if exclude.contains(&member) || done.contains(&key) {
                                continue;
                            }
                            let d = second.entry(key).or_insert(depth);
                            *d = (*d).min(depth);
                        }
                        for ext in external_members {
                            skipped.push(SkippedItem {
                                tenant: Some(tenant.clone()),
                                address: ext.clone(),
                                internet_message_id: mid.clone(),
                                reason: FailureReason::External,
                                detail: format!("external member of {addr}"),
                            });
                        }
                    }
                    Some(Ok(other)) => {
                        let reason = other
                            .failure_reason()
                            .unwrap_or(FailureReason::ProviderError);
                        let microsoft = self
                            .client(&tenant)
                            .is_ok_and(|c| c.kind() == TenantKind::Microsoft365);
                        let detail = match other {
                            Resolved::Contact { .. } => "a mail contact, outside the tenant",
                            Resolved::External { .. } => "outside the tenant's domains",
                            // Graph cannot see Exchange dynamic distribution groups at all.
                            _ if microsoft => {
                                "unknown to the directory: an Exchange dynamic distribution group (Graph cannot expand one: its members' copies are planned only where the trace or the message names them) or an address that no longer exists"
                            }
                            _ => "not a mailbox in the directory",
                        };
                        skipped.push(skip(reason, detail.to_string()));
                    }
                    // The directory could not be asked now either: the address stays in the
                    // plan as unresolved (the job locates it) instead of being dropped.
                    Some(Err(f))
                        if matches!(
                            f.reason,
                            FailureReason::Throttled | FailureReason::ProviderError
                        ) =>
                    {
                        let kept = match locate_result {
                            Err(mine) if mine.reason == FailureReason::Throttled => Err(mine),
                            _ => Err(f.clone()),
                        };
                        located.push(((tenant.clone(), addr.clone(), mid), depth, kept));
                    }
                    Some(Err(f)) => skipped.push(skip(f.reason, failure_detail(f))),
                }
            }
        }
        located.extend(self.locate_all(second, progress, sink.as_ref()).await);
        drop(sink);
        // One entry per (tenant, mailbox, message): an address can be reached twice — its
        // own locate failed (kept, e.g. as unresolved) and a list it is in located it again.
        // A located answer wins over a failure; two items for one copy would act twice.
        let mut best: BTreeMap<(String, String, String), (u8, LocateResult)> = BTreeMap::new();
        for (key, depth, result) in located {
            match best.get_mut(&key) {
                Some(slot) => {
                    slot.0 = slot.0.min(depth);
                    if slot.1.is_err() && result.is_ok() {
                        slot.1 = result;
                    }
                }
                None => {
                    best.insert(key, (depth, result));
                }
            }
        }
        let located: Vec<Located> = best
            .into_iter()
            .map(|(key, (depth, result))| (key, depth, result))
            .collect();

        let mut items = Vec::new();
        let mut streamed = Vec::new();
        let note_for = |tenant: &str, mailbox: &str, effective: RetractAction| {
            self.plan_note(request.action, tenant, mailbox, effective)
        };
        for ((tenant, mailbox, mid), depth, result) in located {
            let kind = self
                .client(&tenant)
                .map(|c| c.kind())
                .unwrap_or(TenantKind::Microsoft365);
            let effective = request.action.effective_for(kind);
            let skip = |reason, detail: String| SkippedItem {
                tenant: Some(tenant.clone()),
                address: mailbox.clone(),
                internet_message_id: mid.clone(),
                reason,
                detail,
            };
            match result {
                // Not reached now, maybe reachable later: kept as an item the job locates.
                Err(f)
                    if matches!(
                        f.reason,
                        FailureReason::Throttled | FailureReason::ProviderError
                    ) =>
                {
                    items.push(PlanItem {
                        tenant: tenant.clone(),
                        kind,
                        mailbox: mailbox.clone(),
                        internet_message_id: mid.clone(),
                        copy_id: String::new(),
                        folder: Folder::Inbox,
                        read: false,
                        depth,
                        action: request.action,
                        effective_action: effective,
                        note: note_for(&tenant, &mailbox, effective),
                        unresolved: Some(format!("{}: {}", f.reason, failure_detail(&f))),
                    });
                }
                Err(f) => skipped.push(skip(f.reason, failure_detail(&f))),
                Ok(copies) => {
                    match self.located_items(
                        request,
                        &messages,
                        (&tenant, &mailbox, &mid),
                        depth,
                        copies,
                    ) {
                        // Streamed to its job, which checks the claim as it records the copy
                        // (in the same transaction): asking here too would cost a store
                        // query per copy on the task that also drives the job's batches.
                        Ok(found) if own_job.is_some() => streamed.extend(found),
                        Ok(found) => items.extend(found),
                        Err(s) => skipped.push(s),
                    }
                }
            }
        }
        // A copy another job holds is not planned again: shown with that job.
        {
            let store = self.store();
            let mut kept = Vec::with_capacity(items.len());
            for item in items {
                let copy = (item.tenant.as_str(), item.mailbox.as_str());
                match store.copy_claim(&item.internet_message_id, copy, own_job)? {
                    Some(claim) => skipped.push(SkippedItem {
                        tenant: Some(item.tenant.clone()),
                        address: item.mailbox.clone(),
                        internet_message_id: item.internet_message_id.clone(),
                        reason: FailureReason::InAnotherJob,
                        detail: claim.detail(),
                    }),
                    None => kept.push(item),
                }
            }
            items = kept;
        }
        items.append(&mut streamed);
        sort_items(&mut items);
        skipped.sort_by(|a, b| {
            (&a.tenant, &a.address, &a.internet_message_id).cmp(&(
                &b.tenant,
                &b.address,
                &b.internet_message_id,
            ))
        });
        skipped.dedup();
        Ok(Resolution {
            messages,
            items,
            skipped,
        })
    }

    /// Locates messages in many mailboxes: each tenant in a task of its own (tenants have
    /// their own limits, and one tenant's queue must not wait behind another's), up to
    /// [`PLAN_CONCURRENCY`] locates at a time per tenant.
    async fn locate_all(
        &self,
        targets: BTreeMap<(String, String, String), u8>,
        progress: Option<&LocateProgress>,
        stream: Option<&tokio::sync::mpsc::UnboundedSender<Located>>,
    ) -> Vec<Located> {
        if let Some(p) = progress {
            p.add_total(targets.len() as u64);
        }
        let mut by_tenant: BTreeMap<String, Vec<Target>> = BTreeMap::new();
        for (key, depth) in targets {
            by_tenant
                .entry(key.0.clone())
                .or_default()
                .push((key, depth));
        }
        let mut tasks = Vec::new();
        // Dropping this future (a cancelled recipient load) stops the tenants' tasks too.
        let mut guard = AbortOnDrop(Vec::new());
        for (tenant, targets) in by_tenant {
            let Ok(client) = self.client(&tenant).cloned() else {
                // No client: `build_plan` made these external already; count them done.
                if let Some(p) = progress {
                    p.done(targets.len() as u64);
                }
                continue;
            };
            let keys: Vec<Target> = targets.clone();
            let progress = progress.cloned();
            let stream = stream.cloned();
            // Several mailboxes' locates in one request where the provider batches them
            // (Graph: ten locates in a `$batch` of 20 steps). As many groups in flight as there
            // were locates: Graph serves a batch's steps four at a time, so fewer batches in
            // flight would leave the tenant's slots idle; the pacer still sends only what the
            // tenant allows.
            let group = client.locate_group().max(1);
            let task = tokio::spawn(async move {
                let groups: Vec<Vec<Target>> =
                    targets.chunks(group).map(<[Target]>::to_vec).collect();
                stream::iter(groups.into_iter().map(|group| {
                    let client = client.clone();
                    let progress = progress.clone();
                    let stream = stream.clone();
                    async move {
                        let wanted: Vec<(String, String)> = group
                            .iter()
                            .map(|(key, _)| (key.1.clone(), key.2.clone()))
                            .collect();
                        let found = client.locate_many(&wanted).await;
                        if let Some(p) = &progress {
                            p.done(group.len() as u64);
                        }
                        let mut found = found.into_iter();
                        let located = group
                            .into_iter()
                            .map(|(key, depth)| {
                                let r = found.next().unwrap_or_else(|| {
                                    Err(crate::provider::errors::internal("locate: no answer"))
                                });
                                (key, depth, r)
                            })
                            .collect::<Vec<Located>>();
                        // A located copy is final (see `PlanStream`): handed over now. A
                        // closed receiver (its job stopped) is the job's to account for.
                        if let Some(stream) = &stream {
                            for entry in located.iter().filter(|l| l.2.is_ok()) {
                                let _ = stream.send(entry.clone());
                            }
                        }
                        located
                    }
                }))
                .buffer_unordered(PLAN_CONCURRENCY)
                .flat_map(stream::iter)
                .collect::<Vec<Located>>()
                .await
            });
            guard.0.push(task.abort_handle());
            tasks.push((keys, task));
        }
        let mut out = Vec::new();
        for (keys, task) in tasks {
            match task.await {
                Ok(located) => out.extend(located),
                Err(e) => out.extend(keys.into_iter().map(|(key, depth)| {
                    let f = crate::provider::errors::internal(&format!("locate task: {e}"));
                    (key, depth, Err(f))
                })),
            }
        }
        out
    }

    /// What each depth `0..=depth` adds, from the trace alone (no provider calls): messages,
    /// delivered copies and new mailboxes. Cheap enough to run on every keypress.
    pub fn preview_depth(&self, request: &RetractRequest) -> Result<Vec<DepthAdds>, EngineError> {
        let messages = self.expand_conversation(request)?;
        let only = lower(&request.only);
        let exclude = lower(&request.exclude);
        let mut out: Vec<DepthAdds> = (0..=request.depth)
            .map(|d| DepthAdds {
                depth: d,
                ..Default::default()
            })
            .collect();
        let mut mailboxes: BTreeSet<String> = BTreeSet::new();
        for m in &messages {
            let Some(slot) = out.get_mut(usize::from(m.depth)) else {
                continue;
            };
            slot.messages += 1;
            for a in m.record.delivered_to() {
                if (a == m.record.sender && !only.contains(a))
                    || exclude.contains(a)
                    || (m.depth == 0 && !only.is_empty() && !only.contains(a))
                {
                    continue;
                }
                slot.copies += 1;
                if mailboxes.insert(a.to_string()) {
                    slot.mailboxes += 1;
                }
            }
        }
        Ok(out)
    }
}

/// What [`Engine::resolve`] found for a request.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The messages the request covers, with the depth each was reached at.
    pub messages: Vec<PlannedMessage>,
    /// Copies to act on (located, or unresolved and located again when the job runs).
    pub items: Vec<PlanItem>,
    /// Recipients and copies that cannot be acted on, with their reasons.
    pub skipped: Vec<SkippedItem>,
}

/// Mailboxes located so far out of those to locate, as [`Engine::resolve`] goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LocateCount {
    pub done: u64,
    pub total: u64,
}

/// A progress sink for [`Engine::resolve`]: every locate sends the running count. Cheap to
/// clone (one counter shared by the tenants' tasks); a closed receiver is ignored.
#[derive(Debug, Clone)]
pub struct LocateProgress {
    counts: std::sync::Arc<(AtomicU64, AtomicU64)>,
    sink: tokio::sync::mpsc::UnboundedSender<LocateCount>,
}

impl LocateProgress {
    pub fn new(sink: tokio::sync::mpsc::UnboundedSender<LocateCount>) -> LocateProgress {
        LocateProgress {
            counts: Default::default(),
            sink,
        }
    }

    fn add_total(&self, n: u64) {
        self.counts.1.fetch_add(n, Ordering::SeqCst);
        self.send();
    }

    fn done(&self, n: u64) {
        self.counts.0.fetch_add(n, Ordering::SeqCst);
        self.send();
    }

    fn send(&self) {
        let _ = self.sink.send(LocateCount {
            done: self.counts.0.load(Ordering::SeqCst),
            total: self.counts.1.load(Ordering::SeqCst),
        });
    }
}

/// Aborts the spawned tasks when dropped (the future that awaits them was dropped).
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The note on a Hard Delete item in a mailbox on hold (plan, outcome, metrics).
pub const RETAINED_BY_HOLD: &str = "retained_by_hold";

impl Engine {
    /// The items of the copies located in one mailbox, or why none is acted on: a copy in
    /// Sent Items or Drafts only when the mailbox is the sender's, none at all or none
    /// outside Junk/Trash/recoverable = already gone.
    pub(crate) fn located_items(
        &self,
        request: &RetractRequest,
        messages: &[PlannedMessage],
        (tenant, mailbox, mid): (&str, &str, &str),
        depth: u8,
        copies: Vec<LocatedCopy>,
    ) -> Result<Vec<PlanItem>, SkippedItem> {
        let kind = self
            .client(tenant)
            .map(|c| c.kind())
            .unwrap_or(TenantKind::Microsoft365);
        let effective = request.action.effective_for(kind);
        let skip = |reason, detail: String| SkippedItem {
            tenant: Some(tenant.to_string()),
            address: mailbox.to_string(),
            internet_message_id: mid.to_string(),
            reason,
            detail,
        };
        let sender = messages
            .iter()
            .find(|m| m.record.message_id == mid)
            .map(|m| m.record.sender.as_str())
            .unwrap_or_default();
        let copies: Vec<LocatedCopy> = copies
            .into_iter()
            .filter(|c| {
                !matches!(c.folder, Folder::SentItems | Folder::Drafts) || mailbox == sender
            })
            .collect();
        if copies.is_empty() {
            return Err(skip(
                FailureReason::AlreadyGone,
                format!("no copy in {mailbox} (deleted by the user)"),
            ));
        }
        let live: Vec<&LocatedCopy> = copies.iter().filter(|c| !c.folder.is_gone()).collect();
        if live.is_empty() {
            return Err(skip(
                FailureReason::AlreadyGone,
                format!("already in {}", copies[0].folder),
            ));
        }
        Ok(live
            .into_iter()
            .map(|c| PlanItem {
                tenant: tenant.to_string(),
                kind,
                mailbox: mailbox.to_string(),
                internet_message_id: mid.to_string(),
                copy_id: c.id.clone(),
                folder: c.folder.clone(),
                read: c.read,
                depth,
                action: request.action,
                effective_action: effective,
                note: self.plan_note(request.action, tenant, mailbox, effective),
                unresolved: None,
            })
            .collect())
    }

    /// The note on an item: a Hard Delete in a mailbox on hold, or an action Gmail performs
    /// as another.
    fn plan_note(
        &self,
        asked: RetractAction,
        tenant: &str,
        mailbox: &str,
        effective: RetractAction,
    ) -> Option<String> {
        if effective == RetractAction::HardDelete && self.is_held(tenant, mailbox) {
            return Some(format!(
                "{RETAINED_BY_HOLD}: the mailbox is on hold; Hard Delete purges it for the user and the hold keeps it for admins (eDiscovery)"
            ));
        }
        (effective != asked).then(|| {
            format!(
                "{} is not offered by Gmail: performed as {}",
                asked.label(),
                effective.label()
            )
        })
    }

    /// Whether the tenant's config lists `mailbox` as on hold.
    fn is_held(&self, tenant: &str, mailbox: &str) -> bool {
        self.config.tenants.iter().any(|t| {
            t.name == tenant
                && t.held_mailboxes
                    .iter()
                    .any(|m| m.trim().eq_ignore_ascii_case(mailbox))
        })
    }

    /// Whether `address` is in the managed domains of a configured tenant other than `tenant`.
    fn belongs_to_other_tenant(&self, address: &str, tenant: &str) -> bool {
        let Some(domain) = crate::model::address_domain(address) else {
            return false;
        };
        self.config
            .tenants
            .iter()
            .any(|t| t.name != tenant && t.domains.iter().any(|d| d.eq_ignore_ascii_case(&domain)))
    }
}

/// A plan's items in plan order: by depth, tenant, mailbox, message.
pub(crate) fn sort_items(items: &mut [PlanItem]) {
    items.sort_by(|a, b| {
        (a.depth, &a.tenant, &a.mailbox, &a.internet_message_id).cmp(&(
            b.depth,
            &b.tenant,
            &b.mailbox,
            &b.internet_message_id,
        ))
    });
}

/// The provider's code beside its message, for plan and job detail columns.
pub fn failure_detail(f: &Failure) -> String {
    match f.status {
        Some(s) => format!("{} {}: {}", s, f.code, f.message),
        None => format!("{}: {}", f.code, f.message),
    }
}
