//! An application on a cluster, from its driver's process: the same
//! `Driver` actor as local mode, an endpoint its executors (launched by
//! workers) register with, and the client that registers the application
//! with the cluster manager, hears of lost executors, and registers again
//! if the manager restarts.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use ember_transport::{Mailbox, Node, Registration};
use tokio::sync::oneshot;

use crate::cluster_manager::{
    APP, AppId, AppRequest, ClientReply, DriverId, FOR_APPS, FOR_CLIENTS, FromApp, FromClient,
    ManagerError, ToApp,
};
use crate::driver::{
    CancelJobs, CancelScope, Driver, DriverHandle, ExecutorLauncher, JobListener, ListExecutors,
    SchedulerConfig, StopDriver,
};
use crate::protocol::ExecutorId;
use crate::remote::fetch::RemoteFetcher;
use crate::remote::{CloseEndpoint, DriverEndpoint, ExecutorLostNotice, NodeContact};
use crate::supervision::PeerDown;

/// How long the manager may take to answer.
const MANAGER_TIMEOUT: Duration = Duration::from_secs(10);
/// Between tries to reach the manager.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long an application or a command waits for a manager that is down
/// or restarting before it gives up: a restart and its recovery fit.
const MANAGER_AWAY_LIMIT: Duration = Duration::from_secs(30);
/// One try at a handshake with the manager. A handshake begun while the
/// manager was down retries ever more slowly; a fresh one each second
/// reaches a manager that came back within a second.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(1);
/// How long held result rows may take to start arriving.
const RESULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// How an application starts on a cluster.
pub struct ClusterAppSpec {
    /// This process's node, listening where executors can reach it.
    pub node: Node,
    /// How executors reach this node.
    pub contact: NodeContact,
    pub manager: NodeContact,
    pub request: AppRequest,
    /// The submission this driver runs, in cluster mode.
    pub submission: Option<DriverId>,
    pub scheduler: SchedulerConfig,
    pub listener: Option<Arc<dyn JobListener>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterAppError {
    #[error("cannot reach the cluster manager at {addr}: {why}")]
    Unreachable {
        addr: std::net::SocketAddr,
        why: String,
    },
    #[error("the cluster manager did not accept the application: {0}")]
    Refused(ManagerError),
    #[error("{0}")]
    Start(String),
}

/// Starts the endpoint when the driver starts (the driver has no other
/// executors to launch: the cluster manager asks workers for them).
struct ClusterLauncher {
    node: Node,
    secret: String,
    fetcher: RemoteFetcher,
    endpoint: Option<oneshot::Sender<Result<Addr<DriverEndpoint>, String>>>,
}

impl ExecutorLauncher for ClusterLauncher {
    fn launch(&mut self, driver: DriverHandle) {
        let started = DriverEndpoint::new(
            self.node.clone(),
            driver,
            self.secret.clone(),
            self.fetcher.clone(),
        )
        .map(Actor::start)
        .map_err(|e| e.to_string());
        if let Some(endpoint) = self.endpoint.take() {
            let _ = endpoint.send(started);
        }
    }
}

/// A running application on a cluster.
pub struct ClusterApp {
    node: Node,
    manager: NodeContact,
    driver: Addr<Driver>,
    endpoint: Addr<DriverEndpoint>,
    client: Addr<AppClient>,
    id: AppId,
    submission: Option<DriverId>,
    gave_up: Arc<Mutex<Option<String>>>,
    /// Reads the result rows executors hold.
    fetcher: RemoteFetcher,
}

impl ClusterApp {
    /// Connects to the manager, starts the driver and registers the
    /// application. Must run inside an actix System.
    pub async fn start(spec: ClusterAppSpec) -> Result<Self, ClusterAppError> {
        let manager = spec.manager.clone();
        connect(&spec.node, &manager).await?;
        let secret = new_secret().map_err(|e| ClusterAppError::Start(e.to_string()))?;
        let (endpoint, started) = oneshot::channel();
        let fetcher = RemoteFetcher::open(spec.node.clone(), RESULT_FETCH_TIMEOUT)
            .map_err(|e| ClusterAppError::Start(e.to_string()))?;
        let launcher = ClusterLauncher {
            node: spec.node.clone(),
            secret: secret.clone(),
            fetcher: fetcher.clone(),
            endpoint: Some(endpoint),
        };
        let me = spec.contact.actor(crate::remote::wire::DRIVER);
        let cluster_lost_timeout = spec.scheduler.cluster_lost_timeout;
        let driver = Driver::new(me, spec.scheduler, spec.listener, Box::new(launcher)).start();
        let endpoint = started
            .await
            .map_err(|_| ClusterAppError::Start("the driver did not start".into()))?
            .map_err(ClusterAppError::Start)?;
        let application = Application {
            request: spec.request.clone(),
            driver: spec.contact.clone(),
            client: spec.contact.actor(APP),
            secret,
            submission: spec.submission.clone(),
        };
        let gave_up = Arc::new(Mutex::new(None));
        let client = AppClient {
            node: spec.node.clone(),
            manager: manager.clone(),
            endpoint: endpoint.clone(),
            driver: driver.clone(),
            application,
            app: None,
            registration: None,
            manager_mailbox: None,
            finished: false,
            lost_since: None,
            cluster_lost_timeout,
            gave_up: Arc::clone(&gave_up),
            reported_usage: Vec::new(),
        }
        .start();
        // A manager that goes down while it registers the application is
        // waited for, as one that was down before it was reached.
        let deadline = tokio::time::Instant::now() + MANAGER_AWAY_LIMIT;
        let id = loop {
            let registered = client
                .send(RegisterApp)
                .await
                .map_err(|e| ClusterAppError::Start(e.to_string()))?;
            match registered {
                Ok(id) => break id,
                Err(ClusterAppError::Unreachable { addr, why })
                    if tokio::time::Instant::now() + RETRY_PAUSE < deadline =>
                {
                    tracing::info!(%addr, %why, "the cluster manager went away while it registered the application; trying again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Self {
            node: spec.node,
            manager,
            driver,
            endpoint,
            client,
            id,
            submission: spec.submission,
            gave_up,
            fetcher,
        })
    }

    /// Where the rows executors hold for this driver are read from.
    pub fn results(&self) -> crate::driver::ResultSource {
        crate::driver::ResultSource::Remote(Arc::new(self.fetcher.clone()))
    }

    /// Why the application was given up (the manager refused it, or a
    /// cluster-mode driver was cut off past its bound), once it has been:
    /// its driver stops then.
    pub fn given_up(&self) -> Option<String> {
        self.gave_up.lock().ok().and_then(|why| why.clone())
    }

    /// The cluster-mode submission this driver runs, if it is one.
    pub fn submission(&self) -> Option<&DriverId> {
        self.submission.as_ref()
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn driver(&self) -> &Addr<Driver> {
        &self.driver
    }

    /// Task slots registered now.
    /// `None` once the driver has stopped (`ember kill`, say): no executor
    /// will ever come then.
    pub async fn slots(&self) -> Option<usize> {
        self.driver
            .send(ListExecutors::ACTIVE)
            .await
            .ok()
            .map(|list| list.iter().map(|e| e.slots).sum())
    }

    /// Why the manager says this application waits, if it does.
    pub async fn waiting_reason(&self) -> Option<String> {
        self.status().await.and_then(|a| a.reason)
    }

    /// This application as the manager shows it, if it answers.
    pub async fn status(&self) -> Option<crate::cluster_manager::AppStatus> {
        let mailbox = self
            .node
            .mailbox::<FromClient>(&self.manager.actor(FOR_CLIENTS))
            .ok()?;
        match mailbox.ask(FromClient::Status, MANAGER_TIMEOUT).await {
            Ok(Ok(ClientReply::Status(status))) => {
                status.apps.into_iter().find(|a| a.id == self.id)
            }
            _ => None,
        }
    }

    /// Tells the manager the application's streaming queries, for `ember
    /// status`.
    pub fn report_streams(&self, streams: Vec<crate::cluster_manager::StreamStatus>) {
        self.client.do_send(ReportStreams(streams));
    }

    /// Ends the application: tells the manager how it went, stops the
    /// driver (its executors follow) and closes the node.
    pub async fn stop(self, failure: Option<String>) {
        let _ = self
            .client
            .send(Finish {
                failure,
                id: self.id.clone(),
            })
            .await;
        let _ = self.driver.send(StopDriver).await;
        let _ = self.endpoint.send(CloseEndpoint).await;
        // The driver tells its executors it stopped as it goes; let those
        // notices leave before the connections close (the executors would
        // notice the close as well, a moment later, as a lost driver).
        let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
        while self.driver.connected() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.node.flush(Duration::from_millis(20)).await;
        self.node.close(Duration::from_millis(100)).await;
    }
}

/// Dials the cluster manager at `addr` (its certificate naming `host`)
/// and returns how to reach it.
pub async fn reach_manager(
    node: &Node,
    addr: std::net::SocketAddr,
    host: &str,
) -> Result<NodeContact, ClusterAppError> {
    let unreachable = |why: String| ClusterAppError::Unreachable { addr, why };
    // A manager restarting, or a lost first packet, is worth more tries
    // within the bound.
    let deadline = tokio::time::Instant::now() + MANAGER_AWAY_LIMIT;
    let id = loop {
        // A try cut short goes on in the background: if it got through
        // since (a handshake slower than a second), use that connection.
        if let Some((id, _)) = node
            .peers()
            .into_iter()
            .find(|(_, who)| who.role == ember_certs::Role::ClusterManager)
        {
            break id;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let why =
            match tokio::time::timeout(left.min(CONNECT_ATTEMPT), node.connect(addr, host)).await {
                Ok(Ok(id)) => break id,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {CONNECT_ATTEMPT:?}"),
            };
        // A refusal (a certificate, say) is final; silence may not be.
        let silent = why.contains("timed out") || why.contains("no answer");
        if !silent || tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
            let why = if silent {
                format!("no answer within {MANAGER_AWAY_LIMIT:?}: {why}")
            } else {
                why
            };
            return Err(unreachable(why));
        }
        tracing::info!(%addr, %why, "cluster manager not reached yet; trying again");
        tokio::time::sleep(RETRY_PAUSE).await;
    };
    Ok(NodeContact {
        node: id,
        addr,
        host: host.to_string(),
    })
}

/// Dials the manager unless this node is already connected to it.
pub async fn connect(node: &Node, manager: &NodeContact) -> Result<(), ClusterAppError> {
    if node.peers().iter().any(|(id, _)| *id == manager.node) {
        return Ok(());
    }
    let reached = reach_manager(node, manager.addr, &manager.host).await?;
    if reached.node != manager.node {
        return Err(ClusterAppError::Unreachable {
            addr: manager.addr,
            why: format!(
                "the node there is '{}', not the cluster manager '{}'",
                reached.node, manager.node
            ),
        });
    }
    Ok(())
}

/// A fresh per-application secret: 128 random bits, in hex.
pub fn new_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Registered on the driver's node as [`APP`]: the manager's contact.
struct AppClient {
    node: Node,
    manager: NodeContact,
    endpoint: Addr<DriverEndpoint>,
    driver: Addr<Driver>,
    application: Application,
    app: Option<AppId>,
    registration: Option<Registration>,
    manager_mailbox: Option<Mailbox<FromApp>>,
    /// Set once the application ends: losing the manager then is expected.
    finished: bool,
    /// When the manager was lost, while it is away.
    lost_since: Option<tokio::time::Instant>,
    /// Cut off from the manager and every executor this long, give up.
    cluster_lost_timeout: Duration,
    /// Why the application was given up, for whoever waits on it.
    gave_up: Arc<Mutex<Option<String>>>,
    /// The executors' usage as last told to the manager.
    reported_usage: Vec<(u32, crate::protocol::ExecutorUsage)>,
}

/// How often the manager hears of the executors' memory and spill.
const USAGE_INTERVAL: Duration = Duration::from_secs(1);

impl AppClient {
    /// Tells the manager what the executors hold and spilled, when that
    /// changed, for `ember status`.
    fn report_usage(&mut self, ctx: &mut Context<Self>) {
        if self.finished || self.app.is_none() || self.manager_mailbox.is_none() {
            return;
        }
        let listed = self.driver.send(ListExecutors::ACTIVE);
        ctx.spawn(listed.into_actor(self).map(|listed, act, _ctx| {
            let Ok(listed) = listed else {
                return;
            };
            let mut executors: Vec<_> = listed
                .into_iter()
                .filter_map(|e| Some((e.id.0.parse::<u32>().ok()?, e.usage)))
                .collect();
            executors.sort_by_key(|(n, _)| *n);
            if executors == act.reported_usage {
                return;
            }
            let (Some(app), Some(mailbox)) = (act.app.clone(), act.manager_mailbox.as_ref()) else {
                return;
            };
            let usage = FromApp::Usage {
                app,
                executors: executors.clone(),
            };
            if mailbox.tell(usage).is_ok() {
                act.reported_usage = executors;
            }
        }));
    }
}

impl Actor for AppClient {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let access = ember_transport::Access::Roles(vec![ember_certs::Role::ClusterManager]);
        match self
            .node
            .register(APP, ctx.address().recipient::<ToApp>(), access)
        {
            Ok(registration) => self.registration = Some(registration),
            Err(e) => tracing::error!(error = %e, "cannot hear from the cluster manager"),
        }
        ctx.run_interval(USAGE_INTERVAL, Self::report_usage);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(registration) = self.registration.as_mut() {
            registration.set_reason(ember_transport::ExitReason::Normal);
        }
    }
}

#[derive(Message)]
#[rtype(result = "Result<AppId, ClusterAppError>")]
struct RegisterApp;

#[derive(Message)]
#[rtype(result = "()")]
struct Finish {
    id: AppId,
    failure: Option<String>,
}

/// Try registering again after losing the manager.
#[derive(Message)]
#[rtype(result = "()")]
struct Reregister;

/// What the manager is told of the application each time it registers.
struct Application {
    request: AppRequest,
    driver: NodeContact,
    client: ember_transport::ActorAddress,
    secret: String,
    submission: Option<DriverId>,
}

impl AppClient {
    fn register_message(&self) -> FromApp {
        let a = &self.application;
        FromApp::Register {
            request: Box::new(a.request.clone()),
            driver: a.driver.clone(),
            client: a.client.clone(),
            secret: a.secret.clone(),
            submission: a.submission.clone(),
            existing: self.app.clone(),
        }
    }
}

impl Handler<RegisterApp> for AppClient {
    type Result = ResponseActFuture<Self, Result<AppId, ClusterAppError>>;

    fn handle(&mut self, _msg: RegisterApp, _ctx: &mut Context<Self>) -> Self::Result {
        let node = self.node.clone();
        let manager = self.manager.clone();
        let message = self.register_message();
        Box::pin(
            async move {
                connect(&node, &manager).await?;
                let unreachable = |e: ember_transport::SendError| ClusterAppError::Unreachable {
                    addr: manager.addr,
                    why: e.to_string(),
                };
                let mailbox = node
                    .mailbox::<FromApp>(&manager.actor(FOR_APPS))
                    .map_err(unreachable)?;
                let id = mailbox
                    .ask(message, MANAGER_TIMEOUT)
                    .await
                    .map_err(unreachable)?
                    .map_err(ClusterAppError::Refused)?;
                Ok((id, mailbox))
            }
            .into_actor(self)
            .map(|outcome, act, ctx| {
                let (id, mailbox) = outcome?;
                act.node
                    .monitor(mailbox.address(), ctx.address().recipient::<PeerDown>());
                act.manager_mailbox = Some(mailbox);
                act.app = Some(id.clone());
                act.lost_since = None;
                Ok(id)
            }),
        )
    }
}

/// The application's streaming queries, for the manager.
#[derive(Message)]
#[rtype(result = "()")]
struct ReportStreams(Vec<crate::cluster_manager::StreamStatus>);

impl Handler<ReportStreams> for AppClient {
    type Result = ();

    fn handle(&mut self, msg: ReportStreams, _ctx: &mut Context<Self>) {
        if let (Some(app), Some(mailbox)) = (self.app.clone(), self.manager_mailbox.as_ref()) {
            let _ = mailbox.tell(FromApp::Streams {
                app,
                streams: msg.0,
            });
        }
    }
}

impl Handler<Finish> for AppClient {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Finish, _ctx: &mut Context<Self>) -> Self::Result {
        self.finished = true;
        let mailbox = self.manager_mailbox.clone();
        let listed = self.driver.send(ListExecutors::ALL);
        Box::pin(async move {
            if let Some(mailbox) = mailbox {
                // The executors' last word on memory and spill, which the
                // periodic report may not have carried yet.
                if let Ok(listed) = listed.await {
                    let executors = listed
                        .into_iter()
                        .filter_map(|e| Some((e.id.0.parse::<u32>().ok()?, e.usage)))
                        .collect();
                    let _ = mailbox.tell(FromApp::Usage {
                        app: msg.id.clone(),
                        executors,
                    });
                }
                let finished = FromApp::Finished {
                    app: msg.id,
                    failure: msg.failure,
                };
                let _ = mailbox.ask(finished, Duration::from_secs(2)).await;
            }
        })
    }
}

impl Handler<ToApp> for AppClient {
    type Result = ();

