//! The embedded store (DESIGN §5): one SQLite file in WAL mode under the data directory, with
//! versioned migrations compiled into the binary. This module tree is the only place that knows
//! SQL. Each area owns one file (`trace.rs` now; `jobs.rs`, `audit.rs`, `policy.rs` later) and
//! appends its schema to the ordered [`migrations::MIGRATIONS`] list.

use rusqlite::Connection;
use std::path::{Path, PathBuf};

pub mod audit;
pub mod automation;
pub mod chain;
pub mod checkpoint;
pub mod jobs;
pub mod keys;
pub mod leader;
pub mod migrations;
pub mod pg;
pub mod policy;
pub mod stamp;
pub mod sync;
pub mod trace;
pub mod workers;

pub use trace::{TraceRecord, UpsertOutcome};

/// How long a statement waits for another process's write transaction.
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// File name of the store inside the data directory.
pub const STORE_FILE: &str = "clawback.sqlite3";

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: cannot create its directory: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {path}: cannot make it private (file 0600, directory 0700): {source}")]
    Private {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "store {path}: schema version {found} is newer than this clawback knows ({known}); upgrade clawback"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("store migration {version} ({name}): {source}")]
    Migration {
        version: i64,
        name: &'static str,
        source: rusqlite::Error,
    },
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(
        "plan {plan} was already applied as job {job}; `clawback jobs resume {job}` continues it, a new plan retracts again"
    )]
    PlanSpent { plan: String, job: i64 },
    #[error("audit head file {path}: {source} (the entry is in the store; fix [audit] head_file)")]
    HeadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plan {plan} was completed already (by another run): nothing recorded")]
    PlanSealed { plan: String },
    #[error("job item {item} is settled or its job's lease is held by another process")]
    NotLeased { item: i64 },
    #[error("store URL {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("PostgreSQL store: {what}: {reason}")]
    Postgres { what: String, reason: String },
    #[error(
        "{what} is not available on a PostgreSQL store (it is SQLite's own); use the embedded SQLite store for it"
    )]
    NotOnPostgres { what: &'static str },
    #[error("store password: {0}")]
    Password(String),
}

