//! The HTTP layer shared by both providers: one reqwest client per tenant (rustls, HTTP/2 where
//! offered, gzip), provider sub-requests and responses, `Retry-After` and backoff.
//!
//! Nothing here logs a header or a body: URLs and statuses only (tokens travel in headers and
//! form bodies, which never reach a log line).

use super::ProviderError;
use super::errors::{Failure, parse_retry_after, transport};
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
    pub fn new() -> Result<Http, ProviderError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("clawback/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
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
            transport(&without_url(&e))
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| {
            tracing::debug!(%method, url, error = %without_url(&e), "response body failed");
            transport(&without_url(&e))
        })?;
        tracing::debug!(%method, url, status, "provider response");
        Ok(RawResponse {
            status,
            headers,
            body: body.to_vec(),
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

/// A reqwest error's text without the URL (which is logged separately and may be long).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.without_url_ref();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        if self.is_timeout() {
            "timed out".into()
        } else if self.is_connect() {
            "cannot connect".into()
        } else if self.is_body() || self.is_decode() {
            "connection dropped while reading the response".into()
        } else if self.is_request() {
            "request failed".into()
        } else {
            "transport error".into()
        }
    }
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
    fn encodes_message_ids_for_queries() {
        assert_eq!(enc("<a+b@c.d>"), "%3Ca%2Bb%40c.d%3E");
        assert_eq!(enc("'x'"), "%27x%27");
    }
}
