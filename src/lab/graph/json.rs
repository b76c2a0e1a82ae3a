//! JSON shapes of Graph resources as the lab emits them. Property names are those of the
//! reference spec's schemas (`microsoft.graph.message`, `user`, `group`, `domain`, `mailFolder`).

use crate::lab::state::{Copy, Domain, Group, User, graph_conversation_id};
use crate::model::Folder;
use base64::Engine;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Message properties the lab serves; all but `internetMessageHeaders` come by default.
pub const MESSAGE_PROPERTIES: &[&str] = &[
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "conversationIndex",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
    "internetMessageHeaders",
];

/// User properties the lab serves (Graph's default set).
pub const USER_PROPERTIES: &[&str] = &[
    "id",
    "businessPhones",
    "displayName",
    "givenName",
    "surname",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "proxyAddresses",
    "userPrincipalName",
];

/// Group properties the lab serves.
pub const GROUP_PROPERTIES: &[&str] = &[
    "id",
    "description",
    "displayName",
    "groupTypes",
    "mail",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
    "proxyAddresses",
];

/// Graph date-time text (UTC, seconds, `Z`).
pub fn date(d: &chrono::DateTime<chrono::Utc>) -> String {
    d.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn digest_b64(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    base64::engine::general_purpose::STANDARD.encode(&h.finalize()[..18])
}

/// The folder id the lab emits for a folder of a mailbox (deterministic, Exchange-shaped).
pub fn folder_id(mailbox: &str, folder: &Folder) -> String {
    let d = Sha256::digest(format!(
        "folder\n{}\n{}",
        mailbox.to_ascii_lowercase(),
        folder.graph_name()
    ));
    let mut bytes = vec![0x00, 0x2e, 0x00, 0x00];
    bytes.extend_from_slice(&d[..28]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The folders a mailbox's folder tree (`mailFolders/delta`) shows besides the user's own:
/// the IPM subtree (Recoverable Items is outside it).
pub const TREE_FOLDERS: &[Folder] = &[
    Folder::Inbox,
    Folder::Junk,
    Folder::Trash,
    Folder::SentItems,
    Folder::Archive,
    Folder::Drafts,
];

/// The standard folder whose display name this is (case-insensitive): the first segment of a
/// user folder path like `Inbox/Invoices` names its parent.
pub fn standard_folder_named(name: &str) -> Option<Folder> {
    TREE_FOLDERS
        .iter()
        .find(|f| folder_display_name(f).eq_ignore_ascii_case(name))
        .cloned()
}

/// The id of a folder's parent: for a user folder path `A/B`, the folder `A` (a standard one
/// when `A` is its display name); otherwise the root (`msgfolderroot`).
pub fn folder_parent_id(mailbox: &str, folder: &Folder) -> String {
    let parent = match folder {
        Folder::Other(path) => path.rsplit_once('/').map(|(parent, _)| {
            standard_folder_named(parent).unwrap_or_else(|| Folder::Other(parent.to_string()))
        }),
        _ => None,
    };
    folder_id(
        mailbox,
        &parent.unwrap_or_else(|| Folder::Other("msgfolderroot".into())),
    )
}

/// The Outlook display name of a folder (a user folder's last path segment).
pub fn folder_display_name(folder: &Folder) -> &str {
    match folder {
        Folder::Inbox => "Inbox",
        Folder::Junk => "Junk Email",
        Folder::Trash => "Deleted Items",
        Folder::SentItems => "Sent Items",
        Folder::Archive => "Archive",
        Folder::Drafts => "Drafts",
        Folder::RecoverableDeletions => "Deletions",
        Folder::Purged => "Purges",
        Folder::Other(name) => name.rsplit('/').next().unwrap_or(name),
    }
}

fn recipient(address: &str, name: Option<&str>) -> Value {
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| crate::lab::scenario::display_name_of(address));
    json!({ "emailAddress": { "name": name, "address": address } })
}

/// Header fields of RFC 5322 text, unfolded, in order.
pub fn header_fields(raw: &str) -> Vec<(String, String)> {
    let head = raw
        .split("\r\n\r\n")
        .next()
        .map(|h| h.split("\n\n").next().unwrap_or(h))
        .unwrap_or("");
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

/// A message as Graph shows it. `select = None` gives the default property set.
pub fn message(copy: &Copy, mailbox: &str, select: Option<&[String]>) -> Value {
    let c = &copy.content;
    let wanted = |p: &str| match select {
        None => p != "internetMessageHeaders",
        Some(list) => p == "id" || list.iter().any(|s| s.eq_ignore_ascii_case(p)),
    };
    // The item's version, whichever kind of id it is shown under.
    let change_key = digest_b64(&[
        &copy.immutable_id,
        copy.folder.graph_name(),
        if copy.read { "r" } else { "u" },
    ]);
    let mut m = Map::new();
    m.insert("@odata.etag".into(), json!(format!("W/\"{change_key}\"")));
    for &p in MESSAGE_PROPERTIES {
        if !wanted(p) {
            continue;
        }
        let v = match p {
            "id" => json!(copy.id),
            "createdDateTime" | "lastModifiedDateTime" | "receivedDateTime" => {
                json!(date(&copy.received))
            }
            "changeKey" => json!(change_key),
            "categories" => json!([]),
            "sentDateTime" => json!(date(&c.date)),
            "hasAttachments" => json!(c.has_attachments),
            "internetMessageId" => json!(c.internet_message_id),
            "subject" => json!(c.subject),
            "bodyPreview" => json!(c.body_text.chars().take(255).collect::<String>().trim_end()),
            "importance" => json!("normal"),
            "parentFolderId" => json!(folder_id(mailbox, &copy.folder)),
            "conversationId" => json!(graph_conversation_id(&c.conversation_key)),
            "conversationIndex" => json!(crate::lab::mime::thread_index(
                &c.conversation_key,
                c.references.len()
            )),
            "isRead" => json!(copy.read),
            "isDraft" => json!(copy.folder == Folder::Drafts),
            "webLink" => json!(format!(
                "https://outlook.office365.com/owa/?ItemID={}&exvsurl=1&viewmodel=ReadMessageItem",
                url::form_urlencoded::byte_serialize(copy.id.as_bytes()).collect::<String>()
            )),
            "inferenceClassification" => json!("focused"),
            "body" => json!({ "contentType": "text", "content": c.body_text }),
            "sender" | "from" => recipient(&c.from, Some(&c.from_name)),
            "toRecipients" => Value::Array(c.to.iter().map(|a| recipient(a, None)).collect()),
            "ccRecipients" => Value::Array(c.cc.iter().map(|a| recipient(a, None)).collect()),
            "bccRecipients" | "replyTo" => json!([]),
            "flag" => json!({ "flagStatus": "notFlagged" }),
            "internetMessageHeaders" => Value::Array(
                header_fields(&c.raw)
                    .into_iter()
                    .map(|(name, value)| json!({ "name": name, "value": value }))
                    .collect(),
            ),
            _ => continue,
        };
        m.insert(p.into(), v);
    }
    Value::Object(m)
}

/// A mail folder with its counts.
pub fn mail_folder(
    mailbox: &str,
    folder: &Folder,
    (total, unread, children): (usize, usize, usize),
) -> Value {
    json!({
        "id": folder_id(mailbox, folder),
        "displayName": folder_display_name(folder),
        "parentFolderId": folder_parent_id(mailbox, folder),
        "childFolderCount": children,
        "unreadItemCount": unread,
        "totalItemCount": total,
        "isHidden": *folder == Folder::RecoverableDeletions,
    })
}

fn selected(all: &Map<String, Value>, select: Option<&[String]>) -> Value {
    match select {
        None => Value::Object(all.clone()),
        Some(list) => Value::Object(
            all.iter()
                .filter(|(k, _)| {
                    *k == "id"
                        || k.starts_with("@odata")
                        || list.iter().any(|s| s.eq_ignore_ascii_case(k))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
    }
}

/// A user (default property set, or `$select`).
pub fn user(u: &User, select: Option<&[String]>) -> Value {
    let mut parts = u.display_name.splitn(2, ' ');
    let given = parts.next().unwrap_or("");
    let surname = parts.next().unwrap_or("");
    let all = json!({
        "id": u.id,
        "businessPhones": [],
        "displayName": u.display_name,
        "givenName": given,
        "surname": surname,
        "jobTitle": null,
        "mail": u.address,
        "mobilePhone": null,
        "officeLocation": null,
        "preferredLanguage": null,
        "proxyAddresses": std::iter::once(format!("SMTP:{}", u.address))
            .chain(u.aliases.iter().map(|a| format!("smtp:{a}")))
            .collect::<Vec<_>>(),
        "userPrincipalName": u.upn,
    });
    match all {
        Value::Object(m) => selected(&m, select),
        other => other,
    }
}

/// A mail-enabled distribution group.
pub fn group(g: &Group, select: Option<&[String]>) -> Value {
    let nickname = g.address.split('@').next().unwrap_or(&g.address);
    let all = json!({
        "id": g.id,
        "description": null,
        "displayName": g.display_name,
        "groupTypes": [],
        "mail": g.address,
        "mailEnabled": true,
        "mailNickname": nickname,
        "securityEnabled": false,
        "proxyAddresses": [format!("SMTP:{}", g.address)],
    });
    match all {
        Value::Object(m) => selected(&m, select),
        other => other,
    }
}

/// A domain of the tenant.
pub fn domain(d: &Domain, is_default: bool) -> Value {
    json!({
        "id": d.name,
        "authenticationType": "Managed",
        "availabilityStatus": null,
        "isAdminManaged": true,
        "isDefault": is_default,
        "isInitial": false,
        "isRoot": true,
        "isVerified": d.verified,
        "passwordNotificationWindowInDays": 14,
        "passwordValidityPeriodInDays": 2147483647,
        "supportedServices": ["Email", "OfficeCommunicationsOnline"],
    })
}

/// `@odata.type` of a directory object.
pub fn typed(mut v: Value, odata_type: &str) -> Value {
    if let Value::Object(m) = &mut v {
        let mut out = Map::new();
        out.insert("@odata.type".into(), json!(odata_type));
        out.extend(std::mem::take(m));
        return Value::Object(out);
    }
    v
}
