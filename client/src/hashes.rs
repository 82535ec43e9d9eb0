//! A client's memory of the binaries it hashed: submitting the same build
//! again costs a `stat`, not a pass over a binary of a hundred megabytes
//! or more. An entry is trusted only while the file's device, inode, size,
//! modification and change times are all as they were when it was hashed
//! (the rule build tools use); anything else hashes the file again. A file
//! changed in the last seconds is not remembered: its times could stay the
//! same through a second change within the file system's clock tick. The
//! manager checks every byte it is sent against the hash either way.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ember_actors::binaries::{BinaryRef, hash_file};

/// How long a file must have stood unchanged before its hash is kept.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

/// Where the entries are kept: `$XDG_CACHE_HOME/ember/binary-hashes`, or
/// `~/.cache/ember/binary-hashes`.
fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("ember").join("binary-hashes"))
}

/// What identifies one version of a file, as text.
fn stamp(meta: &std::fs::Metadata) -> String {
    format!(
        "{} {} {} {}.{} {}.{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    )
}

/// The content address of the file at `path`: remembered, or hashed now
/// (and remembered, when the cache can be written).
pub fn hash_file_cached(path: &Path) -> std::io::Result<BinaryRef> {
    let meta = std::fs::metadata(path)?;
    let stamp = stamp(&meta);
    let entry = cache_dir().map(|dir| dir.join(format!("{}-{}", meta.dev(), meta.ino())));
    if let Some(entry) = &entry
        && let Ok(kept) = std::fs::read_to_string(entry)
        && let Some((kept_stamp, sha256)) = kept.trim_end().rsplit_once(' ')
        && kept_stamp == stamp
        && let Ok(binary) = BinaryRef::new(sha256, meta.size())
    {
        return Ok(binary);
    }
    let binary = hash_file(path)?;
    // The file must not have changed while it was read, nor lately.
    let settled = meta
        .modified()
        .ok()
        .and_then(|at| at.elapsed().ok())
        .is_some_and(|age| age >= SETTLED);
    if settled
        && std::fs::metadata(path).is_ok_and(|after| self::stamp(&after) == stamp)
        && let Some(entry) = &entry
    {
        remember(entry, &format!("{stamp} {}\n", binary.sha256()));
    }
    Ok(binary)
}

/// Writes an entry whole or not at all; a cache that cannot be written is
/// only slower.
fn remember(entry: &Path, line: &str) {
    let Some(dir) = entry.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let temp = entry.with_extension(format!("tmp-{}", std::process::id()));
    if std::fs::write(&temp, line).is_ok() && std::fs::rename(&temp, entry).is_err() {
        let _ = std::fs::remove_file(&temp);
    }
}
