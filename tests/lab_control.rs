//! The demo scenario's promised shape, determinism, the generator at 10,000 mailboxes, and the
//! `/_lab/` control API over real HTTP.

use chrono::{Duration, TimeZone, Utc};
use clawback::lab::demo::{self, *};
use clawback::lab::generate::{GenerateKind, GenerateOptions, generate};
use clawback::lab::scenario::Scenario;
use clawback::lab::state::LabState;
use clawback::lab::{LabOptions, LabServer};
use clawback::model::Folder;
use mail_parser::MimeHeaders;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

fn anchor() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 10, 12, 0, 0).unwrap()
}

fn demo_state(seed: u64) -> (Scenario, LabState) {
    let s = demo::build_at(seed, anchor());
    let state = s.build().expect("demo builds");
    (s, state)
}

fn header(raw: &str, name: &str) -> Option<String> {
    let msg = mail_parser::MessageParser::default().parse(raw.as_bytes())?;
    msg.header_raw(name).map(|v| v.trim().to_string())
}

#[test]
fn demo_has_the_promised_directory() {
    let (_, state) = demo_state(7);
    let contoso = &state.tenants[state.tenant_index(CONTOSO).unwrap()];
    let fabrikam = &state.tenants[state.tenant_index(FABRIKAM).unwrap()];
    assert_eq!(contoso.kind, clawback::model::TenantKind::Microsoft365);
    assert_eq!(fabrikam.kind, clawback::model::TenantKind::GoogleWorkspace);
    assert_eq!(contoso.mailboxes.len(), CONTOSO_MAILBOXES);
    assert_eq!(fabrikam.mailboxes.len(), FABRIKAM_MAILBOXES);
    // Realistic names: "first.last@domain" with a two-word display name.
    let named = contoso
        .users
        .values()
        .filter(|u| u.address.split('@').next().unwrap().contains('.'))
        .filter(|u| u.display_name.split(' ').count() == 2)
        .count();
    assert!(named > 180, "{named}");
    // Granted and ungranted domains, with mailboxes in the ungranted ones.
    assert!(contoso.mailbox_granted("x@contoso.com"));
    assert!(!contoso.mailbox_granted(&format!("x@{DEMO_UNGRANTED_DOMAIN}")));
    assert!(!fabrikam.mailbox_granted(&format!("x@{FABRIKAM_UNGRANTED_DOMAIN}")));
    assert!(
        contoso
            .mailboxes
            .keys()
            .any(|a| a.ends_with(DEMO_UNGRANTED_DOMAIN))
    );
    // Admins, hold, no-mailbox user.
    assert!(contoso.users[DEMO_CONTOSO_ADMIN].is_admin);
    assert!(fabrikam.users[DEMO_FABRIKAM_ADMIN].is_admin);
    assert_eq!(fabrikam.admin_user.as_deref(), Some(DEMO_FABRIKAM_ADMIN));
    assert!(contoso.users[DEMO_HOLD_MAILBOX].on_hold);
    assert_eq!(contoso.users.values().filter(|u| u.on_hold).count(), 1);
    let no_mb = &contoso.users[DEMO_NO_MAILBOX_USER];
    assert!(!no_mb.has_mailbox);
    assert!(!contoso.mailboxes.contains_key(DEMO_NO_MAILBOX_USER));
    // Nested DL: all-finance ⊃ finance-emea ⊃ users.
    let dl = contoso.group(DEMO_DL).unwrap();
    assert!(dl.members.contains(&DEMO_NESTED_DL.to_string()));
    let nested = contoso.group(DEMO_NESTED_DL).unwrap();
    assert!(nested.members.len() >= 10);
    let all = contoso.transitive_members(dl);
    assert!(all.contains(&nested.members[0]));
    assert!(all.contains(&DEMO_EXTERNAL_MEMBER.to_string()));
    assert!(contoso.mailboxes.contains_key(DEMO_CONTOSO_REPORT_MAILBOX));
    assert!(
        fabrikam
            .mailboxes
            .contains_key(DEMO_FABRIKAM_REPORT_MAILBOX)
    );
}

