//! Domain vocabulary shared by every module (DESIGN §2): tenants, dispositions, actions,
//! triggers, failure reasons and folders. Spellings here are the ones the CLI, config,
//! plan files and metrics use, so they are part of the public contract.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which provider a tenant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum TenantKind {
    Microsoft365,
    GoogleWorkspace,
}

impl TenantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantKind::Microsoft365 => "microsoft365",
            TenantKind::GoogleWorkspace => "google_workspace",
        }
    }
}

impl fmt::Display for TenantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a word that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?}; expected one of: {expected}")]
pub struct UnknownWord {
    pub what: &'static str,
    pub given: String,
    pub expected: &'static str,
}

macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident, $what:literal, { $($(#[$vm:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// Every value, in display order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The canonical spelling (CLI, config, JSON).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let lower = s.trim().to_ascii_lowercase().replace('-', "_");
                match lower.as_str() {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownWord {
                        what: $what,
                        given: s.to_string(),
                        expected: concat!($($word, " "),+),
                    }),
                }
            }
        }
    };
}

word_enum!(
    /// A message's verdict. Ordered from most to least severe.
    Disposition, "disposition", {
        Malicious => "malicious",
        Suspicious => "suspicious",
        Spoof => "spoof",
        Spam => "spam",
        Bulk => "bulk",
    }
);

impl Disposition {
    /// Severity rank: lower is worse. Used to decide whether a new verdict is an upgrade.
    pub fn severity(self) -> u8 {
        self as u8
    }
}

word_enum!(
    /// What to do with a copy.
    RetractAction, "action", {
        NoAction => "no_action",
        Junk => "junk",
        Trash => "trash",
        SoftDelete => "soft_delete",
        HardDelete => "hard_delete",
    }
);

impl RetractAction {
    /// Human label for screens.
    pub fn label(self) -> &'static str {
        match self {
            RetractAction::NoAction => "No action",
            RetractAction::Junk => "Junk Email",
            RetractAction::Trash => "Trash",
            RetractAction::SoftDelete => "Soft Delete",
            RetractAction::HardDelete => "Hard Delete",
        }
    }

    /// The action actually performed on a provider: Gmail has no soft delete, so it becomes Trash.
    pub fn effective_for(self, kind: TenantKind) -> RetractAction {
        match (self, kind) {
            (RetractAction::SoftDelete, TenantKind::GoogleWorkspace) => RetractAction::Trash,
            (a, _) => a,
        }
    }
}

word_enum!(
    /// Why a retraction happened.
    Trigger, "trigger", {
        Manual => "manual",
        Auto => "auto",
        PostDelivery => "post_delivery",
        PhishSubmission => "phish_submission",
    }
);

impl Trigger {
    /// Metrics count every non-manual trigger as "Auto".
    pub fn is_auto(self) -> bool {
        !matches!(self, Trigger::Manual)
    }
}

word_enum!(
    /// One failure taxonomy for both providers (DESIGN §2).
    FailureReason, "failure reason", {
        AlreadyGone => "already_gone",
        NotAMailbox => "not_a_mailbox",
        NotAuthorized => "not_authorized",
        External => "external",
        Throttled => "throttled",
        ProviderError => "provider_error",
        // Not acted on: another job holds the copy (pending or in flight there, or already
        // retracted with the same action and not restored).
        InAnotherJob => "in_another_job",
        // Restore only: the copy is no longer where the retraction put it (a later job or the
        // user moved it), so it is left alone.
        MovedSince => "moved_since",
    }
);

word_enum!(
    /// Operator roles (issue 5): viewer < responder < admin.
    Role, "role", {
        Viewer => "viewer",
        Responder => "responder",
        Admin => "admin",
    }
);

/// Where a copy sits, in provider-neutral terms. Graph well-known folder names and Gmail system
/// labels both map onto this.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Folder {
    Inbox,
    Junk,
    /// Graph `deleteditems`, Gmail `TRASH`.
    Trash,
    SentItems,
    Archive,
    Drafts,
    /// Graph `recoverableitemsdeletions` (soft-deleted, user recoverable).
    RecoverableDeletions,
    /// Graph Purges / Gmail permanently deleted: admin recoverable only.
    Purged,
    /// A user folder by display name.
    Other(String),
}

impl Folder {
    /// Graph well-known folder name (or the display name for user folders).
    pub fn graph_name(&self) -> &str {
        match self {
            Folder::Inbox => "inbox",
            Folder::Junk => "junkemail",
            Folder::Trash => "deleteditems",
            Folder::SentItems => "sentitems",
            Folder::Archive => "archive",
            Folder::Drafts => "drafts",
            Folder::RecoverableDeletions => "recoverableitemsdeletions",
            Folder::Purged => "purges",
            Folder::Other(name) => name,
        }
    }

