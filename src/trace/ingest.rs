//! `trace ingest`: EML files, directories of them (recursive, which covers Maildir `cur/new`),
//! mbox files, Microsoft journal reports, BCC/journal copies (`X-Original-To`, `Delivered-To`)
//! and JSON Lines verdict feeds. Parsing runs on all cores; records are stored in batches, one
//! transaction each. Every input is either indexed or rejected with a [`RejectReason`].

use super::{RecipientKind, TraceRecord, message_id_list};
use crate::config::Config;
use crate::model::{Disposition, address_domain, normalize_message_id};
use crate::store::{Store, StoreError, UpsertOutcome};
use mail_parser::{Address, HeaderValue, Message, MessageParser, PartType};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest subject kept (characters); hostile inputs carry megabyte headers.
const MAX_SUBJECT_CHARS: usize = 2_000;
/// Most URLs kept per message.
const MAX_URLS: usize = 200;
/// Messages parsed and stored per transaction.
const BATCH: usize = 4_096;
/// How deep nested `message/rfc822` parts are searched for URLs and attachments.
const MAX_NESTING: usize = 4;

/// Why an input was not indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// Zero bytes or only whitespace.
    Empty,
    /// Mostly control bytes (NUL among them) in the first 4 KB: not a text message.
    Binary,
    /// Text, but it does not start with RFC 5322 header fields.
    NotAMessage,
    /// Header fields, but none of From, Sender, To, Subject, Date or Message-ID.
    NoMessageHeaders,
    /// The file could not be read.
    Unreadable,
    /// A verdict-feed line that is not `{"message_id", "disposition", "source"}` JSON.
    BadVerdict,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Empty => "empty",
            RejectReason::Binary => "binary",
            RejectReason::NotAMessage => "not_a_message",
            RejectReason::NoMessageHeaders => "no_message_headers",
            RejectReason::Unreadable => "unreadable",
            RejectReason::BadVerdict => "bad_verdict",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors that stop an ingest (unlike rejections, which are counted).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: {source}")]
    Path {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What ingestion needs from the configuration.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Header names carrying a disposition word.
    pub disposition_headers: Vec<String>,
    /// (tenant name, managed domains), in config order.
    pub tenants: Vec<(String, Vec<String>)>,
    /// Received time for messages with neither Received nor Date (Unix seconds).
    pub now: i64,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            disposition_headers: crate::config::TraceConfig::default().disposition_headers,
            tenants: Vec::new(),
            now: chrono::Utc::now().timestamp(),
        }
    }
}

impl IngestOptions {
    /// Options from a loaded config (or the defaults without one).
    pub fn from_config(config: Option<&Config>) -> IngestOptions {
        let mut o = IngestOptions::default();
        if let Some(c) = config {
            o.disposition_headers = c.trace.disposition_headers.clone();
            o.tenants = c
                .tenants
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
                    )
                })
                .collect();
        }
        o
    }

    /// The tenant owning a domain (exact or subdomain match).
    pub fn tenant_for_domain(&self, domain: &str) -> Option<&str> {
        self.tenants.iter().find_map(|(name, domains)| {
            domains
                .iter()
                .any(|d| {
                    domain == d
                        || domain
                            .strip_suffix(d.as_str())
                            .is_some_and(|p| p.ends_with('.'))
                })
                .then_some(name.as_str())
        })
    }
}

/// Counts of one ingest run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Messages seen (each message of an mbox counts).
    pub messages: u64,
    /// New trace records.
    pub indexed: u64,
    /// Already known; this copy added recipients, URLs, attachments or a worse disposition.
    pub merged: u64,
    /// Already known with nothing new.
    pub duplicate: u64,
    /// Rejected inputs by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// The first rejections, as `(where, reason)`.
    pub rejections: Vec<(String, RejectReason)>,
    /// Verdict-feed lines read.
    pub verdicts: u64,
    /// Verdicts that made a record's disposition more severe.
    pub verdicts_upgraded: u64,
    /// Verdicts whose Message-ID is not in the trace.
    pub verdicts_unmatched: u64,
}

