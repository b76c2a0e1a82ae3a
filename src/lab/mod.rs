//! The lab: a local emulator of the Microsoft identity platform, Microsoft Graph v1.0 (mail,
//! users, groups, domains, `$batch`), Google OAuth (service-account JWT bearer), the Gmail API v1
//! and the Admin SDK Directory API, on loopback only (DESIGN §4).
//!
//! Clients never know they talk to it: only base URLs differ. Everything the lab does is visible
//! under `/_lab/` so tests verify side effects through the lab, not through our own client.

pub mod control;
pub mod demo;
pub mod directory;
pub mod errors;
pub mod generate;
pub mod gmail;
pub mod graph;
pub mod keys;
pub mod limits;
pub mod mime;
pub mod oauth_google;
pub mod oauth_ms;
pub mod scenario;
pub mod state;
pub mod tokens;

use crate::config::{Config, EndpointConfig, MicrosoftAuth, OperatorConfig, TenantConfig};
use crate::model::{Role, TenantKind};
use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
pub use limits::RetryAdvice;
use limits::{LimitOptions, Limits, Throttle, ThrottleKind};
use scenario::Scenario;
use state::LabState;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokens::TokenIssuer;

/// Knobs of a running lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub latency: Duration,
    pub jitter: Duration,
    /// Concurrent service slots per tenant (S).
    pub capacity: usize,
    /// Lifetime of issued access tokens.
    pub token_ttl: Duration,
    /// Probability that a provider request fails with 5xx or a dropped connection.
    pub fault_rate: f64,
    /// Seed for jitter and fault injection.
    pub seed: u64,
    /// Gmail quota units per user per second.
    pub gmail_units_per_sec: f64,
    /// How `Retry-After` is worded: whole seconds like the real services (default), or the
    /// lab's sub-second pace for experiments and tests that throttle on purpose.
    pub retry_advice: RetryAdvice,
    /// Service time of Google's token endpoint (`POST /token`): zero by default. A real token
    /// request crosses the internet to `oauth2.googleapis.com`, tens of milliseconds each,
    /// which is what shows whether a client signs while earlier tokens are still on their way.
    pub token_latency: Duration,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            capacity: 256,
            token_ttl: Duration::from_secs(3599),
            fault_rate: 0.0,
            seed: 1,
            gmail_units_per_sec: 250.0,
            retry_advice: RetryAdvice::WholeSeconds,
            token_latency: Duration::ZERO,
        }
    }
}

/// Counters reported by `/_lab/stats`.
#[derive(Default)]
pub struct Stats {
    /// Requests served, by `METHOD route-template`.
    pub requests: Mutex<BTreeMap<String, u64>>,
    /// 429 (and Gmail 403 rate-limit) responses issued, by which limit.
    pub throttled: Mutex<BTreeMap<String, u64>>,
    /// Graph mail requests (`$batch` steps each) by the id type they asked for: `immutable`
    /// (`Prefer: IdType="ImmutableId"`) or `regular`.
    pub graph_id_types: Mutex<BTreeMap<String, u64>>,
    pub in_flight: AtomicUsize,
    /// Google token requests being answered now, and the most at once (for tests and
    /// benches in the lab's process; not in `/_lab/stats`).
    pub tokens_in_flight: AtomicUsize,
    pub tokens_in_flight_max: AtomicUsize,
    pub faults_5xx: AtomicU64,
    pub faults_dropped: AtomicU64,
}

/// One running lab world.
pub struct Lab {
    state: Mutex<LabState>,
    pub options: LabOptions,
    pub limits: Limits,
    pub tokens: TokenIssuer,
    pub stats: Stats,
    pub scenario_name: String,
    base_url: OnceLock<String>,
    /// The fault rate in force (`f64` bits): starts at `options.fault_rate`, changeable while
    /// the lab runs (a test syncs a clean trace, then turns faults on).
    fault_rate: AtomicU64,
    /// Graph message trace: requests per tenant in the throttling window.
    pub trace_windows: graph::tracing::TraceWindows,
    /// Answers to lose on purpose, in order (see [`Lab::lose_answer`]).
    lost_answers: Mutex<Vec<LostAnswer>>,
}

