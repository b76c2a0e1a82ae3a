//! `clawback store copy` (issue 17, "move in"): an existing SQLite store copied into a new
//! PostgreSQL store, whole, in one transaction, then checked.
//!
//! Both schemas keep the same table and column names, so the copy is by table: every table the
//! two stores share, in the SQLite store's creation order (parents before children), the
//! columns both have (a PostgreSQL-only generated column, e.g. a search vector, is computed by
//! the server), through `COPY … FROM STDIN`; the trace's search words are then made from the
//! copied rows, as an upsert makes them. Row ids are kept: jobs, plans and audit positions
//! are the same numbers after the move, and identity sequences continue after them. The target
//! must be new: a store that already holds data is refused, so nothing is merged or lost. The
//! audit chain is copied byte for byte; the copy is verified by row counts per table and by the
//! audit head, read back from the target.

use super::{PgConn, PgLocator, get};
use crate::store::chain::{AuditBreak, AuditHead};
use crate::store::{Db, Store, StoreError};
use std::fmt::Write as _;
use std::path::Path;

/// Tables a new PostgreSQL store fills when it is created (one row each); the copy replaces
/// their row with the source's.
const SEEDED: &[&str] = &["audit_head"];

/// What was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// `(table, rows)` in copy order, every shared table (also empty ones).
    pub tables: Vec<(String, u64)>,
    /// Tables only the SQLite store has (e.g. its full-text index), not copied.
    pub sqlite_only: Vec<String>,
    /// The audit head of the source, found again in the target.
    pub audit_head: Option<AuditHead>,
    /// Entries in the target's audit chain, verified.
    pub audit_entries: u64,
}

fn err(what: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Postgres {
        what: what.into(),
        reason: reason.into(),
    }
}

