//! Automation state on PostgreSQL (see `store::automation`): what `watch` has acted on, phish
//! report decisions, the guard's holds and the intel verdicts — the same rows as SQLite.
//!
//! SQLite serialises every writer (`BEGIN IMMEDIATE`); here each write says what it needs:
//! - marks and decisions are single `INSERT … ON CONFLICT` statements (atomic on their key);
//! - a hold transition is one `UPDATE … WHERE state = from`: a second process's update waits
//!   for the first's row lock, then re-checks the state and changes nothing;
//! - recording a hold is "find the indicator's open hold, else create one": no row exists to
//!   lock before the first hold, so the transaction takes an advisory lock (transaction-scoped,
//!   released at commit) and recorders queue on it; the open hold found is also locked, so a
//!   confirmation waits until its messages are in;
//! - an intel verdict and its expiry first lock the message's trace row (`FOR UPDATE`, always
//!   trace before verdict, so the two never deadlock): what the message had before the
//!   verdict is read and written under that lock.
//!
//! The trace columns are read by their shared names; parameters compared with trace columns
//! carry explicit casts, so these queries do not depend on the trace area's integer widths.

use super::migrations::Step;
use super::{PgConn, PgTx, get};
use crate::intel::IndicatorKey;
use crate::model::Disposition;
use crate::store::StoreError;
use crate::store::automation::{
    HOLD_COLUMNS, HeldMatch, HeldMessage, HoldChange, HoldState, IndicatorRow, IntelVerdict,
    ReportDecision, time,
};
use crate::store::trace::DispositionUpdate;
use std::collections::BTreeSet;
use tokio_postgres::Row;

pub const STEPS: &[Step] = &[
    Step {
        name: "automation",
        sql: r#"
CREATE TABLE auto_handled (
    tenant      TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    disposition TEXT NOT NULL,
    copies      BIGINT NOT NULL,
    trigger     TEXT NOT NULL,
    job_id      BIGINT,
    at          BIGINT NOT NULL,
    PRIMARY KEY (tenant, message_id)
);
CREATE TABLE phish_report (
    tenant     TEXT NOT NULL,
    mailbox    TEXT NOT NULL,
    report_id  TEXT NOT NULL,
    reporter   TEXT NOT NULL,
    original   TEXT,
    verdict    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    decided_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, mailbox, report_id)
);
CREATE INDEX phish_report_original ON phish_report (original);
"#,
    },
    Step {
        name: "automation_guard",
        sql: r#"
CREATE TABLE automation_hold (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state           TEXT NOT NULL,
    indicator_file  TEXT NOT NULL,
    indicator_kind  TEXT NOT NULL,
    indicator_value TEXT NOT NULL,
    disposition     TEXT NOT NULL,
    reason          TEXT NOT NULL,
    messages        BIGINT NOT NULL,
    copies          BIGINT NOT NULL,
    trace_messages  BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    confirmed_by    TEXT,
    confirmed_at    BIGINT,
    closed_at       BIGINT
);
CREATE INDEX automation_hold_open ON automation_hold (state)
    WHERE state IN ('needs_confirmation', 'confirmed');
CREATE TABLE automation_hold_message (
    hold_id    BIGINT NOT NULL REFERENCES automation_hold (id),
    tenant     TEXT NOT NULL,
    message_id TEXT NOT NULL,
    copies     BIGINT NOT NULL,
    PRIMARY KEY (hold_id, tenant, message_id)
);
CREATE TABLE intel_verdict (
    tenant           TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    indicator_file   TEXT NOT NULL,
    indicator_kind   TEXT NOT NULL,
    indicator_value  TEXT NOT NULL,
    disposition      TEXT NOT NULL,
    source           TEXT NOT NULL,
    base_disposition TEXT,
    base_source      TEXT,
    at               BIGINT NOT NULL,
    expired_at       BIGINT,
    PRIMARY KEY (tenant, message_id)
);
CREATE INDEX intel_verdict_active ON intel_verdict (indicator_file) WHERE expired_at IS NULL;
"#,
    },
    Step {
        name: "watch_leader",
        sql: super::leader::SCHEMA,
    },
];

