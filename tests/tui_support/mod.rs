//! Shared test fixtures for the console tests: engine events with fixed data, key presses, and
//! a headless renderer. Test-only: the production console never sees canned data.
#![allow(dead_code, clippy::unwrap_used)]

pub mod console;

use chrono::{DateTime, Duration, TimeZone, Utc};
use clawback::engine::Command;
use clawback::engine::event::{EngineEvent, QueryErrorView};
use clawback::engine::metrics::RetractedMessage;
use clawback::engine::view::*;
use clawback::model::{
    Disposition, FailureReason, Folder, RetractAction, Role, TenantKind, Trigger,
};
use clawback::tui::app::App;
use clawback::tui::keymap::{KeyChord, Keymap};
use clawback::tui::theme::Theme;
use clawback::tui::ui;
use crossterm::event::{KeyEvent, KeyEventKind, KeyEventState};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use std::collections::BTreeMap;

pub fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 8, 41, 0).unwrap()
}

pub fn app() -> App {
    App::new(Keymap::defaults().unwrap(), Role::Responder)
}

pub fn admin_app() -> App {
    App::new(Keymap::defaults().unwrap(), Role::Admin)
}

/// A key press from a key string (`j`, `ctrl+r`, `space`).
pub fn press(key: &str) -> KeyEvent {
    let chord = KeyChord::parse(key).unwrap();
    KeyEvent::new(chord.code, chord.modifiers)
}

pub fn key_with_kind(key: &str, kind: KeyEventKind) -> KeyEvent {
    let chord = KeyChord::parse(key).unwrap();
    KeyEvent {
        code: chord.code,
        modifiers: chord.modifiers,
        kind,
        state: KeyEventState::NONE,
    }
}

/// Presses keys in order; returns every command they produced.
pub fn keys(app: &mut App, keys: &[&str]) -> Vec<Command> {
    keys.iter().flat_map(|k| app.handle_key(press(k))).collect()
}

/// Types text into the focused input, one key per character.
pub fn type_text(app: &mut App, text: &str) -> Vec<Command> {
    text.chars()
        .flat_map(|c| {
            let key = if c == ' ' {
                "space".to_string()
            } else {
                c.to_string()
            };
            app.handle_key(press(&key))
        })
        .collect()
}

pub fn message_ref(i: usize) -> MessageRef {
    MessageRef {
        tenant: "contoso".into(),
        message_id: format!("<m{i}@evil.example>"),
    }
}

pub fn search_rows(n: usize) -> Vec<SearchRow> {
    let subjects = [
        "Invoice overdue: action required",
        "Your mailbox is almost full",
        "Quarterly results (confidential)",
        "Re: lunch on friday",
    ];
    (0..n)
        .map(|i| SearchRow {
            message: message_ref(i),
            received: base_time() - Duration::minutes(i as i64 * 7),
            from: format!("billing{}@evil.example", i % 3).into(),
            subject: subjects[i % subjects.len()].into(),
            copies: (i as u64 * 37) % 1500 + 1,
            disposition: [
                Some(Disposition::Malicious),
                Some(Disposition::Suspicious),
                None,
                Some(Disposition::Spam),
            ][i % 4],
            retraction: [
                RetractionState::None,
                RetractionState::Retracted,
                RetractionState::Partial,
                RetractionState::InProgress,
                RetractionState::None,
            ][i % 5],
            campaign: (i % 4 != 3).then_some(i as u64 % 2),
        })
        .collect()
}

