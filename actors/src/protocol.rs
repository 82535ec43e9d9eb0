//! The identifiers and task payloads the driver and executors exchange; the
//! messages themselves live beside each actor (`driver/messages.rs`,
//! `executor/messages.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use ember_engine::StageKind;
use ember_engine::shuffle::MapStatus;
use serde::{Deserialize, Serialize};

pub type JobId = u64;

/// An executor's id within its application ("driver" for the one that runs
/// inside the driver in `local` mode).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExecutorId(pub String);

impl fmt::Display for ExecutorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One attempt at one partition of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId {
    pub job: JobId,
    pub stage: ember_engine::StageId,
    pub partition: usize,
    pub attempt: u32,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {}.{} in stage {} (job {})",
            self.partition, self.attempt, self.stage, self.job
        )
    }
}

impl From<TaskId> for ember_engine::TaskAttempt {
    fn from(id: TaskId) -> Self {
        Self {
            stage: id.stage,
            partition: id.partition,
            attempt: id.attempt,
        }
    }
}

/// What an executor needs to run a task. In one process the plan is shared,
/// never serialized; each attempt runs a fresh copy of it.
#[derive(Debug, Clone)]
pub struct TaskDescription {
    pub id: TaskId,
    pub kind: StageKind,
    pub plan: Arc<dyn ExecutionPlan>,
    /// Where the blocks this task reads were written.
    pub locations: Arc<MapLocations>,
}

/// For each stage a task reads: the executor holding map output `i`
/// (`None` while it is not written).
pub type MapLocations = BTreeMap<ember_engine::StageId, Vec<Option<ExecutorId>>>;

/// What an executor's tasks hold and spilled, as it reports after each
/// task (`\executors`, `ember status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorUsage {
    /// Bytes of its memory budget its tasks hold now.
    pub memory_used: u64,
    /// Its memory budget in bytes; 0: none.
    pub memory_limit: u64,
    /// Bytes its tasks spilled to disk so far.
    pub spilled_bytes: u64,
    /// Bytes of shuffle output it holds on disk now.
    pub shuffle_disk_bytes: u64,
    /// Its process's peak resident memory in bytes (0: unknown); executors
    /// of one local process share it.
    pub peak_rss: u64,
    /// Shuffle blocks its tasks read straight from the files of another
    /// executor on the same host (`ember.shuffle.readHostLocalDisk`).
    #[serde(default)]
    pub shuffle_blocks_read_on_host: u64,
    /// Shuffle blocks its tasks had another executor send over the network.
    #[serde(default)]
    pub shuffle_blocks_fetched: u64,
}

/// What a successful task produced.
#[derive(Debug, Clone)]
pub enum TaskOutput {
    /// A map task: rows written per reduce partition.
    Map(MapStatus),
    /// A result task: its rows, or how many its executor holds.
    Result(ember_engine::shuffle::ResultOutput),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskFailureKind {
    /// The task's code returned an error.
    Error,
    /// The task's code panicked; the executor survived.
    Panic,
    /// The driver asked for it to stop.
    Killed,
    /// Its executor went away; not the task's fault.
    ExecutorLost,
    /// The task could not read a shuffle block its parent stage wrote; the
    /// parent's output there is gone and must be computed again.
    FetchFailed,
}

/// Which map output a reduce task could not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchFailure {
    /// The stage that wrote it.
    pub stage: ember_engine::StageId,
    /// The map tasks (partitions) whose blocks could not be read.
    pub maps: Vec<usize>,
    /// The executor they were read from; empty when unknown (one process).
    pub executor: ExecutorId,
}

/// Why a task did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    pub kind: TaskFailureKind,
    pub message: String,
    /// Set for `FetchFailed`: the output that could not be read.
    #[serde(default)]
    pub fetch: Option<FetchFailure>,
}

impl TaskError {
    pub fn new(kind: TaskFailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            fetch: None,
        }
    }

    /// A reduce task could not read `failure`'s map output.
    pub fn fetch_failed(failure: FetchFailure, message: impl Into<String>) -> Self {
        Self {
            kind: TaskFailureKind::FetchFailed,
            message: message.into(),
            fetch: Some(failure),
        }
    }

    /// Whether this failure counts against `ember.task.maxFailures`.
    pub fn counts_as_failure(&self) -> bool {
        matches!(self.kind, TaskFailureKind::Error | TaskFailureKind::Panic)
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TaskFailureKind::Error => f.write_str(&self.message),
            TaskFailureKind::Panic => write!(f, "task panicked: {}", self.message),
            TaskFailureKind::Killed => write!(f, "task killed: {}", self.message),
            TaskFailureKind::ExecutorLost => write!(f, "executor lost: {}", self.message),
            TaskFailureKind::FetchFailed => write!(f, "fetch failed: {}", self.message),
        }
    }
}
