//! Secrets the store keeps for itself: the key that seals plans (an HMAC over a plan's digest,
//! so a plan edited outside clawback — digest recomputed or not — is refused when applied).
//! Created on first use; concurrent first uses agree on one key (the first insert wins).

use super::{Store, StoreError};
use rand::RngCore;

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE store_key (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"#;

/// Name of the plan-sealing key.
const PLAN_KEY: &str = "plan_seal";

impl Store {
    /// The key plans made against this store are sealed with (32 random bytes).
    pub fn plan_key(&self) -> Result<Vec<u8>, StoreError> {
        let mut fresh = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut fresh);
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::keys::key(pg, PLAN_KEY, &fresh);
        }
        self.conn()?.execute(
            "INSERT OR IGNORE INTO store_key (name, value) VALUES (?1, ?2)",
            rusqlite::params![PLAN_KEY, fresh.as_slice()],
        )?;
        Ok(self.conn()?.query_row(
            "SELECT value FROM store_key WHERE name = ?1",
            [PLAN_KEY],
            |r| r.get(0),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_kept() {
        let s = Store::open_in_memory().expect("store");
        let a = s.plan_key().expect("key");
        assert_eq!(a.len(), 32);
        assert_eq!(s.plan_key().expect("key again"), a);
        let other = Store::open_in_memory().expect("store");
        assert_ne!(other.plan_key().expect("key"), a);
    }
}
