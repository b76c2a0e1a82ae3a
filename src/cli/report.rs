//! `clawback metrics` and `clawback audit`: read-only views of the store.

use crate::cli::exit;
use crate::cli::out::{errln, outln};
use crate::cli::trace::open_store;
use crate::engine::metrics::{self, Metrics};
use crate::engine::roles::{Capability, authorize};
use crate::store::Store;
use chrono::Utc;
use clap::{Args, Subcommand};
use std::path::Path;

#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Start of the window: 2026-11-20, RFC 3339, or an age like 24h, 7d (default: 30d).
    #[arg(long)]
    pub since: Option<String>,
    /// End of the window (default: now).
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// Also list the retracted messages of the window ("view details").
    #[arg(long)]
    pub details: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Entries, oldest first.
    List {
        /// Only this section (retract, job, restore, denied, policy, automation).
        #[arg(long)]
        section: Option<String>,
    },
    /// Check the hash chain: exit 0 intact, 1 naming the first broken entry. Also checks every
    /// head given with --head and every line of the configured [audit] head_file: a log that
    /// no longer contains entry SEQ with that hash (truncated, wiped, rewritten) is broken.
    Verify {
        /// A head recorded earlier, `SEQ:sha256:HEX` (repeatable).
        #[arg(long = "head", value_name = "SEQ:sha256:HEX")]
        heads: Vec<crate::store::chain::AuditHead>,
    },
    /// Print the newest entry as `SEQ sha256:HEX`: keep it outside the data directory (a
    /// ticket, a log shipper) and check with `audit verify --head`.
    Head,
    /// Every entry as JSON Lines.
    Export,
}

/// The metrics of a window, from the store (the same numbers the TUI shows).
pub fn window_metrics(
    store: &Store,
    since: Option<chrono::DateTime<Utc>>,
    until: Option<chrono::DateTime<Utc>>,
    buckets: usize,
) -> Result<Metrics, crate::store::StoreError> {
    let rows = store.item_outcomes(since, until)?;
    let outcomes: Vec<_> = rows.into_iter().map(|(o, _)| o).collect();
    Ok(metrics::compute(outcomes.iter(), since, until, buckets))
}

