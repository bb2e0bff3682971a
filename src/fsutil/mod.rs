//! Files that are never left half-written, and locks on run folders.
//!
//! Every output goes through [`replace_with`] (or [`write_atomic`] for bytes in memory): it is
//! written under a temporary name next to the target, synced, then renamed over it, and the
//! temporary file is removed when anything fails (a full disk, an encoder error). A reader sees
//! the old file or the new one, never a truncated one. Logs that grow line by line (results.jsonl)
//! use [`append_whole`], which cuts a failed append back to the last whole line.
pub mod lock;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use lock::{LockError, RunLock, LOCK_FILE};

/// An I/O failure on a named file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    pub fn new(path: &Path, source: std::io::Error) -> FileError {
        FileError {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The temporary name `path` is written under before it is renamed into place: hidden, next to
/// the target (so the rename stays on one file system), per process.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// Writes `path` atomically: `write` creates and fills the temporary file it is given, which is
/// then synced and renamed over `path`. On any failure the temporary file is removed and `path`
/// is left as it was. Errors name `path`.
pub fn replace_with(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), FileError> {
    let tmp = temp_path(path);
    let written = write(&tmp)
        .and_then(|()| File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        FileError::new(path, source)
    })
}

/// Writes `bytes` to `path` atomically (see [`replace_with`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    replace_with(path, |tmp| File::create(tmp)?.write_all(bytes))
}

/// Appends `bytes` (whole lines) to `file`, opened for appending, and syncs it. When the write or
/// the sync fails (a full disk), the file is cut back to its length before the call, so it still
/// ends with a whole line.
pub fn append_whole(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    let before = file.metadata()?.len();
    let appended = file.write_all(bytes).and_then(|()| file.sync_data());
    if appended.is_err() {
        let _ = file.set_len(before);
    }
    appended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        write_atomic(&path, b"old").unwrap();
        let failed = replace_with(&path, |tmp| {
            File::create(tmp)?.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        let err = failed.unwrap_err();
        assert_eq!(err.path, path);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(!temp_path(&path).exists());
    }
}
