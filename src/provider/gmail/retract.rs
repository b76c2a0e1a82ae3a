//! The Gmail retract state machine (the scheduler's `Backend`: locate, read, act, verify after
//! an unanswered request) and restore.

use super::{GmailClient, folder_of_labels, units};
use crate::config::LimitConfig;
use crate::model::{FailureReason, Folder, RetractAction, address_domain};
use crate::provider::auth::GMAIL_SCOPE;
use crate::provider::errors::{Failure, Operation, classify};
use crate::provider::http::{SubRequest, SubResponse, enc};
use crate::provider::scheduler::{
    Backend, Pacer, Step, UNCERTAIN, Work, call, call_ok, choose, first_error,
};
use crate::provider::{
    AFTER_UNANSWERED, Applied, LocatedCopy, MAY_HAVE_LANDED, RestoreOptions, RestorePick, SentCopy,
    pick_restore, unchanged_since,
};
use reqwest::Method;
use serde_json::{Value, json};

impl GmailClient {
    pub async fn restore(
        &self,
        mailbox: &str,
        internet_message_id: &str,
        current_id: Option<&str>,
        original: &Folder,
        options: RestoreOptions<'_>,
    ) -> Result<Applied, Failure> {
        let copies = self.locate(mailbox, internet_message_id).await?;
        let copy = match pick_restore(
            &copies,
            mailbox,
            internet_message_id,
            current_id,
            options.retracted_to,
            original,
        )? {
            RestorePick::Act(copy) => {
                // An earlier attempt's answer was lost: only the same copy, unchanged since
                // (same historyId), is sent again.
                if let Some(earlier) = options.earlier {
                    unchanged_since(&copy, earlier, internet_message_id)?;
                }
                copy
            }
            RestorePick::AlreadyBack(c) => {
                // Nothing to send: a no-op modify would still count as an action.
                return Ok(Applied {
                    mailbox: mailbox.to_ascii_lowercase(),
                    internet_message_id: internet_message_id.to_string(),
                    old_id: c.id.clone(),
                    new_id: Some(c.id.clone()),
                    from: original.clone(),
                    to: original.clone(),
                    action: RetractAction::NoAction,
                    was_read: c.read,
                    detail: "already back: nothing sent".into(),
                });
            }
        };
        let item = format!("{}/messages/{}", Self::user_path(mailbox), enc(&copy.id));
        let (req, detail) = match copy.folder {
            Folder::Trash => (
                SubRequest::mutate(
                    Method::POST,
                    format!("{item}/untrash"),
                    None,
                    mailbox,
                    units::TRASH,
                ),
                "untrash",
            ),
            _ => {
                let add = match original {
                    Folder::Inbox => vec!["INBOX"],
                    _ => vec![],
                };
                (
                    SubRequest::mutate(
                        Method::POST,
                        format!("{item}/modify"),
                        Some(json!({ "addLabelIds": add, "removeLabelIds": ["SPAM"] })),
                        mailbox,
                        units::MODIFY,
                    ),
                    "modify: remove SPAM",
                )
            }
        };
        // After a lost answer the copy is read again (Gmail ids are immutable) before anything
        // is sent again: a restore that landed is not repeated as a second, no-op mutation.
        if let Some(record) = options.before_send {
            record(&copy)?;
        }
        let mut tries = 0;
        let (r, detail) = loop {
            tries += 1;
            match call(self, req.clone()).await {
                Err(f) if f.code == "uncertain" && tries < 4 => {
                    // Not being able to look leaves the outcome unknown, never a failure.
                    let now = call_ok(self, Self::get_request(mailbox, &copy.id), Operation::Read)
                        .await
                        .map(|g| Self::to_copy(mailbox, internet_message_id, &g.body))
                        .map_err(|mut f| {
                            f.code = UNCERTAIN.into();
                            f
                        })?;
                    if now.folder == *original {
                        break (None, "verified after an unanswered request");
                    }
                    // Still where the retraction put it, but changed since it was read
                    // (its historyId moved on): the lost request may have landed and a user
                    // moved the copy back. Sending it again could undo that user's move.
                    if now.folder == copy.folder {
                        unchanged_since(&now, &SentCopy::of(&copy), internet_message_id)?;
                    }
                    if now.folder != copy.folder {
                        return Err(Failure::new(
                            FailureReason::MovedSince,
                            None,
                            "moved_since",
                            format!(
                                "the copy of {internet_message_id} in {mailbox} is now in {}: left alone {MAY_HAVE_LANDED}",
                                now.folder
                            ),
                        ));
                    }
                }
                other => break (Some(other?), detail),
            }
        };
        if let Some(r) = &r
            && !r.ok()
        {
            return Err(classify(r.status, &r.body, Operation::Mutate));
        }
        Ok(Applied {
            mailbox: mailbox.to_ascii_lowercase(),
            internet_message_id: internet_message_id.to_string(),
            old_id: copy.id.clone(),
            new_id: Some(copy.id.clone()),
            from: copy.folder.clone(),
            to: original.clone(),
            action: RetractAction::NoAction,
            was_read: copy.read,
            detail: format!(
                "restored: {detail}{}",
                if tries > 1 { AFTER_UNANSWERED } else { "" }
            ),
        })
    }
}

