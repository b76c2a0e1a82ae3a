//! The PostgreSQL backend (DESIGN §5 "Team scale", issue 17): one shared store for a SOC on
//! several hosts. SQLite stays the embedded default; `[store] url = "postgres://…"` (or
//! `$CLAWBACK_STORE_URL`) selects this one.
//!
//! The store's API is synchronous (rusqlite). PostgreSQL is reached through `tokio-postgres`: one
//! process-wide runtime thread drives every connection's socket, and the store's methods wait on
//! the client's request futures with a plain executor. That works the same from a tokio worker
//! (the engine holds the store behind a mutex in async code) and from a plain thread, which the
//! blocking `postgres` crate does not (it panics inside a runtime).
//!
//! Each area of the store keeps its PostgreSQL schema beside its queries (`pg/<area>.rs`) and
//! lists it in [`migrations::AREAS`]; versions are counted per area, so areas are added without
//! renumbering each other.

pub mod audit;
pub mod automation;
pub mod copy;
pub mod jobs;
pub mod keys;
pub mod leader;
pub mod migrations;
pub mod policy;
pub mod stamp;
pub mod sync;
pub mod testing;
pub mod tls;
pub mod trace;
pub mod workers;

use super::StoreError;
use std::sync::OnceLock;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// Parameters of one statement.
pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Where a PostgreSQL store lives and how to sign in: the connection string (URL or libpq
/// key=value form) with the password kept apart, so that the locator can be shown.
#[derive(Clone)]
pub struct PgLocator {
    config: tokio_postgres::Config,
    tls: tls::TlsSettings,
    shown: String,
}

impl std::fmt::Debug for PgLocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for PgLocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// True when `url` names a PostgreSQL store (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

impl PgLocator {
    /// Parses a connection string. `password` (from a 0600 file or the environment) replaces
    /// any password in the string; the shown form never carries one.
    pub fn parse(url: &str, password: Option<&str>) -> Result<PgLocator, StoreError> {
        let (rest, tls) = tls::split_tls(url).map_err(|reason| StoreError::Url {
            url: redact(url),
            reason,
        })?;
        let mut config: tokio_postgres::Config =
            rest.trim().parse().map_err(|e| StoreError::Url {
                url: redact(url),
                reason: format!("{e}"),
            })?;
        config.ssl_mode(tls.mode.driver());
        if let Some(p) = password {
            config.password(p);
        }
        if config.get_dbname().is_none() {
            return Err(StoreError::Url {
                url: redact(url),
                reason: "it names no database (postgres://user@host/DATABASE)".into(),
            });
        }
        Ok(PgLocator {
            config,
            tls,
            shown: redact(url),
        })
    }

    /// True when the connection string itself carries a password.
    pub fn has_password(url: &str) -> bool {
        let rest = tls::split_tls(url)
            .map(|(r, _)| r)
            .unwrap_or_else(|_| url.to_string());
        rest.trim()
            .parse::<tokio_postgres::Config>()
            .map(|c| c.get_password().is_some())
            .unwrap_or(false)
    }

    /// The database name.
    pub fn database(&self) -> &str {
        self.config.get_dbname().unwrap_or_default()
    }
}

/// The connection string without its password (`postgres://user:***@host/db`).
pub fn redact(url: &str) -> String {
    let url = url.trim();
    if is_postgres_url(url) {
        if let Ok(mut u) = url::Url::parse(url) {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password") {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            if !pairs.is_empty() {
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            return u.to_string();
        }
        return "postgres://(unparsable)".into();
    }
    // key=value form: drop the password pair.
    url.split_whitespace()
        .map(|kv| {
            if kv.to_ascii_lowercase().starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The runtime that drives every PostgreSQL connection's socket in this process.
fn runtime() -> Result<&'static tokio::runtime::Handle, StoreError> {
    static HANDLE: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("clawback-pg".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("{e}")));
                        }
                    }
                })
                .map_err(|e| format!("{e}"))?;
            rx.recv().map_err(|e| format!("{e}"))?
        })
        .as_ref()
        .map_err(|e| StoreError::Postgres {
            what: "start the connection thread".into(),
            reason: e.clone(),
        })
}

