//! The plan node that merges one partition of a batch's groups into the
//! same partition of the state, in the task that reads them.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::common::collect;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::store::{self, Partition};
use super::{Aggregation, OutputMode, merge, state_schema};
use crate::shuffle::ShuffleEnv;

/// What a batch's merge needs to know, the same for every partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeSpec {
    pub aggregation: Aggregation,
    pub mode: OutputMode,
    /// The watermark this batch runs under, in microseconds.
    pub watermark: Option<i64>,
    /// The state's directory (under the checkpoint).
    pub dir: PathBuf,
    /// The batch: the version this merge writes.
    pub batch: u64,
    /// The version it reads; `None` for a query's first batch.
    pub previous: Option<u64>,
    /// The query run (see [`Partition::run`]).
    pub run: u64,
}

/// Reads partition *p* of its input (the batch's groups, hash-partitioned
/// by the state's keys), merges it into version `previous` of state
/// partition *p*, writes version `batch`, and returns the rows the output
/// mode writes.
#[derive(Debug)]
pub struct StateMergeExec {
    input: Arc<dyn ExecutionPlan>,
    spec: MergeSpec,
    properties: Arc<PlanProperties>,
}

impl StateMergeExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, spec: MergeSpec) -> Self {
        let schema = store::nullable(&input.schema());
        let partitions = input.output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            spec,
            properties,
        }
    }

    pub fn spec(&self) -> &MergeSpec {
        &self.spec
    }
}

impl DisplayAs for StateMergeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StateMergeExec: batch={}, mode={:?}, keys=[{}]",
            self.spec.batch,
            self.spec.mode,
            self.spec.aggregation.keys.join(", ")
        )
    }
}

impl ExecutionPlan for StateMergeExec {
    fn name(&self) -> &str {
        "StateMergeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children
            .pop()
            .filter(|_| children.is_empty())
            .ok_or_else(|| DataFusionError::Internal("StateMergeExec needs one child".into()))?;
        Ok(Arc::new(Self::new(input, self.spec.clone())))
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
        let input_schema = self.input.schema();
        let executor = context
            .session_config()
            .get_extension::<ShuffleEnv>()
            .map(|env| env.local.clone())
            .unwrap_or_default();
        let input = self.input.execute(partition, context)?;
        let spec = self.spec.clone();
        let schema = self.schema();
        let out_schema = Arc::clone(&schema);
        let merged = async move {
            let batch = collect(input).await?;
            let at = Partition {
                run: spec.run,
                executor,
                dir: spec.dir.clone(),
                partition,
            };
            merge_partition(&spec, &at, &input_schema, &out_schema, batch).await
        };
        let rows = futures::stream::once(merged)
            .map_ok(|rows| futures::stream::iter(rows.into_iter().map(Ok)))
            .try_flatten()
            .boxed();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rows)))
    }
}

async fn merge_partition(
    spec: &MergeSpec,
    at: &Partition,
    input_schema: &SchemaRef,
    out_schema: &SchemaRef,
    batch: Vec<datafusion::arrow::array::RecordBatch>,
) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
    let kept_schema = store::nullable(&state_schema(&spec.aggregation, input_schema));
    let previous = match spec.previous {
        Some(version) => Some(store::load(at, version, &kept_schema).await?),
        None => None,
    };
    let merged = merge(
        &spec.aggregation,
        spec.mode,
        input_schema,
        previous.as_deref().unwrap_or_default(),
        &batch,
        spec.watermark,
    )
    .await?;
    store::save(
        at,
        spec.batch,
        previous.as_deref(),
        &merged.state,
        &kept_schema,
    )
    .await?;
    store::conform(out_schema, &merged.output)
}
