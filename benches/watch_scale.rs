//! `watch` at scale (issue 16, Build 3): a generated Microsoft 365 lab of 100,000 mailboxes with
//! the tenant-wide message trace granted; the watcher runs its cycles; a malicious message is
//! delivered to 50 mailboxes with `/_lab/deliver`. Prints delivery → first / last retraction,
//! the detecting cycle's start → first retraction, and what a cycle costs in HTTP requests (a `$batch` counts once)
//! (first cycle, a cycle with nothing new, the cycle that found the lure).
//!
//! ```text
//! cargo bench --bench watch_scale                                  # 100,000 mailboxes, 3 s cycles
//! cargo bench --bench watch_scale -- --mailboxes 20000 --interval-ms 1000
//! ```
//! The message trace allows 100 requests per 5 minutes per tenant: a cycle every 3 s is the
//! most it sustains, so delivery → first retraction is at most one interval plus a cycle.

#[path = "support/arg.rs"]
mod arg;
#[path = "support/watch_scale.rs"]
mod watch_scale;
use arg::arg;

use std::time::Duration;

fn main() {
    let mailboxes = arg("--mailboxes", 100_000) as usize;
    let interval = Duration::from_millis(arg("--interval-ms", 3_000));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(watch_scale::run(mailboxes, 50, interval));
    let lure_actions: usize = r
        .actions
        .iter()
        .filter(|((_, mid, _), _)| mid == watch_scale::LURE)
        .map(|(_, n)| n)
        .sum();
    let other: usize = r
        .actions
        .iter()
        .filter(|((_, mid, _), _)| mid != watch_scale::LURE)
        .map(|(_, n)| n)
        .sum();
    println!(
        "watch_scale: {} mailboxes, cycle every {:.1}s; lab ready in {:.1}s",
        r.mailboxes,
        interval.as_secs_f64(),
        r.lab_ready.as_secs_f64()
    );
    println!(
        "  first cycle (trace from the log): {:.2}s, {} HTTP requests",
        r.first_cycle.as_secs_f64(),
        r.first_cycle_requests
    );
    println!(
        "  cycle with nothing new:           {:.3}s, {} HTTP requests",
        r.idle_cycle.as_secs_f64(),
        r.idle_cycle_requests
    );
    println!(
        "  cycle that found the lure:        {} HTTP requests",
        r.detecting_cycle_requests
    );
    println!(
        "  delivery -> first retraction {:.3}s, -> all {} copies {:.3}s; detecting cycle start -> first retraction {:.3}s",
        r.first_retraction.as_secs_f64(),
        r.targets.len(),
        r.all_retracted.as_secs_f64(),
        r.detection_to_first_retraction.as_secs_f64()
    );
    println!("  lab actions: {lure_actions} on the lure, {other} on anything else");
}
