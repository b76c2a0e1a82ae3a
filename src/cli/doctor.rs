//! `clawback doctor`: per tenant, whether a token was obtained (or exactly why not), granted vs
//! needed permissions, a domain table with Retract **Granted / Missing permission (which) / Not
//! in tenant**, and how to grant (admin consent URL, or the domain-wide delegation entry).
//!
//! Each line is printed as soon as its step is done, and stderr says which step runs now (a
//! slow or silent provider is never 39 s of nothing). An endpoint that cannot be reached is
//! said to be so, with its `host:port` and cause, and is not reported as a missing
//! permission: no consent URL then.
//!
//! Exit 0 when everything needed is granted, 3 when a permission is missing, 4 when an
//! endpoint could not be reached (takes precedence: those tenants were not checked), 2 for
//! config errors.

use crate::cli::exit;
use crate::cli::out::{errln, out};
use crate::config::{self, Config, TenantConfig};
use crate::model::TenantKind;
use crate::provider::http::endpoint_of;
use crate::provider::{DomainRetract, Failure, ProviderClient, delivery_log_permission};

/// How the checks came out, in increasing severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Granted,
    /// A permission or domain grant is missing (or no tenant is configured).
    Missing,
    /// An endpoint could not be reached.
    Unreachable,
}

impl Verdict {
    fn exit_code(self) -> u8 {
        match self {
            Verdict::Granted => exit::OK,
            Verdict::Missing => exit::PARTIAL,
            Verdict::Unreachable => exit::UNREACHABLE,
        }
    }
}

