//! `clawback search QUERY`: search the mail trace (language in `trace::query`).

use crate::cli::exit;
use crate::cli::out::{errln, out, outln};
use crate::cli::trace::open_store;
use crate::trace::query;
use crate::trace::search::{
    group_campaigns, record_json, render_campaigns, render_csv, render_table,
};
use clap::Args;
use std::path::Path;

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The query, e.g. 'from:@evil.example subject:"wire now" since:7d -disposition:none'.
    /// Quote it as one argument; an empty query lists everything.
    #[arg(allow_hyphen_values = true)]
    pub query: String,
    /// Print JSON (an array of records, or of campaigns with --group).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV with a header row.
    #[arg(long)]
    pub csv: bool,
    /// Most results to show.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Skip this many results first.
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
    /// Group results into campaigns (same sender + normalized subject).
    #[arg(long, conflicts_with = "csv")]
    pub group: bool,
}

/// The error with the query and a caret under the column.
pub fn render_query_error(input: &str, e: &query::QueryError) -> String {
    let pad: String = input
        .chars()
        .take(e.column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!("error: {e}\n  {input}\n  {pad}^")
}

pub fn run(args: SearchArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let q = match query::parse(&args.query) {
        Ok(q) => q,
        Err(e) => {
            errln!("{}", render_query_error(&args.query, &e));
            return exit::USAGE;
        }
    };
    let (_, store) = match open_store(config_path, data_dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let records = match store.search(&q, args.limit, args.offset) {
        Ok(r) => r,
        Err(e) => {
            errln!("clawback: search: {e}");
            return exit::FAILURE;
        }
    };
    if args.group {
        let campaigns = group_campaigns(&records);
        if args.json {
            match serde_json::to_string_pretty(&campaigns) {
                Ok(s) => {
                    outln!("{s}");
                }
                Err(e) => {
                    errln!("clawback: search: {e}");
                    return exit::FAILURE;
                }
            }
        } else {
            out!("{}", render_campaigns(&campaigns));
        }
    } else if args.json {
        let v: Vec<serde_json::Value> = records.iter().map(record_json).collect();
        match serde_json::to_string_pretty(&v) {
            Ok(s) => {
                outln!("{s}");
            }
            Err(e) => {
                errln!("clawback: search: {e}");
                return exit::FAILURE;
            }
        }
    } else if args.csv {
        out!("{}", render_csv(&records));
    } else {
        out!("{}", render_table(&records));
        if records.is_empty() {
            errln!("no matching messages");
        } else if records.len() == args.limit {
            match store.count(&q) {
                Ok(total) => errln!(
                    "showing {}–{} of {total}; use --limit/--offset for more",
                    args.offset + 1,
                    args.offset + records.len()
                ),
                Err(e) => errln!("clawback: search: count: {e}"),
            }
        }
    }
    exit::OK
}
