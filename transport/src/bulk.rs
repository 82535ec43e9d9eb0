//! Bulk data between nodes: Arrow record batches (shuffle blocks, results)
//! travel as an Arrow IPC stream on a QUIC stream of their own, written and
//! read a chunk at a time, never as one giant msgpack value. A bulk stream
//! opens with one frame naming the receiving inbox and a tag the receiver
//! uses to tell streams apart.
//!
//! Memory stays bounded on both ends: the receiver decodes one message at a
//! time, hands batches over a short channel and stops reading while it is
//! full, so QUIC flow control holds the sender back.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, SchemaRef};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::frame::{FrameError, decode, encode, read_frame, read_payload, write_frame};
use crate::node::{Inner, Node, Peer};
use crate::wire::codes;
use crate::{ActorAddress, NodeId};

/// Batches decoded but not yet taken by the receiver, per stream.
const BATCHES_IN_FLIGHT: usize = 8;
/// Streams announced to an inbox but not yet taken by its owner.
const STREAMS_IN_FLIGHT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("{0} cannot be reached: {1}")]
    Unreachable(ActorAddress, String),
    #[error("{to} turned the stream down (code {code}): {why}")]
    Refused {
        to: ActorAddress,
        code: u64,
        why: String,
    },
    #[error("no bulk inbox named '{0}' on this node")]
    NoSuchInbox(String),
    #[error("a bulk inbox named '{0}' is already open on this node")]
    InboxTaken(String),
    #[error("Arrow IPC: {0}")]
    Arrow(#[from] ArrowError),
    #[error(
        "a bulk message grew past {max} bytes without completing a batch: \
         raise the limit if batches this large are expected"
    )]
    TooLarge { max: usize },
    #[error("the stream from node {from} broke: {why}")]
    Broken { from: NodeId, why: String },
    #[error("the receiving side stopped reading the stream")]
    ReceiverGone,
    #[error("the stream was cut off while sending: {0}")]
    Interrupted(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// The receiver's last word on a bulk stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum BulkOutcome {
    /// Every batch was read.
    Received,
    /// The stream was turned down or broken off.
    Refused { code: u64, why: String },
}

/// What opens every bulk stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct BulkHeader {
    to: String,
    tag: String,
}

/// A bulk stream arriving at an inbox: its batches, in order, until the
/// channel closes (the stream is complete) or yields an error.
#[derive(Debug)]
pub struct IncomingBulk {
    pub from: NodeId,
    pub tag: String,
    pub batches: mpsc::Receiver<Result<RecordBatch, BulkError>>,
}

/// What one bulk send put on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub batches: usize,
    pub rows: usize,
    /// Arrow IPC bytes written; 0 when the inbox is in this process.
    pub bytes: u64,
}

impl Node {
    /// Opens the bulk inbox `name`; streams sent to it arrive on the
    /// returned channel.
    pub fn bulk_inbox(&self, name: &str) -> Result<mpsc::Receiver<IncomingBulk>, BulkError> {
        let (tx, rx) = mpsc::channel(STREAMS_IN_FLIGHT);
        if !self.inner().add_bulk_inbox(name, tx) {
            return Err(BulkError::InboxTaken(name.to_string()));
        }
        Ok(rx)
    }

    /// Sends `batches` to the bulk inbox at `to` and waits until the
    /// receiver has read all of them. Batches for an inbox in this process
    /// are handed over as they are.
    pub async fn send_batches(
        &self,
        to: &ActorAddress,
        tag: &str,
        schema: SchemaRef,
        batches: impl IntoIterator<Item = RecordBatch>,
    ) -> Result<Sent, BulkError> {
        let batches = futures::stream::iter(batches.into_iter().map(Ok));
        self.send_batch_stream(to, tag, schema, batches).await
    }

