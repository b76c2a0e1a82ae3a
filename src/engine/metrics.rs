//! Retraction metrics with the exact definitions of DESIGN §2. The TUI cards, `clawback metrics
//! --json` and the tests all use [`compute`], so the numbers agree everywhere.
//!
//! - **Total** = items that reached `succeeded` or `failed` in the window (not skipped, not dry runs).
//! - **Success %** = succeeded / total; **Fail %** = failed / total, also per reason.
//! - **Unread / Read** = read state of the copy when it was retracted, over succeeded items.
//! - **Auto / Manual** = share of total by trigger (auto = every non-manual trigger).
//! - Dwell time (delivered → retracted) and time to act (detected → retracted) p50/p95 over
//!   succeeded items, throttling seen, and a per-tenant split.

use crate::model::FailureReason;
pub use crate::model::ItemOutcome;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// A share with its count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Share {
    pub count: u64,
    /// Percent of the relevant base, 0–100; 0 when the base is empty.
    pub pct: f64,
}

/// Seconds percentiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_secs: Option<f64>,
    pub p95_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TenantSplit {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
}

/// The metrics over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub total: u64,
    pub succeeded: Share,
    pub failed: Share,
    /// Failed items per reason, percent of total.
    pub failed_by_reason: BTreeMap<FailureReason, Share>,
    /// Over succeeded items.
    pub unread: Share,
    pub read: Share,
    /// Succeeded Hard Deletes in mailboxes on hold (kept for admins by the hold), over
    /// succeeded items: a success, never a failure.
    pub retained_by_hold: Share,
    /// Over total.
    pub auto: Share,
    pub manual: Share,
    pub dwell: Percentiles,
    pub time_to_act: Percentiles,
    pub throttled_responses: u64,
    pub throttled_wait_secs: f64,
    pub per_tenant: BTreeMap<String, TenantSplit>,
    /// Retractions (total) per bucket across the window, oldest first (sparkline).
    pub series: Vec<u64>,
}

