//! Shuffle blocks between executor processes: the [`BlockServer`] that
//! answers another executor's fetch with a bulk stream, and the
//! [`RemoteFetcher`] a reduce task reads remote blocks through.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::prelude::*;
use datafusion::arrow::datatypes::Schema;
use ember_engine::shuffle::read_blocks;
use ember_engine::{BlockFetcher, BlockStore, EngineError, FetchedBatches, ShuffleBlockId};
use ember_transport::{ActorAddress, Node, Registration, SendError};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::task::JoinHandle;

use super::hub::{Batches, BulkHub};
use super::wire::{
    BLOCK_FILES, BLOCKS, BLOCKS_INBOX, BlockFile, FetchBlocks, FetchRefused, LocateBlocks,
    NodeContact, block_id, wire_block,
};

/// Serves this executor's shuffle blocks to other executors.
pub struct BlockServer {
    node: Node,
    store: Arc<BlockStore>,
    registrations: Vec<Registration>,
}

impl BlockServer {
    pub fn new(node: Node, store: Arc<BlockStore>) -> Self {
        Self {
            node,
            store,
            registrations: Vec::new(),
        }
    }
}

impl Actor for BlockServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Executors, and drivers reading held result rows (a client-mode
        // driver holds a client certificate).
        let access = ember_transport::Access::Roles(vec![
            ember_certs::Role::Worker,
            ember_certs::Role::Client,
        ]);
        let registered = self
            .node
            .register(
                BLOCKS,
                ctx.address().recipient::<FetchBlocks>(),
                access.clone(),
            )
            .and_then(|blocks| {
                let files = self.node.register(
                    BLOCK_FILES,
                    ctx.address().recipient::<LocateBlocks>(),
                    access,
                )?;
                Ok([blocks, files])
            });
        match registered {
            Ok(registrations) => self.registrations = registrations.into(),
            Err(e) => {
                tracing::error!(error = %e, "cannot serve shuffle blocks");
                ctx.stop();
            }
        }
    }
}

impl Handler<LocateBlocks> for BlockServer {
    type Result = Result<Option<Vec<BlockFile>>, FetchRefused>;

    fn handle(&mut self, msg: LocateBlocks, _ctx: &mut Context<Self>) -> Self::Result {
        let ids: Vec<ShuffleBlockId> = msg.blocks.into_iter().map(block_id).collect();
        match self.store.located(&ids) {
            Ok(located) => Ok(located.map(|l| l.iter().map(BlockFile::from_located).collect())),
            Err(EngineError::MissingBlock(id)) => Err(FetchRefused::missing(id)),
            Err(e) => Err(FetchRefused::Store(e.to_string())),
        }
    }
}

impl Handler<FetchBlocks> for BlockServer {
    type Result = ResponseFuture<Result<usize, FetchRefused>>;

    fn handle(&mut self, msg: FetchBlocks, _ctx: &mut Context<Self>) -> Self::Result {
        let ids: Vec<ShuffleBlockId> = msg.blocks.iter().copied().map(block_id).collect();
        // A block that is not here is refused before anything is sent; one
        // that turns out damaged while it is read breaks the stream off.
        if let Some(&id) = ids.iter().find(|id| !self.store.contains(**id)) {
            let missing = FetchRefused::missing(id);
            return Box::pin(async move { Err(missing) });
        }
        let node = self.node.clone();
        // Blocks in files go out as they are stored: no decoding, no
        // encoding again, and compressed on the wire.
        match self.store.raw(&ids) {
            Ok(Some(raw)) => {
                let schema = Arc::clone(&raw.schema);
                let messages = raw
                    .read()
                    .map(|item| item.map(|b| (b.bytes, b.rows)).map_err(|e| e.to_string()));
                return Box::pin(async move {
                    node.send_ipc_messages(&msg.reply_to, &msg.tag, schema, messages)
                        .await
                        .map(|sent| sent.rows)
                        .map_err(|e| FetchRefused::NotSent(e.to_string()))
                });
            }
            Ok(None) => {}
            Err(e) => {
                let why = FetchRefused::NotSent(e.to_string());
                return Box::pin(async move { Err(why) });
            }
        }
        let batches = read_blocks(Arc::clone(&self.store), ids)
            .map(|item| item.map_err(|(id, e)| format!("block {id}: {e}")));
        Box::pin(async move {
            let mut batches = batches.peekable();
            // The stream's schema is its first batch's.
            let schema = match std::pin::Pin::new(&mut batches).peek().await {
                Some(Ok(first)) => first.schema(),
                _ => Arc::new(Schema::empty()),
            };
            node.send_batch_stream(&msg.reply_to, &msg.tag, schema, batches)
                .await
                .map(|sent| sent.rows)
                .map_err(|e| FetchRefused::NotSent(e.to_string()))
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
    /// This node's address, when blocks of executors at the same address
    /// (the same host) are read from their files.
    host_local: Option<std::net::IpAddr>,
    /// Blocks read from files on this host, and fetched.
    read_on_host: Arc<AtomicU64>,
    fetched: Arc<AtomicU64>,
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
            host_local: None,
            read_on_host: Arc::default(),
            fetched: Arc::default(),
        })
    }

