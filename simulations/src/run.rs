//! Runs one seed: builds the cluster, starts the applications, injects the
//! scenario's faults at their times, and checks the invariants while it
//! runs and once faults have stopped and everything has settled.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use ember_actors::EmberConf;
use ember_actors::cluster_app::reach_manager;
use ember_actors::cluster_manager::DriverJob;
use ember_actors::cluster_manager::journal::{BACKUP_FILE, JOURNAL_FILE};
use ember_actors::cluster_manager::state::DRIVER_LEASE;
use ember_actors::cluster_manager::{
    AppRequest, ClientReply, ClusterManager, FromClient, Journal, JournalError,
};
use ember_actors::config::{
    COALESCE_PARTITIONS, FAULT_DELAY_TASK, FAULT_IGNORE_DRIVER_LOSS, NO_EXECUTOR_TIMEOUT,
    SHUFFLE_PARTITIONS,
};
use ember_actors::driver::{Driver, StopDriver};
use ember_actors::remote::NodeContact;
use ember_client::ClusterClient;
use ember_engine::Functions;
use ember_session::{ClusterSettings, Master, Session, SessionOptions, StatementOutcome};
use ember_transport::sim::{LinkFaults, SimNet};
use ember_transport::{Node, NodeOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cluster_driver::{self, DriverBugs, app_name, submission_script};
use crate::failures::{Cause, JobFailure};
pub use crate::jobs::JobOutcome;
use crate::jobs::{ClaimMarker, committed_rows, file_destination, output_claims};
use crate::scenario::{AppPlan, DeployMode, FaultKind, Scenario};
use crate::submission::{self, SubmissionEnd};
use crate::workload::{Answers, PARTITIONS, QUERIES, lines};
use crate::world::{
    Certs, DriverLife, FIRST_APP_HOST, FIRST_WORKER_HOST, JournalDamage, MANAGER_HOST,
    MANAGER_PORT, ManagerHost, ManagerStartError, SeedDir, Shared, WorkerHost, ip, start_manager,
    start_node, start_worker,
};

/// How long an executor may outlive its driver: the heartbeat timeout
/// (800 ms) and QUIC's idle timeout (1 s) with room to spare.
pub const LIVENESS: Duration = Duration::from_secs(3);
/// How long after the last fault every job must have ended.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(90);
/// How long a client may take to start its application: reaching the
/// manager and registering, each waiting out a manager that is away.
const START_LIMIT: Duration = Duration::from_secs(70);
/// How often the invariants are checked while a simulation runs.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// What one seed found.
#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    pub seed: u64,
    pub trace_hash: u64,
    pub virtual_time: Duration,
    pub faults: BTreeMap<FaultKind, usize>,
    /// Damaged journals the manager refused (then started on the backup).
    pub journals_refused: usize,
    /// Damaged journals the manager read back in full (the damage missed
    /// everything it holds).
    pub journals_read_whole: usize,
    pub jobs_succeeded: usize,
    pub jobs_failed: usize,
    /// Streaming queries that ran to the end of their input, and those
    /// their application gave up on (after its faults, within its starts).
    pub streams_finished: usize,
    pub streams_given_up: usize,
    /// Cluster-mode submissions the manager accepted, and the driver
    /// attempts workers started for them.
    pub submissions: usize,
    pub driver_attempts: usize,
    /// Failed jobs of cluster-mode applications.
    pub cluster_jobs_failed: usize,
    /// Every driver attempt, with how it ended.
    pub drivers: Vec<DriverLife>,
    /// Every failed job, classified by cause.
    pub failures: Vec<JobFailure>,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
}

/// Options that change the system under test.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bugs {
    /// Executors that ignore their driver's loss (a deliberate bug, to
    /// show the checkers catch it).
    pub orphan_executors: bool,
    /// A manager that starts empty on a journal it cannot read, instead
    /// of refusing it (a deliberate bug).
    pub forget_damaged_journal: bool,
    /// File output committed from every staged attempt, not the one per
    /// partition the job used (a deliberate bug).
    pub commit_every_attempt: bool,
    /// Clients that try the manager once when they start, and give up if
    /// it is away (a deliberate bug).
    pub impatient_clients: bool,
    /// A manager that relaunches a supervised driver as soon as it loses
    /// the driver's worker, instead of waiting out the driver's lease (a
    /// deliberate bug).
    pub no_driver_lease: bool,
    /// Cluster-mode driver attempts that claim their output each under a
    /// name of their own, not their submission's (a deliberate bug).
    pub claim_per_attempt: bool,
}

#[derive(Default)]
struct AppState {
    jobs: Vec<JobOutcome>,
    /// The id the manager gave it: its application's, or its submission's
    /// in cluster mode.
    accepted: Option<String>,
    /// How a cluster-mode submission ended, once its client (or, its
    /// client's host gone, the simulation) saw it end.
    ended: Option<SubmissionEnd>,
    /// When the manager accepted it.
    accepted_at: Option<Duration>,
    driver: Option<(Addr<Driver>, Node)>,
    /// When its driver ended (stopped, or its host crashed).
    driver_end: Option<Duration>,
    crashed: bool,
    done: bool,
    /// Its streaming query, when the scenario runs one.
    stream: Option<crate::streaming::StreamRun>,
}

type Apps = Arc<Mutex<Vec<AppState>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `scenario` in a fresh actix system on a paused clock.
pub fn run_seed(scenario: &Scenario, certs: &Certs, reference: &Answers, bugs: Bugs) -> SeedReport {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            return SeedReport {
                seed: scenario.seed,
                violations: vec![format!("cannot start a runtime: {e}")],
                ..SeedReport::default()
            };
        }
    };
    let system = System::with_tokio_rt(move || runtime);
    let report = system.block_on(simulate(scenario, certs, reference, bugs));
    System::current().stop();
    report
}

/// A fault's start or end.
#[derive(Debug, Clone, Copy)]
enum Step {
    Begin(usize),
    End(usize),
}

