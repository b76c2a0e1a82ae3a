//! Gmail's HTTP batch endpoint (PROVIDER-APIS.md B.3): `POST /batch/gmail/v1` or `POST /batch`
//! with a `multipart/mixed` body of up to 100 `application/http` parts, each a request with
//! the path only. Every part is dispatched through the lab's own router (so it is counted,
//! authorized, throttled and charged to quota as its own request), concurrently as Google does,
//! and the answers come back as one `multipart/mixed` response in request order, each part
//! `Content-ID: <response-ID>`.

use crate::lab::{SharedLab, errors};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

/// Most calls in one batch request.
pub const MAX_PARTS: usize = 100;
/// Largest body accepted back from one dispatched part.
const PART_BODY_LIMIT: usize = 32 * 1024 * 1024;

fn bad_request(message: &str) -> Response {
    errors::google(StatusCode::BAD_REQUEST, "badRequest", "global", message)
}

/// One answered part: its Content-ID and the HTTP response pieces.
struct Answer {
    content_id: Option<String>,
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// `POST /batch/gmail/v1`, `POST /batch`
pub async fn handle(State(lab): State<SharedLab>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(boundary) = boundary_of(content_type) else {
        return bad_request("Batch requests must be multipart/mixed with a boundary.");
    };
    let parts = split_parts(&body, &boundary);
    if parts.is_empty() {
        return bad_request("Batch request contains no parts.");
    }
    if parts.len() > MAX_PARTS {
        return bad_request(&format!(
            "Too many requests in batch: {} (at most {MAX_PARTS} calls are allowed).",
            parts.len()
        ));
    }
    let outer_auth = headers.get(header::AUTHORIZATION).cloned();
    let app = crate::lab::router(lab.clone());
    let calls = parts.into_iter().map(|part| {
        let app = app.clone();
        let outer_auth = outer_auth.clone();
        async move {
            let (content_id, request) = match parse_part(part, outer_auth) {
                Ok(v) => v,
                Err((content_id, message)) => {
                    return answer_of(content_id, bad_request(&message)).await;
                }
            };
            let response = match app.oneshot(request).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            answer_of(content_id, response).await
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let boundary = format!("batch_{}", uuid::Uuid::new_v4().simple());
    let mut out = Vec::new();
    for a in answers {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/http\r\n").as_bytes(),
        );
        if let Some(id) = &a.content_id {
            out.extend_from_slice(format!("Content-ID: <response-{id}>\r\n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "\r\nHTTP/1.1 {} {}\r\n",
                a.status.as_u16(),
                a.status.canonical_reason().unwrap_or("")
            )
            .as_bytes(),
        );
        for (k, v) in &a.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", a.body.len()).as_bytes());
        out.extend_from_slice(&a.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut response = (StatusCode::OK, out).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}")) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

/// Reads a dispatched response into an answer (a body that fails mid-way becomes a 503 part).
async fn answer_of(content_id: Option<String>, response: Response) -> Answer {
    let (parts, body) = response.into_parts();
    let keep = [
        header::CONTENT_TYPE,
        header::RETRY_AFTER,
        header::WWW_AUTHENTICATE,
    ];
    let headers: Vec<(String, String)> = keep
        .iter()
        .filter_map(|k| {
            parts
                .headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(|v| (canonical(k.as_str()), v.to_string()))
        })
        .collect();
    match axum::body::to_bytes(body, PART_BODY_LIMIT).await {
        Ok(bytes) => Answer {
            content_id,
            status: parts.status,
            headers,
            body: bytes,
        },
        Err(_) => {
            let failed = errors::google(
                StatusCode::SERVICE_UNAVAILABLE,
                "backendError",
                "global",
                "The service is currently unavailable.",
            );
            let (p, b) = failed.into_parts();
            Answer {
                content_id,
                status: p.status,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: axum::body::to_bytes(b, PART_BODY_LIMIT)
                    .await
                    .unwrap_or_default(),
            }
        }
    }
}

/// `content-type` → `Content-Type`.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// The `boundary` parameter of a `multipart/mixed` content type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let mut pieces = content_type.split(';');
    let kind = pieces.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    pieces.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

/// The parts of a multipart body (between `--boundary` lines, up to `--boundary--`).
pub fn split_parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delimiter = format!("--{boundary}");
    let d = delimiter.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(pos) = find(&body[i..], d) {
        let at = i + pos;
        // A delimiter starts a line.
        if at == 0 || body[at - 1] == b'\n' {
            starts.push(at);
        }
        i = at + d.len();
    }
    let mut parts = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let after = start + d.len();
        if body[after..].starts_with(b"--") {
            break;
        }
        let end = starts.get(n + 1).copied().unwrap_or(body.len());
        let mut part = &body[after..end];
        part = strip_leading_newline(part);
        while let Some((last, rest)) = part.split_last() {
            if *last == b'\n' || *last == b'\r' {
                part = rest;
            } else {
                break;
            }
        }
        parts.push(part);
    }
    parts
}

fn strip_leading_newline(mut b: &[u8]) -> &[u8] {
    // Transport padding after the boundary, then the line break.
    while let Some((first, rest)) = b.split_first() {
        if *first == b' ' || *first == b'\t' {
            b = rest;
        } else {
            break;
        }
    }
    b.strip_prefix(b"\r\n")
        .or_else(|| b.strip_prefix(b"\n"))
        .unwrap_or(b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

/// Parses one `application/http` part into its Content-ID and the request it carries.
#[allow(clippy::type_complexity)]
fn parse_part(
    part: &[u8],
    outer_auth: Option<HeaderValue>,
) -> Result<(Option<String>, Request<Body>), (Option<String>, String)> {
    let mut part_headers = [httparse::EMPTY_HEADER; 32];
    let (head_len, content_id) = match httparse::parse_headers(part, &mut part_headers) {
        Ok(httparse::Status::Complete((len, hs))) => {
            let id = hs
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("Content-ID"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(|v| {
                    v.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string()
                });
            (len, id)
        }
        _ => return Err((None, "Batch part headers do not parse.".into())),
    };
    let inner = &part[head_len..];
    parse_request(inner, outer_auth)
        .map(|r| (content_id.clone(), r))
        .map_err(|e| (content_id, e))
}

/// Parses `METHOD /path [HTTP/1.1]`, headers and body. Google's own batch examples omit the
/// HTTP version, so the request line is read by hand and only the headers by `httparse`.
fn parse_request(inner: &[u8], outer_auth: Option<HeaderValue>) -> Result<Request<Body>, String> {
    let line_end = find(inner, b"\n").unwrap_or(inner.len());
    let line = std::str::from_utf8(&inner[..line_end])
        .map_err(|_| "Batch part request line is not UTF-8.".to_string())?;
    let mut words = line.split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err("Batch part is not an HTTP request.".into());
    };
    let rest = inner.get(line_end + 1..).unwrap_or(&[]);
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    let mut body: &[u8] = &[];
    if !rest.is_empty() && !rest.iter().all(u8::is_ascii_whitespace) {
        let mut padded;
        let mut slice = rest;
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let n = match httparse::parse_headers(slice, &mut hs) {
            Ok(httparse::Status::Complete((n, _))) => n,
            Ok(httparse::Status::Partial) => {
                padded = rest.to_vec();
                padded.extend_from_slice(b"\r\n\r\n");
                slice = &padded;
                hs = [httparse::EMPTY_HEADER; 64];
                match httparse::parse_headers(slice, &mut hs) {
                    Ok(httparse::Status::Complete((n, _))) => n.min(rest.len()),
                    _ => return Err("Batch part request headers do not parse.".into()),
                }
            }
            Err(e) => return Err(format!("Batch part request headers do not parse: {e}")),
        };
        for h in hs.iter().take_while(|h| !h.name.is_empty()) {
            headers.push((h.name.to_string(), h.value.to_vec()));
        }
        body = &rest[n.min(rest.len())..];
    }
    let declared = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(n) = declared {
        body = &body[..n.min(body.len())];
    }
    build(method, target, &headers, body, outer_auth)
}

fn build(
    method: &str,
    target: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    outer_auth: Option<HeaderValue>,
) -> Result<Request<Body>, String> {
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("Batch part method {method:?} is invalid."))?;
    // Path only; tolerate an absolute URL by dropping scheme and host.
    let path = match target.find("://") {
        Some(i) => {
            let rest = &target[i + 3..];
            rest.find('/').map(|j| &rest[j..]).unwrap_or("/")
        }
        None => target,
    };
    if !path.starts_with("/gmail/v1/") {
        return Err(format!(
            "Batch part path {path:?} is not a Gmail API v1 path (/gmail/v1/...)."
        ));
    }
    let mut builder = Request::builder().method(method).uri(path);
    let mut has_auth = false;
    for (k, v) in headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(v),
        ) else {
            continue;
        };
        if name == header::CONTENT_LENGTH {
            continue;
        }
        if name == header::AUTHORIZATION {
            has_auth = true;
        }
        builder = builder.header(name, value);
    }
    if !has_auth && let Some(a) = outer_auth {
        builder = builder.header(header::AUTHORIZATION, a);
    }
    builder
        .body(Body::from(body.to_vec()))
        .map_err(|e| format!("Batch part request is invalid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_and_parts() {
        assert_eq!(
            boundary_of("multipart/mixed; boundary=\"b1\"").as_deref(),
            Some("b1")
        );
        assert_eq!(boundary_of("application/json"), None);
        let body = b"--b1\r\nContent-Type: application/http\r\nContent-ID: <item1>\r\n\r\nGET /gmail/v1/users/me/messages/1\r\n\r\n--b1\r\nContent-Type: application/http\r\n\r\nPOST /gmail/v1/users/me/messages/2/modify\r\nContent-Type: application/json\r\n\r\n{\"addLabelIds\":[\"SPAM\"]}\r\n--b1--\r\n";
        let parts = split_parts(body, "b1");
        assert_eq!(parts.len(), 2);
        let (id, req) = parse_part(parts[0], None).expect("part 1");
        assert_eq!(id.as_deref(), Some("item1"));
        assert_eq!(req.uri().path(), "/gmail/v1/users/me/messages/1");
        let (id, req) =
            parse_part(parts[1], Some(HeaderValue::from_static("Bearer x"))).expect("part 2");
        assert_eq!(id, None);
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer x");
    }
}
