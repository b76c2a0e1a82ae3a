//! The HTTP layer shared by both providers: one reqwest client per tenant (rustls, HTTP/2 where
//! offered, gzip), provider sub-requests and responses, `Retry-After` and backoff.
//!
//! Nothing here logs a header or a body: URLs and statuses only (tokens travel in headers and
//! form bodies, which never reach a log line).

use super::ProviderError;
use super::errors::{Failure, TransportCause, no_answer, parse_retry_after};
use crate::config::HttpConfig;
use rand::Rng;
use reqwest::Method;
use std::time::Duration;

/// One provider call, relative to the API root (Graph: `/users/…` without `/v1.0`; Gmail:
/// `/gmail/v1/users/…`), so it can be sent alone or inside a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SubRequest {
    pub method: Method,
    pub path: String,
    pub body: Option<serde_json::Value>,
    /// The mailbox the call touches (per-mailbox concurrency, Gmail quota and `sub`).
    pub mailbox: String,
    /// Gmail quota units the call costs (0 for Graph).
    pub units: u32,
    /// Whether the call changes a copy (its outcome must be verified after a 5xx / drop).
    pub mutating: bool,
}

impl SubRequest {
    pub fn get(path: impl Into<String>, mailbox: &str, units: u32) -> SubRequest {
        SubRequest {
            method: Method::GET,
            path: path.into(),
            body: None,
            mailbox: mailbox.to_string(),
            units,
            mutating: false,
        }
    }

    pub fn mutate(
        method: Method,
        path: impl Into<String>,
        body: Option<serde_json::Value>,
        mailbox: &str,
        units: u32,
    ) -> SubRequest {
        SubRequest {
            method,
            path: path.into(),
            body,
            mailbox: mailbox.to_string(),
            units,
            mutating: true,
        }
    }
}

/// The answer to one sub-request.
#[derive(Debug, Clone, PartialEq)]
pub struct SubResponse {
    pub status: u16,
    pub retry_after: Option<f64>,
    pub body: serde_json::Value,
}

impl SubResponse {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A raw response.
pub struct RawResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes_like::Bytes,
}

/// Re-export so callers need not depend on `bytes` directly.
pub mod bytes_like {
    pub type Bytes = Vec<u8>;
}

impl RawResponse {
    pub fn retry_after(&self) -> Option<f64> {
        self.headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
    }

    pub fn json(&self) -> serde_json::Value {
        if self.body.is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&self.body).into_owned())
        })
    }

    pub fn into_sub(self) -> SubResponse {
        SubResponse {
            status: self.status,
            retry_after: self.retry_after(),
            body: self.json(),
        }
    }
}

/// The reqwest client of one tenant.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    /// The client with the `[http]` timeouts: `connect_timeout` bounds the TCP and TLS
    /// connect, `read_timeout` each wait for the answer (headers, then every body read), so a
    /// large body that keeps arriving is never cut off while a silent provider is.
    pub fn new(timeouts: &HttpConfig) -> Result<Http, ProviderError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("clawback/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeouts.connect_timeout())
            .read_timeout(timeouts.read_timeout())
            .pool_max_idle_per_host(512)
            .build()
            .map_err(|e| ProviderError::Http(e.to_string()))?;
        Ok(Http { client })
    }

    /// Sends one request. `Err` only when no complete response arrived (connection refused or
    /// dropped, timeout): for a mutation the outcome is then unknown.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<RawResponse, Failure> {
        tracing::debug!(%method, url, "provider request");
        let mut req = self.client.request(method.clone(), url);
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.map_err(|e| {
            tracing::debug!(%method, url, error = %without_url(&e), "provider request failed");
            no_answer_from(&e, url)
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| {
            tracing::debug!(%method, url, error = %without_url(&e), "response body failed");
            no_answer_from(&e, url)
        })?;
        tracing::debug!(%method, url, status, "provider response");
        Ok(RawResponse {
            status,
            headers,
            // Taken over without a copy where reqwest's buffer allows it.
            body: body.into(),
        })
    }

    /// Sends a JSON sub-request to `base` + its path.
    pub async fn send_sub(
        &self,
        base: &str,
        req: &SubRequest,
        bearer: &str,
    ) -> Result<SubResponse, Failure> {
        let url = format!("{}{}", base.trim_end_matches('/'), req.path);
        let body = req
            .body
            .as_ref()
            .map(|b| serde_json::to_vec(b).unwrap_or_default());
        let ct = body.as_ref().map(|_| "application/json");
        Ok(self
            .send(req.method.clone(), &url, Some(bearer), ct, body)
            .await?
            .into_sub())
    }

    /// POSTs an `application/x-www-form-urlencoded` form (token endpoints).
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<RawResponse, Failure> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish()
            .into_bytes();
        self.send(
            Method::POST,
            url,
            None,
            Some("application/x-www-form-urlencoded"),
            Some(body),
        )
        .await
    }
}

/// A reqwest error's text without the URL (which is logged separately and may be long): the
/// cause, then its sources.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = cause_of(e).words().to_string();
    for inner in sources(e) {
        s.push_str(": ");
        s.push_str(&inner.to_string());
    }
    s
}

