//! The Graph retract state machine (the scheduler's `Backend`: locate, act, verify after an
//! unanswered request) and restore.

use super::GraphClient;
use crate::config::LimitConfig;
use crate::model::{FailureReason, Folder, RetractAction, address_domain};
use crate::provider::errors::{Failure, Operation, classify};
use crate::provider::http::{SubRequest, SubResponse, enc};
use crate::provider::scheduler::{
    Backend, Pacer, Step, UNCERTAIN, Work, call, choose, first_error,
};
use crate::provider::{
    AFTER_UNANSWERED, Applied, LocatedCopy, MAY_HAVE_LANDED, RestoreOptions, RestorePick, SentCopy,
    pick_restore, unchanged_since,
};
use reqwest::Method;
use serde_json::{Value, json};

impl GraphClient {
    pub async fn restore(
        &self,
        mailbox: &str,
        internet_message_id: &str,
        current_id: Option<&str>,
        original: &Folder,
        options: RestoreOptions<'_>,
    ) -> Result<Applied, Failure> {
        let retracted_to = options.retracted_to;
        if matches!(original, Folder::Purged | Folder::RecoverableDeletions) {
            return Err(Failure::new(
                FailureReason::ProviderError,
                None,
                "bad_destination",
                format!("cannot restore into {original}"),
            ));
        }
        let mut attempts = 0;
        // The copy the last unanswered move was sent for (here, or in a process that stopped).
        let mut sent: Option<SentCopy> = options.earlier.cloned();
        loop {
            attempts += 1;
            let copies = match self.locate(mailbox, internet_message_id).await {
                Ok(copies) => copies,
                // After an unanswered move, not being able to look leaves the outcome unknown:
                // never a failure that would hide a restore that landed.
                Err(mut f) if attempts > 1 => {
                    f.code = UNCERTAIN.into();
                    return Err(f);
                }
                Err(f) => return Err(f),
            };
            if copies.iter().any(|c| &c.folder == original) && attempts > 1 {
                // An earlier attempt's outcome was unknown: it landed.
                let c = copies.iter().find(|c| &c.folder == original).cloned();
                return Ok(restored(
                    c,
                    mailbox,
                    internet_message_id,
                    original,
                    "move (verified)",
                ));
            }
            let picked = pick_restore(
                &copies,
                mailbox,
                internet_message_id,
                current_id,
                retracted_to,
                original,
            );
            let copy = match picked {
                Err(mut f) if attempts > 1 && f.reason == FailureReason::MovedSince => {
                    f.message = format!("{} {MAY_HAVE_LANDED}", f.message);
                    return Err(f);
                }
                other => other?,
            };
            let copy = match copy {
                // Where the retraction put it: sent again only if it is the very copy the lost
                // move was sent for (Graph gives a copy a new id on every move); otherwise it
                // was moved since, perhaps back by a user after that move landed.
                RestorePick::Act(copy) => {
                    if let Some(sent) = &sent {
                        unchanged_since(&copy, sent, internet_message_id)?;
                    }
                    copy
                }
                RestorePick::AlreadyBack(c) => {
                    return Ok(restored(
                        Some(c),
                        mailbox,
                        internet_message_id,
                        original,
                        "already back: nothing sent",
                    ));
                }
            };
            let req = SubRequest::mutate(
                Method::POST,
                format!("/users/{}/messages/{}/move", enc(mailbox), enc(&copy.id)),
                Some(json!({ "destinationId": original.graph_name() })),
                mailbox,
                0,
            );
            if let Some(record) = options.before_send {
                record(&copy)?;
            }
            match call(self, req).await {
                Ok(r) if r.ok() => {
                    return Ok(Applied {
                        mailbox: mailbox.to_ascii_lowercase(),
                        internet_message_id: internet_message_id.to_string(),
                        old_id: copy.id.clone(),
                        new_id: r.body["id"].as_str().map(str::to_string),
                        from: copy.folder.clone(),
                        to: original.clone(),
                        action: RetractAction::NoAction,
                        was_read: copy.read,
                        detail: format!(
                            "restored: move to {}{}",
                            original.graph_name(),
                            if attempts > 1 { AFTER_UNANSWERED } else { "" }
                        ),
                    });
                }
                Ok(r) => return Err(classify(r.status, &r.body, Operation::Mutate)),
                Err(f) if f.code == "uncertain" && attempts < 4 => {
                    sent = Some(SentCopy::of(&copy));
                    continue;
                }
                Err(f) => return Err(f),
            }
        }
    }
}