#[test]
fn demo_campaign_reaches_the_promised_mailboxes() {
    let (_, state) = demo_state(7);
    let copies = state.copies_of(CAMPAIGN_MESSAGE_ID);
    assert_eq!(copies.len(), CAMPAIGN_RECIPIENTS);
    let per_tenant: BTreeMap<&str, usize> = copies.iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(c.0).or_default() += 1;
        m
    });
    assert_eq!(per_tenant[CONTOSO], CAMPAIGN_RECIPIENTS_CONTOSO);
    assert_eq!(per_tenant[FABRIKAM], CAMPAIGN_RECIPIENTS_FABRIKAM);
    let holders: BTreeSet<&str> = copies.iter().map(|c| c.1).collect();
    assert_eq!(holders.len(), CAMPAIGN_RECIPIENTS, "one copy per mailbox");
    // Every mailbox behind the nested DL has it.
    let contoso = &state.tenants[0];
    for m in contoso.transitive_members(contoso.group(DEMO_DL).unwrap()) {
        if contoso.mailboxes.contains_key(&m) {
            assert!(
                holders.contains(m.as_str()),
                "{m} in {DEMO_DL} lacks the campaign"
            );
        }
    }
    assert!(holders.contains(DEMO_HOLD_MAILBOX));
    assert!(holders.iter().any(|h| h.ends_with(DEMO_UNGRANTED_DOMAIN)));
    assert!(
        holders
            .iter()
            .any(|h| h.ends_with(FABRIKAM_UNGRANTED_DOMAIN))
    );
    let folders: BTreeMap<Folder, usize> = copies.iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(c.2.folder.clone()).or_default() += 1;
        m
    });
    assert_eq!(folders.get(&Folder::Trash), Some(&10), "{folders:?}");
    assert_eq!(folders.get(&Folder::Junk), Some(&5), "{folders:?}");
    assert_eq!(folders.get(&Folder::RecoverableDeletions), Some(&3));
    let read = copies.iter().filter(|c| c.2.read).count();
    assert!(read > 30 && read < 120, "{read} read");
    // The campaign content: phishing URL in text and HTML, the HTML attachment, no disposition.
    let raw = &copies[0].2.content.raw;
    let msg = mail_parser::MessageParser::default()
        .parse(raw.as_bytes())
        .unwrap();
    assert_eq!(msg.subject(), Some(CAMPAIGN_SUBJECT));
    assert!(msg.body_text(0).unwrap().contains(CAMPAIGN_URL));
    assert!(msg.body_html(0).unwrap().contains(CAMPAIGN_URL));
    let names: Vec<&str> = msg
        .attachments()
        .filter_map(|a| a.attachment_name())
        .collect();
    assert_eq!(names, vec![CAMPAIGN_ATTACHMENT]);
    assert!(header(raw, "X-Clawback-Disposition").is_none());
    // The other lure carries the malicious header.
    let lure = state.copies_of(MALICIOUS_MESSAGE_ID);
    assert_eq!(lure.len(), MALICIOUS_RECIPIENTS);
    assert_eq!(
        header(&lure[0].2.content.raw, "X-Clawback-Disposition").as_deref(),
        Some("malicious")
    );
}

