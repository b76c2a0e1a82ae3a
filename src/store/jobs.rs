//! Plans, jobs and job items (DESIGN §5). The durability rule lives here as SQL: an item is
//! committed `in_flight` before its provider call and its outcome is committed right after, so a
//! crash leaves every item either settled or `in_flight` (to be reconciled by locating it again).

use super::{Store, StoreError};
use crate::model::{FailureReason, Folder, ItemOutcome, RetractAction, Role, Trigger};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE plan (
    id          TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    json        TEXT NOT NULL
);
CREATE TABLE job (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    plan_id     TEXT REFERENCES plan(id),
    parent_job  INTEGER REFERENCES job(id),
    trigger     TEXT NOT NULL,
    action      TEXT NOT NULL,
    state       TEXT NOT NULL,
    operator    TEXT NOT NULL,
    role        TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    dry_run     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    finished_at INTEGER,
    detected_at INTEGER
);
CREATE TABLE job_item (
    id               INTEGER PRIMARY KEY,
    job_id           INTEGER NOT NULL REFERENCES job(id),
    tenant           TEXT NOT NULL,
    mailbox          TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    copy_id          TEXT,
    folder           TEXT NOT NULL,
    read             INTEGER NOT NULL DEFAULT 0,
    depth            INTEGER NOT NULL DEFAULT 0,
    action           TEXT NOT NULL,
    effective_action TEXT NOT NULL,
    note             TEXT,
    state            TEXT NOT NULL,
    reason           TEXT,
    provider_code    TEXT,
    detail           TEXT,
    new_id           TEXT,
    to_folder        TEXT,
    delivered_at     INTEGER,
    finished_at      INTEGER,
    source_item      INTEGER REFERENCES job_item(id)
);
CREATE INDEX job_item_job ON job_item(job_id, state);
CREATE INDEX job_item_finished ON job_item(finished_at);
CREATE INDEX job_item_message ON job_item(message_id, mailbox);
"#;

/// Migration 7: the job lease (one process runs a job at a time, DESIGN §5), indexes for the
/// copy claims and spent plans, and the retired `on_hold` reason (a hold never refuses a
/// permanent delete: PROVIDER-APIS.md §F.3; the lab's old 403 was an access denial).
pub(crate) const LEASE_SCHEMA: &str = r#"
ALTER TABLE job ADD COLUMN lease_owner TEXT;
ALTER TABLE job ADD COLUMN lease_pid INTEGER;
ALTER TABLE job ADD COLUMN lease_host TEXT;
ALTER TABLE job ADD COLUMN lease_heartbeat INTEGER;
CREATE INDEX job_item_source ON job_item(source_item);
CREATE INDEX job_plan ON job(plan_id);
UPDATE job_item SET reason = 'not_authorized' WHERE reason = 'on_hold';
"#;

/// The audit head written right after a job's run ended (`SEQ sha256:HEX`), shown with the
/// job so an operator can keep it outside the store.
pub(crate) const AUDIT_HEAD_SCHEMA: &str = r#"
ALTER TABLE job ADD COLUMN audit_head TEXT;
"#;

/// Migration 11: the copy a restore request was last sent for (id, and Gmail's historyId),
/// recorded right before sending: after a lost answer, a later run tells "did not land" (same
/// copy, unchanged) from "moved since" (new id or version). In-flight items from before it are
/// taken to have been sent for their recorded copy id.
pub(crate) const SENT_SCHEMA: &str = r#"
ALTER TABLE job_item ADD COLUMN sent_id TEXT;
ALTER TABLE job_item ADD COLUMN sent_version TEXT;
UPDATE job_item SET sent_id = copy_id WHERE state = 'in_flight' AND copy_id IS NOT NULL AND copy_id != '';
"#;

/// A process that may hold job leases: a random owner token per process, its pid and host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub owner: String,
    pub pid: u32,
    pub host: String,
}

impl LeaseHolder {
    /// This process (a fresh owner token each call: one per engine).
    pub fn this_process() -> LeaseHolder {
        LeaseHolder {
            owner: uuid::Uuid::new_v4().to_string(),
            pid: std::process::id(),
            host: host_name(),
        }
    }
}

/// The machine's name (`/proc/sys/kernel/hostname`, `$HOSTNAME`, or "localhost").
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".into())
}

/// Whether a process of this host is alive, when that can be told (`None`: no `/proc`).
fn pid_alive(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self/stat").exists() {
        return None;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": a zombie (`Z`) or dead (`X`) process holds nothing.
        Ok(stat) => Some(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|state| !matches!(state, "Z" | "X")),
        ),
        Err(_) => Some(false),
    }
}

/// A job's lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLease {
    pub holder: LeaseHolder,
    pub heartbeat: DateTime<Utc>,
}

impl JobLease {
    /// Whether the holder still counts: its heartbeat is younger than `stale_after` and, on
    /// this host, its process is alive.
    pub fn is_live(&self, here: &str, stale_after: chrono::Duration) -> bool {
        if Utc::now().signed_duration_since(self.heartbeat) > stale_after {
            return false;
        }
        if self.holder.host == here {
            return pid_alive(self.holder.pid).unwrap_or(true);
        }
        true
    }
}

impl std::fmt::Display for JobLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ago = Utc::now()
            .signed_duration_since(self.heartbeat)
            .num_seconds()
            .max(0);
        write!(
            f,
            "pid {} on {} (heartbeat {ago}s ago)",
            self.holder.pid, self.holder.host
        )
    }
}

/// What taking a lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseTaken {
    /// Nobody held it (or this process did already).
    Free,
    /// A dead or silent holder's lease was taken over.
    TakenOver(JobLease),
}

/// Who holds a copy: a job that will act on it, or has retracted it and not been restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyClaim {
    pub job: i64,
    pub state: ItemState,
    /// The action that job performs (or performed) on the copy.
    pub action: RetractAction,
}

