//! `clawback policy` (the auto-retract matrix as config-as-code) and `clawback watch` (the
//! automation loop, DESIGN §6).

use crate::cli::exit;
use crate::cli::out::{errln, out, outln};
use crate::cli::retract::engine;
use crate::engine::automation::{WatchLease, WatchOptions, Watcher};
use crate::engine::policy::{MAX_INTERVAL_SECS, MAX_LOOKBACK_SECS, format_duration};
use crate::engine::view::{PolicyMatrix, ResponseSwitch};
use crate::engine::{Engine, EngineError};
use crate::model::{Disposition, RetractAction};
use crate::store::automation::{HeldMatch, HoldState};
use crate::store::leader::WatchLead;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: Option<PolicyCommand>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The policy in force.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// `set DISPOSITION ACTION`, or `set post_delivery|phish_submission on|off [--interval 15m]
    /// [--lookback 7d]`.
    Set {
        /// A disposition (malicious, suspicious, spoof, spam, bulk) or post_delivery /
        /// phish_submission.
        what: String,
        /// An action (no_action, junk, trash, soft_delete, hard_delete) or on / off.
        value: String,
        /// How often the response runs (e.g. 15m, 1h, 900s).
        #[arg(long)]
        interval: Option<String>,
        /// How far back it looks (e.g. 7d, 48h).
        #[arg(long)]
        lookback: Option<String>,
    },
    /// Print the policy as TOML (or write it to --out).
    Export {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Replace the policy with a TOML file written by `export`.
    Import { file: PathBuf },
    /// Intel matches the automation guard held instead of retracting (open ones; --all for
    /// released and expired too).
    Holds {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Release a held match (admin): the next `watch` cycle retracts it per the policy.
    Confirm {
        /// The hold's id, as `policy holds` and the `watch` log show it.
        id: i64,
    },
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Run one cycle (sync, phish reports, post delivery, auto-retract) and exit.
    #[arg(long)]
    pub once: bool,
    /// Time between cycles (default: `[automation] interval_secs`, 10s).
    #[arg(long)]
    pub interval: Option<String>,
    /// Intel directory: indicator lists (.csv, .txt) and STIX 2.1 bundles (.json).
    #[arg(long)]
    pub intel: Option<PathBuf>,
    /// Journal directory: journal reports, EML, verdict feeds dropped here are ingested.
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Do not sync from the providers (journal directory only).
    #[arg(long)]
    pub no_sync: bool,
    /// Distinct reporters that make a reported message malicious.
    #[arg(long)]
    pub reporters: Option<usize>,
}

/// `15m`, `1h`, `7d`, `30s`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| t.split_at(i))
        .unwrap_or((t, "s"));
    let too_long = || format!("{text:?} is too long a duration");
    let n: u64 = num.parse().map_err(|e: std::num::ParseIntError| {
        if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
            too_long()
        } else {
            format!("{text:?} is not a duration (e.g. 30s, 15m, 1h, 7d)")
        }
    })?;
    let mult = match unit.trim() {
        "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unknown unit (s, m, h, d)")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(too_long)
}

/// The policy file (`policy export` / `import`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    actions: BTreeMap<Disposition, RetractAction>,
    #[serde(default)]
    post_delivery: Option<SwitchFile>,
    #[serde(default)]
    phish_submission: Option<SwitchFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchFile {
    enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lookback: Option<String>,
}

fn switch_file(s: &ResponseSwitch) -> SwitchFile {
    SwitchFile {
        enabled: s.enabled,
        interval: Some(format_duration(s.interval_secs)),
        lookback: Some(format_duration(s.lookback_secs)),
    }
}

fn apply_switch(
    target: &mut ResponseSwitch,
    enabled: Option<bool>,
    interval: Option<&str>,
    lookback: Option<&str>,
    what: &str,
) -> Result<(), String> {
    if let Some(e) = enabled {
        target.enabled = e;
    }
    if let Some(i) = interval {
        let d = parse_duration(i).map_err(|e| format!("{what}.interval: {e}"))?;
        if d.as_secs() == 0 || d.as_secs() > MAX_INTERVAL_SECS {
            return Err(format!(
                "{what}.interval: {i} is out of range: more than 0 and at most {} (1 day)",
                format_duration(MAX_INTERVAL_SECS)
            ));
        }
        target.interval_secs = d.as_secs();
    }
    if let Some(l) = lookback {
        let d = parse_duration(l).map_err(|e| format!("{what}.lookback: {e}"))?;
        if d.as_secs() == 0 || d.as_secs() > MAX_LOOKBACK_SECS {
            return Err(format!(
                "{what}.lookback: {l} is out of range: more than 0 and at most {} (90 days)",
                format_duration(MAX_LOOKBACK_SECS)
            ));
        }
        target.lookback_secs = d.as_secs();
    }
    // A stored value from before the bounds (or one left out of the file) is checked too.
    target.check(what)
}

