//! What a seed decides: the workload (which applications run which jobs,
//! and when) and the fault schedule. Nothing else in a simulation is
//! random, so a seed replays exactly.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::workload::QUERIES;
use crate::world::{FIRST_APP_HOST, FIRST_WORKER_HOST, MANAGER_HOST};

/// The kinds of fault a simulation injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// A host crashes: every actor on it. Worker hosts come back empty.
    Kill,
    /// One executor process is killed.
    KillActor,
    /// The cluster manager's host crashes and comes back on its journal.
    Restart,
    /// As `Restart`, and the journal is damaged while the manager is down:
    /// the manager must refuse it (the operator then restores its backup)
    /// or read it back in full, never start forgetting.
    RestartDamaged,
    /// Hosts are cut off from the others, both ways, then healed.
    Partition,
    /// As `Partition`, one way only.
    OneWay,
    /// Datagrams are lost, duplicated, delayed and reordered for a while.
    Network,
    /// A host stops (no heartbeats, nothing in or out), then resumes.
    Pause,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Kill,
        FaultKind::KillActor,
        FaultKind::Restart,
        FaultKind::RestartDamaged,
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Network,
        FaultKind::Pause,
    ];

    /// What a campaign injects unless told: every kind but a damaged
    /// journal, whose recovery (restoring a backup) is an operator's
    /// choice that forgets what came after the backup. Kept apart so a
    /// seed's schedule stays what it was before that kind existed.
    pub const DEFAULT: [FaultKind; 7] = [
        FaultKind::Kill,
        FaultKind::KillActor,
        FaultKind::Restart,
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Network,
        FaultKind::Pause,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::KillActor => "kill-actor",
            FaultKind::Restart => "restart",
            FaultKind::RestartDamaged => "restart-damaged",
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "one-way",
            FaultKind::Network => "network",
            FaultKind::Pause => "pause",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault '{s}'; choose from {}", names.join(", "))
            })
    }
}

/// One fault: what, when, to whom, for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub at: Duration,
    pub lasts: Duration,
    /// The hosts it strikes (a partition: one side).
    pub hosts: Vec<u8>,
    /// For `OneWay` and `Network`: a number to pick details with.
    pub detail: u64,
}

/// How an application is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeployMode {
    /// Its driver runs in the client (`ember submit`).
    #[default]
    Client,
    /// Submitted with `ember submit --deploy-mode cluster --supervise`: a
    /// worker runs its driver, relaunched if it fails or its worker is
    /// lost; its jobs always write files.
    Cluster,
}

/// One application: its jobs (query indexes) and when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct AppPlan {
    pub starts: Duration,
    pub jobs: Vec<usize>,
    /// How long each task takes (an injected delay: tasks otherwise take
    /// no virtual time at all).
    pub task_time: Duration,
    pub mode: DeployMode,
}

/// Everything a seed decides.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub seed: u64,
    pub workers: u8,
    pub worker_cores: u32,
    pub apps: Vec<AppPlan>,
    pub faults: Vec<Fault>,
    /// Jobs write their rows to files (`COPY ... TO`) through the output
    /// commit protocol instead of collecting them.
    pub file_output: bool,
    /// Client-mode applications also run a streaming query
    /// ([`crate::streaming`]) after their jobs.
    pub streaming: bool,
}

/// What a campaign varies over.
#[derive(Debug, Clone)]
pub struct Shape {
    pub workers: u8,
    pub jobs: usize,
    pub kinds: Vec<FaultKind>,
    pub max_faults: usize,
    /// Jobs write files instead of collecting rows.
    pub file_output: bool,
    /// Some applications are cluster-mode supervised submissions.
    pub cluster_mode: bool,
    /// Client-mode applications run a streaming query too.
    pub streaming: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            workers: 3,
            jobs: 4,
            kinds: FaultKind::DEFAULT.to_vec(),
            max_faults: 4,
            file_output: false,
            cluster_mode: true,
            streaming: false,
        }
    }
}

/// The stream that picks cluster-mode applications: apart from the one
/// that draws the workload and the faults, so a seed keeps both.
const DEPLOY_MODE_STREAM: u64 = 0xc105_7e2d;

/// The chance that an application is a cluster-mode submission.
const CLUSTER_MODE_SHARE: f64 = 1.0 / 3.0;

fn ms(rng: &mut ChaCha8Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..hi))
}

