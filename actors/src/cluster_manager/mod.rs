//! The cluster manager: the registry of workers, applications and drivers
//! that decides where executors and cluster-mode drivers run. Its decisions
//! live in [`state`], a plain struct tested without actors or sockets; the
//! actor here receives, calls it, carries out the actions and journals
//! what must survive a restart.

pub mod binaries;
mod errors;
mod handlers;
pub mod journal;
pub mod messages;
pub mod state;
pub mod upload;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix::prelude::*;
use ember_transport::{ActorAddress, Mailbox, Node, Registration};

pub use errors::{ManagerError, WorkerError};
pub use handlers::StopManager;
pub use journal::{AppRecord, DriverRecord, Journal, JournalError};
pub use messages::{
    APP, AppStatus, ClientReply, ClusterStatus, DriverJob, DriverLogs, DriverStatus, ExecutorState,
    ExecutorStatus, FOR_APPS, FOR_CLIENTS, FOR_WORKERS, FromApp, FromClient, FromWorker,
    ScriptUpload, StreamStatus, ToApp, ToWorker, WORKER, WorkerStatus,
};
pub use state::{
    Action, AppId, AppRequest, AppState, AppView, ClusterState, DriverId, DriverRequest,
    DriverState, Event, ExecutorEnd, ExecutorNo, PastExecutor, Placement, RunningExecutor,
    WorkerId,
};

/// How the manager starts.
pub struct ClusterManagerSpec {
    pub node: Node,
    pub journal: Journal,
    pub placement: Placement,
    /// After a restart, how long workers and drivers get to come back
    /// before anything is placed again.
    pub recovery_grace: Duration,
    /// `ember.deploy.maxExecutorRetries`.
    pub max_executor_failures: u32,
    /// `ember.deploy.maxDriverCoreShare`.
    pub max_driver_core_share: f64,
    /// How long a driver whose worker was lost may still be running
    /// ([`state::DRIVER_LEASE`]); nothing replaces it before.
    pub driver_lease: Duration,
}

struct WorkerLink {
    address: ActorAddress,
    host: String,
    mailbox: Mailbox<ToWorker>,
}

struct AppLink {
    record: AppRecord,
    client: Option<(ActorAddress, Mailbox<ToApp>)>,
    /// Its executors' memory and spill, as its driver last reported.
    usage: BTreeMap<ExecutorNo, crate::protocol::ExecutorUsage>,
    /// Its streaming queries, as its driver last reported.
    streams: Vec<StreamStatus>,
}

pub struct ClusterManager {
    node: Node,
    state: ClusterState,
    journal: Journal,
    recovery_grace: Duration,
    started: tokio::time::Instant,
    workers: BTreeMap<WorkerId, WorkerLink>,
    apps: BTreeMap<AppId, AppLink>,
    drivers: BTreeMap<DriverId, DriverRecord>,
    /// Applications loaded from the journal whose driver has not come back.
    awaiting_drivers: BTreeSet<AppId>,
    /// Applications whose driver dropped while this manager stood still.
    away: BTreeSet<AppId>,
    /// Scripts arriving in parts from `ember submit`.
    uploads: upload::ScriptAssembly,
    /// Names the next upload.
    next_upload: u64,
    /// The latest launch of each driver whose script goes to its worker in
    /// parts: a launch superseded meanwhile is not carried out.
    launches: BTreeMap<DriverId, u64>,
    next_launch: u64,
    registrations: Vec<Registration>,
    /// When the manager last saw its own clock tick: a long gap means the
    /// process stood still (SIGSTOP, a suspended VM). On the clock timers
    /// use: real, or virtual in a simulation, where a slow machine is no
    /// stall.
    last_tick: tokio::time::Instant,
    /// After standing still, drivers whose connection dropped meanwhile
    /// get until then to register again before their applications end.
    revalidate_until: Option<tokio::time::Instant>,
    /// Dropped with the actor, however it ends (a panic in a handler
    /// too), so whoever runs the manager hears of it; carries the reason
    /// when the manager gives up.
    end_notice: Option<tokio::sync::oneshot::Sender<String>>,
    /// Application binaries, when the manager keeps them.
    binaries: Option<binaries::ManagerBinaries>,
}

/// How often the manager checks that it has not stood still.
const STALL_TICK: Duration = Duration::from_millis(100);
/// A gap this long between ticks means the process stood still.
const STALL: Duration = Duration::from_millis(500);
/// How long, after standing still, peers get to come back.
const REVALIDATE: Duration = Duration::from_secs(5);

