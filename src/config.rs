//! Configuration file (TOML): operator identity, tenants with credentials and base URLs, UI
//! preferences. Unknown keys are errors (a typo must not silently drop a setting), and every
//! error names the file and line.
//!
//! Precedence: CLI flag > environment variable > config file > default.

use crate::model::{Role, TenantKind};
use crate::secret::{Secret, SecretError, read_secret_env, read_secret_file};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "CLAWBACK_CONFIG";
/// Environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "CLAWBACK_DATA_DIR";

/// The Microsoft cloud a tenant lives in (Microsoft Graph national cloud deployments,
/// <https://learn.microsoft.com/graph/deployments>): it sets the sign-in and Graph hosts, the
/// resource of every scope, the admin-consent host, and which actions exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cloud {
    /// The global service.
    #[default]
    Global,
    /// Microsoft Cloud for US Government, L4 (GCC High).
    Usgov,
    /// Microsoft Cloud for US Government, L5 (DoD).
    UsgovDod,
    /// Microsoft 365 operated by 21Vianet in China.
    China,
}

impl Cloud {
    pub const ALL: [Cloud; 4] = [Cloud::Global, Cloud::Usgov, Cloud::UsgovDod, Cloud::China];

    pub fn is_global(&self) -> bool {
        *self == Cloud::Global
    }

    /// Config word.
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Global => "global",
            Cloud::Usgov => "usgov",
            Cloud::UsgovDod => "usgov_dod",
            Cloud::China => "china",
        }
    }

    /// Microsoft Entra ID (token and admin-consent) host.
    pub fn login_host(self) -> &'static str {
        match self {
            Cloud::Global => endpoints::MS_LOGIN,
            Cloud::Usgov | Cloud::UsgovDod => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        }
    }

    /// Microsoft Graph host; also the resource every scope names (`{host}/.default`).
    pub const fn graph_host(self) -> &'static str {
        match self {
            Cloud::Global => endpoints::MS_GRAPH,
            Cloud::Usgov => "https://graph.microsoft.us",
            Cloud::UsgovDod => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }

    /// Whether Graph offers the message trace (`/admin/exchange/tracing/messageTraces`) here
    /// (the global service only).
    pub fn offers_message_trace(self) -> bool {
        self == Cloud::Global
    }

    /// Whether Graph offers `message: permanentDelete` here (the global service only).
    pub fn offers_permanent_delete(self) -> bool {
        self == Cloud::Global
    }
}

/// Default public endpoints.
pub mod endpoints {
    pub const MS_LOGIN: &str = "https://login.microsoftonline.com";
    pub const MS_GRAPH: &str = "https://graph.microsoft.com";
    pub const GOOGLE_TOKEN: &str = "https://oauth2.googleapis.com/token";
    pub const GMAIL: &str = "https://gmail.googleapis.com";
    pub const GOOGLE_DIRECTORY: &str = "https://admin.googleapis.com";
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}", path = .path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: tenant {tenant:?}: {message}", path = .path.display())]
    Tenant {
        path: PathBuf,
        tenant: String,
        message: String,
    },
    #[error("{path}: tenant {tenant:?}: {source}", path = .path.display())]
    Secret {
        path: PathBuf,
        tenant: String,
        source: SecretError,
    },
    #[error("{path}: {problem}", path = .path.display())]
    Unsafe { path: PathBuf, problem: String },
    #[error(
        "no config file: pass --config FILE, set {CONFIG_ENV}, or run `clawback init` (try `clawback demo` to see clawback on the lab)"
    )]
    Missing,
    #[error("unknown tenant {given:?}; configured tenants: {known}")]
    UnknownTenant { given: String, known: String },
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub operator: OperatorConfig,
    /// Data directory (store, logs). Default: the platform data dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(default, rename = "tenant", skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub ui: UiConfig,
    #[serde(default)]
    pub trace: TraceConfig,
    /// `clawback watch` settings (intel directory, journal directory, report threshold).
    #[serde(default)]
    pub automation: AutomationConfig,
    /// The audit log's head kept outside the store.
    #[serde(default, skip_serializing_if = "AuditConfig::is_unset")]
    pub audit: AuditConfig,
    /// `clawback watch` blast-radius guard (`[watch]`): how much one intel indicator may
    /// retract in one cycle before it waits for `clawback policy confirm`.
    #[serde(default)]
    pub watch: WatchConfig,
    /// `[jobs]`: how long a silent job runner (a process or a `clawback worker`) keeps its work.
    #[serde(default, skip_serializing_if = "JobsConfig::is_default")]
    pub jobs: JobsConfig,
    /// Provider HTTP timeouts (`[http]`), for every tenant.
    #[serde(default)]
    pub http: HttpConfig,
    /// `[auth]`: how access tokens are kept.
    #[serde(default, skip_serializing_if = "AuthConfig::is_default")]
    pub auth: AuthConfig,
    /// `[store]`: a shared PostgreSQL store instead of the embedded SQLite file.
    #[serde(default, skip_serializing_if = "StoreConfig::is_unset")]
    pub store: StoreConfig,
    /// Where the file was loaded from (for error messages and relative paths).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[auth]`: how access tokens are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Keep app-only access tokens (Microsoft client credentials, Google per-user tokens) in
    /// `tokens.json` (mode 0600) in the data dir until shortly before they expire, so the next
    /// run within the hour signs and fetches none. Delegated sign-ins are never kept.
    #[serde(default = "default_true")]
    pub token_cache: bool,
}

fn default_true() -> bool {
    true
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig { token_cache: true }
    }
}

impl AuthConfig {
    fn is_default(&self) -> bool {
        *self == AuthConfig::default()
    }
}

/// Environment variable naming the store (`postgres://…`); it wins over `[store] url`.
pub const STORE_URL_ENV: &str = "CLAWBACK_STORE_URL";

/// `[store]`: where the store lives. Unset: the embedded SQLite file in the data directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A PostgreSQL connection string (`postgres://USER@HOST:PORT/DATABASE?sslmode=…`, or the
    /// libpq `key=value` form). Never with a password: see `password_file`/`password_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A private (0600) file holding the database password. Relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the database password (libpq's `PGPASSWORD` works too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

