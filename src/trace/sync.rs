//! `trace sync`: fill the trace from the providers themselves. Enumerates each tenant's
//! mailboxes and their recent messages through the [`ProviderClient`]s (Graph with
//! `internetMessageHeaders`, Gmail metadata), fetches the raw MIME once per distinct message
//! (Graph `$value`, Gmail `format=raw`) for URLs and attachment hashes, and stores one trace
//! record per (tenant, Internet Message-ID) with every mailbox holding a copy as an envelope
//! recipient.
//!
//! Resumable: a per-(tenant, mailbox) cursor (newest received time synced) lives in the store;
//! the next sync asks only for mail at or after it. Re-listed mail is already known, so nothing
//! is fetched again and the store does not change. Mailboxes that fail are reported with their
//! reason and do not stop the sync.

use super::ingest::{IngestOptions, disposition_from_headers, parse_message};
use super::{RecipientKind, TraceRecord, message_id_list};
use crate::config::Config;
use crate::model::{FailureReason, Folder, address_domain, normalize_message_id};
use crate::provider::{DomainRetract, Failure, LoggedDelivery, MessageMeta, ProviderClient};
use crate::store::{Store, StoreError, UpsertOutcome};
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// How far back a first sync looks when no `since` is given.
pub const DEFAULT_SINCE_DAYS: i64 = 30;
/// Mailboxes listed (and raw messages fetched) at the same time, across tenants. The clients'
/// pacers still bound what each tenant and mailbox sees.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Records stored per transaction.
const STORE_BATCH: usize = 2_000;
/// The cursor key of a tenant-wide log in the per-(tenant, mailbox) cursor table (never an
/// address, so no mailbox's cursor).
pub const LOG_CURSOR: &str = "(tenant-wide log)";
/// How far before its cursor a log is read again: records that reached the log late (Google
/// documents minutes to hours for some events) are picked up; re-read ones change nothing.
pub const LOG_OVERLAP: chrono::Duration = chrono::Duration::hours(1);
/// Recipient mailboxes tried to locate and read one copy of a message new to the trace.
const RAW_CANDIDATES: usize = 3;

/// What to sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Oldest received time to ask for (a mailbox with a newer cursor starts at its cursor).
    pub since: DateTime<Utc>,
    /// Only these tenants (by configured name); empty = every client given.
    pub tenants: Vec<String>,
    /// Ignore the stored cursors and list everything since `since`.
    pub full: bool,
    /// Mailboxes (and raw fetches) in flight at once.
    pub concurrency: usize,
    /// The disposition header names (`[trace] disposition_headers`).
    pub disposition_headers: Vec<String>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            since: Utc::now() - chrono::Duration::days(DEFAULT_SINCE_DAYS),
            tenants: Vec::new(),
            full: false,
            concurrency: DEFAULT_CONCURRENCY,
            disposition_headers: crate::config::TraceConfig::default().disposition_headers,
        }
    }
}

impl SyncOptions {
    /// Defaults with the disposition header names of a config.
    pub fn from_config(config: Option<&Config>) -> SyncOptions {
        let mut o = SyncOptions::default();
        if let Some(c) = config {
            o.disposition_headers = c.trace.disposition_headers.clone();
        }
        o
    }
}

/// Where a running sync is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPhase {
    /// Listing mailboxes' recent messages.
    Listing,
    /// Fetching raw MIME of messages new to the trace.
    Fetching,
    /// Writing the trace.
    Storing,
    Done,
}

/// Progress of a running sync.
#[derive(Debug, Clone, Copy)]
pub struct SyncProgress {
    pub phase: SyncPhase,
    pub mailboxes_done: usize,
    pub mailboxes_total: usize,
    /// Message copies listed so far.
    pub messages_listed: u64,
    /// Raw messages fetched so far (of `to_fetch`).
    pub fetched: u64,
    pub to_fetch: u64,
    /// Trace records inserted or merged so far.
    pub indexed: u64,
    pub elapsed: Duration,
}

/// A mailbox (or a tenant's directory, `mailbox: None`) that could not be synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxFailure {
    pub tenant: String,
    /// `None` when listing the tenant's mailboxes failed.
    pub mailbox: Option<String>,
    pub failure: Failure,
}

impl std::fmt::Display for MailboxFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mailbox {
            Some(m) => write!(f, "{}/{m}: {}", self.tenant, self.failure),
            None => write!(
                f,
                "{}: cannot list mailboxes: {}",
                self.tenant, self.failure
            ),
        }
    }
}