impl IngestReport {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    fn reject(&mut self, at: String, reason: RejectReason) {
        *self.rejected.entry(reason).or_default() += 1;
        if self.rejections.len() < 100 {
            self.rejections.push((at, reason));
        }
    }

    /// One line for people: `indexed 10, merged 1, duplicate 2, rejected 3 (binary 1, empty 2)`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "indexed {}, merged {}, duplicate {}, rejected {}",
            self.indexed,
            self.merged,
            self.duplicate,
            self.rejected_total()
        );
        if !self.rejected.is_empty() {
            let parts: Vec<String> = self
                .rejected
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            s.push_str(&format!(" ({})", parts.join(", ")));
        }
        if self.verdicts > 0 {
            s.push_str(&format!(
                "; verdicts {}: upgraded {}, unmatched {}",
                self.verdicts, self.verdicts_upgraded, self.verdicts_unmatched
            ));
        }
        s
    }
}

/// Progress of a running ingest.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub messages: u64,
    pub elapsed: Duration,
}

impl Progress {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One verdict-feed line.
#[derive(Debug, Deserialize)]
struct VerdictLine {
    message_id: String,
    disposition: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
}

/// Ingests files and directories into the store. `progress` is called about twice a second.
pub fn ingest_paths(
    store: &mut Store,
    paths: &[PathBuf],
    opts: &IngestOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<IngestReport, IngestError> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files)?;
    }
    let (feeds, mail): (Vec<PathBuf>, Vec<PathBuf>) =
        files.into_iter().partition(|p| is_verdict_feed(p));
    let mut run = Run {
        store,
        opts,
        report: IngestReport::default(),
        pending: Vec::with_capacity(BATCH),
        started: Instant::now(),
        last_progress: Instant::now(),
        progress,
    };
    for path in &mail {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(_) => {
                run.report.messages += 1;
                run.report
                    .reject(path.display().to_string(), RejectReason::Unreadable);
                continue;
            }
        };
        if bytes.starts_with(b"From ") {
            for (i, m) in
                mail_parser::mailbox::mbox::MessageIterator::new(std::io::Cursor::new(bytes))
                    .enumerate()
            {
                match m {
                    Ok(m) => {
                        run.push(format!("{}#{}", path.display(), i + 1), m.unwrap_contents())?
                    }
                    Err(e) => {
                        return Err(IngestError::Path {
                            path: path.clone(),
                            source: e,
                        });
                    }
                }
            }
        } else {
            run.push(path.display().to_string(), bytes)?;
        }
    }
    run.flush()?;
    for feed in &feeds {
        run.verdict_feed(feed)?;
    }
    (run.progress)(Progress {
        messages: run.report.messages,
        elapsed: run.started.elapsed(),
    });
    Ok(run.report)
}

fn is_verdict_feed(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("jsonl" | "ndjson")
    )
}

/// Files under a path, sorted; Maildir `tmp/` folders are skipped (messages still being written).
fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), IngestError> {
    let err = |source| IngestError::Path {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    if !meta.is_dir() {
        return Ok(());
    }
    let is_maildir = path.join("cur").is_dir() && path.join("new").is_dir();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        if is_maildir && e.file_name().is_some_and(|n| n == "tmp") {
            continue;
        }
        collect_files(&e, out)?;
    }
    Ok(())
}

struct Run<'a> {
    store: &'a mut Store,
    opts: &'a IngestOptions,
    report: IngestReport,
    pending: Vec<(String, Vec<u8>)>,
    started: Instant,
    last_progress: Instant,
    progress: &'a mut dyn FnMut(Progress),
}