fn share(count: u64, base: u64) -> Share {
    Share {
        count,
        pct: if base == 0 {
            0.0
        } else {
            count as f64 * 100.0 / base as f64
        },
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn percentiles(mut samples: Vec<f64>) -> Percentiles {
    samples.sort_by(|a, b| a.total_cmp(b));
    Percentiles {
        samples: samples.len() as u64,
        p50_secs: percentile(&samples, 50.0),
        p95_secs: percentile(&samples, 95.0),
    }
}

/// An item's outcome and finish time when the metrics count it: settled in `[since, until)`,
/// not skipped, not a dry run.
fn counted(
    item: &ItemOutcome,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Option<(&Result<(), FailureReason>, DateTime<Utc>)> {
    if item.skipped || item.dry_run {
        return None;
    }
    let (Some(result), Some(at)) = (&item.result, item.finished_at) else {
        return None;
    };
    (since.is_none_or(|s| at >= s) && until.is_none_or(|u| at < u)).then_some((result, at))
}

/// Computes the metrics of the items that finished in `[since, until)`; `buckets` sizes the
/// series (0 = no series).
pub fn compute<'a>(
    items: impl IntoIterator<Item = &'a ItemOutcome>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    buckets: usize,
) -> Metrics {
    let mut m = Metrics {
        since,
        until,
        ..Default::default()
    };
    let (mut succeeded, mut failed, mut read, mut unread, mut auto) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut held = 0u64;
    let mut by_reason: BTreeMap<FailureReason, u64> = BTreeMap::new();
    let mut dwell = Vec::new();
    let mut act = Vec::new();
    let mut finished_times = Vec::new();
    for item in items {
        let Some((result, at)) = counted(item, since, until) else {
            continue;
        };
        m.total += 1;
        finished_times.push(at);
        if item.trigger.is_auto() {
            auto += 1;
        }
        m.throttled_responses += u64::from(item.throttled);
        m.throttled_wait_secs += item.waited_secs;
        let split = m.per_tenant.entry(item.tenant.clone()).or_default();
        split.total += 1;
        match result {
            Ok(()) => {
                succeeded += 1;
                split.succeeded += 1;
                if item.retained_by_hold {
                    held += 1;
                }
                if item.read {
                    read += 1;
                } else {
                    unread += 1;
                }
                if let Some(d) = item.delivered_at {
                    dwell.push((at - d).num_milliseconds().max(0) as f64 / 1000.0);
                }
                if let Some(d) = item.detected_at {
                    act.push((at - d).num_milliseconds().max(0) as f64 / 1000.0);
                }
            }
            Err(reason) => {
                failed += 1;
                split.failed += 1;
                *by_reason.entry(*reason).or_default() += 1;
            }
        }
    }
    m.succeeded = share(succeeded, m.total);
    m.failed = share(failed, m.total);
    m.failed_by_reason = by_reason
        .into_iter()
        .map(|(r, n)| (r, share(n, m.total)))
        .collect();
    m.read = share(read, succeeded);
    m.unread = share(unread, succeeded);
    m.retained_by_hold = share(held, succeeded);
    m.auto = share(auto, m.total);
    m.manual = share(m.total - auto, m.total);
    m.dwell = percentiles(dwell);
    m.time_to_act = percentiles(act);
    m.series = series(&finished_times, since, until, buckets);
    m
}

fn series(
    times: &[DateTime<Utc>],
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    buckets: usize,
) -> Vec<u64> {
    if buckets == 0 || times.is_empty() {
        return vec![0; buckets];
    }
    let start = since
        .or_else(|| times.iter().min().copied())
        .unwrap_or_else(Utc::now);
    let end = until
        .or_else(|| {
            times
                .iter()
                .max()
                .map(|t| *t + chrono::Duration::milliseconds(1))
        })
        .unwrap_or_else(Utc::now);
    let span = (end - start).num_milliseconds().max(1);
    let mut out = vec![0u64; buckets];
    for t in times {
        let offset = (*t - start).num_milliseconds().clamp(0, span - 1);
        let idx = (offset as i128 * buckets as i128 / span as i128) as usize;
        if let Some(slot) = out.get_mut(idx.min(buckets - 1)) {
            *slot += 1;
        }
    }
    out
}

/// Parses a metrics window bound: RFC 3339, a date (`2026-11-20`), or a relative age
/// (`24h`, `7d`, `30m`, `2w`) counted back from `now`.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|n| n.and_utc())
            .ok_or_else(|| format!("{t:?}: not a valid date"));
    }
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num.parse().map_err(|_| {
        format!(
            "{t:?}: expected a date (2026-11-20), a time (RFC 3339) or an age like 24h, 7d, 30m"
        )
    })?;
    let d = match unit {
        "s" => chrono::Duration::seconds(n),
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        "w" => chrono::Duration::weeks(n),
        _ => return Err(format!("{t:?}: unknown unit {unit:?}; use s, m, h, d or w")),
    };
    Ok(now - d)
}

/// One message retracted in a window ("view details"): its copies that settled in the window,
/// by outcome and by trigger. Every counted item of [`compute`] is in exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RetractedMessage {
    pub message_id: String,
    /// From the trace; empty when the trace no longer holds it.
    pub subject: String,
    /// Tenants of the copies, sorted.
    pub tenants: Vec<String>,
    pub succeeded: u64,
    pub failed: u64,
    /// Copies by trigger: auto = every non-manual trigger.
    pub auto: u64,
    pub manual: u64,
    /// When its newest copy in the window was retracted (an item's finish time).
    pub last_retracted: DateTime<Utc>,
}

