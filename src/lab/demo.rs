//! The built-in `demo` scenario: two tenants with a phishing campaign in flight.
//!
//! - **contoso** (Microsoft 365): domains `contoso.com` (granted) and `contoso-labs.com` (not
//!   granted); 200 mailboxes, one admin, one mailbox on litigation hold, one user without a
//!   mailbox, nested distribution lists (`all-finance` ⊃ `finance-emea`, `finance-americas`).
//! - **fabrikam** (Google Workspace): domains `fabrikam.com` (granted) and `fabrikam.org` (not
//!   granted); 100 mailboxes, an `admin` user impersonated for directory calls, nested groups
//!   (`everyone` ⊃ `sales`, `engineering`).
//! - The campaign [`CAMPAIGN_MESSAGE_ID`] from [`CAMPAIGN_SENDER`] reaches exactly
//!   [`CAMPAIGN_RECIPIENTS`] mailboxes (100 contoso, 50 fabrikam): every mailbox member of
//!   [`DEMO_DL`] (through [`DEMO_NESTED_DL`]), the hold mailbox, mailboxes in both ungranted
//!   domains; some copies are read, some already in Trash / Junk / Recoverable Items.
//!   The campaign carries **no** `X-Clawback-Disposition` header: it got past the filters, and
//!   the phish reports, intel or the operator make it malicious. A second, smaller lure
//!   ([`MALICIOUS_MESSAGE_ID`]) does carry `X-Clawback-Disposition: malicious`, for header-driven
//!   auto-retraction.
//! - [`REPLY_COUNT`] replies and forwards of the campaign (chains up to depth 2, same
//!   conversation), with copies in the senders' Sent Items and the recipients' inboxes.
//! - A phish-report mailbox per tenant with [`CAMPAIGN_REPORTS`] reports of the campaign from
//!   distinct reporters and [`BENIGN_REPORTS`] reports of harmless mail, each carrying the
//!   reported original as a `message/rfc822` attachment.
//! - About 300 ordinary messages: internal threads, newsletters, vendor mail, spam, suspicious
//!   and spoofed mail, some with `X-Clawback-Disposition` (`bulk`, `spam`, `suspicious`, `spoof`).
//!
//! Dates lie in the 7 days before an anchor. [`build`] anchors at the start of the current UTC
//! hour, so the mail looks recent; [`build_at`] takes the anchor, and the same (seed, anchor)
//! always gives the same scenario. Message-IDs, addresses and counts depend on the seed only.
//! [`clock`] reads [`DEMO_CLOCK_ENV`] so `clawback demo`, `lab serve --scenario demo` and
//! `lab scenario --demo` can be pinned to one instant (the README's captures are made so).

use super::scenario::{
    Scenario, ScenarioAttachment, ScenarioCopy, ScenarioDomain, ScenarioGroup, ScenarioMessage,
    ScenarioTenant, ScenarioUser, message_content,
};
use crate::model::{Folder, TenantKind};
use base64::Engine;
use chrono::{DateTime, Duration, DurationRound, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Scenario name.
pub const DEMO_NAME: &str = "demo";
/// The seed `clawback demo` and `clawback lab serve --scenario demo` use by default, so both
/// build the same world (the same people, Message-IDs and counts).
pub const DEMO_SEED: u64 = 7;
/// The Microsoft 365 tenant.
pub const CONTOSO: &str = "contoso";
/// The Google Workspace tenant.
pub const FABRIKAM: &str = "fabrikam";
pub const CONTOSO_DOMAIN: &str = "contoso.com";
pub const FABRIKAM_DOMAIN: &str = "fabrikam.com";
/// contoso's domain the app is not allowed to act on.
pub const DEMO_UNGRANTED_DOMAIN: &str = "contoso-labs.com";
/// fabrikam's domain outside the service account's delegation.
pub const FABRIKAM_UNGRANTED_DOMAIN: &str = "fabrikam.org";
/// Mailbox on litigation hold (hard delete refused).
pub const DEMO_HOLD_MAILBOX: &str = "megan.bowen@contoso.com";
/// A directory user without a mailbox.
pub const DEMO_NO_MAILBOX_USER: &str = "svc.scanner@contoso.com";
pub const DEMO_CONTOSO_ADMIN: &str = "admin@contoso.com";
/// fabrikam's admin, impersonated for Directory API calls.
pub const DEMO_FABRIKAM_ADMIN: &str = "admin@fabrikam.com";
/// The distribution list the campaign was addressed to.
pub const DEMO_DL: &str = "all-finance@contoso.com";
/// A list nested in [`DEMO_DL`].
pub const DEMO_NESTED_DL: &str = "finance-emea@contoso.com";
/// The other list nested in [`DEMO_DL`].
pub const DEMO_NESTED_DL_2: &str = "finance-americas@contoso.com";
/// An external contact that is a member of [`DEMO_DL`].
pub const DEMO_EXTERNAL_MEMBER: &str = "auditor@northwind-audit.com";
/// The fabrikam list the campaign was addressed to.
pub const FABRIKAM_SALES_DL: &str = "sales@fabrikam.com";
/// fabrikam's nested group (`everyone` ⊃ `sales`, `engineering`).
pub const FABRIKAM_DL: &str = "everyone@fabrikam.com";
pub const DEMO_CONTOSO_REPORT_MAILBOX: &str = "phish-report@contoso.com";
pub const DEMO_FABRIKAM_REPORT_MAILBOX: &str = "phish-report@fabrikam.com";
/// contoso's helpdesk mailbox (receives forwarded suspicious mail).
pub const DEMO_HELPDESK: &str = "helpdesk@contoso.com";

/// The phishing campaign.
pub const CAMPAIGN_MESSAGE_ID: &str = "<CAK8841.pwexpiry.4f2a9c71@mail.contoso-helpdesk.com>";
pub const CAMPAIGN_SENDER: &str = "it-support@contoso-helpdesk.com";
pub const CAMPAIGN_SENDER_NAME: &str = "Contoso IT Support";
pub const CAMPAIGN_SUBJECT: &str = "Action required: password expires today";
/// The credential-phishing URL in the campaign's text, HTML and attachment.
pub const CAMPAIGN_URL: &str =
    "https://login.contoso-helpdesk.com/owa/auth/reset.aspx?session=8841";
pub const CAMPAIGN_ATTACHMENT: &str = "Invoice_8841.html";
/// File name of the demo's indicator list (in the `intel` directory beside its config).
pub const DEMO_INTEL_FILE: &str = "demo-campaign.txt";

/// The demo's threat intel (`intel_file` format `.txt`): the campaign's phishing URL, so
/// Post Delivery Response has something to find once it is switched on.
pub fn intel_indicators() -> String {
    format!(
        "# clawback demo: threat intel for Post Delivery Response.\n# disposition: malicious\nurl {CAMPAIGN_URL}\n"
    )
}
/// Mailboxes holding the campaign itself (not counting replies/forwards or reports).
pub const CAMPAIGN_RECIPIENTS: usize = 150;
pub const CAMPAIGN_RECIPIENTS_CONTOSO: usize = 100;
pub const CAMPAIGN_RECIPIENTS_FABRIKAM: usize = 50;
/// Replies and forwards of the campaign.
pub const REPLY_COUNT: usize = 12;
/// Reports of the campaign in the two report mailboxes (distinct reporters).
pub const CAMPAIGN_REPORTS: usize = 8;
/// Reports of harmless mail.
pub const BENIGN_REPORTS: usize = 4;
/// A lure that arrives already marked `X-Clawback-Disposition: malicious`.
pub const MALICIOUS_MESSAGE_ID: &str =
    "<20240917.7731.envelope.b1e0@mail.docusign-secure-review.com>";
/// Mailboxes holding [`MALICIOUS_MESSAGE_ID`].
pub const MALICIOUS_RECIPIENTS: usize = 12;
/// Mailbox counts.
pub const CONTOSO_MAILBOXES: usize = 200;
pub const FABRIKAM_MAILBOXES: usize = 100;

/// The demo scenario anchored at the start of the current UTC hour.
pub fn build(seed: u64) -> Scenario {
    let now = Utc::now();
    let anchor = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    build_at(seed, anchor)
}

/// Pins the demo's clock: an RFC 3339 instant (`2026-11-27T15:00:00Z`) that the demo's mail is
/// dated before, instead of the start of the current UTC hour.
pub const DEMO_CLOCK_ENV: &str = "CLAWBACK_DEMO_CLOCK";

/// The demo's anchor: [`DEMO_CLOCK_ENV`] when it is set, else the start of the current UTC
/// hour (as [`build`]). A value that is not RFC 3339 is an error naming the variable.
pub fn clock() -> Result<DateTime<Utc>, String> {
    match std::env::var(DEMO_CLOCK_ENV) {
        Ok(value) if !value.trim().is_empty() => parse_clock(&value),
        _ => {
            let now = Utc::now();
            Ok(now.duration_trunc(Duration::hours(1)).unwrap_or(now))
        }
    }
}

fn parse_clock(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "{DEMO_CLOCK_ENV}={value:?}: {e}; expected an RFC 3339 instant such as 2026-11-27T15:00:00Z"
            )
        })
}

