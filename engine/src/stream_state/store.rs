//! Versions of a streaming query's state, one set per partition, under its
//! checkpoint: version *b* (the state after batch *b*) of partition *p* is
//! `<dir>/<b>/part-<p>.snapshot.arrow` (every row) or
//! `<dir>/<b>/part-<p>.delta.arrow` (the rows batch *b* added and removed),
//! as Spark's state store keeps a snapshot every few versions and deltas
//! between. Each file is Arrow IPC, written atomically, and says in its
//! footer how many rows the version holds.
//!
//! The versions a process wrote stay in memory for its next batch, keyed
//! by the query run that wrote them; a version not in memory is rebuilt
//! from the latest snapshot at or below it and the deltas after.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};

/// A snapshot every this many versions (Spark's
/// `minDeltasForSnapshot` is 10 as well), and for a query's first.
pub const SNAPSHOT_EVERY: u64 = 10;

/// The column of a delta saying whether its row left the state.
const REMOVED: &str = "__ember_removed";
/// The footer key holding a version's row count.
const ROWS: &str = "ember.state.rows";
/// Versions kept in one process's memory, across queries and partitions.
const CACHED: usize = 256;

/// Where one partition's state lives, which query run keeps it, and which
/// executor holds it in memory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Partition {
    /// The query run: versions cached by one run are never read by
    /// another, even over the same directory.
    pub run: u64,
    /// The executor holding versions in memory (its shuffle location;
    /// executors that share a process keep apart, as if they did not).
    pub executor: String,
    pub dir: PathBuf,
    pub partition: usize,
}

impl Partition {
    /// Partition `partition` as the checkpoint under `dir` holds it, for
    /// reading only (no run caches it).
    fn on_disk(dir: &Path, partition: usize) -> Self {
        Self {
            run: 0,
            executor: String::new(),
            dir: dir.to_path_buf(),
            partition,
        }
    }

    fn file(&self, version: u64, kind: &str) -> PathBuf {
        self.dir
            .join(version.to_string())
            .join(format!("part-{}.{kind}.arrow", self.partition))
    }
}

