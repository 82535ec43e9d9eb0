//! The leaf of a stage that consumes a shuffle: reduce partition `r` is the
//! concatenation of block `r` of every map task of the parent stage, read
//! from this executor's store or fetched from the executor that wrote it.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};

use super::fetch::{BlockFetcher, BlockRead, FetchedBatches, MapOutputLocations, plan_block_reads};
use super::store::{BlockStore, ShuffleBlockId, ShuffleEnv, read_blocks};
use crate::error::EngineError;
use crate::stages::StageId;

/// How many reads of one reduce partition may be under way at once; results
/// are still yielded in map order.
const READS_IN_FLIGHT: usize = 8;

/// Which map blocks a reduce partition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Reduce partition `r` reads block `r` of every map task.
    AllMaps,
    /// Reduce partition `r` reads only map task `r`'s block (passthrough).
    SameIndex,
}

#[derive(Debug)]
pub struct ShuffleReaderExec {
    stage: StageId,
    map_partitions: usize,
    mode: ReadMode,
    /// Coalesced after the map stage ran: partition `i` reads the reduce
    /// partitions `ranges[i].0..ranges[i].1`; `None`: partition `i` reads
    /// reduce partition `i`.
    ranges: Option<Arc<[(usize, usize)]>>,
    cache: Arc<PlanProperties>,
}

impl ShuffleReaderExec {
    /// A reader of `stage`'s output, which has `map_partitions` map tasks.
    /// `partitioning` and `eq_properties` describe the rows as the exchange it
    /// replaces promised them to the operators above.
    pub fn new(
        stage: StageId,
        map_partitions: usize,
        mode: ReadMode,
        partitioning: Partitioning,
        eq_properties: EquivalenceProperties,
    ) -> Self {
        let cache = PlanProperties::new(
            eq_properties,
            partitioning,
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            stage,
            map_partitions,
            mode,
            ranges: None,
            cache: Arc::new(cache),
        }
    }

    /// This reader once its parent stage ran as `map_partitions` tasks and
    /// (with `ranges`) its small reduce partitions were joined: partition
    /// `i` then reads reduce partitions `ranges[i].0..ranges[i].1`. Rows
    /// of one key stay in one partition, so a hash partitioning stays
    /// one, over fewer partitions.
    pub fn adapted(&self, map_partitions: usize, ranges: Option<Arc<[(usize, usize)]>>) -> Self {
        let partitions = ranges.as_ref().map(|r| r.len());
        self.with_partitions(map_partitions, partitions, ranges)
    }

    /// A passthrough read once its parent stage ran as `map_partitions`
    /// tasks: it has a partition per map task.
    pub fn adapted_passthrough(&self, map_partitions: usize) -> Self {
        self.with_partitions(map_partitions, Some(map_partitions), None)
    }

    fn with_partitions(
        &self,
        map_partitions: usize,
        partitions: Option<usize>,
        ranges: Option<Arc<[(usize, usize)]>>,
    ) -> Self {
        let mut properties = self.cache.as_ref().clone();
        if let Some(count) = partitions {
            properties.partitioning = match &properties.partitioning {
                Partitioning::Hash(exprs, _) => Partitioning::Hash(exprs.clone(), count),
                _ => Partitioning::UnknownPartitioning(count),
            };
        }
        Self {
            stage: self.stage,
            map_partitions,
            mode: self.mode,
            ranges,
            cache: Arc::new(properties),
        }
    }

    /// The reduce partitions each partition reads, when coalesced.
    pub fn ranges(&self) -> Option<&[(usize, usize)]> {
        self.ranges.as_deref()
    }

    pub fn stage(&self) -> StageId {
        self.stage
    }

    /// How many map tasks the parent stage has.
    pub fn map_partitions(&self) -> usize {
        self.map_partitions
    }

    pub fn mode(&self) -> ReadMode {
        self.mode
    }

    pub fn schema_ref(&self) -> SchemaRef {
        self.cache.eq_properties.schema().clone()
    }