impl ClusterManager {
    pub fn new(spec: ClusterManagerSpec) -> Self {
        Self {
            node: spec.node,
            state: ClusterState::new(spec.placement)
                .with_max_executor_failures(spec.max_executor_failures)
                .with_max_driver_core_share(spec.max_driver_core_share)
                .with_driver_lease(spec.driver_lease),
            journal: spec.journal,
            recovery_grace: spec.recovery_grace,
            started: tokio::time::Instant::now(),
            workers: BTreeMap::new(),
            apps: BTreeMap::new(),
            drivers: BTreeMap::new(),
            awaiting_drivers: BTreeSet::new(),
            away: BTreeSet::new(),
            uploads: upload::ScriptAssembly::default(),
            next_upload: 0,
            launches: BTreeMap::new(),
            next_launch: 0,
            registrations: Vec::new(),
            last_tick: tokio::time::Instant::now(),
            revalidate_until: None,
            end_notice: None,
            binaries: None,
        }
    }

    /// Whether the manager stood still recently and is still giving the
    /// peers it lost meanwhile time to come back.
    fn revalidating(&self) -> bool {
        self.revalidate_until
            .is_some_and(|until| tokio::time::Instant::now() < until)
    }

    fn watch_own_clock(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(STALL_TICK, |act, ctx| act.check_own_clock(ctx));
    }

    /// Notes a stall if the clock has not ticked for a while; called on
    /// every tick and before acting on a lost peer, whichever comes first
    /// after the process resumes.
    pub(crate) fn check_own_clock(&mut self, ctx: &mut Context<Self>) {
        let gap = self.last_tick.elapsed();
        self.last_tick = tokio::time::Instant::now();
        if gap >= STALL {
            tracing::warn!(
                stood_still = ?gap,
                "the cluster manager stood still; drivers get {REVALIDATE:?} to register again before anything they run is ended"
            );
            self.revalidate_until = Some(self.last_tick + REVALIDATE);
            ctx.notify_later(EndAway, REVALIDATE);
        }
    }

    /// Resolves when the manager can no longer serve: with the reason if it
    /// gave up (its journal could not be read), closed if its actor ended
    /// any other way, a panic included. A process that serves the manager
    /// waits on this to exit non-zero rather than stay up answering "gone".
    pub fn ended(&mut self) -> tokio::sync::oneshot::Receiver<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.end_notice = Some(tx);
        rx
    }

    /// Stops the manager for good, saying why.
    fn give_up(&mut self, why: String, ctx: &mut Context<Self>) {
        tracing::error!(%why, "the cluster manager stops");
        if let Some(notice) = self.end_notice.take() {
            let _ = notice.send(why);
        }
        ctx.stop();
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Actor for ClusterManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        use ember_certs::Role;
        use ember_transport::Access;
        let me = ctx.address();
        let registered = [
            self.node.register(
                FOR_WORKERS,
                me.clone().recipient::<FromWorker>(),
                Access::Roles(vec![Role::Worker]),
            ),
            self.node.register(
                FOR_APPS,
                me.clone().recipient::<FromApp>(),
                Access::Roles(vec![Role::Client, Role::Worker]),
            ),
            self.node.register(
                FOR_CLIENTS,
                me.recipient::<FromClient>(),
                Access::Roles(vec![Role::Client]),
            ),
        ];
        for registration in registered {
            match registration {
                Ok(r) => self.registrations.push(r),
                Err(e) => {
                    self.give_up(format!("cannot serve: {e}"), ctx);
                    return;
                }
            }
        }
        if let Err(e) = self.serve_binaries(ctx) {
            self.give_up(format!("cannot serve application binaries: {e}"), ctx);
            return;
        }
        self.watch_own_clock(ctx);
        // What cannot be read is never taken for nothing to recover.
        if let Err(e) = self.recover(ctx) {
            self.give_up(e.to_string(), ctx);
        }
    }
}

/// The revalidation window after a stall is over: applications whose
/// driver did not come back end now.
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub(crate) struct EndAway;

/// Now, as `ember status` prints times.
pub fn timestamp() -> String {
    let (date, time) = now_parts();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        date[0], date[1], date[2], time[0], time[1], time[2]
    )
}

