//! The cluster's long-lived processes, `ember --role cluster-manager` and
//! `--role worker`, and the `--role executor` children a worker starts.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use ember_actors::cluster_manager::{ClusterManager, ClusterManagerSpec, Journal, Placement};
use ember_actors::config::{
    EXECUTOR_CONNECT_TIMEOUT, MAX_APP_BINARY_BYTES, MAX_DRIVER_CORE_SHARE, MAX_EXECUTOR_RETRIES,
    RECOVERY_TIMEOUT, SPREAD_OUT, WORKER_RETRY_INTERVAL,
};
use ember_actors::executor::{ExecutorMessage, TaskPool};
use ember_actors::faults::Faults;
use ember_actors::owner_only;
use ember_actors::remote::{
    NodeContact, RemoteExecutor, RemoteExecutorSpec, start_remote_executor,
};
use ember_actors::supervision::{ExitReason, PeerDown};
use ember_actors::worker::child::{ChildSpec, read_spec};
use ember_actors::worker::{ProcessLauncher, StopWorker, Worker, WorkerSpec};
use ember_actors::{EmberConf, ExecutorId};
use ember_certs::{NodeCredentials, Role};
use ember_engine::Functions;
use ember_session::setup::{in_force, pick_credentials, resolve};
use ember_transport::Node;

/// This machine's memory less 1 GB (Spark's default for a worker).
pub fn default_worker_memory_mb() -> u64 {
    let total_kb = ember_engine::memory::physical_memory().map_or(2 * 1024 * 1024, |b| b / 1024);
    (total_kb / 1024).saturating_sub(1024).max(1024)
}

pub(crate) fn conf_from(pairs: &[(String, String)]) -> Result<EmberConf, String> {
    let mut conf = EmberConf::new()
        .with_env(std::env::vars())
        .map_err(|e| e.to_string())?;
    for (k, v) in pairs {
        conf.set(k, v).map_err(|e| e.to_string())?;
    }
    Ok(conf)
}

/// Waits for Ctrl-C or SIGTERM.
pub(crate) async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub struct ManagerArgs {
    pub listen: SocketAddr,
    pub certs: PathBuf,
    pub name: Option<String>,
    pub state_dir: PathBuf,
    /// Start empty on purpose (`--discard-journal`).
    pub discard_journal: bool,
    pub conf: Vec<(String, String)>,
}

/// What every long-lived role loads first: its settings, its certificate
/// and its transport options.
fn prepare(
    conf: &[(String, String)],
    certs: &Path,
    name: Option<&str>,
    role: Role,
) -> Result<(EmberConf, NodeCredentials, ember_transport::NodeOptions), String> {
    let conf = conf_from(conf)?;
    let creds = pick_credentials(certs, name, role)?;
    let options = conf.node_options().map_err(|e| e.to_string())?;
    Ok((conf, creds, options))
}

pub(crate) fn fail(e: String) -> ExitCode {
    errln!("error: {e}");
    ExitCode::FAILURE
}

