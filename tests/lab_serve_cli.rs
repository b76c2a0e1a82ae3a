//! The real `clawback lab serve` binary: it announces where it listens, writes a working config
//! (secrets mode 0600) and a second `clawback --config …` process talks to it. Readiness time is
//! measured and printed, never asserted.

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

use lab_support::KillOnDrop;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod lab_support;

const BIN: &str = env!("CARGO_BIN_EXE_clawback");

/// The base URL in `lab listening on URL (…)`, the last line [`lab_support::lines_until_listening`] returns.
fn listening_url(lines: &[String]) -> String {
    lines
        .last()
        .and_then(|l| l.strip_prefix("lab listening on "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string()
}

/// Starts `lab serve` and returns it with its base URL once it says it listens.
fn serve(args: &[&str]) -> (KillOnDrop, String, Duration, Vec<String>) {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["lab", "serve"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lab_support::lines_until_listening(&mut child);
    let ready = started.elapsed();
    let url = listening_url(&lines);
    (KillOnDrop(child), url, ready, lines)
}

/// Issue 12: `lab serve --scenario demo` (its default seed) builds the world `clawback demo`
/// does — the same mailboxes hold the campaign — and the config it writes names the report
/// mailboxes and the exact command that serves this lab again at its address.
#[test]
fn lab_serve_demo_is_the_demos_world_and_its_config_says_how_to_restart_it() {
    use clawback::lab::demo::{self, CAMPAIGN_MESSAGE_ID, DEMO_SEED};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lab.toml");
    let (_lab, url, _, _) = serve(&["--write-config", config.to_str().unwrap()]);
    let addr = url.strip_prefix("http://").unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!(
            "#   clawback lab serve --scenario demo --seed {DEMO_SEED} --addr {addr}\n"
        )),
        "{text}"
    );
    let loaded = clawback::config::Config::load(&config).unwrap();
    let reports: Vec<Vec<String>> = loaded
        .tenants
        .iter()
        .map(|t| t.report_mailboxes.clone())
        .collect();
    assert_eq!(
        reports,
        vec![
            vec![demo::DEMO_CONTOSO_REPORT_MAILBOX.to_string()],
            vec![demo::DEMO_FABRIKAM_REPORT_MAILBOX.to_string()]
        ]
    );
    let enc = percent_encoding::utf8_percent_encode(
        CAMPAIGN_MESSAGE_ID,
        percent_encoding::NON_ALPHANUMERIC,
    );
    let served: Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::get(format!("{url}/_lab/messages?message_id={enc}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let mut at_lab: Vec<(String, String)> = served["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["tenant"].as_str().unwrap().to_string(),
                c["mailbox"].as_str().unwrap().to_ascii_lowercase(),
            )
        })
        .collect();
    let mut in_demo: Vec<(String, String)> = demo::build(DEMO_SEED)
        .tenants
        .iter()
        .flat_map(|t| {
            t.messages
                .iter()
                .filter(|m| m.message_id == CAMPAIGN_MESSAGE_ID)
                .flat_map(|m| m.copies.iter())
                .map(|c| (t.name.clone(), c.mailbox.to_ascii_lowercase()))
        })
        .collect();
    at_lab.sort();
    in_demo.sort();
    assert!(!in_demo.is_empty());
    assert_eq!(at_lab, in_demo);
}

#[test]
fn lab_serve_writes_a_working_config_and_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lab.toml");
    let (_lab, url, ready, lines) = serve(&[
        "--addr",
        "127.0.0.1:0",
        "--scenario",
        "demo",
        "--write-config",
        config.to_str().unwrap(),
    ]);
    println!(
        "lab serve --scenario demo --write-config: ready after {} ms (spawn to listening line)",
        ready.as_millis()
    );
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("wrote config {}", config.display())),
        "{lines:?}"
    );
    // Port 0 was replaced by a real port.
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{url} is not a loopback URL"))
        .parse()
        .unwrap();
    assert_ne!(port, 0);

    // The config and every secret file beside it are private.
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&url), "the config points at {url}:\n{text}");
    let mut secrets = Vec::new();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let path = e.unwrap().path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
        if path != config {
            secrets.push(path);
        }
    }
    assert!(
        secrets
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".contoso.secret")),
        "{secrets:?}"
    );
    let sa = secrets
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".service-account.json"))
        .unwrap_or_else(|| panic!("no service-account key file in {secrets:?}"));
    let sa: Value = serde_json::from_str(&std::fs::read_to_string(sa).unwrap()).unwrap();
    assert_eq!(sa["type"], "service_account");
    assert!(sa["private_key"].as_str().unwrap().contains("PRIVATE KEY"));

    // A second clawback process uses the config: tokens for both tenants from the lab.
    let doctor = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "doctor"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&doctor.stdout);
    let err = String::from_utf8_lossy(&doctor.stderr);
    assert_eq!(
        out.matches("Token:       obtained").count(),
        2,
        "doctor stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        out.contains("Tenant contoso") && out.contains("Tenant fabrikam"),
        "{out}"
    );
    // The demo has a domain without a grant: doctor says so and exits 3 (partial).
    assert_eq!(doctor.status.code(), Some(3), "{out}\n{err}");

    // The lab saw those token requests: the side effect, from the lab's own counters.
    let stats: Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::get(format!("{url}/_lab/stats"))
            .await
            .unwrap_or_else(|e| panic!("GET {url}/_lab/stats: {e}"))
            .json()
            .await
            .unwrap()
    });
    let requests = stats["requests"].as_object().unwrap();
    let served = |route: &str| requests.get(route).and_then(Value::as_u64).unwrap_or(0);
    assert!(
        served("POST /{tenant}/oauth2/v2.0/token") >= 1,
        "{requests:?}"
    );
    assert!(served("POST /token") >= 1, "{requests:?}");
}