    fn blocks(&self, partition: usize) -> Vec<ShuffleBlockId> {
        if let Some(&(start, end)) = self.ranges.as_ref().and_then(|r| r.get(partition)) {
            // Map by map, so the blocks one executor holds are one fetch.
            return (0..self.map_partitions)
                .flat_map(|map| {
                    (start..end).map(move |reduce| ShuffleBlockId {
                        stage: self.stage,
                        map,
                        reduce,
                    })
                })
                .collect();
        }
        let reduce = partition;
        let maps = match self.mode {
            ReadMode::AllMaps => 0..self.map_partitions,
            ReadMode::SameIndex => reduce..reduce + 1,
        };
        maps.map(|map| ShuffleBlockId {
            stage: self.stage,
            map,
            reduce,
        })
        .collect()
    }
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(
                    f,
                    "ShuffleReaderExec: stage={}, partitions={}",
                    self.stage,
                    self.cache.partitioning.partition_count()
                )?;
                match self.ranges.as_deref() {
                    Some(ranges) => {
                        write!(f, " (coalesced from {})", ranges.last().map_or(0, |r| r.1))
                    }
                    None => Ok(()),
                }
            }
            DisplayFormatType::TreeRender => write!(f, "stage={}", self.stage),
        }
    }
}

impl ExecutionPlan for ShuffleReaderExec {
    fn name(&self) -> &str {
        "ShuffleReaderExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let env = context
            .session_config()
            .get_extension::<ShuffleEnv>()
            .ok_or(EngineError::NoShuffleEnv)?;
        let blocks = self.blocks(partition);
        let Some(fetcher) = &env.fetcher else {
            return self.read_local(&env, blocks);
        };
        let locations = context
            .session_config()
            .get_extension::<MapOutputLocations>();
        let Some(maps) = locations.as_deref().and_then(|l| l.stage(self.stage)) else {
            return self.read_local(&env, blocks);
        };
        let reads = plan_block_reads(blocks, maps, &env.local)?;
        if let [BlockRead::Local(blocks)] = reads.as_slice() {
            return self.read_local(&env, blocks.clone());
        }
        let store = Arc::clone(&env.store);
        let fetcher = Arc::clone(fetcher);
        let local = env.local.clone();
        let batches = futures::stream::iter(reads)
            .map(move |read| start_read(read, &store, fetcher.as_ref(), &local))
            .buffered(READS_IN_FLIGHT)
            .try_flatten()
            .map_err(datafusion::error::DataFusionError::from);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema_ref(),
            batches,
        )))
    }
}

impl ShuffleReaderExec {
    /// Every block from this executor's store, as in local mode.
    fn read_local(
        &self,
        env: &ShuffleEnv,
        blocks: Vec<ShuffleBlockId>,
    ) -> Result<SendableRecordBatchStream> {
        let batches = local_reads(Arc::clone(&env.store), blocks, env.local.clone())
            .map_err(datafusion::error::DataFusionError::from);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema_ref(),
            batches,
        )))
    }
}

/// Blocks of this executor's store; one that cannot be read is a fetch
/// failure of its map task, so the driver computes it again.
fn local_reads(
    store: Arc<BlockStore>,
    blocks: Vec<ShuffleBlockId>,
    location: String,
) -> FetchedBatches {
    read_blocks(store, blocks)
        .map_err(move |(id, e)| EngineError::FetchFailed {
            stage: id.stage,
            maps: vec![id.map],
            location: location.clone(),
            why: e.to_string(),
        })
        .boxed()
}

