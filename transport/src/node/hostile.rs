//! Hostile peers: garbage, truncated and oversized frames, unknown messages,
//! floods of bulk streams and a peer that never reads. Each test proves the
//! node cuts off only the offending stream or connection, with its code and
//! a warning in the log, while a well-behaved peer keeps being served.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Int64Array, RecordBatch};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use ember_certs::Role;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::frame::{DEFAULT_MAX_FRAME, decode, encode, read_frame, read_payload};
use crate::testing::*;
use crate::wire::{self, Header, codes};
use crate::{
    Access, ActorAddress, BulkError, Hello, Node, NodeId, NodeOptions, Refusal, SendError,
};

const T: Duration = Duration::from_secs(5);

/// Options of the node under attack. Raw peers send no heartbeats, so a
/// long heartbeat timeout keeps `HEARTBEAT_TIMEOUT` from racing the code
/// under test.
fn patient() -> NodeOptions {
    NodeOptions {
        heartbeat_timeout: Duration::from_secs(30),
        ..NodeOptions::default()
    }
}

/// A node with an echo actor, a well-behaved peer connected to it, and the
/// cluster PKI hostile peers get their certificates from.
struct Arena {
    cluster: Cluster,
    node: Node,
    good: Node,
    echo: ActorAddress,
}

impl Arena {
    async fn new(options: NodeOptions) -> Self {
        log::capture();
        let cluster = Cluster::new();
        let node = cluster.node_with(Role::Worker, "node", options);
        let good = cluster.node(Role::Worker, "good");
        connect(&good, &node).await;
        let echo = spawn_echo(&node, "echo", Access::AnyRole);
        let arena = Self {
            cluster,
            node,
            good,
            echo,
        };
        arena.good_peer_is_served(0).await;
        arena
    }

    /// The well-behaved peer is still connected and its asks are answered.
    async fn good_peer_is_served(&self, n: u64) {
        let mailbox = self.good.mailbox::<Cmd>(&self.echo).unwrap();
        assert_eq!(mailbox.ask(Cmd::Echo(n), T).await, Ok(Reply::Echo(n)));
        assert!(self.node.peers().iter().any(|(id, _)| id == self.good.id()));
    }

    /// A raw peer that has not said hello.
    async fn stranger(&self, name: &str) -> RawPeer {
        raw_connection(&self.cluster, name, &self.node).await
    }

    /// A raw peer past the hello, which the node counts among its peers.
    async fn peer(&self, name: &str) -> RawPeer {
        let mut raw = raw_peer(&self.cluster, name, &self.node, &Hello::new("worker", name)).await;
        let theirs: Hello = tokio::time::timeout(T, read_frame(&mut raw.recv, 1024))
            .await
            .expect("the node's hello in time")
            .unwrap()
            .unwrap();
        assert_eq!(&theirs.node, &self.node.id().0);
        eventually(|| self.node.peers().iter().any(|(id, _)| id.0 == name)).await;
        raw
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        self.node.shutdown();
        self.good.shutdown();
    }
}

/// Writes `bytes` on the raw peer's control stream.
async fn say(raw: &mut RawPeer, bytes: &[u8]) {
    raw.send.write_all(bytes).await.unwrap();
}

/// A frame whose payload is not msgpack at all (0xc1 is a byte msgpack
/// never uses).
fn garbage_frame() -> Vec<u8> {
    let mut frame = 16u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0xc1; 16]);
    frame
}

/// A length prefix promising 256 bytes, and only 10 of them.
fn truncated_frame() -> Vec<u8> {
    let mut frame = 256u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0x90; 10]);
    frame
}

fn oversized_prefix() -> [u8; 4] {
    let too_large = u32::try_from(DEFAULT_MAX_FRAME + 1).unwrap();
    too_large.to_be_bytes()
}

/// Checks the code the node closed the raw peer's connection with.
async fn assert_closed(raw: &RawPeer, code: u32) -> String {
    let (got, why) = close_code(&raw.connection, T).await;
    assert_eq!(got, u64::from(code), "closed with {got}: {why}");
    why
}

/// A connection refused before its hello is logged with the peer's address.
async fn assert_refusal_logged(raw: &RawPeer) {
    let addr = format!("addr={}", raw.addr);
    eventually(|| log::has(&["WARN", "refused a peer", &addr])).await;
}

/// A connection closed after its hello is logged with the peer's name and
/// the code.
async fn assert_close_logged(name: &str, code: u32) {
    let peer = format!("peer={name}");
    let code = format!("code={code}");
    eventually(|| log::has(&["WARN", "closing the connection", &peer, &code])).await;
}

