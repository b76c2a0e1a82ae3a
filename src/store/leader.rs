//! One watcher at a time (issue 17): several `clawback watch` processes may run on one store
//! for availability; the one holding the leader lease acts, the others follow. The lease is one
//! row (owner, pid, host, expiry) taken or renewed in one statement that compares the expiry:
//! a live leader renews its own row; anyone takes a lapsed one; nobody takes a live one.
//!
//! On SQLite the expiry is this host's clock (every process of an SQLite store is on this
//! host). On PostgreSQL it is the server's clock, so watchers on hosts whose clocks disagree
//! still agree on when a lease lapses.

use super::jobs::LeaseHolder;
use super::{Store, StoreError};
use chrono::Utc;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use std::time::Duration;

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE watch_leader (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    owner      TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    host       TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
"#;

/// The watcher holding the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchLeader {
    /// Its owner token (one per process).
    pub owner: String,
    pub pid: u32,
    pub host: String,
    /// Until the lease lapses unless renewed, by the store's clock (negative: lapsed).
    pub expires_in_ms: i64,
}

impl WatchLeader {
    /// Time left on the lease (zero once it lapsed).
    pub fn expires_in(&self) -> Duration {
        Duration::from_millis(self.expires_in_ms.max(0) as u64)
    }
}

impl std::fmt::Display for WatchLeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "watch pid {} on {} (lease for another {:.1}s)",
            self.pid,
            self.host,
            self.expires_in_ms.max(0) as f64 / 1000.0
        )
    }
}

/// What asking for the lead gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchLead {
    /// This process leads (the lease as it now stands).
    Leading(WatchLeader),
    /// Another live watcher leads.
    Following(WatchLeader),
}

impl Store {
    /// Takes or renews the watch leader lease for `me` for `lease`: it is this process's when
    /// it already was, or when the holder's lease lapsed (or nobody held one).
    pub fn watch_lead(
        &mut self,
        me: &LeaseHolder,
        lease: Duration,
    ) -> Result<WatchLead, StoreError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let leader = match &mut self.db {
            super::Db::Postgres(pg) => super::pg::leader::lead(pg, me, lease_ms)?,
            super::Db::Sqlite(conn) => sqlite_lead(conn, me, lease_ms)?,
        };
        Ok(if leader.owner == me.owner {
            WatchLead::Leading(leader)
        } else {
            WatchLead::Following(leader)
        })
    }

    /// The watcher holding the lease, if any (a lapsed lease is still shown, with a negative
    /// time left).
    pub fn watch_leader(&self) -> Result<Option<WatchLeader>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::leader::current(pg);
        }
        let now = Utc::now().timestamp_millis();
        sqlite_current(self.conn()?, now)
    }

    /// Gives the lease up (a watch stopping cleanly), so that a follower leads at its next
    /// cycle instead of after the lease lapses. False when `me` did not hold it.
    pub fn watch_resign(&mut self, me: &LeaseHolder) -> Result<bool, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::leader::resign(pg, me);
        }
        let n = self
            .conn()?
            .execute("DELETE FROM watch_leader WHERE owner = ?1", [&me.owner])?;
        Ok(n == 1)
    }
}

fn sqlite_current(
    conn: &rusqlite::Connection,
    now_ms: i64,
) -> Result<Option<WatchLeader>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT owner, pid, host, expires_ms - ?1 FROM watch_leader WHERE id = 1",
            [now_ms],
            sqlite_row,
        )
        .optional()?)
}

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WatchLeader> {
    Ok(WatchLeader {
        owner: r.get(0)?,
        pid: r.get::<_, i64>(1)? as u32,
        host: r.get(2)?,
        expires_in_ms: r.get(3)?,
    })
}

fn sqlite_lead(
    conn: &mut rusqlite::Connection,
    me: &LeaseHolder,
    lease_ms: i64,
) -> Result<WatchLeader, StoreError> {
    let now = Utc::now().timestamp_millis();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO watch_leader (id, owner, pid, host, expires_ms) VALUES (1, ?1, ?2, ?3, ?4) \
         ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, pid = excluded.pid, \
         host = excluded.host, expires_ms = excluded.expires_ms \
         WHERE watch_leader.owner = excluded.owner OR watch_leader.expires_ms <= ?5",
        params![me.owner, i64::from(me.pid), me.host, now + lease_ms, now],
    )?;
    // The row exists now (written, or kept by its live holder).
    let current = tx.query_row(
        "SELECT owner, pid, host, expires_ms - ?1 FROM watch_leader WHERE id = 1",
        [now],
        sqlite_row,
    )?;
    tx.commit()?;
    Ok(current)
}