/// What the labels a modify answers with say about a Junk acted on without a second read:
/// a copy that carries `TRASH` beside the added `SPAM` was trashed (by its user) before the
/// modify landed — already gone, as a read before acting would have found it, not junked from
/// where the plan saw it. Trash answers with `TRASH` whatever the copy's labels were, and
/// Delete answers with no body: nothing to tell there.
fn moved_before_acted(responses: &[SubResponse], effective: RetractAction) -> Option<Failure> {
    if effective != RetractAction::Junk {
        return None;
    }
    let labels: Vec<String> = responses
        .first()?
        .body
        .get("labelIds")?
        .as_array()?
        .iter()
        .filter_map(|l| l.as_str().map(String::from))
        .collect();
    let now = folder_of_labels(&labels);
    (now != Folder::Junk && now.is_gone()).then(|| {
        Failure::new(
            FailureReason::AlreadyGone,
            None,
            "already_moved",
            format!("the copy was already in {now} when the action landed"),
        )
    })
}

fn applied(
    copy: &LocatedCopy,
    asked: RetractAction,
    effective: RetractAction,
    note: &str,
) -> Applied {
    let (to, detail) = match effective {
        RetractAction::Junk => (Folder::Junk, "modify: add SPAM, remove INBOX".to_string()),
        RetractAction::HardDelete => (
            Folder::Purged,
            "DELETE: permanently deleted (admin can restore for 25 days)".to_string(),
        ),
        _ => (Folder::Trash, "trash".to_string()),
    };
    let detail = if asked == RetractAction::SoftDelete {
        format!("soft_delete mapped to trash on Gmail; {detail}")
    } else {
        detail
    };
    Applied {
        mailbox: copy.mailbox.clone(),
        internet_message_id: copy.internet_message_id.clone(),
        old_id: copy.id.clone(),
        new_id: (effective != RetractAction::HardDelete).then(|| copy.id.clone()),
        from: copy.folder.clone(),
        to,
        action: effective,
        was_read: copy.read,
        detail: format!("{detail}{note}"),
    }
}

impl Backend for GmailClient {
    fn limits(&self) -> &LimitConfig {
        &self.tenant.limits
    }

    fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// Calls per HTTP batch. Gmail takes up to 100 and advises at most 50; 25 measured better:
    /// a batch holds its calls' slots until its last call is answered, and parts are parsed,
    /// served and assembled one batch at a time, so a smaller batch wastes less of its slots
    /// (Google warm retract_e2e: 2.97-3.14 s against 3.09-3.25 s with 50, alternated run
    /// for run; the mixed cold run, bound by CPU, the same either way).
    fn batch_max(&self) -> usize {
        25
    }

    async fn is_internal(&self, mailbox: &str) -> Result<bool, Failure> {
        let managed = self.managed();
        Ok(address_domain(mailbox).is_some_and(|d| managed.contains(&d)))
    }

    async fn prepare(&self, requests: &[SubRequest]) {
        // Tokens are fetched before the batch takes its service slots, so slow token requests
        // never hold the tenant's capacity idle.
        futures_util::future::join_all(
            requests
                .iter()
                .map(|r| self.auth.token(&r.mailbox, GMAIL_SCOPE)),
        )
        .await;
    }

    async fn send(&self, requests: &[SubRequest]) -> Vec<Result<SubResponse, Failure>> {
        self.send_batch(requests).await
    }

    fn start(&self, copy: LocatedCopy, mailbox: &str, just_located: bool) -> Step {
        if just_located {
            // Located moments ago by this run: acted on as located (no second read). A copy
            // deleted since answers 404 (located afresh); one junked or trashed since is named
            // by the labels the action answers with (see `advance`).
            return choose(vec![copy], mailbox);
        }
        // A Gmail id survives every label change, so a copy located earlier may have been
        // junked or trashed since: read its labels again (one get) before acting.
        Step::Resolve(vec![Value::String(copy.id)])
    }

