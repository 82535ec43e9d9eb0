//! Test helpers shared by the engine's modules: plan SQL into a stage
//! graph, and run a graph stage by stage in one process, each task on a
//! fresh copy of its stage's plan as an executor would run it.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::common::collect;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;

use crate::shuffle::{BlockStore, ShuffleEnv};
use crate::stages::{StageGraph, StageKind, StagePlanner};
use crate::subquery::lift_scalar_subqueries;

/// `sql` planned by `ctx` and cut into stages (its scalar subqueries, if
/// any, left unrun).
pub async fn graph(ctx: &SessionContext, sql: &str) -> StageGraph {
    StagePlanner::new().plan(physical(ctx, sql).await).unwrap()
}

pub async fn physical(ctx: &SessionContext, sql: &str) -> Arc<dyn ExecutionPlan> {
    ctx.sql(sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap()
}

/// Runs `sql` as the driver does: its scalar subqueries first, each a job
/// of its own, then the query cut into stages.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    run_plan(ctx.clone(), physical(ctx, sql).await).await
}

fn run_plan(
    ctx: SessionContext,
    plan: Arc<dyn ExecutionPlan>,
) -> BoxFuture<'static, Vec<RecordBatch>> {
    Box::pin(async move {
        let (plan, subqueries) = lift_scalar_subqueries(plan).unwrap();
        for subquery in subqueries {
            let rows = run_plan(ctx.clone(), Arc::clone(&subquery.plan)).await;
            subquery.resolve(&rows).unwrap();
        }
        let graph = StagePlanner::new().plan(plan).unwrap();
        run_stages(&ctx, &graph).await
    })
}

/// Runs a graph stage by stage, task by task, on one in-memory store, and
/// returns the result stage's rows.
pub async fn run_stages(ctx: &SessionContext, graph: &StageGraph) -> Vec<RecordBatch> {
    let store = Arc::new(BlockStore::default());
    let config = ctx
        .copied_config()
        .with_extension(Arc::new(ShuffleEnv::new(store)));
    let task_ctx = Arc::new(TaskContext::default().with_session_config(config));
    let mut result = Vec::new();
    for stage in &graph.stages {
        for partition in 0..stage.tasks() {
            // Tasks share no operator state, as on executors.
            let plan = reset_plan_states(Arc::clone(&stage.plan)).unwrap();
            let stream = plan.execute(partition, task_ctx.clone()).unwrap();
            let batches = collect(stream).await.unwrap();
            if stage.kind == StageKind::Result {
                result.extend(batches);
            }
        }
    }
    result
}
