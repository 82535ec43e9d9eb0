//! Makes a physical plan safe to cut into tasks that run apart. DataFusion
//! writes plans for one process: a few operators share state between their
//! partitions, and split across tasks they silently lose rows. Joins whose
//! collected build side must see every probe partition become shuffled joins
//! (or run in one task when they cannot be shuffled); any operator not known
//! to be safe keeps the whole query in one task.

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ExecutionPlan, ExecutionPlanProperties, Partitioning, replace_children_if_necessary,
};

/// Operators whose partitions share no state: each partition reads only its
/// inputs' same-numbered partitions (or a collected single partition), so
/// running partitions in different tasks gives the rows one process would.
/// Joins are checked apart, by mode and type.
const SPLIT_SAFE: &[&str] = &[
    "AggregateExec",
    "BoundedWindowAggExec",
    "BufferExec",
    "CoalesceBatchesExec",
    "CoalescePartitionsExec",
    "CooperativeExec",
    "CrossJoinExec",
    "DataSinkExec",
    "DataSourceExec",
    "EmptyExec",
    "FilterExec",
    "GlobalLimitExec",
    "InterleaveExec",
    "LazyMemoryExec",
    "LocalLimitExec",
    "PartialSortExec",
    "PartitionedTopKExec",
    "PlaceholderRowExec",
    "ProjectionExec",
    "RepartitionExec",
    "SortExec",
    "SortMergeJoinExec",
    "SortPreservingMergeExec",
    "StreamingTableExec",
    "SymmetricHashJoinExec",
    "UnionExec",
    "UnnestExec",
    "WindowAggExec",
    "async_func",
    // Ember's own nodes.
    "PaddedSideExec",
    "ShuffleReaderExec",
    "ShuffleWriterExec",
    "StateMergeExec",
];

/// How a plan can be run.
#[derive(Debug)]
pub enum Distribution {
    /// Cut into stages at its exchanges, one task per partition.
    Split(Arc<dyn ExecutionPlan>),
    /// Run whole in one task, because of `reason`.
    OneTask {
        plan: Arc<dyn ExecutionPlan>,
        reason: String,
    },
}

/// Rewrites the joins that cannot run split across tasks and decides whether
/// what is left can be split.
pub fn distribute(plan: Arc<dyn ExecutionPlan>) -> Result<Distribution> {
    let plan = complete_topk_orderings(plan)?;
    let plan = make_joins_splittable(plan)?;
    Ok(match first_unsafe(&plan)? {
        None => Distribution::Split(plan),
        Some(reason) => Distribution::OneTask { plan, reason },
    })
}

/// Gives every per-partition TopK under a merge the merge's whole ordering.
///
/// DataFusion drops from a partition-preserving TopK's ordering the keys that
/// are constant within each partition (`SELECT 'a' AS k, ... UNION ALL
/// SELECT 'b' AS k, ... ORDER BY k, v LIMIT n` sorts each branch by `v`
/// only), yet its partitions' heaps share one threshold: a threshold on `v`
/// found in branch `b` then throws away branch `a`'s rows, and the merge
/// returns `b`'s rows first. Sorted by the merge's full ordering (the extra
/// keys cost nothing within a partition), the shared threshold is right for
/// every partition. Plain DataFusion needs the same fix; the SQL fuzzer's
/// reference applies it too.
pub fn complete_topk_orderings(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| {
        let Some(merge) = node.downcast_ref::<SortPreservingMergeExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(sort) = merge.input().downcast_ref::<SortExec>() else {
            return Ok(Transformed::no(node));
        };
        if sort.fetch().is_none() || !sort.preserve_partitioning() || sort.expr() == merge.expr() {
            return Ok(Transformed::no(node));
        }
        let complete = SortExec::new(merge.expr().clone(), Arc::clone(sort.input()))
            .with_fetch(sort.fetch())
            .with_preserve_partitioning(true);
        let merge = replace_children_if_necessary(node, vec![Arc::new(complete)])?;
        Ok(Transformed::yes(merge))
    })
    .map(|t| t.data)
}

