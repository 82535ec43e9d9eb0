//! The cluster manager's memory across restarts: submissions, applications
//! and their states, kept in an embedded transactional database (redb)
//! under `--state-dir`. Records are msgpack values keyed by id; every
//! change is committed before the manager acts on it. A journal is used
//! only if it reads back in full: a damaged one stops the manager with the
//! way back (the backup kept at each good open, or `--discard-journal`),
//! never an empty start.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::messages::{DriverJob, ExecutorStatus};
use super::state::{AppId, AppRequest, DriverId, DriverRequest, WorkerId};
use crate::owner_only;
use crate::remote::NodeContact;

const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
const DRIVERS: TableDefinition<&str, &[u8]> = TableDefinition::new("drivers");
/// Unfinished submissions' scripts, apart from their records: a record is
/// written at each change of state, a script (up to 64 MiB) once.
const SCRIPTS: TableDefinition<&str, &[u8]> = TableDefinition::new("scripts");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The database file inside the state directory.
pub const JOURNAL_FILE: &str = "cluster-manager.redb";
/// The copy of the journal taken at the last open that read it in full.
pub const BACKUP_FILE: &str = "cluster-manager.redb.backup";
/// Beside the journal: the next number of each id sequence, outside what a
/// restored backup puts back.
pub const NUMBERS_FILE: &str = "cluster-manager.numbers";
/// The meta key of this cluster's id, made once, when the journal is new.
const CLUSTER_ID: &str = "cluster";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("state dir {dir}: {why}")]
    Open { dir: PathBuf, why: String },
    #[error(
        "the journal {} cannot be read in full ({why}); the cluster manager does not start \
         rather than forget the applications and submissions it holds. {}",
        path.display(),
        recovery(path, backup.as_deref())
    )]
    Damaged {
        path: PathBuf,
        why: String,
        backup: Option<PathBuf>,
    },
    #[error("the journal cannot be written ({0}); check the state dir's disk")]
    Write(String),
    #[error(
        "the journal cannot be read ({0}); restart the cluster manager: a damaged journal \
         is then reported with the way to recover"
    )]
    Read(String),
}

/// How to get going again after a damaged journal, naming the files.
fn recovery(path: &Path, backup: Option<&Path>) -> String {
    let discard = "or start it with --discard-journal to begin empty, forgetting every \
                   application and submission in it (the damaged file is moved aside)";
    match backup {
        Some(backup) => format!(
            "To recover, restore the copy kept at the last good start (`cp {} {}`), {discard}",
            backup.display(),
            path.display()
        ),
        None => format!(
            "No backup copy exists ({BACKUP_FILE} is written at each start that reads the \
             journal in full): restore one of your own, {discard}"
        ),
    }
}

/// An application as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AppRecord {
    pub name: String,
    pub request: AppRequest,
    pub state: String,
    pub reason: Option<String>,
    pub submission: Option<DriverId>,
    pub started: String,
    pub ended: Option<String>,
    pub driver: NodeContact,
    pub secret: String,
    /// Every executor it was given, running or ended: what ran where.
    #[serde(default)]
    pub executors: Vec<ExecutorStatus>,
}

/// A cluster-mode submission as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DriverRecord {
    pub job: DriverJob,
    pub request: DriverRequest,
    pub state: String,
    pub reason: Option<String>,
    pub worker: Option<WorkerId>,
    pub restarts: u32,
    pub submitted: String,
    pub app: Option<AppId>,
    /// The token its client chose (see `FromClient::Submit`), so a submit
    /// sent again is known across restarts too.
    #[serde(default)]
    pub token: Option<String>,
}

impl DriverRecord {
    /// Whether the submission is over (nothing to relaunch after a restart).
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "FINISHED" | "FAILED" | "KILLED")
    }
}

