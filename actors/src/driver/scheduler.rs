//! The driver's decisions, as a pure state machine: events in (an executor
//! joined or was lost, a job was submitted, a task ended, time passed),
//! actions out (launch this task there, kill that one, the job failed). The
//! driver actor only carries the actions out, so every case here is tested
//! without actors.
//!
//! Faults are handled as Spark's DAG and task schedulers handle them:
//! - a failed task is retried, on another executor where there is one,
//!   until it has failed `max_failures` times; failures that are not the
//!   task's fault (its executor was lost, it could not fetch its input) do
//!   not count;
//! - a lost executor's running tasks are queued again, and, where the
//!   executor held the only copy of map output, that output is lost: the map
//!   tasks that wrote it run again before any stage that reads it goes on;
//! - a fetch failure marks the output it could not read lost and runs the
//!   parent stage's missing partitions, then the stage again; after
//!   `max_stage_attempts` such failures in a row the job is aborted;
//! - with speculation on, a task running much longer than its finished
//!   siblings gets a second attempt elsewhere; the first to finish wins and
//!   the other is killed;
//! - a job left with no executor fails once `no_executor_timeout` passes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::ExecutionPlanProperties;
use ember_engine::adaptive::{self, Coalescing};
use ember_engine::shuffle::{MapStatus, ResultOutput};
use ember_engine::{StageGraph, StageId, StageKind};

use super::{JobError, ProgressEvent, ResultPart};
use crate::protocol::{
    ExecutorId, FetchFailure, JobId, MapLocations, TaskDescription, TaskError, TaskFailureKind,
    TaskId, TaskOutput,
};

/// How a driver's scheduler handles faults.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Attempts a task gets before its job fails (`ember.task.maxFailures`).
    pub max_failures: u32,
    /// Fetch failures in a row a stage survives
    /// (`ember.stage.maxConsecutiveAttempts`).
    pub max_stage_attempts: u32,
    /// Whether map output survives the executor that wrote it: true in one
    /// process, where every executor shares one block store.
    pub shuffle_outlives_executors: bool,
    /// How long a job waits for an executor once it has none.
    pub no_executor_timeout: Duration,
    /// How long a client-mode driver cut off from both its cluster manager
    /// and every executor waits before it gives up.
    pub cluster_lost_timeout: Duration,
    /// Speculative execution, when on.
    pub speculation: Option<Speculation>,
    /// Joining small reduce partitions once their sizes are known, when on
    /// (`ember.sql.adaptive.coalescePartitions.enabled`).
    pub coalesce: Option<Coalescing>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_failures: 4,
            max_stage_attempts: 4,
            shuffle_outlives_executors: false,
            no_executor_timeout: Duration::from_secs(60),
            cluster_lost_timeout: Duration::from_secs(10),
            speculation: None,
            coalesce: Some(Coalescing::default()),
        }
    }
}

/// When a running task gets a speculative copy (Spark's knobs).
#[derive(Debug, Clone, PartialEq)]
pub struct Speculation {
    /// A task is slow when it has run this many times the median of its
    /// stage's finished tasks...
    pub multiplier: f64,
    /// ...once this fraction of the stage's tasks has finished...
    pub quantile: f64,
    /// ...and for at least this long.
    pub min_runtime: Duration,
}

