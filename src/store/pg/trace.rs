//! The trace on PostgreSQL: the same rows as SQLite (`store::trace`), and the query language
//! compiled to PostgreSQL's full-text search.
//!
//! **Words.** SQLite's trace has a contentless FTS5 index (tokenizer `unicode61
//! remove_diacritics 2`) over subject, sender, recipients and URLs. For the same answers here the
//! words come from that very tokenizer: [`words`] runs the text through an in-memory FTS5 table
//! of the bundled SQLite and reads the tokens back (`fts5vocab`), at ingest and for each query's
//! phrases, so case folding, diacritics and separators are SQLite's on both backends. Each trace
//! row keeps them in a `tsvector` column `fts` maintained on upsert (not a generated column: the
//! words come from the client), one lexeme per distinct word with a weight per column (A subject,
//! B sender, C recipients, D URLs), under a GIN index; and the words of each column in order
//! (`fts_subject` …, space-separated), against which a phrase of several words is checked exactly
//! (FTS5 phrases are consecutive words in one column, with no limit on a column's length, where
//! `tsvector` positions stop at 16,383). A single word needs only the GIN index.
//!
//! **Order.** Searches are newest first (`received DESC, id DESC`) through the B-tree index
//! `(received, id)`, with the SQLite store's newest-first window (`Store::windowed`, sized by
//! `set_search_window`, [`RECENT_WINDOW`] rows by default): the query runs first among the
//! rows received since the newest window/20 rows, then the window, then unbounded. Inside a
//! window the rows are read newest first and tested one by one (a fenced subquery), so an
//! attempt costs at most its rows, fewer when the page fills; every subquery is bounded by the
//! window's smallest id. A query with an exact Message-ID, hash, sender or recipient at its top
//! level skips the window ([`windowed`]): its own index answers it at once. Unbounded, a
//! `domain:` query runs as one newest-first `LIMIT` per source (sender, recipients, URLs),
//! each planned from its own index. Before the window the planner walked the trace for a
//! multi-word phrase and a rare `domain:` (90-250 ms warm at 1M records) and, on a busy
//! machine, for common words too.
//!
//! **Writers.** `upsert_trace` and `set_disposition` take one transaction-scoped advisory lock
//! ([`TRACE_LOCK`]): trace writers queue as they do on SQLite's single write lock, so a batch's
//! new rows get ascending ids in the batch's order (the tie-break of equal received times, as on
//! SQLite), a message stored by two processes at once is inserted once and merged once, and two
//! batches that share messages in different orders cannot deadlock on their row locks.
//! `set_retraction` changes one row in one statement and needs no lock.

use super::migrations::Step;
use super::{PgConn, PgTx, get};
use crate::model::{Disposition, address_domain};
use crate::store::StoreError;
use crate::store::trace::{
    DispositionUpdate, Span, TraceRecord, TraceSummary, UpsertOutcome, split_ids, url_host,
};
use crate::trace::query::{AddressFilter, DispositionFilter, Query, Term};
use crate::trace::{Recipient, RecipientKind};
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

pub const STEPS: &[Step] = &[Step {
    name: "trace",
    sql: r#"
CREATE TABLE trace (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant             TEXT    NOT NULL,
    message_id         TEXT    NOT NULL,
    synthetic_id       BIGINT  NOT NULL DEFAULT 0,
    sender             TEXT    NOT NULL,
    sender_domain      TEXT    NOT NULL,
    sender_name        TEXT,
    envelope_sender    TEXT,
    subject            TEXT    NOT NULL,
    received           BIGINT  NOT NULL,
    size               BIGINT  NOT NULL,
    in_reply_to        TEXT    NOT NULL DEFAULT '',
    refs               TEXT    NOT NULL DEFAULT '',
    thread_index       TEXT,
    disposition        TEXT,
    disposition_rank   BIGINT,
    disposition_source TEXT,
    retracted_at       BIGINT,
    retraction_state   TEXT,
    -- The words of each full-text column (SQLite's unicode61 tokens, space-separated, in order)
    -- and their lexemes, weighted by column (A subject, B sender, C recipients, D URLs).
    fts_subject        TEXT     NOT NULL DEFAULT '',
    fts_sender         TEXT     NOT NULL DEFAULT '',
    fts_recipients     TEXT     NOT NULL DEFAULT '',
    fts_urls           TEXT     NOT NULL DEFAULT '',
    fts                TSVECTOR NOT NULL DEFAULT ''::tsvector,
    -- True when the words did not fit a tsvector (PostgreSQL's limit is 1 MB: a message to
    -- some 60,000 mailboxes): `fts` is empty and searches test the words columns of the row.
    fts_partial        BOOLEAN  NOT NULL DEFAULT FALSE,
    UNIQUE (message_id, tenant)
);
CREATE INDEX trace_received ON trace (received, id);
CREATE INDEX trace_sender ON trace (sender, received);
CREATE INDEX trace_sender_domain ON trace (sender_domain, received);
CREATE INDEX trace_tenant ON trace (tenant, received);
CREATE INDEX trace_disposition ON trace (disposition, received) WHERE disposition IS NOT NULL;
CREATE INDEX trace_retracted ON trace (retracted_at) WHERE retracted_at IS NOT NULL;
CREATE INDEX trace_retracted_received ON trace (received, id) WHERE retracted_at IS NOT NULL;
CREATE INDEX trace_fts ON trace USING GIN (fts);
CREATE INDEX trace_fts_partial ON trace (id) WHERE fts_partial;

CREATE TABLE trace_recipient (
    trace_id BIGINT NOT NULL REFERENCES trace (id) ON DELETE CASCADE,
    address  TEXT   NOT NULL,
    kind     TEXT   NOT NULL,
    domain   TEXT   NOT NULL,
    PRIMARY KEY (trace_id, address, kind)
);
CREATE INDEX trace_recipient_address ON trace_recipient (address);
CREATE INDEX trace_recipient_domain ON trace_recipient (domain);

CREATE TABLE trace_url (
    trace_id BIGINT NOT NULL REFERENCES trace (id) ON DELETE CASCADE,
    url      TEXT   NOT NULL,
    host     TEXT   NOT NULL,
    PRIMARY KEY (trace_id, url)
);
CREATE INDEX trace_url_host ON trace_url (host);

CREATE TABLE trace_attachment (
    trace_id BIGINT NOT NULL REFERENCES trace (id) ON DELETE CASCADE,
    sha256   TEXT   NOT NULL,
    PRIMARY KEY (trace_id, sha256)
);
CREATE INDEX trace_attachment_sha256 ON trace_attachment (sha256);

CREATE TABLE trace_ref (
    trace_id BIGINT NOT NULL REFERENCES trace (id) ON DELETE CASCADE,
    ref_id   TEXT   NOT NULL,
    PRIMARY KEY (trace_id, ref_id)
);
CREATE INDEX trace_ref_ref ON trace_ref (ref_id);
"#,
}];

/// Advisory lock key of trace writers ("cb trace" in ASCII, as a number).
const TRACE_LOCK: i64 = 0x6362_2074_7261_6365;

/// Longest lexeme kept in the `tsvector` (PostgreSQL refuses words of 2 KiB and more). A longer
/// word is indexed by its first bytes; a query for it matches those as a prefix and is then
/// checked exactly against the column's words.
const MAX_LEXEME: usize = 1000;

/// Bytes a `tsvector` may take before the row's words are left to its words columns
/// (PostgreSQL refuses more than 1 MiB).
const MAX_TSVECTOR: usize = 900_000;

/// The full-text columns, in FTS5's order, with the weight of their lexemes.
const FTS_COLUMNS: [(&str, char); 4] = [
    ("fts_subject", 'A'),
    ("fts_sender", 'B'),
    ("fts_recipients", 'C'),
    ("fts_urls", 'D'),
];

const COLUMNS: &str = "t.id, t.tenant, t.message_id, t.synthetic_id, t.sender, t.sender_name, \
    t.envelope_sender, t.subject, t.received, t.size, t.in_reply_to, t.refs, t.thread_index, \
    t.disposition, t.disposition_source, t.retracted_at, t.retraction_state";

/// [`TraceSummary`] columns, as `store::trace`'s: the copy count is the envelope recipients,
/// else the distinct recipients of any kind.
const SUMMARY_COLUMNS: &str = "t.tenant, t.message_id, t.sender, t.subject, t.received, \
    t.disposition, t.retraction_state, \
    (SELECT CASE WHEN count(*) FILTER (WHERE r.kind = 'envelope') > 0 \
                 THEN count(*) FILTER (WHERE r.kind = 'envelope') \
            ELSE count(DISTINCT r.address) END \
     FROM trace_recipient r WHERE r.trace_id = t.id)";

fn read_err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Postgres {
        what: format!("trace: {what}"),
        reason: e.to_string(),
    }
}

