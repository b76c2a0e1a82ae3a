//! Trace tables: one row per (Message-ID, tenant), its recipients, URLs, attachment hashes and
//! reference edges, plus a contentless FTS5 index over subject, sender, recipients and URLs.
//! Also the compiler from [`Query`] to SQL.
//!
//! The engine records retractions in `trace.retracted_at` / `trace.retraction_state` through
//! [`Store::set_retraction`]; `retracted:yes|no` reads them.

use super::pg::trace as pg;
use super::{Db, Store, StoreError};
use crate::model::{Disposition, address_domain};
use crate::trace::query::{AddressFilter, DispositionFilter, Query, Term};
use crate::trace::{Recipient, RecipientKind};
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, Row, Transaction, params, params_from_iter};
use std::collections::{BTreeSet, HashMap};

pub use crate::trace::TraceRecord;

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE trace (
    id                 INTEGER PRIMARY KEY,
    tenant             TEXT    NOT NULL,
    message_id         TEXT    NOT NULL,
    synthetic_id       INTEGER NOT NULL DEFAULT 0,
    sender             TEXT    NOT NULL,
    sender_domain      TEXT    NOT NULL,
    sender_name        TEXT,
    envelope_sender    TEXT,
    subject            TEXT    NOT NULL,
    received           INTEGER NOT NULL,
    size               INTEGER NOT NULL,
    in_reply_to        TEXT    NOT NULL DEFAULT '',
    refs               TEXT    NOT NULL DEFAULT '',
    thread_index       TEXT,
    disposition        TEXT,
    disposition_rank   INTEGER,
    disposition_source TEXT,
    -- Written by the engine when a retraction of this message completes (join point for
    -- `retracted:yes|no`); NULL = never retracted.
    retracted_at       INTEGER,
    retraction_state   TEXT,
    UNIQUE (message_id, tenant)
);
CREATE INDEX trace_received ON trace (received);
CREATE INDEX trace_sender ON trace (sender, received);
CREATE INDEX trace_sender_domain ON trace (sender_domain, received);
CREATE INDEX trace_tenant ON trace (tenant, received);
CREATE INDEX trace_disposition ON trace (disposition, received) WHERE disposition IS NOT NULL;
CREATE INDEX trace_retracted ON trace (retracted_at) WHERE retracted_at IS NOT NULL;

CREATE TABLE trace_recipient (
    trace_id INTEGER NOT NULL REFERENCES trace (id) ON DELETE CASCADE,
    address  TEXT    NOT NULL,
    kind     TEXT    NOT NULL,
    domain   TEXT    NOT NULL,
    PRIMARY KEY (trace_id, address, kind)
) WITHOUT ROWID;
CREATE INDEX trace_recipient_address ON trace_recipient (address);
CREATE INDEX trace_recipient_domain ON trace_recipient (domain);

CREATE TABLE trace_url (
    trace_id INTEGER NOT NULL REFERENCES trace (id) ON DELETE CASCADE,
    url      TEXT    NOT NULL,
    host     TEXT    NOT NULL,
    PRIMARY KEY (trace_id, url)
) WITHOUT ROWID;
CREATE INDEX trace_url_host ON trace_url (host);

CREATE TABLE trace_attachment (
    trace_id INTEGER NOT NULL REFERENCES trace (id) ON DELETE CASCADE,
    sha256   TEXT    NOT NULL,
    PRIMARY KEY (trace_id, sha256)
) WITHOUT ROWID;
CREATE INDEX trace_attachment_sha256 ON trace_attachment (sha256);

-- In-Reply-To and References edges: trace_id replies to (or follows) ref_id.
CREATE TABLE trace_ref (
    trace_id INTEGER NOT NULL REFERENCES trace (id) ON DELETE CASCADE,
    ref_id   TEXT    NOT NULL,
    PRIMARY KEY (trace_id, ref_id)
) WITHOUT ROWID;
CREATE INDEX trace_ref_ref ON trace_ref (ref_id);

CREATE VIRTUAL TABLE trace_fts USING fts5 (
    subject, sender, recipients, urls,
    content = '', contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);
"#;

/// Migration 13: `retracted:yes` newest first walks its own rows by `received` (the partial
/// index on `retracted_at` alone made it read and sort every retracted row of the trace).
pub(crate) const SEARCH_SCHEMA: &str = r#"
CREATE INDEX trace_retracted_received ON trace (received) WHERE retracted_at IS NOT NULL;
"#;

/// Rows an exact address may have and still be tested against words row by row (one full-text
/// lookup each, up to ~1 ms on a large trace).
const FEW_ROWS: i64 = 64;

/// Rows in the newest-first window a search tries before running unbounded.
pub const RECENT_WINDOW: usize = 10_000;

/// Where one attempt of a search looks (`Store::windowed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Span {
    /// The rows received at or after `since`, every subquery bounded to ids at or above `floor`.
    Window { since: i64, floor: i64 },
    /// The whole trace, after a window fell short: the query is sparse in recent mail.
    AfterWindow,
    /// The whole trace.
    All,
}

/// What storing one record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    /// A new row.
    Inserted(i64),
    /// The row existed; recipients, URLs, attachments or a more severe disposition were added.
    Merged(i64),
    /// The row existed with everything this record says.
    Unchanged(i64),
}

/// Result of [`Store::set_disposition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DispositionUpdate {
    /// Rows with that Message-ID (and tenant, if given).
    pub matched: usize,
    /// Rows whose disposition became more severe.
    pub upgraded: usize,
}

