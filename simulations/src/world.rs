//! One simulated cluster: a cluster manager, workers and client
//! applications, each on a host of its own on the simulated network, all
//! real actors on one thread in virtual time. Workers start executors and
//! cluster-mode drivers as actors on their own host instead of processes;
//! everything else is the code a real cluster runs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix::prelude::*;
use ember_actors::EmberConf;
use ember_actors::cluster_manager::{
    ClusterManager, ClusterManagerSpec, Journal, JournalError, Placement, StopManager,
};
use ember_actors::driver::{Driver, StopDriver};
use ember_actors::executor::{ExecutorMessage, TaskPool};
use ember_actors::remote::{NodeContact, RemoteExecutor};
use ember_actors::worker::{
    ChildExited, ChildKey, ChildSpec, Launcher, RunningProcess, StopWorker, Worker, WorkerSpec,
};
use ember_certs::{IssueRequest, NodeCredentials, Role};
use ember_transport::sim::{SimNet, SimSocket};
use ember_transport::{ExitReason, Node, NodeId, NodeOptions, PeerDown};

use crate::cluster_driver::{self, DriverBugs, Launch};

/// The port the cluster manager listens on.
pub const MANAGER_PORT: u16 = 7077;
/// Hosts: 1 is the manager, 2.. the workers, 100.. the applications.
pub const MANAGER_HOST: u8 = 1;
pub const FIRST_WORKER_HOST: u8 = 2;
pub const FIRST_APP_HOST: u8 = 100;
/// Every certificate names this host; addresses come from the network.
const SERVER_NAME: &str = "localhost";

pub fn ip(host: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, host])
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The cluster's certificates, made once per campaign.
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    pub fn new(workers: u8) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path();
        ember_certs::init_ca(path, "sim", 30, false).map_err(|e| e.to_string())?;
        let issue = |role: Role, name: &str| {
            ember_certs::issue(path, &IssueRequest::new(role, name, vec![], 30))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        issue(Role::ClusterManager, "manager")?;
        issue(Role::Client, "client")?;
        for w in 0..workers {
            issue(Role::Worker, &worker_name(FIRST_WORKER_HOST + w))?;
        }
        Ok(Self { dir })
    }

    pub fn load(&self, name: &str) -> Result<NodeCredentials, String> {
        ember_certs::load_node(self.dir.path(), name).map_err(|e| e.to_string())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

pub fn worker_name(host: u8) -> String {
    format!("worker-{host}")
}

/// A seed's own directory on the real file system (in memory where the
/// machine has a tmpfs): the manager's state dir, with its journal and the
/// backup kept at each good start, and the destination of file output.
pub struct SeedDir {
    dir: tempfile::TempDir,
}

impl SeedDir {
    pub fn new() -> Result<Self, String> {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("ember-sim-")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("ember-sim-").tempdir()
        };
        dir.map(|dir| Self { dir }).map_err(|e| e.to_string())
    }

    /// The manager's `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("manager")
    }

    /// Where jobs write their file output.
    pub fn output_dir(&self) -> PathBuf {
        self.dir.path().join("output")
    }
}

/// How the journal is damaged while the manager is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalDamage {
    /// One bit flipped in every stored copy of an application's record.
    FlipInRecord,
    /// 512 bytes of noise over one page.
    NoisyPage,
    /// The file cut to half its length, as a torn copy leaves it.
    Truncated,
}

impl JournalDamage {
    pub fn from_detail(detail: u64) -> Self {
        match detail % 3 {
            0 => JournalDamage::FlipInRecord,
            1 => JournalDamage::NoisyPage,
            _ => JournalDamage::Truncated,
        }
    }