    /// Sends batches already encoded as encapsulated Arrow IPC messages of
    /// `schema` (no dictionaries), each with its rows, as `messages`
    /// yields them: the bytes go on the wire as they are, and the receiver
    /// decodes them as any other bulk stream. An error item breaks the
    /// stream off, as in [`Node::send_batch_stream`].
    pub async fn send_ipc_messages(
        &self,
        to: &ActorAddress,
        tag: &str,
        schema: SchemaRef,
        messages: impl Stream<Item = Result<(Bytes, usize), String>> + Unpin,
    ) -> Result<Sent, BulkError> {
        let inner = self.inner();
        if &to.node == inner.id() {
            // In this process the batches are handed over decoded.
            let mut decoder = StreamDecoder::new();
            let mut head = Buffer::from(schema_message(&schema)?);
            decoder.decode(&mut head)?;
            let batches = messages.map(move |message| {
                let (bytes, _) = message?;
                let mut buffer = Buffer::from(bytes);
                decoder
                    .decode(&mut buffer)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "a message held no whole batch".to_string())
            });
            return send_local(inner, to, tag, batches).await;
        }
        let peer = inner.peer(&to.node).ok_or_else(|| {
            BulkError::Unreachable(to.clone(), format!("node {} is not connected", to.node))
        })?;
        let max_frame = inner.options().max_frame;
        let chunks = messages.map(|m| m.map(|(bytes, rows)| Chunk::Batch { bytes, rows }));
        let body = futures::stream::once(async move { schema_message(&schema).map(Chunk::Head) })
            .map(|head| head.map_err(|e| e.to_string()))
            .chain(chunks)
            .chain(futures::stream::once(async {
                Ok(Chunk::Head(end_of_stream()))
            }));
        send_chunks(&peer, to, tag, Box::pin(body), max_frame).await
    }

    /// Sends batches as `batches` yields them. An error item breaks the
    /// stream off, so the receiver sees an error, never a short stream
    /// taken for whole.
    pub async fn send_batch_stream(
        &self,
        to: &ActorAddress,
        tag: &str,
        schema: SchemaRef,
        batches: impl Stream<Item = Result<RecordBatch, String>> + Unpin,
    ) -> Result<Sent, BulkError> {
        let inner = self.inner();
        if &to.node == inner.id() {
            return send_local(inner, to, tag, batches).await;
        }
        let peer = inner.peer(&to.node).ok_or_else(|| {
            BulkError::Unreachable(to.clone(), format!("node {} is not connected", to.node))
        })?;
        let max_frame = inner.options().max_frame;
        send_remote(&peer, to, tag, schema, batches, max_frame).await
    }
}

async fn send_local(
    inner: &Arc<Inner>,
    to: &ActorAddress,
    tag: &str,
    mut batches: impl Stream<Item = Result<RecordBatch, String>> + Unpin,
) -> Result<Sent, BulkError> {
    let inbox = inner
        .bulk_inbox(&to.name)
        .ok_or_else(|| BulkError::NoSuchInbox(to.name.clone()))?;
    let (tx, rx) = mpsc::channel(BATCHES_IN_FLIGHT);
    let incoming = IncomingBulk {
        from: inner.id().clone(),
        tag: tag.to_string(),
        batches: rx,
    };
    let closed = || BulkError::NoSuchInbox(to.name.clone());
    inbox.send(incoming).await.map_err(|_| closed())?;
    let mut sent = Sent::default();
    while let Some(batch) = batches.next().await {
        let batch = match batch {
            Ok(batch) => batch,
            Err(why) => {
                let _ = tx.send(Err(BulkError::Interrupted(why.clone()))).await;
                return Err(BulkError::Interrupted(why));
            }
        };
        sent.batches += 1;
        sent.rows += batch.num_rows();
        tx.send(Ok(batch)).await.map_err(|_| closed())?;
    }
    Ok(sent)
}

/// A piece of an encoded IPC stream: a message that holds no batch (the
/// schema, the end), or one batch and its rows.
enum Chunk {
    Head(Vec<u8>),
    Batch { bytes: Bytes, rows: usize },
}

/// The IPC stream's opening message, for `schema`.
fn schema_message(schema: &SchemaRef) -> Result<Vec<u8>, ArrowError> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema)?;
    Ok(std::mem::take(writer.get_mut()))
}

/// The IPC stream's end marker.
fn end_of_stream() -> Vec<u8> {
    [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0].to_vec()
}

/// Writes already encoded `chunks` on a bulk stream to `to`; as
/// [`send_remote`] once encoded.
async fn send_chunks(
    peer: &Arc<Peer>,
    to: &ActorAddress,
    tag: &str,
    mut chunks: impl Stream<Item = Result<Chunk, String>> + Unpin,
    max_frame: usize,
) -> Result<Sent, BulkError> {
    let lost = |e: &dyn std::fmt::Display| BulkError::Unreachable(to.clone(), e.to_string());
    let (mut stream, mut answer) = peer.connection.open_bi().await.map_err(|e| lost(&e))?;
    let header = BulkHeader {
        to: to.name.clone(),
        tag: tag.to_string(),
    };
    let mut sent = Sent::default();
    let written = async {
        let first = encode(&header, max_frame)?;
        sent.bytes += first.len() as u64;
        write(&mut stream, first).await?;
        while let Some(chunk) = chunks.next().await {
            let bytes = match chunk {
                Ok(Chunk::Head(bytes)) => Bytes::from(bytes),
                Ok(Chunk::Batch { bytes, rows }) => {
                    sent.batches += 1;
                    sent.rows += rows;
                    bytes
                }
                Err(why) => {
                    let _ = stream.reset(quinn::VarInt::from_u32(codes::NORMAL));
                    return Err(BulkError::Interrupted(why));
                }
            };
            sent.bytes += bytes.len() as u64;
            write(&mut stream, bytes).await?;
        }
        stream.finish().map_err(|e| lost(&e))
    }
    .await;
    confirmed(to, &mut answer, written, sent, max_frame).await
}