/// Waits for a future on this thread (the connection's socket is driven elsewhere).
fn wait<F: std::future::Future>(f: F) -> F::Output {
    futures_executor::block_on(f)
}

/// One connection to a PostgreSQL store. A connection the server closed (a restart, a fail-over,
/// an idle timeout) is opened again at the next call: a long-running `watch` outlives it. The
/// call that found it broken fails with the reason and is not repeated (a write whose answer was
/// lost may have been applied).
pub struct PgConn {
    client: std::cell::RefCell<tokio_postgres::Client>,
    locator: PgLocator,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgConn({})", self.locator)
    }
}

/// An error with its causes (`error performing TLS handshake: invalid peer certificate: …`).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// A PostgreSQL error as a store error, with the server's message (never the password).
pub fn pg_err(e: tokio_postgres::Error) -> StoreError {
    let reason = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => with_sources(&e),
    };
    StoreError::Postgres {
        what: "query".into(),
        reason,
    }
}

impl PgConn {
    /// Connects, with TLS as `sslmode` says (see [`tls`]).
    pub fn connect(locator: &PgLocator) -> Result<PgConn, StoreError> {
        Ok(PgConn {
            client: std::cell::RefCell::new(Self::open_client(locator)?),
            locator: locator.clone(),
        })
    }

    fn open_client(locator: &PgLocator) -> Result<tokio_postgres::Client, StoreError> {
        let handle = runtime()?;
        let config = locator.config.clone();
        // As libpq: no TLS over a Unix socket (the server refuses it there).
        let unix_only = config
            .get_hosts()
            .iter()
            .all(|h| !matches!(h, tokio_postgres::config::Host::Tcp(_)));
        let tls = match locator.tls.mode {
            _ if unix_only => None,
            tls::SslMode::Disable => None,
            _ => Some(tls::connector(&locator.tls)?),
        };
        let mut config = config;
        if tls.is_none() {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        }
        let joined = wait(handle.spawn(async move {
            // The connection task ends when the client is dropped or the server goes away; the
            // client's next request then fails with the reason.
            let client = match tls {
                Some(tls) => {
                    let (client, connection) = config.connect(tls).await?;
                    tokio::spawn(connection);
                    client
                }
                None => {
                    let (client, connection) = config.connect(NoTls).await?;
                    tokio::spawn(connection);
                    client
                }
            };
            Ok::<_, tokio_postgres::Error>(client)
        }));
        let client = joined
            .map_err(|e| StoreError::Postgres {
                what: format!("connect to {locator}"),
                reason: format!("{e}"),
            })?
            .map_err(|e| {
                let mut reason = match e.as_db_error() {
                    Some(db) => db.message().to_string(),
                    None => with_sources(&e),
                };
                // The server asked for a password: say where clawback takes one from.
                if reason.contains("password") {
                    reason.push_str(
                        " (the store's password comes from [store] password_file (a 0600 file), [store] password_env, or PGPASSWORD)",
                    );
                }
                StoreError::Postgres {
                    what: format!("connect to {locator}"),
                    reason,
                }
            })?;
        Ok(client)
    }

