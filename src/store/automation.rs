//! What `clawback watch` has already done (DESIGN §6), so a restart neither loses nor repeats
//! work: the messages the auto-retract policy acted on (at which disposition, over how many
//! delivered copies) and every phish report decided; and the automation guard's state (issue
//! 11): matches held for confirmation and the verdicts intel wrote, so they can expire.

use super::trace::DispositionUpdate;
use super::{Store, StoreError};
use crate::intel::IndicatorKey;
use crate::model::Disposition;
use crate::trace::TraceRecord;
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub(crate) const SCHEMA: &str = r#"
CREATE TABLE auto_handled (
    tenant      TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    disposition TEXT NOT NULL,
    copies      INTEGER NOT NULL,
    trigger     TEXT NOT NULL,
    job_id      INTEGER,
    at          INTEGER NOT NULL,
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
    decided_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, mailbox, report_id)
);
CREATE INDEX phish_report_original ON phish_report (original);
"#;

/// One decided phish report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportDecision {
    pub tenant: String,
    pub mailbox: String,
    pub report_id: String,
    pub reporter: String,
    /// Message-ID of the reported original (`None` when the report carried none).
    pub original: Option<String>,
    /// `malicious`, `not_malicious`, `not_found`, `no_original`.
    pub verdict: String,
    pub reason: String,
}