/// The receiver's answer, which explains a failed write too.
async fn confirmed(
    to: &ActorAddress,
    answer: &mut quinn::RecvStream,
    written: Result<(), BulkError>,
    sent: Sent,
    max_frame: usize,
) -> Result<Sent, BulkError> {
    let lost = |e: &dyn std::fmt::Display| BulkError::Unreachable(to.clone(), e.to_string());
    let outcome = read_frame::<_, BulkOutcome>(answer, max_frame).await;
    match (outcome, written) {
        (Ok(Some(BulkOutcome::Received)), Ok(())) => Ok(sent),
        (Ok(Some(BulkOutcome::Refused { code, why })), _) => Err(BulkError::Refused {
            to: to.clone(),
            code,
            why,
        }),
        (_, Err(e)) => Err(e),
        (Ok(None), Ok(())) => Err(lost(&"the stream closed before the receiver confirmed it")),
        (Err(e), Ok(())) => Err(lost(&e)),
    }
}

async fn send_remote(
    peer: &Arc<Peer>,
    to: &ActorAddress,
    tag: &str,
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, String>> + Unpin,
    max_frame: usize,
) -> Result<Sent, BulkError> {
    let mut writer = StreamWriter::try_new(Vec::new(), &schema)?;
    let head = std::mem::take(writer.get_mut());
    // Each batch goes on the wire as soon as it is encoded: a batch at a
    // time is all the memory a send holds.
    let encoded = batches.map(move |batch| {
        let batch = batch?;
        writer.write(&batch).map_err(|e| e.to_string())?;
        let encoded = std::mem::take(writer.get_mut());
        // Batches of a stream tend to be alike: the next one goes into one
        // allocation of this one's size, not a growing vector.
        writer.get_mut().reserve(encoded.len());
        Ok(Chunk::Batch {
            bytes: Bytes::from(encoded),
            rows: batch.num_rows(),
        })
    });
    let chunks = futures::stream::once(async { Ok(Chunk::Head(head)) })
        .chain(encoded)
        .chain(futures::stream::once(async {
            Ok(Chunk::Head(end_of_stream()))
        }));
    send_chunks(peer, to, tag, Box::pin(chunks), max_frame).await
}

async fn write(stream: &mut quinn::SendStream, chunk: Bytes) -> Result<(), BulkError> {
    if chunk.is_empty() {
        return Ok(());
    }
    stream
        .write_chunk(chunk)
        .await
        .map_err(|e| BulkError::Interrupted(e.to_string()))
}

/// Takes every bulk stream a peer opens, each on its own task. QUIC's
/// stream limit bounds how many run at once.
pub(crate) async fn accept_streams(node: Weak<Inner>, peer: Arc<Peer>) {
    while let Ok((answer, recv)) = peer.connection.accept_bi().await {
        let held = Arc::clone(&peer.held);
        tokio::spawn(receive(node.clone(), peer.id.clone(), held, answer, recv));
    }
}

/// Whether a peer's bulk streams wait for their readers on this node. A
/// stream that is not read holds its share of the connection's
/// flow-control window; streams enough hold all of it, and then the
/// peer's control frames, its heartbeats among them, wait too.
#[derive(Debug, Default)]
pub(crate) struct HeldBack {
    /// Streams waiting for their reader now.
    waiting: AtomicUsize,
    /// Waits begun so far.
    waits: AtomicU64,
}

impl HeldBack {
    /// A mark to ask [`HeldBack::since`] about later.
    pub(crate) fn mark(&self) -> u64 {
        self.waits.load(Ordering::Acquire)
    }

    /// Whether a stream waited for its reader at some point since `mark`.
    pub(crate) fn since(&self, mark: u64) -> bool {
        self.waiting.load(Ordering::Acquire) > 0 || self.mark() != mark
    }

    /// Hands `batch` to a reader that may be slow, counted as waiting
    /// while it is.
    async fn hand_on(
        &self,
        tx: &mpsc::Sender<Result<RecordBatch, BulkError>>,
        batch: RecordBatch,
    ) -> Result<(), ()> {
        let batch = match tx.try_send(Ok(batch)) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
            Err(mpsc::error::TrySendError::Full(batch)) => batch,
        };
        self.waits.fetch_add(1, Ordering::AcqRel);
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let sent = tx.send(batch).await.map_err(|_| ());
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        sent
    }
}

