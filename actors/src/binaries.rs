//! Application binaries: a program uploaded once, named by its SHA-256,
//! kept by the cluster manager and cached by the workers that run it. What
//! both ends share lives here: [`BinaryRef`], which names one and is checked
//! whenever it is read (its hash becomes a file name); hashing; the ELF
//! checks; [`BinaryDir`], which takes a binary in through a temporary file
//! and keeps it only once its size and hash are right; and the chunks a
//! binary travels in on a bulk stream.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, BinaryArray, RecordBatch};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::remote::hub::Batches;

/// Hex digits in a SHA-256.
const SHA256_HEX: usize = 64;
/// Bytes of a binary in one batch of its bulk stream: small enough that
/// the allocator reuses its buffers (with 1 MiB chunks, profiles showed
/// both ends zeroing fresh pages for every chunk).
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Temporary files start with this; a binary's own name never does.
const INCOMING: &str = ".incoming-";

/// An application binary, by content: its SHA-256 in lowercase hex and its
/// length. Built only through [`BinaryRef::new`] or by reading one, which
/// both refuse anything but 64 lowercase hex digits, so the hash is always
/// safe as a file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "UncheckedBinaryRef")]
pub struct BinaryRef {
    sha256: String,
    bytes: u64,
}

/// A [`BinaryRef`] as it arrives, before its hash is checked.
#[derive(Deserialize)]
struct UncheckedBinaryRef {
    sha256: String,
    bytes: u64,
}

impl TryFrom<UncheckedBinaryRef> for BinaryRef {
    type Error = BinaryError;

    fn try_from(raw: UncheckedBinaryRef) -> Result<Self, BinaryError> {
        BinaryRef::new(raw.sha256, raw.bytes)
    }
}

impl BinaryRef {
    pub fn new(sha256: impl Into<String>, bytes: u64) -> Result<Self, BinaryError> {
        let sha256 = sha256.into();
        let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        if sha256.len() != SHA256_HEX || !sha256.bytes().all(hex) {
            return Err(BinaryError::BadName(sha256.chars().take(80).collect()));
        }
        Ok(Self { sha256, bytes })
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl std::fmt::Display for BinaryRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} bytes)", self.sha256, self.bytes)
    }
}

/// What can go wrong with an application binary, on either end; it
/// travels as the answer to an upload or a fetch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum BinaryError {
    #[error(
        "'{0}' is not an application binary's name: that is a SHA-256 in 64 lowercase hex digits"
    )]
    BadName(String),
    #[error(
        "the application binary is {bytes} bytes, more than the {max} bytes the cluster manager \
         takes (ember.deploy.maxAppBinaryBytes); strip its debug info (`strip`, or \
         `strip = true` in its release profile) or raise the limit on the manager"
    )]
    TooLarge { bytes: u64, max: u64 },
    #[error(
        "application binary {sha256} arrived with {got} bytes or more instead of {expected}; nothing was kept"
    )]
    WrongSize {
        sha256: String,
        expected: u64,
        got: u64,
    },
    #[error(
        "the bytes that arrived hash to {got}, not to the {expected} they were announced as \
         (the file changed while it was sent, or was damaged on the way); nothing was kept"
    )]
    HashMismatch { expected: String, got: String },
    #[error("the cluster manager holds no application binary {0}; upload it first")]
    NotHeld(String),
    #[error("this cluster manager keeps no application binaries")]
    NoStore,
    #[error(
        "no upload '{0}' is under way at the cluster manager (it may have timed out); upload again"
    )]
    UnknownUpload(String),
    #[error("{path} is not an application binary: {why}")]
    NotAProgram { path: String, why: String },
    #[error(
        "application binary {sha256} is built for {built_for}, this worker runs {runs}; build it \
         for {runs}"
    )]
    WrongPlatform {
        sha256: String,
        built_for: String,
        runs: String,
    },
    #[error("the transfer of application binary {sha256} broke off: {why}; nothing was kept")]
    Interrupted { sha256: String, why: String },
    #[error("{0}")]
    Refused(String),
    #[error("{what}: {why}")]
    Io { what: String, why: String },
    #[error(
        "'{0}' cannot name a side file: a side file keeps its own plain name (no '/', not \
         starting with '.', not stdout or stderr); rename the file"
    )]
    BadFileName(String),
}

