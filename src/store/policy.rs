//! Auto-retract policy versions (DESIGN §6): every save is a new row; the newest is in force.

use super::{Store, StoreError};
use chrono::Utc;
use rusqlite::{OptionalExtension, params};

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE policy (
    version    INTEGER PRIMARY KEY,
    json       TEXT NOT NULL,
    operator   TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"#;

impl Store {
    /// The newest policy version and its JSON.
    pub fn policy_latest(&self) -> Result<Option<(u64, String)>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::policy::latest(pg);
        }
        Ok(self
            .conn()?
            .query_row(
                "SELECT version, json FROM policy ORDER BY version DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?)
    }

    /// Stores `json` as version `version` (which must be the next one).
    pub fn policy_insert(
        &mut self,
        version: u64,
        json: &str,
        operator: &str,
    ) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::policy::insert(pg, version, json, operator, Utc::now().timestamp());
        }
        self.conn()?.execute(
            "INSERT INTO policy (version, json, operator, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![version as i64, json, operator, Utc::now().timestamp()],
        )?;
        Ok(())
    }
}