impl StoreConfig {
    fn is_unset(&self) -> bool {
        self.url.is_none() && self.password_file.is_none() && self.password_env.is_none()
    }
}

/// `[audit]`: where the audit log's head is kept outside the store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Each new head (`SEQ sha256:HEX`) is appended to this file, e.g. on another mount or one
    /// shipped by syslog; `clawback audit verify` checks the log against every line of it.
    /// Relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_file: Option<PathBuf>,
}

impl AuditConfig {
    fn is_unset(&self) -> bool {
        self.head_file.is_none()
    }
}

/// Who is operating: written into every audit entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Operator name for the audit log (default: the OS user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_role")]
    pub role: Role,
}

fn default_role() -> Role {
    Role::Responder
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            name: None,
            role: default_role(),
        }
    }
}

/// How a Microsoft tenant authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MicrosoftAuth {
    #[default]
    ClientSecret,
    Certificate,
    DeviceCode,
}

/// One provider connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Short name used on the command line and screens (`contoso`).
    pub name: String,
    pub kind: TenantKind,
    /// Managed domains. Empty: discovered from the provider (Graph `/domains`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,

    // Microsoft 365
    /// The Microsoft cloud: `global` (default), `usgov` (GCC High), `usgov_dod`, `china`.
    #[serde(default, skip_serializing_if = "Cloud::is_global")]
    pub cloud: Cloud,
    /// Directory (tenant) id or primary domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Application (client) id of the app registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default)]
    pub auth: MicrosoftAuth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// Inline secret: accepted only when every endpoint is on loopback (the lab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// PEM certificate (for the `x5t#S256` thumbprint) and its private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<PathBuf>,

    // Google Workspace
    /// Service account JSON key file (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_file: Option<PathBuf>,
    /// Environment variable holding the service account JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_env: Option<String>,
    /// Admin user impersonated for directory calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_user: Option<String>,

    /// Phish-report mailboxes of this tenant (Phish Submission Response reads them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub report_mailboxes: Vec<String>,

    /// Mailboxes on litigation hold / single item recovery (Exchange `LitigationHoldEnabled`,
    /// which Graph does not expose; export it with `Get-Mailbox -ResultSize Unlimited |
    /// ? LitigationHoldEnabled`). A Hard Delete there succeeds for the user and the hold keeps
    /// the item for admins: plans and outcomes say `retained_by_hold`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_mailboxes: Vec<String>,

    /// Accept `http://` endpoints on hosts other than loopback (a test proxy). Tokens, secrets
    /// and mail then cross the network in cleartext: warned on every run. Default off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,

    #[serde(default)]
    pub endpoints: EndpointConfig,
    #[serde(default)]
    pub limits: LimitConfig,
}

/// Base URLs. Defaults are the public services; the lab overrides them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
}

impl EndpointConfig {
    /// The endpoints the config sets, by key.
    pub fn set(&self) -> Vec<(&'static str, &str)> {
        [
            ("login", &self.login),
            ("graph", &self.graph),
            ("token", &self.token),
            ("gmail", &self.gmail),
            ("directory", &self.directory),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

/// How an endpoint would be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Https,
    /// `http://` on loopback (the lab).
    Loopback,
    /// `http://` to another host.
    Cleartext,
    Invalid(String),
}

/// Classifies an endpoint URL.
pub fn endpoint_transport(url: &str) -> Transport {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => Transport::Https,
        Ok(u) if u.scheme() == "http" => {
            if is_loopback_url(url) {
                Transport::Loopback
            } else {
                Transport::Cleartext
            }
        }
        Ok(u) => Transport::Invalid(format!(
            "scheme {:?} is not supported (https://, or http:// on loopback)",
            u.scheme()
        )),
        Err(e) => Transport::Invalid(format!("not a URL: {e}")),
    }
}

/// The allowed range of every numeric setting, checked when the file is loaded (a value outside
/// is refused with the file, line, key and range). Code that builds a [`Config`] without a file
/// gets the same bounds from the clients, which clamp to them.
pub mod ranges {
    use std::ops::RangeInclusive;

    /// `[tenant.limits] max_in_flight`: far beyond any tenant's service limits, far below what
    /// a semaphore or a buffer of that size would choke on.
    pub const MAX_IN_FLIGHT: RangeInclusive<u64> = 1..=10_000;
    /// `[tenant.limits] per_mailbox` (Graph allows 4).
    pub const PER_MAILBOX: RangeInclusive<u64> = 1..=100;
    /// `[tenant.limits] gmail_units_per_second` (Google documents 6,000 a minute = 100 a second
    /// for Cloud projects created since 2026-05-01, 15,000 a minute = 250 a second before).
    pub const GMAIL_UNITS_PER_SECOND: RangeInclusive<u64> = 1..=100_000;
    /// `[tenant.limits] gmail_project_units_per_minute` (Google documents 1,200,000).
    pub const GMAIL_PROJECT_UNITS_PER_MINUTE: RangeInclusive<u64> = 1..=100_000_000;
    /// `[tenant.limits] gmail_project_units_per_day` (Google's daily billing threshold per
    /// project: 80,000,000).
    pub const GMAIL_PROJECT_UNITS_PER_DAY: RangeInclusive<u64> = 1..=100_000_000_000;
    /// `[tenant.limits] max_attempts`.
    pub const MAX_ATTEMPTS: RangeInclusive<u64> = 1..=100;
    /// `[automation] reporters_threshold`.
    pub const REPORTERS_THRESHOLD: RangeInclusive<u64> = 1..=10_000;
    /// `[automation] interval_secs`: a second to a day.
    pub const INTERVAL_SECS: RangeInclusive<u64> = 1..=86_400;
    /// `[http] connect_timeout_secs`: a tenth of a second to five minutes.
    pub const CONNECT_TIMEOUT_SECS: RangeInclusive<f64> = 0.1..=300.0;
    /// `[http] read_timeout_secs`: a tenth of a second to an hour.
    pub const READ_TIMEOUT_SECS: RangeInclusive<f64> = 0.1..=3600.0;

