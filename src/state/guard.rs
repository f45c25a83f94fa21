//! A copy of a state directory's files, taken before the storage engine opens them, so that a
//! refused open leaves them exactly as they were.
//!
//! sled writes while it opens a database (it recovers the log's tail, writes a snapshot, and its
//! background flusher writes), also when the database turns out to be damaged and the open is
//! refused. A damaged state directory must reach the operator as it was, for inspection or
//! recovery, so every open goes through a [`Guard`]: the files are copied aside (on Linux
//! `copy_file_range`, a reflink where the file system has them), the open and the load run, and
//! then the copy is either dropped (the state was accepted) or moved back over the originals (it
//! was refused). The copy costs one read and write of the state at start-up (see
//! `docs/benchmarks.md`) and, for that moment, the state's size again on disk.
//!
//! May import: what `state/mod.rs` allows its layer; this module uses nothing of the crate.

use std::path::{Path, PathBuf};

/// The folder, inside the state directory, that holds the copy while the state is opened. One
/// left by a process killed during its start-up is replaced by the next start, unless it was
/// killed while putting the files back ([`RESTORING`]).
pub const GUARD_DIR: &str = ".open-guard";

/// A file beside the state that a start holds locked while it copies, opens and maybe restores:
/// two starts never share [`GUARD_DIR`].
pub const GUARD_LOCK: &str = ".open-guard.lock";

/// Written into [`GUARD_DIR`] before the copies are moved back: found by a later start, it means
/// the move was interrupted and the copy holds the only untouched files.
const RESTORING: &str = "RESTORING";

/// Whether `name` (an entry of a state directory) is one of the state's files: sled's (`conf`,
/// `db`, `blobs/`, `snap.*`) or the commit marker (`marker`).
pub fn is_state_file(name: &str, marker: &str) -> bool {
    matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap.") || name.starts_with(marker)
}

/// Why a state directory could not be guarded.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// Another process holds the state (sled's lock on `db`, or another start's guard lock).
    #[error("locked")]
    Locked,
    /// An earlier start was interrupted while putting the files back.
    #[error("an earlier refused start was interrupted while putting its files back: the files as they were are in {0}; move them back into the state directory")]
    Interrupted(String),
    /// Copying or restoring failed.
    #[error("{action} {path} (to keep the state's files as they were if the open is refused)")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> GuardError + 'a {
    move |source| GuardError::Io { action, path: path.display().to_string(), source }
}

/// The copy of a state directory's files (see the module documentation). Dropped without
/// [`Guard::restore`], it deletes the copy: the files in the directory are the state.
#[derive(Debug)]
pub struct Guard {
    dir: PathBuf,
    /// The copy's folder, if the directory held any state file.
    copy: Option<PathBuf>,
    /// The state files that were there (names).
    present: Vec<String>,
    marker: &'static str,
    /// [`GUARD_LOCK`], held until the guard is dropped.
    lock: Option<std::fs::File>,
}