    /// Damages the journal in `state_dir`; says what it did.
    pub fn apply(self, state_dir: &Path, detail: u64) -> std::io::Result<String> {
        use ember_actors::cluster_manager::journal::{JOURNAL_FILE, damage};
        let path = state_dir.join(JOURNAL_FILE);
        let len = std::fs::metadata(&path)?.len() as usize;
        let noisy_page = |at: usize| -> std::io::Result<String> {
            let mut bytes = std::fs::read(&path)?;
            damage::noise(&mut bytes, at);
            std::fs::write(&path, bytes)?;
            Ok(format!("noise over the page at byte {}", at & !4095))
        };
        match self {
            JournalDamage::FlipInRecord => {
                // Application records name the application: "sim-N".
                let places = damage::damage(state_dir, "sim-", damage::flip_a_byte)?;
                if places == 0 {
                    // No application yet: a page of the tables instead.
                    noisy_page((detail >> 8) as usize % len.max(1))
                } else {
                    Ok(format!(
                        "a bit flipped in {places} copies of application records"
                    ))
                }
            }
            JournalDamage::NoisyPage => noisy_page((detail >> 8) as usize % len.max(1)),
            JournalDamage::Truncated => {
                let file = std::fs::OpenOptions::new().write(true).open(&path)?;
                file.set_len((len / 2) as u64)?;
                file.sync_all()?;
                Ok(format!("cut from {len} to {} bytes", len / 2))
            }
        }
    }
}

/// An executor's life, as the checkers see it.
#[derive(Debug, Clone)]
pub struct ExecutorLife {
    /// The client-mode application (its index), from its driver's node name.
    pub app: Option<usize>,
    /// The cluster-mode driver attempt (its index in `Record::drivers`)
    /// whose node its driver contact names.
    pub attempt: Option<usize>,
    pub number: u32,
    pub host: u8,
    pub cores: u32,
    pub started: Duration,
    pub ended: Option<Duration>,
    pub why: Option<String>,
}

/// One attempt of a cluster-mode submission's driver, as the checkers see
/// it: a process a worker started, from its start to its exit.
#[derive(Debug, Clone)]
pub struct DriverLife {
    pub submission: String,
    /// The simulated application its script names.
    pub app: Option<usize>,
    /// Its node: its application's executors dial it.
    pub node: NodeId,
    pub host: u8,
    pub started: Duration,
    pub ended: Option<Duration>,
    /// Its exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub why: Option<String>,
    /// The job it failed at, and the job's error.
    pub failed_job: Option<(usize, String)>,
}

/// A simulated process, as the record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProcessId {
    /// An executor, by its index in `Record::executors`.
    Executor(usize),
    /// A cluster-mode driver attempt, by its index in `Record::drivers`.
    Driver(usize),
}

/// What happened, shared by everything in one simulation.
#[derive(Default)]
pub struct Record {
    pub trace: Vec<String>,
    pub executors: Vec<ExecutorLife>,
    pub drivers: Vec<DriverLife>,
    /// Running processes, executors first, to kill one.
    pub processes: BTreeMap<ProcessId, Arc<SimProcess>>,
}

#[derive(Clone)]
pub struct Shared {
    pub record: Arc<Mutex<Record>>,
    pub start: tokio::time::Instant,
}

