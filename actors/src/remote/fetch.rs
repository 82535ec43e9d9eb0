//! Shuffle blocks between executor processes: the [`BlockServer`] that
//! answers another executor's fetch with a bulk stream, and the
//! [`RemoteFetcher`] a reduce task reads remote blocks through.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::prelude::*;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use ember_engine::{BlockFetcher, BlockStore, EngineError, ShuffleBlockId};
use ember_transport::{ActorAddress, Node, Registration};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::hub::BulkHub;
use super::wire::{BLOCKS, BLOCKS_INBOX, FetchBlocks, NodeContact};

/// Serves this executor's shuffle blocks to other executors.
pub struct BlockServer {
    node: Node,
    store: Arc<dyn BlockStore>,
    registration: Option<Registration>,
}

impl BlockServer {
    pub fn new(node: Node, store: Arc<dyn BlockStore>) -> Self {
        Self {
            node,
            store,
            registration: None,
        }
    }
}

impl Actor for BlockServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let access = ember_transport::Access::Roles(vec![ember_certs::Role::Worker]);
        match self
            .node
            .register(BLOCKS, ctx.address().recipient::<FetchBlocks>(), access)
        {
            Ok(registration) => self.registration = Some(registration),
            Err(e) => {
                tracing::error!(error = %e, "cannot serve shuffle blocks");
                ctx.stop();
            }
        }
    }
}

impl Handler<FetchBlocks> for BlockServer {
    type Result = ResponseFuture<Result<usize, String>>;

    fn handle(&mut self, msg: FetchBlocks, _ctx: &mut Context<Self>) -> Self::Result {
        let mut batches = Vec::new();
        for (stage, map, reduce) in &msg.blocks {
            let id = ShuffleBlockId {
                stage: *stage,
                map: *map,
                reduce: *reduce,
            };
            match self.store.get(id) {
                Ok(block) => batches.extend(block),
                Err(e) => {
                    let why = e.to_string();
                    return Box::pin(async move { Err(why) });
                }
            }
        }
        let node = self.node.clone();
        Box::pin(async move {
            let schema = batches
                .first()
                .map(RecordBatch::schema)
                .unwrap_or_else(|| Arc::new(Schema::empty()));
            node.send_batches(&msg.reply_to, &msg.tag, schema, batches)
                .await
                .map(|sent| sent.rows)
                .map_err(|e| e.to_string())
        })
    }
}

/// Reads blocks held by other executors of the same application.
#[derive(Clone)]
pub struct RemoteFetcher {
    node: Node,
    hub: BulkHub,
    peers: Arc<Mutex<BTreeMap<String, NodeContact>>>,
    /// One connection attempt at a time, so two tasks never race to dial
    /// the same executor.
    dialing: Arc<tokio::sync::Mutex<()>>,
    next_tag: Arc<AtomicU64>,
    timeout: Duration,
}

impl std::fmt::Debug for RemoteFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteFetcher({})", self.node.id())
    }
}

impl RemoteFetcher {
    /// Opens this executor's block inbox; must run inside a tokio runtime.
    pub fn open(node: Node, timeout: Duration) -> Result<Self, ember_transport::BulkError> {
        let hub = BulkHub::open(&node, BLOCKS_INBOX)?;
        Ok(Self {
            node,
            hub,
            peers: Arc::default(),
            dialing: Arc::default(),
            next_tag: Arc::default(),
            timeout,
        })
    }

    /// Remembers how to reach these executors.
    pub fn learn(&self, peers: BTreeMap<String, NodeContact>) {
        if peers.is_empty() {
            return;
        }
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(peers);
    }

    fn contact(&self, location: &str) -> Option<NodeContact> {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(location)
            .cloned()
    }

    /// Fetches, trying again when the connection (not the block) failed:
    /// two executors that dial each other at once lose one connection, and
    /// what was in flight on it.
    async fn fetch_from(
        self,
        contact: NodeContact,
        blocks: Vec<ShuffleBlockId>,
    ) -> Result<Vec<RecordBatch>, String> {
        let mut attempt = 0;
        loop {
            match self.fetch_once(&contact, &blocks).await {
                Err(FetchFailure::Connection(why)) if attempt < CONNECTION_RETRIES => {
                    attempt += 1;
                    tracing::debug!(peer = %contact.node, %why, attempt, "fetch retried");
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                }
                Err(FetchFailure::Connection(why) | FetchFailure::Refused(why)) => return Err(why),
                Ok(rows) => return Ok(rows),
            }
        }
    }

    async fn fetch_once(
        &self,
        contact: &NodeContact,
        blocks: &[ShuffleBlockId],
    ) -> Result<Vec<RecordBatch>, FetchFailure> {
        use FetchFailure::{Connection, Refused};
        if !self.node.peers().iter().any(|(id, _)| *id == contact.node) {
            let _dialing = self.dialing.lock().await;
            if !self.node.peers().iter().any(|(id, _)| *id == contact.node) {
                self.node
                    .connect(contact.addr, &contact.host)
                    .await
                    .map_err(|e| {
                        Connection(format!("cannot reach executor {}: {e}", contact.node))
                    })?;
            }
        }
        let server = self
            .node
            .mailbox::<FetchBlocks>(&contact.actor(BLOCKS))
            .map_err(|e| Connection(e.to_string()))?;
        let tag = format!("fetch-{}", self.next_tag.fetch_add(1, Ordering::Relaxed));
        let request = FetchBlocks {
            blocks: blocks.iter().map(|b| (b.stage, b.map, b.reduce)).collect(),
            reply_to: ActorAddress {
                node: self.node.id().clone(),
                name: BLOCKS_INBOX.to_string(),
            },
            tag: tag.clone(),
        };
        match server.ask(request, self.timeout).await {
            Ok(Ok(_rows)) => self.hub.take(&tag, self.timeout).await.map_err(Connection),
            Ok(Err(why)) => {
                self.hub.forget(&tag);
                Err(Refused(why))
            }
            Err(e) => {
                self.hub.forget(&tag);
                Err(match e {
                    ember_transport::SendError::Unreachable(..)
                    | ember_transport::SendError::Closed(_) => Connection(e.to_string()),
                    other => Refused(other.to_string()),
                })
            }
        }
    }
}

/// Attempts at a fetch whose connection failed.
const CONNECTION_RETRIES: u32 = 3;

enum FetchFailure {
    /// The way to the executor failed; another try may succeed.
    Connection(String),
    /// The executor answered no (a missing block), or the request timed out.
    Refused(String),
}

impl BlockFetcher for RemoteFetcher {
    fn fetch(
        &self,
        location: &str,
        blocks: Vec<ShuffleBlockId>,
    ) -> BoxFuture<'static, Result<Vec<RecordBatch>, EngineError>> {
        let location = location.to_string();
        let Some(contact) = self.contact(&location) else {
            return futures::future::ready(Err(EngineError::Fetch(format!(
                "no address known for executor {location}"
            ))))
            .boxed();
        };
        let fetcher = self.clone();
        async move {
            fetcher
                .fetch_from(contact, blocks)
                .await
                .map_err(|why| EngineError::Fetch(format!("from executor {location}: {why}")))
        }
        .boxed()
    }
}