    /// `value` moved into `range` (for settings that did not come through a file).
    pub fn clamp<T>(value: T, range: &RangeInclusive<u64>) -> T
    where
        T: Copy + TryFrom<u64> + TryInto<u64>,
    {
        let wide: u64 = value.try_into().unwrap_or(u64::MAX);
        T::try_from(wide.clamp(*range.start(), *range.end())).unwrap_or(value)
    }
}

/// Deserializes an integer setting and refuses it outside `range`, naming `key` and the range
/// (toml puts the error on the value's line). Any TOML integer gets this message, not a bare
/// "expected u32".
fn ranged<'de, D, T>(d: D, key: &str, range: &std::ops::RangeInclusive<u64>) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    let v = i64::deserialize(d)?;
    u64::try_from(v)
        .ok()
        .filter(|v| range.contains(v))
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{key} must be from {} to {}, got {v}",
                range.start(),
                range.end()
            ))
        })
}

/// A `deserialize_with` function for one ranged key.
macro_rules! ranged_key {
    ($fn_name:ident, $ty:ty, $key:literal, $range:expr) => {
        fn $fn_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
            ranged(d, $key, &$range)
        }
    };
}

ranged_key!(
    de_max_in_flight,
    usize,
    "limits.max_in_flight",
    ranges::MAX_IN_FLIGHT
);
ranged_key!(
    de_per_mailbox,
    usize,
    "limits.per_mailbox",
    ranges::PER_MAILBOX
);
ranged_key!(
    de_gmail_units,
    u32,
    "limits.gmail_units_per_second",
    ranges::GMAIL_UNITS_PER_SECOND
);
ranged_key!(
    de_gmail_project_minute,
    u32,
    "limits.gmail_project_units_per_minute",
    ranges::GMAIL_PROJECT_UNITS_PER_MINUTE
);
ranged_key!(
    de_gmail_project_day,
    u64,
    "limits.gmail_project_units_per_day",
    ranges::GMAIL_PROJECT_UNITS_PER_DAY
);
ranged_key!(
    de_max_attempts,
    u32,
    "limits.max_attempts",
    ranges::MAX_ATTEMPTS
);
ranged_key!(
    de_reporters_threshold,
    usize,
    "automation.reporters_threshold",
    ranges::REPORTERS_THRESHOLD
);
ranged_key!(
    de_interval_secs,
    u64,
    "automation.interval_secs",
    ranges::INTERVAL_SECS
);

/// Deserializes a duration in seconds (integer or fraction) and refuses it outside `range`,
/// naming `key` and the range (toml puts the error on the value's line).
fn ranged_secs<'de, D>(
    d: D,
    key: &str,
    range: &std::ops::RangeInclusive<f64>,
) -> Result<f64, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let v = f64::deserialize(d)?;
    if !range.contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "{key} = {v}: must be from {} to {} seconds",
            range.start(),
            range.end()
        )));
    }
    Ok(v)
}

fn de_connect_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    ranged_secs(
        d,
        "[http] connect_timeout_secs",
        &ranges::CONNECT_TIMEOUT_SECS,
    )
}

fn de_read_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    ranged_secs(d, "[http] read_timeout_secs", &ranges::READ_TIMEOUT_SECS)
}

/// `[http]`: how long a provider request may wait, for every tenant. A connection that is
/// refused, or a name that does not resolve, fails at once; these bound the waits that have
/// no answer: the TCP/TLS connect, and each read of a response (headers or body) after the
/// request went out. A mutation whose read timed out has an unknown outcome and is verified
/// by locating the copy again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Seconds to establish a connection, TLS included (default 10; 0.1 to 300).
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "de_connect_timeout"
    )]
    pub connect_timeout_secs: f64,
    /// Seconds the provider may stay silent while answering (default 30; 0.1 to 3600).
    #[serde(default = "default_read_timeout", deserialize_with = "de_read_timeout")]
    pub read_timeout_secs: f64,
}

fn default_connect_timeout() -> f64 {
    10.0
}
fn default_read_timeout() -> f64 {
    30.0
}

impl HttpConfig {
    /// The connect timeout, within its range even when the config was built in code.
    pub fn connect_timeout(&self) -> std::time::Duration {
        secs_in(self.connect_timeout_secs, &ranges::CONNECT_TIMEOUT_SECS)
    }

    /// The read timeout, within its range even when the config was built in code.
    pub fn read_timeout(&self) -> std::time::Duration {
        secs_in(self.read_timeout_secs, &ranges::READ_TIMEOUT_SECS)
    }
}

fn secs_in(v: f64, range: &std::ops::RangeInclusive<f64>) -> std::time::Duration {
    // NaN is not in any range: the upper bound (the longest wait) is the safe reading.
    let v = if v.is_nan() {
        *range.end()
    } else {
        v.clamp(*range.start(), *range.end())
    };
    std::time::Duration::from_secs_f64(v)
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout_secs: default_connect_timeout(),
            read_timeout_secs: default_read_timeout(),
        }
    }
}

/// Client-side request limits per tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Requests in flight at once for the whole tenant.
    #[serde(
        default = "default_max_in_flight",
        deserialize_with = "de_max_in_flight"
    )]
    pub max_in_flight: usize,
    /// Requests in flight per mailbox (Graph allows 4).
    #[serde(default = "default_per_mailbox", deserialize_with = "de_per_mailbox")]
    pub per_mailbox: usize,
    /// Gmail quota units per user per second: 100 (Google's 6,000 per user per minute for
    /// Cloud projects created since 2026-05-01); a project that used the Gmail API between
    /// November 2025 and April 2026 keeps 15,000 a minute and may set 250.
    #[serde(default = "default_gmail_units", deserialize_with = "de_gmail_units")]
    pub gmail_units_per_second: u32,
    /// Gmail quota units per minute for the whole Cloud project (documented: 1,200,000),
    /// shared by every user this tenant impersonates.
    #[serde(
        default = "default_gmail_project_minute",
        deserialize_with = "de_gmail_project_minute"
    )]
    pub gmail_project_units_per_minute: u32,
    /// Gmail quota units this process sends for the project in any 24 hours; past it, requests
    /// are not sent and fail `throttled` (`dailyLimitExceeded`). Default: Google's daily billing
    /// threshold, 80,000,000 units per project.
    #[serde(
        default = "default_gmail_project_day",
        deserialize_with = "de_gmail_project_day"
    )]
    pub gmail_project_units_per_day: u64,
    /// Attempts per request before giving up as `throttled` / `provider_error`.
    #[serde(default = "default_max_attempts", deserialize_with = "de_max_attempts")]
    pub max_attempts: u32,
}