impl Store {
    /// The disposition and delivered-copy count the policy last acted on for a message.
    pub fn auto_handled(
        &self,
        tenant: &str,
        message_id: &str,
    ) -> Result<Option<(String, u64)>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::automation::auto_handled(pg, tenant, message_id);
        }
        Ok(self
            .conn()?
            .query_row(
                "SELECT disposition, copies FROM auto_handled WHERE tenant = ?1 AND message_id = ?2",
                params![tenant, message_id],
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .optional()?)
    }

    /// Records that the policy acted on a message (or found nothing to do).
    pub fn set_auto_handled(
        &mut self,
        tenant: &str,
        message_id: &str,
        disposition: &str,
        copies: u64,
        trigger: &str,
        job: Option<i64>,
    ) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            let mark = super::pg::automation::AutoHandled {
                tenant,
                message_id,
                disposition,
                copies,
                trigger,
                job,
                at: Utc::now().timestamp(),
            };
            return super::pg::automation::set_auto_handled(pg, &mark);
        }
        self.conn()?.execute(
            "INSERT INTO auto_handled (tenant, message_id, disposition, copies, trigger, job_id, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (tenant, message_id) DO UPDATE SET disposition = ?3, copies = ?4, \
             trigger = ?5, job_id = COALESCE(?6, job_id), at = ?7",
            params![
                tenant,
                message_id,
                disposition,
                copies as i64,
                trigger,
                job,
                Utc::now().timestamp()
            ],
        )?;
        Ok(())
    }

    /// Records received at or after `since` (Unix seconds), optionally only those with a
    /// disposition, leaving out fully retracted ones; oldest first.
    pub fn trace_for_automation(
        &self,
        since: i64,
        with_disposition: bool,
    ) -> Result<Vec<TraceRecord>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            let ids = super::pg::automation::automation_ids(pg, since, with_disposition)?;
            return self.records_by_ids(ids);
        }
        let ids: Vec<i64> = {
            let mut stmt = self.conn()?.prepare_cached(
                "SELECT id FROM trace WHERE received >= ?1 \
                 AND (?2 = 0 OR disposition IS NOT NULL) \
                 AND (retraction_state IS NULL OR retraction_state <> 'retracted') \
                 ORDER BY received, id",
            )?;
            stmt.query_map(params![since, with_disposition as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        self.records_by_ids(ids)
    }

    /// The delivered, not-yet-retracted records received since `since` that may carry one of
    /// these indicators (kind, value: `url`, `domain`, `sender`, `sha256`, `subject` glob),
    /// chosen in SQL so Post Delivery does not load the whole look-back. A superset of the
    /// exact matches (the caller confirms each with the indicator's own matcher): domains are
    /// found as substrings of senders and URLs, and subjects with non-ASCII characters (whose
    /// case SQLite does not fold) are always returned when a subject pattern is asked for.
    pub fn trace_matching_indicators(
        &self,
        since: i64,
        indicators: &[(&str, &str)],
    ) -> Result<Vec<TraceRecord>, StoreError> {
        if indicators.is_empty() {
            return Ok(Vec::new());
        }
        if let super::Db::Postgres(pg) = &self.db {
            let rows = indicator_rows(indicators);
            let ids = super::pg::automation::matching_indicator_ids(pg, since, &rows)?;
            return self.records_by_ids(ids);
        }
        self.conn()?.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS post_delivery_indicator (
                 kind TEXT NOT NULL, value TEXT NOT NULL, pattern TEXT NOT NULL,
                 any_subject INTEGER NOT NULL);
             DELETE FROM temp.post_delivery_indicator;",
        )?;
        {
            let mut insert = self.conn()?.prepare_cached(
                "INSERT INTO temp.post_delivery_indicator (kind, value, pattern, any_subject) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for i in indicator_rows(indicators) {
                insert.execute(params![i.kind, i.value, i.pattern, i.any_subject as i64])?;
            }
        }
        let ids: Vec<i64> = {
            let mut stmt = self.conn()?.prepare_cached(
                r"SELECT t.id FROM trace t WHERE t.received >= ?1
                   AND (t.retraction_state IS NULL OR t.retraction_state <> 'retracted')
                   AND EXISTS (SELECT 1 FROM temp.post_delivery_indicator i WHERE
                     (i.kind = 'sender' AND (lower(t.sender) = i.value
                          OR lower(coalesce(t.envelope_sender, '')) = i.value))
                     OR (i.kind = 'sha256' AND EXISTS (SELECT 1 FROM trace_attachment a
                          WHERE a.trace_id = t.id AND lower(a.sha256) = i.value))
                     OR (i.kind = 'url' AND EXISTS (SELECT 1 FROM trace_url u
                          WHERE u.trace_id = t.id AND rtrim(lower(u.url), '/') = i.value))
                     OR (i.kind = 'domain' AND (instr(lower(t.sender), i.value) > 0
                          OR instr(lower(coalesce(t.envelope_sender, '')), i.value) > 0
                          OR EXISTS (SELECT 1 FROM trace_url u WHERE u.trace_id = t.id
                                     AND instr(lower(u.url), i.value) > 0)))
                     OR (i.kind = 'subject' AND (i.any_subject = 1
                          OR lower(t.subject) LIKE i.pattern ESCAPE '\'
                          OR t.subject GLOB '*[^ -~]*')))
                   ORDER BY t.received, t.id",
            )?;
            stmt.query_map(params![since], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        self.records_by_ids(ids)
    }

    /// The records of these trace row ids, in order (a row deleted meanwhile is left out).
    fn records_by_ids(&self, ids: Vec<i64>) -> Result<Vec<TraceRecord>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = self.trace_by_id(id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Whether a report was decided already.
    pub fn report_decided(
        &self,
        tenant: &str,
        mailbox: &str,
        report_id: &str,
    ) -> Result<bool, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::automation::report_decided(pg, tenant, mailbox, report_id);
        }
        Ok(self
            .conn()?
            .query_row(
                "SELECT 1 FROM phish_report WHERE tenant = ?1 AND mailbox = ?2 AND report_id = ?3",
                params![tenant, mailbox, report_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Records a decision (the first decision of a report stands).
    pub fn record_report(&mut self, d: &ReportDecision) -> Result<(), StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::automation::record_report(pg, d, Utc::now().timestamp());
        }
        self.conn()?.execute(
            "INSERT OR IGNORE INTO phish_report \
             (tenant, mailbox, report_id, reporter, original, verdict, reason, decided_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                d.tenant,
                d.mailbox,
                d.report_id,
                d.reporter,
                d.original,
                d.verdict,
                d.reason,
                Utc::now().timestamp()
            ],
        )?;
        Ok(())
    }

    /// Distinct reporters recorded for an original.
    pub fn reporters_of(&self, original: &str) -> Result<BTreeSet<String>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::automation::reporters_of(pg, original);
        }
        let mut stmt = self
            .conn()?
            .prepare_cached("SELECT DISTINCT reporter FROM phish_report WHERE original = ?1")?;
        let rows = stmt
            .query_map([original], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Every decided report, oldest first.
    pub fn report_decisions(&self) -> Result<Vec<ReportDecision>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::automation::report_decisions(pg);
        }
        let mut stmt = self.conn()?.prepare_cached(
            "SELECT tenant, mailbox, report_id, reporter, original, verdict, reason \
             FROM phish_report ORDER BY decided_at, tenant, mailbox, report_id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ReportDecision {
                    tenant: r.get(0)?,
                    mailbox: r.get(1)?,
                    report_id: r.get(2)?,
                    reporter: r.get(3)?,
                    original: r.get(4)?,
                    verdict: r.get(5)?,
                    reason: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

/// The automation guard (issue 11): matches held for confirmation, and the verdicts intel
/// wrote (with what the message had before, so a verdict can expire).
pub(crate) const GUARD_SCHEMA: &str = r#"
CREATE TABLE automation_hold (
    id              INTEGER PRIMARY KEY,
    state           TEXT NOT NULL,
    indicator_file  TEXT NOT NULL,
    indicator_kind  TEXT NOT NULL,
    indicator_value TEXT NOT NULL,
    disposition     TEXT NOT NULL,
    reason          TEXT NOT NULL,
    messages        INTEGER NOT NULL,
    copies          INTEGER NOT NULL,
    trace_messages  INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    confirmed_by    TEXT,
    confirmed_at    INTEGER,
    closed_at       INTEGER
);
CREATE INDEX automation_hold_open ON automation_hold (state)
    WHERE state IN ('needs_confirmation', 'confirmed');
CREATE TABLE automation_hold_message (
    hold_id    INTEGER NOT NULL REFERENCES automation_hold (id),
    tenant     TEXT NOT NULL,
    message_id TEXT NOT NULL,
    copies     INTEGER NOT NULL,
    PRIMARY KEY (hold_id, tenant, message_id)
) WITHOUT ROWID;
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
    at               INTEGER NOT NULL,
    expired_at       INTEGER,
    PRIMARY KEY (tenant, message_id)
);
CREATE INDEX intel_verdict_active ON intel_verdict (indicator_file) WHERE expired_at IS NULL;
"#;

/// Where a held match stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Over a guard limit: nothing was done; waits for `clawback policy confirm ID`.
    NeedsConfirmation,
    /// Confirmed by an admin; the next `watch` cycle retracts it.
    Confirmed,
    /// Retracted per the policy after confirmation.
    Released,
    /// Its indicator left the intel directory before it was released.
    Expired,
}

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::NeedsConfirmation => "needs_confirmation",
            HoldState::Confirmed => "confirmed",
            HoldState::Released => "released",
            HoldState::Expired => "expired",
        }
    }

    pub(crate) fn parse(s: &str) -> HoldState {
        match s {
            "confirmed" => HoldState::Confirmed,
            "released" => HoldState::Released,
            "expired" => HoldState::Expired,
            _ => HoldState::NeedsConfirmation,
        }
    }

    /// Still waiting for confirmation or for the watcher to release it.
    pub fn is_open(self) -> bool {
        matches!(self, HoldState::NeedsConfirmation | HoldState::Confirmed)
    }
}

