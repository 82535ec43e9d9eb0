//! Why a job failed, and whether Ember's guarantees allow it: a failed job
//! is read from its error and from the seed's fault schedule, so a report
//! tells a failure the faults explain from a broken promise.

use std::fmt;

use crate::scenario::{FaultKind, Scenario};
use crate::world::{FIRST_APP_HOST, MANAGER_HOST};

/// What made a job fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// The client's own host crashed: its driver went with it.
    ClientHostKilled,
    /// The client could not reach the manager to register its application.
    ManagerUnreachableAtRegistration,
    /// The manager ended the application while its driver was away, and
    /// refused it when it came back.
    EndedWhileAway,
    /// The operator restored the journal's backup after the manager
    /// refused a damaged journal; the application came after the backup.
    ForgottenByRestore,
    /// The driver was cut off from the manager and every executor past
    /// `ember.app.clusterLostTimeout`.
    ClientCutOff,
    /// The manager ended the application (its executors kept exiting, say).
    EndedByManager,
    /// No executor was left, and none came back in time.
    ExecutorsLost,
    /// A task failed `ember.task.maxFailures` times.
    TaskFailed,
    /// A stage could not read its input too many times in a row.
    FetchFailed,
    /// A supervised cluster-mode submission ended without committing the
    /// job: its driver attempts ran out of restarts, or it was killed.
    SubmissionGaveUp,
    /// The driver stopped though its host lives.
    DriverStopped,
    /// An error no class above covers.
    Unclassified,
}

impl Cause {
    pub const ALL: [Cause; 12] = [
        Cause::ClientHostKilled,
        Cause::ManagerUnreachableAtRegistration,
        Cause::EndedWhileAway,
        Cause::ForgottenByRestore,
        Cause::ClientCutOff,
        Cause::EndedByManager,
        Cause::ExecutorsLost,
        Cause::TaskFailed,
        Cause::FetchFailed,
        Cause::SubmissionGaveUp,
        Cause::DriverStopped,
        Cause::Unclassified,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Cause::ClientHostKilled => "client host killed",
            Cause::ManagerUnreachableAtRegistration => "manager unreachable at registration",
            Cause::EndedWhileAway => "application ended while its driver was cut off",
            Cause::ForgottenByRestore => "application newer than the restored journal backup",
            Cause::ClientCutOff => "client cut off from the cluster past the bound",
            Cause::EndedByManager => "application ended by the manager",
            Cause::ExecutorsLost => "executors lost, none back in time",
            Cause::TaskFailed => "a task failed ember.task.maxFailures times",
            Cause::FetchFailed => "a stage failed to read its input too often",
            Cause::SubmissionGaveUp => "supervised submission gave up",
            Cause::DriverStopped => "driver stopped on a live host",
            Cause::Unclassified => "unclassified",
        }
    }

    /// Reads a failed job's cause from its error; `crashed` says whether
    /// the client's host crashed.
    pub fn of(error: &str, crashed: bool) -> Cause {
        let has = |needle: &str| error.contains(needle);
        // A supervised submission that gave up is judged as a whole, not
        // by what its last attempt met.
        if has("supervised submission gave up") {
            return Cause::SubmissionGaveUp;
        }
        // Errors the driver reached on its own come first: a job may have
        // failed so before its host crashed.
        if has("no executor for") {
            Cause::ExecutorsLost
        } else if has("failed to read its input") {
            Cause::FetchFailed
        } else if has("aborted: task") {
            Cause::TaskFailed
        } else if crashed {
            Cause::ClientHostKilled
        } else if has("unknown to this cluster manager") || has("belongs to another driver") {
            Cause::ForgottenByRestore
        } else if has("did not start") {
            if has("did not accept the application") {
                Cause::EndedWhileAway
            } else {
                Cause::ManagerUnreachableAtRegistration
            }
        } else if has("no longer runs this application") || has("ended while its driver was away") {
            Cause::EndedWhileAway
        } else if has("cut off from the cluster manager") {
            Cause::ClientCutOff
        } else if has("the cluster manager ended the application") {
            Cause::EndedByManager
        } else if has("the driver stopped") || has("the driver is gone") {
            Cause::DriverStopped
        } else {
            Cause::Unclassified
        }
    }

    /// The kinds of fault in `scenario` that explain this cause for the
    /// application on `host`: none means the guarantees do not allow it.
    /// A restart of the manager explains nothing: applications arriving
    /// while it is down or recovering wait, within bounds, and then run.
    pub fn explained_by(self, scenario: &Scenario, host: u8) -> Vec<FaultKind> {
        let mut kinds: Vec<FaultKind> = scenario
            .faults
            .iter()
            .filter(|f| match self {
                Cause::ClientHostKilled => f.kind == FaultKind::Kill && f.hosts.contains(&host),
                Cause::ForgottenByRestore => f.kind == FaultKind::RestartDamaged,
                Cause::ManagerUnreachableAtRegistration
                | Cause::EndedWhileAway
                | Cause::ClientCutOff => match f.kind {
                    // The client and the manager on different sides.
                    FaultKind::Partition | FaultKind::OneWay => {
                        f.hosts.contains(&host) != f.hosts.contains(&MANAGER_HOST)
                    }
                    FaultKind::Pause => f.hosts.contains(&host) || f.hosts.contains(&MANAGER_HOST),
                    FaultKind::Network => true,
                    _ => false,
                },
                Cause::EndedByManager
                | Cause::ExecutorsLost
                | Cause::TaskFailed
                | Cause::FetchFailed => !matches!(f.kind, FaultKind::Restart),
                // Restarts with backoff outlast what a seed's few faults
                // do to its driver attempts.
                Cause::SubmissionGaveUp | Cause::DriverStopped | Cause::Unclassified => false,
            })
            .map(|f| f.kind)
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// One failed job, classified.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFailure {
    pub app: usize,
    pub job: usize,
    pub cause: Cause,
    /// The faults of the seed that explain it; empty: not allowed.
    pub explained_by: Vec<FaultKind>,
    pub error: String,
}

