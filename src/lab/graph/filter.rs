//! The OData `$filter` subset the lab understands: comparisons `property op literal` joined by
//! `and`. String literals are single-quoted with `''` for a quote; date-times are bare ISO 8601
//! (quoted is accepted too).

use chrono::{DateTime, Utc};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

/// One `property op literal` clause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// Property name as written.
    pub property: String,
    pub op: Op,
    /// The literal, unquoted and unescaped.
    pub value: String,
}

impl Clause {
    /// The literal as a date-time.
    pub fn date(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.value)
            .ok()
            .map(|d| d.with_timezone(&Utc))
            .or_else(|| {
                chrono::NaiveDate::parse_from_str(&self.value, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|d| d.and_utc())
            })
    }

    /// Whether `actual` satisfies this clause's comparison against `wanted`.
    pub fn compare<T: PartialOrd>(&self, actual: &T, wanted: &T) -> bool {
        match self.op {
            Op::Eq => actual == wanted,
            Op::Ge => actual >= wanted,
            Op::Gt => actual > wanted,
            Op::Le => actual <= wanted,
            Op::Lt => actual < wanted,
        }
    }
}

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid filter clause: {0}")]
pub struct FilterError(pub String);

/// Parses `a eq 'x' and b ge 2024-01-01T00:00:00Z`.
pub fn parse(text: &str) -> Result<Vec<Clause>, FilterError> {
    let mut rest = text.trim();
    let mut clauses = Vec::new();
    loop {
        let (property, after) = word(rest);
        if property.is_empty()
            || !property
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '/' || c == '_')
        {
            return Err(FilterError(format!("expected a property name at {rest:?}")));
        }
        let (op_word, after) = word(after);
        let op = match op_word.to_ascii_lowercase().as_str() {
            "eq" => Op::Eq,
            "ge" => Op::Ge,
            "gt" => Op::Gt,
            "le" => Op::Le,
            "lt" => Op::Lt,
            other => {
                return Err(FilterError(format!(
                    "unsupported operator {other:?} after {property}"
                )));
            }
        };
        let after = after.trim_start();
        let (value, after) = if let Some(quoted) = after.strip_prefix('\'') {
            string_literal(quoted)?
        } else {
            let (w, a) = word(after);
            if w.is_empty() {
                return Err(FilterError(format!(
                    "missing value after {property} {op_word}"
                )));
            }
            (w.to_string(), a)
        };
        clauses.push(Clause {
            property: property.to_string(),
            op,
            value,
        });
        let after = after.trim_start();
        if after.is_empty() {
            return Ok(clauses);
        }
        let (joiner, after) = word(after);
        if !joiner.eq_ignore_ascii_case("and") {
            return Err(FilterError(format!(
                "expected 'and' or the end, found {joiner:?}"
            )));
        }
        rest = after.trim_start();
    }
}

/// The next whitespace-delimited word and what follows it.
fn word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    (&text[..end], &text[end..])
}

/// Reads a string literal body after its opening quote: `''` is a quote, `'` ends it.
fn string_literal(text: &str) -> Result<(String, &str), FilterError> {
    let mut value = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if let Some((_, '\'')) = chars.peek() {
                chars.next();
                value.push('\'');
            } else {
                return Ok((value, &text[i + 1..]));
            }
        } else {
            value.push(c);
        }
    }
    Err(FilterError("unterminated string literal".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_joined_clauses_and_escapes() {
        let c =
            parse("internetMessageId eq '<it''s@x>' and receivedDateTime ge 2024-01-02T03:04:05Z")
                .expect("valid");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].value, "<it's@x>");
        assert_eq!(c[1].op, Op::Ge);
        assert!(c[1].date().is_some());
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "subject",
            "a eq",
            "a eq 'x",
            "a like 'x'",
            "a eq 'x' or b eq 'y'",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
