//! `clawback store`: the store itself (issue 17). `store copy` moves an embedded SQLite store
//! into a shared PostgreSQL store.

use super::exit;
use super::out::{errln, outln};
use crate::store::pg::{PgLocator, copy::copy_sqlite_to_postgres};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy a SQLite store (trace, plans, jobs, audit with its chain intact, policy, automation
    /// state) into a new, empty PostgreSQL store, in one transaction, then check row counts and
    /// the audit head. The database password comes from --password-file (mode 0600) or
    /// PGPASSWORD, never from the command line.
    Copy(CopyArgs),
}

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// The SQLite store: `sqlite:PATH` or a path (a data directory or its clawback.sqlite3).
    #[arg(long, value_name = "sqlite:PATH")]
    pub from: String,
    /// The PostgreSQL store: `postgres://USER@HOST:PORT/DATABASE` (or libpq key=value form).
    #[arg(long, value_name = "postgres://…")]
    pub to: String,
    /// A private (0600) file holding the database password.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

pub fn run(args: StoreArgs) -> u8 {
    match args.command {
        StoreCommand::Copy(a) => copy(a),
    }
}

fn source_path(from: &str) -> PathBuf {
    let p = Path::new(from.strip_prefix("sqlite:").unwrap_or(from));
    if p.is_dir() {
        crate::store::Store::path_in(p)
    } else {
        p.to_path_buf()
    }
}

fn copy(args: CopyArgs) -> u8 {
    if PgLocator::has_password(&args.to) {
        errln!(
            "clawback store copy: --to carries a password, which would stay in shell history and the process list; use --password-file FILE (0600) or PGPASSWORD"
        );
        return exit::USAGE;
    }
    let password = match &args.password_file {
        Some(p) => match crate::secret::read_secret_file(p) {
            Ok(s) => Some(s.expose().trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => {
                errln!("clawback store copy: --password-file: {e}");
                return exit::USAGE;
            }
        },
        None => std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()),
    };
    let to = match PgLocator::parse(&args.to, password.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            errln!("clawback store copy: --to: {e}");
            return exit::USAGE;
        }
    };
    let from = source_path(&args.from);
    match copy_sqlite_to_postgres(&from, &to) {
        Ok(report) => {
            outln!("copied {} into {to}", from.display());
            for (t, n) in &report.tables {
                outln!("  {t:<28} {n:>10} rows");
            }
            if !report.sqlite_only.is_empty() {
                outln!(
                    "  not copied (SQLite's own, rebuilt by PostgreSQL): {}",
                    report.sqlite_only.join(", ")
                );
            }
            match &report.audit_head {
                Some(h) => outln!(
                    "audit head {h} — the same in both stores; chain verified ({} entries)",
                    report.audit_entries
                ),
                None => outln!("audit log empty in both stores"),
            };
            exit::OK
        }
        Err(e) => {
            errln!("clawback store copy: {e}");
            exit::FAILURE
        }
    }
}
