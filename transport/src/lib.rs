//! One way for actors to reach each other. An actor is named by
//! [`ActorAddress`] (node, actor name) and reached through a [`Mailbox`]. In
//! one process a mailbox is the actor's own actix mailbox and messages are
//! never serialized; to an actor on another node, a [`Node`] carries them as
//! msgpack frames over a mutual-TLS QUIC connection.

pub mod bulk;
mod down;
pub mod frame;
pub mod handshake;
mod mailbox;
mod node;
pub mod quic;
pub mod sim;
mod wire;

#[cfg(test)]
mod testing;

pub use bulk::{BulkError, IncomingBulk, Sent};
pub use down::{ExitReason, PeerDown};
pub use frame::{DEFAULT_MAX_FRAME, FrameDecoder, FrameError};
pub use handshake::{HandshakeError, Hello, PROTOCOL_VERSION};
pub use mailbox::{Mailbox, SendError};
pub use node::{Access, Node, NodeError, NodeOptions, Registration};
pub use wire::{Refusal, codes};

use std::fmt;

/// A node of the cluster; `local` for everything inside one process.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct NodeId(pub String);

impl NodeId {
    pub fn local() -> Self {
        Self("local".to_string())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an actor lives: its node and its name there.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ActorAddress {
    pub node: NodeId,
    pub name: String,
}

impl ActorAddress {
    pub fn local(name: impl Into<String>) -> Self {
        Self {
            node: NodeId::local(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ActorAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.node)
    }
}