impl BinaryError {
    /// A stable name for the kind of refusal, for programs to act on.
    pub fn code(&self) -> &'static str {
        match self {
            BinaryError::BadName(_)
            | BinaryError::NotAProgram { .. }
            | BinaryError::BadFileName(_) => "bad_request",
            BinaryError::TooLarge { .. } => "too_large",
            BinaryError::WrongSize { .. }
            | BinaryError::HashMismatch { .. }
            | BinaryError::Interrupted { .. } => "upload_broken",
            BinaryError::NotHeld(_) => "binary_unknown",
            BinaryError::NoStore => "no_binary_store",
            BinaryError::UnknownUpload(_) => "unknown_upload",
            BinaryError::WrongPlatform { .. } => "wrong_platform",
            BinaryError::Refused(_) => "refused",
            BinaryError::Io { .. } => "io",
        }
    }

    fn io(what: impl Into<String>, e: &std::io::Error) -> Self {
        BinaryError::Io {
            what: what.into(),
            why: e.to_string(),
        }
    }
}

/// A side file (`ember submit --files`): stored by the cluster manager
/// as binaries are, by its content, and put in every container's work
/// dir under its own name. Built only through [`SideFile::new`] or by
/// reading one, which both refuse a name that could leave the work dir or
/// clash with what the worker keeps there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedSideFile")]
pub struct SideFile {
    name: String,
    content: BinaryRef,
}

/// A [`SideFile`] as it arrives, before its name is checked.
#[derive(Deserialize)]
struct UncheckedSideFile {
    name: String,
    content: BinaryRef,
}

impl TryFrom<UncheckedSideFile> for SideFile {
    type Error = BinaryError;

    fn try_from(raw: UncheckedSideFile) -> Result<Self, BinaryError> {
        SideFile::new(raw.name, raw.content)
    }
}

impl SideFile {
    pub fn new(name: impl Into<String>, content: BinaryRef) -> Result<Self, BinaryError> {
        let name = name.into();
        check_side_file_name(&name)?;
        Ok(Self { name, content })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn content(&self) -> &BinaryRef {
        &self.content
    }
}

/// Refuses a side file name that is not a plain file name of its own.
pub fn check_side_file_name(name: &str) -> Result<(), BinaryError> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !matches!(name, "stdout" | "stderr");
    if plain {
        Ok(())
    } else {
        Err(BinaryError::BadFileName(name.chars().take(80).collect()))
    }
}

