//! The subset of Gmail's search language (`q`) the lab understands.
//!
//! Supported: `rfc822msgid:` (with or without angle brackets), `from:`, `to:` (To and Cc),
//! `subject:` (a word or a quoted phrase), `after:`/`before:` (`YYYY/MM/DD`, `YYYY-MM-DD` at
//! midnight UTC, or epoch seconds), `newer_than:`/`older_than:` (`Nd`, `Nm`, `Ny`), `in:`
//! (inbox, spam, trash, sent, drafts, archive, anywhere), `label:`, `is:` (unread, read,
//! starred, important), `has:attachment`, `-` negation, free words and quoted phrases (matched
//! in subject, body, sender and recipients). Terms are ANDed (`AND` is accepted). Anything
//! else the lab cannot honour faithfully (`OR`, `{…}`, parentheses, other `has:`/`is:`/`in:`
//! values) is refused with 400 rather than silently misread.

use crate::lab::state::Copy;
use chrono::{NaiveDate, Utc};

/// A parsed query: all terms must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    negated: bool,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    MessageId(String),
    From(String),
    To(String),
    Subject(String),
    /// Received at or after (epoch seconds).
    After(i64),
    /// Received before (epoch seconds).
    Before(i64),
    In(String),
    Label(String),
    Is(String),
    HasAttachment,
    Text(String),
}

impl Query {
    /// Parses `q`. The error text goes into the 400 response.
    pub fn parse(q: &str) -> Result<Query, String> {
        let mut terms = Vec::new();
        let chars: Vec<char> = q.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if chars[i].is_whitespace() {
                i += 1;
                continue;
            }
            let mut negated = false;
            if chars[i] == '-' {
                negated = true;
                i += 1;
            }
            let (token, quoted, next) = read_token(&chars, i)?;
            i = next;
            if token.is_empty() && !quoted {
                return Err("Invalid search query: dangling '-'".into());
            }
            if !quoted && (token == "OR" || token.contains(['(', ')', '{', '}', '|'])) {
                return Err(format!(
                    "Invalid search query: {token:?} (OR, braces and parentheses are not supported by the lab)"
                ));
            }
            if !quoted && token == "AND" {
                continue;
            }
            let kind = if quoted {
                Kind::Text(token.to_lowercase())
            } else {
                term_kind(&token)?
            };
            terms.push(Term { negated, kind });
        }
        Ok(Query { terms })
    }

    /// Whether the query names spam or trash itself (then `includeSpamTrash` is implied).
    pub fn reaches_spam_trash(&self) -> bool {
        self.terms.iter().any(|t| {
            !t.negated
                && matches!(&t.kind, Kind::In(p) | Kind::Label(p) if p == "spam" || p == "trash" || p == "anywhere")
        })
    }

    /// Whether a copy in `mailbox` with these labels matches.
    pub fn matches(&self, copy: &Copy, labels: &[String], mailbox: &str) -> bool {
        self.terms
            .iter()
            .all(|t| term_matches(&t.kind, copy, labels, mailbox) != t.negated)
    }
}

/// Reads one token from `i`: `word`, `key:value`, `key:"a phrase"` or `"a phrase"`.
fn read_token(chars: &[char], mut i: usize) -> Result<(String, bool, usize), String> {
    let mut out = String::new();
    if chars.get(i) == Some(&'"') {
        i += 1;
        while i < chars.len() && chars[i] != '"' {
            out.push(chars[i]);
            i += 1;
        }
        if i >= chars.len() {
            return Err("Invalid search query: unbalanced quote".into());
        }
        return Ok((out, true, i + 1));
    }
    while i < chars.len() && !chars[i].is_whitespace() {
        if chars[i] == '"' {
            if !out.ends_with(':') {
                return Err("Invalid search query: misplaced quote".into());
            }
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                out.push(chars[i]);
                i += 1;
            }
            if i >= chars.len() {
                return Err("Invalid search query: unbalanced quote".into());
            }
            i += 1;
            break;
        }
        out.push(chars[i]);
        i += 1;
    }
    Ok((out, false, i))
}

