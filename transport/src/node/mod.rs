//! A node: this process's place in the cluster. It keeps the registry of
//! actors other nodes may reach by name, the connections to peer nodes, and
//! the watches that turn an actor's end, or its node's loss, into
//! [`PeerDown`] notices.
//!
//! Network work runs on the node's own small runtime thread, so heartbeats
//! keep their rhythm while task threads saturate every core.

mod connection;
#[cfg(test)]
mod hostile;
mod remote;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use actix::prelude::*;
use ember_certs::{NodeCredentials, NodeIdentity, Role};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::bulk::IncomingBulk;
use crate::down::{ExitReason, PeerDown};
use crate::frame::DEFAULT_MAX_FRAME;
use crate::mailbox::{Mailbox, SendError};
use crate::quic::{QuicEndpoint, QuicError, QuicOptions};
use crate::wire::{self, Header};
use crate::{ActorAddress, NodeId};

pub(crate) use connection::Peer;
use remote::{Inbox, RemoteActor, TypedInbox};

/// Limits and liveness settings of a node. The defaults notice a dead or
/// silent peer within a second on a LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeOptions {
    /// Largest control frame sent or accepted.
    pub max_frame: usize,
    /// How often each side says it is still there.
    pub heartbeat_interval: Duration,
    /// A peer heard from for this long is declared down.
    pub heartbeat_timeout: Duration,
    /// QUIC idle timeout and keep-alive.
    pub quic: QuicOptions,
    /// Bytes queued towards one peer before it counts as not reading and
    /// its connection is closed.
    pub max_queued_bytes: usize,
    /// Largest single Arrow IPC message on a bulk stream.
    pub max_bulk_message: usize,
    /// How long a new connection may take to say hello.
    pub handshake_timeout: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            heartbeat_interval: Duration::from_millis(200),
            heartbeat_timeout: Duration::from_millis(800),
            quic: QuicOptions::default(),
            max_queued_bytes: 64 * 1024 * 1024,
            max_bulk_message: 256 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Quic(#[from] QuicError),
    #[error("the node's network runtime cannot start: {0}")]
    Runtime(std::io::Error),
    #[error("an actor named '{0}' is already registered on this node")]
    NameTaken(String),
    #[error("{addr}: {why}")]
    Handshake { addr: SocketAddr, why: String },
    #[error("this node has no network endpoint: it was started for one process only")]
    NoNetwork,
}

/// Which peers may send to a registered actor, by the role in their
/// certificate. Actors on the same node may always send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    AnyRole,
    Roles(Vec<Role>),
}

impl Access {
    fn allows(&self, role: Role) -> bool {
        match self {
            Access::AnyRole => true,
            Access::Roles(roles) => roles.contains(&role),
        }
    }
}

/// A handle on this process's node; cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({})", self.inner.id)
    }
}

pub(crate) struct Inner {
    id: NodeId,
    options: NodeOptions,
    net: Option<Net>,
    actors: Mutex<HashMap<String, Entry>>,
    peers: Mutex<BTreeMap<NodeId, Arc<Peer>>>,
    /// Watches on actors of other nodes, by (node, actor name).
    remote_watches: Mutex<RemoteWatches>,
    bulk_inboxes: Mutex<HashMap<String, mpsc::Sender<IncomingBulk>>>,
    serial: AtomicU64,
    /// Tells this start of the node from any other.
    incarnation: u64,
}

/// A number unlikely to repeat across starts of a node.
fn new_incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 40) ^ 1
}

/// Watchers of actors on other nodes, by (node, actor name).
type RemoteWatches = BTreeMap<(NodeId, String), Vec<Recipient<PeerDown>>>;