fn default_max_in_flight() -> usize {
    256
}
fn default_per_mailbox() -> usize {
    4
}
fn default_gmail_units() -> u32 {
    100
}
fn default_gmail_project_minute() -> u32 {
    1_200_000
}
fn default_gmail_project_day() -> u64 {
    80_000_000
}
fn default_max_attempts() -> u32 {
    8
}

impl LimitConfig {
    /// These limits moved into their allowed [`ranges`]. A file is checked when it is loaded;
    /// this covers a `Config` built in code, so that a huge `max_in_flight` never reaches a
    /// semaphore (which panics past `usize::MAX >> 3` permits) or the scheduler's arithmetic.
    pub fn clamped(&self) -> LimitConfig {
        LimitConfig {
            max_in_flight: ranges::clamp(self.max_in_flight, &ranges::MAX_IN_FLIGHT),
            per_mailbox: ranges::clamp(self.per_mailbox, &ranges::PER_MAILBOX),
            gmail_units_per_second: ranges::clamp(
                self.gmail_units_per_second,
                &ranges::GMAIL_UNITS_PER_SECOND,
            ),
            gmail_project_units_per_minute: ranges::clamp(
                self.gmail_project_units_per_minute,
                &ranges::GMAIL_PROJECT_UNITS_PER_MINUTE,
            ),
            gmail_project_units_per_day: ranges::clamp(
                self.gmail_project_units_per_day,
                &ranges::GMAIL_PROJECT_UNITS_PER_DAY,
            ),
            max_attempts: ranges::clamp(self.max_attempts, &ranges::MAX_ATTEMPTS),
        }
    }
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            max_in_flight: default_max_in_flight(),
            per_mailbox: default_per_mailbox(),
            gmail_units_per_second: default_gmail_units(),
            gmail_project_units_per_minute: default_gmail_project_minute(),
            gmail_project_units_per_day: default_gmail_project_day(),
            max_attempts: default_max_attempts(),
        }
    }
}

/// TUI preferences.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    /// Theme name (`default`, `high-contrast`, …) or a path to a theme TOML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<String>,
    #[serde(default)]
    pub mouse: bool,
    /// Per-mode key overrides: `[ui.keys.search] submit = "enter"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, BTreeMap<String, String>>,
}

/// Mail trace settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// Header names that carry a disposition verdict (value = one of the disposition words).
    #[serde(default = "default_disposition_headers")]
    pub disposition_headers: Vec<String>,
}

fn default_disposition_headers() -> Vec<String> {
    vec!["X-Clawback-Disposition".to_string()]
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig {
            disposition_headers: default_disposition_headers(),
        }
    }
}

/// `clawback watch` settings (`[automation]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutomationConfig {
    /// Directory of indicator files (CSV / plain lists) and STIX 2.1 bundles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intel_dir: Option<PathBuf>,
    /// Directory watched for journal reports / EML / verdict feeds (ingested each cycle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_dir: Option<PathBuf>,
    /// Distinct reporters that make a reported message malicious.
    #[serde(
        default = "default_reporters",
        deserialize_with = "de_reporters_threshold"
    )]
    pub reporters_threshold: usize,
    /// Seconds between watch cycles (sync + auto-retract).
    #[serde(
        default = "default_watch_interval",
        deserialize_with = "de_interval_secs"
    )]
    pub interval_secs: u64,
}

fn default_reporters() -> usize {
    3
}
fn default_watch_interval() -> u64 {
    10
}

impl Default for AutomationConfig {
    fn default() -> Self {
        AutomationConfig {
            intel_dir: None,
            journal_dir: None,
            reporters_threshold: default_reporters(),
            interval_secs: default_watch_interval(),
        }
    }
}

/// The automation guard (`[watch]`): per cycle and per intel indicator, how far Post Delivery
/// Response may go on its own. An indicator over either limit is not acted on: its match is
/// held as `needs_confirmation` (audited, listed by `clawback policy holds`, the console's
/// Policy and Jobs panes and the `watch` log) until `clawback policy confirm ID` releases it.
/// Ranges are checked when the config is loaded; an error names the file, line and key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Copies one indicator may retract in one cycle (default 500, 1 to 1,000,000). A row
    /// like `subject,"*"` that would retract more is held instead.
    #[serde(
        default = "default_max_copies_per_cycle",
        deserialize_with = "de_max_copies_per_cycle"
    )]
    pub max_copies_per_cycle: u64,
    /// Share of the messages traced in the look-back window one indicator may match (default
    /// 0.05 = 5%; more than 0, at most 1). An indicator matching more is held.
    #[serde(
        default = "default_max_trace_share",
        deserialize_with = "de_max_trace_share"
    )]
    pub max_trace_share: f64,
    /// The share rule applies from this many matched messages (default 20, at least 1), so
    /// a handful of messages in a quiet window is not mistaken for a blast.
    #[serde(
        default = "default_trace_share_min_messages",
        deserialize_with = "de_trace_share_min_messages"
    )]
    pub trace_share_min_messages: u64,
}

/// Largest accepted `[watch] max_copies_per_cycle`.
pub const MAX_COPIES_PER_CYCLE_LIMIT: u64 = 1_000_000;

fn default_max_copies_per_cycle() -> u64 {
    500
}
fn default_max_trace_share() -> f64 {
    0.05
}
fn default_trace_share_min_messages() -> u64 {
    20
}