/// Advisory lock key of hold recording ("cb-holds" in ASCII, as a number).
const HOLD_LOCK: i64 = 0x6362_2d68_6f6c_6473;

/// `expr` with ASCII letters folded to lower case and nothing else, as SQLite's `lower()` does
/// (PostgreSQL's folds every letter, which would find more than SQLite does).
fn lower(expr: &str) -> String {
    format!("translate({expr}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')")
}

/// The disposition and delivered-copy count the policy last acted on for a message.
pub fn auto_handled(
    conn: &PgConn,
    tenant: &str,
    message_id: &str,
) -> Result<Option<(String, u64)>, StoreError> {
    conn.query_opt(
        "SELECT disposition, copies FROM auto_handled WHERE tenant = $1 AND message_id = $2",
        &[&tenant, &message_id],
    )?
    .map(|r| Ok((get(&r, 0)?, get::<i64>(&r, 1)? as u64)))
    .transpose()
}

/// What [`set_auto_handled`] records.
pub struct AutoHandled<'a> {
    pub tenant: &'a str,
    pub message_id: &'a str,
    pub disposition: &'a str,
    pub copies: u64,
    pub trigger: &'a str,
    pub job: Option<i64>,
    pub at: i64,
}

/// Records that the policy acted on a message (one statement: the last mark wins, a job once
/// recorded is kept when a later mark names none).
pub fn set_auto_handled(conn: &PgConn, m: &AutoHandled<'_>) -> Result<(), StoreError> {
    let copies = m.copies as i64;
    conn.execute(
        "INSERT INTO auto_handled (tenant, message_id, disposition, copies, trigger, job_id, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant, message_id) DO UPDATE SET disposition = excluded.disposition, \
         copies = excluded.copies, trigger = excluded.trigger, \
         job_id = COALESCE(excluded.job_id, auto_handled.job_id), at = excluded.at",
        &[
            &m.tenant,
            &m.message_id,
            &m.disposition,
            &copies,
            &m.trigger,
            &m.job,
            &m.at,
        ],
    )?;
    Ok(())
}

fn ids(rows: Vec<Row>) -> Result<Vec<i64>, StoreError> {
    rows.iter().map(|r| get(r, 0)).collect()
}

/// Trace row ids received at or after `since`, optionally only those with a disposition,
/// leaving out fully retracted ones; oldest first.
pub fn automation_ids(
    conn: &PgConn,
    since: i64,
    with_disposition: bool,
) -> Result<Vec<i64>, StoreError> {
    ids(conn.query(
        "SELECT id::BIGINT FROM trace WHERE received >= $1::BIGINT \
         AND (NOT $2::BOOLEAN OR disposition IS NOT NULL) \
         AND (retraction_state IS NULL OR retraction_state <> 'retracted') \
         ORDER BY received, id",
        &[&since, &with_disposition],
    )?)
}

