//! Cuts a DataFusion physical plan into stages at its exchanges, the way Spark
//! cuts a job at shuffle dependencies: every `RepartitionExec` becomes a
//! shuffle, and a merge of many partitions into one (`CoalescePartitionsExec`,
//! `SortPreservingMergeExec`) reads its inputs from the stage below.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, displayable, replace_children_if_necessary,
};

use crate::shuffle::{ReadMode, ShuffleOutput, ShuffleReaderExec, ShuffleWriterExec};

/// Stage ids are unique for the lifetime of one driver.
pub type StageId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// Writes shuffle blocks for a later stage.
    ShuffleMap,
    /// Produces the job's result.
    Result,
}

/// A set of tasks, one per partition of `plan`, that can run once the stages
/// it reads from (`parents`) are complete.
#[derive(Debug, Clone)]
pub struct Stage {
    pub id: StageId,
    pub kind: StageKind,
    pub plan: Arc<dyn ExecutionPlan>,
    pub parents: Vec<StageId>,
}

impl Stage {
    /// One task per partition of the stage's plan.
    pub fn tasks(&self) -> usize {
        self.plan.output_partitioning().partition_count()
    }
}

/// The stages of one job, parents before children; the last one is the
/// result stage.
#[derive(Debug, Clone)]
pub struct StageGraph {
    pub stages: Vec<Stage>,
}

impl StageGraph {
    pub fn result_stage(&self) -> Option<&Stage> {
        self.stages.last()
    }

    pub fn stage(&self, id: StageId) -> Option<&Stage> {
        self.stages.iter().find(|s| s.id == id)
    }

    pub fn schema(&self) -> Option<datafusion::arrow::datatypes::SchemaRef> {
        self.result_stage().map(|s| s.plan.schema())
    }

    pub fn stage_ids(&self) -> Vec<StageId> {
        self.stages.iter().map(|s| s.id).collect()
    }
}

impl fmt::Display for StageGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, stage) in self.stages.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let kind = match stage.kind {
                StageKind::ShuffleMap => "shuffle map",
                StageKind::Result => "result",
            };
            let tasks = stage.tasks();
            let plural = if tasks == 1 { "" } else { "s" };
            let mut header = format!("Stage {} ({kind}, {tasks} task{plural}", stage.id);
            if !stage.parents.is_empty() {
                let parents: Vec<String> = stage.parents.iter().map(|p| p.to_string()).collect();
                let _ = write!(header, ", reads stage {}", parents.join(", "));
            }
            writeln!(f, "{header})")?;
            for line in displayable(stage.plan.as_ref()).indent(false).to_string().lines() {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// Hands out stage ids and cuts plans into stage graphs.
#[derive(Debug, Default)]
pub struct StagePlanner {
    next_stage: StageId,
}

impl StagePlanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cuts `plan` into stages.
    pub fn plan(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<StageGraph> {
        let mut stages = Vec::new();
        let root = self.cut(plan, &mut stages)?;
        let id = self.new_stage_id();
        stages.push(Stage {
            id,
            kind: StageKind::Result,
            parents: parents_of(&root)?,
            plan: root,
        });
        Ok(StageGraph { stages })
    }

    fn new_stage_id(&mut self) -> StageId {
        let id = self.next_stage;
        self.next_stage += 1;
        id
    }

    /// Rewrites `plan` bottom-up, pushing a map stage for every exchange found
    /// and returning the plan with readers in place of those exchanges.
    fn cut(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
        stages: &mut Vec<Stage>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let children = plan
            .children()
            .into_iter()
            .cloned()
            .map(|child| self.cut(child, stages))
            .collect::<Result<Vec<_>>>()?;
        let plan = replace_children_if_necessary(plan, children)?;

        if let Some(exchange) = plan.downcast_ref::<RepartitionExec>() {
            let input = Arc::clone(exchange.input());
            let partitioning = exchange.partitioning().clone();
            let ordering = exchange
                .preserve_order()
                .then(|| input.output_ordering().cloned())
                .flatten();
            let maps = input.output_partitioning().partition_count();
            let stage = self.map_stage(input, ShuffleOutput::Repartition(partitioning.clone()), stages)?;
            let schema = plan.schema();
            let reader: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReaderExec::new(
                stage,
                maps,
                ReadMode::AllMaps,
                partitioning,
                EquivalenceProperties::new(schema),
            ));
            // An order-preserving exchange promised sorted partitions; blocks
            // from many map tasks are not, so sort them again.
            return Ok(match ordering {
                Some(ordering) => Arc::new(
                    SortExec::new(LexOrdering::from(ordering), reader)
                        .with_preserve_partitioning(true),
                ),
                None => reader,
            });
        }

        let is_merge = plan.downcast_ref::<CoalescePartitionsExec>().is_some()
            || plan.downcast_ref::<SortPreservingMergeExec>().is_some();
        if is_merge {
            let Some(input) = plan.children().first().map(|c| Arc::clone(*c)) else {
                return Ok(plan);
            };
            let maps = input.output_partitioning().partition_count();
            if maps <= 1 {
                return Ok(plan);
            }
            let partitioning = input.output_partitioning().clone();
            let eq_properties = input.equivalence_properties().clone();
            let stage = self.map_stage(input, ShuffleOutput::Passthrough, stages)?;
            let reader: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReaderExec::new(
                stage,
                maps,
                ReadMode::SameIndex,
                partitioning,
                eq_properties,
            ));
            return replace_children_if_necessary(plan, vec![reader]);
        }
        Ok(plan)
    }

    fn map_stage(
        &mut self,
        input: Arc<dyn ExecutionPlan>,
        output: ShuffleOutput,
        stages: &mut Vec<Stage>,
    ) -> Result<StageId> {
        let id = self.new_stage_id();
        let parents = parents_of(&input)?;
        let plan: Arc<dyn ExecutionPlan> = Arc::new(ShuffleWriterExec::new(input, id, output));
        stages.push(Stage {
            id,
            kind: StageKind::ShuffleMap,
            plan,
            parents,
        });
        Ok(id)
    }
}

/// The stages whose shuffle output `plan` reads.
fn parents_of(plan: &Arc<dyn ExecutionPlan>) -> Result<Vec<StageId>> {
    let mut parents = Vec::new();
    plan.apply(|node| {
        if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            parents.push(reader.stage());
        }
        // A writer is another stage's root; what lies below it is not ours.
        Ok(if node.downcast_ref::<ShuffleWriterExec>().is_some() {
            TreeNodeRecursion::Jump
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    parents.sort_unstable();
    parents.dedup();
    Ok(parents)
}
