//! An application's entry point in its own process (Spark's SparkSession):
//! it plans SQL on DataFusion, cuts the plan into stages and hands them to the
//! driver, which runs them on executors.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, WriteOp};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use ember_actors::cluster_app::{ClusterApp, ClusterAppSpec};
use ember_actors::cluster_manager::AppRequest;
use ember_actors::config::{
    BROADCAST_THRESHOLD, DRIVER_MEMORY, EXECUTOR_WAIT, LOCAL_EXECUTOR_WAIT, SHUFFLE_PARTITIONS,
};
use ember_actors::driver::ReleaseResults;
use ember_actors::driver::{Driver, SubmitJob};
use ember_actors::faults::Faults;
use ember_actors::remote::NodeContact;
use ember_actors::{
    EmberConf, JobError, JobListener, JobOutput, JobRows, LocalCluster, LocalClusterSpec,
};
use ember_engine::balance::balance_parquet_scans;
use ember_engine::session::{planning_config, planning_context};
use ember_engine::subquery::lift_scalar_subqueries;
use ember_engine::{
    Committed, EngineError, Functions, StageGraph, StagePlanner, StagedOutput, TaskAttempt,
    stage_file_output,
};
use ember_transport::Node;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use crate::master::Master;
use crate::streaming::{StreamFaults, StreamSource};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Plan(#[from] DataFusionError),
    #[error("{0}")]
    Job(#[from] JobError),
    #[error("the driver is gone: {0}")]
    DriverGone(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("table {table}: LOCATION '{location}' does not exist; fix the path or create it first")]
    MissingLocation { table: String, location: String },
    #[error("table {table}: LOCATION '{location}': {why}")]
    MissingSideFile {
        table: String,
        location: String,
        why: String,
    },
    #[error("{0}")]
    Output(#[from] ember_engine::EngineError),
    #[error("{0}")]
    Config(#[from] ember_actors::ConfigError),
    #[error("cannot start the local runtime: {0}")]
    Start(#[from] std::io::Error),
    #[error("{0}")]
    Cluster(String),
    #[error(
        "application {app} got no executors within {waited:?}: {why}; ask for fewer cores or \
         less memory per executor, add workers, or wait longer with \
         --conf ember.scheduler.noExecutorTimeout=10m"
    )]
    NoExecutors {
        app: String,
        waited: Duration,
        why: String,
    },
    #[error(
        "application {app} got no executors within {waited:?}: they run the application binary \
         {binary}, and none registered with this driver ({why}); a program that is not an Ember \
         application (its main does not hand over to ember::App::run) never answers its launch \
         spec; submit the application's own binary"
    )]
    BinaryNeverRegistered {
        app: String,
        waited: Duration,
        binary: String,
        why: String,
    },
}

/// How to start a session.
#[derive(Clone)]
pub struct SessionOptions {
    pub master: Master,
    pub conf: EmberConf,
    pub listener: Option<Arc<dyn JobListener>>,
    /// The application's own functions, registered with the session's
    /// planner (and, through the application's binary, on its executors).
    pub functions: Functions,
    /// How to join a cluster master (ignored by local masters).
    pub cluster: Option<ClusterSettings>,
    /// Side files (`--files`): put in every executor's work dir, and read
    /// by SQL as `files:///NAME` and by code through
    /// `ember_engine::files::path`.
    pub files: Vec<PathBuf>,
}

/// What an application on a cluster needs besides the master URL.
#[derive(Clone)]
pub struct ClusterSettings {
    /// Where the certificates are, and which one to use.
    pub certs: PathBuf,
    pub cert_name: Option<String>,
    /// The certificate's role: client for `ember submit`, worker for a
    /// cluster-mode driver a worker started.
    pub role: ember_certs::Role,
    /// This process's instance of the certificate's node.
    pub instance: String,
    /// The host executors reach this driver at.
    pub driver_host: String,
    pub request: AppRequest,
    /// The submission this driver runs, in cluster mode.
    pub submission: Option<String>,
    /// Client mode: the program this application's executors run, uploaded
    /// to the manager first; `None`: the workers' own `ember`.
    pub binary: Option<PathBuf>,
}

enum Backend {
    Local(LocalCluster),
    Cluster(ClusterApp),
}

/// What a statement produced: its rows gathered ([`JobOutput`], from
/// [`Session::execute`]) or as a stream ([`JobRows`], from
/// [`Session::execute_stream`]).
#[derive(Debug)]
pub enum StatementOutcome<R = JobOutput> {
    /// A query's (or COPY's) rows.
    Rows(R),
    /// The stage graph of an `EXPLAIN`.
    Explain(String),
    /// A statement with no rows (CREATE, SET, DROP, ...).
    Done,
}

/// Whether query statements run or only show their stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Run,
    ExplainOnly,
}

