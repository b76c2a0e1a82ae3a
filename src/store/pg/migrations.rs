//! Versioned PostgreSQL schema, compiled into the binary like SQLite's. Each area (audit, jobs,
//! trace…) owns an ordered list of steps; `clawback_schema` holds the last step applied per area.
//! Several processes may open a new store at once: migrations run under one transaction-scoped
//! advisory lock, so exactly one applies each step and the others see it applied.

use super::{PgConn, get};
use crate::store::StoreError;

/// One schema step of an area.
pub struct Step {
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every area with its steps, in order. Never edit a shipped step; append one.
pub const AREAS: &[(&str, &[Step])] = &[
    ("audit", super::audit::STEPS),
    ("trace", super::trace::STEPS),
    ("sync", super::sync::STEPS),
    ("jobs", super::jobs::STEPS),
    ("automation", super::automation::STEPS),
    ("policy", super::policy::STEPS),
    ("store_key", super::keys::STEPS),
];

/// Advisory lock key of migrations ("clawback" in ASCII, as a number).
const MIGRATION_LOCK: i64 = 0x636c_6177_6261_636b;

/// Brings every area's schema up to date.
pub fn migrate(conn: &mut PgConn) -> Result<(), StoreError> {
    let shown = conn.locator().to_string();
    conn.transaction(|tx| {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch(
            "CREATE TABLE IF NOT EXISTS clawback_schema (
                area TEXT PRIMARY KEY,
                version INTEGER NOT NULL
            )",
        )?;
        for (area, steps) in AREAS {
            let found: i32 = match tx.query_opt(
                "SELECT version FROM clawback_schema WHERE area = $1",
                &[area],
            )? {
                Some(row) => get(&row, 0)?,
                None => 0,
            };
            let known = steps.len() as i32;
            if found > known {
                return Err(StoreError::Postgres {
                    what: format!("store {shown}"),
                    reason: format!(
                        "schema of {area} is at version {found}, newer than this clawback knows ({known}); upgrade clawback"
                    ),
                });
            }
            for (i, step) in steps.iter().enumerate().skip(found as usize) {
                tx.batch(step.sql).map_err(|e| StoreError::Postgres {
                    what: format!("migration {area} {} ({})", i + 1, step.name),
                    reason: format!("{e}"),
                })?;
                let version = i as i32 + 1;
                tx.execute(
                    "INSERT INTO clawback_schema (area, version) VALUES ($1, $2)
                     ON CONFLICT (area) DO UPDATE SET version = excluded.version",
                    &[area, &version],
                )?;
            }
        }
        Ok(())
    })
}

/// The version each area's schema is at.
pub fn versions(conn: &PgConn) -> Result<Vec<(String, i32)>, StoreError> {
    conn.query(
        "SELECT area, version FROM clawback_schema ORDER BY area",
        &[],
    )?
    .iter()
    .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
    .collect()
}
