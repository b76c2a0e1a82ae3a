//! The sync cursors on both store backends (issue 17): the same answers for every move, and
//! several real processes moving the same cursors at once without any going back or being lost.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{BTreeMap, HashMap};

mod store_support;
use store_support::backends;

#[test]
fn cursors_move_the_same_way_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let mut answers = Vec::new();
    for raw in backends(&dir) {
        let name = raw.name();
        let mut s = raw.open();
        let mut said = Vec::new();
        // Received-time cursors: forward only.
        assert_eq!(s.sync_cursor("contoso", "a@c.com").unwrap(), None, "{name}");
        said.push(s.advance_sync_cursor("contoso", "a@c.com", 100, 1).unwrap());
        said.push(s.advance_sync_cursor("contoso", "a@c.com", 90, 2).unwrap());
        said.push(s.advance_sync_cursor("contoso", "a@c.com", 100, 3).unwrap());
        said.push(s.advance_sync_cursor("contoso", "a@c.com", 101, 4).unwrap());
        said.push(s.advance_sync_cursor("contoso", "b@c.com", 5, 5).unwrap());
        said.push(s.advance_sync_cursor("fabrikam", "a@c.com", 7, 5).unwrap());
        assert_eq!(
            s.sync_cursor("contoso", "a@c.com").unwrap(),
            Some(101),
            "{name}"
        );
        let cursors: BTreeMap<_, _> = s.sync_cursors("contoso").unwrap().into_iter().collect();
        assert_eq!(
            cursors,
            BTreeMap::from([("a@c.com".to_string(), 101), ("b@c.com".to_string(), 5)]),
            "{name}"
        );
        // Change cursors: compare-and-set from the cursor a sync started with.
        said.push(
            s.advance_change_cursor("contoso", "a@c.com", "inbox", None, "d1", 1)
                .unwrap(),
        );
        said.push(
            s.advance_change_cursor("contoso", "a@c.com", "inbox", None, "d0", 1)
                .unwrap(),
        );
        said.push(
            s.advance_change_cursor("contoso", "a@c.com", "inbox", Some("d0"), "d2", 2)
                .unwrap(),
        );
        said.push(
            s.advance_change_cursor("contoso", "a@c.com", "inbox", Some("d1"), "d2", 2)
                .unwrap(),
        );
        said.push(
            s.advance_change_cursor("contoso", "a@c.com", "(folders)", None, "f1", 2)
                .unwrap(),
        );
        said.push(
            s.advance_change_cursor("contoso", "b@c.com", "history", None, "h1", 2)
                .unwrap(),
        );
        let changes = s.change_cursors("contoso").unwrap();
        assert_eq!(changes["a@c.com"]["inbox"], "d2", "{name}");
        assert_eq!(changes["a@c.com"]["(folders)"], "f1", "{name}");
        // Dropping: only the cursor it still holds, or whatever it holds.
        said.push(
            s.drop_change_cursor("contoso", "a@c.com", "inbox", Some("d1"))
                .unwrap(),
        );
        said.push(
            s.drop_change_cursor("contoso", "a@c.com", "inbox", Some("d2"))
                .unwrap(),
        );
        said.push(
            s.drop_change_cursor("contoso", "a@c.com", "inbox", None)
                .unwrap(),
        );
        said.push(
            s.drop_change_cursor("contoso", "b@c.com", "history", None)
                .unwrap(),
        );
        let changes = s.change_cursors("contoso").unwrap();
        assert_eq!(
            changes,
            HashMap::from([(
                "a@c.com".to_string(),
                HashMap::from([("(folders)".to_string(), "f1".to_string())])
            )]),
            "{name}"
        );
        assert!(s.change_cursors("fabrikam").unwrap().is_empty(), "{name}");
        answers.push(said);
    }
    assert_eq!(
        answers[0],
        vec![
            true, false, false, true, true, true, // received-time cursors
            true, false, false, true, true, true, // change cursors
            false, true, false, true, // drops
        ]
    );
    assert_eq!(answers[0], answers[1], "the same answers on both backends");
}

const CHILD_ENV: &str = "CLAWBACK_TEST_SYNC_CHILD";
const MAILBOXES: usize = 4;
const MOVES: usize = 150;

