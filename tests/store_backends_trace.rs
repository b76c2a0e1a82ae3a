//! The trace and its search on both store backends (issue 17): the same records stored the same
//! way (outcomes, ids, merges), and every query of the language answering the same records in
//! the same order, the same summaries and the same counts, on SQLite (FTS5) and PostgreSQL
//! (`tsvector`/GIN). The case tables of `tests/trace_query.rs` run on both backends too; this
//! file adds a larger trace with the text that tells full-text engines apart (diacritics,
//! decomposed accents, apostrophes, punctuation runs, long words, phrases across addresses),
//! queries generated over it, and two processes storing the same messages at once.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use clawback::model::Disposition;
use clawback::store::{Store, UpsertOutcome};
use clawback::trace::query::parse;
use clawback::trace::{Recipient, RecipientKind, TraceRecord};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

mod store_support;
use store_support::backends;

/// 2026-11-20 00:00:00 UTC.
const T: i64 = 1_795_132_800;

/// Subject words: plain, accented (precomposed and decomposed), with apostrophes, digits,
/// a long run, and punctuation that is a separator to unicode61.
const WORDS: &[&str] = &[
    "invoice",
    "Invoice",
    "überfällig",
    "ecole",
    "e\u{301}cole",
    "Straße",
    "naïve",
    "it's",
    "O'Brien",
    "4411",
    "q4-results",
    "wire/transfer",
    "résumé",
    "Ǆemal",
    "bonus!!",
    "pay_roll",
    "c:\\temp",
    "\"quoted\"",
    "東京",
    "lunch",
];

fn rcpt(address: &str, kind: RecipientKind) -> Recipient {
    Recipient {
        address: address.into(),
        kind,
    }
}

/// Deterministic records; `i` names the message, so the same `i` twice is a merge.
fn record(rng: &mut rand_chacha::ChaCha8Rng, i: usize) -> TraceRecord {
    let pick = |rng: &mut rand_chacha::ChaCha8Rng| WORDS[rng.gen_range(0..WORDS.len())];
    let n = rng.gen_range(1..5);
    let mut subject: Vec<String> = (0..n).map(|_| pick(rng).to_string()).collect();
    if rng.gen_bool(0.05) {
        subject.push("x".repeat(1500));
    }
    let kinds = [
        RecipientKind::Envelope,
        RecipientKind::To,
        RecipientKind::Cc,
        RecipientKind::Bcc,
    ];
    let recipients = (0..rng.gen_range(0..4))
        .map(|_| {
            let local =
                ["alice", "bob", "x.alice", "ünal.dogan", "o'neil", "u7"][rng.gen_range(0..6)];
            let domain = ["contoso.com", "fabrikam.com", "contoso.com.net"][rng.gen_range(0..3)];
            rcpt(&format!("{local}@{domain}"), kinds[rng.gen_range(0..4)])
        })
        .collect();
    let urls = (0..rng.gen_range(0..3))
        .map(|_| {
            format!(
                "https://{}.example/{}?id={}",
                ["login.evil", "intranet", "h2"][rng.gen_range(0..3)],
                pick(rng),
                rng.gen_range(0..5)
            )
        })
        .collect();
    TraceRecord {
        tenant: ["contoso", "fabrikam"][i % 2].into(),
        message_id: format!("<m{i}@x.example>"),
        sender: [
            "mallory@evil.example",
            "pat@partner.example",
            "zoë.bob@evil.example",
        ][i % 3]
            .into(),
        sender_name: i.is_multiple_of(4).then(|| "Mallory Évil-Twin".to_string()),
        subject: subject.join(" "),
        // Few distinct times: the id tie-break decides much of the order.
        received: T - rng.gen_range(0..30) * 3600,
        size: 1000 + i as u64,
        recipients,
        urls,
        attachments: i
            .is_multiple_of(5)
            .then(|| format!("{:064x}", i % 3))
            .into_iter()
            .collect(),
        in_reply_to: (i % 6 == 1)
            .then(|| format!("<m{}@x.example>", i - 1))
            .into_iter()
            .collect(),
        disposition: match rng.gen_range(0..6) {
            0 => Some(Disposition::Malicious),
            1 => Some(Disposition::Spam),
            2 => Some(Disposition::Bulk),
            _ => None,
        },
        disposition_source: Some("header".into()),
        ..TraceRecord::default()
    }
}

