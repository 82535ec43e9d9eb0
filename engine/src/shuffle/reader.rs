//! The leaf of a stage that consumes a shuffle: reduce partition `r` is the
//! concatenation of block `r` of every map task of the parent stage.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};

use super::store::{ShuffleBlockId, ShuffleEnv};
use crate::error::EngineError;
use crate::stages::StageId;

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
            cache: Arc::new(cache),
        }
    }

    pub fn stage(&self) -> StageId {
        self.stage
    }

    pub fn schema_ref(&self) -> SchemaRef {
        self.cache.eq_properties.schema().clone()
    }

    fn blocks(&self, reduce: usize) -> Vec<ShuffleBlockId> {
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
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "ShuffleReaderExec: stage={}, partitions={}",
                self.stage,
                self.cache.partitioning.partition_count()
            ),
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
        let mut batches = Vec::new();
        for id in self.blocks(partition) {
            batches.extend(env.store.get(id)?);
        }
        Ok(Box::pin(MemoryStream::try_new(
            batches,
            self.schema_ref(),
            None,
        )?))
    }
}
