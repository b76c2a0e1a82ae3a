//! Trace-sync cursors: per (tenant, mailbox), the newest received time already synced, so the
//! next `trace sync` asks the provider only for newer mail.

use super::pg::sync as pg;
use super::{Store, StoreError};
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;

/// Self-contained schema step (one migration; depends on no other table).
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE sync_cursor (
    tenant    TEXT    NOT NULL,
    mailbox   TEXT    NOT NULL,
    -- Newest received time (Unix seconds) of the mail synced from this mailbox.
    received  INTEGER NOT NULL,
    -- When the cursor last moved (Unix seconds).
    synced_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, mailbox)
) WITHOUT ROWID;
"#;

/// Change cursors (Graph delta links per mail folder, Gmail history ids per mailbox). Since
/// issue 16 a Graph mailbox's `folder` is a folder id, or `(folders)` for its folder tree's
/// cursor; the comment below names what an earlier version kept (the table is unchanged).
pub(crate) const CHANGE_CURSOR_SCHEMA: &str = r#"
CREATE TABLE sync_change_cursor (
    tenant    TEXT    NOT NULL,
    mailbox   TEXT    NOT NULL,
    -- Graph: the followed folder's well-known name; Gmail: "history".
    folder    TEXT    NOT NULL,
    -- The provider's opaque cursor: a deltaLink, a historyId.
    cursor    TEXT    NOT NULL,
    -- When the cursor last moved (Unix seconds).
    synced_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, mailbox, folder)
) WITHOUT ROWID;
"#;

impl Store {
    /// Every change cursor of a tenant: mailbox → folder → cursor.
    pub fn change_cursors(
        &self,
        tenant: &str,
    ) -> Result<HashMap<String, HashMap<String, String>>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return pg::change_cursors(pg, tenant);
        }
        let mut stmt = self.conn()?.prepare_cached(
            "SELECT mailbox, folder, cursor FROM sync_change_cursor WHERE tenant = ?1",
        )?;
        let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
        let rows = stmt.query_map([tenant], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (mailbox, folder, cursor) = row?;
            out.entry(mailbox).or_default().insert(folder, cursor);
        }
        Ok(out)
    }

    /// Moves a change cursor from `from` (the cursor the sync started with; `None`: there was
    /// none) to `to`. Opaque cursors have no order, so "only forward" is a compare-and-set: when
    /// another process moved the cursor meanwhile, its cursor (at least as new as `from`) is
    /// kept and this returns false.
    pub fn advance_change_cursor(
        &mut self,
        tenant: &str,
        mailbox: &str,
        folder: &str,
        from: Option<&str>,
        to: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return pg::advance_change_cursor(pg, (tenant, mailbox, folder), from, to, now);
        }
        let n = match from {
            None => self
                .conn()?
                .prepare_cached(
                    "INSERT INTO sync_change_cursor (tenant, mailbox, folder, cursor, synced_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant, mailbox, folder) DO NOTHING",
                )?
                .execute(params![tenant, mailbox, folder, to, now])?,
            Some(from) => self
                .conn()?
                .prepare_cached(
                    "UPDATE sync_change_cursor SET cursor = ?5, synced_at = ?6 \
                     WHERE tenant = ?1 AND mailbox = ?2 AND folder = ?3 AND cursor = ?4",
                )?
                .execute(params![tenant, mailbox, folder, from, to, now])?,
        };
        Ok(n > 0)
    }

    /// Drops a change cursor of a folder no longer followed (removed from the mailbox, or an
    /// earlier version's key), if it still holds `cursor` (`None`: whatever it holds): a
    /// cursor another process moved meanwhile is its to drop.
    pub fn drop_change_cursor(
        &mut self,
        tenant: &str,
        mailbox: &str,
        folder: &str,
        cursor: Option<&str>,
    ) -> Result<bool, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return pg::drop_change_cursor(pg, (tenant, mailbox, folder), cursor);
        }
        let n = self
            .conn()?
            .prepare_cached(
                "DELETE FROM sync_change_cursor WHERE tenant = ?1 AND mailbox = ?2 \
                 AND folder = ?3 AND (?4 IS NULL OR cursor = ?4)",
            )?
            .execute(params![tenant, mailbox, folder, cursor])?;
        Ok(n > 0)
    }

    /// Every cursor of a tenant: mailbox → newest received time synced.
    pub fn sync_cursors(&self, tenant: &str) -> Result<HashMap<String, i64>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return pg::sync_cursors(pg, tenant);
        }
        let mut stmt = self
            .conn()?
            .prepare_cached("SELECT mailbox, received FROM sync_cursor WHERE tenant = ?1")?;
        let rows = stmt
            .query_map([tenant], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<Result<HashMap<_, _>, _>>()?;
        Ok(rows)
    }

    /// The cursor of one mailbox.
    pub fn sync_cursor(&self, tenant: &str, mailbox: &str) -> Result<Option<i64>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return pg::sync_cursor(pg, tenant, mailbox);
        }
        Ok(self
            .conn()?
            .prepare_cached("SELECT received FROM sync_cursor WHERE tenant = ?1 AND mailbox = ?2")?
            .query_row(params![tenant, mailbox], |r| r.get(0))
            .optional()?)
    }

    /// Moves a mailbox's cursor forward to `received` (never back). Returns whether it moved.
    pub fn advance_sync_cursor(
        &mut self,
        tenant: &str,
        mailbox: &str,
        received: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return pg::advance_sync_cursor(pg, tenant, mailbox, received, now);
        }
        let n = self.conn()?.prepare_cached(
            "INSERT INTO sync_cursor (tenant, mailbox, received, synced_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (tenant, mailbox) DO UPDATE SET received = excluded.received, \
             synced_at = excluded.synced_at WHERE excluded.received > sync_cursor.received",
        )?
        .execute(params![tenant, mailbox, received, now])?;
        Ok(n > 0)
    }

    /// Whether the trace has a record of this (tenant, normalized Message-ID).
    pub fn trace_known(&self, tenant: &str, message_id: &str) -> Result<bool, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return pg::trace_known(pg, tenant, message_id);
        }
        Ok(self
            .conn()?
            .prepare_cached("SELECT 1 FROM trace WHERE message_id = ?1 AND tenant = ?2")?
            .query_row(params![message_id, tenant], |_| Ok(()))
            .optional()?
            .is_some())
    }
}