const COLUMNS: &str = "t.id, t.tenant, t.message_id, t.synthetic_id, t.sender, t.sender_name, \
    t.envelope_sender, t.subject, t.received, t.size, t.in_reply_to, t.refs, t.thread_index, \
    t.disposition, t.disposition_source, t.retracted_at, t.retraction_state";

pub(crate) fn split_ids(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn row_to_record(r: &Row<'_>) -> rusqlite::Result<TraceRecord> {
    let disposition: Option<String> = r.get(13)?;
    Ok(TraceRecord {
        id: Some(r.get(0)?),
        tenant: r.get(1)?,
        message_id: r.get(2)?,
        synthetic_id: r.get::<_, i64>(3)? != 0,
        sender: r.get(4)?,
        sender_name: r.get(5)?,
        envelope_sender: r.get(6)?,
        subject: r.get(7)?,
        received: r.get(8)?,
        size: r.get::<_, i64>(9)?.max(0) as u64,
        recipients: Vec::new(),
        in_reply_to: split_ids(&r.get::<_, String>(10)?),
        references: split_ids(&r.get::<_, String>(11)?),
        thread_index: r.get(12)?,
        urls: Vec::new(),
        attachments: Vec::new(),
        disposition: disposition.and_then(|d| d.parse::<Disposition>().ok()),
        disposition_source: r.get(14)?,
        retracted_at: r.get(15)?,
        retraction_state: r.get(16)?,
    })
}

/// What a results table shows of one record ([`Store::search_summaries`]): no recipients, URLs
/// or attachments are loaded, only how many mailboxes the message was delivered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSummary {
    pub tenant: String,
    pub message_id: String,
    pub sender: String,
    pub subject: String,
    /// Unix seconds (UTC).
    pub received: i64,
    pub disposition: Option<Disposition>,
    /// Retraction state word set by the engine (see [`TraceRecord::retraction_state`]).
    pub retraction_state: Option<String>,
    /// `delivered_to().len()` of the full record: distinct envelope recipients when the message
    /// has any, otherwise distinct recipients of any kind.
    pub copies: u64,
}

/// Columns of [`TraceSummary`]. The copy count is one pass over the record's `trace_recipient`
/// rows, read by the prefix of its primary key `(trace_id, address, kind)`. That key makes each
/// envelope row a distinct envelope address, so only header recipients (one address may be both
/// To and Cc) need `DISTINCT`. Unknown kinds count as header recipients, as in `with_details`.
const SUMMARY_COLUMNS: &str = "t.tenant, t.message_id, t.sender, t.subject, t.received, \
    t.disposition, t.retraction_state, \
    (SELECT CASE WHEN sum(r.kind = 'envelope') > 0 THEN sum(r.kind = 'envelope') \
            ELSE count(DISTINCT r.address) END \
     FROM trace_recipient r WHERE r.trace_id = t.id)";

fn row_to_summary(r: &Row<'_>) -> rusqlite::Result<TraceSummary> {
    let disposition: Option<String> = r.get(5)?;
    Ok(TraceSummary {
        tenant: r.get(0)?,
        message_id: r.get(1)?,
        sender: r.get(2)?,
        subject: r.get(3)?,
        received: r.get(4)?,
        disposition: disposition.and_then(|d| d.parse::<Disposition>().ok()),
        retraction_state: r.get(6)?,
        copies: r.get::<_, i64>(7)?.max(0) as u64,
    })
}

pub(crate) fn url_host(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default()
}

pub(crate) fn fts_sender(rec: &TraceRecord) -> String {
    match &rec.sender_name {
        Some(n) => format!("{} {n}", rec.sender),
        None => rec.sender.clone(),
    }
}

impl Store {
    /// Stores records in one transaction: new (Message-ID, tenant) pairs are inserted; existing
    /// ones gain the record's recipients, URLs, attachments and references, and its disposition
    /// when it is more severe. Storing the same record twice changes nothing.
    pub fn upsert_trace(
        &mut self,
        records: &[TraceRecord],
    ) -> Result<Vec<UpsertOutcome>, StoreError> {
        if let Db::Postgres(pg) = &mut self.db {
            return pg::upsert(pg, records);
        }
        // Immediate: a deferred transaction that reads first cannot upgrade to a write while
        // another process (a second sync, watch) wrote meanwhile — SQLite answers "database is
        // locked" at once instead of waiting out the busy timeout.
        let tx = self
            .conn_mut()?
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(records.len());
        for rec in records {
            out.push(upsert_one(&tx, rec)?);
        }
        tx.commit()?;
        Ok(out)
    }

    /// Sets a disposition on every row with this Message-ID (in `tenant`, if given) when it is
    /// more severe than the current one (never downgrades).
    pub fn set_disposition(
        &mut self,
        tenant: Option<&str>,
        message_id: &str,
        disposition: Disposition,
        source: &str,
    ) -> Result<DispositionUpdate, StoreError> {
        if let Db::Postgres(pg) = &mut self.db {
            return pg::set_disposition(pg, tenant, message_id, disposition, source);
        }
        let matched: i64 = self.conn()?.query_row(
            "SELECT count(*) FROM trace WHERE message_id = ?1 AND (?2 IS NULL OR tenant = ?2)",
            params![message_id, tenant],
            |r| r.get(0),
        )?;
        let upgraded = self.conn()?.execute(
            "UPDATE trace SET disposition = ?3, disposition_rank = ?4, disposition_source = ?5 \
             WHERE message_id = ?1 AND (?2 IS NULL OR tenant = ?2) \
             AND (disposition_rank IS NULL OR disposition_rank > ?4)",
            params![
                message_id,
                tenant,
                disposition.as_str(),
                disposition.severity(),
                source
            ],
        )?;
        Ok(DispositionUpdate {
            matched: matched as usize,
            upgraded,
        })
    }