pub struct Session {
    ctx: SessionContext,
    /// Shared with the session's background streaming queries: stage ids
    /// are the application's, whichever query cut the stages.
    planner: Arc<std::sync::Mutex<StagePlanner>>,
    backend: Arc<Backend>,
    /// File outputs committed so far: a statement's place among them names
    /// its output the same way in every attempt of a submission.
    file_outputs: usize,
    committer: Arc<dyn OutputCommitter>,
    /// The links to this driver's side files, removed with the session.
    files: Option<SideFilesHere>,
    /// Streams declared with `CREATE UNBOUNDED EXTERNAL TABLE`, by name.
    pub(crate) streams: std::collections::BTreeMap<String, StreamSource>,
    pub(crate) stream_faults: StreamFaults,
    /// Set by the canceller: a running streaming query stops.
    pub(crate) stop_streams: Arc<std::sync::atomic::AtomicBool>,
    /// The function a `foreach_batch` streaming sink hands batches to.
    pub(crate) foreach_batch: Option<crate::streaming::ForeachBatch>,
    /// Socket sources' connections, by source name, kept across queries.
    pub(crate) sockets:
        std::collections::BTreeMap<String, Arc<std::sync::Mutex<crate::streaming::SocketLines>>>,
    /// The job group this session's jobs run in: a background streaming
    /// query's name, `None` for the statements in front.
    pub(crate) job_group: Option<String>,
    /// A background query's link to the session that started it.
    pub(crate) parent: Option<crate::streaming::Parent>,
    /// Whether file outputs are claimed for the submission (so a restarted
    /// cluster-mode driver does not write them twice); streaming batches
    /// are not: their checkpoint says what was written.
    pub(crate) claim_outputs: bool,
    /// Streaming queries started in the background, by name.
    pub(crate) background: crate::streaming::Background,
    /// Kafka topics streaming queries read (by source name) and write.
    pub(crate) kafka: std::collections::BTreeMap<String, Arc<crate::streaming::KafkaTopic>>,
}

/// A driver's side files on the machine it was submitted from: a
/// directory of links to the files given, the root `files:///NAME` reads
/// from in this process, as an executor's work dir is in its own.
struct SideFilesHere {
    dir: tempfile::TempDir,
    /// The files given, each by its name.
    named: Vec<(String, PathBuf)>,
}

impl SideFilesHere {
    fn link(paths: &[PathBuf]) -> Result<Option<Self>, SessionError> {
        if paths.is_empty() {
            return Ok(None);
        }
        let named = ember_client::name_side_files(paths).map_err(SessionError::Unsupported)?;
        let dir = tempfile::Builder::new()
            .prefix("ember-files-")
            .tempdir()
            .map_err(SessionError::Start)?;
        for (name, path) in &named {
            let target = std::path::absolute(path).map_err(SessionError::Start)?;
            std::os::unix::fs::symlink(&target, dir.path().join(name))
                .map_err(SessionError::Start)?;
        }
        ember_engine::files::set_root(dir.path());
        Ok(Some(Self { dir, named }))
    }
}

impl Drop for SideFilesHere {
    fn drop(&mut self) {
        if ember_engine::files::root().as_deref() == Some(self.dir.path()) {
            ember_engine::files::clear_root();
        }
    }
}

/// How a succeeded job's staged files become its output.
pub trait OutputCommitter: Send + Sync {
    /// Commits `staged` with the attempts the job `used` (one per
    /// partition). With a `claim` (a cluster-mode submission's output, see
    /// [`output_claim`]) the output is committed at most once whatever
    /// number of driver attempts the submission takes.
    fn commit(
        &self,
        staged: StagedOutput,
        used: &[TaskAttempt],
        claim: Option<&str>,
    ) -> Result<Committed, EngineError>;
}

/// The output commit every session uses unless told otherwise: the used
/// attempts' files, once per claim.
pub struct CommitUsedAttempts;

impl OutputCommitter for CommitUsedAttempts {
    fn commit(
        &self,
        staged: StagedOutput,
        used: &[TaskAttempt],
        claim: Option<&str>,
    ) -> Result<Committed, EngineError> {
        match claim {
            Some(claim) => staged.commit_once(used, claim),
            None => staged.commit(used).map(|()| Committed::Now),
        }
    }
}

/// The claim of a cluster-mode submission's `n`th file output (counted
/// from 1, in statement order): the same in every driver attempt.
pub fn output_claim(submission: &str, n: usize) -> String {
    format!("{submission}.{n}")
}

