//! Secrets: a value type that never prints itself, and the file check that refuses secret files
//! other users can read.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret string (client secret, private key, access token). `Debug` and `Display` redact it,
/// so it cannot reach a log line or the screen by accident; call [`Secret::expose`] where the
/// value is really needed (an HTTP form, a signature).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Only for the wire or for signing; never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "{path}: secret file is readable by others (mode {mode:04o}); run `chmod 600 {path}`",
        path = .path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: cannot read secret file: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: a secret must be a regular file, this is a {kind}; point the config at the file itself",
        path = .path.display()
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{path}: secret file is empty", path = .path.display())]
    Empty { path: PathBuf },
    #[error("environment variable {name} is not set (or not UTF-8)")]
    MissingEnv { name: String },
}

/// Reads a secret file, refusing one that group or others may read.
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretError> {
    check_private(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let trimmed = text.trim_end_matches(['\r', '\n']);
    if trimmed.trim().is_empty() {
        return Err(SecretError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret::new(trimmed))
}

/// Reads a secret from an environment variable.
pub fn read_secret_env(name: &str) -> Result<Secret, SecretError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => Err(SecretError::MissingEnv {
            name: name.to_string(),
        }),
    }
}

/// Fails when the file's mode grants any access to group or others.
pub fn check_private(path: &Path) -> Result<(), SecretError> {
    let meta = regular_file(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// The metadata of `path` if it is a regular file (after symlinks). A FIFO would hang a
/// read and a device would stream forever, so anything else is refused before it is opened.
pub fn regular_file(path: &Path) -> Result<std::fs::Metadata, SecretError> {
    let meta = std::fs::metadata(path).map_err(|source| SecretError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile {
            path: path.to_path_buf(),
            kind: file_kind(&meta),
        });
    }
    Ok(meta)
}

/// What a non-regular path is, for messages.
pub fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "FIFO (named pipe)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "device";
        }
        if t.is_socket() {
            return "socket";
        }
    }
    "special file"
}

/// Writes a file readable by its owner only (mode 0600), replacing any existing file.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_or_a_directory_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("secret.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        // Would block forever if it were opened: the check comes first.
        let err = read_secret_file(&fifo).expect_err("fifo").to_string();
        assert!(err.contains("FIFO (named pipe)"), "{err}");
        let err = read_secret_file(dir.path()).expect_err("dir").to_string();
        assert!(err.contains("regular file, this is a directory"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_file_is_refused_with_chmod_hint() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_secret_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("mode 0644") && err.contains("chmod 600"),
            "{err}"
        );
        write_private_file(&path, b"s3cret\n").expect("rewrite");
        assert_eq!(read_secret_file(&path).expect("read").expose(), "s3cret");
    }
}