fn restored(
    copy: Option<LocatedCopy>,
    mailbox: &str,
    mid: &str,
    original: &Folder,
    detail: &str,
) -> Applied {
    Applied {
        mailbox: mailbox.to_ascii_lowercase(),
        internet_message_id: mid.to_string(),
        old_id: String::new(),
        new_id: copy.as_ref().map(|c| c.id.clone()),
        from: original.clone(),
        to: original.clone(),
        action: RetractAction::NoAction,
        was_read: copy.map(|c| c.read).unwrap_or(false),
        detail: detail.to_string(),
    }
}

impl Backend for GraphClient {
    fn limits(&self) -> &LimitConfig {
        &self.tenant.limits
    }

    fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    fn batch_max(&self) -> usize {
        20
    }

    fn service_slots(&self, n: usize) -> usize {
        // "Microsoft Graph sends the Outlook service up to four individual requests from the
        // batch at a time" (PROVIDER-APIS.md A.5): a batch of 20 keeps four in service, so
        // counting it as 20 would leave most of the tenant's budget idle.
        n.min(4)
    }

    async fn is_internal(&self, mailbox: &str) -> Result<bool, Failure> {
        let domains = self.managed_domains().await?;
        Ok(address_domain(mailbox).is_some_and(|d| domains.contains(&d)))
    }

    async fn send(&self, requests: &[SubRequest]) -> Vec<Result<SubResponse, Failure>> {
        self.send_batch(requests).await
    }

    async fn invalidate(&self, _mailbox: &str) {
        if let Ok(t) = self.auth.token("", self.scope()).await {
            self.auth.invalidate("", self.scope(), &t).await;
        }
    }

    fn requests(&self, work: &Work, action: RetractAction) -> Vec<SubRequest> {
        let mb = work.mailbox.as_str();
        let filter = Self::mid_filter(&work.internet_message_id);
        match &work.step {
            Step::Locate => self.locate_requests(mb, &work.internet_message_id),
            Step::Resolve(_) => Self::folder_requests(mb),
            Step::Act(copy) => {
                let item = format!("/users/{}/messages/{}", enc(mb), enc(&copy.id));
                vec![match action {
                    RetractAction::Junk | RetractAction::Trash | RetractAction::NoAction => {
                        let dest = if action == RetractAction::Junk {
                            "junkemail"
                        } else {
                            "deleteditems"
                        };
                        SubRequest::mutate(
                            Method::POST,
                            format!("{item}/move"),
                            Some(json!({ "destinationId": dest })),
                            mb,
                            0,
                        )
                    }
                    RetractAction::SoftDelete => {
                        SubRequest::mutate(Method::DELETE, item, None, mb, 0)
                    }
                    RetractAction::HardDelete => SubRequest::mutate(
                        Method::POST,
                        format!("{item}/permanentDelete"),
                        None,
                        mb,
                        0,
                    ),
                }]
            }
            Step::Verify(_) => {
                let mut requests = vec![
                    SubRequest::get(Self::messages_filter(mb, &filter, None), mb, 0),
                    SubRequest::get(
                        Self::messages_filter(mb, &filter, Some("recoverableitemsdeletions")),
                        mb,
                        0,
                    ),
                ];
                // Where each copy is must be told by folder, not by id: the folder ids.
                requests.extend(self.folder_requests_if_unknown(mb));
                requests
            }
            Step::Done(_) => Vec::new(),
        }
    }