struct Sim<'a> {
    scenario: &'a Scenario,
    certs: &'a Certs,
    net: SimNet,
    shared: Shared,
    dir: SeedDir,
    options: NodeOptions,
    bugs: Bugs,
    manager: Option<ManagerHost>,
    /// The manager last crashed, until its actor (and its hold on the
    /// journal) is gone.
    crashed_manager: Option<Addr<ClusterManager>>,
    /// A restart waiting for the crashed manager to be gone: with the
    /// damage to do to the journal first.
    manager_due: Option<Option<u64>>,
    manager_since: Duration,
    /// When the manager last read its journal in full: what its backup holds.
    last_good_start: Duration,
    /// (what the backup held, when it was restored): an application
    /// accepted in between is forgotten by the operator's choice.
    restores: Vec<(Duration, Duration)>,
    /// Damaged journals the manager refused, and read back in full.
    journals_refused: usize,
    journals_read_whole: usize,
    workers: BTreeMap<u8, Option<WorkerHost>>,
    apps: Apps,
    rng: ChaCha8Rng,
    /// (host, from, to): when hosts were paused.
    pauses: Vec<(u8, Duration, Option<Duration>)>,
    injected: BTreeMap<FaultKind, usize>,
    violations: Vec<String>,
    /// Executors already reported, so each is reported once.
    reported: std::collections::BTreeSet<usize>,
    /// Pairs of driver attempts already reported running at once.
    reported_pairs: std::collections::BTreeSet<(usize, usize)>,
    /// The deliberate bugs of the workers' simulated drivers.
    driver_bugs: DriverBugs,
}