    /// Records the retraction state of a trace row (engine). `None, None` clears it (restore).
    pub fn set_retraction(
        &mut self,
        id: i64,
        retracted_at: Option<i64>,
        state: Option<&str>,
    ) -> Result<bool, StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return pg::set_retraction(pg, id, retracted_at, state);
        }
        Ok(self.conn()?.execute(
            "UPDATE trace SET retracted_at = ?2, retraction_state = ?3 WHERE id = ?1",
            params![id, retracted_at, state],
        )? == 1)
    }

    /// One record by row id, with its recipients, URLs and attachments.
    pub fn trace_by_id(&self, id: i64) -> Result<Option<TraceRecord>, StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return pg::by_id(pg, id);
        }
        let rec = self
            .conn()?
            .prepare_cached(&format!("SELECT {COLUMNS} FROM trace t WHERE t.id = ?1"))?
            .query_row([id], row_to_record)
            .optional()?;
        match rec {
            Some(r) => Ok(self.with_details(vec![r])?.pop()),
            None => Ok(None),
        }
    }

    /// Every record with this Message-ID (one per tenant). The id is normalized first.
    pub fn trace_by_message_id(&self, message_id: &str) -> Result<Vec<TraceRecord>, StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return pg::by_message_id(pg, message_id);
        }
        let Some(id) = crate::model::normalize_message_id(message_id) else {
            return Ok(Vec::new());
        };
        let mut stmt = self.conn()?.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM trace t WHERE t.message_id = ?1 ORDER BY t.tenant"
        ))?;
        let recs = stmt
            .query_map([id], row_to_record)?
            .collect::<Result<Vec<_>, _>>()?;
        self.with_details(recs)
    }

    /// Records whose In-Reply-To or References name any of `message_ids` (one step of the
    /// conversation graph; call again with their ids for the next depth).
    pub fn replies_to(&self, message_ids: &[String]) -> Result<Vec<TraceRecord>, StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return pg::replies_to(pg, message_ids);
        }
        let mut ids = BTreeSet::new();
        for chunk in message_ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut stmt = self.conn()?.prepare(&format!(
                "SELECT DISTINCT trace_id FROM trace_ref WHERE ref_id IN ({marks})"
            ))?;
            for id in stmt.query_map(params_from_iter(chunk), |r| r.get::<_, i64>(0))? {
                ids.insert(id?);
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = self.trace_by_id(id)? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| b.received.cmp(&a.received).then(b.id.cmp(&a.id)));
        Ok(out)
    }

    /// Records matching `query`, newest first; relative times are taken against now.
    pub fn search(
        &self,
        query: &Query,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<TraceRecord>, StoreError> {
        self.search_at(query, limit, offset, chrono::Utc::now().timestamp())
    }

    /// [`Store::search`] with an explicit "now" (Unix seconds) for relative times. Newest first,
    /// through the recent-window strategy of `search_rows`.
    pub fn search_at(
        &self,
        query: &Query,
        limit: usize,
        offset: usize,
        now: i64,
    ) -> Result<Vec<TraceRecord>, StoreError> {
        if let Db::Postgres(pg) = &self.db {
            let recs = self.windowed(limit, offset, pg::windowed(query), |span| {
                pg::search(pg, query, limit, offset, now, span)
            })?;
            return pg::with_details(pg, recs);
        }
        let recs = self.search_rows(query, limit, offset, now, COLUMNS, row_to_record)?;
        self.with_details(recs)
    }

    /// The rows a results table shows for `query`: the same records in the same order as
    /// [`Store::search`], as [`TraceSummary`]s (no recipient, URL or attachment rows are read).
    /// Each summary goes through `map` as it is read, so a caller building rows of its own
    /// never holds two vectors of them (`map` may also see rows of a recent-window attempt that
    /// falls short and is dropped).
    pub fn search_summaries<T>(
        &self,
        query: &Query,
        limit: usize,
        offset: usize,
        map: impl FnMut(TraceSummary) -> T,
    ) -> Result<Vec<T>, StoreError> {
        self.search_summaries_at(query, limit, offset, chrono::Utc::now().timestamp(), map)
    }

    /// [`Store::search_summaries`] with an explicit "now" (Unix seconds) for relative times.
    pub fn search_summaries_at<T>(
        &self,
        query: &Query,
        limit: usize,
        offset: usize,
        now: i64,
        mut map: impl FnMut(TraceSummary) -> T,
    ) -> Result<Vec<T>, StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return self.windowed(limit, offset, pg::windowed(query), |span| {
                pg::search_summaries(pg, query, limit, offset, now, span, &mut map)
            });
        }
        self.search_rows(query, limit, offset, now, SUMMARY_COLUMNS, |r| {
            row_to_summary(r).map(&mut map)
        })
    }

    /// Rows of `columns` over `trace t` matching `query`, newest first, each read by `read`,
    /// through the recent-window strategy of [`Store::windowed`].
    fn search_rows<T>(
        &self,
        query: &Query,
        limit: usize,
        offset: usize,
        now: i64,
        columns: &str,
        mut read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let few = self.few_rows(query)?;
        self.windowed(limit, offset, true, |span| {
            let floor = match span {
                Span::Window { floor, .. } => Some(floor),
                Span::AfterWindow | Span::All => None,
            };
            let mut c = Compiler::new(now, floor, few.clone());
            let cond = c.compile(query);
            let cond = match span {
                Span::Window { since, .. } => {
                    let since = c.bind(since);
                    format!("t.received >= {since} AND ({cond})")
                }
                Span::AfterWindow | Span::All => cond,
            };
            self.select(columns, &cond, c.params, limit, offset, &mut read)
        })
    }

    /// The newest-first search strategy of both backends: `attempt(span)` runs the search
    /// (`limit` rows after `offset`, newest first) over the rows `span` says.
    ///
    /// The query is first run inside the newest 1/20 of the search window (`RECENT_WINDOW` rows
    /// unless [`Store::set_search_window`] says otherwise), then inside all of it, with every
    /// subquery bounded to the window's smallest id (cheap even for words that match most of the
    /// trace while ids follow arrival order). If a window yields `limit` rows after `offset` they
    /// are the answer (every row outside it is older), so the result is exact. Otherwise (a
    /// selective query, or one about older mail) the query runs unbounded, driven by its
    /// indexes. With `window` false (a query the backend answers best from its own indexes) it
    /// runs unbounded at once.
    fn windowed<T>(
        &self,
        limit: usize,
        offset: usize,
        window: bool,
        mut attempt: impl FnMut(Span) -> Result<Vec<T>, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let want = limit.saturating_add(offset);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut fell_short = false;
        let windows = if window {
            [self.search_window / 20, self.search_window]
        } else {
            [0, 0]
        };
        for window in windows {
            if window == 0 || want.saturating_mul(2) > window {
                continue;
            }
            let Some((since, floor)) = self.recent_window(window)? else {
                continue;
            };
            let rows = attempt(Span::Window { since, floor })?;
            if rows.len() >= limit {
                return Ok(rows);
            }
            fell_short = true;
        }
        attempt(if fell_short {
            Span::AfterWindow
        } else {
            Span::All
        })
    }

    /// `(received, smallest id)` of the rows at least as new as the window's last row;
    /// `None` when the trace is smaller than the window.
    fn recent_window(&self, window: usize) -> Result<Option<(i64, i64)>, StoreError> {
        // Rows are only ever added (received never changes), so the window is valid as long as
        // the newest row id and the window size are the same. (On PostgreSQL trace writers hold
        // one lock, so a row never becomes visible after a row with a larger id.)
        let newest = match &self.db {
            Db::Postgres(pg) => pg::newest_id(pg)?,
            Db::Sqlite(conn) => conn
                .prepare_cached("SELECT max(id) FROM trace")?
                .query_row([], |r| r.get(0))?,
        };
        let Some(newest) = newest else {
            return Ok(None);
        };
        let key = (newest, window);
        if let Some((_, w)) = self.window_cache.borrow().iter().find(|(k, _)| *k == key) {
            return Ok(*w);
        }
        let found = match &self.db {
            Db::Postgres(pg) => pg::window_bounds(pg, window)?,
            Db::Sqlite(conn) => {
                let since: Option<i64> = conn
                    .prepare_cached(
                        "SELECT received FROM trace ORDER BY received DESC LIMIT 1 OFFSET ?1",
                    )?
                    .query_row([window as i64 - 1], |r| r.get(0))
                    .optional()?;
                match since {
                    Some(since) => conn
                        .prepare_cached("SELECT min(id) FROM trace WHERE received >= ?1")?
                        .query_row([since], |r| r.get::<_, Option<i64>>(0))?
                        .map(|floor| (since, floor)),
                    None => None,
                }
            }
        };
        let mut cache = self.window_cache.borrow_mut();
        cache.retain(|(k, _)| k.0 == newest);
        cache.push((key, found));
        Ok(found)
    }

    fn select<T>(
        &self,
        columns: &str,
        cond: &str,
        params: Vec<Value>,
        limit: usize,
        offset: usize,
        read: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let sql = format!(
            "SELECT {columns} FROM trace t WHERE {cond} ORDER BY t.received DESC, t.id DESC LIMIT {} OFFSET {}",
            limit.min(i64::MAX as usize),
            offset.min(i64::MAX as usize)
        );
        let mut stmt = self.conn()?.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(params_from_iter(params), read)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Loads recipients, URLs and attachments of many records with three queries.
    fn with_details(&self, mut recs: Vec<TraceRecord>) -> Result<Vec<TraceRecord>, StoreError> {
        if recs.is_empty() {
            return Ok(recs);
        }
        let mut at: HashMap<i64, usize> = HashMap::with_capacity(recs.len());
        for (i, r) in recs.iter().enumerate() {
            if let Some(id) = r.id {
                at.insert(id, i);
            }
        }
        let ids: Vec<i64> = at.keys().copied().collect();
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut stmt = self.conn()?.prepare(&format!(
                "SELECT trace_id, address, kind FROM trace_recipient WHERE trace_id IN ({marks}) ORDER BY trace_id, \
                 CASE kind WHEN 'envelope' THEN 0 WHEN 'to' THEN 1 WHEN 'cc' THEN 2 ELSE 3 END, address"
            ))?;
            let mut rows = stmt.query(params_from_iter(chunk))?;
            while let Some(row) = rows.next()? {
                let kind: String = row.get(2)?;
                if let Some(&i) = at.get(&row.get::<_, i64>(0)?) {
                    recs[i].recipients.push(Recipient {
                        address: row.get(1)?,
                        kind: RecipientKind::parse(&kind).unwrap_or(RecipientKind::To),
                    });
                }
            }
            for (table, column) in [("trace_url", "url"), ("trace_attachment", "sha256")] {
                let mut stmt = self.conn()?.prepare(&format!(
                    "SELECT trace_id, {column} FROM {table} WHERE trace_id IN ({marks}) ORDER BY trace_id, {column}"
                ))?;
                let mut rows = stmt.query(params_from_iter(chunk))?;
                while let Some(row) = rows.next()? {
                    if let Some(&i) = at.get(&row.get::<_, i64>(0)?) {
                        let v: String = row.get(1)?;
                        if table == "trace_url" {
                            recs[i].urls.push(v);
                        } else {
                            recs[i].attachments.push(v);
                        }
                    }
                }
            }
        }
        Ok(recs)
    }

    /// The exact `to:`/`from:` addresses of `query` that have at most [`FEW_ROWS`] rows,
    /// counted through their indexes (at most `FEW_ROWS + 1` index entries each). Beside words
    /// such an address is the selective side: its rows are tested against the words one by one.
    /// Beside a busier address, the words of its local part join the full-text MATCH instead.
    fn few_rows(&self, query: &Query) -> Result<BTreeSet<(bool, String)>, StoreError> {
        fn addresses<'q>(q: &'q Query, out: &mut Vec<(bool, &'q str)>) {
            match q {
                Query::Term(Term::To(AddressFilter::Address(a))) => out.push((true, a)),
                Query::Term(Term::From(AddressFilter::Address(a))) => out.push((false, a)),
                Query::Not(inner) => addresses(inner, out),
                Query::And(parts) | Query::Or(parts) => {
                    parts.iter().for_each(|p| addresses(p, out));
                }
                Query::All | Query::Term(_) => {}
            }
        }
        let mut found = Vec::new();
        addresses(query, &mut found);
        let mut few = BTreeSet::new();
        for (to, address) in found {
            let sql = if to {
                "SELECT count(*) FROM (SELECT 1 FROM trace_recipient WHERE address = ?1 LIMIT ?2)"
            } else {
                "SELECT count(*) FROM (SELECT 1 FROM trace WHERE sender = ?1 LIMIT ?2)"
            };
            let n: i64 = self
                .conn()?
                .prepare_cached(sql)?
                .query_row(params![address, FEW_ROWS + 1], |r| r.get(0))?;
            if n <= FEW_ROWS {
                few.insert((to, address.to_string()));
            }
        }
        Ok(few)
    }

    /// How many records match `query`.
    pub fn count(&self, query: &Query) -> Result<u64, StoreError> {
        self.count_at(query, chrono::Utc::now().timestamp())
    }

    /// [`Store::count`] with an explicit "now".
    pub fn count_at(&self, query: &Query, now: i64) -> Result<u64, StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return pg::count(pg, query, now);
        }
        let mut c = Compiler::new(now, None, self.few_rows(query)?);
        let cond = c.compile(query);
        let n: i64 = self
            .conn()?
            .prepare_cached(&format!("SELECT count(*) FROM trace t WHERE {cond}"))?
            .query_row(params_from_iter(c.params), |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Total trace rows.
    pub fn trace_count(&self) -> Result<u64, StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return pg::trace_count(pg);
        }
        let n: i64 = self
            .conn()?
            .query_row("SELECT count(*) FROM trace", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// The SQL plan of a query (for benchmarks and debugging).
    pub fn explain_search(&self, query: &Query) -> Result<Vec<String>, StoreError> {
        if let Db::Postgres(pg) = &self.db {
            return pg::explain(pg, query, 0);
        }
        let mut c = Compiler::new(0, None, self.few_rows(query)?);
        let cond = c.compile(query);
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT {COLUMNS} FROM trace t WHERE {cond} ORDER BY t.received DESC, t.id DESC LIMIT 50"
        );
        let mut stmt = self.conn()?.prepare(&sql)?;
        let rows = stmt
            .query_map(params_from_iter(c.params), |r| r.get::<_, String>(3))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

fn upsert_one(tx: &Transaction<'_>, rec: &TraceRecord) -> Result<UpsertOutcome, StoreError> {
    let existing: Option<(i64, Option<i64>)> = tx
        .prepare_cached(
            "SELECT id, disposition_rank FROM trace WHERE message_id = ?1 AND tenant = ?2",
        )?
        .query_row(params![rec.message_id, rec.tenant], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let sender_domain = address_domain(&rec.sender).unwrap_or_default();
    let (id, inserted) = match existing {
        Some((id, rank)) => {
            let mut changed = false;
            if let Some(d) = rec.disposition
                && rank.is_none_or(|r| r > i64::from(d.severity()))
            {
                tx.prepare_cached(
                    "UPDATE trace SET disposition = ?2, disposition_rank = ?3, disposition_source = ?4 WHERE id = ?1",
                )?
                .execute(params![id, d.as_str(), d.severity(), rec.disposition_source])?;
                changed = true;
            }
            let added = insert_children(tx, id, rec)?;
            if added.fts_changed {
                refresh_fts(tx, id)?;
            }
            return Ok(if changed || added.any {
                UpsertOutcome::Merged(id)
            } else {
                UpsertOutcome::Unchanged(id)
            });
        }
        None => {
            tx.prepare_cached(
                "INSERT INTO trace (tenant, message_id, synthetic_id, sender, sender_domain, sender_name, \
                 envelope_sender, subject, received, size, in_reply_to, refs, thread_index, disposition, \
                 disposition_rank, disposition_source, retracted_at, retraction_state) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            )?
            .execute(params![
                rec.tenant,
                rec.message_id,
                rec.synthetic_id as i64,
                rec.sender,
                sender_domain,
                rec.sender_name,
                rec.envelope_sender,
                rec.subject,
                rec.received,
                rec.size.min(i64::MAX as u64) as i64,
                rec.in_reply_to.join(" "),
                rec.references.join(" "),
                rec.thread_index,
                rec.disposition.map(|d| d.as_str()),
                rec.disposition.map(|d| d.severity()),
                rec.disposition.and(rec.disposition_source.as_deref()),
                rec.retracted_at,
                rec.retraction_state,
            ])?;
            (tx.last_insert_rowid(), true)
        }
    };
    insert_children(tx, id, rec)?;
    let recipients: Vec<&str> = rec.recipients.iter().map(|r| r.address.as_str()).collect();
    tx.prepare_cached(
        "INSERT INTO trace_fts (rowid, subject, sender, recipients, urls) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id,
        rec.subject,
        fts_sender(rec),
        recipients.join(" "),
        rec.urls.join(" ")
    ])?;
    debug_assert!(inserted);
    Ok(UpsertOutcome::Inserted(id))
}

struct Added {
    any: bool,
    fts_changed: bool,
}

fn insert_children(tx: &Transaction<'_>, id: i64, rec: &TraceRecord) -> Result<Added, StoreError> {
    let mut added = Added {
        any: false,
        fts_changed: false,
    };
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO trace_recipient (trace_id, address, kind, domain) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for r in &rec.recipients {
        let n = stmt.execute(params![
            id,
            r.address,
            r.kind.as_str(),
            address_domain(&r.address).unwrap_or_default()
        ])?;
        if n > 0 {
            added.any = true;
            added.fts_changed = true;
        }
    }
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO trace_url (trace_id, url, host) VALUES (?1, ?2, ?3)",
    )?;
    for u in &rec.urls {
        if stmt.execute(params![id, u, url_host(u)])? > 0 {
            added.any = true;
            added.fts_changed = true;
        }
    }
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO trace_attachment (trace_id, sha256) VALUES (?1, ?2)",
    )?;
    for h in &rec.attachments {
        if stmt.execute(params![id, h])? > 0 {
            added.any = true;
        }
    }
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO trace_ref (trace_id, ref_id) VALUES (?1, ?2)")?;
    for r in rec.in_reply_to.iter().chain(&rec.references) {
        stmt.execute(params![id, r])?;
    }
    Ok(added)
}

