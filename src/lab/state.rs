//! The lab's in-memory world: tenants, directory objects, mailboxes and the copies in them.
//!
//! Both provider faces (Graph and Gmail) read and change this one model, so `/_lab/` can report
//! where every copy is regardless of which API moved it. Copies keep provider-style ids: a Graph
//! copy has a regular id that changes on every move (the old one is forgotten, so it 404s) and
//! an immutable id (`Prefer: IdType="ImmutableId"`) that it keeps while it stays in its mailbox;
//! a Gmail copy keeps its one id for life.

use crate::model::{Folder, TenantKind};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Index of a tenant in [`LabState::tenants`].
pub type TenantIdx = usize;

/// The content of a delivered message, shared by all of its copies.
#[derive(Debug, Clone, Serialize)]
pub struct MessageContent {
    /// Bracketed Internet Message-ID.
    pub internet_message_id: String,
    /// The full RFC 5322 text.
    pub raw: String,
    pub subject: String,
    /// Header From address.
    pub from: String,
    pub from_name: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub date: DateTime<Utc>,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    /// Conversation key: every message of one conversation shares it.
    pub conversation_key: String,
    pub body_text: String,
    pub has_attachments: bool,
    /// Attachments as (name, content type, bytes).
    #[serde(skip)]
    pub attachments: Vec<Attachment>,
}

#[derive(Debug, Clone)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// One copy of a message in one mailbox.
#[derive(Debug, Clone, Serialize)]
pub struct Copy {
    /// Provider id: Graph's regular id changes on move; Gmail ids never change.
    pub id: String,
    /// Graph's immutable id: kept across moves within the mailbox (PROVIDER-APIS.md §F.3).
    /// Gmail: the same as `id`.
    pub immutable_id: String,
    pub folder: Folder,
    pub read: bool,
    /// Extra Gmail labels (user labels, STARRED, categories) beyond folder and UNREAD.
    pub extra_labels: Vec<String>,
    #[serde(skip)]
    pub content: Arc<MessageContent>,
    pub received: DateTime<Utc>,
    /// Sequence number of the last change to this copy in its mailbox's journal (Gmail's
    /// `historyId` of the message).
    #[serde(skip)]
    pub changed: u64,
}

/// Where a copy was, or is, as a mailbox change sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The copy's regular id at that moment (Graph's changes on move).
    pub id: String,
    pub folder: Folder,
    pub read: bool,
    pub extra_labels: Vec<String>,
}

impl Placement {
    pub fn of(copy: &Copy) -> Placement {
        Placement {
            id: copy.id.clone(),
            folder: copy.folder.clone(),
            read: copy.read,
            extra_labels: copy.extra_labels.clone(),
        }
    }
}

/// One change to one copy, in its mailbox's journal: what Graph's `messages/delta` and Gmail's
/// `users.history.list` report after a cursor.
#[derive(Debug, Clone)]
pub struct Change {
    /// Lab-wide increasing sequence number (Gmail history ids are increasing, not contiguous).
    pub seq: u64,
    /// The copy's immutable id (Gmail: its id).
    pub immutable_id: String,
    /// The message (shared with its copies).
    pub content: Arc<MessageContent>,
    /// `None`: delivered by this change.
    pub before: Option<Placement>,
    /// Where it is after the change (`Purged`: gone from every view).
    pub after: Placement,
}

/// A user in the directory; `has_mailbox = false` models an account without Exchange/Gmail.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// Directory object id (GUID for Graph, numeric string for Google).
    pub id: String,
    pub address: String,
    pub display_name: String,
    pub has_mailbox: bool,
    pub on_hold: bool,
    pub is_admin: bool,
    /// Sign-in name (lowercase); the address unless the scenario says otherwise.
    pub upn: String,
    /// Other addresses of this mailbox (lowercase).
    pub aliases: Vec<String>,
    /// Mailboxes this user holds FullAccess to (lowercase).
    pub full_access: Vec<String>,
}

/// A distribution list / group; members are addresses (users, groups, or external contacts).
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub id: String,
    pub address: String,
    pub display_name: String,
    pub members: Vec<String>,
    /// Listing members needs `Member.Read.Hidden` (Graph).
    pub hidden_membership: bool,
    /// An Exchange dynamic distribution group: unknown to Graph.
    pub dynamic: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Domain {
    pub name: String,
    pub verified: bool,
    /// Whether the app is allowed to act on mailboxes of this domain (an application access
    /// policy in Microsoft 365, domain-wide delegation scope in Google). Ungranted → 403.
    pub retract_granted: bool,
}

