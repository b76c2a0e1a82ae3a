//! The audit log on PostgreSQL: the same rows and chain arithmetic as SQLite (`store::chain`).
//! Writers on many hosts form one chain: an append takes the head row `FOR UPDATE` first, so
//! concurrent appends queue on that lock and each chains after the one before it.

use super::migrations::Step;
use super::{PgConn, PgTx, get};
use crate::store::StoreError;
use crate::store::chain::{self, AuditBreak, AuditEntry, AuditHead, AuditRecord, GENESIS};

pub const STEPS: &[Step] = &[Step {
    name: "audit",
    sql: r#"
CREATE TABLE audit (
    pos       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq       BIGINT NOT NULL,
    record    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
-- The head row exists from the start (seq 0 = empty log), so that the first two appends of a
-- new store also queue on its lock.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
"#,
}];

/// Chains `record` after the newest entry; stores it and the new head in one transaction.
pub fn append(conn: &mut PgConn, record: AuditRecord) -> Result<AuditEntry, StoreError> {
    conn.transaction(|tx| {
        lock_head(tx)?;
        append_in(tx, record)
    })
}

/// Stores a plan as complete and appends `records` in one transaction (see
/// `Store::seal_plan_audited`).
pub fn seal_plan(
    conn: &mut PgConn,
    id: &str,
    provisional: &str,
    digest: &str,
    json: &str,
    records: Vec<AuditRecord>,
) -> Result<Vec<AuditEntry>, StoreError> {
    conn.transaction(|tx| {
        lock_head(tx)?;
        let sealed = tx.execute(
            "UPDATE plan SET digest = $2, json = $3 WHERE id = $1 AND digest = $4",
            &[&id, &digest, &json, &provisional],
        )?;
        if sealed != 1 {
            return Err(StoreError::PlanSealed { plan: id.into() });
        }
        records.into_iter().map(|r| append_in(tx, r)).collect()
    })
}

/// See `Store::end_job_audited`: the head row's lock first (as every append), then the job's
/// update, the entry and the job's audit head, in one transaction.
pub fn end_job(
    conn: &mut PgConn,
    job: i64,
    end: crate::store::audit::JobEnd<'_>,
    record: AuditRecord,
) -> Result<Option<AuditEntry>, StoreError> {
    use crate::store::audit::JobEnd;
    use crate::store::jobs::JobState;
    conn.transaction(|tx| {
        lock_head(tx)?;
        let now = chrono::Utc::now().timestamp();
        let ended = match end {
            JobEnd::Run { owner, state } => {
                let finished = (state == JobState::Finished).then_some(now);
                tx.execute(
                    "UPDATE job SET state = $3, finished_at = $4 WHERE id = $1 AND lease_owner = $2",
                    &[&job, &owner, &state.as_str(), &finished],
                )?;
                true
            }
            JobEnd::Queued => {
                tx.execute(crate::store::workers::sql::FINISH, &[&job, &now])? == 1
            }
        };
        if !ended {
            return Ok(None);
        }
        let entry = append_in(tx, record)?;
        tx.execute(
            "UPDATE job SET audit_head = $2 WHERE id = $1",
            &[&job, &crate::store::audit::head_text(&entry)],
        )?;
        Ok(Some(entry))
    })
}

/// Queues on the head row: appends from every host chain one after the other.
pub(super) fn lock_head(tx: &PgTx<'_>) -> Result<(), StoreError> {
    tx.query_one("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE", &[])?;
    Ok(())
}

/// Chains `record` after the newest entry inside the caller's transaction (holding the head
/// row's lock).
pub(super) fn append_in(tx: &PgTx<'_>, record: AuditRecord) -> Result<AuditEntry, StoreError> {
    let prev = match tx.query_opt(
        "SELECT seq, record, prev_hash, hash FROM audit ORDER BY pos DESC LIMIT 1",
        &[],
    )? {
        Some(row) => {
            let seq: i64 = get(&row, 0)?;
            let rec: String = get(&row, 1)?;
            serde_json::from_str(&rec)
                .ok()
                .map(|record| -> Result<AuditEntry, StoreError> {
                    Ok(AuditEntry {
                        seq: seq as u64,
                        record,
                        prev_hash: get(&row, 2)?,
                        hash: get(&row, 3)?,
                    })
                })
                .transpose()?
        }
        None => None,
    };
    let entry = chain::chain(prev.as_ref(), record);
    let json = serde_json::to_string(&entry.record).map_err(|e| StoreError::Postgres {
        what: "audit append".into(),
        reason: format!("record does not serialize: {e}"),
    })?;
    let seq = entry.seq as i64;
    tx.execute(
        "INSERT INTO audit (seq, record, prev_hash, hash) VALUES ($1, $2, $3, $4)",
        &[&seq, &json, &entry.prev_hash, &entry.hash],
    )?;
    tx.execute(
        "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
        &[&seq, &entry.hash],
    )?;
    Ok(entry)
}

/// The newest entry as `(seq, hash)`, or `None` for an empty log.
pub fn head(conn: &PgConn) -> Result<Option<AuditHead>, StoreError> {
    conn.query_opt("SELECT seq, hash FROM audit ORDER BY pos DESC LIMIT 1", &[])?
        .map(|r| {
            Ok(AuditHead {
                seq: get::<i64>(&r, 0)? as u64,
                hash: get(&r, 1)?,
            })
        })
        .transpose()
}

/// The separately kept head (`None` while the log is empty).
pub fn stored_head(conn: &PgConn) -> Result<Option<(i64, String)>, StoreError> {
    let row = conn.query_opt("SELECT seq, hash FROM audit_head WHERE id = 1", &[])?;
    match row {
        Some(r) => {
            let seq: i64 = get(&r, 0)?;
            let hash: String = get(&r, 1)?;
            Ok((seq > 0 || hash != GENESIS).then_some((seq, hash)))
        }
        None => Ok(None),
    }
}

/// Every entry in stored order; a row whose record no longer parses is reported by `seq`.
pub fn entries(conn: &PgConn) -> Result<Result<Vec<AuditEntry>, AuditBreak>, StoreError> {
    let rows = conn.query(
        "SELECT seq, record, prev_hash, hash FROM audit ORDER BY pos",
        &[],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let seq = get::<i64>(r, 0)? as u64;
        let rec: String = get(r, 1)?;
        match serde_json::from_str::<AuditRecord>(&rec) {
            Ok(record) => out.push(AuditEntry {
                seq,
                record,
                prev_hash: get(r, 2)?,
                hash: get(r, 3)?,
            }),
            Err(_) => return Ok(Err(AuditBreak::Edited { seq })),
        }
    }
    Ok(Ok(out))
}
