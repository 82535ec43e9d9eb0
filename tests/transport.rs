//! Two processes on one machine: this test process runs a node, and
//! `ember probe-node` runs another; they talk msgpack over mutual-TLS QUIC
//! on loopback.

use std::path::Path;
use std::time::{Duration, Instant};

use actix::prelude::*;
use datafusion::arrow::record_batch::RecordBatch;
use ember::probe::{BULK, Burn, PROBE, Probe, ProbeReply, numbers};
use ember::transport::{ActorAddress, ExitReason, Node, NodeId, NodeOptions, PeerDown};
use ember_certs::{IssueRequest, NodeCredentials, Role, init_ca, issue, load_node};
use ember_testkit::ProbeChild;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);

/// A cluster CA with a certificate for the probe and one for this process.
fn cluster(dir: &Path) {
    init_ca(dir, "e2e", 5, false).unwrap();
    issue(dir, &IssueRequest::new(Role::Worker, "probe", vec![], 5)).unwrap();
    issue(dir, &IssueRequest::new(Role::Client, "tester", vec![], 5)).unwrap();
}

fn start_probe(certs: &Path, extra: &[&str]) -> ProbeChild {
    ProbeChild::spawn(
        Path::new(env!("CARGO_BIN_EXE_ember")),
        certs,
        "probe",
        extra,
    )
    .unwrap()
}

/// This process's node, on loopback.
fn start_node(creds: &NodeCredentials, options: NodeOptions) -> Node {
    Node::start(creds, "127.0.0.1:0".parse().unwrap(), options).unwrap()
}

fn probe_address() -> ActorAddress {
    ActorAddress {
        node: NodeId("probe".into()),
        name: PROBE.into(),
    }
}

struct Recorder(mpsc::UnboundedSender<(PeerDown, Instant)>);

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<PeerDown> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: PeerDown, _ctx: &mut Context<Self>) {
        let _ = self.0.send((msg, Instant::now()));
    }
}

fn recorder() -> (
    Recipient<PeerDown>,
    mpsc::UnboundedReceiver<(PeerDown, Instant)>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Recorder(tx).start().recipient(), rx)
}

#[actix::test]
async fn two_processes_exchange_messages_and_batches_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let probe = start_probe(dir.path(), &[]);
    let creds = load_node(dir.path(), "tester").unwrap();
    let node = start_node(&creds, NodeOptions::default());
    let peer = node.connect(probe.addr, "localhost").await.unwrap();
    assert_eq!(peer, NodeId("probe".into()));
    let peers = node.peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(
        peers[0].1.role,
        Role::Worker,
        "the role comes from its certificate"
    );

    let mailbox = node.mailbox::<Probe>(&probe_address()).unwrap();
    assert_eq!(
        mailbox.ask(Probe::Ping(7), T).await,
        Ok(ProbeReply::Pong(7))
    );
    for n in 0..20_000 {
        mailbox.tell(Probe::Note(n)).unwrap();
    }
    assert_eq!(
        mailbox.ask(Probe::Count, T).await,
        Ok(ProbeReply::Count {
            notes: 20_000,
            out_of_order: 0
        })
    );

    let batches: Vec<RecordBatch> = (0..16).map(|_| numbers(65_536).unwrap()).collect();
    let schema = batches[0].schema();
    let to = ActorAddress {
        node: peer.clone(),
        name: BULK.into(),
    };
    let sent = node
        .send_batches(&to, "e2e", schema, batches)
        .await
        .unwrap();
    assert_eq!(sent.rows, 16 * 65_536);
    assert!(
        sent.bytes > 16 * 65_536 * 16,
        "both columns crossed: {sent:?}"
    );
    // The send returns once the probe has read every batch.
    assert_eq!(
        mailbox.ask(Probe::BulkRows, T).await,
        Ok(ProbeReply::BulkRows(16 * 65_536))
    );
    node.shutdown();
}