thread_local! {
    /// When the seed running on this thread began, for log lines.
    static SEED_START: std::cell::Cell<Option<tokio::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// How far the seed running on this thread is in virtual time: log lines
/// carry it, to be read beside the trace.
pub fn virtual_time() -> Option<Duration> {
    SEED_START.with(|start| start.get().map(|s| s.elapsed()))
}

impl Shared {
    pub fn new() -> Self {
        let start = tokio::time::Instant::now();
        SEED_START.with(|s| s.set(Some(start)));
        Self {
            record: Arc::default(),
            start,
        }
    }

    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn trace(&self, line: impl AsRef<str>) {
        let at = self.now().as_millis();
        lock(&self.record)
            .trace
            .push(format!("{at:>7}ms {}", line.as_ref()));
    }

    pub fn record(&self) -> MutexGuard<'_, Record> {
        lock(&self.record)
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// The application index in a driver's node name (`client/app-3`).
pub fn app_of(driver: &NodeId) -> Option<usize> {
    driver.0.rsplit_once("/app-")?.1.parse().ok()
}

/// A simulated node on `host`.
pub fn start_node(
    net: &SimNet,
    host: u8,
    port: u16,
    creds: &NodeCredentials,
    instance: Option<&str>,
    options: NodeOptions,
) -> Result<(Node, Arc<SimSocket>), String> {
    let socket = net
        .bind(SocketAddr::new(ip(host), port))
        .map_err(|e| e.to_string())?;
    let seed = u64::from(host) << 32 | u64::from(socket.addr().port());
    let node = Node::start_simulated(creds, instance, Arc::clone(&socket), options, seed)
        .map_err(|e| e.to_string())?;
    Ok((node, socket))
}

/// An executor or cluster-mode driver "process": its socket, node and
/// actors.
pub struct SimProcess {
    id: ProcessId,
    key: ChildKey,
    socket: Arc<SimSocket>,
    exited: Recipient<ChildExited>,
    shared: Shared,
    state: Mutex<ProcessState>,
}

#[derive(Default)]
struct ProcessState {
    node: Option<Node>,
    remote: Option<RemoteExecutor>,
    /// A driver process's driver actor, and the task running its jobs.
    driver: Option<Addr<Driver>>,
    program: Option<tokio::task::JoinHandle<()>>,
    ended: bool,
}

impl SimProcess {
    /// The pid the worker knows it by: executors and drivers apart.
    fn pid(&self) -> u32 {
        match self.id {
            ProcessId::Executor(i) => i as u32,
            ProcessId::Driver(i) => DRIVER_PIDS + i as u32,
        }
    }

    pub fn socket(&self) -> &Arc<SimSocket> {
        &self.socket
    }

    /// Keeps the node the process runs, to close it when it ends.
    pub fn set_node(&self, node: Node) {
        lock(&self.state).node = Some(node);
    }

    /// Traces `what` as this driver attempt's doing.
    pub fn note(&self, what: impl AsRef<str>) {
        if let ProcessId::Driver(i) = self.id {
            self.shared
                .trace(format!("driver attempt {i} {}", what.as_ref()));
        }
    }

    /// How many attempts of this driver's submission were launched before it.
    pub fn earlier_attempts(&self) -> usize {
        let ProcessId::Driver(i) = self.id else {
            return 0;
        };
        let record = self.shared.record();
        let Some(me) = record.drivers.get(i) else {
            return 0;
        };
        record.drivers[..i]
            .iter()
            .filter(|d| d.submission == me.submission)
            .count()
    }

    /// Records the job a driver attempt failed at, and why.
    pub fn failed_job(&self, job: usize, why: &str) {
        if let ProcessId::Driver(i) = self.id
            && let Some(life) = self.shared.record().drivers.get_mut(i)
        {
            life.failed_job = Some((job, why.to_string()));
        }
    }

    /// Keeps a driver process's driver actor, to stop it when it is killed.
    pub fn set_driver(&self, driver: Addr<Driver>) {
        let mut state = lock(&self.state);
        if state.ended {
            driver.do_send(StopDriver);
        } else {
            state.driver = Some(driver);
        }
    }

    /// Ends the process: records it, tells the worker, closes the node.
    pub fn end(&self, code: Option<i32>, why: String, graceful: bool) {
        let (node, remote, driver, program) = {
            let mut state = lock(&self.state);
            if state.ended {
                return;
            }
            state.ended = true;
            (
                state.node.take(),
                state.remote.take(),
                state.driver.take(),
                state.program.take(),
            )
        };
        if !graceful {
            self.socket.close();
        }
        let now = self.shared.now();
        {
            let mut record = self.shared.record();
            match self.id {
                ProcessId::Executor(i) => {
                    if let Some(life) = record.executors.get_mut(i) {
                        life.ended = Some(now);
                        life.why = Some(why.clone());
                    }
                }
                ProcessId::Driver(i) => {
                    if let Some(life) = record.drivers.get_mut(i) {
                        life.ended = Some(now);
                        life.code = code;
                        life.why = Some(why.clone());
                    }
                }
            }
            record.processes.remove(&self.id);
        }
        if let ProcessId::Driver(i) = self.id {
            // Reasons name ids, which carry the wall clock: the trace
            // keeps the exit alone, so a seed replays to the same trace.
            let exit = why.split(':').next().unwrap_or_default();
            self.shared.trace(format!("driver attempt {i} {exit}"));
        }
        if let Some(remote) = &remote {
            remote.executor.do_send(ExecutorMessage::Stop);
        }
        // Killed, a driver's jobs stop where they are, and so does it.
        if let Some(program) = program
            && !graceful
        {
            program.abort();
        }
        if let Some(driver) = driver
            && !graceful
        {
            driver.do_send(StopDriver);
        }
        let exited = self.exited.clone();
        let key = self.key.clone();
        let pid = self.pid();
        actix::spawn(async move {
            if let Some(node) = node {
                if graceful {
                    node.close(Duration::from_millis(100)).await;
                } else {
                    node.shutdown();
                }
            }
            drop(remote);
            exited.do_send(ChildExited {
                key,
                pid,
                code,
                why,
            });
        });
    }
}

/// Drivers' pids start here, apart from executors'.
const DRIVER_PIDS: u32 = 1 << 20;

/// Kills a process, as SIGKILL does.
pub fn kill(process: &Arc<SimProcess>) {
    process.end(None, "killed by signal 9".to_string(), false);
}

struct Handle(Arc<SimProcess>);

impl RunningProcess for Handle {
    fn pid(&self) -> u32 {
        self.0.pid()
    }

    fn kill(&self) {
        kill(&self.0);
    }
}

/// Hears the executor's end; the process exits with it.
struct ProcessEnd(Arc<SimProcess>);

impl Actor for ProcessEnd {
    type Context = Context<Self>;
}

impl Handler<PeerDown> for ProcessEnd {
    type Result = ();

    fn handle(&mut self, msg: PeerDown, ctx: &mut Context<Self>) {
        let (code, why) = match msg.reason {
            ExitReason::Normal => (Some(0), "exited with code 0".to_string()),
            other => (Some(3), format!("exited with code 3: {other}")),
        };
        self.0.end(code, why, true);
        ctx.stop();
    }
}

/// Starts a worker's executors and cluster-mode drivers as actors on the
/// worker's host.
pub struct SimLauncher {
    pub net: SimNet,
    pub host: u8,
    pub creds: Arc<NodeCredentials>,
    pub shared: Shared,
    pub bugs: DriverBugs,
}

fn copy(creds: &NodeCredentials) -> NodeCredentials {
    NodeCredentials {
        ca: creds.ca.clone(),
        cert: creds.cert.clone(),
        key: creds.key.clone_key(),
        identity: creds.identity.clone(),
    }
}

impl Launcher for SimLauncher {
    fn launch(
        &mut self,
        key: &ChildKey,
        _program: Option<&Path>,
        _args: &[String],
        _dir: &Path,
        spec: &ChildSpec,
        exited: Recipient<ChildExited>,
    ) -> std::io::Result<Box<dyn RunningProcess>> {
        let socket = self
            .net
            .bind(SocketAddr::new(ip(self.host), 0))
            .map_err(std::io::Error::other)?;
        let now = self.shared.now();
        let id = {
            let mut record = self.shared.record();
            match spec {
                ChildSpec::Executor {
                    executor,
                    cores,
                    driver,
                    ..
                } => {
                    // Attempts of one submission on one worker share a node
                    // name: the latest is the one its executors serve.
                    let attempt = record.drivers.iter().rposition(|d| d.node == driver.node);
                    record.executors.push(ExecutorLife {
                        app: app_of(&driver.node),
                        attempt,
                        number: *executor,
                        host: self.host,
                        cores: *cores,
                        started: now,
                        ended: None,
                        why: None,
                    });
                    ProcessId::Executor(record.executors.len() - 1)
                }
                ChildSpec::Driver {
                    node, driver, job, ..
                } => {
                    let creds = &self.creds.identity.name;
                    record.drivers.push(DriverLife {
                        submission: driver.clone(),
                        app: cluster_driver::app_named(&job.name),
                        node: NodeId(format!("{creds}/{}", node.instance)),
                        host: self.host,
                        started: now,
                        ended: None,
                        code: None,
                        why: None,
                        failed_job: None,
                    });
                    ProcessId::Driver(record.drivers.len() - 1)
                }
            }
        };
        let process = Arc::new(SimProcess {
            id,
            key: key.clone(),
            socket: Arc::clone(&socket),
            exited,
            shared: self.shared.clone(),
            state: Mutex::default(),
        });
        self.shared
            .record()
            .processes
            .insert(id, Arc::clone(&process));
        let creds = copy(&self.creds);
        let started = Arc::clone(&process);
        match spec.clone() {
            ChildSpec::Executor {
                node: ns,
                executor,
                cores,
                driver,
                secret,
                ..
            } => {
                actix::spawn(async move {
                    if let Err(why) =
                        start_executor(&started, creds, ns, executor, cores, driver, secret).await
                    {
                        started.end(Some(1), format!("exited with code 1: {why}"), true);
                    }
                });
            }
            spec @ ChildSpec::Driver { .. } => {
                if let (ProcessId::Driver(i), ChildSpec::Driver { job, .. }) = (id, &spec) {
                    let app = cluster_driver::app_named(&job.name)
                        .map_or("?".to_string(), |a| a.to_string());
                    self.shared.trace(format!(
                        "driver attempt {i} of app {app} started on host {}",
                        self.host
                    ));
                }
                let bugs = self.bugs;
                let launch = Launch { creds, spec };
                let program = actix::spawn(async move {
                    let (code, why) = cluster_driver::run(&started, launch, bugs).await;
                    started.end(Some(code), why, true);
                });
                let mut state = lock(&process.state);
                if state.ended {
                    program.abort();
                } else {
                    state.program = Some(program);
                }
            }
        }
        Ok(Box::new(Handle(process)))
    }
}

/// What `ember --role executor` does, on a simulated node.
async fn start_executor(
    process: &Arc<SimProcess>,
    creds: NodeCredentials,
    ns: ember_actors::worker::child::NodeSpec,
    executor: u32,
    cores: u32,
    driver: NodeContact,
    secret: String,
) -> Result<(), String> {
    let mut conf = EmberConf::new();
    for (k, v) in &ns.conf {
        conf.set(k, v).map_err(|e| e.to_string())?;
    }
    let options = conf.node_options().map_err(|e| e.to_string())?;
    let seed = u64::from(process.socket.addr().port()) << 8 | u64::from(executor);
    let node = Node::start_simulated(
        &creds,
        Some(&ns.instance),
        Arc::clone(&process.socket),
        options,
        seed,
    )
    .map_err(|e| e.to_string())?;
    process.set_node(node.clone());
    // The executor process's own code from here, as a worker's child runs it.
    let threads = usize::try_from(cores).unwrap_or(1).max(1);
    let settings = ember_runtime::roles::ExecutorSettings {
        simulated: true,
        ..ember_runtime::roles::ExecutorSettings::from_conf(&conf, threads, 0, None)?
    };
    ember_runtime::roles::reach_driver(&node, &driver, &conf).await?;
    if lock(&process.state).ended {
        return Ok(());
    }
    let on_exit = ProcessEnd(Arc::clone(process)).start().recipient();
    let remote = ember_runtime::roles::start_executor(ember_runtime::roles::ExecutorStart {
        contact: NodeContact {
            node: node.id().clone(),
            addr: process.socket.addr(),
            host: SERVER_NAME.to_string(),
        },
        node,
        executor,
        driver,
        secret,
        pool: TaskPool::ActorThread,
        settings,
        functions: ember_engine::Functions::new(),
        on_exit,
    })?;
    let mut state = lock(&process.state);
    if state.ended {
        remote.executor.do_send(ExecutorMessage::Stop);
    } else {
        state.remote = Some(remote);
    }
    Ok(())
}

/// A host with a worker on it.
pub struct WorkerHost {
    pub worker: Addr<Worker>,
    pub node: Node,
    pub cores: u32,
}

pub fn start_worker(
    net: &SimNet,
    certs: &Certs,
    shared: &Shared,
    bugs: DriverBugs,
    host: u8,
    cores: u32,
    options: NodeOptions,
) -> Result<WorkerHost, String> {
    let creds = certs.load(&worker_name(host))?;
    let (node, _) = start_node(net, host, 0, &creds, None, options)?;
    let worker = Worker::new(WorkerSpec {
        node: node.clone(),
        manager: NodeContact {
            node: NodeId(String::new()),
            addr: SocketAddr::new(ip(MANAGER_HOST), MANAGER_PORT),
            host: SERVER_NAME.to_string(),
        },
        host: SERVER_NAME.to_string(),
        cores,
        memory_mb: 8192,
        work_dir: PathBuf::from("/nonexistent/ember-simulation"),
        launcher: Box::new(SimLauncher {
            net: net.clone(),
            host,
            creds: Arc::new(creds),
            shared: shared.clone(),
            bugs,
        }),
        certs: certs.path().to_path_buf(),
        cert_name: worker_name(host),
        conf: Vec::new(),
        retry: Duration::from_millis(500),
        stops_system: false,
    })
    .start();
    Ok(WorkerHost {
        worker,
        node,
        cores,
    })
}

impl WorkerHost {
    /// The host is gone: its worker and every executor on it.
    pub fn crash(self) {
        self.worker.do_send(StopWorker);
        self.node.shutdown();
    }
}

/// The manager's host.
pub struct ManagerHost {
    pub manager: Addr<ClusterManager>,
    pub node: Node,
}

/// Why the manager did not start.
#[derive(Debug, thiserror::Error)]
pub enum ManagerStartError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Host(String),
}

/// Starts the manager on its host; `driver_lease` is how long it waits
/// before replacing a driver whose worker it lost.
pub fn start_manager(
    net: &SimNet,
    certs: &Certs,
    state_dir: &Path,
    options: NodeOptions,
    driver_lease: Duration,
) -> Result<ManagerHost, ManagerStartError> {
    // The journal first: a manager that refuses it never listens.
    let journal = Journal::open(state_dir)?;
    let creds = certs.load("manager").map_err(ManagerStartError::Host)?;
    let (node, _) = start_node(net, MANAGER_HOST, MANAGER_PORT, &creds, None, options)
        .map_err(ManagerStartError::Host)?;
    let manager = ClusterManager::new(ClusterManagerSpec {
        node: node.clone(),
        journal,
        placement: Placement::Spread,
        recovery_grace: Duration::from_secs(2),
        max_executor_failures: 10,
        max_driver_core_share: ember_actors::cluster_manager::state::DEFAULT_MAX_DRIVER_CORE_SHARE,
        driver_lease,
    })
    .start();
    Ok(ManagerHost { manager, node })
}

impl ManagerHost {
    pub fn crash(self) {
        self.manager.do_send(StopManager);
        self.node.shutdown();
    }
}

/// The ids of hosts, for picking fault targets.
pub fn hosts(workers: u8, apps: usize) -> BTreeSet<u8> {
    let mut all: BTreeSet<u8> = (0..workers).map(|w| FIRST_WORKER_HOST + w).collect();
    all.insert(MANAGER_HOST);
    for a in 0..apps {
        all.insert(FIRST_APP_HOST + a as u8);
    }
    all
}