impl Default for Speculation {
    fn default() -> Self {
        Self {
            multiplier: 1.5,
            quantile: 0.75,
            min_runtime: Duration::from_millis(100),
        }
    }
}

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
    /// Time passed: look for stragglers and for jobs without executors.
    Tick,
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
        /// The result stage.
        stage: StageId,
        /// Each result partition's rows or where they are held.
        parts: Vec<ResultPart>,
        /// The result-stage attempts whose output was used.
        committed: Vec<TaskId>,
    },
    JobFailed {
        job: JobId,
        error: JobError,
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

/// One running attempt of a partition.
#[derive(Debug, Clone)]
struct Attempt {
    task: TaskId,
    executor: ExecutorId,
    started: Instant,
}

#[derive(Debug)]
struct StageRun {
    kind: StageKind,
    plan: Arc<dyn ExecutionPlan>,
    tasks: usize,
    parents: Vec<StageId>,
    /// Whether its tasks may be launched: its parents were complete when it
    /// was (last) submitted and no parent output was lost since.
    active: bool,
    pending: BTreeSet<usize>,
    /// Partitions waiting for a speculative copy.
    speculative: BTreeSet<usize>,
    /// Running attempts per partition (two while one is speculated).
    running: BTreeMap<usize, Vec<Attempt>>,
    /// Attempts started per partition (the next attempt number).
    attempts: BTreeMap<usize, u32>,
    /// Failures that count against the budget, per partition.
    failures: BTreeMap<usize, u32>,
    /// Executors a partition failed on, avoided when retrying it.
    failed_on: BTreeMap<usize, BTreeSet<ExecutorId>>,
    /// Finished map tasks' output, and the executor holding it.
    map_outputs: BTreeMap<usize, (MapStatus, ExecutorId)>,
    /// Where the blocks this stage reads live, set when it is submitted.
    reads: Arc<MapLocations>,
    /// Each finished result task's attempt, rows, and where they are.
    results: BTreeMap<usize, (TaskId, ResultOutput, ExecutorId)>,
    finished: BTreeSet<usize>,
    /// How long its successful attempts took, for speculation.
    durations: Vec<Duration>,
    /// Fetch failures since it last completed.
    fetch_failures: u32,
    /// Whether its plan was adapted to what its parents wrote (done once,
    /// when it is first submitted).
    adapted: bool,
}

impl StageRun {
    fn is_complete(&self) -> bool {
        self.finished.len() == self.tasks
    }

    fn is_running(&self, partition: usize) -> bool {
        self.running.get(&partition).is_some_and(|a| !a.is_empty())
    }

    /// Forgets the output of map task `partition`.
    fn lose_output(&mut self, partition: usize) {
        self.map_outputs.remove(&partition);
        self.finished.remove(&partition);
        // A stage still running computes it again along with the rest;
        // otherwise it would never complete, and its job would hang.
        if self.active && !self.is_running(partition) {
            self.pending.insert(partition);
        }
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
    /// partition.
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
                    .map(|m| parent.map_outputs.get(&m).map(|(_, e)| e.clone()))
                    .collect();
                (p, holders)
            })
            .collect()
    }

    /// Stages whose output is still needed: the result stage, and the
    /// parents of every needed stage that is not complete.
    fn needed(&self) -> BTreeSet<StageId> {
        let mut needed = BTreeSet::new();
        let mut stack: Vec<StageId> = self
            .stages
            .iter()
            .filter(|(_, s)| s.kind == StageKind::Result)
            .map(|(id, _)| *id)
            .collect();
        while let Some(id) = stack.pop() {
            if !needed.insert(id) {
                continue;
            }
            if let Some(stage) = self.stages.get(&id).filter(|s| !s.is_complete()) {
                stack.extend(stage.parents.iter().copied());
            }
        }
        needed
    }

    /// Before `stage` first runs: its shuffle reads learn how many map
    /// tasks each parent ran as, and, with `coalesce`, runs of its small
    /// reduce partitions are joined into one task each (module
    /// `ember_engine::adaptive`). A stage whose plan cannot be adapted runs
    /// as planned.
    fn adapt(&mut self, stage_id: StageId, coalesce: Option<&Coalescing>, slots: usize) {
        let Some(stage) = self.stages.get(&stage_id) else {
            return;
        };
        if stage.adapted {
            return;
        }
        let parent_tasks: BTreeMap<StageId, usize> = stage
            .parents
            .iter()
            .filter_map(|p| self.stages.get(p).map(|parent| (*p, parent.tasks)))
            .collect();
        let mut ranges = None;
        if let Some(coalesce) = coalesce
            && let Some((partitions, reads)) = adaptive::coalescible(&stage.plan)
        {
            let mut bytes = vec![0u64; partitions];
            for parent in reads.iter().filter_map(|p| self.stages.get(p)) {
                for (status, _) in parent.map_outputs.values() {
                    for &(reduce, b) in &status.bytes_per_reduce {
                        if let Some(total) = bytes.get_mut(reduce) {
                            *total += b;
                        }
                    }
                }
            }
            let target = coalesce.target(bytes.iter().sum(), slots);
            let joined = adaptive::coalesce_ranges(&bytes, target);
            if joined.len() < partitions {
                tracing::debug!(
                    stage = stage_id,
                    from = partitions,
                    to = joined.len(),
                    target,
                    "small reduce partitions coalesced"
                );
                ranges = Some(Arc::from(joined));
            }
        }
        let plan = Arc::clone(&stage.plan);
        let Some(stage) = self.stages.get_mut(&stage_id) else {
            return;
        };
        stage.adapted = true;
        match adaptive::adapt_stage(plan, &parent_tasks, ranges) {
            Ok(plan) => {
                stage.tasks = plan.output_partitioning().partition_count();
                stage.plan = plan;
            }
            Err(e) => {
                tracing::warn!(stage = stage_id, error = %e, "the stage runs as planned: its plan could not be adapted")
            }
        }
    }

    /// Holds back the pending tasks of every stage reading `parent`, whose
    /// output is no longer complete; running ones go on.
    fn hold_children_of(&mut self, parent: StageId) {
        for stage in self.stages.values_mut() {
            if stage.parents.contains(&parent) {
                stage.active = false;
                stage.pending.clear();
                stage.speculative.clear();
            }
        }
    }
}