impl Run<'_> {
    fn push(&mut self, at: String, raw: Vec<u8>) -> Result<(), IngestError> {
        self.pending.push((at, raw));
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IngestError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let parsed = parse_parallel(&batch, self.opts);
        let mut records = Vec::with_capacity(parsed.len());
        for ((at, _), result) in batch.iter().zip(parsed) {
            self.report.messages += 1;
            match result {
                Ok(r) => records.push(r),
                Err(reason) => self.report.reject(at.clone(), reason),
            }
        }
        for outcome in self.store.upsert_trace(&records)? {
            match outcome {
                UpsertOutcome::Inserted(_) => self.report.indexed += 1,
                UpsertOutcome::Merged(_) => self.report.merged += 1,
                UpsertOutcome::Unchanged(_) => self.report.duplicate += 1,
            }
        }
        if self.last_progress.elapsed() >= Duration::from_millis(500) {
            self.last_progress = Instant::now();
            (self.progress)(Progress {
                messages: self.report.messages,
                elapsed: self.started.elapsed(),
            });
        }
        Ok(())
    }

    fn verdict_feed(&mut self, path: &Path) -> Result<(), IngestError> {
        let file = std::fs::File::open(path).map_err(|source| IngestError::Path {
            path: path.to_path_buf(),
            source,
        })?;
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let at = format!("{}:{}", path.display(), n + 1);
            let line = match line {
                Ok(l) => l,
                Err(_) => {
                    self.report.reject(at, RejectReason::BadVerdict);
                    continue;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            self.report.verdicts += 1;
            let parsed = serde_json::from_str::<VerdictLine>(&line)
                .ok()
                .and_then(|v| {
                    let id = normalize_message_id(&v.message_id)?;
                    let d = v.disposition.parse::<Disposition>().ok()?;
                    Some((id, d, v.source, v.tenant))
                });
            let Some((id, d, source, tenant)) = parsed else {
                self.report.reject(at, RejectReason::BadVerdict);
                continue;
            };
            let source = format!("feed:{}", source.as_deref().unwrap_or("verdicts"));
            let u = self
                .store
                .set_disposition(tenant.as_deref(), &id, d, &source)?;
            if u.matched == 0 {
                self.report.verdicts_unmatched += 1;
            }
            if u.upgraded > 0 {
                self.report.verdicts_upgraded += 1;
            }
        }
        Ok(())
    }
}

fn parse_parallel(
    batch: &[(String, Vec<u8>)],
    opts: &IngestOptions,
) -> Vec<Result<TraceRecord, RejectReason>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if threads <= 1 || batch.len() < 64 {
        return batch
            .iter()
            .map(|(_, raw)| parse_message(raw, opts))
            .collect();
    }
    let chunk = batch.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = batch
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|(_, raw)| parse_message(raw, opts))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(batch.len());
        for h in handles {
            // A panic inside the parser must not take the ingest down: reject that chunk's inputs.
            match h.join() {
                Ok(v) => out.extend(v),
                Err(_) => out.extend(std::iter::repeat_n(Err(RejectReason::NotAMessage), chunk)),
            }
        }
        out.truncate(batch.len());
        out
    })
}

/// Turns one raw message into a trace record, or says why not.
pub fn parse_message(raw: &[u8], opts: &IngestOptions) -> Result<TraceRecord, RejectReason> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(RejectReason::Empty);
    }
    // A file is binary when more than a tenth of its first 4 KB are control bytes. A NUL is
    // one of them, not a verdict by itself: mail does carry stray NULs (a body pasted from a
    // binary, a broken gateway), the provider sync takes such a message, and a file must be
    // indexed the same way. The parser reads NUL as an ordinary byte; text fields drop it with
    // the other control characters.
    let head = &raw[..raw.len().min(4096)];
    let controls = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\r' | b'\n' | b'\t' | 0x0c))
        .count();
    if controls * 10 > head.len() {
        return Err(RejectReason::Binary);
    }
    if !starts_with_header_field(raw) {
        return Err(RejectReason::NotAMessage);
    }
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or(RejectReason::NotAMessage)?;
    if msg.parts.is_empty() {
        return Err(RejectReason::NotAMessage);
    }
    let has_core = msg.from().is_some()
        || msg.sender().is_some()
        || msg.to().is_some()
        || msg.subject().is_some()
        || msg.date().is_some()
        || msg.message_id().is_some();
    if !has_core {
        return Err(RejectReason::NoMessageHeaders);
    }
    if let Some(report) = journal_report(&msg) {
        return Ok(from_journal(&msg, report, raw, opts));
    }
    let mut rec = record_from(&msg, raw, opts);
    for name in ["X-Original-To", "Delivered-To"] {
        for (n, v) in msg.headers_raw() {
            if n.eq_ignore_ascii_case(name) {
                rec.add_recipients(split_addresses(v), RecipientKind::Envelope);
            }
        }
    }
    assign_tenant(&mut rec, opts);
    Ok(rec)
}

