//! What `clawback watch` has already done (DESIGN §6), so a restart neither loses nor repeats
//! work: the messages the auto-retract policy acted on (at which disposition, over how many
//! delivered copies) and every phish report decided.

use super::{Store, StoreError};
use crate::trace::TraceRecord;
use chrono::Utc;
use rusqlite::{OptionalExtension, params};
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
        Ok(self
            .conn
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
        self.conn.execute(
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
        let ids: Vec<i64> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id FROM trace WHERE received >= ?1 \
                 AND (?2 = 0 OR disposition IS NOT NULL) \
                 AND (retraction_state IS NULL OR retraction_state <> 'retracted') \
                 ORDER BY received, id",
            )?;
            stmt.query_map(params![since, with_disposition as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
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
        Ok(self
            .conn
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
        self.conn.execute(
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
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT reporter FROM phish_report WHERE original = ?1")?;
        let rows = stmt
            .query_map([original], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// Every decided report, oldest first.
    pub fn report_decisions(&self) -> Result<Vec<ReportDecision>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
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