/// Credentials the lab accepts for a tenant.
#[derive(Debug, Clone, Serialize)]
pub struct Credentials {
    pub client_id: String,
    #[serde(skip)]
    pub client_secret: String,
    /// PEM public key that verifies client assertions (Microsoft) or service-account JWTs (Google).
    #[serde(skip)]
    pub public_key_pem: String,
    /// DER of the Microsoft app certificate, for `x5t` / `x5t#S256` thumbprints.
    #[serde(skip)]
    pub certificate_der: Vec<u8>,
    /// Service account email (Google).
    pub client_email: String,
    /// Graph application roles granted (Microsoft) or delegated scopes (Google).
    pub granted: Vec<String>,
}

/// A mailbox: copies by their current provider id.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Mailbox {
    pub copies: BTreeMap<String, Copy>,
    /// Changes since the journal was last cleared, oldest first.
    #[serde(skip)]
    pub changes: Vec<Change>,
    /// Cursors (history ids, delta positions) below this are out of date: the journal no longer
    /// reaches back that far (Gmail: 404, Graph: 410 → full resync).
    #[serde(skip)]
    pub history_floor: u64,
    /// The user's own folders (Graph) / labels (Gmail) by path (`Projects/2026`: a child of
    /// `Projects`; `Inbox/Invoices`: a child of the Inbox), each with the change sequence
    /// number that created it. A folder stays when it empties, as in Exchange.
    #[serde(skip)]
    pub folders: BTreeMap<String, u64>,
    /// Graph immutable id → current regular id.
    #[serde(skip)]
    immutable: BTreeMap<String, String>,
}

impl Mailbox {
    /// The current id of the copy named by `id`, a regular or an immutable id.
    pub fn resolve<'a>(&'a self, id: &'a str) -> Option<&'a str> {
        if self.copies.contains_key(id) {
            return Some(id);
        }
        self.immutable.get(id).map(String::as_str)
    }

    /// The copy named by a regular or an immutable id.
    pub fn get(&self, id: &str) -> Option<&Copy> {
        self.resolve(id)
            .and_then(|current| self.copies.get(current))
    }

    /// Puts a copy in under its current id (and its immutable id, when that differs).
    pub fn insert(&mut self, copy: Copy) {
        if copy.immutable_id != copy.id {
            self.immutable
                .insert(copy.immutable_id.clone(), copy.id.clone());
        }
        self.copies.insert(copy.id.clone(), copy);
    }

    /// Takes out the copy named by a regular or an immutable id.
    pub fn remove(&mut self, id: &str) -> Option<Copy> {
        let current = self.resolve(id)?.to_string();
        let copy = self.copies.remove(&current)?;
        self.immutable.remove(&copy.immutable_id);
        Some(copy)
    }
}

/// One tenant of the lab.
#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    pub name: String,
    pub kind: TenantKind,
    /// Microsoft national cloud (scopes and token audience name its Graph resource).
    pub cloud: crate::config::Cloud,
    /// Mailboxes an Exchange RBAC-for-Applications role assignment lets the app read and write
    /// (without an Entra `Mail.ReadWrite` consent); `None`: no such assignment.
    pub rbac_mail_scope: Option<std::collections::BTreeSet<String>>,
    /// Microsoft: the directory id (GUID) also accepted as its primary domain; Google: customer id.
    pub tenant_id: String,
    pub domains: Vec<Domain>,
    pub credentials: Credentials,
    pub admin_user: Option<String>,
    /// The scenario's phish-report mailboxes.
    pub report_mailboxes: Vec<String>,
    /// Users by lowercased address.
    pub users: BTreeMap<String, User>,
    /// Groups by lowercased address.
    pub groups: BTreeMap<String, Group>,
    /// Mailboxes by lowercased address.
    pub mailboxes: BTreeMap<String, Mailbox>,
}

/// A record of one mutating call that reached a copy.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    pub tenant: String,
    pub mailbox: String,
    pub internet_message_id: String,
    /// e.g. `move:junkemail`, `delete`, `permanentDelete`, `modify`, `trash`, `untrash`.
    pub action: String,
    pub from_folder: Folder,
    pub to_folder: Folder,
}

/// The whole lab world.
#[derive(Debug, Default)]
pub struct LabState {
    pub tenants: Vec<Tenant>,
    pub actions: Vec<ActionRecord>,
    id_counter: u64,
    /// The last mailbox change sequence number given out.
    change_seq: u64,
}

