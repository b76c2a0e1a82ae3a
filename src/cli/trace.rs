//! `clawback trace …`: fill the mail trace.

use crate::cli::exit;
use crate::config::{self, Config};
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
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("clawback: {e}");
                return Err(exit::USAGE);
            }
        },
        None => None,
    };
    let dir = config::data_dir(data_dir, config.as_ref());
    match Store::open_in_dir(&dir) {
        Ok(s) => Ok((config, s)),
        Err(e) => {
            eprintln!("clawback: {e}");
            Err(exit::FAILURE)
        }
    }
}

pub fn run(args: TraceArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    match args.command {
        TraceCommand::Ingest(a) => ingest(a, config_path, data_dir),
    }
}

fn ingest(args: IngestArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let (config, mut store) = match open_store(config_path, data_dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let opts = IngestOptions::from_config(config.as_ref());
    let mut shown = false;
    let mut progress = |p: Progress| {
        // Only long ingests get a progress line; short ones just print the summary.
        if p.elapsed.as_secs_f64() >= 1.0 {
            shown = true;
            eprintln!(
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
                eprintln!("rejected {at}: {reason}");
            }
            if report.rejected_total() as usize > report.rejections.len() {
                eprintln!(
                    "… and {} more rejections",
                    report.rejected_total() as usize - report.rejections.len()
                );
            }
            println!("{}", report.summary());
            exit::OK
        }
        Err(e) => {
            eprintln!("clawback: trace ingest: {e}");
            exit::FAILURE
        }
    }
}