#[actix::test]
async fn garbage_instead_of_a_hello_closes_the_connection() {
    let arena = Arena::new(patient()).await;

    let mut framed = arena.stranger("framed-garbage").await;
    say(&mut framed, &garbage_frame()).await;
    assert_closed(&framed, codes::PROTOCOL).await;
    assert_refusal_logged(&framed).await;

    // A port scanner's HTTP request: "GET " reads as a 1.2 GB length prefix.
    let mut http = arena.stranger("http-scanner").await;
    say(&mut http, b"GET / HTTP/1.1\r\nHost: node\r\n\r\n").await;
    assert_closed(&http, codes::TOO_LARGE).await;
    assert_refusal_logged(&http).await;

    let peers: Vec<String> = arena.node.peers().into_iter().map(|(id, _)| id.0).collect();
    assert_eq!(peers, ["good"]);
    arena.good_peer_is_served(1).await;
}

#[actix::test]
async fn garbage_after_the_hello_closes_the_connection() {
    let arena = Arena::new(patient()).await;
    let mut raw = arena.peer("babbler").await;
    say(&mut raw, &garbage_frame()).await;
    assert_closed(&raw, codes::PROTOCOL).await;
    assert_close_logged("babbler", codes::PROTOCOL).await;
    eventually(|| !arena.node.peers().iter().any(|(id, _)| id.0 == "babbler")).await;
    arena.good_peer_is_served(1).await;
}

#[actix::test]
async fn a_truncated_frame_closes_the_connection() {
    let arena = Arena::new(patient()).await;

    let mut early = arena.stranger("cut-short-hello").await;
    say(&mut early, &truncated_frame()).await;
    early.send.finish().unwrap();
    assert_closed(&early, codes::PROTOCOL).await;
    assert_refusal_logged(&early).await;

    let mut late = arena.peer("cut-short").await;
    say(&mut late, &truncated_frame()).await;
    late.send.finish().unwrap();
    let why = assert_closed(&late, codes::PROTOCOL).await;
    assert!(why.contains("middle of a frame"), "{why}");
    assert_close_logged("cut-short", codes::PROTOCOL).await;

    arena.good_peer_is_served(1).await;
}

#[actix::test]
async fn an_oversized_length_prefix_is_refused_without_waiting_for_its_body() {
    let arena = Arena::new(patient()).await;

    // Only the 4 prefix bytes are sent: the node must not wait for 4 MiB.
    let mut early = arena.stranger("huge-hello").await;
    say(&mut early, &oversized_prefix()).await;
    assert_closed(&early, codes::TOO_LARGE).await;
    assert_refusal_logged(&early).await;

    let mut late = arena.peer("huge-frame").await;
    say(&mut late, &oversized_prefix()).await;
    let why = assert_closed(&late, codes::TOO_LARGE).await;
    assert!(why.contains("exceeds the limit"), "{why}");
    assert_close_logged("huge-frame", codes::TOO_LARGE).await;

    arena.good_peer_is_served(1).await;
}

#[actix::test]
async fn a_peer_that_never_says_hello_is_dropped() {
    let options = NodeOptions {
        handshake_timeout: Duration::from_millis(500),
        ..patient()
    };
    let arena = Arena::new(options).await;

    // Connected, but the control stream never carries a byte.
    let silent = arena.stranger("silent").await;
    let why = assert_closed(&silent, codes::HANDSHAKE).await;
    assert!(why.contains("no hello within"), "{why}");
    assert_refusal_logged(&silent).await;

    let mut quitter = arena.stranger("quitter").await;
    quitter.send.finish().unwrap();
    assert_closed(&quitter, codes::HANDSHAKE).await;
    assert_refusal_logged(&quitter).await;

    arena.good_peer_is_served(1).await;
}

#[actix::test]
async fn an_unknown_header_variant_closes_the_connection() {
    /// A header a later Ember version might send.
    #[derive(Serialize)]
    enum FutureHeader {
        Teleport { to: String },
    }
    let arena = Arena::new(patient()).await;
    let mut raw = arena.peer("time-traveller").await;
    let frame = encode(&FutureHeader::Teleport { to: "echo".into() }, 1024).unwrap();
    say(&mut raw, &frame).await;
    let why = assert_closed(&raw, codes::PROTOCOL).await;
    assert!(why.contains("not a message this node understands"), "{why}");
    assert_close_logged("time-traveller", codes::PROTOCOL).await;
    arena.good_peer_is_served(1).await;
}

