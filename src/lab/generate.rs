//! Large scenarios for benchmarks and scale tests: N mailboxes split over a Microsoft 365 and a
//! Google Workspace tenant, one campaign with exactly M copies, a few background messages.
//!
//! Dates lie before an anchor, as in the demo: [`generate`] anchors at the start of the current
//! UTC hour, so the mail is recent enough for `trace sync`'s default look-back (30 days) to
//! find it; [`generate_at`] takes the anchor, and the same (options, anchor) always gives the
//! same scenario. The campaign is dated one hour before the anchor and uses the demo's
//! Message-ID and sender ([`super::demo::CAMPAIGN_MESSAGE_ID`]), so tools and tests treat both
//! alike.

use super::demo::{
    CAMPAIGN_MESSAGE_ID, CAMPAIGN_SENDER, CAMPAIGN_SENDER_NAME, CAMPAIGN_SUBJECT, CAMPAIGN_URL,
    blank_message,
};
use super::scenario::{
    Scenario, ScenarioCopy, ScenarioDomain, ScenarioMessage, ScenarioTenant, ScenarioUser,
};
use crate::model::{Folder, TenantKind};
use chrono::{DateTime, Duration, DurationRound, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Which tenants a generated scenario has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum GenerateKind {
    /// Only a Microsoft 365 tenant (`contoso`).
    #[value(name = "microsoft365")]
    Microsoft365,
    /// Only a Google Workspace tenant (`fabrikam`).
    #[value(name = "google_workspace")]
    GoogleWorkspace,
    /// Two thirds Microsoft 365, one third Google Workspace.
    #[value(name = "mixed")]
    Mixed,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Mailboxes in total (N).
    pub mailboxes: usize,
    /// Mailboxes that hold the campaign (M ≤ N).
    pub campaign_recipients: usize,
    pub seed: u64,
    pub kind: GenerateKind,
    /// Background messages, each to a handful of mailboxes.
    pub background_messages: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            mailboxes: 10_000,
            campaign_recipients: 10_000,
            seed: 1,
            kind: GenerateKind::Mixed,
            background_messages: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    #[error("--mailboxes must be at least 1")]
    NoMailboxes,
    /// More than the generator builds in memory (a huge number made it panic on allocation).
    #[error("--{option} {given} is more than {MAX_GENERATED}, the most a generated scenario holds")]
    TooLarge { option: &'static str, given: usize },
    #[error(
        "--campaign-recipients {recipients} is more than --mailboxes {mailboxes}; the campaign can reach at most every mailbox"
    )]
    TooManyRecipients { recipients: usize, mailboxes: usize },
}

/// The most mailboxes, and the most background messages, a generated scenario holds: the whole
/// scenario is built in memory (and served from it), so a bigger number only ends in an
/// allocation failure.
pub const MAX_GENERATED: usize = 1_000_000;

/// Generates a scenario anchored at the start of the current UTC hour.
pub fn generate(opts: &GenerateOptions) -> Result<Scenario, GenerateError> {
    let now = Utc::now();
    generate_at(opts, now.duration_trunc(Duration::hours(1)).unwrap_or(now))
}

