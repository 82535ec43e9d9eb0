//! Where shuffle blocks live between the map task that writes them and the
//! reduce tasks that read them.
//!
//! A map task's output is one unit (a [`MapOutput`]): either batches held in
//! memory (local mode, while the memory budget allows) or one compressed
//! Arrow IPC file in the executor's spill directory. The file holds every
//! reduce partition's batches in the order they were completed; an index
//! kept beside it in memory lists, per reduce partition, which batches of
//! the file are its. Blocks never outlive their executor (there is no
//! external shuffle service), so the index is never needed by another
//! process and stays out of the file. A map output is registered only once
//! it is whole: a failed write leaves nothing a reader could find, and its
//! file is deleted with it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, SchemaRef};

use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::SpillFile;
use datafusion::execution::memory_pool::{MemoryPool, MemoryReservation, UnboundedMemoryPool};
use futures::StreamExt;
use futures::stream::BoxStream;

use super::fetch::BlockFetcher;
use crate::error::EngineError;
use crate::stages::StageId;

/// One block: the output of map task `map` of `stage` destined for reduce
/// partition `reduce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShuffleBlockId {
    pub stage: StageId,
    pub map: usize,
    pub reduce: usize,
}

impl fmt::Display for ShuffleBlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shuffle_{}_{}_{}", self.stage, self.map, self.reduce)
    }
}

/// A block's batches: handed over as they are from memory, or read from
/// disk one at a time as they are taken.
pub enum BlockBatches {
    Memory(std::vec::IntoIter<RecordBatch>),
    Disk(Box<DiskBlock>),
}

impl Iterator for BlockBatches {
    type Item = Result<RecordBatch, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Memory(batches) => batches.next().map(Ok),
            Self::Disk(block) => block.next(),
        }
    }
}

/// The batches of `blocks`, in order, as a stream: blocks in memory are
/// handed over as they are, blocks on disk read a batch at a time on the
/// blocking pool, so a task never holds a whole block. An error names the
/// block it came from.
pub fn read_blocks(
    store: Arc<BlockStore>,
    blocks: Vec<ShuffleBlockId>,
) -> BoxStream<'static, Result<RecordBatch, (ShuffleBlockId, EngineError)>> {
    futures::stream::iter(blocks)
        .flat_map(move |id| match store.get(id) {
            Err(e) => futures::stream::once(futures::future::ready(Err((id, e)))).boxed(),
            Ok(BlockBatches::Memory(batches)) => futures::stream::iter(batches.map(Ok)).boxed(),
            Ok(disk) => read_on_blocking_pool(disk)
                .map(move |item| item.map_err(|e| (id, e)))
                .boxed(),
        })
        .boxed()
}

/// Takes `batches` a batch at a time on tokio's blocking pool.
pub fn read_on_blocking_pool(
    batches: BlockBatches,
) -> BoxStream<'static, Result<RecordBatch, EngineError>> {
    futures::stream::unfold(Some(batches), |state| async move {
        let mut batches = state?;
        let taken = tokio::task::spawn_blocking(move || {
            let next = batches.next();
            (next, batches)
        })
        .await;
        match taken {
            Ok((Some(item), batches)) => Some((item, Some(batches))),
            Ok((None, _)) => None,
            Err(e) => Some((
                Err(EngineError::Fetch(format!(
                    "reading a shuffle file stopped: {e}"
                ))),
                None,
            )),
        }
    })
    .boxed()
}

/// A map output file: deleted (and its bytes given back to the disk quota)
/// when the last block that reads it is dropped.
pub(crate) struct MapOutputFile {
    pub(crate) file: Arc<dyn SpillFile>,
    pub(crate) schema: SchemaRef,
    /// Where each batch's IPC message lies, by position.
    pub(crate) spans: Vec<Span>,
    /// The file's device and inode, for a reader in another process on
    /// this host to tell it opened this very file (`None`: unknown, and
    /// the file is not offered to such readers).
    pub(crate) identity: Option<(u64, u64)>,
}

impl MapOutputFile {
    /// The device and inode of the file at `path`.
    pub(crate) fn identity_of(path: Option<&Path>) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path?).ok()?;
        Some((meta.dev(), meta.ino()))
    }
}

/// One batch's encapsulated IPC message in a map output file: the same
/// bytes an IPC stream carries, so a block can be served without decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) rows: u64,
}

