//! Threat intel for Post Delivery Response (DESIGN §6): indicator lists and STIX 2.1 bundles
//! read from a directory, matched against trace records.
//!
//! Formats (by file extension):
//! - `.csv`: `type,value[,disposition]` per row (an optional header row starting with `type`);
//!   fields may be double-quoted. `type` is `url`, `domain`, `sender`, `sha256` or `subject`.
//! - `.txt` / `.list`: `TYPE VALUE` per line (the value is the rest of the line); a line
//!   `# disposition: WORD` sets the disposition of the lines after it (default `malicious`).
//! - `.json` / `.stix`: a STIX 2.1 bundle; each `indicator` object with a pattern made of
//!   simple comparisons joined by `OR`: `[url:value = '…']`, `[domain-name:value = '…']`,
//!   `[email-addr:value = '…']`, `[file:hashes.'SHA-256' = '…']`,
//!   `[email-message:subject = '…']`. The disposition is `x_clawback_disposition` when given,
//!   `suspicious` for `indicator_types` `anomalous-activity`, else `malicious`.
//!
//! Lines starting with `#` and blank lines are ignored. A bad row, a bad pattern or a file that
//! is not JSON is reported with the file and its position and skipped; the rest still applies.
//! A subject value with `*` or `?` is a glob; otherwise subjects compare equal ignoring case.
//!
//! A verdict written from an indicator remembers it ([`IndicatorKey`]: file, type, value,
//! disposition); when a reload no longer has that indicator, the watcher expires the verdict.

use crate::model::Disposition;
use crate::trace::TraceRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What an indicator looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IndicatorKind {
    Url,
    Domain,
    Sender,
    Sha256,
    Subject,
}

impl IndicatorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IndicatorKind::Url => "url",
            IndicatorKind::Domain => "domain",
            IndicatorKind::Sender => "sender",
            IndicatorKind::Sha256 => "sha256",
            IndicatorKind::Subject => "subject",
        }
    }

    fn parse(s: &str) -> Option<IndicatorKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "url" => Some(IndicatorKind::Url),
            "domain" | "domain-name" => Some(IndicatorKind::Domain),
            "sender" | "email" | "email-addr" => Some(IndicatorKind::Sender),
            "sha256" | "sha-256" | "hash" => Some(IndicatorKind::Sha256),
            "subject" => Some(IndicatorKind::Subject),
            _ => None,
        }
    }
}

/// One indicator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indicator {
    pub kind: IndicatorKind,
    /// Lowercased (subjects keep their text but compare ignoring case).
    pub value: String,
    pub disposition: Disposition,
    /// File name it came from (for `intel:FILE` sources).
    pub file: String,
}

/// What identifies an indicator across reloads of the intel directory: the file it came from,
/// its type, its (normalized) value and its disposition. Verdicts and held matches carry it; a
/// reload without it expires them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IndicatorKey {
    pub file: String,
    /// `url`, `domain`, `sender`, `sha256` or `subject`.
    pub kind: String,
    pub value: String,
    pub disposition: Disposition,
}

impl std::fmt::Display for IndicatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} ({}, {})",
            self.kind, self.value, self.file, self.disposition
        )
    }
}

impl Indicator {
    /// Its identity across reloads.
    pub fn key(&self) -> IndicatorKey {
        IndicatorKey {
            file: self.file.clone(),
            kind: self.kind.as_str().to_string(),
            value: self.value.clone(),
            disposition: self.disposition,
        }
    }
}

/// A problem in an intel file: file and position, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntelError {
    pub file: PathBuf,
    /// `line 3`, `line 2 column 7`, `objects[4] (indicator--…)`.
    pub position: String,
    pub message: String,
}

impl std::fmt::Display for IntelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: {} (skipped)",
            self.file.display(),
            self.position,
            self.message
        )
    }
}

/// Every indicator loaded from a directory, and what was skipped.
#[derive(Debug, Clone, Default)]
pub struct IntelSet {
    pub indicators: Vec<Indicator>,
    pub errors: Vec<IntelError>,
    /// Files read.
    pub files: usize,
    /// Files (labels, as in [`Indicator::file`]) that could not be read this time: their
    /// indicators are unknown, not gone, so their verdicts do not expire.
    pub unreadable: Vec<String>,
}

