//! Ingestion over the hostile EML corpus in tests/fixtures/eml/: every input is indexed or
//! rejected with a named reason, counts are exact, and a second ingest changes nothing.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use clawback::model::Disposition;
use clawback::store::Store;
use clawback::trace::TraceRecord;
use clawback::trace::ingest::{
    IngestOptions, IngestReport, RejectReason, ingest_paths, parse_message,
};
use clawback::trace::query::parse;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eml")
}

fn opts() -> IngestOptions {
    IngestOptions {
        now: 1_795_132_800,
        ..IngestOptions::default()
    }
}

fn ingest(store: &mut Store, o: &IngestOptions) -> IngestReport {
    ingest_paths(store, &[corpus()], o, &mut |_| {}).unwrap()
}

fn one(store: &Store, id: &str) -> TraceRecord {
    let mut v = store.trace_by_message_id(id).unwrap();
    assert_eq!(v.len(), 1, "{id}: {v:?}");
    v.remove(0)
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[test]
fn corpus_counts_and_idempotent_second_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open_in_dir(dir.path()).unwrap();
    let r = ingest(&mut store, &opts());
    // 20 distinct messages; the BCC copy's twin and the repeated mbox message are duplicates.
    assert_eq!(r.messages, 26, "{r:?}");
    assert_eq!(
        (r.indexed, r.merged, r.duplicate),
        (20, 0, 2),
        "{}",
        r.summary()
    );
    let rejected: Vec<(RejectReason, u64)> = r.rejected.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(
        rejected,
        vec![
            (RejectReason::Empty, 1),
            (RejectReason::Binary, 1),
            (RejectReason::NotAMessage, 1),
            (RejectReason::NoMessageHeaders, 1),
            (RejectReason::BadVerdict, 2),
        ]
    );
    let names: Vec<(String, RejectReason)> = r
        .rejections
        .iter()
        .map(|(at, why)| (at.rsplit('/').next().unwrap().to_string(), *why))
        .collect();
    assert_eq!(
        names,
        vec![
            ("binary.eml".to_string(), RejectReason::Binary),
            ("empty.eml".to_string(), RejectReason::Empty),
            (
                "no-core-headers.eml".to_string(),
                RejectReason::NoMessageHeaders
            ),
            ("not-mail.txt".to_string(), RejectReason::NotAMessage),
            ("verdicts.jsonl:4".to_string(), RejectReason::BadVerdict),
            ("verdicts.jsonl:5".to_string(), RejectReason::BadVerdict),
        ]
    );
    assert_eq!(
        (r.verdicts, r.verdicts_upgraded, r.verdicts_unmatched),
        (5, 1, 1)
    );
    assert_eq!(store.trace_count().unwrap(), 20);
    let before = store.search(&parse("").unwrap(), 100, 0).unwrap();

    let again = ingest(&mut store, &opts());
    assert_eq!((again.indexed, again.merged, again.duplicate), (0, 0, 22));
    assert_eq!(again.verdicts_upgraded, 0);
    let after = store.search(&parse("").unwrap(), 100, 0).unwrap();
    assert_eq!(before, after, "a second ingest must change nothing");
}

#[test]
fn charsets_decode() {
    let mut store = Store::open_in_memory().unwrap();
    ingest(&mut store, &opts());
    let subject = |id: &str| one(&store, id).subject;
    assert_eq!(
        subject("<utf8b@fixtures.test>"),
        "Rechnung überfällig – jetzt zahlen"
    );
    assert_eq!(subject("<utf8q@fixtures.test>"), "Café invoice €42");
    assert_eq!(subject("<latin1@fixtures.test>"), "Grüße aus Köln");
    assert_eq!(
        subject("<cp1252@fixtures.test>"),
        "\u{201c}Quoted\u{201d} €100 refund"
    );
    assert_eq!(subject("<koi8@fixtures.test>"), "Счёт на оплату");
    assert_eq!(subject("<sjis@fixtures.test>"), "請求書のお知らせ");
    // The Shift_JIS body was decoded too: its URL was found.
    assert_eq!(
        one(&store, "<sjis@fixtures.test>").urls,
        vec!["https://jp.evil.example/pay"]
    );
    // 8-bit garbage survives as replacement characters, not a crash.
    assert!(subject("<garbage@fixtures.test>").starts_with("Win "));
}

