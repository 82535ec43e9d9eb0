//! Cuts a DataFusion physical plan into stages at its exchanges, the way Spark
//! cuts a job at shuffle dependencies: every `RepartitionExec` becomes a
//! shuffle, and a merge of many partitions into one (`CoalescePartitionsExec`,
//! `SortPreservingMergeExec`) reads its inputs from the stage below.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, displayable, replace_children_if_necessary,
};

use crate::distribute::{Distribution, distribute, one_partition};
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
    /// Why the whole job runs as one task, when it does.
    pub one_task: Option<String>,
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
        if let Some(reason) = &self.one_task {
            writeln!(f, "Runs as one task: {reason}")?;
        }
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
            for line in displayable(stage.plan.as_ref())
                .indent(false)
                .to_string()
                .lines()
            {
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

    /// Cuts `plan` into stages whose tasks give the rows one process would:
    /// joins that cannot be split are rewritten first (`distribute`), and a
    /// plan holding an operator not known to be safe across tasks runs whole,
    /// uncut, as one task.
    pub fn plan(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<StageGraph> {
        match distribute(plan)? {
            Distribution::Split(plan) => {
                let mut stages = Vec::new();
                let root = with_required_sorts(self.cut(plan, &mut stages)?)?;
                let id = self.new_stage_id();
                stages.push(Stage {
                    id,
                    kind: StageKind::Result,
                    parents: parents_of(&root)?,
                    plan: root,
                });
                Ok(StageGraph {
                    stages,
                    one_task: None,
                })
            }
            Distribution::OneTask { plan, reason } => {
                tracing::info!(%reason, "the job runs as one task");
                let id = self.new_stage_id();
                let stage = Stage {
                    id,
                    kind: StageKind::Result,
                    parents: Vec::new(),
                    plan: one_partition(plan),
                };
                Ok(StageGraph {
                    stages: vec![stage],
                    one_task: Some(reason),
                })
            }
        }
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
            let maps = input.output_partitioning().partition_count();
            let ordering = (exchange.preserve_order() && maps > 1)
                .then(|| input.output_ordering().cloned())
                .flatten();
            let stage = self.map_stage(
                input,
                ShuffleOutput::Repartition(partitioning.clone()),
                stages,
            )?;
            // One map task's rows reach each reducer in the order it wrote
            // them, as the exchange promised. Rows from many map tasks are
            // claimed to be nothing in particular: DataFusion's own claims
            // are not all true once partitions mix (a grouping set nulls a
            // column its input held constant), and operators above rebuilt
            // over a false claim give wrong rows. Where they needed an
            // order the exchange gave for free, `with_required_sorts` sorts.
            let eq_properties = if maps <= 1 {
                plan.equivalence_properties().clone()
            } else {
                EquivalenceProperties::new(plan.schema())
            };
            let reader: Arc<dyn ExecutionPlan> = Arc::new(ShuffleReaderExec::new(
                stage,
                maps,
                ReadMode::AllMaps,
                partitioning,
                eq_properties,
            ));
            // An order-preserving exchange promised sorted partitions; blocks
            // from many map tasks are not, so sort them again.
            return Ok(match ordering {
                Some(ordering) => {
                    Arc::new(SortExec::new(ordering, reader).with_preserve_partitioning(true))
                }
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
        let input = with_required_sorts(input)?;
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

/// `plan` with a sort wherever an operator needs an order its input no
/// longer has: DataFusion planned some operators (a window partitioned by a
/// column a filter held constant or a join made equal to a sorted one) to
/// rely on what an exchange kept, which a shuffle reader does not claim.
/// Sorts are only added, never taken away.
fn with_required_sorts(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let mut changed = false;
        let mut children = Vec::new();
        for (child, required) in node
            .children()
            .into_iter()
            .zip(node.required_input_ordering())
        {
            let child = Arc::clone(child);
            let Some(required) = required else {
                children.push(child);
                continue;
            };
            let required = required.into_single();
            if child
                .equivalence_properties()
                .ordering_satisfy_requirement(required.clone())?
            {
                children.push(child);
                continue;
            }
            let sort =
                SortExec::new(LexOrdering::from(required), child).with_preserve_partitioning(true);
            children.push(Arc::new(sort));
            changed = true;
        }
        Ok(if changed {
            Transformed::yes(replace_children_if_necessary(node, children)?)
        } else {
            Transformed::no(node)
        })
    })
    .map(|t| t.data)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::session::planning_config;
    use crate::testing::{graph, run_stages};

    fn table(name: &str, rows: i64, offset: i64) -> (Arc<Schema>, Vec<Vec<RecordBatch>>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        // Two partitions, as two files would be.
        let part = |range: std::ops::Range<i64>| {
            let ks: Vec<i64> = range.clone().map(|i| (i + offset) % 7).collect();
            let vs: Vec<i64> = range.clone().collect();
            let ss: Vec<String> = range.map(|i| format!("{name}{i}")).collect();
            vec![
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(ks)),
                        Arc::new(Int64Array::from(vs)),
                        Arc::new(StringArray::from(ss)),
                    ],
                )
                .unwrap(),
            ]
        };
        (
            schema.clone(),
            vec![part(0..rows / 2), part(rows / 2..rows)],
        )
    }

    fn context(extra: &[(&str, &str)]) -> SessionContext {
        let mut config = planning_config(2);
        for (k, v) in extra {
            config.options_mut().set(k, v).unwrap();
        }
        let ctx = SessionContext::new_with_config(config);
        for (name, offset) in [("a", 0), ("b", 3)] {
            let (schema, parts) = table(name, 40, offset);
            ctx.register_table(name, Arc::new(MemTable::try_new(schema, parts).unwrap()))
                .unwrap();
        }
        ctx
    }

    /// The result rows of a graph run stage by stage.
    async fn run(ctx: &SessionContext, graph: &StageGraph) -> String {
        pretty_format_batches(&run_stages(ctx, graph).await)
            .unwrap()
            .to_string()
    }

    /// The same query run by DataFusion alone.
    async fn reference(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    fn summary(graph: &StageGraph) -> Vec<(StageId, StageKind, usize, Vec<StageId>)> {
        graph
            .stages
            .iter()
            .map(|s| (s.id, s.kind, s.tasks(), s.parents.clone()))
            .collect()
    }

    #[tokio::test]
    async fn a_group_by_splits_at_its_hash_exchange() {
        let ctx = context(&[]);
        let sql = "SELECT k, SUM(v) AS total FROM a GROUP BY k ORDER BY k";
        let g = graph(&ctx, sql).await;
        assert_eq!(
            summary(&g),
            vec![
                (0, StageKind::ShuffleMap, 2, vec![]),
                (1, StageKind::ShuffleMap, 2, vec![0]),
                (2, StageKind::Result, 1, vec![1]),
            ]
        );
        let text = g.to_string();
        assert!(
            text.contains("ShuffleWriterExec: stage=0, partitioning=Hash([k@0], 2)"),
            "{text}"
        );
        assert!(text.contains("AggregateExec: mode=Partial"), "{text}");
        assert!(
            text.contains("ShuffleWriterExec: stage=1, partitioning=passthrough(2)"),
            "{text}"
        );
        assert!(
            !text.contains("RepartitionExec"),
            "no exchange is left inside a stage: {text}"
        );
        assert_eq!(run(&ctx, &g).await, reference(&ctx, sql).await);
    }

    #[tokio::test]
    async fn a_partitioned_join_reads_two_shuffles() {
        let ctx = context(&[
            (
                "datafusion.optimizer.hash_join_single_partition_threshold",
                "0",
            ),
            (
                "datafusion.optimizer.hash_join_single_partition_threshold_rows",
                "0",
            ),
        ]);
        let sql = "SELECT a.k, COUNT(*) AS n FROM a JOIN b ON a.k = b.k GROUP BY a.k ORDER BY a.k";
        let g = graph(&ctx, sql).await;
        let text = g.to_string();
        assert!(text.contains("HashJoinExec: mode=Partitioned"), "{text}");
        let join_stage = g
            .stages
            .iter()
            .find(|s| {
                displayable(s.plan.as_ref())
                    .indent(false)
                    .to_string()
                    .contains("HashJoinExec")
            })
            .unwrap();
        assert_eq!(
            join_stage.parents.len(),
            2,
            "both join inputs are shuffled: {text}"
        );
        assert_eq!(run(&ctx, &g).await, reference(&ctx, sql).await);
    }

    #[tokio::test]
    async fn a_broadcast_join_collects_its_build_side_from_a_stage() {
        let ctx = context(&[]);
        let sql = "SELECT a.s, b.s FROM a JOIN b ON a.k = b.k AND a.v = b.v ORDER BY a.s";
        let g = graph(&ctx, sql).await;
        let text = g.to_string();
        assert!(text.contains("mode=CollectLeft"), "{text}");
        assert!(text.contains("CoalescePartitionsExec"), "{text}");
        assert!(g.stages.len() >= 2, "{text}");
        assert_eq!(run(&ctx, &g).await, reference(&ctx, sql).await);
    }

    #[tokio::test]
    async fn stage_ids_are_unique_across_jobs() {
        let ctx = context(&[]);
        let mut planner = StagePlanner::new();
        let plan = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                ctx.sql(sql)
                    .await
                    .unwrap()
                    .create_physical_plan()
                    .await
                    .unwrap()
            }
        };
        let first = planner
            .plan(plan("SELECT k, COUNT(*) FROM a GROUP BY k").await)
            .unwrap();
        let second = planner
            .plan(plan("SELECT k, COUNT(*) FROM b GROUP BY k").await)
            .unwrap();
        let ids: Vec<StageId> = first
            .stage_ids()
            .into_iter()
            .chain(second.stage_ids())
            .collect();
        let mut unique = ids.clone();
        unique.dedup();
        assert_eq!(ids, unique);
        assert_eq!(second.stages[0].id, first.stages.len());
    }
}
