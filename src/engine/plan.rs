//! Retraction plans (DESIGN §2): the resolved list of `(tenant, mailbox, copy, action)` items
//! for one request, plus what cannot be acted on and why. Plans are versioned JSON with a
//! SHA-256 digest over their canonical form, so a saved plan can be reviewed, attached to a
//! ticket and applied later — and a plan edited after review is refused.

pub use crate::model::canonical_json;
use crate::model::{FailureReason, Folder, RetractAction, TenantKind, Trigger};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The plan file format version this build writes and reads.
pub const PLAN_VERSION: u32 = 1;

/// What the operator (or a policy) asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetractRequest {
    /// Internet Message-IDs of the messages to retract (bracketed).
    #[serde(default)]
    pub message_ids: Vec<String>,
    /// The search query the messages came from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Only messages delivered in these tenants; empty = every configured tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// Only these recipients (addresses); empty = every recipient.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<String>,
    /// Recipients left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Conversation depth: 0 = the message itself, n = n levels of replies and forwards.
    #[serde(default)]
    pub depth: u8,
    pub action: RetractAction,
    pub trigger: Trigger,
    /// Free text: ticket number, incident, why.
    #[serde(default)]
    pub reason: String,
}

/// One copy to act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    pub tenant: String,
    pub kind: TenantKind,
    pub mailbox: String,
    pub internet_message_id: String,
    /// Provider id of the copy when the plan was made (Graph ids change on move; the engine
    /// locates the copy again if this one is gone).
    pub copy_id: String,
    /// Where the copy was when the plan was made: restore puts it back here.
    pub folder: Folder,
    pub read: bool,
    /// Conversation depth at which this message was reached.
    pub depth: u8,
    /// The action asked for.
    pub action: RetractAction,
    /// The action the provider will perform (Soft Delete on Gmail → Trash).
    pub effective_action: RetractAction,
    /// Said per item when the effective action differs, e.g. Gmail's missing soft delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Set when planning could not reach the copy (throttled, 5xx, timeout): the item stays in
    /// the plan and the job locates the copy when it runs (`copy_id` is empty, `folder` is
    /// not known yet). The provider's answer is kept here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
}

/// A recipient or copy the plan cannot act on, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub address: String,
    pub internet_message_id: String,
    pub reason: FailureReason,
    /// The provider's code or our explanation.
    #[serde(default)]
    pub detail: String,
}

/// A sealed plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub operator: String,
    pub request: RetractRequest,
    pub items: Vec<PlanItem>,
    pub skipped: Vec<SkippedItem>,
    /// `sha256:<hex>` over the canonical JSON of every other field (but the seal).
    pub digest: String,
    /// `hmac-sha256:<hex>` of the digest under the store's plan key ([`Plan::seal_with`]): only
    /// clawback with access to the store that made the plan can seal it, so a plan edited
    /// elsewhere (even with its digest recomputed) is refused when applied. Empty until sealed.
    #[serde(default)]
    pub seal: String,
}

/// Why a plan file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{path}:{line}:{column}: not a clawback plan: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{path}: plan version {found} is not supported (this clawback reads version {PLAN_VERSION})"
    )]
    Version { path: String, found: u32 },
    #[error(
        "{path}: plan digest does not match its content (recorded {recorded}, computed {computed}); the plan was changed after it was made — make a new plan"
    )]
    Digest {
        path: String,
        recorded: String,
        computed: String,
    },
}

/// Counts shown before confirmation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanCounts {
    pub copies: usize,
    pub mailboxes: usize,
    pub messages: usize,
    pub by_action: BTreeMap<RetractAction, usize>,
    pub by_tenant: BTreeMap<String, usize>,
    pub skipped_by_reason: BTreeMap<FailureReason, usize>,
    /// Items whose effective action differs from the one asked for.
    pub mapped: usize,
    /// Items planning could not reach (located again when the job runs).
    pub unresolved: usize,
    /// Hard Delete items in mailboxes on hold (succeed for the user, kept for admins).
    pub retained_by_hold: usize,
}

