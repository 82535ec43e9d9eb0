//! Writing one map task's output: rows are joined into full batches per
//! reduce partition, then kept in memory while the memory budget allows
//! (local mode) or written through to one Arrow IPC file (LZ4-compressed
//! unless `ember.shuffle.compress` is off) in the executor's spill
//! directory, counted against its disk quota.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::CompressionType;
use datafusion::arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SpillFile, SpillWriter};

use super::compact::compact_views;
use super::store::{MapOutput, MapOutputFile, Span};
use crate::error::EngineError;

struct DiskOutput {
    file: Arc<dyn SpillFile>,
    writer: FileWriter<Counted<BufWriter<Box<dyn SpillWriter>>>>,
    written: usize,
    /// Where each batch's IPC message lies in the file.
    spans: Vec<Span>,
}

/// Counts the bytes written through it: where each batch's message lies.
struct Counted<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Full batches kept in memory, per reduce partition, and the memory
/// budget they hold.
struct HeldInMemory {
    blocks: BTreeMap<usize, Vec<RecordBatch>>,
    reservation: MemoryReservation,
}

/// What one reduce partition of a map output got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReduceWritten {
    pub reduce: usize,
    pub rows: u64,
    /// Its batches' size in memory (Spark's map statuses count bytes too).
    pub bytes: u64,
}

/// One map task's output as it is written.
pub(crate) struct MapOutputWriter {
    schema: SchemaRef,
    target_rows: usize,
    description: String,
    runtime: Arc<RuntimeEnv>,
    compress: bool,
    /// Per reduce partition: its coalescer (`None`: batches kept as they
    /// come) and its rows.
    open: BTreeMap<usize, (Option<BatchCoalescer>, u64)>,
    /// Full batches kept in memory; `None` once the output went to disk.
    memory: Option<HeldInMemory>,
    disk: Option<DiskOutput>,
    /// Per reduce partition, its batches' positions in the file.
    index: BTreeMap<usize, Vec<usize>>,
    /// Per reduce partition, the bytes of the full batches it got.
    bytes: BTreeMap<usize, u64>,
}

impl MapOutputWriter {
    pub(crate) fn new(
        schema: &SchemaRef,
        target_rows: usize,
        memory: Option<Arc<dyn MemoryPool>>,
        compress: bool,
        runtime: &Arc<RuntimeEnv>,
        description: String,
    ) -> Self {
        let memory = memory.map(|pool| HeldInMemory {
            blocks: BTreeMap::new(),
            reservation: MemoryConsumer::new(format!("ShuffleBlocks[{description}]"))
                .register(&pool),
        });
        Self {
            schema: Arc::clone(schema),
            target_rows,
            description,
            runtime: Arc::clone(runtime),
            compress,
            open: BTreeMap::new(),
            memory,
            disk: None,
            index: BTreeMap::new(),
            bytes: BTreeMap::new(),
        }
    }

    /// Opens reduce partition `reduce`, whose small pieces are joined into
    /// batches of about the target size.
    pub(crate) fn open(&mut self, reduce: usize) {
        // Batches of no columns carry only a row count, which is theirs.
        let coalescer = (!self.schema.fields().is_empty())
            .then(|| BatchCoalescer::new(Arc::clone(&self.schema), self.target_rows));
        self.open.insert(reduce, (coalescer, 0));
    }

    /// Opens reduce partition `reduce`, whose batches are kept as they come.
    pub(crate) fn open_passthrough(&mut self, reduce: usize) {
        self.open.insert(reduce, (None, 0));
    }

    pub(crate) fn push(&mut self, reduce: usize, batch: RecordBatch) -> Result<()> {
        let Some((coalescer, rows)) = self.open.get_mut(&reduce) else {
            return Ok(());
        };
        *rows += batch.num_rows() as u64;
        let Some(coalescer) = coalescer else {
            return self.emit(reduce, batch);
        };
        coalescer.push_batch(batch)?;
        let mut full = Vec::new();
        while let Some(batch) = coalescer.next_completed_batch() {
            full.push(batch);
        }
        for batch in full {
            self.emit(reduce, batch)?;
        }
        Ok(())
    }

