//! Access tokens kept across runs (issue 14, Build 4): two engines on one data dir, one after
//! the other as two runs would be, against the lab's demo (a Microsoft 365 tenant with a client
//! secret and a Google Workspace tenant with per-user tokens). Token requests are counted by
//! the lab; the file is read from the data dir.

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

mod lab_support;
use lab_support::synced_lab;

use clawback::config::Config;
use clawback::engine::Engine;
use clawback::engine::plan::RetractRequest;
use clawback::lab::demo::{self, CAMPAIGN_MESSAGE_ID, CONTOSO, FABRIKAM};
use clawback::lab::{LabOptions, LabServer};
use clawback::model::{RetractAction, Trigger};
use clawback::provider::token_file::TOKEN_FILE;
use clawback::store::Store;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn request() -> RetractRequest {
    RetractRequest {
        message_ids: vec![CAMPAIGN_MESSAGE_ID.into()],
        query: None,
        tenants: vec![CONTOSO.into(), FABRIKAM.into()],
        only: vec![],
        exclude: vec![],
        depth: 0,
        action: RetractAction::Junk,
        trigger: Trigger::Manual,
        reason: "token_cache".into(),
    }
}

/// Token requests the lab served (Microsoft and Google token endpoints).
fn token_requests(server: &LabServer) -> u64 {
    server
        .lab
        .stats
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(route, _)| route.starts_with("POST") && route.ends_with("/token"))
        .map(|(_, n)| n)
        .sum()
}

/// One run: an engine on the data dir plans the campaign in both tenants (a locate per
/// recipient, each Google user with a token of their own), then is dropped.
async fn run(config: &Config, data: &Path) -> usize {
    let engine = Engine::new(config.clone(), Store::open_in_dir(data).unwrap()).unwrap();
    let plan = engine.build_plan(request()).await.unwrap();
    assert!(
        plan.items.iter().any(|i| i.tenant == FABRIKAM)
            && plan.items.iter().any(|i| i.tenant == CONTOSO),
        "both tenants planned"
    );
    plan.items.len()
}

fn kept(data: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(data.join(TOKEN_FILE)).unwrap()).unwrap()
}

struct Setup {
    server: LabServer,
    config: Config,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let lab = synced_lab(&demo::build(7), LabOptions::default(), &[], 30).await;
    let data = lab.dir.path().join("data");
    drop(lab.store);
    Setup {
        server: lab.server,
        config: lab.config,
        data,
        _dir: lab.dir,
    }
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_fetches_no_token_and_the_file_is_private_and_never_logged() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();
    let s = setup().await;
    assert!(!s.data.join(TOKEN_FILE).exists());

    let before = token_requests(&s.server);
    let items = run(&s.config, &s.data).await;
    let first = token_requests(&s.server) - before;
    // The Microsoft app token and a token per Google user planned.
    assert!(first >= 2, "{first} token requests for {items} items");
    let file = kept(&s.data);
    let tokens = file["tokens"].as_object().unwrap();
    // Every token granted is kept; a few the token endpoint refuses (the demo's users
    // without a Gmail mailbox or outside the delegation), and a refusal is not kept.
    let refused = first - tokens.len() as u64;
    assert!(
        refused < first / 4,
        "{refused} of {first} not kept: {:?}",
        tokens.keys()
    );
    assert!(
        tokens.keys().any(|k| k.starts_with(&format!("{CONTOSO}|")))
            && tokens
                .keys()
                .any(|k| k.starts_with(&format!("{FABRIKAM}|")))
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.data.join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }

    let before = token_requests(&s.server);
    assert_eq!(run(&s.config, &s.data).await, items);
    assert_eq!(
        token_requests(&s.server) - before,
        refused,
        "the second run fetched (and signed) a token it had kept"
    );

    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("TRACE"), "no events captured");
    for (key, entry) in tokens {
        let token = entry["access_token"].as_str().unwrap();
        assert!(token.len() > 16, "{key}");
        assert!(!log.contains(token), "the token of {key} is in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_dropped_and_replaced() {
    let s = setup().await;
    run(&s.config, &s.data).await;
    // Every kept token revoked (the provider no longer knows them).
    let mut file = kept(&s.data);
    let n = file["tokens"].as_object().unwrap().len();
    for (i, entry) in file["tokens"]
        .as_object_mut()
        .unwrap()
        .values_mut()
        .enumerate()
    {
        entry["access_token"] = serde_json::json!(format!("revoked-{i}"));
    }
    std::fs::write(s.data.join(TOKEN_FILE), serde_json::to_vec(&file).unwrap()).unwrap();

    let before = token_requests(&s.server);
    run(&s.config, &s.data).await;
    // Each refused token was fetched again (the plan still located every copy) ...
    assert!(token_requests(&s.server) - before >= n as u64);
    // ... and the file keeps the new ones, none of the refused.
    let file = kept(&s.data);
    let tokens = file["tokens"].as_object().unwrap();
    assert_eq!(tokens.len(), n);
    assert!(
        tokens
            .values()
            .all(|e| !e["access_token"].as_str().unwrap().starts_with("revoked-")),
        "{tokens:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_is_ignored_and_token_cache_false_writes_none() {
    let s = setup().await;
    std::fs::create_dir_all(&s.data).unwrap();
    std::fs::write(s.data.join(TOKEN_FILE), b"\x00 not json").unwrap();
    run(&s.config, &s.data).await;
    assert!(kept(&s.data)["tokens"].as_object().unwrap().len() >= 2);

    let mut off = s.config.clone();
    off.auth.token_cache = false;
    std::fs::remove_file(s.data.join(TOKEN_FILE)).unwrap();
    let before = token_requests(&s.server);
    run(&off, &s.data).await;
    let first = token_requests(&s.server) - before;
    assert!(first >= 2);
    assert!(
        !s.data.join(TOKEN_FILE).exists(),
        "token_cache = false wrote the file"
    );
    let before = token_requests(&s.server);
    run(&off, &s.data).await;
    assert_eq!(token_requests(&s.server) - before, first, "nothing kept");
}

#[test]
fn auth_table_is_checked() {
    let path = Path::new("config.toml");
    let c = Config::parse("[auth]\ntoken_cache = false\n", path).unwrap();
    assert!(!c.auth.token_cache);
    assert!(Config::parse("", path).unwrap().auth.token_cache);
    let e = Config::parse("[auth]\ntoken_cach = false\n", path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("token_cach"), "{e}");
    let e = Config::parse("[auth]\ntoken_cache = \"no\"\n", path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.toml:2") && e.contains("boolean"), "{e}");
}
