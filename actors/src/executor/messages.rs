//! What an executor is told by its driver.

use actix::prelude::*;
use ember_engine::StageId;

use crate::protocol::{TaskDescription, TaskId};

#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum ExecutorMessage {
    /// Run this task in a free slot.
    LaunchTask(TaskDescription),
    /// Stop this task at its next batch.
    KillTask(TaskId),
    /// These stages' shuffle blocks are no longer needed.
    RemoveShuffle(Vec<StageId>),
    /// Finish: stop every task and exit.
    Stop,
}
