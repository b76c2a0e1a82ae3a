//! `clawback` (the console on the configured tenants) and `clawback demo` (the lab in-process,
//! its trace synced, the console on it). The TUI owns the screen: logs go to a file in the
//! data directory.

use crate::cli::exit;
use crate::cli::out::{errln, outln};
use crate::config::{self, Config};
use crate::engine::{Engine, automation, service};
use crate::lab::demo::{DEMO_INTEL_FILE, intel_indicators};
use crate::lab::{LabOptions, LabServer};
use crate::store::Store;
use crate::tui::TuiOptions;
use clap::Args;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Args, Default)]
pub struct ConsoleArgs {
    /// Theme: default, high-contrast, midnight, or a path to a theme TOML.
    #[arg(long, global = true)]
    pub theme: Option<String>,
    /// Start with mouse capture on (toggle in the console).
    #[arg(long, global = true)]
    pub mouse: bool,
}

/// How often the demo's in-process watcher runs a cycle: new mail with a disposition is
/// retracted per the policy within a few seconds.
pub const DEMO_WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Demo scenario seed (the same default as `clawback lab serve --scenario demo`).
    #[arg(long, default_value_t = crate::lab::demo::DEMO_SEED)]
    pub seed: u64,
    /// Lab latency per request, milliseconds (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Set up the lab and the trace, print where, and exit without opening the console.
    #[arg(long)]
    pub no_tui: bool,
}

/// Logs to `<data_dir>/clawback.log` (never to the screen the TUI owns). `CLAWBACK_LOG` sets the
/// filter (default `info`).
fn init_file_log(data_dir: &Path) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    std::fs::create_dir_all(data_dir).ok()?;
    let appender = tracing_appender::rolling::never(data_dir, "clawback.log");
    let (writer, guard) = tracing_appender::non_blocking(appender);
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAWBACK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .try_init()
        .ok()?;
    Some(guard)
}

/// The console draws on a terminal and reads keys from it: without one (a pipe, cron, CI) say
/// so and where to go instead, rather than a bare `No such device or address (os error 6)`.
fn need_terminal(command: &str) -> Result<(), u8> {
    use std::io::IsTerminal;
    let (stdin, stdout) = (
        std::io::stdin().is_terminal(),
        std::io::stdout().is_terminal(),
    );
    if stdin && stdout {
        return Ok(());
    }
    let which = match (stdin, stdout) {
        (false, false) => "neither stdin nor stdout is",
        (false, true) => "stdin is not",
        _ => "stdout is not",
    };
    errln!(
        "{command}: the console needs a terminal, and {which} one. Run it in a terminal (over SSH: ssh -t), or use the command line: clawback search, clawback retract, clawback --help{}",
        if command == "clawback demo" {
            "; clawback demo --no-tui starts the demo lab without the console"
        } else {
            ""
        }
    );
    Err(exit::USAGE)
}

fn tui_options(args: &ConsoleArgs) -> TuiOptions {
    TuiOptions {
        theme: args.theme.clone(),
        mouse: args.mouse.then_some(true),
        ..Default::default()
    }
}

async fn run_console(config: &Config, store: Store, options: TuiOptions) -> u8 {
    // Validate keymap and theme before the terminal is taken over.
    if let Err(e) = crate::tui::prepare(config, &options) {
        errln!("clawback: {e}");
        return exit::USAGE;
    }
    if let Err(code) = need_terminal("clawback") {
        return code;
    }
    let engine = match Engine::new(config.clone(), store) {
        Ok(e) => Arc::new(e),
        Err(e) => {
            errln!("clawback: {e}");
            return exit::USAGE;
        }
    };
    // Interrupted jobs are offered for resume by the console itself (it asks the engine at
    // start), so they can be resumed there rather than only with `clawback jobs resume`.
    let handle = service::spawn(engine);
    match crate::tui::run(config, handle, options).await {
        Ok(()) => exit::OK,
        Err(e) => {
            errln!("clawback: {e}");
            exit::FAILURE
        }
    }
}

/// `clawback` with no subcommand.
pub fn console(args: ConsoleArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let Some(path) = config::locate(config_path) else {
        outln!(
            "clawback: no configuration yet.\n\n  Try it on the built-in lab tenant:   cargo run --release -- demo   (or: clawback demo)\n  Connect your own tenants:            clawback init   then   clawback doctor\n"
        );
        return exit::USAGE;
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            errln!("clawback: {e}");
            return exit::USAGE;
        }
    };
    for w in config.warnings() {
        errln!("clawback: {w}");
    }
    let dir = config::data_dir(data_dir, Some(&config));
    let _log = init_file_log(&dir);
    let store = match Store::open_configured(Some(&config), &dir) {
        Ok(s) => s,
        Err(e) => {
            errln!("clawback: {e}");
            return exit::FAILURE;
        }
    };
    let rt = match super::runtime("clawback") {
        Ok(r) => r,
        Err(code) => return code,
    };
    rt.block_on(run_console(&config, store, tui_options(&args)))
}