/// One batch as encoded in a map output file (an encapsulated Arrow IPC
/// message, LZ4-compressed unless compression is off), and its rows.
#[derive(Debug, Clone)]
pub struct RawBatch {
    pub bytes: bytes::Bytes,
    pub rows: usize,
}

/// Blocks that can be served as they are stored: every one in a file, of
/// one schema without dictionaries.
pub struct RawBlocks {
    pub schema: SchemaRef,
    reads: Vec<(Arc<MapOutputFile>, Vec<Span>)>,
}

/// How many bytes of raw batches one trip to the blocking pool reads.
const RAW_READ_BYTES: u64 = 4 << 20;

impl RawBlocks {
    /// The batches, in order, read a few megabytes at a time on the
    /// blocking pool.
    pub fn read(self) -> BoxStream<'static, Result<RawBatch, EngineError>> {
        let pieces = self.reads.into_iter().flat_map(|(file, spans)| {
            // Runs of batches up to RAW_READ_BYTES, each one read.
            let mut runs: Vec<Vec<Span>> = Vec::new();
            let mut size = 0;
            for span in spans {
                match runs.last_mut() {
                    Some(run) if size + span.len <= RAW_READ_BYTES => {
                        size += span.len;
                        run.push(span);
                    }
                    _ => {
                        size = span.len;
                        runs.push(vec![span]);
                    }
                }
            }
            runs.into_iter().map(move |run| (Arc::clone(&file), run))
        });
        futures::stream::iter(pieces)
            .then(|(file, run)| async move {
                tokio::task::spawn_blocking(move || read_spans(&file, &run))
                    .await
                    .unwrap_or_else(|e| {
                        Err(EngineError::Fetch(format!(
                            "reading a shuffle file stopped: {e}"
                        )))
                    })
            })
            .map(|read| match read {
                Ok(batches) => futures::stream::iter(batches.into_iter().map(Ok)).boxed(),
                Err(e) => futures::stream::once(futures::future::ready(Err(e))).boxed(),
            })
            .flatten()
            .boxed()
    }
}

/// Reads `spans` of `file`, consecutive ones in one read.
fn read_spans(file: &MapOutputFile, spans: &[Span]) -> Result<Vec<RawBatch>, EngineError> {
    use std::os::unix::fs::FileExt;
    let damaged = |why: String| {
        EngineError::Fetch(format!(
            "shuffle file {:?} cannot be read: {why}",
            file.file.path()
        ))
    };
    let path = file
        .file
        .path()
        .ok_or_else(|| damaged("it has no path".to_string()))?;
    let handle = File::open(path).map_err(|e| damaged(e.to_string()))?;
    let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
        return Ok(Vec::new());
    };
    let contiguous = spans
        .windows(2)
        .all(|w| w[0].offset + w[0].len == w[1].offset);
    if contiguous {
        let len = usize::try_from(last.offset + last.len - first.offset)
            .map_err(|e| damaged(e.to_string()))?;
        let mut buf = vec![0u8; len];
        handle
            .read_exact_at(&mut buf, first.offset)
            .map_err(|e| damaged(e.to_string()))?;
        let whole = bytes::Bytes::from(buf);
        return Ok(spans
            .iter()
            .map(|span| {
                let at = (span.offset - first.offset) as usize;
                RawBatch {
                    bytes: whole.slice(at..at + span.len as usize),
                    rows: span.rows as usize,
                }
            })
            .collect());
    }
    spans
        .iter()
        .map(|span| {
            let mut buf = vec![0u8; span.len as usize];
            handle
                .read_exact_at(&mut buf, span.offset)
                .map_err(|e| damaged(e.to_string()))?;
            Ok(RawBatch {
                bytes: buf.into(),
                rows: span.rows as usize,
            })
        })
        .collect()
}

impl fmt::Debug for MapOutputFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MapOutputFile({:?})", self.file.path())
    }
}

#[derive(Debug)]
enum Block {
    Memory(Vec<RecordBatch>),
    /// These batches (by position) of a map output file.
    Disk {
        file: Arc<MapOutputFile>,
        batches: Vec<usize>,
    },
}

/// Everything one map task wrote, per reduce partition.
#[derive(Debug, Default)]
pub struct MapOutput {
    blocks: BTreeMap<usize, Block>,
    /// The memory budget the in-memory blocks hold, given back on drop.
    reservation: Option<MemoryReservation>,
    bytes_on_disk: u64,
}