/// The demo scenario on the demo's [`clock`].
pub fn build_on_clock(seed: u64) -> Result<Scenario, String> {
    Ok(build_at(seed, clock()?))
}

/// The demo scenario with every date in the 7 days before `anchor`.
pub fn build_at(seed: u64, anchor: DateTime<Utc>) -> Scenario {
    let mut w = World::new(seed, anchor);
    let mut contoso = w.contoso_directory();
    let mut fabrikam = w.fabrikam_directory();
    w.campaign(&mut contoso, &mut fabrikam);
    w.malicious_lure(&mut contoso, &mut fabrikam);
    w.ordinary_mail(&mut contoso, 200);
    w.ordinary_mail(&mut fabrikam, 100);
    w.reports(&mut contoso, &mut fabrikam);
    Scenario {
        name: DEMO_NAME.into(),
        seed,
        tenants: vec![contoso.into_tenant(), fabrikam.into_tenant()],
    }
}

const FIRST_NAMES: &[&str] = &[
    "Adele",
    "Alex",
    "Allan",
    "Amara",
    "Ana",
    "Anders",
    "Aoife",
    "Arjun",
    "Beatriz",
    "Ben",
    "Bianca",
    "Carlos",
    "Chen",
    "Chloe",
    "Christie",
    "Daniel",
    "Diego",
    "Elena",
    "Emeka",
    "Emily",
    "Fatima",
    "Felix",
    "Grady",
    "Hana",
    "Henrietta",
    "Ines",
    "Irvin",
    "Isaiah",
    "Jakob",
    "Johanna",
    "Joni",
    "Jun",
    "Kenji",
    "Lara",
    "Lee",
    "Leila",
    "Lidia",
    "Lukas",
    "Lynne",
    "Marco",
    "Maria",
    "Mateo",
    "Miriam",
    "Nestor",
    "Nia",
    "Noah",
    "Olga",
    "Omar",
    "Pablo",
    "Pradeep",
    "Priya",
    "Rafael",
    "Raj",
    "Rosa",
    "Samir",
    "Sara",
    "Sofia",
    "Tariq",
    "Thomas",
    "Valentina",
    "Wei",
    "Yara",
    "Yusuf",
    "Zoe",
];

const LAST_NAMES: &[&str] = &[
    "Adams",
    "Ahmed",
    "Alvarez",
    "Andersen",
    "Baker",
    "Banerjee",
    "Becker",
    "Brennan",
    "Castillo",
    "Chen",
    "Cohen",
    "Costa",
    "Dubois",
    "Eriksson",
    "Fischer",
    "Garcia",
    "Gonzalez",
    "Gupta",
    "Hansen",
    "Haddad",
    "Ito",
    "Jansen",
    "Johnson",
    "Kaur",
    "Kim",
    "Kowalski",
    "Larsen",
    "Lopez",
    "Martin",
    "Meyer",
    "Morales",
    "Murphy",
    "Nakamura",
    "Nguyen",
    "Novak",
    "Okafor",
    "Olsen",
    "Patel",
    "Petrov",
    "Quinn",
    "Rossi",
    "Santos",
    "Schmidt",
    "Silva",
    "Singh",
    "Smith",
    "Suzuki",
    "Tanaka",
    "Torres",
    "Vargas",
    "Wagner",
    "Walsh",
    "Weber",
    "Williams",
    "Wong",
    "Yilmaz",
    "Zhang",
    "Zimmermann",
];

/// A tenant under construction.
struct TenantDraft {
    tenant: ScenarioTenant,
    /// Mailbox addresses in the granted primary domain (the usual population).
    primary: Vec<String>,
    /// Mailbox addresses in the ungranted domain.
    ungranted: Vec<String>,
}

impl TenantDraft {
    fn into_tenant(self) -> ScenarioTenant {
        self.tenant
    }

    fn kind(&self) -> TenantKind {
        self.tenant.kind
    }

    fn domain(&self) -> String {
        self.tenant
            .domains
            .first()
            .map(|d| d.name.clone())
            .unwrap_or_default()
    }

    fn members_of(&self, group: &str) -> Vec<String> {
        self.tenant
            .groups
            .iter()
            .find(|g| g.address == group)
            .map(|g| g.members.clone())
            .unwrap_or_default()
    }

    fn name_of(&self, address: &str) -> String {
        self.tenant
            .users
            .iter()
            .find(|u| u.address == address)
            .and_then(|u| u.name.clone())
            .unwrap_or_else(|| super::scenario::display_name_of(address))
    }
}

/// One message: what the scenario needs to know about it afterwards.
struct Sent {
    message_id: String,
    subject: String,
    raw: String,
    references: Vec<String>,
}