/// `clawback demo`.
pub fn demo(args: DemoArgs, console: ConsoleArgs, data_dir: Option<&Path>) -> u8 {
    if !args.no_tui
        && let Err(code) = need_terminal("clawback demo")
    {
        return code;
    }
    let temp;
    let dir: PathBuf = match data_dir {
        Some(d) => d.to_path_buf(),
        None => match tempfile_dir() {
            Ok(d) => {
                temp = d;
                temp.path().to_path_buf()
            }
            Err(e) => {
                errln!("clawback demo: cannot create a temporary directory: {e}");
                return exit::FAILURE;
            }
        },
    };
    let _log = init_file_log(&dir);
    let rt = match super::runtime("clawback") {
        Ok(r) => r,
        Err(code) => return code,
    };
    rt.block_on(async {
        let latency = std::time::Duration::from_millis(args.latency_ms);
        let (server, config) = match start_demo_lab(&dir, args.seed, latency).await {
            Ok(x) => x,
            Err(e) => {
                errln!("clawback demo: {e}");
                return exit::FAILURE;
            }
        };
        let config_path = dir.join("lab.toml");
        let mut store = match Store::open_in_dir(&dir) {
            Ok(s) => s,
            Err(e) => {
                errln!("clawback demo: {e}");
                return exit::FAILURE;
            }
        };
        if args.no_tui {
            if let Err(e) = sync_trace(&config, &mut store).await {
                errln!("clawback demo: trace sync: {e}");
                return exit::FAILURE;
            }
            outln!(
                "lab at {} ; config {} ; data {}",
                server.base_url(),
                config_path.display(),
                dir.display()
            );
            return exit::OK;
        }
        // The first frame comes before any network I/O: the trace sync against the lab runs on
        // the engine task, and the console's first search waits for it there.
        let options = tui_options(&console);
        if let Err(e) = crate::tui::prepare(&config, &options) {
            errln!("clawback: {e}");
            return exit::USAGE;
        }
        let handle = service::spawn_after(demo_engine(config.clone(), store));
        let code = match crate::tui::run(&config, handle, options).await {
            Ok(()) => exit::OK,
            Err(e) => {
                errln!("clawback: {e}");
                exit::FAILURE
            }
        };
        server.stop().await;
        code
    })
}

/// The demo's lab — the built-in scenario with `seed`, on a free loopback port — and its
/// config, written to `<dir>/lab.toml` (secrets beside it) with the phish-report mailboxes and a
/// header that gives the exact `clawback lab serve …` serving the same lab again.
pub async fn start_demo_lab(
    dir: &Path,
    seed: u64,
    latency: std::time::Duration,
) -> Result<(LabServer, Config), String> {
    let scenario = crate::lab::demo::build_on_clock(seed)?;
    let options = LabOptions {
        latency,
        ..LabOptions::default()
    };
    let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = LabServer::start(&scenario, options, addr)
        .await
        .map_err(|e| format!("cannot start the lab: {e}"))?;
    let config_path = dir.join("lab.toml");
    // Kept with `--data-dir`: it says how to serve this lab again after the demo ends.
    let restart = server.serve_command("demo", seed);
    server
        .write_config_restartable(&config_path, "`clawback demo`", &restart)
        .map_err(|e| e.to_string())?;
    // Threat intel for Post Delivery Response, named in the config as `watch` reads it.
    let intel = dir.join(DEMO_INTEL_DIR);
    std::fs::create_dir_all(&intel)
        .and_then(|_| std::fs::write(intel.join(DEMO_INTEL_FILE), intel_indicators()))
        .map_err(|e| format!("{}: cannot write the demo's intel: {e}", intel.display()))?;
    set_intel_dir(&config_path, DEMO_INTEL_DIR)?;
    let mut config = Config::load(&config_path).map_err(|e| e.to_string())?;
    config.source = Some(config_path);
    Ok((server, config))
}

/// The demo's intel directory, beside its config.
const DEMO_INTEL_DIR: &str = "intel";

/// Sets `[automation] intel_dir` in the config file at `path`, keeping the rest as written.
fn set_intel_dir(path: &Path, intel_dir: &str) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| err(&e))?;
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e| err(&e))?;
    let automation = doc
        .entry("automation")
        .or_insert_with(toml_edit::table)
        .as_table_mut()
        .ok_or_else(|| err(&"[automation] is not a table"))?;
    automation.insert("intel_dir", toml_edit::value(intel_dir));
    crate::secret::write_private_file(path, doc.to_string().as_bytes()).map_err(|e| err(&e))
}

/// The demo's engine, built on the engine task: the trace synced from the lab, then `watch`
/// running in-process (a cycle every [`DEMO_WATCH_EVERY`]) so the Policy pane's matrix and
/// both responses act. The policy starts all off: nothing is retracted until the operator sets
/// a cell or a response and saves.
pub async fn demo_engine(config: Config, mut store: Store) -> Result<Arc<Engine>, String> {
    sync_trace(&config, &mut store)
        .await
        .map_err(|e| format!("demo trace sync: {e}"))?;
    let engine = Engine::new(config, store)
        .map(Arc::new)
        .map_err(|e| e.to_string())?;
    tokio::spawn(automation::watch_in_process(
        engine.clone(),
        DEMO_WATCH_EVERY,
    ));
    Ok(engine)
}

fn tempfile_dir() -> std::io::Result<tempfile_like::TempDir> {
    tempfile_like::TempDir::new()
}

/// Fills the trace from the providers (every mailbox's recent mail).
async fn sync_trace(config: &Config, store: &mut Store) -> Result<(), String> {
    let clients = config
        .tenants
        .iter()
        .map(|t| crate::provider::ProviderClient::new(config, t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut options = crate::trace::sync::SyncOptions::from_config(Some(config));
    // The demo's mail is dated relative to its seed, not to today: take all of it.
    options.since = chrono::Utc::now() - chrono::Duration::days(3650);
    let report = crate::trace::sync::sync(store, &clients, &options, |_| {})
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(?report, "demo trace synced");
    Ok(())
}

/// A temporary directory removed on drop (tempfile is a dev-dependency only).
mod tempfile_like {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> std::io::Result<TempDir> {
            let dir = std::env::temp_dir().join(format!("clawback-demo-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir)?;
            Ok(TempDir(dir))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
