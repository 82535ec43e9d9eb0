//! Many seeds, in parallel, and the report: seeds run, virtual time
//! covered, faults by type, jobs, and every violation with the command that
//! replays its seed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::failures::Cause;
use crate::run::{Bugs, SeedReport, run_seed};
use crate::scenario::{FaultKind, Scenario, Shape};
use crate::workload::Answers;
use crate::world::Certs;

/// Which seeds to run, and how.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub first_seed: u64,
    pub seeds: u64,
    pub shape: Shape,
    pub bugs: Bugs,
    /// Seeds run at once (one thread each).
    pub threads: usize,
}

/// What a campaign found.
#[derive(Debug, Clone, Default)]
pub struct CampaignReport {
    pub seeds: u64,
    pub virtual_time: Duration,
    pub wall_time: Duration,
    pub faults: BTreeMap<FaultKind, usize>,
    /// Damaged journals the manager refused, and read back in full.
    pub journals_refused: usize,
    pub journals_read_whole: usize,
    pub jobs_succeeded: usize,
    pub jobs_failed: usize,
    /// Streaming queries that finished, and those given up on.
    pub streams_finished: usize,
    pub streams_given_up: usize,
    /// Cluster-mode submissions accepted, and the driver attempts they ran.
    pub submissions: usize,
    pub driver_attempts: usize,
    /// Failed jobs of cluster-mode applications.
    pub cluster_jobs_failed: usize,
    /// Failed jobs by cause.
    pub failures: BTreeMap<Cause, CauseTally>,
    /// (seed, violation), by seed.
    pub violations: Vec<(u64, String)>,
    /// How to replay a seed: the command without `--seed`.
    pub replay: String,
    /// Whether jobs wrote files (and their output was checked).
    pub file_output: bool,
    /// Whether applications ran streaming queries (and their checkpoints
    /// and sinks were checked).
    pub streaming: bool,
}

/// The failed jobs of one cause: by the kinds of fault that explain them
/// (`allowed`), or, when none does, by the kinds of fault their seed had.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CauseTally {
    pub allowed: BTreeMap<String, usize>,
    pub not_allowed: BTreeMap<String, usize>,
}

impl CauseTally {
    pub fn total(&self) -> usize {
        self.allowed.values().sum::<usize>() + self.not_allowed.values().sum::<usize>()
    }

    pub fn not_allowed_total(&self) -> usize {
        self.not_allowed.values().sum()
    }
}

fn kinds_label(kinds: impl IntoIterator<Item = FaultKind>) -> String {
    let mut names: Vec<&str> = kinds.into_iter().map(FaultKind::name).collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        "no faults".to_string()
    } else {
        names.join("+")
    }
}

impl CampaignReport {
    /// Failed jobs the guarantees do not allow.
    pub fn unexplained_failures(&self) -> usize {
        self.failures
            .values()
            .map(CauseTally::not_allowed_total)
            .sum()
    }

    pub fn failing_seeds(&self) -> Vec<u64> {
        let mut seeds: Vec<u64> = self.violations.iter().map(|(s, _)| *s).collect();
        seeds.dedup();
        seeds
    }
}

impl Campaign {
    /// The `ember simulate` arguments that give this campaign's shape.
    pub fn replay_command(&self, seed: u64) -> String {
        let mut command = format!("ember simulate --seed {seed}");
        if self.shape.jobs != Shape::default().jobs {
            command.push_str(&format!(" --jobs {}", self.shape.jobs));
        }
        if self.shape.kinds != Shape::default().kinds {
            let kinds: Vec<_> = self.shape.kinds.iter().map(|k| k.name()).collect();
            command.push_str(&format!(" --faults {}", kinds.join(",")));
        }
        if self.shape.file_output {
            command.push_str(" --file-output");
        }
        if self.shape.streaming {
            command.push_str(" --streaming");
        }
        if self.bugs.orphan_executors {
            command.push_str(" --bug orphan-executors");
        }
        if self.bugs.commit_every_attempt {
            command.push_str(" --bug commit-every-attempt");
        }
        if self.bugs.impatient_clients {
            command.push_str(" --bug impatient-clients");
        }
        if self.bugs.forget_damaged_journal {
            command.push_str(" --bug forget-damaged-journal");
        }
        if self.bugs.no_driver_lease {
            command.push_str(" --bug no-driver-lease");
        }
        if self.bugs.claim_per_attempt {
            command.push_str(" --bug claim-per-attempt");
        }
        if !self.shape.cluster_mode {
            command.push_str(" --client-mode-only");
        }
        command
    }