#[test]
fn lab_serve_refuses_a_non_loopback_address() {
    let out = Command::new(BIN)
        .args(["lab", "serve", "--addr", "0.0.0.0:0", "--scenario", "demo"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback only"), "{err}");
    assert!(err.contains("0.0.0.0:0"), "{err}");
}

/// `lab serve` with an absolute-path-free start: it runs where its arguments are relative.
fn serve_in(cwd: &std::path::Path, args: &[&str]) -> (KillOnDrop, String) {
    let mut child = Command::new(BIN)
        .current_dir(cwd)
        .args(["lab", "serve"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lab_support::lines_until_listening(&mut child);
    let url = listening_url(&lines);
    (KillOnDrop(child), url)
}

/// Issue 14 point 6, end to end with relative paths as an operator types them: a scenario from
/// `lab scenario` (dated before the current hour, so inside `trace sync`'s default 30 days),
/// served with `--capacity 4 --write-config sub/lab.toml`. The config names its secrets
/// relative to itself (not `sub/sub/…`), sizes the client to the capacity (no stream of 429s)
/// and gives the Google tenant no Microsoft `auth`; a plain `trace sync` then indexes the
/// campaign from every mailbox.
#[test]
fn relative_write_config_fits_the_capacity_and_a_fresh_scenario_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    std::fs::create_dir(cwd.join("sub")).unwrap();
    let out = Command::new(BIN)
        .current_dir(cwd)
        .args([
            "lab",
            "scenario",
            "--mailboxes",
            "24",
            "--campaign-recipients",
            "24",
            "--background-messages",
            "4",
            "--out",
            "scenario.json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (_lab, url) = serve_in(
        cwd,
        &[
            "--scenario",
            "scenario.json",
            "--capacity",
            "4",
            "--latency-ms",
            "5",
            "--write-config",
            "sub/lab.toml",
        ],
    );
    let text = std::fs::read_to_string(cwd.join("sub/lab.toml")).unwrap();
    assert!(text.contains(&url), "{text}");
    let config: toml::Value = toml::from_str(&text).unwrap();
    let tenants = config["tenant"].as_array().unwrap();
    assert_eq!(tenants.len(), 2, "{text}");
    for t in tenants {
        let name = t["name"].as_str().unwrap();
        assert_eq!(
            t["limits"]["max_in_flight"].as_integer(),
            Some(4),
            "{name}: never more in flight than the lab's capacity\n{text}"
        );
        let secret = t
            .get("client_secret_file")
            .or_else(|| t.get("service_account_file"))
            .and_then(toml::Value::as_str)
            .unwrap_or_else(|| panic!("{name}: no secret file\n{text}"));
        assert!(
            !secret.contains('/'),
            "{name}: {secret:?} must be relative to the config file"
        );
        assert!(cwd.join("sub").join(secret).is_file(), "{secret}");
        if t["kind"].as_str() == Some("google_workspace") {
            assert!(
                t.get("auth").is_none(),
                "{name}: auth beside a service account\n{text}"
            );
        }
    }

    // Relative paths resolved once: the config works from where it was written.
    let clawback = |args: &[&str]| {
        Command::new(BIN)
            .current_dir(cwd)
            .args(["--config", "sub/lab.toml", "--data-dir", "data"])
            .args(args)
            .output()
            .unwrap()
    };
    let doctor = clawback(&["doctor"]);
    let out = String::from_utf8_lossy(&doctor.stdout);
    assert_eq!(
        out.matches("Token:       obtained").count(),
        2,
        "doctor:\n{out}\n{}",
        String::from_utf8_lossy(&doctor.stderr)
    );

    // The default look-back finds the generated mail; no mailbox is throttled into failure.
    let sync = clawback(&["trace", "sync"]);
    let out = String::from_utf8_lossy(&sync.stdout);
    let err = String::from_utf8_lossy(&sync.stderr);
    assert_eq!(sync.status.code(), Some(0), "{out}\n{err}");
    // Both tenants grant their tenant-wide log: no mailbox is listed one by one.
    assert!(
        out.contains("synced the tenant-wide log of contoso, fabrikam ("),
        "{out}"
    );
    assert!(!out.contains("indexed 0 new"), "nothing indexed: {out}");
    let search = clawback(&[
        "search",
        &format!("msgid:{}", clawback::lab::demo::CAMPAIGN_MESSAGE_ID),
        "--json",
    ]);
    let rows: Value = serde_json::from_slice(&search.stdout).unwrap();
    assert_eq!(
        rows.as_array().map(Vec::len),
        Some(2),
        "one record per tenant: {rows}"
    );
}

/// `--retry-after`: the lab's 429s say whole seconds (at least 1) unless `sub-second` is asked
/// for (experiments and fast tests only: no real service answers like that).
#[test]
fn retry_after_knob_is_whole_seconds_unless_sub_second_is_asked_for() {
    for (knob, whole) in [
        (None, true),
        (Some("whole-seconds"), true),
        (Some("sub-second"), false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("lab.toml");
        let mut args = vec![
            "--scenario",
            "demo",
            "--capacity",
            "1",
            "--latency-ms",
            "300",
            "--write-config",
            config.to_str().unwrap(),
        ];
        if let Some(k) = knob {
            args.extend(["--retry-after", k]);
        }
        let (_lab, url, _, _) = serve(&args);
        let text = std::fs::read_to_string(&config).unwrap();
        let config: toml::Value = toml::from_str(&text).unwrap();
        let contoso = config["tenant"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["kind"].as_str() == Some("microsoft365"))
            .unwrap()
            .clone();
        let secret = std::fs::read_to_string(
            dir.path()
                .join(contoso["client_secret_file"].as_str().unwrap()),
        )
        .unwrap();
        let retry_after = tokio::runtime::Runtime::new().unwrap().block_on(async {
            let http = reqwest::Client::new();
            let token: Value = http
                .post(format!(
                    "{url}/{}/oauth2/v2.0/token",
                    contoso["tenant_id"].as_str().unwrap()
                ))
                .form(&[
                    ("client_id", contoso["client_id"].as_str().unwrap()),
                    ("client_secret", secret.trim()),
                    ("scope", "https://graph.microsoft.com/.default"),
                    ("grant_type", "client_credentials"),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let token = token["access_token"].as_str().unwrap().to_string();
            // Two granted contoso mailboxes holding the campaign, from the lab's own view.
            let copies: Value = http
                .get(format!("{url}/_lab/messages"))
                .query(&[("message_id", clawback::lab::demo::CAMPAIGN_MESSAGE_ID)])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let mailboxes: Vec<String> = copies["copies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["tenant"] == "contoso" && c["granted"] == true)
                .map(|c| c["mailbox"].as_str().unwrap().to_string())
                .take(2)
                .collect();
            assert_eq!(mailboxes.len(), 2, "{copies}");
            // Two mailboxes at once on a capacity of one: one is throttled.
            let calls = mailboxes.iter().map(|mail| {
                let req = http
                    .get(format!("{url}/v1.0/users/{mail}/messages?$top=1"))
                    .bearer_auth(&token);
                async move { req.send().await.unwrap() }
            });
            let answers = futures_util::future::join_all(calls).await;
            let limited: Vec<_> = answers.iter().filter(|r| r.status() == 429).collect();
            assert_eq!(limited.len(), 1, "{knob:?}");
            limited[0].headers()["retry-after"]
                .to_str()
                .unwrap()
                .to_string()
        });
        let secs: f64 = retry_after.parse().unwrap();
        if whole {
            assert!(
                retry_after.parse::<u64>().is_ok() && secs >= 1.0,
                "{knob:?}: Retry-After {retry_after:?}"
            );
        } else {
            assert!(
                secs < 1.0 && secs > 0.0,
                "{knob:?}: Retry-After {retry_after:?}"
            );
        }
    }
}

/// Issue 15: `CLAWBACK_DEMO_CLOCK` pins the demo's clock, so its dates (and captures made from
/// it) are the same whenever it runs; an unreadable value is refused naming the variable.
#[test]
fn the_demo_clock_pins_the_demos_dates() {
    let scenario_at = |clock: &str| {
        Command::new(BIN)
            .args(["lab", "scenario", "--demo", "--seed"])
            .arg(clawback::lab::demo::DEMO_SEED.to_string())
            .env(clawback::lab::demo::DEMO_CLOCK_ENV, clock)
            .output()
            .unwrap()
    };
    let out = scenario_at("2026-11-27T15:00:00Z");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let pinned: clawback::lab::scenario::Scenario = serde_json::from_slice(&out.stdout).unwrap();
    let anchor: chrono::DateTime<chrono::Utc> = "2026-11-27T15:00:00Z".parse().unwrap();
    assert_eq!(
        serde_json::to_value(&pinned).unwrap(),
        serde_json::to_value(clawback::lab::demo::build_at(
            clawback::lab::demo::DEMO_SEED,
            anchor
        ))
        .unwrap(),
        "the pinned demo is the demo built at that instant"
    );
    let out = scenario_at("yesterday");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CLAWBACK_DEMO_CLOCK=\"yesterday\"") && err.contains("RFC 3339"),
        "{err}"
    );
}
