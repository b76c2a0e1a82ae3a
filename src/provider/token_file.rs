//! Access tokens kept across runs (`[auth] token_cache`, on by default): a file of the data dir,
//! mode 0600, so a second run within a token's lifetime signs and fetches nothing.
//!
//! What is kept: app-only access tokens (Microsoft client credentials, Google per-user tokens of
//! the service account), each keyed by tenant, client id, subject and scopes, until shortly
//! before it expires. Never kept: refresh tokens and delegated (device code) tokens, client
//! secrets, keys. An entry is dropped when the provider answers 401 to its token.
//!
//! Several clawback processes may share a data dir: every write takes an exclusive lock on
//! `tokens.json.lock`, merges into what is on disk now, and replaces the file by rename, so a
//! reader never sees half a file and no process undoes another's entries. A file that cannot
//! be read or parsed is ignored with a warning (it is only a cache) and rewritten.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The file's name inside the data dir.
pub const TOKEN_FILE: &str = "tokens.json";
/// Entries are written at most this often while tokens keep coming (a Gmail run fetches one per
/// user); what is left is written when the client is dropped.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// An entry closer than this to its expiry is not used from the file.
const MARGIN_SECS: u64 = 60;

/// One kept token.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    access_token: String,
    /// Unix seconds after which the token is not used (its refresh time, before expiry).
    use_until: u64,
    #[serde(default)]
    granted: Vec<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct FileBody {
    version: u32,
    #[serde(default)]
    tokens: BTreeMap<String, Entry>,
}

#[derive(Default)]
struct State {
    /// What was read from the file (once) plus what this process added.
    entries: BTreeMap<String, Entry>,
    loaded: bool,
    /// Written by this process, not yet on disk: `Some` = put, `None` = drop.
    pending: BTreeMap<String, Option<Entry>>,
    last_flush: Option<Instant>,
}

/// The token file of one data dir, shared by a process's clients.
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<State>,
}

/// A token found in the file: the token, what was granted, and how long it may still be used.
pub struct KeptToken {
    pub token: Secret,
    pub granted: Vec<String>,
    pub valid_for: Duration,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The key of one token: tenant, client id, subject (impersonated user, or empty) and scopes.
pub fn key(tenant: &str, client: &str, subject: &str, scopes: &str) -> String {
    format!(
        "{tenant}|{client}|{}|{scopes}",
        subject.to_ascii_lowercase()
    )
}

impl TokenFile {
    /// The token file of a data dir (nothing is read or written yet).
    pub fn in_dir(data_dir: &Path) -> TokenFile {
        TokenFile {
            path: data_dir.join(TOKEN_FILE),
            state: Mutex::new(State::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_file(&self) -> BTreeMap<String, Entry> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "token cache unreadable: ignored");
                return BTreeMap::new();
            }
        };
        match serde_json::from_slice::<FileBody>(&text) {
            Ok(body) if body.version == 1 => body.tokens,
            Ok(body) => {
                tracing::warn!(path = %self.path.display(), version = body.version, "token cache of an unknown version: ignored");
                BTreeMap::new()
            }
            Err(e) => {
                // serde_json's message names a line and column, never the content.
                tracing::warn!(path = %self.path.display(), error = %e, "token cache corrupt: ignored");
                BTreeMap::new()
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !s.loaded {
            s.entries = self.read_file();
            s.loaded = true;
        }
        s
    }

    /// The kept token for `key`, if it may still be used.
    pub fn get(&self, key: &str) -> Option<KeptToken> {
        let s = self.state();
        let e = s.entries.get(key)?;
        let left = e.use_until.saturating_sub(now_secs());
        (left > MARGIN_SECS).then(|| KeptToken {
            token: Secret::new(e.access_token.clone()),
            granted: e.granted.clone(),
            valid_for: Duration::from_secs(left - MARGIN_SECS),
        })
    }

    /// Keeps a token usable for `valid_for`; written now or within [`FLUSH_EVERY`].
    pub fn put(&self, key: &str, token: &Secret, granted: &[String], valid_for: Duration) {
        let entry = Entry {
            access_token: token.expose().to_string(),
            use_until: now_secs() + valid_for.as_secs(),
            granted: granted.to_vec(),
        };
        let mut s = self.state();
        s.entries.insert(key.to_string(), entry.clone());
        s.pending.insert(key.to_string(), Some(entry));
        if s.last_flush.is_none_or(|t| t.elapsed() >= FLUSH_EVERY) {
            self.flush_locked(&mut s);
        }
    }

    /// Drops the entry for `key` if it holds `token` (the provider refused it), now.
    pub fn drop_token(&self, key: &str, token: &Secret) {
        let mut s = self.state();
        if s.entries
            .get(key)
            .is_some_and(|e| e.access_token == token.expose())
        {
            s.entries.remove(key);
            s.pending.insert(key.to_string(), None);
            self.flush_locked(&mut s);
        }
    }

    /// Writes what is pending.
    pub fn flush(&self) {
        let mut s = self.state();
        self.flush_locked(&mut s);
    }

    fn flush_locked(&self, s: &mut State) {
        s.last_flush = Some(Instant::now());
        if s.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut s.pending);
        if let Err(e) = self.merge_into_file(&pending) {
            tracing::warn!(path = %self.path.display(), error = %e, "token cache not written");
        }
    }