pub struct Journal {
    db: Database,
    cluster_id: String,
    /// Beside the journal, the next number of each sequence: a backup put
    /// back holds older numbers, and ids it would hand out again may still
    /// name applications the cluster runs.
    numbers: Option<PathBuf>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

/// What went wrong with a disk operation, in words that say what to fix.
fn explain(e: &dyn std::fmt::Display, io: Option<&std::io::Error>) -> String {
    let hint = match io.map(|e| (e.kind(), e.raw_os_error())) {
        Some((_, Some(28))) | Some((std::io::ErrorKind::StorageFull, _)) => {
            ": the disk is full; free space or choose another --state-dir"
        }
        Some((_, Some(30))) | Some((std::io::ErrorKind::ReadOnlyFilesystem, _)) => {
            ": the file system is read-only; choose a writable --state-dir"
        }
        Some((std::io::ErrorKind::PermissionDenied, _)) => {
            ": permission denied; choose a --state-dir this user can write"
        }
        _ => "",
    };
    format!("{e}{hint}")
}

fn io_of(e: &redb::Error) -> Option<&std::io::Error> {
    match e {
        redb::Error::Io(io) => Some(io),
        _ => None,
    }
}

/// Why an open failed: redb refused the file, or a record in it cannot be
/// read back.
enum OpenFailure {
    Redb(redb::DatabaseError),
    Unreadable(String),
}

/// Runs `f`, turning a panic into its message.
fn unless_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("reading it panicked: {why}")
    })
}

/// A short id for a new cluster, told apart from the sequence numbers
/// beside it in application and submission ids: five consonants, from a
/// hasher the standard library seeds from the OS for each process.
fn new_cluster_id() -> String {
    use std::hash::BuildHasher;
    const LETTERS: &[u8] = b"bcdfghjklmnpqrstvwxz";
    let now = std::time::SystemTime::now();
    let mut bits = std::hash::RandomState::new().hash_one((std::process::id(), now));
    let mut id = String::new();
    for _ in 0..5 {
        let i = usize::try_from(bits % LETTERS.len() as u64).unwrap_or(0);
        id.push(char::from(LETTERS[i]));
        bits /= LETTERS.len() as u64;
    }
    id
}

/// Copies the journal to its backup: written aside, synced, then renamed
/// over the old backup, so a crash leaves the old copy or the new one.
fn keep_backup(path: &Path, backup: &Path) -> std::io::Result<()> {
    let partial = backup.with_extension("backup.partial");
    let mut copy = owner_only::create_file(&partial)?;
    std::io::copy(&mut std::fs::File::open(path)?, &mut copy)?;
    copy.flush()?;
    copy.sync_all()?;
    std::fs::rename(&partial, backup)
}

fn redb_builder() -> redb::Builder {
    let mut builder = redb::Builder::new();
    // Every page's checksum is verified at open: a damaged file is refused
    // instead of read back wrong or panicking later.
    builder.set_check_integrity_on_open(true);
    builder
}

