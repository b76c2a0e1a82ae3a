//! A real terminal: tmux runs `clawback demo`, keys are sent with `send-keys`, the screen is
//! read with `capture-pane`. The operator retracts the campaign across both tenants with two
//! recipients excluded at depth 1 to Junk; the screen shows the job finished with the success
//! count the scenario predicts, and the lab (the demo's own, reached through the config it
//! wrote) agrees copy by copy.
//!
//! `.ci/run` installs tmux when it is missing; outside CI the test is skipped without tmux.

#![allow(clippy::unwrap_used)]

use clawback::config::Config;
use clawback::lab::demo::{self, CAMPAIGN_MESSAGE_ID};
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

    /// Several keys in one `send-keys`: they reach the console together, as a fast typist's.
    fn send_together(&self, keys: &[&str]) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", &self.session])
            .args(keys)
            .status()
            .unwrap()
            .success();
        assert!(ok, "send-keys {keys:?}");
    }

    fn resize(&self, width: u16, height: u16) {
        let ok = self
            .cmd()
            .args([
                "resize-window",
                "-t",
                &self.session,
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "resize-window {width}x{height}");
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

impl Tmux {
    /// `clawback demo` (data in `data`) in a new detached session of `width` x `height` on a
    /// socket of its own, once its search results show.
    fn demo(socket: &str, width: u16, height: u16, data: &Path) -> Tmux {
        let tmux = Tmux {
            socket: format!("{socket}{}", std::process::id()),
            session: "demo".into(),
        };
        let command = format!(
            "{} --data-dir {} demo; sleep 30",
            env!("CARGO_BIN_EXE_clawback"),
            data.display()
        );
        let ok = tmux
            .cmd()
            .args(["new-session", "-d", "-s", "demo", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg(&command)
            .env("TERM", "xterm-256color")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux new-session");
        tmux.wait_for("the search results", |s| {
            s.contains("Search (") && s.contains("messages)")
        });
        tmux
    }
}

impl Tmux {
    /// From the Search pane: searches the campaign (as delivered to contoso) and opens its
    /// recipients, in both tenants.
    fn open_the_campaign(&self) {
        self.send(&["/"]);
        self.send_literal(&format!("msgid:{CAMPAIGN_MESSAGE_ID} tenant:contoso"));
        self.send(&["Enter"]);
        self.wait_for("one result", |s| s.contains("Search (1 message)"));
        self.send(&["Enter"]);
        self.wait_for("the recipients of both tenants", |s| {
            s.contains("Recipients (2 tenants)") && s.contains("Included:")
        });
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// Copies a depth-1 retraction of the campaign acts on, from the scenario, as (tenant/mailbox,
/// Message-ID), leaving out the `excluded` mailboxes. Opening the campaign opens it in every
/// tenant that holds it (contoso and fabrikam).
fn expected_copies(excluded: &[String]) -> BTreeSet<(String, String)> {
    let scenario = demo::build(7);
    let mut out = BTreeSet::new();
    for t in &scenario.tenants {
        let granted: BTreeSet<&str> = t
            .domains
            .iter()
            .filter(|d| d.granted)
            .map(|d| d.name.as_str())
            .collect();
        for m in &t.messages {
            let parent = m.in_reply_to.as_ref().or(m.references.last());
            if m.message_id != CAMPAIGN_MESSAGE_ID
                && parent.is_none_or(|p| p != CAMPAIGN_MESSAGE_ID)
            {
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
                    && !excluded.contains(&mb)
                {
                    out.insert((format!("{}/{mb}", t.name), m.message_id.clone()));
                }
            }
        }
    }
    out
}

/// Two campaign recipients to exclude, one per tenant: inbox copies in granted domains.
fn two_to_exclude() -> Vec<String> {
    let all = expected_copies(&[]);
    ["contoso/", "fabrikam/"]
        .iter()
        .map(|prefix| {
            all.iter()
                .filter(|(k, mid)| k.starts_with(prefix) && mid == CAMPAIGN_MESSAGE_ID)
                .map(|(k, _)| k.trim_start_matches(prefix).to_string())
                .next_back()
                .unwrap()
        })
        .collect()
}

/// The demo lab's base URL, from the config the demo wrote.
fn lab_base(data_dir: &Path) -> String {
    let config = Config::load(&data_dir.join("lab.toml")).unwrap();
    let base = config.tenants[0]
        .graph_url()
        .trim_end_matches('/')
        .to_string();
    base.trim_end_matches("/v1.0").to_string()
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

/// Issue 12's cross-tenant flow in a real terminal: the campaign opened from its contoso row
/// covers both tenants; two recipients (one per tenant) are unticked through the filter; depth 1;
/// Junk. The lab then holds every predicted copy in Junk, moved exactly once, and the two
/// excluded mailboxes untouched at every depth.
#[test]
fn demo_in_tmux_retracts_the_campaign_across_tenants_with_two_exclusions_at_depth_1() {
    if !tmux_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmux = Tmux::demo("clawback-test-", 160, 48, &data);
    // Metrics loaded once before the job: it must follow the job without a refresh key.
    tmux.send(&["4"]);
    tmux.wait_for("metrics before the job", |s| {
        s.contains("No retractions in the last 24h")
    });
    tmux.send(&["1"]);
    tmux.open_the_campaign();
    // Untick two recipients through the filter, then clear it.
    let excluded = two_to_exclude();
    for address in &excluded {
        tmux.send(&["/"]);
        tmux.send_literal(address);
        tmux.send(&["Enter"]);
        tmux.wait_for(&format!("only {address}"), |s| {
            s.contains(address.as_str()) && !s.contains("Loading")
        });
        tmux.send(&["space"]);
        tmux.send(&["/"]);
        for _ in 0..address.len() {
            tmux.send_together(&["BSpace"]);
        }
        tmux.send(&["Enter"]);
    }
    tmux.send(&["+"]);
    tmux.wait_for("depth 1", |s| s.contains("Depth: 1"));
    tmux.send(&["p"]);
    tmux.wait_for("the plan", |s| s.contains("Apply Junk Email to"));
    tmux.send(&["Enter"]);
    let screen = tmux.wait_for("the job to finish", |s| s.contains("finished:"));

    let want = expected_copies(&excluded);
    let line = screen
        .lines()
        .find(|l| l.contains("finished:"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&format!("finished: {} succeeded, 0 failed", want.len())),
        "status line {line:?}, expected {} succeeded",
        want.len()
    );
    // The lab's word, copy by copy.
    let copies = lab_copies(&lab_base(&data));
    for ((mailbox, mid), (folder, actions)) in &copies {
        let bare = mailbox.split_once('/').map(|x| x.1).unwrap_or_default();
        if want.contains(&(mailbox.clone(), mid.clone())) {
            assert_eq!((folder.as_str(), *actions), ("junk", 1), "{mailbox} {mid}");
        } else if excluded.iter().any(|e| e == bare) {
            assert_eq!(*actions, 0, "excluded {mailbox} {mid} was touched");
        }
    }
    let moved = copies.values().filter(|(_, a)| *a > 0).count();
    assert_eq!(
        moved,
        want.len(),
        "exactly the predicted copies were acted on"
    );
    // The Metrics pane, loaded before the job and not refreshed by hand, says what
    // `clawback metrics --json` says.
    let cli = Command::new(env!("CARGO_BIN_EXE_clawback"))
        .arg("--config")
        .arg(data.join("lab.toml"))
        .arg("--data-dir")
        .arg(&data)
        .args(["metrics", "--json", "--since", "24h"])
        .env_remove("CLAWBACK_CONFIG")
        .output()
        .unwrap();
    let cli: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    let total = cli["total"].as_u64().unwrap();
    assert_eq!(total, want.len() as u64, "{cli}");
    tmux.send(&["4"]);
    tmux.wait_for("the Metrics pane to follow the job", |s| {
        metrics_total(s) == Some(total)
    });
    // The audit entry of the applied plan names the exclusions and the depth.
    let audit = Command::new(env!("CARGO_BIN_EXE_clawback"))
        .arg("--config")
        .arg(data.join("lab.toml"))
        .arg("--data-dir")
        .arg(&data)
        .args(["audit", "list"])
        .env_remove("CLAWBACK_CONFIG")
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&audit.stdout).to_string();
    let applied = audit
        .lines()
        .find(|l| l.contains("plan_applied"))
        .unwrap_or_else(|| panic!("no plan_applied entry:\n{audit}"));
    assert!(applied.contains("depth=1"), "{applied}");
    for address in &excluded {
        assert!(applied.contains(address.as_str()), "{address}: {applied}");
    }
    tmux.send(&["q"]);
}

/// The Metrics pane's Total card, as shown.
fn metrics_total(screen: &str) -> Option<u64> {
    let lines: Vec<&str> = screen.lines().collect();
    let at = lines.iter().position(|l| l.contains("+Total"))?;
    let value = lines.get(at + 1)?.trim_start_matches(['|', ' ']);
    let digits: String = value
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn tmux_available() -> bool {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tmux is missing in CI: .ci/run must install it"
        );
        eprintln!("skipped: tmux is not installed");
        return false;
    }
    true
}

/// The campaign and its direct replies / forwards (what depth 1 reaches), from the scenario.
fn depth_1_messages() -> BTreeSet<String> {
    let scenario = demo::build(7);
    scenario
        .tenants
        .iter()
        .flat_map(|t| &t.messages)
        .filter(|m| {
            let parent = m.in_reply_to.as_ref().or(m.references.last());
            m.message_id == CAMPAIGN_MESSAGE_ID || parent.is_some_and(|p| p == CAMPAIGN_MESSAGE_ID)
        })
        .map(|m| m.message_id.clone())
        .collect()
}

/// Every copy of those messages at the lab, both tenants (`/_lab/messages`): (tenant/mailbox,
/// Message-ID)
/// → (folder, API actions on it).
fn lab_copies(base: &str) -> std::collections::BTreeMap<(String, String), (String, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for mid in depth_1_messages() {
        let enc = percent_encoding::utf8_percent_encode(&mid, percent_encoding::NON_ALPHANUMERIC);
        let body = reqwest::blocking_get(&format!("{base}/_lab/messages?message_id={enc}"));
        for c in body["copies"].as_array().unwrap() {
            out.insert(
                (
                    format!(
                        "{}/{}",
                        c["tenant"].as_str().unwrap(),
                        c["mailbox"].as_str().unwrap()
                    ),
                    mid.clone(),
                ),
                (
                    c["folder"].as_str().unwrap().to_string(),
                    c["actions"].as_u64().unwrap(),
                ),
            );
        }
    }
    out
}

/// The outcome position on the Jobs pane's detail border (`98-105 of 105`): (first, last, of).
/// The detail box is the lower one: the job list's border above it has a position too.
fn outcome_position(screen: &str) -> Option<(u64, u64, u64)> {
    screen.lines().rev().find_map(|l| {
        let text = l.strip_prefix('+')?.strip_suffix('+')?;
        let text = text.trim_matches('-').trim();
        let (range, of) = text.split_once(" of ")?;
        let (first, last) = range.split_once('-')?;
        Some((first.parse().ok()?, last.parse().ok()?, of.parse().ok()?))
    })
}

/// Issue 12 in a real terminal at 80x24: keys do nothing behind the too-small screen (the plan
/// stays unapplied), `q` right behind the confirmation asks, the outcomes scroll to the last
/// one, undo is shown as a restore and puts every copy back (the lab says so), and a second
/// undo of the same job is refused.
#[test]
fn demo_in_tmux_at_80x24_too_small_quit_scroll_and_undo() {
    if !tmux_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmux = Tmux::demo("clawback-test-jobs-", 80, 24, &data);
    tmux.send(&["/"]);
    tmux.send_literal(&format!("msgid:{CAMPAIGN_MESSAGE_ID} tenant:contoso"));
    tmux.send(&["Enter"]);
    tmux.wait_for("one result", |s| s.contains("Search (1 message)"));
    tmux.send(&["Enter"]);
    tmux.wait_for("the recipients", |s| {
        s.contains("Recipients") && s.contains("Included:") && s.contains("mailbox")
    });
    tmux.send(&["a", "+"]);
    tmux.wait_for("depth 1", |s| s.contains("Depth: 1"));
    tmux.send(&["p"]);
    tmux.wait_for("the plan", |s| s.contains("Apply Junk Email to"));
    let base = lab_base(&data);
    let before = lab_copies(&base);
    assert!(
        before.values().all(|(_, actions)| *actions == 0),
        "{before:?}"
    );

    // Too small: enter (and y) must not apply the plan nobody can see.
    tmux.resize(70, 20);
    tmux.wait_for("the too-small screen", |s| {
        s.contains("needs a larger terminal")
    });
    tmux.send(&["Enter", "y", "Enter"]);
    tmux.resize(80, 24);
    // Keys are read in order: the plan still open after the resize means they did nothing.
    tmux.wait_for("the plan again", |s| s.contains("Apply Junk Email to"));
    assert!(
        lab_copies(&base).values().all(|(_, actions)| *actions == 0),
        "a key behind the too-small screen acted"
    );

    // q right behind the confirmation, mid-job: asked, not quit.
    tmux.send_together(&["Enter", "q"]);
    let screen = tmux.wait_for("the quit question", |s| s.contains("Quit?"));
    assert!(screen.contains("y quit anyway"), "{screen}");
    tmux.send(&["n"]);
    let want = expected_copies(&[]).len();
    let screen = tmux.wait_for("the job to finish", |s| {
        s.contains("Job 1 (finished)") && !s.contains("Quit?")
    });
    assert!(
        screen.contains(&format!("] {want} ok, 0 failed")),
        "{screen}"
    );

    // The outcomes scroll to the last one: the border says so.
    tmux.send(&["Enter", "G"]);
    let screen = tmux.wait_for("the last outcome", |s| {
        outcome_position(s).is_some_and(|(first, last, of)| first > 1 && last == of)
    });
    let (_, last, of) = outcome_position(&screen).unwrap();
    assert!(of >= want as u64, "{screen}");
    assert_eq!(last, of, "{screen}");

    // Undo: asked, shown as a restore of job 1 from Junk back, every copy back at the lab.
    tmux.send(&["Escape", "u"]);
    tmux.wait_for("the restore question", |s| s.contains("Restore job 1?"));
    tmux.send(&["y"]);
    let screen = tmux.wait_for("the restore to finish", |s| {
        s.contains("restore job 2 finished") && s.contains("Job 2: restore of job 1 (finished)")
    });
    assert!(screen.contains("Junk -> Inbox"), "{screen}");
    let row = screen
        .lines()
        .find(|l| l.contains(" 2 ") && l.contains("manual"))
        .unwrap();
    assert!(row.contains("restore"), "{row}");
    let after = lab_copies(&base);
    let folders = |m: &std::collections::BTreeMap<(String, String), (String, u64)>| {
        m.iter()
            .map(|(k, (folder, _))| (k.clone(), folder.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(folders(&after), folders(&before), "every copy is back");
    let moved: Vec<u64> = after.values().map(|(_, n)| *n).filter(|n| *n > 0).collect();
    assert_eq!(moved.len(), want, "{after:?}");
    assert!(
        moved.iter().all(|n| *n == 2),
        "each copy moved once and back once: {after:?}"
    );

    // A second undo of job 1: refused, no question, nothing sent.
    tmux.send(&["j", "u"]);
    let screen = tmux.wait_for("the refusal", |s| {
        s.contains("job 1 already restored by job 2")
    });
    assert!(!screen.contains("Restore job 1?"), "{screen}");
    assert_eq!(lab_copies(&base), after);

    // Nothing runs: q quits at once.
    tmux.send(&["q"]);
    tmux.wait_for("the console to close", |s| !s.contains("1 Search"));
}

impl Tmux {
    /// Where the terminal cursor is, and whether it is shown.
    fn cursor(&self) -> (u16, u16, bool) {
        let out = self
            .cmd()
            .args([
                "display-message",
                "-p",
                "-t",
                &self.session,
                "#{cursor_x} #{cursor_y} #{cursor_flag}",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let parts: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(parts.len(), 3, "cursor: {text:?}");
        (
            parts[0].parse().unwrap(),
            parts[1].parse().unwrap(),
            parts[2] == "1",
        )
    }
}

/// Issue 15: a long query typed in a real terminal, its middle edited with ctrl+w after moving
/// left, then searched; the terminal cursor sits where the keys put it. Esc then 3, arriving
/// together as they do through tmux, are two keys: leave the box, show the Policy pane.
#[test]
fn demo_in_tmux_a_long_query_is_edited_in_the_middle_and_searched() {
    if !tmux_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmux = Tmux::demo("clawback-test-input-", 100, 30, &data);
    tmux.send(&["/"]);
    // A term in the middle that matches nothing.
    let tail = "tenant:contoso";
    tmux.send_literal(&format!(
        "msgid:{CAMPAIGN_MESSAGE_ID} from:nobody.example {tail}"
    ));
    tmux.send(&["Enter"]);
    tmux.wait_for("no result", |s| s.contains("No messages match this query"));
    tmux.send(&["/"]);
    for _ in 0..tail.len() {
        tmux.send(&["Left"]);
    }
    tmux.send(&["C-w"]);
    let edited = format!("msgid:{CAMPAIGN_MESSAGE_ID} {tail}");
    let screen = tmux.wait_for("the edited query", |s| {
        s.contains(&format!("Query: {edited}"))
    });
    let (x, y, shown) = tmux.cursor();
    let line = screen.lines().nth(usize::from(y)).unwrap();
    let query_x = line.find("Query: ").unwrap() + "Query: ".len();
    assert!(shown, "the cursor is shown while typing");
    assert_eq!(
        usize::from(x),
        query_x + edited.len() - tail.len(),
        "the cursor before {tail:?}:\n{screen}"
    );
    tmux.send(&["Enter"]);
    tmux.wait_for("the campaign in contoso", |s| {
        s.contains("Search (1 message)")
    });
    assert!(!tmux.cursor().2, "no cursor once the query is searched");

    // Esc and 3 in one write: read as alt+3 by the terminal layer, acted on as two keys.
    // (The box keeps its cursor: end, then ctrl+u empties it.)
    tmux.send(&["/", "End", "C-u"]);
    tmux.wait_for("an empty query box", |s| s.contains("Query:  "));
    tmux.send_together(&["Escape", "3"]);
    tmux.wait_for("the Policy pane", |s| s.contains("Post Delivery Response"));
}

/// Issue 15 build 5: at 200x50 the results and the checklist are side by side (the checklist
/// follows the selection), and the metrics strip on top changes while a job runs and when it
/// ends; at 80x24 the one-pane tabs come back, without the strip.
#[test]
fn demo_in_tmux_side_by_side_at_200x50_and_tabs_at_80x24() {
    if !tmux_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tmux = Tmux::demo("clawback-test-wide-", 200, 50, &data);
    let strip = |s: &str| s.lines().nth(1).unwrap_or_default().to_string();
    let before = tmux.wait_for("the metrics strip", |s| {
        strip(s).contains("last 24h: 0 retractions")
    });
    assert!(
        before
            .lines()
            .any(|l| l.contains("+ Search (") && l.contains("+ Recipients")),
        "side by side:\n{before}"
    );
    // Moving the selection fills the checklist beside the results, the focus stays left.
    tmux.send(&["j"]);
    tmux.wait_for("the checklist of the selected message", |s| {
        s.lines()
            .any(|l| l.contains("+ Search (") && l.contains("+ Recipients") && l.contains(" from "))
            && s.contains("Included:")
    });
    // Retract the campaign in contoso: the strip shows the job, then the retractions.
    tmux.open_the_campaign();
    tmux.send(&["p"]);
    tmux.wait_for("the plan", |s| s.contains("Apply Junk Email to"));
    tmux.send(&["Enter"]);
    let after = tmux.wait_for("the strip to count the job", |s| {
        let line = strip(s);
        line.contains("ok") && !line.contains("last 24h: 0 retractions")
    });
    assert_ne!(strip(&after), strip(&before));
    // Narrow: tabs, one pane, no strip.
    tmux.resize(80, 24);
    let narrow = tmux.wait_for("one pane at 80x24", |s| {
        !s.contains("last 24h:") && s.lines().nth(1).is_some_and(|l| l.starts_with("+ "))
    });
    assert!(
        !narrow
            .lines()
            .any(|l| l.contains("+ Search") && l.contains("+ Recipients")),
        "{narrow}"
    );
    assert!(
        narrow
            .lines()
            .next()
            .unwrap()
            .contains("1 Search 2 Recipients")
    );
}
