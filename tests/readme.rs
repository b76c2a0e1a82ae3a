//! The README is the new user's way in, and every command in it must run as shown: this test
//! reads README.md, runs every command of its shell blocks in order against one lab it starts
//! (the real `clawback` binary, `lab serve --scenario demo` on the pinned demo clock), and
//! checks each exit code and, where the README shows output, every line it shows.
//!
//! # How the README is read
//!
//! - A fenced block in `sh`, `bash`, `shell` or `console` is a **script**: each line is a
//!   command (`\` continues it; `#` lines are comments), run with `sh -c` in a scratch
//!   directory, so pipelines and redirects work as pasted. `clawback` is on `PATH`,
//!   `CLAWBACK_CONFIG` / `CLAWBACK_DATA_DIR` point at the lab's config and a fresh store (the
//!   README says every command reads them), `HOME` is the scratch directory, stdin is empty.
//! - A block (any language) with lines starting `$ ` is a **transcript**: each `$ ` line is a
//!   command, the lines up to the next `$ ` are its output. Every shown output line must be a
//!   line of what the command printed (stdout or stderr), after normalizing the volatile parts
//!   on both sides: durations (`(0.74s)`, `190 ms`), the lab's port, hex digests. `…` in a shown
//!   line stands for any text. Dates in the output are moved from the test's demo clock to the
//!   README's ([`README_DEMO_CLOCK`]), so captured dates are checked exactly (the demo's mail is
//!   dated relative to its clock); dates of things done during the run (jobs) need `…`.
//! - A `text` block or a bare fence whose lines start with `clawback ` or `cargo ` is a
//!   **command list**, run like a script.
//! - Anything else (TOML, PowerShell, diagrams, error examples) is not run.
//!
//! # Markers
//!
//! HTML comments on the lines right before a block's opening fence (invisible when the markdown
//! is rendered); several may stack:
//!
//! - `<!-- readme-test: skip reason="…" -->`: the block is not run; the reason is required and
//!   should name the test that covers it instead (`tests/FILE.rs test_name`: both are checked
//!   to exist).
//! - `<!-- readme-test: skip cmd=2 reason="…" -->`: its 2nd command is not run.
//! - `<!-- readme-test: exit=3 -->`: every command of the block must exit 3 (default 0);
//!   `exit=3 cmd=2`: only the 2nd.
//! - `<!-- readme-test: screen -->`: a capture of the console's screen. Not run here (the
//!   snapshot and tmux tests check the screens); required on every block showing the tab bar.
//!
//! `README_TEST_SHOW=1` prints what every command printed (dates on the README's clock), to
//! write a capture from: `README_TEST_SHOW=1 cargo test --test readme -- --nocapture`. State
//! carries over from block to block (one lab, one store, in README order), so a new command
//! that changes state shifts what later captures show (job numbers, counts).
//!
//! A command block without a marker is run; a marker that does not parse, or that names a
//! command the block does not have, fails the test. Placeholders that cannot be literal (a
//! value the run itself produces) are listed in [`placeholders`].

#![allow(clippy::unwrap_used)] // test code: unwrap is the assertion

use chrono::{DateTime, Duration as ChronoDuration, NaiveDateTime, Utc};
use lab_support::KillOnDrop;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod lab_support;

const BIN: &str = env!("CARGO_BIN_EXE_clawback");

/// The demo clock the README's captures were made on (`CLAWBACK_DEMO_CLOCK`).
const README_DEMO_CLOCK: &str = "2026-11-27T15:00:00Z";

/// How the test starts the lab: the README's own command (it must say so, word for word).
const LAB_COMMAND: &str = "clawback lab serve --scenario demo --write-config lab.toml";