impl Plan {
    /// Builds and seals a plan.
    pub fn new(
        operator: impl Into<String>,
        request: RetractRequest,
        items: Vec<PlanItem>,
        skipped: Vec<SkippedItem>,
    ) -> Plan {
        let mut plan = Plan {
            version: PLAN_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            created_at: Utc::now(),
            operator: operator.into(),
            request,
            items,
            skipped,
            digest: String::new(),
            seal: String::new(),
        };
        plan.digest = plan.compute_digest();
        plan
    }

    /// `sha256:<hex>` of the canonical JSON (sorted keys, no whitespace) of all fields but the
    /// digest and the seal.
    pub fn compute_digest(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(obj) = value.as_object_mut() {
            obj.remove("digest");
            obj.remove("seal");
        }
        let canonical = canonical_json(&value);
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        )
    }

    /// The seal of this plan's digest under `key`.
    fn seal_for(&self, key: &[u8]) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
            Ok(m) => m,
            // HMAC takes keys of any length; this arm is unreachable in practice.
            Err(_) => return String::new(),
        };
        mac.update(self.digest.as_bytes());
        format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Recomputes the digest and seals it under `key` (the store's plan key).
    pub fn seal_with(&mut self, key: &[u8]) {
        self.digest = self.compute_digest();
        self.seal = self.seal_for(key);
    }

    /// Whether the digest matches the content and the seal matches the digest under `key`
    /// (compared in constant time).
    pub fn seal_matches(&self, key: &[u8]) -> bool {
        if self.digest != self.compute_digest() || self.seal.is_empty() {
            return false;
        }
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            return false;
        };
        mac.update(self.digest.as_bytes());
        let Some(given) = self
            .seal
            .strip_prefix("hmac-sha256:")
            .and_then(|h| hex::decode(h).ok())
        else {
            return false;
        };
        mac.verify_slice(&given).is_ok()
    }

    /// Parses a plan file and checks its version and digest.
    pub fn from_json(text: &str, path: &str) -> Result<Plan, PlanError> {
        // Read the version first so an old or future plan gets the version message, not a
        // field error.
        let probe: serde_json::Value =
            serde_json::from_str(text).map_err(|e| PlanError::Parse {
                path: path.to_string(),
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            })?;
        if let Some(found) = probe.get("version").and_then(|v| v.as_u64())
            && found != u64::from(PLAN_VERSION)
        {
            return Err(PlanError::Version {
                path: path.to_string(),
                found: u32::try_from(found).unwrap_or(u32::MAX),
            });
        }
        let plan: Plan = serde_json::from_str(text).map_err(|e| PlanError::Parse {
            path: path.to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let computed = plan.compute_digest();
        if computed != plan.digest {
            return Err(PlanError::Digest {
                path: path.to_string(),
                recorded: plan.digest.clone(),
                computed,
            });
        }
        Ok(plan)
    }

    /// Pretty JSON for `--out plan.json`.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The counts per action, tenant and reason shown before confirmation.
    pub fn counts(&self) -> PlanCounts {
        let mut c = PlanCounts {
            copies: self.items.len(),
            ..Default::default()
        };
        let mut mailboxes = std::collections::BTreeSet::new();
        let mut messages = std::collections::BTreeSet::new();
        for item in &self.items {
            mailboxes.insert((item.tenant.as_str(), item.mailbox.as_str()));
            messages.insert(item.internet_message_id.as_str());
            *c.by_action.entry(item.effective_action).or_default() += 1;
            *c.by_tenant.entry(item.tenant.clone()).or_default() += 1;
            if item.effective_action != item.action {
                c.mapped += 1;
            }
            if item.unresolved.is_some() {
                c.unresolved += 1;
            }
            if item
                .note
                .as_deref()
                .is_some_and(|n| n.starts_with(super::planner::RETAINED_BY_HOLD))
            {
                c.retained_by_hold += 1;
            }
        }
        for s in &self.skipped {
            *c.skipped_by_reason.entry(s.reason).or_default() += 1;
        }
        c.mailboxes = mailboxes.len();
        c.messages = messages.len();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Plan {
        let request = RetractRequest {
            message_ids: vec!["<p@x>".into()],
            query: None,
            tenants: vec![],
            only: vec![],
            exclude: vec!["ceo@contoso.com".into()],
            depth: 1,
            action: RetractAction::SoftDelete,
            trigger: Trigger::Manual,
            reason: "INC-1".into(),
        };
        let item = |tenant: &str, kind, mailbox: &str| PlanItem {
            tenant: tenant.into(),
            kind,
            mailbox: mailbox.into(),
            internet_message_id: "<p@x>".into(),
            copy_id: "id1".into(),
            folder: Folder::Inbox,
            read: false,
            depth: 0,
            action: RetractAction::SoftDelete,
            effective_action: RetractAction::SoftDelete.effective_for(kind),
            note: None,
            unresolved: None,
        };
        Plan::new(
            "alice",
            request,
            vec![
                item("contoso", TenantKind::Microsoft365, "a@contoso.com"),
                item("fabrikam", TenantKind::GoogleWorkspace, "b@fabrikam.com"),
            ],
            vec![SkippedItem {
                tenant: None,
                address: "x@gmail.com".into(),
                internet_message_id: "<p@x>".into(),
                reason: FailureReason::External,
                detail: "outside the managed domains".into(),
            }],
        )
    }

    #[test]
    fn round_trips_and_verifies() {
        let plan = sample();
        let back = Plan::from_json(&plan.to_json_pretty(), "plan.json").expect("valid plan");
        assert_eq!(back, plan);
        let c = plan.counts();
        assert_eq!((c.copies, c.mailboxes, c.messages, c.mapped), (2, 2, 1, 1));
        assert_eq!(c.by_action.get(&RetractAction::Trash), Some(&1));
        assert_eq!(c.skipped_by_reason.get(&FailureReason::External), Some(&1));
    }

    #[test]
    fn edited_plan_is_refused() {
        let text = sample()
            .to_json_pretty()
            .replace("a@contoso.com", "ceo@contoso.com");
        let err = Plan::from_json(&text, "plan.json").expect_err("edited");
        assert!(err.to_string().contains("digest does not match"), "{err}");
    }

    #[test]
    fn a_seal_binds_the_content_to_the_key() {
        let key = [7u8; 32];
        let mut plan = sample();
        assert!(!plan.seal_matches(&key), "an unsealed plan passed");
        plan.seal_with(&key);
        assert!(plan.seal.starts_with("hmac-sha256:"), "{}", plan.seal);
        assert!(plan.seal_matches(&key));
        assert!(!plan.seal_matches(&[8u8; 32]), "another store's key passed");
        // Edited with the digest recomputed (anyone can): the seal no longer matches.
        let mut forged = plan.clone();
        forged.items[0].action = RetractAction::HardDelete;
        forged.digest = forged.compute_digest();
        assert!(!forged.seal_matches(&key));
        // The seal survives the file round trip and is not part of the digest.
        let back = Plan::from_json(&plan.to_json_pretty(), "p.json").expect("valid");
        assert!(back.seal_matches(&key));
    }

    #[test]
    fn wrong_version_and_garbage_are_named() {
        let text = sample()
            .to_json_pretty()
            .replace("\"version\": 1", "\"version\": 9");
        let err = Plan::from_json(&text, "p.json").expect_err("version");
        assert!(err.to_string().contains("plan version 9"), "{err}");
        let err = Plan::from_json("{\n  \"version\": 1,\n  oops", "p.json").expect_err("garbage");
        assert!(err.to_string().starts_with("p.json:3:"), "{err}");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[1,{"z":0,"y":1}],"c":"x"}}"#).expect("json");
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":"x","d":[1,{"y":1,"z":0}]},"b":1}"#
        );
    }
}