fn row_to_record(r: &Row) -> Result<TraceRecord, StoreError> {
    let disposition: Option<String> = get(r, 13)?;
    Ok(TraceRecord {
        id: Some(get(r, 0)?),
        tenant: get(r, 1)?,
        message_id: get(r, 2)?,
        synthetic_id: get::<i64>(r, 3)? != 0,
        sender: get(r, 4)?,
        sender_name: get(r, 5)?,
        envelope_sender: get(r, 6)?,
        subject: get(r, 7)?,
        received: get(r, 8)?,
        size: get::<i64>(r, 9)?.max(0) as u64,
        recipients: Vec::new(),
        in_reply_to: split_ids(&get::<String>(r, 10)?),
        references: split_ids(&get::<String>(r, 11)?),
        thread_index: get(r, 12)?,
        urls: Vec::new(),
        attachments: Vec::new(),
        disposition: disposition.and_then(|d| d.parse::<Disposition>().ok()),
        disposition_source: get(r, 14)?,
        retracted_at: get(r, 15)?,
        retraction_state: get(r, 16)?,
    })
}

fn row_to_summary(r: &Row) -> Result<TraceSummary, StoreError> {
    let disposition: Option<String> = get(r, 5)?;
    Ok(TraceSummary {
        tenant: get(r, 0)?,
        message_id: get(r, 1)?,
        sender: get(r, 2)?,
        subject: get(r, 3)?,
        received: get(r, 4)?,
        disposition: disposition.and_then(|d| d.parse::<Disposition>().ok()),
        retraction_state: get(r, 6)?,
        copies: get::<Option<i64>>(r, 7)?.unwrap_or(0).max(0) as u64,
    })
}

// ---------------------------------------------------------------------------------------------
// Words: SQLite's tokenizer

/// The words of one record's full-text columns (subject, sender, recipients, URLs).
type Words = [Vec<String>; 4];

thread_local! {
    /// An in-memory FTS5 table with the trace's tokenizer, and its per-token view.
    static TOKENIZER: std::cell::RefCell<Option<rusqlite::Connection>> =
        const { std::cell::RefCell::new(None) };
}

fn tokenizer_err(e: rusqlite::Error) -> StoreError {
    read_err("tokenize", e)
}

/// The unicode61 (remove_diacritics 2) words of each text of each row, in order: exactly what
/// the SQLite store's FTS5 index holds for the same text.
fn words<const N: usize>(rows: &[[&str; N]]) -> Result<Vec<[Vec<String>; N]>, StoreError> {
    let mut out: Vec<[Vec<String>; N]> = rows
        .iter()
        .map(|_| std::array::from_fn(|_| Vec::new()))
        .collect();
    if rows.is_empty() {
        return Ok(out);
    }
    TOKENIZER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let c = rusqlite::Connection::open_in_memory().map_err(tokenizer_err)?;
            c.execute_batch(
                "CREATE VIRTUAL TABLE tok USING fts5 (c0, c1, c2, c3, \
                     tokenize = 'unicode61 remove_diacritics 2'); \
                 CREATE VIRTUAL TABLE tok_words USING fts5vocab (tok, 'instance');",
            )
            .map_err(tokenizer_err)?;
            *slot = Some(c);
        }
        let Some(conn) = slot.as_mut() else {
            return Err(read_err("tokenize", "no tokenizer"));
        };
        let tx = conn.transaction().map_err(tokenizer_err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO tok (rowid, c0, c1, c2, c3) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(tokenizer_err)?;
            for (i, texts) in rows.iter().enumerate() {
                let col = |k: usize| texts.get(k).copied().unwrap_or("");
                insert
                    .execute(rusqlite::params![i as i64, col(0), col(1), col(2), col(3)])
                    .map_err(tokenizer_err)?;
            }
            let mut select = tx
                .prepare_cached("SELECT doc, col, \"offset\", term FROM tok_words")
                .map_err(tokenizer_err)?;
            let mut found: Vec<(usize, usize, i64, String)> = select
                .query_map([], |r| {
                    let col: String = r.get(1)?;
                    Ok((
                        r.get::<_, i64>(0)? as usize,
                        col.trim_start_matches('c')
                            .parse::<usize>()
                            .unwrap_or(usize::MAX),
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(tokenizer_err)?
                .collect::<Result<_, _>>()
                .map_err(tokenizer_err)?;
            found.sort_unstable_by_key(|a| (a.0, a.1, a.2));
            for (doc, col, _, term) in found {
                if let Some(slot) = out.get_mut(doc).and_then(|w| w.get_mut(col)) {
                    slot.push(term);
                }
            }
        }
        tx.execute("DELETE FROM tok", []).map_err(tokenizer_err)?;
        tx.commit().map_err(tokenizer_err)?;
        Ok(out)
    })
}

/// A word as a lexeme: at most [`MAX_LEXEME`] bytes, and whether it was cut.
fn lexeme(word: &str) -> (&str, bool) {
    if word.len() <= MAX_LEXEME {
        return (word, false);
    }
    let mut end = MAX_LEXEME;
    while !word.is_char_boundary(end) {
        end -= 1;
    }
    (&word[..end], true)
}

/// A quoted lexeme for `tsvector`/`tsquery` input.
fn quote(lexeme: &str) -> String {
    format!("'{}'", lexeme.replace('\\', "\\\\").replace('\'', "''"))
}

/// The `tsvector` of a record's words: each distinct word once, with the weight of every
/// column that holds it (position 1..4 = the column). `None` when it would not fit in
/// PostgreSQL's limit (then the row is searched through its words columns, `fts_partial`).
fn tsvector(words: &Words) -> Option<String> {
    let mut lexemes: BTreeMap<&str, Vec<(usize, char)>> = BTreeMap::new();
    for (i, ((_, weight), col)) in FTS_COLUMNS.iter().zip(words).enumerate() {
        for w in col {
            let at = lexemes.entry(lexeme(w).0).or_default();
            if !at.iter().any(|(p, _)| *p == i + 1) {
                at.push((i + 1, *weight));
            }
        }
    }
    // PostgreSQL's layout: an entry of 4 bytes, the lexeme (padded to 2), a count of positions
    // and 2 bytes per position.
    let size: usize = lexemes
        .iter()
        .map(|(lex, at)| 4 + lex.len().next_multiple_of(2) + 2 + 2 * at.len())
        .sum();
    if size > MAX_TSVECTOR {
        return None;
    }
    let mut out = String::new();
    for (lex, at) in lexemes {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&quote(lex));
        out.push(':');
        let at: Vec<String> = at.iter().map(|(p, w)| format!("{p}{w}")).collect();
        out.push_str(&at.join(","));
    }
    Some(out)
}

