//! Auto-retract policy versions on PostgreSQL (see `store::policy`): the version is the primary
//! key, so two processes saving the same next version at once cannot both succeed (the second
//! fails on the key, as on SQLite).

use super::migrations::Step;
use super::{PgConn, get};
use crate::store::StoreError;

pub const STEPS: &[Step] = &[Step {
    name: "policy",
    sql: r#"
CREATE TABLE policy (
    version    BIGINT PRIMARY KEY,
    json       TEXT NOT NULL,
    operator   TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
"#,
}];

/// The newest policy version and its JSON.
pub fn latest(conn: &PgConn) -> Result<Option<(u64, String)>, StoreError> {
    conn.query_opt(
        "SELECT version, json FROM policy ORDER BY version DESC LIMIT 1",
        &[],
    )?
    .map(|r| Ok((get::<i64>(&r, 0)? as u64, get(&r, 1)?)))
    .transpose()
}

/// Stores `json` as version `version`.
pub fn insert(
    conn: &PgConn,
    version: u64,
    json: &str,
    operator: &str,
    now: i64,
) -> Result<(), StoreError> {
    let version = version as i64;
    conn.execute(
        "INSERT INTO policy (version, json, operator, created_at) VALUES ($1, $2, $3, $4)",
        &[&version, &json, &operator, &now],
    )?;
    Ok(())
}
