//! `clawback lab …`: run the emulator, generate scenarios.

use crate::cli::exit;
use crate::cli::out::{errln, outln};
use crate::lab::generate::{GenerateKind, GenerateOptions, generate, generate_at};
use crate::lab::scenario::Scenario;
use crate::lab::{LabOptions, LabServer, RetryAdvice};
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Serve the lab on a loopback address until interrupted.
    Serve(ServeArgs),
    /// Write a scenario file: a generated one with N mailboxes, or the built-in demo.
    Scenario(ScenarioArgs),
}

#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// Mailboxes in total (N).
    #[arg(long, default_value_t = 10_000)]
    pub mailboxes: usize,
    /// Mailboxes that hold the campaign (M ≤ N).
    #[arg(long, default_value_t = 1_000)]
    pub campaign_recipients: usize,
    /// Seed: the same seed (and anchor) gives the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Date the mail before this instant (RFC 3339, e.g. 2026-03-01T09:00:00Z); the campaign
    /// is one hour older. Default: the start of the current UTC hour, so `trace sync` with its
    /// default look-back finds everything (with --demo: $CLAWBACK_DEMO_CLOCK when set).
    #[arg(long)]
    pub anchor: Option<chrono::DateTime<chrono::Utc>>,
    /// Which tenants: microsoft365, google_workspace, or mixed (2/3 Microsoft, 1/3 Google).
    #[arg(long, value_enum, default_value = "mixed")]
    pub kind: GenerateKind,
    /// Background messages besides the campaign.
    #[arg(long, default_value_t = 20)]
    pub background_messages: usize,
    /// Write the built-in demo scenario instead (the other sizing options are ignored).
    #[arg(long)]
    pub demo: bool,
    /// Output file: `.toml` is TOML, anything else JSON; `-` or absent writes JSON to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Loopback address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// `demo` or a scenario file (.json or .toml). The demo is dated before the start of the
    /// current UTC hour, or before $CLAWBACK_DEMO_CLOCK (RFC 3339) when set.
    #[arg(long, default_value = "demo")]
    pub scenario: String,
    /// Seed of the demo scenario (the same default as `clawback demo`), and of jitter and
    /// fault injection.
    #[arg(long, default_value_t = crate::lab::demo::DEMO_SEED)]
    pub seed: u64,
    /// Service time of every (sub-)request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra random service time, 0..=N milliseconds.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Concurrent service slots per tenant (S).
    #[arg(long, default_value_t = 256)]
    pub capacity: usize,
    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, default_value_t = 3599)]
    pub token_ttl: u64,
    /// Probability (0..1) that a provider request fails with 5xx or a dropped connection.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// How 429s say when to retry: whole seconds like the real services, or the lab's own
    /// sub-second pace (for experiments; no real service answers like that).
    #[arg(long, value_enum, default_value = "whole-seconds")]
    pub retry_after: RetryAdvice,
    /// Write a clawback config pointing at this lab (secrets beside it, mode 0600; the client
    /// limits fit --capacity).
    #[arg(long)]
    pub write_config: Option<PathBuf>,
}

pub fn run(args: LabArgs) -> u8 {
    match args.command {
        LabCommand::Serve(a) => serve(a),
        LabCommand::Scenario(a) => write_scenario(a),
    }
}

/// Resolves `demo` or a path into a scenario.
pub fn load_scenario(name: &str, seed: u64) -> Result<Scenario, String> {
    match name {
        "demo" => crate::lab::demo::build_on_clock(seed),
        path => Scenario::load(std::path::Path::new(path)).map_err(|e| e.to_string()),
    }
}

fn serve(a: ServeArgs) -> u8 {
    if !(0.0..=1.0).contains(&a.fault_rate) {
        errln!(
            "clawback lab serve: --fault-rate {} must be between 0 and 1",
            a.fault_rate
        );
        return exit::USAGE;
    }
    let started = Instant::now();
    let scenario = match load_scenario(&a.scenario, a.seed) {
        Ok(s) => s,
        Err(e) => {
            errln!("clawback lab serve: {e}");
            return exit::USAGE;
        }
    };
    let options = LabOptions {
        latency: Duration::from_millis(a.latency_ms),
        jitter: Duration::from_millis(a.jitter_ms),
        capacity: a.capacity.max(1),
        token_ttl: Duration::from_secs(a.token_ttl.max(1)),
        fault_rate: a.fault_rate,
        seed: a.seed,
        retry_advice: a.retry_after,
        ..Default::default()
    };
    let runtime = match super::runtime("clawback lab serve") {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let server = match LabServer::start(&scenario, options, a.addr).await {
            Ok(s) => s,
            Err(e) => {
                errln!("clawback lab serve: {e}");
                return exit::USAGE;
            }
        };
        if let Some(path) = &a.write_config {
            let restart = server.serve_command(&a.scenario, a.seed);
            let written = server.write_config_restartable(
                path,
                "`clawback lab serve --write-config`",
                &restart,
            );
            if let Err(e) = written {
                errln!("clawback lab serve: {e}");
                return exit::FAILURE;
            }
            outln!("wrote config {}", path.display());
        }
        outln!(
            "lab listening on {} (scenario {}, ready in {} ms); Ctrl-C to stop",
            server.base_url(),
            scenario.name,
            started.elapsed().as_millis()
        );
        let _ = tokio::signal::ctrl_c().await;
        server.stop().await;
        exit::OK
    })
}

fn write_scenario(a: ScenarioArgs) -> u8 {
    let scenario = if a.demo {
        match a.anchor {
            Some(at) => crate::lab::demo::build_at(a.seed, at),
            None => match crate::lab::demo::build_on_clock(a.seed) {
                Ok(s) => s,
                Err(e) => {
                    errln!("clawback lab scenario: {e}");
                    return exit::USAGE;
                }
            },
        }
    } else {
        let opts = GenerateOptions {
            mailboxes: a.mailboxes,
            campaign_recipients: a.campaign_recipients,
            seed: a.seed,
            kind: a.kind,
            background_messages: a.background_messages,
        };
        match a
            .anchor
            .map_or_else(|| generate(&opts), |at| generate_at(&opts, at))
        {
            Ok(s) => s,
            Err(e) => {
                errln!("clawback lab scenario: {e}");
                return exit::USAGE;
            }
        }
    };
    let out = a.out.filter(|p| p.as_os_str() != "-");
    let is_toml = out.as_ref().is_some_and(|p| {
        p.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
    });
    let text = if is_toml {
        toml::to_string(&scenario).map_err(|e| e.to_string())
    } else {
        serde_json::to_string_pretty(&scenario).map_err(|e| e.to_string())
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            errln!("clawback lab scenario: cannot serialize the scenario: {e}");
            return exit::FAILURE;
        }
    };
    match out {
        None => {
            outln!("{text}");
            exit::OK
        }
        Some(path) => match std::fs::write(&path, text) {
            Ok(()) => {
                let mailboxes: usize = scenario.tenants.iter().map(|t| t.users.len()).sum();
                errln!(
                    "wrote {} ({} tenants, {mailboxes} users)",
                    path.display(),
                    scenario.tenants.len()
                );
                exit::OK
            }
            Err(e) => {
                errln!(
                    "clawback lab scenario: {}: cannot write: {e}",
                    path.display()
                );
                exit::USAGE
            }
        },
    }
}
