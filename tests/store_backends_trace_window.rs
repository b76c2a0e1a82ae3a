//! The newest-first search window on both store backends (issue 17): a search tries the newest
//! window/20 rows, then the window (`Store::set_search_window`), then the whole trace, bounding
//! every subquery by the window's smallest id. Whatever the window, the answer is the one the
//! unbounded search gives on SQLite: the same records in the same order, for limits inside and
//! beyond the window, offsets across its edge, and queries whose matches are all older than it.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use clawback::model::Disposition;
use clawback::store::Store;
use clawback::store::trace::RECENT_WINDOW;
use clawback::trace::query::parse;
use clawback::trace::{Recipient, RecipientKind, TraceRecord};

mod store_support;
use store_support::backends;

/// 2026-11-20 00:00:00 UTC.
const T: i64 = 1_795_132_800;

/// Messages in the trace.
const N: usize = 300;

/// Messages stored early whose time is the newest of the trace (a sync that met them first):
/// the smallest ids of every window, which bounds the subqueries.
const LATE: [usize; 3] = [10, 12, 20];

/// Message `i` of the trace: ids follow arrival (`i`), times roughly so, with ties, a few rows
/// older than rows stored before them, and the [`LATE`] ones newest of all.
fn record(i: usize) -> TraceRecord {
    let late = LATE.contains(&i);
    let jitter = [0, 0, -90, 45, -300, 0, 120][i % 7];
    let mut subject = vec!["report"];
    if i.is_multiple_of(2) {
        subject.push("invoice");
    }
    if i.is_multiple_of(9) {
        subject.push("wire transfer");
    }
    if i < 25 && !late {
        subject.push("ancient");
    }
    if i > N - 12 {
        subject.push("fresh");
    }
    let domain = ["contoso.com", "fabrikam.com", "northwind.com"][i % 3];
    let mut recipients = vec![Recipient {
        address: format!("u{}@{domain}", i % 11),
        kind: RecipientKind::Envelope,
    }];
    if i < 30 && !late {
        recipients.push(Recipient {
            address: "archive@old.example".into(),
            kind: RecipientKind::To,
        });
    }
    TraceRecord {
        tenant: ["contoso", "fabrikam"][i % 2].into(),
        message_id: format!("<w{i}@x.example>"),
        sender: format!("s{}@{}", i % 4, ["evil.example", "partner.example"][i % 2]),
        subject: subject.join(" "),
        // Two messages a minute (the id breaks ties), jittered.
        received: if late {
            T + 30
        } else {
            T - (N as i64 - i as i64) / 2 * 60 + jitter
        },
        size: 1000,
        recipients,
        urls: i
            .is_multiple_of(4)
            .then(|| format!("https://{}.example/login", ["h1", "h2"][i % 8 / 4]))
            .into_iter()
            .collect(),
        attachments: i
            .is_multiple_of(10)
            .then(|| format!("{:064x}", i % 3))
            .into_iter()
            .collect(),
        disposition: i.is_multiple_of(6).then_some(Disposition::Malicious),
        disposition_source: Some("feed".into()),
        ..TraceRecord::default()
    }
}

/// Stores the trace in batches, then merges a few old messages again (new recipients, a
/// disposition: their rows keep their ids and times).
fn fill(s: &mut Store) {
    let all: Vec<TraceRecord> = (0..N).map(record).collect();
    for batch in all.chunks(70) {
        s.upsert_trace(batch).unwrap();
    }
    let mut again: Vec<TraceRecord> = [3, 40, 41, 150].into_iter().map(record).collect();
    for r in &mut again {
        r.recipients.push(Recipient {
            address: "late@contoso.com".into(),
            kind: RecipientKind::Cc,
        });
        r.disposition = Some(Disposition::Malicious);
    }
    s.upsert_trace(&again).unwrap();
    for id in [5, 290, 295] {
        s.set_retraction(id, Some(T), Some("retracted")).unwrap();
    }
}

const QUERIES: &[&str] = &[
    "",
    "report",
    "invoice",
    "\"wire transfer\"",
    "inv*",
    "fresh",
    // Matches only older than any window below.
    "ancient",
    "to:archive@old.example",
    "msgid:<w7@x.example>",
    "until:2h",
    "to:late@contoso.com",
    "from:s1@partner.example",
    "from:evil.example",
    "from:s2",
    "to:u3@fabrikam.com",
    "to:contoso.com",
    "to:u3",
    "domain:contoso.com",
    "domain:h2.example",
    "domain:contoso.com invoice -fresh",
    "domain:evil.example -domain:h2.example",
    "url:h1.example",
    "sha256:0000000000000000000000000000000000000000000000000000000000000001",
    "disposition:malicious",
    "disposition:none",
    "tenant:fabrikam",
    "since:1h",
    "retracted:yes",
    "retracted:no invoice",
    "-invoice",
    "-to:contoso.com",
    "invoice OR ancient",
    "(to:contoso.com OR domain:h2.example) -disposition:malicious",
    "to:u5@fabrikam.com invoice",
    "from:s0@evil.example report -fresh",
];

/// Windows: none, one whose twentieth holds one row, windows inside the trace, one larger.
const WINDOWS: [usize; 5] = [0, 20, 60, 200, RECENT_WINDOW];

/// (limit, offset): inside the smallest windows, across their edge, beyond the whole trace.
const PAGES: [(usize, usize); 10] = [
    (1, 0),
    (3, 0),
    (5, 2),
    (10, 0),
    (10, 25),
    (30, 0),
    (40, 100),
    (2, 298),
    (500, 0),
    (0, 4),
];

type Answer = (Vec<String>, Vec<String>);

/// What a search says (Message-IDs with their recipients) and its summaries.
fn answer(s: &Store, q: &str, limit: usize, offset: usize) -> Answer {
    let query = parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
    let full = s
        .search_at(&query, limit, offset, T)
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {:?}", r.message_id, r.recipients))
        .collect();
    let summaries = s
        .search_summaries_at(&query, limit, offset, T, |m| {
            format!("{} {}", m.message_id, m.copies)
        })
        .unwrap();
    (full, summaries)
}

#[test]
fn every_window_gives_the_unbounded_answer_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let mut stores: Vec<(&str, Store)> = Vec::new();
    for raw in backends(&dir) {
        let mut s = raw.open();
        fill(&mut s);
        stores.push((raw.name(), s));
    }
    // The reference: SQLite without a window.
    stores[0].1.set_search_window(0);
    let want: Vec<Vec<Answer>> = QUERIES
        .iter()
        .map(|q| {
            PAGES
                .iter()
                .map(|&(l, o)| answer(&stores[0].1, q, l, o))
                .collect()
        })
        .collect();
    let found = want.iter().filter(|pages| !pages[0].0.is_empty()).count();
    assert_eq!(found, QUERIES.len(), "every query finds rows");
    for (backend, s) in &mut stores {
        for window in WINDOWS {
            s.set_search_window(window);
            for (q, pages) in QUERIES.iter().zip(&want) {
                for (&(limit, offset), want) in PAGES.iter().zip(pages) {
                    assert_eq!(
                        &answer(s, q, limit, offset),
                        want,
                        "{backend}: {q:?} window {window} limit {limit} offset {offset}"
                    );
                }
            }
        }
    }
}
