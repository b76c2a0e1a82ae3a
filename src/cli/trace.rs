//! `clawback trace …`: fill the mail trace.

use crate::cli::exit;
use crate::cli::out::{err, errln, outln};
use crate::config::{self, Config};
use crate::engine::Operator;
use crate::engine::roles::Capability;
use crate::store::Store;
use crate::trace::ingest::{IngestOptions, Progress, ingest_paths};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    pub command: TraceCommand,
}

#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Index .eml files, directories (recursive; Maildir cur/new), mbox files, Microsoft journal
    /// reports and JSON Lines verdict feeds (*.jsonl, *.ndjson).
    Ingest(IngestArgs),
    /// Index the recent mail of every mailbox through the provider APIs (resumable: each
    /// mailbox continues from the newest message synced before). Mailboxes in domains the
    /// provider confirms are not granted are reported and skipped; exit 3 when others failed.
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Only this tenant (repeatable; default: every configured tenant).
    #[arg(long = "tenant", value_name = "T")]
    pub tenants: Vec<String>,
    /// How far back to look: an age (24h, 7d, 2w) or a date (2026-03-01). Mailboxes synced
    /// before continue from their cursor when it is newer.
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// Ignore the stored cursors and list everything since --since again.
    #[arg(long)]
    pub full: bool,
    /// Mailboxes listed at the same time.
    #[arg(long, default_value_t = crate::trace::sync::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Loads the config (if one is found) and opens the store in the data directory.
