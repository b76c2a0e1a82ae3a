//! Shared work (issue 17): a job queued for `clawback worker` is run by several processes at once,
//! each taking batches of its pending items. A worker registers per job (`job_worker`: owner,
//! pid, host, heartbeat); every item it takes names it (`job_item.worker`), and only that worker
//! may mark the item in flight (the fence in `Store::mark_in_flight`), and only while its
//! registration is active. A worker whose heartbeat lapsed (or whose process is gone, on this
//! host) has its registration ended by another worker: its pending items are free to take at
//! once, its in-flight items (outcome unknown) are taken over and settled by locating.
//!
//! SQLite: every write below is one statement or one `BEGIN IMMEDIATE` transaction, so the
//! store's one write lock orders them. PostgreSQL: `store::pg::workers`.

use super::jobs::{ITEM_COLUMNS, ItemRow, JobLease, JobState, LeaseHolder, row_to_item, ts};
use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};

/// Migration 15: jobs queued for workers, the workers registered per job and the worker
/// holding each item (NULL = nobody).
pub(crate) const SCHEMA: &str = r#"
ALTER TABLE job ADD COLUMN queued INTEGER NOT NULL DEFAULT 0;
ALTER TABLE job_item ADD COLUMN worker TEXT;
CREATE TABLE job_worker (
    job_id    INTEGER NOT NULL REFERENCES job(id),
    owner     TEXT NOT NULL,
    pid       INTEGER NOT NULL,
    host      TEXT NOT NULL,
    started   INTEGER NOT NULL,
    heartbeat INTEGER NOT NULL,
    ended     INTEGER,
    ended_by  TEXT,
    PRIMARY KEY (job_id, owner)
);
CREATE INDEX job_item_worker ON job_item(job_id, worker, state);
"#;

/// One worker's registration on a job, with the items it holds and has settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobWorker {
    pub holder: LeaseHolder,
    pub started: DateTime<Utc>,
    /// The heartbeat as stored (unix seconds): what ending a lapsed registration compares.
    pub heartbeat_secs: i64,
    /// When the registration ended (the worker left, or another took its items over).
    pub ended: Option<DateTime<Utc>>,
    /// It lapsed and another worker took its items over (rather than leaving itself).
    pub taken_over: bool,
    /// Items it holds now (taken, pending or in flight).
    pub held: u64,
    pub succeeded: u64,
    pub failed: u64,
}

impl JobWorker {
    /// The registration as a lease (same liveness rules as a job's lease).
    pub fn as_lease(&self) -> JobLease {
        JobLease {
            holder: self.holder.clone(),
            heartbeat: ts(Some(self.heartbeat_secs)).unwrap_or_default(),
        }
    }

    /// Working now: registered, its heartbeat fresh, and (on this host) its process alive.
    pub fn is_live(&self, here: &str, stale_after: chrono::Duration) -> bool {
        self.ended.is_none() && self.as_lease().is_live(here, stale_after)
    }

    /// `host:pid`.
    pub fn name(&self) -> String {
        format!("{}:{}", self.holder.host, self.holder.pid)
    }
}

