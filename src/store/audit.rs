//! The audit log's storage: append-only rows in chain order, plus the separately kept head
//! `(seq, hash)` that catches removal from the end. The chain arithmetic is `store::chain`.

use super::chain::{self as audit, AuditBreak, AuditEntry, AuditHead, AuditRecord};
use super::jobs::JobState;
use super::{Store, StoreError};
use rusqlite::{OptionalExtension, params};
use std::io::Write;

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
        let entry = match &mut self.db {
            super::Db::Sqlite(conn) => sqlite_append(conn, record)?,
            super::Db::Postgres(pg) => super::pg::audit::append(pg, record)?,
        };
        self.head_appended(&entry)?;
        Ok(entry)
    }

    /// Stores a plan made while its job ran as complete (its digest and JSON, replacing the
    /// provisional digest `provisional`) and appends `records` (what it means: `plan_applied`,
    /// an automation's `auto_retract`) in ONE transaction: a crash leaves either the
    /// provisional plan and no entries (the run that resumes the job plans again) or the
    /// sealed plan with every entry — never a sealed plan whose entries are missing. A plan
    /// no longer provisional is [`StoreError::PlanSealed`], and nothing is appended.
    pub fn seal_plan_audited(
        &mut self,
        id: &str,
        provisional: &str,
        digest: &str,
        json: &str,
        records: Vec<AuditRecord>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let entries = match &mut self.db {
            super::Db::Sqlite(conn) => {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let sealed = tx.execute(
                    "UPDATE plan SET digest = ?2, json = ?3 WHERE id = ?1 AND digest = ?4",
                    params![id, digest, json, provisional],
                )?;
                if sealed != 1 {
                    return Err(StoreError::PlanSealed { plan: id.into() });
                }
                let mut entries = Vec::with_capacity(records.len());
                for record in records {
                    entries.push(sqlite_append_in(&tx, record)?);
                }
                tx.commit()?;
                entries
            }
            super::Db::Postgres(pg) => {
                super::pg::audit::seal_plan(pg, id, provisional, digest, json, records)?
            }
        };
        for entry in &entries {
            self.head_appended(entry)?;
        }
        Ok(entries)
    }

    /// Ends job `job` as `end` says and appends `record` (its `job_finished` /
    /// `job_stopped` entry) and stores that entry as the job's audit head — in ONE
    /// transaction: a crash leaves the job unended and unaudited (it is resumed), or both.
    /// `None` (nothing changed, nothing appended) when `end` is [`JobEnd::Queued`] and the
    /// job is not the caller's to end (not running, or items left): another worker ended it.
    pub fn end_job_audited(
        &mut self,
        job: i64,
        end: JobEnd<'_>,
        record: AuditRecord,
    ) -> Result<Option<AuditEntry>, StoreError> {
        let entry = match &mut self.db {
            super::Db::Sqlite(conn) => {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let ended = match end {
                    JobEnd::Run { owner, state } => {
                        let finished =
                            (state == JobState::Finished).then(|| chrono::Utc::now().timestamp());
                        // As `end_job_run`: the state only while `owner` holds the lease; the
                        // end of the run is audited either way.
                        tx.execute(
                            "UPDATE job SET state = ?3, finished_at = ?4 \
                             WHERE id = ?1 AND lease_owner = ?2",
                            params![job, owner, state.as_str(), finished],
                        )?;
                        true
                    }
                    JobEnd::Queued => {
                        tx.execute(
                            &super::workers::sql::FINISH.replace('$', "?"),
                            params![job, chrono::Utc::now().timestamp()],
                        )? == 1
                    }
                };
                if !ended {
                    return Ok(None);
                }
                let entry = sqlite_append_in(&tx, record)?;
                tx.execute(
                    "UPDATE job SET audit_head = ?2 WHERE id = ?1",
                    params![job, head_text(&entry)],
                )?;
                tx.commit()?;
                entry
            }
            super::Db::Postgres(pg) => match super::pg::audit::end_job(pg, job, end, record)? {
                Some(entry) => entry,
                None => return Ok(None),
            },
        };
        self.head_appended(&entry)?;
        Ok(Some(entry))
    }

    /// Appends a new head to the configured head file.
    pub(super) fn head_appended(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        if let Some(path) = &self.head_file {
            append_head(
                path,
                &AuditHead {
                    seq: entry.seq,
                    hash: entry.hash.clone(),
                },
            )
            .map_err(|source| StoreError::HeadFile {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// An entry as a job's stored audit head (`SEQ sha256:HEX`).
pub(crate) fn head_text(entry: &AuditEntry) -> String {
    AuditHead {
        seq: entry.seq,
        hash: entry.hash.clone(),
    }
    .to_string()
}

/// How [`Store::end_job_audited`] ends a job.
#[derive(Debug, Clone, Copy)]
pub enum JobEnd<'a> {
    /// A run by the holder of the job's lease: the job takes `state` (while `owner` holds it).
    Run { owner: &'a str, state: JobState },
    /// The last worker of a queued job: finished, only if it is running with nothing left.
    Queued,
}

fn sqlite_append(
    conn: &mut rusqlite::Connection,
    record: AuditRecord,
) -> Result<AuditEntry, StoreError> {
    // Immediate: another process appending at the same time waits for the write lock
    // instead of both reading the same head (a deferred read-then-write fails with
    // SQLITE_BUSY instead of waiting).
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let entry = sqlite_append_in(&tx, record)?;
    tx.commit()?;
    Ok(entry)
}

/// Chains `record` after the newest entry inside the caller's (immediate) transaction.
pub(super) fn sqlite_append_in(
    tx: &rusqlite::Transaction<'_>,
    record: AuditRecord,
) -> Result<AuditEntry, StoreError> {
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
    Ok(entry)
}

impl Store {
    /// Appends every new head to `path` too (`[audit] head_file`): a file outside the data
    /// directory (another mount, or one shipped by syslog) that `audit verify` checks against.
    pub fn set_head_file(&mut self, path: Option<std::path::PathBuf>) {
        self.head_file = path;
    }

    /// The newest entry as `(seq, hash)`, or `None` for an empty log.
    pub fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::audit::head(pg);
        }
        Ok(self
            .conn()?
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY pos DESC LIMIT 1",
                [],
                |r| {
                    Ok(AuditHead {
                        seq: r.get::<_, i64>(0)? as u64,
                        hash: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    /// Every entry in stored order; a row whose record no longer parses is reported by `seq`.
    pub fn audit_entries(&self) -> Result<Result<Vec<AuditEntry>, AuditBreak>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::audit::entries(pg);
        }
        let mut stmt = self
            .conn()?
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

    /// Checks the whole chain against the recorded head, and against heads recorded outside
    /// the store (`audit verify --head`, the head file).
    pub fn audit_verify_heads(
        &self,
        heads: &[AuditHead],
    ) -> Result<Result<u64, AuditBreak>, StoreError> {
        let entries = match self.audit_entries()? {
            Ok(e) => e,
            Err(b) => return Ok(Err(b)),
        };
        // Outside heads first: a wiped or truncated log is named by the head it lost.
        if let Err(b) = audit::verify_heads(&entries, heads) {
            return Ok(Err(b));
        }
        let head = self.stored_head()?;
        let head_ref = head.as_ref().map(|(s, h)| (*s as u64, h.as_str()));
        Ok(audit::verify(&entries, head_ref).map(|()| entries.len() as u64))
    }

    fn stored_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::audit::stored_head(pg);
        }
        Ok(self
            .conn()?
            .query_row("SELECT seq, hash FROM audit_head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    /// Checks the whole chain against the recorded head.
    pub fn audit_verify(&self) -> Result<Result<u64, AuditBreak>, StoreError> {
        self.audit_verify_heads(&[])
    }
}

/// Appends `head` as one line to a private file (created 0600).
fn append_head(path: &std::path::Path, head: &AuditHead) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    writeln!(f, "{head}")
}

/// Reads the heads a head file recorded (one `SEQ sha256:HEX` per line; blank lines skipped).
pub fn read_head_file(path: &std::path::Path) -> Result<Vec<AuditHead>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("audit head file {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            l.parse()
                .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}
