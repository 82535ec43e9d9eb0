//! An executor in a process of its own: the same [`Executor`] actor as in
//! local mode, with a proxy standing in for its remote driver and an
//! endpoint that turns the driver's wire messages into in-process ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use ember_engine::shuffle::ResultOutput;
use ember_engine::{BlockStore, ShuffleEnv, StageId, StageKind};
use ember_transport::{Access, Mailbox, Node, Registration};

use super::driver_side::result_tag;
use super::fetch::{BlockServer, RemoteFetcher};
use super::wire::{DRIVER, EXECUTOR, NodeContact, RESULTS_INBOX, ToDriver, ToExecutor, WireOutput};
use crate::driver::{DriverHandle, DriverMessage};
use crate::executor::{Executor, ExecutorMessage, ExecutorSpec, TaskPool};
use crate::protocol::{
    ExecutorId, MapLocations, TaskDescription, TaskError, TaskFailureKind, TaskOutput,
};
use crate::supervision::PeerDown;

/// How long a fetch of shuffle blocks may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the driver may take to accept the registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a remote executor needs to start.
pub struct RemoteExecutorSpec {
    pub node: Node,
    /// This executor's own contact, given to the driver for block fetches.
    pub contact: NodeContact,
    pub executor: ExecutorId,
    pub slots: usize,
    /// The driver's node; this node must already be connected to it.
    pub driver: NodeContact,
    pub secret: String,
    pub pool: TaskPool,
    pub session_config: SessionConfig,
    /// The application's own functions, which its plans name.
    pub functions: ember_engine::Functions,
    /// Faults to inject (`ember.faults.*`).
    pub faults: Arc<crate::faults::Faults>,
    /// The executor's memory budget and spill space.
    pub memory: Arc<ember_engine::memory::ExecutorMemory>,
    /// On a simulated host: shuffle output stays in memory and reports
    /// leave out the process's RSS, since a run on the virtual clock must
    /// not wait on real disks or depend on the real process.
    pub simulated: bool,
    /// Read the shuffle files of executors on this host from disk.
    pub read_host_local: bool,
    /// Hears `PeerDown` when the executor ends (the process exits then).
    pub on_exit: Recipient<PeerDown>,
}

/// The actors of a running remote executor.
pub struct RemoteExecutor {
    pub executor: Addr<Executor>,
    _endpoint: Addr<ExecutorEndpoint>,
    _blocks: Addr<BlockServer>,
}

/// Starts an executor that serves `spec.driver`. Must run inside an actix
/// System.
pub fn start_remote_executor(spec: RemoteExecutorSpec) -> Result<RemoteExecutor, String> {
    let store = Arc::new(BlockStore::default());
    let mut fetcher =
        RemoteFetcher::open(spec.node.clone(), FETCH_TIMEOUT).map_err(|e| e.to_string())?;
    if spec.read_host_local {
        fetcher = fetcher.reading_host_local_files();
    }
    let shuffle = Arc::new(
        ShuffleEnv::remote(
            store.clone(),
            spec.executor.0.clone(),
            Arc::new(fetcher.clone()),
        )
        .with_storage(&spec.memory),
    );
    let driver_address = spec.driver.actor(DRIVER);
    let driver_mailbox = spec
        .node
        .mailbox::<ToDriver>(&driver_address)
        .map_err(|e| e.to_string())?;
    let proxy = DriverProxy {
        node: spec.node.clone(),
        driver: driver_mailbox,
        contact: spec.contact.clone(),
        secret: spec.secret.clone(),
        results: spec.driver.actor(RESULTS_INBOX),
    }
    .start();

    // The executor's address is known before it starts, so the endpoint is
    // registered before the driver can hear of the executor.
    let context = Context::<Executor>::new();
    let executor = context.address();
    let endpoint = ExecutorEndpoint {
        node: spec.node.clone(),
        executor: executor.clone(),
        proxy: proxy.clone(),
        id: spec.executor.clone(),
        fetcher,
        session: {
            let session = SessionContext::new_with_config_rt(
                spec.session_config.clone(),
                Arc::clone(spec.memory.base()),
            );
            spec.functions.register(&session);
            ember_engine::files::register(&session);
            session
        },
        plans: BTreeMap::new(),
        registration: None,
    }
    .start();
    let blocks = BlockServer::new(spec.node.clone(), store).start();
    let handle = DriverHandle {
        address: driver_address.clone(),
        mailbox: Mailbox::in_process(driver_address.clone(), proxy.recipient()),
        peer_down: spec.on_exit,
    };
    context.run(Executor::new(ExecutorSpec {
        id: spec.executor,
        slots: spec.slots,
        driver: handle,
        pool: spec.pool,
        shuffle,
        session_config: spec.session_config,
        owns_arbiter: false,
        faults: spec.faults,
        memory: spec.memory,
        report_rss: !spec.simulated,
    }));
    // The link, executor side: no driver, no executor.
    spec.node
        .monitor(&driver_address, executor.clone().recipient::<PeerDown>());
    Ok(RemoteExecutor {
        executor,
        _endpoint: endpoint,
        _blocks: blocks,
    })
}

/// Stands in for the remote driver inside the executor's process.
struct DriverProxy {
    node: Node,
    driver: Mailbox<ToDriver>,
    contact: NodeContact,
    secret: String,
    results: ember_transport::ActorAddress,
}

impl Actor for DriverProxy {
    type Context = Context<Self>;
}

impl Handler<DriverMessage> for DriverProxy {
    type Result = ();

