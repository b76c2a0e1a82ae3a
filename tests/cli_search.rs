//! `clawback trace ingest` and `clawback search` as an operator runs them: the real binary, a
//! config file with a tenant, a data directory.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::process::{Command, Output};

const CONFIG: &str = r#"
[[tenant]]
name = "contoso"
kind = "microsoft365"
domains = ["contoso.com"]
tenant_id = "contoso.onmicrosoft.com"
client_id = "app"
client_secret = "inline"
endpoints = { login = "http://127.0.0.1:9", graph = "http://127.0.0.1:9" }
"#;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), CONFIG).unwrap();
        Env { dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_clawback"))
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(args)
            .env_remove("CLAWBACK_DATA_DIR")
            .env_remove("CLAWBACK_CONFIG")
            .output()
            .unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn corpus() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eml")
        .display()
        .to_string()
}

#[test]
fn ingest_prints_counts_and_is_idempotent() {
    let env = Env::new();
    let o = env.run(&["trace", "ingest", &corpus()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "indexed 20, merged 0, duplicate 2, rejected 6 (empty 1, binary 1, not_a_message 1, \
         no_message_headers 1, bad_verdict 2); verdicts 5: upgraded 1, unmatched 1\n"
    );
    let err = stderr(&o);
    assert!(err.contains("binary.eml: binary"), "{err}");
    assert!(err.contains("verdicts.jsonl:5: bad_verdict"), "{err}");
    assert!(env.dir.path().join("data/clawback.sqlite3").is_file());

    let o = env.run(&["trace", "ingest", &corpus()]);
    assert!(
        stdout(&o).starts_with("indexed 0, merged 0, duplicate 22, rejected 6"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn search_outputs_table_json_csv() {
    let env = Env::new();
    assert!(env.run(&["trace", "ingest", &corpus()]).status.success());

    let o = env.run(&["search", "from:evil.example disposition:malicious"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("TIME (UTC)") && lines[0].contains("DISPOSITION"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("2026-11-20 08:13:00  mallory@evil.example  Invoice 4411 attached"),
        "{out}"
    );
    assert!(lines[1].contains("malicious"), "{out}");

    let o = env.run(&["search", "--json", "tenant:contoso to:bob@contoso.com"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![
            "<dup2@fixtures.test>",
            "<journaled@evil.example>",
            "<mbox2@fixtures.test>"
        ]
    );
    let journaled = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["message_id"] == "<journaled@evil.example>")
        .unwrap();
    assert_eq!(journaled["received_at"], "2026-11-20T08:12:00+00:00");
    assert_eq!(journaled["delivered_to"].as_array().unwrap().len(), 3);

    let o = env.run(&["search", "--csv", "--limit", "3", ""]);
    let out = stdout(&o);
    let mut lines = out.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("received,tenant,message_id,sender,subject,")
    );
    assert_eq!(lines.count(), 3);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));

    let o = env.run(&["search", "--limit", "2", ""]);
    assert!(stderr(&o).contains("showing 1–2 of 20"), "{}", stderr(&o));
}

#[test]
fn malformed_query_exits_2_with_position() {
    let env = Env::new();
    let o = env.run(&["search", "invoice from:"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert_eq!(
        err,
        "error: query:1:14: expected a value after \"from:\"\n  invoice from:\n               ^\n"
    );
    let o = env.run(&["search", "-subject:x colour:red"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("error: query:1:12: unknown field \"colour:\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn group_folds_a_campaign() {
    let env = Env::new();
    let mail = env.dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    for (i, subject) in [
        "Invoice 100 due",
        "RE: Invoice 200 due",
        "[EXT] Invoice 300 due",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(
            mail.join(format!("{i}.eml")),
            format!(
                "From: billing@evil.example\nTo: u{i}@contoso.com\nSubject: {subject}\nMessage-ID: <c{i}@evil.example>\nDate: Fri, 20 Nov 2026 1{i}:00:00 +0000\n\nbody\n"
            ),
        )
        .unwrap();
    }
    std::fs::write(
        mail.join("other.eml"),
        "From: billing@evil.example\nTo: u9@contoso.com\nSubject: Something else\nMessage-ID: <o@evil.example>\nDate: Fri, 20 Nov 2026 09:00:00 +0000\n\nbody\n",
    )
    .unwrap();
    assert!(
        env.run(&["trace", "ingest", mail.to_str().unwrap()])
            .status
            .success()
    );
    let o = env.run(&["search", "--group", "--json", "from:billing@evil.example"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let groups = v.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v}");
    assert_eq!(groups[0]["normalized_subject"], "invoice # due");
    assert_eq!(groups[0]["messages"], 3);
    assert_eq!(groups[0]["recipients"], 3);
    assert_eq!(groups[0]["subject"], "[EXT] Invoice 300 due");
    assert_eq!(groups[1]["messages"], 1);
    let o = env.run(&["search", "--group", "from:billing@evil.example"]);
    let out = stdout(&o);
    assert!(out.lines().next().unwrap().contains("MESSAGES"), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
}
