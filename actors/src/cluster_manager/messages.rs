//! What the cluster manager hears and says: from workers, from drivers
//! registering applications, from people (`ember submit|status|kill|logs`),
//! and what it tells workers and drivers. Each audience has its own actor
//! name on the manager's node, open only to the certificate roles it serves.

use actix::prelude::*;
use ember_transport::ActorAddress;
use serde::{Deserialize, Serialize};

use super::errors::{ManagerError, WorkerError};
use super::state::{
    AppId, AppRequest, DriverId, DriverRequest, ExecutorNo, RunningExecutor, WorkerId,
};
use crate::remote::NodeContact;

/// Actor names on the manager's node.
pub const FOR_WORKERS: &str = "cluster-manager/workers";
pub const FOR_APPS: &str = "cluster-manager/apps";
pub const FOR_CLIENTS: &str = "cluster-manager/clients";
/// The actor name of a worker on its node.
pub const WORKER: &str = "worker";
/// The actor name of an application's client on its driver's node.
pub const APP: &str = "app";

/// From a worker (worker certificates only).
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), ManagerError>")]
pub enum FromWorker {
    /// Joins, or joins again, saying what it still runs.
    Register {
        worker: WorkerId,
        address: ActorAddress,
        host: String,
        cores: u32,
        memory_mb: u64,
        drivers: Vec<DriverId>,
        executors: Vec<RunningExecutor>,
        /// Drivers that exited since the worker last registered, with their
        /// exit codes (`None`: a signal): the manager may not have heard.
        #[serde(default)]
        exited_drivers: Vec<(DriverId, Option<i32>)>,
    },
    ExecutorExited {
        app: AppId,
        executor: ExecutorNo,
        why: String,
    },
    DriverExited {
        driver: DriverId,
        /// The exit code; `None` when a signal ended it.
        code: Option<i32>,
        why: String,
        /// The worker it ran on: an attempt given away and then killed
        /// there is not the one running now elsewhere.
        #[serde(default)]
        worker: Option<WorkerId>,
    },
}

/// From a driver (client or worker certificates: client-mode drivers run in
/// `ember submit`, cluster-mode ones on a worker).
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "Result<AppId, ManagerError>")]
pub enum FromApp {
    Register {
        request: Box<AppRequest>,
        /// Where its executors reach the driver.
        driver: NodeContact,
        /// The actor the manager tells of lost executors; watched, so the
        /// application ends when it does.
        client: ActorAddress,
        /// Given to its executors, which prove with it they belong here.
        secret: String,
        /// The submission that started it, in cluster mode.
        submission: Option<DriverId>,
        /// Set when the driver registers again after losing the manager.
        existing: Option<AppId>,
    },
    /// The application ended on its own; `failure` says why if it failed.
    Finished { app: AppId, failure: Option<String> },
    /// What its executors hold and spilled, for `ember status`.
    Usage {
        app: AppId,
        executors: Vec<(ExecutorNo, crate::protocol::ExecutorUsage)>,
    },
    /// Its streaming queries and their last batches, for `ember status`.
    Streams {
        app: AppId,
        streams: Vec<StreamStatus>,
    },
}

/// A streaming query of an application and its last batch, as `ember
/// status` shows it (Spark's `StreamingQueryProgress`, in short).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamStatus {
    pub name: String,
    /// `running`, `stopped`, `finished` or `failed`.
    pub state: String,
    /// Why it failed.
    pub reason: Option<String>,
    pub sink: String,
    /// Batches committed since it started.
    pub batches: u64,
    /// Input rows over those batches.
    pub input_rows: u64,
    /// The last committed batch's id, input rows, rows per second,
    /// duration, watermark (RFC 3339) and state rows.
    pub last_batch: Option<u64>,
    pub last_input_rows: u64,
    pub last_rows_per_second: u64,
    pub last_duration_ms: u64,
    pub watermark: Option<String>,
    pub state_rows: u64,
}

/// A job submitted in cluster mode: everything its driver needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverJob {
    pub name: String,
    /// The SQL script itself: the client uploads it.
    pub script: String,
    pub conf: Vec<(String, String)>,
    pub executor_cores: u32,
    pub executor_memory_mb: u64,
    pub max_cores: Option<u32>,
    /// Where `ember submit` ran: relative paths in the script resolve
    /// there, when it exists on the worker.
    pub base_dir: Option<String>,
    /// A packaged application's arguments (those after `--`); a SQL
    /// script has none.
    #[serde(default)]
    pub args: Vec<String>,
    /// The program the driver and its executors run, uploaded to the
    /// manager beforehand; `None`: the workers' own `ember` binary.
    #[serde(default)]
    pub binary: Option<crate::binaries::BinaryRef>,
    /// Side files put in the work dir of the driver and of every executor,
    /// uploaded to the manager beforehand.
    #[serde(default)]
    pub files: Vec<crate::binaries::SideFile>,
}