fn de_max_copies_per_cycle<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = i64::deserialize(d)?;
    if !(1..=MAX_COPIES_PER_CYCLE_LIMIT as i64).contains(&v) {
        return Err(serde::de::Error::custom(format!(
            "[watch] max_copies_per_cycle = {v}: must be from 1 to {MAX_COPIES_PER_CYCLE_LIMIT}"
        )));
    }
    Ok(v as u64)
}

fn de_max_trace_share<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    if !(v > 0.0 && v <= 1.0) {
        return Err(serde::de::Error::custom(format!(
            "[watch] max_trace_share = {v}: must be more than 0 and at most 1 (0.05 = 5% of the traced messages)"
        )));
    }
    Ok(v)
}

fn de_trace_share_min_messages<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = i64::deserialize(d)?;
    if v < 1 {
        return Err(serde::de::Error::custom(format!(
            "[watch] trace_share_min_messages = {v}: must be at least 1"
        )));
    }
    Ok(v as u64)
}

/// `[jobs]`: the lease of a job run by one process and the registrations of workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// A job runner whose heartbeat (every 2 s) is older than this many seconds is taken to be
    /// gone: another process takes its job (or, for a worker, its items) over, settling what it
    /// had in flight by locating. Default 30, at least 6 (three heartbeats).
    #[serde(
        default = "default_lease_stale_secs",
        deserialize_with = "de_lease_stale_secs"
    )]
    pub lease_stale_secs: u64,
}

/// Smallest accepted `[jobs] lease_stale_secs`: three heartbeats, so a busy runner is not
/// taken for dead.
pub const MIN_LEASE_STALE_SECS: u64 = 6;

fn default_lease_stale_secs() -> u64 {
    30
}

fn de_lease_stale_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = i64::deserialize(d)?;
    if v < MIN_LEASE_STALE_SECS as i64 || v > 86_400 {
        return Err(serde::de::Error::custom(format!(
            "[jobs] lease_stale_secs = {v}: must be from {MIN_LEASE_STALE_SECS} (three heartbeats) to 86400"
        )));
    }
    Ok(v as u64)
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            lease_stale_secs: default_lease_stale_secs(),
        }
    }
}

impl JobsConfig {
    fn is_default(&self) -> bool {
        *self == JobsConfig::default()
    }

    /// How old a heartbeat may be before its holder is taken to be gone.
    pub fn lease_stale(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.lease_stale_secs).unwrap_or(i64::MAX / 1000))
    }
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            max_copies_per_cycle: default_max_copies_per_cycle(),
            max_trace_share: default_max_trace_share(),
            trace_share_min_messages: default_trace_share_min_messages(),
        }
    }
}