/// What happened when a copy was looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found,
    NoSuchMailbox,
    NoSuchCopy,
}

impl LabState {
    pub fn new(tenants: Vec<Tenant>) -> Self {
        LabState {
            tenants,
            actions: Vec::new(),
            id_counter: 0,
            change_seq: 0,
        }
    }

    pub fn tenant_index(&self, name_or_id: &str) -> Option<TenantIdx> {
        self.tenants.iter().position(|t| {
            t.name.eq_ignore_ascii_case(name_or_id)
                || t.tenant_id.eq_ignore_ascii_case(name_or_id)
                || t.domains
                    .iter()
                    .any(|d| d.name.eq_ignore_ascii_case(name_or_id))
        })
    }

    /// A fresh provider id for a copy. Graph-style ids are long base64url strings, Gmail ids
    /// 16 hex digits; both are unique across the lab.
    pub fn next_id(&mut self, kind: TenantKind) -> String {
        self.fresh_id(kind, [0x00, 0x03, 0x24, 0x00])
    }

    /// A fresh Graph immutable id (`AAkAL…`, the shape Exchange gives them; regular ids read
    /// `AAMkA…`). Gmail ids are immutable anyway: the same as [`LabState::next_id`].
    pub fn next_immutable_id(&mut self, kind: TenantKind) -> String {
        self.fresh_id(kind, [0x00, 0x09, 0x00, 0x2e])
    }

    fn fresh_id(&mut self, kind: TenantKind, prefix: [u8; 4]) -> String {
        self.id_counter += 1;
        let digest = Sha256::digest(self.id_counter.to_be_bytes());
        match kind {
            TenantKind::Microsoft365 => {
                use base64::Engine;
                let mut bytes = prefix.to_vec();
                bytes.extend_from_slice(&digest[..24]);
                bytes.extend_from_slice(&self.id_counter.to_be_bytes());
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            }
            TenantKind::GoogleWorkspace => {
                format!(
                    "{:04x}{}",
                    self.id_counter & 0xffff,
                    &hex::encode(&digest[..6])
                )
            }
        }
    }

    /// The current change sequence number: a cursor taken now sees every later change.
    pub fn change_seq(&self) -> u64 {
        self.change_seq
    }

    /// Journals a change of the copy (now `after`, as stored in `mailbox`) for delta and
    /// history readers, and stamps the copy with its sequence number.
    fn journal(&mut self, t: TenantIdx, mailbox: &str, before: Option<Placement>, id: &str) {
        self.change_seq += 1;
        let seq = self.change_seq;
        let Some(mb) = self.tenants[t].mailboxes.get_mut(mailbox) else {
            return;
        };
        let Some(current) = mb.resolve(id).map(str::to_string) else {
            return;
        };
        let Some(copy) = mb.copies.get_mut(&current) else {
            return;
        };
        copy.changed = seq;
        if let Folder::Other(path) = &copy.folder {
            // The folder and every parent on its path exist from the first copy put there.
            let mut end = 0;
            while end < path.len() {
                end = path[end..].find('/').map_or(path.len(), |i| end + i);
                let prefix = &path[..end];
                let standard = crate::lab::graph::json::standard_folder_named(prefix).is_some();
                if !prefix.is_empty() && !standard && !mb.folders.contains_key(prefix) {
                    mb.folders.insert(prefix.to_string(), seq);
                }
                end += 1;
            }
        }
        let change = Change {
            seq,
            immutable_id: copy.immutable_id.clone(),
            content: copy.content.clone(),
            before,
            after: Placement::of(copy),
        };
        mb.changes.push(change);
    }

    /// Forgets every mailbox's journal (after a scenario is loaded: nobody holds a cursor
    /// yet, and a 100,000-mailbox lab should not keep one entry per delivered copy).
    pub fn clear_journals(&mut self) {
        for t in &mut self.tenants {
            for mb in t.mailboxes.values_mut() {
                mb.changes = Vec::new();
            }
        }
    }

    /// Expires a mailbox's history: every cursor taken so far is out of date (Gmail 404 on
    /// its `startHistoryId`, Graph 410 on its delta token). Returns whether the mailbox exists.
    pub fn expire_history(&mut self, t: TenantIdx, mailbox: &str) -> bool {
        self.change_seq += 1;
        let floor = self.change_seq;
        match self.tenants[t]
            .mailboxes
            .get_mut(&mailbox.to_ascii_lowercase())
        {
            Some(mb) => {
                mb.changes.clear();
                mb.history_floor = floor;
                true
            }
            None => false,
        }
    }