impl Session {
    /// Starts the driver and its executors and waits until the executors
    /// have registered. Must run inside an actix System.
    pub async fn start(options: SessionOptions) -> Result<Self, SessionError> {
        // A malformed fault is refused before anything starts.
        let faults = Faults::from_conf(&options.conf)?;
        if let Master::Cluster { host, port } = &options.master {
            return Self::start_on_cluster(host, *port, options.clone()).await;
        }
        let files = SideFilesHere::link(&options.files)?;
        let slots = options.master.threads();
        let config = session_config(&options.conf, slots)?;
        // The tasks of every executor thread share the process's budget.
        let memory = Arc::new(local_memory(&options.conf)?.executor(slots, true)?);
        let runtime = Arc::clone(memory.base());
        let cluster = LocalCluster::start(LocalClusterSpec {
            threads: slots,
            // As in Spark, local mode takes its attempts from local[N,F];
            // ember.task.maxFailures is for cluster masters.
            scheduler: options.conf.scheduler(options.master.max_failures()),
            faults: Arc::new(faults),
            listener: options.listener,
            session_config: config.clone(),
            memory,
        })?;
        let wait = options.conf.duration(LOCAL_EXECUTOR_WAIT);
        if !cluster.wait_for_executors(wait).await {
            return Err(SessionError::DriverGone(format!(
                "its executors did not register within {wait:?} ({LOCAL_EXECUTOR_WAIT})"
            )));
        }
        let ctx = planning_context(config, Some(runtime));
        options.functions.register(&ctx);
        crate::streaming::register_functions(&ctx);
        ember_engine::files::register(&ctx);
        let mut session = Self::over(ctx, Backend::Local(cluster));
        session.files = files;
        session.stream_faults = stream_faults(&options.conf);
        Ok(session)
    }

    async fn start_on_cluster(
        host: &str,
        port: u16,
        options: SessionOptions,
    ) -> Result<Self, SessionError> {
        let settings = options.cluster.as_ref().ok_or_else(|| {
            SessionError::Cluster("a cluster master needs certificates (--certs DIR)".into())
        })?;
        let creds = crate::setup::pick_credentials(
            &settings.certs,
            settings.cert_name.as_deref(),
            settings.role,
        )
        .map_err(SessionError::Cluster)?;
        // Executors dial this driver at --driver-host and check that its
        // certificate names it: better refused now than every task.
        ember_certs::check_names_host(
            &settings.certs,
            &creds.identity.name,
            &creds,
            "--driver-host",
            &settings.driver_host,
        )
        .map_err(|e| SessionError::Cluster(e.to_string()))?;
        let node_options = options
            .conf
            .node_options()
            .map_err(|e| SessionError::Cluster(e.to_string()))?;
        let bind =
            crate::setup::resolve(&settings.driver_host, 0).map_err(SessionError::Cluster)?;
        let manager_addr = crate::setup::resolve(host, port).map_err(SessionError::Cluster)?;
        let node = Node::start_instance(&creds, Some(&settings.instance), bind, node_options)
            .map_err(|e| SessionError::Cluster(format!("cannot start the driver's node: {e}")))?;
        let manager =
            match ember_actors::cluster_app::reach_manager(&node, manager_addr, host).await {
                Ok(manager) => manager,
                Err(e) => {
                    node.close(Duration::from_millis(100)).await;
                    return Err(SessionError::Cluster(e.to_string()));
                }
            };
        Self::join(node, manager, options).await
    }

    /// Starts the application on a cluster through `node`, a node the
    /// caller started with its certificate, whose manager it has reached:
    /// asks for executors (uploading a client-mode application's binary
    /// first) and waits for them as [`Session::start`] does. The
    /// certificate settings of `options.cluster` are not read again.
    pub async fn join(
        node: Node,
        manager: NodeContact,
        options: SessionOptions,
    ) -> Result<Self, SessionError> {
        let settings = options.cluster.ok_or_else(|| {
            SessionError::Cluster("a cluster master needs certificates (--certs DIR)".into())
        })?;
        let addr = node
            .local_addr()
            .map_err(|e| SessionError::Cluster(e.to_string()))?;
        let mut request = settings.request.clone();
        // Executors run with the application's settings.
        request.conf = options.conf.pairs();
        // A client-mode driver ships what its executors need: its
        // application binary and side files. A cluster-mode one was
        // launched with them.
        let shipped = async {
            if settings.role != ember_certs::Role::Client {
                return Ok(None);
            }
            if let Some(path) = &settings.binary {
                let uploaded = ember_client::upload_binary(&node, &manager.node, path)
                    .await
                    .map_err(|e| SessionError::Cluster(e.to_string()))?;
                errln!("{}", uploaded.report(path));
                request.binary = Some(uploaded.binary);
            }
            let Some(here) = SideFilesHere::link(&options.files)? else {
                return Ok(None);
            };
            let (held, reports) =
                ember_client::upload_side_files(&node, &manager.node, &here.named)
                    .await
                    .map_err(|e| SessionError::Cluster(e.to_string()))?;
            for report in reports {
                errln!("{report}");
            }
            request.files = held;
            Ok(Some(here))
        };
        let files = match shipped.await {
            Ok(files) => files,
            Err(e) => {
                node.close(Duration::from_millis(100)).await;
                return Err(e);
            }
        };
        let scheduler = options.conf.scheduler(options.conf.task_max_failures());
        // The bound a job waits with no executor bounds the first wait too.
        let give_up = scheduler.no_executor_timeout;
        let app = ClusterApp::start(ClusterAppSpec {
            contact: NodeContact {
                node: node.id().clone(),
                addr,
                host: settings.driver_host.clone(),
            },
            node,
            manager,
            request: request.clone(),
            submission: settings.submission.clone(),
            scheduler,
            listener: options.listener,
        })
        .await
        .map_err(|e| SessionError::Cluster(e.to_string()))?;
        tracing::info!(app = %app.id(), "application registered");
        let wait = options.conf.duration(EXECUTOR_WAIT);
        let wanted = request.max_cores.unwrap_or(request.executor_cores).max(1) as usize;
        let slots = match wait_for_slots(&app, wanted, wait, give_up, request.binary.as_ref()).await
        {
            Ok(slots) => slots,
            Err(e) => {
                // Leave no application behind waiting for executors.
                app.stop(Some(e.to_string())).await;
                return Err(e);
            }
        };
        let config = session_config(&options.conf, slots.max(1))?;
        let ctx = planning_context(config, None);
        options.functions.register(&ctx);
        crate::streaming::register_functions(&ctx);
        ember_engine::files::register(&ctx);
        let mut session = Self::over(ctx, Backend::Cluster(app));
        session.files = files;
        session.stream_faults = stream_faults(&options.conf);
        Ok(session)
    }

