//! The cluster manager: the registry of workers, applications and drivers
//! that decides where executors and cluster-mode drivers run. Its decisions
//! live in [`state`], a plain struct tested without actors or sockets; the
//! actor here receives, calls it, carries out the actions and journals
//! what must survive a restart.

mod handlers;
pub mod journal;
pub mod messages;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix::prelude::*;
use ember_transport::{ActorAddress, Mailbox, Node, Registration};

pub use handlers::StopManager;
pub use journal::{AppRecord, DriverRecord, Journal, JournalError};
pub use messages::{
    APP, AppStatus, ClientReply, ClusterStatus, DriverJob, DriverLogs, DriverStatus,
    ExecutorStatus, FOR_APPS, FOR_CLIENTS, FOR_WORKERS, FromApp, FromClient, FromWorker, ToApp,
    ToWorker, WORKER, WorkerStatus,
};
pub use state::{
    Action, AppId, AppRequest, AppState, ClusterState, DriverId, DriverRequest, DriverState, Event,
    ExecutorNo, Placement, RunningExecutor, WorkerId,
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
}

struct WorkerLink {
    address: ActorAddress,
    host: String,
    mailbox: Mailbox<ToWorker>,
}

struct AppLink {
    record: AppRecord,
    client: Option<(ActorAddress, Mailbox<ToApp>)>,
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
    registrations: Vec<Registration>,
    /// When the manager last saw its own clock tick: a long gap means the
    /// process stood still (SIGSTOP, a suspended VM).
    last_tick: std::time::Instant,
    /// After standing still, drivers whose connection dropped meanwhile
    /// get until then to register again before their applications end.
    revalidate_until: Option<std::time::Instant>,
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
                .with_max_executor_failures(spec.max_executor_failures),
            journal: spec.journal,
            recovery_grace: spec.recovery_grace,
            started: tokio::time::Instant::now(),
            workers: BTreeMap::new(),
            apps: BTreeMap::new(),
            drivers: BTreeMap::new(),
            awaiting_drivers: BTreeSet::new(),
            away: BTreeSet::new(),
            registrations: Vec::new(),
            last_tick: std::time::Instant::now(),
            revalidate_until: None,
        }
    }

    /// Whether the manager stood still recently and is still giving the
    /// peers it lost meanwhile time to come back.
    fn revalidating(&self) -> bool {
        self.revalidate_until
            .is_some_and(|until| std::time::Instant::now() < until)
    }

    fn watch_own_clock(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(STALL_TICK, |act, ctx| act.check_own_clock(ctx));
    }

    /// Notes a stall if the clock has not ticked for a while; called on
    /// every tick and before acting on a lost peer, whichever comes first
    /// after the process resumes.
    pub(crate) fn check_own_clock(&mut self, ctx: &mut Context<Self>) {
        let gap = self.last_tick.elapsed();
        self.last_tick = std::time::Instant::now();
        if gap >= STALL {
            tracing::warn!(
                stood_still = ?gap,
                "the cluster manager stood still; drivers get {REVALIDATE:?} to register again before anything they run is ended"
            );
            self.revalidate_until = Some(self.last_tick + REVALIDATE);
            ctx.notify_later(EndAway, REVALIDATE);
        }
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
                    tracing::error!(error = %e, "cannot serve");
                    ctx.stop();
                    return;
                }
            }
        }
        self.watch_own_clock(ctx);
        self.recover(ctx);
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

/// An id in Spark's style: `app-20261123101500-0003`.
fn new_id(kind: &str, number: u64) -> String {
    let (date, time) = now_parts();
    format!(
        "{kind}-{:04}{:02}{:02}{:02}{:02}{:02}-{number:04}",
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
