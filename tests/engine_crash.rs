//! Crash safety (issue 5, DESIGN §5): a 2,000-mailbox retraction is SIGKILLed at random points
//! at least ten times — `retract` once, then `jobs resume` again and again — and finally resumed
//! to the end. The lab runs in its own process, so a kill loses nothing on the provider side; the
//! lab's own records then show every copy acted on exactly once and sitting in Junk, and the store
//! shows every item accounted for.

use clawback::lab::demo::CAMPAIGN_MESSAGE_ID;
use clawback::lab::generate::{GenerateKind, GenerateOptions, generate};
use clawback::store::Store;
use clawback::store::jobs::ItemState;
use clawback::trace::{RecipientKind, TraceRecord};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MAILBOXES: usize = 2_000;
/// Lab service time per (sub-)request and slots per tenant; the client is held below that many
/// requests in flight (a Gmail batch is 50; DWD token requests come on top), so the job takes a
/// few seconds and a test about crashes does not turn into a test about 429s.
const LATENCY_MS: u64 = 10;
const CAPACITY: usize = 64;
const CLIENT_IN_FLIGHT: usize = 50;
const MIN_KILLS: usize = 10;
/// Upper bound on resume attempts before the final one (the loop is bounded).
const MAX_RESUMES: usize = 40;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_clawback")
}

/// The lab in its own process; killed when dropped.
struct LabProcess {
    child: Child,
    base: String,
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_lab(dir: &Path, scenario: &Path) -> LabProcess {
    let mut child = Command::new(bin())
        .args(["lab", "serve", "--addr", "127.0.0.1:0", "--scenario"])
        .arg(scenario)
        .arg("--write-config")
        .arg(dir.join("lab.toml"))
        .args(["--latency-ms", &LATENCY_MS.to_string()])
        .args(["--capacity", &CAPACITY.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lab");
    let stdout = child.stdout.take().expect("lab stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut base = None;
    for _ in 0..10 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("lab listening on ") {
            base = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    // Keep draining stdout so the lab never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let base = base.expect("lab printed its address");
    LabProcess { child, base }
}

/// Holds the client below the lab's capacity.
fn limit_config(path: &Path) {
    let text = std::fs::read_to_string(path).expect("read lab.toml");
    let text = text.replace(
        "max_in_flight = 256",
        &format!("max_in_flight = {CLIENT_IN_FLIGHT}"),
    );
    std::fs::write(path, text).expect("write lab.toml");
}

/// The campaign as the trace knows it: one record per tenant, its copies as envelope recipients.
fn fill_trace(data: &Path, copies: &BTreeMap<String, Vec<String>>) {
    let mut store = Store::open_in_dir(data).expect("open store");
    let records: Vec<TraceRecord> = copies
        .iter()
        .map(|(tenant, mailboxes)| {
            let mut r = TraceRecord {
                tenant: tenant.clone(),
                message_id: CAMPAIGN_MESSAGE_ID.to_string(),
                sender: "it-support@mail.contoso-helpdesk.com".into(),
                subject: "Your password expires today".into(),
                received: 1_736_150_400,
                size: 2_048,
                ..Default::default()
            };
            for m in mailboxes {
                r.add_recipient(m, RecipientKind::Envelope);
            }
            r
        })
        .collect();
    store.upsert_trace(&records).expect("store trace");
}

struct Lab<'a> {
    rt: &'a tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Lab<'_> {
    fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            self.http
                .get(&url)
                .send()
                .await
                .expect("lab answers")
                .json::<Value>()
                .await
                .expect("lab JSON")
        })
    }

    /// API actions the lab recorded so far (all messages, all mailboxes).
    fn actions_total(&self) -> u64 {
        self.get("/_lab/stats")["actions_total"]
            .as_u64()
            .unwrap_or(0)
    }
}

fn clawback(config: &Path, data: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    // CRASH_VERBOSE=1 shows what each process printed.
    if std::env::var_os("CRASH_VERBOSE").is_none() {
        c.stdout(Stdio::null()).stderr(Stdio::null());
    }
    c
}

/// Waits until the lab has recorded `target` actions (or the process ended, or `deadline`),
/// polling; then SIGKILLs the process. Returns whether it was still running when killed.
fn kill_when(lab: &Lab, child: &mut Child, target: u64, deadline: Duration) -> bool {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return false;
        }
        if lab.actions_total() >= target || started.elapsed() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let alive = child.try_wait().expect("try_wait").is_none();
    child.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
    let _ = child.wait();
    alive
}

#[test]
fn sigkilled_at_random_points_every_copy_is_acted_on_exactly_once() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir: PathBuf = tmp.path().to_path_buf();
    let data = dir.join("data");

    // A campaign delivered to all 2,000 mailboxes of a mixed Microsoft 365 + Google lab.
    let scenario = generate(&GenerateOptions {
        mailboxes: MAILBOXES,
        campaign_recipients: MAILBOXES,
        seed,
        kind: GenerateKind::Mixed,
        background_messages: 0,
    })
    .expect("generate");
    let mut copies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in &scenario.tenants {
        for m in &t.messages {
            for c in &m.copies {
                copies
                    .entry(t.name.clone())
                    .or_default()
                    .push(c.mailbox.to_ascii_lowercase());
            }
        }
    }
    let expected: usize = copies.values().map(Vec::len).sum();
    assert_eq!(expected, MAILBOXES);
    let scenario_path = dir.join("scenario.json");
    std::fs::write(
        &scenario_path,
        serde_json::to_string(&scenario).expect("scenario JSON"),
    )
    .expect("write scenario");

