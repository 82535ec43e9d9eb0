//! An application's entry point in its own process (Spark's SparkSession):
//! it plans SQL on DataFusion, cuts the plan into stages and hands them to the
//! driver, which runs them on executors.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::error::DataFusionError;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use ember_actors::config::SHUFFLE_PARTITIONS;
use ember_actors::driver::SubmitJob;
use ember_actors::{EmberConf, JobError, JobListener, JobOutput, LocalCluster, LocalClusterSpec};
use ember_engine::session::planning_config;
use ember_engine::{StageGraph, StagePlanner};
use tokio::sync::oneshot;

use crate::master::Master;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Plan(#[from] DataFusionError),
    #[error("{0}")]
    Job(#[from] JobError),
    #[error("the driver is gone: {0}")]
    DriverGone(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("table {table}: LOCATION '{location}' does not exist; fix the path or create it first")]
    MissingLocation { table: String, location: String },
    #[error("cannot start the local runtime: {0}")]
    Start(#[from] std::io::Error),
}

/// How to start a session.
#[derive(Clone)]
pub struct SessionOptions {
    pub master: Master,
    pub conf: EmberConf,
    pub listener: Option<Arc<dyn JobListener>>,
}

/// What a statement produced.
#[derive(Debug)]
pub enum StatementOutcome {
    /// A query's (or COPY's) rows.
    Rows(JobOutput),
    /// The stage graph of an `EXPLAIN`.
    Explain(String),
    /// A statement with no rows (CREATE, SET, DROP, ...).
    Done,
}

/// Whether query statements run or only show their stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Run,
    ExplainOnly,
}

pub struct Session {
    ctx: SessionContext,
    planner: StagePlanner,
    cluster: LocalCluster,
}

impl Session {
    /// Starts the driver and its executors and waits until the executors
    /// have registered. Must run inside an actix System.
    pub async fn start(options: SessionOptions) -> Result<Self, SessionError> {
        let slots = options.master.threads();
        let partitions = options.conf.get_usize(SHUFFLE_PARTITIONS).unwrap_or(slots);
        let mut config = planning_config(partitions);
        for (key, value) in options.conf.datafusion_options() {
            config.options_mut().set(key, value)?;
        }
        let cluster = LocalCluster::start(LocalClusterSpec {
            threads: slots,
            // As in Spark, local mode takes its attempts from local[N,F];
            // ember.task.maxFailures is for cluster masters.
            max_failures: options.master.max_failures(),
            listener: options.listener,
            session_config: config.clone(),
        })?;
        if !cluster.wait_for_executors(Duration::from_secs(10)).await {
            return Err(SessionError::DriverGone(
                "its executors did not register within 10 s".to_string(),
            ));
        }
        Ok(Self {
            ctx: SessionContext::new_with_config(config),
            planner: StagePlanner::new(),
            cluster,
        })
    }

    /// DataFusion's context: register tables and functions here.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    pub fn cluster(&self) -> &LocalCluster {
        &self.cluster
    }

    /// Runs one SQL statement.
    pub async fn execute(&mut self, sql: &str) -> Result<StatementOutcome, SessionError> {
        self.execute_in(sql, Mode::Run).await
    }

    /// Runs one SQL statement; in `ExplainOnly` mode queries are planned and
    /// their stage graph returned instead of running them.
    pub async fn execute_in(
        &mut self,
        sql: &str,
        mode: Mode,
    ) -> Result<StatementOutcome, SessionError> {
        let state = self.ctx.state();
        let plan = state.create_logical_plan(sql).await?;
        match &plan {
            LogicalPlan::Explain(explain) => {
                let physical = state.create_physical_plan(&explain.plan).await?;
                return Ok(StatementOutcome::Explain(
                    self.planner.plan(physical)?.to_string(),
                ));
            }
            LogicalPlan::Analyze(_) => {
                return Err(SessionError::Unsupported(
                    "EXPLAIN ANALYZE is not supported yet; EXPLAIN shows the stage graph"
                        .to_string(),
                ));
            }
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) => {
                if let Some(location) = create.locations.iter().find(|l| is_missing_local_path(l)) {
                    return Err(SessionError::MissingLocation {
                        table: create.name.to_string(),
                        location: location.clone(),
                    });
                }
                self.ctx.execute_logical_plan(plan).await?.collect().await?;
                return Ok(StatementOutcome::Done);
            }
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => {
                // Catalog changes happen here, in the driver's session.
                self.ctx.execute_logical_plan(plan).await?.collect().await?;
                return Ok(StatementOutcome::Done);
            }
            _ => {}
        }
        let copy_target = match &plan {
            LogicalPlan::Copy(copy) => Some(copy.output_url.clone()),
            _ => None,
        };
        let physical = self
            .ctx
            .execute_logical_plan(plan)
            .await?
            .create_physical_plan()
            .await?;
        if mode == Mode::ExplainOnly {
            return Ok(StatementOutcome::Explain(
                self.planner.plan(physical)?.to_string(),
            ));
        }
        let fresh_target = copy_target
            .filter(|t| is_local_path(t))
            .map(|t| local_path(&t).to_path_buf())
            .filter(|t| !t.exists());
        let result = self.run(physical).await;
        if let (Err(_), Some(target)) = (&result, fresh_target) {
            remove_partial_output(&target);
        }
        result.map(StatementOutcome::Rows)
    }

    /// Cuts a physical plan into stages.
    pub fn stages(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<StageGraph, SessionError> {
        Ok(self.planner.plan(plan)?)
    }

    /// Runs a physical plan as one job on the executors.
    pub async fn run(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<JobOutput, SessionError> {
        let graph = self.stages(plan)?;
        let (reply, answer) = oneshot::channel();
        self.cluster
            .driver()
            .send(SubmitJob { graph, reply })
            .await
            .map_err(|e| SessionError::DriverGone(e.to_string()))?;
        let outcome = answer
            .await
            .map_err(|_| SessionError::DriverGone("it stopped before answering".to_string()))?;
        Ok(outcome?)
    }

    /// Stops the driver; returns whether every executor stopped with it.
    pub async fn stop(self) -> bool {
        self.cluster.stop(Duration::from_secs(5)).await
    }
}

fn is_local_path(target: &str) -> bool {
    !target.contains("://") || target.starts_with("file://")
}

/// A plain local path (no glob) that does not exist.
fn is_missing_local_path(location: &str) -> bool {
    is_local_path(location) && !location.contains(['*', '?', '[']) && !local_path(location).exists()
}

/// The file-system path of a local location (`file://` or a plain path).
fn local_path(location: &str) -> &Path {
    Path::new(location.strip_prefix("file://").unwrap_or(location))
}

/// Removes what a failed COPY wrote to a destination that did not exist
/// before it started.
fn remove_partial_output(target: &Path) {
    let removed = if target.is_dir() {
        std::fs::remove_dir_all(target)
    } else if target.exists() {
        std::fs::remove_file(target)
    } else {
        Ok(())
    };
    if let Err(e) = removed {
        tracing::warn!(path = %target.display(), error = %e, "could not remove partial COPY output");
    }
}
