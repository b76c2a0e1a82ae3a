//! The audit chain (DESIGN §5): append-only entries, each carrying
//! `hash = SHA-256(prev_hash ‖ canonical entry)`. Verification walks the chain and names the
//! first entry that was edited, removed or moved. The store keeps the entries; this module is the
//! arithmetic, so it is the same for SQLite today and PostgreSQL later. It sits in the store
//! (below the engine), which chains every append; the engine re-exports it as `engine::audit`.

use crate::model::{Role, canonical_json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an entry says, before it is chained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    /// The OS account that ran clawback.
    pub os_user: String,
    /// The configured operator name.
    pub operator: String,
    pub role: Role,
    /// `retract`, `restore`, `job`, `policy`, `denied`, `automation`, …
    pub section: String,
    /// What happened, e.g. `plan_applied`, `job_finished`, `policy_set`, `hard_delete_denied`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Counts (copies, succeeded, failed, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    /// Anything else worth keeping (reason text, policy diff, decision inputs).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

/// A chained entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1-based position in the chain.
    pub seq: u64,
    #[serde(flatten)]
    pub record: AuditRecord,
    pub prev_hash: String,
    pub hash: String,
}

/// The first place the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditBreak {
    #[error("audit entry {seq}: content does not match its hash (edited)")]
    Edited { seq: u64 },
    #[error(
        "audit entry {seq}: found where entry {expected} should be (entry {expected} was removed or moved)"
    )]
    Sequence { seq: u64, expected: u64 },
    #[error(
        "audit entry {seq}: does not follow the entry before it (removed, inserted or reordered)"
    )]
    Link { seq: u64 },
    #[error(
        "audit log ends at entry {last} but the recorded head is entry {head_seq}: entries were removed from the end"
    )]
    Truncated { last: u64, head_seq: u64 },
    /// A head recorded outside the store (`audit head`, a job summary, `watch.log`, the
    /// head file) that the log no longer contains: truncated, wiped, or rewritten before it.
    #[error(
        "audit entry {seq}: {found}, but {head} was recorded outside the store: the log was truncated, wiped or rewritten"
    )]
    Anchor {
        seq: u64,
        head: AuditHead,
        found: String,
    },
}

/// The newest entry of the log as `SEQ sha256:HEX`: printed by `audit head` and after every
/// job, kept outside the store, and checked by `audit verify --head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub seq: u64,
    /// Hex SHA-256 of the entry (as stored, without the `sha256:` prefix).
    pub hash: String,
}

impl std::fmt::Display for AuditHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} sha256:{}", self.seq, self.hash)
    }
}

impl std::str::FromStr for AuditHead {
    type Err = String;

    /// `SEQ:sha256:HEX`, `SEQ sha256:HEX` or `SEQ:HEX`.
    fn from_str(s: &str) -> Result<AuditHead, String> {
        let bad = || {
            format!(
                "{s:?} is not an audit head: expected SEQ:sha256:HEX (as `clawback audit head` prints it, e.g. 42:sha256:9f86…)"
            )
        };
        let s = s.trim();
        let (seq, hash) = s.split_once([':', ' ']).ok_or_else(bad)?;
        let seq: u64 = seq.trim().parse().map_err(|_| bad())?;
        let hash = hash.trim();
        let hash = hash
            .strip_prefix("sha256:")
            .unwrap_or(hash)
            .to_ascii_lowercase();
        if seq == 0 || hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(AuditHead { seq, hash })
    }
}

/// Checks heads recorded outside the store against the entries (already verified as a chain):
/// each must still be in the log with the same hash. Because every hash covers all before it,
/// this catches removal from the end, a wipe, and a rewrite with recomputed hashes before it.
pub fn verify_heads(entries: &[AuditEntry], heads: &[AuditHead]) -> Result<(), AuditBreak> {
    for head in heads {
        let at = usize::try_from(head.seq - 1)
            .ok()
            .and_then(|i| entries.get(i))
            .filter(|e| e.seq == head.seq);
        match at {
            Some(e) if e.hash == head.hash => {}
            Some(e) => {
                return Err(AuditBreak::Anchor {
                    seq: head.seq,
                    head: head.clone(),
                    found: format!("hash is sha256:{}", e.hash),
                });
            }
            None => {
                return Err(AuditBreak::Anchor {
                    seq: head.seq,
                    head: head.clone(),
                    found: format!("missing (the log has {} entries)", entries.len()),
                });
            }
        }
    }
    Ok(())
}

/// The hash of an entry's content chained to its predecessor.
pub fn entry_hash(prev_hash: &str, seq: u64, record: &AuditRecord) -> String {
    let mut value = serde_json::to_value(record).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.insert("seq".into(), serde_json::Value::from(seq));
    }
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical_json(&value).as_bytes());
    hex::encode(hasher.finalize())
}

/// Chains a record after `prev` (or the genesis).
pub fn chain(prev: Option<&AuditEntry>, record: AuditRecord) -> AuditEntry {
    let (seq, prev_hash) = match prev {
        Some(p) => (p.seq + 1, p.hash.clone()),
        None => (1, GENESIS.to_string()),
    };
    let hash = entry_hash(&prev_hash, seq, &record);
    AuditEntry {
        seq,
        record,
        prev_hash,
        hash,
    }
}

