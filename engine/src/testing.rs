//! Test helpers shared by the engine's modules: plan SQL into a stage
//! graph, and run a graph stage by stage in one process.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::common::collect;
use datafusion::prelude::SessionContext;

use crate::shuffle::{InMemoryBlockStore, ShuffleEnv};
use crate::stages::{StageGraph, StageKind, StagePlanner};

/// `sql` planned by `ctx` and cut into stages.
pub async fn graph(ctx: &SessionContext, sql: &str) -> StageGraph {
    let plan = ctx
        .sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    StagePlanner::new().plan(plan).unwrap()
}

/// Runs a graph stage by stage, task by task, on one in-memory store, and
/// returns the result stage's rows.
pub async fn run_stages(ctx: &SessionContext, graph: &StageGraph) -> Vec<RecordBatch> {
    let store = Arc::new(InMemoryBlockStore::default());
    let config = ctx
        .copied_config()
        .with_extension(Arc::new(ShuffleEnv::new(store)));
    let task_ctx = Arc::new(TaskContext::default().with_session_config(config));
    let mut result = Vec::new();
    for stage in &graph.stages {
        for partition in 0..stage.tasks() {
            let stream = stage.plan.execute(partition, task_ctx.clone()).unwrap();
            let batches = collect(stream).await.unwrap();
            if stage.kind == StageKind::Result {
                result.extend(batches);
            }
        }
    }
    result
}