/// The trace every test of this file stores: 400 messages in batches, a fifth of them seen
/// again later (merged: more recipients, URLs, a disposition), some twice in one batch.
fn batches() -> Vec<Vec<TraceRecord>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let mut out = Vec::new();
    for b in 0..8 {
        let mut batch: Vec<TraceRecord> =
            (b * 50..b * 50 + 50).map(|i| record(&mut rng, i)).collect();
        // Seen again: in this batch, and from an earlier one.
        let again = record(&mut rng, b * 50 + 3);
        batch.push(again);
        if b > 0 {
            for k in 0..10 {
                let mut r = record(&mut rng, (b - 1) * 50 + k * 5);
                r.received = T; // an update never moves a stored row in time
                batch.push(r);
            }
        }
        out.push(batch);
    }
    out
}

/// Stores the trace; returns what each write said.
fn fill(s: &mut Store) -> Vec<String> {
    let mut outcomes = Vec::new();
    for batch in batches() {
        let said = s.upsert_trace(&batch).unwrap();
        outcomes.extend(said.iter().map(|o| format!("{o:?}")));
    }
    for (i, d) in [
        (7, Disposition::Malicious),
        (8, Disposition::Bulk),
        (9, Disposition::Spam),
    ] {
        let u = s
            .set_disposition(None, &format!("<m{i}@x.example>"), d, "verdict")
            .unwrap();
        outcomes.push(format!("{u:?}"));
    }
    for id in [3, 40, 41, 200] {
        s.set_retraction(id, Some(T - 5), Some("retracted"))
            .unwrap();
    }
    s.set_retraction(41, None, None).unwrap();
    outcomes
}