    /// Parses a Graph well-known folder name (case-insensitive).
    pub fn from_graph_name(name: &str) -> Folder {
        match name.to_ascii_lowercase().as_str() {
            "inbox" => Folder::Inbox,
            "junkemail" => Folder::Junk,
            "deleteditems" => Folder::Trash,
            "sentitems" => Folder::SentItems,
            "archive" => Folder::Archive,
            "drafts" => Folder::Drafts,
            "recoverableitemsdeletions" => Folder::RecoverableDeletions,
            "purges" => Folder::Purged,
            _ => Folder::Other(name.to_string()),
        }
    }

    /// Short display name for screens and CLI tables.
    pub fn label(&self) -> &str {
        match self {
            Folder::Inbox => "Inbox",
            Folder::Junk => "Junk",
            Folder::Trash => "Trash",
            Folder::SentItems => "Sent",
            Folder::Archive => "Archive",
            Folder::Drafts => "Drafts",
            Folder::RecoverableDeletions => "Recoverable",
            Folder::Purged => "Purged",
            Folder::Other(name) => name,
        }
    }

    /// True where a copy no longer bothers its user: a retraction found there is `already_gone`.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            Folder::Junk | Folder::Trash | Folder::RecoverableDeletions | Folder::Purged
        )
    }
}

impl fmt::Display for Folder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Normalizes an Internet Message-ID to the bracketed form `<local@domain>`.
/// Returns `None` for values that cannot be a Message-ID (empty, whitespace inside, no `@`).
pub fn normalize_message_id(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let inner = trimmed
        .strip_prefix('<')
        .map(|s| s.strip_suffix('>').unwrap_or(s))
        .unwrap_or(trimmed);
    let inner = inner.strip_suffix('>').unwrap_or(inner);
    if inner.is_empty()
        || inner
            .chars()
            .any(|c| c.is_whitespace() || c == '<' || c == '>')
        || !inner
            .rsplit_once('@')
            .is_some_and(|(left, right)| !left.is_empty() && !right.is_empty())
    {
        return None;
    }
    Some(format!("<{inner}>"))
}

/// The domain part of an address, lowercased.
pub fn address_domain(address: &str) -> Option<String> {
    let (_, domain) = address.trim().rsplit_once('@')?;
    if domain.is_empty() {
        None
    } else {
        Some(domain.to_ascii_lowercase())
    }
}

/// One job item's final state, as the metrics see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemOutcome {
    pub tenant: String,
    pub trigger: Trigger,
    /// `None` while pending/in flight; `Some(Ok(()))` succeeded; `Some(Err(reason))` failed.
    pub result: Option<Result<(), FailureReason>>,
    /// Skipped items (nothing to do) never count.
    pub skipped: bool,
    pub dry_run: bool,
    /// Read state of the copy when it was acted on.
    pub read: bool,
    /// When the item finished (succeeded or failed).
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the message was delivered to this mailbox.
    pub delivered_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the message was found bad (job creation for manual, verdict time for auto).
    pub detected_at: Option<chrono::DateTime<chrono::Utc>>,
    /// 429 / rate-limit responses seen for this item, and seconds waited on them.
    pub throttled: u32,
    pub waited_secs: f64,
    /// A Hard Delete in a mailbox on hold: succeeded for the user, kept for admins.
    pub retained_by_hold: bool,
}

/// Serializes JSON with object keys sorted at every level and no insignificant whitespace.
pub fn canonical_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(*k) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_reject_unknown() {
        for a in RetractAction::ALL {
            assert_eq!(a.as_str().parse::<RetractAction>(), Ok(*a));
        }
        assert_eq!(
            "Hard-Delete".parse::<RetractAction>(),
            Ok(RetractAction::HardDelete)
        );
        let err = "purge".parse::<RetractAction>().unwrap_err();
        assert!(
            err.to_string().contains("unknown action \"purge\""),
            "{err}"
        );
        assert!(err.to_string().contains("hard_delete"));
    }

    #[test]
    fn soft_delete_maps_to_trash_on_gmail_only() {
        assert_eq!(
            RetractAction::SoftDelete.effective_for(TenantKind::GoogleWorkspace),
            RetractAction::Trash
        );
        assert_eq!(
            RetractAction::SoftDelete.effective_for(TenantKind::Microsoft365),
            RetractAction::SoftDelete
        );
    }

    #[test]
    fn message_ids_normalize() {
        assert_eq!(normalize_message_id("a@b").as_deref(), Some("<a@b>"));
        assert_eq!(normalize_message_id(" <a@b> ").as_deref(), Some("<a@b>"));
        assert_eq!(normalize_message_id("<a b@c>"), None);
        assert_eq!(normalize_message_id("<>"), None);
        assert_eq!(normalize_message_id("nodomain"), None);
        // RFC 5322 msg-id: both id-left and id-right are required.
        assert_eq!(normalize_message_id("<@evil.example>"), None);
        assert_eq!(normalize_message_id("<phish@>"), None);
    }

    #[test]
    fn folders_map_graph_names() {
        for f in [
            Folder::Inbox,
            Folder::Junk,
            Folder::Trash,
            Folder::RecoverableDeletions,
        ] {
            assert_eq!(Folder::from_graph_name(f.graph_name()), f);
        }
        assert_eq!(Folder::from_graph_name("JunkEmail"), Folder::Junk);
    }
}