pub fn metrics(args: MetricsArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let (config, store) = match open_store(config_path, data_dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let role = config
        .map(|c| c.operator.role)
        .unwrap_or(crate::model::Role::Responder);
    if let Err(e) = authorize(role, Capability::ViewMetrics) {
        errln!("clawback: {e}");
        return exit::USAGE;
    }
    let now = Utc::now();
    let parse = |t: &Option<String>, default: Option<chrono::DateTime<Utc>>| match t {
        Some(t) => metrics::parse_time(t, now).map(Some),
        None => Ok(default),
    };
    let since = match parse(&args.since, Some(now - chrono::Duration::days(30))) {
        Ok(s) => s,
        Err(e) => {
            errln!("clawback: --since {e}");
            return exit::USAGE;
        }
    };
    let until = match parse(&args.until, None) {
        Ok(s) => s,
        Err(e) => {
            errln!("clawback: --until {e}");
            return exit::USAGE;
        }
    };
    let m = match window_metrics(&store, since, until, 24) {
        Ok(x) => x,
        Err(e) => {
            errln!("clawback: {e}");
            return exit::FAILURE;
        }
    };
    // "View details": the console's Metrics details, from the same engine function.
    let messages = if args.details {
        match metrics::retracted_in_window(&store, since, until) {
            Ok(x) => x,
            Err(e) => {
                errln!("clawback: {e}");
                return exit::FAILURE;
            }
        }
    } else {
        Vec::new()
    };
    if args.json {
        let mut v = serde_json::to_value(&m).unwrap_or_default();
        if args.details
            && let Some(obj) = v.as_object_mut()
        {
            obj.insert("details".into(), serde_json::json!(messages));
        }
        outln!("{v}");
        return exit::OK;
    }
    outln!("Total retractions  {}", m.total);
    outln!(
        "Success            {:.1}% ({})",
        m.succeeded.pct,
        m.succeeded.count
    );
    outln!(
        "Failed             {:.1}% ({})",
        m.failed.pct,
        m.failed.count
    );
    for (reason, s) in &m.failed_by_reason {
        outln!("  {:<16} {:.1}% ({})", reason.as_str(), s.pct, s.count);
    }
    outln!(
        "Unread / Read      {:.1}% / {:.1}%",
        m.unread.pct,
        m.read.pct
    );
    outln!(
        "Auto / Manual      {:.1}% / {:.1}%",
        m.auto.pct,
        m.manual.pct
    );
    let secs = |s: Option<f64>| s.map(human_duration).unwrap_or_else(|| "-".into());
    outln!(
        "Retained by hold   {:.1}% ({})",
        m.retained_by_hold.pct,
        m.retained_by_hold.count
    );
    outln!(
        "Dwell p50 / p95    {} / {}",
        secs(m.dwell.p50_secs),
        secs(m.dwell.p95_secs)
    );
    outln!(
        "Time to act p50/95 {} / {}",
        secs(m.time_to_act.p50_secs),
        secs(m.time_to_act.p95_secs)
    );
    outln!(
        "Throttled          {} responses, {:.1}s waited",
        m.throttled_responses,
        m.throttled_wait_secs
    );
    if !m.per_tenant.is_empty() {
        outln!("Per tenant");
    }
    for (tenant, t) in &m.per_tenant {
        outln!(
            "  {tenant:<16} total {}  ok {}  failed {}",
            t.total,
            t.succeeded,
            t.failed
        );
    }
    if args.details {
        outln!(
            "Retracted messages ({}, newest retraction first):",
            messages.len()
        );
        for r in messages {
            if !outln!(
                "  {}  {}  ok {} failed {}  auto {} manual {}  {}  {}",
                r.last_retracted.format("%Y-%m-%d %H:%M"),
                r.message_id,
                r.succeeded,
                r.failed,
                r.auto,
                r.manual,
                r.tenants.join(","),
                r.subject
            ) {
                break;
            }
        }
    }
    exit::OK
}

/// `42s`, `3m 05s`, `26h 31m`: a dwell time in seconds reads badly past a minute.
fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

pub fn audit(args: AuditArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let (config, store) = match open_store(config_path, data_dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match args.command.unwrap_or(AuditCommand::List { section: None }) {
        AuditCommand::Head => match store.audit_head() {
            Ok(Some(head)) => {
                outln!("{head}");
                exit::OK
            }
            Ok(None) => {
                outln!("0 (the audit log is empty)");
                exit::OK
            }
            Err(e) => {
                errln!("clawback: {e}");
                exit::FAILURE
            }
        },
        AuditCommand::Verify { mut heads } => {
            let given = heads.len();
            let head_file = config.as_ref().and_then(|c| c.audit.head_file.clone());
            if let Some(path) = &head_file
                && path.exists()
            {
                match crate::store::audit::read_head_file(path) {
                    Ok(h) => heads.extend(h),
                    Err(e) => {
                        errln!("clawback: {e}");
                        return exit::FAILURE;
                    }
                }
            }
            match store.audit_verify_heads(&heads) {
                Ok(Ok(n)) => {
                    let mut against = Vec::new();
                    if given > 0 {
                        against.push(format!("{given} given heads"));
                    }
                    if let Some(path) = &head_file {
                        against.push(format!(
                            "{} heads in {}",
                            heads.len() - given,
                            path.display()
                        ));
                    }
                    if against.is_empty() {
                        outln!("audit log intact: {n} entries");
                    } else {
                        outln!(
                            "audit log intact: {n} entries, matching {}",
                            against.join(" and ")
                        );
                    }
                    exit::OK
                }
                Ok(Err(brk)) => {
                    outln!("audit log BROKEN: {brk}");
                    exit::FAILURE
                }
                Err(e) => {
                    errln!("clawback: {e}");
                    exit::FAILURE
                }
            }
        }
        AuditCommand::List { section } => {
            let entries = match store.audit_entries() {
                Ok(Ok(e)) => e,
                Ok(Err(brk)) => {
                    errln!("clawback: {brk}; run `clawback audit verify`");
                    return exit::FAILURE;
                }
                Err(e) => {
                    errln!("clawback: {e}");
                    return exit::FAILURE;
                }
            };
            for e in entries
                .iter()
                .filter(|e| section.as_deref().is_none_or(|s| e.record.section == s))
            {
                let counts: Vec<String> = e
                    .record
                    .counts
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let request = crate::engine::audit::request_summary(&e.record);
                let written = outln!(
                    "{:>5} {} {:<10} {:<22} {}({}, {}) job={} {}{}{}",
                    e.seq,
                    e.record.at.format("%Y-%m-%d %H:%M:%S"),
                    e.record.section,
                    e.record.action,
                    e.record.operator,
                    e.record.role,
                    e.record.os_user,
                    e.record.job_id.as_deref().unwrap_or("-"),
                    counts.join(" "),
                    if request.is_empty() { "" } else { " " },
                    request
                );
                if !written {
                    break;
                }
            }
            exit::OK
        }
        AuditCommand::Export => match store.audit_entries() {
            Ok(Ok(entries)) => {
                for e in entries {
                    if !outln!("{}", serde_json::to_string(&e).unwrap_or_default()) {
                        break;
                    }
                }
                exit::OK
            }
            Ok(Err(brk)) => {
                errln!("clawback: {brk}");
                exit::FAILURE
            }
            Err(e) => {
                errln!("clawback: {e}");
                exit::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_read_as_seconds_minutes_or_hours() {
        assert_eq!(human_duration(0.4), "0s");
        assert_eq!(human_duration(119.0), "119s");
        assert_eq!(human_duration(185.0), "3m 05s");
        assert_eq!(human_duration(95_512.0), "26h 31m");
        assert_eq!(human_duration(-3.0), "0s");
    }
}