impl JobFailure {
    pub fn classify(
        scenario: &Scenario,
        app: usize,
        job: usize,
        error: &str,
        crashed: bool,
    ) -> Self {
        let cause = Cause::of(error, crashed);
        let host = FIRST_APP_HOST + app as u8;
        Self {
            app,
            job,
            cause,
            explained_by: cause.explained_by(scenario, host),
            error: error.to_string(),
        }
    }

    pub fn allowed(&self) -> bool {
        !self.explained_by.is_empty()
    }

    /// The violation a failure no fault explains is.
    pub fn violation(&self, scenario: &Scenario) -> String {
        let mut kinds: Vec<&str> = scenario.faults.iter().map(|f| f.kind.name()).collect();
        kinds.sort();
        kinds.dedup();
        format!(
            "unexplained failure: app {} job {} failed ({}) with only {} faults: {}",
            self.app,
            self.job,
            self.cause,
            kinds.join(","),
            self.error
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scenario::Fault;

    fn scenario(faults: Vec<(FaultKind, Vec<u8>)>) -> Scenario {
        Scenario {
            seed: 0,
            workers: 3,
            worker_cores: 2,
            apps: Vec::new(),
            file_output: false,
            streaming: false,
            faults: faults
                .into_iter()
                .map(|(kind, hosts)| Fault {
                    kind,
                    at: Duration::ZERO,
                    lasts: Duration::from_secs(1),
                    hosts,
                    detail: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn a_restart_alone_explains_no_failure() {
        let restart = scenario(vec![(FaultKind::Restart, vec![MANAGER_HOST])]);
        let unreachable = "the application did not start: cannot reach the cluster manager at \
                           10.0.0.1:7077: no answer within 10s";
        let failure = JobFailure::classify(&restart, 0, 0, unreachable, false);
        assert_eq!(failure.cause, Cause::ManagerUnreachableAtRegistration);
        assert!(!failure.allowed());
        assert!(
            failure
                .violation(&restart)
                .contains("with only restart faults")
        );
        // Cut off from the manager by a partition, it is allowed.
        let cut = scenario(vec![(FaultKind::Partition, vec![FIRST_APP_HOST])]);
        assert!(JobFailure::classify(&cut, 0, 0, unreachable, false).allowed());
        // A partition that leaves the client with the manager explains nothing.
        let together = scenario(vec![(
            FaultKind::Partition,
            vec![FIRST_APP_HOST, MANAGER_HOST],
        )]);
        assert!(!JobFailure::classify(&together, 0, 0, unreachable, false).allowed());
    }

    #[test]
    fn a_killed_client_host_explains_its_own_jobs_only() {
        let kill = scenario(vec![(FaultKind::Kill, vec![FIRST_APP_HOST + 1])]);
        let mine = JobFailure::classify(&kill, 1, 0, "its driver's host crashed", true);
        assert_eq!(mine.cause, Cause::ClientHostKilled);
        assert_eq!(mine.explained_by, vec![FaultKind::Kill]);
        let other = JobFailure::classify(&kill, 0, 0, "Job 1 aborted: the driver stopped", false);
        assert_eq!(other.cause, Cause::DriverStopped);
        assert!(!other.allowed());
        let lost = "Job 3 aborted: no executor for 20 s (ember.scheduler.noExecutorTimeout); \
                    the last lost: executor 2: killed";
        assert_eq!(Cause::of(lost, false), Cause::ExecutorsLost);
        assert!(JobFailure::classify(&kill, 0, 0, lost, false).allowed());
    }

    #[test]
    fn a_supervised_submission_is_judged_as_a_whole() {
        let faults = scenario(vec![
            (FaultKind::Kill, vec![FIRST_APP_HOST]),
            (FaultKind::Partition, vec![FIRST_APP_HOST]),
        ]);
        // Whatever its last attempt met, a submission that gave up is not
        // explained by a seed's few faults.
        let gave_up = "supervised submission gave up: it ended FAILED (exited with code 1) \
                       after 6 driver attempts; the last failed at job 0: Job 0 aborted: \
                       no executor for 20 s";
        let failure = JobFailure::classify(&faults, 0, 0, gave_up, false);
        assert_eq!(failure.cause, Cause::SubmissionGaveUp);
        assert!(!failure.allowed());
        // Never accepted, it is judged as an application that did not start.
        let unsent = "the submission did not start: cannot reach the cluster manager at \
                      10.0.0.1:7077: no answer within 30s";
        let failure = JobFailure::classify(&faults, 0, 0, unsent, false);
        assert_eq!(failure.cause, Cause::ManagerUnreachableAtRegistration);
        assert_eq!(failure.explained_by, vec![FaultKind::Partition]);
    }
}
