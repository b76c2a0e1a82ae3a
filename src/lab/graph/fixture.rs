//! Compact Microsoft 365 scenarios for tests and benchmarks of the Graph face: one that covers
//! every case the Graph face distinguishes (granted and ungranted domains, a held mailbox, a
//! user without mailbox, nested groups with an external member, a conversation, an attachment)
//! and a generated one with many mailboxes.

use crate::lab::scenario::{
    Scenario, ScenarioAttachment, ScenarioCopy, ScenarioDomain, ScenarioGroup, ScenarioMessage,
    ScenarioTenant, ScenarioUser,
};
use crate::model::{Folder, TenantKind};
use chrono::{DateTime, TimeZone, Utc};

/// The phishing message every contoso mailbox holds in [`scenario`].
pub const PHISH_ID: &str = "<phish-1.2024@evil.example>";
/// A reply to it in alice's mailbox (same conversation).
pub const REPLY_ID: &str = "<re-phish-1@contoso.com>";

fn user(address: &str) -> ScenarioUser {
    ScenarioUser {
        address: address.into(),
        name: None,
        mailbox: true,
        on_hold: false,
        upn: None,
        aliases: Vec::new(),
        full_access: Vec::new(),
        admin: false,
    }
}

fn copy(mailbox: &str, folder: Folder) -> ScenarioCopy {
    ScenarioCopy {
        mailbox: mailbox.into(),
        folder,
        read: false,
    }
}

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, day, hour, 0, 0)
        .single()
        .unwrap_or_default()
}

/// A message with the given id, sender and copies.
pub fn message(
    id: &str,
    from: &str,
    subject: &str,
    date: DateTime<Utc>,
    copies: Vec<ScenarioCopy>,
) -> ScenarioMessage {
    ScenarioMessage {
        message_id: id.into(),
        raw: None,
        from: from.into(),
        from_name: None,
        to: copies.iter().map(|c| c.mailbox.clone()).collect(),
        cc: Vec::new(),
        subject: subject.into(),
        date,
        body: format!("{subject}\n\nThis is the body of {id}."),
        html: None,
        in_reply_to: None,
        references: Vec::new(),
        headers: Vec::new(),
        attachments: Vec::new(),
        conversation: None,
        copies,
    }
}

fn tenant(name: &str, domains: Vec<ScenarioDomain>) -> ScenarioTenant {
    ScenarioTenant {
        name: name.into(),
        kind: TenantKind::Microsoft365,
        cloud: Default::default(),
        rbac_mail_scope: None,
        tenant_id: None,
        domains,
        client_id: None,
        client_secret: None,
        granted: None,
        admin_user: None,
        report_mailboxes: Vec::new(),
        users: Vec::new(),
        groups: Vec::new(),
        messages: Vec::new(),
    }
}