/// Trace row ids that may carry one of the indicators (see
/// `Store::trace_matching_indicators`): the indicators travel as four parallel arrays.
pub fn matching_indicator_ids(
    conn: &PgConn,
    since: i64,
    indicators: &[IndicatorRow],
) -> Result<Vec<i64>, StoreError> {
    let kinds: Vec<&str> = indicators.iter().map(|i| i.kind.as_str()).collect();
    let values: Vec<&str> = indicators.iter().map(|i| i.value.as_str()).collect();
    let patterns: Vec<&str> = indicators.iter().map(|i| i.pattern.as_str()).collect();
    let any: Vec<bool> = indicators.iter().map(|i| i.any_subject).collect();
    let sender = lower("t.sender");
    let envelope = lower("coalesce(t.envelope_sender, '')");
    let url = lower("u.url");
    let sha = lower("a.sha256");
    let subject = lower("t.subject");
    let sql = format!(
        r"WITH i (kind, value, pattern, any_subject) AS (
              SELECT * FROM unnest($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BOOLEAN[]))
          SELECT t.id::BIGINT FROM trace t WHERE t.received >= $1::BIGINT
           AND (t.retraction_state IS NULL OR t.retraction_state <> 'retracted')
           AND EXISTS (SELECT 1 FROM i WHERE
             (i.kind = 'sender' AND ({sender} = i.value OR {envelope} = i.value))
             OR (i.kind = 'sha256' AND EXISTS (SELECT 1 FROM trace_attachment a
                  WHERE a.trace_id = t.id AND {sha} = i.value))
             OR (i.kind = 'url' AND EXISTS (SELECT 1 FROM trace_url u
                  WHERE u.trace_id = t.id AND rtrim({url}, '/') = i.value))
             OR (i.kind = 'domain' AND (strpos({sender}, i.value) > 0
                  OR strpos({envelope}, i.value) > 0
                  OR EXISTS (SELECT 1 FROM trace_url u WHERE u.trace_id = t.id
                             AND strpos({url}, i.value) > 0)))
             OR (i.kind = 'subject' AND (i.any_subject
                  OR {subject} LIKE i.pattern ESCAPE '\'
                  OR t.subject ~ '[^ -~]')))
           ORDER BY t.received, t.id"
    );
    ids(conn.query(&sql, &[&since, &kinds, &values, &patterns, &any])?)
}

/// Messages traced at or after `since`.
pub fn trace_messages_since(conn: &PgConn, since: i64) -> Result<u64, StoreError> {
    let r = conn.query_one(
        "SELECT count(*) FROM trace WHERE received >= $1::BIGINT",
        &[&since],
    )?;
    Ok(get::<i64>(&r, 0)? as u64)
}

/// Whether a report was decided already.
pub fn report_decided(
    conn: &PgConn,
    tenant: &str,
    mailbox: &str,
    report_id: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .query_opt(
            "SELECT 1 FROM phish_report WHERE tenant = $1 AND mailbox = $2 AND report_id = $3",
            &[&tenant, &mailbox, &report_id],
        )?
        .is_some())
}

/// Records a decision; the first decision of a report stands (`ON CONFLICT DO NOTHING`).
pub fn record_report(conn: &PgConn, d: &ReportDecision, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO phish_report \
         (tenant, mailbox, report_id, reporter, original, verdict, reason, decided_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (tenant, mailbox, report_id) DO NOTHING",
        &[
            &d.tenant,
            &d.mailbox,
            &d.report_id,
            &d.reporter,
            &d.original,
            &d.verdict,
            &d.reason,
            &now,
        ],
    )?;
    Ok(())
}

/// Distinct reporters recorded for an original.
pub fn reporters_of(conn: &PgConn, original: &str) -> Result<BTreeSet<String>, StoreError> {
    conn.query(
        "SELECT DISTINCT reporter FROM phish_report WHERE original = $1",
        &[&original],
    )?
    .iter()
    .map(|r| get(r, 0))
    .collect()
}

/// Every decided report, oldest first.
pub fn report_decisions(conn: &PgConn) -> Result<Vec<ReportDecision>, StoreError> {
    conn.query(
        "SELECT tenant, mailbox, report_id, reporter, original, verdict, reason \
         FROM phish_report ORDER BY decided_at, tenant, mailbox, report_id",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(ReportDecision {
            tenant: get(r, 0)?,
            mailbox: get(r, 1)?,
            report_id: get(r, 2)?,
            reporter: get(r, 3)?,
            original: get(r, 4)?,
            verdict: get(r, 5)?,
            reason: get(r, 6)?,
        })
    })
    .collect()
}