impl Scenario {
    pub fn generate(seed: u64, shape: &Shape) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let app_count = shape.jobs.clamp(1, 3);
        let mut apps: Vec<AppPlan> = (0..app_count)
            .map(|_| AppPlan {
                starts: ms(&mut rng, 0, 3000),
                jobs: Vec::new(),
                task_time: ms(&mut rng, 100, 1200),
                mode: DeployMode::Client,
            })
            .collect();
        for j in 0..shape.jobs {
            let query = rng.random_range(0..QUERIES.len());
            apps[j % app_count].jobs.push(query);
        }
        let workers: Vec<u8> = (0..shape.workers).map(|w| FIRST_WORKER_HOST + w).collect();
        let clients: Vec<u8> = (0..app_count).map(|a| FIRST_APP_HOST + a as u8).collect();
        let mut everyone = vec![MANAGER_HOST];
        everyone.extend(&workers);
        everyone.extend(&clients);
        let mut faults = Vec::new();
        if !shape.kinds.is_empty() && shape.max_faults > 0 {
            let count = rng.random_range(1..=shape.max_faults);
            for _ in 0..count {
                let kind = shape.kinds[rng.random_range(0..shape.kinds.len())];
                let at = ms(&mut rng, 200, 6000);
                let lasts = ms(&mut rng, 300, 4000);
                let hosts = match kind {
                    FaultKind::Kill => {
                        // Mostly workers; sometimes an application's host.
                        let pool = if rng.random_bool(0.7) {
                            &workers
                        } else {
                            &clients
                        };
                        vec![pool[rng.random_range(0..pool.len())]]
                    }
                    FaultKind::Restart | FaultKind::RestartDamaged => vec![MANAGER_HOST],
                    FaultKind::Partition | FaultKind::OneWay => {
                        let side: Vec<u8> = everyone
                            .iter()
                            .copied()
                            .filter(|_| rng.random_bool(0.4))
                            .collect();
                        if side.is_empty() || side.len() == everyone.len() {
                            vec![everyone[rng.random_range(0..everyone.len())]]
                        } else {
                            side
                        }
                    }
                    FaultKind::Pause => vec![everyone[rng.random_range(0..everyone.len())]],
                    FaultKind::KillActor | FaultKind::Network => Vec::new(),
                };
                faults.push(Fault {
                    kind,
                    at,
                    lasts,
                    hosts,
                    detail: rng.random(),
                });
            }
            faults.sort_by_key(|f| f.at);
        }
        if shape.cluster_mode {
            let mut modes = ChaCha8Rng::seed_from_u64(seed ^ DEPLOY_MODE_STREAM);
            for app in &mut apps {
                if modes.random_bool(CLUSTER_MODE_SHARE) {
                    app.mode = DeployMode::Cluster;
                }
            }
        }
        Self {
            seed,
            workers: shape.workers,
            worker_cores: 2,
            apps,
            faults,
            file_output: shape.file_output,
            streaming: shape.streaming,
        }
    }

    /// When the last fault is over.
    pub fn faults_end(&self) -> Duration {
        self.faults
            .iter()
            .map(|f| f.at + f.lasts)
            .max()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_fixes_the_scenario() {
        let shape = Shape::default();
        assert_eq!(Scenario::generate(5, &shape), Scenario::generate(5, &shape));
        assert_ne!(Scenario::generate(5, &shape), Scenario::generate(6, &shape));
        let only = Shape {
            kinds: vec![FaultKind::Pause],
            ..Shape::default()
        };
        for seed in 0..50 {
            let s = Scenario::generate(seed, &only);
            assert!(!s.faults.is_empty());
            assert!(s.faults.iter().all(|f| f.kind == FaultKind::Pause));
            assert_eq!(s.apps.iter().map(|a| a.jobs.len()).sum::<usize>(), 4);
        }
        // Cluster-mode applications come from a stream of their own: a
        // seed's workload and faults are what they are without them.
        let client_only = Shape {
            cluster_mode: false,
            ..Shape::default()
        };
        let mut clustered = 0;
        for seed in 0..60 {
            let with = Scenario::generate(seed, &shape);
            let without = Scenario::generate(seed, &client_only);
            assert_eq!(with.faults, without.faults);
            for (a, b) in with.apps.iter().zip(&without.apps) {
                assert_eq!(
                    (a.starts, &a.jobs, a.task_time),
                    (b.starts, &b.jobs, b.task_time)
                );
                assert_eq!(b.mode, DeployMode::Client);
            }
            clustered += with
                .apps
                .iter()
                .filter(|a| a.mode == DeployMode::Cluster)
                .count();
        }
        assert!((30..=90).contains(&clustered), "{clustered} of 180");
        assert_eq!("one-way".parse::<FaultKind>(), Ok(FaultKind::OneWay));
        assert!(
            "flood"
                .parse::<FaultKind>()
                .unwrap_err()
                .contains("partition")
        );
    }
}