    let lab_proc = start_lab(&dir, &scenario_path);
    let config = dir.join("lab.toml");
    limit_config(&config);
    fill_trace(&data, &copies);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let lab = Lab {
        rt: &rt,
        http: reqwest::Client::new(),
        base: lab_proc.base.clone(),
    };
    assert_eq!(lab.actions_total(), 0);

    let mut kills = 0usize;
    let t0 = Instant::now();
    // 1. `retract`, killed once it is acting (so the job exists), after a random number of actions.
    let mut child = clawback(
        &config,
        &data,
        &[
            "retract",
            "--message-id",
            CAMPAIGN_MESSAGE_ID,
            "--action",
            "junk",
            "--yes",
        ],
    )
    .spawn()
    .expect("spawn retract");
    let first = rng.gen_range(1..=200);
    assert!(
        kill_when(&lab, &mut child, first, Duration::from_secs(60)),
        "retract finished before it could be killed"
    );
    kills += 1;
    eprintln!(
        "retract killed after {first}+ actions at {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // 2. `jobs resume`, killed at random points: sometimes after a random delay alone (during
    //    start-up or reconciliation), mostly after a random number of further actions.
    let mut resumes = 0usize;
    while kills < MIN_KILLS + 2 && resumes < MAX_RESUMES {
        resumes += 1;
        let before = lab.actions_total();
        if before as usize >= expected {
            break;
        }
        let mut child = clawback(&config, &data, &["jobs", "resume"])
            .spawn()
            .expect("spawn resume");
        let (target, deadline) = if rng.gen_bool(0.25) {
            (u64::MAX, Duration::from_millis(rng.gen_range(20..400)))
        } else {
            (before + rng.gen_range(1..=150), Duration::from_secs(30))
        };
        if kill_when(&lab, &mut child, target, deadline) {
            kills += 1;
        }
        eprintln!(
            "resume {resumes}: {before} -> {} actions, {kills} kills, at {:.1}s",
            lab.actions_total(),
            t0.elapsed().as_secs_f64()
        );
    }
    assert!(
        kills >= MIN_KILLS,
        "only {kills} kills landed while the job ran"
    );

    // 3. A final resume to the end.
    let status = clawback(&config, &data, &["jobs", "resume"])
        .status()
        .expect("final resume");
    assert!(status.success(), "final resume exited {status:?}");
    eprintln!("final resume done at {:.1}s", t0.elapsed().as_secs_f64());

    // The lab: every copy acted on exactly once by the API, and in Junk.
    let actions = lab.get(&format!(
        "/_lab/actions?message_id={}",
        urlencode(CAMPAIGN_MESSAGE_ID)
    ));
    let counts = actions["counts"].as_array().expect("counts");
    let mut acted: BTreeMap<(String, String), u64> = BTreeMap::new();
    for c in counts {
        acted.insert(
            (
                c["tenant"].as_str().unwrap_or_default().to_string(),
                c["mailbox"].as_str().unwrap_or_default().to_string(),
            ),
            c["count"].as_u64().unwrap_or(0),
        );
    }
    let twice: Vec<_> = acted.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "copies not acted on exactly once: {twice:?}"
    );
    let store = Store::open_in_dir(&data).expect("open store");
    let jobs = store.jobs(10).expect("jobs");
    assert_eq!(jobs.len(), 1, "one retract job");
    let items = store.job_items(jobs[0].id, None).expect("items");
    let missing: Vec<_> = copies
        .iter()
        .flat_map(|(t, ms)| ms.iter().map(move |m| (t.clone(), m.clone())))
        .filter(|k| !acted.contains_key(k))
        .map(|(t, m)| {
            let states: Vec<_> = items
                .iter()
                .filter(|it| it.tenant == t && it.mailbox == m)
                .map(|it| (it.state, it.reason, it.detail.clone()))
                .collect();
            (t, m, states)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} copies not acted on (tenant, mailbox, job item states): {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(acted.len(), expected);
    assert_eq!(actions["total"].as_u64(), Some(expected as u64));

    let messages = lab.get(&format!(
        "/_lab/messages?message_id={}",
        urlencode(CAMPAIGN_MESSAGE_ID)
    ));
    let all = messages["copies"].as_array().expect("copies");
    assert_eq!(all.len(), expected);
    let not_junk: Vec<_> = all
        .iter()
        .filter(|c| c["folder"] != "junk" || c["actions"] != 1)
        .map(|c| {
            (
                c["mailbox"].clone(),
                c["folder"].clone(),
                c["actions"].clone(),
            )
        })
        .collect();
    assert!(not_junk.is_empty(), "copies not in Junk once: {not_junk:?}");

    // The store: one job, every item succeeded, nothing pending or in flight.
    let counts = store.item_counts(jobs[0].id).expect("counts");
    assert_eq!(counts.succeeded, expected as u64, "{counts:?}");
    assert_eq!(counts.total(), expected as u64, "{counts:?}");
    assert_eq!(counts.remaining(), 0, "{counts:?}");
    assert!(items.iter().all(|it| it.state == ItemState::Succeeded));
    let mut per_box: BTreeMap<(String, String), usize> = BTreeMap::new();
    for it in &items {
        *per_box
            .entry((it.tenant.clone(), it.mailbox.clone()))
            .or_default() += 1;
    }
    assert_eq!(per_box.len(), expected);
    assert!(per_box.values().all(|n| *n == 1));
    eprintln!(
        "{kills} kills over {resumes} resumes (seed {seed}); {expected} copies acted on once"
    );
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