/// A scripted fault: the next provider POST whose path contains `path_contains` runs, then its
/// answer is lost (the connection drops) — after `then`, a user's move, is applied. The exact
/// case a client cannot see: its change landed and someone acted on the copy before it looked.
#[derive(Debug, Clone)]
pub struct LostAnswer {
    pub path_contains: String,
    pub then: Option<UserMove>,
}

/// A move a mailbox's user makes (as `POST /_lab/user-action` does).
#[derive(Debug, Clone)]
pub struct UserMove {
    pub tenant: String,
    pub mailbox: String,
    pub message_id: String,
    pub folder: crate::model::Folder,
}

/// The lab as handlers share it.
pub type SharedLab = Arc<Lab>;

impl Lab {
    /// Builds a lab from a scenario.
    pub fn new(scenario: &Scenario, options: LabOptions) -> Result<Lab, scenario::ScenarioError> {
        let state = scenario.build()?;
        let tenants = state.tenants.len();
        let secret: [u8; 32] = rand::random();
        Ok(Lab {
            limits: Limits::new(
                LimitOptions {
                    latency: options.latency,
                    jitter: options.jitter,
                    capacity: options.capacity,
                    gmail_units_per_sec: options.gmail_units_per_sec,
                    seed: options.seed,
                    retry_advice: options.retry_advice,
                },
                tenants,
            ),
            state: Mutex::new(state),
            tokens: TokenIssuer::new(secret.to_vec()),
            stats: Stats::default(),
            scenario_name: scenario.name.clone(),
            base_url: OnceLock::new(),
            fault_rate: AtomicU64::new(options.fault_rate.to_bits()),
            trace_windows: Default::default(),
            lost_answers: Mutex::new(Vec::new()),
            options,
        })
    }

    /// Scripts a lost answer (see [`LostAnswer`]).
    pub fn lose_answer(&self, lost: LostAnswer) {
        self.lost_answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(lost);
    }

    /// The scripted lost answer for a POST to `path`, taken off the script.
    fn take_lost_answer(&self, path: &str) -> Option<LostAnswer> {
        let mut script = self.lost_answers.lock().unwrap_or_else(|p| p.into_inner());
        let i = script
            .iter()
            .position(|l| path.contains(&l.path_contains))?;
        Some(script.remove(i))
    }

    /// The fault rate in force (see [`LabOptions::fault_rate`]).
    pub fn fault_rate(&self) -> f64 {
        f64::from_bits(self.fault_rate.load(Ordering::Relaxed))
    }