/// Tenant `contoso` (contoso.com granted, subsidiary.example not granted) and tenant `mailonly`
/// whose app holds only `Mail.ReadWrite`.
///
/// contoso users: admin (admin), alice, bob, carol (on hold), dave, eve, nomail (no mailbox),
/// pat@subsidiary.example. Groups: all-staff (alice, bob, team, partner@external.example),
/// team (carol, dave). Messages: [`PHISH_ID`] in the inboxes of alice..eve and pat, a reply in
/// alice's inbox, a newsletter with an attachment in alice's junk, plus 12 older messages in bob's
/// inbox (paging).
pub fn scenario() -> Scenario {
    let mut contoso = tenant(
        "contoso",
        vec![
            ScenarioDomain {
                name: "contoso.com".into(),
                granted: true,
            },
            ScenarioDomain {
                name: "subsidiary.example".into(),
                granted: false,
            },
        ],
    );
    let mut admin = user("admin@contoso.com");
    admin.admin = true;
    let mut carol = user("carol@contoso.com");
    carol.on_hold = true;
    let mut nomail = user("nomail@contoso.com");
    nomail.mailbox = false;
    contoso.users = vec![
        admin,
        user("alice@contoso.com"),
        user("bob@contoso.com"),
        carol,
        user("dave@contoso.com"),
        user("eve@contoso.com"),
        nomail,
        user("pat@subsidiary.example"),
    ];
    contoso.groups = vec![
        ScenarioGroup {
            address: "all-staff@contoso.com".into(),
            name: Some("All Staff".into()),
            members: vec![
                "alice@contoso.com".into(),
                "bob@contoso.com".into(),
                "team@contoso.com".into(),
                "partner@external.example".into(),
            ],
            ..Default::default()
        },
        ScenarioGroup {
            address: "team@contoso.com".into(),
            name: None,
            members: vec!["carol@contoso.com".into(), "dave@contoso.com".into()],
            ..Default::default()
        },
    ];
    let victims = [
        "alice@contoso.com",
        "bob@contoso.com",
        "carol@contoso.com",
        "dave@contoso.com",
        "eve@contoso.com",
        "pat@subsidiary.example",
    ];
    let mut phish = message(
        PHISH_ID,
        "billing@evil.example",
        "Invoice overdue",
        at(10, 9),
        victims.iter().map(|m| copy(m, Folder::Inbox)).collect(),
    );
    phish.headers = vec![("X-Clawback-Disposition".into(), "malicious".into())];
    let mut reply = message(
        REPLY_ID,
        "bob@contoso.com",
        "RE: Invoice overdue",
        at(10, 10),
        vec![copy("alice@contoso.com", Folder::Inbox)],
    );
    reply.in_reply_to = Some(PHISH_ID.into());
    reply.references = vec![PHISH_ID.into()];
    let mut newsletter = message(
        "<news-7@lists.example>",
        "news@lists.example",
        "Weekly news",
        at(9, 8),
        vec![copy("alice@contoso.com", Folder::Junk)],
    );
    newsletter.attachments = vec![ScenarioAttachment {
        name: "report.txt".into(),
        content_type: "text/plain".into(),
        content: "quarterly numbers".into(),
        base64: false,
    }];
    contoso.messages = vec![phish, reply, newsletter];
    for n in 0..12 {
        contoso.messages.push(message(
            &format!("<old-{n}@contoso.com>"),
            "dave@contoso.com",
            &format!("Older note {n}"),
            at(1, n),
            vec![copy("bob@contoso.com", Folder::Inbox)],
        ));
    }
    let mut mailonly = tenant(
        "mailonly",
        vec![ScenarioDomain {
            name: "mailonly.example".into(),
            granted: true,
        }],
    );
    mailonly.granted = Some(vec!["Mail.ReadWrite".into()]);
    mailonly.users = vec![user("zoe@mailonly.example")];
    Scenario {
        name: "graph-fixture".into(),
        seed: 7,
        tenants: vec![contoso, mailonly],
    }
}

/// Tenant `bench` with `mailboxes` users `user{n}@bench.example`, each holding `per_mailbox`
/// messages `<m{k}.u{n}@bench.example>`.
pub fn many_mailboxes(mailboxes: usize, per_mailbox: usize) -> Scenario {
    let mut t = tenant(
        "bench",
        vec![ScenarioDomain {
            name: "bench.example".into(),
            granted: true,
        }],
    );
    for n in 0..mailboxes {
        let address = format!("user{n}@bench.example");
        t.users.push(user(&address));
        for k in 0..per_mailbox {
            t.messages.push(message(
                &format!("<m{k}.u{n}@bench.example>"),
                "sender@outside.example",
                &format!("Message {k}"),
                at(1 + (k % 28) as u32, 12),
                vec![copy(&address, Folder::Inbox)],
            ));
        }
    }
    Scenario {
        name: "graph-bench".into(),
        seed: 1,
        tenants: vec![t],
    }
}