/// What a sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// Tenants synced, in client order.
    pub tenants: Vec<String>,
    /// Mailboxes enumerated.
    pub mailboxes_total: usize,
    /// Mailboxes whose recent mail was listed.
    pub mailboxes_synced: usize,
    /// Mailboxes (or directories) that failed unexpectedly: throttled, provider errors, an
    /// unreachable endpoint, not authorized in a domain the tenant grants.
    pub failed: Vec<MailboxFailure>,
    /// Mailboxes refused (not authorized) in domains the provider confirms are not granted
    /// (the probe `clawback doctor` uses): routine in real tenants, so not a failure.
    pub ungranted: Vec<MailboxFailure>,
    /// (tenant, domain) of the domains behind [`SyncReport::ungranted`].
    pub ungranted_domains: BTreeSet<(String, String)>,
    /// Directory entries that are not mailboxes (users without a mailbox): nothing to sync.
    pub skipped: Vec<MailboxFailure>,
    /// Message copies listed.
    pub messages_listed: u64,
    /// Distinct (tenant, Message-ID) seen.
    pub distinct_messages: u64,
    /// Raw messages fetched (once per message new to the trace).
    pub raw_fetched: u64,
    /// Messages new to the trace whose raw MIME could not be fetched or parsed; they are
    /// indexed from the provider's metadata (no URLs or attachment hashes).
    pub raw_failed: Vec<MailboxFailure>,
    /// New trace records.
    pub inserted: u64,
    /// Known records that gained a copy (recipient) or a more severe disposition.
    pub merged: u64,
    /// Known records with nothing new.
    pub unchanged: u64,
    /// Mailboxes whose cursor moved (a tenant-wide log's cursor counts as one).
    pub cursors_advanced: usize,
    /// Tenants indexed from their tenant-wide delivery log (no mailbox listed there).
    pub log_tenants: Vec<String>,
    /// Deliveries read from tenant-wide logs.
    pub log_deliveries: u64,
    /// Log deliveries without a usable Message-ID: not indexed (each is in `raw_failed`).
    pub log_unkeyed: u64,
    /// Mailboxes read through their change cursors (Graph delta, Gmail history) alone.
    pub mailboxes_from_changes: usize,
    /// Mailboxes whose change cursor was out of date (Graph 410, Gmail 404): listed again.
    pub cursors_expired: usize,
    /// Messages the change cursors reported gone from a folder (the trace keeps deliveries).
    pub removed_seen: u64,
    /// Change cursors moved (or set).
    pub change_cursors_advanced: usize,
    /// Tenants whose log could not be read, with why (a missing permission, most often): their
    /// mailboxes were listed one by one instead.
    pub log_fallbacks: Vec<MailboxFailure>,
    pub elapsed: Duration,
}

impl SyncReport {
    /// Whether every mailbox was synced, apart from those in domains known to be ungranted.
    pub fn complete(&self) -> bool {
        self.failed.is_empty()
    }

    /// One line for people.
    pub fn summary(&self) -> String {
        let log = format!(
            "the tenant-wide log of {} ({} deliveries)",
            self.log_tenants.join(", "),
            self.log_deliveries
        );
        let what = if self.log_tenants.is_empty() {
            format!(
                "{}/{} mailboxes",
                self.mailboxes_synced, self.mailboxes_total
            )
        } else if self.log_tenants.len() == self.tenants.len() {
            log
        } else {
            format!(
                "{}/{} mailboxes and {log}",
                self.mailboxes_synced, self.mailboxes_total
            )
        };
        let mut s = format!(
            "synced {what} in {} tenant(s): {} copies listed, {} messages; \
             indexed {} new, {} merged, {} unchanged; {} raw fetched",
            self.tenants.len(),
            self.messages_listed,
            self.distinct_messages,
            self.inserted,
            self.merged,
            self.unchanged,
            self.raw_fetched,
        );
        for f in &self.log_fallbacks {
            s.push_str(&format!(
                "; {}: tenant-wide log not used ({}: {}), every mailbox listed",
                f.tenant, f.failure.reason, f.failure.message
            ));
        }
        if self.mailboxes_from_changes > 0 {
            s.push_str(&format!(
                "; {} mailboxes read through delta/history cursors",
                self.mailboxes_from_changes
            ));
        }
        if self.cursors_expired > 0 {
            s.push_str(&format!(
                "; {} out-of-date cursors: those mailboxes listed again",
                self.cursors_expired
            ));
        }
        if self.log_unkeyed > 0 {
            s.push_str(&format!(
                "; {} log deliveries without a Message-ID NOT indexed",
                self.log_unkeyed
            ));
        }
        if !self.skipped.is_empty() {
            s.push_str(&format!("; {} not mailboxes", self.skipped.len()));
        }
        if !self.ungranted.is_empty() {
            s.push_str(&format!(
                "; {} mailboxes in {} ungranted domain{} skipped — see `clawback doctor`",
                self.ungranted.len(),
                self.ungranted_domains.len(),
                if self.ungranted_domains.len() == 1 {
                    ""
                } else {
                    "s"
                }
            ));
        }
        if !self.failed.is_empty() {
            s.push_str(&format!("; {} FAILED", self.failed.len()));
        }
        let metadata_only = (self.raw_failed.len() as u64).saturating_sub(self.log_unkeyed);
        if metadata_only > 0 {
            s.push_str(&format!("; {metadata_only} indexed from metadata only"));
        }
        s.push_str(&format!(" ({:.2}s)", self.elapsed.as_secs_f64()));
        s
    }
}