/// The node's next control frame to a raw peer, heartbeats skipped.
async fn next_header(raw: &mut RawPeer) -> (Header, Bytes) {
    loop {
        let payload = tokio::time::timeout(T, read_payload(&mut raw.recv, DEFAULT_MAX_FRAME))
            .await
            .expect("a frame in time")
            .unwrap()
            .expect("the control stream is open");
        let (header, body) = wire::open(Bytes::from(payload)).unwrap();
        if header != Header::Heartbeat {
            return (header, body);
        }
    }
}

#[actix::test]
async fn an_unknown_body_is_refused_and_the_connection_stays_up() {
    /// A command a later Ember version might send.
    #[derive(Serialize)]
    enum FutureCmd {
        Teleport(u64),
    }
    let arena = Arena::new(patient()).await;
    let mut raw = arena.peer("newer-cmd").await;
    let unknown = FutureCmd::Teleport(1);

    let ask = Header::Ask {
        id: 7,
        to: "echo".into(),
    };
    say(
        &mut raw,
        &wire::envelope(&ask, Some(&unknown), 1024).unwrap(),
    )
    .await;
    let (header, _) = next_header(&mut raw).await;
    assert!(
        matches!(
            &header,
            Header::Refused { id: Some(7), to, why: Refusal::Unreadable(_) } if to == "echo"
        ),
        "{header:?}"
    );

    let tell = Header::Tell { to: "echo".into() };
    say(
        &mut raw,
        &wire::envelope(&tell, Some(&unknown), 1024).unwrap(),
    )
    .await;
    let (header, _) = next_header(&mut raw).await;
    assert!(
        matches!(
            &header,
            Header::Refused { id: None, to, why: Refusal::Unreadable(_) } if to == "echo"
        ),
        "{header:?}"
    );
    eventually(|| log::has(&["WARN", "turned down a message", "peer=newer-cmd"])).await;

    // The same connection still carries a message the node understands.
    let ask = Header::Ask {
        id: 8,
        to: "echo".into(),
    };
    say(
        &mut raw,
        &wire::envelope(&ask, Some(&Cmd::Echo(8)), 1024).unwrap(),
    )
    .await;
    let (header, body) = next_header(&mut raw).await;
    assert_eq!(header, Header::Reply { id: 8 });
    assert_eq!(decode::<Reply>(&body).unwrap(), Reply::Echo(8));
    assert!(raw.connection.close_reason().is_none());
    arena.good_peer_is_served(1).await;
}

/// `bulk::BulkHeader` as it travels; the real type is private to the bulk
/// module, and spelling its wire form here also pins it.
#[derive(Serialize)]
struct StreamHeader<'a> {
    to: &'a str,
    tag: &'a str,
}

/// `bulk::BulkOutcome` as it travels.
#[derive(Debug, PartialEq, Eq, Deserialize)]
enum Verdict {
    Received,
    Refused { code: u64, why: String },
}

impl Verdict {
    fn code(&self) -> Option<u32> {
        match self {
            Verdict::Received => None,
            Verdict::Refused { code, .. } => u32::try_from(*code).ok(),
        }
    }
}

fn stream_header(to: &str, tag: &str) -> Vec<u8> {
    encode(&StreamHeader { to, tag }, 1024).unwrap().to_vec()
}

/// Opens a bulk stream, writes `bytes`, finishes it and reads the node's
/// verdict.
async fn bulk_stream(conn: &quinn::Connection, bytes: &[u8]) -> Verdict {
    // The node lets a peer open a new stream only once an old one is done
    // with, so a stream it never finishes shows up here as a timeout.
    let (mut send, mut recv) = tokio::time::timeout(T, conn.open_bi())
        .await
        .expect("a stream within the node's limit in time")
        .unwrap();
    // The node may stop the stream before it is all written; its verdict
    // comes all the same.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    tokio::time::timeout(T, read_frame(&mut recv, 64 * 1024))
        .await
        .expect("a verdict in time")
        .unwrap()
        .expect("a verdict before the stream ends")
}

/// This process's resident memory.
fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

