//! `clawback doctor`: per tenant, whether a token was obtained (or exactly why not), granted vs
//! needed permissions, a domain table with Retract **Granted / Missing permission (which) / Not
//! in tenant**, and how to grant (admin consent URL, or the domain-wide delegation entry).
//! Exit 0 when everything needed is granted, 3 otherwise, 2 for config errors.

use crate::cli::exit;
use crate::cli::out::{errln, out};
use crate::config::{self, Config};
use crate::provider::{DomainRetract, ProviderClient};
use std::fmt::Write as _;
use std::path::Path;

/// Runs doctor for every configured tenant.
pub fn run(config_path: Option<&Path>) -> u8 {
    let Some(path) = config::locate(config_path) else {
        errln!("clawback: {}", config::ConfigError::Missing);
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            errln!("clawback: cannot start the async runtime: {e}");
            return exit::FAILURE;
        }
    };
    let (text, all_granted) = match runtime.block_on(report(&config)) {
        Ok(r) => r,
        Err(e) => {
            errln!("clawback: {e}");
            return exit::USAGE;
        }
    };
    out!("{text}");
    if all_granted { exit::OK } else { exit::PARTIAL }
}

/// The doctor report as text, and whether everything needed is granted.
pub async fn report(config: &Config) -> Result<(String, bool), crate::provider::ProviderError> {
    let mut out = String::new();
    let mut all = true;
    if config.tenants.is_empty() {
        out.push_str("No tenants configured. Run `clawback init` for a commented template.\n");
        return Ok((out, false));
    }
    for tenant in &config.tenants {
        let client = ProviderClient::new(config, tenant)?;
        let _ = writeln!(out, "Tenant {} ({})", tenant.name, tenant.kind);
        let perms = client.permissions().await;
        match &perms.token {
            Ok(()) => out.push_str("  Token:       obtained\n"),
            Err(why) => {
                all = false;
                let _ = writeln!(out, "  Token:       NOT obtained: {why}");
            }
        }
        let _ = writeln!(out, "  Needed:      {}", perms.needed.join(", "));
        let _ = writeln!(
            out,
            "  Granted:     {}",
            if perms.granted.is_empty() {
                "-".to_string()
            } else {
                perms.granted.join(", ")
            }
        );
        if !perms.missing.is_empty() {
            all = false;
            let _ = writeln!(out, "  Missing:     {}", perms.missing.join(", "));
        }
        match client.domains_status().await {
            Ok(domains) => {
                let width = domains
                    .iter()
                    .map(|d| d.domain.len())
                    .max()
                    .unwrap_or(6)
                    .max(6);
                let _ = writeln!(out, "  {:<width$}  Retract", "Domain");
                for d in &domains {
                    if d.retract != DomainRetract::Granted {
                        all = false;
                    }
                    let _ = writeln!(out, "  {:<width$}  {}", d.domain, d.retract);
                    if let DomainRetract::Missing { detail, .. } = &d.retract {
                        let _ = writeln!(out, "  {:<width$}    {detail}", "");
                    }
                }
            }
            Err(f) => {
                all = false;
                let _ = writeln!(out, "  Domains:     cannot list: {f}");
            }
        }
        let _ = writeln!(out, "  To grant:    {}", perms.how_to_grant);
        out.push('\n');
    }
    Ok((out, all))
}