/// `schema` with every field nullable: the one schema every version of a
/// state is kept in, whatever nullability a job's rows said.
pub fn nullable(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// `rows` in `schema` (same columns, nullable fields).
pub fn conform(schema: &SchemaRef, rows: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    rows.iter()
        .map(|b| {
            RecordBatch::try_new(Arc::clone(schema), b.columns().to_vec()).map_err(|e| {
                DataFusionError::Execution(format!(
                    "streaming state rows do not fit the state's schema: {e}"
                ))
            })
        })
        .collect()
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(Cache::default()));

#[derive(Default)]
struct Cache {
    versions: HashMap<Partition, (u64, Vec<RecordBatch>)>,
    order: VecDeque<Partition>,
}

impl Cache {
    fn get(&self, at: &Partition, version: u64) -> Option<Vec<RecordBatch>> {
        self.versions
            .get(at)
            .filter(|(v, _)| *v == version)
            .map(|(_, rows)| rows.clone())
    }

    fn put(&mut self, at: &Partition, version: u64, rows: Vec<RecordBatch>) {
        if self.versions.insert(at.clone(), (version, rows)).is_none() {
            self.order.push_back(at.clone());
        }
        while self.order.len() > CACHED {
            if let Some(old) = self.order.pop_front() {
                self.versions.remove(&old);
            }
        }
    }
}

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Version `version` of a partition's state, in `schema` (nullable).
pub async fn load(at: &Partition, version: u64, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    if let Some(rows) = cache().get(at, version) {
        return Ok(rows);
    }
    let rows = rebuild(at, version, Some(schema)).await?;
    cache().put(at, version, rows.clone());
    Ok(rows)
}

/// Every row of version `version` over partitions `0..partitions`, in the
/// schema its snapshots were written in (for tools and checks; nothing is
/// cached).
pub async fn read_version(dir: &Path, version: u64, partitions: usize) -> Result<Vec<RecordBatch>> {
    let mut all = Vec::new();
    for partition in 0..partitions {
        all.extend(rebuild(&Partition::on_disk(dir, partition), version, None).await?);
    }
    Ok(all)
}

/// Version `version` of a partition from the checkpoint: its latest
/// snapshot with the deltas after it made, in `schema` or, without one,
/// the schema the snapshot was written in.
async fn rebuild(
    at: &Partition,
    version: u64,
    schema: Option<&SchemaRef>,
) -> Result<Vec<RecordBatch>> {
    let (snapshot, deltas) = chain(at, version)?;
    let (written, rows) = read(&snapshot)?;
    let schema = schema.unwrap_or(&written);
    let mut rows = conform(schema, &rows)?;
    for delta in &deltas {
        rows = apply(schema, &rows, &read(delta)?.1).await?;
    }
    Ok(rows)
}

/// The latest snapshot at or below `version` and the deltas after it, in
/// order.
fn chain(at: &Partition, version: u64) -> Result<(PathBuf, Vec<PathBuf>)> {
    let mut deltas = Vec::new();
    let mut v = version;
    loop {
        let snapshot = at.file(v, "snapshot");
        if snapshot.exists() {
            deltas.reverse();
            return Ok((snapshot, deltas));
        }
        let delta = at.file(v, "delta");
        if !delta.exists() || v == 0 {
            return Err(DataFusionError::Execution(format!(
                "the checkpoint lacks version {version} of state partition {} (no {} or {}): \
                 it was removed or damaged; start the query over on a new checkpoint",
                at.partition,
                snapshot.display(),
                delta.display()
            )));
        }
        deltas.push(delta);
        v -= 1;
    }
}

/// Writes version `version` of a partition's state: a snapshot when it is
/// the first (`previous` is `None`) or its turn, else the changes from
/// `previous`.
pub async fn save(
    at: &Partition,
    version: u64,
    previous: Option<&[RecordBatch]>,
    rows: &[RecordBatch],
    schema: &SchemaRef,
) -> Result<()> {
    let rows = conform(schema, rows)?;
    let total: usize = rows.iter().map(RecordBatch::num_rows).sum();
    match previous {
        Some(previous) if !version.is_multiple_of(SNAPSHOT_EVERY) => {
            let changes = delta(schema, previous, &rows).await?;
            write(
                &at.file(version, "delta"),
                &delta_schema(schema),
                &changes,
                total,
            )?;
        }
        _ => write(&at.file(version, "snapshot"), schema, &rows, total)?,
    }
    cache().put(at, version, rows);
    Ok(())
}

/// How many rows version `version` holds over partitions `0..partitions`.
pub fn rows(dir: &Path, version: u64, partitions: usize) -> Result<u64> {
    let mut total = 0;
    for partition in 0..partitions {
        let at = Partition::on_disk(dir, partition);
        let snapshot = at.file(version, "snapshot");
        let file = if snapshot.exists() {
            snapshot
        } else {
            at.file(version, "delta")
        };
        total += footer_rows(&file)?;
    }
    Ok(total)
}

/// Removes the versions no later batch needs once `committed` is: those
/// below its latest snapshot.
pub fn forget_before_snapshot(dir: &Path, committed: u64) -> std::io::Result<()> {
    let keep_from = committed - committed % SNAPSHOT_EVERY;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let old = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|v| v < keep_from);
        if old {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

fn delta_schema(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(REMOVED, DataType::Boolean, false));
    Arc::new(Schema::new(fields))
}

fn column_list(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| super::quoted(f.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn table(schema: &SchemaRef, rows: &[RecordBatch]) -> Result<Arc<MemTable>> {
    Ok(Arc::new(MemTable::try_new(
        Arc::clone(schema),
        vec![rows.to_vec()],
    )?))
}

/// The rows `rows` has that `previous` lacks, and those it lost, each
/// marked. A state holds each row once (one per group), so set
/// differences are the changes.
async fn delta(
    schema: &SchemaRef,
    previous: &[RecordBatch],
    rows: &[RecordBatch],
) -> Result<Vec<RecordBatch>> {
    let ctx = super::merge_context();
    ctx.register_table("old", table(schema, &conform(schema, previous)?)?)?;
    ctx.register_table("new", table(schema, rows)?)?;
    let sql = format!(
        "SELECT *, false AS {r} FROM (SELECT * FROM new EXCEPT SELECT * FROM old) AS a \
         UNION ALL SELECT *, true AS {r} FROM (SELECT * FROM old EXCEPT SELECT * FROM new) AS d",
        r = super::quoted(REMOVED)
    );
    let changes = ctx.sql(&sql).await?.collect().await?;
    conform(&delta_schema(schema), &changes)
}

/// `rows` with a delta's changes made.
async fn apply(
    schema: &SchemaRef,
    rows: &[RecordBatch],
    changes: &[RecordBatch],
) -> Result<Vec<RecordBatch>> {
    let ctx = super::merge_context();
    ctx.register_table("old", table(schema, rows)?)?;
    ctx.register_table(
        "delta",
        table(
            &delta_schema(schema),
            &conform(&delta_schema(schema), changes)?,
        )?,
    )?;
    let columns = column_list(schema);
    let r = super::quoted(REMOVED);
    let sql = format!(
        "SELECT * FROM (SELECT * FROM old EXCEPT SELECT {columns} FROM delta WHERE {r}) AS k \
         UNION ALL SELECT {columns} FROM delta WHERE NOT {r}"
    );
    let applied = ctx.sql(&sql).await?.collect().await?;
    conform(schema, &applied)
}

fn failed(path: &Path, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("streaming state {}: {e}", path.display()))
}

fn write(path: &Path, schema: &SchemaRef, rows: &[RecordBatch], total: usize) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    let mut bytes = Vec::new();
    {
        let mut writer = FileWriter::try_new(&mut bytes, schema).map_err(|e| failed(path, e))?;
        writer.write_metadata(ROWS, total.to_string());
        for batch in rows.iter().filter(|b| b.num_rows() > 0) {
            writer.write(batch).map_err(|e| failed(path, e))?;
        }
        writer.finish().map_err(|e| failed(path, e))?;
    }
    write_atomically(path, &bytes).map_err(|e| failed(path, e))
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames
/// it over `path`: a reader finds the whole file or none. Every file of a
/// streaming checkpoint is written so.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A state file's schema and rows.
fn read(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let file = std::fs::File::open(path).map_err(|e| failed(path, e))?;
    let reader = FileReader::try_new(file, None).map_err(|e| failed(path, e))?;
    let schema = reader.schema();
    let rows = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| failed(path, format!("damaged: {e}")))?;
    Ok((schema, rows))
}

fn footer_rows(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(|e| failed(path, e))?;
    let reader = FileReader::try_new(file, None).map_err(|e| failed(path, e))?;
    Ok(rows_in(&reader, path)? as u64)
}

fn rows_in<R: std::io::Read + std::io::Seek>(reader: &FileReader<R>, path: &Path) -> Result<usize> {
    reader
        .custom_metadata()
        .get(ROWS)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| failed(path, "it does not say how many rows it holds"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use datafusion::arrow::array::{Int64Array, StringArray};

    use super::*;

    fn schema() -> SchemaRef {
        nullable(&Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ])))
    }

    fn state(rows: &[(&str, i64)]) -> Vec<RecordBatch> {
        let keys: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let counts: Vec<i64> = rows.iter().map(|r| r.1).collect();
        vec![
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(StringArray::from(keys)),
                    Arc::new(Int64Array::from(counts)),
                ],
            )
            .unwrap(),
        ]
    }

    fn sorted(rows: &[RecordBatch]) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for b in rows {
            let k = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..b.num_rows() {
                out.push((k.value(i).to_string(), n.value(i)));
            }
        }
        out.sort();
        out
    }

    /// Version `v`: keys `a` (counting up), `b` (until version 5, then
    /// gone), and `c` from version 8 on.
    fn version(v: i64) -> Vec<(&'static str, i64)> {
        let mut rows = vec![("a", v + 1)];
        if v < 5 {
            rows.push(("b", 7));
        }
        if v >= 8 {
            rows.push(("c", v));
        }
        rows
    }

    fn partition(run: u64, dir: &Path, partition: usize) -> Partition {
        Partition {
            run,
            executor: String::new(),
            dir: dir.to_path_buf(),
            partition,
        }
    }

    /// Saves versions `0..=last` of [`version`], each from the one before.
    async fn save_versions(at: &Partition, last: u64) {
        let mut previous: Option<Vec<RecordBatch>> = None;
        for v in 0..=last {
            let rows = state(&version(v as i64));
            save(at, v, previous.as_deref(), &rows, &schema())
                .await
                .unwrap();
            previous = Some(rows);
        }
    }

    #[tokio::test]
    async fn versions_are_snapshots_and_deltas_and_rebuild_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let at = partition(1, dir.path(), 1);
        save_versions(&at, 12).await;
        let kind = |v: u64| {
            ["snapshot", "delta"]
                .into_iter()
                .find(|k| at.file(v, k).exists())
                .unwrap()
        };
        assert_eq!(kind(0), "snapshot");
        assert_eq!(kind(1), "delta");
        assert_eq!(kind(9), "delta");
        assert_eq!(kind(10), "snapshot");
        assert_eq!(kind(12), "delta");
        // Another run (another process, a restart) has nothing cached.
        let other = Partition {
            run: 2,
            ..at.clone()
        };
        for v in [4, 5, 9, 10, 12] {
            let rebuilt = load(&other, v, &schema()).await.unwrap();
            let expected: Vec<(String, i64)> = {
                let mut e: Vec<_> = version(v as i64)
                    .into_iter()
                    .map(|(k, n)| (k.to_string(), n))
                    .collect();
                e.sort();
                e
            };
            assert_eq!(sorted(&rebuilt), expected, "version {v}");
        }
        // Partition 0 holds only a snapshot of version 12: a count of
        // version 12 reads both partitions' footers.
        let zero = Partition {
            partition: 0,
            ..at.clone()
        };
        save(&zero, 12, None, &state(&[("z", 1)]), &schema())
            .await
            .unwrap();
        assert_eq!(rows(dir.path(), 12, 2).unwrap(), 3);
        let mut all: Vec<(String, i64)> = sorted(&read_version(dir.path(), 12, 2).await.unwrap());
        all.sort();
        assert_eq!(
            all,
            [
                ("a".to_string(), 13),
                ("c".to_string(), 12),
                ("z".to_string(), 1)
            ]
        );
    }

    #[tokio::test]
    async fn old_versions_go_once_a_later_snapshot_is_committed_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let at = partition(3, dir.path(), 0);
        save_versions(&at, 11).await;
        forget_before_snapshot(dir.path(), 11).unwrap();
        assert!(!dir.path().join("9").exists());
        assert!(dir.path().join("10").exists() && dir.path().join("11").exists());
        let fresh = Partition {
            run: 4,
            ..at.clone()
        };
        assert_eq!(sorted(&load(&fresh, 11, &schema()).await.unwrap()).len(), 2);
        let err = load(&fresh, 9, &schema()).await.unwrap_err().to_string();
        assert!(
            err.contains("lacks version 9 of state partition 0"),
            "{err}"
        );
    }
}