    /// Changes the fault rate from now on.
    pub fn set_fault_rate(&self, rate: f64) {
        self.fault_rate
            .store(rate.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// Connections dropped after the handler ran (the provider acted; the client cannot know).
    pub fn faults_dropped(&self) -> u64 {
        self.stats.faults_dropped.load(Ordering::Relaxed)
    }

    /// Locks the world. A poisoned lock (a handler panicked) is recovered: the state is plain
    /// data and every mutation is a single step.
    pub fn state(&self) -> MutexGuard<'_, LabState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Base URL once bound (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> &str {
        self.base_url
            .get()
            .map(String::as_str)
            .unwrap_or("http://127.0.0.1")
    }

    /// Counts a Graph mail request by the id type it asked for.
    pub fn note_id_type(&self, immutable: bool) {
        let key = if immutable { "immutable" } else { "regular" };
        if let Ok(mut m) = self.stats.graph_id_types.lock() {
            *m.entry(key.to_string()).or_default() += 1;
        }
    }

    /// Counts a throttling response.
    pub fn note_throttle(&self, throttle: &Throttle) {
        let key = match throttle.kind {
            ThrottleKind::Capacity => "capacity",
            ThrottleKind::MailboxConcurrency => "graph_mailbox_concurrency",
            ThrottleKind::MailboxWindow => "graph_mailbox_window",
            ThrottleKind::GmailUserQuota => "gmail_user_quota",
            ThrottleKind::GmailConcurrency => "gmail_user_concurrency",
        };
        if let Ok(mut m) = self.stats.throttled.lock() {
            *m.entry(key.to_string()).or_default() += 1;
        }
    }
}

/// Assembles every route of the lab.
pub fn router(lab: SharedLab) -> Router {
    // The route table is the same for every lab: built once (a Gmail batch dispatches its
    // parts through a router of its own lab, and building the table — every route inserted
    // into the path tree — was 15 % of the lab's CPU in a 10,000-mailbox retraction).
    static ROUTES: std::sync::OnceLock<Router<SharedLab>> = std::sync::OnceLock::new();
    ROUTES
        .get_or_init(|| {
            Router::new()
                .merge(oauth_google::routes())
                .merge(gmail::routes())
                .merge(directory::routes())
                .merge(oauth_ms::routes())
                .merge(graph::routes())
                .merge(control::routes())
        })
        .clone()
        .layer(axum::middleware::from_fn_with_state(
            lab.clone(),
            count_and_inject,
        ))
        .with_state(lab)
}

/// Counts requests per route and in flight, and injects seeded faults on provider routes:
/// half as 5xx before the handler runs, half as a dropped connection after it ran (so the
/// client cannot know whether its change happened — the hard case for retries).
async fn count_and_inject(State(lab): State<SharedLab>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let key = format!("{} {}", request.method(), route);
    if let Ok(mut m) = lab.stats.requests.lock() {
        *m.entry(key).or_default() += 1;
    }
    let provider_route =
        !route.starts_with("/_lab") && !route.contains("token") && !route.contains("devicecode");
    if provider_route && lab.limits.chance(lab.fault_rate() / 2.0) {
        lab.stats.faults_5xx.fetch_add(1, Ordering::Relaxed);
        return if route.starts_with("/v1.0") {
            errors::graph(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "serviceNotAvailable",
                "The service is temporarily unavailable. Please retry.",
            )
        } else {
            errors::google(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "backendError",
                "global",
                "The service is currently unavailable.",
            )
        };
    }
    let scripted = (provider_route && request.method() == axum::http::Method::POST)
        .then(|| lab.take_lost_answer(request.uri().path()))
        .flatten();
    lab.stats.in_flight.fetch_add(1, Ordering::AcqRel);
    let response = next.run(request).await;
    lab.stats.in_flight.fetch_sub(1, Ordering::AcqRel);
    if let Some(lost) = scripted {
        if let Some(m) = &lost.then
            && let Err(e) = control::user_move(&lab, m, None)
        {
            tracing::warn!("scripted user move not made: {e}");
        }
        lab.stats.faults_dropped.fetch_add(1, Ordering::Relaxed);
        return dropped_connection(response);
    }
    if provider_route && lab.limits.chance(lab.fault_rate() / 2.0) {
        lab.stats.faults_dropped.fetch_add(1, Ordering::Relaxed);
        return dropped_connection(response);
    }
    response
}

/// A response whose body fails after the headers: hyper then closes the connection mid-message,
/// which the client sees as a dropped connection.
fn dropped_connection(response: Response) -> Response {
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(
        axum::http::header::CONTENT_LENGTH,
        axum::http::HeaderValue::from_static("1024"),
    );
    let stream = futures_util::stream::once(async {
        Err::<axum::body::Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "lab fault injection: connection dropped",
        ))
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Why the lab could not start.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("--addr {0}: the lab binds loopback only (127.0.0.0/8 or [::1]); use e.g. 127.0.0.1:0")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    #[error("{path}: cannot write: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the config written for the lab does not read back: {0}")]
    Config(String),
}

/// A lab serving HTTP on a loopback port.
pub struct LabServer {
    pub addr: SocketAddr,
    pub lab: SharedLab,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LabServer {
    /// Binds `addr` (loopback only; port 0 picks a free port) and serves the scenario.
    pub async fn start(
        scenario: &Scenario,
        options: LabOptions,
        addr: SocketAddr,
    ) -> Result<LabServer, LabError> {
        if !addr.ip().is_loopback() {
            return Err(LabError::NotLoopback(addr));
        }
        let lab = Arc::new(Lab::new(scenario, options)?);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| LabError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| LabError::Bind { addr, source })?;
        let _ = lab.base_url.set(format!("http://{addr}"));
        let app = router(lab.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(LabServer {
            addr,
            lab,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for the server task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// A clawback config whose tenants point at this lab with working credentials.
    /// Secret files are written beside `path` with mode 0600.
    pub fn write_config(&self, path: &Path) -> Result<Config, LabError> {
        write_config(&self.lab, &self.base_url(), path)
    }

    /// [`LabServer::write_config`] for a config that outlives this lab: its header says who
    /// wrote it and the exact command (`restart`) that serves the same lab at the same address
    /// again, so the config never silently points at a dead port.
    pub fn write_config_restartable(
        &self,
        path: &Path,
        written_by: &str,
        restart: &str,
    ) -> Result<Config, LabError> {
        write_config_with(
            &self.lab,
            &self.base_url(),
            path,
            &format!(
                "written by {written_by}.\n# When this lab is no longer running, start the same lab at the same address with\n#   {restart}\n# (a fresh lab: copies moved since are back where the scenario puts them)"
            ),
        )
    }

    /// `clawback lab serve …` that serves `scenario` (`demo` or a file) like this lab, at its
    /// address.
    pub fn serve_command(&self, scenario: &str, seed: u64) -> String {
        let o = &self.lab.options;
        let mut command = format!(
            "clawback lab serve --scenario {scenario} --seed {seed} --addr {}",
            self.addr
        );
        if !o.latency.is_zero() {
            command.push_str(&format!(" --latency-ms {}", o.latency.as_millis()));
        }
        if !o.jitter.is_zero() {
            command.push_str(&format!(" --jitter-ms {}", o.jitter.as_millis()));
        }
        if o.capacity != LabOptions::default().capacity {
            command.push_str(&format!(" --capacity {}", o.capacity));
        }
        command
    }
}

impl Drop for LabServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Writes `path` (a clawback config for this lab) and its secret files beside it, and returns
/// the config as `Config::load` reads it back.
///
/// The file names its secrets relative to itself (they lie beside it), since a config's
/// relative paths are resolved against the config's own directory: a relative `path` such as
/// `dir/lab.toml` would otherwise name `dir/dir/lab.contoso.secret`. The tenants' client limits
/// fit the lab: never more requests in flight than its capacity S, which a client sized for
/// the real services (256) would overrun into a stream of 429s.
pub fn write_config(lab: &Lab, base_url: &str, path: &Path) -> Result<Config, LabError> {
    write_config_with(
        lab,
        base_url,
        path,
        "written by `clawback lab serve --write-config`",
    )
}

/// [`write_config`] with `origin` (who wrote it, and how to restart the lab) in the header.
fn write_config_with(
    lab: &Lab,
    base_url: &str,
    path: &Path,
    origin: &str,
) -> Result<Config, LabError> {
    let werr = |p: &Path, source| LabError::Write {
        path: p.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "lab".into());
    let limits = crate::config::LimitConfig {
        max_in_flight: crate::config::LimitConfig::default()
            .max_in_flight
            .min(lab.options.capacity.max(1)),
        ..Default::default()
    };
    let mut tenants = Vec::new();
    let state = lab.state();
    for t in &state.tenants {
        let domains: Vec<String> = t.domains.iter().map(|d| d.name.clone()).collect();
        // What an admin exports from Exchange (`LitigationHoldEnabled`): the lab knows it.
        let held: Vec<String> = t
            .users
            .values()
            .filter(|u| u.on_hold)
            .map(|u| u.address.clone())
            .collect();
        match t.kind {
            TenantKind::Microsoft365 => {
                let name = format!("{stem}.{}.secret", t.name);
                let secret_path = dir.join(&name);
                crate::secret::write_private_file(
                    &secret_path,
                    t.credentials.client_secret.as_bytes(),
                )
                .map_err(|e| werr(&secret_path, e))?;
                tenants.push(TenantConfig {
                    name: t.name.clone(),
                    kind: t.kind,
                    cloud: t.cloud,
                    domains,
                    tenant_id: Some(t.tenant_id.clone()),
                    client_id: Some(t.credentials.client_id.clone()),
                    auth: MicrosoftAuth::ClientSecret,
                    client_secret_file: Some(name.into()),
                    client_secret_env: None,
                    client_secret: None,
                    certificate_file: None,
                    private_key_file: None,
                    service_account_file: None,
                    service_account_env: None,
                    admin_user: None,
                    report_mailboxes: t.report_mailboxes.clone(),
                    held_mailboxes: held.clone(),
                    allow_insecure_http: false,
                    endpoints: EndpointConfig {
                        login: Some(base_url.to_string()),
                        graph: Some(base_url.to_string()),
                        ..Default::default()
                    },
                    limits: limits.clone(),
                });
            }
            TenantKind::GoogleWorkspace => {
                let name = format!("{stem}.{}.service-account.json", t.name);
                let sa_path = dir.join(&name);
                let sa = serde_json::json!({
                    "type": "service_account",
                    "project_id": format!("{}-lab", t.name),
                    "private_key_id": "lab-key-1",
                    "private_key": keys::GOOGLE_SA_PRIVATE_KEY,
                    "client_email": t.credentials.client_email,
                    "client_id": t.credentials.client_id,
                    "auth_uri": format!("{base_url}/o/oauth2/auth"),
                    "token_uri": format!("{base_url}/token"),
                });
                let text = serde_json::to_string_pretty(&sa).unwrap_or_default();
                crate::secret::write_private_file(&sa_path, text.as_bytes())
                    .map_err(|e| werr(&sa_path, e))?;
                tenants.push(TenantConfig {
                    name: t.name.clone(),
                    kind: t.kind,
                    cloud: t.cloud,
                    domains,
                    tenant_id: None,
                    client_id: None,
                    // Not written (see `without_microsoft_auth`): a Microsoft setting.
                    auth: MicrosoftAuth::ClientSecret,
                    client_secret_file: None,
                    client_secret_env: None,
                    client_secret: None,
                    certificate_file: None,
                    private_key_file: None,
                    service_account_file: Some(name.into()),
                    service_account_env: None,
                    admin_user: t.admin_user.clone().or_else(|| {
                        t.users
                            .values()
                            .find(|u| u.is_admin)
                            .map(|u| u.address.clone())
                    }),
                    report_mailboxes: t.report_mailboxes.clone(),
                    held_mailboxes: held.clone(),
                    allow_insecure_http: false,
                    endpoints: EndpointConfig {
                        token: Some(format!("{base_url}/token")),
                        gmail: Some(base_url.to_string()),
                        directory: Some(base_url.to_string()),
                        ..Default::default()
                    },
                    limits: limits.clone(),
                });
            }
        }
    }
    drop(state);
    let config = Config {
        operator: OperatorConfig {
            name: Some("lab-operator".into()),
            role: Role::Admin,
        },
        tenants,
        ..Default::default()
    };
    let body = without_microsoft_auth(&toml::to_string_pretty(&config).unwrap_or_default());
    let text = format!(
        "# clawback config for the lab at {base_url} (scenario {:?}, capacity {} per tenant), {origin}.\n# Secrets are in the files beside this one (mode 0600). Lab credentials protect nothing.\n\n{body}",
        lab.scenario_name, lab.options.capacity
    );
    crate::secret::write_private_file(path, text.as_bytes()).map_err(|e| werr(path, e))?;
    // Exactly what a later `--config` reads: secret paths resolved against the file's folder.
    Config::parse(&text, path).map_err(|e| LabError::Config(e.to_string()))
}

/// The config text without `auth` on Google Workspace tenants: it says how a Microsoft tenant
/// signs in, and `auth = "client_secret"` beside `service_account_file` only misleads.
fn without_microsoft_auth(text: &str) -> String {
    let Ok(mut doc) = text.parse::<toml_edit::DocumentMut>() else {
        return text.to_string();
    };
    if let Some(tenants) = doc
        .get_mut("tenant")
        .and_then(toml_edit::Item::as_array_of_tables_mut)
    {
        for t in tenants.iter_mut() {
            if t.get("kind").and_then(toml_edit::Item::as_str) == Some("google_workspace") {
                t.remove("auth");
            }
        }
    }
    doc.to_string()
}
