//! The audit log as the engine writes it: the chain arithmetic lives in the store
//! ([`crate::store::chain`], re-exported here); the engine adds who is acting.

pub use crate::store::chain::{
    AuditBreak, AuditEntry, AuditRecord, GENESIS, chain, entry_hash, verify,
};

/// The OS user running this process.
pub fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(user_from_uid)
        .unwrap_or_else(|| "unknown".into())
}

/// The account name of this process's real uid, from `/proc/self/status` and `/etc/passwd`
/// (cron, systemd and `su -c` often run without `$USER`).
fn user_from_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == uid)
        .map(|f| f[0].to_string())
        .or(Some(format!("uid:{uid}")))
}