/// The state of every job and executor of one driver.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    executors: BTreeMap<ExecutorId, ExecutorState>,
    jobs: BTreeMap<JobId, JobRun>,
    /// Since when there has been no executor, while jobs wait.
    no_executors_since: Option<Instant>,
    /// The last executor lost, and why, for the error of a job left with none.
    last_loss: Option<String>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Self {
            config: SchedulerConfig {
                max_failures: config.max_failures.max(1),
                max_stage_attempts: config.max_stage_attempts.max(1),
                ..config
            },
            executors: BTreeMap::new(),
            jobs: BTreeMap::new(),
            no_executors_since: None,
            last_loss: None,
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

    pub fn on_event(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::ExecutorAdded { executor, slots } => {
                self.no_executors_since = None;
                self.executors.insert(
                    executor,
                    ExecutorState {
                        slots,
                        running: BTreeSet::new(),
                    },
                );
            }
            Event::ExecutorLost { executor, reason } => self.executor_lost(now, &executor, &reason),
            Event::JobSubmitted { job, graph } => self.job_submitted(job, graph),
            Event::TaskEnded {
                executor,
                task,
                result,
            } => self.task_ended(now, &executor, task, result, &mut actions),
            Event::JobCancelled { job, reason } => {
                self.fail_job(job, JobError::Cancelled { job, reason }, &mut actions)
            }
            Event::Tick => {
                self.fail_jobs_without_executors(now, &mut actions);
                self.find_stragglers(now);
            }
        }
        self.submit_ready_stages(&mut actions);
        self.offer_slots(now, &mut actions);
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
                        active: false,
                        pending: BTreeSet::new(),
                        speculative: BTreeSet::new(),
                        running: BTreeMap::new(),
                        attempts: BTreeMap::new(),
                        failures: BTreeMap::new(),
                        failed_on: BTreeMap::new(),
                        map_outputs: BTreeMap::new(),
                        reads: Arc::default(),
                        results: BTreeMap::new(),
                        finished: BTreeSet::new(),
                        durations: Vec::new(),
                        fetch_failures: 0,
                        adapted: false,
                    },
                )
            })
            .collect();
        self.jobs.insert(job, JobRun { stages });
    }

    fn task_ended(
        &mut self,
        now: Instant,
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
        // Only attempts still wanted count: not a killed speculative loser,
        // not an attempt from before its executor was declared lost.
        let Some(attempts) = stage.running.get_mut(&task.partition) else {
            return;
        };
        let Some(index) = attempts.iter().position(|a| a.task == task) else {
            return;
        };
        let attempt = attempts.remove(index);
        let others: Vec<Attempt> = if result.is_ok() {
            std::mem::take(attempts)
        } else {
            Vec::new()
        };
        if stage
            .running
            .get(&task.partition)
            .is_some_and(Vec::is_empty)
        {
            stage.running.remove(&task.partition);
        }
        actions.push(Action::Progress(ProgressEvent::TaskEnded {
            job: task.job,
            stage: task.stage,
            succeeded: result.is_ok(),
        }));
        match result {
            Ok(output) => {
                // The first attempt to finish wins; the others are stopped.
                for other in others {
                    actions.push(Action::KillTask {
                        executor: other.executor,
                        task: other.task,
                    });
                }
                stage.speculative.remove(&task.partition);
                stage
                    .durations
                    .push(now.saturating_duration_since(attempt.started));
                match output {
                    TaskOutput::Map(status) => {
                        stage
                            .map_outputs
                            .insert(task.partition, (status, executor.clone()));
                    }
                    TaskOutput::Result(output) => {
                        stage
                            .results
                            .insert(task.partition, (task, output, executor.clone()));
                    }
                }
                stage.finished.insert(task.partition);
                if stage.is_complete() {
                    // Submitted again only if some of its output is lost.
                    stage.active = false;
                    stage.fetch_failures = 0;
                    self.stage_completed(task.job, task.stage, actions);
                }
            }
            Err(error) if error.kind == TaskFailureKind::FetchFailed && error.fetch.is_some() => {
                self.fetch_failed(task, executor, error, actions)
            }
            Err(error) => {
                let failures = stage.failures.entry(task.partition).or_insert(0);
                if error.counts_as_failure() {
                    *failures += 1;
                    stage
                        .failed_on
                        .entry(task.partition)
                        .or_default()
                        .insert(executor.clone());
                }
                if *failures >= self.config.max_failures {
                    let failed = JobError::TaskFailed {
                        task,
                        failures: *failures,
                        executor: executor.clone(),
                        error: Box::new(error),
                    };
                    self.fail_job(task.job, failed, actions);
                } else if stage.active
                    && !stage.finished.contains(&task.partition)
                    && !stage.is_running(task.partition)
                {
                    stage.pending.insert(task.partition);
                }
            }
        }
    }

    /// A reduce task could not read a block: that map output is gone. The
    /// parent stage runs its missing partitions again, then this stage goes
    /// on, unless it has failed this way too many times in a row.
    fn fetch_failed(
        &mut self,
        task: TaskId,
        executor: &ExecutorId,
        error: TaskError,
        actions: &mut Vec<Action>,
    ) {
        let Some(FetchFailure {
            stage: parent,
            maps,
            executor: holder,
        }) = error.fetch.clone()
        else {
            return;
        };
        let Some(job) = self.jobs.get_mut(&task.job) else {
            return;
        };
        if let Some(p) = job.stages.get_mut(&parent) {
            // Output already computed again elsewhere stays; a failure that
            // names no executor (one process) loses the output wherever it is.
            let unknown = holder.0.is_empty();
            for map in maps {
                if p.map_outputs
                    .get(&map)
                    .is_some_and(|(_, e)| unknown || *e == holder)
                {
                    tracing::warn!(stage = parent, map, executor = %holder, "map output lost; it will be computed again");
                    p.lose_output(map);
                }
            }
        }
        let Some(stage) = job.stages.get_mut(&task.stage) else {
            return;
        };
        // Only the first failure of a submission counts: the stage's other
        // tasks reading the same output fail the same way.
        if !stage.active {
            return;
        }
        stage.fetch_failures += 1;
        if stage.fetch_failures >= self.config.max_stage_attempts {
            let failed = JobError::FetchFailed {
                task,
                failures: stage.fetch_failures,
                executor: executor.clone(),
                error: Box::new(error),
            };
            self.fail_job(task.job, failed, actions);
            return;
        }
        job.hold_children_of(parent);
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
        let mut stages = job.stage_ids();
        let mut committed = Vec::new();
        let mut parts = Vec::new();
        for stage in job.stages.into_values() {
            for (partition, (task, output, executor)) in stage.results {
                committed.push(task);
                parts.push(ResultPart {
                    partition,
                    executor,
                    output,
                });
            }
            // Attempts still running (a stage run again after a fetch
            // failure may leave some) are no longer wanted.
            for attempt in stage.running.into_values().flatten() {
                actions.push(Action::KillTask {
                    executor: attempt.executor,
                    task: attempt.task,
                });
            }
        }
        // Held result rows stay until the caller has read them.
        if parts
            .iter()
            .any(|p| matches!(p.output, ResultOutput::Held { .. }))
        {
            stages.retain(|&s| s != stage_id);
        }
        // Blocks go first, so they are gone as soon as possible after the
        // caller hears of the result.
        actions.push(Action::RemoveShuffle { stages });
        actions.push(Action::JobSucceeded {
            job: job_id,
            stage: stage_id,
            parts,
            committed,
        });
    }

    fn fail_job(&mut self, job_id: JobId, error: JobError, actions: &mut Vec<Action>) {
        let Some(job) = self.jobs.remove(&job_id) else {
            return;
        };
        for stage in job.stages.values() {
            for attempt in stage.running.values().flatten() {
                actions.push(Action::KillTask {
                    executor: attempt.executor.clone(),
                    task: attempt.task,
                });
            }
        }
        actions.push(Action::JobFailed { job: job_id, error });
        actions.push(Action::RemoveShuffle {
            stages: job.stage_ids(),
        });
    }

    fn executor_lost(&mut self, now: Instant, executor: &ExecutorId, reason: &str) {
        if self.executors.remove(executor).is_none() {
            return;
        }
        self.last_loss = Some(format!("executor {executor}: {reason}"));
        let outputs_lost = !self.config.shuffle_outlives_executors;
        for job in self.jobs.values_mut() {
            let mut lost_outputs = Vec::new();
            for (stage_id, stage) in job.stages.iter_mut() {
                let partitions: Vec<usize> = stage.running.keys().copied().collect();
                for partition in partitions {
                    if let Some(attempts) = stage.running.get_mut(&partition) {
                        attempts.retain(|a| a.executor != *executor);
                    }
                    if !stage.is_running(partition) {
                        stage.running.remove(&partition);
                        if stage.active && !stage.finished.contains(&partition) {
                            stage.pending.insert(partition);
                        }
                    }
                }
                if outputs_lost && stage.kind == StageKind::ShuffleMap {
                    let gone: Vec<usize> = stage
                        .map_outputs
                        .iter()
                        .filter(|(_, (_, holder))| holder == executor)
                        .map(|(m, _)| *m)
                        .collect();
                    if !gone.is_empty() {
                        tracing::warn!(stage = stage_id, maps = gone.len(), %executor, "map output lost with its executor");
                        lost_outputs.push(*stage_id);
                    }
                    for m in gone {
                        stage.lose_output(m);
                    }
                }
                // Result rows held by the lost executor are computed again.
                if outputs_lost && stage.kind == StageKind::Result {
                    let gone: Vec<usize> = stage
                        .results
                        .iter()
                        .filter(|(_, (_, output, holder))| {
                            holder == executor && matches!(output, ResultOutput::Held { .. })
                        })
                        .map(|(p, _)| *p)
                        .collect();
                    for p in gone {
                        tracing::warn!(stage = stage_id, partition = p, %executor, "result rows lost with their executor; computed again");
                        stage.results.remove(&p);
                        stage.lose_output(p);
                    }
                }
            }
            for stage in lost_outputs {
                job.hold_children_of(stage);
            }
        }
        if self.executors.is_empty() {
            self.no_executors_since = Some(now);
        }
    }

    /// Fails every job once there has been no executor for the grace period.
    fn fail_jobs_without_executors(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if !self.executors.is_empty() || self.jobs.is_empty() {
            self.no_executors_since = None;
            return;
        }
        let since = *self.no_executors_since.get_or_insert(now);
        let waited = now.saturating_duration_since(since);
        if waited < self.config.no_executor_timeout {
            return;
        }
        let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in jobs {
            let failed = JobError::NoExecutors {
                job,
                waited,
                last_lost: self.last_loss.clone(),
            };
            self.fail_job(job, failed, actions);
        }
    }

    /// With speculation on, marks tasks running much longer than their
    /// finished siblings for a second attempt.
    fn find_stragglers(&mut self, now: Instant) {
        let Some(spec) = self.config.speculation.clone() else {
            return;
        };
        for job in self.jobs.values_mut() {
            for stage in job.stages.values_mut() {
                if !stage.active || stage.tasks < 2 {
                    continue;
                }
                let needed = ((spec.quantile * stage.tasks as f64).floor() as usize).max(1);
                if stage.finished.len() < needed || stage.durations.is_empty() {
                    continue;
                }
                let mut durations = stage.durations.clone();
                durations.sort();
                let median = durations[durations.len() / 2];
                let threshold = median.mul_f64(spec.multiplier).max(spec.min_runtime);
                for (partition, attempts) in &stage.running {
                    if let [only] = attempts.as_slice()
                        && now.saturating_duration_since(only.started) > threshold
                        && !stage.finished.contains(partition)
                        && stage.speculative.insert(*partition)
                    {
                        tracing::info!(task = %only.task, "speculating a slow task");
                    }
                }
            }
        }
    }

    /// Submits every needed stage whose parents are complete, queueing its
    /// missing partitions; repeats until nothing changes (a stage with
    /// nothing to run completes at once and may make its children ready).
    fn submit_ready_stages(&mut self, actions: &mut Vec<Action>) {
        loop {
            let mut ready = Vec::new();
            for (job_id, job) in &self.jobs {
                let needed = job.needed();
                for (stage_id, stage) in &job.stages {
                    let parents_done = stage
                        .parents
                        .iter()
                        .all(|p| job.stages.get(p).is_some_and(StageRun::is_complete));
                    if !stage.active
                        && !stage.is_complete()
                        && parents_done
                        && needed.contains(stage_id)
                    {
                        ready.push((*job_id, *stage_id));
                    }
                }
            }
            if ready.is_empty() {
                return;
            }
            let slots = self.executors.values().map(|e| e.slots).sum::<usize>();
            for (job_id, stage_id) in ready {
                let Some(job) = self.jobs.get_mut(&job_id) else {
                    continue;
                };
                job.adapt(stage_id, self.config.coalesce.as_ref(), slots);
                let reads = Arc::new(job.parent_locations(stage_id));
                let Some(stage) = job.stages.get_mut(&stage_id) else {
                    continue;
                };
                stage.reads = reads;
                stage.active = true;
                stage.pending = (0..stage.tasks)
                    .filter(|p| !stage.finished.contains(p) && !stage.is_running(*p))
                    .collect();
                actions.push(Action::Progress(ProgressEvent::StageSubmitted {
                    job: job_id,
                    stage: stage_id,
                    tasks: stage.tasks - stage.finished.len(),
                }));
                if stage.is_complete() {
                    stage.active = false;
                    self.stage_completed(job_id, stage_id, actions);
                }
            }
        }
    }

    /// Gives pending tasks, oldest job and stage first, to the executor with
    /// the most free slots (ties go to the lowest id), so tasks spread out;
    /// a retried task avoids the executors it failed on while another is
    /// alive, and a speculative copy never runs beside its original.
    fn offer_slots(&mut self, now: Instant, actions: &mut Vec<Action>) {
        for (job_id, job) in self.jobs.iter_mut() {
            for (stage_id, stage) in job.stages.iter_mut() {
                if !stage.active {
                    continue;
                }
                let queued: Vec<(usize, bool)> = stage
                    .pending
                    .iter()
                    .map(|p| (*p, false))
                    .chain(stage.speculative.iter().map(|p| (*p, true)))
                    .collect();
                for (partition, speculative) in queued {
                    let Some(executor) = pick_executor(&self.executors, stage, partition) else {
                        continue;
                    };
                    let Some(state) = self.executors.get_mut(&executor) else {
                        continue;
                    };
                    if speculative {
                        stage.speculative.remove(&partition);
                    } else {
                        stage.pending.remove(&partition);
                    }
                    let attempt = stage.attempts.entry(partition).or_insert(0);
                    let task = TaskId {
                        job: *job_id,
                        stage: *stage_id,
                        partition,
                        attempt: *attempt,
                    };
                    *attempt += 1;
                    state.running.insert(task);
                    stage.running.entry(partition).or_default().push(Attempt {
                        task,
                        executor: executor.clone(),
                        started: now,
                    });
                    actions.push(Action::LaunchTask {
                        executor,
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
/// The executor a task of `partition` should run on: one with a free slot
/// and no attempt of it running, not one it failed on while another is
/// alive; the most free slots win, ties going to the lowest id.
fn pick_executor(
    executors: &BTreeMap<ExecutorId, ExecutorState>,
    stage: &StageRun,
    partition: usize,
) -> Option<ExecutorId> {
    let running_on: BTreeSet<&ExecutorId> = stage
        .running
        .get(&partition)
        .into_iter()
        .flatten()
        .map(|a| &a.executor)
        .collect();
    let failed_on = stage.failed_on.get(&partition);
    let avoid = |id: &ExecutorId| failed_on.is_some_and(|f| f.contains(id));
    let elsewhere = executors
        .keys()
        .any(|id| !avoid(id) && !running_on.contains(id));
    executors
        .iter()
        .filter(|(id, e)| e.free() > 0 && !running_on.contains(id) && !(elsewhere && avoid(id)))
        .max_by(|(a_id, a), (b_id, b)| a.free().cmp(&b.free()).then(b_id.cmp(a_id)))
        .map(|(id, _)| id.clone())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::empty::EmptyExec;
    use ember_engine::Stage;

    use super::*;

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
            one_task: None,
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

    fn config(max_failures: u32) -> SchedulerConfig {
        SchedulerConfig {
            max_failures,
            ..SchedulerConfig::default()
        }
    }

    fn start(max_failures: u32, executors: &[(&str, usize)]) -> (Scheduler, Vec<Action>) {
        start_with(config(max_failures), executors)
    }

    fn start_with(
        config: SchedulerConfig,
        executors: &[(&str, usize)],
    ) -> (Scheduler, Vec<Action>) {
        let mut s = Scheduler::new(config);
        for (id, slots) in executors {
            s.on_event(
                Instant::now(),
                Event::ExecutorAdded {
                    executor: exec(id),
                    slots: *slots,
                },
            );
        }
        let actions = s.on_event(
            Instant::now(),
            Event::JobSubmitted {
                job: 7,
                graph: two_stage_graph(),
            },
        );
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

        let a = s.on_event(Instant::now(), map_done(&first[0].0, first[0].1));
        assert!(launches(&a).is_empty(), "stage 1 waits for all of stage 0");
        let a = s.on_event(Instant::now(), map_done(&first[1].0, first[1].1));
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
        let a = s.on_event(
            Instant::now(),
            Event::TaskEnded {
                executor: exec("1"),
                task: result_task[0].1,
                result: Ok(TaskOutput::Result(ResultOutput::Direct(vec![batch]))),
            },
        );
        let rows: u64 = a
            .iter()
            .filter_map(|a| match a {
                Action::JobSucceeded { job: 7, parts, .. } => {
                    Some(parts.iter().map(|p| p.output.direct_rows()).sum::<u64>())
                }
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
    fn held_result_rows_outlive_the_job_and_are_computed_again_when_their_executor_is_lost() {
        let mut s = Scheduler::new(config(4));
        for id in ["1", "2"] {
            s.on_event(
                Instant::now(),
                Event::ExecutorAdded {
                    executor: exec(id),
                    slots: 1,
                },
            );
        }
        // One stage, two result partitions.
        let graph = StageGraph {
            stages: vec![Stage {
                id: 0,
                kind: StageKind::Result,
                plan: Arc::new(EmptyExec::new(schema()).with_partitions(2)),
                parents: vec![],
            }],
            one_task: None,
        };
        let a = s.on_event(Instant::now(), Event::JobSubmitted { job: 3, graph });
        let tasks = launches(&a);
        assert_eq!(tasks.len(), 2);
        let held = |executor: &ExecutorId, task: TaskId| Event::TaskEnded {
            executor: executor.clone(),
            task,
            result: Ok(TaskOutput::Result(ResultOutput::Held { rows: 5_000_000 })),
        };
        // The first partition's rows are held by its executor, which is
        // lost before the job ends: that partition runs again.
        s.on_event(Instant::now(), held(&tasks[0].0, tasks[0].1));
        let lost = tasks[0].0.clone();
        s.on_event(
            Instant::now(),
            Event::ExecutorLost {
                executor: lost.clone(),
                reason: "killed".into(),
            },
        );
        let a = s.on_event(Instant::now(), held(&tasks[1].0, tasks[1].1));
        assert!(
            !a.iter().any(|a| matches!(a, Action::JobSucceeded { .. })),
            "a partition whose rows were lost is not done"
        );
        let again = launches(&a);
        assert_eq!(again.len(), 1, "{a:?}");
        assert_eq!(again[0].1.partition, tasks[0].1.partition);
        assert_ne!(again[0].0, lost);
        let a = s.on_event(Instant::now(), held(&again[0].0, again[0].1));
        let parts: Vec<&ResultPart> = a
            .iter()
            .filter_map(|a| match a {
                Action::JobSucceeded { parts, .. } => Some(parts),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.executor != lost));
        assert_eq!(
            parts.iter().map(|p| p.partition).collect::<Vec<_>>(),
            vec![0, 1],
            "in partition order"
        );
        assert!(
            a.iter()
                .any(|a| matches!(a, Action::RemoveShuffle { stages } if stages.is_empty())),
            "the result stage's blocks stay until the rows are read: {a:?}"
        );
    }

    #[test]
    fn a_reduce_task_is_told_which_executor_holds_each_map_output() {
        let (mut s, actions) = start(1, &[("1", 1), ("2", 1)]);
        let first = launches(&actions);
        assert_eq!(first.len(), 2);
        s.on_event(Instant::now(), map_done(&first[0].0, first[0].1));
        let a = s.on_event(Instant::now(), map_done(&first[1].0, first[1].1));
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
        let next = launches(&s.on_event(Instant::now(), map_done(&first[0].0, first[0].1)));
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
            let retry = launches(&s.on_event(Instant::now(), failed(&e, victim, "boom")));
            assert_eq!(retry.len(), 1, "attempt {attempt} is retried");
            assert_eq!(retry[0].1.partition, victim.partition);
            assert_eq!(retry[0].1.attempt, attempt);
            victim = retry[0].1;
        }
        let a = s.on_event(Instant::now(), failed(&e, victim, "boom"));
        let failed = a
            .iter()
            .find_map(|a| match a {
                Action::JobFailed { job: 7, error } => Some(error.clone()),
                _ => None,
            })
            .expect("the job fails");
        assert_eq!(failed.code(), "task_failed");
        let error = failed.to_string();
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
        let retry = launches(&s.on_event(Instant::now(), failed(&tasks[0].0, tasks[0].1, "flaky")));
        s.on_event(Instant::now(), map_done(&retry[0].0, retry[0].1));
        let a = s.on_event(Instant::now(), map_done(&tasks[1].0, tasks[1].1));
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
        let retry = launches(&s.on_event(Instant::now(), failed(&tasks[0].0, tasks[0].1, "x")));
        // The first attempt reporting success again changes nothing.
        let a = s.on_event(Instant::now(), map_done(&tasks[0].0, tasks[0].1));
        assert!(a.is_empty(), "{a:?}");
        s.on_event(Instant::now(), map_done(&tasks[1].0, tasks[1].1));
        let a = s.on_event(Instant::now(), map_done(&retry[0].0, retry[0].1));
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
        let a = s.on_event(
            Instant::now(),
            Event::ExecutorLost {
                executor: lost_exec,
                reason: "gone".into(),
            },
        );
        assert!(
            !a.iter().any(|a| matches!(a, Action::JobFailed { .. })),
            "max failures is 1, yet no failure counted"
        );
        let other = tasks
            .iter()
            .find(|(e, _)| *e == exec("2"))
            .cloned()
            .unwrap();
        let moved = launches(&s.on_event(Instant::now(), map_done(&other.0, other.1)));
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].0, exec("2"));
        assert_eq!(moved[0].1.partition, lost_task.partition);
    }

    fn job_error(actions: &[Action]) -> Option<String> {
        actions.iter().find_map(|a| match a {
            Action::JobFailed { error, .. } => Some(error.to_string()),
            _ => None,
        })
    }

    #[test]
    fn a_job_without_executors_waits_for_a_replacement_then_fails_after_the_grace_period() {
        let config = SchedulerConfig {
            no_executor_timeout: Duration::from_secs(30),
            ..config(4)
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let (mut s, actions) = start_with(config.clone(), &[("1", 2)]);
        assert_eq!(launches(&actions).len(), 2);
        let lost = |s: &mut Scheduler, when, id: &str| {
            s.on_event(
                when,
                Event::ExecutorLost {
                    executor: exec(id),
                    reason: "exit code 137".into(),
                },
            )
        };
        assert!(job_error(&lost(&mut s, at(0), "1")).is_none());
        assert!(job_error(&s.on_event(at(29), Event::Tick)).is_none());
        // A replacement in time picks the tasks up again.
        let a = s.on_event(
            at(29),
            Event::ExecutorAdded {
                executor: exec("2"),
                slots: 2,
            },
        );
        assert_eq!(launches(&a).len(), 2);
        assert!(
            launches(&a)
                .iter()
                .all(|(e, t)| *e == exec("2") && t.attempt == 1)
        );

        // Lost again, and nothing comes: the job fails, saying why.
        assert!(job_error(&lost(&mut s, at(40), "2")).is_none());
        assert!(job_error(&s.on_event(at(69), Event::Tick)).is_none());
        let error = job_error(&s.on_event(at(71), Event::Tick)).expect("the job fails");
        assert!(error.contains("no executor for 31 s"), "{error}");
        assert!(error.contains("executor 2: exit code 137"), "{error}");
        assert_eq!(s.active_jobs(), 0);
    }

    /// Runs both map tasks of the standard job on executors 1 and 2 (one
    /// each), returning the scheduler and the reduce task's launch.
    fn maps_done_on_two_executors(config: SchedulerConfig) -> (Scheduler, (ExecutorId, TaskId)) {
        let (mut s, actions) = start_with(config, &[("1", 1), ("2", 1)]);
        let maps = launches(&actions);
        assert_eq!(maps.len(), 2);
        s.on_event(Instant::now(), map_done(&maps[0].0, maps[0].1));
        let reduce = launches(&s.on_event(Instant::now(), map_done(&maps[1].0, maps[1].1)));
        assert_eq!(reduce.len(), 1);
        (s, reduce[0].clone())
    }

    fn holder_of_map(s: &Scheduler, stage: StageId, map: usize) -> Option<ExecutorId> {
        s.jobs
            .get(&7)
            .and_then(|j| j.stages.get(&stage))
            .and_then(|st| st.map_outputs.get(&map))
            .map(|(_, e)| e.clone())
    }

    /// Found by simulation seed 104: an executor lost while its stage still
    /// ran took finished map output with it, and the stage never completed.
    #[test]
    fn output_lost_while_its_stage_still_runs_is_computed_again() {
        let (mut s, actions) = start_with(config(4), &[("1", 1), ("2", 1)]);
        let maps = launches(&actions);
        assert_eq!(maps.len(), 2);
        let (done_on, done) = maps[0].clone();
        let (running_on, running) = maps[1].clone();
        s.on_event(Instant::now(), map_done(&done_on, done));
        let a = s.on_event(
            Instant::now(),
            Event::ExecutorLost {
                executor: done_on.clone(),
                reason: "partitioned".into(),
            },
        );
        assert!(launches(&a).is_empty(), "the only slot left is busy");
        let a = s.on_event(Instant::now(), map_done(&running_on, running));
        let rerun = launches(&a);
        assert_eq!(rerun.len(), 1, "{a:?}");
        assert_eq!(
            (rerun[0].1.stage, rerun[0].1.partition),
            (0, done.partition)
        );
        let a = s.on_event(Instant::now(), map_done(&rerun[0].0, rerun[0].1));
        assert!(
            launches(&a).iter().all(|(_, t)| t.stage == 1),
            "then the reducers: {a:?}"
        );
        assert!(!launches(&a).is_empty());
    }

    #[test]
    fn a_lost_executors_map_output_is_computed_again_and_only_that() {
        let (mut s, (reduce_on, reduce)) = maps_done_on_two_executors(config(1));
        let lost = if reduce_on == exec("1") { "2" } else { "1" };
        let kept = if lost == "1" { "2" } else { "1" };
        let lost_map = (0..2)
            .find(|m| holder_of_map(&s, 0, *m) == Some(exec(lost)))
            .unwrap();
        let a = s.on_event(
            Instant::now(),
            Event::ExecutorLost {
                executor: exec(lost),
                reason: "killed".into(),
            },
        );
        // Only the lost map task runs again, on the executor left.
        let rerun = launches(&a);
        assert_eq!(rerun.len(), 0, "the reducer still holds the only slot");
        assert!(job_error(&a).is_none());
        // The reducer, which read the lost output, reports a fetch failure.
        let a = s.on_event(
            Instant::now(),
            Event::TaskEnded {
                executor: reduce_on.clone(),
                task: reduce,
                result: Err(TaskError::fetch_failed(
                    FetchFailure {
                        stage: 0,
                        maps: vec![lost_map],
                        executor: exec(lost),
                    },
                    "connection refused",
                )),
            },
        );
        let rerun = launches(&a);
        assert_eq!(rerun.len(), 1);
        assert_eq!((rerun[0].1.stage, rerun[0].1.partition), (0, lost_map));
        assert_eq!(rerun[0].0, exec(kept));
        let a = s.on_event(Instant::now(), map_done(&rerun[0].0, rerun[0].1));
        let again = launches(&a);
        assert_eq!(again.len(), 1, "then the reducer again");
        let reads = match a.iter().find(|a| matches!(a, Action::LaunchTask { .. })) {
            Some(Action::LaunchTask { task, .. }) => Arc::clone(&task.locations),
            _ => unreachable!(),
        };
        assert_eq!(
            *reads,
            MapLocations::from([(0, vec![Some(exec(kept)), Some(exec(kept))])])
        );
        assert_eq!((again[0].1.stage, again[0].1.attempt), (1, 1));
    }

    #[test]
    fn in_one_process_map_output_outlives_a_lost_executor() {
        let config = SchedulerConfig {
            shuffle_outlives_executors: true,
            ..config(1)
        };
        let (mut s, (reduce_on, _)) = maps_done_on_two_executors(config);
        let other = if reduce_on == exec("1") { "2" } else { "1" };
        let a = s.on_event(
            Instant::now(),
            Event::ExecutorLost {
                executor: exec(other),
                reason: "thread ended".into(),
            },
        );
        assert!(launches(&a).is_empty(), "nothing runs again");
        assert!(holder_of_map(&s, 0, 0).is_some() && holder_of_map(&s, 0, 1).is_some());
    }

    fn fetch_failed(executor: &ExecutorId, task: TaskId, holder: &ExecutorId, map: usize) -> Event {
        Event::TaskEnded {
            executor: executor.clone(),
            task,
            result: Err(TaskError::fetch_failed(
                FetchFailure {
                    stage: 0,
                    maps: vec![map],
                    executor: holder.clone(),
                },
                "shuffle block shuffle_0_1_0 is missing",
            )),
        }
    }

    #[test]
    fn a_fetch_failure_reruns_the_missing_map_task_then_the_reader() {
        // max_failures 1: a fetch failure must not count as a task failure.
        let (mut s, (reduce_on, reduce)) = maps_done_on_two_executors(config(1));
        let holder = holder_of_map(&s, 0, 1).unwrap();
        let a = s.on_event(Instant::now(), fetch_failed(&reduce_on, reduce, &holder, 1));
        assert!(job_error(&a).is_none());
        let rerun = launches(&a);
        assert_eq!(rerun.len(), 1, "only map 1 runs again: {rerun:?}");
        assert_eq!(
            (rerun[0].1.stage, rerun[0].1.partition, rerun[0].1.attempt),
            (0, 1, 1)
        );
        assert!(a.iter().any(|a| matches!(
            a,
            Action::Progress(ProgressEvent::StageSubmitted {
                stage: 0,
                tasks: 1,
                ..
            })
        )));
        let a = s.on_event(Instant::now(), map_done(&rerun[0].0, rerun[0].1));
        let again = launches(&a);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].1.stage, again[0].1.attempt), (1, 1));
    }

    #[test]
    fn a_stage_that_keeps_failing_to_fetch_is_aborted() {
        let config = SchedulerConfig {
            max_stage_attempts: 2,
            ..config(4)
        };
        let (mut s, (mut reduce_on, mut reduce)) = maps_done_on_two_executors(config);
        for round in 1..=2 {
            let holder = holder_of_map(&s, 0, 0).unwrap();
            let a = s.on_event(Instant::now(), fetch_failed(&reduce_on, reduce, &holder, 0));
            if round == 2 {
                let error = job_error(&a).expect("aborted after 2 fetch failures");
                assert!(
                    error.contains("failed to read its input 2 times"),
                    "{error}"
                );
                assert!(error.contains("shuffle_0_1_0 is missing"), "{error}");
                return;
            }
            let rerun = launches(&a);
            let a = s.on_event(Instant::now(), map_done(&rerun[0].0, rerun[0].1));
            (reduce_on, reduce) = launches(&a)[0].clone();
        }
    }

    #[test]
    fn a_failed_task_is_retried_on_another_executor() {
        let (mut s, actions) = start(4, &[("1", 2), ("2", 2)]);
        let tasks = launches(&actions);
        let (first_on, first) = tasks[0].clone();
        let retry = launches(&s.on_event(Instant::now(), failed(&first_on, first, "disk error")));
        assert_eq!(retry.len(), 1);
        assert_ne!(retry[0].0, first_on, "retried elsewhere");
        // Failed on both: any executor will do.
        let other = retry[0].0.clone();
        let again = launches(&s.on_event(Instant::now(), failed(&other, retry[0].1, "disk error")));
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn a_straggler_gets_a_speculative_copy_and_the_first_to_finish_wins() {
        let config = SchedulerConfig {
            speculation: Some(Speculation::default()),
            ..config(1)
        };
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Scheduler::new(config);
        for id in ["1", "2"] {
            s.on_event(
                t0,
                Event::ExecutorAdded {
                    executor: exec(id),
                    slots: 2,
                },
            );
        }
        let maps = launches(&s.on_event(
            t0,
            Event::JobSubmitted {
                job: 7,
                graph: two_stage_graph(),
            },
        ));
        let (fast, slow) = (maps[0].clone(), maps[1].clone());
        s.on_event(at(20), map_done(&fast.0, fast.1));
        // 1.5 x 20 ms is under the 100 ms floor: not slow yet.
        assert!(launches(&s.on_event(at(90), Event::Tick)).is_empty());
        let copy = launches(&s.on_event(at(150), Event::Tick));
        assert_eq!(copy.len(), 1, "one speculative copy");
        assert_eq!(
            (copy[0].1.partition, copy[0].1.attempt),
            (slow.1.partition, 1)
        );
        assert_ne!(copy[0].0, slow.0, "never beside the original");
        assert!(
            launches(&s.on_event(at(300), Event::Tick)).is_empty(),
            "only one copy"
        );

        // The copy wins; the original is killed and its late report ignored.
        let a = s.on_event(at(320), map_done(&copy[0].0, copy[0].1));
        assert!(a.iter().any(
            |a| matches!(a, Action::KillTask { executor, task } if *executor == slow.0 && *task == slow.1)
        ));
        assert_eq!(launches(&a).len(), 1, "the reducer starts");
        let late = s.on_event(
            at(330),
            Event::TaskEnded {
                executor: slow.0.clone(),
                task: slow.1,
                result: Err(TaskError::new(
                    TaskFailureKind::Killed,
                    "killed by the driver",
                )),
            },
        );
        assert!(late.is_empty(), "{late:?}");
        assert_eq!(
            holder_of_map(&s, 0, slow.1.partition),
            Some(copy[0].0.clone())
        );
    }

    #[test]
    fn a_cancelled_job_kills_its_tasks() {
        let (mut s, actions) = start(1, &[("1", 2)]);
        assert_eq!(launches(&actions).len(), 2);
        let a = s.on_event(
            Instant::now(),
            Event::JobCancelled {
                job: 7,
                reason: "user".into(),
            },
        );
        assert_eq!(
            a.iter()
                .filter(|a| matches!(a, Action::KillTask { .. }))
                .count(),
            2
        );
        assert!(
            a.iter()
                .any(|a| matches!(a, Action::JobFailed { job: 7, error: JobError::Cancelled { reason, .. } } if reason == "user"))
        );
    }
}