/// Verifies entries in stored order. `head` is the separately recorded `(seq, hash)` of the
/// newest entry, which catches removal from the end (the one edit a chain alone cannot see).
pub fn verify(entries: &[AuditEntry], head: Option<(u64, &str)>) -> Result<(), AuditBreak> {
    let mut prev_hash = GENESIS.to_string();
    for (i, e) in entries.iter().enumerate() {
        let expected = i as u64 + 1;
        if entry_hash(&e.prev_hash, e.seq, &e.record) != e.hash {
            return Err(AuditBreak::Edited { seq: e.seq });
        }
        // Position before link: a removed or moved entry is then named by the number that is
        // missing at this place, not only by the entry that follows the gap.
        if e.seq != expected {
            return Err(AuditBreak::Sequence {
                seq: e.seq,
                expected,
            });
        }
        if e.prev_hash != prev_hash {
            return Err(AuditBreak::Link { seq: e.seq });
        }
        prev_hash = e.hash.clone();
    }
    if let Some((head_seq, head_hash)) = head {
        let last = entries.last().map(|e| e.seq).unwrap_or(0);
        if last < head_seq {
            return Err(AuditBreak::Truncated { last, head_seq });
        }
        if let Some(e) = entries.iter().find(|e| e.seq == head_seq)
            && e.hash != head_hash
        {
            return Err(AuditBreak::Edited { seq: head_seq });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str, n: u64) -> AuditRecord {
        AuditRecord {
            at: DateTime::from_timestamp(1_700_000_000 + n as i64, 0).expect("time"),
            os_user: "soc".into(),
            operator: "alice".into(),
            role: Role::Responder,
            section: "retract".into(),
            action: action.into(),
            plan_digest: Some(format!("sha256:{n}")),
            job_id: None,
            counts: BTreeMap::from([("copies".to_string(), n)]),
            detail: serde_json::Value::Null,
        }
    }

    fn log(n: u64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 1..=n {
            let e = chain(out.last(), record("plan_applied", i));
            out.push(e);
        }
        out
    }

    #[test]
    fn intact_chain_verifies() {
        let entries = log(5);
        let head = entries.last().map(|e| (e.seq, e.hash.as_str()));
        assert_eq!(verify(&entries, head), Ok(()));
    }

    #[test]
    fn every_single_edit_delete_or_swap_is_detected() {
        let entries = log(6);
        let head = entries
            .last()
            .map(|e| (e.seq, e.hash.clone()))
            .expect("head");
        for i in 0..entries.len() {
            let mut edited = entries.clone();
            edited[i].record.counts.insert("copies".into(), 999);
            assert_eq!(
                verify(&edited, Some((head.0, &head.1))),
                Err(AuditBreak::Edited { seq: i as u64 + 1 }),
                "edit of {i}"
            );

            let mut deleted = entries.clone();
            deleted.remove(i);
            let seq = i as u64 + 1;
            let expected = if i + 1 < entries.len() {
                AuditBreak::Sequence {
                    seq: seq + 1,
                    expected: seq,
                }
            } else {
                AuditBreak::Truncated {
                    last: seq - 1,
                    head_seq: seq,
                }
            };
            assert_eq!(
                verify(&deleted, Some((head.0, &head.1))),
                Err(expected),
                "delete of {i}"
            );

            if i + 1 < entries.len() {
                let mut swapped = entries.clone();
                swapped.swap(i, i + 1);
                assert!(
                    verify(&swapped, Some((head.0, &head.1))).is_err(),
                    "swap of {i}"
                );
            }
        }
    }

    #[test]
    fn heads_kept_outside_catch_truncation_wipe_and_rewrite() {
        let entries = log(6);
        let head = AuditHead {
            seq: 4,
            hash: entries[3].hash.clone(),
        };
        let text = head.to_string();
        assert_eq!(text, format!("4 sha256:{}", entries[3].hash));
        assert_eq!(text.parse::<AuditHead>(), Ok(head.clone()));
        assert_eq!(
            format!("4:sha256:{}", entries[3].hash).parse::<AuditHead>(),
            Ok(head.clone())
        );
        assert!("4:sha256:xyz".parse::<AuditHead>().is_err());
        assert!("0:sha256:".parse::<AuditHead>().is_err());
        assert_eq!(verify_heads(&entries, std::slice::from_ref(&head)), Ok(()));
        // Truncated to 3 entries (a consistent chain, head row fixed): caught.
        assert!(matches!(
            verify_heads(&entries[..3], std::slice::from_ref(&head)),
            Err(AuditBreak::Anchor { seq: 4, .. })
        ));
        // Wiped.
        assert!(verify_heads(&[], std::slice::from_ref(&head)).is_err());
        // Entry 2 edited and every later hash recomputed: the chain verifies, the head does not.
        let mut rewritten: Vec<AuditEntry> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let mut record = e.record.clone();
            if i == 1 {
                record.operator = "mallory".into();
            }
            let next = chain(rewritten.last(), record);
            rewritten.push(next);
        }
        assert_eq!(verify(&rewritten, None), Ok(()));
        assert!(matches!(
            verify_heads(&rewritten, std::slice::from_ref(&head)),
            Err(AuditBreak::Anchor { seq: 4, .. })
        ));
    }

    #[test]
    fn rehashed_forgery_is_caught_by_the_next_link() {
        // An attacker who edits entry 3 and recomputes its hash still breaks entry 4's link.
        let mut entries = log(5);
        entries[2].record.operator = "mallory".into();
        entries[2].hash = entry_hash(&entries[2].prev_hash, 3, &entries[2].record);
        assert_eq!(verify(&entries, None), Err(AuditBreak::Link { seq: 4 }));
    }
}
