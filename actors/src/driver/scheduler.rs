//! The driver's decisions, as a pure state machine: events in (an executor
//! joined or was lost, a job was submitted, a task ended), actions out (launch
//! this task there, the stage completed, the job failed). The driver actor
//! only carries the actions out, so every case here is tested without actors.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::ExecutionPlan;
use ember_engine::shuffle::MapStatus;
use ember_engine::{StageGraph, StageId, StageKind};

use super::ProgressEvent;
use crate::protocol::{
    ExecutorId, JobId, MapLocations, TaskDescription, TaskError, TaskId, TaskOutput,
};

#[derive(Debug)]
pub enum Event {
    ExecutorAdded {
        executor: ExecutorId,
        slots: usize,
    },
    ExecutorLost {
        executor: ExecutorId,
        reason: String,
    },
    JobSubmitted {
        job: JobId,
        graph: StageGraph,
    },
    TaskEnded {
        executor: ExecutorId,
        task: TaskId,
        result: Result<TaskOutput, TaskError>,
    },
    JobCancelled {
        job: JobId,
        reason: String,
    },
}

#[derive(Debug)]
pub enum Action {
    LaunchTask {
        executor: ExecutorId,
        task: TaskDescription,
    },
    KillTask {
        executor: ExecutorId,
        task: TaskId,
    },
    /// A stage was submitted, a task ended, a stage completed.
    Progress(ProgressEvent),
    JobSucceeded {
        job: JobId,
        batches: Vec<RecordBatch>,
        /// The result-stage attempts whose output was used.
        committed: Vec<TaskId>,
    },
    JobFailed {
        job: JobId,
        error: String,
    },
    /// The job's shuffle blocks are no longer needed.
    RemoveShuffle {
        stages: Vec<StageId>,
    },
}

#[derive(Debug)]
struct ExecutorState {
    slots: usize,
    running: BTreeSet<TaskId>,
}

impl ExecutorState {
    fn free(&self) -> usize {
        self.slots.saturating_sub(self.running.len())
    }
}

#[derive(Debug)]
struct StageRun {
    kind: StageKind,
    plan: Arc<dyn ExecutionPlan>,
    tasks: usize,
    parents: Vec<StageId>,
    submitted: bool,
    pending: BTreeSet<usize>,
    running: BTreeMap<usize, (TaskId, ExecutorId)>,
    /// Attempts started per partition (the next attempt number).
    attempts: BTreeMap<usize, u32>,
    /// Failures that count against the budget, per partition.
    failures: BTreeMap<usize, u32>,
    map_outputs: BTreeMap<usize, MapStatus>,
    /// Which executor holds each finished map task's blocks.
    map_locations: BTreeMap<usize, ExecutorId>,
    /// Where the blocks this stage reads live, set when it is submitted.
    reads: Arc<MapLocations>,
    /// Each finished result task's attempt and rows.
    results: BTreeMap<usize, (TaskId, Vec<RecordBatch>)>,
    finished: BTreeSet<usize>,
}

impl StageRun {
    fn is_complete(&self) -> bool {
        self.finished.len() == self.tasks
    }
}

#[derive(Debug)]
struct JobRun {
    stages: BTreeMap<StageId, StageRun>,
}

impl JobRun {
    fn stage_ids(&self) -> Vec<StageId> {
        self.stages.keys().copied().collect()
    }

    /// Where the map output of every stage `stage` reads lives, by map
    /// partition; fixed once its parents are complete.
    fn parent_locations(&self, stage: StageId) -> MapLocations {
        let Some(stage) = self.stages.get(&stage) else {
            return MapLocations::new();
        };
        stage
            .parents
            .iter()
            .filter_map(|p| self.stages.get(p).map(|parent| (*p, parent)))
            .map(|(p, parent)| {
                let holders = (0..parent.tasks)
                    .map(|m| parent.map_locations.get(&m).cloned())
                    .collect();
                (p, holders)
            })
            .collect()
    }
}

/// The state of every job and executor of one driver.
#[derive(Debug)]
pub struct Scheduler {
    max_failures: u32,
    executors: BTreeMap<ExecutorId, ExecutorState>,
    jobs: BTreeMap<JobId, JobRun>,
}

impl Scheduler {
    /// A scheduler that gives each task `max_failures` attempts.
    pub fn new(max_failures: u32) -> Self {
        Self {
            max_failures: max_failures.max(1),
            executors: BTreeMap::new(),
            jobs: BTreeMap::new(),
        }
    }

    pub fn executors(&self) -> impl Iterator<Item = (&ExecutorId, usize, usize)> {
        self.executors
            .iter()
            .map(|(id, e)| (id, e.slots, e.running.len()))
    }

