//! One handler per message the driver receives; each feeds the scheduler and
//! carries out what it decides.

use std::collections::VecDeque;

use actix::prelude::*;

use super::scheduler::{Action, Event};
use super::{
    CancelJobs, CancelScope, Driver, DriverMessage, ExecutorRegistration, ExecutorState,
    ExecutorSummary, JobError, JobResult, ListExecutors, PendingJob, ProgressEvent, ReleaseResults,
    RosterEntry, StopDriver, SubmitJob,
};
use crate::executor::ExecutorMessage;
use crate::protocol::{ExecutorId, TaskError, TaskId, TaskOutput};
use crate::supervision::PeerDown;

impl Handler<DriverMessage> for Driver {
    type Result = ();

    fn handle(&mut self, msg: DriverMessage, _ctx: &mut Context<Self>) {
        match msg {
            DriverMessage::RegisterExecutor(registration) => {
                self.handle_register_executor(registration)
            }
            DriverMessage::StatusUpdate {
                executor,
                task,
                result,
            } => self.handle_status_update(executor, task, result),
            DriverMessage::Usage { executor, usage } => {
                if let Some(entry) = self.roster.get_mut(&executor) {
                    entry.usage = usage;
                }
            }
        }
    }
}

impl Handler<SubmitJob> for Driver {
    type Result = ();

    fn handle(&mut self, msg: SubmitJob, _ctx: &mut Context<Self>) {
        let Some(schema) = msg.graph.schema() else {
            let _ = msg.reply.send(Err(JobError::NoStages));
            return;
        };
        let job = self.next_job;
        self.next_job += 1;
        tracing::info!(job, stages = msg.graph.stages.len(), "job submitted");
        self.jobs.insert(
            job,
            PendingJob {
                schema,
                group: msg.group,
                reply: msg.reply,
            },
        );
        self.step(Event::JobSubmitted {
            job,
            graph: msg.graph,
        });
    }
}

impl Handler<PeerDown> for Driver {
    type Result = ();

    fn handle(&mut self, msg: PeerDown, _ctx: &mut Context<Self>) {
        let lost: Vec<ExecutorId> = self
            .executors
            .iter()
            .filter(|(_, mailbox)| *mailbox.address() == msg.peer)
            .map(|(id, _)| id.clone())
            .collect();
        for executor in lost {
            tracing::warn!(%executor, reason = %msg.reason, "executor lost");
            self.executors.remove(&executor);
            self.watchers.remove(&msg.peer);
            self.step(Event::ExecutorLost {
                executor,
                reason: msg.reason.to_string(),
            });
        }
    }
}

impl Handler<CancelJobs> for Driver {
    type Result = ();

    fn handle(&mut self, msg: CancelJobs, _ctx: &mut Context<Self>) {
        let jobs: Vec<_> = self
            .jobs
            .iter()
            .filter(|(_, job)| match &msg.scope {
                CancelScope::All => true,
                CancelScope::Group(group) => &job.group == group,
            })
            .map(|(id, _)| *id)
            .collect();
        for job in jobs {
            tracing::warn!(job, reason = %msg.reason, "job cancelled");
            self.step(Event::JobCancelled {
                job,
                reason: msg.reason.clone(),
            });
        }
    }
}

impl Handler<ReleaseResults> for Driver {
    type Result = ();

    fn handle(&mut self, msg: ReleaseResults, _ctx: &mut Context<Self>) {
        for mailbox in self.executors.values() {
            let _ = mailbox.tell(ExecutorMessage::RemoveShuffle(msg.0.clone()));
        }
    }
}

impl Handler<StopDriver> for Driver {
    type Result = ();