impl MapOutput {
    /// Blocks held in memory, and the budget they hold.
    pub(crate) fn in_memory(
        memory: BTreeMap<usize, Vec<RecordBatch>>,
        reservation: MemoryReservation,
    ) -> Self {
        Self {
            blocks: memory
                .into_iter()
                .map(|(reduce, batches)| (reduce, Block::Memory(batches)))
                .collect(),
            reservation: Some(reservation),
            bytes_on_disk: 0,
        }
    }

    pub(crate) fn on_disk(file: MapOutputFile, index: BTreeMap<usize, Vec<usize>>) -> Self {
        let bytes_on_disk = file.file.size().unwrap_or_default();
        let file = Arc::new(file);
        Self {
            blocks: index
                .into_iter()
                .map(|(reduce, batches)| {
                    let file = Arc::clone(&file);
                    (reduce, Block::Disk { file, batches })
                })
                .collect(),
            reservation: None,
            bytes_on_disk,
        }
    }

    fn read(&self, id: ShuffleBlockId) -> Result<BlockBatches, EngineError> {
        match self.blocks.get(&id.reduce) {
            None => Err(EngineError::MissingBlock(id)),
            Some(Block::Memory(batches)) => Ok(BlockBatches::Memory(batches.clone().into_iter())),
            Some(Block::Disk { file, batches }) => {
                let Some(path) = file.file.path() else {
                    return Err(EngineError::MissingBlock(id));
                };
                let block = File::open(path)
                    .map_err(|e| e.to_string())
                    .and_then(|f| DiskBlock::open(id, f, batches.clone(), Some(Arc::clone(file))))
                    .map_err(|why| {
                        EngineError::Fetch(format!(
                            "cannot open shuffle file {} for block {id}: {why}",
                            path.display()
                        ))
                    })?;
                Ok(BlockBatches::Disk(Box::new(block)))
            }
        }
    }
}

/// Reads a block's batches from its map output file, one at a time.
pub struct DiskBlock {
    id: ShuffleBlockId,
    /// Keeps the file until the reader is done, even if the block is
    /// removed meanwhile (a file another process wrote is kept by the open
    /// handle alone).
    _file: Option<Arc<MapOutputFile>>,
    reader: FileReader<BufReader<File>>,
    batches: std::vec::IntoIter<usize>,
}

impl DiskBlock {
    /// Block `id`'s batches at positions `batches` of the map output file
    /// open as `file`, kept by `owner` if it is this process's.
    fn open(
        id: ShuffleBlockId,
        file: File,
        batches: Vec<usize>,
        owner: Option<Arc<MapOutputFile>>,
    ) -> Result<Self, String> {
        let reader = FileReader::try_new(BufReader::new(file), None).map_err(|e| e.to_string())?;
        Ok(Self {
            id,
            _file: owner,
            reader,
            batches: batches.into_iter(),
        })
    }
}

impl Iterator for DiskBlock {
    type Item = Result<RecordBatch, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = self.batches.next()?;
        let id = self.id;
        let damaged = move |why: String| {
            EngineError::Fetch(format!("shuffle file of block {id} is damaged: {why}"))
        };
        if let Err(e) = self.reader.set_index(index) {
            return Some(Err(damaged(e.to_string())));
        }
        Some(match self.reader.next() {
            Some(Ok(batch)) => Ok(batch),
            Some(Err(e)) => Err(damaged(e.to_string())),
            None => Err(damaged(format!("batch {index} is missing"))),
        })
    }
}

/// A block's map output file and its batches' positions in it.
type InFile<'a> = (&'a Arc<MapOutputFile>, &'a Vec<usize>);

/// Block `id`'s map output file and batch positions in it; `None` when it
/// is held in memory.
fn in_file(
    outputs: &BTreeMap<(StageId, usize), MapOutput>,
    id: ShuffleBlockId,
) -> Result<Option<InFile<'_>>, EngineError> {
    let block = outputs
        .get(&(id.stage, id.map))
        .and_then(|o| o.blocks.get(&id.reduce))
        .ok_or(EngineError::MissingBlock(id))?;
    Ok(match block {
        Block::Disk { file, batches } => Some((file, batches)),
        Block::Memory(_) => None,
    })
}