/// Starts one read: the future ends when its batches can be streamed (a
/// remote executor has started sending), so the next reads start while
/// this one is consumed.
fn start_read(
    read: BlockRead,
    store: &Arc<BlockStore>,
    fetcher: &dyn BlockFetcher,
    local: &str,
) -> BoxFuture<'static, Result<FetchedBatches, EngineError>> {
    match read {
        BlockRead::Local(blocks) => {
            let read = local_reads(Arc::clone(store), blocks, local.to_string());
            futures::future::ready(Ok(read)).boxed()
        }
        BlockRead::Remote { location, blocks } => {
            let stage = blocks.first().map(|b| b.stage).unwrap_or_default();
            let maps: Vec<usize> = blocks.iter().map(|b| b.map).collect();
            // Whatever broke (the executor is gone, a block is missing or
            // damaged, the stream was cut short), the output of these map
            // tasks cannot be read.
            let opened = fetcher.fetch(&location, blocks);
            let failed = move |e: EngineError| EngineError::FetchFailed {
                stage,
                maps: maps.clone(),
                location: location.clone(),
                why: e.to_string(),
            };
            async move {
                match opened.await {
                    Ok(batches) => Ok(batches.map_err(failed).boxed()),
                    Err(e) => Err(failed(e)),
                }
            }
            .boxed()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::physical_plan::common::collect;
    use datafusion::prelude::SessionConfig;

    use super::*;

    fn read_all(
        store: &BlockStore,
        blocks: Vec<ShuffleBlockId>,
    ) -> Result<Vec<RecordBatch>, EngineError> {
        let mut batches = Vec::new();
        for id in blocks {
            for batch in store.get(id)? {
                batches.push(batch?);
            }
        }
        Ok(batches)
    }

    const STAGE: StageId = 5;
    const MAPS: usize = 4;

    /// Serves blocks from another executor's store and records each call.
    #[derive(Debug, Default)]
    struct FakeFetcher {
        remote: BlockStore,
        calls: Mutex<Vec<(String, Vec<ShuffleBlockId>)>>,
        fail: bool,
        cut_short: bool,
    }

    impl BlockFetcher for FakeFetcher {
        fn fetch(
            &self,
            location: &str,
            blocks: Vec<ShuffleBlockId>,
        ) -> BoxFuture<'static, Result<FetchedBatches, EngineError>> {
            self.calls
                .lock()
                .unwrap()
                .push((location.to_string(), blocks.clone()));
            let result = if self.fail {
                Err(EngineError::Fetch(format!(
                    "executor {location} is unreachable"
                )))
            } else {
                read_all(&self.remote, blocks)
            };
            let cut_short = self.cut_short;
            async move {
                tokio::task::yield_now().await;
                let batches = result?;
                let mut items: Vec<Result<RecordBatch, EngineError>> =
                    batches.into_iter().map(Ok).collect();
                if cut_short {
                    // The first batch arrives, then the connection breaks.
                    items.truncate(1);
                    items.push(Err(EngineError::Fetch("the stream was cut short".into())));
                }
                Ok(futures::stream::iter(items).boxed())
            }
            .boxed()
        }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]))
    }

    /// Block (map, reduce) holds the values 100 * map + 10 * reduce + {0, 1}.
    fn block(map: usize, reduce: usize) -> (ShuffleBlockId, Vec<RecordBatch>) {
        let base = (100 * map + 10 * reduce) as i64;
        let batch = RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from(vec![base, base + 1]))],
        )
        .unwrap();
        let id = ShuffleBlockId {
            stage: STAGE,
            map,
            reduce,
        };
        (id, vec![batch])
    }

    fn id(map: usize, reduce: usize) -> ShuffleBlockId {
        block(map, reduce).0
    }

    fn reader() -> ShuffleReaderExec {
        ShuffleReaderExec::new(
            STAGE,
            MAPS,
            ReadMode::AllMaps,
            Partitioning::UnknownPartitioning(2),
            EquivalenceProperties::new(schema()),
        )
    }

    /// Maps 0 and 3 ran here ("exec-a"), maps 1 and 2 on "exec-b".
    fn cluster(fail: bool) -> (Arc<BlockStore>, Arc<FakeFetcher>, Vec<String>) {
        let local = Arc::new(BlockStore::default());
        let fetcher = Arc::new(FakeFetcher {
            fail,
            ..Default::default()
        });
        let locations = ["exec-a", "exec-b", "exec-b", "exec-a"];
        for (map, at) in locations.iter().enumerate() {
            for reduce in 0..2 {
                let (id, batches) = block(map, reduce);
                match *at {
                    "exec-a" => local.put(id, batches),
                    _ => fetcher.remote.put(id, batches),
                }
            }
        }
        let locations = locations.iter().map(|l| l.to_string()).collect();
        (local, fetcher, locations)
    }

    fn task(env: ShuffleEnv, locations: MapOutputLocations) -> Arc<TaskContext> {
        let config = SessionConfig::new()
            .with_extension(Arc::new(env))
            .with_extension(Arc::new(locations));
        Arc::new(TaskContext::default().with_session_config(config))
    }

    async fn values(stream: SendableRecordBatchStream) -> Result<Vec<i64>> {
        let batches = collect(stream).await?;
        Ok(batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect())
    }

    #[tokio::test]
    async fn remote_blocks_are_fetched_in_map_order_and_local_ones_read_here() {
        let (local, fetcher, locations) = cluster(false);
        let env = ShuffleEnv::remote(local, "exec-a", fetcher.clone());
        let task = task(env, MapOutputLocations::new().with_stage(STAGE, locations));
        let rows = values(reader().execute(1, task).unwrap()).await.unwrap();
        assert_eq!(rows, vec![10, 11, 110, 111, 210, 211, 310, 311]);
        assert_eq!(
            *fetcher.calls.lock().unwrap(),
            vec![("exec-b".to_string(), vec![id(1, 1), id(2, 1)])]
        );
    }

    #[tokio::test]
    async fn without_locations_for_the_stage_every_block_is_local() {
        let local = Arc::new(BlockStore::default());
        for map in 0..MAPS {
            let (id, batches) = block(map, 0);
            local.put(id, batches);
        }
        let fetcher = Arc::new(FakeFetcher::default());
        let env = ShuffleEnv::remote(local, "exec-a", fetcher.clone());
        let other_stage = MapOutputLocations::new().with_stage(STAGE + 1, vec!["exec-b".into()]);
        let rows = values(reader().execute(0, task(env, other_stage)).unwrap())
            .await
            .unwrap();
        assert_eq!(rows, vec![0, 1, 100, 101, 200, 201, 300, 301]);
        assert!(fetcher.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failed_fetch_fails_the_task() {
        let (local, fetcher, locations) = cluster(true);
        let env = ShuffleEnv::remote(local, "exec-a", fetcher);
        let task = task(env, MapOutputLocations::new().with_stage(STAGE, locations));
        let err = values(reader().execute(0, task).unwrap())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("executor exec-b is unreachable"),
            "{err}"
        );
        // The driver learns which map output to compute again.
        let (stage, maps, location) = EngineError::find_fetch_failure(&err).unwrap();
        assert_eq!((stage, location.as_str()), (STAGE, "exec-b"));
        assert!(
            !maps.is_empty() && maps.iter().all(|m| [1, 2].contains(m)),
            "{maps:?}"
        );
    }

    #[tokio::test]
    async fn a_fetch_cut_short_fails_the_task_after_the_rows_that_came() {
        let (local, _, locations) = cluster(false);
        let fetcher = Arc::new(FakeFetcher {
            cut_short: true,
            ..Default::default()
        });
        for (map, at) in locations.iter().enumerate() {
            if at == "exec-b" {
                for reduce in 0..2 {
                    let (id, batches) = block(map, reduce);
                    fetcher.remote.put(id, batches);
                }
            }
        }
        let env = ShuffleEnv::remote(local, "exec-a", fetcher);
        let task = task(env, MapOutputLocations::new().with_stage(STAGE, locations));
        let err = values(reader().execute(1, task).unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
        let (stage, maps, location) = EngineError::find_fetch_failure(&err).unwrap();
        assert_eq!(
            (stage, maps, location.as_str()),
            (STAGE, vec![1, 2], "exec-b")
        );
    }

    #[tokio::test]
    async fn a_block_missing_from_the_local_store_is_a_fetch_failure() {
        let (local, fetcher, locations) = cluster(false);
        local.remove_map(STAGE, 0);
        let env = ShuffleEnv::remote(local, "exec-a", fetcher);
        let task = task(env, MapOutputLocations::new().with_stage(STAGE, locations));
        let err = values(reader().execute(0, task).unwrap())
            .await
            .unwrap_err();
        let (stage, maps, location) = EngineError::find_fetch_failure(&err).unwrap();
        assert_eq!((stage, maps, location.as_str()), (STAGE, vec![0], "exec-a"));
    }

    #[tokio::test]
    async fn a_map_task_with_no_known_location_is_a_clear_error() {
        let (local, fetcher, mut locations) = cluster(false);
        locations.truncate(2);
        let env = ShuffleEnv::remote(local, "exec-a", fetcher);
        let task = task(env, MapOutputLocations::new().with_stage(STAGE, locations));
        let err = reader().execute(0, task).err().unwrap();
        assert!(
            err.to_string().contains("output of map task 2 of stage 5"),
            "{err}"
        );
    }
}