    /// What every seed shares: the cluster's certificates and the right
    /// answers.
    fn prepare(&self) -> Result<(Certs, Answers), String> {
        let certs = Certs::new(self.shape.workers)?;
        let reference = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(crate::workload::reference())?;
        Ok((certs, reference))
    }

    /// Runs every seed; `progress` hears of each one as it ends.
    pub fn run(&self, progress: &(dyn Fn(&SeedReport) + Sync)) -> Result<CampaignReport, String> {
        let started = Instant::now();
        let (certs, reference) = self.prepare()?;
        let next = AtomicU64::new(self.first_seed);
        let end = self.first_seed.saturating_add(self.seeds);
        let reports = Mutex::new(Vec::new());
        let threads = self.threads.max(1).min(self.seeds.max(1) as usize);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let seed = next.fetch_add(1, Ordering::Relaxed);
                        if seed >= end {
                            break;
                        }
                        let scenario = Scenario::generate(seed, &self.shape);
                        let report = run_seed(&scenario, &certs, &reference, self.bugs);
                        progress(&report);
                        reports
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(report);
                    }
                });
            }
        });
        let mut reports = reports.into_inner().unwrap_or_else(|p| p.into_inner());
        reports.sort_by_key(|r| r.seed);
        let mut total = CampaignReport {
            seeds: reports.len() as u64,
            wall_time: started.elapsed(),
            replay: self.replay_command(0).replace(" --seed 0", " --seed SEED"),
            file_output: self.shape.file_output,
            streaming: self.shape.streaming,
            ..CampaignReport::default()
        };
        for report in reports {
            total.virtual_time += report.virtual_time;
            for (kind, n) in &report.faults {
                *total.faults.entry(*kind).or_default() += n;
            }
            total.journals_refused += report.journals_refused;
            total.journals_read_whole += report.journals_read_whole;
            total.jobs_succeeded += report.jobs_succeeded;
            total.jobs_failed += report.jobs_failed;
            total.streams_finished += report.streams_finished;
            total.streams_given_up += report.streams_given_up;
            total.submissions += report.submissions;
            total.driver_attempts += report.driver_attempts;
            total.cluster_jobs_failed += report.cluster_jobs_failed;
            for failure in &report.failures {
                let tally = total.failures.entry(failure.cause).or_default();
                if failure.allowed() {
                    let label = kinds_label(failure.explained_by.iter().copied());
                    *tally.allowed.entry(label).or_default() += 1;
                } else {
                    let label = kinds_label(report.faults.keys().copied());
                    *tally.not_allowed.entry(label).or_default() += 1;
                }
            }
            for v in report.violations {
                total.violations.push((report.seed, v));
            }
        }
        Ok(total)
    }

    /// Runs one seed alone, keeping its trace.
    pub fn replay(&self, seed: u64) -> Result<SeedReport, String> {
        self.run_scenario(&Scenario::generate(seed, &self.shape))
    }

    /// Runs one scenario alone, keeping its trace: a seed's, or one made
    /// by hand to pin a fault where no seed puts it.
    pub fn run_scenario(&self, scenario: &Scenario) -> Result<SeedReport, String> {
        let (certs, reference) = self.prepare()?;
        Ok(run_seed(scenario, &certs, &reference, self.bugs))
    }
}

