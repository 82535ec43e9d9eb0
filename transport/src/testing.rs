//! Fixtures for the transport's tests: a throwaway cluster PKI, started
//! nodes, raw QUIC peers that say whatever a test wants, a test actor and
//! a recorder of down notices.

use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use ember_certs::{IssueRequest, NodeCredentials, Role, init_ca, issue, load_node};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::frame::write_frame;
use crate::quic::{QuicEndpoint, QuicOptions};
use crate::{ActorAddress, Hello, Node, NodeId, NodeOptions, PeerDown, Registration};

pub(crate) fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A cluster CA in a temporary directory.
pub(crate) struct Cluster {
    pub(crate) dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test", 5, false).unwrap();
        Self { dir }
    }

    /// The credentials of node `name`, issued on first use.
    pub(crate) fn creds(&self, role: Role, name: &str) -> NodeCredentials {
        if !self.dir.path().join(format!("{name}.pem")).exists() {
            issue(self.dir.path(), &IssueRequest::new(role, name, vec![], 5)).unwrap();
        }
        load_node(self.dir.path(), name).unwrap()
    }

    pub(crate) fn node(&self, role: Role, name: &str) -> Node {
        self.node_with(role, name, NodeOptions::default())
    }

    pub(crate) fn node_with(&self, role: Role, name: &str, options: NodeOptions) -> Node {
        Node::start(&self.creds(role, name), loopback(), options).unwrap()
    }
}

impl Cluster {
    /// A node on host 10.0.0.`host` of the simulated network `net`.
    pub(crate) fn simulated_node(
        &self,
        net: &crate::sim::SimNet,
        host: u8,
        role: Role,
        name: &str,
    ) -> Node {
        let addr = SocketAddr::from(([10, 0, 0, host], 0));
        let socket = net.bind(addr).unwrap();
        Node::start_simulated(
            &self.creds(role, name),
            None,
            socket,
            NodeOptions::default(),
            u64::from(host),
        )
        .unwrap()
    }
}

/// Runs `test` in an actix system whose clock is virtual: it stands still
/// while anything can run and jumps to the next timer when nothing can.
pub(crate) fn in_virtual_time(test: impl std::future::Future<Output = ()>) {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    });
    system.block_on(test);
}

/// `a` dials `b`; returns once both sides have the connection.
pub(crate) async fn connect(a: &Node, b: &Node) {
    let id = a
        .connect(b.local_addr().unwrap(), "localhost")
        .await
        .unwrap();
    assert_eq!(&id, b.id());
    eventually(|| b.peers().iter().any(|(n, _)| n == a.id())).await;
}

/// A peer of the cluster, with a valid certificate, that speaks raw bytes:
/// it has opened the control stream and says nothing until the test does.
pub(crate) struct RawPeer {
    pub(crate) connection: quinn::Connection,
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
    /// Its address, as the node's log names it.
    pub(crate) addr: SocketAddr,
}

/// A raw peer named `name` connected to `node`, before any hello.
pub(crate) async fn raw_connection(cluster: &Cluster, name: &str, node: &Node) -> RawPeer {
    let creds = cluster.creds(Role::Worker, name);
    let endpoint = QuicEndpoint::bind(loopback(), &creds, &QuicOptions::default()).unwrap();
    let conn = endpoint
        .connect(node.local_addr().unwrap(), "localhost")
        .await
        .unwrap();
    let (send, recv) = conn.connection.open_bi().await.unwrap();
    RawPeer {
        connection: conn.connection,
        send,
        recv,
        addr: endpoint.local_addr().unwrap(),
    }
}

/// A raw peer that has said `hello`; whatever follows is up to the test.
pub(crate) async fn raw_peer(cluster: &Cluster, name: &str, node: &Node, hello: &Hello) -> RawPeer {
    let mut raw = raw_connection(cluster, name, node).await;
    write_frame(&mut raw.send, hello, 1024).await.unwrap();
    raw
}

/// The application code and reason `conn` was closed with, within `limit`.
pub(crate) async fn close_code(conn: &quinn::Connection, limit: Duration) -> (u64, String) {
    match tokio::time::timeout(limit, conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => (
            close.error_code.into_inner(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        ),
        Ok(other) => panic!("closed without an application code: {other}"),
        Err(_) => panic!("the connection stayed open"),
    }
}

/// Waits up to 5 s for `cond`.
pub(crate) async fn eventually(cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

/// What the test actor understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "Reply")]
pub(crate) enum Cmd {
    Echo(u64),
    /// One-way; numbered from 0.
    Note(u64),
    Log,
    /// Answers after `ms` milliseconds.
    Slow {
        ms: u64,
        n: u64,
    },
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Reply {
    Echo(u64),
    Noted,
    Log { notes: u64, out_of_order: u64 },
    Stopping,
}

/// A message of another type, to check that it is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "u32")]
pub(crate) struct Other(pub String);

pub(crate) struct Echo {
    notes: u64,
    out_of_order: u64,
    registration: Option<Registration>,
}

impl Actor for Echo {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
struct Keep(Registration);

impl Handler<Keep> for Echo {
    type Result = ();
    fn handle(&mut self, msg: Keep, _ctx: &mut Context<Self>) {
        self.registration = Some(msg.0);
    }
}

impl Handler<Cmd> for Echo {
    type Result = ActorResponse<Self, Reply>;

    fn handle(&mut self, msg: Cmd, ctx: &mut Context<Self>) -> Self::Result {
        let reply = match msg {
            Cmd::Echo(n) => Reply::Echo(n),
            Cmd::Note(n) => {
                if n != self.notes {
                    self.out_of_order += 1;
                }
                self.notes += 1;
                Reply::Noted
            }
            Cmd::Log => Reply::Log {
                notes: self.notes,
                out_of_order: self.out_of_order,
            },
            Cmd::Slow { ms, n } => {
                return ActorResponse::r#async(
                    actix::clock::sleep(Duration::from_millis(ms))
                        .into_actor(self)
                        .map(move |_, _, _| Reply::Echo(n)),
                );
            }
            Cmd::Stop => {
                if let Some(r) = self.registration.as_mut() {
                    r.set_reason(crate::ExitReason::Normal);
                }
                ctx.stop();
                Reply::Stopping
            }
        };
        ActorResponse::reply(reply)
    }
}

/// Starts an echo actor registered as `name` on `node`.
pub(crate) fn spawn_echo(node: &Node, name: &str, access: crate::Access) -> ActorAddress {
    let addr = Echo {
        notes: 0,
        out_of_order: 0,
        registration: None,
    }
    .start();
    let registration = node
        .register(name, addr.clone().recipient::<Cmd>(), access)
        .unwrap();
    addr.do_send(Keep(registration));
    ActorAddress {
        node: node.id().clone(),
        name: name.to_string(),
    }
}

/// Collects the down notices it receives.
pub(crate) struct Recorder(mpsc::UnboundedSender<PeerDown>);

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<PeerDown> for Recorder {
    type Result = ();
    fn handle(&mut self, msg: PeerDown, _ctx: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

pub(crate) fn recorder() -> (Recipient<PeerDown>, mpsc::UnboundedReceiver<PeerDown>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Recorder(tx).start().recipient(), rx)
}

/// The next down notice, within `limit`.
pub(crate) async fn next_down(
    rx: &mut mpsc::UnboundedReceiver<PeerDown>,
    limit: Duration,
) -> PeerDown {
    tokio::time::timeout(limit, rx.recv())
        .await
        .expect("a down notice in time")
        .expect("the recorder is alive")
}

pub(crate) fn solo() -> Node {
    Node::local(NodeId("solo".into()))
}