impl CopyClaim {
    /// What a plan or job item says about the claim.
    pub fn detail(&self) -> String {
        match self.state {
            ItemState::Succeeded => format!(
                "already retracted ({}) by job {} and not restored; not acted on again (restore that job first to act anew)",
                self.action.as_str(),
                self.job
            ),
            _ => format!(
                "held by job {} ({}, {}); not acted on by this job",
                self.job,
                self.action.as_str(),
                self.state.as_str()
            ),
        }
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Retract,
    Restore,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Retract => "retract",
            JobKind::Restore => "restore",
        }
    }
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Created or running (after a crash: to be resumed).
    Running,
    /// Stopped by the operator; pending items stay pending (resumable).
    Cancelled,
    /// Every item settled.
    Finished,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Cancelled => "cancelled",
            JobState::Finished => "finished",
        }
    }
    pub(super) fn parse(s: &str) -> JobState {
        match s {
            "cancelled" => JobState::Cancelled,
            "finished" => JobState::Finished,
            _ => JobState::Running,
        }
    }
}

/// An item's state: `pending → in_flight → succeeded | failed | skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemState {
    Pending,
    InFlight,
    Succeeded,
    Failed,
    Skipped,
}

impl ItemState {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::InFlight => "in_flight",
            ItemState::Succeeded => "succeeded",
            ItemState::Failed => "failed",
            ItemState::Skipped => "skipped",
        }
    }
    pub(super) fn parse(s: &str) -> ItemState {
        match s {
            "in_flight" => ItemState::InFlight,
            "succeeded" => ItemState::Succeeded,
            "failed" => ItemState::Failed,
            "skipped" => ItemState::Skipped,
            _ => ItemState::Pending,
        }
    }
    /// Settled: no more work.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ItemState::Succeeded | ItemState::Failed | ItemState::Skipped
        )
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: i64,
    pub kind: JobKind,
    pub plan_id: Option<String>,
    pub parent_job: Option<i64>,
    pub trigger: Trigger,
    pub action: RetractAction,
    pub state: JobState,
    pub operator: String,
    pub role: Role,
    pub reason: String,
    pub dry_run: bool,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub detected_at: Option<DateTime<Utc>>,
    /// The audit head after the job's last run ended (`SEQ sha256:HEX`).
    pub audit_head: Option<String>,
}

/// A new job's header.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: JobKind,
    pub plan_id: Option<String>,
    pub parent_job: Option<i64>,
    pub trigger: Trigger,
    pub action: RetractAction,
    pub operator: String,
    pub role: Role,
    pub reason: String,
    pub dry_run: bool,
    pub detected_at: Option<DateTime<Utc>>,
}

/// One item's outcome, for [`Store::finish_items`].
#[derive(Debug, Clone)]
pub enum ItemFinish<'a> {
    /// Acted on: where the copy was (and whether read) and where it went.
    Succeeded {
        item: i64,
        from: &'a Folder,
        read: bool,
        new_id: Option<&'a str>,
        to: &'a Folder,
        detail: &'a str,
    },
    /// Not acted on, and why.
    Failed {
        item: i64,
        reason: FailureReason,
        provider_code: &'a str,
        detail: &'a str,
    },
}

/// A job item as stored (and, without `id`/`job_id`, as created).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    pub id: i64,
    pub job_id: i64,
    pub tenant: String,
    pub mailbox: String,
    pub message_id: String,
    /// Provider id when planned (or, for restore items, the id after the retraction).
    pub copy_id: Option<String>,
    /// Where the copy was before the action: restore puts it back here.
    pub folder: Folder,
    pub read: bool,
    pub depth: u8,
    pub action: RetractAction,
    pub effective_action: RetractAction,
    pub note: Option<String>,
    pub state: ItemState,
    pub reason: Option<FailureReason>,
    pub provider_code: Option<String>,
    pub detail: Option<String>,
    /// Provider id after the action (Graph move returns a new one).
    pub new_id: Option<String>,
    pub to_folder: Option<Folder>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// For restore items: the retract item being undone.
    pub source_item: Option<i64>,
}

impl ItemRow {
    /// A pending item to insert (`id` and `job_id` are assigned by [`Store::create_job`]).
    pub fn pending(
        tenant: &str,
        mailbox: &str,
        message_id: &str,
        folder: Folder,
        action: RetractAction,
        effective_action: RetractAction,
    ) -> ItemRow {
        ItemRow {
            id: 0,
            job_id: 0,
            tenant: tenant.to_string(),
            mailbox: mailbox.to_string(),
            message_id: message_id.to_string(),
            copy_id: None,
            folder,
            read: false,
            depth: 0,
            action,
            effective_action,
            note: None,
            state: ItemState::Pending,
            reason: None,
            provider_code: None,
            detail: None,
            new_id: None,
            to_folder: None,
            delivered_at: None,
            finished_at: None,
            source_item: None,
        }
    }
}

/// Item counts of one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemCounts {
    pub pending: u64,
    pub in_flight: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl ItemCounts {
    pub fn total(&self) -> u64 {
        self.pending + self.in_flight + self.succeeded + self.failed + self.skipped
    }
    /// Items still to do (pending or in flight).
    pub fn remaining(&self) -> u64 {
        self.pending + self.in_flight
    }
}

pub(super) fn folder_text(f: &Folder) -> String {
    serde_json::to_string(f).unwrap_or_else(|_| "\"inbox\"".into())
}

pub(super) fn folder_parse(s: &str) -> Folder {
    serde_json::from_str(s).unwrap_or_else(|_| Folder::Other(s.to_string()))
}

pub(super) fn ts(t: Option<i64>) -> Option<DateTime<Utc>> {
    t.and_then(|s| DateTime::from_timestamp(s, 0))
}

fn word<T: FromStr>(s: String, col: usize) -> rusqlite::Result<T> {
    T::from_str(&s).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            col,
            rusqlite::types::Type::Text,
            format!("unknown word {s:?}").into(),
        )
    })
}

pub(super) const JOB_COLUMNS: &str = "id, kind, plan_id, parent_job, trigger, action, state, operator, role, \
     reason, dry_run, created_at, finished_at, detected_at, audit_head";

