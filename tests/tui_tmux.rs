//! A real terminal: tmux runs `clawback demo`, keys are sent with `send-keys`, the screen is
//! read with `capture-pane`. The operator retracts the campaign from all its contoso recipients
//! at depth 1 to Trash; the screen shows the job finished with the success count the scenario
//! predicts, and the lab (the demo's own, reached through the config it wrote) agrees.
//!
//! `.ci/run` installs tmux when it is missing; outside CI the test is skipped without tmux.

#![allow(clippy::unwrap_used)]

use clawback::config::Config;
use clawback::lab::demo::{self, CAMPAIGN_MESSAGE_ID, CONTOSO};
use clawback::model::Folder;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn send(&self, keys: &[&str]) {
        for k in keys {
            let ok = self
                .cmd()
                .args(["send-keys", "-t", &self.session, k])
                .status()
                .unwrap()
                .success();
            assert!(ok, "send-keys {k}");
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    fn send_literal(&self, text: &str) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", &self.session, "-l", text])
            .status()
            .unwrap()
            .success();
        assert!(ok, "send-keys -l {text}");
        std::thread::sleep(Duration::from_millis(100));
    }

    fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// Contoso copies a depth-1 retraction of the campaign acts on, from the scenario.
fn expected_copies() -> usize {
    let scenario = demo::build(7);
    let t = scenario.tenants.iter().find(|t| t.name == CONTOSO).unwrap();
    let granted: BTreeSet<&str> = t
        .domains
        .iter()
        .filter(|d| d.granted)
        .map(|d| d.name.as_str())
        .collect();
    let mut n = 0;
    for m in &t.messages {
        let parent = m.in_reply_to.as_ref().or(m.references.last());
        if m.message_id != CAMPAIGN_MESSAGE_ID && parent.is_none_or(|p| p != CAMPAIGN_MESSAGE_ID) {
            continue;
        }
        for c in &m.copies {
            let mb = c.mailbox.to_ascii_lowercase();
            let has_mailbox = t
                .users
                .iter()
                .any(|u| u.mailbox && u.address.eq_ignore_ascii_case(&mb));
            if mb != m.from.to_ascii_lowercase()
                && granted.contains(mb.rsplit('@').next().unwrap_or_default())
                && has_mailbox
                && !c.folder.is_gone()
                && !matches!(c.folder, Folder::SentItems | Folder::Drafts)
            {
                n += 1;
            }
        }
    }
    n
}

/// Moves to Deleted Items the lab recorded in contoso, via `/_lab/actions`.
fn lab_trash_moves(data_dir: &Path) -> usize {
    let config = Config::load(&data_dir.join("lab.toml")).unwrap();
    let base = config.tenants[0]
        .graph_url()
        .trim_end_matches('/')
        .to_string();
    let base = base.trim_end_matches("/v1.0").to_string();
    let body: serde_json::Value = reqwest::blocking_get(&format!("{base}/_lab/actions"));
    body["counts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["tenant"] == CONTOSO)
        .map(|c| {
            c["actions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a.as_str() == Some("move:deleteditems"))
                .count()
        })
        .sum()
}

mod reqwest {
    /// One GET with a throwaway runtime (the test itself is synchronous).
    pub fn blocking_get(url: &str) -> serde_json::Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            ::reqwest::get(url)
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        })
    }
}

#[test]
fn demo_in_tmux_retracts_the_campaign_at_depth_1_to_trash() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tmux is missing in CI: .ci/run must install it"
        );
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmux = Tmux {
        socket: format!("clawback-test-{}", std::process::id()),
        session: "demo".into(),
    };
    let command = format!(
        "{} --data-dir {} demo; sleep 30",
        env!("CARGO_BIN_EXE_clawback"),
        data.display()
    );
    let ok = tmux
        .cmd()
        .args([
            "new-session",
            "-d",
            "-s",
            "demo",
            "-x",
            "160",
            "-y",
            "48",
            &command,
        ])
        .env("TERM", "xterm-256color")
        .status()
        .unwrap()
        .success();
    assert!(ok, "tmux new-session");

    tmux.wait_for("the search results", |s| {
        s.contains("Search (") && s.contains("messages)")
    });
    tmux.send(&["/"]);
    tmux.send_literal(&format!("msgid:{CAMPAIGN_MESSAGE_ID} tenant:contoso"));
    tmux.send(&["Enter"]);
    tmux.wait_for("one result", |s| s.contains("Search (1 messages)"));
    tmux.send(&["Enter"]);
    tmux.wait_for("the recipients", |s| {
        s.contains("Recipients:") && s.contains("Included:") && s.contains("mailbox")
    });
    // All recipients, depth 1, action Junk -> Trash.
    tmux.send(&["a", "+", "x"]);
    tmux.wait_for("depth 1 and Trash", |s| {
        s.contains("Depth: 1") && s.contains("[Trash]")
    });
    tmux.send(&["p"]);
    tmux.wait_for("the plan", |s| s.contains("Apply Trash to"));
    tmux.send(&["Enter"]);
    let screen = tmux.wait_for("the job to finish", |s| s.contains("finished:"));

    let want = expected_copies();
    let line = screen
        .lines()
        .find(|l| l.contains("finished:"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&format!("finished: {want} succeeded, 0 failed")),
        "status line {line:?}, expected {want} succeeded"
    );
    assert_eq!(lab_trash_moves(&data), want, "the lab agrees");
    tmux.send(&["q"]);
}
