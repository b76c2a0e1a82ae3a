//! Graph transport: the `$batch` call (one request as itself, up to 20 as one batch), the
//! token it carries, and paging through `@odata.nextLink`.

use super::GraphClient;
use crate::provider::directory::all_pages;
use crate::provider::errors::{Failure, Operation};
use crate::provider::http::{SubRequest, SubResponse};
use crate::provider::scheduler::call_ok_within;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

impl GraphClient {
    /// GET with paging (`@odata.nextLink` followed verbatim).
    pub(super) async fn get_all(&self, path: &str, mailbox: &str) -> Result<Vec<Value>, Failure> {
        self.get_all_within(path, mailbox, Duration::MAX).await
    }

    /// [`Self::get_all`], giving up as throttled on a `Retry-After` longer than `patience`.
    pub(super) async fn get_all_within(
        &self,
        path: &str,
        mailbox: &str,
        patience: Duration,
    ) -> Result<Vec<Value>, Failure> {
        all_pages(
            path.to_string(),
            "value",
            |p| async move {
                let request = SubRequest::get(p, mailbox, 0);
                let r = call_ok_within(self, request, Operation::Directory, patience).await?;
                Ok(r.body)
            },
            |page| {
                page["@odata.nextLink"]
                    .as_str()
                    .and_then(|link| self.relative_link(link))
            },
        )
        .await
    }

    /// A `@odata.nextLink` / `deltaLink` as a path below our base URL (a link to another host
    /// is followed only as a relative path of ours).
    pub(super) fn relative_link(&self, link: &str) -> Option<String> {
        let rel = link.strip_prefix(&self.base).unwrap_or(link);
        if !rel.starts_with("http") {
            return Some(rel.to_string());
        }
        url::Url::parse(link).ok().and_then(|u| {
            u.path()
                .strip_prefix("/v1.0")
                .map(|p| format!("{p}?{}", u.query().unwrap_or_default()))
        })
    }
    pub(super) async fn send_batch(
        &self,
        requests: &[SubRequest],
    ) -> Vec<Result<SubResponse, Failure>> {
        let token = match self.auth.token("", self.scope()).await {
            Ok(t) => t,
            Err(f) => return vec![token_answer(&f); requests.len()],
        };
        if requests.len() == 1 {
            return vec![
                self.http
                    .send_sub(&self.base, &requests[0], token.expose())
                    .await,
            ];
        }
        let body = json!({
            "requests": requests.iter().enumerate().map(|(i, r)| {
                let mut v = json!({ "id": (i + 1).to_string(), "method": r.method.as_str(), "url": r.path });
                if let Some(b) = &r.body {
                    v["body"] = b.clone();
                    v["headers"] = json!({ "Content-Type": "application/json" });
                }
                v
            }).collect::<Vec<_>>()
        });
        let url = format!("{}/$batch", self.base);
        let resp = match self
            .http
            .send(
                Method::POST,
                &url,
                Some(token.expose()),
                Some("application/json"),
                Some(body.to_string().into_bytes()),
            )
            .await
        {
            Ok(r) => r,
            Err(f) => return vec![Err(f); requests.len()],
        };
        let whole = resp.into_sub();
        if whole.status != 200 {
            return vec![Ok(whole); requests.len()];
        }
        let mut out: Vec<Result<SubResponse, Failure>> =
            vec![Err(super::errors::transport("missing from $batch response")); requests.len()];
        for item in whole.body["responses"].as_array().into_iter().flatten() {
            let id = match &item["id"] {
                Value::String(s) => s.parse::<usize>().ok(),
                Value::Number(n) => n.as_u64().map(|n| n as usize),
                _ => None,
            };
            let Some(i) = id.and_then(|i| i.checked_sub(1)).filter(|i| *i < out.len()) else {
                continue;
            };
            let headers = &item["headers"];
            let retry_after = headers
                .as_object()
                .and_then(|h| {
                    h.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                        .map(|(_, v)| v)
                })
                .and_then(|v| match v {
                    Value::String(s) => super::errors::parse_retry_after(s),
                    Value::Number(n) => n.as_f64(),
                    _ => None,
                });
            out[i] = Ok(SubResponse {
                status: item["status"].as_u64().unwrap_or(0) as u16,
                retry_after,
                body: item["body"].clone(),
            });
        }
        out
    }
}

/// What the scheduler sees for a sub-request whose token could not be had: an unreachable
/// token endpoint as that transport failure (final at once, naming the endpoint; never a
/// permission problem), anything else as [`token_failure`].
pub(crate) fn token_answer(f: &Failure) -> Result<SubResponse, Failure> {
    if f.is_unreachable() {
        Err(f.clone())
    } else {
        Ok(token_failure(f))
    }
}

/// A token failure as a response the scheduler understands (401 → one refresh, then final).
pub(crate) fn token_failure(f: &Failure) -> SubResponse {
    let status = match f.status {
        Some(s) if super::errors::is_server_error(s) || s == 429 => s,
        _ if f.transport_cause().is_some() => 503,
        _ => 401,
    };
    SubResponse {
        status,
        retry_after: None,
        body: json!({ "error": { "code": if f.code.is_empty() { "token" } else { f.code.as_str() }, "message": format!("cannot get an access token: {}", f.message) } }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FailureReason;

    #[test]
    fn token_failures_become_final_or_retryable_responses() {
        let f = Failure::new(
            FailureReason::NotAuthorized,
            Some(400),
            "unauthorized_client",
            "no",
        );
        assert_eq!(token_failure(&f).status, 401);
        let t = super::super::errors::transport("cannot connect");
        assert_eq!(token_failure(&t).status, 503);
    }
}