fn row_to_job(r: &Row<'_>) -> rusqlite::Result<JobRow> {
    let kind: String = r.get(1)?;
    Ok(JobRow {
        id: r.get(0)?,
        kind: if kind == "restore" {
            JobKind::Restore
        } else {
            JobKind::Retract
        },
        plan_id: r.get(2)?,
        parent_job: r.get(3)?,
        trigger: word(r.get(4)?, 4)?,
        action: word(r.get(5)?, 5)?,
        state: JobState::parse(&r.get::<_, String>(6)?),
        operator: r.get(7)?,
        role: word(r.get(8)?, 8)?,
        reason: r.get(9)?,
        dry_run: r.get::<_, i64>(10)? != 0,
        created_at: ts(Some(r.get(11)?)).unwrap_or_default(),
        finished_at: ts(r.get(12)?),
        detected_at: ts(r.get(13)?),
        audit_head: r.get(14)?,
    })
}

pub(super) const ITEM_COLUMNS: &str = "id, job_id, tenant, mailbox, message_id, copy_id, folder, read, depth, \
     action, effective_action, note, state, reason, provider_code, detail, new_id, to_folder, \
     delivered_at, finished_at, source_item";

pub(super) fn row_to_item(r: &Row<'_>) -> rusqlite::Result<ItemRow> {
    let reason: Option<String> = r.get(13)?;
    let to_folder: Option<String> = r.get(17)?;
    Ok(ItemRow {
        id: r.get(0)?,
        job_id: r.get(1)?,
        tenant: r.get(2)?,
        mailbox: r.get(3)?,
        message_id: r.get(4)?,
        copy_id: r.get(5)?,
        folder: folder_parse(&r.get::<_, String>(6)?),
        read: r.get::<_, i64>(7)? != 0,
        depth: u8::try_from(r.get::<_, i64>(8)?).unwrap_or(u8::MAX),
        action: word(r.get(9)?, 9)?,
        effective_action: word(r.get(10)?, 10)?,
        note: r.get(11)?,
        state: ItemState::parse(&r.get::<_, String>(12)?),
        reason: match reason {
            Some(s) => Some(word(s, 13)?),
            None => None,
        },
        provider_code: r.get(14)?,
        detail: r.get(15)?,
        new_id: r.get(16)?,
        to_folder: to_folder.as_deref().map(folder_parse),
        delivered_at: ts(r.get(18)?),
        finished_at: ts(r.get(19)?),
        source_item: r.get(20)?,
    })
}

/// `lease_owner, lease_pid, lease_host, lease_heartbeat` as stored.
type LeaseColumns = (Option<String>, Option<i64>, Option<String>, Option<i64>);

fn lease_of(conn: &rusqlite::Connection, job: i64) -> Result<Option<JobLease>, StoreError> {
    let row: Option<LeaseColumns> = conn
        .prepare_cached(
            "SELECT lease_owner, lease_pid, lease_host, lease_heartbeat FROM job WHERE id = ?1",
        )?
        .query_row([job], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    Ok(match row {
        Some((Some(owner), pid, host, beat)) => Some(JobLease {
            holder: LeaseHolder {
                owner,
                pid: pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
                host: host.unwrap_or_default(),
            },
            heartbeat: ts(beat).unwrap_or_default(),
        }),
        _ => None,
    })
}

/// The live claims on the copies of one message against a new retract job (`except` = that
/// job's id), by (tenant, mailbox): items of other retract jobs that are pending or in flight,
/// or that succeeded and were not restored since. One query per message, not per copy.
/// The claim on one copy of a message against a new job (the copy's items in other live
/// retract jobs, except job `except`), read through the `job_item_message (message_id,
/// mailbox)` index: a job planned in many small groups reads only its copies' rows, not every
/// item of the message (its own and earlier jobs') once per group.
fn claim_on_copy(
    conn: &rusqlite::Connection,
    message_id: &str,
    (tenant, mailbox): (&str, &str),
    except: i64,
) -> Result<Option<CopyClaim>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT i.tenant, i.mailbox, i.job_id, i.state, i.effective_action FROM job_item i \
         JOIN job j ON j.id = i.job_id \
         WHERE i.message_id = ?1 AND i.mailbox = ?3 AND i.job_id != ?2 \
         AND j.kind = 'retract' AND j.dry_run = 0 \
         AND (i.state IN ('pending', 'in_flight') \
              OR (i.state = 'succeeded' \
                  AND NOT EXISTS (SELECT 1 FROM job_item r WHERE r.source_item = i.id \
                                  AND r.state = 'succeeded'))) \
         ORDER BY i.id",
    )?;
    let mut found = claims_from(stmt.query(params![message_id, except, mailbox])?)?;
    Ok(found.remove(&(tenant.to_string(), mailbox.to_string())))
}

/// A job's items per (tenant, message): see [`Store::message_outcomes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageOutcome {
    pub tenant: String,
    pub message_id: String,
    pub succeeded: u64,
    /// Items neither succeeded nor skipped (failed, pending, in flight).
    pub unsettled_or_failed: u64,
}

const MESSAGE_OUTCOMES_SQLITE: &str = "SELECT tenant, message_id, \
     sum(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END), \
     sum(CASE WHEN state IN ('succeeded', 'skipped') THEN 0 ELSE 1 END) \
     FROM job_item WHERE job_id = ?1 AND NOT (state = 'skipped' AND tenant = '') \
     GROUP BY tenant, message_id ORDER BY tenant, message_id";

fn claims_from(
    mut rows: rusqlite::Rows<'_>,
) -> Result<BTreeMap<(String, String), CopyClaim>, StoreError> {
    let mut out: BTreeMap<(String, String), CopyClaim> = BTreeMap::new();
    while let Some(r) = rows.next()? {
        let (tenant, mailbox, job, state, action) = (
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        );
        let claim = CopyClaim {
            job,
            state: ItemState::parse(&state),
            action: word(action, 4)?,
        };
        keep_claim(&mut out, (tenant, mailbox), claim);
    }
    Ok(out)
}