    async fn invalidate(&self, mailbox: &str) {
        if let Ok(t) = self.auth.token(mailbox, GMAIL_SCOPE).await {
            self.auth.invalidate(mailbox, GMAIL_SCOPE, &t).await;
        }
    }

    fn requests(&self, work: &Work, action: RetractAction) -> Vec<SubRequest> {
        let mb = work.mailbox.as_str();
        match &work.step {
            Step::Locate => vec![Self::list_request(mb, &work.internet_message_id)],
            Step::Resolve(ids) => ids
                .iter()
                .filter_map(|v| v.as_str())
                .map(|id| Self::get_request(mb, id))
                .collect(),
            Step::Act(copy) => {
                let item = format!("{}/messages/{}", Self::user_path(mb), enc(&copy.id));
                vec![
                    match action.effective_for(crate::model::TenantKind::GoogleWorkspace) {
                        RetractAction::Junk => SubRequest::mutate(
                            Method::POST,
                            format!("{item}/modify"),
                            Some(json!({ "addLabelIds": ["SPAM"], "removeLabelIds": ["INBOX"] })),
                            mb,
                            units::MODIFY,
                        ),
                        RetractAction::HardDelete => {
                            SubRequest::mutate(Method::DELETE, item, None, mb, units::DELETE)
                        }
                        _ => SubRequest::mutate(
                            Method::POST,
                            format!("{item}/trash"),
                            None,
                            mb,
                            units::TRASH,
                        ),
                    },
                ]
            }
            Step::Verify(copy) => vec![Self::get_request(mb, &copy.id)],
            Step::Done(_) => Vec::new(),
        }
    }

    fn advance(&self, work: &mut Work, action: RetractAction, responses: &[SubResponse]) {
        let effective = action.effective_for(crate::model::TenantKind::GoogleWorkspace);
        let mb = work.mailbox.clone();
        let mid = work.internet_message_id.clone();
        let step = std::mem::replace(&mut work.step, Step::Locate);
        work.step = match step {
            Step::Locate => match first_error(responses, Operation::Directory) {
                Some(f) => Step::Done(Err(f)),
                None => {
                    let ids: Vec<Value> = responses
                        .first()
                        .and_then(|r| r.body["messages"].as_array())
                        .into_iter()
                        .flatten()
                        .filter_map(|m| m["id"].as_str().map(|s| Value::String(s.into())))
                        .collect();
                    if ids.is_empty() {
                        choose(Vec::new(), &mb)
                    } else {
                        Step::Resolve(ids)
                    }
                }
            },
            Step::Resolve(_) => {
                let copies: Vec<LocatedCopy> = responses
                    .iter()
                    .filter(|r| r.ok())
                    .map(|r| Self::to_copy(&mb, &mid, &r.body))
                    .collect();
                match (copies.is_empty(), first_error(responses, Operation::Read)) {
                    (true, Some(f)) => Step::Done(Err(f)),
                    _ => choose(copies, &mb),
                }
            }
            Step::Act(copy) => match first_error(responses, Operation::Mutate) {
                Some(f) => Step::Done(Err(f)),
                None => match moved_before_acted(responses, effective) {
                    Some(f) => Step::Done(Err(f)),
                    None => Step::Done(Ok(applied(&copy, action, effective, ""))),
                },
            },
            Step::Verify(copy) => {
                let r = responses.first();
                let note = " (outcome verified after an unanswered request)";
                match r {
                    Some(r) if r.status == 404 && effective == RetractAction::HardDelete => {
                        Step::Done(Ok(applied(&copy, action, effective, note)))
                    }
                    Some(r) if r.ok() => {
                        let now = Self::to_copy(&mb, &mid, &r.body);
                        let done = match effective {
                            RetractAction::Junk => now.folder == Folder::Junk,
                            RetractAction::HardDelete => false,
                            _ => now.folder == Folder::Trash,
                        };
                        if done {
                            Step::Done(Ok(applied(&copy, action, effective, note)))
                        } else if now.folder.is_gone() {
                            // Out of sight, not where this action puts it: the lost request
                            // may have landed and a user moved the copy on (acting again
                            // would retract it twice), or it never went out. Left alone.
                            Step::Done(Err(Failure::new(
                                FailureReason::AlreadyGone,
                                None,
                                "already_moved",
                                format!(
                                    "the copy is in {}, not where this action puts it {MAY_HAVE_LANDED}",
                                    now.folder
                                ),
                            )))
                        } else {
                            Step::Act(copy)
                        }
                    }
                    Some(r) => Step::Done(Err(classify(r.status, &r.body, Operation::Read))),
                    None => Step::Done(Err(super::errors::internal("no verify response"))),
                }
            }
            done @ Step::Done(_) => done,
        };
    }
}