#[actix::test]
async fn thousands_of_bad_bulk_streams_are_refused_one_by_one_in_bounded_memory() {
    const STREAMS: usize = 3000;
    let arena = Arena::new(patient()).await;
    let raw = arena.peer("flooder").await;
    // Three kinds of bad stream, each with the code it must be refused with.
    let kinds: [(Vec<u8>, u32); 3] = [
        (garbage_frame(), codes::PROTOCOL),
        (oversized_prefix().to_vec(), codes::TOO_LARGE),
        (stream_header("nowhere", "t"), codes::NO_SUCH_ACTOR),
    ];
    let flood = |count: usize| {
        futures::stream::iter(0..count)
            .map(|i| {
                let (bytes, code) = &kinds[i % kinds.len()];
                let conn = &raw.connection;
                async move { (bulk_stream(conn, bytes).await, *code) }
            })
            // Far more than the node's stream limit: the rest wait their turn.
            .buffer_unordered(128)
            .collect::<Vec<_>>()
    };
    // Warm up the allocator before taking the baseline.
    flood(96).await;
    let before = resident_bytes();
    let verdicts = flood(STREAMS).await;
    let grown = resident_bytes().saturating_sub(before);

    assert_eq!(verdicts.len(), STREAMS);
    for (verdict, code) in &verdicts {
        assert_eq!(verdict.code(), Some(*code), "{verdict:?}");
    }
    // A few KiB kept per stream would already show: 3000 x 20 KiB = 60 MiB.
    assert!(
        grown < 64 * 1024 * 1024,
        "resident memory grew by {} MiB",
        grown / (1024 * 1024)
    );
    eventually(|| log::has(&["WARN", "refused a bulk stream", "peer=flooder"])).await;
    // Refusing streams leaves the connection itself alone.
    assert!(raw.connection.close_reason().is_none());
    assert!(arena.node.peers().iter().any(|(id, _)| id.0 == "flooder"));
    arena.good_peer_is_served(1).await;
}

#[actix::test]
async fn a_peer_that_does_not_read_is_cut_off_as_slow() {
    const MESSAGE: usize = 128 * 1024;
    let options = NodeOptions {
        max_queued_bytes: 1024 * 1024,
        ..patient()
    };
    let arena = Arena::new(options).await;
    // Past the hello it never reads its control stream again, so QUIC flow
    // control soon stops the node's writes and frames pile up in its queue.
    let sloth = arena.peer("sloth").await;
    let target = ActorAddress {
        node: NodeId("sloth".into()),
        name: "x".into(),
    };
    let mailbox = arena.node.mailbox::<Other>(&target).unwrap();
    let big = "x".repeat(MESSAGE);
    let mut accepted = 0usize;
    let refused = loop {
        assert!(
            accepted < 1000,
            "the node kept queueing for a peer that reads nothing"
        );
        match mailbox.tell(Other(big.clone())) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        // Paced, so the queue only fills once the peer's window is full.
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(
        matches!(&refused, SendError::Unreachable(a, why) if a == &target && why.contains("not reading")),
        "{refused:?}"
    );
    // More than the queue limit left the node before it gave up: the
    // peer's not reading filled the queue, not a burst of sends.
    assert!(
        accepted * MESSAGE > 4 * options.max_queued_bytes,
        "only {accepted} messages went out"
    );
    assert_closed(&sloth, codes::SLOW_PEER).await;
    eventually(|| log::has(&["WARN", "is not reading", "peer=sloth"])).await;
    eventually(|| !arena.node.peers().iter().any(|(id, _)| id.0 == "sloth")).await;
    assert!(matches!(
        mailbox.tell(Other("again".into())),
        Err(SendError::Unreachable(..))
    ));
    arena.good_peer_is_served(1).await;
}

fn numbers(rows: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from_iter_values(0..rows))],
    )
    .unwrap()
}

/// The good peer can still send batches to `inbox`, and they arrive.
async fn good_peer_sends_batches(
    arena: &Arena,
    inbox: &mut tokio::sync::mpsc::Receiver<crate::IncomingBulk>,
) {
    let to = ActorAddress {
        node: arena.node.id().clone(),
        name: "blocks".into(),
    };
    let batch = numbers(100);
    let sending = arena
        .good
        .send_batches(&to, "fine", batch.schema(), vec![batch.clone()]);
    let receiving = async {
        let mut incoming = tokio::time::timeout(T, inbox.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (&incoming.from, incoming.tag.as_str()),
            (arena.good.id(), "fine")
        );
        incoming.batches.recv().await.unwrap().unwrap()
    };
    let (sent, received) = tokio::time::timeout(T, async { tokio::join!(sending, receiving) })
        .await
        .expect("the batch arrives in time");
    assert_eq!(sent.unwrap().batches, 1);
    assert_eq!(received, batch);
}

