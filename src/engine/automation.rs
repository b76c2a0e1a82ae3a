//! Automation (DESIGN §6): the `clawback watch` cycle.
//!
//! Each cycle: (1) follow new mail — provider sync (cursor based) and a watched journal
//! directory; (2) Phish Submission Response — read the report mailboxes, decide each reported
//! original, retract the malicious ones (`phish_submission`); (3) Post Delivery Response —
//! re-evaluate delivered, not-yet-retracted mail within the look-back against the intel
//! directory, upgrade dispositions and retract (`post_delivery`); (4) the auto-retract matrix on
//! every record with a disposition (`auto`).
//!
//! The automation guard ([`super::guard`]) bounds what one intel indicator may do in a cycle:
//! over its limits the match is held as `needs_confirmation` instead of retracted, and
//! `clawback policy confirm ID` releases it to the next cycle. Verdicts an indicator wrote
//! expire when it leaves the intel directory.
//!
//! Nothing is retracted twice: each plan leaves out the mailboxes where the message was already
//! retracted by any job (`Store::retracted_mailboxes`), the planner skips copies already in
//! Junk/Trash, and the store remembers at which disposition and over how many copies the policy
//! last acted on a message (`auto_handled`). Jobs are created before they run, so a restart
//! resumes them ([`Watcher::resume`]) instead of planning again; phish reports are recorded once
//! decided.

use super::core::{Engine, EngineError};
use super::execute::RunOptions;
use super::guard::over_limits;
use super::plan::RetractRequest;
use super::view::PolicyMatrix;
use crate::intel::{Indicator, IndicatorKey, IntelDir, IntelSet};
use crate::model::{Disposition, RetractAction, Trigger};
use crate::provider::ProviderClient;
use crate::store::Store;
use crate::store::automation::{
    HeldMatch, HeldMessage, HoldChange, HoldState, IntelVerdict, ReportDecision,
};
use crate::store::jobs::{JobState, LeaseHolder};
use crate::store::leader::{WatchLead, WatchLeader};
use crate::trace::TraceRecord;
use crate::trace::ingest::{IngestOptions, ingest_paths, parse_message};
use crate::trace::sync::{SyncOptions, sync};
use chrono::Utc;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

/// Where a watch looks and how it decides.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Sync the trace from the providers every cycle.
    pub sync: bool,
    /// Indicator files and STIX bundles.
    pub intel_dir: Option<PathBuf>,
    /// Journal reports / EML / verdict feeds dropped here are ingested.
    pub journal_dir: Option<PathBuf>,
    /// Distinct reporters that make a reported message malicious.
    pub reporters_threshold: usize,
    /// Run Post Delivery and Phish Submission every cycle, ignoring their interval (`--once`).
    pub force_responses: bool,
}

impl WatchOptions {
    /// From the `[automation]` config table.
    pub fn from_config(engine: &Engine) -> WatchOptions {
        let a = &engine.config.automation;
        WatchOptions {
            sync: true,
            intel_dir: a.intel_dir.clone(),
            journal_dir: a.journal_dir.clone(),
            reporters_threshold: a.reporters_threshold.max(1),
            force_responses: false,
        }
    }
}

/// One job an automation cycle started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoJob {
    pub job: i64,
    pub trigger: Trigger,
    pub tenant: String,
    pub message_id: String,
    pub action: RetractAction,
    pub copies: usize,
    pub succeeded: u64,
    pub failed: u64,
}

/// An indicator the guard held this cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldNotice {
    /// The hold's id (`clawback policy confirm ID`).
    pub id: i64,
    pub indicator: IndicatorKey,
    /// The whole hold, after this cycle.
    pub messages: u64,
    pub copies: u64,
    /// New, grown, or already held with these messages.
    pub change: HoldChange,
    pub reason: String,
}

/// What one cycle did.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    /// Unfinished automation jobs resumed first.
    pub resumed: Vec<i64>,
    pub sync: Option<String>,
    pub journal_files: usize,
    pub jobs: Vec<AutoJob>,
    pub decisions: Vec<ReportDecision>,
    /// Indicators in force after a reload (and the problems skipped), when reloaded.
    pub intel_reloaded: Option<(usize, Vec<String>)>,
    pub post_delivery_ran: bool,
    pub phish_ran: bool,
    /// Records whose disposition intel upgraded.
    pub intel_upgraded: usize,
    /// Problems that did not stop the cycle.
    pub errors: Vec<String>,
    /// Mailboxes (or tenants) the sync could not read, apart from those in domains known to be
    /// ungranted (the sync summary reports those): `watch --once` exits 3 for them.
    pub sync_failures: Vec<String>,
    /// Indicators the guard held this cycle instead of retracting (Post Delivery).
    pub held: Vec<HoldNotice>,
    /// Holds waiting for `clawback policy confirm` after this cycle.
    pub holds_waiting: usize,
    /// Confirmed holds this cycle released (verdicts written, retracted per the policy).
    pub released: Vec<i64>,
    /// Intel verdicts expired: their indicator left the intel directory.
    pub verdicts_expired: usize,
    /// Open holds expired for the same reason.
    pub holds_expired: Vec<i64>,
    /// Another watcher leads: this cycle acted on nothing (see [`WatchLease`]).
    pub following: Option<WatchLeader>,
}

impl CycleReport {
    /// One line for the log.
    pub fn summary(&self) -> String {
        if let Some(leader) = &self.following {
            return format!("cycle: following the leading {leader}; nothing acted on");
        }
        let copies: u64 = self.jobs.iter().map(|j| j.succeeded).sum();
        let failed: u64 = self.jobs.iter().map(|j| j.failed).sum();
        let malicious = self
            .decisions
            .iter()
            .filter(|d| d.verdict == "malicious")
            .count();
        let mut guard = String::new();
        if self.holds_waiting > 0 {
            guard.push_str(&format!(
                ", {} held for confirmation (`clawback policy holds`)",
                self.holds_waiting
            ));
        }
        if !self.released.is_empty() {
            guard.push_str(&format!(", {} holds released", self.released.len()));
        }
        if self.verdicts_expired > 0 || !self.holds_expired.is_empty() {
            guard.push_str(&format!(
                ", {} intel verdicts and {} holds expired",
                self.verdicts_expired,
                self.holds_expired.len()
            ));
        }
        format!(
            "cycle: {} jobs ({copies} copies retracted, {failed} failed), {} reports decided ({malicious} malicious), {} upgraded by intel, {} errors, {} mailboxes not synced{guard}{}",
            self.jobs.len(),
            self.decisions.len(),
            self.intel_upgraded,
            self.errors.len(),
            self.sync_failures.len(),
            self.sync
                .as_deref()
                .map(|s| format!("; {s}"))
                .unwrap_or_default()
        )
    }
}