/// The indicator in columns 2–5 (file, kind, value, disposition) of a hold or verdict row.
fn indicator_at(r: &Row) -> Result<IndicatorKey, StoreError> {
    let disposition: String = get(r, 5)?;
    Ok(IndicatorKey {
        file: get(r, 2)?,
        kind: get(r, 3)?,
        value: get(r, 4)?,
        disposition: disposition.parse().unwrap_or(Disposition::Malicious),
    })
}

fn row_to_hold(r: &Row) -> Result<HeldMatch, StoreError> {
    let state: String = get(r, 1)?;
    Ok(HeldMatch {
        id: get(r, 0)?,
        state: HoldState::parse(&state),
        indicator: indicator_at(r)?,
        reason: get(r, 6)?,
        messages: get::<i64>(r, 7)? as u64,
        copies: get::<i64>(r, 8)? as u64,
        trace_messages: get::<i64>(r, 9)? as u64,
        created_at: time(get(r, 10)?),
        updated_at: time(get(r, 11)?),
        confirmed_by: get(r, 12)?,
        confirmed_at: get::<Option<i64>>(r, 13)?.map(time),
        closed_at: get::<Option<i64>>(r, 14)?.map(time),
    })
}

fn hold_in(tx: &PgTx<'_>, id: i64) -> Result<HeldMatch, StoreError> {
    row_to_hold(&tx.query_one(
        &format!("SELECT {HOLD_COLUMNS} FROM automation_hold WHERE id = $1"),
        &[&id],
    )?)
}

/// Records that `indicator` matched `messages` over a guard limit (see `Store::hold_record`).
pub fn hold_record(
    conn: &mut PgConn,
    indicator: &IndicatorKey,
    reason: &str,
    trace_messages: u64,
    messages: &[HeldMessage],
    now: i64,
) -> Result<(HeldMatch, HoldChange), StoreError> {
    let trace_messages = trace_messages as i64;
    let disposition = indicator.disposition.as_str();
    conn.transaction(|tx| {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&HOLD_LOCK])?;
        let open = tx.query_opt(
            "SELECT id FROM automation_hold WHERE state = 'needs_confirmation' \
             AND indicator_file = $1 AND indicator_kind = $2 AND indicator_value = $3 \
             AND disposition = $4 ORDER BY id DESC LIMIT 1 FOR UPDATE",
            &[
                &indicator.file,
                &indicator.kind,
                &indicator.value,
                &disposition,
            ],
        )?;
        let (id, created): (i64, bool) = match open {
            Some(r) => (get(&r, 0)?, false),
            None => {
                let r = tx.query_one(
                    "INSERT INTO automation_hold (state, indicator_file, indicator_kind, \
                     indicator_value, disposition, reason, messages, copies, trace_messages, \
                     created_at, updated_at) VALUES ('needs_confirmation', $1, $2, $3, $4, $5, \
                     0, 0, $6, $7, $7) RETURNING id",
                    &[
                        &indicator.file,
                        &indicator.kind,
                        &indicator.value,
                        &disposition,
                        &reason,
                        &trace_messages,
                        &now,
                    ],
                )?;
                (get(&r, 0)?, true)
            }
        };
        let mut added = 0u64;
        for m in messages {
            let copies = m.copies as i64;
            added += tx.execute(
                "INSERT INTO automation_hold_message (hold_id, tenant, message_id, copies) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&id, &m.tenant, &m.message_id, &copies],
            )?;
        }
        let change = if created {
            HoldChange::New
        } else if added > 0 {
            HoldChange::Extended { added }
        } else {
            HoldChange::Unchanged
        };
        if change != HoldChange::Unchanged {
            tx.execute(
                "UPDATE automation_hold SET reason = $2, trace_messages = $3, updated_at = $4, \
                 messages = (SELECT count(*) FROM automation_hold_message WHERE hold_id = $1), \
                 copies = (SELECT coalesce(sum(copies), 0)::BIGINT FROM automation_hold_message \
                           WHERE hold_id = $1) \
                 WHERE id = $1",
                &[&id, &reason, &trace_messages, &now],
            )?;
        }
        Ok((hold_in(tx, id)?, change))
    })
}