    /// Rows and bytes (as Arrow batches in memory) per reduce partition,
    /// and the output to register.
    pub(crate) fn finish(mut self) -> Result<(Vec<ReduceWritten>, MapOutput)> {
        let mut last = Vec::new();
        let mut reduces = Vec::new();
        for (reduce, (coalescer, count)) in &mut self.open {
            reduces.push(ReduceWritten {
                reduce: *reduce,
                rows: *count,
                bytes: 0,
            });
            if let Some(coalescer) = coalescer {
                coalescer.finish_buffered_batch()?;
                while let Some(batch) = coalescer.next_completed_batch() {
                    last.push((*reduce, batch));
                }
            }
        }
        for (reduce, batch) in last {
            self.emit(reduce, batch)?;
        }
        for written in &mut reduces {
            written.bytes = self.bytes.get(&written.reduce).copied().unwrap_or(0);
        }
        let rows = reduces;
        let reduces: Vec<usize> = self.open.keys().copied().collect();
        if let Some(HeldInMemory {
            mut blocks,
            reservation,
        }) = self.memory.take()
        {
            for reduce in reduces {
                blocks.entry(reduce).or_default();
            }
            return Ok((rows, MapOutput::in_memory(blocks, reservation)));
        }
        let mut index = std::mem::take(&mut self.index);
        for reduce in reduces {
            index.entry(reduce).or_default();
        }
        let disk = match self.disk.take() {
            Some(disk) => disk,
            None => self.create_file()?,
        };
        let DiskOutput {
            file,
            mut writer,
            spans,
            ..
        } = disk;
        let description = self.description.clone();
        let failed = |why: String| write_failed(&description, &file, why);
        writer.finish().map_err(|e| failed(e.to_string()))?;
        let mut inner = writer
            .into_inner()
            .map_err(|e| failed(e.to_string()))?
            .inner;
        inner.flush().map_err(|e| failed(e.to_string()))?;
        let mut spill = inner
            .into_inner()
            .map_err(|e| failed(e.error().to_string()))?;
        spill.finish().map_err(|e| failed(e.to_string()))?;
        drop(spill);
        let identity = MapOutputFile::identity_of(file.path());
        let file = MapOutputFile {
            file,
            schema: Arc::clone(&self.schema),
            spans,
            identity,
        };
        Ok((rows, MapOutput::on_disk(file, index)))
    }

    fn emit(&mut self, reduce: usize, batch: RecordBatch) -> Result<()> {
        // Held or written, a batch should be the size of its rows.
        let batch = compact_views(batch);
        *self.bytes.entry(reduce).or_default() += batch.get_array_memory_size() as u64;
        if let Some(held) = &mut self.memory {
            let bytes = batch.get_array_memory_size();
            if held.reservation.try_grow(bytes).is_ok() {
                held.blocks.entry(reduce).or_default().push(batch);
                return Ok(());
            }
            // Over budget: everything held so far goes to disk, in order,
            // and so does the rest of this output.
            tracing::debug!(
                output = %self.description,
                held = held.reservation.size(),
                batch = bytes,
                "shuffle memory is full; this map output goes to disk"
            );
            let held = std::mem::take(&mut held.blocks);
            self.memory = None;
            for (r, batches) in held {
                for b in batches {
                    self.write(r, &b)?;
                }
            }
        }
        self.write(reduce, &batch)
    }

    fn write(&mut self, reduce: usize, batch: &RecordBatch) -> Result<()> {
        if self.disk.is_none() {
            self.disk = Some(self.create_file()?);
        }
        let Some(disk) = self.disk.as_mut() else {
            return Ok(());
        };
        let start = disk.writer.get_ref().written;
        if let Err(e) = disk.writer.write(batch) {
            return Err(write_failed(&self.description, &disk.file, e.to_string()));
        }
        let end = disk.writer.get_ref().written;
        disk.spans.push(Span {
            offset: start,
            len: end - start,
            rows: batch.num_rows() as u64,
        });
        self.index.entry(reduce).or_default().push(disk.written);
        disk.written += 1;
        Ok(())
    }

    fn create_file(&self) -> Result<DiskOutput> {
        let file = self
            .runtime
            .disk_manager
            .create_tmp_file(&self.description)?;
        let sink = file.open_writer()?;
        let codec = self.compress.then_some(CompressionType::LZ4_FRAME);
        let options = IpcWriteOptions::default().try_with_compression(codec)?;
        let sink = Counted {
            inner: BufWriter::new(sink),
            written: 0,
        };
        let writer = FileWriter::try_new_with_options(sink, &self.schema, options)
            .map_err(|e| write_failed(&self.description, &file, e.to_string()))?;
        Ok(DiskOutput {
            file,
            writer,
            written: 0,
            spans: Vec::new(),
        })
    }
}

