//! Files only their owner may read, for what holds secrets or a user's
//! output: the manager's journal and its backup, the logs of the drivers
//! and executors a worker runs; and the lock that keeps a directory to one
//! process, as redb's keeps a state dir to one manager.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

/// Creates `dir` and any missing parents owner-only (0700); a directory
/// that exists is left as it is.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates (or truncates) `path` for writing, owner-only (0600).
pub fn create_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    // The mode applies only to a new file.
    restrict(path)?;
    Ok(file)
}

/// Makes an existing file owner-only.
pub fn restrict(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// A directory held by this process for as long as the lock lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Locks `dir` through its lock file `name` (an OS file lock, released
/// when the process ends however it ends). `Err(Some(pid))` or
/// `Err(None)` when another process holds it: the holder's PID if it
/// wrote one.
pub fn lock_dir(dir: &Path, name: &str) -> std::io::Result<Result<DirLock, Option<u32>>> {
    let path = dir.join(name);
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let holder = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Ok(Err(holder));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id())?;
    Ok(Ok(DirLock { _file: file }))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_files_and_directories_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("app-1").join("0");
        create_dir(&nested).unwrap();
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&dir.path().join("app-1")), 0o700);
        let log = nested.join("stdout");
        std::fs::write(&log, "old").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        create_file(&log).unwrap();
        assert_eq!(mode(&log), 0o600, "an existing file is made owner-only too");
    }

    #[test]
    fn a_locked_directory_is_refused_and_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path(), "worker.lock").unwrap().unwrap();
        let refused = lock_dir(dir.path(), "worker.lock").unwrap();
        assert_eq!(refused.unwrap_err(), Some(std::process::id()));
        drop(held);
        assert!(lock_dir(dir.path(), "worker.lock").unwrap().is_ok());
    }
}