/// The words of a record as stored by SQLite's upsert: subject, sender with its display name,
/// recipients and URLs.
fn record_texts(rec: &TraceRecord) -> [String; 4] {
    let recipients: Vec<&str> = rec.recipients.iter().map(|r| r.address.as_str()).collect();
    [
        rec.subject.clone(),
        crate::store::trace::fts_sender(rec),
        recipients.join(" "),
        rec.urls.join(" "),
    ]
}

// ---------------------------------------------------------------------------------------------
// Writes

/// Stores records in one transaction (see `Store::upsert_trace`).
pub fn upsert(
    conn: &mut PgConn,
    records: &[TraceRecord],
) -> Result<Vec<UpsertOutcome>, StoreError> {
    let texts: Vec<[String; 4]> = records.iter().map(record_texts).collect();
    let refs: Vec<[&str; 4]> = texts
        .iter()
        .map(|t| [&*t[0], &*t[1], &*t[2], &*t[3]])
        .collect();
    let all_words = words(&refs)?;
    conn.transaction(|tx| {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&TRACE_LOCK])?;
        let mut out = Vec::with_capacity(records.len());
        // Runs of distinct (Message-ID, tenant): a message repeated in the batch is merged into
        // the row the run before it stored.
        let mut start = 0;
        let mut keys = HashSet::new();
        for (i, rec) in records.iter().enumerate() {
            if !keys.insert((&rec.message_id, &rec.tenant)) {
                out.extend(upsert_run(tx, &records[start..i], &all_words[start..i])?);
                start = i;
                keys.clear();
                keys.insert((&rec.message_id, &rec.tenant));
            }
        }
        out.extend(upsert_run(tx, &records[start..], &all_words[start..])?);
        Ok(out)
    })
}

/// Upserts records with distinct (Message-ID, tenant) pairs, a few statements for the lot.
fn upsert_run(
    tx: &PgTx<'_>,
    records: &[TraceRecord],
    words: &[Words],
) -> Result<Vec<UpsertOutcome>, StoreError> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    let message_ids: Vec<&str> = records.iter().map(|r| r.message_id.as_str()).collect();
    let tenants: Vec<&str> = records.iter().map(|r| r.tenant.as_str()).collect();
    let mut existing: HashMap<(String, String), (i64, Option<i64>)> = HashMap::new();
    for r in tx.query(
        "SELECT t.id, t.disposition_rank, t.message_id, t.tenant FROM trace t \
         JOIN unnest($1::text[], $2::text[]) AS k (message_id, tenant) \
           ON t.message_id = k.message_id AND t.tenant = k.tenant",
        &[&message_ids, &tenants],
    )? {
        existing.insert((get(&r, 2)?, get(&r, 3)?), (get(&r, 0)?, get(&r, 1)?));
    }
    let key = |rec: &TraceRecord| (rec.message_id.clone(), rec.tenant.clone());
    let new: Vec<usize> = (0..records.len())
        .filter(|&i| !existing.contains_key(&key(&records[i])))
        .collect();
    let inserted = insert_rows(tx, records, words, &new)?;
    let id_of = |rec: &TraceRecord| -> Result<i64, StoreError> {
        let k = key(rec);
        existing
            .get(&k)
            .map(|(id, _)| *id)
            .or_else(|| inserted.get(&k).copied())
            .ok_or_else(|| {
                read_err(
                    "upsert",
                    format!("no row for {} in tenant {} after inserting it", k.0, k.1),
                )
            })
    };
    let ids: Vec<i64> = records.iter().map(id_of).collect::<Result<_, _>>()?;

    // A more severe disposition on a stored row (checked again against the row as it is now).
    // Columns of (id, disposition, rank, source).
    type Upgrades<'a> = (Vec<i64>, Vec<&'a str>, Vec<i64>, Vec<Option<&'a str>>);
    let mut upgrade: Upgrades<'_> = Default::default();
    for (rec, id) in records.iter().zip(&ids) {
        if let (Some(d), Some((_, rank))) = (rec.disposition, existing.get(&key(rec)))
            && rank.is_none_or(|r| r > i64::from(d.severity()))
        {
            upgrade.0.push(*id);
            upgrade.1.push(d.as_str());
            upgrade.2.push(i64::from(d.severity()));
            upgrade.3.push(rec.disposition_source.as_deref());
        }
    }
    let upgraded: HashSet<i64> = if upgrade.0.is_empty() {
        HashSet::new()
    } else {
        tx.query(
            "UPDATE trace t SET disposition = u.disposition, disposition_rank = u.rank, \
             disposition_source = u.source \
             FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[]) AS u (id, disposition, rank, source) \
             WHERE t.id = u.id AND (t.disposition_rank IS NULL OR t.disposition_rank > u.rank) \
             RETURNING t.id",
            &[&upgrade.0, &upgrade.1, &upgrade.2, &upgrade.3],
        )?
        .iter()
        .map(|r| get(r, 0))
        .collect::<Result<_, _>>()?
    };
    let added = insert_children(tx, records, &ids)?;

    let mut out = Vec::with_capacity(records.len());
    for (rec, &id) in records.iter().zip(&ids) {
        if !existing.contains_key(&key(rec)) {
            out.push(UpsertOutcome::Inserted(id));
            continue;
        }
        if added.words_changed.contains(&id) {
            refresh_words(tx, id)?;
        }
        out.push(if upgraded.contains(&id) || added.any.contains(&id) {
            UpsertOutcome::Merged(id)
        } else {
            UpsertOutcome::Unchanged(id)
        });
    }
    Ok(out)
}

