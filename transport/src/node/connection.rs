//! One connection to a peer node: the hello, then a control stream each
//! way carrying frames in order, a heartbeat, and a watchdog that declares
//! the peer down when nothing has arrived for the heartbeat timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::{Bytes, BytesMut};
use ember_certs::NodeIdentity;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::remote::Delivery;
use super::{Inner, NodeError, lock};
use crate::NodeId;
use crate::frame::{FrameDecoder, FrameError};
use crate::handshake::{HandshakeError, Hello, exchange_hello};
use crate::quic::{PeerConnection, QuicError};
use crate::wire::{self, Header, Refusal, codes};

/// How an ask ended on the wire.
pub(crate) enum Answer {
    Reply(Bytes),
    Refused(Refusal),
    Lost(String),
}

/// A connected, verified peer node.
pub(crate) struct Peer {
    pub(crate) id: NodeId,
    pub(crate) identity: NodeIdentity,
    /// The peer process's incarnation, from its hello.
    pub(crate) incarnation: u64,
    /// The node that opened this connection.
    pub(crate) dialer: NodeId,
    pub(crate) connection: quinn::Connection,
    out: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    pending: Mutex<BTreeMap<u64, oneshot::Sender<Answer>>>,
    next_ask: AtomicU64,
    /// Set once the connection is closed, by either side; cheaper to check
    /// per message than asking quinn.
    closed: AtomicBool,
    /// Whether its bulk streams wait for their readers here.
    pub(crate) held: Arc<crate::bulk::HeldBack>,
}

impl Peer {
    /// Queues one frame for the control stream. Frames from one thread keep
    /// their order. A peer that lets too much pile up is not reading: its
    /// connection is closed rather than letting the queue grow.
    pub(crate) fn send(&self, frame: Bytes) -> Result<(), String> {
        if let Some(why) = self.connection.close_reason() {
            return Err(format!(
                "the connection to node {} is closed: {why}",
                self.id
            ));
        }
        let len = frame.len();
        let queued = self.queued.fetch_add(len, Ordering::AcqRel) + len;
        if queued > self.max_queued {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            let why = format!(
                "node {} is not reading: {queued} bytes are queued for it, above the limit of {}",
                self.id, self.max_queued
            );
            tracing::warn!(peer = %self.id, "{why}; closing the connection");
            self.close(codes::SLOW_PEER, &why);
            return Err(why);
        }
        self.out.send(frame).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            format!("the connection to node {} is closed", self.id)
        })
    }

    pub(crate) fn close(&self, code: u32, why: &str) {
        // Keep the reason short enough for one packet.
        let reason: String = why.chars().take(200).collect();
        self.closed.store(true, Ordering::Release);
        self.connection
            .close(quinn::VarInt::from_u32(code), reason.as_bytes());
    }

    /// Bytes queued for the control stream and not yet handed to QUIC.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub(crate) fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    /// Registers an ask; its answer arrives on the returned channel.
    pub(crate) fn start_ask(&self) -> (u64, oneshot::Receiver<Answer>) {
        let id = self.next_ask.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        (id, rx)
    }

    /// Drops an ask nobody waits for any more (it timed out).
    pub(crate) fn forget_ask(&self, id: u64) {
        lock(&self.pending).remove(&id);
    }

    fn answer(&self, id: u64, answer: Answer) {
        // A late answer to an ask that timed out has nobody to go to.
        if let Some(tx) = lock(&self.pending).remove(&id) {
            let _ = tx.send(answer);
        }
    }

    fn fail_pending(&self, why: &str) {
        for (_, tx) in std::mem::take(&mut *lock(&self.pending)) {
            let _ = tx.send(Answer::Lost(why.to_string()));
        }
    }
}

fn handshake_code(e: &HandshakeError) -> u32 {
    match e {
        HandshakeError::Frame(FrameError::TooLarge { .. }) => codes::TOO_LARGE,
        HandshakeError::Frame(_) => codes::PROTOCOL,
        HandshakeError::VersionMismatch { .. } | HandshakeError::Closed => codes::HANDSHAKE,
    }
}

fn frame_code(e: &FrameError) -> u32 {
    match e {
        FrameError::TooLarge { .. } => codes::TOO_LARGE,
        _ => codes::PROTOCOL,
    }
}