impl Journal {
    /// Opens (or creates) the journal in `dir`. An existing journal must
    /// read back in full, or the open fails with [`JournalError::Damaged`]
    /// and the way to recover. Then a commit proves the disk takes writes
    /// (a full or read-only disk is reported now, not at the first
    /// submission) and the journal is copied to its backup.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let fail = |why: String| JournalError::Open {
            dir: dir.to_path_buf(),
            why,
        };
        if dir.exists() && !dir.is_dir() {
            return Err(fail("it is a file, not a directory".into()));
        }
        owner_only::create_dir(dir)
            .map_err(|e| fail(format!("cannot create it: {}", explain(&e, Some(&e)))))?;
        let path = dir.join(JOURNAL_FILE);
        let backup = dir.join(BACKUP_FILE);
        let damaged = |why: String| JournalError::Damaged {
            path: path.clone(),
            why,
            backup: backup.is_file().then(|| backup.clone()),
        };
        let existed = match std::fs::metadata(&path) {
            // redb would take an empty file for a new journal.
            Ok(m) if m.len() == 0 => return Err(damaged("the file is empty, 0 bytes".into())),
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(fail(explain(&e, Some(&e)))),
        };
        // Owner-only: the journal holds every application's secret.
        let private = if existed {
            owner_only::restrict(&path)
        } else {
            owner_only::create_file(&path).map(drop)
        };
        private.map_err(|e| fail(explain(&e, Some(&e))))?;
        let opened = unless_panic(|| match redb_builder().create(&path) {
            Ok(db) => Self::verified(db).map_err(OpenFailure::Unreadable),
            Err(e) => Err(OpenFailure::Redb(e)),
        });
        let mut journal = match opened {
            Ok(Ok(journal)) => journal,
            Err(why) | Ok(Err(OpenFailure::Unreadable(why))) => return Err(damaged(why)),
            Ok(Err(OpenFailure::Redb(redb::DatabaseError::DatabaseAlreadyOpen))) => {
                return Err(fail(
                    "another cluster manager is using it; give each manager its own --state-dir"
                        .into(),
                ));
            }
            Ok(Err(OpenFailure::Redb(e))) => {
                let e = redb::Error::from(e);
                return Err(match io_of(&e) {
                    Some(io) if io.raw_os_error().is_some() => fail(explain(&e, Some(io))),
                    _ if existed => damaged(e.to_string()),
                    _ => fail(e.to_string()),
                });
            }
        };
        journal.ready().map_err(|e| match e {
            JournalError::Write(why) | JournalError::Read(why) => fail(why),
            other => other,
        })?;
        if let Err(e) = keep_backup(&path, &backup) {
            tracing::warn!(backup = %backup.display(), error = %e, "cannot keep a backup of the journal");
        }
        journal.numbers = Some(dir.join(NUMBERS_FILE));
        Ok(journal)
    }

    /// Moves the journal in `dir` (and its backup) aside, for
    /// `--discard-journal`: the next open starts empty. Returns where the
    /// journal went, if there was one. A journal in use is left alone.
    pub fn discard(dir: &Path) -> Result<Option<PathBuf>, JournalError> {
        let fail = |why: String| JournalError::Open {
            dir: dir.to_path_buf(),
            why,
        };
        let path = dir.join(JOURNAL_FILE);
        if !path.exists() {
            return Ok(None);
        }
        // The same lock redb takes: a running manager holds it.
        let held = std::fs::File::open(&path)
            .map_err(|e| fail(explain(&e, Some(&e))))?
            .try_lock();
        if let Err(std::fs::TryLockError::WouldBlock) = held {
            return Err(fail(
                "another cluster manager is using it; stop it before --discard-journal".into(),
            ));
        }
        let (date, time) = super::now_parts();
        let stamp = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            date[0], date[1], date[2], time[0], time[1], time[2]
        );
        let aside = dir.join(format!("{JOURNAL_FILE}.discarded-{stamp}"));
        std::fs::rename(&path, &aside).map_err(|e| fail(explain(&e, Some(&e))))?;
        let backup = dir.join(BACKUP_FILE);
        if backup.exists() {
            let kept = dir.join(format!("{BACKUP_FILE}.discarded-{stamp}"));
            std::fs::rename(&backup, &kept).map_err(|e| fail(explain(&e, Some(&e))))?;
        }
        Ok(Some(aside))
    }

    /// Opens the journal on any redb storage (tests use failing ones).
    pub fn open_with_backend(backend: impl redb::StorageBackend) -> Result<Self, JournalError> {
        let storage = PathBuf::from("(custom storage)");
        let opened = unless_panic(|| match redb_builder().create_with_backend(backend) {
            Ok(db) => Self::verified(db).map_err(OpenFailure::Unreadable),
            Err(e) => Err(OpenFailure::Redb(e)),
        });
        let mut journal = match opened {
            Ok(Ok(journal)) => journal,
            Err(why) | Ok(Err(OpenFailure::Unreadable(why))) => {
                return Err(JournalError::Damaged {
                    path: storage,
                    why,
                    backup: None,
                });
            }
            Ok(Err(OpenFailure::Redb(e))) => {
                let e = redb::Error::from(e);
                return Err(JournalError::Open {
                    dir: storage,
                    why: explain(&e, io_of(&e)),
                });
            }
        };
        journal.ready()?;
        Ok(journal)
    }

    /// The journal on `db`, once every record in it has been read back.
    fn verified(db: Database) -> Result<Self, String> {
        let journal = Self {
            db,
            cluster_id: String::new(),
            numbers: None,
        };
        let why = |e: JournalError| match e {
            JournalError::Read(why) => why,
            other => other.to_string(),
        };
        journal.apps().map_err(why)?;
        journal.drivers().map_err(why)?;
        journal.check_meta()?;
        Ok(journal)
    }

    /// Sequence numbers are 8 bytes; a shorter one would restart at 0 and
    /// hand out ids again.
    fn check_meta(&self) -> Result<(), String> {
        let rows = self.rows(META).map_err(|e| format!("meta table: {e}"))?;
        for (key, value) in rows {
            let fine = match key.as_str() {
                CLUSTER_ID => std::str::from_utf8(&value).is_ok(),
                _ => value.len() == 8,
            };
            if !fine {
                return Err(format!("meta table: the value of '{key}' is malformed"));
            }
        }
        Ok(())
    }

    /// Creates the tables, gives a new journal its cluster id, and proves a
    /// commit reaches the disk.
    fn ready(&mut self) -> Result<(), JournalError> {
        let opened = time::OffsetDateTime::now_utc().unix_timestamp();
        let fresh = new_cluster_id();
        let mut cluster_id = fresh.clone();
        self.write(|txn| {
            txn.open_table(APPS)?;
            txn.open_table(DRIVERS)?;
            txn.open_table(SCRIPTS)?;
            let mut meta = txn.open_table(META)?;
            let bytes = opened.to_le_bytes();
            meta.insert("opened", bytes.as_slice())?;
            let known = meta
                .get(CLUSTER_ID)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            match known {
                Some(id) => cluster_id = id,
                None => {
                    meta.insert(CLUSTER_ID, fresh.as_bytes())?;
                }
            }
            Ok(())
        })?;
        self.cluster_id = cluster_id;
        Ok(())
    }

    /// This cluster's id, made when its journal was new: part of every
    /// application and submission id, so two clusters never share one.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), JournalError> {
        let run = || -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            // The primary commit slot is then valid after any crash, so a
            // damaged one is reported instead of silently rolled back.
            txn.set_two_phase_commit(true);
            f(&txn)?;
            txn.commit()?;
            Ok(())
        };
        run().map_err(|e| JournalError::Write(explain(&e, io_of(&e))))
    }

    fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), JournalError> {
        let bytes =
            rmp_serde::to_vec_named(value).map_err(|e| JournalError::Write(e.to_string()))?;
        self.write(|txn| {
            txn.open_table(table)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
    }

    /// Every row of `table`; a table not made yet (a new journal) is empty.
    fn rows(&self, table: TableDefinition<&str, &[u8]>) -> Result<Vec<(String, Vec<u8>)>, String> {
        let read = || -> Result<Vec<(String, Vec<u8>)>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = match txn.open_table(table) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut rows = Vec::new();
            for row in table.iter()? {
                let (key, value) = row?;
                rows.push((key.value().to_string(), value.value().to_vec()));
            }
            Ok(rows)
        };
        unless_panic(read)?.map_err(|e| e.to_string())
    }

    fn load<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        what: &str,
    ) -> Result<Vec<(String, T)>, JournalError> {
        let rows = self
            .rows(table)
            .map_err(|e| JournalError::Read(format!("{what}: {e}")))?;
        rows.into_iter()
            .map(|(key, bytes)| {
                rmp_serde::from_slice(&bytes)
                    .map(|value| (key.clone(), value))
                    .map_err(|e| JournalError::Read(format!("{what}, record {key}: {e}")))
            })
            .collect()
    }

    pub fn put_app(&self, id: &str, record: &AppRecord) -> Result<(), JournalError> {
        self.put(APPS, id, record)
    }

    /// Journals a submission's state; its script is journaled once, by
    /// [`Journal::submit_driver`].
    pub fn put_driver(&self, id: &str, record: &DriverRecord) -> Result<(), JournalError> {
        self.put(DRIVERS, id, &without_script(record))
    }

    /// Journals a new submission with its script, in one commit.
    pub fn submit_driver(&self, id: &str, record: &DriverRecord) -> Result<(), JournalError> {
        let bytes = rmp_serde::to_vec_named(&without_script(record))
            .map_err(|e| JournalError::Write(e.to_string()))?;
        self.write(|txn| {
            txn.open_table(DRIVERS)?.insert(id, bytes.as_slice())?;
            txn.open_table(SCRIPTS)?
                .insert(id, record.job.script.as_bytes())?;
            Ok(())
        })
    }

    /// Drops the script of a submission that is over.
    pub fn forget_script(&self, id: &str) -> Result<(), JournalError> {
        self.write(|txn| {
            txn.open_table(SCRIPTS)?.remove(id)?;
            Ok(())
        })
    }

    pub fn apps(&self) -> Result<Vec<(AppId, AppRecord)>, JournalError> {
        self.load(APPS, "applications table")
    }

    /// Every submission, with its script while it is not over (journals
    /// written before scripts had a table of their own hold it inline).
    pub fn drivers(&self) -> Result<Vec<(DriverId, DriverRecord)>, JournalError> {
        let mut drivers: Vec<(DriverId, DriverRecord)> = self.load(DRIVERS, "submissions table")?;
        let scripts = self
            .rows(SCRIPTS)
            .map_err(|e| JournalError::Read(format!("scripts table: {e}")))?;
        let mut scripts: std::collections::BTreeMap<String, Vec<u8>> =
            scripts.into_iter().collect();
        for (id, record) in &mut drivers {
            if let Some(bytes) = scripts.remove(id) {
                record.job.script = String::from_utf8(bytes).map_err(|e| {
                    JournalError::Read(format!("scripts table, script of {id}: {e}"))
                })?;
            }
        }
        Ok(drivers)
    }

    /// The next number of the named sequence, kept across restarts, and
    /// never one handed out before, even after a backup was put back.
    pub fn next_number(&self, sequence: &str) -> Result<u64, JournalError> {
        let floor = self.numbers_kept().get(sequence).copied().unwrap_or(0);
        let mut next = 0;
        self.write(|txn| {
            let mut meta = txn.open_table(META)?;
            let current = meta
                .get(sequence)?
                .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
                .max(floor);
            next = current;
            let bytes = (current + 1).to_le_bytes();
            meta.insert(sequence, bytes.as_slice())?;
            Ok(())
        })?;
        self.keep_number(sequence, next + 1);
        Ok(next)
    }

    /// The numbers kept beside the journal: `sequence next` lines.
    fn numbers_kept(&self) -> std::collections::BTreeMap<String, u64> {
        let Some(path) = &self.numbers else {
            return Default::default();
        };
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (sequence, number) = line.split_once(' ')?;
                Some((sequence.to_string(), number.trim().parse().ok()?))
            })
            .collect()
    }

    /// Keeps `next` as the next number of `sequence` beside the journal;
    /// written aside, synced, then renamed, so a crash leaves one whole.
    fn keep_number(&self, sequence: &str, next: u64) {
        let Some(path) = &self.numbers else {
            return;
        };
        let mut numbers = self.numbers_kept();
        numbers.insert(sequence.to_string(), next);
        let text: String = numbers.iter().map(|(s, n)| format!("{s} {n}\n")).collect();
        let partial = path.with_extension("numbers.partial");
        let kept = std::fs::File::create(&partial)
            .and_then(|mut file| {
                file.write_all(text.as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&partial, path));
        if let Err(e) = kept {
            tracing::warn!(path = %path.display(), error = %e, "cannot keep the journal's id numbers beside it; a restored backup may hand out an id again");
        }
    }
}