impl std::fmt::Display for HoldState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One indicator's match held by the automation guard instead of being retracted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldMatch {
    pub id: i64,
    pub state: HoldState,
    pub indicator: IndicatorKey,
    /// Which limit it went over, with the numbers.
    pub reason: String,
    /// Messages (per tenant) and copies the match would retract.
    pub messages: u64,
    pub copies: u64,
    /// Messages traced in the look-back window when it was (last) held.
    pub trace_messages: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub confirmed_by: Option<String>,
    pub confirmed_at: Option<DateTime<Utc>>,
    /// When it was released or expired.
    pub closed_at: Option<DateTime<Utc>>,
}

/// One message of a held match.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HeldMessage {
    pub tenant: String,
    pub message_id: String,
    /// Copies it would retract when held.
    pub copies: u64,
}

/// What [`Store::hold_record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldChange {
    /// A new hold.
    New,
    /// The indicator's open hold gained messages.
    Extended { added: u64 },
    /// The indicator's open hold already had every message: nothing written.
    Unchanged,
}

/// A verdict written by an intel indicator, still in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntelVerdict {
    pub tenant: String,
    pub message_id: String,
    pub indicator: IndicatorKey,
    /// The `disposition_source` it wrote (`intel:FILE`).
    pub source: String,
}