/// One SQLite value in COPY's text format.
fn push_value(out: &mut String, v: rusqlite::types::ValueRef<'_>) {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => out.push_str("\\N"),
        ValueRef::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        ValueRef::Real(f) => {
            let _ = write!(out, "{f}");
        }
        ValueRef::Text(t) => escape_into(out, &String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => {
            out.push_str("\\\\x");
            out.push_str(&hex::encode(b));
        }
    }
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Copies the SQLite store at `from` into the (new) PostgreSQL store at `to`.
pub fn copy_sqlite_to_postgres(from: &Path, to: &PgLocator) -> Result<CopyReport, StoreError> {
    if !from.is_file() {
        return Err(err(
            "store copy",
            format!("{}: no SQLite store there", from.display()),
        ));
    }
    // Opening brings an older source store's schema up to date first, as every command does.
    let source = Store::open(from)?;
    if let Err(b) = source.audit_verify()? {
        return Err(err(
            "store copy",
            format!(
                "the source's audit chain is broken ({b}); nothing copied — `clawback audit verify` on it says more"
            ),
        ));
    }
    let src = source.conn()?;
    let target = Store::open_postgres(to, None)?;
    let Db::Postgres(pg) = target.db else {
        return Err(err("store copy", "the target is not a PostgreSQL store"));
    };
    let mut pg: PgConn = *pg;

    let mut stmt = src.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
    )?;
    let sqlite_tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    drop(stmt);
    let pg_tables: Vec<String> = pg
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
               AND table_name <> 'clawback_schema'",
            &[],
        )?
        .iter()
        .map(|r| get(r, 0))
        .collect::<Result<_, _>>()?;
    let (shared, sqlite_only): (Vec<String>, Vec<String>) = sqlite_tables
        .into_iter()
        .partition(|t| pg_tables.contains(t));

    // Refuse a target that already holds anything.
    for t in &pg_tables {
        if SEEDED.contains(&t.as_str()) {
            continue;
        }
        let n: i64 = get(
            &pg.query_one(&format!("SELECT count(*) FROM {}", quote_ident(t)), &[])?,
            0,
        )?;
        if n > 0 {
            return Err(err(
                &format!("store copy to {to}"),
                format!(
                    "the target already holds data ({n} rows in {t}); copy into a new, empty database"
                ),
            ));
        }
    }

    let mut tables = Vec::new();
    pg.transaction(|tx| {
        for t in &shared {
            // Columns both have; the server computes its generated ones.
            let pg_cols: Vec<(String, bool)> = tx
                .query(
                    "SELECT column_name::text, is_generated = 'ALWAYS' FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                    &[t],
                )?
                .iter()
                .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
                .collect::<Result<_, StoreError>>()?;
            let mut info = src.prepare(&format!("PRAGMA table_info({})", quote_ident(t)))?;
            let src_cols: Vec<String> = info
                .query_map([], |r| r.get::<_, String>(1))?
                .collect::<Result<_, _>>()?;
            let cols: Vec<String> = src_cols
                .into_iter()
                .filter(|c| pg_cols.iter().any(|(p, generated)| p == c && !generated))
                .collect();
            if cols.is_empty() {
                tables.push((t.clone(), 0));
                continue;
            }
            if SEEDED.contains(&t.as_str()) {
                tx.execute(&format!("DELETE FROM {}", quote_ident(t)), &[])?;
            }
            let list = cols.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
            let mut select = src.prepare(&format!("SELECT {list} FROM {}", quote_ident(t)))?;
            let mut rows = select.query([])?;
            let mut chunks = Vec::new();
            let mut buf = String::with_capacity(1 << 20);
            let mut count = 0u64;
            while let Some(row) = rows.next()? {
                for i in 0..cols.len() {
                    if i > 0 {
                        buf.push('\t');
                    }
                    push_value(&mut buf, row.get_ref(i)?);
                }
                buf.push('\n');
                count += 1;
                if buf.len() > (1 << 20) {
                    chunks.push(bytes::Bytes::from(std::mem::take(&mut buf)));
                }
            }
            if !buf.is_empty() {
                chunks.push(bytes::Bytes::from(buf));
            }
            let copied = tx
                .copy_in(
                    &format!("COPY {} ({list}) FROM STDIN", quote_ident(t)),
                    chunks,
                )
                .map_err(|e| err(&format!("store copy, table {t}"), e.to_string()))?;
            if copied != count {
                return Err(err(
                    &format!("store copy, table {t}"),
                    format!("read {count} rows, the server took {copied}"),
                ));
            }
            // Identity columns continue after the copied ids.
            for (c, _) in pg_cols.iter().filter(|(c, _)| cols.contains(c)) {
                let seq: Option<String> = get(
                    &tx.query_one(
                        "SELECT pg_get_serial_sequence($1, $2)",
                        &[&quote_ident(t), c],
                    )?,
                    0,
                )?;
                if let Some(seq) = seq {
                    tx.execute(
                        &format!(
                            "SELECT setval($1::text::regclass, GREATEST((SELECT max({}) FROM {}), 1), (SELECT count(*) > 0 FROM {}))",
                            quote_ident(c),
                            quote_ident(t),
                            quote_ident(t)
                        ),
                        &[&seq],
                    )?;
                }
            }
            tables.push((t.clone(), count));
        }
        // The trace's words (the tsvector and the words columns) are PostgreSQL's own: made
        // here from the copied rows, as an upsert makes them, so search finds what it found.
        if shared.iter().any(|t| t == "trace") {
            super::trace::refresh_all_words(tx)?;
        }
        Ok(())
    })?;

    // Check: every table's rows, and the audit chain with the source's head.
    let target = Store::open_postgres(to, None)?;
    let Db::Postgres(check) = &target.db else {
        return Err(err("store copy", "the target is not a PostgreSQL store"));
    };
    for (t, n) in &tables {
        let found: i64 = get(
            &check.query_one(&format!("SELECT count(*) FROM {}", quote_ident(t)), &[])?,
            0,
        )?;
        if found as u64 != *n {
            return Err(err(
                &format!("store copy, table {t}"),
                format!("copied {n} rows but the target holds {found}"),
            ));
        }
    }
    let head = source.audit_head()?;
    let target_head = target.audit_head()?;
    if head != target_head {
        return Err(err(
            "store copy",
            format!(
                "the target's audit head {} is not the source's {}",
                show(&target_head),
                show(&head)
            ),
        ));
    }
    let heads: Vec<AuditHead> = head.iter().cloned().collect();
    let entries = target
        .audit_verify_heads(&heads)?
        .map_err(|b: AuditBreak| err("store copy: the copied audit chain", b.to_string()))?;
    Ok(CopyReport {
        tables,
        sqlite_only,
        audit_head: head,
        audit_entries: entries,
    })
}

fn show(h: &Option<AuditHead>) -> String {
    h.as_ref()
        .map(|h| h.to_string())
        .unwrap_or_else(|| "(empty log)".into())
}
