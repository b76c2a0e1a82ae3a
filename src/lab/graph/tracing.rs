//! Graph message trace (v1.0): `GET /admin/exchange/tracing/messageTraces`, the tenant-wide
//! delivery log (PROVIDER-APIS.md §F.1). One record per (message, recipient), made from the
//! lab's own deliveries: every copy a mailbox received is a `delivered` record, and a list the
//! message was addressed to is an `expanded` record beside its members' own. The log does not
//! change when a copy is later moved or deleted (it records delivery, not where mail is now).
//!
//! Faithful where it matters to a client: application permission
//! `ExchangeMessageTrace.Read.All`; global cloud only; `$filter` on `receivedDateTime` (ge,
//! le), `messageId`, `recipientAddress`, `senderAddress`, `status`, `id` (eq), joined by `and`;
//! the window within the last 90 days and at most 10 days per query (default: the last 48
//! hours); `$top` 1–5000 (default 1000) with `@odata.nextLink`; 100 requests per 5 minutes per
//! tenant, then 429 with `Retry-After` in whole seconds.

use super::filter::{self, Op};
use super::{
    authenticate, bad_request, collection, context, error, parse_query, require_directory,
};
use crate::lab::state::Tenant;
use crate::lab::{Lab, SharedLab};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

/// The application permission the endpoint needs.
pub const PERMISSION: &str = "ExchangeMessageTrace.Read.All";
/// Requests per window per tenant.
pub const REQUESTS_PER_WINDOW: usize = 100;
/// The throttling window.
pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(300);
/// How far back the log reaches.
pub const RETENTION_DAYS: i64 = 90;
/// The widest window one query may ask for.
pub const MAX_QUERY_DAYS: i64 = 10;
/// The window when the query gives no start.
pub const DEFAULT_HOURS: i64 = 48;

/// One `exchangeMessageTrace` record.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRecord {
    pub id: String,
    pub message_id: String,
    pub sender: String,
    pub recipient: String,
    pub subject: String,
    pub received: DateTime<Utc>,
    pub status: &'static str,
    pub size: usize,
}

impl TraceRecord {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "messageId": self.message_id,
            "senderAddress": self.sender,
            "recipientAddress": self.recipient,
            "subject": self.subject,
            "receivedDateTime": self.received.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "status": self.status,
            "size": self.size,
            "fromIP": null,
            "toIP": null,
        })
    }

    /// Whether the record passes one `$filter` clause.
    fn passes(&self, clause: &filter::Clause) -> bool {
        match clause.property.as_str() {
            "receivedDateTime" => clause
                .date()
                .is_some_and(|d| clause.compare(&self.received, &d)),
            "messageId" => self.message_id.eq_ignore_ascii_case(&clause.value),
            "recipientAddress" => self.recipient.eq_ignore_ascii_case(&clause.value),
            "senderAddress" => self.sender.eq_ignore_ascii_case(&clause.value),
            "status" => self.status == clause.value,
            "id" => self.id == clause.value,
            _ => false,
        }
    }
}

/// The tenant's delivery log: a record per copy delivered, and an `expanded` record per list
/// a message was addressed to; newest first.
pub fn records(tenant: &Tenant) -> Vec<TraceRecord> {
    let mut out = Vec::new();
    let mut lists: BTreeSet<(String, String)> = BTreeSet::new();
    for (mailbox, mb) in &tenant.mailboxes {
        for copy in mb.copies.values() {
            let c = &copy.content;
            out.push(record(
                &c.internet_message_id,
                &c.from,
                mailbox,
                &c.subject,
                copy.received,
                "delivered",
                c.raw.len(),
            ));
            for address in c.to.iter().chain(&c.cc) {
                let address = address.to_ascii_lowercase();
                if tenant.groups.contains_key(&address)
                    && lists.insert((c.internet_message_id.clone(), address.clone()))
                {
                    out.push(record(
                        &c.internet_message_id,
                        &c.from,
                        &address,
                        &c.subject,
                        copy.received,
                        "expanded",
                        c.raw.len(),
                    ));
                }
            }
        }
    }
    out.sort_by(|a, b| {
        (b.received, &a.recipient, &a.message_id).cmp(&(a.received, &b.recipient, &b.message_id))
    });
    out
}

