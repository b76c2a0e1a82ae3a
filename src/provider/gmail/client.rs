//! Gmail transport: the multipart batch (one request as itself, up to 25 as one batch) with
//! one token per impersonated user, and Directory / Reports API calls as the admin.

use super::{GmailClient, next_page};
use crate::model::FailureReason;
use crate::provider::auth::GMAIL_SCOPE;
use crate::provider::directory::all_pages;
use crate::provider::errors::{Failure, Operation, classify};
use crate::provider::graph::token_answer;
use crate::provider::http::{SubRequest, SubResponse};
use crate::provider::multipart;
use reqwest::Method;
use serde_json::Value;

impl GmailClient {
    /// Directory call impersonating the admin.
    /// A Directory API GET as the admin: at most
    /// [`DIRECTORY_IN_FLIGHT`](super::DIRECTORY_IN_FLIGHT) at once, retried on throttling
    /// (honouring `Retry-After`) and 5xx, like every other read.
    pub(super) async fn directory_get(&self, path: &str) -> Result<SubResponse, Failure> {
        self.admin_get(path, &self.directory_scopes).await
    }

    /// [`GmailClient::directory_get`] with a token for `scopes` (the Reports API's own scope).
    pub(super) async fn admin_get(&self, path: &str, scopes: &str) -> Result<SubResponse, Failure> {
        let max_attempts = self.tenant.limits.max_attempts.max(1);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let answer = {
                let _slot = self.directory_gate.acquire().await;
                self.admin_get_once(path, scopes).await
            };
            let wait = match &answer {
                Ok(r)
                    if super::errors::is_rate_limited(
                        r.status,
                        &super::errors::error_code_message(&r.body).0,
                    ) =>
                {
                    r.retry_after
                        .unwrap_or_else(|| super::http::backoff(attempt).as_secs_f64())
                }
                Ok(r) if r.status >= 500 => super::http::backoff(attempt).as_secs_f64(),
                // A refused token (a scope not delegated) is an answer, not a hiccup.
                Err(f) if f.is_unreachable() || f.reason == FailureReason::NotAuthorized => {
                    return answer;
                }
                Err(_) => super::http::backoff(attempt).as_secs_f64(),
                Ok(_) => return answer,
            };
            if attempt >= max_attempts {
                return answer;
            }
            tokio::time::sleep(std::time::Duration::from_secs_f64(wait)).await;
        }
    }

    async fn admin_get_once(&self, path: &str, scopes: &str) -> Result<SubResponse, Failure> {
        let token = self.auth.token(&self.admin, scopes).await?;
        let mut r = self
            .http
            .send_sub(
                &self.directory,
                &SubRequest::get(path, &self.admin, 0),
                token.expose(),
            )
            .await?;
        if r.status == 401 {
            self.auth.invalidate(&self.admin, scopes, &token).await;
            let token = self.auth.token(&self.admin, scopes).await?;
            r = self
                .http
                .send_sub(
                    &self.directory,
                    &SubRequest::get(path, &self.admin, 0),
                    token.expose(),
                )
                .await?;
        }
        Ok(r)
    }

    /// Every item under `items` of a Directory or Reports API listing (as the admin, with a
    /// token for `scopes`), page by page; a page that is not a listing fails it whole.
    pub(super) async fn admin_list(
        &self,
        path: String,
        scopes: &str,
        items: &str,
    ) -> Result<Vec<Value>, Failure> {
        all_pages(
            path.clone(),
            items,
            |p| async move {
                let r = self.admin_get(&p, scopes).await?;
                if !r.ok() {
                    return Err(classify(r.status, &r.body, Operation::Directory));
                }
                Ok(r.body)
            },
            |page| next_page(&path, page),
        )
        .await
    }

    pub(super) async fn send_batch(
        &self,
        requests: &[SubRequest],
    ) -> Vec<Result<SubResponse, Failure>> {
        // One token per impersonated user: fetch them concurrently (the cache locks per user, so
        // a user's token is fetched once even when many parts name that user).
        let tokens: Vec<Result<_, Failure>> = futures_util::future::join_all(
            requests
                .iter()
                .map(|r| async { self.auth.token(&r.mailbox, GMAIL_SCOPE).await }),
        )
        .await;
        if requests.len() == 1 {
            return vec![match &tokens[0] {
                Ok(t) => {
                    self.http
                        .send_sub(&self.gmail, &requests[0], t.expose())
                        .await
                }
                Err(f) => token_answer(f),
            }];
        }
        // Only parts with a token go into the batch.
        let mut out: Vec<Option<Result<SubResponse, Failure>>> = vec![None; requests.len()];
        let mut index = Vec::new();
        let mut parts = Vec::new();
        for (i, (r, t)) in requests.iter().zip(&tokens).enumerate() {
            match t {
                Ok(t) => {
                    index.push(i);
                    parts.push(multipart::Part {
                        request: r,
                        bearer: t.expose(),
                    });
                }
                Err(f) => out[i] = Some(token_answer(f)),
            }
        }
        if !parts.is_empty() {
            let boundary = format!("batch_{}", uuid::Uuid::new_v4().simple());
            let (ct, body) = multipart::build(&parts, &boundary);
            let url = format!("{}/batch/gmail/v1", self.gmail);
            match self
                .http
                .send(Method::POST, &url, None, Some(&ct), Some(body))
                .await
            {
                Err(f) => {
                    for &i in &index {
                        out[i] = Some(Err(f.clone()));
                    }
                }
                Ok(resp) if resp.status != 200 => {
                    let sub = resp.into_sub();
                    for &i in &index {
                        out[i] = Some(Ok(sub.clone()));
                    }
                }
                Ok(resp) => {
                    let ct = resp
                        .headers
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    match multipart::parse(&ct, &resp.body, parts.len()) {
                        Ok(answers) => {
                            for (k, a) in answers.into_iter().enumerate() {
                                out[index[k]] = Some(a.ok_or_else(|| {
                                    super::errors::transport("part missing from batch response")
                                }));
                            }
                        }
                        Err(e) => {
                            for &i in &index {
                                out[i] = Some(Err(super::errors::transport(&e.to_string())));
                            }
                        }
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err(super::errors::transport("no response"))))
            .collect()
    }
}
