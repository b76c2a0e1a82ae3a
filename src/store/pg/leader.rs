//! The watch leader lease on PostgreSQL (see `store::leader`): taken or renewed by one
//! `INSERT … ON CONFLICT DO UPDATE … WHERE` — atomic on the row, so of several watchers on
//! several hosts asking at once exactly one gets a free or lapsed lease — with the expiry on the
//! server's clock (`clock_timestamp()`), so the hosts' clocks do not matter.

use super::{PgConn, get};
use crate::store::StoreError;
use crate::store::jobs::LeaseHolder;
use crate::store::leader::WatchLeader;

pub const SCHEMA: &str = r#"
CREATE TABLE watch_leader (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    owner      TEXT NOT NULL,
    pid        BIGINT NOT NULL,
    host       TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
"#;

/// The server's clock in Unix milliseconds.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT";

/// The lease row as it stands after taking or renewing it for `me`.
pub fn lead(conn: &mut PgConn, me: &LeaseHolder, lease_ms: i64) -> Result<WatchLeader, StoreError> {
    let pid = i64::from(me.pid);
    conn.transaction(|tx| {
        tx.execute(
            &format!(
                "INSERT INTO watch_leader (id, owner, pid, host, expires_ms) \
                 SELECT 1, $1, $2, $3, now_ms + $4 FROM (SELECT {NOW_MS} AS now_ms) n \
                 ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, pid = excluded.pid, \
                 host = excluded.host, expires_ms = excluded.expires_ms \
                 WHERE watch_leader.owner = excluded.owner \
                    OR watch_leader.expires_ms <= excluded.expires_ms - $4"
            ),
            &[&me.owner, &pid, &me.host, &lease_ms],
        )?;
        // The row exists now (written, or kept by its live holder).
        leader(&tx.query_one(
            &format!(
                "SELECT owner, pid, host, expires_ms - {NOW_MS} FROM watch_leader WHERE id = 1"
            ),
            &[],
        )?)
    })
}

fn leader(r: &tokio_postgres::Row) -> Result<WatchLeader, StoreError> {
    Ok(WatchLeader {
        owner: get(r, 0)?,
        pid: get::<i64>(r, 1)? as u32,
        host: get(r, 2)?,
        expires_in_ms: get(r, 3)?,
    })
}

/// The lease row, if any.
pub fn current(conn: &PgConn) -> Result<Option<WatchLeader>, StoreError> {
    conn.query_opt(
        &format!("SELECT owner, pid, host, expires_ms - {NOW_MS} FROM watch_leader WHERE id = 1"),
        &[],
    )?
    .map(|r| leader(&r))
    .transpose()
}

/// Gives the lease up when `me` holds it.
pub fn resign(conn: &PgConn, me: &LeaseHolder) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM watch_leader WHERE owner = $1", &[&me.owner])? == 1)
}