/// Rewrites a row's FTS entry from the stored row (after recipients or URLs were merged in).
fn refresh_fts(tx: &Transaction<'_>, id: i64) -> Result<(), StoreError> {
    let (subject, sender, name): (String, String, Option<String>) = tx.query_row(
        "SELECT subject, sender, sender_name FROM trace WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let recipients: Vec<String> = tx
        .prepare_cached("SELECT DISTINCT address FROM trace_recipient WHERE trace_id = ?1")?
        .query_map([id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let urls: Vec<String> = tx
        .prepare_cached("SELECT url FROM trace_url WHERE trace_id = ?1")?
        .query_map([id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    tx.execute("DELETE FROM trace_fts WHERE rowid = ?1", [id])?;
    let sender = match name {
        Some(n) => format!("{sender} {n}"),
        None => sender,
    };
    tx.execute(
        "INSERT INTO trace_fts (rowid, subject, sender, recipients, urls) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, subject, sender, recipients.join(" "), urls.join(" ")],
    )?;
    Ok(())
}

/// An FTS5 phrase for user text: quoted (so no user text is FTS syntax), a trailing `*` kept as
/// a prefix marker. `None` when the text has no indexable characters.
fn fts_phrase(text: &str) -> Option<String> {
    let (body, prefix) = match text.strip_suffix('*') {
        Some(b) => (b, true),
        None => (text, false),
    };
    if !body.chars().any(char::is_alphanumeric) {
        return None;
    }
    let quoted = format!("\"{}\"", body.replace('"', "\"\""));
    Some(if prefix {
        format!("{quoted} *")
    } else {
        quoted
    })
}

/// The words of an address's local part that the full-text index surely holds as they are:
/// runs of ASCII letters and digits (unicode61 splits at every other ASCII character and folds
/// ASCII case), lowercased. A run holding anything else is left out, since a letter unicode61
/// does not know would be a separator to it: a word it never indexed would lose the row.
fn local_part_words(address: &str) -> Vec<String> {
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    local
        .split(|c: char| c.is_ascii() && !c.is_ascii_alphanumeric())
        .filter(|w| (1..=64).contains(&w.len()) && w.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Compiles a [`Query`] to a WHERE condition over `trace t` with positional parameters.
struct Compiler {
    params: Vec<Value>,
    now: i64,
    /// Placeholder of the smallest row id that can match (the recent-window strategy); every
    /// subquery is bounded by it so it only materializes ids inside the window.
    id_floor: Option<String>,
    /// Exact addresses (`to:` true, `from:` false) with at most [`FEW_ROWS`] rows: beside
    /// full-text terms their rows are tested one by one (see [`Store::few_rows`]).
    few: BTreeSet<(bool, String)>,
}

impl Compiler {
    fn new(now: i64, id_floor: Option<i64>, few: BTreeSet<(bool, String)>) -> Compiler {
        let mut c = Compiler {
            params: Vec::new(),
            now,
            id_floor: None,
            few,
        };
        if let Some(f) = id_floor {
            c.id_floor = Some(c.bind(f));
        }
        c
    }

    fn floor(&self, column: &str) -> String {
        match &self.id_floor {
            Some(p) => format!(" AND {column} >= {p}"),
            None => String::new(),
        }
    }

    fn bind(&mut self, v: impl Into<Value>) -> String {
        self.params.push(v.into());
        format!("?{}", self.params.len())
    }

    /// The FTS5 expression of a term, when the term is answered by the full-text index.
    fn fts_expr(term: &Term) -> Option<Option<String>> {
        Some(match term {
            Term::Text { text, .. } => fts_phrase(text),
            Term::Subject(s) => fts_phrase(s).map(|p| format!("subject : {p}")),
            Term::Url(u) => fts_phrase(u).map(|p| format!("urls : {p}")),
            Term::From(AddressFilter::Word(w)) => {
                fts_phrase(&format!("{w}*")).map(|p| format!("sender : {p}"))
            }
            Term::To(AddressFilter::Word(w)) => {
                fts_phrase(&format!("{w}*")).map(|p| format!("recipients : {p}"))
            }
            _ => return None,
        })
    }

    fn fts_in(&mut self, exprs: &[String]) -> String {
        let m = self.bind(exprs.join(" AND "));
        let floor = self.floor("rowid");
        format!("t.id IN (SELECT rowid FROM trace_fts WHERE trace_fts MATCH {m}{floor})")
    }

    fn compile(&mut self, q: &Query) -> String {
        match q {
            Query::All => "1".into(),
            Query::Term(t) => self.term(t),
            Query::Not(inner) => format!("NOT ifnull(({}), 0)", self.compile(inner)),
            Query::Or(parts) => {
                let v: Vec<String> = parts
                    .iter()
                    .map(|p| format!("({})", self.compile(p)))
                    .collect();
                v.join(" OR ")
            }
            Query::And(parts) => {
                // All positive full-text terms go to FTS5 as one MATCH (it intersects them itself).
                let mut fts = Vec::new();
                let mut rest = Vec::new();
                for p in parts {
                    match p {
                        Query::Term(t) => match Self::fts_expr(t) {
                            Some(Some(e)) => fts.push(e),
                            Some(None) => return "0".into(),
                            None => rest.push(p),
                        },
                        _ => rest.push(p),
                    }
                }
                // An exact address with more than FEW_ROWS rows beside full-text terms also
                // joins the MATCH, by the words of its local part (`u33` of `u33@contoso.com`)
                // in its column: every row holding the address has them, so no row is lost, and
                // the exact test stays in `rest`. FTS5 then intersects a rare word with the
                // others itself — one pass, where testing the words per message of a busy
                // mailbox cost a full-text lookup each (~1 ms) and 0.7 s for 800 messages. The
                // domain's words are left out: shared by every address of the domain, they made
                // the intersection as slow again. An address with few rows is a needle.
                let mut needle = false;
                if !fts.is_empty() {
                    for p in parts {
                        let (to, address) = match p {
                            Query::Term(Term::To(AddressFilter::Address(a))) => (true, a),
                            Query::Term(Term::From(AddressFilter::Address(a))) => (false, a),
                            _ => continue,
                        };
                        if self.few.contains(&(to, address.clone())) {
                            needle = true;
                            continue;
                        }
                        let column = if to { "recipients" } else { "sender" };
                        let words = local_part_words(address);
                        needle |= words.is_empty();
                        fts.extend(words.into_iter().map(|w| format!("{column} : \"{w}\"")));
                    }
                }
                // Beside a Message-ID or hash (a handful of rows) the full-text test is a
                // per-row check, so a common word is never materialized for a few rows.
                // (Or beside an address with no such word.)
                needle |= parts
                    .iter()
                    .any(|p| matches!(p, Query::Term(Term::MessageId(_) | Term::Sha256(_))));
                let mut v = Vec::new();
                if !fts.is_empty() {
                    if needle {
                        let m = self.bind(fts.join(" AND "));
                        v.push(format!(
                            "EXISTS (SELECT 1 FROM trace_fts WHERE trace_fts MATCH {m} AND rowid = t.id)"
                        ));
                    } else {
                        v.push(self.fts_in(&fts));
                    }
                }
                for p in rest {
                    v.push(format!("({})", self.compile(p)));
                }
                v.join(" AND ")
            }
        }
    }

    fn term(&mut self, t: &Term) -> String {
        if let Some(e) = Self::fts_expr(t) {
            return match e {
                Some(e) => self.fts_in(&[e]),
                None => "0".into(),
            };
        }
        match t {
            Term::From(AddressFilter::Address(a)) => format!("t.sender = {}", self.bind(a.clone())),
            Term::From(AddressFilter::Domain(d)) => {
                format!("t.sender_domain = {}", self.bind(d.clone()))
            }
            Term::To(AddressFilter::Address(a)) => format!(
                "t.id IN (SELECT trace_id FROM trace_recipient WHERE address = {}{})",
                self.bind(a.clone()),
                self.floor("trace_id")
            ),
            Term::To(AddressFilter::Domain(d)) => format!(
                "t.id IN (SELECT trace_id FROM trace_recipient WHERE domain = {}{})",
                self.bind(d.clone()),
                self.floor("trace_id")
            ),
            Term::MessageId(m) => format!("t.message_id = {}", self.bind(m.clone())),
            Term::Domain(d) => {
                let p = self.bind(d.clone());
                let f = self.floor("trace_id");
                format!(
                    "(t.sender_domain = {p} OR t.id IN (SELECT trace_id FROM trace_recipient WHERE domain = {p}{f}) \
                     OR t.id IN (SELECT trace_id FROM trace_url WHERE host = {p}{f}))"
                )
            }
            Term::Sha256(h) => format!(
                "t.id IN (SELECT trace_id FROM trace_attachment WHERE sha256 = {}{})",
                self.bind(h.clone()),
                self.floor("trace_id")
            ),
            Term::Disposition(DispositionFilter::Is(d)) => {
                format!("t.disposition = {}", self.bind(d.as_str().to_string()))
            }
            Term::Disposition(DispositionFilter::None) => "t.disposition IS NULL".into(),
            Term::Disposition(DispositionFilter::Any) => "t.disposition IS NOT NULL".into(),
            Term::Tenant(n) => format!("t.tenant = {}", self.bind(n.clone())),
            Term::Since(b) => format!("t.received >= {}", self.bind(b.resolve(self.now))),
            Term::Until(b) => format!("t.received < {}", self.bind(b.resolve(self.now))),
            Term::Retracted(true) => "t.retracted_at IS NOT NULL".into(),
            Term::Retracted(false) => "t.retracted_at IS NULL".into(),
            // Answered by fts_expr above.
            Term::Text { .. }
            | Term::Subject(_)
            | Term::Url(_)
            | Term::From(AddressFilter::Word(_))
            | Term::To(AddressFilter::Word(_)) => "0".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::query::parse;

    const NOW: i64 = 1_795_132_800;

    fn record(i: usize, recipients: &[(&str, RecipientKind)]) -> TraceRecord {
        TraceRecord {
            tenant: ["contoso", "fabrikam"][i % 2].into(),
            message_id: format!("<s{i}@x.example>"),
            sender: format!("s{}@x.example", i % 3),
            subject: format!("Invoice {i}"),
            // Some share a received time, so the id tie-break is exercised too.
            received: NOW - (i as i64 / 2) * 60,
            recipients: recipients
                .iter()
                .map(|(address, kind)| Recipient {
                    address: (*address).into(),
                    kind: *kind,
                })
                .collect(),
            disposition: i.is_multiple_of(4).then_some(Disposition::Malicious),
            ..TraceRecord::default()
        }
    }

    fn summary_of(r: &TraceRecord) -> TraceSummary {
        TraceSummary {
            tenant: r.tenant.clone(),
            message_id: r.message_id.clone(),
            sender: r.sender.clone(),
            subject: r.subject.clone(),
            received: r.received,
            disposition: r.disposition,
            retraction_state: r.retraction_state.clone(),
            copies: r.delivered_to().len() as u64,
        }
    }

    #[test]
    fn summaries_match_full_records_and_delivered_to() {
        use RecipientKind::{Bcc, Cc, Envelope, To};
        let shapes: &[&[(&str, RecipientKind)]] = &[
            // Envelope recipients win over header ones.
            &[
                ("a@c.com", Envelope),
                ("b@c.com", Envelope),
                ("x@c.com", To),
            ],
            // Only header recipients, one address both To and Cc.
            &[("a@c.com", To), ("b@c.com", Cc), ("a@c.com", Cc)],
            // An envelope address that is also a header recipient, and a repeated envelope row.
            &[
                ("a@c.com", To),
                ("a@c.com", Envelope),
                ("a@c.com", Envelope),
            ],
            &[("d@c.com", Bcc)],
            &[],
        ];
        let mut store = Store::open_in_memory().unwrap();
        let records: Vec<TraceRecord> = (0..40)
            .map(|i| record(i, shapes[i % shapes.len()]))
            .collect();
        store.upsert_trace(&records).unwrap();
        // A later delivery report adds envelope recipients to a message known by its headers.
        let mut merged = record(1, &[("b@c.com", Envelope), ("e@c.com", Envelope)]);
        merged.recipients.push(Recipient {
            address: "e@c.com".into(),
            kind: Envelope,
        });
        store.upsert_trace(&[merged]).unwrap();
        let id = store.trace_by_message_id("<s2@x.example>").unwrap()[0]
            .id
            .unwrap();
        store
            .set_retraction(id, Some(NOW), Some("partial"))
            .unwrap();

        let copies: Vec<u64> = store
            .search_summaries_at(&parse("").unwrap(), 100, 0, NOW, |s| s)
            .unwrap()
            .iter()
            .filter(|s| {
                ["<s0@x.example>", "<s1@x.example>", "<s4@x.example>"]
                    .contains(&s.message_id.as_str())
            })
            .map(|s| s.copies)
            .collect();
        // Newest first: s1 (merged: envelope b, e), s0 (envelope a, b), s4 (no recipients).
        assert_eq!(copies, vec![2, 2, 0]);

        for q in [
            "",
            "invoice",
            "-disposition:malicious",
            "tenant:fabrikam",
            "to:a@c.com",
        ] {
            let query = parse(q).unwrap();
            for window in [0, 20, RECENT_WINDOW] {
                store.set_search_window(window);
                for (limit, offset) in [(100, 0), (1, 0), (3, 2), (10, 5), (0, 3), (5, 38)] {
                    let full: Vec<TraceSummary> = store
                        .search_at(&query, limit, offset, NOW)
                        .unwrap()
                        .iter()
                        .map(summary_of)
                        .collect();
                    let light = store
                        .search_summaries_at(&query, limit, offset, NOW, |s| s)
                        .unwrap();
                    assert_eq!(
                        light, full,
                        "{q:?} window {window} limit {limit} offset {offset}"
                    );
                }
            }
        }
        let mapped = store
            .search_summaries_at(&parse("").unwrap(), 100, 0, NOW, |s| s.copies)
            .unwrap();
        assert_eq!(mapped.len(), 40);
        assert_eq!(mapped.iter().sum::<u64>(), 8 * (2 + 2 + 1 + 1));
    }
}
