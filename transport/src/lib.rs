//! One way for actors to reach each other. An actor is named by
//! [`ActorAddress`] (node, actor name) and reached through a [`Mailbox`]; in
//! one process a mailbox is the actor's own actix mailbox and messages are
//! never serialized.

pub mod frame;
pub mod handshake;
pub mod quic;

pub use frame::{DEFAULT_MAX_FRAME, FrameDecoder, FrameError};
pub use handshake::{HandshakeError, Hello, PROTOCOL_VERSION};

use std::fmt;
use std::time::Duration;

use actix::prelude::*;

/// A node of the cluster; `local` for everything inside one process.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("{0} is gone: its mailbox is closed")]
    Closed(ActorAddress),
    #[error("{0} did not answer within {1:?}")]
    Timeout(ActorAddress, Duration),
}

/// How to reach one actor that accepts messages of type `M`.
pub struct Mailbox<M>
where
    M: Message + Send,
    M::Result: Send,
{
    address: ActorAddress,
    route: Route<M>,
}

enum Route<M>
where
    M: Message + Send,
    M::Result: Send,
{
    /// The actor lives in this process.
    InProcess(Recipient<M>),
}

impl<M> Clone for Mailbox<M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn clone(&self) -> Self {
        let route = match &self.route {
            Route::InProcess(r) => Route::InProcess(r.clone()),
        };
        Self {
            address: self.address.clone(),
            route,
        }
    }
}

impl<M> fmt::Debug for Mailbox<M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mailbox({})", self.address)
    }
}

impl<M> Mailbox<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
{
    /// A mailbox for an actor in this process.
    pub fn in_process(address: ActorAddress, recipient: Recipient<M>) -> Self {
        Self {
            address,
            route: Route::InProcess(recipient),
        }
    }

    pub fn address(&self) -> &ActorAddress {
        &self.address
    }

    /// One-way send; messages from one sender arrive in order.
    pub fn tell(&self, msg: M) -> Result<(), SendError> {
        match &self.route {
            Route::InProcess(r) => r.try_send(msg).or_else(|e| match e {
                // A full bounded mailbox still takes the message: actix
                // queues it past capacity rather than drop it.
                actix::prelude::SendError::Full(msg) => {
                    r.do_send(msg);
                    Ok(())
                }
                actix::prelude::SendError::Closed(_) => {
                    Err(SendError::Closed(self.address.clone()))
                }
            }),
        }
    }

    /// Request with a reply, bounded by `timeout`.
    pub async fn ask(&self, msg: M, timeout: Duration) -> Result<M::Result, SendError> {
        match &self.route {
            Route::InProcess(r) => match r.send(msg).timeout(timeout).await {
                Ok(reply) => Ok(reply),
                Err(MailboxError::Timeout) => {
                    Err(SendError::Timeout(self.address.clone(), timeout))
                }
                Err(MailboxError::Closed) => Err(SendError::Closed(self.address.clone())),
            },
        }
    }

    /// Whether the actor can still receive messages.
    pub fn is_alive(&self) -> bool {
        match &self.route {
            Route::InProcess(r) => r.connected(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Ping(u32);

    struct Echo;
    impl Actor for Echo {
        type Context = Context<Self>;
    }
    impl Handler<Ping> for Echo {
        type Result = u32;
        fn handle(&mut self, msg: Ping, ctx: &mut Context<Self>) -> u32 {
            if msg.0 == 0 {
                ctx.stop();
            }
            msg.0 + 1
        }
    }

    #[actix::test]
    async fn ask_answers_and_a_stopped_actor_is_reported_closed() {
        let addr = Echo.start();
        let mailbox = Mailbox::in_process(ActorAddress::local("echo"), addr.recipient());
        assert_eq!(mailbox.ask(Ping(41), Duration::from_secs(1)).await, Ok(42));
        assert_eq!(mailbox.ask(Ping(0), Duration::from_secs(1)).await, Ok(1));
        // The actor stopped itself; give its context a turn to close.
        for _ in 0..100 {
            if !mailbox.is_alive() {
                break;
            }
            tokio_yield().await;
        }
        assert!(!mailbox.is_alive());
        assert_eq!(
            mailbox.tell(Ping(1)),
            Err(SendError::Closed(ActorAddress::local("echo")))
        );
    }

    async fn tokio_yield() {
        actix::clock::sleep(Duration::from_millis(5)).await;
    }
}