#[actix::test]
async fn certificates_of_another_cluster_or_expired_ones_get_no_connection() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let probe = start_probe(dir.path(), &[]);

    let other = tempfile::tempdir().unwrap();
    init_ca(other.path(), "other", 5, false).unwrap();
    issue(
        other.path(),
        &IssueRequest::new(Role::Client, "tester", vec![], 5),
    )
    .unwrap();
    let foreign = load_node(other.path(), "tester").unwrap();
    let node = start_node(&foreign, NodeOptions::default());
    let err = node.connect(probe.addr, "localhost").await.unwrap_err();
    assert!(
        err.to_string().contains("certificate") || err.to_string().contains("UnknownIssuer"),
        "{err}"
    );
    assert!(node.peers().is_empty());
    node.shutdown();

    let now = time::OffsetDateTime::now_utc();
    let mut old = IssueRequest::new(Role::Client, "old", vec![], 1);
    old.not_before = now - time::Duration::days(3);
    old.not_after = now - time::Duration::days(1);
    issue(dir.path(), &old).unwrap();
    let expired = load_node(dir.path(), "old").unwrap();
    let node = start_node(&expired, NodeOptions::default());
    assert!(node.connect(probe.addr, "localhost").await.is_err());
    assert!(node.peers().is_empty());
    node.shutdown();
}

#[actix::test]
async fn a_killed_peer_is_reported_down_within_the_idle_timeout_and_a_second() {
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let mut probe = start_probe(dir.path(), &[]);
    let creds = load_node(dir.path(), "tester").unwrap();
    let options = NodeOptions::default();
    let node = start_node(&creds, options);
    node.connect(probe.addr, "localhost").await.unwrap();
    let (watcher, mut downs) = recorder();
    node.monitor(&probe_address(), watcher);
    let mailbox = node.mailbox::<Probe>(&probe_address()).unwrap();
    assert_eq!(
        mailbox.ask(Probe::Ping(1), T).await,
        Ok(ProbeReply::Pong(1))
    );

    // SIGKILL: no goodbye, no close frame; only silence.
    probe.kill().unwrap();
    let killed = Instant::now();
    let (down, at) = tokio::time::timeout(Duration::from_secs(10), downs.recv())
        .await
        .expect("a down notice")
        .unwrap();
    assert_eq!(down.peer, probe_address());
    assert!(
        matches!(down.reason, ExitReason::Unreachable(_)),
        "{:?}",
        down.reason
    );
    let took = at - killed;
    let bound = options.quic.idle_timeout + Duration::from_secs(1);
    assert!(
        took < bound,
        "noticed after {took:?}, promised within {bound:?}"
    );
    eprintln!("killed peer noticed after {took:?}");
    node.shutdown();
}

/// Two minutes (`EMBER_LOAD_TEST_SECS` to change it) with both cores
/// saturated on both sides: the peer must never be declared down.
#[actix::test]
async fn full_cpu_load_raises_no_false_alarm() {
    let secs: u64 = std::env::var("EMBER_LOAD_TEST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let dir = tempfile::tempdir().unwrap();
    cluster(dir.path());
    let burn = cores.to_string();
    let probe = start_probe(dir.path(), &["--burn", &burn]);
    let creds = load_node(dir.path(), "tester").unwrap();
    let node = start_node(&creds, NodeOptions::default());
    node.connect(probe.addr, "localhost").await.unwrap();
    let (watcher, mut downs) = recorder();
    node.monitor(&probe_address(), watcher);
    let mailbox = node.mailbox::<Probe>(&probe_address()).unwrap();
    let _burn = Burn::start(cores);

    let until = Instant::now() + Duration::from_secs(secs);
    let mut pings = 0u64;
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let sent = Instant::now();
        let reply = mailbox.ask(Probe::Ping(pings), T).await;
        assert_eq!(
            reply,
            Ok(ProbeReply::Pong(pings)),
            "ping {pings} under load"
        );
        slowest = slowest.max(sent.elapsed());
        pings += 1;
        if let Ok((down, _)) = downs.try_recv() {
            panic!("false alarm after {pings} pings: {down:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(downs.try_recv().is_err(), "no peer-down under load");
    assert_eq!(node.peers().len(), 1);
    eprintln!("{pings} pings under load over {secs} s, slowest {slowest:?}");
    node.shutdown();
}
