//! The built-in `demo` scenario. (Filled by the scenario work: about 200 + 100 mailboxes,
//! a phishing campaign, replies and forwards, a hold, an ungranted domain, phish reports.)

use super::scenario::{Scenario, ScenarioDomain, ScenarioTenant};
use crate::model::TenantKind;

pub fn build(seed: u64) -> Scenario {
    Scenario {
        name: "demo".into(),
        seed,
        tenants: vec![ScenarioTenant {
            name: "contoso".into(),
            kind: TenantKind::Microsoft365,
            tenant_id: None,
            domains: vec![ScenarioDomain {
                name: "contoso.com".into(),
                granted: true,
            }],
            client_id: None,
            client_secret: None,
            granted: None,
            admin_user: None,
            users: vec![],
            groups: vec![],
            messages: vec![],
        }],
    }
}
