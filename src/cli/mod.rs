//! Command-line front end (clap). Each subcommand parses its arguments here and calls into the
//! library; exit codes follow DESIGN §8: 0 ok, 1 runtime failure, 2 usage/config error, 3 partial.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod automation;
pub mod console;
mod doctor;
mod init;
mod lab;
mod out;
mod report;
mod retract;
mod search;
mod store;
mod trace;
mod worker;

/// Exit codes (DESIGN §8).
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const PARTIAL: u8 = 3;
    /// `doctor`: a provider endpoint could not be reached (refused, unresolved, TLS, timed
    /// out), so the permissions could not be checked.
    pub const UNREACHABLE: u8 = 4;
}

#[derive(Debug, Parser)]
#[command(
    name = "clawback",
    version,
    about = "Post-delivery email retraction for Microsoft 365 and Google Workspace"
)]
pub struct Cli {
    /// Config file (default: $CLAWBACK_CONFIG, then the platform config dir).
    #[arg(long, global = true, env = "CLAWBACK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory for the store and logs.
    #[arg(long, global = true, env = "CLAWBACK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub console: console::ConsoleArgs,
    #[command(subcommand)]
    pub command: Option<CliCommand>,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// The console on the built-in lab tenant: lab in-process, trace synced, nothing to configure.
    Demo(console::DemoArgs),
    /// The local Microsoft Graph + Gmail + OAuth emulator.
    Lab(lab::LabArgs),
    /// Check each tenant: token, permissions, Retract per domain; exit 3 if anything is missing.
    Doctor,
    /// Write a fully commented config template.
    Init(init::InitArgs),
    /// Fill the mail trace (ingest EML, Maildir, mbox, journal reports, verdict feeds; sync from
    /// the providers).
    Trace(trace::TraceArgs),
    /// Search the mail trace.
    Search(search::SearchArgs),
    /// Plan, confirm and apply a retraction (exit 3 when some items failed).
    Retract(retract::RetractArgs),
    /// Build a plan without acting and write it (versioned JSON with a digest).
    Plan(retract::PlanArgs),
    /// Apply a saved plan (refused if its digest does not match).
    Apply(retract::ApplyArgs),
    /// Jobs: list, show, resume after a crash, cancel, retry failures by reason.
    Jobs(retract::JobsArgs),
    /// Undo a retract job: put every retracted copy back where it was.
    Restore(retract::RestoreArgs),
    /// Retraction metrics over a window.
    Metrics(report::MetricsArgs),
    /// The tamper-evident audit log: list, verify, export.
    Audit(report::AuditArgs),
    /// The auto-retract policy: show, set DISPOSITION ACTION, export, import (TOML).
    Policy(automation::PolicyArgs),
    /// Automation: follow new mail, Post Delivery and Phish Submission Response, auto-retract.
    Watch(automation::WatchArgs),
    /// The store itself: copy an embedded SQLite store into a shared PostgreSQL store.
    Store(store::StoreArgs),
    /// Team scale: work on jobs queued with `retract --queue` / `apply --queue`, with other workers.
    ///
    /// Any number of workers share the queued jobs of one store (several hosts on PostgreSQL, or
    /// several processes on one SQLite data directory). Each takes batches of pending items; a worker that dies has
    /// its items taken over once its heartbeat lapses (`[jobs] lease_stale_secs`), what it had in
    /// flight settled by locating the copy, so every copy is acted on once. Ctrl-C / SIGTERM
    /// finish the batch in flight and give the rest back.
    Worker(worker::WorkerArgs),
}

/// The tokio runtime every command that talks to a provider, the store's engine or the lab runs
/// on (one builder for all of them); when it cannot start, says so on stderr (prefixed with
/// `who`) and gives the exit code.
fn runtime(who: &str) -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            out::errln!("{who}: cannot start the async runtime: {e}");
            exit::FAILURE
        })
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    // Everything clawback writes (store, WAL, logs, plans, exports, head file) is private:
    // created 0600, directories 0700 (DESIGN §5).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let code = match cli.command {
        Some(CliCommand::Lab(args)) => lab::run(args),
        Some(CliCommand::Doctor) => doctor::run(cli.config.as_deref()),
        Some(CliCommand::Init(args)) => init::run(args),
        Some(CliCommand::Trace(args)) => {
            trace::run(args, cli.config.as_deref(), cli.data_dir.as_deref())
        }
        Some(CliCommand::Search(args)) => {
            search::run(args, cli.config.as_deref(), cli.data_dir.as_deref())
        }
        Some(CliCommand::Retract(args)) => {
            retract::retract(args, cli.config.as_deref(), cli.data_dir.as_deref())
        }
        Some(CliCommand::Plan(args)) => {
            retract::plan(args, cli.config.as_deref(), cli.data_dir.as_deref())
        }
        Some(CliCommand::Apply(args)) => {
            retract::apply(args, cli.config.as_deref(), cli.data_dir.as_deref())
        }
        Some(CliCommand::Jobs(args)) => {
            retract::jobs(args, cli.config.as_deref(), cli.data_dir.as_deref())
        }
        Some(CliCommand::Restore(args)) => {
            retract::restore(args, cli.config.as_deref(), cli.data_dir.as_deref())
        }
        Some(CliCommand::Metrics(args)) => {
            report::metrics(args, cli.config.as_deref(), cli.data_dir.as_deref())
        }
        Some(CliCommand::Audit(args)) => {
            report::audit(args, cli.config.as_deref(), cli.data_dir.as_deref())
        }
        Some(CliCommand::Policy(args)) => {
            automation::policy(args, cli.config.as_deref(), cli.data_dir.as_deref())
        }
        Some(CliCommand::Watch(args)) => {
            automation::watch(args, cli.config.as_deref(), cli.data_dir.as_deref())
        }
        Some(CliCommand::Store(args)) => store::run(args),
        Some(CliCommand::Worker(args)) => {
            worker::run(args, cli.config.as_deref(), cli.data_dir.as_deref())
        }
        Some(CliCommand::Demo(args)) => console::demo(args, cli.console, cli.data_dir.as_deref()),
        None => console::console(cli.console, cli.config.as_deref(), cli.data_dir.as_deref()),
    };
    ExitCode::from(out::finish(code))
}
