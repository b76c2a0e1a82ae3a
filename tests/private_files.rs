//! Issue 11, files and transport: everything clawback writes is private (data dir 0700, files
//! 0600, an older looser store tightened), a config others may write is refused, a secret path
//! that is not a regular file is refused without being opened, and a plain-http endpoint to a
//! host that is not loopback is refused before any connection.

#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod lab_support;
use lab_support::synced_lab;

use clawback::lab::LabOptions;
use clawback::lab::demo::CAMPAIGN_MESSAGE_ID;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `clawback --config C --data-dir D ARGS…`, killed (and failed) after 60 s: a hang is a bug.
async fn run(config: &Path, data: &Path, args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_clawback"))
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("CLAWBACK_DATA_DIR")
        .env_remove("CLAWBACK_CONFIG")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .unwrap_or_else(|_| panic!("clawback {args:?} hung"))
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_clawback_writes_is_private() {
    let scenario = clawback::lab::scenario::demo(7);
    let lab = synced_lab(&scenario, LabOptions::default(), &[], 3650).await;
    drop(lab.store);
    let root = lab.dir.path();
    let data = root.join("data");
    // A store from an older clawback: world-readable, in a world-readable directory.
    chmod(&data, 0o755);
    for f in std::fs::read_dir(&data).unwrap() {
        chmod(&f.unwrap().path(), 0o644);
    }
    let config = root.join("private.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[audit]\nhead_file = \"heads.log\"\n",
            std::fs::read_to_string(root.join("lab.toml")).unwrap()
        ),
    )
    .unwrap();
    chmod(&config, 0o644); // readable by others is fine for a config; writable is not.

    let plan = root.join("plan.json");
    let policy = root.join("policy.toml");
    for args in [
        vec![
            "plan",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--action",
            "junk",
            "--out",
            plan.to_str().unwrap(),
        ],
        vec!["apply", plan.to_str().unwrap(), "--yes"],
        vec!["policy", "export", "--out", policy.to_str().unwrap()],
        vec!["watch", "--once"],
    ] {
        let o = run(&config, &data, &args).await;
        assert!(
            matches!(o.status.code(), Some(0 | 3)),
            "{args:?}: {}",
            text(&o)
        );
    }
    assert_eq!(mode(&data), 0o700, "data dir");
    let written = files_under(&data);
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    for expected in ["clawback.sqlite3", "watch.log"] {
        assert!(
            names.iter().any(|n| n.starts_with(expected)),
            "{expected} not in {names:?}"
        );
    }
    for f in written
        .iter()
        .chain([&plan, &policy, &root.join("heads.log")])
    {
        assert_eq!(mode(f), 0o600, "{} is {:o}", f.display(), mode(f));
    }
}