pub fn run_cluster_manager(args: ManagerArgs) -> ExitCode {
    let (conf, creds, options) = match prepare(
        &args.conf,
        &args.certs,
        args.name.as_deref(),
        Role::ClusterManager,
    ) {
        Ok(prepared) => prepared,
        Err(e) => return fail(e),
    };
    if args.discard_journal {
        match Journal::discard(&args.state_dir) {
            Ok(Some(aside)) => errln!(
                "warning: --discard-journal: starting with an empty journal; every application \
                 and submission of the old one is forgotten (it is kept at {})",
                aside.display()
            ),
            Ok(None) => errln!(
                "warning: --discard-journal: {} holds no journal; starting empty",
                args.state_dir.display()
            ),
            Err(e) => return fail(e.to_string()),
        }
    }
    let journal = match Journal::open(&args.state_dir) {
        Ok(j) => j,
        Err(e) => return fail(e.to_string()),
    };
    let binaries = match ember_actors::binaries::BinaryDir::open(
        &args.state_dir.join("binaries"),
        conf.whole(MAX_APP_BINARY_BYTES),
        0o600,
    ) {
        Ok(b) => b,
        Err(e) => {
            let dir = args.state_dir.join("binaries");
            return fail(format!("cannot use {}: {e}", dir.display()));
        }
    };
    let placement = if conf.flag(SPREAD_OUT) {
        Placement::Spread
    } else {
        Placement::Pack
    };
    let recovery_grace = conf.duration(RECOVERY_TIMEOUT);
    let system = System::new();
    system.block_on(async move {
        let node = match Node::start(&creds, args.listen, options) {
            Ok(n) => n,
            Err(e) => return fail(format!("cannot listen on {}: {e}", args.listen)),
        };
        let addr = match node.local_addr() {
            Ok(a) => a,
            Err(e) => return fail(e.to_string()),
        };
        let mut manager = ClusterManager::new(ClusterManagerSpec {
            node: node.clone(),
            journal,
            placement,
            recovery_grace,
            max_executor_failures: u32::try_from(conf.whole(MAX_EXECUTOR_RETRIES))
                .unwrap_or(u32::MAX),
            max_driver_core_share: conf.number(MAX_DRIVER_CORE_SHARE),
            driver_lease: ember_actors::cluster_manager::state::DRIVER_LEASE,
        })
        .with_binaries(binaries);
        let ended = manager.ended();
        let manager = manager.start();
        outln!("cluster manager {} listening on ember://{addr}", node.id());
        tracing::info!(%addr, state_dir = %args.state_dir.display(), "cluster manager started");
        // A manager that can no longer serve ends the process, so a service
        // supervisor sees it and nobody is told "gone" by a live process.
        let code = tokio::select! {
            () = interrupted() => ExitCode::SUCCESS,
            why = ended => fail(match why {
                Ok(why) => format!("the cluster manager stopped: {why}"),
                Err(_) => "the cluster manager's actor ended unexpectedly (a panic, \
                           reported above); restart it"
                    .to_string(),
            }),
        };
        drop(manager);
        node.close(Duration::from_millis(200)).await;
        code
    })
}

/// The lock file a worker holds in its work dir.
pub const WORK_DIR_LOCK: &str = "worker.lock";

pub struct WorkerArgs {
    pub manager: String,
    pub certs: PathBuf,
    pub name: Option<String>,
    pub host: String,
    pub cores: u32,
    pub memory_mb: u64,
    pub work_dir: PathBuf,
    pub conf: Vec<(String, String)>,
}

pub fn run_worker(args: WorkerArgs) -> ExitCode {
    let (conf, creds, options) =
        match prepare(&args.conf, &args.certs, args.name.as_deref(), Role::Worker) {
            Ok(prepared) => prepared,
            Err(e) => return fail(e),
        };
    // Peers dial this worker's executors and drivers at --host and check
    // that its certificate names it: better refused now than every fetch.
    if let Err(e) = ember_certs::check_names_host(
        &args.certs,
        &creds.identity.name,
        &creds,
        "--host",
        &args.host,
    ) {
        return fail(e.to_string());
    }
    let (manager_host, manager_port) = match ember_session::setup::split_host_port(&args.manager) {
        Ok(hp) => hp,
        Err(e) => return fail(format!("--cluster-manager: {e}")),
    };
    let manager_addr = match resolve(&manager_host, manager_port) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let bind = match resolve(&args.host, 0) {
        Ok(a) => a,
        Err(e) => return fail(format!("--host: {e}")),
    };
    let work_dir = match owner_only::create_dir(&args.work_dir)
        .and_then(|()| std::path::absolute(&args.work_dir))
    {
        Ok(d) => d,
        Err(e) => {
            return fail(format!(
                "cannot use work dir {}: {e}",
                args.work_dir.display()
            ));
        }
    };
    // One worker per work dir, as one manager per state dir: two would
    // mix their children's files and serve each other's logs.
    let _work_dir_lock = match owner_only::lock_dir(&work_dir, WORK_DIR_LOCK) {
        Ok(Ok(lock)) => lock,
        Ok(Err(holder)) => {
            let holder = holder
                .map(|pid| format!(" (PID {pid})"))
                .unwrap_or_default();
            return fail(format!(
                "work dir {} is in use by another worker{holder}; give each worker its own --work-dir",
                work_dir.display()
            ));
        }
        Err(e) => {
            return fail(format!("cannot lock work dir {}: {e}", work_dir.display()));
        }
    };
    let certs = std::path::absolute(&args.certs).unwrap_or(args.certs.clone());
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot find the ember binary: {e}")),
    };
    let cert_name = creds.identity.name.clone();
    let system = System::new();
    let code = system.block_on(async move {
        let node = match Node::start(&creds, bind, options) {
            Ok(n) => n,
            Err(e) => return Err(format!("cannot start the worker's node: {e}")),
        };
        let worker = Worker::new(WorkerSpec {
            node: node.clone(),
            manager: NodeContact {
                node: ember_transport::NodeId(String::new()),
                addr: manager_addr,
                host: manager_host,
            },
            host: args.host.clone(),
            cores: args.cores,
            memory_mb: args.memory_mb,
            work_dir,
            launcher: Box::new(ProcessLauncher { program }),
            certs,
            cert_name,
            conf: conf.pairs(),
            retry: conf.duration(WORKER_RETRY_INTERVAL),
            stops_system: true,
        })
        .start();
        errln!(
            "worker {} ({} cores, {} MB) registering with {}",
            node.id(),
            args.cores,
            args.memory_mb,
            args.manager
        );
        let stop = worker.clone();
        actix::spawn(async move {
            interrupted().await;
            stop.do_send(StopWorker);
        });
        Ok(node)
    });
    match code {
        Ok(node) => {
            let exit = system.run_with_code();
            // Tell the manager at once that this worker is leaving.
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(runtime) => runtime.block_on(node.close(Duration::from_millis(200))),
                Err(_) => node.shutdown(),
            }
            match exit {
                Ok(0) => ExitCode::SUCCESS,
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(e) => fail(e.to_string()),
            }
        }
        Err(e) => fail(e),
    }
}