struct World {
    rng: ChaCha8Rng,
    anchor: DateTime<Utc>,
    /// Names used so far (across tenants, so people do not appear twice).
    taken: BTreeSet<String>,
    /// Campaign copies per tenant: (mailbox, folder) where the copy sits.
    campaign_inbox: Vec<Vec<String>>,
    /// Newsletter messages (tenant index, raw, recipients) available for benign reports.
    newsletters: Vec<(usize, Sent, Vec<String>)>,
}

fn user(address: &str, name: &str) -> ScenarioUser {
    ScenarioUser {
        address: address.to_string(),
        name: Some(name.to_string()),
        mailbox: true,
        on_hold: false,
        upn: None,
        aliases: Vec::new(),
        full_access: Vec::new(),
        admin: false,
    }
}

fn copy(mailbox: &str, folder: Folder, read: bool) -> ScenarioCopy {
    ScenarioCopy {
        mailbox: mailbox.to_string(),
        folder,
        read,
    }
}

/// A message with the given identity and no copies yet.
pub fn blank_message(
    message_id: &str,
    from: &str,
    subject: &str,
    date: DateTime<Utc>,
) -> ScenarioMessage {
    ScenarioMessage {
        message_id: message_id.to_string(),
        raw: None,
        from: from.to_string(),
        from_name: None,
        to: Vec::new(),
        cc: Vec::new(),
        subject: subject.to_string(),
        date,
        body: String::new(),
        html: None,
        in_reply_to: None,
        references: Vec::new(),
        headers: Vec::new(),
        attachments: Vec::new(),
        conversation: None,
        copies: Vec::new(),
    }
}

/// The rendered RFC 5322 text of a scenario message (empty if the message is invalid, which
/// the demo's own messages never are).
fn raw_of(m: &ScenarioMessage) -> String {
    message_content(m).map(|c| c.raw).unwrap_or_default()
}

fn sent(m: &ScenarioMessage) -> Sent {
    Sent {
        message_id: m.message_id.clone(),
        subject: m.subject.clone(),
        raw: raw_of(m),
        references: m.references.clone(),
    }
}

/// Receiving-side headers a real MTA adds.
fn transport_headers(
    from: &str,
    to_domain: &str,
    date: DateTime<Utc>,
    pass: bool,
) -> Vec<(String, String)> {
    let from_domain = crate::model::address_domain(from).unwrap_or_default();
    let verdict = if pass { "pass" } else { "fail" };
    vec![
        (
            "Received".into(),
            format!(
                "from mail.{from_domain} (mail.{from_domain} [203.0.113.{}]) by mx1.{to_domain} with ESMTPS id {}; {}",
                from_domain.len() * 7 % 250 + 1,
                &hex::encode(Sha256::digest(format!("{from}{date}")))[..12],
                date.to_rfc2822()
            ),
        ),
        ("Return-Path".into(), format!("<{from}>")),
        (
            "Authentication-Results".into(),
            format!(
                "mx1.{to_domain}; spf={verdict} smtp.mailfrom={from_domain}; dkim={verdict} header.d={from_domain}; dmarc={verdict} header.from={from_domain}"
            ),
        ),
    ]
}