async fn simulate(
    scenario: &Scenario,
    certs: &Certs,
    reference: &Answers,
    bugs: Bugs,
) -> SeedReport {
    let options = match EmberConf::new().node_options() {
        Ok(o) => o,
        Err(e) => {
            return SeedReport {
                seed: scenario.seed,
                violations: vec![e.to_string()],
                ..SeedReport::default()
            };
        }
    };
    let dir = match SeedDir::new() {
        Ok(d) => d,
        Err(e) => {
            return SeedReport {
                seed: scenario.seed,
                violations: vec![format!("cannot make the seed's directory: {e}")],
                ..SeedReport::default()
            };
        }
    };
    let driver_bugs = DriverBugs {
        commit_every_attempt: bugs.commit_every_attempt,
        claim_per_attempt: bugs.claim_per_attempt,
    };
    let mut sim = Sim {
        scenario,
        certs,
        net: SimNet::new(scenario.seed),
        shared: Shared::new(),
        dir,
        options,
        bugs,
        manager: None,
        crashed_manager: None,
        manager_due: None,
        manager_since: Duration::ZERO,
        last_good_start: Duration::ZERO,
        restores: Vec::new(),
        journals_refused: 0,
        journals_read_whole: 0,
        workers: BTreeMap::new(),
        apps: Arc::new(Mutex::new(
            (0..scenario.apps.len())
                .map(|_| AppState::default())
                .collect(),
        )),
        rng: ChaCha8Rng::seed_from_u64(scenario.seed ^ 0x5eed),
        pauses: Vec::new(),
        injected: BTreeMap::new(),
        violations: Vec::new(),
        reported: Default::default(),
        reported_pairs: Default::default(),
        driver_bugs,
    };
    if let Err(e) = sim.start_cluster() {
        sim.violations
            .push(format!("the cluster did not start: {e}"));
        return sim.report(reference);
    }
    let quiet = scenario.faults_end();
    for (i, plan) in scenario.apps.iter().enumerate() {
        match plan.mode {
            DeployMode::Client => {
                let output = scenario.file_output.then(|| sim.dir.output_dir());
                let stream = scenario
                    .streaming
                    .then(|| sim.dir.output_dir().join(format!("stream-{i}")));
                actix::spawn(run_app(
                    i,
                    plan.clone(),
                    output,
                    stream,
                    sim.net.clone(),
                    certs.load("client"),
                    options,
                    sim.apps.clone(),
                    sim.shared.clone(),
                    bugs,
                ));
            }
            DeployMode::Cluster => {
                let deadline = tokio::time::Instant::now() + quiet + SETTLE_LIMIT;
                let stream = scenario
                    .streaming
                    .then(|| sim.dir.output_dir().join(format!("stream-{i}")));
                actix::spawn(run_submission(
                    i,
                    plan.clone(),
                    sim.dir.output_dir(),
                    stream,
                    sim.net.clone(),
                    certs.load("client"),
                    options,
                    sim.apps.clone(),
                    sim.shared.clone(),
                    bugs,
                    deadline,
                ));
            }
        }
    }
    let mut steps: Vec<(Duration, Step)> = Vec::new();
    for (i, fault) in scenario.faults.iter().enumerate() {
        steps.push((fault.at, Step::Begin(i)));
        steps.push((fault.at + fault.lasts, Step::End(i)));
    }
    steps.sort_by_key(|(at, _)| *at);
    let mut steps = steps.into_iter().peekable();
    let mut all_done_at: Option<Duration> = None;
    let mut next_status = Duration::ZERO;
    loop {
        let now = sim.shared.now();
        if let Some(damage) = sim.manager_due.take() {
            sim.restart_manager(damage);
        }
        while let Some((_, step)) = steps.next_if(|(at, _)| *at <= now) {
            sim.apply(step);
        }
        sim.check_executors(now);
        sim.check_drivers(now);
        if now >= next_status {
            sim.check_submissions(now).await;
            next_status = now + Duration::from_secs(1);
        }
        let done = lock(&sim.apps).iter().all(|a| a.done);
        if done && now >= quiet {
            let since = *all_done_at.get_or_insert(now);
            // Past the liveness bound every executor and driver must be gone.
            if now >= since + LIVENESS + CHECK_EVERY {
                break;
            }
        }
        if now > quiet + SETTLE_LIMIT {
            break;
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
    sim.finish().await;
    sim.report(reference)
}

#[allow(clippy::too_many_arguments)]
async fn run_app(
    index: usize,
    plan: crate::scenario::AppPlan,
    output: Option<PathBuf>,
    stream: Option<PathBuf>,
    net: SimNet,
    creds: Result<ember_certs::NodeCredentials, String>,
    options: NodeOptions,
    apps: Apps,
    shared: Shared,
    bugs: Bugs,
) {
    tokio::time::sleep(plan.starts).await;
    let host = FIRST_APP_HOST + index as u8;
    let fail_all = |why: String| {
        let mut apps = lock(&apps);
        let app = &mut apps[index];
        app.jobs = plan
            .jobs
            .iter()
            .map(|_| JobOutcome::Failed(why.clone()))
            .collect();
        app.done = true;
        if app.driver_end.is_none() {
            app.driver_end = Some(shared.now());
        }
    };
    if lock(&apps)[index].crashed {
        fail_all("its host crashed before it started".into());
        return;
    }
    lock(&apps)[index].jobs = plan.jobs.iter().map(|_| JobOutcome::Pending).collect();
    let started = async {
        let creds = creds?;
        let (node, _) = start_node(
            &net,
            host,
            0,
            &creds,
            Some(&format!("app-{index}")),
            options,
        )?;
        let manager = reach(&node, bugs).await?;
        let options = session_options(index, &plan, bugs)?;
        // The application's own process: the real session, on the
        // simulated network.
        let mut session = Session::join(node.clone(), manager, options)
            .await
            .map_err(|e| e.to_string())?;
        session.set_committer(cluster_driver::committer(DriverBugs {
            commit_every_attempt: bugs.commit_every_attempt,
            claim_per_attempt: false,
        }));
        Ok::<_, String>((session, node))
    };
    let client = ClientStart::App { index, host };
    let Some((mut session, node)) = client.wait(started, &net, &shared, &fail_all).await else {
        return;
    };
    let app_id = session.app_id().unwrap_or_default().to_string();
    {
        let mut apps = lock(&apps);
        let state = &mut apps[index];
        if state.crashed {
            drop(apps);
            session.driver().do_send(StopDriver);
            fail_all("its host crashed while it started".into());
            return;
        }
        state.accepted = Some(app_id);
        state.accepted_at = Some(shared.now());
        state.driver = Some((session.driver().clone(), node));
    }
    shared.trace(format!("app {index} registered"));
    for (j, &query) in plan.jobs.iter().enumerate() {
        if lock(&apps)[index].crashed {
            break;
        }
        let outcome = match &output {
            None => match session.execute(QUERIES[query]).await {
                Ok(StatementOutcome::Rows(output)) => JobOutcome::Succeeded(lines(&output.batches)),
                Ok(other) => JobOutcome::Failed(format!("a query gave no rows: {other:?}")),
                Err(e) => JobOutcome::Failed(e.to_string()),
            },
            Some(dir) => {
                let destination = file_destination(dir, index, j);
                let copy = format!(
                    "COPY ({}) TO '{}/' STORED AS CSV OPTIONS ('format.has_header' 'false')",
                    QUERIES[query],
                    destination.display()
                );
                match session.execute(&copy).await {
                    Ok(_) => match committed_rows(&destination) {
                        Ok(rows) => JobOutcome::Succeeded(rows),
                        Err(e) => {
                            JobOutcome::Failed(format!("the committed output cannot be read: {e}"))
                        }
                    },
                    Err(e) => JobOutcome::Failed(e.to_string()),
                }
            }
        };
        let word = match &outcome {
            JobOutcome::Succeeded(rows) => format!("succeeded with {} rows", rows.len()),
            JobOutcome::Failed(_) => "failed".to_string(),
            JobOutcome::Pending => "pending".to_string(),
        };
        shared.trace(format!("app {index} job {j} {word}"));
        lock(&apps)[index].jobs[j] = outcome;
    }
    if let Some(dir) = stream
        && !lock(&apps)[index].crashed
    {
        let gone = || lock(&apps)[index].crashed;
        let run = crate::streaming::run(&mut session, index, &dir, gone).await;
        shared.trace(format!(
            "app {index} stream {} after {} start(s)",
            if run.finished { "finished" } else { "gave up" },
            run.starts
        ));
        lock(&apps)[index].stream = Some(run);
    }
    let crashed = lock(&apps)[index].crashed;
    if crashed {
        let mut apps = lock(&apps);
        for job in apps[index].jobs.iter_mut() {
            if *job == JobOutcome::Pending {
                *job = JobOutcome::Failed("its driver's host crashed".into());
            }
        }
        apps[index].done = true;
        return;
    }
    lock(&apps)[index].driver_end = Some(shared.now());
    session.stop().await;
    shared.trace(format!("app {index} stopped"));
    lock(&apps)[index].done = true;
}

/// Reaches the cluster manager from a client's node, waiting out one
/// that is away (or, with the deliberate bug, trying once).
async fn reach(node: &Node, bugs: Bugs) -> Result<NodeContact, String> {
    let manager_addr = SocketAddr::new(ip(MANAGER_HOST), MANAGER_PORT);
    if bugs.impatient_clients {
        // The bug: one try, as if a manager that is away were gone.
        let id = tokio::time::timeout(
            Duration::from_secs(1),
            node.connect(manager_addr, "localhost"),
        )
        .await
        .map_err(|_| format!("cannot reach the cluster manager at {manager_addr}: no answer"))?
        .map_err(|e| format!("cannot reach the cluster manager at {manager_addr}: {e}"))?;
        return Ok(NodeContact {
            node: id,
            addr: manager_addr,
            host: "localhost".to_string(),
        });
    }
    reach_manager(node, manager_addr, "localhost")
        .await
        .map_err(|e| e.to_string())
}

/// How client-mode application `index` starts its session: as `ember
/// submit --deploy-mode client` would, on a node the simulation started.
fn session_options(index: usize, plan: &AppPlan, bugs: Bugs) -> Result<SessionOptions, String> {
    let conf = app_conf(plan, bugs)?;
    Ok(SessionOptions {
        master: Master::Cluster {
            host: "localhost".to_string(),
            port: MANAGER_PORT,
        },
        listener: None,
        functions: Functions::new(),
        files: vec![],
        cluster: Some(ClusterSettings {
            // The node is started already, with its certificate.
            certs: PathBuf::new(),
            cert_name: None,
            role: ember_certs::Role::Client,
            instance: format!("app-{index}"),
            driver_host: "localhost".to_string(),
            request: app_request(index, &conf),
            submission: None,
            binary: None,
        }),
        conf,
    })
}

/// What application `index` asks the manager for.
fn app_request(index: usize, conf: &EmberConf) -> AppRequest {
    AppRequest {
        name: app_name(index),
        executor_cores: 1,
        executor_memory_mb: 512,
        max_cores: Some(2),
        conf: conf.pairs(),
        binary: None,
        files: vec![],
    }
}

/// An application's settings: its tasks' injected time, how long it
/// waits with no executor, and its shuffles' partitions.
fn app_conf(plan: &AppPlan, bugs: Bugs) -> Result<EmberConf, String> {
    let mut conf = EmberConf::new();
    let delays: Vec<String> = (0..6)
        .map(|stage| format!("{stage}.*:{}ms", plan.task_time.as_millis()))
        .collect();
    let set = |conf: &mut EmberConf, k: &str, v: &str| conf.set(k, v).map_err(|e| e.to_string());
    set(&mut conf, FAULT_DELAY_TASK, &delays.join(","))?;
    set(&mut conf, NO_EXECUTOR_TIMEOUT, "20s")?;
    set(&mut conf, SHUFFLE_PARTITIONS, &PARTITIONS.to_string())?;
    // Every planned task runs and takes the injected time, so that faults
    // meet the running tasks the scenarios were written for (coalescing
    // would join the small tables' partitions into one task).
    set(&mut conf, COALESCE_PARTITIONS, "false")?;
    if bugs.orphan_executors {
        set(&mut conf, FAULT_IGNORE_DRIVER_LOSS, "true")?;
    }
    Ok(conf)
}

/// A cluster-mode application: its client submits it with `--supervise`
/// and watches it until it ends; a worker runs its driver. Its jobs'
/// outcomes are read from their destinations once it has ended.
#[allow(clippy::too_many_arguments)]
async fn run_submission(
    index: usize,
    plan: AppPlan,
    output: PathBuf,
    stream: Option<PathBuf>,
    net: SimNet,
    creds: Result<ember_certs::NodeCredentials, String>,
    options: NodeOptions,
    apps: Apps,
    shared: Shared,
    bugs: Bugs,
    deadline: tokio::time::Instant,
) {
    tokio::time::sleep(plan.starts).await;
    let host = FIRST_APP_HOST + index as u8;
    let fail_all = |why: String| {
        let mut apps = lock(&apps);
        let app = &mut apps[index];
        app.jobs = plan
            .jobs
            .iter()
            .map(|_| JobOutcome::Failed(why.clone()))
            .collect();
        app.done = true;
    };
    if lock(&apps)[index].crashed {
        fail_all("its host crashed before it started".into());
        return;
    }
    if let Some(dir) = &stream
        && let Err(e) = crate::streaming::write_inputs(dir)
    {
        shared.trace(format!("app {index} cannot write its stream's input: {e}"));
    }
    lock(&apps)[index].jobs = plan.jobs.iter().map(|_| JobOutcome::Pending).collect();
    let submitted = async {
        let creds = creds?;
        let (node, _) = start_node(
            &net,
            host,
            0,
            &creds,
            Some(&format!("submit-{index}")),
            options,
        )?;
        let manager = reach(&node, bugs).await?;
        let conf = app_conf(&plan, bugs)?;
        let job = DriverJob {
            name: app_name(index),
            script: submission_script(index, &plan.jobs, &output, stream.as_deref()),
            conf: conf.pairs(),
            executor_cores: 1,
            executor_memory_mb: 512,
            max_cores: Some(2),
            args: vec![],
            base_dir: None,
            binary: None,
            files: vec![],
        };
        let client = ClusterClient::over(node.clone(), manager.addr, &manager.host)
            .await
            .map_err(|e| e.to_string())?;
        let id = submission::submit(&client, job)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((id, node, client))
    };
    let client = ClientStart::Submission { index, host };
    let Some((id, node, client)) = client.wait(submitted, &net, &shared, &fail_all).await else {
        return;
    };
    {
        let mut apps = lock(&apps);
        let state = &mut apps[index];
        state.accepted = Some(id.clone());
        state.accepted_at = Some(shared.now());
    }
    shared.trace(format!("app {index} submitted"));
    // Its host gone, the client watches no more; the submission runs on.
    let gone = || lock(&apps)[index].crashed;
    if let Some(end) = submission::watch(&client, &id, deadline, gone).await {
        submission_ended(&apps, index, end, &shared);
    }
    client.close().await;
    node.close(Duration::from_millis(100)).await;
}

/// The client of application `index` on host `host`, starting it: as an
/// application it drives itself, or as a cluster-mode submission.
#[derive(Debug, Clone, Copy)]
enum ClientStart {
    App { index: usize, host: u8 },
    Submission { index: usize, host: u8 },
}

impl ClientStart {
    /// What `start` gives, once it has; if it fails, or takes longer than
    /// [`START_LIMIT`], the client exits with the error (its host is gone)
    /// and every job of its application fails with it.
    async fn wait<T>(
        self,
        start: impl Future<Output = Result<T, String>>,
        net: &SimNet,
        shared: &Shared,
        fail_all: impl FnOnce(String),
    ) -> Option<T> {
        let (index, host, what, not_done) = match self {
            ClientStart::App { index, host } => (index, host, "application", "did not start"),
            ClientStart::Submission { index, host } => {
                (index, host, "submission", "was not submitted")
            }
        };
        let (trace, why) = match tokio::time::timeout(START_LIMIT, start).await {
            Ok(Ok(started)) => return Some(started),
            Ok(Err(why)) => (
                format!("app {index} {not_done}"),
                format!("the {what} did not start: {why}"),
            ),
            Err(_) => (
                format!("app {index} {not_done} in time"),
                format!(
                    "the {what} did not start within {} s",
                    START_LIMIT.as_secs()
                ),
            ),
        };
        // The client exits with this error; its process is gone.
        net.crash(ip(host));
        shared.trace(trace);
        fail_all(why);
        None
    }
}

/// Why a job of a submission that ended as `end` was never committed.
fn given_up(end: &SubmissionEnd, attempts: &[&DriverLife]) -> String {
    if *end == SubmissionEnd::Forgotten {
        return format!("the submission is {end}: the restored journal backup is older than it");
    }
    if *end == SubmissionEnd::Finished {
        return "its submission FINISHED without committing it".to_string();
    }
    let last = attempts
        .last()
        .map_or("none ran".to_string(), |a| match (&a.failed_job, &a.why) {
            (Some((job, why)), _) => format!("the last failed at job {job}: {why}"),
            (None, Some(why)) => format!("the last {why}"),
            (None, None) => "the last did not end".to_string(),
        });
    format!(
        "supervised submission gave up: it ended {end} after {} driver attempts; {last}",
        attempts.len()
    )
}

/// Notes how a cluster-mode application's submission ended, once.
fn submission_ended(apps: &Apps, index: usize, end: SubmissionEnd, shared: &Shared) {
    let mut apps = lock(apps);
    let Some(app) = apps.get_mut(index) else {
        return;
    };
    if app.ended.is_none() {
        shared.trace(format!("app {index} submission ended {}", end.word()));
        app.ended = Some(end);
        app.done = true;
    }
}

impl Sim<'_> {
    fn start_cluster(&mut self) -> Result<(), String> {
        self.start_manager().map_err(|e| e.to_string())?;
        for w in 0..self.scenario.workers {
            self.start_worker(FIRST_WORKER_HOST + w)?;
        }
        Ok(())
    }

    /// Starts the manager on its host, on the journal of any before it.
    fn start_manager(&mut self) -> Result<(), ManagerStartError> {
        let lease = if self.bugs.no_driver_lease {
            Duration::ZERO
        } else {
            DRIVER_LEASE
        };
        self.manager = Some(start_manager(
            &self.net,
            self.certs,
            &self.dir.state_dir(),
            self.options,
            lease,
        )?);
        self.manager_since = self.shared.now();
        self.last_good_start = self.manager_since;
        Ok(())
    }

    /// The manager's host comes back; `damage` is done to its journal
    /// first. A damaged journal must be refused, saying how to recover,
    /// or read back in full; refused, the operator restores the backup.
    fn restart_manager(&mut self, damage: Option<u64>) {
        // A dead process holds no lock, but the crashed manager's actor
        // may not have stopped yet: come back at the next check.
        if self
            .crashed_manager
            .as_ref()
            .is_some_and(|manager| manager.connected())
        {
            self.manager_due = Some(damage);
            return;
        }
        self.crashed_manager = None;
        self.net.restart(ip(MANAGER_HOST));
        let state_dir = self.dir.state_dir();
        let damaged = match damage {
            None => false,
            Some(detail) => match JournalDamage::from_detail(detail).apply(&state_dir, detail) {
                Ok(what) => {
                    self.shared.trace(format!("journal damaged: {what}"));
                    true
                }
                Err(e) => {
                    self.violations
                        .push(format!("the journal could not be damaged: {e}"));
                    false
                }
            },
        };
        let refusal = match self.start_manager() {
            Ok(()) => {
                if damaged {
                    self.journals_read_whole += 1;
                    self.shared
                        .trace("the manager read its damaged journal back in full");
                }
                return;
            }
            Err(ManagerStartError::Journal(e @ JournalError::Damaged { .. })) if damaged => {
                e.to_string()
            }
            Err(e) => {
                self.violations
                    .push(format!("the cluster manager did not restart: {e}"));
                return;
            }
        };
        self.journals_refused += 1;
        self.shared.trace("the manager refused its damaged journal");
        if !(refusal.contains(BACKUP_FILE) && refusal.contains("--discard-journal")) {
            self.violations.push(format!(
                "the manager refused its damaged journal without the way back: {refusal}"
            ));
        }
        let recovered = if self.bugs.forget_damaged_journal {
            // The bug: start empty, as if nothing had been journaled.
            Journal::discard(&state_dir)
                .map(drop)
                .map_err(|e| e.to_string())
        } else {
            self.shared
                .trace("the operator restores the journal's backup");
            self.restores
                .push((self.last_good_start, self.shared.now()));
            std::fs::copy(state_dir.join(BACKUP_FILE), state_dir.join(JOURNAL_FILE))
                .map(drop)
                .map_err(|e| e.to_string())
        };
        if let Err(e) = recovered {
            self.violations
                .push(format!("the journal could not be put back: {e}"));
            return;
        }
        if let Err(e) = self.start_manager() {
            self.violations.push(format!(
                "the cluster manager did not start on its journal's backup: {e}"
            ));
        }
    }

    /// Whether the operator's restore of an older journal forgot the
    /// application accepted at `accepted_at`.
    fn forgotten_by_restore(&self, accepted_at: Duration) -> bool {
        self.restores
            .iter()
            .any(|(held, at)| *held <= accepted_at && accepted_at < *at)
    }

    /// Starts a new worker on `host`.
    fn start_worker(&mut self, host: u8) -> Result<(), String> {
        let worker = start_worker(
            &self.net,
            self.certs,
            &self.shared,
            self.driver_bugs,
            host,
            self.scenario.worker_cores,
            self.options,
        )?;
        self.workers.insert(host, Some(worker));
        Ok(())
    }

    fn apply(&mut self, step: Step) {
        let (i, begin) = match step {
            Step::Begin(i) => (i, true),
            Step::End(i) => (i, false),
        };
        let fault = self.scenario.faults[i].clone();
        let hosts: Vec<String> = fault.hosts.iter().map(u8::to_string).collect();
        let what = format!("{} {}", fault.kind, hosts.join(","));
        if begin {
            *self.injected.entry(fault.kind).or_default() += 1;
        }
        self.shared
            .trace(format!("{} {what}", if begin { "begin" } else { "end" }));
        match (fault.kind, begin) {
            (FaultKind::Kill, true) => {
                for &host in &fault.hosts {
                    self.crash(host);
                }
            }
            (FaultKind::Kill, false) => {
                for &host in &fault.hosts {
                    self.restart_worker(host);
                }
            }
            (FaultKind::KillActor, true) => {
                let running: Vec<_> = self.shared.record().processes.values().cloned().collect();
                if !running.is_empty() {
                    let victim = &running[self.rng.random_range(0..running.len())];
                    crate::world::kill(victim);
                }
            }
            (FaultKind::KillActor, false) => {}
            (FaultKind::Restart | FaultKind::RestartDamaged, true) => self.crash(MANAGER_HOST),
            // Overlapping restarts: the manager is already back.
            (FaultKind::Restart | FaultKind::RestartDamaged, false) if self.manager.is_some() => {}
            (FaultKind::Restart, false) => self.restart_manager(None),
            (FaultKind::RestartDamaged, false) => self.restart_manager(Some(fault.detail)),
            (FaultKind::Partition | FaultKind::OneWay, true) => {
                let side: Vec<_> = fault.hosts.iter().map(|&h| ip(h)).collect();
                let rest: Vec<_> =
                    crate::world::hosts(self.scenario.workers, self.scenario.apps.len())
                        .into_iter()
                        .filter(|h| !fault.hosts.contains(h))
                        .map(ip)
                        .collect();
                let one_way = fault.kind == FaultKind::OneWay;
                if one_way && fault.detail % 2 == 1 {
                    self.net.partition(&rest, &side, true);
                } else {
                    self.net.partition(&side, &rest, one_way);
                }
            }
            (FaultKind::Partition | FaultKind::OneWay, false) => self.net.heal(),
            (FaultKind::Network, true) => {
                let d = fault.detail;
                self.net.set_faults(LinkFaults {
                    latency: Duration::from_micros(200 + (d % 5000)),
                    jitter: Duration::from_micros((d >> 16) % 20_000),
                    loss: ((d >> 32) % 200) as f64 / 1000.0,
                    duplicate: ((d >> 48) % 100) as f64 / 1000.0,
                });
            }
            (FaultKind::Network, false) => self.net.set_faults(LinkFaults::default()),
            (FaultKind::Pause, true) => {
                for &host in &fault.hosts {
                    self.net.pause(ip(host));
                    self.pauses.push((host, self.shared.now(), None));
                }
            }
            (FaultKind::Pause, false) => {
                for &host in &fault.hosts {
                    self.net.resume(ip(host));
                    let now = self.shared.now();
                    for pause in self.pauses.iter_mut() {
                        if pause.0 == host && pause.2.is_none() {
                            pause.2 = Some(now);
                        }
                    }
                }
            }
        }
    }

    /// A host crashes: nothing leaves it, and everything on it stops.
    fn crash(&mut self, host: u8) {
        self.net.crash(ip(host));
        if host == MANAGER_HOST {
            // Down again before it came back: the fault's end restarts it.
            self.manager_due = None;
            if let Some(manager) = self.manager.take() {
                self.crashed_manager = Some(manager.manager.clone());
                manager.crash();
            }
        } else if let Some(slot) = self.workers.get_mut(&host) {
            if let Some(worker) = slot.take() {
                worker.crash();
            }
        } else if host >= FIRST_APP_HOST {
            let index = usize::from(host - FIRST_APP_HOST);
            let mut apps = lock(&self.apps);
            if let Some(app) = apps.get_mut(index) {
                app.crashed = true;
                if app.driver_end.is_none() {
                    app.driver_end = Some(self.shared.now());
                }
                if let Some((driver, node)) = app.driver.take() {
                    driver.do_send(StopDriver);
                    node.shutdown();
                }
            }
        }
    }

    /// A crashed worker host comes back with a new, empty worker.
    fn restart_worker(&mut self, host: u8) {
        // Not a worker's host, or its worker is already back.
        if !matches!(self.workers.get(&host), Some(None)) {
            return;
        }
        self.net.restart(ip(host));
        if let Err(e) = self.start_worker(host) {
            self.violations
                .push(format!("worker {host} did not restart: {e}"));
        }
    }

    /// Time `host` spent paused after `since`, up to `now`.
    fn paused_since(&self, host: u8, since: Duration, now: Duration) -> Duration {
        self.pauses
            .iter()
            .filter(|(h, _, _)| *h == host)
            .map(|(_, from, to)| {
                let from = (*from).max(since);
                let to = to.unwrap_or(now);
                to.saturating_sub(from)
            })
            .sum()
    }

    /// No executor outlives its driver by more than the liveness bound;
    /// no worker runs more cores than it has.
    fn check_executors(&mut self, now: Duration) {
        let driver_ends: Vec<Option<Duration>> =
            lock(&self.apps).iter().map(|a| a.driver_end).collect();
        let (executors, drivers) = {
            let record = self.shared.record();
            (record.executors.clone(), record.drivers.clone())
        };
        // Executors only: one may run on the cores its own driver lends it
        // when no worker could ever host it beside the drivers.
        let mut used: BTreeMap<u8, u32> = BTreeMap::new();
        for (i, life) in executors.iter().enumerate() {
            if life.ended.is_some() {
                continue;
            }
            *used.entry(life.host).or_default() += life.cores;
            let (app, end) = match (life.app, life.attempt) {
                (Some(app), _) => (Some(app), driver_ends.get(app).copied().flatten()),
                (None, Some(attempt)) => drivers
                    .get(attempt)
                    .map_or((None, None), |d| (d.app, d.ended)),
                (None, None) => (None, None),
            };
            let Some(end) = end else {
                continue;
            };
            let bound = end + LIVENESS + self.paused_since(life.host, end, now);
            if now > bound && self.reported.insert(i) {
                self.violations.push(format!(
                    "orphan executor: executor {} of app {} on host {} still runs {} ms after its driver ended",
                    life.number,
                    app.map_or("?".to_string(), |a| a.to_string()),
                    life.host,
                    (now - end).as_millis()
                ));
            }
        }
        for (host, cores) in used {
            if cores > self.scenario.worker_cores {
                let line = format!(
                    "over capacity: host {host} runs executors with {cores} cores, it has {}",
                    self.scenario.worker_cores
                );
                if !self.violations.contains(&line) {
                    self.violations.push(line);
                }
            }
        }
    }

    /// Never two driver attempts of one submission at once: two attempts
    /// may both be alive, on hosts neither crashed nor paused, for at most
    /// the liveness bound (a superseded attempt on a host that comes back
    /// is killed when its worker registers again).
    fn check_drivers(&mut self, now: Duration) {
        let drivers = self.shared.record().drivers.clone();
        for (b, later) in drivers.iter().enumerate() {
            for (a, earlier) in drivers[..b].iter().enumerate() {
                if earlier.submission != later.submission || self.reported_pairs.contains(&(a, b)) {
                    continue;
                }
                let from = earlier.started.max(later.started);
                let to = earlier.ended.unwrap_or(now).min(later.ended.unwrap_or(now));
                if to <= from {
                    continue;
                }
                let together = self.unpaused(&[earlier.host, later.host], from, to);
                if together > LIVENESS {
                    self.reported_pairs.insert((a, b));
                    self.violations.push(format!(
                        "two driver attempts: attempts {a} (host {}) and {b} (host {}) of app {}'s submission both ran for {} ms, neither host paused nor crashed",
                        earlier.host,
                        later.host,
                        later.app.map_or("?".to_string(), |i| i.to_string()),
                        together.as_millis()
                    ));
                }
            }
        }
    }

    /// How much of `from..to` none of `hosts` spent paused.
    fn unpaused(&self, hosts: &[u8], from: Duration, to: Duration) -> Duration {
        let mut paused: Vec<(Duration, Duration)> = self
            .pauses
            .iter()
            .filter(|(h, _, _)| hosts.contains(h))
            .map(|(_, start, end)| ((*start).max(from), end.unwrap_or(to).min(to)))
            .filter(|(start, end)| start < end)
            .collect();
        paused.sort();
        let mut covered = Duration::ZERO;
        let mut reach = from;
        for (start, end) in paused {
            let start = start.max(reach);
            if end > start {
                covered += end - start;
                reach = end;
            }
        }
        (to - from).saturating_sub(covered)
    }

    /// The manager still knows every application it accepted.
    async fn check_submissions(&mut self, now: Duration) {
        let Some(manager) = &self.manager else {
            return;
        };
        if now < self.manager_since + Duration::from_millis(500) {
            return;
        }
        // (app, id, whether a restored backup may have forgotten it,
        // whether nobody else watches how it ends).
        let accepted: Vec<(usize, String, bool, bool)> = lock(&self.apps)
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let forgiven = a.accepted_at.is_some_and(|t| self.forgotten_by_restore(t));
                let unwatched = self.is_cluster_mode(i) && a.crashed && a.ended.is_none();
                a.accepted.clone().map(|id| (i, id, forgiven, unwatched))
            })
            .collect();
        if accepted.is_empty() {
            return;
        }
        let status = manager.manager.send(FromClient::Status).await;
        let Ok(Ok(ClientReply::Status(status))) = status else {
            return;
        };
        for (i, id, forgiven, unwatched) in accepted {
            let known = if self.is_cluster_mode(i) {
                status.drivers.iter().any(|d| d.id == id)
            } else {
                status.apps.iter().any(|a| a.id == id)
            };
            if !known && !forgiven {
                let line = format!("lost submission: the cluster manager forgot app {i} ({id})");
                if !self.violations.contains(&line) {
                    self.violations.push(line);
                }
            }
            // Its client's host is gone: the operator watches it instead.
            if unwatched && let Some(end) = SubmissionEnd::in_status(&status, &id) {
                submission_ended(&self.apps, i, end, &self.shared);
            }
        }
    }

    fn is_cluster_mode(&self, app: usize) -> bool {
        self.scenario
            .apps
            .get(app)
            .is_some_and(|a| a.mode == DeployMode::Cluster)
    }

    async fn finish(&mut self) {
        let now = self.shared.now();
        self.check_executors(now);
        self.check_drivers(now);
        self.check_submissions(now).await;
        self.settle_submissions();
        self.trace_unended_submissions().await;
        let apps = lock(&self.apps);
        for (i, app) in apps.iter().enumerate() {
            let writes_files = self.scenario.file_output || self.is_cluster_mode(i);
            for (j, job) in app.jobs.iter().enumerate() {
                if *job == JobOutcome::Pending {
                    self.violations.push(format!(
                        "pending job: app {i} job {j} had not ended {} s after the last fault",
                        SETTLE_LIMIT.as_secs()
                    ));
                }
                if let JobOutcome::Failed(why) = job
                    && why.trim().is_empty()
                {
                    self.violations
                        .push(format!("app {i} job {j} failed without a reason"));
                }
                // A failed job leaves the destination as it was: absent.
                if let JobOutcome::Failed(_) = job
                    && writes_files
                    && file_destination(&self.dir.output_dir(), i, j).exists()
                {
                    self.violations.push(format!(
                        "partial file output: app {i} job {j} failed, yet its destination exists"
                    ));
                }
                // A client-mode application runs once: its output is
                // committed without a claim.
                if let JobOutcome::Succeeded(_) = job
                    && self.scenario.file_output
                    && !self.is_cluster_mode(i)
                {
                    let claims = output_claims(&self.dir.output_dir(), i, j);
                    if !claims.is_empty() {
                        self.violations.push(format!(
                            "file output claims: app {i} job {j} of a client-mode application has claim markers {claims:?}"
                        ));
                    }
                }
            }
            if !app.done {
                self.violations
                    .push(format!("app {i} had not ended when the simulation did"));
            }
        }
        drop(apps);
        let (executors, drivers) = {
            let record = self.shared.record();
            (record.executors.clone(), record.drivers.clone())
        };
        for life in executors.iter().filter(|l| l.ended.is_none()) {
            let line = format!(
                "executor {} of app {:?} on host {} still runs at the end",
                life.number, life.app, life.host
            );
            if !self.violations.contains(&line) {
                self.violations.push(line);
            }
        }
        for (a, life) in drivers.iter().enumerate() {
            if life.ended.is_none() {
                self.violations.push(format!(
                    "driver attempt {a} of app {:?} on host {} still runs at the end",
                    life.app, life.host
                ));
            }
        }
    }

    /// Says in the trace how the manager sees each submission that has
    /// not ended, to tell a hung driver from an end nobody heard of.
    async fn trace_unended_submissions(&self) {
        let unended: Vec<(usize, String)> = lock(&self.apps)
            .iter()
            .enumerate()
            .filter(|(i, a)| self.is_cluster_mode(*i) && a.ended.is_none())
            .filter_map(|(i, a)| a.accepted.clone().map(|id| (i, id)))
            .collect();
        let Some(manager) = self.manager.as_ref().filter(|_| !unended.is_empty()) else {
            return;
        };
        let Ok(Ok(ClientReply::Status(status))) = manager.manager.send(FromClient::Status).await
        else {
            return;
        };
        for (i, id) in unended {
            if let Some(d) = status.drivers.iter().find(|d| d.id == id) {
                self.shared.trace(format!(
                    "app {i}'s submission has not ended: the manager has it {} ({}), {} restarts",
                    d.state,
                    d.reason.as_deref().unwrap_or("no reason"),
                    d.restarts
                ));
            }
        }
    }

    /// The jobs of each cluster-mode application whose submission ended:
    /// each committed under the submission's claim, or failed with why the
    /// submission gave it up. A submission commits each output exactly
    /// once whatever number of driver attempts it took, never ends
    /// FINISHED with an output missing, nor otherwise once an attempt
    /// committed everything and exited 0.
    fn settle_submissions(&mut self) {
        let drivers = self.shared.record().drivers.clone();
        let output = self.dir.output_dir();
        let mut violations = Vec::new();
        let mut apps = lock(&self.apps);
        for (i, app) in apps.iter_mut().enumerate() {
            if !self.is_cluster_mode(i) {
                continue;
            }
            let (Some(id), Some(end)) = (app.accepted.clone(), app.ended.clone()) else {
                continue;
            };
            let attempts: Vec<&DriverLife> =
                drivers.iter().filter(|d| d.submission == id).collect();
            let mut missing = Vec::new();
            for (j, job) in app.jobs.iter_mut().enumerate() {
                // The session claims its nth file output, counted from 1.
                let claim = ember_session::output_claim(&id, j + 1);
                let markers = output_claims(&output, i, j);
                let destination = file_destination(&output, i, j);
                // Committed, by whichever claim: its rows are checked
                // against the reference, its claims here.
                let committed = destination.exists();
                let expected: Vec<ClaimMarker> = if committed {
                    vec![ClaimMarker {
                        claim,
                        says: "committed".to_string(),
                    }]
                } else {
                    Vec::new()
                };
                if markers != expected && !self.bugs.commit_every_attempt {
                    violations.push(format!(
                        "file output claims: app {i} job {j} (submission {end}) has claim markers {markers:?}, not {expected:?}"
                    ));
                }
                *job = if committed {
                    match committed_rows(&destination) {
                        Ok(rows) => JobOutcome::Succeeded(rows),
                        Err(e) => {
                            JobOutcome::Failed(format!("the committed output cannot be read: {e}"))
                        }
                    }
                } else {
                    missing.push(j);
                    JobOutcome::Failed(given_up(&end, &attempts))
                };
            }
            if self.scenario.streaming {
                // Every driver attempt ran the stream from the checkpoint
                // the one before left; a finished submission awaited it to
                // the end of its input.
                let dir = output.join(format!("stream-{i}"));
                app.stream = Some(crate::streaming::settle(
                    i,
                    &dir,
                    end == SubmissionEnd::Finished,
                ));
            }
            if end == SubmissionEnd::Finished && !missing.is_empty() {
                violations.push(format!(
                    "submission output missing: app {i}'s submission FINISHED without committing jobs {missing:?}"
                ));
            }
            // (A restored backup that forgot it is the operator's choice.)
            let ended_otherwise =
                !matches!(end, SubmissionEnd::Finished | SubmissionEnd::Forgotten);
            if ended_otherwise && attempts.iter().any(|a| a.code == Some(0)) {
                violations.push(format!(
                    "submission ended otherwise: app {i}'s submission ended {end} though a driver attempt of it committed everything and exited 0"
                ));
            }
        }
        drop(apps);
        self.violations.extend(violations);
    }

    fn report(self, reference: &Answers) -> SeedReport {
        let mut violations = self.violations;
        let (mut succeeded, mut failed) = (0, 0);
        let (mut streams_finished, mut streams_given_up) = (0, 0);
        for app in lock(&self.apps).iter() {
            if let Some(stream) = &app.stream {
                violations.extend(stream.violations.iter().cloned());
                if stream.finished {
                    streams_finished += 1;
                } else {
                    streams_given_up += 1;
                }
            }
        }
        let mut failures = Vec::new();
        for (i, app) in lock(&self.apps).iter().enumerate() {
            for (j, job) in app.jobs.iter().enumerate() {
                match job {
                    JobOutcome::Succeeded(rows) => {
                        succeeded += 1;
                        let query = self.scenario.apps[i].jobs[j];
                        let from_files = self.scenario.file_output
                            || self.scenario.apps[i].mode == DeployMode::Cluster;
                        if reference.get(query) != Some(rows) && from_files {
                            violations.push(format!(
                                "file output not exactly once: app {i} job {j} (query {query}) committed {} rows, not the {} expected, or other rows",
                                rows.len(),
                                reference.get(query).map(Vec::len).unwrap_or_default()
                            ));
                        } else if reference.get(query) != Some(rows) {
                            violations.push(format!(
                                "wrong result: app {i} job {j} (query {query}) returned {} rows, not the {} expected, or other rows",
                                rows.len(),
                                reference.get(query).map(Vec::len).unwrap_or_default()
                            ));
                        }
                    }
                    JobOutcome::Failed(why) => {
                        failed += 1;
                        // A submission outlives its client's host.
                        let crashed = app.crashed
                            && (self.scenario.apps[i].mode == DeployMode::Client
                                || app.accepted.is_none());
                        let mut failure = JobFailure::classify(self.scenario, i, j, why, crashed);
                        // Once the application gave up, its later jobs find
                        // the driver gone: the same cause.
                        if failure.cause == Cause::DriverStopped
                            && let Some(first) = failures.iter().rev().find(|f: &&JobFailure| {
                                f.app == i && f.cause != Cause::DriverStopped
                            })
                        {
                            failure.cause = first.cause;
                            failure.explained_by = first.explained_by.clone();
                        }
                        if !failure.allowed() {
                            violations.push(failure.violation(self.scenario));
                        }
                        failures.push(failure);
                    }
                    JobOutcome::Pending => {}
                }
            }
        }
        let submissions = lock(&self.apps)
            .iter()
            .enumerate()
            .filter(|(i, a)| {
                self.scenario.apps[*i].mode == DeployMode::Cluster && a.accepted.is_some()
            })
            .count();
        let drivers = self.shared.record().drivers.clone();
        let mut trace = self.shared.record().trace.clone();
        let mut hasher = DefaultHasher::new();
        trace.hash(&mut hasher);
        let stats = self.net.stats();
        trace.push(format!(
            "datagrams: {} sent, {} delivered, {} lost, {} duplicated, {} cut, {} held",
            stats.sent, stats.delivered, stats.lost, stats.duplicated, stats.cut, stats.held
        ));
        SeedReport {
            seed: self.scenario.seed,
            trace_hash: hasher.finish(),
            virtual_time: self.shared.now(),
            faults: self.injected,
            journals_refused: self.journals_refused,
            journals_read_whole: self.journals_read_whole,
            jobs_succeeded: succeeded,
            jobs_failed: failed,
            streams_finished,
            streams_given_up,
            submissions,
            driver_attempts: drivers.len(),
            cluster_jobs_failed: failures
                .iter()
                .filter(|f: &&JobFailure| self.scenario.apps[f.app].mode == DeployMode::Cluster)
                .count(),
            drivers,
            failures,
            violations,
            trace,
        }
    }
}
