//! One handler per message the executor receives.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::prelude::*;
use datafusion::execution::TaskContext;
use ember_engine::MapOutputLocations;

use super::{Executor, ExecutorMessage, task};
use crate::driver::DriverMessage;
use crate::protocol::{ExecutorUsage, TaskDescription, TaskId};
use crate::supervision::{ExitReason, PeerDown};

impl Handler<ExecutorMessage> for Executor {
    type Result = ();

    fn handle(&mut self, msg: ExecutorMessage, ctx: &mut Context<Self>) {
        match msg {
            ExecutorMessage::LaunchTask(task) => self.handle_launch_task(task, ctx),
            ExecutorMessage::KillTask(id) => self.handle_kill_task(id),
            ExecutorMessage::RemoveShuffle(stages) => {
                self.shuffle.store.remove_stages(&stages);
                // What the driver shows of this executor drops with them.
                self.report_usage();
            }
            ExecutorMessage::Stop => {
                self.watchers.set_reason(ExitReason::Normal);
                ctx.stop();
            }
        }
    }
}

impl Handler<PeerDown> for Executor {
    type Result = ();

    /// The link, executor side: no driver, no executor.
    fn handle(&mut self, msg: PeerDown, ctx: &mut Context<Self>) {
        if msg.peer == self.driver.address {
            if self.faults.ignores_driver_loss() {
                tracing::error!(executor = %self.id, "driver is gone, but ember.faults.executorIgnoresDriverLoss keeps this executor running");
                return;
            }
            tracing::info!(executor = %self.id, driver = %msg.peer, reason = %msg.reason, "driver is gone; executor exiting");
            self.watchers.set_reason(ExitReason::Failed(format!(
                "its driver {} {}",
                msg.peer, msg.reason
            )));
            ctx.stop();
        }
    }
}

impl Executor {
    fn handle_launch_task(&mut self, description: TaskDescription, ctx: &mut Context<Self>) {
        let id = description.id;
        let context = self.task_context(&description);
        let (outcome, abort) = task::start(
            &self.pool,
            description,
            context,
            task::TaskEnv {
                faults: Arc::clone(&self.faults),
                memory: Arc::clone(&self.memory),
                spilled: Arc::clone(&self.spilled),
            },
        );
        self.running.insert(id, abort);
        ctx.spawn(outcome.into_actor(self).map(move |result, act, _ctx| {
            act.running.remove(&id);
            if result.is_ok() && act.faults.loses_output(&id) {
                tracing::warn!(task = %id, "dropping this task's shuffle blocks (ember.faults.loseMapOutput)");
                act.shuffle.store.remove_map(id.stage, id.partition);
            }
            let update = DriverMessage::StatusUpdate {
                executor: act.id.clone(),
                task: id,
                result,
            };
            if let Err(e) = act.driver.mailbox.tell(update) {
                tracing::debug!(task = %id, error = %e, "driver gone before the task ended");
            }
            act.report_usage();
        }));
    }

    /// The context a task runs in: the executor's, plus where the blocks
    /// it reads live when they may be in other processes.
    fn task_context(&self, task: &TaskDescription) -> Arc<TaskContext> {
        let context = self.session.task_ctx();
        // Each task runs within its own share of the executor's memory.
        let context = match (Arc::try_unwrap(context), self.memory.task_runtime()) {
            (Ok(context), Ok(runtime)) => Arc::new(context.with_runtime(runtime)),
            (Ok(context), Err(_)) => Arc::new(context),
            (Err(shared), _) => shared,
        };
        if self.shuffle.fetcher.is_none() || task.locations.is_empty() {
            return context;
        }
        let mut locations = MapOutputLocations::new();
        for (stage, holders) in task.locations.iter() {
            let keys = holders
                .iter()
                .map(|h| h.as_ref().map(|e| e.0.clone()).unwrap_or_default())
                .collect();
            locations.insert(*stage, keys);
        }
        let config = context
            .session_config()
            .clone()
            .with_extension(Arc::new(locations));
        match Arc::try_unwrap(context) {
            Ok(context) => Arc::new(context.with_session_config(config)),
            Err(shared) => shared,
        }
    }

    /// Tells the driver what this executor holds and spilled now.
    fn report_usage(&self) {
        let usage = DriverMessage::Usage {
            executor: self.id.clone(),
            usage: self.usage(),
        };
        let _ = self.driver.mailbox.tell(usage);
    }

    /// What this executor's tasks hold and spilled now.
    fn usage(&self) -> ExecutorUsage {
        let (read_on_host, fetched) = self
            .shuffle
            .fetcher
            .as_ref()
            .map_or((0, 0), |f| f.blocks_read());
        ExecutorUsage {
            memory_used: self.memory.held() as u64,
            memory_limit: self.memory.limit().unwrap_or_default() as u64,
            spilled_bytes: self.spilled.load(Ordering::Relaxed),
            shuffle_disk_bytes: self.shuffle.store.usage().disk_bytes,
            peak_rss: if self.report_rss {
                ember_engine::memory::peak_rss(None).unwrap_or_default()
            } else {
                0
            },
            shuffle_blocks_read_on_host: read_on_host,
            shuffle_blocks_fetched: fetched,
        }
    }

    fn handle_kill_task(&mut self, id: TaskId) {
        if let Some(task) = self.running.get(&id) {
            task.abort();
        }
    }
}
