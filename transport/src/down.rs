//! What a watcher hears when the actor it monitors or links to ends: the
//! actor stopped, failed, or its node can no longer be reached.

use std::fmt;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use crate::ActorAddress;

/// Why an actor ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitReason {
    /// It stopped on purpose.
    Normal,
    /// It stopped because something failed.
    Failed(String),
    /// Its node stopped answering or the connection to it broke; the actor
    /// may still run there, but nothing reaches it from here.
    Unreachable(String),
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("stopped"),
            ExitReason::Failed(why) => write!(f, "failed: {why}"),
            ExitReason::Unreachable(why) => write!(f, "unreachable: {why}"),
        }
    }
}

/// Notice that a watched actor has ended.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct PeerDown {
    pub peer: ActorAddress,
    pub reason: ExitReason,
}