/// A checklist across two tenants: located mailboxes, then an unresolved one, then what the
/// plan cannot act on (a list, not authorized, external, already gone, in another job).
pub fn recipients() -> Vec<RecipientRow> {
    let located =
        |tenant: &str, address: &str, folder: Folder, read: bool, last: Option<CopyOutcome>| {
            RecipientRow {
                address: address.into(),
                tenant: tenant.into(),
                kind: AddressKind::Mailbox,
                state: RecipientState::Located,
                folder: Some(folder),
                read: Some(read),
                copies: 1,
                last_outcome: last,
            }
        };
    let not =
        |tenant: &str, address: &str, kind: AddressKind, reason: FailureReason, detail: &str| {
            RecipientRow {
                address: address.into(),
                tenant: tenant.into(),
                kind,
                state: RecipientState::NotActionable {
                    reason,
                    detail: detail.into(),
                },
                folder: None,
                read: None,
                copies: 0,
                last_outcome: None,
            }
        };
    vec![
        located(
            "contoso",
            "alice@contoso.example",
            Folder::Inbox,
            false,
            None,
        ),
        located(
            "contoso",
            "bob@contoso.example",
            Folder::Inbox,
            true,
            Some(CopyOutcome::Succeeded {
                action: RetractAction::Junk,
            }),
        ),
        located(
            "fabrikam",
            "carol@fabrikam.example",
            Folder::Inbox,
            true,
            None,
        ),
        RecipientRow {
            address: "erin@fabrikam.example".into(),
            tenant: "fabrikam".into(),
            kind: AddressKind::Mailbox,
            state: RecipientState::Unresolved {
                reason: FailureReason::Throttled,
                detail: "429 rateLimitExceeded: quota exceeded".into(),
            },
            folder: None,
            read: None,
            copies: 1,
            last_outcome: None,
        },
        not(
            "contoso",
            "sales@contoso.example",
            AddressKind::DistributionList,
            FailureReason::NotAMailbox,
            "distribution list: its 2 member mailboxes are retracted separately",
        ),
        not(
            "contoso",
            "dave@labs.contoso.example",
            AddressKind::Mailbox,
            FailureReason::NotAuthorized,
            "403 ErrorAccessDenied: Access is denied",
        ),
        not(
            "contoso",
            "frank@contoso.example",
            AddressKind::Mailbox,
            FailureReason::AlreadyGone,
            "already in Trash",
        ),
        not(
            "contoso",
            "grace@contoso.example",
            AddressKind::Mailbox,
            FailureReason::InAnotherJob,
            "job 41 holds it",
        ),
        not(
            "",
            "partner@outside.example",
            AddressKind::External,
            FailureReason::External,
            "outside the tenant's domains",
        ),
    ]
}

pub fn depth_counts(depth: u8) -> Vec<DepthCount> {
    (0..=depth)
        .map(|d| DepthCount {
            depth: d,
            copies: [4, 9, 3, 1, 0, 0][d as usize],
            mailboxes: [4, 6, 2, 1, 0, 0][d as usize],
        })
        .collect()
}

pub fn plan_summary(action: RetractAction, copies: u64) -> PlanSummary {
    PlanSummary {
        plan_id: PlanId("plan-7".into()),
        digest: "3f2a9c0d1e5b7a8c9d0e1f2a3b4c5d6e".into(),
        action,
        depth: 1,
        copies_total: copies,
        mailboxes: copies.saturating_sub(2),
        per_action: vec![(action, copies)],
        per_tenant: vec![TenantCount {
            tenant: "contoso".into(),
            kind: TenantKind::Microsoft365,
            copies,
        }],
        not_actionable: vec![
            (FailureReason::External, 1),
            (FailureReason::NotAMailbox, 1),
        ],
        notes: vec![],
    }
}

