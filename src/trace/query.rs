//! The trace search language.
//!
//! ```text
//! query   := or EOF                      (empty query matches everything)
//! or      := and ("OR" and)*
//! and     := unary+                      (juxtaposition is AND)
//! unary   := "-" unary | primary
//! primary := "(" or ")" | FIELD ":" value | word | "quoted phrase"
//! value   := word | "quoted phrase"
//! ```
//! Fields: `from to subject msgid domain url sha256 disposition tenant since until retracted`.
//! Errors carry the 1-based character column they refer to (`query:1:COL: …`).
//! Parentheses and `-` nest at most [`MAX_DEPTH`] deep.

use crate::model::{Disposition, normalize_message_id};
use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
use std::fmt;

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Matches every record (the empty query).
    All,
    Term(Term),
    Not(Box<Query>),
    And(Vec<Query>),
    Or(Vec<Query>),
}

/// One condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// A free word (`phrase = false`, may end in `*` for a prefix) or a quoted phrase, searched
    /// in subject, sender, recipients and URLs.
    Text {
        text: String,
        phrase: bool,
    },
    /// `from:`; see [`AddressFilter`].
    From(AddressFilter),
    /// `to:` (any recipient, envelope or header).
    To(AddressFilter),
    /// `subject:` words or phrase.
    Subject(String),
    /// `msgid:`, normalized `<…>`.
    MessageId(String),
    /// `domain:` sender domain, any recipient domain or any URL host, exact.
    Domain(String),
    /// `url:` words of a URL in order (`url:evil.example/login`).
    Url(String),
    /// `sha256:` attachment hash, lowercase hex.
    Sha256(String),
    /// `disposition:WORD`, `disposition:none` (`None`), `disposition:any` (`Some(None)` is not
    /// used; see [`DispositionFilter`]).
    Disposition(DispositionFilter),
    Tenant(String),
    Since(TimeBound),
    Until(TimeBound),
    /// `retracted:yes|no`.
    Retracted(bool),
}

/// How `from:`/`to:` match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressFilter {
    /// Contains `@` with a local part: the exact address, lowercased.
    Address(String),
    /// `@example.com` or `example.com`: the exact domain, lowercased.
    Domain(String),
    /// Anything else (`alice`): a word prefix of the name or address.
    Word(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispositionFilter {
    Is(Disposition),
    /// No disposition.
    None,
    /// Any disposition.
    Any,
}

/// A time bound: absolute, or relative to the time the query runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    /// Unix seconds.
    At(i64),
    /// So many seconds before now.
    Ago(i64),
}

impl TimeBound {
    /// Unix seconds, given the current time.
    pub fn resolve(self, now: i64) -> i64 {
        match self {
            TimeBound::At(t) => t,
            TimeBound::Ago(s) => now.saturating_sub(s),
        }
    }
}

/// A malformed query: where (1-based character column) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query:1:{column}: {message}")]
pub struct QueryError {
    /// 1-based character column; `len + 1` means the end of the input.
    pub column: usize,
    pub message: String,
}

/// The field names, as documented.
pub const FIELDS: &[&str] = &[
    "from",
    "to",
    "subject",
    "msgid",
    "domain",
    "url",
    "sha256",
    "disposition",
    "tenant",
    "since",
    "until",
    "retracted",
];

/// How deep `(` and `-` may nest. The parser and everything that walks a [`Query`] (the SQL
/// it compiles to, SQLite's own expression depth limit of 1000, `Drop`) recurse once per level,
/// so without a bound a pasted run of 12,000 `(` overflowed the stack. No query a person writes
/// comes near it.
pub const MAX_DEPTH: usize = 64;

