//! The executor: runs tasks in its slots for one driver, which it is linked
//! to — when the driver ends, the executor ends.

mod handlers;
mod messages;
mod task;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use actix::prelude::*;
use datafusion::prelude::{SessionConfig, SessionContext};
use ember_engine::ShuffleEnv;
use ember_engine::memory::ExecutorMemory;
use ember_transport::{ActorAddress, Mailbox};
use futures::future::AbortHandle;

pub use messages::ExecutorMessage;
pub use task::TaskPool;

use crate::driver::{DriverHandle, DriverMessage, ExecutorRegistration};
use crate::faults::Faults;
use crate::protocol::{ExecutorId, TaskId};
use crate::supervision::{ExitReason, Watchers};

pub struct Executor {
    id: ExecutorId,
    me: ActorAddress,
    slots: usize,
    driver: DriverHandle,
    pool: TaskPool,
    shuffle: Arc<ShuffleEnv>,
    session: SessionContext,
    running: BTreeMap<TaskId, AbortHandle>,
    /// The driver, told when this executor ends.
    watchers: Watchers,
    /// Whether this executor has a thread of its own to stop when it ends.
    owns_arbiter: bool,
    /// Faults to inject (`ember.faults.*`), for tests of fault handling.
    faults: Arc<Faults>,
    /// The memory budget tasks run within, and what to raise past it.
    memory: Arc<ExecutorMemory>,
    /// Bytes the executor's tasks spilled so far.
    spilled: Arc<AtomicU64>,
    report_rss: bool,
}

/// What an executor needs to start.
pub struct ExecutorSpec {
    pub id: ExecutorId,
    pub slots: usize,
    pub driver: DriverHandle,
    pub pool: TaskPool,
    pub shuffle: Arc<ShuffleEnv>,
    /// DataFusion settings for task execution (batch size and the like).
    pub session_config: SessionConfig,
    pub owns_arbiter: bool,
    pub faults: Arc<Faults>,
    /// The memory budget and spill space tasks run in; executors of one
    /// process share it.
    pub memory: Arc<ExecutorMemory>,
    /// Whether usage reports carry the process's peak RSS (not on
    /// simulated hosts, whose runs must replay exactly).
    pub report_rss: bool,
}

impl Executor {
    pub fn new(spec: ExecutorSpec) -> Self {
        let me = ActorAddress::local(format!("executor-{}", spec.id));
        let mut config = spec
            .session_config
            .with_extension(Arc::clone(&spec.shuffle));
        spec.memory.tune(&mut config);
        Self {
            watchers: Watchers::new(me.clone()),
            me,
            id: spec.id,
            slots: spec.slots,
            driver: spec.driver,
            pool: spec.pool,
            shuffle: spec.shuffle,
            session: {
                let session =
                    SessionContext::new_with_config_rt(config, Arc::clone(spec.memory.base()));
                ember_engine::files::register(&session);
                session
            },
            running: BTreeMap::new(),
            owns_arbiter: spec.owns_arbiter,
            faults: spec.faults,
            memory: spec.memory,
            spilled: Arc::default(),
            report_rss: spec.report_rss,
        }
    }
}

impl Actor for Executor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The link, driver side: the driver hears when this executor ends.
        self.watchers
            .add(self.driver.address.clone(), self.driver.peer_down.clone());
        let registration = ExecutorRegistration {
            executor: self.id.clone(),
            slots: self.slots,
            address: self.me.clone(),
            // In-process executors share the driver's host; remote ones
            // register through the driver's endpoint, which knows theirs.
            host: "localhost".to_string(),
            mailbox: Mailbox::in_process(self.me.clone(), ctx.address().recipient()),
            peer_down: ctx.address().recipient(),
        };
        if let Err(e) = self
            .driver
            .mailbox
            .tell(DriverMessage::RegisterExecutor(registration))
        {
            tracing::warn!(executor = %self.id, error = %e, "cannot register with the driver; exiting");
            self.watchers
                .set_reason(ExitReason::Failed(format!("could not register: {e}")));
            ctx.stop();
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        for (_, task) in std::mem::take(&mut self.running) {
            task.abort();
        }
        tracing::info!(executor = %self.id, "executor stopped");
        if self.owns_arbiter {
            Arbiter::current().stop();
        }
    }
}
