//! Search results for people and programs: a table, JSON, CSV, and campaign grouping (same
//! sender + normalized subject).

use super::TraceRecord;
use crate::model::Disposition;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;

/// `2026-11-20 08:00:00` (UTC) for a Unix time.
pub fn format_time(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// RFC 3339 (UTC) for a Unix time.
pub fn format_rfc3339(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339())
        .unwrap_or_else(|| t.to_string())
}

/// The retraction column: `-` (never), or the state word and when.
pub fn retraction_label(r: &TraceRecord) -> String {
    match (r.retracted_at, &r.retraction_state) {
        (None, None) => "-".to_string(),
        (Some(_), Some(s)) => s.clone(),
        (Some(_), None) => "retracted".to_string(),
        (None, Some(s)) => s.clone(),
    }
}

/// A subject reduced for campaign grouping: lowercased; `Re:`/`Fwd:`-style prefixes, `[tags]`
/// and `(tags)` removed; digit runs replaced by `#`; whitespace collapsed.
pub fn normalize_subject(subject: &str) -> String {
    let mut s = subject.to_lowercase();
    // Bracketed tags anywhere: [EXTERNAL], (ext), [#1234].
    for (open, close) in [('[', ']'), ('(', ')')] {
        while let (Some(a), Some(b)) = (s.find(open), s.find(close)) {
            if a < b {
                s.replace_range(a..b + close.len_utf8(), " ");
            } else {
                break;
            }
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut in_digits = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    let mut t = out.split_whitespace().collect::<Vec<_>>().join(" ");
    loop {
        let trimmed = t.trim_start();
        let lower = trimmed;
        let stripped = [
            "re:", "fw:", "fwd:", "aw:", "wg:", "sv:", "tr:", "re#:", "re[#]:",
        ]
        .iter()
        .find_map(|p| lower.strip_prefix(p));
        match stripped {
            Some(rest) => t = rest.trim_start().to_string(),
            None => break,
        }
    }
    t.trim().to_string()
}

/// A campaign's key as a number: the first 8 bytes of SHA-256 over the sender and the
/// [normalized subject](normalize_subject), so it is the same in every process and release (a
/// console keeps one per result row; 64 bits make a collision among 100,000 rows about 1 in 10^9).
pub fn campaign_key(sender: &str, subject: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(sender.as_bytes())
        // A separator no address contains, so ("a", "bc") and ("ab", "c") differ.
        .chain_update([0])
        .chain_update(normalize_subject(subject).as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Messages of one sender with the same normalized subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Campaign {
    pub sender: String,
    pub normalized_subject: String,
    /// One original subject (the newest message's).
    pub subject: String,
    pub messages: usize,
    /// Distinct delivered-to mailboxes over all messages.
    pub recipients: usize,
    pub first: i64,
    pub last: i64,
    /// The most severe disposition among the messages.
    pub disposition: Option<Disposition>,
    /// How many of the messages are retracted.
    pub retracted: usize,
    pub message_ids: Vec<String>,
}

/// Groups records (newest first in, newest campaign first out).
pub fn group_campaigns(records: &[TraceRecord]) -> Vec<Campaign> {
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut out: Vec<Campaign> = Vec::new();
    let mut mailboxes: Vec<std::collections::BTreeSet<String>> = Vec::new();
    for r in records {
        let key = (r.sender.clone(), normalize_subject(&r.subject));
        let i = *index.entry(key.clone()).or_insert_with(|| {
            out.push(Campaign {
                sender: key.0.clone(),
                normalized_subject: key.1.clone(),
                subject: r.subject.clone(),
                messages: 0,
                recipients: 0,
                first: r.received,
                last: r.received,
                disposition: None,
                retracted: 0,
                message_ids: Vec::new(),
            });
            mailboxes.push(Default::default());
            out.len() - 1
        });
        let c = &mut out[i];
        c.messages += 1;
        c.first = c.first.min(r.received);
        c.last = c.last.max(r.received);
        if let Some(d) = r.disposition
            && c.disposition.is_none_or(|o| d.severity() < o.severity())
        {
            c.disposition = Some(d);
        }
        if r.retracted_at.is_some() {
            c.retracted += 1;
        }
        c.message_ids.push(r.message_id.clone());
        mailboxes[i].extend(r.delivered_to().into_iter().map(str::to_string));
        c.recipients = mailboxes[i].len();
    }
    out
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(3)).collect();
        t.push_str("...");
        t
    }
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let pad = widths[i] - c.chars().count();
                let _ = write!(l, "{c}{}  ", " ".repeat(pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| h.to_string()).collect(), &mut out);
    for r in rows {
        line(r.clone(), &mut out);
    }
    out
}

/// The default human table: time, from, subject, copies, disposition, retraction state.
pub fn render_table(records: &[TraceRecord]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                format_time(r.received),
                truncate(&r.sender, 32),
                truncate(&r.subject, 48),
                r.delivered_to().len().to_string(),
                r.disposition
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
                retraction_label(r),
            ]
        })
        .collect();
    table(
        &[
            "TIME (UTC)",
            "FROM",
            "SUBJECT",
            "COPIES",
            "DISPOSITION",
            "RETRACTED",
        ],
        &rows,
    )
}