fn export_text(p: &PolicyMatrix) -> String {
    let file = PolicyFile {
        actions: Disposition::ALL
            .iter()
            .map(|d| (*d, p.action_for(*d)))
            .collect(),
        post_delivery: Some(switch_file(&p.post_delivery)),
        phish_submission: Some(switch_file(&p.phish_submission)),
    };
    let body = toml::to_string(&file).unwrap_or_default();
    format!(
        "# clawback auto-retract policy (version {}). Import with `clawback policy import FILE`.\n\
         # actions: no_action, junk, trash, soft_delete (Microsoft only; Trash on Gmail), hard_delete\n{body}",
        p.version
    )
}

/// Parses a policy file over the policy in force (keeps its version for the stale check).
fn import_text(text: &str, path: &Path, current: &PolicyMatrix) -> Result<PolicyMatrix, String> {
    let file: PolicyFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        format!("{}:{line}: {}", path.display(), e.message().trim())
    })?;
    let mut p = current.clone();
    p.actions = file
        .actions
        .into_iter()
        .filter(|(_, a)| *a != RetractAction::NoAction)
        .collect();
    // The error names its key (`post_delivery.interval: …`): point at the line that sets it.
    let at = |e: String| {
        let key = e.split(':').next().unwrap_or_default();
        match key_line(text, key) {
            Some(line) => format!("{}:{line}: {e}", path.display()),
            None => format!("{}: {e}", path.display()),
        }
    };
    if let Some(s) = &file.post_delivery {
        apply_switch(
            &mut p.post_delivery,
            Some(s.enabled),
            s.interval.as_deref(),
            s.lookback.as_deref(),
            "post_delivery",
        )
        .map_err(at)?;
    }
    if let Some(s) = &file.phish_submission {
        apply_switch(
            &mut p.phish_submission,
            Some(s.enabled),
            s.interval.as_deref(),
            s.lookback.as_deref(),
            "phish_submission",
        )
        .map_err(at)?;
    }
    Ok(p)
}

/// The 1-based line where a TOML text sets `table.key` (under `[table]`, or dotted), if it does.
fn key_line(text: &str, dotted: &str) -> Option<usize> {
    let (table, key) = dotted.split_once('.')?;
    let sets = |line: &str, name: &str| {
        line.strip_prefix(name)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    };
    let mut current = String::new();
    let mut inline = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
        } else if (current == table && sets(line, key))
            || (current.is_empty() && sets(line, dotted))
        {
            return Some(n + 1);
        } else if current.is_empty() && sets(line, table) {
            // `table = { key = … }`: the inline table's line.
            inline = Some(n + 1);
        }
    }
    inline
}

fn show(p: &PolicyMatrix) {
    outln!("policy version {}", p.version);
    for d in Disposition::ALL {
        outln!("  {:<12} {}", d.as_str(), p.action_for(*d).as_str());
    }
    for (name, s) in [
        ("post_delivery", &p.post_delivery),
        ("phish_submission", &p.phish_submission),
    ] {
        outln!(
            "  {name:<17} {} every {} looking back {}",
            if s.enabled { "on " } else { "off" },
            format_duration(s.interval_secs),
            format_duration(s.lookback_secs)
        );
    }
}

/// One line per hold, and how to release it.
fn show_holds(holds: &[HeldMatch], all: bool) {
    if holds.is_empty() {
        outln!(
            "{}",
            if all {
                "no matches were ever held by the automation guard"
            } else {
                "no matches held for confirmation"
            }
        );
        return;
    }
    outln!(
        "{:>5}  {:<18}  {:>7}  {:>8}  {:<16}  indicator",
        "id",
        "state",
        "copies",
        "messages",
        "held"
    );
    for h in holds {
        outln!(
            "{:>5}  {:<18}  {:>7}  {:>8}  {:<16}  {}",
            h.id,
            h.state.as_str(),
            h.copies,
            h.messages,
            h.created_at.format("%Y-%m-%d %H:%M"),
            h.indicator
        );
        match h.state {
            HoldState::NeedsConfirmation => {
                outln!(
                    "       {}; release with `clawback policy confirm {}`",
                    h.reason,
                    h.id
                );
            }
            HoldState::Confirmed => {
                outln!(
                    "       confirmed by {}; the next `clawback watch` cycle retracts it",
                    h.confirmed_by.as_deref().unwrap_or("?")
                );
            }
            HoldState::Released | HoldState::Expired => {}
        }
    }
}

