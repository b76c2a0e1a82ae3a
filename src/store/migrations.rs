//! Versioned schema migrations. `PRAGMA user_version` holds the last applied version; each
//! migration runs in its own transaction. To add tables (jobs, audit, policy…), append one
//! [`Migration`] with the next version to [`MIGRATIONS`] and keep its SQL beside its module
//! (e.g. `store/jobs.rs` exposing `pub(crate) const SCHEMA: &str`). Never edit a shipped one.

use super::StoreError;
use rusqlite::Connection;
use std::path::Path;

/// One schema step.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Versions are 1, 2, 3… without gaps.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "trace",
        sql: super::trace::SCHEMA,
    },
    Migration {
        version: 2,
        name: "jobs",
        sql: super::jobs::SCHEMA,
    },
    Migration {
        version: 3,
        name: "audit",
        sql: super::audit::SCHEMA,
    },
    Migration {
        version: 4,
        name: "policy",
        sql: super::policy::SCHEMA,
    },
    Migration {
        version: 5,
        name: "sync_cursor",
        sql: super::sync::SCHEMA,
    },
    Migration {
        version: 6,
        name: "automation",
        sql: super::automation::SCHEMA,
    },
    Migration {
        version: 7,
        name: "job_lease",
        sql: super::jobs::LEASE_SCHEMA,
    },
    Migration {
        version: 8,
        name: "store_key",
        sql: super::keys::SCHEMA,
    },
    Migration {
        version: 9,
        name: "job_audit_head",
        sql: super::jobs::AUDIT_HEAD_SCHEMA,
    },
    Migration {
        version: 10,
        name: "automation_guard",
        sql: super::automation::GUARD_SCHEMA,
    },
    Migration {
        version: 11,
        name: "restore_sent_copy",
        sql: super::jobs::SENT_SCHEMA,
    },
    Migration {
        version: 12,
        name: "sync_change_cursor",
        sql: super::sync::CHANGE_CURSOR_SCHEMA,
    },
];

/// The newest version this binary knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

pub(super) fn migrate(conn: &mut Connection, path: Option<&Path>) -> Result<(), StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > latest_version() {
        return Err(StoreError::TooNew {
            path: path
                .map(Path::to_path_buf)
                .unwrap_or_else(|| ":memory:".into()),
            found: current,
            known: latest_version(),
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let err = |source| StoreError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        // Two processes may open a fresh store at once: the write lock is taken first and the
        // version read again under it, so each migration runs exactly once.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let now: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if now >= m.version {
            continue;
        }
        tx.execute_batch(m.sql).map_err(err)?;
        tx.pragma_update(None, "user_version", m.version)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "migration {}", m.name);
        }
    }

    #[test]
    fn migrating_twice_is_a_no_op_and_newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite3");
        let s = super::super::Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), latest_version());
        drop(s);
        let s = super::super::Store::open(&path).unwrap();
        s.conn
            .pragma_update(None, "user_version", latest_version() + 1)
            .unwrap();
        drop(s);
        let e = super::super::Store::open(&path).unwrap_err();
        assert!(
            e.to_string().contains("newer than this clawback knows"),
            "{e}"
        );
    }
}