/// An id in Spark's style with the cluster's id after the number:
/// `app-20261123101500-0003-kqzmt`. Ids of one cluster sort by time then
/// number; two clusters started in the same second still differ.
fn new_id(kind: &str, number: u64, cluster: &str) -> String {
    let (date, time) = now_parts();
    format!(
        "{kind}-{:04}{:02}{:02}{:02}{:02}{:02}-{number:04}-{cluster}",
        date[0], date[1], date[2], time[0], time[1], time[2]
    )
}

/// ([year, month, day], [hour, minute, second]) now, in UTC.
fn now_parts() -> ([i32; 3], [u8; 3]) {
    let now = time::OffsetDateTime::now_utc();
    (
        [
            now.year(),
            i32::from(u8::from(now.month())),
            i32::from(now.day()),
        ],
        [now.hour(), now.minute(), now.second()],
    )
}

/// A driver state as journaled and shown: a word and, for some, a reason.
pub fn driver_state_words(state: &DriverState) -> (&'static str, Option<String>) {
    match state {
        DriverState::Waiting(why) => ("SUBMITTED", Some(why.clone())),
        DriverState::Queued(why) => ("QUEUED", Some(why.clone())),
        DriverState::Running { .. } => ("RUNNING", None),
        DriverState::Restarting { .. } => ("RELAUNCHING", None),
        DriverState::Unreachable { worker, .. } => (
            "UNKNOWN",
            Some(format!(
                "worker {worker} was lost; the driver may still run there"
            )),
        ),
        DriverState::Finished => ("FINISHED", None),
        DriverState::Failed(why) => ("FAILED", Some(why.clone())),
        DriverState::Killed => ("KILLED", None),
    }
}

pub fn app_state_words(state: &AppState) -> (&'static str, Option<String>) {
    match state {
        AppState::Waiting(why) => ("WAITING", Some(why.clone())),
        AppState::Running => ("RUNNING", None),
        AppState::Finished => ("FINISHED", None),
        AppState::Failed(why) => ("FAILED", Some(why.clone())),
    }
}

/// An application's executors as journaled: those it has, then those it
/// had, each in number order.
fn executor_history(view: &AppView) -> Vec<ExecutorStatus> {
    let running = view
        .executors
        .iter()
        .map(|(n, worker, cores, memory_mb)| ExecutorStatus {
            executor: *n,
            worker: worker.clone(),
            cores: *cores,
            memory_mb: *memory_mb,
            state: ExecutorState::Running,
            reason: None,
            usage: None,
        });
    let past = view.past.iter().map(|(n, p)| {
        let (state, reason) = match &p.end {
            ExecutorEnd::Exited(why) => (ExecutorState::Exited, Some(why.clone())),
            ExecutorEnd::Killed => (ExecutorState::Killed, None),
            ExecutorEnd::Lost(why) => (ExecutorState::Lost, Some(why.clone())),
            ExecutorEnd::Unconfirmed => (
                ExecutorState::Unknown,
                Some("not reported by its worker since the cluster manager restarted".into()),
            ),
        };
        ExecutorStatus {
            executor: *n,
            worker: p.worker.clone(),
            cores: p.cores,
            memory_mb: p.memory_mb,
            state,
            reason,
            usage: None,
        }
    });
    running.chain(past).collect()
}

/// A journaled executor of an application recovered after a restart: one
/// journaled as running may still run, until its worker says otherwise.
fn recovered_executor(status: &ExecutorStatus) -> (ExecutorNo, PastExecutor) {
    let why = || status.reason.clone().unwrap_or_default();
    let end = match status.state {
        ExecutorState::Running | ExecutorState::Unknown => ExecutorEnd::Unconfirmed,
        ExecutorState::Exited => ExecutorEnd::Exited(why()),
        ExecutorState::Killed => ExecutorEnd::Killed,
        ExecutorState::Lost => ExecutorEnd::Lost(why()),
    };
    (
        status.executor,
        PastExecutor {
            worker: status.worker.clone(),
            cores: status.cores,
            memory_mb: status.memory_mb,
            end,
        },
    )
}

#[cfg(test)]
mod tests {
    use ember_certs::{IssueRequest, Role};
    use redb::backends::InMemoryBackend;

    use super::*;

    /// A handler that panics, as a bug in any handler would.
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Crash;

    impl Handler<Crash> for ClusterManager {
        type Result = ();

        fn handle(&mut self, _msg: Crash, _ctx: &mut Context<Self>) {
            panic!("a bug in a handler");
        }
    }