impl fmt::Display for CampaignReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation report")?;
        writeln!(f, "  seeds run:            {}", self.seeds)?;
        writeln!(
            f,
            "  virtual time covered: {:.1} s ({:.1} s of wall time)",
            self.virtual_time.as_secs_f64(),
            self.wall_time.as_secs_f64()
        )?;
        let faults: usize = self.faults.values().sum();
        writeln!(f, "  faults injected:      {faults}")?;
        for (kind, n) in &self.faults {
            writeln!(f, "    {:<16} {n}", kind.name())?;
        }
        if self.journals_refused + self.journals_read_whole > 0 {
            writeln!(
                f,
                "  damaged journals:     {} refused by the manager, {} read back in full",
                self.journals_refused, self.journals_read_whole
            )?;
        }
        writeln!(
            f,
            "  jobs:                 {} succeeded with the right rows, {} failed with a reason",
            self.jobs_succeeded, self.jobs_failed
        )?;
        if self.streaming {
            writeln!(
                f,
                "  streaming queries:    {} ran to the end of their input, {} given up after faults",
                self.streams_finished, self.streams_given_up
            )?;
        }
        if self.submissions > 0 {
            writeln!(
                f,
                "  cluster mode:         {} submissions with --supervise, {} driver attempts, {} of their jobs failed",
                self.submissions, self.driver_attempts, self.cluster_jobs_failed
            )?;
        }
        if !self.failures.is_empty() {
            writeln!(
                f,
                "  failed jobs by cause (allowed: a fault of the seed explains it; \
                 NOT ALLOWED: none does, a violation):"
            )?;
            for (cause, tally) in &self.failures {
                let mut parts: Vec<String> = Vec::new();
                if !tally.allowed.is_empty() {
                    let kinds: Vec<String> = tally
                        .allowed
                        .iter()
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect();
                    parts.push(format!("allowed: {}", kinds.join(", ")));
                }
                if !tally.not_allowed.is_empty() {
                    let kinds: Vec<String> = tally
                        .not_allowed
                        .iter()
                        .map(|(k, n)| format!("{k} {n}"))
                        .collect();
                    parts.push(format!("NOT ALLOWED: {}", kinds.join(", ")));
                }
                writeln!(
                    f,
                    "    {:<48} {:>4}  {}",
                    cause.describe(),
                    tally.total(),
                    parts.join("; ")
                )?;
            }
        }
        let mut checked = vec![
            "no orphan executors",
            "jobs right or failed with a reason",
            "rows exactly once",
            "no job pending after faults stop",
            "no failure the faults do not explain",
            "no submission forgotten",
        ];
        if self.faults.contains_key(&FaultKind::RestartDamaged) {
            checked.push("a damaged journal refused or read back in full");
        }
        if self.file_output {
            checked.push("file output exactly once, none from failed jobs");
        }
        if self.streaming {
            checked.push(
                "streaming: offsets never go back, no committed batch redone differently, \
                 sink rows exactly once across restarts, aggregation state exactly once",
            );
        }
        if self.submissions > 0 {
            checked.push("never two driver attempts of a submission at once");
            checked.push("each submission's output committed exactly once");
        }
        checked.push("no worker over capacity");
        writeln!(f, "  invariants checked:   {}", checked.join(", "))?;
        if self.violations.is_empty() {
            writeln!(f, "  violations:           none")?;
        } else {
            writeln!(
                f,
                "  violations:           {} in {} seeds",
                self.violations.len(),
                self.failing_seeds().len()
            )?;
            for (seed, v) in &self.violations {
                writeln!(f, "    seed {seed}: {v}")?;
                writeln!(
                    f,
                    "      replay: {}",
                    self.replay.replace("SEED", &seed.to_string())
                )?;
            }
        }
        Ok(())
    }
}