/// The bad stream the inbox was told about, and the error it ended with.
async fn failed_stream(
    inbox: &mut tokio::sync::mpsc::Receiver<crate::IncomingBulk>,
    from: &str,
) -> BulkError {
    let mut incoming = tokio::time::timeout(T, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(incoming.from.0, from);
    let item = tokio::time::timeout(T, incoming.batches.recv())
        .await
        .unwrap()
        .expect("an error item before the stream closes");
    item.expect_err("no batch comes out of a bad stream")
}

#[actix::test]
async fn garbage_on_a_bulk_stream_is_refused_and_the_inbox_hears_of_it() {
    let arena = Arena::new(patient()).await;
    let mut inbox = arena.node.bulk_inbox("blocks").unwrap();
    let raw = arena.peer("scribbler").await;

    // An IPC message whose 16 bytes of metadata are not a flatbuffer.
    let mut bytes = stream_header("blocks", "junk");
    bytes.extend_from_slice(&[0xff; 4]);
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&[0xab; 16]);
    let verdict = bulk_stream(&raw.connection, &bytes).await;
    assert_eq!(verdict.code(), Some(codes::PROTOCOL), "{verdict:?}");
    let error = failed_stream(&mut inbox, "scribbler").await;
    assert!(matches!(error, BulkError::Arrow(_)), "{error}");

    // Text, whose first bytes read as a 1.9 GB message, then the end.
    let mut bytes = stream_header("blocks", "text");
    bytes.extend_from_slice(b"this is not arrow");
    let verdict = bulk_stream(&raw.connection, &bytes).await;
    assert_eq!(verdict.code(), Some(codes::PROTOCOL), "{verdict:?}");
    let error = failed_stream(&mut inbox, "scribbler").await;
    assert!(matches!(error, BulkError::Arrow(_)), "{error}");

    eventually(|| log::has(&["WARN", "bulk stream failed", "peer=scribbler", "code=1"])).await;
    assert!(raw.connection.close_reason().is_none());
    good_peer_sends_batches(&arena, &mut inbox).await;
    arena.good_peer_is_served(1).await;
}

#[actix::test]
async fn a_bulk_message_above_the_limit_is_refused_as_too_large() {
    const LIMIT: usize = 64 * 1024;
    let options = NodeOptions {
        max_bulk_message: LIMIT,
        ..patient()
    };
    let arena = Arena::new(options).await;
    let mut inbox = arena.node.bulk_inbox("blocks").unwrap();
    let raw = arena.peer("hoarder").await;

    // One batch of 1 MiB in a well-formed IPC stream.
    let big = numbers(128 * 1024);
    let mut writer = StreamWriter::try_new(Vec::new(), &big.schema()).unwrap();
    writer.write(&big).unwrap();
    writer.finish().unwrap();
    let mut bytes = stream_header("blocks", "big");
    bytes.extend_from_slice(writer.get_ref());
    let verdict = bulk_stream(&raw.connection, &bytes).await;
    assert_eq!(verdict.code(), Some(codes::TOO_LARGE), "{verdict:?}");
    let error = failed_stream(&mut inbox, "hoarder").await;
    assert!(
        matches!(error, BulkError::TooLarge { max: LIMIT }),
        "{error}"
    );

    eventually(|| log::has(&["WARN", "bulk stream failed", "peer=hoarder", "code=2"])).await;
    assert!(raw.connection.close_reason().is_none());
    // Batches under the limit still go through.
    good_peer_sends_batches(&arena, &mut inbox).await;
    arena.good_peer_is_served(1).await;
}

/// Warnings logged anywhere in this test process, as text, so a test can
/// check that a refusal was logged: `LEVEL message key=value ...`.
mod log {
    use std::fmt::Write;
    use std::sync::{Mutex, OnceLock};

    use tracing::field::{Field, Visit};
    use tracing::level_filters::LevelFilter;
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata};

    static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

    fn lines() -> &'static Mutex<Vec<String>> {
        LINES.get_or_init(|| {
            // One subscriber for the whole process, whichever test comes first.
            let _ = tracing::subscriber::set_global_default(Capture);
            Mutex::new(Vec::new())
        })
    }

    pub(super) fn capture() {
        lines();
    }

    /// Whether a line holding all of `words` was logged.
    pub(super) fn has(words: &[&str]) -> bool {
        let lines = lines().lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().any(|l| words.iter().all(|w| l.contains(w)))
    }

    struct Capture;

    struct Line(String);

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            *metadata.level() <= Level::WARN
        }

        fn max_level_hint(&self) -> Option<LevelFilter> {
            Some(LevelFilter::WARN)
        }

        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }

        fn record(&self, _: &Id, _: &Record<'_>) {}

        fn record_follows_from(&self, _: &Id, _: &Id) {}

        fn event(&self, event: &Event<'_>) {
            let mut line = Line(event.metadata().level().to_string());
            event.record(&mut line);
            let mut lines = lines().lock().unwrap_or_else(|p| p.into_inner());
            lines.push(line.0);
        }

        fn enter(&self, _: &Id) {}

        fn exit(&self, _: &Id) {}
    }
}