/// One watcher at a time (issue 17): several `clawback watch` processes may share a store for
/// availability; each cycle starts by taking or renewing the store's leader lease, and only
/// the holder acts. A follower's cycle does nothing and says whom it follows. The lease is
/// shorter than the interval (two thirds of it, from [`WatchLease::SHORTEST`] to
/// [`WatchLease::LONGEST`]) and renewed every third of its length — during a cycle and
/// between cycles alike (see [`WatchLease::renew_every`]): a leader that dies is replaced as
/// soon as its lease lapses, within one interval (for intervals from 0.9 s up).
#[derive(Debug, Clone)]
pub struct WatchLease {
    holder: LeaseHolder,
    length: std::time::Duration,
}

impl WatchLease {
    /// The shortest lease: renewals (every third of it) stay a few a second.
    pub const SHORTEST: std::time::Duration = std::time::Duration::from_millis(600);
    /// The longest lease: a dead leader of a slow watch is still replaced within 30 s.
    pub const LONGEST: std::time::Duration = std::time::Duration::from_secs(30);

    /// A lease for this process, for watch cycles every `interval`: two thirds of it, so that
    /// a dead leader's lease lapses, and a follower leads, within one interval.
    pub fn for_interval(interval: std::time::Duration) -> WatchLease {
        WatchLease {
            holder: LeaseHolder::this_process(),
            length: (interval * 2 / 3).clamp(Self::SHORTEST, Self::LONGEST),
        }
    }

    /// How long the lease lasts unless renewed.
    pub fn length(&self) -> std::time::Duration {
        self.length
    }

    /// How often a watcher renews (a leader) or tries for (a follower) the lead, in a cycle
    /// and between cycles.
    pub fn renew_every(&self) -> std::time::Duration {
        (self.length / 3).max(std::time::Duration::from_millis(100))
    }

    /// Takes or renews the lead.
    pub fn try_lead(&self, store: &mut Store) -> Result<WatchLead, crate::store::StoreError> {
        store.watch_lead(&self.holder, self.length)
    }

    /// Gives the lead up (a clean stop), so that a follower leads at its next cycle.
    pub fn resign(&self, store: &mut Store) -> Result<bool, crate::store::StoreError> {
        store.watch_resign(&self.holder)
    }
}

/// Runs automation cycles over one engine. Keeps what it must remember between cycles (intel
/// files' stamps, journal files seen, when each response last ran) in memory; everything that
/// must survive a restart is in the store.
pub struct Watcher<'e> {
    engine: &'e Engine,
    pub options: WatchOptions,
    intel: Option<IntelDir>,
    journal_seen: BTreeMap<PathBuf, (Option<SystemTime>, u64)>,
    last_post_delivery: Option<Instant>,
    last_phish: Option<Instant>,
    /// Verdicts were checked against the intel directory once (then again on each reload).
    intel_checked: bool,
    /// A second connection for the sync (the engine's store is behind a lock that must not be
    /// held across `.await`); in a Mutex only so the watcher is `Sync`.
    sync_store: std::sync::Mutex<Option<Store>>,
    /// Leads only while it holds this lease (none: always leads).
    lease: Option<WatchLease>,
}

/// The reason an automation's request gives: `{trigger}: {disposition} ({source})`.
fn auto_reason(trigger: Trigger, disposition: Disposition, source: &str) -> String {
    format!("{trigger}: {disposition} ({source})")
}

/// The disposition and source an automation's reason names ([`auto_reason`]).
fn parse_auto_reason(reason: &str, trigger: Trigger) -> Option<(&str, &str)> {
    let rest = reason.strip_prefix(&format!("{trigger}: "))?;
    let (disposition, source) = rest.split_once(" (")?;
    Some((disposition, source.strip_suffix(')')?))
}

/// Logs an automation decision whose plan is complete.
fn log_decision(plan: &super::plan::Plan, job: Option<i64>) {
    tracing::info!(
        tenant = %plan.request.tenants.join(","),
        message_id = %plan.request.message_ids.join(","),
        action = %plan.request.action,
        copies = plan.items.len(),
        job = ?job,
        "automation: {}",
        plan.request.reason
    );
}

impl Engine {
    /// The `auto_retract` entry of an automation's decision whose plan is complete: the
    /// plan's digest and counts, and the decision (tenant, message, disposition and its
    /// source, action, trigger) as its request records it — so a decision reads the same
    /// whether its plan was made first or while its job acted, and after a resume.
    pub(super) fn auto_retract_record(
        &self,
        plan: &super::plan::Plan,
        job: Option<i64>,
    ) -> crate::store::chain::AuditRecord {
        let request = &plan.request;
        let (disposition, source) = parse_auto_reason(&request.reason, request.trigger)
            .map_or((None, None), |(d, s)| (Some(d), Some(s)));
        self.new_record(
            "automation",
            "auto_retract",
            Some(&plan.digest),
            job,
            BTreeMap::from([
                ("copies".to_string(), plan.items.len() as u64),
                ("skipped".to_string(), plan.skipped.len() as u64),
                // Recipients already retracted are left out of the request.
                (
                    "already_retracted".to_string(),
                    request.exclude.len() as u64,
                ),
            ]),
            serde_json::json!({
                "tenant": request.tenants.first(),
                "message_id": request.message_ids.first(),
                "disposition": disposition,
                "source": source,
                "action": request.action.as_str(),
                "trigger": request.trigger.as_str(),
            }),
        )
    }
}

