//! The store key on PostgreSQL (see `store::keys`). Several processes on several hosts may open
//! a new store at once: each offers a fresh key with `INSERT … ON CONFLICT DO NOTHING` (the
//! primary key makes a second insert wait for the first to commit, then do nothing), and every
//! process reads back the one key that won, in a second statement (a fresh snapshot that sees
//! the winner's commit).

use super::migrations::Step;
use super::{PgConn, get};
use crate::store::StoreError;

pub const STEPS: &[Step] = &[Step {
    name: "store_key",
    sql: r#"
CREATE TABLE store_key (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
"#,
}];

/// The key named `name`, made from `fresh` when the store has none yet.
pub fn key(conn: &PgConn, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
    conn.execute(
        "INSERT INTO store_key (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&name, &fresh],
    )?;
    let row = conn.query_one("SELECT value FROM store_key WHERE name = $1", &[&name])?;
    get(&row, 0)
}
