//! Google HTTP batch (`multipart/mixed`): building the request and parsing the response
//! (PROVIDER-APIS.md B.3). Each part is a whole HTTP request (path only) with its own
//! `Authorization` header, since each part may impersonate another user.

use super::errors::parse_retry_after;
use super::http::{SubRequest, SubResponse};

/// One part to send: the sub-request and its bearer token.
pub struct Part<'a> {
    pub request: &'a SubRequest,
    pub bearer: &'a str,
}

/// Builds the body; returns (content type, body). Parts get `Content-ID: <item-N>`.
pub fn build(parts: &[Part<'_>], boundary: &str) -> (String, Vec<u8>) {
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        out.push_str(&format!("--{boundary}\r\n"));
        out.push_str("Content-Type: application/http\r\n");
        out.push_str(&format!("Content-ID: <item-{i}>\r\n\r\n"));
        out.push_str(&format!(
            "{} {} HTTP/1.1\r\n",
            part.request.method, part.request.path
        ));
        out.push_str(&format!("Authorization: Bearer {}\r\n", part.bearer));
        match &part.request.body {
            Some(body) => {
                let text = body.to_string();
                out.push_str("Content-Type: application/json\r\n");
                out.push_str(&format!("Content-Length: {}\r\n\r\n", text.len()));
                out.push_str(&text);
                out.push_str("\r\n");
            }
            None => out.push_str("\r\n"),
        }
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    (
        format!("multipart/mixed; boundary={boundary}"),
        out.into_bytes(),
    )
}

/// Why a batch response could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    #[error("batch response has no multipart boundary in Content-Type {0:?}")]
    NoBoundary(String),
    #[error("batch response part {0}: {1}")]
    BadPart(usize, String),
}

/// The boundary parameter of a `multipart/mixed` content type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|p| {
        let p = p.trim();
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Parses a batch response into `n` sub-responses, placed by `Content-ID: <response-item-N>`
/// (falling back to order). Missing parts are `None`.
pub fn parse(
    content_type: &str,
    body: &[u8],
    n: usize,
) -> Result<Vec<Option<SubResponse>>, MultipartError> {
    let boundary =
        boundary_of(content_type).ok_or_else(|| MultipartError::NoBoundary(content_type.into()))?;
    let delimiter = format!("--{boundary}");
    let text = String::from_utf8_lossy(body);
    let mut out: Vec<Option<SubResponse>> = vec![None; n];
    for (order, (pi, chunk)) in text
        .split(delimiter.as_str())
        .enumerate()
        .skip(1)
        .enumerate()
    {
        if chunk.starts_with("--") {
            break;
        }
        let chunk = chunk.trim_start_matches(['\r', '\n']);
        // Part headers, blank line, then the embedded HTTP response.
        let (part_headers, http) = split_head(chunk).ok_or_else(|| {
            MultipartError::BadPart(pi, "no blank line after part headers".into())
        })?;
        let index = header_value(part_headers, "content-id")
            .and_then(|v| {
                v.trim_matches(['<', '>'])
                    .rsplit('-')
                    .next()
                    .and_then(|s| s.parse::<usize>().ok())
            })
            .unwrap_or(order);
        let (head, body) =
            split_head(http).ok_or_else(|| MultipartError::BadPart(pi, "no HTTP head".into()))?;
        let status_line = head.lines().next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| {
                MultipartError::BadPart(pi, format!("bad status line {status_line:?}"))
            })?;
        let retry_after = header_value(head, "retry-after").and_then(|v| parse_retry_after(&v));
        let body = body.trim_end_matches(['\r', '\n']).trim();
        let json = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::String(body.into()))
        };
        if index < n {
            out[index] = Some(SubResponse {
                status,
                retry_after,
                body: json,
            });
        }
    }
    Ok(out)
}

fn split_head(s: &str) -> Option<(&str, &str)> {
    if let Some(i) = s.find("\r\n\r\n") {
        return Some((&s[..i], &s[i + 4..]));
    }
    s.find("\n\n").map(|i| (&s[..i], &s[i + 2..]))
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Method;

    #[test]
    fn builds_parts_with_their_own_tokens() {
        let a = SubRequest::mutate(
            Method::POST,
            "/gmail/v1/users/a%40x.com/messages/1/modify",
            Some(serde_json::json!({"addLabelIds": ["SPAM"]})),
            "a@x.com",
            5,
        );
        let b = SubRequest::get("/gmail/v1/users/b%40x.com/messages/2", "b@x.com", 5);
        let (ct, body) = build(
            &[
                Part {
                    request: &a,
                    bearer: "tok-a",
                },
                Part {
                    request: &b,
                    bearer: "tok-b",
                },
            ],
            "batch_x",
        );
        assert_eq!(ct, "multipart/mixed; boundary=batch_x");
        let text = String::from_utf8(body).expect("utf8");
        assert!(text.contains("Content-ID: <item-1>\r\n\r\nGET /gmail/v1/users/b%40x.com/messages/2 HTTP/1.1\r\nAuthorization: Bearer tok-b\r\n"), "{text}");
        assert!(
            text.contains("Content-Length: 24\r\n\r\n{\"addLabelIds\":[\"SPAM\"]}"),
            "{text}"
        );
        assert!(text.ends_with("--batch_x--\r\n"));
    }

    #[test]
    fn parses_responses_by_content_id() {
        let body = "--batch_abc\r\nContent-Type: application/http\r\nContent-ID: <response-item-1>\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n{\"error\":{\"code\":404,\"message\":\"Requested entity was not found.\",\"errors\":[{\"reason\":\"notFound\"}]}}\r\n--batch_abc\r\nContent-Type: application/http\r\nContent-ID: <response-item-0>\r\n\r\nHTTP/1.1 429 Too Many Requests\r\nRetry-After: 1.5\r\n\r\n\r\n--batch_abc--\r\n";
        let parts = parse(
            "multipart/mixed; boundary=\"batch_abc\"",
            body.as_bytes(),
            3,
        )
        .expect("parse");
        let first = parts[0].as_ref().expect("0");
        assert_eq!((first.status, first.retry_after), (429, Some(1.5)));
        let second = parts[1].as_ref().expect("1");
        assert_eq!(second.status, 404);
        assert_eq!(second.body["error"]["errors"][0]["reason"], "notFound");
        assert!(parts[2].is_none());
        assert_eq!(
            parse("application/json", b"", 1),
            Err(MultipartError::NoBoundary("application/json".into()))
        );
    }
}