/// The SQL shared by both backends (placeholders written `$n`; SQLite reads `?n` alike).
pub(crate) mod sql {
    /// Items of a job no active worker holds: free, held by `$2`, or by a worker whose
    /// registration ended.
    pub const FREE_OR_MINE: &str = "(worker IS NULL OR worker = $2 OR worker NOT IN \
         (SELECT owner FROM job_worker WHERE job_id = $1 AND ended IS NULL))";
    /// `$2` is an active worker of job `$1`, and the job runs.
    pub const ACTIVE: &str = "EXISTS (SELECT 1 FROM job_worker WHERE job_id = $1 AND owner = $2 \
         AND ended IS NULL) AND EXISTS (SELECT 1 FROM job WHERE id = $1 AND state = 'running')";
    /// Registers `$2` (pid `$3`, host `$4`, now `$5`) on job `$1`, or renews its registration.
    pub const JOIN: &str = "INSERT INTO job_worker (job_id, owner, pid, host, started, heartbeat) \
         VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (job_id, owner) DO UPDATE \
         SET heartbeat = excluded.heartbeat, ended = NULL, ended_by = NULL";
    pub const HEARTBEAT: &str = "UPDATE job_worker SET heartbeat = $3 \
         WHERE job_id = $1 AND owner = $2 AND ended IS NULL";
    /// Ends a lapsed registration (`$5` taking it over), only if its heartbeat is still the one
    /// judged lapsed.
    pub const END_LAPSED: &str = "UPDATE job_worker SET ended = $4, ended_by = $5 \
         WHERE job_id = $1 AND owner = $2 AND ended IS NULL AND heartbeat = $3";
    pub const RELEASE_ITEMS: &str = "UPDATE job_item SET worker = NULL \
         WHERE job_id = $1 AND worker = $2 AND state = 'pending'";
    pub const LEAVE: &str = "UPDATE job_worker SET ended = $3 \
         WHERE job_id = $1 AND owner = $2 AND ended IS NULL";
    /// Ends a queued job whose items are all settled; changes nothing if another did already.
    pub const FINISH: &str = "UPDATE job SET state = 'finished', finished_at = $2 \
         WHERE id = $1 AND state = 'running' AND queued = 1 AND NOT EXISTS \
         (SELECT 1 FROM job_item WHERE job_id = $1 AND state IN ('pending', 'in_flight'))";
    pub const WORKERS: &str = "SELECT w.owner, w.pid, w.host, w.started, w.heartbeat, w.ended, \
         w.ended_by IS NOT NULL, \
         (SELECT count(*) FROM job_item i WHERE i.job_id = w.job_id AND i.worker = w.owner \
          AND i.state IN ('pending', 'in_flight')), \
         (SELECT count(*) FROM job_item i WHERE i.job_id = w.job_id AND i.worker = w.owner \
          AND i.state = 'succeeded'), \
         (SELECT count(*) FROM job_item i WHERE i.job_id = w.job_id AND i.worker = w.owner \
          AND i.state = 'failed') \
         FROM job_worker w WHERE w.job_id = $1 ORDER BY w.started, w.owner";
    pub const QUEUED: &str = "SELECT id FROM job WHERE state = 'running' AND queued = 1 AND kind = 'retract' ORDER BY id";
    pub const CHECK: &str = "SELECT state, EXISTS (SELECT 1 FROM job_worker w WHERE w.job_id = \
         job.id AND w.owner = $2 AND w.ended IS NULL) FROM job WHERE id = $1";
}

/// The shared SQL for SQLite, whose numbered parameters are `?n` (`$n` would be a named one,
/// numbered by first appearance).
fn sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}

fn now() -> i64 {
    Utc::now().timestamp()
}

/// A registration read back (both backends).
#[allow(clippy::too_many_arguments)]
pub(crate) fn worker_from(
    owner: String,
    pid: i64,
    host: String,
    started: i64,
    heartbeat: i64,
    (ended, taken_over): (Option<i64>, bool),
    counts: [i64; 3],
) -> JobWorker {
    JobWorker {
        holder: LeaseHolder {
            owner,
            pid: u32::try_from(pid).unwrap_or(0),
            host,
        },
        started: ts(Some(started)).unwrap_or_default(),
        heartbeat_secs: heartbeat,
        ended: ts(ended),
        taken_over,
        held: counts[0].max(0) as u64,
        succeeded: counts[1].max(0) as u64,
        failed: counts[2].max(0) as u64,
    }
}