pub(crate) fn open_store(
    config_path: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<(Option<Config>, Store), u8> {
    let config = match config::locate(config_path) {
        Some(p) => match Config::load(&p) {
            Ok(c) => {
                for w in c.warnings() {
                    errln!("clawback: {w}");
                }
                Some(c)
            }
            Err(e) => {
                errln!("clawback: {e}");
                return Err(exit::USAGE);
            }
        },
        None => None,
    };
    let dir = config::data_dir(data_dir, config.as_ref());
    match Store::open_configured(config.as_ref(), &dir) {
        Ok(mut s) => {
            s.set_head_file(config.as_ref().and_then(|c| c.audit.head_file.clone()));
            Ok((config, s))
        }
        Err(e) => {
            errln!("clawback: {e}");
            Err(exit::FAILURE)
        }
    }
}

/// Filling the trace needs the responder role (verdict feeds and synced mail decide what the
/// automation acts on); a refusal is audited.
fn authorize_update(config: Option<&Config>, store: &mut Store) -> Result<(), u8> {
    let default = Config::default();
    let operator = Operator::from_config(config.unwrap_or(&default));
    operator
        .authorize(store, Capability::UpdateTrace)
        .map_err(|e| {
            errln!("clawback: {e}");
            exit::USAGE
        })
}

pub fn run(args: TraceArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    match args.command {
        TraceCommand::Ingest(a) => ingest(a, config_path, data_dir),
        TraceCommand::Sync(a) => sync(a, config_path, data_dir),
    }
}

fn sync(args: SyncArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    use crate::provider::ProviderClient;
    use crate::trace::sync::{SyncError, SyncOptions, SyncPhase, parse_since, sync};
    use std::io::IsTerminal;

    let since = match parse_since(&args.since, chrono::Utc::now()) {
        Ok(s) => s,
        Err(e) => {
            errln!("clawback: trace sync: {e}");
            return exit::USAGE;
        }
    };
    if config::locate(config_path).is_none() {
        errln!("clawback: trace sync: {}", config::ConfigError::Missing);
        return exit::USAGE;
    }
    let (config, mut store) = match open_store(config_path, data_dir) {
        Ok((Some(c), s)) => (c, s),
        Ok((None, _)) => {
            errln!("clawback: trace sync: {}", config::ConfigError::Missing);
            return exit::USAGE;
        }
        Err(code) => return code,
    };
    if let Err(code) = authorize_update(Some(&config), &mut store) {
        return code;
    }
    if config.tenants.is_empty() {
        errln!("clawback: trace sync: no tenants configured");
        return exit::USAGE;
    }
    let mut clients = Vec::new();
    // The tokens a sync fetches serve the retraction that usually follows (`[auth] token_cache`).
    let kept_tokens = store
        .data_dir()
        .filter(|_| config.auth.token_cache)
        .map(|dir| std::sync::Arc::new(crate::provider::token_file::TokenFile::in_dir(dir)));
    for tenant in &config.tenants {
        if !args.tenants.is_empty() && !args.tenants.contains(&tenant.name) {
            continue;
        }
        match ProviderClient::new(&config, tenant) {
            Ok(c) => {
                if let Some(file) = &kept_tokens {
                    c.keep_tokens_in(file.clone());
                }
                clients.push(c)
            }
            Err(e) => {
                errln!("clawback: trace sync: tenant {}: {e}", tenant.name);
                return exit::USAGE;
            }
        }
    }
    let mut options = SyncOptions::from_config(Some(&config));
    options.since = since;
    options.tenants = args.tenants.clone();
    options.full = args.full;
    options.concurrency = args.concurrency.max(1);
    // Unknown tenant names are checked against the whole config (clients were filtered).
    for name in &args.tenants {
        if !config.tenants.iter().any(|t| &t.name == name) {
            let known: Vec<&str> = config.tenants.iter().map(|t| t.name.as_str()).collect();
            errln!(
                "clawback: trace sync: {}",
                SyncError::UnknownTenant {
                    name: name.clone(),
                    known: known.join(", ")
                }
            );
            return exit::USAGE;
        }
    }
    let runtime = match super::runtime("clawback") {
        Ok(r) => r,
        Err(code) => return code,
    };
    let tty = std::io::stderr().is_terminal();
    let mut last = std::time::Instant::now();
    let progress = |p: crate::trace::sync::SyncProgress| {
        let final_ = p.phase == SyncPhase::Done;
        if !final_
            && last.elapsed() < std::time::Duration::from_millis(if tty { 100 } else { 1000 })
        {
            return;
        }
        last = std::time::Instant::now();
        // Copies, as the summary counts them; no mailbox count when only the tenant-wide
        // logs were read (no mailbox is listed then).
        let mailboxes = if p.mailboxes_total == 0 {
            String::new()
        } else {
            format!("mailboxes {}/{}, ", p.mailboxes_done, p.mailboxes_total)
        };
        let line = format!(
            "sync: {mailboxes}{} copies listed, {}/{} fetched, {} indexed",
            p.messages_listed, p.fetched, p.to_fetch, p.indexed
        );
        // A terminal gets one line redrawn in place; a log gets a line a second and always the
        // final counts.
        if tty {
            err!("\r\x1b[2K{line}");
            if final_ {
                errln!();
            }
        } else {
            errln!("{line}");
        }
    };
    let result = runtime.block_on(sync(&mut store, &clients, &options, progress));
    match result {
        Ok(report) => {
            for f in &report.failed {
                errln!("failed {f}");
            }
            for f in &report.skipped {
                errln!("skipped {f}");
            }
            for (tenant, domain) in &report.ungranted_domains {
                let n = report
                    .ungranted
                    .iter()
                    .filter(|f| {
                        &f.tenant == tenant
                            && f.mailbox
                                .as_deref()
                                .and_then(crate::model::address_domain)
                                .as_ref()
                                == Some(domain)
                    })
                    .count();
                errln!(
                    "skipped {tenant}: {n} mailboxes in {domain} (domain not granted; see `clawback doctor`)"
                );
            }
            for f in report.raw_failed.iter().take(20) {
                errln!("metadata only {f}");
            }
            outln!("{}", report.summary());
            if report.complete() {
                exit::OK
            } else {
                exit::PARTIAL
            }
        }
        Err(e @ SyncError::UnknownTenant { .. }) => {
            errln!("clawback: trace sync: {e}");
            exit::USAGE
        }
        Err(e) => {
            errln!("clawback: trace sync: {e}");
            exit::FAILURE
        }
    }
}

fn ingest(args: IngestArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let (config, mut store) = match open_store(config_path, data_dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Err(code) = authorize_update(config.as_ref(), &mut store) {
        return code;
    }
    let opts = IngestOptions::from_config(config.as_ref());
    let mut shown = false;
    let mut progress = |p: Progress| {
        // Only long ingests get a progress line; short ones just print the summary.
        if p.elapsed.as_secs_f64() >= 1.0 {
            shown = true;
            errln!(
                "ingest: {} messages in {:.1}s ({:.0}/s)",
                p.messages,
                p.elapsed.as_secs_f64(),
                p.rate()
            );
        }
    };
    match ingest_paths(&mut store, &args.paths, &opts, &mut progress) {
        Ok(report) => {
            for (at, reason) in &report.rejections {
                errln!("rejected {at}: {reason}");
            }
            if report.rejected_total() as usize > report.rejections.len() {
                errln!(
                    "… and {} more rejections",
                    report.rejected_total() as usize - report.rejections.len()
                );
            }
            outln!("{}", report.summary());
            exit::OK
        }
        Err(e) => {
            errln!("clawback: trace ingest: {e}");
            exit::FAILURE
        }
    }
}
