//! The RS256 signing floor of a cold Google Workspace run, shared by the retraction benches.

use clawback::config::{Config, TenantConfig};
use clawback::provider::auth::ServiceAccount;
use std::time::Instant;

/// What signing one token per impersonated user costs on this machine.
pub struct SigningFloor {
    /// Seconds per RS256 signature (measured over 300).
    pub each: f64,
    pub cores: usize,
    /// Wall seconds `users` signatures need on every core: `users × each ÷ cores`.
    pub floor: f64,
}

/// Measures the tenant's service-account signature and the floor for `users` of them.
pub fn signing_floor(
    config: &Config,
    tenant: &TenantConfig,
    users: usize,
) -> Result<SigningFloor, String> {
    let json = config
        .service_account_json(tenant)
        .map_err(|e| e.to_string())?;
    let account = ServiceAccount::parse(&json, "lab").map_err(|e| e.to_string())?;
    const N: usize = 300;
    let started = Instant::now();
    for i in 0..N {
        let _ = account.assertion(
            "https://oauth2.googleapis.com/token",
            &format!("user{i}@example.com"),
            "https://mail.google.com/",
        );
    }
    let each = started.elapsed().as_secs_f64() / N as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(SigningFloor {
        each,
        cores,
        floor: users as f64 * each / cores as f64,
    })
}