    fn over(ctx: SessionContext, backend: Backend) -> Self {
        Self {
            ctx,
            planner: Arc::new(std::sync::Mutex::new(StagePlanner::new())),
            backend: Arc::new(backend),
            file_outputs: 0,
            committer: Arc::new(CommitUsedAttempts),
            files: None,
            streams: std::collections::BTreeMap::new(),
            stream_faults: StreamFaults::default(),
            stop_streams: Arc::default(),
            foreach_batch: None,
            sockets: std::collections::BTreeMap::new(),
            job_group: None,
            parent: None,
            claim_outputs: true,
            background: crate::streaming::Background::default(),
            kafka: std::collections::BTreeMap::new(),
        }
    }

    /// A session for a background streaming query: the same application
    /// and planner, its own catalog (a copy of this one's, so binding the
    /// query's sources each batch does not show in front), its jobs in the
    /// query's group.
    pub(crate) async fn sibling(
        &self,
        group: &str,
        parent: crate::streaming::Parent,
    ) -> Result<Self, SessionError> {
        let ctx = forked_context(&self.ctx).await?;
        Ok(Self {
            ctx,
            planner: Arc::clone(&self.planner),
            backend: Arc::clone(&self.backend),
            file_outputs: 0,
            committer: Arc::clone(&self.committer),
            files: None,
            streams: self.streams.clone(),
            stream_faults: self.stream_faults,
            stop_streams: Arc::default(),
            foreach_batch: None,
            sockets: self.sockets.clone(),
            job_group: Some(group.to_string()),
            parent: Some(parent),
            claim_outputs: false,
            background: crate::streaming::Background::default(),
            kafka: self.kafka.clone(),
        })
    }

    /// Replaces how file output is committed (the simulations inject
    /// deliberate bugs here to prove their checks find them).
    pub fn set_committer(&mut self, committer: Arc<dyn OutputCommitter>) {
        self.committer = committer;
    }

    /// The cluster-mode submission this session's driver runs, if any.
    fn submission(&self) -> Option<String> {
        match &*self.backend {
            Backend::Cluster(app) => app.submission().map(ToString::to_string),
            Backend::Local(_) => None,
        }
    }

    /// The application's id on its cluster (none in local mode).
    pub fn app_id(&self) -> Option<&str> {
        match &*self.backend {
            Backend::Local(_) => None,
            Backend::Cluster(app) => Some(app.id()),
        }
    }

    /// The application's driver actor.
    pub fn driver(&self) -> &Addr<Driver> {
        match &*self.backend {
            Backend::Local(cluster) => cluster.driver(),
            Backend::Cluster(app) => app.driver(),
        }
    }