/// SHA-256 of bytes fed a piece at a time.
#[derive(Clone)]
pub struct Sha256(ring::digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Self(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Sha256 {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest in lowercase hex.
    pub fn finish(self) -> String {
        self.0
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The [`BinaryRef`] of the file at `path`, read a chunk at a time.
pub fn hash_file(path: &Path) -> std::io::Result<BinaryRef> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::default();
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    BinaryRef::new(hasher.finish(), bytes).map_err(std::io::Error::other)
}

// ------------------------------------------------------------------ ELF

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
/// `e_type` of an executable and of a position-independent one.
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// The fields of an ELF header that say what it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ElfHeader {
    /// 1: 32-bit, 2: 64-bit.
    class: u8,
    little_endian: bool,
    kind: u16,
    machine: u16,
}

/// Reads the ELF header at the start of `head`, or says what `head` is.
fn elf_header(head: &[u8]) -> Result<ElfHeader, String> {
    if head.len() < 20 || head[..4] != ELF_MAGIC {
        if head.starts_with(b"#!") {
            return Err("it is a script (it starts with #!), not a compiled program".into());
        }
        let start: Vec<String> = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(format!(
            "it is not an ELF executable (it starts with bytes [{}], not 7f 45 4c 46)",
            start.join(" ")
        ));
    }
    let little_endian = match head[5] {
        1 => true,
        2 => false,
        other => return Err(format!("its ELF header names no byte order ({other})")),
    };
    let half = |at: usize| {
        let pair = [head[at], head[at + 1]];
        if little_endian {
            u16::from_le_bytes(pair)
        } else {
            u16::from_be_bytes(pair)
        }
    };
    Ok(ElfHeader {
        class: head[4],
        little_endian,
        kind: half(16),
        machine: half(18),
    })
}

/// The first bytes of `path`, enough for an ELF header.
fn head_of(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(64);
    File::open(path)?.take(64).read_to_end(&mut head)?;
    Ok(head)
}

/// The name of an ELF machine, as Rust names the architecture.
fn machine_name(machine: u16, class: u8) -> String {
    let name = match (machine, class) {
        (3, _) => "x86",
        (62, 1) => "x32",
        (62, _) => "x86_64",
        (183, _) => "aarch64",
        (40, _) => "arm",
        (243, 1) => "riscv32",
        (243, _) => "riscv64",
        (21, _) => "powerpc64",
        (20, _) => "powerpc",
        (22, _) => "s390x",
        (258, _) => "loongarch64",
        (8, _) => "mips",
        _ => return format!("ELF machine {machine}"),
    };
    name.to_string()
}

/// This process's architecture as an ELF machine, where it is known.
fn host_machine() -> Option<u16> {
    Some(match std::env::consts::ARCH {
        "x86" => 3,
        "x86_64" => 62,
        "aarch64" => 183,
        "arm" => 40,
        "riscv64" | "riscv32" => 243,
        "powerpc64" => 21,
        "powerpc" => 20,
        "s390x" => 22,
        "loongarch64" => 258,
        "mips" => 8,
        _ => return None,
    })
}

fn not_a_program(path: &Path, why: impl Into<String>) -> BinaryError {
    BinaryError::NotAProgram {
        path: path.display().to_string(),
        why: why.into(),
    }
}

/// Whether the file at `path` starts as an ELF file does: a compiled
/// program rather than a script (what `ember submit` tells apart).
pub fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == ELF_MAGIC)
}