/// Runs doctor for every configured tenant.
pub fn run(config_path: Option<&std::path::Path>) -> u8 {
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
    let runtime = match super::runtime("clawback") {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut line = |text: &str| {
        out!("{text}\n");
    };
    let mut step = |text: &str| {
        errln!("doctor: {text}");
    };
    match runtime.block_on(check(&config, &mut line, &mut step)) {
        Ok(verdict) => verdict.exit_code(),
        Err(e) => {
            errln!("clawback: {e}");
            exit::USAGE
        }
    }
}

/// The token endpoint of a tenant, as `host:port`.
fn token_endpoint(tenant: &TenantConfig) -> String {
    endpoint_of(match tenant.kind {
        TenantKind::Microsoft365 => tenant.login_url(),
        TenantKind::GoogleWorkspace => tenant.google_token_url(),
    })
}

/// The API endpoint doctor probes domains on, as `host:port`.
fn api_endpoint(tenant: &TenantConfig) -> String {
    endpoint_of(match tenant.kind {
        TenantKind::Microsoft365 => tenant.graph_url(),
        TenantKind::GoogleWorkspace => tenant.directory_url(),
    })
}

/// A line for a failure without an answer: `cannot reach: connection refused: host:port`.
fn unreachable_line(label: &str, f: &Failure) -> String {
    format!("  {label:<12} cannot reach: {}", f.message)
}

/// Checks every tenant, giving each report line to `line` as soon as it is known and saying
/// which step runs now to `step`.
pub async fn check(
    config: &Config,
    line: &mut impl FnMut(&str),
    step: &mut impl FnMut(&str),
) -> Result<Verdict, crate::provider::ProviderError> {
    if config.tenants.is_empty() {
        line("No tenants configured. Run `clawback init` for a commented template.");
        return Ok(Verdict::Missing);
    }
    let timeouts = format!(
        "connect timeout {:.1} s, read timeout {:.1} s",
        config.http.connect_timeout().as_secs_f64(),
        config.http.read_timeout().as_secs_f64()
    );
    let mut worst = Verdict::Granted;
    let total = config.tenants.len();
    for (n, tenant) in config.tenants.iter().enumerate() {
        let client = ProviderClient::new(config, tenant)?;
        let verdict = check_tenant(
            &client,
            tenant,
            &format!("tenant {}/{total} {}", n + 1, tenant.name),
            &timeouts,
            line,
            step,
        )
        .await;
        worst = worst.max(verdict);
        line("");
    }
    Ok(worst)
}

/// One tenant's section, and its verdict.
async fn check_tenant(
    client: &ProviderClient,
    tenant: &TenantConfig,
    which: &str,
    timeouts: &str,
    line: &mut impl FnMut(&str),
    step: &mut impl FnMut(&str),
) -> Verdict {
    line(&format!("Tenant {} ({})", tenant.name, tenant.kind));
    step(&format!(
        "{which}: getting a token from {} ({timeouts})...",
        token_endpoint(tenant)
    ));
    let perms = client.permissions().await;
    let mut verdict = Verdict::Granted;
    match &perms.token {
        Ok(()) => line("  Token:       obtained"),
        Err(f) if f.is_unreachable() => {
            line(&unreachable_line("Token:", f));
            line(&format!("  Needed:      {}", perms.needed.join(", ")));
            line(
                "  Not checked: permissions and domains (the token endpoint cannot be reached; is it running, is the URL right?)",
            );
            return Verdict::Unreachable;
        }
        Err(why) => {
            verdict = Verdict::Missing;
            line(&format!("  Token:       NOT obtained: {why}"));
        }
    }
    line(&format!("  Needed:      {}", perms.needed.join(", ")));
    line(&format!(
        "  Granted:     {}",
        if perms.granted.is_empty() {
            "-".to_string()
        } else {
            perms.granted.join(", ")
        }
    ));
    if !perms.missing.is_empty() {
        verdict = Verdict::Missing;
        line(&format!("  Missing:     {}", perms.missing.join(", ")));
    }
    step(&format!(
        "{which}: listing domains and probing each on {}...",
        api_endpoint(tenant)
    ));
    // Domains the provider refuses although every permission is granted: consent or
    // delegation does not reach them, so the advice below says what does.
    let mut refused_domains: Vec<String> = Vec::new();
    match client.domains_status().await {
        Ok(domains) => {
            let width = domains
                .iter()
                .map(|d| d.domain.len())
                .max()
                .unwrap_or(6)
                .max(6);
            line(&format!("  {:<width$}  Retract", "Domain"));
            for d in &domains {
                if d.retract != DomainRetract::Granted {
                    verdict = Verdict::Missing;
                }
                line(&format!("  {:<width$}  {}", d.domain, d.retract));
                if let DomainRetract::Missing { detail, .. } = &d.retract {
                    line(&format!("  {:<width$}    {detail}", ""));
                    refused_domains.push(d.domain.clone());
                }
            }
        }
        Err(f) if f.is_unreachable() => {
            line(&unreachable_line("Domains:", &f));
            line("  Not checked: domains (the API endpoint cannot be reached)");
            return Verdict::Unreachable;
        }
        Err(f) => {
            verdict = Verdict::Missing;
            line(&format!("  Domains:     cannot list: {f}"));
        }
    }
    step(&format!(
        "{which}: reading the last minute of the tenant-wide delivery log..."
    ));
    line(&trace_log_line(client).await);
    let complete = perms.token.is_ok() && perms.missing.is_empty();
    let rbac_scoped = perms
        .granted
        .iter()
        .any(|g| g.contains("RBAC for Applications"));
    if !complete || rbac_scoped {
        // Missing permissions: the consent URL / delegation entry. Scoped by RBAC: how to
        // keep the scope (no consent URL is in it).
        line(&format!("  To grant:    {}", perms.how_to_grant));
    }
    if let Some(widen) = widen_advice(client.kind(), complete, &refused_domains) {
        line(&widen);
    }
    if let Some(quota) = quota_line(tenant) {
        line(&quota);
    }
    verdict
}

/// What reaches domains the provider refuses although every permission is granted. Consent
/// (Microsoft) or domain-wide delegation (Google) adds permissions; it does not reach mailboxes
/// that an application access policy or an Exchange RBAC scope leaves out, nor a domain whose
/// administrators turned Gmail API access off, so no consent URL is offered for them.
fn widen_advice(kind: TenantKind, complete: bool, refused_domains: &[String]) -> Option<String> {
    if !complete || refused_domains.is_empty() {
        return None;
    }
    let domains = refused_domains.join(", ");
    Some(match kind {
        TenantKind::Microsoft365 => format!(
            "  To widen:    every permission is granted; {domains} is left out by an application access policy or the app's Exchange RBAC for Applications scope, which admin consent does not change: add those mailboxes to the management scope (New-ManagementScope / New-ManagementRoleAssignment; Microsoft says not to create new application access policies)"
        ),
        TenantKind::GoogleWorkspace => format!(
            "  To widen:    every scope is delegated; {domains} refuses the Gmail API (domainPolicy): its administrators turned API access to Gmail off there, which domain-wide delegation does not change"
        ),
    })
}

/// Whether the tenant-wide delivery log (the trace source that costs requests per message)
/// can be read, and what going without costs. Optional: it does not change the verdict.
async fn trace_log_line(client: &ProviderClient) -> String {
    let permission = delivery_log_permission(client.kind());
    let now = chrono::Utc::now();
    match client
        .delivery_log(now - chrono::Duration::minutes(1), now)
        .await
    {
        Ok(_) => format!(
            "  Trace log:   Granted ({permission}): `trace sync` and `watch` read the tenant-wide log, requests per message"
        ),
        Err(f) if f.reason == crate::model::FailureReason::NotAuthorized => format!(
            "  Trace log:   Missing ({permission}): without it `trace sync` and `watch` list every mailbox, one request per mailbox per sync ({})",
            f.message
        ),
        Err(f) => format!("  Trace log:   Unknown ({f})"),
    }
}

/// Which Gmail quota regime the tenant's limits assume (Google tenants only).
fn quota_line(tenant: &TenantConfig) -> Option<String> {
    if tenant.kind != crate::model::TenantKind::GoogleWorkspace {
        return None;
    }
    let l = tenant.limits.clamped();
    let regime = match l.gmail_units_per_second {
        0..=100 => "Cloud projects created since 1 May 2026 (6,000 units per user per minute)",
        101..=250 => {
            "a project that used the Gmail API between Nov 2025 and Apr 2026 (15,000 units per user per minute)"
        }
        _ => "more than Google documents for any project: expect userRateLimitExceeded",
    };
    Some(format!(
        "  Quota:       {} units/user/s, {} units/min for the project, {} units/day budget: {regime}",
        l.gmail_units_per_second, l.gmail_project_units_per_minute, l.gmail_project_units_per_day
    ))
}