#[test]
fn demo_replies_and_forwards_form_valid_chains() {
    let (scenario, state) = demo_state(7);
    let all: BTreeMap<String, &clawback::lab::scenario::ScenarioMessage> = scenario
        .tenants
        .iter()
        .flat_map(|t| &t.messages)
        .map(|m| (m.message_id.clone(), m))
        .collect();
    let follow_ups: Vec<_> = all
        .values()
        .filter(|m| m.references.iter().any(|r| r == CAMPAIGN_MESSAGE_ID))
        .collect();
    assert_eq!(follow_ups.len(), REPLY_COUNT);
    let mut depth2 = 0;
    for m in &follow_ups {
        let parent = m.in_reply_to.as_deref().unwrap();
        let p = all.get(parent).expect("parent exists");
        let mut expected = p.references.clone();
        expected.push(p.message_id.clone());
        assert_eq!(m.references, expected, "{}", m.message_id);
        assert!(m.references.len() <= 2);
        if m.references.len() == 2 {
            depth2 += 1;
        }
        assert!(m.date > p.date);
        // Headers in the served text agree, and the conversation is the campaign's.
        let copies = state.copies_of(&m.message_id);
        let c = &copies[0].2.content;
        assert_eq!(c.conversation_key, CAMPAIGN_MESSAGE_ID);
        assert_eq!(header(&c.raw, "In-Reply-To").as_deref(), Some(parent));
        assert_eq!(
            header(&c.raw, "References").unwrap(),
            m.references.join(" ")
        );
        assert!(
            copies
                .iter()
                .any(|(_, mb, cp)| *mb == m.from && cp.folder == Folder::SentItems)
        );
    }
    assert!(depth2 >= 3, "{depth2}");
    // Some follow-ups reach other mailboxes' inboxes.
    let inbox_copies: usize = follow_ups
        .iter()
        .map(|m| {
            state
                .copies_of(&m.message_id)
                .iter()
                .filter(|c| c.2.folder == Folder::Inbox)
                .count()
        })
        .sum();
    assert!(inbox_copies >= 10, "{inbox_copies}");
}

#[test]
fn demo_phish_reports_carry_the_original() {
    let (_, state) = demo_state(7);
    let mut campaign_reporters = BTreeSet::new();
    let mut benign = 0;
    for (t, mailbox) in [
        (CONTOSO, DEMO_CONTOSO_REPORT_MAILBOX),
        (FABRIKAM, DEMO_FABRIKAM_REPORT_MAILBOX),
    ] {
        let tenant = &state.tenants[state.tenant_index(t).unwrap()];
        let mb = &tenant.mailboxes[mailbox];
        assert!(!mb.copies.is_empty());
        for c in mb.copies.values() {
            let msg = mail_parser::MessageParser::default()
                .parse(c.content.raw.as_bytes())
                .unwrap();
            let inner = msg
                .attachments()
                .find_map(|a| a.message())
                .expect("report has a message/rfc822 attachment");
            let inner_id = format!("<{}>", inner.message_id().unwrap());
            if inner_id == CAMPAIGN_MESSAGE_ID {
                assert_eq!(inner.subject(), Some(CAMPAIGN_SUBJECT));
                campaign_reporters.insert(c.content.from.clone());
                // A reporter received the campaign.
                assert!(
                    state
                        .copies_of(CAMPAIGN_MESSAGE_ID)
                        .iter()
                        .any(|x| x.1 == c.content.from)
                );
            } else {
                benign += 1;
                assert!(!state.copies_of(&inner_id).is_empty(), "{inner_id}");
            }
        }
    }
    assert_eq!(campaign_reporters.len(), CAMPAIGN_REPORTS);
    assert_eq!(benign, BENIGN_REPORTS);
}