/// One hold by id.
pub fn hold(conn: &PgConn, id: i64) -> Result<Option<HeldMatch>, StoreError> {
    conn.query_opt(
        &format!("SELECT {HOLD_COLUMNS} FROM automation_hold WHERE id = $1"),
        &[&id],
    )?
    .map(|r| row_to_hold(&r))
    .transpose()
}

/// Holds, newest first (only open ones, or all).
pub fn holds(conn: &PgConn, open_only: bool) -> Result<Vec<HeldMatch>, StoreError> {
    conn.query(
        &format!(
            "SELECT {HOLD_COLUMNS} FROM automation_hold \
             WHERE NOT $1::BOOLEAN OR state IN ('needs_confirmation', 'confirmed') \
             ORDER BY id DESC"
        ),
        &[&open_only],
    )?
    .iter()
    .map(row_to_hold)
    .collect()
}

/// The messages of a hold.
pub fn hold_messages(conn: &PgConn, id: i64) -> Result<Vec<HeldMessage>, StoreError> {
    conn.query(
        "SELECT tenant, message_id, copies FROM automation_hold_message WHERE hold_id = $1 \
         ORDER BY tenant, message_id",
        &[&id],
    )?
    .iter()
    .map(|r| {
        Ok(HeldMessage {
            tenant: get(r, 0)?,
            message_id: get(r, 1)?,
            copies: get::<i64>(r, 2)? as u64,
        })
    })
    .collect()
}

/// Moves a hold from `from` to `to` in one statement; false when it is not in `from`.
pub fn hold_transition(
    conn: &PgConn,
    id: i64,
    from: HoldState,
    to: HoldState,
    by: Option<&str>,
    now: i64,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE automation_hold SET state = $3, updated_at = $4, \
         confirmed_by = CASE WHEN $3 = 'confirmed' THEN $5 ELSE confirmed_by END, \
         confirmed_at = CASE WHEN $3 = 'confirmed' THEN $4 ELSE confirmed_at END, \
         closed_at = CASE WHEN $3 IN ('released', 'expired') THEN $4 ELSE closed_at END \
         WHERE id = $1 AND state = $2",
        &[&id, &from.as_str(), &to.as_str(), &now, &by],
    )?;
    Ok(n == 1)
}

/// Sets a disposition from an intel indicator when it is an upgrade, remembering what the
/// message had before any intel verdict (see `Store::set_intel_disposition`).
pub fn set_intel_disposition(
    conn: &mut PgConn,
    tenant: &str,
    message_id: &str,
    indicator: &IndicatorKey,
    source: &str,
    now: i64,
) -> Result<DispositionUpdate, StoreError> {
    let disposition = indicator.disposition.as_str();
    let rank = i64::from(indicator.disposition.severity());
    conn.transaction(|tx| {
        let before = tx.query(
            "SELECT disposition, disposition_source FROM trace \
             WHERE message_id = $1::TEXT AND tenant = $2::TEXT ORDER BY id FOR UPDATE",
            &[&message_id, &tenant],
        )?;
        let matched = before.len();
        let upgraded = tx.execute(
            "UPDATE trace SET disposition = $3::TEXT, disposition_rank = $4::BIGINT, \
             disposition_source = $5::TEXT \
             WHERE message_id = $1::TEXT AND tenant = $2::TEXT \
             AND (disposition_rank IS NULL OR disposition_rank > $4::BIGINT)",
            &[&message_id, &tenant, &disposition, &rank, &source],
        )? as usize;
        if upgraded > 0 {
            let (base, base_source): (Option<String>, Option<String>) = match before.first() {
                Some(r) => (get(r, 0)?, get(r, 1)?),
                None => (None, None),
            };
            // An active verdict keeps the base it recorded; an expired one (or none) takes
            // the message's disposition now.
            tx.execute(
                "INSERT INTO intel_verdict (tenant, message_id, indicator_file, indicator_kind, \
                 indicator_value, disposition, source, base_disposition, base_source, at, \
                 expired_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL) \
                 ON CONFLICT (tenant, message_id) DO UPDATE SET \
                 indicator_file = excluded.indicator_file, \
                 indicator_kind = excluded.indicator_kind, \
                 indicator_value = excluded.indicator_value, \
                 disposition = excluded.disposition, source = excluded.source, \
                 at = excluded.at, \
                 base_disposition = CASE WHEN intel_verdict.expired_at IS NULL \
                     THEN intel_verdict.base_disposition ELSE excluded.base_disposition END, \
                 base_source = CASE WHEN intel_verdict.expired_at IS NULL \
                     THEN intel_verdict.base_source ELSE excluded.base_source END, \
                 expired_at = NULL",
                &[
                    &tenant,
                    &message_id,
                    &indicator.file,
                    &indicator.kind,
                    &indicator.value,
                    &disposition,
                    &source,
                    &base,
                    &base_source,
                    &now,
                ],
            )?;
        }
        Ok(DispositionUpdate { matched, upgraded })
    })
}