/// The store holds the whole trace and the audit: its directory is made 0700 and the file
/// 0600 before SQLite opens it (SQLite gives the WAL and shared-memory files the database
/// file's mode). An existing looser store — from an older clawback — is tightened.
fn make_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
        // The store's directory is made private — unless it is a shared one (sticky, like
        // /tmp and /var/tmp) or another account's (a store file put in /var/tmp must not
        // make /var/tmp 0700 for everyone): there the files alone are private (0600).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let meta = std::fs::metadata(dir)?;
            let mode = meta.permissions().mode();
            let shared = mode & 0o1000 != 0 || meta.uid() != nix::unistd::geteuid().as_raw();
            if mode & 0o077 != 0 && !shared {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700))?;
            }
        }
        // Never open an existing store file here: closing any descriptor of it drops every
        // POSIX lock this process holds on it, under another connection's feet (SQLite's
        // documented way to corrupt a database). Create it only when it is new; chmod by path.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut f = path.as_os_str().to_owned();
            f.push(suffix);
            if let Ok(meta) = std::fs::metadata(&f)
                && meta.permissions().mode() & 0o077 != 0
            {
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Where the rows live.
pub(crate) enum Db {
    /// The embedded default: one SQLite file in the data directory.
    Sqlite(Connection),
    /// A shared PostgreSQL store (`[store] url`).
    Postgres(Box<pg::PgConn>),
}

/// A handle on the store. Not `Sync`: open one per thread (WAL lets readers run beside a writer).
pub struct Store {
    pub(crate) db: Db,
    path: Option<PathBuf>,
    /// The local data directory of a PostgreSQL store's process (logs, token cache, locks).
    local_dir: Option<PathBuf>,
    /// Rows of the newest-first search window (see `Store::search_at`).
    pub(crate) search_window: usize,
    /// `((newest id, window rows), (since, id floor))` of the windows computed for the newest id.
    pub(crate) window_cache: std::cell::RefCell<Vec<WindowCache>>,
    /// Where each new audit head is appended too (`[audit] head_file`).
    pub(crate) head_file: Option<PathBuf>,
    /// The WAL's background checkpoints (a file store).
    pub(crate) checkpointer: Option<checkpoint::Checkpointer>,
}

pub(crate) type WindowCache = ((i64, usize), Option<(i64, i64)>);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// The data directory of a store opened from a file (`None` in memory); for a PostgreSQL
    /// store, the local data directory it was opened with.
    pub fn data_dir(&self) -> Option<&Path> {
        match &self.db {
            Db::Postgres(_) => self.local_dir.as_deref(),
            Db::Sqlite(_) => self.path.as_deref().and_then(Path::parent),
        }
    }

    /// The SQLite connection; a clear error on a PostgreSQL store for what it does not offer
    /// yet (nothing is read or written then).
    #[track_caller]
    pub(crate) fn conn(&self) -> Result<&Connection, StoreError> {
        match &self.db {
            Db::Sqlite(c) => Ok(c),
            Db::Postgres(_) => Err(StoreError::NotOnPostgres {
                what: caller_area(std::panic::Location::caller().file()),
            }),
        }
    }

    /// The SQLite connection, for a transaction (see [`Store::conn`]).
    #[track_caller]
    pub(crate) fn conn_mut(&mut self) -> Result<&mut Connection, StoreError> {
        match &mut self.db {
            Db::Sqlite(c) => Ok(c),
            Db::Postgres(_) => Err(StoreError::NotOnPostgres {
                what: caller_area(std::panic::Location::caller().file()),
            }),
        }
    }

    /// True for a shared PostgreSQL store.
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// Opens the store a configuration names: `$CLAWBACK_STORE_URL` or `[store] url` (a
    /// PostgreSQL store; its password from `[store] password_file`, `[store] password_env` or
    /// `PGPASSWORD`), else the SQLite file in `data_dir`.
    pub fn open_configured(
        config: Option<&crate::config::Config>,
        data_dir: &Path,
    ) -> Result<Store, StoreError> {
        match StoreTarget::from_config(config)? {
            None => Self::open_in_dir(data_dir),
            Some(locator) => Self::open_postgres(&locator, Some(data_dir)),
        }
    }

    /// Opens (creating its schema if needed) a PostgreSQL store.
    pub fn open_postgres(
        locator: &pg::PgLocator,
        data_dir: Option<&Path>,
    ) -> Result<Store, StoreError> {
        let mut conn = pg::PgConn::connect(locator)?;
        pg::migrations::migrate(&mut conn)?;
        Ok(Store {
            db: Db::Postgres(Box::new(conn)),
            path: None,
            local_dir: data_dir.map(Path::to_path_buf),
            search_window: pg::trace::RECENT_WINDOW,
            window_cache: std::cell::RefCell::new(Vec::new()),
            head_file: None,
            checkpointer: None,
        })
    }

    /// Another handle on the same store (a second connection), e.g. for a task that writes
    /// beside the engine's handle. `None` for an in-memory store.
    pub fn open_again(&self) -> Option<Result<Store, StoreError>> {
        let mut again = match &self.db {
            Db::Postgres(pg) => Self::open_postgres(pg.locator(), self.local_dir.as_deref()),
            Db::Sqlite(_) => Self::open(self.path.as_deref()?),
        };
        if let Ok(s) = &mut again {
            s.head_file = self.head_file.clone();
        }
        Some(again)
    }

    /// Where the store lives, for messages: the file, or the PostgreSQL URL without password.
    pub fn describe(&self) -> String {
        match &self.db {
            Db::Postgres(pg) => pg.locator().to_string(),
            Db::Sqlite(_) => match &self.path {
                Some(p) => p.display().to_string(),
                None => ":memory:".into(),
            },
        }
    }

    /// The store file inside a data directory.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(STORE_FILE)
    }

    /// Opens (creating if needed) the store file at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        make_private(path).map_err(|source| StoreError::Private {
            path: path.to_path_buf(),
            source,
        })?;
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // Switching a new file to WAL needs a moment alone with it; when several processes open
        // a new store at once SQLite may answer "busy" here without waiting, so wait ourselves.
        let started = std::time::Instant::now();
        loop {
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if matches!(
                        f.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && started.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.map_err(open_err)?,
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        // A page cache of 64 MiB (SQLite's default is 2 MiB; memory is taken only as pages are
        // read): a trace of a million records has indexes far larger than 2 MiB, and bulk sync
        // spent a third of its time re-reading their pages from the file.
        conn.pragma_update(None, "cache_size", -65_536)
            .map_err(open_err)?;
        // Checkpoints run in the background, not in the commit that holds the store.
        let checkpointer = checkpoint::Checkpointer::start(path);
        if checkpointer.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(open_err)?;
        }
        let mut store = Self::prepare(conn, Some(path.to_path_buf()))?;
        store.checkpointer = checkpointer;
        Ok(store)
    }

    /// Opens the store of a data directory (`<data_dir>/clawback.sqlite3`).
    pub fn open_in_dir(data_dir: &Path) -> Result<Store, StoreError> {
        Self::open(&Self::path_in(data_dir))
    }

    /// A private in-memory store (tests, the demo).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        Self::prepare(conn, None)
    }

    fn prepare(conn: Connection, path: Option<PathBuf>) -> Result<Store, StoreError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Several processes share one store (console, a second terminal, `watch`): a writer
        // waits for another's transaction instead of failing with "database is locked".
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mut store = Store {
            db: Db::Sqlite(conn),
            path,
            local_dir: None,
            search_window: trace::RECENT_WINDOW,
            window_cache: std::cell::RefCell::new(Vec::new()),
            head_file: None,
            checkpointer: None,
        };
        if let Db::Sqlite(conn) = &mut store.db {
            migrations::migrate(conn, store.path.as_deref())?;
        }
        Ok(store)
    }

    /// Sets the newest-first search window (rows; 0 disables it; by default
    /// `trace::RECENT_WINDOW` on SQLite, `pg::trace::RECENT_WINDOW` on PostgreSQL). Results do
    /// not depend on it, only speed does; tests use a small window to exercise both search
    /// strategies.
    pub fn set_search_window(&mut self, rows: usize) {
        self.search_window = rows;
    }

    /// Where the store lives (`None` for an in-memory store).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Refreshes the planner statistics (`PRAGMA optimize`, which runs ANALYZE where useful) and
    /// checkpoints the WAL. Call after large ingests.
    pub fn optimize(&self) -> Result<(), StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return pg.batch("ANALYZE");
        }
        self.conn()?.execute_batch("PRAGMA optimize=0x10002;")?;
        if self.path.is_some() {
            self.conn()?
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        }
        Ok(())
    }

    /// Bytes on disk: the store file plus its WAL (0 for an in-memory store).
    pub fn file_size(&self) -> Result<u64, StoreError> {
        let Some(p) = &self.path else { return Ok(0) };
        let mut total = 0;
        for suffix in ["", "-wal"] {
            let mut f = p.clone().into_os_string();
            f.push(suffix);
            if let Ok(m) = std::fs::metadata(&f) {
                total += m.len();
            }
        }
        Ok(total)
    }

    /// Bytes each table and index takes in the store file, largest first (SQLite's `dbstat`;
    /// for benchmarks: what the trace spends its space on).
    pub fn space_by_table(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut stmt = self.conn()?.prepare(
            "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY sum(pgsize) DESC",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The schema version the store is at.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return Ok(pg::migrations::versions(pg)?
                .iter()
                .map(|(_, v)| i64::from(*v))
                .sum());
        }
        Ok(self
            .conn()?
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }
}

