//! The engine's working core: one [`Engine`] per process holds the config, the store and one
//! provider client per tenant. The CLI calls it directly; the TUI reaches it through the engine
//! task (`engine::service`). Plans are built in `planner`, jobs run in `execute`.

use super::audit::{AuditEntry, AuditRecord, os_user};
use super::roles::{Capability, Denied, authorize};
use crate::config::Config;
use crate::model::Role;
use crate::provider::{ProviderClient, ProviderError};
use crate::store::jobs::LeaseHolder;
use crate::store::{Store, StoreError};
use chrono::Utc;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("unknown tenant {name:?}; configured tenants: {known}")]
    UnknownTenant { name: String, known: String },
    #[error("job {0} does not exist (see `clawback jobs list`)")]
    UnknownJob(i64),
    #[error(
        "job {job} is being run by {holder}; wait for it to finish, or `clawback jobs cancel {job}` (that process stops before its next batch)"
    )]
    JobLeased { job: i64, holder: String },
    #[error("plan {plan} refused: {reason}; make a new plan with `clawback plan`")]
    PlanRefused { plan: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// Who is acting, as written into audit entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub role: Role,
    pub os_user: String,
}

impl Operator {
    /// The operator a config names (its role), with the OS account of this process.
    pub fn from_config(config: &Config) -> Operator {
        let os_user = os_user();
        Operator {
            name: config
                .operator
                .name
                .clone()
                .unwrap_or_else(|| os_user.clone()),
            role: config.operator.role,
            os_user,
        }
    }

    /// An audit record in this operator's name, stamped now (counts and detail empty).
    pub fn record(&self, section: &str, action: &str) -> AuditRecord {
        AuditRecord {
            at: Utc::now(),
            os_user: self.os_user.clone(),
            operator: self.name.clone(),
            role: self.role,
            section: section.to_string(),
            action: action.to_string(),
            plan_digest: None,
            job_id: None,
            counts: BTreeMap::new(),
            detail: serde_json::Value::Null,
        }
    }

    /// Checks this operator's role; a refusal is audited in `store` (section `denied`) and
    /// returned. For front ends that work on the store without an [`Engine`].
    pub fn authorize(&self, store: &mut Store, capability: Capability) -> Result<(), EngineError> {
        match authorize(self.role, capability) {
            Ok(()) => Ok(()),
            Err(denied) => {
                let mut record = self.record(
                    "denied",
                    &format!("{}_denied", capability.describe().replace(' ', "_")),
                );
                record.detail = serde_json::json!({
                    "attempted": capability.describe(),
                    "needed": denied.needed.as_str(),
                });
                store.audit_append(record)?;
                Err(EngineError::Denied(denied))
            }
        }
    }
}

/// The engine: config, store and provider clients.
pub struct Engine {
    pub config: Config,
    pub operator: Operator,
    store: Arc<Mutex<Store>>,
    clients: BTreeMap<String, ProviderClient>,
    /// This process as the holder of job leases (one process runs a job at a time).
    pub(crate) lease: LeaseHolder,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("operator", &self.operator)
            .field("tenants", &self.clients.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Engine {
    /// Builds a client per configured tenant (reading secrets now, so a bad file is reported
    /// before any work) over an opened store.
    pub fn new(config: Config, mut store: Store) -> Result<Engine, EngineError> {
        if config.audit.head_file.is_some() {
            store.set_head_file(config.audit.head_file.clone());
        }
        let mut clients = BTreeMap::new();
        let kept_tokens = store
            .data_dir()
            .filter(|_| config.auth.token_cache)
            .map(|dir| Arc::new(crate::provider::token_file::TokenFile::in_dir(dir)));
        for tenant in &config.tenants {
            let client = ProviderClient::new(&config, tenant)?;
            if let Some(file) = &kept_tokens {
                client.keep_tokens_in(file.clone());
            }
            clients.insert(tenant.name.clone(), client);
        }
        let operator = Operator::from_config(&config);
        Ok(Engine {
            config,
            operator,
            store: Arc::new(Mutex::new(store)),
            clients,
            lease: LeaseHolder::this_process(),
        })
    }

    /// The store, locked. Hold it only for short synchronous work, never across an `.await`.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store itself, for work handed to a blocking thread (a long write that must not
    /// hold up the async task meanwhile).
    pub(crate) fn store_handle(&self) -> Arc<Mutex<Store>> {
        Arc::clone(&self.store)
    }

    /// The client of a tenant.
    pub fn client(&self, tenant: &str) -> Result<&ProviderClient, EngineError> {
        self.clients
            .get(tenant)
            .ok_or_else(|| EngineError::UnknownTenant {
                name: tenant.to_string(),
                known: self.tenant_names().join(", "),
            })
    }

    /// Configured tenant names.
    pub fn tenant_names(&self) -> Vec<String> {
        self.clients.keys().cloned().collect()
    }

    /// Every client.
    pub fn clients(&self) -> impl Iterator<Item = &ProviderClient> {
        self.clients.values()
    }

    /// Appends an audit entry in the operator's name.
    pub fn audit(
        &self,
        section: &str,
        action: &str,
        plan_digest: Option<&str>,
        job_id: Option<i64>,
        counts: BTreeMap<String, u64>,
        detail: serde_json::Value,
    ) -> Result<AuditEntry, EngineError> {
        self.audit_record(self.new_record(section, action, plan_digest, job_id, counts, detail))
    }

    /// An audit record by this operator (appended by [`Engine::audit_record`], or with other
    /// store changes in one transaction).
    pub(crate) fn new_record(
        &self,
        section: &str,
        action: &str,
        plan_digest: Option<&str>,
        job_id: Option<i64>,
        counts: BTreeMap<String, u64>,
        detail: serde_json::Value,
    ) -> crate::store::chain::AuditRecord {
        let mut record = self.operator.record(section, action);
        record.plan_digest = plan_digest.map(str::to_string);
        record.job_id = job_id.map(|j| j.to_string());
        record.counts = counts;
        record.detail = detail;
        record
    }

    /// Appends `record` to the audit log.
    pub(crate) fn audit_record(
        &self,
        record: crate::store::chain::AuditRecord,
    ) -> Result<AuditEntry, EngineError> {
        Ok(self.store().audit_append(record)?)
    }

    /// Verifies the audit chain, against the configured head file too (`[audit] head_file`).
    pub fn verify_audit(
        &self,
    ) -> Result<Result<u64, crate::store::chain::AuditBreak>, EngineError> {
        let heads = match &self.config.audit.head_file {
            Some(path) if path.exists() => {
                crate::store::audit::read_head_file(path).map_err(EngineError::Invalid)?
            }
            _ => Vec::new(),
        };
        Ok(self.store().audit_verify_heads(&heads)?)
    }

    /// Checks the operator's role; a refusal is audited (section `denied`) and returned.
    pub fn authorize(&self, capability: Capability) -> Result<(), EngineError> {
        self.operator.authorize(&mut self.store(), capability)
    }
}
