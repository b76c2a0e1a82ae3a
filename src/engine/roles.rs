//! Operator roles (issue 5): `viewer` searches and reads metrics; `responder` also retracts
//! (except Hard Delete) and restores; `admin` may do everything, including Hard Delete and policy
//! changes. A refused attempt is answered with [`Denied`] and audited by the caller.

use crate::model::{RetractAction, Role};

/// Something an operator may try to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Search,
    ViewMetrics,
    Retract(RetractAction),
    Restore,
    EditPolicy,
}

impl Capability {
    /// The least role that holds this capability.
    pub fn least_role(self) -> Role {
        match self {
            Capability::Search | Capability::ViewMetrics => Role::Viewer,
            Capability::Retract(RetractAction::HardDelete) | Capability::EditPolicy => Role::Admin,
            Capability::Retract(_) | Capability::Restore => Role::Responder,
        }
    }

    /// Name used in messages and audit entries.
    pub fn describe(self) -> String {
        match self {
            Capability::Search => "search".into(),
            Capability::ViewMetrics => "view metrics".into(),
            Capability::Retract(a) => format!("retract ({})", a.as_str()),
            Capability::Restore => "restore".into(),
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