    fn handle(&mut self, msg: DriverMessage, ctx: &mut Context<Self>) {
        match msg {
            DriverMessage::RegisterExecutor(registration) => {
                let request = ToDriver::RegisterExecutor {
                    executor: registration.executor.clone(),
                    slots: registration.slots,
                    contact: self.contact.clone(),
                    secret: self.secret.clone(),
                };
                let driver = self.driver.clone();
                let executor = registration.mailbox;
                ctx.spawn(
                    async move {
                        let refused = match driver.ask(request, REGISTER_TIMEOUT).await {
                            Ok(Ok(())) => None,
                            Ok(Err(why)) => Some(why.to_string()),
                            Err(e) => Some(e.to_string()),
                        };
                        if let Some(why) = refused {
                            tracing::error!(%why, "the driver did not accept this executor");
                            let _ = executor.tell(ExecutorMessage::Stop);
                        }
                    }
                    .into_actor(self),
                );
            }
            DriverMessage::Usage { executor, usage } => {
                let _ = self.driver.tell(ToDriver::Usage { executor, usage });
            }
            DriverMessage::StatusUpdate {
                executor,
                task,
                result,
            } => {
                let driver = self.driver.clone();
                let report = move |result| {
                    if let Err(e) = driver.tell(ToDriver::StatusUpdate {
                        executor,
                        task,
                        result,
                    }) {
                        tracing::debug!(%task, error = %e, "driver gone before the task ended");
                    }
                };
                match result {
                    Ok(TaskOutput::Map(status)) => report(Ok(WireOutput::Map {
                        rows: status.rows_per_reduce,
                        bytes: status.bytes_per_reduce,
                    })),
                    Ok(TaskOutput::Result(ResultOutput::Held { rows })) => {
                        report(Ok(WireOutput::HeldResult { rows }))
                    }
                    Ok(TaskOutput::Result(ResultOutput::Direct(batches))) => {
                        let node = self.node.clone();
                        let to = self.results.clone();
                        ctx.spawn(
                            async move {
                                let schema = batches
                                    .first()
                                    .map(RecordBatch::schema)
                                    .unwrap_or_else(|| Arc::new(Schema::empty()));
                                let sent = node
                                    .send_batches(&to, &result_tag(task), schema, batches)
                                    .await;
                                report(sent.map(|_| WireOutput::Result).map_err(|e| {
                                    TaskError::new(
                                        TaskFailureKind::Error,
                                        format!("cannot send the task's rows to the driver: {e}"),
                                    )
                                }));
                            }
                            .into_actor(self),
                        );
                    }
                    Err(error) => report(Err(error)),
                }
            }
        }
    }
}

/// Registered on the executor's node as [`EXECUTOR`]: what the driver
/// says, decoded and handed to the executor.
struct ExecutorEndpoint {
    node: Node,
    executor: Addr<Executor>,
    proxy: Addr<DriverProxy>,
    id: ExecutorId,
    fetcher: RemoteFetcher,
    /// Functions and settings plans are decoded with.
    session: SessionContext,
    /// Decoded stage plans, each decoded once.
    plans: BTreeMap<StageId, Arc<dyn ExecutionPlan>>,
    registration: Option<Registration>,
}

impl Actor for ExecutorEndpoint {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let access = Access::Roles(vec![ember_certs::Role::Client, ember_certs::Role::Worker]);
        match self
            .node
            .register(EXECUTOR, ctx.address().recipient::<ToExecutor>(), access)
        {
            Ok(registration) => self.registration = Some(registration),
            Err(e) => {
                tracing::error!(error = %e, "cannot take tasks");
                self.executor.do_send(ExecutorMessage::Stop);
            }
        }
    }
}

impl Handler<ToExecutor> for ExecutorEndpoint {
    type Result = ();

    fn handle(&mut self, msg: ToExecutor, _ctx: &mut Context<Self>) {
        let msg = match msg {
            ToExecutor::LaunchTask(wire) => {
                let id = wire.id;
                match self.decode(wire) {
                    Ok(task) => ExecutorMessage::LaunchTask(task),
                    Err(why) => {
                        self.proxy.do_send(DriverMessage::StatusUpdate {
                            executor: self.id.clone(),
                            task: id,
                            result: Err(TaskError::new(TaskFailureKind::Error, why)),
                        });
                        return;
                    }
                }
            }
            ToExecutor::KillTask(id) => ExecutorMessage::KillTask(id),
            ToExecutor::RemoveShuffle(stages) => {
                for stage in &stages {
                    self.plans.remove(stage);
                }
                ExecutorMessage::RemoveShuffle(stages)
            }
            ToExecutor::Stop => ExecutorMessage::Stop,
        };
        self.executor.do_send(msg);
    }
}

impl ExecutorEndpoint {
    fn decode(&mut self, wire: super::wire::WireTask) -> Result<TaskDescription, String> {
        self.fetcher.learn(wire.peers);
        let plan = match self.plans.get(&wire.id.stage) {
            Some(plan) => Arc::clone(plan),
            None => {
                let plan = ember_engine::codec::decode_plan(&wire.plan, &self.session.task_ctx())
                    .map_err(|e| format!("cannot decode the plan of {}: {e}", wire.id))?;
                self.plans.insert(wire.id.stage, Arc::clone(&plan));
                plan
            }
        };
        let locations: MapLocations = wire
            .locations
            .into_iter()
            .map(|(stage, holders)| {
                (
                    stage,
                    holders.into_iter().map(|h| Some(ExecutorId(h))).collect(),
                )
            })
            .collect();
        Ok(TaskDescription {
            id: wire.id,
            kind: if wire.result_stage {
                StageKind::Result
            } else {
                StageKind::ShuffleMap
            },
            plan,
            locations: Arc::new(locations),
        })
    }
}
