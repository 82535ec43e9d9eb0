//! The driver: one per application. It turns submitted stage graphs into
//! tasks, hands them to its executors' slots, retries what fails, and answers
//! each job with its rows or its error. Decisions live in [`scheduler`].

mod handlers;
mod messages;
mod rows;
pub mod scheduler;

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use ember_engine::StageId;
use ember_transport::{ActorAddress, Mailbox};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use messages::{
    CancelJobs, CancelScope, DriverMessage, ExecutorRegistration, ExecutorState, ExecutorSummary,
    ListExecutors, ReleaseResults, StopDriver, SubmitJob,
};
pub use rows::{JobResult, JobRows, ResultPart, ResultSource};
use scheduler::{Event, Scheduler};
pub use scheduler::{SchedulerConfig, Speculation};

use crate::executor::ExecutorMessage;
use crate::protocol::{ExecutorId, JobId, TaskError, TaskId};
use crate::supervision::{ExitReason, PeerDown, Watchers};

/// A finished job's rows.
#[derive(Debug, Clone)]
pub struct JobOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// The result-stage attempts whose output the job used, one per
    /// partition: the attempts a file sink commits.
    pub committed: Vec<TaskId>,
}

impl JobOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Why a job did not succeed: each kind is a different thing to whoever
/// submitted it (a REST API or a Spark client maps [`JobError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum JobError {
    /// The plan gave nothing to run (a bug in the planner, not the query).
    #[error("the job has no stages")]
    NoStages,
    /// One task failed `ember.task.maxFailures` times.
    #[error(
        "Job {} aborted: task {} in stage {} failed {failures} time{}; most recent failure: \
         {task} on executor {executor}: {error}",
        .task.job, .task.partition, .task.stage, if *.failures == 1 { "" } else { "s" }
    )]
    TaskFailed {
        /// The last attempt that failed.
        task: TaskId,
        failures: u32,
        executor: ExecutorId,
        /// Boxed, so a `Result` that carries a job's error stays small.
        error: Box<TaskError>,
    },
    /// A stage could not read its parent's output
    /// `ember.stage.maxConsecutiveAttempts` times in a row.
    #[error(
        "Job {} aborted: stage {} failed to read its input {failures} times in a row; most \
         recent failure: {task} on executor {executor}: {error}",
        .task.job, .task.stage
    )]
    FetchFailed {
        /// The last reduce attempt that could not read it.
        task: TaskId,
        failures: u32,
        executor: ExecutorId,
        /// Boxed, so a `Result` that carries a job's error stays small.
        error: Box<TaskError>,
    },
    /// No executor served the application for
    /// `ember.scheduler.noExecutorTimeout`.
    #[error(
        "Job {job} aborted: no executor for {} s (ember.scheduler.noExecutorTimeout); the last \
         lost: {}",
        .waited.as_secs(), .last_lost.as_deref().unwrap_or("none had registered")
    )]
    NoExecutors {
        job: JobId,
        waited: std::time::Duration,
        /// The last executor lost, and why.
        last_lost: Option<String>,
    },
    /// Cancelled from outside: Ctrl-C, `ember kill`, the cluster manager
    /// giving up on the application.
    #[error("Job {job} cancelled: {reason}")]
    Cancelled { job: JobId, reason: String },
    /// The driver stopped while the job ran.
    #[error("Job {job} aborted: the driver stopped")]
    DriverStopped { job: JobId },
    /// The job succeeded, but the executor holding one partition's rows
    /// could not give them (it was lost) before they were read.
    #[error(
        "Job {job}: the rows of result partition {partition} were lost before they were read          (executor {executor}: {why}); the rows before them were whole partitions; run the          query again"
    )]
    ResultLost {
        job: JobId,
        partition: usize,
        executor: ExecutorId,
        why: String,
    },
}

impl JobError {
    /// A stable word for the kind of failure; the message may change, this
    /// does not.
    pub fn code(&self) -> &'static str {
        match self {
            JobError::NoStages => "no_stages",
            JobError::TaskFailed { .. } => "task_failed",
            JobError::FetchFailed { .. } => "fetch_failed",
            JobError::NoExecutors { .. } => "no_executors",
            JobError::Cancelled { .. } => "cancelled",
            JobError::DriverStopped { .. } => "driver_stopped",
            JobError::ResultLost { .. } => "result_lost",
        }
    }
}