    fn advance(&self, work: &mut Work, action: RetractAction, responses: &[SubResponse]) {
        let mb = work.mailbox.clone();
        let step = std::mem::replace(&mut work.step, Step::Locate);
        work.step = match step {
            Step::Locate => {
                match first_error(&responses[..1.min(responses.len())], Operation::Directory) {
                    Some(f) => Step::Done(Err(f)),
                    None => {
                        let values = responses
                            .first()
                            .and_then(|r| r.body["value"].as_array().cloned())
                            .unwrap_or_default();
                        match self.located_copies(&mb, &values, responses.get(1)) {
                            Some(copies) => choose(copies, &mb),
                            // A copy outside the Inbox: its folder id must be named first.
                            None => Step::Resolve(values),
                        }
                    }
                }
            }
            Step::Resolve(values) => {
                self.learn_folders(&mb, responses);
                choose(
                    values.iter().map(|m| self.to_copy(&mb, m, None)).collect(),
                    &mb,
                )
            }
            Step::Act(copy) => {
                let op = if action == RetractAction::HardDelete {
                    Operation::PermanentDelete
                } else {
                    Operation::Mutate
                };
                match first_error(responses, op) {
                    Some(f) => Step::Done(Err(f)),
                    None => {
                        let new_id = responses
                            .first()
                            .and_then(|r| r.body["id"].as_str())
                            .map(str::to_string);
                        Step::Done(Ok(applied(&copy, action, new_id, "")))
                    }
                }
            }
            Step::Verify(copy) => {
                match first_error(&responses[..1.min(responses.len())], Operation::Read) {
                    Some(f) => Step::Done(Err(f)),
                    None => {
                        let listed = |i: usize| -> Vec<Value> {
                            responses
                                .get(i)
                                .filter(|r| r.ok())
                                .and_then(|r| r.body["value"].as_array().cloned())
                                .unwrap_or_default()
                        };
                        let visible = listed(0);
                        let recoverable = listed(1);
                        self.learn_folders(&mb, responses.get(2..).unwrap_or_default());
                        let folder_of = |m: &Value| {
                            self.folder_of(&mb, m["parentFolderId"].as_str().unwrap_or_default())
                                .unwrap_or_else(|| Folder::Other(String::new()))
                        };
                        let target = match action {
                            RetractAction::Junk => Some(Folder::Junk),
                            RetractAction::Trash | RetractAction::NoAction => Some(Folder::Trash),
                            RetractAction::SoftDelete | RetractAction::HardDelete => None,
                        };
                        // Decided by where the copies are now, not by id (a planned id may be
                        // stale; with immutable ids a moved copy keeps it).
                        let landed = visible
                            .iter()
                            .find(|m| target.as_ref() == Some(&folder_of(m)));
                        let live: Vec<&Value> =
                            visible.iter().filter(|m| !folder_of(m).is_gone()).collect();
                        let note = " (outcome verified after an unanswered request)";
                        if let Some(m) = landed {
                            let new_id = m["id"].as_str().map(str::to_string);
                            Step::Done(Ok(applied(&copy, action, new_id, note)))
                        } else if let Some(still) = live
                            .iter()
                            .find(|m| m["id"].as_str() == Some(&copy.id))
                            .or(live.first())
                        {
                            // Not done: act again on the copy as it is now.
                            let mut again = self.to_copy(&mb, still, Some(copy.folder.clone()));
                            again.folder = copy.folder.clone();
                            Step::Act(again)
                        } else if action == RetractAction::HardDelete
                            || (action == RetractAction::SoftDelete && !recoverable.is_empty())
                        {
                            let new_id = recoverable
                                .first()
                                .filter(|_| action == RetractAction::SoftDelete)
                                .and_then(|m| m["id"].as_str())
                                .map(str::to_string);
                            Step::Done(Ok(applied(&copy, action, new_id, note)))
                        } else {
                            // Gone elsewhere (another retracted folder, or no copy): not where
                            // this action puts it, so not this job's doing.
                            let now = visible
                                .first()
                                .map(|m| folder_of(m).label().to_string())
                                .unwrap_or_else(|| "no folder (deleted)".into());
                            Step::Done(Err(Failure::new(
                                FailureReason::AlreadyGone,
                                None,
                                "already_moved",
                                format!(
                                    "the copy is in {now}, not where this action puts it {MAY_HAVE_LANDED}"
                                ),
                            )))
                        }
                    }
                }
            }
            done @ Step::Done(_) => done,
        };
    }
}

fn applied(
    copy: &LocatedCopy,
    action: RetractAction,
    new_id: Option<String>,
    note: &str,
) -> Applied {
    let (to, detail) = match action {
        RetractAction::Junk => (Folder::Junk, "move to junkemail"),
        RetractAction::Trash | RetractAction::NoAction => (Folder::Trash, "move to deleteditems"),
        RetractAction::SoftDelete => (
            Folder::RecoverableDeletions,
            "DELETE: in Recoverable Items\\Deletions (user recoverable)",
        ),
        RetractAction::HardDelete => (
            Folder::Purged,
            "permanentDelete: in Purges (admin recoverable via eDiscovery)",
        ),
    };
    Applied {
        mailbox: copy.mailbox.clone(),
        internet_message_id: copy.internet_message_id.clone(),
        old_id: copy.id.clone(),
        new_id,
        from: copy.folder.clone(),
        to,
        action,
        was_read: copy.read,
        detail: format!("{detail}{note}"),
    }
}
