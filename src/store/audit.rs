//! The audit log's storage: append-only rows in chain order, plus the separately kept head
//! `(seq, hash)` that catches removal from the end. The chain arithmetic is `store::chain`.

use super::chain::{self as audit, AuditBreak, AuditEntry, AuditRecord};
use super::{Store, StoreError};
use rusqlite::{OptionalExtension, params};

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE audit (
    pos       INTEGER PRIMARY KEY AUTOINCREMENT,
    seq       INTEGER NOT NULL,
    record    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
"#;

/// A stored row whose record could not be read back: it was edited by hand.
fn unreadable(seq: u64) -> AuditBreak {
    AuditBreak::Edited { seq }
}

impl Store {
    /// Chains `record` after the newest entry and stores it with the new head, in one
    /// transaction.
    pub fn audit_append(&mut self, record: AuditRecord) -> Result<AuditEntry, StoreError> {
        // Immediate: another process appending at the same time waits for the write lock
        // instead of both reading the same head (a deferred read-then-write fails with
        // SQLITE_BUSY instead of waiting).
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let last: Option<(i64, String, String, String)> = tx
            .query_row(
                "SELECT seq, record, prev_hash, hash FROM audit ORDER BY pos DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let prev = last.and_then(|(seq, rec, prev_hash, hash)| {
            Some(AuditEntry {
                seq: seq as u64,
                record: serde_json::from_str(&rec).ok()?,
                prev_hash,
                hash,
            })
        });
        let entry = audit::chain(prev.as_ref(), record);
        let json = serde_json::to_string(&entry.record)
            .map_err(|e| StoreError::Sql(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        tx.execute(
            "INSERT INTO audit (seq, record, prev_hash, hash) VALUES (?1, ?2, ?3, ?4)",
            params![entry.seq as i64, json, entry.prev_hash, entry.hash],
        )?;
        tx.execute(
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?1, ?2) \
             ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            params![entry.seq as i64, entry.hash],
        )?;
        tx.commit()?;
        Ok(entry)
    }

    /// Every entry in stored order; a row whose record no longer parses is reported by `seq`.
    pub fn audit_entries(&self) -> Result<Result<Vec<AuditEntry>, AuditBreak>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, record, prev_hash, hash FROM audit ORDER BY pos")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, rec, prev_hash, hash) in rows {
            let seq = seq as u64;
            match serde_json::from_str::<AuditRecord>(&rec) {
                Ok(record) => out.push(AuditEntry {
                    seq,
                    record,
                    prev_hash,
                    hash,
                }),
                Err(_) => return Ok(Err(unreadable(seq))),
            }
        }
        Ok(Ok(out))
    }

    /// Checks the whole chain against the recorded head.
    pub fn audit_verify(&self) -> Result<Result<u64, AuditBreak>, StoreError> {
        let entries = match self.audit_entries()? {
            Ok(e) => e,
            Err(b) => return Ok(Err(b)),
        };
        let head: Option<(i64, String)> = self
            .conn
            .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let head_ref = head.as_ref().map(|(s, h)| (*s as u64, h.as_str()));
        Ok(audit::verify(&entries, head_ref).map(|()| entries.len() as u64))
    }
}
