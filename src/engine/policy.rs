//! The auto-retract policy (DESIGN §6): a disposition × action matrix with the Post Delivery
//! and Phish Submission switches, stored versioned; every change is audited.

use super::core::{Engine, EngineError};
use super::roles::Capability;
use super::view::{PolicyMatrix, ResponseSwitch};
use crate::model::{RetractAction, TenantKind};
use std::collections::BTreeMap;

/// Default interval of the response cycles (15 minutes).
pub const DEFAULT_INTERVAL_SECS: u64 = 900;
/// Longest look-back of a response (90 days): the trace a watch cycle re-reads, and the window
/// of the guard's share-of-trace limit. Longer is refused at `policy set` / `import`.
pub const MAX_LOOKBACK_SECS: u64 = 90 * 86_400;
/// Longest interval of a response (1 day, as in the console).
pub const MAX_INTERVAL_SECS: u64 = 86_400;

/// `90d`, `24h`, `15m`, `45s`.
pub fn format_duration(secs: u64) -> String {
    if secs > 0 && secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs > 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs > 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

impl ResponseSwitch {
    /// Checks the interval and look-back against their bounds; `name` is `post_delivery` or
    /// `phish_submission`, as in the policy file.
    pub fn check(&self, name: &str) -> Result<(), String> {
        if self.interval_secs == 0 || self.interval_secs > MAX_INTERVAL_SECS {
            return Err(format!(
                "{name}.interval: {} is out of range: more than 0 and at most {} (1 day)",
                format_duration(self.interval_secs),
                format_duration(MAX_INTERVAL_SECS)
            ));
        }
        if self.lookback_secs == 0 || self.lookback_secs > MAX_LOOKBACK_SECS {
            return Err(format!(
                "{name}.lookback: {} is out of range: more than 0 and at most {} (90 days)",
                format_duration(self.lookback_secs),
                format_duration(MAX_LOOKBACK_SECS)
            ));
        }
        Ok(())
    }

    /// The look-back to use, in seconds: a policy stored before the bound existed may hold
    /// more, which is read as the bound (never overflowing a date).
    pub fn effective_lookback_secs(&self) -> i64 {
        self.lookback_secs.min(MAX_LOOKBACK_SECS) as i64
    }
}

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
        for (name, switch) in [
            ("post_delivery", &policy.post_delivery),
            ("phish_submission", &policy.phish_submission),
        ] {
            switch.check(name).map_err(EngineError::Invalid)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_bounds() {
        let mut s = PolicyMatrix::initial().post_delivery;
        assert_eq!(s.check("post_delivery"), Ok(()));
        s.lookback_secs = 99_999_999_999 * 86_400;
        let e = s.check("post_delivery").unwrap_err();
        assert!(
            e.starts_with("post_delivery.lookback: 99999999999d is out of range")
                && e.contains("at most 90d"),
            "{e}"
        );
        assert_eq!(s.effective_lookback_secs(), MAX_LOOKBACK_SECS as i64);
        s.lookback_secs = MAX_LOOKBACK_SECS;
        assert_eq!(s.check("post_delivery"), Ok(()));
        s.interval_secs = MAX_INTERVAL_SECS + 1;
        let e = s.check("phish_submission").unwrap_err();
        assert!(e.starts_with("phish_submission.interval: "), "{e}");
        s.interval_secs = 0;
        assert!(s.check("x").is_err());
    }
}
