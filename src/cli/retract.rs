//! `clawback retract | plan | apply | jobs | restore`: thin front ends over the engine.

use crate::cli::exit;
use crate::cli::out::{err, errln, outln};
use crate::cli::trace::open_store;
use crate::config::Config;
use crate::engine::execute::{JobEvent, JobReport, RunOptions};
use crate::engine::plan::{Plan, RetractRequest};
use crate::engine::roles::Capability;
use crate::engine::{Engine, EngineError};
use crate::model::{FailureReason, RetractAction, Trigger};
use crate::store::jobs::{ItemState, JobKind, JobState};
use clap::{Args, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// What to retract: shared by `retract` and `plan`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Internet Message-ID of a message to retract (repeatable).
    #[arg(long = "message-id", value_name = "ID")]
    pub message_id: Vec<String>,
    /// Retract every message a trace query matches (up to 500).
    #[arg(long, value_name = "QUERY", allow_hyphen_values = true)]
    pub query: Option<String>,
    /// no_action, junk, trash, soft_delete (Microsoft only; Trash on Gmail) or hard_delete.
    #[arg(long, default_value = "junk")]
    pub action: RetractAction,
    /// Conversation depth: 0 = the message, n = n levels of replies and forwards.
    #[arg(long, default_value_t = 0)]
    pub depth: u8,
    /// Only messages in these tenants (repeatable or comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    pub tenant: Vec<String>,
    /// Only these recipients at depth 0 (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Leave these recipients out at every depth (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Why: ticket, incident (kept in the plan and the audit log).
    #[arg(long, default_value = "")]
    pub reason: String,
}

