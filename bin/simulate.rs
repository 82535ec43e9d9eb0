//! `ember simulate`: seeded fault-injection simulations of a whole
//! cluster in one process, with the report of what the invariant checkers
//! found.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Args;
use ember_simulations::{Bugs, Campaign, FaultKind, Shape};

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// How many seeds to run (from --first-seed up).
    #[arg(long, default_value_t = 1000)]
    pub seeds: u64,
    /// The first seed of the range.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Replay one seed and print its trace.
    #[arg(long, conflicts_with_all = ["seeds", "first_seed"])]
    pub seed: Option<u64>,
    /// The faults to inject, separated by commas: kill, kill-actor,
    /// restart, partition, one-way, network, pause (by default all of
    /// these), and restart-damaged (the journal damaged at a restart).
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    pub faults: Option<Vec<FaultKind>>,
    /// Jobs per seed (spread over up to three applications).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=12))]
    pub jobs: u64,
    /// Seeds run at once; the number of cores by default.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run with a deliberate bug, to see the checkers catch it:
    /// orphan-executors (executors ignore their driver's loss),
    /// forget-damaged-journal (the manager starts empty on a damaged
    /// journal; use with --faults restart-damaged), commit-every-attempt
    /// (file output commits every staged attempt; use with --file-output),
    /// impatient-clients (a client tries the manager once, then gives up),
    /// no-driver-lease (the manager relaunches a supervised driver as soon
    /// as it loses the driver's worker), claim-per-attempt (each attempt of
    /// a cluster-mode driver claims its output under its own name).
    #[arg(
        long,
        value_parser = [
            "orphan-executors",
            "forget-damaged-journal",
            "commit-every-attempt",
            "impatient-clients",
            "no-driver-lease",
            "claim-per-attempt"
        ]
    )]
    pub bug: Option<String>,
    /// Jobs write their rows to files (COPY ... TO) through the output
    /// commit protocol, and the files are checked to hold them exactly once.
    #[arg(long)]
    pub file_output: bool,
    /// Client-mode applications also run a streaming query (files arriving
    /// → CSV files, with a checkpoint), started again after a failure, and
    /// its offsets, commits and output are checked.
    #[arg(long)]
    pub streaming: bool,
    /// Run every application in client mode: none is submitted in cluster
    /// mode with --supervise.
    #[arg(long)]
    pub client_mode_only: bool,
}

fn parse_kind(s: &str) -> Result<FaultKind, String> {
    s.trim().parse()
}

impl SimulateArgs {
    fn campaign(&self) -> Campaign {
        let shape = Shape {
            jobs: self.jobs as usize,
            kinds: self
                .faults
                .clone()
                .unwrap_or_else(|| FaultKind::DEFAULT.to_vec()),
            file_output: self.file_output,
            streaming: self.streaming,
            cluster_mode: !self.client_mode_only,
            ..Shape::default()
        };
        Campaign {
            first_seed: self.first_seed,
            seeds: self.seeds,
            shape,
            bugs: Bugs {
                orphan_executors: self.bug.as_deref() == Some("orphan-executors"),
                forget_damaged_journal: self.bug.as_deref() == Some("forget-damaged-journal"),
                commit_every_attempt: self.bug.as_deref() == Some("commit-every-attempt"),
                impatient_clients: self.bug.as_deref() == Some("impatient-clients"),
                no_driver_lease: self.bug.as_deref() == Some("no-driver-lease"),
                claim_per_attempt: self.bug.as_deref() == Some("claim-per-attempt"),
            },
            threads: self.threads.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            }),
        }
    }
}

pub fn run(args: SimulateArgs) -> ExitCode {
    let campaign = args.campaign();
    if let Some(seed) = args.seed {
        return match campaign.replay(seed) {
            Ok(report) => {
                for line in &report.trace {
                    outln!("{line}");
                }
                outln!(
                    "seed {seed}: {} jobs succeeded, {} failed, {:.1} s of virtual time, trace hash {:016x}",
                    report.jobs_succeeded,
                    report.jobs_failed,
                    report.virtual_time.as_secs_f64(),
                    report.trace_hash
                );
                for (a, driver) in report.drivers.iter().enumerate() {
                    let app = driver.app.map_or("?".to_string(), |i| i.to_string());
                    let ended = driver.ended.map_or("still runs".to_string(), |t| {
                        format!("ended at {} ms", t.as_millis())
                    });
                    outln!(
                        "driver attempt {a} of app {app} on host {}: started at {} ms, {ended}: {}",
                        driver.host,
                        driver.started.as_millis(),
                        driver.why.as_deref().unwrap_or("running")
                    );
                }
                for failure in &report.failures {
                    let verdict = if failure.allowed() {
                        let kinds: Vec<_> = failure.explained_by.iter().map(|k| k.name()).collect();
                        format!("allowed by {}", kinds.join(", "))
                    } else {
                        "NOT ALLOWED".to_string()
                    };
                    outln!(
                        "app {} job {} failed: {} ({verdict}): {}",
                        failure.app,
                        failure.job,
                        failure.cause,
                        failure.error
                    );
                }
                if report.violations.is_empty() {
                    outln!("no violations");
                    ExitCode::SUCCESS
                } else {
                    for v in &report.violations {
                        outln!("violation: {v}");
                    }
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                errln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let done = AtomicU64::new(0);
    let failing = AtomicU64::new(0);
    let terminal = std::io::stderr().is_terminal();
    let total = campaign.seeds;
    let progress = |report: &ember_simulations::SeedReport| {
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        if !report.violations.is_empty() {
            failing.fetch_add(1, Ordering::Relaxed);
        }
        if terminal {
            eprint!(
                "\r[simulate] {n}/{total} seeds, {} with violations ",
                failing.load(Ordering::Relaxed)
            );
        }
    };
    match campaign.run(&progress) {
        Ok(report) => {
            if terminal {
                errln!();
            }
            print!("{report}");
            if report.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