/// Adds a claim on a copy (rows in id order): a job that will act (pending, in flight) is
/// named before one that has acted.
pub(super) fn keep_claim(
    out: &mut BTreeMap<(String, String), CopyClaim>,
    copy: (String, String),
    claim: CopyClaim,
) {
    match out.entry(copy) {
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(claim);
        }
        std::collections::btree_map::Entry::Occupied(mut o) => {
            if o.get().state == ItemState::Succeeded || claim.state != ItemState::Succeeded {
                o.insert(claim);
            }
        }
    }
}

/// The restore item that already undoes (or is undoing) retract item `source`, if any.
fn restore_claim_on(
    conn: &rusqlite::Connection,
    source: i64,
) -> Result<Option<CopyClaim>, StoreError> {
    let row: Option<(i64, String, String)> = conn
        .prepare_cached(
            "SELECT job_id, state, effective_action FROM job_item WHERE source_item = ?1 \
             AND state IN ('pending', 'in_flight', 'succeeded') ORDER BY id LIMIT 1",
        )?
        .query_row([source], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(match row {
        Some((job, state, action)) => Some(CopyClaim {
            job,
            state: ItemState::parse(&state),
            action: word(action, 2)?,
        }),
        None => None,
    })
}

/// A pending item whose copy (or, for a restore, whose retraction) another job holds: stored
/// `skipped` with reason `in_another_job`, saying which job.
pub(super) fn skip_claimed(it: &mut ItemRow, kind: JobKind, claim: &CopyClaim) {
    it.state = ItemState::Skipped;
    it.reason = Some(FailureReason::InAnotherJob);
    it.detail = Some(match kind {
        JobKind::Retract => claim.detail(),
        JobKind::Restore => format!(
            "restored by job {} ({}); not restored twice",
            claim.job,
            claim.state.as_str()
        ),
    });
    it.finished_at = Some(Utc::now());
}

/// Inserts a job's items (see [`Store::create_job`] for the claims): returns each item's id and
/// the state it was stored in (a retract item whose copy another job holds is `skipped`).
fn insert_items(
    tx: &rusqlite::Transaction<'_>,
    job_id: i64,
    kind: JobKind,
    dry_run: bool,
    items: &[ItemRow],
) -> Result<Vec<(i64, ItemState)>, StoreError> {
    let mut out = Vec::with_capacity(items.len());
    let mut stmt = tx.prepare(
        "INSERT INTO job_item (job_id, tenant, mailbox, message_id, copy_id, folder, read, \
                 depth, action, effective_action, note, state, reason, provider_code, detail, \
                 delivered_at, finished_at, source_item, to_folder) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18, ?19)",
    )?;
    for it in items {
        let mut it = std::borrow::Cow::Borrowed(it);
        if it.state == ItemState::Pending && !dry_run {
            let claim = match kind {
                JobKind::Retract => {
                    claim_on_copy(tx, &it.message_id, (&it.tenant, &it.mailbox), job_id)?
                }
                JobKind::Restore => match it.source_item {
                    Some(source) => restore_claim_on(tx, source)?,
                    None => None,
                },
            };
            if let Some(claim) = claim {
                skip_claimed(it.to_mut(), kind, &claim);
            }
        }
        stmt.execute(params![
            job_id,
            it.tenant,
            it.mailbox,
            it.message_id,
            it.copy_id,
            folder_text(&it.folder),
            it.read as i64,
            it.depth as i64,
            it.action.as_str(),
            it.effective_action.as_str(),
            it.note,
            it.state.as_str(),
            it.reason.map(|r| r.as_str()),
            it.provider_code,
            it.detail,
            it.delivered_at.map(|t| t.timestamp()),
            it.finished_at.map(|t| t.timestamp()),
            it.source_item,
            // A restore item keeps where the retraction put the copy: it acts only there.
            it.to_folder.as_ref().map(folder_text),
        ])?;
        out.push((tx.last_insert_rowid(), it.state));
    }
    Ok(out)
}

impl Store {
    /// Keeps a plan (its JSON and digest) so a job can name it.
    pub fn insert_plan(
        &mut self,
        id: &str,
        digest: &str,
        created_at: DateTime<Utc>,
        json: &str,
    ) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::insert_plan(pg, id, digest, created_at, json);
        }
        self.conn()?.execute(
            "INSERT OR IGNORE INTO plan (id, digest, created_at, json) VALUES (?1, ?2, ?3, ?4)",
            params![id, digest, created_at.timestamp(), json],
        )?;
        Ok(())
    }

    /// Replaces a stored plan's digest and JSON (a plan made while its job ran: stored
    /// provisional when the job was made, complete when planning ended).
    pub fn update_plan(&mut self, id: &str, digest: &str, json: &str) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::update_plan(pg, id, digest, json);
        }
        self.conn()?.execute(
            "UPDATE plan SET digest = ?2, json = ?3 WHERE id = ?1",
            params![id, digest, json],
        )?;
        Ok(())
    }

    /// The digest of a stored plan.
    pub fn plan_digest(&self, id: &str) -> Result<Option<String>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::plan_digest(pg, id);
        }
        Ok(self
            .conn()?
            .query_row("SELECT digest FROM plan WHERE id = ?1", [id], |r| r.get(0))
            .optional()?)
    }

    /// Adds items to an existing job, with the claims of [`Store::create_job`], in one
    /// transaction under the store's write lock; returns each item's id and stored state.
    pub fn append_job_items(
        &mut self,
        job: i64,
        items: &[ItemRow],
    ) -> Result<Vec<(i64, ItemState)>, StoreError> {
        if let super::Db::Postgres(pg) = &mut self.db {
            return super::pg::jobs::append_job_items(pg, job, items);
        }
        let tx = self
            .conn_mut()?
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (kind, dry_run): (String, bool) =
            tx.query_row("SELECT kind, dry_run FROM job WHERE id = ?1", [job], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        let kind = if kind == JobKind::Restore.as_str() {
            JobKind::Restore
        } else {
            JobKind::Retract
        };
        let out = insert_items(&tx, job, kind, dry_run, items)?;
        tx.commit()?;
        Ok(out)
    }

    /// The JSON of a stored plan.
    pub fn plan_json(&self, id: &str) -> Result<Option<String>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::plan_json(pg, id);
        }
        Ok(self
            .conn()?
            .query_row("SELECT json FROM plan WHERE id = ?1", [id], |r| r.get(0))
            .optional()?)
    }

    /// When a stored plan was made.
    pub fn plan_created_at(&self, id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::plan_created_at(pg, id);
        }
        let secs: Option<i64> = self
            .conn()?
            .query_row("SELECT created_at FROM plan WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(secs.and_then(|s| DateTime::from_timestamp(s, 0)))
    }

    /// Creates a job and its items in one transaction; returns the job id.
    ///
    /// Under the store's write lock (so another process creating a job at the same moment
    /// waits and then sees this one):
    /// - a plan is spent once: a second retract job from the same plan is refused
    ///   ([`StoreError::PlanSpent`]); retries and restores name the plan as their parent's;
    /// - a copy is claimed by one job at a time: a pending retract item whose copy another job
    ///   holds ([`Store::copy_claim`]) is stored `skipped` with reason `in_another_job`; a
    ///   restore item whose retraction is already being (or was) restored likewise.
    pub fn create_job(&mut self, job: &NewJob, items: &[ItemRow]) -> Result<i64, StoreError> {
        self.create_job_audited(job, items, |_| Vec::new())
            .map(|(id, _)| id)
    }

    /// [`Store::create_job`], appending the audit entries `records(job id)` gives (what the
    /// new job means: `plan_applied`, an automation's `auto_retract`) in the same
    /// transaction: a crash leaves no job, or the job with its entries.
    pub fn create_job_audited(
        &mut self,
        job: &NewJob,
        items: &[ItemRow],
        records: impl FnOnce(i64) -> Vec<crate::store::chain::AuditRecord>,
    ) -> Result<(i64, Vec<crate::store::chain::AuditEntry>), StoreError> {
        let (id, entries) = self.create_job_in(job, items, records)?;
        for entry in &entries {
            self.head_appended(entry)?;
        }
        Ok((id, entries))
    }

    fn create_job_in(
        &mut self,
        job: &NewJob,
        items: &[ItemRow],
        records: impl FnOnce(i64) -> Vec<crate::store::chain::AuditRecord>,
    ) -> Result<(i64, Vec<crate::store::chain::AuditEntry>), StoreError> {
        if let super::Db::Postgres(pg) = &mut self.db {
            return super::pg::jobs::create_job(pg, job, items, records);
        }
        let tx = self
            .conn_mut()?
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if job.kind == JobKind::Retract
            && job.parent_job.is_none()
            && let Some(plan) = &job.plan_id
        {
            let spent: Option<i64> = tx
                .query_row(
                    "SELECT id FROM job WHERE plan_id = ?1 AND kind = 'retract' \
                     AND parent_job IS NULL ORDER BY id LIMIT 1",
                    [plan],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(existing) = spent {
                return Err(StoreError::PlanSpent {
                    plan: plan.clone(),
                    job: existing,
                });
            }
        }
        tx.execute(
            "INSERT INTO job (kind, plan_id, parent_job, trigger, action, state, operator, role, \
             reason, dry_run, created_at, detected_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                job.kind.as_str(),
                job.plan_id,
                job.parent_job,
                job.trigger.as_str(),
                job.action.as_str(),
                job.operator,
                job.role.as_str(),
                job.reason,
                job.dry_run as i64,
                Utc::now().timestamp(),
                job.detected_at.map(|t| t.timestamp()),
            ],
        )?;
        let job_id = tx.last_insert_rowid();
        insert_items(&tx, job_id, job.kind, job.dry_run, items)?;
        let entries = records(job_id)
            .into_iter()
            .map(|r| super::audit::sqlite_append_in(&tx, r))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit()?;
        Ok((job_id, entries))
    }

    /// Who holds a copy (tenant, mailbox) of a message against a new retract job: an item of
    /// another retract job that is pending or in flight, or that succeeded and has not been
    /// restored since (a copy is retracted by one job at a time; to act on it anew, restore
    /// that job first). With `except`, against that job's own items (a job planned while it
    /// runs).
    pub fn copy_claim(
        &self,
        message_id: &str,
        copy: (&str, &str),
        except: Option<i64>,
    ) -> Result<Option<CopyClaim>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::copy_claim(pg, message_id, copy, except);
        }
        claim_on_copy(self.conn()?, message_id, copy, except.unwrap_or(0))
    }

    /// Takes the lease of `job` for `me`: free, already ours, or held by a holder that is no
    /// longer live (see [`JobLease::is_live`]) — then it is taken over. Otherwise the current
    /// holder is returned as `Err`.
    pub fn acquire_job_lease(
        &self,
        job: i64,
        me: &LeaseHolder,
        stale_after: chrono::Duration,
    ) -> Result<Result<LeaseTaken, JobLease>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::acquire_job_lease(pg, job, me, stale_after);
        }
        let tx = self.conn()?.unchecked_transaction()?;
        // Take the write lock first, so the read below cannot go stale before the update.
        tx.execute("UPDATE job SET id = id WHERE id = ?1", [job])?;
        let current = lease_of(&tx, job)?;
        let taken = match current {
            None => LeaseTaken::Free,
            Some(l) if l.holder.owner == me.owner => LeaseTaken::Free,
            Some(l) if !l.is_live(&me.host, stale_after) => LeaseTaken::TakenOver(l),
            Some(l) => return Ok(Err(l)),
        };
        tx.execute(
            "UPDATE job SET lease_owner = ?2, lease_pid = ?3, lease_host = ?4, \
             lease_heartbeat = ?5 WHERE id = ?1",
            params![job, me.owner, me.pid, me.host, Utc::now().timestamp()],
        )?;
        tx.commit()?;
        Ok(Ok(taken))
    }

    /// Renews the lease; `false` when this holder no longer has it (taken over).
    pub fn heartbeat_job_lease(&self, job: i64, owner: &str) -> Result<bool, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::heartbeat_job_lease(pg, job, owner);
        }
        let n = self.conn()?.execute(
            "UPDATE job SET lease_heartbeat = ?3 WHERE id = ?1 AND lease_owner = ?2",
            params![job, owner, Utc::now().timestamp()],
        )?;
        Ok(n == 1)
    }

    /// Gives the lease up (only if this holder has it).
    pub fn release_job_lease(&self, job: i64, owner: &str) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::release_job_lease(pg, job, owner);
        }
        self.conn()?.execute(
            "UPDATE job SET lease_owner = NULL, lease_pid = NULL, lease_host = NULL, \
             lease_heartbeat = NULL WHERE id = ?1 AND lease_owner = ?2",
            params![job, owner],
        )?;
        Ok(())
    }

    /// The lease of a job, if one is recorded (live or not).
    pub fn job_lease(&self, job: i64) -> Result<Option<JobLease>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::job_lease(pg, job);
        }
        lease_of(self.conn()?, job)
    }

    /// A job's state and whether `owner` still holds its lease: what a running job checks
    /// before every batch (a cancel or a takeover by another process stops it).
    pub fn job_run_check(&self, job: i64, owner: &str) -> Result<(JobState, bool), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::job_run_check(pg, job, owner);
        }
        let (state, lease): (String, Option<String>) = self
            .conn()?
            .prepare_cached("SELECT state, lease_owner FROM job WHERE id = ?1")?
            .query_row([job], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((JobState::parse(&state), lease.as_deref() == Some(owner)))
    }

    /// Records a cancel: only a running job can be cancelled. Returns the state the job was
    /// in (`Running` when this call cancelled it).
    pub fn request_cancel(&self, job: i64) -> Result<Option<JobState>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::request_cancel(pg, job);
        }
        let tx = self.conn()?.unchecked_transaction()?;
        let n = tx.execute(
            "UPDATE job SET state = 'cancelled' WHERE id = ?1 AND state = 'running'",
            [job],
        )?;
        let out = if n == 1 {
            Some(JobState::Running)
        } else {
            tx.query_row("SELECT state FROM job WHERE id = ?1", [job], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .map(|s| JobState::parse(&s))
        };
        tx.commit()?;
        Ok(out)
    }

    /// The retract job made from a plan, if the plan was applied (a plan is spent once).
    pub fn job_of_plan(&self, plan_id: &str) -> Result<Option<i64>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::job_of_plan(pg, plan_id);
        }
        Ok(self
            .conn()?
            .query_row(
                "SELECT id FROM job WHERE plan_id = ?1 AND kind = 'retract' \
                 AND parent_job IS NULL ORDER BY id LIMIT 1",
                [plan_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The restore jobs made of a retract job (its undos), oldest first, with their state.
    pub fn restore_jobs_of(&self, job: i64) -> Result<Vec<(i64, JobState)>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::restore_jobs_of(pg, job);
        }
        let mut stmt = self.conn()?.prepare_cached(
            "SELECT id, state FROM job WHERE parent_job = ?1 AND kind = 'restore' ORDER BY id",
        )?;
        let rows = stmt
            .query_map([job], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    JobState::parse(&r.get::<_, String>(1)?),
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// One job.
    pub fn job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::job(pg, id);
        }
        Ok(self
            .conn()?
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM job WHERE id = ?1"),
                [id],
                row_to_job,
            )
            .optional()?)
    }

    /// The newest jobs first.
    pub fn jobs(&self, limit: usize) -> Result<Vec<JobRow>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::jobs(pg, limit);
        }
        let mut stmt = self.conn()?.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM job ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = stmt
            .query_map([limit as i64], row_to_job)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Jobs left `running` (by a crash or a kill): to resume.
    pub fn unfinished_jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::unfinished_jobs(pg);
        }
        let mut stmt = self.conn()?.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM job WHERE state = 'running' ORDER BY id"
        ))?;
        let rows = stmt
            .query_map([], row_to_job)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Items of a job (optionally only those in `state`), in id order.
    pub fn job_items(
        &self,
        job: i64,
        state: Option<ItemState>,
    ) -> Result<Vec<ItemRow>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::job_items(pg, job, state);
        }
        let mut stmt = self.conn()?.prepare_cached(&format!(
            "SELECT {ITEM_COLUMNS} FROM job_item WHERE job_id = ?1 AND (?2 IS NULL OR state = ?2) \
             ORDER BY id"
        ))?;
        let rows = stmt
            .query_map(params![job, state.map(|s| s.as_str())], row_to_item)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Counts per state of a job's items.
    pub fn item_counts(&self, job: i64) -> Result<ItemCounts, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::item_counts(pg, job);
        }
        let mut stmt = self.conn()?.prepare_cached(
            "SELECT state, count(*) FROM job_item WHERE job_id = ?1 GROUP BY state",
        )?;
        let mut c = ItemCounts::default();
        for row in stmt.query_map([job], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (state, n) = row?;
            let n = n as u64;
            match ItemState::parse(&state) {
                ItemState::Pending => c.pending += n,
                ItemState::InFlight => c.in_flight += n,
                ItemState::Succeeded => c.succeeded += n,
                ItemState::Failed => c.failed += n,
                ItemState::Skipped => c.skipped += n,
            }
        }
        Ok(c)
    }

    /// Per (tenant, message) of a job: its items that succeeded, and those neither succeeded
    /// nor skipped. Lines skipped outside every tenant (tenant empty) are left out. One
    /// aggregate instead of every item read back (the trace's retraction state at a job's end).
    pub fn message_outcomes(&self, job: i64) -> Result<Vec<MessageOutcome>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::message_outcomes(pg, job);
        }
        let mut stmt = self.conn()?.prepare_cached(MESSAGE_OUTCOMES_SQLITE)?;
        let rows = stmt.query_map([job], |r| {
            Ok(MessageOutcome {
                tenant: r.get(0)?,
                message_id: r.get(1)?,
                succeeded: r.get::<_, i64>(2)?.max(0) as u64,
                unsettled_or_failed: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Runs `f` in one transaction: committed when it returns `Ok`, rolled back otherwise.
    /// Many small updates (a batch's items) cost one commit instead of one each.
    pub fn in_transaction<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::in_transaction(pg, || f(self));
        }
        let tx = self.conn()?.unchecked_transaction()?;
        let out = f(self)?;
        tx.commit()?;
        Ok(out)
    }

    /// Durability rule, first half: committed before the provider call — and only while
    /// `lease_owner` holds the item's job (a process whose lease was taken over must not act),
    /// or, for a job run by workers, while `lease_owner` is the active worker holding the item
    /// (a worker whose items were taken over must not act on them).
    /// Fails with [`StoreError::NotLeased`] when the item is settled or the lease is not ours.
    pub fn mark_in_flight(
        &self,
        item: i64,
        copy_id: &str,
        lease_owner: &str,
    ) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::mark_in_flight(pg, item, copy_id, lease_owner);
        }
        let n = self
            .conn()?
            .prepare_cached(
                "UPDATE job_item SET state = 'in_flight', copy_id = ?2 \
                 WHERE id = ?1 AND state IN ('pending', 'in_flight') \
                 AND (EXISTS (SELECT 1 FROM job WHERE job.id = job_item.job_id \
                              AND job.lease_owner = ?3) \
                      OR (worker = ?3 AND EXISTS (SELECT 1 FROM job_worker w \
                          WHERE w.job_id = job_item.job_id AND w.owner = ?3 \
                          AND w.ended IS NULL)))",
            )?
            .execute(params![item, copy_id, lease_owner])?;
        if n != 1 {
            return Err(StoreError::NotLeased { item });
        }
        Ok(())
    }

    /// [`Store::mark_in_flight`] for several items at once, under one rule: all of them or
    /// [`StoreError::NotLeased`] naming one that was refused. Call it inside
    /// [`Store::in_transaction`], which rolls back the marks made when one is refused. On
    /// PostgreSQL one statement marks them all (one round trip per batch instead of one per
    /// item: the store's round trips were most of a 10,000-mailbox retraction's time there).
    pub fn mark_items_in_flight(
        &self,
        items: &[(i64, &str)],
        lease_owner: &str,
    ) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::mark_items_in_flight(pg, items, lease_owner);
        }
        items
            .iter()
            .try_for_each(|(item, copy_id)| self.mark_in_flight(*item, copy_id, lease_owner))
    }

    /// [`Store::finish_item_succeeded`] and [`Store::finish_item_failed`] for several items at
    /// once (on PostgreSQL two statements, whatever their number). As there, a settled item
    /// stays as it is.
    pub fn finish_items(&self, items: &[ItemFinish<'_>]) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::finish_items(pg, items);
        }
        items.iter().try_for_each(|i| match i {
            ItemFinish::Succeeded {
                item,
                from,
                read,
                new_id,
                to,
                detail,
            } => self.finish_item_succeeded(*item, from, *read, *new_id, to, detail),
            ItemFinish::Failed {
                item,
                reason,
                provider_code,
                detail,
            } => self.finish_item_failed(*item, *reason, provider_code, detail),
        })
    }

    /// Records the copy a request is about to be sent for (an in-flight item of a job
    /// `lease_owner` holds): kept until the item settles, across runs, so a later run can
    /// tell whether the copy changed since. [`StoreError::NotLeased`] otherwise.
    pub fn record_sending(
        &self,
        item: i64,
        sent_id: &str,
        sent_version: Option<&str>,
        lease_owner: &str,
    ) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::record_sending(pg, item, sent_id, sent_version, lease_owner);
        }
        let n = self
            .conn()?
            .prepare_cached(
                "UPDATE job_item SET sent_id = ?2, sent_version = ?3 \
                 WHERE id = ?1 AND state = 'in_flight' \
                 AND (EXISTS (SELECT 1 FROM job WHERE job.id = job_item.job_id \
                              AND job.lease_owner = ?4) \
                      OR (worker = ?4 AND EXISTS (SELECT 1 FROM job_worker w \
                          WHERE w.job_id = job_item.job_id AND w.owner = ?4 \
                          AND w.ended IS NULL)))",
            )?
            .execute(params![item, sent_id, sent_version, lease_owner])?;
        if n != 1 {
            return Err(StoreError::NotLeased { item });
        }
        Ok(())
    }

    /// What [`Store::record_sending`] recorded for an item: (id, version), if a request was
    /// ever about to be sent for it.
    pub fn sent_copy(&self, item: i64) -> Result<Option<(String, Option<String>)>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::sent_copy(pg, item);
        }
        Ok(self
            .conn()?
            .query_row(
                "SELECT sent_id, sent_version FROM job_item WHERE id = ?1",
                [item],
                |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                    ))
                },
            )
            .optional()?
            .and_then(|(id, version)| id.map(|id| (id, version))))
    }

    /// Durability rule, second half: a success with where the copy went.
    pub fn finish_item_succeeded(
        &self,
        item: i64,
        from: &Folder,
        read: bool,
        new_id: Option<&str>,
        to: &Folder,
        detail: &str,
    ) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::finish_item_succeeded(
                pg,
                item,
                (from, read),
                new_id,
                to,
                detail,
            );
        }
        self.conn()?
            .prepare_cached(
                "UPDATE job_item SET state = 'succeeded', folder = ?2, read = ?3, new_id = ?4, \
                 to_folder = ?5, detail = ?6, finished_at = ?7, reason = NULL, \
                 provider_code = NULL WHERE id = ?1 AND state IN ('pending', 'in_flight')",
            )?
            .execute(params![
                item,
                folder_text(from),
                read as i64,
                new_id,
                folder_text(to),
                detail,
                Utc::now().timestamp()
            ])?;
        Ok(())
    }

    /// Durability rule, second half: a failure with our reason and the provider's code.
    pub fn finish_item_failed(
        &self,
        item: i64,
        reason: FailureReason,
        provider_code: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::finish_item_failed(pg, item, reason, provider_code, detail);
        }
        self.conn()?
            .prepare_cached(
                "UPDATE job_item SET state = 'failed', reason = ?2, provider_code = ?3, \
                 detail = ?4, finished_at = ?5 WHERE id = ?1 AND state IN ('pending', 'in_flight')",
            )?
            .execute(params![
                item,
                reason.as_str(),
                provider_code,
                detail,
                Utc::now().timestamp()
            ])?;
        Ok(())
    }

    /// Back to pending (a reconciled in-flight item whose copy has not moved).
    pub fn reset_item_pending(&self, item: i64) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::reset_item_pending(pg, item);
        }
        self.conn()?.execute(
            "UPDATE job_item SET state = 'pending' WHERE id = ?1 AND state = 'in_flight'",
            [item],
        )?;
        Ok(())
    }

    /// Records the audit head written after a run of `job` ended.
    pub fn set_job_audit_head(&self, job: i64, head: &str) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::set_job_audit_head(pg, job, head);
        }
        self.conn()?.execute(
            "UPDATE job SET audit_head = ?2 WHERE id = ?1",
            rusqlite::params![job, head],
        )?;
        Ok(())
    }

    /// Sets the state a run ends in, only while `owner` holds the job's lease (a process
    /// whose lease was taken over leaves the state to the new holder). `false` if not held.
    pub fn end_job_run(&self, job: i64, owner: &str, state: JobState) -> Result<bool, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::end_job_run(pg, job, owner, state);
        }
        let finished = (state == JobState::Finished).then(|| Utc::now().timestamp());
        let n = self.conn()?.execute(
            "UPDATE job SET state = ?3, finished_at = ?4 WHERE id = ?1 AND lease_owner = ?2",
            params![job, owner, state.as_str(), finished],
        )?;
        Ok(n == 1)
    }

    /// Sets a job's state (and its finish time when finished).
    pub fn set_job_state(&self, job: i64, state: JobState) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::set_job_state(pg, job, state);
        }
        let finished = (state == JobState::Finished).then(|| Utc::now().timestamp());
        self.conn()?.execute(
            "UPDATE job SET state = ?2, finished_at = ?3 WHERE id = ?1",
            params![job, state.as_str(), finished],
        )?;
        Ok(())
    }

    /// The newest settled item (not skipped) for each mailbox of a message, across jobs: the
    /// "last outcome" column of the recipient checklist.
    pub fn last_outcomes(&self, message_id: &str) -> Result<Vec<ItemRow>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::last_outcomes(pg, message_id);
        }
        let mut stmt = self.conn()?.prepare_cached(&format!(
            "SELECT {ITEM_COLUMNS} FROM job_item WHERE message_id = ?1 \
             AND state IN ('succeeded', 'failed') ORDER BY id"
        ))?;
        let rows = stmt
            .query_map([message_id], row_to_item)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Mailboxes in which a message was already retracted successfully by a retract job that
    /// has not been restored since (automation must not act twice).
    pub fn retracted_mailboxes(&self, message_id: &str) -> Result<Vec<String>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::retracted_mailboxes(pg, message_id);
        }
        let mut stmt = self.conn()?.prepare_cached(
            "SELECT DISTINCT i.mailbox FROM job_item i JOIN job j ON j.id = i.job_id \
             WHERE i.message_id = ?1 AND i.state = 'succeeded' AND j.kind = 'retract' \
             AND NOT EXISTS (SELECT 1 FROM job_item r WHERE r.source_item = i.id \
                             AND r.state = 'succeeded')",
        )?;
        let rows = stmt
            .query_map([message_id], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(rows)
    }

    /// Restorable items of a retract job: succeeded, not hard-deleted (admin recovery only),
    /// and not undone or being undone by a restore item (pending, in flight or succeeded).
    pub fn unrestored_items(
        &self,
        job: i64,
    ) -> Result<std::collections::BTreeSet<i64>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::unrestored_items(pg, job);
        }
        let mut stmt = self.conn()?.prepare_cached(
            "SELECT i.id FROM job_item i WHERE i.job_id = ?1 AND i.state = 'succeeded' \
             AND i.effective_action != 'hard_delete' \
             AND NOT EXISTS (SELECT 1 FROM job_item r WHERE r.source_item = i.id \
                             AND r.state IN ('pending', 'in_flight', 'succeeded'))",
        )?;
        let rows = stmt
            .query_map([job], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Every retract item that finished in `[since, until)`, for the metrics.
    pub fn item_outcomes(
        &self,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Vec<(ItemOutcome, String)>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::jobs::item_outcomes(pg, since, until);
        }
        let mut stmt = self.conn()?.prepare_cached(
            "SELECT i.tenant, j.trigger, i.state, i.reason, j.dry_run, i.read, i.finished_at, \
             i.delivered_at, COALESCE(j.detected_at, j.created_at), i.message_id, \
             i.note LIKE 'retained_by_hold%' \
             FROM job_item i JOIN job j ON j.id = i.job_id \
             WHERE j.kind = 'retract' AND i.state IN ('succeeded', 'failed') \
             AND (?1 IS NULL OR i.finished_at >= ?1) AND (?2 IS NULL OR i.finished_at < ?2) \
             ORDER BY i.finished_at",
        )?;
        let rows = stmt
            .query_map(
                params![since.map(|t| t.timestamp()), until.map(|t| t.timestamp())],
                |r| {
                    let state: String = r.get(2)?;
                    let reason: Option<String> = r.get(3)?;
                    let result = if state == "succeeded" {
                        Ok(())
                    } else {
                        Err(match reason {
                            Some(s) => word(s, 3)?,
                            None => FailureReason::ProviderError,
                        })
                    };
                    Ok((
                        ItemOutcome {
                            tenant: r.get(0)?,
                            trigger: word(r.get(1)?, 1)?,
                            result: Some(result),
                            skipped: false,
                            dry_run: r.get::<_, i64>(4)? != 0,
                            read: r.get::<_, i64>(5)? != 0,
                            finished_at: ts(r.get(6)?),
                            delivered_at: ts(r.get(7)?),
                            detected_at: ts(r.get(8)?),
                            throttled: 0,
                            waited_secs: 0.0,
                            retained_by_hold: r.get::<_, Option<bool>>(10)?.unwrap_or(false),
                        },
                        r.get::<_, String>(9)?,
                    ))
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