/// A block in a map output file of another process on this host: the file
/// (its path and identity) and which of its batches are the block's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedBlock {
    pub id: ShuffleBlockId,
    pub path: std::path::PathBuf,
    pub device: u64,
    pub inode: u64,
    pub batches: Vec<usize>,
}

impl LocatedBlock {
    /// Opens the block's file to read its batches one at a time. Fails
    /// when the file is gone or is not the one located (another mount
    /// namespace holds a different file at that path): the block must then
    /// be fetched. Once open, the batches stay readable even if the writer
    /// removes the file.
    pub fn open(&self) -> Result<BlockBatches, EngineError> {
        use std::os::unix::fs::MetadataExt;
        let id = self.id;
        let failed = |why: String| {
            EngineError::Fetch(format!(
                "cannot read block {id} from {} on this host: {why}",
                self.path.display()
            ))
        };
        let handle = File::open(&self.path).map_err(|e| failed(e.to_string()))?;
        let meta = handle.metadata().map_err(|e| failed(e.to_string()))?;
        if (meta.dev(), meta.ino()) != (self.device, self.inode) {
            return Err(failed("another file is at that path here".to_string()));
        }
        let block = DiskBlock::open(id, handle, self.batches.clone(), None).map_err(failed)?;
        Ok(BlockBatches::Disk(Box::new(block)))
    }
}

/// What an executor holds in shuffle blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUsage {
    pub map_outputs: usize,
    pub memory_bytes: usize,
    pub disk_bytes: u64,
}

/// The map outputs an executor (in local mode: every executor of the
/// process) holds.
#[derive(Debug, Default)]
pub struct BlockStore {
    outputs: Mutex<BTreeMap<(StageId, usize), MapOutput>>,
}

impl BlockStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(StageId, usize), MapOutput>> {
        // A panic while holding this lock cannot leave a half-written map
        // output: inserts and removals are single map operations.
        self.outputs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores map task `map` of `stage`'s output, replacing any earlier
    /// attempt's.
    pub fn put_map(&self, stage: StageId, map: usize, output: MapOutput) {
        let replaced = self.lock().insert((stage, map), output);
        // An earlier attempt's file is deleted outside the lock.
        drop(replaced);
    }

    /// Stores one block in memory (tests and tools).
    pub fn put(&self, id: ShuffleBlockId, batches: Vec<RecordBatch>) {
        let mut outputs = self.lock();
        let output = outputs.entry((id.stage, id.map)).or_default();
        output.blocks.insert(id.reduce, Block::Memory(batches));
    }

    /// A block's batches, read as they are taken.
    pub fn get(&self, id: ShuffleBlockId) -> Result<BlockBatches, EngineError> {
        self.lock()
            .get(&(id.stage, id.map))
            .ok_or(EngineError::MissingBlock(id))?
            .read(id)
    }

