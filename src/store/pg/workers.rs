//! Shared work on PostgreSQL (see `store::workers`): the same rows and SQL as on SQLite, with
//! SQLite's one write lock replaced by row locks, so that workers on several hosts hold:
//! - **Taking items** is one `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)`: workers
//!   taking at the same moment skip each other's rows instead of queueing on them, and the
//!   outer condition (free, or held by an ended worker) is checked again on the locked row, so
//!   two workers never take the same item.
//! - **Ending a lapsed registration** is a compare-and-set on its heartbeat (one winner), and
//!   waits for the lapsed worker's in-flight marks, which lock its registration `FOR SHARE`
//!   (`store::pg::jobs::mark_in_flight`): after it, that worker cannot mark anything.
//! - **Ending the job** is a conditional update of the job row (`state = 'running'` and no
//!   unsettled item): concurrent finishers queue on the row and all but the first find it
//!   finished.

use super::{PgConn, get};
use crate::store::StoreError;
use crate::store::jobs::{ITEM_COLUMNS, ItemRow, JobState, LeaseHolder};
use crate::store::workers::{JobWorker, sql, worker_from};
use chrono::Utc;

/// The `jobs` area's step for workers (as SQLite's migration 15).
pub const SCHEMA: &str = r#"
ALTER TABLE job ADD COLUMN queued BIGINT NOT NULL DEFAULT 0;
ALTER TABLE job_item ADD COLUMN worker TEXT;
CREATE TABLE job_worker (
    job_id    BIGINT NOT NULL REFERENCES job(id),
    owner     TEXT NOT NULL,
    pid       BIGINT NOT NULL,
    host      TEXT NOT NULL,
    started   BIGINT NOT NULL,
    heartbeat BIGINT NOT NULL,
    ended     BIGINT,
    ended_by  TEXT,
    PRIMARY KEY (job_id, owner)
);
CREATE INDEX job_item_worker ON job_item(job_id, worker, state);
"#;

fn now() -> i64 {
    Utc::now().timestamp()
}

pub fn queue_job(conn: &PgConn, job: i64) -> Result<(), StoreError> {
    conn.execute("UPDATE job SET queued = 1 WHERE id = $1", &[&job])?;
    Ok(())
}

pub fn job_queued(conn: &PgConn, job: i64) -> Result<bool, StoreError> {
    Ok(conn
        .query_opt("SELECT queued FROM job WHERE id = $1", &[&job])?
        .map(|r| get::<i64>(&r, 0))
        .transpose()?
        .is_some_and(|q| q != 0))
}

pub fn queued_jobs(conn: &PgConn) -> Result<Vec<i64>, StoreError> {
    conn.query(sql::QUEUED, &[])?
        .iter()
        .map(|r| get(r, 0))
        .collect()
}

pub fn join_job(conn: &PgConn, job: i64, me: &LeaseHolder) -> Result<(), StoreError> {
    conn.execute(
        sql::JOIN,
        &[&job, &me.owner, &i64::from(me.pid), &me.host, &now()],
    )?;
    Ok(())
}

pub fn heartbeat_worker(conn: &PgConn, job: i64, owner: &str) -> Result<bool, StoreError> {
    Ok(conn.execute(sql::HEARTBEAT, &[&job, &owner, &now()])? == 1)
}

pub fn job_workers(conn: &PgConn, job: i64) -> Result<Vec<JobWorker>, StoreError> {
    conn.query(sql::WORKERS, &[&job])?
        .iter()
        .map(|r| {
            Ok(worker_from(
                get(r, 0)?,
                get(r, 1)?,
                get(r, 2)?,
                get(r, 3)?,
                get(r, 4)?,
                (get(r, 5)?, get(r, 6)?),
                [get(r, 7)?, get(r, 8)?, get(r, 9)?],
            ))
        })
        .collect()
}

pub fn end_lapsed_worker(
    conn: &PgConn,
    job: i64,
    (owner, heartbeat_secs): (&str, i64),
    by: &str,
) -> Result<bool, StoreError> {
    Ok(conn.execute(
        sql::END_LAPSED,
        &[&job, &owner, &heartbeat_secs, &now(), &by],
    )? == 1)
}

fn items(conn: &PgConn, sql: &str, params: super::Params<'_>) -> Result<Vec<ItemRow>, StoreError> {
    let mut rows = conn
        .query(sql, params)?
        .iter()
        .map(super::jobs::item_row)
        .collect::<Result<Vec<_>, _>>()?;
    rows.sort_by_key(|it| it.id);
    Ok(rows)
}

pub fn take_items(
    conn: &PgConn,
    job: i64,
    owner: &str,
    n: usize,
) -> Result<Vec<ItemRow>, StoreError> {
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let sql = format!(
        "UPDATE job_item SET worker = $2 WHERE id IN (SELECT id FROM job_item \
         WHERE job_id = $1 AND state = 'pending' AND {free} ORDER BY id LIMIT $3 \
         FOR UPDATE SKIP LOCKED) AND state = 'pending' AND {free} AND {active} \
         RETURNING {ITEM_COLUMNS}",
        free = sql::FREE_OR_MINE,
        active = sql::ACTIVE,
    );
    items(conn, &sql, &[&job, &owner, &limit])
}

pub fn take_orphans(conn: &PgConn, job: i64, owner: &str) -> Result<Vec<ItemRow>, StoreError> {
    let sql = format!(
        "UPDATE job_item SET worker = $2 WHERE job_id = $1 AND state = 'in_flight' \
         AND {free} AND (worker IS NULL OR worker <> $2) AND {active} RETURNING {ITEM_COLUMNS}",
        free = sql::FREE_OR_MINE,
        active = sql::ACTIVE,
    );
    items(conn, &sql, &[&job, &owner])
}

pub fn leave_job(conn: &mut PgConn, job: i64, owner: &str) -> Result<(), StoreError> {
    conn.transaction(|tx| {
        tx.execute(sql::RELEASE_ITEMS, &[&job, &owner])?;
        tx.execute(sql::LEAVE, &[&job, &owner, &now()])?;
        Ok(())
    })
}

pub fn worker_check(conn: &PgConn, job: i64, owner: &str) -> Result<(JobState, bool), StoreError> {
    let r = conn
        .query_opt(sql::CHECK, &[&job, &owner])?
        .ok_or_else(|| StoreError::Postgres {
            what: format!("check job {job}"),
            reason: "no such job".into(),
        })?;
    Ok((JobState::parse(&get::<String>(&r, 0)?), get(&r, 1)?))
}