impl IntelSet {
    /// The indicators a record matches.
    pub fn matches(&self, r: &TraceRecord) -> Vec<&Indicator> {
        self.indicators.iter().filter(|i| i.matches(r)).collect()
    }
}

impl Indicator {
    /// Whether a trace record carries this indicator.
    pub fn matches(&self, r: &TraceRecord) -> bool {
        let v = self.value.as_str();
        match self.kind {
            IndicatorKind::Url => r.urls.iter().any(|u| {
                u.trim_end_matches('/')
                    .eq_ignore_ascii_case(v.trim_end_matches('/'))
            }),
            IndicatorKind::Domain => {
                let in_domain = |host: &str| {
                    let host = host.to_ascii_lowercase();
                    host == v || host.ends_with(&format!(".{v}"))
                };
                let sender_domain = |a: &str| a.rsplit_once('@').is_some_and(|(_, d)| in_domain(d));
                sender_domain(&r.sender)
                    || r.envelope_sender.as_deref().is_some_and(sender_domain)
                    || r.urls.iter().any(|u| {
                        url::Url::parse(u)
                            .ok()
                            .and_then(|p| p.host_str().map(in_domain))
                            .unwrap_or(false)
                    })
            }
            IndicatorKind::Sender => {
                r.sender == v || r.envelope_sender.as_deref().is_some_and(|e| e == v)
            }
            IndicatorKind::Sha256 => r.attachments.iter().any(|a| a.eq_ignore_ascii_case(v)),
            IndicatorKind::Subject => subject_matches(v, &r.subject),
        }
    }
}

/// Case-insensitive glob (`*`, `?`) when the pattern has wildcards, else equality.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let s: Vec<char> = subject.to_lowercase().chars().collect();
    if !p.iter().any(|c| *c == '*' || *c == '?') {
        return p == s;
    }
    // Iterative glob with backtracking to the last star.
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn normalize(kind: IndicatorKind, value: &str) -> String {
    let v = value.trim();
    match kind {
        IndicatorKind::Subject => v.to_string(),
        IndicatorKind::Domain => v.trim_start_matches("*.").to_ascii_lowercase(),
        _ => v.to_ascii_lowercase(),
    }
}

fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Splits one CSV line (double quotes, `""` inside quotes).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && at_start {
            quoted = true;
            at_start = false;
        } else if c == ',' {
            out.push(std::mem::take(&mut cur));
            at_start = true;
        } else {
            if !c.is_whitespace() {
                at_start = false;
            }
            cur.push(c);
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    out.push(cur);
    Ok(out)
}

/// Parses a CSV indicator list.
pub fn parse_csv(text: &str, path: &Path) -> (Vec<Indicator>, Vec<IntelError>) {
    let file = file_label(path);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let err = |message: String| IntelError {
            file: path.to_path_buf(),
            position: format!("line {line_no}"),
            message,
        };
        let fields = match csv_fields(t) {
            Ok(f) => f,
            Err(e) => {
                errors.push(err(e));
                continue;
            }
        };
        let first = fields.first().map(|f| f.trim()).unwrap_or_default();
        if line_no == 1 && first.eq_ignore_ascii_case("type") {
            continue;
        }
        if fields.len() < 2 || fields.len() > 3 {
            errors.push(err(format!(
                "expected `type,value[,disposition]`, found {} fields",
                fields.len()
            )));
            continue;
        }
        let Some(kind) = IndicatorKind::parse(first) else {
            errors.push(err(format!(
                "unknown indicator type {first:?} (url, domain, sender, sha256, subject)"
            )));
            continue;
        };
        let value = normalize(kind, &fields[1]);
        if value.is_empty() {
            errors.push(err("empty value".into()));
            continue;
        }
        let disposition = match fields.get(2).map(|d| d.trim()).filter(|d| !d.is_empty()) {
            None => Disposition::Malicious,
            Some(d) => match d.parse::<Disposition>() {
                Ok(d) => d,
                Err(e) => {
                    errors.push(err(e.to_string()));
                    continue;
                }
            },
        };
        out.push(Indicator {
            kind,
            value,
            disposition,
            file: file.clone(),
        });
    }
    (out, errors)
}

