//! [`Mailbox`]: the one handle for sending to an actor, wherever it lives.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::future::BoxFuture;

use crate::ActorAddress;
use crate::wire::Refusal;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("{0} is gone: it stopped, or no actor of that name was ever registered")]
    Closed(ActorAddress),
    #[error("{0} did not answer within {1:?}")]
    Timeout(ActorAddress, Duration),
    #[error("{0} cannot be reached: {1}")]
    Unreachable(ActorAddress, String),
    #[error("{0} refused the message: {1}")]
    Refused(ActorAddress, Refusal),
    #[error("a message for {0} cannot be sent: {1}")]
    Encode(ActorAddress, String),
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
    /// The actor lives on another node.
    Remote(Arc<dyn RemoteRoute<M>>),
}

/// Sending to an actor on another node; implemented by the node layer,
/// which owns serialization and the connection.
pub(crate) trait RemoteRoute<M: Message>: Send + Sync {
    fn tell(&self, msg: M) -> Result<(), SendError>;
    fn ask(&self, msg: M, timeout: Duration) -> BoxFuture<'static, Result<M::Result, SendError>>;
    fn is_alive(&self) -> bool;
}

impl<M> Clone for Mailbox<M>
where
    M: Message + Send,
    M::Result: Send,
{
    fn clone(&self) -> Self {
        let route = match &self.route {
            Route::InProcess(r) => Route::InProcess(r.clone()),
            Route::Remote(r) => Route::Remote(Arc::clone(r)),
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

    pub(crate) fn remote(address: ActorAddress, route: Arc<dyn RemoteRoute<M>>) -> Self {
        Self {
            address,
            route: Route::Remote(route),
        }
    }

    pub fn address(&self) -> &ActorAddress {
        &self.address
    }

    /// One-way send. Messages from one sender to one actor arrive in the
    /// order they were sent, asks and tells alike.
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
            Route::Remote(r) => r.tell(msg),
        }
    }

    /// Request with a reply, bounded by `timeout`. Must be awaited inside a
    /// tokio runtime (any actix context is one).
    pub async fn ask(&self, msg: M, timeout: Duration) -> Result<M::Result, SendError> {
        match &self.route {
            Route::InProcess(r) => match r.send(msg).timeout(timeout).await {
                Ok(reply) => Ok(reply),
                Err(MailboxError::Timeout) => {
                    Err(SendError::Timeout(self.address.clone(), timeout))
                }
                Err(MailboxError::Closed) => Err(SendError::Closed(self.address.clone())),
            },
            Route::Remote(r) => r.ask(msg, timeout).await,
        }
    }

    /// Whether the actor can still receive messages, as far as this node
    /// knows: for a remote actor, whether its node is still connected.
    pub fn is_alive(&self) -> bool {
        match &self.route {
            Route::InProcess(r) => r.connected(),
            Route::Remote(r) => r.is_alive(),
        }
    }
}

/// How a refusal from the remote side reads to the sender; an actor that is
/// not (or no longer) registered is simply gone, as in one process.
pub(crate) fn refused(address: &ActorAddress, why: Refusal) -> SendError {
    match why {
        Refusal::NoSuchActor | Refusal::Gone => SendError::Closed(address.clone()),
        other => SendError::Refused(address.clone(), other),
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
            actix::clock::sleep(Duration::from_millis(5)).await;
        }
        assert!(!mailbox.is_alive());
        assert_eq!(
            mailbox.tell(Ping(1)),
            Err(SendError::Closed(ActorAddress::local("echo")))
        );
    }
}