fn stores() -> (tempfile::TempDir, Vec<(&'static str, Store)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut outcomes = Vec::new();
    let stores = backends(&dir)
        .iter()
        .map(|raw| {
            let mut s = raw.open();
            outcomes.push(fill(&mut s));
            (raw.name(), s)
        })
        .collect();
    assert_eq!(
        outcomes[0], outcomes[1],
        "the same outcomes and ids on both backends"
    );
    for kind in ["Inserted", "Merged", "Unchanged"] {
        assert!(
            outcomes[0].iter().any(|o| o.starts_with(kind)),
            "some upsert said {kind}"
        );
    }
    (dir, stores)
}

/// Everything a search says about `q` on one store: full records of two pages, summaries,
/// the count.
fn answer(s: &Store, q: &str) -> (Vec<TraceRecord>, Vec<TraceRecord>, Vec<String>, u64) {
    let query = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    let first = s.search_at(&query, 25, 0, T).unwrap();
    let later = s.search_at(&query, 7, 31, T).unwrap();
    let summaries = s
        .search_summaries_at(&query, 40, 0, T, |m| {
            format!("{} {} {}", m.message_id, m.copies, m.received)
        })
        .unwrap();
    let count = s.count_at(&query, T).unwrap();
    (first, later, summaries, count)
}

fn same_answer(stores: &[(&'static str, Store)], q: &str) -> u64 {
    let want = answer(&stores[0].1, q);
    for (backend, s) in &stores[1..] {
        let got = answer(s, q);
        assert_eq!(got.0, want.0, "{backend}: first page of {q:?}");
        assert_eq!(got.1, want.1, "{backend}: later page of {q:?}");
        assert_eq!(got.2, want.2, "{backend}: summaries of {q:?}");
        assert_eq!(got.3, want.3, "{backend}: count of {q:?}");
    }
    want.3
}

#[test]
fn every_query_gives_the_same_records_on_both_backends() {
    let (_d, stores) = stores();
    let queries = [
        "",
        "invoice",
        "INVOICE",
        "uberfallig",
        "überfällig",
        "ecole",
        "e\u{301}cole",
        "école",
        "strasse",
        "straße",
        "naive",
        "it",
        "\"it's\"",
        "\"o brien\"",
        "o'brien",
        "4411",
        "\"q4 results\"",
        "q4-results",
        "wire/transfer",
        "\"transfer résumé\"",
        "resume",
        "ǆemal",
        "dz*",
        "東京",
        "東*",
        "pay_roll",
        "\"c temp\"",
        "quoted",
        "inv*",
        "\"invoice invoice\"",
        "\"invoice inv\"*",
        &format!("subject:{}", "x".repeat(1500)),
        &format!("subject:{}*", "x".repeat(1200)),
        &"x".repeat(999),
        "subject:\"uberfallig ecole\"",
        "subject:invoice -subject:lunch",
        "from:mallory@evil.example",
        "from:evil.example",
        "from:mall",
        "from:evil",
        "from:twin",
        "from:\"mallory evil\"",
        "from:zoe",
        "to:alice@contoso.com",
        "to:ünal.dogan@contoso.com",
        "to:contoso.com",
        "to:alice",
        "to:unal",
        "to:neil",
        // A phrase across two addresses of the recipients column.
        "\"com bob\"",
        "\"com alice\"",
        "\"contoso com alice\"",
        "url:login.evil.example",
        "url:\"intranet example\"",
        "url:id",
        "domain:h2.example",
        "domain:contoso.com",
        "domain:evil.example",
        "msgid:<m7@x.example>",
        &format!("sha256:{:064x}", 1),
        "disposition:malicious",
        "disposition:bulk",
        "disposition:none",
        "disposition:any",
        "tenant:fabrikam",
        "since:5h",
        "until:20h",
        "since:1d until:3h",
        "retracted:yes",
        "retracted:no",
        "retracted:yes invoice",
        "-invoice",
        "-to:contoso.com",
        "-\"@@\"",
        "\"@@\"",
        "invoice OR lunch",
        "(from:evil.example OR tenant:fabrikam) -invoice",
        "to:alice@contoso.com invoice",
        "to:alice@contoso.com -invoice",
        "from:mallory@evil.example to:bob@fabrikam.com inv*",
        "invoice lunch -disposition:spam",
        "-(invoice -(lunch OR wire))",
        "\u{903}",
        "invoice \u{903}",
        "-\u{903}",
    ];
    let mut matched = 0;
    for q in queries {
        if same_answer(&stores, q) > 0 {
            matched += 1;
        }
    }
    // The cases are not vacuous: most of them find something.
    assert!(
        matched > queries.len() * 3 / 4,
        "{matched} of {}",
        queries.len()
    );
}

#[test]
fn lookups_and_conversation_steps_are_the_same_on_both_backends() {
    let (_d, stores) = stores();
    let [(_, sqlite), (_, pg)] = &stores[..] else {
        panic!("two backends");
    };
    assert_eq!(pg.trace_count().unwrap(), sqlite.trace_count().unwrap());
    for i in [0, 3, 7, 50, 53, 151, 399, 4000] {
        let id = format!("<m{i}@x.example>");
        assert_eq!(
            pg.trace_by_message_id(&id).unwrap(),
            sqlite.trace_by_message_id(&id).unwrap(),
            "{id}"
        );
        assert_eq!(
            pg.trace_by_id(i as i64).unwrap(),
            sqlite.trace_by_id(i as i64).unwrap(),
            "row {i}"
        );
    }
    let ids: Vec<String> = (0..60).map(|i| format!("<m{i}@x.example>")).collect();
    let replies = sqlite.replies_to(&ids).unwrap();
    assert!(!replies.is_empty());
    assert_eq!(pg.replies_to(&ids).unwrap(), replies);
    // What the engine changed reads back the same.
    let row = pg.trace_by_id(40).unwrap().unwrap();
    assert_eq!(row.retraction_state.as_deref(), Some("retracted"));
    assert_eq!(pg.trace_by_id(41).unwrap().unwrap().retracted_at, None);
    let m7 = pg.trace_by_message_id("<m7@x.example>").unwrap();
    assert_eq!(m7[0].disposition, Some(Disposition::Malicious));
}

/// Queries made of the language's pieces over words of the stored trace: whatever parses gives
/// the same answer on both backends.
#[test]
fn generated_queries_give_the_same_answers_on_both_backends() {
    let (_d, stores) = stores();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    let atom = proptest::string::string_regex(
        "-?((from|to|subject|url|domain|disposition|tenant|since|retracted):(mall|evil|alice@contoso\\.com|contoso\\.com|\"com bob\"|invoice|e\u{301}cole|none|any|spam|fabrikam|yes|no|5h|h2\\.example)|invoice|inv\\*|\"invoice 4411\"|uberfallig|strasse|\u{fc}berf\u{e4}llig|o'brien|\"o brien\"|\u{6771}\u{4eac}|@@|\\*|x{1001}\\*?)",
    )
    .unwrap();
    // Well-formed shapes, so that most cases parse and run: words side by side, OR, groups.
    let strategy = atom.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} OR {b}")),
            inner.clone().prop_map(|a| format!("({a})")),
            inner.prop_map(|a| format!("-({a})")),
        ]
    });
    let nonempty = std::cell::Cell::new(0);
    runner
        .run(&strategy, |q| {
            // (A field with a value of another field's kind does not parse: skipped.)
            if parse(&q).is_ok() && same_answer(&stores, &q) > 0 {
                nonempty.set(nonempty.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    let nonempty = nonempty.get();
    assert!(
        nonempty > 100,
        "only {nonempty} generated queries found rows"
    );
}

const CHILD_ENV: &str = "CLAWBACK_TEST_TRACE_CHILD";

/// Child process: stores the shared messages, each with recipients of its own, and prints how
/// many it inserted.
#[test]
#[ignore = "run as a child process by two_processes_storing_the_same_messages_at_once_insert_each_once"]
fn trace_upsert_child() {
    let Ok(tag) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut store = store_support::open_from_env();
    let me: usize = tag.parse().unwrap();
    let mut inserted = 0;
    // Each process walks the messages in its own order, in batches of 20.
    let mut order: Vec<usize> = (0..MESSAGES).collect();
    if me % 2 == 1 {
        order.reverse();
    }
    for chunk in order.chunks(20) {
        let batch: Vec<TraceRecord> = chunk
            .iter()
            .map(|&i| TraceRecord {
                tenant: "contoso".into(),
                message_id: format!("<race{i}@x.example>"),
                sender: "mallory@evil.example".into(),
                subject: format!("race {i}"),
                received: T - i as i64,
                recipients: vec![rcpt(&format!("p{me}@contoso.com"), RecipientKind::Envelope)],
                ..TraceRecord::default()
            })
            .collect();
        for o in store.upsert_trace(&batch).unwrap() {
            if matches!(o, UpsertOutcome::Inserted(_)) {
                inserted += 1;
            }
        }
    }
    println!("inserted={inserted}");
}

const MESSAGES: usize = 300;
const PROCESSES: usize = 3;

#[test]
fn two_processes_storing_the_same_messages_at_once_insert_each_once() {
    let dir = tempfile::tempdir().unwrap();
    for raw in backends(&dir) {
        let name = raw.name();
        drop(raw.open()); // the schema, before the writers race
        let children: Vec<_> = (0..PROCESSES)
            .map(|i| {
                store_support::spawn_child(&raw, "trace_upsert_child", CHILD_ENV, &i.to_string())
            })
            .collect();
        let mut inserted = 0;
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{name}: a child failed");
            let text = String::from_utf8_lossy(&out.stdout);
            inserted += text
                .lines()
                .find_map(|l| l.strip_prefix("inserted="))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("{name}: child said {text}"));
        }
        assert_eq!(inserted, MESSAGES, "{name}: each message inserted once");
        let store = raw.open();
        assert_eq!(store.trace_count().unwrap(), MESSAGES as u64, "{name}");
        let everyone: Vec<String> = (0..PROCESSES)
            .map(|p| format!("p{p}@contoso.com"))
            .collect();
        for i in 0..MESSAGES {
            let recs = store
                .trace_by_message_id(&format!("<race{i}@x.example>"))
                .unwrap();
            assert_eq!(recs.len(), 1, "{name}: one row for message {i}");
            assert_eq!(
                recs[0].delivered_to(),
                everyone,
                "{name}: message {i} holds every process's recipient"
            );
        }
        // And the search index holds what the merges added.
        let q = parse(&format!("to:p{} race", PROCESSES - 1)).unwrap();
        assert_eq!(store.count_at(&q, T).unwrap(), MESSAGES as u64, "{name}");
    }
}

/// A message to 70,000 mailboxes has more distinct words than a PostgreSQL `tsvector` holds
/// (1 MB): its row is searched through its words instead, with the same answers as FTS5, also
/// after a merge rewrites them.
#[test]
fn a_message_to_more_mailboxes_than_a_tsvector_holds_is_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let big = TraceRecord {
        tenant: "contoso".into(),
        message_id: "<all-staff@contoso.com>".into(),
        sender: "ceo@contoso.com".into(),
        subject: "Holiday schedule".into(),
        received: T - 60,
        recipients: (0..70_000)
            .map(|i| rcpt(&format!("user{i}@contoso.com"), RecipientKind::Envelope))
            .collect(),
        ..TraceRecord::default()
    };
    let small = TraceRecord {
        message_id: "<small@contoso.com>".into(),
        subject: "Holiday party".into(),
        recipients: vec![rcpt("user5@contoso.com", RecipientKind::To)],
        received: T - 120,
        ..big.clone()
    };
    let queries = [
        "holiday",
        "to:user69999",
        "to:user5@contoso.com",
        "to:user5@contoso.com holiday",
        "\"user68000 contoso\"",
        "\"com user12\"",
        "user4*",
        "-to:user3",
        "holiday -schedule",
        "to:late",
    ];
    let mut answers = Vec::new();
    for raw in backends(&dir) {
        let mut s = raw.open();
        s.upsert_trace(&[big.clone(), small.clone()]).unwrap();
        let mut said: Vec<u64> = queries
            .iter()
            .map(|q| s.count_at(&parse(q).unwrap(), T).unwrap())
            .collect();
        // A merge rewrites the words of the row.
        let late = TraceRecord {
            recipients: vec![rcpt("late@contoso.com", RecipientKind::Envelope)],
            ..big.clone()
        };
        let merged = s.upsert_trace(&[late]).unwrap();
        assert!(matches!(merged[0], UpsertOutcome::Merged(_)), "{merged:?}");
        said.extend(
            queries
                .iter()
                .map(|q| s.count_at(&parse(q).unwrap(), T).unwrap()),
        );
        if let store_support::Raw::Postgres(loc) = &raw {
            let conn = clawback::store::pg::PgConn::connect(loc).unwrap();
            let row = conn
                .query_one("SELECT count(*) FROM trace WHERE fts_partial", &[])
                .unwrap();
            assert_eq!(
                clawback::store::pg::get::<i64>(&row, 0).unwrap(),
                1,
                "the big row is searched through its words"
            );
        }
        answers.push(said);
    }
    assert_eq!(
        answers[0],
        [2, 1, 2, 2, 1, 1, 1, 1, 1, 0, 2, 1, 2, 2, 1, 1, 1, 1, 1, 1],
        "sqlite"
    );
    assert_eq!(answers[1], answers[0], "postgres gives SQLite's answers");
}