/// Parses a plain `TYPE VALUE` list.
pub fn parse_plain(text: &str, path: &Path) -> (Vec<Indicator>, Vec<IntelError>) {
    let file = file_label(path);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut disposition = Disposition::Malicious;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        let err = |message: String| IntelError {
            file: path.to_path_buf(),
            position: format!("line {}", n + 1),
            message,
        };
        if let Some(rest) = t.strip_prefix('#') {
            if let Some(d) = rest.trim().strip_prefix("disposition:") {
                match d.trim().parse::<Disposition>() {
                    Ok(d) => disposition = d,
                    Err(e) => errors.push(err(e.to_string())),
                }
            }
            continue;
        }
        if t.is_empty() {
            continue;
        }
        let (kind, value) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
        let Some(kind) = IndicatorKind::parse(kind) else {
            errors.push(err(format!(
                "unknown indicator type {kind:?} (url, domain, sender, sha256, subject)"
            )));
            continue;
        };
        let value = normalize(kind, value);
        if value.is_empty() {
            errors.push(err("empty value".into()));
            continue;
        }
        out.push(Indicator {
            kind,
            value,
            disposition,
            file: file.clone(),
        });
    }
    (out, errors)
}

/// Parses one STIX comparison list: `[a = 'x'] OR [b = 'y' OR c = 'z']`.
pub fn parse_stix_pattern(pattern: &str) -> Result<Vec<(IndicatorKind, String)>, String> {
    let mut out = Vec::new();
    let mut rest = pattern.trim();
    let mut expect_bracket = true;
    while !rest.is_empty() {
        if expect_bracket {
            let Some(r) = rest.strip_prefix('[') else {
                return Err(format!("expected `[` at {rest:?}"));
            };
            rest = r.trim_start();
            expect_bracket = false;
        }
        // path
        let op = rest
            .find('=')
            .ok_or_else(|| format!("expected `path = 'value'` at {rest:?}"))?;
        let path = rest[..op].trim();
        if path.ends_with('!') || path.ends_with('<') || path.ends_with('>') {
            return Err(format!("only `=` comparisons are supported (at {path:?})"));
        }
        let kind = match path {
            "url:value" => IndicatorKind::Url,
            "domain-name:value" => IndicatorKind::Domain,
            "email-addr:value" | "email-message:from_ref.value" => IndicatorKind::Sender,
            "file:hashes.'SHA-256'" | "file:hashes.\"SHA-256\"" | "file:hashes.sha256" => {
                IndicatorKind::Sha256
            }
            "email-message:subject" => IndicatorKind::Subject,
            other => return Err(format!("unsupported object path {other:?}")),
        };
        rest = rest[op + 1..].trim_start();
        let Some(r) = rest.strip_prefix('\'') else {
            return Err(format!("expected a quoted value at {rest:?}"));
        };
        let mut value = String::new();
        let mut chars = r.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '\'' => {
                    end = Some(i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or("unterminated quoted value")?;
        out.push((kind, normalize(kind, &value)));
        rest = r[end..].trim_start();
        if let Some(r) = rest.strip_prefix(']') {
            rest = r.trim_start();
            expect_bracket = true;
            if rest.is_empty() {
                break;
            }
            rest = rest
                .strip_prefix("OR")
                .ok_or_else(|| format!("only `OR` joins comparisons (at {rest:?})"))?
                .trim_start();
        } else if let Some(r) = rest.strip_prefix("OR") {
            rest = r.trim_start();
        } else {
            return Err(format!("expected `]` or `OR` at {rest:?}"));
        }
    }
    if out.is_empty() {
        return Err("empty pattern".into());
    }
    if !expect_bracket {
        return Err("missing `]`".into());
    }
    Ok(out)
}

/// Parses a STIX 2.1 bundle.
pub fn parse_stix(text: &str, path: &Path) -> (Vec<Indicator>, Vec<IntelError>) {
    let file = file_label(path);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let bundle: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            errors.push(IntelError {
                file: path.to_path_buf(),
                position: format!("line {} column {}", e.line(), e.column()),
                message: format!("not JSON: {e}"),
            });
            return (out, errors);
        }
    };
    let objects = match bundle.get("objects").and_then(|o| o.as_array()) {
        Some(o) if bundle.get("type").and_then(|t| t.as_str()) == Some("bundle") => o,
        _ => {
            errors.push(IntelError {
                file: path.to_path_buf(),
                position: "top level".into(),
                message: "not a STIX bundle (`type: bundle` with `objects`)".into(),
            });
            return (out, errors);
        }
    };
    for (i, o) in objects.iter().enumerate() {
        if o.get("type").and_then(|t| t.as_str()) != Some("indicator") {
            continue;
        }
        let id = o.get("id").and_then(|v| v.as_str()).unwrap_or("no id");
        let err = |message: String| IntelError {
            file: path.to_path_buf(),
            position: format!("objects[{i}] ({id})"),
            message,
        };
        if let Some(t) = o.get("pattern_type").and_then(|v| v.as_str())
            && t != "stix"
        {
            errors.push(err(format!("pattern_type {t:?} is not supported (stix)")));
            continue;
        }
        let Some(pattern) = o.get("pattern").and_then(|v| v.as_str()) else {
            errors.push(err("indicator without a pattern".into()));
            continue;
        };
        let disposition = if let Some(d) = o.get("x_clawback_disposition").and_then(|v| v.as_str())
        {
            match d.parse::<Disposition>() {
                Ok(d) => d,
                Err(e) => {
                    errors.push(err(e.to_string()));
                    continue;
                }
            }
        } else {
            let types: Vec<&str> = o
                .get("indicator_types")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            if types.contains(&"anomalous-activity") && !types.contains(&"malicious-activity") {
                Disposition::Suspicious
            } else {
                Disposition::Malicious
            }
        };
        match parse_stix_pattern(pattern) {
            Ok(list) => {
                for (kind, value) in list {
                    out.push(Indicator {
                        kind,
                        value,
                        disposition,
                        file: file.clone(),
                    });
                }
            }
            Err(e) => errors.push(err(format!("pattern {pattern:?}: {e}"))),
        }
    }
    (out, errors)
}

