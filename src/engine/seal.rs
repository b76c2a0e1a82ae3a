//! Plan integrity (issue 11): a plan is sealed with the store's key when it is made, and checked
//! before it becomes a job — sealed by this store, every item's action the one its request asks
//! for (per-provider mapping aside), every item's tenant configured with the kind it claims, and
//! the operator's role allowing every action in it. A refused plan is audited with the reason.

use super::core::{Engine, EngineError};
use super::plan::Plan;
use super::roles::Capability;
use std::collections::{BTreeMap, BTreeSet};

impl Engine {
    /// Seals `plan` with this store's plan key (the planner does this for every plan it makes).
    pub fn seal_plan(&self, plan: &mut Plan) -> Result<(), EngineError> {
        let key = self.store().plan_key()?;
        plan.seal_with(&key);
        Ok(())
    }

    /// Refuses (and audits) a plan that was not sealed by this store, whose items do not match
    /// its request, or whose actions the operator's role does not allow.
    pub fn check_plan(&self, plan: &Plan) -> Result<(), EngineError> {
        let key = self.store().plan_key()?;
        let mut problems: Vec<String> = Vec::new();
        if plan.digest != plan.compute_digest() {
            problems.push("its digest does not match its content".into());
        } else if !plan.seal_matches(&key) {
            problems.push(if plan.seal.is_empty() {
                "it is not sealed (made by an older clawback, or the seal was removed)".into()
            } else {
                "its seal does not match: it was changed outside clawback or made with another store"
                    .into()
            });
        }
        let request = plan.request.action;
        let mut mismatched = BTreeMap::<String, usize>::new();
        for item in &plan.items {
            let expected = request.effective_for(item.kind);
            if item.action != request || item.effective_action != expected {
                *mismatched
                    .entry(format!(
                        "{} (effective {}) under a {} request",
                        item.action.as_str(),
                        item.effective_action.as_str(),
                        request.as_str()
                    ))
                    .or_default() += 1;
            }
            if let Ok(client) = self.client(&item.tenant)
                && client.kind() != item.kind
            {
                *mismatched
                    .entry(format!(
                        "tenant {} given as {} but configured as {}",
                        item.tenant,
                        item.kind.as_str(),
                        client.kind().as_str()
                    ))
                    .or_default() += 1;
            }
        }
        for (what, n) in mismatched {
            problems.push(format!("{n} items: {what}"));
        }
        if !problems.is_empty() {
            let reason = problems.join("; ");
            self.audit(
                "retract",
                "plan_refused",
                Some(&plan.digest),
                None,
                BTreeMap::from([("copies".to_string(), plan.items.len() as u64)]),
                serde_json::json!({
                    "plan": plan.id,
                    "action": request.as_str(),
                    "reason": reason,
                }),
            )?;
            return Err(EngineError::PlanRefused {
                plan: plan.id.clone(),
                reason,
            });
        }
        // Every action the plan would take, not only the one its request names.
        let actions: BTreeSet<_> = std::iter::once(request)
            .chain(plan.items.iter().map(|i| i.action))
            .chain(plan.items.iter().map(|i| i.effective_action))
            .collect();
        for action in actions {
            self.authorize(Capability::Retract(action))?;
        }
        Ok(())
    }
}