/// Parses a query.
pub fn parse(input: &str) -> Result<Query, QueryError> {
    let tokens = lex(input)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        end_column: input.chars().count() + 1,
        depth: 0,
    };
    if p.tokens.is_empty() {
        return Ok(Query::All);
    }
    let q = p.or()?;
    match p.peek() {
        None => Ok(q),
        Some(t) => Err(QueryError {
            column: t.column,
            message: match t.kind {
                TokKind::Close => "unbalanced \")\": no \"(\" before it".to_string(),
                _ => format!("unexpected {}", t.describe()),
            },
        }),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokKind {
    Open,
    Close,
    Minus,
    Or,
    /// `name:` followed by its value token.
    Field(String),
    Word(String),
    Phrase(String),
}

#[derive(Debug, Clone)]
struct Tok {
    kind: TokKind,
    column: usize,
}

impl Tok {
    fn describe(&self) -> String {
        match &self.kind {
            TokKind::Open => "\"(\"".into(),
            TokKind::Close => "\")\"".into(),
            TokKind::Minus => "\"-\"".into(),
            TokKind::Or => "\"OR\"".into(),
            TokKind::Field(f) => format!("\"{f}:\""),
            TokKind::Word(w) => format!("word {w:?}"),
            TokKind::Phrase(p) => format!("phrase {p:?}"),
        }
    }
}

fn lex(input: &str) -> Result<Vec<Tok>, QueryError> {
    let chars: Vec<char> = input.chars().collect();
    // A control character (NUL from a paste, an escape sequence) is never part of an address,
    // subject or id: refused where it is, rather than failing the search further down.
    if let Some(i) = chars
        .iter()
        .position(|c| c.is_control() && !c.is_whitespace())
    {
        return Err(QueryError {
            column: i + 1,
            message: format!(
                "control character U+{:04X} is not allowed in a query",
                u32::from(chars[i])
            ),
        });
    }
    let mut i = 0;
    let mut out = Vec::new();
    // Whether the previous token was `field:` (then the next word is taken whole, colons included).
    let mut after_field = false;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            after_field = false;
            continue;
        }
        if c == '"' {
            let start = i + 1;
            let mut j = start;
            while j < chars.len() && chars[j] != '"' {
                j += 1;
            }
            if j >= chars.len() {
                return Err(QueryError {
                    column: chars.len() + 1,
                    message: format!(
                        "expected a closing quote for the phrase opened at column {column}"
                    ),
                });
            }
            out.push(Tok {
                kind: TokKind::Phrase(chars[start..j].iter().collect()),
                column,
            });
            i = j + 1;
            after_field = false;
            continue;
        }
        if c == '(' && !after_field {
            out.push(Tok {
                kind: TokKind::Open,
                column,
            });
            i += 1;
            continue;
        }
        if c == ')' && !after_field {
            out.push(Tok {
                kind: TokKind::Close,
                column,
            });
            i += 1;
            continue;
        }
        if c == '-' && !after_field {
            out.push(Tok {
                kind: TokKind::Minus,
                column,
            });
            i += 1;
            continue;
        }
        // A word runs to whitespace, a quote, or a parenthesis (a field value keeps inner colons).
        let start = i;
        while i < chars.len()
            && !chars[i].is_whitespace()
            && chars[i] != '"'
            && !(chars[i] == ')' || chars[i] == '(')
        {
            if chars[i] == ':' && !after_field {
                break;
            }
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        if !after_field && i < chars.len() && chars[i] == ':' {
            // `name:` — the value must follow directly.
            let name = word.to_ascii_lowercase();
            if !FIELDS.contains(&name.as_str()) {
                return Err(QueryError {
                    column,
                    message: format!(
                        "unknown field \"{word}:\"; expected one of {} (quote the text to search for it)",
                        FIELDS.join(", ")
                    ),
                });
            }
            i += 1;
            out.push(Tok {
                kind: TokKind::Field(name),
                column,
            });
            if i >= chars.len() || chars[i].is_whitespace() || chars[i] == ')' || chars[i] == '(' {
                return Err(QueryError {
                    column: i + 1,
                    message: format!("expected a value after \"{word}:\""),
                });
            }
            after_field = true;
            continue;
        }
        after_field = false;
        if word == "OR" {
            out.push(Tok {
                kind: TokKind::Or,
                column,
            });
        } else {
            out.push(Tok {
                kind: TokKind::Word(word),
                column,
            });
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
    end_column: usize,
    /// `(` and `-` open around the current token.
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    /// Enters one more level of nesting for the `(` or `-` at `tok`, or refuses past
    /// [`MAX_DEPTH`] with that token's column.
    fn descend(&mut self, tok: &Tok) -> Result<(), QueryError> {
        if self.depth >= MAX_DEPTH {
            return Err(QueryError {
                column: tok.column,
                message: format!(
                    "{} nested more than {MAX_DEPTH} deep (parentheses and \"-\" count); write the query flatter",
                    tok.describe()
                ),
            });
        }
        self.depth += 1;
        Ok(())
    }

    fn or(&mut self) -> Result<Query, QueryError> {
        let mut parts = vec![self.and()?];
        while let Some(Tok {
            kind: TokKind::Or, ..
        }) = self.peek()
        {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Query::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Query, QueryError> {
        let mut parts = Vec::new();
        loop {
            match self.peek() {
                None
                | Some(Tok {
                    kind: TokKind::Or | TokKind::Close,
                    ..
                }) => break,
                _ => parts.push(self.unary()?),
            }
        }
        if parts.is_empty() {
            let (column, what) = match self.peek() {
                Some(t) => (t.column, t.describe()),
                None => (self.end_column, "the end of the query".to_string()),
            };
            return Err(QueryError {
                column,
                message: format!("expected a search term before {what}"),
            });
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Query::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Query, QueryError> {
        let Some(tok) = self.next() else {
            return Err(QueryError {
                column: self.end_column,
                message: "expected a search term".into(),
            });
        };
        match tok.kind {
            TokKind::Minus => {
                match self.peek() {
                    None
                    | Some(Tok {
                        kind: TokKind::Or | TokKind::Close,
                        ..
                    }) => {
                        return Err(QueryError {
                            column: self.peek().map(|t| t.column).unwrap_or(self.end_column),
                            message: "expected a term to negate after \"-\"".into(),
                        });
                    }
                    _ => {}
                }
                self.descend(&tok)?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Query::Not(Box::new(inner)))
            }
            TokKind::Open => {
                self.descend(&tok)?;
                let inner = self.or()?;
                self.depth -= 1;
                match self.next() {
                    Some(Tok {
                        kind: TokKind::Close,
                        ..
                    }) => Ok(inner),
                    _ => Err(QueryError {
                        column: self.end_column,
                        message: format!(
                            "expected \")\" to close the \"(\" at column {}",
                            tok.column
                        ),
                    }),
                }
            }
            TokKind::Word(w) => Ok(Query::Term(Term::Text {
                text: w,
                phrase: false,
            })),
            TokKind::Phrase(p) => {
                if p.trim().is_empty() {
                    return Err(QueryError {
                        column: tok.column,
                        message: "expected text inside the quotes".into(),
                    });
                }
                Ok(Query::Term(Term::Text {
                    text: p,
                    phrase: true,
                }))
            }
            TokKind::Field(name) => {
                let value = self.next();
                let (value, column) = match value {
                    Some(Tok {
                        kind: TokKind::Word(v) | TokKind::Phrase(v),
                        column,
                    }) => (v, column),
                    Some(Tok {
                        kind: TokKind::Or,
                        column,
                    }) => ("OR".to_string(), column),
                    other => {
                        return Err(QueryError {
                            column: other.map(|t| t.column).unwrap_or(self.end_column),
                            message: format!("expected a value after \"{name}:\""),
                        });
                    }
                };
                field_term(&name, &value, column).map(Query::Term)
            }
            TokKind::Or | TokKind::Close => Err(QueryError {
                column: tok.column,
                message: format!("expected a search term before {}", tok.describe()),
            }),
        }
    }
}

fn field_term(name: &str, value: &str, column: usize) -> Result<Term, QueryError> {
    let err = |message: String| QueryError { column, message };
    let v = value.trim();
    if v.is_empty() {
        return Err(err(format!("expected a value after \"{name}:\"")));
    }
    Ok(match name {
        "from" => Term::From(address_filter(v)),
        "to" => Term::To(address_filter(v)),
        "subject" => Term::Subject(v.to_string()),
        "msgid" => Term::MessageId(normalize_message_id(v).ok_or_else(|| {
            err(format!(
                "expected a Message-ID like <id@host> after \"msgid:\", got {v:?}"
            ))
        })?),
        "domain" => Term::Domain(v.trim_start_matches('@').to_ascii_lowercase()),
        "url" => Term::Url(v.to_string()),
        "sha256" => {
            let h = v.to_ascii_lowercase();
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(format!(
                    "expected 64 hex digits after \"sha256:\", got {v:?}"
                )));
            }
            Term::Sha256(h)
        }
        "disposition" => Term::Disposition(match v.to_ascii_lowercase().as_str() {
            "none" => DispositionFilter::None,
            "any" => DispositionFilter::Any,
            _ => DispositionFilter::Is(v.parse::<Disposition>().map_err(|_| {
                err(format!(
                    "expected a disposition after \"disposition:\" (malicious, suspicious, spoof, spam, bulk, none, any), got {v:?}"
                ))
            })?),
        }),
        "tenant" => Term::Tenant(v.to_string()),
        "since" => Term::Since(time_bound(v).map_err(|m| err(format!("{m} after \"since:\"")))?),
        "until" => Term::Until(time_bound(v).map_err(|m| err(format!("{m} after \"until:\"")))?),
        "retracted" => Term::Retracted(match v.to_ascii_lowercase().as_str() {
            "yes" | "true" => true,
            "no" | "false" => false,
            _ => return Err(err(format!("expected yes or no after \"retracted:\", got {v:?}"))),
        }),
        _ => return Err(err(format!("unknown field \"{name}:\""))),
    })
}

fn address_filter(v: &str) -> AddressFilter {
    let lower = v.to_ascii_lowercase();
    if let Some(d) = lower.strip_prefix('@') {
        AddressFilter::Domain(d.to_string())
    } else if lower.contains('@') {
        AddressFilter::Address(lower)
    } else if lower.contains('.') {
        AddressFilter::Domain(lower)
    } else {
        AddressFilter::Word(lower)
    }
}

/// `2026-11-20`, `2026-11-20T08:00`, `2026-11-20T08:00:00`, `2026-11-20 08:00`, RFC 3339, or
/// relative `30m`, `24h`, `7d`, `2w`, `90s`.
fn time_bound(v: &str) -> Result<TimeBound, String> {
    let expected = || {
        format!(
            "expected a date (2026-11-20), a datetime (2026-11-20T08:00) or a duration (30m, 24h, 7d), got {v:?}"
        )
    };
    if let Some(unit) = v.chars().last()
        && v.len() > 1
        && v[..v.len() - unit.len_utf8()]
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        let n: i64 = v[..v.len() - unit.len_utf8()]
            .parse()
            .map_err(|_| expected())?;
        let mult = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(expected()),
        };
        return n.checked_mul(mult).map(TimeBound::Ago).ok_or_else(expected);
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(TimeBound::At(dt.timestamp()));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(v, f) {
            return Ok(TimeBound::At(Utc.from_utc_datetime(&dt).timestamp()));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d")
        && let Some(dt) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(TimeBound::At(Utc.from_utc_datetime(&dt).timestamp()));
    }
    Err(expected())
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::All => Ok(()),
            Query::Term(t) => write!(f, "{t:?}"),
            Query::Not(q) => write!(f, "-({q})"),
            Query::And(v) => {
                let parts: Vec<String> = v.iter().map(|q| format!("({q})")).collect();
                f.write_str(&parts.join(" "))
            }
            Query::Or(v) => {
                let parts: Vec<String> = v.iter().map(|q| format!("({q})")).collect();
                f.write_str(&parts.join(" OR "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn positions_name_the_missing_value() {
        let e = parse("spam from:").unwrap_err();
        assert_eq!(
            e.to_string(),
            "query:1:11: expected a value after \"from:\""
        );
        let e = parse("a from: b").unwrap_err();
        assert_eq!(e.column, 8);
        let e = parse("bogus:x").unwrap_err();
        assert_eq!(e.column, 1);
        assert!(e.message.contains("unknown field"), "{e}");
        let e = parse("a \"open").unwrap_err();
        assert_eq!(e.column, 8);
        let e = parse("(a OR b").unwrap_err();
        assert!(e.message.contains("expected \")\""), "{e}");
        let e = parse("a OR").unwrap_err();
        assert_eq!(e.column, 5);
        let e = parse("since:yesterday").unwrap_err();
        assert_eq!(e.column, 7);
        let e = parse("sha256:abc").unwrap_err();
        assert!(e.message.contains("64 hex"), "{e}");
        assert_eq!(parse("a )").unwrap_err().column, 3);
        assert_eq!(parse("-").unwrap_err().column, 2);
    }

    #[test]
    fn structure_and_precedence() {
        let q = parse("invoice -from:a@x.com OR subject:\"wire now\" since:7d").unwrap();
        let want = Query::Or(vec![
            Query::And(vec![
                Query::Term(Term::Text {
                    text: "invoice".into(),
                    phrase: false,
                }),
                Query::Not(Box::new(Query::Term(Term::From(AddressFilter::Address(
                    "a@x.com".into(),
                ))))),
            ]),
            Query::And(vec![
                Query::Term(Term::Subject("wire now".into())),
                Query::Term(Term::Since(TimeBound::Ago(7 * 86_400))),
            ]),
        ]);
        assert_eq!(q, want);
        assert_eq!(parse("  ").unwrap(), Query::All);
        assert_eq!(
            parse("url:https://evil.example/a:b").unwrap(),
            Query::Term(Term::Url("https://evil.example/a:b".into()))
        );
        assert_eq!(
            parse("since:2026-11-20").unwrap(),
            Query::Term(Term::Since(TimeBound::At(1_795_132_800)))
        );
        assert_eq!(
            parse("from:@Evil.Example").unwrap(),
            Query::Term(Term::From(AddressFilter::Domain("evil.example".into())))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics_and_errors_point_inside(s in "\\PC{0,40}") {
            if let Err(e) = parse(&s) {
                let len = s.chars().count();
                prop_assert!(e.column >= 1 && e.column <= len + 1, "{e} for {s:?}");
                let prefix = format!("query:1:{}: ", e.column);
                prop_assert!(e.to_string().starts_with(&prefix), "{}", e);
            }
        }

        #[test]
        fn query_shaped_input_never_panics(s in "((from|to|subject|msgid|since|until|url|sha256|disposition|retracted|tenant|domain|bogus):|-|\\(|\\)|\"| |OR|x|@|7d|2026-11-20|<a@b>){0,12}") {
            if let Err(e) = parse(&s) {
                prop_assert!(e.column >= 1 && e.column <= s.chars().count() + 1, "{e} for {s:?}");
            }
        }
    }
}
