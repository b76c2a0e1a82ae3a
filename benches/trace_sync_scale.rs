//! `trace sync` at scale (issue 16): a generated lab of 100,000 mailboxes (two thirds
//! Microsoft 365, one third Google Workspace) with both tenant-wide logs granted (Graph message
//! trace, Admin SDK Reports gmail log). Prints what the first sync into an empty store cost —
//! requests by kind, sub-requests per new message, log deliveries and trace records ingested per
//! second, wall — and what a second sync with nothing new cost.
//!
//! ```text
//! cargo bench --bench trace_sync_scale                      # 100,000 mailboxes
//! cargo bench --bench trace_sync_scale -- --mailboxes 20000 --campaign 5000 --background 100
//! ```

#[path = "support/arg.rs"]
mod arg;
#[path = "support/trace_sync_scale.rs"]
mod trace_sync_scale;
use arg::arg;

fn main() {
    let mailboxes = arg("--mailboxes", 100_000) as usize;
    let campaign = arg("--campaign", 20_000) as usize;
    let background = arg("--background", 400) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(trace_sync_scale::run(
        mailboxes,
        campaign.min(mailboxes),
        background,
    ));
    let secs = r.first_wall.as_secs_f64().max(1e-9);
    let new = r.first.inserted.max(1);
    println!(
        "trace_sync_scale: {} mailboxes, {} delivered copies, {} messages; lab ready in {:.1}s",
        r.mailboxes,
        r.delivered.len(),
        r.records,
        r.lab_ready.as_secs_f64()
    );
    println!(
        "  first sync (empty store): {:.2}s wall; {} HTTP requests, {} sub-requests ({:.2} per new message; a per-mailbox sync needs >= {})",
        secs,
        r.first_requests.values().sum::<u64>(),
        r.first_served,
        r.first_served as f64 / new as f64,
        r.mailboxes
    );
    println!(
        "  ingested: {} log deliveries ({:.0}/s), {} trace records ({:.0}/s)",
        r.first.log_deliveries,
        r.first.log_deliveries as f64 / secs,
        r.first.inserted + r.first.merged,
        (r.first.inserted + r.first.merged) as f64 / secs
    );
    println!("  requests by kind:");
    for (route, n) in &r.first_requests {
        println!("    {n:>7}  {route}");
    }
    println!(
        "  second sync (nothing new): {} sub-requests, {} new, {} merged",
        r.second_served, r.second.inserted, r.second.merged
    );
    let exact = r.indexed == r.delivered;
    println!(
        "  every delivered copy indexed (compared with the lab): {}",
        if exact { "yes" } else { "NO" }
    );
    if !exact {
        std::process::exit(1);
    }
}