fn record(
    message_id: &str,
    sender: &str,
    recipient: &str,
    subject: &str,
    received: DateTime<Utc>,
    status: &'static str,
    size: usize,
) -> TraceRecord {
    let digest = Sha256::digest(format!("{message_id}\n{recipient}").as_bytes());
    let h = hex::encode(&digest[..16]);
    TraceRecord {
        // A GUID-shaped id, stable per (message, recipient).
        id: format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ),
        message_id: message_id.to_string(),
        sender: sender.to_ascii_lowercase(),
        recipient: recipient.to_ascii_lowercase(),
        subject: subject.to_string(),
        received,
        status,
        size,
    }
}

/// Message-trace requests per tenant in the current window.
pub type TraceWindows = Mutex<HashMap<usize, VecDeque<Instant>>>;

/// Counts one request; `Err(seconds)` when the tenant has used its window.
fn admit(lab: &Lab, tenant: usize) -> Result<(), u64> {
    let now = Instant::now();
    let mut all = lab.trace_windows.lock().unwrap_or_else(|p| p.into_inner());
    let q = all.entry(tenant).or_default();
    while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
        q.pop_front();
    }
    if q.len() >= REQUESTS_PER_WINDOW {
        let oldest = q.front().copied().unwrap_or(now);
        let wait = WINDOW.saturating_sub(now.duration_since(oldest));
        return Err(wait.as_secs().max(1));
    }
    q.push_back(now);
    Ok(())
}

/// `GET /admin/exchange/tracing/messageTraces`
pub async fn message_traces(
    State(lab): State<SharedLab>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let caller = match authenticate(&lab, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !lab.state().tenants[caller.t].cloud.offers_message_trace() {
        return bad_request("Resource not found for the segment 'tracing'.");
    }
    if let Err(r) = require_directory(&caller, &[PERMISSION]) {
        return r;
    }
    if let Err(secs) = admit(&lab, caller.t) {
        return crate::lab::errors::graph_throttled(
            "TooManyRequests",
            &format!(
                "Too many requests: message trace allows {REQUESTS_PER_WINDOW} requests per {} minutes per tenant.",
                WINDOW.as_secs() / 60
            ),
            secs as f64,
        );
    }
    let query = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let size = match query.page_size(1000, 5000) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let clauses = match query.filter.as_deref().map(filter::parse).transpose() {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => return bad_request(&e.to_string()),
    };
    for c in &clauses {
        let ok = match c.property.as_str() {
            "receivedDateTime" => {
                matches!(c.op, Op::Ge | Op::Le | Op::Gt | Op::Lt) && c.date().is_some()
            }
            "messageId" | "recipientAddress" | "senderAddress" | "status" | "id" => c.op == Op::Eq,
            _ => false,
        };
        if !ok {
            return bad_request(&format!(
                "Invalid filter clause: the lab's message trace filters receivedDateTime (ge, le) and messageId, recipientAddress, senderAddress, status, id (eq), not {:?}.",
                c.property
            ));
        }
    }
    let now = Utc::now();
    let bound = |ops: &[Op]| {
        clauses
            .iter()
            .filter(|c| c.property == "receivedDateTime" && ops.contains(&c.op))
            .filter_map(filter::Clause::date)
            .next()
    };
    let start = bound(&[Op::Ge, Op::Gt]).unwrap_or(now - Duration::hours(DEFAULT_HOURS));
    let end = bound(&[Op::Le, Op::Lt]).unwrap_or(now);
    if start < now - Duration::days(RETENTION_DAYS) {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Invalid start date: message trace covers the last {RETENTION_DAYS} days only."
            ),
        );
    }
    if end - start > Duration::days(MAX_QUERY_DAYS) {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Invalid date range: the window between start and end date must be at most {MAX_QUERY_DAYS} days."
            ),
        );
    }
    let (value, next) = {
        let state = lab.state();
        let all: Vec<TraceRecord> = records(&state.tenants[caller.t])
            .into_iter()
            .filter(|r| r.received >= start && r.received <= end)
            .filter(|r| clauses.iter().all(|c| r.passes(c)))
            .collect();
        let (range, next) = query.page(
            &lab,
            "/admin/exchange/tracing/messageTraces",
            all.len(),
            size,
        );
        let value: Vec<Value> = all[range].iter().map(TraceRecord::json).collect();
        (value, next)
    };
    collection(
        context(&lab, "admin/exchange/tracing/messageTraces"),
        value,
        next,
    )
}