/// Whether `path` can be an application binary at all: a regular,
/// executable ELF program (for any machine: the cluster may not be this
/// one's). Checked before anything is uploaded.
pub fn check_program(path: &Path) -> Result<(), BinaryError> {
    let meta =
        std::fs::metadata(path).map_err(|e| not_a_program(path, format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(not_a_program(path, "it is not a regular file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o111 == 0 {
            return Err(not_a_program(
                path,
                format!(
                    "it is not executable (mode {:o}); make it so with chmod +x",
                    mode & 0o7777
                ),
            ));
        }
    }
    let head = head_of(path).map_err(|e| not_a_program(path, format!("cannot read it: {e}")))?;
    let header = elf_header(&head).map_err(|why| not_a_program(path, why))?;
    if header.kind != ET_EXEC && header.kind != ET_DYN {
        return Err(not_a_program(
            path,
            format!(
                "it is an ELF file but not a program (ELF type {}: an object file or a core dump)",
                header.kind
            ),
        ));
    }
    Ok(())
}

/// Whether the binary at `path` runs on this machine: an ELF program of
/// this process's architecture, word size and byte order. Checked by a
/// worker before each launch.
pub fn check_runs_here(path: &Path, binary: &BinaryRef) -> Result<(), BinaryError> {
    check_program(path)?;
    let head = head_of(path).map_err(|e| not_a_program(path, format!("cannot read it: {e}")))?;
    let header = elf_header(&head).map_err(|why| not_a_program(path, why))?;
    let class = if cfg!(target_pointer_width = "64") {
        2
    } else {
        1
    };
    let little_endian = cfg!(target_endian = "little");
    let machine_differs = host_machine().is_some_and(|m| m != header.machine);
    if machine_differs || header.class != class || header.little_endian != little_endian {
        let order = |little: bool| if little { "" } else { " (big-endian)" };
        return Err(BinaryError::WrongPlatform {
            sha256: binary.sha256().to_string(),
            built_for: format!(
                "{}{}",
                machine_name(header.machine, header.class),
                order(header.little_endian)
            ),
            runs: format!("{}{}", std::env::consts::ARCH, order(little_endian)),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------- store

/// A directory of binaries named by their hash: the cluster manager's
/// store and a worker's cache. A binary comes in through a temporary file
/// ([`Staged`]) and takes its name only once its size and hash are right,
/// so a file under a hash's name is always that binary, whole.
#[derive(Debug, Clone)]
pub struct BinaryDir {
    dir: PathBuf,
    max_bytes: u64,
    /// The mode binaries are kept with.
    mode: u32,
}

impl BinaryDir {
    /// Opens (or creates, owner-only) `dir`, for binaries of at most
    /// `max_bytes` kept with `mode`. Temporary files left by a process that
    /// died mid-transfer are removed: they never become binaries.
    pub fn open(dir: &Path, max_bytes: u64, mode: u32) -> std::io::Result<Self> {
        crate::owner_only::create_dir(dir)?;
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(INCOMING) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            mode,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where `binary` is kept (whether or not it is there).
    pub fn path_of(&self, binary: &BinaryRef) -> PathBuf {
        self.dir.join(binary.sha256())
    }

    /// Whether `binary` is here.
    pub fn holds(&self, binary: &BinaryRef) -> bool {
        std::fs::metadata(self.path_of(binary))
            .is_ok_and(|m| m.is_file() && m.len() == binary.bytes)
    }

    /// Refuses a binary above the size limit.
    pub fn admit(&self, binary: &BinaryRef) -> Result<(), BinaryError> {
        if binary.bytes > self.max_bytes {
            return Err(BinaryError::TooLarge {
                bytes: binary.bytes,
                max: self.max_bytes,
            });
        }
        Ok(())
    }

    /// A temporary file to take `binary` in through.
    pub fn stage(&self, binary: &BinaryRef) -> Result<Staged, BinaryError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        self.admit(binary)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!(
            "{INCOMING}{}-{}-{n}",
            binary.sha256(),
            std::process::id()
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&temp)
            .map_err(|e| BinaryError::io(format!("cannot create {}", temp.display()), &e))?;
        Ok(Staged {
            binary: binary.clone(),
            target: self.path_of(binary),
            temp,
            mode: self.mode,
            file,
            hasher: Sha256::default(),
            written: 0,
            kept: false,
        })
    }
}

/// A binary on its way in: written to a temporary file and hashed as it
/// comes; [`Staged::finish`] keeps it under its hash if the size and hash
/// are right. Dropped unfinished, the temporary file is removed.
pub struct Staged {
    binary: BinaryRef,
    temp: PathBuf,
    target: PathBuf,
    mode: u32,
    file: File,
    hasher: Sha256,
    written: u64,
    kept: bool,
}

impl Staged {
    pub fn binary(&self) -> &BinaryRef {
        &self.binary
    }

    /// The temporary file (for tests).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Adds the next bytes; more than the binary has is refused at once.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), BinaryError> {
        let total = self.written + chunk.len() as u64;
        if total > self.binary.bytes {
            return Err(BinaryError::WrongSize {
                sha256: self.binary.sha256.clone(),
                expected: self.binary.bytes,
                got: total,
            });
        }
        self.file
            .write_all(chunk)
            .map_err(|e| BinaryError::io(format!("cannot write {}", self.temp.display()), &e))?;
        self.hasher.update(chunk);
        self.written = total;
        Ok(())
    }

    /// Checks the size and the hash, syncs the file to disk and gives it
    /// its name; returns where it is kept.
    pub fn finish(mut self) -> Result<PathBuf, BinaryError> {
        if self.written != self.binary.bytes {
            return Err(BinaryError::WrongSize {
                sha256: self.binary.sha256.clone(),
                expected: self.binary.bytes,
                got: self.written,
            });
        }
        let got = self.hasher.clone().finish();
        if got != self.binary.sha256 {
            return Err(BinaryError::HashMismatch {
                expected: self.binary.sha256.clone(),
                got,
            });
        }
        let failed = |what: &str, e: std::io::Error| {
            BinaryError::io(format!("cannot {what} {}", self.temp.display()), &e)
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            self.file
                .set_permissions(std::fs::Permissions::from_mode(self.mode))
                .map_err(|e| failed("set the mode of", e))?;
        }
        self.file.sync_all().map_err(|e| failed("sync", e))?;
        std::fs::rename(&self.temp, &self.target).map_err(|e| failed("rename", e))?;
        self.kept = true;
        // The new name survives a crash once the directory is synced too.
        if let Some(parent) = self.target.parent()
            && let Ok(dir) = File::open(parent)
        {
            let _ = dir.sync_all();
        }
        Ok(self.target.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

// --------------------------------------------------------------- chunks

/// The schema of a binary's bulk stream: one chunk of bytes a batch.
pub fn chunk_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "chunk",
        DataType::Binary,
        false,
    )]))
}

/// A file's bytes as batches of one chunk each, read as they are sent.
/// A read that fails ends the batches early (and is logged): the receiver
/// finds the binary short and keeps nothing.
pub struct FileChunks {
    file: File,
    path: PathBuf,
    left: u64,
    schema: SchemaRef,
}

/// The `binary.bytes()` bytes of the file at `path`, as batches.
pub fn file_chunks(path: &Path, binary: &BinaryRef) -> std::io::Result<FileChunks> {
    Ok(FileChunks {
        file: File::open(path)?,
        path: path.to_path_buf(),
        left: binary.bytes,
        schema: chunk_schema(),
    })
}

impl Iterator for FileChunks {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        if self.left == 0 {
            return None;
        }
        let want = usize::try_from(self.left).map_or(CHUNK_BYTES, |left| left.min(CHUNK_BYTES));
        let mut chunk = vec![0u8; want];
        if let Err(e) = self.file.read_exact(&mut chunk) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot read an application binary; its transfer ends short");
            self.left = 0;
            return None;
        }
        self.left -= want as u64;
        let values = BinaryArray::new(
            OffsetBuffer::from_lengths([want]),
            Buffer::from_vec(chunk),
            None,
        );
        RecordBatch::try_new(Arc::clone(&self.schema), vec![Arc::new(values)]).ok()
    }
}

/// Writes the chunks of one batch.
fn write_batch(staged: &mut Staged, batch: &RecordBatch) -> Result<(), BinaryError> {
    let interrupted = |why: &str| BinaryError::Interrupted {
        sha256: staged.binary.sha256.clone(),
        why: why.to_string(),
    };
    let chunks = (batch.num_columns() == 1)
        .then(|| batch.column(0).as_binary_opt::<i32>())
        .flatten()
        .ok_or_else(|| interrupted("the stream carries something else than a binary's bytes"))?;
    if chunks.null_count() > 0 {
        return Err(interrupted("the stream carries an empty chunk"));
    }
    for chunk in chunks.iter().flatten() {
        staged.write(chunk)?;
    }
    Ok(())
}

/// Takes a binary's bulk stream into `staged` and keeps it if it arrived
/// whole and right. Files are written on a blocking thread, never on the
/// caller's; a stream silent for `idle`, cut off, or carrying more bytes
/// than announced ends the transfer and removes the temporary file.
pub async fn receive(
    staged: Staged,
    mut batches: Batches,
    idle: Duration,
) -> Result<PathBuf, BinaryError> {
    let sha256 = staged.binary.sha256.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(4);
    let writer = tokio::task::spawn_blocking(move || {
        let mut staged = staged;
        while let Some(batch) = rx.blocking_recv() {
            write_batch(&mut staged, &batch)?;
        }
        Ok::<_, BinaryError>(staged)
    });
    let read = async {
        loop {
            match tokio::time::timeout(idle, batches.next()).await {
                Err(_) => return Err(format!("nothing arrived for {idle:?}")),
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => return Err(e.to_string()),
                // The writer stopped: its error says why.
                Ok(Some(Ok(batch))) => {
                    if tx.send(batch).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    drop(tx);
    // Whatever is left unread is refused to its sender now.
    drop(batches);
    let lost = |e: tokio::task::JoinError| BinaryError::Interrupted {
        sha256: sha256.clone(),
        why: format!("its writer failed: {e}"),
    };
    let staged = writer.await.map_err(lost)??;
    if let Err(why) = read {
        return Err(BinaryError::Interrupted { sha256, why });
    }
    tokio::task::spawn_blocking(move || staged.finish())
        .await
        .map_err(lost)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_side_file_keeps_a_plain_name_of_its_own() {
        let content = BinaryRef::new("a".repeat(64), 3).unwrap();
        assert!(SideFile::new("model.bin", content.clone()).is_ok());
        for bad in [
            "", ".", "..", ".hidden", "a/b", "../x", "stdout", "stderr", "a\\b",
        ] {
            assert!(
                matches!(
                    SideFile::new(bad, content.clone()),
                    Err(BinaryError::BadFileName(_))
                ),
                "{bad:?} was taken"
            );
        }
        // A name off the wire is checked as one made here.
        let wire = rmp_serde::to_vec(&UncheckedForTest {
            name: "../../etc/passwd".into(),
            content: content.clone(),
        })
        .unwrap();
        assert!(rmp_serde::from_slice::<SideFile>(&wire).is_err());
    }

    #[derive(Serialize)]
    struct UncheckedForTest {
        name: String,
        content: BinaryRef,
    }

    fn binary_of(bytes: &[u8]) -> BinaryRef {
        let mut hasher = Sha256::default();
        hasher.update(bytes);
        BinaryRef::new(hasher.finish(), bytes.len() as u64).unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn only_64_lowercase_hex_digits_name_a_binary() {
        let good = "a".repeat(64);
        assert!(BinaryRef::new(good.clone(), 1).is_ok());
        for bad in [
            "A".repeat(64),
            "a".repeat(63),
            "a".repeat(65),
            format!("../{}", "a".repeat(61)),
            format!("{}/", "a".repeat(63)),
            "g".repeat(64),
            String::new(),
            format!("{}\0", "a".repeat(63)),
        ] {
            let e = BinaryRef::new(bad.clone(), 1).unwrap_err();
            assert!(matches!(e, BinaryError::BadName(_)), "{bad:?}: {e}");
        }
        // Read from the wire, a bad name fails the whole message.
        let wire = rmp_serde::to_vec_named(&UncheckedWire {
            sha256: "../../etc/passwd".into(),
            bytes: 1,
        })
        .unwrap();
        let e = rmp_serde::from_slice::<BinaryRef>(&wire).unwrap_err();
        assert!(e.to_string().contains("64 lowercase hex"), "{e}");
        let wire = rmp_serde::to_vec_named(&BinaryRef::new(good, 9).unwrap()).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<BinaryRef>(&wire).unwrap().bytes(),
            9
        );
    }

    #[derive(Serialize)]
    struct UncheckedWire {
        sha256: String,
        bytes: u64,
    }

    #[test]
    fn the_hash_is_sha256() {
        // The well-known digest of "abc".
        assert_eq!(
            binary_of(b"abc").sha256(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..3 * CHUNK_BYTES + 17).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(hash_file(&path).unwrap(), binary_of(&bytes));
    }

    #[test]
    fn a_binary_is_kept_under_its_hash_only_when_whole_and_right() {
        let dir = tempfile::tempdir().unwrap();
        let store = BinaryDir::open(&dir.path().join("binaries"), 1 << 20, 0o755).unwrap();
        let bytes = b"\x7fELF and the rest of a program".to_vec();
        let binary = binary_of(&bytes);

        let mut staged = store.stage(&binary).unwrap();
        let temp = staged.temp_path().to_path_buf();
        assert!(temp.exists());
        staged.write(&bytes[..5]).unwrap();
        staged.write(&bytes[5..]).unwrap();
        let kept = staged.finish().unwrap();
        assert_eq!(kept, store.dir().join(binary.sha256()));
        assert_eq!(std::fs::read(&kept).unwrap(), bytes);
        assert!(store.holds(&binary));
        assert_eq!(names(store.dir()), vec![binary.sha256().to_string()]);
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o755);
            let mode = std::fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }

        // The same length, other bytes: refused, and nothing is left.
        let other = binary_of(b"another program of the same size!!!!");
        let claimed = BinaryRef::new(other.sha256(), bytes.len() as u64).unwrap();
        let mut staged = store.stage(&claimed).unwrap();
        staged.write(&bytes).unwrap();
        let e = staged.finish().unwrap_err();
        assert!(matches!(e, BinaryError::HashMismatch { .. }), "{e}");
        assert!(!store.holds(&claimed));
        // Too short, too long: refused.
        let mut staged = store.stage(&binary).unwrap();
        staged.write(&bytes[..3]).unwrap();
        assert!(matches!(
            staged.finish(),
            Err(BinaryError::WrongSize { got: 3, .. })
        ));
        let mut staged = store.stage(&binary).unwrap();
        staged.write(&bytes).unwrap();
        assert!(matches!(
            staged.write(b"x"),
            Err(BinaryError::WrongSize { .. })
        ));
        drop(staged);
        assert_eq!(names(store.dir()), vec![binary.sha256().to_string()]);
    }

    #[test]
    fn a_binary_over_the_limit_is_refused_before_a_byte_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = BinaryDir::open(dir.path(), 100, 0o600).unwrap();
        let binary = BinaryRef::new("0".repeat(64), 101).unwrap();
        let e = store.stage(&binary).err().unwrap();
        assert_eq!(
            e,
            BinaryError::TooLarge {
                bytes: 101,
                max: 100
            }
        );
        assert!(
            e.to_string().contains("ember.deploy.maxAppBinaryBytes"),
            "{e}"
        );
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn temporary_files_of_a_process_that_died_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = BinaryDir::open(dir.path(), 1 << 20, 0o600).unwrap();
        let binary = binary_of(b"half");
        let staged = store.stage(&binary).unwrap();
        // As if the process died: the temporary file stays behind.
        std::mem::forget(staged);
        assert_eq!(names(dir.path()).len(), 1);
        BinaryDir::open(dir.path(), 1 << 20, 0o600).unwrap();
        assert!(names(dir.path()).is_empty());
    }

    fn stream_of(
        items: Vec<Result<RecordBatch, ember_transport::BulkError>>,
        end: bool,
    ) -> Batches {
        let items = futures::stream::iter(items);
        if end {
            items.boxed()
        } else {
            items.chain(futures::stream::pending()).boxed()
        }
    }

    #[test]
    fn a_stream_cut_off_or_silent_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("program");
        let bytes: Vec<u8> = (0..2 * CHUNK_BYTES + 5).map(|i| (i % 13) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let binary = binary_of(&bytes);
        let store = BinaryDir::open(&dir.path().join("store"), 1 << 30, 0o600).unwrap();
        let chunks: Vec<RecordBatch> = file_chunks(&path, &binary).unwrap().collect();
        assert_eq!(chunks.len(), 3);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Whole: kept.
            let all = chunks.iter().cloned().map(Ok).collect();
            let staged = store.stage(&binary).unwrap();
            let kept = receive(staged, stream_of(all, true), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(std::fs::read(&kept).unwrap(), bytes);
            std::fs::remove_file(&kept).unwrap();

            // The connection breaks after one chunk.
            let broken = vec![
                Ok(chunks[0].clone()),
                Err(ember_transport::BulkError::Interrupted("connection lost".into())),
            ];
            let staged = store.stage(&binary).unwrap();
            let e = receive(staged, stream_of(broken, true), Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(
                matches!(&e, BinaryError::Interrupted { why, .. } if why.contains("connection lost")),
                "{e}"
            );
            // Ends early without an error: short.
            let short = vec![Ok(chunks[0].clone())];
            let staged = store.stage(&binary).unwrap();
            let e = receive(staged, stream_of(short, true), Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(matches!(e, BinaryError::WrongSize { .. }), "{e}");
            // The sender goes quiet.
            let quiet = vec![Ok(chunks[0].clone())];
            let staged = store.stage(&binary).unwrap();
            let e = receive(staged, stream_of(quiet, false), Duration::from_millis(50))
                .await
                .unwrap_err();
            assert!(e.to_string().contains("nothing arrived"), "{e}");
        });
        assert!(names(store.dir()).is_empty(), "{:?}", names(store.dir()));
    }

    fn elf(class: u8, data: u8, kind: u16, machine: u16) -> Vec<u8> {
        let mut head = vec![0u8; 64];
        head[..4].copy_from_slice(&ELF_MAGIC);
        head[4] = class;
        head[5] = data;
        let (k, m) = if data == 1 {
            (kind.to_le_bytes(), machine.to_le_bytes())
        } else {
            (kind.to_be_bytes(), machine.to_be_bytes())
        };
        head[16..18].copy_from_slice(&k);
        head[18..20].copy_from_slice(&m);
        head
    }

    fn program(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn only_executable_elf_programs_pass_and_each_refusal_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let own = std::env::current_exe().unwrap();
        check_program(&own).unwrap();
        check_runs_here(&own, &BinaryRef::new("0".repeat(64), 1).unwrap()).unwrap();

        let refusal = |path: &Path| check_program(path).unwrap_err().to_string();
        let script = program(dir.path(), "job.sh", b"#!/bin/sh\necho hi\n", 0o755);
        assert!(
            refusal(&script).contains("is a script"),
            "{}",
            refusal(&script)
        );
        let text = program(dir.path(), "notes.txt", b"hello", 0o755);
        assert!(
            refusal(&text).contains("not an ELF executable"),
            "{}",
            refusal(&text)
        );
        let plain = program(dir.path(), "plain", &elf(2, 1, ET_DYN, 62), 0o644);
        assert!(
            refusal(&plain).contains("not executable (mode 644)"),
            "{}",
            refusal(&plain)
        );
        let object = program(dir.path(), "main.o", &elf(2, 1, 1, 62), 0o755);
        assert!(
            refusal(&object).contains("not a program"),
            "{}",
            refusal(&object)
        );
        assert!(refusal(dir.path()).contains("not a regular file"));
        assert!(refusal(&dir.path().join("missing")).contains("cannot read it"));
    }

    #[test]
    fn a_program_for_another_machine_names_both_machines() {
        let dir = tempfile::tempdir().unwrap();
        let binary = BinaryRef::new("0".repeat(64), 64).unwrap();
        let (other, other_name) = if std::env::consts::ARCH == "aarch64" {
            (62, "x86_64")
        } else {
            (183, "aarch64")
        };
        let foreign = program(dir.path(), "foreign", &elf(2, 1, ET_EXEC, other), 0o755);
        check_program(&foreign).unwrap();
        let e = check_runs_here(&foreign, &binary).unwrap_err().to_string();
        let expected = format!(
            "built for {other_name}, this worker runs {}",
            std::env::consts::ARCH
        );
        assert!(e.contains(&expected), "{e}");
        let own = host_machine().unwrap();
        let narrow = program(dir.path(), "narrow", &elf(1, 1, ET_EXEC, own), 0o755);
        let big = program(dir.path(), "big", &elf(2, 2, ET_EXEC, own), 0o755);
        assert!(check_runs_here(&narrow, &binary).is_err());
        let e = check_runs_here(&big, &binary).unwrap_err().to_string();
        assert!(e.contains("(big-endian)"), "{e}");
    }
}
