//! Trace benchmarks: bulk insert of synthetic records, p50/p95 of 20 representative searches,
//! EML ingest rate, store size.
//!
//! ```text
//! cargo bench --bench trace                           # 200,000 records, 20,000 EML (~1 min)
//! cargo bench --bench trace -- --records 1000000      # the DESIGN target size
//! cargo bench --bench trace -- --records 1000000 --eml 50000 --runs 30
//! cargo bench --bench trace -- --records 1000 --eml 100 --references 400000
//! cargo bench --bench trace -- --records 1000000 --store /tmp/t.sqlite3   # keep the store
//! cargo bench --bench trace -- --records 1000000 --eml 0 --store postgres  # issue 17
//! cargo bench --bench trace -- --records 1000000 --eml 0 --reuse --store /tmp/tb/t.sqlite3
//! cargo bench --bench trace -- --records 1000000 --eml 0 --reuse --store 'host=/run/pg dbname=t'
//! ```
//! `--store postgres` builds the trace in a new database on `$CLAWBACK_TEST_PG_URL` (e.g. the
//! cluster `.ci/postgres.sh` starts), or on a private throwaway cluster when it is unset
//! (`clawback::store::pg::testing`), and prints its connection string; `--store` with a
//! connection string (`postgres://…`, or `key=value` words with a `dbname=`) uses that database.
//! The EML and References parts stay on SQLite.
//! A SQLite `--store` goes in a directory of its own: opening a store makes its directory
//! private (0700), which would lock others out of a shared one such as /tmp.
//! `--window N` sets the newest-first search window (0: none, as the PostgreSQL store searched
//! before it had one). `--reuse` times the searches on a store an earlier run built with the same `--records` (a
//! SQLite file or a named PostgreSQL database): the records are generated again for the probes
//! but not inserted (inserting 1M rows into PostgreSQL takes ~10 minutes).
//! `TRACE_BENCH_EXPLAIN=1` prints each query's plan.
//! The last part parses and stores one message whose References holds `--references` ids
//! (default 200,000; issue 11: it took 30 s when the ids were deduplicated quadratically).
//! Goals (DESIGN §9): search p95 ≤ 25 ms on 1,000,000 messages; ingest ≥ 5,000 EML/s.

use clawback::model::Disposition;
use clawback::store::Store;
use clawback::trace::ingest::{IngestOptions, ingest_paths, parse_message};
use clawback::trace::query::parse;
use clawback::trace::{Recipient, RecipientKind, TraceRecord};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

const NOW: i64 = 1_795_132_800; // 2026-11-20T00:00:00Z
const DAY: i64 = 86_400;
const WORDS: &[&str] = &[
    "invoice",
    "payment",
    "meeting",
    "report",
    "update",
    "urgent",
    "password",
    "reset",
    "account",
    "quarterly",
    "results",
    "lunch",
    "project",
    "review",
    "shipping",
    "delivery",
    "order",
    "confirm",
    "security",
    "alert",
    "bonus",
    "salary",
    "document",
    "shared",
    "signature",
    "contract",
    "team",
    "weekly",
    "newsletter",
    "offer",
    "discount",
    "verify",
    "login",
    "mailbox",
    "storage",
    "full",
    "wire",
    "transfer",
    "bank",
    "refund",
    "tax",
    "holiday",
    "schedule",
    "agenda",
    "notes",
    "draft",
];