    fn handle(&mut self, msg: ToApp, _ctx: &mut Context<Self>) {
        match msg {
            ToApp::ExecutorLost { executor, why } => {
                self.endpoint.do_send(ExecutorLostNotice {
                    executor: ExecutorId(executor.to_string()),
                    why,
                });
            }
            ToApp::Killed => {
                tracing::error!("the application was killed with `ember kill`");
                // Running tasks are killed first, then the driver stops.
                self.driver.do_send(CancelJobs {
                    reason: "the application was killed with `ember kill`".into(),
                    scope: CancelScope::All,
                });
                self.driver.do_send(StopDriver);
            }
            ToApp::Failed { why } => {
                tracing::error!(%why, "the cluster manager ended the application");
                self.driver.do_send(CancelJobs {
                    reason: format!("the cluster manager ended the application: {why}"),
                    scope: CancelScope::All,
                });
            }
        }
    }
}

impl Handler<PeerDown> for AppClient {
    type Result = ();

    /// The manager is gone: executors keep running; register again (as
    /// the same application) when it is back.
    fn handle(&mut self, msg: PeerDown, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        if self
            .manager_mailbox
            .as_ref()
            .is_some_and(|m| *m.address() == msg.peer)
        {
            tracing::warn!(reason = %msg.reason, "lost the cluster manager; executors keep running");
            self.manager_mailbox = None;
            self.lost_since
                .get_or_insert_with(tokio::time::Instant::now);
            ctx.notify_later(CheckCutOff, self.cluster_lost_timeout);
            ctx.notify_later(Reregister, Duration::from_millis(500));
        }
    }
}

impl Handler<Reregister> for AppClient {
    type Result = ();