#[test]
fn hostile_structure() {
    let mut store = Store::open_in_memory().unwrap();
    ingest(&mut store, &opts());

    let broken = one(&store, "<broken@fixtures.test>");
    assert!(
        broken
            .urls
            .contains(&"https://html.evil.example/y?a=1&b=2".to_string()),
        "{:?}",
        broken.urls
    );

    let long = one(&store, "<long@fixtures.test>");
    assert_eq!(long.subject.chars().count(), 2_000);
    assert_eq!(long.references.len(), 500);

    let dup = store
        .search(&parse("subject:\"second subject\"").unwrap(), 10, 0)
        .unwrap();
    assert_eq!(dup.len(), 1);
    assert_eq!(dup[0].sender, "second@evil.example");
    let to: Vec<&str> = dup[0].delivered_to();
    assert_eq!(to, vec!["alice@contoso.com", "bob@contoso.com"]);

    let nested = one(&store, "<forward@fixtures.test>");
    assert!(
        nested
            .urls
            .contains(&"https://inner.evil.example/claim".to_string())
    );
    assert!(
        nested
            .attachments
            .contains(&sha256(b"%PDF-1.4 evil payload\n")),
        "{:?}",
        nested.attachments
    );

    let crlf = one(&store, "<crlf@fixtures.test>");
    assert_eq!(crlf.subject, "CRLF line endings");
    assert_eq!(crlf.urls, vec!["https://crlf.example/z"]);
    assert_eq!(crlf.received, 1_795_132_800 + 8 * 3600 + 14 * 60);

    // Maildir cur/ and new/ are read, tmp/ is not; mbox messages are split.
    assert_eq!(
        one(&store, "<maildir1@fixtures.test>").subject,
        "Maildir cur"
    );
    assert_eq!(
        one(&store, "<maildir2@fixtures.test>").subject,
        "Maildir new"
    );
    assert!(
        store
            .trace_by_message_id("<maildir3@fixtures.test>")
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        one(&store, "<mbox2@fixtures.test>").delivered_to(),
        vec!["bob@contoso.com"]
    );
}

#[test]
fn synthetic_ids_are_stable_and_marked() {
    let raw = std::fs::read(corpus().join("no-message-id.eml")).unwrap();
    let a = parse_message(&raw, &opts()).unwrap();
    let b = parse_message(&raw, &opts()).unwrap();
    assert!(a.synthetic_id);
    assert_eq!(a.message_id, b.message_id);
    assert!(
        a.message_id.ends_with("@synthetic.clawback.invalid>"),
        "{}",
        a.message_id
    );
    // A BCC copy of the same message (extra Delivered-To) gets the same id.
    let mut copy = b"Delivered-To: zed@contoso.com\n".to_vec();
    copy.extend_from_slice(&raw);
    assert_eq!(
        parse_message(&copy, &opts()).unwrap().message_id,
        a.message_id
    );
    let real = parse_message(
        &std::fs::read(corpus().join("utf8-q.eml")).unwrap(),
        &opts(),
    )
    .unwrap();
    assert!(!real.synthetic_id);
}

#[test]
fn journal_report_and_bcc_copy_give_envelope_recipients() {
    let mut store = Store::open_in_memory().unwrap();
    ingest(&mut store, &opts());
    let j = one(&store, "<journaled@evil.example>");
    assert_eq!(j.subject, "Quarterly bonus");
    assert_eq!(j.sender, "mallory@evil.example");
    assert_eq!(
        j.delivered_to(),
        vec!["bob@contoso.com", "carol@contoso.com", "erin@contoso.com"]
    );
    assert_eq!(j.urls, vec!["https://bonus.evil.example/q4"]);
    // The report's own Message-ID is not indexed as a message.
    assert!(
        store
            .trace_by_message_id("<report1@contoso.com>")
            .unwrap()
            .is_empty()
    );

    let bcc = one(&store, "<utf8b@fixtures.test>");
    assert_eq!(bcc.delivered_to(), vec!["frank@contoso.com"]);
}