    /// Under the lock file: what is on disk now, with `pending` applied and expired entries
    /// left out, written to a private temp file and renamed over the file.
    fn merge_into_file(&self, pending: &BTreeMap<String, Option<Entry>>) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let lock_path = self.path.with_extension("json.lock");
        let lock = private_options().open(&lock_path)?;
        lock.lock()?;
        let mut tokens = self.read_file();
        for (k, v) in pending {
            match v {
                Some(e) => tokens.insert(k.clone(), e.clone()),
                None => tokens.remove(k),
            };
        }
        let now = now_secs();
        tokens.retain(|_, e| e.use_until > now);
        let body =
            serde_json::to_vec(&FileBody { version: 1, tokens }).map_err(std::io::Error::other)?;
        let tmp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        crate::secret::write_private_file(&tmp, &body)?;
        let renamed = std::fs::rename(&tmp, &self.path);
        if renamed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let _ = lock.unlock();
        renamed
    }
}

fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_tokens_survive_a_new_handle_and_drops_are_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = TokenFile::in_dir(dir.path());
        let k = key("t", "c", "U@x.com", "s");
        a.put(
            &k,
            &Secret::new("tok"),
            &["r".into()],
            Duration::from_secs(3000),
        );
        a.flush();
        let b = TokenFile::in_dir(dir.path());
        let kept = b.get(&key("t", "c", "u@x.com", "s")).expect("kept");
        assert_eq!(kept.token.expose(), "tok");
        assert_eq!(kept.granted, ["r"]);
        assert!(kept.valid_for <= Duration::from_secs(3000 - MARGIN_SECS));
        // Not for another scope, and not once it is about to expire.
        assert!(b.get(&key("t", "c", "u@x.com", "other")).is_none());
        b.put(
            &k,
            &Secret::new("short"),
            &[],
            Duration::from_secs(MARGIN_SECS),
        );
        assert!(b.get(&k).is_none());
        // A drop of a token the entry no longer holds changes nothing; of the one it holds, it
        // is on disk at once.
        b.put(&k, &Secret::new("tok2"), &[], Duration::from_secs(3000));
        b.flush();
        b.drop_token(&k, &Secret::new("tok"));
        assert!(TokenFile::in_dir(dir.path()).get(&k).is_some());
        b.drop_token(&k, &Secret::new("tok2"));
        assert!(TokenFile::in_dir(dir.path()).get(&k).is_none());
    }

    #[test]
    fn two_handles_writing_keep_each_others_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (TokenFile::in_dir(dir.path()), TokenFile::in_dir(dir.path()));
        // Both loaded (empty) before either wrote: a merge, not an overwrite, keeps both.
        assert!(a.get("x").is_none() && b.get("y").is_none());
        a.put("x", &Secret::new("1"), &[], Duration::from_secs(3000));
        b.put("y", &Secret::new("2"), &[], Duration::from_secs(3000));
        a.flush();
        b.flush();
        let c = TokenFile::in_dir(dir.path());
        assert!(c.get("x").is_some() && c.get("y").is_some());
    }

    #[test]
    fn a_corrupt_file_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE), b"{not json").unwrap();
        let a = TokenFile::in_dir(dir.path());
        assert!(a.get("x").is_none());
        a.put("x", &Secret::new("1"), &[], Duration::from_secs(3000));
        a.flush();
        assert!(TokenFile::in_dir(dir.path()).get("x").is_some());
    }
}
