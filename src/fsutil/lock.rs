//! A lock on a run folder, so that two processes never write the same run (every key twice,
//! traces written by both).
//!
//! The lock is the file `DIR/.rhlens.lock`, holding the writer's pid, with an advisory `flock` on
//! it for as long as the [`RunLock`] lives. The kernel drops the `flock` when its process dies,
//! however it dies (even `kill -9`), so a lock file left by a dead process is simply taken over.
//! Where a file system refuses `flock` (some network mounts), the pid inside decides instead: a
//! lock file whose process is no longer running on this machine is taken over.
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::FileError;

/// Name of the lock file inside a locked folder.
pub const LOCK_FILE: &str = ".rhlens.lock";

/// Why a folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{} is being written by another rhlens process ({}); wait for it to finish, stop it, or choose another output folder",
        dir.display(),
        holder(*pid)
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error(transparent)]
    Io(#[from] FileError),
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid not yet recorded".to_string(),
    }
}

/// A held lock on a folder; released (and its file removed) when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    /// the folder, when locking created it: removed again if the run left it empty (a run
    /// refused after locking leaves nothing behind)
    created: Option<PathBuf>,
    // closing the file releases the flock
    _file: File,
}

impl RunLock {
    /// Locks `dir` (created if missing) for this process, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock, LockError> {
        let created = (!dir.exists()).then(|| dir.to_path_buf());
        std::fs::create_dir_all(dir).map_err(|e| FileError::new(dir, e))?;
        let path = dir.join(LOCK_FILE);
        // A holder that finishes removes the file after we opened it; the lock we then get is on
        // a file no one else will look at, so open the new one and try again.
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| FileError::new(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(LockError::Held {
                        dir: dir.to_path_buf(),
                        pid: read_pid(&path),
                    })
                }
                Err(TryLockError::Error(_)) => {
                    if let Some(pid) = read_pid(&path).filter(|&p| is_running(p)) {
                        return Err(LockError::Held {
                            dir: dir.to_path_buf(),
                            pid: Some(pid),
                        });
                    }
                }
            }
            if !still_at(&file, &path) {
                continue;
            }
            record_pid(&file).map_err(|e| FileError::new(&path, e))?;
            return Ok(RunLock {
                path,
                created,
                _file: file,
            });
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // removed while still locked, so no one can lock this file after us
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = &self.created {
            // fails, as it should, unless the folder is empty
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The pid recorded in `dir`'s lock file when a live process holds it.
pub fn holder_of(dir: &Path) -> Option<u32> {
    let path = dir.join(LOCK_FILE);
    let file = File::open(&path).ok()?;
    let held = match file.try_lock_shared() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => read_pid(&path).is_some_and(is_running),
    };
    if held {
        read_pid(&path)
    } else {
        None
    }
}

fn record_pid(mut file: &File) -> std::io::Result<()> {
    file.set_len(0)?;
    write!(file, "{}\n", std::process::id())?;
    file.sync_data()
}

fn read_pid(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|&p| p != 0)
}

/// Whether process `pid` runs on this machine (another pid than ours).
fn is_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    let proc = Path::new("/proc");
    // without /proc, play safe: a recorded pid counts as running
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

/// Whether `file` is still the file at `path` (not removed or replaced since it was opened).
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn still_at(_file: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_then_free_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap().trim(),
            pid.to_string()
        );
        // flock locks belong to the open file, so a second open in this process conflicts too
        let err = RunLock::acquire(dir.path()).unwrap_err();
        assert!(
            matches!(err, LockError::Held { pid: Some(p), .. } if p == pid),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("pid {pid}")), "{err}");
        assert_eq!(holder_of(dir.path()), Some(pid));
        drop(first);
        assert!(!dir.path().join(LOCK_FILE).exists());
        assert_eq!(holder_of(dir.path()), None);
        RunLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "4194304\n").unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(lock.path()).unwrap().trim(),
            std::process::id().to_string()
        );
    }
}
