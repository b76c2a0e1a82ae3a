//! `clawback worker`: one of many processes sharing the queued jobs of a store (issue 17).

use crate::cli::exit;
use crate::cli::out::{errln, outln};
use crate::cli::retract::{engine_and_runtime, fail, print_report};
use crate::engine::worker::{WorkerEvent, WorkerOptions};
use clap::Args;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Items taken per batch (the batch in flight is finished when the worker is stopped).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// Only this job; the worker ends when the job is no longer running.
    #[arg(long, value_name = "ID")]
    pub job: Option<i64>,
    /// End when no queued job is left to work on or to wait for, instead of waiting for new ones.
    #[arg(long)]
    pub exit_when_idle: bool,
}

/// Sets `stop` at SIGINT or SIGTERM: the batch in flight is finished, untouched items are
/// given back to the other workers, the worker leaves its job.
fn stop_on_signals(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        super::automation::shutdown_signal().await;
        errln!("worker: stopping after the batch in flight");
        stop.store(true, Ordering::SeqCst);
    });
}

pub fn run(args: WorkerArgs, config_path: Option<&Path>, data_dir: Option<&Path>) -> u8 {
    let (engine, rt) = match engine_and_runtime(config_path, data_dir) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let options = WorkerOptions {
        batch: args.batch as usize,
        job: args.job,
        exit_when_idle: args.exit_when_idle,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let me = crate::store::jobs::LeaseHolder::this_process();
    outln!(
        "worker pid {} on {}: waiting for queued jobs",
        me.pid,
        me.host
    );
    let sink = |e: WorkerEvent| {
        match e {
            WorkerEvent::Joined { job } => outln!("joined job {job}"),
            WorkerEvent::Refused { job, holder } => {
                outln!("job {job} is run by {holder} alone; not joined")
            }
            WorkerEvent::Took { job, items } => outln!("job {job}: took {items} items"),
            WorkerEvent::TookOver { job, worker, held } => outln!(
                "job {job}: worker {worker} lapsed; its {held} items taken over (in-flight ones settled by locating)"
            ),
            WorkerEvent::Left { job } => outln!("left job {job}"),
            WorkerEvent::Finished(report) => {
                print_report(&report, false);
                true
            }
            WorkerEvent::Item(_) => true,
        };
    };
    let result = rt.block_on(async {
        stop_on_signals(options.stop.clone());
        engine.work(&options, &sink).await
    });
    match result {
        Ok(summary) => {
            outln!(
                "worker done: {} items taken, jobs ended here: {}",
                summary.items,
                if summary.finished.is_empty() {
                    "none".to_string()
                } else {
                    summary
                        .finished
                        .iter()
                        .map(|j| j.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            exit::OK
        }
        Err(e) => fail(e),
    }
}