#[test]
fn dispositions_from_header_and_feed_never_downgrade() {
    let mut store = Store::open_in_memory().unwrap();
    ingest(&mut store, &opts());
    let a = one(&store, "<attach@fixtures.test>");
    assert_eq!(a.disposition, Some(Disposition::Malicious));
    assert_eq!(
        a.disposition_source.as_deref(),
        Some("header:X-Clawback-Disposition")
    );
    assert_eq!(a.attachments, vec![sha256(b"hello attachment\n")]);
    let u = one(&store, "<utf8b@fixtures.test>");
    assert_eq!(u.disposition, Some(Disposition::Suspicious));
    assert_eq!(u.disposition_source.as_deref(), Some("feed:defender"));
    // Upgrade, then an attempted downgrade.
    let up = store
        .set_disposition(
            None,
            "<utf8b@fixtures.test>",
            Disposition::Malicious,
            "feed:x",
        )
        .unwrap();
    assert_eq!((up.matched, up.upgraded), (1, 1));
    let down = store
        .set_disposition(None, "<utf8b@fixtures.test>", Disposition::Bulk, "feed:y")
        .unwrap();
    assert_eq!((down.matched, down.upgraded), (1, 0));
    assert_eq!(
        one(&store, "<utf8b@fixtures.test>")
            .disposition_source
            .as_deref(),
        Some("feed:x")
    );
}

#[test]
fn configured_disposition_header_and_tenants() {
    let mut o = opts();
    o.disposition_headers = vec!["X-Verdict".into()];
    o.tenants = vec![
        ("fabrikam".into(), vec!["fabrikam.com".into()]),
        ("contoso".into(), vec!["contoso.com".into()]),
    ];
    let raw = b"From: x@evil.example\nTo: someone@eu.contoso.com\nSubject: s\nX-Verdict: spam\nX-Clawback-Disposition: malicious\nMessage-ID: <t@x>\n\nb\n";
    let r = parse_message(raw, &o).unwrap();
    assert_eq!(r.tenant, "contoso");
    assert_eq!(r.disposition, Some(Disposition::Spam));
    assert_eq!(r.disposition_source.as_deref(), Some("header:X-Verdict"));
    // Outbound mail: the sender's domain decides when no recipient matches.
    let raw = b"From: boss@fabrikam.com\nTo: a@elsewhere.example\nSubject: s\n\nb\n";
    assert_eq!(parse_message(raw, &o).unwrap().tenant, "fabrikam");
    // No tenants configured: empty.
    assert_eq!(parse_message(raw, &opts()).unwrap().tenant, "");
}

#[test]
fn merging_a_new_copy_adds_recipients_and_reports_merged() {
    let mut store = Store::open_in_memory().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = "From: m@evil.example\nTo: a@contoso.com\nSubject: merge me\nMessage-ID: <merge@x>\n\nhttps://m.example/1\n";
    let mut copy_to = |mailbox: &str| {
        let file = dir.path().join(format!("{mailbox}.eml"));
        std::fs::write(file, format!("Delivered-To: {mailbox}@contoso.com\n{base}")).unwrap();
        ingest_paths(
            &mut store,
            &[dir.path().to_path_buf()],
            &opts(),
            &mut |_| {},
        )
        .unwrap()
    };
    assert_eq!(copy_to("a").indexed, 1);
    let r = copy_to("b");
    assert_eq!((r.indexed, r.merged, r.duplicate), (0, 1, 1));
    let m = one(&store, "<merge@x>");
    assert_eq!(m.delivered_to(), vec!["a@contoso.com", "b@contoso.com"]);
    // The merged recipient is searchable (the FTS row was refreshed).
    let hits = store.search(&parse("to:b").unwrap(), 10, 0).unwrap();
    assert_eq!(hits.len(), 1);
}

#[test]
fn replies_follow_in_reply_to_and_references() {
    let mut store = Store::open_in_memory().unwrap();
    ingest(&mut store, &opts());
    let replies = store
        .replies_to(&["<utf8b@fixtures.test>".to_string()])
        .unwrap();
    let ids: Vec<&str> = replies.iter().map(|r| r.message_id.as_str()).collect();
    assert_eq!(ids, vec!["<reply@fixtures.test>"]);
    assert_eq!(replies[0].thread_index.as_deref(), Some("AQHZ1234abcd=="));
    assert!(
        store
            .replies_to(&["<reply@fixtures.test>".to_string()])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn unreadable_path_is_an_error_naming_it() {
    let mut store = Store::open_in_memory().unwrap();
    let e = ingest_paths(
        &mut store,
        &[PathBuf::from("/nonexistent/x.eml")],
        &opts(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/x.eml: "), "{e}");
}