#[test]
fn demo_ordinary_mail_is_plentiful_and_realistic() {
    let (scenario, state) = demo_state(7);
    let messages: usize = scenario.tenants.iter().map(|t| t.messages.len()).sum();
    assert!(messages >= 300, "{messages}");
    let mut dispositions = BTreeSet::new();
    let mut with_attachments = 0;
    let mut with_urls = 0;
    let (lo, hi) = (anchor() - Duration::days(7), anchor());
    for t in &state.tenants {
        for mb in t.mailboxes.values() {
            for c in mb.copies.values() {
                assert!(c.content.date >= lo && c.content.date <= hi);
                if let Some(d) = header(&c.content.raw, "X-Clawback-Disposition") {
                    dispositions.insert(d);
                }
                if c.content.has_attachments {
                    with_attachments += 1;
                }
                if c.content.body_text.contains("https://") {
                    with_urls += 1;
                }
            }
        }
    }
    let want: BTreeSet<String> = ["bulk", "malicious", "spam", "spoof", "suspicious"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(dispositions, want);
    assert!(with_attachments > 100 && with_urls > 300);
}

#[test]
fn demo_is_deterministic_for_a_seed() {
    let a = serde_json::to_string(&demo::build_at(3, anchor())).unwrap();
    let b = serde_json::to_string(&demo::build_at(3, anchor())).unwrap();
    let c = serde_json::to_string(&demo::build_at(4, anchor())).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Both seeds honour the promised constants.
    for seed in [4, 99] {
        let st = demo::build_at(seed, anchor()).build().unwrap();
        assert_eq!(st.copies_of(CAMPAIGN_MESSAGE_ID).len(), CAMPAIGN_RECIPIENTS);
    }
}

#[test]
fn generated_10k_scenario_has_exactly_m_campaign_copies() {
    let s = generate(&GenerateOptions {
        mailboxes: 10_000,
        campaign_recipients: 7_500,
        seed: 5,
        kind: GenerateKind::Mixed,
        background_messages: 10,
    })
    .unwrap();
    let state = s.build().unwrap();
    let mailboxes: usize = state.tenants.iter().map(|t| t.mailboxes.len()).sum();
    assert_eq!(mailboxes, 10_000);
    assert_eq!(state.tenants[0].mailboxes.len(), 6_667);
    assert_eq!(state.copies_of(CAMPAIGN_MESSAGE_ID).len(), 7_500);
    assert!(
        state.tenants[1]
            .users
            .values()
            .any(|u| u.is_admin && state.tenants[1].admin_user.as_deref() == Some(&u.address))
    );
}

async fn get(client: &reqwest::Client, url: String) -> (u16, Value) {
    let r = client.get(url).send().await.expect("GET reaches the lab");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

async fn post(client: &reqwest::Client, url: String, body: &str) -> (u16, Value) {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST reaches the lab");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

#[tokio::test]
async fn control_api_reports_the_world_over_http() {
    let scenario = demo::build_at(7, anchor());
    let server = LabServer::start(
        &scenario,
        LabOptions::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let base = server.base_url();
    let client = reqwest::Client::new();

    // Scenario summary.
    let (status, v) = get(&client, format!("{base}/_lab/scenario")).await;
    assert_eq!(status, 200);
    assert_eq!(v["name"], "demo");
    assert_eq!(v["tenants"][0]["name"], CONTOSO);
    assert_eq!(v["tenants"][0]["mailboxes"], CONTOSO_MAILBOXES);
    assert_eq!(v["tenants"][1]["mailboxes"], FABRIKAM_MAILBOXES);
    assert_eq!(
        v["tenants"][0]["domains"][1],
        json!({"name": DEMO_UNGRANTED_DOMAIN, "granted": false})
    );
    assert_eq!(v["tenants"][1]["admin_user"], DEMO_FABRIKAM_ADMIN);

    // Every copy of the campaign, checked against the lab's state.
    let q = |mid: &str| format!("{base}/_lab/messages?message_id={}", percent_encode(mid));
    let (status, v) = get(&client, q(CAMPAIGN_MESSAGE_ID)).await;
    assert_eq!(status, 200);
    assert_eq!(v["count"], CAMPAIGN_RECIPIENTS);
    let copies = v["copies"].as_array().unwrap();
    {
        let state = server.lab.state();
        for c in copies {
            let t = state.tenant_index(c["tenant"].as_str().unwrap()).unwrap();
            let real = state
                .copy(t, c["mailbox"].as_str().unwrap(), c["id"].as_str().unwrap())
                .unwrap();
            assert_eq!(c["read"], real.read);
            assert_eq!(c["folder"], serde_json::to_value(&real.folder).unwrap());
            assert_eq!(c["actions"], 0);
            if c["tenant"] == FABRIKAM {
                let labels = c["labels"].as_array().unwrap();
                assert_eq!(labels.contains(&json!("UNREAD")), !real.read);
            } else {
                assert!(c.get("labels").is_none());
            }
        }
    }
    // Brackets are optional in the query.
    let bare = CAMPAIGN_MESSAGE_ID.trim_matches(['<', '>']);
    assert_eq!(get(&client, q(bare)).await.1["count"], CAMPAIGN_RECIPIENTS);

    // A user deletes the phish themself: the copy moves, counted as a user action.
    let victim = copies
        .iter()
        .find(|c| c["tenant"] == CONTOSO && c["folder"] == "inbox")
        .unwrap();
    let mailbox = victim["mailbox"].as_str().unwrap().to_string();
    let body = json!({"tenant": CONTOSO, "mailbox": mailbox, "message_id": CAMPAIGN_MESSAGE_ID, "folder": "deleteditems"});
    let (status, v) = post(
        &client,
        format!("{base}/_lab/user-action"),
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["copy"]["folder"], "trash");
    assert_ne!(v["copy"]["id"], victim["id"], "Graph ids change on move");
    let (_, v) = get(&client, format!("{base}/_lab/mailboxes/{mailbox}")).await;
    let moved: Vec<&Value> = v["copies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["message_id"] == CAMPAIGN_MESSAGE_ID)
        .collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0]["folder"], "trash");
    assert_eq!(v["tenant"], CONTOSO);
    assert_eq!(v["granted"], true);
    {
        let state = server.lab.state();
        let t = state.tenant_index(CONTOSO).unwrap();
        assert_eq!(
            state
                .copy(t, &mailbox, moved[0]["id"].as_str().unwrap())
                .unwrap()
                .folder,
            Folder::Trash
        );
    }
    // Gmail user action keeps the id.
    let g = copies
        .iter()
        .find(|c| c["tenant"] == FABRIKAM && c["folder"] == "inbox")
        .unwrap();
    let body = json!({"tenant": FABRIKAM, "mailbox": g["mailbox"], "message_id": CAMPAIGN_MESSAGE_ID, "folder": "junk", "read": true});
    let (status, v) = post(
        &client,
        format!("{base}/_lab/user-action"),
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["copy"]["id"], g["id"]);
    assert_eq!(v["copy"]["labels"], json!(["SPAM"]));

    // An API-side action (as a provider face records it) shows up in the counts.
    {
        let mut state = server.lab.state();
        let t = state.tenant_index(CONTOSO).unwrap();
        let id = moved[0]["id"].as_str().unwrap().to_string();
        state
            .move_copy(t, &mailbox, &id, Folder::Purged, "permanentDelete", false)
            .unwrap();
    }
    let url = format!(
        "{base}/_lab/actions?message_id={}&mailbox={mailbox}",
        percent_encode(CAMPAIGN_MESSAGE_ID)
    );
    let (status, v) = get(&client, url).await;
    assert_eq!(status, 200);
    assert_eq!(v["total"], 1);
    assert_eq!(v["counts"].as_array().unwrap().len(), 1);
    assert_eq!(v["counts"][0]["count"], 1);
    assert_eq!(v["counts"][0]["user_actions"], 1);
    assert_eq!(
        v["counts"][0]["actions"],
        json!(["user:deleteditems", "permanentDelete"])
    );
    assert_eq!(v["records"][1]["to_folder"], "purged");
    let (_, v) = get(&client, q(CAMPAIGN_MESSAGE_ID)).await;
    let c = v["copies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["mailbox"] == mailbox.as_str())
        .unwrap()
        .clone();
    assert_eq!(c["actions"], 1);
    assert_eq!(c["folder"], "purged");
    let (_, v) = get(&client, format!("{base}/_lab/actions")).await;
    assert_eq!(v["records"].as_array().unwrap().len(), 3);

    // Deliver a new message and find it.
    let message = json!({
        "message_id": "<late-phish-1@evil.example>",
        "from": "ceo@evil.example",
        "subject": "Gift cards",
        "date": "2025-03-10T11:00:00Z",
        "body": "Buy gift cards: https://evil.example/pay",
        "headers": [["X-Clawback-Disposition", "malicious"]],
        "copy": [{"mailbox": DEMO_HOLD_MAILBOX}, {"mailbox": "patti.fernandez@contoso.com", "read": true}],
    });
    let body = json!({"tenant": CONTOSO, "message": message});
    let (status, v) = post(&client, format!("{base}/_lab/deliver"), &body.to_string()).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["count"], 2);
    let (_, v) = get(&client, q("<late-phish-1@evil.example>")).await;
    assert_eq!(v["count"], 2);
    let state_copies = server
        .lab
        .state()
        .copies_of("<late-phish-1@evil.example>")
        .len();
    assert_eq!(state_copies, 2);
    assert!(
        server.lab.state().copies_of("<late-phish-1@evil.example>")[0]
            .2
            .content
            .raw
            .contains("X-Clawback-Disposition: malicious")
    );

    // Bad input → 400 naming the problem; unknown things → 404.
    let cases: Vec<(u16, Value, &str)> = vec![
        {
            let r = get(&client, format!("{base}/_lab/messages")).await;
            (r.0, r.1, "message_id is required")
        },
        {
            let r = get(&client, format!("{base}/_lab/messages?message_id=nope")).await;
            (r.0, r.1, "not a Message-ID")
        },
        {
            let r = post(&client, format!("{base}/_lab/deliver"), "{not json").await;
            (r.0, r.1, "not valid JSON")
        },
        {
            let b = json!({"tenant": "nowhere", "message": message}).to_string();
            let r = post(&client, format!("{base}/_lab/deliver"), &b).await;
            (r.0, r.1, "tenant \"nowhere\" is not in this lab")
        },
        {
            let mut m = message.clone();
            m["copy"] = json!([{"mailbox": "ghost@contoso.com"}]);
            let b = json!({"tenant": CONTOSO, "message": m}).to_string();
            let r = post(&client, format!("{base}/_lab/deliver"), &b).await;
            (r.0, r.1, "ghost@contoso.com")
        },
        {
            let b = json!({"tenant": CONTOSO, "mailbox": mailbox, "message_id": CAMPAIGN_MESSAGE_ID, "folder": "attic"}).to_string();
            let r = post(&client, format!("{base}/_lab/user-action"), &b).await;
            (r.0, r.1, "folder \"attic\" is not known")
        },
        {
            let b = json!({"tenant": CONTOSO, "mailbox": DEMO_CONTOSO_ADMIN, "message_id": CAMPAIGN_MESSAGE_ID, "folder": "junk"}).to_string();
            let r = post(&client, format!("{base}/_lab/user-action"), &b).await;
            (r.0, r.1, "holds no copy")
        },
        {
            let r = get(&client, format!("{base}/_lab/mailboxes/{DEMO_DL}")).await;
            (r.0, r.1, "is a group")
        },
        {
            let r = get(
                &client,
                format!("{base}/_lab/mailboxes/{DEMO_NO_MAILBOX_USER}"),
            )
            .await;
            (r.0, r.1, "without a mailbox")
        },
    ];
    for (i, (status, v, needle)) in cases.iter().enumerate() {
        let expected = if i >= 7 { 404 } else { 400 };
        assert_eq!(*status, expected, "case {i}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "case {i}: {v}"
        );
    }
    // The rejected delivery delivered nothing.
    assert_eq!(
        server
            .lab
            .state()
            .copies_of("<late-phish-1@evil.example>")
            .len(),
        2
    );

    // Stats count what was served.
    let (_, v) = get(&client, format!("{base}/_lab/stats")).await;
    assert!(v["requests"]["GET /_lab/messages"].as_u64().unwrap() >= 4);
    assert_eq!(v["requests"]["POST /_lab/deliver"], 4);
    assert_eq!(v["slots_in_use"][CONTOSO], 0);
    assert_eq!(v["faults"]["total"], 0);
    assert_eq!(v["in_flight"], 1, "this stats request itself");
    server.stop().await;
}

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
