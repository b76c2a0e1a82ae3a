//! `POST /v1.0/$batch` (PROVIDER-APIS.md A.5): up to 20 sub-requests, each dispatched through
//! the same Graph router with the outer `Authorization`, at most four at a time; `dependsOn`
//! orders them and a failed dependency gives 424. Responses come back in a seeded order that is
//! not the request order, each with its own status, headers (incl. `Retry-After` and
//! `Preference-Applied`) and body. Each step carries its own headers (`Prefer` included); only
//! the outer `Authorization` is shared.

use super::{authenticate, bad_request, graph_routes, ok_json, unmatched_segment};
use crate::lab::SharedLab;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use futures_util::StreamExt;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

/// Most sub-requests one batch may carry.
pub const MAX_BATCH: usize = 20;
/// Sub-requests of one batch served at the same time.
pub const BATCH_CONCURRENCY: usize = 4;
/// Largest sub-response body read back.
const MAX_SUB_BODY: usize = 64 * 1024 * 1024;

/// Bytes a relative batch URL may hold raw but an HTTP request target may not.
const URL_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^');

struct SubRequest {
    id: String,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
    depends_on: Vec<usize>,
}

fn malformed(why: &str) -> Response {
    bad_request(&format!("Invalid batch payload format: {why}"))
}

fn parse(body: &[u8]) -> Result<Vec<SubRequest>, Response> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(&format!("Unable to deserialize content: {e}")))?;
    let list = doc
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("a 'requests' array is required"))?;
    if list.is_empty() {
        return Err(malformed("the 'requests' array is empty"));
    }
    if list.len() > MAX_BATCH {
        return Err(malformed(&format!(
            "{} requests; a batch may hold at most {MAX_BATCH}",
            list.len()
        )));
    }
    let mut out: Vec<SubRequest> = Vec::with_capacity(list.len());
    let mut raw_deps: Vec<Vec<String>> = Vec::new();
    for (n, item) in list.iter().enumerate() {
        let field = |name: &str| {
            item.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| malformed(&format!("request #{n}: '{name}' is required (a string)")))
        };
        let id = field("id")?.to_string();
        if out.iter().any(|r| r.id.eq_ignore_ascii_case(&id)) {
            return Err(malformed(&format!("duplicate request id '{id}'")));
        }
        let method = Method::from_bytes(field("method")?.to_ascii_uppercase().as_bytes())
            .map_err(|_| malformed(&format!("request '{id}': bad method")))?;
        let url = field("url")?.to_string();
        let headers: Vec<(String, String)> = match item.get("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect(),
            Some(_) => {
                return Err(malformed(&format!(
                    "request '{id}': 'headers' must be an object"
                )));
            }
        };
        let body = item.get("body").filter(|b| !b.is_null()).cloned();
        if body.is_some()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            return Err(malformed(&format!(
                "request '{id}': a body requires headers with Content-Type"
            )));
        }
        let deps = match item.get("dependsOn") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|d| d.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| malformed(&format!("request '{id}': dependsOn must list ids")))?,
            Some(_) => {
                return Err(malformed(&format!(
                    "request '{id}': dependsOn must be an array"
                )));
            }
        };
        raw_deps.push(deps);
        out.push(SubRequest {
            id,
            method,
            url,
            headers,
            body,
            depends_on: Vec::new(),
        });
    }
    for (i, deps) in raw_deps.into_iter().enumerate() {
        for d in deps {
            let target = out
                .iter()
                .position(|r| r.id.eq_ignore_ascii_case(&d))
                .filter(|t| *t != i)
                .ok_or_else(|| {
                    malformed(&format!(
                        "request '{}': dependsOn names unknown id '{d}'",
                        out[i].id
                    ))
                })?;
            out[i].depends_on.push(target);
        }
    }
    // Refuse cycles: every request must become runnable.
    let mut done = vec![false; out.len()];
    loop {
        let ready: Vec<usize> = (0..out.len())
            .filter(|i| !done[*i] && out[*i].depends_on.iter().all(|d| done[*d]))
            .collect();
        if ready.is_empty() {
            break;
        }
        for i in ready {
            done[i] = true;
        }
    }
    if done.iter().any(|d| !d) {
        return Err(malformed("dependsOn forms a cycle"));
    }
    Ok(out)
}

