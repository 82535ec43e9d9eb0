//! Keeps DataFusion from believing a column constant after an outer join
//! pads it with NULLs.
//!
//! DataFusion carries a join input's constants through every outer join,
//! including from the side whose unmatched rows come out as NULLs: in
//! `SELECT d.tag, r.y FROM (SELECT 'x' AS tag ...) d FULL JOIN r ON ...
//! ORDER BY d.tag NULLS FIRST`, `tag` is `'x'` or NULL, yet the plan calls it
//! constant, drops the sort and returns the NULLs last. Every operator above
//! (a sort, a merge, a window) trusts that claim. [`NullPaddedSides`] runs
//! before DataFusion's physical optimizer rules and puts a [`PaddedSideExec`]
//! over each padded join input that claims constants: it passes rows through
//! unchanged and claims only the input's orderings, which stay true of the
//! input's own rows, so no constant reaches the join's output.

use std::fmt;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
};
use datafusion::physical_plan::joins::{
    HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec, SymmetricHashJoinExec,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{
    ChildStats, ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan,
    ExecutionPlanProperties, PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
    Statistics, StatisticsArgs, replace_children_if_necessary,
};

/// The physical optimizer rule that guards the NULL-padded inputs of outer
/// joins (see the module's documentation). It must run before any rule that
/// reads orderings or constants.
#[derive(Debug, Default)]
pub struct NullPaddedSides;

impl PhysicalOptimizerRule for NullPaddedSides {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(padded) = padded_inputs(node.as_ref()) else {
                return Ok(Transformed::no(node));
            };
            let children: Vec<Arc<dyn ExecutionPlan>> = node
                .children()
                .into_iter()
                .zip(padded)
                .map(|(child, padded)| {
                    let claims_constants = !child.equivalence_properties().constants().is_empty();
                    if padded && claims_constants {
                        Arc::new(PaddedSideExec::new(Arc::clone(child))) as Arc<dyn ExecutionPlan>
                    } else {
                        Arc::clone(child)
                    }
                })
                .collect();
            let changed = node
                .children()
                .into_iter()
                .zip(&children)
                .any(|(old, new)| !Arc::ptr_eq(old, new));
            if changed {
                Ok(Transformed::yes(replace_children_if_necessary(
                    node, children,
                )?))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "NullPaddedSides"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// For a join, which of its two inputs it pads with NULLs; `None` for any
/// other operator.
fn padded_inputs(node: &dyn ExecutionPlan) -> Option<[bool; 2]> {
    let join_type = if let Some(join) = node.downcast_ref::<HashJoinExec>() {
        *join.join_type()
    } else if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>() {
        *join.join_type()
    } else if let Some(join) = node.downcast_ref::<SortMergeJoinExec>() {
        join.join_type()
    } else if let Some(join) = node.downcast_ref::<SymmetricHashJoinExec>() {
        *join.join_type()
    } else {
        return None;
    };
    match join_type {
        JoinType::Left => Some([false, true]),
        JoinType::Right => Some([true, false]),
        JoinType::Full => Some([true, true]),
        _ => None,
    }
}

/// Passes its input's rows through unchanged, claiming the input's
/// partitioning and orderings but no constants and no equal columns.
#[derive(Debug, Clone)]
pub struct PaddedSideExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl PaddedSideExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let orderings = input.equivalence_properties().oeq_class().iter().cloned();
        let eq_properties = EquivalenceProperties::new_with_orderings(input.schema(), orderings);
        let properties = PlanProperties::clone(input.properties())
            .with_eq_properties(eq_properties)
            .into();
        Self { input, properties }
    }

    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

impl DisplayAs for PaddedSideExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PaddedSideExec")
    }
}

impl ExecutionPlan for PaddedSideExec {
    fn name(&self) -> &str {
        "PaddedSideExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
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
            .ok_or_else(|| DataFusionError::Internal("PaddedSideExec needs one child".into()))?;
        Ok(Arc::new(Self::new(input)))
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
        self.input.execute(partition, context)
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(input_stats
            .first()
            .cloned()
            .unwrap_or_else(|| Arc::new(Statistics::new_unknown(&self.schema()))))
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }

    // A projection above moves below: what it computes from the input's rows
    // is then claimed by nothing above this node either.
    fn try_swapping_with_projection(
        &self,
        projection: &ProjectionExec,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let below = replace_children_if_necessary(
            Arc::new(projection.clone()),
            vec![Arc::clone(&self.input)],
        )?;
        Ok(Some(Arc::new(Self::new(below))))
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        Ok(FilterPushdownPropagation::if_all(child_pushdown_result))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

    use crate::session::{planning_config, planning_context};
    use crate::testing::run_sql;

    /// Full join of a constant-tag side with a side of three rows, one
    /// matching: the two unmatched rows get a NULL tag.
    const PADDED_TAG: &str = "SELECT d.tag, r.y FROM (SELECT 'x' AS tag FROM (VALUES (1),(2)) \
                              t(a)) d FULL JOIN (VALUES (1),(2),(3)) r(y) ON r.y = 2 \
                              ORDER BY d.tag NULLS FIRST, r.y";

    async fn rows(sql: &str) -> Vec<String> {
        let ctx = planning_context(planning_config(2), None);
        let options = FormatOptions::default();
        let mut rows = Vec::new();
        for batch in run_sql(&ctx, sql).await {
            let columns: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                .collect();
            for row in 0..batch.num_rows() {
                let cells: Vec<String> = columns.iter().map(|c| c.value(row).to_string()).collect();
                rows.push(cells.join("|"));
            }
        }
        rows
    }

    #[tokio::test]
    async fn a_literal_padded_by_a_full_join_sorts_its_nulls() {
        assert_eq!(rows(PADDED_TAG).await, ["|1", "|3", "x|2", "x|2"]);
        let descending = PADDED_TAG.replace("NULLS FIRST", "DESC NULLS LAST");
        assert_eq!(rows(&descending).await, ["x|2", "x|2", "|1", "|3"]);
    }

    #[tokio::test]
    async fn left_and_right_joins_guard_only_their_padded_side() {
        let left = "SELECT r.y, d.tag FROM (VALUES (1),(2),(3)) r(y) LEFT JOIN \
                    (SELECT 'x' AS tag, a FROM (VALUES (2)) t(a)) d ON r.y = d.a \
                    ORDER BY d.tag NULLS FIRST, r.y";
        assert_eq!(rows(left).await, ["1|", "3|", "2|x"]);
        let right = "SELECT r.y, d.tag FROM (SELECT 'x' AS tag, a FROM (VALUES (2)) t(a)) d \
                     RIGHT JOIN (VALUES (1),(2),(3)) r(y) ON r.y = d.a \
                     ORDER BY d.tag NULLS FIRST, r.y";
        assert_eq!(rows(right).await, ["1|", "3|", "2|x"]);
    }

    #[tokio::test]
    async fn a_join_whose_padded_side_claims_no_constants_is_left_alone() {
        let ctx = planning_context(planning_config(2), None);
        let sql = "SELECT * FROM (VALUES (1),(2)) a(x) LEFT JOIN (VALUES (2),(3)) b(y) ON x = y";
        let plan = crate::testing::physical(&ctx, sql).await;
        let text = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        assert!(!text.contains("PaddedSideExec"), "{text}");
        let guarded = crate::testing::physical(&ctx, PADDED_TAG).await;
        let text = datafusion::physical_plan::displayable(guarded.as_ref())
            .indent(false)
            .to_string();
        assert!(text.contains("PaddedSideExec"), "{text}");
    }
}