    /// Reads the blocks of executors on this host from their files
    /// (Spark's `spark.shuffle.readHostLocalDisk`) instead of having them
    /// sent: no encryption, no network stack, and no work for the executor
    /// that holds them.
    pub fn reading_host_local_files(mut self) -> Self {
        self.host_local = self.node.local_addr().ok().map(|a| a.ip());
        self
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

    /// Opens a fetch, trying again when the connection (not the block)
    /// failed before any batch came: two executors that dial each other at
    /// once lose one connection, and what was in flight on it. Once batches
    /// flow, a failure ends the stream instead: they were handed on.
    async fn fetch_from(
        self,
        contact: NodeContact,
        blocks: Vec<ShuffleBlockId>,
    ) -> Result<FetchedBatches, String> {
        // Blocks on this host are read from their files. The ask is made
        // twice when the way to the executor failed (it may be lost with
        // its connection when both executors dial each other at once);
        // otherwise, or after that, they are fetched.
        let mut attempt = 0;
        while self.host_local == Some(contact.addr.ip()) {
            match self.read_host_local(&contact, &blocks).await {
                Ok(Some(batches)) => {
                    self.read_on_host
                        .fetch_add(blocks.len() as u64, Ordering::Relaxed);
                    return Ok(batches);
                }
                Ok(None) => break,
                Err(FetchFailure::Connection(why)) if attempt == 0 => {
                    attempt += 1;
                    tracing::debug!(peer = %contact.node, %why, "locating blocks on this host retried");
                }
                Err(FetchFailure::Connection(why) | FetchFailure::Refused(why)) => {
                    tracing::debug!(peer = %contact.node, %why, "blocks on this host are fetched instead");
                    break;
                }
            }
        }
        let mut attempt = 0;
        loop {
            match self.fetch_once(&contact, &blocks).await {
                Err(FetchFailure::Connection(why)) if attempt < CONNECTION_RETRIES => {
                    attempt += 1;
                    tracing::debug!(peer = %contact.node, %why, attempt, "fetch retried");
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                }
                Err(FetchFailure::Connection(why) | FetchFailure::Refused(why)) => return Err(why),
                Ok(batches) => {
                    self.fetched
                        .fetch_add(blocks.len() as u64, Ordering::Relaxed);
                    return Ok(batches);
                }
            }
        }
    }

    /// Connects to the executor unless this node already is.
    async fn reach(&self, contact: &NodeContact) -> Result<(), String> {
        if self.node.peers().iter().any(|(id, _)| *id == contact.node) {
            return Ok(());
        }
        let began = std::time::Instant::now();
        let _dialing = self.dialing.lock().await;
        if !self.node.peers().iter().any(|(id, _)| *id == contact.node) {
            self.node
                .connect(contact.addr, &contact.host)
                .await
                .map_err(|e| format!("cannot reach executor {}: {e}", contact.node))?;
            tracing::debug!(peer = %contact.node, took_ms = began.elapsed().as_secs_f64() * 1e3, "dialed executor");
        }
        Ok(())
    }

    /// The blocks read from the files of the executor holding them, on
    /// this host: it says where they lie, and this task opens them.
    /// `Ok(None)` when some are held in memory; an error when they cannot
    /// be read from here (the caller then fetches them), a `Connection`
    /// one when the way to the executor failed.
    async fn read_host_local(
        &self,
        contact: &NodeContact,
        blocks: &[ShuffleBlockId],
    ) -> Result<Option<FetchedBatches>, FetchFailure> {
        use FetchFailure::{Connection, Refused};
        self.reach(contact).await.map_err(Connection)?;
        let server = self
            .node
            .mailbox::<LocateBlocks>(&contact.actor(BLOCK_FILES))
            .map_err(|e| Connection(e.to_string()))?;
        let request = LocateBlocks {
            blocks: blocks.iter().copied().map(wire_block).collect(),
        };
        let answer = server.ask(request, self.timeout).await?;
        let Some(files) = answer.map_err(|e| Refused(e.to_string()))? else {
            return Ok(None);
        };
        let located: Vec<_> = files.iter().map(BlockFile::located).collect();
        if located.iter().map(|l| l.id).ne(blocks.iter().copied()) {
            return Err(Refused(
                "the executor located other blocks than asked".to_string(),
            ));
        }
        // Every file is opened before any batch is handed on: a block that
        // cannot be read from here is fetched whole instead.
        let opened = tokio::task::spawn_blocking(move || {
            located
                .iter()
                .map(|l| l.open())
                .collect::<Result<Vec<_>, EngineError>>()
        })
        .await
        .map_err(|e| Refused(e.to_string()))?
        .map_err(|e| Refused(e.to_string()))?;
        tracing::debug!(peer = %contact.node, blocks = blocks.len(), "blocks read from files on this host");
        let batches = futures::stream::iter(opened)
            .flat_map(ember_engine::shuffle::read_on_blocking_pool)
            .boxed();
        Ok(Some(batches))
    }

    async fn fetch_once(
        &self,
        contact: &NodeContact,
        blocks: &[ShuffleBlockId],
    ) -> Result<FetchedBatches, FetchFailure> {
        use FetchFailure::{Connection, Refused};
        let began = std::time::Instant::now();
        self.reach(contact).await.map_err(Connection)?;
        let server = self
            .node
            .mailbox::<FetchBlocks>(&contact.actor(BLOCKS))
            .map_err(|e| Connection(e.to_string()))?;
        let tag = format!("fetch-{}", self.next_tag.fetch_add(1, Ordering::Relaxed));
        let request = FetchBlocks {
            blocks: blocks.iter().copied().map(wire_block).collect(),
            reply_to: ActorAddress {
                node: self.node.id().clone(),
                name: BLOCKS_INBOX.to_string(),
            },
            tag: tag.clone(),
        };
        // Expected before it is asked for, so the batches stream to this
        // reader as they come rather than being gathered first.
        let arrival = self.hub.expect(&tag);
        let timeout = self.timeout;
        // The executor answers once every batch has been received (or at
        // once, to say no): the stream's end waits for that answer.
        // Its refusal read as words from here on: they end up in a
        // fetch failure's message.
        let mut answer: JoinHandle<Answered> = tokio::spawn(async move {
            let answered = server.ask(request, WHOLE_FETCH_BOUND).await;
            answered.map(|sent| sent.map_err(|why| why.to_string()))
        });
        let refused = |answered: Answered| match answered {
            Ok(Ok(_)) => None,
            Ok(Err(why)) => Some(Refused(why)),
            Err(e) => Some(e.into()),
        };
        let started = tokio::time::timeout(timeout, async {
            tokio::pin!(arrival);
            tokio::select! {
                batches = &mut arrival => batches.map(|b| (b, None)).map_err(|_| Connection("the bulk inbox closed".into())),
                answered = &mut answer => {
                    let answered = answered.unwrap_or_else(|e| Ok(Err(e.to_string())));
                    if let Some(failure) = refused(answered.clone()) {
                        return Err(failure);
                    }
                    // Every batch went out before the answer: they are here.
                    arrival.await.map(|b| (b, Some(answered))).map_err(|_| Connection("the bulk inbox closed".into()))
                }
            }
        })
        .await;
        let (batches, answered) = match started {
            Ok(Ok(started)) => started,
            Ok(Err(failure)) => {
                self.hub.forget(&tag);
                answer.abort();
                return Err(failure);
            }
            Err(_) => {
                self.hub.forget(&tag);
                answer.abort();
                return Err(Connection(format!(
                    "the blocks did not start to arrive within {timeout:?}"
                )));
            }
        };
        tracing::debug!(peer = %contact.node, blocks = blocks.len(), first_ms = began.elapsed().as_secs_f64() * 1e3, "remote blocks arriving");
        let answer = match answered {
            Some(answered) => Answer::Given(answered),
            None => Answer::Awaited(answer),
        };
        Ok(confirmed(batches, answer, timeout))
    }
}

type Answered = Result<Result<usize, String>, SendError>;

/// The executor's answer to a fetch: given already, or still to come.
enum Answer {
    Given(Answered),
    Awaited(JoinHandle<Answered>),
}

/// The batches as they come; at their end, the executor's answer says it
/// sent them all and how many rows they held, so a stream cut short is
/// never taken for a whole one.
fn confirmed(batches: Batches, answer: Answer, timeout: Duration) -> FetchedBatches {
    struct State {
        batches: Batches,
        answer: Option<Answer>,
        rows: usize,
    }
    let state = State {
        batches,
        answer: Some(answer),
        rows: 0,
    };
    futures::stream::unfold(state, move |mut state| async move {
        let answer = state.answer.take()?;
        match state.batches.next().await {
            Some(Ok(batch)) => {
                state.rows += batch.num_rows();
                state.answer = Some(answer);
                Some((Ok(batch), state))
            }
            Some(Err(e)) => Some((Err(EngineError::Fetch(e.to_string())), state)),
            None => {
                let waited = std::time::Instant::now();
                let answered = match answer {
                    Answer::Given(answered) => Ok(answered),
                    Answer::Awaited(handle) => tokio::time::timeout(timeout, handle)
                        .await
                        .map(|joined| joined.unwrap_or_else(|e| Ok(Err(e.to_string())))),
                };
                tracing::debug!(
                    rows = state.rows,
                    confirm_ms = waited.elapsed().as_secs_f64() * 1e3,
                    "remote blocks ended"
                );
                match answered {
                    Ok(Ok(Ok(sent))) if sent == state.rows => None,
                    Ok(Ok(Ok(sent))) => Some((
                        Err(EngineError::Fetch(format!(
                            "{} rows arrived of the {sent} the executor sent",
                            state.rows
                        ))),
                        state,
                    )),
                    Ok(Ok(Err(why))) => Some((Err(EngineError::Fetch(why)), state)),
                    Ok(Err(e)) => Some((Err(EngineError::Fetch(e.to_string())), state)),
                    Err(_) => Some((
                        Err(EngineError::Fetch(format!(
                            "the executor did not confirm the blocks within {timeout:?}"
                        ))),
                        state,
                    )),
                }
            }
        }
    })
    .boxed()
}

/// How long the executor's answer may take: it comes once the reader has
/// taken every batch, which takes as long as the reading task does. A
/// lost executor or connection fails it long before (the transport's
/// heartbeats), and the start and end of a fetch have `timeout` each.
const WHOLE_FETCH_BOUND: Duration = Duration::from_secs(24 * 3600);

/// Attempts at a fetch whose connection failed.
const CONNECTION_RETRIES: u32 = 3;

enum FetchFailure {
    /// The way to the executor failed; another try may succeed.
    Connection(String),
    /// The executor answered no (a missing block), or the request timed out.
    Refused(String),
}

impl From<SendError> for FetchFailure {
    /// An ask that got no answer: the way failed, or it timed out.
    fn from(e: SendError) -> Self {
        match e {
            SendError::Unreachable(..) | SendError::Closed(_) => Self::Connection(e.to_string()),
            e => Self::Refused(e.to_string()),
        }
    }
}

impl BlockFetcher for RemoteFetcher {
    fn fetch(
        &self,
        location: &str,
        blocks: Vec<ShuffleBlockId>,
    ) -> BoxFuture<'static, Result<FetchedBatches, EngineError>> {
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

    fn blocks_read(&self) -> (u64, u64) {
        (
            self.read_on_host.load(Ordering::Relaxed),
            self.fetched.load(Ordering::Relaxed),
        )
    }
}
