//! Bad input gives one line naming the problem and the file (and the line, for config), through
//! the real binary where a command reads the input, and through the library otherwise.
//! Fixtures: tests/fixtures/config/. They are copied to a temporary directory first, because
//! git does not keep file modes and the secret files must be 0600 (or deliberately not).

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

use clawback::config::Config;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::FailureReason;
use clawback::provider::ProviderClient;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/config");

/// Copies the named fixtures into a fresh directory, private (0600) unless told otherwise.
fn stage(files: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        let to = dir.path().join(f);
        std::fs::copy(Path::new(FIXTURES).join(f), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let path = dir.path().to_path_buf();
    (dir, path)
}

/// Runs `clawback --config CONFIG doctor`; returns (exit code, stderr).
fn doctor(config: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawback"))
        .arg("--config")
        .arg(config)
        .arg("doctor")
        .env_remove("CLAWBACK_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    lines[0]
}

#[test]
fn a_typo_in_a_config_key_names_file_line_and_key() {
    let (_d, dir) = stage(&["typo.toml"]);
    let cfg = dir.join("typo.toml");
    let (code, stderr) = doctor(&cfg);
    assert_eq!(code, Some(2), "{stderr}");
    let line = one_line(&stderr);
    let prefix = format!("clawback: {}:7: ", cfg.display());
    assert!(line.starts_with(&prefix), "{line}");
    assert!(line.contains("unknown field `clientid`"), "{line}");
    // serde lists the valid keys, so the right spelling is in the message.
    assert!(line.contains("client_id"), "{line}");
}

#[test]
fn a_world_readable_secret_file_is_refused_with_the_chmod() {
    let (_d, dir) = stage(&["open-secret.toml", "open.secret"]);
    let secret = dir.join("open.secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = dir.join("open-secret.toml");
    let (code, stderr) = doctor(&cfg);
    assert_eq!(code, Some(2), "{stderr}");
    let line = one_line(&stderr);
    assert!(line.contains(&cfg.display().to_string()), "{line}");
    assert!(line.contains("tenant \"contoso\""), "{line}");
    assert!(
        line.contains(&format!(
            "{}: secret file is readable by others (mode 0644); run `chmod 600 {}`",
            secret.display(),
            secret.display()
        )),
        "{line}"
    );
    // After the chmod the same file is accepted (the error moves on to the network).
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = Config::load(&cfg).unwrap();
    assert!(config.client_secret(&config.tenants[0]).is_ok());
}

#[test]
fn a_file_that_is_not_a_service_account_key_is_named() {
    let (_d, dir) = stage(&["not-a-service-account.toml", "oauth-client.json"]);
    let cfg = dir.join("not-a-service-account.toml");
    let (code, stderr) = doctor(&cfg);
    assert_eq!(code, Some(2), "{stderr}");
    let line = one_line(&stderr);
    let sa = dir.join("oauth-client.json");
    assert!(
        line.contains(&format!(
            "{}: not a service account key: no \"type\": \"service_account\" field",
            sa.display()
        )),
        "{line}"
    );
}

#[test]
fn an_unknown_tenant_lists_the_configured_ones() {
    let (_d, dir) = stage(&["two-tenants.toml"]);
    let config = Config::load(&dir.join("two-tenants.toml")).unwrap();
    let err = config.tenant("northwind").unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown tenant \"northwind\"; configured tenants: contoso, fabrikam"
    );
    assert!(!err.contains('\n'));
}

#[tokio::test]
async fn malformed_message_ids_are_refused_before_any_request() {
    let scenario = clawback::lab::graph::fixture::scenario();
    let server = LabServer::start(
        &scenario,
        LabOptions::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = server.write_config(&dir.path().join("lab.toml")).unwrap();
    let client = ProviderClient::new(&config, &config.tenants[0]).unwrap();
    let before: u64 = server.lab.stats.requests.lock().unwrap().values().sum();
    for bad in [
        "<no-at-sign>",
        "<@evil.example>",
        "<phish-1@>",
        "",
        "<a@b> <c@d>",
        "<a b@c>",
    ] {
        let f = client
            .locate("alice@contoso.com", bad)
            .await
            .map(|c| format!("{bad:?} accepted: {c:?}"))
            .unwrap_err();
        assert_eq!(f.reason, FailureReason::ProviderError, "{bad:?}");
        assert_eq!(f.code, "invalid_message_id", "{bad:?}");
        let text = f.to_string();
        assert!(
            text.contains(&format!(
                "{bad:?} is not a Message-ID (expected <local@domain>)"
            )),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
        let f = client
            .restore(
                "alice@contoso.com",
                bad,
                None,
                &clawback::model::Folder::Inbox,
            )
            .await
            .unwrap_err();
        assert_eq!(f.code, "invalid_message_id", "{bad:?}");
    }
    let after: u64 = server.lab.stats.requests.lock().unwrap().values().sum();
    assert_eq!(
        before, after,
        "a malformed Message-ID must not reach the provider"
    );
}

#[test]
fn an_out_of_range_watch_guard_limit_names_file_line_key_and_range() {
    let (_d, dir) = stage(&["watch-share.toml"]);
    let cfg = dir.join("watch-share.toml");
    let (code, stderr) = doctor(&cfg);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        one_line(&stderr),
        format!(
            "clawback: {}:11: [watch] max_trace_share = 5: must be more than 0 and at most 1 (0.05 = 5% of the traced messages)",
            cfg.display()
        )
    );
}

/// The console without a terminal (a pipe, cron, CI): one line that says what is missing and
/// where to go instead — not `terminal: No such device or address (os error 6)` — exit 2, and
/// nothing written to stdout (no escape codes into a pipe).
#[test]
fn the_console_without_a_terminal_says_so_and_where_to_go() {
    let bin = env!("CARGO_BIN_EXE_clawback");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(args)
            .env_remove("CLAWBACK_CONFIG")
            .env_remove("CLAWBACK_DATA_DIR")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let data = dir.path().to_str().unwrap();
    let out = run(&["--data-dir", data, "demo"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    let line = one_line(&stderr);
    assert!(
        line.starts_with(
            "clawback demo: the console needs a terminal, and neither stdin nor stdout is one."
        ),
        "{line}"
    );
    assert!(line.contains("clawback demo --no-tui"), "{line}");
    assert!(!line.contains("os error"), "{line}");

    // The console proper, on a valid config (the demo lab's, written by `demo --no-tui`).
    let made = run(&["--data-dir", data, "demo", "--no-tui"]);
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    let config = dir.path().join("lab.toml");
    let out = run(&["--config", config.to_str().unwrap(), "--data-dir", data]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "{:?}", out.stdout);
    let line = one_line(&stderr);
    assert!(
        line.starts_with("clawback: the console needs a terminal"),
        "{line}"
    );
    assert!(line.contains("clawback --help"), "{line}");
}