fn fail(e: EngineError) -> u8 {
    errln!("clawback: {e}");
    match e {
        EngineError::Store(_) | EngineError::Provider(_) => exit::FAILURE,
        _ => exit::USAGE,
    }
}

fn save(engine: &Engine, p: PolicyMatrix) -> u8 {
    match engine.save_policy(p) {
        Ok((saved, warnings)) => {
            for w in &warnings {
                errln!("warning: {w}");
            }
            outln!("saved policy version {}", saved.version);
            exit::OK
        }
        Err(e) => fail(e),
    }
}

pub fn policy(args: PolicyArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let engine = match engine(config_path, data_dir) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let current = match engine.load_policy() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    match args.command.unwrap_or(PolicyCommand::Show { json: false }) {
        PolicyCommand::Holds { all, json } => match engine.automation_holds(all) {
            Ok(holds) => {
                if json {
                    outln!(
                        "{}",
                        serde_json::to_string_pretty(&holds).unwrap_or_default()
                    );
                } else {
                    show_holds(&holds, all);
                }
                exit::OK
            }
            Err(e) => fail(e),
        },
        PolicyCommand::Confirm { id } => match engine.confirm_hold(id) {
            Ok(h) => {
                outln!(
                    "confirmed hold {}: {} ({} copies in {} messages); the next `clawback watch` cycle retracts them per the policy",
                    h.id,
                    h.indicator,
                    h.copies,
                    h.messages
                );
                exit::OK
            }
            Err(e) => fail(e),
        },
        PolicyCommand::Show { json } => {
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&current).unwrap_or_default()
                );
            } else {
                show(&current);
            }
            exit::OK
        }
        PolicyCommand::Export { out } => {
            let text = export_text(&current);
            match out {
                None => {
                    out!("{text}");
                    exit::OK
                }
                Some(path) => match crate::secret::write_private_file(&path, text.as_bytes()) {
                    Ok(()) => {
                        errln!("wrote {}", path.display());
                        exit::OK
                    }
                    Err(e) => {
                        errln!("clawback: {}: {e}", path.display());
                        exit::FAILURE
                    }
                },
            }
        }
        PolicyCommand::Import { file } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    errln!("clawback: {}: cannot read: {e}", file.display());
                    return exit::USAGE;
                }
            };
            match import_text(&text, &file, &current) {
                Ok(p) => save(&engine, p),
                Err(e) => {
                    errln!("clawback: {e}");
                    exit::USAGE
                }
            }
        }
        PolicyCommand::Set {
            what,
            value,
            interval,
            lookback,
        } => {
            let mut p = current.clone();
            let key = what.trim().to_ascii_lowercase().replace('-', "_");
            if key == "post_delivery" || key == "phish_submission" {
                let enabled = match value.trim().to_ascii_lowercase().as_str() {
                    "on" | "true" | "yes" | "enabled" => true,
                    "off" | "false" | "no" | "disabled" => false,
                    other => {
                        errln!("clawback: {key}: expected on or off, got {other:?}");
                        return exit::USAGE;
                    }
                };
                let target = if key == "post_delivery" {
                    &mut p.post_delivery
                } else {
                    &mut p.phish_submission
                };
                if let Err(e) = apply_switch(
                    target,
                    Some(enabled),
                    interval.as_deref(),
                    lookback.as_deref(),
                    &key,
                ) {
                    errln!("clawback: {e}");
                    return exit::USAGE;
                }
            } else {
                if interval.is_some() || lookback.is_some() {
                    errln!(
                        "clawback: --interval and --lookback go with post_delivery or phish_submission"
                    );
                    return exit::USAGE;
                }
                let d: Disposition = match what.parse() {
                    Ok(d) => d,
                    Err(e) => {
                        errln!(
                            "clawback: {e} (or post_delivery / phish_submission for the responses)"
                        );
                        return exit::USAGE;
                    }
                };
                let a: RetractAction = match value.parse() {
                    Ok(a) => a,
                    Err(e) => {
                        errln!("clawback: {e}");
                        return exit::USAGE;
                    }
                };
                if a == RetractAction::NoAction {
                    p.actions.remove(&d);
                } else {
                    p.actions.insert(d, a);
                }
            }
            save(&engine, p)
        }
    }
}