pub(crate) const HOLD_COLUMNS: &str = "id, state, indicator_file, indicator_kind, indicator_value, \
    disposition, reason, messages, copies, trace_messages, created_at, updated_at, \
    confirmed_by, confirmed_at, closed_at";

pub(crate) fn time(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

fn row_to_hold(r: &rusqlite::Row<'_>) -> rusqlite::Result<HeldMatch> {
    let state: String = r.get(1)?;
    let disposition: String = r.get(5)?;
    Ok(HeldMatch {
        id: r.get(0)?,
        state: HoldState::parse(&state),
        indicator: IndicatorKey {
            file: r.get(2)?,
            kind: r.get(3)?,
            value: r.get(4)?,
            disposition: disposition.parse().unwrap_or(Disposition::Malicious),
        },
        reason: r.get(6)?,
        messages: r.get::<_, i64>(7)? as u64,
        copies: r.get::<_, i64>(8)? as u64,
        trace_messages: r.get::<_, i64>(9)? as u64,
        created_at: time(r.get(10)?),
        updated_at: time(r.get(11)?),
        confirmed_by: r.get(12)?,
        confirmed_at: r.get::<_, Option<i64>>(13)?.map(time),
        closed_at: r.get::<_, Option<i64>>(14)?.map(time),
    })
}

impl Store {
    /// Messages (one per tenant) traced at or after `since` (Unix seconds): the denominator
    /// of the guard's share-of-trace limit.
    pub fn trace_messages_since(&self, since: i64) -> Result<u64, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::automation::trace_messages_since(pg, since);
        }
        let n: i64 = self.conn()?.query_row(
            "SELECT count(*) FROM trace WHERE received >= ?1",
            [since],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Records that `indicator` matched `messages` over a guard limit: a new hold, or the
    /// indicator's hold still waiting for confirmation gains the messages it lacked (the
    /// same indicator and messages are never held twice). Returns the hold as it now is.
    pub fn hold_record(
        &mut self,
        indicator: &IndicatorKey,
        reason: &str,
        trace_messages: u64,
        messages: &[HeldMessage],
    ) -> Result<(HeldMatch, HoldChange), StoreError> {
        let now = Utc::now().timestamp();
        if let super::Db::Postgres(pg) = &mut self.db {
            return super::pg::automation::hold_record(
                pg,
                indicator,
                reason,
                trace_messages,
                messages,
                now,
            );
        }
        let tx = self
            .conn_mut()?
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let open: Option<i64> = tx
            .query_row(
                "SELECT id FROM automation_hold WHERE state = 'needs_confirmation' \
                 AND indicator_file = ?1 AND indicator_kind = ?2 AND indicator_value = ?3 \
                 AND disposition = ?4 ORDER BY id DESC LIMIT 1",
                params![
                    indicator.file,
                    indicator.kind,
                    indicator.value,
                    indicator.disposition.as_str()
                ],
                |r| r.get(0),
            )
            .optional()?;
        let (id, created) = match open {
            Some(id) => (id, false),
            None => {
                tx.execute(
                    "INSERT INTO automation_hold (state, indicator_file, indicator_kind, \
                     indicator_value, disposition, reason, messages, copies, trace_messages, \
                     created_at, updated_at) VALUES ('needs_confirmation', ?1, ?2, ?3, ?4, ?5, \
                     0, 0, ?6, ?7, ?7)",
                    params![
                        indicator.file,
                        indicator.kind,
                        indicator.value,
                        indicator.disposition.as_str(),
                        reason,
                        trace_messages as i64,
                        now
                    ],
                )?;
                (tx.last_insert_rowid(), true)
            }
        };
        let mut added = 0u64;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO automation_hold_message (hold_id, tenant, message_id, copies) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for m in messages {
                added +=
                    insert.execute(params![id, m.tenant, m.message_id, m.copies as i64])? as u64;
            }
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
                "UPDATE automation_hold SET reason = ?2, trace_messages = ?3, updated_at = ?4, \
                 messages = (SELECT count(*) FROM automation_hold_message WHERE hold_id = ?1), \
                 copies = (SELECT coalesce(sum(copies), 0) FROM automation_hold_message \
                           WHERE hold_id = ?1) \
                 WHERE id = ?1",
                params![id, reason, trace_messages as i64, now],
            )?;
        }
        let hold = tx.query_row(
            &format!("SELECT {HOLD_COLUMNS} FROM automation_hold WHERE id = ?1"),
            [id],
            row_to_hold,
        )?;
        tx.commit()?;
        Ok((hold, change))
    }

    /// One hold by id.
    pub fn hold(&self, id: i64) -> Result<Option<HeldMatch>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::automation::hold(pg, id);
        }
        Ok(self
            .conn()?
            .query_row(
                &format!("SELECT {HOLD_COLUMNS} FROM automation_hold WHERE id = ?1"),
                [id],
                row_to_hold,
            )
            .optional()?)
    }

    /// Holds, newest first: only those still open (waiting for confirmation or release), or
    /// all of them.
    pub fn holds(&self, open_only: bool) -> Result<Vec<HeldMatch>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::automation::holds(pg, open_only);
        }
        let mut stmt = self.conn()?.prepare_cached(&format!(
            "SELECT {HOLD_COLUMNS} FROM automation_hold \
             WHERE ?1 = 0 OR state IN ('needs_confirmation', 'confirmed') ORDER BY id DESC"
        ))?;
        let rows = stmt
            .query_map([open_only as i64], row_to_hold)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The messages of a hold.
    pub fn hold_messages(&self, id: i64) -> Result<Vec<HeldMessage>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::automation::hold_messages(pg, id);
        }
        let mut stmt = self.conn()?.prepare_cached(
            "SELECT tenant, message_id, copies FROM automation_hold_message WHERE hold_id = ?1 \
             ORDER BY tenant, message_id",
        )?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(HeldMessage {
                    tenant: r.get(0)?,
                    message_id: r.get(1)?,
                    copies: r.get::<_, i64>(2)? as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Moves a hold from `from` to `to` (stamping who confirmed it, or when it closed); false
    /// when it is not in `from` (someone else moved it first).
    pub fn hold_transition(
        &mut self,
        id: i64,
        from: HoldState,
        to: HoldState,
        by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = Utc::now().timestamp();
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::automation::hold_transition(pg, id, from, to, by, now);
        }
        let n = self.conn()?.execute(
            "UPDATE automation_hold SET state = ?3, updated_at = ?4, \
             confirmed_by = CASE WHEN ?3 = 'confirmed' THEN ?5 ELSE confirmed_by END, \
             confirmed_at = CASE WHEN ?3 = 'confirmed' THEN ?4 ELSE confirmed_at END, \
             closed_at = CASE WHEN ?3 IN ('released', 'expired') THEN ?4 ELSE closed_at END \
             WHERE id = ?1 AND state = ?2",
            params![id, from.as_str(), to.as_str(), now, by],
        )?;
        Ok(n == 1)
    }

    /// Sets a disposition from an intel indicator on a message of a tenant, when it is an
    /// upgrade, and remembers the indicator and what the message had before any intel verdict
    /// (so [`Store::expire_intel_verdict`] can put it back).
    pub fn set_intel_disposition(
        &mut self,
        tenant: &str,
        message_id: &str,
        indicator: &IndicatorKey,
        source: &str,
    ) -> Result<DispositionUpdate, StoreError> {
        if let super::Db::Postgres(pg) = &mut self.db {
            let now = Utc::now().timestamp();
            return super::pg::automation::set_intel_disposition(
                pg, tenant, message_id, indicator, source, now,
            );
        }
        let tx = self
            .conn_mut()?
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let before: Vec<(Option<String>, Option<String>)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT disposition, disposition_source FROM trace \
                 WHERE message_id = ?1 AND tenant = ?2",
            )?;
            stmt.query_map(params![message_id, tenant], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let matched = before.len();
        let disposition = indicator.disposition;
        let upgraded = tx.execute(
            "UPDATE trace SET disposition = ?3, disposition_rank = ?4, disposition_source = ?5 \
             WHERE message_id = ?1 AND tenant = ?2 \
             AND (disposition_rank IS NULL OR disposition_rank > ?4)",
            params![
                message_id,
                tenant,
                disposition.as_str(),
                disposition.severity(),
                source
            ],
        )?;
        if upgraded > 0 {
            let (base, base_source) = before.into_iter().next().unwrap_or_default();
            // An active verdict keeps the base it recorded (what the message had before intel
            // touched it); an expired one (or none) takes the message's disposition now.
            tx.execute(
                "INSERT INTO intel_verdict (tenant, message_id, indicator_file, indicator_kind, \
                 indicator_value, disposition, source, base_disposition, base_source, at, \
                 expired_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL) \
                 ON CONFLICT (tenant, message_id) DO UPDATE SET \
                 indicator_file = ?3, indicator_kind = ?4, indicator_value = ?5, \
                 disposition = ?6, source = ?7, at = ?10, \
                 base_disposition = CASE WHEN expired_at IS NULL THEN base_disposition ELSE ?8 END, \
                 base_source = CASE WHEN expired_at IS NULL THEN base_source ELSE ?9 END, \
                 expired_at = NULL",
                params![
                    tenant,
                    message_id,
                    indicator.file,
                    indicator.kind,
                    indicator.value,
                    disposition.as_str(),
                    source,
                    base,
                    base_source,
                    Utc::now().timestamp()
                ],
            )?;
        }
        tx.commit()?;
        Ok(DispositionUpdate { matched, upgraded })
    }

    /// Intel verdicts in force.
    pub fn intel_verdicts_active(&self) -> Result<Vec<IntelVerdict>, StoreError> {
        if let super::Db::Postgres(pg) = &self.db {
            return super::pg::automation::intel_verdicts_active(pg);
        }
        let mut stmt = self.conn()?.prepare_cached(
            "SELECT tenant, message_id, indicator_file, indicator_kind, indicator_value, \
             disposition, source FROM intel_verdict WHERE expired_at IS NULL \
             ORDER BY tenant, message_id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                let d: String = r.get(5)?;
                Ok(IntelVerdict {
                    tenant: r.get(0)?,
                    message_id: r.get(1)?,
                    indicator: IndicatorKey {
                        file: r.get(2)?,
                        kind: r.get(3)?,
                        value: r.get(4)?,
                        disposition: d.parse().unwrap_or(Disposition::Malicious),
                    },
                    source: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Expires the intel verdict of a message: its disposition goes back to what it was
    /// before intel set it — unless something else (a header, a phish report) has set it since,
    /// in which case that stands. Retraction state is not touched: copies already retracted
    /// stay retracted. Returns whether the disposition was put back (`None`: no verdict in
    /// force).
    pub fn expire_intel_verdict(
        &mut self,
        tenant: &str,
        message_id: &str,
    ) -> Result<Option<bool>, StoreError> {
        if let super::Db::Postgres(pg) = &mut self.db {
            let now = Utc::now().timestamp();
            return super::pg::automation::expire_intel_verdict(pg, tenant, message_id, now);
        }
        let tx = self
            .conn_mut()?
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, String, Option<String>, Option<String>)> = tx
            .query_row(
                "SELECT disposition, source, base_disposition, base_source FROM intel_verdict \
                 WHERE tenant = ?1 AND message_id = ?2 AND expired_at IS NULL",
                params![tenant, message_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((disposition, source, base, base_source)) = row else {
            return Ok(None);
        };
        let base_rank = base
            .as_deref()
            .and_then(|d| d.parse::<Disposition>().ok())
            .map(|d| d.severity());
        let reverted = tx.execute(
            "UPDATE trace SET disposition = ?5, disposition_rank = ?6, disposition_source = ?7 \
             WHERE message_id = ?1 AND tenant = ?2 AND disposition = ?3 \
             AND disposition_source = ?4",
            params![
                message_id,
                tenant,
                disposition,
                source,
                base_rank.and(base.as_deref()),
                base_rank,
                base_rank.and(base_source.as_deref())
            ],
        )?;
        tx.execute(
            "UPDATE intel_verdict SET expired_at = ?3 WHERE tenant = ?1 AND message_id = ?2",
            params![tenant, message_id, Utc::now().timestamp()],
        )?;
        tx.commit()?;
        Ok(Some(reverted > 0))
    }
}

/// One indicator as the candidate queries compare it: the value folded (ASCII) as the
/// columns are, a URL without its trailing slash, a subject glob as a LIKE pattern, and whether
/// every non-ASCII subject is a candidate.
pub struct IndicatorRow {
    pub kind: String,
    pub value: String,
    pub pattern: String,
    pub any_subject: bool,
}

pub fn indicator_rows(indicators: &[(&str, &str)]) -> Vec<IndicatorRow> {
    indicators
        .iter()
        .map(|(kind, value)| {
            let value = value.to_ascii_lowercase();
            let (value, pattern, any_subject) = match *kind {
                "url" => (
                    value.trim_end_matches('/').to_string(),
                    String::new(),
                    false,
                ),
                "subject" => {
                    let pattern = like_pattern(&value);
                    (value.clone(), pattern, !value.is_ascii())
                }
                _ => (value, String::new(), false),
            };
            IndicatorRow {
                kind: kind.to_string(),
                value,
                pattern,
                any_subject,
            }
        })
        .collect()
}

/// A subject glob (`*`, `?`; no wildcard: the whole subject) as a LIKE pattern with
/// backslash escapes (LIKE folds ASCII case, as the matcher folds all case).
fn like_pattern(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len());
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &str, disposition: Disposition) -> IndicatorKey {
        IndicatorKey {
            file: "feed.csv".into(),
            kind: "sender".into(),
            value: value.into(),
            disposition,
        }
    }

    fn stored(s: &Store, mid: &str) -> (Option<Disposition>, Option<String>) {
        let r = s.trace_by_message_id(mid).unwrap();
        (r[0].disposition, r[0].disposition_source.clone())
    }

    /// Post Delivery's candidates come from SQL: each indicator kind finds its record (case
    /// folded as the matcher folds it), an unrelated record and one older than the look-back
    /// are not loaded; a subject with non-ASCII characters is always a candidate for a
    /// subject pattern (the matcher decides).
    #[test]
    fn post_delivery_candidates_are_chosen_in_sql() {
        let mut s = Store::open_in_memory().unwrap();
        let rec = |mid: &str, sender: &str, subject: &str, received: i64| TraceRecord {
            tenant: "contoso".into(),
            message_id: mid.into(),
            sender: sender.into(),
            subject: subject.into(),
            received,
            ..TraceRecord::default()
        };
        let mut with_url = rec("<url@x>", "a@good.example", "hello", 100);
        with_url.urls = vec!["https://Phish.Example/login/".into()];
        let mut with_hash = rec("<hash@x>", "b@good.example", "hello", 100);
        with_hash.attachments = vec!["ABCDEF".into()];
        s.upsert_trace(&[
            rec("<sender@x>", "boss@evil.example", "hello", 100),
            with_url,
            with_hash,
            rec("<subject@x>", "c@good.example", "Invoice 42 overdue", 100),
            rec("<unicode@x>", "d@good.example", "Überweisung", 100),
            rec("<old@x>", "boss@evil.example", "Invoice 1", 10),
            rec("<other@x>", "e@good.example", "lunch", 100),
        ])
        .unwrap();
        let found = |ind: &[(&str, &str)]| -> Vec<String> {
            s.trace_matching_indicators(50, ind)
                .unwrap()
                .into_iter()
                .map(|r| r.message_id)
                .collect()
        };
        assert_eq!(found(&[("sender", "Boss@Evil.Example")]), ["<sender@x>"]);
        assert_eq!(
            found(&[("url", "https://phish.example/login")]),
            ["<url@x>"]
        );
        assert_eq!(found(&[("sha256", "abcdef")]), ["<hash@x>"]);
        assert_eq!(found(&[("domain", "phish.example")]), ["<url@x>"]);
        assert_eq!(
            found(&[("subject", "invoice*")]),
            ["<subject@x>", "<unicode@x>"]
        );
        assert_eq!(found(&[("subject", "invoice 4?")]), ["<unicode@x>"]);
        assert!(found(&[]).is_empty());
        assert!(found(&[("sender", "nobody@x")]).is_empty());
    }

    #[test]
    fn an_intel_verdict_expires_to_what_the_message_had_before_intel() {
        let mut s = Store::open_in_memory().unwrap();
        let rec = |mid: &str, d: Option<Disposition>| TraceRecord {
            tenant: "contoso".into(),
            message_id: mid.into(),
            sender: "a@evil.example".into(),
            subject: "x".into(),
            received: 1,
            disposition: d,
            disposition_source: d.map(|_| "header:X-Clawback-Disposition".to_string()),
            ..TraceRecord::default()
        };
        s.upsert_trace(&[rec("<a@x>", Some(Disposition::Spam)), rec("<b@x>", None)])
            .unwrap();
        // Two intel upgrades in a row keep the first base (spam, from the header).
        let sus = key("a@evil.example", Disposition::Suspicious);
        let upd = s
            .set_intel_disposition("contoso", "<a@x>", &sus, "intel:feed.csv")
            .unwrap();
        assert_eq!((upd.matched, upd.upgraded), (1, 1));
        let mal = key("evil.example", Disposition::Malicious);
        s.set_intel_disposition("contoso", "<a@x>", &mal, "intel:other.csv")
            .unwrap();
        // Not an upgrade: no verdict recorded for it.
        let upd = s
            .set_intel_disposition("contoso", "<a@x>", &sus, "intel:feed.csv")
            .unwrap();
        assert_eq!(upd.upgraded, 0);
        let active = s.intel_verdicts_active().unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].indicator, mal);
        assert_eq!(
            s.expire_intel_verdict("contoso", "<a@x>").unwrap(),
            Some(true)
        );
        assert_eq!(
            stored(&s, "<a@x>"),
            (
                Some(Disposition::Spam),
                Some("header:X-Clawback-Disposition".into())
            )
        );
        assert_eq!(s.expire_intel_verdict("contoso", "<a@x>").unwrap(), None);

        // Something else set it since (a phish report): that stands, the verdict still expires.
        s.set_intel_disposition("contoso", "<b@x>", &sus, "intel:feed.csv")
            .unwrap();
        s.set_disposition(
            Some("contoso"),
            "<b@x>",
            Disposition::Malicious,
            "report:phish_submission",
        )
        .unwrap();
        assert_eq!(
            s.expire_intel_verdict("contoso", "<b@x>").unwrap(),
            Some(false)
        );
        assert_eq!(
            stored(&s, "<b@x>"),
            (
                Some(Disposition::Malicious),
                Some("report:phish_submission".into())
            )
        );
        assert!(s.intel_verdicts_active().unwrap().is_empty());
        // After expiry a new verdict takes the message's disposition then as its base.
        s.set_intel_disposition(
            "contoso",
            "<a@x>",
            &key("x", Disposition::Suspicious),
            "intel:feed.csv",
        )
        .unwrap();
        s.expire_intel_verdict("contoso", "<a@x>").unwrap();
        assert_eq!(stored(&s, "<a@x>").0, Some(Disposition::Spam));
    }
}
