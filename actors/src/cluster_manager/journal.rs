//! The cluster manager's memory across restarts: submissions, applications
//! and their states, kept in an embedded transactional database (redb)
//! under `--state-dir`. Records are msgpack values keyed by id; every
//! change is committed before the manager acts on it.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::messages::DriverJob;
use super::state::{AppId, AppRequest, DriverId, DriverRequest, WorkerId};
use crate::remote::NodeContact;

const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
const DRIVERS: TableDefinition<&str, &[u8]> = TableDefinition::new("drivers");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The database file inside the state directory.
pub const JOURNAL_FILE: &str = "cluster-manager.redb";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("state dir {dir}: {why}")]
    Open { dir: PathBuf, why: String },
    #[error("the journal cannot be written ({0}); check the state dir's disk")]
    Write(String),
    #[error("the journal cannot be read ({0})")]
    Read(String),
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
}

impl DriverRecord {
    /// Whether the submission is over (nothing to relaunch after a restart).
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "FINISHED" | "FAILED" | "KILLED")
    }
}

pub struct Journal {
    db: Database,
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

impl Journal {
    /// Opens (or creates) the journal in `dir`, and proves it can be
    /// written, so a full or read-only disk is reported now rather than at
    /// the first submission.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let fail = |why: String| JournalError::Open {
            dir: dir.to_path_buf(),
            why,
        };
        if dir.exists() && !dir.is_dir() {
            return Err(fail("it is a file, not a directory".into()));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create it: {}", explain(&e, Some(&e)))))?;
        let db = Database::create(dir.join(JOURNAL_FILE)).map_err(|e| {
            let e = redb::Error::from(e);
            fail(explain(&e, io_of(&e)))
        })?;
        Self::ready(db).map_err(|e| match e {
            JournalError::Write(why) | JournalError::Read(why) => fail(why),
            other => other,
        })
    }

    /// Opens the journal on any redb storage (tests use failing ones).
    pub fn open_with_backend(backend: impl redb::StorageBackend) -> Result<Self, JournalError> {
        let db = redb::Builder::new()
            .create_with_backend(backend)
            .map_err(|e| {
                let e = redb::Error::from(e);
                JournalError::Open {
                    dir: PathBuf::from("(custom storage)"),
                    why: explain(&e, io_of(&e)),
                }
            })?;
        Self::ready(db)
    }

    fn ready(db: Database) -> Result<Self, JournalError> {
        let journal = Self { db };
        // Creates the tables and proves a commit reaches the disk.
        let opened = time::OffsetDateTime::now_utc().unix_timestamp();
        journal.write(|txn| {
            txn.open_table(APPS)?;
            txn.open_table(DRIVERS)?;
            let mut meta = txn.open_table(META)?;
            let bytes = opened.to_le_bytes();
            meta.insert("opened", bytes.as_slice())?;
            Ok(())
        })?;
        Ok(journal)
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), JournalError> {
        let run = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
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

    fn load<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, T)>, JournalError> {
        let read = || -> Result<Vec<(String, Vec<u8>)>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(table)?;
            let mut rows = Vec::new();
            for row in table.iter()? {
                let (key, value) = row?;
                rows.push((key.value().to_string(), value.value().to_vec()));
            }
            Ok(rows)
        };
        let rows = read().map_err(|e| JournalError::Read(e.to_string()))?;
        rows.into_iter()
            .map(|(key, bytes)| {
                rmp_serde::from_slice(&bytes)
                    .map(|value| (key.clone(), value))
                    .map_err(|e| JournalError::Read(format!("record {key}: {e}")))
            })
            .collect()
    }

    pub fn put_app(&self, id: &str, record: &AppRecord) -> Result<(), JournalError> {
        self.put(APPS, id, record)
    }

    pub fn put_driver(&self, id: &str, record: &DriverRecord) -> Result<(), JournalError> {
        self.put(DRIVERS, id, record)
    }

    pub fn apps(&self) -> Result<Vec<(AppId, AppRecord)>, JournalError> {
        self.load(APPS)
    }

    pub fn drivers(&self) -> Result<Vec<(DriverId, DriverRecord)>, JournalError> {
        self.load(DRIVERS)
    }

    /// The next number of the named sequence, kept across restarts.
    pub fn next_number(&self, sequence: &str) -> Result<u64, JournalError> {
        let mut next = 0;
        self.write(|txn| {
            let mut meta = txn.open_table(META)?;
            let current = meta
                .get(sequence)?
                .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            next = current;
            let bytes = (current + 1).to_le_bytes();
            meta.insert(sequence, bytes.as_slice())?;
            Ok(())
        })?;
        Ok(next)
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
                base_dir: None,
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
        }
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path()).unwrap();
            journal
                .put_driver("driver-1", &driver_record("RUNNING"))
                .unwrap();
            journal
                .put_driver("driver-2", &driver_record("SUBMITTED"))
                .unwrap();
            journal
                .put_driver("driver-1", &driver_record("FINISHED"))
                .unwrap();
            assert_eq!(journal.next_number("drivers").unwrap(), 0);
            assert_eq!(journal.next_number("drivers").unwrap(), 1);
        }
        let journal = Journal::open(dir.path()).unwrap();
        let drivers = journal.drivers().unwrap();
        assert_eq!(drivers.len(), 2);
        assert_eq!(drivers[0].0, "driver-1");
        assert_eq!(drivers[0].1, driver_record("FINISHED"));
        assert!(drivers[0].1.is_final());
        assert!(!drivers[1].1.is_final());
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
        assert!(e.starts_with("state dir"), "{e}");
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