/// Inserts the rows `new` of `records` (in that order, so their ids ascend in it); returns
/// each one's id by (Message-ID, tenant).
fn insert_rows(
    tx: &PgTx<'_>,
    records: &[TraceRecord],
    words: &[Words],
    new: &[usize],
) -> Result<HashMap<(String, String), i64>, StoreError> {
    if new.is_empty() {
        return Ok(HashMap::new());
    }
    let pick = |f: &dyn Fn(&TraceRecord) -> Option<String>| -> Vec<Option<String>> {
        new.iter().map(|&i| f(&records[i])).collect()
    };
    let int = |f: &dyn Fn(&TraceRecord) -> Option<i64>| -> Vec<Option<i64>> {
        new.iter().map(|&i| f(&records[i])).collect()
    };
    let text_columns: Vec<Vec<Option<String>>> = vec![
        pick(&|r| Some(r.tenant.clone())),
        pick(&|r| Some(r.message_id.clone())),
        pick(&|r| Some(r.sender.clone())),
        pick(&|r| Some(address_domain(&r.sender).unwrap_or_default())),
        pick(&|r| r.sender_name.clone()),
        pick(&|r| r.envelope_sender.clone()),
        pick(&|r| Some(r.subject.clone())),
        pick(&|r| Some(r.in_reply_to.join(" "))),
        pick(&|r| Some(r.references.join(" "))),
        pick(&|r| r.thread_index.clone()),
        pick(&|r| r.disposition.map(|d| d.as_str().to_string())),
        pick(&|r| {
            r.disposition
                .and(r.disposition_source.as_deref())
                .map(str::to_string)
        }),
        pick(&|r| r.retraction_state.clone()),
    ];
    let int_columns: Vec<Vec<Option<i64>>> = vec![
        int(&|r| Some(i64::from(r.synthetic_id))),
        int(&|r| Some(r.received)),
        int(&|r| Some(r.size.min(i64::MAX as u64) as i64)),
        int(&|r| r.disposition.map(|d| i64::from(d.severity()))),
        int(&|r| r.retracted_at),
    ];
    let mut fts_columns: Vec<Vec<String>> = vec![Vec::new(); 5];
    let mut partial: Vec<bool> = Vec::new();
    for &i in new {
        let w = &words[i];
        for (k, col) in w.iter().enumerate() {
            fts_columns[k].push(col.join(" "));
        }
        let v = tsvector(w);
        partial.push(v.is_none());
        fts_columns[4].push(v.unwrap_or_default());
    }
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    for c in &text_columns {
        params.push(c);
    }
    for c in &int_columns {
        params.push(c);
    }
    for c in &fts_columns {
        params.push(c);
    }
    params.push(&partial);
    let rows = tx.query(
        "INSERT INTO trace (tenant, message_id, sender, sender_domain, sender_name, \
         envelope_sender, subject, in_reply_to, refs, thread_index, disposition, \
         disposition_source, retraction_state, synthetic_id, received, size, disposition_rank, \
         retracted_at, fts_subject, fts_sender, fts_recipients, fts_urls, fts, fts_partial) \
         SELECT tenant, message_id, sender, sender_domain, sender_name, envelope_sender, subject, \
         in_reply_to, refs, thread_index, disposition, disposition_source, retraction_state, \
         synthetic_id, received, size, disposition_rank, retracted_at, fts_subject, fts_sender, \
         fts_recipients, fts_urls, fts::tsvector, fts_partial \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
              $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
              $13::text[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], \
              $18::bigint[], $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], \
              $24::boolean[]) \
              WITH ORDINALITY AS u (tenant, message_id, sender, sender_domain, sender_name, \
              envelope_sender, subject, in_reply_to, refs, thread_index, disposition, \
              disposition_source, retraction_state, synthetic_id, received, size, \
              disposition_rank, retracted_at, fts_subject, fts_sender, fts_recipients, fts_urls, \
              fts, fts_partial, n) \
         ORDER BY n \
         RETURNING id, message_id, tenant",
        &params,
    )?;
    rows.iter()
        .map(|r| Ok(((get(r, 1)?, get(r, 2)?), get(r, 0)?)))
        .collect()
}

/// Rows that gained children: any (recipients, URLs, attachments) and those whose full-text
/// words changed (recipients, URLs).
struct Added {
    any: HashSet<i64>,
    words_changed: HashSet<i64>,
}

fn insert_children(
    tx: &PgTx<'_>,
    records: &[TraceRecord],
    ids: &[i64],
) -> Result<Added, StoreError> {
    let mut recipients: (Vec<i64>, Vec<&str>, Vec<&str>, Vec<String>) = Default::default();
    let mut urls: (Vec<i64>, Vec<&str>, Vec<String>) = Default::default();
    let mut attachments: (Vec<i64>, Vec<&str>) = Default::default();
    let mut refs: (Vec<i64>, Vec<&str>) = Default::default();
    for (rec, &id) in records.iter().zip(ids) {
        for r in &rec.recipients {
            recipients.0.push(id);
            recipients.1.push(&r.address);
            recipients.2.push(r.kind.as_str());
            recipients
                .3
                .push(address_domain(&r.address).unwrap_or_default());
        }
        for u in &rec.urls {
            urls.0.push(id);
            urls.1.push(u);
            urls.2.push(url_host(u));
        }
        for h in &rec.attachments {
            attachments.0.push(id);
            attachments.1.push(h);
        }
        for r in rec.in_reply_to.iter().chain(&rec.references) {
            refs.0.push(id);
            refs.1.push(r);
        }
    }
    let ids_of = |rows: Vec<Row>| -> Result<HashSet<i64>, StoreError> {
        rows.iter().map(|r| get(r, 0)).collect()
    };
    let mut added = Added {
        any: HashSet::new(),
        words_changed: HashSet::new(),
    };
    if !recipients.0.is_empty() {
        let got = ids_of(tx.query(
            "INSERT INTO trace_recipient (trace_id, address, kind, domain) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) \
             ON CONFLICT DO NOTHING RETURNING trace_id",
            &[&recipients.0, &recipients.1, &recipients.2, &recipients.3],
        )?)?;
        added.words_changed.extend(&got);
        added.any.extend(got);
    }
    if !urls.0.is_empty() {
        let got = ids_of(tx.query(
            "INSERT INTO trace_url (trace_id, url, host) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]) \
             ON CONFLICT DO NOTHING RETURNING trace_id",
            &[&urls.0, &urls.1, &urls.2],
        )?)?;
        added.words_changed.extend(&got);
        added.any.extend(got);
    }
    if !attachments.0.is_empty() {
        added.any.extend(ids_of(tx.query(
            "INSERT INTO trace_attachment (trace_id, sha256) \
             SELECT * FROM unnest($1::bigint[], $2::text[]) \
             ON CONFLICT DO NOTHING RETURNING trace_id",
            &[&attachments.0, &attachments.1],
        )?)?);
    }
    if !refs.0.is_empty() {
        tx.execute(
            "INSERT INTO trace_ref (trace_id, ref_id) SELECT * FROM unnest($1::bigint[], $2::text[]) \
             ON CONFLICT DO NOTHING",
            &[&refs.0, &refs.1],
        )?;
    }
    Ok(added)
}