/// Says hello on a fresh connection and, if the peer answers in kind, makes
/// it the route to its node and starts its tasks.
pub(crate) async fn establish(
    inner: Arc<Inner>,
    conn: PeerConnection,
    dialer: bool,
) -> Result<NodeId, NodeError> {
    let PeerConnection {
        connection,
        peer: identity,
    } = conn;
    let addr = connection.remote_address();
    let options = *inner.options();
    let role = inner
        .identity()
        .map(|i| i.role.to_string())
        .unwrap_or_default();
    let ours = Hello {
        incarnation: inner.incarnation(),
        ..Hello::new(role, inner.id().0.clone())
    };
    let refuse = |code: u32, why: String| {
        let reason: String = why.chars().take(200).collect();
        connection.close(quinn::VarInt::from_u32(code), reason.as_bytes());
        NodeError::Handshake { addr, why }
    };

    let streams = async {
        if dialer {
            connection.open_bi().await
        } else {
            connection.accept_bi().await
        }
    };
    let hello = async {
        let (mut send, mut recv) = streams
            .await
            .map_err(|e| (codes::HANDSHAKE, format!("no control stream: {e}")))?;
        let theirs = exchange_hello(&mut recv, &mut send, &ours, options.max_frame)
            .await
            .map_err(|e| (handshake_code(&e), e.to_string()))?;
        Ok::<_, (u32, String)>((send, recv, theirs))
    };
    let (send, recv, theirs) = match tokio::time::timeout(options.handshake_timeout, hello).await {
        Ok(Ok(done)) => done,
        Ok(Err((code, why))) => {
            // In TLS 1.3 a client finishes its handshake before the server
            // checks its certificate, so a refusal shows up here, as the
            // connection's end, and not as a failed connect.
            let refusal = connection
                .close_reason()
                .as_ref()
                .and_then(crate::quic::certificate_refusal);
            if let Some(refusal) = refusal {
                return Err(NodeError::Quic(QuicError::CertificateRefused {
                    addr,
                    refusal,
                }));
            }
            return Err(refuse(code, why));
        }
        Err(_) => {
            return Err(refuse(
                codes::HANDSHAKE,
                format!("no hello within {:?}", options.handshake_timeout),
            ));
        }
    };
    if !crate::node::is_instance_of(&theirs.node, &identity.name) {
        return Err(refuse(
            codes::HANDSHAKE,
            format!(
                "the peer says it is node '{}' but its certificate names '{}' \
                 (a node may only be '{}' or '{}/INSTANCE')",
                theirs.node, identity.name, identity.name, identity.name
            ),
        ));
    }

    let (out, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let peer = Arc::new(Peer {
        id: NodeId(theirs.node.clone()),
        identity,
        incarnation: theirs.incarnation,
        dialer: if dialer {
            inner.id().clone()
        } else {
            NodeId(theirs.node.clone())
        },
        connection,
        out,
        queued: Arc::clone(&queued),
        max_queued: options.max_queued_bytes,
        pending: Mutex::new(BTreeMap::new()),
        next_ask: AtomicU64::new(0),
        closed: AtomicBool::new(false),
        held: Arc::default(),
    });
    if !inner.add_peer(Arc::clone(&peer)) {
        // Both sides dialed at once and this connection lost; the other
        // one is the route to this node.
        return Ok(peer.id.clone());
    }
    tracing::info!(peer = %peer.id, role = %peer.identity.role, %addr, "connected");
    let node = Arc::downgrade(&inner);
    drop(inner);

    tokio::spawn(write_loop(send, rx, queued));
    tokio::spawn(heartbeat(
        Arc::clone(&peer),
        options.heartbeat_interval,
        options.max_frame,
    ));
    tokio::spawn(crate::bulk::accept_streams(node.clone(), Arc::clone(&peer)));
    tokio::spawn(read_loop(node, Arc::clone(&peer), recv));
    Ok(peer.id.clone())
}

/// Frames smaller than this are copied together before writing.
const COALESCE_BELOW: usize = 4096;
/// Bytes taken from the queue for one write call.
const WRITE_BATCH: usize = 256 * 1024;

/// Writes queued frames, many per write call when they pile up.
async fn write_loop(
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
) {
    let mut chunks: Vec<Bytes> = Vec::with_capacity(64);
    let mut small = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let mut len = 0;
        let mut next = Some(first);
        while let Some(frame) = next {
            len += frame.len();
            // quinn keeps every chunk it is given and walks them per
            // packet, so thousands of tiny frames would cost more than
            // copying them into one.
            if frame.len() < COALESCE_BELOW {
                small.extend_from_slice(&frame);
            } else {
                if !small.is_empty() {
                    chunks.push(small.split().freeze());
                }
                chunks.push(frame);
            }
            next = if len < WRITE_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !small.is_empty() {
            chunks.push(small.split().freeze());
        }
        if let Err(e) = send.write_all_chunks(&mut chunks).await {
            tracing::debug!(error = %e, "control stream closed for writing");
            break;
        }
        chunks.clear();
        queued.fetch_sub(len, Ordering::AcqRel);
    }
}

async fn heartbeat(peer: Arc<Peer>, interval: std::time::Duration, max_frame: usize) {
    let Ok(beat) = wire::header_only(&Header::Heartbeat, max_frame) else {
        return;
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = peer.connection.closed() => return,
            _ = ticks.tick() => {
                if peer.send(beat.clone()).is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads control frames until the connection ends, the peer goes silent,
/// or it breaks the protocol; then tells everyone who watched the node.
async fn read_loop(node: Weak<Inner>, peer: Arc<Peer>, mut recv: quinn::RecvStream) {
    let Some(options) = node.upgrade().map(|n| *n.options()) else {
        return;
    };
    let mut decoder = FrameDecoder::new(options.max_frame);
    let asks = Arc::new(Semaphore::new(ASKS_IN_FLIGHT));
    // Set when a wait overran its timeout by far: this process, not the
    // peer, was stopped (SIGSTOP, a suspended VM, a starved runtime).
    let mut paused_here = false;
    let (code, why) = 'read: loop {
        let waiting = tokio::time::Instant::now();
        let held = peer.held.mark();
        let chunk = match tokio::time::timeout(
            options.heartbeat_timeout,
            recv.read_chunk(64 * 1024, true),
        )
        .await
        {
            Ok(Ok(Some(chunk))) => chunk.bytes,
            Ok(Ok(None)) => {
                break match decoder.finish() {
                    Ok(()) => (codes::NORMAL, "the peer closed its control stream".into()),
                    Err(e) => (codes::PROTOCOL, e.to_string()),
                };
            }
            Ok(Err(e)) => break (codes::NORMAL, lost(&e)),
            // The peer's heartbeats may be waiting in the socket, unread
            // while this process stood still: give it one more period,
            // counted from now, before declaring it down.
            Err(_) if !paused_here && waiting.elapsed() >= options.heartbeat_timeout * 2 => {
                tracing::info!(
                    peer = %peer.id,
                    stalled = ?waiting.elapsed(),
                    "this process stood still; giving the peer another heartbeat period"
                );
                paused_here = true;
                continue;
            }
            // The peer's bulk streams wait for their readers here: they
            // may hold the connection's whole flow-control window, and
            // its heartbeats wait behind them. A dead peer is still
            // found, by QUIC's idle timeout.
            Err(_) if peer.held.since(held) => {
                tracing::debug!(
                    peer = %peer.id,
                    "no heartbeat while its bulk streams wait for readers here; waiting another period"
                );
                continue;
            }
            Err(_) => {
                break (
                    codes::HEARTBEAT_TIMEOUT,
                    format!(
                        "nothing heard from node {} for {:?}",
                        peer.id, options.heartbeat_timeout
                    ),
                );
            }
        };
        paused_here = false;
        if let Err(e) = decoder.push(&chunk) {
            break (frame_code(&e), e.to_string());
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(payload)) => {
                    let dispatched = match wire::open(payload) {
                        Ok((header, body)) => dispatch(&node, &peer, &asks, header, body).await,
                        Err(e) => Err((codes::PROTOCOL, e.to_string())),
                    };
                    if let Err(stop) = dispatched {
                        break 'read stop;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'read (frame_code(&e), e.to_string()),
            }
        }
    };
    if peer.connection.close_reason().is_none() {
        if code == codes::NORMAL {
            tracing::info!(peer = %peer.id, "connection ended: {why}");
        } else {
            tracing::warn!(peer = %peer.id, code, "closing the connection: {why}");
        }
        peer.close(code, &why);
    } else {
        tracing::info!(peer = %peer.id, "connection ended: {why}");
    }
    peer.closed.store(true, Ordering::Release);
    peer.fail_pending(&why);
    if let Some(inner) = node.upgrade() {
        inner.remove_peer(&peer, &why);
    }
}

/// A read error in words, with the peer's close code and reason if it
/// closed the connection.
fn lost(e: &quinn::ReadError) -> String {
    match e {
        quinn::ReadError::ConnectionLost(quinn::ConnectionError::ApplicationClosed(close)) => {
            format!(
                "the peer closed the connection (code {}: {})",
                close.error_code,
                String::from_utf8_lossy(&close.reason)
            )
        }
        quinn::ReadError::ConnectionLost(quinn::ConnectionError::LocallyClosed) => {
            "this node closed the connection".to_string()
        }
        other => format!("connection lost: {other}"),
    }
}

/// Asks from one peer being answered at once; more wait, and so does the
/// reading of that peer's control stream.
const ASKS_IN_FLIGHT: usize = 1024;

/// Acts on one control frame. An error closes the connection.
///
/// It returns once the message is in the actor's mailbox. While an actor's
/// mailbox is full, or too many of the peer's asks are unanswered, it waits,
/// and so does reading: QUIC flow control then holds the peer back, and a
/// peer that keeps sending regardless is cut off as slow on its own side.
/// Memory stays bounded by mailbox capacities, not by what a peer sends.
async fn dispatch(
    node: &Weak<Inner>,
    peer: &Arc<Peer>,
    asks: &Arc<Semaphore>,
    header: Header,
    body: Bytes,
) -> Result<(), (u32, String)> {
    let Some(inner) = node.upgrade() else {
        return Err((codes::NORMAL, "this node is shutting down".into()));
    };
    let max = inner.options().max_frame;
    let role = peer.identity.role;
    match header {
        Header::Heartbeat => {}
        Header::Tell { to } => {
            match inner
                .inbox_for(&to, role)
                .and_then(|inbox| inbox.tell(&body))
            {
                Ok(Delivery::Queued) => {}
                Ok(Delivery::Wait(queued)) => {
                    drop(inner);
                    queued.await;
                }
                Err(why) => {
                    tracing::warn!(peer = %peer.id, actor = %to, "turned down a message: {why}");
                    let refused = Header::Refused { id: None, to, why };
                    if let Ok(frame) = wire::header_only(&refused, max) {
                        let _ = peer.send(frame);
                    }
                }
            }
        }
        Header::Ask { id, to } => {
            let permit = match Arc::clone(asks).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => Arc::clone(asks)
                    .acquire_owned()
                    .await
                    .map_err(|_| (codes::NORMAL, "the connection is closing".to_string()))?,
            };
            match inner
                .inbox_for(&to, role)
                .and_then(|inbox| inbox.ask(id, &to, &body))
            {
                Ok(answer) => {
                    let peer = Arc::clone(peer);
                    tokio::spawn(async move {
                        let frame = answer.await;
                        drop(permit);
                        let _ = peer.send(frame);
                    });
                }
                Err(why) => {
                    tracing::debug!(peer = %peer.id, actor = %to, "turned down an ask: {why}");
                    let refused = Header::Refused {
                        id: Some(id),
                        to,
                        why,
                    };
                    if let Ok(frame) = wire::header_only(&refused, max) {
                        let _ = peer.send(frame);
                    }
                }
            }
        }
        Header::Reply { id } => peer.answer(id, Answer::Reply(body)),
        Header::Refused {
            id: Some(id), why, ..
        } => peer.answer(id, Answer::Refused(why)),
        Header::Refused { id: None, to, why } => {
            tracing::warn!(peer = %peer.id, actor = %to, "a message from this node was turned down: {why}");
        }
        Header::Monitor { target } => {
            if !inner.add_remote_watcher(&target, &peer.id) {
                let down = Header::Down {
                    actor: target,
                    reason: crate::ExitReason::Failed("no actor of that name is registered".into()),
                };
                if let Ok(frame) = wire::header_only(&down, max) {
                    let _ = peer.send(frame);
                }
            }
        }
        Header::Down { actor, reason } => inner.remote_down(&peer.id, &actor, reason),
    }
    Ok(())
}