/// Intel verdicts in force.
pub fn intel_verdicts_active(conn: &PgConn) -> Result<Vec<IntelVerdict>, StoreError> {
    conn.query(
        "SELECT tenant, message_id, indicator_file, indicator_kind, indicator_value, \
         disposition, source FROM intel_verdict WHERE expired_at IS NULL \
         ORDER BY tenant, message_id",
        &[],
    )?
    .iter()
    .map(|r| {
        Ok(IntelVerdict {
            tenant: get(r, 0)?,
            message_id: get(r, 1)?,
            indicator: indicator_at(r)?,
            source: get(r, 6)?,
        })
    })
    .collect()
}

/// Expires the intel verdict of a message (see `Store::expire_intel_verdict`).
pub fn expire_intel_verdict(
    conn: &mut PgConn,
    tenant: &str,
    message_id: &str,
    now: i64,
) -> Result<Option<bool>, StoreError> {
    conn.transaction(|tx| {
        // Trace row first, as `set_intel_disposition` locks them.
        tx.query(
            "SELECT 1 FROM trace WHERE message_id = $1::TEXT AND tenant = $2::TEXT \
             ORDER BY id FOR UPDATE",
            &[&message_id, &tenant],
        )?;
        let Some(row) = tx.query_opt(
            "SELECT disposition, source, base_disposition, base_source FROM intel_verdict \
             WHERE tenant = $1 AND message_id = $2 AND expired_at IS NULL FOR UPDATE",
            &[&tenant, &message_id],
        )?
        else {
            return Ok(None);
        };
        let disposition: String = get(&row, 0)?;
        let source: String = get(&row, 1)?;
        let base: Option<String> = get(&row, 2)?;
        let base_source: Option<String> = get(&row, 3)?;
        let base_rank: Option<i64> = base
            .as_deref()
            .and_then(|d| d.parse::<Disposition>().ok())
            .map(|d| i64::from(d.severity()));
        let base = base_rank.and(base);
        let base_source = base_rank.and(base_source);
        let reverted = tx.execute(
            "UPDATE trace SET disposition = $5::TEXT, disposition_rank = $6::BIGINT, \
             disposition_source = $7::TEXT \
             WHERE message_id = $1::TEXT AND tenant = $2::TEXT AND disposition = $3::TEXT \
             AND disposition_source = $4::TEXT",
            &[
                &message_id,
                &tenant,
                &disposition,
                &source,
                &base,
                &base_rank,
                &base_source,
            ],
        )?;
        tx.execute(
            "UPDATE intel_verdict SET expired_at = $3 WHERE tenant = $1 AND message_id = $2",
            &[&tenant, &message_id, &now],
        )?;
        Ok(Some(reverted > 0))
    })
}