fn severity_min(a: Option<Disposition>, b: Option<Disposition>) -> Option<Disposition> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if x.severity() <= y.severity() { x } else { y }),
        (x, None) => x,
        (None, y) => y,
    }
}

impl<'e> Watcher<'e> {
    pub fn new(engine: &'e Engine, options: WatchOptions) -> Watcher<'e> {
        let intel = options.intel_dir.clone().map(IntelDir::new);
        Watcher {
            engine,
            options,
            intel,
            journal_seen: BTreeMap::new(),
            last_post_delivery: None,
            last_phish: None,
            intel_checked: false,
            sync_store: std::sync::Mutex::new(None),
            lease: None,
        }
    }

    /// Leads only while holding `lease` against the other watchers of the store.
    pub fn lead_with(&mut self, lease: WatchLease) {
        self.lease = Some(lease);
    }

    /// Finishes automation jobs a previous run left unfinished (crash, kill); `run_job`
    /// reconciles the items that were in flight, so nothing is lost or done twice.
    pub async fn resume(&self) -> Result<Vec<i64>, EngineError> {
        let mut out = Vec::new();
        for row in self.engine.unfinished_jobs()? {
            if !row.trigger.is_auto() || row.dry_run || row.state == JobState::Cancelled {
                continue;
            }
            tracing::info!(job = row.id, trigger = %row.trigger, "resuming unfinished automation job");
            match self
                .engine
                .run_job(row.id, &RunOptions::default(), &|_| {})
                .await
            {
                Ok(_) => out.push(row.id),
                // Another live process runs it (a second watcher, a console): its job.
                Err(e @ EngineError::JobLeased { .. }) => tracing::info!("{e}"),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// One full cycle.
    pub async fn cycle(&mut self) -> Result<CycleReport, EngineError> {
        if let Some(lease) = &self.lease
            && let WatchLead::Following(leader) = lease.try_lead(&mut self.engine.store())?
        {
            return Ok(CycleReport {
                following: Some(leader),
                ..CycleReport::default()
            });
        }
        let mut report = CycleReport {
            resumed: self.resume().await?,
            ..CycleReport::default()
        };
        let policy = self.engine.load_policy()?;
        self.follow(&policy, &mut report).await?;
        let intel_changed = self.refresh_intel(&mut report);
        self.expire_intel(intel_changed, &mut report)?;
        self.release_confirmed(&policy, &mut report).await?;
        if policy.phish_submission.enabled
            && due(
                self.last_phish,
                policy.phish_submission.interval_secs,
                self.options.force_responses,
            )
        {
            self.last_phish = Some(Instant::now());
            report.phish_ran = true;
            self.phish_submission(&policy, &mut report).await?;
        }
        if policy.post_delivery.enabled
            && (intel_changed
                || due(
                    self.last_post_delivery,
                    policy.post_delivery.interval_secs,
                    self.options.force_responses,
                ))
        {
            self.last_post_delivery = Some(Instant::now());
            report.post_delivery_ran = true;
            self.post_delivery(&policy, &mut report).await?;
        }
        self.auto_retract(&policy, &mut report).await?;
        report.holds_waiting = self
            .engine
            .store()
            .holds(true)?
            .iter()
            .filter(|h| h.state == HoldState::NeedsConfirmation)
            .count();
        // Renewed at the end too (the watch loop also renews between cycles).
        if let Some(lease) = &self.lease
            && let Err(e) = lease.try_lead(&mut self.engine.store())
        {
            report.errors.push(format!("watch lead: {e}"));
        }
        Ok(report)
    }

    /// Provider sync and the journal directory.
    async fn follow(
        &mut self,
        policy: &PolicyMatrix,
        report: &mut CycleReport,
    ) -> Result<(), EngineError> {
        if self.options.sync {
            let slot = self.sync_store.get_mut().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                match self.engine.store().open_again() {
                    Some(again) => *slot = Some(again?),
                    None => report
                        .errors
                        .push("sync needs a store file (in-memory store)".into()),
                }
            }
            if let Some(store) = slot.as_mut() {
                let clients: Vec<ProviderClient> = self.engine.clients().cloned().collect();
                let mut o = SyncOptions::from_config(Some(&self.engine.config));
                let lookback = policy
                    .post_delivery
                    .effective_lookback_secs()
                    .max(policy.phish_submission.effective_lookback_secs());
                o.since = Utc::now() - chrono::Duration::seconds(lookback);
                match sync(store, &clients, &o, |_| {}).await {
                    Ok(r) => {
                        for f in &r.failed {
                            report.sync_failures.push(format!("sync: {f}"));
                        }
                        report.sync = Some(r.summary());
                    }
                    Err(e) => report.errors.push(format!("sync: {e}")),
                }
            }
        }
        if let Some(dir) = self.options.journal_dir.clone() {
            let mut changed = Vec::new();
            match std::fs::read_dir(&dir) {
                Err(e) => report.errors.push(format!(
                    "{}: cannot read journal directory: {e}",
                    dir.display()
                )),
                Ok(entries) => {
                    for e in entries.flatten() {
                        let Ok(meta) = e.metadata() else { continue };
                        if !meta.is_file() {
                            continue;
                        }
                        let stamp = (meta.modified().ok(), meta.len());
                        if self.journal_seen.get(&e.path()) != Some(&stamp) {
                            self.journal_seen.insert(e.path(), stamp);
                            changed.push(e.path());
                        }
                    }
                }
            }
            if !changed.is_empty() {
                changed.sort();
                report.journal_files = changed.len();
                let opts = IngestOptions::from_config(Some(&self.engine.config));
                let r = ingest_paths(&mut self.engine.store(), &changed, &opts, &mut |_| {});
                match r {
                    Ok(r) => tracing::info!("journal: {}", r.summary()),
                    Err(e) => report.errors.push(format!("journal: {e}")),
                }
            }
        }
        Ok(())
    }

    /// Re-reads the intel directory when it changed; true when it was reloaded.
    fn refresh_intel(&mut self, report: &mut CycleReport) -> bool {
        let Some(intel) = self.intel.as_mut() else {
            return false;
        };
        match intel.refresh() {
            Ok(Some(set)) => {
                let errors: Vec<String> = set.errors.iter().map(|e| e.to_string()).collect();
                for e in &errors {
                    tracing::warn!("intel: {e}");
                }
                tracing::info!(
                    "intel: {} indicators from {} files ({} problems skipped)",
                    set.indicators.len(),
                    set.files,
                    errors.len()
                );
                report.intel_reloaded = Some((set.indicators.len(), errors));
                true
            }
            Ok(None) => false,
            Err(e) => {
                report.errors.push(e);
                false
            }
        }
    }

    fn intel_set(&self) -> Option<&IntelSet> {
        self.intel.as_ref().map(IntelDir::current)
    }

    /// The auto-retract matrix on every record with a disposition within the look-back.
    async fn auto_retract(
        &self,
        policy: &PolicyMatrix,
        report: &mut CycleReport,
    ) -> Result<(), EngineError> {
        if policy
            .actions
            .values()
            .all(|a| *a == RetractAction::NoAction)
        {
            return Ok(());
        }
        let since = Utc::now().timestamp() - policy.post_delivery.effective_lookback_secs();
        let records = self.engine.store().trace_for_automation(since, true)?;
        for r in records {
            let Some(d) = r.disposition else { continue };
            let source = r.disposition_source.clone().unwrap_or_default();
            if let Some(job) = self
                .start(policy, &r, d, Trigger::Auto, &source, report)
                .await?
            {
                self.run(job, report).await?;
            }
        }
        Ok(())
    }

    /// Post Delivery Response: intel against delivered, not-yet-retracted mail. Indicators over
    /// the guard's limits are held first; a record acts on the most severe of its other
    /// matches (none left: it is left alone, no verdict written).
    async fn post_delivery(
        &self,
        policy: &PolicyMatrix,
        report: &mut CycleReport,
    ) -> Result<(), EngineError> {
        let Some(intel) = self.intel_set() else {
            return Ok(());
        };
        if intel.indicators.is_empty() {
            return Ok(());
        }
        let since = Utc::now().timestamp() - policy.post_delivery.effective_lookback_secs();
        // The store picks the candidates in SQL; each is confirmed by the indicators' matcher.
        let wanted: Vec<(&str, &str)> = intel
            .indicators
            .iter()
            .map(|i| (i.kind.as_str(), i.value.as_str()))
            .collect();
        let records = self
            .engine
            .store()
            .trace_matching_indicators(since, &wanted)?;
        let matched: Vec<(TraceRecord, Vec<&Indicator>)> = records
            .into_iter()
            .filter_map(|r| {
                let m = intel.matches(&r);
                (!m.is_empty()).then_some((r, m))
            })
            .collect();
        let held = self.guard(policy, since, &matched, report)?;
        for (r, all) in matched {
            let matches: Vec<&Indicator> = all
                .into_iter()
                .filter(|i| !held.contains(&i.key()))
                .collect();
            let Some(best) = matches
                .iter()
                .min_by_key(|i| i.disposition.severity())
                .copied()
            else {
                continue;
            };
            let source = format!("intel:{}", best.file);
            let upd = self.engine.store().set_intel_disposition(
                &r.tenant,
                &r.message_id,
                &best.key(),
                &source,
            )?;
            if upd.upgraded > 0 {
                report.intel_upgraded += 1;
                self.engine.audit(
                    "automation",
                    "intel_match",
                    None,
                    None,
                    BTreeMap::from([("indicators".to_string(), matches.len() as u64)]),
                    serde_json::json!({
                        "tenant": r.tenant,
                        "message_id": r.message_id,
                        "previous": r.disposition.map(|d| d.as_str()),
                        "disposition": best.disposition.as_str(),
                        "source": source,
                        "indicators": matches.iter().map(|i| serde_json::json!({
                            "file": i.file, "type": i.kind.as_str(), "value": i.value,
                            "disposition": i.disposition.as_str(),
                        })).collect::<Vec<_>>(),
                    }),
                )?;
            }
            let Some(effective) = severity_min(r.disposition, Some(best.disposition)) else {
                continue;
            };
            if let Some(job) = self
                .start(
                    policy,
                    &r,
                    effective,
                    Trigger::PostDelivery,
                    &source,
                    report,
                )
                .await?
            {
                self.run(job, report).await?;
            }
        }
        Ok(())
    }

    /// The guard over one Post Delivery pass: tallies, per indicator, the messages and copies
    /// it would newly act on (leaving out what is already handled and what a confirmed hold
    /// releases), holds every indicator over the limits (idempotently: one open hold per
    /// indicator, grown with new messages) and returns the held indicators.
    fn guard(
        &self,
        policy: &PolicyMatrix,
        since: i64,
        matched: &[(TraceRecord, Vec<&Indicator>)],
        report: &mut CycleReport,
    ) -> Result<BTreeSet<IndicatorKey>, EngineError> {
        let limits = &self.engine.config.watch;
        // Messages of confirmed holds are released by this cycle, never held again.
        let mut confirmed: BTreeMap<IndicatorKey, BTreeSet<(String, String)>> = BTreeMap::new();
        let open = self.engine.store().holds(true)?;
        for h in open.iter().filter(|h| h.state == HoldState::Confirmed) {
            let messages = self.engine.store().hold_messages(h.id)?;
            confirmed
                .entry(h.indicator.clone())
                .or_default()
                .extend(messages.into_iter().map(|m| (m.tenant, m.message_id)));
        }
        let mut tally: BTreeMap<IndicatorKey, Vec<HeldMessage>> = BTreeMap::new();
        for (r, indicators) in matched {
            let mut copies = None;
            for i in indicators {
                let key = i.key();
                if confirmed
                    .get(&key)
                    .is_some_and(|s| s.contains(&(r.tenant.clone(), r.message_id.clone())))
                    || !self.would_act(policy, r, i.disposition)?
                {
                    continue;
                }
                let c = match copies {
                    Some(c) => c,
                    None => *copies.insert(self.pending_copies(r)?),
                };
                tally.entry(key).or_default().push(HeldMessage {
                    tenant: r.tenant.clone(),
                    message_id: r.message_id.clone(),
                    copies: c,
                });
            }
        }
        let mut held = BTreeSet::new();
        if tally.is_empty() {
            return Ok(held);
        }
        let trace_messages = self.engine.store().trace_messages_since(since)?;
        for (key, messages) in tally {
            let copies: u64 = messages.iter().map(|m| m.copies).sum();
            let Some(reason) = over_limits(copies, messages.len() as u64, trace_messages, limits)
            else {
                continue;
            };
            let (hold, change) =
                self.engine
                    .store()
                    .hold_record(&key, &reason, trace_messages, &messages)?;
            let action = match change {
                HoldChange::New => Some("needs_confirmation"),
                HoldChange::Extended { .. } => Some("needs_confirmation_extended"),
                HoldChange::Unchanged => None,
            };
            if let Some(action) = action {
                self.engine.audit(
                    "automation",
                    action,
                    None,
                    None,
                    BTreeMap::from([
                        ("copies".to_string(), hold.copies),
                        ("messages".to_string(), hold.messages),
                        ("trace_messages".to_string(), trace_messages),
                    ]),
                    serde_json::json!({
                        "hold": hold.id,
                        "indicator": key,
                        "reason": reason,
                        "max_copies_per_cycle": limits.max_copies_per_cycle,
                        "max_trace_share": limits.max_trace_share,
                        "trace_share_min_messages": limits.trace_share_min_messages,
                        "messages": messages.iter().map(|m| serde_json::json!({
                            "tenant": m.tenant, "message_id": m.message_id, "copies": m.copies,
                        })).collect::<Vec<_>>(),
                    }),
                )?;
            }
            tracing::warn!(
                hold = hold.id,
                copies = hold.copies,
                messages = hold.messages,
                "automation guard: held {key} instead of retracting: {reason}; release it with `clawback policy confirm {}`",
                hold.id
            );
            report.held.push(HoldNotice {
                id: hold.id,
                indicator: key.clone(),
                messages: hold.messages,
                copies: hold.copies,
                change,
                reason,
            });
            held.insert(key);
        }
        Ok(held)
    }

    /// Whether an indicator of `disposition` would change something on `r`: a more severe
    /// verdict, or a retraction the policy has not made yet.
    fn would_act(
        &self,
        policy: &PolicyMatrix,
        r: &TraceRecord,
        disposition: Disposition,
    ) -> Result<bool, EngineError> {
        if r.disposition
            .is_none_or(|d| d.severity() > disposition.severity())
        {
            return Ok(true);
        }
        let Some(effective) = severity_min(r.disposition, Some(disposition)) else {
            return Ok(false);
        };
        if policy.action_for(effective) == RetractAction::NoAction
            || r.tenant.is_empty()
            || self.engine.client(&r.tenant).is_err()
        {
            return Ok(false);
        }
        Ok(!self.already_handled(r, effective)?)
    }

    /// Delivered copies of `r` (not the sender's) not yet retracted by any job.
    fn pending_copies(&self, r: &TraceRecord) -> Result<u64, EngineError> {
        let retracted: BTreeSet<String> = self
            .engine
            .store()
            .retracted_mailboxes(&r.message_id)?
            .into_iter()
            .collect();
        Ok(r.delivered_to()
            .into_iter()
            .filter(|a| *a != r.sender && !retracted.contains(*a))
            .count() as u64)
    }

    /// Whether the policy already acted on `r` at `disposition` (or worse) over all of its
    /// delivered copies.
    fn already_handled(
        &self,
        r: &TraceRecord,
        disposition: Disposition,
    ) -> Result<bool, EngineError> {
        let copies = r
            .delivered_to()
            .into_iter()
            .filter(|a| *a != r.sender)
            .count() as u64;
        Ok(
            match self.engine.store().auto_handled(&r.tenant, &r.message_id)? {
                Some((d, c)) => {
                    c >= copies
                        && d.parse::<Disposition>()
                            .is_ok_and(|d| d.severity() <= disposition.severity())
                }
                None => false,
            },
        )
    }

    /// Expires the verdicts (and open holds) of indicators that left the intel directory:
    /// checked on the first cycle that read the directory and after each reload. Copies
    /// already retracted stay retracted; a file that could not be read expires nothing.
    fn expire_intel(&mut self, changed: bool, report: &mut CycleReport) -> Result<(), EngineError> {
        let Some(intel) = self.intel.as_ref() else {
            return Ok(());
        };
        if !intel.loaded() || (self.intel_checked && !changed) {
            return Ok(());
        }
        let set = intel.current();
        let live: BTreeSet<IndicatorKey> = set.indicators.iter().map(Indicator::key).collect();
        let gone = |k: &IndicatorKey| !live.contains(k) && !set.unreadable.contains(&k.file);
        let mut by_indicator: BTreeMap<IndicatorKey, Vec<IntelVerdict>> = BTreeMap::new();
        for v in self.engine.store().intel_verdicts_active()? {
            if gone(&v.indicator) {
                by_indicator.entry(v.indicator.clone()).or_default().push(v);
            }
        }
        for (key, verdicts) in by_indicator {
            let mut reverted = 0u64;
            for v in &verdicts {
                if self
                    .engine
                    .store()
                    .expire_intel_verdict(&v.tenant, &v.message_id)?
                    == Some(true)
                {
                    reverted += 1;
                }
            }
            report.verdicts_expired += verdicts.len();
            self.engine.audit(
                "automation",
                "intel_verdict_expired",
                None,
                None,
                BTreeMap::from([
                    ("verdicts".to_string(), verdicts.len() as u64),
                    ("reverted".to_string(), reverted),
                ]),
                serde_json::json!({
                    "indicator": key,
                    "why": "the indicator is no longer in the intel directory",
                    "messages": verdicts.iter().map(|v| serde_json::json!({
                        "tenant": v.tenant, "message_id": v.message_id,
                    })).collect::<Vec<_>>(),
                }),
            )?;
            tracing::info!(
                verdicts = verdicts.len(),
                reverted,
                "intel: {key} is gone; its verdicts expired (retracted copies stay retracted)"
            );
        }
        let open: Vec<HeldMatch> = self.engine.store().holds(true)?;
        for h in open.into_iter().filter(|h| gone(&h.indicator)) {
            if self
                .engine
                .store()
                .hold_transition(h.id, h.state, HoldState::Expired, None)?
            {
                self.engine.audit(
                    "automation",
                    "hold_expired",
                    None,
                    None,
                    BTreeMap::from([
                        ("copies".to_string(), h.copies),
                        ("messages".to_string(), h.messages),
                    ]),
                    serde_json::json!({
                        "hold": h.id,
                        "was": h.state,
                        "indicator": h.indicator,
                        "why": "the indicator is no longer in the intel directory",
                    }),
                )?;
                tracing::info!(hold = h.id, "intel: {} is gone; hold expired", h.indicator);
                report.holds_expired.push(h.id);
            }
        }
        self.intel_checked = true;
        Ok(())
    }

    /// Releases the holds an admin confirmed: writes their verdicts (first, in the store, so
    /// should this process stop, the matrix retracts them next cycle), then retracts per the
    /// policy (`post_delivery`). Every cycle, whatever the Post Delivery interval.
    async fn release_confirmed(
        &self,
        policy: &PolicyMatrix,
        report: &mut CycleReport,
    ) -> Result<(), EngineError> {
        let confirmed: Vec<HeldMatch> = self
            .engine
            .store()
            .holds(true)?
            .into_iter()
            .filter(|h| h.state == HoldState::Confirmed)
            .collect();
        for h in confirmed {
            let messages = self.engine.store().hold_messages(h.id)?;
            let source = format!("intel:{}", h.indicator.file);
            let mut records = Vec::new();
            let mut upgraded = 0u64;
            for m in &messages {
                let upd = self.engine.store().set_intel_disposition(
                    &m.tenant,
                    &m.message_id,
                    &h.indicator,
                    &source,
                )?;
                upgraded += upd.upgraded as u64;
                let traced = self.engine.store().trace_by_message_id(&m.message_id)?;
                records.extend(traced.into_iter().filter(|r| r.tenant == m.tenant));
            }
            // Another watcher may release it at the same time: one of them does.
            if !self.engine.store().hold_transition(
                h.id,
                HoldState::Confirmed,
                HoldState::Released,
                None,
            )? {
                continue;
            }
            report.intel_upgraded += upgraded as usize;
            let mut jobs = Vec::new();
            for r in &records {
                let effective = r.disposition.unwrap_or(h.indicator.disposition);
                if let Some(job) = self
                    .start(policy, r, effective, Trigger::PostDelivery, &source, report)
                    .await?
                {
                    jobs.push(job);
                }
            }
            self.engine.audit(
                "automation",
                "hold_released",
                None,
                None,
                BTreeMap::from([
                    ("messages".to_string(), messages.len() as u64),
                    ("upgraded".to_string(), upgraded),
                    ("jobs".to_string(), jobs.len() as u64),
                ]),
                serde_json::json!({
                    "hold": h.id,
                    "indicator": h.indicator,
                    "confirmed_by": h.confirmed_by,
                    "jobs": jobs,
                }),
            )?;
            tracing::info!(
                hold = h.id,
                messages = messages.len(),
                jobs = jobs.len(),
                "automation guard: released confirmed hold of {}",
                h.indicator
            );
            report.released.push(h.id);
            for job in jobs {
                self.run(job, report).await?;
            }
        }
        Ok(())
    }

    /// Phish Submission Response.
    async fn phish_submission(
        &self,
        policy: &PolicyMatrix,
        report: &mut CycleReport,
    ) -> Result<(), EngineError> {
        let since = Utc::now()
            - chrono::Duration::seconds(policy.phish_submission.effective_lookback_secs());
        let ingest = IngestOptions::from_config(Some(&self.engine.config));
        // (tenant, mailbox, report id, reporter, original record)
        let mut pending: Vec<(String, String, String, String, Option<TraceRecord>)> = Vec::new();
        for t in &self.engine.config.tenants {
            if t.report_mailboxes.is_empty() {
                continue;
            }
            let client = self.engine.client(&t.name)?;
            for mailbox in &t.report_mailboxes {
                let mailbox = mailbox.trim().to_ascii_lowercase();
                let mut metas = match client.list_recent_messages(&mailbox, since, false).await {
                    Ok(m) => m,
                    Err(f) => {
                        report
                            .errors
                            .push(format!("{}/{mailbox}: cannot list reports: {f}", t.name));
                        continue;
                    }
                };
                metas.sort_by(|a, b| (a.date, &a.id).cmp(&(b.date, &b.id)));
                for meta in metas {
                    let report_id = if meta.internet_message_id.is_empty() {
                        meta.id.clone()
                    } else {
                        meta.internet_message_id.clone()
                    };
                    if self
                        .engine
                        .store()
                        .report_decided(&t.name, &mailbox, &report_id)?
                    {
                        continue;
                    }
                    let raw = match client.fetch_raw(&mailbox, &meta.id).await {
                        Ok(r) => r,
                        Err(f) => {
                            report.errors.push(format!(
                                "{}/{mailbox}: cannot fetch report {report_id}: {f}",
                                t.name
                            ));
                            continue;
                        }
                    };
                    let original = attached_original(&raw)
                        .and_then(|bytes| parse_message(&bytes, &ingest).ok());
                    pending.push((
                        t.name.clone(),
                        mailbox.clone(),
                        report_id,
                        meta.from.trim().to_ascii_lowercase(),
                        original,
                    ));
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let threshold = self.options.reporters_threshold.max(1);
        // Group by original so all of this cycle's reporters count together.
        let mut by_original: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut decisions: Vec<Option<ReportDecision>> = vec![None; pending.len()];
        for (i, (tenant, mailbox, report_id, reporter, original)) in pending.iter().enumerate() {
            match original {
                Some(o) => by_original.entry(o.message_id.clone()).or_default().push(i),
                None => {
                    decisions[i] = Some(ReportDecision {
                        tenant: tenant.clone(),
                        mailbox: mailbox.clone(),
                        report_id: report_id.clone(),
                        reporter: reporter.clone(),
                        original: None,
                        verdict: "no_original".into(),
                        reason: "the report carries no message/rfc822 attachment".into(),
                    })
                }
            }
        }
        let mut jobs = Vec::new();
        for (mid, idx) in &by_original {
            let mut reporters = self.engine.store().reporters_of(mid)?;
            for &i in idx {
                reporters.insert(pending[i].3.clone());
            }
            let traced = self.engine.store().trace_by_message_id(mid)?;
            let existing = traced
                .iter()
                .fold(None, |acc, r| severity_min(acc, r.disposition));
            let mut intel_hit = None;
            if let Some(intel) = self.intel_set() {
                let parsed = idx.iter().filter_map(|&i| pending[i].4.as_ref());
                for r in traced.iter().chain(parsed) {
                    if let Some(best) = intel
                        .matches(r)
                        .into_iter()
                        .min_by_key(|i| i.disposition.severity())
                    {
                        intel_hit =
                            Some((best.disposition, format!("intel:{}", best.file), best.key()));
                        break;
                    }
                }
            }
            let (verdict, reason, source) = if traced.is_empty() {
                (
                    "not_found",
                    format!("{mid} is not in the trace ({} reporters)", reporters.len()),
                    None,
                )
            } else if existing == Some(Disposition::Malicious) {
                let src = traced
                    .iter()
                    .find_map(|r| r.disposition_source.clone())
                    .unwrap_or_default();
                (
                    "malicious",
                    format!("disposition malicious ({src})"),
                    Some(src),
                )
            } else if let Some((Disposition::Malicious, src, _)) = &intel_hit {
                (
                    "malicious",
                    format!("intel match ({src})"),
                    Some(src.clone()),
                )
            } else if reporters.len() >= threshold {
                (
                    "malicious",
                    format!(
                        "{} distinct reporters (threshold {threshold})",
                        reporters.len()
                    ),
                    Some("report:phish_submission".to_string()),
                )
            } else {
                (
                    "not_malicious",
                    format!(
                        "{} of {threshold} distinct reporters; disposition {}; no malicious intel match",
                        reporters.len(),
                        existing.map(|d| d.as_str()).unwrap_or("none")
                    ),
                    None,
                )
            };
            if verdict == "malicious" {
                let source = source.unwrap_or_default();
                match &intel_hit {
                    // An intel verdict remembers its indicator, so it can expire.
                    Some((Disposition::Malicious, src, key)) if *src == source => {
                        for r in &traced {
                            self.engine.store().set_intel_disposition(
                                &r.tenant,
                                &r.message_id,
                                key,
                                &source,
                            )?;
                        }
                    }
                    _ => {
                        self.engine.store().set_disposition(
                            None,
                            mid,
                            Disposition::Malicious,
                            &source,
                        )?;
                    }
                }
                for r in &traced {
                    if let Some(job) = self
                        .start(
                            policy,
                            r,
                            Disposition::Malicious,
                            Trigger::PhishSubmission,
                            &source,
                            report,
                        )
                        .await?
                    {
                        jobs.push(job);
                    }
                }
            }
            for &i in idx {
                let (tenant, mailbox, report_id, reporter, _) = &pending[i];
                decisions[i] = Some(ReportDecision {
                    tenant: tenant.clone(),
                    mailbox: mailbox.clone(),
                    report_id: report_id.clone(),
                    reporter: reporter.clone(),
                    original: Some(mid.clone()),
                    verdict: verdict.to_string(),
                    reason: reason.clone(),
                });
            }
            // Audit inputs once per original as well as per report (below).
            tracing::info!(original = %mid, verdict, reporters = reporters.len(), "phish submission: {reason}");
        }
        for d in decisions.into_iter().flatten() {
            self.engine.store().record_report(&d)?;
            let reporters = match &d.original {
                Some(o) => self.engine.store().reporters_of(o)?.len() as u64,
                None => 0,
            };
            self.engine.audit(
                "automation",
                "phish_decision",
                None,
                None,
                BTreeMap::from([("reporters".to_string(), reporters)]),
                serde_json::json!({
                    "tenant": d.tenant,
                    "report_mailbox": d.mailbox,
                    "report": d.report_id,
                    "reporter": d.reporter,
                    "original": d.original,
                    "verdict": d.verdict,
                    "reason": d.reason,
                    "threshold": threshold,
                }),
            )?;
            report.decisions.push(d);
        }
        for job in jobs {
            self.run(job, report).await?;
        }
        Ok(())
    }

    /// Creates the job retracting one message per the matrix, unless there is nothing (new)
    /// to do. Every decision to act (or that nothing is left) is audited (`auto_retract`,
    /// with the plan's digest and copy count).
    ///
    /// When the trace names copies not retracted yet, and no more than the guard's
    /// `max_copies_per_cycle`, the job plans while it acts (as `retract --yes`): it is created
    /// at once and its `auto_retract` entry is written with its `plan_applied` entry, in the
    /// transaction that seals its plan. A job made this way whose plan finds nothing left to act on finishes holding only
    /// its skipped lines, like a `retract --yes` job. Otherwise (nothing known up front, or
    /// more than the guard's cap) the plan is made first and no job is made for an empty plan.
    /// The guard itself holds an indicator before this is reached (Post Delivery).
    async fn start(
        &self,
        policy: &PolicyMatrix,
        r: &TraceRecord,
        disposition: Disposition,
        trigger: Trigger,
        source: &str,
        report: &mut CycleReport,
    ) -> Result<Option<i64>, EngineError> {
        // Found now: time-to-act counts from here (planning and the job included).
        let detected_at = chrono::Utc::now();
        let action = policy.action_for(disposition);
        if action == RetractAction::NoAction || r.tenant.is_empty() {
            return Ok(None);
        }
        if self.engine.client(&r.tenant).is_err() {
            return Ok(None);
        }
        let copies = r
            .delivered_to()
            .into_iter()
            .filter(|a| *a != r.sender)
            .count() as u64;
        if self.already_handled(r, disposition)? {
            return Ok(None);
        }
        let retracted: BTreeSet<String> = self
            .engine
            .store()
            .retracted_mailboxes(&r.message_id)?
            .into_iter()
            .collect();
        let request = RetractRequest {
            message_ids: vec![r.message_id.clone()],
            query: None,
            tenants: vec![r.tenant.clone()],
            only: Vec::new(),
            exclude: retracted.iter().cloned().collect(),
            depth: 0,
            action,
            trigger,
            reason: auto_reason(trigger, disposition, source),
        };
        let up_front = r
            .delivered_to()
            .into_iter()
            .filter(|a| *a != r.sender && !retracted.contains(*a))
            .count() as u64;
        let overlap = up_front > 0 && up_front <= self.engine.config.watch.max_copies_per_cycle;
        let (job, plan) = if overlap {
            match self.engine.create_planning_job(request, Some(detected_at)) {
                Ok(job) => (Some(job), None),
                Err(e) => {
                    report
                        .errors
                        .push(format!("{} {}: cannot plan: {e}", r.tenant, r.message_id));
                    return Ok(None);
                }
            }
        } else {
            let plan = match self.engine.build_plan(request).await {
                Ok(p) => p,
                Err(e) => {
                    report
                        .errors
                        .push(format!("{} {}: cannot plan: {e}", r.tenant, r.message_id));
                    return Ok(None);
                }
            };
            let job = if plan.items.is_empty() {
                None
            } else {
                Some(
                    self.engine
                        .create_job_detected(&plan, false, Some(detected_at))?,
                )
            };
            (job, Some(plan))
        };
        self.engine.store().set_auto_handled(
            &r.tenant,
            &r.message_id,
            disposition.as_str(),
            copies,
            trigger.as_str(),
            job,
        )?;
        // The decision is audited (`auto_retract`) with its job, in the transaction that
        // creates the job — or, for a job that plans while it acts, that seals its plan. A
        // plan that left nothing to do makes no job: its decision is audited alone.
        if let Some(plan) = &plan {
            if job.is_none() {
                self.engine
                    .audit_record(self.engine.auto_retract_record(plan, None))?;
            }
            log_decision(plan, job);
        }
        if let Some(job) = job {
            report.jobs.push(AutoJob {
                job,
                trigger,
                tenant: r.tenant.clone(),
                message_id: r.message_id.clone(),
                action,
                copies: plan.as_ref().map_or(0, |p| p.items.len()),
                succeeded: 0,
                failed: 0,
            });
        }
        Ok(job)
    }

    async fn run(&self, job: i64, report: &mut CycleReport) -> Result<(), EngineError> {
        let r = self
            .engine
            .run_job(job, &RunOptions::default(), &|_| {})
            .await?;
        // A job that planned while it acted: its copies, now that its plan is sealed.
        if let Some(plan) = self.engine.sealed_plan(job)?
            && let Some(j) = report.jobs.iter_mut().find(|j| j.job == job)
            && j.copies == 0
        {
            j.copies = plan.items.len();
            log_decision(&plan, Some(job));
        }
        if let Some(j) = report.jobs.iter_mut().find(|j| j.job == job) {
            j.succeeded = r.counts.succeeded;
            j.failed = r.counts.failed;
        }
        tracing::info!(
            job,
            succeeded = r.counts.succeeded,
            failed = r.counts.failed,
            audit_head = %r.audit_head.as_ref().map(|h| h.to_string()).unwrap_or_default(),
            "automation job finished in {:.2}s",
            r.elapsed_secs
        );
        Ok(())
    }
}

/// `clawback watch` inside another front end (the demo's console): a cycle every `every`
/// until the task is dropped. What a cycle did goes to the log; a failed cycle is logged and
/// the next one tries again. Its jobs reach the console's panes like any other process's work
/// (the engine notices store changes).
pub async fn watch_in_process(engine: std::sync::Arc<Engine>, every: std::time::Duration) {
    let mut watcher = Watcher::new(&engine, WatchOptions::from_config(&engine));
    watcher.lead_with(WatchLease::for_interval(every));
    loop {
        let started = Instant::now();
        match watcher.cycle().await {
            Ok(report) => {
                for e in &report.errors {
                    tracing::warn!("watch: {e}");
                }
                tracing::info!(
                    "watch: {} ({:.2}s)",
                    report.summary(),
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => tracing::warn!("watch: cycle failed: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

fn due(last: Option<Instant>, interval_secs: u64, force: bool) -> bool {
    force || last.is_none_or(|t| t.elapsed().as_secs() >= interval_secs)
}

/// The raw bytes of the first `message/rfc822` attachment of a report.
pub fn attached_original(raw: &[u8]) -> Option<Vec<u8>> {
    let msg = mail_parser::MessageParser::default().parse(raw)?;
    for part in msg.attachments() {
        if let Some(m) = part.message() {
            return Some(m.raw_message().to_vec());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decision's disposition and source come back from its request's reason — also a
    /// source with parentheses and spaces — and a hand-written reason gives none.
    #[test]
    fn an_automation_reason_gives_its_disposition_and_source_back() {
        for trigger in [
            Trigger::Auto,
            Trigger::PostDelivery,
            Trigger::PhishSubmission,
        ] {
            for source in ["header:X-Clawback-Disposition", "intel feed (bad).csv"] {
                let reason = auto_reason(trigger, Disposition::Malicious, source);
                assert_eq!(
                    parse_auto_reason(&reason, trigger),
                    Some(("malicious", source)),
                    "{reason}"
                );
            }
        }
        assert_eq!(
            parse_auto_reason("INC-4411 payroll lure", Trigger::Auto),
            None
        );
        let other = auto_reason(Trigger::Auto, Disposition::Spam, "x");
        assert_eq!(parse_auto_reason(&other, Trigger::PostDelivery), None);
    }
}