/// Parses one file by its extension (`None`: not an intel file).
pub fn parse_file(text: &str, path: &Path) -> Option<(Vec<Indicator>, Vec<IntelError>)> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "csv" => Some(parse_csv(text, path)),
        "txt" | "list" => Some(parse_plain(text, path)),
        "json" | "stix" => Some(parse_stix(text, path)),
        _ => None,
    }
}

/// (modified, length) per file: what "changed" means.
type Stamp = BTreeMap<PathBuf, (Option<SystemTime>, u64)>;

/// An intel directory, re-read when a file in it is added, removed or changed (polled).
#[derive(Debug, Clone)]
pub struct IntelDir {
    pub dir: PathBuf,
    stamp: Stamp,
    current: IntelSet,
    /// The directory was read at least once: `current` is what it holds (not a placeholder).
    loaded: bool,
}

impl IntelDir {
    pub fn new(dir: PathBuf) -> IntelDir {
        IntelDir {
            dir,
            stamp: Stamp::new(),
            current: IntelSet::default(),
            loaded: false,
        }
    }

    fn scan(&self) -> Result<Stamp, String> {
        let mut stamp = Stamp::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| format!("{}: cannot read intel directory: {e}", self.dir.display()))?;
        for e in entries.flatten() {
            let path = e.path();
            if let Ok(meta) = e.metadata()
                && meta.is_file()
            {
                stamp.insert(path, (meta.modified().ok(), meta.len()));
            }
        }
        Ok(stamp)
    }

    /// Re-reads the directory when something changed. Returns `Some(set)` when it was reloaded
    /// (errors inside are per file), `None` when nothing changed.
    pub fn refresh(&mut self) -> Result<Option<&IntelSet>, String> {
        let stamp = self.scan()?;
        self.loaded = true;
        if stamp == self.stamp && !stamp.is_empty() {
            return Ok(None);
        }
        let first = self.stamp.is_empty();
        let mut set = IntelSet::default();
        for path in stamp.keys() {
            let text = match std::fs::read(path) {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => {
                    set.errors.push(IntelError {
                        file: path.clone(),
                        position: "file".into(),
                        message: format!("cannot read: {e}"),
                    });
                    set.unreadable.push(file_label(path));
                    continue;
                }
            };
            if let Some((ind, errs)) = parse_file(&text, path) {
                set.files += 1;
                set.indicators.extend(ind);
                set.errors.extend(errs);
            }
        }
        self.stamp = stamp;
        self.current = set;
        if first && self.stamp.is_empty() {
            return Ok(None);
        }
        Ok(Some(&self.current))
    }

    /// The indicators in force.
    pub fn current(&self) -> &IntelSet {
        &self.current
    }

    /// Whether the directory was read at least once (so an indicator missing from
    /// [`IntelDir::current`] is really gone).
    pub fn loaded(&self) -> bool {
        self.loaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> TraceRecord {
        TraceRecord {
            sender: "bad@evil.example".into(),
            subject: "Invoice 8841 overdue".into(),
            urls: vec!["https://login.evil.example/x".into()],
            attachments: vec!["ab".repeat(32)],
            ..Default::default()
        }
    }

    #[test]
    fn csv_rows_and_errors_with_lines() {
        let text = "type,value,disposition\nurl,https://login.evil.example/x,malicious\n\
                    bogus,x\ndomain,evil.example,suspicious\nsubject,\"Invoice *, overdue\"\n\
                    sender,a@b,notaword\nsubject,\"unterminated\n";
        let (ind, errs) = parse_csv(text, Path::new("/i/list.csv"));
        assert_eq!(ind.len(), 3);
        let lines: Vec<&str> = errs.iter().map(|e| e.position.as_str()).collect();
        assert_eq!(lines, ["line 3", "line 6", "line 7"]);
        assert!(errs[0].to_string().contains("/i/list.csv: line 3"));
        assert!(ind.iter().all(|i| i.file == "list.csv"));
        assert!(ind[0].matches(&rec()));
        assert!(ind[1].matches(&rec()));
        assert_eq!(ind[1].disposition, Disposition::Suspicious);
    }

    #[test]
    fn stix_patterns() {
        let ok = parse_stix_pattern("[url:value = 'https://a/b'] OR [email-addr:value = 'X@Y']")
            .unwrap_or_default();
        assert_eq!(
            ok,
            vec![
                (IndicatorKind::Url, "https://a/b".to_string()),
                (IndicatorKind::Sender, "x@y".to_string())
            ]
        );
        let h = parse_stix_pattern("[file:hashes.'SHA-256' = 'AB']").unwrap_or_default();
        assert_eq!(h, vec![(IndicatorKind::Sha256, "ab".to_string())]);
        assert!(parse_stix_pattern("[process:name = 'x']").is_err());
        assert!(parse_stix_pattern("[url:value != 'x']").is_err());
        assert!(parse_stix_pattern("[url:value = 'x'").is_err());
        assert!(parse_stix_pattern("[url:value = 'x'] AND [url:value = 'y']").is_err());
    }

    #[test]
    fn stix_bundle_skips_bad_indicators() {
        let text = r#"{"type":"bundle","id":"bundle--1","objects":[
          {"type":"identity","id":"identity--1"},
          {"type":"indicator","id":"indicator--a","pattern_type":"stix",
           "pattern":"[email-message:subject = 'Invoice 8841 overdue']"},
          {"type":"indicator","id":"indicator--b","pattern":"[mutex:name = 'x']"},
          {"type":"indicator","id":"indicator--c","indicator_types":["anomalous-activity"],
           "pattern":"[domain-name:value = 'evil.example']"}]}"#;
        let (ind, errs) = parse_stix(text, Path::new("b.json"));
        assert_eq!(ind.len(), 2);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].position, "objects[2] (indicator--b)");
        assert!(ind.iter().all(|i| i.matches(&rec())));
        assert_eq!(ind[1].disposition, Disposition::Suspicious);
        let (_, errs) = parse_stix("{\n  \"type\": ", Path::new("bad.json"));
        assert!(errs[0].position.starts_with("line 2"), "{:?}", errs[0]);
    }

    #[test]
    fn plain_lists_and_globs() {
        let text = "# disposition: spam\nsender bad@evil.example\nsubject invoice ????\n\
                    subject Invoice*overdue\nwhat x\n";
        let (ind, errs) = parse_plain(text, Path::new("p.txt"));
        assert_eq!(ind.len(), 3);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].position, "line 5");
        assert!(ind[0].matches(&rec()));
        assert!(!ind[1].matches(&rec()));
        assert!(ind[2].matches(&rec()));
        assert_eq!(ind[0].disposition, Disposition::Spam);
        assert!(subject_matches("a*b*c", "aXXbYYc"));
        assert!(!subject_matches("a*b*c", "aXXbYY"));
    }
}