/// Rewrites a row's words from the stored row after recipients or URLs were merged in, as
/// SQLite's `refresh_fts` does: distinct recipient addresses and URLs in byte order.
fn refresh_words(tx: &PgTx<'_>, id: i64) -> Result<(), StoreError> {
    refresh_words_of(tx, &[id]).map(|_| ())
}

/// Recomputes the words columns and the `tsvector` of every trace row (after `store copy`
/// brought rows in without them), a thousand rows a round; the rows done.
pub fn refresh_all_words(tx: &PgTx<'_>) -> Result<u64, StoreError> {
    let ids: Vec<i64> = tx
        .query("SELECT id FROM trace ORDER BY id", &[])?
        .iter()
        .map(|r| get(r, 0))
        .collect::<Result<_, _>>()?;
    let mut done = 0;
    for chunk in ids.chunks(1000) {
        done += refresh_words_of(tx, chunk)?;
    }
    Ok(done)
}

/// The words of the rows `ids` from what they hold now (subject, sender and display name,
/// recipients, URLs), as an upsert writes them.
fn refresh_words_of(tx: &PgTx<'_>, ids: &[i64]) -> Result<u64, StoreError> {
    let ids = ids.to_vec();
    let rows = tx.query(
        "SELECT t.id, t.subject, t.sender, t.sender_name, \
           (SELECT string_agg(a, ' ' ORDER BY a) FROM (SELECT DISTINCT address COLLATE \"C\" AS a \
              FROM trace_recipient WHERE trace_id = t.id) d), \
           (SELECT string_agg(url, ' ' ORDER BY url COLLATE \"C\") FROM trace_url WHERE trace_id = t.id) \
         FROM trace t WHERE t.id = ANY($1) ORDER BY t.id",
        &[&ids],
    )?;
    let mut texts: Vec<(i64, [String; 4])> = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = get(row, 0)?;
        let subject: String = get(row, 1)?;
        let sender: String = get(row, 2)?;
        let name: Option<String> = get(row, 3)?;
        let recipients: Option<String> = get(row, 4)?;
        let urls: Option<String> = get(row, 5)?;
        let sender = match name {
            Some(n) => format!("{sender} {n}"),
            None => sender,
        };
        texts.push((
            id,
            [
                subject,
                sender,
                recipients.unwrap_or_default(),
                urls.unwrap_or_default(),
            ],
        ));
    }
    let refs: Vec<[&str; 4]> = texts
        .iter()
        .map(|(_, t)| [t[0].as_str(), &t[1], &t[2], &t[3]])
        .collect();
    let all = words(&refs)?;
    if all.len() != texts.len() {
        return Err(read_err(
            "refresh words",
            format!("{} rows, words for {}", texts.len(), all.len()),
        ));
    }
    // One statement for the whole round.
    let mut cols: [Vec<String>; 4] = Default::default();
    let (mut vectors, mut partial) = (Vec::new(), Vec::new());
    for w in &all {
        for (c, words) in cols.iter_mut().zip(w.iter()) {
            c.push(words.join(" "));
        }
        let v = tsvector(w);
        partial.push(v.is_none());
        vectors.push(v.unwrap_or_default());
    }
    let ids: Vec<i64> = texts.iter().map(|(id, _)| *id).collect();
    tx.execute(
        "UPDATE trace SET fts_subject = u.s, fts_sender = u.se, fts_recipients = u.r, \
         fts_urls = u.ur, fts = u.v::tsvector, fts_partial = u.p \
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::bool[]) AS u(id, s, se, r, ur, v, p) \
         WHERE trace.id = u.id",
        &[
            &ids, &cols[0], &cols[1], &cols[2], &cols[3], &vectors, &partial,
        ],
    )?;
    Ok(texts.len() as u64)
}

/// Sets a more severe disposition on every row with this Message-ID (see `Store::set_disposition`).
pub fn set_disposition(
    conn: &mut PgConn,
    tenant: Option<&str>,
    message_id: &str,
    disposition: Disposition,
    source: &str,
) -> Result<DispositionUpdate, StoreError> {
    conn.transaction(|tx| {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&TRACE_LOCK])?;
        let matched: i64 = get(
            &tx.query_one(
                "SELECT count(*) FROM trace WHERE message_id = $1 AND ($2::text IS NULL OR tenant = $2)",
                &[&message_id, &tenant],
            )?,
            0,
        )?;
        let upgraded = tx.execute(
            "UPDATE trace SET disposition = $3, disposition_rank = $4, disposition_source = $5 \
             WHERE message_id = $1 AND ($2::text IS NULL OR tenant = $2) \
             AND (disposition_rank IS NULL OR disposition_rank > $4)",
            &[
                &message_id,
                &tenant,
                &disposition.as_str(),
                &i64::from(disposition.severity()),
                &source,
            ],
        )?;
        Ok(DispositionUpdate {
            matched: matched.max(0) as usize,
            upgraded: upgraded as usize,
        })
    })
}

pub fn set_retraction(
    conn: &PgConn,
    id: i64,
    retracted_at: Option<i64>,
    state: Option<&str>,
) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE trace SET retracted_at = $2, retraction_state = $3 WHERE id = $1",
        &[&id, &retracted_at, &state],
    )? == 1)
}

// ---------------------------------------------------------------------------------------------
// Reads

pub fn by_id(conn: &PgConn, id: i64) -> Result<Option<TraceRecord>, StoreError> {
    let rows = conn.query(
        &format!("SELECT {COLUMNS} FROM trace t WHERE t.id = $1"),
        &[&id],
    )?;
    let recs = rows.iter().map(row_to_record).collect::<Result<_, _>>()?;
    Ok(with_details(conn, recs)?.pop())
}

