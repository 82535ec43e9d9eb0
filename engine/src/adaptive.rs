//! Adaptive execution, as Spark's adaptive query execution coalesces
//! shuffle partitions: once a stage's parents have run, the sizes of their
//! reduce partitions are known, and runs of small ones are joined so that
//! each task reads about a target size. A shuffle with 200 partitions of a
//! few kilobytes each then runs as a handful of tasks, while one whose
//! partitions are large keeps them all.
//!
//! Joining is only done where it cannot change an answer: every shuffle
//! read of the stage is a hash-partitioned read driven by the task's own
//! partition, all with the same number of partitions, reached from the
//! stage's root through operators whose partition `i` is made of their
//! inputs' partition `i` alone. Those reads are all joined the same way,
//! so rows of one key (and the two sides of a join) stay together.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

use crate::shuffle::{ReadMode, ShuffleReaderExec};
use crate::stages::StageId;
use crate::stream_state::StateMergeExec;

/// What coalescing aims for (`ember.sql.adaptive.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalescing {
    /// A task reads about this much (Spark's
    /// `advisoryPartitionSizeInBytes`, 64 MB)...
    pub advisory_bytes: u64,
    /// ...or less, so that every task slot gets work, but never less than
    /// this (Spark's `coalescePartitions.minPartitionSize`, 1 MB).
    pub min_bytes: u64,
}

impl Default for Coalescing {
    fn default() -> Self {
        Self {
            advisory_bytes: 64 << 20,
            min_bytes: 1 << 20,
        }
    }
}

impl Coalescing {
    /// The size a task should read, when `total` bytes are shared by
    /// `slots` task slots (Spark's "parallelism first").
    pub fn target(&self, total: u64, slots: usize) -> u64 {
        let per_slot = total / slots.max(1) as u64;
        self.advisory_bytes.min(per_slot).max(self.min_bytes).max(1)
    }
}

/// Runs of consecutive reduce partitions, each about `target` bytes:
/// a run grows while the next partition still fits. Every partition is in
/// exactly one run, in order.
pub fn coalesce_ranges(bytes: &[u64], target: u64) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut size = 0u64;
    for (reduce, &b) in bytes.iter().enumerate() {
        if reduce > start && size.saturating_add(b) > target {
            ranges.push((start, reduce));
            start = reduce;
            size = 0;
        }
        size = size.saturating_add(b);
    }
    if start < bytes.len() {
        ranges.push((start, bytes.len()));
    }
    ranges
}

/// The number of reduce partitions a stage's shuffle reads have and the
/// stages they read, when the stage may be coalesced (see the module's
/// rules); `None` when it may not.
pub fn coalescible(plan: &Arc<dyn ExecutionPlan>) -> Option<(usize, Vec<StageId>)> {
    let partitions = plan.output_partitioning().partition_count();
    if partitions < 2 {
        return None;
    }
    let mut stages = Vec::new();
    driven_reads(plan, partitions, &mut stages).then_some(())?;
    if stages.is_empty() {
        return None;
    }
    stages.sort_unstable();
    stages.dedup();
    Some((partitions, stages))
}

/// Whether every shuffle read under `plan`, whose partition `i` makes the
/// task's partition `i`, is one that may be joined; collects their stages.
fn driven_reads(
    plan: &Arc<dyn ExecutionPlan>,
    partitions: usize,
    stages: &mut Vec<StageId>,
) -> bool {
    // A task's partition number names the state partition it merges into.
    if plan.downcast_ref::<StateMergeExec>().is_some() {
        return false;
    }
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        stages.push(reader.stage());
        return reader.mode() == ReadMode::AllMaps
            && reader.ranges().is_none()
            && matches!(reader.properties().partitioning, Partitioning::Hash(_, n) if n == partitions);
    }
    let children = plan.children();
    // A leaf other than a shuffle read has partitions of its own.
    if children.is_empty() {
        return false;
    }
    children.into_iter().all(|child| {
        if child.output_partitioning().partition_count() == partitions {
            driven_reads(child, partitions, stages)
        } else {
            // Read whole in every task (a broadcast side): fine, unless it
            // holds a shuffle read, whose partitions would then be split.
            !has_reader(child)
        }
    })
}

fn has_reader(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.downcast_ref::<ShuffleReaderExec>().is_some()
        || plan.children().into_iter().any(has_reader)
}

/// `plan` with its shuffle reads told how many map tasks each parent stage
/// ran as (`parent_tasks`, which coalescing a parent changes) and, with
/// `ranges`, which reduce partitions each of its partitions reads.
pub fn adapt_stage(
    plan: Arc<dyn ExecutionPlan>,
    parent_tasks: &BTreeMap<StageId, usize>,
    ranges: Option<Arc<[(usize, usize)]>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() else {
            return Ok(Transformed::no(node));
        };
        let maps = parent_tasks
            .get(&reader.stage())
            .copied()
            .unwrap_or(reader.map_partitions());
        let adapted = match (&ranges, reader.mode()) {
            (Some(ranges), _) => reader.adapted(maps, Some(Arc::clone(ranges))),
            (None, _) if maps == reader.map_partitions() => return Ok(Transformed::no(node)),
            // A passthrough read has a partition per map task.
            (None, ReadMode::SameIndex) => reader.adapted_passthrough(maps),
            (None, ReadMode::AllMaps) => reader.adapted(maps, None),
        };
        Ok(Transformed::yes(Arc::new(adapted) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_partitions_are_joined_up_to_the_target_and_large_ones_stay() {
        assert_eq!(coalesce_ranges(&[1, 1, 1, 1], 2), vec![(0, 2), (2, 4)]);
        assert_eq!(
            coalesce_ranges(&[5, 1, 1, 5], 3),
            vec![(0, 1), (1, 3), (3, 4)]
        );
        assert_eq!(coalesce_ranges(&[0, 0, 0], 10), vec![(0, 3)]);
        assert_eq!(coalesce_ranges(&[], 10), Vec::<(usize, usize)>::new());
        // Every partition once, in order, whatever the sizes.
        let bytes: Vec<u64> = (0..200).map(|i| (i * 7919) % 1000).collect();
        let ranges = coalesce_ranges(&bytes, 2500);
        assert_eq!(ranges.first().map(|r| r.0), Some(0));
        assert_eq!(ranges.last().map(|r| r.1), Some(200));
        assert!(ranges.windows(2).all(|w| w[0].1 == w[1].0));
    }

    #[test]
    fn the_target_shares_the_data_among_the_slots_within_its_bounds() {
        let c = Coalescing::default();
        assert_eq!(
            c.target(10 << 30, 2),
            64 << 20,
            "large data: the advisory size"
        );
        assert_eq!(c.target(100 << 20, 4), 25 << 20, "every slot gets work");
        assert_eq!(c.target(1000, 2), 1 << 20, "never below the minimum");
    }
}