impl RequestArgs {
    fn request(&self) -> RetractRequest {
        RetractRequest {
            message_ids: self.message_id.clone(),
            query: self.query.clone(),
            tenants: self.tenant.clone(),
            only: self.only.clone(),
            exclude: self.exclude.clone(),
            depth: self.depth,
            action: self.action,
            trigger: Trigger::Manual,
            reason: self.reason.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct RetractArgs {
    #[command(flatten)]
    pub request: RequestArgs,
    /// Print the plan and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Act on N mailboxes first, verify, then fan out.
    #[arg(long, default_value_t = 0)]
    pub canary: usize,
    /// Make the job and leave it to `clawback worker` processes (any host sharing the store)
    /// instead of running it here.
    #[arg(long, conflicts_with_all = ["dry_run", "canary"])]
    pub queue: bool,
    /// Print the plan / outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub request: RequestArgs,
    /// Write the plan here (versioned JSON with a digest).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan written by `clawback plan --out`.
    pub plan: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub canary: usize,
    #[arg(long)]
    pub yes: bool,
    /// Make the job and leave it to `clawback worker` processes instead of running it here.
    #[arg(long, conflicts_with = "canary")]
    pub queue: bool,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    pub command: Option<JobsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Running and past jobs, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One job's items.
    Show { job: i64 },
    /// Resume jobs left running by a crash (all, or one).
    Resume { job: Option<i64> },
    /// Stop a job; its pending items stay pending (resume later).
    Cancel { job: i64 },
    /// Retry the items of a job that failed with one reason, as a new job.
    Retry {
        job: i64,
        #[arg(long)]
        reason: FailureReason,
    },
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The retract job to undo.
    pub job: i64,
    /// Only these addresses (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

/// Loads config + store and builds the engine; prints the error and returns the exit code.
pub(crate) fn engine(config_path: Option<&Path>, data_dir: Option<&Path>) -> Result<Engine, u8> {
    let (config, store) = open_store(config_path, data_dir)?;
    let Some(config) = config else {
        errln!(
            "clawback: no config found; pass --config FILE (try `clawback init`, or `clawback lab serve --write-config lab.toml`)"
        );
        return Err(exit::USAGE);
    };
    build(config, store)
}

fn build(config: Config, store: crate::store::Store) -> Result<Engine, u8> {
    Engine::new(config, store).map_err(|e| {
        errln!("clawback: {e}");
        exit::USAGE
    })
}

pub(super) fn fail(e: EngineError) -> u8 {
    errln!("clawback: {e}");
    match e {
        EngineError::Store(crate::store::StoreError::PlanSpent { .. }) => exit::USAGE,
        EngineError::Store(_) | EngineError::Provider(_) | EngineError::JobLeased { .. } => {
            exit::FAILURE
        }
        _ => exit::USAGE,
    }
}

/// `1 message`, `2 messages`.
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn print_plan(plan: &Plan) {
    let c = plan.counts();
    outln!(
        "plan {} ({}): {} in {}, {}, depth {}",
        plan.id,
        plan.digest,
        counted(c.copies, "copy", "copies"),
        counted(c.mailboxes, "mailbox", "mailboxes"),
        counted(c.messages, "message", "messages"),
        plan.request.depth
    );
    for (action, n) in &c.by_action {
        outln!("  action  {:<12} {n}", action.as_str());
    }
    for (tenant, n) in &c.by_tenant {
        outln!("  tenant  {tenant:<12} {n}");
    }
    if c.mapped > 0 {
        outln!(
            "  note    {} copies: Soft Delete is not offered by Gmail, performed as Trash",
            c.mapped
        );
    }
    if c.retained_by_hold > 0 {
        outln!(
            "  note    {} copies retained_by_hold: mailboxes on hold; Hard Delete purges them for the user, the hold keeps them for admins (eDiscovery)",
            c.retained_by_hold
        );
    }
    if c.unresolved > 0 {
        outln!(
            "  unresolved {} copies: not reachable while planning (throttled or provider error); the job locates them again",
            c.unresolved
        );
    }
    for (reason, n) in &c.skipped_by_reason {
        outln!("  cannot  {:<14} {n}", reason.as_str());
    }
}

/// Leaves a made job to the workers and says so.
fn queue(engine: &Engine, job: i64) -> u8 {
    if let Err(e) = engine.queue_job(job) {
        return fail(e);
    }
    outln!(
        "job {job} queued: run `clawback worker` (on any host sharing this store) to work on it; `clawback jobs show {job}` follows it"
    );
    exit::OK
}

/// Asks for confirmation (unless `yes`), then makes the plan's job; `Err` is the exit code.
fn confirmed_job(engine: &Engine, plan: &Plan, yes: bool) -> Result<i64, u8> {
    if !yes && !confirm(plan)? {
        errln!("not confirmed; nothing was done");
        return Err(exit::FAILURE);
    }
    engine.create_job(plan, false).map_err(fail)
}

/// Asks on the terminal; Hard Delete wants the number of copies typed.
fn confirm(plan: &Plan) -> Result<bool, u8> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        errln!("clawback: not a terminal: pass --yes to confirm, or --dry-run to only plan");
        return Err(exit::USAGE);
    }
    let copies = plan.items.len();
    let hard = plan.request.action == RetractAction::HardDelete;
    if hard {
        err!(
            "Hard Delete is admin-recoverable only. Type the number of copies ({copies}) to proceed: "
        );
    } else {
        err!(
            "Retract {copies} copies to {}? [y/N] ",
            plan.request.action.label()
        );
    }
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = stdin.lock().read_line(&mut line);
    let answer = line.trim();
    Ok(if hard {
        answer == copies.to_string()
    } else {
        matches!(answer, "y" | "Y" | "yes")
    })
}

/// A progress line on stderr, at most ~10 times a second.
struct Progress {
    total: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
    started: Instant,
    last_ms: AtomicU64,
    throttled_ms: AtomicU64,
    tty: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            throttled_ms: AtomicU64::new(0),
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn on(&self, e: JobEvent) {
        match e {
            JobEvent::Started { remaining, .. } => {
                self.total.store(remaining, Ordering::Relaxed);
            }
            JobEvent::ItemSucceeded { .. } => {
                self.done.fetch_add(1, Ordering::Relaxed);
            }
            JobEvent::ItemFailed { .. } => {
                self.done.fetch_add(1, Ordering::Relaxed);
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            JobEvent::Throttled { seconds, .. } => {
                self.throttled_ms
                    .fetch_add((seconds * 1000.0) as u64, Ordering::Relaxed);
            }
            JobEvent::Reconciled {
                succeeded,
                requeued,
                ..
            } => errln!(
                "reconciled after restart: {succeeded} in-flight items settled, {requeued} queued again"
            ),
            JobEvent::CanaryPassed { mailboxes, .. } => {
                errln!("canary: {mailboxes} mailboxes verified; fanning out")
            }
        }
        let ms = self.started.elapsed().as_millis() as u64;
        if ms.saturating_sub(self.last_ms.load(Ordering::Relaxed)) >= 100 {
            self.last_ms.store(ms, Ordering::Relaxed);
            self.draw(false);
        }
    }

    fn draw(&self, last: bool) {
        let total = self.total.load(Ordering::Relaxed).max(1);
        let done = self.done.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let eta = if rate > 0.0 {
            (total.saturating_sub(done)) as f64 / rate
        } else {
            0.0
        };
        let width = 30usize;
        let filled = ((done as f64 / total as f64) * width as f64) as usize;
        let line = format!(
            "[{}{}] {done}/{total} failed {} {rate:.0}/s ETA {eta:.0}s throttled {:.1}s",
            "#".repeat(filled.min(width)),
            "-".repeat(width - filled.min(width)),
            self.failed.load(Ordering::Relaxed),
            self.throttled_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
        if self.tty {
            err!("\r{line}");
            if last {
                errln!();
            }
        } else if last {
            errln!("{line}");
        }
    }
}

/// Builds the engine and a runtime for a command (errors already printed: the exit code).
pub(super) fn engine_and_runtime(
    config_path: Option<&Path>,
    data_dir: Option<&Path>,
) -> Result<(Engine, tokio::runtime::Runtime), u8> {
    let engine = engine(config_path, data_dir)?;
    Ok((engine, super::runtime("clawback")?))
}

/// Prints a job's outcome and returns its exit code (or the error's).
fn report_code(result: Result<JobReport, EngineError>, json: bool) -> u8 {
    match result {
        Ok(r) => {
            print_report(&r, json);
            r.exit_code()
        }
        Err(e) => fail(e),
    }
}

pub(super) fn print_report(r: &JobReport, json: bool) {
    if json {
        let v = serde_json::json!({
            "job": r.job,
            "state": r.state.as_str(),
            "succeeded": r.counts.succeeded,
            "failed": r.counts.failed,
            "skipped": r.counts.skipped,
            "remaining": r.counts.remaining(),
            "failed_by_reason": r.failed_by_reason.iter().map(|(k, v)| (k.as_str(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            "skipped_by_reason": r.skipped_by_reason.iter().map(|(k, v)| (k.as_str(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            "throttled_secs": r.throttled_secs,
            "elapsed_secs": r.elapsed_secs,
            "stopped": r.stopped,
            "audit_head": r.audit_head.as_ref().map(|h| h.to_string()),
        });
        outln!("{v}");
        return;
    }
    outln!(
        "job {} {}: {} succeeded, {} failed, {} skipped, {} remaining in {:.1}s",
        r.job,
        r.state.as_str(),
        r.counts.succeeded,
        r.counts.failed,
        r.counts.skipped,
        r.counts.remaining(),
        r.elapsed_secs
    );
    for (reason, n) in &r.failed_by_reason {
        outln!("  failed  {:<14} {n}", reason.as_str());
    }
    for (reason, n) in &r.skipped_by_reason {
        outln!("  skipped {:<14} {n}", reason.as_str());
    }
    if let Some(s) = &r.stopped {
        outln!("  stopped: {s}");
    }
    if r.counts.remaining() > 0 {
        outln!("  resume with: clawback jobs resume {}", r.job);
    }
    if let Some(h) = &r.audit_head {
        outln!(
            "  audit head: {h}  (keep it outside this machine; `clawback audit verify --head {}:sha256:{}`)",
            h.seq,
            h.hash
        );
    }
}

async fn run_with_progress(
    engine: &Engine,
    job: i64,
    canary: usize,
    json: bool,
) -> Result<JobReport, EngineError> {
    let progress = Progress::new();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    // Ctrl-C: stop after the items in flight; the job stays resumable.
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::SeqCst);
        }
    });
    let sink = |e: JobEvent| progress.on(e);
    let report = engine
        .run_job(
            job,
            &RunOptions {
                canary,
                cancel: Some(cancel),
                interrupt: None,
            },
            &sink,
        )
        .await?;
    if !json {
        progress.draw(true);
    }
    Ok(report)
}

pub fn retract(args: RetractArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let (engine, rt) = match engine_and_runtime(config_path, data_dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    // Refuse (and audit) before planning and before asking for confirmation: planning only
    // reads, but an operator should not be asked to confirm what the role does not allow.
    if !args.dry_run
        && let Err(e) = engine.authorize(Capability::Retract(args.request.action))
    {
        return fail(e);
    }
    rt.block_on(async {
        if args.yes && !args.dry_run && !args.queue {
            return plan_while_acting(&engine, &args).await;
        }
        let plan = match engine.build_plan(args.request.request()).await {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        if args.json && args.dry_run {
            outln!("{}", plan.to_json_pretty());
        } else {
            print_plan(&plan);
        }
        if args.dry_run {
            return exit::OK;
        }
        if plan.items.is_empty() {
            outln!("nothing to act on");
            return if plan.skipped.is_empty() {
                exit::OK
            } else {
                exit::PARTIAL
            };
        }
        let job = match confirmed_job(&engine, &plan, args.yes) {
            Ok(j) => j,
            Err(code) => return code,
        };
        if args.queue {
            return queue(&engine, job);
        }
        report_code(
            run_with_progress(&engine, job, args.canary, args.json).await,
            args.json,
        )
    })
}

/// `retract --yes`: nothing waits for a confirmation, so the job plans and acts at once
/// (a copy located is a copy acted on); the plan, complete when the job has run, is printed
/// then, with the job's outcome.
async fn plan_while_acting(engine: &Engine, args: &RetractArgs) -> u8 {
    let job = match engine.create_planning_job(args.request.request(), None) {
        Ok(j) => j,
        Err(e) => return fail(e),
    };
    let report = run_with_progress(engine, job, args.canary, args.json).await;
    // One store lock at a time (a guard lives to the end of its statement).
    let plan_id = engine
        .store()
        .job(job)
        .ok()
        .flatten()
        .and_then(|row| row.plan_id);
    let json = plan_id.and_then(|id| engine.store().plan_json(&id).ok().flatten());
    let plan = json.and_then(|json| serde_json::from_str::<Plan>(&json).ok());
    if let Some(plan) = &plan {
        print_plan(plan);
    }
    let code = report_code(report, args.json);
    match &plan {
        // As when the plan comes first: nothing located to act on is said so.
        Some(plan) if plan.items.is_empty() && code == exit::OK => {
            outln!("nothing to act on");
            if plan.skipped.is_empty() {
                exit::OK
            } else {
                exit::PARTIAL
            }
        }
        _ => code,
    }
}

pub fn plan(args: PlanArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let (engine, rt) = match engine_and_runtime(config_path, data_dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    rt.block_on(async {
        let plan = match engine.build_plan(args.request.request()).await {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        print_plan(&plan);
        if let Err(e) =
            crate::secret::write_private_file(&args.out, plan.to_json_pretty().as_bytes())
        {
            errln!("clawback: cannot write {}: {e}", args.out.display());
            return exit::FAILURE;
        }
        outln!("written to {}", args.out.display());
        exit::OK
    })
}

pub fn apply(args: ApplyArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let text = match std::fs::read_to_string(&args.plan) {
        Ok(t) => t,
        Err(e) => {
            errln!("clawback: cannot read {}: {e}", args.plan.display());
            return exit::USAGE;
        }
    };
    let plan = match Plan::from_json(&text, &args.plan.display().to_string()) {
        Ok(p) => p,
        Err(e) => {
            errln!("clawback: {e}");
            return exit::USAGE;
        }
    };
    let engine = match engine(config_path, data_dir) {
        Ok(e) => e,
        Err(code) => return code,
    };
    print_plan(&plan);
    // A plan is spent once (checked again, atomically, when the job is made).
    match engine.store().job_of_plan(&plan.id) {
        Ok(Some(job)) => {
            errln!(
                "clawback: {}: plan {} was already applied as job {job}; `clawback jobs resume {job}` continues it, a new plan retracts again",
                args.plan.display(),
                plan.id
            );
            return exit::USAGE;
        }
        Ok(None) => {}
        Err(e) => return fail(e.into()),
    }
    // Sealed by this store, items matching the request, every action allowed to this role
    // (refusals audited) — before any confirmation.
    for item in &plan.items {
        if let Err(e) = engine.client(&item.tenant) {
            return fail(e);
        }
    }
    if let Err(e) = engine.check_plan(&plan) {
        return fail(e);
    }
    let job = match confirmed_job(&engine, &plan, args.yes) {
        Ok(j) => j,
        Err(code) => return code,
    };
    if args.queue {
        return queue(&engine, job);
    }
    let rt = match super::runtime("clawback") {
        Ok(r) => r,
        Err(code) => return code,
    };
    rt.block_on(async {
        report_code(
            run_with_progress(&engine, job, args.canary, false).await,
            false,
        )
    })
}

pub fn jobs(args: JobsArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let (engine, rt) = match engine_and_runtime(config_path, data_dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match args.command.unwrap_or(JobsCommand::List { limit: 20 }) {
        JobsCommand::List { limit } => {
            let rows = match engine.store().jobs(limit) {
                Ok(r) => r,
                Err(e) => return fail(e.into()),
            };
            outln!(
                "{:>5}  {:<8} {:<10} {:<12} {:<16} {:>6} {:>6} {:>6} {:>6}  {:<19}  run by",
                "job",
                "kind",
                "state",
                "action",
                "trigger",
                "ok",
                "failed",
                "skip",
                "left",
                "created"
            );
            let here = crate::store::jobs::LeaseHolder::this_process().host;
            for j in rows {
                let c = engine.store().item_counts(j.id).unwrap_or_default();
                let workers = match engine.live_workers(j.id) {
                    Ok(w) => w,
                    Err(e) => return fail(e),
                };
                let queued = engine.store().job_queued(j.id).unwrap_or(false);
                // Which process runs it now (a live lease), so a second terminal knows.
                let lease = engine.store().job_lease(j.id);
                let holder = match lease {
                    // Shared work: which worker (host:pid) holds how many items, done how many.
                    _ if !workers.is_empty() => workers
                        .iter()
                        .map(|w| {
                            format!(
                                "worker {} (held {}, done {})",
                                w.name(),
                                w.held,
                                w.succeeded + w.failed
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    Ok(Some(l)) if j.state == JobState::Running => {
                        if l.is_live(&here, engine.lease_stale()) {
                            l.to_string()
                        } else {
                            format!("nobody (last {l}; `clawback jobs resume {}`)", j.id)
                        }
                    }
                    Ok(None) if j.state == JobState::Running && queued => {
                        "no worker now (queued: `clawback worker`)".to_string()
                    }
                    Ok(None) if j.state == JobState::Running => {
                        format!("nobody (`clawback jobs resume {}`)", j.id)
                    }
                    _ => "-".to_string(),
                };
                let written = outln!(
                    "{:>5}  {:<8} {:<10} {:<12} {:<16} {:>6} {:>6} {:>6} {:>6}  {:<19}  {holder}",
                    j.id,
                    j.kind.as_str(),
                    j.state.as_str(),
                    match j.kind {
                        JobKind::Retract => j.action.as_str().to_string(),
                        JobKind::Restore => format!("undo:{}", j.action.as_str()),
                    },
                    j.trigger.as_str(),
                    c.succeeded,
                    c.failed,
                    c.skipped,
                    c.remaining(),
                    j.created_at.format("%Y-%m-%d %H:%M:%S")
                );
                if !written {
                    break;
                }
            }
            exit::OK
        }
        JobsCommand::Show { job } => {
            let store = engine.store();
            let Ok(Some(j)) = store.job(job) else {
                errln!("clawback: job {job} does not exist (see `clawback jobs list`)");
                return exit::USAGE;
            };
            let what = match j.kind {
                JobKind::Retract => j.action.as_str().to_string(),
                JobKind::Restore => format!(
                    "undoing {} of job {}",
                    j.action.as_str(),
                    j.parent_job.unwrap_or_default()
                ),
            };
            outln!(
                "job {} {} {} {what} by {} ({}), reason: {}",
                j.id,
                j.kind.as_str(),
                j.state.as_str(),
                j.operator,
                j.role,
                if j.reason.trim().is_empty() {
                    "(none given)"
                } else {
                    j.reason.as_str()
                }
            );
            if let Some(h) = &j.audit_head {
                outln!("audit head after it: {h}");
            }
            let workers = match store.job_workers(job) {
                Ok(w) => w,
                Err(e) => return fail(e.into()),
            };
            let here = crate::store::jobs::LeaseHolder::this_process().host;
            for w in &workers {
                let state = if w.is_live(&here, engine.lease_stale()) {
                    "live"
                } else if w.taken_over {
                    "lapsed (items taken over)"
                } else if w.ended.is_some() {
                    "left"
                } else {
                    "lapsed"
                };
                outln!(
                    "worker {:<28} {state:<25} held {:>6}  succeeded {:>6}  failed {:>6}  since {}",
                    w.name(),
                    w.held,
                    w.succeeded,
                    w.failed,
                    w.started.format("%Y-%m-%d %H:%M:%S")
                );
            }
            let items = store.job_items(job, None).unwrap_or_default();
            for it in items {
                let outcome = match it.state {
                    ItemState::Succeeded => format!(
                        "{} -> {}",
                        it.folder,
                        it.to_folder.as_ref().map(|f| f.label()).unwrap_or("?")
                    ),
                    ItemState::Failed | ItemState::Skipped => format!(
                        "{} {}",
                        it.reason.map(|r| r.as_str()).unwrap_or(""),
                        it.detail.as_deref().unwrap_or("")
                    ),
                    _ => String::new(),
                };
                let note = match it.note.as_deref() {
                    Some(n) => format!("  [{n}]"),
                    None => String::new(),
                };
                let written = outln!(
                    "  {:<10} {:<12} {:<36} {:<40} {outcome}{note}",
                    it.state.as_str(),
                    it.tenant,
                    it.mailbox,
                    it.message_id,
                );
                if !written {
                    break;
                }
            }
            exit::OK
        }
        JobsCommand::Resume { job } => {
            let jobs = match job {
                Some(j) => vec![j],
                None => match engine.unfinished_jobs() {
                    Ok(rows) => rows.into_iter().map(|r| r.id).collect(),
                    Err(e) => return fail(e),
                },
            };
            if jobs.is_empty() {
                outln!("no unfinished jobs");
                return exit::OK;
            }
            let mut code = exit::OK;
            let all = job.is_none();
            for j in jobs {
                match rt.block_on(run_with_progress(&engine, j, 0, false)) {
                    Ok(r) => {
                        print_report(&r, false);
                        code = code.max(r.exit_code());
                    }
                    // Resuming every unfinished job: one that another process runs is its.
                    Err(e @ EngineError::JobLeased { .. }) if all => {
                        outln!("skipped: {e}");
                        code = code.max(exit::PARTIAL);
                    }
                    Err(e) => return fail(e),
                }
            }
            code
        }
        JobsCommand::Cancel { job } => match engine.cancel_job(job) {
            Ok(Some(holder)) => {
                outln!(
                    "job {job} cancel recorded: {holder} stops it before its next batch; `clawback jobs resume {job}` continues it later"
                );
                exit::OK
            }
            Ok(None) => {
                outln!("job {job} cancelled; `clawback jobs resume {job}` continues it");
                exit::OK
            }
            Err(e) => fail(e),
        },
        JobsCommand::Retry { job, reason } => {
            let new = match engine.retry_failed(job, reason) {
                Ok(n) => n,
                Err(e) => return fail(e),
            };
            outln!("job {new}: retrying the {reason} failures of job {job}");
            report_code(
                rt.block_on(run_with_progress(&engine, new, 0, false)),
                false,
            )
        }
    }
}

pub fn restore(args: RestoreArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let (engine, rt) = match engine_and_runtime(config_path, data_dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let progress = Progress::new();
    let sink = |e: JobEvent| progress.on(e);
    match rt.block_on(engine.restore(args.job, &args.only, &sink)) {
        Ok(r) => {
            progress.draw(true);
            print_report(&r, false);
            r.exit_code()
        }
        Err(e) => fail(e),
    }
}