fn term_kind(token: &str) -> Result<Kind, String> {
    let Some((key, value)) = token.split_once(':') else {
        return Ok(Kind::Text(token.to_lowercase()));
    };
    let key = key.to_ascii_lowercase();
    let known = [
        "rfc822msgid",
        "from",
        "to",
        "subject",
        "after",
        "before",
        "newer_than",
        "older_than",
        "in",
        "label",
        "is",
        "has",
    ];
    if !known.contains(&key.as_str()) {
        // Gmail reads unknown `x:y` as plain words; so does the lab.
        return Ok(Kind::Text(token.to_lowercase()));
    }
    if value.is_empty() {
        return Err(format!("Invalid search query: {key}: needs a value"));
    }
    let v = value.to_lowercase();
    Ok(match key.as_str() {
        "rfc822msgid" => Kind::MessageId(strip_brackets(&v)),
        "from" => Kind::From(v),
        "to" => Kind::To(v),
        "subject" => Kind::Subject(v),
        "after" => Kind::After(parse_when(value)?),
        "before" => Kind::Before(parse_when(value)?),
        "newer_than" => Kind::After(Utc::now().timestamp() - parse_age(value)?),
        "older_than" => Kind::Before(Utc::now().timestamp() - parse_age(value)?),
        "in" => match v.as_str() {
            "inbox" | "spam" | "trash" | "sent" | "drafts" | "archive" | "anywhere" => Kind::In(v),
            _ => return Err(format!("Invalid search query: in:{value} is not supported")),
        },
        "label" => Kind::Label(v),
        "is" => match v.as_str() {
            "unread" | "read" | "starred" | "important" => Kind::Is(v),
            _ => return Err(format!("Invalid search query: is:{value} is not supported")),
        },
        _ => match v.as_str() {
            "attachment" => Kind::HasAttachment,
            _ => {
                return Err(format!(
                    "Invalid search query: has:{value} is not supported"
                ));
            }
        },
    })
}

fn strip_brackets(v: &str) -> String {
    v.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

/// `YYYY/MM/DD`, `YYYY-MM-DD` (midnight UTC) or epoch seconds.
fn parse_when(v: &str) -> Result<i64, String> {
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) {
        return v
            .parse::<i64>()
            .map_err(|_| format!("Invalid search query: date {v:?}"));
    }
    let date = NaiveDate::parse_from_str(v, "%Y/%m/%d")
        .or_else(|_| NaiveDate::parse_from_str(v, "%Y-%m-%d"))
        .map_err(|_| format!("Invalid search query: date {v:?} (use YYYY/MM/DD)"))?;
    Ok(date
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc().timestamp())
        .unwrap_or_default())
}

/// `3d`, `2m`, `1y` as seconds.
fn parse_age(v: &str) -> Result<i64, String> {
    let bad = || format!("Invalid search query: age {v:?} (use e.g. 3d, 2m, 1y)");
    let (num, unit) = v.split_at(v.len().saturating_sub(1));
    let n: i64 = num.parse().map_err(|_| bad())?;
    let day = 86_400;
    match unit {
        "d" => Ok(n * day),
        "m" => Ok(n * 30 * day),
        "y" => Ok(n * 365 * day),
        _ => Err(bad()),
    }
}

fn has_label(labels: &[String], name: &str) -> bool {
    labels.iter().any(|l| l.eq_ignore_ascii_case(name))
}