/// The first line is `Name: value` with an RFC 5322 field name.
fn starts_with_header_field(raw: &[u8]) -> bool {
    let raw = raw.strip_prefix(b"\xef\xbb\xbf").unwrap_or(raw);
    let line_end = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len());
    let line = &raw[..line_end];
    match line.iter().position(|&b| b == b':') {
        Some(0) | None => false,
        Some(colon) => line[..colon].iter().all(|&b| (33..=126).contains(&b)),
    }
}

fn addresses(a: Option<&Address<'_>>) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    if let Some(a) = a {
        for addr in a.iter() {
            if let Some(x) = addr.address() {
                let x = x.trim().to_ascii_lowercase();
                if !x.is_empty() {
                    out.push((x, addr.name().map(|n| clean_text(n, 200))));
                }
            }
        }
    }
    out
}

/// Addresses in a raw header value (`<a@b>, c@d`).
fn split_addresses(v: &str) -> Vec<String> {
    v.split([',', ';'])
        .filter_map(|p| {
            let p = p.trim();
            let inner = match (p.rfind('<'), p.rfind('>')) {
                (Some(l), Some(r)) if l < r => &p[l + 1..r],
                _ => p,
            };
            let inner = inner.trim().trim_matches(|c| c == '<' || c == '>');
            (inner.contains('@') && !inner.contains(char::is_whitespace))
                .then(|| inner.to_ascii_lowercase())
        })
        .collect()
}

fn clean_text(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    out
}

fn message_ids(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => message_id_list([t.as_ref()]),
        HeaderValue::TextList(l) => message_id_list(l.iter().map(|t| t.as_ref())),
        _ => Vec::new(),
    }
}

/// Builds the record from a parsed message (no tenant, no envelope yet).
fn record_from(msg: &Message<'_>, raw: &[u8], opts: &IngestOptions) -> TraceRecord {
    let mut rec = TraceRecord {
        size: raw.len() as u64,
        ..TraceRecord::default()
    };
    let from = addresses(msg.from());
    let sender = addresses(msg.sender());
    if let Some((a, n)) = from
        .into_iter()
        .next()
        .or_else(|| sender.into_iter().next())
    {
        rec.sender = a;
        rec.sender_name = n.filter(|n| !n.is_empty());
    }
    rec.envelope_sender = msg
        .return_address()
        .map(|a| {
            a.trim()
                .trim_matches(|c| c == '<' || c == '>')
                .to_ascii_lowercase()
        })
        .filter(|a| !a.is_empty());
    rec.subject = msg
        .subject()
        .map(|s| clean_text(s, MAX_SUBJECT_CHARS))
        .unwrap_or_default();
    let all = |a: &Address<'_>| addresses(Some(a)).into_iter().map(|(x, _)| x);
    rec.add_recipients(msg.all_to().flat_map(all), RecipientKind::To);
    rec.add_recipients(msg.all_cc().flat_map(all), RecipientKind::Cc);
    rec.add_recipients(msg.all_bcc().flat_map(all), RecipientKind::Bcc);
    rec.in_reply_to = message_ids(msg.in_reply_to());
    rec.references = message_ids(msg.references());
    rec.thread_index = msg
        .header_raw("Thread-Index")
        .map(|t| clean_text(t, 200))
        .filter(|t| !t.is_empty());
    rec.received = msg
        .received()
        .and_then(|r| r.date)
        .filter(|d| d.is_valid())
        .or_else(|| msg.date().copied().filter(|d| d.is_valid()))
        .map(|d| d.to_timestamp())
        .unwrap_or(opts.now);
    match msg.message_id().and_then(normalize_message_id) {
        Some(id) => rec.message_id = id,
        None => {
            rec.message_id = synthetic_id(msg, raw);
            rec.synthetic_id = true;
        }
    }
    collect_body(msg, &mut rec, 0);
    if let Some((d, source)) = disposition_from_headers(msg.headers_raw(), opts) {
        rec.disposition = Some(d);
        rec.disposition_source = Some(source);
    }
    rec
}

