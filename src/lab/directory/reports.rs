//! Admin SDK Reports API, Gmail log events (PROVIDER-APIS.md §F.2):
//! `GET /admin/reports/v1/activity/users/{userKey}/applications/{applicationName}` with
//! `applicationName=gmail` — the tenant-wide delivery log of a Google tenant. One `delivery`
//! activity per (message, recipient) the lab delivered (`event_info.mail_event_type` 2,
//! received), with `message_info` (`rfc2822_message_id`, `subject`, `source.address`,
//! `destination.address`, `flattened_destinations`, `is_spam`, `payload_size`) as the
//! discovery document's nested parameters (which nest one level only). `startTime` and `endTime` are required for Gmail and at most 30 days apart;
//! `maxResults` 1–1000 (default 1000) with `nextPageToken`; `filters` on
//! `event_info.mail_event_type` and `message_info.rfc2822_message_id` (`==`); scope
//! `admin.reports.audit.readonly`, impersonating an admin.

use super::{Reply, bad_request, enter};
use crate::lab::SharedLab;
use crate::lab::state::Tenant;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

/// The scope the Gmail log needs.
pub const REPORTS_SCOPE: &str = "https://www.googleapis.com/auth/admin.reports.audit.readonly";
/// The widest `startTime`..`endTime` a Gmail query may ask for.
pub const MAX_WINDOW_DAYS: i64 = 30;

#[derive(Debug, Deserialize)]
pub struct ActivityParams {
    #[serde(rename = "startTime")]
    start_time: Option<String>,
    #[serde(rename = "endTime")]
    end_time: Option<String>,
    #[serde(rename = "eventName")]
    event_name: Option<String>,
    filters: Option<String>,
    #[serde(rename = "maxResults")]
    max_results: Option<String>,
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
}

/// One delivery in the Gmail log.
#[derive(Debug, Clone)]
struct Delivery {
    message_id: String,
    subject: String,
    source: String,
    destination: String,
    time: DateTime<Utc>,
    spam: bool,
    size: usize,
    profile_id: String,
}

fn deliveries(tenant: &Tenant) -> Vec<Delivery> {
    let mut out: Vec<Delivery> = tenant
        .mailboxes
        .iter()
        .flat_map(|(mailbox, mb)| {
            mb.copies.values().map(move |copy| Delivery {
                message_id: copy.content.internet_message_id.clone(),
                subject: copy.content.subject.clone(),
                source: copy.content.from.to_ascii_lowercase(),
                destination: mailbox.clone(),
                time: copy.received,
                spam: copy.folder == crate::model::Folder::Junk,
                size: copy.content.raw.len(),
                profile_id: tenant
                    .user(mailbox)
                    .map(|u| u.id.clone())
                    .unwrap_or_default(),
            })
        })
        .collect();
    out.sort_by(|a, b| (b.time, &a.destination).cmp(&(a.time, &b.destination)));
    out
}

fn text(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value })
}

fn activity(tenant: &Tenant, d: &Delivery, qualifier: usize) -> Value {
    json!({
        "kind": "admin#reports#activity",
        "id": {
            "time": d.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "uniqueQualifier": qualifier.to_string(),
            "applicationName": "gmail",
            "customerId": tenant.tenant_id,
        },
        "actor": { "callerType": "USER", "email": d.destination, "profileId": d.profile_id },
        "events": [{
            "type": "delivery",
            "name": "delivery",
            "parameters": [
                { "name": "event_info", "messageValue": { "parameter": [
                    { "name": "mail_event_type", "intValue": "2" },
                    { "name": "timestamp_usec", "intValue": (d.time.timestamp_micros()).to_string() },
                ]}},
                { "name": "message_info", "messageValue": { "parameter": [
                    text("rfc2822_message_id", &d.message_id),
                    text("subject", &d.subject),
                    // The discovery document's NestedParameter nests no further: the log's
                    // nested fields (BigQuery's source.address, destination[].address) are
                    // named by their path here, with flattened_destinations beside them.
                    text("source.address", &d.source),
                    { "name": "destination.address", "multiValue": [d.destination] },
                    text("flattened_destinations", &d.destination),
                    { "name": "is_spam", "boolValue": d.spam },
                    { "name": "payload_size", "intValue": d.size.to_string() },
                ]}},
            ],
        }],
    })
}