/// Child process: moves the shared cursors as a sync would (read, then move from what it read),
/// checking after each move that the cursor is not behind what it just wrote; prints each
/// change-cursor move it made as `moved FROM TO`.
#[test]
#[ignore = "run as a child process by processes_moving_the_same_cursors_at_once_lose_nothing"]
fn sync_cursor_child() {
    let Ok(tag) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut s = store_support::open_from_env();
    let me: i64 = tag.parse().unwrap();
    for n in 0..MOVES {
        let mailbox = format!("m{}@c.com", n % MAILBOXES);
        // Received times interleave between processes and go back and forth within one.
        let received = (n as i64 / 2) * 10 + me + if n % 2 == 0 { 0 } else { -7 };
        s.advance_sync_cursor("contoso", &mailbox, received, 0)
            .unwrap();
        let now = s.sync_cursor("contoso", &mailbox).unwrap().unwrap();
        assert!(
            now >= received,
            "cursor {now} is behind {received} just written"
        );
        let from = s
            .change_cursors("contoso")
            .unwrap()
            .get(&mailbox)
            .and_then(|f| f.get("inbox").cloned());
        let to = format!("p{me}-{n}");
        if s.advance_change_cursor("contoso", &mailbox, "inbox", from.as_deref(), &to, 0)
            .unwrap()
        {
            println!("moved {mailbox} {} {to}", from.as_deref().unwrap_or("-"));
        }
    }
}

#[test]
fn processes_moving_the_same_cursors_at_once_lose_nothing() {
    const PROCESSES: i64 = 3;
    let dir = tempfile::tempdir().unwrap();
    for raw in backends(&dir) {
        let name = raw.name();
        drop(raw.open());
        let children: Vec<_> = (0..PROCESSES)
            .map(|i| {
                store_support::spawn_child(&raw, "sync_cursor_child", CHILD_ENV, &i.to_string())
            })
            .collect();
        // mailbox -> from -> to, from every process's successful moves.
        let mut moves: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{name}: a child failed");
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(rest) = line.strip_prefix("moved ") {
                    let parts: Vec<&str> = rest.split(' ').collect();
                    moves
                        .entry(parts[0].to_string())
                        .or_default()
                        .entry(parts[1].to_string())
                        .or_default()
                        .push(parts[2].to_string());
                }
            }
        }
        let s = raw.open();
        // The received-time cursors hold the newest time any process wrote.
        let newest = ((MOVES as i64 - 1) / 2) * 10 + PROCESSES - 1;
        for (mailbox, received) in s.sync_cursors("contoso").unwrap() {
            let m: usize = mailbox[1..2].parse().unwrap();
            let want = (0..PROCESSES)
                .flat_map(|p| {
                    (0..MOVES)
                        .filter(move |n| n % MAILBOXES == m)
                        .map(move |n| (n as i64 / 2) * 10 + p - if n % 2 == 0 { 0 } else { 7 })
                })
                .max()
                .unwrap();
            assert_eq!(received, want, "{name}: {mailbox} holds the newest time");
            assert!(received <= newest);
        }
        // Each change cursor's moves form one chain from none to the stored cursor: no two
        // processes moved from the same cursor (a lost move), none moved from one it did not see.
        let changes = s.change_cursors("contoso").unwrap();
        assert_eq!(changes.len(), MAILBOXES, "{name}");
        for (mailbox, folders) in changes {
            let chain = &moves[&mailbox];
            let mut at = "-".to_string();
            let mut steps = 0;
            while let Some(next) = chain.get(&at) {
                assert_eq!(
                    next.len(),
                    1,
                    "{name}: {mailbox}: two moves from {at}: {next:?}"
                );
                at = next[0].clone();
                steps += 1;
            }
            assert_eq!(
                at, folders["inbox"],
                "{name}: {mailbox} ends where the chain ends"
            );
            assert_eq!(
                steps,
                chain.values().map(Vec::len).sum::<usize>(),
                "{name}: {mailbox}: every successful move is on the chain"
            );
            assert!(steps > 1, "{name}: {mailbox}: several moves");
        }
    }
}
