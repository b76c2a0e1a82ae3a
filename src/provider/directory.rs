//! What both providers' directory code shares: following a listing page by page, and telling a
//! domain's retract status from one read as one of its mailboxes. How each provider names its
//! pages (`@odata.nextLink` or `nextPageToken`) and finds its domains and the mailbox to read
//! as stays in its own `directory` / `client` module.

use super::DomainRetract;
use super::errors::{Failure, Operation, classify, error_code_message};
use super::http::SubRequest;
use super::scheduler::{Backend, call};
use serde_json::Value;
use std::future::Future;

/// Every item of a paged listing: `fetch` reads the page at a path (the first is `first`),
/// `items` names the page's array of items, and `next` the path of the page after it (`None`:
/// that page was the last). The first failed page fails the whole listing.
pub(crate) async fn all_pages<F, Fut>(
    first: String,
    items: &str,
    mut fetch: F,
    next: impl Fn(&Value) -> Option<String>,
) -> Result<Vec<Value>, Failure>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Value, Failure>>,
{
    let mut out = Vec::new();
    let mut path = Some(first);
    while let Some(p) = path.take() {
        let page = fetch(p).await?;
        if let Some(v) = page[items].as_array() {
            out.extend(v.iter().cloned());
        }
        path = next(&page);
    }
    Ok(out)
}

/// Whether mail of a domain can be retracted, for the doctor's domain table: not in the tenant;
/// unknown when there is nobody to read as (`nobody` says so); else what one read as one of its
/// mailboxes answers (`probe`: the request and the permission a refusal means is missing).
pub(crate) async fn domain_retract<B: Backend>(
    backend: &B,
    in_tenant: bool,
    probe: Option<(SubRequest, String)>,
    nobody: &str,
) -> DomainRetract {
    if !in_tenant {
        return DomainRetract::NotInTenant;
    }
    let Some((probe, permission)) = probe else {
        return DomainRetract::Unknown {
            detail: nobody.into(),
        };
    };
    match call(backend, probe).await {
        Ok(r) if r.ok() => DomainRetract::Granted,
        Ok(r) if matches!(r.status, 401 | 403) => {
            let (code, message) = error_code_message(&r.body);
            DomainRetract::Missing {
                permission,
                detail: format!("HTTP {} {code}: {message}", r.status),
            }
        }
        Ok(r) => DomainRetract::Unknown {
            detail: classify(r.status, &r.body, Operation::Read).to_string(),
        },
        Err(f) => DomainRetract::Unknown {
            detail: f.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Three pages served from a table by path; `missing` names a page that fails.
    async fn listed(missing: Option<&str>) -> Result<Vec<Value>, Failure> {
        let pages = [
            ("/p1", json!({ "value": [1, 2], "next": "/p2" })),
            ("/p2", json!({ "next": "/p3" })),
            ("/p3", json!({ "value": [3] })),
        ];
        let mut asked = Vec::new();
        let got = all_pages(
            "/p1".to_string(),
            "value",
            |p: String| {
                asked.push(p.clone());
                let page = pages
                    .iter()
                    .find(|(path, _)| *path == p && Some(*path) != missing)
                    .map(|(_, page)| page.clone());
                async move { page.ok_or_else(|| super::super::errors::internal(&p)) }
            },
            |page| page["next"].as_str().map(str::to_string),
        )
        .await;
        assert_eq!(asked.first().map(String::as_str), Some("/p1"));
        got
    }

    #[tokio::test]
    async fn every_page_is_followed_and_a_failed_page_fails_the_listing() {
        let all = listed(None).await.expect("listed");
        assert_eq!(all, vec![json!(1), json!(2), json!(3)]);
        let failed = listed(Some("/p2")).await.expect_err("page 2 failed");
        assert!(failed.message.contains("/p2"), "{failed}");
    }
}