/// A lab config, its secret file and a data dir, for the refusals below.
async fn lab_config() -> (clawback::lab::LabServer, tempfile::TempDir) {
    let scenario = clawback::lab::scenario::demo(7);
    let server = clawback::lab::LabServer::start(
        &scenario,
        LabOptions::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    server.write_config(&dir.path().join("lab.toml")).unwrap();
    (server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_others_can_write_is_refused_with_the_chmod_to_run() {
    let (_server, dir) = lab_config().await;
    let config = dir.path().join("lab.toml");
    let data = dir.path().join("data");
    for m in [0o666, 0o664, 0o646] {
        chmod(&config, m);
        let o = run(&config, &data, &["jobs", "list"]).await;
        assert_eq!(o.status.code(), Some(2), "{m:o}: {}", text(&o));
        let t = text(&o);
        assert!(
            t.contains(&format!("config file is writable by others (mode 0{m:o})"))
                && t.contains(&format!("chmod go-w {}", config.display())),
            "{t}"
        );
    }
    chmod(&config, 0o600);
    let o = run(&config, &data, &["jobs", "list"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_path_that_is_a_fifo_is_refused_not_read() {
    let (_server, dir) = lab_config().await;
    let config = dir.path().join("lab.toml");
    let text_before = std::fs::read_to_string(&config).unwrap();
    // Point contoso's secret at a FIFO: opening it for reading would block forever.
    let fifo = dir.path().join("secret.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // The lab names its secrets relative to the config file.
    let contoso_secret = "client_secret_file = \"lab.contoso.secret\"";
    assert!(text_before.contains(contoso_secret), "{text_before}");
    std::fs::write(
        &config,
        text_before.replace(
            contoso_secret,
            &format!("client_secret_file = {:?}", fifo.to_str().unwrap()),
        ),
    )
    .unwrap();
    let o = run(&config, &dir.path().join("data"), &["trace", "sync"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "{}: a secret must be a regular file, this is a FIFO (named pipe)",
            fifo.display()
        )),
        "{}",
        text(&o)
    );
}

/// A non-loopback address of this machine, if it has one (the refusal is checked either way;
/// "before any connection" needs a listener the endpoint really points at).
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_real_host_is_refused_before_any_connection() {
    let (_server, dir) = lab_config().await;
    let config = dir.path().join("lab.toml");
    let text_before = std::fs::read_to_string(&config).unwrap();
    let listener = non_loopback_ip().map(|ip| std::net::TcpListener::bind((ip, 0)).unwrap());
    let host = match &listener {
        Some(l) => l.local_addr().unwrap().to_string(),
        None => "graph.example.net".to_string(),
    };
    if let Some(l) = &listener {
        l.set_nonblocking(true).unwrap();
    }
    // Every contoso endpoint moved to plain http on that host.
    let lab_url = text_before
        .lines()
        .find_map(|l| l.trim().strip_prefix("graph = \""))
        .and_then(|u| u.split('"').next())
        .unwrap()
        .to_string();
    let insecure = text_before.replacen(&lab_url, &format!("http://{host}"), 2);
    assert_ne!(insecure, text_before);
    std::fs::write(&config, &insecure).unwrap();
    let data = dir.path().join("data");
    for args in [vec!["trace", "sync"], vec!["doctor"], vec!["jobs", "list"]] {
        let o = run(&config, &data, &args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("is plain http:// to a host that is not loopback"),
            "{args:?}: {}",
            text(&o)
        );
    }
    if let Some(l) = &listener {
        assert!(
            matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a connection reached the http endpoint"
        );
    }
    // Opting in (a test proxy) is accepted, with a warning on every run.
    let opted = insecure.replacen(
        "kind = \"microsoft365\"",
        "kind = \"microsoft365\"\nallow_insecure_http = true",
        1,
    );
    std::fs::write(&config, opted).unwrap();
    let o = run(&config, &data, &["jobs", "list"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("is plain http:// (allow_insecure_http = true)"),
        "{}",
        text(&o)
    );
}

/// A store opened in a shared directory (sticky and world-writable, like /tmp and /var/tmp)
/// leaves the directory as it is — making /var/tmp 0700 broke every other user of it — and
/// keeps its own files private; a directory of its own is made private.
#[test]
fn a_store_in_a_shared_directory_leaves_the_directory_alone_and_its_files_private() {
    let top = tempfile::tempdir().unwrap();
    let shared = top.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    let store = clawback::store::Store::open(&shared.join("bench.sqlite3")).unwrap();
    drop(store);
    let full = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o7777;
    assert_eq!(full, 0o1777, "the shared directory is untouched");
    assert_eq!(mode(&shared.join("bench.sqlite3")), 0o600);

    let own = top.path().join("own");
    std::fs::create_dir(&own).unwrap();
    chmod(&own, 0o755);
    drop(clawback::store::Store::open(&own.join("clawback.sqlite3")).unwrap());
    assert_eq!(
        mode(&own) & 0o777,
        0o700,
        "a directory of its own is made private"
    );
}