/// What a job is doing, for progress bars and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    StageSubmitted {
        job: JobId,
        stage: StageId,
        tasks: usize,
    },
    TaskStarted {
        job: JobId,
        stage: StageId,
    },
    TaskEnded {
        job: JobId,
        stage: StageId,
        succeeded: bool,
    },
    StageCompleted {
        job: JobId,
        stage: StageId,
    },
    JobEnded {
        job: JobId,
        succeeded: bool,
    },
}

impl ProgressEvent {
    /// The job it is about.
    pub fn job(&self) -> JobId {
        match self {
            Self::StageSubmitted { job, .. }
            | Self::TaskStarted { job, .. }
            | Self::TaskEnded { job, .. }
            | Self::StageCompleted { job, .. }
            | Self::JobEnded { job, .. } => *job,
        }
    }
}

/// Hears the [`ProgressEvent`]s of a driver's statements' jobs, on the
/// driver's thread.
pub trait JobListener: Send + Sync {
    fn on_event(&self, event: &ProgressEvent);
}

/// How a driver reaches the process it lives in.
#[derive(Debug, Clone)]
pub struct DriverHandle {
    pub address: ActorAddress,
    pub mailbox: Mailbox<DriverMessage>,
    pub peer_down: Recipient<PeerDown>,
}

/// Starts executors for a driver (in local mode: threads of this process).
pub trait ExecutorLauncher: Send {
    fn launch(&mut self, driver: DriverHandle);
}

/// How often the scheduler looks at the time.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

struct PendingJob {
    schema: SchemaRef,
    group: Option<String>,
    reply: oneshot::Sender<Result<JobResult, JobError>>,
}

pub struct Driver {
    me: ActorAddress,
    scheduler: Scheduler,
    executors: BTreeMap<ExecutorId, Mailbox<ExecutorMessage>>,
    /// Every executor this driver has had, for people to look at.
    roster: BTreeMap<ExecutorId, RosterEntry>,
    /// Linked executors, told when this driver ends.
    watchers: Watchers,
    jobs: BTreeMap<JobId, PendingJob>,
    next_job: JobId,
    listener: Option<Arc<dyn JobListener>>,
    launcher: Option<Box<dyn ExecutorLauncher>>,
}

impl Driver {
    pub fn new(
        me: ActorAddress,
        config: SchedulerConfig,
        listener: Option<Arc<dyn JobListener>>,
        launcher: Box<dyn ExecutorLauncher>,
    ) -> Self {
        Self {
            watchers: Watchers::new(me.clone()),
            me,
            scheduler: Scheduler::new(config),
            executors: BTreeMap::new(),
            roster: BTreeMap::new(),
            jobs: BTreeMap::new(),
            next_job: 0,
            listener,
            launcher: Some(launcher),
        }
    }

    /// Tells the listener (a progress bar) of `event`: for the jobs of
    /// statements only, not those of a job group (a background streaming
    /// query's batches would draw over the prompt).
    fn emit(&self, event: ProgressEvent) {
        let grouped = self
            .jobs
            .get(&event.job())
            .is_some_and(|job| job.group.is_some());
        if let Some(listener) = &self.listener
            && !grouped
        {
            listener.on_event(&event);
        }
    }
}

/// What the driver remembers of an executor, active or not.
#[derive(Debug)]
struct RosterEntry {
    address: ActorAddress,
    host: String,
    slots: usize,
    tasks_succeeded: u64,
    tasks_failed: u64,
    state: ExecutorState,
    usage: crate::protocol::ExecutorUsage,
}

impl Actor for Driver {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let handle = DriverHandle {
            address: self.me.clone(),
            mailbox: Mailbox::in_process(self.me.clone(), ctx.address().recipient()),
            peer_down: ctx.address().recipient(),
        };
        if let Some(launcher) = self.launcher.as_mut() {
            launcher.launch(handle);
        }
        // Time for the scheduler: stragglers to speculate on, jobs left
        // without executors to give up on.
        ctx.run_interval(TICK, |driver, _ctx| {
            if driver.scheduler.active_jobs() > 0 {
                driver.step(Event::Tick);
            }
        });
        tracing::info!(driver = %self.me, "driver started");
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.watchers.set_reason(ExitReason::Normal);
        for (job, pending) in std::mem::take(&mut self.jobs) {
            let _ = pending.reply.send(Err(JobError::DriverStopped { job }));
        }
        tracing::info!(driver = %self.me, "driver stopped");
    }
}