    #[test]
    fn a_panic_in_the_manager_is_heard_by_whoever_runs_it() {
        let certs = tempfile::tempdir().unwrap();
        ember_certs::init_ca(certs.path(), "test", 5, false).unwrap();
        let request = IssueRequest::new(Role::ClusterManager, "cm", vec![], 5);
        ember_certs::issue(certs.path(), &request).unwrap();
        let creds = ember_certs::load_node(certs.path(), "cm").unwrap();
        let journal = Journal::open_with_backend(InMemoryBackend::new()).unwrap();
        System::new().block_on(async move {
            let listen = "127.0.0.1:0".parse().unwrap();
            let node = Node::start(&creds, listen, Default::default()).unwrap();
            let mut manager = ClusterManager::new(ClusterManagerSpec {
                node: node.clone(),
                journal,
                placement: Placement::Spread,
                recovery_grace: Duration::from_secs(1),
                max_executor_failures: 10,
                max_driver_core_share: 0.5,
                driver_lease: state::DRIVER_LEASE,
            });
            let mut ended = manager.ended();
            let manager = manager.start();
            assert!(manager.send(FromClient::Status).await.unwrap().is_ok());
            assert!(ended.try_recv().is_err(), "still serving");
            assert!(manager.send(Crash).await.is_err(), "the handler panicked");
            let heard = tokio::time::timeout(Duration::from_secs(5), ended)
                .await
                .expect("the end is heard at once");
            assert!(heard.is_err(), "ended without a reason: {heard:?}");
            node.shutdown();
        });
    }

    #[test]
    fn a_submission_sent_again_with_its_token_is_taken_once_across_a_restart() {
        let certs = tempfile::tempdir().unwrap();
        ember_certs::init_ca(certs.path(), "test", 5, false).unwrap();
        let request = IssueRequest::new(Role::ClusterManager, "cm", vec![], 5);
        ember_certs::issue(certs.path(), &request).unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        let start = || {
            let creds = ember_certs::load_node(certs.path(), "cm").unwrap();
            let node =
                Node::start(&creds, "127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
            let manager = ClusterManager::new(ClusterManagerSpec {
                node: node.clone(),
                journal: Journal::open(state_dir.path()).unwrap(),
                placement: Placement::Spread,
                recovery_grace: Duration::from_secs(1),
                max_executor_failures: 10,
                max_driver_core_share: 0.5,
                driver_lease: state::DRIVER_LEASE,
            })
            .start();
            (manager, node)
        };
        let submit = |token: &str| FromClient::Submit {
            job: DriverJob {
                name: "nightly".into(),
                script: "SELECT 1;".into(),
                conf: vec![],
                executor_cores: 1,
                executor_memory_mb: 512,
                max_cores: None,
                args: vec![],
                base_dir: None,
                binary: None,
                files: vec![],
            },
            request: DriverRequest {
                cores: 1,
                memory_mb: 512,
                supervise: true,
            },
            upload: None,
            token: Some(token.into()),
        };
        let id = |reply: Result<Result<ClientReply, ManagerError>, MailboxError>| match reply {
            Ok(Ok(ClientReply::Submitted(id))) => id,
            other => panic!("not submitted: {other:?}"),
        };
        System::new().block_on(async move {
            let (manager, node) = start();
            let first = id(manager.send(submit("t1")).await);
            // Its answer lost, the client sends it again: the same one.
            assert_eq!(id(manager.send(submit("t1")).await), first);
            let other = id(manager.send(submit("t2")).await);
            assert_ne!(other, first);
            manager.send(StopManager).await.unwrap();
            while manager.connected() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            node.shutdown();
            tokio::time::sleep(Duration::from_millis(50)).await;
            // The manager restarted meanwhile: it still knows the token.
            let (manager, node) = start();
            assert_eq!(id(manager.send(submit("t1")).await), first);
            let Ok(Ok(ClientReply::Status(status))) = manager.send(FromClient::Status).await else {
                panic!("no status");
            };
            assert_eq!(status.drivers.len(), 2, "{:?}", status.drivers);
            node.shutdown();
        });
    }

    #[test]
    fn ids_carry_the_cluster_and_sort_by_time_then_number() {
        let id = new_id("app", 3, "kqzmt");
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.len(), 4, "{id}");
        assert_eq!((parts[0], parts[2], parts[3]), ("app", "0003", "kqzmt"));
        assert_eq!(parts[1].len(), 14, "YYYYMMDDhhmmss: {id}");
        let later = new_id("app", 4, "kqzmt");
        assert!(id < later, "{id} sorts before {later}");
    }
}