    /// The client, opened again first if the server closed the connection.
    fn client(&self) -> Result<std::cell::Ref<'_, tokio_postgres::Client>, StoreError> {
        if self.client.borrow().is_closed() {
            let fresh = Self::open_client(&self.locator)?;
            *self.client.borrow_mut() = fresh;
        }
        Ok(self.client.borrow())
    }

    /// The locator this connection was made from (shown without its password).
    pub fn locator(&self) -> &PgLocator {
        &self.locator
    }

    pub fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        wait(self.client()?.execute(sql, params)).map_err(pg_err)
    }

    pub fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        wait(self.client()?.query(sql, params)).map_err(pg_err)
    }

    pub fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, StoreError> {
        wait(self.client()?.query_opt(sql, params)).map_err(pg_err)
    }

    pub fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, StoreError> {
        wait(self.client()?.query_one(sql, params)).map_err(pg_err)
    }

    /// Runs several statements (no parameters), e.g. a schema.
    pub fn batch(&self, sql: &str) -> Result<(), StoreError> {
        wait(self.client()?.batch_execute(sql)).map_err(pg_err)
    }

    /// Runs `f` in one transaction: committed when `f` returns `Ok`, rolled back otherwise.
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&PgTx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        drop(self.client()?);
        let client = self.client.get_mut();
        let tx = wait(client.transaction()).map_err(pg_err)?;
        let tx = PgTx { tx };
        let out = f(&tx)?;
        wait(tx.tx.commit()).map_err(pg_err)?;
        Ok(out)
    }
}

/// An open transaction (see [`PgConn::transaction`]).
pub struct PgTx<'a> {
    tx: tokio_postgres::Transaction<'a>,
}

impl PgTx<'_> {
    pub fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        wait(self.tx.execute(sql, params)).map_err(pg_err)
    }

    pub fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        wait(self.tx.query(sql, params)).map_err(pg_err)
    }

    pub fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, StoreError> {
        wait(self.tx.query_opt(sql, params)).map_err(pg_err)
    }

    pub fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, StoreError> {
        wait(self.tx.query_one(sql, params)).map_err(pg_err)
    }

    pub fn batch(&self, sql: &str) -> Result<(), StoreError> {
        wait(self.tx.batch_execute(sql)).map_err(pg_err)
    }

    /// `COPY … FROM STDIN` with `data` in COPY's text format, in chunks; the rows copied.
    pub fn copy_in(
        &self,
        statement: &str,
        data: impl IntoIterator<Item = bytes::Bytes>,
    ) -> Result<u64, StoreError> {
        use futures_util::SinkExt;
        wait(async {
            let sink = self.tx.copy_in::<_, bytes::Bytes>(statement).await?;
            let mut sink = std::pin::pin!(sink);
            for chunk in data {
                sink.send(chunk).await?;
            }
            sink.as_mut().finish().await
        })
        .map_err(pg_err)
    }
}

/// Reads column `idx` of a row, as a store error when the type does not match.
pub fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
) -> Result<T, StoreError> {
    row.try_get(idx).map_err(pg_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shown_locator_never_carries_the_password() {
        for (url, hidden) in [
            ("postgres://soc:hunter2@db.example:5432/clawback", "hunter2"),
            (
                "postgresql://soc@db.example/clawback?password=hunter2&sslmode=require",
                "hunter2",
            ),
            (
                "host=db.example user=soc password=hunter2 dbname=clawback",
                "hunter2",
            ),
        ] {
            let shown = redact(url);
            assert!(!shown.contains(hidden), "{shown}");
            assert!(shown.contains("db.example"), "{shown}");
            assert!(PgLocator::has_password(url), "{url}");
            let loc = PgLocator::parse(url, None).expect("parses");
            assert!(!format!("{loc} {loc:?}").contains(hidden));
        }
        assert!(!PgLocator::has_password(
            "postgres://soc@db.example/clawback"
        ));
    }

    #[test]
    fn a_locator_without_a_database_or_unparsable_is_refused_with_the_reason() {
        let e = PgLocator::parse("postgres://soc@db.example", None).expect_err("no database");
        assert!(e.to_string().contains("names no database"), "{e}");
        let e = PgLocator::parse("postgres://soc:pw@db.example:notaport/x", None)
            .expect_err("bad port");
        assert!(!e.to_string().contains(":pw@"), "{e}");
    }
}
