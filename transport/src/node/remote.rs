//! The typed ends of a remote send: [`RemoteActor`] serializes a message
//! for an actor on another node; [`TypedInbox`] reads it back on that node
//! and hands it to the actor's actix mailbox.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::connection::{Answer, Peer};
use crate::ActorAddress;
use crate::frame::{FrameError, decode};
use crate::mailbox::{RemoteRoute, SendError, refused};
use crate::wire::{self, Header, Refusal};

/// How a remote tell went into the actor's mailbox.
pub(crate) enum Delivery {
    Queued,
    /// The mailbox is full: the message is delivered when this resolves,
    /// and nothing more should be read from its sender until then.
    Wait(BoxFuture<'static, ()>),
}

/// The receiving end of remote sends to one registered actor.
pub(crate) trait Inbox: Send + Sync {
    fn tell(&self, body: &[u8]) -> Result<Delivery, Refusal>;
    /// Delivers an ask; the future yields the frame to send back.
    fn ask(&self, id: u64, to: &str, body: &[u8]) -> Result<BoxFuture<'static, Bytes>, Refusal>;
}

pub(crate) struct TypedInbox<M>
where
    M: Message + Send,
    M::Result: Send,
{
    recipient: Recipient<M>,
    max_frame: usize,
}

impl<M> TypedInbox<M>
where
    M: Message + Send,
    M::Result: Send,
{
    pub(crate) fn new(recipient: Recipient<M>, max_frame: usize) -> Self {
        Self {
            recipient,
            max_frame,
        }
    }
}

fn unreadable(e: FrameError) -> Refusal {
    match e {
        FrameError::Malformed(why) => Refusal::Unreadable(why),
        other => Refusal::Unreadable(other.to_string()),
    }
}

impl<M> Inbox for TypedInbox<M>
where
    M: Message + DeserializeOwned + Send + 'static,
    M::Result: Serialize + Send + 'static,
{
    fn tell(&self, body: &[u8]) -> Result<Delivery, Refusal> {
        let msg: M = decode(body).map_err(unreadable)?;
        match self.recipient.try_send(msg) {
            Ok(()) => Ok(Delivery::Queued),
            Err(actix::prelude::SendError::Full(msg)) => {
                // actix has no "wait until queued", so wait until handled:
                // by then the mailbox has room again.
                let request = self.recipient.send(msg);
                Ok(Delivery::Wait(
                    async move {
                        let _ = request.await;
                    }
                    .boxed(),
                ))
            }
            Err(actix::prelude::SendError::Closed(_)) => Err(Refusal::Gone),
        }
    }

    fn ask(&self, id: u64, to: &str, body: &[u8]) -> Result<BoxFuture<'static, Bytes>, Refusal> {
        let msg: M = decode(body).map_err(unreadable)?;
        // `send` queues the message now, so it keeps its place among tells.
        let request = self.recipient.send(msg);
        let max = self.max_frame;
        let to = to.to_string();
        Ok(async move {
            let reply = match request.await {
                Ok(result) => wire::envelope(&Header::Reply { id }, Some(&result), max)
                    .map_err(|e| Refusal::Unanswerable(e.to_string())),
                Err(_) => Err(Refusal::Gone),
            };
            reply.unwrap_or_else(|why| {
                let refused = Header::Refused {
                    id: Some(id),
                    to,
                    why,
                };
                // A refusal is a few dozen bytes; it always fits.
                wire::header_only(&refused, max).unwrap_or_default()
            })
        }
        .boxed())
    }
}

/// The sending end towards one actor on another node.
pub(crate) struct RemoteActor<M> {
    peer: Arc<Peer>,
    address: ActorAddress,
    max_frame: usize,
    _message: PhantomData<fn(M)>,
}

impl<M> RemoteActor<M> {
    pub(crate) fn new(peer: Arc<Peer>, address: ActorAddress, max_frame: usize) -> Self {
        Self {
            peer,
            address,
            max_frame,
            _message: PhantomData,
        }
    }
}

impl<M> RemoteRoute<M> for RemoteActor<M>
where
    M: Message + Serialize + Send + 'static,
    M::Result: DeserializeOwned + Send + 'static,
{
    fn tell(&self, msg: M) -> Result<(), SendError> {
        let header = Header::Tell {
            to: self.address.name.clone(),
        };
        let frame = wire::envelope(&header, Some(&msg), self.max_frame)
            .map_err(|e| SendError::Encode(self.address.clone(), e.to_string()))?;
        self.peer
            .send(frame)
            .map_err(|why| SendError::Unreachable(self.address.clone(), why))
    }

    fn ask(&self, msg: M, timeout: Duration) -> BoxFuture<'static, Result<M::Result, SendError>> {
        let address = self.address.clone();
        let (id, answer) = self.peer.start_ask();
        let header = Header::Ask {
            id,
            to: address.name.clone(),
        };
        let sent = wire::envelope(&header, Some(&msg), self.max_frame)
            .map_err(|e| SendError::Encode(address.clone(), e.to_string()))
            .and_then(|frame| {
                self.peer
                    .send(frame)
                    .map_err(|why| SendError::Unreachable(address.clone(), why))
            });
        if let Err(e) = sent {
            self.peer.forget_ask(id);
            return futures::future::ready(Err(e)).boxed();
        }
        let peer = Arc::clone(&self.peer);
        async move {
            match tokio::time::timeout(timeout, answer).await {
                Err(_) => {
                    peer.forget_ask(id);
                    Err(SendError::Timeout(address, timeout))
                }
                Ok(Err(_)) => Err(SendError::Unreachable(
                    address,
                    "the connection closed before the answer came".into(),
                )),
                Ok(Ok(Answer::Reply(body))) => decode::<M::Result>(&body).map_err(|e| {
                    SendError::Refused(
                        address,
                        Refusal::Unreadable(format!("its answer cannot be read here: {e}")),
                    )
                }),
                Ok(Ok(Answer::Refused(why))) => Err(refused(&address, why)),
                Ok(Ok(Answer::Lost(why))) => Err(SendError::Unreachable(address, why)),
            }
        }
        .boxed()
    }

    fn is_alive(&self) -> bool {
        self.peer.is_open()
    }
}