impl Guard {
    /// Copies the state files of `dir` (those [`is_state_file`] with `marker` names) aside. A
    /// directory that does not exist or holds none gets an empty guard.
    ///
    /// # Errors
    /// [`GuardError::Locked`] if another process holds the state; a file cannot be copied.
    pub fn take(dir: &Path, marker: &'static str) -> Result<Guard, GuardError> {
        let copy = dir.join(GUARD_DIR);
        let mut guard = Guard { dir: dir.to_path_buf(), copy: None, present: Vec::new(), marker, lock: None };
        if !dir.is_dir() {
            return Ok(guard);
        }
        // One start at a time lists, copies, opens and restores.
        let lock_path = dir.join(GUARD_LOCK);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("cannot create", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => guard.lock = Some(lock),
            Err(std::fs::TryLockError::WouldBlock) => return Err(GuardError::Locked),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err("cannot lock", &lock_path)(e)),
        }
        for e in std::fs::read_dir(dir).map_err(io_err("cannot list", dir))? {
            let e = e.map_err(io_err("cannot list", dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if is_state_file(&name, marker) {
                guard.present.push(name);
            }
        }
        guard.present.sort();
        if copy.join(RESTORING).exists() {
            return Err(GuardError::Interrupted(copy.display().to_string()));
        }
        // A running processor holds an exclusive lock on `db` (sled's): its files are not ours to
        // copy, nor, above all, to put back.
        if db_locked(dir)? {
            return Err(GuardError::Locked);
        }
        if copy.exists() {
            std::fs::remove_dir_all(&copy).map_err(io_err("cannot remove", &copy))?;
        }
        if guard.present.is_empty() {
            return Ok(guard);
        }
        std::fs::create_dir(&copy).map_err(io_err("cannot create", &copy))?;
        // Set first: a copy that fails half-way is deleted when the guard is dropped.
        guard.copy = Some(copy.clone());
        for name in &guard.present {
            copy_tree(&dir.join(name), &copy.join(name))?;
        }
        sync_dir(&copy)?;
        Ok(guard)
    }

    /// Puts the files back as they were when the guard was taken: the copies replace the
    /// originals (by rename, so a storage engine still holding a file writes to the old one), and
    /// state files that were not there are deleted.
    ///
    /// # Errors
    /// A file could not be moved back or removed (the copy is then left in [`GUARD_DIR`]).
    pub fn restore(mut self) -> Result<(), GuardError> {
        // Never under another process: whatever is there now is its.
        // (Dropping the guard then deletes the copy, which is stale.)
        if self.lock.is_none() || db_locked(&self.dir)? {
            return Err(GuardError::Locked);
        }
        if let Some(copy) = &self.copy {
            std::fs::write(copy.join(RESTORING), b"").map_err(io_err("cannot write", copy))?;
            sync_dir(copy)?;
        }
        let entries = std::fs::read_dir(&self.dir).map_err(io_err("cannot list", &self.dir))?;
        for e in entries {
            let e = e.map_err(io_err("cannot list", &self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if is_state_file(&name, self.marker) && !self.present.contains(&name) {
                remove(&e.path())?;
            }
        }
        if let Some(copy) = self.copy.clone() {
            for name in &self.present {
                let (from, to) = (copy.join(name), self.dir.join(name));
                if to.is_dir() {
                    remove(&to)?;
                }
                std::fs::rename(&from, &to).map_err(io_err("cannot restore", &to))?;
            }
            sync_dir(&self.dir)?;
            self.copy = None;
            std::fs::remove_dir_all(&copy).map_err(io_err("cannot remove", &copy))?;
        }
        Ok(())
    }
}

/// Whether another process holds sled's lock on `dir`'s `db`.
fn db_locked(dir: &Path) -> Result<bool, GuardError> {
    let db = dir.join("db");
    let Ok(f) = std::fs::File::open(&db) else { return Ok(false) };
    match f.try_lock() {
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(io_err("cannot lock", &db)(e)),
    }
}

impl Drop for Guard {
    /// Deletes the copy, unless putting it back failed half-way (then it holds the only
    /// untouched files, and the next start says so).
    fn drop(&mut self) {
        if let Some(copy) = self.copy.take() {
            if !copy.join(RESTORING).exists() {
                let _ = std::fs::remove_dir_all(copy);
            }
        }
    }
}

fn remove(path: &Path) -> Result<(), GuardError> {
    let r = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    r.map_err(io_err("cannot remove", path))
}

/// Copies a file, or a folder of files (sled's `blobs/`), preserving contents exactly.
fn copy_tree(from: &Path, to: &Path) -> Result<(), GuardError> {
    if from.is_dir() {
        std::fs::create_dir(to).map_err(io_err("cannot create", to))?;
        for e in std::fs::read_dir(from).map_err(io_err("cannot list", from))? {
            let e = e.map_err(io_err("cannot list", from))?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map_err(io_err("cannot copy", from))?;
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), GuardError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("cannot sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file() && e.file_name() != GUARD_LOCK)
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn restore_puts_back_every_byte_and_removes_new_state_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("db"), b"database bytes").unwrap();
        std::fs::write(d.path().join("conf"), b"conf").unwrap();
        std::fs::write(d.path().join("other.txt"), b"not ours").unwrap();
        let before = contents(d.path());
        let g = Guard::take(d.path(), "streamflix.committed").unwrap();
        std::fs::write(d.path().join("db"), b"rewritten by the engine").unwrap();
        std::fs::remove_file(d.path().join("conf")).unwrap();
        std::fs::write(d.path().join("snap.0001"), b"new snapshot").unwrap();
        g.restore().unwrap();
        assert_eq!(contents(d.path()), before);
        assert!(!d.path().join(GUARD_DIR).exists());
    }

    #[test]
    fn dropping_the_guard_keeps_the_new_files_and_deletes_the_copy() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("db"), b"old").unwrap();
        let g = Guard::take(d.path(), "streamflix.committed").unwrap();
        assert!(d.path().join(GUARD_DIR).join("db").exists());
        std::fs::write(d.path().join("db"), b"new").unwrap();
        drop(g);
        assert_eq!(std::fs::read(d.path().join("db")).unwrap(), b"new");
        assert!(!d.path().join(GUARD_DIR).exists());
    }

    #[test]
    fn an_interrupted_restore_is_reported_not_overwritten() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("db"), b"state").unwrap();
        std::fs::create_dir(d.path().join(GUARD_DIR)).unwrap();
        std::fs::write(d.path().join(GUARD_DIR).join(RESTORING), b"").unwrap();
        let e = Guard::take(d.path(), "m").unwrap_err();
        assert!(matches!(e, GuardError::Interrupted(_)), "{e}");
        assert!(d.path().join(GUARD_DIR).join(RESTORING).exists());
    }

    #[test]
    fn two_starts_never_share_the_copy() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("db"), b"state").unwrap();
        let first = Guard::take(d.path(), "m").unwrap();
        assert!(matches!(Guard::take(d.path(), "m"), Err(GuardError::Locked)));
        drop(first);
        assert!(Guard::take(d.path(), "m").is_ok());
    }

    #[test]
    fn a_locked_state_is_not_copied() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("db"), b"live").unwrap();
        let held = std::fs::File::open(d.path().join("db")).unwrap();
        held.lock().unwrap();
        assert!(matches!(Guard::take(d.path(), "m"), Err(GuardError::Locked)));
        assert!(!d.path().join(GUARD_DIR).exists());
    }
}
