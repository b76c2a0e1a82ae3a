//! `clawback --config lab.toml doctor` as a real process against the demo scenario served by an
//! in-process lab: the Retract table must match the scenario's own domain grants, exit code 3.

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

mod lab_support;

use clawback::config::Config;
use clawback::lab::{LabOptions, LabServer};

const NOT_OURS: &str = "not-ours.example";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_on_the_demo_prints_the_retract_table_and_exits_3() {
    let scenario = clawback::lab::scenario::demo(1);
    let server = LabServer::start(
        &scenario,
        LabOptions::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.toml");
    let mut config: Config = server.write_config(&path).unwrap();
    // A configured domain the tenant does not have: doctor must say "Not in tenant".
    config.tenants[0].domains.push(NOT_OURS.into());
    clawback::secret::write_private_file(
        &path,
        toml::to_string_pretty(&config).unwrap().as_bytes(),
    )
    .unwrap();

    let bin = env!("CARGO_BIN_EXE_clawback");
    let p = path.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .arg("--config")
            .arg(&p)
            .arg("doctor")
            .env_remove("CLAWBACK_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // Expected rows, derived from the scenario: every tenant domain is Granted or Missing as the
    // scenario grants it; the extra configured domain is Not in tenant.
    let sections: Vec<&str> = stdout.split("Tenant ").skip(1).collect();
    assert_eq!(sections.len(), scenario.tenants.len(), "{stdout}");
    let mut ungranted_seen = 0;
    for (t, section) in scenario.tenants.iter().zip(&sections) {
        assert!(section.starts_with(&t.name), "{section}");
        assert!(section.contains("Token:       obtained"), "{section}");
        let row = |domain: &str| -> String {
            section
                .lines()
                .find(|l| l.split_whitespace().next() == Some(domain))
                .unwrap_or_else(|| panic!("no row for {domain} in\n{section}"))
                .to_string()
        };
        for d in &t.domains {
            let r = row(&d.name);
            if d.granted {
                assert!(r.trim_end().ends_with("Granted"), "{r}");
            } else {
                ungranted_seen += 1;
                assert!(r.contains("Missing permission ("), "{r}");
                assert!(!r.contains("Granted"), "{r}");
            }
        }
        if t.name == config.tenants[0].name {
            assert!(
                row(NOT_OURS).trim_end().ends_with("Not in tenant"),
                "{section}"
            );
        } else {
            assert!(!section.contains(NOT_OURS), "{section}");
        }
        let rows = section
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("Domain"))
            .skip(1)
            .filter(|l| !l.trim_start().starts_with("Trace log:"))
            .filter(|l| {
                l.contains("Granted")
                    || l.contains("Missing permission")
                    || l.contains("Not in tenant")
            })
            .count();
        let expected = t.domains.len() + usize::from(t.name == config.tenants[0].name);
        assert_eq!(rows, expected, "{section}");
        // Every permission is granted: consent or delegation would not reach the refused
        // domain, so doctor says what would instead of offering them (issue 15).
        let refused: Vec<&str> = t
            .domains
            .iter()
            .filter(|d| !d.granted)
            .map(|d| d.name.as_str())
            .collect();
        let widen = section
            .lines()
            .find(|l| l.trim_start().starts_with("To widen:"))
            .unwrap_or_else(|| panic!("no To widen line in\n{section}"));
        assert!(refused.iter().all(|d| widen.contains(d)), "{widen}");
        assert!(!section.contains("To grant:"), "{section}");
        // The demo grants the tenant-wide trace log.
        assert!(
            section.contains("Trace log:   Granted (")
                && section.contains("read the tenant-wide log, requests per message"),
            "{section}"
        );
        // Google tenants say which Gmail quota regime their limits assume.
        let google = t.kind == clawback::model::TenantKind::GoogleWorkspace;
        assert_eq!(
            section.contains(
                "Quota:       100 units/user/s, 1200000 units/min for the project, 80000000 units/day budget: Cloud projects created since 1 May 2026"
            ),
            google,
            "{section}"
        );
    }
    assert!(
        ungranted_seen >= 2,
        "the demo has an ungranted domain per tenant"
    );
    assert!(stdout.contains("admin consent does not change"), "{stdout}");
    assert!(
        stdout.contains("domain-wide delegation does not change"),
        "{stdout}"
    );
    assert!(!stdout.contains("adminconsent"), "{stdout}");
    server.stop().await;
}

/// A permission missing from the token: then, and only then, doctor offers the admin consent
/// URL (Microsoft) and the domain-wide delegation entry (Google).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_offers_consent_and_delegation_for_a_missing_permission() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _config, _) = lab_support::demo_lab(LabOptions::default(), dir.path()).await;
    for t in server.lab.state().tenants.iter_mut() {
        t.credentials.granted.retain(|g| {
            g != "GroupMember.Read.All"
                && g != "https://www.googleapis.com/auth/admin.directory.group.readonly"
        });
    }
    let out = lab_support::clawback_with_config(&dir.path().join("lab.toml"), &["doctor"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    let grant: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("To grant:"))
        .collect();
    assert_eq!(grant.len(), 2, "{stdout}");
    assert!(grant[0].contains("adminconsent"), "{stdout}");
    assert!(grant[1].contains("Domain-wide delegation"), "{stdout}");
    assert!(!stdout.contains("To widen:"), "{stdout}");
    server.stop().await;
}

/// `clawback doctor` against a lab that was stopped: "connection refused" with the endpoint,
/// long before any retry schedule would end, no admin-consent URL, no "Missing permission",
/// exit 4 (unreachable) instead of 3 (missing permission), and stderr said what it was doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_on_a_stopped_lab_says_connection_refused_and_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.toml");
    let (mut config, endpoint) = lab_support::stopped_demo_lab(dir.path()).await;
    // Short timeouts: even a connect that hung instead of being refused would end quickly.
    config.http.connect_timeout_secs = 2.0;
    config.http.read_timeout_secs = 2.0;
    clawback::secret::write_private_file(
        &path,
        toml::to_string_pretty(&config).unwrap().as_bytes(),
    )
    .unwrap();

    let bin = env!("CARGO_BIN_EXE_clawback");
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .arg("--config")
            .arg(&path)
            .arg("doctor")
            .env_remove("CLAWBACK_CONFIG")
            .output()
            .unwrap()
    });
    // The old retry schedule took minutes; the refusal is final at once.
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("doctor still running after 30 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(4),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let sections: Vec<&str> = stdout.split("Tenant ").skip(1).collect();
    assert_eq!(sections.len(), config.tenants.len(), "{stdout}");
    for (t, section) in config.tenants.iter().zip(&sections) {
        assert!(section.starts_with(&t.name), "{section}");
        assert!(
            section.contains(&format!(
                "Token:       cannot reach: connection refused: {endpoint}"
            )),
            "{section}"
        );
        // Progress: the step was announced before its answer came.
        assert!(
            stderr.contains(&format!("{}: getting a token from {endpoint}", t.name)),
            "{stderr}"
        );
    }
    for wrong in [
        "adminconsent",
        "To grant",
        "Missing",
        "Granted:",
        "NOT obtained",
    ] {
        assert!(!stdout.contains(wrong), "{wrong:?} in\n{stdout}");
    }
}

/// Issue 16: doctor shows the tenant-wide trace log per tenant, Granted or Missing with what
/// going without costs; a missing log permission alone does not change the exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_shows_the_trace_log_permission_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _config, _) = lab_support::demo_lab(LabOptions::default(), dir.path()).await;
    lab_support::withdraw_trace_log(&server, &["contoso"]);
    let out = lab_support::clawback_with_config(&dir.path().join("lab.toml"), &["doctor"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    // Exit 3 for the demo's ungranted domains, as without the change.
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    let section = |name: &str| {
        stdout
            .split("Tenant ")
            .find(|s| s.starts_with(name))
            .unwrap()
            .to_string()
    };
    let contoso = section("contoso");
    assert!(
        contoso.contains("Trace log:   Missing (ExchangeMessageTrace.Read.All): without it `trace sync` and `watch` list every mailbox, one request per mailbox per sync"),
        "{contoso}"
    );
    let fabrikam = section("fabrikam");
    assert!(
        fabrikam.contains(
            "Trace log:   Granted (https://www.googleapis.com/auth/admin.reports.audit.readonly)"
        ),
        "{fabrikam}"
    );
    server.stop().await;
}
