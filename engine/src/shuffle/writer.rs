//! The root of a map stage: runs one input partition, splits its rows by the
//! shuffle's partitioning and stores one block per reduce partition.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics;
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;

use super::output::MapOutputWriter;
use super::store::ShuffleEnv;
use crate::error::EngineError;
use crate::stages::StageId;

/// How a map task's rows are assigned to reduce partitions.
#[derive(Debug, Clone)]
pub enum ShuffleOutput {
    /// Rows are split by this partitioning (a hash or round-robin exchange).
    Repartition(Partitioning),
    /// Map partition `i` becomes reduce partition `i` unchanged (the input of
    /// a merge that needs all partitions in one task).
    Passthrough,
}

/// What a map task wrote: rows and bytes (Arrow batches in memory) per
/// reduce partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapStatus {
    pub rows_per_reduce: Vec<(usize, u64)>,
    pub bytes_per_reduce: Vec<(usize, u64)>,
}

impl MapStatus {
    pub fn rows(&self) -> u64 {
        self.rows_per_reduce.iter().map(|(_, r)| r).sum()
    }

    /// Reads the status batches a `ShuffleWriterExec` partition returns.
    pub fn from_batches(batches: &[RecordBatch]) -> Self {
        let mut status = Self::default();
        for batch in batches {
            let (Some(reduce), Some(rows), Some(bytes)) = (
                batch.column(0).as_any().downcast_ref::<UInt32Array>(),
                batch.column(1).as_any().downcast_ref::<UInt64Array>(),
                batch
                    .columns()
                    .get(2)
                    .and_then(|c| c.as_any().downcast_ref::<UInt64Array>()),
            ) else {
                continue;
            };
            for i in 0..batch.num_rows() {
                let r = reduce.value(i) as usize;
                status.rows_per_reduce.push((r, rows.value(i)));
                status.bytes_per_reduce.push((r, bytes.value(i)));
            }
        }
        status
    }
}

#[derive(Debug)]
pub struct ShuffleWriterExec {
    input: Arc<dyn ExecutionPlan>,
    stage: StageId,
    output: ShuffleOutput,
    cache: Arc<PlanProperties>,
}

impl ShuffleWriterExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, stage: StageId, output: ShuffleOutput) -> Self {
        let schema = Self::status_schema();
        let cache = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Self {
            input,
            stage,
            output,
            cache: Arc::new(cache),
        }
    }

    pub fn stage(&self) -> StageId {
        self.stage
    }

    pub fn output(&self) -> &ShuffleOutput {
        &self.output
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// Number of reduce partitions this shuffle produces.
    pub fn reduce_partitions(&self) -> usize {
        match &self.output {
            ShuffleOutput::Repartition(p) => p.partition_count(),
            ShuffleOutput::Passthrough => self.input.output_partitioning().partition_count(),
        }
    }

    fn status_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("reduce_partition", DataType::UInt32, false),
            Field::new("rows", DataType::UInt64, false),
            Field::new("bytes", DataType::UInt64, false),
        ]))
    }
}

impl DisplayAs for ShuffleWriterExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => match &self.output {
                ShuffleOutput::Repartition(p) => {
                    write!(
                        f,
                        "ShuffleWriterExec: stage={}, partitioning={p}",
                        self.stage
                    )
                }
                ShuffleOutput::Passthrough => write!(
                    f,
                    "ShuffleWriterExec: stage={}, partitioning=passthrough({})",
                    self.stage,
                    self.reduce_partitions()
                ),
            },
            DisplayFormatType::TreeRender => write!(f, "stage={}", self.stage),
        }
    }
}

impl ExecutionPlan for ShuffleWriterExec {
    fn name(&self) -> &str {
        "ShuffleWriterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        if let ShuffleOutput::Repartition(Partitioning::Hash(exprs, _)) = &self.output {
            for e in exprs {
                if f(e)? == TreeNodeRecursion::Stop {
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .ok_or_else(|| DataFusionError::Internal("ShuffleWriterExec needs one child".into()))?;
        Ok(Arc::new(Self::new(input, self.stage, self.output.clone())))
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
        let mut input = self.input.execute(partition, Arc::clone(&context))?;
        let stage = self.stage;
        let reduce_partitions = self.reduce_partitions();
        let mut partitioner = match &self.output {
            ShuffleOutput::Repartition(p) => Some(BatchPartitioner::try_new(
                p.clone(),
                metrics::Time::new(),
                partition,
                self.input.output_partitioning().partition_count(),
            )?),
            ShuffleOutput::Passthrough => None,
        };
        let schema = Self::status_schema();
        let status_schema = Arc::clone(&schema);
        let input_schema = self.input.schema();
        // Splitting a batch leaves pieces of batch_size / partitions rows;
        // they are joined again, so readers (and fetches over the network)
        // handle a few full batches instead of many small ones.
        let target_rows = context.session_config().batch_size().max(1);
        let runtime = context.runtime_env();
        let write = async move {
            let mut output = MapOutputWriter::new(
                &input_schema,
                target_rows,
                env.memory.clone(),
                env.compress,
                &runtime,
                format!("shuffle map output {stage}.{partition}"),
            );
            // Every reduce partition gets a block, empty or not, so readers
            // can tell "no rows" from "lost"; passthrough has just its own.
            match partitioner {
                Some(_) => (0..reduce_partitions).for_each(|r| output.open(r)),
                None => output.open_passthrough(partition),
            }
            while let Some(batch) = input.next().await {
                let batch = batch?;
                if batch.num_rows() == 0 {
                    continue;
                }
                match partitioner.as_mut() {
                    Some(p) => p.partition(batch, |reduce, part| output.push(reduce, part))?,
                    None => output.push(partition, batch)?,
                }
            }
            let (written, map_output) = output.finish()?;
            env.store.put_map(stage, partition, map_output);
            let columns: Vec<ArrayRef> = vec![
                Arc::new(UInt32Array::from_iter_values(
                    written.iter().map(|w| w.reduce as u32),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    written.iter().map(|w| w.rows),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    written.iter().map(|w| w.bytes),
                )),
            ];
            Ok(RecordBatch::try_new(status_schema, columns)?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(write),
        )))
    }
}