/// The messages whose copies were retracted (succeeded or failed) in `[since, until)`, by
/// retraction time — not by when the mail arrived — newest retraction first. Counts the same
/// items as [`compute`]: skipped items and dry runs never count.
pub fn retracted_messages<'a>(
    items: impl IntoIterator<Item = (&'a ItemOutcome, &'a str)>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Vec<RetractedMessage> {
    let mut by_message: BTreeMap<&str, RetractedMessage> = BTreeMap::new();
    for (item, message_id) in items {
        let Some((result, at)) = counted(item, since, until) else {
            continue;
        };
        let m = by_message
            .entry(message_id)
            .or_insert_with(|| RetractedMessage {
                message_id: message_id.to_string(),
                subject: String::new(),
                tenants: Vec::new(),
                succeeded: 0,
                failed: 0,
                auto: 0,
                manual: 0,
                last_retracted: at,
            });
        match result {
            Ok(()) => m.succeeded += 1,
            Err(_) => m.failed += 1,
        }
        if item.trigger.is_auto() {
            m.auto += 1;
        } else {
            m.manual += 1;
        }
        m.last_retracted = m.last_retracted.max(at);
        if !m.tenants.contains(&item.tenant) {
            m.tenants.push(item.tenant.clone());
            m.tenants.sort();
        }
    }
    let mut out: Vec<RetractedMessage> = by_message.into_values().collect();
    out.sort_by(|a, b| {
        b.last_retracted
            .cmp(&a.last_retracted)
            .then_with(|| a.message_id.cmp(&b.message_id))
    });
    out
}