fn term_matches(kind: &Kind, copy: &Copy, labels: &[String], mailbox: &str) -> bool {
    let c = &copy.content;
    let me = |v: &str| {
        if v == "me" {
            mailbox.to_string()
        } else {
            v.to_string()
        }
    };
    match kind {
        Kind::MessageId(id) => strip_brackets(&c.internet_message_id).eq_ignore_ascii_case(id),
        Kind::From(v) => {
            let v = me(v);
            c.from.to_lowercase().contains(&v) || c.from_name.to_lowercase().contains(&v)
        }
        Kind::To(v) => {
            let v = me(v);
            c.to.iter()
                .chain(c.cc.iter())
                .any(|a| a.to_lowercase().contains(&v))
        }
        Kind::Subject(v) => c.subject.to_lowercase().contains(v.as_str()),
        Kind::After(t) => copy.received.timestamp() >= *t,
        Kind::Before(t) => copy.received.timestamp() < *t,
        Kind::In(place) => match place.as_str() {
            "anywhere" => true,
            "archive" => !["INBOX", "SPAM", "TRASH", "SENT", "DRAFT"]
                .iter()
                .any(|l| has_label(labels, l)),
            "drafts" => has_label(labels, "DRAFT"),
            other => has_label(labels, other),
        },
        Kind::Label(l) => has_label(labels, l) || has_label(labels, &format!("Label_{l}")),
        Kind::Is(flag) => match flag.as_str() {
            "unread" => has_label(labels, "UNREAD"),
            "read" => !has_label(labels, "UNREAD"),
            other => has_label(labels, other),
        },
        Kind::HasAttachment => c.has_attachments,
        Kind::Text(w) => {
            c.subject.to_lowercase().contains(w.as_str())
                || c.body_text.to_lowercase().contains(w.as_str())
                || c.from.contains(w.as_str())
                || c.from_name.to_lowercase().contains(w.as_str())
                || c.to
                    .iter()
                    .chain(c.cc.iter())
                    .any(|a| a.contains(w.as_str()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::state::MessageContent;
    use crate::model::Folder;
    use std::sync::Arc;

    fn copy() -> Copy {
        let date = chrono::DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        Copy {
            id: "1".into(),
            immutable_id: "1".into(),
            folder: Folder::Inbox,
            read: false,
            extra_labels: vec![],
            received: date,
            changed: 0,
            content: Arc::new(MessageContent {
                internet_message_id: "<Abc.1@mail.example.com>".into(),
                raw: String::new(),
                subject: "Urgent: invoice overdue".into(),
                from: "mallory@evil.example".into(),
                from_name: "Mallory".into(),
                to: vec!["alice@fabrikam.test".into()],
                cc: vec![],
                date,
                in_reply_to: None,
                references: vec![],
                conversation_key: "k".into(),
                body_text: "Please pay now".into(),
                has_attachments: true,
                attachments: vec![],
            }),
        }
    }

    fn m(q: &str) -> bool {
        let labels = vec!["INBOX".to_string(), "UNREAD".to_string()];
        Query::parse(q)
            .expect(q)
            .matches(&copy(), &labels, "alice@fabrikam.test")
    }

    #[test]
    fn operators_match_as_documented() {
        assert!(m("rfc822msgid:<abc.1@mail.example.com>"));
        assert!(m("rfc822msgid:Abc.1@mail.example.com"));
        assert!(!m("rfc822msgid:other@x"));
        assert!(m(
            "from:mallory@evil.example to:me is:unread has:attachment in:inbox"
        ));
        assert!(m("subject:\"invoice overdue\" pay"));
        assert!(!m("-subject:invoice"));
        assert!(m("after:2026/03/10 before:2026-03-11"));
        assert!(!m("after:2026/03/11"));
        assert!(m("after:1773144000 before:1773144001"));
        assert!(!m("is:read"));
        assert!(m("\"pay now\""));
        assert!(m("in:anywhere"));
        assert!(!m("in:trash"));
    }

    #[test]
    fn bad_queries_are_refused() {
        for q in [
            "subject:\"open",
            "after:yesterday",
            "a OR b",
            "(a b)",
            "is:snoozed",
            "from:",
            "- x",
        ] {
            assert!(Query::parse(q).is_err(), "{q}");
        }
        assert!(Query::parse("in:spam").expect("ok").reaches_spam_trash());
        assert!(!Query::parse("-in:trash").expect("ok").reaches_spam_trash());
    }
}
