//! The DataFusion settings Ember plans with, so that every physical plan can be
//! cut into stages whose tasks run independently of each other.

use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::padded::NullPaddedSides;

/// A context that plans with `config` and Ember's physical optimizer rules
/// (on `runtime`, or a default runtime): the rule that keeps NULL-padded
/// join inputs from claiming constants runs before DataFusion's own.
pub fn planning_context(config: SessionConfig, runtime: Option<Arc<RuntimeEnv>>) -> SessionContext {
    let mut rules = PhysicalOptimizer::new().rules;
    rules.insert(0, Arc::new(NullPaddedSides));
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_physical_optimizer_rules(rules);
    if let Some(runtime) = runtime {
        state = state.with_runtime_env(runtime);
    }
    SessionContext::new_with_state(state.build())
}

/// A session configuration for planning distributed jobs over `partitions`
/// task slots.
pub fn planning_config(partitions: usize) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_target_partitions(partitions.max(1))
        .with_information_schema(true)
        // Round-robin repartitions only add parallelism inside one process;
        // as a stage boundary they would materialise a whole scan in memory.
        .with_round_robin_repartition(false);
    // Dynamic filters link operators through shared state, which does not
    // survive the cut into independently executed stages.
    config
        .options_mut()
        .optimizer
        .enable_dynamic_filter_pushdown = false;
    config
        .options_mut()
        .optimizer
        .enable_topk_dynamic_filter_pushdown = false;
    config
        .options_mut()
        .optimizer
        .enable_join_dynamic_filter_pushdown = false;
    config
        .options_mut()
        .optimizer
        .enable_aggregate_dynamic_filter_pushdown = false;
    // Spark's autoBroadcastJoinThreshold: a join side estimated under 10 MB
    // is read whole by every task of the other side instead of shuffling
    // both; across processes a shuffle costs far more than in one.
    config
        .options_mut()
        .optimizer
        .hash_join_single_partition_threshold = 10 * 1024 * 1024;
    // Scan partitions otherwise share one queue of files and steal from each
    // other; tasks run apart, so each would read every file.
    config
        .options_mut()
        .execution
        .enable_file_stream_work_stealing = false;
    config
}