/// [`retracted_messages`] over the store's job items, with subjects from the trace: what the
/// console's Metrics details and `clawback metrics --details` list.
pub fn retracted_in_window(
    store: &crate::store::Store,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<RetractedMessage>, crate::store::StoreError> {
    let rows = store.item_outcomes(since, until)?;
    let mut out = retracted_messages(rows.iter().map(|(o, m)| (o, m.as_str())), since, until);
    for m in &mut out {
        if let Some(r) = store.trace_by_message_id(&m.message_id)?.first() {
            m.subject = r.subject.clone();
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Trigger;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    fn item(
        result: Option<Result<(), FailureReason>>,
        read: bool,
        trigger: Trigger,
        finished: i64,
    ) -> ItemOutcome {
        ItemOutcome {
            tenant: "contoso".into(),
            trigger,
            result,
            skipped: false,
            dry_run: false,
            read,
            finished_at: Some(at(finished)),
            delivered_at: Some(at(finished - 100)),
            detected_at: Some(at(finished - 10)),
            throttled: 0,
            waited_secs: 0.0,
            retained_by_hold: false,
        }
    }

    #[test]
    fn definitions_hold_on_a_known_mix() {
        let mut items = vec![
            item(Some(Ok(())), false, Trigger::Manual, 1),
            item(Some(Ok(())), false, Trigger::Auto, 2),
            item(Some(Ok(())), true, Trigger::PostDelivery, 3),
            item(
                Some(Err(FailureReason::AlreadyGone)),
                false,
                Trigger::Manual,
                4,
            ),
            item(
                Some(Err(FailureReason::NotAuthorized)),
                true,
                Trigger::PhishSubmission,
                5,
            ),
            item(None, false, Trigger::Manual, 6),
        ];
        let mut skipped = item(Some(Ok(())), false, Trigger::Manual, 7);
        skipped.skipped = true;
        let mut dry = item(Some(Ok(())), false, Trigger::Manual, 8);
        dry.dry_run = true;
        let mut outside = item(Some(Ok(())), false, Trigger::Manual, 10_000);
        outside.tenant = "late".into();
        items.extend([skipped, dry, outside]);

        let m = compute(&items, Some(at(0)), Some(at(1000)), 4);
        assert_eq!(m.total, 5);
        assert_eq!(
            m.succeeded,
            Share {
                count: 3,
                pct: 60.0
            }
        );
        assert_eq!(
            m.failed,
            Share {
                count: 2,
                pct: 40.0
            }
        );
        assert_eq!(m.failed_by_reason[&FailureReason::AlreadyGone].pct, 20.0);
        assert_eq!(m.unread.count, 2);
        assert!((m.unread.pct - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(
            m.auto,
            Share {
                count: 3,
                pct: 60.0
            }
        );
        assert_eq!(
            m.manual,
            Share {
                count: 2,
                pct: 40.0
            }
        );
        assert_eq!(m.dwell.p50_secs, Some(100.0));
        assert_eq!(m.time_to_act.p95_secs, Some(10.0));
        assert!(!m.per_tenant.contains_key("late"));
        assert_eq!(m.series.iter().sum::<u64>(), 5);
    }

    #[test]
    fn empty_window_has_zero_percentages() {
        let m = compute(&[], None, None, 3);
        assert_eq!((m.total, m.succeeded.pct, m.series.len()), (0, 0.0, 3));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(10.0));
        assert_eq!(percentile(&s, 95.0), Some(19.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn parses_window_bounds() {
        let now = at(0);
        assert_eq!(
            parse_time("24h", now),
            Ok(now - chrono::Duration::hours(24))
        );
        assert_eq!(
            parse_time("2026-11-20", now).map(|d| d.to_rfc3339()),
            Ok("2026-11-20T00:00:00+00:00".into())
        );
        assert!(
            parse_time("7y", now)
                .expect_err("unit")
                .contains("unknown unit")
        );
    }

    /// Details count by retraction (finish) time, whatever the delivery time: mail delivered
    /// long before the window is listed when it was retracted inside it. Every item the
    /// metrics count is in exactly one message; dry runs, skipped and earlier items are not.
    #[test]
    fn details_list_messages_by_retraction_time_with_the_metrics_items() {
        let mut old = item(Some(Ok(())), false, Trigger::Manual, 50);
        old.delivered_at = Some(at(-30 * 86_400));
        let mut dry = item(Some(Ok(())), false, Trigger::Manual, 60);
        dry.dry_run = true;
        let mut skipped = item(None, false, Trigger::Manual, 60);
        skipped.skipped = true;
        let mut fabrikam = item(Some(Ok(())), false, Trigger::Auto, 70);
        fabrikam.tenant = "fabrikam".into();
        let rows = [
            (item(Some(Ok(())), false, Trigger::Manual, -5), "<before@x>"),
            (old, "<campaign@x>"),
            (
                item(
                    Some(Err(FailureReason::NotAuthorized)),
                    false,
                    Trigger::Manual,
                    55,
                ),
                "<campaign@x>",
            ),
            (fabrikam, "<campaign@x>"),
            (dry, "<dry@x>"),
            (skipped, "<campaign@x>"),
            (
                item(Some(Ok(())), true, Trigger::PhishSubmission, 40),
                "<lure@x>",
            ),
        ];
        let since = Some(at(0));
        let listed = retracted_messages(rows.iter().map(|(o, m)| (o, *m)), since, None);
        let campaign = RetractedMessage {
            message_id: "<campaign@x>".into(),
            subject: String::new(),
            tenants: vec!["contoso".into(), "fabrikam".into()],
            succeeded: 2,
            failed: 1,
            auto: 1,
            manual: 2,
            last_retracted: at(70),
        };
        let lure = RetractedMessage {
            message_id: "<lure@x>".into(),
            subject: String::new(),
            tenants: vec!["contoso".into()],
            succeeded: 1,
            failed: 0,
            auto: 1,
            manual: 0,
            last_retracted: at(40),
        };
        assert_eq!(listed, vec![campaign, lure]);
        let m = compute(rows.iter().map(|(o, _)| o), since, None, 0);
        let copies: u64 = listed.iter().map(|r| r.succeeded + r.failed).sum();
        let auto: u64 = listed.iter().map(|r| r.auto).sum();
        assert_eq!((copies, auto), (m.total, m.auto.count));
    }
}