    fn handle(&mut self, _msg: Reregister, ctx: &mut Context<Self>) {
        if self.manager_mailbox.is_some() || self.finished {
            return;
        }
        let me = ctx.address();
        ctx.spawn(
            async move { me.send(RegisterApp).await }
                .into_actor(self)
                .map(|outcome, act, ctx| match outcome {
                    Ok(Ok(id)) => {
                        tracing::info!(app = %id, "registered again with the cluster manager");
                    }
                    // The manager answered no: the application ended while this
                    // driver was away; it must not come back as another.
                    Ok(Err(ClusterAppError::Refused(why))) => act.give_up(format!(
                        "the cluster manager no longer runs this application: {why}"
                    )),
                    _ => {
                        tracing::debug!("cluster manager still away");
                        ctx.notify_later(Reregister, Duration::from_millis(500));
                    }
                }),
        );
    }
}

/// Is the driver still cut off from the manager, and from every executor?
#[derive(Message)]
#[rtype(result = "()")]
struct CheckCutOff;

impl Handler<CheckCutOff> for AppClient {
    type Result = ();

    fn handle(&mut self, _msg: CheckCutOff, ctx: &mut Context<Self>) {
        let Some(since) = self.lost_since else {
            return;
        };
        if self.finished {
            return;
        }
        let bound = self.cluster_lost_timeout;
        // A check left from an earlier loss comes too soon for this one.
        if since.elapsed() < bound {
            ctx.notify_later(CheckCutOff, bound - since.elapsed());
            return;
        }
        // A cluster-mode driver holds its submission only while the manager
        // hears from it: past the bound the manager may start another
        // attempt, so this one stops, executors or not.
        if self.application.submission.is_some() {
            self.give_up(format!(
                "this cluster-mode driver was cut off from the cluster manager for {:.1?} \
                 (ember.app.clusterLostTimeout is {bound:?}); another attempt may run in its place",
                since.elapsed()
            ));
            return;
        }
        let driver = self.driver.clone();
        ctx.spawn(
            async move {
                driver
                    .send(ListExecutors::ACTIVE)
                    .await
                    .map_or(0, |e| e.len())
            }
            .into_actor(self)
            .map(move |executors, act, ctx| {
                if executors == 0 {
                    act.give_up(format!(
                        "cut off from the cluster manager and every executor for {:.1?} \
                             (ember.app.clusterLostTimeout is {bound:?})",
                        since.elapsed()
                    ));
                } else {
                    // Executors keep the job going; look again soon.
                    ctx.notify_later(CheckCutOff, Duration::from_millis(500));
                }
            }),
        );
    }
}

impl AppClient {
    /// The application cannot go on: its jobs fail with `why` and the
    /// driver stops.
    fn give_up(&mut self, why: String) {
        if self.finished {
            return;
        }
        self.finished = true;
        tracing::error!(%why, "giving the application up");
        if let Ok(mut gave_up) = self.gave_up.lock() {
            *gave_up = Some(why.clone());
        }
        self.driver.do_send(CancelJobs {
            reason: format!("the application cannot go on: {why}"),
            scope: CancelScope::All,
        });
        self.driver.do_send(StopDriver);
    }
}