impl World {
    fn new(seed: u64, anchor: DateTime<Utc>) -> World {
        World {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6465_6d6f),
            anchor,
            taken: BTreeSet::new(),
            campaign_inbox: vec![Vec::new(), Vec::new()],
            newsletters: Vec::new(),
        }
    }

    /// A time `hours_ago` (fractional) before the anchor, with seconds jitter.
    fn at(&mut self, hours_ago: f64) -> DateTime<Utc> {
        let secs = (hours_ago * 3600.0) as i64 + self.rng.gen_range(0..60);
        self.anchor - Duration::seconds(secs)
    }

    /// A random time in the last 7 days.
    fn any_time(&mut self) -> DateTime<Utc> {
        let h = self.rng.gen_range(0.2..168.0);
        self.at(h)
    }

    /// A Message-ID in the style of the sender's mail system.
    fn message_id(&mut self, from: &str) -> String {
        let domain = crate::model::address_domain(from).unwrap_or_else(|| "example.com".into());
        let a: u64 = self.rng.r#gen();
        let b: u32 = self.rng.r#gen();
        if domain.starts_with("contoso") {
            format!(
                "<DB9PR03MB{:06X}{:010X}@DB9PR03MB{:04}.eurprd03.prod.outlook.com>",
                b & 0xffffff,
                a & 0xff_ffff_ffff,
                b % 10_000
            )
        } else if domain.starts_with("fabrikam") {
            let bytes = a.to_be_bytes();
            format!(
                "<CA+{}{}@mail.gmail.com>",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
                b
            )
        } else {
            format!("<{:016x}.{}@mail.{domain}>", a, b % 100_000)
        }
    }

    /// `n` fresh people: (address local part, display name).
    fn people(&mut self, n: usize) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let first = FIRST_NAMES[self.rng.gen_range(0..FIRST_NAMES.len())];
            let last = LAST_NAMES[self.rng.gen_range(0..LAST_NAMES.len())];
            let local = format!("{}.{}", first, last).to_ascii_lowercase();
            if self.taken.insert(local.clone()) {
                out.push((local, format!("{first} {last}")));
            }
        }
        out
    }

    fn pick<T: Clone>(&mut self, from: &[T], n: usize) -> Vec<T> {
        from.choose_multiple(&mut self.rng, n.min(from.len()))
            .cloned()
            .collect()
    }

    fn contoso_directory(&mut self) -> TenantDraft {
        for reserved in ["megan.bowen", "patti.fernandez"] {
            self.taken.insert(reserved.to_string());
        }
        let mut users = vec![
            ScenarioUser {
                admin: true,
                ..user(DEMO_CONTOSO_ADMIN, "Contoso Administrator")
            },
            user(DEMO_CONTOSO_REPORT_MAILBOX, "Phish Reports"),
            user(DEMO_HELPDESK, "IT Helpdesk"),
            ScenarioUser {
                on_hold: true,
                ..user(DEMO_HOLD_MAILBOX, "Megan Bowen")
            },
            user("patti.fernandez@contoso.com", "Patti Fernandez"),
            ScenarioUser {
                mailbox: false,
                ..user(DEMO_NO_MAILBOX_USER, "Scanner Service")
            },
        ];
        let fixed_mailboxes = users.iter().filter(|u| u.mailbox).count();
        let ungranted_count = 15;
        let people = self.people(CONTOSO_MAILBOXES - fixed_mailboxes);
        let mut primary = vec![
            DEMO_HOLD_MAILBOX.to_string(),
            "patti.fernandez@contoso.com".into(),
        ];
        let mut ungranted = Vec::new();
        for (i, (local, name)) in people.iter().enumerate() {
            let domain = if i < ungranted_count {
                DEMO_UNGRANTED_DOMAIN
            } else {
                CONTOSO_DOMAIN
            };
            let address = format!("{local}@{domain}");
            users.push(user(&address, name));
            if i < ungranted_count {
                ungranted.push(address);
            } else {
                primary.push(address);
            }
        }
        let pool: Vec<String> = primary[2..].to_vec();
        let emea = self.pick(&pool, 12);
        let rest: Vec<String> = pool.iter().filter(|a| !emea.contains(a)).cloned().collect();
        let americas = self.pick(&rest, 10);
        let rest: Vec<String> = rest
            .iter()
            .filter(|a| !americas.contains(a))
            .cloned()
            .collect();
        let mut it_team = self.pick(&rest, 5);
        it_team.insert(0, DEMO_HELPDESK.to_string());
        let groups = vec![
            ScenarioGroup {
                address: DEMO_DL.into(),
                name: Some("All Finance".into()),
                members: vec![
                    DEMO_NESTED_DL.into(),
                    DEMO_NESTED_DL_2.into(),
                    "patti.fernandez@contoso.com".into(),
                    DEMO_EXTERNAL_MEMBER.into(),
                ],
                ..Default::default()
            },
            ScenarioGroup {
                address: DEMO_NESTED_DL.into(),
                name: Some("Finance EMEA".into()),
                members: emea,
                ..Default::default()
            },
            ScenarioGroup {
                address: DEMO_NESTED_DL_2.into(),
                name: Some("Finance Americas".into()),
                members: americas,
                ..Default::default()
            },
            ScenarioGroup {
                address: "it-team@contoso.com".into(),
                name: Some("IT Team".into()),
                members: it_team,
                ..Default::default()
            },
        ];
        TenantDraft {
            tenant: ScenarioTenant {
                name: CONTOSO.into(),
                kind: TenantKind::Microsoft365,
                cloud: Default::default(),
                rbac_mail_scope: None,
                tenant_id: None,
                domains: vec![
                    ScenarioDomain {
                        name: CONTOSO_DOMAIN.into(),
                        granted: true,
                    },
                    ScenarioDomain {
                        name: DEMO_UNGRANTED_DOMAIN.into(),
                        granted: false,
                    },
                ],
                client_id: None,
                client_secret: None,
                granted: None,
                admin_user: None,
                report_mailboxes: vec![DEMO_CONTOSO_REPORT_MAILBOX.into()],
                users,
                groups,
                messages: Vec::new(),
            },
            primary,
            ungranted,
        }
    }

    fn fabrikam_directory(&mut self) -> TenantDraft {
        let mut users = vec![
            ScenarioUser {
                admin: true,
                ..user(DEMO_FABRIKAM_ADMIN, "Fabrikam Admin")
            },
            user(DEMO_FABRIKAM_REPORT_MAILBOX, "Phish Reports"),
        ];
        let ungranted_count = 8;
        let people = self.people(FABRIKAM_MAILBOXES - users.len());
        let mut primary = Vec::new();
        let mut ungranted = Vec::new();
        for (i, (local, name)) in people.iter().enumerate() {
            let domain = if i < ungranted_count {
                FABRIKAM_UNGRANTED_DOMAIN
            } else {
                FABRIKAM_DOMAIN
            };
            let address = format!("{local}@{domain}");
            users.push(user(&address, name));
            if i < ungranted_count {
                ungranted.push(address);
            } else {
                primary.push(address);
            }
        }
        let sales = self.pick(&primary, 10);
        let rest: Vec<String> = primary
            .iter()
            .filter(|a| !sales.contains(a))
            .cloned()
            .collect();
        let engineering = self.pick(&rest, 12);
        let groups = vec![
            ScenarioGroup {
                address: FABRIKAM_DL.into(),
                name: Some("Everyone".into()),
                members: vec![
                    FABRIKAM_SALES_DL.into(),
                    "engineering@fabrikam.com".into(),
                    DEMO_FABRIKAM_ADMIN.into(),
                ],
                ..Default::default()
            },
            ScenarioGroup {
                address: FABRIKAM_SALES_DL.into(),
                name: Some("Sales".into()),
                members: sales,
                ..Default::default()
            },
            ScenarioGroup {
                address: "engineering@fabrikam.com".into(),
                name: Some("Engineering".into()),
                members: engineering,
                ..Default::default()
            },
        ];
        TenantDraft {
            tenant: ScenarioTenant {
                name: FABRIKAM.into(),
                kind: TenantKind::GoogleWorkspace,
                cloud: Default::default(),
                rbac_mail_scope: None,
                tenant_id: None,
                domains: vec![
                    ScenarioDomain {
                        name: FABRIKAM_DOMAIN.into(),
                        granted: true,
                    },
                    ScenarioDomain {
                        name: FABRIKAM_UNGRANTED_DOMAIN.into(),
                        granted: false,
                    },
                ],
                client_id: None,
                client_secret: None,
                granted: None,
                admin_user: Some(DEMO_FABRIKAM_ADMIN.into()),
                report_mailboxes: vec![DEMO_FABRIKAM_REPORT_MAILBOX.into()],
                users,
                groups,
                messages: Vec::new(),
            },
            primary,
            ungranted,
        }
    }

    fn campaign_message(&mut self, date: DateTime<Utc>, to_domain: &str) -> ScenarioMessage {
        let mut m = blank_message(CAMPAIGN_MESSAGE_ID, CAMPAIGN_SENDER, CAMPAIGN_SUBJECT, date);
        m.from_name = Some(CAMPAIGN_SENDER_NAME.into());
        m.to = vec![DEMO_DL.into()];
        m.body = format!(
            "Dear user,\n\nYour mailbox password expires today. To avoid losing access to your email, \
             confirm your current password within 24 hours:\n\n{CAMPAIGN_URL}\n\n\
             The attached invoice shows the licence renewal for your account.\n\n\
             Thank you,\nIT Support Team\n"
        );
        m.html = Some(format!(
            "<html><body><p>Dear user,</p><p>Your mailbox password <b>expires today</b>. \
             To avoid losing access to your email, confirm your current password within 24 hours:</p>\
             <p><a href=\"{CAMPAIGN_URL}\">Keep my current password</a></p>\
             <p>Thank you,<br>IT Support Team</p></body></html>"
        ));
        m.headers = transport_headers(CAMPAIGN_SENDER, to_domain, date, true);
        m.headers
            .push(("X-Mailer".into(), "PHPMailer 6.8.0".into()));
        m.attachments = vec![ScenarioAttachment {
            name: CAMPAIGN_ATTACHMENT.into(),
            content_type: "text/html".into(),
            content: format!(
                "<html><body onload=\"document.forms[0].action='{CAMPAIGN_URL}'\">\
                 <h2>Invoice 8841 - Microsoft 365 licence renewal</h2>\
                 <form method=\"post\" action=\"{CAMPAIGN_URL}\">Email: <input name=\"login\"> \
                 Password: <input type=\"password\" name=\"passwd\"> \
                 <input type=\"submit\" value=\"View invoice\"></form></body></html>"
            ),
            base64: false,
        }];
        m
    }

    /// Spreads `recipients` over folders: some deleted or junked already, a third read.
    /// Returns the copies and the mailboxes whose copy is still in the inbox.
    fn campaign_copies(
        &mut self,
        recipients: &[String],
        gone: &[(Folder, usize)],
        keep_in_inbox: &[&str],
    ) -> (Vec<ScenarioCopy>, Vec<String>) {
        let mut order: Vec<String> = recipients.to_vec();
        order.shuffle(&mut self.rng);
        let mut copies = Vec::new();
        let mut inbox = Vec::new();
        let mut gone_slots: Vec<Folder> = gone
            .iter()
            .flat_map(|(f, n)| std::iter::repeat_n(f.clone(), *n))
            .collect();
        for mb in order {
            let folder = if keep_in_inbox.contains(&mb.as_str()) {
                Folder::Inbox
            } else {
                gone_slots.pop().unwrap_or(Folder::Inbox)
            };
            let read = folder != Folder::Inbox || self.rng.gen_bool(0.33);
            if folder == Folder::Inbox {
                inbox.push(mb.clone());
            }
            copies.push(copy(&mb, folder, read));
        }
        (copies, inbox)
    }

    fn campaign(&mut self, contoso: &mut TenantDraft, fabrikam: &mut TenantDraft) {
        let date = self.at(26.5);
        // contoso: every mailbox in all-finance (nested), the hold mailbox, 8 in the ungranted
        // domain, then others up to 100.
        let mut to: Vec<String> = Vec::new();
        for g in [DEMO_NESTED_DL, DEMO_NESTED_DL_2] {
            to.extend(contoso.members_of(g));
        }
        to.push("patti.fernandez@contoso.com".into());
        to.push(DEMO_HOLD_MAILBOX.into());
        let ungranted = self.pick(&contoso.ungranted, 8);
        to.extend(ungranted.iter().cloned());
        let others: Vec<String> = contoso
            .primary
            .iter()
            .filter(|a| !to.contains(a))
            .cloned()
            .collect();
        let need = CAMPAIGN_RECIPIENTS_CONTOSO - to.len();
        to.extend(self.pick(&others, need));
        let mut m = self.campaign_message(date, CONTOSO_DOMAIN);
        // Addressed to the list, with the ungranted-domain recipients in Cc: every copy's
        // headers name them, although the app may not read their mailboxes.
        m.cc = ungranted;
        let (copies, inbox) = self.campaign_copies(
            &to,
            &[
                (Folder::Trash, 6),
                (Folder::Junk, 3),
                (Folder::RecoverableDeletions, 3),
            ],
            &[DEMO_HOLD_MAILBOX],
        );
        m.copies = copies;
        contoso.tenant.messages.push(m);
        self.campaign_inbox[0] = inbox;

        // fabrikam: all of sales, 5 in the ungranted domain, others up to 50.
        let mut to = fabrikam.members_of(FABRIKAM_SALES_DL);
        let ungranted = self.pick(&fabrikam.ungranted, 5);
        to.extend(ungranted.iter().cloned());
        let others: Vec<String> = fabrikam
            .primary
            .iter()
            .filter(|a| !to.contains(a))
            .cloned()
            .collect();
        let need = CAMPAIGN_RECIPIENTS_FABRIKAM - to.len();
        to.extend(self.pick(&others, need));
        let mut m = self.campaign_message(date, FABRIKAM_DOMAIN);
        m.to = vec![FABRIKAM_SALES_DL.into()];
        m.cc = ungranted;
        let (copies, inbox) =
            self.campaign_copies(&to, &[(Folder::Trash, 4), (Folder::Junk, 2)], &[]);
        m.copies = copies;
        fabrikam.tenant.messages.push(m);
        self.campaign_inbox[1] = inbox;

        self.replies(contoso, fabrikam, date);
    }

    /// A reply or forward of `parent` from `from` to `to` (internal recipients get inbox
    /// copies; the sender keeps one in Sent Items).
    #[allow(clippy::too_many_arguments)]
    fn follow_up(
        &mut self,
        tenant: &mut TenantDraft,
        parent: &Sent,
        from: &str,
        to: &[String],
        forward: bool,
        date: DateTime<Utc>,
        text: &str,
    ) -> Sent {
        let id = self.message_id(from);
        let prefix = if forward { "FW: " } else { "RE: " };
        let mut m = blank_message(&id, from, &format!("{prefix}{}", parent.subject), date);
        m.from_name = Some(tenant.name_of(from));
        m.to = to.to_vec();
        m.in_reply_to = Some(parent.message_id.clone());
        let mut refs = parent.references.clone();
        refs.push(parent.message_id.clone());
        m.references = refs;
        m.conversation = Some(CAMPAIGN_MESSAGE_ID.into());
        m.body = if forward {
            format!(
                "{text}\n\n-----Original Message-----\nFrom: {CAMPAIGN_SENDER_NAME} <{CAMPAIGN_SENDER}>\n\
                 Subject: {CAMPAIGN_SUBJECT}\n\nYour mailbox password expires today. Confirm here: {CAMPAIGN_URL}\n"
            )
        } else {
            format!("{text}\n\n> Your mailbox password expires today.\n")
        };
        if forward && parent.message_id == CAMPAIGN_MESSAGE_ID {
            m.attachments.push(ScenarioAttachment {
                name: CAMPAIGN_ATTACHMENT.into(),
                content_type: "text/html".into(),
                content: format!(
                    "<html><body><a href=\"{CAMPAIGN_URL}\">View invoice</a></body></html>"
                ),
                base64: false,
            });
        }
        m.headers.push((
            "X-Mailer".into(),
            if tenant.kind() == TenantKind::Microsoft365 {
                "Microsoft Outlook 16.0".into()
            } else {
                "Gmail".into()
            },
        ));
        let mut copies = vec![copy(from, Folder::SentItems, true)];
        let own = tenant.domain();
        for r in to {
            let internal = tenant
                .tenant
                .users
                .iter()
                .any(|u| u.address == *r && u.mailbox);
            if internal && r != from {
                copies.push(copy(r, Folder::Inbox, self.rng.gen_bool(0.5)));
            } else if internal {
                continue;
            } else if let Some(members) = tenant
                .tenant
                .groups
                .iter()
                .find(|g| g.address == *r)
                .map(|g| g.members.clone())
            {
                for mb in members.iter().filter(|mb| mb.ends_with(&own)) {
                    copies.push(copy(mb, Folder::Inbox, self.rng.gen_bool(0.5)));
                }
            }
        }
        let mut seen = BTreeSet::new();
        copies.retain(|c| seen.insert(c.mailbox.clone()));
        m.copies = copies;
        let s = sent(&m);
        tenant.tenant.messages.push(m);
        s
    }

    fn replies(
        &mut self,
        contoso: &mut TenantDraft,
        fabrikam: &mut TenantDraft,
        date: DateTime<Utc>,
    ) {
        let root = Sent {
            message_id: CAMPAIGN_MESSAGE_ID.into(),
            subject: CAMPAIGN_SUBJECT.into(),
            raw: String::new(),
            references: Vec::new(),
        };
        let c_inbox: Vec<String> = self.campaign_inbox[0]
            .iter()
            .filter(|a| a.ends_with(CONTOSO_DOMAIN) && a.as_str() != DEMO_HOLD_MAILBOX)
            .cloned()
            .collect();
        let c = self.pick(&c_inbox, 6);
        let labs = contoso.ungranted.first().cloned().unwrap_or_default();
        let t = |h: f64| date + Duration::minutes((h * 60.0) as i64);
        // 1. reply to the (external) sender: only a Sent Items copy.
        self.follow_up(
            contoso,
            &root,
            &c[0],
            &[CAMPAIGN_SENDER.into()],
            false,
            t(0.5),
            "Hi, my password was changed last month. Is this really needed?",
        );
        // 2-3. forward to a colleague, who answers (depth 2).
        let fw = self.follow_up(
            contoso,
            &root,
            &c[1],
            &[c[2].clone()],
            true,
            t(0.7),
            "Did you get this too? Looks odd.",
        );
        self.follow_up(
            contoso,
            &fw,
            &c[2],
            &[c[1].clone()],
            false,
            t(1.0),
            "Yes, same here. I think it's phishing, don't click.",
        );
        // 4-5. forward to the helpdesk, whose answer goes to finance-emea (depth 2).
        let fw = self.follow_up(
            contoso,
            &root,
            &c[3],
            &[DEMO_HELPDESK.into()],
            true,
            t(1.2),
            "Is this from you? It asks for my password.",
        );
        self.follow_up(
            contoso,
            &fw,
            DEMO_HELPDESK,
            &[c[3].clone(), DEMO_NESTED_DL.into()],
            false,
            t(1.6),
            "This is a phishing message. Do not open the link or the attachment; delete it.",
        );
        // 6. forward into the ungranted domain.
        self.follow_up(
            contoso,
            &root,
            &c[4],
            &[labs],
            true,
            t(2.0),
            "FYI, can your team check this link?",
        );
        // 7. forward to a personal address outside the tenant.
        self.follow_up(
            contoso,
            &root,
            &c[5],
            &["c.walsh.home@outlook.example".into()],
            true,
            t(2.5),
            "Forwarding to myself to look at later.",
        );

        let f_inbox: Vec<String> = self.campaign_inbox[1]
            .iter()
            .filter(|a| a.ends_with(FABRIKAM_DOMAIN))
            .cloned()
            .collect();
        let f = self.pick(&f_inbox, 5);
        let org = fabrikam.ungranted.first().cloned().unwrap_or_default();
        // 8-9. forward and answer (depth 2).
        let fw = self.follow_up(
            fabrikam,
            &root,
            &f[0],
            &[f[1].clone()],
            true,
            t(0.9),
            "Is this legit? We don't even use Outlook.",
        );
        self.follow_up(
            fabrikam,
            &fw,
            &f[1],
            &[f[0].clone(), f[2].clone()],
            false,
            t(1.3),
            "No! Classic phish. Reporting it.",
        );
        // 10. reply to the sender.
        self.follow_up(
            fabrikam,
            &root,
            &f[3],
            &[CAMPAIGN_SENDER.into()],
            false,
            t(1.8),
            "Please remove me from this list.",
        );
        // 11-12. forward into fabrikam.org, and a reply to it (depth 2).
        let fw = self.follow_up(
            fabrikam,
            &root,
            &f[4],
            std::slice::from_ref(&org),
            true,
            t(3.0),
            "Seen this at the .org side?",
        );
        self.follow_up(
            fabrikam,
            &fw,
            &org,
            &[f[4].clone()],
            false,
            t(3.4),
            "Yes, two of us got it. Deleted.",
        );
    }

    fn malicious_lure(&mut self, contoso: &mut TenantDraft, fabrikam: &mut TenantDraft) {
        let date = self.at(5.0);
        for (t, n, to_domain) in [(0usize, 8usize, CONTOSO_DOMAIN), (1, 4, FABRIKAM_DOMAIN)] {
            let draft = if t == 0 {
                &mut *contoso
            } else {
                &mut *fabrikam
            };
            let pool = draft.primary.clone();
            let to = self.pick(&pool, n);
            let from = "dse@docusign-secure-review.com";
            let mut m = blank_message(
                MALICIOUS_MESSAGE_ID,
                from,
                "Please review and sign: Q3 Bonus Allocation.pdf",
                date,
            );
            m.from_name = Some("DocuSign via HR".into());
            m.to = to.clone();
            m.body = "HR has sent you a document to review and sign.\n\n\
                      REVIEW DOCUMENT: https://docusign-secure-review.com/envelope/7731/review\n"
                .into();
            m.headers = transport_headers(from, to_domain, date, false);
            m.headers
                .push(("X-Clawback-Disposition".into(), "malicious".into()));
            m.copies = to
                .iter()
                .map(|mb| copy(mb, Folder::Inbox, self.rng.gen_bool(0.25)))
                .collect();
            draft.tenant.messages.push(m);
        }
    }

    /// Ordinary mail: internal threads, newsletters, vendor mail, spam, suspicious, spoofs.
    fn ordinary_mail(&mut self, draft: &mut TenantDraft, count: usize) {
        let t = if draft.kind() == TenantKind::Microsoft365 {
            0
        } else {
            1
        };
        let domain = draft.domain();
        let mut made = 0;
        let pool = draft.primary.clone();
        while made < count {
            let roll = self.rng.gen_range(0..100);
            let date = self.any_time();
            made += match roll {
                0..=39 => self.internal_thread(draft, &pool, date),
                40..=59 => {
                    let (s, to) = self.newsletter(draft, &pool, &domain, date);
                    self.newsletters.push((t, s, to));
                    1
                }
                60..=79 => self.vendor_mail(draft, &pool, &domain, date),
                80..=91 => self.junk_mail(draft, &pool, &domain, date, "spam"),
                92..=96 => self.junk_mail(draft, &pool, &domain, date, "suspicious"),
                _ => self.spoof(draft, &pool, &domain, date),
            };
        }
    }

    fn internal_thread(
        &mut self,
        draft: &mut TenantDraft,
        pool: &[String],
        date: DateTime<Utc>,
    ) -> usize {
        const TOPICS: &[(&str, &str)] = &[
            (
                "Q3 forecast review",
                "Attached are my comments on the Q3 forecast. Can we go through them on Thursday?",
            ),
            (
                "Team offsite logistics",
                "The offsite is confirmed for the 14th. Agenda: https://intranet.DOMAIN/sites/events/offsite",
            ),
            (
                "Expense policy update",
                "Finance updated the expense policy; details at https://intranet.DOMAIN/policies/expenses",
            ),
            (
                "Lunch on Friday?",
                "Anyone up for lunch at the new place on Friday?",
            ),
            (
                "Customer escalation - ticket 4471",
                "The customer is waiting for an answer on ticket 4471. Who can take it?",
            ),
            (
                "Draft: vendor contract renewal",
                "Please review the draft renewal before I send it to legal.",
            ),
            (
                "Onboarding checklist",
                "Here's the onboarding checklist for the new hires starting Monday.",
            ),
            (
                "Weekly status",
                "Status: migration 80% done, two blockers (see tracker).",
            ),
        ];
        let (subject, body) = TOPICS[self.rng.gen_range(0..TOPICS.len())];
        let n = self.rng.gen_range(2..6);
        let people = self.pick(pool, n);
        let from = people[0].clone();
        let to: Vec<String> = people[1..].to_vec();
        let id = self.message_id(&from);
        let mut m = blank_message(&id, &from, subject, date);
        m.from_name = Some(draft.name_of(&from));
        m.body = format!(
            "{}\n\nThanks,\n{}\n",
            body.replace("DOMAIN", &draft.domain()),
            draft.name_of(&from)
        );
        m.to = to.clone();
        if self.rng.gen_bool(0.2) {
            m.attachments.push(ScenarioAttachment {
                name: "notes.txt".into(),
                content_type: "text/plain".into(),
                content: format!("Notes for {subject}\n- item one\n- item two\n"),
                base64: false,
            });
        }
        m.copies = std::iter::once(copy(&from, Folder::SentItems, true))
            .chain(
                to.iter()
                    .map(|r| copy(r, Folder::Inbox, self.rng.gen_bool(0.6))),
            )
            .collect();
        let root = sent(&m);
        draft.tenant.messages.push(m);
        if self.rng.gen_bool(0.3) && date + Duration::hours(2) < self.anchor {
            let replier = to[0].clone();
            let rid = self.message_id(&replier);
            let mut r = blank_message(
                &rid,
                &replier,
                &format!("RE: {subject}"),
                date + Duration::hours(1),
            );
            r.from_name = Some(draft.name_of(&replier));
            r.to = vec![from.clone()];
            r.in_reply_to = Some(root.message_id.clone());
            r.references = vec![root.message_id.clone()];
            r.body = "Sounds good, thanks.\n".into();
            r.copies = vec![
                copy(&replier, Folder::SentItems, true),
                copy(&from, Folder::Inbox, self.rng.gen_bool(0.5)),
            ];
            draft.tenant.messages.push(r);
            return 2;
        }
        1
    }

    fn newsletter(
        &mut self,
        draft: &mut TenantDraft,
        pool: &[String],
        domain: &str,
        date: DateTime<Utc>,
    ) -> (Sent, Vec<String>) {
        const LISTS: &[(&str, &str, &str)] = &[
            (
                "news@techdigest-weekly.com",
                "TechDigest Weekly",
                "This week in cloud: 10 things you missed",
            ),
            (
                "updates@northwindtraders.com",
                "Northwind Traders",
                "Your October product catalogue",
            ),
            (
                "events@saas-summit.io",
                "SaaS Summit",
                "Last chance: early-bird tickets end Friday",
            ),
            (
                "hello@fourthcoffee.com",
                "Fourth Coffee",
                "20% off your next order",
            ),
            (
                "newsletter@finance-insider.net",
                "Finance Insider",
                "Markets brief: rates, FX and earnings",
            ),
        ];
        let (from, name, subject) = LISTS[self.rng.gen_range(0..LISTS.len())];
        let n = self.rng.gen_range(5..30);
        let to = self.pick(pool, n);
        let id = self.message_id(from);
        let from_domain = crate::model::address_domain(from).unwrap_or_default();
        let mut m = blank_message(&id, from, subject, date);
        m.from_name = Some(name.into());
        m.to = vec![format!("subscribers@{from_domain}")];
        m.body = format!(
            "{subject}\n\nRead online: https://www.{from_domain}/issues/{}\n\nUnsubscribe: https://www.{from_domain}/unsubscribe\n",
            self.rng.gen_range(100..999)
        );
        m.html = Some(format!(
            "<html><body><h1>{subject}</h1><p><a href=\"https://www.{from_domain}/read\">Read online</a></p></body></html>"
        ));
        m.headers = transport_headers(from, domain, date, true);
        m.headers.push((
            "List-Unsubscribe".into(),
            format!("<https://www.{from_domain}/unsubscribe>, <mailto:unsubscribe@{from_domain}>"),
        ));
        m.headers
            .push(("List-Id".into(), format!("{name} <list.{from_domain}>")));
        m.headers.push(("Precedence".into(), "bulk".into()));
        if self.rng.gen_bool(0.4) {
            m.headers
                .push(("X-Clawback-Disposition".into(), "bulk".into()));
        }
        m.copies = to
            .iter()
            .map(|r| copy(r, Folder::Inbox, self.rng.gen_bool(0.4)))
            .collect();
        let s = sent(&m);
        draft.tenant.messages.push(m);
        (s, to)
    }

    fn vendor_mail(
        &mut self,
        draft: &mut TenantDraft,
        pool: &[String],
        domain: &str,
        date: DateTime<Utc>,
    ) -> usize {
        const VENDORS: &[(&str, &str)] = &[
            ("billing@adatum.com", "Adatum Billing"),
            ("accounts@litware.com", "Litware Accounts"),
            ("invoices@wingtiptoys.com", "Wingtip Toys"),
            ("noreply@tailspintoys.com", "Tailspin Toys"),
        ];
        let (from, name) = VENDORS[self.rng.gen_range(0..VENDORS.len())];
        let no: u32 = self.rng.gen_range(10_000..99_999);
        let n = self.rng.gen_range(1..4);
        let to = self.pick(pool, n);
        let id = self.message_id(from);
        let from_domain = crate::model::address_domain(from).unwrap_or_default();
        let mut m = blank_message(&id, from, &format!("Invoice INV-{no} from {name}"), date);
        m.from_name = Some(name.into());
        m.to = to.clone();
        m.body = format!(
            "Hello,\n\nPlease find attached invoice INV-{no}. You can also view it at https://portal.{from_domain}/invoices/{no}\n\nKind regards,\n{name}\n"
        );
        m.headers = transport_headers(from, domain, date, true);
        let pdf = format!(
            "%PDF-1.4\n% invoice INV-{no}\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
        );
        m.attachments.push(ScenarioAttachment {
            name: format!("INV-{no}.pdf"),
            content_type: "application/pdf".into(),
            content: base64::engine::general_purpose::STANDARD.encode(pdf),
            base64: true,
        });
        m.copies = to
            .iter()
            .map(|r| copy(r, Folder::Inbox, self.rng.gen_bool(0.7)))
            .collect();
        draft.tenant.messages.push(m);
        1
    }

    fn junk_mail(
        &mut self,
        draft: &mut TenantDraft,
        pool: &[String],
        domain: &str,
        date: DateTime<Utc>,
        disposition: &str,
    ) -> usize {
        let (from, subject, url) = if disposition == "spam" {
            const SPAM: &[(&str, &str, &str)] = &[
                (
                    "deals@best-pharma-online.biz",
                    "Cheap meds, no prescription",
                    "http://best-pharma-online.biz/shop",
                ),
                (
                    "winner@lucky-draw-prizes.top",
                    "You have WON a $1000 gift card",
                    "http://lucky-draw-prizes.top/claim",
                ),
                (
                    "seo@rank-first-now.xyz",
                    "Get your site to #1 on Google",
                    "http://rank-first-now.xyz/offer",
                ),
            ];
            SPAM[self.rng.gen_range(0..SPAM.len())]
        } else {
            const SUSPICIOUS: &[(&str, &str, &str)] = &[
                (
                    "share@onedrive-files-share.com",
                    "A file has been shared with you",
                    "https://onedrive-files-share.com/s/Q3-report",
                ),
                (
                    "delivery@parcel-tracking-notice.com",
                    "Your parcel could not be delivered",
                    "https://parcel-tracking-notice.com/reschedule",
                ),
            ];
            SUSPICIOUS[self.rng.gen_range(0..SUSPICIOUS.len())]
        };
        let n = self.rng.gen_range(1..8);
        let to = self.pick(pool, n);
        let id = self.message_id(from);
        let mut m = blank_message(&id, from, subject, date);
        m.to = to.clone();
        m.body = format!("{subject}\n\nClick here: {url}\n");
        m.headers = transport_headers(from, domain, date, disposition == "spam");
        m.headers
            .push(("X-Clawback-Disposition".into(), disposition.into()));
        let junk_share = if disposition == "spam" { 0.7 } else { 0.1 };
        m.copies = to
            .iter()
            .map(|r| {
                let folder = if self.rng.gen_bool(junk_share) {
                    Folder::Junk
                } else {
                    Folder::Inbox
                };
                copy(r, folder, self.rng.gen_bool(0.3))
            })
            .collect();
        draft.tenant.messages.push(m);
        1
    }

    fn spoof(
        &mut self,
        draft: &mut TenantDraft,
        pool: &[String],
        domain: &str,
        date: DateTime<Utc>,
    ) -> usize {
        let boss = pool.first().cloned().unwrap_or_default();
        let n = self.rng.gen_range(1..4);
        let to = self.pick(pool, n);
        let id = self.message_id("ceo-office@mailrelay-cloud.net");
        let mut m = blank_message(&id, &boss, "Urgent: wire transfer today", date);
        m.from_name = Some(draft.name_of(&boss));
        m.to = to.clone();
        m.body =
            "I need you to process a wire transfer today. I'm in meetings, reply by email only.\n"
                .into();
        m.headers = transport_headers("ceo-office@mailrelay-cloud.net", domain, date, false);
        m.headers
            .push(("Reply-To".into(), "ceo-office@mailrelay-cloud.net".into()));
        m.headers
            .push(("X-Clawback-Disposition".into(), "spoof".into()));
        m.copies = to
            .iter()
            .map(|r| copy(r, Folder::Inbox, self.rng.gen_bool(0.5)))
            .collect();
        draft.tenant.messages.push(m);
        1
    }

    /// User reports in the phish-report mailboxes: the original attached as message/rfc822.
    fn reports(&mut self, contoso: &mut TenantDraft, fabrikam: &mut TenantDraft) {
        let campaign_time = contoso
            .tenant
            .messages
            .first()
            .map(|m| m.date)
            .unwrap_or(self.anchor);
        for (t, n, mailbox) in [
            (0usize, 5usize, DEMO_CONTOSO_REPORT_MAILBOX),
            (1, 3, DEMO_FABRIKAM_REPORT_MAILBOX),
        ] {
            let inbox: Vec<String> = self.campaign_inbox[t]
                .iter()
                .filter(|a| a.as_str() != DEMO_HOLD_MAILBOX)
                .cloned()
                .collect();
            let reporters = self.pick(&inbox, n);
            let draft = if t == 0 {
                &mut *contoso
            } else {
                &mut *fabrikam
            };
            // Each tenant's copy carries its own Received headers: report that one.
            let campaign = Sent {
                message_id: CAMPAIGN_MESSAGE_ID.into(),
                subject: CAMPAIGN_SUBJECT.into(),
                raw: draft
                    .tenant
                    .messages
                    .iter()
                    .find(|m| m.message_id == CAMPAIGN_MESSAGE_ID)
                    .map(raw_of)
                    .unwrap_or_default(),
                references: Vec::new(),
            };
            for (i, reporter) in reporters.iter().enumerate() {
                let date = campaign_time + Duration::minutes(20 + 17 * i as i64);
                self.report(draft, mailbox, reporter, &campaign, date, "Phishing");
                // Reporting implies having opened it.
                if let Some(c) = draft
                    .tenant
                    .messages
                    .iter_mut()
                    .find(|m| m.message_id == CAMPAIGN_MESSAGE_ID)
                    .and_then(|m| m.copies.iter_mut().find(|c| c.mailbox == *reporter))
                {
                    c.read = true;
                }
            }
        }
        // Benign reports: newsletters someone thought were phishing.
        let mut benign = Vec::new();
        for want in [0usize, 0, 0, 1] {
            if let Some(pos) = self.newsletters.iter().position(|(t, _, _)| *t == want) {
                benign.push(self.newsletters.remove(pos));
            }
        }
        for (t, s, to) in benign {
            let (draft, mailbox) = if t == 0 {
                (&mut *contoso, DEMO_CONTOSO_REPORT_MAILBOX)
            } else {
                (&mut *fabrikam, DEMO_FABRIKAM_REPORT_MAILBOX)
            };
            let reporter = to.first().cloned().unwrap_or_default();
            let hours_ago = self.rng.gen_range(0.5..20.0);
            let date = self.at(hours_ago);
            self.report(draft, mailbox, &reporter, &s, date, "Junk");
        }
    }

    fn report(
        &mut self,
        draft: &mut TenantDraft,
        mailbox: &str,
        reporter: &str,
        original: &Sent,
        date: DateTime<Utc>,
        kind: &str,
    ) {
        let id = self.message_id(reporter);
        let mut m = blank_message(
            &id,
            reporter,
            &format!("{kind}: {}", original.subject),
            date,
        );
        m.from_name = Some(draft.name_of(reporter));
        m.to = vec![mailbox.to_string()];
        m.body = format!(
            "This message was reported as {} by {reporter} using the Report Message button.\n",
            kind.to_ascii_lowercase()
        );
        m.headers
            .push(("X-Clawback-Report".into(), kind.to_ascii_lowercase()));
        let safe: String = original
            .subject
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == ' ' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        m.attachments.push(ScenarioAttachment {
            name: format!("{safe}.eml"),
            content_type: "message/rfc822".into(),
            content: original.raw.clone(),
            base64: false,
        });
        m.copies = vec![copy(mailbox, Folder::Inbox, false)];
        draft.tenant.messages.push(m);
    }
}