/// The error's sources, outermost first.
fn sources(e: &reqwest::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(e), |inner| inner.source())
}

/// Why a request got no answer, from reqwest's error and its sources (hyper-util names a DNS
/// failure "dns error"; rustls' errors come wrapped in an `io::Error`).
pub(crate) fn cause_of(e: &reqwest::Error) -> TransportCause {
    let io_kind = sources(e)
        .find_map(|inner| inner.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    let text = sources(e)
        .map(|inner| inner.to_string().to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(": ");
    if e.is_timeout() {
        return if e.is_connect() {
            TransportCause::ConnectTimeout
        } else {
            TransportCause::ReadTimeout
        };
    }
    if e.is_connect() {
        if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
            return TransportCause::ConnectionRefused;
        }
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return TransportCause::Dns;
        }
        if ["certificate", "tls", "handshake", "alert"]
            .iter()
            .any(|w| text.contains(w))
        {
            return TransportCause::Tls;
        }
        return TransportCause::Other;
    }
    if e.is_body()
        || e.is_decode()
        || matches!(
            io_kind,
            Some(
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        )
        || text.contains("connection closed")
        || text.contains("incomplete")
    {
        return TransportCause::Dropped;
    }
    TransportCause::Other
}

/// `host:port` of a URL (no scheme, path, query or credentials), or `"the endpoint"`.
pub fn endpoint_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => "the endpoint".into(),
        },
        Err(_) => "the endpoint".into(),
    }
}

/// The failure for a request to `url` that got no (complete) answer: its cause's code, and a
/// message naming the cause and `host:port`.
fn no_answer_from(e: &reqwest::Error, url: &str) -> Failure {
    let cause = cause_of(e);
    // The innermost source says most (`Connection refused (os error 111)`, the certificate
    // problem); it never holds the URL or a header.
    let detail = match cause {
        TransportCause::ConnectionRefused | TransportCause::ReadTimeout => String::new(),
        _ => sources(e).last().map(|s| s.to_string()).unwrap_or_default(),
    };
    no_answer(cause, &endpoint_of(url), &detail)
}

/// Exponential backoff with full jitter: attempt 1 → up to 0.2 s, doubling, capped at 20 s.
pub fn backoff(attempt: u32) -> Duration {
    let cap = 0.2 * 2f64.powi(attempt.saturating_sub(1).min(10) as i32);
    let cap = cap.min(20.0);
    let secs = rand::thread_rng().gen_range(cap / 2.0..=cap);
    Duration::from_secs_f64(secs)
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved characters kept).
pub fn enc(value: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(value, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..50 {
            let d1 = backoff(1).as_secs_f64();
            assert!((0.1..=0.2).contains(&d1), "{d1}");
            let d20 = backoff(20).as_secs_f64();
            assert!((10.0..=20.0).contains(&d20), "{d20}");
        }
    }

    #[test]
    fn endpoints_name_host_and_port_only() {
        assert_eq!(
            endpoint_of("http://127.0.0.1:4000/v1.0/users?$filter=x"),
            "127.0.0.1:4000"
        );
        assert_eq!(
            endpoint_of("https://user:pw@graph.microsoft.com/v1.0"),
            "graph.microsoft.com:443"
        );
        assert_eq!(endpoint_of("not a url"), "the endpoint");
    }

    /// A port nothing listens on: bound, then released.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        drop(l);
        port
    }

    #[tokio::test]
    async fn a_refused_connection_is_classified_and_names_the_endpoint() {
        let http = Http::new(&HttpConfig::default()).expect("client");
        let port = closed_port();
        let url = format!("http://127.0.0.1:{port}/v1.0/users");
        let f = http
            .send(Method::GET, &url, Some("secret-token"), None, None)
            .await
            .err()
            .expect("refused");
        assert_eq!(f.code, "connection_refused", "{f}");
        assert_eq!(f.message, format!("connection refused: 127.0.0.1:{port}"));
        assert!(f.is_unreachable());
        assert!(!f.to_string().contains("secret-token") && !f.to_string().contains("/v1.0"));
    }

    #[tokio::test]
    async fn a_silent_server_is_a_read_timeout_not_a_hang() {
        // Accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let http = Http::new(&HttpConfig {
            connect_timeout_secs: 1.0,
            read_timeout_secs: 0.3,
        })
        .expect("client");
        let url = format!("http://127.0.0.1:{port}/token");
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            http.send(Method::GET, &url, None, None, None),
        )
        .await
        .expect("the read timeout ends the wait");
        let f = sent.err().expect("timed out");
        server.abort();
        assert_eq!(f.code, "read_timeout", "{f}");
        assert_eq!(
            f.message,
            format!("no answer within the read timeout: 127.0.0.1:{port}")
        );
    }

    #[test]
    fn encodes_message_ids_for_queries() {
        assert_eq!(enc("<a+b@c.d>"), "%3Ca%2Bb%40c.d%3E");
        assert_eq!(enc("'x'"), "%27x%27");
    }
}
