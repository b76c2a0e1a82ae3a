//! Password authentication to a PostgreSQL store (issue 17), with the real binary against a
//! private cluster that asks TCP clients for a scram-sha-256 password: the password reaches the
//! server from a 0600 `[store] password_file`, a `[store] password_env` variable, or libpq's
//! `PGPASSWORD` — and from nowhere else. A wrong, missing or exposed password is a clear error
//! that names where to put it and never shows the password.

use clawback::store::pg::testing::{ClusterOptions, server_bin_dir, start_cluster};
use clawback::store::pg::{PgConn, PgLocator};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PASSWORD: &str = "Corr3ct-h0rse-battery";
const WRONG: &str = "n0t-the-passw0rd";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `clawback --config CONFIG --data-dir DATA audit head`, with only `env` set of the store's
/// variables.
fn audit_head(config: &Path, data: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clawback"));
    c.arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["audit", "head"])
        .env_remove("CLAWBACK_CONFIG")
        .env_remove("CLAWBACK_STORE_URL")
        .env_remove("PGPASSWORD")
        .env_remove("SOC_DB_PASSWORD");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run clawback")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_private(path: &Path, content: &str, mode: u32) {
    std::fs::write(path, content).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn the_store_password_comes_from_a_private_file_or_the_environment_and_is_never_shown() {
    if server_bin_dir().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL is missing in CI: .ci/run must install it"
        );
        eprintln!("skipped: needs a PostgreSQL server");
        return;
    }
    let port = free_port();
    let cluster = start_cluster(&ClusterOptions {
        tcp_port: Some(port),
        password_auth: true,
        ..ClusterOptions::default()
    })
    .expect("a cluster asking for passwords");
    // The analyst's role and database, set up over the (trusted) Unix socket.
    let admin = PgConn::connect(&PgLocator::parse(&cluster.url, None).expect("admin url"))
        .expect("admin connection");
    admin
        .batch(&format!("CREATE ROLE analyst LOGIN PASSWORD '{PASSWORD}'"))
        .expect("role");
    admin
        .batch("CREATE DATABASE soc OWNER analyst")
        .expect("database");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = |extra: &str| -> PathBuf {
        let path = dir.path().join("clawback.toml");
        std::fs::write(
            &path,
            format!("[store]\nurl = \"postgres://analyst@127.0.0.1:{port}/soc\"\n{extra}"),
        )
        .expect("config");
        path
    };
    let data = dir.path().join("data");
    let pw = dir.path().join("store.pw");

    // A 0600 file (a trailing newline is not part of the password).
    write_private(&pw, &format!("{PASSWORD}\n"), 0o600);
    let cfg = config("password_file = \"store.pw\"\n");
    let out = audit_head(&cfg, &data, &[]);
    assert!(out.status.success(), "password_file: {}", text(&out));
    // The binary really reached the server as the analyst: the store's schema is the
    // analyst's, created by that run.
    let owner = schema_owner(&cluster.url);
    assert_eq!(owner.as_deref(), Some("analyst"), "the schema's owner");

    // The wrong password: the server's refusal, without the password.
    write_private(&pw, WRONG, 0o600);
    let out = audit_head(&cfg, &data, &[]);
    let said = text(&out);
    assert!(!out.status.success(), "a wrong password is refused: {said}");
    assert!(said.contains("password authentication failed"), "{said}");
    assert!(
        said.contains("[store] password_file"),
        "says where it comes from: {said}"
    );
    assert!(!said.contains(WRONG), "the password is never shown: {said}");

    // A file others may read is refused before anything is sent, and named.
    write_private(&pw, PASSWORD, 0o644);
    let out = audit_head(&cfg, &data, &[]);
    let said = text(&out);
    assert!(!out.status.success(), "a readable password file: {said}");
    assert!(said.contains("store.pw"), "names the file: {said}");
    assert!(!said.contains(PASSWORD), "{said}");

    // A named variable.
    let cfg = config("password_env = \"SOC_DB_PASSWORD\"\n");
    let out = audit_head(&cfg, &data, &[("SOC_DB_PASSWORD", PASSWORD)]);
    assert!(out.status.success(), "password_env: {}", text(&out));
    // …that is not set: says which.
    let out = audit_head(&cfg, &data, &[]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("SOC_DB_PASSWORD"),
        "names the variable: {said}"
    );

    // libpq's PGPASSWORD, with neither configured.
    let cfg = config("");
    let out = audit_head(&cfg, &data, &[("PGPASSWORD", PASSWORD)]);
    assert!(out.status.success(), "PGPASSWORD: {}", text(&out));
    // No password anywhere: the server asks and we say where one goes.
    let out = audit_head(&cfg, &data, &[]);
    let said = text(&out);
    assert!(!out.status.success(), "no password: {said}");
    assert!(said.contains("[store] password_file"), "{said}");

    // In the URL: refused, and the config's password is not echoed.
    let path = dir.path().join("clawback.toml");
    std::fs::write(
        &path,
        format!("[store]\nurl = \"postgres://analyst:{PASSWORD}@127.0.0.1:{port}/soc\"\n"),
    )
    .expect("config");
    let out = audit_head(&path, &data, &[]);
    let said = text(&out);
    assert!(!out.status.success(), "a password in the URL: {said}");
    assert!(said.contains("password_file"), "says where it goes: {said}");
    assert!(!said.contains(PASSWORD), "{said}");
}

/// The owner of the store's schema-version table in the analyst's database, read by the admin
/// over the trusted Unix socket.
fn schema_owner(admin_url: &str) -> Option<String> {
    let url = admin_url.replace("dbname=postgres", "dbname=soc");
    let conn = PgConn::connect(&PgLocator::parse(&url, None).expect("admin url")).expect("admin");
    conn.query_opt(
        "SELECT tableowner::text FROM pg_tables WHERE tablename = 'clawback_schema'",
        &[],
    )
    .expect("pg_tables")
    .map(|r| r.get(0))
}