pub fn by_message_id(conn: &PgConn, message_id: &str) -> Result<Vec<TraceRecord>, StoreError> {
    let Some(id) = crate::model::normalize_message_id(message_id) else {
        return Ok(Vec::new());
    };
    let rows = conn.query(
        &format!(
            "SELECT {COLUMNS} FROM trace t WHERE t.message_id = $1 ORDER BY t.tenant COLLATE \"C\""
        ),
        &[&id],
    )?;
    let recs = rows.iter().map(row_to_record).collect::<Result<_, _>>()?;
    with_details(conn, recs)
}

pub fn replies_to(conn: &PgConn, message_ids: &[String]) -> Result<Vec<TraceRecord>, StoreError> {
    let rows = conn.query(
        &format!(
            "SELECT {COLUMNS} FROM trace t WHERE t.id IN \
             (SELECT trace_id FROM trace_ref WHERE ref_id = ANY($1)) \
             ORDER BY t.received DESC, t.id DESC"
        ),
        &[&message_ids],
    )?;
    let recs = rows.iter().map(row_to_record).collect::<Result<_, _>>()?;
    with_details(conn, recs)
}

/// Loads recipients, URLs and attachments of many records, in SQLite's order.
pub fn with_details(
    conn: &PgConn,
    mut recs: Vec<TraceRecord>,
) -> Result<Vec<TraceRecord>, StoreError> {
    if recs.is_empty() {
        return Ok(recs);
    }
    let at: HashMap<i64, usize> = recs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.id.map(|id| (id, i)))
        .collect();
    let ids: Vec<i64> = at.keys().copied().collect();
    for row in conn.query(
        "SELECT trace_id, address, kind FROM trace_recipient WHERE trace_id = ANY($1) ORDER BY trace_id, \
         CASE kind WHEN 'envelope' THEN 0 WHEN 'to' THEN 1 WHEN 'cc' THEN 2 ELSE 3 END, \
         address COLLATE \"C\"",
        &[&ids],
    )? {
        let kind: String = get(&row, 2)?;
        if let Some(&i) = at.get(&get::<i64>(&row, 0)?) {
            recs[i].recipients.push(Recipient {
                address: get(&row, 1)?,
                kind: RecipientKind::parse(&kind).unwrap_or(RecipientKind::To),
            });
        }
    }
    for row in conn.query(
        "SELECT trace_id, url FROM trace_url WHERE trace_id = ANY($1) ORDER BY trace_id, url COLLATE \"C\"",
        &[&ids],
    )? {
        if let Some(&i) = at.get(&get::<i64>(&row, 0)?) {
            recs[i].urls.push(get(&row, 1)?);
        }
    }
    for row in conn.query(
        "SELECT trace_id, sha256 FROM trace_attachment WHERE trace_id = ANY($1) \
         ORDER BY trace_id, sha256 COLLATE \"C\"",
        &[&ids],
    )? {
        if let Some(&i) = at.get(&get::<i64>(&row, 0)?) {
            recs[i].attachments.push(get(&row, 1)?);
        }
    }
    Ok(recs)
}

/// Records matching `query`, newest first, without their recipients, URLs and attachments
/// ([`with_details`] adds them), over the rows `span` says (`Store::windowed`).
pub(crate) fn search(
    conn: &PgConn,
    query: &Query,
    limit: usize,
    offset: usize,
    now: i64,
    span: Span,
) -> Result<Vec<TraceRecord>, StoreError> {
    select(conn, COLUMNS, query, limit, offset, now, span)?
        .iter()
        .map(row_to_record)
        .collect()
}

/// The same records as [`search`], as summaries through `map`.
pub(crate) fn search_summaries<T>(
    conn: &PgConn,
    query: &Query,
    limit: usize,
    offset: usize,
    now: i64,
    span: Span,
    mut map: impl FnMut(TraceSummary) -> T,
) -> Result<Vec<T>, StoreError> {
    select(conn, SUMMARY_COLUMNS, query, limit, offset, now, span)?
        .iter()
        .map(|r| row_to_summary(r).map(&mut map))
        .collect()
}

/// Rows in the newest-first window of a PostgreSQL store (`Store::set_search_window`). Smaller
/// than SQLite's `RECENT_WINDOW`: here a window that falls short costs a test of each of its
/// rows (SQLite bounds its index lookups by id instead); the trace bench at 1M records, on a
/// busy machine, had p95 13 ms with 2,000 rows and 23 ms with 10,000.
pub const RECENT_WINDOW: usize = 2_000;

/// Whether a search of `query` tries the newest-first window first: not when one of its terms
/// at the top level is an exact Message-ID, hash, sender or recipient, which PostgreSQL finds
/// through that term's own index at once (a window that falls short would only add its walk).
pub fn windowed(query: &Query) -> bool {
    let needle = |q: &Query| {
        matches!(
            q,
            Query::Term(
                Term::MessageId(_)
                    | Term::Sha256(_)
                    | Term::From(AddressFilter::Address(_) | AddressFilter::Domain(_))
                    | Term::To(AddressFilter::Address(_))
            )
        )
    };
    match query {
        Query::And(parts) => !parts.iter().any(needle),
        q => !needle(q),
    }
}

/// The largest row id (`None`: an empty trace).
pub fn newest_id(conn: &PgConn) -> Result<Option<i64>, StoreError> {
    get(&conn.query_one("SELECT max(id) FROM trace", &[])?, 0)
}

/// `(received, smallest id)` of the rows at least as new as the `window`-th newest row;
/// `None` when the trace has fewer rows (`Store::recent_window`).
pub fn window_bounds(conn: &PgConn, window: usize) -> Result<Option<(i64, i64)>, StoreError> {
    let Some(row) = conn.query_opt(
        "SELECT received FROM trace ORDER BY received DESC LIMIT 1 OFFSET $1",
        &[&(window.min(i64::MAX as usize) as i64 - 1).max(0)],
    )?
    else {
        return Ok(None);
    };
    let since: i64 = get(&row, 0)?;
    let floor: Option<i64> = get(
        &conn.query_one("SELECT min(id) FROM trace WHERE received >= $1", &[&since])?,
        0,
    )?;
    Ok(floor.map(|floor| (since, floor)))
}