fn write_failed(description: &str, file: &Arc<dyn SpillFile>, why: String) -> DataFusionError {
    let at = file
        .path()
        .and_then(|p| p.parent())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    DataFusionError::External(Box::new(EngineError::ShuffleWrite {
        what: description.to_string(),
        dir: at,
        why,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::TaskContext;
    use datafusion::physical_expr::EquivalenceProperties;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_plan::common::collect;
    use datafusion::physical_plan::{ExecutionPlan, Partitioning};
    use datafusion::prelude::SessionConfig;

    use super::*;
    use crate::memory::MemorySettings;
    use crate::shuffle::{
        BlockStore, ReadMode, ShuffleEnv, ShuffleOutput, ShuffleReaderExec, ShuffleWriterExec,
    };

    const ROWS: i64 = 50_000;
    const REDUCES: usize = 3;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]))
    }

    fn task(env: ShuffleEnv, memory: &MemorySettings) -> Arc<TaskContext> {
        let config = SessionConfig::new()
            .with_batch_size(1_000)
            .with_extension(Arc::new(env));
        Arc::new(
            TaskContext::default()
                .with_session_config(config)
                .with_runtime(memory.runtime_env().unwrap()),
        )
    }

    /// Writes map task 0 of stage 1: the values 0..ROWS hashed over three
    /// reduce partitions.
    async fn write(context: &Arc<TaskContext>) -> Result<()> {
        let batches: Vec<RecordBatch> = (0..ROWS / 1_000)
            .map(|i| {
                let values: Vec<i64> = (i * 1_000..(i + 1) * 1_000).collect();
                RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(values))]).unwrap()
            })
            .collect();
        let input = MemorySourceConfig::try_new_exec(&[batches], schema(), None)?;
        let hash = Partitioning::Hash(vec![col("v", &schema())?], REDUCES);
        let writer = ShuffleWriterExec::new(input, 1, ShuffleOutput::Repartition(hash));
        collect(writer.execute(0, Arc::clone(context))?).await?;
        Ok(())
    }

    async fn read_back(context: &Arc<TaskContext>) -> Vec<i64> {
        let reader = ShuffleReaderExec::new(
            1,
            1,
            ReadMode::AllMaps,
            Partitioning::UnknownPartitioning(REDUCES),
            EquivalenceProperties::new(schema()),
        );
        let mut values = Vec::new();
        for reduce in 0..REDUCES {
            let batches = collect(reader.execute(reduce, Arc::clone(context)).unwrap())
                .await
                .unwrap();
            for b in batches {
                values.extend(b.column(0).as_primitive::<Int64Type>().values().iter());
            }
        }
        values.sort_unstable();
        values
    }

    /// The blocks [`write`] makes.
    fn block_ids() -> Vec<crate::shuffle::ShuffleBlockId> {
        (0..REDUCES)
            .map(|reduce| crate::shuffle::ShuffleBlockId {
                stage: 1,
                map: 0,
                reduce,
            })
            .collect()
    }

    /// Every block as stored, decoded as a receiver of a stream of them
    /// would: the bytes served without decoding are whole IPC messages.
    async fn read_raw(store: &BlockStore) -> Vec<i64> {
        use datafusion::arrow::buffer::Buffer;
        use datafusion::arrow::ipc::reader::StreamDecoder;
        use datafusion::arrow::ipc::writer::StreamWriter;
        use futures::StreamExt;
        let ids = block_ids();
        let raw = store
            .raw(&ids)
            .unwrap()
            .expect("blocks on disk are served raw");
        let mut decoder = StreamDecoder::new();
        let mut head = StreamWriter::try_new(Vec::new(), &raw.schema).unwrap();
        let mut head = Buffer::from(std::mem::take(head.get_mut()));
        assert!(decoder.decode(&mut head).unwrap().is_none());
        let mut values = Vec::new();
        let mut messages = raw.read();
        while let Some(message) = messages.next().await {
            let message = message.unwrap();
            let mut buffer = Buffer::from(message.bytes);
            let batch = decoder.decode(&mut buffer).unwrap().unwrap();
            assert_eq!(batch.num_rows(), message.rows);
            values.extend(batch.column(0).as_primitive::<Int64Type>().values().iter());
        }
        values.sort_unstable();
        values
    }

    fn files_under(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { files_under(&p) } else { 1 })
            .sum()
    }

    fn settings(dir: &Path, limit: usize, max_disk: Option<u64>) -> MemorySettings {
        MemorySettings {
            limit: Some(limit),
            temp_directory: Some(dir.to_path_buf()),
            max_temp_bytes: max_disk,
            raise: "--executor-memory".into(),
            compress_shuffle: true,
        }
    }

    #[tokio::test]
    async fn map_output_on_disk_reads_back_whole_and_is_deleted_with_its_stage() {
        let mut sizes = Vec::new();
        for compress in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(BlockStore::default());
            let env = ShuffleEnv {
                compress,
                ..ShuffleEnv::new(Arc::clone(&store)).with_memory(None)
            };
            let context = task(env, &settings(dir.path(), 64 << 20, None));
            write(&context).await.unwrap();
            let usage = store.usage();
            assert_eq!((usage.map_outputs, usage.memory_bytes), (1, 0));
            assert!(usage.disk_bytes > 0, "{usage:?}");
            sizes.push(usage.disk_bytes);
            assert_eq!(files_under(dir.path()), 1, "one data file per map task");
            assert_eq!(read_back(&context).await, (0..ROWS).collect::<Vec<_>>());
            assert_eq!(read_raw(&store).await, (0..ROWS).collect::<Vec<_>>());
            store.remove_stages(&[1]);
            assert_eq!(files_under(dir.path()), 0, "the file goes with its stage");
            assert_eq!(context.runtime_env().disk_manager.used_disk_space(), 0);
        }
        assert!(sizes[0] < sizes[1], "LZ4 makes the file smaller: {sizes:?}");
    }

    /// Blocks read through their located files, as an executor on the
    /// same host reads another's.
    fn read_located(located: &[crate::shuffle::LocatedBlock]) -> Vec<i64> {
        let mut values = Vec::new();
        for block in located {
            for batch in block.open().unwrap() {
                let batch = batch.unwrap();
                values.extend(batch.column(0).as_primitive::<Int64Type>().values().iter());
            }
        }
        values.sort_unstable();
        values
    }

    #[tokio::test]
    async fn blocks_in_a_file_are_located_for_a_reader_on_the_same_host() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlockStore::default());
        let env = ShuffleEnv::new(Arc::clone(&store)).with_memory(None);
        let context = task(env, &settings(dir.path(), 64 << 20, None));
        write(&context).await.unwrap();
        let ids = block_ids();
        let located = store
            .located(&ids)
            .unwrap()
            .expect("the blocks are in a file");
        assert_eq!(located.len(), REDUCES);
        assert_eq!(read_located(&located), (0..ROWS).collect::<Vec<_>>());

        // Opened before the writer drops its output, a block stays readable.
        let open = located[0].open().unwrap();
        store.remove_stages(&[1]);
        assert_eq!(files_under(dir.path()), 0);
        assert!(open.map(|b| b.unwrap().num_rows()).sum::<usize>() > 0);
        // Once gone, it cannot be opened: the reader fetches it instead.
        let Err(gone) = located[1].open() else {
            panic!("a removed file was opened");
        };
        let gone = gone.to_string();
        assert!(gone.contains("on this host"), "{gone}");

        // Another file at the same path is not taken for the block's.
        write(&context).await.unwrap();
        let again = store.located(&ids).unwrap().unwrap();
        let mut other = again[0].clone();
        other.inode += 1;
        let Err(refused) = other.open() else {
            panic!("another file was taken for the block's");
        };
        let refused = refused.to_string();
        assert!(
            refused.contains("another file is at that path"),
            "{refused}"
        );
        assert!(
            store
                .located(&[crate::shuffle::ShuffleBlockId {
                    stage: 1,
                    map: 9,
                    reduce: 0,
                }])
                .is_err()
        );

        // Blocks held in memory are not in any file.
        let memory_store = Arc::new(BlockStore::default());
        let env = ShuffleEnv::new(Arc::clone(&memory_store));
        let context = task(env, &settings(dir.path(), 64 << 20, None));
        write(&context).await.unwrap();
        assert!(memory_store.located(&ids).unwrap().is_none());
    }

    #[tokio::test]
    async fn local_map_output_stays_in_memory_until_the_budget_is_reached() {
        for (limit, in_memory) in [(256 << 20, true), (256 << 10, false)] {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(BlockStore::default());
            let memory = settings(dir.path(), limit, None).executor(2, true).unwrap();
            let env = ShuffleEnv::new(Arc::clone(&store)).with_storage(&memory);
            let config = SessionConfig::new()
                .with_batch_size(1_000)
                .with_extension(Arc::new(env));
            let context = Arc::new(
                TaskContext::default()
                    .with_session_config(config)
                    .with_runtime(memory.task_runtime().unwrap()),
            );
            write(&context).await.unwrap();
            let usage = store.usage();
            assert_eq!(usage.memory_bytes > 0, in_memory, "{limit}: {usage:?}");
            assert_eq!(usage.disk_bytes > 0, !in_memory, "{limit}: {usage:?}");
            assert_eq!(read_back(&context).await, (0..ROWS).collect::<Vec<_>>());
            assert_eq!(memory.held() > 0, in_memory);
            store.remove_map(1, 0);
            assert_eq!(memory.held(), 0);
        }
    }

    #[tokio::test]
    async fn a_full_disk_quota_fails_the_task_naming_the_setting_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlockStore::default());
        let env = ShuffleEnv::new(Arc::clone(&store)).with_memory(None);
        let context = task(env, &settings(dir.path(), 64 << 20, Some(16 << 10)));
        let err = write(&context).await.unwrap_err().to_string();
        assert!(
            err.contains("datafusion.runtime.max_temp_directory_size"),
            "{err}"
        );
        assert!(err.contains("shuffle map output 1.0"), "{err}");
        assert!(store.is_empty());
        assert_eq!(files_under(dir.path()), 0, "no half-written file is left");
    }
}
