//! Plans, jobs and job items (DESIGN §5). The durability rule lives here as SQL: an item is
//! committed `in_flight` before its provider call and its outcome is committed right after, so a
//! crash leaves every item either settled or `in_flight` (to be reconciled by locating it again).

use super::{Store, StoreError};
use crate::engine::metrics::ItemOutcome;
use crate::model::{FailureReason, Folder, RetractAction, Role, Trigger};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};
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
    fn parse(s: &str) -> JobState {
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
    fn parse(s: &str) -> ItemState {
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

fn folder_text(f: &Folder) -> String {
    serde_json::to_string(f).unwrap_or_else(|_| "\"inbox\"".into())
}

fn folder_parse(s: &str) -> Folder {
    serde_json::from_str(s).unwrap_or_else(|_| Folder::Other(s.to_string()))
}

fn ts(t: Option<i64>) -> Option<DateTime<Utc>> {
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

const JOB_COLUMNS: &str = "id, kind, plan_id, parent_job, trigger, action, state, operator, role, \
     reason, dry_run, created_at, finished_at, detected_at";

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
    })
}

const ITEM_COLUMNS: &str = "id, job_id, tenant, mailbox, message_id, copy_id, folder, read, depth, \
     action, effective_action, note, state, reason, provider_code, detail, new_id, to_folder, \
     delivered_at, finished_at, source_item";

fn row_to_item(r: &Row<'_>) -> rusqlite::Result<ItemRow> {
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

impl Store {
    /// Keeps a plan (its JSON and digest) so a job can name it.
    pub fn insert_plan(
        &mut self,
        id: &str,
        digest: &str,
        created_at: DateTime<Utc>,
        json: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO plan (id, digest, created_at, json) VALUES (?1, ?2, ?3, ?4)",
            params![id, digest, created_at.timestamp(), json],
        )?;
        Ok(())
    }

    /// The JSON of a stored plan.
    pub fn plan_json(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT json FROM plan WHERE id = ?1", [id], |r| r.get(0))
            .optional()?)
    }

    /// When a stored plan was made.
    pub fn plan_created_at(&self, id: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let secs: Option<i64> = self
            .conn
            .query_row("SELECT created_at FROM plan WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(secs.and_then(|s| DateTime::from_timestamp(s, 0)))
    }

    /// Creates a job and its items in one transaction; returns the job id.
    pub fn create_job(&mut self, job: &NewJob, items: &[ItemRow]) -> Result<i64, StoreError> {
        let tx = self.conn.transaction()?;
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
        {
            let mut stmt = tx.prepare(
                "INSERT INTO job_item (job_id, tenant, mailbox, message_id, copy_id, folder, read, \
                 depth, action, effective_action, note, state, reason, provider_code, detail, \
                 delivered_at, finished_at, source_item) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18)",
            )?;
            for it in items {
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
                ])?;
            }
        }
        tx.commit()?;
        Ok(job_id)
    }

    /// One job.
    pub fn job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM job WHERE id = ?1"),
                [id],
                row_to_job,
            )
            .optional()?)
    }

    /// The newest jobs first.
    pub fn jobs(&self, limit: usize) -> Result<Vec<JobRow>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM job ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = stmt
            .query_map([limit as i64], row_to_job)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Jobs left `running` (by a crash or a kill): to resume.
    pub fn unfinished_jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
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
        let mut stmt = self.conn.prepare_cached(&format!(
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
        let mut stmt = self.conn.prepare_cached(
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

    /// Runs `f` in one transaction: committed when it returns `Ok`, rolled back otherwise.
    /// Many small updates (a batch's items) cost one commit instead of one each.
    pub fn in_transaction<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let out = f(self)?;
        tx.commit()?;
        Ok(out)
    }

    /// Durability rule, first half: committed before the provider call.
    pub fn mark_in_flight(&self, item: i64, copy_id: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE job_item SET state = 'in_flight', copy_id = ?2 \
                 WHERE id = ?1 AND state IN ('pending', 'in_flight')",
            )?
            .execute(params![item, copy_id])?;
        Ok(())
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
        self.conn
            .prepare_cached(
                "UPDATE job_item SET state = 'succeeded', folder = ?2, read = ?3, new_id = ?4, \
                 to_folder = ?5, detail = ?6, finished_at = ?7, reason = NULL, \
                 provider_code = NULL WHERE id = ?1",
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
        self.conn
            .prepare_cached(
                "UPDATE job_item SET state = 'failed', reason = ?2, provider_code = ?3, \
                 detail = ?4, finished_at = ?5 WHERE id = ?1",
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
        self.conn.execute(
            "UPDATE job_item SET state = 'pending' WHERE id = ?1",
            [item],
        )?;
        Ok(())
    }

    /// Sets a job's state (and its finish time when finished).
    pub fn set_job_state(&self, job: i64, state: JobState) -> Result<(), StoreError> {
        let finished = (state == JobState::Finished).then(|| Utc::now().timestamp());
        self.conn.execute(
            "UPDATE job SET state = ?2, finished_at = ?3 WHERE id = ?1",
            params![job, state.as_str(), finished],
        )?;
        Ok(())
    }

    /// The newest settled item (not skipped) for each mailbox of a message, across jobs: the
    /// "last outcome" column of the recipient checklist.
    pub fn last_outcomes(&self, message_id: &str) -> Result<Vec<ItemRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
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
        let mut stmt = self.conn.prepare_cached(
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

    /// Succeeded items of a retract job that no succeeded restore item has undone yet.
    pub fn unrestored_items(
        &self,
        job: i64,
    ) -> Result<std::collections::BTreeSet<i64>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT i.id FROM job_item i WHERE i.job_id = ?1 AND i.state = 'succeeded' \
             AND NOT EXISTS (SELECT 1 FROM job_item r WHERE r.source_item = i.id \
                             AND r.state = 'succeeded')",
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
        let mut stmt = self.conn.prepare_cached(
            "SELECT i.tenant, j.trigger, i.state, i.reason, j.dry_run, i.read, i.finished_at, \
             i.delivered_at, COALESCE(j.detected_at, j.created_at), i.message_id \
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
                        },
                        r.get::<_, String>(9)?,
                    ))
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
