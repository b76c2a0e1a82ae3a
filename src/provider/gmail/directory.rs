//! Gmail / Admin SDK directory: resolving an address (user, alias, group and its members),
//! listing users, the tenant's domains and their status, and the delegated scopes.

use super::GmailClient;
use super::units;
use crate::model::address_domain;
use crate::provider::auth::{DIRECTORY_SCOPES, GMAIL_SCOPE};
use crate::provider::directory::domain_retract;
use crate::provider::errors::{Failure, Operation, classify, error_code_message};
use crate::provider::http::{SubRequest, enc};
use crate::provider::scheduler::Backend;
use crate::provider::{DomainStatus, Permissions, Resolved};

impl GmailClient {
    pub(super) fn managed(&self) -> Vec<String> {
        self.tenant
            .domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect()
    }

    pub async fn resolve(&self, address: &str) -> Result<Resolved, Failure> {
        let address = address.trim().to_ascii_lowercase();
        if !self.is_internal(&address).await? {
            return Ok(Resolved::External { address });
        }
        let user = self
            .directory_get(&format!("/admin/directory/v1/users/{}", enc(&address)))
            .await?;
        if user.ok() {
            // `address` may be an alias: mail is read as the primary address.
            let mailbox = user.body["primaryEmail"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .unwrap_or_else(|| address.clone());
            return Ok(Resolved::Mailbox {
                mailbox,
                id: user.body["id"].as_str().unwrap_or_default().to_string(),
                display_name: user.body["name"]["fullName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                address,
            });
        }
        if user.status != 404 {
            return Err(classify(user.status, &user.body, Operation::Directory));
        }
        let group = self
            .directory_get(&format!("/admin/directory/v1/groups/{}", enc(&address)))
            .await?;
        if group.status == 404 {
            return Ok(Resolved::Unknown { address });
        }
        if !group.ok() {
            return Err(classify(group.status, &group.body, Operation::Directory));
        }
        let mut member_mailboxes = Vec::new();
        let mut external_members = Vec::new();
        let managed = self.managed();
        let path = format!(
            "/admin/directory/v1/groups/{}/members?includeDerivedMembership=true&maxResults=200",
            enc(&address)
        );
        let members = self
            .admin_list(path, &self.directory_scopes, "members")
            .await?;
        for m in &members {
            let Some(email) = m["email"].as_str().map(str::to_ascii_lowercase) else {
                continue;
            };
            let internal = address_domain(&email).is_some_and(|d| managed.contains(&d));
            match m["type"].as_str().unwrap_or("USER") {
                "GROUP" => {}
                "USER" if internal => member_mailboxes.push(email),
                _ => external_members.push(email),
            }
        }
        member_mailboxes.sort();
        member_mailboxes.dedup();
        Ok(Resolved::Group {
            id: group.body["id"].as_str().unwrap_or_default().to_string(),
            display_name: group.body["name"].as_str().unwrap_or_default().to_string(),
            address,
            member_mailboxes,
            external_members,
        })
    }

    pub async fn list_mailboxes(&self) -> Result<Vec<String>, Failure> {
        let mut out = Vec::new();
        for domain in self.managed() {
            let path = format!(
                "/admin/directory/v1/users?domain={}&maxResults=500",
                enc(&domain)
            );
            for u in self
                .admin_list(path, &self.directory_scopes, "users")
                .await?
            {
                if let Some(e) = u["primaryEmail"].as_str() {
                    out.push(e.to_ascii_lowercase());
                }
            }
        }
        Ok(out)
    }

    pub async fn permissions(&self) -> Permissions {
        let mut needed = vec![GMAIL_SCOPE.to_string()];
        needed.extend(DIRECTORY_SCOPES.iter().map(|s| s.to_string()));
        let how_to_grant = format!(
            "Google Admin console → Security → Access and data control → API controls → Domain-wide delegation → Add new: client ID {} with scopes {}",
            self.delegation_client_id(),
            needed.join(",")
        );
        let mut granted = Vec::new();
        let mut token = Ok(());
        match self.auth.token_and_grants(&self.admin, GMAIL_SCOPE).await {
            Ok((_, g)) => granted.extend(g),
            Err(f) => token = Err(f),
        }
        // An unreachable token endpoint answers no scope: asking per scope would only wait
        // out the same timeout again.
        let reachable = !matches!(&token, Err(f) if f.is_unreachable());
        for scope in DIRECTORY_SCOPES.iter().filter(|_| reachable) {
            // One scope per request: the token endpoint refuses a request naming any ungranted scope.
            if let Ok((_, g)) = self.auth.token_and_grants(&self.admin, scope).await {
                granted.extend(g);
            }
        }
        granted.sort();
        granted.dedup();
        // Unreachable: nothing is known about the grants, so nothing is "missing".
        let missing = needed
            .iter()
            .filter(|n| reachable && !granted.contains(n))
            .cloned()
            .collect();
        Permissions {
            token,
            granted,
            needed,
            missing,
            how_to_grant,
        }
    }

    pub async fn domains_status(&self) -> Result<Vec<DomainStatus>, Failure> {
        let mut out = Vec::new();
        for domain in self.managed() {
            let r = self
                .directory_get(&format!(
                    "/admin/directory/v1/users?domain={}&maxResults=1",
                    enc(&domain)
                ))
                .await?;
            let (in_tenant, user) = if r.ok() {
                (
                    true,
                    r.body["users"][0]["primaryEmail"]
                        .as_str()
                        .map(str::to_string),
                )
            } else if matches!(r.status, 400 | 404) || error_code_message(&r.body).0 == "notFound" {
                (false, None)
            } else {
                return Err(classify(r.status, &r.body, Operation::Directory));
            };
            let probe = user.map(|user| {
                (
                    SubRequest::get(
                        format!("{}/messages?maxResults=1", Self::user_path(&user)),
                        &user,
                        units::LIST,
                    ),
                    format!("{GMAIL_SCOPE} (domain-wide delegation)"),
                )
            });
            let retract =
                domain_retract(self, in_tenant, probe, "no user in this domain to probe").await;
            out.push(DomainStatus {
                domain,
                configured: true,
                in_tenant,
                retract,
            });
        }
        Ok(out)
    }
}