/// Turns a stream down: says why on the answer half, stops the other.
async fn refuse(
    answer: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    code: u32,
    why: String,
    max_frame: usize,
) {
    let _ = recv.stop(quinn::VarInt::from_u32(code));
    let outcome = BulkOutcome::Refused {
        code: u64::from(code),
        why,
    };
    let _ = write_frame(answer, &outcome, max_frame).await;
    let _ = answer.finish();
}

async fn receive(
    node: Weak<Inner>,
    from: NodeId,
    held: Arc<HeldBack>,
    mut answer: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let Some(inner) = node.upgrade() else {
        return;
    };
    let options = *inner.options();
    let max_frame = options.max_frame;
    let header = tokio::time::timeout(
        options.handshake_timeout,
        read_payload(&mut recv, max_frame),
    )
    .await;
    let header = match header {
        Ok(Ok(Some(payload))) => decode::<BulkHeader>(&payload),
        Ok(Ok(None)) => Err(FrameError::Truncated),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(FrameError::Malformed("no stream header in time".into())),
    };
    let header = match header {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(peer = %from, "refused a bulk stream: {e}");
            let code = match e {
                FrameError::TooLarge { .. } => codes::TOO_LARGE,
                _ => codes::PROTOCOL,
            };
            refuse(&mut answer, &mut recv, code, e.to_string(), max_frame).await;
            return;
        }
    };
    let inbox = inner.bulk_inbox(&header.to);
    let node = inner.id().clone();
    drop(inner);

    let (tx, rx) = mpsc::channel(BATCHES_IN_FLIGHT);
    let incoming = IncomingBulk {
        from: from.clone(),
        tag: header.tag.clone(),
        batches: rx,
    };
    // An inbox closed since the lookup is as good as none.
    let delivered = match inbox {
        Some(inbox) => inbox.send(incoming).await.is_ok(),
        None => false,
    };
    if !delivered {
        tracing::warn!(peer = %from, inbox = %header.to, "refused a bulk stream for an inbox that is not open");
        let why = format!("no bulk inbox named '{}' is open on node {node}", header.to);
        refuse(&mut answer, &mut recv, codes::NO_SUCH_ACTOR, why, max_frame).await;
        return;
    }
    match pump(&mut recv, &from, &held, &tx, options.max_bulk_message).await {
        Ok(()) => {
            let _ = write_frame(&mut answer, &BulkOutcome::Received, max_frame).await;
            let _ = answer.finish();
        }
        Err((code, e)) => {
            if code != codes::NORMAL {
                tracing::warn!(peer = %from, tag = %header.tag, code, "bulk stream failed: {e}");
            }
            let why = e.to_string();
            let _ = tx.send(Err(e)).await;
            refuse(&mut answer, &mut recv, code, why, max_frame).await;
        }
    }
}

/// Decodes the IPC stream into batches and hands them on until the stream
/// ends. A receiver that goes away stops the stream.
async fn pump(
    recv: &mut quinn::RecvStream,
    from: &NodeId,
    held: &HeldBack,
    tx: &mpsc::Sender<Result<RecordBatch, BulkError>>,
    max_message: usize,
) -> Result<(), (u32, BulkError)> {
    let mut decoder = StreamDecoder::new();
    let mut pending = 0usize;
    loop {
        let chunk = match recv.read_chunk(1 << 20, true).await {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) => {
                return decoder
                    .finish()
                    .map_err(|e| (codes::PROTOCOL, BulkError::Arrow(e)));
            }
            Err(e) => {
                return Err((
                    codes::NORMAL,
                    BulkError::Broken {
                        from: from.clone(),
                        why: e.to_string(),
                    },
                ));
            }
        };
        pending += chunk.len();
        if pending > max_message {
            return Err((codes::TOO_LARGE, BulkError::TooLarge { max: max_message }));
        }
        let mut buffer = Buffer::from(chunk);
        while !buffer.is_empty() {
            let before = buffer.len();
            // Bytes from the network must never take the process down, even
            // if the decoder has a bug; a panic here is a broken stream.
            let decoded =
                std::panic::catch_unwind(AssertUnwindSafe(|| decoder.decode(&mut buffer)))
                    .unwrap_or_else(|_| Err(ArrowError::IpcError("the decoder panicked".into())));
            match decoded {
                Ok(Some(batch)) => {
                    pending = buffer.len();
                    if held.hand_on(tx, batch).await.is_err() {
                        return Err((codes::NORMAL, BulkError::ReceiverGone));
                    }
                }
                Ok(None) if buffer.len() == before => break,
                Ok(None) => {}
                Err(e) => return Err((codes::PROTOCOL, BulkError::Arrow(e))),
            }
        }
    }
}
