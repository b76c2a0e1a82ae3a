//! The mail trace (DESIGN §2, §5): what was delivered to whom. `ingest` reads EML, Maildir, mbox,
//! Microsoft journal reports and verdict feeds into [`TraceRecord`]s; `query` is the search
//! language; `search` formats results and groups campaigns. Storage is `crate::store::trace`.

use crate::model::{Disposition, normalize_message_id};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::hash::Hash;

pub mod ingest;
pub mod query;
pub mod search;
pub mod sync;

/// How a recipient is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientKind {
    /// The message was delivered to this mailbox (journal report, `X-Original-To`, `Delivered-To`,
    /// provider sync). Authoritative for retraction.
    Envelope,
    To,
    Cc,
    Bcc,
}

impl RecipientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientKind::Envelope => "envelope",
            RecipientKind::To => "to",
            RecipientKind::Cc => "cc",
            RecipientKind::Bcc => "bcc",
        }
    }

    pub fn parse(s: &str) -> Option<RecipientKind> {
        Some(match s {
            "envelope" => RecipientKind::Envelope,
            "to" => RecipientKind::To,
            "cc" => RecipientKind::Cc,
            "bcc" => RecipientKind::Bcc,
            _ => return None,
        })
    }
}

/// One recipient address (lowercased) and how it is known.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    pub kind: RecipientKind,
}

/// A delivered message as the trace knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// Store row id; `None` until stored.
    pub id: Option<i64>,
    /// Configured tenant name, or empty when no tenant's domains match.
    pub tenant: String,
    /// Normalized Internet Message-ID, `<local@domain>`.
    pub message_id: String,
    /// True when the message had no usable Message-ID and `message_id` is a hash of its headers
    /// (`<sha256-prefix@synthetic.clawback.invalid>`).
    pub synthetic_id: bool,
    /// Header From address (Sender when From is absent), lowercased.
    pub sender: String,
    pub sender_name: Option<String>,
    /// Envelope sender (`Return-Path`), lowercased.
    pub envelope_sender: Option<String>,
    /// Decoded subject.
    pub subject: String,
    /// Received time, Unix seconds (UTC).
    pub received: i64,
    /// Size in bytes of the raw message.
    pub size: u64,
    pub recipients: Vec<Recipient>,
    /// Normalized Message-IDs of `In-Reply-To`.
    pub in_reply_to: Vec<String>,
    /// Normalized Message-IDs of `References`.
    pub references: Vec<String>,
    /// Outlook `Thread-Index`, as given.
    pub thread_index: Option<String>,
    pub urls: Vec<String>,
    /// Lowercase hex SHA-256 of each attachment.
    pub attachments: Vec<String>,
    pub disposition: Option<Disposition>,
    /// Where the disposition came from: `header:NAME`, `feed:SOURCE`, `intel:…`, `report:…`.
    pub disposition_source: Option<String>,
    /// Set by the engine when the message was retracted (Unix seconds).
    pub retracted_at: Option<i64>,
    /// Retraction state word set by the engine (e.g. `retracted`, `partial`, `restored`).
    pub retraction_state: Option<String>,
}

impl TraceRecord {
    /// The mailboxes the message was delivered to: the envelope recipients when known, otherwise
    /// the header To/Cc/Bcc addresses. Deduplicated, in stored order.
    pub fn delivered_to(&self) -> Vec<&str> {
        let has_envelope = self
            .recipients
            .iter()
            .any(|r| r.kind == RecipientKind::Envelope);
        unique_in_order(
            self.recipients
                .iter()
                .filter(|r| (r.kind == RecipientKind::Envelope) == has_envelope)
                .map(|r| r.address.as_str()),
        )
    }

    /// The addresses the headers name (To, Cc, Bcc), deduplicated, in stored order: lists,
    /// mailboxes and outside addresses alike (what `delivered_to` leaves out when the envelope
    /// is known).
    pub fn named_recipients(&self) -> Vec<&str> {
        unique_in_order(
            self.recipients
                .iter()
                .filter(|r| r.kind != RecipientKind::Envelope)
                .map(|r| r.address.as_str()),
        )
    }

    /// Adds recipients of one kind, in order, skipping every (address, kind) already there.
    /// Linear in the recipients old and new: a header or journal report naming 50,000 addresses
    /// took 20 s one [`TraceRecord::add_recipient`] at a time.
    pub fn add_recipients<S: AsRef<str>>(
        &mut self,
        addresses: impl IntoIterator<Item = S>,
        kind: RecipientKind,
    ) {
        let mut seen: HashSet<String> = self
            .recipients
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.address.clone())
            .collect();
        for address in addresses {
            let address = address.as_ref().trim().to_ascii_lowercase();
            if !address.is_empty() && seen.insert(address.clone()) {
                self.recipients.push(Recipient { address, kind });
            }
        }
    }

    /// Adds a recipient unless the same (address, kind) is already there (one scan: use
    /// [`TraceRecord::add_recipients`] for many).
    pub fn add_recipient(&mut self, address: &str, kind: RecipientKind) {
        let address = address.trim().to_ascii_lowercase();
        if address.is_empty() {
            return;
        }
        if !self
            .recipients
            .iter()
            .any(|r| r.kind == kind && r.address == address)
        {
            self.recipients.push(Recipient { address, kind });
        }
    }
}

/// `items` in their first-seen order, each once. Linear: a set remembers what was seen (one hash
/// and at most a few comparisons per item), where `Vec::contains` compared each new item with
/// every kept one and made a `References` of 200,000 ids take minutes.
pub fn unique_in_order<T: Eq + Hash + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen: HashSet<T> = HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(item.clone()))
        .collect()
}

/// The Message-IDs of `In-Reply-To` / `References` values: whitespace-separated, normalized
/// (`<id@host>`), the unusable ones dropped, in order, each once. The one rule for ingested and
/// synced mail, linear in the input.
pub fn message_id_list<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    unique_in_order(
        values
            .into_iter()
            .flat_map(str::split_whitespace)
            .filter_map(normalize_message_id),
    )
}