/// `POST /v1.0/$batch`
pub async fn batch(State(lab): State<SharedLab>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authenticate(&lab, &headers) {
        return r;
    }
    let requests = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    // Building the route table is costly; build it once per process and only bind the state.
    static ROUTES: std::sync::OnceLock<axum::Router<SharedLab>> = std::sync::OnceLock::new();
    let router = ROUTES
        .get_or_init(graph_routes)
        .clone()
        .with_state(lab.clone());
    let auth = headers.get(header::AUTHORIZATION).cloned();
    let mut results: Vec<Option<(u16, Value)>> = vec![None; requests.len()];
    loop {
        let ready: Vec<usize> = (0..requests.len())
            .filter(|i| {
                results[*i].is_none()
                    && requests[*i]
                        .depends_on
                        .iter()
                        .all(|d| results[*d].is_some())
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        let mut runnable = Vec::new();
        for i in ready {
            let failed = requests[i]
                .depends_on
                .iter()
                .any(|d| results[*d].as_ref().is_some_and(|(s, _)| *s >= 400));
            if failed {
                results[i] = Some((424, failed_dependency(&requests[i].id)));
            } else {
                runnable.push(i);
            }
        }
        let outcomes: Vec<(usize, u16, Value)> = futures_util::stream::iter(runnable)
            .map(|i| {
                let router = router.clone();
                let auth = auth.clone();
                let r = &requests[i];
                async move {
                    let (status, item) = dispatch(router, auth, r).await;
                    (i, status, item)
                }
            })
            .buffer_unordered(BATCH_CONCURRENCY)
            .collect()
            .await;
        for (i, status, item) in outcomes {
            results[i] = Some((status, item));
        }
    }
    let mut items: Vec<Option<Value>> = results
        .into_iter()
        .flatten()
        .map(|(_, v)| Some(v))
        .collect();
    // The seeded order is drawn over positions (the same permutation as over the items, which
    // are all distinct by their ids), not by shuffling and comparing clones of every response.
    let mut order: Vec<usize> = (0..items.len()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(lab.options.seed ^ items.len() as u64);
    order.shuffle(&mut rng);
    if order.len() > 1 && order.iter().enumerate().all(|(i, j)| i == *j) {
        order.rotate_left(1);
    }
    let items: Vec<Value> = order.into_iter().filter_map(|i| items[i].take()).collect();
    ok_json(StatusCode::OK, json!({ "responses": items }))
}

fn failed_dependency(id: &str) -> Value {
    json!({
        "id": id,
        "status": 424,
        "headers": { "Content-Type": "application/json" },
        "body": { "error": { "code": "FailedDependency", "message": "The request was not executed because a request it depends on failed." } },
    })
}

fn sub_error(id: &str, status: u16, code: &str, message: &str) -> (u16, Value) {
    (
        status,
        json!({
            "id": id,
            "status": status,
            "headers": { "Content-Type": "application/json" },
            "body": { "error": { "code": code, "message": message } },
        }),
    )
}

/// Runs one sub-request through the Graph router.
async fn dispatch(router: axum::Router, auth: Option<HeaderValue>, r: &SubRequest) -> (u16, Value) {
    let url = r.url.trim();
    // Step urls are relative (`/users/…`); Graph finds no resource for an absolute one, and
    // says so about its first segment (`https:`).
    if url.contains("://") {
        let segment = unmatched_segment(&format!("/{url}"));
        return sub_error(
            &r.id,
            400,
            "BadRequest",
            &format!("Resource not found for the segment '{segment}'."),
        );
    }
    let path = url;
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    if path.eq_ignore_ascii_case("/$batch") || path.to_ascii_lowercase().starts_with("/$batch?") {
        return sub_error(
            &r.id,
            400,
            "BadRequest",
            "A batch cannot contain another batch.",
        );
    }
    // Batch URLs are written unencoded (`?$filter=mail eq 'x'`, as in Graph's own examples).
    let path = percent_encoding::utf8_percent_encode(&path, URL_UNSAFE).to_string();
    let mut builder = Request::builder().method(r.method.clone()).uri(&path);
    for (k, v) in &r.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            builder = builder.header(name, value);
        }
    }
    if let Some(a) = auth {
        builder = builder.header(header::AUTHORIZATION, a);
    }
    let body = match &r.body {
        Some(Value::String(s)) => {
            // Binary bodies travel base64-encoded; JSON bodies as objects.
            match base64::engine::general_purpose::STANDARD.decode(s) {
                Ok(bytes) => Body::from(bytes),
                Err(_) => Body::from(s.clone()),
            }
        }
        Some(v) => Body::from(serde_json::to_vec(v).unwrap_or_default()),
        None => Body::empty(),
    };
    let request = match builder.body(body) {
        Ok(req) => req,
        Err(e) => {
            return sub_error(
                &r.id,
                400,
                "BadRequest",
                &format!("Invalid request URL or headers: {e}"),
            );
        }
    };
    let response = match router.oneshot(request).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_SUB_BODY)
        .await
        .unwrap_or_default();
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        if let Ok(v) = value.to_str() {
            headers.insert(canonical_header(name.as_str()), json!(v));
        }
    }
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let mut item = json!({ "id": r.id, "status": status, "headers": headers });
    if !bytes.is_empty() {
        item["body"] = if is_json {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
        } else {
            json!(base64::engine::general_purpose::STANDARD.encode(&bytes))
        };
    }
    (status, item)
}

/// `retry-after` → `Retry-After` (Graph shows header names capitalised in batch items).
fn canonical_header(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}
