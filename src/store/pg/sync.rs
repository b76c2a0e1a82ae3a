//! The sync cursors on PostgreSQL: the same rows as SQLite (`store::sync`). Every write is one
//! statement that decides under the row's lock, so processes on many hosts never move a cursor
//! back or lose one: `INSERT … ON CONFLICT DO UPDATE … WHERE newer` for the received-time
//! cursors, a compare-and-set `UPDATE … WHERE cursor = from` (re-checked against the row a
//! concurrent writer committed, PostgreSQL's READ COMMITTED rule for UPDATE) and
//! `INSERT … ON CONFLICT DO NOTHING` for the opaque change cursors.

use super::migrations::Step;
use super::{PgConn, get};
use crate::store::StoreError;
use std::collections::HashMap;

pub const STEPS: &[Step] = &[Step {
    name: "sync cursors",
    sql: r#"
CREATE TABLE sync_cursor (
    tenant    TEXT   NOT NULL,
    mailbox   TEXT   NOT NULL,
    received  BIGINT NOT NULL,
    synced_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, mailbox)
);
CREATE TABLE sync_change_cursor (
    tenant    TEXT   NOT NULL,
    mailbox   TEXT   NOT NULL,
    folder    TEXT   NOT NULL,
    cursor    TEXT   NOT NULL,
    synced_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, mailbox, folder)
);
"#,
}];

pub fn change_cursors(
    conn: &PgConn,
    tenant: &str,
) -> Result<HashMap<String, HashMap<String, String>>, StoreError> {
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    for r in conn.query(
        "SELECT mailbox, folder, cursor FROM sync_change_cursor WHERE tenant = $1",
        &[&tenant],
    )? {
        out.entry(get(&r, 0)?)
            .or_default()
            .insert(get(&r, 1)?, get(&r, 2)?);
    }
    Ok(out)
}

pub fn advance_change_cursor(
    conn: &PgConn,
    (tenant, mailbox, folder): (&str, &str, &str),
    from: Option<&str>,
    to: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let n = match from {
        None => conn.execute(
            "INSERT INTO sync_change_cursor (tenant, mailbox, folder, cursor, synced_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, mailbox, folder) DO NOTHING",
            &[&tenant, &mailbox, &folder, &to, &now],
        )?,
        Some(from) => conn.execute(
            "UPDATE sync_change_cursor SET cursor = $5, synced_at = $6 \
             WHERE tenant = $1 AND mailbox = $2 AND folder = $3 AND cursor = $4",
            &[&tenant, &mailbox, &folder, &from, &to, &now],
        )?,
    };
    Ok(n > 0)
}

pub fn drop_change_cursor(
    conn: &PgConn,
    (tenant, mailbox, folder): (&str, &str, &str),
    cursor: Option<&str>,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "DELETE FROM sync_change_cursor WHERE tenant = $1 AND mailbox = $2 \
         AND folder = $3 AND ($4::text IS NULL OR cursor = $4)",
        &[&tenant, &mailbox, &folder, &cursor],
    )?;
    Ok(n > 0)
}

pub fn sync_cursors(conn: &PgConn, tenant: &str) -> Result<HashMap<String, i64>, StoreError> {
    conn.query(
        "SELECT mailbox, received FROM sync_cursor WHERE tenant = $1",
        &[&tenant],
    )?
    .iter()
    .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
    .collect()
}

pub fn sync_cursor(conn: &PgConn, tenant: &str, mailbox: &str) -> Result<Option<i64>, StoreError> {
    conn.query_opt(
        "SELECT received FROM sync_cursor WHERE tenant = $1 AND mailbox = $2",
        &[&tenant, &mailbox],
    )?
    .map(|r| get(&r, 0))
    .transpose()
}

pub fn advance_sync_cursor(
    conn: &PgConn,
    tenant: &str,
    mailbox: &str,
    received: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "INSERT INTO sync_cursor (tenant, mailbox, received, synced_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant, mailbox) DO UPDATE SET received = excluded.received, \
         synced_at = excluded.synced_at WHERE excluded.received > sync_cursor.received",
        &[&tenant, &mailbox, &received, &now],
    )?;
    Ok(n > 0)
}

pub fn trace_known(conn: &PgConn, tenant: &str, message_id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_opt(
            "SELECT 1 FROM trace WHERE message_id = $1 AND tenant = $2",
            &[&message_id, &tenant],
        )?
        .is_some())
}