    /// Records a mutating action for `/_lab/actions`, its copy's previous folder `from`
    /// (read state and labels unchanged).
    pub fn record(&mut self, t: TenantIdx, mailbox: &str, copy: &Copy, action: &str, from: Folder) {
        let before = Placement {
            folder: from,
            ..Placement::of(copy)
        };
        self.record_change(t, mailbox, copy, action, before);
    }

    /// Records a mutating action for `/_lab/actions` and journals it for delta/history
    /// readers: the copy was at `before` and is now `copy`.
    pub fn record_change(
        &mut self,
        t: TenantIdx,
        mailbox: &str,
        copy: &Copy,
        action: &str,
        before: Placement,
    ) {
        let from = before.folder.clone();
        self.journal(t, mailbox, Some(before), &copy.id);
        let tenant = self.tenants[t].name.clone();
        self.actions.push(ActionRecord {
            tenant,
            mailbox: mailbox.to_string(),
            internet_message_id: copy.content.internet_message_id.clone(),
            action: action.to_string(),
            from_folder: from,
            to_folder: copy.folder.clone(),
        });
    }

    /// Moves a copy (named by a regular or an immutable id) to `folder`. Graph semantics: the
    /// copy gets a new regular id, returned here, and the old one no longer resolves; its
    /// immutable id stays. Gmail semantics (`keep_id`): the id stays.
    pub fn move_copy(
        &mut self,
        t: TenantIdx,
        mailbox: &str,
        id: &str,
        folder: Folder,
        action: &str,
        keep_id: bool,
    ) -> Result<Copy, Lookup> {
        let kind = self.tenants[t].kind;
        let new_id = if keep_id {
            String::new()
        } else {
            self.next_id(kind)
        };
        let mb = self.tenants[t]
            .mailboxes
            .get_mut(&mailbox.to_ascii_lowercase())
            .ok_or(Lookup::NoSuchMailbox)?;
        let mut copy = mb.remove(id).ok_or(Lookup::NoSuchCopy)?;
        let before = Placement::of(&copy);
        copy.folder = folder;
        if keep_id {
            // A Gmail copy: one id, kept for life.
            copy.id = copy.immutable_id.clone();
        } else {
            copy.id = new_id;
        }
        mb.insert(copy.clone());
        self.record_change(t, &mailbox.to_ascii_lowercase(), &copy, action, before);
        copy.changed = self.change_seq;
        Ok(copy)
    }

    /// The copy with this id (regular or immutable) in this mailbox.
    pub fn copy(&self, t: TenantIdx, mailbox: &str, id: &str) -> Result<&Copy, Lookup> {
        let mb = self.tenants[t]
            .mailboxes
            .get(&mailbox.to_ascii_lowercase())
            .ok_or(Lookup::NoSuchMailbox)?;
        mb.get(id).ok_or(Lookup::NoSuchCopy)
    }

    pub fn copy_mut(&mut self, t: TenantIdx, mailbox: &str, id: &str) -> Result<&mut Copy, Lookup> {
        let mb = self.tenants[t]
            .mailboxes
            .get_mut(&mailbox.to_ascii_lowercase())
            .ok_or(Lookup::NoSuchMailbox)?;
        let current = mb.resolve(id).ok_or(Lookup::NoSuchCopy)?.to_string();
        mb.copies.get_mut(&current).ok_or(Lookup::NoSuchCopy)
    }

    /// Delivers a new message to the given mailboxes (scenario loading and `/_lab/deliver`).
    /// Returns the new copies' ids per mailbox; unknown mailboxes are skipped and reported.
    pub fn deliver(
        &mut self,
        t: TenantIdx,
        content: Arc<MessageContent>,
        copies: &[(String, Folder, bool)],
    ) -> (Vec<(String, String)>, Vec<String>) {
        let kind = self.tenants[t].kind;
        let mut placed = Vec::new();
        let mut unknown = Vec::new();
        for (mailbox, folder, read) in copies {
            let key = mailbox.to_ascii_lowercase();
            if !self.tenants[t].mailboxes.contains_key(&key) {
                unknown.push(mailbox.clone());
                continue;
            }
            let id = self.next_id(kind);
            let immutable_id = match kind {
                TenantKind::Microsoft365 => self.next_immutable_id(kind),
                TenantKind::GoogleWorkspace => id.clone(),
            };
            let copy = Copy {
                id: id.clone(),
                immutable_id,
                folder: folder.clone(),
                read: *read,
                extra_labels: Vec::new(),
                content: content.clone(),
                received: content.date,
                changed: 0,
            };
            if let Some(mb) = self.tenants[t].mailboxes.get_mut(&key) {
                mb.insert(copy);
            }
            self.journal(t, &key, None, &id);
            placed.push((key, id));
        }
        (placed, unknown)
    }