/// Whether a join of this type emits build-side rows (unmatched, matched or
/// marked) only once every probe partition has ended: true of the build side
/// being the left, preserved, side.
fn emits_build_rows(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Left
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::LeftMark
            | JoinType::Full
    )
}

fn partitions_of(plan: &Arc<dyn ExecutionPlan>) -> usize {
    plan.output_partitioning().partition_count()
}

/// Spark's rule: a broadcast (collected) side is only ever the side whose
/// rows are not preserved. A collected hash join that must emit build rows
/// becomes a shuffled (partitioned) join; a null-aware anti join, which needs
/// to know whether the whole probe side holds a NULL, and a nested-loop join
/// that must emit build rows read their probe side in one task.
/// A shuffled join keeps the probe side's number of partitions.
fn make_joins_splittable(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            let unsafe_split = *join.partition_mode() == PartitionMode::CollectLeft
                && emits_build_rows(*join.join_type())
                && partitions_of(join.right()) > 1;
            if !unsafe_split {
                return Ok(Transformed::no(node));
            }
            if join.null_aware {
                let right = one_partition(Arc::clone(join.right()));
                let rebuilt = join
                    .builder()
                    .with_new_children(vec![Arc::clone(join.left()), right])?
                    .reset_state()
                    .build_exec()?;
                return Ok(Transformed::yes(rebuilt));
            }
            let partitions = partitions_of(join.right());
            let (left_keys, right_keys): (Vec<_>, Vec<_>) = join
                .on()
                .iter()
                .map(|(l, r)| (Arc::clone(l), Arc::clone(r)))
                .unzip();
            let left = Arc::new(RepartitionExec::try_new(
                without_merge(Arc::clone(join.left())),
                Partitioning::Hash(left_keys, partitions),
            )?);
            let right = Arc::new(RepartitionExec::try_new(
                Arc::clone(join.right()),
                Partitioning::Hash(right_keys, partitions),
            )?);
            let rebuilt = join
                .builder()
                .with_partition_mode(PartitionMode::Partitioned)
                .with_new_children(vec![left, right])?
                .reset_state()
                .build_exec()?;
            return Ok(Transformed::yes(rebuilt));
        }
        if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>()
            && emits_build_rows(*join.join_type())
            && partitions_of(join.right()) > 1
        {
            let right = one_partition(Arc::clone(join.right()));
            let left = Arc::clone(join.left());
            return Ok(Transformed::yes(replace_children_if_necessary(
                node,
                vec![left, right],
            )?));
        }
        Ok(Transformed::no(node))
    })
    .map(|t| t.data)
}

/// The plan's rows in one partition, in order if they were sorted.
pub fn one_partition(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if partitions_of(&plan) <= 1 {
        return plan;
    }
    match plan.output_ordering().cloned() {
        Some(ordering) => Arc::new(SortPreservingMergeExec::new(ordering, plan)),
        None => Arc::new(CoalescePartitionsExec::new(plan)),
    }
}

/// A collected side without the merge that collected it.
fn without_merge(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if plan.downcast_ref::<CoalescePartitionsExec>().is_some()
        && let Some(input) = plan.children().first()
    {
        return Arc::clone(*input);
    }
    plan
}