/// `record` without its script, as the submissions table holds it.
fn without_script(record: &DriverRecord) -> DriverRecord {
    let job = &record.job;
    DriverRecord {
        job: DriverJob {
            name: job.name.clone(),
            script: String::new(),
            conf: job.conf.clone(),
            executor_cores: job.executor_cores,
            executor_memory_mb: job.executor_memory_mb,
            max_cores: job.max_cores,
            args: vec![],
            base_dir: job.base_dir.clone(),
            binary: None,
            files: vec![],
        },
        request: record.request.clone(),
        state: record.state.clone(),
        reason: record.reason.clone(),
        worker: record.worker.clone(),
        restarts: record.restarts,
        submitted: record.submitted.clone(),
        app: record.app.clone(),
        token: record.token.clone(),
    }
}

/// Damages a journal the ways a disk or a hand can, for the tests that
/// prove a damaged journal is refused (and for trying it by hand).
pub mod damage {
    use std::path::Path;

    use super::JOURNAL_FILE;

    /// Applies `damage` at every copy of `mark` in the journal in
    /// `state_dir` (old copies of a page may linger in freed space); says
    /// how many places it damaged.
    pub fn damage(
        state_dir: &Path,
        mark: &str,
        damage: impl Fn(&mut [u8], usize),
    ) -> std::io::Result<usize> {
        let path = state_dir.join(JOURNAL_FILE);
        let mut bytes = std::fs::read(&path)?;
        let at: Vec<usize> = bytes
            .windows(mark.len())
            .enumerate()
            .filter(|(_, w)| *w == mark.as_bytes())
            .map(|(i, _)| i)
            .collect();
        for &i in &at {
            damage(&mut bytes, i);
        }
        std::fs::write(&path, bytes)?;
        Ok(at.len())
    }