impl Store {
    /// Leaves a created job `running` without a lease for `clawback worker` to take up.
    pub fn queue_job(&self, job: i64) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::workers::queue_job(pg, job);
        }
        self.conn()?
            .execute("UPDATE job SET queued = 1 WHERE id = ?1", [job])?;
        Ok(())
    }

    /// Whether a job was queued for workers.
    pub fn job_queued(&self, job: i64) -> Result<bool, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::workers::job_queued(pg, job);
        }
        Ok(self
            .conn()?
            .query_row("SELECT queued FROM job WHERE id = ?1", [job], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .is_some_and(|q| q != 0))
    }

    /// Running retract jobs queued for workers, oldest first.
    pub fn queued_jobs(&self) -> Result<Vec<i64>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::workers::queued_jobs(pg);
        }
        let mut stmt = self.conn()?.prepare_cached(&sqlite(sql::QUEUED))?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        Ok(rows)
    }

    /// Registers `me` as a worker of `job` (or renews its registration).
    pub fn join_job(&self, job: i64, me: &LeaseHolder) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::workers::join_job(pg, job, me);
        }
        self.conn()?.execute(
            &sqlite(sql::JOIN),
            params![job, me.owner, me.pid, me.host, now()],
        )?;
        Ok(())
    }

    /// Renews a worker's heartbeat; `false` when its registration was ended (taken over).
    pub fn heartbeat_worker(&self, job: i64, owner: &str) -> Result<bool, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::workers::heartbeat_worker(pg, job, owner);
        }
        let n = self
            .conn()?
            .execute(&sqlite(sql::HEARTBEAT), params![job, owner, now()])?;
        Ok(n == 1)
    }

    /// Every worker registered on a job (active or ended), with its item counts.
    pub fn job_workers(&self, job: i64) -> Result<Vec<JobWorker>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::workers::job_workers(pg, job);
        }
        let mut stmt = self.conn()?.prepare_cached(&sqlite(sql::WORKERS))?;
        let rows = stmt
            .query_map([job], |r| {
                Ok(worker_from(
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    (r.get(5)?, r.get(6)?),
                    [r.get(7)?, r.get(8)?, r.get(9)?],
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Ends the registration of a worker judged lapsed, if its heartbeat is still
    /// `heartbeat_secs` (it did not come back meanwhile) — `true` for the one caller that ended
    /// it. Its pending items are then free to take, its in-flight ones to take over.
    pub fn end_lapsed_worker(
        &self,
        job: i64,
        (owner, heartbeat_secs): (&str, i64),
        by: &str,
    ) -> Result<bool, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::workers::end_lapsed_worker(pg, job, (owner, heartbeat_secs), by);
        }
        let n = self.conn()?.execute(
            &sqlite(sql::END_LAPSED),
            params![job, owner, heartbeat_secs, now(), by],
        )?;
        Ok(n == 1)
    }

    /// Takes up to `n` pending items of `job` that no active worker holds (or that `owner`
    /// holds already) for `owner`, in id order — only while `owner` is an active worker of the
    /// job and the job runs. One statement under the write lock: two workers never take the
    /// same item.
    pub fn take_items(&self, job: i64, owner: &str, n: usize) -> Result<Vec<ItemRow>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::workers::take_items(pg, job, owner, n);
        }
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let sql = format!(
            "UPDATE job_item SET worker = $2 WHERE id IN (SELECT id FROM job_item \
             WHERE job_id = $1 AND state = 'pending' AND {free} ORDER BY id LIMIT $3) AND {active} \
             RETURNING {ITEM_COLUMNS}",
            free = sql::FREE_OR_MINE,
            active = sql::ACTIVE,
        );
        self.take_sqlite(&sqlite(&sql), params![job, owner, limit])
    }

    /// Takes over the in-flight items of `job` whose worker's registration ended (or that no
    /// worker holds: left by a crashed single-process run) for `owner`, to settle by locating;
    /// only while `owner` is an active worker of the job.
    pub fn take_orphans(&self, job: i64, owner: &str) -> Result<Vec<ItemRow>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::workers::take_orphans(pg, job, owner);
        }
        let sql = format!(
            "UPDATE job_item SET worker = $2 WHERE job_id = $1 AND state = 'in_flight' \
             AND {free} AND (worker IS NULL OR worker <> $2) AND {active} RETURNING {ITEM_COLUMNS}",
            free = sql::FREE_OR_MINE,
            active = sql::ACTIVE,
        );
        self.take_sqlite(&sqlite(&sql), params![job, owner])
    }

    fn take_sqlite(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<ItemRow>, StoreError> {
        let tx = self.conn()?.unchecked_transaction()?;
        let mut rows = {
            let mut stmt = tx.prepare_cached(sql)?;
            stmt.query_map(params, row_to_item)?
                .collect::<Result<Vec<_>, _>>()?
        };
        tx.commit()?;
        rows.sort_by_key(|it| it.id);
        Ok(rows)
    }

    /// A worker leaves a job: the items it took and did not start are free again, its
    /// registration ends. Its settled items keep its name.
    pub fn leave_job(&mut self, job: i64, owner: &str) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &mut self.db {
            return super::pg::workers::leave_job(pg, job, owner);
        }
        let tx = self
            .conn_mut()?
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(&sqlite(sql::RELEASE_ITEMS), params![job, owner])?;
        tx.execute(&sqlite(sql::LEAVE), params![job, owner, now()])?;
        tx.commit()?;
        Ok(())
    }

    /// A job's state and whether `owner` is still an active worker of it: what a worker checks
    /// before every batch (a cancel, or its items taken over, stops it).
    pub fn worker_check(&self, job: i64, owner: &str) -> Result<(JobState, bool), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::workers::worker_check(pg, job, owner);
        }
        let (state, active): (String, bool) = self
            .conn()?
            .prepare_cached(&sqlite(sql::CHECK))?
            .query_row(params![job, owner], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((JobState::parse(&state), active))
    }
}
