//! One handler per message the executor receives.

use actix::prelude::*;

use super::{Executor, ExecutorMessage, task};
use crate::driver::DriverMessage;
use crate::protocol::{TaskDescription, TaskId};
use crate::supervision::{ExitReason, PeerDown};

impl Handler<ExecutorMessage> for Executor {
    type Result = ();

    fn handle(&mut self, msg: ExecutorMessage, ctx: &mut Context<Self>) {
        match msg {
            ExecutorMessage::LaunchTask(task) => self.handle_launch_task(task, ctx),
            ExecutorMessage::KillTask(id) => self.handle_kill_task(id),
            ExecutorMessage::RemoveShuffle(stages) => self.shuffle.store.remove_stages(&stages),
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
        let (outcome, abort) = task::start(&self.pool, description, self.session.task_ctx());
        self.running.insert(id, abort);
        ctx.spawn(outcome.into_actor(self).map(move |result, act, _ctx| {
            act.running.remove(&id);
            let update = DriverMessage::StatusUpdate {
                executor: act.id.clone(),
                task: id,
                result,
            };
            if let Err(e) = act.driver.mailbox.tell(update) {
                tracing::debug!(task = %id, error = %e, "driver gone before the task ended");
            }
        }));
    }

    fn handle_kill_task(&mut self, id: TaskId) {
        if let Some(task) = self.running.get(&id) {
            task.abort();
        }
    }
}
