//! Error responses shaped as the real services send them (PROVIDER-APIS.md A.7, B.5, A.9).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A Graph (OData) error: `{"error":{"code","message","innerError":{date,request-id,client-request-id}}}`.
pub fn graph(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": request_id,
                "client-request-id": request_id,
            }
        }
    });
    (status, axum::Json(body)).into_response()
}

/// A Graph 429 with `Retry-After` (seconds; may be fractional).
pub fn graph_throttled(code: &str, message: &str, retry_after_secs: f64) -> Response {
    let mut r = graph(StatusCode::TOO_MANY_REQUESTS, code, message);
    set_retry_after(&mut r, retry_after_secs);
    r
}

/// A Google API error: `{"error":{"code","message","errors":[{domain,reason,message}],"status"}}`.
pub fn google(status: StatusCode, reason: &str, domain: &str, message: &str) -> Response {
    let canonical = match status.as_u16() {
        400 if reason == "failedPrecondition" => "FAILED_PRECONDITION",
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        503 => "UNAVAILABLE",
        _ => "UNKNOWN",
    };
    let mut error = json!({
        "code": status.as_u16(),
        "message": message,
        "errors": [{ "message": message, "domain": domain, "reason": reason }],
        "status": canonical,
    });
    if status == StatusCode::UNAUTHORIZED
        && let Some(first) = error["errors"].get_mut(0)
    {
        first["location"] = json!("Authorization");
        first["locationType"] = json!("header");
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

/// A Google rate-limit error with an optional `Retry-After`.
pub fn google_throttled(
    status: StatusCode,
    reason: &str,
    message: &str,
    retry_after_secs: Option<f64>,
) -> Response {
    let mut r = google(status, reason, "usageLimits", message);
    if let Some(s) = retry_after_secs {
        set_retry_after(&mut r, s);
    }
    r
}

/// An OAuth 2.0 token-endpoint error (Microsoft style carries AADSTS codes).
pub fn oauth(status: StatusCode, error: &str, description: &str, aadsts: Option<u32>) -> Response {
    let mut body = json!({ "error": error, "error_description": description });
    if let Some(code) = aadsts {
        body["error_description"] = json!(format!("AADSTS{code}: {description}"));
        body["error_codes"] = json!([code]);
        body["timestamp"] = json!(chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string());
        body["trace_id"] = json!(uuid::Uuid::new_v4().to_string());
        body["correlation_id"] = json!(uuid::Uuid::new_v4().to_string());
    }
    (status, axum::Json(body)).into_response()
}

/// Sets `Retry-After`, keeping fractions (Graph documents values like `2.128`).
pub fn set_retry_after(response: &mut Response, secs: f64) {
    let text = if secs.fract() == 0.0 {
        format!("{}", secs as u64)
    } else {
        format!("{secs:.3}")
    };
    if let Ok(v) = HeaderValue::from_str(&text) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
}
