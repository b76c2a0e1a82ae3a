//! Operator roles (issues 5 and 11): `viewer` searches, views and exports (trace, jobs, metrics,
//! audit, policy); `responder` also fills the trace, plans, applies, resumes, cancels, retries,
//! restores and runs `watch` — except Hard Delete; `admin` may do everything, including Hard
//! Delete and policy changes. A refused attempt is answered with [`Denied`] and audited by the
//! caller.
//!
//! Roles guard against mistakes within a team that shares one config: they are read from the
//! config file the operator runs with. The security boundary is who can read the credentials
//! (the secret files and the store), not the role.

use crate::model::{RetractAction, Role};

/// Something an operator may try to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Search,
    ViewMetrics,
    /// Fill the mail trace (ingest files, sync from the providers).
    UpdateTrace,
    /// Build a plan (reads every mailbox a message reached).
    Plan,
    Retract(RetractAction),
    Restore,
    /// Stop a running job (its pending items stay pending).
    CancelJob,
    /// Run the automation (`watch`): its jobs are checked against their actions as well.
    Automate,
    EditPolicy,
}

impl Capability {
    /// The least role that holds this capability.
    pub fn least_role(self) -> Role {
        match self {
            Capability::Search | Capability::ViewMetrics => Role::Viewer,
            Capability::Retract(RetractAction::HardDelete) | Capability::EditPolicy => Role::Admin,
            Capability::UpdateTrace
            | Capability::Plan
            | Capability::Retract(_)
            | Capability::Restore
            | Capability::CancelJob
            | Capability::Automate => Role::Responder,
        }
    }

    /// Name used in messages and audit entries.
    pub fn describe(self) -> String {
        match self {
            Capability::Search => "search".into(),
            Capability::ViewMetrics => "view metrics".into(),
            Capability::Retract(a) => format!("retract ({})", a.as_str()),
            Capability::UpdateTrace => "update the trace".into(),
            Capability::Plan => "plan a retraction".into(),
            Capability::Restore => "restore".into(),
            Capability::CancelJob => "cancel a job".into(),
            Capability::Automate => "run the automation".into(),
            Capability::EditPolicy => "change the auto-retract policy".into(),
        }
    }
}

/// A refusal, with what would have been needed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "denied: role {role} may not {what}; it needs role {needed} (set [operator] role in the config, or ask an admin)"
)]
pub struct Denied {
    pub role: Role,
    pub needed: Role,
    pub what: String,
}

/// Checks a role against a capability.
pub fn authorize(role: Role, capability: Capability) -> Result<(), Denied> {
    let needed = capability.least_role();
    if role >= needed {
        Ok(())
    } else {
        Err(Denied {
            role,
            needed,
            what: capability.describe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_matrix() {
        use Capability::*;
        assert!(authorize(Role::Viewer, Search).is_ok());
        assert!(authorize(Role::Viewer, Retract(RetractAction::Junk)).is_err());
        assert!(authorize(Role::Responder, Retract(RetractAction::SoftDelete)).is_ok());
        let denied = authorize(Role::Responder, Retract(RetractAction::HardDelete))
            .expect_err("hard delete");
        assert_eq!(denied.needed, Role::Admin);
        assert!(denied.to_string().contains("retract (hard_delete)"));
        assert!(authorize(Role::Responder, EditPolicy).is_err());
        assert!(authorize(Role::Admin, Retract(RetractAction::HardDelete)).is_ok());
    }
}