/// The area of the store a call came from (`src/store/jobs.rs` → "jobs"), for
/// [`StoreError::NotOnPostgres`].
fn caller_area(file: &str) -> &'static str {
    let name = file.rsplit(['/', '\\']).next().unwrap_or(file);
    match name {
        "jobs.rs" => "the job ledger (plans, jobs, leases, claims)",
        "trace.rs" => "the trace (records and search)",
        "automation.rs" => "the automation state (holds, reports, intel verdicts)",
        "policy.rs" => "the policy",
        "sync.rs" => "the sync cursors",
        "keys.rs" => "the store key",
        "stamp.rs" => "the store stamp",
        "leader.rs" => "the watch leader lease",
        _ => "this store operation",
    }
}

/// Which store a configuration names.
pub struct StoreTarget;

impl StoreTarget {
    /// `$CLAWBACK_STORE_URL`, else `[store] url`; `None` for the embedded SQLite store.
    pub fn from_config(
        config: Option<&crate::config::Config>,
    ) -> Result<Option<pg::PgLocator>, StoreError> {
        let env = std::env::var(crate::config::STORE_URL_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty());
        let store = config.map(|c| &c.store);
        let Some(url) = env.or_else(|| store.and_then(|s| s.url.clone())) else {
            return Ok(None);
        };
        if !pg::is_postgres_url(&url) && !url.contains('=') {
            return Err(StoreError::Url {
                url: pg::redact(&url),
                reason: "only PostgreSQL (postgres://…) is a store URL".into(),
            });
        }
        // A 0600 file, a named variable, else libpq's PGPASSWORD (the driver reads no
        // environment itself).
        let secret = store.and_then(|s| {
            s.password_file
                .as_deref()
                .map(crate::secret::read_secret_file)
                .or_else(|| {
                    s.password_env
                        .as_deref()
                        .map(crate::secret::read_secret_env)
                })
        });
        let password = match secret {
            Some(r) => Some(
                r.map_err(|e| StoreError::Password(e.to_string()))?
                    .expose()
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()),
        };
        pg::PgLocator::parse(&url, password.as_deref()).map(Some)
    }
}
