//! The auto-retract policy (DESIGN §6): a disposition × action matrix with the Post Delivery
//! and Phish Submission switches, stored versioned; every change is audited.

use super::core::{Engine, EngineError};
use super::roles::Capability;
use super::view::{PolicyMatrix, ResponseSwitch};
use crate::model::{RetractAction, TenantKind};
use std::collections::BTreeMap;

/// Default interval of the response cycles (15 minutes).
pub const DEFAULT_INTERVAL_SECS: u64 = 900;

impl PolicyMatrix {
    /// Version 0: every disposition No Action, both responses off.
    pub fn initial() -> PolicyMatrix {
        PolicyMatrix {
            version: 0,
            actions: BTreeMap::new(),
            post_delivery: ResponseSwitch {
                enabled: false,
                interval_secs: DEFAULT_INTERVAL_SECS,
                lookback_secs: super::view::default_lookback_secs(),
            },
            phish_submission: ResponseSwitch {
                enabled: false,
                interval_secs: DEFAULT_INTERVAL_SECS,
                lookback_secs: super::view::default_lookback_secs(),
            },
        }
    }
}

impl Engine {
    /// The policy in force (version 0 when none was ever saved).
    pub fn load_policy(&self) -> Result<PolicyMatrix, EngineError> {
        match self.store().policy_latest()? {
            None => Ok(PolicyMatrix::initial()),
            Some((version, json)) => {
                let mut p: PolicyMatrix = serde_json::from_str(&json).map_err(|e| {
                    EngineError::Invalid(format!("stored policy version {version}: {e}"))
                })?;
                p.version = version;
                Ok(p)
            }
        }
    }

    /// Saves `policy` as the next version (admin only; refused when `policy.version` is not the
    /// one in force, i.e. someone saved in between). Returns the saved policy and warnings
    /// (Soft Delete on a Google tenant is performed as Trash).
    pub fn save_policy(
        &self,
        mut policy: PolicyMatrix,
    ) -> Result<(PolicyMatrix, Vec<String>), EngineError> {
        self.authorize(Capability::EditPolicy)?;
        let current = self.load_policy()?;
        if policy.version != current.version {
            return Err(EngineError::Invalid(format!(
                "the policy changed since it was loaded (version {} is in force, the edit is of version {}); reload and edit again",
                current.version, policy.version
            )));
        }
        let mut warnings = Vec::new();
        let google = self
            .clients()
            .any(|c| c.kind() == TenantKind::GoogleWorkspace);
        for (d, a) in &policy.actions {
            if *a == RetractAction::SoftDelete && google {
                warnings.push(format!(
                    "{d}: Soft Delete is Microsoft only; Google tenants get Trash"
                ));
            }
        }
        policy.version = current.version + 1;
        let json = serde_json::to_string(&policy)
            .map_err(|e| EngineError::Invalid(format!("policy: {e}")))?;
        self.store()
            .policy_insert(policy.version, &json, &self.operator.name)?;
        let changes: BTreeMap<String, String> = policy
            .actions
            .iter()
            .filter(|(d, a)| current.action_for(**d) != **a)
            .map(|(d, a)| (d.as_str().to_string(), a.as_str().to_string()))
            .collect();
        self.audit(
            "policy",
            "policy_set",
            None,
            None,
            BTreeMap::from([("version".to_string(), policy.version)]),
            serde_json::json!({
                "changes": changes,
                "policy": policy,
                "warnings": warnings,
            }),
        )?;
        Ok((policy, warnings))
    }
}