/// The longest a single README command may take before the test calls it stuck.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn readme_shows_the_two_commands_ci_runs_and_its_sections() {
    let readme = readme();
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(
        readme.contains("cargo run --release -- demo"),
        "the demo command"
    );
    let test_command = "cargo test --locked";
    assert!(readme.contains(test_command), "the test command");
    assert!(
        ci.lines().any(|l| l.trim() == test_command),
        ".ci/run runs the README's test command"
    );
    for section in [
        "## The two commands",
        "## A first retraction (in the demo)",
        "## The console",
        "## Connecting real tenants",
        "### `clawback doctor`",
        "## Retracting from the command line",
        "## Automation: policy, `clawback watch`, intel",
        "## The lab",
    ] {
        assert!(readme.contains(section), "README lacks {section:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the README

#[derive(Debug, Clone, PartialEq)]
enum Marker {
    Skip { cmd: Option<usize>, reason: String },
    Exit { cmd: Option<usize>, code: i32 },
    Screen,
}

#[derive(Debug)]
struct ReadmeCommand {
    /// 1-based line of the README where the command starts.
    line: usize,
    text: String,
    /// The output the README shows (transcripts only).
    shown: Vec<String>,
}

#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    markers: Vec<Marker>,
    commands: Vec<ReadmeCommand>,
    shows_screen: bool,
}

/// `key=value` or `key="quoted value"` pairs after the marker's kind.
fn marker_fields(rest: &str) -> Result<Vec<(String, String)>, String> {
    let mut fields = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some(eq) = s.find('=') else {
            return Err(format!("expected key=value, found {s:?}"));
        };
        let key = s[..eq].trim().to_string();
        let after = &s[eq + 1..];
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| format!("unclosed quote after {key}="))?;
            (quoted[..end].to_string(), &quoted[end + 1..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        fields.push((key, value));
        s = tail.trim_start();
    }
    Ok(fields)
}

fn parse_marker(text: &str) -> Result<Marker, String> {
    let (kind, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let fields = marker_fields(rest)?;
    let mut cmd = None;
    let mut reason = None;
    let mut code = None;
    for (key, value) in &fields {
        match key.as_str() {
            "cmd" => {
                cmd = Some(
                    value
                        .parse::<usize>()
                        .map_err(|e| format!("cmd={value}: {e}"))?,
                )
            }
            "reason" => reason = Some(value.clone()),
            _ => return Err(format!("unknown field {key:?}")),
        }
    }
    if let Some(n) = kind.strip_prefix("exit=") {
        code = Some(n.parse::<i32>().map_err(|e| format!("{kind}: {e}"))?);
    }
    match (kind, code) {
        ("skip", _) => match reason {
            Some(reason) if !reason.trim().is_empty() => Ok(Marker::Skip { cmd, reason }),
            _ => Err("skip needs reason=\"…\"".into()),
        },
        ("screen", _) if fields.is_empty() => Ok(Marker::Screen),
        (_, Some(code)) if reason.is_none() => Ok(Marker::Exit { cmd, code }),
        _ => Err(format!("unknown marker {text:?}")),
    }
}

const SHELL_LANGUAGES: [&str; 4] = ["sh", "bash", "shell", "console"];

/// Joins `\` continuations; returns (first line index, joined text) per logical line.
fn logical_lines(lines: &[(usize, String)]) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, line) in lines {
        let (start, mut text) = pending.take().unwrap_or((*n, String::new()));
        let trimmed = if text.is_empty() {
            line.trim_end()
        } else {
            line.trim()
        };
        if let Some(head) = trimmed.strip_suffix('\\') {
            text.push_str(head.trim_end());
            text.push(' ');
            pending = Some((start, text));
        } else {
            text.push_str(trimmed);
            out.push((start, text));
        }
    }
    out.extend(pending);
    out
}

fn parse_readme(readme: &str) -> Result<Vec<Block>, String> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        let Some(lang) = line.strip_prefix("```") else {
            i += 1;
            continue;
        };
        let lang = lang.trim().to_ascii_lowercase();
        let fence_line = i + 1;
        // Markers: the comment lines right above the fence.
        let mut markers = Vec::new();
        let mut j = i;
        while j > 0 {
            let above = lines[j - 1].trim();
            let Some(inner) = above
                .strip_prefix("<!-- readme-test:")
                .and_then(|s| s.strip_suffix("-->"))
            else {
                break;
            };
            markers.push(parse_marker(inner.trim()).map_err(|e| format!("README.md:{j}: {e}"))?);
            j -= 1;
        }
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            body.push((i + 1, lines[i].to_string()));
            i += 1;
        }
        if i == lines.len() {
            return Err(format!("README.md:{fence_line}: the block is never closed"));
        }
        i += 1;
        let shows_screen = body
            .iter()
            .any(|(_, l)| l.contains("1 Search 2 Recipients"));
        let transcript = body.iter().any(|(_, l)| l.trim_start().starts_with("$ "));
        let command_list = (lang.is_empty() || lang == "text")
            && body.iter().any(|(_, l)| {
                let l = l.trim_start();
                l.starts_with("clawback ") || l.starts_with("cargo ")
            });
        let commands = if transcript {
            let mut commands: Vec<ReadmeCommand> = Vec::new();
            for (n, l) in &body {
                if let Some(cmd) = l.trim_start().strip_prefix("$ ") {
                    commands.push(ReadmeCommand {
                        line: *n,
                        text: cmd.to_string(),
                        shown: Vec::new(),
                    });
                } else if let Some(last) = commands.last_mut()
                    && !l.trim().is_empty()
                {
                    last.shown.push(l.clone());
                }
            }
            commands
        } else if SHELL_LANGUAGES.contains(&lang.as_str()) || command_list {
            logical_lines(&body)
                .into_iter()
                .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .map(|(line, text)| ReadmeCommand {
                    line,
                    text: text.trim().to_string(),
                    shown: Vec::new(),
                })
                .collect()
        } else {
            Vec::new()
        };
        for m in &markers {
            let cmd = match m {
                Marker::Skip { cmd, .. } | Marker::Exit { cmd, .. } => *cmd,
                Marker::Screen => None,
            };
            if let Some(k) = cmd
                && (k == 0 || k > commands.len())
            {
                return Err(format!(
                    "README.md:{fence_line}: a marker names command {k}; the block has {}",
                    commands.len()
                ));
            }
        }
        blocks.push(Block {
            line: fence_line,
            markers,
            commands,
            shows_screen,
        });
    }
    Ok(blocks)
}

