//! What a driver is told: by its executors (the protocol that will cross the
//! network) and by the application in its own process.

use actix::prelude::*;
use ember_engine::{StageGraph, StageId};
use ember_transport::{ActorAddress, Mailbox};
use tokio::sync::oneshot;

use super::{JobError, JobResult};
use crate::executor::ExecutorMessage;
use crate::protocol::{ExecutorId, ExecutorUsage, TaskError, TaskId, TaskOutput};
use crate::supervision::PeerDown;

/// Messages from executors.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum DriverMessage {
    /// An executor offers its task slots.
    RegisterExecutor(ExecutorRegistration),
    /// A task ended, well or badly.
    StatusUpdate {
        executor: ExecutorId,
        task: TaskId,
        result: Result<TaskOutput, TaskError>,
    },
    /// What an executor holds and spilled, after a task.
    Usage {
        executor: ExecutorId,
        usage: ExecutorUsage,
    },
}

#[derive(Debug)]
pub struct ExecutorRegistration {
    pub executor: ExecutorId,
    pub slots: usize,
    pub address: ActorAddress,
    /// The host it runs on, as people know it.
    pub host: String,
    pub mailbox: Mailbox<ExecutorMessage>,
    /// Where to tell the executor that the driver is gone (the link).
    pub peer_down: Recipient<PeerDown>,
}

/// Runs a job; the reply comes when it has succeeded or failed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubmitJob {
    pub graph: StageGraph,
    /// The job group it belongs to (Spark's `setJobGroup`): a streaming
    /// query's batches run in the query's group, so cancelling the
    /// statement in front does not touch them. `None`: the statements'.
    pub group: Option<String>,
    pub reply: oneshot::Sender<Result<JobResult, JobError>>,
}

/// The held rows of these result stages have been read (or are no longer
/// wanted): their executors let them go.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReleaseResults(pub Vec<StageId>);

/// Fails the running jobs of `scope` with `reason`, killing their tasks
/// (Ctrl-C, `ember kill`, an application the cluster manager gave up on,
/// a stopped streaming query).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CancelJobs {
    pub reason: String,
    pub scope: CancelScope,
}

/// Which jobs [`CancelJobs`] cancels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelScope {
    All,
    /// The jobs of one group ([`SubmitJob::group`]).
    Group(Option<String>),
}

/// Stops the driver; its executors follow through their links.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopDriver;

/// Lists the executors: those registered now, and with `include_removed`
/// also those this driver has lost, and why.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<ExecutorSummary>")]
pub struct ListExecutors {
    pub include_removed: bool,
}

impl ListExecutors {
    /// The executors registered now.
    pub const ACTIVE: Self = Self {
        include_removed: false,
    };
    /// Every executor this driver has had.
    pub const ALL: Self = Self {
        include_removed: true,
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorSummary {
    pub id: ExecutorId,
    pub address: ActorAddress,
    pub host: String,
    pub slots: usize,
    pub running_tasks: usize,
    /// Task attempts it reported as succeeded, and as failed or killed.
    pub tasks_succeeded: u64,
    pub tasks_failed: u64,
    pub state: ExecutorState,
    /// Its memory and spill, as of its last report.
    pub usage: ExecutorUsage,
}

/// Whether an executor still serves its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutorState {
    Active,
    /// Lost, with the reason.
    Removed(String),
}

impl std::fmt::Display for ExecutorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Active => f.write_str("ACTIVE"),
            Self::Removed(reason) => write!(f, "REMOVED ({reason})"),
        }
    }
}
