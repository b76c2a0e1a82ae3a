//! What both providers' directory code shares: telling a domain's retract status from one read
//! as one of its mailboxes. How each provider finds its domains and the mailbox to read as
//! stays in its own `directory` module.

use super::DomainRetract;
use super::errors::{Operation, classify, error_code_message};
use super::http::SubRequest;
use super::scheduler::{Backend, call};

/// Whether mail of a domain can be retracted, for the doctor's domain table: not in the tenant;
/// unknown when there is nobody to read as (`nobody` says so); else what one read as one of its
/// mailboxes answers (`probe`: the request and the permission a refusal means is missing).
pub(crate) async fn domain_retract<B: Backend>(
    backend: &B,
    in_tenant: bool,
    probe: Option<(SubRequest, String)>,
    nobody: &str,
) -> DomainRetract {
    if !in_tenant {
        return DomainRetract::NotInTenant;
    }
    let Some((probe, permission)) = probe else {
        return DomainRetract::Unknown {
            detail: nobody.into(),
        };
    };
    match call(backend, probe).await {
        Ok(r) if r.ok() => DomainRetract::Granted,
        Ok(r) if matches!(r.status, 401 | 403) => {
            let (code, message) = error_code_message(&r.body);
            DomainRetract::Missing {
                permission,
                detail: format!("HTTP {} {code}: {message}", r.status),
            }
        }
        Ok(r) => DomainRetract::Unknown {
            detail: classify(r.status, &r.body, Operation::Read).to_string(),
        },
        Err(f) => DomainRetract::Unknown {
            detail: f.to_string(),
        },
    }
}