/// Logs to `<data_dir>/watch.log` and stderr; `CLAWBACK_LOG` sets the filter (default info).
fn init_log(data_dir: &Path) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    std::fs::create_dir_all(data_dir).ok()?;
    let appender = tracing_appender::rolling::never(data_dir, "watch.log");
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAWBACK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.and(std::io::stderr))
        .with_ansi(false)
        .try_init()
        .ok()?;
    Some(guard)
}

/// Resolves when SIGINT or SIGTERM arrives.
pub(super) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn watch(args: WatchArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let engine = match engine(config_path, data_dir) {
        Ok(e) => e,
        Err(code) => return code,
    };
    if let Err(e) = engine.authorize(crate::engine::roles::Capability::Automate) {
        errln!("clawback: {e}");
        return exit::USAGE;
    }
    // The data directory, also on a PostgreSQL store (each host logs beside its own files).
    let dir = engine
        .store()
        .data_dir()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let _guard = init_log(&dir);
    let interval = match args.interval.as_deref().map(parse_duration) {
        None => Duration::from_secs(engine.config.automation.interval_secs.max(1)),
        Some(Ok(d)) if d.as_millis() > 0 => d,
        Some(Ok(_)) => {
            errln!("clawback: --interval must be more than 0");
            return exit::USAGE;
        }
        Some(Err(e)) => {
            errln!("clawback: --interval: {e}");
            return exit::USAGE;
        }
    };
    let mut options = WatchOptions::from_config(&engine);
    if let Some(i) = args.intel {
        options.intel_dir = Some(i);
    }
    if let Some(j) = args.journal {
        options.journal_dir = Some(j);
    }
    if let Some(n) = args.reporters {
        options.reporters_threshold = n.max(1);
    }
    options.sync = !args.no_sync;
    options.force_responses = args.once;
    let rt = match super::runtime("clawback") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    // One watcher at a time: the leader lease of the store (issue 17).
    let lease = WatchLease::for_interval(interval);
    let resign = || {
        if let Err(e) = lease.resign(&mut engine.store()) {
            tracing::warn!("watch: could not give up the lead: {e}");
        }
    };
    rt.block_on(async {
        let mut watcher = Watcher::new(&engine, options);
        watcher.lead_with(lease.clone());
        tracing::info!(
            log = %dir.join("watch.log").display(),
            interval_secs = interval.as_secs_f64(),
            once = args.once,
            lease_secs = lease.length().as_secs_f64(),
            "watch: starting"
        );
        let stop = shutdown_signal();
        tokio::pin!(stop);
        // `--once` behind another watcher waits for the lead up to two lease lengths (a dead
        // leader's lease lapses within one), then leaves the work to the live leader.
        let once_until = Instant::now() + 2 * lease.length();
        // The lease is renewed (or, by a follower, tried for) every third of its length, in a
        // cycle and between cycles: it is shorter than the interval, so a dead leader is
        // replaced within one interval.
        let mut renew = tokio::time::interval(lease.renew_every());
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        let mut leading = false;
        loop {
            let started = Instant::now();
            let outcome = {
                let cycle = watcher.cycle();
                tokio::pin!(cycle);
                loop {
                    tokio::select! {
                        r = &mut cycle => break Some(r),
                        _ = &mut stop => break None,
                        _ = renew.tick() => renew_lead(&engine, &lease, &mut leading),
                    }
                }
            };
            let mut wait = interval;
            match outcome {
                None => {
                    resign();
                    tracing::info!("watch: stopped by signal mid-cycle; unfinished jobs resume at the next start");
                    return exit::OK;
                }
                Some(Ok(report)) if report.following.is_some() => {
                    tracing::info!("{}", report.summary());
                    // Try again as soon as the leader's lease would lapse.
                    let left = report
                        .following
                        .as_ref()
                        .map(|l| l.expires_in() + Duration::from_millis(50))
                        .unwrap_or(interval);
                    if args.once && Instant::now() + left > once_until {
                        tracing::info!("watch: another watcher leads; it does this cycle's work");
                        return exit::OK;
                    }
                    wait = if args.once { left } else { left.min(interval) };
                }
                Some(Ok(report)) => {
                    for e in &report.errors {
                        tracing::warn!("{e}");
                    }
                    if let Some(first) = report.sync_failures.first() {
                        tracing::warn!(
                            "{} mailboxes could not be synced (first: {first})",
                            report.sync_failures.len()
                        );
                    }
                    tracing::info!("{} ({:.2}s)", report.summary(), started.elapsed().as_secs_f64());
                    if args.once {
                        resign();
                        let failed = report.jobs.iter().any(|j| j.failed > 0);
                        // Mailboxes in ungranted domains are not sync failures (the sync
                        // reports them apart); anything else the sync could not read is.
                        return if report.errors.is_empty()
                            && report.sync_failures.is_empty()
                            && !failed
                        {
                            exit::OK
                        } else {
                            exit::PARTIAL
                        };
                    }
                }
                Some(Err(e)) => {
                    tracing::error!("watch: cycle failed: {e}");
                    if args.once {
                        resign();
                        return fail(e);
                    }
                }
            }
            let pause = tokio::time::sleep(wait);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    _ = renew.tick() => renew_lead(&engine, &lease, &mut leading),
                    _ = &mut stop => {
                        resign();
                        tracing::info!("watch: stopped by signal");
                        return exit::OK;
                    }
                }
            }
        }
    })
}