/// The `--group` table.
pub fn render_campaigns(campaigns: &[Campaign]) -> String {
    let rows: Vec<Vec<String>> = campaigns
        .iter()
        .map(|c| {
            vec![
                format_time(c.last),
                truncate(&c.sender, 32),
                truncate(&c.subject, 48),
                c.messages.to_string(),
                c.recipients.to_string(),
                c.disposition
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "-".into()),
                format!("{}/{}", c.retracted, c.messages),
            ]
        })
        .collect();
    table(
        &[
            "LAST (UTC)",
            "FROM",
            "SUBJECT",
            "MESSAGES",
            "COPIES",
            "DISPOSITION",
            "RETRACTED",
        ],
        &rows,
    )
}

/// One record as JSON: the stored fields plus `received_at` (RFC 3339) and `delivered_to`.
pub fn record_json(r: &TraceRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("received_at".into(), format_rfc3339(r.received).into());
        m.insert(
            "delivered_to".into(),
            serde_json::Value::from(
                r.delivered_to()
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            ),
        );
    }
    v
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV with a header row; list fields are `;`-separated.
pub fn render_csv(records: &[TraceRecord]) -> String {
    let mut out = String::from(
        "received,tenant,message_id,sender,subject,delivered_to,disposition,disposition_source,retracted_at,retraction_state,urls,attachments_sha256\n",
    );
    for r in records {
        let fields = [
            format_rfc3339(r.received),
            r.tenant.clone(),
            r.message_id.clone(),
            r.sender.clone(),
            r.subject.clone(),
            r.delivered_to().join(";"),
            r.disposition.map(|d| d.to_string()).unwrap_or_default(),
            r.disposition_source.clone().unwrap_or_default(),
            r.retracted_at.map(format_rfc3339).unwrap_or_default(),
            r.retraction_state.clone().unwrap_or_default(),
            r.urls.join(";"),
            r.attachments.join(";"),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_normalize_for_campaigns() {
        assert_eq!(
            normalize_subject("RE: Fwd: [EXTERNAL] Invoice 4411 due"),
            "invoice # due"
        );
        assert_eq!(normalize_subject("Invoice 9 due"), "invoice # due");
        assert_eq!(
            normalize_subject("  AW:  (ext) Hello   world "),
            "hello world"
        );
        assert_eq!(normalize_subject(""), "");
    }

    #[test]
    fn campaign_keys_follow_sender_and_normalized_subject() {
        let key = campaign_key("m@evil.example", "RE: [EXTERNAL] Invoice 4411 due");
        assert_eq!(key, campaign_key("m@evil.example", "Invoice 9 due"));
        assert_ne!(key, campaign_key("n@evil.example", "Invoice 9 due"));
        assert_ne!(key, campaign_key("m@evil.example", "Invoice paid"));
        assert_ne!(campaign_key("a", "bc"), campaign_key("ab", "c"));
        // The same in every process and release (SHA-256, not a seeded hasher).
        assert_eq!(campaign_key("", ""), 0x6e34_0b9c_ffb3_7a98);
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let r = TraceRecord {
            subject: "a, \"b\"".into(),
            ..TraceRecord::default()
        };
        let csv = render_csv(&[r]);
        assert!(
            csv.lines().nth(1).unwrap().contains("\"a, \"\"b\"\"\""),
            "{csv}"
        );
    }
}