fn select(
    conn: &PgConn,
    columns: &str,
    query: &Query,
    limit: usize,
    offset: usize,
    now: i64,
    span: Span,
) -> Result<Vec<Row>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let order = "ORDER BY t.received DESC, t.id DESC";
    let page = format!(
        "LIMIT {} OFFSET {}",
        limit.min(i64::MAX as usize),
        offset.min(i64::MAX as usize)
    );
    if !matches!(span, Span::Window { .. })
        && let Some((others, domain)) = domain_term(query)
    {
        // `domain:` is three sources (sender, recipients, URLs); as one condition their OR of
        // subqueries is estimated to match most rows, so PostgreSQL walked the whole trace
        // newest first for a domain of a hundred messages (235 ms at 1M records). Each source
        // alone, with its newest `limit + offset` rows, is planned from its own index; the page
        // is among their union.
        let want = limit.saturating_add(offset).min(i64::MAX as usize);
        let mut c = Compiler::new(now, None);
        let rest = if others.is_empty() {
            "TRUE".to_string()
        } else {
            c.compile(&Query::And(others))?
        };
        let p = c.bind(domain.to_string());
        let arms: Vec<String> = [
            format!("t.sender_domain = {p}"),
            format!("t.id IN (SELECT trace_id FROM trace_recipient WHERE domain = {p})"),
            format!("t.id IN (SELECT trace_id FROM trace_url WHERE host = {p})"),
        ]
        .iter()
        .map(|arm| {
            format!("(SELECT t.id FROM trace t WHERE ({rest}) AND {arm} {order} LIMIT {want})")
        })
        .collect();
        let sql = format!(
            "SELECT {columns} FROM trace t WHERE t.id IN ({}) {order} {page}",
            arms.join(" UNION ALL ")
        );
        return conn.query(&sql, &c.params.refs());
    }
    let floor = match span {
        Span::Window { floor, .. } => Some(floor),
        Span::AfterWindow | Span::All => None,
    };
    let mut c = Compiler::new(now, floor);
    let cond = c.compile(query)?;
    let (source, cond) = match span {
        // Inside the window the rows are read newest first and tested one by one (at most the
        // window's rows, fewer when the page fills): given the window's time bound beside a
        // common word, the planner intersected the word's whole GIN bitmap with it instead.
        Span::Window { since, .. } => (
            format!(
                "(SELECT * FROM trace WHERE received >= {} ORDER BY received DESC, id DESC OFFSET 0) t",
                c.bind(since)
            ),
            cond,
        ),
        // Words that fell short of a page among the newest rows are sparse: their matches are
        // read through the GIN index, then sorted. Left to itself the planner, misled by the
        // phrase check's default selectivity, sometimes walked the trace newest first instead
        // (up to 160 ms for "wire transfer" at 1M records, as ANALYZE's sample fell).
        Span::AfterWindow if has_words(query) => (
            format!("(SELECT * FROM trace t WHERE {cond} OFFSET 0) t"),
            "TRUE".to_string(),
        ),
        Span::AfterWindow | Span::All => ("trace t".to_string(), cond),
    };
    let sql = format!("SELECT {columns} FROM {source} WHERE {cond} {order} {page}");
    conn.query(&sql, &c.params.refs())
}

/// Whether `query` has a full-text term at its top level (one the GIN index can drive).
fn has_words(query: &Query) -> bool {
    let words = |q: &Query| {
        matches!(
            q,
            Query::Term(
                Term::Text { .. }
                    | Term::Subject(_)
                    | Term::Url(_)
                    | Term::From(AddressFilter::Word(_))
                    | Term::To(AddressFilter::Word(_))
            )
        )
    };
    match query {
        Query::And(parts) => parts.iter().any(words),
        q => words(q),
    }
}

/// A `domain:` term of `query` at its top level, and the rest of the query beside it.
fn domain_term(query: &Query) -> Option<(Vec<Query>, &str)> {
    match query {
        Query::Term(Term::Domain(d)) => Some((Vec::new(), d)),
        Query::And(parts) => {
            let at = parts
                .iter()
                .position(|p| matches!(p, Query::Term(Term::Domain(_))))?;
            let Query::Term(Term::Domain(d)) = &parts[at] else {
                return None;
            };
            let mut others = parts.clone();
            others.remove(at);
            Some((others, d))
        }
        _ => None,
    }
}

pub fn count(conn: &PgConn, query: &Query, now: i64) -> Result<u64, StoreError> {
    let (cond, params) = Compiler::run(query, now)?;
    let n: i64 = get(
        &conn.query_one(
            &format!("SELECT count(*) FROM trace t WHERE {cond}"),
            &params.refs(),
        )?,
        0,
    )?;
    Ok(n.max(0) as u64)
}

pub fn trace_count(conn: &PgConn) -> Result<u64, StoreError> {
    let n: i64 = get(&conn.query_one("SELECT count(*) FROM trace", &[])?, 0)?;
    Ok(n.max(0) as u64)
}

/// PostgreSQL's plan of a search (for benchmarks and debugging).
pub fn explain(conn: &PgConn, query: &Query, now: i64) -> Result<Vec<String>, StoreError> {
    let (cond, params) = Compiler::run(query, now)?;
    conn.query(
        &format!(
            "EXPLAIN SELECT {COLUMNS} FROM trace t WHERE {cond} ORDER BY t.received DESC, t.id DESC LIMIT 50"
        ),
        &params.refs(),
    )?
    .iter()
    .map(|r| get(r, 0))
    .collect()
}

// ---------------------------------------------------------------------------------------------
// The query language

/// Parameters of a compiled query.
#[derive(Default)]
struct Params {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Params {
    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// One FTS5 phrase of the query: its words, whether the last is a prefix, and its column
/// (`None`: any of the four).
struct Phrase {
    words: Vec<String>,
    prefix: bool,
    column: Option<usize>,
}

/// Compiles a [`Query`] to a WHERE condition over `trace t` with `$n` parameters: the same
/// rows as `store::trace`'s compiler to FTS5 and SQLite.
struct Compiler {
    params: Params,
    now: i64,
    /// The smallest row id that can match (the recent-window strategy), and its placeholder
    /// once a subquery is bounded by it (bound on first use: PostgreSQL refuses a parameter
    /// that no part of the statement gives a type).
    id_floor: Option<(i64, Option<String>)>,
}

impl Compiler {
    /// A compiler; `floor` bounds every subquery to ids at or above it (inside the window).
    fn new(now: i64, floor: Option<i64>) -> Compiler {
        Compiler {
            params: Params::default(),
            now,
            id_floor: floor.map(|f| (f, None)),
        }
    }

    /// The condition of `query` over the whole trace.
    fn run(query: &Query, now: i64) -> Result<(String, Params), StoreError> {
        let mut c = Compiler::new(now, None);
        let cond = c.compile(query)?;
        Ok((cond, c.params))
    }

    /// ` AND {column} >= floor` inside the window, else nothing.
    fn floor(&mut self, column: &str) -> String {
        let p = match self.id_floor {
            None => return String::new(),
            Some((_, Some(ref p))) => p.clone(),
            Some((floor, None)) => {
                let p = self.bind(floor);
                self.id_floor = Some((floor, Some(p.clone())));
                p
            }
        };
        format!(" AND {column} >= {p}")
    }

    fn bind(&mut self, v: impl ToSql + Sync + Send + 'static) -> String {
        self.params.values.push(Box::new(v));
        format!("${}", self.params.values.len())
    }