    fn handle(&mut self, _msg: StopDriver, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<ListExecutors> for Driver {
    type Result = MessageResult<ListExecutors>;

    fn handle(&mut self, msg: ListExecutors, _ctx: &mut Context<Self>) -> Self::Result {
        let running: std::collections::BTreeMap<&ExecutorId, usize> = self
            .scheduler
            .executors()
            .filter(|(id, _, _)| self.executors.contains_key(*id))
            .map(|(id, _, running)| (id, running))
            .collect();
        let summaries = self
            .roster
            .iter()
            .filter_map(|(id, entry)| {
                let active = running.get(id);
                (active.is_some() || msg.include_removed).then(|| ExecutorSummary {
                    id: id.clone(),
                    address: entry.address.clone(),
                    host: entry.host.clone(),
                    slots: entry.slots,
                    running_tasks: active.copied().unwrap_or(0),
                    tasks_succeeded: entry.tasks_succeeded,
                    tasks_failed: entry.tasks_failed,
                    usage: entry.usage,
                    state: match (active, &entry.state) {
                        (Some(_), _) => ExecutorState::Active,
                        (None, ExecutorState::Removed(why)) => ExecutorState::Removed(why.clone()),
                        (None, ExecutorState::Active) => {
                            ExecutorState::Removed("no longer registered".to_string())
                        }
                    },
                })
            })
            .collect();
        MessageResult(summaries)
    }
}

impl Driver {
    fn handle_register_executor(&mut self, registration: ExecutorRegistration) {
        tracing::info!(executor = %registration.executor, slots = registration.slots, "executor registered");
        self.roster.insert(
            registration.executor.clone(),
            RosterEntry {
                address: registration.address.clone(),
                host: registration.host,
                slots: registration.slots,
                tasks_succeeded: 0,
                tasks_failed: 0,
                state: ExecutorState::Active,
                usage: Default::default(),
            },
        );
        self.watchers
            .add(registration.address, registration.peer_down);
        self.executors
            .insert(registration.executor.clone(), registration.mailbox);
        self.step(Event::ExecutorAdded {
            executor: registration.executor,
            slots: registration.slots,
        });
    }

    fn handle_status_update(
        &mut self,
        executor: ExecutorId,
        task: TaskId,
        result: Result<TaskOutput, TaskError>,
    ) {
        let failure = match &result {
            // Killed on purpose: a cancelled job, a losing speculative copy.
            Err(error) if error.kind == crate::protocol::TaskFailureKind::Killed => {
                tracing::debug!(%task, %executor, %error, "task killed");
                None
            }
            Err(error) => Some(error.to_string()),
            Ok(_) => None,
        };
        if let Some(entry) = self.roster.get_mut(&executor) {
            match result {
                Ok(_) => entry.tasks_succeeded += 1,
                Err(_) => entry.tasks_failed += 1,
            }
        }
        let job_was_running = self.jobs.contains_key(&task.job);
        self.step(Event::TaskEnded {
            executor: executor.clone(),
            task,
            result,
        });
        let Some(error) = failure else {
            return;
        };
        if job_was_running && !self.jobs.contains_key(&task.job) {
            // The failure ended its job, whose error carries it to the
            // user: a warning as well would print it twice.
            tracing::info!(%task, %executor, %error, "task failed; its job failed with it");
        } else {
            tracing::warn!(%task, %executor, %error, "task failed");
        }
    }

    /// Feeds one event to the scheduler and carries out every action that
    /// follows, including the events those actions cause.
    pub(super) fn step(&mut self, event: Event) {
        self.note_loss(&event);
        let mut queue: VecDeque<Action> = self.scheduler.on_event(now(), event).into();
        while let Some(action) = queue.pop_front() {
            if let Some(event) = self.perform(action) {
                self.note_loss(&event);
                queue.extend(self.scheduler.on_event(now(), event));
            }
        }
    }

    /// Keeps why an executor was lost, for its entry in the roster.
    fn note_loss(&mut self, event: &Event) {
        if let Event::ExecutorLost { executor, reason } = event
            && let Some(entry) = self.roster.get_mut(executor)
            && entry.state == ExecutorState::Active
        {
            entry.state = ExecutorState::Removed(reason.clone());
        }
    }

    /// Carries out one action; returns the event it caused, if any.
    fn perform(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::LaunchTask { executor, task } => {
                let id = task.id;
                let Some(mailbox) = self.executors.get(&executor) else {
                    return Some(lost(executor, "not registered"));
                };
                if let Err(e) = mailbox.tell(ExecutorMessage::LaunchTask(task)) {
                    self.executors.remove(&executor);
                    return Some(lost(executor, &e.to_string()));
                }
                tracing::debug!(task = %id, %executor, "task launched");
                self.emit(ProgressEvent::TaskStarted {
                    job: id.job,
                    stage: id.stage,
                });
            }
            Action::KillTask { executor, task } => {
                if let Some(mailbox) = self.executors.get(&executor) {
                    let _ = mailbox.tell(ExecutorMessage::KillTask(task));
                }
            }
            Action::Progress(event) => {
                match &event {
                    ProgressEvent::StageSubmitted { job, stage, tasks } => {
                        tracing::info!(job, stage, tasks, "stage submitted")
                    }
                    ProgressEvent::StageCompleted { job, stage } => {
                        tracing::info!(job, stage, "stage completed")
                    }
                    _ => {}
                }
                self.emit(event);
            }
            Action::JobSucceeded {
                job,
                stage,
                parts,
                committed,
            } => {
                self.emit(ProgressEvent::JobEnded {
                    job,
                    succeeded: true,
                });
                if let Some(pending) = self.jobs.remove(&job) {
                    let _ = pending.reply.send(Ok(JobResult {
                        job,
                        schema: pending.schema,
                        stage,
                        parts,
                        committed,
                    }));
                }
            }
            Action::JobFailed { job, error } => {
                // The error reaches whoever submitted the job; repeating it
                // as a warning would print it twice (or on every Ctrl-C).
                tracing::info!(job, %error, "job failed");
                self.emit(ProgressEvent::JobEnded {
                    job,
                    succeeded: false,
                });
                if let Some(pending) = self.jobs.remove(&job) {
                    let _ = pending.reply.send(Err(error));
                }
            }
            Action::RemoveShuffle { stages } => {
                for mailbox in self.executors.values() {
                    let _ = mailbox.tell(ExecutorMessage::RemoveShuffle(stages.clone()));
                }
            }
        }
        None
    }
}

fn lost(executor: ExecutorId, why: &str) -> Event {
    Event::ExecutorLost {
        executor,
        reason: why.to_string(),
    }
}

/// Now, on the clock timers use: virtual in a simulation, real otherwise.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
