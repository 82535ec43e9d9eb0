//! A bare node with a probe actor: it answers pings, counts one-way notes
//! (and whether they arrived in order) and drains bulk streams. `ember
//! probe-node` runs it as its own process so transport tests and the
//! transport benchmark have a real peer on the other side of a QUIC
//! connection; operators can use it to check that two machines' certificates
//! and firewalls let them talk.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;

use std::sync::Arc;

use actix::prelude::*;
use datafusion::arrow::array::{Float64Array, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use ember_transport::{Access, Node, NodeOptions, Registration};
use serde::{Deserialize, Serialize};

/// The probe actor's registered name.
pub const PROBE: &str = "probe";
/// The probe node's bulk inbox.
pub const BULK: &str = "bulk";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Message)]
#[rtype(result = "ProbeReply")]
pub enum Probe {
    /// Answered with `Pong` of the same number.
    Ping(u64),
    /// A one-way note; notes should arrive numbered 0, 1, 2, ...
    Note(u64),
    /// How many notes arrived, and how many out of order.
    Count,
    /// Rows received on the bulk inbox so far.
    BulkRows,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeReply {
    Pong(u64),
    Noted,
    Count { notes: u64, out_of_order: u64 },
    BulkRows(u64),
}

/// Counts what it is sent.
pub struct ProbeActor {
    notes: u64,
    out_of_order: u64,
    bulk_rows: std::sync::Arc<std::sync::atomic::AtomicU64>,
    registration: Option<Registration>,
}

impl ProbeActor {
    pub fn new(bulk_rows: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self {
            notes: 0,
            out_of_order: 0,
            bulk_rows,
            registration: None,
        }
    }
}

impl Actor for ProbeActor {
    type Context = Context<Self>;
}

/// Hands the probe its registration, so the name goes when the actor does.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Keep(pub Registration);

impl Handler<Keep> for ProbeActor {
    type Result = ();
    fn handle(&mut self, msg: Keep, _ctx: &mut Context<Self>) {
        self.registration = Some(msg.0);
    }
}

impl Handler<Probe> for ProbeActor {
    type Result = MessageResult<Probe>;

    fn handle(&mut self, msg: Probe, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(match msg {
            Probe::Ping(n) => ProbeReply::Pong(n),
            Probe::Note(n) => {
                if n != self.notes {
                    self.out_of_order += 1;
                }
                self.notes += 1;
                ProbeReply::Noted
            }
            Probe::Count => ProbeReply::Count {
                notes: self.notes,
                out_of_order: self.out_of_order,
            },
            Probe::BulkRows => {
                ProbeReply::BulkRows(self.bulk_rows.load(std::sync::atomic::Ordering::Acquire))
            }
        })
    }
}

/// Bulk payload for probes: `rows` rows of an Int64 and a Float64 column
/// (16 bytes a row).
pub fn numbers(rows: usize) -> Result<RecordBatch, ArrowError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let ids = Int64Array::from_iter_values((0..rows).map(|i| i as i64));
    let values = Float64Array::from_iter_values((0..rows).map(|i| i as f64));
    RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(values)])
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Certs(#[from] ember_certs::CertError),
    #[error(transparent)]
    Node(#[from] ember_transport::NodeError),
    #[error(transparent)]
    Bulk(#[from] ember_transport::BulkError),
    #[error("cannot write the listening address: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs a probe node until its standard input closes, so it never outlives
/// the process that started it. Prints `listening ADDR` once it is ready.
/// `burn` threads spin on the CPU meanwhile, for load tests.
pub fn serve(
    certs: &Path,
    name: &str,
    listen: SocketAddr,
    options: NodeOptions,
    burn: usize,
) -> Result<(), ProbeError> {
    let creds = ember_certs::load_node(certs, name)?;
    let _burn = Burn::start(burn);
    let system = actix::System::new();
    system.block_on(async move {
        let node = Node::start(&creds, listen, options)?;
        let rows = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let probe = ProbeActor::new(std::sync::Arc::clone(&rows)).start();
        let registration =
            node.register(PROBE, probe.clone().recipient::<Probe>(), Access::AnyRole)?;
        probe.do_send(Keep(registration));
        let mut inbox = node.bulk_inbox(BULK)?;
        actix::spawn(async move {
            while let Some(mut incoming) = inbox.recv().await {
                let rows = std::sync::Arc::clone(&rows);
                actix::spawn(async move {
                    while let Some(Ok(batch)) = incoming.batches.recv().await {
                        rows.fetch_add(
                            batch.num_rows() as u64,
                            std::sync::atomic::Ordering::AcqRel,
                        );
                    }
                });
            }
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {}", node.local_addr()?)?;
        out.flush()?;
        drop(out);
        // Standard input closing means the parent is gone.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read_line(&mut line), Ok(n) if n > 0) {
                line.clear();
            }
            let _ = tx.send(());
        });
        let _ = rx.await;
        node.shutdown();
        Ok::<(), ProbeError>(())
    })
}

/// Threads that each keep a core busy until this is dropped.
pub struct Burn(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Burn {
    pub fn start(threads: usize) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        for _ in 0..threads {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            });
        }
        Self(stop)
    }
}

impl Drop for Burn {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