struct Net {
    endpoint: QuicEndpoint,
    identity: NodeIdentity,
    handle: tokio::runtime::Handle,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

struct Entry {
    serial: u64,
    /// The actor's `Recipient<M>`, for mailboxes from this node.
    recipient: Box<dyn Any + Send + Sync>,
    inbox: Arc<dyn Inbox>,
    access: Access,
    local_watchers: Vec<Recipient<PeerDown>>,
    remote_watchers: BTreeSet<NodeId>,
}

/// How long a failed dial waits for the same node's own connection to us.
const SIMULTANEOUS_OPEN_WAIT: Duration = Duration::from_millis(300);

/// How long a closing node gives its close frames to leave.
const CLOSE_FLUSH: Duration = Duration::from_millis(5);

/// Whether a peer calling itself `node` may hold a certificate naming
/// `cert_name`: the name itself, or an instance of it (`NAME/...`).
pub(crate) fn is_instance_of(node: &str, cert_name: &str) -> bool {
    node == cert_name
        || node
            .strip_prefix(cert_name)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|instance| !instance.is_empty())
}

/// A node's id: its certificate's name, or `NAME/instance` for one of
/// several processes sharing the certificate.
fn instance_id(creds: &NodeCredentials, instance: Option<&str>) -> String {
    match instance {
        Some(instance) => format!("{}/{instance}", creds.identity.name),
        None => creds.identity.name.clone(),
    }
}