    /// Cancels everything running from elsewhere (a signal handler): the
    /// jobs' tasks are killed and the statement running fails with
    /// `reason`; streaming queries stop too, in front or in the
    /// background, at once between batches.
    pub fn canceller(&self) -> impl Fn(&str) + 'static {
        let driver = self.driver().clone();
        let stop = Arc::clone(&self.stop_streams);
        move |reason: &str| {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            driver.do_send(ember_actors::driver::CancelJobs {
                reason: reason.to_string(),
                scope: ember_actors::driver::CancelScope::All,
            })
        }
    }

    /// Cancels the statement running in front only (Ctrl-C in the shell):
    /// background streaming queries go on.
    pub fn statement_canceller(&self) -> impl Fn(&str) + 'static {
        let driver = self.driver().clone();
        move |reason: &str| {
            driver.do_send(ember_actors::driver::CancelJobs {
                reason: reason.to_string(),
                scope: ember_actors::driver::CancelScope::Group(None),
            })
        }
    }

    /// Tells the cluster manager the application's streaming queries.
    pub(crate) fn report_to_cluster(
        &self,
        streams: Vec<ember_actors::cluster_manager::StreamStatus>,
    ) {
        if let Backend::Cluster(app) = &*self.backend {
            app.report_streams(streams);
        }
    }

    /// The application's executors, and with `include_removed` those it
    /// has lost too; none once the driver has stopped.
    pub async fn executors(
        &self,
        include_removed: bool,
    ) -> Vec<ember_actors::driver::ExecutorSummary> {
        self.driver()
            .send(ember_actors::driver::ListExecutors { include_removed })
            .await
            .unwrap_or_default()
    }

    /// DataFusion's context: register tables and functions here.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The local runtime, in local mode.
    pub fn local(&self) -> Option<&LocalCluster> {
        match &*self.backend {
            Backend::Local(cluster) => Some(cluster),
            Backend::Cluster(_) => None,
        }
    }

    /// Runs one SQL statement.
    pub async fn execute(&mut self, sql: &str) -> Result<StatementOutcome, SessionError> {
        self.execute_in(sql, Mode::Run).await
    }

    /// Runs one SQL statement; in `ExplainOnly` mode queries are planned and
    /// their stage graph returned instead of running them.
    pub async fn execute_in(
        &mut self,
        sql: &str,
        mode: Mode,
    ) -> Result<StatementOutcome, SessionError> {
        Ok(match self.execute_stream(sql, mode).await? {
            StatementOutcome::Rows(rows) => StatementOutcome::Rows(rows.collect().await?),
            StatementOutcome::Explain(text) => StatementOutcome::Explain(text),
            StatementOutcome::Done => StatementOutcome::Done,
        })
    }

    /// [`Session::execute_in`], with a query's rows as a stream: they are
    /// read from the executors as they are taken, so a result of any size
    /// passes through a few batches of memory.
    pub async fn execute_stream(
        &mut self,
        sql: &str,
        mode: Mode,
    ) -> Result<StatementOutcome<JobRows>, SessionError> {
        if let Some(query) = crate::streaming::parse_start(sql)? {
            if mode == Mode::ExplainOnly {
                return Err(SessionError::Unsupported(
                    "EXPLAIN of a streaming query: EXPLAIN its SELECT instead".to_string(),
                ));
            }
            let start: futures::future::LocalBoxFuture<'_, Result<_, SessionError>> =
                Box::pin(self.start_streaming_query(query));
            start.await?;
            return Ok(StatementOutcome::Done);
        }
        if let Some(control) = crate::streaming::parse_control(sql)? {
            use crate::streaming::Control;
            match control {
                Control::Show => {
                    let (schema, batch) = self.show_streaming_queries()?;
                    return Ok(StatementOutcome::Rows(JobRows::in_memory(
                        schema,
                        vec![batch],
                    )));
                }
                Control::Stop(name) => self.stop_streaming_query(&name).await?,
                Control::Await(name, limit) => self.await_streaming_query(&name, limit).await?,
            }
            return Ok(StatementOutcome::Done);
        }
        let state = self.ctx.state();
        let plan = match state.create_logical_plan(sql).await {
            Ok(plan) => plan,
            Err(e) => return Err(self.explain_stream_misuse(e)),
        };
        match &plan {
            LogicalPlan::Explain(explain) => {
                let physical = state.create_physical_plan(&explain.plan).await?;
                let physical = balance_parquet_scans(physical, &state).await?;
                return Ok(StatementOutcome::Explain(self.explain(physical)?));
            }
            LogicalPlan::Analyze(_) => {
                return Err(SessionError::Unsupported(
                    "EXPLAIN ANALYZE is not supported yet; EXPLAIN shows the stage graph"
                        .to_string(),
                ));
            }
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) if create.unbounded => {
                let Some(source) = StreamSource::declare(create)? else {
                    return Ok(StatementOutcome::Done);
                };
                self.streams
                    .insert(create.name.to_string().to_ascii_lowercase(), source);
                return Ok(StatementOutcome::Done);
            }
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)) => {
                if let Some(location) = create.locations.iter().find(|l| is_missing_local_path(l)) {
                    return Err(SessionError::MissingLocation {
                        table: create.name.to_string(),
                        location: location.clone(),
                    });
                }
                for location in &create.locations {
                    if let Some(name) = side_file_name(location) {
                        ember_engine::files::path(name).map_err(|why| {
                            SessionError::MissingSideFile {
                                table: create.name.to_string(),
                                location: location.clone(),
                                why,
                            }
                        })?;
                    }
                }
                self.ctx.execute_logical_plan(plan).await?.collect().await?;
                return Ok(StatementOutcome::Done);
            }
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => {
                // Catalog changes happen here, in the driver's session.
                self.ctx.execute_logical_plan(plan).await?.collect().await?;
                return Ok(StatementOutcome::Done);
            }
            _ => {}
        }
        let writes_files = writes_files(&plan);
        let physical = self
            .ctx
            .execute_logical_plan(plan)
            .await?
            .create_physical_plan()
            .await?;
        let physical = balance_parquet_scans(physical, &self.ctx.state()).await?;
        if mode == Mode::ExplainOnly {
            return Ok(StatementOutcome::Explain(self.explain(physical)?));
        }
        let physical = self.run_subqueries(physical).await?;
        if !writes_files {
            return Ok(StatementOutcome::Rows(self.run_job(physical).await?));
        }
        // Tasks write into a staging directory; only the attempts the job
        // used reach the destination, and only once it has succeeded.
        let (physical, staged) = stage_file_output(physical)?;
        match self.run_job(physical).await {
            Ok(output) => {
                let attempts: Vec<TaskAttempt> =
                    output.committed().iter().map(|&id| id.into()).collect();
                self.file_outputs += 1;
                // A cluster-mode submission may run in more than one driver
                // attempt; its output is committed by the first only.
                let claim = self
                    .submission()
                    .filter(|_| self.claim_outputs)
                    .map(|submission| output_claim(&submission, self.file_outputs));
                let committed = self.committer.commit(staged, &attempts, claim.as_deref())?;
                if committed == Committed::Earlier {
                    tracing::warn!(
                        claim = claim.as_deref().unwrap_or_default(),
                        "an earlier attempt of this submission committed this output; it is not written again"
                    );
                }
                Ok(StatementOutcome::Rows(output))
            }
            Err(e) => {
                if let Err(cleanup) = staged.abort() {
                    tracing::warn!(error = %cleanup, "could not remove a failed job's staged output");
                }
                Err(e)
            }
        }
    }

    /// Runs query `sql` as a job with `wrap` applied to its physical plan
    /// (a streaming batch's state merge goes on top), and returns its rows.
    pub(crate) async fn rows_of_wrapped(
        &mut self,
        sql: &str,
        wrap: impl FnOnce(Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>, SessionError>,
    ) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>, SessionError> {
        let physical = self.ctx.sql(sql).await?.create_physical_plan().await?;
        let physical = balance_parquet_scans(physical, &self.ctx.state()).await?;
        let physical = self.run_subqueries(wrap(physical)?).await?;
        Ok(self.run_job(physical).await?.collect().await?.batches)
    }

    /// A batch statement that names a stream fails as a missing table:
    /// the error says what a stream is for.
    fn explain_stream_misuse(&self, error: DataFusionError) -> SessionError {
        let text = error.to_string();
        let named = self.streams.keys().find(|name| {
            text.contains(&format!("'{name}'")) || text.contains(&format!(".{name}'"))
        });
        match named {
            Some(name) if text.contains("not found") => SessionError::Unsupported(format!(
                "{name} is a stream (CREATE UNBOUNDED EXTERNAL TABLE): read it in START STREAMING \
                 QUERY ... AS SELECT ... FROM {name}, or declare the same files as a table \
                 without UNBOUNDED to query them once"
            )),
            _ => SessionError::Plan(error),
        }
    }

    /// Cuts a physical plan into stages.
    pub fn stages(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<StageGraph, SessionError> {
        Ok(self
            .planner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .plan(plan)?)
    }

    /// The stage graphs a plan would run: those of its scalar subqueries
    /// (each a job of its own, run first), then its own.
    fn explain(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<String, SessionError> {
        let (plan, subqueries) = lift_scalar_subqueries(plan)?;
        let mut text = String::new();
        for (i, subquery) in subqueries.iter().enumerate() {
            let graph = self.explain(Arc::clone(&subquery.plan))?;
            text.push_str(&format!(
                "Scalar subquery {} (a job of its own, run first):\n",
                i + 1
            ));
            for line in graph.lines() {
                text.push_str("  ");
                text.push_str(line);
                text.push('\n');
            }
            text.push('\n');
        }
        let graph = self
            .planner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .plan(plan)?;
        text.push_str(&graph.to_string());
        Ok(text)
    }

    /// Runs a physical plan as one job on the executors, after the scalar
    /// subqueries it reads, each run first as a job of its own (as Spark
    /// does): their values then travel inside the plan as literals.
    pub async fn run(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<JobOutput, SessionError> {
        let plan = self.run_subqueries(plan).await?;
        Ok(self.run_job(plan).await?.collect().await?)
    }

    /// Runs the scalar subqueries of `plan` (and theirs, first) and returns
    /// the plan that reads their values.
    fn run_subqueries(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
    ) -> BoxFuture<'_, Result<Arc<dyn ExecutionPlan>, SessionError>> {
        Box::pin(async move {
            let (plan, subqueries) = lift_scalar_subqueries(plan)?;
            for subquery in subqueries {
                let output = self.run(Arc::clone(&subquery.plan)).await?;
                subquery.resolve(&output.batches)?;
            }
            Ok(plan)
        })
    }

    /// Runs a plan free of scalar subqueries as one job.
    async fn run_job(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<JobRows, SessionError> {
        let graph = self.stages(plan)?;
        let (reply, answer) = oneshot::channel();
        self.driver()
            .send(SubmitJob {
                graph,
                group: self.job_group.clone(),
                reply,
            })
            .await
            .map_err(|e| SessionError::DriverGone(e.to_string()))?;
        let result = answer
            .await
            .map_err(|_| SessionError::DriverGone("it stopped before answering".to_string()))??;
        let source = match &*self.backend {
            Backend::Local(cluster) => cluster.results(),
            Backend::Cluster(app) => app.results(),
        };
        let driver = self.driver().clone();
        let stage = result.stage;
        Ok(JobRows::new(result, Some(source), move || {
            driver.do_send(ReleaseResults(vec![stage]))
        }))
    }

    /// Stops the driver; returns whether every executor stopped with it.
    pub async fn stop(self) -> bool {
        self.stop_with(None).await
    }

    /// Stops the driver, telling a cluster how the application went.
    /// Background streaming queries stop first, each after its batch in
    /// progress.
    pub async fn stop_with(mut self, failure: Option<String>) -> bool {
        self.stop_background_queries().await;
        // What each executor held and spilled, for `-v` and for benchmarks;
        // nobody asks the driver when nobody would see the answer.
        let executors = if tracing::enabled!(tracing::Level::INFO) {
            self.executors(true).await
        } else {
            Vec::new()
        };
        for executor in executors {
            let usage = executor.usage;
            tracing::info!(
                executor = %executor.id,
                spilled_bytes = usage.spilled_bytes,
                peak_rss = usage.peak_rss,
                memory_limit = usage.memory_limit,
                "executor usage"
            );
        }
        let driver = self.driver().clone();
        match Arc::try_unwrap(self.backend) {
            Ok(Backend::Local(cluster)) => cluster.stop(Duration::from_secs(5)).await,
            Ok(Backend::Cluster(app)) => {
                app.stop(failure).await;
                true
            }
            Err(_) => {
                // A background query that did not stop still holds it.
                tracing::warn!("a streaming query still runs; stopping the driver under it");
                let _ = driver.send(ember_actors::driver::StopDriver).await;
                false
            }
        }
    }
}

/// A local application's memory budget: `--driver-memory`
/// (`ember.driver.memory`), by default half of the machine's memory, shared
/// by all its tasks; spill files go to a temporary directory removed at
/// exit unless `datafusion.runtime.temp_directory` says otherwise.
fn local_memory(conf: &EmberConf) -> Result<ember_engine::memory::MemorySettings, SessionError> {
    let limit = conf.size(DRIVER_MEMORY).or_else(|| {
        ember_engine::memory::physical_memory()
            .map(|total| usize::try_from(total / 2).unwrap_or(usize::MAX))
    });
    Ok(conf.memory_settings(limit, "--driver-memory")?)
}

/// DataFusion settings for planning and for tasks.
fn session_config(
    conf: &EmberConf,
    slots: usize,
) -> Result<datafusion::prelude::SessionConfig, SessionError> {
    let partitions = conf.get_usize(SHUFFLE_PARTITIONS).unwrap_or(slots);
    let mut config = planning_config(partitions);
    if let Some(threshold) = conf
        .get(BROADCAST_THRESHOLD)
        .and_then(|_| conf.size(BROADCAST_THRESHOLD))
    {
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.hash_join_single_partition_threshold = threshold;
        if threshold == 0 {
            // DataFusion also broadcasts a side of few rows; off is off.
            optimizer.hash_join_single_partition_threshold_rows = 0;
        }
    }
    conf.apply_datafusion_options(&mut config)?;
    Ok(config)
}

/// Waits until the executors hold `wanted` task slots, or `wait` has
/// passed with at least one; without any, waits on, saying why, until
/// `give_up` has passed or the driver stops (the application was killed).
async fn wait_for_slots(
    app: &ClusterApp,
    wanted: usize,
    wait: Duration,
    give_up: Duration,
    binary: Option<&ember_actors::binaries::BinaryRef>,
) -> Result<usize, SessionError> {
    let started = tokio::time::Instant::now();
    let mut next_notice = started + Duration::from_secs(5);
    loop {
        let Some(slots) = app.slots().await else {
            let why = app
                .given_up()
                .map_or(String::new(), |why| format!(": {why}"));
            return Err(SessionError::DriverGone(format!(
                "it stopped before its executors joined{why}"
            )));
        };
        if slots >= wanted || (slots > 0 && started.elapsed() >= wait) {
            return Ok(slots);
        }
        if slots == 0 && started.elapsed() >= give_up {
            let status = app.status().await;
            // Executors that were started and stayed, yet never
            // registered: their program is not an Ember application.
            let stayed = status
                .as_ref()
                .is_some_and(|a| !a.executors.is_empty() && !a.state.starts_with("FAILED"));
            let why = status
                .and_then(|a| a.reason)
                .unwrap_or_else(|| "no reason given".into());
            return Err(match binary.filter(|_| stayed) {
                Some(binary) => SessionError::BinaryNeverRegistered {
                    app: app.id().to_string(),
                    waited: give_up,
                    binary: binary.to_string(),
                    why,
                },
                None => SessionError::NoExecutors {
                    app: app.id().to_string(),
                    waited: give_up,
                    why,
                },
            });
        }
        if tokio::time::Instant::now() >= next_notice {
            let why = app
                .waiting_reason()
                .await
                .unwrap_or_else(|| "no reason given".into());
            tracing::warn!(app = %app.id(), "no executors yet: {why}");
            errln!(
                "ember: application {} has no executors yet: {why}",
                app.id()
            );
            next_notice = tokio::time::Instant::now() + Duration::from_secs(15);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Local paths named by `CREATE EXTERNAL TABLE ... LOCATION` in `script`
/// that do not exist, as (table, location): a cluster submission with one
/// is refused before it is sent.
pub fn missing_locations(script: &str) -> Vec<(String, String)> {
    use datafusion::sql::parser::{DFParser, Statement};
    let Ok(statements) = DFParser::parse_sql(script) else {
        return Vec::new();
    };
    statements
        .into_iter()
        .filter_map(|s| match s {
            Statement::CreateExternalTable(create) => Some(create),
            _ => None,
        })
        .flat_map(|c| {
            let table = c.name.to_string();
            c.locations
                .into_iter()
                .filter(|l| is_missing_local_path(l))
                .map(move |l| (table.clone(), l))
        })
        .collect()
}

/// Whether `plan` writes files through a file sink, which the output commit
/// protocol stages: a COPY, or an INSERT into a listing table.
fn writes_files(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Copy(_) => true,
        LogicalPlan::Dml(dml) => {
            matches!(dml.op, WriteOp::Insert(_))
                && source_as_provider(&dml.target).is_ok_and(|t| t.is::<ListingTable>())
        }
        _ => false,
    }
}

/// The side file a `files:///NAME` location names.
fn side_file_name(location: &str) -> Option<&str> {
    location
        .strip_prefix(ember_engine::files::SCHEME)?
        .strip_prefix(":///")
}

fn is_local_path(target: &str) -> bool {
    !target.contains("://") || target.starts_with("file://")
}

/// A plain local path (no glob) that does not exist.
fn is_missing_local_path(location: &str) -> bool {
    is_local_path(location) && !location.contains(['*', '?', '[']) && !local_path(location).exists()
}

/// The file-system path of a local location (`file://` or a plain path).
fn local_path(location: &str) -> &Path {
    Path::new(location.strip_prefix("file://").unwrap_or(location))
}

/// The streaming faults `conf` asks for (`ember.faults.streamStopBeforeCommit`).
fn stream_faults(conf: &EmberConf) -> StreamFaults {
    StreamFaults {
        stop_before_commit: conf
            .get(ember_actors::config::FAULT_STREAM_STOP_BEFORE_COMMIT)
            .and_then(|v| v.trim().parse().ok()),
    }
}

/// A context with `ctx`'s settings and functions and a copy of its
/// catalog: tables registered in either later are not seen by the other.
async fn forked_context(ctx: &SessionContext) -> Result<SessionContext, SessionError> {
    use datafusion::catalog::{
        CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList,
        MemorySchemaProvider, SchemaProvider,
    };
    let state = ctx.state();
    let catalogs = Arc::new(MemoryCatalogProviderList::new());
    for catalog_name in state.catalog_list().catalog_names() {
        let Some(catalog) = state.catalog_list().catalog(&catalog_name) else {
            continue;
        };
        let copy = Arc::new(MemoryCatalogProvider::new());
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let schema_copy = Arc::new(MemorySchemaProvider::new());
            for table in schema.table_names() {
                if let Some(provider) = schema.table(&table).await? {
                    schema_copy.register_table(table, provider)?;
                }
            }
            copy.register_schema(&schema_name, schema_copy)?;
        }
        catalogs.register_catalog(catalog_name, copy);
    }
    let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
        .with_catalog_list(catalogs)
        .build();
    Ok(SessionContext::new_with_state(state))
}