/// The disposition the configured header names give (`X-Clawback-Disposition: malicious`):
/// the first word of each such header's value; the most severe wins. Returns it with its source
/// (`header:NAME`). The one rule for ingested and synced mail.
pub fn disposition_from_headers<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
    opts: &IngestOptions,
) -> Option<(Disposition, String)> {
    let mut best: Option<(Disposition, String)> = None;
    for (name, value) in headers {
        if opts
            .disposition_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name.trim()))
            && let Some(d) = value
                .split_whitespace()
                .next()
                .and_then(|w| w.trim_matches(';').parse::<Disposition>().ok())
            && best
                .as_ref()
                .is_none_or(|(old, _)| d.severity() < old.severity())
        {
            best = Some((d, format!("header:{}", name.trim())));
        }
    }
    best
}

/// URLs and attachment hashes of a message and the messages nested in it.
fn collect_body(msg: &Message<'_>, rec: &mut TraceRecord, depth: usize) {
    for part in &msg.parts {
        match &part.body {
            PartType::Text(t) | PartType::Html(t) => extract_urls(t, &mut rec.urls),
            PartType::Message(inner) if depth < MAX_NESTING => collect_body(inner, rec, depth + 1),
            _ => {}
        }
    }
    for id in &msg.attachments {
        if let Some(part) = msg.parts.get(*id as usize) {
            let h = hex::encode(Sha256::digest(part.contents()));
            if !rec.attachments.contains(&h) {
                rec.attachments.push(h);
            }
        }
    }
}

/// `http(s)://…` runs in text or HTML (covers `href="…"`), with `&amp;` decoded and trailing
/// punctuation trimmed.
pub fn extract_urls(text: &str, out: &mut Vec<String>) {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while out.len() < MAX_URLS {
        let Some(pos) = lower[from..].find("http").map(|p| p + from) else {
            break;
        };
        let rest = &lower[pos..];
        let scheme_len = if rest.starts_with("https://") {
            8
        } else if rest.starts_with("http://") {
            7
        } else {
            from = pos + 4;
            continue;
        };
        let end = text[pos..]
            .find(|c: char| {
                c.is_whitespace()
                    || matches!(
                        c,
                        '"' | '\'' | '<' | '>' | '`' | '{' | '}' | '|' | '\\' | '^'
                    )
            })
            .map(|e| pos + e)
            .unwrap_or(text.len());
        from = end.max(pos + scheme_len);
        let url = text[pos..end].trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']']);
        if url.len() <= scheme_len {
            continue;
        }
        let url = url.replace("&amp;", "&");
        if !out.contains(&url) {
            out.push(url);
        }
    }
}

/// `<hash@synthetic.clawback.invalid>` from the headers that identify a message and are the same
/// in every copy (not Received / Delivered-To / X-Original-To / Return-Path).
fn synthetic_id(msg: &Message<'_>, raw: &[u8]) -> String {
    let mut h = Sha256::new();
    let mut any = false;
    for (name, value) in msg.headers_raw() {
        let n = name.to_ascii_lowercase();
        if matches!(
            n.as_str(),
            "from" | "sender" | "to" | "cc" | "date" | "subject"
        ) {
            h.update(n.as_bytes());
            h.update(b":");
            h.update(value.trim().as_bytes());
            h.update(b"\n");
            any = true;
        }
    }
    if !any {
        h.update(raw);
    }
    format!(
        "<{}@synthetic.clawback.invalid>",
        &hex::encode(h.finalize())[..32]
    )
}