/// The first operator, top down, that is not known to give the same rows
/// when its partitions run in different tasks, and why.
pub fn first_unsafe(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<String>> {
    let mut found = None;
    plan.apply(|node| {
        if let Some(why) = unsafe_reason(node) {
            found = Some(why);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}

fn unsafe_reason(node: &Arc<dyn ExecutionPlan>) -> Option<String> {
    if let Some(join) = node.downcast_ref::<HashJoinExec>() {
        let split_probe = partitions_of(join.right()) > 1;
        return match join.partition_mode() {
            PartitionMode::CollectLeft if split_probe && emits_build_rows(*join.join_type()) => {
                Some(format!(
                    "a collected {} hash join emits build-side rows after all its probe \
                     partitions end",
                    join.join_type()
                ))
            }
            PartitionMode::CollectLeft | PartitionMode::Partitioned
                if join.null_aware && split_probe =>
            {
                Some("a null-aware anti join (NOT IN) must see its whole probe side".to_string())
            }
            PartitionMode::Auto => Some("a hash join whose mode was never chosen".to_string()),
            _ => None,
        };
    }
    if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>() {
        return (emits_build_rows(*join.join_type()) && partitions_of(join.right()) > 1).then(
            || {
                format!(
                    "a {} nested-loop join emits build-side rows after all its probe \
                     partitions end",
                    join.join_type()
                )
            },
        );
    }
    let name = node.name();
    // Some operators name their variant too: `SortExec(TopK)`.
    let operator = name.split('(').next().unwrap_or(name);
    (!SPLIT_SAFE.contains(&operator))
        .then(|| format!("{name} is not known to be safe across tasks"))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::session::planning_config;
    use crate::testing::{physical, run_sql};

    /// A two-partition table of (k, v) rows; `None` keys are NULL.
    fn table(rows: &[(Option<i64>, i64)]) -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let half = rows.len() / 2;
        let part = |rows: &[(Option<i64>, i64)]| {
            let ks: Vec<Option<i64>> = rows.iter().map(|r| r.0).collect();
            let vs: Vec<i64> = rows.iter().map(|r| r.1).collect();
            vec![
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(ks)),
                        Arc::new(Int64Array::from(vs)),
                    ],
                )
                .unwrap(),
            ]
        };
        MemTable::try_new(
            schema.clone(),
            vec![part(&rows[..half]), part(&rows[half..])],
        )
        .unwrap()
    }

    /// `small` (6 rows, a NULL key), `big` (60 rows), `nulls` (a NULL among
    /// its keys): a small preserved side is what the optimizer collects.
    fn context() -> SessionContext {
        let ctx = SessionContext::new_with_config(planning_config(3));
        let small: Vec<(Option<i64>, i64)> = vec![
            (Some(1), 1),
            (Some(2), 2),
            (None, 3),
            (Some(40), 4),
            (Some(3), 5),
            (Some(99), 6),
        ];
        let big: Vec<(Option<i64>, i64)> = (0..60).map(|i| (Some(i % 20), i)).collect();
        let nulls: Vec<(Option<i64>, i64)> =
            vec![(Some(1), 1), (None, 2), (Some(5), 3), (Some(7), 4)];
        ctx.register_table("small", Arc::new(table(&small)))
            .unwrap();
        ctx.register_table("big", Arc::new(table(&big))).unwrap();
        ctx.register_table("nulls", Arc::new(table(&nulls)))
            .unwrap();
        ctx
    }

    fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
        let text = pretty_format_batches(batches).unwrap().to_string();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(1)
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    const QUERIES: &[&str] = &[
        "SELECT k, v FROM small WHERE k IN (SELECT k FROM big)",
        "SELECT k, v FROM small WHERE NOT EXISTS (SELECT 1 FROM big WHERE big.k = small.k)",
        "SELECT v FROM small WHERE k NOT IN (SELECT k FROM big)",
        "SELECT v FROM small WHERE k NOT IN (SELECT k FROM nulls)",
        "SELECT v FROM big WHERE k NOT IN (SELECT k FROM nulls)",
        "SELECT small.v, big.v FROM small LEFT JOIN big ON small.k = big.k",
        "SELECT small.v, big.v FROM small FULL JOIN big ON small.k = big.k",
        "SELECT v FROM small WHERE k IN (SELECT k FROM big) OR v > 4",
        "SELECT small.v, big.v FROM small LEFT JOIN big ON small.k < big.k - 15",
        "SELECT small.v, big.v FROM small FULL JOIN big ON small.k > big.k + 15",
        "SELECT v FROM small WHERE EXISTS (SELECT 1 FROM big WHERE big.k > small.k + 15)",
        "SELECT v FROM big WHERE v > (SELECT avg(v) FROM big)",
        "SELECT (SELECT max(v) FROM small) AS m, count(*) AS n FROM big",
        "SELECT v FROM big WHERE v > (SELECT avg(v) FROM big WHERE v < (SELECT max(v) FROM small))",
        "SELECT v FROM big WHERE k = (SELECT k FROM small WHERE v = 100)",
        "SELECT count(*) FROM big",
        "SELECT k, min(5) OVER (PARTITION BY k) AS m FROM big WHERE k = 3",
        "SELECT k, v, rank() OVER (PARTITION BY k ORDER BY v DESC) AS r FROM big WHERE k IN (1, 2)",
        "SELECT lag(k) OVER (ORDER BY k DESC, v) AS l, max(v) OVER (PARTITION BY k) AS m FROM big",
        "SELECT row_number() OVER (PARTITION BY a.v ORDER BY a.k, b.v) AS n, \
         rank() OVER (PARTITION BY b.k ORDER BY a.k, a.v, b.v DESC) AS r \
         FROM big a JOIN big b ON a.k = b.k",
    ];

    #[tokio::test]
    async fn every_query_gives_the_rows_of_one_process_when_split_into_tasks() {
        let ctx = context();
        for sql in QUERIES {
            let expected = ctx.sql(sql).await.unwrap().collect().await.unwrap();
            let actual = run_sql(&ctx, sql).await;
            assert_eq!(sorted_rows(&actual), sorted_rows(&expected), "{sql}");
        }
    }

    #[tokio::test]
    async fn a_collected_semi_join_becomes_a_shuffled_one() {
        let ctx = context();
        let plan = physical(&ctx, QUERIES[0]).await;
        let before = displayable(plan.as_ref()).indent(false).to_string();
        assert!(
            before.contains("mode=CollectLeft, join_type=LeftSemi"),
            "{before}"
        );
        let Distribution::Split(plan) = distribute(plan).unwrap() else {
            panic!("a semi join can be shuffled");
        };
        let after = displayable(plan.as_ref()).indent(false).to_string();
        assert!(
            after.contains("mode=Partitioned, join_type=LeftSemi"),
            "{after}"
        );
        assert!(
            after.contains("RepartitionExec: partitioning=Hash"),
            "{after}"
        );
    }

    #[tokio::test]
    async fn an_operator_not_known_to_be_safe_keeps_the_query_in_one_task() {
        let ctx = context();
        let sql = "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) \
                   SELECT n FROM t";
        let plan = physical(&ctx, sql).await;
        match distribute(plan).unwrap() {
            Distribution::OneTask { reason, .. } => {
                assert!(reason.contains("RecursiveQueryExec"), "{reason}")
            }
            Distribution::Split(plan) => panic!("{}", displayable(plan.as_ref()).indent(false)),
        }
    }

    #[tokio::test]
    async fn a_top_k_over_branches_with_constant_keys_keeps_every_branch() {
        let ctx = context();
        // Branch 'b' holds only NULLs in `o1`, the largest value DESC: its
        // heap fills first, and with the threshold shared on `o1` alone,
        // branch 'c' (which sorts first) would lose every row.
        let sql = "SELECT 'c' AS o0, v AS o1 FROM big \
                   UNION ALL SELECT 'b' AS o0, CAST(NULL AS BIGINT) AS o1 FROM big \
                   ORDER BY o0 DESC, o1 DESC LIMIT 3";
        let plan = physical(&ctx, sql).await;
        let before = displayable(plan.as_ref()).indent(false).to_string();
        assert!(
            before.contains("TopK(fetch=3), expr=[o1@1 DESC]"),
            "{before}"
        );
        let Distribution::Split(plan) = distribute(plan).unwrap() else {
            panic!("a TopK can be split");
        };
        let after = displayable(plan.as_ref()).indent(false).to_string();
        assert!(
            after.contains("TopK(fetch=3), expr=[o0@0 DESC, o1@1 DESC]"),
            "{after}"
        );
        let rows = pretty_format_batches(&run_sql(&ctx, sql).await)
            .unwrap()
            .to_string();
        let firsts: Vec<&str> = rows.lines().filter(|l| l.starts_with("| c")).collect();
        assert_eq!(firsts.len(), 3, "{rows}");
        assert!(rows.contains("| c  | 59 |"), "{rows}");
    }
}
