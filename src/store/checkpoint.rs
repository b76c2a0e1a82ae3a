//! WAL checkpoints off the writers' path (issue 14).
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold: on the
//! thread that holds the store, fsyncing the database file while every other task of the
//! process waits for the store (a 10,000-copy retraction spent 0.37 s in 25 of them). A file
//! store turns the automatic checkpoint off and runs a passive checkpoint from a connection
//! of its own on a background thread instead, every [`EVERY`]. A passive checkpoint never
//! waits for or blocks writers or readers; what it cannot copy yet (a reader still needs old
//! pages) it copies next time. When the last connection to the file closes, SQLite
//! checkpoints the rest itself, so a short command leaves no WAL behind.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// How often the background connection checkpoints.
pub const EVERY: Duration = Duration::from_millis(250);

/// The background checkpointer of one store; stops (its thread ends) when dropped.
#[derive(Debug)]
pub struct Checkpointer {
    /// Dropping it wakes the thread, which then ends.
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Starts checkpointing the WAL of the store file at `path`. `None` when no second
    /// connection or thread can be had: the caller then keeps SQLite's automatic checkpoint.
    pub fn start(path: &Path) -> Option<Checkpointer> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok()?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("clawback-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    // Busy (another checkpoint runs) or failing: the next round tries again,
                    // and the last connection to close checkpoints the rest.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!("store: background checkpoint: {e}");
                    }
                }
            })
            .ok()?;
        Some(Checkpointer { _stop: stop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    /// The writer's own connection never checkpoints (its commits do not fsync the database
    /// file), yet the WAL is copied back into the database file in the background. With the
    /// automatic checkpoint off, only a checkpoint writes table pages to the database file, and
    /// this test runs none itself.
    #[test]
    fn the_wal_is_checkpointed_in_the_background_not_by_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sqlite3");
        let store = Store::open(&path).expect("open");
        let conn = store.conn().expect("sqlite");
        let auto: i64 = conn
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .expect("pragma");
        assert_eq!(auto, 0, "the writer's automatic checkpoint is off");
        let before = size(&path);
        conn.execute_batch("CREATE TABLE t(x BLOB)").expect("table");
        for _ in 0..200 {
            conn.execute("INSERT INTO t VALUES (zeroblob(8000))", [])
                .expect("insert");
        }
        // Wait (bounded: 10 s) for the 1.6 MB written to reach the database file.
        let mut grown = false;
        for _ in 0..400 {
            if size(&path) > before + 1_500_000 {
                grown = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert!(
            grown,
            "the background connection checkpointed the WAL into the database file ({} → {} bytes)",
            before,
            size(&path)
        );
    }
}
