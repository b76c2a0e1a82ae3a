//! The audit log as the engine writes it: the chain arithmetic lives in the store
//! ([`crate::store::chain`], re-exported here); the engine adds who is acting.

pub use crate::store::chain::{
    AuditBreak, AuditEntry, AuditRecord, GENESIS, chain, entry_hash, verify,
};

/// The OS account running this process: the name of its real uid (`getpwuid`, so LDAP and
/// other NSS accounts resolve too), never `$USER`, which anyone can set. `uid:N` when the uid
/// has no account name.
pub fn os_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) if !user.name.is_empty() => user.name,
        _ => format!("uid:{uid}"),
    }
}

/// The request an entry records (`plan_applied`: depth, excluded and included-only
/// recipients, tenants), as one line for both front ends' audit lists: `depth=1
/// excluded=a@x,b@x`. Empty when the entry records no request.
pub fn request_summary(record: &AuditRecord) -> String {
    let detail = &record.detail;
    let mut parts = Vec::new();
    if let Some(depth) = detail.get("depth").and_then(|d| d.as_u64()) {
        parts.push(format!("depth={depth}"));
    }
    for (key, label) in [
        ("exclude", "excluded"),
        ("only", "only"),
        ("tenants", "tenants"),
    ] {
        let list: Vec<&str> = detail
            .get(key)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        if !list.is_empty() {
            parts.push(format!("{label}={}", list.join(",")));
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_user_comes_from_the_uid_not_the_environment() {
        // Whatever $USER says, the uid's account name (as /etc/passwd has it) is recorded.
        let name = os_user();
        assert!(!name.is_empty());
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let uid = nix::unistd::getuid().as_raw().to_string();
        if let Some(line) = passwd
            .lines()
            .find(|l| l.split(':').nth(2) == Some(uid.as_str()))
        {
            assert_eq!(Some(name.as_str()), line.split(':').next(), "{line}");
        }
    }
}
