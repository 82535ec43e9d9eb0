//! The driver's side of executors in other processes: the endpoint they
//! register with (secret checked) and report to, and one proxy per
//! executor that turns the driver's in-process messages into wire ones.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::prelude::*;
use ember_engine::StageId;
use ember_engine::shuffle::{MapStatus, ResultOutput};
use ember_transport::{ActorAddress, Mailbox, Node, Registration};

use super::fetch::RemoteFetcher;
use super::hub::BulkHub;
use super::wire::{
    DRIVER, EXECUTOR, ExecutorRefused, NodeContact, RESULTS_INBOX, ToDriver, ToExecutor,
    WireOutput, WireTask,
};
use crate::driver::{DriverHandle, DriverMessage, ExecutorRegistration};
use crate::executor::ExecutorMessage;
use crate::protocol::{
    ExecutorId, TaskDescription, TaskError, TaskFailureKind, TaskId, TaskOutput,
};
use crate::supervision::{ExitReason, PeerDown};

/// How long a result's rows may trail its status update.
const RESULT_ROWS_TIMEOUT: Duration = Duration::from_secs(60);

/// Encoded stage plans, shared by the proxies: a stage is encoded once,
/// whatever the number of its tasks.
#[derive(Clone, Default)]
struct PlanCache {
    plans: Arc<Mutex<BTreeMap<StageId, Arc<Vec<u8>>>>>,
}

impl PlanCache {
    fn encode(&self, task: &TaskDescription) -> Result<Arc<Vec<u8>>, String> {
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bytes) = plans.get(&task.id.stage) {
            return Ok(Arc::clone(bytes));
        }
        let bytes = ember_engine::codec::encode_plan(Arc::clone(&task.plan))
            .map(Arc::new)
            .map_err(|e| format!("cannot encode the plan of stage {}: {e}", task.id.stage))?;
        plans.insert(task.id.stage, Arc::clone(&bytes));
        Ok(bytes)
    }

    fn forget(&self, stages: &[StageId]) {
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        for stage in stages {
            plans.remove(stage);
        }
    }
}

type Directory = Arc<Mutex<BTreeMap<String, NodeContact>>>;

/// Where executors in other processes find a driver (registered on its
/// node as [`DRIVER`]).
pub struct DriverEndpoint {
    node: Node,
    driver: DriverHandle,
    secret: String,
    hub: BulkHub,
    directory: Directory,
    plans: PlanCache,
    executors: BTreeMap<ExecutorId, ActorAddress>,
    registration: Option<Registration>,
    /// Reads result rows executors hold; learns each one's contact.
    fetcher: RemoteFetcher,
}

impl DriverEndpoint {
    /// Must run inside the actix System (it opens the results inbox on the
    /// current runtime).
    pub fn new(
        node: Node,
        driver: DriverHandle,
        secret: String,
        fetcher: RemoteFetcher,
    ) -> Result<Self, ember_transport::BulkError> {
        let hub = BulkHub::open(&node, RESULTS_INBOX)?;
        Ok(Self {
            fetcher,
            node,
            driver,
            secret,
            hub,
            directory: Arc::default(),
            plans: PlanCache::default(),
            executors: BTreeMap::new(),
            registration: None,
        })
    }
}

impl Actor for DriverEndpoint {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let access = ember_transport::Access::Roles(vec![ember_certs::Role::Worker]);
        match self
            .node
            .register(DRIVER, ctx.address().recipient::<ToDriver>(), access)
        {
            Ok(registration) => self.registration = Some(registration),
            Err(e) => {
                tracing::error!(error = %e, "cannot accept executors");
                ctx.stop();
            }
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(registration) = self.registration.as_mut() {
            registration.set_reason(ExitReason::Normal);
        }
    }
}

/// The cluster manager says an executor is gone (its worker was lost).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ExecutorLostNotice {
    pub executor: ExecutorId,
    pub why: String,
}

/// Stops the endpoint (the application is ending).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CloseEndpoint;

impl Handler<CloseEndpoint> for DriverEndpoint {
    type Result = ();