/// Poisoning only means another thread panicked while holding the lock;
/// the maps stay consistent between statements, so keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Node {
    /// A node for one process only: in-process mailboxes, no network.
    pub fn local(id: NodeId) -> Self {
        Self::with_net(id, NodeOptions::default(), None)
    }

    /// A node that listens on `listen` and talks to peers with `creds`. Its
    /// id is the name in its certificate.
    pub fn start(
        creds: &NodeCredentials,
        listen: SocketAddr,
        options: NodeOptions,
    ) -> Result<Self, NodeError> {
        Self::start_instance(creds, None, listen, options)
    }

    /// Like [`Node::start`], for one of several processes that share a
    /// certificate (a worker's executors, a client's applications): the
    /// node id is `NAME/instance`, so each is a peer of its own while its
    /// role is still the certificate's.
    pub fn start_instance(
        creds: &NodeCredentials,
        instance: Option<&str>,
        listen: SocketAddr,
        options: NodeOptions,
    ) -> Result<Self, NodeError> {
        let id = instance_id(creds, instance);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ember-net")
            .enable_all()
            .build()
            .map_err(NodeError::Runtime)?;
        let handle = runtime.handle().clone();
        let endpoint = {
            // quinn spawns its endpoint driver on the runtime it is made in.
            let _guard = handle.enter();
            QuicEndpoint::bind(listen, creds, &options.quic)?
        };
        let net = Net {
            endpoint,
            identity: creds.identity.clone(),
            handle,
            runtime: Mutex::new(Some(runtime)),
        };
        let node = Self::with_net(NodeId(id), options, Some(net));
        node.spawn_acceptor();
        Ok(node)
    }

    /// A node of a simulated cluster: like [`Node::start_instance`], on a
    /// simulated socket, with its network work on the caller's runtime (the
    /// simulation's one thread and virtual clock) instead of a thread of its
    /// own.
    pub fn start_simulated(
        creds: &NodeCredentials,
        instance: Option<&str>,
        socket: Arc<crate::sim::SimSocket>,
        options: NodeOptions,
        seed: u64,
    ) -> Result<Self, NodeError> {
        let id = instance_id(creds, instance);
        let handle = tokio::runtime::Handle::try_current().map_err(|e| {
            NodeError::Runtime(std::io::Error::other(format!(
                "a simulated node needs the simulation's runtime: {e}"
            )))
        })?;
        let mut endpoint_seed = [0u8; 32];
        endpoint_seed[..8].copy_from_slice(&seed.to_le_bytes());
        let endpoint = QuicEndpoint::bind_socket(socket, creds, &options.quic, endpoint_seed)?;
        let net = Net {
            endpoint,
            identity: creds.identity.clone(),
            handle,
            runtime: Mutex::new(None),
        };
        let node = Self::with_net(NodeId(id), options, Some(net));
        node.spawn_acceptor();
        Ok(node)
    }

    fn with_net(id: NodeId, options: NodeOptions, net: Option<Net>) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                options,
                net,
                actors: Mutex::new(HashMap::new()),
                peers: Mutex::new(BTreeMap::new()),
                remote_watches: Mutex::new(BTreeMap::new()),
                bulk_inboxes: Mutex::new(HashMap::new()),
                serial: AtomicU64::new(0),
                incarnation: new_incarnation(),
            }),
        }
    }

    pub fn id(&self) -> &NodeId {
        &self.inner.id
    }

    pub fn options(&self) -> &NodeOptions {
        &self.inner.options
    }

    /// The address peers dial.
    pub fn local_addr(&self) -> Result<SocketAddr, NodeError> {
        let net = self.inner.net()?;
        net.endpoint
            .local_addr()
            .map_err(|e| NodeError::Quic(QuicError::Config(e.to_string())))
    }

    /// The nodes connected now, with the identity their certificates prove.
    pub fn peers(&self) -> Vec<(NodeId, NodeIdentity)> {
        lock(&self.inner.peers)
            .values()
            .map(|p| (p.id.clone(), p.identity.clone()))
            .collect()
    }

    /// Connects to the node at `addr`, whose certificate must name
    /// `server_name`, and says hello; returns its node id.
    pub async fn connect(&self, addr: SocketAddr, server_name: &str) -> Result<NodeId, NodeError> {
        let net = self.inner.net()?;
        let endpoint = net.endpoint.clone();
        let inner = Arc::clone(&self.inner);
        let server_name = server_name.to_string();
        let task = net.handle.spawn(async move {
            let conn = endpoint.connect(addr, &server_name).await?;
            connection::establish(inner, conn, true).await
        });
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(e) => Err(NodeError::Handshake {
                addr,
                why: format!("the connection task ended: {e}"),
            }),
        };
        match outcome {
            Ok(id) => Ok(id),
            // The node there may have dialed us at the same moment and kept
            // its own connection instead of ours: that one will do.
            Err(e) => match self.await_peer_at(addr, SIMULTANEOUS_OPEN_WAIT).await {
                Some(id) => Ok(id),
                None => Err(e),
            },
        }
    }

    /// The node whose connection comes from `addr`, waiting up to `limit`
    /// for one to appear.
    async fn await_peer_at(&self, addr: SocketAddr, limit: Duration) -> Option<NodeId> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let found = lock(&self.inner.peers)
                .values()
                .find(|p| p.connection.remote_address() == addr)
                .map(|p| p.id.clone());
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn spawn_acceptor(&self) {
        let Some(net) = &self.inner.net else {
            return;
        };
        let endpoint = net.endpoint.clone();
        let weak = Arc::downgrade(&self.inner);
        net.handle.spawn(async move {
            // Each handshake goes on by itself: one peer that stalls
            // halfway (cut off on the way back, say) holds up nobody else.
            while let Some(handshake) = endpoint.incoming().await {
                if weak.strong_count() == 0 {
                    break;
                }
                let weak = weak.clone();
                tokio::spawn(async move {
                    let Some(conn) = handshake.finish().await else {
                        return;
                    };
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    let addr = conn.connection.remote_address();
                    if let Err(e) = connection::establish(inner, conn, false).await {
                        tracing::warn!(%addr, error = %e, "refused a peer");
                    }
                });
            }
        });
    }

    /// Makes the actor behind `recipient` reachable as `name` on this node,
    /// by peers whose role `access` allows. The name is released, and the
    /// actor's watchers told, when the returned registration is dropped; an
    /// actor keeps it as a field so that happens when the actor ends.
    pub fn register<M>(
        &self,
        name: &str,
        recipient: Recipient<M>,
        access: Access,
    ) -> Result<Registration, NodeError>
    where
        M: Message + DeserializeOwned + Send + 'static,
        M::Result: Serialize + Send + 'static,
    {
        let mut actors = lock(&self.inner.actors);
        if actors.contains_key(name) {
            return Err(NodeError::NameTaken(name.to_string()));
        }
        let serial = self.inner.serial.fetch_add(1, Ordering::Relaxed);
        let inbox = Arc::new(TypedInbox::new(
            recipient.clone(),
            self.inner.options.max_frame,
        ));
        actors.insert(
            name.to_string(),
            Entry {
                serial,
                recipient: Box::new(recipient),
                inbox,
                access,
                local_watchers: Vec::new(),
                remote_watchers: BTreeSet::new(),
            },
        );
        Ok(Registration {
            node: Arc::downgrade(&self.inner),
            name: name.to_string(),
            serial,
            reason: ExitReason::Failed("ended without saying why".to_string()),
        })
    }

    /// The mailbox of the actor at `address`: its own actix mailbox if it is
    /// registered on this node, a route over the connection to its node
    /// otherwise. The same calls work on both.
    pub fn mailbox<M>(&self, address: &ActorAddress) -> Result<Mailbox<M>, SendError>
    where
        M: Message + Serialize + DeserializeOwned + Send + 'static,
        M::Result: Serialize + DeserializeOwned + Send + 'static,
    {
        if address.node == self.inner.id {
            let actors = lock(&self.inner.actors);
            let entry = actors
                .get(&address.name)
                .ok_or_else(|| SendError::Closed(address.clone()))?;
            let recipient = entry
                .recipient
                .downcast_ref::<Recipient<M>>()
                .ok_or_else(|| {
                    SendError::Refused(
                        address.clone(),
                        wire::Refusal::Unreadable(format!(
                            "it is registered for messages other than {}",
                            std::any::type_name::<M>()
                        )),
                    )
                })?;
            return Ok(Mailbox::in_process(address.clone(), recipient.clone()));
        }
        let peer = self.inner.peer(&address.node).ok_or_else(|| {
            SendError::Unreachable(
                address.clone(),
                format!("node {} is not connected", address.node),
            )
        })?;
        let route = RemoteActor::<M>::new(peer, address.clone(), self.inner.options.max_frame);
        Ok(Mailbox::remote(address.clone(), Arc::new(route)))
    }

    /// `watcher` hears [`PeerDown`] once when the actor at `target` ends,
    /// or at once if it is not there; for an actor on another node, also
    /// when that node stops answering.
    pub fn monitor(&self, target: &ActorAddress, watcher: Recipient<PeerDown>) {
        if target.node == self.inner.id {
            let mut actors = lock(&self.inner.actors);
            match actors.get_mut(&target.name) {
                Some(entry) => entry.local_watchers.push(watcher),
                None => watcher.do_send(PeerDown {
                    peer: target.clone(),
                    reason: ExitReason::Failed("no actor of that name is registered".into()),
                }),
            }
            return;
        }
        let Some(peer) = self.inner.peer(&target.node) else {
            watcher.do_send(PeerDown {
                peer: target.clone(),
                reason: ExitReason::Unreachable(format!("node {} is not connected", target.node)),
            });
            return;
        };
        lock(&self.inner.remote_watches)
            .entry((target.node.clone(), target.name.clone()))
            .or_default()
            .push(watcher);
        let header = Header::Monitor {
            target: target.name.clone(),
        };
        if let Ok(frame) = wire::header_only(&header, self.inner.options.max_frame) {
            // A failed send means the connection is closing; its end delivers
            // the notice.
            let _ = peer.send(frame);
        }
    }

    /// Waits (up to `limit`) until every message sent so far has left this
    /// node's queues for QUIC; says whether they all did.
    pub async fn flush(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let pending = lock(&self.inner.peers)
                .values()
                .any(|p| p.is_open() && p.queued() > 0);
            if !pending {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Closes every connection and waits (up to `limit`) until peers have
    /// been told, so a process that exits next is seen leaving at once
    /// rather than after the heartbeat timeout; then stops the network.
    pub async fn close(&self, limit: Duration) {
        if let Some(net) = &self.inner.net {
            net.endpoint.close();
            // The close frames go out when the endpoint's driver next runs
            // on the network thread; waiting for the connections to drain
            // would take their full draining period.
            tokio::time::sleep(CLOSE_FLUSH.min(limit)).await;
        }
        self.shutdown();
    }

    /// Closes every connection, telling peers this node is going away, and
    /// stops the network thread.
    pub fn shutdown(&self) {
        let Some(net) = &self.inner.net else {
            return;
        };
        net.endpoint.close();
        if let Some(runtime) = lock(&net.runtime).take() {
            // Give the close frames a moment on the wire; `shutdown_timeout`
            // may not block inside an async context, so hand it to a thread.
            let _ = std::thread::Builder::new()
                .name("ember-net-stop".into())
                .spawn(move || runtime.shutdown_timeout(Duration::from_millis(100)));
        }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(net) = &self.net {
            net.endpoint.close();
            if let Some(runtime) = lock(&net.runtime).take() {
                runtime.shutdown_background();
            }
        }
    }
}

impl Inner {
    fn net(&self) -> Result<&Net, NodeError> {
        self.net.as_ref().ok_or(NodeError::NoNetwork)
    }

    pub(crate) fn id(&self) -> &NodeId {
        &self.id
    }

    pub(crate) fn options(&self) -> &NodeOptions {
        &self.options
    }

    pub(crate) fn identity(&self) -> Option<&NodeIdentity> {
        self.net.as_ref().map(|n| &n.identity)
    }

    pub(crate) fn peer(&self, id: &NodeId) -> Option<Arc<Peer>> {
        lock(&self.peers).get(id).cloned()
    }

    pub(crate) fn bulk_inbox(&self, name: &str) -> Option<mpsc::Sender<IncomingBulk>> {
        lock(&self.bulk_inboxes).get(name).cloned()
    }

    pub(crate) fn add_bulk_inbox(&self, name: &str, tx: mpsc::Sender<IncomingBulk>) -> bool {
        let mut inboxes = lock(&self.bulk_inboxes);
        if inboxes.get(name).is_some_and(|t| !t.is_closed()) {
            return false;
        }
        inboxes.insert(name.to_string(), tx);
        true
    }

    /// The inbox of actor `name` if a peer of `role` may send to it.
    pub(crate) fn inbox_for(
        &self,
        name: &str,
        role: Role,
    ) -> Result<Arc<dyn Inbox>, wire::Refusal> {
        let actors = lock(&self.actors);
        let entry = actors.get(name).ok_or(wire::Refusal::NoSuchActor)?;
        if !entry.access.allows(role) {
            return Err(wire::Refusal::Forbidden {
                role: role.to_string(),
            });
        }
        Ok(Arc::clone(&entry.inbox))
    }

    /// A peer asked to hear when `target` ends. Returns false if it is not
    /// registered (the caller answers with `Down` at once).
    pub(crate) fn add_remote_watcher(&self, target: &str, peer: &NodeId) -> bool {
        let mut actors = lock(&self.actors);
        match actors.get_mut(target) {
            Some(entry) => {
                entry.remote_watchers.insert(peer.clone());
                true
            }
            None => false,
        }
    }

    /// A connection is up: it becomes the route to its node.
    /// Makes `peer` the route to its node; returns false if it was turned
    /// down. A newer connection replaces an older one (the node may have
    /// restarted), except when both nodes dialed each other at once: then
    /// both sides keep the connection dialed by the smaller node id, so
    /// they agree on one.
    pub(crate) fn add_peer(&self, peer: Arc<Peer>) -> bool {
        let mut peers = lock(&self.peers);
        if let Some(old) = peers.get(&peer.id) {
            let simultaneous = old.incarnation == peer.incarnation && old.dialer != peer.dialer;
            if simultaneous && old.dialer < peer.dialer {
                drop(peers);
                peer.close(
                    wire::codes::REPLACED,
                    "both nodes dialed; the other connection is kept",
                );
                return false;
            }
        }
        let old = peers.insert(peer.id.clone(), peer);
        drop(peers);
        if let Some(old) = old {
            old.close(
                wire::codes::REPLACED,
                "a newer connection from the same node",
            );
        }
        true
    }

    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// A connection ended. If it was still its node's route, everything
    /// watching an actor there hears that the node is unreachable.
    pub(crate) fn remove_peer(&self, peer: &Arc<Peer>, why: &str) {
        {
            let mut peers = lock(&self.peers);
            match peers.get(&peer.id) {
                Some(current) if Arc::ptr_eq(current, peer) => {
                    peers.remove(&peer.id);
                }
                _ => return,
            }
        }
        let watches: Vec<_> = {
            let mut all = lock(&self.remote_watches);
            let keys: Vec<_> = all.keys().filter(|(n, _)| n == &peer.id).cloned().collect();
            keys.into_iter()
                .filter_map(|k| all.remove(&k).map(|w| (k, w)))
                .collect()
        };
        for ((node, name), watchers) in watches {
            for watcher in watchers {
                watcher.do_send(PeerDown {
                    peer: ActorAddress {
                        node: node.clone(),
                        name: name.clone(),
                    },
                    reason: ExitReason::Unreachable(format!("node {node}: {why}")),
                });
            }
        }
        for entry in lock(&self.actors).values_mut() {
            entry.remote_watchers.remove(&peer.id);
        }
    }

    /// Actor `name` on peer `node` ended, as that node says.
    pub(crate) fn remote_down(&self, node: &NodeId, name: &str, reason: ExitReason) {
        let watchers = lock(&self.remote_watches).remove(&(node.clone(), name.to_string()));
        for watcher in watchers.into_iter().flatten() {
            watcher.do_send(PeerDown {
                peer: ActorAddress {
                    node: node.clone(),
                    name: name.to_string(),
                },
                reason: reason.clone(),
            });
        }
    }

    fn unregister(&self, name: &str, serial: u64, reason: ExitReason) {
        let entry = {
            let mut actors = lock(&self.actors);
            match actors.get(name) {
                Some(e) if e.serial == serial => actors.remove(name),
                _ => None,
            }
        };
        let Some(entry) = entry else {
            return;
        };
        let address = ActorAddress {
            node: self.id.clone(),
            name: name.to_string(),
        };
        for watcher in entry.local_watchers {
            watcher.do_send(PeerDown {
                peer: address.clone(),
                reason: reason.clone(),
            });
        }
        let header = Header::Down {
            actor: name.to_string(),
            reason,
        };
        let Ok(frame) = wire::header_only(&header, self.options.max_frame) else {
            return;
        };
        for node in entry.remote_watchers {
            if let Some(peer) = self.peer(&node) {
                let _ = peer.send(frame.clone());
            }
        }
    }
}

/// An actor's registration on its node. Dropping it releases the name and
/// tells every watcher, here and on other nodes, that the actor ended.
pub struct Registration {
    node: Weak<Inner>,
    name: String,
    serial: u64,
    reason: ExitReason,
}

impl Registration {
    /// Records why the actor is ending, for the notices sent on drop.
    pub fn set_reason(&mut self, reason: ExitReason) {
        self.reason = reason;
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(node) = self.node.upgrade() {
            let reason = std::mem::replace(&mut self.reason, ExitReason::Normal);
            node.unregister(&self.name, self.serial, reason);
        }
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registration({})", self.name)
    }
}
