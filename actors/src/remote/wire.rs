//! What a driver and its executors say to each other when they live in
//! different processes: the serializable twins of `DriverMessage` and
//! `ExecutorMessage`, with plans as bytes and rows on bulk streams.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use actix::prelude::*;
use ember_engine::StageId;
use ember_transport::{ActorAddress, NodeId};
use serde::{Deserialize, Serialize};

use crate::protocol::{ExecutorId, TaskError, TaskId};

/// Actor names on a driver's node.
pub const DRIVER: &str = "driver";
/// The driver's bulk inbox for result rows.
pub const RESULTS_INBOX: &str = "results";
/// Actor names on an executor's node.
pub const EXECUTOR: &str = "executor";
pub const BLOCKS: &str = "blocks";
/// The executor's actor that tells another on its host where shuffle
/// blocks lie in its files.
pub const BLOCK_FILES: &str = "block-files";
/// The executor's bulk inbox for fetched shuffle blocks.
pub const BLOCKS_INBOX: &str = "blocks-in";

/// How to reach a node: where it listens, the host its certificate names,
/// and its node id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeContact {
    pub node: NodeId,
    pub addr: SocketAddr,
    pub host: String,
}

impl NodeContact {
    pub fn actor(&self, name: &str) -> ActorAddress {
        ActorAddress {
            node: self.node.clone(),
            name: name.to_string(),
        }
    }
}

/// Executor to driver.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "Result<(), ExecutorRefused>")]
pub enum ToDriver {
    /// Offers task slots; `secret` proves the executor belongs to this
    /// application.
    RegisterExecutor {
        executor: ExecutorId,
        slots: usize,
        contact: NodeContact,
        secret: String,
    },
    StatusUpdate {
        executor: ExecutorId,
        task: TaskId,
        result: Result<WireOutput, TaskError>,
    },
    Usage {
        executor: ExecutorId,
        usage: crate::protocol::ExecutorUsage,
    },
}

/// Why a driver turned a registering executor away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ExecutorRefused {
    #[error("wrong application secret: this executor belongs to another application")]
    WrongSecret,
    #[error("executor {0} is already registered")]
    AlreadyRegistered(ExecutorId),
    /// The driver cannot reach the executor's node back.
    #[error("the driver cannot reach the executor back: {0}")]
    Unreachable(String),
    /// The driver stopped while the executor registered.
    #[error("the driver stopped: {0}")]
    DriverStopped(String),
}

impl ExecutorRefused {
    /// A stable word for the kind of refusal.
    pub fn code(&self) -> &'static str {
        match self {
            ExecutorRefused::WrongSecret => "forbidden",
            ExecutorRefused::AlreadyRegistered(_) => "already_registered",
            ExecutorRefused::Unreachable(_) => "unreachable",
            ExecutorRefused::DriverStopped(_) => "driver_stopped",
        }
    }
}

/// A finished task's output, as it crosses the network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireOutput {
    /// Rows and bytes written per reduce partition.
    Map {
        rows: Vec<(usize, u64)>,
        bytes: Vec<(usize, u64)>,
    },
    /// The rows went ahead on a bulk stream tagged with the task id.
    Result,
    /// The executor holds this many rows for the driver to read.
    HeldResult { rows: u64 },
}

/// Driver to executor.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "()")]
pub enum ToExecutor {
    LaunchTask(WireTask),
    KillTask(TaskId),
    RemoveShuffle(Vec<StageId>),
    Stop,
}

/// A task as it crosses the network.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireTask {
    pub id: TaskId,
    pub result_stage: bool,
    /// The stage's plan, encoded by `ember_engine::codec`.
    #[serde(with = "serde_bytes")]
    pub plan: Vec<u8>,
    /// For each stage this task reads: the executor holding map output `i`.
    pub locations: BTreeMap<StageId, Vec<String>>,
    /// How to reach those executors.
    pub peers: BTreeMap<String, NodeContact>,
}

/// One executor asking another for shuffle blocks, which come back on a
/// bulk stream to `reply_to` tagged `tag`; the answer is the rows sent.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "Result<usize, FetchRefused>")]
pub struct FetchBlocks {
    /// (stage, map, reduce) of each block, in the order wanted.
    pub blocks: Vec<(StageId, usize, usize)>,
    pub reply_to: ActorAddress,
    pub tag: String,
}