/// A `filters` clause the lab understands: `event_info.mail_event_type==N` or
/// `message_info.rfc2822_message_id==<…>`.
fn passes(d: &Delivery, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, v)| match k.as_str() {
        "event_info.mail_event_type" => v == "2",
        "message_info.rfc2822_message_id" => d.message_id.eq_ignore_ascii_case(v),
        _ => false,
    })
}

fn time(name: &str, value: Option<&str>) -> Result<DateTime<Utc>, axum::response::Response> {
    let Some(v) = value else {
        return Err(bad_request(&format!(
            "{name} is required for applicationName gmail (startTime and endTime at most {MAX_WINDOW_DAYS} days apart)"
        )));
    };
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad_request(&format!("Invalid value for {name}: {v}")))
}

/// `GET /admin/reports/v1/activity/users/{userKey}/applications/{applicationName}`
pub async fn activities(
    State(lab): State<SharedLab>,
    Path((user_key, application)): Path<(String, String)>,
    Query(p): Query<ActivityParams>,
    headers: HeaderMap,
) -> Reply {
    let t = enter(&lab, &headers, &[REPORTS_SCOPE]).await?;
    if application != "gmail" {
        return Err(bad_request(&format!(
            "the lab's Reports API serves applicationName gmail, not {application}"
        )));
    }
    let start = time("startTime", p.start_time.as_deref())?;
    let end = time("endTime", p.end_time.as_deref())?;
    if end < start || end - start > Duration::days(MAX_WINDOW_DAYS) {
        return Err(bad_request(&format!(
            "Invalid time range: startTime and endTime must be at most {MAX_WINDOW_DAYS} days apart for applicationName gmail"
        )));
    }
    if p.event_name.as_deref().is_some_and(|e| e != "delivery") {
        return Err(bad_request("eventName: gmail logs delivery events only"));
    }
    let mut filters = Vec::new();
    for clause in p.filters.as_deref().unwrap_or("").split(',') {
        let clause = clause.trim();
        if clause.is_empty() {
            continue;
        }
        match clause.split_once("==") {
            Some((k, v))
                if matches!(
                    k.trim(),
                    "event_info.mail_event_type" | "message_info.rfc2822_message_id"
                ) =>
            {
                filters.push((k.trim().to_string(), v.trim().to_string()))
            }
            _ => {
                return Err(bad_request(&format!(
                    "Invalid filters: the lab supports event_info.mail_event_type==N and message_info.rfc2822_message_id==ID, not {clause:?}"
                )));
            }
        }
    }
    let size = match p.max_results.as_deref() {
        None => 1000,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return Err(bad_request(&format!("Invalid Input: maxResults {v}"))),
        },
    };
    let offset = match p.page_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(tok) => tok
            .parse::<usize>()
            .map_err(|_| bad_request("Invalid Input: pageToken"))?,
    };
    let state = lab.state();
    let tenant = &state.tenants[t];
    let user = (user_key != "all").then(|| user_key.to_ascii_lowercase());
    let all: Vec<Delivery> = deliveries(tenant)
        .into_iter()
        .filter(|d| d.time >= start && d.time < end)
        .filter(|d| user.as_ref().is_none_or(|u| *u == d.destination))
        .filter(|d| passes(d, &filters))
        .collect();
    let page: Vec<Value> = all
        .iter()
        .enumerate()
        .skip(offset)
        .take(size)
        .map(|(i, d)| activity(tenant, d, i))
        .collect();
    let mut body = json!({ "kind": "admin#reports#activities", "items": page });
    if offset + size < all.len() {
        body["nextPageToken"] = json!((offset + size).to_string());
    }
    Ok(axum::Json(body).into_response())
}