    /// `ids` as they are stored, when every one is in a file and they
    /// share a schema without dictionaries; `None` otherwise (read them
    /// with [`BlockStore::get`]).
    pub fn raw(&self, ids: &[ShuffleBlockId]) -> Result<Option<RawBlocks>, EngineError> {
        let outputs = self.lock();
        let mut schema: Option<SchemaRef> = None;
        let mut reads = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some((file, batches)) = in_file(&outputs, id)? else {
                return Ok(None);
            };
            match &schema {
                Some(s) if s != &file.schema => return Ok(None),
                Some(_) => {}
                None => {
                    let dictionaries = file.schema.fields().iter().any(|f| {
                        matches!(f.data_type(), DataType::Dictionary(..))
                            || f.data_type().is_nested()
                    });
                    if dictionaries {
                        return Ok(None);
                    }
                    schema = Some(Arc::clone(&file.schema));
                }
            }
            let spans = batches
                .iter()
                .map(|&b| file.spans.get(b).copied())
                .collect::<Option<Vec<Span>>>()
                .ok_or_else(|| EngineError::Fetch(format!("the index of block {id} is damaged")))?;
            reads.push((Arc::clone(file), spans));
        }
        Ok(schema.map(|schema| RawBlocks { schema, reads }))
    }

    /// Where `ids` lie in this process's map output files, for another
    /// process on this host to read them itself; `None` when any of them
    /// is held in memory (it must be sent).
    pub fn located(
        &self,
        ids: &[ShuffleBlockId],
    ) -> Result<Option<Vec<LocatedBlock>>, EngineError> {
        let outputs = self.lock();
        let mut located = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some((file, batches)) = in_file(&outputs, id)? else {
                return Ok(None);
            };
            // The file's identity, so a reader that sees another file at
            // the same path (another mount namespace) can tell.
            let (Some(path), Some((device, inode))) = (file.file.path(), file.identity) else {
                return Ok(None);
            };
            located.push(LocatedBlock {
                id,
                path: path.to_path_buf(),
                device,
                inode,
                batches: batches.clone(),
            });
        }
        Ok(Some(located))
    }

    /// Whether the block is held here.
    pub fn contains(&self, id: ShuffleBlockId) -> bool {
        self.lock()
            .get(&(id.stage, id.map))
            .is_some_and(|o| o.blocks.contains_key(&id.reduce))
    }

    /// Drops every map output of these stages (their job is over).
    pub fn remove_stages(&self, stages: &[StageId]) {
        let mut outputs = self.lock();
        let gone: Vec<_> = outputs
            .keys()
            .filter(|(stage, _)| stages.contains(stage))
            .copied()
            .collect();
        let removed: Vec<_> = gone.iter().filter_map(|k| outputs.remove(k)).collect();
        drop(outputs);
        drop(removed);
    }

    /// Drops map task `map` of `stage`'s output.
    pub fn remove_map(&self, stage: StageId, map: usize) {
        let removed = self.lock().remove(&(stage, map));
        drop(removed);
    }

    /// How many blocks are held.
    pub fn len(&self) -> usize {
        self.lock().values().map(|o| o.blocks.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How much memory and disk the held map outputs take.
    pub fn usage(&self) -> StoreUsage {
        let outputs = self.lock();
        StoreUsage {
            map_outputs: outputs.len(),
            memory_bytes: outputs
                .values()
                .filter_map(|o| o.reservation.as_ref())
                .map(MemoryReservation::size)
                .sum(),
            disk_bytes: outputs.values().map(|o| o.bytes_on_disk).sum(),
        }
    }
}

/// The shuffle service a task finds in its `TaskContext` (as a session
/// config extension), so that plans never hold a store themselves.
#[derive(Debug, Clone)]
pub struct ShuffleEnv {
    /// The blocks this executor's map tasks wrote.
    pub store: Arc<BlockStore>,
    /// This executor's location key, as it appears in `MapOutputLocations`.
    pub local: String,
    /// How to reach blocks other executors hold; `None` in local mode, where
    /// every block is in `store`.
    pub fetcher: Option<Arc<dyn BlockFetcher>>,
    /// What map output kept in memory may take (local mode); `None`: it
    /// always goes to disk.
    pub memory: Option<Arc<dyn MemoryPool>>,
    /// Whether map output files are LZ4-compressed.
    pub compress: bool,
}

impl ShuffleEnv {
    /// Local mode: every block is read from `store`, and map output stays
    /// in memory (without limit unless [`Self::with_memory`] sets one).
    pub fn new(store: Arc<BlockStore>) -> Self {
        Self {
            store,
            local: String::new(),
            fetcher: None,
            memory: Some(Arc::new(UnboundedMemoryPool::default())),
            compress: true,
        }
    }

    /// Map output stays in memory while `memory` allows, or (`None`)
    /// always goes to disk.
    pub fn with_memory(self, memory: Option<Arc<dyn MemoryPool>>) -> Self {
        Self { memory, ..self }
    }

    /// Map output kept within `executor`'s shuffle memory, and written to
    /// disk as it says.
    pub fn with_storage(self, executor: &crate::memory::ExecutorMemory) -> Self {
        Self {
            memory: executor.shuffle_pool(),
            compress: executor.compress_shuffle(),
            ..self
        }
    }

    /// An executor among others: blocks whose map task ran on `local` are
    /// read from `store`, the rest through `fetcher`; map output is
    /// written to disk.
    pub fn remote(
        store: Arc<BlockStore>,
        local: impl Into<String>,
        fetcher: Arc<dyn BlockFetcher>,
    ) -> Self {
        Self {
            store,
            local: local.into(),
            fetcher: Some(fetcher),
            memory: None,
            compress: true,
        }
    }
}