struct Args {
    records: usize,
    eml: usize,
    runs: usize,
    references: usize,
    /// `--store PATH`: build the trace store there and keep it (for EXPLAIN QUERY PLAN and
    /// timing by hand afterwards) instead of in a temporary directory. `--store postgres`: on
    /// PostgreSQL (see the module documentation).
    store: Option<std::path::PathBuf>,
    /// `--reuse`: the store already holds the records (see the module documentation).
    reuse: bool,
    /// `--window N`: the newest-first search window (`Store::set_search_window`; 0 = none, each
    /// search runs unbounded), else the store's default.
    window: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        records: 200_000,
        eml: 20_000,
        runs: 20,
        references: 200_000,
        store: None,
        reuse: false,
        window: None,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        if argv[i] == "--store"
            && let Some(p) = argv.get(i + 1)
        {
            a.store = Some(p.into());
            i += 2;
            continue;
        }
        if argv[i] == "--reuse" {
            a.reuse = true;
            i += 1;
            continue;
        }
        let next = argv
            .get(i + 1)
            .and_then(|v| v.replace('_', "").parse::<usize>().ok());
        match (argv[i].as_str(), next) {
            ("--records", Some(n)) => a.records = n,
            ("--eml", Some(n)) => a.eml = n,
            ("--runs", Some(n)) => a.runs = n.max(1),
            ("--references", Some(n)) => a.references = n,
            ("--window", Some(n)) => a.window = Some(n),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// Skewed pick in 0..n: a few values are common, most are rare.
fn skewed(rng: &mut ChaCha8Rng, n: usize) -> usize {
    let x: f64 = rng.r#gen();
    ((x * x * x) * n as f64) as usize % n
}

/// Record `i` of `n`. Mail arrives over 90 days in roughly time order (as sync and journal feeds
/// deliver it), with up to an hour of jitter.
fn synthetic(i: usize, n: usize, rng: &mut ChaCha8Rng) -> TraceRecord {
    let sender_domain = format!("d{}.example", skewed(rng, 5_000));
    let sender = format!("s{}@{sender_domain}", skewed(rng, 20));
    let n_words = rng.gen_range(3..8);
    let subject: Vec<&str> = (0..n_words)
        .map(|_| WORDS[skewed(rng, WORDS.len())])
        .collect();
    let mut subject = subject.join(" ");
    subject.push_str(&format!(" {}", rng.gen_range(0..100_000)));
    let tenant = ["contoso", "fabrikam", "northwind"][i % 3];
    let mut rec = TraceRecord {
        tenant: tenant.into(),
        message_id: format!("<m{i}.{:x}@{sender_domain}>", rng.r#gen::<u32>()),
        sender,
        sender_name: Some(format!("Sender {}", skewed(rng, 1_000))),
        subject,
        received: NOW - 90 * DAY
            + (i as i64 * 90 * DAY) / n.max(1) as i64
            + rng.gen_range(-3600..3600),
        size: rng.gen_range(2_000..200_000),
        ..TraceRecord::default()
    };
    for _ in 0..rng.gen_range(1..4) {
        rec.recipients.push(Recipient {
            address: format!("u{}@{tenant}.com", skewed(rng, 20_000)),
            kind: RecipientKind::Envelope,
        });
    }
    rec.recipients.dedup();
    if rng.gen_bool(0.5) {
        rec.urls.push(format!(
            "https://h{}.example/{}/{}",
            skewed(rng, 10_000),
            WORDS[skewed(rng, WORDS.len())],
            rng.gen_range(0..1_000)
        ));
    }
    if rng.gen_bool(0.1) {
        let bytes: [u8; 32] = rng.r#gen();
        rec.attachments.push(hex::encode(bytes));
    }
    let r: f64 = rng.r#gen();
    rec.disposition = match r {
        r if r < 0.01 => Some(Disposition::Malicious),
        r if r < 0.02 => Some(Disposition::Suspicious),
        r if r < 0.05 => Some(Disposition::Spam),
        r if r < 0.10 => Some(Disposition::Bulk),
        _ => None,
    };
    if rec.disposition.is_some() {
        rec.disposition_source = Some("feed:bench".into());
    }
    if rng.gen_bool(0.005) {
        rec.retracted_at = Some(rec.received + 600);
        rec.retraction_state = Some("retracted".into());
    }
    if i > 0 && rng.gen_bool(0.2) {
        rec.in_reply_to
            .push(format!("<m{}.0@x.example>", rng.gen_range(0..i)));
    }
    rec
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn eml(i: usize) -> String {
    format!(
        "Received: from mx.evil.example by mx.contoso.com; Fri, 20 Nov 2026 08:{:02}:00 +0000\r\n\
         From: \"Sender {i}\" <s{}@d{}.example>\r\nTo: u{}@contoso.com, u{}@contoso.com\r\n\
         Subject: =?UTF-8?B?{}?=\r\nDate: Fri, 20 Nov 2026 08:00:00 +0000\r\nMessage-ID: <eml{i}@bench.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hello, please <a href=\"https://h{}.example/login?u={i}&amp;x=1\">verify</a> \
         your account today. Regards.</p>\r\n--b\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcTl8uXrp/Og0MTGCjEgMCBvYmoKPDwvVHlwZS9DYXRhbG9nPj4KZW5kb2JqCg==\r\n--b--\r\n",
        i % 60,
        i % 50,
        i % 300,
        i % 2_000,
        (i + 7) % 2_000,
        base64_subject(i),
        i % 1_000
    )
}

fn base64_subject(i: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("Rechnung Nr. {i} überfällig"))
}

fn main() {
    let a = args();
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bench: temp dir: {e}");
            std::process::exit(1);
        }
    };
    let store_arg = a.store.as_deref().and_then(|p| p.to_str());
    let postgres = match store_arg {
        Some("postgres") => {
            Some(clawback::store::pg::testing::fresh_database().expect("a PostgreSQL database"))
        }
        Some(s) if clawback::store::pg::is_postgres_url(s) || s.contains("dbname=") => Some(
            clawback::store::pg::PgLocator::parse(s, None).expect("a PostgreSQL connection string"),
        ),
        _ => None,
    };
    let path = a
        .store
        .clone()
        .unwrap_or_else(|| dir.path().join("trace-bench.sqlite3"));
    if postgres.is_none() && path.exists() && !a.reuse {
        eprintln!(
            "bench: {} exists; give a new path (or --reuse)",
            path.display()
        );
        std::process::exit(2);
    }
    let mut store = match &postgres {
        Some(loc) => {
            println!("store: PostgreSQL {loc}");
            Store::open_postgres(loc, None).expect("open store")
        }
        None => Store::open(&path).expect("open store"),
    };
    let stored = store.trace_count().expect("count the stored trace") as usize;
    let reuse = a.reuse && stored > 0;
    if reuse && stored != a.records {
        eprintln!(
            "bench: the store holds {stored} records, not {}; give the same --records as the run that built it",
            a.records
        );
        std::process::exit(2);
    }
    if !reuse && stored > 0 {
        eprintln!("bench: the store already holds {stored} records (--reuse to time it)");
        std::process::exit(2);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(7);

    // 1. Bulk insert (or, with --reuse, the same records generated again for the probes).
    println!("trace bench: {} synthetic records", a.records);
    let started = Instant::now();
    let mut i = 0;
    let mut probes = Vec::new();
    while i < a.records {
        let n = (a.records - i).min(50_000);
        let batch: Vec<TraceRecord> = (i..i + n)
            .map(|k| synthetic(k, a.records, &mut rng))
            .collect();
        probes.push(batch[n / 2].clone());
        if let Some(r) = batch.iter().find(|r| !r.attachments.is_empty()) {
            probes.push(r.clone());
        }
        if !reuse {
            store.upsert_trace(&batch).expect("insert");
        }
        i += n;
    }
    let insert = started.elapsed();
    store.optimize().expect("optimize");
    let size = match &postgres {
        Some(loc) => {
            let conn = clawback::store::pg::PgConn::connect(loc).expect("connect");
            let row = conn
                .query_one("SELECT pg_database_size(current_database())", &[])
                .expect("database size");
            clawback::store::pg::get::<i64>(&row, 0)
                .expect("size")
                .max(0) as u64
        }
        None => store.file_size().expect("size"),
    };
    if reuse {
        println!("insert: skipped (--reuse: {stored} records already stored)");
    } else {
        println!(
            "insert: {} records in {:.1}s = {:.0} records/s (50,000 per transaction)",
            a.records,
            insert.as_secs_f64(),
            a.records as f64 / insert.as_secs_f64()
        );
    }
    println!(
        "store size: {:.1} MB = {:.0} MB per million records",
        size as f64 / 1e6,
        size as f64 / 1e6 * 1e6 / a.records.max(1) as f64
    );
    let space = if postgres.is_some() {
        Vec::new() // SQLite's dbstat
    } else {
        store.space_by_table().expect("dbstat")
    };
    for (name, bytes) in space.iter().take(12) {
        println!(
            "  {name:<32} {:>8.1} MB per million records",
            *bytes as f64 / 1e6 * 1e6 / a.records.max(1) as f64
        );
    }

    // 2. Searches.
    if let Some(w) = a.window {
        store.set_search_window(w);
        println!("search window: {w} rows");
    }
    let p = &probes[probes.len() / 2];
    let mailbox = p.recipients[0].address.clone();
    let sender_domain = p
        .sender
        .rsplit('@')
        .next()
        .unwrap_or("d1.example")
        .to_string();
    let word = p
        .subject
        .split_whitespace()
        .next()
        .unwrap_or("invoice")
        .to_string();
    let sha = probes
        .iter()
        .find_map(|r| r.attachments.first().cloned())
        .unwrap_or_else(|| "0".repeat(64));
    let url_host = probes
        .iter()
        .find_map(|r| {
            r.urls
                .first()
                .and_then(|u| url::Url::parse(u).ok()?.host_str().map(str::to_string))
        })
        .unwrap_or_else(|| "h1.example".into());
    let queries = vec![
        format!("msgid:{}", p.message_id),
        format!("from:{}", p.sender),
        format!("from:{sender_domain}"),
        format!("to:{mailbox}"),
        "to:contoso.com".to_string(),
        format!("subject:{word}"),
        "invoice".to_string(),
        "\"wire transfer\"".to_string(),
        format!("url:{url_host}"),
        format!("sha256:{sha}"),
        format!("domain:{sender_domain}"),
        "disposition:malicious since:7d".to_string(),
        "since:24h".to_string(),
        "tenant:fabrikam since:30d disposition:spam".to_string(),
        "from:d0.example -disposition:none".to_string(),
        "retracted:yes".to_string(),
        "invoice OR payment since:7d".to_string(),
        String::new(),
        "from:s1".to_string(),
        format!("to:{mailbox} subject:{word}"),
    ];
    let mut all = Vec::new();
    println!(
        "\n{:<58} {:>8} {:>8} {:>6}",
        "query (limit 50, newest first)", "p50 ms", "p95 ms", "rows"
    );
    for q in &queries {
        let parsed = parse(q).expect("bench query parses");
        let rows = store.search_at(&parsed, 50, 0, NOW).expect("search").len();
        let mut times = Vec::with_capacity(a.runs);
        for _ in 0..a.runs {
            let t = Instant::now();
            let r = store.search_at(&parsed, 50, 0, NOW).expect("search");
            times.push(t.elapsed());
            std::hint::black_box(r);
        }
        times.sort();
        println!(
            "{:<58} {:>8.2} {:>8.2} {:>6}",
            if q.is_empty() {
                "(empty: everything)"
            } else {
                q.as_str()
            },
            ms(pct(&times, 0.5)),
            ms(pct(&times, 0.95)),
            rows
        );
        if std::env::var_os("TRACE_BENCH_EXPLAIN").is_some() {
            for line in store.explain_search(&parsed).expect("explain") {
                println!("    {line}");
            }
        }
        all.extend(times);
    }
    all.sort();
    println!(
        "search over all {} queries x {} runs: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms (goal p95 <= 25 ms)",
        queries.len(),
        a.runs,
        ms(pct(&all, 0.5)),
        ms(pct(&all, 0.95)),
        ms(*all.last().unwrap_or(&Duration::ZERO))
    );
    let t = Instant::now();
    let total = store
        .count_at(&parse("to:contoso.com").expect("q"), NOW)
        .expect("count");
    println!(
        "count(to:contoso.com) = {total} in {:.1} ms",
        ms(t.elapsed())
    );
    drop(store);

    // 3. EML ingest.
    let mail = dir.path().join("eml");
    std::fs::create_dir_all(&mail).expect("mkdir");
    for i in 0..a.eml {
        std::fs::write(mail.join(format!("{i:07}.eml")), eml(i)).expect("write eml");
    }
    let mut store = Store::open(&dir.path().join("ingest.sqlite3")).expect("open");
    let t = Instant::now();
    let report =
        ingest_paths(&mut store, &[mail], &IngestOptions::default(), &mut |_| {}).expect("ingest");
    let el = t.elapsed();
    println!(
        "\ningest: {} EML files ({}) in {:.2}s = {:.0} messages/s on {} threads (goal >= 5,000/s)",
        a.eml,
        report.summary(),
        el.as_secs_f64(),
        a.eml as f64 / el.as_secs_f64(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // 4. One message with a huge References header.
    let ids: Vec<String> = (0..a.references)
        .map(|i| format!("<r{i}@thread.example>"))
        .collect();
    let folded: Vec<String> = ids.chunks(20).map(|c| c.join(" ")).collect();
    let raw = format!(
        "From: a@evil.example\r\nTo: b@contoso.example\r\nSubject: long thread\r\n\
         Message-ID: <refs@bench.example>\r\nDate: Fri, 20 Nov 2026 08:00:00 +0000\r\n\
         References: {}\r\n\r\nbody\r\n",
        folded.join("\r\n ")
    );
    let t = Instant::now();
    let rec = parse_message(raw.as_bytes(), &IngestOptions::default()).expect("parse");
    let parsed = t.elapsed();
    assert_eq!(rec.references.len(), a.references);
    let t = Instant::now();
    store.upsert_trace(&[rec]).expect("store");
    println!(
        "\nreferences: {} ids ({:.1} MB header) parsed in {:.1} ms, stored in {:.1} ms",
        a.references,
        raw.len() as f64 / 1e6,
        ms(parsed),
        ms(t.elapsed())
    );
}
