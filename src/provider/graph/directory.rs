//! Graph directory: resolving an address (user, alias, group and its members), listing
//! users, the tenant's domains and their status, and the app's permissions.

use super::{GraphClient, NEEDED_ROLES};
use crate::model::{FailureReason, address_domain};
use crate::provider::directory::domain_retract;
use crate::provider::errors::{Failure, Operation, classify};
use crate::provider::http::{SubRequest, enc};
use crate::provider::scheduler::{Backend, call};
use crate::provider::{DomainStatus, Permissions, Resolved};

/// Mailboxes `doctor` reads (one message id each) to find mail access granted by Exchange RBAC
/// for Applications, which the token's roles do not show.
const RBAC_PROBES: usize = 20;

/// What `doctor` says when mail access comes from Exchange RBAC for Applications.
const RBAC_SCOPED_NOTE: &str = "mail access is scoped by Exchange RBAC for Applications: do not add Mail.ReadWrite to the Entra consent (the two add up and the scope would be undone); check a mailbox with `Test-ServicePrincipalAuthorization -Identity <app> -Resource <mailbox>`; mailboxes outside the scope fail as not_authorized";

impl GraphClient {
    /// The tenant's domains: configured, else Graph `/domains`.
    pub(super) async fn managed_domains(&self) -> Result<&Vec<String>, Failure> {
        self.domains
            .get_or_try_init(|| async {
                if !self.tenant.domains.is_empty() {
                    return Ok(self
                        .tenant
                        .domains
                        .iter()
                        .map(|d| d.to_ascii_lowercase())
                        .collect());
                }
                self.tenant_domains().await
            })
            .await
    }

    /// Graph `/domains` (ids = domain names).
    pub(super) async fn tenant_domains(&self) -> Result<Vec<String>, Failure> {
        let values = self.get_all("/domains", "").await?;
        Ok(values
            .iter()
            .filter_map(|d| d["id"].as_str().map(|s| s.to_ascii_lowercase()))
            .collect())
    }