/// Hears the executor's end and ends the process with it.
struct ExitWatcher {
    done: Option<tokio::sync::oneshot::Sender<ExitReason>>,
}

impl Actor for ExitWatcher {
    type Context = Context<Self>;
}

impl Handler<PeerDown> for ExitWatcher {
    type Result = ();

    fn handle(&mut self, msg: PeerDown, _ctx: &mut Context<Self>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(msg.reason);
        }
    }
}

/// `--role executor`: started by a worker, with its spec on stdin; plans
/// resolve the application's `functions` by name.
pub fn run_executor(functions: &Functions) -> ExitCode {
    let spec = match read_spec(&mut std::io::stdin().lock()) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let ChildSpec::Executor {
        node: ns,
        app,
        executor,
        cores,
        memory_mb,
        driver,
        secret,
    } = spec
    else {
        return fail("the launch spec is not an executor's".into());
    };
    // The worker started this executor in its work dir, with the
    // application's side files in it.
    if let Ok(dir) = std::env::current_dir() {
        ember_engine::files::set_root(&dir);
    }
    let conf = match conf_from(&ns.conf) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let creds = match ember_certs::load_node(&ns.certs, &ns.cert_name) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    if let Err(e) = in_force(&ns.certs, &ns.cert_name, &creds) {
        return fail(e);
    }
    let options = match conf.node_options() {
        Ok(o) => o,
        Err(e) => return fail(e.to_string()),
    };
    let bind = match resolve(&ns.host, 0) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let threads = usize::try_from(cores).unwrap_or(1).max(1);
    let tasks = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("ember-task")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start task threads: {e}")),
    };
    let pool = TaskPool::Runtime(tasks.handle().clone());
    // Spill and shuffle files go to the work dir, which the worker removes
    // with the application.
    let work_dir = std::env::current_dir().ok();
    let settings = match ExecutorSettings::from_conf(&conf, threads, memory_mb, work_dir) {
        Ok(settings) => settings,
        Err(e) => return fail(e),
    };
    let system = System::new();
    let app_name = app.clone();
    let code = system.block_on(async move {
        let node = Node::start_instance(&creds, Some(&ns.instance), bind, options)
            .map_err(|e| format!("cannot start the executor's node: {e}"))?;
        let addr = node.local_addr().map_err(|e| e.to_string())?;
        reach_driver(&node, &driver, &conf).await?;
        let (done, exited) = tokio::sync::oneshot::channel();
        let on_exit = ExitWatcher { done: Some(done) }.start().recipient();
        let remote = start_executor(ExecutorStart {
            contact: NodeContact {
                node: node.id().clone(),
                addr,
                host: ns.host.clone(),
            },
            node: node.clone(),
            executor,
            driver,
            secret,
            pool,
            settings,
            functions: functions.clone(),
            on_exit,
        })?;
        tracing::info!(app = %app_name, executor, "executor started");
        // The link to the worker: its end closes our stdin.
        let executor_addr = remote.executor.clone();
        let _ = std::thread::Builder::new()
            .name("ember-worker-link".into())
            .spawn(move || {
                let mut sink = [0u8; 256];
                let mut stdin = std::io::stdin().lock();
                while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
                tracing::warn!("the worker is gone; executor exiting");
                executor_addr.do_send(ExecutorMessage::Stop);
            });
        let reason = exited.await.unwrap_or(ExitReason::Normal);
        node.close(Duration::from_millis(100)).await;
        drop(remote);
        Ok(reason)
    });
    tasks.shutdown_background();
    match code {
        Ok(ExitReason::Normal) => ExitCode::SUCCESS,
        Ok(reason) => {
            errln!("executor {executor} of {app} exiting: {reason}");
            ExitCode::from(3)
        }
        Err(e) => fail(e),
    }
}