    fn handle(&mut self, _msg: CloseEndpoint, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<ExecutorLostNotice> for DriverEndpoint {
    type Result = ();

    fn handle(&mut self, msg: ExecutorLostNotice, _ctx: &mut Context<Self>) {
        if let Some(address) = self.executors.get(&msg.executor) {
            self.driver.peer_down.do_send(PeerDown {
                peer: address.clone(),
                reason: ExitReason::Failed(msg.why),
            });
        }
    }
}

impl Handler<ToDriver> for DriverEndpoint {
    type Result = Result<(), ExecutorRefused>;

    fn handle(&mut self, msg: ToDriver, ctx: &mut Context<Self>) -> Self::Result {
        match msg {
            ToDriver::RegisterExecutor {
                executor,
                slots,
                contact,
                secret,
            } => self.handle_register(executor, slots, contact, secret),
            ToDriver::StatusUpdate {
                executor,
                task,
                result,
            } => {
                self.handle_status_update(executor, task, result, ctx);
                Ok(())
            }
            ToDriver::Usage { executor, usage } => {
                let _ = self
                    .driver
                    .mailbox
                    .tell(DriverMessage::Usage { executor, usage });
                Ok(())
            }
        }
    }
}

impl DriverEndpoint {
    fn handle_register(
        &mut self,
        executor: ExecutorId,
        slots: usize,
        contact: NodeContact,
        secret: String,
    ) -> Result<(), ExecutorRefused> {
        if secret != self.secret {
            tracing::warn!(%executor, node = %contact.node, "executor refused: wrong application secret");
            return Err(ExecutorRefused::WrongSecret);
        }
        if self.executors.contains_key(&executor) {
            return Err(ExecutorRefused::AlreadyRegistered(executor));
        }
        let address = contact.actor(EXECUTOR);
        let mailbox = self
            .node
            .mailbox::<ToExecutor>(&address)
            .map_err(|e| ExecutorRefused::Unreachable(e.to_string()))?;
        self.directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(executor.0.clone(), contact.clone());
        self.fetcher
            .learn(BTreeMap::from([(executor.0.clone(), contact.clone())]));
        let proxy = ExecutorProxy {
            executor: executor.clone(),
            mailbox,
            plans: self.plans.clone(),
            directory: Arc::clone(&self.directory),
            driver: self.driver.clone(),
        }
        .start();
        // The link, driver side: the driver hears when this executor's
        // process ends or goes silent.
        self.node.monitor(&address, self.driver.peer_down.clone());
        self.executors.insert(executor.clone(), address.clone());
        let registration = ExecutorRegistration {
            executor,
            slots,
            address: address.clone(),
            host: contact.host.clone(),
            mailbox: Mailbox::in_process(address, proxy.clone().recipient()),
            peer_down: proxy.recipient(),
        };
        self.driver
            .mailbox
            .tell(DriverMessage::RegisterExecutor(registration))
            .map_err(|e| ExecutorRefused::DriverStopped(e.to_string()))
    }

    fn handle_status_update(
        &mut self,
        executor: ExecutorId,
        task: TaskId,
        result: Result<WireOutput, TaskError>,
        ctx: &mut Context<Self>,
    ) {
        let driver = self.driver.mailbox.clone();
        let forward = move |result| {
            let _ = driver.tell(DriverMessage::StatusUpdate {
                executor,
                task,
                result,
            });
        };
        match result {
            Ok(WireOutput::Map { rows, bytes }) => forward(Ok(TaskOutput::Map(MapStatus {
                rows_per_reduce: rows,
                bytes_per_reduce: bytes,
            }))),
            Ok(WireOutput::Result) => {
                let hub = self.hub.clone();
                ctx.spawn(
                    async move {
                        let rows = hub.take(&result_tag(task), RESULT_ROWS_TIMEOUT).await;
                        let rows = rows.map(|rows| TaskOutput::Result(ResultOutput::Direct(rows)));
                        forward(rows.map_err(|why| {
                            TaskError::new(
                                TaskFailureKind::Error,
                                format!("the task's rows were lost on the way: {why}"),
                            )
                        }));
                    }
                    .into_actor(self),
                );
            }
            Ok(WireOutput::HeldResult { rows }) => {
                forward(Ok(TaskOutput::Result(ResultOutput::Held { rows })))
            }
            Err(error) => forward(Err(error)),
        }
    }
}

/// The bulk-stream tag of a result task's rows.
pub fn result_tag(task: TaskId) -> String {
    format!(
        "result-{}-{}-{}-{}",
        task.job, task.stage, task.partition, task.attempt
    )
}

/// Stands in for one remote executor inside the driver's process.
struct ExecutorProxy {
    executor: ExecutorId,
    mailbox: Mailbox<ToExecutor>,
    plans: PlanCache,
    directory: Directory,
    driver: DriverHandle,
}

impl Actor for ExecutorProxy {
    type Context = Context<Self>;
}

impl Handler<ExecutorMessage> for ExecutorProxy {
    type Result = ();

    fn handle(&mut self, msg: ExecutorMessage, _ctx: &mut Context<Self>) {
        let launched = match &msg {
            ExecutorMessage::LaunchTask(task) => Some(task.id),
            _ => None,
        };
        let wire = match msg {
            ExecutorMessage::LaunchTask(task) => match self.wire_task(&task) {
                Ok(wire) => ToExecutor::LaunchTask(wire),
                Err(why) => {
                    let _ = self.driver.mailbox.tell(DriverMessage::StatusUpdate {
                        executor: self.executor.clone(),
                        task: task.id,
                        result: Err(TaskError::new(TaskFailureKind::Error, why)),
                    });
                    return;
                }
            },
            ExecutorMessage::KillTask(id) => ToExecutor::KillTask(id),
            ExecutorMessage::RemoveShuffle(stages) => {
                self.plans.forget(&stages);
                ToExecutor::RemoveShuffle(stages)
            }
            ExecutorMessage::Stop => ToExecutor::Stop,
        };
        match self.mailbox.tell(wire) {
            Ok(()) => {}
            // A task no message can carry fails (and fails its job once
            // every attempt has): the executor is fine, and nothing would
            // ever answer for the task.
            Err(ember_transport::SendError::Encode(_, why)) if launched.is_some() => {
                if let Some(task) = launched {
                    let why = format!(
                        "the task cannot be sent to an executor: {why}; a task carries its \
                         query's literal values, so keep large values in files or tables"
                    );
                    let _ = self.driver.mailbox.tell(DriverMessage::StatusUpdate {
                        executor: self.executor.clone(),
                        task,
                        result: Err(TaskError::new(TaskFailureKind::Error, why)),
                    });
                }
            }
            // Its loss reaches the driver through the monitor.
            Err(e) => {
                tracing::debug!(executor = %self.executor, error = %e, "cannot reach executor")
            }
        }
    }
}

impl Handler<PeerDown> for ExecutorProxy {
    type Result = ();

    /// The driver ended: the executor is told to stop at once rather than
    /// wait for the connection to close.
    fn handle(&mut self, _msg: PeerDown, ctx: &mut Context<Self>) {
        let _ = self.mailbox.tell(ToExecutor::Stop);
        ctx.stop();
    }
}

impl ExecutorProxy {
    fn wire_task(&self, task: &TaskDescription) -> Result<WireTask, String> {
        let plan = self.plans.encode(task)?;
        let directory = self
            .directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut locations = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for (stage, holders) in task.locations.iter() {
            let mut keys = Vec::with_capacity(holders.len());
            for (map, holder) in holders.iter().enumerate() {
                let holder = holder.as_ref().ok_or_else(|| {
                    format!("map output {map} of stage {stage} has not been written")
                })?;
                if let Some(contact) = directory.get(&holder.0) {
                    peers.insert(holder.0.clone(), contact.clone());
                }
                keys.push(holder.0.clone());
            }
            locations.insert(*stage, keys);
        }
        Ok(WireTask {
            id: task.id,
            result_stage: task.kind == ember_engine::StageKind::Result,
            plan: plan.as_ref().clone(),
            locations,
            peers,
        })
    }
}