/// From people, through `ember` commands (client certificates only).
// A submission is the large one, and comes once per job: boxing it would
// save nothing that matters.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "Result<ClientReply, ManagerError>")]
pub enum FromClient {
    Submit {
        job: DriverJob,
        request: DriverRequest,
        /// Set when the script came ahead in parts (`job.script` is then
        /// empty): the upload that holds it.
        #[serde(default)]
        upload: Option<ScriptUpload>,
        /// Chosen by the client for this submission: a `Submit` sent again
        /// with the same token (the answer to the first was lost, the
        /// manager restarting, say) is answered with the submission the
        /// first made, never taken as a second.
        #[serde(default)]
        token: Option<String>,
    },
    /// A part of a script too large for one message, starting at byte
    /// `offset`; the first part (offset 0, no name) starts an upload and
    /// the answer names it.
    UploadScript {
        upload: Option<String>,
        offset: u64,
        part: String,
    },
    /// Kills a submission's driver, or an application.
    Kill {
        id: String,
    },
    Status,
    /// A cluster-mode driver's output and log, the last `max_bytes` of each.
    Logs {
        driver: DriverId,
        max_bytes: u64,
    },
}

/// A script uploaded in parts: where it is and how long it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptUpload {
    pub name: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientReply {
    Submitted(DriverId),
    /// The upload holds this many bytes so far.
    Uploaded {
        upload: String,
        bytes: u64,
    },
    Killed(String),
    Status(ClusterStatus),
    Logs(DriverLogs),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverLogs {
    pub stdout: String,
    pub stderr: String,
    /// Whether the start of either was cut off.
    pub truncated: bool,
}

/// Everything `ember status` and `ember list` show.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub manager: String,
    /// Whether the manager is still waiting for workers after a restart.
    pub recovering: bool,
    pub workers: Vec<WorkerStatus>,
    pub apps: Vec<AppStatus>,
    pub drivers: Vec<DriverStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: WorkerId,
    pub host: String,
    pub state: String,
    pub cores: u32,
    pub cores_used: u32,
    pub memory_mb: u64,
    pub memory_used_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppStatus {
    pub id: AppId,
    pub name: String,
    pub state: String,
    /// Why it waits or failed.
    pub reason: Option<String>,
    pub submission: Option<DriverId>,
    pub executor_cores: u32,
    pub executor_memory_mb: u64,
    pub max_cores: Option<u32>,
    /// The executors it has now.
    pub executors: Vec<ExecutorStatus>,
    /// The executors it had, and how each ended (Spark's "removed
    /// executors"): a finished application keeps what ran where.
    #[serde(default)]
    pub removed_executors: Vec<ExecutorStatus>,
    pub started: String,
    pub ended: Option<String>,
    /// Its streaming queries, as its driver last reported.
    #[serde(default)]
    pub streams: Vec<StreamStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorStatus {
    pub executor: ExecutorNo,
    pub worker: WorkerId,
    pub cores: u32,
    pub memory_mb: u64,
    #[serde(default)]
    pub state: ExecutorState,
    /// How it ended, where that is known.
    #[serde(default)]
    pub reason: Option<String>,
    /// Its memory and spill as its driver last reported them (never
    /// journaled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::protocol::ExecutorUsage>,
}

/// An executor's state as `ember status` shows it (Spark's words).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ExecutorState {
    #[default]
    Running,
    /// Its process exited on its own.
    Exited,
    /// Taken back when its application ended.
    Killed,
    /// Its worker was lost, or came back without it.
    Lost,
    /// Running before the cluster manager restarted; not reported since.
    Unknown,
}

impl std::fmt::Display for ExecutorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExecutorState::Running => "RUNNING",
            ExecutorState::Exited => "EXITED",
            ExecutorState::Killed => "KILLED",
            ExecutorState::Lost => "LOST",
            ExecutorState::Unknown => "UNKNOWN",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriverStatus {
    pub id: DriverId,
    pub name: String,
    pub state: String,
    pub reason: Option<String>,
    pub worker: Option<WorkerId>,
    pub supervise: bool,
    pub restarts: u32,
    pub submitted: String,
    pub app: Option<AppId>,
}

/// From the manager to a worker (cluster-manager certificates only).
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "Result<DriverLogs, WorkerError>")]
pub enum ToWorker {
    LaunchExecutor {
        app: AppId,
        executor: ExecutorNo,
        cores: u32,
        memory_mb: u64,
        driver: NodeContact,
        secret: String,
        /// The application's settings.
        #[serde(default)]
        conf: Vec<(String, String)>,
        /// The program to run, fetched from the manager by its hash.
        #[serde(default)]
        binary: Option<crate::binaries::BinaryRef>,
        /// Side files to put in the executor's work dir.
        #[serde(default)]
        files: Vec<crate::binaries::SideFile>,
    },
    KillExecutor {
        app: AppId,
        executor: ExecutorNo,
    },
    LaunchDriver {
        driver: DriverId,
        job: DriverJob,
        cores: u32,
        memory_mb: u64,
        /// Set when the script came ahead in [`ToWorker::ScriptPart`]s
        /// (`job.script` is then empty): its length in bytes.
        #[serde(default)]
        script_bytes: Option<u64>,
    },
    /// A part of a driver's script too large for one message, starting at
    /// byte `offset`; its `LaunchDriver` follows the last part.
    ScriptPart {
        driver: DriverId,
        offset: u64,
        part: String,
    },
    KillDriver {
        driver: DriverId,
    },
    ReadLogs {
        driver: DriverId,
        max_bytes: u64,
    },
}

/// From the manager to an application's driver.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub enum ToApp {
    ExecutorLost {
        executor: ExecutorNo,
        why: String,
    },
    /// `ember kill` named this application.
    Killed,
    /// The manager gave up on the application (its executors kept exiting).
    Failed {
        why: String,
    },
}
