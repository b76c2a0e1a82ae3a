//! Throwaway PostgreSQL for tests and benchmarks (not used by the product).
//!
//! `CLAWBACK_TEST_PG_URL` names a server to use (CI's `.ci/run` starts one; any role that may
//! `CREATE DATABASE` will do). Without it, the first test of a process that needs PostgreSQL
//! starts a private cluster: `initdb` into a temporary directory, `postgres` on a Unix socket in
//! it (no TCP port), run as the `postgres` account when we are root (the server refuses root).
//! A watchdog shell stops the server and removes the directory when the test process ends.
//! Every caller gets a database of its own.

use super::PgLocator;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Environment variable naming a PostgreSQL server for the tests.
pub const TEST_URL_ENV: &str = "CLAWBACK_TEST_PG_URL";

/// The server the tests of this process use: a connection string to an admin database.
fn server() -> Result<&'static str, String> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var(TEST_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Ok(url),
            _ => start_private_cluster(),
        })
        .as_deref()
        .map_err(|e| e.clone())
}

/// A new, empty database on the test server, as a locator (no schema yet: opening a store
/// migrates it).
pub fn fresh_database() -> Result<PgLocator, String> {
    let admin = server()?;
    let admin_loc = PgLocator::parse(admin, None).map_err(|e| e.to_string())?;
    let conn = super::PgConn::connect(&admin_loc).map_err(|e| e.to_string())?;
    let name = format!("clawback_test_{}", uuid::Uuid::new_v4().simple());
    conn.batch(&format!("CREATE DATABASE {name}"))
        .map_err(|e| e.to_string())?;
    PgLocator::parse(&with_database(admin, &name), None).map_err(|e| e.to_string())
}

/// A new database as [`fresh_database`], or `None` — said on stderr — where no PostgreSQL
/// server can be had (none installed, `CLAWBACK_TEST_PG_URL` unset) outside CI. In CI (`CI` set)
/// a missing server fails: `.ci/run` must install it.
pub fn fresh_database_or_skip() -> Option<PgLocator> {
    if std::env::var_os(TEST_URL_ENV).is_none() && server_bin_dir().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL is missing in CI: .ci/run must install it"
        );
        eprintln!(
            "skipped on PostgreSQL: no server installed (apt-get install postgresql, or set {TEST_URL_ENV})"
        );
        return None;
    }
    match fresh_database() {
        Ok(l) => Some(l),
        Err(e) => panic!("a PostgreSQL server for the tests: {e}"),
    }
}

/// The same connection string naming another database.
fn with_database(conn: &str, db: &str) -> String {
    if super::is_postgres_url(conn)
        && let Ok(mut u) = url::Url::parse(conn)
    {
        u.set_path(&format!("/{db}"));
        return u.to_string();
    }
    let mut parts: Vec<String> = conn
        .split_whitespace()
        .filter(|kv| !kv.starts_with("dbname="))
        .map(str::to_string)
        .collect();
    parts.push(format!("dbname={db}"));
    parts.join(" ")
}

/// The directory holding `initdb` and `postgres`: `$PG_BIN`, the newest
/// `/usr/lib/postgresql/*/bin` (Debian, Ubuntu), or `PATH`.
pub fn server_bin_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("PG_BIN").map(PathBuf::from)
        && d.join("initdb").exists()
    {
        return Some(d);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p).find(|d| d.join("initdb").exists() && d.join("postgres").exists())
    })
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A command run as the `postgres` account when we are root.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Where the cluster directory goes: the temporary directory, unless we are root and the server
/// account could not reach into it (a 0700 `/tmp`); then the first sticky world-writable one.
fn cluster_parent() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let tmp = std::env::temp_dir();
    if !is_root() {
        return tmp;
    }
    let others_may_enter = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    };
    [
        tmp.clone(),
        PathBuf::from("/var/tmp"),
        PathBuf::from("/dev/shm"),
    ]
    .into_iter()
    .find(|p| others_may_enter(p))
    .unwrap_or(tmp)
}

fn start_private_cluster() -> Result<String, String> {
    start_cluster(&ClusterOptions::default()).map(|c| c.url)
}

/// How a private cluster listens.
#[derive(Debug, Default, Clone)]
pub struct ClusterOptions {
    /// Also listen on 127.0.0.1 at this port (TCP), else only on the Unix socket.
    pub tcp_port: Option<u16>,
    /// TCP connections must give their password (scram-sha-256); the Unix socket stays
    /// trusted for setting up roles.
    pub password_auth: bool,
    /// Offer TLS with this certificate and key (PEM files; copied into the cluster).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A private cluster: its Unix-socket connection string and its directory.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub url: String,
    pub dir: PathBuf,
}

/// Starts a private cluster (stopped and removed when this process ends).
pub fn start_cluster(options: &ClusterOptions) -> Result<Cluster, String> {
    let bin = server_bin_dir().ok_or_else(|| {
        format!(
            "PostgreSQL tests need a server: install the distribution's PostgreSQL server package (Debian: apt-get install postgresql), set PG_BIN to its bin directory, or set {TEST_URL_ENV}"
        )
    })?;
    let dir = cluster_parent().join(format!(
        "clawback-pg-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let data = dir.join("data");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if is_root() {
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or("running as root and there is no `postgres` account to run the server as")?;
        nix::unistd::chown(&dir, Some(user.uid), Some(user.gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let out = as_server_user(&bin.join("initdb"))
        .args([
            "--auth-local=trust",
            if options.password_auth {
                "--auth-host=scram-sha-256"
            } else {
                "--auth-host=trust"
            },
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut extra = String::new();
    if options.tcp_port.is_some() {
        extra.push_str(" -c listen_addresses=127.0.0.1");
    } else {
        extra.push_str(" -c listen_addresses=''");
    }
    if let Some((cert, key)) = &options.tls {
        // The server insists on a private key file that only it can read.
        for (src, name) in [(cert, "server.crt"), (key, "server.key")] {
            let dst = data.join(name);
            std::fs::copy(src, &dst).map_err(|e| format!("{}: {e}", src.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("{}: {e}", dst.display()))?;
            if is_root()
                && let Some(user) = nix::unistd::User::from_name("postgres").ok().flatten()
            {
                nix::unistd::chown(&dst, Some(user.uid), Some(user.gid))
                    .map_err(|e| format!("chown {}: {e}", dst.display()))?;
            }
        }
        extra.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
    }
    // The server, and a watchdog that stops it and removes the cluster once this process ends.
    let postgres = bin.join("postgres");
    // setpriv execs (no fork in between), so `$pid` is the server itself.
    let runner = if is_root() {
        "setpriv --reuid=postgres --regid=postgres --init-groups "
    } else {
        ""
    };
    let script = format!(
        "{runner}'{pg}' -D '{data}' -k '{dir}' -p {port}{extra} -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
         >'{dir}/log' 2>&1 & pid=$!; \
         while kill -0 {me} 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 0.5; done; \
         kill -INT $pid 2>/dev/null; wait $pid; rm -rf '{dir}'",
        pg = postgres.display(),
        data = data.display(),
        dir = dir.display(),
        me = std::process::id(),
        port = options.tcp_port.unwrap_or(5432),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start postgres: {e}"))?;
    let url = format!(
        "host={} port={} user=postgres dbname=postgres",
        dir.display(),
        options.tcp_port.unwrap_or(5432)
    );
    let locator = PgLocator::parse(&url, None).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match super::PgConn::connect(&locator) {
            Ok(_) => return Ok(Cluster { url, dir }),
            Err(e) if Instant::now() > deadline => {
                let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                return Err(format!("postgres did not start: {e}\n{log}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