/// An executor's settings from its application's configuration.
pub struct ExecutorSettings {
    pub threads: usize,
    pub session_config: datafusion::prelude::SessionConfig,
    pub faults: Arc<Faults>,
    pub memory: ember_engine::memory::MemorySettings,
    /// On a simulated host (see `RemoteExecutorSpec::simulated`).
    pub simulated: bool,
    /// Read shuffle files of executors on this host from disk
    /// (`ember.shuffle.readHostLocalDisk`).
    pub read_host_local: bool,
}

impl ExecutorSettings {
    /// Refuses bad `datafusion.*` settings and faults before anything
    /// starts. Tasks share `memory_mb` (none if 0) and spill into a fresh
    /// directory in `spill_dir` (the system's temporary directory if
    /// `None`), unless `datafusion.runtime.*` settings say otherwise.
    pub fn from_conf(
        conf: &EmberConf,
        threads: usize,
        memory_mb: u64,
        spill_dir: Option<std::path::PathBuf>,
    ) -> Result<Self, String> {
        let mut session_config = ember_engine::session::planning_config(threads);
        conf.apply_datafusion_options(&mut session_config)
            .map_err(|e| format!("the application's datafusion.* settings: {e}"))?;
        let faults = Arc::new(Faults::from_conf(conf).map_err(|e| e.to_string())?);
        let limit = (memory_mb > 0)
            .then(|| usize::try_from(memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX));
        let mut memory = conf
            .memory_settings(limit, "--executor-memory")
            .map_err(|e| e.to_string())?;
        if memory.temp_directory.is_none() {
            memory.temp_directory = spill_dir;
        }
        Ok(Self {
            threads,
            session_config,
            faults,
            memory,
            simulated: false,
            read_host_local: conf.flag(ember_actors::config::SHUFFLE_READ_HOST_LOCAL),
        })
    }
}

/// Connects an executor's node to its driver, within
/// `ember.executor.driverConnectTimeout`.
pub async fn reach_driver(
    node: &Node,
    driver: &NodeContact,
    conf: &EmberConf,
) -> Result<(), String> {
    let bound = conf.duration(EXECUTOR_CONNECT_TIMEOUT);
    match tokio::time::timeout(bound, node.connect(driver.addr, &driver.host)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot reach the driver at {}: {e}", driver.addr)),
        Err(_) => Err(format!(
            "the driver at {} did not answer within {bound:?}",
            driver.addr
        )),
    }
}

/// What an executor runs with, once its node reaches its driver.
pub struct ExecutorStart {
    pub node: Node,
    pub contact: NodeContact,
    pub executor: u32,
    pub driver: NodeContact,
    pub secret: String,
    pub pool: TaskPool,
    pub settings: ExecutorSettings,
    pub functions: Functions,
    pub on_exit: Recipient<PeerDown>,
}

/// Starts an executor process's actors: the same in a process a worker
/// started and on a simulated host.
pub fn start_executor(start: ExecutorStart) -> Result<RemoteExecutor, String> {
    // Simulated hosts keep shuffle output in memory (see
    // `RemoteExecutorSpec::simulated`); real executors write it to disk.
    let memory = start
        .settings
        .memory
        .executor(start.settings.threads, start.settings.simulated)
        .map_err(|e| format!("cannot set up the executor's memory and spill space: {e}"))?;
    start_remote_executor(RemoteExecutorSpec {
        node: start.node,
        contact: start.contact,
        executor: ExecutorId(start.executor.to_string()),
        slots: start.settings.threads,
        driver: start.driver,
        secret: start.secret,
        pool: start.pool,
        session_config: start.settings.session_config,
        functions: start.functions,
        faults: start.settings.faults,
        memory: Arc::new(memory),
        simulated: start.settings.simulated,
        read_host_local: start.settings.read_host_local,
        on_exit: start.on_exit,
    })
}