    pub fn active_jobs(&self) -> usize {
        self.jobs.len()
    }

    pub fn on_event(&mut self, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::ExecutorAdded { executor, slots } => {
                self.executors.insert(
                    executor,
                    ExecutorState {
                        slots,
                        running: BTreeSet::new(),
                    },
                );
            }
            Event::ExecutorLost { executor, reason } => {
                self.executor_lost(&executor, &reason, &mut actions)
            }
            Event::JobSubmitted { job, graph } => self.job_submitted(job, graph),
            Event::TaskEnded {
                executor,
                task,
                result,
            } => self.task_ended(&executor, task, result, &mut actions),
            Event::JobCancelled { job, reason } => self.fail_job(job, reason, &mut actions),
        }
        self.submit_ready_stages(&mut actions);
        self.offer_slots(&mut actions);
        actions
    }

    fn job_submitted(&mut self, job: JobId, graph: StageGraph) {
        let stages = graph
            .stages
            .into_iter()
            .map(|s| {
                (
                    s.id,
                    StageRun {
                        kind: s.kind,
                        tasks: s.tasks(),
                        plan: s.plan,
                        parents: s.parents,
                        submitted: false,
                        pending: BTreeSet::new(),
                        running: BTreeMap::new(),
                        attempts: BTreeMap::new(),
                        failures: BTreeMap::new(),
                        map_outputs: BTreeMap::new(),
                        map_locations: BTreeMap::new(),
                        reads: Arc::default(),
                        results: BTreeMap::new(),
                        finished: BTreeSet::new(),
                    },
                )
            })
            .collect();
        self.jobs.insert(job, JobRun { stages });
    }

    fn task_ended(
        &mut self,
        executor: &ExecutorId,
        task: TaskId,
        result: Result<TaskOutput, TaskError>,
        actions: &mut Vec<Action>,
    ) {
        if let Some(e) = self.executors.get_mut(executor) {
            e.running.remove(&task);
        }
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return; // The job already ended; this was a straggler.
        };
        let Some(stage) = job.stages.get_mut(&task.stage) else {
            return;
        };
        // Only the attempt we are waiting for counts.
        if stage.running.get(&task.partition).map(|(id, _)| *id) != Some(task) {
            return;
        }
        stage.running.remove(&task.partition);
        actions.push(Action::Progress(ProgressEvent::TaskEnded {
            job: task.job,
            stage: task.stage,
            succeeded: result.is_ok(),
        }));
        match result {
            Ok(output) => {
                match output {
                    TaskOutput::Map(status) => {
                        stage.map_outputs.insert(task.partition, status);
                        stage.map_locations.insert(task.partition, executor.clone());
                    }
                    TaskOutput::Result(batches) => {
                        stage.results.insert(task.partition, (task, batches));
                    }
                }
                stage.finished.insert(task.partition);
                if stage.is_complete() {
                    self.stage_completed(task.job, task.stage, actions);
                }
            }
            Err(error) => {
                let failures = stage.failures.entry(task.partition).or_insert(0);
                if error.counts_as_failure() {
                    *failures += 1;
                }
                if *failures >= self.max_failures {
                    let message = format!(
                        "Job {} aborted: task {} in stage {} failed {} time{}; most recent failure: {} on executor {}: {}",
                        task.job,
                        task.partition,
                        task.stage,
                        failures,
                        if *failures == 1 { "" } else { "s" },
                        task,
                        executor,
                        error
                    );
                    self.fail_job(task.job, message, actions);
                } else {
                    stage.pending.insert(task.partition);
                }
            }
        }
    }

    fn stage_completed(&mut self, job_id: JobId, stage_id: StageId, actions: &mut Vec<Action>) {
        actions.push(Action::Progress(ProgressEvent::StageCompleted {
            job: job_id,
            stage: stage_id,
        }));
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        let is_result = job
            .stages
            .get(&stage_id)
            .is_some_and(|s| s.kind == StageKind::Result);
        if !is_result {
            return;
        }
        let Some(job) = self.jobs.remove(&job_id) else {
            return;
        };
        let stages = job.stage_ids();
        let mut committed = Vec::new();
        let mut batches = Vec::new();
        for stage in job.stages.into_values() {
            for (task, rows) in stage.results.into_values() {
                committed.push(task);
                batches.extend(rows);
            }
        }
        // Blocks go first, so they are gone as soon as possible after the
        // caller hears of the result.
        actions.push(Action::RemoveShuffle { stages });
        actions.push(Action::JobSucceeded {
            job: job_id,
            batches,
            committed,
        });
    }

    fn fail_job(&mut self, job_id: JobId, error: String, actions: &mut Vec<Action>) {
        let Some(job) = self.jobs.remove(&job_id) else {
            return;
        };
        for stage in job.stages.values() {
            for (task, executor) in stage.running.values() {
                actions.push(Action::KillTask {
                    executor: executor.clone(),
                    task: *task,
                });
            }
        }
        actions.push(Action::JobFailed { job: job_id, error });
        actions.push(Action::RemoveShuffle {
            stages: job.stage_ids(),
        });
    }

    fn executor_lost(&mut self, executor: &ExecutorId, reason: &str, actions: &mut Vec<Action>) {
        if self.executors.remove(executor).is_none() {
            return;
        }
        for job in self.jobs.values_mut() {
            for stage in job.stages.values_mut() {
                let lost: Vec<usize> = stage
                    .running
                    .iter()
                    .filter(|(_, (_, e))| e == executor)
                    .map(|(p, _)| *p)
                    .collect();
                for partition in lost {
                    stage.running.remove(&partition);
                    stage.pending.insert(partition);
                }
            }
        }
        // Map output is kept: in one process the block store outlives the
        // executors that wrote into it.
        if self.executors.is_empty() {
            let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
            for job in jobs {
                self.fail_job(
                    job,
                    format!("Job {job} aborted: every executor is gone (last, executor {executor}: {reason})"),
                    actions,
                );
            }
        }
    }

    /// Marks stages whose parents are complete as submitted, queueing their
    /// tasks; repeats until nothing changes (a stage with no tasks completes at
    /// once and may make its children ready).
    fn submit_ready_stages(&mut self, actions: &mut Vec<Action>) {
        loop {
            let mut ready = Vec::new();
            for (job_id, job) in &self.jobs {
                for (stage_id, stage) in &job.stages {
                    let parents_done = stage
                        .parents
                        .iter()
                        .all(|p| job.stages.get(p).is_some_and(StageRun::is_complete));
                    if !stage.submitted && parents_done {
                        ready.push((*job_id, *stage_id));
                    }
                }
            }
            if ready.is_empty() {
                return;
            }
            for (job_id, stage_id) in ready {
                let Some(job) = self.jobs.get_mut(&job_id) else {
                    continue;
                };
                let reads = Arc::new(job.parent_locations(stage_id));
                let Some(stage) = job.stages.get_mut(&stage_id) else {
                    continue;
                };
                stage.reads = reads;
                stage.submitted = true;
                stage.pending = (0..stage.tasks).collect();
                actions.push(Action::Progress(ProgressEvent::StageSubmitted {
                    job: job_id,
                    stage: stage_id,
                    tasks: stage.tasks,
                }));
                if stage.tasks == 0 {
                    self.stage_completed(job_id, stage_id, actions);
                }
            }
        }
    }

    /// Gives pending tasks, oldest job and stage first, to the executor with
    /// the most free slots (ties go to the lowest id), so tasks spread out.
    fn offer_slots(&mut self, actions: &mut Vec<Action>) {
        for (job_id, job) in self.jobs.iter_mut() {
            for (stage_id, stage) in job.stages.iter_mut() {
                while let Some(&partition) = stage.pending.first() {
                    let Some((executor, state)) = self
                        .executors
                        .iter_mut()
                        .filter(|(_, e)| e.free() > 0)
                        .max_by(|(a_id, a), (b_id, b)| {
                            a.free().cmp(&b.free()).then(b_id.cmp(a_id))
                        })
                    else {
                        return;
                    };
                    stage.pending.remove(&partition);
                    let attempt = stage.attempts.entry(partition).or_insert(0);
                    let task = TaskId {
                        job: *job_id,
                        stage: *stage_id,
                        partition,
                        attempt: *attempt,
                    };
                    *attempt += 1;
                    state.running.insert(task);
                    stage.running.insert(partition, (task, executor.clone()));
                    actions.push(Action::LaunchTask {
                        executor: executor.clone(),
                        task: TaskDescription {
                            id: task,
                            kind: stage.kind,
                            plan: Arc::clone(&stage.plan),
                            locations: Arc::clone(&stage.reads),
                        },
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::empty::EmptyExec;
    use ember_engine::Stage;

    use super::*;
    use crate::protocol::TaskFailureKind;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]))
    }

    /// Stage 0: two map tasks; stage 1: one result task reading stage 0.
    fn two_stage_graph() -> StageGraph {
        let plan = |n| Arc::new(EmptyExec::new(schema()).with_partitions(n)) as _;
        StageGraph {
            stages: vec![
                Stage {
                    id: 0,
                    kind: StageKind::ShuffleMap,
                    plan: plan(2),
                    parents: vec![],
                },
                Stage {
                    id: 1,
                    kind: StageKind::Result,
                    plan: plan(1),
                    parents: vec![0],
                },
            ],
        }
    }

    fn exec(id: &str) -> ExecutorId {
        ExecutorId(id.to_string())
    }

    fn launches(actions: &[Action]) -> Vec<(ExecutorId, TaskId)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::LaunchTask { executor, task } => Some((executor.clone(), task.id)),
                _ => None,
            })
            .collect()
    }

    fn map_done(executor: &ExecutorId, task: TaskId) -> Event {
        Event::TaskEnded {
            executor: executor.clone(),
            task,
            result: Ok(TaskOutput::Map(MapStatus::default())),
        }
    }

    fn failed(executor: &ExecutorId, task: TaskId, message: &str) -> Event {
        Event::TaskEnded {
            executor: executor.clone(),
            task,
            result: Err(TaskError::new(TaskFailureKind::Error, message)),
        }
    }

    fn start(max_failures: u32, executors: &[(&str, usize)]) -> (Scheduler, Vec<Action>) {
        let mut s = Scheduler::new(max_failures);
        for (id, slots) in executors {
            s.on_event(Event::ExecutorAdded {
                executor: exec(id),
                slots: *slots,
            });
        }
        let actions = s.on_event(Event::JobSubmitted {
            job: 7,
            graph: two_stage_graph(),
        });
        (s, actions)
    }

    #[test]
    fn stages_run_in_dependency_order_and_the_job_returns_its_rows() {
        let (mut s, actions) = start(1, &[("1", 4)]);
        let first = launches(&actions);
        assert_eq!(first.len(), 2, "only the map stage is runnable");
        assert!(first.iter().all(|(_, t)| t.stage == 0));
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Progress(ProgressEvent::StageSubmitted {
                stage: 0,
                tasks: 2,
                ..
            })
        )));

        let a = s.on_event(map_done(&first[0].0, first[0].1));
        assert!(launches(&a).is_empty(), "stage 1 waits for all of stage 0");
        let a = s.on_event(map_done(&first[1].0, first[1].1));
        assert!(a.iter().any(|a| matches!(
            a,
            Action::Progress(ProgressEvent::StageCompleted { stage: 0, .. })
        )));
        let result_task = launches(&a);
        assert_eq!(result_task.len(), 1);
        assert_eq!(result_task[0].1.stage, 1);

        let batch = datafusion::arrow::record_batch::RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        let a = s.on_event(Event::TaskEnded {
            executor: exec("1"),
            task: result_task[0].1,
            result: Ok(TaskOutput::Result(vec![batch])),
        });
        let rows: usize = a
            .iter()
            .filter_map(|a| match a {
                Action::JobSucceeded {
                    job: 7, batches, ..
                } => Some(batches.iter().map(|b| b.num_rows()).sum::<usize>()),
                _ => None,
            })
            .sum();
        assert_eq!(rows, 3);
        assert!(
            a.iter()
                .any(|a| matches!(a, Action::RemoveShuffle { stages } if stages == &vec![0, 1]))
        );
        assert_eq!(s.active_jobs(), 0);
    }

    #[test]
    fn a_reduce_task_is_told_which_executor_holds_each_map_output() {
        let (mut s, actions) = start(1, &[("1", 1), ("2", 1)]);
        let first = launches(&actions);
        assert_eq!(first.len(), 2);
        s.on_event(map_done(&first[0].0, first[0].1));
        let a = s.on_event(map_done(&first[1].0, first[1].1));
        let reads = a
            .iter()
            .find_map(|a| match a {
                Action::LaunchTask { task, .. } => Some(Arc::clone(&task.locations)),
                _ => None,
            })
            .unwrap();
        let mut holders = vec![None, None];
        for (executor, task) in &first {
            holders[task.partition] = Some(executor.clone());
        }
        assert_eq!(*reads, MapLocations::from([(0, holders)]));
    }

    #[test]
    fn tasks_never_exceed_slots_and_spread_over_executors() {
        let (mut s, actions) = start(1, &[("1", 1)]);
        let first = launches(&actions);
        assert_eq!(first.len(), 1, "one slot, one task");
        let next = launches(&s.on_event(map_done(&first[0].0, first[0].1)));
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].1.partition, 1);

        let (_, actions) = start(1, &[("1", 2), ("2", 2)]);
        let placed: Vec<ExecutorId> = launches(&actions).into_iter().map(|(e, _)| e).collect();
        assert_eq!(placed, vec![exec("1"), exec("2")]);
    }

    #[test]
    fn a_failing_task_is_retried_until_max_failures_then_the_job_fails_with_its_error() {
        let (mut s, actions) = start(3, &[("1", 2)]);
        let tasks = launches(&actions);
        let (e, mut victim) = tasks[0].clone();
        for attempt in 1..3 {
            let retry = launches(&s.on_event(failed(&e, victim, "boom")));
            assert_eq!(retry.len(), 1, "attempt {attempt} is retried");
            assert_eq!(retry[0].1.partition, victim.partition);
            assert_eq!(retry[0].1.attempt, attempt);
            victim = retry[0].1;
        }
        let a = s.on_event(failed(&e, victim, "boom"));
        let error = a
            .iter()
            .find_map(|a| match a {
                Action::JobFailed { job: 7, error } => Some(error.clone()),
                _ => None,
            })
            .expect("the job fails");
        assert!(error.contains("failed 3 times"), "{error}");
        assert!(error.ends_with("boom"), "{error}");
        // The other task still running is killed.
        assert!(
            a.iter()
                .any(|a| matches!(a, Action::KillTask { task, .. } if *task == tasks[1].1))
        );
        assert!(launches(&a).is_empty());
        assert_eq!(s.active_jobs(), 0);
    }

    #[test]
    fn a_task_that_fails_then_succeeds_lets_the_job_go_on() {
        let (mut s, actions) = start(2, &[("1", 2)]);
        let tasks = launches(&actions);
        let retry = launches(&s.on_event(failed(&tasks[0].0, tasks[0].1, "flaky")));
        s.on_event(map_done(&retry[0].0, retry[0].1));
        let a = s.on_event(map_done(&tasks[1].0, tasks[1].1));
        assert!(a.iter().any(|a| matches!(
            a,
            Action::Progress(ProgressEvent::StageCompleted { stage: 0, .. })
        )));
        assert!(!a.iter().any(|a| matches!(a, Action::JobFailed { .. })));
    }

    #[test]
    fn reports_from_stale_attempts_are_ignored() {
        let (mut s, actions) = start(3, &[("1", 2)]);
        let tasks = launches(&actions);
        let retry = launches(&s.on_event(failed(&tasks[0].0, tasks[0].1, "x")));
        // The first attempt reporting success again changes nothing.
        let a = s.on_event(map_done(&tasks[0].0, tasks[0].1));
        assert!(a.is_empty(), "{a:?}");
        s.on_event(map_done(&tasks[1].0, tasks[1].1));
        let a = s.on_event(map_done(&retry[0].0, retry[0].1));
        assert!(a.iter().any(|a| matches!(
            a,
            Action::Progress(ProgressEvent::StageCompleted { stage: 0, .. })
        )));
    }

    #[test]
    fn a_lost_executors_tasks_move_elsewhere_without_counting_as_failures() {
        let (mut s, actions) = start(1, &[("1", 1), ("2", 1)]);
        let tasks = launches(&actions);
        assert_eq!(tasks.len(), 2);
        let (lost_exec, lost_task) = tasks
            .iter()
            .find(|(e, _)| *e == exec("1"))
            .cloned()
            .unwrap();
        let a = s.on_event(Event::ExecutorLost {
            executor: lost_exec,
            reason: "gone".into(),
        });
        assert!(
            !a.iter().any(|a| matches!(a, Action::JobFailed { .. })),
            "max failures is 1, yet no failure counted"
        );
        let other = tasks
            .iter()
            .find(|(e, _)| *e == exec("2"))
            .cloned()
            .unwrap();
        let moved = launches(&s.on_event(map_done(&other.0, other.1)));
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].0, exec("2"));
        assert_eq!(moved[0].1.partition, lost_task.partition);

        let a = s.on_event(Event::ExecutorLost {
            executor: exec("2"),
            reason: "gone too".into(),
        });
        let error = a.iter().find_map(|a| match a {
            Action::JobFailed { error, .. } => Some(error.clone()),
            _ => None,
        });
        assert!(error.is_some_and(|e| e.contains("every executor is gone")));
    }

    #[test]
    fn a_cancelled_job_kills_its_tasks() {
        let (mut s, actions) = start(1, &[("1", 2)]);
        assert_eq!(launches(&actions).len(), 2);
        let a = s.on_event(Event::JobCancelled {
            job: 7,
            reason: "user".into(),
        });
        assert_eq!(
            a.iter()
                .filter(|a| matches!(a, Action::KillTask { .. }))
                .count(),
            2
        );
        assert!(
            a.iter()
                .any(|a| matches!(a, Action::JobFailed { job: 7, error } if error == "user"))
        );
    }
}