    /// Flips one bit a little after `at`.
    pub fn flip_a_byte(bytes: &mut [u8], at: usize) {
        if let Some(b) = bytes.get_mut(at + 3) {
            *b ^= 0x01;
        }
    }

    /// 512 bytes of noise over the start of the 4 KiB page that holds `at`.
    pub fn noise(bytes: &mut [u8], at: usize) {
        let start = at & !4095;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ at as u64;
        for b in bytes.iter_mut().skip(start).take(512) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use redb::StorageBackend;
    use redb::backends::InMemoryBackend;

    use super::*;

    fn driver_record(state: &str) -> DriverRecord {
        DriverRecord {
            job: DriverJob {
                name: "watch time".into(),
                script: "SELECT 1;".into(),
                conf: vec![("ember.sql.shufflePartitions".into(), "2".into())],
                executor_cores: 1,
                executor_memory_mb: 512,
                max_cores: Some(2),
                args: vec![],
                base_dir: None,
                binary: None,
                files: vec![],
            },
            request: DriverRequest {
                cores: 1,
                memory_mb: 1024,
                supervise: true,
            },
            state: state.into(),
            reason: None,
            worker: Some("w1".into()),
            restarts: 1,
            submitted: "2026-11-23 10:00:00".into(),
            app: None,
            token: None,
        }
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path()).unwrap();
            journal
                .submit_driver("driver-1", &driver_record("RUNNING"))
                .unwrap();
            journal
                .submit_driver("driver-2", &driver_record("SUBMITTED"))
                .unwrap();
            journal
                .put_driver("driver-1", &driver_record("FINISHED"))
                .unwrap();
            journal.forget_script("driver-1").unwrap();
            // Written before scripts had a table of their own.
            journal
                .put(DRIVERS, "driver-3", &driver_record("SUBMITTED"))
                .unwrap();
            assert_eq!(journal.next_number("drivers").unwrap(), 0);
            assert_eq!(journal.next_number("drivers").unwrap(), 1);
        }
        let journal = Journal::open(dir.path()).unwrap();
        let drivers = journal.drivers().unwrap();
        assert_eq!(drivers.len(), 3);
        assert_eq!(drivers[0].0, "driver-1");
        let mut finished = driver_record("FINISHED");
        finished.job.script = String::new();
        assert_eq!(drivers[0].1, finished, "a finished one's script is gone");
        assert!(drivers[0].1.is_final());
        assert_eq!(drivers[1].1, driver_record("SUBMITTED"));
        assert!(!drivers[1].1.is_final());
        assert_eq!(drivers[2].1, driver_record("SUBMITTED"));
        assert_eq!(
            journal.next_number("drivers").unwrap(),
            2,
            "sequences persist"
        );
    }

    #[test]
    fn a_state_dir_that_is_a_file_is_refused_with_a_reason() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = Journal::open(file.path()).unwrap_err().to_string();
        assert!(e.contains("is a file, not a directory"), "{e}");
    }

    #[test]
    fn a_garbage_journal_file_is_refused_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(JOURNAL_FILE), vec![0x5a; 10_000]).unwrap();
        let e = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("cannot be read in full"), "{e}");
        assert!(e.contains("No backup copy exists"), "{e}");
    }

    const APP_MARK: &str = "APPLICATION-RECORD-MARK";
    const DRIVER_MARK: &str = "SUBMISSION-RECORD-MARK";

    fn app_record(n: usize) -> AppRecord {
        AppRecord {
            name: format!("{APP_MARK}-{n}"),
            request: AppRequest {
                name: "watch time".into(),
                executor_cores: 1,
                executor_memory_mb: 512,
                max_cores: Some(2),
                conf: vec![],
                binary: None,
                files: vec![],
            },
            state: "FINISHED".into(),
            reason: None,
            submission: None,
            started: "2026-11-23 10:00:00".into(),
            ended: Some("2026-11-23 10:01:00".into()),
            driver: NodeContact {
                node: ember_transport::NodeId("client".into()),
                addr: "127.0.0.1:7078".parse().unwrap(),
                host: "127.0.0.1".into(),
            },
            secret: "s3cret".into(),
            executors: vec![ExecutorStatus {
                executor: 0,
                worker: "w1".into(),
                cores: 1,
                memory_mb: 512,
                state: super::super::messages::ExecutorState::Killed,
                reason: None,
                usage: None,
            }],
        }
    }

    /// A state dir whose journal holds 20 applications and 20 submissions,
    /// opened twice so its backup holds them too.
    fn filled_state_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path()).unwrap();
            for n in 0..20 {
                journal
                    .put_app(&format!("app-{n}"), &app_record(n))
                    .unwrap();
                let mut driver = driver_record("FINISHED");
                driver.job.name = format!("{DRIVER_MARK}-{n}");
                journal.put_driver(&format!("driver-{n}"), &driver).unwrap();
            }
        }
        drop(Journal::open(dir.path()).unwrap());
        dir
    }

    use super::damage::{damage, flip_a_byte, noise};

    fn assert_refused_with_the_way_back(dir: &Path, what: &str) {
        let e = Journal::open(dir).unwrap_err();
        assert!(matches!(e, JournalError::Damaged { .. }), "{what}: {e:?}");
        let e = e.to_string();
        let journal = dir.join(JOURNAL_FILE).display().to_string();
        let backup = dir.join(BACKUP_FILE).display().to_string();
        assert!(
            e.contains(&format!("the journal {journal} cannot be read in full")),
            "{what}: {e}"
        );
        assert!(e.contains(&format!("cp {backup} {journal}")), "{what}: {e}");
        assert!(e.contains("--discard-journal"), "{what}: {e}");
    }

    fn everything_is_back(dir: &Path) {
        let journal = Journal::open(dir).unwrap();
        let apps = journal.apps().unwrap();
        assert_eq!(apps.len(), 20);
        assert!(apps.iter().any(|(_, a)| *a == app_record(7)));
        assert_eq!(journal.drivers().unwrap().len(), 20);
    }

    fn restore_the_backup(dir: &Path) {
        std::fs::copy(dir.join(BACKUP_FILE), dir.join(JOURNAL_FILE)).unwrap();
    }

    #[test]
    fn a_restored_backup_never_hands_out_a_number_again() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        // The backup is taken at this open, before any number is handed out.
        assert_eq!(journal.next_number("apps").unwrap(), 0);
        assert_eq!(journal.next_number("apps").unwrap(), 1);
        assert_eq!(journal.next_number("drivers").unwrap(), 0);
        drop(journal);
        restore_the_backup(dir.path());
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.next_number("apps").unwrap(), 2);
        assert_eq!(journal.next_number("drivers").unwrap(), 1);
    }

    #[test]
    fn an_empty_journal_file_is_refused_and_the_backup_brings_everything_back() {
        let dir = filled_state_dir();
        std::fs::write(dir.path().join(JOURNAL_FILE), b"").unwrap();
        assert_refused_with_the_way_back(dir.path(), "0 bytes");
        let e = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("the file is empty, 0 bytes"), "{e}");
        restore_the_backup(dir.path());
        everything_is_back(dir.path());
    }

    #[test]
    fn a_flipped_byte_in_the_applications_table_is_refused() {
        let dir = filled_state_dir();
        assert!(damage(dir.path(), APP_MARK, flip_a_byte).unwrap() > 0);
        assert_refused_with_the_way_back(dir.path(), "flipped byte");
        restore_the_backup(dir.path());
        everything_is_back(dir.path());
    }

    #[test]
    fn random_bytes_in_the_applications_table_are_refused() {
        let dir = filled_state_dir();
        assert!(damage(dir.path(), APP_MARK, noise).unwrap() > 0);
        assert_refused_with_the_way_back(dir.path(), "512 random bytes");
    }

    #[test]
    fn damage_in_the_submissions_table_is_refused_not_a_panic() {
        let dir = filled_state_dir();
        assert!(damage(dir.path(), DRIVER_MARK, flip_a_byte).unwrap() > 0);
        assert_refused_with_the_way_back(dir.path(), "flipped byte in drivers");
        restore_the_backup(dir.path());
        assert!(damage(dir.path(), DRIVER_MARK, noise).unwrap() > 0);
        assert_refused_with_the_way_back(dir.path(), "noise in drivers");
    }

    #[test]
    fn a_record_that_does_not_decode_is_refused() {
        let dir = filled_state_dir();
        {
            let journal = Journal::open(dir.path()).unwrap();
            journal
                .write(|txn| {
                    txn.open_table(APPS)?.insert("app-7", [0xc1u8].as_slice())?;
                    Ok(())
                })
                .unwrap();
        }
        let e = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("applications table, record app-7"), "{e}");
    }

    #[test]
    fn discarding_starts_empty_and_keeps_the_old_files_aside() {
        let dir = filled_state_dir();
        assert!(damage(dir.path(), APP_MARK, flip_a_byte).unwrap() > 0);
        let aside = Journal::discard(dir.path()).unwrap().unwrap();
        assert!(aside.is_file());
        let journal = Journal::open(dir.path()).unwrap();
        assert!(journal.apps().unwrap().is_empty());
        assert!(journal.drivers().unwrap().is_empty());
        let kept: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".discarded-"))
            .collect();
        assert_eq!(kept.len(), 2, "the journal and its backup: {kept:?}");
    }

    #[test]
    fn a_journal_in_use_is_neither_opened_twice_nor_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let _journal = Journal::open(dir.path()).unwrap();
        let e = Journal::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("another cluster manager is using it"), "{e}");
        let e = Journal::discard(dir.path()).unwrap_err().to_string();
        assert!(e.contains("another cluster manager is using it"), "{e}");
    }

    #[test]
    fn the_journal_its_backup_and_a_new_state_dir_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("cm-state");
        drop(Journal::open(&dir).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(JOURNAL_FILE)), 0o600);
        assert_eq!(mode(&dir.join(BACKUP_FILE)), 0o600);
        // A journal an older version left readable is made owner-only.
        let journal = dir.join(JOURNAL_FILE);
        std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Journal::open(&dir).unwrap());
        assert_eq!(mode(&journal), 0o600);
    }

    #[test]
    fn each_cluster_has_its_own_id_kept_across_restarts() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let first = Journal::open(one.path()).unwrap().cluster_id().to_string();
        let second = Journal::open(two.path()).unwrap().cluster_id().to_string();
        assert_ne!(first, second);
        assert_eq!(first.len(), 5);
        assert!(first.chars().all(|c| c.is_ascii_lowercase()), "{first}");
        assert_eq!(Journal::open(one.path()).unwrap().cluster_id(), first);
    }

    /// Storage that fails every write with the given OS error.
    #[derive(Debug)]
    struct FailingDisk {
        inner: InMemoryBackend,
        errno: i32,
    }

    impl FailingDisk {
        fn check(&self) -> Result<(), io::Error> {
            Err(io::Error::from_raw_os_error(self.errno))
        }
    }

    impl StorageBackend for FailingDisk {
        fn len(&self) -> Result<u64, io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), io::Error> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), io::Error> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
            self.check()?;
            self.inner.write(offset, data)
        }
    }

    fn failing(errno: i32) -> FailingDisk {
        FailingDisk {
            inner: InMemoryBackend::new(),
            errno,
        }
    }

    #[test]
    fn a_full_disk_is_reported_at_start_with_what_to_do() {
        let e = Journal::open_with_backend(failing(28))
            .unwrap_err()
            .to_string();
        assert!(e.contains("the disk is full"), "{e}");
        assert!(e.contains("--state-dir"), "{e}");
    }

    #[test]
    fn a_read_only_disk_is_reported_at_start_with_what_to_do() {
        let e = Journal::open_with_backend(failing(30))
            .unwrap_err()
            .to_string();
        assert!(e.contains("read-only"), "{e}");
    }
}