impl Config {
    /// Parses config text; `path` is used for messages and to resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e.span().map(|span| line_of(text, span.start)).unwrap_or(1),
            message: e.message().trim().to_string(),
        })?;
        config.source = Some(path.to_path_buf());
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.automation.intel_dir,
            &mut config.automation.journal_dir,
            &mut config.audit.head_file,
            &mut config.store.password_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for tenant in &mut config.tenants {
            for p in [
                &mut tenant.client_secret_file,
                &mut tenant.certificate_file,
                &mut tenant.private_key_file,
                &mut tenant.service_account_file,
            ]
            .into_iter()
            .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        check_config_file(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    fn path(&self) -> PathBuf {
        self.source
            .clone()
            .unwrap_or_else(|| PathBuf::from("<config>"))
    }

    fn tenant_error(&self, tenant: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Tenant {
            path: self.path(),
            tenant: tenant.to_string(),
            message: message.into(),
        }
    }

    /// Structural checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.store.url {
            let problem = if !crate::store::pg::is_postgres_url(url) && !url.contains('=') {
                Some(format!(
                    "[store] url = {:?}: only PostgreSQL (postgres://…) is a store URL; leave it unset for the embedded SQLite store in the data directory",
                    crate::store::pg::redact(url)
                ))
            } else if crate::store::pg::PgLocator::has_password(url) {
                Some(
                    "[store] url carries a password: the config file is no place for it; put it in a 0600 file named by [store] password_file, or in the environment ([store] password_env, PGPASSWORD)".to_string(),
                )
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ConfigError::Unsafe {
                    path: self.path(),
                    problem,
                });
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.tenants {
            if t.name.trim().is_empty() {
                return Err(self.tenant_error(&t.name, "name must not be empty"));
            }
            for (key, url) in t.endpoints.set() {
                match endpoint_transport(url) {
                    Transport::Https | Transport::Loopback => {}
                    Transport::Cleartext if t.allow_insecure_http => {}
                    Transport::Cleartext => {
                        return Err(self.tenant_error(
                            &t.name,
                            format!(
                                "endpoints.{key} = {url:?} is plain http:// to a host that is not loopback: tokens, secrets and mail would cross the network in cleartext; use https:// (or set allow_insecure_http = true for a test proxy, warned on every run)"
                            ),
                        ));
                    }
                    Transport::Invalid(why) => {
                        return Err(
                            self.tenant_error(&t.name, format!("endpoints.{key} = {url:?}: {why}"))
                        );
                    }
                }
            }
            if !seen.insert(t.name.as_str()) {
                return Err(self.tenant_error(&t.name, "defined twice"));
            }
            match t.kind {
                TenantKind::Microsoft365 => {
                    if t.tenant_id.is_none() {
                        return Err(
                            self.tenant_error(&t.name, "tenant_id is required for microsoft365")
                        );
                    }
                    if t.client_id.is_none() {
                        return Err(
                            self.tenant_error(&t.name, "client_id is required for microsoft365")
                        );
                    }
                    match t.auth {
                        MicrosoftAuth::ClientSecret => {
                            let n = [
                                t.client_secret_file.is_some(),
                                t.client_secret_env.is_some(),
                                t.client_secret.is_some(),
                            ]
                            .iter()
                            .filter(|b| **b)
                            .count();
                            if n != 1 {
                                return Err(self.tenant_error(
                                    &t.name,
                                    "auth = \"client_secret\" needs exactly one of client_secret_file, client_secret_env, client_secret",
                                ));
                            }
                            if t.client_secret.is_some() && !t.all_endpoints_loopback() {
                                return Err(self.tenant_error(
                                    &t.name,
                                    "an inline client_secret is only allowed for the lab (loopback endpoints); use client_secret_file or client_secret_env",
                                ));
                            }
                        }
                        MicrosoftAuth::Certificate => {
                            if t.certificate_file.is_none() || t.private_key_file.is_none() {
                                return Err(self.tenant_error(
                                    &t.name,
                                    "auth = \"certificate\" needs certificate_file and private_key_file",
                                ));
                            }
                        }
                        MicrosoftAuth::DeviceCode => {}
                    }
                }
                TenantKind::GoogleWorkspace => {
                    if !t.cloud.is_global() {
                        return Err(self.tenant_error(
                            &t.name,
                            format!(
                                "cloud = \"{}\" is a Microsoft cloud; a google_workspace tenant has none",
                                t.cloud.as_str()
                            ),
                        ));
                    }
                    if t.service_account_file.is_none() && t.service_account_env.is_none() {
                        return Err(self.tenant_error(
                            &t.name,
                            "google_workspace needs service_account_file or service_account_env",
                        ));
                    }
                    if t.admin_user.is_none() {
                        return Err(self.tenant_error(
                            &t.name,
                            "admin_user (an admin to impersonate for directory lookups) is required for google_workspace",
                        ));
                    }
                    // Nothing else tells clawback which addresses are this tenant's (the
                    // Directory scopes it asks for do not cover `domains.list`): without the
                    // list every recipient would count as external and nothing be retracted.
                    if t.domains.iter().all(|d| d.trim().is_empty()) {
                        return Err(self.tenant_error(
                            &t.name,
                            "domains is required for google_workspace (e.g. domains = [\"example.com\", \"example.org\"]): without it every recipient counts as outside the tenant",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Warnings to show on every run: tenants that send credentials over plain http.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.tenants {
            for (key, url) in t.endpoints.set() {
                if endpoint_transport(url) == Transport::Cleartext {
                    out.push(format!(
                        "warning: tenant {:?}: endpoints.{key} = {url} is plain http:// (allow_insecure_http = true): tokens, secrets and mail cross the network in cleartext",
                        t.name
                    ));
                }
            }
        }
        out
    }

    /// Finds a tenant by name.
    pub fn tenant(&self, name: &str) -> Result<&TenantConfig, ConfigError> {
        self.tenants
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ConfigError::UnknownTenant {
                given: name.to_string(),
                known: self
                    .tenants
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Reads a tenant's client secret from wherever the config says it lives.
    pub fn client_secret(&self, tenant: &TenantConfig) -> Result<Secret, ConfigError> {
        let wrap = |source| ConfigError::Secret {
            path: self.path(),
            tenant: tenant.name.clone(),
            source,
        };
        if let Some(p) = &tenant.client_secret_file {
            return read_secret_file(p).map_err(wrap);
        }
        if let Some(name) = &tenant.client_secret_env {
            return read_secret_env(name).map_err(wrap);
        }
        if let Some(inline) = &tenant.client_secret {
            return Ok(Secret::new(inline.clone()));
        }
        Err(self.tenant_error(&tenant.name, "no client secret configured"))
    }

    /// Reads a Google tenant's service account JSON (file must be private).
    pub fn service_account_json(&self, tenant: &TenantConfig) -> Result<Secret, ConfigError> {
        let wrap = |source| ConfigError::Secret {
            path: self.path(),
            tenant: tenant.name.clone(),
            source,
        };
        if let Some(p) = &tenant.service_account_file {
            return read_secret_file(p).map_err(wrap);
        }
        if let Some(name) = &tenant.service_account_env {
            return read_secret_env(name).map_err(wrap);
        }
        Err(self.tenant_error(&tenant.name, "no service account configured"))
    }
}

impl TenantConfig {
    pub fn login_url(&self) -> &str {
        self.endpoints
            .login
            .as_deref()
            .unwrap_or(self.cloud.login_host())
    }
    pub fn graph_url(&self) -> &str {
        self.endpoints
            .graph
            .as_deref()
            .unwrap_or(self.cloud.graph_host())
    }
    pub fn google_token_url(&self) -> &str {
        self.endpoints
            .token
            .as_deref()
            .unwrap_or(endpoints::GOOGLE_TOKEN)
    }
    pub fn gmail_url(&self) -> &str {
        self.endpoints.gmail.as_deref().unwrap_or(endpoints::GMAIL)
    }
    pub fn directory_url(&self) -> &str {
        self.endpoints
            .directory
            .as_deref()
            .unwrap_or(endpoints::GOOGLE_DIRECTORY)
    }

    /// True when every endpoint this tenant uses points at a loopback address (the lab).
    pub fn all_endpoints_loopback(&self) -> bool {
        let urls: Vec<&str> = match self.kind {
            TenantKind::Microsoft365 => vec![self.login_url(), self.graph_url()],
            TenantKind::GoogleWorkspace => vec![
                self.google_token_url(),
                self.gmail_url(),
                self.directory_url(),
            ],
        };
        urls.iter().all(|u| is_loopback_url(u))
    }
}

/// Refuses a config another user could change (group- or world-writable: it names the secret
/// files, the endpoints and the operator's role) and anything but a regular file.
fn check_config_file(path: &Path) -> Result<(), ConfigError> {
    let meta = crate::secret::regular_file(path).map_err(|e| match e {
        crate::secret::SecretError::Read { path, source } => ConfigError::Read { path, source },
        crate::secret::SecretError::NotAFile { path, kind } => ConfigError::Unsafe {
            path,
            problem: format!("a config must be a regular file, this is a {kind}"),
        },
        other => ConfigError::Unsafe {
            path: path.to_path_buf(),
            problem: other.to_string(),
        },
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(ConfigError::Unsafe {
                path: path.to_path_buf(),
                problem: format!(
                    "config file is writable by others (mode {mode:04o}): anyone who can write it chooses the secrets, endpoints and role clawback uses; run `chmod go-w {}`",
                    path.display()
                ),
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// True for `http(s)://127.x.x.x`, `localhost` or `[::1]` URLs.
pub fn is_loopback_url(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) => match u.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        },
        Err(_) => false,
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Finds the config file: explicit path, then `$CLAWBACK_CONFIG`, then the platform config dir.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Ok(p) = std::env::var(CONFIG_ENV)
        && !p.is_empty()
    {
        return Some(PathBuf::from(p));
    }
    let dirs = directories::ProjectDirs::from("", "", "clawback")?;
    let p = dirs.config_dir().join("config.toml");
    p.exists().then_some(p)
}

/// The data directory: explicit flag, `$CLAWBACK_DATA_DIR`, the config's `data_dir`, or the
/// platform data dir.
pub fn data_dir(explicit: Option<&Path>, config: Option<&Config>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Ok(p) = std::env::var(DATA_DIR_ENV)
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    if let Some(p) = config.and_then(|c| c.data_dir.clone()) {
        return p;
    }
    directories::ProjectDirs::from("", "", "clawback")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".clawback"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAB: &str = r#"
[operator]
name = "alice"
role = "admin"

[[tenant]]
name = "contoso"
kind = "microsoft365"
tenant_id = "contoso.onmicrosoft.com"
client_id = "app"
client_secret = "inline"
endpoints = { login = "http://127.0.0.1:9", graph = "http://127.0.0.1:9" }
"#;

    #[test]
    fn parses_lab_config() {
        let c = Config::parse(LAB, Path::new("lab.toml")).expect("parse");
        assert_eq!(c.operator.role, Role::Admin);
        assert_eq!(
            c.tenant("contoso").expect("tenant").graph_url(),
            "http://127.0.0.1:9"
        );
        let err = c.tenant("nope").unwrap_err().to_string();
        assert!(
            err.contains("unknown tenant \"nope\"") && err.contains("contoso"),
            "{err}"
        );
    }

    #[test]
    fn google_tenant_without_domains_is_refused_naming_file_and_tenant() {
        let google = |domains: &str| {
            format!(
                "{LAB}\n[[tenant]]\nname = \"fabrikam\"\nkind = \"google_workspace\"\n{domains}admin_user = \"admin@fabrikam.com\"\nservice_account_env = \"SA\"\n"
            )
        };
        for missing in ["", "domains = []\n", "domains = [\" \"]\n"] {
            let err = Config::parse(&google(missing), Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("c.toml: tenant \"fabrikam\"")
                    && err.contains("domains is required for google_workspace"),
                "{missing:?}: {err}"
            );
        }
        let c = Config::parse(
            &google("domains = [\"fabrikam.com\"]\n"),
            Path::new("c.toml"),
        )
        .expect("a Google tenant with its domains loads");
        assert_eq!(c.tenants[1].domains, vec!["fabrikam.com".to_string()]);
    }

    #[test]
    fn cloud_sets_hosts_and_is_microsoft_only() {
        let text = LAB.replace(
            "client_id = \"app\"",
            "client_id = \"app\"\ncloud = \"usgov_dod\"",
        );
        let c = Config::parse(&text, Path::new("c.toml")).expect("parse");
        let t = &c.tenants[0];
        assert_eq!(t.cloud, Cloud::UsgovDod);
        assert_eq!(t.cloud.graph_host(), "https://dod-graph.microsoft.us");
        assert_eq!(t.cloud.login_host(), "https://login.microsoftonline.us");
        assert!(!t.cloud.offers_permanent_delete());
        // Endpoints set in the file win (the lab); without them the cloud's hosts apply.
        assert_eq!(t.graph_url(), "http://127.0.0.1:9");
        let mut bare = t.clone();
        bare.endpoints = EndpointConfig::default();
        assert_eq!(bare.graph_url(), "https://dod-graph.microsoft.us");
        assert_eq!(bare.login_url(), "https://login.microsoftonline.us");
        let err = Config::parse(
            &LAB.replace(
                "client_id = \"app\"",
                "client_id = \"app\"\ncloud = \"mars\"",
            ),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unknown variant `mars`") && err.contains("usgov"),
            "{err}"
        );
        let google = format!(
            "{LAB}\n[[tenant]]\nname = \"g\"\nkind = \"google_workspace\"\ncloud = \"china\"\ndomains = [\"g.com\"]\nadmin_user = \"a@g.com\"\nservice_account_env = \"SA\"\n"
        );
        let err = Config::parse(&google, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cloud = \"china\" is a Microsoft cloud"),
            "{err}"
        );
    }

    #[test]
    fn typo_key_names_file_and_line() {
        let text = LAB.replace("client_id = \"app\"", "clientid = \"app\"");
        let err = Config::parse(&text, Path::new("lab.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("lab.toml:10:"), "{err}");
        assert!(err.contains("clientid"), "{err}");
    }

    #[test]
    fn watch_guard_defaults_and_ranges_name_file_line_and_key() {
        let c = Config::parse(LAB, Path::new("lab.toml")).expect("parse");
        assert_eq!(c.watch, WatchConfig::default());
        assert_eq!(c.watch.max_copies_per_cycle, 500);
        let ok = format!("{LAB}\n[watch]\nmax_copies_per_cycle = 20\nmax_trace_share = 1\n");
        let c = Config::parse(&ok, Path::new("lab.toml")).expect("parse");
        assert_eq!(c.watch.max_copies_per_cycle, 20);
        assert_eq!(c.watch.max_trace_share, 1.0);
        for (line, key) in [
            (
                "max_copies_per_cycle = 0",
                "max_copies_per_cycle = 0: must be from 1 to",
            ),
            (
                "max_copies_per_cycle = -5",
                "max_copies_per_cycle = -5: must be from 1",
            ),
            (
                "max_trace_share = 1.5",
                "max_trace_share = 1.5: must be more than 0 and at most 1",
            ),
            (
                "max_trace_share = 0.0",
                "max_trace_share = 0: must be more than 0",
            ),
            (
                "max_trace_share = nan",
                "max_trace_share = NaN: must be more than 0",
            ),
            (
                "trace_share_min_messages = 0",
                "trace_share_min_messages = 0: must be at least 1",
            ),
        ] {
            let text = format!("{LAB}\n[watch]\n{line}\n");
            let err = Config::parse(&text, Path::new("lab.toml"))
                .unwrap_err()
                .to_string();
            let want_line = text.lines().count();
            assert!(err.starts_with(&format!("lab.toml:{want_line}: ")), "{err}");
            assert!(err.contains(&format!("[watch] {key}")), "{err}");
        }
    }

    #[test]
    fn jobs_lease_stale_defaults_to_30_s_and_refuses_less_than_three_heartbeats() {
        let c = Config::parse(LAB, Path::new("lab.toml")).expect("parse");
        assert_eq!(c.jobs.lease_stale(), chrono::Duration::seconds(30));
        let ok = format!("{LAB}\n[jobs]\nlease_stale_secs = 6\n");
        let c = Config::parse(&ok, Path::new("lab.toml")).expect("parse");
        assert_eq!(c.jobs.lease_stale(), chrono::Duration::seconds(6));
        for v in ["5", "0", "-1", "86401"] {
            let text = format!("{LAB}\n[jobs]\nlease_stale_secs = {v}\n");
            let err = Config::parse(&text, Path::new("lab.toml"))
                .unwrap_err()
                .to_string();
            let want_line = text.lines().count();
            assert!(err.starts_with(&format!("lab.toml:{want_line}: ")), "{err}");
            assert!(
                err.contains(&format!(
                    "[jobs] lease_stale_secs = {v}: must be from 6 (three heartbeats) to 86400"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn http_timeouts_default_parse_and_refuse_out_of_range_naming_file_line_and_key() {
        let c = Config::parse(LAB, Path::new("lab.toml")).expect("parse");
        assert_eq!(c.http, HttpConfig::default());
        assert_eq!(c.http.connect_timeout(), std::time::Duration::from_secs(10));
        assert_eq!(c.http.read_timeout(), std::time::Duration::from_secs(30));
        let ok = format!("{LAB}\n[http]\nconnect_timeout_secs = 0.5\nread_timeout_secs = 2\n");
        let c = Config::parse(&ok, Path::new("lab.toml")).expect("parse");
        assert_eq!(
            c.http.connect_timeout(),
            std::time::Duration::from_millis(500)
        );
        assert_eq!(c.http.read_timeout(), std::time::Duration::from_secs(2));
        for (line, want) in [
            (
                "connect_timeout_secs = 0",
                "[http] connect_timeout_secs = 0: must be from 0.1 to 300 seconds",
            ),
            (
                "connect_timeout_secs = 301",
                "[http] connect_timeout_secs = 301: must be from 0.1 to 300 seconds",
            ),
            (
                "read_timeout_secs = -1",
                "[http] read_timeout_secs = -1: must be from 0.1 to 3600 seconds",
            ),
            (
                "read_timeout_secs = nan",
                "[http] read_timeout_secs = NaN: must be from 0.1 to 3600",
            ),
            (
                "read_timeout_secs = \"30s\"",
                "invalid type: string \"30s\"",
            ),
            (
                "total_timeout_secs = 5",
                "unknown field `total_timeout_secs`",
            ),
        ] {
            let text = format!("{LAB}\n[http]\n{line}\n");
            let err = Config::parse(&text, Path::new("lab.toml"))
                .unwrap_err()
                .to_string();
            let want_line = text.lines().count();
            assert!(err.starts_with(&format!("lab.toml:{want_line}: ")), "{err}");
            assert!(err.contains(want), "{err}");
        }
        // Built in code: kept within the ranges.
        let wild = HttpConfig {
            connect_timeout_secs: 0.0,
            read_timeout_secs: f64::NAN,
        };
        assert_eq!(
            wild.connect_timeout(),
            std::time::Duration::from_millis(100)
        );
        assert_eq!(wild.read_timeout(), std::time::Duration::from_secs(3600));
    }

    #[test]
    fn limits_built_in_code_clamp_into_their_ranges() {
        let huge = LimitConfig {
            max_in_flight: usize::MAX,
            per_mailbox: usize::MAX,
            gmail_units_per_second: u32::MAX,
            gmail_project_units_per_minute: u32::MAX,
            gmail_project_units_per_day: u64::MAX,
            max_attempts: u32::MAX,
        }
        .clamped();
        assert_eq!(
            (
                huge.max_in_flight,
                huge.per_mailbox,
                huge.gmail_units_per_second,
                huge.max_attempts
            ),
            (10_000, 100, 100_000, 100)
        );
        assert_eq!(
            (
                huge.gmail_project_units_per_minute,
                huge.gmail_project_units_per_day
            ),
            (100_000_000, 100_000_000_000)
        );
        let zero = LimitConfig {
            max_in_flight: 0,
            per_mailbox: 0,
            gmail_units_per_second: 0,
            gmail_project_units_per_minute: 0,
            gmail_project_units_per_day: 0,
            max_attempts: 0,
        }
        .clamped();
        assert_eq!(
            (
                zero.max_in_flight,
                zero.per_mailbox,
                zero.gmail_units_per_second,
                zero.max_attempts
            ),
            (1, 1, 1, 1)
        );
        let default = LimitConfig::default().clamped();
        assert_eq!(default.max_in_flight, default_max_in_flight());
    }

    #[test]
    fn inline_secret_refused_for_real_endpoints() {
        let text = LAB.replace(
            "endpoints = { login = \"http://127.0.0.1:9\", graph = \"http://127.0.0.1:9\" }",
            "",
        );
        let err = Config::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("only allowed for the lab"), "{err}");
    }

    #[test]
    fn store_url_with_a_password_or_not_postgres_is_refused_and_never_echoed() {
        let err = Config::parse(
            "[store]\nurl = \"postgres://soc:hunter2@db.example/clawback\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("password_file"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = Config::parse(
            "[store]\nurl = \"mysql://db.example/clawback\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("only PostgreSQL"), "{err}");
        let c = Config::parse(
            "[store]\nurl = \"postgres://soc@db.example/clawback\"\npassword_file = \"pw\"\n",
            Path::new("/etc/clawback/c.toml"),
        )
        .expect("parse");
        assert_eq!(
            c.store.password_file.as_deref(),
            Some(Path::new("/etc/clawback/pw")),
            "relative to the config file"
        );
    }
}
