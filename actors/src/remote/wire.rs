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
#[rtype(result = "Result<(), String>")]
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
}

/// A finished task's output, as it crosses the network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireOutput {
    /// Rows written per reduce partition.
    Map(Vec<(usize, u64)>),
    /// The rows went ahead on a bulk stream tagged with the task id.
    Result,
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
/// bulk stream to `reply_to` tagged `tag`.
#[derive(Debug, Message, Serialize, Deserialize)]
#[rtype(result = "Result<usize, String>")]
pub struct FetchBlocks {
    /// (stage, map, reduce) of each block, in the order wanted.
    pub blocks: Vec<(StageId, usize, usize)>,
    pub reply_to: ActorAddress,
    pub tag: String,
}