/// A shuffle block as the wire names it: (stage, map, reduce).
pub type WireBlock = (StageId, usize, usize);

pub fn wire_block(id: ember_engine::ShuffleBlockId) -> WireBlock {
    (id.stage, id.map, id.reduce)
}

pub fn block_id((stage, map, reduce): WireBlock) -> ember_engine::ShuffleBlockId {
    ember_engine::ShuffleBlockId { stage, map, reduce }
}

/// One executor asking another on the same host where shuffle blocks lie
/// in its files, to read them from disk itself; `None` when some are held
/// in memory and must be sent.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "Result<Option<Vec<BlockFile>>, FetchRefused>")]
pub struct LocateBlocks {
    /// (stage, map, reduce) of each block, in the order wanted.
    pub blocks: Vec<(StageId, usize, usize)>,
}

/// Where one shuffle block lies: its map output file (path as bytes, and
/// the file's device and inode, so a reader can tell it opened that very
/// file) and which of the file's batches are the block's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockFile {
    pub block: (StageId, usize, usize),
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    pub device: u64,
    pub inode: u64,
    pub batches: Vec<usize>,
}

impl BlockFile {
    pub fn from_located(located: &ember_engine::shuffle::LocatedBlock) -> Self {
        use std::os::unix::ffi::OsStrExt;
        Self {
            block: wire_block(located.id),
            path: located.path.as_os_str().as_bytes().to_vec(),
            device: located.device,
            inode: located.inode,
            batches: located.batches.clone(),
        }
    }

    pub fn located(&self) -> ember_engine::shuffle::LocatedBlock {
        use std::os::unix::ffi::OsStrExt;
        ember_engine::shuffle::LocatedBlock {
            id: block_id(self.block),
            path: std::ffi::OsStr::from_bytes(&self.path).into(),
            device: self.device,
            inode: self.inode,
            batches: self.batches.clone(),
        }
    }
}

/// Why an executor did not send the shuffle blocks another asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum FetchRefused {
    /// It does not hold the block (its map task's output was lost or
    /// removed): the stage that wrote it must run again.
    #[error(
        "shuffle block shuffle_{stage}_{map}_{reduce} is missing: the map task that wrote it \
         is gone or its output was removed"
    )]
    BlockMissing {
        stage: StageId,
        map: usize,
        reduce: usize,
    },
    /// Its block store failed otherwise.
    #[error("{0}")]
    Store(String),
    /// The blocks could not be streamed back.
    #[error("the blocks could not be sent: {0}")]
    NotSent(String),
}

impl FetchRefused {
    /// Block `id` is not held here.
    pub fn missing(id: ember_engine::ShuffleBlockId) -> Self {
        FetchRefused::BlockMissing {
            stage: id.stage,
            map: id.map,
            reduce: id.reduce,
        }
    }

    /// A stable word for the kind of refusal.
    pub fn code(&self) -> &'static str {
        match self {
            FetchRefused::BlockMissing { .. } => "block_missing",
            FetchRefused::Store(_) => "block_store",
            FetchRefused::NotSent(_) => "not_sent",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_between_executors_and_drivers_cross_the_wire_whole() {
        let missing: Result<usize, FetchRefused> = Err(FetchRefused::BlockMissing {
            stage: 1,
            map: 2,
            reduce: 3,
        });
        let bytes = rmp_serde::to_vec_named(&missing).unwrap();
        let back: Result<usize, FetchRefused> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, missing);
        let why = back.unwrap_err();
        assert_eq!(why.code(), "block_missing");
        assert!(
            why.to_string()
                .starts_with("shuffle block shuffle_1_2_3 is missing")
        );

        let refused: Result<(), ExecutorRefused> = Err(ExecutorRefused::WrongSecret);
        let bytes = rmp_serde::to_vec_named(&refused).unwrap();
        let back: Result<(), ExecutorRefused> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, refused);
        assert_eq!(ExecutorRefused::WrongSecret.code(), "forbidden");
    }
}