    pub async fn resolve(&self, address: &str) -> Result<Resolved, Failure> {
        let address = address.trim().to_ascii_lowercase();
        if !self.is_internal(&address).await? {
            return Ok(Resolved::External { address });
        }
        let user = call(
            self,
            SubRequest::get(
                format!(
                    "/users/{}?$select=id,mail,userPrincipalName,displayName",
                    enc(&address)
                ),
                "",
                0,
            ),
        )
        .await?;
        if user.ok() {
            return Ok(mailbox_of(address, &user.body));
        }
        if user.status != 404 {
            return Err(classify(user.status, &user.body, Operation::Directory));
        }
        // `/users/{key}` knows ids and sign-in names only: a mail address that differs from
        // the userPrincipalName, or an alias, is found by `mail` or `proxyAddresses`.
        let quoted = address.replace('\'', "''");
        let by_mail = self
            .get_all(
                &format!(
                    "/users?$filter={}&$select=id,mail,userPrincipalName,displayName",
                    enc(&format!(
                        "mail eq '{quoted}' or proxyAddresses/any(p:p eq 'smtp:{quoted}')"
                    ))
                ),
                "",
            )
            .await?;
        if let Some(user) = by_mail.first() {
            return Ok(mailbox_of(address, user));
        }
        let groups = self
            .get_all(
                &format!(
                    "/groups?$filter={}&$select=id,mail,displayName",
                    enc(&format!("mail eq '{}'", address.replace('\'', "''")))
                ),
                "",
            )
            .await?;
        let Some(group) = groups.first() else {
            return Ok(Resolved::Unknown { address });
        };
        let id = group["id"].as_str().unwrap_or_default().to_string();
        let members = self
            .get_all(
                &format!(
                    "/groups/{}/transitiveMembers?$select=id,mail,userPrincipalName",
                    enc(&id)
                ),
                "",
            )
            .await
            .map_err(|mut f| {
                // The directory read worked for the group itself: a refusal for its members is
                // a hidden membership (Graph needs Member.Read.Hidden for it).
                if f.reason == FailureReason::NotAuthorized {
                    f.message = format!(
                        "{address}: the list's membership is hidden; the app needs Member.Read.Hidden to expand it, so its members' copies are not planned ({})",
                        f.message
                    );
                }
                f
            })?;
        let domains = self.managed_domains().await?;
        let mut member_mailboxes = Vec::new();
        let mut external_members = Vec::new();
        for m in &members {
            let kind = m["@odata.type"].as_str().unwrap_or_default();
            let Some(mail) = m["mail"]
                .as_str()
                .or_else(|| m["userPrincipalName"].as_str())
            else {
                continue;
            };
            let mail = mail.to_ascii_lowercase();
            let internal = address_domain(&mail).is_some_and(|d| domains.contains(&d));
            match kind {
                "#microsoft.graph.user" if internal => member_mailboxes.push(mail),
                "#microsoft.graph.group" => {}
                _ if !internal => external_members.push(mail),
                "#microsoft.graph.orgContact" => external_members.push(mail),
                _ => {}
            }
        }
        member_mailboxes.sort();
        member_mailboxes.dedup();
        Ok(Resolved::Group {
            address,
            id,
            display_name: group["displayName"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            member_mailboxes,
            external_members,
        })
    }

    /// Every user's mailbox key: the userPrincipalName, which Graph's `/users/{key}` accepts
    /// (a mail address that differs from it is not found there).
    pub async fn list_mailboxes(&self) -> Result<Vec<String>, Failure> {
        Ok(self
            .list_users()
            .await?
            .into_iter()
            .map(|(_, upn)| upn)
            .collect())
    }

    /// (mail address, userPrincipalName) of every user, lowercase; the mail address is the
    /// userPrincipalName when the user has none.
    pub(super) async fn list_users(&self) -> Result<Vec<(String, String)>, Failure> {
        let users = self
            .get_all("/users?$select=id,mail,userPrincipalName&$top=999", "")
            .await?;
        Ok(users
            .iter()
            .filter_map(|u| {
                let upn = u["userPrincipalName"]
                    .as_str()
                    .or_else(|| u["mail"].as_str())?;
                let mail = u["mail"].as_str().unwrap_or(upn);
                Some((mail.to_ascii_lowercase(), upn.to_ascii_lowercase()))
            })
            .collect())
    }

    pub async fn permissions(&self) -> Permissions {
        let needed: Vec<String> = NEEDED_ROLES.iter().map(|s| s.to_string()).collect();
        let how_to_grant = self.admin_consent_url();
        match self.auth.token_and_grants("", self.scope()).await {
            Ok((_, mut granted)) => {
                let mut missing: Vec<String> = needed
                    .iter()
                    .filter(|n| !granted.iter().any(|g| g.eq_ignore_ascii_case(n)))
                    .cloned()
                    .collect();
                let mut how_to_grant = how_to_grant;
                // Exchange RBAC for Applications grants mail access outside the token's roles
                // (and needs the Entra Mail.ReadWrite consent removed): a mailbox read that
                // works proves it. The consent URL would undo the scoping, so it is offered
                // only for the directory permissions then.
                if missing.iter().any(|m| m == "Mail.ReadWrite")
                    && let Some(mailbox) = self.probe_mail_access().await
                {
                    missing.retain(|m| m != "Mail.ReadWrite");
                    granted.push(format!(
                        "Mail.ReadWrite (Exchange RBAC for Applications, scoped; read {mailbox})"
                    ));
                    how_to_grant = if missing.is_empty() {
                        RBAC_SCOPED_NOTE.to_string()
                    } else {
                        format!(
                            "grant the directory permissions {} as Entra application permissions ({how_to_grant}) but NOT Mail.ReadWrite: {RBAC_SCOPED_NOTE}",
                            missing.join(", ")
                        )
                    };
                }
                Permissions {
                    token: Ok(()),
                    granted,
                    needed,
                    missing,
                    how_to_grant,
                }
            }
            Err(f) => Permissions {
                // Unreachable: nothing is known about the grants, so nothing is "missing".
                missing: if f.is_unreachable() {
                    Vec::new()
                } else {
                    needed.clone()
                },
                token: Err(f),
                granted: Vec::new(),
                needed,
                how_to_grant,
            },
        }
    }

    /// The first of up to [`RBAC_PROBES`] mailboxes whose mail this app may read, if any.
    async fn probe_mail_access(&self) -> Option<String> {
        let users = self.list_mailboxes().await.ok()?;
        for user in users.into_iter().take(RBAC_PROBES) {
            let probe = SubRequest::get(
                format!("/users/{}/messages?$top=1&$select=id", enc(&user)),
                &user,
                0,
            );
            if matches!(call(self, probe).await, Ok(r) if r.ok()) {
                return Some(user);
            }
        }
        None
    }

    /// `https://login.microsoftonline.com/{tenant}/adminconsent?client_id=…`
    pub fn admin_consent_url(&self) -> String {
        format!(
            "{}/{}/adminconsent?client_id={}",
            self.tenant.cloud.login_host(),
            enc(self.tenant.tenant_id.as_deref().unwrap_or("organizations")),
            enc(self.tenant.client_id.as_deref().unwrap_or_default())
        )
    }

    pub async fn domains_status(&self) -> Result<Vec<DomainStatus>, Failure> {
        let in_tenant = self.tenant_domains().await?;
        let users = self.list_users().await.unwrap_or_default();
        let mut names: Vec<String> = in_tenant.clone();
        for d in &self.tenant.domains {
            let d = d.to_ascii_lowercase();
            if !names.contains(&d) {
                names.push(d);
            }
        }
        let mut out = Vec::new();
        for domain in names {
            let configured = self.tenant.domains.is_empty()
                || self
                    .tenant
                    .domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&domain));
            let present = in_tenant.contains(&domain);
            let probe = users
                .iter()
                .find(|(mail, _)| address_domain(mail).as_deref() == Some(domain.as_str()))
                .map(|(_, user)| {
                    (
                        SubRequest::get(
                            format!("/users/{}/messages?$top=1&$select=id", enc(user)),
                            user,
                            0,
                        ),
                        format!(
                            "Mail.ReadWrite for {user} (outside the app's Exchange RBAC scope or application access policy; one mailbox probed, a scope by group or filter may still cover others)"
                        ),
                    )
                });
            let retract =
                domain_retract(self, present, probe, "no mailbox in this domain to probe").await;
            out.push(DomainStatus {
                domain,
                configured,
                in_tenant: present,
                retract,
            });
        }
        Ok(out)
    }
}

/// A Graph user object as the mailbox `address` delivers to: mail is addressed by its
/// userPrincipalName.
fn mailbox_of(address: String, user: &serde_json::Value) -> Resolved {
    Resolved::Mailbox {
        mailbox: user["userPrincipalName"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| address.clone()),
        id: user["id"].as_str().unwrap_or_default().to_string(),
        display_name: user["displayName"].as_str().unwrap_or_default().to_string(),
        address,
    }
}