/// Generates a scenario with every date before `anchor` (the campaign one hour before it).
pub fn generate_at(
    opts: &GenerateOptions,
    anchor: DateTime<Utc>,
) -> Result<Scenario, GenerateError> {
    if opts.mailboxes == 0 {
        return Err(GenerateError::NoMailboxes);
    }
    for (option, given) in [
        ("mailboxes", opts.mailboxes),
        ("background-messages", opts.background_messages),
    ] {
        if given > MAX_GENERATED {
            return Err(GenerateError::TooLarge { option, given });
        }
    }
    if opts.campaign_recipients > opts.mailboxes {
        return Err(GenerateError::TooManyRecipients {
            recipients: opts.campaign_recipients,
            mailboxes: opts.mailboxes,
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x6765_6e65);
    let n = opts.mailboxes;
    let (microsoft, google) = match opts.kind {
        GenerateKind::Microsoft365 => (n, 0),
        GenerateKind::GoogleWorkspace => (0, n),
        GenerateKind::Mixed => {
            let ms = (n * 2).div_ceil(3);
            (ms, n - ms)
        }
    };
    // Campaign copies per tenant, proportional to size, summing to exactly M.
    let m = opts.campaign_recipients;
    let m_ms = if google == 0 {
        m
    } else if microsoft == 0 {
        0
    } else {
        (m * microsoft / n)
            .min(microsoft)
            .max(m.saturating_sub(google))
    };
    let m_g = m - m_ms;
    let mut tenants = Vec::new();
    let plan = [
        (
            "contoso",
            "contoso.com",
            TenantKind::Microsoft365,
            microsoft,
            m_ms,
        ),
        (
            "fabrikam",
            "fabrikam.com",
            TenantKind::GoogleWorkspace,
            google,
            m_g,
        ),
    ];
    let background_each = opts.background_messages;
    for (name, domain, kind, size, recipients) in plan {
        if size == 0 {
            continue;
        }
        let share = if microsoft == 0 || google == 0 {
            background_each
        } else if kind == TenantKind::Microsoft365 {
            background_each.div_ceil(2)
        } else {
            background_each / 2
        };
        tenants.push(tenant(
            &mut rng,
            anchor,
            (name, domain, kind),
            size,
            recipients,
            share,
        ));
    }
    Ok(Scenario {
        name: format!("generated-{n}"),
        seed: opts.seed,
        tenants,
    })
}

fn address(i: usize, domain: &str) -> String {
    const FIRST: &[&str] = &[
        "ana", "ben", "chen", "dana", "eli", "fatima", "gus", "hana", "ivan", "jo", "kenji", "lea",
        "mateo", "nia", "omar", "priya", "quinn", "rosa", "sam", "tariq", "uma", "wei", "yara",
        "zoe",
    ];
    const LAST: &[&str] = &[
        "adams", "baker", "costa", "dubois", "evans", "fischer", "garcia", "hansen", "ito",
        "jansen", "kim", "lopez", "meyer", "nguyen", "okafor", "patel", "rossi", "silva", "tanaka",
        "wagner",
    ];
    format!(
        "{}.{}{}@{domain}",
        FIRST[i % FIRST.len()],
        LAST[(i / FIRST.len()) % LAST.len()],
        i
    )
}

fn tenant(
    rng: &mut ChaCha8Rng,
    anchor: DateTime<Utc>,
    (name, domain, kind): (&str, &str, TenantKind),
    size: usize,
    campaign: usize,
    background: usize,
) -> ScenarioTenant {
    let admin = format!("admin@{domain}");
    let mut addresses: Vec<String> = Vec::with_capacity(size);
    addresses.push(admin.clone());
    addresses.extend((1..size).map(|i| address(i, domain)));
    let users: Vec<ScenarioUser> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| ScenarioUser {
            address: a.clone(),
            name: None,
            mailbox: true,
            on_hold: false,
            upn: None,
            aliases: Vec::new(),
            full_access: Vec::new(),
            admin: i == 0,
        })
        .collect();
    let date = anchor - Duration::hours(1);
    let mut messages = Vec::new();
    if campaign > 0 {
        let mut m = blank_message(CAMPAIGN_MESSAGE_ID, CAMPAIGN_SENDER, CAMPAIGN_SUBJECT, date);
        m.from_name = Some(CAMPAIGN_SENDER_NAME.into());
        m.to = vec![format!("all@{domain}")];
        m.body = format!("Your password expires today. Keep it here: {CAMPAIGN_URL}\n");
        m.copies = rand::seq::index::sample(rng, size, campaign)
            .into_iter()
            .map(|i| ScenarioCopy {
                mailbox: addresses[i].clone(),
                folder: Folder::Inbox,
                read: rng.gen_bool(0.3),
            })
            .collect();
        messages.push(m);
    }
    for b in 0..background {
        let from = &addresses[rng.gen_range(0..size)];
        let mut m: ScenarioMessage = blank_message(
            &format!("<bg{b}.{}@{domain}>", rng.r#gen::<u32>()),
            from,
            &format!("Weekly update #{b}"),
            date - Duration::minutes(rng.gen_range(60..10_000)),
        );
        m.body = "Status as discussed.\n".into();
        let k = 5.min(size);
        let to: Vec<String> = rand::seq::index::sample(rng, size, k)
            .into_iter()
            .map(|i| addresses[i].clone())
            .filter(|a| a != from)
            .collect();
        m.to = to.clone();
        m.copies = std::iter::once(ScenarioCopy {
            mailbox: from.clone(),
            folder: Folder::SentItems,
            read: true,
        })
        .chain(to.iter().map(|a| ScenarioCopy {
            mailbox: a.clone(),
            folder: Folder::Inbox,
            read: false,
        }))
        .collect();
        messages.push(m);
    }
    ScenarioTenant {
        name: name.into(),
        kind,
        cloud: Default::default(),
        rbac_mail_scope: None,
        tenant_id: None,
        domains: vec![ScenarioDomain {
            name: domain.into(),
            granted: true,
        }],
        client_id: None,
        client_secret: None,
        granted: None,
        admin_user: (kind == TenantKind::GoogleWorkspace).then_some(admin),
        report_mailboxes: Vec::new(),
        users,
        groups: Vec::new(),
        messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_before_the_current_hour_or_the_anchor_given() {
        let opts = GenerateOptions {
            mailboxes: 3,
            campaign_recipients: 2,
            background_messages: 2,
            ..Default::default()
        };
        let before = Utc::now();
        let s = generate(&opts).unwrap();
        let dates: Vec<DateTime<Utc>> = s
            .tenants
            .iter()
            .flat_map(|t| &t.messages)
            .map(|m| m.date)
            .collect();
        assert!(!dates.is_empty());
        for d in &dates {
            assert!(*d < before, "{d}");
            assert!(before - *d < Duration::days(30), "{d}: outside 30 days");
        }
        let anchor = DateTime::parse_from_rfc3339("2026-02-01T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = serde_json::to_string(&generate_at(&opts, anchor).unwrap()).unwrap();
        let b = serde_json::to_string(&generate_at(&opts, anchor).unwrap()).unwrap();
        assert_eq!(a, b, "the same options and anchor give the same scenario");
        let campaign = generate_at(&opts, anchor).unwrap().tenants[0].messages[0].date;
        assert_eq!(campaign, anchor - Duration::hours(1));
    }

    #[test]
    fn splits_exactly_and_rejects_bad_counts() {
        for (n, m, kind) in [
            (10, 10, GenerateKind::Mixed),
            (10, 7, GenerateKind::Mixed),
            (1, 1, GenerateKind::Mixed),
            (2, 0, GenerateKind::Mixed),
            (30, 29, GenerateKind::GoogleWorkspace),
            (30, 1, GenerateKind::Microsoft365),
        ] {
            let s = generate(&GenerateOptions {
                mailboxes: n,
                campaign_recipients: m,
                kind,
                ..Default::default()
            })
            .unwrap();
            let users: usize = s.tenants.iter().map(|t| t.users.len()).sum();
            assert_eq!(users, n, "{n} {m} {kind:?}");
            let copies: usize = s
                .tenants
                .iter()
                .flat_map(|t| &t.messages)
                .filter(|x| x.message_id == CAMPAIGN_MESSAGE_ID)
                .map(|x| x.copies.len())
                .sum();
            assert_eq!(copies, m, "{n} {m} {kind:?}");
        }
        assert_eq!(
            generate(&GenerateOptions {
                mailboxes: 3,
                campaign_recipients: 4,
                ..Default::default()
            })
            .unwrap_err(),
            GenerateError::TooManyRecipients {
                recipients: 4,
                mailboxes: 3
            }
        );
    }
}