/// A Microsoft journal report: its report text and the original message, if attached.
struct JournalReport<'a, 'x> {
    text: String,
    original: Option<&'a Message<'x>>,
}

fn journal_report<'a, 'x>(msg: &'a Message<'x>) -> Option<JournalReport<'a, 'x>> {
    let flagged = msg.header_raw("X-MS-Journal-Report").is_some();
    let text = msg.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    let original = msg.parts.iter().find_map(|p| p.message());
    let looks_like = original.is_some()
        && text
            .lines()
            .any(|l| l.trim_start().to_ascii_lowercase().starts_with("sender:"))
        && text.lines().any(|l| {
            l.trim_start()
                .to_ascii_lowercase()
                .starts_with("message-id:")
        });
    (flagged || looks_like).then_some(JournalReport { text, original })
}

fn from_journal(
    report: &Message<'_>,
    j: JournalReport<'_, '_>,
    raw: &[u8],
    opts: &IngestOptions,
) -> TraceRecord {
    let mut rec = match j.original {
        Some(orig) => {
            let mut r = record_from(orig, orig.raw_message(), opts);
            r.size = orig.raw_message().len() as u64;
            r
        }
        None => record_from(report, raw, opts),
    };
    let mut report_id = None;
    let mut report_subject = None;
    let mut report_sender = None;
    let mut envelope = Vec::new();
    for line in j.text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let first = value.split(',').next().unwrap_or("").trim();
        match key.as_str() {
            "recipient" | "to" | "cc" | "bcc" => envelope.extend(split_addresses(first)),
            "sender" => report_sender = split_addresses(first).into_iter().next(),
            "message-id" => report_id = normalize_message_id(value.trim()),
            "subject" => report_subject = Some(clean_text(value, MAX_SUBJECT_CHARS)),
            _ => {}
        }
    }
    rec.add_recipients(envelope, RecipientKind::Envelope);
    if j.original.is_none() {
        if let Some(id) = report_id {
            rec.message_id = id;
            rec.synthetic_id = false;
        }
        if let Some(s) = report_subject {
            rec.subject = s;
        }
    }
    if rec.envelope_sender.is_none() {
        rec.envelope_sender = report_sender;
    }
    // The report itself and its transport headers are not recipients of the original.
    rec.recipients
        .retain(|r| r.kind == RecipientKind::Envelope || j.original.is_some());
    assign_tenant(&mut rec, opts);
    rec
}

fn assign_tenant(rec: &mut TraceRecord, opts: &IngestOptions) {
    if opts.tenants.is_empty() {
        return;
    }
    let delivered: Vec<String> = rec.delivered_to().into_iter().map(str::to_string).collect();
    for a in delivered.iter().chain(std::iter::once(&rec.sender)) {
        if let Some(t) = address_domain(a).and_then(|d| opts.tenant_for_domain(&d)) {
            rec.tenant = t.to_string();
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_from_text_and_html() {
        let mut v = Vec::new();
        extract_urls(
            "see https://a.example/x?y=1&amp;z=2. and <a href=\"http://b.example/p\">x</a> (HTTPS://C.example/Q)",
            &mut v,
        );
        assert_eq!(
            v,
            vec![
                "https://a.example/x?y=1&z=2",
                "http://b.example/p",
                "HTTPS://C.example/Q"
            ]
        );
    }

    #[test]
    fn tenant_by_domain_and_subdomain() {
        let o = IngestOptions {
            tenants: vec![("contoso".into(), vec!["contoso.com".into()])],
            ..IngestOptions::default()
        };
        assert_eq!(o.tenant_for_domain("contoso.com"), Some("contoso"));
        assert_eq!(o.tenant_for_domain("eu.contoso.com"), Some("contoso"));
        assert_eq!(o.tenant_for_domain("notcontoso.com"), None);
    }
}