    /// Every copy of a message across the lab: (tenant, mailbox, copy).
    pub fn copies_of(&self, internet_message_id: &str) -> Vec<(&str, &str, &Copy)> {
        let mut out = Vec::new();
        for t in &self.tenants {
            for (addr, mb) in &t.mailboxes {
                for c in mb.copies.values() {
                    if c.content.internet_message_id == internet_message_id {
                        out.push((t.name.as_str(), addr.as_str(), c));
                    }
                }
            }
        }
        out
    }
}

impl Tenant {
    /// Whether the domain of `address` is one of this tenant's domains.
    pub fn domain_of(&self, address: &str) -> Option<&Domain> {
        let domain = crate::model::address_domain(address)?;
        self.domains
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(&domain))
    }

    /// Whether the app may act on this mailbox (its domain is granted).
    pub fn mailbox_granted(&self, address: &str) -> bool {
        self.domain_of(address).is_some_and(|d| d.retract_granted)
    }

    /// Finds a user by address (case-insensitive) or by directory id.
    pub fn user(&self, key: &str) -> Option<&User> {
        self.users
            .get(&key.to_ascii_lowercase())
            .or_else(|| self.users.values().find(|u| u.id == key))
    }

    /// Finds a user the way Graph's `/users/{key}` does: by directory id or userPrincipalName,
    /// never by a mail address that differs from the sign-in name, nor by an alias.
    pub fn graph_user(&self, key: &str) -> Option<&User> {
        let key = key.to_ascii_lowercase();
        // Almost always the sign-in name is the address the users are keyed by: found without
        // a scan (every mail request resolves its user under the lab's lock; scanning 10,000
        // users each time was a quarter of the lab's CPU in the retract_e2e profile).
        if let Some(u) = self.users.get(&key).filter(|u| u.upn == key) {
            return Some(u);
        }
        self.users
            .values()
            .find(|u| u.upn == key || u.id.eq_ignore_ascii_case(&key))
    }

    /// Finds a user by its primary address or any alias (Google's `users.get` accepts both).
    pub fn user_or_alias(&self, key: &str) -> Option<&User> {
        let key = key.to_ascii_lowercase();
        self.user(&key)
            .or_else(|| self.users.values().find(|u| u.aliases.contains(&key)))
    }

    /// Finds a group by address or directory id.
    pub fn group(&self, key: &str) -> Option<&Group> {
        self.groups
            .get(&key.to_ascii_lowercase())
            .or_else(|| self.groups.values().find(|g| g.id == key))
    }

    /// All members of a group, nested groups flattened (each address once, groups included).
    pub fn transitive_members(&self, group: &Group) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        let mut stack: Vec<String> = group.members.iter().rev().cloned().collect();
        while let Some(m) = stack.pop() {
            let key = m.to_ascii_lowercase();
            if !seen.insert(key.clone()) {
                continue;
            }
            out.push(key.clone());
            if let Some(g) = self.groups.get(&key) {
                stack.extend(g.members.iter().rev().cloned());
            }
        }
        out
    }
}

/// A deterministic directory id for an address (GUID-shaped for Graph, digits for Google).
pub fn directory_id(kind: TenantKind, address: &str) -> String {
    let d = Sha256::digest(address.to_ascii_lowercase().as_bytes());
    match kind {
        TenantKind::Microsoft365 => {
            let h = hex::encode(&d[..16]);
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        }
        TenantKind::GoogleWorkspace => {
            let n = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
            format!("1{n:020}")
        }
    }
}

/// Graph `conversationId` for a conversation key (same in every mailbox).
pub fn graph_conversation_id(key: &str) -> String {
    use base64::Engine;
    let d = Sha256::digest(key.as_bytes());
    let mut bytes = vec![0x00, 0x01, 0x10, 0x00];
    bytes.extend_from_slice(&d[..16]);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Gmail `threadId` for a conversation key in one mailbox (thread ids are per mailbox).
pub fn gmail_thread_id(key: &str, mailbox: &str) -> String {
    let d = Sha256::digest(format!("{key}\n{}", mailbox.to_ascii_lowercase()).as_bytes());
    hex::encode(&d[..8])
}