pub fn jobs() -> Vec<JobView> {
    vec![
        JobView {
            id: JobId("job-42".into()),
            started: base_time(),
            trigger: Trigger::Manual,
            kind: JobKind::Retract,
            action: RetractAction::Junk,
            parent: None,
            restored_by: vec![],
            state: JobPhase::Running,
            total: 1000,
            succeeded: 497,
            failed_by_reason: vec![
                (FailureReason::AlreadyGone, 4),
                (FailureReason::NotAuthorized, 2),
            ],
            skipped: 0,
            restorable: 497,
            operator: "alice".into(),
            audit_head: None,
        },
        JobView {
            id: JobId("job-41".into()),
            started: base_time() - Duration::hours(3),
            trigger: Trigger::Auto,
            kind: JobKind::Retract,
            action: RetractAction::Trash,
            parent: None,
            restored_by: vec![],
            state: JobPhase::Finished,
            total: 12,
            succeeded: 12,
            failed_by_reason: vec![],
            skipped: 1,
            restorable: 12,
            operator: "policy".into(),
            audit_head: Some(
                "57 sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            ),
        },
    ]
}

pub fn job_progress() -> JobProgress {
    JobProgress {
        job: JobId("job-42".into()),
        done: 503,
        failed: 6,
        remaining: 497,
        rate_per_sec: 120.5,
        eta_secs: Some(4),
        throttled_waits: 3,
    }
}

/// Two outcomes as the engine sends them: failures first.
pub fn outcomes() -> Vec<RecipientOutcome> {
    vec![
        RecipientOutcome {
            address: "carol@contoso.example".into(),
            tenant: "contoso".into(),
            outcome: CopyOutcome::Failed {
                reason: FailureReason::AlreadyGone,
            },
            from_folder: Some(Folder::Trash),
            to_folder: None,
        },
        RecipientOutcome {
            address: "alice@contoso.example".into(),
            tenant: "contoso".into(),
            outcome: CopyOutcome::Succeeded {
                action: RetractAction::Junk,
            },
            from_folder: Some(Folder::Inbox),
            to_folder: Some(Folder::Junk),
        },
    ]
}

/// A finished Junk job of 82 copies: 3 already gone and 2 not authorized (listed first, as
/// the engine sends them), 77 moved from the Inbox to Junk.
pub fn job_82() -> JobView {
    JobView {
        id: JobId("7".into()),
        started: base_time(),
        trigger: Trigger::Manual,
        kind: JobKind::Retract,
        action: RetractAction::Junk,
        parent: None,
        restored_by: vec![],
        state: JobPhase::Finished,
        total: 82,
        succeeded: 77,
        failed_by_reason: vec![
            (FailureReason::AlreadyGone, 3),
            (FailureReason::NotAuthorized, 2),
        ],
        skipped: 0,
        restorable: 77,
        operator: "alice".into(),
        audit_head: None,
    }
}

pub fn outcomes_82() -> Vec<RecipientOutcome> {
    let failed = |i: usize, reason| RecipientOutcome {
        address: format!("user{i:02}@contoso.example"),
        tenant: "contoso".into(),
        outcome: CopyOutcome::Failed { reason },
        from_folder: Some(Folder::Inbox),
        to_folder: None,
    };
    let mut out = vec![
        failed(4, FailureReason::AlreadyGone),
        failed(19, FailureReason::AlreadyGone),
        failed(50, FailureReason::AlreadyGone),
        failed(8, FailureReason::NotAuthorized),
        failed(61, FailureReason::NotAuthorized),
    ];
    let failed_ids = [4, 19, 50, 8, 61];
    out.extend(
        (0..82)
            .filter(|i| !failed_ids.contains(i))
            .map(|i| RecipientOutcome {
                address: format!("user{i:02}@contoso.example"),
                tenant: "contoso".into(),
                outcome: CopyOutcome::Succeeded {
                    action: RetractAction::Junk,
                },
                from_folder: Some(Folder::Inbox),
                to_folder: Some(Folder::Junk),
            }),
    );
    out
}

/// The restore (job 8) of job 7: every copy back from Junk to the Inbox.
pub fn restore_job_of_82() -> JobView {
    JobView {
        id: JobId("8".into()),
        started: base_time() + Duration::minutes(5),
        trigger: Trigger::Manual,
        kind: JobKind::Restore,
        action: RetractAction::Junk,
        parent: Some(JobId("7".into())),
        restored_by: vec![],
        state: JobPhase::Finished,
        total: 77,
        succeeded: 77,
        failed_by_reason: vec![],
        skipped: 0,
        restorable: 0,
        operator: "alice".into(),
        audit_head: None,
    }
}

pub fn restore_outcomes() -> Vec<RecipientOutcome> {
    (0..77)
        .map(|i| RecipientOutcome {
            address: format!("user{i:02}@contoso.example"),
            tenant: "contoso".into(),
            outcome: CopyOutcome::Restored,
            from_folder: Some(Folder::Junk),
            to_folder: Some(Folder::Inbox),
        })
        .collect()
}

pub fn metrics(window: MetricsWindow, total: u64) -> MetricsSnapshot {
    let failed_a = total / 40;
    let failed_b = total / 100;
    let succeeded = total - failed_a - failed_b;
    MetricsSnapshot {
        window,
        total,
        succeeded,
        failed_by_reason: if total == 0 {
            vec![]
        } else {
            vec![
                (FailureReason::AlreadyGone, failed_a),
                (FailureReason::NotAuthorized, failed_b),
            ]
        },
        unread: succeeded * 4 / 5,
        read: succeeded - succeeded * 4 / 5,
        auto: total * 3 / 5,
        manual: total - total * 3 / 5,
        dwell_p50_secs: (total > 0).then_some(250),
        dwell_p95_secs: (total > 0).then_some(3780),
        series: (0..48)
            .map(|i| ((i * 7) % 13) as u64 * (total / 100))
            .collect(),
        bucket_secs: 1800,
    }
}

/// A message retracted in the window (Metrics details): `ok` + `failed` copies, `auto` of them
/// by automation.
pub fn retracted(id: usize, ok: u64, failed: u64, auto: u64) -> RetractedMessage {
    RetractedMessage {
        message_id: format!("<m{id}@example.com>"),
        subject: format!("Message {id}"),
        tenants: vec!["contoso".into()],
        succeeded: ok,
        failed,
        auto,
        manual: ok + failed - auto,
        last_retracted: base_time() - Duration::minutes(id as i64 * 7),
    }
}

pub fn audit_entries() -> Vec<AuditEntryView> {
    (0..5)
        .map(|i| AuditEntryView {
            seq: 1204 - i,
            at: base_time() - Duration::minutes(i as i64 * 13),
            os_user: "soc".into(),
            operator: ["alice", "bob"][i as usize % 2].into(),
            role: Role::Responder,
            action: ["retract", "restore", "policy_set", "retract", "search"][i as usize].into(),
            detail: format!("plan 3f2a9c0d1e5b: {} copies junk", 10 + i),
            hash_prefix: format!("a{i}c3f9e1"),
        })
        .collect()
}

pub fn tenants() -> Vec<TenantView> {
    vec![
        TenantView {
            name: "contoso".into(),
            kind: TenantKind::Microsoft365,
            domains: vec![
                DomainView {
                    domain: "contoso.example".into(),
                    status: GrantStatus::Granted,
                },
                DomainView {
                    domain: "fabrikam.example".into(),
                    status: GrantStatus::Missing {
                        permission: "Mail.ReadWrite".into(),
                    },
                },
            ],
            error: None,
        },
        TenantView {
            name: "northwind".into(),
            kind: TenantKind::GoogleWorkspace,
            domains: vec![DomainView {
                domain: "northwind.example".into(),
                status: GrantStatus::NotInTenant,
            }],
            error: None,
        },
    ]
}

pub fn policy(version: u64) -> PolicyMatrix {
    let mut actions = BTreeMap::new();
    actions.insert(Disposition::Malicious, RetractAction::SoftDelete);
    actions.insert(Disposition::Suspicious, RetractAction::Junk);
    actions.insert(Disposition::Spoof, RetractAction::Junk);
    PolicyMatrix {
        version,
        actions,
        post_delivery: ResponseSwitch {
            enabled: true,
            interval_secs: 900,
            lookback_secs: 7 * 86_400,
        },
        phish_submission: ResponseSwitch {
            enabled: false,
            interval_secs: 300,
            lookback_secs: 7 * 86_400,
        },
    }
}

pub fn query_error() -> EngineEvent {
    EngineEvent::SearchFailed {
        generation: 0,
        error: QueryErrorView {
            column: 6,
            message: "expected a value after \"from:\"".into(),
        },
    }
}

/// Latest search generation of the app.
/// An app whose first search answered with `n` messages.
pub fn with_results(n: usize) -> App {
    let mut app = app();
    app.startup();
    let generation = search_generation(&app);
    app.on_engine(EngineEvent::SearchCompleted {
        generation,
        rows: search_rows(n),
        total: n as u64,
    });
    app
}

/// An app on the recipients of the first of ten messages, loaded.
pub fn with_recipients() -> App {
    let mut app = with_results(10);
    keys(&mut app, &["enter"]);
    let generation = app.recipients.generation;
    app.on_engine(EngineEvent::RecipientsLoaded {
        generation,
        rows: recipients(),
    });
    app
}

pub fn search_generation(app: &App) -> u64 {
    app.search.generation
}

/// Renders one frame headless.
pub fn render_buffer(app: &App, theme: &Theme, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| ui::render(f, app, theme)).unwrap();
    terminal.backend().buffer().clone()
}

/// The frame as plain text, one line per row, trailing spaces trimmed.
pub fn render_text(app: &App, theme: &Theme, width: u16, height: u16) -> String {
    buffer_text(&render_buffer(app, theme, width, height))
}

pub fn buffer_text(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in 0..area.height {
        let mut line = String::new();
        for x in 0..area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Finds the first cell position where `needle` starts on screen.
pub fn find(buffer: &Buffer, needle: &str) -> Option<(u16, u16)> {
    let area = buffer.area;
    for y in 0..area.height {
        let line: String = (0..area.width)
            .map(|x| buffer[(x, y)].symbol().to_string())
            .collect();
        if let Some(pos) = line.find(needle) {
            // ASCII screens: byte offset = column.
            return Some((pos as u16, y));
        }
    }
    None
}

/// On the Jobs pane: `enter` on the next job down, job-41's outcomes loaded, back to the list
/// (the outcomes stay on screen, without a cursor).
pub fn open_job_41_outcomes(app: &mut App) {
    keys(app, &["j", "enter"]);
    app.on_engine(EngineEvent::JobOutcomesLoaded {
        job: JobId("job-41".into()),
        outcomes: outcomes(),
    });
    keys(app, &["esc"]);
}