/// Renews the lead (a follower takes it once the leader's lease lapsed, and leads from its
/// next cycle). A leader that finds another watcher leading says so (this process stalled past
/// its lease): the cycle's running jobs finish — their copy claims keep every copy acted on
/// once — and the next cycle follows.
/// `leading`: whether the last renewal led (updated here).
fn renew_lead(engine: &Engine, lease: &WatchLease, leading: &mut bool) {
    match lease.try_lead(&mut engine.store()) {
        Ok(WatchLead::Leading(_)) => *leading = true,
        Ok(WatchLead::Following(leader)) => {
            if std::mem::replace(leading, false) {
                tracing::warn!("watch: the lead passed to {leader}")
            }
        }
        Err(e) => tracing::warn!("watch: could not renew the lead: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("soon").is_err());
        // Too long for a u64 of seconds: an error, not an overflow.
        assert_eq!(
            parse_duration("99999999999999999999d"),
            Err("\"99999999999999999999d\" is too long a duration".to_string())
        );
        assert!(parse_duration("999999999999999999d").is_err());
        assert_eq!(format_duration(900), "15m");
        assert_eq!(format_duration(604_800), "7d");
    }

    #[test]
    fn policy_round_trip_and_errors() {
        let mut p = PolicyMatrix::initial();
        p.actions
            .insert(Disposition::Malicious, RetractAction::SoftDelete);
        p.post_delivery.enabled = true;
        let text = export_text(&p);
        let back = import_text(&text, Path::new("p.toml"), &PolicyMatrix::initial());
        assert_eq!(back, Ok(p.clone()));
        let bad = "[actions]\nmalicious = \"junk\"\nspam = \"explode\"\n";
        let e = import_text(bad, Path::new("p.toml"), &p)
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("p.toml:3:"), "{e}");
        let bad = "[post_delivery]\nenabled = true\ninterval = \"soon\"\n";
        let e = import_text(bad, Path::new("p.toml"), &p)
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("p.toml:3: post_delivery.interval"), "{e}");
        let bad = "[phish_submission]\nenabled = true\nlookback = \"99999999999d\"\n";
        let e = import_text(bad, Path::new("p.toml"), &p)
            .err()
            .unwrap_or_default();
        assert_eq!(
            e,
            "p.toml:3: phish_submission.lookback: 99999999999d is out of range: more than 0 and at most 90d (90 days)"
        );
        // Dotted keys and inline tables: the line that sets it.
        let bad = "post_delivery.enabled = true\npost_delivery.interval = \"2d\"\n";
        let e = import_text(bad, Path::new("p.toml"), &p)
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("p.toml:2: post_delivery.interval: 2d"), "{e}");
        let bad = "post_delivery = { enabled = true, interval = \"2d\" }\n";
        let e = import_text(bad, Path::new("p.toml"), &p)
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("p.toml:1: post_delivery.interval: 2d"), "{e}");
        let bad = "[actions]\nmalicious = \"junk\"\n[typo]\n";
        assert!(import_text(bad, Path::new("p.toml"), &p).is_err());
    }
}
