//! Failure classification: provider responses → [`FailureReason`], keeping the provider's HTTP
//! status, code and message beside the reason (DESIGN §2 "Failure reasons").

use crate::model::{FailureReason, normalize_message_id};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why one item could not be done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub reason: FailureReason,
    /// The provider's HTTP status, when a response was received.
    pub status: Option<u16>,
    /// The provider's error code (`ErrorItemNotFound`, `insufficientPermissions`, …) or ours.
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(
        reason: FailureReason,
        status: Option<u16>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Failure {
        Failure {
            reason,
            status,
            code: code.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reason)?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {s}")?;
            if !self.code.is_empty() {
                write!(f, " {}", self.code)?;
            }
            f.write_str(")")?;
        } else if !self.code.is_empty() {
            write!(f, " ({})", self.code)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// A failure of our own making (should not happen).
pub fn internal(message: &str) -> Failure {
    Failure::new(FailureReason::ProviderError, None, "internal", message)
}

/// A Message-ID given by a user, normalized, or a one-line error naming it.
pub fn checked_message_id(raw: &str) -> Result<String, Failure> {
    normalize_message_id(raw).ok_or_else(|| {
        Failure::new(
            FailureReason::ProviderError,
            None,
            "invalid_message_id",
            format!("{raw:?} is not a Message-ID (expected <local@domain>)"),
        )
    })
}

/// The code and message of an error body (Graph OData, Google API or OAuth shapes).
pub fn error_code_message(body: &serde_json::Value) -> (String, String) {
    let err = &body["error"];
    if let Some(obj) = err.as_object() {
        // Google: the reason of the first entry in `errors` is the useful code.
        let google_reason = obj
            .get("errors")
            .and_then(|e| e.get(0))
            .and_then(|e| e.get("reason"))
            .and_then(|r| r.as_str());
        let code = google_reason
            .map(str::to_string)
            .or_else(|| obj.get("code").and_then(|c| c.as_str()).map(str::to_string))
            .or_else(|| {
                obj.get("status")
                    .and_then(|c| c.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let message = obj
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_string();
        return (code, message);
    }
    if let Some(code) = err.as_str() {
        // OAuth token endpoint.
        let message = body["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        return (code.to_string(), message);
    }
    (String::new(), String::new())
}

/// Whether a response is a rate limit that will pass (429, Google 403 rate-limit reasons).
pub fn is_rate_limited(status: u16, code: &str) -> bool {
    status == 429
        || (status == 403
            && matches!(
                code,
                "userRateLimitExceeded" | "rateLimitExceeded" | "dailyLimitExceeded"
            ))
}

/// Whether a status is a transient server failure.
pub fn is_server_error(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

/// What the failing request was, where that changes the classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Mutate,
    PermanentDelete,
    Directory,
}

/// Classifies a final (non-retryable, or out of retries) provider error response.
pub fn classify(status: u16, body: &serde_json::Value, op: Operation) -> Failure {
    let (code, message) = error_code_message(body);
    let reason = classify_code(status, &code, op);
    Failure::new(reason, Some(status), code, message)
}

/// The reason for a status + provider code.
pub fn classify_code(status: u16, code: &str, op: Operation) -> FailureReason {
    if is_rate_limited(status, code) {
        return FailureReason::Throttled;
    }
    match (status, code) {
        (_, "ErrorItemNotFound" | "notFound" | "itemNotFound") => FailureReason::AlreadyGone,
        (_, "MailboxNotEnabledForRESTAPI" | "ResourceNotFound" | "ErrorInvalidUser") => {
            FailureReason::NotAMailbox
        }
        (400, "failedPrecondition") => FailureReason::NotAMailbox,
        (
            401 | 403,
            "ErrorAccessDenied"
            | "Authorization_RequestDenied"
            | "insufficientPermissions"
            | "domainPolicy"
            | "forbidden"
            | "accessDenied"
            | "unauthorized_client"
            | "authError"
            | "InvalidAuthenticationToken"
            | "PERMISSION_DENIED",
        ) => FailureReason::NotAuthorized,
        (400 | 401, "unauthorized_client" | "invalid_client" | "invalid_grant") => {
            FailureReason::NotAuthorized
        }
        (401 | 403, _) => FailureReason::NotAuthorized,
        (404, _) if op == Operation::Directory => FailureReason::NotAMailbox,
        (404, _) => FailureReason::AlreadyGone,
        _ => FailureReason::ProviderError,
    }
}

/// A failure for a request that never got a response (connection refused/dropped, timeout).
pub fn transport(message: &str) -> Failure {
    Failure::new(FailureReason::ProviderError, None, "transport", message)
}

/// Why a request got no answer. Each cause has its own failure code, so a front end can tell
/// an endpoint that cannot be reached from a permission that is missing (a 401/403 answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportCause {
    /// Nothing listens at host:port (the request was never sent).
    ConnectionRefused,
    /// The host name does not resolve (the request was never sent).
    Dns,
    /// The TLS handshake failed: certificate, protocol (the request was never sent).
    Tls,
    /// No connection within the connect timeout (the request was never sent).
    ConnectTimeout,
    /// Connected, but no answer within the read timeout (a mutation may have landed).
    ReadTimeout,
    /// The connection closed or reset before the answer was complete.
    Dropped,
    /// Anything else.
    Other,
}

impl TransportCause {
    /// The failure code (`Failure::code`).
    pub fn code(self) -> &'static str {
        match self {
            TransportCause::ConnectionRefused => "connection_refused",
            TransportCause::Dns => "dns_failure",
            TransportCause::Tls => "tls_failure",
            TransportCause::ConnectTimeout => "connect_timeout",
            TransportCause::ReadTimeout => "read_timeout",
            TransportCause::Dropped => "connection_dropped",
            TransportCause::Other => "transport",
        }
    }

    /// The cause in words, as the message starts (`connection refused: 127.0.0.1:8080`).
    pub fn words(self) -> &'static str {
        match self {
            TransportCause::ConnectionRefused => "connection refused",
            TransportCause::Dns => "host name not resolved",
            TransportCause::Tls => "TLS handshake failed",
            TransportCause::ConnectTimeout => "connect timed out",
            TransportCause::ReadTimeout => "no answer within the read timeout",
            TransportCause::Dropped => "connection dropped before the answer was complete",
            TransportCause::Other => "transport error",
        }
    }

    /// The cause of a failure with this code, if it is a transport failure.
    pub fn from_code(code: &str) -> Option<TransportCause> {
        [
            TransportCause::ConnectionRefused,
            TransportCause::Dns,
            TransportCause::Tls,
            TransportCause::ConnectTimeout,
            TransportCause::ReadTimeout,
            TransportCause::Dropped,
            TransportCause::Other,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }

    /// The endpoint cannot be reached: sending again soon gives the same answer, so the
    /// failure is final at once instead of being retried with backoff for minutes.
    pub fn unreachable(self) -> bool {
        self.never_sent() || self == TransportCause::ReadTimeout
    }

    /// The request never left: a mutation that failed so has certainly not landed.
    pub fn never_sent(self) -> bool {
        matches!(
            self,
            TransportCause::ConnectionRefused
                | TransportCause::Dns
                | TransportCause::Tls
                | TransportCause::ConnectTimeout
        )
    }
}

/// A request to `endpoint` (`host:port`, never a path, query or credential) got no answer.
pub fn no_answer(cause: TransportCause, endpoint: &str, detail: &str) -> Failure {
    let mut message = format!("{}: {endpoint}", cause.words());
    if !detail.is_empty() {
        message.push_str(&format!(" ({detail})"));
    }
    Failure::new(FailureReason::ProviderError, None, cause.code(), message)
}

impl Failure {
    /// The transport cause, when no answer came.
    pub fn transport_cause(&self) -> Option<TransportCause> {
        if self.status.is_some() {
            return None;
        }
        TransportCause::from_code(&self.code)
    }

    /// The endpoint could not be reached (refused, unresolved, TLS, timed out): not a
    /// permission problem, and not worth retrying at once.
    pub fn is_unreachable(&self) -> bool {
        self.transport_cause()
            .is_some_and(TransportCause::unreachable)
    }
}

/// Parses `Retry-After` (RFC 9110 §10.2.3): delay-seconds, whole as the real services send
/// them (`10`) or fractional as Graph's throttling doc once showed (`2.128`), or an HTTP-date
/// (the time left until it). At most an hour; `None` for anything else (the caller backs off).
pub fn parse_retry_after(value: &str) -> Option<f64> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some(secs.min(3600.0));
    }
    let when = http_date(v)?;
    let delta = when - chrono::Utc::now();
    Some((delta.num_milliseconds().max(0) as f64 / 1000.0).min(3600.0))
}

/// An HTTP-date (RFC 9110 §5.6.7): the IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, or one of
/// the obsolete forms a recipient must still accept, RFC 850 `Sunday, 06-Nov-94 08:49:37 GMT`
/// and asctime `Sun Nov  6 08:49:37 1994`.
fn http_date(v: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::{DateTime, NaiveDateTime, Utc};
    if let Ok(d) = DateTime::parse_from_rfc2822(v) {
        return Some(d.with_timezone(&Utc));
    }
    let single_spaced = v.split_whitespace().collect::<Vec<_>>().join(" ");
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %d %H:%M:%S %Y"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&single_spaced, f).ok())
        .map(|d| d.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_after_parses_fractions_and_dates() {
        assert_eq!(parse_retry_after("2.128"), Some(2.128));
        assert_eq!(parse_retry_after(" 10 "), Some(10.0));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let s = parse_retry_after(&later).expect("date");
        assert!(s > 25.0 && s <= 30.0, "{s}");
    }

    #[test]
    fn retry_after_takes_every_http_date_form() {
        let later = chrono::Utc::now() + chrono::Duration::seconds(40);
        for form in [
            "%a, %d %b %Y %H:%M:%S GMT", // IMF-fixdate
            "%A, %d-%b-%y %H:%M:%S GMT", // RFC 850
            "%a %b %e %H:%M:%S %Y",      // asctime (day space-padded)
        ] {
            let text = later.format(form).to_string();
            let s = parse_retry_after(&text).unwrap_or_else(|| panic!("{text:?}"));
            assert!(s > 35.0 && s <= 40.0, "{text:?}: {s}");
        }
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994"), Some(0.0));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(0.0)
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(0.0)
        );
        assert_eq!(parse_retry_after("0.050"), Some(0.05));
        assert_eq!(parse_retry_after("1"), Some(1.0));
        assert_eq!(parse_retry_after("NaN"), None);
        assert_eq!(parse_retry_after("tomorrow"), None);
    }

    #[test]
    fn graph_codes_classify() {
        let body = |code: &str| json!({"error": {"code": code, "message": "m"}});
        let f = classify(404, &body("ErrorItemNotFound"), Operation::Mutate);
        assert_eq!(f.reason, FailureReason::AlreadyGone);
        assert_eq!(
            (f.status, f.code.as_str()),
            (Some(404), "ErrorItemNotFound")
        );
        for code in ["MailboxNotEnabledForRESTAPI", "ResourceNotFound"] {
            assert_eq!(
                classify(404, &body(code), Operation::Read).reason,
                FailureReason::NotAMailbox
            );
        }
        assert_eq!(
            classify(403, &body("ErrorAccessDenied"), Operation::Read).reason,
            FailureReason::NotAuthorized
        );
        assert_eq!(
            classify(
                403,
                &body("Authorization_RequestDenied"),
                Operation::Directory
            )
            .reason,
            FailureReason::NotAuthorized
        );
        assert_eq!(
            // A hold never refuses permanentDelete (it answers 204 and keeps the item for
            // admins): a 403 there is access denied like anywhere else.
            classify(403, &body("ErrorAccessDenied"), Operation::PermanentDelete).reason,
            FailureReason::NotAuthorized
        );
        assert_eq!(
            classify(429, &body("ApplicationThrottled"), Operation::Mutate).reason,
            FailureReason::Throttled
        );
        assert_eq!(
            classify(500, &body("generalException"), Operation::Mutate).reason,
            FailureReason::ProviderError
        );
    }

    #[test]
    fn google_reasons_classify() {
        let body = |status: u16, reason: &str| {
            json!({"error": {"code": status, "message": "m",
                "errors": [{"domain": "global", "reason": reason, "message": "m"}]}})
        };
        assert_eq!(
            classify(404, &body(404, "notFound"), Operation::Mutate).reason,
            FailureReason::AlreadyGone
        );
        for reason in ["insufficientPermissions", "domainPolicy", "forbidden"] {
            let f = classify(403, &body(403, reason), Operation::Mutate);
            assert_eq!(f.reason, FailureReason::NotAuthorized, "{reason}");
            assert_eq!(f.code, reason);
        }
        assert_eq!(
            classify(403, &body(403, "userRateLimitExceeded"), Operation::Read).reason,
            FailureReason::Throttled
        );
        let oauth =
            json!({"error": "unauthorized_client", "error_description": "Client is unauthorized"});
        let f = classify(401, &oauth, Operation::Read);
        assert_eq!(f.reason, FailureReason::NotAuthorized);
        assert_eq!(f.message, "Client is unauthorized");
    }

    #[test]
    fn message_ids_are_checked() {
        assert_eq!(checked_message_id("a@b").expect("ok"), "<a@b>");
        let f = checked_message_id("not an id").unwrap_err();
        assert!(
            f.message.contains("\"not an id\" is not a Message-ID"),
            "{f}"
        );
    }
}