/// Errors that stop a sync (a failing mailbox does not).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("unknown tenant {name:?}; configured tenants: {known}")]
    UnknownTenant { name: String, known: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One listed copy, with the index of its client.
struct Listed {
    client: usize,
    meta: MessageMeta,
}

/// Syncs the trace from the providers. See the module documentation.
pub async fn sync(
    store: &mut Store,
    clients: &[ProviderClient],
    options: &SyncOptions,
    mut progress: impl FnMut(SyncProgress),
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let conc = options.concurrency.max(1);
    for name in &options.tenants {
        if !clients.iter().any(|c| c.tenant_name() == name) {
            return Err(SyncError::UnknownTenant {
                name: name.clone(),
                known: clients
                    .iter()
                    .map(|c| c.tenant_name().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let chosen: Vec<usize> = (0..clients.len())
        .filter(|&i| {
            options.tenants.is_empty()
                || options
                    .tenants
                    .iter()
                    .any(|t| t == clients[i].tenant_name())
        })
        .collect();
    let mut report = SyncReport {
        tenants: chosen
            .iter()
            .map(|&i| clients[i].tenant_name().to_string())
            .collect(),
        ..SyncReport::default()
    };

    // 0. The tenant-wide log where it can be read; the other tenants list every mailbox.
    let parse_opts = IngestOptions {
        disposition_headers: options.disposition_headers.clone(),
        tenants: Vec::new(),
        now: Utc::now().timestamp(),
    };
    let mut per_mailbox: Vec<usize> = Vec::new();
    let mut logged: Vec<(usize, Vec<LoggedDelivery>)> = Vec::new();
    let until = Utc::now();
    for &i in &chosen {
        let tenant = clients[i].tenant_name();
        let cursor = if options.full {
            None
        } else {
            store.sync_cursors(tenant)?.get(LOG_CURSOR).copied()
        };
        let start = cursor
            .and_then(|c| DateTime::from_timestamp(c, 0))
            .map_or(options.since, |c| (c - LOG_OVERLAP).max(options.since));
        match clients[i].delivery_log(start, until).await {
            Ok(deliveries) => logged.push((i, deliveries)),
            // Throttled (the trace allows 100 requests per 5 minutes) or failing: listing
            // every mailbox instead would cost one request per mailbox (100,000 in a big
            // tenant) for a log that answers again shortly. The tenant fails this sync; its
            // cursor stays, so the next sync reads what this one missed.
            Err(failure) if failure.reason == FailureReason::Throttled => {
                report.failed.push(MailboxFailure {
                    tenant: tenant.to_string(),
                    mailbox: None,
                    failure,
                });
            }
            Err(failure) => {
                report.log_fallbacks.push(MailboxFailure {
                    tenant: tenant.to_string(),
                    mailbox: None,
                    failure,
                });
                per_mailbox.push(i);
            }
        }
    }

    // 1. Mailboxes of each tenant without a log.
    let listed = futures_util::future::join_all(
        per_mailbox
            .iter()
            .map(|&i| async move { (i, clients[i].list_mailboxes().await) }),
    )
    .await;
    let mut jobs: Vec<MailboxJob> = Vec::new();
    for (i, result) in listed {
        let tenant = clients[i].tenant_name();
        match result {
            Ok(mut mailboxes) => {
                mailboxes.sort();
                mailboxes.dedup();
                let cursors = if options.full {
                    HashMap::new()
                } else {
                    store.sync_cursors(tenant)?
                };
                // --full keeps the change cursors it starts from (so they move by
                // compare-and-set) but does not read changes with them.
                let mut changes = store.change_cursors(tenant)?;
                for mb in mailboxes {
                    let cursor = cursors.get(&mb).copied();
                    let since = cursor
                        .and_then(|c| DateTime::from_timestamp(c, 0))
                        .map_or(options.since, |c| c.max(options.since));
                    // No cursor: clawback has never listed this mailbox (or --full).
                    let changes = changes.remove(&mb).unwrap_or_default();
                    jobs.push(MailboxJob {
                        client: i,
                        first: cursor.is_none() && changes.is_empty(),
                        mailbox: mb,
                        since,
                        oldest: options.since,
                        changes,
                    });
                }
            }
            Err(failure) => report.failed.push(MailboxFailure {
                tenant: tenant.to_string(),
                mailbox: None,
                failure,
            }),
        }
    }
    report.mailboxes_total = jobs.len();

    let snapshot = |phase, report: &SyncReport, fetched, to_fetch, done| SyncProgress {
        phase,
        mailboxes_done: done,
        mailboxes_total: report.mailboxes_total,
        messages_listed: report.messages_listed,
        fetched,
        to_fetch,
        indexed: report.inserted + report.merged,
        elapsed: started.elapsed(),
    };
    progress(snapshot(SyncPhase::Listing, &report, 0, 0, 0));

    // 2. Recent messages of every mailbox, `conc` at a time.
    let mut copies: Vec<Listed> = Vec::new();
    // (client, mailbox) → newest received time listed, for the cursors.
    let mut newest: Vec<(usize, String, Option<i64>)> = Vec::new();
    let mut done = 0usize;
    // (client, mailbox, folder, cursor read, cursor reached or `None`: dropped) for the
    // change cursors, in the order they are written.
    let mut moved: Vec<(usize, String, CursorMove)> = Vec::new();
    let full = options.full;
    let mut stream = stream::iter(jobs.into_iter().map(|job| async move {
        let r = list_mailbox(&clients[job.client], &job, full).await;
        (job.client, job.mailbox, r)
    }))
    .buffer_unordered(conc);
    while let Some((i, mb, result)) = stream.next().await {
        done += 1;
        let tenant = clients[i].tenant_name().to_string();
        match result {
            Ok(listing) => {
                let metas = listing.metas;
                match listing.how {
                    Listing::Changes => report.mailboxes_from_changes += 1,
                    Listing::Expired => report.cursors_expired += 1,
                    Listing::Full => {}
                }
                report.removed_seen += listing.removed;
                moved.extend(listing.cursors.into_iter().map(|m| (i, mb.clone(), m)));
                report.mailboxes_synced += 1;
                report.messages_listed += metas.len() as u64;
                let top = metas
                    .iter()
                    .filter_map(|m| m.date)
                    .map(|d| d.timestamp())
                    .max();
                newest.push((i, mb, top));
                copies.extend(metas.into_iter().map(|meta| Listed { client: i, meta }));
            }
            Err(failure) if failure.reason == FailureReason::NotAMailbox => {
                report.skipped.push(MailboxFailure {
                    tenant,
                    mailbox: Some(mb),
                    failure,
                })
            }
            Err(failure) => report.failed.push(MailboxFailure {
                tenant,
                mailbox: Some(mb),
                failure,
            }),
        }
        progress(snapshot(SyncPhase::Listing, &report, 0, 0, done));
    }
    drop(stream);
    set_aside_ungranted(clients, &mut report).await;

    // 3. Group copies by (tenant, Message-ID). Copies without a usable Message-ID are their own
    //    group; their raw MIME gives them a synthetic id that is the same in every copy.
    let mut groups: BTreeMap<(usize, String), Vec<usize>> = BTreeMap::new();
    let mut anonymous: Vec<usize> = Vec::new();
    for (n, c) in copies.iter().enumerate() {
        match normalize_message_id(&c.meta.internet_message_id) {
            Some(mid) => groups.entry((c.client, mid)).or_default().push(n),
            None => anonymous.push(n),
        }
    }
    report.distinct_messages = groups.len() as u64 + anonymous.len() as u64;

    // 4. Raw MIME once per message new to the trace.
    let mut fetch: Vec<usize> = Vec::new();
    for ((client, mid), members) in &groups {
        if !store.trace_known(clients[*client].tenant_name(), mid)? {
            fetch.push(members[0]);
        }
    }
    fetch.extend(anonymous.iter().copied());
    let mut to_fetch = fetch.len() as u64;
    let mut raw: HashMap<usize, TraceRecord> = HashMap::new();
    let copies_ref = &copies;
    let mut stream = stream::iter(fetch.into_iter().map(|n| async move {
        let c = &copies_ref[n];
        let r = clients[c.client]
            .fetch_raw(&c.meta.mailbox, &c.meta.id)
            .await;
        (n, r)
    }))
    .buffer_unordered(conc);
    let mut fetched = 0u64;
    let mut last = Instant::now();
    progress(snapshot(SyncPhase::Fetching, &report, 0, to_fetch, done));
    while let Some((n, result)) = stream.next().await {
        fetched += 1;
        let c = &copies[n];
        let failure = match result {
            Ok(bytes) => match parse_message(&bytes, &parse_opts) {
                Ok(rec) => {
                    report.raw_fetched += 1;
                    raw.insert(n, rec);
                    None
                }
                Err(reason) => Some(Failure::new(
                    FailureReason::ProviderError,
                    None,
                    "unparsable",
                    format!("raw MIME of {} rejected: {reason}", c.meta.id),
                )),
            },
            Err(f) => Some(f),
        };
        if let Some(failure) = failure {
            report.raw_failed.push(MailboxFailure {
                tenant: clients[c.client].tenant_name().to_string(),
                mailbox: Some(c.meta.mailbox.clone()),
                failure,
            });
        }
        if last.elapsed() >= Duration::from_millis(250) {
            last = Instant::now();
            progress(snapshot(
                SyncPhase::Fetching,
                &report,
                fetched,
                to_fetch,
                done,
            ));
        }
    }
    drop(stream);

    // 5. One record per group: the parsed raw message (new) or just the copies (known).
    let mut records: Vec<TraceRecord> = Vec::with_capacity(groups.len() + anonymous.len());
    for ((client, mid), members) in &groups {
        let tenant = clients[*client].tenant_name();
        let first = members[0];
        let mut rec = match raw.remove(&first) {
            Some(mut r) => {
                // The provider's Message-ID is the key (the raw one normalizes the same).
                r.message_id = mid.clone();
                r.synthetic_id = false;
                r
            }
            None if store.trace_known(tenant, mid)? => TraceRecord {
                message_id: mid.clone(),
                ..TraceRecord::default()
            },
            None => record_from_meta(&copies[first].meta, mid, &parse_opts),
        };
        finish(
            &mut rec,
            tenant,
            members.iter().map(|&n| &copies[n].meta),
            &parse_opts,
        );
        records.push(rec);
    }
    for &n in &anonymous {
        let Some(mut rec) = raw.remove(&n) else {
            // Neither a Message-ID nor a readable raw message: nothing stable to key it by.
            continue;
        };
        let tenant = clients[copies[n].client].tenant_name();
        finish(
            &mut rec,
            tenant,
            std::iter::once(&copies[n].meta),
            &parse_opts,
        );
        records.push(rec);
    }

    let mut log_cursors: Vec<(usize, i64)> = Vec::new();
    for (i, deliveries) in logged {
        report
            .log_tenants
            .push(clients[i].tenant_name().to_string());
        report.log_deliveries += deliveries.len() as u64;
        report.messages_listed += deliveries.len() as u64;
        if let Some(top) = deliveries.iter().map(|d| d.received.timestamp()).max() {
            log_cursors.push((i, top));
        }
        let (recs, distinct, unkeyed, failed) =
            records_from_log(store, &clients[i], deliveries, &parse_opts, conc).await?;
        report.distinct_messages += distinct;
        report.log_unkeyed += unkeyed;
        // The progress line counts these fetches too (one per message new to the trace).
        let raw = recs.iter().filter(|(_, s)| *s == LogSource::Raw).count() as u64;
        report.raw_fetched += raw;
        fetched += raw;
        to_fetch += raw + failed.len() as u64;
        report.raw_failed.extend(failed);
        records.extend(recs.into_iter().map(|(r, _)| r));
    }

    // 6. Store, then move the cursors of the mailboxes that were listed.
    progress(snapshot(
        SyncPhase::Storing,
        &report,
        fetched,
        to_fetch,
        done,
    ));
    for chunk in records.chunks(STORE_BATCH) {
        for outcome in store.upsert_trace(chunk)? {
            match outcome {
                UpsertOutcome::Inserted(_) => report.inserted += 1,
                UpsertOutcome::Merged(_) => report.merged += 1,
                UpsertOutcome::Unchanged(_) => report.unchanged += 1,
            }
        }
        progress(snapshot(
            SyncPhase::Storing,
            &report,
            fetched,
            to_fetch,
            done,
        ));
    }
    let now = Utc::now().timestamp();
    for (i, mb, top) in newest {
        if let Some(top) = top
            && store.advance_sync_cursor(clients[i].tenant_name(), &mb, top, now)?
        {
            report.cursors_advanced += 1;
        }
    }
    for (i, mb, (folder, from, to)) in moved {
        let tenant = clients[i].tenant_name();
        let Some(to) = to else {
            store.drop_change_cursor(tenant, &mb, &folder, from.as_deref())?;
            continue;
        };
        if from.as_deref() != Some(to.as_str())
            && store.advance_change_cursor(tenant, &mb, &folder, from.as_deref(), &to, now)?
        {
            report.change_cursors_advanced += 1;
        }
    }
    for (i, top) in log_cursors {
        if store.advance_sync_cursor(clients[i].tenant_name(), LOG_CURSOR, top, now)? {
            report.cursors_advanced += 1;
        }
    }
    report.elapsed = started.elapsed();
    progress(snapshot(SyncPhase::Done, &report, fetched, to_fetch, done));
    Ok(report)
}

/// One mailbox to list.
struct MailboxJob {
    client: usize,
    mailbox: String,
    /// Oldest received time a full listing asks for (the mailbox's received-time cursor).
    since: DateTime<Utc>,
    /// `--since`: what a listing after an out-of-date change cursor asks for.
    oldest: DateTime<Utc>,
    /// Never listed before: Microsoft mailboxes also list Recoverable Items.
    first: bool,
    /// Its change cursors (folder → cursor).
    changes: HashMap<String, String>,
}

/// How a mailbox was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// Through its change cursors only.
    Changes,
    /// Listed in full (no cursors yet, or --full).
    Full,
    /// Listed in full because a change cursor was out of date.
    Expired,
}

/// (folder, cursor read, cursor reached; `None`: the folder is no longer followed).
type CursorMove = (String, Option<String>, Option<String>);

/// What listing one mailbox found.
struct MailboxListing {
    metas: Vec<MessageMeta>,
    how: Listing,
    removed: u64,
    /// (folder, cursor read, cursor reached; `None`: the folder is no longer followed), in
    /// the order they must be written: the folder tree's cursor last, so a folder it reports
    /// is followed (its cursor written) before the tree moves past it.
    cursors: Vec<CursorMove>,
}

/// Lists one mailbox: through its change cursors when it has them (Graph: one request for the
/// folder tree and one per folder followed when nothing changed; Gmail: one for its history),
/// else in full (recent messages since `job.since`), taking fresh change cursors first so
/// nothing delivered meanwhile is missed. Graph follows every folder of the mailbox's tree,
/// child folders and the user's own included: a folder new since the last round is read from
/// `--since` on (whatever was moved or delivered into it), a folder removed is dropped.
async fn list_mailbox(
    client: &ProviderClient,
    job: &MailboxJob,
    full: bool,
) -> Result<MailboxListing, Failure> {
    let mb = job.mailbox.as_str();
    let tree = client.mailbox_cursor();
    let mut how = Listing::Full;
    if !full && let Some((tree_key, tree_from)) = job.changes.get_key_value(tree) {
        let mut metas = Vec::new();
        let mut cursors = Vec::new();
        let mut removed = 0;
        how = Listing::Changes;
        // The folder tree first (Graph): folders added and removed since.
        let mut followed: Vec<&String> = job.changes.keys().filter(|f| *f != tree).collect();
        let mut added: Vec<String> = Vec::new();
        let mut tree_to: Option<String> = None;
        match client.folder_changes(mb, Some(tree_from)).await {
            None => followed = vec![tree_key],
            Some(Ok(round)) => {
                for gone in &round.removed {
                    if followed.contains(&gone) {
                        cursors.push((gone.clone(), job.changes.get(gone).cloned(), None));
                    }
                }
                followed.retain(|f| !round.removed.contains(f));
                added = round
                    .folders
                    .into_iter()
                    .filter(|f| !job.changes.contains_key(f))
                    .collect();
                added.dedup();
                tree_to = Some(round.cursor);
            }
            Some(Err(e)) if client.cursor_expired(&e) => how = Listing::Expired,
            Some(Err(e)) => return Err(e),
        }
        if how == Listing::Changes {
            for f in followed {
                let from = &job.changes[f];
                match client.changes_since(mb, f, from).await {
                    Ok(round) => {
                        metas.extend(round.metas);
                        removed += round.removed;
                        cursors.push((f.clone(), Some(from.clone()), Some(round.cursor)));
                    }
                    Err(e) if client.cursor_expired(&e) => {
                        how = Listing::Expired;
                        break;
                    }
                    // Removed after the tree round: no longer followed.
                    Err(e) if client.folder_gone(&e) => {
                        cursors.push((f.clone(), Some(from.clone()), None));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if how == Listing::Changes {
            // A folder new to us: everything in it since `--since` (moved or delivered there).
            for f in added {
                match client.start_changes(mb, &f, job.oldest).await {
                    Ok(round) => {
                        metas.extend(round.metas);
                        cursors.push((f, None, Some(round.cursor)));
                    }
                    Err(e) if client.folder_gone(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            if let Some(to) = tree_to {
                cursors.push((tree.to_string(), Some(tree_from.clone()), Some(to)));
            }
            return Ok(MailboxListing {
                metas,
                how,
                removed,
                cursors,
            });
        }
    }
    // A first delta round reads what arrived since shortly before now (the full listing
    // below covers the rest); its cursor then follows the folder from there.
    let recent = (Utc::now() - LOG_OVERLAP).max(job.since);
    let mut metas = Vec::new();
    let mut cursors = Vec::new();
    let (folders, tree_to) = match client.folder_changes(mb, None).await {
        None => (vec![tree.to_string()], None),
        Some(round) => {
            let round = round?;
            (round.folders, Some(round.cursor))
        }
    };
    // Cursors of an earlier clawback's well-known folder names: replaced by folder ids.
    for (f, from) in &job.changes {
        if crate::provider::graph::LEGACY_DELTA_FOLDERS.contains(&f.as_str()) {
            cursors.push((f.clone(), Some(from.clone()), None));
        }
    }
    for f in folders {
        let round = client.start_changes(mb, &f, recent).await?;
        metas.extend(round.metas);
        let from = job.changes.get(&f).cloned();
        cursors.push((f, from, Some(round.cursor)));
    }
    if let Some(to) = tree_to {
        cursors.push((tree.to_string(), job.changes.get(tree).cloned(), Some(to)));
    }
    // An out-of-date cursor may have missed anything: everything since `--since` again.
    let since = if how == Listing::Expired {
        job.oldest
    } else {
        job.since
    };
    metas.extend(client.list_recent_messages(mb, since, job.first).await?);
    // The first rounds and the listing overlap: one copy per id.
    let mut seen = std::collections::HashSet::new();
    metas.retain(|m| seen.insert(m.id.clone()));
    Ok(MailboxListing {
        metas,
        how,
        removed: 0,
        cursors,
    })
}

/// Records from a log, the distinct messages, the deliveries without a usable Message-ID (not
/// indexed; in the failures) and the failures (those, and raw MIME that could not be read).
type LogRecords = (Vec<(TraceRecord, LogSource)>, u64, u64, Vec<MailboxFailure>);

/// How a log delivery's message became a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogSource {
    /// Already in the trace: only its recipients are merged.
    Known,
    /// New, parsed from the raw MIME of one located copy.
    Raw,
    /// New, from the log's own fields (no copy could be located and read).
    Log,
}

/// One record per (tenant, Message-ID) of a tenant's log deliveries: every delivered mailbox
/// an envelope recipient, the earliest delivery the received time. A message new to the trace
/// is located by Message-ID in one of its recipients' mailboxes (up to [`RAW_CANDIDATES`]) and
/// its raw MIME parsed for URLs, attachment hashes, references and disposition headers; when
/// none can be read it is indexed from the log's fields alone (and said so). Returns the
/// records, the number of distinct messages and the raw failures.
async fn records_from_log(
    store: &mut Store,
    client: &ProviderClient,
    deliveries: Vec<LoggedDelivery>,
    opts: &IngestOptions,
    conc: usize,
) -> Result<LogRecords, SyncError> {
    let tenant = client.tenant_name();
    let mut groups: BTreeMap<String, Vec<LoggedDelivery>> = BTreeMap::new();
    let mut failed = Vec::new();
    for d in deliveries {
        match normalize_message_id(&d.internet_message_id) {
            Some(mid) => groups.entry(mid).or_default().push(d),
            // Nothing to key it by, and no provider id to read it with: said, not dropped.
            None => failed.push(MailboxFailure {
                tenant: tenant.to_string(),
                mailbox: Some(d.recipient),
                failure: Failure::new(
                    FailureReason::ProviderError,
                    None,
                    "no_message_id",
                    format!(
                        "log delivery of {:?} from {} at {} has no usable Message-ID ({:?}): not indexed",
                        d.subject, d.sender, d.received, d.internet_message_id
                    ),
                ),
            }),
        }
    }
    let unkeyed = failed.len() as u64;
    let distinct = groups.len() as u64;
    let mut new: Vec<String> = Vec::new();
    for mid in groups.keys() {
        if !store.trace_known(tenant, mid)? {
            new.push(mid.clone());
        }
    }
    let groups_ref = &groups;
    let mut fetched: HashMap<String, Result<TraceRecord, Failure>> =
        stream::iter(new.into_iter().map(|mid| async move {
            let mut recipients: Vec<&str> = groups_ref[&mid]
                .iter()
                .map(|d| d.recipient.as_str())
                .collect();
            recipients.sort_unstable();
            recipients.dedup();
            let r = raw_record(client, &mid, &recipients, opts).await;
            (mid, r)
        }))
        .buffer_unordered(conc)
        .collect()
        .await;
    let mut out = Vec::with_capacity(groups.len());
    for (mid, ds) in groups {
        let (mut rec, source) = match fetched.remove(&mid) {
            None => (
                TraceRecord {
                    message_id: mid.clone(),
                    ..TraceRecord::default()
                },
                LogSource::Known,
            ),
            Some(Ok(mut r)) => {
                r.message_id = mid.clone();
                r.synthetic_id = false;
                (r, LogSource::Raw)
            }
            Some(Err(failure)) => {
                failed.push(MailboxFailure {
                    tenant: tenant.to_string(),
                    mailbox: ds.first().map(|d| d.recipient.clone()),
                    failure,
                });
                let first = &ds[0];
                let rec = TraceRecord {
                    message_id: mid.clone(),
                    sender: first.sender.trim().to_ascii_lowercase(),
                    subject: first.subject.chars().take(2_000).collect(),
                    ..TraceRecord::default()
                };
                (rec, LogSource::Log)
            }
        };
        rec.tenant = tenant.to_string();
        rec.add_recipients(
            ds.iter().map(|d| d.recipient.as_str()),
            RecipientKind::Envelope,
        );
        if let Some(e) = ds.iter().map(|d| d.received.timestamp()).min() {
            rec.received = e;
        }
        out.push((rec, source));
    }
    Ok((out, distinct, unkeyed, failed))
}

/// The parsed raw MIME of a message, read from the first recipient mailbox where a copy can
/// be located (at most [`RAW_CANDIDATES`] tried), or the last reason none could.
async fn raw_record(
    client: &ProviderClient,
    mid: &str,
    recipients: &[&str],
    opts: &IngestOptions,
) -> Result<TraceRecord, Failure> {
    let mut last = Failure::new(
        FailureReason::ProviderError,
        None,
        "no_copy",
        format!("no copy of {mid} found in its recipients' mailboxes"),
    );
    for mailbox in recipients.iter().take(RAW_CANDIDATES) {
        let copy = match client.locate(mailbox, mid).await {
            Ok(copies) => copies.into_iter().find(|c| c.folder != Folder::Purged),
            Err(f) => {
                last = f;
                continue;
            }
        };
        let Some(copy) = copy else { continue };
        match client.fetch_raw(mailbox, &copy.id).await {
            Ok(bytes) => {
                return parse_message(&bytes, opts).map_err(|reason| {
                    Failure::new(
                        FailureReason::ProviderError,
                        None,
                        "unparsable",
                        format!("raw MIME of {} rejected: {reason}", copy.id),
                    )
                });
            }
            Err(f) => last = f,
        }
    }
    Err(last)
}

/// Moves the mailboxes refused as not authorized whose domain the provider confirms is not
/// granted (one domain probe per tenant, as `clawback doctor` does) from `failed` to
/// `ungranted`. A refusal in a granted domain, or one the probe cannot confirm, stays a failure.
async fn set_aside_ungranted(clients: &[ProviderClient], report: &mut SyncReport) {
    let refused = |f: &MailboxFailure| {
        f.mailbox.is_some() && f.failure.reason == FailureReason::NotAuthorized
    };
    for client in clients {
        let tenant = client.tenant_name();
        if !report
            .failed
            .iter()
            .any(|f| f.tenant == tenant && refused(f))
        {
            continue;
        }
        let Ok(domains) = client.domains_status().await else {
            continue;
        };
        let ungranted: BTreeSet<String> = domains
            .into_iter()
            .filter(|d| matches!(d.retract, DomainRetract::Missing { .. }))
            .map(|d| d.domain)
            .collect();
        let (aside, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut report.failed)
            .into_iter()
            .partition(|f| {
                f.tenant == tenant
                    && refused(f)
                    && f.mailbox
                        .as_deref()
                        .and_then(address_domain)
                        .is_some_and(|d| ungranted.contains(&d))
            });
        report.failed = keep;
        for f in aside {
            if let Some(d) = f.mailbox.as_deref().and_then(address_domain) {
                report.ungranted_domains.insert((f.tenant.clone(), d));
            }
            report.ungranted.push(f);
        }
    }
}

/// Tenant, one envelope recipient per mailbox holding a copy, the earliest received time the
/// provider reports, and the disposition headers the provider returned.
fn finish<'m>(
    rec: &mut TraceRecord,
    tenant: &str,
    metas: impl Iterator<Item = &'m MessageMeta>,
    opts: &IngestOptions,
) {
    rec.tenant = tenant.to_string();
    let mut earliest: Option<i64> = None;
    let mut mailboxes = Vec::new();
    for m in metas {
        mailboxes.push(m.mailbox.as_str());
        if let Some(d) = m.date {
            earliest = Some(earliest.map_or(d.timestamp(), |e| e.min(d.timestamp())));
        }
        if let Some((d, source)) = disposition_from_headers(
            m.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            opts,
        ) && rec
            .disposition
            .is_none_or(|old| d.severity() < old.severity())
        {
            rec.disposition = Some(d);
            rec.disposition_source = Some(source);
        }
    }
    rec.add_recipients(mailboxes, RecipientKind::Envelope);
    if let Some(e) = earliest {
        rec.received = e;
    }
}

/// A record from the provider's metadata alone (no URLs or attachment hashes), for a new
/// message whose raw MIME could not be had.
fn record_from_meta(m: &MessageMeta, mid: &str, opts: &IngestOptions) -> TraceRecord {
    let mut rec = TraceRecord {
        message_id: mid.to_string(),
        sender: m.from.trim().to_ascii_lowercase(),
        subject: m.subject.chars().take(2_000).collect(),
        received: m.date.map_or(opts.now, |d| d.timestamp()),
        ..TraceRecord::default()
    };
    rec.add_recipients(&m.to, RecipientKind::To);
    rec.add_recipients(&m.cc, RecipientKind::Cc);
    rec.in_reply_to = message_id_list(m.in_reply_to.iter().map(String::as_str));
    rec.references = message_id_list(m.references.iter().map(String::as_str));
    rec
}

/// Parses a `--since` value: a relative age (`30m`, `24h`, `7d`, `2w`) or a date
/// (`2026-03-01`, RFC 3339). `now` anchors relative ages.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    let bad =
        || format!("--since {text:?}: expected an age like 24h, 7d, 2w or a date like 2026-03-01");
    if let Some(unit) = t.chars().last()
        && unit.is_ascii_alphabetic()
        && let Ok(n) = t[..t.len() - 1].parse::<i64>()
    {
        if n < 0 {
            return Err(bad());
        }
        let secs = match unit {
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let d = n
            .checked_mul(secs)
            .and_then(chrono::Duration::try_seconds)
            .ok_or_else(bad)?;
        return now.checked_sub_signed(d).ok_or_else(bad);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        && let Some(dt) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(dt.and_utc());
    }
    Err(bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn since_ages_and_dates() {
        let now = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
        assert_eq!(
            parse_since("7d", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 3, 12, 0, 0).unwrap()
        );
        assert_eq!(
            parse_since("24h", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 9, 12, 0, 0).unwrap()
        );
        assert_eq!(
            parse_since("2026-03-01", now).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
        );
        for bad in ["", "7", "7y", "-1d", "yesterday", "99999999999999999d"] {
            let e = parse_since(bad, now).unwrap_err();
            assert!(e.contains("--since"), "{bad}: {e}");
        }
    }
}
