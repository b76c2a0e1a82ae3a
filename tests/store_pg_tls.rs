//! TLS to a PostgreSQL store by libpq's `sslmode` conventions (issue 17): a private cluster
//! offering TLS with a certificate for `localhost` from a test CA (made with the openssl tool).

use clawback::store::pg::testing::{ClusterOptions, start_cluster};
use clawback::store::pg::{PgConn, PgLocator};
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl tool");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for `localhost` signed by it, and an unrelated CA.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=clawback test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-days",
            "2",
            "-subj",
            "/CN=someone else",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Whether the connection a locator makes is encrypted, as the server sees it.
fn encrypted(url: &str) -> Result<bool, String> {
    let loc = PgLocator::parse(url, None).map_err(|e| e.to_string())?;
    let conn = PgConn::connect(&loc).map_err(|e| e.to_string())?;
    let row = conn
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[test]
fn sslmode_is_honoured_as_libpq_defines_it() {
    let openssl_found = Command::new("openssl").arg("version").output().is_ok();
    if clawback::store::pg::testing::server_bin_dir().is_none() || !openssl_found {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL or openssl is missing in CI: .ci/run must install them"
        );
        eprintln!("skipped: needs a PostgreSQL server and the openssl tool");
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    certificates(certs.path());
    let port = free_port();
    start_cluster(&ClusterOptions {
        tcp_port: Some(port),
        tls: Some((
            certs.path().join("server.crt"),
            certs.path().join("server.key"),
        )),
        ..ClusterOptions::default()
    })
    .expect("a TLS cluster");
    let ca = certs.path().join("ca.pem");
    let other = certs.path().join("other.pem");
    let url =
        |host: &str, extra: &str| format!("postgres://postgres@{host}:{port}/postgres?{extra}");
    let rooted = |host: &str, mode: &str, root: &Path| {
        url(
            host,
            &format!("sslmode={mode}&sslrootcert={}", root.display()),
        )
    };

    // verify-full: the chain and the name.
    assert_eq!(
        encrypted(&rooted("localhost", "verify-full", &ca)),
        Ok(true)
    );
    let e = encrypted(&rooted("127.0.0.1", "verify-full", &ca))
        .expect_err("the certificate does not name 127.0.0.1");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // verify-ca: the chain only.
    assert_eq!(encrypted(&rooted("127.0.0.1", "verify-ca", &ca)), Ok(true));
    // A server whose certificate chains to another CA is refused.
    let e = encrypted(&rooted("localhost", "verify-full", &other)).expect_err("not our CA");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // The key=value form too.
    assert_eq!(
        encrypted(&format!(
            "host=localhost port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
            ca.display()
        )),
        Ok(true)
    );
    // require: encrypted; disable: not.
    let home_root = std::env::var_os("HOME")
        .map(|h| Path::new(&h).join(".postgresql/root.crt").exists())
        .unwrap_or(false);
    if !home_root {
        assert_eq!(encrypted(&url("localhost", "sslmode=require")), Ok(true));
        assert_eq!(
            encrypted(&url("localhost", "")),
            Ok(true),
            "prefer is the default"
        );
        // verify-* without roots to trust is refused before connecting, as libpq does.
        let e =
            PgLocator::parse(&url("localhost", "sslmode=verify-full"), None).expect_err("no roots");
        assert!(e.to_string().contains("sslrootcert"), "{e}");
    }
    assert_eq!(encrypted(&url("localhost", "sslmode=disable")), Ok(false));
    // The password never shows, whatever the TLS settings.
    assert!(PgLocator::has_password(&format!(
        "postgres://soc:pw@localhost/x?sslmode=verify-full&sslrootcert={}",
        ca.display()
    )));
}
