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
    Migration {
        version: 13,
        name: "trace_search",
        sql: super::trace::SEARCH_SCHEMA,
    },
    Migration {
        version: 14,
        name: "watch_leader",
        sql: super::leader::SCHEMA,
    },
    Migration {
        version: 15,
        name: "job_workers",
        sql: super::workers::SCHEMA,
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

    /// A store written by a binary at schema 12 (before `trace_search`) migrates when opened
    /// and answers every search as it did, by both search strategies.
    #[test]
    fn a_store_at_schema_12_migrates_and_searches_the_same() {
        use crate::trace::query::parse;
        use crate::trace::{Recipient, RecipientKind, TraceRecord};
        const NOW: i64 = 1_795_132_800;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite3");
        let conn = Connection::open(&path).unwrap();
        for m in MIGRATIONS.iter().filter(|m| m.version <= 12) {
            conn.execute_batch(m.sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 12).unwrap();
        let mut old = super::super::Store {
            db: super::super::Db::Sqlite(conn),
            path: Some(path.clone()),
            local_dir: None,
            search_window: 0,
            window_cache: Default::default(),
            head_file: None,
            checkpointer: None,
        };
        let words = ["invoice", "lunch", "wire", "report"];
        let records: Vec<TraceRecord> = (0..300)
            .map(|i| TraceRecord {
                tenant: ["contoso", "fabrikam"][i % 2].into(),
                message_id: format!("<m{i}@x.example>"),
                sender: format!("s{}@x.example", i % 5),
                subject: format!("{} {}", words[i % 4], words[(i / 4) % 4]),
                received: NOW - ((i * 7919) % 300) as i64 * 60,
                recipients: vec![Recipient {
                    address: format!("u{}@contoso.com", i % 9),
                    kind: RecipientKind::Envelope,
                }],
                retracted_at: (i % 11 == 0).then_some(NOW - 30),
                retraction_state: (i % 11 == 0).then(|| "retracted".to_string()),
                ..TraceRecord::default()
            })
            .collect();
        old.upsert_trace(&records).unwrap();
        let queries = [
            "",
            "retracted:yes",
            "retracted:yes invoice",
            "retracted:no lunch",
            "to:u3@contoso.com invoice",
            "from:s1@x.example to:u2@contoso.com wire",
            "from:s1",
        ];
        let answers = |s: &mut super::super::Store| -> Vec<Vec<String>> {
            let mut out = Vec::new();
            for q in queries {
                for window in [0, 40] {
                    s.set_search_window(window);
                    let found = s.search_at(&parse(q).unwrap(), 10, 3, NOW).unwrap();
                    out.push(found.into_iter().map(|r| r.message_id).collect());
                }
            }
            out
        };
        let before = answers(&mut old);
        assert!(before.iter().all(|a| !a.is_empty()), "{before:?}");
        drop(old);

        let mut s = super::super::Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), latest_version());
        let index: i64 = s
            .conn()
            .unwrap()
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'trace_retracted_received'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 1);
        assert_eq!(answers(&mut s), before);
    }

    #[test]
    fn migrating_twice_is_a_no_op_and_newer_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite3");
        let s = super::super::Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), latest_version());
        drop(s);
        let s = super::super::Store::open(&path).unwrap();
        s.conn()
            .unwrap()
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