impl Block {
    fn skipped(&self) -> Option<&str> {
        self.markers.iter().find_map(|m| match m {
            Marker::Skip { cmd: None, reason } => Some(reason.as_str()),
            _ => None,
        })
    }

    fn command_skipped(&self, k: usize) -> Option<&str> {
        self.markers.iter().find_map(|m| match m {
            Marker::Skip {
                cmd: Some(c),
                reason,
            } if *c == k => Some(reason.as_str()),
            _ => None,
        })
    }

    fn expected_exit(&self, k: usize) -> i32 {
        let one = self.markers.iter().find_map(|m| match m {
            Marker::Exit { cmd: Some(c), code } if *c == k => Some(*code),
            _ => None,
        });
        let all = self.markers.iter().find_map(|m| match m {
            Marker::Exit { cmd: None, code } => Some(*code),
            _ => None,
        });
        one.or(all).unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Normalizing output

/// Moves every `YYYY-MM-DD HH:MM[:SS]` / `YYYY-MM-DDTHH:MM[:SS]` by `shift`, keeping its format.
fn shift_dates(line: &str, shift: ChronoDuration) -> String {
    let b = line.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let date_at = (0..4).all(|k| digit(i + k))
            && b.get(i + 4) == Some(&b'-')
            && digit(i + 5)
            && digit(i + 6)
            && b.get(i + 7) == Some(&b'-')
            && digit(i + 8)
            && digit(i + 9)
            && matches!(b.get(i + 10), Some(b' ' | b'T'))
            && digit(i + 11)
            && digit(i + 12)
            && b.get(i + 13) == Some(&b':')
            && digit(i + 14)
            && digit(i + 15)
            && (i == 0 || !b[i - 1].is_ascii_digit());
        if date_at {
            let seconds = b.get(i + 16) == Some(&b':') && digit(i + 17) && digit(i + 18);
            let end = if seconds { i + 19 } else { i + 16 };
            let sep = b[i + 10] as char;
            let text = &line[i..end];
            let parsed = NaiveDateTime::parse_from_str(
                &format!("{}:00", &text[..16].replace('T', " ")),
                "%Y-%m-%d %H:%M:%S",
            )
            .ok()
            .map(|t| {
                let secs = if seconds { &text[17..19] } else { "00" };
                t + ChronoDuration::seconds(secs.parse::<i64>().unwrap_or(0))
            });
            if let Some(t) = parsed {
                let t = t + shift;
                let format = if seconds {
                    format!("%Y-%m-%d{sep}%H:%M:%S")
                } else {
                    format!("%Y-%m-%d{sep}%H:%M")
                };
                out.push_str(&t.format(&format).to_string());
                i = end;
                continue;
            }
        }
        let ch = line[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Replaces the volatile parts of a line: durations, the lab's port, hex digests.
fn normalize(line: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = line.trim_end().chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev_alnum = i > 0 && chars[i - 1].is_ascii_alphanumeric();
        // A run of 16+ hex digits: a digest or an id.
        let hex_len = chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        if !prev_alnum && hex_len >= 16 {
            out.push_str("<hex>");
            i += hex_len;
            continue;
        }
        if c.is_ascii_digit() && !prev_alnum {
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                j += 1;
            }
            let rest: String = chars[j..].iter().take(4).collect();
            // `(0.74s)`, `0.62 s`, `190 ms`
            if rest.starts_with("s)") || rest.starts_with(" ms") || rest.starts_with("ms") {
                out.push_str("<n>");
                i = j;
                continue;
            }
        }
        if c == ':' && out.ends_with("127.0.0.1") {
            let digits = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            if digits > 0 {
                out.push_str(":<port>");
                i += 1 + digits;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Whether `actual` matches `shown`, where `…` in `shown` stands for any text.
fn matches_shown(shown: &str, actual: &str) -> bool {
    let parts: Vec<&str> = shown.split('…').collect();
    if parts.len() == 1 {
        return shown == actual;
    }
    let Some(mut rest) = actual.strip_prefix(parts[0]) else {
        return false;
    };
    let last = parts.len() - 1;
    for (k, part) in parts.iter().enumerate().skip(1) {
        if k == last {
            return rest.len() >= part.len() && rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Running it

struct Run {
    dir: PathBuf,
    bin_dir: PathBuf,
    clock: DateTime<Utc>,
}

struct Ran {
    code: Option<i32>,
    lines: Vec<String>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn command(&self, shell: &str) -> Command {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.bin_dir.clone()];
        paths.extend(std::env::split_paths(&path));
        let mut command = Command::new("sh");
        command
            .args(["-c", shell])
            .current_dir(&self.dir)
            .env("PATH", std::env::join_paths(paths).unwrap())
            .env("HOME", &self.dir)
            .env("CLAWBACK_CONFIG", self.dir.join("lab.toml"))
            .env("CLAWBACK_DATA_DIR", self.dir.join("data"))
            .env(
                clawback::lab::demo::DEMO_CLOCK_ENV,
                self.clock
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
            .env("NO_COLOR", "1")
            .env_remove("CLAWBACK_LOG")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, shell: &str) -> Ran {
        let mut child = self
            .command(shell)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let reader = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = reader(Box::new(out));
        let err = reader(Box::new(err));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > COMMAND_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = out.join().unwrap();
        let stderr = err.join().unwrap();
        let lines = stdout
            .split(['\n', '\r'])
            .chain(stderr.split(['\n', '\r']))
            .map(str::to_string)
            .collect();
        Ran {
            code: status.and_then(|s| s.code()),
            lines,
            stdout,
            stderr,
        }
    }

    /// The README's dates are on [`README_DEMO_CLOCK`]; this run's on `self.clock`.
    fn shift(&self) -> ChronoDuration {
        let readme: DateTime<Utc> = README_DEMO_CLOCK.parse().unwrap();
        readme - self.clock
    }
}

/// Values the run produces that a README command cannot spell literally: (text in the README,
/// the command whose output, trimmed, replaces it — with `SEQ sha256:HEX` turned into the
/// `SEQ:sha256:HEX` that `--head` takes).
fn placeholders() -> Vec<(&'static str, &'static str)> {
    vec![("42:sha256:9f86d08…", "clawback audit head")]
}

/// Starts the lab with [`LAB_COMMAND`]; returns it and the lines it printed up to listening.
fn start_lab(run: &Run) -> (KillOnDrop, Vec<String>) {
    let mut child = run
        .command(&format!("exec {LAB_COMMAND}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let said = lab_support::lines_until_listening(&mut child);
    (KillOnDrop(child), said)
}

#[test]
fn every_readme_command_runs_as_shown() {
    let readme = readme();
    let blocks = parse_readme(&readme).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        readme.contains(LAB_COMMAND),
        "the README shows how the lab is served: {LAB_COMMAND}"
    );
    assert!(
        readme.contains(README_DEMO_CLOCK),
        "the README says which demo clock its captures were made on ({README_DEMO_CLOCK})"
    );
    for b in &blocks {
        assert!(
            !b.shows_screen || b.markers.contains(&Marker::Screen),
            "README.md:{}: a screen capture needs <!-- readme-test: screen -->",
            b.line
        );
    }

    for b in &blocks {
        for m in &b.markers {
            if let Marker::Skip { reason, .. } = m {
                assert_reason_names_real_tests(b.line, reason);
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let run = Run {
        dir: dir.path().to_path_buf(),
        bin_dir: Path::new(BIN).parent().unwrap().to_path_buf(),
        // Whole minutes, so the README's dates map to this run's exactly.
        clock: DateTime::from_timestamp(now.timestamp() - now.timestamp() % 60, 0).unwrap(),
    };
    let (_lab, lab_said) = start_lab(&run);
    // The README shows what the lab prints as comments under its command: they must match.
    let shown: Vec<String> = readme
        .lines()
        .skip_while(|l| l.trim() != LAB_COMMAND)
        .skip(1)
        .map_while(|l| l.strip_prefix("# "))
        .map(normalize)
        .collect();
    assert!(
        !shown.is_empty(),
        "the README shows what {LAB_COMMAND} prints"
    );
    for line in &shown {
        assert!(
            lab_said.iter().any(|said| normalize(said) == *line),
            "the README shows {LAB_COMMAND} printing {line:?}; it printed {lab_said:?}"
        );
    }

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut skipped = Vec::new();
    for block in &blocks {
        if block.commands.is_empty() {
            continue;
        }
        if block.markers.contains(&Marker::Screen) {
            continue;
        }
        if let Some(reason) = block.skipped() {
            skipped.push(format!("README.md:{}: {reason}", block.line));
            continue;
        }
        for (k, command) in block.commands.iter().enumerate() {
            let k = k + 1;
            if let Some(reason) = block.command_skipped(k) {
                skipped.push(format!("README.md:{}: {reason}", command.line));
                continue;
            }
            let mut text = command.text.clone();
            for (placeholder, producer) in placeholders() {
                if text.contains(placeholder) {
                    let value = run.run(producer).stdout.trim().replacen(' ', ":", 1);
                    text = text.replace(placeholder, &value);
                }
            }
            let t = Instant::now();
            let result = run.run(&text);
            ran += 1;
            let expected = block.expected_exit(k);
            eprintln!(
                "README.md:{} exit {:?} in {:.1}s: {text}",
                command.line,
                result.code,
                t.elapsed().as_secs_f64()
            );
            if std::env::var_os("README_TEST_SHOW").is_some() {
                eprintln!(
                    "{}\n{}",
                    indent(&shift_text(&result.stdout, run.shift())),
                    indent(&shift_text(&result.stderr, run.shift()))
                );
            }
            let printed: Vec<String> = result
                .lines
                .iter()
                .map(|l| normalize(&shift_dates(l, run.shift())))
                .collect();
            let mut problems = Vec::new();
            if result.code != Some(expected) {
                problems.push(format!(
                    "exit {:?}, the README expects {expected}",
                    result.code
                ));
            }
            for shown in &command.shown {
                let want = normalize(shown);
                if !printed.iter().any(|p| matches_shown(&want, p)) {
                    problems.push(format!("shows a line it did not print: {shown}"));
                }
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "README.md:{}: `{text}`\n  {}\n  --- stdout (dates on the README's clock)\n{}\n  --- stderr\n{}",
                    command.line,
                    problems.join("\n  "),
                    indent(&shift_text(&result.stdout, run.shift())),
                    indent(&shift_text(&result.stderr, run.shift())),
                ));
            }
        }
    }
    eprintln!(
        "ran {ran} README commands in {:.1}s; skipped:\n{}",
        started.elapsed().as_secs_f64(),
        skipped.join("\n")
    );
    assert!(ran >= 30, "only {ran} README commands ran");
    assert!(
        failures.is_empty(),
        "{} README command(s) do not run as shown:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A skip reason that names `tests/FILE.rs` and test functions must name real ones: a reason
/// is a promise that something else runs the command.
fn assert_reason_names_real_tests(line: usize, reason: &str) {
    let words: Vec<&str> = reason
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ':' | '(' | ')'))
        .filter(|w| !w.is_empty())
        .collect();
    let files: Vec<String> = words
        .iter()
        .filter(|w| w.starts_with("tests/") && w.ends_with(".rs"))
        .map(|w| {
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(w))
                .unwrap_or_else(|e| panic!("README.md:{line}: the skip reason names {w}: {e}"))
        })
        .collect();
    for w in words.iter().filter(|w| {
        w.contains('_')
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }) {
        assert!(
            files.iter().any(|f| f.contains(&format!("fn {w}("))),
            "README.md:{line}: the skip reason names the test {w}, which its files do not have"
        );
    }
}

fn shift_text(text: &str, shift: ChronoDuration) -> String {
    text.lines()
        .map(|l| shift_dates(l, shift))
        .collect::<Vec<_>>()
        .join("\n")
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// The reader itself

#[test]
fn markers_parse_and_refuse_what_they_do_not_know() {
    assert_eq!(
        parse_marker("skip reason=\"needs a tenant\"").unwrap(),
        Marker::Skip {
            cmd: None,
            reason: "needs a tenant".into()
        }
    );
    assert_eq!(
        parse_marker("exit=3 cmd=2").unwrap(),
        Marker::Exit {
            cmd: Some(2),
            code: 3
        }
    );
    assert_eq!(parse_marker("screen").unwrap(), Marker::Screen);
    assert!(parse_marker("skip").is_err(), "a skip without a reason");
    assert!(parse_marker("skp reason=x").is_err());
    assert!(parse_marker("exit=x").is_err());
    let text = "<!-- readme-test: skip cmd=3 reason=\"x\" -->\n```sh\nclawback a\n```\n";
    assert!(parse_readme(text).unwrap_err().contains("command 3"));
}

#[test]
fn blocks_split_into_commands_and_shown_output() {
    let text = "```sh\n# comment\nclawback a \\\n  --b | wc -l\n\nclawback c\n```\n\
                ```text\n$ clawback d\nout 1\n\n$ clawback e\n```\n\
                ```toml\nclawback = 1\n```\n";
    let blocks = parse_readme(text).unwrap();
    let cmds: Vec<Vec<&str>> = blocks
        .iter()
        .map(|b| b.commands.iter().map(|c| c.text.as_str()).collect())
        .collect();
    assert_eq!(
        cmds,
        vec![
            vec!["clawback a --b | wc -l", "clawback c"],
            vec!["clawback d", "clawback e"],
            vec![]
        ]
    );
    assert_eq!(blocks[1].commands[0].shown, vec!["out 1"]);
}

#[test]
fn volatile_parts_are_normalized_and_dates_moved_to_the_readme_clock() {
    assert_eq!(
        normalize(
            "synced … (0.74s) ready in 190 ms on http://127.0.0.1:40731 sha256:9f86d081884c7d659a2feaa0c55ad015"
        ),
        "synced … (<n>s) ready in <n> ms on http://127.0.0.1:<port> sha256:<hex>"
    );
    let shift = ChronoDuration::minutes(-90);
    assert_eq!(
        shift_dates("2026-11-27 14:18 x 2026-11-26T11:29:18Z 2026-11-27", shift),
        "2026-11-27 12:48 x 2026-11-26T09:59:18Z 2026-11-27"
    );
    assert!(matches_shown("a … c … e", "a b c d e"));
    assert!(!matches_shown("a … c", "a b d"));
    assert!(matches_shown("x", "x"));
}

/// The README's key table is the default keymap (`src/tui/keymap.default.toml`), row for row:
/// a key added, renamed or moved in the program must show in the README (the `X` and `tab`
/// bindings once came without it).
#[test]
fn the_readme_key_table_is_the_default_keymap() {
    use clawback::tui::keymap::{Keymap, Mode};
    let keymap = Keymap::defaults().unwrap();
    let mut expected = Vec::new();
    for mode in Mode::ALL {
        for b in keymap.bindings(mode) {
            let keys: Vec<String> = b.keys.iter().map(|k| format!("`{k}`")).collect();
            expected.push(format!(
                "| {} | {} | `{}` | {} |",
                mode.as_str(),
                keys.join(" "),
                b.action.name().unwrap(),
                b.action.describe()
            ));
        }
    }
    let readme = readme();
    let shown: Vec<String> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| Mode | Keys | Action (config name) | Does |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(str::to_string)
        .collect();
    assert!(
        shown == expected,
        "the README's key table differs from the default keymap; it should read:\n{}",
        expected.join("\n")
    );
}

/// The README's Jobs capture is the snapshot test's screen, line for line (it says it is "from
/// the snapshot tests"), so a layout change that moves the snapshot moves the README too.
#[test]
fn the_readme_jobs_capture_is_the_snapshot() {
    let snapshot = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/snapshots/tui_snapshots__jobs_running_progress@80x24.snap"
    ))
    .unwrap();
    // insta's header (`---` … `---`), then the screen.
    let screen = snapshot.splitn(3, "---\n").nth(2).unwrap().trim_end();
    let readme = readme();
    let after = readme
        .split("The Jobs pane at 80x24 while a job runs (from the snapshot tests")
        .nth(1)
        .expect("the README introduces its Jobs capture");
    let block = after
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a text block follows");
    assert_eq!(
        block, screen,
        "the README's Jobs capture differs from the snapshot"
    );
}