    /// The phrase of a full-text term (`Some(None)`: a phrase with no indexable characters,
    /// which matches nothing), or `None` for a term the full-text index does not answer. The
    /// rules of `store::trace`'s `fts_expr` and `fts_phrase`.
    fn phrase(term: &Term) -> Result<Option<Option<Phrase>>, StoreError> {
        let (text, column) = match term {
            Term::Text { text, .. } => (text.clone(), None),
            Term::Subject(s) => (s.clone(), Some(0)),
            Term::Url(u) => (u.clone(), Some(3)),
            Term::From(AddressFilter::Word(w)) => (format!("{w}*"), Some(1)),
            Term::To(AddressFilter::Word(w)) => (format!("{w}*"), Some(2)),
            _ => return Ok(None),
        };
        let (body, prefix) = match text.strip_suffix('*') {
            Some(b) => (b, true),
            None => (text.as_str(), false),
        };
        if !body.chars().any(char::is_alphanumeric) {
            return Ok(Some(None));
        }
        let mut found = words(&[[body]])?;
        let words = found.pop().map(|[w]| w).unwrap_or_default();
        Ok(Some(Some(Phrase {
            words,
            prefix,
            column,
        })))
    }

    /// The condition of several phrases that must all match: one `tsquery` for the GIN index,
    /// plus an exact check of the words' order where a phrase has more than one word (or a word
    /// longer than a lexeme); on a row whose words did not fit a `tsvector` (`fts_partial`),
    /// the exact check of every phrase.
    fn phrases(&mut self, phrases: &[Phrase]) -> String {
        let mut query = Vec::new();
        let mut exact = Vec::new();
        let mut exact_all = Vec::new();
        if phrases.iter().any(|p| p.words.is_empty()) {
            // FTS5: a phrase with no words matches nothing (checked before anything is bound).
            return "FALSE".into();
        }
        for p in phrases {
            let weight = p.column.map(|c| FTS_COLUMNS[c].1.to_string());
            let mut cut_any = false;
            for (i, w) in p.words.iter().enumerate() {
                let (lex, cut) = lexeme(w);
                cut_any |= cut;
                let star = if cut || (p.prefix && i + 1 == p.words.len()) {
                    "*"
                } else {
                    ""
                };
                let label = format!("{star}{}", weight.as_deref().unwrap_or(""));
                query.push(if label.is_empty() {
                    quote(lex)
                } else {
                    format!("{}:{label}", quote(lex))
                });
            }
            let check = self.exact(p);
            if p.words.len() > 1 || cut_any {
                exact.push(check.clone());
            }
            exact_all.push(check);
        }
        let q = self.bind(query.join(" & "));
        let mut indexed = vec![format!("t.fts @@ {q}::text::tsquery")];
        indexed.extend(exact);
        format!(
            "(({}) OR (t.fts_partial AND {}))",
            indexed.join(" AND "),
            exact_all.join(" AND ")
        )
    }

    /// The phrase's words, in order, in its column's words (any column's when it has none).
    fn exact(&mut self, p: &Phrase) -> String {
        let joined = p.words.join(" ");
        let (needle, hay_end) = if p.prefix {
            (format!(" {joined}"), "")
        } else {
            (format!(" {joined} "), " || ' '")
        };
        let needle = self.bind(needle);
        let columns: Vec<&str> = match p.column {
            Some(c) => vec![FTS_COLUMNS[c].0],
            None => FTS_COLUMNS.iter().map(|(c, _)| *c).collect(),
        };
        let tests: Vec<String> = columns
            .iter()
            .map(|c| format!("strpos(' ' || t.{c}{hay_end}, {needle}) > 0"))
            .collect();
        format!("({})", tests.join(" OR "))
    }

    fn compile(&mut self, q: &Query) -> Result<String, StoreError> {
        Ok(match q {
            Query::All => "TRUE".into(),
            Query::Term(t) => self.term(t)?,
            Query::Not(inner) => format!("NOT coalesce(({}), FALSE)", self.compile(inner)?),
            Query::Or(parts) => {
                let v: Vec<String> = parts
                    .iter()
                    .map(|p| Ok(format!("({})", self.compile(p)?)))
                    .collect::<Result<_, StoreError>>()?;
                v.join(" OR ")
            }
            Query::And(parts) => {
                // Every positive full-text term in one tsquery (GIN intersects them itself).
                let mut phrases = Vec::new();
                let mut rest = Vec::new();
                for p in parts {
                    match p {
                        Query::Term(t) => match Self::phrase(t)? {
                            Some(Some(ph)) => phrases.push(ph),
                            Some(None) => return Ok("FALSE".into()),
                            None => rest.push(p),
                        },
                        _ => rest.push(p),
                    }
                }
                let mut v = Vec::new();
                if !phrases.is_empty() {
                    v.push(self.phrases(&phrases));
                }
                for p in rest {
                    v.push(format!("({})", self.compile(p)?));
                }
                v.join(" AND ")
            }
        })
    }

    fn term(&mut self, t: &Term) -> Result<String, StoreError> {
        if let Some(p) = Self::phrase(t)? {
            return Ok(match p {
                Some(p) => self.phrases(&[p]),
                None => "FALSE".into(),
            });
        }
        Ok(match t {
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
            // Answered by `phrase` above.
            Term::Text { .. }
            | Term::Subject(_)
            | Term::Url(_)
            | Term::From(AddressFilter::Word(_))
            | Term::To(AddressFilter::Word(_)) => "FALSE".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_sqlites_unicode61_tokens() {
        let got = words(&[[
            "Invoice 9 — Rechnung überfällig",
            "Zoë.Bob@x.example",
            "",
            "e\u{301}cole",
        ]])
        .unwrap();
        assert_eq!(got[0][0], ["invoice", "9", "rechnung", "uberfallig"]);
        assert_eq!(got[0][1], ["zoe", "bob", "x", "example"]);
        assert!(got[0][2].is_empty());
        assert_eq!(got[0][3], ["ecole"]);
    }

    #[test]
    fn tsvector_has_one_lexeme_per_word_weighted_by_column() {
        let w: Words = [
            vec!["a".into(), "it's".into()],
            vec!["a".into()],
            vec![],
            vec!["b\\".into(), "a".into()],
        ];
        assert_eq!(
            tsvector(&w).as_deref(),
            Some(r"'a':1A,2B,4D 'b\\':4D 'it''s':1A")
        );
        let many: Words = [
            vec![],
            vec![],
            (0..70_000).map(|i| format!("u{i}")).collect(),
            vec![],
        ];
        assert_eq!(tsvector(&many), None, "too large for PostgreSQL");
        let long = "x".repeat(MAX_LEXEME + 5);
        assert_eq!(lexeme(&long), (&long[..MAX_LEXEME], true));
    }
}
